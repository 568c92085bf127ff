"""Assembly of the runtime from the Hydra config, and its start and graceful stop.

``build_agent(cfg)`` turns ``conf/run_agent.yaml`` (catalog, cluster, workload
and runtime groups plus ``checkpoint``) into an ``Agent``. ``Agent.run(stop)``
starts the metrics endpoint and the Lease renewal and runs the loop until
``stop`` is set. Then it releases the Lease and closes the clients.
``run_until_signalled`` sets ``stop`` on SIGTERM and SIGINT. A signal during
a write lets that write finish (or time out after
``runtime.kubernetes.request_timeout_s`` per attempt), starts no other write,
and then releases the Lease.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agent.controllers.base import Controller
from agent.runtime.capacity import UnsupportedDraError, detect_dra_version
from agent.runtime.cluster_reader import ClusterReader
from agent.runtime.decisions import DecisionRecorder
from agent.runtime.kube_client import KubeClient, KubeError
from agent.runtime.leader import LeaderElector, default_identity
from agent.runtime.loop import ControllerLoop
from agent.runtime.live_signals import MetricsReader
from agent.runtime.safety import FallbackRule, SafetyLayer
from agent.runtime.settings import RuntimeSettings, validate_settings
from agent.runtime.telemetry import AgentMetrics, DecisionLog
from agent.runtime.writer import Writer
from envs.cluster.allocation import GpuNaming
from envs.cluster.spec import ClusterSpec
from envs.config import build_cluster, validate_config

log = logging.getLogger(__name__)


def load_settings(cfg_runtime: Any) -> RuntimeSettings:
    """Merge the ``runtime`` group into RuntimeSettings and check the ranges."""
    merged = validate_config(cfg_runtime, RuntimeSettings)
    settings = OmegaConf.to_object(merged)
    assert isinstance(settings, RuntimeSettings)
    validate_settings(settings)
    return settings


def check_device_classes(kube: KubeClient, cluster: ClusterSpec, *, dra_version: str) -> None:
    """Log an error for each catalog device class the cluster does not define; allocation changes to it would fail."""
    served = {item["metadata"]["name"] for item in kube.list_dra(dra_version, "deviceclasses")}
    needed = sorted({option.device_class for option in cluster.catalog.options})
    for name in needed:
        if name not in served:
            log.error("DeviceClass %r used by the catalog is not defined on the cluster (it has %s); pods of those "
                      "options will not schedule. Install the NVIDIA DRA driver or drop the options", name,
                      sorted(served))


@dataclass
class Agent:
    """A built runtime: the loop and the services around it."""

    settings: RuntimeSettings
    loop: ControllerLoop
    kube: KubeClient
    metrics_reader: MetricsReader
    telemetry: AgentMetrics
    leader: LeaderElector | None
    metrics_port: int = -1

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set or ``max_ticks`` ticks ran; always releases the Lease on the way out."""
        if self.settings.telemetry.metrics_port >= 0 and self.metrics_port < 0:
            self.metrics_port = self.telemetry.serve(host=self.settings.telemetry.metrics_host,
                                                     port=self.settings.telemetry.metrics_port)
        if self.leader is not None:
            self.leader.start()
        try:
            self.loop.run(stop)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        if self.leader is not None:
            self.leader.stop()
        self.telemetry.shutdown()
        self.metrics_reader.close()
        self.kube.close()
        log.info("agent stopped")


def run_until_signalled(agent: Agent, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Run ``agent`` in the main thread until one of ``signals`` arrives; restore the old handlers afterwards."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s; stopping after the write in progress, if any", signal.Signals(signum).name)
        stop.set()

    previous = {number: signal.signal(number, request_stop) for number in signals}
    try:
        agent.run(stop)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def build_agent(cfg: DictConfig, *, controller: Controller | None = None,
                settings: RuntimeSettings | None = None) -> Agent:
    """Build an Agent from the composed config; raise ValueError or KubeError with the fix in the message."""
    settings = settings or load_settings(cfg.runtime)
    cluster = build_cluster(cfg)
    naming = GpuNaming(node_labels=dict(settings.naming.node_labels), dra_products=dict(settings.naming.dra_products))
    fallback = FallbackRule(settings.fallback)
    telemetry = AgentMetrics()

    def count_error(permission: tuple[str, str, str], status: int) -> None:
        telemetry.api_errors.labels(api="kubernetes", code=str(status)).inc()

    kube = KubeClient(settings.kubernetes, on_error=count_error)
    try:
        dra_version = detect_dra_version(kube.served_versions("resource.k8s.io"), settings.kubernetes.dra_version)
    except (UnsupportedDraError, KubeError):
        kube.close()
        raise
    log.info("GPU allocation path: %s", f"DRA resource.k8s.io/{dra_version}" if dra_version else "device plugin")
    if dra_version:
        check_device_classes(kube, cluster, dra_version=dra_version)

    if controller is None:
        # Imported here because it loads torch, which an agent with a given controller does not need.
        from agent.policy import PolicyController

        checkpoint = str(cfg.get("checkpoint", ""))
        controller = PolicyController.from_path(checkpoint, list(cluster.catalog.option_names),
                                                device=str(cfg.get("device", "cpu")))
    identity = settings.leader.identity or default_identity()
    # A dry run writes nothing, not even the Lease, so it never keeps a live replica from leading.
    leader = None
    if settings.leader.enabled and not settings.dry_run:
        leader = LeaderElector(kube, settings.leader, identity=identity)
        kube.write_guard = leader.is_leader
    safety = SafetyLayer(settings.safety, catalog=cluster.catalog)
    writer = Writer(kube, catalog=cluster.catalog, dra_version=dra_version, naming=naming,
                    container=settings.kubernetes.container, events=settings.telemetry.events, identity=identity)
    reader = ClusterReader(kube, cluster=cluster, discovery=settings.discovery, naming=naming,
                           dra_version=dra_version)
    metrics_reader = MetricsReader(settings.prometheus)
    recorder = DecisionRecorder(writer=writer, safety=safety, telemetry=telemetry,
                                decision_log=DecisionLog(settings.telemetry.decision_log), catalog=cluster.catalog)
    loop = ControllerLoop(settings=settings, cluster=cluster, controller=controller, reader=reader,
                          metrics=metrics_reader, writer=writer, safety=safety, fallback=fallback, leader=leader,
                          telemetry=telemetry, recorder=recorder)
    return Agent(settings=settings, loop=loop, kube=kube, metrics_reader=metrics_reader, telemetry=telemetry,
                 leader=leader)
