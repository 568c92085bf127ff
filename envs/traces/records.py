"""In-memory forms of a workload trace: per request, per rate window and per tick.

A reader returns a ``RequestTrace`` (one entry per request) or a ``RateTrace``
(a mean arrival rate per fixed window). Both become an ``ArrivalSeries``, the
requests and token totals per control tick, which is what the simulator replays.
All three are frozen and their arrays are read-only copies, so a trace can be
shared between environments without one of them changing it for the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


def _checked_array(values: Any, field: str, owner: str, dtype: type) -> np.ndarray:
    """Return a read-only 1-D copy of ``values`` after checking it is finite and non-negative."""
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise ValueError(f"{owner}.{field} must be 1-D, got shape {raw.shape}. Pass a flat array.")
    if raw.size and not np.issubdtype(raw.dtype, np.number):
        raise ValueError(f"{owner}.{field} must be numeric, got dtype {raw.dtype}. Convert it with float().")

    as_float = raw.astype(np.float64)
    if not np.all(np.isfinite(as_float)):
        index = int(np.flatnonzero(~np.isfinite(as_float))[0])
        raise ValueError(f"{owner}.{field}[{index}] is {as_float[index]}. Every value must be finite.")
    if np.any(as_float < 0):
        index = int(np.flatnonzero(as_float < 0)[0])
        raise ValueError(f"{owner}.{field}[{index}] is {as_float[index]}. Every value must be >= 0.")
    if dtype is np.int64 and np.any(as_float != np.floor(as_float)):
        index = int(np.flatnonzero(as_float != np.floor(as_float))[0])
        raise ValueError(f"{owner}.{field}[{index}] is {as_float[index]}. Token counts must be whole numbers.")

    checked = np.array(raw, dtype=dtype, copy=True)
    checked.setflags(write=False)
    return checked


def _check_positive(value: float, field: str, owner: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}.{field} is {value}. It must be a finite number > 0.")
    return float(value)


def _check_same_length(owner: str, **arrays: np.ndarray) -> None:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{owner} arrays differ in length: {lengths}. Give one entry per request or tick.")
    if next(iter(lengths.values())) == 0:
        raise ValueError(f"{owner} has no entries. A trace needs at least one request or tick.")


@dataclass(frozen=True, eq=False)
class RequestTrace:
    """Requests of a trace in arrival order, with their prompt and output token counts.

    ``arrival_s`` gives seconds from the first request, so it starts at 0 and
    never decreases. ``start_time`` is the wall-clock time of the first request
    as written in the file, or ``""`` when the trace has relative times only.
    """

    name: str
    source: str
    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    start_time: str = ""

    def __post_init__(self) -> None:
        owner = f"RequestTrace {self.name!r}"
        arrival = _checked_array(self.arrival_s, "arrival_s", owner, np.float64)
        inputs = _checked_array(self.input_tokens, "input_tokens", owner, np.int64)
        outputs = _checked_array(self.output_tokens, "output_tokens", owner, np.int64)
        _check_same_length(owner, arrival_s=arrival, input_tokens=inputs, output_tokens=outputs)
        if arrival[0] != 0.0:
            raise ValueError(f"{owner}.arrival_s[0] is {arrival[0]}. Subtract the first arrival time so it is 0.")
        if np.any(np.diff(arrival) < 0):
            index = int(np.flatnonzero(np.diff(arrival) < 0)[0]) + 1
            raise ValueError(f"{owner}.arrival_s[{index}] is earlier than the entry before it. Sort the requests.")

        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "input_tokens", inputs)
        object.__setattr__(self, "output_tokens", outputs)

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last request."""
        return float(self.arrival_s[-1])


@dataclass(frozen=True, eq=False)
class RateTrace:
    """Mean arrival rate in consecutive windows of ``window_s`` seconds, starting at 0.

    Rate traces carry no per-request token counts, so ``mean_input_tokens`` and
    ``mean_output_tokens`` are the tokens assumed for every request.
    """

    name: str
    source: str
    window_s: float
    rate_per_s: np.ndarray
    mean_input_tokens: float
    mean_output_tokens: float

    def __post_init__(self) -> None:
        owner = f"RateTrace {self.name!r}"
        object.__setattr__(self, "window_s", _check_positive(self.window_s, "window_s", owner))
        rates = _checked_array(self.rate_per_s, "rate_per_s", owner, np.float64)
        _check_same_length(owner, rate_per_s=rates)
        object.__setattr__(self, "rate_per_s", rates)
        for field in ("mean_input_tokens", "mean_output_tokens"):
            value = float(getattr(self, field))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{owner}.{field} is {value}. It must be a finite number >= 0.")
            object.__setattr__(self, field, value)

    def __len__(self) -> int:
        return len(self.rate_per_s)

    @property
    def duration_s(self) -> float:
        """Seconds covered by all windows."""
        return len(self.rate_per_s) * self.window_s


