"""The request record: one row per request, written by benchmarks and (later) the gateway alike.

Times are seconds on the monotonic clock (``time.perf_counter``) measured from the run's origin
(``RunClock.origin``), so a record is meaningful in the store without knowing the process that made it.
Every metric in :mod:`tokenrace.metrics` is a pure function of these fields.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

# Status of one request, counted apart in every summary.
OK = "ok"  # the stream ended normally (finish reason or [DONE]/message_stop)
FAILED = "failed"  # an error: HTTP status, connection, malformed/cut stream, stall, timeout
INCOMPLETE = "incomplete"  # still running when the run stopped (duration reached, Ctrl-C)

# Error categories: stable strings a user can filter on.
ERR_CONNECT = "connect"  # refused, reset before the response, DNS, TLS
ERR_TIMEOUT = "timeout"  # connect/first-byte/total timeout
ERR_RATE_LIMIT = "rate_limited"  # HTTP 429
ERR_HTTP_4XX = "http_4xx"
ERR_HTTP_5XX = "http_5xx"
ERR_STREAM_CUT = "stream_cut"  # connection closed before the stream's end marker
ERR_MALFORMED = "malformed"  # an event that is not valid JSON / not the API's shape
ERR_STALL = "stall"  # no bytes for longer than the idle timeout
ERR_API = "api_error"  # the server sent an error event inside a 200 stream
ERR_CANCELLED = "cancelled"  # stopped by the run (Ctrl-C, duration end)

ERROR_CATEGORIES = (
    ERR_CONNECT,
    ERR_TIMEOUT,
    ERR_RATE_LIMIT,
    ERR_HTTP_4XX,
    ERR_HTTP_5XX,
    ERR_STREAM_CUT,
    ERR_MALFORMED,
    ERR_STALL,
    ERR_API,
    ERR_CANCELLED,
)

PHASE_WARMUP = "warmup"
PHASE_MEASURE = "measure"

# The workload of the run a `tokenrace serve` process records its live traffic in (one run per process;
# each record's endpoint is the upstream that answered).
GATEWAY_WORKLOAD = "gateway"


class RunClock:
    """The run's time origin: monotonic for intervals, wall clock only to label the run."""

    __slots__ = ("origin", "wall_origin")

    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self.wall_origin = time.time()

    def now(self) -> float:
        return time.perf_counter() - self.origin


@dataclass(slots=True)
class RequestRecord:
    run_id: str
    seq: int  # order in which the load generator scheduled the request
    endpoint: str
    api: str
    model: str
    phase: str = PHASE_MEASURE
    workload: str = ""
    status: str = INCOMPLETE
    error_category: str | None = None
    error_detail: str | None = None
    http_status: int | None = None

    # Timeline, seconds since the run's origin (monotonic clock).
    scheduled_s: float = 0.0  # when the load profile wanted it sent
    sent_s: float | None = None  # request bytes handed to the socket
    headers_s: float | None = None  # response headers parsed
    first_token_s: float | None = None  # first event with content, reasoning or a tool-call delta
    first_answer_s: float | None = None  # first event with non-reasoning content (or a tool-call delta)
    last_token_s: float | None = None  # last event carrying output
    done_s: float | None = None  # stream end (or error) seen
    event_times_s: list[float] = field(default_factory=list)  # arrival of every SSE event
    token_times_s: list[float] = field(default_factory=list)  # arrival of each output-carrying event

    # What came back.
    finish_reason: str | None = None
    output_text: str = ""
    reasoning_text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    # Token counts: the server's usage (None when it sent none) and the client's own count.
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    usage_cached_tokens: int | None = None
    usage_reasoning_tokens: int | None = None
    client_output_tokens: int | None = None  # cl100k_base count of output + reasoning text + tool args
    first_chunk_tokens: int | None = None  # cl100k_base count of the first output-carrying event
    input_tokens_requested: int | None = None  # what the workload asked for
    output_tokens_requested: int | None = None

    server_timings: dict[str, Any] | None = None  # e.g. llama.cpp's own prompt/decode speed
    suite: str | None = None  # the workload suite of the request (chat, coding, rag...)
    quality: float | None = None  # the suite's score in [0, 1]; None when unscored
    quality_detail: str | None = None  # the scorer's reason
    extra: dict[str, Any] = field(default_factory=dict)  # route, key id, prompt id... (gateway, workloads)

    @property
    def output_tokens(self) -> int | None:
        """The count metrics use: the server's when it reported one, else the client's."""
        if self.usage_completion_tokens is not None:
            return self.usage_completion_tokens
        return self.client_output_tokens


@dataclass(slots=True)
class RunInfo:
    """A run's metadata, stored before the first request so a crash still leaves a labelled run."""

    run_id: str
    started_at: float  # unix seconds (wall clock), for display only
    endpoint: str
    workload: str
    profile: dict[str, Any]
    config: dict[str, Any]  # the endpoint config without secrets, the CLI arguments
    versions: dict[str, str]
    host: dict[str, Any]
    status: str = "running"  # running | complete | interrupted | failed
    finished_at: float | None = None
    summary: dict[str, Any] | None = None
