"""PromQL of the live signals: one batched query per signal family, and parsing of the results.

Each template returns one series per (namespace, deployment). Per-pod series
are joined to their Deployment with ``<<map>>``, the kube-state-metrics
ownership chain pod -> ReplicaSet -> Deployment (value 1 per pod), and
``<<window>>`` is the ``rate()`` range. The placeholders use ``<<name>>``
because Hydra would read ``${name}`` as one of its own interpolations.
Before the join each template takes ``max without (instance, job)``, so the
same target scraped by two jobs or two Prometheus replicas is not counted twice.

vLLM names are matched in both spellings, ``vllm:x`` and ``vllm_x``: a
Prometheus server that negotiates OpenMetrics with ``prometheus_client``
stores the colon as an underscore (observed with Debian's Prometheus 2.42
scraping ``prometheus_client`` 0.26). dcgm-exporter behind a ServiceMonitor
with ``honorLabels: false`` labels its pods ``exported_pod`` and
``exported_namespace``, which the GPU template renames to ``pod`` and
``namespace`` before the join.

``prometheus-api-client`` returns ``data.result`` of ``/api/v1/query``: a list
of ``{"metric": {labels}, "value": [unix_time, "string number"]}``. A scalar
result is the bare pair. Values are strings and may be ``"NaN"``, ``"+Inf"``
or ``"-Inf"``.

How each irregular case is handled (each one is counted in ``FamilyResult``):

* not a list, or an entry without ``value``: the family counts as failed;
* a series without ``namespace`` or ``deployment`` label: skipped (``unlabelled``);
* two series for one Deployment, from a template that does not aggregate
  away a label or from two Prometheus replicas behind one URL: the larger
  value wins (``duplicates``). For every family here the larger reading is
  the conservative one for scaling;
* an unparsable value: skipped (``invalid``);
* NaN and infinities are kept as floats, and ``live_signals.build_signals``
  decides per family what they mean.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

POD_TO_DEPLOYMENT = (
    'max by (namespace, pod, deployment) ('
    'label_replace(kube_pod_owner{owner_kind="ReplicaSet"}, "replicaset", "$1", "owner_name", "(.+)")'
    ' * on (namespace, replicaset) group_left (deployment) '
    'max by (namespace, replicaset, deployment) ('
    'label_replace(kube_replicaset_owner{owner_kind="Deployment"}, "deployment", "$1", "owner_name", "(.+)")))'
)


def _vllm(name: str) -> str:
    """Return a selector that matches both spellings of a vLLM metric name."""
    return '{__name__=~"vllm[:_]' + name + '"}'


def _per_deployment(aggregation: str, inner: str, *, by: str = "namespace, deployment") -> str:
    return (f"{aggregation} by ({by}) (max without (instance, job) ({inner})"
            " * on (namespace, pod) group_left (deployment) <<map>>)")


def _rate(name: str) -> str:
    return f"rate({_vllm(name)}[<<window>>])"


def _quantile(name: str) -> str:
    inner = _per_deployment("sum", _rate(f"{name}_bucket"), by="namespace, deployment, le")
    return f"histogram_quantile(0.95, {inner})"


_GPU = ('label_replace(label_replace(DCGM_FI_PROF_GR_ENGINE_ACTIVE{exported_pod!=""}, '
        '"pod", "$1", "exported_pod", "(.+)"), "namespace", "$1", "exported_namespace", "(.+)")')


@dataclass
class QueryTemplates:
    """One PromQL template per signal family; ``<<map>>`` and ``<<window>>`` are filled in at start.

    ``sample_time`` returns the timestamp of the newest vLLM sample per
    Deployment, from which the reader computes the age of the signals.
    """

    pod_to_deployment: str = POD_TO_DEPLOYMENT
    request_rate: str = _per_deployment("sum", _rate("request_success_total"))
    dropped_rate: str = _per_deployment(
        "sum", 'rate({__name__=~"vllm[:_]request_success_total", finished_reason="abort"}[<<window>>])')
    mean_input_tokens: str = (_per_deployment("sum", _rate("prompt_tokens_total")) + " / "
                              + _per_deployment("sum", _rate("request_success_total")))
    mean_output_tokens: str = (_per_deployment("sum", _rate("generation_tokens_total")) + " / "
                               + _per_deployment("sum", _rate("request_success_total")))
    waiting_requests: str = _per_deployment("sum", _vllm("num_requests_waiting"))
    running_requests: str = _per_deployment("sum", _vllm("num_requests_running"))
    kv_cache_usage: str = _per_deployment("avg", _vllm("kv_cache_usage_perc"))
    ttft_p95_s: str = _quantile("time_to_first_token_seconds")
    e2e_p95_s: str = _quantile("e2e_request_latency_seconds")
    gpu_utilization: str = _per_deployment("avg", _GPU)
    sample_time: str = _per_deployment("max", f"timestamp({_vllm('num_requests_running')})")


# Families read every tick, in query order; pod_to_deployment is a fragment, not a query.
FAMILIES: tuple[str, ...] = tuple(f.name for f in fields(QueryTemplates) if f.name != "pod_to_deployment")
_PLACEHOLDER = re.compile(r"<<(\w*)>>")


def render_queries(templates: QueryTemplates, *, window: str) -> dict[str, str]:
    """Return the final PromQL of every family; raise ValueError naming a template with an unknown placeholder."""
    if not re.fullmatch(r"\d+(ms|s|m|h)", window):
        raise ValueError(f"runtime.prometheus.rate_window {window!r} is invalid; write a duration such as 30s or 1m")
    mapping = {"map": templates.pod_to_deployment, "window": window}
    queries = {}
    for family in FAMILIES:
        text = getattr(templates, family)
        unknown = sorted(set(_PLACEHOLDER.findall(text)) - set(mapping))
        if unknown:
            raise ValueError(
                f"runtime.prometheus.queries.{family} has unknown placeholders {unknown}; "
                "use only <<map>> and <<window>>"
            )
        queries[family] = _PLACEHOLDER.sub(lambda match: mapping[match.group(1)], text)
    return queries


Key = tuple[str, str]


@dataclass
class FamilyResult:
    """Values of one signal family keyed by (namespace, deployment).

    ``evaluated_at`` is the query's evaluation time in Unix seconds.
    ``parse_vector`` takes it from the result itself (0 when the result was
    empty), and ``MetricsReader`` replaces it with the time it requested, which
    is the agent's own clock. ``error`` is set when the query failed or its
    result could not be used at all.
    """

    values: dict[Key, float] = field(default_factory=dict)
    evaluated_at: float = 0.0
    error: str = ""
    duplicates: int = 0
    unlabelled: int = 0
    invalid: int = 0

    @property
    def ok(self) -> bool:
        return not self.error


def parse_sample_value(raw: Any) -> float | None:
    """Return a sample value as float (NaN and infinities included), or None when it is not a number."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        try:
            return float(raw)
        except OverflowError:
            # An integer beyond the float range is no sample Prometheus writes.
            return None
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    special = {"nan": math.nan, "+inf": math.inf, "inf": math.inf, "-inf": -math.inf}
    if text.lower() in special:
        return special[text.lower()]
    try:
        return float(text)
    except ValueError:
        return None


