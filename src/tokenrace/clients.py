"""Streaming clients for the three API families: a request in, a filled RequestRecord out.

One function per API builds the request; one decoder per API turns stream events into the record's
timeline. The rules that make the numbers exact live here:

* an event counts as a token only when it carries non-empty content, reasoning content or a tool-call
  delta — OpenAI-style role-only and empty chunks, pings and usage-only chunks do not;
* each event is stamped with the arrival time of the network read that completed it;
* usage is requested (``stream_options.include_usage``) and kept next to the client's own cl100k count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter as _now
from typing import Any

import orjson

from tokenrace.http import ConnectionPool, HTTPClientError, Response
from tokenrace.records import (
    ERR_API,
    ERR_CANCELLED,
    ERR_CONNECT,
    ERR_HTTP_4XX,
    ERR_HTTP_5XX,
    ERR_MALFORMED,
    ERR_RATE_LIMIT,
    ERR_STALL,
    ERR_STREAM_CUT,
    ERR_TIMEOUT,
    FAILED,
    INCOMPLETE,
    OK,
    RequestRecord,
)
from tokenrace.sse import SSEDecoder
from tokenrace.tokenizer import count_tokens
from tokenrace.workloads import WorkloadRequest

APIS = ("openai-chat", "openai-completions", "anthropic-messages")
ANTHROPIC_VERSION = "2023-06-01"


class StreamError(Exception):
    def __init__(self, category: str, detail: str) -> None:
        super().__init__(detail)
        self.category = category
        self.detail = detail


class StreamState:
    """What a decoder accumulates while a stream is read."""

    __slots__ = (
        "answer",
        "done",
        "event_no",
        "first_chunk_text",
        "marked_event",
        "reasoning",
        "record",
        "tool_calls",
    )

    def __init__(self, record: RequestRecord) -> None:
        self.record = record
        self.answer: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.first_chunk_text = ""
        self.done = False
        self.event_no = 0  # set by the reader before each event is decoded
        self.marked_event = -1

    def output(self, t: float, text: str, *, answer: bool) -> None:
        """The current event carries output; it arrived at ``t`` (seconds since the run origin)."""
        record = self.record
        if self.marked_event != self.event_no:  # one timestamp per event, whatever it carries
            self.marked_event = self.event_no
            record.token_times_s.append(t)
            record.last_token_s = t
            if record.first_token_s is None:
                record.first_token_s = t
        if len(record.token_times_s) == 1:
            self.first_chunk_text += text
        if answer and record.first_answer_s is None:
            record.first_answer_s = t

    def tool_call_delta(self, t: float, index: int, call_id: str | None, name: str | None, args: str) -> None:
        call = self.tool_calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
        if call_id:
            call["id"] = call_id
        if name:
            call["name"] += name
        call["arguments"] += args
        self.output(t, (name or "") + args, answer=True)


def _usage_openai(record: RequestRecord, usage: dict[str, Any]) -> None:
    record.usage_prompt_tokens = usage.get("prompt_tokens")
    record.usage_completion_tokens = usage.get("completion_tokens")
    details = usage.get("prompt_tokens_details") or {}
    record.usage_cached_tokens = details.get("cached_tokens")
    details = usage.get("completion_tokens_details") or {}
    record.usage_reasoning_tokens = details.get("reasoning_tokens")


def _openai_chunk(state: StreamState, data: bytes) -> dict[str, Any] | None:
    """The parsed chunk, or None at ``[DONE]``; an in-stream error object ends the request."""
    if data == b"[DONE]":
        state.done = True
        return None
    chunk = orjson.loads(data)
    if "error" in chunk:
        raise StreamError(ERR_API, error_message(chunk))
    return chunk


def _openai_chunk_end(record: RequestRecord, choice: dict[str, Any] | None, chunk: dict[str, Any]) -> None:
    if choice is not None and choice.get("finish_reason"):
        record.finish_reason = choice["finish_reason"]
    if chunk.get("usage"):
        _usage_openai(record, chunk["usage"])
    if chunk.get("timings"):  # llama.cpp's server-side prompt/decode timings
        record.server_timings = chunk["timings"]


def _decode_openai_chat(state: StreamState, t: float, event: str | None, data: bytes) -> None:
    chunk = _openai_chunk(state, data)
    if chunk is None:
        return
    choice = None
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            state.reasoning.append(reasoning)
            state.output(t, reasoning, answer=False)
        content = delta.get("content")
        if content:
            state.answer.append(content)
            state.output(t, content, answer=True)
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            state.tool_call_delta(
                t, call.get("index", 0), call.get("id"), function.get("name"), function.get("arguments") or ""
            )
    _openai_chunk_end(state.record, choice, chunk)


def _decode_openai_completions(state: StreamState, t: float, event: str | None, data: bytes) -> None:
    chunk = _openai_chunk(state, data)
    if chunk is None:
        return
    choice = None
    for choice in chunk.get("choices") or ():
        text = choice.get("text")
        if text:
            state.answer.append(text)
            state.output(t, text, answer=True)
    _openai_chunk_end(state.record, choice, chunk)


def _decode_anthropic(state: StreamState, t: float, event: str | None, data: bytes) -> None:
    payload = orjson.loads(data) if data else {}
    kind = payload.get("type", event)
    record = state.record
    if kind == "content_block_delta":
        delta = payload.get("delta") or {}
        delta_type = delta.get("type")
        if delta_type == "text_delta" and delta.get("text"):
            state.answer.append(delta["text"])
            state.output(t, delta["text"], answer=True)
        elif delta_type == "thinking_delta" and delta.get("thinking"):
            state.reasoning.append(delta["thinking"])
            state.output(t, delta["thinking"], answer=False)
        elif delta_type == "input_json_delta" and delta.get("partial_json"):
            state.tool_call_delta(t, payload.get("index", 0), None, None, delta["partial_json"])
    elif kind == "content_block_start":
        block = payload.get("content_block") or {}
        if block.get("type") == "tool_use":
            state.tool_calls[payload.get("index", 0)] = {
                "id": block.get("id"),
                "name": block.get("name", ""),
                "arguments": "",
            }
        elif block.get("type") == "text" and block.get("text"):
            state.answer.append(block["text"])
            state.output(t, block["text"], answer=True)
    elif kind == "message_start":
        _anthropic_prompt_usage(record, (payload.get("message") or {}).get("usage") or {})
    elif kind == "message_delta":
        delta = payload.get("delta") or {}
        if delta.get("stop_reason"):
            record.finish_reason = delta["stop_reason"]
        usage = payload.get("usage") or {}
        if "output_tokens" in usage:
            record.usage_completion_tokens = usage["output_tokens"]
        # Cumulative usage at the end wins over message_start's: a translating proxy (or a server that
        # counts late) only knows the prompt's size there.
        if usage.get("input_tokens"):
            _anthropic_prompt_usage(record, usage)
    elif kind == "message_stop":
        state.done = True
    elif kind == "error":
        raise StreamError(ERR_API, error_message(payload))


def _anthropic_prompt_usage(record: RequestRecord, usage: dict[str, Any]) -> None:
    """Prompt tokens = input + cache reads + cache writes (Anthropic reports them apart)."""
    if "input_tokens" in usage:
        record.usage_prompt_tokens = (
            usage["input_tokens"]
            + (usage.get("cache_read_input_tokens") or 0)
            + (usage.get("cache_creation_input_tokens") or 0)
        )
        record.usage_cached_tokens = usage.get("cache_read_input_tokens")


def error_message(payload: dict[str, Any]) -> str:
    error = payload.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error or payload)[:300]


Decoder = Callable[[StreamState, float, "str | None", bytes], None]

DECODERS: dict[str, Decoder] = {
    "openai-chat": _decode_openai_chat,
    "openai-completions": _decode_openai_completions,
    "anthropic-messages": _decode_anthropic,
}


def build_request(
    api: str, model: str, request: WorkloadRequest, api_key: str | None, extra_headers: dict[str, str]
) -> tuple[str, dict[str, str], bytes]:
    """Path, headers and JSON body for one streaming request in ``api``'s wire format."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Accept-Encoding": "identity",
        "User-Agent": "tokenrace",
    }
    body: dict[str, Any]
    if api == "anthropic-messages":
        system = [m for m in request.messages if m.get("role") == "system"]
        body = {
            "model": model,
            "messages": [m for m in request.messages if m.get("role") != "system"],
            "max_tokens": request.max_tokens or 1024,  # required by the API
            "stream": True,
        }
        if system:
            body["system"] = "\n\n".join(str(m.get("content", "")) for m in system)
        path = "/messages"
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if api_key:
            headers["x-api-key"] = api_key
    else:
        body = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
        if api == "openai-chat":
            body["messages"] = request.messages
            path = "/chat/completions"
        else:
            body["prompt"] = request.prompt
            path = "/completions"
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
    for key, value in request.params.items():
        if api == "anthropic-messages":
            _anthropic_param(body, key, value)
        elif api == "openai-completions" and key in _CHAT_ONLY_PARAMS:
            continue
        else:
            body[key] = value
    headers.update(extra_headers)
    return path, headers, orjson.dumps(body)


