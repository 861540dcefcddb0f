"""The upstream call: request translation, retries, fallback, and the pass-through of the answer.

Rules of one call (``Proxy.run``):

* Candidates are tried in the plan's order. Before each send the circuit breaker is asked
  (``breaker.allow``, which may hand out the half-open trial); a refused candidate is skipped.
* A candidate is retried (``plan.retries`` times) on 429, 5xx and connect errors, after an exponential
  backoff (0.1 s, 0.2 s, ...) or the upstream's ``Retry-After`` when it asks for longer, capped at
  ``MAX_BACKOFF_S``; any other failure moves on to the next candidate (``plan.fallback``). A 400, 413 or
  422 from an upstream is the request's fault: it is returned as it is, without trying elsewhere.
* Nothing reaches the client before the upstream's first token (or the end of an answer without one):
  until then every failure — a status, a timeout, a stream that is cut or malformed before its first
  token — can still fall back invisibly. The response headers go out with the first token and name the
  endpoint that answered. After that there is no way back: a later failure ends the stream with the
  API's error event (an OpenAI ``data: {"error": ...}`` chunk without ``[DONE]``, an Anthropic
  ``event: error``), so an SDK raises instead of reporting a silent success.
* Streams pass through as they arrive: each upstream read is forwarded as soon as it completes SSE
  events (a partial event waits for its end). When client and upstream speak the same API the bytes are
  forwarded untouched and parsed only on the side, for the record; otherwise each event is translated
  (:mod:`tokenrace.gateway.translate`). Usage is always requested upstream (``include_usage``); the
  usage-only chunk is dropped when the client did not ask for it.
* Timeouts are the endpoint's: ``connect_s`` (pool), ``first_token_s`` (send → first token event; for a
  non-streamed answer the whole answer, bounded by ``total_s``), ``idle_s`` (silence inside a stream),
  ``total_s`` (send → end).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter
from typing import Any, NamedTuple

import orjson

from tokenrace.clients import ANTHROPIC_VERSION, StreamError, StreamState, error_message
from tokenrace.config import EndpointConfig, Price, redact_headers
from tokenrace.gateway.policies import Plan
from tokenrace.gateway.server import Exchange
from tokenrace.gateway.telemetry import Telemetry, cancelled, decoder_for, fill_from_json, finish_text
from tokenrace.gateway.translate import (
    ChatStreamFromMessages,
    MessagesStreamFromChat,
    anthropic_error_body,
    anthropic_error_event,
    chat_response_from_messages,
    chat_to_messages_request,
    messages_response_from_chat,
    messages_to_chat_request,
    openai_error_body,
    sse_error_chunk,
)
from tokenrace.http import ConnectionPool, HTTPClientError, Response
from tokenrace.pricing import effective_price
from tokenrace.records import (
    ERR_API,
    ERR_CONNECT,
    ERR_HTTP_4XX,
    ERR_HTTP_5XX,
    ERR_MALFORMED,
    ERR_RATE_LIMIT,
    ERR_STALL,
    ERR_STREAM_CUT,
    ERR_TIMEOUT,
    FAILED,
    OK,
    RequestRecord,
)
from tokenrace.sse import SSEDecoder

__all__ = [
    "CHAT",
    "COMPLETIONS",
    "MAX_BACKOFF_S",
    "MESSAGES",
    "Call",
    "Failure",
    "Proxy",
    "Upstream",
    "error_body",
    "error_type",
    "stream_error",
]

CHAT = "openai-chat"
COMPLETIONS = "openai-completions"
MESSAGES = "anthropic-messages"

MAX_BACKOFF_S = 2.0  # longest wait between two tries of one candidate (Retry-After included)
BASE_BACKOFF_S = 0.1
RETRYABLE = frozenset({ERR_RATE_LIMIT, ERR_HTTP_5XX, ERR_CONNECT})
CLIENT_FAULT = frozenset({400, 413, 422})  # the request's fault: the same body fails everywhere
# Upstream statuses a client gets as they are; any other upstream failure (401/403/404: the gateway's own
# credentials or model names are wrong; 5xx) is a bad gateway to the client.
PASSED_ON = CLIENT_FAULT | {429}

_PATHS = {CHAT: "/chat/completions", COMPLETIONS: "/completions", MESSAGES: "/messages"}

# How a client API is served by an upstream API.
PASS = 0  # same API: raw bytes through
CHAT_VIA_MESSAGES = 1  # OpenAI chat client, Anthropic upstream
MESSAGES_VIA_CHAT = 2  # Anthropic client, OpenAI chat upstream
COMPLETIONS_VIA_CHAT = 3  # /v1/completions client with a plain prompt, OpenAI chat upstream
_MODES: dict[tuple[str, str], int] = {
    (CHAT, CHAT): PASS,
    (MESSAGES, MESSAGES): PASS,
    (COMPLETIONS, COMPLETIONS): PASS,
    (CHAT, MESSAGES): CHAT_VIA_MESSAGES,
    (MESSAGES, CHAT): MESSAGES_VIA_CHAT,
    (COMPLETIONS, CHAT): COMPLETIONS_VIA_CHAT,
}
# /v1/completions parameters that a chat upstream cannot honour: with any of them the call is not "trivial".
_COMPLETIONS_ONLY = ("suffix", "echo", "logprobs", "best_of")
_CHAT_SAFE_PARAMS = (
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
)

# OpenAI error type and Anthropic error type per HTTP status the gateway answers with.
_ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("invalid_request_error", "authentication_error"),
    402: ("insufficient_quota", "permission_error"),
    403: ("invalid_request_error", "permission_error"),
    404: ("invalid_request_error", "not_found_error"),
    405: ("invalid_request_error", "invalid_request_error"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "invalid_request_error"),
    429: ("requests", "rate_limit_error"),
    500: ("server_error", "api_error"),
    502: ("server_error", "api_error"),
    503: ("server_error", "overloaded_error"),
    504: ("server_error", "api_error"),
}
_CATEGORY_STATUS = {ERR_TIMEOUT: 504, ERR_STALL: 504, ERR_RATE_LIMIT: 429}


def error_type(status: int, client_api: str) -> str:
    openai, anthropic = _ERROR_TYPES.get(status) or (_ERROR_TYPES[500] if status >= 500 else _ERROR_TYPES[400])
    return anthropic if client_api == MESSAGES else openai


def error_body(status: int, client_api: str, message: str, code: str | None = None) -> bytes:
    """An error response body in the client's API format."""
    kind = error_type(status, client_api)
    if client_api == MESSAGES:
        return orjson.dumps(anthropic_error_body(message, kind))
    return orjson.dumps(openai_error_body(message, kind, code))


