"""GPU checks in one call, for a machine with a CUDA device.

    python scripts/gpu_check.py --out gpu_check.json

Runs, in order: device discovery; the policy forward pass for 1000
Deployments on the CPU and on CUDA side by side; a short MaskablePPO run of
the default config on CUDA (steps per second); and the evaluation of the
shipped checkpoint with the policy on CUDA against the same checkpoint on the
CPU, whose decisions must match. It prints a table and writes JSON. Without
CUDA it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from agent.evaluation import run_episode  # noqa: E402
from agent.metrics import summarize  # noqa: E402
from agent.policy import PolicyController, build_policy  # noqa: E402
from envs.config import CONF_DIR, build_catalog, build_cluster, load_deployment_series  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "default" / "policy.json"


def forward_ms(device: str, n_rows: int = 1000, repeats: int = 50) -> float:
    """Return the median milliseconds of one deterministic policy forward pass for ``n_rows`` rows."""
    catalog = build_catalog(OmegaConf.load(CONF_DIR / "catalog" / "default.yaml"))
    policy = build_policy(len(catalog.options), [128, 128], device)
    obs = torch.randn(n_rows, policy.observation_space.shape[0], device=device)
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            started = time.perf_counter()
            policy._predict(obs, deterministic=True)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(times))


def ppo_steps_per_s(steps: int) -> float:
    from agent.training import train

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"algo.total_timesteps={steps}", "algo.device=cuda",
                                          "algo.compare_with_hpa_every_steps=0", "progress_bar=false"])
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        train(cfg, Path(folder))
        return steps / (time.perf_counter() - started)


def evaluation_matches() -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate")
    cluster = build_cluster(cfg)
    series = [s[0] for s in load_deployment_series(cfg, cluster, split="held_out")]
    names = list(cluster.catalog.option_names)
    results = {}
    for device in ("cpu", "cuda"):
        controller = PolicyController.from_path(CHECKPOINT, names, device=device)
        results[device] = summarize(run_episode(controller, cluster, series))
    return {"cpu_gpu_hours": results["cpu"]["gpu_hours"], "cuda_gpu_hours": results["cuda"]["gpu_hours"],
            "same_decisions": results["cpu"]["gpu_hours"] == results["cuda"]["gpu_hours"]
            and results["cpu"]["scale_events"] == results["cuda"]["scale_events"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="path of the JSON results")
    parser.add_argument("--ppo-steps", type=int, default=100_000, help="env steps of the CUDA training run")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device is visible to torch; run this on a machine with an NVIDIA GPU", file=sys.stderr)
        raise SystemExit(2)
    results = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "forward_ms_1000_cpu": forward_ms("cpu"),
        "forward_ms_1000_cuda": forward_ms("cuda"),
        "ppo_steps_per_s_cuda": ppo_steps_per_s(args.ppo_steps),
        "evaluation": evaluation_matches(),
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        print(f"{key:24s} {value}")


if __name__ == "__main__":
    main()
