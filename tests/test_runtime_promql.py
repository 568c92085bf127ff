"""PromQL templates, result parsing and the signal builder's documented substitutions."""

from __future__ import annotations

import math

import pytest

from agent.runtime.cluster_reader import DeploymentState
from agent.runtime.promql import (FAMILIES, FamilyResult, QueryTemplates, parse_sample_value, parse_vector,
                                   render_queries)
from agent.runtime.live_signals import CRITICAL, build_signals

KEY = ("serving", "chat-llm")
NOW = 1_800_000_000.0


def series(value: str, *, namespace: str = "serving", deployment: str = "chat-llm", **labels: str) -> dict:
    return {"metric": {"namespace": namespace, "deployment": deployment, **labels}, "value": [NOW, value]}


def healthy_families(**values: float) -> dict[str, FamilyResult]:
    defaults = {"request_rate": 4.0, "waiting_requests": 1.0, "running_requests": 6.0, "ttft_p95_s": 0.4,
                "mean_input_tokens": 900.0, "mean_output_tokens": 180.0, "e2e_p95_s": 2.0, "kv_cache_usage": 0.3,
                "gpu_utilization": 0.7, "dropped_rate": 0.0, "sample_time": NOW - 2.0}
    defaults.update(values)
    return {name: FamilyResult(values={KEY: value}, evaluated_at=NOW) for name, value in defaults.items()}


def state(ready: int = 2) -> DeploymentState:
    return DeploymentState(namespace=KEY[0], name=KEY[1], resource_version="7", spec_replicas=2, template={},
                           ready=ready, option_index=0)


def build(families: dict[str, FamilyResult], ready: int = 2):
    return build_signals(state(ready), families, free_slots={"H100-80GB/whole": 3.0}, quota_headroom=[4.0],
                         staleness_s=60.0, inf_latency_s=600.0, now_s=NOW)


def test_every_family_renders():
    queries = render_queries(QueryTemplates(), window="30s")
    assert set(queries) == set(FAMILIES)
    for family, text in queries.items():
        assert "<<" not in text, family
        assert "kube_replicaset_owner" in text, family
    assert "[30s]" in queries["request_rate"]
    assert 'vllm[:_]num_requests_waiting' in queries["waiting_requests"]
    assert "exported_pod" in queries["gpu_utilization"]


def test_unknown_placeholder_rejected():
    templates = QueryTemplates(request_rate="sum(rate(x[<<range>>]))")
    with pytest.raises(ValueError, match="unknown placeholders"):
        render_queries(templates, window="1m")


def test_invalid_window_rejected():
    with pytest.raises(ValueError, match="rate_window"):
        render_queries(QueryTemplates(), window="one minute")


@pytest.mark.parametrize("raw, expected", [("1.5", 1.5), ("+Inf", math.inf), ("-Inf", -math.inf), (3, 3.0),
                                           ("x", None), (None, None)])
def test_sample_value_parsing(raw, expected):
    assert parse_sample_value(raw) == expected


def test_nan_sample_value():
    assert math.isnan(parse_sample_value("NaN"))


def test_vector_duplicates_take_max():
    parsed = parse_vector([series("2"), series("5", instance="b"), series("1", deployment="other")])
    assert parsed.values[KEY] == 5.0
    assert parsed.values[("serving", "other")] == 1.0
    assert parsed.duplicates == 1


def test_vector_nan_duplicate_replaced():
    parsed = parse_vector([series("NaN"), series("3")])
    assert parsed.values[KEY] == 3.0


def test_vector_skips_unlabelled_and_invalid():
    parsed = parse_vector([{"metric": {"pod": "p"}, "value": [NOW, "1"]}, series("not a number")])
    assert parsed.values == {}
    assert parsed.unlabelled == 1
    assert parsed.invalid == 1
    assert parsed.ok


def test_vector_rejects_scalar_result():
    assert not parse_vector([NOW, "1"]).ok
    assert not parse_vector([{"metric": {}}]).ok


def test_empty_vector_is_ok():
    parsed = parse_vector([])
    assert parsed.ok
    assert parsed.values == {}


def test_healthy_signals():
    signals, health = build(healthy_families())
    assert health.ok
    assert health.age_s == pytest.approx(2.0)
    assert signals.request_rate == 4.0
    assert signals.free_slots == {"H100-80GB/whole": 3.0}
    assert signals.is_complete()


def test_zero_rate_nan_latency_becomes_zero():
    families = healthy_families(request_rate=0.0, ttft_p95_s=math.nan, mean_input_tokens=math.nan)
    signals, health = build(families)
    assert health.ok
    assert signals.ttft_p95_s == 0.0
    assert ("ttft_p95_s", "NaN at zero request rate") in health.substitutions


def test_nan_latency_with_traffic_is_unhealthy():
    signals, health = build(healthy_families(ttft_p95_s=math.nan))
    assert not health.ok
    assert "ttft_p95_s" in health.reason
    assert not signals.is_complete()


