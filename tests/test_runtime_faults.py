"""Faults of the live runtime: Lease loss, API 503 bursts, a slow Prometheus, clock skew, SIGTERM, broken objects.

Every test drives the real loop against the virtual cluster on 127.0.0.1,
and the Prometheus side is either ``ScriptedMetrics`` or ``FakePrometheus``,
a loopback server of Prometheus' instant-query API started here. ``WriteLog``
records every write request the virtual cluster receives, with the Lease
holder at that moment. Each test then checks the invariants: no write
without the Lease, and no replica count outside [min_replicas, max_replicas].
Those are 1 and 6 in the rehearsal config, whose quota of 6 GPUs admits 6 h100-1 pods.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from agent.runtime.app import build_agent
from agent.runtime.cluster_reader import ClusterReader
from agent.runtime.kube_client import KubeClient, KubeUnavailable, build_configuration
from agent.runtime.leader import LeaderElector, format_micro_time
from agent.runtime.live_signals import MetricsReader
from agent.runtime.promql import FAMILIES, QueryTemplates, render_queries
from agent.runtime.settings import (DiscoverySettings, KubernetesSettings, LeaderSettings, PrometheusSettings,
                                    RuntimeSettings)
from envs.config import build_cluster
from envs.virtual_cluster import GpuNaming, VirtualCluster, VirtualClusterSettings
from envs.virtual_cluster.rehearsal import DEPLOYMENT, NAMESPACE, ramp_series, rehearsal_config
from test_runtime_kube import RecordingSleep, client_for, post_faults
from test_runtime_loop import CFG, H100, KEY, SPEC, ScriptedMetrics, ScriptedPolicy, runtime_settings, spec_replicas

ROOT = Path(__file__).resolve().parent.parent
MIN_REPLICAS, MAX_REPLICAS = 1, 6
LEASE_NAMESPACE, LEASE_NAME = "gpu-autoscaler", "gpu-autoscaler-leader"
HEALTHY = {"request_rate": 5.0, "waiting_requests": 0.0, "running_requests": 4.0, "ttft_p95_s": 0.3,
           "mean_input_tokens": 1000.0, "mean_output_tokens": 200.0, "e2e_p95_s": 1.5, "kv_cache_usage": 0.2,
           "gpu_utilization": 0.9, "dropped_rate": 0.0}


# Virtual cluster helpers.

@pytest.fixture
def vc():
    cluster = VirtualCluster(SPEC, [ramp_series(ticks=60)], settings=VirtualClusterSettings(time_factor=0)).start()
    yield cluster
    cluster.stop()


def clear_faults(vc: VirtualCluster) -> None:
    vc.faults.clear()


def stored_deployment(vc: VirtualCluster, name: str = DEPLOYMENT) -> dict[str, Any]:
    return vc.store.get(vc.types["deployments"], namespace=NAMESPACE, name=name)


def replace_deployment(vc: VirtualCluster, deployment: dict[str, Any]) -> None:
    vc.store.replace(vc.types["deployments"], namespace=NAMESPACE, name=deployment["metadata"]["name"],
                     obj=deployment)


def scale_in_store(vc: VirtualCluster, replicas: int) -> None:
    """Set spec.replicas as another writer would, without going through the HTTP layer."""
    deployment = stored_deployment(vc)
    deployment["spec"]["replicas"] = replicas
    replace_deployment(vc, deployment)


def lease_holder(vc: VirtualCluster) -> str:
    try:
        lease = vc.store.get(vc.types["leases"], namespace=LEASE_NAMESPACE, name=LEASE_NAME)
    except Exception:  # noqa: BLE001 - no Lease yet
        return ""
    return (lease.get("spec") or {}).get("holderIdentity") or ""


def set_lease(vc: VirtualCluster, holder: str, *, renew_time: float, duration_s: int = 15) -> None:
    """Overwrite the leader Lease as another replica's update would."""
    lease = vc.store.get(vc.types["leases"], namespace=LEASE_NAMESPACE, name=LEASE_NAME)
    lease["spec"].update(holderIdentity=holder, renewTime=format_micro_time(renew_time),
                         leaseDurationSeconds=duration_s)
    vc.store.replace(vc.types["leases"], namespace=LEASE_NAMESPACE, name=LEASE_NAME, obj=lease)


@dataclass
class SentWrite:
    method: str
    path: str
    body: Any
    lease_holder: str
    authorization: str


