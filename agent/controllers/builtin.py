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
