"""Pods and per-pod metric samples as the HPA controller reads them, and their grouping.

``group_pods`` and ``calculate_requests`` follow ``groupPods`` and ``calculateRequests`` in
``pkg/controller/podautoscaler/replica_calculator.go`` (Kubernetes 1.3x). Times are seconds
on any clock shared by the caller (simulation time works), and quantities are milli-values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Optional, Sequence

POD_RUNNING = "Running"
POD_PENDING = "Pending"
POD_FAILED = "Failed"
POD_SUCCEEDED = "Succeeded"


class MetricError(Exception):
    """A metric cannot be computed this cycle (missing data, missing requests, no pods).

    The controller counts the metric as invalid, as upstream does with the error returned by
    the replica calculator.
    """


@dataclass(frozen=True)
class Container:
    """A container of a pod with its resource requests in milli-units (cpu 1 core = 1000).

    List regular containers and restartable init containers (sidecars with restartPolicy:
    Always). Other init containers do not count towards requests upstream, so leave them out.
    """

    name: str
    requests: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Pod:
    """A pod selected by the target's selector.

    ``ready`` is the status of the PodReady condition (``None``: the pod has no such condition)
    and ``ready_transition_s`` its lastTransitionTime. ``start_time_s`` is status.startTime
    (``None``: not set, which makes the pod unready for CPU metrics). ``deleted`` means a
    deletionTimestamp is set. ``requests`` are
    pod-level requests in milli-units. For a resource they name, they take precedence over the
    sum of ``containers``, as with the PodLevelResources feature on.
    """

    name: str
    phase: str = POD_RUNNING
    ready: Optional[bool] = True
    start_time_s: Optional[float] = 0.0
    ready_transition_s: float = 0.0
    deleted: bool = False
    requests: Mapping[str, int] = field(default_factory=dict)
    containers: Sequence[Container] = ()


@dataclass(frozen=True)
class PodMetricSample:
    """One pod's metric value (milli-units) from the metrics API.

    ``timestamp_s`` and ``window_s`` are the sample's timestamp and the window it averages
    over. The CPU readiness heuristic compares them with the pod's readiness transition.
    ``container_values`` are per-container values for ContainerResource metrics.
    """

    value_milli: int
    timestamp_s: float = 0.0
    window_s: float = 60.0
    container_values: Optional[Mapping[str, int]] = None


@dataclass
class MetricValues:
    """Everything the metrics APIs return in one reconcile.

    ``resources`` maps a resource name (``cpu``) and ``pods`` a Pods metric name to samples
    keyed by pod name. Samples of pods that are not in the pod list are kept and counted, as
    upstream does. ``objects`` maps an Object metric name to its value and ``external`` an
    External metric name to the values of all series that match its selector. A name that is
    absent means the fetch failed, which makes that metric invalid for the cycle.
    """

    resources: Mapping[str, Mapping[str, PodMetricSample]] = field(default_factory=dict)
    pods: Mapping[str, Mapping[str, PodMetricSample]] = field(default_factory=dict)
    # NOTE: Object and External metrics are keyed by metric name only. Two Object metrics with
    # one name on different objects share a value, and metric label selectors are not evaluated.
    objects: Mapping[str, int] = field(default_factory=dict)
    external: Mapping[str, Sequence[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class PodGroups:
    """Result of ``group_pods``: the ready count and the names of the other groups."""

    ready_count: int
    unready: frozenset[str]
    missing: frozenset[str]
    ignored: frozenset[str]


def group_pods(
    pods: Iterable[Pod],
    samples: Mapping[str, PodMetricSample],
    resource: str,
    now_s: float,
    cpu_initialization_period_s: float,
    initial_readiness_delay_s: float,
) -> PodGroups:
    """Sort pods into ready, unready, missing (no sample) and ignored.

    Deleted and Failed pods are ignored and Pending pods are unready. The readiness heuristic
    runs only for ``resource == "cpu"``: within the CPU initialization period after start a pod
    is unready when not Ready or when its sample does not yet cover a full window after the
    last readiness transition. Later it is unready only when it is not Ready and its last
    transition came before start + initial readiness delay, i.e. it never became ready.
    For memory and custom metrics a Running pod that is not Ready still counts as ready.
    """
    ready_count = 0
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        if pod.deleted or pod.phase == POD_FAILED:
            ignored.add(pod.name)
            continue
        if pod.phase == POD_PENDING:
            unready.add(pod.name)
            continue
        sample = samples.get(pod.name)
        if sample is None:
            missing.add(pod.name)
            continue
        if resource == "cpu" and _is_cpu_unready(pod, sample, now_s, cpu_initialization_period_s, initial_readiness_delay_s):
            unready.add(pod.name)
            continue
        ready_count += 1
    return PodGroups(ready_count, frozenset(unready), frozenset(missing), frozenset(ignored))


def _is_cpu_unready(
    pod: Pod,
    sample: PodMetricSample,
    now_s: float,
    cpu_initialization_period_s: float,
    initial_readiness_delay_s: float,
) -> bool:
    if pod.ready is None or pod.start_time_s is None:
        return True
    if pod.start_time_s + cpu_initialization_period_s > now_s:
        return pod.ready is False or sample.timestamp_s < pod.ready_transition_s + sample.window_s
    return pod.ready is False and pod.start_time_s + initial_readiness_delay_s > pod.ready_transition_s


def calculate_requests(pods: Iterable[Pod], resource: str, container: Optional[str] = None) -> dict[str, int]:
    """Return each pod's request of ``resource`` in milli-units.

    With ``container`` set, only that container counts. Otherwise a pod-level request wins,
    and without one the requests of all containers and restartable init containers are summed.
    Raises MetricError naming the pod when a request is missing.
    """
    requests: dict[str, int] = {}
    for pod in pods:
        if container is None and resource in pod.requests:
            requests[pod.name] = pod.requests[resource]
            continue
        if not pod.containers and container is None:
            raise MetricError(
                f"missing request for {resource} in Pod {pod.name}: set requests[{resource!r}] or list its containers"
            )
        total = 0
        found = False
        for item in pod.containers:
            if container is not None and item.name != container:
                continue
            if resource not in item.requests:
                raise MetricError(f"missing request for {resource} in container {item.name} of Pod {pod.name}")
            total += item.requests[resource]
            found = True
        if container is not None and not found:
            raise MetricError(f"container {container} not found in Pod {pod.name}")
        requests[pod.name] = total
    return requests


def select_container_samples(samples: Mapping[str, PodMetricSample], container: str) -> dict[str, PodMetricSample]:
    """Keep each pod's value for ``container``. Pods without it are left out, so their metric is missing."""
    selected: dict[str, PodMetricSample] = {}
    for pod_name, sample in samples.items():
        if sample.container_values is None or container not in sample.container_values:
            continue
        selected[pod_name] = replace(sample, value_milli=sample.container_values[container])
    return selected


def count_ready_pods(pods: Iterable[Pod]) -> int:
    """Count Running pods whose Ready condition is True, as ``getReadyPodsCount`` upstream.

    Pods being deleted still count when Running and Ready.
    """
    return sum(1 for pod in pods if pod.phase == POD_RUNNING and pod.ready is True)
