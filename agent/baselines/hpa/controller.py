"""The HorizontalPodAutoscaler controller loop for one HPA, as ``reconcileAutoscaler`` in ``horizontal.go``.

``HpaController.reconcile`` is one sync of the upstream controller (Kubernetes 1.3x). It reads
the Scale (spec and status replicas) and proposes replicas per metric. It then takes the max
over the valid metrics, normalizes it (legacy path or ``behavior`` path) and reports what it
would write to the Scale. The caller runs it every ``sync_period_s`` and applies the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

from .api_types import HorizontalPodAutoscaler
from .metric_proposals import MetricFailure, MetricProposal, MetricStatus, compute_metric_proposal
from .normalization import (
    HpaState,
    Normalized,
    TimestampedRecommendation,
    convert_desired_replicas_with_behavior_rate,
    convert_desired_replicas_with_rules,
    stabilize_recommendation,
    stabilize_recommendation_with_behaviors,
    store_scale_event,
)
from .pods import MetricValues, Pod
from .replica_calculator import ReplicaCalculator, Tolerances

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HpaCondition:
    """A status condition: type AbleToScale, ScalingActive or ScalingLimited."""

    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class HpaResult:
    """Outcome of one reconcile.

    ``desired_replicas`` is the count written to the Scale when ``rescale`` is True (attempted
    only, when ``write_succeeded`` is False) and the current count otherwise.
    ``metric_desired_replicas`` is the max over the valid metrics before normalization, or
    None when no metric was evaluated or the metrics failed.
    """

    current_replicas: int
    desired_replicas: int
    rescale: bool
    write_succeeded: bool
    metric_desired_replicas: Optional[int]
    reason: str
    conditions: tuple[HpaCondition, ...]
    metric_statuses: tuple[MetricStatus, ...]
    error: Optional[str] = None

    def condition(self, condition_type: str) -> Optional[HpaCondition]:
        """Return the condition of ``condition_type``, or None when it is not set."""
        return next((c for c in self.conditions if c.type == condition_type), None)


class HpaController:
    """Controller state and sync logic for one HorizontalPodAutoscaler.

    The keyword arguments are the kube-controller-manager flags with their defaults
    (``pkg/controller/podautoscaler/config/v1alpha1/defaults.go``). ``configurable_tolerance``
    is the HPAConfigurableTolerance feature gate (beta and on by default since 1.35): with it,
    ``behavior.scaleUp/scaleDown.tolerance`` replace the flag per direction.
    ``scale_up_limit_factor`` and ``scale_up_limit_minimum`` are the legacy-path constants
    (2.0 and 4.0 upstream).
    """

    def __init__(
        self,
        hpa: HorizontalPodAutoscaler,
        *,
        sync_period_s: float = 15.0,
        tolerance: float = 0.1,
        downscale_stabilization_s: float = 300.0,
        cpu_initialization_period_s: float = 300.0,
        initial_readiness_delay_s: float = 30.0,
        configurable_tolerance: bool = True,
        scale_up_limit_factor: float = 2.0,
        scale_up_limit_minimum: float = 4.0,
    ) -> None:
        self.hpa = hpa.with_api_defaults()
        self.sync_period_s = sync_period_s
        self.tolerance = tolerance
        self.downscale_stabilization_s = downscale_stabilization_s
        self.configurable_tolerance = configurable_tolerance
        self.scale_up_limit_factor = scale_up_limit_factor
        self.scale_up_limit_minimum = scale_up_limit_minimum
        self.calculator = ReplicaCalculator(cpu_initialization_period_s, initial_readiness_delay_s)
        self.state = HpaState()
        self.conditions: list[HpaCondition] = []

    def reset(self) -> None:
        """Forget all history, as a controller restart or an HPA re-creation does."""
        self.state = HpaState()
        self.conditions = []

    def tolerances(self) -> Tolerances:
        """Return the per-direction tolerances (``tolerancesForHpa`` in Kubernetes 1.33+)."""
        scale_down = scale_up = self.tolerance
        behavior = self.hpa.behavior
        if self.configurable_tolerance and behavior is not None:
            if behavior.scale_down is not None and behavior.scale_down.tolerance is not None:
                scale_down = behavior.scale_down.tolerance
            if behavior.scale_up is not None and behavior.scale_up.tolerance is not None:
                scale_up = behavior.scale_up.tolerance
        return Tolerances(scale_down=scale_down, scale_up=scale_up)

    def reconcile(
        self,
        now_s: float,
        scale_spec_replicas: int,
        scale_status_replicas: int,
        pods: Sequence[Pod],
        metric_values: MetricValues,
        *,
        write_succeeded: bool = True,
    ) -> HpaResult:
        """Run one sync at time ``now_s`` and return the replica count to write.

        ``scale_spec_replicas`` is the target's spec.replicas (the controller's "current"),
        ``scale_status_replicas`` its status.replicas. ``write_succeeded=False`` simulates a
        failed Scale update, after which no scale event is stored, as upstream.
        """
        hpa = self.hpa
        self._set_condition(
            "AbleToScale", True, "SucceededGetScale", "the HPA controller was able to get the target's current scale"
        )
        current = scale_spec_replicas
        if self.state.recommendations is None:
            self.state.recommendations = [TimestampedRecommendation(current, now_s)]

        rescale = True
        reason = ""
        metric_desired: Optional[int] = None
        statuses: tuple[MetricStatus, ...] = ()
        error: Optional[str] = None
        if current == 0 and hpa.min_replicas != 0:
            # Implicit maintenance mode: a target scaled to zero by hand is left alone.
            desired = 0
            rescale = False
            self._set_condition(
                "ScalingActive", False, "ScalingDisabled", "scaling is disabled since the replica count of the target is zero"
            )
        elif current > hpa.max_replicas:
            reason = "Current number of replicas above Spec.MaxReplicas"
            desired = hpa.max_replicas
        elif current < hpa.min_replicas:
            reason = "Current number of replicas below Spec.MinReplicas"
            desired = hpa.min_replicas
        else:
            metric_desired, statuses, error, metric_name = self._compute_replicas_for_metrics(
                now_s, current, scale_status_replicas, pods, metric_values
            )
            if metric_desired is None:
                logger.debug("HPA %s: no valid metric, keeping %d replicas: %s", hpa.key, current, error)
                return self._result(current, current, False, True, None, "", statuses, error)
            desired = max(0, metric_desired)
            if desired > current:
                reason = f"{metric_name} above target"
            elif desired < current:
                reason = "All metrics below target"
            desired = self._normalize(current, desired, now_s)
            rescale = desired != current

        if not rescale:
            return self._result(current, current, False, True, metric_desired, reason, statuses, error)
        if not write_succeeded:
            self._set_condition(
                "AbleToScale", False, "FailedUpdateScale", "the HPA controller was unable to update the target scale"
            )
            logger.debug("HPA %s: update of the Scale to %d failed, so no scale event is stored", hpa.key, desired)
            return self._result(current, desired, True, False, metric_desired, reason, statuses, error)
        self._set_condition(
            "AbleToScale", True, "SucceededRescale", f"the HPA controller was able to update the target scale to {desired}"
        )
        store_scale_event(hpa.behavior, self.state, current, desired, now_s)
        logger.debug("HPA %s: rescaled %d -> %d (%s)", hpa.key, current, desired, reason)
        return self._result(current, desired, True, True, metric_desired, reason, statuses, error)

    def _compute_replicas_for_metrics(
        self, now_s: float, spec_replicas: int, status_replicas: int, pods: Sequence[Pod], metric_values: MetricValues
    ) -> tuple[Optional[int], tuple[MetricStatus, ...], Optional[str], str]:
        """Return (max proposal or None, statuses, error, name of the deciding metric).

        A broken metric never allows a scale-down. With any invalid metric, a max below
        spec.replicas is rejected, but a scale-up on the valid metrics goes ahead.
        """
        tolerances = self.tolerances()
        statuses: list[MetricStatus] = []
        failures: list[MetricFailure] = []
        best: Optional[MetricProposal] = None
        for spec in self.hpa.metrics:
            try:
                proposal = compute_metric_proposal(
                    spec, self.calculator, spec_replicas, status_replicas, pods, metric_values, tolerances, now_s
                )
            except MetricFailure as failure:
                failures.append(failure)
                statuses.append(MetricStatus(spec.type, spec.name, error=failure.message))
                continue
            statuses.append(proposal.status)
            if best is None or best.replicas == 0 or proposal.replicas > best.replicas:
                best = proposal

        error = None
        if failures:
            error = (
                f"invalid metrics ({len(failures)} invalid out of {len(self.hpa.metrics)}), "
                f"first error is: {failures[0].message}"
            )
        replicas = best.replicas if best is not None else 0
        if len(failures) >= len(self.hpa.metrics) or (failures and replicas < spec_replicas):
            message = f"the HPA was unable to compute the replica count: {failures[0].message}"
            self._set_condition("ScalingActive", False, failures[0].reason, message)
            return None, tuple(statuses), error, ""
        assert best is not None  # at least one metric is valid here
        message = f"the HPA was able to successfully calculate a replica count from {best.description}"
        self._set_condition("ScalingActive", True, "ValidMetricFound", message)
        return replicas, tuple(statuses), error, best.description

    def _normalize(self, current: int, proposal: int, now_s: float) -> int:
        hpa = self.hpa
        recommendations = self.state.recommendations
        assert recommendations is not None  # seeded at the start of reconcile
        if hpa.behavior is None:
            stabilized = stabilize_recommendation(recommendations, proposal, now_s, self.downscale_stabilization_s)
            if stabilized != proposal:
                message = "recent recommendations were higher than current one, applying the highest recent recommendation"
                self._set_condition("AbleToScale", True, "ScaleDownStabilized", message)
            else:
                self._set_condition("AbleToScale", True, "ReadyForNewScale", "recommended size matches current size")
            limited = convert_desired_replicas_with_rules(
                current, stabilized, hpa.min_replicas, hpa.max_replicas, self.scale_up_limit_factor, self.scale_up_limit_minimum
            )
        else:
            scale_up, scale_down = hpa.behavior.scale_up, hpa.behavior.scale_down
            assert scale_up is not None and scale_down is not None  # filled by with_api_defaults
            down_window = scale_down.stabilization_window_seconds
            if down_window is None:
                down_window = self.downscale_stabilization_s  # maybeInitScaleDownStabilizationWindow
            stabilized_result = stabilize_recommendation_with_behaviors(
                recommendations, current, proposal, scale_up.stabilization_window_seconds or 0, down_window, now_s
            )
            stabilized = stabilized_result.replicas
            if stabilized != proposal:
                self._set_condition("AbleToScale", True, stabilized_result.reason, stabilized_result.message)
            else:
                self._set_condition("AbleToScale", True, "ReadyForNewScale", "recommended size matches current size")
            limited = convert_desired_replicas_with_behavior_rate(
                current, stabilized, hpa.min_replicas, hpa.max_replicas, scale_up, scale_down, self.state, now_s
            )
        self._set_limited(limited, stabilized)
        return limited.replicas

    def _set_limited(self, limited: Normalized, stabilized: int) -> None:
        self._set_condition("ScalingLimited", limited.replicas != stabilized, limited.reason, limited.message)

    def _set_condition(self, condition_type: str, status: bool, reason: str, message: str) -> None:
        """Replace the condition of this type in place, or append it (``setConditionInList``)."""
        condition = HpaCondition(condition_type, status, reason, message)
        for index, existing in enumerate(self.conditions):
            if existing.type == condition_type:
                self.conditions[index] = condition
                return
        self.conditions.append(condition)

    def _result(
        self,
        current: int,
        desired: int,
        rescale: bool,
        write_succeeded: bool,
        metric_desired: Optional[int],
        reason: str,
        statuses: tuple[MetricStatus, ...],
        error: Optional[str],
    ) -> HpaResult:
        return HpaResult(
            current_replicas=current,
            desired_replicas=desired,
            rescale=rescale,
            write_succeeded=write_succeeded,
            metric_desired_replicas=metric_desired,
            reason=reason,
            conditions=tuple(self.conditions),
            metric_statuses=statuses,
            error=error,
        )
