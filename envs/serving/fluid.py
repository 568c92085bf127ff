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

The per-request discrete-event model (``envs.serving.des``) uses the same
servers and service times, and a test checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def _linear_quantile(w0: np.ndarray, w1: np.ndarray, q: float) -> np.ndarray:
    # Waits spread uniformly between w0 and w1 across the tick's arrivals.
    return np.minimum(w0, w1) + q * np.abs(w1 - w0)


def _linear_cdf(w0: np.ndarray, w1: np.ndarray, s: np.ndarray) -> np.ndarray:
    low = np.minimum(w0, w1)
    span = np.abs(w1 - w0)
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
    rho_open = np.minimum(rho, 0.999)
    exponent = np.sqrt(2.0 * (np.maximum(servers, 1.0) + 1.0)) - 1.0
    p_wait = np.where(has_capacity, rho_open**exponent, 1.0)
    decay = np.maximum(safe_cap - lam, 1e-9)

    quantiles = []
    for q in LATENCY_QUANTILES:
        tail = 1.0 - q
        open_wait = np.where(p_wait > tail, np.log(np.maximum(p_wait, tail) / tail) / decay, 0.0)
        wait = np.where(backlogged | ~has_capacity, _linear_quantile(w0, w1, q), open_wait)
        quantiles.append(prefill_s + wait)
    ttft_p50, ttft_p95, ttft_p99 = quantiles

    # Step 4: SLO attainment over the tick's arrivals; dropped requests miss it.
    slack = slo_ttft_s - prefill_s
    open_met = np.where(slack > 0, 1.0 - p_wait * np.exp(-decay * np.maximum(slack, 0.0)), 0.0)
    backlog_met = np.where(slack > 0, _linear_cdf(w0, w1, slack), 0.0)
    met_fraction = np.where(backlogged | ~has_capacity, backlog_met, open_met)
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
