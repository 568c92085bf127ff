"""The runtime's only gateway to the Kubernetes API (the one module that imports ``kubernetes``).

Every call goes through ``KubeClient._call`` with a (group, resource, verb)
permission that must appear in ``PERMISSIONS``. That table is what
``deploy/rbac.yaml`` grants, and a test compares the two, so the RBAC stays
least-privilege and complete. ``_call`` also sets a timeout on every request,
waits out 429 Too Many Requests and 5xx responses for their Retry-After, and
retries 5xx responses without Retry-After and connection errors on
``TRANSIENT_BACKOFF``. client-go's ``checkWait`` (``k8s.io/client-go/rest/request.go``)
honours Retry-After on the same codes. A 409 Conflict goes back to the
caller, which must re-read the object before retrying. Before every attempt
of a write other than a Lease update, ``_call`` calls ``write_guard`` (the
leader elector's ``is_leader``), so a replica that lost the Lease sends no
further writes, not even the retries of a write in progress. Responses are returned as plain
JSON dicts (``_preload_content=False``), so the rest of the runtime uses no
client model classes and works with any served API version.

The backoff schedules take the sleep function and the randomness as
arguments, so tests run them on a fake clock. ``CONFLICT_RETRY`` mirrors client-go's ``retry.DefaultRetry``
(``k8s.io/client-go/util/retry/util.go``): 5 steps, 10 ms, factor 1.0,
jitter 0.1, meant for several writers of one object. It is used only for 409
Conflict, and the caller re-reads the object before every attempt.
``TRANSIENT_BACKOFF`` spaces retries after 5xx answers and connection errors;
its numbers are this project's choice (0.2 s doubling up to 5 s), not a
client-go constant.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from agent.runtime.settings import KubernetesSettings
from agent.runtime.telemetry import redact_secrets, redact_url

log = logging.getLogger(__name__)

Permission = tuple[str, str, str]
# (API group, resource, verb) of every call below; deploy/rbac.yaml grants exactly these.
PERMISSIONS: frozenset[Permission] = frozenset({
    ("apps", "deployments", "list"),
    ("apps", "deployments", "get"),
    ("apps", "deployments", "patch"),
    ("apps", "deployments/scale", "get"),
    ("apps", "deployments/scale", "patch"),
    ("", "pods", "list"),
    ("", "nodes", "list"),
    ("", "resourcequotas", "list"),
    ("", "events", "create"),
    ("autoscaling", "horizontalpodautoscalers", "list"),
    ("keda.sh", "scaledobjects", "list"),
    ("resource.k8s.io", "deviceclasses", "list"),
    ("resource.k8s.io", "resourceslices", "list"),
    ("resource.k8s.io", "resourceclaims", "list"),
    ("resource.k8s.io", "resourceclaimtemplates", "list"),
    ("resource.k8s.io", "resourceclaimtemplates", "create"),
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
})
TRANSIENT_STATUS = (500, 502, 503, 504)
# Verbs that change the cluster; a Lease update is exempt from the write guard, because it is the election itself.
WRITE_VERBS = frozenset({"create", "update", "patch"})
T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """``steps`` attempts; the wait before attempt i+1 is ``duration * factor**i`` plus up to ``jitter`` of it, capped."""

    steps: int
    duration_s: float
    factor: float = 1.0
    jitter: float = 0.0
    cap_s: float = math.inf

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Return the wait in seconds after failed attempt number ``attempt`` (0-based)."""
        base = min(self.duration_s * (self.factor ** attempt), self.cap_s)
        return base * (1.0 + self.jitter * rand())


CONFLICT_RETRY = Backoff(steps=5, duration_s=0.010, factor=1.0, jitter=0.1)
TRANSIENT_BACKOFF = Backoff(steps=4, duration_s=0.2, factor=2.0, jitter=0.1, cap_s=5.0)


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Return the wait in seconds a Retry-After header requests (delta-seconds or HTTP-date), or None.

    None means the header is absent or invalid.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now(), 0.0)


class ConflictRetriesExhausted(RuntimeError):
    """Every attempt of a conflict-retried write hit 409 Conflict."""


