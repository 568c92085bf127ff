"""Shared fixtures: the catalog, the default run config and small clusters.

Tests compute expectations from the hand-typed catalog (conf/catalog/handbook.yaml),
whose figures do not change when the generated default catalog is regenerated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from envs.cluster.catalog import parse_catalog
from envs.cluster.spec import ClusterSpec, parse_cluster
from envs.traces.records import ArrivalSeries

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def catalog():
    return parse_catalog(yaml.safe_load((ROOT / "conf/catalog/handbook.yaml").read_text()))


def make_cluster(catalog, pools, deployments, quota=None, tick_s=15.0) -> ClusterSpec:
    return parse_cluster({"name": "test", "tick_s": tick_s, "node_pools": pools, "quota_hard": quota or {}},
                         catalog, deployments)


def constant_series(rate_per_s: float, ticks: int, input_tokens: float = 1000.0, output_tokens: float = 100.0,
                    tick_s: float = 15.0, name: str = "constant") -> ArrivalSeries:
    count = np.full(ticks, rate_per_s * tick_s)
    return ArrivalSeries(name=name, tick_s=tick_s, requests=count, input_tokens=count * input_tokens,
                         output_tokens=count * output_tokens)


@pytest.fixture(scope="session")
def default_cfg():
    return OmegaConf.create({
        "catalog": OmegaConf.load(ROOT / "conf/catalog/handbook.yaml"),
        "cluster": OmegaConf.load(ROOT / "conf/cluster/small.yaml"),
        "workload": OmegaConf.load(ROOT / "conf/workload/code_llm.yaml"),
        "trace": OmegaConf.load(ROOT / "conf/trace/azure_code.yaml"),
        "algo": OmegaConf.load(ROOT / "conf/algo/ppo.yaml"),
        "reward": OmegaConf.load(ROOT / "conf/reward/default.yaml"),
        "seed": 0,
    })
