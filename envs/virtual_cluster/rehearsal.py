"""Rehearsal support: a small scenario and a local Prometheus server that scrapes the virtual cluster.

The scenario is one Llama-3.1-8B Deployment, two GPU pools, a tight quota
and rising traffic. It is sized so that every safety rule has something to
do within a minute of simulated traffic. The load outgrows ``max_replicas``,
the quota is smaller than the GPUs, and a cheaper GPU pool invites an
allocation change.
Tests and the rehearsal in ``docs/runtime.md`` build the virtual cluster and
the agent's config from the same mapping, so both sides agree on the
Deployments.

``LocalPrometheus`` runs the ``prometheus`` binary (Debian's package
installs it as ``/usr/bin/prometheus``) bound to 127.0.0.1 with its own
configuration file and TSDB directory, and stops it again. Nothing here
reaches beyond loopback.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from envs.config import CONF_DIR
from envs.traces.records import ArrivalSeries

log = logging.getLogger(__name__)

DEPLOYMENT = "chat-llm"
NAMESPACE = "serving"


def rehearsal_config(*, max_replicas: int = 6, quota_gpus: int = 6, tick_s: float = 15.0,
                     initial_replicas: int = 1) -> DictConfig:
    """Return catalog, cluster and workload groups of the rehearsal, in the layout ``build_cluster`` reads.

    The quota limits both the device-plugin key and the DRA device-class key to
    ``quota_gpus``, so the same scenario runs on either allocation path.
    """
    catalog = OmegaConf.load(CONF_DIR / "catalog" / "default.yaml")
    cluster: dict[str, Any] = {
        "name": "rehearsal",
        "tick_s": tick_s,
        "node_pools": [
            {"name": "h100", "gpu": "H100-80GB", "nodes": 1, "gpus_per_node": 8},
            {"name": "a100", "gpu": "A100-80GB", "nodes": 1, "gpus_per_node": 8},
        ],
        "quota_hard": {
            "requests.nvidia.com/gpu": quota_gpus,
            "gpu.nvidia.com.deviceclass.resource.k8s.io/devices": quota_gpus,
        },
    }
    workload = {
        "deployments": [{
            "name": DEPLOYMENT, "namespace": NAMESPACE, "model": "llama-3.1-8b", "min_replicas": 1,
            "max_replicas": max_replicas, "slo_ttft_p95_s": 1.0, "initial_option": "h100-1",
            "initial_replicas": initial_replicas, "allowed_options": ["h100-1", "a100-1"],
        }]
    }
    return OmegaConf.create({"catalog": catalog, "cluster": cluster, "workload": workload})


def ramp_series(*, ticks: int = 240, start_rps: float = 2.0, peak_rps: float = 60.0, ramp_ticks: int = 20,
                tick_s: float = 15.0, input_tokens: float = 1000.0, output_tokens: float = 200.0) -> ArrivalSeries:
    """Return traffic that rises linearly from ``start_rps`` to ``peak_rps`` over ``ramp_ticks`` ticks, then stays."""
    if ticks < 2 or ramp_ticks < 1:
        raise ValueError(f"ramp_series needs ticks >= 2 and ramp_ticks >= 1, got {ticks} and {ramp_ticks}")
    rate = np.concatenate([np.linspace(start_rps, peak_rps, ramp_ticks), np.full(max(ticks - ramp_ticks, 0),
                                                                                 peak_rps)])[:ticks]
    requests = rate * tick_s
    return ArrivalSeries(name="ramp", tick_s=tick_s, requests=requests, input_tokens=requests * input_tokens,
                         output_tokens=requests * output_tokens, source="synthetic ramp")


def find_prometheus() -> str | None:
    """Return the path of the prometheus binary on PATH or at /usr/bin/prometheus, or None."""
    found = shutil.which("prometheus")
    if found:
        return found
    return "/usr/bin/prometheus" if Path("/usr/bin/prometheus").is_file() else None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape_config(targets: Sequence[str], scrape_interval: str) -> str:
    """Return a prometheus.yml that scrapes ``targets`` (host:port) at ``scrape_interval``."""
    listed = ", ".join(f"'{t}'" for t in targets)
    return (
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  evaluation_interval: {scrape_interval}\n"
        "scrape_configs:\n"
        "  - job_name: virtual-cluster\n"
        f"    scrape_interval: {scrape_interval}\n"
        f"    scrape_timeout: {scrape_interval}\n"
        f"    static_configs:\n      - targets: [{listed}]\n"
    )


class LocalPrometheus:
    """One prometheus process; ``start`` waits until ``/-/ready`` returns 200, ``stop`` ends it."""

    def __init__(self, *, targets: Sequence[str], storage: Path, port: int = 0, scrape_interval: str = "1s",
                 binary: str | None = None) -> None:
        self.binary = binary or find_prometheus()
        if self.binary is None:
            raise FileNotFoundError("the prometheus binary is not installed; run `apt-get install prometheus`")
        self.targets = list(targets)
        self.storage = Path(storage)
        self.port = int(port) or free_port()
        self.scrape_interval = scrape_interval
        self._process: subprocess.Popen | None = None
        self._log_path = self.storage / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> "LocalPrometheus":
        self.storage.mkdir(parents=True, exist_ok=True)
        config = self.storage / "prometheus.yml"
        config.write_text(scrape_config(self.targets, self.scrape_interval), encoding="utf-8")
        command = [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.storage / 'data'}",
                   f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        with open(self._log_path, "ab") as output:
            self._process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited with code {self._process.returncode}; see {self._log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        log.info("Prometheus ready on %s scraping %s every %s", self.url, self.targets,
                                 self.scrape_interval)
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"prometheus did not become ready on {self.url} within {timeout_s:.0f} s; "
                           f"see {self._log_path}")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log.warning("prometheus on %s did not stop within 15 s; killing it", self.url)
            self._process.kill()
            self._process.wait(timeout=5)
        log.info("Prometheus on %s stopped", self.url)
        self._process = None

    def __enter__(self) -> "LocalPrometheus":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
