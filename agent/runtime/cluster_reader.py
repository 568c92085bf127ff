"""Reads the managed Deployments and the cluster around them once per tick.

The number of API calls per tick depends on the number of namespaces, not of
Deployments: one list each of Deployments, ResourceQuotas, HPAs, KEDA
ScaledObjects (and ResourceClaimTemplates on DRA) per namespace, plus one
cluster-wide list of pods and either nodes (device plugin) or ResourceSlices
and ResourceClaims (DRA).

A Deployment object without the fields a safe write needs (``metadata.name``,
``metadata.namespace``, ``metadata.resourceVersion``, an integer
``spec.replicas`` of 0 or more, an object ``spec.template``) is not managed
that tick, with a warning at most every 5 min. The API server fills in these
fields on every Deployment it returns, so such an object comes only from a
broken server or proxy. The Deployment's ``status`` is never read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from agent.runtime.capacity import free_slots_device_plugin, free_slots_dra, quota_headroom_pods
from agent.runtime.kube_client import KubeClient, NotFoundError
from agent.runtime.settings import DiscoverySettings
from agent.runtime.telemetry import RepeatLimiter
from envs.cluster.allocation import AllocationError, GpuNaming, option_from_template
from envs.cluster.spec import ClusterSpec

log = logging.getLogger(__name__)
Key = tuple[str, str]


@dataclass
class DeploymentState:
    """API reading of one managed Deployment this tick."""

    namespace: str
    name: str
    resource_version: str
    spec_replicas: int
    template: dict[str, Any]
    ready: int = 0
    pending: int = 0
    starting: int = 0
    terminating: int = 0
    option_index: int | None = None
    option_error: str = ""

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)


@dataclass
class ClusterState:
    """One tick's reading of the cluster; ``autoscaled`` maps Deployments another autoscaler targets to its name."""

    deployments: dict[Key, DeploymentState] = field(default_factory=dict)
    free_slots: dict[str, float] = field(default_factory=dict)
    quota_headroom: dict[str, list[float]] = field(default_factory=dict)
    autoscaled: dict[Key, str] = field(default_factory=dict)
    read_at: float = 0.0


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Return whether ``labels`` satisfy a LabelSelector (matchLabels and matchExpressions)."""
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def invalid_deployment_reason(deployment: Any) -> str:
    """Return why a Deployment object cannot be managed safely, or "" when it can."""
    if not isinstance(deployment, dict):
        return f"the object is a {type(deployment).__name__}, not a Deployment"
    meta = deployment.get("metadata")
    spec = deployment.get("spec")
    if not isinstance(meta, dict) or not meta.get("name") or not meta.get("namespace"):
        return "metadata.name or metadata.namespace is missing"
    if not meta.get("resourceVersion"):
        return "metadata.resourceVersion is missing, so no write could be conditional on it"
    if not isinstance(spec, dict):
        return "spec is missing"
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        return f"spec.replicas is {replicas!r}, not an integer of 0 or more"
    if not isinstance(spec.get("template") or {}, dict):
        return "spec.template is not an object"
    return ""


def count_pods(state: DeploymentState, selector: Mapping[str, Any], *, pods: list[dict[str, Any]]) -> None:
    """Count the Deployment's pods by state: terminating, Pending, Running and Ready, Running but not Ready."""
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("namespace") != state.namespace or not selector_matches(selector, meta.get("labels") or {}):
            continue
        status = pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            state.terminating += 1
        elif status.get("phase") == "Pending":
            state.pending += 1
        elif status.get("phase") == "Running":
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            if ready:
                state.ready += 1
            else:
                state.starting += 1


