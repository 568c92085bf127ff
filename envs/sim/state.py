"""Mutable simulator state: arrays with a leading environment axis.

Pods of a Deployment are counted, not listed: ``pending`` (not yet placed),
``starting`` (a ring of cold-start countdowns, index = ticks left), ``ready``
and, during an allocation change, ``old_ready`` pods of the previous option
that keep serving until the new pods are Ready. Terminating pods hold their
devices for one tick while they drain (``draining_slots``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from envs.sim.params import MAX_STARTUP_TICKS, SimParams


@dataclass
class SimState:
    t: np.ndarray  # (E,) tick within the episode
    episode: np.ndarray  # (E,) episodes started so far, the counter of the random streams
    trace_pos: np.ndarray  # (E, D) bank index of tick 0 of this episode
    rate_scale: np.ndarray  # (E, D)
    # Factors on each request's input and output tokens (domain randomisation).
    input_scale: np.ndarray  # (E, D)
    output_scale: np.ndarray  # (E, D)
    # Mean arrivals per tick over this episode's window, and the cost per tick of
    # serving that mean on the cheapest option; the reward's normalisers.
    episode_mean_arrivals: np.ndarray  # (E, D)
    reference_cost: np.ndarray  # (E, D) USD per tick
    reference_gpu_hours: np.ndarray  # (E, D) GPU-hours per tick, the same for GPU-hours
    option: np.ndarray  # (E, D) option of the current pod template
    old_option: np.ndarray  # (E, D) option of pods still draining after a change, -1 if none
    desired: np.ndarray  # (E, D) spec.replicas
    pending: np.ndarray  # (E, D)
    starting: np.ndarray  # (E, D, S)
    ready: np.ndarray  # (E, D)
    old_ready: np.ndarray  # (E, D)
    draining_slots: np.ndarray  # (E, K) slots held by pods terminating this tick
    draining_pods: np.ndarray  # (E, D)
    backlog: np.ndarray  # (E, D) requests waiting
    # Last tick's serving metrics, the raw material of the signals.
    arrivals: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    running: np.ndarray
    ttft_p50_s: np.ndarray
    ttft_p95_s: np.ndarray
    ttft_p99_s: np.ndarray
    e2e_p95_s: np.ndarray
    utilization: np.ndarray
    dropped: np.ndarray
    slo_met: np.ndarray
    served: np.ndarray

    def copy(self) -> "SimState":
        return SimState(**{f.name: getattr(self, f.name).copy() for f in fields(self)})


def zeros_state(params: SimParams) -> SimState:
    """Allocate a state of the right shapes, every counter at zero."""
    e, d, k = params.n_envs, params.n_deployments, len(params.slot_kinds)
    ed = (e, d)
    f = lambda: np.zeros(ed)  # noqa: E731 - compact allocation of many float arrays
    return SimState(
        t=np.zeros(e, dtype=np.int64),
        episode=np.zeros(e, dtype=np.int64),
        trace_pos=np.zeros(ed, dtype=np.int64),
        rate_scale=np.ones(ed),
        input_scale=np.ones(ed),
        output_scale=np.ones(ed),
        episode_mean_arrivals=np.ones(ed),
        reference_cost=np.ones(ed),
        reference_gpu_hours=np.ones(ed),
        option=np.zeros(ed, dtype=np.int64),
        old_option=np.full(ed, -1, dtype=np.int64),
        desired=f(),
        pending=f(),
        starting=np.zeros((e, d, MAX_STARTUP_TICKS)),
        ready=f(),
        old_ready=f(),
        draining_slots=np.zeros((e, k)),
        draining_pods=f(),
        backlog=f(),
        arrivals=f(),
        input_tokens=f(),
        output_tokens=f(),
        running=f(),
        ttft_p50_s=f(),
        ttft_p95_s=f(),
        ttft_p99_s=f(),
        e2e_p95_s=f(),
        utilization=f(),
        dropped=f(),
        slo_met=f(),
        served=f(),
    )
