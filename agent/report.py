"""Reports from results.json: a Markdown table with 95 % confidence intervals and PNG plots."""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from agent.atomic import write_text_atomic

# Two-sided 95 % Student t quantiles by degrees of freedom (standard tables).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}

COLUMNS = (
    ("gpu_hours", "GPU-hours", "{:.3f}"),
    ("cost_usd", "cost USD", "{:.2f}"),
    ("slo_attainment", "SLO attainment", "{:.3f}"),
    ("ttft_p95_s", "p95 TTFT s", "{:.2f}"),
    ("dropped_requests", "dropped", "{:.0f}"),
    ("scale_events", "scale events", "{:.1f}"),
    ("allocation_changes", "alloc changes", "{:.1f}"),
)


def t95(dof: int) -> float:
    if dof <= 0:
        return float("nan")
    keys = sorted(_T95)
    for key in keys:
        if dof <= key:
            return _T95[key]
    return 1.96


def mean_ci(values: Iterable[float]) -> tuple[float, float]:
    """Return the mean and the half-width of its 95 % confidence interval (0 for one value)."""
    data = np.asarray(list(values), dtype=np.float64)
    if data.size == 0:
        return float("nan"), float("nan")
    if data.size == 1:
        return float(data[0]), 0.0
    return float(data.mean()), t95(data.size - 1) * float(data.std(ddof=1)) / math.sqrt(data.size)


def group_records(records: Iterable[Mapping]) -> dict[tuple[str, str], list[Mapping]]:
    groups: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for record in records:
        groups[(str(record["trace"]), str(record["controller"]))].append(record)
    return groups