class WriteLog:
    """Records every write request that reaches the virtual cluster's API, before fault injection."""

    def __init__(self, vc: VirtualCluster) -> None:
        self.writes: list[SentWrite] = []
        self.authorizations: set[str] = set()
        inner = vc.router.handle

        def handle(method: str, raw_path: str, *, headers: dict[str, str], body: Any):
            self.authorizations.add(headers.get("authorization", ""))
            is_admin = raw_path.startswith("/_")
            if method in ("POST", "PUT", "PATCH", "DELETE") and not is_admin and "/leases" not in raw_path:
                self.writes.append(SentWrite(method, raw_path, body, lease_holder(vc),
                                             headers.get("authorization", "")))
            return inner(method, raw_path, headers=headers, body=body)

        vc.router.handle = handle

    def scales(self) -> list[int]:
        return [w.body["spec"]["replicas"] for w in self.writes if w.path.split("?")[0].endswith("/scale")]

    def check_invariants(self, identity: str) -> None:
        for write in self.writes:
            assert write.lease_holder == identity, \
                f"{write.method} {write.path} was sent while the Lease named {write.lease_holder!r}"
        for replicas in self.scales():
            assert MIN_REPLICAS <= replicas <= MAX_REPLICAS, f"a /scale write requested {replicas} replicas"


# Agent helpers.

@pytest.fixture
def agents():
    """Collects the agents a test builds and shuts each one down at the end."""
    built: list[Any] = []
    yield built
    for agent in built:
        agent.shutdown()


def start_agent(agents: list, vc: VirtualCluster, tmp_path: Path, policy, *, metrics: Any = "scripted",
                cfg=CFG, **overrides):
    """Build an agent named "me" that holds the Lease; API retries sleep on a recording fake clock.

    ``metrics`` is "scripted" (ScriptedMetrics), "prometheus" (the real reader
    of ``runtime.prometheus.url``) or an object with ``read()``.
    """
    overrides.setdefault("leader__identity", "me")
    agent = build_agent(cfg, controller=policy, settings=runtime_settings(vc.url, tmp_path, **overrides))
    agents.append(agent)
    agent.kube.sleep = RecordingSleep()
    agent.kube.rand = lambda: 0.0
    if metrics == "scripted":
        agent.loop.metrics = ScriptedMetrics()
    elif metrics != "prometheus":
        agent.loop.metrics = metrics
    if agent.leader is not None:
        assert agent.leader.try_acquire_or_renew()
    return agent


def during_metrics_read(agent, action: Callable[[], None]) -> None:
    """Run ``action`` once, right after the next metrics read: after the cluster read, before any write."""
    inner = agent.loop.metrics.read
    pending = [action]

    def read():
        families = inner()
        if pending:
            pending.pop()()
        return families

    agent.loop.metrics.read = read


def decision_records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]