def parse_vector(result: Any) -> FamilyResult:
    """Parse an instant-vector result into a FamilyResult (see the module docstring for the rules)."""
    parsed = FamilyResult()
    if not isinstance(result, list):
        parsed.error = f"expected an instant vector (a list of series), got {type(result).__name__}"
        return parsed
    for entry in result:
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), (list, tuple)) \
                or len(entry["value"]) != 2:
            parsed.error = f"series without a [time, value] pair: {str(entry)[:200]}"
            return parsed
        labels = entry.get("metric") or {}
        if not isinstance(labels, dict):
            parsed.unlabelled += 1
            continue
        namespace, deployment = labels.get("namespace"), labels.get("deployment")
        if not namespace or not deployment:
            parsed.unlabelled += 1
            continue
        timestamp = parse_sample_value(entry["value"][0])
        value = parse_sample_value(entry["value"][1])
        if value is None or timestamp is None or not math.isfinite(timestamp):
            parsed.invalid += 1
            continue
        parsed.evaluated_at = max(parsed.evaluated_at, timestamp)
        key = (str(namespace), str(deployment))
        if key in parsed.values:
            parsed.duplicates += 1
            previous = parsed.values[key]
            if math.isnan(previous) or (not math.isnan(value) and value > previous):
                parsed.values[key] = value
        else:
            parsed.values[key] = value
    return parsed
