"""Leader election with a coordination.k8s.io/v1 Lease, so only one replica of the agent writes.

The holder renews ``spec.renewTime`` every ``renew_period_s``. Another
replica takes the Lease only after ``leaseDurationSeconds`` have passed on
its own clock since it last saw the Lease record change. The holder's
``renewTime`` is never compared with the local clock, so a holder whose clock
runs ahead or behind can neither keep the Lease after it stops renewing nor
lose it while it renews. This is how client-go's leaderelection package
judges expiry (``isLeaseValid``: observed time plus ``LeaseDurationSeconds``),
and how the Lease API documents ``leaseDurationSeconds`` ("measured against
the time of last observed renewTime"). A replica that has just started waits
one full lease duration before it takes over a Lease held by another replica.

The holder considers itself leader only until
``last renewal + lease_duration_s - renew_period_s``, again on its own clock:
it stops writing one renew period before anyone else may start, which leaves
room for a slow renewal. ``confirm`` re-reads the Lease before the loop
writes, so a takeover that happens between two renewals stops the writes at
once. Every update carries the Lease's resourceVersion, so two candidates
racing for an expired Lease cannot both win. On shutdown the holder releases
the Lease (empty holder, 1 s duration), as client-go's ``ReleaseOnCancel``
does, so a successor need not wait for the expiry.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from typing import Any, Callable

from agent.runtime.kube_client import AlreadyExistsError, ConflictError, KubeClient, KubeError, NotFoundError
from agent.runtime.settings import LeaderSettings

log = logging.getLogger(__name__)


def format_micro_time(seconds: float) -> str:
    """Return a Unix time as a Kubernetes MicroTime string (RFC 3339 with microseconds)."""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str | None) -> float:
    """Return the Unix time of an RFC 3339 time ("...Z" or "...+00:00", with or without fractions); 0 if unreadable.

    The Python client re-serializes a Lease body through its model, which turns
    "2026-01-01T00:00:00.000000Z" into "2026-01-01T00:00:00+00:00", so both forms occur.
    """
    if not text:
        return 0.0
    try:
        parsed = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


class LeaderElector:
    """Acquires and renews one Lease; ``is_leader`` gates every write of the runtime."""

    def __init__(self, kube: KubeClient, settings: LeaderSettings, *, identity: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.settings = settings
        self.identity = identity or settings.identity or default_identity()
        self.clock = clock
        self._valid_until = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Number of times this replica became leader; the loop compares it to notice a gap in leadership.
        self.transitions = 0
        # The Lease spec as last read, and the local time at which it was first seen in that form.
        self._observed_record: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._skew_reported: set[str] = set()

    def is_leader(self) -> bool:
        if not self.settings.enabled:
            return True
        with self._lock:
            return self.clock() < self._valid_until

    def _spec(self, now: float, previous: dict[str, Any]) -> dict[str, Any]:
        taking_over = previous.get("holderIdentity") != self.identity
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(round(self.settings.lease_duration_s)),
            "acquireTime": format_micro_time(now) if taking_over else previous.get("acquireTime")
            or format_micro_time(now),
            "renewTime": format_micro_time(now),
            "leaseTransitions": int(previous.get("leaseTransitions") or 0) + (1 if taking_over and previous else 0),
        }

    def try_acquire_or_renew(self) -> bool:
        """Make one attempt to take or renew the Lease; return whether this replica holds it afterwards."""
        if not self.settings.enabled:
            return True
        namespace, name = self.settings.namespace, self.settings.name
        now = self.clock()
        was_leader = self.is_leader()
        try:
            try:
                lease = self.kube.get_lease(namespace, name)
            except NotFoundError:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": name, "namespace": namespace}, "spec": self._spec(now, {})}
                self.kube.create_lease(namespace, body)
            else:
                spec = lease.get("spec") or {}
                holder = spec.get("holderIdentity") or ""
                expires = self._observe(spec, now)
                if holder and holder != self.identity and now < expires:
                    self._set_valid_until(0.0, was_leader=was_leader,
                                          why=f"held by {holder}, who may take it until at least "
                                              f"{format_micro_time(expires)} by this replica's clock")
                    return False
                lease["spec"] = self._spec(now, spec)
                self.kube.replace_lease(namespace, name, body=lease)
        except (AlreadyExistsError, ConflictError) as error:
            self._set_valid_until(0.0, was_leader=was_leader,
                                  why=f"another candidate updated the Lease first ({error.status})")
            return False
        except KubeError as error:
            log.warning("Lease %s/%s: renewal failed: %s", namespace, name, error)
            return self.is_leader()
        self._set_valid_until(now + self.settings.lease_duration_s - self.settings.renew_period_s,
                              was_leader=was_leader, why="")
        return True

    def _observe(self, spec: dict[str, Any], now: float) -> float:
        """Note the Lease record read at ``now``; return when it expires by this replica's clock.

        The record expires ``leaseDurationSeconds`` after the local time at
        which it was first seen in its current form. A record without a
        duration uses this replica's ``lease_duration_s``.
        """
        record = tuple(spec.get(name) for name in ("holderIdentity", "renewTime", "acquireTime",
                                                    "leaseDurationSeconds", "leaseTransitions"))
        with self._lock:
            changed = record != self._observed_record
            if changed:
                self._observed_record = record
                self._observed_at = now
            observed_at = self._observed_at
        if changed:
            self._report_skew(spec, now)
        duration = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration_s)
        return observed_at + duration

    def _report_skew(self, spec: dict[str, Any], now: float) -> None:
        """Warn once per holder whose renewTime is further from this replica's clock than a lease duration."""
        holder = spec.get("holderIdentity") or ""
        renewed = parse_micro_time(spec.get("renewTime"))
        if not holder or holder == self.identity or not renewed:
            return
        offset = renewed - now
        if abs(offset) <= self.settings.lease_duration_s:
            self._skew_reported.discard(holder)
            return
        if holder not in self._skew_reported:
            self._skew_reported.add(holder)
            log.warning("Lease %s/%s: renewTime of holder %s is %.0f s %s this replica's clock; its clock may be "
                        "skewed. Expiry is judged on this replica's clock only", self.settings.namespace,
                        self.settings.name, holder, abs(offset), "ahead of" if offset > 0 else "behind")

    def confirm(self) -> bool:
        """Re-read the Lease and return whether this replica still holds it.

        A Lease that names another holder ends leadership at once. When the read
        fails, the result falls back to the local deadline of the last renewal.
        """
        if not self.settings.enabled:
            return True
        if not self.is_leader():
            return False
        namespace, name = self.settings.namespace, self.settings.name
        try:
            lease = self.kube.get_lease(namespace, name)
        except KubeError as error:
            log.info("Lease %s/%s: could not re-read it before writing (%s); relying on the last renewal",
                     namespace, name, error)
            return self.is_leader()
        spec = lease.get("spec") or {}
        self._observe(spec, self.clock())
        holder = spec.get("holderIdentity") or ""
        if holder != self.identity:
            self._set_valid_until(0.0, was_leader=True, why=f"the Lease now names {holder or 'no holder'}")
            return False
        return self.is_leader()

    def _set_valid_until(self, until: float, *, was_leader: bool, why: str) -> None:
        with self._lock:
            self._valid_until = until
        leader = until > 0
        if leader and not was_leader:
            self.transitions += 1
            log.info("Lease %s/%s acquired by %s", self.settings.namespace, self.settings.name, self.identity)
        elif was_leader and not leader:
            log.warning("Lease %s/%s lost by %s: %s", self.settings.namespace, self.settings.name, self.identity, why)

    def release(self) -> None:
        """Give the Lease up if this replica holds it; errors are logged, because shutdown must go on."""
        if not self.settings.enabled or not self.is_leader():
            return
        namespace, name = self.settings.namespace, self.settings.name
        with self._lock:
            self._valid_until = 0.0
        try:
            lease = self.kube.get_lease(namespace, name)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec.update({"holderIdentity": "", "leaseDurationSeconds": 1,
                         "renewTime": format_micro_time(self.clock())})
            lease["spec"] = spec
            self.kube.replace_lease(namespace, name, body=lease)
            log.info("Lease %s/%s released by %s", namespace, name, self.identity)
        except KubeError as error:
            log.warning("Lease %s/%s: release failed (%s); it expires on its own", namespace, name, error)

    def start(self) -> None:
        """Renew in a background thread every ``renew_period_s`` until ``stop``."""
        if not self.settings.enabled:
            return
        self.try_acquire_or_renew()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lease-renewal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.renew_period_s):
            self.try_acquire_or_renew()

    def stop(self) -> None:
        """Stop renewing and release the Lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.renew_period_s + 5)
            self._thread = None
        self.release()