def wait_for(condition: Callable[[], bool], timeout_s: float, description: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {description}")


# A Prometheus stand-in on loopback.

class _PrometheusHandler(BaseHTTPRequestHandler):
    # HTTP/1.0 closes the connection after each response, so no kept-alive connection outlives stop().
    protocol_version = "HTTP/1.0"
    disable_nagle_algorithm = True
    fake: "FakePrometheus"  # set on the subclass FakePrometheus builds

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's method name
        parts = urlsplit(self.path)
        params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        code, body = self.fake.respond(parts.path, params, self.headers.get("Authorization", ""))
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting; that is what the slow cases test

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's parameter name
        pass


class FakePrometheus:
    """Serves ``/api/v1/query`` as Prometheus does, with healthy values for the rehearsal Deployment.

    ``delay_s`` delays every response. The newest vLLM sample lies
    ``sample_offset_s`` from the requested evaluation time. With ``user`` and
    ``password`` or ``token`` set, a request without those credentials gets
    401. ``raw_body`` replaces every response with those bytes.
    """

    def __init__(self, *, user: str = "", password: str = "", token: str = "") -> None:
        queries = render_queries(QueryTemplates(), window="1m")
        self.family_of = {text: family for family, text in queries.items()}
        self.values = dict(HEALTHY)
        self.delay_s = 0.0
        self.sample_offset_s = -1.0
        self.raw_body: bytes | None = None
        self.requests = 0
        self.authorized = 0
        self.unauthorized = 0
        self.accepted: set[str] = set()
        if user:
            self.accepted.add("Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        if token:
            self.accepted.add(f"Bearer {token}")
        self._lock = threading.Lock()
        handler = type("BoundHandler", (_PrometheusHandler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread: threading.Thread | None = None

    def url(self, userinfo: str = "") -> str:
        prefix = f"{userinfo}@" if userinfo else ""
        return f"http://{prefix}127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakePrometheus":
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread = None

    def respond(self, path: str, params: dict[str, str], authorization: str) -> tuple[int, Any]:
        with self._lock:
            self.requests += 1
            delay = self.delay_s
        if delay:
            time.sleep(delay)
        if self.accepted and authorization not in self.accepted:
            self.unauthorized += 1
            return 401, b"Unauthorized\n"
        self.authorized += 1
        if self.raw_body is not None:
            return 200, self.raw_body
        family = self.family_of.get(params.get("query", ""))
        if path != "/api/v1/query" or family is None:
            return 400, {"status": "error", "errorType": "bad_data", "error": "unknown query"}
        at = float(params.get("time", time.time()))
        value = at + self.sample_offset_s if family == "sample_time" else self.values[family]
        series = {"metric": {"namespace": NAMESPACE, "deployment": DEPLOYMENT}, "value": [at, repr(float(value))]}
        return 200, {"status": "success", "data": {"resultType": "vector", "result": [series]}}


@pytest.fixture
def prometheus():
    server = FakePrometheus().start()
    yield server
    server.stop()


# The Lease lost in the middle of a tick.

def test_lease_taken_mid_tick_blocks_write(vc, agents, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100))
    writes = WriteLog(vc)
    agent.loop.tick()
    assert spec_replicas(vc) == 3

    # Another replica takes the Lease after the signals are read; the renewal thread has not noticed yet.
    agent.loop.controller.replicas = 5
    during_metrics_read(agent, lambda: set_lease(vc, "other", renew_time=time.time()))
    decisions = agent.loop.tick()
    assert decisions[0].replicas == 5
    assert spec_replicas(vc) == 3
    assert decision_records(tmp_path)[-1]["outcome"] == "not_leader"
    assert "Lease gpu-autoscaler/gpu-autoscaler-leader lost by me: the Lease now names other" in caplog.text
    assert "changes not written because this replica does not hold the Lease" in caplog.text
    assert not agent.leader.is_leader()

    # The other replica scales to 4 and hands the Lease back; 4 is not a manual edit, and writing resumes.
    scale_in_store(vc, 4)
    set_lease(vc, "", renew_time=time.time(), duration_s=1)
    assert agent.leader.try_acquire_or_renew()
    decisions = agent.loop.tick()
    assert "manual_edit" not in decisions[0].rules
    assert spec_replicas(vc) == 5
    assert writes.scales() == [3, 5]
    writes.check_invariants("me")


def test_lease_renewal_failure_stops_writes(vc, agents, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100))
    clock = {"t": time.time()}
    agent.leader.clock = lambda: clock["t"]
    assert agent.leader.try_acquire_or_renew()
    writes = WriteLog(vc)
    post_faults(vc.url, [{"status": 503, "count": -1, "path_contains": "/leases"}])

    def renewal_fails_past_deadline() -> None:
        # 11 s after the last renewal: past its 15 - 5 = 10 s of validity.
        clock["t"] += 11
        assert not agent.leader.try_acquire_or_renew()

    during_metrics_read(agent, renewal_fails_past_deadline)
    agent.loop.tick()
    assert spec_replicas(vc) == 1
    assert decision_records(tmp_path)[-1]["outcome"] == "not_leader"
    assert "renewal failed" in caplog.text
    assert "this replica does not hold the Lease" in caplog.text

    clear_faults(vc)
    assert agent.leader.try_acquire_or_renew()
    agent.loop.tick()
    assert spec_replicas(vc) == 3
    # Logged at the first tick, and again when writing resumed.
    assert caplog.text.count("this replica holds the Lease; decisions are written") == 2
    writes.check_invariants("me")


def test_lease_lost_between_write_retries(vc, agents, tmp_path, caplog):
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100))
    writes = WriteLog(vc)
    post_faults(vc.url, [{"status": 503, "count": 1, "methods": ["PATCH"], "path_contains": "/scale"}])

    def takeover_during_backoff(_seconds: float) -> None:
        set_lease(vc, "other", renew_time=time.time())
        agent.leader.try_acquire_or_renew()

    agent.kube.sleep = takeover_during_backoff
    agent.loop.tick()
    assert spec_replicas(vc) == 1
    # Only the first attempt went out, while the Lease was held; the retry was never sent.
    assert writes.scales() == [3]
    assert decision_records(tmp_path)[-1]["outcome"] == "not_leader"
    assert "scale write stopped: patch deployments/scale not sent" in caplog.text
    assert agent.telemetry.sample("gpu_autoscaler_writes_total", {"kind": "scale", "result": "not_leader"}) == 1.0
    writes.check_invariants("me")


# Bursts of 503 from the API server.

def test_api_503_burst_waits_retry_after(vc, agents, tmp_path):
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100))
    writes = WriteLog(vc)
    post_faults(vc.url, [{"status": 503, "count": 2, "retry_after_s": 2, "path_contains": "/deployments"}])
    agent.loop.tick()
    assert agent.kube.sleep.calls == [2.0, 2.0]
    assert spec_replicas(vc) == 3
    writes.check_invariants("me")


