"""A stand-in policy for rehearsals: a checkpoint whose decision never depends on the observation.

Before a trained policy exists, an operator can still rehearse the runtime
(dry run, RBAC, fallbacks, writes) with a checkpoint that always picks one
utilisation level and one allocation option. It loads through the same
checksum and layout checks as a trained one. It is not an autoscaling
policy: it sizes replicas for a fixed target utilisation and never learns.

    python -m agent.runtime.rehearsal --out checkpoints/rehearsal/policy --level 4 --option a100-1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from agent.checkpoint import save_checkpoint
from agent.policy import build_policy
from envs.actions import N_LEVELS, action_masks, decode_actions
from envs.cluster.catalog import Catalog
from envs.config import CONF_DIR, build_catalog
from envs.observation import EncoderContext, new_history
from envs.signals import WorkloadSignals, batch_signals


def option_action(catalog: Catalog, option: int) -> int:
    """Return the value of the option action dimension that decodes to catalog option ``option``.

    Every value is decoded on a one-row batch where all options are free and
    the Deployment runs some other option, so this follows whatever option
    layout ``envs.actions`` uses, with or without a "keep the current option" value.
    """
    from omegaconf import OmegaConf

    from envs.cluster.spec import parse_cluster

    model = next(iter(catalog.models))
    pools = [{"name": f"pool-{i}", "gpu": gpu, "nodes": 1, "gpus_per_node": 8} for i, gpu in enumerate(catalog.gpus)]
    deployment = {"name": "probe", "model": model, "initial_option": catalog.options[0].name}
    cluster = parse_cluster(OmegaConf.create({"node_pools": pools}), catalog, [deployment])
    ctx = EncoderContext.from_cluster(cluster)
    ctx.fits[:] = True
    other = (option + 1) % len(catalog.options)
    record = WorkloadSignals(name="probe", desired_replicas=1, ready_replicas=1, option_index=other,
                             free_slots={kind: 64.0 for kind in catalog.slot_kinds})
    batch = batch_signals([record], catalog.slot_kinds, ctx.n_options)
    for value in range(int(action_masks(ctx, batch).shape[1]) - N_LEVELS):
        _, options = decode_actions(np.array([[0, value]]), ctx, batch, new_history(batch))
        if int(options[0]) == option:
            return value
    raise ValueError(f"no value of the option action selects option {catalog.options[option].name!r}")


def write_fixed_policy(path_stem: str | Path, catalog: Catalog, *, level: int, option: str) -> Path:
    """Write a checkpoint that always chooses ``level`` and catalog option ``option``; return its .json path."""
    if not 0 <= level < N_LEVELS:
        raise ValueError(f"level {level} is invalid; use 0 (hold) to {N_LEVELS - 1}")
    names = list(catalog.option_names)
    policy = build_policy(len(names), [8])
    with torch.no_grad():
        policy.action_net.weight.zero_()
        policy.action_net.bias.zero_()
        policy.action_net.bias[level] = 10.0
        policy.action_net.bias[N_LEVELS + option_action(catalog, catalog.option_index(option))] = 10.0
    _, meta = save_checkpoint(path_stem, policy.state_dict(), option_names=names, net_arch=[8],
                              extra={"rehearsal": {"level": level, "option": option}})
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint path without suffix; writes .json and .safetensors")
    parser.add_argument("--level", type=int, default=4,
                        help="action level: 0 holds the replica count, the others are listed in envs/actions.py")
    parser.add_argument("--option", default="h100-1", help="catalog option name to run on")
    parser.add_argument("--catalog", default=str(CONF_DIR / "catalog" / "default.yaml"), help="catalog YAML file")
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    catalog = build_catalog(OmegaConf.load(args.catalog))
    try:
        meta = write_fixed_policy(args.out, catalog, level=args.level, option=args.option)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
