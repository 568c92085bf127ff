"""Static simulator parameters as arrays with a leading environment axis.

``SimParams`` is built once from a ClusterSpec and the arrival series of each
Deployment. Domain randomisation (rate scale, startup time and cluster size
per environment) happens here, so the step function stays a pure function of
(state, params, action).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from envs.cluster.spec import ClusterSpec, profile_tables, quota_usage_keys
from envs.sim.counter_rng import uniform
from envs.traces.records import ArrivalSeries

# Ring-buffer length of the cold-start pipeline, in ticks; startups longer
# than this many ticks are clipped to it.
MAX_STARTUP_TICKS = 48


@dataclass(frozen=True)
class Randomization:
    """Ranges for domain randomisation; a (1, 1) range disables that axis."""

    rate_scale: tuple[float, float] = (1.0, 1.0)
    startup_scale: tuple[float, float] = (1.0, 1.0)
    cluster_scale: tuple[float, float] = (1.0, 1.0)
    # Factors on the tokens of every request, drawn per episode and Deployment:
    # the same trace then stands for services with longer or shorter prompts
    # and answers.
    input_token_scale: tuple[float, float] = (1.0, 1.0)
    output_token_scale: tuple[float, float] = (1.0, 1.0)
    # Start each episode at a random tick of a random series; off, every
    # episode starts at tick 0 of the first series (evaluation).
    random_window: bool = True
    # Probability that an episode starts from a random allocation: every
    # Deployment on a random option that fits its model, with a random
    # replica count in [min_replicas, max_replicas]. A policy that has only
    # seen its configured start never learns to leave a bad option.
    initial_allocation: float = 0.0


@dataclass
class TraceBank:
    """All arrival series of all Deployments concatenated into flat arrays."""

    requests: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    # Per Deployment: list of (start, length) of each candidate series in the bank.
    segments: list[list[tuple[int, int]]]
    names: list[list[str]]


def build_trace_bank(series_per_deployment: Sequence[Sequence[ArrivalSeries]], episode_ticks: int) -> TraceBank:
    """Concatenate series, tiling any series shorter than an episode."""
    requests, inputs, outputs = [], [], []
    segments: list[list[tuple[int, int]]] = []
    names: list[list[str]] = []
    offset = 0
    for series_list in series_per_deployment:
        if not series_list:
            raise ValueError("every Deployment needs at least one arrival series")
        entries = []
        labels = []
        for series in series_list:
            length = len(series)
            reps = max(1, math.ceil(episode_ticks / max(length, 1)))
            req = np.tile(series.requests, reps)
            requests.append(req)
            inputs.append(np.tile(series.input_tokens, reps))
            outputs.append(np.tile(series.output_tokens, reps))
            entries.append((offset, len(req)))
            labels.append(series.name)
            offset += len(req)
        segments.append(entries)
        names.append(labels)
    return TraceBank(
        requests=np.concatenate(requests).astype(np.float64),
        input_tokens=np.concatenate(inputs).astype(np.float64),
        output_tokens=np.concatenate(outputs).astype(np.float64),
        segments=segments,
        names=names,
    )


@dataclass
class SimParams:
    """Everything constant during an episode. Shapes: E envs, D Deployments, O options,
    K slot kinds, Q quota keys."""

    n_envs: int
    n_deployments: int
    tick_s: float
    episode_ticks: int
    # Per option (O,).
    option_kind: np.ndarray
    option_devices: np.ndarray
    option_price_per_hour: np.ndarray
    option_gpu_equivalents: np.ndarray
    option_quota: np.ndarray  # (O, Q) amount one pod counts against each quota key
    # Per Deployment and option (D, O).
    prefill_tps: np.ndarray
    decode_tps: np.ndarray
    max_concurrency: np.ndarray
    itl_s: np.ndarray
    fits: np.ndarray
    startup_s: np.ndarray
    # Per env and Deployment (E, D) or per env (E, K), (E, Q), (E, D, O).
    startup_ticks: np.ndarray  # (E, D, O)
    slot_capacity: np.ndarray  # (E, K)
    quota_limit: np.ndarray  # (E, Q), inf where no quota
    min_replicas: np.ndarray  # (D,)
    max_replicas: np.ndarray  # (D,)
    slo_ttft_s: np.ndarray  # (D,)
    queue_timeout_s: np.ndarray  # (D,)
    initial_option: np.ndarray  # (D,)
    initial_replicas: np.ndarray  # (D,)
    bank: TraceBank = field(repr=False, default=None)  # type: ignore[assignment]
    slot_kinds: tuple[str, ...] = ()
    quota_keys: tuple[str, ...] = ()
    option_names: tuple[str, ...] = ()
    deployment_names: tuple[str, ...] = ()
    randomization: Randomization = Randomization()
    base_slot_capacity: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]


def build_params(
    cluster: ClusterSpec,
    series_per_deployment: Sequence[Sequence[ArrivalSeries]],
    *,
    n_envs: int,
    episode_ticks: int,
    randomization: Randomization | None = None,
) -> SimParams:
    """Turn a ClusterSpec and per-Deployment arrival series into SimParams."""
    catalog = cluster.catalog
    kinds = catalog.slot_kinds
    options = catalog.options
    n_opt = len(options)
    deployments = cluster.deployments
    if len(series_per_deployment) != len(deployments):
        raise ValueError(
            f"got arrival series for {len(series_per_deployment)} Deployments, "
            f"the cluster has {len(deployments)}"
        )

    quota_keys = tuple(sorted(cluster.quota_hard))
    option_quota = np.zeros((n_opt, len(quota_keys)))
    for o, option in enumerate(options):
        usage = quota_usage_keys(option)
        for q, key in enumerate(quota_keys):
            option_quota[o, q] = usage.get(key, 0.0)

    tables = profile_tables(cluster)
    prefill, decode, concurrency = tables["prefill_tps"], tables["decode_tps"], tables["max_concurrency"]
    itl, fits, startup = tables["itl_s"], tables["fits"], tables["startup_s"]

    capacity = cluster.slot_capacity()
    base_capacity = np.array([capacity.get(kind, 0) for kind in kinds], dtype=np.float64)
    limits = np.array([cluster.quota_hard[key] for key in quota_keys], dtype=np.float64)
    randomization = randomization or Randomization()
    params = SimParams(
        n_envs=n_envs,
        n_deployments=len(deployments),
        tick_s=cluster.tick_s,
        episode_ticks=episode_ticks,
        option_kind=np.array([kinds.index(o.slot_kind) for o in options], dtype=np.int64),
        option_devices=np.array([o.devices for o in options], dtype=np.float64),
        option_price_per_hour=np.array([o.price_per_hour for o in options]),
        option_gpu_equivalents=np.array([o.gpu_equivalents for o in options]),
        option_quota=option_quota,
        prefill_tps=prefill,
        decode_tps=decode,
        max_concurrency=concurrency,
        itl_s=itl,
        fits=fits,
        startup_s=startup,
        startup_ticks=np.zeros((n_envs, len(deployments), n_opt), dtype=np.int64),
        slot_capacity=np.tile(base_capacity, (n_envs, 1)),
        quota_limit=np.tile(limits, (n_envs, 1)),
        min_replicas=np.array([d.min_replicas for d in deployments], dtype=np.float64),
        max_replicas=np.array([d.max_replicas for d in deployments], dtype=np.float64),
        slo_ttft_s=np.array([d.slo_ttft_p95_s for d in deployments]),
        queue_timeout_s=np.array([d.queue_timeout_s for d in deployments]),
        initial_option=np.array([catalog.option_index(d.initial_option) for d in deployments]),
        initial_replicas=np.array([d.initial_replicas for d in deployments], dtype=np.float64),
        bank=build_trace_bank(series_per_deployment, episode_ticks),
        slot_kinds=kinds,
        quota_keys=quota_keys,
        option_names=catalog.option_names,
        deployment_names=tuple(d.name for d in deployments),
        randomization=randomization,
        base_slot_capacity=base_capacity,
    )
    params.startup_ticks[:] = startup_ticks_for(params, np.ones((n_envs, 1, 1)))
    return params


def startup_ticks_for(params: SimParams, scale: np.ndarray) -> np.ndarray:
    """Return cold-start ticks per (env, Deployment, option) for a startup scale."""
    ticks = np.ceil(params.startup_s[None, :, :] * scale / params.tick_s)
    return np.clip(ticks, 1, MAX_STARTUP_TICKS - 1).astype(np.int64)


def randomize_envs(
    params: SimParams, seed: int, rows: np.ndarray, env_ids: np.ndarray, episode: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw randomisation for batch rows ``rows``, keyed by global ``env_ids`` and ``episode``.

    Keying on the global id lets a scalar env replay row i of a batch. Startup
    ticks and slot capacity of those rows are updated in place. Returns
    (rate scale (n, D), trace start index into the bank (n, D), initial option
    (n, D), initial replicas (n, D), input and output token scale (n, D, 2)).
    """
    r = params.randomization
    n = len(rows)
    d = params.n_deployments
    rate_scale = _log_uniform(uniform(seed, env_ids, episode, 1, d), r.rate_scale)
    startup = _log_uniform(uniform(seed, env_ids, episode, 2, 1), r.startup_scale)
    params.startup_ticks[rows] = startup_ticks_for(params, startup[:, :, None])
    cluster = _log_uniform(uniform(seed, env_ids, episode, 3, 1), r.cluster_scale)
    params.slot_capacity[rows] = np.floor(params.base_slot_capacity[None, :] * cluster)

    # Pick one series per Deployment and a window inside it that fits an episode.
    pick = uniform(seed, env_ids, episode, 4, d)
    where = uniform(seed, env_ids, episode, 5, d)
    if not r.random_window:
        pick[:] = 0.0
        where[:] = 0.0
    starts = np.zeros((n, d), dtype=np.int64)
    for col, entries in enumerate(params.bank.segments):
        seg = np.minimum((pick[:, col] * len(entries)).astype(np.int64), len(entries) - 1)
        seg_start = np.array([e[0] for e in entries])[seg]
        seg_len = np.array([e[1] for e in entries])[seg]
        room = np.maximum(seg_len - params.episode_ticks, 0)
        starts[:, col] = seg_start + np.floor(where[:, col] * (room + 1)).astype(np.int64)
    option, replicas = _initial_allocation(params, seed, rows, env_ids, episode)
    tokens = np.stack([_log_uniform(uniform(seed, env_ids, episode, 9, d), r.input_token_scale),
                       _log_uniform(uniform(seed, env_ids, episode, 10, d), r.output_token_scale)], axis=-1)
    return rate_scale, starts, option, replicas, tokens


