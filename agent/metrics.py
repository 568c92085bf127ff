"""Episode accounting: per-tick time series and the summary record of ``results.json``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from envs.sim.dynamics import StepInfo
from envs.sim.params import SimParams
from envs.sim.state import SimState

# Inverse-CDF anchor points of one tick's TTFT distribution: the fluid model
# reports p50, p95 and p99; below p50 the distribution is taken to fall
# linearly to half the median. Pooled quantiles over an episode sample each
# tick's distribution at these probability levels, weighted by its arrivals.
_POOL_LEVELS = (np.arange(40) + 0.5) / 40.0


@dataclass
class EpisodeTrace:
    """Time series of one episode for D Deployments; every list entry is a (D,) array."""

    tick_s: float
    option_names: tuple[str, ...]
    deployment_names: tuple[str, ...] = ()
    arrivals: list[np.ndarray] = field(default_factory=list)
    slo_met: list[np.ndarray] = field(default_factory=list)
    dropped: list[np.ndarray] = field(default_factory=list)
    cost_usd: list[np.ndarray] = field(default_factory=list)
    gpu_hours: list[np.ndarray] = field(default_factory=list)
    desired: list[np.ndarray] = field(default_factory=list)
    ready: list[np.ndarray] = field(default_factory=list)
    pending: list[np.ndarray] = field(default_factory=list)
    option: list[np.ndarray] = field(default_factory=list)
    ttft_p50: list[np.ndarray] = field(default_factory=list)
    ttft_p95: list[np.ndarray] = field(default_factory=list)
    ttft_p99: list[np.ndarray] = field(default_factory=list)
    scale_events: list[np.ndarray] = field(default_factory=list)
    option_changes: list[np.ndarray] = field(default_factory=list)
    gpus_held: list[np.ndarray] = field(default_factory=list)
    # Per tick, the TTFT of every request that started service, all Deployments
    # together; only the per-request (discrete-event) serving model fills it.
    request_ttft_s: list[np.ndarray] = field(default_factory=list)

    def record(self, params: SimParams, state: SimState, info: StepInfo) -> None:
        """Append env 0's tick to the series."""
        self.arrivals.append(info.arrivals[0].copy())
        self.slo_met.append(info.slo_met[0].copy())
        self.dropped.append(info.dropped[0].copy())
        self.cost_usd.append(info.cost_usd[0].copy())
        self.gpu_hours.append(info.gpu_hours[0].copy())
        self.desired.append(state.desired[0].copy())
        self.ready.append((state.ready + state.old_ready)[0].copy())
        self.pending.append(info.pending[0].copy())
        self.option.append(state.option[0].copy())
        self.ttft_p50.append(state.ttft_p50_s[0].copy())
        self.ttft_p95.append(state.ttft_p95_s[0].copy())
        self.ttft_p99.append(state.ttft_p99_s[0].copy())
        self.scale_events.append(info.scale_event[0].astype(np.float64))
        self.option_changes.append(info.option_change[0].astype(np.float64))
        self.gpus_held.append(info.gpu_hours[0] / (params.tick_s / 3600.0))

    def array(self, name: str) -> np.ndarray:
        """Return the series ``name`` as a (T, D) array."""
        return np.stack(getattr(self, name)) if getattr(self, name) else np.zeros((0, 0))


def pooled_quantiles(trace: EpisodeTrace, quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[float]:
    """Return request-weighted TTFT quantiles over the whole episode and all Deployments."""
    p50, p95, p99 = trace.array("ttft_p50"), trace.array("ttft_p95"), trace.array("ttft_p99")
    weights = trace.array("arrivals")
    if weights.size == 0 or weights.sum() <= 0:
        return [0.0 for _ in quantiles]
    xp = np.array([0.0, 0.5, 0.95, 0.99, 1.0])
    samples = []
    for lo, a, b, c, w in zip(p50.ravel() * 0.5, p50.ravel(), p95.ravel(), p99.ravel(), weights.ravel()):
        if w <= 0:
            continue
        samples.append((np.interp(_POOL_LEVELS, xp, [lo, a, b, c, c]), w))
    values = np.concatenate([s for s, _ in samples])
    w = np.concatenate([np.full(len(_POOL_LEVELS), wt / len(_POOL_LEVELS)) for _, wt in samples])
    order = np.argsort(values)
    cumulative = np.cumsum(w[order]) / w.sum()
    return [float(values[order][min(np.searchsorted(cumulative, q), len(values) - 1)]) for q in quantiles]


def summarize(trace: EpisodeTrace) -> dict:
    """Return the summary metrics of ``results.json`` for one episode."""
    arrivals = trace.array("arrivals")
    total_arrivals = float(arrivals.sum())
    slo_met = float(trace.array("slo_met").sum())

    per_request = np.concatenate(trace.request_ttft_s) if trace.request_ttft_s else np.zeros(0)
    if per_request.size:
        # Exact quantiles of the served requests, because dropped requests have no TTFT.
        p50, p95, p99 = (float(q) for q in np.quantile(per_request, (0.5, 0.95, 0.99)))
    else:
        p50, p95, p99 = pooled_quantiles(trace)

    gpu_hours = trace.array("gpu_hours")
    option = trace.array("option").astype(np.int64)
    per_option: dict[str, float] = {}
    for index, name in enumerate(trace.option_names):
        hours = float(gpu_hours[option == index].sum())
        if hours > 0:
            per_option[name] = hours
    pending = trace.array("pending")
    return {
        "ticks": int(arrivals.shape[0]),
        "requests": total_arrivals,
        "gpu_hours": float(gpu_hours.sum()),
        "cost_usd": float(trace.array("cost_usd").sum()),
        "slo_attainment": slo_met / total_arrivals if total_arrivals > 0 else 1.0,
        "ttft_p50_s": p50,
        "ttft_p95_s": p95,
        "ttft_p99_s": p99,
        "ttft_source": "per_request" if per_request.size else "pooled_ticks",
        "dropped_requests": float(trace.array("dropped").sum()),
        "scale_events": int(trace.array("scale_events").sum()),
        "allocation_changes": int(trace.array("option_changes").sum()),
        "pending_pod_seconds": float(pending.sum() * trace.tick_s),
        "gpu_hours_by_option": per_option,
        "allocations": _allocations(trace, gpu_hours, option),
    }


def _allocations(trace: EpisodeTrace, gpu_hours: np.ndarray, option: np.ndarray) -> dict[str, dict]:
    """Return, per Deployment, its options in the order it used them, its changes and GPU-hours per option."""
    result: dict[str, dict] = {}
    if option.size == 0:
        return result
    changes = trace.array("option_changes")
    for column, name in enumerate(trace.deployment_names):
        sequence = [trace.option_names[int(option[0, column])]]
        for index in option[1:, column]:
            if trace.option_names[int(index)] != sequence[-1]:
                sequence.append(trace.option_names[int(index)])
        hours = {trace.option_names[int(o)]: float(gpu_hours[option[:, column] == o, column].sum())
                 for o in np.unique(option[:, column])}
        result[name] = {"options": sequence, "allocation_changes": int(changes[:, column].sum()),
                        "gpu_hours_by_option": {o: h for o, h in hours.items() if h > 0}}
    return result
