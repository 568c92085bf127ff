"""The simulation driver: one simulator tick turned into API objects and metrics.

Each tick the driver reads every simulated Deployment's ``spec.replicas`` and
the allocation option its pod template requests. It steps ``BatchedSimulator``
(one environment) with them and then writes back what a cluster would show:
Deployment and ReplicaSet status, pods with phases and Ready conditions,
ResourceClaims of running pods on a DRA cluster, ResourceQuota
``status.used``, and the ``/metrics`` page. All of it happens under the
store lock, so a client never reads a half-updated tick.

The simulator's min and max replicas are lifted, so the cluster runs the
count ``spec.replicas`` requests. Staying within limits is the agent's job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from typing import Any, Sequence

import numpy as np

from envs.cluster import allocation
from envs.cluster.spec import ClusterSpec
from envs.sim.dynamics import _quota_usage
from envs.sim.params import Randomization
from envs.sim.simulator import BatchedSimulator
from envs.traces.records import ArrivalSeries
from envs.virtual_cluster import pods as podlib
from envs.virtual_cluster.metrics_page import MetricsPage
from envs.virtual_cluster.objects import node_devices, node_names
from envs.virtual_cluster.resources import ResourceType
from envs.virtual_cluster.settings import VirtualClusterSettings
from envs.virtual_cluster.store import ObjectStore, now_rfc3339
from envs.virtual_cluster.workload_objects import WorkloadObjects

log = logging.getLogger(__name__)


def template_hash(template: dict[str, Any]) -> str:
    """Return a stable 10-character pod-template-hash of a pod template."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(podlib._NAME_ALPHABET[b % len(podlib._NAME_ALPHABET)] for b in digest[:10])


