"""WorkloadSignals: the per-Deployment metrics of one control tick.

The simulator and the live runtime both produce this record, and everything
after it (observation encoding, policy, safety) is one code path. Each field
holds only a quantity that a live cluster exposes; the comment beside it names
the PromQL expression or Kubernetes API read that yields it live. ``<map>``
stands for the pod-to-Deployment join of kube-state-metrics
(``kube_pod_owner`` and ``kube_replicaset_owner``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Iterable, Mapping, Sequence

import numpy as np


@dataclass
class WorkloadSignals:
    """Raw metrics of one Deployment at one tick. Rates are per second."""

    name: str
    namespace: str = "default"
    # Arrived requests per second over the last tick:
    # sum by (namespace, deployment) (rate(vllm:request_success_total[1m]) * on (namespace, pod) <map>)
    # plus the increase of vllm:num_requests_waiting over the tick.
    request_rate: float = 0.0
    # Mean prompt and output tokens per request over the last tick:
    # rate(vllm:prompt_tokens_total[1m]) / rate(vllm:request_success_total[1m]) and the same for
    # vllm:generation_tokens_total.
    mean_input_tokens: float = 0.0
    mean_output_tokens: float = 0.0
    # Requests queued in the engines: sum by (deployment) (vllm:num_requests_waiting * on(pod) <map>).
    waiting_requests: float = 0.0
    # Requests being decoded: sum by (deployment) (vllm:num_requests_running * on(pod) <map>).
    running_requests: float = 0.0
    # histogram_quantile(0.95, sum by (le, deployment) (rate(vllm:time_to_first_token_seconds_bucket[1m]) ...)).
    ttft_p95_s: float = 0.0
    # Same quantile of vllm:e2e_request_latency_seconds_bucket.
    e2e_p95_s: float = 0.0
    # avg by (deployment) (vllm:kv_cache_usage_perc * on(pod) <map>), a 0..1 fraction.
    kv_cache_usage: float = 0.0
    # avg by (deployment) (DCGM_FI_PROF_GR_ENGINE_ACTIVE with exported_pod relabelled), 0..1.
    gpu_utilization: float = 0.0
    # Requests dropped (aborted or timed out) per second:
    # rate(vllm:request_success_total{finished_reason="abort"}[1m]).
    dropped_rate: float = 0.0
    # apps/v1 Deployment spec.replicas (kube_deployment_spec_replicas).
    desired_replicas: int = 0
    # status.readyReplicas (kube_deployment_status_replicas_ready).
    ready_replicas: int = 0
    # Pods of the Deployment in phase Pending (kube_pod_status_phase{phase="Pending"}).
    pending_replicas: int = 0
    # Pods Running but not yet Ready: the cold start (kube_pod_status_ready{condition="false"}).
    starting_replicas: int = 0
    # Pods with a deletionTimestamp still draining (kube_deployment_status_terminating_replicas).
    terminating_replicas: int = 0
    # Index into the allocation catalog of the option the pod template requests (from the pod
    # template's ResourceClaimTemplate or nvidia.com/* limits).
    option_index: int = 0
    # Free slots per slot kind in the cluster: allocatable devices from ResourceSlices or
    # Node status.allocatable minus what bound pods and claims hold.
    free_slots: Mapping[str, float] = field(default_factory=dict)
    # min over the quota keys an option uses of (hard - used) / per-pod amount, per option
    # (ResourceQuota status.hard and status.used), as pods that still fit the quota.
    quota_headroom_pods: Sequence[float] = field(default_factory=tuple)
    # Unix seconds at which these signals were read; the runtime uses it to detect stale data.
    timestamp_s: float = 0.0

    def is_complete(self) -> bool:
        """Return whether every load metric is a finite number (no NaN or Inf)."""
        values = (
            self.request_rate,
            self.waiting_requests,
            self.running_requests,
            self.ttft_p95_s,
            self.mean_input_tokens,
            self.mean_output_tokens,
        )
        return all(math.isfinite(float(v)) for v in values)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["free_slots"] = dict(self.free_slots)
        record["quota_headroom_pods"] = list(self.quota_headroom_pods)
        return record


# Numeric per-Deployment fields that travel as arrays through the batched path.
ARRAY_FIELDS: tuple[str, ...] = tuple(
    f.name
    for f in fields(WorkloadSignals)
    if f.name not in ("name", "namespace", "free_slots", "quota_headroom_pods", "timestamp_s")
)


@dataclass
class SignalBatch:
    """Signals of N Deployments as arrays, the form the encoder consumes.

    ``values[field]`` has shape (N,). ``free_slots`` has shape (N, K) in catalog
    slot-kind order and ``quota_headroom_pods`` shape (N, O) in option order.
    """

    values: dict[str, np.ndarray]
    free_slots: np.ndarray
    quota_headroom_pods: np.ndarray

    def __len__(self) -> int:
        return int(self.free_slots.shape[0])

    def __getitem__(self, key: str) -> np.ndarray:
        return self.values[key]


def batch_signals(
    signals: Sequence[WorkloadSignals], slot_kinds: Sequence[str], n_options: int
) -> SignalBatch:
    """Stack per-Deployment records into a SignalBatch (the runtime's path)."""
    n = len(signals)
    values = {
        name: np.array([float(getattr(s, name)) for s in signals], dtype=np.float64)
        for name in ARRAY_FIELDS
    }
    free = np.zeros((n, len(slot_kinds)), dtype=np.float64)
    headroom = np.full((n, n_options), np.inf, dtype=np.float64)
    for row, record in enumerate(signals):
        for col, kind in enumerate(slot_kinds):
            free[row, col] = float(record.free_slots.get(kind, 0.0))
        if len(record.quota_headroom_pods):
            headroom[row, :] = np.asarray(record.quota_headroom_pods, dtype=np.float64)[:n_options]
    return SignalBatch(values=values, free_slots=free, quota_headroom_pods=headroom)


def unbatch_signals(
    batch: SignalBatch, names: Iterable[str], slot_kinds: Sequence[str], timestamp_s: float = 0.0
) -> list[WorkloadSignals]:
    """Split a SignalBatch into records (used for logging and the HPA adapter)."""
    records = []
    for row, name in enumerate(names):
        kwargs = {}
        for key in ARRAY_FIELDS:
            value = float(batch.values[key][row])
            kwargs[key] = int(round(value)) if key.endswith("replicas") or key == "option_index" else value
        records.append(
            WorkloadSignals(
                name=name,
                free_slots={k: float(batch.free_slots[row, i]) for i, k in enumerate(slot_kinds)},
                quota_headroom_pods=tuple(float(x) for x in batch.quota_headroom_pods[row]),
                timestamp_s=timestamp_s,
                **kwargs,
            )
        )
    return records
