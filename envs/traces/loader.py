"""Build the per-tick arrival series of an episode from a trace spec.

A trace spec is a plain mapping, usually one entry of the Hydra config group
``conf/trace``. Its ``path`` takes one of three forms:

- ``embedded:<relative path>``: a file shipped in the ``envs/data`` folder.
- ``shared:<relative path>``: a file in the shared traces folder, which is
  ``$GPU_AUTOSCALER_TRACES`` when that variable is set and otherwise
  ``shared/traces`` beside the repository checkout.
- any other path: absolute, or relative to the repository root.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Mapping

from envs.traces.nasa import read_nasa_http
from envs.traces.readers import (
    rate_to_series,
    read_alibaba_genai_requests,
    read_azure_llm,
    read_mooncake,
    read_servegen,
    time_scale,
    to_series,
)
from envs.traces.records import ArrivalSeries, RateTrace, RequestTrace

# envs/traces/loader.py -> envs/ -> repository root.
REPO_ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_DATA = REPO_ROOT / "envs" / "data"
TRACES_ENV_VAR = "GPU_AUTOSCALER_TRACES"
# The repository is checked out beside a shared/traces folder on the team's machines.
SHARED_TRACES = REPO_ROOT.parent / "shared" / "traces"

REQUEST_READERS: dict[str, Callable[[Path], RequestTrace]] = {
    "azure_llm": read_azure_llm,
    "mooncake": read_mooncake,
    "alibaba_genai": read_alibaba_genai_requests,
}
RATE_KINDS = ("nasa", "servegen")
SPLITS = ("all", "train", "held_out")
KNOWN_KEYS = frozenset({
    "kind", "path", "name", "tick_s", "time_scale", "rate_scale", "clients", "mean_input_tokens",
    "mean_output_tokens", "window_start_s", "window_end_s", "split", "train_fraction", "seed",
    "start_day", "days",
})
# Keys that apply only to some kinds, with those kinds. Rate traces have no
# per-request tokens, so they take assumed means, and ``start_day`` and
# ``days`` select whole seconds of the NASA series before binning.
KIND_ONLY_KEYS: dict[str, tuple[str, ...]] = {
    "clients": ("servegen",),
    "seed": ("servegen",),
    "mean_input_tokens": ("nasa", "servegen"),
    "mean_output_tokens": ("nasa", "servegen"),
    "start_day": ("nasa",),
    "days": ("nasa",),
}
SECONDS_PER_DAY = 86400.0


class TraceSpecError(ValueError):
    """Invalid trace spec: an unknown key, a missing key or a value of the wrong type or range."""


def shared_traces_dir() -> Path:
    """Return the folder that ``shared:`` paths resolve against, reading the environment on each call."""
    override = os.environ.get(TRACES_ENV_VAR)
    return Path(override).expanduser() if override else SHARED_TRACES


def resolve_trace_path(path: str | PathLike[str]) -> Path:
    """Resolve a spec path (``embedded:``, ``shared:``, absolute or repository-relative) to an existing path."""
    text = str(path)
    if text.startswith("embedded:"):
        resolved = EMBEDDED_DATA / text.removeprefix("embedded:")
        if not resolved.exists():
            raise FileNotFoundError(
                f"embedded trace {text!r} not found at {resolved}. Give a path relative to {EMBEDDED_DATA}, "
                "or reinstall the package if its data files are missing."
            )
        return resolved

    if text.startswith("shared:"):
        root = shared_traces_dir()
        resolved = root / text.removeprefix("shared:")
        if not resolved.exists():
            raise FileNotFoundError(
                f"shared trace {text!r} not found at {resolved}. Set {TRACES_ENV_VAR} to the folder that "
                f"contains the shared traces (it is now {root})."
            )
        return resolved

    resolved = Path(text).expanduser()
    if not resolved.is_absolute():
        resolved = REPO_ROOT / resolved
    if not resolved.exists():
        raise FileNotFoundError(
            f"trace path {text!r} not found at {resolved}. Relative paths resolve against the repository "
            f"root {REPO_ROOT}. Give an existing path or use the embedded: or shared: prefix."
        )
    return resolved


def _number(spec: Mapping[str, Any], key: str, default: float, allow_zero: bool = False) -> float:
    """Return ``spec[key]`` as a finite float > 0 (or >= 0), or ``default`` when the key is absent."""
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TraceSpecError(f"trace spec key {key!r} is {value!r}. Give a finite number.")
    if value < 0 or (value == 0 and not allow_zero):
        raise TraceSpecError(f"trace spec key {key!r} is {value!r}. It must be {'>=' if allow_zero else '>'} 0.")
    return float(value)


def _optional_seconds(spec: Mapping[str, Any], key: str) -> float | None:
    """Return ``spec[key]`` as a finite float >= 0, or None when the key is absent or null."""
    if spec.get(key) is None:
        return None
    return _number(spec, key, 0.0, allow_zero=True)


def _optional_number(spec: Mapping[str, Any], key: str) -> float | None:
    """Return ``spec[key]`` as a finite float > 0, or None when the key is absent or null."""
    if spec.get(key) is None:
        return None
    return _number(spec, key, 0.0)


def _check_keys(spec: Mapping[str, Any]) -> tuple[str, str]:
    """Check key names and the kind, and return ``(kind, path)``."""
    unknown = sorted(str(key) for key in spec if key not in KNOWN_KEYS)
    if unknown:
        raise TraceSpecError(
            f"unknown trace spec key(s) {unknown}. Remove or rename them. The known keys are {sorted(KNOWN_KEYS)}."
        )
    for key in ("kind", "path"):
        if spec.get(key) in (None, ""):
            raise TraceSpecError(f"trace spec key {key!r} is missing. Every trace spec needs 'kind' and 'path'.")

    kind = str(spec["kind"])
    kinds = sorted([*REQUEST_READERS, *RATE_KINDS])
    if kind not in kinds:
        raise TraceSpecError(f"trace spec kind {kind!r} is unknown. Use one of {kinds}.")
    misplaced = [key for key, kinds in KIND_ONLY_KEYS.items() if kind not in kinds and spec.get(key) is not None]
    if misplaced:
        owners = sorted({owner for key in misplaced for owner in KIND_ONLY_KEYS[key]})
        raise TraceSpecError(
            f"trace spec key(s) {misplaced} apply only to kind {' or '.join(map(repr, owners))}, not {kind!r}. "
            "Remove them."
        )
    return kind, str(spec["path"])


def _token_means(spec: Mapping[str, Any]) -> dict[str, float]:
    return {
        key: _number(spec, key, 0.0, allow_zero=True)
        for key in ("mean_input_tokens", "mean_output_tokens")
        if spec.get(key) is not None
    }


def _read_servegen_spec(spec: Mapping[str, Any], path: Path) -> RateTrace:
    clients = spec.get("clients")
    if clients is not None:
        if isinstance(clients, (str, bytes)) or not all(
            isinstance(client, int) and not isinstance(client, bool) for client in clients
        ):
            raise TraceSpecError(f"trace spec key 'clients' is {clients!r}. Give a list of integer client ids.")
        clients = list(clients)
    return read_servegen(path, clients, **_token_means(spec))


def _read_nasa_spec(spec: Mapping[str, Any], path: Path) -> tuple[RateTrace, float]:
    """Read the NASA series and cut the seconds that ``start_day`` and ``days`` select.

    Return the cut trace and its offset in seconds from slot 0. The cut is
    widened to whole 1-second slots.
    """
    start_day = _optional_seconds(spec, "start_day") or 0.0
    days = _optional_number(spec, "days")
    trace = read_nasa_http(path, **_token_means(spec))

    total_s = trace.duration_s
    total_days = total_s / SECONDS_PER_DAY
    if start_day * SECONDS_PER_DAY >= total_s:
        raise TraceSpecError(
            f"trace spec key 'start_day' is {start_day:g}, but {path} covers {total_days:.6g} days "
            f"({total_s:,.0f} s). Give a start_day below {total_days:.6g}."
        )
    first = math.floor(round(start_day * SECONDS_PER_DAY / trace.window_s, 6))
    stop = len(trace)
    if days is not None:
        end_s = (start_day + days) * SECONDS_PER_DAY
        stop = math.ceil(round(end_s / trace.window_s, 6))
        if stop > len(trace):
            # Rounded down to the microday, so that the suggested value itself fits.
            max_days = math.floor((total_days - start_day) * 1e6) / 1e6
            raise TraceSpecError(
                f"trace spec key 'days' is {days:g}, so the window ends at day {start_day + days:g}, past the end "
                f"of {path} at day {total_days:.6g}. Give days <= {max_days:.6f} for start_day {start_day:g}."
            )
        if stop <= first:
            raise TraceSpecError(
                f"trace spec key 'days' is {days:g}, shorter than a microsecond, so it selects no second of "
                f"{path}. Give at least {1 / SECONDS_PER_DAY:.3g} days (1 s)."
            )
    if first == 0 and stop == len(trace):
        return trace, 0.0
    return replace(trace, rate_per_s=trace.rate_per_s[first:stop]), first * trace.window_s


def load_trace(spec: Mapping[str, Any]) -> ArrivalSeries:
    """Read the trace a spec names and turn it into the arrival series of an episode.

    The steps run in this order: read, for kind ``nasa`` cut the days from
    ``start_day`` to ``start_day + days``, ``time_scale`` (compress time), bin
    into ticks of ``tick_s`` seconds, cut ``[window_start_s, window_end_s)``,
    take the ``split`` and multiply by ``rate_scale``. Window bounds and days
    count from the first request or window of the original trace, so they
    keep their meaning when ``time_scale`` changes. A ``nasa`` series cut by
    ``start_day`` keeps that time axis: its ``start_s`` is the cut's start.
    ``seed`` makes a ServeGen trace give Poisson-sampled counts instead of
    expected counts.
    """
    kind, raw_path = _check_keys(spec)
    tick_s = _number(spec, "tick_s", 15.0)
    time_factor = _number(spec, "time_scale", 1.0)
    rate_factor = _number(spec, "rate_scale", 1.0)
    train_fraction = _number(spec, "train_fraction", 0.7)
    split = spec.get("split", "all")
    if split not in SPLITS:
        raise TraceSpecError(f"trace spec key 'split' is {split!r}. Use one of {list(SPLITS)}.")
    seed = spec.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TraceSpecError(f"trace spec key 'seed' is {seed!r}. Give an integer or leave it out.")
    window_start = _optional_seconds(spec, "window_start_s")
    window_end = _optional_seconds(spec, "window_end_s")

    path = resolve_trace_path(raw_path)
    trace: RequestTrace | RateTrace
    offset_s = 0.0
    if kind == "servegen":
        trace = _read_servegen_spec(spec, path)
    elif kind == "nasa":
        trace, offset_s = _read_nasa_spec(spec, path)
    else:
        trace = REQUEST_READERS[kind](path)
    if time_factor != 1.0:
        trace = time_scale(trace, time_factor)
    try:
        if isinstance(trace, RateTrace):
            series = rate_to_series(trace, tick_s, seed)
        else:
            series = to_series(trace, tick_s)
    except ValueError as error:
        raise TraceSpecError(
            f"{path} cannot be binned with tick_s={tick_s:g} and time_scale={time_factor:g}: {error}"
        ) from None
    if offset_s:
        series = replace(series, start_s=offset_s / time_factor)

    if window_start is not None or window_end is not None:
        start = series.start_s if window_start is None else window_start / time_factor
        end = series.end_s if window_end is None else window_end / time_factor
        try:
            series = series.window(start, end)
        except ValueError as error:
            covered = f"{series.start_s * time_factor:g}..{series.end_s * time_factor:g} s"
            raise TraceSpecError(
                f"window_start_s={window_start} and window_end_s={window_end} are invalid for {path}. {error} "
                f"Before time scaling the trace covers {covered}."
            ) from None

    try:
        if split != "all":
            train, held_out = series.split(train_fraction)
            series = train if split == "train" else held_out
        if rate_factor != 1.0:
            series = series.rate_scale(rate_factor)
    except ValueError as error:
        # For example a split of a one-tick series, or a rate_scale that makes the counts overflow.
        raise TraceSpecError(
            f"split={split!r}, train_fraction={train_fraction:g} and rate_scale={rate_factor:g} are invalid "
            f"for {path}: {error}"
        ) from None
    if spec.get("name"):
        series = replace(series, name=str(spec["name"]))
    return series
