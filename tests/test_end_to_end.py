"""End to end: a tiny training run, its checkpoint, an evaluation and results.json."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(script, *overrides, cwd=ROOT):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *overrides], cwd=cwd,
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_train_checkpoint_evaluate(tmp_path):
    train_dir = tmp_path / "train"
    run("train.py", f"hydra.run.dir={train_dir}", "algo.total_timesteps=1024", "algo.n_envs=8",
        "algo.n_steps=64", "algo.batch_size=256", "algo.n_epochs=1", "algo.episode_ticks=40",
        "algo.net_arch=[16,16]", "progress_bar=false")
    assert (train_dir / "policy.safetensors").is_file()
    meta = json.loads((train_dir / "policy.json").read_text())
    assert meta["training_config"]["algo"]["total_timesteps"] == 1024
    assert (train_dir / "config.yaml").is_file()
    assert list((train_dir / "tb").iterdir())

    eval_dir = tmp_path / "eval"
    out = run("evaluate.py", f"hydra.run.dir={eval_dir}", f"checkpoint={train_dir / 'policy.json'}",
              "eval.seeds=[0]", "eval.controllers=[policy,hpa]", "record_in_checkpoint=true")
    assert "| policy |" in out.stdout
    assert "| hpa |" in out.stdout
    results = json.loads((eval_dir / "results.json").read_text())
    records = results["records"]
    assert {r["controller"] for r in records} == {"policy", "hpa"}
    for record in records:
        for key in ("gpu_hours", "cost_usd", "slo_attainment", "ttft_p50_s", "ttft_p95_s", "ttft_p99_s",
                    "dropped_requests", "scale_events", "allocation_changes", "pending_pod_seconds"):
            assert key in record, key
        assert 0.0 <= record["slo_attainment"] <= 1.0
        assert record["gpu_hours"] > 0
    assert (eval_dir / "results.md").is_file()
    assert list(eval_dir.glob("timeseries_*.png"))

    # The summary stored in the checkpoint repeats the one seed's values.
    stored = json.loads((train_dir / "policy.json").read_text())["evaluation"]
    assert stored["protocol"]["seeds"] == [0]
    assert stored["workload"] == ["code-llm"]
    policy = next(r for r in records if r["controller"] == "policy")
    mean, half, seeds = stored["metrics"][policy["trace"]]["policy"]["gpu_hours"]
    assert mean == policy["gpu_hours"]
    assert half == 0.0
    assert seeds == 1.0


@pytest.mark.slow
def test_training_resumes_in_same_directory(tmp_path):
    train_dir = tmp_path / "train"
    common = [f"hydra.run.dir={train_dir}", "algo.n_envs=8", "algo.n_steps=32", "algo.batch_size=128",
              "algo.n_epochs=1", "algo.episode_ticks=40", "algo.net_arch=[16,16]", "progress_bar=false"]
    run("train.py", *common, "algo.total_timesteps=512")
    first = json.loads((train_dir / "policy.json").read_text())
    out = run("train.py", *common, "algo.total_timesteps=1024")
    assert "resuming" in out.stderr + out.stdout
    second = json.loads((train_dir / "policy.json").read_text())
    assert first["weights_sha256"] != second["weights_sha256"]
