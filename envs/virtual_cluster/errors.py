"""API errors as Kubernetes ``Status`` bodies, and the fault injector of the virtual cluster.

Every error the server returns is a ``meta/v1 Status`` with the HTTP code, a
machine-readable ``reason`` and ``details``, in the shape client-go and the
Python client parse (``ApiException.status``, ``.reason``, ``.body``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

# HTTP code to the Status reason the API server uses for it.
REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


class ApiError(Exception):
    """An error the HTTP layer turns into a Status body with ``code``."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str = "",
        details: dict[str, Any] | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.reason = reason or REASONS.get(self.code, "Unknown")
        self.details = dict(details or {})
        self.retry_after_s = retry_after_s

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details = dict(self.details)
        if self.retry_after_s is not None:
            details["retryAfterSeconds"] = int(self.retry_after_s)
        if details:
            body["details"] = details
        return body


def not_found(kind: str, name: str, *, group: str = "") -> ApiError:
    resource = f"{kind}.{group}" if group else kind
    return ApiError(404, f'{resource} "{name}" not found', details={"name": name, "group": group, "kind": kind})


def conflict(kind: str, name: str, *, group: str = "") -> ApiError:
    resource = f"{kind}.{group}" if group else kind
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        details={"name": name, "group": group, "kind": kind},
    )


def already_exists(kind: str, name: str, *, group: str = "") -> ApiError:
    resource = f"{kind}.{group}" if group else kind
    return ApiError(
        409, f'{resource} "{name}" already exists', reason="AlreadyExists",
        details={"name": name, "group": group, "kind": kind},
    )


def invalid(kind: str, name: str, *, field_path: str, message: str, group: str = "") -> ApiError:
    """Return the 422 the API server sends when validation of one field fails."""
    resource = f"{kind}.{group}" if group else kind
    return ApiError(
        422,
        f'{resource} "{name}" is invalid: {field_path}: {message}',
        details={
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field_path}],
        },
    )


@dataclass
class FaultRule:
    """Rule that fails the next ``count`` matching requests with ``status`` after ``latency_s``.

    ``count`` -1 means every matching request until the rule is cleared.
    ``status`` 0 adds only the latency. A request matches when its method is in
    ``methods`` (all methods when empty) and its path contains ``path_contains``.
    The ``/metrics`` page matches only rules whose ``path_contains`` is set.
    A 429 or 503 response carries ``Retry-After: <retry_after_s>`` and
    ``details.retryAfterSeconds``, as the API server sends them when it
    throttles or sheds load. ``retry_after_s`` null sends the error without them.
    """

    status: int = 0
    count: int = 1
    latency_s: float = 0.0
    retry_after_s: int | None = 1
    methods: list[str] = field(default_factory=list)
    path_contains: str = ""

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method.upper() not in {m.upper() for m in self.methods}:
            return False
        if path == "/metrics" and not self.path_contains:
            # Only a rule that names /metrics breaks scraping, so API faults leave Prometheus alone.
            return False
        return self.path_contains in path


class FaultInjector:
    """Fault rules set through ``POST /_faults``, consumed by matching API requests."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._sleep = sleep
        self.injected: dict[int, int] = {}

    def add(self, raw: dict[str, Any]) -> FaultRule:
        """Add a rule from its JSON form; raise ApiError(400) naming an invalid key or value."""
        known = set(FaultRule.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ApiError(400, f"unknown fault keys {unknown}; known keys: {sorted(known)}")
        try:
            rule = FaultRule(**raw)
        except TypeError as error:
            raise ApiError(400, f"invalid fault rule {raw}: {error}") from error
        if rule.status and rule.status not in REASONS:
            raise ApiError(400, f"fault status {rule.status} is not supported; use one of {sorted(REASONS)}")
        if rule.count == 0 or rule.count < -1:
            raise ApiError(400, f"fault count {rule.count} is invalid; use a positive count or -1 for no limit")
        retry_after = rule.retry_after_s
        if retry_after is not None and (not isinstance(retry_after, int) or isinstance(retry_after, bool)
                                        or retry_after < 0):
            raise ApiError(400, f"fault retry_after_s {retry_after!r} is invalid; use whole seconds >= 0 or null")
        with self._lock:
            self._rules.append(rule)
        log.info("fault rule added: %s", rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(rule) for rule in self._rules]

    def check(self, method: str, path: str) -> None:
        """Apply the first matching rule: sleep its latency, then raise its error if it has one."""
        with self._lock:
            rule = next((r for r in self._rules if r.matches(method, path)), None)
            if rule is None:
                return
            if rule.count > 0:
                rule.count -= 1
                if rule.count == 0:
                    self._rules.remove(rule)
        if rule.latency_s > 0:
            self._sleep(rule.latency_s)
        if not rule.status:
            return
        with self._lock:
            self.injected[rule.status] = self.injected.get(rule.status, 0) + 1
        if rule.status == 409:
            segments = path.split("?")[0].rstrip("/").split("/")
            name = segments[-2] if segments[-1] in ("scale", "status") and len(segments) > 1 else segments[-1]
            raise conflict("object", name)
        retry_after = rule.retry_after_s if rule.status in (429, 503) else None
        raise ApiError(rule.status, f"injected fault {rule.status} for {method} {path}", retry_after_s=retry_after)
