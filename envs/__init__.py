"""Cluster models: simulator, traces, the Gymnasium env and the batched VecEnv.

Importing this package registers the Gymnasium id ``GpuAutoscaler-v0``; make it
with ``gymnasium.make("GpuAutoscaler-v0", cluster=..., series=...)``.
"""

from gymnasium.envs.registration import register, registry

ENV_ID = "GpuAutoscaler-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.gym_env:GpuAutoscalerEnv")
