"""Provider emulator: OpenAI- and Anthropic-format SSE streams with scripted timing and faults.

Why it exists: tests need ground truth (we know exactly when each token was sent and how many there
were), and load-generator capacity benchmarks need an upstream that is never the bottleneck. So it is
a raw ``asyncio.Protocol`` HTTP/1.1 server (``httptools`` parser, ``uvloop`` in :func:`run_emulator`)
that pre-renders its byte streams, not a web framework.

What a response contains (all of it deterministic given the settings and the request):

* Output tokens are words from :data:`WORDS`; each is exactly one cl100k_base token (leading space
  included), so the cl100k count of the output text equals the number of tokens emitted. Token ``k``
  of a text is ``WORDS[k % len(WORDS)]``; reasoning text and answer text each start at ``k = 0``.
* ``tokens`` answer tokens, preceded by ``reasoning_tokens`` reasoning tokens (OpenAI chat
  ``delta.reasoning_content``, Anthropic ``thinking`` block; /v1/completions has no reasoning). The
  request's ``max_completion_tokens``/``max_tokens`` caps reasoning + answer together, as the real
  APIs do; when it cuts the answer the finish reason is ``length``/``max_tokens``.
* Reported prompt tokens = number of whitespace-separated words in the text of all messages (string
  content or the text parts of a list), plus Anthropic's ``system``; for /v1/completions, the words of
  the prompt string(s) or the length of a token-id prompt.
* Timing, from t0 = the moment the request is fully parsed: the role chunk / ``message_start`` at
  t0; output chunk ``i`` at t0 + ttft + i*itl; finish, usage and end marker right after the last one.
  Jitter is drawn per interval (the ttft interval, then each itl), clamped at 0 so times never go
  backwards. The absolute times (``time.monotonic``) are computed up front, so nothing drifts. They are
  scheduled on a Linux timerfd (:class:`tokenrace.timers.PreciseTimers`) because uvloop's ``loop.call_at`` and
  ``loop.time()`` have millisecond resolution, ±1 ms of noise in what should be ground truth; with it a
  chunk leaves ~0.1 ms after its time. Elsewhere ``loop.call_at`` is the fallback.
* Faults are drawn per generation request with ``random.Random(seed)`` (jitter uses its own
  ``random.Random(seed + 1)`` so the fault sequence does not depend on the timing script).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import math
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httptools
import orjson

from tokenrace import timers
from tokenrace.timers import PreciseTimers, Timer

__all__ = [
    "API_KINDS",
    "FAULT_KINDS",
    "JITTER_KINDS",
    "WORDS",
    "EmulatorProcess",
    "EmulatorSettings",
    "count_words",
    "output_text",
    "parse_faults",
    "parse_jitter",
    "run_emulator",
    "start_emulator",
]

API_KINDS = ("openai", "anthropic", "all")
FAULT_KINDS = ("429", "500", "refuse", "cut", "malformed", "stall")
JITTER_KINDS = ("none", "uniform", "normal", "exp")

# Common English words, each a single cl100k_base token when preceded by a space (checked by a test).
WORDS: tuple[str, ...] = tuple(
    " " + w
    for w in (
        "the time data people year way day man thing woman life child world school state family "
        "student group country problem hand part place case week company system program question "
        "work government number night point home water room mother area money story fact month lot "
        "right study book eye job word business issue side kind head house service friend father "
        "power hour game line end member law car city community name president team minute idea kid "
        "body information back parent face others level office door health person art war history "
        "party result change morning reason research girl guy moment air teacher force education"
    ).split()
)


def output_text(n_tokens: int) -> str:
    """The text of ``n_tokens`` emitted tokens, so tests can compare what arrived with what was sent."""
    n_words = len(WORDS)
    return "".join(WORDS[k % n_words] for k in range(n_tokens))


def count_words(text: str) -> int:
    """The emulator's prompt-token count for one string: its whitespace-separated words."""
    return len(text.split())


def parse_faults(spec: str) -> dict[str, float]:
    """Parse ``"429:0.1,cut:0.05"`` into ``{"429": 0.1, "cut": 0.05}`` (CLI form of ``faults``)."""
    faults: dict[str, float] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        kind, sep, prob = item.partition(":")
        if not sep:
            raise ValueError(f"fault {item!r} must be KIND:PROBABILITY, e.g. 429:0.1")
        try:
            faults[kind.strip()] = float(prob)
        except ValueError:
            raise ValueError(f"fault {item!r}: probability {prob!r} is not a number") from None
    return _validate_faults(faults)