def test_api_503_storm_holds_then_recovers(vc, agents, tmp_path, caplog):
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100), kubernetes__max_retries=2)
    agent.loop.tick()
    assert spec_replicas(vc) == 3
    writes = WriteLog(vc)
    post_faults(vc.url, [{"status": 503, "count": -1, "path_contains": "/apis/apps/v1"}])
    agent.loop.controller.replicas = 6
    for _ in range(3):
        decisions = agent.loop.tick()
        assert decisions[0].source == "hold"
        assert decisions[0].rules == ["api_unavailable"]
        assert decisions[0].replicas == 3
    # Each tick: the Deployment list, then two retries after Retry-After: 1, then the hold.
    assert agent.kube.sleep.calls == [1.0] * 6
    assert writes.writes == []
    assert "Kubernetes API unavailable" in caplog.text
    labels = {"namespace": NAMESPACE, "deployment": DEPLOYMENT, "reason": "kubernetes_unavailable"}
    assert agent.telemetry.sample("gpu_autoscaler_fallback_ticks_total", labels) == 3.0

    clear_faults(vc)
    decisions = agent.loop.tick()
    assert decisions[0].source == "policy"
    assert spec_replicas(vc) == 6
    writes.check_invariants("me")


def test_api_503_on_scale_write(vc, agents, tmp_path, caplog):
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100), kubernetes__max_retries=2)
    writes = WriteLog(vc)
    post_faults(vc.url, [{"status": 503, "count": -1, "methods": ["PATCH"], "path_contains": "/scale"}])
    agent.loop.tick()
    assert spec_replicas(vc) == 1
    assert writes.scales() == [3, 3, 3]
    assert decision_records(tmp_path)[-1]["outcome"] == "error 503"
    assert "scale write failed" in caplog.text

    clear_faults(vc)
    agent.loop.tick()
    assert spec_replicas(vc) == 3
    writes.check_invariants("me")


def test_retry_after_limits_for_503(vc):
    sleep = RecordingSleep()
    kube = client_for(vc, sleep)
    post_faults(vc.url, [{"status": 503, "count": 1, "retry_after_s": 120}])
    with pytest.raises(KubeUnavailable, match="max_retry_after_s"):
        kube.list_nodes()
    assert sleep.calls == []

    # A 503 without Retry-After falls back to the transient backoff: 0.2 s, then 0.4 s.
    post_faults(vc.url, [{"status": 503, "count": 2, "retry_after_s": None}])
    kube.list_nodes()
    assert sleep.calls == [0.2, 0.4]


@pytest.mark.parametrize("retry_after", [-1, 1.5, "1", True], ids=["negative", "fraction", "string", "bool"])
def test_fault_rule_rejects_invalid_retry_after(vc, retry_after):
    with pytest.raises(urllib.error.HTTPError) as caught:
        post_faults(vc.url, [{"status": 503, "retry_after_s": retry_after}])
    assert caught.value.code == 400
    assert "retry_after_s" in json.loads(caught.value.read())["message"]
    assert vc.faults.rules() == []


# A slow Prometheus.

def test_slow_prometheus_times_out_then_recovers(vc, agents, prometheus, tmp_path, caplog):
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100), metrics="prometheus",
                        prometheus__url=prometheus.url(), prometheus__timeout_s=0.3)
    writes = WriteLog(vc)
    prometheus.delay_s = 2.0
    started = time.monotonic()
    decisions = agent.loop.tick()
    took = time.monotonic() - started
    read_s = agent.telemetry.sample("gpu_autoscaler_phase_duration_seconds_sum", {"phase": "read_metrics"})
    # One query timed out after 0.3 s and the other 10 were not sent; 11 slow responses would take 22 s.
    assert prometheus.requests == 1
    assert 0.3 <= read_s < 0.6
    assert took < 1.3
    assert decisions[0].source == "fallback"
    assert "query request_rate to Prometheus at" in caplog.text
    assert "timed out after 0.3 s" in caplog.text
    assert spec_replicas(vc) == 1

    prometheus.delay_s = 0.0
    sources = [agent.loop.tick()[0].source for _ in range(2)]
    assert sources == ["fallback", "policy"]
    assert spec_replicas(vc) == 3
    writes.check_invariants("me")


def test_slow_responses_stop_at_read_budget(vc, agents, prometheus, tmp_path, caplog):
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100), metrics="prometheus",
                        prometheus__url=prometheus.url(), prometheus__timeout_s=1.0,
                        prometheus__read_budget_s=0.5)
    prometheus.delay_s = 0.3
    decisions = agent.loop.tick()
    read_s = agent.telemetry.sample("gpu_autoscaler_phase_duration_seconds_sum", {"phase": "read_metrics"})
    # Each response is within the 1 s timeout, but 11 of them would take 3.3 s; the 0.5 s budget stops the read.
    assert prometheus.requests in (1, 2)
    assert 0.5 <= read_s < 0.9
    assert decisions[0].source == "fallback"
    assert "families not read this tick" in caplog.text


