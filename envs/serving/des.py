"""Per-request discrete-event serving model: exact FCFS queueing on the fluid model's servers.

The fluid model (``envs.serving.fluid``) approximates each tick's wait
distribution. This model simulates every request instead, with the same
inputs per tick: the Ready capacity ``C`` requests per second, the
``c = replicas * SERVERS_PER_REPLICA`` servers and the capacity-weighted
profile. Per Deployment:

* Requests are served first come, first served by ``c`` identical servers.
  A request's relative work ``w`` is its ``I / prefill + O / decode`` divided
  by the same quantity for the tick's mean request. It occupies a server for
  ``w * c / C`` seconds, so the servers together sustain ``C`` requests per
  second of mean work, as in the fluid model.
* A request that would wait longer than ``queue_timeout_s`` is dropped.
* TTFT is the wait plus ``input_tokens / prefill_tps * (1 + rho)``, with the
  profile and utilisation ``rho`` of the tick in which its service starts
  (the fluid model's prefill formula with the request's own prompt).
  End-to-end latency adds ``output_tokens * itl_s * (1 + rho)``.
* Waiting requests and busy servers carry over to the next tick. Servers are
  added or removed at tick boundaries; a removed server finishes the request
  it holds, and idle servers are removed first.

Requests come from a ``RequestTrace`` (real timestamps and token counts), or
they are drawn from the tick's count in the ArrivalSeries. Drawn arrival
times are uniform order statistics within the tick, which is a Poisson
process given its count. Drawn token counts follow a gamma distribution,
rescaled so that the tick's mean equals the series' mean.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from envs.serving.fluid import SERVERS_PER_REPLICA, gather_by_option, serving_inputs
from envs.sim.params import SimParams
from envs.sim.state import SimState
from envs.traces.records import RequestTrace

# Coefficient of variation of drawn token counts. The Azure LLM inference
# traces of 2023 (code and conversation) both have prompt lengths with a CV of
# about 0.96 and output lengths with a CV of 0.77 to 2.1, so the default draws
# exponential-like prompts and outputs.
DEFAULT_TOKEN_CV = 1.0


@dataclass
class Requests:
    """Requests in arrival order; times in seconds on the episode's clock."""

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    work: np.ndarray  # service demand relative to the mean request of the arrival tick

    @classmethod
    def empty(cls) -> Requests:
        return cls(*(np.zeros(0) for _ in range(4)))

    def __len__(self) -> int:
        return len(self.arrival_s)

    def select(self, index: np.ndarray | slice) -> Requests:
        return Requests(self.arrival_s[index], self.input_tokens[index], self.output_tokens[index], self.work[index])

    def extend(self, later: Requests) -> Requests:
        """Return these requests followed by ``later``, which must not arrive earlier."""
        if len(self) == 0:
            return later
        if len(later) == 0:
            return self
        return Requests(*(np.concatenate([a, b]) for a, b in zip(self._arrays(), later._arrays())))

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self.arrival_s, self.input_tokens, self.output_tokens, self.work


@dataclass
class QueueTick:
    """Outcome of one tick of an FcfsQueue: the requests that started service, and the drop count."""

    started: Requests
    start_s: np.ndarray
    dropped: int


class FcfsQueue:
    """First-come, first-served queue over parallel servers, carried from tick to tick."""

    def __init__(self) -> None:
        # Min-heap of the times at which each server finishes its current request.
        self.free_at: list[float] = []
        self.waiting = Requests.empty()

    @property
    def servers(self) -> int:
        return len(self.free_at)

    def set_servers(self, servers: int, now_s: float) -> None:
        """Add idle servers at ``now_s`` or remove servers, earliest free first."""
        if servers < 0:
            raise ValueError(f"servers is {servers}; it must be >= 0")
        while len(self.free_at) > servers:
            heapq.heappop(self.free_at)
        for _ in range(servers - len(self.free_at)):
            heapq.heappush(self.free_at, now_s)

    def serve(self, arrivals: Requests, start_s: float, end_s: float, service_s: float, timeout_s: float) -> QueueTick:
        """Serve the waiting requests, then ``arrivals``, until the tick ``[start_s, end_s)`` ends.

        A request occupies a server for ``service_s * work`` seconds. One whose
        wait would exceed ``timeout_s`` is dropped, and requests still waiting
        at ``end_s`` stay in the queue.
        """
        queue = self.waiting.extend(arrivals)
        arrival = queue.arrival_s.tolist()
        service = (queue.work * service_s).tolist()
        heap = self.free_at
        replace = heapq.heapreplace
        started: list[int] = []
        starts: list[float] = []
        dropped = 0
        # Without servers no request starts. Otherwise the loop lowers ``stop``
        # to the first request that cannot start before end_s.
        stop = len(arrival) if heap else 0
        for i in range(stop):
            a = arrival[i]
            free = heap[0]
            begin = a if a > free else free
            if begin >= end_s:
                stop = i
                break
            if begin - a > timeout_s:
                dropped += 1
                continue
            replace(heap, begin + service[i])
            started.append(i)
            starts.append(begin)
        # No request from ``stop`` on starts before end_s. Those whose deadline
        # falls inside the tick are dropped, and because arrivals are sorted
        # they form a prefix.
        rest = queue.select(slice(stop, None))
        expired = int(np.searchsorted(rest.arrival_s + timeout_s, end_s, side="left"))
        self.waiting = rest.select(slice(expired, None))
        index = np.asarray(started, dtype=np.int64)
        return QueueTick(queue.select(index), np.asarray(starts, dtype=np.float64), dropped + expired)


