"""VirtualCluster: the object store, the HTTP API and the simulation driver started and stopped together.

    with VirtualCluster(cluster_spec, series, settings=VirtualClusterSettings(time_factor=15)) as vc:
        print(vc.url)            # http://127.0.0.1:<port>
        vc.step()                # or let the driver thread tick in (scaled) real time

``series`` contains one arrival series per Deployment of the ClusterSpec.

The HTTP layer is a ThreadingHTTPServer that moves JSON to and from
ApiRouter. It speaks HTTP/1.1 with keep-alive, because kubectl and the
Python client reuse connections, so every response carries Content-Length.
It serves plain HTTP only, for loopback rehearsals and tests.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence

from envs.cluster.allocation import GpuNaming
from envs.cluster.spec import ClusterSpec
from envs.traces.records import ArrivalSeries
from envs.virtual_cluster import objects
from envs.virtual_cluster.driver import SimulationDriver
from envs.virtual_cluster.errors import ApiError, FaultInjector
from envs.virtual_cluster.resources import served_resources
from envs.virtual_cluster.router import ApiRouter, decode_body
from envs.virtual_cluster.settings import VirtualClusterSettings
from envs.virtual_cluster.store import ObjectStore

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "virtual-cluster"
    # Headers and body leave in two writes. Without TCP_NODELAY, Nagle's algorithm delays the body until the
    # client's delayed ACK, about 40 ms per response on Linux loopback. Measured on a 2-core Linux machine,
    # one agent tick of 8 API calls took 0.36 s with Nagle on and 0.015 s with it off.
    disable_nagle_algorithm = True
    router: ApiRouter  # set on the subclass that ApiHttpServer builds

    def _respond(self, code: int, headers: dict[str, str], *, payload: Any) -> None:
        if isinstance(payload, str):
            data = payload.encode("utf-8")
            content_type = headers.pop("Content-Type", "text/plain; charset=utf-8")
        else:
            data = json.dumps(payload).encode("utf-8")
            content_type = "application/json"
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = decode_body(raw)
        except ApiError as error:
            self._respond(error.code, {}, payload=error.status_body())
            return
        try:
            code, extra, payload = self.router.handle(self.command, self.path, headers=headers, body=body)
        except Exception as error:  # noqa: BLE001 - a server bug must still answer with a Status
            log.exception("virtual cluster failed on %s %s", self.command, self.path)
            failure = ApiError(500, f"internal error in the virtual cluster: {error}")
            code, extra, payload = failure.code, {}, failure.status_body()
        self._respond(code, dict(extra), payload=payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's parameter name
        log.debug("%s %s", self.address_string(), format % args)


class ApiHttpServer:
    """Serves ``router`` on host:port (port 0 picks a free one) from a daemon thread."""

    def __init__(self, router: ApiRouter, *, host: str, port: int) -> None:
        handler = type("BoundHandler", (_Handler,), {"router": router})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        router.host = f"{host}:{self.port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        # A short poll interval makes stop() return quickly; the cost is a wake-up every 50 ms.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="virtual-cluster-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class VirtualCluster:
    """A Kubernetes API on loopback whose workload is the project's simulator replaying a trace."""

    def __init__(self, cluster: ClusterSpec, series: Sequence[ArrivalSeries], *,
                 settings: VirtualClusterSettings | None = None, naming: GpuNaming | None = None) -> None:
        self.settings = settings or VirtualClusterSettings()
        self.settings.validate()
        if len(series) != len(cluster.deployments):
            raise ValueError(f"got {len(series)} arrival series for {len(cluster.deployments)} Deployments; "
                             "pass one series per Deployment in workload order")
        self.cluster = cluster
        self.naming = naming or GpuNaming()
        self.store = ObjectStore()
        type_list = served_resources(self.settings.dra_version)
        self.types = {t.plural: t for t in type_list}
        self.store.add_validator(self.types["deployments"].key, objects.validate_deployment)
        for plural in ("resourceclaimtemplates", "resourceclaims"):
            if plural in self.types:
                self.store.add_validator(self.types[plural].key, objects.validate_immutable_spec)
        objects.populate(self.store, self.types, cluster=cluster, settings=self.settings, naming=self.naming)
        self.driver = SimulationDriver(cluster, series, store=self.store, types=self.types,
                                       settings=self.settings, naming=self.naming)
        self.faults = FaultInjector()
        self.router = ApiRouter(store=self.store, types=type_list, settings=self.settings, catalog=cluster.catalog,
                                naming=self.naming, faults=self.faults, metrics_text=lambda: self.driver.page.text,
                                step=self.driver.step, snapshot=self.driver.snapshot)
        self._http: ApiHttpServer | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.tick_errors = 0

    @property
    def url(self) -> str:
        if self._http is None:
            raise RuntimeError("the virtual cluster is not started; call start() first")
        return f"http://{self.settings.host}:{self._http.port}"

    @property
    def wall_tick_s(self) -> float:
        """Wall-clock seconds between ticks, or 0 when ticks are manual."""
        factor = self.settings.time_factor
        return self.cluster.tick_s / factor if factor > 0 else 0.0

    def start(self) -> "VirtualCluster":
        self._http = ApiHttpServer(self.router, host=self.settings.host, port=int(self.settings.port))
        self._http.start()
        if self.wall_tick_s > 0:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._run_ticks, name="virtual-cluster-ticks", daemon=True)
            self._ticker.start()
        log.info("virtual cluster serving %s (resource.k8s.io %s, %.3g wall seconds per %g s tick)", self.url,
                 self.settings.dra_version, self.wall_tick_s, self.cluster.tick_s)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=10)
            self._ticker = None
        if self._http is not None:
            self._http.stop()
            log.info("virtual cluster on %s stopped after %d ticks", self.url, self.driver.tick)
            self._http = None

    def step(self, ticks: int = 1) -> dict[str, Any]:
        """Advance ``ticks`` simulator ticks now and return the snapshot."""
        for _ in range(ticks):
            self.driver.step()
        return self.driver.snapshot()

    def _run_ticks(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            deadline += self.wall_tick_s
            if self._stop.wait(max(deadline - time.monotonic(), 0.0)):
                return
            try:
                self.driver.step()
            except Exception:  # noqa: BLE001 - keep serving; the error is logged and counted
                self.tick_errors += 1
                log.exception("virtual cluster tick %d failed (%d failures so far)", self.driver.tick,
                              self.tick_errors)

    def __enter__(self) -> "VirtualCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