def stream_error(client_api: str, category: str, message: str) -> bytes:
    """The in-stream error event that ends a stream after its first chunk."""
    status = 429 if category == ERR_RATE_LIMIT else 504 if category in (ERR_TIMEOUT, ERR_STALL) else 502
    kind = error_type(status, client_api)
    if client_api == MESSAGES:
        return anthropic_error_event(message, kind)
    return sse_error_chunk(message, kind, category)


class Failure(NamedTuple):
    """Why one attempt failed before anything reached the client."""

    endpoint: str
    category: str
    detail: str
    status: int | None = None  # the upstream's HTTP status, when it sent one
    retry_after_s: float | None = None
    body: bytes | None = None  # the upstream's error body (returned as is to a client of the same API)
    api: str | None = None


class Upstream:
    """One endpoint as the proxy uses it: its keep-alive pool, request headers, timeouts and price."""

    __slots__ = (
        "api",
        "config",
        "connect_s",
        "first_token_s",
        "headers_json",
        "headers_sse",
        "idle_s",
        "max_concurrency",
        "model",
        "name",
        "name_bytes",
        "path",
        "pool",
        "price",
        "secrets",
        "total_s",
    )

    def __init__(self, endpoint: EndpointConfig, api_key: str | None) -> None:
        self.config = endpoint
        self.name = endpoint.name
        self.name_bytes = _ascii(endpoint.name)
        self.api = endpoint.api
        self.model = endpoint.model
        self.path = _PATHS[endpoint.api]
        timeouts = endpoint.timeouts
        self.connect_s = timeouts.connect_s
        self.first_token_s = min(timeouts.first_token_s, timeouts.total_s)
        self.idle_s = timeouts.idle_s
        self.total_s = timeouts.total_s
        self.max_concurrency = endpoint.max_concurrency
        self.price: Price | None = effective_price(endpoint)[0]
        self.pool = ConnectionPool(endpoint.base_url, connect_timeout=timeouts.connect_s)
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity", "User-Agent": "tokenrace-gateway"}
        if endpoint.api == MESSAGES:
            headers["anthropic-version"] = ANTHROPIC_VERSION
            if api_key:
                headers["x-api-key"] = api_key
        elif api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        headers.update(endpoint.headers)
        # Values an upstream might echo in an error message: removed before a detail is stored or passed on.
        redacted = redact_headers(endpoint.headers)
        self.secrets = [v for k, v in endpoint.headers.items() if redacted[k] != v and len(v) >= 8]
        if api_key:
            self.secrets.append(api_key)
        # The key lives only in these two dicts (handed to the socket), never in a record or a log.
        self.headers_sse = {**headers, "Accept": "text/event-stream"}
        self.headers_json = {**headers, "Accept": "application/json"}

    def __repr__(self) -> str:
        return f"Upstream({self.name!r}, api={self.api!r})"

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "<redacted>")
        return text

    def scrub_bytes(self, data: bytes) -> bytes:
        for secret in self.secrets:
            raw = secret.encode()
            if raw in data:
                data = data.replace(raw, b"<redacted>")
        return data