def _validate_faults(faults: Mapping[str, float]) -> dict[str, float]:
    """Check kinds and probabilities; at most one fault per request means they must sum to <= 1."""
    out: dict[str, float] = {}
    for kind, prob in faults.items():
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; valid kinds: {', '.join(FAULT_KINDS)}")
        p = float(prob)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"fault {kind!r}: probability {p} is not in [0, 1]")
        out[kind] = p
    if sum(out.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault probabilities sum to {sum(out.values()):g} > 1 (one fault per request)")
    return out


def parse_jitter(spec: str) -> tuple[str, float]:
    """Validate a jitter spec ("none", "uniform:A", "normal:S", "exp:M"; ms) into ``(kind, param)``."""
    valid = "valid kinds: none, uniform:A (±A ms), normal:S (sd S ms), exp:M (mean M ms)"
    text = spec.strip()
    if text in ("", "none"):
        return ("none", 0.0)
    kind, sep, arg = text.partition(":")
    if kind not in JITTER_KINDS or kind == "none" or not sep:
        raise ValueError(f"invalid jitter {spec!r}; {valid}")
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"invalid jitter {spec!r}: {arg!r} is not a number; {valid}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"invalid jitter {spec!r}: parameter must be a finite number >= 0; {valid}")
    return (kind, value)


@dataclass(frozen=True)
class EmulatorSettings:
    """The script every request follows; times in milliseconds unless the name says otherwise."""

    api: str = "all"  # "openai" | "anthropic" | "all": which generation routes answer (others 404)
    ttft_ms: float = 50.0  # request parsed -> first output chunk
    itl_ms: float = 10.0  # between consecutive output chunks
    tokens: int = 64  # answer tokens per response (fewer if the request's max tokens is smaller)
    tokens_per_chunk: int = 1
    reasoning_tokens: int = 0  # extra tokens before the answer, same chunking and timing
    jitter: str = "none"  # "none" | "uniform:A" | "normal:S" | "exp:M", added to every interval
    faults: dict[str, float] = field(default_factory=dict)  # kind -> probability per request
    seed: int = 0
    usage: bool = True  # False: never send usage (exercises the client-tokenizer fallback)
    stall_s: float = 30.0  # how long a "stall" keeps the connection silent before closing
    retry_after_s: int = 1
    # llama.cpp-style ``timings`` (actual prompt/decode times and the raw monotonic write times) in a
    # chunk before the finish chunk of scripted OpenAI-format streams: server-side truth for tests.
    timings: bool = False

    def __post_init__(self) -> None:
        if self.api not in API_KINDS:
            raise ValueError(f"api must be one of {', '.join(API_KINDS)}, not {self.api!r}")
        if self.ttft_ms < 0 or self.itl_ms < 0 or self.stall_s < 0 or self.retry_after_s < 0:
            raise ValueError("ttft_ms, itl_ms, stall_s and retry_after_s must be >= 0")
        if self.tokens < 1 or self.tokens_per_chunk < 1 or self.reasoning_tokens < 0:
            raise ValueError("tokens and tokens_per_chunk must be >= 1, reasoning_tokens >= 0")
        parse_jitter(self.jitter)
        object.__setattr__(self, "faults", _validate_faults(self.faults))

    @property
    def instant(self) -> bool:
        """No scripted delay at all: responses are written in one go from pre-rendered bytes."""
        return self.ttft_ms == 0 and self.itl_ms == 0 and parse_jitter(self.jitter)[0] == "none"


# ---------------------------------------------------------------------------------------------------
# Wire rendering

_CHAT, _COMPLETIONS, _MESSAGES, _HEALTH, _MODELS = range(5)
_ROUTES = {
    b"/v1/chat/completions": _CHAT,
    b"/v1/completions": _COMPLETIONS,
    b"/v1/messages": _MESSAGES,
    b"/health": _HEALTH,
    b"/v1/models": _MODELS,
}
_ID_PREFIX = {_CHAT: b"chatcmpl-", _COMPLETIONS: b"cmpl-", _MESSAGES: b"msg_"}
# Ids are rendered with this placeholder and swapped per request (same length, so chunk sizes hold).
_PH = b"~" * 24
_PH_STR = _PH.decode()
_END = b"0\r\n\r\n"
_STATUS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
}
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\nServer: tokenrace-emulator\r\n"
)
_SSE_HEADERS = {True: _SSE_HEAD + b"\r\n", False: _SSE_HEAD + b"Connection: close\r\n\r\n"}
_BAD_OPENAI = b'data: {"choices": [ {"delta": \n\n'
_BAD_ANTHROPIC = b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": \n\n'
_SIGNATURE = "ZW11bGF0ZWQtdGhpbmtpbmc="
_MODEL_LIST = orjson.dumps(
    {
        "object": "list",
        "data": [
            {
                "id": "emulator",
                "object": "model",
                "type": "model",
                "created": 0,
                "created_at": "1970-01-01T00:00:00Z",
                "owned_by": "tokenrace",
                "display_name": "tokenrace emulator",
            }
        ],
        "has_more": False,
        "first_id": "emulator",
        "last_id": "emulator",
    }
)


