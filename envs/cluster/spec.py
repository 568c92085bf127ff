"""Cluster specification: node pools, quota and managed Deployments.

A spec is static: it never changes while a simulation runs. The batched
simulator turns it into arrays once (``envs.sim.params``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from envs.cluster.catalog import AllocationOption, Catalog, CatalogError

# Compute slices (of 7), memory slices (of 8) and the maximum instances per GPU
# of each MIG profile on A100-80GB and H100-80GB (NVIDIA MIG user guide,
# "Supported MIG profiles").
MIG_PROFILES: dict[str, tuple[int, int, int]] = {
    "1g.10gb": (1, 1, 7),
    "1g.20gb": (1, 2, 4),
    "2g.20gb": (2, 2, 3),
    "3g.40gb": (3, 4, 2),
    "4g.40gb": (4, 4, 1),
    "7g.80gb": (7, 8, 1),
}


@dataclass(frozen=True)
class NodePool:
    """Identical GPU nodes. Each GPU is whole, split by a fixed MIG layout, or shared.

    ``mig_layout`` maps a MIG profile to instances per GPU. ``share_replicas``
    above 1 makes each GPU offer that many time-sliced (``sharing="timeslice"``)
    or MPS (``sharing="mps"``) slots, as the NVIDIA device plugin does.
    """

    name: str
    gpu: str
    nodes: int
    gpus_per_node: int
    mig_layout: Mapping[str, int] = field(default_factory=dict)
    sharing: str = "whole"
    share_replicas: int = 1

    def slots(self) -> dict[str, int]:
        """Return the slot count this pool offers per slot kind."""
        gpus = self.nodes * self.gpus_per_node
        if self.mig_layout:
            return {f"{self.gpu}/mig-{p}": gpus * n for p, n in self.mig_layout.items()}
        if self.sharing == "timeslice":
            return {f"{self.gpu}/ts": gpus * self.share_replicas}
        if self.sharing == "mps":
            return {f"{self.gpu}/mps": gpus * self.share_replicas}
        return {f"{self.gpu}/whole": gpus}

    @property
    def gpu_count(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class DeploymentSpec:
    """One managed inference Deployment and its service-level objective."""

    name: str
    model: str
    min_replicas: int = 1
    max_replicas: int = 16
    slo_ttft_p95_s: float = 2.0
    initial_option: str = ""
    initial_replicas: int = 1
    allowed_options: tuple[str, ...] = ()
    trace: str = ""
    rate_scale: float = 1.0
    queue_timeout_s: float = 60.0
    namespace: str = "default"


@dataclass(frozen=True)
class ClusterSpec:
    """Node pools, ResourceQuota ``hard`` limits and the managed Deployments."""

    name: str
    catalog: Catalog
    node_pools: tuple[NodePool, ...]
    deployments: tuple[DeploymentSpec, ...]
    quota_hard: Mapping[str, float] = field(default_factory=dict)
    tick_s: float = 15.0

    def slot_capacity(self) -> dict[str, int]:
        """Return total slots per slot kind over all pools."""
        total: dict[str, int] = {}
        for pool in self.node_pools:
            for kind, count in pool.slots().items():
                total[kind] = total.get(kind, 0) + count
        return total

    def feasible_options(self, deployment: DeploymentSpec) -> list[bool]:
        """Return, per catalog option, whether the model fits and some pool offers the slot."""
        capacity = self.slot_capacity()
        model = self.catalog.model(deployment.model)
        allowed = set(deployment.allowed_options)
        result = []
        for option in self.catalog.options:
            ok = model.profile(option.name).fits and capacity.get(option.slot_kind, 0) >= option.devices
            if allowed and option.name not in allowed:
                ok = False
            result.append(ok)
        return result


PROFILE_FIELDS = ("prefill_tps", "decode_tps", "max_concurrency", "itl_s", "fits", "startup_s")


def profile_tables(cluster: ClusterSpec) -> dict[str, np.ndarray]:
    """Return the (Deployments, options) profile arrays of ``cluster``, keyed by PROFILE_FIELDS.

    An option that does not fit the model or that no node pool offers gets
    zero throughput, ``fits`` False and the default 60 s startup. The simulator
    and the observation encoder both read these tables, so they agree.
    """
    catalog = cluster.catalog
    shape = (len(cluster.deployments), len(catalog.options))
    tables = {name: np.zeros(shape) for name in ("prefill_tps", "decode_tps", "max_concurrency", "itl_s")}
    tables["fits"] = np.zeros(shape, dtype=bool)
    tables["startup_s"] = np.full(shape, 60.0)
    for row, deployment in enumerate(cluster.deployments):
        model = catalog.model(deployment.model)
        feasible = cluster.feasible_options(deployment)
        for col, option in enumerate(catalog.options):
            profile = model.profile(option.name)
            if not (profile.fits and feasible[col]):
                continue
            tables["fits"][row, col] = True
            tables["prefill_tps"][row, col] = profile.prefill_tokens_per_s
            tables["decode_tps"][row, col] = profile.decode_tokens_per_s
            tables["max_concurrency"][row, col] = profile.max_concurrency
            tables["itl_s"][row, col] = profile.itl_s
            tables["startup_s"][row, col] = profile.startup_s
    return tables


def quota_usage_keys(option: AllocationOption) -> dict[str, float]:
    """Return the ResourceQuota keys one pod of ``option`` counts against, with amounts.

    DRA claims count as ``<class>.deviceclass.resource.k8s.io/devices``; the device
    plugin counts ``requests.<extended resource>`` (``requests.nvidia.com/gpu`` for
    whole GPUs, ``requests.nvidia.com/mig-3g.40gb`` for a MIG slice).
    """
    return {
        f"{option.device_class}.deviceclass.resource.k8s.io/devices": float(option.devices),
        f"requests.{option.extended_resource}": float(option.devices),
    }


def _validate_pool(pool: NodePool, catalog: Catalog) -> None:
    where = f"cluster.node_pools.{pool.name}"
    if pool.gpu not in catalog.gpus:
        raise CatalogError(
            f"{where}.gpu: unknown GPU {pool.gpu!r}; use one of the catalog's GPUs {sorted(catalog.gpus)}"
        )
    if pool.nodes < 0 or pool.gpus_per_node < 1:
        raise CatalogError(f"{where}: nodes must be >= 0 and gpus_per_node >= 1")
    if pool.mig_layout:
        if not catalog.gpus[pool.gpu].mig_capable:
            raise CatalogError(f"{where}.mig_layout: {pool.gpu} does not support MIG")
        compute = memory = 0
        for profile, count in pool.mig_layout.items():
            if profile not in MIG_PROFILES:
                raise CatalogError(
                    f"{where}.mig_layout: unknown MIG profile {profile!r}; known: {sorted(MIG_PROFILES)}"
                )
            c, m, limit = MIG_PROFILES[profile]
            if count > limit:
                raise CatalogError(
                    f"{where}.mig_layout: {count} x {profile} exceeds its limit of {limit} per GPU"
                )
            compute += c * count
            memory += m * count
        if compute > 7 or memory > 8:
            raise CatalogError(
                f"{where}.mig_layout: uses {compute}/7 compute and {memory}/8 memory slices; "
                "a GPU has 7 and 8"
            )
    if pool.sharing not in ("whole", "timeslice", "mps"):
        raise CatalogError(f"{where}.sharing: {pool.sharing!r} is not whole, timeslice or mps")


def parse_cluster(raw: Mapping[str, Any], catalog: Catalog, deployments_raw: Any) -> ClusterSpec:
    """Build a ClusterSpec from ``conf/cluster`` and ``conf/workload`` mappings."""
    pools = []
    for spec in raw.get("node_pools", []) or []:
        pool = NodePool(
            name=str(spec["name"]),
            gpu=str(spec["gpu"]),
            nodes=int(spec.get("nodes", 1)),
            gpus_per_node=int(spec.get("gpus_per_node", 8)),
            mig_layout={str(k): int(v) for k, v in dict(spec.get("mig_layout") or {}).items()},
            sharing=str(spec.get("sharing", "whole")),
            share_replicas=int(spec.get("share_replicas", 1)),
        )
        _validate_pool(pool, catalog)
        pools.append(pool)
    if not pools:
        raise CatalogError("cluster.node_pools: at least one node pool is required")

    deployments = []
    for spec in deployments_raw or []:
        deployments.append(_parse_deployment(dict(spec), catalog))
    if not deployments:
        raise CatalogError("workload.deployments: at least one Deployment is required")
    names = [d.name for d in deployments]
    if len(set(names)) != len(names):
        raise CatalogError(f"workload.deployments: duplicate names in {names}")

    tick_s = float(raw.get("tick_s", 15.0))
    if not math.isfinite(tick_s) or tick_s <= 0:
        raise CatalogError(f"cluster.tick_s: must be above 0 seconds, got {tick_s}")
    cluster = ClusterSpec(
        name=str(raw.get("name", "cluster")),
        catalog=catalog,
        node_pools=tuple(pools),
        deployments=tuple(deployments),
        quota_hard={str(k): float(v) for k, v in dict(raw.get("quota_hard") or {}).items()},
        tick_s=tick_s,
    )
    for deployment in cluster.deployments:
        feasible = cluster.feasible_options(deployment)
        if not any(feasible):
            raise CatalogError(
                f"workload.deployments.{deployment.name}: no allocation option both fits model "
                f"{deployment.model!r} and is offered by a node pool; add a pool or a profile"
            )
        index = catalog.option_index(deployment.initial_option)
        if not feasible[index]:
            usable = [option.name for option, ok in zip(catalog.options, feasible) if ok]
            raise CatalogError(
                f"workload.deployments.{deployment.name}.initial_option: {deployment.initial_option!r} "
                f"does not fit the model or no node pool provides it; use one of {usable} or add a node pool "
                "that offers it"
            )
    return cluster


def _parse_deployment(spec: dict[str, Any], catalog: Catalog) -> DeploymentSpec:
    name = str(spec.get("name", ""))
    where = f"workload.deployments.{name or '?'}"
    if not name:
        raise CatalogError(f"{where}: missing required key 'name'")
    model = str(spec.get("model", ""))
    catalog.model(model)
    min_r = int(spec.get("min_replicas", 1))
    max_r = int(spec.get("max_replicas", 16))
    if min_r < 0:
        raise CatalogError(f"{where}.min_replicas: must be >= 0, got {min_r}")
    if max_r < 1:
        raise CatalogError(f"{where}.max_replicas: must be at least 1, got {max_r}")
    if max_r < min_r:
        raise CatalogError(
            f"{where}: min_replicas ({min_r}) is above max_replicas ({max_r}); set max_replicas >= min_replicas"
        )
    slo = float(spec.get("slo_ttft_p95_s", 2.0))
    if not math.isfinite(slo) or slo <= 0:
        raise CatalogError(f"{where}.slo_ttft_p95_s: must be a positive number of seconds, got {slo}")
    initial_option = str(spec.get("initial_option") or catalog.options[0].name)
    catalog.option_index(initial_option)
    allowed = tuple(str(x) for x in spec.get("allowed_options", ()) or ())
    for option in allowed:
        catalog.option_index(option)
    initial_replicas = int(spec.get("initial_replicas", min_r or 1))
    rate_scale = float(spec.get("rate_scale", 1.0))
    if not math.isfinite(rate_scale) or rate_scale <= 0:
        raise CatalogError(f"{where}.rate_scale: must be a finite number above 0, got {rate_scale}")
    queue_timeout = float(spec.get("queue_timeout_s", 60.0))
    if not math.isfinite(queue_timeout) or queue_timeout <= 0:
        raise CatalogError(f"{where}.queue_timeout_s: must be a positive number of seconds, got {queue_timeout}")
    return DeploymentSpec(
        name=name,
        model=model,
        min_replicas=min_r,
        max_replicas=max_r,
        slo_ttft_p95_s=slo,
        initial_option=initial_option,
        initial_replicas=min(max(initial_replicas, min_r), max_r),
        allowed_options=allowed,
        trace=str(spec.get("trace", "")),
        rate_scale=rate_scale,
        queue_timeout_s=queue_timeout,
        namespace=str(spec.get("namespace", "default")),
    )
