"""Writes the changes of one decision to the cluster, only what changed, with optimistic concurrency.

* replicas: a merge patch of ``/scale`` that carries the resourceVersion read
  this tick. On 409 Conflict the writer re-reads the Scale. When spec.replicas
  moved away from what the tick saw, someone else scaled the Deployment, so
  the write is abandoned with ``ManualEditDetected``. Otherwise the writer
  retries with the new resourceVersion on client-go's DefaultRetry schedule.
* allocation: on DRA, create the option's ResourceClaimTemplate and point the
  pod template's claim at it. An existing template with that content-addressed
  name is reused. On the device plugin, set the extended-resource limits and
  node selectors instead. The Deployment gets a merge patch of exactly the
  changed template fields, conditional on its resourceVersion, and a 409
  re-reads the Deployment and rebuilds the patch.
* ``event`` posts an Event on the Deployment; callers post one per change.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

from agent.runtime.cluster_reader import DeploymentState
from agent.runtime.kube_client import AlreadyExistsError, ConflictError, KubeClient, KubeError, retry_on_conflict
from agent.runtime.leader import format_micro_time
from envs.cluster import allocation
from envs.cluster.catalog import Catalog

log = logging.getLogger(__name__)


class ManualEditDetected(Exception):
    """spec.replicas changed between the tick's read and the write; ``observed`` is the new value."""

    def __init__(self, observed: int) -> None:
        super().__init__(f"spec.replicas changed to {observed} by someone else")
        self.observed = observed


def merge_patch_diff(old: Any, new: Any) -> Any:
    """Return the RFC 7386 merge patch that turns ``old`` into ``new`` (None for removed keys)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch_diff(old[key], value)
    return patch


class Writer:
    """Applies decisions through KubeClient; raises KubeError subclasses and ManualEditDetected."""

    def __init__(self, kube: KubeClient, *, catalog: Catalog, dra_version: str | None, naming: allocation.GpuNaming,
                 container: str = "", events: bool = True, identity: str = "gpu-autoscaler",
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.kube = kube
        self.catalog = catalog
        self.dra_version = dra_version
        self.naming = naming
        self.container = container
        self.events = events
        self.identity = identity
        self.sleep = sleep
        self.clock = clock
        self.rand = rand

    def _template_for(self, template: dict[str, Any], option_index: int, *, deployment: str) -> dict[str, Any]:
        option = self.catalog.options[option_index]
        if self.dra_version:
            name = allocation.claim_template_name(deployment, option, version=self.dra_version)
            return allocation.apply_dra_option(template, option=option, claim_template_name=name,
                                               container=self.container)
        return allocation.apply_device_plugin_option(template, option=option, naming=self.naming,
                                                     container=self.container)

    def _ensure_claim_template(self, state: DeploymentState, option_index: int) -> None:
        if not self.dra_version:
            return
        body = allocation.claim_template(deployment=state.name, namespace=state.namespace,
                                         option=self.catalog.options[option_index], version=self.dra_version)
        try:
            self.kube.create_claim_template(self.dra_version, state.namespace, body=body)
            log.info("created ResourceClaimTemplate %s/%s", state.namespace, body["metadata"]["name"])
        except AlreadyExistsError:
            log.debug("ResourceClaimTemplate %s/%s already exists; reusing it", state.namespace,
                      body["metadata"]["name"])

    def change_allocation(self, state: DeploymentState, option_index: int) -> str:
        """Point the pod template at ``option_index``; return the Deployment's new resourceVersion."""
        self._ensure_claim_template(state, option_index)
        current = {"template": state.template, "resource_version": state.resource_version}

        def attempt() -> dict[str, Any]:
            new_template = self._template_for(current["template"], option_index, deployment=state.name)
            patch = {"metadata": {"resourceVersion": current["resource_version"]},
                     "spec": {"template": merge_patch_diff(current["template"], new_template)}}
            try:
                return self.kube.patch_deployment(state.namespace, state.name, body=patch)
            except ConflictError:
                fresh = self.kube.get_deployment(state.namespace, state.name)
                current["template"] = fresh["spec"]["template"]
                current["resource_version"] = fresh["metadata"]["resourceVersion"]
                raise

        updated = retry_on_conflict(attempt, is_conflict=lambda e: isinstance(e, ConflictError), sleep=self.sleep,
                                    rand=self.rand, what=f"allocation change of {state.namespace}/{state.name}")
        return str(updated["metadata"]["resourceVersion"])

    def scale(self, state: DeploymentState, replicas: int, *, resource_version: str) -> str:
        """Set spec.replicas; return the new resourceVersion. Raises ManualEditDetected on a foreign change."""
        current = {"resource_version": resource_version}

        def attempt() -> dict[str, Any]:
            try:
                return self.kube.patch_scale(state.namespace, state.name, replicas=replicas,
                                             resource_version=current["resource_version"])
            except ConflictError:
                scale = self.kube.get_scale(state.namespace, state.name)
                observed = int((scale.get("spec") or {}).get("replicas", 0))
                if observed != state.spec_replicas:
                    raise ManualEditDetected(observed) from None
                current["resource_version"] = scale["metadata"]["resourceVersion"]
                raise

        updated = retry_on_conflict(attempt, is_conflict=lambda e: isinstance(e, ConflictError), sleep=self.sleep,
                                    rand=self.rand, what=f"scale of {state.namespace}/{state.name}")
        return str(updated["metadata"]["resourceVersion"])

    def event(self, state: DeploymentState, reason: str, *, message: str, kind: str = "Normal") -> None:
        """Post an Event on the Deployment; a failure is logged and never stops the tick."""
        if not self.events:
            return
        now = format_micro_time(self.clock())
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{state.name}.", "namespace": state.namespace},
            "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": state.name,
                               "namespace": state.namespace},
            "reason": reason, "message": message[:1024], "type": kind, "count": 1,
            "firstTimestamp": now[:19] + "Z", "lastTimestamp": now[:19] + "Z",
            "source": {"component": "gpu-autoscaler"},
            "reportingComponent": "gpu-autoscaler", "reportingInstance": self.identity,
        }
        try:
            self.kube.create_event(state.namespace, body)
        except KubeError as error:
            log.warning("could not post Event %s on %s/%s: %s", reason, state.namespace, state.name, error)
