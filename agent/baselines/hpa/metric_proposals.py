"""One replica proposal per metric spec, as ``computeReplicasForMetric`` in ``horizontal.go``.

Each source type picks its replica base as upstream: Resource, ContainerResource, Pods and
Object/External Value targets use the Scale's spec.replicas, while Object and External
AverageValue targets divide by its status.replicas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .api_types import MetricSpec, format_milli
from .pods import MetricError, MetricValues, Pod
from .replica_calculator import (
    ReplicaCalculator,
    Tolerances,
    external_metric_replicas,
    external_per_pod_metric_replicas,
    object_metric_replicas,
    object_per_pod_metric_replicas,
)

# ScalingActive=False reasons per source type when its metric cannot be computed.
FAILURE_REASONS = {
    "Resource": "FailedGetResourceMetric",
    "ContainerResource": "FailedGetContainerResourceMetric",
    "Pods": "FailedGetPodsMetric",
    "Object": "FailedGetObjectMetric",
    "External": "FailedGetExternalMetric",
}


@dataclass(frozen=True)
class MetricStatus:
    """Current value of one metric, as in ``status.currentMetrics``, plus this metric's proposal.

    ``proposed_replicas`` and ``error`` are not part of the upstream status. They show which
    metric drove the decision and why a metric was invalid.
    """

    type: str
    name: str
    average_utilization: Optional[int] = None
    average_value_milli: Optional[int] = None
    value_milli: Optional[int] = None
    proposed_replicas: Optional[int] = None
    error: Optional[str] = None


@dataclass(frozen=True)
class MetricProposal:
    """A valid metric's replica proposal, its status and the name used in rescale reasons."""

    replicas: int
    status: MetricStatus
    description: str


class MetricFailure(Exception):
    """A metric spec that produced no proposal, with the ScalingActive condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def compute_metric_proposal(
    spec: MetricSpec,
    calculator: ReplicaCalculator,
    spec_replicas: int,
    status_replicas: int,
    pods: Sequence[Pod],
    metric_values: MetricValues,
    tolerances: Tolerances,
    now_s: float,
) -> MetricProposal:
    """Compute one metric's proposal. Raises MetricFailure when the metric is invalid this cycle."""
    reason = FAILURE_REASONS.get(spec.type, "InvalidMetricSourceType")
    try:
        if spec.type in ("Resource", "ContainerResource"):
            return _resource_proposal(spec, calculator, spec_replicas, pods, metric_values, tolerances, now_s)
        if spec.type == "Pods":
            return _pods_proposal(spec, calculator, spec_replicas, pods, metric_values, tolerances, now_s)
        if spec.type == "Object":
            return _object_proposal(spec, spec_replicas, status_replicas, pods, metric_values, tolerances)
        if spec.type == "External":
            return _external_proposal(spec, spec_replicas, status_replicas, pods, metric_values, tolerances)
    except MetricError as error:
        raise MetricFailure(reason, f"failed to get {spec.type} metric {spec.name}: {error}") from error
    raise MetricFailure(reason, f"unknown metric source type {spec.type!r}")


def _resource_proposal(
    spec: MetricSpec,
    calculator: ReplicaCalculator,
    spec_replicas: int,
    pods: Sequence[Pod],
    metric_values: MetricValues,
    tolerances: Tolerances,
    now_s: float,
) -> MetricProposal:
    if spec.name not in metric_values.resources:
        raise MetricError(f"unable to get metrics for resource {spec.name}: no samples were given")
    samples = metric_values.resources[spec.name]
    container = spec.container if spec.type == "ContainerResource" else None
    target = spec.target
    # Upstream checks AverageValue before AverageUtilization (computeStatusForResourceMetricGeneric).
    if target.average_value_milli is not None:
        raw = calculator.raw_resource_replicas(
            spec_replicas, target.average_value_milli, spec.name, pods, samples, tolerances, now_s, container
        )
        status = MetricStatus(spec.type, spec.name, average_value_milli=raw.usage_milli, proposed_replicas=raw.replicas)
        return MetricProposal(raw.replicas, status, f"{spec.name} resource")
    if target.average_utilization is None:
        raise MetricError("neither an average utilization target nor an average value target was set")
    result = calculator.resource_replicas(
        spec_replicas, target.average_utilization, spec.name, pods, samples, tolerances, now_s, container
    )
    status = MetricStatus(
        spec.type,
        spec.name,
        average_utilization=result.utilization,
        average_value_milli=result.raw_average_milli,
        proposed_replicas=result.replicas,
    )
    kind = "container resource" if container is not None else "resource"
    return MetricProposal(result.replicas, status, f"{spec.name} {kind} utilization (percentage of request)")


