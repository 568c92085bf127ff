"""The initial objects of a virtual cluster, built from a ClusterSpec, and per-type validation.

Nodes carry the GPU feature discovery labels and, on a device-plugin cluster,
extended resources in ``status.allocatable``. On a DRA cluster the GPUs appear
instead as devices of one ResourceSlice per node, with the ``type``,
``productName`` and ``profile`` attributes the NVIDIA DRA driver publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envs.cluster import allocation
from envs.cluster.spec import ClusterSpec, NodePool
from envs.virtual_cluster.errors import invalid
from envs.virtual_cluster.resources import ResourceType
from envs.virtual_cluster.settings import VirtualClusterSettings
from envs.virtual_cluster.store import ObjectStore

SERVING_CONTAINER = "vllm"
DEVICE_CLASS_SELECTORS = {
    "gpu.nvidia.com": "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'",
    "mig.nvidia.com": "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'",
}


@dataclass(frozen=True)
class Device:
    """One schedulable GPU slot on a node: a whole GPU, a MIG instance or a shared replica."""

    node: str
    name: str
    slot_kind: str
    gpu: str
    sharing: str
    mig_profile: str = ""


def node_devices(pool: NodePool, node: str) -> list[Device]:
    """Return the slots one node of ``pool`` offers, named as the NVIDIA DRA driver names devices."""
    devices = []
    for index in range(pool.gpus_per_node):
        if pool.mig_layout:
            for profile, count in pool.mig_layout.items():
                compact = profile.replace(".", "")
                for slot in range(count):
                    devices.append(Device(node, f"gpu-{index}-mig-{compact}-{slot}", f"{pool.gpu}/mig-{profile}",
                                          pool.gpu, "mig", profile))
        elif pool.sharing in ("timeslice", "mps"):
            suffix = "ts" if pool.sharing == "timeslice" else "mps"
            for slot in range(pool.share_replicas):
                devices.append(Device(node, f"gpu-{index}-{suffix}-{slot}", f"{pool.gpu}/{suffix}", pool.gpu,
                                      pool.sharing))
        else:
            devices.append(Device(node, f"gpu-{index}", f"{pool.gpu}/whole", pool.gpu, "whole"))
    return devices


def node_names(cluster: ClusterSpec) -> list[tuple[NodePool, str]]:
    return [(pool, f"{pool.name}-{i}") for pool in cluster.node_pools for i in range(pool.nodes)]


def build_node(cluster: ClusterSpec, pool: NodePool, *, name: str, device_plugin: bool,
               naming: allocation.GpuNaming) -> dict[str, Any]:
    sharing = {"timeslice": "time-slicing", "mps": "mps"}.get(pool.sharing, "none")
    labels = {
        "kubernetes.io/hostname": name,
        "gpu-autoscaler.io/node-pool": pool.name,
        allocation.PRODUCT_LABEL: naming.node_label(pool.gpu),
        allocation.SHARING_LABEL: sharing,
        "nvidia.com/gpu.count": str(pool.gpus_per_node),
    }
    if pool.mig_layout:
        labels["nvidia.com/mig.strategy"] = "mixed"
    resources = {"cpu": "192", "memory": "2Ti", "pods": "110"}
    if device_plugin:
        counts: dict[str, int] = {}
        for device in node_devices(pool, name):
            resource = allocation.extended_resource_of_slot_kind(cluster.catalog, device.slot_kind)
            counts[resource] = counts.get(resource, 0) + 1
        resources.update({k: str(v) for k, v in counts.items()})
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {"kubeletVersion": "v1.34.0", "architecture": "amd64", "operatingSystem": "linux"},
        },
    }


def build_resource_slice(pool: NodePool, node: str, *, version: str, naming: allocation.GpuNaming) -> dict[str, Any]:
    devices = []
    for device in node_devices(pool, node):
        if device.sharing not in ("whole", "mig"):
            continue
        attributes: dict[str, Any] = {
            "type": {"string": "mig" if device.sharing == "mig" else "gpu"},
            "productName": {"string": naming.dra_product(pool.gpu)},
        }
        if device.mig_profile:
            attributes["profile"] = {"string": device.mig_profile}
        body = {"attributes": attributes, "capacity": {"memory": {"value": "80Gi"}}}
        devices.append({"name": device.name, "basic": body} if version == "v1beta1" else {"name": device.name, **body})
    return {
        "metadata": {"name": f"{node}-{allocation.DRA_DRIVER}"},
        "spec": {
            "driver": allocation.DRA_DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": devices,
        },
    }


def build_deployment(cluster: ClusterSpec, index: int, *, settings: VirtualClusterSettings,
                     naming: allocation.GpuNaming, dra_version: str) -> dict[str, Any]:
    spec = cluster.deployments[index]
    option = cluster.catalog.options[cluster.catalog.option_index(spec.initial_option)]
    label_key, label_value = settings.managed_label_pair
    template = {
        "metadata": {"labels": {"app": spec.name}},
        "spec": {
            "containers": [
                {
                    "name": SERVING_CONTAINER,
                    "image": "vllm/vllm-openai:v0.10.1",
                    "args": ["--model", spec.model, "--port", "8000"],
                    "resources": {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "64Gi"}},
                }
            ]
        },
    }
    if dra_version in allocation.DRA_VERSIONS:
        name = allocation.claim_template_name(spec.name, option, version=dra_version)
        template = allocation.apply_dra_option(template, option=option, claim_template_name=name)
    else:
        template = allocation.apply_device_plugin_option(template, option=option, naming=naming)
    return {
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {"app": spec.name, label_key: label_value},
            "annotations": {"gpu-autoscaler.io/model": spec.model},
        },
        "spec": {
            "replicas": spec.initial_replicas,
            "selector": {"matchLabels": {"app": spec.name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": template,
        },
        "status": {},
    }


def populate(store: ObjectStore, types: dict[str, ResourceType], *, cluster: ClusterSpec,
             settings: VirtualClusterSettings, naming: allocation.GpuNaming) -> None:
    """Create namespaces, nodes, DRA objects, quotas, Deployments and the optional HPAs and ScaledObjects."""
    dra = settings.dra_version if settings.dra_version in allocation.DRA_VERSIONS else ""
    namespaces = sorted({"default", settings.lease_namespace, *(d.namespace for d in cluster.deployments)})
    for namespace in namespaces:
        store.create(types["namespaces"], obj={"metadata": {"name": namespace}, "status": {"phase": "Active"}})
    for pool, name in node_names(cluster):
        store.create(types["nodes"], obj=build_node(cluster, pool, name=name, device_plugin=not dra, naming=naming))
        if dra:
            store.create(types["resourceslices"], obj=build_resource_slice(pool, name, version=dra, naming=naming))
    if "deviceclasses" in types:
        for class_name, expression in DEVICE_CLASS_SELECTORS.items():
            store.create(types["deviceclasses"], obj={
                "metadata": {"name": class_name},
                "spec": {"selectors": [{"cel": {"expression": expression}}]},
            })
    for namespace in sorted({d.namespace for d in cluster.deployments}):
        if cluster.quota_hard:
            hard = {key: _quantity(value) for key, value in cluster.quota_hard.items()}
            store.create(types["resourcequotas"], namespace=namespace, obj={
                "metadata": {"name": settings.quota_name},
                "spec": {"hard": hard},
                "status": {"hard": dict(hard), "used": {key: "0" for key in hard}},
            })
    for index, spec in enumerate(cluster.deployments):
        if dra:
            option = cluster.catalog.options[cluster.catalog.option_index(spec.initial_option)]
            store.create(types["resourceclaimtemplates"], namespace=spec.namespace,
                         obj=allocation.claim_template(deployment=spec.name, namespace=spec.namespace,
                                                   option=option, version=dra))
        store.create(types["deployments"], namespace=spec.namespace,
                     obj=build_deployment(cluster, index, settings=settings, naming=naming, dra_version=dra))
        target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name}
        if spec.name in settings.hpa_targets:
            store.create(types["horizontalpodautoscalers"], namespace=spec.namespace, obj={
                "metadata": {"name": spec.name},
                "spec": {"scaleTargetRef": target, "minReplicas": 1, "maxReplicas": spec.max_replicas,
                         "metrics": [{"type": "Resource", "resource": {
                             "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]},
            })
        if spec.name in settings.scaledobject_targets:
            store.create(types["scaledobjects"], namespace=spec.namespace, obj={
                "metadata": {"name": spec.name},
                "spec": {"scaleTargetRef": {"name": spec.name}, "minReplicaCount": 1,
                         "maxReplicaCount": spec.max_replicas},
            })


def _quantity(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def validate_deployment(rtype: ResourceType, new: dict[str, Any], *, old: dict[str, Any] | None) -> None:
    """Reject what the API server's Deployment validation rejects for the fields used here."""
    name = new["metadata"]["name"]
    spec = new.get("spec") or {}
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise invalid(rtype.kind, name, field_path="spec.replicas", group=rtype.group,
                      message=f"Invalid value: {replicas!r}: must be greater than or equal to 0")
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    containers = pod_spec.get("containers") or []
    if not containers:
        raise invalid(rtype.kind, name, field_path="spec.template.spec.containers", message="Required value",
                      group=rtype.group)
    claim_names = set()
    for position, claim in enumerate(pod_spec.get("resourceClaims") or []):
        sources = [k for k in ("resourceClaimName", "resourceClaimTemplateName") if claim.get(k)]
        if len(sources) != 1:
            raise invalid(rtype.kind, name, field_path=f"spec.template.spec.resourceClaims[{position}]",
                          message="must specify exactly one of resourceClaimName or resourceClaimTemplateName",
                          group=rtype.group)
        claim_names.add(claim.get("name"))
    for position, container in enumerate(containers):
        for claim in (container.get("resources") or {}).get("claims") or []:
            if claim.get("name") not in claim_names:
                raise invalid(rtype.kind, name, field_path=f"spec.template.spec.containers[{position}].resources.claims",
                              message=f"Not found: {claim.get('name')!r}: must be one of the pod's resourceClaims",
                              group=rtype.group)


def validate_immutable_spec(rtype: ResourceType, new: dict[str, Any], *, old: dict[str, Any] | None) -> None:
    """Reject a spec change of an existing object, as for ResourceClaimTemplates and ResourceClaims."""
    if old is not None and new.get("spec") != old.get("spec"):
        raise invalid(rtype.kind, new["metadata"]["name"], field_path="spec", message="field is immutable",
                      group=rtype.group)
