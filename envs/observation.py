"""Observation encoding: signals (plus a short history) to a fixed-size vector.

This is the contract between the simulator, the live runtime and a trained
policy. ``OBSERVATION_VERSION`` changes whenever a feature is added, removed,
reordered or rescaled; checkpoints record it and loading rejects a mismatch.

The encoder is one vectorised function over N Deployments. Every feature is
scale-free (ratios, logs, clipped fractions), so one set of shared weights
can manage Deployments of any size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from envs.cluster.spec import ClusterSpec, profile_tables
from envs.serving.capacity import DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS, replica_capacity_rps
from envs.signals import SignalBatch

OBSERVATION_VERSION = 1
HISTORY_TICKS = 20
# Every feature is clipped to this range; it bounds the observation space.
OBSERVATION_BOUND = 10.0
# Features that do not depend on the number of options, then six per option.
BASE_FEATURES = 20
PER_OPTION_FEATURES = 6


def observation_size(n_options: int) -> int:
    return BASE_FEATURES + PER_OPTION_FEATURES * n_options


@dataclass
class EncoderContext:
    """Static per-row facts from the catalog and the Deployment specs. Shapes (N, O) or (N,)."""

    prefill_tps: np.ndarray
    decode_tps: np.ndarray
    max_concurrency: np.ndarray
    itl_s: np.ndarray
    fits: np.ndarray
    startup_s: np.ndarray
    price_per_hour: np.ndarray  # (O,)
    option_kind: np.ndarray  # (O,) index into slot kinds
    option_devices: np.ndarray  # (O,)
    min_replicas: np.ndarray
    max_replicas: np.ndarray
    slo_ttft_s: np.ndarray
    tick_s: float
    _live: "_LiveOptions | None" = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_options(self) -> int:
        return int(self.fits.shape[1])

    def live_options(self) -> "_LiveOptions":
        """Return the options some row can run, with their profile columns, cached until an array is replaced."""
        if self._live is None or not self._live.matches(self):
            self._live = _LiveOptions.of(self)
        return self._live

    def take(self, rows: np.ndarray) -> "EncoderContext":
        """Return the context of the given rows (for a batch of several clusters)."""
        per_row = ("prefill_tps", "decode_tps", "max_concurrency", "itl_s", "fits", "startup_s",
                   "min_replicas", "max_replicas", "slo_ttft_s")
        values = {name: getattr(self, name)[rows] for name in per_row}
        return EncoderContext(price_per_hour=self.price_per_hour, option_kind=self.option_kind,
                              option_devices=self.option_devices, tick_s=self.tick_s, **values)

    @classmethod
    def from_cluster(cls, cluster: ClusterSpec) -> "EncoderContext":
        """Build the context of the cluster's Deployments, one row each, in spec order."""
        catalog = cluster.catalog
        options = catalog.options
        tables = profile_tables(cluster)
        kinds = catalog.slot_kinds
        return cls(
            price_per_hour=np.array([opt.price_per_hour for opt in options]),
            option_kind=np.array([kinds.index(opt.slot_kind) for opt in options]),
            option_devices=np.array([opt.devices for opt in options], dtype=np.float64),
            min_replicas=np.array([d.min_replicas for d in cluster.deployments], dtype=np.float64),
            max_replicas=np.array([d.max_replicas for d in cluster.deployments], dtype=np.float64),
            slo_ttft_s=np.array([d.slo_ttft_p95_s for d in cluster.deployments]),
            tick_s=cluster.tick_s,
            **tables,
        )

    def tile(self, n_envs: int) -> "EncoderContext":
        """Repeat the rows for ``n_envs`` copies of the cluster (env-major order)."""
        rows = np.tile(np.arange(self.fits.shape[0]), n_envs)
        return self.take(rows)


