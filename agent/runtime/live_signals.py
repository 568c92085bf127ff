"""The live signals of one tick: the PromQL families from Prometheus, then WorkloadSignals per Deployment.

Every tick sends one instant query per signal family (``promql.FAMILIES``),
all evaluated at the same timestamp so that the families describe the same
moment. The number of queries does not grow with the number of Deployments.
The client's own retries are off: a failed tick falls back at once and the
next tick tries again, instead of a tick blocking for several backoff rounds.

``build_signals`` adds the API reading and judges the signals' health.
A Deployment's signals are healthy when every load family the policy needs
(``CRITICAL``) has a finite value and the newest vLLM sample is younger than
``staleness_s``. Otherwise the safety layer switches it to the HPA fallback.

Substitutions, each recorded so the loop can log and count it:

* no series for a Deployment without Ready pods: 0 (no pod exports anything);
* NaN latency quantile or token mean at zero request rate: 0 (nothing to
  measure; the encoder then assumes its default token mix);
* +Inf latency quantile (the quantile fell in the +Inf bucket): ``inf_latency_s``;
* a negative value: 0;
* a missing or NaN secondary family (``SECONDARY``): 0, without a fallback.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from agent.runtime.cluster_reader import DeploymentState
from agent.runtime.promql import FAMILIES, FamilyResult, parse_vector, render_queries
from agent.runtime.settings import PrometheusSettings
from envs.signals import WorkloadSignals

log = logging.getLogger(__name__)

CRITICAL = ("request_rate", "waiting_requests", "running_requests", "ttft_p95_s", "mean_input_tokens",
            "mean_output_tokens")
SECONDARY = ("e2e_p95_s", "kv_cache_usage", "gpu_utilization", "dropped_rate")
LATENCY = ("ttft_p95_s", "e2e_p95_s")
PER_REQUEST = ("ttft_p95_s", "e2e_p95_s", "mean_input_tokens", "mean_output_tokens")


@dataclass
class SignalHealth:
    """Verdict on one Deployment's signals; ``reason`` describes the problem when ``ok`` is False."""

    ok: bool
    reason: str = ""
    age_s: float = 0.0
    substitutions: list[tuple[str, str]] = field(default_factory=list)
    # Family values before missing secondary families became 0; the fallback rule reads these.
    raw: dict[str, float] = field(default_factory=dict)


def _value(family: str, result: FamilyResult | None, *, key: tuple[str, str], ready: int) -> tuple[float, str]:
    """Return (value, substitution reason or "") for one family of one Deployment."""
    if result is None or not result.ok:
        return math.nan, ""
    if key not in result.values:
        return (0.0, "no series, no Ready pod") if ready == 0 else (math.nan, "")
    return result.values[key], ""


def build_signals(
    state: DeploymentState,
    families: Mapping[str, FamilyResult],
    *,
    free_slots: Mapping[str, float],
    quota_headroom: Sequence[float],
    staleness_s: float,
    inf_latency_s: float,
    now_s: float,
) -> tuple[WorkloadSignals, SignalHealth]:
    """Return the Deployment's WorkloadSignals and their health (see the module docstring)."""
    key = state.key
    substitutions: list[tuple[str, str]] = []
    values: dict[str, float] = {}
    for family in CRITICAL + SECONDARY:
        value, note = _value(family, families.get(family), key=key, ready=state.ready)
        if note:
            substitutions.append((family, note))
        values[family] = value

    rate = values["request_rate"]
    for family in CRITICAL + SECONDARY:
        value = values[family]
        if math.isnan(value) and family in PER_REQUEST and rate == 0.0:
            values[family], note = 0.0, "NaN at zero request rate"
        elif math.isinf(value) and value > 0 and family in LATENCY:
            values[family], note = inf_latency_s, "+Inf quantile"
        elif math.isinf(value):
            values[family], note = math.nan, ""
        elif value < 0:
            values[family], note = 0.0, "negative value"
        else:
            continue
        if note:
            substitutions.append((family, note))

    problems = [f for f in CRITICAL if not math.isfinite(values[f])]
    raw = dict(values)
    for family in SECONDARY:
        if not math.isfinite(values[family]):
            values[family] = 0.0
            substitutions.append((family, "secondary signal missing"))

    failed = [name for name, result in families.items() if not result.ok]
    age = 0.0
    reason = ""
    if failed and len(failed) == len(families):
        reason = f"Prometheus unavailable: {families[failed[0]].error}"
    elif problems:
        reason = f"missing or NaN: {', '.join(problems)}"
    elif state.ready > 0:
        sample = families.get("sample_time")
        if sample is None or not sample.ok or key not in sample.values:
            reason = "no sample time for the Deployment's vLLM pods"
        else:
            age = max(sample.evaluated_at - sample.values[key], 0.0)
            if age > staleness_s:
                reason = f"stale: newest sample is {age:.0f} s old (limit {staleness_s:.0f} s)"

    signals = WorkloadSignals(
        name=state.name,
        namespace=state.namespace,
        desired_replicas=state.spec_replicas,
        ready_replicas=state.ready,
        pending_replicas=state.pending,
        starting_replicas=state.starting,
        terminating_replicas=state.terminating,
        option_index=state.option_index if state.option_index is not None else 0,
        free_slots=dict(free_slots),
        quota_headroom_pods=tuple(quota_headroom),
        timestamp_s=now_s,
        **values,
    )
    return signals, SignalHealth(ok=not reason, reason=reason, age_s=age, substitutions=substitutions, raw=raw)


class MetricsReader:
    """Queries Prometheus once per family per tick.

    A failed query becomes a FamilyResult with ``error`` set instead of an exception.
    """

    def __init__(self, settings: PrometheusSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.queries = render_queries(settings.queries, window=settings.rate_window)
        self.clock = clock
        headers = None
        if settings.bearer_token_file:
            token = Path(settings.bearer_token_file).read_text(encoding="utf-8").strip()
            headers = {"Authorization": f"Bearer {token}"}
        self._client = PrometheusConnect(url=settings.url, headers=headers, disable_ssl=not settings.verify_tls,
                                         retry=Retry(total=0, raise_on_status=False))
        self.queries_sent = 0

    def close(self) -> None:
        self._client._session.close()

    def read(self) -> dict[str, FamilyResult]:
        """Return one FamilyResult per family; a failed family carries ``error`` and no values.

        After a connection failure the remaining families are marked failed
        without being sent, so an unreachable Prometheus costs one timeout per
        tick, not one per family.
        """
        evaluate_at = self.clock()
        results: dict[str, FamilyResult] = {}
        unreachable = ""
        for family in FAMILIES:
            if unreachable:
                results[family] = FamilyResult(error=unreachable)
                continue
            try:
                self.queries_sent += 1
                raw = self._client.custom_query(self.queries[family], params={"time": f"{evaluate_at:.3f}"},
                                                timeout=self.settings.timeout_s)
            except requests.exceptions.RequestException as error:
                unreachable = f"Prometheus at {self.settings.url} is unreachable: {type(error).__name__}: {error}"
                results[family] = FamilyResult(error=unreachable)
                continue
            except (PrometheusApiClientException, ValueError, KeyError) as error:
                results[family] = FamilyResult(error=f"query {family} failed: {error}")
                log.warning("Prometheus query %s failed: %s", family, error)
                continue
            parsed = parse_vector(raw)
            if parsed.evaluated_at == 0.0:
                parsed.evaluated_at = evaluate_at
            results[family] = parsed
        if unreachable:
            log.warning("%s; %d of %d families not read this tick", unreachable,
                        sum(not r.ok for r in results.values()), len(FAMILIES))
        return results
