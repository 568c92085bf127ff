"""Render a comparison report from one or more evaluation results.

    python scripts/report.py                                    # the newest outputs/evaluate/*/results.json
    python scripts/report.py outputs/evaluate/A/results.json outputs/evaluate/B/results.json --out outputs/report

Writes report.md (one table per trace: mean and 95 % confidence interval over
seeds for every controller) and, per trace, pareto_<trace>_cost_usd.png and
pareto_<trace>_gpu_hours.png (cost versus SLO attainment) into the output
folder, copies the time-series plots that evaluation wrote beside each
results.json, and prints the tables.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.report import load_results, render_markdown, write_report  # noqa: E402

log = logging.getLogger("report")
REPO = Path(__file__).resolve().parent.parent


def newest_results(root: Path) -> Path:
    """Return the most recently written results.json under ``root``."""
    found = sorted(root.glob("*/results.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no results.json under {root}; run scripts/evaluate.py first or pass a path")
    return found[-1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compare controllers from evaluation results.json files.")
    parser.add_argument("results", nargs="*", type=Path,
                        help="results.json files (default: the newest under outputs/evaluate)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "report",
                        help="folder for report.md and the PNG plots (default: outputs/report)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        paths = args.results or [newest_results(REPO / "outputs" / "evaluate")]
        records = load_results(paths)
    except (FileNotFoundError, ValueError) as error:
        log.error("%s", error)
        return 2
    if not records:
        log.error("the results files %s contain no records; evaluate at least one controller", [str(p) for p in paths])
        return 2
    written = write_report(records, args.out, sources=paths)
    print(render_markdown(records))
    print(f"report written to {written[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
