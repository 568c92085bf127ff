"""The controller loop against the virtual cluster, tick by tick, with a scripted policy and scripted metrics.

These tests need no Prometheus: ``ScriptedMetrics`` returns the PromQL
families directly, so each case controls exactly which signals are healthy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from agent.controllers.base import Controller
from agent.runtime.app import build_agent
from agent.runtime.capacity import UnsupportedDraError
from agent.runtime.promql import FAMILIES, FamilyResult
from agent.runtime.settings import RuntimeSettings
from envs.config import build_cluster
from envs.virtual_cluster import VirtualCluster, VirtualClusterSettings
from envs.virtual_cluster.rehearsal import DEPLOYMENT, NAMESPACE, ramp_series, rehearsal_config

ROOT = Path(__file__).resolve().parent.parent
KEY = (NAMESPACE, DEPLOYMENT)
CFG = rehearsal_config()
SPEC = build_cluster(CFG)
A100 = SPEC.catalog.option_index("a100-1")
H100 = SPEC.catalog.option_index("h100-1")


class ScriptedPolicy(Controller):
    """Always proposes ``replicas`` of ``option`` for every Deployment."""

    def __init__(self, replicas: int, option: int) -> None:
        self.replicas = replicas
        self.option = option

    def decide(self, batch, now_s):
        n = len(batch)
        return np.full(n, self.replicas), np.full(n, self.option)


class ScriptedMetrics:
    """Returns healthy families for the rehearsal Deployment, or failures while ``down`` is set."""

    def __init__(self) -> None:
        self.down = False
        self.values = {"request_rate": 5.0, "waiting_requests": 0.0, "running_requests": 4.0, "ttft_p95_s": 0.3,
                       "mean_input_tokens": 1000.0, "mean_output_tokens": 200.0, "e2e_p95_s": 1.5,
                       "kv_cache_usage": 0.2, "gpu_utilization": 0.9, "dropped_rate": 0.0}

    def read(self):
        now = time.time()
        if self.down:
            return {name: FamilyResult(error="Prometheus at test is unreachable") for name in FAMILIES}
        families = {name: FamilyResult(values={KEY: value}, evaluated_at=now) for name, value in self.values.items()}
        families["sample_time"] = FamilyResult(values={KEY: now - 1.0}, evaluated_at=now)
        return families

    def close(self):
        pass


def runtime_settings(url: str, tmp_path: Path, **overrides) -> RuntimeSettings:
    settings = RuntimeSettings(interval_s=0.1, dry_run=False)
    settings.kubernetes.auth = "none"
    settings.kubernetes.server = url
    settings.kubernetes.request_timeout_s = 5
    settings.prometheus.url = "http://127.0.0.1:9"
    settings.telemetry.metrics_port = -1
    settings.telemetry.decision_log = str(tmp_path / "decisions.jsonl")
    settings.safety.scale_down_stabilization_s = 0
    for dotted, value in overrides.items():
        target = settings
        parts = dotted.split("__")
        for part in parts[:-1]:
            target = getattr(target, part)
        setattr(target, parts[-1], value)
    return settings


def make_agent(vc: VirtualCluster, tmp_path: Path, policy: Controller, **overrides):
    agent = build_agent(CFG, controller=policy, settings=runtime_settings(vc.url, tmp_path, **overrides))
    agent.loop.metrics = ScriptedMetrics()
    if agent.leader is not None:
        assert agent.leader.try_acquire_or_renew()
    return agent


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def spec_replicas(vc: VirtualCluster) -> int:
    return get_json(f"{vc.url}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}")["spec"]["replicas"]


def event_reasons(vc: VirtualCluster) -> list[str]:
    return [e["reason"] for e in get_json(f"{vc.url}/api/v1/namespaces/{NAMESPACE}/events")["items"]]


@pytest.fixture
def vc():
    cluster = VirtualCluster(SPEC, [ramp_series(ticks=60)], settings=VirtualClusterSettings(time_factor=0)).start()
    yield cluster
    cluster.stop()


def test_dry_run_writes_nothing(vc, tmp_path):
    agent = make_agent(vc, tmp_path, ScriptedPolicy(4, H100), dry_run=True)
    decisions = agent.loop.tick()
    assert decisions[0].replicas == 4
    assert decisions[0].write_replicas
    assert spec_replicas(vc) == 1
    assert "Rescaled" not in event_reasons(vc)
    record = json.loads((tmp_path / "decisions.jsonl").read_text().splitlines()[0])
    assert record["outcome"] == "dry_run"
    assert agent.telemetry.sample("gpu_autoscaler_dry_run") == 1.0
    assert agent.leader is None
    with pytest.raises(urllib.error.HTTPError):
        get_json(f"{vc.url}/apis/coordination.k8s.io/v1/namespaces/gpu-autoscaler/leases/gpu-autoscaler-leader")
    agent.shutdown()


def test_scale_up_written_with_event(vc, tmp_path):
    agent = make_agent(vc, tmp_path, ScriptedPolicy(4, H100))
    agent.loop.tick()
    assert spec_replicas(vc) == 4
    assert "Rescaled" in event_reasons(vc)
    assert agent.telemetry.sample("gpu_autoscaler_writes_total", {"kind": "scale", "result": "ok"}) == 1.0
    labels = {"namespace": NAMESPACE, "deployment": DEPLOYMENT, "source": "policy", "action": "scale_up"}
    assert agent.telemetry.sample("gpu_autoscaler_decisions_total", labels) == 1.0
    agent.shutdown()


def test_allocation_change_then_cooldown(vc, tmp_path):
    agent = make_agent(vc, tmp_path, ScriptedPolicy(2, A100))
    agent.loop.tick()
    assert "AllocationChanged" in event_reasons(vc)
    assert vc.step(6)["deployments"][0]["option"] == "a100-1"
    agent.loop.controller.option = H100
    decisions = agent.loop.tick()
    assert "allocation_cooldown" in decisions[0].rules
    agent.shutdown()


def test_fallback_and_recovery(vc, tmp_path):
    agent = make_agent(vc, tmp_path, ScriptedPolicy(2, H100))
    agent.loop.metrics.down = True
    decisions = agent.loop.tick()
    assert decisions[0].source == "fallback"
    assert "fallback holds" in decisions[0].reason
    labels = {"namespace": NAMESPACE, "deployment": DEPLOYMENT}
    assert agent.telemetry.sample("gpu_autoscaler_fallback_active", labels) == 1.0
    assert "FallbackActive" in event_reasons(vc)
    agent.loop.metrics.down = False
    assert agent.loop.tick()[0].source == "fallback"
    assert agent.loop.tick()[0].source == "policy"
    assert agent.telemetry.sample("gpu_autoscaler_fallback_active", labels) == 0.0
    recovered = {**labels, "transition": "recovered"}
    assert agent.telemetry.sample("gpu_autoscaler_fallback_transitions_total", recovered) == 1.0
    agent.shutdown()


def test_stale_signals_use_hpa_rule(vc, tmp_path):
    agent = make_agent(vc, tmp_path, ScriptedPolicy(1, H100))
    agent.loop.metrics.values["ttft_p95_s"] = float("nan")
    decisions = agent.loop.tick()
    # gpu_utilization 0.9 against the 0.6 target: ceil(1 * 1.5) = 2.
    assert decisions[0].source == "fallback"
    assert decisions[0].replicas == 2
    assert spec_replicas(vc) == 2
    agent.shutdown()


def test_api_unavailable_holds(vc, tmp_path):
    agent = make_agent(vc, tmp_path, ScriptedPolicy(3, H100), kubernetes__max_retries=0)
    agent.loop.tick()
    request = urllib.request.Request(vc.url + "/_faults", method="POST", data=json.dumps(
        {"status": 503, "count": -1, "path_contains": "/deployments"}).encode())
    urllib.request.urlopen(request, timeout=5).read()
    agent.loop.controller.replicas = 5
    decisions = agent.loop.tick()
    assert decisions[0].rules == ["api_unavailable"]
    assert decisions[0].replicas == 3
    urllib.request.urlopen(urllib.request.Request(vc.url + "/_faults", method="DELETE"), timeout=5).read()
    assert agent.loop.tick()[0].replicas == 5
    assert spec_replicas(vc) == 5
    agent.shutdown()


def test_manual_edit_backs_off(vc, tmp_path):
    agent = make_agent(vc, tmp_path, ScriptedPolicy(3, H100))
    agent.loop.tick()
    body = json.dumps({"spec": {"replicas": 6}}).encode()
    request = urllib.request.Request(f"{vc.url}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale",
                                     data=body, method="PATCH",
                                     headers={"Content-Type": "application/merge-patch+json"})
    urllib.request.urlopen(request, timeout=5).read()
    decisions = agent.loop.tick()
    assert decisions[0].rules == ["manual_edit"]
    assert spec_replicas(vc) == 6
    agent.shutdown()


def test_other_autoscaler_refused(tmp_path):
    settings = VirtualClusterSettings(time_factor=0, hpa_targets=[DEPLOYMENT])
    with VirtualCluster(SPEC, [ramp_series(ticks=60)], settings=settings) as cluster:
        agent = make_agent(cluster, tmp_path, ScriptedPolicy(4, H100))
        decisions = agent.loop.tick()
        assert decisions[0].rules == ["autoscaler_conflict"]
        assert spec_replicas(cluster) == 1
        assert "ManagementRefused" in event_reasons(cluster)
        agent.shutdown()


def test_no_writes_without_lease(vc, tmp_path):
    holder = make_agent(vc, tmp_path, ScriptedPolicy(2, H100), leader__identity="other")
    second = build_agent(CFG, controller=ScriptedPolicy(4, H100),
                         settings=runtime_settings(vc.url, tmp_path, leader__identity="me"))
    second.loop.metrics = ScriptedMetrics()
    assert not second.leader.try_acquire_or_renew()
    second.loop.tick()
    assert spec_replicas(vc) == 1
    record = json.loads((tmp_path / "decisions.jsonl").read_text().splitlines()[-1])
    assert record["outcome"] == "not_leader"
    second.shutdown()
    holder.shutdown()


def test_classic_dra_cluster_rejected(tmp_path):
    with VirtualCluster(SPEC, [ramp_series(ticks=60)],
                        settings=VirtualClusterSettings(time_factor=0, dra_version="v1alpha3")) as cluster:
        with pytest.raises(UnsupportedDraError, match="classic DRA"):
            build_agent(CFG, controller=ScriptedPolicy(1, H100), settings=runtime_settings(cluster.url, tmp_path))


@pytest.mark.skipif(not (ROOT / "checkpoints" / "default" / "policy.json").is_file(),
                    reason="no trained policy at checkpoints/default/policy.json")
def test_default_checkpoint_decides(vc, tmp_path):
    cfg = OmegaConf.merge(CFG, {"checkpoint": str(ROOT / "checkpoints" / "default" / "policy.json"), "device": "cpu"})
    agent = build_agent(cfg, settings=runtime_settings(vc.url, tmp_path, dry_run=True))
    agent.loop.metrics = ScriptedMetrics()
    decisions = agent.loop.tick()
    assert 1 <= decisions[0].replicas <= 6
    agent.shutdown()


def test_rehearsal_policy_decides(vc, tmp_path):
    from agent.runtime.rehearsal import write_fixed_policy

    checkpoint = write_fixed_policy(tmp_path / "policy", SPEC.catalog, level=4, option="a100-1")
    cfg = OmegaConf.merge(CFG, {"checkpoint": str(checkpoint), "device": "cpu"})
    agent = build_agent(cfg, settings=runtime_settings(vc.url, tmp_path, dry_run=True))
    agent.loop.metrics = ScriptedMetrics()
    decisions = agent.loop.tick()
    assert decisions[0].option_index == A100
    assert decisions[0].write_option
    agent.shutdown()


@pytest.mark.slow
def test_script_releases_lease_on_sigterm(tmp_path):
    from agent.checkpoint import save_checkpoint
    from agent.policy import build_policy

    policy = build_policy(len(SPEC.catalog.options), [8])
    save_checkpoint(tmp_path / "policy", policy.state_dict(), option_names=list(SPEC.catalog.option_names),
                    net_arch=[8])
    # The script composes its Deployments from conf/ groups, so serve those.
    cfg_cluster = build_cluster(OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "run_agent.yaml"), {
        "catalog": OmegaConf.load(ROOT / "conf" / "catalog" / "default.yaml"),
        "cluster": OmegaConf.load(ROOT / "conf" / "cluster" / "small.yaml"),
        "workload": OmegaConf.load(ROOT / "conf" / "workload" / "code_llm.yaml")}))
    with VirtualCluster(cfg_cluster, [ramp_series(ticks=60)], settings=VirtualClusterSettings(time_factor=0)) as vc:
        command = [sys.executable, str(ROOT / "scripts" / "run_agent.py"), f"checkpoint={tmp_path}/policy.json",
                   "runtime.kubernetes.auth=none", f"runtime.kubernetes.server={vc.url}",
                   "runtime.prometheus.url=http://127.0.0.1:9", "runtime.interval_s=0.5",
                   "runtime.telemetry.metrics_port=-1", "runtime.leader.identity=script", "runtime.dry_run=false",
                   f"hydra.run.dir={tmp_path}/run"]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            lease_url = f"{vc.url}/apis/coordination.k8s.io/v1/namespaces/gpu-autoscaler/leases/gpu-autoscaler-leader"
            deadline = time.monotonic() + 60
            holder = ""
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    holder = get_json(lease_url)["spec"]["holderIdentity"]
                except urllib.error.HTTPError:
                    holder = ""
                if holder == "script":
                    break
                time.sleep(0.2)
            assert holder == "script", "the agent did not take the Lease within 60 s"
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=10)
        assert process.returncode == 0, output
        assert "received SIGTERM" in output
        assert get_json(lease_url)["spec"]["holderIdentity"] == ""
