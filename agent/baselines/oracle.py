"""Offline oracle: the cheapest replica schedule that keeps every tick within the SLO.

The oracle reads the evaluation window itself (``ControllerContext.eval_series``,
the exact arrivals and token totals the simulator replays) and the startup
time of every option, so it is a reference point, not a deployable controller.

For each Deployment and candidate option it plans in three steps:

1. ``required_replicas``: per tick, the fewest replicas whose fluid-model TTFT
   (``serve_tick`` with an empty queue) meets the SLO for ``attainment`` of
   the tick's requests, within [min_replicas, max_replicas]; a tick that even
   max_replicas cannot serve gets max_replicas.
2. ``bridge_gaps``: the Ready count per tick. A pod requested at tick ``k``
   serves from tick ``k + L``. The lag ``L`` is the option's startup in ticks
   as the simulator counts it (``measure_ready_offset``). A pod costs its
   price for every tick from its creation through the tick it is deleted in.
   So removing a pod after tick ``a`` and recreating it for tick ``b`` costs a
   drain tick plus ``L`` cold-start ticks, and keeping it costs ``b - a - 1``
   idle ticks. Pods are interchangeable, so the cost splits into one problem per
   replica level, and each level keeps its pod across a gap of at most
   ``L + 1`` ticks. This is the minimum-cost Ready schedule.
3. ``issue_schedule``: the desired count at tick ``k`` is the largest Ready count
   planned for ticks ``k .. k + L``, so every scale-up is issued exactly
   ``L`` ticks ahead.

Then it simulates each option's schedule on the same window and picks, per
Deployment, the cheapest option whose SLO attainment reaches ``slo_goal``, or
the best attainment any option reaches when none does. "Cheapest" is by
``objective``: dollars (``cost_usd``) or GPU-hours (``gpu_hours``); a MIG
slice counts as its share of a GPU, so the two can pick different options.

What it assumes: the fluid model's per-tick TTFT with no queue carried over
(a tick it cannot serve leaves a queue that the next ticks' plan ignores);
one option for the whole episode, switched at tick 0 while the initial pods
serve the cold start; startup in whole ticks as the simulator counts it; and
no competition between Deployments for slots, because each option's cost is
measured with every Deployment that fits it on that option at once, which the
final mix of options may not match. Under these assumptions it is the lowest-cost schedule that
keeps each tick's p95 TTFT within the SLO. It is not a bound for a controller
that trades a few bad ticks for a lower cost at the same episode attainment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from agent.baselines.static import check_fraction, slo_replicas
from agent.controllers.base import Controller
from agent.evaluation import run_episode
from envs.cluster.spec import ClusterSpec
from envs.observation import EncoderContext
from envs.signals import SignalBatch
from envs.sim.params import MAX_STARTUP_TICKS, Randomization
from envs.sim.simulator import BatchedSimulator
from envs.traces.records import ArrivalSeries


@dataclass(frozen=True)
class OracleSettings:
    """Oracle settings.

    Attributes:
        attainment: fraction of each tick's requests that must meet the TTFT SLO (0.95 means
            each tick's p95 TTFT is within the SLO).
        slo_goal: episode SLO attainment an option must reach to be chosen.
        options: candidate option names; empty means every option the model fits.
        objective: what the option choice minimises: ``cost_usd`` or ``gpu_hours``.
    """

    attainment: float = 0.95
    slo_goal: float = 0.95
    options: tuple[str, ...] = ()
    objective: str = "cost_usd"

    def __post_init__(self) -> None:
        check_fraction("oracle.attainment", self.attainment, allow_zero=True)
        check_fraction("oracle.slo_goal", self.slo_goal, allow_zero=True)
        if self.objective not in ("cost_usd", "gpu_hours"):
            raise ValueError(f"oracle.objective is {self.objective!r}; use 'cost_usd' or 'gpu_hours'")
        object.__setattr__(self, "options", tuple(str(o) for o in self.options))


def startup_ticks(ctx: EncoderContext, row: int, option: int) -> int:
    """Return the cold start in ticks as the simulator counts it (``envs.sim.params.startup_ticks_for``)."""
    ticks = int(np.ceil(ctx.startup_s[row, option] / ctx.tick_s))
    return int(np.clip(ticks, 1, MAX_STARTUP_TICKS - 1))


def measure_ready_offset(cluster: ClusterSpec) -> int:
    """Return the ticks from a scale-up decision to the first tick its pod serves, minus ``startup_ticks``.

    The offset is measured on the simulator itself (one extra pod of the first
    Deployment's initial option), so the plan follows whichever convention the
    step function uses for the tick a pod becomes Ready in.
    """
    first = cluster.deployments[0]
    probe = dataclasses.replace(first, min_replicas=1, max_replicas=2, initial_replicas=1)
    probe_cluster = dataclasses.replace(cluster, deployments=(probe,))
    ctx = EncoderContext.from_cluster(probe_cluster)
    option = cluster.catalog.option_index(first.initial_option)
    ticks = MAX_STARTUP_TICKS + 2
    idle = ArrivalSeries(name="probe", tick_s=cluster.tick_s, requests=np.zeros(ticks),
                         input_tokens=np.zeros(ticks), output_tokens=np.zeros(ticks))
    sim = BatchedSimulator(probe_cluster, [[idle]], n_envs=1, episode_ticks=ticks,
                           randomization=Randomization(random_window=False))
    sim.reset(seed=0)
    for tick in range(ticks):
        sim.step(np.array([2]), np.array([option]))
        if sim.state.ready[0, 0] >= 2:
            return tick - startup_ticks(ctx, 0, option)
    raise ValueError(f"a new pod of {first.initial_option!r} never became Ready in {ticks} simulated ticks; "
                     "check that the cluster has a free slot for a second pod of that option")


def required_replicas(ctx: EncoderContext, row: int, option: int, series: ArrivalSeries,
                      attainment: float) -> np.ndarray:
    """Return (T,) replicas of ``option`` each tick of ``series`` needs, within the Deployment's bounds."""
    requests = series.requests
    busy = requests > 0
    safe = np.where(busy, requests, 1.0)
    sized = slo_replicas(ctx, row, option, requests / series.tick_s,
                         np.where(busy, series.input_tokens / safe, 1.0),
                         np.where(busy, series.output_tokens / safe, 1.0),
                         attainment=attainment)
    return np.clip(sized, int(ctx.min_replicas[row]), int(ctx.max_replicas[row])).astype(np.int64)


def bridge_gaps(required: np.ndarray, startup: int, initial_ready: int) -> np.ndarray:
    """Return the minimum-cost Ready count per tick that covers ``required``.

    ``initial_ready`` pods are Ready at tick 0 without a cold start. Any other
    pod serves from ``startup`` ticks after its creation, so a level above
    ``initial_ready`` cannot cover ticks before ``startup``.
    """
    required = np.asarray(required, dtype=np.int64)
    ticks = len(required)
    plan = np.zeros(ticks, dtype=np.int64)
    for level in range(1, max(int(required.max(initial=0)), initial_ready) + 1):
        present = level <= initial_ready
        need = required >= level
        if not present:
            need[:startup] = False
        on = need.copy()
        busy = np.flatnonzero(need)
        if busy.size == 0:
            # A pod kept to the end costs every tick, a deleted one costs its drain tick.
            on[:] = present and ticks <= 1
            plan += on
            continue
        for a, b in zip(busy[:-1], busy[1:]):
            if b - a - 1 <= startup + 1:
                on[a:b] = True
        if present and busy[0] <= startup + 1:
            on[: busy[0]] = True
        if ticks - 1 - busy[-1] <= 1:
            on[busy[-1]:] = True
        plan += on
    return plan


def issue_schedule(ready_plan: np.ndarray, startup: int) -> np.ndarray:
    """Return the desired count per tick: the largest Ready count planned ``startup`` ticks ahead."""
    ready_plan = np.asarray(ready_plan, dtype=np.int64)
    return np.array([ready_plan[k : k + startup + 1].max() for k in range(len(ready_plan))], dtype=np.int64)


def plan_option(ctx: EncoderContext, cluster: ClusterSpec, row: int, option: int, series: ArrivalSeries,
                attainment: float, ready_offset: int = 0) -> np.ndarray:
    """Return the (T,) desired replicas of Deployment ``row`` on ``option`` over ``series``.

    ``ready_offset`` is ``measure_ready_offset(cluster)``: a pod requested at
    tick ``k`` serves from tick ``k + startup_ticks + ready_offset``.
    """
    deployment = cluster.deployments[row]
    initial_option = cluster.catalog.option_index(deployment.initial_option)
    startup = max(startup_ticks(ctx, row, option) + ready_offset, 0)
    required = required_replicas(ctx, row, option, series, attainment)
    initial_ready = int(deployment.initial_replicas) if option == initial_option else 0
    desired = issue_schedule(bridge_gaps(required, startup, initial_ready), startup)
    if option != initial_option:
        # During the rollout the old option's Ready pods serve while desired exceeds the
        # new option's Ready pods, so ask for as many as the tick needs, up to their count.
        early = min(startup, len(desired))
        keep_old = np.minimum(required[:early], int(deployment.initial_replicas))
        desired[:early] = np.maximum(desired[:early], keep_old)
    return np.clip(desired, int(ctx.min_replicas[row]), int(ctx.max_replicas[row]))


class OracleController(Controller):
    """Replays a precomputed schedule: desired replicas (T, D) and one option per Deployment."""

    name = "oracle"

    def __init__(self, schedule: np.ndarray, options: Sequence[int]) -> None:
        self.schedule = np.asarray(schedule, dtype=np.int64)
        self.options = np.asarray(options, dtype=np.int64)
        if self.schedule.ndim != 2 or self.schedule.shape[1] != self.options.size:
            raise ValueError(f"oracle schedule has shape {self.schedule.shape} for {self.options.size} options; "
                             "pass (ticks, Deployments) and one option per Deployment")

    def decide(self, batch: SignalBatch, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        tick = min(int(round(now_s / self.tick_s)), self.schedule.shape[0] - 1)
        return self.schedule[tick].copy(), self.options.copy()


def candidate_options(cluster: ClusterSpec, settings: OracleSettings) -> list[int]:
    names = cluster.catalog.option_names
    unknown = [name for name in settings.options if name not in names]
    if unknown:
        raise ValueError(f"oracle.options {unknown} are not catalog options; use names from {list(names)}")
    return [names.index(name) for name in settings.options] if settings.options else list(range(len(names)))


def build_oracle(cluster: ClusterSpec, series: Sequence[ArrivalSeries], settings: OracleSettings,
                 *, seed: int = 0) -> OracleController:
    """Plan every candidate option, simulate each on ``series`` and keep the cheapest per Deployment."""
    ctx = EncoderContext.from_cluster(cluster)
    ready_offset = measure_ready_offset(cluster)
    if len(series) != len(cluster.deployments):
        raise ValueError(f"oracle got {len(series)} evaluation series for {len(cluster.deployments)} Deployments; "
                         "pass one series per Deployment")
    ticks = min(len(s) for s in series)
    windows = [s if len(s) == ticks else _truncate(s, ticks) for s in series]
    initial = np.array([cluster.catalog.option_index(d.initial_option) for d in cluster.deployments])
    plans: dict[tuple[int, int], np.ndarray] = {}

    def plan(row: int, option: int) -> np.ndarray:
        if (row, option) not in plans:
            plans[(row, option)] = plan_option(ctx, cluster, row, option, windows[row], settings.attainment,
                                               ready_offset)
        return plans[(row, option)]

    # Measured (objective, attainment) per Deployment and option.
    measured: dict[tuple[int, int], tuple[float, float]] = {}
    for option in candidate_options(cluster, settings):
        rows = [row for row in range(len(windows)) if ctx.fits[row, option]]
        if not rows:
            continue
        chosen = np.where(ctx.fits[:, option], option, initial)
        schedule = np.stack([plan(row, int(chosen[row])) for row in range(len(windows))], axis=1)
        trace = run_episode(OracleController(schedule, chosen), cluster, windows, seed=seed)
        cost = trace.array(settings.objective).sum(axis=0)
        met = trace.array("slo_met").sum(axis=0)
        arrivals = trace.array("arrivals").sum(axis=0)
        for row in rows:
            attained = float(met[row] / arrivals[row]) if arrivals[row] > 0 else 1.0
            measured[(row, option)] = (float(cost[row]), attained)

    options = initial.copy()
    for row in range(len(windows)):
        results = {option: value for (r, option), value in measured.items() if r == row}
        if not results:
            raise ValueError(f"no candidate option fits Deployment {cluster.deployments[row].name!r}; "
                             "add one it fits to oracle.options or leave the list empty")
        threshold = min(settings.slo_goal, max(att for _, att in results.values()))
        eligible = [(cost, option) for option, (cost, att) in results.items() if att >= threshold - 1e-12]
        options[row] = min(eligible)[1]
    schedule = np.stack([plan(row, int(options[row])) for row in range(len(windows))], axis=1)
    return OracleController(schedule, options)


def _truncate(series: ArrivalSeries, ticks: int) -> ArrivalSeries:
    return dataclasses.replace(series, requests=series.requests[:ticks], input_tokens=series.input_tokens[:ticks],
                               output_tokens=series.output_tokens[:ticks])
