"""Workload traces: readers for public serving and web traces and the per-tick series the simulator replays.

``load_trace`` builds a series from a ``conf/trace`` spec. The readers and the
record types are exported for scripts that work with traces directly.
"""

from envs.traces.errors import TraceFormatError
from envs.traces.loader import (
    EMBEDDED_DATA,
    REPO_ROOT,
    SHARED_TRACES,
    TRACES_ENV_VAR,
    TraceSpecError,
    load_trace,
    resolve_trace_path,
    shared_traces_dir,
)
from envs.traces.nasa import NASA_MEAN_INPUT_TOKENS, NASA_MEAN_OUTPUT_TOKENS, read_nasa_http
from envs.traces.readers import (
    SERVEGEN_MEAN_INPUT_TOKENS,
    SERVEGEN_MEAN_OUTPUT_TOKENS,
    rate_to_series,
    read_alibaba_genai_requests,
    read_azure_llm,
    read_mooncake,
    read_servegen,
    servegen_clients,
    time_scale,
    to_series,
)
from envs.traces.records import ArrivalSeries, RateTrace, RequestTrace

__all__ = [
    "ArrivalSeries",
    "EMBEDDED_DATA",
    "NASA_MEAN_INPUT_TOKENS",
    "NASA_MEAN_OUTPUT_TOKENS",
    "REPO_ROOT",
    "RateTrace",
    "RequestTrace",
    "SERVEGEN_MEAN_INPUT_TOKENS",
    "SERVEGEN_MEAN_OUTPUT_TOKENS",
    "SHARED_TRACES",
    "TRACES_ENV_VAR",
    "TraceFormatError",
    "TraceSpecError",
    "load_trace",
    "rate_to_series",
    "read_alibaba_genai_requests",
    "read_azure_llm",
    "read_mooncake",
    "read_nasa_http",
    "read_servegen",
    "resolve_trace_path",
    "servegen_clients",
    "shared_traces_dir",
    "time_scale",
    "to_series",
]
