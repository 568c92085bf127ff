"""HPA as a controller of the simulated (or live) cluster.

Each Deployment gets its own ``HpaController`` (the exact autoscaling/v2
algorithm in ``agent.baselines.hpa``). Every tick the signals are turned into
what the HPA would read from the API and the metrics pipeline:

* Ready pods are Running and Ready and report the per-pod metric;
* starting pods (cold start) are Running but not Ready and have no sample yet,
  because an engine that is still loading its model serves no metrics;
* Pending pods are Pending; terminating pods carry a deletionTimestamp.

The per-pod metric is a Pods metric a real inference HPA uses, either GPU
utilisation (DCGM_FI_PROF_GR_ENGINE_ACTIVE through an adapter, 0..1) or
requests in flight (vllm:num_requests_running + vllm:num_requests_waiting).
The HPA never changes the allocation option: it scales the option the
Deployment already runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from agent.baselines.hpa import HorizontalPodAutoscaler, HpaController
from agent.baselines.hpa.pods import POD_PENDING, POD_RUNNING, MetricValues, Pod, PodMetricSample
from agent.controllers.base import Controller
from envs.observation import EncoderContext
from envs.signals import SignalBatch

METRICS = ("gpu_utilization", "requests_in_flight")


@dataclass(frozen=True)
class HpaSettings:
    """How the HPA baseline is configured for every Deployment.

    Attributes:
        metric: ``gpu_utilization`` (target is a 0..1 fraction) or ``requests_in_flight``
            (target is requests per pod).
        target: per-pod average target of the metric.
        behavior: ``default`` for ``behavior: {}``, ``legacy`` for no behavior field.
        tolerance: the controller's --horizontal-pod-autoscaler-tolerance.
        downscale_stabilization_s: the scale-down stabilisation window when behavior sets none.
        manifest: an autoscaling/v2 HPA YAML file; when set, its metrics, limits and
            behavior replace the fields above (the metric must be one of METRICS by name).
    """

    metric: str = "gpu_utilization"
    target: float = 0.7
    behavior: str = "default"
    tolerance: float = 0.1
    downscale_stabilization_s: float = 300.0
    manifest: str = ""


def _per_pod_value(batch: SignalBatch, metric: str, row: int) -> float:
    ready = max(float(batch["ready_replicas"][row]), 1.0)
    if metric == "gpu_utilization":
        return float(batch["gpu_utilization"][row])
    return (float(batch["running_requests"][row]) + float(batch["waiting_requests"][row])) / ready


def pods_from_signals(batch: SignalBatch, row: int, now_s: float, metric: str) -> tuple[list[Pod], dict[str, PodMetricSample]]:
    """Build the pod list and per-pod samples that a real HPA would read for ``row``."""
    pods: list[Pod] = []
    samples: dict[str, PodMetricSample] = {}
    value = _per_pod_value(batch, metric, row)
    milli = int(round(value * 1000.0))
    for i in range(int(round(batch["ready_replicas"][row]))):
        name = f"ready-{i}"
        pods.append(Pod(name=name, phase=POD_RUNNING, ready=True, start_time_s=now_s - 600.0, ready_transition_s=now_s - 540.0))
        samples[name] = PodMetricSample(value_milli=milli, timestamp_s=now_s, window_s=15.0)
    for i in range(int(round(batch["starting_replicas"][row]))):
        pods.append(Pod(name=f"starting-{i}", phase=POD_RUNNING, ready=False, start_time_s=now_s - 15.0, ready_transition_s=now_s - 15.0))
    for i in range(int(round(batch["pending_replicas"][row]))):
        pods.append(Pod(name=f"pending-{i}", phase=POD_PENDING, ready=False, start_time_s=None))
    for i in range(int(round(batch["terminating_replicas"][row]))):
        pods.append(Pod(name=f"terminating-{i}", phase=POD_RUNNING, ready=True, deleted=True, start_time_s=now_s - 600.0))
    return pods, samples


class HpaBaseline(Controller):
    """One exact HPA per Deployment, fed from signals; keeps each Deployment's option."""

    name = "hpa"

    def __init__(self, settings: HpaSettings | None = None, *, fixed_options: Sequence[int] | None = None) -> None:
        self.settings = settings or HpaSettings()
        if self.settings.metric not in METRICS:
            raise ValueError(f"HPA metric {self.settings.metric!r} is not one of {METRICS}")
        self.fixed_options = None if fixed_options is None else np.asarray(fixed_options, dtype=np.int64)
        self._controllers: list[HpaController] = []

    def _build_hpa(self, name: str, min_replicas: int, max_replicas: int) -> HorizontalPodAutoscaler:
        s = self.settings
        if s.manifest:
            from agent.baselines.hpa import load_hpa_manifest

            return load_hpa_manifest(s.manifest)
        behavior = None if s.behavior == "legacy" else "default"
        return HorizontalPodAutoscaler.for_pods_metric(
            s.metric, f"{int(round(s.target * 1000))}m", min_replicas=max(min_replicas, 1),
            max_replicas=max_replicas, behavior=behavior, hpa_name=name,
        )

    def reset(self, ctx: EncoderContext, names: Sequence[str], tick_s: float) -> None:
        super().reset(ctx, names, tick_s)
        self._controllers = [
            HpaController(
                self._build_hpa(name, int(ctx.min_replicas[i]), int(ctx.max_replicas[i])),
                sync_period_s=tick_s,
                tolerance=self.settings.tolerance,
                downscale_stabilization_s=self.settings.downscale_stabilization_s,
            )
            for i, name in enumerate(names)
        ]

    def decide(self, batch: SignalBatch, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        replicas = np.zeros(len(batch), dtype=np.int64)
        for row, controller in enumerate(self._controllers):
            pods, samples = pods_from_signals(batch, row, now_s, self.settings.metric)
            metric_name = controller.hpa.metrics[0].name if controller.hpa.metrics else self.settings.metric
            values = MetricValues(pods={metric_name: samples})
            current = int(round(batch["desired_replicas"][row]))
            status = current + int(round(batch["terminating_replicas"][row]))
            result = controller.reconcile(now_s, current, status, pods, values)
            replicas[row] = result.desired_replicas
        current_option = batch["option_index"].astype(np.int64)
        options = current_option if self.fixed_options is None else self.fixed_options
        return replicas, options