def retry_on_conflict(
    attempt: Callable[[], T],
    *,
    is_conflict: Callable[[Exception], bool],
    backoff: Backoff = CONFLICT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
    what: str = "write",
) -> T:
    """Call ``attempt`` until it does not raise a conflict, at most ``backoff.steps`` times.

    ``attempt`` must re-read the object itself, so each try starts from the
    latest resourceVersion. Errors other than conflicts propagate at once.
    """
    last: Exception | None = None
    for number in range(backoff.steps):
        try:
            return attempt()
        except Exception as error:  # noqa: BLE001 - filtered by is_conflict, re-raised otherwise
            if not is_conflict(error):
                raise
            last = error
            if number == backoff.steps - 1:
                break
            wait = backoff.delay(number, rand)
            log.info("%s hit a conflict (attempt %d of %d); re-reading and retrying in %.3f s", what, number + 1,
                     backoff.steps, wait)
            sleep(wait)
    raise ConflictRetriesExhausted(f"{what} still conflicted after {backoff.steps} attempts: {last}") from last


class KubeError(Exception):
    """An API call that failed; ``status`` is the HTTP code (0 for a connection error)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class ConflictError(KubeError):
    """409 Conflict on a stale resourceVersion: re-read and retry."""


class AlreadyExistsError(KubeError):
    """409 AlreadyExists on create."""


class NotFoundError(KubeError):
    """404 Not Found."""


class KubeUnavailable(KubeError):
    """The API server kept failing (429, 5xx, timeouts or connection errors) through all retries."""


class LeaseNotHeldError(KubeError):
    """A write was not sent because this replica does not hold the leader Lease (``KubeClient.write_guard``)."""


def _status_reason(error: ApiException) -> tuple[str, str]:
    try:
        body = json.loads(error.body or "{}")
    except json.JSONDecodeError:
        return str(error.reason or ""), str(error.body or "")[:300]
    return str(body.get("reason") or error.reason or ""), str(body.get("message") or "")


def build_configuration(settings: KubernetesSettings) -> client.Configuration:
    """Return a client configuration for the auth mode (auto, in_cluster, kubeconfig or none).

    ``none`` sends no credentials and needs ``server``; it exists for the
    loopback virtual cluster. TLS verification stays on unless ``verify_tls`` is false.
    """
    configuration = client.Configuration()
    mode = settings.auth
    if mode in ("auto", "in_cluster"):
        try:
            config.load_incluster_config(client_configuration=configuration)
            mode = "in_cluster"
        except ConfigException as error:
            if settings.auth == "in_cluster":
                raise KubeError(f"in-cluster auth failed ({error}); run inside a pod with a service account "
                                "or set runtime.kubernetes.auth=kubeconfig") from error
            mode = "kubeconfig"
    if mode == "kubeconfig":
        try:
            config.load_kube_config(config_file=settings.kubeconfig or None, context=settings.context or None,
                                    client_configuration=configuration)
        except (ConfigException, OSError) as error:
            raise KubeError(f"kubeconfig auth failed ({error}); set runtime.kubernetes.kubeconfig to a readable "
                            "kubeconfig or runtime.kubernetes.context to an existing context") from error
    if mode == "none" and not settings.server:
        raise KubeError("runtime.kubernetes.auth=none needs runtime.kubernetes.server, e.g. http://127.0.0.1:8080")
    if settings.server:
        configuration.host = settings.server.rstrip("/")
    configuration.verify_ssl = bool(settings.verify_tls)
    configuration.retries = 0
    transport = ("TLS verification on" if settings.verify_tls else "TLS verification OFF") \
        if configuration.host.startswith("https://") else "plain HTTP"
    log.info("Kubernetes API %s (auth %s, %s)", redact_url(configuration.host), mode, transport)
    return configuration


def configuration_secrets(configuration: client.Configuration) -> list[str]:
    """Return the credentials a configuration sends (bearer token, password), to keep them out of messages."""
    secrets = []
    for value in (configuration.api_key or {}).values():
        text = str(value or "")
        secrets.append(text.split(" ", 1)[1] if text.lower().startswith("bearer ") else text)
    secrets.append(str(configuration.password or ""))
    return [secret for secret in secrets if secret]


class KubeClient:
    """Typed wrappers over the API calls the runtime makes; each returns parsed JSON."""

    def __init__(self, settings: KubernetesSettings, *, configuration: client.Configuration | None = None,
                 sleep: Callable[[float], None] = time.sleep, rand: Callable[[], float] = random.random,
                 on_error: Callable[[Permission, int], None] | None = None,
                 write_guard: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        configuration = configuration or build_configuration(settings)
        self.secrets = configuration_secrets(configuration)
        self.api_client = client.ApiClient(configuration)
        self.apps = client.AppsV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.autoscaling = client.AutoscalingV2Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)
        self.sleep = sleep
        self.rand = rand
        self.on_error = on_error
        # Returns whether writes may be sent now; None allows every write (no leader election).
        self.write_guard = write_guard
        self.used_permissions: set[Permission] = set()

    def close(self) -> None:
        self.api_client.close()

    def _call(self, permission: Permission, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one API call with timeout and retries; raise a KubeError subclass on failure."""
        if permission not in PERMISSIONS:
            raise RuntimeError(f"API call {permission} is not declared in PERMISSIONS; add it there and to "
                               "deploy/rbac.yaml")
        self.used_permissions.add(permission)
        guarded = permission[2] in WRITE_VERBS and permission[1] != "leases"
        attempts = max(int(self.settings.max_retries), 0) + 1
        for attempt in range(attempts):
            if guarded and self.write_guard is not None and not self.write_guard():
                raise LeaseNotHeldError(f"{permission[2]} {permission[1]} not sent: this replica does not hold the "
                                        "leader Lease")
            try:
                response = function(*args, _preload_content=False,
                                     _request_timeout=self.settings.request_timeout_s, **kwargs)
                data = response.data
                return json.loads(data) if data else {}
            except ApiException as error:
                status = int(error.status or 0)
                reason, message = _status_reason(error)
                if self.on_error is not None and status != 404:
                    # A 404 is an expected response (no Lease yet, no KEDA CRD), so it is not counted as an error.
                    self.on_error(permission, status)
                described = redact_secrets(f"{permission[2]} {permission[1]} failed with {status} {reason}: {message}",
                                           self.secrets)
                if status == 409:
                    kind = AlreadyExistsError if reason == "AlreadyExists" else ConflictError
                    raise kind(described, status=status, reason=reason) from error
                if status == 404:
                    raise NotFoundError(described, status=status, reason=reason) from error
                if status != 429 and status not in TRANSIENT_STATUS:
                    raise KubeError(described, status=status, reason=reason) from error
                retry_after = parse_retry_after((error.headers or {}).get("Retry-After"))
                if status == 429 or retry_after is not None:
                    # A 429 without the header, or a Retry-After of 0, waits 1 s.
                    wait = retry_after or 1.0
                    if wait > self.settings.max_retry_after_s:
                        raise KubeUnavailable(f"{described}; Retry-After {wait:.0f} s exceeds "
                                              f"runtime.kubernetes.max_retry_after_s", status=status) from error
                else:
                    wait = TRANSIENT_BACKOFF.delay(attempt, self.rand)
                last: KubeError = KubeUnavailable(described, status=status, reason=reason)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                if self.on_error is not None:
                    self.on_error(permission, 0)
                wait = TRANSIENT_BACKOFF.delay(attempt, self.rand)
                last = KubeUnavailable(redact_secrets(
                    f"{permission[2]} {permission[1]} failed: {type(error).__name__}: {error}", self.secrets))
            if attempt + 1 < attempts:
                log.info("%s; retry %d of %d in %.2f s", last, attempt + 1, attempts - 1, wait)
                self.sleep(wait)
        raise last

    # Reads.
    def list_deployments(self, namespace: str = "", label_selector: str = "") -> list[dict[str, Any]]:
        permission = ("apps", "deployments", "list")
        if namespace:
            data = self._call(permission, self.apps.list_namespaced_deployment, namespace,
                              label_selector=label_selector)
        else:
            data = self._call(permission, self.apps.list_deployment_for_all_namespaces, label_selector=label_selector)
        return list(data.get("items") or [])

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(("apps", "deployments", "get"), self.apps.read_namespaced_deployment, name, namespace)

    def list_pods(self, namespace: str = "", field_selector: str = "") -> list[dict[str, Any]]:
        permission = ("", "pods", "list")
        if namespace:
            data = self._call(permission, self.core.list_namespaced_pod, namespace, field_selector=field_selector)
        else:
            data = self._call(permission, self.core.list_pod_for_all_namespaces, field_selector=field_selector)
        return list(data.get("items") or [])

    def list_nodes(self) -> list[dict[str, Any]]:
        return list(self._call(("", "nodes", "list"), self.core.list_node).get("items") or [])

    def list_resource_quotas(self, namespace: str) -> list[dict[str, Any]]:
        data = self._call(("", "resourcequotas", "list"), self.core.list_namespaced_resource_quota, namespace)
        return list(data.get("items") or [])

    def list_hpas(self, namespace: str = "") -> list[dict[str, Any]]:
        permission = ("autoscaling", "horizontalpodautoscalers", "list")
        if namespace:
            data = self._call(permission, self.autoscaling.list_namespaced_horizontal_pod_autoscaler, namespace)
        else:
            data = self._call(permission, self.autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces)
        return list(data.get("items") or [])

    def list_scaled_objects(self, namespace: str = "") -> list[dict[str, Any]]:
        """Return KEDA ScaledObjects; an empty list when the KEDA CRD is not installed."""
        permission = ("keda.sh", "scaledobjects", "list")
        try:
            if namespace:
                data = self._call(permission, self.custom.list_namespaced_custom_object, "keda.sh", "v1alpha1",
                                  namespace, "scaledobjects")
            else:
                data = self._call(permission, self.custom.list_cluster_custom_object, "keda.sh", "v1alpha1",
                                  "scaledobjects")
        except NotFoundError:
            return []
        return list(data.get("items") or [])

    def served_versions(self, group: str) -> list[str]:
        """Return the versions of ``group`` listed under ``/apis``.

        Discovery needs no rule in deploy/rbac.yaml, because Kubernetes' default
        ``system:discovery`` ClusterRole grants it to every authenticated user.
        """
        try:
            response = client.ApisApi(self.api_client).get_api_versions(
                _preload_content=False, _request_timeout=self.settings.request_timeout_s)
        except ApiException as error:
            raise KubeError(f"API discovery (GET /apis) failed with {error.status}",
                            status=int(error.status or 0)) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeUnavailable(f"API discovery (GET /apis) failed: {error}") from error
        for entry in json.loads(response.data).get("groups") or []:
            if entry.get("name") == group:
                return [str(v.get("version")) for v in entry.get("versions") or []]
        return []

    def list_dra(self, version: str, plural: str, *, namespace: str = "") -> list[dict[str, Any]]:
        """List a resource.k8s.io resource (deviceclasses, resourceslices, resourceclaims, resourceclaimtemplates)."""
        permission = ("resource.k8s.io", plural, "list")
        if namespace:
            data = self._call(permission, self.custom.list_namespaced_custom_object, "resource.k8s.io", version,
                              namespace, plural)
        else:
            data = self._call(permission, self.custom.list_cluster_custom_object, "resource.k8s.io", version, plural)
        return list(data.get("items") or [])

    # Writes.
    def get_scale(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(("apps", "deployments/scale", "get"), self.apps.read_namespaced_deployment_scale,
                          name, namespace)

    def patch_scale(self, namespace: str, name: str, *, replicas: int, resource_version: str) -> dict[str, Any]:
        """Set spec.replicas through /scale; a stale ``resource_version`` raises ConflictError."""
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": int(replicas)}}
        return self._call(("apps", "deployments/scale", "patch"), self.apps.patch_namespaced_deployment_scale,
                          name, namespace, body, field_manager=self.settings.field_manager,
                          _content_type="application/merge-patch+json")

    def patch_deployment(self, namespace: str, name: str, *, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch to a Deployment (include metadata.resourceVersion for a conditional write)."""
        return self._call(("apps", "deployments", "patch"), self.apps.patch_namespaced_deployment, name, namespace,
                          body, field_manager=self.settings.field_manager,
                          _content_type="application/merge-patch+json")

    def create_claim_template(self, version: str, namespace: str, *, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(("resource.k8s.io", "resourceclaimtemplates", "create"),
                          self.custom.create_namespaced_custom_object, "resource.k8s.io", version, namespace,
                          "resourceclaimtemplates", body, field_manager=self.settings.field_manager)

    def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(("", "events", "create"), self.core.create_namespaced_event, namespace, body)

    def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(("coordination.k8s.io", "leases", "get"), self.coordination.read_namespaced_lease,
                          name, namespace)

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(("coordination.k8s.io", "leases", "create"), self.coordination.create_namespaced_lease,
                          namespace, body)

    def replace_lease(self, namespace: str, name: str, *, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(("coordination.k8s.io", "leases", "update"), self.coordination.replace_namespaced_lease,
                          name, namespace, body)
