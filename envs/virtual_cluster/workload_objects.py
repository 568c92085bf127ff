"""Writes the simulated workload into the object store: pods, ReplicaSets, claims, status, quota, events.

The driver calls these methods with the store lock held, once per tick. Pod
specs come from the pod template the pod was created from and never change
afterwards, as on a real cluster. Only status, ``spec.nodeName`` and the
deletionTimestamp change.
"""

from __future__ import annotations

import copy
import logging
import random
import uuid
from typing import Any, Sequence

from envs.cluster import allocation
from envs.cluster.spec import ClusterSpec
from envs.virtual_cluster.errors import ApiError
from envs.virtual_cluster.pods import PENDING, READY, TERMINATING, PodRecord, ReconcileResult, new_pod_name
from envs.virtual_cluster.resources import ResourceType
from envs.virtual_cluster.settings import VirtualClusterSettings
from envs.virtual_cluster.store import ObjectStore, now_rfc3339

log = logging.getLogger(__name__)
MAX_EVENTS = 500


def _condition(kind: str, status: bool, *, reason: str = "", message: str = "") -> dict[str, Any]:
    entry = {"type": kind, "status": "True" if status else "False", "lastTransitionTime": now_rfc3339()}
    if reason:
        entry["reason"] = reason
    if message:
        entry["message"] = message
    return entry


