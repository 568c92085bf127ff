"""Controllers: anything that turns a SignalBatch into replica and option decisions."""

from agent.controllers.base import Controller

__all__ = ["Controller"]