def test_malformed_prometheus_body_is_a_failed_query(prometheus, caplog):
    reader = MetricsReader(PrometheusSettings(url=prometheus.url(), timeout_s=1.0))
    prometheus.raw_body = b"[]"
    try:
        results = reader.read()
    finally:
        reader.close()
    assert set(results) == set(FAMILIES)
    assert all(not result.ok for result in results.values())
    assert "TypeError" in results["request_rate"].error
    assert "query request_rate failed" in caplog.text


# Clock skew.

def test_sample_clock_skew_falls_back(vc, agents, prometheus, tmp_path, caplog):
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100), metrics="prometheus",
                        prometheus__url=prometheus.url(), prometheus__staleness_s=60,
                        prometheus__future_tolerance_s=30)
    prometheus.sample_offset_s = 20.0
    assert agent.loop.tick()[0].source == "policy"
    assert decision_records(tmp_path)[-1]["health"] == ""

    prometheus.sample_offset_s = 600.0
    assert agent.loop.tick()[0].source == "fallback"
    health = decision_records(tmp_path)[-1]["health"]
    assert health.startswith("clock skew: newest sample is 600 s ahead of the agent's clock (tolerance 30 s)")
    assert "clock skew" in caplog.text
    labels = {"namespace": NAMESPACE, "deployment": DEPLOYMENT, "reason": "clock skew"}
    assert agent.telemetry.sample("gpu_autoscaler_fallback_ticks_total", labels) == 1.0

    prometheus.sample_offset_s = -600.0
    assert agent.loop.tick()[0].source == "fallback"
    assert decision_records(tmp_path)[-1]["health"] == "stale: newest sample is 600 s old (limit 60 s)"

    prometheus.sample_offset_s = -1.0
    assert [agent.loop.tick()[0].source for _ in range(2)] == ["fallback", "policy"]


def lease_settings(name: str) -> LeaderSettings:
    return LeaderSettings(namespace=LEASE_NAMESPACE, name=name, lease_duration_s=15, renew_period_s=5)


def test_lease_renewed_in_future_expires_on_local_clock(vc, caplog):
    now = {"t": 1_900_000_000.0}
    kube = client_for(vc)
    # A holder whose clock ran an hour ahead renewed once and stopped.
    kube.create_lease(LEASE_NAMESPACE, {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "skewed"},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15,
                 "renewTime": format_micro_time(now["t"] + 3600), "acquireTime": format_micro_time(now["t"] + 3600)},
    })
    me = LeaderElector(kube, lease_settings("skewed"), identity="me", clock=lambda: now["t"])
    assert not me.try_acquire_or_renew()
    assert "renewTime of holder other is 3600 s ahead of this replica's clock" in caplog.text
    now["t"] += 14
    assert not me.try_acquire_or_renew()
    now["t"] += 2
    assert me.try_acquire_or_renew()
    assert kube.get_lease(LEASE_NAMESPACE, "skewed")["spec"]["holderIdentity"] == "me"


def test_lease_renewed_in_past_stays_with_live_holder(vc):
    now = {"t": 1_900_000_000.0}
    kube = client_for(vc)
    other = LeaderElector(kube, lease_settings("behind"), identity="other", clock=lambda: now["t"] - 3600)
    me = LeaderElector(kube, lease_settings("behind"), identity="me", clock=lambda: now["t"])
    assert other.try_acquire_or_renew()
    # Half a minute of renewals every 5 s, each with a renewTime an hour in this replica's past.
    for _ in range(6):
        assert not me.try_acquire_or_renew()
        now["t"] += 5
        assert other.try_acquire_or_renew()
    assert not me.try_acquire_or_renew()
    assert kube.get_lease(LEASE_NAMESPACE, "behind")["spec"]["holderIdentity"] == "other"

    # The holder stops renewing: 15 s after the last change this replica saw, the Lease is free.
    now["t"] += 14
    assert not me.try_acquire_or_renew()
    now["t"] += 2
    assert me.try_acquire_or_renew()


# SIGTERM during a write.

DRIVER = '''
import logging
import sys
from pathlib import Path

sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from agent.runtime.app import build_agent, run_until_signalled
from test_runtime_loop import CFG, H100, ScriptedMetrics, ScriptedPolicy, runtime_settings

logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
settings = runtime_settings(sys.argv[2], Path(sys.argv[3]), interval_s=0.2, leader__identity="driver")
agent = build_agent(CFG, controller=ScriptedPolicy(4, H100), settings=settings)
agent.loop.metrics = ScriptedMetrics()
run_until_signalled(agent)
'''


