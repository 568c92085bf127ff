"""Fast batched serving model: queueing, TTFT, SLO attainment and drops per tick.

Every argument is an array over rows (one row per simulated Deployment), and
one call advances all rows by one tick without a Python loop.

The model, per row:

* Ready replicas form ``c = replicas * SERVERS_PER_REPLICA`` parallel servers
  with total capacity ``C`` requests per second (``envs.serving.capacity``).
* A backlog carried from earlier ticks drains at ``C``; requests arriving in
  the tick join behind it, so the deterministic wait grows or shrinks
  linearly across the tick between ``Q_start / C`` and ``Q_end / C``.
* Without a backlog, the wait follows the M/M/c tail
  ``P(W > t) = Pw * exp(-(C - lambda) t)`` with the Sakasegawa approximation
  ``Pw = rho ** (sqrt(2 (c + 1)) - 1)`` of the Erlang C probability
  (Sakasegawa, Annals of the Institute of Statistical Mathematics 29, 1977).
* TTFT is wait plus prefill time, ``input_tokens / prefill_tps * (1 + rho)``:
  a busy engine interleaves prefills with decode steps.
* Requests that would wait longer than ``queue_timeout_s`` are dropped.

``serving_inputs`` reads a tick's arrivals, token means and Ready capacity
from the simulator state, and ``serve_arrivals`` applies ``serve_tick`` to
them and stores the results in the state.

The per-request discrete-event model (``envs.serving.des``) uses the same
servers and service times, and a test checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.serving.capacity import replica_capacity_rps
from envs.sim.params import SimParams
from envs.sim.state import SimState

SERVERS_PER_REPLICA = 4
LATENCY_QUANTILES = (0.5, 0.95, 0.99)


@dataclass
class TickOutcome:
    """Per-row results of one tick. Latencies in seconds, counts in requests."""

    served: np.ndarray
    dropped: np.ndarray
    backlog: np.ndarray
    running: np.ndarray
    slo_met: np.ndarray
    ttft_p50_s: np.ndarray
    ttft_p95_s: np.ndarray
    ttft_p99_s: np.ndarray
    e2e_p95_s: np.ndarray
    utilization: np.ndarray


def _linear_cdf(low: np.ndarray, span: np.ndarray, s: np.ndarray) -> np.ndarray:
    # Waits spread uniformly over [low, low + span] across the tick's arrivals.
    flat = span < 1e-12
    frac = np.clip((s - low) / np.where(flat, 1.0, span), 0.0, 1.0)
    return np.where(flat, (s >= low).astype(np.float64), frac)


def serve_tick(
    *,
    arrivals: np.ndarray,
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
    backlog: np.ndarray,
    capacity_rps: np.ndarray,
    servers: np.ndarray,
    prefill_tps: np.ndarray,
    itl_s: np.ndarray,
    slo_ttft_s: np.ndarray,
    queue_timeout_s: np.ndarray,
    tick_s: float,
) -> TickOutcome:
    """Advance every row by one tick.

    Args:
        arrivals: requests arriving during the tick.
        input_tokens, output_tokens: mean tokens per request.
        backlog: requests waiting at the start of the tick.
        capacity_rps: requests per second all ready replicas sustain together.
        servers: parallel servers (ready replicas times SERVERS_PER_REPLICA).
        prefill_tps, itl_s: capacity-weighted profile of the ready replicas.
        slo_ttft_s: TTFT target of each row, seconds.
        queue_timeout_s: a request waiting longer is dropped, seconds.
        tick_s: tick length, seconds.
    """
    lam = arrivals / tick_s
    has_capacity = capacity_rps > 0
    safe_cap = np.where(has_capacity, capacity_rps, 1.0)

    # Step 1: fluid queue balance over the tick.
    work = backlog + arrivals
    served = np.minimum(work, capacity_rps * tick_s)
    remaining = work - served
    keep_limit = np.where(has_capacity, capacity_rps * queue_timeout_s, arrivals * queue_timeout_s / tick_s)
    dropped = np.maximum(remaining - keep_limit, 0.0)
    backlog_end = remaining - dropped

    # Step 2: utilisation and prefill time.
    rho = np.where(has_capacity, np.clip(lam / safe_cap, 0.0, 1.0), 1.0)
    prefill_s = np.where(prefill_tps > 0, input_tokens / np.maximum(prefill_tps, 1e-9), 0.0) * (1.0 + rho)

    # Step 3: the wait distribution, deterministic when a backlog exists.
    backlogged = (backlog > 1e-9) | (arrivals > capacity_rps * tick_s + 1e-9)
    w0 = np.where(has_capacity, backlog / safe_cap, queue_timeout_s)
    w1 = np.where(has_capacity, np.minimum(backlog_end / safe_cap, queue_timeout_s), queue_timeout_s)
    deterministic = backlogged | ~has_capacity
    low = np.minimum(w0, w1)
    span = np.abs(w1 - w0)
    rho_open = np.minimum(rho, 0.999)
    exponent = np.sqrt(2.0 * (np.maximum(servers, 1.0) + 1.0)) - 1.0
    p_wait = np.where(has_capacity, rho_open**exponent, 1.0)
    decay = np.maximum(safe_cap - lam, 1e-9)

    quantiles = []
    for q in LATENCY_QUANTILES:
        tail = 1.0 - q
        open_wait = np.where(p_wait > tail, np.log(np.maximum(p_wait, tail) / tail) / decay, 0.0)
        wait = np.where(deterministic, low + q * span, open_wait)
        quantiles.append(prefill_s + wait)
    ttft_p50, ttft_p95, ttft_p99 = quantiles

    # Step 4: SLO attainment over the tick's arrivals; dropped requests miss it.
    slack = slo_ttft_s - prefill_s
    open_met = np.where(slack > 0, 1.0 - p_wait * np.exp(-decay * np.maximum(slack, 0.0)), 0.0)
    backlog_met = np.where(slack > 0, _linear_cdf(low, span, slack), 0.0)
    met_fraction = np.where(deterministic, backlog_met, open_met)
    answered = np.maximum(arrivals - np.minimum(dropped, arrivals), 0.0)
    slo_met = met_fraction * answered

    # Step 5: end-to-end latency and requests in the engines.
    decode_s = output_tokens * itl_s * (1.0 + rho)
    e2e_p95 = ttft_p95 + decode_s
    running = served / tick_s * (prefill_s + decode_s)

    return TickOutcome(
        served=served,
        dropped=dropped,
        backlog=backlog_end,
        running=running,
        slo_met=slo_met,
        ttft_p50_s=ttft_p50,
        ttft_p95_s=ttft_p95,
        ttft_p99_s=ttft_p99,
        e2e_p95_s=e2e_p95,
        utilization=rho,
    )


def gather_by_option(table: np.ndarray, option: np.ndarray) -> np.ndarray:
    """Pick ``table[d, option[e, d]]`` for a (D, O) table and (E, D) option indices (-1 reads option 0)."""
    return table.reshape(-1)[flat_option_index(table.shape, option)]


def flat_option_index(shape: tuple[int, ...], option: np.ndarray) -> np.ndarray:
    """Return flat indices of ``table[d, option[e, d]]`` into a raveled (D, O) table."""
    # One flat index is several times faster than two broadcast fancy indices.
    return np.maximum(option, 0) + np.arange(shape[0])[None, :] * shape[1]


@dataclass
class ServingInputs:
    """Inputs of a serving model for tick ``state.t``; every field is (E, D)."""

    pos: np.ndarray  # bank index of the tick
    arrivals: np.ndarray  # requests arriving in the tick; fractional for rate traces
    input_tokens: np.ndarray  # mean tokens per request
    output_tokens: np.ndarray
    capacity_rps: np.ndarray  # requests per second all Ready replicas sustain together
    servers: np.ndarray  # Ready replicas times SERVERS_PER_REPLICA
    prefill_tps: np.ndarray  # capacity-weighted profile of the Ready replicas
    itl_s: np.ndarray


def serving_inputs(state: SimState, params: SimParams) -> ServingInputs:
    """Return the arrivals, token means and Ready capacity of tick ``state.t`` for every row."""
    pos = state.trace_pos + state.t[:, None]
    base = params.bank.requests[pos]
    arrivals = base * state.rate_scale
    has_requests = base > 0
    safe_arrivals = np.maximum(base, 1e-9)
    input_tokens = np.where(has_requests, params.bank.input_tokens[pos] / safe_arrivals * state.input_scale,
                            state.input_tokens)
    output_tokens = np.where(has_requests, params.bank.output_tokens[pos] / safe_arrivals * state.output_scale,
                             state.output_tokens)
    capacity, prefill, itl = _ready_capacity(params, state, input_tokens, output_tokens)
    return ServingInputs(
        pos=pos,
        arrivals=arrivals,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        capacity_rps=capacity,
        servers=(state.ready + state.old_ready) * SERVERS_PER_REPLICA,
        prefill_tps=prefill,
        itl_s=itl,
    )


def serve_arrivals(state: SimState, params: SimParams, rows: np.ndarray | None = None) -> None:
    """Serve the arrivals of tick ``state.t`` with the fluid model and store the metrics, for all envs or ``rows``."""
    inputs = serving_inputs(state, params)
    outcome = serve_tick(
        arrivals=inputs.arrivals,
        input_tokens=inputs.input_tokens,
        output_tokens=inputs.output_tokens,
        backlog=state.backlog,
        capacity_rps=inputs.capacity_rps,
        servers=inputs.servers,
        prefill_tps=inputs.prefill_tps,
        itl_s=inputs.itl_s,
        slo_ttft_s=params.slo_ttft_s[None, :],
        queue_timeout_s=params.queue_timeout_s[None, :],
        tick_s=params.tick_s,
    )
    results = {
        "backlog": outcome.backlog, "arrivals": inputs.arrivals, "input_tokens": inputs.input_tokens,
        "output_tokens": inputs.output_tokens, "running": outcome.running, "ttft_p50_s": outcome.ttft_p50_s,
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
        index = flat_option_index(params.prefill_tps.shape, option)
        prefill = params.prefill_tps.reshape(-1)[index]
        itl = params.itl_s.reshape(-1)[index]
        cap = replica_capacity_rps(
            prefill,
            params.decode_tps.reshape(-1)[index],
            params.max_concurrency.reshape(-1)[index],
            itl,
            input_tokens,
            output_tokens,
        )
        return cap, prefill, itl

    cap_new, prefill_new, itl_new = per_replica(state.option)
    cap_old, prefill_old, itl_old = per_replica(state.old_option)
    total_new = cap_new * state.ready
    total_old = np.where(state.old_option >= 0, cap_old * state.old_ready, 0.0)
    total = total_new + total_old
    weight = np.where(total > 0, total_new / np.where(total > 0, total, 1.0), 1.0)
    prefill = weight * prefill_new + (1.0 - weight) * prefill_old
    itl = weight * itl_new + (1.0 - weight) * itl_old
    return total, prefill, itl
