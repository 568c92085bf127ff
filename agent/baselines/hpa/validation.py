"""API-server validation of an ``autoscaling/v2`` HorizontalPodAutoscaler.

The checks follow ``pkg/apis/autoscaling/validation/validation.go`` (Kubernetes 1.3x) and run,
as in the API server, after defaulting. Each problem is reported with its field path
(``spec.behavior.scaleUp.policies[0].periodSeconds``) and the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .manifest import HorizontalPodAutoscaler, HPAScalingRules, MetricSpec

METRIC_SOURCE_TYPES = ("Resource", "ContainerResource", "Pods", "Object", "External")
TARGET_TYPES = ("Utilization", "Value", "AverageValue")
SELECT_POLICIES = ("Max", "Min", "Disabled")
POLICY_TYPES = ("Pods", "Percent")

# MaxStabilizationWindowSeconds and MaxPeriodSeconds in the autoscaling API types.
MAX_STABILIZATION_WINDOW_SECONDS = 3600
MAX_PERIOD_SECONDS = 1800

# Field of a metric spec that contains the source of each type, for field paths in messages.
SOURCE_FIELDS = {
    "Resource": "resource",
    "ContainerResource": "containerResource",
    "Pods": "pods",
    "Object": "object",
    "External": "external",
}

# Target types the controller reads for each source (horizontal.go computeStatusFor*).
ALLOWED_TARGET_TYPES = {
    "Resource": ("Utilization", "AverageValue"),
    "ContainerResource": ("Utilization", "AverageValue"),
    "Pods": ("AverageValue",),
    "Object": ("Value", "AverageValue"),
    "External": ("Value", "AverageValue"),
}


class HpaManifestError(ValueError):
    """Invalid HorizontalPodAutoscaler manifest.

    ``problems`` lists ``(field_path, message)`` pairs, and the exception text joins them
    one per line.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(f"{path}: {message}" for path, message in self.problems))


def validate_hpa(hpa: HorizontalPodAutoscaler, *, scale_to_zero: bool = True) -> None:
    """Raise HpaManifestError listing every invalid field of a defaulted HPA.

    ``scale_to_zero`` is the HPAScaleToZero feature gate (alpha and off by default in
    Kubernetes 1.36). With it, minReplicas may be 0 when an Object or External metric exists.
    """
    problems: list[tuple[str, str]] = []

    if not hpa.scale_target_ref.kind:
        problems.append(("spec.scaleTargetRef.kind", "missing. Set the kind of the target, e.g. Deployment."))
    if not hpa.scale_target_ref.name:
        problems.append(("spec.scaleTargetRef.name", "missing. Set the name of the target workload."))

    lower_bound = 0 if scale_to_zero else 1
    if hpa.min_replicas < lower_bound:
        problems.append(("spec.minReplicas", f"{hpa.min_replicas} is below {lower_bound}. Set minReplicas >= {lower_bound}."))
    if hpa.max_replicas < 1:
        problems.append(("spec.maxReplicas", f"{hpa.max_replicas} is below 1. Set maxReplicas >= 1."))
    if hpa.max_replicas < hpa.min_replicas:
        problems.append((
            "spec.maxReplicas",
            f"{hpa.max_replicas} is less than minReplicas {hpa.min_replicas}. Set maxReplicas >= minReplicas.",
        ))

    for index, metric in enumerate(hpa.metrics):
        problems.extend(_validate_metric(metric, f"spec.metrics[{index}]"))
    if hpa.min_replicas == 0 and not any(m.type in ("Object", "External") for m in hpa.metrics):
        problems.append((
            "spec.metrics",
            "minReplicas 0 needs at least one Object or External metric to scale up from zero. "
            "Add such a metric or set minReplicas >= 1.",
        ))

    if hpa.behavior is not None:
        problems.extend(_validate_rules(hpa.behavior.scale_up, "spec.behavior.scaleUp"))
        problems.extend(_validate_rules(hpa.behavior.scale_down, "spec.behavior.scaleDown"))

    if problems:
        raise HpaManifestError(problems)


