"""Train an autoscaling policy with MaskablePPO.

    python scripts/train.py                         # the default config (conf/train.yaml)
    python scripts/train.py algo.total_timesteps=50000 seed=3
    python scripts/train.py hydra.run.dir=outputs/my_run   # run again in the same dir to resume

Writes the resolved config, TensorBoard logs (tb/), periodic checkpoints and
the final policy.safetensors / policy.json into the Hydra run directory.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.training import train  # noqa: E402
from envs.config import ConfigError  # noqa: E402

log = logging.getLogger("train")


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        stem = train(cfg, run_dir)
    except ConfigError as error:
        log.error("%s", error)
        raise SystemExit(2) from error
    print(f"policy written to {stem}.json")


if __name__ == "__main__":
    main()
