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
5. the serving model serves the tick's arrivals with the Ready capacity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from envs.serving.capacity import DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS, replica_capacity_rps
from envs.serving.fluid import gather_by_option, serve_arrivals
from envs.sim.params import SimParams, randomize_envs

# Utilisation at which the reward's reference cost serves the mean load.
REFERENCE_UTILIZATION = 0.85
from envs.sim.state import SimState


# A serving model reads tick ``state.t``'s arrivals and the Ready capacity and
# stores the tick's serving metrics in the state, as ``serve_arrivals`` does.
ServingModel = Callable[[SimState, SimParams], None]


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


def reset_envs(state: SimState, params: SimParams, seed: int, env_ids: np.ndarray, global_ids: np.ndarray) -> None:
    """Start a new episode in batch rows ``env_ids``: initial pods Ready, fresh randomisation.

    ``global_ids`` key the random streams (see ``randomize_envs``).
    """
    if len(env_ids) == 0:
        return
    state.episode[env_ids] += 1
    rate_scale, starts, option, replicas, tokens = randomize_envs(
        params, seed, env_ids, global_ids, state.episode[env_ids])
    state.rate_scale[env_ids] = rate_scale
    state.input_scale[env_ids] = tokens[..., 0]
    state.output_scale[env_ids] = tokens[..., 1]
    state.trace_pos[env_ids] = starts
    state.t[env_ids] = 0
    state.option[env_ids] = option
    state.old_option[env_ids] = -1
    state.desired[env_ids] = replicas
    state.ready[env_ids] = replicas
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
    """Store each episode's mean arrivals per tick and the cost and GPU-hours of serving them cheaply.

    Both come from the trace window, which the reward may see; observations never do.
    """
    window = state.trace_pos[env_ids][..., None] + np.arange(params.episode_ticks)
    requests = params.bank.requests[window]
    total = np.maximum(requests.sum(axis=-1), 1e-9)
    mean_in = params.bank.input_tokens[window].sum(axis=-1) / total * state.input_scale[env_ids]
    mean_out = params.bank.output_tokens[window].sum(axis=-1) / total * state.output_scale[env_ids]
    mean_arrivals = requests.mean(axis=-1) * state.rate_scale[env_ids]
    cap = replica_capacity_rps(
        params.prefill_tps[None], params.decode_tps[None], params.max_concurrency[None], params.itl_s[None],
        mean_in[..., None], mean_out[..., None],
    )
    state.episode_mean_arrivals[env_ids] = np.maximum(mean_arrivals, 1e-6)
    tick_h = params.tick_s / 3600.0
    for target, per_hour in ((state.reference_cost, params.option_price_per_hour),
                             (state.reference_gpu_hours, params.option_gpu_equivalents)):
        target[env_ids] = _cheapest_hourly(params, cap, mean_arrivals, per_hour) * tick_h


def _cheapest_hourly(params: SimParams, cap: np.ndarray, mean_arrivals: np.ndarray, per_hour: np.ndarray) -> np.ndarray:
    """Return the hourly amount (dollars or GPUs) of serving ``mean_arrivals`` on the cheapest option.

    The load is served at REFERENCE_UTILIZATION, with at least min_replicas
    (and at least one replica) of the option cheapest per replica.
    """
    per_rps = np.where(cap > 0, per_hour[None, None, :] / np.maximum(cap, 1e-9), np.inf).min(axis=-1)
    cheapest_replica = np.where(params.fits, per_hour[None, :], np.inf).min(axis=-1)
    return np.maximum(mean_arrivals / params.tick_s * per_rps / REFERENCE_UTILIZATION,
                      np.maximum(params.min_replicas, 1.0)[None, :] * cheapest_replica[None, :])


