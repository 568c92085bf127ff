"""One tick of the batched cluster: rollout, scaling, scheduling, cold start, serving.

``step`` and ``reset_envs`` mutate a SimState in place and touch every
environment and Deployment with array operations only. The order inside a
tick follows what a Kubernetes cluster does after a controller writes:

1. an allocation change starts a rollout: the new template's pods are created
   while the old option's Ready pods keep serving;
2. the ReplicaSet adds or deletes pods to reach ``spec.replicas``, deleting
   Pending pods first, then the youngest starting pods, then Ready ones;
3. the scheduler places Pending pods on free slots of the matching kind in
   Deployment order, within the ResourceQuota (what does not fit stays Pending);
4. cold starts count down and finished pods become Ready, which retires as
   many pods of the old option;
5. the serving model answers the tick's arrivals with the Ready capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.serving.capacity import DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS, replica_capacity_rps
from envs.serving.fluid import SERVERS_PER_REPLICA, serve_tick
from envs.sim.params import SimParams, randomize_envs

# Utilisation at which the reward's reference cost serves the mean load.
REFERENCE_UTILIZATION = 0.85
from envs.sim.state import SimState


@dataclass
class StepInfo:
    """Per (env, Deployment) accounting of one tick."""

    cost_usd: np.ndarray
    gpu_hours: np.ndarray
    arrivals: np.ndarray
    served: np.ndarray
    dropped: np.ndarray
    slo_met: np.ndarray
    scale_event: np.ndarray
    option_change: np.ndarray
    pending: np.ndarray
    replicas_delta: np.ndarray


def _gather(table: np.ndarray, option: np.ndarray) -> np.ndarray:
    """Pick ``table[d, option[e, d]]`` for a (D, O) table and (E, D) option indices."""
    d_index = np.arange(table.shape[0])[None, :]
    return table[d_index, np.maximum(option, 0)]


def reset_envs(state: SimState, params: SimParams, seed: int, env_ids: np.ndarray, global_ids: np.ndarray) -> None:
    """Start a new episode in batch rows ``env_ids``: initial pods Ready, fresh randomisation.

    ``global_ids`` key the random streams (see ``randomize_envs``).
    """
    if len(env_ids) == 0:
        return
    state.episode[env_ids] += 1
    rate_scale, starts = randomize_envs(params, seed, env_ids, global_ids, state.episode[env_ids])
    state.rate_scale[env_ids] = rate_scale
    state.trace_pos[env_ids] = starts
    state.t[env_ids] = 0
    state.option[env_ids] = params.initial_option[None, :]
    state.old_option[env_ids] = -1
    state.desired[env_ids] = params.initial_replicas[None, :]
    state.ready[env_ids] = params.initial_replicas[None, :]
    for name in (
        "pending", "old_ready", "draining_pods", "backlog", "arrivals", "running", "ttft_p50_s",
        "ttft_p95_s", "ttft_p99_s", "e2e_p95_s", "utilization", "dropped", "slo_met", "served",
    ):
        getattr(state, name)[env_ids] = 0.0
    state.starting[env_ids] = 0.0
    state.draining_slots[env_ids] = 0.0
    state.input_tokens[env_ids] = DEFAULT_INPUT_TOKENS
    state.output_tokens[env_ids] = DEFAULT_OUTPUT_TOKENS
    _episode_references(state, params, env_ids)
    # The agent starts on a running service: the first signals show tick 0's
    # traffic on the initial pods. Time stays at tick 0 and the queue empty.
    serve_arrivals(state, params, env_ids)
    state.backlog[env_ids] = 0.0


def _episode_references(state: SimState, params: SimParams, env_ids: np.ndarray) -> None:
    """Store each episode's mean arrivals per tick and the cost of serving them cheaply.

    Both come from the trace window, which the reward may see; observations never do.
    """
    window = state.trace_pos[env_ids][..., None] + np.arange(params.episode_ticks)
    requests = params.bank.requests[window]
    total = np.maximum(requests.sum(axis=-1), 1e-9)
    mean_in = params.bank.input_tokens[window].sum(axis=-1) / total
    mean_out = params.bank.output_tokens[window].sum(axis=-1) / total
    mean_arrivals = requests.mean(axis=-1) * state.rate_scale[env_ids]
    cap = replica_capacity_rps(
        params.prefill_tps[None], params.decode_tps[None], params.max_concurrency[None], params.itl_s[None],
        mean_in[..., None], mean_out[..., None],
    )
    price = params.option_price_per_hour[None, None, :]
    per_rps = np.where(cap > 0, price / np.maximum(cap, 1e-9), np.inf).min(axis=-1)
    cheapest_replica = np.where(params.fits, params.option_price_per_hour[None, :], np.inf).min(axis=-1)
    hourly = np.maximum(mean_arrivals / params.tick_s * per_rps / REFERENCE_UTILIZATION,
                        np.maximum(params.min_replicas, 1.0)[None, :] * cheapest_replica[None, :])
    state.episode_mean_arrivals[env_ids] = np.maximum(mean_arrivals, 1e-6)
    state.reference_cost[env_ids] = hourly * params.tick_s / 3600.0


def _remove_youngest(starting: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Remove up to ``count`` starting pods, most ticks left first; return how many per slot."""
    reversed_counts = starting[..., ::-1]
    before = np.cumsum(reversed_counts, axis=-1) - reversed_counts
    removed = np.clip(count[..., None] - before, 0.0, reversed_counts)
    return removed[..., ::-1]


