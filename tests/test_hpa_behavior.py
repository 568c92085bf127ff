"""HPA normalization: upstream tables for stabilization and rate limits, hand-computed
multi-tick runs, manifest loading and the replay script.

The tables named ``Test...`` reuse the inputs and expected values of the functions of that
name in ``pkg/controller/podautoscaler/horizontal_test.go`` (Kubernetes 1.3x).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.baselines.hpa import (
    DEFAULT_SCALE_DOWN_RULES,
    CrossVersionObjectReference,
    DEFAULT_SCALE_UP_RULES,
    HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior,
    HPAScalingPolicy,
    HPAScalingRules,
    HpaController,
    HpaManifestError,
    HpaState,
    MetricValues,
    Pod,
    PodMetricSample,
    QuantityError,
    ScaleEvent,
    TimestampedRecommendation,
    Tolerances,
    load_hpa_manifest,
    milli_value,
)
from agent.baselines.hpa.api_types import default_scaling_rules
from agent.baselines.hpa.normalization import (
    calculate_scale_down_limit_with_behaviors,
    calculate_scale_up_limit,
    calculate_scale_up_limit_with_scaling_rules,
    convert_desired_replicas_with_behavior_rate,
    convert_desired_replicas_with_rules,
    replicas_change_per_period,
    stabilize_recommendation,
    stabilize_recommendation_with_behaviors,
    store_scale_event,
)
from agent.baselines.hpa.replica_calculator import external_metric_replicas, external_per_pod_metric_replicas, object_metric_replicas

REPO = Path(__file__).resolve().parent.parent
NOW = 10_000.0


def rules(pods: int, pods_period: int, percent: int, percent_period: int, window: int, select: str = "Max") -> HPAScalingRules:
    """Scaling rules as ``generateScalingRules`` in horizontal_test.go."""
    policies = []
    if pods:
        policies.append(HPAScalingPolicy("Pods", pods, pods_period))
    if percent:
        policies.append(HPAScalingPolicy("Percent", percent, percent_period))
    return HPAScalingRules(stabilization_window_seconds=window, select_policy=select, policies=tuple(policies))


def uniform_events(changes: list[int], period_s: float = 120.0) -> list[ScaleEvent]:
    """Events spread over the last period, each in the middle of its segment (``generateEventsUniformDistribution``)."""
    segment = period_s / len(changes)
    return [ScaleEvent(change, NOW - (period_s - segment * (i + 1) + segment / 2)) for i, change in enumerate(changes)]


# TestNormalizeDesiredReplicas: (subtest, recommendations as (replicas, age_s), proposal, expected, log length)
@pytest.mark.parametrize("subtest,records,proposal,expected,length", [
    ("empty log", [], 5, 5, 1),
    ("stabilize", [(4, 120), (5, 60)], 3, 5, 3),
    ("no stabilize", [(1, 120), (2, 60)], 3, 3, 3),
    ("no stabilize - old recommendations", [(10, 600), (9, 540)], 3, 3, 2),
    ("stabilize - old recommendations", [(10, 600), (4, 60), (5, 120), (9, 540)], 3, 5, 4),
])
def test_legacy_stabilization_upstream(subtest, records, proposal, expected, length):
    history = [TimestampedRecommendation(r, NOW - age) for r, age in records]
    assert stabilize_recommendation(history, proposal, NOW, 300.0) == expected
    assert len(history) == length


# TestNormalizeDesiredReplicasWithBehavior: (subtest, records, current, proposal, expected, stored replicas, up window, down window)
@pytest.mark.parametrize("subtest,records,current,proposal,expected,stored,up_window,down_window", [
    ("empty recommendations for scaling down", [], 100, 5, 5, [5], 0, 0),
    ("simple scale down stabilization", [(4, 120), (5, 60)], 100, 3, 5, [4, 5, 3], 0, 180),
    ("simple scale up stabilization", [(4, 120), (5, 60)], 1, 7, 4, [4, 5, 7], 300, 0),
    ("no scale down stabilization", [(1, 120), (2, 60)], 100, 3, 3, [1, 2, 3], 300, 0),
    ("no scale up stabilization", [(4, 120), (5, 60)], 1, 3, 3, [4, 5, 3], 0, 300),
    ("no scale down stabilization, reuse recommendation element", [(10, 600), (9, 540)], 100, 3, 3, [10, 3], 0, 0),
    ("no scale up stabilization, reuse recommendation element", [(10, 600), (9, 540)], 1, 100, 100, [10, 100], 0, 0),
    ("scale down stabilization, reuse one of obsolete recommendation element", [(10, 600), (4, 60), (5, 120), (9, 540)], 100, 3, 5, [10, 4, 5, 3], 0, 180),
    ("scale up stabilization, reuse one of obsolete recommendation element", [(10, 6000), (6, 60), (5, 120), (9, 180)], 1, 100, 5, [100, 6, 5, 9], 300, 0),
    ("scale up and down stabilization, do not scale up when prenormalized rec goes down", [(2, 6000), (3, 180)], 2, 1, 2, None, 300, 300),
    ("scale up and down stabilization, do not scale down when prenormalized rec goes up", [(2, 6000), (1, 180)], 2, 3, 2, None, 300, 300),
])
def test_behavior_stabilization_upstream(subtest, records, current, proposal, expected, stored, up_window, down_window):
    history = [TimestampedRecommendation(r, NOW - age) for r, age in records]
    result = stabilize_recommendation_with_behaviors(history, current, proposal, up_window, down_window, NOW)
    assert result.replicas == expected
    if stored is not None:
        assert [record.replicas for record in history] == stored


SCALING_WITH_RULES = [
    # (subtest, up events, down events, min, max, up rules, down rules, current, proposal, expected, reason)
    ("prenormalized desired replicas within range", [], [], 3, 8, None, None, 5, 7, 7, "DesiredWithinRange"),
    ("prenormalized desired replicas < minReplicas", [], [], 2, 8, None, None, 3, 1, 2, "TooFewReplicas"),
    ("prenormalized desired replicas within range when minReplicas is 0", [], [], 0, 10, None, None, 1, 0, 0, "DesiredWithinRange"),
    ("maxReplicas is the limit because maxReplicas < scaleUpLimit", [], [], 1, 10, None, None, 20, 1000, 10, "TooManyReplicas"),
    ("desired replica count is more than the maximum replica count", [], [], 100, 150, None, None, 100, 1000, 150, "TooManyReplicas"),
    ("scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies", [], [], 1, 2000, rules(0, 0, 1, 60, 0), None, 3, 1000, 4, "ScaleUpLimit"),
    ("scaleDownLimit is the limit because scaleDownLimit > minReplicas with user defined policies", [], [], 3, 2000, None, rules(20, 60, 0, 0, 0), 1000, 3, 980, "ScaleDownLimit"),
    ("scaleUp with default behavior", [], [], 1, 1000, None, None, 10, 50, 20, "ScaleUpLimit"),
    ("scaleUp with pods policy larger than percent policy", [], [], 1, 1000, rules(100, 60, 100, 60, 0), None, 10, 500, 110, "ScaleUpLimit"),
    ("scaleUp with percent policy larger than pods policy", [], [], 1, 1000, rules(2, 60, 100, 60, 0), None, 10, 500, 20, "ScaleUpLimit"),
    ("scaleUp with spec MaxReplicas limitation with large pod policy", [], [], 1, 1000, rules(100, 60, 0, 0, 0), None, 10, 50, 50, "DesiredWithinRange"),
    ("scaleUp with spec MaxReplicas limitation with large percent policy", [], [], 1, 1000, rules(10000, 60, 0, 0, 0), None, 10, 50, 50, "DesiredWithinRange"),
    ("scaleUp with pod policy limitation", [], [], 1, 1000, rules(30, 60, 0, 0, 0), None, 10, 50, 40, "ScaleUpLimit"),
    ("scaleUp with percent policy limitation", [], [], 1, 1000, rules(0, 0, 200, 60, 0), None, 10, 50, 30, "ScaleUpLimit"),
    ("scaleDown with percent policy larger than pod policy", [], [], 1, 1000, None, rules(20, 60, 1, 60, 300), 100, 2, 80, "ScaleDownLimit"),
    ("scaleDown with pod policy larger than percent policy", [], [], 1, 1000, None, rules(2, 60, 1, 60, 300), 100, 2, 98, "ScaleDownLimit"),
    ("scaleDown with spec MinReplicas limitation with large pod policy", [], [], 1, 1000, None, rules(100, 60, 0, 0, 300), 10, 0, 1, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large percent policy", [], [], 5, 1000, None, rules(0, 0, 100, 60, 300), 10, 2, 5, "TooFewReplicas"),
    ("scaleDown with pod policy limitation", [], [], 1, 1000, None, rules(5, 60, 0, 0, 300), 10, 2, 5, "ScaleDownLimit"),
    ("scaleDown with percent policy limitation", [], [], 1, 1000, None, rules(0, 0, 50, 60, 300), 10, 5, 5, "DesiredWithinRange"),
    ("scaleUp with spec MaxReplicas limitation with large pod policy and events", [1, 5, 9], [], 1, 200, rules(300, 60, 0, 0, 0), None, 100, 500, 200, "TooManyReplicas"),
    ("scaleUp with spec MaxReplicas limitation with large percent policy and events", [1, 5, 9], [], 1, 200, rules(0, 0, 10000, 60, 0), None, 100, 500, 200, "TooManyReplicas"),
    ("scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events", [1, 5, 9], [], 1, 1000, rules(5, 120, 0, 0, 0), None, 100, 500, 100, "ScaleUpLimit"),
    ("scaleUp with pod policy and previous scale up events", [1, 5, 9], [], 1, 1000, rules(150, 120, 0, 0, 0), None, 100, 500, 235, "ScaleUpLimit"),
    ("scaleUp with percent policy and previous scale up events", [1, 5, 9], [], 1, 1000, rules(0, 0, 200, 120, 0), None, 100, 500, 255, "ScaleUpLimit"),
    ("scaleUp with percent policy and previous scale up and down events", [4], [2], 1, 1000, rules(0, 0, 300, 300, 0), None, 6, 24, 16, "ScaleUpLimit"),
    ("scaleDown with default policy and previous events", [], [1, 5, 9], 1, 1000, None, None, 10, 5, 5, "DesiredWithinRange"),
    ("scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events", [], [1, 5, 9], 1, 1000, None, rules(115, 120, 0, 0, 300), 100, 0, 1, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large pod policy and previous events", [], [1, 5, 9], 5, 1000, None, rules(130, 120, 0, 0, 300), 100, 0, 5, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large percent policy and previous events", [], [1, 5, 9], 5, 1000, None, rules(0, 0, 100, 120, 300), 100, 2, 5, "TooFewReplicas"),
    ("scaleDown with pod policy limitation and previous events", [], [1, 5, 9], 1, 1000, None, rules(5, 120, 0, 0, 300), 100, 2, 100, "ScaleDownLimit"),
    ("scaleDown with percent policy limitation and previous events", [], [2, 4, 6], 1, 1000, None, rules(0, 0, 50, 120, 300), 100, 0, 56, "ScaleDownLimit"),
    ("scaleDown with percent policy and previous scale up and down events", [2], [4], 1, 1000, None, rules(0, 0, 50, 180, 0), 10, 1, 6, "ScaleDownLimit"),
    ("scaleDown with previous events preventing further scale down", [], [10, 10, 10], 1, 1000, None, rules(0, 0, 10, 120, 300), 100, 0, 100, "ScaleDownLimit"),
    ("scaleDown with with previous events still allowing more scale down", [], [10, 10, 10], 1, 1000, None, rules(0, 0, 1000, 120, 300), 10, 5, 5, "DesiredWithinRange"),
    ("check 'outdated' flag for events for one behavior for up", [8, 12, 9, 11], [], 1, 1000, rules(1000, 60, 0, 0, 0), None, 100, 200, 200, "DesiredWithinRange"),
    ("check that events were not marked 'outdated' for two different policies in the behavior for up", [8, 12, 9, 11], [], 1, 1000, rules(1000, 120, 100, 60, 0), None, 100, 200, 200, "DesiredWithinRange"),
    ("check that events were marked 'outdated' for two different policies in the behavior for up", [8, 12, 9, 11], [], 1, 1000, rules(1000, 30, 100, 60, 0), None, 100, 200, 200, "DesiredWithinRange"),
    ("check 'outdated' flag for events for one behavior for down", [], [8, 12, 9, 11], 1, 1000, None, rules(1000, 60, 0, 0, 300), 100, 5, 5, "DesiredWithinRange"),
    ("check that events were not marked 'outdated' for two different policies in the behavior for down", [], [8, 12, 9, 11], 1, 1000, None, rules(1000, 120, 100, 60, 300), 100, 5, 5, "DesiredWithinRange"),
    ("check that events were marked 'outdated' for two different policies in the behavior for down", [], [8, 12, 9, 11], 1, 1000, None, rules(1000, 30, 100, 60, 300), 100, 5, 5, "DesiredWithinRange"),
]


@pytest.mark.parametrize("subtest,up,down,min_r,max_r,up_rules,down_rules,current,proposal,expected,reason", SCALING_WITH_RULES, ids=[c[0] for c in SCALING_WITH_RULES])
def test_scaling_with_rules_upstream(subtest, up, down, min_r, max_r, up_rules, down_rules, current, proposal, expected, reason):
    state = HpaState(scale_up_events=uniform_events(up) if up else [], scale_down_events=uniform_events(down) if down else [])
    result = convert_desired_replicas_with_behavior_rate(
        current, proposal, min_r, max_r,
        default_scaling_rules(up_rules, DEFAULT_SCALE_UP_RULES), default_scaling_rules(down_rules, DEFAULT_SCALE_DOWN_RULES), state, NOW,
    )
    assert result.replicas == expected
    assert result.reason == reason


# TestStoreScaleEvents: (subtest, previous events as (change, age_s), rules, change in the last 60 s, stored events as (change, outdated))
@pytest.mark.parametrize("subtest,previous,scaling,recent,stored", [
    ("empty entries with default behavior", [], None, 0, []),
    ("empty entries with two-policy-behavior", [], rules(10, 60, 100, 60, 0), 0, [(5, False)]),
    ("one outdated entry to be kept untouched without behavior", [(7, 61)], None, 0, [(7, False)]),
    ("one outdated entry to be replaced with behavior", [(7, 61)], rules(10, 60, 100, 60, 0), 0, [(5, False)]),
    ("one actual entry to be not touched with behavior", [(7, 58)], rules(10, 60, 100, 60, 0), 7, [(7, False), (5, False)]),
    ("two entries, one of them to be replaced", [(7, 61), (6, 59)], rules(10, 60, 0, 0, 0), 6, [(5, False), (6, False)]),
    ("replace one entry, use policies with different periods", [(8, 29), (6, 59), (7, 61), (9, 61)], rules(10, 60, 100, 30, 0), 14, [(8, False), (6, False), (7, True), (5, False)]),
    ("two entries, both actual", [(7, 58), (6, 59)], rules(10, 120, 100, 30, 0), 13, [(7, False), (6, False), (5, False)]),
])
def test_store_scale_events_upstream(subtest, previous, scaling, recent, stored):
    for direction in ("up", "down"):
        events = [ScaleEvent(change, NOW - age) for change, age in previous]
        state = HpaState(scale_up_events=events) if direction == "up" else HpaState(scale_down_events=events)
        behavior = None
        if scaling is not None:
            behavior = HorizontalPodAutoscalerBehavior(scale_up=scaling) if direction == "up" else HorizontalPodAutoscalerBehavior(scale_down=scaling)
        assert replicas_change_per_period(60, events, NOW) == recent
        store_scale_event(behavior, state, 10, 15 if direction == "up" else 5, NOW)
        kept = state.scale_up_events if direction == "up" else state.scale_down_events
        assert [(e.replica_change, e.outdated) for e in kept] == stored


@pytest.mark.parametrize("current,proposal,min_r,max_r,expected,reason", [
    (5, 7, 3, 8, 7, "DesiredWithinRange"),
    (3, 1, 2, 8, 2, "TooFewReplicas"),
    (1, 0, 0, 10, 0, "DesiredWithinRange"),
    (20, 1000, 1, 10, 10, "TooManyReplicas"),
    (3, 1000, 1, 2000, calculate_scale_up_limit(3, factor=8.0), "ScaleUpLimit"),  # 24 with the test package's factor 8
])
def test_convert_desired_replicas_with_rules_upstream(current, proposal, min_r, max_r, expected, reason):
    result = convert_desired_replicas_with_rules(current, proposal, min_r, max_r, factor=8.0)
    assert result.replicas == expected
    assert result.reason == reason


def test_scale_limits_with_min_select_policy_upstream():
    """TestCalculateScaleUpLimitWithScalingRules and TestCalculateScaleDownLimitWithBehaviors."""
    both = rules(2, 60, 50, 60, 300, select="Min")
    assert calculate_scale_up_limit_with_scaling_rules(1, [], [], both, NOW) == 2
    assert calculate_scale_down_limit_with_behaviors(5, [], [], both, NOW) == 3


# --- hand-computed multi-tick runs through HpaController (15 s syncs, Pods metric "load") ---

def run_ticks(hpa: HorizontalPodAutoscaler, loads: list[float], start_replicas: int, failed_ticks: tuple = (), **flags) -> list[int]:
    """Reconcile once per load value (per-pod average) and return the replica count after each tick."""
    controller = HpaController(hpa, **flags)
    replicas = start_replicas
    history = []
    for index, load in enumerate(loads):
        now_s = index * 15.0
        pods = [Pod(f"pod-{k}", start_time_s=-3600.0) for k in range(replicas)]
        samples = {pod.name: PodMetricSample(milli_value(load), now_s, 60.0) for pod in pods}
        result = controller.reconcile(now_s, replicas, replicas, pods, MetricValues(pods={"load": samples}),
                                      write_succeeded=index not in failed_ticks)
        if result.rescale and result.write_succeeded:
            replicas = result.desired_replicas
        history.append(replicas)
    return history


def load_hpa(behavior, max_replicas: int = 100) -> HorizontalPodAutoscaler:
    return HorizontalPodAutoscaler.for_pods_metric("load", 1, min_replicas=1, max_replicas=max_replicas, behavior=behavior)


def test_legacy_path_and_empty_behavior_differ():
    # Proposal 3 * 20 = 60. Legacy: max(2 * 3, 4) = 6. behavior {}: max(3 + 4, 3 * 2) = 7.
    assert run_ticks(load_hpa(None), [20], 3) == [6]
    assert run_ticks(load_hpa("default"), [20], 3) == [7]


def test_seeded_window_blocks_scale_down_300s():
    # The first reconcile seeds the window with the current 10, so proposals of 5 wait 300 s.
    # The legacy window keeps records at exactly now - 300; the behavior path drops them.
    legacy = run_ticks(load_hpa(None), [0.5] * 23, 10)
    with_behavior = run_ticks(load_hpa("default"), [0.5] * 23, 10)
    assert legacy[:21] == [10] * 21
    assert legacy[21] == 5  # t = 315
    assert with_behavior[:20] == [10] * 20
    assert with_behavior[20] == 5  # t = 300


def cpu_controller(scale_up_tolerance=None, configurable_tolerance: bool = True) -> HpaController:
    """Controller for an HPA without metrics, which API defaulting gives CPU Utilization 80 %."""
    behavior = None if scale_up_tolerance is None else HorizontalPodAutoscalerBehavior(scale_up=HPAScalingRules(tolerance=scale_up_tolerance))
    hpa = HorizontalPodAutoscaler("web", CrossVersionObjectReference("Deployment", "web"), max_replicas=10, behavior=behavior)
    return HpaController(hpa, configurable_tolerance=configurable_tolerance)


def cpu_reconcile(controller: HpaController, spec: int, usage: str, pending: int = 0):
    """Reconcile 4 Running pods requesting 1 CPU and using ``usage`` each, plus ``pending`` Pending pods."""
    pods = [Pod(f"web-{i}", start_time_s=-3600.0, requests={"cpu": 1000}) for i in range(4)]
    pods += [Pod(f"web-p{i}", phase="Pending", ready=False, start_time_s=None, requests={"cpu": 1000}) for i in range(pending)]
    samples = {pod.name: PodMetricSample(milli_value(usage), 0.0, 60.0) for pod in pods[:4]}
    return controller.reconcile(0.0, spec, spec, pods, MetricValues(resources={"cpu": samples}))


def test_cpu_utilization_vectors():
    # Default metric CPU 80 %: 4 pods at 960m of 1000m give 96 %, ratio 1.2, so ceil(1.2 * 4) = 5.
    assert cpu_reconcile(cpu_controller(), 4, "960m").desired_replicas == 5
    # A fifth, Pending pod counts as 0 on a scale-up: 3840 / 5000 = 76 %, ratio 0.95, so hold at 5.
    held = cpu_reconcile(cpu_controller(), 5, "960m", pending=1)
    assert held.desired_replicas == 5
    assert held.rescale is False


def test_per_direction_tolerance():
    # 864m of 1000m is 86 %, ratio 1.075: inside the default 0.1 band.
    assert cpu_reconcile(cpu_controller(), 4, "864m").desired_replicas == 4
    assert cpu_reconcile(cpu_controller(scale_up_tolerance=0.05), 4, "864m").desired_replicas == 5
    assert cpu_reconcile(cpu_controller(0.05, configurable_tolerance=False), 4, "864m").desired_replicas == 4


def test_percent_scale_down_period_bookkeeping():
    # Percent 10 per 60 s from 80 towards 10: int(80 * 0.9) = 72, the floor stays 72 while the
    # removal is inside the period, then int(72 * 0.9) = 64 at t = 60.
    behavior = HorizontalPodAutoscalerBehavior(scale_down=HPAScalingRules(stabilization_window_seconds=0, policies=(HPAScalingPolicy("Percent", 10, 60),)))
    assert run_ticks(load_hpa(behavior), [0.125] * 5, 80) == [72, 72, 72, 72, 64]


def test_scale_down_window_holds_highest_proposal():
    history = [TimestampedRecommendation(10, NOW - 200), TimestampedRecommendation(8, NOW - 100)]
    assert stabilize_recommendation_with_behaviors(history, 10, 6, 0, 300, NOW).replicas == 10


@pytest.mark.parametrize("select,expected", [
    ("Max", [8, 8, 8, 8, 16]),  # max(4 + 2, 4 * 2), then from 8 after the period: max(10, 16)
    ("Min", [6, 6, 6, 6, 8]),  # min(4 + 2, 4 * 2), then min(6 + 2, 6 * 2)
    ("Disabled", [4, 4, 4, 4, 4]),
])
def test_select_policy_scale_up(select, expected):
    behavior = HorizontalPodAutoscalerBehavior(scale_up=rules(2, 60, 100, 60, 0, select=select))
    assert run_ticks(load_hpa(behavior), [10] * 5, 4) == expected


def test_scale_down_disabled_never_removes_pods():
    behavior = HorizontalPodAutoscalerBehavior(scale_down=HPAScalingRules(stabilization_window_seconds=0, select_policy="Disabled"))
    assert run_ticks(load_hpa(behavior), [0.1] * 4, 10) == [10, 10, 10, 10]


def test_failed_write_stores_no_event():
    behavior = HorizontalPodAutoscalerBehavior(scale_up=rules(1, 60, 0, 0, 0))
    # The failed 4 -> 5 at t = 0 is not counted, so 4 -> 5 is allowed again at t = 15.
    assert run_ticks(load_hpa(behavior), [10] * 3, 4, failed_ticks=(0,)) == [4, 5, 5]
    # A successful 4 -> 5 at t = 0 uses up the 1-pod budget until t = 60.
    assert run_ticks(load_hpa(behavior), [10] * 5, 4) == [5, 5, 5, 5, 6]


def test_scale_up_window_waits_for_seed_to_expire():
    behavior = HorizontalPodAutoscalerBehavior(scale_up=rules(100, 15, 0, 0, 60))
    assert run_ticks(load_hpa(behavior, max_replicas=10), [10] * 5, 4) == [4, 4, 4, 4, 10]



def test_scale_from_zero_ignores_tolerance():
    # Current 0 (minReplicas 0): ceil(1.05) = 2 although 1.05 is inside the 0.1 tolerance.
    assert object_metric_replicas(0, 1000, 1050, [], Tolerances()).replicas == 2
    assert object_metric_replicas(3, 1000, 1050, [Pod("p")], Tolerances()).replicas == 3


def test_huge_external_values_are_capped():
    result = external_metric_replicas(3, 1, [2**62, 2**62], [Pod("p")], Tolerances())
    assert result.usage_milli == 2**63 - 1  # the sum is capped at MaxInt64
    assert result.replicas == 2**31 - 1  # the proposal is capped at MaxInt32
    assert external_per_pod_metric_replicas(3, 1, [2**62, 2**62], Tolerances()).replicas == 2**31 - 1

# --- manifests and quantities ---

HPA_HEADER = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
"""