def test_sigterm_during_scale_patch(vc, tmp_path):
    writes = WriteLog(vc)
    in_flight = threading.Event()

    def hold_request(seconds: float) -> None:
        in_flight.set()
        time.sleep(seconds)

    vc.faults._sleep = hold_request
    post_faults(vc.url, [{"latency_s": 1.0, "count": 1, "methods": ["PATCH"], "path_contains": "/scale"}])
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    process = subprocess.Popen([sys.executable, str(driver), str(ROOT), vc.url, str(tmp_path)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert in_flight.wait(60), "the agent sent no /scale PATCH within 60 s"
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        stop_s = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)

    assert process.returncode == 0, output
    assert "received SIGTERM" in output
    assert "Traceback" not in output
    assert "Lease gpu-autoscaler/gpu-autoscaler-leader released by driver" in output
    assert "controller loop stopped after 1 ticks" in output
    # The PATCH in flight finished (held 1 s), nothing else was started, and the Lease was released.
    assert stop_s < 1.0 + 5.0
    assert spec_replicas(vc) == 4
    assert writes.scales() == [4]
    assert lease_holder(vc) == ""
    writes.check_invariants("driver")


def two_deployment_config():
    cfg = rehearsal_config()
    second = OmegaConf.to_container(cfg.workload.deployments[0])
    second["name"] = f"{DEPLOYMENT}-b"
    cfg.workload.deployments.append(second)
    return cfg


class TwoDeploymentMetrics(ScriptedMetrics):
    """Healthy families for both Deployments of ``two_deployment_config``."""

    def read(self):
        families = super().read()
        for result in families.values():
            result.values[(NAMESPACE, f"{DEPLOYMENT}-b")] = result.values[KEY]
        return families


def test_stop_during_write_starts_no_other(agents, tmp_path, caplog):
    cfg = two_deployment_config()
    spec = build_cluster(cfg)
    with VirtualCluster(spec, [ramp_series(ticks=60)] * 2, settings=VirtualClusterSettings(time_factor=0)) as vc:
        agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100), cfg=cfg, metrics=TwoDeploymentMetrics())
        writes = WriteLog(vc)
        stop = threading.Event()

        def stop_while_held(seconds: float) -> None:
            stop.set()
            time.sleep(seconds)

        vc.faults._sleep = stop_while_held
        post_faults(vc.url, [{"latency_s": 0.3, "count": 1, "methods": ["PATCH"], "path_contains": "/scale"}])
        agent.loop.run(stop)

        assert agent.loop.tick_number == 1
        assert stored_deployment(vc)["spec"]["replicas"] == 3
        assert stored_deployment(vc, f"{DEPLOYMENT}-b")["spec"]["replicas"] == 1
        outcomes = {record["deployment"]: record["outcome"] for record in decision_records(tmp_path)}
        assert outcomes == {DEPLOYMENT: "written", f"{DEPLOYMENT}-b": "stopping"}
        assert "1 changes not written because the agent is stopping" in caplog.text
        writes.check_invariants("me")


def test_timed_out_write_applied_later_is_own(vc, agents, tmp_path):
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(2, H100), kubernetes__request_timeout_s=0.2,
                        kubernetes__max_retries=0)
    writes = WriteLog(vc)
    agent.loop.tick()
    assert spec_replicas(vc) == 2

    # The server applies the next write 0.6 s later, after the agent gave up waiting for the response.
    post_faults(vc.url, [{"latency_s": 0.6, "count": 1, "methods": ["PATCH"], "path_contains": "/scale"}])
    agent.loop.controller.replicas = 3
    agent.loop.tick()
    assert decision_records(tmp_path)[-1]["outcome"] == "error 0"
    wait_for(lambda: spec_replicas(vc) == 3, 5, "the delayed PATCH to be applied")

    agent.loop.controller.replicas = 4
    decisions = agent.loop.tick()
    assert "manual_edit" not in decisions[0].rules
    assert spec_replicas(vc) == 4
    writes.check_invariants("me")


# Kubernetes objects deleted mid-tick or with missing fields.

def test_deployment_deleted_between_read_and_write(vc, agents, tmp_path, caplog):
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100))
    writes = WriteLog(vc)
    saved = stored_deployment(vc)
    during_metrics_read(agent, lambda: vc.store.delete(vc.types["deployments"], namespace=NAMESPACE,
                                                       name=DEPLOYMENT))
    agent.loop.tick()
    assert decision_records(tmp_path)[-1]["outcome"] == "not_found"
    assert "scale write failed because the object is gone" in caplog.text

    assert agent.loop.tick() == []
    assert "is in the workload config but was not discovered" in caplog.text

    vc.store.create(vc.types["deployments"], namespace=NAMESPACE, obj=saved)
    agent.loop.tick()
    assert spec_replicas(vc) == 3
    writes.check_invariants("me")


