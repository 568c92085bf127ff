"""Serve a simulated cluster on loopback for rehearsing the runtime.

    python scripts/virtual_cluster.py                                   # real time, DRA v1, port 8080
    python scripts/virtual_cluster.py virtual_cluster.time_factor=15    # one 15 s tick per second
    python scripts/virtual_cluster.py virtual_cluster.dra_version=none prometheus.enabled=true

kubectl works against it: kubectl --server http://127.0.0.1:8080 get deployments -A.
Faults: curl -X POST http://127.0.0.1:8080/_faults -d '{"status": 503, "count": 5}'.
Stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envs.config import ConfigError, build_cluster, load_deployment_series, validate_config  # noqa: E402
from envs.virtual_cluster import VirtualCluster, VirtualClusterSettings  # noqa: E402
from envs.virtual_cluster.rehearsal import LocalPrometheus  # noqa: E402

log = logging.getLogger("virtual_cluster")


@hydra.main(config_path="../conf", config_name="virtual_cluster", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        settings = OmegaConf.to_object(validate_config(cfg.virtual_cluster, VirtualClusterSettings))
        cluster = build_cluster(cfg)
        series = [s[0] for s in load_deployment_series(cfg, cluster, split=str(cfg.get("split", "all")))]
        virtual = VirtualCluster(cluster, series, settings=settings)
    except (ConfigError, ValueError) as error:
        log.error("%s", error)
        raise SystemExit(2) from error

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    prometheus = None
    scratch = None
    with virtual:
        print(f"virtual cluster: {virtual.url}  (kubectl --server {virtual.url} get deployments -A)", flush=True)
        if cfg.prometheus.enabled:
            storage = str(cfg.prometheus.storage_path or "")
            if not storage:
                scratch = tempfile.TemporaryDirectory(prefix="virtual-cluster-prometheus-")
                storage = scratch.name
            target = virtual.url.removeprefix("http://")
            prometheus = LocalPrometheus(targets=[target], storage=Path(storage), port=int(cfg.prometheus.port),
                                         scrape_interval=str(cfg.prometheus.scrape_interval)).start()
            print(f"prometheus: {prometheus.url}", flush=True)
        try:
            stop.wait()
        finally:
            if prometheus is not None:
                prometheus.stop()
            if scratch is not None:
                scratch.cleanup()


if __name__ == "__main__":
    main()
