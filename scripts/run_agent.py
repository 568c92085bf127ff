"""Run the autoscaler against a Kubernetes cluster (or the virtual cluster).

    python scripts/run_agent.py                                      # dry run with conf/runtime/default.yaml
    python scripts/run_agent.py runtime.dry_run=false                # write decisions
    python scripts/run_agent.py runtime.kubernetes.auth=none \\
        runtime.kubernetes.server=http://127.0.0.1:8080 runtime.prometheus.url=http://127.0.0.1:9090

SIGTERM or SIGINT lets the write in progress finish, starts no other write,
releases the leader Lease and exits 0. Exits 2 on an invalid configuration or
an unsupported cluster.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.checkpoint import CheckpointError  # noqa: E402
from agent.runtime.app import build_agent, run_until_signalled  # noqa: E402
from agent.runtime.capacity import UnsupportedDraError  # noqa: E402
from agent.runtime.kube_client import KubeError  # noqa: E402
from envs.config import ConfigError  # noqa: E402

log = logging.getLogger("run_agent")


@hydra.main(config_path="../conf", config_name="run_agent", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        agent = build_agent(cfg)
    except (ConfigError, CheckpointError, UnsupportedDraError, KubeError, ValueError) as error:
        log.error("cannot start: %s", error)
        raise SystemExit(2) from error
    run_until_signalled(agent)


if __name__ == "__main__":
    main()
