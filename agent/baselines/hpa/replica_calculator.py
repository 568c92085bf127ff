"""Per-metric replica proposals of the HPA, as ``pkg/controller/podautoscaler/replica_calculator.go``.

The arithmetic follows the Kubernetes 1.3x source: resource utilization is an integer
percentage, floor(sum usage * 100 / sum requests), before the ratio to the target is taken.
Plain per-pod averages are integer milli-values. When pods are missing metrics, or are unready
during a scale-up, the ratio is recomputed with conservative fill-in values and the proposal
is held at the current count if the fill-in flips the scaling direction.
All functions are pure. Quantities are milli-values and times are seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from .pods import (
    MetricError,
    Pod,
    PodGroups,
    PodMetricSample,
    calculate_requests,
    count_ready_pods,
    group_pods,
    select_container_samples,
)

MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1


@dataclass(frozen=True)
class Tolerances:
    """Relative dead band around a usage ratio of 1.0, per direction (``Tolerances`` upstream)."""

    scale_down: float = 0.1
    scale_up: float = 0.1

    def is_within(self, usage_ratio: float) -> bool:
        """Return True when the ratio is too close to 1.0 to change the replica count."""
        return (1.0 - self.scale_down) <= usage_ratio <= (1.0 + self.scale_up)


@dataclass(frozen=True)
class ResourceReplicas:
    """Proposal of a Utilization target: replicas, integer utilization percent, raw average milli-value."""

    replicas: int
    utilization: int
    raw_average_milli: int


@dataclass(frozen=True)
class UsageReplicas:
    """Proposal of a value target: replicas and the usage reported in the metric status (milli)."""

    replicas: int
    usage_milli: Optional[int]


def _ceil_int32(value: float) -> int:
    # NOTE: upstream converts with int32(math.Ceil(x)) and guards against overflow only on the
    # Object/External paths. Here every proposal is capped at MaxInt32 instead of wrapping.
    if value > MAX_INT32:
        return MAX_INT32
    return math.ceil(value)


def _div_trunc(numerator: int, denominator: int) -> int:
    """Integer division that truncates toward zero, as Go's ``/`` on int64."""
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient


def _resource_utilization_ratio(
    values: Mapping[str, int], requests: Mapping[str, int], target_utilization: int
) -> tuple[float, int, int]:
    """Return (ratio, integer utilization percent, raw average) over pods with a request."""
    metrics_total = 0
    requests_total = 0
    entries = 0
    for pod_name, value in values.items():
        if pod_name not in requests:
            continue  # a metric of a pod outside the pod list is extraneous
        metrics_total += value
        requests_total += requests[pod_name]
        entries += 1
    if requests_total == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = _div_trunc(metrics_total * 100, requests_total)
    return utilization / target_utilization, utilization, _div_trunc(metrics_total, entries)


def _usage_ratio(values: Mapping[str, int], target_usage: int) -> tuple[float, int]:
    usage = _div_trunc(sum(values.values()), len(values))
    return usage / target_usage, usage


def _flips_direction(old_ratio: float, new_ratio: float) -> bool:
    return (old_ratio < 1.0 and new_ratio > 1.0) or (old_ratio > 1.0 and new_ratio < 1.0)


