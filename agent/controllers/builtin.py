"""Factories of the built-in controllers, registered by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.controllers.base import Controller
from agent.controllers.registry import ControllerContext, register_controller
from agent.policy import PolicyController

if TYPE_CHECKING:
    from agent.baselines.hpa_baseline import HpaSettings


@register_controller("policy")
def _policy(context: ControllerContext) -> Controller:
    path = context.cfg.get("checkpoint")
    if not path:
        raise ValueError("controller 'policy' needs checkpoint=<path to policy .json>")
    return PolicyController.from_path(str(path), list(context.cluster.catalog.option_names),
                                      device=str(context.cfg.get("device", "auto")))


def hpa_settings(context: ControllerContext) -> "HpaSettings":
    from agent.baselines.hpa_baseline import HpaSettings

    raw = context.cfg.get("eval", {}).get("hpa", {}) or {}
    return HpaSettings(**{k: v for k, v in dict(raw).items()})


@register_controller("hpa")
def _hpa(context: ControllerContext) -> Controller:
    from agent.baselines.hpa_baseline import HpaBaseline

    return HpaBaseline(hpa_settings(context))


def baseline_settings(context: ControllerContext, section: str, settings_type: type) -> object:
    """Build ``settings_type`` from ``eval.<section>``; raise ValueError naming an unknown key."""
    # Imported here because other factories own the top of this module.
    import dataclasses

    from omegaconf import DictConfig, OmegaConf

    raw = context.cfg.get("eval", {}).get(section, {}) or {}
    values = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else dict(raw)
    known = {f.name for f in dataclasses.fields(settings_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"eval.{section} has unknown keys {unknown}; known keys: {sorted(known)}")
    # YAML lists become tuples, the frozen settings' sequence type.
    return settings_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@register_controller("kpa")
def _kpa(context: ControllerContext) -> Controller:
    from agent.baselines.kpa import KpaBaseline, KpaSettings

    return KpaBaseline(baseline_settings(context, "kpa", KpaSettings))


@register_controller("predictive")
def _predictive(context: ControllerContext) -> Controller:
    from agent.baselines.predictive import PredictivePlanner, PredictiveSettings

    return PredictivePlanner(baseline_settings(context, "predictive", PredictiveSettings))


@register_controller("static")
def _static(context: ControllerContext) -> Controller:
    from agent.baselines.static import StaticAllocation, StaticSettings, plan_static

    replicas, options = plan_static(context.cluster, context.train_series,
                                    baseline_settings(context, "static", StaticSettings))
    return StaticAllocation(replicas, options)


@register_controller("oracle")
def _oracle(context: ControllerContext) -> Controller:
    from agent.baselines.oracle import OracleSettings, build_oracle

    if not context.eval_series:
        raise ValueError("controller 'oracle' needs the evaluation series in its ControllerContext (eval_series)")
    return build_oracle(context.cluster, context.eval_series, baseline_settings(context, "oracle", OracleSettings),
                        seed=context.seed)


@register_controller("tuned_hpa")
def _tuned_hpa(context: ControllerContext) -> Controller:
    from agent.baselines.tuning import TuningSettings, tuned_hpa_controller

    settings = baseline_settings(context, "tuned_hpa", TuningSettings)
    return tuned_hpa_controller(context.cluster, context.train_series, hpa_settings(context), settings,
                                search_options=False)


@register_controller("hpa_best_static")
def _hpa_best_static(context: ControllerContext) -> Controller:
    from agent.baselines.tuning import TuningSettings, tuned_hpa_controller

    # The same grid and goal as tuned_hpa, over every option as well.
    settings = baseline_settings(context, "tuned_hpa", TuningSettings)
    return tuned_hpa_controller(context.cluster, context.train_series, hpa_settings(context), settings,
                                search_options=True)
