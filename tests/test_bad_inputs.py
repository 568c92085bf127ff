"""Bad inputs end to end: malformed traces, invalid configs and damaged checkpoints.

Every rejection must name the offending value or location and give the fix.
Inputs that are odd but valid (a multi-hour gap, simultaneous requests) must
be accepted with the documented meaning.
"""

from __future__ import annotations

import bz2
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from agent.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from agent.policy import build_policy, policy_from_checkpoint
from envs.config import ConfigError, build_cluster, load_deployment_series
from envs.traces import (
    TraceFormatError,
    TraceSpecError,
    load_trace,
    read_azure_llm,
    read_mooncake,
    read_nasa_http,
    read_servegen,
    to_series,
)
from envs.traces import nasa

ROOT = Path(__file__).resolve().parent.parent
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
FIRST_ROW = "2023-11-16 18:00:00.0,10,5\n"
OPTIONS = ["h100-1", "a100-1", "l40s-1"]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# Traces: odd but valid input


def test_multi_hour_gap_gives_zero_ticks(tmp_path: Path) -> None:
    path = write(tmp_path, "gap.csv", HEADER + FIRST_ROW + "2023-11-16 22:00:00.0,20,6\n")

    series = to_series(read_azure_llm(path), tick_s=15.0)

    # Four hours are 960 ticks of 15 s, so the second request falls in tick 960.
    assert len(series) == 961
    assert series.requests[0] == 1
    assert series.requests[960] == 1
    assert series.requests[1:960].sum() == 0


