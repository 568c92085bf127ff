"""Benchmark the simulator, PPO training, the runtime decision path and the discrete-event model.

    python scripts/bench.py                    # full run, writes bench.json
    python scripts/bench.py --quick --out /tmp/bench.json

Each part runs in its own Python subprocess, so its ``peak_rss_mb`` is the
peak resident memory (``ru_maxrss``) of a process that did only that part,
imports included. Throughputs are wall-clock rates. Deployment-steps count one
Deployment advanced by one tick; PPO env-steps count VecEnv rows (one row per
Deployment) per step, as stable-baselines3 counts timesteps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from envs.config import CONF_DIR, build_cluster, load_deployment_series  # noqa: E402
from envs.sim.params import Randomization  # noqa: E402

PARTS = ("sim", "sync", "ppo", "tick", "des")
EPISODE_TICKS = 120
RANDOMIZATION = Randomization(rate_scale=(0.5, 2.0), startup_scale=(0.7, 1.5), cluster_scale=(0.75, 1.0))
# (clusters, Deployments per cluster) of the scaling figures; the headline is 1024 x 8.
CONFIGS = ((1, 8), (64, 8), (1024, 8), (64, 10), (64, 100))
HEADLINE = (1024, 8)
# PPO settings chosen for throughput; see docs/benchmarks.md.
PPO_SETTINGS = {"n_steps": 8, "batch_size": 8192, "n_epochs": 1, "net_arch": [128, 128]}
DES_RATE_RPS = 500.0


def config_key(n_envs: int, n_deployments: int) -> str:
    return f"envs{n_envs}_dep{n_deployments}"


def bench_config(n_deployments: int) -> Any:
    """Return a run config of ``n_deployments`` copies of the bench8 Deployments on a bench cluster scaled to fit."""
    workload = OmegaConf.load(CONF_DIR / "workload/bench8.yaml")
    cluster = OmegaConf.load(CONF_DIR / "cluster/bench.yaml")
    base = list(workload.deployments)
    scale = math.ceil(n_deployments / len(base))
    deployments = []
    for index in range(n_deployments):
        entry = OmegaConf.to_container(base[index % len(base)])
        entry["name"] = f"{entry['name']}-{index // len(base)}" if scale > 1 else entry["name"]
        deployments.append(entry)
    for pool in cluster.node_pools:
        pool.nodes = int(pool.nodes) * scale
    cluster.quota_hard = {key: float(value) * scale for key, value in cluster.quota_hard.items()}
    return OmegaConf.create({
        "catalog": OmegaConf.load(CONF_DIR / "catalog/default.yaml"),
        "cluster": cluster,
        "workload": {"deployments": deployments},
        "trace": OmegaConf.load(CONF_DIR / "trace/azure_code.yaml"),
        "algo": OmegaConf.load(CONF_DIR / "algo/ppo.yaml"),
        "reward": OmegaConf.load(CONF_DIR / "reward/default.yaml"),
        "seed": 0,
    })


def bench_setup(n_deployments: int) -> tuple[Any, Any, list]:
    """Return (config, ClusterSpec, series per Deployment); copies share the bench8 series."""
    cfg = bench_config(n_deployments)
    cluster = build_cluster(cfg)
    base_cfg = bench_config(8)
    base_series = load_deployment_series(base_cfg, build_cluster(base_cfg), split="train")
    return cfg, cluster, [base_series[i % len(base_series)] for i in range(n_deployments)]


def timed(run: Callable[[], int], warmup: Callable[[], Any] | None = None) -> tuple[float, float]:
    """Return (units per wall second, units per CPU second of this process) of ``run``, which returns its units.

    The CPU rate is what one core would give if no other process competed for it.
    """
    if warmup is not None:
        warmup()
    started, cpu_started = time.perf_counter(), time.process_time()
    units = run()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return units / wall, units / max(cpu, 1e-9)


# Parts, each run in its own subprocess ------------------------------------------


def part_sim(quick: bool) -> dict[str, Any]:
    """Measure Deployment-steps per second of BatchedSimulator.step (fluid) and of the full BatchedVecEnv step."""
    from envs.sim.simulator import BatchedSimulator
    from envs.vec_env import BatchedVecEnv

    sim_rates, vec_rates, sim_cpu_rates = {}, {}, {}
    for n_envs, n_dep in CONFIGS:
        _, cluster, series = bench_setup(n_dep)
        rows = n_envs * n_dep
        steps = 3 if quick else max(20, min(400, 400_000 // rows))
        rng = np.random.default_rng(0)
        sim = BatchedSimulator(cluster, series, n_envs=n_envs, episode_ticks=EPISODE_TICKS,
                               randomization=RANDOMIZATION, seed=0)
        sim.reset()
        fitting = [np.flatnonzero(row) for row in sim.params.fits]
        shape = (n_envs, n_dep)
        targets = [rng.integers(1, 9, shape) for _ in range(8)]
        # One Deployment in twenty requests a random option that fits it.
        switches = [(rng.random(shape) < 0.05, np.stack([rng.choice(f, n_envs) for f in fitting], axis=1))
                    for _ in range(8)]

        def run_sim(count: int = steps) -> int:
            for i in range(count):
                switch, wanted = switches[i % 8]
                sim.step(targets[i % 8], np.where(switch, wanted, sim.state.option))
                done = np.flatnonzero(sim.done())
                if done.size:
                    sim.reset_envs(done)
            return count * rows

        key = config_key(n_envs, n_dep)
        sim_rates[key], sim_cpu_rates[key] = timed(run_sim, warmup=lambda: run_sim(2))

        venv = BatchedVecEnv(cluster, series, n_envs=n_envs, episode_ticks=EPISODE_TICKS,
                             randomization=RANDOMIZATION, seed=0)
        venv.reset()
        nvec = venv.action_space.nvec
        actions = [np.stack([rng.integers(0, nvec[0], venv.num_envs), rng.integers(0, nvec[1], venv.num_envs)], 1)
                   for _ in range(8)]

        def run_vec(count: int = steps) -> int:
            for i in range(count):
                venv.step(actions[i % 8])
                venv.action_masks()
            return count * rows

        vec_rates[key], _ = timed(run_vec, warmup=lambda: run_vec(2))
    return {
        "sim_steps_per_s": sim_rates[config_key(*HEADLINE)],
        "sim_steps_per_cpu_s": sim_cpu_rates[config_key(*HEADLINE)],
        "sim_steps_per_s_by_config": sim_rates,
        "vec_env_steps_per_s": vec_rates[config_key(*HEADLINE)],
        "vec_env_steps_per_s_by_config": vec_rates,
    }


def part_sync(quick: bool) -> dict[str, Any]:
    """Measure Deployment-steps per second of the scalar env in gymnasium's SyncVectorEnv, 8 Deployments per env."""
    import gymnasium

    from envs.gym_env import GpuAutoscalerEnv

    _, cluster, series = bench_setup(8)
    n_envs = 16
    envs = gymnasium.vector.SyncVectorEnv([
        (lambda i=i: GpuAutoscalerEnv(cluster, series, episode_ticks=EPISODE_TICKS, randomization=RANDOMIZATION,
                                      env_id=i))
        for i in range(n_envs)
    ])
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    nvec = envs.single_action_space.nvec
    actions = [np.stack([rng.integers(0, nvec) for _ in range(n_envs)]) for _ in range(8)]
    steps = 3 if quick else 100

    def run(count: int = steps) -> int:
        for i in range(count):
            envs.step(actions[i % 8])
        return count * n_envs * len(cluster.deployments)

    rate, cpu_rate = timed(run, warmup=lambda: run(2))
    return {"sync_steps_per_s": rate, "sync_steps_per_cpu_s": cpu_rate}