class SimulationDriver:
    """Owns the simulator and the pod records; ``step`` advances one tick."""

    def __init__(
        self,
        cluster: ClusterSpec,
        series: Sequence[ArrivalSeries],
        *,
        store: ObjectStore,
        types: dict[str, ResourceType],
        settings: VirtualClusterSettings,
        naming: allocation.GpuNaming,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.types = types
        self.settings = settings
        self.naming = naming
        ticks = min(len(s) for s in series)
        self.sim = BatchedSimulator(cluster, [[s] for s in series], n_envs=1, episode_ticks=ticks,
                                    randomization=Randomization(random_window=False), seed=settings.seed)
        self.sim.reset(seed=settings.seed)
        self.sim.params.min_replicas[:] = 0.0
        self.sim.params.max_replicas[:] = 1e6

        self.tick = 0
        self.rng = random.Random(settings.seed)
        options = cluster.catalog.options
        self.slot_kind = {i: o.slot_kind for i, o in enumerate(options)}
        self.devices_per_pod = {i: int(o.devices) for i, o in enumerate(options)}
        all_devices = [d for pool, node in node_names(cluster) for d in node_devices(pool, node)]
        self.allocator = podlib.DeviceAllocator(all_devices)
        n = len(cluster.deployments)
        self.pods: list[list[podlib.PodRecord]] = [[] for _ in range(n)]
        self.revision = [1] * n
        self.old_revision = [-1] * n
        self.option = [int(x) for x in self.sim.state.option[0]]
        self.hashes = [""] * n
        self.unplaced = 0


        self._warned: set[tuple[str, str]] = set()
        self.objects = WorkloadObjects(store=store, types=types, cluster=cluster, settings=settings)
        self.page = MetricsPage(cluster=cluster, settings=settings)
        with store.lock:
            templates = [self._deployment(d)["spec"]["template"] for d in range(n)]
            self._apply_state(templates)

    def _deployment(self, row: int) -> dict[str, Any]:
        spec = self.cluster.deployments[row]
        return self.store.get(self.types["deployments"], namespace=spec.namespace, name=spec.name)

    def _claim_templates(self, namespace: str) -> dict[str, dict[str, Any]]:
        if "resourceclaimtemplates" not in self.types:
            return {}
        items = self.store.list(self.types["resourceclaimtemplates"], namespace)
        return {item["metadata"]["name"]: item for item in items}

    def _read_decisions(self) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Return spec.replicas, option indices and pod templates of every simulated Deployment."""
        n = len(self.cluster.deployments)
        replicas = self.sim.state.desired[0].copy()
        options = np.array(self.option, dtype=np.int64)
        templates: list[dict[str, Any]] = []
        for row in range(n):
            spec = self.cluster.deployments[row]
            try:
                deployment = self._deployment(row)
            except Exception:  # noqa: BLE001 - a deleted Deployment keeps its last state
                templates.append({})
                continue
            replicas[row] = float(deployment["spec"].get("replicas", 1))
            template = deployment["spec"]["template"]
            templates.append(template)
            try:
                options[row] = allocation.option_from_template(
                    template, catalog=self.cluster.catalog,
                    claim_templates=self._claim_templates(spec.namespace), naming=self.naming)
            except allocation.AllocationError as error:
                key = (spec.name, str(deployment["metadata"].get("generation")))
                if key not in self._warned:
                    self._warned.add(key)
                    log.warning("Deployment %s/%s: %s; keeping option %s", spec.namespace, spec.name, error,
                                self.cluster.catalog.options[self.option[row]].name)
                    self.objects.event(spec.namespace, spec.name, kind="Warning", reason="UnknownAllocation",
                                      message=str(error))
        return replicas, options, templates

    def _sync_quota_limits(self) -> None:
        """Copy ResourceQuota ``spec.hard`` into the simulator, so an edited quota takes effect."""
        params = self.sim.params
        if not params.quota_keys:
            return
        namespace = self.cluster.deployments[0].namespace
        try:
            quota = self.store.get(self.types["resourcequotas"], namespace=namespace, name=self.settings.quota_name)
        except Exception:  # noqa: BLE001 - a deleted quota means no limit
            params.quota_limit[0, :] = np.inf
            return
        hard = quota.get("spec", {}).get("hard", {})
        for column, key in enumerate(params.quota_keys):
            params.quota_limit[0, column] = float(hard.get(key, np.inf))

    def step(self) -> None:
        """Advance the simulation by one tick and publish the result."""
        with self.store.lock:
            replicas, options, templates = self._read_decisions()
            self._sync_quota_limits()
            self.sim.step(replicas, options)
            if bool(self.sim.done()[0]):
                # Replay the trace from its start while keeping the pods as they are.
                self.sim.state.t[:] = 0
            self.tick += 1
            self._apply_state(templates)

    def _apply_state(self, templates: list[dict[str, Any]]) -> None:
        state = self.sim.state
        batch = self.sim.signals()
        for row, spec in enumerate(self.cluster.deployments):
            option = int(state.option[0, row])
            if option != self.option[row]:
                self.old_revision[row] = self.revision[row]
                self.revision[row] += 1
                self.option[row] = option
            old_ready = int(round(state.old_ready[0, row]))
            if old_ready == 0:
                self.old_revision[row] = -1
            if templates[row]:
                self.hashes[row] = template_hash(templates[row])
            targets = podlib.PodTargets(
                option=option, revision=self.revision[row],
                pending=int(round(state.pending[0, row])), starting=int(round(state.starting[0, row].sum())),
                ready=int(round(state.ready[0, row])), old_revision=self.old_revision[row], old_ready=old_ready)
            result = podlib.reconcile_pods(
                self.pods[row], targets, tick=self.tick, rs_name=f"{spec.name}-{self.hashes[row]}",
                template_hash=self.hashes[row], slot_kind=self.slot_kind, devices_per_pod=self.devices_per_pod,
                allocator=self.allocator, rng=self.rng)
            self.unplaced += result.unplaced
            self.objects.sync_pods(row, self.pods[row], result=result, template=templates[row] or None)
            self.objects.sync_deployment_status(row, self.pods[row], desired=int(state.desired[0, row]))
        self.objects.sync_quota(self._quota_used())
        self.page.update(self.tick, self.pods, objects=self.objects, batch=batch, state=state)

    def _quota_used(self) -> dict[str, float]:
        params, state = self.sim.params, self.sim.state
        if not params.quota_keys:
            return {}
        held = state.starting.sum(axis=-1) + state.ready
        used = _quota_usage(params, state.option, held) + _quota_usage(params, state.old_option, state.old_ready)
        return {key: float(used[0, q]) for q, key in enumerate(params.quota_keys)}

    def snapshot(self) -> dict[str, Any]:
        """Return the simulator's view for tests and the rehearsal log (tick, replicas, options, pods)."""
        with self.store.lock:
            state = self.sim.state
            rows = []
            for row, spec in enumerate(self.cluster.deployments):
                counts: dict[str, int] = {}
                for pod in self.pods[row]:
                    counts[pod.state] = counts.get(pod.state, 0) + 1
                rows.append({
                    "name": spec.name, "namespace": spec.namespace, "desired": int(state.desired[0, row]),
                    "option": self.cluster.catalog.options[self.option[row]].name, "pods": counts,
                    "request_rate": float(state.arrivals[0, row] / self.sim.params.tick_s),
                    "ttft_p95_s": float(state.ttft_p95_s[0, row]),
                })
            return {"tick": self.tick, "time": now_rfc3339(), "quota_used": self._quota_used(),
                    "unplaced_pods": self.unplaced, "deployments": rows}
