"""Per-replica request capacity from a performance profile.

Prefill and decode share one GPU, so a replica at saturation spends
``I / prefill_tokens_per_s + O / decode_tokens_per_s`` replica-seconds per
request of I prompt and O output tokens. The KV cache bounds concurrency at
``max_concurrency`` sequences, each of which lives about ``I / prefill + O * itl``
seconds, which gives a second bound. Capacity is the smaller of the two.
"""

from __future__ import annotations

import numpy as np

# Mean tokens used when a tick has no requests, so that capacity stays defined.
DEFAULT_INPUT_TOKENS = 1000.0
DEFAULT_OUTPUT_TOKENS = 200.0


def replica_capacity_rps(
    prefill_tps: np.ndarray,
    decode_tps: np.ndarray,
    max_concurrency: np.ndarray,
    itl_s: np.ndarray,
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
) -> np.ndarray:
    """Return requests per second one replica sustains; 0 where the option does not fit.

    All arguments broadcast; profiles with a zero throughput (options that do not
    fit) return 0.
    """
    fits = (prefill_tps > 0) & (decode_tps > 0)
    safe_prefill = np.where(fits, prefill_tps, 1.0)
    safe_decode = np.where(fits, decode_tps, 1.0)
    work_s = input_tokens / safe_prefill + output_tokens / safe_decode
    throughput_bound = 1.0 / np.maximum(work_s, 1e-9)
    lifetime_s = input_tokens / safe_prefill + output_tokens * itl_s
    concurrency_bound = max_concurrency / np.maximum(lifetime_s, 1e-9)
    return np.where(fits, np.minimum(throughput_bound, concurrency_bound), 0.0)