def test_duplicate_timestamps_are_simultaneous(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.csv", HEADER + FIRST_ROW + FIRST_ROW)

    series = to_series(read_azure_llm(path), tick_s=15.0)

    assert series.requests.tolist() == [2.0]
    assert series.input_tokens.tolist() == [20.0]


def test_fraction_longer_than_4300_digits_is_rounded(tmp_path: Path) -> None:
    path = write(tmp_path, "long.csv", HEADER + FIRST_ROW + "2023-11-16 18:00:01." + "9" * 5000 + ",1,1\n")

    trace = read_azure_llm(path)

    assert trace.arrival_s.tolist() == [0.0, 2.0]


# Traces: rejected input, located by row and column

AZURE_CASES = [
    ("NaN", HEADER + "2023-11-16 18:00:00.0,nan,1\n", 2, "ContextTokens", "NaN", "Give a number >= 0"),
    ("negative", HEADER + "2023-11-16 18:00:00.0,3,-1\n", 2, "GeneratedTokens", "'-1' is negative", "Give a number"),
    ("unsorted", HEADER + "2023-11-16 18:00:05.0,1,1\n" + FIRST_ROW, 3, "TIMESTAMP", "goes back by 5 s",
     "Sort the rows by TIMESTAMP"),
    ("1e18 tokens", HEADER + "2023-11-16 18:00:00.0,1000000000000000000,1\n", 2, "ContextTokens",
     "'1000000000000000000' is above 1,000,000,000", "Check the cell"),
    ("30-digit tokens", HEADER + "2023-11-16 18:00:00.0," + "9" * 30 + ",1\n", 2, "ContextTokens",
     "'999999999999999999999999999999' is above", "Check the cell"),
    ("5000 digits", HEADER + "2023-11-16 18:00:00.0," + "9" * 5000 + ",1\n", 2, "ContextTokens",
     "(5002 characters) is infinite or too large", "Give a finite number"),
    ("year 9999", HEADER + FIRST_ROW + "9999-12-31 23:59:59.0,1,1\n", 3, "TIMESTAMP",
     "2.913e+06 days after the first row", "probably mistyped"),
    ("wrong columns", "time,in,out\n1,2,3\n", 1, "TIMESTAMP", "no column 'TIMESTAMP'",
     "Use a file with the columns TIMESTAMP, ContextTokens, GeneratedTokens"),
    ("no rows", HEADER, 2, "TIMESTAMP", "no data rows", "at least one request"),
    ("empty file", "", 1, "TIMESTAMP", "the file is empty", "copied completely"),
    ("field over csv limit", HEADER + FIRST_ROW + '"' + "x" * 200_000 + '",1,1\n', 3, "CSV syntax",
     "field larger than field limit", "Check the quoting"),
]


@pytest.mark.parametrize(("case", "text", "row", "column", "problem", "fix"), AZURE_CASES,
                         ids=[case[0] for case in AZURE_CASES])
def test_azure_rejects(tmp_path: Path, case: str, text: str, row: int, column: str, problem: str, fix: str) -> None:
    path = write(tmp_path, "bad.csv", text)

    with pytest.raises(TraceFormatError) as caught:
        read_azure_llm(path)

    assert (caught.value.row, caught.value.column) == (row, column)
    assert problem in str(caught.value)
    assert fix in str(caught.value)
    assert len(str(caught.value)) < 400


def test_invalid_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(HEADER.encode() + FIRST_ROW.encode() + b"2023-11-16 18:00:01.0,\xe9,1\n")

    with pytest.raises(TraceFormatError) as caught:
        read_azure_llm(path)

    assert (caught.value.row, caught.value.column) == (3, "byte 23")
    assert "not valid UTF-8" in str(caught.value)
    assert "Save the file as UTF-8" in str(caught.value)


MOONCAKE_LINE = '{"timestamp": 0, "input_length": 1, "output_length": 1}\n'
MOONCAKE_CASES = [
    ("integer of 401 digits", '{"timestamp": 1%s, "input_length": 1, "output_length": 1}' % ("0" * 400),
     "timestamp", "too large for a float", "Give a finite number"),
    ("integer of 5000 digits", '{"timestamp": 1%s, "input_length": 1, "output_length": 1}' % ("0" * 5000),
     "timestamp", "integer too long to parse", "fewer digits"),
    ("1e300 ms later", '{"timestamp": 1e300, "input_length": 1, "output_length": 1}', "timestamp",
     "days after the first row", "probably mistyped"),
    ("nested 100000 deep", "[" * 100_000 + "]" * 100_000, "timestamp", "too deeply", "flat JSON object"),
    ("NaN tokens", '{"timestamp": 5, "input_length": NaN, "output_length": 1}', "input_length", "NaN",
     "Give a number >= 0"),
    ("9.3e18 tokens", '{"timestamp": 5, "input_length": 9.3e18, "output_length": 1}', "input_length",
     "the value 9.3e+18 is above 1,000,000,000", "Check the cell"),
]


@pytest.mark.parametrize(("case", "line", "column", "problem", "fix"), MOONCAKE_CASES,
                         ids=[case[0] for case in MOONCAKE_CASES])
def test_mooncake_rejects(tmp_path: Path, case: str, line: str, column: str, problem: str, fix: str) -> None:
    path = write(tmp_path, "bad.jsonl", MOONCAKE_LINE + line + "\n")

    with pytest.raises(TraceFormatError) as caught:
        read_mooncake(path)

    assert (caught.value.row, caught.value.column) == (2, column)
    assert problem in str(caught.value)
    assert fix in str(caught.value)


@pytest.mark.parametrize(
    ("text", "row", "problem"),
    [
        ("0,1\n600,1e300\n", 2, "the rate 1e+300 requests/s is above 1e+09"),
        ("0,1\n1e300,1\n2e300,1\n", 2, "days after the first row"),
    ],
    ids=["huge rate", "huge window start"],
)
def test_servegen_rejects(tmp_path: Path, text: str, row: int, problem: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = write(folder, "chunk-0-trace.csv", text)

    with pytest.raises(TraceFormatError) as caught:
        read_servegen(folder)

    assert caught.value.path == str(path)
    assert caught.value.row == row
    assert problem in str(caught.value)


def write_tbz2(folder: Path, name: str, members: dict[str, bytes], directories: tuple[str, ...] = ()) -> Path:
    """Write a bzip2-compressed tar with the files ``members`` and the empty folders ``directories``."""
    path = folder / name
    with tarfile.open(path, mode="w:bz2") as archive:
        for directory in directories:
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        for member, content in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path


def test_nasa_odd_whitespace_and_leading_zeros(tmp_path: Path) -> None:
    path = tmp_path / "workload.txt"
    path.write_bytes(b"\r\n  007\t0\x0b1\x0c 0000000000000000000000002\r\n\n")

    assert read_nasa_http(path).rate_per_s.tolist() == [7.0, 0.0, 1.0, 2.0]


NASA_FIX = "Write each count as a whole number >= 0 in decimal digits, separated by spaces."
NASA_CASES = [
    ("negative", b"0 1 -3", 1, "value 3 (second 2)", "'-3' is negative.", NASA_FIX),
    ("NaN", b"1 nan", 1, "value 2 (second 1)", "'nan' is not a number.", NASA_FIX),
    ("infinite", b"1 inf", 1, "value 2 (second 1)", "'inf' is not a whole number.", NASA_FIX),
    ("minus zero", b"-0 1", 1, "value 1 (second 0)", "'-0' is not written in plain decimal digits.", NASA_FIX),
    ("full-width digits", "1 \uff11\uff12".encode(), 1, "value 2 (second 1)",
     "is not written in plain decimal digits.", NASA_FIX),
    ("commas", b"1,2,3", 1, "value 1 (second 0)", "'1,2,3' is not a number.", NASA_FIX),
    ("not UTF-8", b"1 \xff 2", 1, "value 2 (second 1)", "'\ufffd' is not a number.", NASA_FIX),
    ("NUL byte", b"1 2\x00 3", 1, "value 2 (second 1)", "'2\\x00' is not a number.", NASA_FIX),
    ("third line", b"1\n2\n3 4 -5", 3, "value 3 (second 4)", "'-5' is negative.", NASA_FIX),
    ("30 digits", b"1 " + b"9" * 30, 1, "value 2 (second 1)", "the count '999999999999999999999999999999' is above",
     "a unit or parsing mistake"),
    ("5000 digits", b"9" * 5000, 1, "value 1 (second 0)", "(5002 characters) is above 1e+09",
     "a unit or parsing mistake"),
    ("empty file", b"", 1, "value 1 (second 0)", "the file has no counts.", "at least one count"),
]


@pytest.mark.parametrize(("case", "content", "row", "column", "problem", "fix"), NASA_CASES,
                         ids=[case[0] for case in NASA_CASES])
def test_nasa_rejects(tmp_path: Path, case: str, content: bytes, row: int, column: str, problem: str,
                      fix: str) -> None:
    path = tmp_path / "workload.txt"
    path.write_bytes(content)

    with pytest.raises(TraceFormatError) as caught:
        read_nasa_http(path)

    assert (caught.value.path, caught.value.row, caught.value.column) == (str(path), row, column)
    assert problem in str(caught.value)
    assert fix in str(caught.value)
    assert len(str(caught.value)) < 400


def test_nasa_truncated_archive(tmp_path: Path) -> None:
    whole = write_tbz2(tmp_path, "whole.tbz2", {"workload.txt": b"1 2 3 " * 1000})
    path = tmp_path / "workload.tbz2"
    path.write_bytes(whole.read_bytes()[:60])

    with pytest.raises(TraceFormatError) as caught:
        read_nasa_http(path)

    assert (caught.value.row, caught.value.column) == (1, "archive")
    assert "the file is not a complete bzip2-compressed tar archive" in str(caught.value)
    assert "copied completely" in str(caught.value)


def test_nasa_bzip2_without_tar(tmp_path: Path) -> None:
    path = tmp_path / "workload.txt.bz2"
    path.write_bytes(bz2.compress(b"1 2 3"))

    with pytest.raises(TraceFormatError, match=r"not a complete bzip2-compressed tar archive.*extracted workload\.txt"):
        read_nasa_http(path)


def test_nasa_folder_named_like_member(tmp_path: Path) -> None:
    path = write_tbz2(tmp_path, "workload.tbz2", {}, directories=("workload.txt",))

    with pytest.raises(TraceFormatError, match=r"no regular file named workload\.txt \(found 'workload\.txt'\)"):
        read_nasa_http(path)


def test_nasa_series_over_span_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real limit is 31,622,400 counts (366 days), too many for a quick test, so it is lowered to 3.
    monkeypatch.setattr(nasa, "MAX_NASA_SLOTS", 3)
    path = tmp_path / "workload.txt"
    path.write_text("1 2 3\n4 5", encoding="utf-8")

    with pytest.raises(TraceFormatError) as caught:
        read_nasa_http(path)

    assert (caught.value.row, caught.value.column) == (2, "value 1 (second 3)")
    assert "the series has 5 counts of 1 s" in str(caught.value)
    assert "Split the series into shorter files" in str(caught.value)


def test_nasa_archive_expanding_past_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 MB of counts compress to a few kilobytes. The text limit is lowered from 348 MB to 1 MB so
    # that the test shows reading stops at the limit instead of holding the whole member.
    monkeypatch.setattr(nasa, "MAX_NASA_TEXT_BYTES", 1 << 20)
    path = write_tbz2(tmp_path, "workload.tbz2", {"workload.txt": b"0 " * (2 << 20)})
    assert path.stat().st_size < 10_000

    with pytest.raises(TraceFormatError) as caught:
        read_nasa_http(path)

    assert (caught.value.row, caught.value.column) == (1, "archive")
    assert "the count text is larger than 1,048,576 bytes" in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"start_day": 1}, r"'start_day' is 1, but .* covers 0\.000104167 days \(9 s\)\. Give a start_day below"),
        ({"start_day": 0.0001, "days": 0.0001}, r"'days' is 0\.0001, so the window ends at day 0\.0002, past the end"),
        ({"time_scale": 1e-7, "tick_s": 1}, r"tick_s=1 and time_scale=1e-07.*9e\+07 ticks"),
    ],
    ids=["start past the end", "days past the end", "too many ticks"],
)
def test_nasa_spec_rejects(tmp_path: Path, extra: dict, message: str) -> None:
    path = tmp_path / "workload.txt"
    path.write_text("1 0 2 3 0 4 5 0 6", encoding="utf-8")

    with pytest.raises(TraceSpecError, match=message):
        load_trace({"kind": "nasa", "path": str(path), **extra})


