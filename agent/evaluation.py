"""Evaluation: run controllers on the same trace windows and seeds, write results.

For every (trace, seed) pair, each controller drives an identical simulated
cluster over the whole held-out window. The seed resamples the arrival count
of each tick from a Poisson distribution around the trace's count, so seeds
differ in traffic noise but every controller sees the same traffic.
Outputs, in the run directory: ``results.json`` (one record per controller,
trace and seed), ``results.md`` (a table of means) and PNG time series.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from agent.atomic import write_json_atomic, write_text_atomic
from agent.controllers.base import Controller
from agent.controllers.registry import ControllerContext, make_controller
from agent.metrics import EpisodeTrace, summarize
from envs.cluster.spec import ClusterSpec
from envs.config import build_cluster, load_deployment_series, load_group_file, trace_label
from envs.observation import EncoderContext
from envs.serving.des import DiscreteEventServing, TraceSource
from envs.sim.params import Randomization
from envs.sim.simulator import BatchedSimulator
from envs.traces.records import ArrivalSeries

log = logging.getLogger(__name__)

NO_RANDOMIZATION = Randomization(random_window=False)
# Serving models evaluation can run: the batched fluid model or the per-request discrete-event model.
FIDELITIES = ("fluid", "des")


def perturb_series(series: ArrivalSeries, seed: int) -> ArrivalSeries:
    """Resample each tick's request count from Poisson(count); tokens scale with it."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(series.requests).astype(np.float64)
    ratio = np.where(series.requests > 0, counts / np.maximum(series.requests, 1e-9), 0.0)
    return dataclasses.replace(
        series,
        requests=counts,
        input_tokens=series.input_tokens * ratio,
        output_tokens=series.output_tokens * ratio,
    )


def run_episode(
    controller: Controller,
    cluster: ClusterSpec,
    series: Sequence[ArrivalSeries],
    *,
    seed: int = 0,
    fidelity: str = "fluid",
    request_traces: Sequence[TraceSource | None] | None = None,
) -> EpisodeTrace:
    """Drive one simulated cluster over the full length of ``series`` with ``controller``.

    ``fidelity`` picks the serving model: "fluid" (``envs.serving.fluid``) or
    "des", the per-request discrete-event model (``envs.serving.des``), which
    also records every request's TTFT in the trace. ``request_traces`` gives
    the DES real requests to replay per Deployment instead of drawn ones.
    """
    if fidelity not in FIDELITIES:
        raise ValueError(f"unknown fidelity {fidelity!r}; use one of {list(FIDELITIES)} (eval.fidelity)")
    if request_traces is not None and fidelity != "des":
        raise ValueError("request_traces are replayed only by the discrete-event model; pass fidelity='des'")
    ticks = min(len(s) for s in series)
    sim = BatchedSimulator(cluster, [[s] for s in series], n_envs=1, episode_ticks=ticks,
                           randomization=NO_RANDOMIZATION, seed=seed)
    serving = None
    if fidelity == "des":
        serving = DiscreteEventServing(len(series), seed=seed, traces=request_traces)
    ctx = EncoderContext.from_cluster(cluster)
    names = [d.name for d in cluster.deployments]
    batch = sim.reset(seed=seed)
    controller.reset(ctx, names, cluster.tick_s)
    trace = EpisodeTrace(tick_s=cluster.tick_s, option_names=cluster.catalog.option_names,
                         deployment_names=tuple(d.name for d in cluster.deployments))
    for tick in range(ticks):
        replicas, option = controller.decide(batch, now_s=tick * cluster.tick_s)
        info = sim.step(replicas, option, serving=serving)
        trace.record(sim.params, sim.state, info)
        if serving is not None:
            trace.request_ttft_s.append(serving.tick_ttft_s[-1])
        batch = sim.signals()
    return trace


def _with_trace(cfg: DictConfig, name: str) -> DictConfig:
    """Return a copy of ``cfg`` whose ``trace`` group is replaced by conf/trace/<name>.yaml."""
    copy = cfg.copy()
    OmegaConf.set_struct(copy, False)
    copy.trace = load_group_file("trace", name)
    return copy


def eval_scenarios(
    cfg: DictConfig, cluster: ClusterSpec
) -> list[tuple[str, list[ArrivalSeries], list[list[ArrivalSeries]]]]:
    """Return (scenario name, held-out series per Deployment, training series per
    Deployment) for each configured trace; tuned baselines fit on the latter."""
    split = str(cfg.eval.get("split", "held_out"))
    names = list(cfg.eval.get("traces", []) or [])
    configs = [(trace_label(cfg.trace), cfg)] if not names else [(name, _with_trace(cfg, name)) for name in names]
    scenarios = []
    for name, sub in configs:
        held_out = load_deployment_series(sub, cluster, split=split)
        train = load_deployment_series(sub, cluster, split="train")
        scenarios.append((name, [s[0] for s in held_out], train))
    return scenarios


def evaluate(cfg: DictConfig, run_dir: Path) -> list[dict]:
    """Evaluate every configured controller; write results.json, results.md and plots."""
    from agent.report import render_markdown, render_plots

    cluster = build_cluster(cfg)
    controllers = list(cfg.eval.controllers)
    seeds = [int(s) for s in cfg.eval.seeds]
    fidelity = str(cfg.eval.get("fidelity", "fluid"))
    if fidelity not in FIDELITIES:
        raise ValueError(f"eval.fidelity is {fidelity!r}; use one of {list(FIDELITIES)}")
    records: list[dict] = []
    traces_for_plots: dict[tuple[str, int], dict[str, EpisodeTrace]] = {}
    for scenario, base_series, train_series in eval_scenarios(cfg, cluster):
        for seed in seeds:
            series = [perturb_series(s, seed * 1009 + i) for i, s in enumerate(base_series)]
            context = ControllerContext(cfg=cfg, cluster=cluster, train_series=train_series,
                                        eval_series=series, seed=seed)
            for name in controllers:
                controller = make_controller(name, context)
                started = time.perf_counter()
                trace = run_episode(controller, cluster, series, seed=seed, fidelity=fidelity)
                summary = summarize(trace)
                summary.update({"controller": name, "trace": scenario, "seed": seed, "fidelity": fidelity,
                                "wall_s": time.perf_counter() - started})
                records.append(summary)
                traces_for_plots.setdefault((scenario, seed), {})[name] = trace
                log.info("%s on %s seed %d: %.2f GPU-h, SLO %.3f, p95 TTFT %.2f s",
                         name, scenario, seed, summary["gpu_hours"], summary["slo_attainment"], summary["ttft_p95_s"])
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "results.json", {"records": records, "config": OmegaConf.to_container(cfg, resolve=True)})
    table = render_markdown(records)
    write_text_atomic(run_dir / "results.md", table)
    render_plots(traces_for_plots, run_dir, cluster)
    return records
