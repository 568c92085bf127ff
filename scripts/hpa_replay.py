"""Replay a recorded scenario through the HPA controller and print its decision per tick.

    python scripts/hpa_replay.py docs/examples/hpa_scenario.json          # table
    python scripts/hpa_replay.py docs/examples/hpa_scenario.json --json   # one JSON object per tick

The scenario format is described in docs/hpa_replay.md. Exit status 2 means the scenario or
its HPA manifest is invalid, and the message names the tick index and field.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.baselines.hpa import (  # noqa: E402
    Container,
    HorizontalPodAutoscaler,
    HpaController,
    HpaManifestError,
    HpaResult,
    MetricValues,
    Pod,
    PodMetricSample,
    QuantityError,
    load_hpa_manifest,
    milli_value,
)

CONTROLLER_FLAGS = (
    "sync_period_s",
    "tolerance",
    "downscale_stabilization_s",
    "cpu_initialization_period_s",
    "initial_readiness_delay_s",
    "configurable_tolerance",
)
POD_FIELDS = ("name", "count", "phase", "ready", "start_time", "ready_transition_time", "deleted", "requests",
              "containers", "metrics", "sample_timestamp", "sample_window")
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
TICK_FIELDS = ("t", "spec_replicas", "status_replicas", "write_failed", "pods", "object_metrics", "external_metrics")


class ScenarioError(ValueError):
    """Invalid scenario file. The message names the tick and field."""


def load_hpa(value: Any, base_dir: Path, scale_to_zero: bool) -> HorizontalPodAutoscaler:
    """Load the scenario's ``hpa``: an inline manifest object, a file path or YAML text."""
    if isinstance(value, str) and "\n" not in value and not value.lstrip().startswith("{"):
        path = Path(value) if Path(value).is_absolute() else base_dir / value
        return load_hpa_manifest(path, scale_to_zero=scale_to_zero)
    if isinstance(value, (str, Mapping)):
        return load_hpa_manifest(value, scale_to_zero=scale_to_zero)
    raise ScenarioError("field 'hpa': expected a manifest object, a file path or YAML text")


def build_controller(scenario: Mapping[str, Any], base_dir: Path) -> HpaController:
    """Create the controller from the scenario's ``hpa`` and optional ``controller`` flags."""
    if "hpa" not in scenario:
        raise ScenarioError("field 'hpa' is missing: add the HorizontalPodAutoscaler manifest or its path")
    flags = dict(scenario.get("controller") or {})
    scale_to_zero = bool(flags.pop("scale_to_zero", True))
    unknown = sorted(set(flags) - set(CONTROLLER_FLAGS))
    if unknown:
        raise ScenarioError(f"field 'controller': unknown flags {unknown}. Allowed: {', '.join(CONTROLLER_FLAGS)}, scale_to_zero")
    return HpaController(load_hpa(scenario["hpa"], base_dir, scale_to_zero), **flags)


def _quantity(value: Any, where: str) -> int:
    try:
        return milli_value(value)
    except QuantityError as error:
        raise ScenarioError(f"{where}: {error}") from error


def _number(tick: Mapping[str, Any], key: str, where: str, default: Optional[float] = None) -> float:
    value = tick.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"{where}.{key}: expected a number of seconds, got {value!r}")
    return float(value)


