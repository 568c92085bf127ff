"""Compare controllers (the policy, HPA and baselines) on held-out traffic.

    python scripts/evaluate.py                                  # policy vs HPA on the default trace
    python scripts/evaluate.py 'eval.controllers=[policy,hpa]' 'eval.seeds=[0,1,2,3,4]'
    python scripts/evaluate.py checkpoint=outputs/train/<run>/policy.json
    python scripts/evaluate.py eval=heldout record_in_checkpoint=true   # summary into policy.json

Writes results.json, results.md and PNG plots into the Hydra run directory and
prints the table.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.checkpoint import record_evaluation  # noqa: E402
from agent.evaluation import evaluate  # noqa: E402
from agent.report import render_markdown, summarize_records  # noqa: E402
from envs.config import ConfigError  # noqa: E402

log = logging.getLogger("evaluate")


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        records = evaluate(cfg, run_dir)
    except (ConfigError, ValueError) as error:
        log.error("%s", error)
        raise SystemExit(2) from error
    print(render_markdown(records))
    print(f"results written to {run_dir / 'results.json'}")
    if cfg.get("record_in_checkpoint", False):
        protocol = OmegaConf.to_container(cfg.eval, resolve=True)
        summary = {
            "protocol": {key: protocol.get(key) for key in ("controllers", "seeds", "traces", "split", "fidelity")},
            "workload": [str(deployment.name) for deployment in cfg.workload.deployments],
            "cluster": str(cfg.cluster.get("name", "")),
            "metrics": summarize_records(records),
        }
        path = record_evaluation(str(cfg.checkpoint), summary)
        print(f"evaluation summary recorded in {path}")


if __name__ == "__main__":
    main()
