"""Training: MaskablePPO on the batched VecEnv, with periodic checkpoints and resume.

The run directory holds ``config.yaml`` (the resolved config), TensorBoard
logs under ``tb/``, periodic checkpoints under ``checkpoints/`` and the final
``policy.safetensors`` / ``policy.json``. ``checkpoints/resume.pt`` is a
``weights_only`` torch file of tensors and ints with everything the rest of
the run depends on: policy and optimizer state, step count, the VecNormalize
statistics, the simulator state, SB3's last observation and the torch, numpy
and Python RNG states. It is written at the start of a rollout, after the
previous update, so a run started again in the same directory with the same
config continues exactly as if it had not stopped.
"""

from __future__ import annotations

import logging
import pickle
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from agent.atomic import write_atomic, write_text_atomic
from agent.checkpoint import CheckpointError, save_checkpoint
from agent.policy import select_device
from envs.actions import HOLD_LEVEL, KEEP_OPTION, N_LEVELS
from envs.config import AlgoConf, RewardConf, build_cluster, load_deployment_series, validate_config
from envs.reward import RewardWeights
from envs.sim.params import Randomization
from envs.vec_env import BatchedVecEnv

log = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"


def make_vec_env(cfg: DictConfig, *, split: str = "train", n_envs: int | None = None, seed: int | None = None) -> BatchedVecEnv:
    """Build the training VecEnv of a run config."""
    algo = validate_config(cfg.algo, AlgoConf, "algo")
    reward = validate_config(cfg.reward, RewardConf, "reward")
    cluster = build_cluster(cfg)
    series = load_deployment_series(cfg, cluster, split=split, default_traces=list(cfg.get("train_traces") or []))
    r = algo.randomization
    return BatchedVecEnv(
        cluster,
        series,
        n_envs=int(n_envs or algo.n_envs),
        episode_ticks=int(algo.episode_ticks),
        reward_weights=RewardWeights(**OmegaConf.to_container(reward)),  # type: ignore[arg-type]
        randomization=Randomization(
            rate_scale=tuple(r.rate_scale), startup_scale=tuple(r.startup_scale),
            cluster_scale=tuple(r.cluster_scale), random_window=bool(r.random_window),
            input_token_scale=tuple(r.input_token_scale), output_token_scale=tuple(r.output_token_scale),
            initial_allocation=float(r.initial_allocation),
        ),
        seed=int(cfg.seed if seed is None else seed),
    )


