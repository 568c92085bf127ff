"""GpuAutoscalerEnv: one simulated cluster as a Gymnasium environment.

Observation:
    Box of shape (D, observation_size(O)), float32: one encoded row per
    Deployment (``envs.observation.encode``, version OBSERVATION_VERSION).
Action:
    MultiDiscrete of shape (D, 2): per Deployment a (level, option) pair, see
    ``envs.actions``. ``action_masks()`` returns the (D, N_LEVELS + O) mask of
    allowed choices for maskable algorithms.
Reward:
    Mean over Deployments of ``envs.reward.compute_reward``: cost against SLO
    misses, drops and churn. ``info["deployment_rewards"]`` holds each term.
Episode end:
    Truncated after ``episode_ticks`` ticks (a trace window); never terminated.
Versions:
    v0: first release.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.actions import N_LEVELS, option_choices, action_masks, decode_actions
from envs.cluster.spec import ClusterSpec
from envs.observation import OBSERVATION_BOUND, EncoderContext, encode, new_history, observation_size, push_history
from envs.reward import RewardWeights, compute_reward
from envs.sim.params import Randomization
from envs.sim.simulator import BatchedSimulator
from envs.traces.records import ArrivalSeries


class GpuAutoscalerEnv(gym.Env):
    """A single cluster of D Deployments (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        cluster: ClusterSpec,
        series: Sequence[Sequence[ArrivalSeries]],
        *,
        episode_ticks: int = 120,
        reward_weights: RewardWeights | None = None,
        randomization: Randomization | None = None,
        env_id: int = 0,
    ) -> None:
        self.cluster = cluster
        self.sim = BatchedSimulator(
            cluster, series, n_envs=1, episode_ticks=episode_ticks, randomization=randomization, env_offset=env_id
        )
        self.ctx = EncoderContext.from_cluster(cluster)
        self.weights = reward_weights or RewardWeights()
        n_dep = len(cluster.deployments)
        n_opt = len(cluster.catalog.options)
        self.observation_space = spaces.Box(-OBSERVATION_BOUND, OBSERVATION_BOUND, shape=(n_dep, observation_size(n_opt)), dtype=np.float32)
        self.action_space = spaces.MultiDiscrete(np.tile([N_LEVELS, option_choices(n_opt)], (n_dep, 1)))
        self._history: np.ndarray | None = None
        self._batch = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._batch = self.sim.reset(seed=seed)
        self._history = new_history(self._batch)
        return encode(self._batch, self.ctx, self._history), {}

    def action_masks(self) -> np.ndarray:
        assert self._batch is not None, "call reset() first"
        return action_masks(self.ctx, self._batch)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        assert self._batch is not None and self._history is not None, "call reset() first"
        replicas, option = decode_actions(np.asarray(action), self.ctx, self._batch, self._history)
        info = self.sim.step(replicas, option)
        rewards = compute_reward(self.weights, self.sim.params, self.sim.state, info)[0]
        self._history = push_history(self._history, self._batch)
        self._batch = self.sim.signals()
        obs = encode(self._batch, self.ctx, self._history)
        truncated = bool(self.sim.done()[0])
        return obs, float(rewards.mean()), False, truncated, {
            "deployment_rewards": rewards,
            "cost_usd": info.cost_usd[0],
            "gpu_hours": info.gpu_hours[0],
        }
