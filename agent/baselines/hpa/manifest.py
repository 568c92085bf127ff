"""Loading of ``autoscaling/v2`` HorizontalPodAutoscaler manifests into typed objects.

``load_hpa_manifest`` reads YAML or JSON (one document or several), applies the API server's
defaulting (``pkg/apis/autoscaling/v2/defaults.go``) and validation, and returns a
``HorizontalPodAutoscaler``. The dataclasses live in ``api_types`` and are re-exported here.
Unknown fields are rejected, so a misspelt ``stabilizationWindowSecond`` fails loudly
instead of being dropped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, NoReturn, Optional, Union

import yaml

from .api_types import (
    DEFAULT_CPU_UTILIZATION,
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
    default_scaling_rules,
    milli_value,
    parse_quantity,
)
from .validation import METRIC_SOURCE_TYPES, SOURCE_FIELDS, HpaManifestError, validate_hpa

__all__ = [
    "DEFAULT_CPU_UTILIZATION",
    "DEFAULT_SCALE_DOWN_RULES",
    "DEFAULT_SCALE_UP_RULES",
    "CrossVersionObjectReference",
    "HPAScalingPolicy",
    "HPAScalingRules",
    "HorizontalPodAutoscaler",
    "HorizontalPodAutoscalerBehavior",
    "HpaManifestError",
    "MetricSpec",
    "MetricTarget",
    "default_behavior",
    "default_scaling_rules",
    "hpa_from_object",
    "load_hpa_manifest",
    "parse_hpa_object",
]


def load_hpa_manifest(
    source: Union[str, os.PathLike, Mapping[str, Any]],
    *,
    name: Optional[str] = None,
    scale_to_zero: bool = True,
) -> HorizontalPodAutoscaler:
    """Load the HorizontalPodAutoscaler from a file path, YAML/JSON text or a decoded mapping.

    A file or text may hold several documents (``---``). The one with ``kind:
    HorizontalPodAutoscaler`` is taken, or the one called ``name`` when there are several.
    ``scale_to_zero`` is the HPAScaleToZero feature gate (see ``validate_hpa``).
    Raises HpaManifestError naming the field and the fix, or FileNotFoundError.
    """
    if isinstance(source, Mapping):
        documents: list[Any] = [source]
    else:
        text = _read_source(source)
        try:
            documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except yaml.YAMLError as error:
            raise HpaManifestError([("<document>", f"invalid YAML: {error}")]) from error

    candidates = [doc for doc in documents if isinstance(doc, Mapping) and doc.get("kind") == "HorizontalPodAutoscaler"]
    if name is not None:
        candidates = [doc for doc in candidates if (doc.get("metadata") or {}).get("name") == name]
    if not candidates:
        wanted = f" named {name!r}" if name is not None else ""
        message = f"no HorizontalPodAutoscaler{wanted} found. Add a document with kind: HorizontalPodAutoscaler."
        raise HpaManifestError([("kind", message)])
    if len(candidates) > 1:
        names = [(doc.get("metadata") or {}).get("name") for doc in candidates]
        message = f"{len(candidates)} HorizontalPodAutoscalers found {names}. Pass name= to pick one."
        raise HpaManifestError([("metadata.name", message)])
    return hpa_from_object(candidates[0], scale_to_zero=scale_to_zero)


def hpa_from_object(obj: Mapping[str, Any], *, scale_to_zero: bool = True) -> HorizontalPodAutoscaler:
    """Parse, default and validate one HorizontalPodAutoscaler object."""
    hpa = parse_hpa_object(obj).with_api_defaults()
    validate_hpa(hpa, scale_to_zero=scale_to_zero)
    return hpa


def parse_hpa_object(obj: Mapping[str, Any]) -> HorizontalPodAutoscaler:
    """Convert a decoded manifest into a HorizontalPodAutoscaler without defaulting or validation.

    Raises HpaManifestError on the first field of the wrong shape or type.
    """
    root = _mapping(obj, "<document>")
    _reject_unknown(root, ("apiVersion", "kind", "metadata", "spec", "status"), "<document>")
    api_version = root.get("apiVersion")
    if api_version != "autoscaling/v2":
        _fail("apiVersion", f"{api_version!r} is not supported. Use apiVersion: autoscaling/v2.")
    metadata = _mapping(root.get("metadata"), "metadata")
    name = _str_field(metadata, "name", "metadata", required=True)
    namespace = _str_field(metadata, "namespace", "metadata") or "default"

    spec = _mapping(root.get("spec"), "spec")
    _reject_unknown(spec, ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior"), "spec")
    target_ref = _mapping(spec.get("scaleTargetRef"), "spec.scaleTargetRef")
    _reject_unknown(target_ref, ("apiVersion", "kind", "name"), "spec.scaleTargetRef")

    metrics_value = spec.get("metrics") or []
    if not isinstance(metrics_value, list):
        _fail("spec.metrics", "must be a list of metric specs.")
    behavior_value = spec.get("behavior")
    min_replicas = _int_field(spec, "minReplicas", "spec")
    return HorizontalPodAutoscaler(
        name=name,
        namespace=namespace,
        scale_target_ref=_parse_reference(target_ref, "spec.scaleTargetRef"),
        min_replicas=1 if min_replicas is None else min_replicas,
        max_replicas=_int_field(spec, "maxReplicas", "spec", required=True),
        metrics=tuple(_parse_metric(item, f"spec.metrics[{index}]") for index, item in enumerate(metrics_value)),
        behavior=None if behavior_value is None else _parse_behavior(behavior_value, "spec.behavior"),
    )


def _parse_reference(obj: Mapping[str, Any], path: str) -> CrossVersionObjectReference:
    return CrossVersionObjectReference(
        kind=_str_field(obj, "kind", path) or "",
        name=_str_field(obj, "name", path) or "",
        api_version=_str_field(obj, "apiVersion", path) or "",
    )


def _parse_metric(value: Any, path: str) -> MetricSpec:
    obj = _mapping(value, path)
    metric_type = _str_field(obj, "type", path, required=True)
    if metric_type not in SOURCE_FIELDS:
        _fail(f"{path}.type", f"unknown metric source type {metric_type!r}. Use one of {', '.join(METRIC_SOURCE_TYPES)}.")
    source_field = SOURCE_FIELDS[metric_type]
    _reject_unknown(obj, ("type", source_field), path)
    source_path = f"{path}.{source_field}"
    source = _mapping(obj.get(source_field), source_path)

    if metric_type in ("Resource", "ContainerResource"):
        allowed = ("name", "target", "container") if metric_type == "ContainerResource" else ("name", "target")
        _reject_unknown(source, allowed, source_path)
        return MetricSpec(
            type=metric_type,
            name=_str_field(source, "name", source_path, required=True),
            target=_parse_target(source.get("target"), f"{source_path}.target"),
            container=_str_field(source, "container", source_path),
        )

    allowed = ("describedObject", "metric", "target") if metric_type == "Object" else ("metric", "target")
    _reject_unknown(source, allowed, source_path)
    identifier = _mapping(source.get("metric"), f"{source_path}.metric")
    _reject_unknown(identifier, ("name", "selector"), f"{source_path}.metric")
    selector = identifier.get("selector")
    described = None
    if metric_type == "Object":
        described_path = f"{source_path}.describedObject"
        described_obj = _mapping(source.get("describedObject"), described_path)
        _reject_unknown(described_obj, ("apiVersion", "kind", "name"), described_path)
        described = _parse_reference(described_obj, described_path)
    return MetricSpec(
        type=metric_type,
        name=_str_field(identifier, "name", f"{source_path}.metric", required=True),
        target=_parse_target(source.get("target"), f"{source_path}.target"),
        described_object=described,
        selector=None if selector is None else _mapping(selector, f"{source_path}.metric.selector"),
    )


def _parse_target(value: Any, path: str) -> MetricTarget:
    obj = _mapping(value, path)
    _reject_unknown(obj, ("type", "averageUtilization", "value", "averageValue"), path)
    return MetricTarget(
        type=_str_field(obj, "type", path, required=True),
        average_utilization=_int_field(obj, "averageUtilization", path),
        value_milli=_quantity_milli_field(obj, "value", path),
        average_value_milli=_quantity_milli_field(obj, "averageValue", path),
    )


def _parse_behavior(value: Any, path: str) -> HorizontalPodAutoscalerBehavior:
    obj = _mapping(value, path)
    _reject_unknown(obj, ("scaleUp", "scaleDown"), path)
    scale_up = obj.get("scaleUp")
    scale_down = obj.get("scaleDown")
    return HorizontalPodAutoscalerBehavior(
        scale_up=None if scale_up is None else _parse_rules(scale_up, f"{path}.scaleUp"),
        scale_down=None if scale_down is None else _parse_rules(scale_down, f"{path}.scaleDown"),
    )


def _parse_rules(value: Any, path: str) -> HPAScalingRules:
    obj = _mapping(value, path)
    _reject_unknown(obj, ("stabilizationWindowSeconds", "selectPolicy", "policies", "tolerance"), path)
    policies_value = obj.get("policies")
    policies = None
    if policies_value is not None:
        if not isinstance(policies_value, list):
            _fail(f"{path}.policies", "must be a list of policies.")
        policies = tuple(_parse_policy(item, f"{path}.policies[{index}]") for index, item in enumerate(policies_value))
    tolerance = None
    if obj.get("tolerance") is not None:
        try:
            # Tolerance.AsApproximateFloat64() upstream.
            tolerance = float(parse_quantity(obj["tolerance"]))
        except QuantityError as error:
            _fail(f"{path}.tolerance", str(error))
    return HPAScalingRules(
        stabilization_window_seconds=_int_field(obj, "stabilizationWindowSeconds", path),
        select_policy=_str_field(obj, "selectPolicy", path),
        policies=policies,
        tolerance=tolerance,
    )


def _parse_policy(value: Any, path: str) -> HPAScalingPolicy:
    obj = _mapping(value, path)
    _reject_unknown(obj, ("type", "value", "periodSeconds"), path)
    return HPAScalingPolicy(
        type=_str_field(obj, "type", path, required=True),
        value=_int_field(obj, "value", path, required=True),
        period_seconds=_int_field(obj, "periodSeconds", path, required=True),
    )


def _fail(path: str, message: str) -> NoReturn:
    raise HpaManifestError([(path, message)])


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        _fail(path, "missing. Add this object to the manifest.")
    if not isinstance(value, Mapping):
        _fail(path, f"expected an object, got {type(value).__name__} {value!r}.")
    return value


def _reject_unknown(obj: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in obj:
        if key not in allowed:
            _fail(f"{path}.{key}", f"unknown field. Allowed fields here: {', '.join(allowed)}.")


def _str_field(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> Optional[str]:
    value = obj.get(key)
    if value is None:
        if required:
            _fail(f"{path}.{key}", "missing. Add this field.")
        return None
    if not isinstance(value, str):
        _fail(f"{path}.{key}", f"expected a string, got {value!r}.")
    return value


def _int_field(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> Optional[int]:
    value = obj.get(key)
    if value is None:
        if required:
            _fail(f"{path}.{key}", "missing. Add this field.")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{path}.{key}", f"expected an integer, got {value!r}.")
    return value


def _quantity_milli_field(obj: Mapping[str, Any], key: str, path: str) -> Optional[int]:
    value = obj.get(key)
    if value is None:
        return None
    try:
        return milli_value(value)
    except QuantityError as error:
        _fail(f"{path}.{key}", str(error))


def _read_source(source: Union[str, os.PathLike]) -> str:
    if isinstance(source, os.PathLike):
        return Path(source).read_text(encoding="utf-8")
    # Long YAML text is never probed as a path: is_file() raises on over-long names.
    if "\n" in source or ": " in source or "{" in source:
        return source
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"HPA manifest file not found: {source}. Pass a file path or the YAML text itself.")
    return path.read_text(encoding="utf-8")
