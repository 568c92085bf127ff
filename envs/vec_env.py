"""BatchedVecEnv: a native stable-baselines3 VecEnv over the batched simulator.

Each VecEnv row is one Deployment of one simulated cluster (row ``e * D + d``),
so one shared-weights policy acts for every Deployment. All rows step in one
array operation; finished clusters auto-reset through a mask, with the last
observation in ``infos[i]["terminal_observation"]`` and
``"TimeLimit.truncated"`` set, as SB3 expects for time-limit ends.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from envs.actions import N_LEVELS, option_choices, action_masks, decode_actions
from envs.cluster.spec import ClusterSpec
from envs.observation import OBSERVATION_BOUND, EncoderContext, encode, new_history, observation_size, push_history
from envs.reward import RewardWeights, compute_reward
from envs.sim.params import Randomization
from envs.sim.simulator import BatchedSimulator
from envs.traces.records import ArrivalSeries


class BatchedVecEnv(VecEnv):
    """E clusters of D Deployments as E * D VecEnv rows."""

    def __init__(
        self,
        cluster: ClusterSpec,
        series: Sequence[Sequence[ArrivalSeries]],
        *,
        n_envs: int,
        episode_ticks: int = 120,
        reward_weights: RewardWeights | None = None,
        randomization: Randomization | None = None,
        seed: int = 0,
    ) -> None:
        self.sim = BatchedSimulator(
            cluster, series, n_envs=n_envs, episode_ticks=episode_ticks, randomization=randomization, seed=seed
        )
        self.cluster = cluster
        self.n_clusters = n_envs
        self.n_deployments = len(cluster.deployments)
        self.ctx = EncoderContext.from_cluster(cluster).tile(n_envs)
        self.weights = reward_weights or RewardWeights()
        n_opt = len(cluster.catalog.options)
        observation_space = spaces.Box(-OBSERVATION_BOUND, OBSERVATION_BOUND, shape=(observation_size(n_opt),), dtype=np.float32)
        action_space = spaces.MultiDiscrete([N_LEVELS, option_choices(n_opt)])
        super().__init__(n_envs * self.n_deployments, observation_space, action_space)
        self._actions: np.ndarray | None = None
        self._batch = None
        self._history: np.ndarray | None = None
        self._episode_return = np.zeros(self.num_envs)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)

    # VecEnv API -------------------------------------------------------------

    def reset(self) -> np.ndarray:
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        self._batch = self.sim.reset(seed=seed)
        self._reset_seeds()
        self._history = new_history(self._batch)
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        return encode(self._batch, self.ctx, self._history)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        assert self._batch is not None, "call reset() first"
        assert self._history is not None, "call reset() first"
        assert self._actions is not None, "call step_async() first"
        replicas, option = decode_actions(self._actions, self.ctx, self._batch, self._history)
        info = self.sim.step(replicas, option)
        rewards = compute_reward(self.weights, self.sim.params, self.sim.state, info).reshape(-1)
        self._history = push_history(self._history, self._batch)
        self._batch = self.sim.signals()
        obs = encode(self._batch, self.ctx, self._history)
        self._episode_return += rewards
        self._episode_length += 1

        done_clusters = self.sim.done()
        dones = np.repeat(done_clusters, self.n_deployments)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done_clusters.any():
            # Step 1: record the terminal rows, then reset only the finished clusters.
            for row in np.flatnonzero(dones):
                infos[row] = {
                    "terminal_observation": obs[row],
                    "TimeLimit.truncated": True,
                    "episode": {"r": float(self._episode_return[row]), "l": int(self._episode_length[row])},
                }
            self.sim.reset_envs(np.flatnonzero(done_clusters))
            self._batch = self.sim.signals()
            fresh = new_history(self._batch)
            self._history = np.where(dones[:, None], fresh, self._history)
            obs = encode(self._batch, self.ctx, self._history)
            self._episode_return[dones] = 0.0
            self._episode_length[dones] = 0
        return obs, rewards.astype(np.float32), dones, infos

    # Resume ------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray | int]:
        """Return copies of the simulator state, the rate history and the running episode returns and lengths.

        The signal batch is left out because ``sim.signals()`` recomputes it
        from the simulator state. Keys of the simulator start with ``sim.``.
        """
        if self._history is None:
            raise ValueError("the VecEnv has no state before reset(). Call reset() or load_state_dict() first.")
        state: dict[str, np.ndarray | int] = {f"sim.{key}": value for key, value in self.sim.state_dict().items()}
        state["history"] = self._history.copy()
        state["episode_return"] = self._episode_return.copy()
        state["episode_length"] = self._episode_length.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray | int]) -> None:
        """Restore a ``state_dict`` in place of a reset; raise ValueError naming a part that does not fit."""
        prefix = "sim."
        self.sim.load_state_dict({key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)})
        self._batch = self.sim.signals()
        expected = {
            "history": new_history(self._batch),
            "episode_return": self._episode_return,
            "episode_length": self._episode_length,
        }
        for key, target in expected.items():
            value = np.asarray(state[key]) if key in state else None
            if value is None or value.shape != target.shape or value.dtype != target.dtype:
                found = "missing" if value is None else f"{value.dtype}{list(value.shape)}"
                raise ValueError(
                    f"VecEnv state {key!r} is {found}, but this VecEnv needs {target.dtype}{list(target.shape)}. "
                    "Restore it into a VecEnv built from the same config."
                )
        self._history = np.array(state["history"], copy=True)
        self._episode_return[:] = state["episode_return"]
        self._episode_length[:] = state["episode_length"]
        # Seeds set by VecEnv.seed() apply to the next reset(); the restored
        # state already follows the seeded reset, so they must not apply again.
        self._reset_seeds()

    def action_masks(self) -> np.ndarray:
        assert self._batch is not None, "call reset() first"
        return action_masks(self.ctx, self._batch)

    def close(self) -> None:
        return None

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        if method_name == "action_masks":
            masks = self.action_masks()
            return list(masks[list(self._get_indices(indices))])
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def has_attr(self, attr_name: str) -> bool:
        return hasattr(self, attr_name)

    def _get_indices(self, indices: Any) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices
