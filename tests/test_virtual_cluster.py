"""The virtual cluster: API semantics, patch formats, faults, simulated workload and metrics page."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest

from envs.cluster import allocation
from envs.config import build_cluster
from envs.virtual_cluster import VirtualCluster, VirtualClusterSettings
from envs.virtual_cluster.exposition import Histogram, TTFT_BUCKETS, latency_cdf, ttft_points
from envs.virtual_cluster.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from envs.virtual_cluster.rehearsal import DEPLOYMENT, NAMESPACE, ramp_series, rehearsal_config
from envs.virtual_cluster.store import matches_selector, parse_label_selector

SCALE_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale"
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}"


def request(url: str, method: str = "GET", body: Any = None,
            content_type: str = "application/json") -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            raw = response.read().decode()
            headers = dict(response.headers)
            status = response.status
    except urllib.error.HTTPError as error:
        raw, headers, status = error.read().decode(), dict(error.headers), error.code
    try:
        return status, headers, json.loads(raw)
    except json.JSONDecodeError:
        return status, headers, raw


_CLUSTER_SPEC: list = []


def make_cluster(**settings: Any) -> VirtualCluster:
    if not _CLUSTER_SPEC:
        _CLUSTER_SPEC.append(build_cluster(rehearsal_config()))
    cluster = _CLUSTER_SPEC[0]
    options = {"time_factor": 0, **settings}
    return VirtualCluster(cluster, [ramp_series(ticks=60)], settings=VirtualClusterSettings(**options))


@pytest.fixture
def vc():
    cluster = make_cluster()
    cluster.start()
    yield cluster
    cluster.stop()


def test_discovery_documents(vc):
    status, _, apis = request(vc.url + "/apis")
    assert status == 200
    groups = {g["name"]: [v["version"] for v in g["versions"]] for g in apis["groups"]}
    assert groups["resource.k8s.io"] == ["v1"]
    assert groups["keda.sh"] == ["v1alpha1"]
    _, _, apps = request(vc.url + "/apis/apps/v1")
    names = {r["name"] for r in apps["resources"]}
    assert {"deployments", "deployments/scale", "replicasets"} <= names
    _, _, version = request(vc.url + "/version")
    assert version["gitVersion"] == "v1.34.0"


def test_python_dynamic_client_discovers(vc):
    from kubernetes import client
    from kubernetes.dynamic import DynamicClient

    api = client.ApiClient(client.Configuration(host=vc.url))
    dynamic = DynamicClient(api)
    deployments = dynamic.resources.get(api_version="apps/v1", kind="Deployment").get(namespace=NAMESPACE)
    assert [d.metadata.name for d in deployments.items] == [DEPLOYMENT]
    slices = dynamic.resources.get(api_version="resource.k8s.io/v1", kind="ResourceSlice").get()
    assert len(slices.items) == 2
    api.close()


@pytest.mark.parametrize("content_type, body", [
    ("application/strategic-merge-patch+json", {"spec": {"replicas": 3}}),
    ("application/merge-patch+json", {"spec": {"replicas": 3}}),
    ("application/json-patch+json", [{"op": "replace", "path": "/spec/replicas", "value": 3}]),
])
def test_scale_patch_content_types(vc, content_type, body):
    status, _, scale = request(vc.url + SCALE_PATH, "PATCH", body, content_type)
    assert status == 200
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 3
    _, _, deployment = request(vc.url + DEPLOYMENT_PATH)
    assert deployment["spec"]["replicas"] == 3


def test_scale_put_stale_version_conflicts(vc):
    _, _, scale = request(vc.url + SCALE_PATH)
    scale["spec"]["replicas"] = 2
    status, _, _ = request(vc.url + SCALE_PATH, "PUT", scale)
    assert status == 200
    status, _, body = request(vc.url + SCALE_PATH, "PUT", scale)
    assert status == 409
    assert body["kind"] == "Status"
    assert body["reason"] == "Conflict"


def test_scale_rejects_negative_replicas(vc):
    status, _, body = request(vc.url + SCALE_PATH, "PATCH", {"spec": {"replicas": -1}},
                              "application/merge-patch+json")
    assert status == 422
    assert body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "spec.replicas"


def test_unknown_deployment_not_found(vc):
    status, _, body = request(vc.url + f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/missing")
    assert status == 404
    assert body["reason"] == "NotFound"
    assert body["details"]["name"] == "missing"


def test_claim_template_spec_immutable(vc):
    path = f"/apis/resource.k8s.io/v1/namespaces/{NAMESPACE}/resourceclaimtemplates"
    _, _, listing = request(vc.url + path)
    name = listing["items"][0]["metadata"]["name"]
    status, _, body = request(vc.url + f"{path}/{name}", "PATCH", {"spec": {"spec": {"devices": {"requests": []}}}},
                              "application/merge-patch+json")
    assert status == 422
    assert "immutable" in body["message"]


def test_deployment_claim_reference_validated(vc):
    patch = {"spec": {"template": {"spec": {"resourceClaims": None}}}}
    status, _, body = request(vc.url + DEPLOYMENT_PATH, "PATCH", patch, "application/merge-patch+json")
    assert status == 422
    assert "resources.claims" in body["message"]


def test_pod_over_quota_forbidden(vc):
    pod = {"metadata": {"name": "greedy"}, "spec": {"containers": [
        {"name": "c", "resources": {"limits": {"nvidia.com/gpu": "7"}}}]}}
    status, _, body = request(vc.url + f"/api/v1/namespaces/{NAMESPACE}/pods", "POST", pod)
    assert status == 403
    assert "exceeded quota" in body["message"]
    assert body["reason"] == "Forbidden"


def test_scale_over_quota_rejected_in_reject_mode():
    with make_cluster(quota_enforcement="reject") as cluster:
        status, _, body = request(cluster.url + SCALE_PATH, "PATCH", {"spec": {"replicas": 9}},
                                  "application/merge-patch+json")
        assert status == 403
        assert "exceeded quota" in body["message"]
        status, _, _ = request(cluster.url + SCALE_PATH, "PATCH", {"spec": {"replicas": 4}},
                               "application/merge-patch+json")
        assert status == 200


def test_faults_answer_in_order(vc):
    rules = [{"status": 429, "count": 1, "retry_after_s": 3, "methods": ["GET"], "path_contains": "/deployments"},
             {"status": 500, "count": 1, "methods": ["GET"]}]
    status, _, _ = request(vc.url + "/_faults", "POST", rules)
    assert status == 200
    status, headers, body = request(vc.url + DEPLOYMENT_PATH)
    assert status == 429
    assert headers["Retry-After"] == "3"
    assert body["details"]["retryAfterSeconds"] == 3
    status, _, body = request(vc.url + DEPLOYMENT_PATH)
    assert status == 500
    assert body["reason"] == "InternalError"
    status, _, _ = request(vc.url + DEPLOYMENT_PATH)
    assert status == 200
    _, _, state = request(vc.url + "/_faults")
    assert state["rules"] == []
    assert state["injected"] == {"429": 1, "500": 1}


def test_fault_rule_invalid_key_rejected(vc):
    status, _, body = request(vc.url + "/_faults", "POST", {"code": 500})
    assert status == 400
    assert "unknown fault keys" in body["message"]


def test_scale_up_pods_progress(vc):
    request(vc.url + SCALE_PATH, "PATCH", {"spec": {"replicas": 3}}, "application/merge-patch+json")
    snapshot = vc.step()
    pods = snapshot["deployments"][0]["pods"]
    assert pods.get("Starting", 0) == 2
    assert pods.get("Ready", 0) == 1
    vc.step(6)
    _, _, deployment = request(vc.url + DEPLOYMENT_PATH)
    assert deployment["status"]["readyReplicas"] == 3
    _, _, pod_list = request(vc.url + f"/api/v1/namespaces/{NAMESPACE}/pods")
    assert len(pod_list["items"]) == 3
    assert all(p["spec"]["nodeName"].startswith("h100") for p in pod_list["items"])
    _, _, claims = request(vc.url + f"/apis/resource.k8s.io/v1/namespaces/{NAMESPACE}/resourceclaims")
    assert len(claims["items"]) == 3
    _, _, quotas = request(vc.url + f"/api/v1/namespaces/{NAMESPACE}/resourcequotas")
    assert quotas["items"][0]["status"]["used"]["requests.nvidia.com/gpu"] == "3"


def test_quota_leaves_extra_pods_pending(vc):
    request(vc.url + SCALE_PATH, "PATCH", {"spec": {"replicas": 8}}, "application/merge-patch+json")
    snapshot = vc.step(6)
    pods = snapshot["deployments"][0]["pods"]
    assert pods.get("Pending", 0) == 2
    assert snapshot["quota_used"]["requests.nvidia.com/gpu"] == 6.0


def test_allocation_change_rolls_out(vc):
    cluster = vc.cluster
    option = cluster.catalog.options[cluster.catalog.option_index("a100-1")]
    template = allocation.claim_template(deployment=DEPLOYMENT, namespace=NAMESPACE, option=option, version="v1")
    status, _, _ = request(vc.url + f"/apis/resource.k8s.io/v1/namespaces/{NAMESPACE}/resourceclaimtemplates",
                           "POST", template)
    assert status == 201
    _, _, deployment = request(vc.url + DEPLOYMENT_PATH)
    new_template = allocation.apply_dra_option(deployment["spec"]["template"], option=option,
                                               claim_template_name=template["metadata"]["name"])
    status, _, _ = request(vc.url + DEPLOYMENT_PATH, "PATCH", {"spec": {"template": new_template}},
                           "application/merge-patch+json")
    assert status == 200
    first = vc.step()
    assert first["deployments"][0]["option"] == "a100-1"
    assert first["deployments"][0]["pods"].get("Ready", 0) == 1
    assert first["deployments"][0]["pods"].get("Starting", 0) == 1
    later = vc.step(6)
    assert later["deployments"][0]["pods"] == {"Ready": 1}
    _, _, pod_list = request(vc.url + f"/api/v1/namespaces/{NAMESPACE}/pods")
    assert pod_list["items"][0]["spec"]["nodeName"].startswith("a100")


def test_metrics_page_names(vc):
    request(vc.url + SCALE_PATH, "PATCH", {"spec": {"replicas": 2}}, "application/merge-patch+json")
    vc.step(6)
    status, headers, text = request(vc.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    for name in ("kube_deployment_spec_replicas", "kube_deployment_status_replicas_ready", "kube_pod_status_phase",
                 "kube_pod_owner", "kube_replicaset_owner", "kube_resourcequota", "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
                 "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "vllm:num_requests_running",
                 "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:request_success_total",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "vllm:time_to_first_token_seconds_bucket", "vllm:e2e_request_latency_seconds_count"):
        assert f"\n{name}{{" in text, name
    assert 'exported_pod="' in text
    assert f'owner_name="{DEPLOYMENT}"' in text


def test_histogram_counters_only_grow(vc):
    def ttft_counts() -> list[float]:
        _, _, text = request(vc.url + "/metrics")
        return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("vllm:time_to_first_token_seconds_bucket")]

    vc.step()
    before = ttft_counts()
    vc.step(3)
    after = ttft_counts()
    assert len(before) == len(after) > 0
    assert all(b <= a for b, a in zip(before, after))
    assert after[-1] > before[-1]


def test_histogram_recovers_quantile():
    histogram = Histogram(TTFT_BUCKETS)
    points = ttft_points(p50=0.3, p95=0.9, p99=1.4)
    histogram.observe_distribution(points, 1000.0)
    assert latency_cdf(points, 0.9) == pytest.approx(0.95)
    below = histogram.buckets[TTFT_BUCKETS.index(0.75)] / histogram.count
    above = histogram.buckets[TTFT_BUCKETS.index(1.0)] / histogram.count
    assert below < 0.95 < above
    # Mean of the piecewise-linear distribution: the sum of segment mass times segment midpoint.
    assert histogram.total / histogram.count == pytest.approx(0.445)


def test_device_plugin_cluster():
    with make_cluster(dra_version="none") as cluster:
        _, _, apis = request(cluster.url + "/apis")
        assert "resource.k8s.io" not in {g["name"] for g in apis["groups"]}
        _, _, nodes = request(cluster.url + "/api/v1/nodes")
        allocatable = {n["metadata"]["name"]: n["status"]["allocatable"] for n in nodes["items"]}
        assert allocatable["h100-0"]["nvidia.com/gpu"] == "8"
        _, _, deployment = request(cluster.url + DEPLOYMENT_PATH)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        request(cluster.url + SCALE_PATH, "PATCH", {"spec": {"replicas": 2}}, "application/merge-patch+json")
        snapshot = cluster.step(6)
        assert snapshot["deployments"][0]["pods"] == {"Ready": 2}


def test_v1beta1_claim_layout():
    with make_cluster(dra_version="v1beta1") as cluster:
        _, _, templates = request(cluster.url + f"/apis/resource.k8s.io/v1beta1/namespaces/{NAMESPACE}/"
                                                "resourceclaimtemplates")
        device_request = templates["items"][0]["spec"]["spec"]["devices"]["requests"][0]
        assert device_request["deviceClassName"] == "gpu.nvidia.com"
        assert "exactly" not in device_request
        _, _, slices = request(cluster.url + "/apis/resource.k8s.io/v1beta1/resourceslices")
        assert "basic" in slices["items"][0]["spec"]["devices"][0]


def test_v1alpha3_serves_only_device_classes():
    with make_cluster(dra_version="v1alpha3") as cluster:
        _, _, group = request(cluster.url + "/apis/resource.k8s.io")
        assert [v["version"] for v in group["versions"]] == ["v1alpha3"]
        _, _, resources = request(cluster.url + "/apis/resource.k8s.io/v1alpha3")
        assert [r["name"] for r in resources["resources"]] == ["deviceclasses"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_lists_deployments(vc):
    result = subprocess.run(["kubectl", "--server", vc.url, "get", "deployments", "-n", NAMESPACE],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert DEPLOYMENT in result.stdout
    assert "READY" in result.stdout


def test_merge_patch_removes_null_keys():
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None}, "l": [2]}) == {"a": {"c": 2}, "l": [2]}


def test_strategic_merge_by_name():
    target = {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}
    patched = strategic_merge_patch(target, {"containers": [{"name": "b", "image": "z"}, {"name": "c"}]})
    assert patched["containers"] == [{"name": "a", "image": "x"}, {"name": "b", "image": "z"}, {"name": "c"}]
    deleted = strategic_merge_patch(target, {"containers": [{"name": "a", "$patch": "delete"}]})
    assert deleted["containers"] == [{"name": "b", "image": "y"}]


def test_json_patch_operations():
    document = {"spec": {"replicas": 1, "list": [1, 2]}}
    patched = json_patch(document, [
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 5},
        {"op": "add", "path": "/spec/list/-", "value": 3},
        {"op": "remove", "path": "/spec/list/0"},
        {"op": "copy", "from": "/spec/replicas", "path": "/spec/copied"},
    ])
    assert patched == {"spec": {"replicas": 5, "list": [2, 3], "copied": 5}}
    with pytest.raises(PatchError):
        json_patch(document, [{"op": "test", "path": "/spec/replicas", "value": 2}])


def test_label_selector_terms():
    terms = parse_label_selector("app=x,tier in (a, b),!legacy,env!=dev")
    assert matches_selector({"app": "x", "tier": "a", "env": "prod"}, terms)
    assert not matches_selector({"app": "x", "tier": "c"}, terms)
    assert not matches_selector({"app": "x", "tier": "a", "legacy": "1"}, terms)