def part_ppo(quick: bool) -> dict[str, Any]:
    """Measure MaskablePPO env-steps per second, rollouts and updates included, on the BatchedVecEnv."""
    import torch
    from sb3_contrib import MaskablePPO

    from agent.training import make_vec_env
    from envs.reward import RewardWeights
    from envs.vec_env import BatchedVecEnv

    # Distribution argument checks took about a tenth of PPO's CPU time in a profile at 1024 x 8, and
    # they only validate logits that the policy computed.
    torch.distributions.Distribution.set_default_validate_args(False)
    rates, cpu_rates = {}, {}
    for n_envs, n_dep in CONFIGS:
        cfg, cluster, series = bench_setup(n_dep)
        if n_dep == 8:
            venv = make_vec_env(cfg, n_envs=n_envs)
        else:
            venv = BatchedVecEnv(cluster, series, n_envs=n_envs, episode_ticks=EPISODE_TICKS,
                                 reward_weights=RewardWeights(**OmegaConf.to_container(cfg.reward)),
                                 randomization=RANDOMIZATION, seed=0)
        rows = venv.num_envs
        # At least 2048 samples per rollout, one rollout without warm-up in a quick run.
        n_steps = 1 if quick else max(PPO_SETTINGS["n_steps"], math.ceil(2048 / rows))
        model = MaskablePPO(
            "MlpPolicy", venv, n_steps=n_steps, batch_size=min(PPO_SETTINGS["batch_size"], rows * n_steps),
            n_epochs=PPO_SETTINGS["n_epochs"], policy_kwargs={"net_arch": PPO_SETTINGS["net_arch"]},
            device="cpu", seed=0, verbose=0,
        )
        rollouts = 1 if quick else 4

        def run() -> int:
            model.learn(total_timesteps=rows * n_steps * rollouts, reset_num_timesteps=False)
            return rows * n_steps * rollouts

        warmup = None if quick else (lambda: model.learn(rows * n_steps))
        key = config_key(n_envs, n_dep)
        rates[key], cpu_rates[key] = timed(run, warmup=warmup)
        venv.close()
    return {"ppo_steps_per_s": rates[config_key(*HEADLINE)], "ppo_steps_per_cpu_s": cpu_rates[config_key(*HEADLINE)],
            "ppo_steps_per_s_by_config": rates,
            "torch_threads": torch.get_num_threads(), "ppo_settings": PPO_SETTINGS}