def test_deployment_without_replicas_or_status_held(vc, agents, tmp_path, caplog):
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100))
    writes = WriteLog(vc)
    deployment = stored_deployment(vc)
    del deployment["spec"]["replicas"]
    deployment.pop("status", None)
    replace_deployment(vc, deployment)

    assert agent.loop.tick() == []
    assert "spec.replicas is None, not an integer of 0 or more; it is not managed this tick" in caplog.text
    assert writes.writes == []

    # Without status but with replicas, the Deployment is managed: the reader never reads status.
    deployment = stored_deployment(vc)
    deployment["spec"]["replicas"] = 2
    replace_deployment(vc, deployment)
    assert "status" not in stored_deployment(vc)
    agent.loop.tick()
    assert spec_replicas(vc) == 3
    writes.check_invariants("me")


class ListOnlyKube:
    """Stands in for KubeClient: returns the given Deployments and empty lists for everything else."""

    def __init__(self, deployments: list[Any]) -> None:
        self.deployments = deployments

    def list_deployments(self, namespace: str = "", label_selector: str = "") -> list[Any]:
        return self.deployments

    def __getattr__(self, name: str) -> Callable[..., list]:
        return lambda *args, **kwargs: []


def valid_deployment(**changes: Any) -> dict[str, Any]:
    deployment = {"metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "resourceVersion": "7"},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": DEPLOYMENT}}, "template": {}}}
    for path, value in changes.items():
        section, key = path.split("__")
        if value is None:
            deployment[section].pop(key, None)
        else:
            deployment[section][key] = value
    return deployment


@pytest.mark.parametrize("deployment, problem", [
    (valid_deployment(metadata__resourceVersion=None), "metadata.resourceVersion is missing"),
    (valid_deployment(spec__replicas="2"), "spec.replicas is '2', not an integer"),
    (valid_deployment(spec__replicas=-1), "spec.replicas is -1, not an integer"),
    (valid_deployment(spec__replicas=True), "spec.replicas is True, not an integer"),
    (valid_deployment(spec__template=["not", "an", "object"]), "spec.template is not an object"),
    ({"metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "resourceVersion": "7"}}, "spec is missing"),
], ids=["no-resource-version", "replicas-string", "replicas-negative", "replicas-bool", "template-list",
        "no-spec"])
def test_reader_skips_invalid_deployment(deployment, problem, caplog):
    reader = ClusterReader(ListOnlyKube([deployment]), cluster=SPEC, discovery=DiscoverySettings(),
                           naming=GpuNaming(), dra_version=None)
    state = reader.read()
    assert state.deployments == {}
    assert problem in caplog.text
    assert "was not discovered" not in caplog.text


def test_reader_keeps_valid_deployment():
    reader = ClusterReader(ListOnlyKube([valid_deployment()]), cluster=SPEC, discovery=DiscoverySettings(),
                           naming=GpuNaming(), dra_version=None)
    state = reader.read()
    assert state.deployments[KEY].spec_replicas == 2
    assert state.deployments[KEY].resource_version == "7"


# Credentials never reach the logs, and TLS verification is on by default.

def write_kubeconfig(path: Path, *, server: str, token: str = "", insecure: bool = False) -> Path:
    cluster: dict[str, Any] = {"server": server}
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    user = {"token": token} if token else {}
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "virtual",
        "clusters": [{"name": "virtual", "cluster": cluster}],
        "users": [{"name": "agent", "user": user}],
        "contexts": [{"name": "virtual", "context": {"cluster": "virtual", "user": "agent"}}],
    }), encoding="utf-8")
    return path


def test_credentials_never_logged(vc, agents, tmp_path, caplog, capfd):
    token = f"kube-token-{uuid.uuid4().hex}"
    password = f"prom-pass-{uuid.uuid4().hex}"
    secrets = (token, password)
    prometheus = FakePrometheus(user="agent", password=password).start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server=vc.url, token=token)
    caplog.set_level(logging.DEBUG)
    try:
        agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100), metrics="prometheus",
                            kubernetes__auth="kubeconfig", kubernetes__kubeconfig=str(kubeconfig),
                            kubernetes__server="", kubernetes__max_retries=1,
                            prometheus__url=prometheus.url(f"agent:{password}"), prometheus__timeout_s=0.3)
        # Building a kubernetes client Configuration sets urllib3's logger to WARNING; undo that.
        for name in ("urllib3", "kubernetes", "requests"):
            logging.getLogger(name).setLevel(logging.DEBUG)
        writes = WriteLog(vc)

        # Both credentials are in use: the healthy tick is written.
        assert agent.loop.tick()[0].source == "policy"
        assert spec_replicas(vc) == 3
        assert prometheus.authorized == len(FAMILIES)
        assert prometheus.unauthorized == 0
        assert f"Bearer {token}" in writes.authorizations

        # Failures that put URLs and error texts into logs, the decision log and Events.
        prometheus.accepted = {"Basic d3Jvbmc="}
        agent.loop.tick()
        prometheus.accepted = set()
        prometheus.delay_s = 1.0
        agent.loop.tick()
        prometheus.stop()
        agent.loop.tick()
        post_faults(vc.url, [{"status": 503, "count": -1, "path_contains": "/apis/apps/v1"}])
        agent.loop.tick()
        clear_faults(vc)
        agent.loop.tick()
    finally:
        prometheus.stop()

    assert "HTTP Status Code 401" in caplog.text
    assert "query request_rate to Prometheus at" in caplog.text
    assert "timed out after 0.3 s" in caplog.text
    assert f"Prometheus at http://agent:***@127.0.0.1:{prometheus.server.server_address[1]} is unreachable" \
        in caplog.text
    assert "Kubernetes API unavailable" in caplog.text
    records = (tmp_path / "decisions.jsonl").read_text()
    assert "agent:***@" in records
    events = json.dumps(vc.store.list(vc.types["events"], NAMESPACE))
    assert "FallbackActive" in events
    captured = capfd.readouterr()
    for secret in secrets:
        assert secret not in caplog.text
        assert secret not in captured.out + captured.err
        assert secret not in records
        assert secret not in events