@dataclass(frozen=True)
class ReplicaCalculator:
    """Replica math for per-pod metrics, configured by the controller's readiness flags."""

    cpu_initialization_period_s: float = 300.0
    initial_readiness_delay_s: float = 30.0

    def resource_replicas(
        self,
        current_replicas: int,
        target_utilization: int,
        resource: str,
        pods: Sequence[Pod],
        samples: Mapping[str, PodMetricSample],
        tolerances: Tolerances,
        now_s: float,
        container: Optional[str] = None,
    ) -> ResourceReplicas:
        """Propose replicas for a Utilization target (``GetResourceReplicas``).

        The reported utilization is the first, unadjusted one, not the slow-path value.
        Raises MetricError when the metric cannot be computed.
        """
        values, groups = self._prepare(pods, samples, resource, now_s, container)
        requests = calculate_requests(pods, resource, container)
        usage_ratio, utilization, raw_average = _resource_utilization_ratio(values, requests, target_utilization)

        scale_up_with_unready = bool(groups.unready) and usage_ratio > 1.0
        if not scale_up_with_unready and not groups.missing:
            if tolerances.is_within(usage_ratio):
                return ResourceReplicas(current_replicas, utilization, raw_average)
            return ResourceReplicas(_ceil_int32(usage_ratio * groups.ready_count), utilization, raw_average)

        if groups.missing:
            if usage_ratio < 1.0:
                # On a scale-down a missing pod counts as using its full request, or the
                # target when the target is above 100 %.
                fallback_percent = max(100, target_utilization)
                for pod_name in groups.missing:
                    values[pod_name] = _div_trunc(requests[pod_name] * fallback_percent, 100)
            elif usage_ratio > 1.0:
                for pod_name in groups.missing:
                    values[pod_name] = 0
        if scale_up_with_unready:
            for pod_name in groups.unready:
                values[pod_name] = 0

        new_ratio, _, _ = _resource_utilization_ratio(values, requests, target_utilization)
        if tolerances.is_within(new_ratio) or _flips_direction(usage_ratio, new_ratio):
            return ResourceReplicas(current_replicas, utilization, raw_average)
        new_replicas = _ceil_int32(new_ratio * len(values))
        if (new_ratio < 1.0 and new_replicas > current_replicas) or (new_ratio > 1.0 and new_replicas < current_replicas):
            return ResourceReplicas(current_replicas, utilization, raw_average)
        return ResourceReplicas(new_replicas, utilization, raw_average)

    def raw_resource_replicas(
        self,
        current_replicas: int,
        target_average_milli: int,
        resource: str,
        pods: Sequence[Pod],
        samples: Mapping[str, PodMetricSample],
        tolerances: Tolerances,
        now_s: float,
        container: Optional[str] = None,
    ) -> UsageReplicas:
        """Propose replicas for a Resource AverageValue target (``GetRawResourceReplicas``)."""
        values, groups = self._prepare(pods, samples, resource, now_s, container)
        return self._plain_replicas(values, groups, current_replicas, target_average_milli, tolerances)

    def pods_metric_replicas(
        self,
        current_replicas: int,
        target_average_milli: int,
        pods: Sequence[Pod],
        samples: Mapping[str, PodMetricSample],
        tolerances: Tolerances,
        now_s: float,
    ) -> UsageReplicas:
        """Propose replicas for a Pods metric (``GetMetricReplicas``), without the CPU readiness heuristic."""
        values, groups = self._prepare(pods, samples, "", now_s, None)
        return self._plain_replicas(values, groups, current_replicas, target_average_milli, tolerances)

    def _prepare(
        self,
        pods: Sequence[Pod],
        samples: Mapping[str, PodMetricSample],
        resource: str,
        now_s: float,
        container: Optional[str],
    ) -> tuple[dict[str, int], PodGroups]:
        if container is not None:
            samples = select_container_samples(samples, container)
        if not samples:
            raise MetricError(f"no metrics returned for {resource or 'the metric'}: the sample map is empty")
        if not pods:
            raise MetricError("no pods returned by selector while calculating replica count")
        groups = group_pods(
            pods, samples, resource, now_s, self.cpu_initialization_period_s, self.initial_readiness_delay_s
        )
        values = {name: sample.value_milli for name, sample in samples.items()}
        for pod_name in groups.ignored | groups.unready:
            values.pop(pod_name, None)
        if not values:
            raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
        return values, groups

    @staticmethod
    def _plain_replicas(
        values: dict[str, int], groups: PodGroups, current_replicas: int, target_usage: int, tolerances: Tolerances
    ) -> UsageReplicas:
        """``calcPlainMetricReplicas``: like the resource path, on the average milli-value."""
        usage_ratio, usage = _usage_ratio(values, target_usage)
        scale_up_with_unready = bool(groups.unready) and usage_ratio > 1.0
        if not scale_up_with_unready and not groups.missing:
            if tolerances.is_within(usage_ratio):
                return UsageReplicas(current_replicas, usage)
            return UsageReplicas(_ceil_int32(usage_ratio * groups.ready_count), usage)

        if groups.missing:
            if usage_ratio < 1.0:
                for pod_name in groups.missing:
                    values[pod_name] = target_usage  # a missing pod uses exactly the target
            elif usage_ratio > 1.0:
                for pod_name in groups.missing:
                    values[pod_name] = 0
        if scale_up_with_unready:
            for pod_name in groups.unready:
                values[pod_name] = 0

        new_ratio, _ = _usage_ratio(values, target_usage)
        if tolerances.is_within(new_ratio) or _flips_direction(usage_ratio, new_ratio):
            return UsageReplicas(current_replicas, usage)
        new_replicas = _ceil_int32(new_ratio * len(values))
        if (new_ratio < 1.0 and new_replicas > current_replicas) or (new_ratio > 1.0 and new_replicas < current_replicas):
            return UsageReplicas(current_replicas, usage)
        return UsageReplicas(new_replicas, usage)


