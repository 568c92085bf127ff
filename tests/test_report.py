"""The Markdown report: confidence intervals and GPU-hours per option, by hand."""

import math

from agent.report import mean_ci, render_markdown, summarize_records


def record(controller, seed, gpu_hours, by_option):
    return {"trace": "t", "controller": controller, "seed": seed, "gpu_hours": gpu_hours, "cost_usd": 1.0,
            "slo_attainment": 0.9, "ttft_p95_s": 1.0, "dropped_requests": 0, "scale_events": 1,
            "allocation_changes": 0, "gpu_hours_by_option": by_option}


def test_mean_ci_uses_student_t():
    # Values 1, 2, 3: mean 2, sample sd 1, t(0.975, 2) = 4.303, half-width 4.303 / sqrt(3).
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert math.isclose(half, 4.303 / math.sqrt(3.0))


def test_report_lists_gpu_hours_per_option():
    records = [
        record("policy", 0, 1.0, {"h100-1": 1.0}),
        record("policy", 1, 3.0, {"h100-1": 2.0, "l40s-1": 1.0}),
        record("hpa", 0, 2.0, {"l40s-1": 2.0}),
    ]
    text = render_markdown(records)
    assert "| controller | h100-1 | l40s-1 |" in text
    # Means over seeds; an option a seed did not use counts as 0.
    assert "| policy | 1.500 | 0.500 |" in text
    assert "| hpa | 0.000 | 2.000 |" in text
    assert "| policy | 2.000 ± " in text


def test_summary_gives_mean_ci_and_seed_count():
    records = [record("policy", 0, 1.0, {}), record("policy", 1, 2.0, {}), record("policy", 2, 3.0, {}),
               record("hpa", 0, 4.0, {})]
    summary = summarize_records(records)
    mean, half, seeds = summary["t"]["policy"]["gpu_hours"]
    assert (mean, seeds) == (2.0, 3.0)
    assert math.isclose(half, 4.303 / math.sqrt(3.0))
    assert summary["t"]["hpa"]["gpu_hours"] == [4.0, 0.0, 1.0]


def test_report_lists_allocation_per_deployment():
    first = record("policy", 0, 2.0, {})
    first["allocations"] = {"code": {"options": ["a100-4", "h100-1"], "allocation_changes": 1,
                                     "gpu_hours_by_option": {"a100-4": 0.5, "h100-1": 1.0}}}
    second = record("policy", 1, 2.0, {})
    second["allocations"] = {"code": {"options": ["a100-4"], "allocation_changes": 0,
                                      "gpu_hours_by_option": {"a100-4": 2.5}}}
    text = render_markdown([first, second])
    # Options of the first seed; changes (1 + 0) / 2 and GPU-hours (1.5 + 2.5) / 2.
    assert "| policy | code | a100-4 → h100-1 | 0.5 | 2.000 |" in text


def test_summary_records_allocation_sequence():
    import numpy as np

    from agent.metrics import EpisodeTrace, summarize

    trace = EpisodeTrace(tick_s=15.0, option_names=("h100-1", "a100-4"), deployment_names=("a", "b"))
    # "a" moves from a100-4 to h100-1 at tick 2; "b" stays on h100-1. A tick
    # uses 4 GPUs on a100-4 or 1 GPU on h100-1 for 15 s = 1/240 h.
    options = [[1, 0], [1, 0], [0, 0], [0, 0]]
    for tick, row in enumerate(options):
        row = np.array(row)
        for name, value in (("arrivals", np.ones(2)), ("slo_met", np.ones(2)), ("dropped", np.zeros(2)),
                            ("cost_usd", np.zeros(2)), ("pending", np.zeros(2)), ("scale_events", np.zeros(2)),
                            ("ttft_p50", np.zeros(2)), ("ttft_p95", np.zeros(2)), ("ttft_p99", np.zeros(2))):
            getattr(trace, name).append(value)
        trace.option.append(row)
        trace.gpu_hours.append(np.where(row == 1, 4.0, 1.0) / 240.0)
        trace.option_changes.append(np.array([1.0 if tick == 2 else 0.0, 0.0]))
    allocations = summarize(trace)["allocations"]
    assert allocations["a"]["options"] == ["a100-4", "h100-1"]
    assert allocations["a"]["allocation_changes"] == 1
    assert math.isclose(allocations["a"]["gpu_hours_by_option"]["a100-4"], 8.0 / 240.0)
    assert math.isclose(allocations["a"]["gpu_hours_by_option"]["h100-1"], 2.0 / 240.0)
    assert allocations["b"]["options"] == ["h100-1"]
    assert allocations["b"]["allocation_changes"] == 0


def test_report_includes_time_series(tmp_path):
    import json

    from agent.report import load_results, write_report

    run = tmp_path / "run"
    run.mkdir()
    records = [record("policy", 0, 1.0, {"h100-1": 1.0}), record("hpa", 0, 2.0, {"h100-1": 2.0})]
    (run / "results.json").write_text(json.dumps({"records": records}))
    (run / "timeseries_t_seed0.png").write_bytes(b"\x89PNG plot")
    out = tmp_path / "report"
    written = write_report(load_results([run / "results.json"]), out, sources=[run / "results.json"])
    text = (out / "report.md").read_text()
    assert "![timeseries_t_seed0](timeseries_t_seed0.png)" in text
    assert (out / "timeseries_t_seed0.png").read_bytes() == b"\x89PNG plot"
    assert out / "pareto_t_gpu_hours.png" in written
