"""The ``/metrics`` page of the virtual cluster in the Prometheus text format (version 0.0.4).

One page contains what a real cluster spreads over three exporters, with
their metric and label names. kube-state-metrics series start with ``kube_``.
NVIDIA dcgm-exporter series (``DCGM_FI_*``) carry ``exported_pod`` and
``exported_namespace``, as they arrive when a ServiceMonitor with
``honorLabels: false`` scrapes the exporter. Each vLLM pod's series
(``vllm:*``) carry the ``namespace`` and ``pod`` target labels a PodMonitor adds.

Latency histograms are an approximation: the simulator reports only a few
quantiles of each tick (TTFT p50, p95 and p99; end-to-end p95). The tick's
requests are spread over the buckets along a piecewise-linear CDF through
those points, starting at half the median and ending at p99 plus the p95-p99
gap. The end-to-end distribution is the TTFT one shifted by the difference of
the two p95 values. ``histogram_quantile`` over these buckets therefore
recovers the simulated quantiles only to within the bucket resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

# vLLM's bucket upper bounds in seconds (vllm/v1/metrics/loggers.py, ~v0.10).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)


def latency_cdf(points: Sequence[tuple[float, float]], seconds: float) -> float:
    """Return the fraction of requests at or below ``seconds`` on a piecewise-linear CDF.

    ``points`` are (seconds, cumulative fraction) pairs in increasing order,
    from fraction 0 to fraction 1.
    """
    if seconds <= points[0][0]:
        return 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if seconds <= x1:
            return y0 + (y1 - y0) * (seconds - x0) / max(x1 - x0, 1e-12)
    return 1.0


def ttft_points(*, p50: float, p95: float, p99: float) -> list[tuple[float, float]]:
    """Return the CDF anchor points of one tick's TTFT (see the module docstring)."""
    p50 = max(p50, 1e-6)
    p95 = max(p95, p50)
    p99 = max(p99, p95)
    return [(0.5 * p50, 0.0), (p50, 0.5), (p95, 0.95), (p99, 0.99), (p99 + max(p99 - p95, 0.1 * p99), 1.0)]


def cdf_mean(points: Sequence[tuple[float, float]]) -> float:
    """Return the mean of the piecewise-linear distribution (each segment contributes its midpoint)."""
    return sum((y1 - y0) * 0.5 * (x0 + x1) for (x0, y0), (x1, y1) in zip(points, points[1:]))


@dataclass
class Histogram:
    """A cumulative Prometheus histogram: per-bucket counts, sum and count, all only growing."""

    bounds: tuple[float, ...]
    buckets: list[float] = field(default_factory=list)
    total: float = 0.0
    count: float = 0.0

    def __post_init__(self) -> None:
        if not self.buckets:
            self.buckets = [0.0] * len(self.bounds)

    def observe_distribution(self, points: Sequence[tuple[float, float]], requests: float) -> None:
        """Add ``requests`` observations spread along the CDF ``points``."""
        if requests <= 0 or not math.isfinite(requests):
            return
        for index, bound in enumerate(self.bounds):
            self.buckets[index] += requests * latency_cdf(points, bound)
        self.total += requests * cdf_mean(points)
        self.count += requests


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Family:
    """One metric family: a HELP and TYPE line followed by its samples."""

    name: str
    kind: str
    help: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append(Sample(self.name + suffix, labels, float(value)))

    def add_histogram(self, histogram: Histogram, **labels: str) -> None:
        for bound, count in zip(histogram.bounds, histogram.buckets):
            self.add(count, "_bucket", **labels, le=format_value(bound))
        self.add(histogram.count, "_bucket", **labels, le="+Inf")
        self.add(histogram.total, "_sum", **labels)
        self.add(histogram.count, "_count", **labels)


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(families: Iterable[Family]) -> str:
    """Return the text exposition of ``families``; families without samples are left out."""
    lines: list[str] = []
    for family in families:
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sample.labels.items())
            lines.append(f"{sample.name}{{{labels}}} {format_value(sample.value)}" if labels
                         else f"{sample.name} {format_value(sample.value)}")
    return "\n".join(lines) + "\n"


@dataclass
class PodServingCounters:
    """Cumulative vLLM counters and histograms of one pod, kept while the pod exists."""

    success_stop: float = 0.0
    success_abort: float = 0.0
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))


def new_families() -> dict[str, Family]:
    """Return the empty families of one page, keyed by metric name, in page order."""
    specs = [
        ("kube_deployment_spec_replicas", "gauge", "Number of desired pods for a deployment."),
        ("kube_deployment_status_replicas", "gauge", "The number of replicas per deployment."),
        ("kube_deployment_status_replicas_ready", "gauge", "The number of ready replicas per deployment."),
        ("kube_deployment_status_replicas_available", "gauge", "The number of available replicas per deployment."),
        ("kube_deployment_status_terminating_replicas", "gauge", "The number of terminating replicas per deployment."),
        ("kube_pod_status_phase", "gauge", "The pods current phase."),
        ("kube_pod_status_ready", "gauge", "Describes whether the pod is ready to serve requests."),
        ("kube_pod_owner", "gauge", "Information about the Pod's owner."),
        ("kube_replicaset_owner", "gauge", "Information about the ReplicaSet's owner."),
        ("kube_resourcequota", "gauge", "Information about resource quota."),
        ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active."),
        ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
        ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
        ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches."),
        ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed."),
        ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage."),
        ("vllm:request_success_total", "counter", "Count of successfully processed requests."),
        ("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed."),
        ("vllm:generation_tokens_total", "counter", "Number of generation tokens processed."),
        ("vllm:time_to_first_token_seconds", "histogram", "Histogram of time to first token in seconds."),
        ("vllm:e2e_request_latency_seconds", "histogram", "Histogram of e2e request latency in seconds."),
    ]
    return {name: Family(name, kind, text) for name, kind, text in specs}
