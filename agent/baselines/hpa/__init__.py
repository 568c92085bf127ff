"""The Kubernetes HorizontalPodAutoscaler (``autoscaling/v2``) controller as a baseline.

A line-by-line port of the replica math and normalization in
``pkg/controller/podautoscaler/{horizontal,replica_calculator}.go`` (Kubernetes 1.3x),
driven by plain dataclasses instead of API clients. Quantities are milli-values
(``"500m"`` is 500, ``2`` is 2000), and times are seconds on the caller's clock.

Build an HPA on a Pods metric without YAML, and call ``reconcile`` every sync period
(15 s by default)::

    from agent.baselines.hpa import (
        HorizontalPodAutoscaler, HpaController, MetricValues, Pod, PodMetricSample,
    )

    hpa = HorizontalPodAutoscaler.for_pods_metric(
        "vllm_num_requests_waiting", target_average=5, min_replicas=1, max_replicas=8,
        behavior="default",  # behavior: {} with default rules, while None takes the legacy path
    )
    controller = HpaController(hpa)  # flags: tolerance=0.1, downscale_stabilization_s=300, ...

    replicas = 2
    for now_s in range(0, 600, 15):
        pods = [Pod(f"pod-{i}", phase="Running", ready=True, start_time_s=-600.0) for i in range(replicas)]
        samples = {p.name: PodMetricSample(value_milli=12_000, timestamp_s=now_s, window_s=30) for p in pods}
        result = controller.reconcile(
            now_s, scale_spec_replicas=replicas, scale_status_replicas=replicas,
            pods=pods, metric_values=MetricValues(pods={"vllm_num_requests_waiting": samples}),
        )
        if result.rescale:
            replicas = result.desired_replicas

Load an HPA from YAML with ``load_hpa_manifest(path_or_text)``. ``scripts/hpa_replay.py``
replays a recorded scenario tick by tick (see ``docs/hpa_replay.md``).
"""

from .api_types import (
    DEFAULT_SCALE_DOWN_RULES,
    DEFAULT_SCALE_UP_RULES,
    CrossVersionObjectReference,
    HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior,
    HPAScalingPolicy,
    HPAScalingRules,
    MetricSpec,
    MetricTarget,
    QuantityError,
    default_behavior,
    milli_value,
    parse_quantity,
)
from .controller import HpaCondition, HpaController, HpaResult
from .manifest import hpa_from_object, load_hpa_manifest, parse_hpa_object
from .metric_proposals import MetricStatus
from .normalization import HpaState, ScaleEvent, TimestampedRecommendation
from .pods import Container, MetricError, MetricValues, Pod, PodMetricSample, group_pods
from .replica_calculator import ReplicaCalculator, Tolerances
from .validation import HpaManifestError, validate_hpa

__all__ = [
    "DEFAULT_SCALE_DOWN_RULES",
    "DEFAULT_SCALE_UP_RULES",
    "Container",
    "CrossVersionObjectReference",
    "HPAScalingPolicy",
    "HPAScalingRules",
    "HorizontalPodAutoscaler",
    "HorizontalPodAutoscalerBehavior",
    "HpaCondition",
    "HpaController",
    "HpaManifestError",
    "HpaResult",
    "HpaState",
    "MetricError",
    "MetricSpec",
    "MetricStatus",
    "MetricTarget",
    "MetricValues",
    "Pod",
    "PodMetricSample",
    "QuantityError",
    "ReplicaCalculator",
    "ScaleEvent",
    "TimestampedRecommendation",
    "Tolerances",
    "default_behavior",
    "group_pods",
    "hpa_from_object",
    "load_hpa_manifest",
    "milli_value",
    "parse_hpa_object",
    "parse_quantity",
    "validate_hpa",
]