def _grant_in_order(free: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """Grant (E, D, R) demands against (E, R) free amounts in Deployment order."""
    before = np.cumsum(demand, axis=1) - demand
    return np.clip(free[:, None, :] - before, 0.0, demand)


def _remove_youngest(starting: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Remove up to ``count`` (E, D) starting pods in place, most ticks left first; return how many per (E, D).

    The ring has few columns, so a loop over them beats a cumulative sum over
    every slot, and whole pod counts keep the subtractions exact.
    """
    left = count.copy()
    for column in range(starting.shape[-1] - 1, -1, -1):
        taken = np.minimum(left, starting[..., column])
        starting[..., column] -= taken
        left -= taken
    return count - left


def _writable_view(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Return ``array`` reshaped to ``shape`` as a view, so that writes through it reach ``array``."""
    view = array.reshape(shape)
    if not np.may_share_memory(view, array):
        raise ValueError(
            f"SimState.starting with strides {array.strides} cannot be reshaped to {shape} without a copy; "
            "allocate the state with envs.sim.state.zeros_state"
        )
    return view


def _grant_slots(params: SimParams, free: np.ndarray, option: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """Grant (E, D) slot demands of ``option`` against (E, K) free slots in Deployment order.

    Each demand draws on one slot kind, so the grant is computed per kind that
    some Deployment currently uses; the other kinds would grant zero.
    """
    kind = params.option_kind[option]
    present = np.zeros(free.shape[1], dtype=bool)
    present[kind.ravel()] = True
    grant = np.zeros_like(demand)
    for k in np.flatnonzero(present):
        demand_k = np.where(kind == k, demand, 0.0)
        grant += _grant_in_order(free[:, k : k + 1], demand_k[..., None])[..., 0]
    return grant


def _slot_usage(params: SimParams, option: np.ndarray, pods: np.ndarray) -> np.ndarray:
    """Return (E, K) slots held by ``pods`` (E, D) of ``option`` (E, D); option -1 holds none."""
    return _slot_usage_sum(params, [(option, pods)])


def _slot_usage_sum(params: SimParams, holdings: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Return (E, K) slots held by all (option, pods) pairs of ``holdings`` together.

    Pod and device counts are whole numbers, so the float sums are exact and
    the order of summation does not change the result.
    """
    n_envs, n_kinds = params.slot_capacity.shape
    env_base = (np.arange(n_envs) * n_kinds)[:, None]
    bins, weights = [], []
    for option, pods in holdings:
        safe = np.maximum(option, 0)
        bins.append((env_base + params.option_kind[safe]).ravel())
        weights.append((params.option_devices[safe] * pods * (option >= 0)).ravel())
    flat = np.bincount(np.concatenate(bins), weights=np.concatenate(weights), minlength=n_envs * n_kinds)
    return flat.reshape(n_envs, n_kinds)


def starting_width(params: SimParams) -> int:
    """Return how many leading columns of ``SimState.starting`` can hold pods.

    Pods enter the cold-start ring at index ``startup_ticks`` and move towards
    0, and a reset clears its rows, so every column past the largest startup
    tick stays zero. Working on the leading columns only gives the same sums.
    """
    return int(params.startup_ticks.max()) + 1


def _quota_usage(params: SimParams, option: np.ndarray, pods: np.ndarray) -> np.ndarray:
    per_pod = params.option_quota[np.maximum(option, 0)] * (option >= 0)[..., None]
    return (per_pod * pods[..., None]).sum(axis=1)


class _HeldRates:
    """Hourly price and GPU equivalents per pod of (E, D) options, gathered once; option -1 costs nothing."""

    def __init__(self, params: SimParams, option: np.ndarray) -> None:
        safe = np.maximum(option, 0)
        self.price = params.option_price_per_hour[safe]
        self.gpus = params.option_gpu_equivalents[safe]
        self.valid = option >= 0

    def price_of(self, pods: np.ndarray) -> np.ndarray:
        return self.price * pods * self.valid

    def gpus_of(self, pods: np.ndarray) -> np.ndarray:
        return self.gpus * pods * self.valid


def _sum_starting(starting: np.ndarray) -> np.ndarray:
    """Return the (E, D) pods in the cold-start ring; column adds beat a reduction over a short axis."""
    total = starting[..., 0].copy()
    for column in range(1, starting.shape[-1]):
        total += starting[..., column]
    return total


def step(
    state: SimState,
    params: SimParams,
    target_replicas: np.ndarray,
    target_option: np.ndarray,
    serving: ServingModel | None = None,
) -> StepInfo:
    """Apply one decision per (env, Deployment) and advance every env by one tick.

    ``serving`` replaces the fluid serving model of step 6 (``serve_arrivals``)
    when given, for example by the per-request discrete-event model.
    """
    tick_h = params.tick_s / 3600.0
    starting = state.starting[..., : starting_width(params)]

    # Step 1: validate the decision; an option that does not fit keeps the current one.
    target_option = np.asarray(target_option, dtype=np.int64)
    fits = gather_by_option(params.fits, np.clip(target_option, 0, params.fits.shape[1] - 1))
    target_option = np.where(fits & (target_option >= 0), target_option, state.option)
    target = np.clip(np.round(np.asarray(target_replicas, dtype=np.float64)), params.min_replicas, params.max_replicas)
    previous_desired = state.desired.copy()

    # Step 2: an allocation change starts a rollout. Pod counts are whole
    # numbers, so the running total of starting pods below stays exact.
    change = target_option != state.option
    option_before, old_option_before = state.option, state.old_option
    draining_prev_old = np.where(change & (old_option_before >= 0), state.old_ready, 0.0)
    starting_total = _sum_starting(starting)
    rates_old_before = _HeldRates(params, old_option_before)
    rates_before = _HeldRates(params, option_before)
    drain_cost = rates_old_before.price_of(draining_prev_old)
    drain_gpu = rates_old_before.gpus_of(draining_prev_old)
    drained_starting = np.where(change, starting_total, 0.0)
    drain_cost += rates_before.price_of(drained_starting)
    drain_gpu += rates_before.gpus_of(drained_starting)
    draining_pods = draining_prev_old + drained_starting
    state.old_ready = np.where(change, state.ready, state.old_ready)
    state.old_option = np.where(change, option_before, old_option_before)
    state.ready = np.where(change, 0.0, state.ready)
    state.pending = np.where(change, 0.0, state.pending)
    if change.any():
        starting[change] = 0.0
        starting_total = np.where(change, 0.0, starting_total)
    state.option = target_option

    # Step 3: the ReplicaSet reaches spec.replicas.
    total = state.pending + starting_total + state.ready
    state.pending += np.maximum(target - total, 0.0)
    excess = np.maximum(total - target, 0.0)
    from_pending = np.minimum(excess, state.pending)
    state.pending -= from_pending
    excess -= from_pending
    removed_total = _remove_youngest(starting, excess)
    starting_total = starting_total - removed_total
    from_ready = np.minimum(excess - removed_total, state.ready)
    state.ready -= from_ready
    retired = removed_total + from_ready
    rates_new = _HeldRates(params, state.option)
    drain_cost += rates_new.price_of(retired)
    drain_gpu += rates_new.gpus_of(retired)
    draining_pods += retired
    state.desired = target

    # Step 4: schedule Pending pods on free slots within the quota.
    held = starting_total + state.ready
    used = _slot_usage_sum(params, [(state.option, held), (state.old_option, state.old_ready)])
    draining_slots = _slot_usage_sum(
        params, [(old_option_before, draining_prev_old), (option_before, drained_starting), (state.option, retired)]
    )
    free = np.maximum(params.slot_capacity - used - draining_slots, 0.0)
    units = params.option_devices[state.option]
    slot_grant = _grant_slots(params, free, state.option, state.pending * units)
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
    row_index = np.arange(params.n_envs * params.n_deployments).reshape(state.option.shape)
    countdown = params.startup_ticks.reshape(-1)[row_index * params.startup_ticks.shape[-1] + state.option]
    # A pod placed at tick n with a startup of k ticks enters slot k and first
    # serves in tick n + k, the first tick that starts after it is Ready. Each
    # (env, Deployment) pair appears once, so fancy-index += does not drop repeats.
    _writable_view(state.starting, (-1,))[row_index * state.starting.shape[-1] + countdown] += placed
    starting_total = starting_total + placed

    # Step 5: cold starts count down; new Ready pods retire old-option pods one for one.
    newly_ready = starting[..., 0].copy()
    for column in range(starting.shape[-1] - 1):
        starting[..., column] = starting[..., column + 1]
    starting[..., -1] = 0.0
    starting_total = starting_total - newly_ready
    state.ready += newly_ready
    old_keep = np.clip(state.desired - state.ready, 0.0, state.old_ready)
    old_retired = state.old_ready - old_keep
    draining_slots += _slot_usage(params, state.old_option, old_retired)
    rates_old = _HeldRates(params, state.old_option)
    drain_cost += rates_old.price_of(old_retired)
    drain_gpu += rates_old.gpus_of(old_retired)
    draining_pods += old_retired
    state.old_ready = old_keep
    state.old_option = np.where(state.old_ready > 0, state.old_option, -1)
    state.draining_slots = draining_slots
    state.draining_pods = draining_pods

    # Step 6: serve this tick's arrivals.
    if serving is None:
        serve_arrivals(state, params)
    else:
        serving(state, params)

    # Step 7: cost of every pod that holds a device (starting, Ready, draining).
    holding = starting_total + state.ready
    rates_old = _HeldRates(params, state.old_option)
    price = rates_new.price_of(holding)
    price += rates_old.price_of(state.old_ready) + drain_cost
    gpus = rates_new.gpus_of(holding)
    gpus += rates_old.gpus_of(state.old_ready) + drain_gpu
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


def episode_done(state: SimState, params: SimParams) -> np.ndarray:
    """Return (E,) whether each env finished its episode."""
    return state.t >= params.episode_ticks
