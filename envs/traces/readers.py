"""Readers for public LLM and GenAI serving traces, and conversion to per-tick series.

Each reader checks every row and raises ``TraceFormatError`` at the first bad
cell, naming the file, row and column. The readers use only the standard
library and numpy, so no pandas is needed.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np

from envs.traces.errors import TraceFormatError
from envs.traces.parsing import (
    CSV_SYNTAX_COLUMN,
    MAX_TRACE_SPAN_S,
    check_order,
    check_span,
    csv_rows,
    parse_count,
    parse_nonnegative,
    parse_timestamp_us,
    undecodable_file_error,
)
from envs.traces.records import ArrivalSeries, RateTrace, RequestTrace

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
ALIBABA_GENAI_COLUMNS = ("gmt_create", "prompt_length", "num_images_per_prompt")
MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")

# NOTE: an assumption for a chat model, not a measurement. The ServeGen rate
# files carry no token counts, and its per-client token distributions were not
# copied. Pass measured means to read_servegen when they are known.
SERVEGEN_MEAN_INPUT_TOKENS = 1000.0
SERVEGEN_MEAN_OUTPUT_TOKENS = 250.0

# A mean rate above this is a corrupt cell rather than a service's traffic,
# and its per-tick counts would overflow float64 sums.
MAX_RATE_PER_S = 1e9
# Maximum length of a series that to_series and rate_to_series build: 10
# million ticks are 240 MB of arrays and about 4.8 years at 15 s ticks.
MAX_SERIES_TICKS = 10_000_000

_SERVEGEN_FILE = re.compile(r"chunk-(\d+)-trace\.csv")
_SERVEGEN_START_COLUMN = "column 1 (window start, s)"
_SERVEGEN_RATE_COLUMN = "column 2 (mean rate, requests/s)"

TraceT = TypeVar("TraceT", RequestTrace, RateTrace)


def _read_request_csv(path: Path, columns: Sequence[str], empty: int | None) -> RequestTrace:
    """Read a CSV whose ``columns`` are the arrival time, the input tokens and the output tokens."""
    time_column, input_column, output_column = columns
    timestamps_us: list[int] = []
    inputs: list[int] = []
    outputs: list[int] = []
    first_timestamp = ""

    for row, cells, index in csv_rows(path, columns):
        text = cells[index[time_column]].strip()
        stamp_us = parse_timestamp_us(path, row, time_column, text)
        check_order(path, row, time_column, stamp_us, timestamps_us[-1] if timestamps_us else None)
        if timestamps_us:
            check_span(path, row, time_column, (stamp_us - timestamps_us[0]) / 1e6)
        else:
            first_timestamp = text
        timestamps_us.append(stamp_us)
        inputs.append(parse_count(path, row, input_column, cells[index[input_column]], empty))
        outputs.append(parse_count(path, row, output_column, cells[index[output_column]], empty))

    stamps = np.asarray(timestamps_us, dtype=np.int64)
    return RequestTrace(
        name=path.stem,
        source=str(path),
        arrival_s=(stamps - stamps[0]) / 1e6,
        input_tokens=np.asarray(inputs, dtype=np.int64),
        output_tokens=np.asarray(outputs, dtype=np.int64),
        start_time=first_timestamp,
    )


def read_azure_llm(path: str | PathLike[str]) -> RequestTrace:
    """Read an Azure LLM inference trace (2023) as a ``RequestTrace``.

    The CSV has the columns ``TIMESTAMP`` (``YYYY-MM-DD HH:MM:SS.fffffff``, kept
    to the microsecond), ``ContextTokens`` (prompt tokens) and
    ``GeneratedTokens`` (output tokens). Rows must be sorted by time, and every
    token cell must contain a whole number >= 0.
    """
    return _read_request_csv(Path(path), AZURE_COLUMNS, empty=None)


def read_alibaba_genai_requests(path: str | PathLike[str]) -> RequestTrace:
    """Read the request trace of the Alibaba GenAI (diffusion) serving trace, 2026 release.

    This is ``lora_request_trace.csv``. ``gmt_create`` gives the arrival to the
    second and rows must be sorted by it, as in the published file. Input
    tokens are ``prompt_length`` and output tokens are ``num_images_per_prompt``
    (one per generated image). An empty cell counts as 0. In the published file
    25 requests that stayed PENDING have empty cells. Every row counts as an
    arrival, whatever its ``predict_status``.
    """
    # NOTE: prompt_length counts characters, not tokens. It is used as the
    # prompt token count because the trace has no tokenizer output.
    return _read_request_csv(Path(path), ALIBABA_GENAI_COLUMNS, empty=0)


def read_mooncake(path: str | PathLike[str]) -> RequestTrace:
    """Read a Mooncake (Kimi) JSON-lines trace as a ``RequestTrace``.

    Each line is an object with ``timestamp`` (milliseconds from the trace
    start), ``input_length`` and ``output_length`` (tokens). Other fields, such
    as ``hash_ids``, are ignored. Lines must be sorted by ``timestamp``.
    """
    path = Path(path)
    timestamps_ms: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []

    with path.open(encoding="utf-8") as handle:
        try:
            for row, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                stamp, input_length, output_length = _read_mooncake_line(path, row, line)
                if timestamps_ms and stamp < timestamps_ms[-1]:
                    raise TraceFormatError(
                        path, row, "timestamp",
                        f"the time goes back by {timestamps_ms[-1] - stamp:g} ms relative to the line before.",
                        "Sort the lines by timestamp before reading the file.",
                    )
                if timestamps_ms:
                    check_span(path, row, "timestamp", (stamp - timestamps_ms[0]) / 1000.0)
                timestamps_ms.append(stamp)
                inputs.append(input_length)
                outputs.append(output_length)
        except UnicodeDecodeError as error:
            raise undecodable_file_error(path, error) from None

    if not timestamps_ms:
        raise TraceFormatError(
            path, 1, "timestamp", "the file has no JSON lines.", "Use a trace with at least one request."
        )
    stamps = np.asarray(timestamps_ms, dtype=np.float64)
    return RequestTrace(
        name=path.stem,
        source=str(path),
        arrival_s=(stamps - stamps[0]) / 1000.0,
        input_tokens=np.asarray(inputs, dtype=np.int64),
        output_tokens=np.asarray(outputs, dtype=np.int64),
    )


def _read_mooncake_line(path: Path, row: int, line: str) -> tuple[float, int, int]:
    """Return the timestamp in ms, the input tokens and the output tokens of one Mooncake line."""
    try:
        record = json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as error:
        raise TraceFormatError(
            path, row, f"character {error.pos + 1}", f"the line is not valid JSON ({error.msg}).",
            "Write one JSON object per line.",
        ) from None
    except ValueError:
        # Besides JSONDecodeError, json.loads raises ValueError only for an
        # integer of more than sys.get_int_max_str_digits() (default 4300) digits.
        raise TraceFormatError(
            path, row, MOONCAKE_FIELDS[0], "the line has an integer too long to parse.",
            "Write numbers with fewer digits.",
        ) from None
    except RecursionError:
        raise TraceFormatError(
            path, row, MOONCAKE_FIELDS[0], "the line nests JSON arrays or objects too deeply to parse.",
            "Write one flat JSON object per line.",
        ) from None
    if not isinstance(record, dict):
        raise TraceFormatError(
            path, row, MOONCAKE_FIELDS[0], f"the line is a JSON {type(record).__name__}, not an object.",
            "Write one JSON object per line.",
        )
    values = []
    for field in MOONCAKE_FIELDS:
        if field not in record:
            raise TraceFormatError(
                path, row, field, f"the field is missing. The fields found are {sorted(record)[:10]}.",
                f"Give every line the fields {', '.join(MOONCAKE_FIELDS)}.",
            )
        values.append(record[field])

    stamp = parse_nonnegative(path, row, "timestamp", values[0])
    return (
        stamp,
        parse_count(path, row, "input_length", values[1]),
        parse_count(path, row, "output_length", values[2]),
    )


def servegen_clients(folder: str | PathLike[str]) -> dict[int, Path]:
    """Return the ServeGen rate files of ``folder`` by client id, from ``chunk-<id>-trace.csv`` names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"ServeGen folder {folder} not found. Give a folder of chunk-<id>-trace.csv files.")
    files = {}
    for candidate in folder.iterdir():
        match = _SERVEGEN_FILE.fullmatch(candidate.name)
        if match:
            files[int(match.group(1))] = candidate
    if not files:
        raise FileNotFoundError(f"{folder} contains no chunk-<id>-trace.csv files. Give a ServeGen rate folder.")
    return dict(sorted(files.items()))