def test_too_many_ticks_names_tick_s(tmp_path: Path) -> None:
    path = write(tmp_path, "hour.csv", HEADER + FIRST_ROW + "2023-11-16 19:00:00.0,1,1\n")
    spec = {"kind": "azure_llm", "path": str(path), "tick_s": 15, "time_scale": 1e-6}

    # One hour stretched a million times is 3.6e9 s, or 2.4e8 ticks of 15 s.
    with pytest.raises(TraceSpecError, match=r"tick_s=15 and time_scale=1e-06.*2\.4e\+08 ticks.*larger tick_s"):
        load_trace(spec)


def test_split_of_one_tick_names_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "one.csv", HEADER + FIRST_ROW)

    with pytest.raises(TraceSpecError, match=r"split='train', train_fraction=0\.7 .*leaves one part empty"):
        load_trace({"kind": "azure_llm", "path": str(path), "split": "train"})


# Configs, through build_cluster and load_deployment_series


def deployment_cfg(default_cfg, **changes):
    cfg = OmegaConf.create(OmegaConf.to_container(default_cfg))
    for key, value in changes.items():
        cfg.workload.deployments[0][key] = value
    return cfg


CONFIG_CASES = [
    ("unknown key", {"replicas_max": 3}, "unknown key 'replicas_max' in the workload config",
     "Remove or rename it"),
    ("wrong type", {"max_replicas": "lots"}, "Value 'lots' of type 'str' could not be converted to Integer",
     "Give a value of the type that DeploymentConf"),
    ("min above max", {"min_replicas": 9, "max_replicas": 2}, "min_replicas (9) is above max_replicas (2)",
     "set max_replicas >= min_replicas"),
    ("max zero", {"min_replicas": 0, "max_replicas": 0}, "max_replicas: must be at least 1, got 0", "at least 1"),
    ("zero SLO", {"slo_ttft_p95_s": 0.0}, "slo_ttft_p95_s: must be a positive number", "got 0.0"),
    ("negative SLO", {"slo_ttft_p95_s": -1.0}, "slo_ttft_p95_s: must be a positive number", "got -1.0"),
    ("NaN SLO", {"slo_ttft_p95_s": float("nan")}, "slo_ttft_p95_s: must be a positive number", "got nan"),
    ("negative queue timeout", {"queue_timeout_s": -1.0}, "queue_timeout_s: must be a positive number",
     "got -1.0"),
    ("option no pool provides", {"initial_option": "a100-mig-3g.40gb"},
     "'a100-mig-3g.40gb' does not fit the model or no node pool provides it", "use one of ['h100-1'"),
    ("unknown option", {"initial_option": "tpu-1"}, "unknown allocation option 'tpu-1'", "Use one of those names"),
    ("unknown model", {"model": "gpt-5"}, "unknown model 'gpt-5'", "add the model with its profiles"),
    ("negative rate scale", {"rate_scale": -2.0}, "rate_scale: must be a finite number above 0", "got -2.0"),
    ("unknown trace config", {"traces": ["no_such_trace"]}, "trace config 'no_such_trace' not found",
     "Use one of ['alibaba_genai'"),
]


