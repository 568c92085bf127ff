"""Kubernetes side of the runtime: RBAC table, DRA detection, capacity, retries, writer and leader election."""

from __future__ import annotations

import json
import math
import re
import urllib.request
from pathlib import Path

import pytest
import yaml

from agent.runtime import kube_client
from agent.runtime.capacity import (UnsupportedDraError, detect_dra_version, free_slots_device_plugin,
                                    free_slots_dra, quota_headroom_pods)
from agent.runtime.cluster_reader import ClusterReader
from agent.runtime.kube_client import (PERMISSIONS, ConflictError, KubeClient, KubeUnavailable, NotFoundError)
from agent.runtime.leader import LeaderElector
from agent.runtime.settings import DiscoverySettings, KubernetesSettings, LeaderSettings
from agent.runtime.writer import ManualEditDetected, Writer, merge_patch_diff
from envs.cluster import allocation
from envs.config import build_cluster
from envs.virtual_cluster import GpuNaming, VirtualCluster, VirtualClusterSettings
from envs.virtual_cluster.rehearsal import DEPLOYMENT, NAMESPACE, ramp_series, rehearsal_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = build_cluster(rehearsal_config())
CATALOG = SPEC.catalog
NAMING = GpuNaming()


def start_cluster(**settings) -> VirtualCluster:
    options = {"time_factor": 0, **settings}
    return VirtualCluster(SPEC, [ramp_series(ticks=40)], settings=VirtualClusterSettings(**options)).start()


def post_faults(url: str, rules: list[dict]) -> None:
    request = urllib.request.Request(url + "/_faults", data=json.dumps(rules).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).read()


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def vc():
    cluster = start_cluster()
    yield cluster
    cluster.stop()


def client_for(cluster: VirtualCluster, sleep=None) -> KubeClient:
    settings = KubernetesSettings(auth="none", server=cluster.url, request_timeout_s=5, max_retries=3)
    return KubeClient(settings, sleep=sleep or RecordingSleep(), rand=lambda: 0.0)