def part_tick(quick: bool) -> dict[str, Any]:
    """Measure the milliseconds from a SignalBatch of 1000 Deployments to decisions: encode, policy forward, decode."""
    from agent.policy import PolicyController, build_policy
    from envs.observation import EncoderContext
    from envs.sim.simulator import BatchedSimulator

    _, cluster, series = bench_setup(8)
    n_envs = 125  # 125 clusters x 8 Deployments = 1000 rows
    sim = BatchedSimulator(cluster, series, n_envs=n_envs, episode_ticks=EPISODE_TICKS,
                           randomization=RANDOMIZATION, seed=0)
    batch = sim.reset()
    policy = build_policy(len(cluster.catalog.options), PPO_SETTINGS["net_arch"])
    policy.set_training_mode(False)
    controller = PolicyController(policy)
    names = [f"{d.name}-{e}" for e in range(n_envs) for d in cluster.deployments]
    controller.reset(EncoderContext.from_cluster(cluster).tile(n_envs), names, cluster.tick_s)
    durations = []
    for _ in range(5 if quick else 60):
        started = time.perf_counter()
        replicas, option = controller.decide(batch, now_s=0.0)
        durations.append(time.perf_counter() - started)
        sim.step(replicas.reshape(n_envs, -1), option.reshape(n_envs, -1))
        batch = sim.signals()
    return {"tick_ms_1000": 1000.0 * float(np.median(durations[1:])), "tick_rows": len(names)}