def _read_servegen_file(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the row numbers, window starts and mean rates of one ServeGen client file."""
    rows: list[int] = []
    start_cells: list[str] = []
    rate_cells: list[str] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            for cells in reader:
                if len(cells) < 2:
                    if not "".join(cells).strip():
                        continue
                    raise TraceFormatError(
                        path, reader.line_num, _SERVEGEN_RATE_COLUMN,
                        f"the row has {len(cells)} cell(s), so the column is missing.",
                        "Give every row at least the window start and the mean rate.",
                    )
                rows.append(reader.line_num)
                start_cells.append(cells[0])
                rate_cells.append(cells[1])
        except UnicodeDecodeError as error:
            raise undecodable_file_error(path, error) from None
        except csv.Error as error:
            raise TraceFormatError(
                path, reader.line_num, CSV_SYNTAX_COLUMN, f"the row is not valid CSV ({error}).",
                "Check the quoting of this row.",
            ) from None

    if len(rows) < 2:
        raise TraceFormatError(
            path, len(rows) + 1, _SERVEGEN_START_COLUMN,
            f"the file has {len(rows)} window(s), but two are needed to find the window length.",
            "Use a rate file with at least two windows.",
        )

    # Converting whole columns with numpy is faster than a check per cell. Only
    # when that fails or finds a bad value does the per-cell parse run, to name
    # the first bad cell.
    try:
        starts = np.asarray(start_cells, dtype=np.float64)
        rates = np.asarray(rate_cells, dtype=np.float64)
        valid = all(np.all(np.isfinite(values) & (values >= 0)) for values in (starts, rates))
    except ValueError:
        valid = False
    if not valid:
        starts = np.asarray([
            parse_nonnegative(path, row, _SERVEGEN_START_COLUMN, cell) for row, cell in zip(rows, start_cells)
        ])
        rates = np.asarray([
            parse_nonnegative(path, row, _SERVEGEN_RATE_COLUMN, cell) for row, cell in zip(rows, rate_cells)
        ])

    too_fast = np.flatnonzero(rates > MAX_RATE_PER_S)
    if too_fast.size:
        index = int(too_fast[0])
        raise TraceFormatError(
            path, rows[index], _SERVEGEN_RATE_COLUMN,
            f"the rate {rates[index]:g} requests/s is above {MAX_RATE_PER_S:g}, the most a trace may have.",
            "Check the cell: a rate this high is a unit or parsing mistake.",
        )
    offsets = starts - starts[0]
    too_late = np.flatnonzero(offsets > MAX_TRACE_SPAN_S)
    if too_late.size:
        index = int(too_late[0])
        check_span(path, rows[index], _SERVEGEN_START_COLUMN, float(offsets[index]))
    return np.asarray(rows), starts, rates


def read_servegen(
    folder: str | PathLike[str],
    clients: Sequence[int] | None = None,
    mean_input_tokens: float = SERVEGEN_MEAN_INPUT_TOKENS,
    mean_output_tokens: float = SERVEGEN_MEAN_OUTPUT_TOKENS,
) -> RateTrace:
    """Read ServeGen per-client rate files and sum the rate over ``clients`` per window.

    Each ``chunk-<id>-trace.csv`` has no header. Column 1 is the window start in
    seconds and column 2 the client's mean request rate in requests per second.
    The other columns describe the inter-arrival distribution and are ignored.
    ``clients=None`` reads every client in the folder. Windows must be evenly
    spaced and the same in every file.
    """
    available = servegen_clients(folder)
    chosen = list(available) if clients is None else [int(client) for client in clients]
    unknown = [client for client in chosen if client not in available]
    if unknown or not chosen:
        raise ValueError(
            f"ServeGen clients {unknown or chosen} not found in {folder}. It contains {len(available)} clients "
            f"with ids {min(available)}..{max(available)}. Pick ids from that range or pass clients=None."
        )
    repeated = sorted({client for client in chosen if chosen.count(client) > 1})
    if repeated:
        raise ValueError(f"ServeGen clients {repeated} are listed more than once. List each client once.")

    reference_path = available[chosen[0]]
    reference_rows, reference_starts, total = _read_servegen_file(reference_path)
    steps = np.diff(reference_starts)
    window_s = float(steps[0])
    uneven = np.flatnonzero(~np.isclose(steps, window_s) | (steps <= 0))
    if uneven.size:
        index = int(uneven[0]) + 1
        raise TraceFormatError(
            reference_path, int(reference_rows[index]), _SERVEGEN_START_COLUMN,
            f"the window start {reference_starts[index]:g} does not follow the step of {window_s:g} s.",
            "Use a file with evenly spaced, increasing window starts.",
        )

    for client in chosen[1:]:
        rows, starts, rates = _read_servegen_file(available[client])
        shared = min(len(starts), len(reference_starts))
        differing = np.flatnonzero(~np.isclose(starts[:shared], reference_starts[:shared]))
        if differing.size or len(starts) != len(reference_starts):
            index = int(differing[0]) if differing.size else shared
            row = int(rows[index]) if index < len(rows) else int(rows[-1]) + 1
            raise TraceFormatError(
                available[client], row, _SERVEGEN_START_COLUMN,
                f"the windows differ from those of {reference_path.name} from window {index + 1} on "
                f"({len(starts)} vs {len(reference_starts)} windows).",
                "Read together only clients whose files cover the same windows.",
            )
        total = total + rates

    return RateTrace(
        name=Path(folder).name,
        source=str(folder),
        window_s=window_s,
        rate_per_s=total,
        mean_input_tokens=mean_input_tokens,
        mean_output_tokens=mean_output_tokens,
    )


def to_series(trace: RequestTrace, tick_s: float = 15.0) -> ArrivalSeries:
    """Count requests and sum their tokens per tick of ``tick_s`` seconds.

    Tick ``k`` contains the requests with ``k * tick_s <= arrival_s < (k + 1) * tick_s``.
    The series ends with the tick of the last request, so that tick may cover
    less traffic time than the others.
    """
    if not (math.isfinite(tick_s) and tick_s > 0):
        raise ValueError(f"tick_s is {tick_s}. It must be a finite number of seconds > 0.")
    _check_series_length(trace.name, trace.duration_s, tick_s)
    ticks = np.floor(trace.arrival_s / tick_s).astype(np.int64)
    n_ticks = int(ticks[-1]) + 1
    return ArrivalSeries(
        name=trace.name,
        tick_s=tick_s,
        requests=np.bincount(ticks, minlength=n_ticks).astype(np.float64),
        input_tokens=np.bincount(ticks, weights=trace.input_tokens.astype(np.float64), minlength=n_ticks),
        output_tokens=np.bincount(ticks, weights=trace.output_tokens.astype(np.float64), minlength=n_ticks),
        source=trace.source,
    )


def _check_series_length(name: str, duration_s: float, tick_s: float) -> None:
    """Raise ValueError when binning ``duration_s`` seconds into ``tick_s`` ticks exceeds ``MAX_SERIES_TICKS``."""
    ticks = duration_s / tick_s
    if ticks >= MAX_SERIES_TICKS:
        raise ValueError(
            f"trace {name!r} spans {duration_s:g} s, which is {ticks:.3g} ticks of {tick_s:g} s, but a series "
            f"may have at most {MAX_SERIES_TICKS:,} ticks. Use a larger tick_s or a shorter trace."
        )


def rate_to_series(trace: RateTrace, tick_s: float = 15.0, seed: int | None = None) -> ArrivalSeries:
    """Convert a rate trace to requests per tick of ``tick_s`` seconds.

    With ``seed=None`` each tick gets its expected count, the integral of the
    window rates over the tick, which may be fractional. With a seed the
    counts are Poisson samples with those means. Token totals are the count
    times the trace's mean tokens. When ``tick_s`` does not divide the trace
    duration, the last tick covers only the remaining time.
    """
    if not (math.isfinite(tick_s) and tick_s > 0):
        raise ValueError(f"tick_s is {tick_s}. It must be a finite number of seconds > 0.")
    _check_series_length(trace.name, trace.duration_s, tick_s)
    window_edges = np.arange(len(trace) + 1) * trace.window_s
    cumulative = np.concatenate([[0.0], np.cumsum(trace.rate_per_s * trace.window_s)])

    n_ticks = math.ceil(trace.duration_s / tick_s - 1e-9)
    tick_edges = np.minimum(np.arange(n_ticks + 1) * tick_s, trace.duration_s)
    # The cumulative count is piecewise linear because the rate is constant in
    # each window, so linear interpolation at the tick edges is exact.
    expected = np.maximum(np.diff(np.interp(tick_edges, window_edges, cumulative)), 0.0)

    if seed is None:
        requests = expected
    else:
        requests = np.random.default_rng(seed).poisson(expected).astype(np.float64)
    return ArrivalSeries(
        name=trace.name,
        tick_s=tick_s,
        requests=requests,
        input_tokens=requests * trace.mean_input_tokens,
        output_tokens=requests * trace.mean_output_tokens,
        source=trace.source,
    )


def time_scale(trace: TraceT, factor: float) -> TraceT:
    """Compress the time axis of a trace by ``factor``.

    ``factor`` 2 replays the same requests in half the time, so the arrival rate
    doubles. A ``RequestTrace`` gets its arrival times divided by ``factor``. A
    ``RateTrace`` gets shorter windows and rates multiplied by ``factor``. An
    ``ArrivalSeries`` is rejected because its ticks are already fixed, so scale
    the trace before binning it.
    """
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
        raise ValueError(f"time_scale factor is {factor!r}. It must be a finite number > 0.")
    if isinstance(trace, RequestTrace):
        return replace(trace, arrival_s=trace.arrival_s / factor)
    if isinstance(trace, RateTrace):
        return replace(trace, window_s=trace.window_s / factor, rate_per_s=trace.rate_per_s * factor)
    raise TypeError(
        f"time_scale takes a RequestTrace or RateTrace, got {type(trace).__name__}. "
        "Apply it before to_series or rate_to_series."
    )
