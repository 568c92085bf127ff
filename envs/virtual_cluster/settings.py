"""Settings of the virtual cluster, with safe defaults and a check that names the bad value."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List

DRA_CHOICES = ("v1", "v1beta2", "v1beta1", "v1alpha3", "none")
QUOTA_CHOICES = ("pending", "reject")


@dataclass
class VirtualClusterSettings:
    """How the virtual cluster serves the API and drives the simulator.

    Attributes:
        host: address to bind; loopback by default, so nothing outside the machine reaches it.
        port: TCP port; 0 picks a free one (read it back from ``VirtualCluster.url``).
        time_factor: simulated seconds per wall-clock second. 1 runs in real time,
            15 runs a 15 s tick every second, 0 advances only on ``POST /_tick``.
        dra_version: the one ``resource.k8s.io`` version served: v1, v1beta2 or
            v1beta1; ``none`` serves no DRA group (a device-plugin cluster);
            ``v1alpha3`` serves only that alpha version (a cluster from before DRA beta).
        seed: seed of the simulator's random streams and of pod name suffixes.
        quota_enforcement: ``pending`` accepts every scale and leaves pods beyond
            the ResourceQuota Pending, as a DRA cluster does when the claim
            cannot be created. ``reject`` fails a /scale write that would exceed
            the quota with 403 "exceeded quota". No API server does that, but it
            lets tests exercise a rejected write.
        quota_name: name of the ResourceQuota created in each workload namespace.
        managed_label: label (key=value) put on every simulated Deployment.
        hpa_targets: Deployments that also get an autoscaling/v2 HPA, to test that the agent refuses them.
        scaledobject_targets: Deployments that also get a KEDA ScaledObject.
        server_version: ``gitVersion`` reported by ``/version``.
        lease_namespace: namespace created for the agent's leader-election Lease.
    """

    host: str = "127.0.0.1"
    port: int = 0
    time_factor: float = 1.0
    dra_version: str = "v1"
    seed: int = 0
    quota_enforcement: str = "pending"
    quota_name: str = "gpu-quota"
    managed_label: str = "gpu-autoscaler.io/managed=true"
    hpa_targets: List[str] = field(default_factory=list)
    scaledobject_targets: List[str] = field(default_factory=list)
    server_version: str = "v1.34.0"
    lease_namespace: str = "gpu-autoscaler"

    def validate(self) -> None:
        """Raise ValueError naming the first invalid setting and the accepted values."""
        if self.dra_version not in DRA_CHOICES:
            raise ValueError(f"virtual_cluster.dra_version {self.dra_version!r} is invalid; use one of {DRA_CHOICES}")
        if self.quota_enforcement not in QUOTA_CHOICES:
            raise ValueError(
                f"virtual_cluster.quota_enforcement {self.quota_enforcement!r} is invalid; use one of {QUOTA_CHOICES}"
            )
        if not math.isfinite(self.time_factor) or self.time_factor < 0:
            raise ValueError(
                f"virtual_cluster.time_factor {self.time_factor} is invalid; use 0 (manual ticks) or a positive number"
            )
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"virtual_cluster.port {self.port} is invalid; use 0 (any free port) to 65535")
        if "=" not in self.managed_label:
            raise ValueError(
                f"virtual_cluster.managed_label {self.managed_label!r} is invalid; write it as key=value"
            )

    @property
    def managed_label_pair(self) -> tuple[str, str]:
        key, value = self.managed_label.split("=", 1)
        return key.strip(), value.strip()