@dataclass
class _LiveOptions:
    """Columns of the options that some row fits or has a throughput for, and their profile columns.

    Every other column has zero capacity and is never feasible, so the
    functions below compute on these columns only and fill in the constants.
    """

    columns: np.ndarray
    prefill_tps: np.ndarray
    decode_tps: np.ndarray
    max_concurrency: np.ndarray
    itl_s: np.ndarray
    fits: np.ndarray
    option_kind: np.ndarray
    option_devices: np.ndarray
    source_ids: tuple[int, ...]

    @staticmethod
    def _sources(ctx: EncoderContext) -> tuple[np.ndarray, ...]:
        return (ctx.prefill_tps, ctx.decode_tps, ctx.max_concurrency, ctx.itl_s, ctx.fits, ctx.option_kind,
                ctx.option_devices)

    @classmethod
    def of(cls, ctx: EncoderContext) -> "_LiveOptions":
        has_throughput = (ctx.prefill_tps > 0) & (ctx.decode_tps > 0)
        columns = np.flatnonzero((has_throughput | ctx.fits).any(axis=0))
        sources = cls._sources(ctx)
        per_row = [a[:, columns] for a in sources[:5]]
        per_option = [a[columns] for a in sources[5:]]
        return cls(columns, *per_row, *per_option, source_ids=tuple(id(a) for a in sources))

    def matches(self, ctx: EncoderContext) -> bool:
        return self.source_ids == tuple(id(a) for a in self._sources(ctx))


def option_capacity_rps(ctx: EncoderContext, batch: SignalBatch) -> np.ndarray:
    """Return (N, O) requests per second one replica of each option sustains at the current token mix."""
    inp = np.where(batch["mean_input_tokens"] > 0, batch["mean_input_tokens"], DEFAULT_INPUT_TOKENS)[:, None]
    out = np.where(batch["mean_output_tokens"] > 0, batch["mean_output_tokens"], DEFAULT_OUTPUT_TOKENS)[:, None]
    live = ctx.live_options()
    cap = np.zeros((len(batch), ctx.n_options))
    cap[:, live.columns] = replica_capacity_rps(live.prefill_tps, live.decode_tps, live.max_concurrency, live.itl_s,
                                                inp, out)
    return cap


def feasible_options(ctx: EncoderContext, batch: SignalBatch) -> np.ndarray:
    """Return the (N, O) mask of options a Deployment may switch to this tick.

    An option is feasible when the model fits it and either it is the current
    option or at least one pod of it fits in the free slots and the quota.
    """
    live = ctx.live_options()
    current = live.columns[None, :] == batch["option_index"].astype(np.int64)[:, None]
    free = batch.free_slots[:, live.option_kind] >= live.option_devices[None, :]
    quota = batch.quota_headroom_pods[:, live.columns] >= 1.0
    feasible = np.zeros((len(batch), ctx.n_options), dtype=bool)
    feasible[:, live.columns] = live.fits & (current | (free & quota))
    return feasible


def new_history(batch: SignalBatch) -> np.ndarray:
    """Return a history buffer (N, HISTORY_TICKS) filled with the current request rate."""
    return np.repeat(batch["request_rate"][:, None], HISTORY_TICKS, axis=1)


def push_history(history: np.ndarray, batch: SignalBatch) -> np.ndarray:
    """Return the history with the newest rate appended (oldest first)."""
    return np.concatenate([history[:, 1:], batch["request_rate"][:, None]], axis=1)