@pytest.mark.parametrize(("case", "changes", "problem", "fix"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_rejects(default_cfg, case: str, changes: dict, problem: str, fix: str) -> None:
    cfg = deployment_cfg(default_cfg, **changes)

    with pytest.raises(ConfigError) as caught:
        load_deployment_series(cfg, build_cluster(cfg))

    assert problem in str(caught.value)
    assert fix in str(caught.value)


def test_bad_trace_file_names_deployment(default_cfg, tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", HEADER + "2023-11-16 18:00:00.0,nan,1\n")
    cfg = OmegaConf.merge(default_cfg, {"trace": {"path": str(path)}})

    with pytest.raises(ConfigError) as caught:
        load_deployment_series(cfg, build_cluster(cfg))

    assert "Deployment 'code-llm': trace config 'trace' could not be loaded" in str(caught.value)
    assert f"{path}, row 2, column ContextTokens: the value is NaN" in str(caught.value)


def run_script(script: str, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), f"hydra.run.dir={tmp_path / 'run'}", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "override", "message"),
    [
        ("train.py", "+algo.learning_rat=0.1", "unknown key 'learning_rat' in the algo config (AlgoConf)"),
        ("train.py", "workload.deployments.0.model=gpt-5", "unknown model 'gpt-5'"),
        ("evaluate.py", "+workload.deployments.0.traces=[nope]", "trace config 'nope' not found"),
    ],
    ids=["train unknown key", "train unknown model", "evaluate unknown trace"],
)
def test_script_exits_2_with_message(tmp_path: Path, script: str, override: str, message: str) -> None:
    result = run_script(script, tmp_path, override)

    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


# Checkpoints


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    policy = build_policy(len(OPTIONS), [16, 16])
    save_checkpoint(tmp_path / "ckpt" / "policy", policy.state_dict(), option_names=OPTIONS, net_arch=[16, 16])
    return tmp_path / "ckpt" / "policy.json"


def edit_metadata(meta: Path, **changes: object) -> None:
    data = json.loads(meta.read_text())
    data.update(changes)
    meta.write_text(json.dumps(data))


@pytest.mark.parametrize("weights_file", ["../../etc/passwd", "/etc/passwd", "..", "", 7])
def test_weights_file_outside_folder_is_rejected(saved: Path, weights_file: object) -> None:
    # A copy of the weights one folder up would pass the hash check if the path were followed.
    (saved.parent.parent / "passwd").write_bytes(saved.with_suffix(".safetensors").read_bytes())
    edit_metadata(saved, weights_file=weights_file)

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(saved)

    assert f"weights_file {weights_file!r} is not a file name in the checkpoint folder" in str(caught.value)
    assert "set it to the name of the .safetensors file beside policy.json" in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"action_layout": ["h100-1"]}, "action_layout must be a JSON object with an 'options' list"),
        ({"policy": {"net_arch": "16,16"}}, "policy.net_arch must be a list of positive layer widths, got '16,16'"),
        ({"format": 2}, "checkpoint format 2 is not supported (expected 1)"),
    ],
    ids=["layout not an object", "net_arch a string", "other format"],
)
def test_corrupt_metadata_is_rejected(saved: Path, changes: dict, message: str) -> None:
    edit_metadata(saved, **changes)

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(saved)

    assert message in str(caught.value)


