"""scripts/bench.py --quick runs every part and writes every key of bench.json."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

NUMBER_KEYS = (
    "sim_steps_per_s",
    "vec_env_steps_per_s",
    "sync_steps_per_s",
    "sim_steps_per_cpu_s",
    "sync_steps_per_cpu_s",
    "ppo_steps_per_cpu_s",
    "sim_vs_sync_ratio",
    "vec_vs_sync_ratio",
    "ppo_steps_per_s",
    "tick_ms_1000",
    "des_realtime_factor",
)
PER_CONFIG_KEYS = ("sim_steps_per_s_by_config", "vec_env_steps_per_s_by_config", "ppo_steps_per_s_by_config")
CONFIGS = ("envs1_dep8", "envs64_dep8", "envs1024_dep8", "envs64_dep10", "envs64_dep100")
PARTS = ("sim", "sync", "ppo", "tick", "des")


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
def test_quick_bench_writes_every_key(tmp_path: Path):
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench.py"), "--quick", "--torch-threads", "1", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(out.read_text())

    for key in NUMBER_KEYS:
        assert is_number(results.get(key)), f"{key} is {results.get(key)!r}"
    for key in PER_CONFIG_KEYS:
        assert sorted(results[key]) == sorted(CONFIGS), key
        for config, value in results[key].items():
            assert is_number(value), f"{key}[{config}] is {value!r}"
    for key in ("peak_rss_mb", "cpu_utilization"):
        assert sorted(results[key]) == sorted(PARTS), key
        for part, value in results[key].items():
            assert is_number(value), f"{key}[{part}] is {value!r}"
    assert "train_to_beat_hpa_s" in results
    assert results["train_to_beat_hpa_s"] is None
    assert results["notes"]["train_to_beat_hpa_s"]
    assert results["quick"] is True