def draw_requests(
    rng: np.random.Generator,
    count: float,
    start_s: float,
    tick_s: float,
    mean_input: float,
    mean_output: float,
    input_cv: float = DEFAULT_TOKEN_CV,
    output_cv: float = DEFAULT_TOKEN_CV,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one tick's requests: (arrival times, input tokens, output tokens).

    A fractional ``count`` rounds up with probability equal to its fraction,
    so the expected count is kept. Token counts are gamma distributed with
    coefficients of variation ``input_cv`` and ``output_cv`` (constant for 0)
    and rescaled so that their means equal ``mean_input`` and ``mean_output``.
    """
    whole = int(np.floor(count))
    n = whole + int(rng.random() < count - whole)
    arrival = start_s + tick_s * np.sort(rng.random(n))
    return arrival, _draw_tokens(rng, n, mean_input, input_cv), _draw_tokens(rng, n, mean_output, output_cv)


def _draw_tokens(rng: np.random.Generator, n: int, mean: float, cv: float) -> np.ndarray:
    if cv <= 0 or n == 0:
        return np.full(n, float(mean))
    shape = 1.0 / cv**2
    tokens = rng.gamma(shape, mean / shape, n)
    total = tokens.sum()
    return tokens * (mean * n / total) if total > 0 else np.full(n, float(mean))


@dataclass(frozen=True)
class TraceSource:
    """Real requests of a Deployment: tick t of the episode replays ``[start_s + t * tick_s, ...)`` of ``trace``.

    The trace must be on the series' time axis. Its requests are replayed as
    they are: a Deployment ``rate_scale`` does not apply to them.
    """

    trace: RequestTrace
    start_s: float = 0.0


class DiscreteEventServing:
    """Serve every (env, Deployment) row request by request; pass it as ``serving`` to ``BatchedSimulator.step``.

    Args:
        n_rows: rows of the simulator, ``n_envs * n_deployments``.
        seed: seed of the drawn arrival times and token counts; row r uses
            the stream ``(seed, r)``.
        input_cv, output_cv: coefficients of variation of drawn token counts.
        traces: per Deployment, a TraceSource to replay, or None to draw
            requests from the tick counts of the simulator's series.
    """

    def __init__(
        self,
        n_rows: int,
        *,
        seed: int = 0,
        input_cv: float = DEFAULT_TOKEN_CV,
        output_cv: float = DEFAULT_TOKEN_CV,
        traces: Sequence[TraceSource | None] | None = None,
    ) -> None:
        for name, value in (("input_cv", input_cv), ("output_cv", output_cv)):
            if not value >= 0:
                raise ValueError(f"{name} is {value}; it must be >= 0 (0 gives constant token counts)")
        self.n_rows = int(n_rows)
        self.seed = int(seed)
        self.input_cv = float(input_cv)
        self.output_cv = float(output_cv)
        self.traces = list(traces) if traces is not None else []
        self.reset()

    def reset(self) -> None:
        """Empty every queue and forget the recorded latencies; the random streams restart."""
        self.queues = [FcfsQueue() for _ in range(self.n_rows)]
        self.rngs = [np.random.default_rng([self.seed, row]) for row in range(self.n_rows)]
        # Per tick, the TTFT and end-to-end latency of every request that started service.
        self.tick_ttft_s: list[np.ndarray] = []
        self.tick_e2e_s: list[np.ndarray] = []

    def request_ttft_s(self) -> np.ndarray:
        """Return the TTFT of every request served so far, in the order service started."""
        return np.concatenate(self.tick_ttft_s) if self.tick_ttft_s else np.zeros(0)

    def __call__(self, state: SimState, params: SimParams) -> None:
        """Serve tick ``state.t`` of every row and store the tick's metrics in ``state``."""
        n_envs, n_dep = state.ready.shape
        if n_envs * n_dep != self.n_rows:
            raise ValueError(
                f"DiscreteEventServing was built for {self.n_rows} rows but the state has {n_envs} x {n_dep}; "
                "build it with n_rows = n_envs * n_deployments"
            )
        if self.traces and len(self.traces) != n_dep:
            raise ValueError(f"got request traces for {len(self.traces)} Deployments, the cluster has {n_dep}")

        inputs = serving_inputs(state, params)
        # Relative work uses the current option's decode rate; during a rollout
        # the old option's replicas may decode at another rate.
        decode_tps = gather_by_option(params.decode_tps, state.option)
        metrics = {name: np.zeros((n_envs, n_dep)) for name in _METRICS}
        ttfts, e2es = [], []

        for e in range(n_envs):
            for d in range(n_dep):
                row = e * n_dep + d
                start_s = float(state.t[e]) * params.tick_s
                requests = self._tick_requests(row, d, start_s, params.tick_s, inputs.arrivals[e, d],
                                          inputs.input_tokens[e, d], inputs.output_tokens[e, d])
                prefill, decode = float(inputs.prefill_tps[e, d]), float(decode_tps[e, d])
                requests.work = _relative_work(requests, prefill, decode)
                values, ttft, e2e = serve_row_tick(
                    self.queues[row], requests, start_s, params.tick_s,
                    capacity_rps=float(inputs.capacity_rps[e, d]), servers=int(round(inputs.servers[e, d])),
                    prefill_tps=prefill, itl_s=float(inputs.itl_s[e, d]),
                    slo_s=float(params.slo_ttft_s[d]), timeout_s=float(params.queue_timeout_s[d]),
                )
                for name, value in values.items():
                    metrics[name][e, d] = value
                ttfts.append(ttft)
                e2es.append(e2e)

        self.tick_ttft_s.append(np.concatenate(ttfts))
        self.tick_e2e_s.append(np.concatenate(e2es))
        metrics["input_tokens"] = inputs.input_tokens
        metrics["output_tokens"] = inputs.output_tokens
        for name, value in metrics.items():
            setattr(state, name, value)

    def _tick_requests(
        self, row: int, deployment: int, start_s: float, tick_s: float, count: float, mean_in: float, mean_out: float
    ) -> Requests:
        source = self.traces[deployment] if self.traces else None
        if source is None:
            arrival, inp, out = draw_requests(
                self.rngs[row], count, start_s, tick_s, mean_in, mean_out, self.input_cv, self.output_cv
            )
        else:
            times = source.trace.arrival_s
            first, stop = np.searchsorted(times, [source.start_s + start_s, source.start_s + start_s + tick_s])
            arrival = times[first:stop] - source.start_s
            inp = source.trace.input_tokens[first:stop].astype(np.float64)
            out = source.trace.output_tokens[first:stop].astype(np.float64)
        return Requests(arrival, inp, out, np.ones(len(arrival)))


def serve_row_tick(
    queue: FcfsQueue, requests: Requests, start_s: float, tick_s: float, *, capacity_rps: float, servers: int,
    prefill_tps: float, itl_s: float, slo_s: float, timeout_s: float,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Serve one Deployment's tick ``[start_s, start_s + tick_s)`` on ``queue``.

    Returns the tick's metrics under SimState field names, and the TTFT and
    end-to-end latency of each request that started service in the tick.
    """
    end_s = start_s + tick_s
    if capacity_rps <= 0:
        servers = 0
    queue.set_servers(servers, start_s)
    service_s = servers / capacity_rps if servers else 0.0
    tick = queue.serve(requests, start_s, end_s, service_s, timeout_s)

    # Latency of the requests that started, with this tick's profile and load.
    rho = min(len(requests) / tick_s / capacity_rps, 1.0) if capacity_rps > 0 else 1.0
    slow_down = 1.0 + rho
    per_token = 1.0 / prefill_tps if prefill_tps > 0 else 0.0
    prefill = tick.started.input_tokens * per_token * slow_down
    decode = tick.started.output_tokens * itl_s * slow_down
    ttft = tick.start_s - tick.started.arrival_s + prefill
    e2e = ttft + decode
    if len(ttft):
        p50, p95, p99 = np.quantile(ttft, (0.5, 0.95, 0.99))
        e2e_p95 = float(np.quantile(e2e, 0.95))
    else:
        # No request started: report the oldest waiting request's wait so far, or the bare prefill time.
        mean_in = float(requests.input_tokens.mean()) if len(requests) else 0.0
        waited = end_s - float(queue.waiting.arrival_s[0]) if len(queue.waiting) else 0.0
        p50 = p95 = p99 = e2e_p95 = waited + mean_in * per_token * slow_down
    values = {
        "arrivals": float(len(requests)),
        "served": float(len(ttft)),
        "dropped": float(tick.dropped),
        "backlog": float(len(queue.waiting)),
        "slo_met": float(np.count_nonzero(ttft <= slo_s)),
        "ttft_p50_s": float(p50),
        "ttft_p95_s": float(p95),
        "ttft_p99_s": float(p99),
        "e2e_p95_s": e2e_p95,
        "utilization": rho,
        "running": float((prefill + decode).sum()) / tick_s,
    }
    return values, ttft, e2e


_METRICS = (
    "arrivals", "served", "dropped", "backlog", "slo_met", "ttft_p50_s", "ttft_p95_s", "ttft_p99_s",
    "e2e_p95_s", "utilization", "running",
)


def _relative_work(requests: Requests, prefill_tps: float, decode_tps: float) -> np.ndarray:
    """Return each request's ``I / prefill + O / decode`` over the mean of the tick's requests."""
    if len(requests) == 0 or prefill_tps <= 0 or decode_tps <= 0:
        return np.ones(len(requests))
    work = requests.input_tokens / prefill_tps + requests.output_tokens / decode_tps
    mean = work.mean()
    return work / mean if mean > 0 else np.ones(len(requests))