def _validate_metric(metric: MetricSpec, path: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if metric.type not in METRIC_SOURCE_TYPES:
        return [(f"{path}.type", f"unknown metric source type {metric.type!r}. Use one of {', '.join(METRIC_SOURCE_TYPES)}.")]
    source_path = f"{path}.{SOURCE_FIELDS[metric.type]}"
    if not metric.name:
        name_path = f"{source_path}.name" if metric.type in ("Resource", "ContainerResource") else f"{source_path}.metric.name"
        problems.append((name_path, "missing. Set the resource name (cpu, memory) or the metric name."))
    if metric.type == "ContainerResource" and not metric.container:
        problems.append((f"{source_path}.container", "missing. Name the container whose usage is scaled on."))
    if metric.type == "Object" and metric.described_object is None:
        problems.append((f"{source_path}.describedObject", "missing. Set kind and name of the object the metric describes."))

    target = metric.target
    target_path = f"{source_path}.target"
    allowed = ALLOWED_TARGET_TYPES[metric.type]
    if target.type not in TARGET_TYPES:
        problems.append((f"{target_path}.type", f"unknown target type {target.type!r}. Use one of {', '.join(allowed)}."))
        return problems
    if target.type not in allowed:
        # NOTE: the API server accepts any of the three target types here. The controller then
        # reads only the fields it uses for the source, so a mismatch is rejected early.
        message = f"{target.type} is not used by {metric.type} metrics. Use one of {', '.join(allowed)}."
        problems.append((f"{target_path}.type", message))

    set_fields = [
        name
        for name, value in (
            ("averageUtilization", target.average_utilization),
            ("value", target.value_milli),
            ("averageValue", target.average_value_milli),
        )
        if value is not None
    ]
    required_field = {"Utilization": "averageUtilization", "Value": "value", "AverageValue": "averageValue"}[target.type]
    if required_field not in set_fields:
        problems.append((f"{target_path}.{required_field}", f"missing. Target type {target.type} needs {required_field}."))
    for extra in set_fields:
        if extra != required_field:
            problems.append((f"{target_path}.{extra}", f"not allowed with target type {target.type}. Remove it."))

    if target.average_utilization is not None and target.average_utilization < 1:
        problems.append((f"{target_path}.averageUtilization", f"{target.average_utilization} is below 1. Set a percentage >= 1."))
    if target.value_milli is not None and target.value_milli <= 0:
        problems.append((f"{target_path}.value", "must be positive. Set a quantity above zero."))
    if target.average_value_milli is not None and target.average_value_milli <= 0:
        problems.append((f"{target_path}.averageValue", "must be positive. Set a quantity above zero."))
    return problems


def _validate_rules(rules: HPAScalingRules | None, path: str) -> list[tuple[str, str]]:
    if rules is None:
        return []
    problems: list[tuple[str, str]] = []
    window = rules.stabilization_window_seconds
    if window is not None and not 0 <= window <= MAX_STABILIZATION_WINDOW_SECONDS:
        problems.append((
            f"{path}.stabilizationWindowSeconds",
            f"{window} is outside 0..{MAX_STABILIZATION_WINDOW_SECONDS}. Set a window within that range.",
        ))
    if rules.select_policy is not None and rules.select_policy not in SELECT_POLICIES:
        message = f"unknown value {rules.select_policy!r}. Use one of {', '.join(SELECT_POLICIES)}."
        problems.append((f"{path}.selectPolicy", message))
    if rules.tolerance is not None and rules.tolerance < 0:
        problems.append((f"{path}.tolerance", f"{rules.tolerance} is negative. Set a quantity >= 0, e.g. '0.05' or '50m'."))

    policies = rules.policies if rules.policies is not None else ()
    if not policies:
        problems.append((f"{path}.policies", "empty. Add at least one policy, or leave the field out to get the defaults."))
    for index, policy in enumerate(policies):
        policy_path = f"{path}.policies[{index}]"
        if policy.type not in POLICY_TYPES:
            problems.append((f"{policy_path}.type", f"unknown policy type {policy.type!r}. Use Pods or Percent."))
        if policy.value <= 0:
            problems.append((f"{policy_path}.value", f"{policy.value} is not positive. Set a value > 0."))
        if not 1 <= policy.period_seconds <= MAX_PERIOD_SECONDS:
            problems.append((
                f"{policy_path}.periodSeconds",
                f"{policy.period_seconds} is outside 1..{MAX_PERIOD_SECONDS}. Set a period within that range.",
            ))
    return problems
