"""The API resources the virtual cluster serves, and the discovery documents that list them.

Discovery follows the legacy (non-aggregated) format: ``/api`` (APIVersions),
``/apis`` (APIGroupList), ``/apis/<group>`` (APIGroup) and
``/api/v1`` or ``/apis/<group>/<version>`` (APIResourceList). kubectl and the
Python client's ``DynamicClient`` fall back to it when a server does not offer
aggregated discovery.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

READ_VERBS = ("get", "list")
WRITE_VERBS = ("create", "update", "patch", "delete")
ALL_VERBS = READ_VERBS + WRITE_VERBS


@dataclass(frozen=True)
class ResourceType:
    """One served resource: ``/apis/<group>/<version>/[namespaces/<ns>/]<plural>``."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: objects are stored per (group, plural), whatever version serves them."""
        return (self.group, self.plural)


def served_resources(dra_version: str) -> list[ResourceType]:
    """Return the resource types served when ``resource.k8s.io`` is at ``dra_version``.

    ``dra_version`` ``none`` serves no ``resource.k8s.io`` group, as on a cluster
    that uses only the device plugin.
    """
    types = [
        ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",)),
        ResourceType("", "v1", "nodes", "Node", namespaced=False, short_names=("no",), subresources=("status",)),
        ResourceType("", "v1", "pods", "Pod", short_names=("po",), subresources=("status",)),
        ResourceType("", "v1", "resourcequotas", "ResourceQuota", short_names=("quota",), subresources=("status",)),
        ResourceType("", "v1", "events", "Event", short_names=("ev",)),
        ResourceType("apps", "v1", "deployments", "Deployment", short_names=("deploy",),
                     subresources=("scale", "status")),
        ResourceType("apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",), subresources=("status",)),
        ResourceType("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
                     short_names=("hpa",), subresources=("status",)),
        ResourceType("coordination.k8s.io", "v1", "leases", "Lease"),
        ResourceType("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject", short_names=("so",)),
    ]
    if dra_version == "v1alpha3":
        # A cluster from before DRA with structured parameters reached beta.
        types.append(ResourceType("resource.k8s.io", "v1alpha3", "deviceclasses", "DeviceClass", namespaced=False))
    elif dra_version != "none":
        types += [
            ResourceType("resource.k8s.io", dra_version, "deviceclasses", "DeviceClass", namespaced=False),
            ResourceType("resource.k8s.io", dra_version, "resourceslices", "ResourceSlice", namespaced=False),
            ResourceType("resource.k8s.io", dra_version, "resourceclaimtemplates", "ResourceClaimTemplate"),
            ResourceType("resource.k8s.io", dra_version, "resourceclaims", "ResourceClaim", subresources=("status",)),
        ]
    return types


def find_type(types: Iterable[ResourceType], *, group: str, version: str, plural: str) -> ResourceType | None:
    for rtype in types:
        if rtype.group == group and rtype.version == version and rtype.plural == plural:
            return rtype
    return None


def api_versions(host: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }


def _group_document(group: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def group_list(types: Iterable[ResourceType]) -> dict[str, Any]:
    groups: dict[str, list[str]] = {}
    for rtype in types:
        if rtype.group and rtype.version not in groups.setdefault(rtype.group, []):
            groups[rtype.group].append(rtype.version)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group_document(g, v) for g, v in groups.items()]}


def group_document(types: Iterable[ResourceType], group: str) -> dict[str, Any] | None:
    versions = []
    for rtype in types:
        if rtype.group == group and rtype.version not in versions:
            versions.append(rtype.version)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_document(group, versions)}


def resource_list(types: Iterable[ResourceType], *, group: str, version: str) -> dict[str, Any] | None:
    """Return the APIResourceList of one group version, subresources included, or None if not served."""
    entries: list[dict[str, Any]] = []
    for rtype in types:
        if rtype.group != group or rtype.version != version:
            continue
        entries.append(
            {
                "name": rtype.plural,
                "singularName": rtype.kind.lower(),
                "namespaced": rtype.namespaced,
                "kind": rtype.kind,
                "verbs": list(rtype.verbs),
                "shortNames": list(rtype.short_names),
            }
        )
        for sub in rtype.subresources:
            entry = {"name": f"{rtype.plural}/{sub}", "singularName": "", "namespaced": rtype.namespaced,
                     "kind": rtype.kind, "verbs": ["get", "patch", "update"]}
            if sub == "scale":
                entry.update({"kind": "Scale", "group": "autoscaling", "version": "v1"})
            entries.append(entry)
    if not entries:
        return None
    group_version = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}


def _age(created: str, now: dt.datetime) -> str:
    try:
        then = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def as_table(rtype: ResourceType, items: list[dict[str, Any]], *, resource_version: str) -> dict[str, Any]:
    """Render a list as a ``meta.k8s.io/v1`` Table, the form ``kubectl get`` requests."""
    now = dt.datetime.now(dt.timezone.utc)
    columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    if rtype.kind == "Deployment":
        columns += [{"name": n, "type": t, "format": "", "description": n, "priority": 0}
                    for n, t in (("Ready", "string"), ("Up-to-date", "integer"), ("Available", "integer"))]
    elif rtype.kind == "Pod":
        columns += [{"name": n, "type": "string", "format": "", "description": n, "priority": 0}
                    for n in ("Ready", "Status", "Node")]
    elif rtype.kind == "Event":
        columns += [{"name": n, "type": "string", "format": "", "description": n, "priority": 0}
                    for n in ("Type", "Reason", "Object", "Message")]
    columns.append({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0})
    rows = []
    for item in items:
        meta = item.get("metadata", {})
        cells: list[Any] = [meta.get("name", "")]
        status = item.get("status") or {}
        if rtype.kind == "Deployment":
            desired = (item.get("spec") or {}).get("replicas", 0)
            cells += [f"{status.get('readyReplicas', 0)}/{desired}", status.get("updatedReplicas", 0),
                      status.get("availableReplicas", 0)]
        elif rtype.kind == "Pod":
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            phase = "Terminating" if meta.get("deletionTimestamp") else status.get("phase", "")
            cells += ["1/1" if ready else "0/1", phase, (item.get("spec") or {}).get("nodeName", "<none>")]
        elif rtype.kind == "Event":
            involved = item.get("involvedObject") or {}
            cells += [item.get("type", ""), item.get("reason", ""),
                      f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}", item.get("message", "")]
        cells.append(_age(meta.get("creationTimestamp", ""), now))
        partial = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
        rows.append({"cells": cells, "object": partial})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
