"""Run the fuzz properties of the test suite for longer campaigns.

    python scripts/fuzz.py --minutes 3 --target azure        # one reader for three minutes
    python scripts/fuzz.py --minutes 1 --target all          # every property, one minute each
    python scripts/fuzz.py --list                            # the property names

The properties, their input strategies and checks come from
tests/test_fuzz_traces.py and tests/test_fuzz_promql.py, where the test suite
runs each of them with 50 examples. Here each target runs in batches of
``--batch`` examples with consecutive seeds until its time is up. Every
distinct failure (exception type and raising line) is logged with its
shrunk example, and a JSON summary per target is printed at the end. The
exit status is 1 when any target failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

log = logging.getLogger("fuzz")


def load_properties() -> dict[str, tuple[st.SearchStrategy, Callable[[Any], None]]]:
    """Return every fuzz property of the test suite by name."""
    import test_fuzz_traces

    properties = dict(test_fuzz_traces.PROPERTIES)
    try:
        import test_fuzz_promql
    except ImportError as error:
        log.warning("PromQL properties are unavailable: %s", error)
    else:
        properties.update(test_fuzz_promql.PROPERTIES)
    return properties


def failure_site(error: BaseException) -> str:
    """Return ``file:line`` of the frame that raised ``error``, the key that distinguishes failures."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}"


def run_target(name: str, strategy: st.SearchStrategy, check: Callable[[Any], None], minutes: float,
               batch: int, first_seed: int) -> dict[str, Any]:
    """Fuzz one property for ``minutes`` and return its summary: examples run and distinct failures."""
    examples = 0
    last_failing: list[Any] = []

    def counted(case: Any) -> None:
        nonlocal examples
        examples += 1
        try:
            check(case)
        except Exception:
            # Hypothesis replays the shrunk example last, so the last failing input is the minimal one.
            last_failing[:] = [case]
            raise

    failures: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + minutes * 60
    batch_seed = first_seed
    started = time.monotonic()
    while time.monotonic() < deadline:
        test = seed(batch_seed)(settings(
            max_examples=batch, deadline=None, database=None, suppress_health_check=list(HealthCheck),
            phases=[Phase.generate, Phase.shrink], print_blob=False, report_multiple_bugs=False,
        )(given(strategy)(counted)))
        try:
            test()
        except Exception as error:  # every failure is recorded, and the campaign goes on with the next seed
            site = failure_site(error)
            record = failures.setdefault(site, {
                "exception": type(error).__name__, "message": str(error)[:300], "site": site,
                "example": repr(last_failing[0])[:500] if last_failing else "?", "first_seed": batch_seed,
                "batches": 0,
            })
            record["batches"] += 1
            if record["batches"] == 1:
                log.error("%s: %s at %s on %s", name, record["exception"], site, record["example"])
        batch_seed += 1
    return {
        "target": name,
        "minutes": round((time.monotonic() - started) / 60, 2),
        "examples": examples,
        "batches": batch_seed - first_seed,
        "failures": list(failures.values()),
    }


def main() -> int:
    properties = load_properties()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock minutes per target (default 3)")
    parser.add_argument("--target", default="all", choices=["all", *properties],
                        help="property to fuzz, or all of them one after another (default all)")
    parser.add_argument("--batch", type=int, default=500, help="examples per Hypothesis run (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first batch; later batches add 1")
    parser.add_argument("--list", action="store_true", help="print the property names and exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if args.list:
        print("\n".join(properties))
        return 0
    if args.minutes <= 0 or args.batch < 1:
        parser.error(f"--minutes must be > 0 and --batch >= 1, got {args.minutes} and {args.batch}")

    targets = list(properties) if args.target == "all" else [args.target]
    summaries = []
    for name in targets:
        log.info("fuzzing %s for %.1f min", name, args.minutes)
        strategy, check = properties[name]
        summary = run_target(name, strategy, check, args.minutes, args.batch, args.seed)
        log.info("%s: %d examples, %d distinct failures", name, summary["examples"], len(summary["failures"]))
        summaries.append(summary)
    print(json.dumps(summaries, indent=2))
    return 1 if any(summary["failures"] for summary in summaries) else 0


if __name__ == "__main__":
    raise SystemExit(main())