def test_weights_of_other_network_are_rejected(saved: Path) -> None:
    edit_metadata(saved, policy={"class": "MaskableActorCriticPolicy", "net_arch": [32, 32]})
    checkpoint = load_checkpoint(saved, option_names=OPTIONS)

    with pytest.raises(CheckpointError, match=r"do not match the policy network \[32, 32\]"):
        policy_from_checkpoint(checkpoint)


class _Payload:
    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(_Payload.marker),))


def test_resume_state_with_pickled_code_is_rejected(tmp_path: Path, tiny_model) -> None:
    from agent.training import load_resume_state

    _Payload.marker = str(tmp_path / "ran")
    resume = tmp_path / "checkpoints" / "resume.pt"
    resume.parent.mkdir()
    torch.save({"policy": _Payload()}, resume)

    with pytest.raises(CheckpointError, match=r"resume\.pt is unreadable .* delete it to train from the start"):
        load_resume_state(tiny_model(), tmp_path)
    assert not (tmp_path / "ran").exists()


def test_truncated_resume_state_is_rejected(tmp_path: Path, tiny_model) -> None:
    from agent.training import load_resume_state, save_training_state

    model = tiny_model()
    save_training_state(model, tmp_path, checkpoint_meta(model), tag="step_0")
    resume = tmp_path / "checkpoints" / "resume.pt"
    resume.write_bytes(resume.read_bytes()[:200])

    with pytest.raises(CheckpointError, match=r"resume\.pt is unreadable"):
        load_resume_state(model, tmp_path)