def summarize_records(records: Iterable[Mapping]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Return {trace: {controller: {metric: [mean, 95 % CI half-width, seeds]}}} for the table's metrics."""
    summary: dict[str, dict[str, dict[str, list[float]]]] = {}
    for (trace, controller), rows in sorted(group_records(records).items()):
        metrics = {}
        for key, _, _ in COLUMNS:
            mean, half = mean_ci(float(r[key]) for r in rows)
            metrics[key] = [mean, half, float(len(rows))]
        summary.setdefault(trace, {})[controller] = metrics
    return summary


def render_markdown(records: list[Mapping]) -> str:
    """Return one table per trace: mean ± 95 % CI over seeds for each controller."""
    groups = group_records(records)
    lines: list[str] = []
    for trace in sorted({t for t, _ in groups}):
        n_seeds = max(len(v) for (t, _), v in groups.items() if t == trace)
        lines.append(f"### {trace} ({n_seeds} seed{'s' if n_seeds != 1 else ''}, mean ± 95 % CI)")
        lines.append("")
        lines.append("| controller | " + " | ".join(label for _, label, _ in COLUMNS) + " |")
        lines.append("|---" * (len(COLUMNS) + 1) + "|")
        for (t, controller), rows in sorted(groups.items()):
            if t != trace:
                continue
            cells = []
            for key, _, fmt in COLUMNS:
                mean, half = mean_ci(float(r[key]) for r in rows)
                cells.append(fmt.format(mean) + (f" ± {fmt.format(half)}" if len(rows) > 1 else ""))
            lines.append(f"| {controller} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.extend(_option_hours_table(trace, groups))
        lines.extend(_allocation_table(trace, groups))
    return "\n".join(lines)


def _allocation_table(trace: str, groups: Mapping[tuple[str, str], list[Mapping]]) -> list[str]:
    """Return the lines of a table of each Deployment's options, allocation changes and GPU-hours per controller.

    The option sequence is that of the first seed; changes and GPU-hours are means over seeds.
    """
    rows_out = []
    for (t, controller), rows in sorted(groups.items()):
        if t != trace or not rows[0].get("allocations"):
            continue
        for deployment, first in rows[0]["allocations"].items():
            per_seed = [r.get("allocations", {}).get(deployment, {}) for r in rows]
            changes = np.mean([float(a.get("allocation_changes", 0)) for a in per_seed])
            hours = np.mean([sum(float(h) for h in a.get("gpu_hours_by_option", {}).values()) for a in per_seed])
            sequence = " → ".join(first.get("options", []))
            rows_out.append(f"| {controller} | {deployment} | {sequence} | {changes:.1f} | {hours:.3f} |")
    if not rows_out:
        return []
    return ["Allocation per Deployment (options in the order of the first seed; means over seeds):", "",
            "| controller | Deployment | options | alloc changes | GPU-hours |", "|---|---|---|---|---|",
            *rows_out, ""]


def _option_hours_table(trace: str, groups: Mapping[tuple[str, str], list[Mapping]]) -> list[str]:
    """Return the lines of a table of mean GPU-hours per allocation option and controller."""
    options = sorted({o for (t, _), rows in groups.items() if t == trace
                      for r in rows for o in r.get("gpu_hours_by_option", {})})
    if not options:
        return []
    lines = ["GPU-hours by allocation option (mean over seeds):", "",
             "| controller | " + " | ".join(options) + " |", "|---" * (len(options) + 1) + "|"]
    for (t, controller), rows in sorted(groups.items()):
        if t != trace:
            continue
        cells = [f"{np.mean([float(r.get('gpu_hours_by_option', {}).get(o, 0.0)) for r in rows]):.3f}" for o in options]
        lines.append(f"| {controller} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def render_plots(traces: Mapping[tuple[str, int], Mapping[str, object]], run_dir: Path, cluster: object) -> list[Path]:
    """Write a time-series PNG per (trace, seed) with load, replicas, TTFT p95 and GPUs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for (scenario, seed), by_controller in traces.items():
        fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
        first = next(iter(by_controller.values()))
        tick_s = first.tick_s  # type: ignore[attr-defined]
        load = first.array("arrivals").sum(axis=1) / tick_s  # type: ignore[attr-defined]
        minutes = np.arange(len(load)) * tick_s / 60.0
        axes[0].plot(minutes, load, color="black")
        axes[0].set_ylabel("requests/s")
        axes[0].set_title(f"{scenario}, seed {seed}")
        for name, trace in by_controller.items():
            axes[1].step(minutes, trace.array("desired").sum(axis=1), where="post", label=name)  # type: ignore[attr-defined]
            axes[2].plot(minutes, trace.array("ttft_p95").max(axis=1), label=name)  # type: ignore[attr-defined]
            axes[3].step(minutes, trace.array("gpus_held").sum(axis=1), where="post", label=name)  # type: ignore[attr-defined]
        axes[1].set_ylabel("desired replicas")
        axes[2].set_ylabel("TTFT p95 s (max over Deployments)")
        axes[2].set_yscale("log")
        axes[3].set_ylabel("GPUs held")
        axes[3].set_xlabel("minutes")
        axes[1].legend(loc="upper right")
        fig.tight_layout()
        path = run_dir / f"timeseries_{_slug(scenario)}_seed{seed}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def render_pareto(records: list[Mapping], path: Path, cost_key: str = "gpu_hours") -> Path:
    """Write a cost versus SLO-attainment scatter, one point per (controller, trace) mean.

    ``cost_key`` is the record field on the x axis: ``gpu_hours`` or ``cost_usd``.
    """
    labels = {"gpu_hours": "GPU-hours (lower is better)", "cost_usd": "cost USD (lower is better)"}
    if cost_key not in labels:
        raise ValueError(f"cost_key {cost_key!r} is not one of {sorted(labels)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    groups = group_records(records)
    traces = {trace for trace, _ in groups}
    for (trace, controller), rows in sorted(groups.items()):
        cost, cost_half = mean_ci(float(r[cost_key]) for r in rows)
        slo, slo_half = mean_ci(float(r["slo_attainment"]) for r in rows)
        # Error bars are the 95 % confidence intervals over seeds (none for one seed).
        ax.errorbar(cost, slo, xerr=cost_half, yerr=slo_half, fmt="o", capsize=3)
        label = controller if len(traces) == 1 else f"{controller} ({trace})"
        ax.annotate(label, (cost, slo), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(labels[cost_key])
    ax.set_ylabel("SLO attainment (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def load_results(paths: Iterable[Path]) -> list[dict]:
    """Read the records of several results.json files into one list.

    Records of one (trace, controller) from several files pool as more seeds
    when their seeds differ. When a file repeats a seed already read for that
    pair, all of that file's records of the pair get the file's directory
    name appended to the controller name, so they form their own row.
    """
    records: list[dict] = []
    seeds_read: dict[tuple[str, str], set[int]] = defaultdict(set)
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read results file {path}: {error}; pass a results.json "
                             "written by scripts/evaluate.py") from error
        if not isinstance(data, dict) or not isinstance(data.get("records"), list):
            raise ValueError(f"{path} has no 'records' list; pass a results.json written by scripts/evaluate.py")
        by_pair: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for record in data["records"]:
            by_pair[(str(record["trace"]), str(record["controller"]))].append(dict(record))
        for (trace, controller), rows in by_pair.items():
            seeds = {int(r["seed"]) for r in rows}
            if seeds & seeds_read[(trace, controller)]:
                controller = f"{controller} [{Path(path).resolve().parent.name}]"
                for row in rows:
                    row["controller"] = controller
            seeds_read[(trace, controller)] |= seeds
            records.extend(rows)
    return records


def write_report(records: list[Mapping], out_dir: Path, sources: Iterable[Path] = ()) -> list[Path]:
    """Write report.md (tables with 95 % CIs) and, per trace, cost USD and GPU-hours versus SLO PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Controller comparison", ""]
    listed = [str(p) for p in sources]
    if listed:
        lines += ["Results from: " + ", ".join(f"`{p}`" for p in listed), ""]
    lines += [render_markdown(list(records)), "## Cost versus SLO attainment", ""]
    written = []
    for trace in sorted({str(r["trace"]) for r in records}):
        subset = [r for r in records if str(r["trace"]) == trace]
        for key, label in (("cost_usd", "cost USD"), ("gpu_hours", "GPU-hours")):
            path = render_pareto(subset, out_dir / f"pareto_{_slug(trace)}_{key}.png", cost_key=key)
            written.append(path)
            lines += [f"![{trace}: {label} versus SLO attainment]({path.name})", ""]
    series = _copy_time_series(sources, out_dir)
    if series:
        lines += ["## Time series", "", "Load, replicas, TTFT p95 and GPUs held per controller, one plot per trace and seed.", ""]
        lines += [f"![{path.stem}]({path.name})" for path in series] + [""]
        written.extend(series)
    report = out_dir / "report.md"
    write_text_atomic(report, "\n".join(lines))
    return [report, *written]


def _copy_time_series(sources: Iterable[Path], out_dir: Path) -> list[Path]:
    """Copy the time-series PNGs that evaluation wrote beside each results.json into ``out_dir``.

    Two sources with plots of the same name get a numbered prefix, so that no plot is overwritten.
    """
    copied: list[Path] = []
    sources = [Path(p) for p in sources]
    for number, source in enumerate(sources):
        for plot in sorted(source.parent.glob("timeseries_*.png")):
            name = plot.name if len(sources) == 1 else f"{number + 1}_{plot.name}"
            target = out_dir / name
            if plot.resolve() != target.resolve():
                shutil.copyfile(plot, target)
            copied.append(target)
    return copied


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