def _parse_pod_entry(entry: Any, t: float, where: str) -> tuple[int, dict[str, Any], dict[str, PodMetricSample]]:
    """Validate one pod entry and return its count, the Pod fields and its samples per metric."""
    if not isinstance(entry, Mapping):
        raise ScenarioError(f"{where}: expected an object")
    unknown = sorted(set(entry) - set(POD_FIELDS))
    if unknown:
        raise ScenarioError(f"{where}: unknown fields {unknown}. Allowed: {', '.join(POD_FIELDS)}")
    count = entry.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ScenarioError(f"{where}.count: expected a non-negative integer, got {count!r}")
    phase = entry.get("phase", "Running")
    if phase not in POD_PHASES:
        raise ScenarioError(f"{where}.phase: invalid phase {phase!r}. Use one of {', '.join(POD_PHASES)}")
    ready = entry.get("ready", True)
    if ready is not None and not isinstance(ready, bool):
        raise ScenarioError(f"{where}.ready: expected true, false or null (no Ready condition), got {ready!r}")

    if "start_time" not in entry:
        start: Optional[float] = t - 3600.0  # a pod that started long ago
    elif entry["start_time"] is None:
        start = None  # status.startTime not set
    else:
        start = _number(entry, "start_time", where)
    transition = _number(entry, "ready_transition_time", where, start if start is not None else t)

    requests = {name: _quantity(value, f"{where}.requests.{name}") for name, value in (entry.get("requests") or {}).items()}
    containers = []
    for index, container in enumerate(entry.get("containers") or []):
        container_where = f"{where}.containers[{index}]"
        if not isinstance(container, Mapping) or not container.get("name"):
            raise ScenarioError(f"{container_where}: expected an object with a name and requests")
        container_requests = {}
        for name, value in (container.get("requests") or {}).items():
            container_requests[name] = _quantity(value, f"{container_where}.requests.{name}")
        containers.append(Container(str(container["name"]), container_requests))

    timestamp = _number(entry, "sample_timestamp", where, t)
    window = _number(entry, "sample_window", where, 60.0)
    samples: dict[str, PodMetricSample] = {}
    for metric, value in (entry.get("metrics") or {}).items():
        metric_where = f"{where}.metrics.{metric}"
        if isinstance(value, Mapping):  # per-container values, for ContainerResource metrics
            per_container = {name: _quantity(v, f"{metric_where}.{name}") for name, v in value.items()}
            samples[metric] = PodMetricSample(sum(per_container.values()), timestamp, window, per_container)
        else:
            samples[metric] = PodMetricSample(_quantity(value, metric_where), timestamp, window)

    fields = dict(phase=phase, ready=ready, start_time_s=start, ready_transition_s=transition,
                  deleted=bool(entry.get("deleted", False)), requests=requests, containers=tuple(containers))
    return count, fields, samples


def parse_pods(entries: Any, t: float, where: str) -> tuple[list[Pod], dict[str, dict[str, PodMetricSample]]]:
    """Expand the tick's pod entries into pods and per-metric samples keyed by pod name."""
    if not isinstance(entries, list):
        raise ScenarioError(f"{where}: expected a list of pod objects")
    pods: list[Pod] = []
    names: set[str] = set()
    samples: dict[str, dict[str, PodMetricSample]] = {}
    for index, entry in enumerate(entries):
        count, fields, pod_samples = _parse_pod_entry(entry, t, f"{where}[{index}]")
        for _ in range(count):
            if count == 1 and "name" in entry:
                name = str(entry["name"])
            else:
                name = f"{entry.get('name') or 'pod'}-{len(pods)}"
            if name in names:
                raise ScenarioError(f"{where}[{index}].name: duplicate pod name {name!r}. Give each pod a unique name")
            names.add(name)
            pods.append(Pod(name=name, **fields))
            for metric, sample in pod_samples.items():
                samples.setdefault(metric, {})[name] = sample
    return pods, samples


def parse_tick(index: int, tick: Any, controller: HpaController, previous_replicas: Optional[int]) -> dict[str, Any]:
    """Turn one tick of the scenario into the arguments of ``HpaController.reconcile``."""
    where = f"tick {index}"
    if not isinstance(tick, Mapping):
        raise ScenarioError(f"{where}: expected an object")
    unknown = sorted(set(tick) - set(TICK_FIELDS))
    if unknown:
        raise ScenarioError(f"{where}: unknown fields {unknown}. Allowed: {', '.join(TICK_FIELDS)}")
    if "t" not in tick:
        raise ScenarioError(f"{where}.t: missing. Set the tick time in seconds")
    t = _number(tick, "t", where)
    spec = tick.get("spec_replicas", previous_replicas)
    if isinstance(spec, bool) or not isinstance(spec, int) or spec < 0:
        raise ScenarioError(f"{where}.spec_replicas: expected a non-negative integer (required on the first tick), got {spec!r}")
    status = tick.get("status_replicas", spec)
    if isinstance(status, bool) or not isinstance(status, int) or status < 0:
        raise ScenarioError(f"{where}.status_replicas: expected a non-negative integer, got {status!r}")

    pods, samples = parse_pods(tick.get("pods", []), t, f"{where}.pods")
    resource_names = {m.name for m in controller.hpa.metrics if m.type in ("Resource", "ContainerResource")}
    external: dict[str, list[int]] = {}
    for name, value in (tick.get("external_metrics") or {}).items():
        series = value if isinstance(value, list) else [value]
        external[name] = [_quantity(v, f"{where}.external_metrics.{name}") for v in series]
    values = MetricValues(
        resources={name: s for name, s in samples.items() if name in resource_names},
        pods={name: s for name, s in samples.items() if name not in resource_names},
        objects={name: _quantity(v, f"{where}.object_metrics.{name}") for name, v in (tick.get("object_metrics") or {}).items()},
        external=external,
    )
    return dict(now_s=t, scale_spec_replicas=spec, scale_status_replicas=status, pods=pods, metric_values=values,
                write_succeeded=not tick.get("write_failed", False))


