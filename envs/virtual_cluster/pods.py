"""Pods as named objects: turning the simulator's pod counts into a stable list of pods.

The simulator counts a Deployment's pods per state (Pending, starting, Ready,
Ready of the previous option, terminating). Each tick ``reconcile_pods`` maps
those counts onto named pod records, so a pod keeps its name, node and
devices from creation to deletion. Ready slots go to pods that were already
Ready, then to starting ones, then to Pending ones, oldest first. Pods beyond
the counts get a deletionTimestamp and are removed the tick after, when the
simulator frees their devices too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

from envs.virtual_cluster.objects import Device

PENDING, STARTING, READY, TERMINATING = "Pending", "Starting", "Ready", "Terminating"
_RANK = {READY: 0, STARTING: 1, PENDING: 2, TERMINATING: 3}
# The alphabet Kubernetes uses for generated name suffixes (no vowels, no 0/1/3).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class PodRecord:
    """One pod of a simulated Deployment."""

    name: str
    template_hash: str
    option: int
    # Rollout number of the Deployment when the pod was created; an allocation
    # change starts a new rollout, even one back to an earlier option.
    revision: int
    state: str
    created_tick: int
    devices: list[Device] = field(default_factory=list)
    ready_tick: int = -1
    claim_name: str = ""

    @property
    def node(self) -> str:
        return self.devices[0].node if self.devices else ""


class DeviceAllocator:
    """Free devices per slot kind; a pod takes all of its devices from one node."""

    def __init__(self, devices: Sequence[Device]) -> None:
        self._free: dict[str, list[Device]] = {}
        for device in devices:
            self._free.setdefault(device.slot_kind, []).append(device)

    def take(self, slot_kind: str, count: int) -> list[Device] | None:
        """Return ``count`` free devices of ``slot_kind`` on one node, or None when no node has them."""
        free = self._free.get(slot_kind, [])
        by_node: dict[str, list[Device]] = {}
        for device in free:
            by_node.setdefault(device.node, []).append(device)
        for node in sorted(by_node):
            if len(by_node[node]) >= count:
                chosen = by_node[node][:count]
                for device in chosen:
                    free.remove(device)
                return chosen
        return None

    def release(self, devices: Sequence[Device]) -> None:
        for device in devices:
            self._free.setdefault(device.slot_kind, []).append(device)
            self._free[device.slot_kind].sort(key=lambda d: (d.node, d.name))

    def free_count(self, slot_kind: str) -> int:
        return len(self._free.get(slot_kind, []))


@dataclass
class PodTargets:
    """Pod counts of one Deployment after a simulator tick."""

    option: int
    revision: int
    pending: int
    starting: int
    ready: int
    old_revision: int
    old_ready: int


@dataclass
class ReconcileResult:
    created: list[PodRecord] = field(default_factory=list)
    changed: list[PodRecord] = field(default_factory=list)
    deleted: list[PodRecord] = field(default_factory=list)
    # Pods the simulator placed but no single node had the devices for; they stay Pending.
    unplaced: int = 0


def new_pod_name(rs_name: str, rng: random.Random) -> str:
    return f"{rs_name}-{''.join(rng.choice(_NAME_ALPHABET) for _ in range(5))}"


def reconcile_pods(
    pods: list[PodRecord],
    targets: PodTargets,
    *,
    tick: int,
    rs_name: str,
    template_hash: str,
    slot_kind: dict[int, str],
    devices_per_pod: dict[int, int],
    allocator: DeviceAllocator,
    rng: random.Random,
) -> ReconcileResult:
    """Update ``pods`` in place to match ``targets``; return what changed for the object store."""
    result = ReconcileResult()

    # Step 1: pods marked terminating last tick are gone now, with their devices.
    for pod in [p for p in pods if p.state == TERMINATING]:
        allocator.release(pod.devices)
        pod.devices = []
        pods.remove(pod)
        result.deleted.append(pod)

    def set_state(pod: PodRecord, state: str) -> None:
        if pod.state != state:
            pod.state = state
            if state == READY:
                pod.ready_tick = tick
            if pod not in result.created and pod not in result.changed:
                result.changed.append(pod)

    ordered = sorted(pods, key=lambda p: (_RANK[p.state], p.created_tick, p.name))

    # Step 2: Ready pods of the previous option keep serving until the rollout retires them.
    old = [p for p in ordered if p.revision == targets.old_revision != targets.revision]
    for position, pod in enumerate(old):
        set_state(pod, READY if position < targets.old_ready and pod.state == READY else TERMINATING)

    # Step 3: pods of the current option fill the Ready, then starting, then Pending counts.
    current = [p for p in ordered if p.revision == targets.revision]
    wanted = [READY] * targets.ready + [STARTING] * targets.starting + [PENDING] * targets.pending
    while len(current) < len(wanted):
        pod = PodRecord(new_pod_name(rs_name, rng), template_hash, targets.option, targets.revision, PENDING, tick)
        pods.append(pod)
        current.append(pod)
        result.created.append(pod)
    for position, pod in enumerate(current):
        set_state(pod, wanted[position] if position < len(wanted) else TERMINATING)

    # Step 4: pods of any other revision are left over from an earlier rollout.
    for pod in ordered:
        if pod.revision not in (targets.revision, targets.old_revision):
            set_state(pod, TERMINATING)

    # Step 5: running pods need devices, and a Pending pod has none.
    for pod in pods:
        if pod.state in (STARTING, READY) and not pod.devices:
            taken = allocator.take(slot_kind[pod.option], devices_per_pod[pod.option])
            if taken is None:
                result.unplaced += 1
                set_state(pod, PENDING)
            else:
                pod.devices = taken
                if pod not in result.created and pod not in result.changed:
                    result.changed.append(pod)
        elif pod.state == PENDING and pod.devices:
            allocator.release(pod.devices)
            pod.devices = []
    return result