@pytest.fixture()
def tiny_model(default_cfg):
    """Return a factory of small MaskablePPO models on the default cluster, with ``n_envs`` rows."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import VecNormalize

    from agent.training import make_vec_env

    def build(n_envs: int = 2) -> MaskablePPO:
        venv = make_vec_env(default_cfg, n_envs=n_envs, seed=0)
        env = VecNormalize(venv, norm_obs=False, norm_reward=True)
        return MaskablePPO("MlpPolicy", env, n_steps=4, batch_size=8, policy_kwargs={"net_arch": [16, 16]}, seed=0)

    return build


def checkpoint_meta(model) -> dict:
    return {"option_names": list(model.get_env().venv.cluster.catalog.option_names), "net_arch": [16, 16]}


def test_resume_state_of_other_config_is_rejected(tmp_path: Path, tiny_model) -> None:
    from agent.training import load_resume_state, save_training_state

    saved_model = tiny_model(n_envs=2)
    saved_model.learn(total_timesteps=8)
    save_training_state(saved_model, tmp_path, checkpoint_meta(saved_model), tag="step_8")

    with pytest.raises(CheckpointError, match=r"2 VecEnv rows were saved, this run has 4.*Resume with the config"):
        load_resume_state(tiny_model(n_envs=4), tmp_path)
