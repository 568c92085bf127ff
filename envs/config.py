"""Typed schemas of the Hydra config groups, and builders that turn a config into objects.

Scripts merge the composed config into these dataclasses (``validate_config``)
so that a misspelt key or a wrong type fails at start with a message naming
the key, instead of being ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from envs.cluster.catalog import Catalog, CatalogError, parse_catalog
from envs.cluster.spec import ClusterSpec, parse_cluster

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigError(ValueError):
    """Invalid configuration; the message names the key and the fix."""


@dataclass
class NodePoolConf:
    name: str = "???"
    gpu: str = "???"
    nodes: int = 1
    gpus_per_node: int = 8
    mig_layout: Dict[str, int] = field(default_factory=dict)
    sharing: str = "whole"
    share_replicas: int = 1


@dataclass
class ClusterConf:
    name: str = "cluster"
    tick_s: float = 15.0
    node_pools: List[NodePoolConf] = field(default_factory=list)
    quota_hard: Dict[str, float] = field(default_factory=dict)


@dataclass
class DeploymentConf:
    name: str = "???"
    model: str = "???"
    min_replicas: int = 1
    max_replicas: int = 16
    slo_ttft_p95_s: float = 2.0
    initial_option: str = ""
    initial_replicas: int = 1
    allowed_options: List[str] = field(default_factory=list)
    # Names of conf/trace/*.yaml files this Deployment's traffic comes from;
    # empty means the run's ``trace`` group.
    traces: List[str] = field(default_factory=list)
    rate_scale: float = 1.0
    queue_timeout_s: float = 60.0
    namespace: str = "default"


@dataclass
class WorkloadConf:
    deployments: List[DeploymentConf] = field(default_factory=list)


@dataclass
class TraceConf:
    # Label used in reports; empty means the file name of ``path``.
    name: str = ""
    kind: str = "???"
    path: str = "???"
    tick_s: float = 15.0
    time_scale: float = 1.0
    rate_scale: float = 1.0
    clients: Optional[List[int]] = None
    window_start_s: Optional[float] = None
    window_end_s: Optional[float] = None
    split: str = "all"
    train_fraction: float = 0.7
    seed: Optional[int] = None
    mean_input_tokens: Optional[float] = None
    mean_output_tokens: Optional[float] = None
    # Window of a per-second series (kind nasa), in days from its first second.
    start_day: Optional[float] = None
    days: Optional[float] = None


@dataclass
class RewardConf:
    cost_weight: float = 1.0
    slo_weight: float = 30.0
    drop_weight: float = 30.0
    churn_weight: float = 0.05
    allocation_change_weight: float = 0.1
    cost_basis: str = "usd"


@dataclass
class RandomizationConf:
    rate_scale: List[float] = field(default_factory=lambda: [1.0, 1.0])
    startup_scale: List[float] = field(default_factory=lambda: [1.0, 1.0])
    cluster_scale: List[float] = field(default_factory=lambda: [1.0, 1.0])
    input_token_scale: List[float] = field(default_factory=lambda: [1.0, 1.0])
    output_token_scale: List[float] = field(default_factory=lambda: [1.0, 1.0])
    random_window: bool = True
    initial_allocation: float = 0.0


@dataclass
class AlgoConf:
    name: str = "maskable_ppo"
    n_envs: int = 64
    episode_ticks: int = 120
    total_timesteps: int = 200_000
    n_steps: int = 64
    batch_size: int = 2048
    n_epochs: int = 5
    learning_rate: float = 3e-4
    gamma: float = 0.97
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    net_arch: List[int] = field(default_factory=lambda: [128, 128])
    # Initial logit added to "keep the current option" (see agent/training.py).
    keep_option_logit: float = 3.0
    # Initial logit added to "hold the replica count" (see agent/training.py).
    hold_level_logit: float = 0.0
    device: str = "auto"
    # torch intra-op threads for training on the CPU; 0 keeps torch's default.
    torch_threads: int = 1
    checkpoint_every_steps: int = 50_000
    # Evaluate against HPA on the held-out window this often (0: never); the
    # policy metadata then records when the policy first beat HPA.
    compare_with_hpa_every_steps: int = 0
    randomization: RandomizationConf = field(default_factory=RandomizationConf)


def validate_config(cfg: DictConfig, schema: type, group: str = "") -> DictConfig:
    """Merge ``cfg`` into the structured ``schema``; raise ConfigError naming a bad key or type.

    ``group`` is the config group ``cfg`` came from (``"workload"``), used to
    give the full key path in the message.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(_describe_merge_error(error, schema, group)) from error
    return merged  # type: ignore[return-value]


