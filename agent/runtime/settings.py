"""Typed settings of the live runtime; ``conf/runtime/default.yaml`` overrides the defaults here.

Every default is the safe choice: dry-run on, TLS verification on, leader
election on, small replica steps, long scale-down and manual-edit windows, and
the agent's own metrics bound to loopback. A deployment manifest opens up
only what it needs (``deploy/deployment.yaml`` sets the metrics host).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

from agent.runtime.promql import QueryTemplates


@dataclass
class KubernetesSettings:
    """How to reach the API server.

    Attributes:
        auth: ``auto`` tries the in-cluster service account, then the kubeconfig;
            ``in_cluster`` or ``kubeconfig`` forces one.
        kubeconfig: kubeconfig path; empty means ``$KUBECONFIG`` or ``~/.kube/config``.
        context: kubeconfig context; empty means the current one.
        server: API server URL that replaces the configured one (a rehearsal on the
            virtual cluster uses ``http://127.0.0.1:<port>`` with auth ``none``).
        verify_tls: verify the server certificate; turn off only for a loopback rehearsal.
        request_timeout_s: timeout of every API call, connect plus read.
        max_retries: retries of one call after 429, 5xx or a connection error.
        max_retry_after_s: longest Retry-After (of a 429 or 5xx response) the client waits before giving up
            on the call.
        dra_version: ``auto`` detects the served ``resource.k8s.io`` version; v1,
            v1beta2 or v1beta1 forces one; ``none`` forces the device-plugin path.
        container: container that gets the GPU request; empty means the first one.
        field_manager: the field manager name sent with every write.
    """

    auth: str = "auto"
    kubeconfig: str = ""
    context: str = ""
    server: str = ""
    verify_tls: bool = True
    request_timeout_s: float = 10.0
    max_retries: int = 3
    max_retry_after_s: float = 30.0
    dra_version: str = "auto"
    container: str = ""
    field_manager: str = "gpu-autoscaler"


@dataclass
class PrometheusSettings:
    """Source of the signals and their maximum age.

    Attributes:
        url: Prometheus base URL. A user and password in it (``https://user:password@host``)
            are sent as HTTP basic auth and replaced by ``***`` in logs and messages.
        timeout_s: timeout of each query.
        read_budget_s: wall-clock seconds all queries of one tick may take together;
            families not read when it runs out count as failed for that tick.
        verify_tls: verify the server certificate.
        bearer_token_file: file with a bearer token sent as Authorization; empty sends none.
        rate_window: range of every ``rate()`` in the queries; it should cover at
            least four scrape intervals.
        staleness_s: signals whose newest sample is older than this count as stale.
        future_tolerance_s: a newest sample up to this many seconds ahead of the
            agent's clock counts as current; one further ahead makes the signals
            unhealthy (clock skew).
        inf_latency_s: value that replaces a +Inf latency quantile (a quantile in the +Inf bucket).
        queries: the PromQL templates, one per signal family.
    """

    url: str = "http://prometheus-operated.monitoring.svc:9090"
    timeout_s: float = 5.0
    read_budget_s: float = 10.0
    verify_tls: bool = True
    bearer_token_file: str = ""
    rate_window: str = "1m"
    staleness_s: float = 120.0
    future_tolerance_s: float = 30.0
    inf_latency_s: float = 600.0
    queries: QueryTemplates = field(default_factory=QueryTemplates)


@dataclass
class DiscoverySettings:
    """Rules that select the Deployments the agent manages.

    Attributes:
        namespaces: namespaces to look in; empty means all namespaces.
        label_selector: Deployments must match this selector.
        annotation: when set, Deployments must also carry this annotation with value "true".
        names: explicit ``namespace/name`` list; when set it replaces the selector.
    """

    namespaces: List[str] = field(default_factory=list)
    label_selector: str = "gpu-autoscaler.io/managed=true"
    annotation: str = ""
    names: List[str] = field(default_factory=list)


@dataclass
class SafetySettings:
    """Limits applied to every decision before anything is written (``agent/runtime/safety.py``).

    Attributes:
        max_scale_up_per_tick: most pods added to one Deployment per tick.
        max_scale_down_per_tick: most pods removed from one Deployment per tick.
        scale_down_stabilization_s: a scale-down goes only as low as the highest
            recommendation within this window, as the HPA's downscale stabilization does.
        allocation_change_cooldown_s: minimum time between two allocation changes of one Deployment.
        manual_edit_backoff_s: after someone else changed spec.replicas, the agent
            leaves the Deployment alone for this long.
        recover_after_ticks: healthy ticks needed before leaving the fallback rule.
        check_capacity: limit scale-ups and allocation changes to the free GPU slots.
        check_quota: limit them to the ResourceQuota headroom.
    """

    max_scale_up_per_tick: int = 4
    max_scale_down_per_tick: int = 1
    scale_down_stabilization_s: float = 300.0
    allocation_change_cooldown_s: float = 600.0
    manual_edit_backoff_s: float = 900.0
    recover_after_ticks: int = 2
    check_capacity: bool = True
    check_quota: bool = True


@dataclass
class FallbackSettings:
    """The HPA used while signals are missing, NaN or stale (``agent.baselines.hpa_baseline.HpaBaseline``).

    Attributes:
        metric: ``gpu_utilization`` (a 0..1 target) or ``requests_in_flight``
            (running plus waiting requests per Ready pod).
        target: per-pod average target of the metric.
        tolerance: the HPA tolerance; no change while |observed / target - 1| is within it.
        behavior: ``default`` for an HPA with ``behavior: {}``, ``legacy`` for one without.
        downscale_stabilization_s: the HPA's scale-down stabilization window.
    """

    metric: str = "gpu_utilization"
    target: float = 0.6
    tolerance: float = 0.1
    behavior: str = "default"
    downscale_stabilization_s: float = 300.0


@dataclass
class LeaderSettings:
    """Leader election through a coordination.k8s.io/v1 Lease; only the holder writes."""

    enabled: bool = True
    namespace: str = "gpu-autoscaler"
    name: str = "gpu-autoscaler-leader"
    identity: str = ""
    lease_duration_s: float = 15.0
    renew_period_s: float = 5.0


@dataclass
class TelemetrySettings:
    """The agent's own outputs.

    Attributes:
        metrics_port: port of the Prometheus endpoint; -1 disables it, 0 picks a free port.
        metrics_host: address the endpoint binds; the deployment manifest sets 0.0.0.0.
        events: write a Kubernetes Event for each change the agent makes.
        decision_log: JSONL file that gets one record per decision; empty writes none.
    """

    metrics_port: int = 9100
    metrics_host: str = "127.0.0.1"
    events: bool = True
    decision_log: str = ""


@dataclass
class NamingSettings:
    """GPU names on the cluster: node product labels and DRA productName attributes per catalog GPU."""

    node_labels: Dict[str, str] = field(default_factory=lambda: {
        "H100-80GB": "NVIDIA-H100-80GB-HBM3", "A100-80GB": "NVIDIA-A100-SXM4-80GB", "L40S-48GB": "NVIDIA-L40S"})
    dra_products: Dict[str, str] = field(default_factory=lambda: {
        "H100-80GB": "NVIDIA H100 80GB HBM3", "A100-80GB": "NVIDIA A100-SXM4-80GB", "L40S-48GB": "NVIDIA L40S"})


@dataclass
class RuntimeSettings:
    """Everything the controller loop needs besides the catalog, cluster and workload groups.

    Attributes:
        interval_s: wall-clock seconds between ticks.
        dry_run: compute, log and export decisions without writing anything.
        max_ticks: stop after this many ticks; 0 runs until SIGTERM or SIGINT.
    """

    interval_s: float = 15.0
    dry_run: bool = True
    max_ticks: int = 0
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    safety: SafetySettings = field(default_factory=SafetySettings)
    fallback: FallbackSettings = field(default_factory=FallbackSettings)
    leader: LeaderSettings = field(default_factory=LeaderSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    naming: NamingSettings = field(default_factory=NamingSettings)


def validate_settings(settings: RuntimeSettings) -> None:
    """Raise ValueError naming the first setting outside its valid range and the fix."""
    checks = [
        (settings.interval_s > 0, f"runtime.interval_s is {settings.interval_s}; use a positive number of seconds"),
        (settings.kubernetes.auth in ("auto", "in_cluster", "kubeconfig", "none"),
         f"runtime.kubernetes.auth {settings.kubernetes.auth!r} is invalid; use auto, in_cluster, kubeconfig or none"),
        (settings.kubernetes.dra_version in ("auto", "v1", "v1beta2", "v1beta1", "none"),
         f"runtime.kubernetes.dra_version {settings.kubernetes.dra_version!r} is invalid; "
         "use auto, v1, v1beta2, v1beta1 or none"),
        (settings.kubernetes.request_timeout_s > 0, "runtime.kubernetes.request_timeout_s must be above 0 seconds"),
        (settings.prometheus.staleness_s > 0, "runtime.prometheus.staleness_s must be above 0 seconds"),
        (settings.prometheus.timeout_s > 0, "runtime.prometheus.timeout_s must be above 0 seconds"),
        (settings.prometheus.read_budget_s > 0, "runtime.prometheus.read_budget_s must be above 0 seconds"),
        (settings.prometheus.future_tolerance_s >= 0,
         "runtime.prometheus.future_tolerance_s must be 0 or more seconds"),
        (settings.safety.max_scale_up_per_tick >= 1, "runtime.safety.max_scale_up_per_tick must be at least 1"),
        (settings.safety.max_scale_down_per_tick >= 1, "runtime.safety.max_scale_down_per_tick must be at least 1"),
        (settings.safety.recover_after_ticks >= 1, "runtime.safety.recover_after_ticks must be at least 1"),
        (settings.fallback.target > 0, f"runtime.fallback.target is {settings.fallback.target}; use a value above 0"),
        (settings.leader.renew_period_s < settings.leader.lease_duration_s,
         "runtime.leader.renew_period_s must be shorter than lease_duration_s, or the lease lapses between renewals"),
        (settings.telemetry.metrics_port >= -1, "runtime.telemetry.metrics_port must be -1 (off), 0 (any) or a port"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    for name in settings.discovery.names:
        if name.count("/") != 1:
            raise ValueError(f"runtime.discovery.names entry {name!r} is invalid; write it as namespace/name")
