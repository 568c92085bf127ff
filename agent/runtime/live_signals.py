"""The live signals of one tick: the PromQL families from Prometheus, then WorkloadSignals per Deployment.

Every tick sends one instant query per signal family (``promql.FAMILIES``),
all evaluated at the same timestamp so that the families describe the same
moment. The number of queries does not grow with the number of Deployments.
The client's own retries are off: a failed tick falls back at once and the
next tick tries again, instead of a tick blocking for several backoff rounds.
Each query waits at most ``timeout_s``, and all queries of one tick together
at most ``read_budget_s``. After a timeout, a connection failure or the end
of the budget, the remaining families are marked failed without being sent.

``build_signals`` adds the API reading and judges the signals' health.
A Deployment's signals are healthy when every load family the policy needs
(``CRITICAL``) has a finite value and the newest vLLM sample is fresh.
Otherwise the safety layer switches it to the HPA fallback.

Freshness is judged against the evaluation time the reader requested, which
is the agent's own clock:

* a sample older than ``staleness_s`` is stale;
* a sample up to ``future_tolerance_s`` ahead of the agent's clock counts as
  current (age 0), because two hosts' clocks differ by a little;
* a sample further ahead, or a sample time that is NaN or infinite, is unhealthy.

NOTE: an instant query returns only samples at or before the requested
time. When the Prometheus host's clock runs ahead of the agent's,
samples therefore look fresh while they are as old as the skew, and the agent
cannot tell. Future sample times reach the agent only from other servers of
the Prometheus API.

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
import urllib3
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from agent.runtime.cluster_reader import DeploymentState
from agent.runtime.promql import FAMILIES, FamilyResult, parse_vector, render_queries
from agent.runtime.settings import PrometheusSettings
from agent.runtime.telemetry import redact_secrets, redact_url, url_secrets
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


def _freshness(sample: FamilyResult | None, key: tuple[str, str], *, staleness_s: float,
               future_tolerance_s: float) -> tuple[str, float]:
    """Return (unhealthy reason or "", age in seconds) of the Deployment's newest vLLM sample."""
    if sample is None or not sample.ok or key not in sample.values:
        return "no sample time for the Deployment's vLLM pods", 0.0
    newest = sample.values[key]
    if not math.isfinite(newest):
        return f"invalid sample time {newest} for the Deployment's vLLM pods", 0.0
    ahead = newest - sample.evaluated_at
    if ahead > future_tolerance_s:
        return (f"clock skew: newest sample is {ahead:.0f} s ahead of the agent's clock (tolerance "
                f"{future_tolerance_s:.0f} s); check the clocks of the Prometheus and agent hosts"), 0.0
    age = max(-ahead, 0.0)
    if age > staleness_s:
        return f"stale: newest sample is {age:.0f} s old (limit {staleness_s:.0f} s)", age
    return "", age


def build_signals(
    state: DeploymentState,
    families: Mapping[str, FamilyResult],
    *,
    free_slots: Mapping[str, float],
    quota_headroom: Sequence[float],
    staleness_s: float,
    inf_latency_s: float,
    now_s: float,
    future_tolerance_s: float = 30.0,
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
        reason, age = _freshness(families.get("sample_time"), key, staleness_s=staleness_s,
                                 future_tolerance_s=future_tolerance_s)

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


def _request_cause(error: BaseException) -> BaseException:
    """Return the urllib3 error inside a requests error, when there is one.

    With retries off, requests reports a read timeout as a ConnectionError
    around urllib3's MaxRetryError, whose ``reason`` is the ReadTimeoutError.
    """
    inner = error.args[0] if error.args else None
    reason = getattr(inner, "reason", None)
    return reason if isinstance(reason, BaseException) else error


def _is_timeout(error: BaseException) -> bool:
    # urllib3 2.x derives NewConnectionError (connection refused) from ConnectTimeoutError, so exclude it.
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        return False
    return isinstance(error, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError))


class MetricsReader:
    """Queries Prometheus once per family per tick.

    A failed query becomes a FamilyResult with ``error`` set instead of an
    exception. Messages name the URL without its password, and any credential
    of the reader that an error text repeats is replaced by ``***``.
    """

    def __init__(self, settings: PrometheusSettings, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.queries = render_queries(settings.queries, window=settings.rate_window)
        self.clock = clock
        self.monotonic = monotonic
        self.display_url = redact_url(settings.url)
        self.secrets = url_secrets(settings.url)
        headers = None
        if settings.bearer_token_file:
            token = Path(settings.bearer_token_file).read_text(encoding="utf-8").strip()
            headers = {"Authorization": f"Bearer {token}"}
            self.secrets.append(token)
        # requests takes the user and password of the URL as HTTP basic auth.
        self._client = PrometheusConnect(url=settings.url, headers=headers, disable_ssl=not settings.verify_tls,
                                         retry=Retry(total=0, raise_on_status=False))
        self.queries_sent = 0

    def close(self) -> None:
        self._client._session.close()

    def _describe(self, error: BaseException) -> str:
        """Return the error's root cause as text, without the query URL requests puts around it."""
        cause = _request_cause(error)
        return redact_secrets(f"{type(cause).__name__}: {cause}", self.secrets)

    def read(self) -> dict[str, FamilyResult]:
        """Return one FamilyResult per family; a failed family carries ``error`` and no values.

        After a timeout or a connection failure the remaining families are
        marked failed without being sent, so a slow or unreachable Prometheus
        costs one timeout per tick, not one per family. The same happens when
        the tick's ``read_budget_s`` runs out.
        """
        evaluate_at = self.clock()
        deadline = self.monotonic() + self.settings.read_budget_s
        results: dict[str, FamilyResult] = {}
        skipped = ""
        for family in FAMILIES:
            if skipped:
                results[family] = FamilyResult(error=skipped)
                continue
            # NOTE: requests applies the timeout to the connection and to each read from the socket, so a
            # server that sends its response a few bytes at a time can hold one query longer than this.
            timeout = min(self.settings.timeout_s, deadline - self.monotonic())
            if timeout <= 0:
                skipped = (f"not sent: the {self.settings.read_budget_s:g} s budget for one tick's queries to "
                           f"Prometheus at {self.display_url} ran out (runtime.prometheus.read_budget_s)")
                results[family] = FamilyResult(error=skipped)
                continue
            try:
                self.queries_sent += 1
                raw = self._client.custom_query(self.queries[family], params={"time": f"{evaluate_at:.3f}"},
                                                timeout=timeout)
            except requests.exceptions.RequestException as error:
                if _is_timeout(_request_cause(error)):
                    skipped = f"query {family} to Prometheus at {self.display_url} timed out after {timeout:.3g} s"
                else:
                    skipped = f"Prometheus at {self.display_url} is unreachable: {self._describe(error)}"
                results[family] = FamilyResult(error=skipped)
                continue
            except (PrometheusApiClientException, ValueError, KeyError, TypeError) as error:
                # TypeError: a 200 response whose JSON body is not an object.
                message = f"query {family} failed: {self._describe(error)}"
                results[family] = FamilyResult(error=message)
                log.warning("Prometheus at %s: %s", self.display_url, message)
                continue
            parsed = parse_vector(raw)
            # Prometheus evaluates at the requested time, so freshness is judged on the agent's clock.
            parsed.evaluated_at = evaluate_at
            results[family] = parsed
        if skipped:
            log.warning("%s; %d of %d families not read this tick", skipped,
                        sum(not r.ok for r in results.values()), len(FAMILIES))
        return results