def part_des(quick: bool) -> dict[str, Any]:
    """Measure simulated seconds per wall second of an evaluation episode with the DES at 500 requests per second."""
    from agent.evaluation import run_episode
    from envs.cluster.spec import parse_cluster
    from envs.config import build_catalog
    from envs.serving.capacity import replica_capacity_rps
    from envs.traces.records import ArrivalSeries

    catalog = build_catalog(OmegaConf.load(CONF_DIR / "catalog/default.yaml"))
    # Enough H100 replicas to run 500 requests per second of 1000 + 200 tokens at 75 % utilisation.
    profile = catalog.model("llama-3.1-8b").profile("h100-1")
    per_replica = float(replica_capacity_rps(profile.prefill_tokens_per_s, profile.decode_tokens_per_s,
                                             profile.max_concurrency, profile.itl_s, 1000.0, 200.0))
    replicas = math.ceil(DES_RATE_RPS / (0.75 * per_replica))
    cluster = parse_cluster(
        {"name": "des-bench", "tick_s": 15.0, "quota_hard": {},
         "node_pools": [{"name": "h100", "gpu": "H100-80GB", "nodes": math.ceil(replicas / 8), "gpus_per_node": 8}]},
        catalog,
        [{"name": "llm", "model": "llama-3.1-8b", "min_replicas": 1, "max_replicas": replicas, "slo_ttft_p95_s": 1.0,
          "initial_option": "h100-1", "initial_replicas": replicas}],
    )
    ticks = 8 if quick else 240
    per_tick = DES_RATE_RPS * cluster.tick_s
    series = ArrivalSeries(name="constant-500", tick_s=cluster.tick_s, requests=np.full(ticks, per_tick),
                           input_tokens=np.full(ticks, per_tick * 1000.0),
                           output_tokens=np.full(ticks, per_tick * 200.0))
    started = time.perf_counter()
    trace = run_episode(FixedReplicas(replicas), cluster, [series], seed=0, fidelity="des")
    wall = time.perf_counter() - started
    served = int(sum(len(t) for t in trace.request_ttft_s))
    return {"des_realtime_factor": ticks * cluster.tick_s / wall, "des_requests_served": served,
            "des_replicas": replicas}


