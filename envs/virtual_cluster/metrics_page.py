"""Per-tick values of the ``/metrics`` page, split from Deployment totals onto pods.

The simulator reports each Deployment's totals; the page reports per pod, as
the exporters do. Serving gauges and counters are split evenly over the
Deployment's Ready pods (both the current and the previous option's), and
GPU gauges are reported per device of every pod that has one.

Counters are scaled to wall-clock time: at a time factor f, a tick of
``tick_s`` simulated seconds lasts ``tick_s / f`` wall seconds, so each
counter grows by 1/f of the simulated count. ``rate()`` over wall-clock
seconds then returns the simulated per-second rate. With the time factor 0
(manual ticks) counters grow by the simulated counts.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from envs.cluster.spec import ClusterSpec
from envs.signals import SignalBatch
from envs.sim.state import SimState
from envs.virtual_cluster.exposition import PodServingCounters, new_families, render, ttft_points
from envs.virtual_cluster.pods import PENDING, READY, STARTING, TERMINATING, PodRecord
from envs.virtual_cluster.settings import VirtualClusterSettings

# vLLM pre-allocates this share of GPU memory for weights and the KV cache
# (its --gpu-memory-utilization default).
GPU_MEMORY_UTILIZATION = 0.9


class MetricsPage:
    """Cumulative per-pod counters and the rendered text of the latest tick."""

    def __init__(self, *, cluster: ClusterSpec, settings: VirtualClusterSettings) -> None:
        self.cluster = cluster
        self.counter_scale = 1.0 / settings.time_factor if settings.time_factor > 0 else 1.0
        self.counters: dict[str, PodServingCounters] = {}
        self._text = ""
        self._lock = threading.Lock()

    @property
    def text(self) -> str:
        with self._lock:
            return self._text

    def update(self, tick: int, pods: Sequence[Sequence[PodRecord]], *, objects: Any, batch: SignalBatch,
               state: SimState) -> None:
        families = new_families()
        alive = {pod.name for row in pods for pod in row}
        for name in list(self.counters):
            if name not in alive:
                del self.counters[name]
        for row, spec in enumerate(self.cluster.deployments):
            self._deployment_rows(families, row, pods=pods[row], objects=objects, namespace=spec.namespace,
                                  name=spec.name)
            self._serving_rows(families, row, pods=pods[row], batch=batch, state=state, namespace=spec.namespace,
                               model=spec.model)
        for quota in objects.quotas():
            meta = quota["metadata"]
            for kind in ("hard", "used"):
                for resource, value in (quota.get("status", {}).get(kind) or {}).items():
                    families["kube_resourcequota"].add(float(value), namespace=meta["namespace"],
                                                       resourcequota=meta["name"], resource=resource, type=kind)
        text = render(families.values())
        with self._lock:
            self._text = text

    def _deployment_rows(self, families: dict, row: int, *, pods: Sequence[PodRecord], objects: Any,
                         namespace: str, name: str) -> None:
        deployment = objects.deployment(row)
        if deployment is None:
            return
        status = deployment.get("status") or {}
        labels = {"namespace": namespace, "deployment": name}
        families["kube_deployment_spec_replicas"].add(deployment["spec"].get("replicas", 0), **labels)
        families["kube_deployment_status_replicas"].add(status.get("replicas", 0), **labels)
        families["kube_deployment_status_replicas_ready"].add(status.get("readyReplicas", 0), **labels)
        families["kube_deployment_status_replicas_available"].add(status.get("availableReplicas", 0), **labels)
        families["kube_deployment_status_terminating_replicas"].add(status.get("terminatingReplicas", 0), **labels)
        replicasets = set()
        for pod in pods:
            uid = objects.pod_uids.get(pod.name, "")
            phase = "Pending" if pod.state == PENDING else "Running"
            for candidate in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
                families["kube_pod_status_phase"].add(1.0 if candidate == phase else 0.0, namespace=namespace,
                                                      pod=pod.name, uid=uid, phase=candidate)
            ready = pod.state == READY
            for condition in ("true", "false", "unknown"):
                value = 1.0 if (condition == "true") == ready and condition != "unknown" else 0.0
                families["kube_pod_status_ready"].add(value, namespace=namespace, pod=pod.name, uid=uid,
                                                      condition=condition)
            replicaset = f"{name}-{pod.template_hash}"
            replicasets.add(replicaset)
            families["kube_pod_owner"].add(1.0, namespace=namespace, pod=pod.name, uid=uid, owner_kind="ReplicaSet",
                                           owner_name=replicaset, owner_is_controller="true")
        for replicaset in sorted(replicasets):
            families["kube_replicaset_owner"].add(1.0, namespace=namespace, replicaset=replicaset,
                                                  owner_kind="Deployment", owner_name=name,
                                                  owner_is_controller="true")

    def _serving_rows(self, families: dict, row: int, *, pods: Sequence[PodRecord], batch: SignalBatch,
                      state: SimState, namespace: str, model: str) -> None:
        serving = [p for p in pods if p.state == READY]
        share = 1.0 / len(serving) if serving else 0.0
        scale = self.counter_scale
        served = float(state.served[0, row])
        dropped = float(state.dropped[0, row])
        points = ttft_points(p50=float(state.ttft_p50_s[0, row]), p95=float(state.ttft_p95_s[0, row]),
                             p99=float(state.ttft_p99_s[0, row]))
        shift = max(float(state.e2e_p95_s[0, row]) - float(state.ttft_p95_s[0, row]), 0.0)
        e2e_points = [(x + shift, y) for x, y in points]
        utilization = float(np.clip(batch["gpu_utilization"][row], 0.0, 1.0))
        kv_usage = float(np.clip(batch["kv_cache_usage"][row], 0.0, 1.0))
        for pod in serving:
            counters = self.counters.setdefault(pod.name, PodServingCounters())
            counters.success_stop += served * share * scale
            counters.success_abort += dropped * share * scale
            counters.prompt_tokens += served * float(state.input_tokens[0, row]) * share * scale
            counters.generation_tokens += served * float(state.output_tokens[0, row]) * share * scale
            counters.ttft.observe_distribution(points, served * share * scale)
            counters.e2e.observe_distribution(e2e_points, served * share * scale)
            labels = {"namespace": namespace, "pod": pod.name, "model_name": model, "engine": "0"}
            families["vllm:num_requests_running"].add(float(state.running[0, row]) * share, **labels)
            families["vllm:num_requests_waiting"].add(float(state.backlog[0, row]) * share, **labels)
            families["vllm:kv_cache_usage_perc"].add(kv_usage, **labels)
            families["vllm:request_success_total"].add(counters.success_stop, **labels, finished_reason="stop")
            families["vllm:request_success_total"].add(counters.success_abort, **labels, finished_reason="abort")
            families["vllm:prompt_tokens_total"].add(counters.prompt_tokens, **labels)
            families["vllm:generation_tokens_total"].add(counters.generation_tokens, **labels)
            families["vllm:time_to_first_token_seconds"].add_histogram(counters.ttft, **labels)
            families["vllm:e2e_request_latency_seconds"].add_histogram(counters.e2e, **labels)
        for pod in pods:
            if pod.state not in (STARTING, READY, TERMINATING):
                continue
            option = self.cluster.catalog.options[pod.option]
            busy = utilization if pod.state == READY else 0.0
            memory_mib = option.memory_gb * 1024.0 * GPU_MEMORY_UTILIZATION
            for device in pod.devices:
                labels = {"gpu": device.name, "UUID": f"GPU-{device.node}-{device.name}",
                          "modelName": option.gpu, "Hostname": device.node, "exported_pod": pod.name,
                          "exported_namespace": namespace, "exported_container": "vllm"}
                families["DCGM_FI_PROF_GR_ENGINE_ACTIVE"].add(busy, **labels)
                families["DCGM_FI_DEV_FB_USED"].add(memory_mib if pod.state == READY else 0.3 * memory_mib,
                                                     **labels)
                if option.sharing != "mig":
                    # dcgm-exporter reports no GPU_UTIL for MIG instances.
                    families["DCGM_FI_DEV_GPU_UTIL"].add(round(busy * 100.0), **labels)