def encode(batch: SignalBatch, ctx: EncoderContext, history: np.ndarray) -> np.ndarray:
    """Encode N Deployments into an (N, observation_size(O)) float32 array.

    ``history`` holds the request rates of the previous HISTORY_TICKS ticks
    (oldest first), as kept by push_history.
    """
    n = len(batch)
    n_opt = ctx.n_options
    rate = np.nan_to_num(batch["request_rate"], nan=0.0, posinf=0.0)
    cap = option_capacity_rps(ctx, batch)
    current = batch["option_index"].astype(np.int64)
    cap_current = np.take_along_axis(cap, current[:, None], axis=1)[:, 0]
    ready = batch["ready_replicas"]
    max_r = np.maximum(ctx.max_replicas, 1.0)
    eps = 1e-6
    # Features are written straight into the output: base features first,
    # then PER_OPTION_FEATURES interleaved per option. Splitting the last axis
    # of a row slice always gives a view, so ``per_option`` writes into ``obs``.
    obs = np.empty((n, observation_size(n_opt)))
    base = obs[:, :BASE_FEATURES]
    per_option = obs[:, BASE_FEATURES:].reshape(n, n_opt, PER_OPTION_FEATURES)

    # Step 1: load relative to what is ready now.
    ready_capacity = np.maximum(ready * cap_current, eps)
    base[:, 0] = np.log1p(rate) / 5.0
    base[:, 1] = np.clip(rate / ready_capacity, 0.0, 5.0)
    base[:, 2] = np.clip(batch["waiting_requests"] / ready_capacity / np.maximum(ctx.slo_ttft_s, eps), 0.0, 10.0) / 10.0
    base[:, 3] = np.clip(batch["ttft_p95_s"] / np.maximum(ctx.slo_ttft_s, eps), 0.0, 10.0) / 10.0
    base[:, 4] = np.clip(batch["kv_cache_usage"], 0.0, 1.0)
    base[:, 5] = np.clip(batch["gpu_utilization"], 0.0, 1.0)
    base[:, 6] = np.clip(batch["dropped_rate"] / np.maximum(rate, eps), 0.0, 1.0)

    # Step 2: replica counts as fractions of max_replicas.
    base[:, 7] = batch["desired_replicas"] / max_r
    base[:, 8] = ready / max_r
    base[:, 9] = batch["pending_replicas"] / max_r
    base[:, 10] = batch["starting_replicas"] / max_r
    base[:, 11] = batch["terminating_replicas"] / max_r
    base[:, 12] = ctx.min_replicas / max_r

    # Step 3: trend from the rate history.
    recent = history[:, -4:].mean(axis=1)
    longer = history.mean(axis=1)
    peak = history[:, -8:].max(axis=1)
    base[:, 13] = np.clip(rate / np.maximum(recent, eps) - 1.0, -1.0, 3.0) * (recent > eps)
    base[:, 14] = np.clip(rate / np.maximum(longer, eps) - 1.0, -1.0, 3.0) * (longer > eps)
    base[:, 15] = np.clip(peak / np.maximum(rate, eps) - 1.0, 0.0, 3.0) * (rate > eps)
    base[:, 16] = np.clip(np.std(history, axis=1) / np.maximum(longer, eps), 0.0, 3.0)

    # Step 4: the workload's token mix and SLO.
    base[:, 17] = np.log1p(batch["mean_input_tokens"]) / 10.0
    base[:, 18] = np.log1p(batch["mean_output_tokens"]) / 10.0
    base[:, 19] = np.log(np.maximum(ctx.slo_ttft_s, eps)) / 5.0

    # Step 5: per option: current one-hot, replicas needed, feasibility, cost, startup, free room.
    _encode_options(per_option, ctx, batch, cap, current, rate, max_r, eps)

    # A sum is finite only when every term is, so the usual case skips nan_to_num.
    if not np.isfinite(obs.sum()):
        np.nan_to_num(obs, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(obs, -OBSERVATION_BOUND, OBSERVATION_BOUND, out=obs)
    return obs.astype(np.float32)


def _encode_options(
    out: np.ndarray, ctx: EncoderContext, batch: SignalBatch, cap: np.ndarray, current: np.ndarray,
    rate: np.ndarray, max_r: np.ndarray, eps: float,
) -> None:
    """Write the (N, O, PER_OPTION_FEATURES) option features into ``out``.

    Options outside ``ctx.live_options()`` have zero capacity and are never
    feasible, so their "needed" and "cost" features are the constants the
    formulas give for zero capacity.
    """
    live = ctx.live_options()
    cols = live.columns
    cap_live = cap[:, cols]
    out[:, :, 0] = np.arange(ctx.n_options)[None, :] == current[:, None]

    needed_without = np.clip(max_r * 2 / max_r, 0.0, 2.0)
    out[:, :, 1] = needed_without[:, None]
    needed = np.where(cap_live > 0, rate[:, None] / np.maximum(cap_live, eps), max_r[:, None] * 2) / max_r[:, None]
    out[:, cols, 1] = np.clip(needed, 0.0, 2.0)

    feasible = feasible_options(ctx, batch)
    out[:, :, 2] = feasible
    cost_per_rps = np.where(cap_live > 0, ctx.price_per_hour[cols][None, :] / np.maximum(cap_live, eps), np.inf)
    best = np.min(np.where(feasible[:, cols], cost_per_rps, np.inf), axis=1, keepdims=True)
    best = np.where(np.isfinite(best), best, 1.0)
    relative_cost = np.where(np.isfinite(cost_per_rps), np.log(cost_per_rps / best), 3.0)
    out[:, :, 3] = 3.0
    out[:, cols, 3] = np.clip(relative_cost, 0.0, 3.0)

    out[:, :, 4] = np.clip(ctx.startup_s / 300.0, 0.0, 2.0)
    free_pods = batch.free_slots[:, ctx.option_kind] / ctx.option_devices[None, :]
    room = np.minimum(free_pods, batch.quota_headroom_pods) / max_r[:, None]
    out[:, :, 5] = np.clip(room, 0.0, 2.0)
