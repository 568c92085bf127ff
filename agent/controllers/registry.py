"""Controller registry: evaluation and the runtime build controllers by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from omegaconf import DictConfig

from agent.controllers.base import Controller
from envs.cluster.spec import ClusterSpec
from envs.traces.records import ArrivalSeries


@dataclass
class ControllerContext:
    """Inputs a controller factory may use. Only offline baselines (the oracle) read
    ``eval_series``; tuned baselines fit on ``train_series``."""

    cfg: DictConfig
    cluster: ClusterSpec
    train_series: Sequence[Sequence[ArrivalSeries]] = ()
    eval_series: Sequence[ArrivalSeries] = ()
    seed: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


Factory = Callable[[ControllerContext], Controller]
_FACTORIES: dict[str, Factory] = {}


def register_controller(name: str) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        _FACTORIES[name] = factory
        return factory

    return wrap


def known_controllers() -> list[str]:
    _load_builtin()
    return sorted(_FACTORIES)


def make_controller(name: str, context: ControllerContext) -> Controller:
    """Build controller ``name``; raise ValueError listing the known names."""
    _load_builtin()
    if name not in _FACTORIES:
        raise ValueError(f"unknown controller {name!r}; known controllers: {sorted(_FACTORIES)}")
    controller = _FACTORIES[name](context)
    controller.name = name
    return controller


def _load_builtin() -> None:
    # Importing the modules runs their register_controller decorators.
    import agent.controllers.builtin  # noqa: F401