@pytest.mark.parametrize("text,milli", [
    ("500m", 500), ("1", 1000), ("1.5", 1500), (".5", 500), ("0.05", 50), ("50m", 50), ("1n", 1), ("2k", 2_000_000),
    ("1M", 10**9), ("1G", 10**12), ("1Ki", 1_024_000), ("1Mi", 1_048_576_000), ("1.5Gi", 1_610_612_736_000), ("2e3", 2_000_000), (3, 3000),
])
def test_quantity_milli_value(text, milli):
    assert milli_value(text) == milli


@pytest.mark.parametrize("text", ["1.5.5", "abc", "5 m", "1KB", ""])
def test_quantity_rejects_invalid(text):
    with pytest.raises(QuantityError, match="invalid quantity"):
        milli_value(text)


def test_behavior_absent_keeps_legacy_path():
    hpa = load_hpa_manifest(HPA_HEADER + "  maxReplicas: 5\n")
    assert hpa.behavior is None
    assert hpa.min_replicas == 1
    assert hpa.metrics[0].target.average_utilization == 80


def test_empty_behavior_gets_default_rules():
    hpa = load_hpa_manifest(HPA_HEADER + "  maxReplicas: 5\n  behavior: {}\n")
    assert hpa.behavior.scale_up == DEFAULT_SCALE_UP_RULES
    assert hpa.behavior.scale_up.policies == (HPAScalingPolicy("Pods", 4, 15), HPAScalingPolicy("Percent", 100, 15))
    assert hpa.behavior.scale_down.stabilization_window_seconds is None
    assert hpa.behavior.scale_down.policies == (HPAScalingPolicy("Percent", 100, 15),)


