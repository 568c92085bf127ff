"""Kubernetes shapes of a catalog allocation option: writing them into objects and reading them back.

The live runtime writes these shapes and the virtual cluster reads them, so
both import this module and cannot drift apart. Two paths exist:

* DRA (``resource.k8s.io``): one ResourceClaimTemplate per option, named after
  the Deployment and the option, referenced from the pod template's
  ``spec.resourceClaims`` and from the first container's ``resources.claims``.
* Device plugin: an extended-resource limit such as ``nvidia.com/gpu: 2`` on
  the container, plus node selectors on the GPU feature discovery labels
  ``nvidia.com/gpu.product`` and ``nvidia.com/gpu.sharing-strategy``, because
  ``nvidia.com/gpu: 1`` alone does not say which GPU model the pod lands on.

Reading goes the other way. On DRA the referenced claim template names its
option in a label, and without the label its request is matched against every
catalog option. On the device plugin the limits and node selectors are
matched, and the option annotation that the writers add to the pod template
breaks a tie between several matching options.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from envs.cluster.catalog import AllocationOption, Catalog

OPTION_ANNOTATION = "gpu-autoscaler.io/allocation-option"
OPTION_LABEL = "gpu-autoscaler.io/allocation-option"
CLAIM_NAME = "gpu"
DRA_DRIVER = "gpu.nvidia.com"
PRODUCT_LABEL = "nvidia.com/gpu.product"
SHARING_LABEL = "nvidia.com/gpu.sharing-strategy"
DRA_VERSIONS = ("v1", "v1beta2", "v1beta1")
# GPU feature discovery values of the sharing-strategy label per catalog sharing kind.
_SHARING_STRATEGY = {"whole": "none", "mig": "none", "timeslice": "time-slicing", "mps": "mps"}


@dataclass(frozen=True)
class GpuNaming:
    """Names of each catalog GPU on a cluster.

    ``node_labels`` contains the ``nvidia.com/gpu.product`` label values that GPU
    feature discovery sets (spaces become dashes), and ``dra_products`` the
    ``productName`` attribute values that the NVIDIA DRA driver publishes.
    """

    node_labels: Mapping[str, str] = field(
        default_factory=lambda: {
            "H100-80GB": "NVIDIA-H100-80GB-HBM3",
            "A100-80GB": "NVIDIA-A100-SXM4-80GB",
            "L40S-48GB": "NVIDIA-L40S",
        }
    )
    dra_products: Mapping[str, str] = field(
        default_factory=lambda: {
            "H100-80GB": "NVIDIA H100 80GB HBM3",
            "A100-80GB": "NVIDIA A100-SXM4-80GB",
            "L40S-48GB": "NVIDIA L40S",
        }
    )

    def node_label(self, gpu: str) -> str:
        return str(self.node_labels.get(gpu, f"NVIDIA-{gpu}"))

    def dra_product(self, gpu: str) -> str:
        return str(self.dra_products.get(gpu, f"NVIDIA {gpu}"))


class AllocationError(ValueError):
    """A pod template whose GPU allocation matches no catalog option."""


def option_slug(option_name: str) -> str:
    """Return ``option_name`` as a DNS-1123 label fragment (``h100-mig-3g.40gb`` to ``h100-mig-3g-40gb``)."""
    return re.sub(r"[^a-z0-9-]+", "-", option_name.lower()).strip("-")


def claim_request(option: AllocationOption, version: str) -> dict[str, Any]:
    """Return the single device request of ``option`` in the layout of ``version``.

    In v1beta1 the class, count and selectors sit directly on the request; v1beta2
    and v1 moved them under ``exactly``.
    """
    exact: dict[str, Any] = {
        "deviceClassName": option.device_class,
        "allocationMode": "ExactCount",
        "count": int(option.devices),
    }
    selector = option.dra_request.get("selector")
    if selector:
        exact["selectors"] = [{"cel": {"expression": str(selector)}}]
    if version == "v1beta1":
        return {"name": CLAIM_NAME, **exact}
    return {"name": CLAIM_NAME, "exactly": exact}


def claim_template_spec(option: AllocationOption, version: str) -> dict[str, Any]:
    """Return the ``spec`` of the ResourceClaimTemplate that gives one pod ``option``."""
    devices: dict[str, Any] = {"requests": [claim_request(option, version)]}
    sharing = option.dra_request.get("sharing")
    if sharing:
        # NOTE: a time-sliced or MPS GpuConfig in a per-pod claim shares the GPU only
        # between the containers of that pod. Sharing across replicas needs a shared
        # ResourceClaim, which this path does not create.
        strategy: dict[str, Any] = {"strategy": str(sharing)}
        if sharing == "TimeSlicing":
            strategy["timeSlicingConfig"] = {"interval": str(option.dra_request.get("interval", "Default"))}
        elif sharing == "MPS":
            percent = option.dra_request.get("defaultActiveThreadPercentage")
            strategy["mpsConfig"] = {} if percent is None else {"defaultActiveThreadPercentage": int(percent)}
        devices["config"] = [
            {
                "requests": [CLAIM_NAME],
                "opaque": {
                    "driver": DRA_DRIVER,
                    "parameters": {
                        "apiVersion": "resource.nvidia.com/v1beta1",
                        "kind": "GpuConfig",
                        "sharing": strategy,
                    },
                },
            }
        ]
    return {"metadata": {"labels": {OPTION_LABEL: option.name}}, "spec": {"devices": devices}}


def claim_template_name(deployment: str, option: AllocationOption, *, version: str) -> str:
    """Return a content-addressed template name, so an edited catalog entry never reuses a name.

    A ResourceClaimTemplate's spec is immutable; the short hash of the spec makes
    a changed selector or count produce a new template instead of a 422.
    """
    spec = json.dumps(claim_template_spec(option, version), sort_keys=True)
    digest = hashlib.sha256(spec.encode()).hexdigest()[:6]
    return f"{deployment}-{option_slug(option.name)}-{digest}"[:253]


def claim_template(*, deployment: str, namespace: str, option: AllocationOption, version: str) -> dict[str, Any]:
    """Return the full ResourceClaimTemplate object for ``option``."""
    return {
        "apiVersion": f"resource.k8s.io/{version}",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": claim_template_name(deployment, option, version=version),
            "namespace": namespace,
            "labels": {OPTION_LABEL: option.name, "app.kubernetes.io/managed-by": "gpu-autoscaler"},
        },
        "spec": claim_template_spec(option, version),
    }


def _pick_container(spec: dict[str, Any], container: str) -> dict[str, Any]:
    containers = spec.get("containers") or []
    if not containers:
        raise AllocationError("the pod template has no containers; add the serving container first")
    if not container:
        return containers[0]
    for entry in containers:
        if entry.get("name") == container:
            return entry
    names = [c.get("name") for c in containers]
    raise AllocationError(f"container {container!r} not found in the pod template; it has {names}")


def _strip_gpu_resources(target: dict[str, Any]) -> None:
    """Remove every ``nvidia.com/*`` request and limit and the GPU claim reference."""
    resources = target.setdefault("resources", {})
    for section in ("limits", "requests"):
        values = resources.get(section) or {}
        for key in [k for k in values if k.startswith("nvidia.com/")]:
            del values[key]
        if section in resources and not values:
            del resources[section]
    claims = [c for c in resources.get("claims") or [] if c.get("name") != CLAIM_NAME]
    if claims:
        resources["claims"] = claims
    else:
        resources.pop("claims", None)


def apply_dra_option(
    template: Mapping[str, Any], *, option: AllocationOption, claim_template_name: str, container: str = ""
) -> dict[str, Any]:
    """Return a copy of the pod template that requests ``option`` through a claim template."""
    result = copy.deepcopy(dict(template))
    result.setdefault("metadata", {}).setdefault("annotations", {})[OPTION_ANNOTATION] = option.name
    spec = result.setdefault("spec", {})
    target = _pick_container(spec, container)
    _strip_gpu_resources(target)
    target["resources"].setdefault("claims", []).append({"name": CLAIM_NAME})
    claims = [c for c in spec.get("resourceClaims") or [] if c.get("name") != CLAIM_NAME]
    claims.append({"name": CLAIM_NAME, "resourceClaimTemplateName": claim_template_name})
    spec["resourceClaims"] = claims
    selector = spec.get("nodeSelector") or {}
    selector.pop(PRODUCT_LABEL, None)
    selector.pop(SHARING_LABEL, None)
    if selector:
        spec["nodeSelector"] = selector
    else:
        spec.pop("nodeSelector", None)
    return result


def apply_device_plugin_option(
    template: Mapping[str, Any], *, option: AllocationOption, naming: GpuNaming, container: str = ""
) -> dict[str, Any]:
    """Return a copy of the pod template that requests ``option`` as an extended resource."""
    result = copy.deepcopy(dict(template))
    result.setdefault("metadata", {}).setdefault("annotations", {})[OPTION_ANNOTATION] = option.name
    spec = result.setdefault("spec", {})
    target = _pick_container(spec, container)
    _strip_gpu_resources(target)
    amount = str(int(option.devices))
    # Extended resources cannot be overcommitted, so requests must equal limits.
    target["resources"].setdefault("limits", {})[option.extended_resource] = amount
    target["resources"].setdefault("requests", {})[option.extended_resource] = amount
    spec["resourceClaims"] = [c for c in spec.get("resourceClaims") or [] if c.get("name") != CLAIM_NAME]
    if not spec["resourceClaims"]:
        del spec["resourceClaims"]
    selector = dict(spec.get("nodeSelector") or {})
    selector[PRODUCT_LABEL] = naming.node_label(option.gpu)
    selector[SHARING_LABEL] = _SHARING_STRATEGY[option.sharing]
    spec["nodeSelector"] = selector
    return result


def _request_fields(request: Mapping[str, Any]) -> tuple[str, int, tuple[str, ...]]:
    """Return (device class, count, CEL expressions) of a request in any served layout."""
    exact = request.get("exactly") or request
    selectors = tuple(str((s.get("cel") or {}).get("expression", "")) for s in exact.get("selectors") or [])
    return str(exact.get("deviceClassName", "")), int(exact.get("count", 1) or 1), selectors


def option_from_claim_template(claim_template_obj: Mapping[str, Any], catalog: Catalog) -> int:
    """Return the catalog index of the option a ResourceClaimTemplate requests."""
    spec = claim_template_obj.get("spec") or {}
    label = ((spec.get("metadata") or {}).get("labels") or {}).get(OPTION_LABEL)
    if label in catalog.option_names:
        return catalog.option_index(str(label))
    requests = ((spec.get("spec") or {}).get("devices") or {}).get("requests") or []
    if len(requests) != 1:
        raise AllocationError(f"claim template has {len(requests)} device requests; expected exactly one")
    found = _request_fields(requests[0])
    for index, option in enumerate(catalog.options):
        if _request_fields(claim_request(option, "v1")) == found:
            return index
    raise AllocationError(f"claim template requests {found}, which matches no catalog option")


def option_from_template(
    template: Mapping[str, Any],
    *,
    catalog: Catalog,
    claim_templates: Mapping[str, Mapping[str, Any]],
    naming: GpuNaming,
) -> int:
    """Return the catalog index of the option a Deployment's pod template requests.

    ``claim_templates`` maps ResourceClaimTemplate names of the namespace to
    objects. Raises AllocationError when the template matches no option, or
    several options and no annotation or node selector picks one.
    """
    spec = template.get("spec") or {}
    annotated = ((template.get("metadata") or {}).get("annotations") or {}).get(OPTION_ANNOTATION)
    for claim in spec.get("resourceClaims") or []:
        if claim.get("name") != CLAIM_NAME:
            continue
        name = claim.get("resourceClaimTemplateName")
        if name not in claim_templates:
            raise AllocationError(f"pod template references ResourceClaimTemplate {name!r}, which does not exist")
        return option_from_claim_template(claim_templates[str(name)], catalog)

    selector = spec.get("nodeSelector") or {}
    matches = []
    for container in spec.get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        for key, value in limits.items():
            if not key.startswith("nvidia.com/"):
                continue
            for index, option in enumerate(catalog.options):
                if option.extended_resource != key or int(float(value)) != option.devices:
                    continue
                product = selector.get(PRODUCT_LABEL)
                if product is not None and product != naming.node_label(option.gpu):
                    continue
                sharing = selector.get(SHARING_LABEL)
                if sharing is not None and sharing != _SHARING_STRATEGY[option.sharing]:
                    continue
                matches.append(index)
    if annotated in catalog.option_names and catalog.option_index(str(annotated)) in matches:
        return catalog.option_index(str(annotated))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise AllocationError("the pod template requests no GPU that matches a catalog option")
    names = [catalog.options[i].name for i in matches]
    raise AllocationError(
        f"the pod template matches several options {names}; set the annotation {OPTION_ANNOTATION} "
        f"or a {PRODUCT_LABEL} node selector"
    )


def extended_resource_of_slot_kind(catalog: Catalog, slot_kind: str) -> str:
    """Return the device-plugin resource name that offers ``slot_kind`` (``nvidia.com/mig-3g.40gb``)."""
    for option in catalog.options:
        if option.slot_kind == slot_kind:
            return option.extended_resource
    raise AllocationError(f"no catalog option uses slot kind {slot_kind!r}")


def slot_kind_of_node_resource(
    catalog: Catalog, *, labels: Mapping[str, str], resource: str, naming: GpuNaming
) -> str | None:
    """Return the slot kind a node's extended resource provides, or None if it is not a catalog kind."""
    product = labels.get(PRODUCT_LABEL)
    sharing = labels.get(SHARING_LABEL, "none")
    for option in catalog.options:
        if option.extended_resource != resource or naming.node_label(option.gpu) != product:
            continue
        if _SHARING_STRATEGY[option.sharing] == sharing:
            return option.slot_kind
    return None


def slot_kind_of_device(catalog: Catalog, *, attributes: Mapping[str, Any], naming: GpuNaming) -> str | None:
    """Return the slot kind of a DRA device from its ``type``, ``productName`` and ``profile`` attributes."""

    def text(name: str) -> str:
        value = attributes.get(name) or {}
        return str(value.get("string", value.get("version", ""))) if isinstance(value, Mapping) else str(value)

    device_type, product, profile = text("type"), text("productName"), text("profile")
    for option in catalog.options:
        if naming.dra_product(option.gpu) != product:
            continue
        if device_type == "gpu" and option.sharing == "whole":
            return option.slot_kind
        if device_type == "mig" and option.sharing == "mig" and option.mig_profile == profile:
            return option.slot_kind
    return None