def _frame(event: bytes) -> bytes:
    """One HTTP chunk per SSE event, as real servers flush them."""
    return b"%x\r\n%s\r\n" % (len(event), event)


def _data(obj: Any) -> bytes:
    return _frame(b"data: " + orjson.dumps(obj) + b"\n\n")


def _event(name: str, obj: Any) -> bytes:
    return _frame(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n")


def _pieces(n_tokens: int, per_chunk: int) -> list[str]:
    words = [WORDS[k % len(WORDS)] for k in range(n_tokens)]
    return ["".join(words[i : i + per_chunk]) for i in range(0, n_tokens, per_chunk)]


def _http_response(status: int, body: bytes, keep_alive: bool, extra: bytes = b"") -> bytes:
    conn = b"" if keep_alive else b"Connection: close\r\n"
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Server: tokenrace-emulator\r\n%s%s\r\n%s"
        % (status, _STATUS.get(status, b"Error"), len(body), extra, conn, body)
    )


def _error_body(route: int | None, status: int, message: str) -> bytes:
    """An error in the shape of the API the route belongs to."""
    if route == _MESSAGES:
        kind = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error"}
        err_type = kind.get(status, "api_error")
        return orjson.dumps({"type": "error", "error": {"type": err_type, "message": message}})
    kinds = {429: ("requests", "rate_limit_exceeded"), 500: ("server_error", None)}
    err_type, code = kinds.get(status, ("invalid_request_error", "unknown_url" if status == 404 else None))
    return orjson.dumps({"error": {"message": message, "type": err_type, "param": None, "code": code}})


@dataclass(slots=True, frozen=True)
class _Template:
    """The constant bytes of one response shape; the per-request parts are rendered around them."""

    head: bytes  # sent at t0 after the per-request head
    chunks: tuple[bytes, ...]  # output-carrying frames, one per scheduled time
    body: bytes  # b"".join(chunks), for the one-write instant path
    tail_pre: bytes  # finish frames, before the per-request tail (the usage chunk)
    tail_post: bytes  # end marker and the terminating zero-length chunk


def _openai_template(
    route: int, model: str, n_reason: int, n_answer: int, finish: str, usage_null: bool, per_chunk: int
) -> _Template:
    created = int(time.time())
    if route == _CHAT:
        base = {"id": "chatcmpl-" + _PH_STR, "object": "chat.completion.chunk", "created": created}
    else:
        base = {"id": "cmpl-" + _PH_STR, "object": "text_completion", "created": created}
    base["model"] = model

    def chunk(choice: dict[str, Any]) -> bytes:
        obj: dict[str, Any] = {**base, "choices": [choice]}
        if usage_null:
            obj["usage"] = None  # OpenAI sends "usage": null on every chunk when include_usage is on
        return _data(obj)

    if route == _CHAT:
        head = chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
        frames = [
            chunk({"index": 0, "delta": {"reasoning_content": t}, "finish_reason": None})
            for t in _pieces(n_reason, per_chunk)
        ]
        frames += [
            chunk({"index": 0, "delta": {"content": t}, "finish_reason": None}) for t in _pieces(n_answer, per_chunk)
        ]
        tail_pre = chunk({"index": 0, "delta": {}, "finish_reason": finish})
    else:
        head = b""
        frames = [
            chunk({"text": t, "index": 0, "logprobs": None, "finish_reason": None})
            for t in _pieces(n_answer, per_chunk)
        ]
        tail_pre = chunk({"text": "", "index": 0, "logprobs": None, "finish_reason": finish})
    chunks = tuple(frames)
    return _Template(head, chunks, b"".join(chunks), tail_pre, _frame(b"data: [DONE]\n\n") + _END)


def _anthropic_template(n_reason: int, n_answer: int, finish: str, usage: bool, per_chunk: int) -> _Template:
    text_index = 1 if n_reason else 0
    ping = _event("ping", {"type": "ping"})
    thinking_end = _event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": _SIGNATURE}},
    ) + _event("content_block_stop", {"type": "content_block_stop", "index": 0})
    text_start = _event(
        "content_block_start",
        {"type": "content_block_start", "index": text_index, "content_block": {"type": "text", "text": ""}},
    )
    if n_reason:
        block = {"type": "thinking", "thinking": "", "signature": ""}
        head = _event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
    else:
        head = text_start
    head += ping
    frames = [
        _event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": t}},
        )
        for t in _pieces(n_reason, per_chunk)
    ]
    answer = [
        _event(
            "content_block_delta",
            {"type": "content_block_delta", "index": text_index, "delta": {"type": "text_delta", "text": t}},
        )
        for t in _pieces(n_answer, per_chunk)
    ]
    if n_reason and answer:
        answer[0] = thinking_end + text_start + answer[0]
    frames += answer
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": finish, "stop_sequence": None},
    }
    if usage:
        delta["usage"] = {"output_tokens": n_reason + n_answer}
    last_stop = _event("content_block_stop", {"type": "content_block_stop", "index": text_index})
    tail_pre = (thinking_end if n_reason and not answer else last_stop) + _event("message_delta", delta)
    tail_pre += _event("message_stop", {"type": "message_stop"})
    chunks = tuple(frames)
    return _Template(head, chunks, b"".join(chunks), tail_pre, _END)


