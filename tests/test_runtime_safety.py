"""Safety rules, the HPA fallback and its hysteresis, driven by a fake clock."""

from __future__ import annotations

import math

import pytest

from omegaconf import OmegaConf

from agent.runtime.safety import FallbackRule, FallbackTracker, Observation, Proposal, SafetyLayer
from agent.runtime.settings import FallbackSettings, SafetySettings
from envs.config import CONF_DIR, build_catalog, build_cluster
from envs.observation import EncoderContext
from envs.signals import WorkloadSignals
from envs.virtual_cluster.rehearsal import rehearsal_config

KEY = ("serving", "chat-llm")
CATALOG = build_catalog(OmegaConf.load(CONF_DIR / "catalog" / "default.yaml"))
H100 = CATALOG.option_index("h100-1")
A100 = CATALOG.option_index("a100-1")
FREE = {"H100-80GB/whole": 8.0, "A100-80GB/whole": 8.0}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def observe(replicas: int, *, option: int = H100, pending: int = 0, free: dict | None = None,
            quota: float = math.inf) -> Observation:
    return Observation(spec_replicas=replicas, option_index=option, pending_replicas=pending, min_replicas=1,
                       max_replicas=10, free_slots=free if free is not None else FREE,
                       quota_headroom=[quota] * len(CATALOG.options))


def layer(**overrides: float) -> SafetyLayer:
    settings = SafetySettings(scale_down_stabilization_s=60, allocation_change_cooldown_s=120,
                              manual_edit_backoff_s=300, max_scale_up_per_tick=3, max_scale_down_per_tick=1)
    for name, value in overrides.items():
        setattr(settings, name, value)
    return SafetyLayer(settings, catalog=CATALOG)


def test_max_replicas_clamped():
    decision = layer(max_scale_up_per_tick=100).apply(KEY, Proposal(50, H100, "policy"), observation=observe(4), now_s=0)
    assert decision.replicas == 10
    assert "max_replicas" in decision.rules
    assert decision.write_replicas


def test_scale_up_step_limited():
    decision = layer().apply(KEY, Proposal(9, H100, "policy"), observation=observe(2), now_s=0)
    assert decision.replicas == 5
    assert decision.rules == ["scale_up_step"]


def test_first_tick_cannot_scale_down():
    decision = layer().apply(KEY, Proposal(2, H100, "policy"), observation=observe(5), now_s=0)
    assert decision.replicas == 5
    assert "stabilization" in decision.rules
    assert not decision.write_replicas


def test_scale_down_waits_for_window():
    clock = FakeClock()
    safety = layer()
    safety.apply(KEY, Proposal(5, H100, "policy"), observation=observe(5), now_s=clock.now)
    held = safety.apply(KEY, Proposal(2, H100, "policy"), observation=observe(5), now_s=clock.advance(30))
    assert held.replicas == 5
    assert "stabilization" in held.rules
    stepped = safety.apply(KEY, Proposal(2, H100, "policy"), observation=observe(5), now_s=clock.advance(31))
    assert stepped.replicas == 4
    assert stepped.rules == ["scale_down_step"]


def test_manual_edit_backs_off():
    clock = FakeClock()
    safety = layer()
    safety.record_write(KEY, replicas=4, option_changed=False, now_s=clock.now)
    edited = safety.apply(KEY, Proposal(6, H100, "policy"), observation=observe(7), now_s=clock.advance(10))
    assert edited.source == "hold"
    assert edited.rules == ["manual_edit"]
    still = safety.apply(KEY, Proposal(6, H100, "policy"), observation=observe(7), now_s=clock.advance(200))
    assert still.rules == ["manual_edit"]
    resumed = safety.apply(KEY, Proposal(8, H100, "policy"), observation=observe(7), now_s=clock.advance(101))
    assert resumed.source == "policy"
    assert resumed.replicas == 8


def test_allocation_cooldown():
    clock = FakeClock()
    safety = layer()
    first = safety.apply(KEY, Proposal(2, A100, "policy"), observation=observe(2), now_s=clock.now)
    assert first.write_option
    safety.record_write(KEY, replicas=2, option_changed=True, now_s=clock.now)
    back = safety.apply(KEY, Proposal(2, H100, "policy"), observation=observe(2, option=A100), now_s=clock.advance(60))
    assert not back.write_option
    assert "allocation_cooldown" in back.rules
    later = safety.apply(KEY, Proposal(2, H100, "policy"), observation=observe(2, option=A100), now_s=clock.advance(61))
    assert later.write_option