@dataclass(frozen=True, eq=False)
class ArrivalSeries:
    """Requests and token totals per control tick of ``tick_s`` seconds.

    Tick ``k`` covers ``[start_s + k * tick_s, start_s + (k + 1) * tick_s)`` on the
    time axis of the trace it was binned from. ``requests`` may be fractional
    because a rate trace binned without sampling gives expected counts.
    ``input_tokens`` and ``output_tokens`` are the totals over the requests of
    each tick, not means.
    """

    name: str
    tick_s: float
    requests: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    start_s: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        owner = f"ArrivalSeries {self.name!r}"
        object.__setattr__(self, "tick_s", _check_positive(self.tick_s, "tick_s", owner))
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ValueError(f"{owner}.start_s is {self.start_s}. It must be a finite number >= 0.")
        object.__setattr__(self, "start_s", float(self.start_s))

        requests = _checked_array(self.requests, "requests", owner, np.float64)
        inputs = _checked_array(self.input_tokens, "input_tokens", owner, np.float64)
        outputs = _checked_array(self.output_tokens, "output_tokens", owner, np.float64)
        _check_same_length(owner, requests=requests, input_tokens=inputs, output_tokens=outputs)
        object.__setattr__(self, "requests", requests)
        object.__setattr__(self, "input_tokens", inputs)
        object.__setattr__(self, "output_tokens", outputs)

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def duration_s(self) -> float:
        """Seconds covered by all ticks."""
        return len(self.requests) * self.tick_s

    @property
    def end_s(self) -> float:
        """End of the last tick on the trace's time axis."""
        return self.start_s + self.duration_s

    def mean_rate(self) -> float:
        """Return the mean arrival rate over the whole series, in requests per second."""
        return float(self.requests.sum()) / self.duration_s

    def rate_scale(self, factor: float) -> ArrivalSeries:
        """Multiply requests and token totals by ``factor``, keeping the time axis.

        Mean tokens per request stay the same, so ``factor`` 2 models twice as
        many users sending the same kind of requests.
        """
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"rate_scale factor is {factor}. It must be a finite number > 0.")
        return replace(
            self,
            requests=self.requests * factor,
            input_tokens=self.input_tokens * factor,
            output_tokens=self.output_tokens * factor,
        )

    def window(self, start_s: float, end_s: float) -> ArrivalSeries:
        """Return the ticks that overlap ``[start_s, end_s)``, on the trace's time axis.

        The bounds are widened to whole ticks. They must lie within
        ``[self.start_s, self.end_s]`` and ``start_s`` must be less than ``end_s``.
        """
        if not (math.isfinite(start_s) and math.isfinite(end_s) and start_s < end_s):
            raise ValueError(
                f"window [{start_s}, {end_s}) of {self.name!r} is empty or not finite. Give start_s < end_s."
            )
        tolerance = 1e-9 * self.tick_s
        if start_s < self.start_s - tolerance or end_s > self.end_s + tolerance:
            raise ValueError(
                f"window [{start_s}, {end_s}) s lies outside {self.name!r}, which covers "
                f"[{self.start_s}, {self.end_s}) s. Choose bounds inside that range."
            )

        first = max(0, math.floor((start_s - self.start_s) / self.tick_s + 1e-9))
        stop = min(len(self), math.ceil((end_s - self.start_s) / self.tick_s - 1e-9))
        return self._slice(first, stop)

    def split(self, train_fraction: float = 0.7) -> tuple[ArrivalSeries, ArrivalSeries]:
        """Split into a training part (the first ticks) and a held-out part (the rest).

        The training part gets ``floor(len(self) * train_fraction)`` ticks. Both
        parts must be non-empty, so a series needs at least two ticks.
        """
        if not (0 < train_fraction < 1):
            raise ValueError(f"train_fraction is {train_fraction}. It must lie strictly between 0 and 1.")
        n_train = math.floor(len(self) * train_fraction)
        if n_train < 1 or n_train >= len(self):
            raise ValueError(
                f"train_fraction {train_fraction} of {len(self)} ticks in {self.name!r} leaves one part "
                f"empty. Use a longer series or a train_fraction nearer 0.5."
            )
        return self._slice(0, n_train), self._slice(n_train, len(self))

    def tile(self, n_ticks: int) -> ArrivalSeries:
        """Repeat the whole series until it has at least ``n_ticks`` ticks.

        The result is a whole number of copies, so every copy starts at the same
        point of the daily or hourly pattern. A series already long enough is
        returned unchanged.
        """
        if n_ticks < 1:
            raise ValueError(f"tile n_ticks is {n_ticks}. It must be >= 1.")
        copies = math.ceil(n_ticks / len(self))
        if copies <= 1:
            return self
        return replace(
            self,
            requests=np.tile(self.requests, copies),
            input_tokens=np.tile(self.input_tokens, copies),
            output_tokens=np.tile(self.output_tokens, copies),
        )

    def _slice(self, first: int, stop: int) -> ArrivalSeries:
        return replace(
            self,
            requests=self.requests[first:stop],
            input_tokens=self.input_tokens[first:stop],
            output_tokens=self.output_tokens[first:stop],
            start_s=self.start_s + first * self.tick_s,
        )