def test_rbac_grants_exactly_the_declared_calls():
    granted = set()
    for document in yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()):
        if document["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in document["rules"]:
            assert "*" not in rule["verbs"]
            assert "*" not in rule["resources"]
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        granted.add((group, resource, verb))
    assert granted == set(PERMISSIONS)


def test_code_calls_match_declared_table():
    source = Path(kube_client.__file__).read_text()
    body = source.split("TRANSIENT_STATUS", 1)[1]
    called = set(re.findall(r'\("([a-z.0-9]*)", "([a-z/]+)", "([a-z]+)"\)', body))
    called |= {("resource.k8s.io", plural, "list") for plural in
               ("deviceclasses", "resourceslices", "resourceclaims", "resourceclaimtemplates")}
    called.discard(("resource.k8s.io", "plural", "list"))
    assert called == set(PERMISSIONS)


def test_undeclared_call_rejected(vc):
    kube = client_for(vc)
    with pytest.raises(RuntimeError, match="not declared"):
        kube._call(("", "secrets", "list"), kube.core.list_secret_for_all_namespaces)


@pytest.mark.parametrize("served, configured, expected", [
    (["v1", "v1beta2", "v1beta1"], "auto", "v1"),
    (["v1beta2", "v1beta1"], "auto", "v1beta2"),
    (["v1beta1"], "auto", "v1beta1"),
    ([], "auto", None),
    (["v1"], "none", None),
    (["v1", "v1beta1"], "v1beta1", "v1beta1"),
])
def test_dra_version_detection(served, configured, expected):
    assert detect_dra_version(served, configured) == expected


def test_classic_dra_rejected_with_fix():
    with pytest.raises(UnsupportedDraError, match="classic DRA") as caught:
        detect_dra_version(["v1alpha3"])
    assert "dra_version=none" in str(caught.value)


def test_unserved_configured_version_rejected():
    with pytest.raises(UnsupportedDraError, match="v1beta2"):
        detect_dra_version(["v1"], "v1beta2")


def test_served_versions_from_cluster():
    for version in ("v1", "v1beta1", "v1alpha3"):
        cluster = start_cluster(dra_version=version)
        try:
            assert client_for(cluster).served_versions("resource.k8s.io") == [version]
        finally:
            cluster.stop()


@pytest.mark.parametrize("version", ["v1", "v1beta2", "v1beta1"])
def test_dra_shapes_round_trip(version):
    template = {"spec": {"containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    for index, option in enumerate(CATALOG.options):
        claim = allocation.claim_template(deployment="d", namespace="n", option=option, version=version)
        pod_template = allocation.apply_dra_option(template, option=option,
                                                   claim_template_name=claim["metadata"]["name"])
        limits = pod_template["spec"]["containers"][0]["resources"].get("limits", {})
        assert "nvidia.com/gpu" not in limits
        found = allocation.option_from_template(pod_template, catalog=CATALOG,
                                                claim_templates={claim["metadata"]["name"]: claim}, naming=NAMING)
        assert found == index, option.name


def test_device_plugin_shapes_round_trip():
    template = {"spec": {"containers": [{"name": "vllm"}], "nodeSelector": {"team": "a"}}}
    for index, option in enumerate(CATALOG.options):
        pod_template = allocation.apply_device_plugin_option(template, option=option, naming=NAMING)
        del pod_template["metadata"]["annotations"]
        found = allocation.option_from_template(pod_template, catalog=CATALOG, claim_templates={}, naming=NAMING)
        assert found == index, option.name
        assert pod_template["spec"]["nodeSelector"]["team"] == "a"


def test_free_slots_and_quota_from_cluster(vc):
    vc.step()
    kube = client_for(vc)
    free = free_slots_dra(CATALOG, slices=kube.list_dra("v1", "resourceslices"),
                          claims=kube.list_dra("v1", "resourceclaims"), naming=NAMING)
    assert free["H100-80GB/whole"] == 7.0
    assert free["A100-80GB/whole"] == 8.0
    headroom = quota_headroom_pods(CATALOG, kube.list_resource_quotas(NAMESPACE))
    assert headroom[CATALOG.option_index("h100-1")] == 5.0
    assert headroom[CATALOG.option_index("h100-2")] == 2.0
    # The quota limits neither mig.nvidia.com devices nor nvidia.com/mig-* resources.
    assert math.isinf(headroom[CATALOG.option_index("h100-mig-3g.40gb")])


def test_free_slots_device_plugin():
    cluster = start_cluster(dra_version="none")
    try:
        cluster.step()
        kube = client_for(cluster)
        free = free_slots_device_plugin(CATALOG, nodes=kube.list_nodes(), pods=kube.list_pods(), naming=NAMING)
        assert free == {"H100-80GB/whole": 7.0, "A100-80GB/whole": 8.0}
    finally:
        cluster.stop()


def test_cluster_reader_state(vc):
    vc.step()
    reader = ClusterReader(client_for(vc), cluster=SPEC, discovery=DiscoverySettings(), naming=NAMING,
                           dra_version="v1")
    state = reader.read()
    deployment = state.deployments[(NAMESPACE, DEPLOYMENT)]
    assert deployment.spec_replicas == 1
    assert deployment.ready == 1
    assert deployment.option_index == CATALOG.option_index("h100-1")
    assert state.autoscaled == {}


def test_other_autoscalers_detected():
    cluster = start_cluster(hpa_targets=[DEPLOYMENT], scaledobject_targets=[DEPLOYMENT])
    try:
        reader = ClusterReader(client_for(cluster), cluster=SPEC, discovery=DiscoverySettings(), naming=NAMING,
                               dra_version="v1")
        assert (NAMESPACE, DEPLOYMENT) in reader.read().autoscaled
    finally:
        cluster.stop()


def test_retry_after_honoured(vc):
    sleep = RecordingSleep()
    kube = client_for(vc, sleep)
    post_faults(vc.url, [{"status": 429, "count": 1, "retry_after_s": 2}])
    assert kube.get_deployment(NAMESPACE, DEPLOYMENT)["metadata"]["name"] == DEPLOYMENT
    assert sleep.calls == [2.0]


def test_server_errors_retried_then_unavailable(vc):
    sleep = RecordingSleep()
    kube = client_for(vc, sleep)
    post_faults(vc.url, [{"status": 500, "count": 2}])
    kube.list_nodes()
    assert sleep.calls == [0.2, 0.4]
    post_faults(vc.url, [{"status": 503, "count": -1}])
    with pytest.raises(KubeUnavailable):
        kube.list_nodes()


def test_long_retry_after_gives_up(vc):
    kube = client_for(vc)
    post_faults(vc.url, [{"status": 429, "count": 1, "retry_after_s": 120}])
    with pytest.raises(KubeUnavailable, match="max_retry_after_s"):
        kube.list_nodes()


def test_not_found_and_conflict_errors(vc):
    kube = client_for(vc)
    with pytest.raises(NotFoundError):
        kube.get_deployment(NAMESPACE, "missing")
    with pytest.raises(ConflictError):
        kube.patch_scale(NAMESPACE, DEPLOYMENT, replicas=2, resource_version="1")


def test_writer_retries_conflict(vc):
    kube = client_for(vc)
    reader = ClusterReader(kube, cluster=SPEC, discovery=DiscoverySettings(), naming=NAMING, dra_version="v1")
    state = reader.read().deployments[(NAMESPACE, DEPLOYMENT)]
    vc.step()
    sleep = RecordingSleep()
    writer = Writer(kube, catalog=CATALOG, dra_version="v1", naming=NAMING, sleep=sleep, rand=lambda: 0.0)
    post_faults(vc.url, [{"status": 409, "count": 1, "methods": ["PATCH"], "path_contains": "/scale"}])
    writer.scale(state, 3, resource_version=state.resource_version)
    assert kube.get_deployment(NAMESPACE, DEPLOYMENT)["spec"]["replicas"] == 3
    assert sleep.calls == [0.01]


def test_writer_detects_manual_edit(vc):
    kube = client_for(vc)
    reader = ClusterReader(kube, cluster=SPEC, discovery=DiscoverySettings(), naming=NAMING, dra_version="v1")
    state = reader.read().deployments[(NAMESPACE, DEPLOYMENT)]
    current = kube.get_scale(NAMESPACE, DEPLOYMENT)
    kube.patch_scale(NAMESPACE, DEPLOYMENT, replicas=4, resource_version=current["metadata"]["resourceVersion"])
    writer = Writer(kube, catalog=CATALOG, dra_version="v1", naming=NAMING, sleep=RecordingSleep())
    with pytest.raises(ManualEditDetected) as caught:
        writer.scale(state, 2, resource_version=state.resource_version)
    assert caught.value.observed == 4


@pytest.mark.parametrize("dra_version", ["v1", "none"])
def test_writer_changes_allocation(dra_version):
    cluster = start_cluster(dra_version=dra_version)
    try:
        kube = client_for(cluster)
        version = None if dra_version == "none" else dra_version
        reader = ClusterReader(kube, cluster=SPEC, discovery=DiscoverySettings(), naming=NAMING, dra_version=version)
        state = reader.read().deployments[(NAMESPACE, DEPLOYMENT)]
        writer = Writer(kube, catalog=CATALOG, dra_version=version, naming=NAMING, sleep=RecordingSleep())
        writer.change_allocation(state, CATALOG.option_index("a100-1"))
        after = reader.read().deployments[(NAMESPACE, DEPLOYMENT)]
        assert after.option_index == CATALOG.option_index("a100-1")
        snapshot = cluster.step(6)
        assert snapshot["deployments"][0]["option"] == "a100-1"
        selector = after.template["spec"].get("nodeSelector", {})
        assert ("nvidia.com/gpu.product" in selector) == (dra_version == "none")
    finally:
        cluster.stop()


def test_merge_patch_diff():
    old = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1]}
    new = {"a": 1, "b": {"c": 5}, "l": [1, 2], "e": 4}
    assert merge_patch_diff(old, new) == {"b": {"c": 5, "d": None}, "l": [1, 2], "e": 4}


def test_leader_election_takes_over_expired_lease(vc):
    settings = LeaderSettings(namespace="gpu-autoscaler", name="lease", lease_duration_s=15, renew_period_s=5)
    now = {"t": 1_000_000.0}
    first = LeaderElector(client_for(vc), settings, identity="a", clock=lambda: now["t"])
    second = LeaderElector(client_for(vc), settings, identity="b", clock=lambda: now["t"])
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()
    now["t"] += 9
    assert first.is_leader()
    now["t"] += 2
    assert not first.is_leader()
    now["t"] += 5
    assert second.try_acquire_or_renew()
    assert not first.try_acquire_or_renew()
    lease = client_for(vc).get_lease("gpu-autoscaler", "lease")
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    second.release()
    assert client_for(vc).get_lease("gpu-autoscaler", "lease")["spec"]["holderIdentity"] == ""
    assert first.try_acquire_or_renew()
