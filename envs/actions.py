"""The per-Deployment action and its decoding into a decision.

An action is a pair (level, option). ``option`` 0 keeps the current
allocation option and ``option`` k >= 1 requests catalog option k - 1, so
"change nothing" is one fixed action whatever the Deployment runs, which
keeps exploration from starting a rollout at every tick. ``level`` 0 holds
the replica count; any other level sets a target
utilisation, and the replica count becomes the smallest that serves a demand
estimate at that utilisation of the chosen option's profiled capacity:

    replicas = ceil(demand / (utilisation * capacity_per_replica))

Levels 1..len(TARGET_UTILIZATION) size for the current demand,
``request_rate + waiting / DRAIN_S``, but never below the highest request
rate of the last STABILIZATION_TICKS ticks. A scale-up therefore happens at
once, and a scale-down waits until the higher rates have left that window,
as with HPA's downscale stabilisation. One quiet tick in noisy traffic then
does not remove pods that need a cold start to come back. The
PEAK_UTILIZATION levels size for the peak request rate of the whole history
window (HISTORY_TICKS ticks), which keeps capacity through the quiet gaps of
bursty traffic.

Sizing from a utilisation target, rather than a raw replica delta, keeps the
action scale-free, so one policy serves Deployments of any size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.observation import EncoderContext, feasible_options, option_capacity_rps
from envs.signals import SignalBatch

HOLD_LEVEL = 0
TARGET_UTILIZATION = (0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95)
PEAK_UTILIZATION = (0.5, 0.7, 0.85, 1.0)
# Ticks of request-rate history that bound a current-demand level from below:
# four 15-s ticks are one typical cold start of an 8B model.
STABILIZATION_TICKS = 4
N_LEVELS = 1 + len(TARGET_UTILIZATION) + len(PEAK_UTILIZATION)
KEEP_OPTION = 0


def option_choices(n_options: int) -> int:
    """Return the size of the option dimension: keep, then one entry per catalog option."""
    return n_options + 1
# A queue is budgeted to drain within this many seconds.
DRAIN_S = 30.0


@dataclass(frozen=True)
class Decision:
    """A controller's target for one Deployment at one tick."""

    name: str
    target_replicas: int
    option_index: int
    source: str = "policy"
    reason: str = ""


def action_masks(ctx: EncoderContext, batch: SignalBatch) -> np.ndarray:
    """Return (N, N_LEVELS + 1 + O) booleans: every level and "keep" are allowed, options by feasibility."""
    levels = np.ones((len(batch), N_LEVELS + 1), dtype=bool)
    return np.concatenate([levels, feasible_options(ctx, batch)], axis=1)


def decode_actions(
    actions: np.ndarray, ctx: EncoderContext, batch: SignalBatch, history: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Turn (N, 2) actions into target replicas (N,) and option indices (N,).

    ``history`` is the (N, HISTORY_TICKS) request-rate history the observation
    was encoded with (``envs.observation.push_history``).

    An infeasible option keeps the current one. Replicas are clipped to each
    Deployment's [min_replicas, max_replicas].
    """
    actions = np.asarray(actions, dtype=np.int64).reshape(len(batch), 2)
    level = np.clip(actions[:, 0], 0, N_LEVELS - 1)
    current = batch["option_index"].astype(np.int64)
    wanted = np.where(actions[:, 1] == KEEP_OPTION, current, np.clip(actions[:, 1] - 1, 0, ctx.n_options - 1))
    feasible = feasible_options(ctx, batch)
    option = np.where(feasible[np.arange(len(batch)), wanted], wanted, current)

    cap = option_capacity_rps(ctx, batch)
    rows = np.arange(len(batch))
    cap_new = cap[rows, option]
    cap_now = cap[rows, current]
    current_demand = np.nan_to_num(batch["request_rate"]) + np.nan_to_num(batch["waiting_requests"]) / DRAIN_S
    rates = np.nan_to_num(history)
    recent_demand = np.maximum(rates[:, -STABILIZATION_TICKS:].max(axis=1), current_demand)
    peak_demand = np.maximum(rates.max(axis=1), current_demand)
    n_current = len(TARGET_UTILIZATION)
    demand = np.where(level > n_current, peak_demand, recent_demand)
    utilization = np.array((1.0,) + TARGET_UTILIZATION + PEAK_UTILIZATION)[level]
    sized = np.ceil(demand / np.maximum(utilization * cap_new, 1e-9) - 1e-9)
    # Holding across an option change keeps the same total capacity.
    held = np.ceil(batch["desired_replicas"] * np.where(cap_new > 0, cap_now / np.maximum(cap_new, 1e-9), 1.0) - 1e-9)
    replicas = np.where(level == HOLD_LEVEL, held, sized)
    replicas = np.clip(replicas, ctx.min_replicas, ctx.max_replicas)
    return replicas.astype(np.int64), option