def _pods_proposal(
    spec: MetricSpec,
    calculator: ReplicaCalculator,
    spec_replicas: int,
    pods: Sequence[Pod],
    metric_values: MetricValues,
    tolerances: Tolerances,
    now_s: float,
) -> MetricProposal:
    if spec.name not in metric_values.pods:
        raise MetricError(f"unable to get metric {spec.name}: no samples were given")
    if spec.target.average_value_milli is None:
        raise MetricError("a Pods metric needs an averageValue target")
    result = calculator.pods_metric_replicas(
        spec_replicas, spec.target.average_value_milli, pods, metric_values.pods[spec.name], tolerances, now_s
    )
    status = MetricStatus("Pods", spec.name, average_value_milli=result.usage_milli, proposed_replicas=result.replicas)
    return MetricProposal(result.replicas, status, f"pods metric {spec.name}")


def _object_proposal(
    spec: MetricSpec,
    spec_replicas: int,
    status_replicas: int,
    pods: Sequence[Pod],
    metric_values: MetricValues,
    tolerances: Tolerances,
) -> MetricProposal:
    if spec.name not in metric_values.objects:
        raise MetricError(f"unable to get metric {spec.name}: no value was given")
    usage = metric_values.objects[spec.name]
    target = spec.target
    kind = spec.described_object.kind if spec.described_object is not None else "Object"
    if target.type == "Value" and target.value_milli is not None:
        result = object_metric_replicas(spec_replicas, target.value_milli, usage, pods, tolerances)
        status = MetricStatus("Object", spec.name, value_milli=result.usage_milli, proposed_replicas=result.replicas)
        return MetricProposal(result.replicas, status, f"{kind} metric {spec.name}")
    if target.type == "AverageValue" and target.average_value_milli is not None:
        result = object_per_pod_metric_replicas(status_replicas, target.average_value_milli, usage, tolerances)
        status = MetricStatus("Object", spec.name, average_value_milli=result.usage_milli, proposed_replicas=result.replicas)
        description = f"{kind} metric {spec.name} (average {format_milli(target.average_value_milli)})"
        return MetricProposal(result.replicas, status, description)
    raise MetricError("invalid object metric source: neither a value target nor an average value target was set")


def _external_proposal(
    spec: MetricSpec,
    spec_replicas: int,
    status_replicas: int,
    pods: Sequence[Pod],
    metric_values: MetricValues,
    tolerances: Tolerances,
) -> MetricProposal:
    if spec.name not in metric_values.external:
        raise MetricError(f"unable to get external metric {spec.name}: no values were given")
    values = metric_values.external[spec.name]
    target = spec.target
    # Upstream checks AverageValue before Value (computeStatusForExternalMetric).
    if target.average_value_milli is not None:
        result = external_per_pod_metric_replicas(status_replicas, target.average_value_milli, values, tolerances)
        status = MetricStatus("External", spec.name, average_value_milli=result.usage_milli, proposed_replicas=result.replicas)
        return MetricProposal(result.replicas, status, f"external metric {spec.name}")
    if target.value_milli is not None:
        result = external_metric_replicas(spec_replicas, target.value_milli, values, pods, tolerances)
        status = MetricStatus("External", spec.name, value_milli=result.usage_milli, proposed_replicas=result.replicas)
        return MetricProposal(result.replicas, status, f"external metric {spec.name}")
    raise MetricError("invalid external metric source: neither a value target nor an average value target was set")
