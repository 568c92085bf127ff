"""Tests of the trace readers, the record types, the loader and the trace configs.

Expected numbers come from hand-written files, worked out by hand in the
comments, or from the row counts and times published with each public trace.
Tests of the shared traces resolve them as the loader does, so they fail with
the loader's message when the shared folder is missing.
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from envs.traces import (
    EMBEDDED_DATA,
    REPO_ROOT,
    SHARED_TRACES,
    TRACES_ENV_VAR,
    ArrivalSeries,
    RateTrace,
    RequestTrace,
    TraceFormatError,
    TraceSpecError,
    load_trace,
    rate_to_series,
    read_alibaba_genai_requests,
    read_azure_llm,
    read_mooncake,
    read_nasa_http,
    read_servegen,
    resolve_trace_path,
    shared_traces_dir,
    time_scale,
    to_series,
)

EMBEDDED_CODE = "embedded:azure_llm_2023/AzureLLMInferenceTrace_code.csv"
TRACE_CONFIGS = sorted((REPO_ROOT / "conf" / "trace").glob("*.yaml"))
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
GENAI_HEADER = (
    "gmt_create,predict_type,predict_status,exec_time_seconds,groupId,prompt_length,"
    "negative_prompt_length,num_images_per_prompt,num_inference_steps,checkpoint_model_version_id,num_lora\n"
)

# Arrivals in seconds: 0, 5.5, 14.999999, 15.0, 30.0 (29.9999996 rounds up to the
# microsecond), 44.000001 (44.0000005 rounds up) and 61.25.
# Ticks of 15 s: [0, 15) contains rows 1-3, [15, 30) row 4, [30, 45) rows 5-6,
# [45, 60) nothing and [60, 75) row 7.
HAND_CSV = AZURE_HEADER + (
    "2023-11-16 18:00:00.0000000,100,10\n"
    "2023-11-16 18:00:05.5000000,200,20\n"
    "2023-11-16 18:00:14.9999990,300,30\n"
    "2023-11-16 18:00:15.0000000,400,40\n"
    "2023-11-16 18:00:29.9999996,500,50\n"
    "2023-11-16 18:00:44.0000005,600,60\n"
    "2023-11-16 18:01:01.2500000,700,70"
)


def write_text(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_located(error: TraceFormatError, path: Path, row: int, column: str) -> None:
    assert error.path == str(path)
    assert error.row == row
    assert error.column == column
    assert str(path) in str(error)
    assert f"row {row}," in str(error)
    assert f"column {column}:" in str(error)


def write_tbz2(folder: Path, name: str, members: dict[str, bytes]) -> Path:
    """Write a bzip2-compressed tar containing ``members`` (file name to content) and return its path."""
    path = folder / name
    with tarfile.open(path, mode="w:bz2") as archive:
        for member, content in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path


def make_series(requests: list[float], tick_s: float = 15.0, start_s: float = 0.0) -> ArrivalSeries:
    values = np.asarray(requests, dtype=float)
    return ArrivalSeries("hand", tick_s, values, values * 100, values * 10, start_s=start_s)


# Azure LLM reader


def test_embedded_code_trace_rows_and_span() -> None:
    trace = read_azure_llm(resolve_trace_path(EMBEDDED_CODE))

    assert len(trace) == 8819
    assert trace.start_time == "2023-11-16 18:17:03.9799600"
    # 19:14:19.9280160 - 18:17:03.9799600 = 57 min 15.948056 s.
    assert trace.duration_s == pytest.approx(3435.948056, abs=1e-6)
    assert trace.duration_s / 60 == pytest.approx(57.3, abs=0.05)
    assert (trace.input_tokens[0], trace.output_tokens[0]) == (4808, 10)
    assert (trace.input_tokens[-1], trace.output_tokens[-1]) == (549, 173)


def test_embedded_code_trace_equals_shared_copy() -> None:
    embedded = resolve_trace_path(EMBEDDED_CODE).read_bytes()
    shared = resolve_trace_path("shared:azure_llm_2023/AzureLLMInferenceTrace_code.csv").read_bytes()

    assert embedded == shared
    assert (EMBEDDED_DATA / "azure_llm_2023" / "LICENSE_CC-BY-4.0.txt").is_file()
    assert "Splitwise" in (EMBEDDED_DATA / "azure_llm_2023" / "ATTRIBUTION.md").read_text(encoding="utf-8")


def test_conv_trace_reads_quickly() -> None:
    path = resolve_trace_path("shared:azure_llm_2023/AzureLLMInferenceTrace_conv.csv")

    started = time.perf_counter()
    trace = read_azure_llm(path)
    elapsed = time.perf_counter() - started

    assert len(trace) == 19366
    assert trace.start_time == "2023-11-16 18:15:46.6805900"
    assert elapsed < 1.0


def test_hand_csv_arrivals_and_ticks(tmp_path: Path) -> None:
    trace = read_azure_llm(write_text(tmp_path, "hand.csv", HAND_CSV))

    np.testing.assert_allclose(trace.arrival_s, [0, 5.5, 14.999999, 15.0, 30.0, 44.000001, 61.25], atol=1e-9)
    assert trace.input_tokens.dtype == np.int64
    assert trace.name == "hand"

    series = to_series(trace, tick_s=15.0)
    np.testing.assert_array_equal(series.requests, [3, 1, 2, 0, 1])
    np.testing.assert_array_equal(series.input_tokens, [600, 400, 1100, 0, 700])
    np.testing.assert_array_equal(series.output_tokens, [60, 40, 110, 0, 70])
    assert series.duration_s == 75.0


@pytest.mark.parametrize(
    ("case", "text", "row", "column"),
    [
        ("missing column", "TIMESTAMP,ContextTokens\n2023-11-16 18:00:00.0,1\n", 1, "GeneratedTokens"),
        ("bad timestamp", AZURE_HEADER + "2023-11-16 18:00:00.0,1,1\n2023-11-16 18:xx:00.0,1,1\n", 3, "TIMESTAMP"),
        ("bad fraction", AZURE_HEADER + "2023-11-16 18:00:00.12a,1,1\n", 2, "TIMESTAMP"),
        ("negative tokens", AZURE_HEADER + "2023-11-16 18:00:00.0,-5,1\n", 2, "ContextTokens"),
        ("NaN tokens", AZURE_HEADER + "2023-11-16 18:00:00.0,5,NaN\n", 2, "GeneratedTokens"),
        ("fractional tokens", AZURE_HEADER + "2023-11-16 18:00:00.0,5,12.5\n", 2, "GeneratedTokens"),
        ("empty cell", AZURE_HEADER + "2023-11-16 18:00:00.0,,3\n", 2, "ContextTokens"),
        ("short row", AZURE_HEADER + "2023-11-16 18:00:00.0,5\n", 2, "GeneratedTokens"),
        (
            "unsorted rows",
            AZURE_HEADER + "2023-11-16 18:00:00.0,1,1\n2023-11-16 18:00:09.0,1,1\n2023-11-16 18:00:08.5,1,1\n",
            4,
            "TIMESTAMP",
        ),
        ("empty file", "", 1, "TIMESTAMP"),
        ("header only", AZURE_HEADER, 2, "TIMESTAMP"),
    ],
)
def test_azure_malformed_file(tmp_path: Path, case: str, text: str, row: int, column: str) -> None:
    path = write_text(tmp_path, "bad.csv", text)

    with pytest.raises(TraceFormatError) as caught:
        read_azure_llm(path)

    assert_located(caught.value, path, row, column)


def test_azure_error_messages_name_cause(tmp_path: Path) -> None:
    missing = write_text(tmp_path, "missing.csv", "TIMESTAMP,Context\n2023-11-16 18:00:00.0,1\n")
    with pytest.raises(TraceFormatError, match=r"no column 'ContextTokens'.*\['TIMESTAMP', 'Context'\]"):
        read_azure_llm(missing)

    unsorted = write_text(tmp_path, "unsorted.csv", AZURE_HEADER + "2023-11-16 18:00:09.0,1,1\n"
                          "2023-11-16 18:00:08.5,1,1\n")
    with pytest.raises(TraceFormatError, match=r"goes back by 0\.5 s.*Sort the rows by TIMESTAMP"):
        read_azure_llm(unsorted)


def test_trace_format_error_is_value_error() -> None:
    error = TraceFormatError("a.csv", 3, "TIMESTAMP", "the value is bad.", "Fix it.")

    assert isinstance(error, ValueError)
    assert str(error) == "a.csv, row 3, column TIMESTAMP: the value is bad. Fix it."


# Mooncake reader


def test_mooncake_hand_file(tmp_path: Path) -> None:
    lines = [
        '{"timestamp": 0, "input_length": 100, "output_length": 5, "hash_ids": [0, 1]}',
        '{"timestamp": 1500, "input_length": 200, "output_length": 6, "hash_ids": [0]}',
        "",
        '{"timestamp": 16000, "input_length": 300, "output_length": 7, "hash_ids": []}',
    ]
    trace = read_mooncake(write_text(tmp_path, "trace.jsonl", "\n".join(lines) + "\n"))

    np.testing.assert_allclose(trace.arrival_s, [0.0, 1.5, 16.0])
    np.testing.assert_array_equal(trace.input_tokens, [100, 200, 300])
    np.testing.assert_array_equal(trace.output_tokens, [5, 6, 7])
    assert trace.start_time == ""

    series = to_series(trace, tick_s=15.0)
    np.testing.assert_array_equal(series.requests, [2, 1])
    np.testing.assert_array_equal(series.input_tokens, [300, 300])


@pytest.mark.parametrize(
    ("case", "second_line", "row", "column"),
    [
        ("invalid JSON", '{"timestamp": 5, "input_length": ', 2, "character 34"),
        ("not an object", "[1, 2, 3]", 2, "timestamp"),
        ("missing field", '{"timestamp": 5, "input_length": 3}', 2, "output_length"),
        ("negative tokens", '{"timestamp": 5, "input_length": -3, "output_length": 1}', 2, "input_length"),
        ("boolean tokens", '{"timestamp": 5, "input_length": 3, "output_length": true}', 2, "output_length"),
        ("null timestamp", '{"timestamp": null, "input_length": 3, "output_length": 1}', 2, "timestamp"),
        ("unsorted lines", '{"timestamp": 5, "input_length": 3, "output_length": 1}', 2, "timestamp"),
    ],
)
def test_mooncake_malformed_file(tmp_path: Path, case: str, second_line: str, row: int, column: str) -> None:
    first_line = '{"timestamp": 10, "input_length": 1, "output_length": 1}'
    if case != "unsorted lines":
        first_line = '{"timestamp": 0, "input_length": 1, "output_length": 1}'
    path = write_text(tmp_path, "bad.jsonl", first_line + "\n" + second_line + "\n")

    with pytest.raises(TraceFormatError) as caught:
        read_mooncake(path)

    assert_located(caught.value, path, row, column)


def test_mooncake_empty_file(tmp_path: Path) -> None:
    path = write_text(tmp_path, "empty.jsonl", "\n")

    with pytest.raises(TraceFormatError) as caught:
        read_mooncake(path)

    assert_located(caught.value, path, 1, "timestamp")


def test_mooncake_shared_trace() -> None:
    trace = read_mooncake(resolve_trace_path("shared:mooncake_fast25/conversation_trace.jsonl"))

    assert len(trace) == 12031
    assert trace.duration_s == pytest.approx(3536.999)
    assert float(trace.input_tokens.mean()) == pytest.approx(12035, abs=1)


# Alibaba GenAI reader


def test_alibaba_genai_hand_file(tmp_path: Path) -> None:
    text = GENAI_HEADER + (
        "2024-11-15 16:57:50,TXT_2_IMG,SUCCEED,32.0,G0000,63.0,26.0,1.0,30.0,M0000,0\n"
        "2024-11-15 16:57:50,TXT_2_IMG,SUCCEED,43.0,G0001,93.0,,4.0,40.0,M0001,0\n"
        "2024-11-15 16:58:20,TXT_2_IMG,PENDING,0.0,G0325,,,,,,0\n"
    )
    trace = read_alibaba_genai_requests(write_text(tmp_path, "lora.csv", text))

    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.0, 30.0])
    np.testing.assert_array_equal(trace.input_tokens, [63, 93, 0])
    np.testing.assert_array_equal(trace.output_tokens, [1, 4, 0])
    assert trace.start_time == "2024-11-15 16:57:50"


def test_alibaba_genai_rejects_unsorted_rows(tmp_path: Path) -> None:
    text = GENAI_HEADER + (
        "2024-11-15 16:57:50,TXT_2_IMG,SUCCEED,32.0,G0000,63.0,26.0,1.0,30.0,M0000,0\n"
        "2024-11-15 16:57:49,TXT_2_IMG,SUCCEED,43.0,G0001,93.0,,4.0,40.0,M0001,0\n"
    )
    path = write_text(tmp_path, "lora.csv", text)

    with pytest.raises(TraceFormatError) as caught:
        read_alibaba_genai_requests(path)

    assert_located(caught.value, path, 3, "gmt_create")


def test_alibaba_genai_shared_trace() -> None:
    trace = read_alibaba_genai_requests(resolve_trace_path("shared:alibaba_genai_2026/lora_request_trace.csv"))

    assert len(trace) == 26823
    assert trace.start_time == "2024-11-15 16:57:50"
    # 2024-12-08 17:33:57 is 23 days, 36 min and 7 s after the first request.
    assert trace.duration_s == 23 * 86400 + 36 * 60 + 7
    assert (trace.input_tokens[0], trace.output_tokens[0]) == (63, 1)


# ServeGen reader


def write_servegen(folder: Path) -> Path:
    folder.mkdir()
    write_text(folder, "chunk-0-trace.csv", "0,1.5,2.0,Gamma,0.5,1.0\n600,0,0,,0,0\n1200,0.25,1.0,Weibull,0.3,0.4\n")
    write_text(folder, "chunk-3-trace.csv", "0,0.5,1.0,Gamma,0.5,1.0\n600,2,1.0,Gamma,0.1,2.0\n1200,0,0,,0,0\n")
    write_text(folder, "README.txt", "not a rate file\n")
    return folder


def test_servegen_sums_clients(tmp_path: Path) -> None:
    folder = write_servegen(tmp_path / "model")

    both = read_servegen(folder)
    assert both.window_s == 600.0
    np.testing.assert_allclose(both.rate_per_s, [2.0, 2.0, 0.25])
    assert both.name == "model"
    assert both.duration_s == 1800.0

    only_three = read_servegen(folder, clients=[3], mean_input_tokens=10, mean_output_tokens=2)
    np.testing.assert_allclose(only_three.rate_per_s, [0.5, 2.0, 0.0])
    assert (only_three.mean_input_tokens, only_three.mean_output_tokens) == (10.0, 2.0)


def test_servegen_unknown_client(tmp_path: Path) -> None:
    folder = write_servegen(tmp_path / "model")

    with pytest.raises(ValueError, match=r"clients \[7\] not found.*2 clients with ids 0\.\.3"):
        read_servegen(folder, clients=[0, 7])
    with pytest.raises(ValueError, match=r"clients \[3\] are listed more than once"):
        read_servegen(folder, clients=[3, 0, 3])


@pytest.mark.parametrize(
    ("case", "text", "row", "column"),
    [
        ("windows differ", "0,1,1,Gamma,1,1\n600,1,1,Gamma,1,1\n1500,1,1,Gamma,1,1\n", 3, "column 1 (window start, s)"),
        ("fewer windows", "0,1,1,Gamma,1,1\n600,1,1,Gamma,1,1\n", 3, "column 1 (window start, s)"),
        ("negative rate", "0,1,1,Gamma,1,1\n600,-1,1,Gamma,1,1\n1200,1,1,,0,0\n", 2, "column 2 (mean rate, requests/s)"),
        ("NaN rate", "0,nan,1,Gamma,1,1\n600,1,1,Gamma,1,1\n1200,1,1,,0,0\n", 1, "column 2 (mean rate, requests/s)"),
        ("text start", "0,1,1,Gamma,1,1\nsix,1,1,Gamma,1,1\n1200,1,1,,0,0\n", 2, "column 1 (window start, s)"),
        ("short row", "0,1,1,Gamma,1,1\n600\n1200,1,1,,0,0\n", 2, "column 2 (mean rate, requests/s)"),
    ],
)
def test_servegen_malformed_file(tmp_path: Path, case: str, text: str, row: int, column: str) -> None:
    folder = write_servegen(tmp_path / "model")
    bad = write_text(folder, "chunk-5-trace.csv", text)

    with pytest.raises(TraceFormatError) as caught:
        read_servegen(folder, clients=[0, 5])

    assert_located(caught.value, bad, row, column)


def test_servegen_uneven_windows(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    bad = write_text(folder, "chunk-1-trace.csv", "0,1,1,,0,0\n600,1,1,,0,0\n1300,1,1,,0,0\n")

    with pytest.raises(TraceFormatError) as caught:
        read_servegen(folder)

    assert_located(caught.value, bad, 3, "column 1 (window start, s)")


def test_servegen_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="chunk-<id>-trace.csv"):
        read_servegen(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="contains no chunk-<id>-trace.csv"):
        read_servegen(tmp_path)


def test_servegen_m_large_spans_14_days() -> None:
    trace = read_servegen(resolve_trace_path("shared:servegen_bailian_2025/language_m-large"))

    assert len(trace) == 2016
    assert trace.window_s == 600.0
    assert trace.duration_s == 14 * 86400
    assert 48.0 < float(trace.rate_per_s.min()) < 49.0
    assert 582.0 < float(trace.rate_per_s.max()) < 584.0


def test_servegen_deepseek_spans_one_day() -> None:
    trace = read_servegen(resolve_trace_path("shared:servegen_bailian_2025/reason_deepseek-r1"))

    assert len(trace) == 144
    assert trace.duration_s == 86400
    assert float(trace.rate_per_s.min()) > 4.2
    assert float(trace.rate_per_s.max()) < 42.6


# NASA HTTP reader

# Nine 1-second slots over two lines, with uneven whitespace: slots 0..8 contain
# 1, 0, 2, 3, 0, 4, 5, 0, 6 requests, 21 in all.
NASA_TEXT = "1 0  2\t3 0 4\n5 0 6\n"
NASA_COUNTS = [1, 0, 2, 3, 0, 4, 5, 0, 6]


def nasa_day_counts(days: int) -> str:
    """Return a count text of ``days`` whole days in which every second of day d has d + 1 requests."""
    return " ".join(" ".join([str(day + 1)] * 86400) for day in range(days))


def test_nasa_tbz2_and_txt_agree(tmp_path: Path) -> None:
    text_path = write_text(tmp_path, "workload.txt", NASA_TEXT)
    archive_path = write_tbz2(tmp_path, "workload.tbz2", {"workload.txt": NASA_TEXT.encode()})

    from_text = read_nasa_http(text_path)
    from_archive = read_nasa_http(archive_path)

    for trace in (from_text, from_archive):
        np.testing.assert_array_equal(trace.rate_per_s, NASA_COUNTS)
        assert trace.window_s == 1.0
        assert trace.duration_s == 9.0
        assert (trace.mean_input_tokens, trace.mean_output_tokens) == (1000.0, 250.0)
        assert trace.name == "workload"
    assert from_archive.source == str(archive_path)


def test_nasa_member_in_folder_is_found(tmp_path: Path) -> None:
    path = write_tbz2(tmp_path, "nested.tbz2", {"README": b"notes", "nasa/workload.txt": b"4 5"})

    np.testing.assert_array_equal(read_nasa_http(path).rate_per_s, [4, 5])


def test_nasa_load_bins_ticks(tmp_path: Path) -> None:
    path = write_tbz2(tmp_path, "workload.tbz2", {"workload.txt": NASA_TEXT.encode()})
    base = {"kind": "nasa", "path": str(path)}

    # Ticks of 3 s: 1+0+2, 3+0+4, 5+0+6.
    threes = load_trace({**base, "tick_s": 3})
    np.testing.assert_array_equal(threes.requests, [3, 7, 11])
    np.testing.assert_array_equal(threes.input_tokens, [3000, 7000, 11000])
    np.testing.assert_array_equal(threes.output_tokens, [750, 1750, 2750])
    assert threes.start_s == 0.0

    # Ticks of 4 s: 1+0+2+3, 0+4+5+0, and a last tick of 1 s with 6.
    fours = load_trace({**base, "tick_s": 4, "mean_input_tokens": 10, "mean_output_tokens": 0})
    np.testing.assert_array_equal(fours.requests, [6, 9, 6])
    np.testing.assert_array_equal(fours.input_tokens, [60, 90, 60])
    np.testing.assert_array_equal(fours.output_tokens, [0, 0, 0])

    # rate_scale 2 doubles requests and tokens.
    doubled = load_trace({**base, "tick_s": 3, "rate_scale": 2})
    np.testing.assert_array_equal(doubled.requests, [6, 14, 22])
    np.testing.assert_array_equal(doubled.input_tokens, [6000, 14000, 22000])

    # time_scale 2 makes each slot 0.5 s, so a tick of 3 s contains six slots: 1+0+2+3+0+4 and 5+0+6.
    faster = load_trace({**base, "tick_s": 3, "time_scale": 2})
    np.testing.assert_array_equal(faster.requests, [10, 11])

    # The split applies to the ticks: 0.7 of 3 ticks is 2 for training.
    train = load_trace({**base, "tick_s": 3, "split": "train"})
    held_out = load_trace({**base, "tick_s": 3, "split": "held_out"})
    np.testing.assert_array_equal(train.requests, [3, 7])
    np.testing.assert_array_equal(held_out.requests, [11])
    assert held_out.start_s == 6.0


def test_nasa_day_window(tmp_path: Path) -> None:
    path = write_text(tmp_path, "workload.txt", nasa_day_counts(3))
    base = {"kind": "nasa", "path": str(path), "tick_s": 3600}

    # Day 1 alone: 24 hours of 2 requests per second, 7200 per hour.
    day_one = load_trace({**base, "start_day": 1, "days": 1})
    np.testing.assert_array_equal(day_one.requests, [7200] * 24)
    assert day_one.start_s == 86400.0
    assert day_one.mean_rate() == 2.0

    # From the middle of day 0 for one day: 12 hours of day 0, then 12 of day 1.
    straddling = load_trace({**base, "start_day": 0.5, "days": 1})
    np.testing.assert_array_equal(straddling.requests, [3600] * 12 + [7200] * 12)
    assert straddling.start_s == 43200.0

    # The split applies inside the window: half of it for training, half held out.
    held_out = load_trace({**base, "start_day": 0.5, "days": 1, "split": "held_out", "train_fraction": 0.5})
    np.testing.assert_array_equal(held_out.requests, [7200] * 12)
    assert held_out.start_s == 86400.0

    # Without days the window runs to the end: days 2 and 3 (3 requests per second in day 2).
    to_end = load_trace({**base, "start_day": 2})
    np.testing.assert_array_equal(to_end.requests, [10800] * 24)

    # window_start_s and window_end_s then cut seconds of the whole series inside the days.
    hour = load_trace({**base, "start_day": 1, "days": 1, "window_start_s": 90000, "window_end_s": 93600})
    np.testing.assert_array_equal(hour.requests, [7200])
    assert hour.start_s == 90000.0

    # time_scale 2 halves the time axis, so day 1 starts at 43200 s and each tick of 1 h contains 2 h of slots.
    faster = load_trace({**base, "start_day": 1, "days": 1, "time_scale": 2})
    np.testing.assert_array_equal(faster.requests, [14400] * 12)
    assert faster.start_s == 43200.0

    # start_day and days of null, as a config may give them, select the whole series.
    whole = load_trace({**base, "start_day": None, "days": None})
    np.testing.assert_array_equal(whole.requests, load_trace(base).requests)
    assert whole.start_s == 0.0

    # A window shorter than a second widens to the whole second it starts in.
    one_second = load_trace({**base, "start_day": 1, "days": 1e-9})
    np.testing.assert_array_equal(one_second.requests, [2])
    assert one_second.duration_s == 3600.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"start_day": 3}, r"'start_day' is 3, but .* covers 3 days \(259,200 s\)\. Give a start_day below 3"),
        ({"start_day": 1, "days": 2.5}, r"'days' is 2\.5, so the window ends at day 3\.5, past the end .*days <= 2\.000000 "),
        ({"days": 1e-13}, r"'days' is 1e-13, shorter than a microsecond, so it selects no second"),
        ({"days": 0}, r"'days' is 0\. It must be > 0"),
        ({"start_day": -1}, r"'start_day' is -1\. It must be >= 0"),
        ({"start_day": "5"}, r"'start_day' is '5'\. Give a finite number"),
        ({"seed": 1}, r"\['seed'\] apply only to kind 'servegen', not 'nasa'"),
        ({"clients": [0]}, r"\['clients'\] apply only to kind 'servegen', not 'nasa'"),
        ({"mean_input_tokens": -5}, r"'mean_input_tokens' is -5"),
    ],
)
def test_nasa_rejects_bad_spec(tmp_path: Path, extra: dict, message: str) -> None:
    path = write_text(tmp_path, "workload.txt", nasa_day_counts(3))

    with pytest.raises(TraceSpecError, match=message):
        load_trace({"kind": "nasa", "path": str(path), **extra})


def test_day_keys_apply_only_to_nasa() -> None:
    with pytest.raises(TraceSpecError, match=r"\['start_day', 'days'\] apply only to kind 'nasa', not 'azure_llm'"):
        load_trace({"kind": "azure_llm", "path": EMBEDDED_CODE, "start_day": 0, "days": 1})


@pytest.mark.parametrize(
    ("case", "text", "row", "column", "problem"),
    [
        ("negative", "1 -2 3", 1, "value 2 (second 1)", "'-2' is negative."),
        ("text", "1 2 abc 4", 1, "value 3 (second 2)", "'abc' is not a number."),
        ("fraction", "1 2.5", 1, "value 2 (second 1)", "'2.5' is not a whole number."),
        ("exponent", "1e3 2", 1, "value 1 (second 0)", "'1e3' is not written in plain decimal digits."),
        ("second line", "1 2\n3 x 5", 2, "value 2 (second 3)", "'x' is not a number."),
        ("above 1e9", "1 1000000001", 1, "value 2 (second 1)", "the count '1000000001' is above 1e+09"),
        ("empty", "", 1, "value 1 (second 0)", "the file has no counts."),
        ("whitespace only", " \n\t", 1, "value 1 (second 0)", "the file has no counts."),
    ],
)
def test_nasa_malformed_file(tmp_path: Path, case: str, text: str, row: int, column: str, problem: str) -> None:
    path = write_text(tmp_path, "workload.txt", text)

    with pytest.raises(TraceFormatError) as caught:
        read_nasa_http(path)

    assert_located(caught.value, path, row, column)
    assert problem in str(caught.value)


def test_nasa_malformed_archive_names_archive(tmp_path: Path) -> None:
    path = write_tbz2(tmp_path, "workload.tbz2", {"workload.txt": b"0 3 -1"})

    with pytest.raises(TraceFormatError) as caught:
        read_nasa_http(path)

    assert_located(caught.value, path, 1, "value 3 (second 2)")
    assert "Write each count as a whole number >= 0" in str(caught.value)


def test_nasa_archive_without_member(tmp_path: Path) -> None:
    path = write_tbz2(tmp_path, "workload.tbz2", {"counts.txt": b"1 2"})

    with pytest.raises(TraceFormatError) as caught:
        read_nasa_http(path)

    assert_located(caught.value, path, 1, "archive")
    assert "no regular file named workload.txt (found 'counts.txt')" in str(caught.value)


def test_nasa_shared_trace_totals() -> None:
    path = resolve_trace_path("shared:nasa_http_1995/workload.tbz2")

    started = time.perf_counter()
    trace = read_nasa_http(path)
    elapsed = time.perf_counter() - started

    counts = trace.rate_per_s
    assert len(trace) == 5_059_950
    assert counts.sum() == 3_461_610
    assert counts.max() == 20
    # Slots 0..2,381,544 are the July log. The outage is 135,851 zero seconds from slot 2,435,065 on.
    assert counts[:2_381_545].sum() == 1_891_714
    assert counts[2_435_065:2_435_065 + 135_851].sum() == 0
    assert counts[2_435_064] > 0
    assert counts[2_435_065 + 135_851] > 0
    # 1.2 to 1.8 s on the 2-core development machine while a training run shared it, 1.1 s of it bzip2.
    assert elapsed < 10.0


def test_nasa_config_takes_one_week() -> None:
    series = load_trace(OmegaConf.load(REPO_ROOT / "conf" / "trace" / "nasa.yaml"))

    # Days 5 to 12 are 7 * 86400 / 15 = 40,320 ticks, before the outage from day 28.2 on.
    assert len(series) == 40_320
    assert series.start_s == 5 * 86400
    # The raw mean of these days is 0.84 requests/s, scaled by 5.
    assert series.mean_rate() == pytest.approx(4.2, abs=0.01)
    assert series.input_tokens.sum() == pytest.approx(series.requests.sum() * 1000)
    assert series.output_tokens.sum() == pytest.approx(series.requests.sum() * 250)


# Rate traces to series


def test_rate_to_series_expected_counts() -> None:
    trace = RateTrace("hand", "", 600.0, np.array([2.0, 2.0, 0.25]), 1000.0, 250.0)

    # Two ticks of 300 s per window: 2 * 300 = 600 and 0.25 * 300 = 75.
    halves = rate_to_series(trace, tick_s=300.0)
    np.testing.assert_allclose(halves.requests, [600, 600, 600, 600, 75, 75])
    np.testing.assert_allclose(halves.input_tokens, np.array([600, 600, 600, 600, 75, 75]) * 1000)
    np.testing.assert_allclose(halves.output_tokens, np.array([600, 600, 600, 600, 75, 75]) * 250)

    # Ticks of 450 s cross window edges: [450, 900) is 150 s at 2/s plus 300 s at 2/s,
    # [900, 1350) is 300 s at 2/s plus 150 s at 0.25/s.
    crossing = rate_to_series(trace, tick_s=450.0)
    np.testing.assert_allclose(crossing.requests, [900, 900, 637.5, 112.5])
    assert crossing.requests.sum() == pytest.approx(2550)


def test_rate_to_series_partial_last_tick() -> None:
    trace = RateTrace("hand", "", 600.0, np.array([1.0, 1.0]), 1000.0, 250.0)

    series = rate_to_series(trace, tick_s=500.0)

    # 1200 s make two full ticks of 500 s and a last tick of 200 s.
    np.testing.assert_allclose(series.requests, [500, 500, 200])


def test_rate_to_series_poisson_seed() -> None:
    trace = RateTrace("hand", "", 600.0, np.array([2.0, 2.0, 0.25]), 1000.0, 250.0)

    first = rate_to_series(trace, tick_s=15.0, seed=7)
    again = rate_to_series(trace, tick_s=15.0, seed=7)
    other = rate_to_series(trace, tick_s=15.0, seed=8)

    np.testing.assert_array_equal(first.requests, again.requests)
    assert not np.array_equal(first.requests, other.requests)
    np.testing.assert_array_equal(first.requests, np.round(first.requests))
    np.testing.assert_allclose(first.input_tokens, first.requests * 1000)
    # Expected total 2550 requests, Poisson standard deviation about 50.
    assert abs(first.requests.sum() - 2550) < 300


# Time and rate scaling, windows, splits and tiles


def test_time_scale_request_trace(tmp_path: Path) -> None:
    trace = read_azure_llm(write_text(tmp_path, "hand.csv", HAND_CSV))

    faster = time_scale(trace, 2.0)

    np.testing.assert_allclose(faster.arrival_s, trace.arrival_s / 2)
    np.testing.assert_array_equal(faster.input_tokens, trace.input_tokens)
    # Arrivals 0, 2.75, 7.4999995, 7.5, 15, 22.0000005 and 30.625 s.
    np.testing.assert_array_equal(to_series(faster, 15.0).requests, [4, 2, 1])


def test_time_scale_rate_trace() -> None:
    trace = RateTrace("hand", "", 600.0, np.array([2.0, 2.0, 0.25]), 1000.0, 250.0)

    faster = time_scale(trace, 3.0)

    assert faster.window_s == 200.0
    np.testing.assert_allclose(faster.rate_per_s, [6.0, 6.0, 0.75])
    assert rate_to_series(faster, 15.0).requests.sum() == pytest.approx(2550)


def test_time_scale_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="before to_series"):
        time_scale(make_series([1, 2]), 2.0)  # type: ignore[type-var]
    trace = RateTrace("hand", "", 600.0, np.array([1.0]), 1.0, 1.0)
    for factor in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="time_scale factor"):
            time_scale(trace, factor)


def test_rate_scale_multiplies_totals() -> None:
    series = make_series([3, 1, 2])

    scaled = series.rate_scale(2.5)

    np.testing.assert_allclose(scaled.requests, [7.5, 2.5, 5.0])
    np.testing.assert_allclose(scaled.input_tokens, [750, 250, 500])
    np.testing.assert_allclose(scaled.output_tokens, [75, 25, 50])
    assert scaled.mean_rate() == pytest.approx(15 / 45)
    assert series.mean_rate() == pytest.approx(6 / 45)
    for factor in (0.0, -2.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rate_scale factor"):
            series.rate_scale(factor)


def test_window_selects_ticks() -> None:
    series = make_series(list(range(10)))

    exact = series.window(30, 75)
    np.testing.assert_array_equal(exact.requests, [2, 3, 4])
    assert exact.start_s == 30.0

    widened = series.window(31, 74)
    np.testing.assert_array_equal(widened.requests, [2, 3, 4])

    nested = exact.window(45, 60)
    np.testing.assert_array_equal(nested.requests, [3])
    assert nested.start_s == 45.0


@pytest.mark.parametrize(("start_s", "end_s"), [(50, 50), (60, 40), (140, 200), (-15, 30)])
def test_window_rejects_bad_bounds(start_s: float, end_s: float) -> None:
    with pytest.raises(ValueError, match="window"):
        make_series(list(range(10))).window(start_s, end_s)


def test_split_train_and_held_out() -> None:
    series = make_series(list(range(10)))

    train, held_out = series.split(0.7)

    np.testing.assert_array_equal(train.requests, range(7))
    np.testing.assert_array_equal(held_out.requests, [7, 8, 9])
    assert train.start_s == 0.0
    assert held_out.start_s == 105.0
    np.testing.assert_array_equal(held_out.input_tokens, [700, 800, 900])
    for fraction in (0.05, 0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="train_fraction"):
            series.split(fraction)


def test_tile_repeats_whole_series() -> None:
    series = make_series([1, 2, 3])

    tiled = series.tile(7)

    np.testing.assert_array_equal(tiled.requests, [1, 2, 3] * 3)
    assert series.tile(3) is series
    with pytest.raises(ValueError, match="n_ticks"):
        series.tile(0)


def test_records_validate_arrays() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        ArrivalSeries("bad", 15.0, np.ones(3), np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match=r"requests\[1\] is nan"):
        ArrivalSeries("bad", 15.0, np.array([1.0, np.nan]), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match=r"output_tokens\[0\] is -1"):
        ArrivalSeries("bad", 15.0, np.ones(2), np.ones(2), np.array([-1.0, 1.0]))
    with pytest.raises(ValueError, match="tick_s"):
        ArrivalSeries("bad", 0.0, np.ones(2), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="no entries"):
        ArrivalSeries("bad", 15.0, np.ones(0), np.ones(0), np.ones(0))
    with pytest.raises(ValueError, match=r"arrival_s\[0\] is 1.0"):
        RequestTrace("bad", "", np.array([1.0, 2.0]), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match=r"arrival_s\[2\] is earlier"):
        RequestTrace("bad", "", np.array([0.0, 2.0, 1.0]), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="whole numbers"):
        RequestTrace("bad", "", np.array([0.0]), np.array([1.5]), np.ones(1))
    with pytest.raises(ValueError, match="window_s"):
        RateTrace("bad", "", -600.0, np.ones(2), 1.0, 1.0)


def test_records_arrays_are_read_only() -> None:
    series = make_series([1, 2])

    with pytest.raises(ValueError):
        series.requests[0] = 5.0
    assert len(series) == 2


# Loader and trace configs


def test_resolve_relative_path_against_repo_root() -> None:
    relative = resolve_trace_path("envs/data/azure_llm_2023/AzureLLMInferenceTrace_code.csv")

    assert relative == resolve_trace_path(EMBEDDED_CODE)


def test_shared_dir_default_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRACES_ENV_VAR, raising=False)
    assert shared_traces_dir() == SHARED_TRACES == REPO_ROOT.parent / "shared" / "traces"

    monkeypatch.setenv(TRACES_ENV_VAR, str(tmp_path))
    write_text(tmp_path, "hand.csv", HAND_CSV)
    assert resolve_trace_path("shared:hand.csv") == tmp_path / "hand.csv"


def test_missing_shared_trace_names_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRACES_ENV_VAR, str(tmp_path / "nowhere"))

    with pytest.raises(FileNotFoundError, match=f"Set {TRACES_ENV_VAR} to the folder"):
        load_trace({"kind": "azure_llm", "path": "shared:azure_llm_2023/AzureLLMInferenceTrace_conv.csv"})


def test_missing_files_name_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="embedded trace 'embedded:absent.csv' not found"):
        load_trace({"kind": "azure_llm", "path": "embedded:absent.csv"})
    with pytest.raises(FileNotFoundError, match="Relative paths resolve against the repository root"):
        load_trace({"kind": "azure_llm", "path": "traces/absent.csv"})
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        load_trace({"kind": "azure_llm", "path": str(tmp_path / "absent.csv")})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "azure_llm", "path": EMBEDDED_CODE, "tick": 15}, r"unknown trace spec key\(s\) \['tick'\]"),
        ({"path": EMBEDDED_CODE}, "'kind' is missing"),
        ({"kind": "azure_llm"}, "'path' is missing"),
        ({"kind": "csv", "path": EMBEDDED_CODE}, "kind 'csv' is unknown"),
        ({"kind": "azure_llm", "path": EMBEDDED_CODE, "seed": 3}, r"\['seed'\] apply only to kind 'servegen'"),
        ({"kind": "azure_llm", "path": EMBEDDED_CODE, "tick_s": 0}, "'tick_s' is 0"),
        ({"kind": "azure_llm", "path": EMBEDDED_CODE, "rate_scale": "2"}, "'rate_scale' is '2'"),
        ({"kind": "azure_llm", "path": EMBEDDED_CODE, "split": "test"}, "'split' is 'test'"),
        ({"kind": "azure_llm", "path": EMBEDDED_CODE, "window_start_s": 9000}, "window_start_s=9000"),
    ],
)
def test_load_trace_rejects_bad_spec(spec: dict, message: str) -> None:
    with pytest.raises(TraceSpecError, match=message):
        load_trace(spec)


def test_load_trace_pipeline(tmp_path: Path) -> None:
    path = write_text(tmp_path, "hand.csv", HAND_CSV)
    base = {"kind": "azure_llm", "path": str(path)}

    np.testing.assert_array_equal(load_trace(base).requests, [3, 1, 2, 0, 1])

    windowed = load_trace({**base, "window_start_s": 15, "window_end_s": 45})
    np.testing.assert_array_equal(windowed.requests, [1, 2])
    assert windowed.start_s == 15.0

    # With time_scale 2 the ticks contain [4, 2, 1]. The window bounds stay in
    # original seconds, so [30, 60) becomes [15, 30) after scaling.
    faster = load_trace({**base, "time_scale": 2, "window_start_s": 30, "window_end_s": 60})
    np.testing.assert_array_equal(faster.requests, [2])

    train = load_trace({**base, "split": "train", "train_fraction": 0.6, "rate_scale": 2, "name": "hand-2x"})
    np.testing.assert_array_equal(train.requests, [6, 2, 4])
    np.testing.assert_array_equal(train.input_tokens, [1200, 800, 2200])
    assert train.name == "hand-2x"

    held_out = load_trace({**base, "split": "held_out", "train_fraction": 0.6})
    np.testing.assert_array_equal(held_out.requests, [0, 1])
    assert held_out.start_s == 45.0


def test_load_trace_servegen_options(tmp_path: Path) -> None:
    folder = write_servegen(tmp_path / "model")
    base = {"kind": "servegen", "path": str(folder), "tick_s": 300}

    expected = load_trace({**base, "clients": [3], "mean_input_tokens": 10, "mean_output_tokens": 0})
    np.testing.assert_allclose(expected.requests, [150, 150, 600, 600, 0, 0])
    np.testing.assert_allclose(expected.input_tokens, [1500, 1500, 6000, 6000, 0, 0])
    np.testing.assert_allclose(expected.output_tokens, np.zeros(6))

    sampled = load_trace({**base, "seed": 1})
    np.testing.assert_array_equal(sampled.requests, np.round(sampled.requests))
    with pytest.raises(TraceSpecError, match="list of integer client ids"):
        load_trace({**base, "clients": "0,3"})


def test_trace_configs_exist() -> None:
    names = {path.stem for path in TRACE_CONFIGS}

    assert names == {
        "azure_code", "azure_conv", "mooncake", "servegen_m_large", "servegen_deepseek_r1",
        "servegen_deepseek_r1_small", "alibaba_genai", "nasa",
    }
    for path in TRACE_CONFIGS:
        assert path.read_text(encoding="utf-8").startswith("# "), f"{path} needs a comment line first"


@pytest.mark.parametrize("config", TRACE_CONFIGS, ids=lambda path: path.stem)
def test_trace_config_loads(config: Path) -> None:
    spec = OmegaConf.load(config)

    series = load_trace(spec)

    assert len(series) > 0
    assert series.tick_s == spec.tick_s
    plain = yaml.safe_load(config.read_text(encoding="utf-8"))
    np.testing.assert_array_equal(load_trace(plain).requests, series.requests)


def test_azure_code_config_matches_trace() -> None:
    series = load_trace(OmegaConf.load(REPO_ROOT / "conf" / "trace" / "azure_code.yaml"))

    # The last request at 3435.9 s falls in tick 229, so there are 230 ticks.
    assert len(series) == 230
    assert series.requests.sum() == 8819
    assert series.name == "AzureLLMInferenceTrace_code"


def test_servegen_m_large_config_spans_14_days() -> None:
    series = load_trace(OmegaConf.load(REPO_ROOT / "conf" / "trace" / "servegen_m_large.yaml"))

    assert series.duration_s == 14 * 86400
    assert len(series) == 14 * 86400 // 15