def _usage_ratio_replica_count(current_replicas: int, usage_ratio: float, pods: Sequence[Pod], tolerances: Tolerances) -> int:
    """``getUsageRatioReplicaCount``: scale the Running and Ready pods, or from zero by the ratio alone."""
    if current_replicas == 0:
        # Only reachable with minReplicas 0: no tolerance and no pod count.
        return _ceil_int32(usage_ratio)
    if tolerances.is_within(usage_ratio):
        return current_replicas
    if not pods:
        raise MetricError("unable to calculate ready pods: no pods returned by selector while calculating replica count")
    return _ceil_int32(usage_ratio * count_ready_pods(pods))


def object_metric_replicas(
    current_replicas: int, target_value_milli: int, usage_milli: int, pods: Sequence[Pod], tolerances: Tolerances
) -> UsageReplicas:
    """Propose replicas for an Object metric with a Value target (``GetObjectMetricReplicas``)."""
    replicas = _usage_ratio_replica_count(current_replicas, usage_milli / target_value_milli, pods, tolerances)
    return UsageReplicas(replicas, usage_milli)


def object_per_pod_metric_replicas(
    status_replicas: int, target_average_milli: int, usage_milli: int, tolerances: Tolerances
) -> UsageReplicas:
    """Propose replicas for an Object metric with an AverageValue target (``GetObjectPerPodMetricReplicas``).

    The divisor is the Scale's status.replicas, not spec.replicas.
    """
    return _per_pod_replicas(status_replicas, target_average_milli, usage_milli, tolerances)


def external_metric_replicas(
    current_replicas: int, target_value_milli: int, values: Sequence[int], pods: Sequence[Pod], tolerances: Tolerances
) -> UsageReplicas:
    """Propose replicas for an External Value target on the sum of all matching series."""
    if not values:
        raise MetricError("no metrics returned from external metrics API")
    usage = 0
    for value in values:
        if value > 0 and usage > MAX_INT64 - value:
            usage = MAX_INT64
            break
        usage += value
    replicas = _usage_ratio_replica_count(current_replicas, usage / target_value_milli, pods, tolerances)
    return UsageReplicas(replicas, usage)


def external_per_pod_metric_replicas(
    status_replicas: int, target_average_milli: int, values: Sequence[int], tolerances: Tolerances
) -> UsageReplicas:
    """Propose replicas for an External AverageValue target (``GetExternalPerPodMetricReplicas``)."""
    if not values:
        raise MetricError("no metrics returned from external metrics API")
    usage = min(sum(values), MAX_INT64)
    proposal = _per_pod_replicas(status_replicas, target_average_milli, usage, tolerances)
    if usage >= MAX_INT64:
        return UsageReplicas(proposal.replicas, MAX_INT64)
    return proposal


def _per_pod_replicas(status_replicas: int, target_average_milli: int, usage_milli: int, tolerances: Tolerances) -> UsageReplicas:
    replicas = status_replicas
    if status_replicas == 0:
        # Go divides by zero here and gets +Inf (or NaN for zero usage), and neither is within tolerance.
        usage_ratio = math.nan
    else:
        usage_ratio = usage_milli / (target_average_milli * status_replicas)
    if not tolerances.is_within(usage_ratio):
        replicas = _ceil_int32(usage_milli / target_average_milli)
    # NOTE: with status.replicas 0 upstream reports ceil(+Inf) converted to int64, but None is reported here.
    average = math.ceil(usage_milli / status_replicas) if status_replicas else None
    return UsageReplicas(replicas, average)
