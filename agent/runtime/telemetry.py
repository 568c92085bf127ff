"""The agent's own Prometheus metrics, its decision log, rate-limited logging and the redaction of credentials.

Metrics live in a private CollectorRegistry (several agents can run in one
test process) and are served by ``prometheus_client.start_http_server``.
Names use the ``gpu_autoscaler_`` prefix; ``deploy/grafana-dashboard.json``
charts them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)
REDACTED = "***"
PHASE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AgentMetrics:
    """Counters, gauges and histograms of the controller loop."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("namespace", "deployment")
        self.decisions = Counter("gpu_autoscaler_decisions_total", "Decisions per Deployment, by source and action.",
                                 labels + ("source", "action"), registry=self.registry)

        self.fallback_ticks = Counter("gpu_autoscaler_fallback_ticks_total",
                                      "Ticks a Deployment spent on a fallback, by reason.", labels + ("reason",),
                                      registry=self.registry)
        self.fallback_transitions = Counter("gpu_autoscaler_fallback_transitions_total",
                                            "Entries into and recoveries from the HPA fallback.",
                                            labels + ("transition",), registry=self.registry)
        self.fallback_active = Gauge("gpu_autoscaler_fallback_active", "1 while the Deployment is on the HPA rule.",
                                     labels, registry=self.registry)
        self.substitutions = Counter("gpu_autoscaler_signal_substitutions_total",
                                     "Signal values replaced by a documented default, by family and reason.",
                                     ("family", "reason"), registry=self.registry)

        self.safety_rules = Counter("gpu_autoscaler_safety_rule_total", "Decisions changed or blocked by a rule.",
                                    labels + ("rule",), registry=self.registry)
        self.writes = Counter("gpu_autoscaler_writes_total", "Writes to the Kubernetes API, by kind and result.",
                              ("kind", "result"), registry=self.registry)
        self.api_errors = Counter("gpu_autoscaler_api_errors_total", "Failed API calls, by API and HTTP code.",
                                  ("api", "code"), registry=self.registry)

        self.tick_seconds = Histogram("gpu_autoscaler_tick_duration_seconds", "Wall time of one controller tick.",
                                      buckets=PHASE_BUCKETS, registry=self.registry)
        self.phase_seconds = Histogram("gpu_autoscaler_phase_duration_seconds", "Wall time of each loop phase.",
                                       ("phase",), buckets=PHASE_BUCKETS, registry=self.registry)

        self.target_replicas = Gauge("gpu_autoscaler_target_replicas", "Replicas decided for the Deployment.",
                                     labels, registry=self.registry)
        self.target_option = Gauge("gpu_autoscaler_target_option_index", "Catalog index of the decided option.",
                                   labels, registry=self.registry)
        self.leader = Gauge("gpu_autoscaler_leader", "1 while this replica holds the Lease.", registry=self.registry)
        self.dry_run = Gauge("gpu_autoscaler_dry_run", "1 when decisions are not written.", registry=self.registry)
        self.managed = Gauge("gpu_autoscaler_managed_deployments", "Deployments managed this tick.",
                             registry=self.registry)
        self.last_tick = Gauge("gpu_autoscaler_last_tick_timestamp_seconds", "Unix time of the last finished tick.",
                               registry=self.registry)

        self._server: Any = None

    def serve(self, *, host: str, port: int) -> int:
        """Start the HTTP endpoint; return the bound port (useful with port 0)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound = int(server.server_address[1])
        log.info("agent metrics on http://%s:%d/metrics", host, bound)
        return bound

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Return a sample's current value (0 when absent); for tests and the session transcript."""
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else float(value)


class RepeatLimiter:
    """Lets a log line through the first time and then at most once per ``interval_s`` per key."""

    def __init__(self, interval_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[Any, float] = {}
        self.suppressed = 0

    def allow(self, key: Any) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self.suppressed += 1
            return False
        self._last[key] = now
        return True


class DecisionLog:
    """Appends one JSON record per decision to a JSONL file; an empty path disables it."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(record, sort_keys=True, default=str)
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def url_secrets(url: str) -> list[str]:
    """Return the user-info credentials of a URL (the password, or a lone user name), raw and percent-decoded."""
    parts = urlsplit(url)
    secret = parts.password if parts.password is not None else parts.username
    if not secret:
        return []
    return sorted({secret, unquote(secret)}, key=len, reverse=True)


def redact_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (or its whole user info when there is no password)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    netloc = f"{user}:{REDACTED}@{host}" if user else f"{REDACTED}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every occurrence of each secret replaced by ``***``; longer secrets go first."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
