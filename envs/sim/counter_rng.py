"""Counter-based random numbers, vectorised over environments.

Each draw is a pure function of (seed, env id, episode, stream), computed
with the SplitMix64 finaliser (Steele, Lea and Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014). An environment therefore sees
the same random numbers whether it runs alone or as one row of a batch, which
is what makes the batched and scalar environments give equal trajectories.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _MUL1
        x = (x ^ (x >> np.uint64(27))) * _MUL2
        return x ^ (x >> np.uint64(31))


def uniform(seed: int, env_ids: np.ndarray, episode: np.ndarray, stream: int, size: int = 1) -> np.ndarray:
    """Return uniforms in [0, 1) of shape (len(env_ids), size)."""
    env = np.asarray(env_ids, dtype=np.uint64)[:, None]
    ep = np.asarray(episode, dtype=np.uint64)[:, None]
    col = np.arange(size, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        key = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + _mix(env * np.uint64(0x100000001B3) + ep))
        key = _mix(key + np.uint64(stream) * np.uint64(0x632BE59BD9B4E019) + col)
    return (key >> np.uint64(11)).astype(np.float64) / float(1 << 53)