def test_prometheus_bearer_token_never_logged(tmp_path, caplog):
    token = f"prom-token-{uuid.uuid4().hex}"
    (tmp_path / "token").write_text(token + "\n", encoding="utf-8")
    prometheus = FakePrometheus(token=token).start()
    caplog.set_level(logging.DEBUG)
    reader = MetricsReader(PrometheusSettings(url=prometheus.url(), bearer_token_file=str(tmp_path / "token"),
                                              timeout_s=0.3))
    try:
        assert all(result.ok for result in reader.read().values())
        prometheus.accepted = {"Bearer another"}
        assert not reader.read()["request_rate"].ok
        prometheus.stop()
        assert "is unreachable" in reader.read()["request_rate"].error
    finally:
        reader.close()
        prometheus.stop()
    assert "HTTP Status Code 401" in caplog.text
    assert token not in caplog.text


def test_tls_verification_on_by_default(tmp_path):
    assert RuntimeSettings().kubernetes.verify_tls is True
    assert RuntimeSettings().prometheus.verify_tls is True

    # A kubeconfig with insecure-skip-tls-verify does not turn verification off; only the setting does.
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server="https://127.0.0.1:6443", token="t",
                                  insecure=True)
    configuration = build_configuration(KubernetesSettings(auth="kubeconfig", kubeconfig=str(kubeconfig)))
    assert configuration.verify_ssl is True
    kube = KubeClient(KubernetesSettings(auth="kubeconfig", kubeconfig=str(kubeconfig)))
    try:
        assert kube.api_client.rest_client.pool_manager.connection_pool_kw["cert_reqs"] == ssl.CERT_REQUIRED
    finally:
        kube.close()
    off = build_configuration(KubernetesSettings(auth="kubeconfig", kubeconfig=str(kubeconfig), verify_tls=False))
    assert off.verify_ssl is False

    reader = MetricsReader(PrometheusSettings(url="https://127.0.0.1:9091"))
    assert reader._client._session.verify is True
    reader.close()
    reader = MetricsReader(PrometheusSettings(url="https://127.0.0.1:9091", verify_tls=False))
    assert reader._client._session.verify is False
    reader.close()


# The invariants over a run with every fault at once.

def test_invariants_through_mixed_faults(vc, agents, prometheus, tmp_path):
    rng = np.random.default_rng(7)
    agent = start_agent(agents, vc, tmp_path, ScriptedPolicy(3, H100), metrics="prometheus",
                        prometheus__url=prometheus.url(), prometheus__timeout_s=0.2, kubernetes__max_retries=1)
    writes = WriteLog(vc)
    faults = [
        [{"status": 503, "count": 2, "path_contains": "/apis/apps/v1"}],
        [{"status": 503, "count": -1, "methods": ["PATCH"], "path_contains": "/scale"}],
        [{"status": 409, "count": 1, "methods": ["PATCH"], "path_contains": "/scale"}],
        [],
    ]
    for step in range(8):
        # The policy proposes 0 to 20 replicas while the cluster and Prometheus misbehave in turn.
        agent.loop.controller.replicas = int(rng.integers(0, 21))
        prometheus.delay_s = 0.3 if step % 4 == 1 else 0.0
        prometheus.sample_offset_s = 900.0 if step % 3 == 2 else -1.0
        clear_faults(vc)
        if faults[step % len(faults)]:
            post_faults(vc.url, faults[step % len(faults)])
        agent.loop.tick()
        vc.step()
        assert MIN_REPLICAS <= spec_replicas(vc) <= MAX_REPLICAS
    assert len(writes.scales()) >= 3
    assert all(replicas >= MIN_REPLICAS for replicas in writes.scales())
    writes.check_invariants("me")