class WorkloadObjects:
    """Keeps the store's pods, ReplicaSets, ResourceClaims and status fields in line with the pod records."""

    def __init__(self, *, store: ObjectStore, types: dict[str, ResourceType], cluster: ClusterSpec,
                 settings: VirtualClusterSettings) -> None:
        self.store = store
        self.types = types
        self.cluster = cluster
        self.settings = settings
        self.dra_version = settings.dra_version if settings.dra_version in allocation.DRA_VERSIONS else ""
        self.replicasets: dict[tuple[str, str], str] = {}
        self.pod_uids: dict[str, str] = {}
        self._events = 0

    def event(self, namespace: str, name: str, *, kind: str, reason: str, message: str,
              involved_kind: str = "Deployment") -> None:
        """Record a core/v1 Event from the simulated controllers; the oldest go beyond MAX_EVENTS."""
        rtype = self.types["events"]
        now = now_rfc3339()
        self.store.create(rtype, namespace=namespace, obj={
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {"kind": involved_kind, "namespace": namespace, "name": name},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": "virtual-cluster"},
        })
        self._events += 1
        if self._events > MAX_EVENTS:
            events = sorted(self.store.list(rtype), key=lambda e: int(e["metadata"]["resourceVersion"]))
            for old in events[: len(events) - MAX_EVENTS]:
                self.store.delete(rtype, namespace=old["metadata"]["namespace"], name=old["metadata"]["name"])
            self._events = MAX_EVENTS

    def _ensure_replicaset(self, row: int, template_hash: str, *,
                           template: dict[str, Any] | None) -> tuple[str, str]:
        spec = self.cluster.deployments[row]
        name = f"{spec.name}-{template_hash}"
        key = (spec.namespace, name)
        if key not in self.replicasets:
            deployment = self.store.get(self.types["deployments"], namespace=spec.namespace, name=spec.name)
            labels = {"app": spec.name, "pod-template-hash": template_hash}
            body_template = copy.deepcopy(template or deployment["spec"]["template"])
            body_template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
            created = self.store.create(self.types["replicasets"], namespace=spec.namespace, obj={
                "metadata": {"name": name, "labels": labels, "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name,
                    "uid": deployment["metadata"]["uid"], "controller": True}]},
                "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": body_template},
                "status": {"replicas": 0},
            })
            self.replicasets[key] = created["metadata"]["uid"]
        return name, self.replicasets[key]

    def _pod_status(self, pod: PodRecord, previous: dict[str, Any] | None) -> dict[str, Any]:
        if pod.state == PENDING:
            option = self.cluster.catalog.options[pod.option]
            resource = option.device_class if self.dra_version else option.extended_resource
            message = f"0/{sum(p.nodes for p in self.cluster.node_pools)} nodes are available: insufficient {resource}."
            return {"phase": "Pending", "qosClass": "Burstable",
                    "conditions": [_condition("PodScheduled", False, reason="Unschedulable", message=message)]}
        start = (previous or {}).get("startTime") or now_rfc3339()
        ready = pod.state == READY or (pod.state == TERMINATING and pod.ready_tick >= 0)
        status = {
            "phase": "Running", "startTime": start, "qosClass": "Burstable", "podIP": "10.244.0.1",
            "conditions": [_condition("PodScheduled", True), _condition("Initialized", True),
                           _condition("ContainersReady", ready), _condition("Ready", ready)],
            "containerStatuses": [{"name": "vllm", "ready": ready, "started": True, "restartCount": 0,
                                   "image": "vllm/vllm-openai:v0.10.1", "state": {"running": {"startedAt": start}}}],
        }
        if pod.claim_name:
            status["resourceClaimStatuses"] = [{"name": allocation.CLAIM_NAME, "resourceClaimName": pod.claim_name}]
        return status

    def _pod_object(self, row: int, pod: PodRecord, *, template: dict[str, Any] | None,
                    previous: dict[str, Any] | None) -> dict[str, Any]:
        spec = self.cluster.deployments[row]
        if previous is None:
            rs_name, rs_uid = self._ensure_replicaset(row, pod.template_hash, template=template)
            body_template = copy.deepcopy(template or {})
            labels = dict((body_template.get("metadata") or {}).get("labels") or {"app": spec.name})
            labels["pod-template-hash"] = pod.template_hash
            obj = {
                "metadata": {"name": pod.name, "namespace": spec.namespace, "labels": labels,
                             "annotations": dict((body_template.get("metadata") or {}).get("annotations") or {}),
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                                                  "uid": rs_uid, "controller": True, "blockOwnerDeletion": True}]},
                "spec": body_template.get("spec") or {"containers": []},
            }
        else:
            obj = previous
        if pod.node:
            obj["spec"]["nodeName"] = pod.node
        if pod.state == TERMINATING and "deletionTimestamp" not in obj["metadata"]:
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["deletionGracePeriodSeconds"] = 30
        obj["status"] = self._pod_status(pod, (previous or {}).get("status"))
        return obj

    def _sync_claim(self, row: int, pod: PodRecord) -> None:
        """Create the ResourceClaim of a pod that just got devices (DRA clusters only)."""
        if not self.dra_version or not pod.devices or pod.claim_name:
            return
        spec = self.cluster.deployments[row]
        option = self.cluster.catalog.options[pod.option]
        pod.claim_name = new_pod_name(f"{pod.name}-{allocation.CLAIM_NAME}", random.Random(pod.name))
        results = [{"request": allocation.CLAIM_NAME, "driver": allocation.DRA_DRIVER, "pool": d.node,
                    "device": d.name} for d in pod.devices]
        self.store.create(self.types["resourceclaims"], namespace=spec.namespace, obj={
            "metadata": {"name": pod.claim_name, "annotations": {"resource.kubernetes.io/pod-claim-name":
                                                                 allocation.CLAIM_NAME},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod.name,
                                              "uid": self.pod_uids.get(pod.name, ""), "controller": True}]},
            "spec": allocation.claim_template_spec(option, self.dra_version)["spec"],
            "status": {"allocation": {"devices": {"results": results}},
                       "reservedFor": [{"resource": "pods", "name": pod.name,
                                        "uid": self.pod_uids.get(pod.name, "")}]},
        })

    def sync_pods(self, row: int, pods: Sequence[PodRecord], *, result: ReconcileResult,
                  template: dict[str, Any] | None) -> None:
        spec = self.cluster.deployments[row]
        rtype = self.types["pods"]
        for pod in result.deleted:
            self._delete_quietly(rtype, pod.name, namespace=spec.namespace)
            self.pod_uids.pop(pod.name, None)
            if pod.claim_name:
                self._delete_quietly(self.types["resourceclaims"], pod.claim_name, namespace=spec.namespace)
        for pod in result.created:
            created = self.store.create(rtype, namespace=spec.namespace, obj=self._pod_object(row, pod, template=template, previous=None))
            self.pod_uids[pod.name] = created["metadata"]["uid"]
            self._sync_claim(row, pod)
        for pod in result.changed:
            if pod in result.created:
                continue
            self._sync_claim(row, pod)
            previous = self.store.get(rtype, namespace=spec.namespace, name=pod.name)
            self.store.replace(rtype, namespace=spec.namespace, name=pod.name, obj=self._pod_object(row, pod, template=None, previous=previous))

    def _delete_quietly(self, rtype: ResourceType, name: str, *, namespace: str) -> None:
        try:
            self.store.delete(rtype, namespace=namespace, name=name)
        except ApiError as error:
            # A client deleted it first; the simulator's count stays authoritative.
            log.debug("%s %s/%s was already gone: %s", rtype.plural, namespace, name, error.message)

    def sync_deployment_status(self, row: int, pods: Sequence[PodRecord], *, desired: int) -> None:
        spec = self.cluster.deployments[row]
        try:
            deployment = self.store.get(self.types["deployments"], namespace=spec.namespace, name=spec.name)
        except ApiError:
            return

        live = [p for p in pods if p.state != TERMINATING]
        ready = sum(p.state == READY for p in live)
        current_hash = max(live, key=lambda p: p.revision).template_hash if live else ""
        available = ready >= max(desired - max(desired // 4, 1), 0)
        status = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": len(live),
            "updatedReplicas": sum(p.template_hash == current_hash for p in live),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(len(live) - ready, 0),
            "terminatingReplicas": sum(p.state == TERMINATING for p in pods),
            "conditions": [
                _condition("Available", available,
                           reason="MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable"),
                _condition("Progressing", True, reason="NewReplicaSetAvailable"),
            ],
        }
        previous = deployment.get("status") or {}
        if _without_times(previous) == _without_times(status):
            # An unchanged status keeps its resourceVersion, as the API server does for a no-op update.
            return
        deployment["status"] = status
        self.store.replace(self.types["deployments"], namespace=spec.namespace, name=spec.name, obj=deployment)
        for (namespace, rs_name), _ in self.replicasets.items():
            if namespace != spec.namespace or not rs_name.startswith(f"{spec.name}-"):
                continue
            owned = [p for p in live if f"{spec.name}-{p.template_hash}" == rs_name]
            replicaset = self.store.get(self.types["replicasets"], namespace=namespace, name=rs_name)
            counts = {"replicas": len(owned), "readyReplicas": sum(p.state == READY for p in owned),
                      "availableReplicas": sum(p.state == READY for p in owned)}
            if replicaset.get("status") != counts:
                replicaset["status"] = counts
                replicaset["spec"]["replicas"] = len(owned)
                self.store.replace(self.types["replicasets"], namespace=namespace, name=rs_name, obj=replicaset)

    def sync_quota(self, used: dict[str, float]) -> None:
        rtype = self.types["resourcequotas"]
        for quota in self.store.list(rtype):
            hard = quota.get("spec", {}).get("hard", {})
            status = {"hard": dict(hard), "used": {k: _format_amount(used.get(k, 0.0)) for k in hard}}
            if quota.get("status") != status:
                quota["status"] = status
                self.store.replace(rtype, namespace=quota["metadata"]["namespace"], name=quota["metadata"]["name"], obj=quota)

    def quotas(self) -> list[dict[str, Any]]:
        return self.store.list(self.types["resourcequotas"])

    def deployment(self, row: int) -> dict[str, Any] | None:
        spec = self.cluster.deployments[row]
        try:
            return self.store.get(self.types["deployments"], namespace=spec.namespace, name=spec.name)
        except ApiError:
            return None


def _without_times(status: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a status without condition timestamps, to compare two statuses."""
    result = dict(status)
    result["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                            for c in status.get("conditions") or []]
    return result


def _format_amount(value: float) -> str:
    return str(int(round(value))) if abs(value - round(value)) < 1e-9 else f"{value:.3f}"