def _initial_allocation(
    params: SimParams, seed: int, rows: np.ndarray, env_ids: np.ndarray, episode: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw each row's starting (option, replicas), both (n, D).

    A drawn allocation that does not fit the row's slots or quota falls back
    to the configured start for that row, so every episode starts on pods the
    scheduler could have placed.
    """
    n, d = len(rows), params.n_deployments
    option = np.tile(params.initial_option, (n, 1)).astype(np.int64)
    replicas = np.tile(params.initial_replicas, (n, 1))
    chance = float(params.randomization.initial_allocation)
    if chance <= 0.0 or n == 0:
        return option, replicas
    drawn = uniform(seed, env_ids, episode, 6, 1)[:, 0] < chance
    pick = uniform(seed, env_ids, episode, 7, d)
    count = uniform(seed, env_ids, episode, 8, d)
    # Options a Deployment can start on: the model fits and its slot kind exists.
    startable = params.fits & (params.base_slot_capacity[params.option_kind] >= params.option_devices)[None, :]
    for col in range(d):
        choices = np.flatnonzero(startable[col])
        if len(choices) == 0:
            continue
        index = np.minimum((pick[:, col] * len(choices)).astype(np.int64), len(choices) - 1)
        low, high = params.min_replicas[col], params.max_replicas[col]
        option[drawn, col] = choices[index[drawn]]
        replicas[drawn, col] = np.floor(low + count[drawn, col] * (high - low + 1)).clip(low, high)
    # Reject rows whose pods exceed their slots or a quota.
    used = np.zeros((n, len(params.slot_kinds)))
    quota = np.zeros((n, len(params.quota_keys)))
    for col in range(d):
        pods = replicas[:, col]
        np.add.at(used, (np.arange(n), params.option_kind[option[:, col]]), params.option_devices[option[:, col]] * pods)
        quota += params.option_quota[option[:, col]] * pods[:, None]
    fits = (used <= params.slot_capacity[rows]).all(axis=1) & (quota <= params.quota_limit[rows]).all(axis=1)
    keep = drawn & fits
    option = np.where(keep[:, None], option, params.initial_option[None, :])
    replicas = np.where(keep[:, None], replicas, params.initial_replicas[None, :])
    return option.astype(np.int64), replicas


def _log_uniform(u: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = float(bounds[0]), float(bounds[1])
    if low == high:
        return np.full(u.shape, low)
    return np.exp(math.log(low) + u * (math.log(high) - math.log(low)))
