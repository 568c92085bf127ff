"""Row i of the batched VecEnv against a scalar GpuAutoscalerEnv with ``env_id=i``.

Both draw their randomisation from counter-based streams keyed by (seed, env
id, episode), so with equal seeds and equal actions they must give the same
observations, rewards, action masks and episode ends, bit for bit, through
automatic resets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from omegaconf import OmegaConf

from envs.config import build_cluster, load_deployment_series
from envs.gym_env import GpuAutoscalerEnv
from envs.sim.params import Randomization
from envs.vec_env import BatchedVecEnv

CONF = Path(__file__).resolve().parent.parent / "conf"
RANDOMIZATION = Randomization(rate_scale=(0.5, 2.0), startup_scale=(0.7, 1.5), cluster_scale=(0.75, 1.0))
N_ENVS = 4
EPISODE_TICKS = 25
# Two and a half episodes, so every env resets twice.
STEPS = 62
SEED = 11

# Three Deployments of the code service with different rates and initial
# options compete for the small cluster's slots and its 20-GPU quota.
WORKLOAD = {
    "deployments": [
        {"name": "code-a", "model": "llama-3.1-8b", "max_replicas": 8, "slo_ttft_p95_s": 1.0,
         "initial_option": "h100-1", "initial_replicas": 2, "rate_scale": 2.0},
        {"name": "code-b", "model": "llama-3.1-8b", "max_replicas": 8, "slo_ttft_p95_s": 1.0,
         "initial_option": "a100-1", "initial_replicas": 2, "rate_scale": 3.0},
        {"name": "code-c", "model": "llama-3.1-8b", "max_replicas": 8, "slo_ttft_p95_s": 1.5,
         "initial_option": "l40s-1", "initial_replicas": 1, "rate_scale": 1.0},
    ]
}


@pytest.fixture(scope="module")
def setup():
    cfg = OmegaConf.create({
        "catalog": OmegaConf.load(CONF / "catalog/default.yaml"),
        "cluster": OmegaConf.load(CONF / "cluster/small.yaml"),
        "workload": WORKLOAD,
        "trace": OmegaConf.load(CONF / "trace/azure_code.yaml"),
    })
    cluster = build_cluster(cfg)
    return cluster, load_deployment_series(cfg, cluster, split="train")


def random_actions(rng: np.random.Generator, masks: np.ndarray, n_levels: int) -> np.ndarray:
    """Draw one (level, option) per row, the option among those the mask allows."""
    levels = rng.integers(0, n_levels, len(masks))
    options = np.array([rng.choice(np.flatnonzero(row[n_levels:])) for row in masks])
    return np.stack([levels, options], axis=1)


def test_vec_rows_equal_scalar_envs(setup):
    cluster, series = setup
    n_dep = len(cluster.deployments)
    vec = BatchedVecEnv(cluster, series, n_envs=N_ENVS, episode_ticks=EPISODE_TICKS,
                        randomization=RANDOMIZATION, seed=SEED)
    scalars = [GpuAutoscalerEnv(cluster, series, episode_ticks=EPISODE_TICKS, randomization=RANDOMIZATION, env_id=i)
               for i in range(N_ENVS)]
    n_levels = int(vec.action_space.nvec[0])
    rng = np.random.default_rng(SEED)

    vec_obs = vec.reset()
    scalar_obs = [env.reset(seed=SEED)[0] for env in scalars]
    resets = 0
    for step in range(STEPS):
        for i, env in enumerate(scalars):
            rows = slice(i * n_dep, (i + 1) * n_dep)
            np.testing.assert_array_equal(vec_obs[rows], scalar_obs[i], err_msg=f"observation, step {step}, env {i}")
            np.testing.assert_array_equal(vec.action_masks()[rows], env.action_masks(), err_msg=f"mask, step {step}")

        actions = random_actions(rng, vec.action_masks(), n_levels)
        vec_obs, vec_rewards, vec_dones, infos = vec.step(actions)
        for i, env in enumerate(scalars):
            rows = slice(i * n_dep, (i + 1) * n_dep)
            obs, reward, terminated, truncated, info = env.step(actions[rows])
            assert not terminated
            np.testing.assert_array_equal(vec_rewards[rows], info["deployment_rewards"].astype(np.float32),
                                          err_msg=f"reward, step {step}, env {i}")
            assert reward == pytest.approx(float(np.mean(info["deployment_rewards"])))
            assert np.all(vec_dones[rows] == truncated), f"done, step {step}, env {i}"
            if truncated:
                resets += 1
                terminal = np.stack([infos[row]["terminal_observation"] for row in range(rows.start, rows.stop)])
                np.testing.assert_array_equal(terminal, obs, err_msg=f"terminal observation, env {i}")
                obs, _ = env.reset()
            scalar_obs[i] = obs
    assert resets == 2 * N_ENVS


def test_scalar_env_passes_gymnasium_checker(setup):
    cluster, series = setup
    env = GpuAutoscalerEnv(cluster, series, episode_ticks=EPISODE_TICKS, randomization=RANDOMIZATION, env_id=3)
    check_env(env, skip_render_check=True)