def test_allocation_change_needs_room_for_all_pods():
    decision = layer().apply(KEY, Proposal(4, A100, "policy"), observation=observe(4, free={**FREE, "A100-80GB/whole": 3}),
                             now_s=0)
    assert not decision.write_option
    assert "capacity" in decision.rules


def test_scale_up_limited_by_free_slots():
    decision = layer().apply(KEY, Proposal(5, H100, "policy"), observation=observe(2, free={"H100-80GB/whole": 2}), now_s=0)
    assert decision.replicas == 4
    assert decision.rules == ["capacity"]


def test_scale_up_limited_by_quota_after_pending():
    decision = layer().apply(KEY, Proposal(5, H100, "policy"), observation=observe(2, pending=1, quota=3), now_s=0)
    assert decision.replicas == 4
    assert decision.rules == ["quota"]


def test_no_room_holds_replicas():
    decision = layer().apply(KEY, Proposal(5, H100, "policy"), observation=observe(2, pending=2, quota=2), now_s=0)
    assert decision.replicas == 2
    assert not decision.write_replicas


def test_hold_keeps_current_state():
    decision = layer().hold(KEY, observe(3, option=A100), rule="api_unavailable", reason="API down")
    assert (decision.replicas, decision.option_index, decision.changes) == (3, A100, False)


def fallback_rule(**settings) -> FallbackRule:
    rule = FallbackRule(FallbackSettings(**settings))
    spec = build_cluster(rehearsal_config())
    rule.reset(EncoderContext.from_cluster(spec), [KEY[1]], tick_s=15.0, slot_kinds=spec.catalog.slot_kinds)
    return rule


@pytest.mark.parametrize("utilization, expected", [
    (0.9, 5),    # ratio 1.5: ceil(3 * 1.5)
    (0.63, 3),   # ratio 1.05 is within the 0.1 tolerance
    (0.75, 4),   # ratio 1.25: ceil(3.75)
])
def test_fallback_follows_hpa(utilization, expected):
    signals = WorkloadSignals(name=KEY[1], namespace=KEY[0], desired_replicas=3, ready_replicas=3,
                              gpu_utilization=utilization)
    [(replicas, why)] = fallback_rule(target=0.6).propose([signals], [{"gpu_utilization": utilization}], now_s=0)
    assert replicas == expected
    assert "fallback HPA on gpu_utilization" in why


def test_fallback_holds_without_metric():
    signals = WorkloadSignals(name=KEY[1], namespace=KEY[0], desired_replicas=3, ready_replicas=3)
    [(replicas, why)] = fallback_rule().propose([signals], [{"gpu_utilization": math.nan}], now_s=0)
    assert replicas == 3
    assert "unavailable" in why


def test_fallback_requests_in_flight():
    signals = WorkloadSignals(name=KEY[1], namespace=KEY[0], desired_replicas=2, ready_replicas=2,
                              running_requests=50.0, waiting_requests=10.0)
    raw = {"running_requests": 50.0, "waiting_requests": 10.0}
    [(replicas, _)] = fallback_rule(metric="requests_in_flight", target=10).propose([signals], [raw], now_s=0)
    assert replicas == 6


def test_fallback_rejects_unknown_metric():
    with pytest.raises(ValueError, match="not one of"):
        FallbackRule(FallbackSettings(metric="cpu"))


def test_fallback_tracker_hysteresis():
    tracker = FallbackTracker(recover_after_ticks=2)
    assert tracker.update(KEY, healthy=True) == (False, "")
    assert tracker.update(KEY, healthy=False) == (True, "entered")
    assert tracker.update(KEY, healthy=False) == (True, "")
    assert tracker.update(KEY, healthy=True) == (True, "")
    assert tracker.update(KEY, healthy=False) == (True, "")
    assert tracker.update(KEY, healthy=True) == (True, "")
    assert tracker.update(KEY, healthy=True) == (False, "recovered")
