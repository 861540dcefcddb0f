"""The gateway end to end: real HTTP on 127.0.0.1, uvicorn in a thread, emulators as upstreams, official SDKs.

Each test starts the app in-process (so it can look at its breaker, pools and record writer) and talks to
it with the unchanged ``openai`` and ``anthropic`` SDKs (``max_retries=0``: the SDKs' own retries would hide
what the gateway did).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from tokenrace.config import Config
from tokenrace.emulator import EmulatorProcess, output_text
from tokenrace.gateway.app import GatewayApp
from tokenrace.gateway.server import GatewayServer
from tokenrace.records import (
    ERR_CANCELLED,
    ERR_MALFORMED,
    ERR_STALL,
    ERR_STREAM_CUT,
    FAILED,
    INCOMPLETE,
    OK,
    RequestRecord,
)
from tokenrace.store import Store

GATEWAY_KEY = "tr-gateway-key-5b1f0c9e7d"
OTHER_KEY = "tr-limited-key-88aa01"
UPSTREAM_KEY = "sk-upstream-9f8e7d6c5b4a"
BROKE_KEY = "tr-spent-key-31c07e"


class Gateway:
    """The app on a free port in a background thread: served by ``tokenrace serve``'s own server, or by
    uvicorn (the app is plain ASGI; streams then go through ``send`` instead of the direct path)."""

    def __init__(
        self, config: dict[str, Any], store: Store, environ: dict[str, str] | None = None, server: str = "tokenrace"
    ) -> None:
        self.store = store
        self.app = GatewayApp(Config.model_validate(config), store, environ=environ or {})
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Any
        if server == "uvicorn":
            self.server = uvicorn.Server(
                uvicorn.Config(
                    self.app, loop="uvloop", http="httptools", lifespan="on", log_level="warning", access_log=False
                )
            )
        else:
            self.server = GatewayServer(self.app, graceful_s=5.0)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.005)

    @property
    def run_id(self) -> str:
        return self.app.telemetry.run_id

    def openai(self, key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=20)

    def anthropic(self, key: str = "unused") -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, timeout=20)

    def records(self) -> list[RequestRecord]:
        writer = self.app.telemetry.writer
        assert writer is not None
        writer.flush()
        return self.store.records(self.run_id)

    def wait_records(self, n: int, timeout: float = 5.0) -> list[RequestRecord]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.records()
            if len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def stop(self) -> None:
        if isinstance(self.server, GatewayServer):
            self.server.request_exit()
        else:
            self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []
    stores: list[Store] = []

    def start(config: dict[str, Any], environ: dict[str, str] | None = None, server: str = "tokenrace") -> Gateway:
        store = Store.open(str(tmp_path / f"gateway{len(stores)}.db"))
        stores.append(store)
        gw = Gateway(config, store, environ, server)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
    for store in stores:
        store.close()


def _ep(name: str, emu: EmulatorProcess, api: str = "openai-chat", **extra: Any) -> dict[str, Any]:
    return {"name": name, "api": api, "base_url": emu.base_url, "model": f"{name}-model", **extra}


CHAT = [{"role": "user", "content": "say something nice"}]


# --- the SDKs, unchanged, through the gateway ---------------------------------------------------------


@pytest.mark.parametrize("server", ["tokenrace", "uvicorn"])
def test_openai_sdk_both_upstream_apis(emulator, gateway, server) -> None:
    oa = emulator(api="openai", ttft_ms=5, itl_ms=1, tokens=12)
    an = emulator(api="anthropic", ttft_ms=5, itl_ms=1, tokens=9)
    gw = gateway(
        {
            "endpoints": [_ep("oa", oa, price={"input": 1.0, "output": 2.0}), _ep("an", an, "anthropic-messages")],
            "routes": [{"name": "chat", "endpoints": ["oa", "an"]}],
        },
        server=server,
    )
    client = gw.openai()
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=CHAT, max_tokens=50)
    assert raw.headers["x-tokenrace-endpoint"] == "oa"
    assert raw.headers["x-tokenrace-route-reason"].startswith("fixed: oa first")
    assert raw.headers["x-tokenrace-request-id"].startswith(gw.run_id + "-")
    done = raw.parse()
    assert done.choices[0].message.content == output_text(12)
    assert done.model == "oa-model" and done.usage.completion_tokens == 12

    # Streamed: chunks as they come; the usage-only chunk the gateway asked for is not passed on...
    chunks = list(client.chat.completions.create(model="chat", messages=CHAT, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == output_text(12)
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    # ...unless the client asked for it.
    chunks = list(
        client.chat.completions.create(model="chat", messages=CHAT, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].usage.completion_tokens == 12 and not chunks[-1].choices

    # The Anthropic upstream answers OpenAI clients (translated both ways), named directly as the model.
    done = client.chat.completions.create(model="an", messages=CHAT, max_tokens=50)
    assert done.choices[0].message.content == output_text(9) and done.usage.completion_tokens == 9
    with client.chat.completions.with_streaming_response.create(
        model="an", messages=CHAT, stream=True, stream_options={"include_usage": True}
    ) as resp:
        assert resp.headers["x-tokenrace-endpoint"] == "an"
        chunks = list(resp.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == output_text(9)
    assert chunks[-1].usage.completion_tokens == 9
    assert chunks[-2].choices[0].finish_reason == "stop"

    records = gw.wait_records(5)
    assert [r.endpoint for r in records] == ["oa", "oa", "oa", "an", "an"]
    assert all(r.status == OK for r in records)
    assert [r.output_text for r in records] == [output_text(12)] * 3 + [output_text(9)] * 2
    assert [r.extra["stream"] for r in records] == [False, True, True, False, True]
    assert records[0].extra["cost_usd"] == pytest.approx((records[0].usage_prompt_tokens * 1 + 12 * 2) / 1e6)
    assert records[3].extra["cost_usd"] is None  # the Anthropic emulator's model has no known price
    streamed = records[1]
    assert len(streamed.token_times_s) == 12 and streamed.first_chunk_tokens == 1
    assert streamed.sent_s <= streamed.headers_s <= streamed.first_token_s <= streamed.done_s
    assert streamed.extra["gateway_overhead_ms"] > 0


def test_anthropic_sdk_both_upstream_apis(emulator, gateway) -> None:
    an = emulator(api="anthropic", ttft_ms=5, itl_ms=1, tokens=10)
    oa = emulator(api="openai", ttft_ms=5, itl_ms=1, tokens=7)
    gw = gateway({"endpoints": [_ep("an", an, "anthropic-messages"), _ep("oa", oa)]})
    client = gw.anthropic()
    for model, n in (("an", 10), ("oa", 7)):
        raw = client.messages.with_raw_response.create(model=model, max_tokens=100, messages=CHAT)
        assert raw.headers["x-tokenrace-endpoint"] == model
        message = raw.parse()
        assert message.content[0].text == output_text(n)
        assert message.usage.output_tokens == n and message.stop_reason == "end_turn"
        with client.messages.stream(model=model, max_tokens=100, messages=CHAT) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == output_text(n)
        assert final.usage.output_tokens == n and final.stop_reason == "end_turn"
    records = gw.wait_records(4)
    assert [(r.endpoint, r.api, r.extra["client_api"]) for r in records] == [
        ("an", "anthropic-messages", "anthropic-messages"),
        ("an", "anthropic-messages", "anthropic-messages"),
        ("oa", "openai-chat", "anthropic-messages"),
        ("oa", "openai-chat", "anthropic-messages"),
    ]
    assert [r.usage_completion_tokens for r in records] == [10, 10, 7, 7]


def test_completions_and_models(emulator, gateway) -> None:
    emu = emulator(api="openai", ttft_ms=1, itl_ms=0, tokens=5)
    gw = gateway(
        {
            "endpoints": [_ep("text", emu, "openai-completions"), _ep("chat", emu)],
            "routes": [{"name": "smart", "policy": "cheapest", "endpoints": ["chat", "text"]}],
        }
    )
    client = gw.openai()
    assert client.completions.create(model="text", prompt="once upon").choices[0].text == output_text(5)
    # A chat endpoint takes a plain prompt (translated both ways), streamed too...
    done = client.completions.create(model="chat", prompt="once upon", max_tokens=3)
    assert done.choices[0].text == output_text(3) and done.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model="chat", prompt="once upon", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == output_text(5)
    # ...but not a completions-only feature.
    with pytest.raises(openai.BadRequestError, match="cannot serve"):
        client.completions.create(model="chat", prompt="once upon", echo=True)

    listed = client.models.list()
    assert [m.id for m in listed.data] == ["smart", "text", "chat"]
    status, headers, body = gw.request("GET", "/v1/models")
    assert status == 200 and orjson.loads(body)["object"] == "list" and "x-tokenrace-endpoint" in headers


# --- fallback, retries, breaker ---------------------------------------------------------------------


def test_fallback_on_500_and_retry_header(emulator, gateway) -> None:
    bad = emulator(api="openai", faults={"500": 1.0})
    good = emulator(api="openai", ttft_ms=1, itl_ms=0, tokens=4)
    gw = gateway(
        {
            "endpoints": [_ep("bad", bad), _ep("good", good)],
            "routes": [{"name": "r", "endpoints": ["bad", "good"], "retries": 1}],
        }
    )
    raw = gw.openai().chat.completions.with_raw_response.create(model="r", messages=CHAT, stream=True)
    assert raw.headers["x-tokenrace-endpoint"] == "good"
    reason = raw.headers["x-tokenrace-route-reason"]
    assert "fallback after bad: http_5xx, bad: http_5xx" in reason
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == output_text(4)
    (record,) = gw.wait_records(1)
    assert record.endpoint == "good" and record.status == OK
    assert record.extra["attempts"] == [
        {"endpoint": "bad", "error": "http_5xx"},
        {"endpoint": "bad", "error": "http_5xx"},
    ]
    assert record.extra["reason"].startswith("fixed: bad first")
    assert gw.app.stats.get("bad").error_rate == 1.0 and gw.app.stats.get("good").requests == 1


def test_fallback_on_first_token_timeout(emulator, gateway) -> None:
    slow = emulator(api="openai", ttft_ms=3000, itl_ms=1, tokens=5)
    fast = emulator(api="anthropic", ttft_ms=1, itl_ms=1, tokens=5)
    gw = gateway(
        {
            "endpoints": [
                _ep("slow", slow, timeouts={"first_token_s": 0.3}),
                _ep("fast", fast, "anthropic-messages"),
            ],
            "routes": [{"name": "r", "endpoints": ["slow", "fast"]}],
        }
    )
    started = time.monotonic()
    chunks = list(gw.openai().chat.completions.create(model="r", messages=CHAT, stream=True))
    elapsed = time.monotonic() - started
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == output_text(5)
    assert 0.3 <= elapsed < 2.0  # one first-token timeout, not the slow upstream's 3 s, not a retry
    (record,) = gw.wait_records(1)
    assert record.endpoint == "fast" and record.extra["attempts"] == [{"endpoint": "slow", "error": "timeout"}]
    assert record.first_token_s - record.sent_s >= 0.3  # the client's TTFT includes the failed attempt


def test_fallback_when_stream_cut_before_first_token(emulator, gateway) -> None:
    cut = emulator(api="openai", faults={"cut": 1.0}, tokens=1)  # the cut comes before the only token
    good = emulator(api="openai", tokens=3, ttft_ms=1, itl_ms=0)
    gw = gateway(
        {"endpoints": [_ep("cut", cut), _ep("good", good)], "routes": [{"name": "r", "endpoints": ["cut", "good"]}]}
    )
    chunks = list(gw.openai().chat.completions.create(model="r", messages=CHAT, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == output_text(3)
    (record,) = gw.wait_records(1)
    assert record.endpoint == "good" and record.extra["attempts"] == [{"endpoint": "cut", "error": ERR_STREAM_CUT}]


@pytest.mark.parametrize("server", ["tokenrace", "uvicorn"])
def test_cut_after_first_token_is_an_error_not_a_success(emulator, gateway, server) -> None:
    cut = emulator(api="openai", faults={"cut": 1.0}, tokens=20, ttft_ms=1, itl_ms=1)
    cut_an = emulator(api="anthropic", faults={"cut": 1.0}, tokens=20, ttft_ms=1, itl_ms=1)
    good = emulator(api="openai", tokens=3)
    gw = gateway(
        {
            "endpoints": [_ep("cut", cut), _ep("cut_an", cut_an, "anthropic-messages"), _ep("good", good)],
            "routes": [{"name": "r", "endpoints": ["cut", "good"]}],
        },
        server=server,
    )
    seen: list[str] = []
    with pytest.raises(openai.APIError, match=r"connection closed mid-body"):
        for chunk in gw.openai().chat.completions.create(model="r", messages=CHAT, stream=True):
            if chunk.choices:
                seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == output_text(10)  # the emulator cuts half way; no fallback after tokens went out
    # The same through translation, and for an Anthropic client.
    with pytest.raises(openai.APIError):
        list(gw.openai().chat.completions.create(model="cut_an", messages=CHAT, stream=True))
    with (
        pytest.raises(anthropic.APIStatusError),
        gw.anthropic().messages.stream(model="cut_an", max_tokens=100, messages=CHAT) as stream,
    ):
        "".join(stream.text_stream)
    records = gw.wait_records(3)
    assert [(r.endpoint, r.status, r.error_category) for r in records] == [
        ("cut", FAILED, ERR_STREAM_CUT),
        ("cut_an", FAILED, ERR_STREAM_CUT),
        ("cut_an", FAILED, ERR_STREAM_CUT),
    ]
    assert records[0].output_text == output_text(10) and records[0].extra["attempts"] == []


def test_429_retried_after_retry_after(emulator, gateway) -> None:
    # seed 1: the first request draws the 429, the second does not
    emu = emulator(api="openai", faults={"429": 0.5}, seed=1, retry_after_s=1, tokens=3)
    gw = gateway({"endpoints": [_ep("a", emu)], "routes": [{"name": "r", "endpoints": ["a"], "retries": 1}]})
    started = time.monotonic()
    raw = gw.openai().chat.completions.with_raw_response.create(model="r", messages=CHAT)
    assert 1.0 <= time.monotonic() - started < 2.5  # waited what Retry-After asked
    assert raw.parse().choices[0].message.content == output_text(3)
    assert "retried after a: rate_limited" in raw.headers["x-tokenrace-route-reason"]
    (record,) = gw.wait_records(1)
    assert record.status == OK and record.extra["attempts"] == [{"endpoint": "a", "error": "rate_limited"}]


def test_breaker_opens_refuses_then_closes(emulator, gateway) -> None:
    # seed 82: requests 1 and 2 fail with 500, requests 3 and 4 succeed
    emu = emulator(api="openai", faults={"500": 0.5}, seed=82, tokens=2)
    gw = gateway(
        {
            "endpoints": [_ep("a", emu)],
            "routes": [{"name": "r", "endpoints": ["a"], "retries": 0}],
            "gateway": {"breaker": {"failures": 2, "cooldown_s": 1.0}},
        }
    )
    client = gw.openai()
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="r", messages=CHAT)
        assert failed.value.status_code == 502
    assert gw.app.breaker.state("a") == "open"
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="r", messages=CHAT)
    assert refused.value.status_code == 503
    assert refused.value.response.headers["retry-after"] == "1"
    assert "circuit open" in refused.value.message
    assert gw.app.stats.get("a").requests == 2  # the upstream was not called
    time.sleep(1.05)
    assert client.chat.completions.create(model="r", messages=CHAT).choices[0].message.content == output_text(2)
    assert gw.app.breaker.state("a") == "closed"
    records = gw.wait_records(4)
    assert [r.extra["client_status"] for r in records] == [502, 502, 503, 200]
    assert records[2].http_status == 503 and records[2].error_detail.endswith("no upstream tried")


@pytest.mark.parametrize("server", ["tokenrace", "uvicorn"])
def test_client_disconnect_cancels_upstream(emulator, gateway, server) -> None:
    emu = emulator(api="openai", ttft_ms=1, itl_ms=10, tokens=300)  # 3 s of stream
    gw = gateway({"endpoints": [_ep("a", emu)]}, server=server)
    pool = gw.app.proxy.upstreams["a"].pool
    stream = gw.openai().chat.completions.create(model="a", messages=CHAT, stream=True)
    got = 0
    for chunk in stream:
        got += bool(chunk.choices and chunk.choices[0].delta.content)
        if got == 3:
            break
    assert len(pool._all) == 1  # the upstream connection is streaming
    left = time.monotonic()
    stream.close()
    (record,) = gw.wait_records(1, timeout=2.0)
    assert time.monotonic() - left < 1.0  # recorded at once, not when the 3 s stream would have ended
    assert record.status == INCOMPLETE and record.error_category == ERR_CANCELLED
    assert record.error_detail == "client disconnected"
    assert 3 <= len(record.token_times_s) < 100
    deadline = time.monotonic() + 1
    while pool._all and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pool._all  # the upstream connection was aborted, not left to finish
    assert gw.app.stats.get("a").in_flight == 0


@pytest.mark.parametrize("server", ["tokenrace", "uvicorn"])
def test_malformed_or_stalled_after_first_token_ends_with_an_error_event(emulator, gateway, server) -> None:
    bad = emulator(api="openai", faults={"malformed": 1.0}, tokens=20, ttft_ms=1, itl_ms=1)
    stall = emulator(api="openai", faults={"stall": 1.0}, tokens=20, ttft_ms=1, itl_ms=1, stall_s=5)
    gw = gateway(
        {"endpoints": [_ep("bad", bad), _ep("stall", stall, timeouts={"idle_s": 0.3})]},
        server=server,
    )
    for model, message in (("bad", r"upstream bad: event \d+ is not valid JSON"), ("stall", "no bytes within 0.3 s")):
        seen: list[str] = []
        with pytest.raises(openai.APIError, match=message):
            for chunk in gw.openai().chat.completions.create(model=model, messages=CHAT, stream=True):
                if chunk.choices:
                    seen.append(chunk.choices[0].delta.content or "")
        assert 0 < len("".join(seen)) < len(output_text(20))
    records = gw.wait_records(2)
    assert [(r.endpoint, r.status, r.error_category) for r in records] == [
        ("bad", FAILED, ERR_MALFORMED),
        ("stall", FAILED, ERR_STALL),
    ]
    assert all(0 < len(r.token_times_s) < 20 for r in records)


def test_a_slow_client_holds_the_upstream_back_without_a_stall(emulator, gateway) -> None:
    """Back-pressure on the direct path: a client that stops reading pauses the upstream's reads (no
    unbounded buffering), and the pause is not taken for the upstream stalling (idle_s is 0.5 s here)."""
    emu = emulator(api="openai", ttft_ms=1, itl_ms=0, tokens=20000)  # ~3 MB of events at once
    gw = gateway({"endpoints": [_ep("a", emu, timeouts={"idle_s": 0.5})]})
    body = orjson.dumps({"model": "a", "messages": CHAT, "stream": True, "max_tokens": 20000})
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    conn.connect(("127.0.0.1", gw.port))
    conn.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )
    first = conn.recv(4096)
    assert first.startswith(b"HTTP/1.1 200")
    time.sleep(1.5)  # three idle periods without reading
    paused = gw.app.proxy.upstreams["a"].pool._all
    assert any(c.response is not None and c.response._paused for c in paused)  # the upstream waits for us
    data = bytearray(first)
    conn.settimeout(20)
    while not data.endswith(b"0\r\n\r\n"):
        piece = conn.recv(1 << 20)
        assert piece, "closed before the end"
        data += piece
    conn.close()
    assert data.count(b'"content":" ') + data.count(b'"content":"') >= 20000
    assert b"data: [DONE]" in data and b'"error"' not in data
    (record,) = gw.wait_records(1)
    assert record.status == OK and len(record.token_times_s) == 20000


# --- limits, keys, telemetry ----------------------------------------------------------------------


def test_body_limit_and_bad_json(emulator, gateway) -> None:
    emu = emulator(api="openai")
    gw = gateway({"endpoints": [_ep("a", emu)], "gateway": {"max_body_bytes": 1024}})
    big = orjson.dumps({"model": "a", "messages": [{"role": "user", "content": "x" * 2000}]})
    status, headers, body = gw.request("POST", "/v1/chat/completions", big, {"content-type": "application/json"})
    assert status == 413 and orjson.loads(body)["error"]["type"] == "invalid_request_error"
    assert headers["x-tokenrace-request-id"]
    status, _, body = gw.request("POST", "/v1/messages", big, {"content-type": "application/json"})
    assert status == 413 and orjson.loads(body) == {
        "type": "error",
        "error": {"type": "request_too_large", "message": orjson.loads(body)["error"]["message"]},
    }
    status, _, body = gw.request("POST", "/v1/chat/completions", b"{not json", {"content-type": "application/json"})
    assert status == 400 and "not valid JSON" in orjson.loads(body)["error"]["message"]
    with pytest.raises(openai.NotFoundError, match="unknown model 'nope'"):
        gw.openai().chat.completions.create(model="nope", messages=CHAT)
    # Refusals before routing are counted, by status and code, not recorded (no endpoint was involved).
    _, _, metrics = gw.request("GET", "/metrics")
    refused = {
        (s.labels["status"], s.labels["code"]): s.value
        for f in text_string_to_metric_families(metrics.decode())
        if f.name == "tokenrace_gateway_refused"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert refused == {
        ("413", "invalid_request_error"): 1,
        ("413", "request_too_large"): 1,
        ("400", "invalid_request_error"): 1,
        ("404", "model_not_found"): 1,
    }
    assert gw.app.telemetry.refused == 4 and gw.records() == []


def test_keys_limits_telemetry_and_no_secret_in_store(emulator, gateway, tmp_path) -> None:
    emu = emulator(api="all", ttft_ms=1, itl_ms=0, tokens=6)
    env = {"GW_KEY": GATEWAY_KEY, "GW_LIMITED": OTHER_KEY, "GW_BROKE": BROKE_KEY, "UPSTREAM": UPSTREAM_KEY}
    gw = gateway(
        {
            "endpoints": [
                _ep("a", emu, api_key_env="UPSTREAM", price={"input": 1.0, "output": 1.0}),
                _ep("b", emu, "anthropic-messages", api_key_env="UPSTREAM", price={"input": 1.0, "output": 1.0}),
            ],
            "routes": [{"name": "r", "endpoints": ["a", "b"]}],
            "gateway": {
                "keys": [
                    {"id": "team", "key_env": "GW_KEY"},
                    {"id": "limited", "key_env": "GW_LIMITED", "rpm": 1, "budget_usd": 1.0},
                    {"id": "broke", "key_env": "GW_BROKE", "budget_usd": 0.0},
                ]
            },
        },
        environ=env,
    )
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        gw.openai("wrong").chat.completions.create(model="r", messages=CHAT)
    with pytest.raises(anthropic.AuthenticationError):
        gw.anthropic("wrong").messages.create(model="b", max_tokens=10, messages=CHAT)

    client = gw.openai(GATEWAY_KEY)
    raw = client.chat.completions.with_raw_response.create(model="r", messages=CHAT, extra_body={"route": "r"})
    seen_text = raw.parse().choices[0].message.content
    request_id = raw.headers["x-tokenrace-request-id"]
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="b", messages=CHAT, stream=True)
        if c.choices
    )
    message = gw.anthropic(GATEWAY_KEY).messages.create(model="r", max_tokens=50, messages=CHAT)

    limited = gw.openai(OTHER_KEY)
    limited.chat.completions.create(model="r", messages=CHAT)
    with pytest.raises(openai.RateLimitError) as over:
        limited.chat.completions.create(model="r", messages=CHAT)
    assert int(over.value.response.headers["retry-after"]) >= 1
    assert over.value.body["type"] == "requests" and over.value.body["code"] == "rate_limited"
    with pytest.raises(openai.APIStatusError) as broke:
        gw.openai(BROKE_KEY).chat.completions.create(model="r", messages=CHAT)
    assert broke.value.status_code == 402 and broke.value.body["code"] == "budget_exhausted"
    with pytest.raises(anthropic.APIStatusError) as broke_an:
        gw.anthropic(BROKE_KEY).messages.create(model="b", max_tokens=10, messages=CHAT)
    assert broke_an.value.status_code == 402
    assert broke_an.value.body == {
        "type": "error",
        "error": {"type": "permission_error", "message": "key 'broke' has spent its budget ($0.0000 of $0.0000)"},
    }

    status, _, _ = gw.request(
        "POST",
        "/v1/feedback",
        orjson.dumps({"request_id": request_id, "score": 0.75}),
        {"authorization": f"Bearer {GATEWAY_KEY}"},
    )
    assert status == 200
    status, _, _ = gw.request(  # another key cannot score this call
        "POST", "/v1/feedback", orjson.dumps({"request_id": request_id, "score": 1}), {"x-api-key": OTHER_KEY}
    )
    assert status == 404
    status, _, _ = gw.request(
        "POST", "/v1/feedback", orjson.dumps({"request_id": request_id, "score": 2}), {"x-api-key": GATEWAY_KEY}
    )
    assert status == 400
    assert [(f.request_id, f.score, f.key_id) for f in gw.store.feedback(gw.run_id)] == [(request_id, 0.75, "team")]

    records = gw.wait_records(4)
    assert [(r.endpoint, r.extra["route"], r.extra["key_id"]) for r in records] == [
        ("a", "r", "team"),
        ("b", "b", "team"),
        ("a", "r", "team"),
        ("a", "r", "limited"),
    ]
    assert records[0].extra["request_id"] == request_id
    assert [r.output_text for r in records[:3]] == [seen_text, streamed, message.content[0].text]
    assert records[2].usage_completion_tokens == message.usage.output_tokens == 6
    assert all(r.extra["cost_usd"] > 0 for r in records)
    assert gw.app.access.keys["team"].spent_usd == pytest.approx(sum(r.extra["cost_usd"] for r in records[:3]))

    status, _, metrics = gw.request("GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.decode())}
    served = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in families["tokenrace_gateway_requests"].samples
        if s.name.endswith("_total")
    }
    assert served == {("a", "ok"): 3.0, ("b", "ok"): 1.0}
    refused = {
        (s.labels["status"], s.labels["code"], s.labels["key"]): s.value
        for s in families["tokenrace_gateway_refused"].samples
        if s.name.endswith("_total")
    }
    assert refused[("429", "rate_limited", "limited")] == 1
    assert refused[("402", "budget_exhausted", "broke")] == 2
    assert sum(v for (status, _, key), v in refused.items() if status == "401" and key == "none") == 2

    gw.stop()
    assert gw.store.get_run(gw.run_id).status == "complete"
    db = b"".join(p.read_bytes() for p in tmp_path.glob("gateway0.db*"))
    for secret in (GATEWAY_KEY, OTHER_KEY, BROKE_KEY, UPSTREAM_KEY):
        assert secret.encode() not in db


def test_serve_command_answers_then_stops_on_sigterm_keeping_every_record(emulator, tmp_path) -> None:
    """`tokenrace serve` as users run it: its own server, a call, SIGTERM; the run is complete and recorded."""
    import signal
    import subprocess
    import sys

    emu = emulator(api="openai", ttft_ms=1, itl_ms=1, tokens=5)
    config = tmp_path / "tokenrace.yaml"
    config.write_text(f"endpoints:\n  - {{name: a, api: openai-chat, base_url: '{emu.base_url}', model: m}}\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = tmp_path / "serve.db"
    argv = [sys.executable, "-m", "tokenrace", "serve", "--config", str(config), "--port", str(port)]
    proc = subprocess.Popen([*argv, "--store", str(db)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=10)
        chunks = list(client.chat.completions.create(model="a", messages=CHAT, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == output_text(5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out.decode()
    assert "stopped: 1 calls (1 ok" in out.decode()
    with Store.open(str(db)) as store:
        (run,) = store.list_runs()
        assert run.status == "complete"
        (record,) = store.records(run.run_id)
        assert record.status == OK and record.output_text == output_text(5)
