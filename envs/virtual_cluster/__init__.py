"""A loopback Kubernetes API server whose workload is the project's simulator.

``VirtualCluster`` serves Deployments (with the ``/scale`` subresource), Pods,
Nodes, ResourceQuotas, Events, Leases, HPAs, KEDA ScaledObjects and the DRA
objects of one ``resource.k8s.io`` version, plus a ``/metrics`` page with
kube-state-metrics, dcgm-exporter and vLLM metric names. It exists to rehearse
and test the live runtime (``agent.runtime``) without a real cluster.
"""

from envs.cluster.allocation import GpuNaming
from envs.virtual_cluster.cluster import VirtualCluster
from envs.virtual_cluster.settings import VirtualClusterSettings

__all__ = ["GpuNaming", "VirtualCluster", "VirtualClusterSettings"]
