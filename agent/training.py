"""Training: MaskablePPO on the batched VecEnv, with periodic checkpoints and resume.

The run directory holds ``config.yaml`` (the resolved config), TensorBoard
logs under ``tb/``, periodic checkpoints under ``checkpoints/`` and the final
``policy.safetensors`` / ``policy.json``. ``checkpoints/resume.pt`` holds the
policy and optimizer state and the step count as a ``weights_only`` torch
file; a run started again in the same directory continues from it.
"""

from __future__ import annotations

import logging
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
from agent.checkpoint import save_checkpoint
from agent.policy import select_device
from envs.actions import KEEP_OPTION, N_LEVELS
from envs.config import AlgoConf, RewardConf, build_cluster, load_deployment_series, validate_config
from envs.reward import RewardWeights
from envs.sim.params import Randomization
from envs.vec_env import BatchedVecEnv

log = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"


def make_vec_env(cfg: DictConfig, *, split: str = "train", n_envs: int | None = None, seed: int | None = None) -> BatchedVecEnv:
    """Build the training VecEnv of a run config."""
    algo = validate_config(cfg.algo, AlgoConf)
    reward = validate_config(cfg.reward, RewardConf)
    cluster = build_cluster(cfg)
    series = load_deployment_series(cfg, cluster, split=split)
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
        ),
        seed=int(cfg.seed if seed is None else seed),
    )


class CheckpointEvery(BaseCallback):
    """Save a checkpoint and the resume state every ``every_steps`` environment steps."""

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

    def _on_rollout_end(self) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self.logger.record("time/env_steps_per_s", (self.num_timesteps - self._start_steps) / elapsed)
        if self._next is not None and self.num_timesteps >= self._next:
            save_training_state(self.model, self.run_dir, self.meta, tag=f"step_{self.num_timesteps}")
            self._next = (self.num_timesteps // self.every_steps + 1) * self.every_steps


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
    state = {
        "policy": model.policy.state_dict(),
        "optimizer": model.policy.optimizer.state_dict(),
        "num_timesteps": torch.tensor(model.num_timesteps),
    }
    write_atomic(ckpt_dir / RESUME_FILE, lambda tmp: torch.save(state, tmp))
    log.info("saved checkpoint %s at %d steps", tag, model.num_timesteps)


def load_resume_state(model: MaskablePPO, run_dir: Path) -> int:
    """Restore policy, optimizer and step count from ``checkpoints/resume.pt``; return the steps."""
    path = run_dir / "checkpoints" / RESUME_FILE
    if not path.is_file():
        return 0
    state = torch.load(path, map_location=model.device, weights_only=True)
    model.policy.load_state_dict(state["policy"])
    model.policy.optimizer.load_state_dict(state["optimizer"])
    steps = int(state["num_timesteps"])
    model.num_timesteps = steps
    log.info("resuming from %s at %d steps", path, steps)
    return steps


def train(cfg: DictConfig, run_dir: Path) -> Path:
    """Train a policy as configured; return the stem of the final checkpoint."""
    algo = validate_config(cfg.algo, AlgoConf)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    venv = make_vec_env(cfg)
    # Rewards are sums of cost and SLO terms of order 1 to 100 per tick; scaling
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
    _bias_towards_keeping(model, float(algo.keep_option_logit))
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


def _bias_towards_keeping(model: MaskablePPO, logit: float) -> None:
    """Raise the initial logit of "keep the current option" so early exploration
    rarely starts rollouts; training moves it as the reward dictates."""
    with torch.no_grad():
        model.policy.action_net.bias[N_LEVELS + KEEP_OPTION] += logit


def _trace_names(cfg: DictConfig) -> list[str]:
    names = [str(cfg.trace.get("path", ""))] if "trace" in cfg else []
    for deployment in cfg.workload.deployments:
        names.extend(str(n) for n in deployment.get("traces", []) or [])
    return names
