"""End to end: the agent, a real Prometheus server and the virtual cluster, in sped-up real time.

The virtual cluster runs one 15 s simulator tick per wall second, Prometheus
scrapes it every second, and the agent ticks every second with a 5 s rate
window. A fixed policy (level 0.65 utilisation, option a100-1) makes the
expected behaviour deterministic: switch from h100-1 to a100-1, then scale up
with the rising traffic until max_replicas and the quota stop it. Along the
way the test injects 409, 429 and 500 responses, a Kubernetes API outage, and a
Prometheus stop and restart.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from typing import Callable

import pytest

from agent.runtime.app import build_agent
from agent.runtime.rehearsal import write_fixed_policy
from agent.runtime.settings import RuntimeSettings
from envs.config import build_cluster
from envs.virtual_cluster import VirtualCluster, VirtualClusterSettings
from envs.virtual_cluster.rehearsal import LocalPrometheus, find_prometheus
from envs.virtual_cluster.rehearsal import DEPLOYMENT, NAMESPACE, ramp_series, rehearsal_config

MAX_REPLICAS = 6
QUOTA_GPUS = 6
LABELS = {"namespace": NAMESPACE, "deployment": DEPLOYMENT}


@pytest.fixture
def prometheus_binary() -> str:
    binary = find_prometheus()
    if binary is None:
        message = "the prometheus binary is not installed; run `apt-get install prometheus`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def post(url: str, body, method: str = "POST") -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


class Watcher(threading.Thread):
    """Samples the virtual cluster every 0.2 s and keeps the highest replica count and quota usage seen."""

    def __init__(self, vc: VirtualCluster) -> None:
        super().__init__(daemon=True)
        self.vc = vc
        self.stop = threading.Event()
        self.max_replicas = 0
        self.max_quota_used = 0.0

    def run(self) -> None:
        while not self.stop.wait(0.2):
            snapshot = self.vc.driver.snapshot()
            self.max_replicas = max(self.max_replicas, snapshot["deployments"][0]["desired"])
            deployment = self.vc.store.get(self.vc.types["deployments"], namespace=NAMESPACE, name=DEPLOYMENT)
            self.max_replicas = max(self.max_replicas, deployment["spec"]["replicas"])
            self.max_quota_used = max([self.max_quota_used, *snapshot["quota_used"].values()])


@pytest.mark.prometheus
def test_agent_end_to_end(prometheus_binary, tmp_path):
    cfg = rehearsal_config(max_replicas=MAX_REPLICAS, quota_gpus=QUOTA_GPUS)
    cluster = build_cluster(cfg)
    checkpoint = write_fixed_policy(tmp_path / "policy", cluster.catalog, level=4, option="a100-1")
    cfg.checkpoint = str(checkpoint)
    cfg.device = "cpu"
    traffic = ramp_series(ticks=200, start_rps=2.0, peak_rps=30.0, ramp_ticks=25)

    with VirtualCluster(cluster, [traffic], settings=VirtualClusterSettings(time_factor=15)) as vc:
        prometheus = LocalPrometheus(targets=[vc.url.removeprefix("http://")], storage=tmp_path / "prometheus",
                                     binary=prometheus_binary).start()
        settings = RuntimeSettings(interval_s=1.0, dry_run=False)
        settings.kubernetes.auth = "none"
        settings.kubernetes.server = vc.url
        settings.kubernetes.request_timeout_s = 5
        settings.prometheus.url = prometheus.url
        settings.prometheus.rate_window = "5s"
        settings.prometheus.staleness_s = 10
        settings.telemetry.metrics_port = 0
        settings.telemetry.decision_log = str(tmp_path / "decisions.jsonl")
        settings.leader.lease_duration_s = 10
        settings.leader.renew_period_s = 2
        # Every scale write first meets a conflict, then a rate limit, then a server error.
        post(vc.url + "/_faults", [
            {"status": 409, "count": 1, "methods": ["PATCH"], "path_contains": "/scale"},
            {"status": 429, "count": 1, "retry_after_s": 1, "methods": ["PATCH"], "path_contains": "/scale"},
            {"status": 500, "count": 1, "methods": ["PATCH"], "path_contains": "/scale"},
        ])
        agent = build_agent(cfg, settings=settings)
        stop = threading.Event()
        runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        watcher = Watcher(vc)
        watcher.start()
        runner.start()
        metric = agent.telemetry.sample
        try:
            # Phase 1: the allocation change and the scale-up through the injected faults.
            wait_for(lambda: vc.driver.snapshot()["deployments"][0]["option"] == "a100-1", 20, "the a100-1 rollout")
            wait_for(lambda: watcher.max_replicas >= 4, 30, "a scale-up to 4 replicas")
            injected = post(vc.url + "/_faults", None, method="GET")["injected"]
            assert injected == {"409": 1, "429": 1, "500": 1}
            assert metric("gpu_autoscaler_writes_total", {"kind": "scale", "result": "ok"}) >= 1
            assert metric("gpu_autoscaler_api_errors_total", {"api": "kubernetes", "code": "429"}) == 1

            # Phase 2: a Kubernetes API outage; the agent keeps every Deployment as it is, then resumes.
            post(vc.url + "/_faults", {"status": 503, "count": -1, "path_contains": "/apis/apps/v1"})
            outage = {**LABELS, "reason": "kubernetes_unavailable"}
            wait_for(lambda: metric("gpu_autoscaler_fallback_ticks_total", outage) >= 1, 15, "a hold during the outage")
            post(vc.url + "/_faults", None, method="DELETE")
            ticks_after = metric("gpu_autoscaler_tick_duration_seconds_count")
            wait_for(lambda: metric("gpu_autoscaler_tick_duration_seconds_count") >= ticks_after + 2, 15,
                     "two full ticks after the outage")

            # Phase 3: Prometheus stops; the HPA fallback takes over; Prometheus returns; the policy resumes.
            prometheus.stop()
            wait_for(lambda: metric("gpu_autoscaler_fallback_active", LABELS) == 1.0, 15, "the fallback")
            prometheus.start()
            wait_for(lambda: metric("gpu_autoscaler_fallback_active", LABELS) == 0.0, 30, "recovery")
            recovered = {**LABELS, "transition": "recovered"}
            assert metric("gpu_autoscaler_fallback_transitions_total", recovered) >= 1
            with urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=5) as response:
                assert "gpu_autoscaler_phase_duration_seconds_bucket" in response.read().decode()
        finally:
            stop.set()
            runner.join(timeout=30)
            watcher.stop.set()
            watcher.join(timeout=5)
            prometheus.stop()

        assert not runner.is_alive()
        assert watcher.max_replicas <= MAX_REPLICAS
        assert watcher.max_quota_used <= QUOTA_GPUS
        lease = vc.store.get(vc.types["leases"], namespace="gpu-autoscaler", name="gpu-autoscaler-leader")
        assert lease["spec"]["holderIdentity"] == ""
        records = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
        sources = {record["source"] for record in records}
        assert {"policy", "fallback", "hold"} <= sources
        assert all(record["replicas"] <= MAX_REPLICAS for record in records)
        events = vc.store.list(vc.types["events"], NAMESPACE)
        reasons = {event["reason"] for event in events}
        assert {"AllocationChanged", "Rescaled", "FallbackActive", "FallbackRecovered"} <= reasons