class Call:
    """One client call on its way through the proxy (state shared by the app, the proxy and telemetry)."""

    __slots__ = (
        "anthropic_headers",
        "arrival",
        "attempts",
        "body",
        "client_api",
        "committed",
        "direct",
        "disconnected",
        "done",
        "endpoint",
        "key_id",
        "max_tokens",
        "overhead_ms",
        "plan",
        "prompt_text",
        "reason",
        "record",
        "request_id",
        "response",
        "send",
        "status",
        "stream",
        "task",
        "want_usage",
    )

    def __init__(
        self,
        client_api: str,
        body: dict[str, Any],
        send: Callable[[dict[str, Any]], Awaitable[None]],
        arrival: float,
        request_id: str,
    ) -> None:
        self.client_api = client_api
        self.body = body
        self.send = send
        self.direct: Exchange | None = None  # our own server's exchange: streams are written from read callbacks
        self.arrival = arrival  # perf_counter() when the request reached the gateway
        self.request_id = request_id
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self.want_usage = isinstance(options, dict) and options.get("include_usage") is True
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            max_tokens = body.get("max_completion_tokens")
        self.max_tokens: int | None = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None
        self.plan: Plan | None = None
        self.prompt_text = ""  # the last user message (what routers score; fingerprinted in the record)
        self.key_id: str | None = None
        self.anthropic_headers: dict[str, str] | None = None  # anthropic-version/-beta sent by the client
        self.attempts: list[dict[str, str]] = []
        self.record: RequestRecord | None = None  # the current (finally: the answering) attempt's record
        self.response: Response | None = None  # the upstream response being read, to abort on disconnect
        self.endpoint: str | None = None  # the endpoint that answered, or the last one tried
        self.reason = ""
        self.committed = False  # response headers sent to the client
        self.disconnected = False
        self.done = False  # the last byte is on its way; a disconnect now changes nothing
        self.status = 0  # HTTP status sent to the client
        self.overhead_ms: float | None = None
        self.task: asyncio.Task[Any] | None = None

    def abort_upstream(self) -> None:
        response = self.response
        if response is not None:
            response.abort()


def _ascii(text: str) -> bytes:
    """A header-safe value: ASCII, no control characters (the reason is human text and may not be)."""
    if not text.isascii():
        text = text.translate(_ASCII_MAP).encode("ascii", "replace").decode("ascii")
    if not text.isprintable():
        text = "".join(c if c.isprintable() else " " for c in text)
    return text.encode("ascii")


_ASCII_MAP = str.maketrans({"→": "->", "≥": ">=", "≤": "<=", "×": "x", "–": "-", "—": "-", "…": "...", "·": "."})


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare from APIs; the backoff applies
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def completions_is_trivial(body: Mapping[str, Any]) -> bool:
    """A /v1/completions call a chat endpoint can answer the same: one text prompt, one choice, no
    completions-only options."""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            return False
    elif not isinstance(prompt, str):
        return False
    if any(body.get(name) not in (None, False, 0) for name in _COMPLETIONS_ONLY):
        return False
    return body.get("n") in (None, 1)


