"""Static peak-provisioned allocation, and the replica sizing shared by the planning baselines.

``slo_replicas`` sizes one option for a load: the fewest replicas that keep
utilisation at or below a cap and, in the fluid serving model
(``envs.serving.fluid.serve_tick`` with an empty queue), serve at least
``attainment`` of a tick's requests within the Deployment's TTFT SLO. The
static, predictive and oracle baselines all size with it.

The static baseline runs, for the whole episode, the replica count that the
peak tick of the TRAINING window needs, on a configured option or on the
cheapest option that can serve that peak.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from agent.controllers.base import Controller
from envs.cluster.spec import ClusterSpec, quota_usage_keys
from envs.observation import EncoderContext
from envs.serving.capacity import DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS, replica_capacity_rps
from envs.serving.fluid import SERVERS_PER_REPLICA, serve_tick
from envs.signals import SignalBatch
from envs.traces.records import ArrivalSeries

log = logging.getLogger(__name__)

# Relative slack on the attainment test, so that a fraction equal to the goal
# up to rounding counts as meeting it.
_ATTAINMENT_SLACK = 1e-9


@dataclass(frozen=True)
class StaticSettings:
    """Static allocation settings.

    Attributes:
        option: catalog option name to run; empty picks the cheapest option that serves the peak.
        utilization_cap: highest fraction of replica capacity the peak may use (0..1].
        attainment: fraction of the peak tick's requests that must meet the TTFT SLO in the
            fluid model; 0 sizes by the utilisation cap alone.
    """

    option: str = ""
    utilization_cap: float = 0.8
    attainment: float = 0.95

    def __post_init__(self) -> None:
        check_fraction("static.utilization_cap", self.utilization_cap, allow_zero=False)
        check_fraction("static.attainment", self.attainment, allow_zero=True)


def check_fraction(key: str, value: float, *, allow_zero: bool) -> None:
    """Raise ValueError unless ``value`` is in (0, 1], or in [0, 1] with ``allow_zero``."""
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value <= 1.0):
        bounds = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{key} is {value}; set it to a fraction in {bounds}")


def slo_replicas(
    ctx: EncoderContext,
    row: int,
    option: int,
    rate_rps: np.ndarray,
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    utilization_cap: float = 1.0,
    attainment: float = 0.95,
) -> np.ndarray:
    """Return, per load, the fewest replicas of ``option`` for Deployment ``row`` that serve it.

    The loads are arrays of one shape (requests per second and mean tokens per
    request). The result has that shape: 0 where the rate is 0, and
    ``max_replicas + 1`` where even ``max_replicas`` replicas fail the cap or the SLO.
    """
    rate = np.atleast_1d(np.asarray(rate_rps, dtype=np.float64))
    inp = np.broadcast_to(np.asarray(input_tokens, dtype=np.float64), rate.shape)
    out = np.broadcast_to(np.asarray(output_tokens, dtype=np.float64), rate.shape)
    max_replicas = int(ctx.max_replicas[row])
    too_many = max_replicas + 1
    if not ctx.fits[row, option] or max_replicas < 1:
        return np.full(rate.shape, too_many, dtype=np.int64)

    # Candidate counts on axis 0, loads on the remaining axes.
    counts = np.arange(1, max_replicas + 1, dtype=np.float64).reshape((-1,) + (1,) * rate.ndim)
    per_replica = replica_capacity_rps(ctx.prefill_tps[row, option], ctx.decode_tps[row, option],
                                       ctx.max_concurrency[row, option], ctx.itl_s[row, option], inp, out)
    capacity = counts * per_replica
    tick_s = float(ctx.tick_s)
    arrivals = np.broadcast_to(rate * tick_s, capacity.shape)
    outcome = serve_tick(
        arrivals=arrivals,
        input_tokens=np.broadcast_to(inp, capacity.shape),
        output_tokens=np.broadcast_to(out, capacity.shape),
        backlog=np.zeros(capacity.shape),
        capacity_rps=capacity,
        servers=np.broadcast_to(counts * SERVERS_PER_REPLICA, capacity.shape),
        prefill_tps=np.full(capacity.shape, ctx.prefill_tps[row, option]),
        itl_s=np.full(capacity.shape, ctx.itl_s[row, option]),
        slo_ttft_s=np.full(capacity.shape, ctx.slo_ttft_s[row]),
        # Loads within capacity never queue past a tick, so the timeout does not bind.
        queue_timeout_s=np.full(capacity.shape, 3600.0),
        tick_s=tick_s,
    )
    within_cap = rate <= utilization_cap * capacity * (1.0 + _ATTAINMENT_SLACK)
    meets_slo = outcome.slo_met >= attainment * arrivals * (1.0 - _ATTAINMENT_SLACK)
    ok = within_cap & meets_slo & (outcome.dropped <= 0.0)
    first = np.where(ok.any(axis=0), ok.argmax(axis=0) + 1, too_many)
    return np.where(rate > 0, first, 0).astype(np.int64)


def pods_that_fit(cluster: ClusterSpec, option: int) -> int:
    """Return how many pods of ``option`` the cluster's slots and ResourceQuota admit when empty."""
    spec = cluster.catalog.options[option]
    slots = cluster.slot_capacity().get(spec.slot_kind, 0)
    limit = int(slots // spec.devices)
    for key, amount in quota_usage_keys(spec).items():
        if key in cluster.quota_hard and amount > 0:
            limit = min(limit, int(cluster.quota_hard[key] // amount))
    return limit


def series_load(series: ArrivalSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return per-tick (requests/s, mean input tokens, mean output tokens) of ticks with requests."""
    busy = series.requests > 0
    requests = series.requests[busy]
    return (requests / series.tick_s, series.input_tokens[busy] / requests,
            series.output_tokens[busy] / requests)


def peak_replicas(ctx: EncoderContext, row: int, option: int, series: Sequence[ArrivalSeries],
                  settings: StaticSettings) -> int:
    """Return the replicas of ``option`` that the busiest tick of ``series`` needs, at least min_replicas.

    Every tick is sized at its own token mix, so a tick with long prompts can
    set the peak even when another tick has more requests.
    """
    needed = int(ctx.min_replicas[row])
    for one in series:
        rate, inp, out = series_load(one)
        if rate.size:
            sized = slo_replicas(ctx, row, option, rate, inp, out,
                                 utilization_cap=settings.utilization_cap, attainment=settings.attainment)
            needed = max(needed, int(sized.max()))
    return needed


def plan_static(cluster: ClusterSpec, train_series: Sequence[Sequence[ArrivalSeries]],
                settings: StaticSettings) -> tuple[np.ndarray, np.ndarray]:
    """Return (replicas (D,), option indices (D,)) that serve each Deployment's training peak.

    With no configured option, each Deployment gets the option with the lowest
    hourly price for its peak among those whose replicas fit ``max_replicas``,
    the free cluster and the quota. When none fits, it gets the option that
    serves the most requests per second at its largest admissible count.
    """
    ctx = EncoderContext.from_cluster(cluster)
    names = cluster.catalog.option_names
    if settings.option and settings.option not in names:
        raise ValueError(f"static.option {settings.option!r} is not a catalog option; use one of {list(names)} or ''")
    if len(train_series) != len(cluster.deployments):
        raise ValueError(f"static baseline got training series for {len(train_series)} Deployments, "
                         f"the cluster has {len(cluster.deployments)}; check the trace and workload configs")
    replicas = np.zeros(len(cluster.deployments), dtype=np.int64)
    options = np.zeros(len(cluster.deployments), dtype=np.int64)
    for row, deployment in enumerate(cluster.deployments):
        candidates = [names.index(settings.option)] if settings.option else list(np.flatnonzero(ctx.fits[row]))
        if settings.option and not ctx.fits[row, candidates[0]]:
            raise ValueError(f"static.option {settings.option!r} cannot run Deployment {deployment.name!r} "
                             "(the model does not fit it or no node pool offers it); pick another option or ''")
        best: tuple[float, int, int] | None = None
        fallback: tuple[float, int, int] | None = None
        for option in candidates:
            room = min(int(ctx.max_replicas[row]), pods_that_fit(cluster, option))
            needed = peak_replicas(ctx, row, option, train_series[row], settings)
            if ctx.fits[row, option] and needed <= room:
                cost = float(ctx.price_per_hour[option]) * needed
                if best is None or cost < best[0]:
                    best = (cost, option, needed)
            served = room * _mean_capacity(ctx, row, option, train_series[row])
            if fallback is None or served > fallback[0]:
                fallback = (served, option, max(room, int(ctx.min_replicas[row])))
        if best is None:
            assert fallback is not None
            log.warning("static: no option serves the training peak of %s; running %d x %s, its largest admissible count",
                        deployment.name, fallback[2], names[fallback[1]])
            best = (0.0, fallback[1], fallback[2])
        options[row], replicas[row] = best[1], best[2]
    return replicas, options


def _mean_capacity(ctx: EncoderContext, row: int, option: int, series: Sequence[ArrivalSeries]) -> float:
    """Return one replica's requests/s at the request-weighted mean token mix of ``series``."""
    requests = sum(float(s.requests.sum()) for s in series)
    inp, out = DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS
    if requests > 0:
        inp = sum(float(s.input_tokens.sum()) for s in series) / requests
        out = sum(float(s.output_tokens.sum()) for s in series) / requests
    return float(replica_capacity_rps(ctx.prefill_tps[row, option], ctx.decode_tps[row, option],
                                      ctx.max_concurrency[row, option], ctx.itl_s[row, option], inp, out))


class StaticAllocation(Controller):
    """Fixed replica counts and options for the whole episode."""

    name = "static"

    def __init__(self, replicas: Sequence[int], options: Sequence[int]) -> None:
        self.replicas = np.asarray(replicas, dtype=np.int64)
        self.options = np.asarray(options, dtype=np.int64)
        if self.replicas.shape != self.options.shape:
            raise ValueError(f"static allocation has {self.replicas.size} replica counts and "
                             f"{self.options.size} options; give one of each per Deployment")

    def decide(self, batch: SignalBatch, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        if len(batch) != self.replicas.size:
            raise ValueError(f"static allocation was planned for {self.replicas.size} Deployments, "
                             f"the batch has {len(batch)} rows; rebuild it for this cluster")
        return self.replicas.copy(), self.options.copy()
