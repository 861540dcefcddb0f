"""Clients against canned wire transcripts served over real HTTP on 127.0.0.1.

The emulator covers timing; these pin down the decoding of what it does not send: tool-call deltas,
reasoning field variants, llama.cpp timings, Anthropic tool use, in-stream errors, odd chunking.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from tokenrace.clients import EndpointClient, build_request
from tokenrace.records import FAILED, OK
from tokenrace.workloads import WorkloadRequest

REQUEST = WorkloadRequest(
    prompt_id="p",
    messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    max_tokens=16,
)


def sse(*objects: object, done: bool = True) -> bytes:
    body = b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in objects)
    return body + (b"data: [DONE]\n\n" if done else b"")


def anthropic_sse(*events: tuple[str, object]) -> bytes:
    return b"".join(b"event: " + n.encode() + b"\ndata: " + orjson.dumps(o) + b"\n\n" for n, o in events)


@pytest.fixture
async def canned() -> AsyncIterator[Callable[..., tuple[str, list[bytes]]]]:
    """A server answering every request with ``body`` (written in ``pieces`` with a pause between)."""
    servers: list[asyncio.Server] = []

    async def start(
        body: bytes,
        *,
        status: int = 200,
        pieces: int = 1,
        headers: bytes = b"",
        hold_s: float = 0.0,
        extra_length: int = 0,
    ) -> tuple[str, list[bytes]]:
        seen: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
            seen.append(head + await reader.readexactly(length))
            writer.write(
                b"HTTP/1.1 %d X\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n%s\r\n"
                % (status, len(body) + extra_length, headers)
            )
            step = max(1, len(body) // pieces)
            for i in range(0, len(body), step):
                writer.write(body[i : i + step])
                await writer.drain()
                await asyncio.sleep(0.005)
            await asyncio.sleep(hold_s)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", seen

    yield start
    for server in servers:
        server.close()


async def send(base_url: str, api: str = "openai-chat", **kw):
    client = EndpointClient(name="t", api=api, base_url=base_url, model="m", origin=time.perf_counter(), **kw)
    try:
        record = client.new_record("run", 0, 0.0, "w")
        return await client.send(REQUEST, record)
    finally:
        await client.aclose()


def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


async def test_openai_tool_call_deltas_are_tokens_and_assemble_into_calls(canned):
    body = sse(
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"),
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9}},
    )
    url, _ = await canned(body, pieces=5)
    record = await send(url)
    assert record.status == OK and record.finish_reason == "tool_calls"
    assert record.tool_calls == [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}]
    assert len(record.token_times_s) == 3 and record.first_answer_s == record.first_token_s
    assert record.usage_completion_tokens == 9 and record.client_output_tokens > 0


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_fields_of_vllm_and_openrouter_count_as_tokens_but_not_answer(canned, field):
    body = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({field: "Let me think."}),
        chunk({"content": "Four."}, "stop"),
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6,
                                             "completion_tokens_details": {"reasoning_tokens": 4},
                                             "prompt_tokens_details": {"cached_tokens": 2}}},
    )  # fmt: skip
    url, _ = await canned(body, pieces=4)
    record = await send(url)
    assert record.reasoning_text == "Let me think." and record.output_text == "Four."
    assert record.first_answer_s > record.first_token_s
    assert (record.usage_reasoning_tokens, record.usage_cached_tokens) == (4, 2)


async def test_llama_cpp_timings_are_kept_as_server_truth(canned):
    timings = {"prompt_n": 5, "prompt_ms": 12.5, "predicted_n": 2, "predicted_ms": 20.0, "predicted_per_second": 100.0}
    body = sse(chunk({"content": "a"}), chunk({"content": " b"}, "stop", timings=timings))
    url, _ = await canned(body)
    record = await send(url)
    assert record.server_timings == timings


async def test_request_body_asks_for_usage_and_carries_the_key(canned):
    url, seen = await canned(sse(chunk({"content": "x"}, "stop")))
    await send(url, api_key="sk-test-123")
    head, _, body = seen[0].partition(b"\r\n\r\n")
    assert b"POST /v1/chat/completions HTTP/1.1" in head and b"Authorization: Bearer sk-test-123" in head
    payload = orjson.loads(body)
    assert payload["stream"] is True and payload["stream_options"] == {"include_usage": True}
    assert payload["max_tokens"] == 16 and payload["messages"][0]["role"] == "system"


async def test_anthropic_tool_use_text_and_usage(canned):
    body = anthropic_sse(
        ("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 11, "cache_read_input_tokens": 3}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Sure."}}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "tool_use", "id": "tu_1", "name": "lookup", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"q": "x"}'}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
        ("message_stop", {"type": "message_stop"}),
    )  # fmt: skip
    url, seen = await canned(body, pieces=3)
    record = await send(url, api="anthropic-messages", api_key="ak")
    assert record.status == OK and record.finish_reason == "tool_use"
    assert record.output_text == "Sure." and record.tool_calls == [
        {"id": "tu_1", "name": "lookup", "arguments": '{"q": "x"}'}
    ]
    assert (record.usage_prompt_tokens, record.usage_cached_tokens, record.usage_completion_tokens) == (14, 3, 7)
    head, _, payload = seen[0].partition(b"\r\n\r\n")
    assert b"x-api-key: ak" in head and b"anthropic-version: 2023-06-01" in head
    assert orjson.loads(payload)["system"] == "be brief"


async def test_anthropic_prompt_usage_reported_only_at_the_end_is_kept(canned):
    """A translating proxy knows the prompt's size only in message_delta's cumulative usage."""
    body = anthropic_sse(
        ("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"input_tokens": 21, "output_tokens": 2}}),
        ("message_stop", {"type": "message_stop"}),
    )  # fmt: skip
    url, _ = await canned(body)
    record = await send(url, api="anthropic-messages", api_key="ak")
    assert (record.usage_prompt_tokens, record.usage_completion_tokens) == (21, 2)


async def test_error_event_inside_a_200_stream_is_an_api_error(canned):
    body = sse(chunk({"content": "a"}), {"error": {"message": "overloaded", "type": "server_error"}}, done=False)
    url, _ = await canned(body)
    record = await send(url)
    assert (record.status, record.error_category) == (FAILED, "api_error") and "overloaded" in record.error_detail
    assert record.output_text == "a"


async def test_stream_that_ends_without_end_marker_is_cut(canned):
    url, _ = await canned(sse(chunk({"content": "a"}), done=False))
    record = await send(url)
    assert (record.status, record.error_category) == (FAILED, "stream_cut")


async def test_no_first_token_in_time_is_a_timeout_even_with_keep_alive_comments(canned):
    # the declared body is longer than what is sent: only a deadline can end this response
    url, _ = await canned(b": keep-alive\n\n" * 3, pieces=3, hold_s=2.0, extra_length=100)
    record = await send(url, first_token_timeout_s=0.1)
    assert (record.status, record.error_category, record.first_token_s) == (FAILED, "timeout", None)


async def test_silence_after_the_first_token_is_a_stall(canned):
    body = sse(chunk({"content": "a"}), done=False)
    url, _ = await canned(body, hold_s=2.0, extra_length=100)
    record = await send(url, idle_timeout_s=0.1)
    assert (record.status, record.error_category) == (FAILED, "stall")
    assert "no bytes within 0.1 s" in record.error_detail


async def test_http_errors_keep_status_and_message(canned):
    url, _ = await canned(b'{"error": {"message": "bad key"}}', status=401)
    record = await send(url)
    assert (record.status, record.http_status, record.error_category) == (FAILED, 401, "http_4xx")
    assert "bad key" in record.error_detail


def test_completions_flatten_messages_into_a_prompt():
    path, _, body = build_request("openai-completions", "m", REQUEST, None, {})
    assert path == "/completions" and orjson.loads(body)["prompt"] == "be brief\n\nhi"


async def test_https_endpoint_with_a_verified_certificate(tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # how a user trusts a private CA, too
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    body = sse(chunk({"content": "secure"}, "stop"))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_tls)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    try:
        record = await send(url)
        monkeypatch.delenv("SSL_CERT_FILE")
        untrusted = await send(url)
    finally:
        server.close()
    assert (record.status, record.output_text) == (OK, "secure"), record.error_detail
    assert (untrusted.status, untrusted.error_category) == (FAILED, "connect")
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.error_detail


async def test_a_kept_alive_connection_the_server_closes_is_retried_once_on_a_fresh_one(canned):
    # Like llama.cpp: announces keep-alive, then closes a moment after the response without reading more.
    body = sse(chunk({"content": "a"}, "stop"))
    url, seen = await canned(body, hold_s=0.05, headers=b"Connection: keep-alive\r\n")
    client = EndpointClient(name="t", api="openai-chat", base_url=url, model="m", origin=time.perf_counter())
    try:
        records = []
        for seq in range(3):
            record = client.new_record("run", seq, 0.0, "w")
            records.append(await client.send(REQUEST, record))
    finally:
        await client.aclose()
    assert [r.status for r in records] == [OK, OK, OK], [r.error_detail for r in records]
    assert any(r.extra.get("stale_connection_retry") for r in records[1:])
    assert len(seen) == 3  # each request reached the server exactly once


def test_openai_style_tools_and_response_format_are_translated_for_anthropic_and_dropped_for_completions():
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}]
    request = WorkloadRequest(
        prompt_id="p",
        messages=[{"role": "user", "content": "x"}],
        max_tokens=8,
        params={"tools": tools, "tool_choice": "auto", "response_format": {"type": "json_object"}, "ignore_eos": True},
    )
    _, _, body = build_request("anthropic-messages", "m", request, None, {})
    payload = orjson.loads(body)
    assert payload["tools"] == [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
    assert payload["tool_choice"] == {"type": "auto"}
    assert "response_format" not in payload and "ignore_eos" not in payload
    _, _, body = build_request("openai-completions", "m", request, None, {})
    payload = orjson.loads(body)
    assert not {"tools", "tool_choice", "response_format"} & set(payload) and payload["ignore_eos"] is True
