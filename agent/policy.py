"""The learned policy: SB3's maskable actor-critic, built from a checkpoint for inference."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

from agent.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from agent.controllers.base import Controller
from envs.actions import N_LEVELS, option_choices, action_masks, decode_actions
from envs.observation import OBSERVATION_BOUND, EncoderContext, encode, new_history, observation_size, push_history
from envs.signals import SignalBatch


def select_device(requested: str = "auto") -> torch.device:
    """Return CUDA when available (or requested), else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def policy_spaces(n_options: int) -> tuple[spaces.Box, spaces.MultiDiscrete]:
    obs = spaces.Box(-OBSERVATION_BOUND, OBSERVATION_BOUND, shape=(observation_size(n_options),), dtype=np.float32)
    act = spaces.MultiDiscrete([N_LEVELS, option_choices(n_options)])
    return obs, act


def build_policy(n_options: int, net_arch: Sequence[int], device: torch.device | str = "cpu") -> MaskableActorCriticPolicy:
    """Create an untrained policy network with the project's observation and action spaces."""
    obs_space, act_space = policy_spaces(n_options)
    policy = MaskableActorCriticPolicy(obs_space, act_space, lambda _: 0.0, net_arch=list(net_arch))
    return policy.to(device)


def policy_from_checkpoint(checkpoint: Checkpoint, device: torch.device | str = "cpu") -> MaskableActorCriticPolicy:
    policy = build_policy(len(checkpoint.option_names), checkpoint.net_arch, device)
    try:
        policy.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint tensors do not match the policy network {checkpoint.net_arch}: {error}") from error
    policy.set_training_mode(False)
    return policy


class PolicyController(Controller):
    """Acts with a trained policy: encode, mask, predict deterministically, decode."""

    name = "policy"

    def __init__(self, policy: MaskableActorCriticPolicy, *, deterministic: bool = True) -> None:
        self.policy = policy
        self.deterministic = deterministic
        self._history: np.ndarray | None = None
        self._last_batch: SignalBatch | None = None

    @classmethod
    def from_path(cls, path: str | Path, option_names: list[str], device: str = "auto") -> "PolicyController":
        checkpoint = load_checkpoint(path, option_names=option_names)
        return cls(policy_from_checkpoint(checkpoint, select_device(device)))

    def reset(self, ctx: EncoderContext, names: Sequence[str], tick_s: float) -> None:
        super().reset(ctx, names, tick_s)
        self._history = None
        self._last_batch = None

    def decide(self, batch: SignalBatch, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        if self._history is None or self._history.shape[0] != len(batch):
            self._history = new_history(batch)
        elif self._last_batch is not None:
            self._history = push_history(self._history, self._last_batch)
        obs = encode(batch, self.ctx, self._history)
        masks = action_masks(self.ctx, batch)
        actions, _ = self.policy.predict(obs, deterministic=self.deterministic, action_masks=masks)
        self._last_batch = batch
        return decode_actions(np.asarray(actions), self.ctx, batch, self._history)