class _BadRequest(Exception):
    """A request the real API would reject with 400."""


@dataclass(slots=True)
class _Gen:
    """A parsed generation request."""

    route: int
    model: str
    stream: bool
    include_usage: bool
    max_out: int | None
    prompt_tokens: int


def _text_words(content: Any) -> int:
    if isinstance(content, str):
        return count_words(content)
    total = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += count_words(part["text"])
    return total


def _max_tokens(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _BadRequest(f"{name} must be an integer >= 1, got {value!r}")
        return value
    return None


def _parse_gen(route: int, body: dict[str, Any]) -> _Gen:
    model = body.get("model")
    model = model if isinstance(model, str) and model else "emulator"
    stream = bool(body.get("stream"))
    if route == _COMPLETIONS:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            n_prompt = count_words(prompt)
        elif isinstance(prompt, list):
            n_prompt = 0
            for p in prompt:
                if isinstance(p, str):
                    n_prompt += count_words(p)
                elif isinstance(p, list):
                    n_prompt += len(p)
                else:
                    n_prompt += 1  # a token id
        else:
            raise _BadRequest("'prompt' is required (a string, a list of strings or token ids)")
    else:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise _BadRequest("'messages' is required and must be a list")
        n_prompt = sum(_text_words(m.get("content")) for m in messages if isinstance(m, dict))
        if route == _MESSAGES:
            n_prompt += _text_words(body.get("system"))
    if route == _MESSAGES:
        if body.get("max_tokens") is None:
            raise _BadRequest("max_tokens: Field required")
        max_out = _max_tokens(body, "max_tokens")
        include_usage = True
    else:
        names = ("max_completion_tokens", "max_tokens") if route == _CHAT else ("max_tokens",)
        max_out = _max_tokens(body, *names)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return _Gen(route, model, stream, include_usage, max_out, n_prompt)


# ---------------------------------------------------------------------------------------------------
# The server


class _App:
    """State shared by every connection of one emulator: settings, caches, random streams."""

    def __init__(self, settings: EmulatorSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.instant = settings.instant
        self.jitter_kind, self.jitter_arg = parse_jitter(settings.jitter)
        self.fault_rng = random.Random(settings.seed)
        self.jitter_rng = random.Random(settings.seed + 1)
        self.faults = [(k, p) for k in FAULT_KINDS if (p := settings.faults.get(k, 0.0)) > 0]
        self.templates: dict[tuple[Any, ...], _Template] = {}
        self.id_prefix = random.getrandbits(32)
        self.counter = 0
        self.conns: set[_Conn] = set()
        self.timers = PreciseTimers(loop) if timers.TIMERFD is not None else None
        enabled = {"openai": (_CHAT, _COMPLETIONS), "anthropic": (_MESSAGES,)}
        self.enabled = {_HEALTH, _MODELS, *enabled.get(settings.api, (_CHAT, _COMPLETIONS, _MESSAGES))}

    def new_id(self) -> bytes:
        self.counter += 1
        return b"%08x%016x" % (self.id_prefix, self.counter)

    def pick_fault(self) -> str | None:
        if not self.faults:
            return None
        u = self.fault_rng.random()
        for kind, p in self.faults:
            if u < p:
                return kind
            u -= p
        return None

    def template(self, gen: _Gen, n_reason: int, n_answer: int, length: bool, send_usage: bool) -> _Template:
        key = (gen.route, gen.model, n_reason, n_answer, length, send_usage)
        tmpl = self.templates.get(key)
        if tmpl is None:
            per = self.settings.tokens_per_chunk
            if gen.route == _MESSAGES:
                finish = "max_tokens" if length else "end_turn"
                tmpl = _anthropic_template(n_reason, n_answer, finish, self.settings.usage, per)
            else:
                finish = "length" if length else "stop"
                tmpl = _openai_template(gen.route, gen.model, n_reason, n_answer, finish, send_usage, per)
            if len(self.templates) >= 4096:
                self.templates.clear()
            self.templates[key] = tmpl
        return tmpl

    def schedule(self, t0: float, n: int) -> list[float]:
        """Absolute send times of the ``n`` output chunks."""
        ttft, itl = self.settings.ttft_ms / 1000.0, self.settings.itl_ms / 1000.0
        if self.jitter_kind == "none":
            return [t0 + ttft + i * itl for i in range(n)]
        times: list[float] = []
        t = t0
        for i in range(n):
            t += max(0.0, (itl if i else ttft) + self._jitter() / 1000.0)
            times.append(t)
        return times

    def _jitter(self) -> float:
        rng, arg = self.jitter_rng, self.jitter_arg
        if self.jitter_kind == "uniform":
            return rng.uniform(-arg, arg)
        if self.jitter_kind == "normal":
            return rng.gauss(0.0, arg)
        return rng.expovariate(1.0 / arg) if arg > 0 else 0.0

    # -- request dispatch ----------------------------------------------------------------------------

    def handle(self, conn: _Conn, method: bytes, url: bytes, raw: bytes, keep_alive: bool, t0: float) -> None:
        """Answer one request; ``t0`` is when its last bytes were read (``time.monotonic``, not
        ``loop.time()``, which uvloop truncates to the millisecond)."""
        path = url.partition(b"?")[0]
        route = _ROUTES.get(path)
        if route is None or route not in self.enabled:
            msg = f"Unknown request URL: {method.decode()} {path.decode(errors='replace')}"
            conn.reply(_http_response(404, _error_body(route, 404, msg), keep_alive), keep_alive)
            return
        want = b"GET" if route in (_HEALTH, _MODELS) else b"POST"
        if method != want:
            msg = f"Method {method.decode()} not allowed on {path.decode()}; use {want.decode()}"
            extra = b"Allow: " + want + b"\r\n"
            conn.reply(_http_response(405, _error_body(route, 405, msg), keep_alive, extra), keep_alive)
            return
        if route == _HEALTH:
            conn.reply(_http_response(200, b'{"status":"ok"}', keep_alive), keep_alive)
            return
        if route == _MODELS:
            conn.reply(_http_response(200, _MODEL_LIST, keep_alive), keep_alive)
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            msg = f"We could not parse the JSON body of your request: {exc}"
            conn.reply(_http_response(400, _error_body(route, 400, msg), keep_alive), keep_alive)
            return
        try:
            if not isinstance(body, dict):
                raise _BadRequest("the request body must be a JSON object")
            gen = _parse_gen(route, body)
        except _BadRequest as exc:
            conn.reply(_http_response(400, _error_body(route, 400, str(exc)), keep_alive), keep_alive)
            return
        self.generate(conn, gen, t0, keep_alive)

    def generate(self, conn: _Conn, gen: _Gen, t0: float, keep_alive: bool) -> None:
        s = self.settings
        fault = self.pick_fault()
        if fault == "refuse":
            conn.abort()
            return
        if fault in ("429", "500"):
            status = int(fault)
            msg = "Rate limit reached (emulated fault)" if status == 429 else "Internal error (emulated fault)"
            extra = b"Retry-After: %d\r\n" % s.retry_after_s if status == 429 else b""
            conn.reply(_http_response(status, _error_body(gen.route, status, msg), keep_alive, extra), keep_alive)
            return
        n_reason = 0 if gen.route == _COMPLETIONS else s.reasoning_tokens
        cap = gen.max_out if gen.max_out is not None else n_reason + s.tokens
        n_reason = min(n_reason, cap)
        n_answer = min(s.tokens, cap - n_reason)
        length = n_answer < s.tokens
        send_usage = s.usage and gen.include_usage
        rid = self.new_id()
        if not gen.stream:
            self._respond_json(conn, gen, t0, keep_alive, fault, rid, n_reason, n_answer, length)
            return
        tmpl = self.template(gen, n_reason, n_answer, length, send_usage)
        n_out = n_reason + n_answer
        if gen.route == _MESSAGES:
            msg: dict[str, Any] = {
                "id": "msg_" + _PH_STR,
                "type": "message",
                "role": "assistant",
                "model": gen.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
            }
            if s.usage:
                msg["usage"] = {
                    "input_tokens": gen.prompt_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 1,
                }
            head = _SSE_HEADERS[keep_alive] + _event("message_start", {"type": "message_start", "message": msg})
            head += tmpl.head
            tail = tmpl.tail_pre + tmpl.tail_post
        else:
            head = _SSE_HEADERS[keep_alive] + tmpl.head
            tail = tmpl.tail_pre
            if send_usage:
                prefix = "chatcmpl-" if gen.route == _CHAT else "cmpl-"
                obj = {
                    "id": prefix + _PH_STR,
                    "object": "chat.completion.chunk" if gen.route == _CHAT else "text_completion",
                    "created": int(time.time()),
                    "model": gen.model,
                    "choices": [],
                    "usage": _openai_usage(gen.prompt_tokens, n_out, n_reason),
                }
                tail += _data(obj)
            tail += tmpl.tail_post
        if fault is None and self.instant:
            conn.reply(b"".join((head, tmpl.body, tail)).replace(_PH, rid), keep_alive)
            return
        timing = None
        if s.timings and gen.route != _MESSAGES and fault is None:
            timing = {
                "id": ("chatcmpl-" if gen.route == _CHAT else "cmpl-") + _PH_STR,
                "object": "chat.completion.chunk" if gen.route == _CHAT else "text_completion",
                "model": gen.model,
                "prompt_n": gen.prompt_tokens,
                "predicted_n": n_out,
                "first_chunk_tokens": min(s.tokens_per_chunk, n_out),
                "t0": t0,
            }
        stream = _Stream(
            conn, self, tmpl.chunks, self.schedule(t0, len(tmpl.chunks)), head, tail, rid, gen.route, fault
        )
        stream.timing = timing

    def _respond_json(
        self,
        conn: _Conn,
        gen: _Gen,
        t0: float,
        keep_alive: bool,
        fault: str | None,
        rid: bytes,
        n_reason: int,
        n_answer: int,
        length: bool,
    ) -> None:
        """A non-stream response: one JSON body at the time the last chunk would have been sent."""
        s = self.settings
        per = s.tokens_per_chunk
        n_chunks = -(-n_reason // per) + -(-n_answer // per)
        times = self.schedule(t0, n_chunks)
        end = times[-1] if times else t0
        half = times[n_chunks // 2 - 1] if n_chunks >= 2 else t0
        ident = (_ID_PREFIX[gen.route] + rid).decode()
        answer, reasoning = output_text(n_answer), output_text(n_reason)
        obj: dict[str, Any]
        if gen.route == _MESSAGES:
            content: list[dict[str, Any]] = []
            if n_reason:
                content.append({"type": "thinking", "thinking": reasoning, "signature": _SIGNATURE})
            if n_answer:
                content.append({"type": "text", "text": answer})
            obj = {
                "id": ident,
                "type": "message",
                "role": "assistant",
                "model": gen.model,
                "content": content,
                "stop_reason": "max_tokens" if length else "end_turn",
                "stop_sequence": None,
            }
            if s.usage:
                obj["usage"] = {
                    "input_tokens": gen.prompt_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": n_reason + n_answer,
                }
        else:
            finish = "length" if length else "stop"
            if gen.route == _CHAT:
                message: dict[str, Any] = {"role": "assistant", "content": answer}
                if n_reason:
                    message["reasoning_content"] = reasoning
                choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                kind = "chat.completion"
            else:
                choice = {"text": answer, "index": 0, "logprobs": None, "finish_reason": finish}
                kind = "text_completion"
            obj = {"id": ident, "object": kind, "created": int(time.time()), "model": gen.model, "choices": [choice]}
            if s.usage:
                obj["usage"] = _openai_usage(gen.prompt_tokens, n_reason + n_answer, n_reason)
        body = orjson.dumps(obj)
        if fault == "malformed":
            body = body[: len(body) // 2] + b"\n" + b" " * (len(body) - len(body) // 2 - 1)
        data = _http_response(200, body, keep_alive)
        if fault == "cut":
            data = data[: len(data) - len(body) // 2]
            conn.at(half, lambda: conn.close(data))
        elif fault == "stall":
            conn.at(half + s.stall_s, conn.close)
        elif end <= time.monotonic():
            conn.reply(data, keep_alive)  # instant mode: no timer
        else:
            conn.at(end, lambda: conn.reply(data, keep_alive))


def _openai_usage(prompt: int, completion: int, reasoning: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


class _Stream:
    """One scripted SSE response: writes each output chunk at its absolute time, then the tail."""

    __slots__ = (
        "app",
        "chunks",
        "conn",
        "fault",
        "first_sent",
        "i",
        "last_sent",
        "limit",
        "rid",
        "route",
        "tail",
        "times",
        "timing",
    )

    def __init__(
        self,
        conn: _Conn,
        app: _App,
        chunks: tuple[bytes, ...],
        times: list[float],
        head: bytes,
        tail: bytes,
        rid: bytes,
        route: int,
        fault: str | None,
    ) -> None:
        self.conn, self.app, self.chunks, self.times = conn, app, chunks, times
        self.tail, self.rid, self.route, self.fault = tail, rid, route, fault
        self.i = 0
        self.limit = len(chunks) // 2 if fault in ("cut", "stall") else len(chunks)
        self.timing: dict[str, Any] | None = None
        self.first_sent = self.last_sent = 0.0
        conn.transport.write(head.replace(_PH, rid))
        self.advance(False)

    def advance(self, fired: bool) -> None:
        """Write every chunk that is due (the one the timer fired for even if the clock rounds early)."""
        conn = self.conn
        if conn.closing:
            return
        now = time.monotonic()
        parts: list[bytes] = []
        i, times, limit = self.i, self.times, self.limit
        bad_at = len(self.chunks) // 2 if self.fault == "malformed" else -1
        while i < limit and (fired or times[i] <= now):
            fired = False
            if i == bad_at:
                parts.append(_frame(_BAD_ANTHROPIC if self.route == _MESSAGES else _BAD_OPENAI))
            parts.append(self.chunks[i])
            i += 1
        if parts:
            if self.i == 0:
                self.first_sent = time.monotonic()
            self.last_sent = time.monotonic()
        self.i = i
        if i < limit:
            if parts:
                conn.transport.write(b"".join(parts).replace(_PH, self.rid))
            conn.at(times[i], self.advance, True)
            return
        if self.fault == "cut":
            conn.close(b"".join(parts).replace(_PH, self.rid))
        elif self.fault == "stall":
            if parts:
                conn.transport.write(b"".join(parts).replace(_PH, self.rid))
            conn.at(now + self.app.settings.stall_s, conn.close)
        else:
            if self.timing is not None:
                parts.append(self._timings_chunk())
            parts.append(self.tail)
            conn.reply(b"".join(parts).replace(_PH, self.rid), conn.keep_alive)

    def _timings_chunk(self) -> bytes:
        """llama.cpp-style ``timings`` of what the emulator actually did, plus its raw monotonic write times.

        ``prompt_ms`` is request parsed → first output chunk written; ``predicted_per_second`` uses the
        same after-the-first-chunk definition as the client's output speed, so the two compare like for
        like. ``emulator.*`` are ``CLOCK_MONOTONIC`` seconds (Linux shares that clock between processes,
        and ``time.perf_counter`` reads it too), which lets a test compare the client's arrival stamps
        with the moment the bytes were written.
        """
        info = self.timing
        assert info is not None
        decode_s = self.last_sent - self.first_sent
        after_first = info["predicted_n"] - info["first_chunk_tokens"]
        timings = {
            "prompt_n": info["prompt_n"],
            "prompt_ms": (self.first_sent - info["t0"]) * 1000,
            "predicted_n": info["predicted_n"],
            "predicted_ms": decode_s * 1000,
            "predicted_per_second": after_first / decode_s if decode_s > 0 else None,
            "emulator": {
                "request_parsed": info["t0"],
                "first_token_sent": self.first_sent,
                "last_token_sent": self.last_sent,
            },
        }
        chunk = {
            "id": info["id"],
            "object": info["object"],
            "created": int(time.time()),
            "model": info["model"],
            "choices": [],
            "timings": timings,
        }
        return _data(chunk)


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection: parses requests with httptools and answers them one at a time."""

    def __init__(self, app: _App) -> None:
        self.app = app
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.method = b""
        self.req_keep_alive = True
        self.keep_alive = True  # of the request being answered
        self.pending: deque[tuple[bytes, bytes, bytes, bool, float]] = deque()
        self.busy = False  # a response is in progress
        self.dispatching = False
        self.dispatch_scheduled = False
        self.read_at = 0.0
        self.closing = False
        self.timer: asyncio.TimerHandle | asyncio.Handle | Timer | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.app.conns.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.pending.clear()
        self.app.conns.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def data_received(self, data: bytes) -> None:
        # The script runs from the moment the request's bytes were read, stamped before any parsing.
        self.read_at = time.monotonic()
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.close(_http_response(400, _error_body(None, 400, "upgrades are not supported"), False))
            return
        except httptools.HttpParserError as exc:
            self.close(_http_response(400, _error_body(None, 400, f"bad HTTP request: {exc}"), False))
            return
        if self.pending and not self.busy:
            if self.app.instant:
                self.dispatch()
            elif not self.dispatch_scheduled:
                # Scripted timing: answer after this loop pass, so every socket that became readable
                # in the same pass is stamped before any request is processed (a burst of requests
                # then all start their scripts on time instead of queueing behind each other's parsing).
                self.dispatch_scheduled = True
                self.app.loop.call_soon(self._scheduled_dispatch)

    def _scheduled_dispatch(self) -> None:
        self.dispatch_scheduled = False
        if self.pending and not self.busy:
            self.dispatch()

    # -- httptools callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"expect" and value.lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_headers_complete(self) -> None:
        self.method = self.parser.get_method()
        self.req_keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        # Only queue here: exceptions raised inside httptools callbacks would look like parse errors.
        self.pending.append((self.method, self.url, b"".join(self.body), self.req_keep_alive, self.read_at))

    # -- responses -----------------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Answer queued requests in order; instant responses finish inside the loop."""
        self.dispatching = True
        try:
            while self.pending and not self.busy and not self.closing:
                method, url, body, keep_alive, read_at = self.pending.popleft()
                self.busy = True
                self.keep_alive = keep_alive
                self.app.handle(self, method, url, body, keep_alive, read_at)
        finally:
            self.dispatching = False

    def reply(self, data: bytes, keep_alive: bool) -> None:
        """Write the rest of a response and end it; keep the connection if the request allowed it."""
        if self.closing:
            return
        if not keep_alive:
            self.close(data)
            return
        self.transport.write(data)
        self.busy = False
        if self.pending and not self.dispatching:
            self.dispatch()

    def at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        """The connection's single pending timer (``when`` on ``time.monotonic``), cancelled on disconnect."""
        if not self.closing:
            timers = self.app.timers
            if timers is not None:
                self.timer = timers.call_at(when, callback, *args)
            else:
                loop = self.app.loop
                self.timer = loop.call_at(when + loop.time() - time.monotonic(), callback, *args)

    def close(self, data: bytes = b"") -> None:
        """Flush ``data`` and close gracefully (FIN), stopping any timer."""
        if self.closing:
            return
        if data:
            self.transport.write(data)
        self.connection_lost(None)
        self.transport.close()

    def abort(self) -> None:
        """Drop the connection with a reset and no response (the "refuse" fault)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection_lost(None)
        self.transport.abort()


async def start_emulator(settings: EmulatorSettings, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Serve on the running loop (port 0: a free one; read it from ``server.sockets``).

    Closing the server stops listening; open connections end when their clients close them.
    """
    loop = asyncio.get_running_loop()
    app = _App(settings, loop)
    return await loop.create_server(lambda: _Conn(app), host, port, backlog=4096)


def run_emulator(
    settings: EmulatorSettings,
    host: str = "127.0.0.1",
    port: int = 0,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve on uvloop until SIGINT/SIGTERM; ``ready(port)`` is called once it is listening."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        app = _App(settings, loop)
        server = await loop.create_server(lambda: _Conn(app), host, port, backlog=4096)
        if ready is not None:
            ready(server.sockets[0].getsockname()[1])
        await stop.wait()
        server.close()
        for conn in list(app.conns):
            conn.close()
        await server.wait_closed()

    try:
        import uvloop
    except ImportError:  # no uvloop on Windows: the stdlib loop works, only slower
        asyncio.run(main())
    else:
        uvloop.run(main())


def _child_main() -> None:
    """Entry point of :class:`EmulatorProcess`'s child: settings as JSON in argv, port on stdout."""
    settings = EmulatorSettings(**orjson.loads(sys.argv[1]))

    def ready(port: int) -> None:
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()

    def watch_parent() -> None:
        # The parent holds our stdin open; EOF means it is gone, so do not outlive it.
        # os.read, not sys.stdin: a daemon thread blocked in a buffered read aborts interpreter exit.
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, daemon=True).start()
    run_emulator(settings, sys.argv[2], int(sys.argv[3]), ready)


class EmulatorProcess:
    """The emulator in its own process, so it never shares an event loop (or a core) with the client.

    Use as a context manager; ``base_url`` is ``http://HOST:PORT/v1``. The child runs in its own session
    (a terminal Ctrl-C reaches only the parent, which stops it on exit) and exits if the parent dies.
    """

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.settings = settings or EmulatorSettings()
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> EmulatorProcess:
        """Spawn the child, read its port, wait until /health answers."""
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = [
            sys.executable,
            "-c",
            "from tokenrace.emulator import _child_main; _child_main()",
            orjson.dumps(asdict(self.settings)).decode(),
            self.host,
            str(self.port),
        ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout
        try:
            self.port = self._read_port(deadline)
            self._wait_healthy(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self, deadline: float) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        remaining = deadline - time.monotonic()
        readable, _, _ = select.select([self.proc.stdout], [], [], max(0.0, remaining))
        line = self.proc.stdout.readline() if readable else b""
        if not line.strip().isdigit():
            code = self.proc.poll()
            why = f"exited with code {code}" if code is not None else "did not report its port in time"
            raise RuntimeError(f"emulator process {why}")
        return int(line)

    def _wait_healthy(self, deadline: float) -> None:
        while True:
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=1.0)
                try:
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"emulator on port {self.port} did not answer /health in time")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (clean shutdown), SIGKILL if it has not exited within 5 s."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
