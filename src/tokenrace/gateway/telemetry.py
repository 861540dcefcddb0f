"""Gateway telemetry: every proxied call becomes the same ``RequestRecord`` a benchmark writes.

One ``tokenrace serve`` process is one run (``workload == "gateway"``): the run row is written at start-up,
records go through a :class:`~tokenrace.store.RecordWriter` (a deque append on the event loop; a thread
commits them in batches), and the run is marked ``complete`` at a clean shutdown. A killed gateway leaves
its run ``running``, which readers show as incomplete, exactly like a killed benchmark.

What a gateway record holds (benchmarks fill the same fields):

* ``scheduled_s = sent_s`` = arrival of the request at the gateway, so TTFT and E2E are what the client
  saw from the gateway, fallbacks and retries included; ``headers_s``, ``first_token_s``,
  ``token_times_s``... are the arrival times of the upstream reads that carried them (stamped at the
  socket by :mod:`tokenrace.http`), with the token rules of :mod:`tokenrace.clients`;
* ``endpoint``/``api``/``model`` are the upstream's (the endpoint that answered, or the last one tried);
* ``extra``: ``route``, ``key_id``, ``request_id``, ``reason``, ``attempts`` (``[{endpoint, error}]`` of the
  attempts that failed before the answer), ``cost_usd`` (at the endpoint's effective price; None when the
  price is unknown), ``client_api``, ``stream``, ``client_status`` (the HTTP status the client got),
  ``gateway_overhead_ms`` (arrival → upstream write, plus first upstream token read → first byte handed to
  the client's socket; single-attempt calls only);
* a non-streamed answer arrives whole: ``first_token_s`` = ``last_token_s`` = ``done_s``, one token time;
* a call refused before any upstream was tried (open circuits, no endpoint for its API) is recorded too,
  under the endpoint it would have gone to; calls refused before routing (401, 413, bad JSON, rate limit,
  budget) are not.

Live figures follow the attempts, not the calls: each attempt is reported to :class:`LiveStats` with its own
send time as ``sent_s`` (a fallback's TTFT must not include the failed attempt before it).

No key is ever stored: records carry the key's id, the run config holds ``EndpointConfig.public_dict()``, and
an upstream error that echoes the endpoint's key has it replaced before it is stored or passed on.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from tokenrace.bench import host_info, new_run_id, versions
from tokenrace.clients import DECODERS, Decoder, StreamState
from tokenrace.config import EndpointConfig, Price, RouteConfig
from tokenrace.gateway.breaker import CircuitBreaker
from tokenrace.gateway.livestats import LiveStats
from tokenrace.gateway.prommetrics import GatewayMetrics
from tokenrace.pricing import request_cost
from tokenrace.records import ERR_CANCELLED, FAILED, GATEWAY_WORKLOAD, INCOMPLETE, OK, RequestRecord, RunClock, RunInfo
from tokenrace.store import RecordWriter, Store
from tokenrace.tokenizer import count_tokens

__all__ = [
    "GATEWAY_WORKLOAD",
    "Telemetry",
    "billed_tokens",
    "cancelled",
    "decoder_for",
    "fill_from_json",
    "finish_text",
    "record_cost",
]

RECENT_REQUESTS = 100_000  # request ids remembered for /v1/feedback (with the key that made them)
# Records are committed in batches at most this far apart: at low rates a commit per request would cost more
# CPU than the proxying itself; a crash loses at most this much telemetry (the answers were already served).
# Short batches keep each write's competition with the event loop (the GIL) short: at 500 req/s, 0.5 s
# batches added ~0.5-1 ms to the p99 of calls overlapping them compared with 0.1 s ones (gateway_overhead).
WRITE_INTERVAL_S = 0.1


def decoder_for(api: str) -> Decoder:
    """The stream decoder of ``api`` (one set of token rules for benchmarks and gateway)."""
    return DECODERS[api]


def finish_text(state: StreamState) -> None:
    """Join the text; count tokens with the reference tokenizer only where the upstream sent no usage.

    Benchmarks always count (they compare the two); the gateway pays for the count only when it is the
    only one. The first chunk is always counted: output speed after the first chunk needs it.
    """
    record = state.record
    record.output_text = "".join(state.answer)
    if state.reasoning:
        record.reasoning_text = "".join(state.reasoning)
    if state.tool_calls:
        record.tool_calls = [state.tool_calls[i] for i in sorted(state.tool_calls)]
    if record.first_token_s is None:
        record.client_output_tokens = 0
    else:
        record.first_chunk_tokens = _first_chunk_tokens(state.first_chunk_text)
        if record.usage_completion_tokens is None:
            tool_text = "".join(call["name"] + call["arguments"] for call in record.tool_calls)
            record.client_output_tokens = count_tokens(record.reasoning_text + record.output_text + tool_text)
    if "\x00" in record.output_text or "\x00" in record.reasoning_text:
        record.output_text = record.output_text.replace("\x00", "\ufffd")
        record.reasoning_text = record.reasoning_text.replace("\x00", "\ufffd")


_FIRST_CHUNKS: dict[str, int] = {}
_FIRST_CHUNKS_MAX = 4096


def _first_chunk_tokens(text: str) -> int:
    """cl100k count of a first chunk, memoised: first chunks repeat ("Hello", " the"), and tiktoken drops
    the GIL, which can cost the event loop a thread switch per call while the record writer runs."""
    n = _FIRST_CHUNKS.get(text)
    if n is None:
        n = count_tokens(text)
        if len(text) <= 64:
            if len(_FIRST_CHUNKS) >= _FIRST_CHUNKS_MAX:
                _FIRST_CHUNKS.clear()
            _FIRST_CHUNKS[text] = n
    return n


def fill_from_json(record: RequestRecord, api: str, obj: Any, t: float) -> None:
    """A non-streamed answer (``api``'s JSON shape) into the record; ``t`` is when its last byte arrived.

    The whole answer arrives at once, so ``first_token_s`` = ``last_token_s`` = ``done_s`` = ``t``: for a
    non-streaming client the first token is the answer.
    """
    if not isinstance(obj, dict):
        return
    answer: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else None
    if api == "anthropic-messages":
        for block in obj.get("content") or ():
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text" and block.get("text"):
                answer.append(block["text"])
            elif kind == "thinking" and block.get("thinking"):
                reasoning.append(block["thinking"])
            elif kind == "tool_use":
                args = block.get("input")
                calls.append(
                    {
                        "id": block.get("id"),
                        "name": block.get("name") or "",
                        "arguments": orjson.dumps(args).decode() if args is not None else "",
                    }
                )
        record.finish_reason = obj.get("stop_reason")
        if usage is not None:
            if "input_tokens" in usage:
                record.usage_prompt_tokens = (
                    (usage.get("input_tokens") or 0)
                    + (usage.get("cache_read_input_tokens") or 0)
                    + (usage.get("cache_creation_input_tokens") or 0)
                )
                record.usage_cached_tokens = usage.get("cache_read_input_tokens")
            record.usage_completion_tokens = usage.get("output_tokens")
    else:
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if api == "openai-completions":
                if choice.get("text"):
                    answer.append(choice["text"])
            else:
                message = choice.get("message") or {}
                if message.get("content"):
                    answer.append(str(message["content"]))
                thought = message.get("reasoning_content") or message.get("reasoning")
                if thought:
                    reasoning.append(str(thought))
                for call in message.get("tool_calls") or ():
                    function = call.get("function") or {}
                    calls.append(
                        {
                            "id": call.get("id"),
                            "name": function.get("name") or "",
                            "arguments": function.get("arguments") or "",
                        }
                    )
            if choice.get("finish_reason"):
                record.finish_reason = choice["finish_reason"]
        if usage is not None:
            record.usage_prompt_tokens = usage.get("prompt_tokens")
            record.usage_completion_tokens = usage.get("completion_tokens")
            record.usage_cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            record.usage_reasoning_tokens = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
        if obj.get("timings"):
            record.server_timings = obj["timings"]
    record.output_text = "".join(answer)
    record.reasoning_text = "".join(reasoning)
    record.tool_calls = calls
    record.done_s = t
    if answer or reasoning or calls:
        record.first_token_s = record.last_token_s = t
        if answer or calls:
            record.first_answer_s = t
        record.token_times_s = [t]
    if record.usage_completion_tokens is None:
        tool_text = "".join(call["name"] + call["arguments"] for call in calls)
        record.client_output_tokens = count_tokens(record.reasoning_text + record.output_text + tool_text)


def record_cost(record: RequestRecord, price: Price | None) -> float | None:
    """The record's cost in dollars at ``price`` (pricing's billing rules); None when it cannot be priced."""
    if price is None:
        return None
    cost = request_cost(record, price)
    return None if cost is None else cost.total_usd


def billed_tokens(record: RequestRecord) -> int:
    """Prompt + output tokens to settle a key's tokens-per-minute window with."""
    prompt = record.usage_prompt_tokens
    if prompt is None:
        prompt = record.input_tokens_requested or 0
    output = record.usage_completion_tokens
    if output is None:
        output = record.client_output_tokens or 0
    return prompt + output


