"""Typed ``autoscaling/v2`` HorizontalPodAutoscaler objects, their API defaulting, and Quantity parsing.

Field names follow the Kubernetes API (``kubernetes/api: autoscaling/v2/types.go``) in
snake_case. Quantities are stored as milli-values (``Quantity.MilliValue()``), so a target
``averageValue: 500m`` is ``average_value_milli=500`` and ``averageValue: 2`` is 2000.

Defaulting follows ``pkg/apis/autoscaling/v2/defaults.go``: minReplicas 1, a CPU Utilization
80 % metric when ``metrics`` is empty, and, only when ``behavior`` is present, the default
scaling rules. An HPA without ``behavior`` keeps ``behavior=None`` and takes the controller's
legacy normalization path, which differs from ``behavior: {}``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping, Optional, Union

from .validation import validate_hpa

# --- resource.Quantity ---
# The grammar and the rounding follow ``k8s.io/apimachinery/pkg/api/resource/quantity.go``.
# A quantity is a signed decimal number with an optional suffix: binary (Ki, Mi, Gi, Ti, Pi, Ei),
# decimal (n, u, m, k, M, G, T, P, E) or a decimal exponent (e3, E-2).

QuantityLike = Union[str, int, float]

_QUANTITY_PATTERN = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?\d+))?$"
)

_SUFFIX_SCALE: dict[str, Fraction] = {
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}


class QuantityError(ValueError):
    """Invalid Kubernetes quantity string."""


def parse_quantity(value: QuantityLike) -> Fraction:
    """Parse a quantity such as ``"500m"``, ``"1.5Gi"`` or ``"2e3"`` into an exact number.

    A Python int or float is taken as the number itself (``0.5`` equals ``"500m"``).
    Raises QuantityError naming the value when it does not match the Kubernetes grammar.
    """
    if isinstance(value, bool):
        raise QuantityError(f"invalid quantity {value!r}: expected a number or a string such as '500m'")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"invalid quantity {value!r}: the number must be finite")
        return Fraction(str(value))
    if not isinstance(value, str):
        raise QuantityError(f"invalid quantity {value!r}: expected a number or a string such as '500m'")

    match = _QUANTITY_PATTERN.match(value.strip())
    if match is None:
        raise QuantityError(
            f"invalid quantity {value!r}: use a decimal number with an optional suffix "
            "(m, k, M, G, Ki, Mi, Gi, ...) or exponent (e3), for example '250m' or '1.5Gi'"
        )
    number = Fraction(match.group("number"))
    if match.group("suffix"):
        return number * _SUFFIX_SCALE[match.group("suffix")]
    if match.group("exponent"):
        return number * Fraction(10) ** int(match.group("exponent"))
    return number


def milli_value(value: QuantityLike) -> int:
    """Return ``ceil(quantity * 1000)``, the value of ``Quantity.MilliValue()`` upstream."""
    return math.ceil(parse_quantity(value) * 1000)


def format_milli(milli: int) -> str:
    """Format a milli-value the way ``resource.NewMilliQuantity(v, DecimalSI)`` prints it."""
    if milli % 1000 == 0:
        return str(milli // 1000)
    return f"{milli}m"


# --- autoscaling/v2 types ---

# autoscaling.DefaultCPUUtilization, the metric an HPA without metrics gets.
DEFAULT_CPU_UTILIZATION = 80


@dataclass(frozen=True)
class CrossVersionObjectReference:
    """Reference to a scalable target or to the object an Object metric describes."""

    kind: str
    name: str
    api_version: str = ""


@dataclass(frozen=True)
class MetricTarget:
    """Target of one metric: ``type`` is Utilization, Value or AverageValue.

    ``average_utilization`` is a percentage of the pod requests, and the other two are milli-values.
    """

    type: str
    average_utilization: Optional[int] = None
    value_milli: Optional[int] = None
    average_value_milli: Optional[int] = None


@dataclass(frozen=True)
class MetricSpec:
    """One entry of ``spec.metrics``, flattened over the five source types.

    ``name`` is the resource name (``cpu``, ``memory``) for Resource and ContainerResource
    sources and the metric name otherwise. ``selector`` is the metric label selector as
    written in the manifest, which the controller does not evaluate.
    """

    type: str
    name: str
    target: MetricTarget
    container: Optional[str] = None
    described_object: Optional[CrossVersionObjectReference] = None
    selector: Optional[Mapping[str, Any]] = None

    @classmethod
    def resource_metric(
        cls, name: str, *, utilization: Optional[int] = None, average_value: Optional[QuantityLike] = None
    ) -> MetricSpec:
        """Build a Resource metric with a Utilization (percent) or AverageValue target."""
        return cls("Resource", name, _target(utilization=utilization, average_value=average_value))

    @classmethod
    def container_resource_metric(
        cls,
        name: str,
        container: str,
        *,
        utilization: Optional[int] = None,
        average_value: Optional[QuantityLike] = None,
    ) -> MetricSpec:
        """Build a ContainerResource metric on one named container."""
        target = _target(utilization=utilization, average_value=average_value)
        return cls("ContainerResource", name, target, container=container)

    @classmethod
    def pods_metric(cls, name: str, average_value: QuantityLike) -> MetricSpec:
        """Build a Pods metric with an AverageValue target (per-pod average)."""
        return cls("Pods", name, _target(average_value=average_value))

    @classmethod
    def object_metric(
        cls,
        name: str,
        described_object: CrossVersionObjectReference,
        *,
        value: Optional[QuantityLike] = None,
        average_value: Optional[QuantityLike] = None,
    ) -> MetricSpec:
        """Build an Object metric with a Value or AverageValue target."""
        target = _target(value=value, average_value=average_value)
        return cls("Object", name, target, described_object=described_object)

    @classmethod
    def external_metric(
        cls,
        name: str,
        *,
        value: Optional[QuantityLike] = None,
        average_value: Optional[QuantityLike] = None,
        selector: Optional[Mapping[str, Any]] = None,
    ) -> MetricSpec:
        """Build an External metric with a Value or AverageValue target."""
        return cls("External", name, _target(value=value, average_value=average_value), selector=selector)


@dataclass(frozen=True)
class HPAScalingPolicy:
    """Rate limit: at most ``value`` pods (type Pods) or percent (type Percent) per period."""

    type: str
    value: int
    period_seconds: int


@dataclass(frozen=True)
class HPAScalingRules:
    """Scaling rules of one direction. ``None`` fields are filled by API defaulting.

    ``tolerance`` is the per-direction tolerance from the Quantity field (``"0.05"``, ``50m``).
    """

    stabilization_window_seconds: Optional[int] = None
    select_policy: Optional[str] = None
    policies: Optional[tuple[HPAScalingPolicy, ...]] = None
    tolerance: Optional[float] = None


@dataclass(frozen=True)
class HorizontalPodAutoscalerBehavior:
    """``spec.behavior``: scaling rules for each direction."""

    scale_up: Optional[HPAScalingRules] = None
    scale_down: Optional[HPAScalingRules] = None


# pkg/apis/autoscaling/v2/defaults.go. The Go comment on ScaleUp in types.go still reads
# "per 60 seconds", but the applied defaults use 15 s periods.
DEFAULT_SCALE_UP_RULES = HPAScalingRules(
    stabilization_window_seconds=0,
    select_policy="Max",
    policies=(HPAScalingPolicy("Pods", 4, 15), HPAScalingPolicy("Percent", 100, 15)),
)
# The scale-down window stays None, and the controller fills it from
# --horizontal-pod-autoscaler-downscale-stabilization (maybeInitScaleDownStabilizationWindow).
DEFAULT_SCALE_DOWN_RULES = HPAScalingRules(
    stabilization_window_seconds=None,
    select_policy="Max",
    policies=(HPAScalingPolicy("Percent", 100, 15),),
)


def default_scaling_rules(rules: Optional[HPAScalingRules], defaults: HPAScalingRules) -> HPAScalingRules:
    """Copy every set field of ``rules`` over ``defaults`` (``copyHPAScalingRules`` upstream)."""
    if rules is None:
        return defaults
    return HPAScalingRules(
        stabilization_window_seconds=(
            rules.stabilization_window_seconds
            if rules.stabilization_window_seconds is not None
            else defaults.stabilization_window_seconds
        ),
        select_policy=rules.select_policy if rules.select_policy is not None else defaults.select_policy,
        policies=rules.policies if rules.policies is not None else defaults.policies,
        tolerance=rules.tolerance if rules.tolerance is not None else defaults.tolerance,
    )


def default_behavior(behavior: Optional[HorizontalPodAutoscalerBehavior]) -> Optional[HorizontalPodAutoscalerBehavior]:
    """Fill both directions of a present ``behavior``, and leave an absent one absent."""
    if behavior is None:
        return None
    return HorizontalPodAutoscalerBehavior(
        scale_up=default_scaling_rules(behavior.scale_up, DEFAULT_SCALE_UP_RULES),
        scale_down=default_scaling_rules(behavior.scale_down, DEFAULT_SCALE_DOWN_RULES),
    )


@dataclass(frozen=True)
class HorizontalPodAutoscaler:
    """An ``autoscaling/v2`` HorizontalPodAutoscaler spec with its name."""

    name: str
    scale_target_ref: CrossVersionObjectReference
    max_replicas: int
    min_replicas: int = 1
    metrics: tuple[MetricSpec, ...] = ()
    behavior: Optional[HorizontalPodAutoscalerBehavior] = None
    namespace: str = "default"

    @property
    def key(self) -> str:
        """The controller's work-queue key, ``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    def with_api_defaults(self) -> HorizontalPodAutoscaler:
        """Return a copy with the API server's defaults applied (idempotent)."""
        metrics = self.metrics or (MetricSpec.resource_metric("cpu", utilization=DEFAULT_CPU_UTILIZATION),)
        return dataclasses.replace(self, metrics=tuple(metrics), behavior=default_behavior(self.behavior))

    @classmethod
    def for_pods_metric(
        cls,
        name: str,
        target_average: QuantityLike,
        min_replicas: int = 1,
        max_replicas: int = 10,
        behavior: Union[None, str, HorizontalPodAutoscalerBehavior] = None,
        *,
        scale_target: CrossVersionObjectReference = CrossVersionObjectReference("Deployment", "inference", "apps/v1"),
        hpa_name: str = "inference",
        namespace: str = "default",
    ) -> HorizontalPodAutoscaler:
        """Build a validated HPA that keeps the per-pod average of Pods metric ``name`` at ``target_average``.

        ``behavior=None`` takes the legacy path, ``"default"`` means ``behavior: {}`` (all default
        rules), and a HorizontalPodAutoscalerBehavior is defaulted field by field.
        """
        if isinstance(behavior, str):
            if behavior != "default":
                raise ValueError(f"invalid behavior {behavior!r}: use None, 'default' or a HorizontalPodAutoscalerBehavior")
            behavior = HorizontalPodAutoscalerBehavior()
        hpa = cls(
            name=hpa_name,
            namespace=namespace,
            scale_target_ref=scale_target,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            metrics=(MetricSpec.pods_metric(name, target_average),),
            behavior=behavior,
        ).with_api_defaults()
        validate_hpa(hpa)
        return hpa


def _target(
    *,
    utilization: Optional[int] = None,
    value: Optional[QuantityLike] = None,
    average_value: Optional[QuantityLike] = None,
) -> MetricTarget:
    candidates = (("utilization", utilization), ("value", value), ("average_value", average_value))
    given = [label for label, item in candidates if item is not None]
    if len(given) != 1:
        raise ValueError(f"a metric target needs exactly one of utilization, value, average_value (got {given or 'none'})")
    if utilization is not None:
        return MetricTarget("Utilization", average_utilization=int(utilization))
    if value is not None:
        return MetricTarget("Value", value_milli=milli_value(value))
    return MetricTarget("AverageValue", average_value_milli=milli_value(average_value))
