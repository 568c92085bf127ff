"""Factories of the built-in controllers, registered by name."""

from __future__ import annotations

from agent.controllers.base import Controller
from agent.controllers.registry import ControllerContext, register_controller
from agent.policy import PolicyController


@register_controller("policy")
def _policy(context: ControllerContext) -> Controller:
    path = context.cfg.get("checkpoint")
    if not path:
        raise ValueError("controller 'policy' needs checkpoint=<path to policy .json>")
    return PolicyController.from_path(str(path), list(context.cluster.catalog.option_names),
                                      device=str(context.cfg.get("device", "auto")))