class Telemetry:
    """The gateway run and everything a finished attempt or call updates (store, live stats, breaker,
    Prometheus). All methods but ``start``/``close`` run on the event loop and never block on the store."""

    def __init__(
        self,
        store: Store,
        *,
        endpoints: Mapping[str, EndpointConfig],
        routes: Sequence[RouteConfig],
        stats: LiveStats,
        breaker: CircuitBreaker,
        metrics: GatewayMetrics,
        args: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.endpoints = endpoints
        self.routes = routes
        self.stats = stats
        self.breaker = breaker
        self.metrics = metrics
        self.args = args or {}
        self.clock = RunClock()
        self.origin = self.clock.origin
        self.run: RunInfo | None = None
        self.writer: RecordWriter | None = None
        self.closed = False
        self.seq = 0
        self.in_flight: dict[str, int] = {}
        self.counts = {OK: 0, FAILED: 0, INCOMPLETE: 0}
        self.refused = 0  # calls refused before routing (not recorded: no endpoint was involved)
        self.errors: dict[str, int] = {}
        self.cost_usd = 0.0
        # request id -> key id, for feedback; bounded, oldest forgotten first
        self.recent: OrderedDict[str, str | None] = OrderedDict()

    # -- run lifecycle --

    def start(self) -> RunInfo:
        """Write the run row (blocking; at start-up) and start the background writer."""
        clock = self.clock = RunClock()
        self.origin = clock.origin
        run = RunInfo(
            run_id=new_run_id(),
            started_at=clock.wall_origin,
            endpoint="gateway",
            workload=GATEWAY_WORKLOAD,
            profile={"kind": "gateway"},
            config={
                "endpoints": {name: ep.public_dict() for name, ep in self.endpoints.items()},
                "routes": [route.model_dump(mode="json") for route in self.routes],
                "args": self.args,
                "clock": {"monotonic_origin": clock.origin, "wall_origin": clock.wall_origin},
            },
            versions=versions(),
            host=host_info(),
        )
        self.store.create_run(run)
        self.run = run
        self.writer = RecordWriter(self.store, flush_interval_s=WRITE_INTERVAL_S)
        for name in self.endpoints:
            self.metrics.set_in_flight(name, 0)
            self.metrics.set_breaker(name, self.breaker.state(name))
        return run

    def close(self, status: str = "complete") -> None:
        """Drain the writer, then close the run with a small summary (blocking; at shutdown)."""
        run = self.run
        if run is None or self.closed:
            return
        self.closed = True
        writer, self.writer = self.writer, None
        try:
            if writer is not None:
                writer.close()
        finally:
            finished = time.time()
            duration = max(finished - run.started_at, 1e-9)
            total = sum(self.counts.values())
            summary = {
                "run_id": run.run_id,
                "endpoint": run.endpoint,
                "workload": run.workload,
                "profile": run.profile,
                "duration_s": duration,
                "requests": {
                    "total": total,
                    "completed": self.counts[OK],
                    "failed": self.counts[FAILED],
                    "incomplete": self.counts[INCOMPLETE],
                },
                "throughput": {"requests_per_s": total / duration},
                "errors": dict(self.errors),
                "cost": {"total_usd": self.cost_usd},
            }
            self.store.finish_run(run.run_id, status, summary, finished)

    @property
    def run_id(self) -> str:
        assert self.run is not None, "telemetry not started (the app needs lifespan events)"
        return self.run.run_id

    def now(self) -> float:
        return time.perf_counter() - self.origin

    # -- per call --

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def attempt_started(self, name: str) -> None:
        self.stats.started(name)
        n = self.in_flight[name] = self.in_flight.get(name, 0) + 1
        self.metrics.set_in_flight(name, n)

    def attempt_finished(self, name: str, record: RequestRecord) -> None:
        self.stats.finished(name, record)
        n = self.in_flight[name] = max(self.in_flight.get(name, 1) - 1, 0)
        self.metrics.set_in_flight(name, n)

    def upstream_ok(self, name: str) -> None:
        self.breaker.success(name)
        self.metrics.set_breaker(name, self.breaker.state(name))

    def upstream_failed(self, name: str) -> None:
        self.breaker.failure(name)
        self.metrics.set_breaker(name, self.breaker.state(name))

    def finish(self, record: RequestRecord, route: str, cost_usd: float | None, key_id: str | None) -> None:
        """The call is over: metrics, counters, the feedback index, and the record to the writer."""
        self.metrics.observe(record, route=route, cost_usd=cost_usd)
        self.counts[record.status] = self.counts.get(record.status, 0) + 1
        if record.error_category is not None:
            self.errors[record.error_category] = self.errors.get(record.error_category, 0) + 1
        if cost_usd:
            self.cost_usd += cost_usd
        recent = self.recent
        recent[record.extra["request_id"]] = key_id
        if len(recent) > RECENT_REQUESTS:
            recent.popitem(last=False)
        if self.writer is not None:
            self.writer.put(record)


def cancelled(record: RequestRecord, detail: str) -> None:
    """Mark a call the client (or shutdown) stopped: incomplete, category ``cancelled``, like a benchmark."""
    record.status = INCOMPLETE
    record.error_category = ERR_CANCELLED
    record.error_detail = detail