def _grant_in_order(free: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """Grant (E, D, R) demands against (E, R) free amounts in Deployment order."""
    before = np.cumsum(demand, axis=1) - demand
    return np.clip(free[:, None, :] - before, 0.0, demand)


def _slot_usage(params: SimParams, option: np.ndarray, pods: np.ndarray) -> np.ndarray:
    """Return (E, K) slots held by ``pods`` (E, D) of ``option`` (E, D); option -1 holds none."""
    n_kinds = len(params.slot_kinds)
    kind = params.option_kind[np.maximum(option, 0)]
    units = params.option_devices[np.maximum(option, 0)] * pods * (option >= 0)
    onehot = kind[..., None] == np.arange(n_kinds)
    return (onehot * units[..., None]).sum(axis=1)


def _quota_usage(params: SimParams, option: np.ndarray, pods: np.ndarray) -> np.ndarray:
    per_pod = params.option_quota[np.maximum(option, 0)] * (option >= 0)[..., None]
    return (per_pod * pods[..., None]).sum(axis=1)


def _held_price(params: SimParams, option: np.ndarray, pods: np.ndarray, table: np.ndarray) -> np.ndarray:
    return table[np.maximum(option, 0)] * pods * (option >= 0)


def step(state: SimState, params: SimParams, target_replicas: np.ndarray, target_option: np.ndarray) -> StepInfo:
    """Apply one decision per (env, Deployment) and advance every env by one tick."""
    e_index = np.arange(params.n_envs)[:, None]
    d_index = np.arange(params.n_deployments)[None, :]
    tick_h = params.tick_s / 3600.0

    # Step 1: validate the decision; an option that does not fit keeps the current one.
    target_option = np.asarray(target_option, dtype=np.int64)
    fits = params.fits[d_index, np.clip(target_option, 0, params.fits.shape[1] - 1)]
    target_option = np.where(fits & (target_option >= 0), target_option, state.option)
    target = np.clip(np.round(np.asarray(target_replicas, dtype=np.float64)), params.min_replicas, params.max_replicas)
    previous_desired = state.desired.copy()

    # Step 2: an allocation change starts a rollout.
    change = target_option != state.option
    draining_pods = np.zeros_like(state.ready)
    draining_option = np.full_like(state.option, -1)
    draining_prev_old = np.where(change & (state.old_option >= 0), state.old_ready, 0.0)
    starting_total = state.starting.sum(axis=-1)
    draining_slots = _slot_usage(params, state.old_option, draining_prev_old)
    drain_cost = _held_price(params, state.old_option, draining_prev_old, params.option_price_per_hour)
    drain_gpu = _held_price(params, state.old_option, draining_prev_old, params.option_gpu_equivalents)
    drained_starting = np.where(change, starting_total, 0.0)
    draining_slots += _slot_usage(params, state.option, drained_starting)
    drain_cost += _held_price(params, state.option, drained_starting, params.option_price_per_hour)
    drain_gpu += _held_price(params, state.option, drained_starting, params.option_gpu_equivalents)
    draining_pods += draining_prev_old + drained_starting
    state.old_ready = np.where(change, state.ready, state.old_ready)
    state.old_option = np.where(change, state.option, state.old_option)
    state.ready = np.where(change, 0.0, state.ready)
    state.pending = np.where(change, 0.0, state.pending)
    state.starting[change] = 0.0
    state.option = target_option

    # Step 3: the ReplicaSet reaches spec.replicas.
    starting_total = state.starting.sum(axis=-1)
    total = state.pending + starting_total + state.ready
    state.pending += np.maximum(target - total, 0.0)
    excess = np.maximum(total - target, 0.0)
    from_pending = np.minimum(excess, state.pending)
    state.pending -= from_pending
    excess -= from_pending
    removed = _remove_youngest(state.starting, excess)
    state.starting -= removed
    removed_total = removed.sum(axis=-1)
    from_ready = np.minimum(excess - removed_total, state.ready)
    state.ready -= from_ready
    retired = removed_total + from_ready
    draining_slots += _slot_usage(params, state.option, retired)
    drain_cost += _held_price(params, state.option, retired, params.option_price_per_hour)
    drain_gpu += _held_price(params, state.option, retired, params.option_gpu_equivalents)
    draining_pods += retired
    state.desired = target

    # Step 4: schedule Pending pods on free slots within the quota.
    held = state.starting.sum(axis=-1) + state.ready
    used = _slot_usage(params, state.option, held) + _slot_usage(params, state.old_option, state.old_ready)
    free = np.maximum(params.slot_capacity - used - draining_slots, 0.0)
    n_kinds = len(params.slot_kinds)
    units = params.option_devices[state.option]
    kind_onehot = params.option_kind[state.option][..., None] == np.arange(n_kinds)
    slot_demand = kind_onehot * (state.pending * units)[..., None]
    slot_grant = _grant_in_order(free, slot_demand).sum(axis=-1)
    placeable = np.floor(slot_grant / units + 1e-9)
    if params.quota_limit.shape[1]:
        quota_used = _quota_usage(params, state.option, held) + _quota_usage(params, state.old_option, state.old_ready)
        quota_free = np.maximum(params.quota_limit - quota_used, 0.0)
        per_pod = params.option_quota[state.option]
        quota_demand = per_pod * state.pending[..., None]
        quota_grant = _grant_in_order(quota_free, quota_demand)
        pods_by_key = np.where(per_pod > 0, np.floor(quota_grant / np.where(per_pod > 0, per_pod, 1.0) + 1e-9), np.inf)
        placeable = np.minimum(placeable, pods_by_key.min(axis=-1))
    placed = np.minimum(placeable, state.pending)
    state.pending -= placed
    countdown = params.startup_ticks[e_index, d_index, state.option]
    # Each (env, Deployment) pair appears once, so fancy-index += does not drop repeats.
    state.starting[e_index, d_index, countdown] += placed

    # Step 5: cold starts count down; new Ready pods retire old-option pods one for one.
    newly_ready = state.starting[..., 0].copy()
    state.starting[..., :-1] = state.starting[..., 1:]
    state.starting[..., -1] = 0.0
    state.ready += newly_ready
    old_keep = np.clip(state.desired - state.ready, 0.0, state.old_ready)
    old_retired = state.old_ready - old_keep
    draining_slots += _slot_usage(params, state.old_option, old_retired)
    drain_cost += _held_price(params, state.old_option, old_retired, params.option_price_per_hour)
    drain_gpu += _held_price(params, state.old_option, old_retired, params.option_gpu_equivalents)
    draining_pods += old_retired
    state.old_ready = old_keep
    state.old_option = np.where(state.old_ready > 0, state.old_option, -1)
    state.draining_slots = draining_slots
    state.draining_pods = draining_pods

    # Step 6: serve this tick's arrivals.
    serve_arrivals(state, params)

    # Step 7: cost of every pod that holds a device (starting, Ready, draining).
    holding = state.starting.sum(axis=-1) + state.ready
    price = _held_price(params, state.option, holding, params.option_price_per_hour)
    price += _held_price(params, state.old_option, state.old_ready, params.option_price_per_hour) + drain_cost
    gpus = _held_price(params, state.option, holding, params.option_gpu_equivalents)
    gpus += _held_price(params, state.old_option, state.old_ready, params.option_gpu_equivalents) + drain_gpu
    state.t += 1
    return StepInfo(
        cost_usd=price * tick_h,
        gpu_hours=gpus * tick_h,
        arrivals=state.arrivals.copy(),
        served=state.served.copy(),
        dropped=state.dropped.copy(),
        slo_met=state.slo_met.copy(),
        scale_event=state.desired != previous_desired,
        option_change=change,
        pending=state.pending.copy(),
        replicas_delta=state.desired - previous_desired,
    )


def serve_arrivals(state: SimState, params: SimParams, rows: np.ndarray | None = None) -> None:
    """Serve the arrivals of tick ``state.t`` and store the metrics, for all envs or ``rows``."""
    pos = state.trace_pos + state.t[:, None]
    base = params.bank.requests[pos]
    arrivals = base * state.rate_scale
    has_requests = base > 0
    safe_arrivals = np.maximum(base, 1e-9)
    input_tokens = np.where(has_requests, params.bank.input_tokens[pos] / safe_arrivals, state.input_tokens)
    output_tokens = np.where(has_requests, params.bank.output_tokens[pos] / safe_arrivals, state.output_tokens)
    capacity, prefill, itl = _ready_capacity(params, state, input_tokens, output_tokens)
    outcome = serve_tick(
        arrivals=arrivals,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        backlog=state.backlog,
        capacity_rps=capacity,
        servers=(state.ready + state.old_ready) * SERVERS_PER_REPLICA,
        prefill_tps=prefill,
        itl_s=itl,
        slo_ttft_s=params.slo_ttft_s[None, :],
        queue_timeout_s=params.queue_timeout_s[None, :],
        tick_s=params.tick_s,
    )
    results = {
        "backlog": outcome.backlog, "arrivals": arrivals, "input_tokens": input_tokens,
        "output_tokens": output_tokens, "running": outcome.running, "ttft_p50_s": outcome.ttft_p50_s,
        "ttft_p95_s": outcome.ttft_p95_s, "ttft_p99_s": outcome.ttft_p99_s, "e2e_p95_s": outcome.e2e_p95_s,
        "utilization": outcome.utilization, "dropped": outcome.dropped, "slo_met": outcome.slo_met,
        "served": outcome.served,
    }
    for name, value in results.items():
        if rows is None:
            setattr(state, name, value)
        else:
            getattr(state, name)[rows] = value[rows]


def _ready_capacity(
    params: SimParams, state: SimState, input_tokens: np.ndarray, output_tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return total capacity (req/s) and the capacity-weighted prefill rate and ITL."""

    def per_replica(option: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prefill = _gather(params.prefill_tps, option)
        cap = replica_capacity_rps(
            prefill,
            _gather(params.decode_tps, option),
            _gather(params.max_concurrency, option),
            _gather(params.itl_s, option),
            input_tokens,
            output_tokens,
        )
        return cap, prefill, _gather(params.itl_s, option)

    cap_new, prefill_new, itl_new = per_replica(state.option)
    cap_old, prefill_old, itl_old = per_replica(state.old_option)
    total_new = cap_new * state.ready
    total_old = np.where(state.old_option >= 0, cap_old * state.old_ready, 0.0)
    total = total_new + total_old
    weight = np.where(total > 0, total_new / np.where(total > 0, total, 1.0), 1.0)
    prefill = weight * prefill_new + (1.0 - weight) * prefill_old
    itl = weight * itl_new + (1.0 - weight) * itl_old
    return total, prefill, itl


def episode_done(state: SimState, params: SimParams) -> np.ndarray:
    """Return (E,) whether each env finished its episode."""
    return state.t >= params.episode_ticks
