"""Reward: cost against SLO violations, drops and churn, per Deployment and tick.

    reward = -( cost_weight  * cost / reference_cost
              + slo_weight   * (requests that missed the TTFT target) / arrivals
              + drop_weight  * dropped / arrivals
              + churn_weight * |replica change| / max_replicas
              + allocation_change_weight * [option changed] )

``reference_cost`` is what the cheapest feasible option would cost this tick
at REFERENCE_UTILIZATION, floored at min_replicas (at least one) replicas of
it, so a controller that runs exactly what the load needs scores a cost term
near 1 at any traffic scale. Weights live in ``conf/reward``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.serving.capacity import replica_capacity_rps
from envs.sim.dynamics import StepInfo
from envs.sim.params import SimParams
from envs.sim.state import SimState

REFERENCE_UTILIZATION = 0.85


@dataclass(frozen=True)
class RewardWeights:
    cost_weight: float = 1.0
    slo_weight: float = 10.0
    drop_weight: float = 10.0
    churn_weight: float = 0.05
    allocation_change_weight: float = 0.1


def reference_cost(params: SimParams, state: SimState) -> np.ndarray:
    """Return the (E, D) cost of serving this tick's arrivals on the cheapest option."""
    cap = replica_capacity_rps(
        params.prefill_tps[None],
        params.decode_tps[None],
        params.max_concurrency[None],
        params.itl_s[None],
        state.input_tokens[..., None],
        state.output_tokens[..., None],
    )
    price = params.option_price_per_hour[None, None, :]
    per_rps = np.where(cap > 0, price / np.maximum(cap, 1e-9), np.inf)
    best = np.argmin(per_rps, axis=-1)
    best_cap = np.take_along_axis(cap, best[..., None], axis=-1)[..., 0]
    best_price = params.option_price_per_hour[best]
    replicas = np.maximum(state.arrivals / params.tick_s / (REFERENCE_UTILIZATION * best_cap), np.maximum(params.min_replicas, 1.0))
    return replicas * best_price * params.tick_s / 3600.0


def compute_reward(weights: RewardWeights, params: SimParams, state: SimState, info: StepInfo) -> np.ndarray:
    """Return the (E, D) reward of the tick just simulated."""
    arrivals = np.maximum(info.arrivals, 1e-9)
    has_load = info.arrivals > 1e-9
    missed = np.where(has_load, np.clip((info.arrivals - info.slo_met) / arrivals, 0.0, 1.0), 0.0)
    dropped = np.where(has_load, np.clip(info.dropped / arrivals, 0.0, 1.0), 0.0)
    cost = info.cost_usd / reference_cost(params, state)
    churn = np.abs(info.replicas_delta) / np.maximum(params.max_replicas, 1.0)
    penalty = (
        weights.cost_weight * cost
        + weights.slo_weight * missed
        + weights.drop_weight * dropped
        + weights.churn_weight * churn
        + weights.allocation_change_weight * info.option_change
    )
    return -penalty