class CheckpointEvery(BaseCallback):
    """Save a checkpoint and the resume state every ``every_steps`` environment steps.

    Saving happens when a rollout starts, after the update on the previous
    one, because then the rollout buffer contains nothing the continuation
    needs.
    """

    def __init__(self, run_dir: Path, every_steps: int, meta: dict[str, Any]) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.every_steps = max(int(every_steps), 1)
        self.meta = meta
        self._next = None
        self._started = time.perf_counter()
        self._start_steps = 0

    def _on_training_start(self) -> None:
        self._started = time.perf_counter()
        self._start_steps = self.num_timesteps
        self._next = (self.num_timesteps // self.every_steps + 1) * self.every_steps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self._next is not None and self.num_timesteps >= self._next:
            save_training_state(self.model, self.run_dir, self.meta, tag=f"step_{self.num_timesteps}")
            self._next = (self.num_timesteps // self.every_steps + 1) * self.every_steps

    def _on_rollout_end(self) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self.logger.record("time/env_steps_per_s", (self.num_timesteps - self._start_steps) / elapsed)


class CompareWithHpa(BaseCallback):
    """Every ``every_steps``, evaluate the current policy and HPA on the held-out window.

    Logs ``eval/gpu_hours``, ``eval/slo_attainment`` and their HPA counterparts,
    and records the wall time at which the policy first uses no more GPU-hours
    than HPA at an SLO attainment no lower than HPA's (``beat_hpa_s``).
    """

    def __init__(self, cfg: DictConfig, every_steps: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.every_steps = max(int(every_steps), 1)
        self.beat_hpa_s: float | None = None
        self.beat_hpa_steps: int | None = None
        self.history: list[dict[str, float]] = []
        self._next = 0
        self._started = time.perf_counter()
        self._hpa: dict | None = None

    def _on_training_start(self) -> None:
        from agent.baselines.hpa_baseline import HpaBaseline
        from agent.controllers.builtin import hpa_settings
        from agent.controllers.registry import ControllerContext
        from agent.evaluation import run_episode
        from agent.metrics import summarize

        self._started = time.perf_counter()
        self._next = self.num_timesteps + self.every_steps
        self.cluster = build_cluster(self.cfg)
        self.series = [s[0] for s in load_deployment_series(self.cfg, self.cluster, split="held_out")]
        settings = hpa_settings(ControllerContext(cfg=self.cfg, cluster=self.cluster))
        self._hpa = summarize(run_episode(HpaBaseline(settings), self.cluster, self.series))

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps < self._next or self._hpa is None:
            return
        from agent.evaluation import run_episode
        from agent.metrics import summarize
        from agent.policy import PolicyController

        self._next = self.num_timesteps + self.every_steps
        self.model.policy.set_training_mode(False)
        mine = summarize(run_episode(PolicyController(self.model.policy), self.cluster, self.series))
        elapsed = time.perf_counter() - self._started
        self.logger.record("eval/gpu_hours", mine["gpu_hours"])
        self.logger.record("eval/slo_attainment", mine["slo_attainment"])
        self.logger.record("eval/hpa_gpu_hours", self._hpa["gpu_hours"])
        self.logger.record("eval/hpa_slo_attainment", self._hpa["slo_attainment"])
        self.history.append({"steps": self.num_timesteps, "wall_s": elapsed, "gpu_hours": mine["gpu_hours"],
                             "slo_attainment": mine["slo_attainment"]})
        beats = mine["gpu_hours"] <= self._hpa["gpu_hours"] and mine["slo_attainment"] >= self._hpa["slo_attainment"]
        if beats and self.beat_hpa_s is None:
            self.beat_hpa_s = elapsed
            self.beat_hpa_steps = self.num_timesteps
            log.info("policy beats HPA on the held-out window after %.0f s (%d steps)", elapsed, self.num_timesteps)


def save_training_state(model: MaskablePPO, run_dir: Path, meta: dict[str, Any], tag: str) -> None:
    """Write a policy checkpoint ``checkpoints/<tag>`` and the resume file."""
    ckpt_dir = run_dir / "checkpoints"
    save_checkpoint(ckpt_dir / tag, model.policy.state_dict(), **meta)
    state = resume_state(model)
    write_atomic(ckpt_dir / RESUME_FILE, lambda tmp: torch.save(state, tmp))
    log.info("saved checkpoint %s at %d steps", tag, model.num_timesteps)


def resume_state(model: MaskablePPO) -> dict[str, Any]:
    """Collect the training state that ``load_resume_state`` restores, as tensors and ints only."""
    state: dict[str, Any] = {
        "policy": model.policy.state_dict(),
        "optimizer": model.policy.optimizer.state_dict(),
        "num_timesteps": torch.tensor(model.num_timesteps),
        "n_updates": int(model._n_updates),
        "rng": _rng_state(),
    }
    normalizer = model.get_vec_normalize_env()
    if normalizer is None or model._last_obs is None or model._last_episode_starts is None:
        return state
    statistics = {"ret": normalizer.ret_rms}
    if normalizer.norm_obs:
        # VecNormalize creates obs_rms only when it normalises observations.
        statistics["obs"] = normalizer.obs_rms
    saved: dict[str, torch.Tensor] = {"returns": torch.from_numpy(np.array(normalizer.returns, dtype=np.float64))}
    for name, running in statistics.items():
        saved[f"{name}_mean"] = torch.from_numpy(np.array(running.mean, dtype=np.float64))
        saved[f"{name}_var"] = torch.from_numpy(np.array(running.var, dtype=np.float64))
        saved[f"{name}_count"] = torch.tensor(float(running.count), dtype=torch.float64)
    state["vec_normalize"] = saved
    venv = normalizer.venv
    assert isinstance(venv, BatchedVecEnv)
    state["env"] = {key: _to_tensor(value) for key, value in venv.state_dict().items()}
    state["last_obs"] = torch.from_numpy(np.array(model._last_obs, copy=True))
    state["last_episode_starts"] = torch.from_numpy(np.array(model._last_episode_starts, dtype=bool))
    return state


def load_resume_state(model: MaskablePPO, run_dir: Path) -> int:
    """Restore the training state from ``checkpoints/resume.pt``; return the step count, 0 without the file.

    Raises CheckpointError when the file is unreadable or was saved by a run
    with another config. A file without the environment state (written
    before it was recorded) restores the policy, optimizer and step count
    and logs that the next rollout starts from fresh episodes.
    """
    path = run_dir / "checkpoints" / RESUME_FILE
    if not path.is_file():
        return 0
    try:
        # weights_only=True loads tensors and plain containers only; pickled code is rejected, never run.
        state = torch.load(path, map_location=model.device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"resume state {path} is unreadable ({str(error).splitlines()[0]}). It is truncated, corrupt or not "
            "written by training; delete it to train from the start, or use a new run directory."
        ) from error
    try:
        _restore(model, state)
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(
            f"resume state {path} does not match this run ({error}). Resume with the config in "
            f"{run_dir / 'config.yaml'}, or use a new run directory."
        ) from error
    steps = int(state["num_timesteps"])
    log.info("resuming from %s at %d steps", path, steps)
    return steps


def _restore(model: MaskablePPO, state: dict[str, Any]) -> None:
    model.policy.load_state_dict(state["policy"])
    model.policy.optimizer.load_state_dict(state["optimizer"])
    model.num_timesteps = int(state["num_timesteps"])
    model._n_updates = int(state.get("n_updates", 0))
    if "rng" in state:
        _set_rng_state(state["rng"])
    if "env" not in state:
        log.warning("resume state has no environment state; the run continues from fresh episodes, "
                    "so it will not match an uninterrupted run exactly")
        return

    normalizer = model.get_vec_normalize_env()
    assert normalizer is not None
    saved = state["vec_normalize"]
    if saved["returns"].shape != normalizer.returns.shape:
        raise ValueError(f"{saved['returns'].shape[0]} VecEnv rows were saved, this run has {normalizer.num_envs}")
    statistics = {"ret": normalizer.ret_rms}
    if normalizer.norm_obs:
        statistics["obs"] = normalizer.obs_rms
    for name, running in statistics.items():
        running.mean = saved[f"{name}_mean"].cpu().numpy().copy()
        running.var = saved[f"{name}_var"].cpu().numpy().copy()
        running.count = float(saved[f"{name}_count"])
    normalizer.returns = saved["returns"].cpu().numpy().copy()
    normalizer.venv.load_state_dict({key: _to_numpy(value) for key, value in state["env"].items()})
    # With _last_obs set, learn(reset_num_timesteps=False) continues from it instead of resetting the env.
    model._last_obs = state["last_obs"].cpu().numpy().copy()
    model._last_episode_starts = state["last_episode_starts"].cpu().numpy().copy()


def _rng_state() -> dict[str, Any]:
    """Return the torch, numpy and Python global RNG states as tensors and ints.

    SB3 samples actions with torch's RNG and shuffles minibatches with numpy's.
    """
    algorithm, keys, position, has_gauss, cached_gauss = np.random.get_state()
    assert algorithm == "MT19937"
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(position),
        "numpy_has_gauss": int(has_gauss),
        "numpy_cached_gauss": torch.tensor(float(cached_gauss), dtype=torch.float64),
        "python_version": int(version),
        "python_internal": torch.tensor(internal, dtype=torch.int64),
        "python_has_gauss": int(gauss_next is not None),
        "python_gauss": torch.tensor(gauss_next or 0.0, dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state((
        "MT19937", state["numpy_keys"].cpu().numpy().astype(np.uint32), int(state["numpy_pos"]),
        int(state["numpy_has_gauss"]), float(state["numpy_cached_gauss"]),
    ))
    gauss = float(state["python_gauss"]) if state["python_has_gauss"] else None
    random.setstate((int(state["python_version"]), tuple(int(v) for v in state["python_internal"].tolist()), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"].cpu()))


def _to_tensor(value: np.ndarray | int) -> torch.Tensor | int:
    return torch.from_numpy(np.array(value, copy=True)) if isinstance(value, np.ndarray) else int(value)


def _to_numpy(value: torch.Tensor | int) -> np.ndarray | int:
    return value.cpu().numpy().copy() if isinstance(value, torch.Tensor) else int(value)


def train(cfg: DictConfig, run_dir: Path) -> Path:
    """Train a policy as configured; return the stem of the final checkpoint."""
    algo = validate_config(cfg.algo, AlgoConf, "algo")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    venv = make_vec_env(cfg)
    # Rewards are sums of cost and SLO terms of order 1 to 100 per tick. Scaling
    # them by a running estimate of the return's spread keeps PPO's value loss
    # and advantages well conditioned. Observations are already scale-free.
    env = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=float(algo.gamma))
    device = select_device(algo.device)
    if algo.torch_threads > 0:
        # The policy is a small MLP: one intra-op thread avoids contention with
        # the simulator on small CPUs and is as fast as several.
        torch.set_num_threads(int(algo.torch_threads))
    torch.manual_seed(int(cfg.seed))
    np.random.seed(int(cfg.seed))
    model = MaskablePPO(
        "MlpPolicy",
        env,
        learning_rate=algo.learning_rate,
        n_steps=algo.n_steps,
        batch_size=algo.batch_size,
        n_epochs=algo.n_epochs,
        gamma=algo.gamma,
        gae_lambda=algo.gae_lambda,
        clip_range=algo.clip_range,
        ent_coef=algo.ent_coef,
        vf_coef=algo.vf_coef,
        max_grad_norm=algo.max_grad_norm,
        policy_kwargs={"net_arch": list(algo.net_arch)},
        tensorboard_log=str(run_dir / "tb"),
        device=device,
        seed=int(cfg.seed),
        verbose=0,
    )
    _bias_towards_keeping(model, keep_option=float(algo.keep_option_logit), hold=float(algo.hold_level_logit))
    done = load_resume_state(model, run_dir)
    option_names = list(venv.cluster.catalog.option_names)
    meta = {
        "option_names": option_names,
        "net_arch": list(algo.net_arch),
        "training_config": OmegaConf.to_container(cfg, resolve=True),
        "traces": _trace_names(cfg),
    }
    remaining = int(algo.total_timesteps) - done
    callbacks: list[BaseCallback] = [CheckpointEvery(run_dir, algo.checkpoint_every_steps, meta)]
    comparison = None
    if algo.compare_with_hpa_every_steps > 0:
        comparison = CompareWithHpa(cfg, algo.compare_with_hpa_every_steps)
        callbacks.append(comparison)
    log.info(
        "training on %s: %d rows (%d clusters x %d Deployments), %d steps to go",
        device, venv.num_envs, venv.n_clusters, venv.n_deployments, max(remaining, 0),
    )
    started = time.perf_counter()
    if remaining > 0:
        model.learn(
            total_timesteps=remaining,
            callback=callbacks,
            reset_num_timesteps=done == 0,
            progress_bar=bool(cfg.get("progress_bar", True)),
            tb_log_name="ppo",
        )
    elapsed = time.perf_counter() - started
    save_training_state(model, run_dir, meta, tag="last")
    stem = run_dir / "policy"
    extra: dict[str, Any] = {"training_seconds": elapsed}
    if comparison is not None:
        extra["beat_hpa_s"] = comparison.beat_hpa_s
        extra["beat_hpa_steps"] = comparison.beat_hpa_steps
        extra["comparison_history"] = comparison.history
    save_checkpoint(stem, model.policy.state_dict(), extra=extra, **meta)
    log.info("trained %d steps in %.1f s (%.0f steps/s); policy at %s.json",
             model.num_timesteps, elapsed, max(remaining, 0) / max(elapsed, 1e-9), stem)
    return stem


def _bias_towards_keeping(model: MaskablePPO, *, keep_option: float, hold: float) -> None:
    """Raise the initial logits of "keep the current option" and "hold the replica count".

    The untrained policy then mostly leaves a Deployment as it is instead of
    starting rollouts and resizes at every tick, so exploration starts from a
    sensible controller. Training moves both logits wherever the reward leads.
    """
    with torch.no_grad():
        model.policy.action_net.bias[N_LEVELS + KEEP_OPTION] += keep_option
        model.policy.action_net.bias[HOLD_LEVEL] += hold


def _trace_names(cfg: DictConfig) -> list[str]:
    names = [str(cfg.trace.get("path", ""))] if "trace" in cfg else []
    names.extend(str(n) for n in cfg.get("train_traces") or [])
    for deployment in cfg.workload.deployments:
        names.extend(str(n) for n in deployment.get("traces", []) or [])
    return names
