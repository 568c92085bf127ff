"""Tuned HPA: a grid search of HPA settings on the training window.

Every candidate (HPA target, tolerance, scale-down stabilisation window, and
for ``hpa_best_static`` the allocation option) drives the simulated cluster
over the TRAINING window of each Deployment with ``run_episode``. The search
keeps the cheapest candidate (mean cost_usd over the tuning seeds) whose mean
SLO attainment reaches ``slo_goal``. When none does, it keeps the candidate
with the best attainment, the cheaper one on a tie. Evaluation then runs the
chosen setting on the held-out window, which the search never sees.

One setting serves the whole workload: an option that a Deployment's model
does not fit leaves that Deployment on its initial option.
Results are cached in memory per grid point and training data, so the seeds
of one evaluation run share one search.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from agent.baselines.hpa_baseline import HpaBaseline, HpaSettings
from agent.baselines.static import check_fraction
from agent.evaluation import perturb_series, run_episode
from agent.metrics import summarize
from envs.cluster.spec import ClusterSpec
from envs.observation import EncoderContext
from envs.traces.records import ArrivalSeries

log = logging.getLogger(__name__)

# Offset between tuning and evaluation noise seeds, so the search never
# replays the Poisson draws of an evaluation seed.
TUNING_SEED_OFFSET = 50_000


@dataclass(frozen=True)
class TuningSettings:
    """Grid and goal of the tuned HPA.

    Attributes:
        targets: per-pod targets of the HPA metric to try (fractions for gpu_utilization).
        tolerances: values of --horizontal-pod-autoscaler-tolerance to try.
        downscale_stabilization_s: scale-down stabilisation windows to try, seconds.
        slo_goal: SLO attainment on the training window a candidate must reach.
        seeds: Poisson resampling seeds of the training window; the mean over them ranks candidates.
    """

    targets: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)
    tolerances: tuple[float, ...] = (0.05, 0.1)
    downscale_stabilization_s: tuple[float, ...] = (60.0, 300.0)
    slo_goal: float = 0.95
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        for key in ("targets", "tolerances", "downscale_stabilization_s", "seeds"):
            values = tuple(getattr(self, key))
            if not values:
                raise ValueError(f"tuned_hpa.{key} is empty; list at least one value")
            object.__setattr__(self, key, values)
        check_fraction("tuned_hpa.slo_goal", self.slo_goal, allow_zero=True)


@dataclass(frozen=True)
class Candidate:
    """One grid point: HPA settings and the option per Deployment (None keeps the current option)."""

    hpa: HpaSettings
    options: tuple[int, ...] | None = None


@dataclass(frozen=True)
class CandidateResult:
    candidate: Candidate
    cost_usd: float
    slo_attainment: float


def select_candidate(results: Sequence[CandidateResult], slo_goal: float) -> CandidateResult:
    """Return the cheapest result meeting ``slo_goal``, else the best attainment (cheaper on a tie)."""
    if not results:
        raise ValueError("the tuning grid produced no results; list at least one value per grid key")
    meeting = [r for r in results if r.slo_attainment >= slo_goal]
    if meeting:
        return min(meeting, key=lambda r: r.cost_usd)
    return min(results, key=lambda r: (-r.slo_attainment, r.cost_usd))


def grid_candidates(base: HpaSettings, settings: TuningSettings,
                    option_sets: Sequence[tuple[int, ...] | None]) -> list[Candidate]:
    """Return every grid point; the base settings give the metric and behavior."""
    grid = itertools.product(option_sets, settings.targets, settings.tolerances, settings.downscale_stabilization_s)
    return [
        Candidate(replace(base, target=float(target), tolerance=float(tolerance),
                          downscale_stabilization_s=float(window), manifest=""), options)
        for options, target, tolerance, window in grid
    ]


def static_option_sets(cluster: ClusterSpec) -> list[tuple[int, ...]]:
    """Return one option vector per option that fits some Deployment; others keep their initial option."""
    ctx = EncoderContext.from_cluster(cluster)
    initial = [cluster.catalog.option_index(d.initial_option) for d in cluster.deployments]
    sets = []
    for option in range(ctx.n_options):
        if ctx.fits[:, option].any():
            sets.append(tuple(option if ctx.fits[row, option] else initial[row] for row in range(len(initial))))
    return sets


def run_grid(candidates: Sequence[Candidate], cluster: ClusterSpec, series: Sequence[ArrivalSeries],
             seeds: Sequence[int]) -> list[CandidateResult]:
    """Run every candidate on ``series`` for every seed; return mean cost and attainment."""
    noisy = [[perturb_series(s, TUNING_SEED_OFFSET + seed * 1009 + i) for i, s in enumerate(series)]
             for seed in seeds]
    results = []
    for candidate in candidates:
        costs, attainments = [], []
        for seed, windows in zip(seeds, noisy):
            controller = HpaBaseline(candidate.hpa, fixed_options=candidate.options)
            summary = summarize(run_episode(controller, cluster, windows, seed=seed))
            costs.append(summary["cost_usd"])
            attainments.append(summary["slo_attainment"])
        results.append(CandidateResult(candidate, float(np.mean(costs)), float(np.mean(attainments))))
    return results


# Results per grid point and training data. tuned_hpa and hpa_best_static
# share the points on the initial options, and the seeds of one evaluation
# run share the whole search.
_RESULTS: dict[str, CandidateResult] = {}


def tune_hpa(cluster: ClusterSpec, train_series: Sequence[Sequence[ArrivalSeries]], base: HpaSettings,
             settings: TuningSettings, *, search_options: bool,
             runner: Callable[..., list[CandidateResult]] | None = None) -> CandidateResult:
    """Return the chosen candidate on the first training series of each Deployment.

    ``search_options`` adds every option to the grid (HPA on the best static
    allocation); without it the HPA keeps each Deployment's current option.
    ``runner`` replaces ``run_grid`` and bypasses the result cache.
    """
    if len(train_series) != len(cluster.deployments) or any(not s for s in train_series):
        raise ValueError(f"tuned HPA needs one training series per Deployment, got {len(train_series)} lists for "
                         f"{len(cluster.deployments)} Deployments; check the trace split and workload configs")
    series = [s[0] for s in train_series]
    option_sets: list[tuple[int, ...] | None] = list(static_option_sets(cluster)) if search_options else [None]
    candidates = grid_candidates(base, settings, option_sets)
    if runner is not None:
        results = runner(candidates, cluster, series, settings.seeds)
    else:
        results = _cached_grid(candidates, cluster, series, settings.seeds)
    chosen = select_candidate(results, settings.slo_goal)
    names = cluster.catalog.option_names
    option_label = "current" if chosen.candidate.options is None else [names[o] for o in chosen.candidate.options]
    log.info("tuned HPA over %d candidates: target %.2f, tolerance %.2f, scale-down window %.0f s, options %s "
             "(training cost %.2f USD, SLO attainment %.3f)", len(candidates), chosen.candidate.hpa.target,
             chosen.candidate.hpa.tolerance, chosen.candidate.hpa.downscale_stabilization_s, option_label,
             chosen.cost_usd, chosen.slo_attainment)
    return chosen


def _cached_grid(candidates: Sequence[Candidate], cluster: ClusterSpec, series: Sequence[ArrivalSeries],
                 seeds: Sequence[int]) -> list[CandidateResult]:
    """Return ``run_grid`` results, running only the points not cached for this data."""
    digest = hashlib.sha256()
    digest.update(repr((cluster, tuple(seeds))).encode())
    for one in series:
        for array in (one.requests, one.input_tokens, one.output_tokens):
            digest.update(np.ascontiguousarray(array).tobytes())
    data_key = digest.hexdigest()
    initial = tuple(cluster.catalog.option_index(d.initial_option) for d in cluster.deployments)

    def key(candidate: Candidate) -> str:
        # Keeping the current option is running the initial option for the whole episode.
        options = candidate.options if candidate.options is not None else initial
        return f"{data_key}:{candidate.hpa!r}:{options}"

    missing = [c for c in candidates if key(c) not in _RESULTS]
    for result in run_grid(missing, cluster, series, seeds):
        _RESULTS[key(result.candidate)] = result
    return [dataclasses.replace(_RESULTS[key(c)], candidate=c) for c in candidates]


def tuned_hpa_controller(cluster: ClusterSpec, train_series: Sequence[Sequence[ArrivalSeries]],
                         base: HpaSettings, settings: TuningSettings, *, search_options: bool) -> HpaBaseline:
    """Return an HpaBaseline with the tuned settings (and option, with ``search_options``)."""
    chosen = tune_hpa(cluster, train_series, base, settings, search_options=search_options)
    return HpaBaseline(chosen.candidate.hpa, fixed_options=chosen.candidate.options)