def _describe_merge_error(error: OmegaConfBaseException, schema: type, group: str) -> str:
    """Return a one-line message for an OmegaConf merge error, with the key path and the fix."""
    key = str(getattr(error, "full_key", None) or "?")
    # Keys inside list items (a Deployment, a node pool) are relative to the item.
    where = f"the {group} config" if group else "the config"
    # OmegaConf appends the full key and the object types on further lines; the first line is the cause.
    cause = str(getattr(error, "msg", None) or error).splitlines()[0].rstrip(".")
    owner = getattr(error, "object_type", None) or schema
    if isinstance(error, ConfigKeyError) and is_dataclass(owner):
        known = [item.name for item in fields(owner)]
        return f"unknown key {key!r} in {where} ({owner.__name__}). Remove or rename it; the known keys are {known}."
    return (
        f"invalid value for key {key!r} in {where}: {cause}. Give a value of the type that "
        f"{getattr(owner, '__name__', schema.__name__)} in envs/config.py declares."
    )


def load_group_file(group: str, name: str) -> DictConfig:
    """Load ``conf/<group>/<name>.yaml`` outside Hydra composition (for per-Deployment traces)."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        raise ConfigError(
            f"{group} config {name!r} not found: there is no {path}. Use one of {known} or add that file."
        )
    return OmegaConf.load(path)  # type: ignore[return-value]


def build_catalog(catalog_cfg: Any) -> Catalog:
    raw = OmegaConf.to_container(catalog_cfg, resolve=True) if isinstance(catalog_cfg, DictConfig) else catalog_cfg
    return parse_catalog(raw)  # type: ignore[arg-type]


def build_cluster(cfg: DictConfig) -> ClusterSpec:
    """Build the ClusterSpec of a run from its ``catalog``, ``cluster`` and ``workload`` groups.

    Raises ConfigError for every invalid value, including those the catalog
    and cluster parsers reject, so that scripts report all of them the same way.
    """
    cluster_raw = OmegaConf.to_container(validate_config(cfg.cluster, ClusterConf, "cluster"), resolve=True)
    workload = OmegaConf.to_container(validate_config(cfg.workload, WorkloadConf, "workload"), resolve=True)
    try:
        catalog = build_catalog(cfg.catalog)
        return parse_cluster(cluster_raw, catalog, workload["deployments"])  # type: ignore[index,arg-type]
    except CatalogError as error:
        raise ConfigError(str(error)) from error


def trace_spec(cfg_trace: Any, split: str | None = None) -> dict:
    """Return a validated plain trace spec, with ``split`` overriding the config's split."""
    spec = OmegaConf.to_container(validate_config(cfg_trace, TraceConf, "trace"), resolve=True)
    assert isinstance(spec, dict)
    if split is not None:
        spec["split"] = split
    spec.pop("name", None)
    return {k: v for k, v in spec.items() if v is not None}


def trace_label(cfg_trace: Any) -> str:
    """Return the report label of a trace config: its ``name`` or its file name."""
    name = str(cfg_trace.get("name", "") or "")
    return name or Path(str(cfg_trace.get("path", "trace")).split(":")[-1]).stem


def load_deployment_series(
    cfg: DictConfig, cluster: ClusterSpec, split: str | None = None, default_traces: Sequence[str] = ()
) -> list[list]:
    """Load the arrival series of every Deployment, scaled by its ``rate_scale``.

    A Deployment lists trace config names in ``traces``; with none it uses
    ``default_traces`` (training passes the run's ``train_traces``), and with
    neither the run's ``trace`` group. Several names give several series to
    sample episodes from (multi-trace training).
    """
    from envs.traces.loader import load_trace

    workload = validate_config(cfg.workload, WorkloadConf, "workload")
    result = []
    for deployment, conf in zip(cluster.deployments, workload.deployments):
        names = list(conf.traces) or [str(n) for n in default_traces]
        specs = [load_group_file("trace", n) for n in names] if names else [cfg.trace]
        labels = names or ["trace"]
        series = []
        for label, spec in zip(labels, specs):
            try:
                loaded = load_trace(trace_spec(spec, split))
            except (ValueError, OSError) as error:
                # TraceSpecError, TraceFormatError and a missing file all become
                # ConfigError, which the scripts report without a traceback.
                if isinstance(error, ConfigError):
                    raise
                raise ConfigError(
                    f"Deployment {deployment.name!r}: trace config {label!r} could not be loaded. {error}"
                ) from error
            series.append(loaded.rate_scale(deployment.rate_scale) if deployment.rate_scale != 1.0 else loaded)
        result.append(series)
    return result
