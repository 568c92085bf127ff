"""The safety layer: every rule a decision passes before the runtime may write it.

Rules in the order ``SafetyLayer.apply`` runs them (each rule that changes or
blocks a proposal is named in ``SafeDecision.rules``):

1. manual edit: spec.replicas differs from the value the agent last wrote, so
   someone else scaled the Deployment. The agent holds for
   ``manual_edit_backoff_s`` and then adopts the current value as its base.
   The value of a write that failed without a response (a timeout) also
   counts as the agent's own, because the API server may have applied it.
   After a gap in leadership the loop calls ``forget_writes``, so changes
   made by the replica that led in between are not taken for manual edits.
2. min and max replicas of the workload config.
3. scale-down stabilization: a scale-down goes only as low as the highest
   proposal of the last ``scale_down_stabilization_s`` seconds.
4. max change per tick, up and down.
5. allocation change: at most one per ``allocation_change_cooldown_s``, and
   only when the free slots and the quota hold all target pods of the new
   option (the old pods keep theirs until the new ones are Ready).
6. capacity and quota for a scale-up: new pods, after the Deployment's already
   Pending ones, must fit the free slots of their slot kind and the quota headroom.

Holds for other reasons (Kubernetes API unavailable, another autoscaler on the
same target, an allocation the catalog does not know) come from ``hold``.
Time comes from the caller, so tests drive the windows with a fake clock.

While a Deployment's signals are unhealthy its proposal comes from
``FallbackRule``, the project's exact HPA (``HpaBaseline``) on one per-pod
metric, instead of the policy. ``FallbackTracker`` switches a Deployment into
the fallback on any unhealthy tick and back after ``recover_after_ticks``
healthy ticks in a row.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from agent.baselines.hpa_baseline import HpaBaseline, HpaSettings
from agent.runtime.settings import FallbackSettings, SafetySettings
from envs.cluster.catalog import Catalog
from envs.observation import EncoderContext
from envs.signals import SignalBatch, WorkloadSignals, batch_signals

log = logging.getLogger(__name__)
Key = tuple[str, str]


@dataclass(frozen=True)
class Proposal:
    """Target replicas and option proposed by the policy or the fallback rule for one Deployment."""

    target_replicas: int
    option_index: int
    source: str
    reason: str = ""


@dataclass(frozen=True)
class Observation:
    """The facts the rules check a proposal against."""

    spec_replicas: int
    option_index: int
    pending_replicas: int
    min_replicas: int
    max_replicas: int
    free_slots: Mapping[str, float]
    quota_headroom: Sequence[float]


@dataclass
class SafeDecision:
    """The decision after the rules; ``write_replicas`` and ``write_option`` mark what the writer must change."""

    namespace: str
    name: str
    replicas: int
    option_index: int
    source: str
    write_replicas: bool = False
    write_option: bool = False
    rules: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def changes(self) -> bool:
        return self.write_replicas or self.write_option


@dataclass
class _DeploymentMemory:
    seen: bool = False
    last_written: int | None = None
    # Replicas of a scale write sent but not confirmed; the server may have applied it.
    attempted: int | None = None
    backoff_until: float = -math.inf
    last_option_change: float = -math.inf
    proposals: deque = field(default_factory=deque)


class SafetyLayer:
    """Applies the rules per Deployment and remembers what the agent wrote."""

    def __init__(self, settings: SafetySettings, *, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self._memory: dict[Key, _DeploymentMemory] = {}

    def _state(self, key: Key) -> _DeploymentMemory:
        return self._memory.setdefault(key, _DeploymentMemory())

    def hold(self, key: Key, observation: Observation, *, rule: str, reason: str) -> SafeDecision:
        """Return a decision that keeps the Deployment as it is."""
        return SafeDecision(namespace=key[0], name=key[1], replicas=observation.spec_replicas,
                            option_index=observation.option_index, source="hold", rules=[rule], reason=reason)

    def record_write(self, key: Key, *, replicas: int, option_changed: bool, now_s: float) -> None:
        """Remember a successful write, the base of manual-edit detection and the allocation cooldown."""
        memory = self._state(key)
        memory.last_written = int(replicas)
        memory.attempted = None
        if option_changed:
            memory.last_option_change = now_s

    def note_write_attempt(self, key: Key, *, replicas: int) -> None:
        """Remember a scale write about to be sent, in case its response never arrives."""
        self._state(key).attempted = int(replicas)

    def forget_writes(self) -> None:
        """Drop what this replica wrote, so the next tick takes spec.replicas as its base (after a leadership gap)."""
        for memory in self._memory.values():
            memory.last_written = None
            memory.attempted = None

    def note_manual_edit(self, key: Key, *, observed: int, now_s: float) -> None:
        """Start the manual-edit backoff; the writer calls this when a re-read shows a foreign change."""
        memory = self._state(key)
        memory.backoff_until = now_s + self.settings.manual_edit_backoff_s
        memory.last_written = None
        memory.attempted = None
        memory.proposals.clear()
        log.warning("Deployment %s/%s: spec.replicas was changed to %d by someone else; leaving it alone for %.0f s",
                    key[0], key[1], observed, self.settings.manual_edit_backoff_s)

    def in_backoff(self, key: Key, now_s: float) -> bool:
        return now_s < self._state(key).backoff_until

    def apply(self, key: Key, proposal: Proposal, *, observation: Observation, now_s: float) -> SafeDecision:
        memory = self._state(key)
        current = observation.spec_replicas
        rules: list[str] = []

        # Rule 1: a foreign edit of spec.replicas.
        if memory.attempted is not None and current == memory.attempted:
            memory.last_written, memory.attempted = current, None
        if memory.last_written is not None and current != memory.last_written:
            self.note_manual_edit(key, observed=current, now_s=now_s)
        if now_s < memory.backoff_until:
            left = memory.backoff_until - now_s
            return self.hold(key, observation, rule="manual_edit",
                             reason=f"spec.replicas was edited by someone else; backing off for {left:.0f} s more")

        # The first proposal window starts with the current count, as the HPA seeds its
        # recommendations, so a restarted agent cannot scale down at once.
        if not memory.seen:
            memory.seen = True
            memory.proposals.append((now_s, current))

        # Rule 2: the configured range.
        target = int(proposal.target_replicas)
        if target > observation.max_replicas:
            target = observation.max_replicas
            rules.append("max_replicas")
        if target < observation.min_replicas:
            target = observation.min_replicas
            rules.append("min_replicas")

        # Rule 3: scale-down stabilization over the recent proposals.
        window = self.settings.scale_down_stabilization_s
        memory.proposals.append((now_s, target))
        while memory.proposals and memory.proposals[0][0] < now_s - window:
            memory.proposals.popleft()
        if target < current:
            floor = min(current, max(value for _, value in memory.proposals))
            if floor > target:
                target = floor
                rules.append("stabilization")

        # Rule 4: step limits.
        if target > current + self.settings.max_scale_up_per_tick:
            target = current + self.settings.max_scale_up_per_tick
            rules.append("scale_up_step")
        if target < current - self.settings.max_scale_down_per_tick:
            target = current - self.settings.max_scale_down_per_tick
            rules.append("scale_down_step")

        # Rule 5: allocation changes.
        option = int(proposal.option_index)
        if option != observation.option_index:
            if now_s - memory.last_option_change < self.settings.allocation_change_cooldown_s:
                option = observation.option_index
                rules.append("allocation_cooldown")
            else:
                room, limit = self._room(option, observation, pending=0)
                if room < target:
                    log.info("Deployment %s/%s: option %s has room for %d of %d pods (%s limit); keeping %s", key[0], key[1],
                             self.catalog.options[option].name, room, target, limit,
                             self.catalog.options[observation.option_index].name)
                    option = observation.option_index
                    rules.append(limit)

        # Rule 6: room for the new pods of a scale-up.
        if option == observation.option_index and target > current:
            room, limit = self._room(option, observation, pending=observation.pending_replicas)
            if current + room < target:
                target = max(current + room, current)
                rules.append(limit)

        return SafeDecision(namespace=key[0], name=key[1], replicas=target, option_index=option,
                            source=proposal.source, write_replicas=target != current,
                            write_option=option != observation.option_index, rules=rules, reason=proposal.reason)

    def _room(self, option_index: int, observation: Observation, *, pending: int) -> tuple[int, str]:
        """Return (pods of the option that still fit, name of the binding limit)."""
        option = self.catalog.options[option_index]
        room, limit = math.inf, "capacity"
        if self.settings.check_capacity:
            room = math.floor(observation.free_slots.get(option.slot_kind, 0.0) / option.devices + 1e-9)
        if self.settings.check_quota and option_index < len(observation.quota_headroom):
            quota = observation.quota_headroom[option_index]
            if quota < room:
                room, limit = quota, "quota"
        if math.isinf(room):
            return 1 << 30, limit
        return max(int(room) - pending, 0), limit


class FallbackRule:
    """Proposes replicas with the HPA algorithm, or the current count where the HPA's own metric is missing too.

    The HPA runs over every Deployment every tick, as a shadow, so its
    stabilization window is already filled when a Deployment needs it. Rows
    whose metric is NaN get 0 in the HPA's input and their proposal is
    ignored, because an HPA without metrics does not scale.
    """

    def __init__(self, settings: FallbackSettings) -> None:
        if settings.behavior not in ("default", "legacy"):
            raise ValueError(f"runtime.fallback.behavior {settings.behavior!r} is invalid; use default or legacy")
        self.settings = settings
        self.baseline = HpaBaseline(HpaSettings(metric=settings.metric, target=settings.target,
                                                behavior=settings.behavior, tolerance=settings.tolerance,
                                                downscale_stabilization_s=settings.downscale_stabilization_s))
        self.slot_kinds: Sequence[str] = ()

    def reset(self, ctx: EncoderContext, names: Sequence[str], *, tick_s: float, slot_kinds: Sequence[str]) -> None:
        self.baseline.reset(ctx, names, tick_s)
        self.slot_kinds = slot_kinds

    def _metric_available(self, raw: Mapping[str, float]) -> bool:
        needed = ("gpu_utilization",) if self.settings.metric == "gpu_utilization" else \
            ("running_requests", "waiting_requests")
        return all(math.isfinite(float(raw.get(name, math.nan))) for name in needed)

    def propose(self, records: Sequence[WorkloadSignals], raws: Sequence[Mapping[str, float]],
                *, now_s: float) -> list[tuple[int, str]]:
        """Return (replicas, explanation) per record, in order; ``raws`` are values before substitutions."""
        available = [self._metric_available(raw) for raw in raws]
        batch: SignalBatch = batch_signals(list(records), self.slot_kinds, self.baseline.ctx.n_options)
        for name, values in batch.values.items():
            batch.values[name] = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        replicas, _ = self.baseline.decide(batch, now_s)
        proposals = []
        for row, record in enumerate(records):
            if not available[row]:
                proposals.append((int(record.desired_replicas),
                                  f"fallback holds: {self.settings.metric} is unavailable too"))
            else:
                proposals.append((int(replicas[row]), f"fallback HPA on {self.settings.metric} "
                                                      f"(target {self.settings.target:g}) -> {int(replicas[row])}"))
        return proposals


@dataclass
class FallbackState:
    active: bool = False
    healthy_streak: int = 0


class FallbackTracker:
    """Per-Deployment fallback switch with hysteresis on recovery."""

    def __init__(self, recover_after_ticks: int) -> None:
        self.recover_after_ticks = max(int(recover_after_ticks), 1)
        self._states: dict[Key, FallbackState] = {}

    def update(self, key: Key, *, healthy: bool) -> tuple[bool, str]:
        """Return (fallback active, transition) where transition is "entered", "recovered" or ""."""
        state = self._states.setdefault(key, FallbackState())
        if not healthy:
            state.healthy_streak = 0
            if not state.active:
                state.active = True
                return True, "entered"
            return True, ""
        state.healthy_streak += 1
        if state.active and state.healthy_streak >= self.recover_after_ticks:
            state.active = False
            return False, "recovered"
        return state.active, ""
