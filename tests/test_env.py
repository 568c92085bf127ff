"""The Gymnasium env: registration, the env checker, spaces and reward terms."""

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

import envs
from envs.actions import N_LEVELS, option_choices
from envs.config import build_cluster, load_deployment_series
from envs.gym_env import GpuAutoscalerEnv
from envs.observation import observation_size


def make_env(default_cfg, ticks=30):
    cluster = build_cluster(default_cfg)
    series = load_deployment_series(default_cfg, cluster, split="train")
    return gym.make(envs.ENV_ID, cluster=cluster, series=series, episode_ticks=ticks, disable_env_checker=True)


def test_registered_env_passes_checker(default_cfg):
    env = make_env(default_cfg)
    check_env(env.unwrapped)


def test_spaces_follow_catalog(default_cfg):
    env = make_env(default_cfg).unwrapped
    n_opt = len(env.cluster.catalog.options)
    assert env.observation_space.shape == (1, observation_size(n_opt))
    assert env.action_space.nvec.tolist() == [[N_LEVELS, option_choices(n_opt)]]


def test_episode_truncates_after_configured_ticks(default_cfg):
    env = make_env(default_cfg, ticks=12).unwrapped
    env.reset(seed=1)
    truncated = False
    steps = 0
    while not truncated:
        _, reward, terminated, truncated, info = env.step(np.array([[0, 0]]))
        assert not terminated
        assert np.isfinite(reward)
        steps += 1
    assert steps == 12


def test_equal_seeds_give_equal_trajectories(default_cfg):
    first = make_env(default_cfg).unwrapped
    second = make_env(default_cfg).unwrapped
    obs_a, _ = first.reset(seed=7)
    obs_b, _ = second.reset(seed=7)
    assert np.array_equal(obs_a, obs_b)
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = np.array([[rng.integers(N_LEVELS), 0]])
        a = first.step(action)
        b = second.step(action)
        assert np.array_equal(a[0], b[0])
        assert a[1] == b[1]


def test_action_mask_allows_only_feasible_options(default_cfg):
    env = make_env(default_cfg).unwrapped
    env.reset(seed=0)
    mask = env.action_masks()
    options = env.cluster.catalog.option_names
    assert mask[0, N_LEVELS]  # keep the current option
    allowed = {options[i] for i in np.flatnonzero(mask[0, N_LEVELS + 1:])}
    # The small cluster has H100, A100 and L40S nodes and H100 3g.40gb slices; the 8B model fits each.
    assert allowed == {"h100-1", "a100-1", "l40s-1", "h100-mig-3g.40gb"}
