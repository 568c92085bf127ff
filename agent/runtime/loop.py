"""The controller loop: a fixed list of phases per tick, each timed into a histogram.

    read_cluster -> read_metrics -> build_signals -> decide -> safety -> write -> export

When ``read_cluster`` fails because the Kubernetes API is unavailable, the
tick ends with a hold for every Deployment. ``decide`` runs the policy over
all configured Deployments at once. A Deployment whose signals are unhealthy
gets the HPA fallback instead. The safety phase keeps a Deployment unchanged
when another autoscaler targets it or its allocation matches no catalog option.

Nothing is written in dry-run mode or without the Lease. The write phase
re-reads the Lease before its first write (``LeaderElector.confirm``) and
checks it again before each Deployment, and the Kubernetes client rejects
every write request once the Lease is gone, so a Lease lost after the
signals were read stops the writes of that tick. After a gap in leadership
the safety layer drops its record of this replica's writes, because the
replica that led in between may have scaled the Deployments. Once ``run``
is told to stop, the write phase finishes the Deployment it is writing and
starts no other write.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

from agent.controllers.base import Controller
from agent.runtime.cluster_reader import ClusterReader, ClusterState, DeploymentState
from agent.runtime.decisions import DecisionRecorder
from agent.runtime.kube_client import KubeError
from agent.runtime.leader import LeaderElector
from agent.runtime.safety import FallbackRule, FallbackTracker, Observation, Proposal, SafeDecision, SafetyLayer
from agent.runtime.settings import RuntimeSettings
from agent.runtime.live_signals import CRITICAL, MetricsReader, SignalHealth, build_signals
from agent.runtime.telemetry import AgentMetrics, RepeatLimiter
from agent.runtime.writer import Writer
from envs.cluster.spec import ClusterSpec
from envs.observation import EncoderContext
from envs.signals import WorkloadSignals, batch_signals

log = logging.getLogger(__name__)
PHASES = ("read_cluster", "read_metrics", "build_signals", "decide", "safety", "write", "export")


@dataclasses.dataclass
class RowInput:
    """One managed Deployment's inputs to the decide and safety phases."""

    row: int
    state: DeploymentState
    signals: WorkloadSignals
    health: SignalHealth


