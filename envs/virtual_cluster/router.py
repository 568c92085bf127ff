"""Request routing of the virtual cluster's API: paths to store operations, independent of HTTP.

``ApiRouter.handle`` takes a method, path, query, headers and parsed body and
returns (status code, extra headers, JSON body or text). The HTTP handler in
``server.py`` only moves bytes, so tests can call the router directly.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable
from urllib.parse import parse_qs

from envs.cluster import allocation
from envs.cluster.catalog import Catalog
from envs.cluster.spec import quota_usage_keys
from envs.virtual_cluster import resources
from envs.virtual_cluster.errors import ApiError, FaultInjector, conflict, invalid
from envs.virtual_cluster.patch import PatchError, apply_patch
from envs.virtual_cluster.resources import ResourceType
from envs.virtual_cluster.settings import VirtualClusterSettings
from envs.virtual_cluster.store import ObjectStore

log = logging.getLogger(__name__)
Response = tuple[int, dict[str, str], Any]


class ApiRouter:
    """Maps Kubernetes REST paths onto the object store, with fault injection in front."""

    def __init__(self, *, store: ObjectStore, types: list[ResourceType], settings: VirtualClusterSettings,
                 catalog: Catalog, naming: allocation.GpuNaming, faults: FaultInjector,
                 metrics_text: Callable[[], str], step: Callable[[], None],
                 snapshot: Callable[[], dict[str, Any]]) -> None:
        self.store = store
        self.types = types
        self.by_plural = {t.plural: t for t in types}
        self.settings = settings
        self.catalog = catalog
        self.naming = naming
        self.faults = faults
        self.metrics_text = metrics_text
        self.step = step
        self.snapshot = snapshot
        self.host = f"{settings.host}:{settings.port}"

    def handle(self, method: str, raw_path: str, *, headers: dict[str, str], body: Any) -> Response:
        path, _, query_text = raw_path.partition("?")
        query = {k: v[-1] for k, v in parse_qs(query_text).items()}
        path = path.rstrip("/") or "/"
        try:
            if path == "/metrics":
                self.faults.check(method, path)
            if path in ("/metrics", "/healthz", "/readyz", "/livez", "/version") or path.startswith("/_"):
                return self._special(method, path, body=body)
            self.faults.check(method, path)
            if query.get("dryRun"):
                raise ApiError(400, "dryRun is not supported by the virtual cluster; send the request without it")
            if query.get("watch") in ("true", "1"):
                raise ApiError(405, "watch is not supported by the virtual cluster; poll with list instead")
            return self._api(method, path, query=query, headers=headers, body=body)
        except ApiError as error:
            extra = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else {}
            return error.code, extra, error.status_body()

    def _special(self, method: str, path: str, *, body: Any) -> Response:
        if path == "/metrics":
            return 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}, self.metrics_text()
        if path == "/version":
            major, minor = self.settings.server_version.lstrip("v").split(".")[:2]
            return 200, {}, {"major": major, "minor": minor, "gitVersion": self.settings.server_version,
                             "platform": "linux/amd64", "goVersion": "go1.24"}
        if path in ("/healthz", "/readyz", "/livez"):
            return 200, {"Content-Type": "text/plain"}, "ok"
        if path == "/_faults":
            if method == "POST":
                rules = body if isinstance(body, list) else [body]
                for rule in rules:
                    if not isinstance(rule, dict):
                        raise ApiError(400, f"a fault rule must be a JSON object, got {rule!r}")
                    self.faults.add(rule)
            elif method == "DELETE":
                self.faults.clear()
            return 200, {}, {"rules": self.faults.rules(), "injected": self.faults.injected}
        if path == "/_tick" and method == "POST":
            ticks = int((body or {}).get("ticks", 1)) if isinstance(body, dict) else 1
            for _ in range(max(ticks, 1)):
                self.step()
            return 200, {}, self.snapshot()
        if path == "/_state":
            return 200, {}, self.snapshot()
        raise ApiError(404, f"the path {path!r} is not served; admin paths are /_faults, /_tick and /_state")

    def _resolve(self, path: str) -> tuple[str, str, list[str]]:
        """Split an API path into (group, version, remaining segments)."""
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            if len(parts) == 1:
                return "", "", []
            return "", parts[1], parts[2:]
        if parts[0] == "apis":
            group = parts[1] if len(parts) > 1 else ""
            version = parts[2] if len(parts) > 2 else ""
            return group, version, parts[3:]
        raise ApiError(404, f"the server could not find the requested resource {path!r}")

    def _api(self, method: str, path: str, *, query: dict[str, str], headers: dict[str, str], body: Any) -> Response:
        if path == "/api":
            return 200, {}, resources.api_versions(self.host)
        if path == "/apis":
            return 200, {}, resources.group_list(self.types)
        group, version, rest = self._resolve(path)
        if not version:
            document = resources.group_document(self.types, group)
            if document is None:
                raise ApiError(404, f"the server could not find the requested resource (group {group!r})")
            return 200, {}, document
        if not rest:
            listing = resources.resource_list(self.types, group=group, version=version)
            if listing is None:
                raise ApiError(404, f"the server could not find the requested resource ({group}/{version})")
            return 200, {}, listing
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else ""
        rtype = resources.find_type(self.types, group=group, version=version, plural=plural)
        if rtype is None:
            raise ApiError(404, f"the server could not find the requested resource ({plural} in {group}/{version})")
        if sub and sub not in rtype.subresources:
            raise ApiError(404, f"{plural} has no subresource {sub!r}")
        if not name:
            return self._collection(method, rtype, namespace=namespace, query=query, headers=headers, body=body)
        if sub == "scale":
            return self._scale(method, name, namespace=namespace, headers=headers, body=body)
        return self._item(method, rtype, namespace=namespace, name=name, sub=sub, headers=headers, body=body)

    def _collection(self, method: str, rtype: ResourceType, *, namespace: str, query: dict[str, str],
                    headers: dict[str, str], body: Any) -> Response:
        if method == "GET":
            items = self.store.list(rtype, namespace, label_selector=query.get("labelSelector", ""),
                                    field_selector=query.get("fieldSelector", ""))
            version = self.store.resource_version
            if "as=Table" in headers.get("accept", ""):
                return 200, {}, resources.as_table(rtype, items, resource_version=version)
            return 200, {}, {"kind": f"{rtype.kind}List", "apiVersion": rtype.group_version,
                             "metadata": {"resourceVersion": version}, "items": items}
        if method == "POST":
            if not isinstance(body, dict):
                raise ApiError(400, f"the body of a create must be a {rtype.kind} object")
            if rtype.kind == "Pod":
                self._check_pod_quota(namespace, body)
            return 201, {}, self.store.create(rtype, namespace=namespace, obj=body)
        raise ApiError(405, f"method {method} is not allowed on a {rtype.plural} collection")

    def _item(self, method: str, rtype: ResourceType, *, namespace: str, name: str, sub: str,
              headers: dict[str, str], body: Any) -> Response:
        if method == "GET":
            return 200, {}, self.store.get(rtype, namespace=namespace, name=name)
        if method == "DELETE":
            return 200, {}, self.store.delete(rtype, namespace=namespace, name=name)
        if method not in ("PUT", "PATCH"):
            raise ApiError(405, f"method {method} is not allowed on {rtype.plural}/{name}")
        with self.store.lock:
            current = self.store.get(rtype, namespace=namespace, name=name)
            if method == "PUT":
                if not isinstance(body, dict):
                    raise ApiError(400, f"the body of an update must be a {rtype.kind} object")
                updated = body
            else:
                updated = self._patched(current, body, headers=headers, rtype=rtype, name=name)
                given = updated.get("metadata", {}).get("resourceVersion")
                if given and given != current["metadata"]["resourceVersion"]:
                    raise conflict(rtype.plural, name, group=rtype.group)
            if sub == "status":
                kept = dict(current)
                kept["status"] = updated.get("status", {})
                kept["metadata"] = {**current["metadata"],
                                    "resourceVersion": updated.get("metadata", {}).get("resourceVersion")
                                    or current["metadata"]["resourceVersion"]}
                updated = kept
            return 200, {}, self.store.replace(rtype, namespace=namespace, name=name, obj=updated)

    def _patched(self, current: dict[str, Any], body: Any, *, headers: dict[str, str], rtype: ResourceType,
                 name: str) -> dict[str, Any]:
        try:
            return apply_patch(current, body, content_type=headers.get("content-type", ""))
        except PatchError as error:
            if error.code == 422:
                raise invalid(rtype.kind, name, field_path="patch", message=str(error), group=rtype.group) from error
            raise ApiError(error.code, str(error)) from error

    def _scale_view(self, deployment: dict[str, Any]) -> dict[str, Any]:
        meta = deployment["metadata"]
        labels = deployment["spec"].get("selector", {}).get("matchLabels", {})
        return {
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
            "spec": {"replicas": deployment["spec"].get("replicas", 1)},
            "status": {"replicas": (deployment.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))},
        }

    def _scale(self, method: str, name: str, *, namespace: str, headers: dict[str, str], body: Any) -> Response:
        rtype = self.by_plural["deployments"]
        with self.store.lock:
            deployment = self.store.get(rtype, namespace=namespace, name=name)
            view = self._scale_view(deployment)
            if method == "GET":
                return 200, {}, view
            if method == "PUT":
                if not isinstance(body, dict):
                    raise ApiError(400, "the body of a scale update must be an autoscaling/v1 Scale object")
                wanted = body
            elif method == "PATCH":
                wanted = self._patched(view, body, headers=headers, rtype=rtype, name=name)
            else:
                raise ApiError(405, f"method {method} is not allowed on deployments/{name}/scale")
            replicas = (wanted.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise invalid("Scale", name, field_path="spec.replicas", group="autoscaling",
                              message=f"Invalid value: {replicas!r}: must be greater than or equal to 0")
            if self.settings.quota_enforcement == "reject":
                self._check_scale_quota(deployment, replicas)
            deployment["spec"]["replicas"] = replicas
            deployment["metadata"]["resourceVersion"] = (wanted.get("metadata") or {}).get("resourceVersion") or ""
            stored = self.store.replace(rtype, namespace=namespace, name=name, obj=deployment)
            return 200, {}, self._scale_view(stored)

    def _quota_left(self, namespace: str) -> list[tuple[str, str, float, float]]:
        """Return (quota name, key, used, hard) for every quota key in the namespace."""
        entries = []
        for quota in self.store.list(self.by_plural["resourcequotas"], namespace):
            status = quota.get("status") or {}
            for key, hard in (quota.get("spec", {}).get("hard") or {}).items():
                entries.append((quota["metadata"]["name"], key, float(status.get("used", {}).get(key, 0)),
                                float(hard)))
        return entries

    def _forbid_over_quota(self, kind: str, name: str, *, namespace: str, request: dict[str, float]) -> None:
        for quota_name, key, used, hard in self._quota_left(namespace):
            asked = request.get(key, 0.0)
            if asked > 0 and used + asked > hard:
                raise ApiError(403, f'{kind} "{name}" is forbidden: exceeded quota: {quota_name}, requested: '
                               f"{key}={asked:g}, used: {key}={used:g}, limited: {key}={hard:g}")

    def _check_pod_quota(self, namespace: str, pod: dict[str, Any]) -> None:
        """Reject a pod whose extended-resource requests exceed the quota, as admission does."""
        request: dict[str, float] = {}
        for container in (pod.get("spec") or {}).get("containers") or []:
            resources_ = container.get("resources") or {}
            amounts = {**(resources_.get("limits") or {}), **(resources_.get("requests") or {})}
            for key, value in amounts.items():
                if "/" in key:
                    request[f"requests.{key}"] = request.get(f"requests.{key}", 0.0) + float(value)
        self._forbid_over_quota("pods", str(pod.get("metadata", {}).get("name", "")), namespace=namespace,
                                request=request)

    def _check_scale_quota(self, deployment: dict[str, Any], replicas: int) -> None:
        extra = replicas - int(deployment["spec"].get("replicas", 1))
        if extra <= 0:
            return
        namespace = deployment["metadata"]["namespace"]
        templates = {}
        if "resourceclaimtemplates" in self.by_plural:
            items = self.store.list(self.by_plural["resourceclaimtemplates"], namespace)
            templates = {t["metadata"]["name"]: t for t in items}
        try:
            index = allocation.option_from_template(deployment["spec"]["template"], catalog=self.catalog,
                                                    claim_templates=templates, naming=self.naming)
        except allocation.AllocationError:
            return
        per_pod = quota_usage_keys(self.catalog.options[index])
        request = {key: amount * extra for key, amount in per_pod.items()}
        self._forbid_over_quota("deployments", deployment["metadata"]["name"], namespace=namespace, request=request)


def decode_body(raw: bytes) -> Any:
    """Parse a JSON request body; raise ApiError(400) naming the parse error."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}") from error