def replay(scenario: Mapping[str, Any], base_dir: Path) -> list[dict[str, Any]]:
    """Run every tick and return one record per tick."""
    controller = build_controller(scenario, base_dir)
    ticks = scenario.get("ticks")
    if not isinstance(ticks, list) or not ticks:
        raise ScenarioError("field 'ticks': expected a non-empty list of tick objects")
    records = []
    replicas: Optional[int] = None
    for index, tick in enumerate(ticks):
        arguments = parse_tick(index, tick, controller, replicas)
        result = controller.reconcile(**arguments)
        replicas = result.desired_replicas if result.rescale and result.write_succeeded else result.current_replicas
        records.append(_record(index, arguments, result))
    return records


def _record(index: int, arguments: Mapping[str, Any], result: HpaResult) -> dict[str, Any]:
    return {
        "tick": index,
        "t": arguments["now_s"],
        "spec_replicas": arguments["scale_spec_replicas"],
        "status_replicas": arguments["scale_status_replicas"],
        "metric_desired_replicas": result.metric_desired_replicas,
        "desired_replicas": result.desired_replicas,
        "rescale": result.rescale,
        "write_succeeded": result.write_succeeded,
        "conditions": {c.type: c.reason for c in result.conditions},
        "error": result.error,
    }


def format_table(records: list[dict[str, Any]]) -> str:
    """Render the records as a fixed-width text table."""
    header = (f"{'tick':>4} {'t_s':>8} {'spec':>5} {'status':>6} {'metrics':>7} {'desired':>7}  "
              f"{'action':<12} {'AbleToScale':<20} {'ScalingLimited':<18} note")
    lines = [header]
    for r in records:
        proposal = "-" if r["metric_desired_replicas"] is None else str(r["metric_desired_replicas"])
        action = "hold"
        if r["rescale"]:
            action = "scale" if r["write_succeeded"] else "write failed"
        able = r["conditions"].get("AbleToScale", "-")
        limited = r["conditions"].get("ScalingLimited", "-")
        note = r["error"] or ""
        lines.append(f"{r['tick']:>4} {r['t']:>8g} {r['spec_replicas']:>5} {r['status_replicas']:>6} {proposal:>7} "
                     f"{r['desired_replicas']:>7}  {action:<12} {able:<20} {limited:<18} {note}".rstrip())
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Replay a scenario through the Kubernetes HPA controller port.")
    parser.add_argument("scenario", type=Path, help="scenario JSON file (format: docs/hpa_replay.md)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per tick instead of a table")
    args = parser.parse_args(argv)
    try:
        scenario = json.loads(args.scenario.read_text(encoding="utf-8"))
        if not isinstance(scenario, Mapping):
            raise ScenarioError("the scenario must be a JSON object with 'hpa' and 'ticks'")
        records = replay(scenario, args.scenario.resolve().parent)
    except (OSError, json.JSONDecodeError, ScenarioError, HpaManifestError) as error:
        print(f"error: {args.scenario}: {error}", file=sys.stderr)
        return 2
    if args.json:
        for record in records:
            print(json.dumps(record, sort_keys=True))
    else:
        print(format_table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
