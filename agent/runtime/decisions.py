"""Handling of a decision after the safety layer: the write, its Events, logs, metrics and the decision log.

Writes go allocation first, then replicas, so a scale that follows an
allocation change uses the resourceVersion the template patch returned. A
failed write is logged and counted and never ends the tick; the next tick
reads the cluster again and decides afresh. A write refused because the
Lease was lost in the meantime ends as "not_leader", and one whose
Deployment was deleted after the tick's read ends as "not_found".
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

from agent.runtime.cluster_reader import DeploymentState
from agent.runtime.kube_client import ConflictRetriesExhausted, KubeError, LeaseNotHeldError, NotFoundError
from agent.runtime.safety import SafeDecision, SafetyLayer
from agent.runtime.telemetry import AgentMetrics, DecisionLog, RepeatLimiter
from agent.runtime.writer import ManualEditDetected, Writer
from envs.cluster.catalog import Catalog

log = logging.getLogger(__name__)
LOGGED_SIGNALS = ("request_rate", "waiting_requests", "running_requests", "ttft_p95_s", "gpu_utilization",
                  "ready_replicas", "pending_replicas", "starting_replicas")


class DecisionRecorder:
    """Writes decisions and reports them; one instance per controller loop."""

    def __init__(self, *, writer: Writer, safety: SafetyLayer, telemetry: AgentMetrics, decision_log: DecisionLog,
                 catalog: Catalog) -> None:
        self.writer = writer
        self.safety = safety
        self.telemetry = telemetry
        self.decision_log = decision_log
        self.catalog = catalog
        self.repeats = RepeatLimiter()

    def _option_name(self, index: int | None) -> str:
        return self.catalog.options[index].name if index is not None else "unknown"

    def write(self, decision: SafeDecision, state: DeploymentState, *, now: float) -> str:
        """Write one decision; return "written" or what stopped it.

        The outcomes besides "written" are manual_edit, conflict, not_leader,
        not_found and "error <HTTP code>".
        """
        key = (decision.namespace, decision.name)
        resource_version = state.resource_version
        steps = []
        if decision.write_option:
            steps.append("allocation")
        if decision.write_replicas:
            steps.append("scale")
        for kind in steps:
            try:
                if kind == "allocation":
                    resource_version = self.writer.change_allocation(state, decision.option_index)
                    self.safety.record_write(key, replicas=state.spec_replicas, option_changed=True, now_s=now)
                    message = (f"allocation {self._option_name(state.option_index)} -> "
                               f"{self._option_name(decision.option_index)} ({decision.source})")
                    self.writer.event(state, "AllocationChanged", message=f"{message}; {decision.reason}".rstrip("; "))
                else:
                    self.safety.note_write_attempt(key, replicas=decision.replicas)
                    resource_version = self.writer.scale(state, decision.replicas, resource_version=resource_version)
                    self.safety.record_write(key, replicas=decision.replicas, option_changed=False, now_s=now)
                    limits = f", limited by {', '.join(decision.rules)}" if decision.rules else ""
                    message = f"replicas {state.spec_replicas} -> {decision.replicas} ({decision.source}{limits})"
                    self.writer.event(state, "Rescaled", message=f"{message}; {decision.reason}".rstrip("; "))
            except ManualEditDetected as error:
                self.safety.note_manual_edit(key, observed=error.observed, now_s=now)
                self.telemetry.safety_rules.labels(namespace=key[0], deployment=key[1], rule="manual_edit").inc()
                self.telemetry.writes.labels(kind=kind, result="manual_edit").inc()
                self.writer.event(state, "ManualEditDetected", kind="Warning",
                                  message=f"{error}; the agent backs off for "
                                          f"{self.safety.settings.manual_edit_backoff_s:.0f} s")
                return "manual_edit"
            except LeaseNotHeldError as error:
                self.telemetry.writes.labels(kind=kind, result="not_leader").inc()
                log.warning("%s/%s: %s write stopped: %s", key[0], key[1], kind, error)
                return "not_leader"
            except NotFoundError as error:
                self.telemetry.writes.labels(kind=kind, result="not_found").inc()
                log.warning("%s/%s: %s write failed because the object is gone (the Deployment was probably deleted "
                            "after this tick's read); nothing was changed: %s", key[0], key[1], kind, error)
                return "not_found"
            except ConflictRetriesExhausted as error:
                self.telemetry.writes.labels(kind=kind, result="conflict").inc()
                log.warning("%s/%s: %s write abandoned this tick: %s", key[0], key[1], kind, error)
                return "conflict"
            except KubeError as error:
                self.telemetry.writes.labels(kind=kind, result=f"error_{error.status}").inc()
                log.warning("%s/%s: %s write failed: %s", key[0], key[1], kind, error)
                return f"error {error.status}"
            self.telemetry.writes.labels(kind=kind, result="ok").inc()
        return "written"

    def fallback_transition(self, state: DeploymentState, transition: str, *, reason: str, events: bool) -> None:
        """Log, count and post an Event when a Deployment enters or leaves the fallback rule."""
        if not transition:
            return
        self.telemetry.fallback_transitions.labels(namespace=state.namespace, deployment=state.name,
                                                   transition=transition).inc()
        if transition == "entered":
            log.warning("%s/%s: signals unhealthy (%s); switching to the HPA fallback rule", state.namespace,
                        state.name, reason)
            if events:
                self.writer.event(state, "FallbackActive", kind="Warning",
                                  message=f"signals unhealthy ({reason}); using the HPA rule")
        else:
            log.info("%s/%s: signals healthy again; back to the policy", state.namespace, state.name)
            if events:
                self.writer.event(state, "FallbackRecovered", message="signals healthy again; back to the policy")

    def refusal(self, state: DeploymentState, reason: str, *, events: bool) -> None:
        """Report a Deployment the agent will not manage; repeated each tick in metrics, at most every 5 min in logs."""
        if self.repeats.allow(("refusal", state.key, reason)):
            log.warning("%s/%s: not managed this tick: %s", state.namespace, state.name, reason)
            if events:
                self.writer.event(state, "ManagementRefused", message=reason, kind="Warning")

    def export(self, tick: int, decisions: list[SafeDecision], *, inputs: Mapping[Any, Any],
               written: Mapping[tuple[str, str], str], now: float) -> None:
        """Count every decision, set the target gauges, log changes and append the decision log."""
        for decision in decisions:
            key = (decision.namespace, decision.name)
            item = inputs.get(key)
            current = item.state.spec_replicas if item is not None else decision.replicas
            action = "scale_up" if decision.replicas > current else "scale_down" if decision.replicas < current \
                else "hold"
            labels = {"namespace": key[0], "deployment": key[1]}
            self.telemetry.decisions.labels(**labels, source=decision.source, action=action).inc()
            if decision.write_option:
                self.telemetry.decisions.labels(**labels, source=decision.source, action="allocation_change").inc()
            self.telemetry.target_replicas.labels(**labels).set(decision.replicas)
            self.telemetry.target_option.labels(**labels).set(decision.option_index)
            outcome = written.get(key, "unchanged")
            current_option = item.state.option_index if item is not None else decision.option_index
            if decision.changes:
                log.info("tick %d %s/%s: %s %d -> %d replicas, option %s -> %s (%s)%s", tick, key[0], key[1],
                         decision.source, current, decision.replicas, self._option_name(current_option),
                         self._option_name(decision.option_index), outcome,
                         f" rules={decision.rules}" if decision.rules else "")
            signals = {}
            if item is not None:
                for name in LOGGED_SIGNALS:
                    value = float(getattr(item.signals, name))
                    signals[name] = round(value, 4) if math.isfinite(value) else None
            self.decision_log.write({
                "time": now, "tick": tick, "namespace": key[0], "deployment": key[1], "source": decision.source,
                "current_replicas": current, "replicas": decision.replicas,
                "current_option": self._option_name(current_option),
                "option": self._option_name(decision.option_index), "rules": decision.rules,
                "reason": decision.reason, "outcome": outcome,
                "health": item.health.reason if item is not None else "", "signals": signals,
            })