def test_partial_rules_and_tolerance_quantities():
    hpa = load_hpa_manifest(HPA_HEADER + """  maxReplicas: 5
  behavior:
    scaleUp: {tolerance: "50m"}
    scaleDown: {stabilizationWindowSeconds: 60, tolerance: "0.2"}
""")
    assert hpa.behavior.scale_up.tolerance == pytest.approx(0.05)
    assert hpa.behavior.scale_up.policies == DEFAULT_SCALE_UP_RULES.policies
    assert hpa.behavior.scale_down.stabilization_window_seconds == 60
    assert hpa.behavior.scale_down.select_policy == "Max"
    assert HpaController(hpa).tolerances().scale_down == pytest.approx(0.2)


def test_for_pods_metric_matches_manifest():
    built = HorizontalPodAutoscaler.for_pods_metric("load", "500m", 2, 8, "default", hpa_name="web",
                                                    scale_target=CrossVersionObjectReference("Deployment", "web", "apps/v1"))
    loaded = load_hpa_manifest(HPA_HEADER + """  minReplicas: 2
  maxReplicas: 8
  metrics:
  - type: Pods
    pods: {metric: {name: load}, target: {type: AverageValue, averageValue: 500m}}
  behavior: {}
""")
    assert built == loaded


@pytest.mark.parametrize("spec,field,fix", [
    ("  minReplicas: 5\n  maxReplicas: 2\n", "spec.maxReplicas", "Set maxReplicas >= minReplicas"),
    ("  maxReplicas: 5\n  metrics: [{type: Queue}]\n", "spec.metrics[0].type", "Use one of Resource, ContainerResource"),
    ("  maxReplicas: 5\n  behavior: {scaleUp: {policies: [{type: Pods, value: 1, periodSeconds: 0}]}}\n", "spec.behavior.scaleUp.policies[0].periodSeconds", "outside 1..1800"),
    ("  maxReplicas: 5\n  behavior: {scaleUp: {policies: [{type: Pods, value: 1, periodSeconds: 1801}]}}\n", "spec.behavior.scaleUp.policies[0].periodSeconds", "outside 1..1800"),
    ("  maxReplicas: 5\n  behavior: {scaleDown: {stabilizationWindowSeconds: 3601}}\n", "spec.behavior.scaleDown.stabilizationWindowSeconds", "outside 0..3600"),
    ("  maxReplicas: 5\n  behavior: {scaleDown: {stabilizationWindowSeconds: -1}}\n", "spec.behavior.scaleDown.stabilizationWindowSeconds", "outside 0..3600"),
    ("  maxReplicas: 5\n  behavior: {scaleDown: {selectPolicy: Fast}}\n", "spec.behavior.scaleDown.selectPolicy", "Use one of Max, Min, Disabled"),
    ("  maxReplicas: 5\n  behavior: {scaleDown: {policies: []}}\n", "spec.behavior.scaleDown.policies", "Add at least one policy"),
    ("  maxReplicas: 5\n  behavior: {scaleUp: {stabilizationWindowSecond: 10}}\n", "spec.behavior.scaleUp.stabilizationWindowSecond", "unknown field"),
    ("  maxReplicas: 5\n  behavior: {scaleUp: {tolerance: lots}}\n", "spec.behavior.scaleUp.tolerance", "invalid quantity"),
    ("  minReplicas: 0\n  maxReplicas: 5\n  metrics: [{type: Pods, pods: {metric: {name: q}, target: {type: AverageValue, averageValue: 1}}}]\n", "spec.metrics", "Object or External metric"),
    ("  maxReplicas: 5\n  metrics: [{type: Pods, pods: {metric: {name: q}, target: {type: Value, value: 1}}}]\n", "spec.metrics[0].pods.target.type", "Use one of AverageValue"),
    ("  maxReplicas: 5\n  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 0}}}]\n", "spec.metrics[0].resource.target.averageUtilization", "Set a percentage >= 1"),
])
def test_manifest_errors_name_field_and_fix(spec, field, fix):
    with pytest.raises(HpaManifestError) as raised:
        load_hpa_manifest(HPA_HEADER + spec)
    assert any(path == field for path, _ in raised.value.problems), raised.value.problems
    assert fix in str(raised.value)


