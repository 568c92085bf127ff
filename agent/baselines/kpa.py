"""Knative Pod Autoscaler (KPA) as a controller, one decider per Deployment.

The decision follows knative/serving ``pkg/autoscaler/scaling/autoscaler.go``
(``Scale``) and the scale-to-zero rule of
``pkg/reconciler/autoscaling/kpa/scaler.go`` (``handleScaleToZero``):

* The observed value is the Deployment's concurrency, running plus waiting
  requests (``vllm:num_requests_running + vllm:num_requests_waiting``), and the
  target per pod is ``target * target_utilization`` (Knative's
  ``container-concurrency-target-default`` times
  ``container-concurrency-target-percentage``).
* Desired pods are ``ceil(window average / target per pod)`` for the stable
  window (60 s) and for the panic window (6 s), each kept within
  ``[floor(ready / max_scale_down_rate), ceil(ready * max_scale_up_rate)]``,
  where ``ready`` is the Ready pod count or 1 when there is none.
* Panic mode starts when the panic-window desired pods reach
  ``panic_threshold`` times the Ready pods (2.0, so 200 %), is extended while
  they stay there, and ends once they have stayed below for a whole stable
  window. In panic mode the desired count is the larger of the two windows'
  and never drops below the highest value it had during that panic.
* Like Knative, a decider whose first reading shows more than one Ready pod
  starts in panic mode, so it keeps the current scale until it has a window
  of data.
* With ``min_replicas`` 0, the last pod goes only after the desired count has
  been 0 for ``scale_to_zero_grace_s`` (30 s). A desired count of 0 already
  means no traffic over the whole stable window.

Mapping onto control ticks: Knative evaluates every 2 s, this controller
every tick (15 s by default). A window covers ``max(1, round(window / tick))``
of the newest per-tick observations, so the 60 s stable window averages four
ticks and the 6 s panic window, shorter than one tick, uses the newest tick
alone. The scale-up and scale-down rates limit one tick's change, as they
limit one 2 s evaluation in Knative.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from agent.controllers.base import Controller
from envs.observation import EncoderContext
from envs.signals import SignalBatch


@dataclass(frozen=True)
class KpaSettings:
    """KPA settings; the defaults are Knative's config-autoscaler defaults except ``target``.

    Attributes:
        target: concurrent requests per pod. Knative's default of 100 suits web services.
            An inference engine of the default workload at 70 % load runs about 3
            requests (running + waiting), so the default here is 5.
        target_utilization: fraction of ``target`` to keep per pod (0.7 is Knative's 70 %).
        stable_window_s: averaging window of stable mode, seconds.
        panic_window_s: averaging window of panic mode, seconds (10 % of the stable window).
        panic_threshold: panic-window desired pods over Ready pods at which panic mode starts.
        max_scale_up_rate: desired pods are at most ``ceil(rate * ready)``.
        max_scale_down_rate: desired pods are at least ``floor(ready / rate)``.
        scale_to_zero_grace_s: time at desired 0 before the last pod goes (min_replicas 0 only).
    """

    target: float = 5.0
    target_utilization: float = 0.7
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.target > 0:
            raise ValueError(f"kpa.target is {self.target}; set a concurrency per pod above 0")
        if not 0 < self.target_utilization <= 1:
            raise ValueError(f"kpa.target_utilization is {self.target_utilization}; set a fraction in (0, 1]")
        if not (self.stable_window_s > 0 and self.panic_window_s > 0):
            raise ValueError(f"kpa windows must be above 0 s, got stable {self.stable_window_s} "
                             f"and panic {self.panic_window_s}")
        if not self.panic_threshold > 1:
            raise ValueError(f"kpa.panic_threshold is {self.panic_threshold}; set a factor above 1 (2.0 is 200 %)")
        if not (self.max_scale_up_rate > 1 and self.max_scale_down_rate > 1):
            raise ValueError(f"kpa rates must be above 1, got up {self.max_scale_up_rate} "
                             f"and down {self.max_scale_down_rate}")
        if self.scale_to_zero_grace_s < 0:
            raise ValueError(f"kpa.scale_to_zero_grace_s is {self.scale_to_zero_grace_s}; set 0 or more seconds")


def window_ticks(window_s: float, tick_s: float) -> int:
    """Return how many per-tick observations a window of ``window_s`` averages (at least one)."""
    return max(1, int(round(window_s / tick_s)))


class KpaDecider:
    """The KPA state of one Deployment: observation history and panic state."""

    def __init__(self, settings: KpaSettings, tick_s: float, min_replicas: int, max_replicas: int) -> None:
        self.settings = settings
        self.min_replicas = int(min_replicas)
        self.max_replicas = int(max_replicas)
        self.stable_ticks = window_ticks(settings.stable_window_s, tick_s)
        self.panic_ticks = window_ticks(settings.panic_window_s, tick_s)
        self.history: deque[float] = deque(maxlen=max(self.stable_ticks, self.panic_ticks))
        self.started = False
        self.panic_since_s: float | None = None
        self.max_panic_pods = 0
        self.zero_since_s: float | None = None

    def scale(self, concurrency: float, ready_pods: int, now_s: float) -> int:
        """Record this tick's concurrency and return the desired pod count."""
        s = self.settings
        if not self.started:
            # autoscaler.go newAutoscaler: more than one Ready pod starts in panic mode.
            self.started = True
            if ready_pods > 1:
                self.panic_since_s = now_s
                self.max_panic_pods = ready_pods
        self.history.append(max(float(concurrency), 0.0))
        samples = list(self.history)
        stable_value = float(np.mean(samples[-self.stable_ticks:]))
        panic_value = float(np.mean(samples[-self.panic_ticks:]))

        ready = max(1.0, float(ready_pods))
        target_per_pod = s.target * s.target_utilization
        max_up = math.ceil(s.max_scale_up_rate * ready)
        max_down = math.floor(ready / s.max_scale_down_rate)
        stable_pods = math.ceil(stable_value / target_per_pod)
        panic_pods = math.ceil(panic_value / target_per_pod)
        desired_stable = int(min(max(stable_pods, max_down), max_up))
        desired_panic = int(min(max(panic_pods, max_down), max_up))

        over_threshold = panic_pods / ready >= s.panic_threshold
        if over_threshold:
            self.panic_since_s = now_s
        elif self.panic_since_s is not None and self.panic_since_s + s.stable_window_s < now_s:
            self.panic_since_s = None
            self.max_panic_pods = 0

        desired = desired_stable
        if self.panic_since_s is not None:
            desired = max(desired_stable, desired_panic)
            # Panic mode never scales down: hold the highest count of this panic.
            self.max_panic_pods = max(self.max_panic_pods, desired)
            desired = self.max_panic_pods
        return self._bounded(desired, now_s)

    def _bounded(self, desired: int, now_s: float) -> int:
        """Apply min/max scale, then hold one pod through the scale-to-zero grace period."""
        desired = min(max(desired, self.min_replicas), self.max_replicas)
        if desired > 0:
            self.zero_since_s = None
            return desired
        if self.zero_since_s is None:
            self.zero_since_s = now_s
        if now_s - self.zero_since_s >= self.settings.scale_to_zero_grace_s:
            return 0
        return 1


class KpaBaseline(Controller):
    """One KPA decider per Deployment; keeps each Deployment's allocation option."""

    name = "kpa"

    def __init__(self, settings: KpaSettings | None = None) -> None:
        self.settings = settings or KpaSettings()
        self._deciders: list[KpaDecider] = []

    def reset(self, ctx: EncoderContext, names: Sequence[str], tick_s: float) -> None:
        super().reset(ctx, names, tick_s)
        self._deciders = [
            KpaDecider(self.settings, tick_s, int(ctx.min_replicas[i]), int(ctx.max_replicas[i]))
            for i in range(len(self.names))
        ]

    def decide(self, batch: SignalBatch, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        concurrency = batch["running_requests"] + batch["waiting_requests"]
        ready = batch["ready_replicas"]
        replicas = np.array(
            [decider.scale(float(concurrency[row]), int(round(ready[row])), now_s)
             for row, decider in enumerate(self._deciders)],
            dtype=np.int64,
        )
        return replicas, batch["option_index"].astype(np.int64)
