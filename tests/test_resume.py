"""Exact resume: a training run killed with SIGKILL and started again ends as an uninterrupted one.

The resume file contains the policy, optimizer, VecNormalize statistics,
simulator state, SB3's last observation and the RNG states, so the resumed
run must produce bit-identical weights and therefore identical evaluation
metrics. The in-process tests check the VecEnv state round trip on its own.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import load_file

from agent.evaluation import run_episode
from agent.metrics import summarize
from agent.policy import PolicyController
from agent.training import load_resume_state, make_vec_env
from envs.config import build_cluster, load_deployment_series

ROOT = Path(__file__).resolve().parent.parent
# Four rollouts of 8 rows x 32 steps = 256 steps each, checkpoints every
# 512 steps, and 40-tick episodes, so that episodes end and the randomised
# simulator parameters are redrawn before and after the first checkpoint.
TINY_RUN = [
    "algo.n_envs=8", "algo.n_steps=32", "algo.total_timesteps=2048", "algo.checkpoint_every_steps=512",
    "algo.compare_with_hpa_every_steps=0", "algo.net_arch=[16,16]", "algo.batch_size=128", "algo.n_epochs=2",
    "algo.episode_ticks=40", "progress_bar=false", "seed=3",
]


def train_command(run_dir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "train.py"), f"hydra.run.dir={run_dir}", *TINY_RUN]


def run_to_end(run_dir: Path) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run(train_command(run_dir), cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def kill_after_first_checkpoint(run_dir: Path) -> None:
    resume_file = run_dir / "checkpoints" / "resume.pt"
    process = subprocess.Popen(train_command(run_dir), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while process.poll() is None and not resume_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert not (run_dir / "policy.json").exists()


def held_out_metrics(run_dir: Path) -> dict:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cluster = build_cluster(cfg)
    series = [s[0] for s in load_deployment_series(cfg, cluster, split="held_out")]
    controller = PolicyController.from_path(run_dir / "policy.json", list(cluster.catalog.option_names), "cpu")
    return summarize(run_episode(controller, cluster, series, seed=0))


@pytest.mark.slow
def test_killed_run_resumes_exactly(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    interrupted = tmp_path / "interrupted"
    run_to_end(straight)

    kill_after_first_checkpoint(interrupted)
    output = run_to_end(interrupted)

    resumed = re.search(r"resuming from \S+resume\.pt at (\d+) steps", output)
    assert resumed is not None, output[-3000:]
    assert 512 <= int(resumed.group(1)) < 2048
    expected = load_file(straight / "policy.safetensors")
    actual = load_file(interrupted / "policy.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert held_out_metrics(interrupted) == held_out_metrics(straight)


@pytest.mark.slow
def test_run_directory_records_resolved_config(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_to_end(run_dir)

    text = (run_dir / "config.yaml").read_text()
    recorded = yaml.safe_load(text)
    assert "${" not in text
    assert set(recorded) >= {"catalog", "cluster", "workload", "trace", "algo", "reward", "seed"}
    assert recorded["algo"]["n_envs"] == 8
    assert recorded["algo"]["episode_ticks"] == 40
    assert recorded["seed"] == 3
    metadata = yaml.safe_load((run_dir / "policy.json").read_text())
    assert metadata["training_config"] == recorded


def random_actions(env, rng: np.random.Generator) -> np.ndarray:
    """Return one random valid (level, option) action per VecEnv row."""
    masks = env.action_masks()
    n_levels = env.action_space.nvec[0]
    levels = rng.integers(0, n_levels, size=env.num_envs)
    options = np.array([rng.choice(np.flatnonzero(row)) for row in masks[:, n_levels:]])
    return np.stack([levels, options], axis=1)


def step_both(first, second, steps: int, seed: int) -> None:
    """Step two VecEnvs with the same random valid actions and check they return the same."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        np.testing.assert_array_equal(first.action_masks(), second.action_masks())
        actions = random_actions(first, rng)
        obs_a, reward_a, done_a, info_a = first.step(actions)
        obs_b, reward_b, done_b, info_b = second.step(actions)
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(reward_a, reward_b)
        np.testing.assert_array_equal(done_a, done_b)
        assert [info.get("episode") for info in info_a] == [info.get("episode") for info in info_b]


def test_vec_env_state_round_trip(default_cfg) -> None:
    cfg = OmegaConf.merge(default_cfg, {"algo": {"episode_ticks": 40}})
    original = make_vec_env(cfg, n_envs=3, seed=5)
    original.reset()
    rng = np.random.default_rng(1)
    # The copy starts 5 ticks into the second episode, whose randomised startup
    # times then decide when new pods become Ready, and crosses the next episode
    # end at tick 80, which draws from the restored episode counters.
    for _ in range(45):
        original.step(random_actions(original, rng))

    copy = make_vec_env(cfg, n_envs=3, seed=99)
    copy.load_state_dict(original.state_dict())

    step_both(original, copy, 40, seed=2)
    for key, value in original.state_dict().items():
        np.testing.assert_array_equal(value, copy.state_dict()[key], err_msg=key)


def test_vec_env_state_of_other_size_is_rejected(default_cfg) -> None:
    small = make_vec_env(default_cfg, n_envs=2, seed=0)
    small.reset()
    large = make_vec_env(default_cfg, n_envs=4, seed=0)

    with pytest.raises(ValueError, match=r"'state\.t' is int64\[2\], but this simulator has int64\[4\]"):
        large.load_state_dict(small.state_dict())


def test_vec_env_state_before_reset_is_rejected(default_cfg) -> None:
    env = make_vec_env(default_cfg, n_envs=2, seed=0)

    with pytest.raises(ValueError, match=r"no state before reset\(\)"):
        env.state_dict()


def small_model(cfg, seed: int):
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import VecNormalize

    env = VecNormalize(make_vec_env(cfg, n_envs=2, seed=0), norm_obs=False, norm_reward=True)
    return MaskablePPO("MlpPolicy", env, n_steps=4, batch_size=8, policy_kwargs={"net_arch": [16, 16]}, seed=seed)


def test_resume_state_without_env_falls_back(default_cfg, tmp_path: Path, caplog) -> None:
    saved = small_model(default_cfg, seed=1)
    old_format = {"policy": saved.policy.state_dict(), "optimizer": saved.policy.optimizer.state_dict(),
                  "num_timesteps": torch.tensor(64)}
    (tmp_path / "checkpoints").mkdir()
    torch.save(old_format, tmp_path / "checkpoints" / "resume.pt")
    model = small_model(default_cfg, seed=2)

    with caplog.at_level(logging.WARNING, logger="agent.training"):
        steps = load_resume_state(model, tmp_path)

    assert steps == 64
    assert model.num_timesteps == 64
    # Without a last observation, learn() resets the environment before the next rollout.
    assert model._last_obs is None
    assert "continues from fresh episodes" in caplog.text
    for name, tensor in saved.policy.state_dict().items():
        assert torch.equal(tensor, model.policy.state_dict()[name]), name