def test_manifest_documents_and_files(tmp_path):
    other = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
    second = HPA_HEADER.replace("name: web}", "name: api}", 1) + "  maxReplicas: 3\n"
    path = tmp_path / "stack.yaml"
    path.write_text(other + "---" + HPA_HEADER + "  maxReplicas: 5\n")
    assert load_hpa_manifest(path).max_replicas == 5
    assert load_hpa_manifest(str(path)).max_replicas == 5
    both = other + "---" + HPA_HEADER + "  maxReplicas: 5\n---" + second
    with pytest.raises(HpaManifestError, match="Pass name= to pick one"):
        load_hpa_manifest(both)
    assert load_hpa_manifest(both, name="api").max_replicas == 3
    with pytest.raises(HpaManifestError, match="apiVersion: autoscaling/v2"):
        load_hpa_manifest(HPA_HEADER.replace("autoscaling/v2", "autoscaling/v1") + "  maxReplicas: 5\n")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_hpa_manifest(str(tmp_path / "missing.yaml"))


# --- scripts/hpa_replay.py ---

def run_replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "hpa_replay.py"), *args], capture_output=True, text=True, timeout=60)


def test_replay_example_scenario_json():
    completed = run_replay(str(REPO / "docs" / "examples" / "hpa_scenario.json"), "--json")
    assert completed.returncode == 0, completed.stderr
    records = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [r["desired_replicas"] for r in records] == [6, 6, 8, 8, 8, 8, 7, 7, 6, 6]
    assert [r["metric_desired_replicas"] for r in records] == [6, 6, 8, 2, 2, 2, 2, 2, 2, 2]
    assert [r["spec_replicas"] for r in records] == [2, 6, 6, 8, 8, 8, 8, 7, 7, 7]
    assert [r["rescale"] for r in records] == [True, False, True, False, False, False, True, False, True, True]
    assert [r["write_succeeded"] for r in records] == [True] * 8 + [False, True]
    assert records[3]["conditions"]["AbleToScale"] == "ScaleDownStabilized"
    assert records[6]["conditions"]["ScalingLimited"] == "ScaleDownLimit"


def test_replay_example_scenario_table():
    completed = run_replay(str(REPO / "docs" / "examples" / "hpa_scenario.json"))
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].split()[:6] == ["tick", "t_s", "spec", "status", "metrics", "desired"]
    assert len(lines) == 11
    assert lines[9].split()[5:8] == ["6", "write", "failed"]


def test_replay_error_names_tick_and_field(tmp_path):
    scenario = json.loads((REPO / "docs" / "examples" / "hpa_scenario.json").read_text())
    scenario["ticks"][2]["pods"][0]["metrics"]["vllm_num_requests_waiting"] = "lots"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(scenario))
    completed = run_replay(str(path))
    assert completed.returncode == 2
    assert "tick 2.pods[0].metrics.vllm_num_requests_waiting" in completed.stderr
    assert "invalid quantity" in completed.stderr
