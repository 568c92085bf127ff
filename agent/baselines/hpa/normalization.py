"""Stabilization and rate limiting of the HPA's metric proposal, with the per-HPA history.

Two paths, as in ``pkg/controller/podautoscaler/horizontal.go`` (Kubernetes 1.3x):

* ``behavior`` absent (legacy, ``normalizeDesiredReplicas``): the max recommendation of the
  last downscale-stabilization window (300 s) in both directions, then at most
  max(2 * current, 4) replicas and the min/max clamp.
* ``behavior`` present (``normalizeDesiredReplicasWithBehaviors``): the current count is
  clamped between the min of the recent proposals (scale-up window) and their max
  (scale-down window), then the rate-limit policies apply. Each policy counts the replicas
  added and removed during its period, in both directions, from the stored scale events.

Time comparisons are strict, as ``time.After`` and ``time.Before`` in Go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from .api_types import HorizontalPodAutoscalerBehavior, HPAScalingRules

MAX_INT32 = 2**31 - 1
MIN_INT32 = -(2**31)


@dataclass
class TimestampedRecommendation:
    """An un-stabilized metric proposal and when it was made."""

    replicas: int
    timestamp_s: float


@dataclass
class ScaleEvent:
    """A successful rescale: ``replica_change`` is the absolute change (>= 0)."""

    replica_change: int
    timestamp_s: float
    outdated: bool = False


@dataclass
class HpaState:
    """Controller memory for one HPA. Nothing is persisted, so a controller restart clears it.

    ``recommendations`` is None until the first reconcile seeds it with the current replica
    count (``recordInitialRecommendation``). An empty list is a seeded, empty history.
    """

    recommendations: Optional[list[TimestampedRecommendation]] = None
    scale_up_events: list[ScaleEvent] = field(default_factory=list)
    scale_down_events: list[ScaleEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Normalized:
    """A normalized replica count with the ScalingLimited reason and message."""

    replicas: int
    reason: str
    message: str


WITHIN_RANGE = Normalized(0, "DesiredWithinRange", "the desired count is within the acceptable range")
# ScalingLimited messages of horizontal.go.
SCALE_UP_LIMIT_MESSAGE = "the desired replica count is increasing faster than the maximum scale rate"
SCALE_DOWN_LIMIT_MESSAGE = "the desired replica count is decreasing faster than the maximum scale rate"
TOO_MANY_REPLICAS_MESSAGE = "the desired replica count is more than the maximum replica count"
TOO_FEW_REPLICAS_MESSAGE = "the desired replica count is less than the minimum replica count"


def stabilize_recommendation(
    recommendations: list[TimestampedRecommendation], proposal: int, now_s: float, window_s: float
) -> int:
    """Return the max proposal of the window and record ``proposal`` (legacy path).

    The last record older than the window is overwritten instead of appending.
    """
    max_recommendation = proposal
    cutoff = now_s - window_s
    old_index: Optional[int] = None
    for index, record in enumerate(recommendations):
        if record.timestamp_s < cutoff:
            old_index = index
        elif record.replicas > max_recommendation:
            max_recommendation = record.replicas
    _record(recommendations, old_index, TimestampedRecommendation(proposal, now_s))
    return max_recommendation


def calculate_scale_up_limit(current_replicas: int, factor: float = 2.0, minimum: float = 4.0) -> int:
    """Return the legacy scale-up cap, ``int32(max(factor * current, minimum))``."""
    return int(max(factor * float(current_replicas), minimum))


def convert_desired_replicas_with_rules(
    current_replicas: int,
    desired_replicas: int,
    min_replicas: int,
    max_replicas: int,
    factor: float = 2.0,
    minimum: float = 4.0,
) -> Normalized:
    """Clamp a legacy-path recommendation to [minReplicas, min(maxReplicas, scale-up cap)]."""
    scale_up_limit = calculate_scale_up_limit(current_replicas, factor, minimum)
    if max_replicas > scale_up_limit:
        maximum = Normalized(scale_up_limit, "ScaleUpLimit", SCALE_UP_LIMIT_MESSAGE)
    else:
        maximum = Normalized(max_replicas, "TooManyReplicas", TOO_MANY_REPLICAS_MESSAGE)
    if desired_replicas < min_replicas:
        return Normalized(min_replicas, "TooFewReplicas", TOO_FEW_REPLICAS_MESSAGE)
    if desired_replicas > maximum.replicas:
        return maximum
    return Normalized(desired_replicas, WITHIN_RANGE.reason, WITHIN_RANGE.message)


def stabilize_recommendation_with_behaviors(
    recommendations: list[TimestampedRecommendation],
    current_replicas: int,
    proposal: int,
    scale_up_window_s: float,
    scale_down_window_s: float,
    now_s: float,
) -> Normalized:
    """Clamp ``current_replicas`` between the min (scale-up window) and max (scale-down window) proposals.

    The raw ``proposal`` is recorded, overwriting the last record older than both windows.
    The reason is ScaleUpStabilized or ScaleDownStabilized by the proposal's direction.
    """
    up_recommendation = proposal
    down_recommendation = proposal
    up_cutoff = now_s - scale_up_window_s
    down_cutoff = now_s - scale_down_window_s
    old_index: Optional[int] = None
    for index, record in enumerate(recommendations):
        if record.timestamp_s > up_cutoff:
            up_recommendation = min(record.replicas, up_recommendation)
        if record.timestamp_s > down_cutoff:
            down_recommendation = max(record.replicas, down_recommendation)
        if record.timestamp_s < up_cutoff and record.timestamp_s < down_cutoff:
            old_index = index

    recommendation = current_replicas
    if recommendation < up_recommendation:
        recommendation = up_recommendation
    if recommendation > down_recommendation:
        recommendation = down_recommendation
    _record(recommendations, old_index, TimestampedRecommendation(proposal, now_s))

    if proposal >= current_replicas:
        message = "recent recommendations were lower than current one, applying the lowest recent recommendation"
        return Normalized(recommendation, "ScaleUpStabilized", message)
    message = "recent recommendations were higher than current one, applying the highest recent recommendation"
    return Normalized(recommendation, "ScaleDownStabilized", message)


def replicas_change_per_period(period_s: float, events: list[ScaleEvent], now_s: float) -> int:
    """Sum the changes of the events strictly newer than ``now - period``, outdated or not."""
    cutoff = now_s - period_s
    return sum(event.replica_change for event in events if event.timestamp_s > cutoff)


def calculate_scale_up_limit_with_scaling_rules(
    current_replicas: int,
    scale_up_events: list[ScaleEvent],
    scale_down_events: list[ScaleEvent],
    rules: HPAScalingRules,
    now_s: float,
) -> int:
    """Return the highest count the scale-up policies allow now (``selectPolicy`` Max, Min or Disabled)."""
    if rules.select_policy == "Disabled":
        return current_replicas
    # For scale-up, Min picks the smallest allowed count and Max the largest.
    use_min = rules.select_policy == "Min"
    result = MAX_INT32 if use_min else MIN_INT32
    for policy in rules.policies or ():
        period_start = (
            current_replicas
            - replicas_change_per_period(policy.period_seconds, scale_up_events, now_s)
            + replicas_change_per_period(policy.period_seconds, scale_down_events, now_s)
        )
        if policy.type == "Pods":
            proposed = period_start + policy.value
        else:
            # Rounded up so that a small percentage of a small count still allows one pod.
            proposed = math.ceil(float(period_start) * (1 + float(policy.value) / 100))
        result = min(result, proposed) if use_min else max(result, proposed)
    return result


def calculate_scale_down_limit_with_behaviors(
    current_replicas: int,
    scale_up_events: list[ScaleEvent],
    scale_down_events: list[ScaleEvent],
    rules: HPAScalingRules,
    now_s: float,
) -> int:
    """Return the lowest count the scale-down policies allow now."""
    if rules.select_policy == "Disabled":
        return current_replicas
    # For scale-down, Min (smallest change) picks the largest floor and Max the smallest.
    use_min = rules.select_policy == "Min"
    result = MIN_INT32 if use_min else MAX_INT32
    for policy in rules.policies or ():
        period_start = (
            current_replicas
            - replicas_change_per_period(policy.period_seconds, scale_up_events, now_s)
            + replicas_change_per_period(policy.period_seconds, scale_down_events, now_s)
        )
        if policy.type == "Pods":
            proposed = period_start - policy.value
        else:
            proposed = int(float(period_start) * (1 - float(policy.value) / 100))  # truncates toward zero
        result = max(result, proposed) if use_min else min(result, proposed)
    return result


def convert_desired_replicas_with_behavior_rate(
    current_replicas: int,
    desired_replicas: int,
    min_replicas: int,
    max_replicas: int,
    scale_up_rules: HPAScalingRules,
    scale_down_rules: HPAScalingRules,
    state: HpaState,
    now_s: float,
) -> Normalized:
    """Apply the rate-limit policies and the min/max clamp to a stabilized recommendation."""
    if desired_replicas > current_replicas:
        limit = calculate_scale_up_limit_with_scaling_rules(
            current_replicas, state.scale_up_events, state.scale_down_events, scale_up_rules, now_s
        )
        limit = max(limit, current_replicas)  # never below the current count
        if max_replicas > limit:
            maximum = Normalized(limit, "ScaleUpLimit", SCALE_UP_LIMIT_MESSAGE)
        else:
            maximum = Normalized(max_replicas, "TooManyReplicas", TOO_MANY_REPLICAS_MESSAGE)
        if desired_replicas > maximum.replicas:
            return maximum
    elif desired_replicas < current_replicas:
        limit = calculate_scale_down_limit_with_behaviors(
            current_replicas, state.scale_up_events, state.scale_down_events, scale_down_rules, now_s
        )
        limit = min(limit, current_replicas)  # never above the current count
        if min_replicas < limit:
            minimum = Normalized(limit, "ScaleDownLimit", SCALE_DOWN_LIMIT_MESSAGE)
        else:
            minimum = Normalized(min_replicas, "TooFewReplicas", TOO_FEW_REPLICAS_MESSAGE)
        if desired_replicas < minimum.replicas:
            return minimum
    return Normalized(desired_replicas, WITHIN_RANGE.reason, WITHIN_RANGE.message)


def store_scale_event(
    behavior: Optional[HorizontalPodAutoscalerBehavior], state: HpaState, previous_replicas: int, new_replicas: int, now_s: float
) -> None:
    """Record a successful rescale in the history of its direction (only when ``behavior`` is set).

    Events older than the longest policy period of that direction are marked outdated, and the
    last outdated slot is reused for the new event.
    """
    if behavior is None:
        return
    if new_replicas > previous_replicas:
        events, rules, change = state.scale_up_events, behavior.scale_up, new_replicas - previous_replicas
    else:
        events, rules, change = state.scale_down_events, behavior.scale_down, previous_replicas - new_replicas
    longest_period = max((policy.period_seconds for policy in (rules.policies if rules else None) or ()), default=0)
    cutoff = now_s - longest_period
    old_index: Optional[int] = None
    for index, event in enumerate(events):
        if event.timestamp_s < cutoff:
            event.outdated = True
        if event.outdated:
            old_index = index
    new_event = ScaleEvent(change, now_s, False)
    if old_index is None:
        events.append(new_event)
    else:
        events[old_index] = new_event


def _record(
    recommendations: list[TimestampedRecommendation], old_index: Optional[int], record: TimestampedRecommendation
) -> None:
    if old_index is None:
        recommendations.append(record)
    else:
        recommendations[old_index] = record
