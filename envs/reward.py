"""Reward: cost against SLO violations, drops and churn, per Deployment and tick.

    reward = -( cost_weight  * cost / reference
              + slo_weight   * (requests that missed the TTFT target) / mean_arrivals
              + drop_weight  * dropped / mean_arrivals
              + churn_weight * |replica change| / max_replicas
              + allocation_change_weight * [option changed] )

``cost_basis`` sets what ``cost`` counts: dollars (``usd``) or GPU-hours
(``gpu_hours``, where a MIG slice or a shared GPU counts as its share of a
GPU). ``reference`` is the per-tick amount of the same unit that serving the
episode's mean load on the cheapest option at 85 % utilisation takes (at
least min_replicas, and at least one replica, of it), and ``mean_arrivals``
the episode's mean arrivals per tick. Both are constant over an episode, so
the summed reward is
``-T * (cost_weight * cost / reference + slo_weight * missed fraction + ...)``:
the same request-weighted SLO attainment and total cost that evaluation
reports, at any traffic scale. Weights live in ``conf/reward``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.sim.dynamics import StepInfo
from envs.sim.params import SimParams
from envs.sim.state import SimState



COST_BASES = ("usd", "gpu_hours")


@dataclass(frozen=True)
class RewardWeights:
    cost_weight: float = 1.0
    slo_weight: float = 30.0
    drop_weight: float = 30.0
    churn_weight: float = 0.05
    allocation_change_weight: float = 0.1
    cost_basis: str = "usd"

    def __post_init__(self) -> None:
        if self.cost_basis not in COST_BASES:
            raise ValueError(f"reward.cost_basis is {self.cost_basis!r}; use one of {list(COST_BASES)}")


def compute_reward(weights: RewardWeights, params: SimParams, state: SimState, info: StepInfo) -> np.ndarray:
    """Return the (E, D) reward of the tick just simulated."""
    mean_arrivals = state.episode_mean_arrivals
    missed = np.maximum(info.arrivals - info.slo_met, 0.0) / mean_arrivals
    dropped = np.minimum(info.dropped, info.arrivals) / mean_arrivals
    if weights.cost_basis == "gpu_hours":
        cost = info.gpu_hours / state.reference_gpu_hours
    else:
        cost = info.cost_usd / state.reference_cost
    churn = np.abs(info.replicas_delta) / np.maximum(params.max_replicas, 1.0)
    penalty = (
        weights.cost_weight * cost
        + weights.slo_weight * missed
        + weights.drop_weight * dropped
        + weights.churn_weight * churn
        + weights.allocation_change_weight * info.option_change
    )
    return -penalty