class ControllerLoop:
    """Runs ticks until stopped; every collaborator is passed in, so tests can swap any of them."""

    def __init__(self, *, settings: RuntimeSettings, cluster: ClusterSpec, controller: Controller,
                 reader: ClusterReader, metrics: MetricsReader, writer: Writer, safety: SafetyLayer,
                 fallback: FallbackRule, leader: LeaderElector | None, telemetry: AgentMetrics,
                 recorder: DecisionRecorder, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.cluster = cluster
        self.controller = controller
        self.reader = reader
        self.metrics = metrics
        self.writer = writer
        self.safety = safety
        self.fallback = fallback
        self.leader = leader
        self.telemetry = telemetry
        self.recorder = recorder
        self.clock = clock
        self.ctx = EncoderContext.from_cluster(cluster)
        self.rows = {(d.namespace, d.name): i for i, d in enumerate(cluster.deployments)}
        names = [d.name for d in cluster.deployments]
        controller.reset(self.ctx, names, cluster.tick_s)
        fallback.reset(self.ctx, names, tick_s=cluster.tick_s, slot_kinds=cluster.catalog.slot_kinds)
        self.tracker = FallbackTracker(settings.safety.recover_after_ticks)
        self.repeats = RepeatLimiter()
        self.tick_number = 0
        self.last_state = ClusterState()
        self.last_decisions: list[SafeDecision] = []
        # Replicas and option written this tick, so a hold during a later API outage reports them.
        self.written: dict[tuple[str, str], tuple[int, int]] = {}
        # Set by run(); once it is set, the write phase starts no further writes.
        self.stop_event: threading.Event | None = None
        self._leading: bool | None = None
        self._seen_transitions = 0
        telemetry.dry_run.set(1.0 if settings.dry_run else 0.0)

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.telemetry.phase_seconds.labels(phase=name).observe(time.perf_counter() - started)

    def can_write(self) -> bool:
        """Return whether this tick may write: not a dry run, and the Lease is held (or election is off)."""
        leader = self.leader.is_leader() if self.leader is not None else not self.settings.dry_run
        self.telemetry.leader.set(1.0 if leader else 0.0)
        if self.leader is not None:
            self._note_leadership(leader)
        return leader and not self.settings.dry_run

    def _note_leadership(self, leader: bool) -> None:
        """Log when writing stops or resumes, and forget this replica's writes after a gap in leadership."""
        if leader != self._leading:
            if leader:
                log.info("tick %d: this replica holds the Lease; decisions are written", self.tick_number)
            else:
                log.warning("tick %d: this replica does not hold the Lease %s/%s; decisions are computed but not "
                            "written", self.tick_number, self.leader.settings.namespace, self.leader.settings.name)
            self._leading = leader
        if self.leader.transitions != self._seen_transitions:
            # The Lease was (re)acquired; another replica may have scaled the Deployments meanwhile.
            self._seen_transitions = self.leader.transitions
            self.safety.forget_writes()

    def run(self, stop: threading.Event) -> None:
        """Tick every ``interval_s`` until ``stop`` is set or ``max_ticks`` ticks have run."""
        self.stop_event = stop
        log.info("controller loop started: %d Deployments configured, tick every %.3g s, dry-run %s",
                 len(self.rows), self.settings.interval_s, self.settings.dry_run)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - one bad tick must not end the agent; it is logged and counted
                self.telemetry.fallback_ticks.labels(namespace="", deployment="", reason="tick_error").inc()
                log.exception("tick %d failed; holding until the next tick", self.tick_number)
            if self.settings.max_ticks and self.tick_number >= self.settings.max_ticks:
                break
            stop.wait(max(self.settings.interval_s - (time.perf_counter() - started), 0.0))
        log.info("controller loop stopped after %d ticks", self.tick_number)

    def tick(self) -> list[SafeDecision]:
        self.tick_number += 1
        started = time.perf_counter()
        now = self.clock()

        with self._phase("read_cluster"):
            try:
                state = self.reader.read()
            except KubeError as error:
                return self._hold_everything(f"Kubernetes API unavailable: {error}", now)
        self.last_state = state
        self.written.clear()
        # Before the safety phase, so that a leadership gap resets the manual-edit memory first.
        self.can_write()

        with self._phase("read_metrics"):
            families = self.metrics.read()
        failed = sum(not result.ok for result in families.values())
        if failed:
            self.telemetry.api_errors.labels(api="prometheus", code="query_failed").inc(failed)

        with self._phase("build_signals"):
            inputs = self._build_inputs(state, families, now=now)
        with self._phase("decide"):
            proposals = self._decide(inputs, now)
        with self._phase("safety"):
            decisions = self._apply_safety(inputs, proposals, state=state, now=now)
        with self._phase("write"):
            written = self._write(decisions, inputs, now=now)
        with self._phase("export"):
            self.recorder.export(self.tick_number, decisions, inputs=inputs, written=written, now=now)

        self.telemetry.tick_seconds.observe(time.perf_counter() - started)
        self.telemetry.last_tick.set(now)
        self.telemetry.managed.set(len(inputs))
        self.last_decisions = decisions
        return decisions

    def _hold_everything(self, reason: str, now: float) -> list[SafeDecision]:
        if self.repeats.allow(("kubernetes_unavailable",)):
            log.warning("tick %d: %s; holding every Deployment", self.tick_number, reason)
        decisions = []
        for key, previous in self.last_state.deployments.items():
            self.telemetry.fallback_ticks.labels(namespace=key[0], deployment=key[1],
                                                 reason="kubernetes_unavailable").inc()
            replicas, option = self.written.get(key, (previous.spec_replicas, previous.option_index or 0))
            decisions.append(SafeDecision(namespace=key[0], name=key[1], replicas=replicas, option_index=option,
                                          source="hold", rules=["api_unavailable"], reason=reason))
        self.recorder.export(self.tick_number, decisions, inputs={}, written={}, now=now)
        self.last_decisions = decisions
        return decisions

    def _build_inputs(self, state: ClusterState, families: dict, *, now: float) -> dict[tuple[str, str], RowInput]:
        inputs = {}
        prometheus = self.settings.prometheus
        for key, deployment in state.deployments.items():
            signals, health = build_signals(
                deployment, families, free_slots=state.free_slots,
                quota_headroom=state.quota_headroom.get(key[0], [math.inf] * self.ctx.n_options),
                staleness_s=prometheus.staleness_s, inf_latency_s=prometheus.inf_latency_s,
                future_tolerance_s=prometheus.future_tolerance_s, now_s=now)
            for family, why in health.substitutions:
                self.telemetry.substitutions.labels(family=family, reason=why).inc()
                if self.repeats.allow(("substitution", key, family, why)):
                    log.info("%s/%s: %s replaced by a default (%s)", key[0], key[1], family, why)
            inputs[key] = RowInput(self.rows[key], deployment, signals, health)
        return inputs

    def _decide(self, inputs: dict[tuple[str, str], RowInput], now: float) -> dict[tuple[str, str], Proposal]:
        records: list[WorkloadSignals] = []
        raws: list[dict[str, float]] = []
        for spec in self.cluster.deployments:
            key = (spec.namespace, spec.name)
            if key in inputs:
                records.append(inputs[key].signals)
                raws.append(inputs[key].health.raw)
            else:
                # A configured Deployment that is not managed this tick keeps its row with neutral signals.
                option = self.cluster.catalog.option_index(spec.initial_option)
                records.append(WorkloadSignals(name=spec.name, namespace=spec.namespace,
                                               desired_replicas=spec.min_replicas, option_index=option))
                raws.append({})
        clean = []
        for record in records:
            missing = {f: 0.0 for f in CRITICAL if not math.isfinite(float(getattr(record, f)))}
            clean.append(dataclasses.replace(record, **missing) if missing else record)
        batch = batch_signals(clean, self.cluster.catalog.slot_kinds, self.ctx.n_options)
        try:
            replicas, options = self.controller.decide(batch, now_s=now)
            policy_error = ""
        except Exception as error:  # noqa: BLE001 - a policy failure falls back; it is logged and counted
            replicas = options = np.zeros(len(records), dtype=np.int64)
            policy_error = f"policy failed: {type(error).__name__}: {error}"
            log.exception("tick %d: the policy failed; every Deployment uses the fallback rule", self.tick_number)
        fallback = self.fallback.propose(records, raws, now_s=now)

        proposals = {}
        for key, item in inputs.items():
            reason = item.health.reason or policy_error
            active, transition = self.tracker.update(key, healthy=not reason)
            self.recorder.fallback_transition(item.state, transition, reason=reason, events=self.can_write())
            self.telemetry.fallback_active.labels(namespace=key[0], deployment=key[1]).set(1.0 if active else 0.0)
            if active:
                reason = reason or "recovering: waiting for healthy ticks"
                self.telemetry.fallback_ticks.labels(namespace=key[0], deployment=key[1],
                                                     reason=reason.split(":")[0]).inc()
                target, explanation = fallback[item.row]
                proposals[key] = Proposal(target, item.state.option_index or 0, "fallback", f"{explanation}; {reason}")
            else:
                proposals[key] = Proposal(int(replicas[item.row]), int(options[item.row]), "policy")
        return proposals

    def _apply_safety(self, inputs: dict, proposals: dict, *, state: ClusterState, now: float) -> list[SafeDecision]:
        decisions = []
        for key, item in inputs.items():
            spec = self.cluster.deployments[item.row]
            deployment = item.state
            observation = Observation(
                spec_replicas=deployment.spec_replicas, option_index=deployment.option_index or 0,
                pending_replicas=deployment.pending, min_replicas=spec.min_replicas, max_replicas=spec.max_replicas,
                free_slots=state.free_slots, quota_headroom=state.quota_headroom.get(key[0], []))
            if key in state.autoscaled:
                decision = self.safety.hold(key, observation, rule="autoscaler_conflict",
                                            reason=f"{state.autoscaled[key]} also scales this Deployment; "
                                                   "remove it or the gpu-autoscaler label")
                self.recorder.refusal(deployment, decision.reason, events=self.can_write())
            elif deployment.option_index is None:
                decision = self.safety.hold(key, observation, rule="unknown_allocation",
                                            reason=deployment.option_error)
                self.recorder.refusal(deployment, decision.reason, events=self.can_write())
            else:
                decision = self.safety.apply(key, proposals[key], observation=observation, now_s=now)
            for rule in decision.rules:
                self.telemetry.safety_rules.labels(namespace=key[0], deployment=key[1], rule=rule).inc()
            decisions.append(decision)
        return decisions

    def _write(self, decisions: list[SafeDecision], inputs: dict, *, now: float) -> dict[tuple[str, str], str]:
        """Write each changed decision; return per Deployment the outcome.

        Outcomes: "written", "dry_run", "not_leader", "stopping" or what stopped the write.
        """
        outcome: dict[tuple[str, str], str] = {}
        changed = [decision for decision in decisions if decision.changes]
        if not changed:
            return outcome
        if self.leader is not None and not self.settings.dry_run and self.leader.is_leader():
            self.leader.confirm()
        for decision in changed:
            key = (decision.namespace, decision.name)
            if self.stop_event is not None and self.stop_event.is_set():
                outcome[key] = "stopping"
                continue
            if not self.can_write():
                outcome[key] = "dry_run" if self.settings.dry_run else "not_leader"
                continue
            outcome[key] = self.recorder.write(decision, inputs[key].state, now=now)
            if outcome[key] == "written":
                self.written[key] = (decision.replicas, decision.option_index)
        self._report_unwritten(outcome)
        return outcome

    def _report_unwritten(self, outcome: dict[tuple[str, str], str]) -> None:
        """Log, at most every 5 min per cause, the changes this tick did not write because of the Lease or a stop."""
        for cause, text in (("not_leader", "this replica does not hold the Lease"),
                            ("stopping", "the agent is stopping")):
            keys = sorted(key for key, result in outcome.items() if result == cause)
            if keys and self.repeats.allow(("unwritten", cause)):
                names = ", ".join(f"{namespace}/{name}" for namespace, name in keys)
                log.warning("tick %d: %d changes not written because %s: %s", self.tick_number, len(keys), text,
                            names)