def test_inf_latency_substituted():
    signals, health = build(healthy_families(ttft_p95_s=math.inf))
    assert health.ok
    assert signals.ttft_p95_s == 600.0


def test_missing_series_without_ready_pods_is_zero():
    families = healthy_families()
    for name in CRITICAL:
        families[name] = FamilyResult(evaluated_at=NOW)
    signals, health = build(families, ready=0)
    assert health.ok
    assert signals.running_requests == 0.0


def test_missing_series_with_ready_pods_is_unhealthy():
    families = healthy_families()
    families["waiting_requests"] = FamilyResult(evaluated_at=NOW)
    _, health = build(families)
    assert not health.ok
    assert "waiting_requests" in health.reason


def test_stale_samples_unhealthy():
    _, health = build(healthy_families(sample_time=NOW - 300.0))
    assert not health.ok
    assert health.reason.startswith("stale")


def test_prometheus_down_unhealthy():
    families = {name: FamilyResult(error="Prometheus at x is unreachable") for name in FAMILIES}
    _, health = build(families)
    assert not health.ok
    assert health.reason.startswith("Prometheus unavailable")


def test_missing_secondary_keeps_raw_nan():
    families = healthy_families()
    families["gpu_utilization"] = FamilyResult(error="query gpu_utilization failed")
    signals, health = build(families)
    assert health.ok
    assert signals.gpu_utilization == 0.0
    assert math.isnan(health.raw["gpu_utilization"])


def test_negative_value_clipped():
    signals, health = build(healthy_families(waiting_requests=-2.0))
    assert signals.waiting_requests == 0.0
    assert ("waiting_requests", "negative value") in health.substitutions


def test_vector_nan_after_number_keeps_number():
    parsed = parse_vector([series("3"), series("NaN", instance="b")])
    assert parsed.values[KEY] == 3.0
    assert parsed.duplicates == 1


def test_vector_inf_duplicate_wins():
    parsed = parse_vector([series("0.4"), series("+Inf", instance="b")])
    assert parsed.values[KEY] == math.inf


def test_vector_duplicate_sample_times_take_newest():
    parsed = parse_vector([series(str(NOW - 500)), series(str(NOW - 3), instance="b")])
    _, health = build(healthy_families(sample_time=parsed.values[KEY]))
    assert health.ok
    assert health.age_s == pytest.approx(3.0)


@pytest.mark.parametrize("family, value", [("request_rate", math.inf), ("waiting_requests", -math.inf),
                                           ("ttft_p95_s", -math.inf)])
def test_infinite_critical_value_is_unhealthy(family, value):
    signals, health = build(healthy_families(**{family: value}))
    assert not health.ok
    assert health.reason == f"missing or NaN: {family}"
    assert math.isnan(getattr(signals, family))


def test_nan_secondary_value_is_zero():
    signals, health = build(healthy_families(kv_cache_usage=math.nan))
    assert health.ok
    assert signals.kv_cache_usage == 0.0
    assert ("kv_cache_usage", "secondary signal missing") in health.substitutions
    assert math.isnan(health.raw["kv_cache_usage"])


def test_all_results_empty_with_ready_pods_is_unhealthy():
    families = {name: FamilyResult(evaluated_at=NOW) for name in FAMILIES}
    signals, health = build(families)
    assert not health.ok
    assert health.reason == f"missing or NaN: {', '.join(CRITICAL)}"
    assert signals.gpu_utilization == 0.0


def test_empty_sample_time_with_ready_pods_is_unhealthy():
    families = healthy_families()
    families["sample_time"] = FamilyResult(evaluated_at=NOW)
    _, health = build(families)
    assert not health.ok
    assert health.reason == "no sample time for the Deployment's vLLM pods"


@pytest.mark.parametrize("sample_time, healthy, reason", [
    (NOW - 60.0, True, ""),
    (NOW - 60.5, False, "stale: newest sample is 60 s old (limit 60 s)"),
    (NOW + 30.0, True, ""),
    (NOW + 31.0, False, "clock skew: newest sample is 31 s ahead of the agent's clock (tolerance 30 s)"),
    (math.nan, False, "invalid sample time nan"),
    (math.inf, False, "invalid sample time inf"),
    (-math.inf, False, "invalid sample time -inf"),
], ids=["at-staleness-limit", "past-staleness-limit", "at-future-tolerance", "past-future-tolerance", "nan",
        "plus-inf", "minus-inf"])
def test_sample_time_freshness(sample_time, healthy, reason):
    _, health = build_signals(state(), healthy_families(sample_time=sample_time), free_slots={},
                              quota_headroom=[4.0], staleness_s=60.0, inf_latency_s=600.0,
                              future_tolerance_s=30.0, now_s=NOW)
    assert health.ok is healthy
    if healthy:
        assert health.reason == ""
        assert health.age_s == pytest.approx(max(NOW - sample_time, 0.0))
    else:
        assert health.reason.startswith(reason)
