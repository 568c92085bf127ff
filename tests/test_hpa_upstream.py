"""HPA port against the inputs and expected replica counts of the upstream Kubernetes tests.

Each case is named after the test function in ``pkg/controller/podautoscaler/
replica_calculator_test.go`` or ``horizontal_test.go`` (Kubernetes 1.3x) whose numbers it
reuses. The fixtures rebuild what those tests feed the controller: two containers per pod,
a tolerance of 0.1, a 2 min CPU initialization period and a 10 s initial readiness delay.
The horizontal_test.go cases also use the legacy scale-up factor 8 that its package ``init`` sets.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest

from agent.baselines.hpa import (
    Container,
    CrossVersionObjectReference,
    HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior,
    HPAScalingPolicy,
    HPAScalingRules,
    HpaController,
    MetricError,
    MetricSpec,
    MetricTarget,
    MetricValues,
    Pod,
    PodMetricSample,
    ReplicaCalculator,
    TimestampedRecommendation,
    Tolerances,
    group_pods,
    milli_value,
)
from agent.baselines.hpa.replica_calculator import (
    external_metric_replicas,
    external_per_pod_metric_replicas,
    object_metric_replicas,
    object_per_pod_metric_replicas,
)

NOW = 1_000_000.0
HOT = NOW  # hotCPUCreationTime: the pod started now
COOL = NOW - 180.0  # coolCPUCreationTime: the pod started 3 minutes ago
ZERO = 0.0  # a zero metav1.Time, long before NOW
START = {"h": HOT, "c": COOL, "z": ZERO}
PHASE = {"R": "Running", "P": "Pending", "F": "Failed", "S": "Succeeded"}
CALCULATOR = ReplicaCalculator(cpu_initialization_period_s=120.0, initial_readiness_delay_s=10.0)
TOLERANCES = Tolerances(0.1, 0.1)


def build_pods(count: int, requests: list[str], readiness: str = "", start: str = "", phase: str = "", deleted: str = "", transition_at_start: bool = False) -> list[Pod]:
    """Pods with two containers that each request ``requests[i]`` (both halves of the pod's request)."""
    pods = []
    for i in range(count):
        request = {"cpu": milli_value(requests[i])} if i < len(requests) else {}
        start_s = START[start[i]] if start else ZERO
        pods.append(Pod(
            name=f"test-pod-{i}",
            phase=PHASE[phase[i]] if phase else "Running",
            ready=readiness[i] == "T" if i < len(readiness) else True,
            start_time_s=start_s,
            ready_transition_s=start_s if transition_at_start else ZERO,
            deleted=deleted[i] == "T" if deleted else False,
            containers=(Container("container1", request), Container("container2", request)),
        ))
    return pods


def resource_samples(levels: list[Any], timestamp_s: float = ZERO, names: Optional[list[str]] = None) -> dict[str, PodMetricSample]:
    """Pod samples: a number is the usage of each of the two containers, a list is per container."""
    samples = {}
    for i, level in enumerate(levels):
        per_container = list(level) if isinstance(level, (list, tuple)) else [level, level]
        name = names[i] if names else f"test-pod-{i}"
        container_values = {f"container{j + 1}": value for j, value in enumerate(per_container)}
        samples[name] = PodMetricSample(sum(per_container), timestamp_s, 60.0, container_values)
    return samples


# (upstream test, current, expected, requests, levels, target %, utilization %, raw average, extra)
RESOURCE_CASES = [
    ("TestReplicaCalcScaleUp", 3, 5, ["1.0"] * 3, [300, 500, 700], 30, 50, 1000, {}),
    ("TestReplicaCalcContainerScaleUp", 3, 5, ["1.0"] * 3, [[1000, 300], [1000, 500], [1000, 700]], 30, 50, 500, {"container": "container2"}),
    ("TestReplicaCalcScaleUpUnreadyLessScale", 3, 4, ["1.0"] * 3, [300, 500, 700], 30, 60, 1200, {"readiness": "FTT"}),
    ("TestReplicaCalcScaleUpContainerHotCpuLessScale", 3, 4, ["1.0"] * 3, [[0, 300], [0, 500], [0, 700]], 30, 60, 600, {"start": "hcc", "container": "container2"}),
    ("TestReplicaCalcScaleUpHotCpuLessScale", 3, 4, ["1.0"] * 3, [300, 500, 700], 30, 60, 1200, {"start": "hcc"}),
    ("TestReplicaCalcScaleUpUnreadyNoScale", 3, 3, ["1.0"] * 3, [400, 500, 700], 30, 40, 800, {"readiness": "TFF"}),
    ("TestReplicaCalcScaleHotCpuNoScale", 3, 3, ["1.0"] * 3, [400, 500, 700], 30, 40, 800, {"readiness": "TFF", "start": "chh"}),
    ("TestReplicaCalcScaleUpIgnoresFailedPods", 2, 4, ["1.0"] * 4, [500, 700], 30, 60, 1200, {"readiness": "TTFF", "phase": "RRFF"}),
    ("TestReplicaCalcMissingContainerMetricScaleUpIgnoresFailedPods", 2, 4, ["1.0"] * 4, [[1000, 500], [9000, 700], [1000], [9000]], 30, 60, 600, {"readiness": "TTFF", "phase": "RRFF", "container": "container2"}),
    ("TestReplicaCalcScaleUpContainerIgnoresFailedPods", 2, 4, ["1.0"] * 4, [[1000, 500], [9000, 700]], 30, 60, 600, {"readiness": "TTFF", "phase": "RRFF", "container": "container2"}),
    ("TestReplicaCalcScaleUpIgnoresDeletionPods", 2, 4, ["1.0"] * 4, [500, 700], 30, 60, 1200, {"readiness": "TTFF", "deleted": "FFTT"}),
    ("TestReplicaCalcScaleUpContainerIgnoresDeletionPods", 2, 4, ["1.0"] * 4, [500, 700], 30, 60, 600, {"readiness": "TTFF", "deleted": "FFTT", "container": "container1"}),
    ("TestReplicaCalcScaleDown", 5, 3, ["1.0"] * 5, [100, 300, 500, 250, 250], 50, 28, 560, {}),
    ("TestReplicaCalcContainerScaleDown", 5, 3, ["1.0"] * 5, [[1000, 100], [1000, 300], [1000, 500], [1000, 250], [1000, 250]], 50, 28, 280, {"container": "container2"}),
    ("TestReplicaCalcScaleDownExcludeUnreadyPods", 5, 2, ["1.0"] * 5, [100, 300, 500, 250, 250], 50, 30, 600, {"readiness": "TTTFF"}),
    ("TestReplicaCalcScaleDownContainerExcludeUnreadyPods", 5, 2, ["1.0"] * 5, [[1000, 100], [1000, 300], [1000, 500], [1000, 250], [1000, 250]], 50, 30, 300, {"readiness": "TTTFF", "container": "container2"}),
    ("TestReplicaCalcScaleDownExcludeUnscheduledPods", 5, 1, ["1.0"] * 5, [100], 50, 10, 200, {"readiness": "TFFFF", "phase": "RPPPP"}),
    ("TestReplicaCalcScaleDownContainerExcludeUnscheduledPods", 5, 1, ["1.0"] * 5, [[1000, 100], [1000, 300], [1000, 500], [1000, 250], [1000, 250]], 50, 10, 100, {"readiness": "TFFFF", "phase": "RPPPP", "container": "container2"}),
    ("TestReplicaCalcScaleDownIgnoreHotCpuPods", 5, 2, ["1.0"] * 5, [100, 300, 500, 250, 250], 50, 30, 600, {"start": "ccchh"}),
    ("TestReplicaCalcScaleDownContainerIgnoreHotCpuPods", 5, 2, ["1.0"] * 5, [[1000, 100], [1000, 300], [1000, 500], [1000, 1000], [1000, 1000]], 50, 30, 300, {"start": "ccchh", "container": "container2"}),
    ("TestReplicaCalcScaleDownIgnoresFailedPods", 5, 3, ["1.0"] * 7, [100, 300, 500, 250, 250], 50, 28, 560, {"readiness": "TTTTTFF", "phase": "RRRRRFF"}),
    ("TestReplicaCalcScaleDownContainerIgnoresFailedPods", 5, 3, ["1.0"] * 7, [[1000, 100], [1000, 300], [1000, 500], [1000, 250], [1000, 250]], 50, 28, 280, {"readiness": "TTTTTFF", "phase": "RRRRRFF", "container": "container2"}),
    ("TestReplicaCalcScaleDownIgnoresDeletionPods", 5, 3, ["1.0"] * 7, [100, 300, 500, 250, 250], 50, 28, 560, {"readiness": "TTTTTFF", "deleted": "FFFFFTT"}),
    ("TestReplicaCalcScaleDownIgnoresDeletionPods_StillRunning", 5, 3, ["1.0"] * 7, [[1000, 100], [1000, 300], [1000, 500], [1000, 250], [1000, 250]], 50, 28, 280, {"readiness": "TTTTTFF", "deleted": "FFFFFTT", "container": "container2"}),
    ("TestReplicaCalcTolerance", 3, 3, ["0.9", "1.0", "1.1"], [1010, 1030, 1020], 100, 102, 2040, {}),
    ("TestReplicaCalcSuperfluousMetrics", 4, 24, ["1.0"] * 4, [4000, 9500, 3000, 7000, 3200, 2000], 100, 587, 11750, {}),
    ("TestReplicaCalcMissingMetrics", 4, 3, ["1.0"] * 4, [400, 95], 100, 24, 495, {}),
    ("TestReplicaCalcMissingMetricsNoChangeEq", 2, 2, ["1.0"] * 2, [1000], 100, 100, 2000, {}),
    ("TestReplicaCalcMissingMetricsNoChangeGt", 2, 2, ["1.0"] * 2, [1900], 100, 190, 3800, {}),
    ("TestReplicaCalcMissingMetricsNoChangeLt", 2, 2, ["1.0"] * 2, [600], 100, 60, 1200, {}),
    ("TestReplicaCalcMissingMetricsUnreadyChange", 3, 3, ["1.0"] * 3, [100, 450], 50, 45, 900, {"readiness": "FTT"}),
    ("TestReplicaCalcMissingMetricsHotCpuNoChange", 3, 3, ["1.0"] * 3, [100, 450], 50, 45, 900, {"start": "hcc"}),
    ("TestReplicaCalcMissingMetricsUnreadyScaleUp", 3, 4, ["1.0"] * 3, [100, 2000], 50, 200, 4000, {"readiness": "FTT"}),
    ("TestReplicaCalcMissingMetricsHotCpuScaleUp", 3, 4, ["1.0"] * 3, [100, 2000], 50, 200, 4000, {"readiness": "FTT", "start": "hcc"}),
    ("TestReplicaCalcMissingMetricsUnreadyScaleDown", 4, 3, ["1.0"] * 4, [100, 100, 100], 50, 10, 200, {"readiness": "FTTT"}),
    ("TestReplicaCalcMissingMetricsScaleDownTargetOver100", 4, 2, ["1.0", "1.0", "2.0", "2.0"], [200, 100, 100], 300, 6, 200, {"readiness": "FTTT"}),
    ("TestReplicaCalcDuringRollingUpdateWithMaxSurge", 2, 2, ["1.0"] * 3, [100, 100], 50, 10, 200, {"phase": "RRR"}),
    # TestReplicaCalcComputedToleranceAlgImplementation: 10 pods at 150m over ~300m requests, targets 56 % and 55 %.
    ("TestReplicaCalcComputedToleranceAlgImplementation", 10, 9, ["400m", "200m", "310m", "290m", "302m", "298m", "301m", "299m", "300m", "300m"], [150] * 10, 56, 50, 300, {}),
    ("TestReplicaCalcComputedToleranceAlgImplementation", 10, 10, ["400m", "200m", "310m", "290m", "302m", "298m", "301m", "299m", "300m", "300m"], [150] * 10, 55, 50, 300, {}),
]


@pytest.mark.parametrize("name,current,expected,requests,levels,target,utilization,raw,extra", RESOURCE_CASES, ids=[c[0] for c in RESOURCE_CASES])
def test_resource_replicas_upstream(name, current, expected, requests, levels, target, utilization, raw, extra):
    pod_count = max(current, len(extra.get("phase", "")))
    pods = build_pods(pod_count, requests, extra.get("readiness", ""), extra.get("start", ""), extra.get("phase", ""), extra.get("deleted", ""))
    result = CALCULATOR.resource_replicas(current, target, "cpu", pods, resource_samples(levels), TOLERANCES, NOW, extra.get("container"))
    assert result.replicas == expected
    assert result.utilization == utilization
    assert result.raw_average_milli == raw


@pytest.mark.parametrize("name,requests,levels,pod_names,message", [
    ("TestReplicaCalcDisjointResourcesMetrics", ["1.0"], [100], ["an-older-pod-name"], "no metrics returned matched known pods"),
    ("TestReplicaCalcEmptyMetrics", ["1.0"] * 3, [], None, "no metrics returned"),
    ("TestReplicaCalcEmptyCPURequest", [], [200], None, "missing request for"),
])
def test_resource_replicas_errors_upstream(name, requests, levels, pod_names, message):
    pods = build_pods(max(len(requests), 1), requests)
    with pytest.raises(MetricError, match=message):
        CALCULATOR.resource_replicas(1, 100, "cpu", pods, resource_samples(levels, names=pod_names), TOLERANCES, NOW)


# (upstream test, kind, current, expected, levels, target, reported usage, readiness)
METRIC_CASES = [
    ("TestReplicaCalcScaleUpCM", "pods", 3, 4, [20000, 10000, 30000], 15000, 20000, ""),
    ("TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale", "pods", 3, 6, [50000, 10000, 30000], 15000, 30000, "TTF"),
    ("TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown", "pods", 3, 7, [50000, 15000, 30000], 15000, 31666, "FTF"),
    ("TestReplicaCalcScaleUpCMObject", "object", 3, 4, [20000], 15000, 20000, ""),
    ("TestReplicaCalcScaleUpCMPerPodObject", "object_per_pod", 3, 4, [20000], 5000, 6667, ""),
    ("TestReplicaCalcScaleUpCMObjectIgnoresUnreadyPods", "object", 3, 5, [50000], 10000, 50000, "FTF"),
    ("TestReplicaCalcScaleUpCMExternal", "pods", 1, 2, [8600], 4400, 8600, ""),
    ("TestReplicaCalcScaleUpCMExternalIgnoresUnreadyPods", "external", 3, 2, [8600], 4400, 8600, "FTF"),
    ("TestReplicaCalcScaleUpCMExternalNoLabels", "pods", 1, 2, [8600], 4400, 8600, ""),
    ("TestReplicaCalcScaleUpPerPodCMExternal", "external_per_pod", 3, 4, [8600], 2150, 2867, ""),
    ("TestReplicaCalcScaleDownCM", "pods", 5, 3, [12000] * 5, 20000, 12000, ""),
    ("TestReplicaCalcScaleDownPerPodCMObject", "object_per_pod", 5, 3, [6000], 2000, 1200, ""),
    ("TestReplicaCalcScaleDownCMObject", "object", 5, 3, [12000], 20000, 12000, ""),
    ("TestReplicaCalcScaleDownCMExternal", "external", 5, 3, [8600], 14334, 8600, ""),
    ("TestReplicaCalcScaleDownPerPodCMExternal", "external_per_pod", 5, 3, [8600], 2867, 1720, ""),
    ("TestReplicaCalcToleranceCM", "pods", 3, 3, [20000, 21000, 21000], 20000, 20666, ""),
    ("TestReplicaCalcToleranceCMObject", "object", 3, 3, [20666], 20000, 20666, ""),
    ("TestReplicaCalcTolerancePerPodCMObject", "object_per_pod", 4, 4, [20166], 5000, 5042, ""),
    ("TestReplicaCalcToleranceCMExternal", "external", 3, 3, [8600], 8888, 8600, ""),
    ("TestReplicaCalcTolerancePerPodCMExternal", "external_per_pod", 3, 3, [8600], 2900, 2867, ""),
    ("TestPlainMetricReplicaCalcMissingMetricsNoChangeEq", "pods", 5, 5, [20000, 19000, 21000], 20000, 20000, ""),
    ("TestReplicaCalcDuringRollingUpdateWithMaxSurgeCM", "pods", 2, 2, [10000, 10000], 17000, 10000, "TTT"),
]


@pytest.mark.parametrize("name,kind,current,expected,levels,target,usage,readiness", METRIC_CASES, ids=[c[0] for c in METRIC_CASES])
def test_metric_replicas_upstream(name, kind, current, expected, levels, target, usage, readiness):
    # Start times do not matter here: the CPU readiness heuristic skips custom metrics.
    pods = build_pods(max(current, len(readiness)), [], readiness)
    if kind == "pods":
        samples = {f"test-pod-{i}": PodMetricSample(level, ZERO, 60.0) for i, level in enumerate(levels)}
        result = CALCULATOR.pods_metric_replicas(current, target, pods, samples, TOLERANCES, NOW)
    elif kind == "object":
        result = object_metric_replicas(current, target, levels[0], pods, TOLERANCES)
    elif kind == "object_per_pod":
        result = object_per_pod_metric_replicas(current, target, levels[0], TOLERANCES)
    elif kind == "external":
        result = external_metric_replicas(current, target, levels, pods, TOLERANCES)
    else:
        result = external_per_pod_metric_replicas(current, target, levels, TOLERANCES)
    assert result.replicas == expected
    assert result.usage_milli == usage


# TestGroupPods: (subtest, pod, sample or None, resource, expected group)
GROUP_CASES = [
    ("count in a ready pod - memory", Pod("bentham", phase="Succeeded", ready=None, start_time_s=None), PodMetricSample(1, NOW, 60.0), "memory", "ready"),
    ("unready a pod without ready condition - CPU", Pod("lucretius", phase="Succeeded", ready=None, start_time_s=NOW), PodMetricSample(1), "cpu", "unready"),
    ("count in a ready pod with fresh metrics during initialization period - CPU", Pod("bentham", phase="Succeeded", start_time_s=NOW - 60, ready_transition_s=NOW - 30), PodMetricSample(1, NOW, 30.0), "cpu", "ready"),
    ("unready a ready pod without fresh metrics during initialization period - CPU", Pod("bentham", phase="Succeeded", start_time_s=NOW - 60, ready_transition_s=NOW - 30), PodMetricSample(1, NOW, 60.0), "cpu", "unready"),
    ("unready an unready pod during initialization period - CPU", Pod("lucretius", phase="Succeeded", ready=False, start_time_s=NOW - 600, ready_transition_s=NOW - 594), PodMetricSample(1), "cpu", "unready"),
    ("count in a ready pod without fresh metrics after initialization period - CPU", Pod("bentham", phase="Succeeded", start_time_s=NOW - 180, ready_transition_s=NOW - 180), PodMetricSample(1, NOW - 120, 60.0), "cpu", "ready"),
    ("count in an unready pod that was ready after initialization period - CPU", Pod("lucretius", phase="Succeeded", ready=False, start_time_s=NOW - 600, ready_transition_s=NOW - 540), PodMetricSample(1), "cpu", "ready"),
    ("unready pod that has never been ready after initialization period - CPU", Pod("lucretius", phase="Succeeded", ready=False, start_time_s=NOW - 600, ready_transition_s=NOW - 590), PodMetricSample(1), "cpu", "ready"),
    ("a missing pod", Pod("epicurus", phase="Succeeded", ready=None, start_time_s=NOW - 180), None, "cpu", "missing"),
    ("pending pods are unreadied", Pod("unscheduled", phase="Pending", ready=None, start_time_s=None), None, "cpu", "unready"),
    ("ignore pods with deletion timestamps", Pod("deleted", phase="Pending", ready=None, deleted=True), PodMetricSample(1), "cpu", "ignored"),
    ("ignore pods in a failed state", Pod("failed", phase="Failed", ready=None), PodMetricSample(1), "cpu", "ignored"),
]


@pytest.mark.parametrize("subtest,pod,sample,resource,group", GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_group_pods_upstream(subtest, pod, sample, resource, group):
    samples = {} if sample is None else {pod.name: sample}
    groups = group_pods([pod], samples, resource, NOW, 120.0, 10.0)
    assert groups.ready_count == (1 if group == "ready" else 0)
    assert (pod.name in groups.unready) == (group == "unready")
    assert (pod.name in groups.missing) == (group == "missing")
    assert (pod.name in groups.ignored) == (group == "ignored")


# --- horizontal_test.go: whole reconciles through HpaController ---

DEPLOYMENT = CrossVersionObjectReference("Deployment", "some-deployment", "apps/v1")
INVALID_METRIC = MetricSpec("CheddarCheese", "", MetricTarget(""))


def scaling_rules(pods: int, pods_period: int, percent: int, percent_period: int, window: int) -> HPAScalingRules:
    """Rules with selectPolicy Max, as ``generateScalingRules`` in horizontal_test.go."""
    policies = []
    if pods:
        policies.append(HPAScalingPolicy("Pods", pods, pods_period))
    if percent:
        policies.append(HPAScalingPolicy("Percent", percent, percent_period))
    return HPAScalingRules(stabilization_window_seconds=window, select_policy="Max", policies=tuple(policies))


def reconcile_case(min_replicas: int, max_replicas: int, spec: int, status: int, levels: list[int], cpu_target: int = 0,
                   metrics: tuple = (), requests: Optional[list[str]] = None, readiness: str = "", start: str = "",
                   phase: str = "", deleted: str = "", recommendations: Optional[list[tuple[int, float]]] = None,
                   scale_up: Optional[HPAScalingRules] = None, scale_down: Optional[HPAScalingRules] = None,
                   failing: tuple = (), write_succeeded: bool = True):
    """Run one reconcile with the fixtures of horizontal_test.go, returning the result and the controller.

    ``recommendations`` pre-fills the history as ``(replicas, age_s)``, and None lets the controller
    seed it with the current count. ``failing`` lists metric sources whose fetch fails.
    """
    all_metrics = ((MetricSpec.resource_metric("cpu", utilization=cpu_target),) if cpu_target else ()) + tuple(metrics)
    behavior = HorizontalPodAutoscalerBehavior(scale_up, scale_down) if scale_up or scale_down else None
    hpa = HorizontalPodAutoscaler(
        name="test-hpa", namespace="test-namespace", scale_target_ref=CrossVersionObjectReference("ReplicationController", "test-rc", "v1"),
        min_replicas=min_replicas, max_replicas=max_replicas, metrics=all_metrics, behavior=behavior,
    )
    controller = HpaController(hpa, tolerance=0.1, downscale_stabilization_s=300.0, cpu_initialization_period_s=120.0,
                               initial_readiness_delay_s=10.0, scale_up_limit_factor=8.0)
    if recommendations is not None:
        controller.state.recommendations = [TimestampedRecommendation(r, NOW - age) for r, age in recommendations]

    requests = ["1.0"] * status if requests is None else requests
    pods = []
    for i, request in enumerate(requests):
        half = {"cpu": milli_value(request) // 2}
        start_s = START[start[i]] if start else ZERO
        pods.append(Pod(f"test-pod-{i}", phase=PHASE[phase[i]] if phase else "Running", ready=readiness[i] == "T" if readiness else True,
                        start_time_s=start_s, ready_transition_s=start_s, deleted=deleted[i] == "T" if deleted else False,
                        containers=(Container("container1", half), Container("container2", half))))
    names = [f"test-pod-{i}" for i in range(len(levels))]
    values = MetricValues(
        resources={"cpu": {n: PodMetricSample(2 * (v // 2), NOW, 60.0, {"container1": v // 2, "container2": v // 2}) for n, v in zip(names, levels)}},
        pods={"qps": {n: PodMetricSample(v, NOW, 60.0) for n, v in zip(names, levels)}},
        objects={"qps": levels[0]} if levels else {},
        external={"qps": list(levels)},
    )
    if "External" in failing:
        values.external = {}
    return controller.reconcile(NOW, spec, status, pods, values, write_succeeded=write_succeeded), controller


def qps(kind: str, **target: Any) -> MetricSpec:
    if kind == "Pods":
        return MetricSpec.pods_metric("qps", target["average_value"])
    if kind == "Object":
        return MetricSpec.object_metric("qps", DEPLOYMENT, **target)
    return MetricSpec.external_metric("qps", selector={}, **target)


UNIT = ["1.0"]
CONTROLLER_CASES = [
    ("TestScaleUp", 5, dict(min_replicas=2, max_replicas=6, spec=3, status=3, cpu_target=30, levels=[300, 500, 700])),
    ("TestScaleUpContainer", 5, dict(min_replicas=2, max_replicas=6, spec=3, status=3, levels=[300, 500, 700], metrics=(MetricSpec.container_resource_metric("cpu", "container1", utilization=30),))),
    ("TestScaleUpUnreadyLessScale", 4, dict(min_replicas=2, max_replicas=6, spec=3, status=3, cpu_target=30, levels=[300, 500, 700], readiness="FTT")),
    ("TestScaleUpHotCpuLessScale", 4, dict(min_replicas=2, max_replicas=6, spec=3, status=3, cpu_target=30, levels=[300, 500, 700], start="hcc")),
    ("TestScaleUpUnreadyNoScale", 3, dict(min_replicas=2, max_replicas=6, spec=3, status=3, cpu_target=30, levels=[400, 500, 700], readiness="TFF")),
    ("TestScaleUpHotCpuNoScale", 3, dict(min_replicas=2, max_replicas=6, spec=3, status=3, cpu_target=30, levels=[400, 500, 700], readiness="TFF", start="chh")),
    ("TestScaleUpIgnoresFailedPods", 4, dict(min_replicas=2, max_replicas=6, spec=2, status=2, cpu_target=30, levels=[500, 700], requests=UNIT * 4, readiness="TTFF", phase="RRFF")),
    ("TestScaleUpIgnoresDeletionPods", 4, dict(min_replicas=2, max_replicas=6, spec=2, status=2, cpu_target=30, levels=[500, 700], requests=UNIT * 4, readiness="TTFF", deleted="FFTT")),
    ("TestScaleUpCM", 4, dict(min_replicas=2, max_replicas=6, spec=3, status=3, levels=[20000, 10000, 30000], metrics=(qps("Pods", average_value="15.0"),))),
    ("TestScaleUpCMUnreadyAndHotCpuNoLessScale", 6, dict(min_replicas=2, max_replicas=6, spec=3, status=3, levels=[50000, 10000, 30000], readiness="TTF", start="cch", metrics=(qps("Pods", average_value="15.0"),))),
    ("TestScaleUpCMUnreadyandCpuHot", 6, dict(min_replicas=2, max_replicas=6, spec=3, status=3, levels=[50000, 15000, 30000], readiness="FTF", start="hch", metrics=(qps("Pods", average_value="15.0"),))),
    ("TestScaleUpHotCpuNoScaleWouldScaleDown", 6, dict(min_replicas=2, max_replicas=6, spec=3, status=3, levels=[50000, 15000, 30000], start="hch", metrics=(qps("Pods", average_value="15.0"),))),
    ("TestScaleUpCMObject", 4, dict(min_replicas=2, max_replicas=6, spec=3, status=3, levels=[20000], metrics=(qps("Object", value="15.0"),))),
    ("TestScaleUpFromZeroCMObject", 2, dict(min_replicas=0, max_replicas=6, spec=0, status=0, levels=[20000], metrics=(qps("Object", value="15.0"),))),
    ("TestScaleUpFromZeroIgnoresToleranceCMObject", 1, dict(min_replicas=0, max_replicas=6, spec=0, status=0, levels=[1000], metrics=(qps("Object", value="1.0"),))),
    ("TestScaleUpPerPodCMObject", 4, dict(min_replicas=2, max_replicas=6, spec=3, status=3, levels=[40000], metrics=(qps("Object", average_value="10.0"),))),
    ("TestScaleUpCMExternal", 4, dict(min_replicas=2, max_replicas=6, spec=3, status=3, levels=[8600], metrics=(qps("External", value="6666m"),))),
    ("TestScaleUpPerPodCMExternal", 4, dict(min_replicas=2, max_replicas=6, spec=3, status=3, levels=[8600], metrics=(qps("External", average_value="2222m"),))),
    ("TestScaleDown", 3, dict(min_replicas=2, max_replicas=6, spec=5, status=5, cpu_target=50, levels=[100, 300, 500, 250, 250], recommendations=[])),
    ("TestScaleDownContainerResource", 3, dict(min_replicas=2, max_replicas=6, spec=5, status=5, levels=[100, 300, 500, 250, 250], recommendations=[], metrics=(MetricSpec.container_resource_metric("cpu", "container2", utilization=50),))),
    ("TestScaleDownWithScalingRules", 3, dict(min_replicas=2, max_replicas=6, spec=5, status=5, cpu_target=50, levels=[100, 300, 500, 250, 250], recommendations=[], scale_up=scaling_rules(0, 0, 100, 15, 30))),
    ("TestScaleUpOneMetricInvalid", 4, dict(min_replicas=2, max_replicas=6, spec=3, status=3, cpu_target=30, levels=[300, 400, 500], metrics=(INVALID_METRIC,))),
    ("TestScaleUpFromZeroOneMetricInvalid", 4, dict(min_replicas=0, max_replicas=6, spec=0, status=0, cpu_target=30, levels=[300, 400, 500], requests=UNIT * 3, recommendations=[], metrics=(INVALID_METRIC,))),
    ("TestScaleUpBothMetricsEmpty", 3, dict(min_replicas=2, max_replicas=6, spec=3, status=3, levels=[], metrics=(INVALID_METRIC,))),
    ("TestScaleDownStabilizeInitialSize", 5, dict(min_replicas=2, max_replicas=6, spec=5, status=5, cpu_target=50, levels=[100, 300, 500, 250, 250])),
    ("TestScaleDownCM", 3, dict(min_replicas=2, max_replicas=6, spec=5, status=5, levels=[12000] * 5, recommendations=[], metrics=(qps("Pods", average_value="20.0"),))),
    ("TestScaleDownCMObject", 3, dict(min_replicas=2, max_replicas=6, spec=5, status=5, levels=[12000], recommendations=[], metrics=(qps("Object", value="20.0"),))),
    ("TestScaleDownToZeroCMObject", 0, dict(min_replicas=0, max_replicas=6, spec=5, status=5, levels=[0], recommendations=[], metrics=(qps("Object", value="20.0"),))),
    ("TestScaleDownPerPodCMObject", 3, dict(min_replicas=2, max_replicas=6, spec=5, status=5, levels=[60000], recommendations=[], metrics=(qps("Object", average_value="20.0"),))),
    ("TestScaleDownCMExternal", 3, dict(min_replicas=2, max_replicas=6, spec=5, status=5, levels=[8600], recommendations=[], metrics=(qps("External", value="14400m"),))),
    ("TestScaleDownToZeroCMExternal", 0, dict(min_replicas=0, max_replicas=6, spec=5, status=5, levels=[0], recommendations=[], metrics=(qps("External", value="14400m"),))),
    ("TestScaleDownPerPodCMExternal", 3, dict(min_replicas=2, max_replicas=6, spec=5, status=5, levels=[8600], recommendations=[], metrics=(qps("External", average_value="3000m"),))),
    ("TestScaleDownIncludeUnreadyPods", 2, dict(min_replicas=2, max_replicas=6, spec=5, status=5, cpu_target=50, levels=[100, 300, 500, 250, 250], readiness="TTTFF", recommendations=[])),
    ("TestScaleDownIgnoreHotCpuPods", 2, dict(min_replicas=2, max_replicas=6, spec=5, status=5, cpu_target=50, levels=[100, 300, 500, 250, 250], start="ccchh", recommendations=[])),
    ("TestScaleDownIgnoresFailedPods", 3, dict(min_replicas=2, max_replicas=6, spec=5, status=5, cpu_target=50, levels=[100, 300, 500, 250, 250], requests=UNIT * 7, readiness="TTTTTFF", phase="RRRRRFF", recommendations=[])),
    ("TestScaleDownIgnoresDeletionPods", 3, dict(min_replicas=2, max_replicas=6, spec=5, status=5, cpu_target=50, levels=[100, 300, 500, 250, 250], requests=UNIT * 7, readiness="TTTTTFF", deleted="FFFFFTT", recommendations=[])),
    ("TestTolerance", 3, dict(min_replicas=1, max_replicas=5, spec=3, status=3, cpu_target=100, levels=[1010, 1030, 1020], requests=["0.9", "1.0", "1.1"])),
    ("TestToleranceCM", 3, dict(min_replicas=1, max_replicas=5, spec=3, status=3, levels=[20000, 20001, 21000], requests=["0.9", "1.0", "1.1"], metrics=(qps("Pods", average_value="20.0"),))),
    ("TestToleranceCMObject", 3, dict(min_replicas=1, max_replicas=5, spec=3, status=3, levels=[20050], requests=["0.9", "1.0", "1.1"], metrics=(qps("Object", value="20.0"),))),
    ("TestToleranceCMExternal", 4, dict(min_replicas=2, max_replicas=6, spec=4, status=4, levels=[8600], metrics=(qps("External", value="8666m"),))),
    ("TestTolerancePerPodCMObject", 4, dict(min_replicas=2, max_replicas=6, spec=4, status=4, levels=[8600], metrics=(qps("Object", average_value="2200m"),))),
    ("TestTolerancePerPodCMExternal", 4, dict(min_replicas=2, max_replicas=6, spec=4, status=4, levels=[8600], metrics=(qps("External", average_value="2200m"),))),
    ("TestMinReplicas", 2, dict(min_replicas=2, max_replicas=5, spec=3, status=3, cpu_target=90, levels=[10, 95, 10], requests=["0.9", "1.0", "1.1"], recommendations=[])),
    ("TestZeroMinReplicasDesiredZero", 0, dict(min_replicas=0, max_replicas=5, spec=3, status=3, cpu_target=90, levels=[0, 0, 0], requests=["0.9", "1.0", "1.1"], recommendations=[])),
    ("TestMinReplicasDesiredZero", 2, dict(min_replicas=2, max_replicas=5, spec=3, status=3, cpu_target=90, levels=[0, 0, 0], requests=["0.9", "1.0", "1.1"], recommendations=[])),
    ("TestZeroReplicas", 0, dict(min_replicas=3, max_replicas=5, spec=0, status=0, cpu_target=90, levels=[], requests=[])),
    ("TestTooFewReplicas", 3, dict(min_replicas=3, max_replicas=5, spec=2, status=2, cpu_target=90, levels=[], requests=[])),
    ("TestTooManyReplicas", 5, dict(min_replicas=3, max_replicas=5, spec=10, status=10, cpu_target=90, levels=[], requests=[])),
    ("TestMaxReplicas", 5, dict(min_replicas=2, max_replicas=5, spec=3, status=3, cpu_target=90, levels=[8000, 9500, 1000], requests=["0.9", "1.0", "1.1"])),
    ("TestSuperfluousMetrics", 6, dict(min_replicas=2, max_replicas=6, spec=4, status=4, cpu_target=100, levels=[4000, 9500, 3000, 7000, 3200, 2000], requests=UNIT * 4)),
    ("TestMissingMetrics", 3, dict(min_replicas=2, max_replicas=6, spec=4, status=4, cpu_target=100, levels=[400, 95], requests=UNIT * 4, recommendations=[])),
    ("TestEmptyMetrics", 4, dict(min_replicas=2, max_replicas=6, spec=4, status=4, cpu_target=100, levels=[], requests=UNIT * 4)),
    ("TestEmptyCPURequest", 1, dict(min_replicas=1, max_replicas=5, spec=1, status=1, cpu_target=100, levels=[200], requests=[])),
    ("TestEventCreated", 2, dict(min_replicas=1, max_replicas=5, spec=1, status=1, cpu_target=50, levels=[200], requests=["0.2"])),
    ("TestEventNotCreated", 2, dict(min_replicas=1, max_replicas=5, spec=2, status=2, cpu_target=50, levels=[200, 200], requests=["0.4", "0.4"])),
    ("TestMissingReports", 2, dict(min_replicas=1, max_replicas=5, spec=4, status=4, cpu_target=50, levels=[200], requests=["0.2"], recommendations=[])),
    ("TestUpscaleCap", 24, dict(min_replicas=1, max_replicas=100, spec=3, status=3, cpu_target=10, levels=[100, 200, 300], requests=["0.1"] * 3, scale_up=scaling_rules(0, 0, 700, 60, 0))),
    ("TestUpscaleCapGreaterThanMaxReplicas", 20, dict(min_replicas=1, max_replicas=20, spec=3, status=3, cpu_target=10, levels=[100, 200, 300], requests=["0.1"] * 3, scale_up=scaling_rules(0, 0, 700, 60, 0))),
    ("TestMoreReplicasThanSpecNoScale", 4, dict(min_replicas=1, max_replicas=8, spec=4, status=5, cpu_target=50, levels=[500] * 5, requests=UNIT * 5)),
    ("TestNoBackoffUpscaleCM", 4, dict(min_replicas=1, max_replicas=5, spec=3, status=3, levels=[20000, 10000, 30000], metrics=(qps("Pods", average_value="15.0"),))),
    ("TestNoBackoffUpscaleCMNoBackoffCpu", 5, dict(min_replicas=1, max_replicas=5, spec=3, status=3, cpu_target=10, levels=[20000, 10000, 30000], metrics=(qps("Pods", average_value="15.0"),))),
    ("TestStabilizeDownscale", 4, dict(min_replicas=1, max_replicas=5, spec=4, status=4, cpu_target=100, levels=[50, 50, 50], requests=["0.1"] * 3, recommendations=[(10, 600.0), (4, 60.0)])),
    ("TestComputedToleranceAlgImplementation", 9, dict(min_replicas=0, max_replicas=1000, spec=10, status=10, cpu_target=56, levels=[150] * 10, requests=["400m", "200m", "310m", "290m", "302m", "298m", "301m", "299m", "300m", "300m"], recommendations=[])),
    ("TestComputedToleranceAlgImplementation", 10, dict(min_replicas=0, max_replicas=1000, spec=10, status=10, cpu_target=55, levels=[150] * 10, requests=["400m", "200m", "310m", "290m", "302m", "298m", "301m", "299m", "300m", "300m"], recommendations=[])),
    ("TestScaleUpRCImmediately", 2, dict(min_replicas=2, max_replicas=6, spec=1, status=1, levels=[0, 0, 0, 0], requests=UNIT * 4)),
    ("TestScaleDownRCImmediately", 5, dict(min_replicas=2, max_replicas=5, spec=6, status=6, cpu_target=50, levels=[8000, 9500, 1000], requests=["0.9", "1.0", "1.1"])),
    ("TestScaleUpOneMetricEmpty", 4, dict(min_replicas=2, max_replicas=6, spec=3, status=3, cpu_target=30, levels=[300, 400, 500], failing=("External",), metrics=(qps("External", value="100m"),))),
    ("TestNoScaleDownOneMetricInvalid", 5, dict(min_replicas=2, max_replicas=6, spec=5, status=5, cpu_target=50, levels=[100, 300, 500, 250, 250], recommendations=[], metrics=(INVALID_METRIC,))),
    ("TestNoScaleDownOneMetricEmpty", 5, dict(min_replicas=2, max_replicas=6, spec=5, status=5, cpu_target=50, levels=[100, 300, 500, 250, 250], recommendations=[], failing=("External",), metrics=(qps("External", value="1000m"),))),
]


@pytest.mark.parametrize("name,expected,kwargs", CONTROLLER_CASES, ids=[c[0] for c in CONTROLLER_CASES])
def test_controller_reconcile_upstream(name, expected, kwargs):
    result, _ = reconcile_case(**kwargs)
    assert result.desired_replicas == expected
    assert result.rescale == (expected != kwargs["spec"])


# Reasons that the upstream tests assert in expectedConditions.
CONDITION_CASES = [
    ("TestScaleUpCMUnreadyandCpuHot", "ScalingLimited", "TooManyReplicas"),
    ("TestScaleUpUnreadyNoScale", "AbleToScale", "ReadyForNewScale"),
    ("TestScaleDownStabilizeInitialSize", "AbleToScale", "ScaleDownStabilized"),
    ("TestMinReplicas", "ScalingLimited", "TooFewReplicas"),
    ("TestZeroMinReplicasDesiredZero", "ScalingLimited", "DesiredWithinRange"),
    ("TestMaxReplicas", "ScalingLimited", "TooManyReplicas"),
    ("TestUpscaleCap", "ScalingLimited", "ScaleUpLimit"),
    ("TestUpscaleCapGreaterThanMaxReplicas", "ScalingLimited", "TooManyReplicas"),
    ("TestZeroReplicas", "ScalingActive", "ScalingDisabled"),
    ("TestEmptyMetrics", "ScalingActive", "FailedGetResourceMetric"),
    ("TestScaleUpBothMetricsEmpty", "ScalingActive", "InvalidMetricSourceType"),
    ("TestNoScaleDownOneMetricInvalid", "ScalingActive", "InvalidMetricSourceType"),
    ("TestNoScaleDownOneMetricEmpty", "ScalingActive", "FailedGetExternalMetric"),
    ("TestScaleUp", "AbleToScale", "SucceededRescale"),
]


@pytest.mark.parametrize("name,condition_type,reason", CONDITION_CASES, ids=[c[0] for c in CONDITION_CASES])
def test_controller_conditions_upstream(name, condition_type, reason):
    kwargs = next(k for n, _, k in CONTROLLER_CASES if n == name)
    result, _ = reconcile_case(**kwargs)
    assert result.condition(condition_type).reason == reason


def test_failed_update_scale_upstream():
    """TestConditionFailedUpdateScale: the Scale update fails, so no rescale is recorded."""
    kwargs = dict(min_replicas=1, max_replicas=5, spec=3, status=3, cpu_target=100, levels=[150, 150, 150], requests=["0.1"] * 3,
                  scale_up=scaling_rules(4, 15, 100, 15, 0), write_succeeded=False)
    result, controller = reconcile_case(**kwargs)
    assert result.desired_replicas == 5
    assert result.write_succeeded is False
    assert result.condition("AbleToScale").reason == "FailedUpdateScale"
    assert controller.state.scale_up_events == []


def test_scale_up_reports_cpu_utilization_upstream():
    """TestScaleUpUnreadyLessScale sets CPUCurrent 60: the status shows the unadjusted utilization."""
    result, _ = reconcile_case(min_replicas=2, max_replicas=6, spec=3, status=3, cpu_target=30, levels=[300, 500, 700], readiness="FTT")
    assert result.metric_statuses[0].average_utilization == 60