_CHAT_ONLY_PARAMS = frozenset({"tools", "tool_choice", "response_format"})


def _anthropic_param(body: dict[str, Any], key: str, value: Any) -> None:
    """Workloads speak OpenAI's dialect; the Messages API spells tools differently and has no
    ``response_format`` (the structured suite also states its schema in the prompt) or ``ignore_eos``."""
    if key == "tools":
        body["tools"] = [
            {
                "name": tool["function"]["name"],
                "description": tool["function"].get("description", ""),
                "input_schema": tool["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for tool in value
            if tool.get("type") == "function"
        ]
    elif key == "tool_choice":
        body["tool_choice"] = {"type": "auto"} if value == "auto" else {"type": "any"} if value == "required" else value
    elif key not in ("response_format", "ignore_eos"):
        body[key] = value


def _http_error_category(status: int) -> str:
    if status == 429:
        return ERR_RATE_LIMIT
    return ERR_HTTP_5XX if status >= 500 else ERR_HTTP_4XX


class EndpointClient:
    """Sends workload requests to one endpoint over its own keep-alive pool and fills records."""

    def __init__(
        self,
        *,
        name: str,
        api: str,
        base_url: str,
        model: str,
        origin: float,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        connect_timeout_s: float = 10.0,
        first_token_timeout_s: float = 120.0,
        idle_timeout_s: float = 60.0,
        total_timeout_s: float = 600.0,
    ) -> None:
        if api not in DECODERS:
            raise ValueError(f"unknown api {api!r}; valid: {', '.join(APIS)}")
        self.name = name
        self.api = api
        self.model = model
        self.origin = origin
        self._api_key = api_key
        self._headers = dict(headers or {})
        self._decode = DECODERS[api]
        self.first_token_timeout_s = first_token_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.total_timeout_s = total_timeout_s
        self.pool = ConnectionPool(base_url, connect_timeout=connect_timeout_s)

    def new_record(self, run_id: str, seq: int, scheduled_s: float, workload: str) -> RequestRecord:
        return RequestRecord(
            run_id=run_id,
            seq=seq,
            endpoint=self.name,
            api=self.api,
            model=self.model,
            workload=workload,
            scheduled_s=scheduled_s,
        )

    async def send(self, request: WorkloadRequest, record: RequestRecord) -> RequestRecord:
        """Run one streaming request; every outcome, including errors, ends up in ``record``."""
        origin = self.origin
        record.input_tokens_requested = request.input_tokens
        record.output_tokens_requested = request.max_tokens
        record.extra["prompt_id"] = request.prompt_id
        path, headers, body = build_request(self.api, self.model, request, self._api_key, self._headers)
        state = StreamState(record)
        response: Response | None = None
        loop_time = asyncio.get_running_loop().time
        record.sent_s = _now() - origin
        deadline_total = loop_time() + self.total_timeout_s
        deadline_first = loop_time() + min(self.first_token_timeout_s, self.total_timeout_s)
        try:
            response, connect_s = await self.pool.request("POST", path, headers, body)
            try:
                await response.wait_headers(max(deadline_first - loop_time(), 0.001))
            except HTTPClientError as exc:
                if connect_s is not None or exc.category != ERR_CONNECT:
                    raise
                # A kept-alive connection the server closed as we reused it (llama.cpp closes after
                # every stream while announcing keep-alive): no byte came back, so send once more on a
                # new connection, as curl does. Noted on the record; the time stays inside TTFT.
                record.extra["stale_connection_retry"] = True
                response, connect_s = await self.pool.request("POST", path, headers, body, fresh=True)
                await response.wait_headers(max(deadline_first - loop_time(), 0.001))
            if connect_s is not None:
                record.extra["connect_ms"] = round(connect_s * 1000, 3)
            record.headers_s = response.headers_at - origin  # type: ignore[operator]
            record.http_status = response.status
            if response.status != 200:
                await self._record_http_error(response, record)
                return record
            decoder = SSEDecoder()
            decode = self._decode
            events = record.event_times_s
            timeout, category = max(deadline_first - loop_time(), 0.001), ERR_TIMEOUT
            while pieces := await response.next_chunks(timeout, category):
                for arrived, data in pieces:
                    t = arrived - origin
                    for name, payload in decoder.feed(data):
                        events.append(t)
                        state.event_no += 1
                        try:
                            decode(state, t, name, payload)
                        except orjson.JSONDecodeError as exc:
                            raise StreamError(
                                ERR_MALFORMED, f"event {len(events)} is not valid JSON: {payload[:120]!r}"
                            ) from exc
                now = loop_time()
                if record.first_token_s is None:  # still waiting for the first token: its own deadline
                    timeout, category = max(deadline_first - now, 0.001), ERR_TIMEOUT
                elif deadline_total - now > self.idle_timeout_s:  # mid-stream: silence is a stall
                    timeout, category = self.idle_timeout_s, ERR_STALL
                else:
                    timeout, category = max(deadline_total - now, 0.001), ERR_TIMEOUT
            record.done_s = (response.done_at or _now()) - origin
            if state.done or record.finish_reason:
                record.status = OK
            else:
                _fail(record, ERR_STREAM_CUT, "stream ended without an end marker or finish reason")
        except HTTPClientError as exc:
            _fail(record, exc.category, exc.detail)
            record.done_s = _now() - origin
        except StreamError as exc:
            _fail(record, exc.category, exc.detail)
            record.done_s = _now() - origin
        except asyncio.CancelledError:
            record.status = INCOMPLETE
            record.error_category = ERR_CANCELLED
            raise
        finally:
            if response is not None and record.status != OK:
                response.abort()
            _finish_text(state)
        return record

    async def _record_http_error(self, response: Response, record: RequestRecord) -> None:
        status = response.status
        detail = f"HTTP {status}"
        try:
            body = await response.read_all(self.idle_timeout_s)
            try:
                detail += ": " + error_message(orjson.loads(body))
            except (orjson.JSONDecodeError, AttributeError):
                detail += ": " + body[:200].decode("utf-8", "replace")
        except HTTPClientError:
            pass
        if response.headers.get("retry-after"):
            record.extra["retry_after"] = response.headers["retry-after"]
        record.done_s = _now() - self.origin
        _fail(record, _http_error_category(status), detail)

    async def aclose(self) -> None:
        await self.pool.close()


def _fail(record: RequestRecord, category: str, detail: str) -> None:
    record.status = FAILED
    record.error_category = category
    record.error_detail = detail[:500]


def _finish_text(state: StreamState) -> None:
    """Join the text and count output tokens with the reference tokenizer (both counts are kept)."""
    record = state.record
    record.output_text = "".join(state.answer)
    record.reasoning_text = "".join(state.reasoning)
    if state.tool_calls:
        record.tool_calls = [state.tool_calls[i] for i in sorted(state.tool_calls)]
    tool_text = "".join(call["name"] + call["arguments"] for call in record.tool_calls)
    if record.first_token_s is not None:
        record.client_output_tokens = count_tokens(record.reasoning_text + record.output_text + tool_text)
        record.first_chunk_tokens = count_tokens(state.first_chunk_text)
    else:
        record.client_output_tokens = 0
    if "\x00" in record.output_text or "\x00" in record.reasoning_text:
        # PostgreSQL text cannot hold NUL; counted above, stored as U+FFFD so every store keeps the record
        record.output_text = record.output_text.replace("\x00", "\ufffd")
        record.reasoning_text = record.reasoning_text.replace("\x00", "\ufffd")
