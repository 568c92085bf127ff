"""Free GPU slots, quota headroom and the served DRA version, computed from API objects.

Everything here is a pure function of plain JSON objects, so the rules are
tested without a cluster:

* device plugin: a node offers ``status.allocatable`` of each ``nvidia.com/*``
  resource. Pods bound to it (``spec.nodeName``) that are not Succeeded or
  Failed take their container requests, as the scheduler counts them, and
  terminating pods keep theirs until they are gone.
* DRA: every device of every ResourceSlice is one slot; a device is taken while
  some ResourceClaim's ``status.allocation.devices.results`` names it.
* quota: pods of an option that still fit = min over the quota keys it
  charges (``quota_usage_keys``) of floor((hard - used) / per-pod amount).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from envs.cluster.allocation import GpuNaming, slot_kind_of_device, slot_kind_of_node_resource
from envs.cluster.catalog import Catalog
from envs.cluster.spec import quota_usage_keys

PREFERRED_DRA_VERSIONS = ("v1", "v1beta2", "v1beta1")


class UnsupportedDraError(RuntimeError):
    """The cluster serves resource.k8s.io only in an alpha version that the runtime does not support."""


def detect_dra_version(served: Sequence[str], configured: str = "auto") -> str | None:
    """Return the resource.k8s.io version to use, or None for the device-plugin path.

    ``auto`` picks the newest of v1, v1beta2 and v1beta1. A cluster that serves
    only alpha versions (classic DRA, before Kubernetes 1.32) raises
    UnsupportedDraError with the fix.
    """
    if configured == "none":
        return None
    if configured != "auto":
        if configured not in served:
            raise UnsupportedDraError(
                f"runtime.kubernetes.dra_version is {configured!r}, but the cluster serves resource.k8s.io "
                f"versions {list(served) or 'none'}; set it to auto or to a served version")
        return configured
    for version in PREFERRED_DRA_VERSIONS:
        if version in served:
            return version
    alpha = [v for v in served if "alpha" in v]
    if alpha:
        raise UnsupportedDraError(
            f"the cluster serves resource.k8s.io only at {alpha}: classic DRA (Kubernetes before 1.32) is not "
            "supported. Upgrade to Kubernetes 1.32 or later (resource.k8s.io/v1beta1), or set "
            "runtime.kubernetes.dra_version=none to manage GPUs through the device plugin")
    return None


def _quantity(value: Any) -> float:
    """Parse an integer-like Kubernetes quantity ("4", "2k", "500m"); extended resources are whole numbers."""
    text = str(value).strip()
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024.0, "Mi": 1024.0 ** 2, "Gi": 1024.0 ** 3}
    for suffix, factor in sorted(suffixes.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def pod_requests(pod: Mapping[str, Any]) -> dict[str, float]:
    """Return a pod's requests per resource: the max of the container and init-container sums, as the scheduler does."""
    spec = pod.get("spec") or {}
    totals: dict[str, float] = {}
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        amounts = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for key, value in amounts.items():
            totals[key] = totals.get(key, 0.0) + _quantity(value)
    for container in spec.get("initContainers") or []:
        resources = container.get("resources") or {}
        amounts = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for key, value in amounts.items():
            totals[key] = max(totals.get(key, 0.0), _quantity(value))
    return totals


def free_slots_device_plugin(catalog: Catalog, *, nodes: Iterable[Mapping[str, Any]],
                             pods: Iterable[Mapping[str, Any]], naming: GpuNaming) -> dict[str, float]:
    """Return free slots per slot kind on schedulable, Ready nodes."""
    capacity: dict[str, float] = {}
    node_kinds: dict[str, dict[str, str]] = {}
    for node in nodes:
        meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if spec.get("unschedulable") or not ready:
            continue
        kinds: dict[str, str] = {}
        for resource, amount in (status.get("allocatable") or {}).items():
            if not resource.startswith("nvidia.com/"):
                continue
            kind = slot_kind_of_node_resource(catalog, labels=meta.get("labels") or {}, resource=resource,
                                              naming=naming)
            if kind is None:
                continue
            kinds[resource] = kind
            capacity[kind] = capacity.get(kind, 0.0) + _quantity(amount)
        node_kinds[str(meta.get("name"))] = kinds
    used: dict[str, float] = {}
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or phase in ("Succeeded", "Failed") or node not in node_kinds:
            continue
        for resource, amount in pod_requests(pod).items():
            kind = node_kinds[node].get(resource)
            if kind is not None:
                used[kind] = used.get(kind, 0.0) + amount
    return {kind: max(total - used.get(kind, 0.0), 0.0) for kind, total in capacity.items()}


def free_slots_dra(catalog: Catalog, *, slices: Iterable[Mapping[str, Any]], claims: Iterable[Mapping[str, Any]],
                   naming: GpuNaming) -> dict[str, float]:
    """Return free DRA devices per slot kind."""
    device_kind: dict[tuple[str, str, str], str] = {}
    for resource_slice in slices:
        spec = resource_slice.get("spec") or {}
        driver, pool = str(spec.get("driver", "")), str((spec.get("pool") or {}).get("name", ""))
        for device in spec.get("devices") or []:
            body = device.get("basic") or device
            kind = slot_kind_of_device(catalog, attributes=body.get("attributes") or {}, naming=naming)
            if kind is not None:
                device_kind[(driver, pool, str(device.get("name")))] = kind
    free: dict[str, float] = {}
    for kind in device_kind.values():
        free[kind] = free.get(kind, 0.0) + 1.0
    for claim in claims:
        allocation = ((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}
        for result in allocation.get("results") or []:
            key = (str(result.get("driver", "")), str(result.get("pool", "")), str(result.get("device", "")))
            if key in device_kind:
                free[device_kind[key]] -= 1.0
    return {kind: max(count, 0.0) for kind, count in free.items()}


def quota_headroom_pods(catalog: Catalog, quotas: Iterable[Mapping[str, Any]]) -> list[float]:
    """Return, per catalog option, the pods of that option the namespace's quotas still admit (inf if unlimited)."""
    limits: list[tuple[str, float, float]] = []
    for quota in quotas:
        status = quota.get("status") or {}
        hard = status.get("hard") or (quota.get("spec") or {}).get("hard") or {}
        used = status.get("used") or {}
        for key, value in hard.items():
            limits.append((str(key), _quantity(value), _quantity(used.get(key, 0))))
    headroom = []
    for option in catalog.options:
        per_pod = quota_usage_keys(option)
        pods = math.inf
        for key, hard, used in limits:
            amount = per_pod.get(key, 0.0)
            if amount > 0:
                pods = min(pods, math.floor(max(hard - used, 0.0) / amount + 1e-9))
        headroom.append(float(pods))
    return headroom
