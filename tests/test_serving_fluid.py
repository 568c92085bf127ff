"""The fluid serving model against hand-computed queueing cases."""

import math

import numpy as np
import pytest

from envs.serving.capacity import replica_capacity_rps
from envs.serving.fluid import serve_tick


def one(value: float) -> np.ndarray:
    return np.array([value], dtype=np.float64)


def tick(arrivals, capacity, backlog=0.0, servers=4.0, timeout=60.0, slo=1.0, prefill_tps=10000.0, tokens=1000.0):
    return serve_tick(
        arrivals=one(arrivals), input_tokens=one(tokens), output_tokens=one(100.0), backlog=one(backlog),
        capacity_rps=one(capacity), servers=one(servers), prefill_tps=one(prefill_tps), itl_s=one(0.01),
        slo_ttft_s=one(slo), queue_timeout_s=one(timeout), tick_s=15.0,
    )


def test_replica_capacity_takes_smaller_bound():
    # 1000 in / 100 out: work = 1000/10000 + 100/2000 = 0.15 s -> 6.667 req/s;
    # lifetime = 0.1 + 100 * 0.01 = 1.1 s, 64 slots -> 58.2 req/s; the throughput bound wins.
    cap = replica_capacity_rps(one(10000), one(2000), one(64), one(0.01), one(1000), one(100))
    assert cap[0] == pytest.approx(1 / 0.15)
    # With 4 slots the concurrency bound 4 / 1.1 = 3.636 req/s wins.
    cap = replica_capacity_rps(one(10000), one(2000), one(4), one(0.01), one(1000), one(100))
    assert cap[0] == pytest.approx(4 / 1.1)


def test_option_that_does_not_fit_has_no_capacity():
    cap = replica_capacity_rps(one(0), one(0), one(0), one(0), one(1000), one(100))
    assert cap[0] == 0.0


def test_open_queue_uses_erlang_tail():
    # lambda = 75 / 15 = 5 req/s on C = 10 req/s, 4 servers: rho = 0.5,
    # Pw = 0.5 ** (sqrt(10) - 1), p95 wait = ln(Pw / 0.05) / (10 - 5).
    out = tick(arrivals=75.0, capacity=10.0)
    p_wait = 0.5 ** (math.sqrt(10.0) - 1.0)
    prefill = 1000.0 / 10000.0 * 1.5
    assert out.served[0] == pytest.approx(75.0)
    assert out.backlog[0] == 0.0
    assert out.utilization[0] == pytest.approx(0.5)
    assert out.ttft_p95_s[0] == pytest.approx(prefill + math.log(p_wait / 0.05) / 5.0)
    # SLO 1 s: slack 0.85 s, P(wait > 0.85) = Pw * exp(-5 * 0.85).
    assert out.slo_met[0] / 75.0 == pytest.approx(1.0 - p_wait * math.exp(-5.0 * 0.85))


def test_overload_builds_backlog_linearly():
    # C = 2 req/s serves 30 of 60 arrivals; 30 remain, waits grow from 0 to 15 s.
    out = tick(arrivals=60.0, capacity=2.0)
    assert out.served[0] == pytest.approx(30.0)
    assert out.backlog[0] == pytest.approx(30.0)
    assert out.dropped[0] == 0.0
    prefill = 0.1 * 2.0  # rho clipped at 1
    assert out.ttft_p95_s[0] == pytest.approx(prefill + 0.95 * 15.0)
    # Slack 0.8 s of the 15 s spread: 0.8 / 15 of the arrivals meet the SLO.
    assert out.slo_met[0] == pytest.approx(60.0 * 0.8 / 15.0)


def test_requests_past_timeout_are_dropped():
    # C = 1 req/s, timeout 10 s: 15 served, 45 remain, at most 10 may wait.
    out = tick(arrivals=60.0, capacity=1.0, timeout=10.0)
    assert out.served[0] == pytest.approx(15.0)
    assert out.dropped[0] == pytest.approx(35.0)
    assert out.backlog[0] == pytest.approx(10.0)


def test_backlog_drains_into_a_quiet_tick():
    # 20 queued, no arrivals, C = 2 req/s: 20 served within the tick.
    out = tick(arrivals=0.0, capacity=2.0, backlog=20.0)
    assert out.served[0] == pytest.approx(20.0)
    assert out.backlog[0] == 0.0


def test_zero_capacity_waits_for_timeout():
    out = tick(arrivals=30.0, capacity=0.0, timeout=60.0)
    assert out.served[0] == 0.0
    # Arrivals of the last 60 s (30 per 15 s * 4 ticks) may wait; none dropped yet.
    assert out.dropped[0] == 0.0
    assert out.backlog[0] == pytest.approx(30.0)
    assert out.slo_met[0] == 0.0
    # Every request waits the full timeout, then prefills with rho = 1: 0.1 s * 2.
    assert out.ttft_p95_s[0] == pytest.approx(60.0 + 0.2)
