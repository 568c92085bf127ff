"""Simulator state to a SignalBatch: what Prometheus and the API would report.

Rows are env-major: row ``e * D + d`` is Deployment d of env e.
"""

from __future__ import annotations

import numpy as np

from envs.serving.fluid import gather_by_option
from envs.signals import SignalBatch
from envs.sim.dynamics import _quota_usage, _slot_usage_sum, _sum_starting, starting_width
from envs.sim.params import SimParams
from envs.sim.state import SimState


def starting_pods(params: SimParams, state: SimState) -> np.ndarray:
    """Return (E, D) pods in their cold start."""
    return _sum_starting(state.starting[..., : starting_width(params)])


def free_slots(params: SimParams, state: SimState, starting: np.ndarray | None = None) -> np.ndarray:
    """Return (E, K) slots not held by any pod; ``starting`` is ``starting_pods`` when known."""
    held = (starting_pods(params, state) if starting is None else starting) + state.ready
    used = _slot_usage_sum(params, [(state.option, held), (state.old_option, state.old_ready)])
    return np.maximum(params.slot_capacity - used - state.draining_slots, 0.0)


def quota_headroom_pods(params: SimParams, state: SimState, starting: np.ndarray | None = None) -> np.ndarray:
    """Return (E, O) pods of each option that the quota still admits (inf without a quota)."""
    n_opt = len(params.option_names)
    if not params.quota_limit.shape[1]:
        return np.full((params.n_envs, n_opt), np.inf)
    held = (starting_pods(params, state) if starting is None else starting) + state.ready
    used = _quota_usage(params, state.option, held) + _quota_usage(params, state.old_option, state.old_ready)
    left = np.maximum(params.quota_limit - used, 0.0)
    per_pod = params.option_quota
    pods = np.where(per_pod[None] > 0, left[:, None, :] / np.where(per_pod > 0, per_pod, 1.0)[None], np.inf)
    return np.floor(pods.min(axis=-1))


def signal_batch(params: SimParams, state: SimState) -> SignalBatch:
    """Build the SignalBatch of every (env, Deployment) row from the state."""
    tick = params.tick_s
    d = params.n_deployments
    flat = lambda a: np.asarray(a, dtype=np.float64).reshape(-1)  # noqa: E731
    ready = state.ready + state.old_ready
    starting = starting_pods(params, state)
    concurrency = (
        state.ready * gather_by_option(params.max_concurrency, state.option)
        + state.old_ready * gather_by_option(params.max_concurrency, state.old_option)
    )
    values = {
        "request_rate": flat(state.arrivals / tick),
        "mean_input_tokens": flat(state.input_tokens),
        "mean_output_tokens": flat(state.output_tokens),
        "waiting_requests": flat(state.backlog),
        "running_requests": flat(state.running),
        "ttft_p95_s": flat(state.ttft_p95_s),
        "e2e_p95_s": flat(state.e2e_p95_s),
        "kv_cache_usage": flat(np.clip(state.running / np.maximum(concurrency, 1e-9), 0.0, 1.0) * (ready > 0)),
        "gpu_utilization": flat(state.utilization * (ready > 0)),
        "dropped_rate": flat(state.dropped / tick),
        "desired_replicas": flat(state.desired),
        "ready_replicas": flat(ready),
        "pending_replicas": flat(state.pending),
        "starting_replicas": flat(starting),
        "terminating_replicas": flat(state.draining_pods),
        "option_index": flat(state.option),
    }
    free = np.repeat(free_slots(params, state, starting), d, axis=0)
    headroom = np.repeat(quota_headroom_pods(params, state, starting), d, axis=0)
    return SignalBatch(values=values, free_slots=free, quota_headroom_pods=headroom)