class FixedReplicas:
    """A controller that keeps every Deployment at ``replicas`` on its current option."""

    name = "fixed"

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def reset(self, ctx: Any, names: Any, tick_s: float) -> None:
        return None

    def decide(self, batch: Any, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        return np.full(len(batch), self.replicas), batch["option_index"].astype(np.int64)


PART_FUNCTIONS = {"sim": part_sim, "sync": part_sync, "ppo": part_ppo, "tick": part_tick, "des": part_des}


# Driver -------------------------------------------------------------------------


def run_part_in_subprocess(part: str, quick: bool, torch_threads: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{part}.json"
        command = [sys.executable, __file__, "--part", part, "--part-out", str(out)]
        command += ["--quick"] if quick else []
        command += ["--torch-threads", str(torch_threads)] if torch_threads else []
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"benchmark part {part!r} failed with exit code {completed.returncode}:\n"
                               f"{completed.stderr[-4000:]}")
        return json.loads(out.read_text())


def measure_train_to_beat_hpa(max_steps: int) -> float | None:
    """Train the default config in a temporary folder and return when it first beat HPA."""
    from hydra import compose, initialize_config_dir

    from agent.training import train
    from agent.checkpoint import load_checkpoint

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"algo.total_timesteps={max_steps}", "algo.compare_with_hpa_every_steps=50000",
                                          "algo.checkpoint_every_steps=1000000000", "progress_bar=false"])
    with tempfile.TemporaryDirectory() as folder:
        stem = train(cfg, Path(folder))
        beat = load_checkpoint(stem.with_suffix(".json")).metadata.get("beat_hpa_s")
    return None if beat is None else float(beat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps per figure; numbers are not representative")
    parser.add_argument("--out", default="bench.json", help="path of the JSON results (default: bench.json)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads in every part (default: torch's own choice)")
    parser.add_argument("--train-to-beat-hpa", action="store_true",
                        help="also train the default config until its policy beats HPA on the held-out window "
                             "(up to --beat-hpa-steps env steps; several minutes)")
    parser.add_argument("--beat-hpa-steps", type=int, default=400_000,
                        help="env-step budget of the --train-to-beat-hpa run (default 400000)")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--part-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part:
        if args.torch_threads:
            import torch

            torch.set_num_threads(args.torch_threads)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = PART_FUNCTIONS[args.part](args.quick)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        result["cpu_utilization"] = (time.process_time() - cpu_started) / (time.perf_counter() - started)
        Path(args.part_out).write_text(json.dumps(result))
        return

    results: dict[str, Any] = {}
    peak_rss: dict[str, float] = {}
    cpu_utilization: dict[str, float] = {}
    for part in PARTS:
        print(f"running {part} ...", flush=True)
        part_result = run_part_in_subprocess(part, args.quick, args.torch_threads)
        peak_rss[part] = part_result.pop("peak_rss_mb")
        cpu_utilization[part] = part_result.pop("cpu_utilization")
        results.update(part_result)
    results["sim_vs_sync_ratio"] = results["sim_steps_per_s"] / results["sync_steps_per_s"]
    results["vec_vs_sync_ratio"] = results["vec_env_steps_per_s"] / results["sync_steps_per_s"]
    results["peak_rss_mb"] = peak_rss
    # CPU seconds per wall second of each part's process: below 1 means other processes took the CPU.
    results["cpu_utilization"] = cpu_utilization
    results["train_to_beat_hpa_s"] = measure_train_to_beat_hpa(args.beat_hpa_steps) if args.train_to_beat_hpa else None
    results["notes"] = {
        "train_to_beat_hpa_s": "wall seconds of the default training config (conf/train.yaml) until its policy "
                               "first uses no more GPU-hours than HPA at no lower SLO attainment on the held-out "
                               "window, checked every 50,000 steps; null when not run (--train-to-beat-hpa) or "
                               "not reached within the step budget",
        "peak_rss_mb": "ru_maxrss of a subprocess that ran only that part, imports included",
        "sim_vs_sync_ratio": "BatchedSimulator.step (no encoding) over SyncVectorEnv of the scalar gym env",
        "vec_vs_sync_ratio": "full BatchedVecEnv step with encoding and reward over the same SyncVectorEnv",
    }
    results["quick"] = bool(args.quick)
    results["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    results["machine"] = {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                          "numpy": np.__version__, "processor": platform.processor() or platform.machine()}
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"results written to {args.out}")


def print_table(results: dict[str, Any]) -> None:
    rows = [
        ("sim Deployment-steps/s, 1024 x 8", results["sim_steps_per_s"]),
        ("sim Deployment-steps per CPU second", results["sim_steps_per_cpu_s"]),
        ("VecEnv Deployment-steps/s, 1024 x 8", results["vec_env_steps_per_s"]),
        ("SyncVectorEnv Deployment-steps/s", results["sync_steps_per_s"]),
        ("sim / sync", results["sim_vs_sync_ratio"]),
        ("PPO env-steps/s, 1024 x 8", results["ppo_steps_per_s"]),
        ("PPO env-steps per CPU second", results["ppo_steps_per_cpu_s"]),
        ("decision ms per tick, 1000 Deployments", results["tick_ms_1000"]),
        ("DES speed over real time, 500 req/s", results["des_realtime_factor"]),
    ]
    for name, value in rows:
        print(f"{name:<42} {value:>14,.1f}")
    print(f"{'configuration':<16} {'sim steps/s':>14} {'VecEnv steps/s':>16} {'PPO steps/s':>14}")
    for key in results["sim_steps_per_s_by_config"]:
        sim = results["sim_steps_per_s_by_config"][key]
        vec = results["vec_env_steps_per_s_by_config"][key]
        ppo = results["ppo_steps_per_s_by_config"][key]
        print(f"{key:<16} {sim:>14,.0f} {vec:>16,.0f} {ppo:>14,.0f}")
    for part, rss in results["peak_rss_mb"].items():
        print(f"peak RSS {part:<33} {rss:>11,.0f} MB")


if __name__ == "__main__":
    main()
