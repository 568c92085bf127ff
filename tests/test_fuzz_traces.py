"""Property-based fuzzing of the trace readers and the trace loader.

On generated files, valid or with mangled rows, a reader either returns a
valid trace or raises ``TraceFormatError`` (``TraceSpecError`` for a bad
spec), and nothing else. A returned request trace bins into a series whose
counts sum to its number of requests. ``scripts/fuzz.py`` runs the same
``PROPERTIES`` with many more examples for a set number of minutes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.traces import (
    RequestTrace,
    TraceFormatError,
    TraceSpecError,
    load_trace,
    rate_to_series,
    read_azure_llm,
    read_mooncake,
    read_nasa_http,
    read_servegen,
    to_series,
)
from envs.traces.parsing import MAX_TOKENS_PER_REQUEST, MAX_TRACE_SPAN_S
from envs.traces.readers import MAX_RATE_PER_S

SUITE_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
START = datetime(2023, 11, 16, 18, 0, 0)

# Cell texts that earlier readers mishandled or that sit on a boundary.
AWKWARD_CELLS = [
    "", " ", "nan", "NaN", "-1", "-0", "inf", "+Inf", "1e18", "1e400", "12.5", "63.0", "1_000", "0x10", "１２",
    "\x00", "9" * 30, "9" * 5000, "9999-12-31 23:59:59.0", "0001-01-01 00:00:00", "2023-11-16T18:00:00+05:00",
    "2023-11-16 18:00:00." + "5" * 5000, "2023-02-30 00:00:00", "2023-11-16 24:00:00", "true", "null", '"',
]
cell_text = st.one_of(
    st.sampled_from(AWKWARD_CELLS),
    st.text(max_size=12),
    st.integers().map(str),
    st.floats().map(repr),
)


def check_request_trace(trace: RequestTrace, rows: int) -> None:
    """Assert the invariants of a trace a reader returned from ``rows`` request rows."""
    assert len(trace) == rows
    assert trace.arrival_s[0] == 0.0
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert trace.duration_s <= MAX_TRACE_SPAN_S
    for tokens in (trace.input_tokens, trace.output_tokens):
        assert tokens.min() >= 0
        assert tokens.max() <= MAX_TOKENS_PER_REQUEST

    series = to_series(trace, tick_s=15.0)
    assert series.requests.sum() == rows
    assert math.isclose(series.input_tokens.sum(), float(trace.input_tokens.sum()), rel_tol=1e-9)
    assert math.isclose(series.output_tokens.sum(), float(trace.output_tokens.sum()), rel_tol=1e-9)


def in_temp_dir(write: Callable[[Path], Path], read: Callable[[Path], Any]) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        return read(write(Path(folder)))


# Azure LLM CSV


@st.composite
def azure_files(draw: st.DrawFn) -> tuple[str, int]:
    """Return the text of an Azure CSV, mostly valid, and its number of non-blank data rows."""
    header = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
    if draw(st.booleans()):
        header = draw(st.permutations(header + draw(st.lists(st.sampled_from(["Extra", "TIMESTAMP", ""]),
                                                              max_size=2))))
    if draw(st.integers(0, 9)) == 0:
        header = draw(st.lists(cell_text, max_size=4))
    offsets = sorted(draw(st.lists(st.integers(0, 10**13), min_size=0, max_size=12)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    rows = 0
    for offset_us in offsets:
        stamp = (START + timedelta(microseconds=offset_us)).strftime("%Y-%m-%d %H:%M:%S.%f")
        values = {"TIMESTAMP": stamp + draw(st.sampled_from(["", "0", "9"])),
                  "ContextTokens": str(draw(st.integers(0, 10**5))),
                  "GeneratedTokens": str(draw(st.integers(0, 10**4)))}
        cells = [values.get(name, draw(cell_text)) for name in header]
        if cells and draw(st.integers(0, 5)) == 0:
            cells[draw(st.integers(0, len(cells) - 1))] = draw(cell_text)
        if draw(st.integers(0, 15)) == 0:
            cells = cells[: draw(st.integers(0, len(cells)))]
        writer.writerow(cells)
        rows += any(cell.strip() for cell in cells)
    return out.getvalue(), rows


def check_azure(case: tuple[str, int]) -> None:
    text, rows = case
    try:
        trace = in_temp_dir(lambda folder: _write(folder / "trace.csv", text), read_azure_llm)
    except TraceFormatError:
        return
    check_request_trace(trace, rows)


# Mooncake JSON lines

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@st.composite
def mooncake_files(draw: st.DrawFn) -> tuple[str, int]:
    """Return the text of a Mooncake JSON-lines file, mostly valid, and its number of non-blank lines."""
    stamps = sorted(draw(st.lists(st.integers(0, 10**10) | st.floats(0, 1e10), max_size=12)))
    lines = []
    for stamp in stamps:
        record: dict[str, Any] = {"timestamp": stamp, "input_length": draw(st.integers(0, 10**5)),
                                  "output_length": draw(st.integers(0, 10**4)), "hash_ids": [1, 2]}
        if draw(st.integers(0, 5)) == 0:
            record[draw(st.sampled_from(sorted(record)))] = draw(json_values)
        if draw(st.integers(0, 15)) == 0:
            record.pop(draw(st.sampled_from(sorted(record))))
        line = json.dumps(record)
        if draw(st.integers(0, 15)) == 0:
            line = draw(st.one_of(st.text(max_size=20), json_values.map(json.dumps)))
        lines.append(line)
    text = "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n"]))
    return text, sum(1 for line in text.splitlines() if line.strip())


def check_mooncake(case: tuple[str, int]) -> None:
    text, rows = case
    try:
        trace = in_temp_dir(lambda folder: _write(folder / "trace.jsonl", text), read_mooncake)
    except TraceFormatError:
        return
    check_request_trace(trace, rows)


# ServeGen rate folders


@st.composite
def servegen_folders(draw: st.DrawFn) -> dict[str, str]:
    """Return the rate files of a ServeGen folder by file name, mostly valid."""
    windows = draw(st.integers(0, 8))
    window_s = draw(st.sampled_from([1.0, 60.0, 600.0]) | st.floats(1e-3, 1e5))
    files = {}
    for client in draw(st.lists(st.integers(0, 20), min_size=1, max_size=3, unique=True)):
        count = windows if draw(st.integers(0, 5)) else draw(st.integers(0, 8))
        lines = []
        for index in range(count):
            cells = [repr(index * window_s), repr(draw(st.floats(0, 1e4))), "1.0", "Gamma", "0.5", "1.0"]
            if draw(st.integers(0, 6)) == 0:
                cells[draw(st.integers(0, 1))] = draw(cell_text)
            lines.append(",".join(cells[: draw(st.sampled_from([6, 6, 6, 2, 1]))]))
        files[f"chunk-{client}-trace.csv"] = "\n".join(lines) + "\n"
    return files


def check_servegen(files: dict[str, str]) -> None:
    def write(folder: Path) -> Path:
        for name, text in files.items():
            _write(folder / name, text)
        return folder

    try:
        trace = in_temp_dir(write, read_servegen)
    except TraceFormatError:
        return
    assert np.all(np.isfinite(trace.rate_per_s))
    assert trace.rate_per_s.min() >= 0
    series = rate_to_series(trace, tick_s=15.0)
    expected = float(np.sum(trace.rate_per_s * trace.window_s))
    assert math.isclose(series.requests.sum(), expected, rel_tol=1e-6, abs_tol=1e-6)


# NASA per-second counts

NASA_SEPARATORS = [" ", " ", " ", "  ", "\n", "\t", "\r\n", "\x0b", "\x0c"]


@st.composite
def nasa_files(draw: st.DrawFn) -> tuple[bytes, list[int] | None]:
    """Return a NASA count file, as text or as a bzip2 tar and mostly valid, and its counts if it must parse.

    The counts are None when a token was mangled, a count is above the limit,
    or the archive was cut or has no ``workload.txt``: the reader may then
    raise ``TraceFormatError``.
    """
    counts = draw(st.lists(st.integers(0, 30), max_size=40))
    if counts and draw(st.integers(0, 5)) == 0:
        counts[draw(st.integers(0, len(counts) - 1))] = draw(st.sampled_from([10**9, 10**9 + 1, 2**63, 10**30]))
    tokens = [str(count) for count in counts]
    expected: list[int] | None = counts if all(count <= MAX_RATE_PER_S for count in counts) else None
    if tokens and draw(st.integers(0, 5)) == 0:
        tokens[draw(st.integers(0, len(tokens) - 1))] = draw(cell_text)
        expected = None
    text = draw(st.sampled_from(["", " ", "\n"]))
    for token in tokens:
        text += token + draw(st.sampled_from(NASA_SEPARATORS))
    content = text.encode("utf-8", errors="surrogatepass")
    if not draw(st.booleans()):
        return content, expected

    member = draw(st.sampled_from(["workload.txt", "workload.txt", "data/workload.txt", "other.txt"]))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    archive_bytes = buffer.getvalue()
    if member == "other.txt":
        expected = None
    if draw(st.integers(0, 5)) == 0:
        archive_bytes = archive_bytes[: draw(st.integers(0, len(archive_bytes)))]
        expected = None
    return archive_bytes, expected


def _read_nasa_bytes(content: bytes) -> Any:
    def write(folder: Path) -> Path:
        path = folder / "workload.tbz2"
        path.write_bytes(content)
        return path

    return in_temp_dir(write, read_nasa_http)


def check_nasa(case: tuple[bytes, list[int] | None]) -> None:
    content, expected = case
    try:
        trace = _read_nasa_bytes(content)
    except TraceFormatError:
        assert not expected, f"valid counts {expected} were rejected"
        return
    if expected is not None:
        assert trace.rate_per_s.tolist() == expected
    assert len(trace) >= 1
    assert trace.window_s == 1.0
    assert np.all(trace.rate_per_s == np.floor(trace.rate_per_s))
    assert trace.rate_per_s.min() >= 0
    assert trace.rate_per_s.max() <= MAX_RATE_PER_S


nasa_specs = st.fixed_dictionaries(
    {},
    optional={
        "tick_s": st.floats(1e-3, 1e3) | st.sampled_from([1, 3, 15]),
        "time_scale": st.floats(1e-3, 1e3) | st.sampled_from([1, 2, 0]),
        "rate_scale": st.floats(1e-300, 1e300),
        # The drawn files cover at most 40 s, which is 4.6e-4 days.
        "start_day": st.floats(0, 6e-4) | st.sampled_from([-1, math.nan, "1"]) | st.none(),
        "days": st.floats(0, 6e-4) | st.sampled_from([0, 1e-13, math.inf]) | st.none(),
        "window_start_s": st.floats(0, 50) | st.none(),
        "window_end_s": st.floats(0, 50) | st.none(),
        "split": st.sampled_from(["all", "train", "held_out"]),
        "train_fraction": st.floats(0, 1),
        "mean_input_tokens": st.floats(0, 1e6) | st.none(),
    },
)


def check_nasa_loader(case: tuple[tuple[bytes, list[int] | None], dict[str, Any]]) -> None:
    (content, expected), extra = case

    def write(folder: Path) -> Path:
        path = folder / "workload.tbz2"
        path.write_bytes(content)
        return path

    try:
        series = in_temp_dir(write, lambda path: load_trace({"kind": "nasa", "path": str(path), **extra}))
    except (TraceFormatError, TraceSpecError):
        return
    assert len(series) >= 1
    assert series.start_s >= 0
    assert np.all(np.isfinite(series.requests))
    if expected is not None:
        total = sum(expected) * extra.get("rate_scale", 1.0)
        assert series.requests.sum() <= total * (1 + 1e-9) + 1e-9
        whole = all(extra.get(key) is None for key in ("start_day", "days", "window_start_s", "window_end_s"))
        if whole and extra.get("split", "all") == "all":
            assert math.isclose(series.requests.sum(), total, rel_tol=1e-9, abs_tol=1e-9)


# Arbitrary bytes and loader specs


def check_bytes(content: bytes) -> None:
    try:
        trace = _read_nasa_bytes(content)
    except TraceFormatError:
        pass
    else:
        assert len(trace) >= 1
        assert trace.rate_per_s.max() <= MAX_RATE_PER_S
    for name, reader in (("trace.csv", read_azure_llm), ("trace.jsonl", read_mooncake)):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            path.write_bytes(content)
            try:
                trace = reader(path)
            except TraceFormatError:
                continue
            assert len(trace) >= 1
            assert to_series(trace).requests.sum() == len(trace)


loader_specs = st.fixed_dictionaries(
    {},
    optional={
        "tick_s": st.floats(1e-9, 1e9) | st.sampled_from([0, -1, math.nan, math.inf]),
        "time_scale": st.floats(1e-9, 1e9) | st.sampled_from([0, math.inf]),
        "rate_scale": st.floats(1e-300, 1e300),
        "window_start_s": st.floats(-10, 1e5) | st.none(),
        "window_end_s": st.floats(-10, 1e5) | st.none(),
        "split": st.sampled_from(["all", "train", "held_out", "test"]),
        "train_fraction": st.floats(0, 2),
        "seed": st.integers(0, 10) | st.booleans(),
    },
)


def check_loader(case: tuple[tuple[str, int], dict[str, Any]]) -> None:
    (text, rows), extra = case

    def load(path: Path) -> Any:
        return load_trace({"kind": "azure_llm", "path": str(path), **extra})

    try:
        series = in_temp_dir(lambda folder: _write(folder / "trace.csv", text), load)
    except (TraceFormatError, TraceSpecError):
        return
    assert len(series) >= 1
    assert np.all(np.isfinite(series.requests))
    if extra.get("split", "all") == "all" and "window_start_s" not in extra and "window_end_s" not in extra:
        assert math.isclose(series.requests.sum(), rows * extra.get("rate_scale", 1.0), rel_tol=1e-9)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# Each property: the strategy of its input and the check that must pass on every input.
PROPERTIES: dict[str, tuple[st.SearchStrategy, Callable[[Any], None]]] = {
    "azure": (azure_files(), check_azure),
    "mooncake": (mooncake_files(), check_mooncake),
    "servegen": (servegen_folders(), check_servegen),
    "nasa": (nasa_files(), check_nasa),
    "nasa_loader": (st.tuples(nasa_files(), nasa_specs), check_nasa_loader),
    "bytes": (st.binary(max_size=300), check_bytes),
    "loader": (st.tuples(azure_files(), loader_specs), check_loader),
}


@SUITE_SETTINGS
@given(PROPERTIES["azure"][0])
def test_azure_reader_fuzz(case: tuple[str, int]) -> None:
    check_azure(case)


@SUITE_SETTINGS
@given(PROPERTIES["mooncake"][0])
def test_mooncake_reader_fuzz(case: tuple[str, int]) -> None:
    check_mooncake(case)


@SUITE_SETTINGS
@given(PROPERTIES["servegen"][0])
def test_servegen_reader_fuzz(files: dict[str, str]) -> None:
    check_servegen(files)


@SUITE_SETTINGS
@given(PROPERTIES["nasa"][0])
def test_nasa_reader_fuzz(case: tuple[bytes, list[int] | None]) -> None:
    check_nasa(case)


@SUITE_SETTINGS
@given(PROPERTIES["nasa_loader"][0])
def test_nasa_load_trace_fuzz(case: tuple[tuple[bytes, list[int] | None], dict[str, Any]]) -> None:
    check_nasa_loader(case)


@SUITE_SETTINGS
@given(PROPERTIES["bytes"][0])
def test_readers_on_arbitrary_bytes(content: bytes) -> None:
    check_bytes(content)


@SUITE_SETTINGS
@given(PROPERTIES["loader"][0])
def test_load_trace_spec_fuzz(case: tuple[tuple[str, int], dict[str, Any]]) -> None:
    check_loader(case)
