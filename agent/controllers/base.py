"""The controller interface shared by the learned policy and every baseline.

A controller sees only a SignalBatch (what a live cluster exposes) and the
static EncoderContext (catalog and Deployment specs), and returns one target
replica count and one allocation option per Deployment. The evaluation loop
and the live runtime call the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from envs.observation import EncoderContext
from envs.signals import SignalBatch


class Controller(ABC):
    """Base class: ``reset`` once per episode, then ``decide`` once per tick."""

    name: str = "controller"

    def reset(self, ctx: EncoderContext, names: Sequence[str], tick_s: float) -> None:
        """Forget all per-Deployment state; ``names`` are the rows of later batches."""
        self.ctx = ctx
        self.names = list(names)
        self.tick_s = float(tick_s)

    @abstractmethod
    def decide(self, batch: SignalBatch, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Return (target replicas (N,), option indices (N,)) for the batch's rows."""
