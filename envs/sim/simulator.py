"""BatchedSimulator: E simulated clusters of D Deployments stepped together."""

from __future__ import annotations

from dataclasses import fields
from typing import Sequence

import numpy as np

from envs.cluster.spec import ClusterSpec
from envs.signals import SignalBatch
from envs.sim.dynamics import ServingModel, StepInfo, episode_done, reset_envs, step
from envs.sim.observe import signal_batch
from envs.sim.params import Randomization, SimParams, build_params
from envs.sim.state import SimState, zeros_state
from envs.traces.records import ArrivalSeries

# Randomisation writes these SimParams arrays at every episode reset, so they
# are state, unlike the rest of SimParams, which the config rebuilds.
RANDOMIZED_PARAMS = ("startup_ticks", "slot_capacity")


class BatchedSimulator:
    """Holds SimParams and SimState and applies the pure step to them.

    Args:
        cluster: node pools, quota, catalog and Deployments.
        series: per Deployment, one or more arrival series to draw episodes from.
        n_envs: clusters simulated side by side.
        episode_ticks: ticks per episode.
        seed: seed of the counter-based random streams; env i of a batch sees
            the same draws as a single env with ``env_offset=i``.
        randomization: domain randomisation ranges.
        env_offset: id of the first env, so a scalar env can replay row i of a batch.
    """

    def __init__(
        self,
        cluster: ClusterSpec,
        series: Sequence[Sequence[ArrivalSeries]],
        *,
        n_envs: int = 1,
        episode_ticks: int = 240,
        seed: int = 0,
        randomization: Randomization | None = None,
        env_offset: int = 0,
    ) -> None:
        self.cluster = cluster
        self.params: SimParams = build_params(
            cluster, series, n_envs=n_envs, episode_ticks=episode_ticks, randomization=randomization
        )
        self.state: SimState = zeros_state(self.params)
        self.seed = int(seed)
        self.env_ids = np.arange(n_envs) + int(env_offset)
        self.last_info: StepInfo | None = None

    @property
    def n_rows(self) -> int:
        return self.params.n_envs * self.params.n_deployments

    def reset(self, seed: int | None = None) -> SignalBatch:
        """Reset every env, restarting the episode counters when a seed is given."""
        if seed is not None:
            self.seed = int(seed)
            self.state.episode[:] = 0
        self.reset_envs(np.arange(self.params.n_envs))
        return self.signals()

    def reset_envs(self, local_ids: np.ndarray) -> None:
        """Reset the envs at batch positions ``local_ids``."""
        local_ids = np.asarray(local_ids, dtype=np.int64)
        reset_envs(self.state, self.params, self.seed, local_ids, self.env_ids[local_ids])

    def step(
        self, target_replicas: np.ndarray, target_option: np.ndarray, serving: ServingModel | None = None
    ) -> StepInfo:
        """Apply (E, D) decisions and advance one tick.

        ``serving`` replaces the fluid serving model for this tick, for example
        with an ``envs.serving.des.DiscreteEventServing``.
        """
        shape = (self.params.n_envs, self.params.n_deployments)
        self.last_info = step(
            self.state,
            self.params,
            np.asarray(target_replicas).reshape(shape),
            np.asarray(target_option).reshape(shape),
            serving=serving,
        )
        return self.last_info

    def signals(self) -> SignalBatch:
        return signal_batch(self.params, self.state)

    def done(self) -> np.ndarray:
        return episode_done(self.state, self.params)

    def state_dict(self) -> dict[str, np.ndarray | int]:
        """Return copies of everything a continuation depends on: SimState, the randomised params and the seed.

        ``last_info`` is left out because nothing reads it before the next step overwrites it.
        """
        state: dict[str, np.ndarray | int] = {
            f"state.{item.name}": getattr(self.state, item.name).copy() for item in fields(SimState)
        }
        for name in RANDOMIZED_PARAMS:
            state[f"params.{name}"] = getattr(self.params, name).copy()
        state["seed"] = self.seed
        return state

    def load_state_dict(self, state: dict[str, np.ndarray | int]) -> None:
        """Restore a ``state_dict``; raise ValueError naming a missing key or a shape or dtype that differs."""
        for item in fields(SimState):
            _copy_into(getattr(self.state, item.name), state, f"state.{item.name}")
        for name in RANDOMIZED_PARAMS:
            _copy_into(getattr(self.params, name), state, f"params.{name}")
        if "seed" not in state:
            raise ValueError("simulator state has no 'seed'. Save it with BatchedSimulator.state_dict().")
        self.seed = int(state["seed"])
        self.last_info = None


def _copy_into(target: np.ndarray, state: dict[str, np.ndarray | int], key: str) -> None:
    """Copy ``state[key]`` into ``target`` in place after checking that its shape and dtype match."""
    if key not in state:
        raise ValueError(f"simulator state has no {key!r}. Save it with BatchedSimulator.state_dict().")
    value = np.asarray(state[key])
    if value.shape != target.shape or value.dtype != target.dtype:
        raise ValueError(
            f"simulator state {key!r} is {value.dtype}{list(value.shape)}, but this simulator has "
            f"{target.dtype}{list(target.shape)}. Restore it into a simulator built from the same config."
        )
    target[...] = value