def _completions_as_chat(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    prompt = body["prompt"]
    text = prompt[0] if isinstance(prompt, list) else prompt
    out: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    for name in _CHAT_SAFE_PARAMS:
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _completion_from_chat(resp: dict[str, Any], model: str) -> dict[str, Any]:
    choices = []
    for choice in resp.get("choices") or ():
        message = choice.get("message") or {}
        choices.append(
            {
                "text": message.get("content") or "",
                "index": choice.get("index", 0),
                "logprobs": None,
                "finish_reason": choice.get("finish_reason"),
            }
        )
    out = {
        "id": "cmpl-" + str(resp.get("id") or "").removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": resp.get("created") or 0,
        "model": model,
        "choices": choices,
    }
    if resp.get("usage"):
        out["usage"] = resp["usage"]
    return out


class CompletionsStreamFromChat:
    """OpenAI chat chunks in, /v1/completions chunks out (text only: the call was checked to be trivial)."""

    __slots__ = ("_head", "include_usage", "model")

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self._head = b""

    def feed(self, data: bytes) -> bytes:
        if data.startswith(b"[DONE]"):
            return b"data: [DONE]\n\n"
        chunk = orjson.loads(data)
        if chunk.get("error"):
            return b""  # the proxy reports upstream errors itself
        if not self._head:
            base = {"id": "cmpl-" + str(chunk.get("id") or "").removeprefix("chatcmpl-"), "object": "text_completion"}
            base["created"] = chunk.get("created") or 0
            base["model"] = self.model
            self._head = b"data: " + orjson.dumps(base)[:-1] + b',"choices":'
        out = b""
        for choice in chunk.get("choices") or ():
            text = (choice.get("delta") or {}).get("content") or ""
            finish = choice.get("finish_reason")
            if text or finish:
                item = {"text": text, "index": choice.get("index", 0), "logprobs": None, "finish_reason": finish}
                out += self._head + orjson.dumps([item]) + b"}\n\n"
        usage = chunk.get("usage")
        if usage and not chunk.get("choices") and self.include_usage:
            out += self._head + b'[],"usage":' + orjson.dumps(usage) + b"}\n\n"
        return out

    def close(self) -> bytes:
        return b""


class _Framer:
    """Splits upstream bytes at the end of the last complete SSE event; the rest waits for the next read."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = b""

    def complete(self, data: bytes) -> bytes:
        buf = self.pending + data if self.pending else data
        end = buf.rfind(b"\n\n")
        if end >= 0:
            end += 2
        crlf = buf.rfind(b"\n\r\n")
        if crlf >= 0 and crlf + 3 > end:
            end = crlf + 3
        if end < 0:
            self.pending = buf
            return b""
        self.pending = buf[end:]
        return buf[:end] if end < len(buf) else buf


def _encode_event(name: str | None, data: bytes) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name else b""
    if b"\n" in data:
        return head + b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"
    return head + b"data: " + data + b"\n\n"


_SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))
_JSON_TYPE = (b"content-type", b"application/json")


class _StreamRelay:
    """What a stream does with each upstream read: frame its events, decode them into the record, and
    translate them (or pass the bytes through); the client's bytes wait in ``held`` until the proxy sends
    them. Both ways of reading a stream (a task per read, or the read callback) share it.

    Every event is decoded as it arrives, even when the bytes pass through unchanged: a malformed or
    error event never reaches the client as the upstream sent it, it ends the stream with the gateway's
    error event in the client's format (decoding only at the end was measured: no saving beyond noise).
    """

    __slots__ = (
        "decode",
        "decoder",
        "events_at",
        "framer",
        "held",
        "origin",
        "record",
        "state",
        "strip_usage",
        "translate",
        "translator",
    )

    def __init__(self, call: Call, up: Upstream, mode: int, record: RequestRecord, origin: float) -> None:
        self.record = record
        self.origin = origin
        self.state = StreamState(record)
        self.decode = decoder_for(up.api)
        self.decoder = SSEDecoder()
        self.framer = _Framer()
        self.events_at = record.event_times_s
        self.translator: MessagesStreamFromChat | None = None
        translate: Any = None
        if mode == CHAT_VIA_MESSAGES:
            translate = ChatStreamFromMessages(up.model, call.want_usage).feed
        elif mode == MESSAGES_VIA_CHAT:
            self.translator = MessagesStreamFromChat(up.model)
            translate = _data_only(self.translator.feed)
        elif mode == COMPLETIONS_VIA_CHAT:
            translate = _data_only(CompletionsStreamFromChat(up.model, call.want_usage).feed)
        self.translate = translate
        self.strip_usage = translate is None and up.api != MESSAGES and not call.want_usage
        self.held: list[bytes] = []  # what the client gets once the first token is in

    def feed(self, arrived: float, data: bytes) -> None:
        """One network read; raises StreamError (the events before the bad one are in ``held``)."""
        complete = self.framer.complete(data)
        if not complete:
            return
        record = self.record
        state = self.state
        decode = self.decode
        translate = self.translate
        t = arrived - self.origin
        events = self.decoder.feed(complete)
        events_at = self.events_at
        out: list[bytes] = []  # translated events
        drop = -1  # index of the usage-only chunk to leave out of a pass-through
        for i, (name, payload) in enumerate(events):
            events_at.append(t)
            state.event_no += 1
            had_usage = record.usage_completion_tokens is not None
            try:
                decode(state, t, name, payload)
                piece = translate(name, payload) if translate is not None else b""
            except Exception as exc:  # bad JSON, or JSON of the wrong shape: a malformed stream
                # The events before this one still go to the client, then the stream fails.
                if translate is None:
                    out = [_encode_event(n, p) for j, (n, p) in enumerate(events[:i]) if j != drop]
                if out:
                    self.held.append(b"".join(out))
                if isinstance(exc, StreamError):
                    raise
                what = "not valid JSON" if isinstance(exc, orjson.JSONDecodeError) else "not the API's shape"
                raise StreamError(ERR_MALFORMED, f"event {len(events_at)} is {what}: {payload[:120]!r}") from exc
            if piece:
                out.append(piece)
            elif (
                self.strip_usage
                and not had_usage
                and record.usage_completion_tokens is not None
                and (b'"choices":[]' in payload or b'"choices": []' in payload)
            ):
                drop = i  # the usage-only chunk asked for on the client's behalf
        if translate is not None:
            chunk = b"".join(out)
        elif drop >= 0:
            chunk = b"".join(_encode_event(n, p) for j, (n, p) in enumerate(events) if j != drop)
        else:
            chunk = complete
        if chunk:
            self.held.append(chunk)

    def next_wait(self, now: float, deadline_first: float, deadline_total: float, idle_s: float) -> tuple[float, str]:
        """How long the next read may take, and what it is called if it does not come."""
        if self.record.first_token_s is None:
            return max(deadline_first - now, 0.001), ERR_TIMEOUT
        if deadline_total - now > idle_s:
            return idle_s, ERR_STALL
        return max(deadline_total - now, 0.001), ERR_TIMEOUT

    def close(self) -> bytes:
        """The rest of the client's stream once the upstream's ended."""
        if self.translator is not None:
            self.held.append(self.translator.close())
        tail = b"".join(self.held)
        self.held = []
        return tail


class _DirectSink:
    """Relays a stream inside the upstream connection's read callback, straight to the client's socket.

    Each read is framed, decoded and (once the first token is in) written at once; the call's task only
    wakes at the end. The client's back-pressure pauses the upstream's reads; a failure is kept for the
    task and stops the relay.
    """

    __slots__ = ("call", "deadline_first", "deadline_total", "error", "proxy", "relay", "response", "up")

    def __init__(
        self,
        proxy: Proxy,
        call: Call,
        up: Upstream,
        relay: _StreamRelay,
        response: Response,
        deadline_first: float,
        deadline_total: float,
    ) -> None:
        self.proxy = proxy
        self.call = call
        self.up = up
        self.relay = relay
        self.response = response
        self.deadline_first = deadline_first
        self.deadline_total = deadline_total
        self.error: Exception | None = None

    def piece(self, arrived: float, data: bytes) -> None:
        try:
            self.relay.feed(arrived, data)
        except Exception as exc:  # StreamError, or a bug: either way this stream ends here, told to the task
            self.error = exc
            self.response.detach()

    def read_done(self) -> None:
        relay = self.relay
        response = self.response
        if response.complete:
            return  # the task sends the rest with the end of the stream
        now = asyncio.get_running_loop().time()
        try:
            if relay.held and relay.record.first_token_s is not None:
                held, relay.held = relay.held, []
                self.proxy.write_direct(self.call, self.up, held)
                direct = self.call.direct
                if direct is not None and direct.paused:
                    response.pause_reading()
                    direct.when_writable(self._resume)
        except Exception as exc:
            self.error = exc
            response.detach()
            return
        self._rearm(now)

    def _resume(self) -> None:
        self.response.resume_reading()
        self._rearm(asyncio.get_running_loop().time())

    def _rearm(self, now: float) -> None:
        """The next read's deadline, counted from ``now``."""
        timeout, category = self.relay.next_wait(now, self.deadline_first, self.deadline_total, self.up.idle_s)
        self.response.set_deadline(now + timeout, category, "bytes", timeout)


class Proxy:
    """Upstream pools and the call procedure; one per gateway process."""

    def __init__(
        self,
        endpoints: Mapping[str, EndpointConfig],
        telemetry: Telemetry,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.upstreams: dict[str, Upstream] = {
            name: Upstream(ep, ep.api_key(environ)) for name, ep in endpoints.items()
        }
        self.telemetry = telemetry

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.pool.close()

    # -- the call ---------------------------------------------------------------------------------

    async def run(self, call: Call) -> None:
        """Answer ``call``: an upstream's answer, or an error response if every candidate failed first.

        ``call.record`` is the answering attempt's record (or the last failed one; None when no upstream
        was tried) and ``call.status`` what the client got. Raises CancelledError when the client went
        away (the app records it).
        """
        plan = call.plan
        assert plan is not None
        tel = self.telemetry
        breaker = tel.breaker
        last: Failure | None = None
        refused: list[str] = []  # candidates the breaker or their concurrency cap turned down
        unsuited: list[str] = []  # candidates that cannot speak the client's API
        for endpoint in plan.candidates:
            up = self.upstreams[endpoint.name]
            mode = _MODES.get((call.client_api, up.api))
            if mode is None or (mode == COMPLETIONS_VIA_CHAT and not completions_is_trivial(call.body)):
                unsuited.append(up.name)
                call.attempts.append({"endpoint": up.name, "error": f"cannot serve {call.client_api} calls"})
                continue
            payload: bytes | None = None
            for attempt in range(plan.retries + 1):
                if up.max_concurrency is not None and tel.in_flight.get(up.name, 0) >= up.max_concurrency:
                    refused.append(up.name)
                    call.attempts.append({"endpoint": up.name, "error": "at max_concurrency"})
                    break
                if not breaker.allow(up.name):
                    refused.append(up.name)
                    call.attempts.append({"endpoint": up.name, "error": "circuit open"})
                    break
                if payload is None:
                    payload = self._payload(call, up, mode)
                failure = await self._attempt(call, up, mode, payload)
                if failure is None:
                    return
                last = failure
                call.attempts.append({"endpoint": up.name, "error": failure.category})
                if failure.status in CLIENT_FAULT:
                    await self._reply_failure(call, failure)
                    return
                if failure.category not in RETRYABLE or attempt == plan.retries:
                    break
                delay = BASE_BACKOFF_S * (2**attempt)
                if failure.retry_after_s is not None:
                    delay = max(delay, failure.retry_after_s)
                await asyncio.sleep(min(delay, MAX_BACKOFF_S))
            if not plan.fallback and (last is not None or refused):
                break
        if last is not None:
            await self._reply_failure(call, last)
            return
        await self._reply_unserved(call, refused, unsuited)

    def _payload(self, call: Call, up: Upstream, mode: int) -> bytes:
        """The upstream request body for ``up`` (its model name; translated when the APIs differ)."""
        body = call.body
        if mode == PASS:
            out = {**body, "model": up.model}
            if call.stream and up.api != MESSAGES:
                options = body.get("stream_options")
                out["stream_options"] = (
                    {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
                )
        elif mode == CHAT_VIA_MESSAGES:
            out = chat_to_messages_request(body, up.model)
        elif mode == MESSAGES_VIA_CHAT:
            out = messages_to_chat_request(body, up.model)
        else:
            out = _completions_as_chat(body, up.model)
        return orjson.dumps(out)

    def _headers(self, call: Call, up: Upstream) -> Mapping[str, str]:
        headers = up.headers_sse if call.stream else up.headers_json
        if call.anthropic_headers and up.api == MESSAGES and call.client_api == MESSAGES:
            headers = {**headers, **call.anthropic_headers}
        return headers

    def _new_record(self, call: Call, up: Upstream, sent: float) -> RequestRecord:
        t = sent - self.telemetry.origin
        return RequestRecord(
            run_id=self.telemetry.run_id,
            seq=0,
            endpoint=up.name,
            api=up.api,
            model=up.model,
            workload="gateway",
            scheduled_s=t,
            sent_s=t,
            output_tokens_requested=call.max_tokens,
        )

    async def _send_request(
        self, up: Upstream, headers: Mapping[str, str], payload: bytes, deadline: float
    ) -> Response:
        """Send and wait for the response headers; a kept-alive connection the server had closed (no byte
        came back) is replaced by a new one once, as clients.py does."""
        loop_time = asyncio.get_running_loop().time
        response, connect_s = await up.pool.request("POST", up.path, headers, payload)
        try:
            await response.wait_headers(max(deadline - loop_time(), 0.001))
        except HTTPClientError as exc:
            if connect_s is not None or exc.category != ERR_CONNECT:
                raise
            response, connect_s = await up.pool.request("POST", up.path, headers, payload, fresh=True)
            await response.wait_headers(max(deadline - loop_time(), 0.001))
        return response

    async def _attempt(self, call: Call, up: Upstream, mode: int, payload: bytes) -> Failure | None:
        """One try at one upstream: None once the client has been answered (whatever happened after)."""
        tel = self.telemetry
        sent = perf_counter()
        record = call.record = self._new_record(call, up, sent)
        call.endpoint = up.name
        tel.attempt_started(up.name)
        response: Response | None = None
        failure: Failure | None = None
        try:
            start = asyncio.get_running_loop().time()
            deadline_first = start + up.first_token_s
            deadline_total = start + up.total_s
            if not call.attempts:
                call.overhead_ms = (sent - call.arrival) * 1000  # arrival -> upstream write; the relay is added
            deadline = deadline_first if call.stream else deadline_total
            response = call.response = await self._send_request(up, self._headers(call, up), payload, deadline)
            record.headers_s = response.headers_at - tel.origin  # type: ignore[operator]
            record.http_status = response.status
            if response.status != 200:
                failure = await self._http_failure(up, response, record)
            elif call.stream:
                failure = await self._stream(call, up, mode, response, record, deadline_first, deadline_total)
            else:
                failure = await self._json(call, up, mode, response, record)
        except HTTPClientError as exc:
            failure = self._fail(record, up, exc.category, exc.detail)
        except asyncio.CancelledError:
            cancelled(record, "client disconnected" if call.disconnected else "cancelled (gateway shutting down)")
            if response is not None and response.status == 200:
                tel.upstream_ok(up.name)  # the endpoint was answering; the client left
            raise
        finally:
            if response is not None and not response.complete:
                response.abort()
            call.response = None
            if call.stream:
                tel.attempt_finished(up.name, record)
            else:
                # A non-streamed answer's "first token" is the whole answer: in the live TTFT the router sorts
                # by it would pass for a slow endpoint, so it counts toward the error rate only.
                first, record.first_token_s = record.first_token_s, None
                tel.attempt_finished(up.name, record)
                record.first_token_s = first
        if failure is not None:
            if failure.status is not None and 400 <= failure.status < 500 and failure.status != 429:
                tel.upstream_ok(up.name)  # alive and answering: the request was refused, not the endpoint broken
            else:
                tel.upstream_failed(up.name)
        elif record.status == OK:
            tel.upstream_ok(up.name)
        else:
            tel.upstream_failed(up.name)  # failed after the first chunk
        return failure

    def _fail(self, record: RequestRecord, up: Upstream, category: str, detail: str, **kw: Any) -> Failure:
        detail = up.scrub(detail)
        record.status = FAILED
        record.error_category = category
        record.error_detail = detail[:500]
        if record.done_s is None:
            record.done_s = perf_counter() - self.telemetry.origin
        return Failure(up.name, category, detail, api=up.api, **kw)

    async def _http_failure(self, up: Upstream, response: Response, record: RequestRecord) -> Failure:
        status = response.status
        detail = f"HTTP {status}"
        body = b""
        try:
            body = await response.read_all(up.idle_s)
            try:
                detail += ": " + error_message(orjson.loads(body))
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                detail += ": " + body[:200].decode("utf-8", "replace")
        except HTTPClientError:
            pass
        record.done_s = perf_counter() - self.telemetry.origin
        category = ERR_RATE_LIMIT if status == 429 else ERR_HTTP_5XX if status >= 500 else ERR_HTTP_4XX
        return self._fail(
            record,
            up,
            category,
            detail,
            status=status,
            retry_after_s=_retry_after(response.headers),
            body=up.scrub_bytes(body),
        )

    # -- streams ----------------------------------------------------------------------------------

    async def _stream(
        self,
        call: Call,
        up: Upstream,
        mode: int,
        response: Response,
        record: RequestRecord,
        deadline_first: float,
        deadline_total: float,
    ) -> Failure | None:
        relay = _StreamRelay(call, up, mode, record, self.telemetry.origin)
        try:
            if call.direct is not None:
                # Our own server: each upstream read is relayed inside its read callback (no task switch).
                sink = _DirectSink(self, call, up, relay, response, deadline_first, deadline_total)
                response.set_deadline(deadline_first, ERR_TIMEOUT, "bytes", up.first_token_s)
                await response.wait_end(sink)
                if sink.error is not None:
                    raise sink.error
            else:
                loop_time = asyncio.get_running_loop().time
                timeout, category = max(deadline_first - loop_time(), 0.001), ERR_TIMEOUT
                while pieces := await response.next_chunks(timeout, category):
                    for arrived, data in pieces:
                        relay.feed(arrived, data)
                    # One send per wake-up (every read it brought); the last piece waits for the end marker's send.
                    if relay.held and record.first_token_s is not None and not response.complete:
                        held, relay.held = relay.held, []
                        await self._emit(call, up, held)
                    timeout, category = relay.next_wait(loop_time(), deadline_first, deadline_total, up.idle_s)
            record.done_s = (response.done_at or perf_counter()) - relay.origin
            if not (relay.state.done or record.finish_reason):
                raise StreamError(ERR_STREAM_CUT, "stream ended without an end marker or finish reason")
            record.status = OK
            finish_text(relay.state)
            tail = relay.close()
            await self._emit(call, up, [tail] if tail else [b""], last=True)
            return None
        except (HTTPClientError, StreamError) as exc:
            finish_text(relay.state)
            if not call.committed:  # nothing reached the client: the next candidate may still answer
                return self._fail(record, up, exc.category, exc.detail)
            self._fail(record, up, exc.category, exc.detail)
            relay.held.append(stream_error(call.client_api, exc.category, f"upstream {up.name}: {exc.detail}"))
            await self._emit(call, up, relay.held, last=True)
            return None
        except asyncio.CancelledError:
            finish_text(relay.state)
            raise

    async def _emit(self, call: Call, up: Upstream, parts: list[bytes], last: bool = False) -> None:
        """Send what is held to the client; the first call sends the headers too."""
        if call.direct is not None:
            self.write_direct(call, up, parts, last)
            return
        send = call.send
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        if not call.committed:
            await send({"type": "http.response.start", "status": 200, "headers": self._commit(call, up, last)})
            await send({"type": "http.response.body", "body": body, "more_body": not last})
            self._first_sent(call)
            return
        if last:
            call.done = True
        await send({"type": "http.response.body", "body": body, "more_body": not last})

    def write_direct(self, call: Call, up: Upstream, parts: list[bytes], last: bool = False) -> None:
        """:meth:`_emit` on our own server: written at once, from the upstream's read callback too."""
        direct = call.direct
        assert direct is not None
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        if not call.committed:
            direct.start(200, self._commit(call, up, last))
            direct.write(body, not last)
            self._first_sent(call)
            return
        if last:
            call.done = True
        direct.write(body, not last)

    def _commit(self, call: Call, up: Upstream, last: bool) -> list[tuple[bytes, bytes]]:
        """The stream's response headers; from here on the call cannot move to another endpoint."""
        call.committed = True
        call.status = 200
        if last:
            call.done = True
        return [*_SSE_HEADERS, *self.id_headers(call, up)]

    def _first_sent(self, call: Call) -> None:
        record = call.record
        if call.overhead_ms is not None and record is not None and record.first_token_s is not None:
            # first token's read -> handed to the client's socket
            call.overhead_ms += (perf_counter() - self.telemetry.origin - record.first_token_s) * 1000

    def id_headers(self, call: Call, up: Upstream | None, answered: bool = True) -> list[tuple[bytes, bytes]]:
        """``x-tokenrace-*`` headers: who answered (or was tried last), why, and the request id (for
        /v1/feedback). Failed attempts are appended to the plan's reason."""
        reason = call.reason
        if call.attempts:
            failed = ", ".join(f"{a['endpoint']}: {a['error']}" for a in call.attempts)
            if not answered:
                what = "all failed"
            elif up is not None and all(a["endpoint"] == up.name for a in call.attempts):
                what = "retried after"
            else:
                what = "fallback after"
            reason = f"{reason}; {what} {failed}" if reason else f"{what} {failed}"
        name = up.name_bytes if up is not None else _ascii(call.endpoint or "none")
        return [
            (b"x-tokenrace-endpoint", name),
            (b"x-tokenrace-route-reason", _ascii(reason)),
            (b"x-tokenrace-request-id", call.request_id.encode("ascii")),
        ]

    # -- non-streamed answers -------------------------------------------------------------------

    async def _json(
        self, call: Call, up: Upstream, mode: int, response: Response, record: RequestRecord
    ) -> Failure | None:
        raw = await response.read_all(up.idle_s)
        t = (response.done_at or perf_counter()) - self.telemetry.origin
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._fail(record, up, ERR_MALFORMED, f"response is not valid JSON: {raw[:120]!r}")
        if not isinstance(obj, dict) or obj.get("error") or obj.get("type") == "error":
            detail = error_message(obj) if isinstance(obj, dict) else "response is not a JSON object"
            return self._fail(record, up, ERR_API, detail)
        try:
            fill_from_json(record, up.api, obj, t)
            if mode == PASS:
                body = raw
            elif mode == CHAT_VIA_MESSAGES:
                body = orjson.dumps(chat_response_from_messages(obj, up.model))
            elif mode == MESSAGES_VIA_CHAT:
                body = orjson.dumps(messages_response_from_chat(obj, up.model))
            else:
                body = orjson.dumps(_completion_from_chat(obj, up.model))
        except Exception:  # JSON of the wrong shape
            return self._fail(record, up, ERR_MALFORMED, f"response is not the API's shape: {raw[:120]!r}")
        record.status = OK
        call.committed = True
        call.done = True
        call.status = 200
        headers = [_JSON_TYPE, (b"content-length", b"%d" % len(body)), *self.id_headers(call, up)]
        await call.send({"type": "http.response.start", "status": 200, "headers": headers})
        await call.send({"type": "http.response.body", "body": body, "more_body": False})
        if call.overhead_ms is not None and response.done_at is not None:
            call.overhead_ms += (perf_counter() - response.done_at) * 1000
        return None

    # -- failures before any byte went out ------------------------------------------------------

    async def _reply_failure(self, call: Call, failure: Failure) -> None:
        """Every candidate failed (or the request was refused upstream): one error response."""
        status = failure.status
        extra: list[tuple[bytes, bytes]] = []
        # A refusal (4xx) is passed on; a broken or slow upstream is a bad gateway (502) or a timeout (504).
        code = status if status in PASSED_ON else _CATEGORY_STATUS.get(failure.category, 502)
        if failure.retry_after_s is not None and code == 429:
            extra.append((b"retry-after", b"%d" % math.ceil(failure.retry_after_s)))
        if failure.body and failure.api == call.client_api and status == code:
            body = failure.body  # the upstream's own error, in the client's API already
        else:
            tried = ", ".join(f"{a['endpoint']}: {a['error']}" for a in call.attempts) or failure.category
            message = f"upstream {failure.endpoint} failed: {failure.detail} (tried {tried})"
            body = error_body(code, call.client_api, message, failure.category)
        await self._reply(call, code, body, extra)

    async def _reply_unserved(self, call: Call, refused: list[str], unsuited: list[str]) -> None:
        """No candidate was tried: all behind open circuits or at their cap (503 + Retry-After), none speaks
        the client's API, or none is left by the client's own limits (400)."""
        plan = call.plan
        assert plan is not None
        why = "; ".join(
            [
                *(f"{a['endpoint']}: {a['error']}" for a in call.attempts),
                *(f"{name}: {reason}" for name, reason in plan.excluded.items()),
            ]
        )
        if refused or plan.retry_after_s is not None:
            waits = [w for name in refused if (w := self.telemetry.breaker.retry_after(name)) is not None]
            if plan.retry_after_s is not None:
                waits.append(plan.retry_after_s)
            retry = max(1, math.ceil(min(waits))) if waits else 1
            message = f"no endpoint of {plan.route!r} is available now ({why}); retry in {retry} s"
            body = error_body(503, call.client_api, message, "no_endpoint_available")
            await self._reply(call, 503, body, [(b"retry-after", b"%d" % retry)])
            return
        if unsuited:
            message = f"no endpoint of {plan.route!r} can serve this {call.client_api} call ({why})"
            if call.client_api == COMPLETIONS:
                message += "; a chat endpoint takes a single text prompt without echo, suffix, logprobs, best_of or n"
        else:
            message = f"no endpoint of {plan.route!r} may take this call ({why or 'no candidates'})"
        await self._reply(call, 400, error_body(400, call.client_api, message, "no_suitable_endpoint"))

    async def _reply(
        self, call: Call, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        call.committed = True
        call.done = True
        call.status = status
        up = self.upstreams.get(call.endpoint) if call.endpoint else None
        headers = [
            _JSON_TYPE,
            (b"content-length", b"%d" % len(body)),
            *self.id_headers(call, up, answered=False),
            *(extra or ()),
        ]
        await call.send({"type": "http.response.start", "status": status, "headers": headers})
        await call.send({"type": "http.response.body", "body": body, "more_body": False})


def _data_only(feed: Callable[[bytes], bytes]) -> Callable[[str | None, bytes], bytes]:
    def translate(name: str | None, data: bytes) -> bytes:
        return feed(data)

    return translate