class ClusterReader:
    """Builds a ClusterState from the API; raises KubeError subclasses when the API fails."""

    def __init__(self, kube: KubeClient, *, cluster: ClusterSpec, discovery: DiscoverySettings, naming: GpuNaming,
                 dra_version: str | None, clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.cluster = cluster
        self.discovery = discovery
        self.naming = naming
        self.dra_version = dra_version
        self.clock = clock
        self.configured: dict[Key, int] = {(d.namespace, d.name): i for i, d in enumerate(cluster.deployments)}
        self._reported: set[tuple[Key, str]] = set()
        self._invalid = RepeatLimiter()

    def _report_once(self, key: Key, message: str) -> None:
        if (key, message) not in self._reported:
            self._reported.add((key, message))
            log.warning("Deployment %s/%s: %s", key[0], key[1], message)

    @property
    def namespaces(self) -> list[str]:
        """Namespaces listed per tick: the configured ones, or those of the workload config."""
        if self.discovery.namespaces:
            return sorted(set(self.discovery.namespaces))
        return sorted({namespace for namespace, _ in self.configured})

    def discover(self) -> list[dict[str, Any]]:
        """Return the Deployment objects to manage: discovered, opted in, and present in the workload config."""
        found: list[dict[str, Any]] = []
        if self.discovery.names:
            for entry in self.discovery.names:
                namespace, name = entry.split("/", 1)
                try:
                    found.append(self.kube.get_deployment(namespace, name))
                except NotFoundError:
                    self._report_once((namespace, name), "listed in runtime.discovery.names but not found")
        else:
            for namespace in self.namespaces:
                found.extend(self.kube.list_deployments(namespace, self.discovery.label_selector))
        managed = []
        invalid: set[Key] = set()
        for deployment in found:
            meta = (deployment.get("metadata") if isinstance(deployment, dict) else None) or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            annotation = self.discovery.annotation
            if annotation and (meta.get("annotations") or {}).get(annotation) != "true":
                continue
            if key not in self.configured:
                self._report_once(key, "matches the discovery rule but has no entry in the workload config; skipped")
                continue
            problem = invalid_deployment_reason(deployment)
            if problem:
                invalid.add(key)
                if self._invalid.allow((key, problem)):
                    log.warning("Deployment %s/%s: %s; it is not managed this tick", key[0], key[1], problem)
                continue
            managed.append(deployment)
        seen = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in managed} | invalid
        for key in self.configured:
            if key not in seen:
                self._report_once(key, "is in the workload config but was not discovered (missing, or not labelled "
                                       f"{self.discovery.label_selector!r}); it is not managed")
        return managed

    def read(self) -> ClusterState:
        state = ClusterState(read_at=self.clock())
        deployments = self.discover()
        pods = self.kube.list_pods(field_selector="status.phase!=Succeeded,status.phase!=Failed")
        namespaces = sorted({d["metadata"]["namespace"] for d in deployments} | set(self.namespaces))
        claim_templates: dict[str, dict[str, dict[str, Any]]] = {}
        for namespace in namespaces:
            state.quota_headroom[namespace] = quota_headroom_pods(self.cluster.catalog,
                                                                  self.kube.list_resource_quotas(namespace))
            for hpa in self.kube.list_hpas(namespace):
                target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
                if target.get("kind") == "Deployment":
                    state.autoscaled[(namespace, str(target.get("name")))] = \
                        f"HorizontalPodAutoscaler {(hpa.get('metadata') or {}).get('name', '(no name)')}"
            for scaled in self.kube.list_scaled_objects(namespace):
                target = (scaled.get("spec") or {}).get("scaleTargetRef") or {}
                if target.get("kind", "Deployment") == "Deployment":
                    state.autoscaled[(namespace, str(target.get("name")))] = \
                        f"KEDA ScaledObject {(scaled.get('metadata') or {}).get('name', '(no name)')}"
            if self.dra_version:
                items = self.kube.list_dra(self.dra_version, "resourceclaimtemplates", namespace=namespace)
                claim_templates[namespace] = {(t.get("metadata") or {}).get("name"): t for t in items}
        if self.dra_version:
            state.free_slots = free_slots_dra(
                self.cluster.catalog, slices=self.kube.list_dra(self.dra_version, "resourceslices"),
                claims=self.kube.list_dra(self.dra_version, "resourceclaims"), naming=self.naming)
        else:
            state.free_slots = free_slots_device_plugin(self.cluster.catalog, nodes=self.kube.list_nodes(),
                                                        pods=pods, naming=self.naming)
        for deployment in deployments:
            meta, spec = deployment["metadata"], deployment["spec"]
            entry = DeploymentState(namespace=meta["namespace"], name=meta["name"],
                                    resource_version=str(meta["resourceVersion"]),
                                    spec_replicas=spec["replicas"], template=spec.get("template") or {})
            count_pods(entry, spec.get("selector") or {}, pods=pods)
            try:
                entry.option_index = option_from_template(entry.template, catalog=self.cluster.catalog,
                                                          claim_templates=claim_templates.get(entry.namespace, {}),
                                                          naming=self.naming)
            except AllocationError as error:
                entry.option_error = str(error)
            state.deployments[entry.key] = entry
        return state
