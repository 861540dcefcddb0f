"""OpenAI ⇄ Anthropic translation: bodies both ways, and streams checked by the official SDKs' own parsers.

The stream tests feed the translated bytes to what the ``openai`` and ``anthropic`` packages use on real
responses (chunk/event models, their accumulators, and whole clients over an in-memory httpx transport),
so "the SDK consumes it unchanged" is tested, not assumed. Emulator streams anchor the input side.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterable
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from tokenrace.clients import DECODERS, StreamState
from tokenrace.emulator import EmulatorProcess, output_text
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
from tokenrace.records import RequestRecord
from tokenrace.sse import SSEDecoder

EVENTS = TypeAdapter(RawMessageStreamEvent)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {"type": "function", "function": {"name": "weather", "description": "Weather now", "parameters": WEATHER_SCHEMA}},
    {"type": "function", "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}}},
]
ANTHROPIC_TOOLS = [
    {"name": "weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA},
    {"name": "clock", "input_schema": {"type": "object", "properties": {}}},
]


# ---------------------------------------------------------------------------------------------------
# Helpers


def sse_events(raw: bytes) -> list[tuple[str | None, bytes]]:
    decoder = SSEDecoder()
    events = decoder.feed(raw)
    assert decoder.pending == b"", "the stream must end on an event boundary"
    return events


def anthropic_frames(events: Iterable[tuple[str, dict[str, Any]]]) -> list[tuple[str, bytes]]:
    return [(name, orjson.dumps(obj)) for name, obj in events]


def to_chat(events: Iterable[tuple[str | None, bytes]], include_usage: bool = True) -> bytes:
    translator = ChatStreamFromMessages("client-model", include_usage)
    return b"".join(translator.feed(name, data) for name, data in events) + translator.close()


def to_messages(payloads: Iterable[bytes]) -> bytes:
    translator = MessagesStreamFromChat("client-model")
    return b"".join(translator.feed(data) for data in payloads) + translator.close()


def openai_final(raw: bytes) -> ChatCompletion:
    """Rebuild the completion the way the openai SDK does: chunk models + its stream accumulator."""
    events = sse_events(raw)
    assert events[-1] == (None, b"[DONE]") and [d for _, d in events].count(b"[DONE]") == 1
    assert all(name is None for name, _ in events)
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for _, data in events[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate_json(data))
    try:
        return state.get_final_completion()
    except openai.LengthFinishReasonError as exc:  # the SDK refuses to "parse" a cut answer; the data is here
        return exc.completion


def anthropic_final(raw: bytes) -> Message:
    """Rebuild the message the way the anthropic SDK does: typed raw events + its accumulator."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    names = []
    for name, data in sse_events(raw):
        if name == "ping":  # the SDK skips pings before parsing
            continue
        event = EVENTS.validate_json(data)
        assert name == event.type  # the event: line names the data's type, as the API does
        names.append(name)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert names[0] == "message_start" and names[-1] == "message_stop" and names[-2] == "message_delta"
    assert snapshot is not None
    return Message.model_validate(snapshot.model_dump())


def openai_chunks(*deltas: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> list[bytes]:
    """An OpenAI stream as the API sends it: role chunk, deltas, finish chunk, usage chunk, [DONE]."""
    base = {"id": "chatcmpl-xyz", "object": "chat.completion.chunk", "created": 1, "model": "gpt", "usage": None}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return orjson.dumps({**base, "choices": [choice]})

    out = [chunk({"role": "assistant", "content": "", "refusal": None})]
    out += [chunk(d) for d in deltas]
    out.append(chunk({}, finish))
    if usage is not None:
        out.append(orjson.dumps({**base, "choices": [], "usage": usage}))
    return [*out, b"[DONE]"]


def tokenrace_decode(api: str, raw: bytes) -> RequestRecord:
    """What tokenrace's own clients (and so the gateway's telemetry) read from a stream."""
    record = RequestRecord(run_id="r", seq=0, endpoint="e", api=api, model="m")
    state = StreamState(record)
    for i, (name, data) in enumerate(sse_events(raw)):
        state.event_no = i + 1
        DECODERS[api](state, float(i), name, data)
    assert state.done
    record.output_text, record.reasoning_text = "".join(state.answer), "".join(state.reasoning)
    return record


def sdk_client(kind: str, handler: Callable[[dict[str, Any]], bytes]) -> Any:
    """An official SDK client whose HTTP goes to ``handler(request_json) -> SSE body`` in memory."""

    def respond(request: httpx2.Request) -> httpx2.Response:
        body = handler(orjson.loads(request.content))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    http = httpx2.Client(transport=httpx2.MockTransport(respond))
    if kind == "openai":
        return openai.OpenAI(api_key="k", base_url="http://gateway.test/v1", http_client=http, max_retries=0)
    return anthropic.Anthropic(api_key="k", base_url="http://gateway.test", http_client=http, max_retries=0)


# A realistic Anthropic stream: thinking (with signature), text, two tool calls whose JSON arrives in pieces.
def anthropic_stream(stop_reason: str = "tool_use") -> list[tuple[str, dict[str, Any]]]:
    def delta(index: int, d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})

    def start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})

    def stop(index: int) -> tuple[str, dict[str, Any]]:
        return ("content_block_stop", {"type": "content_block_stop", "index": index})

    usage = {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 7, "output_tokens": 1}
    message = {
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-upstream",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    weather = '{"city": "Paris, \\"FR\\"", "days": [1, 2]}'
    clock = '{"tz": "Europe/Paris"}'
    return [
        ("message_start", {"type": "message_start", "message": message}),
        start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        ("ping", {"type": "ping"}),
        delta(0, {"type": "thinking_delta", "thinking": "Two tools "}),
        delta(0, {"type": "thinking_delta", "thinking": "are needed."}),
        delta(0, {"type": "signature_delta", "signature": "c2ln"}),
        stop(0),
        start(1, {"type": "text", "text": ""}),
        delta(1, {"type": "text_delta", "text": "Checking "}),
        delta(1, {"type": "text_delta", "text": "both — ünïcode ok."}),
        stop(1),
        start(2, {"type": "tool_use", "id": "toolu_A", "name": "weather", "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": ""}),
        *[
            delta(2, {"type": "input_json_delta", "partial_json": weather[i : i + 4]})
            for i in range(0, len(weather), 4)
        ],
        stop(2),
        start(3, {"type": "tool_use", "id": "toolu_B", "name": "clock", "input": {}}),
        *[delta(3, {"type": "input_json_delta", "partial_json": clock[i : i + 3]}) for i in range(0, len(clock), 3)],
        stop(3),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": 55},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def openai_tool_stream() -> list[bytes]:
    """An OpenAI stream with reasoning, text and a parallel tool call whose arguments arrive in pieces."""
    weather = '{"city": "Paris, \\"FR\\""}'
    clock = '{"tz": "UTC"}'
    first = [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}},
    ]
    deltas: list[dict[str, Any]] = [
        {"reasoning_content": "Need "},
        {"reasoning_content": "tools."},
        {"content": "Let me "},
        {"content": "check."},
        {"tool_calls": first},
        *[
            {"tool_calls": [{"index": 0, "function": {"arguments": weather[i : i + 5]}}]}
            for i in range(0, len(weather), 5)
        ],
        {
            "tool_calls": [
                {"index": 1, "id": "call_2", "type": "function", "function": {"name": "clock", "arguments": ""}}
            ]
        },
        *[{"tool_calls": [{"index": 1, "function": {"arguments": clock[i : i + 2]}}]} for i in range(0, len(clock), 2)],
    ]
    usage = {
        "prompt_tokens": 30,
        "completion_tokens": 12,
        "total_tokens": 42,
        "prompt_tokens_details": {"cached_tokens": 10},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    return openai_chunks(*deltas, finish="tool_calls", usage=usage)


# ---------------------------------------------------------------------------------------------------
# Requests


def test_chat_to_messages_request_full() -> None:
    body = {
        "model": "client-alias",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather and time here?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "clock", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "12:00"}]},
            {"role": "user", "content": "Thanks. And tomorrow?"},
        ],
        "max_completion_tokens": 300,
        "max_tokens": 100,
        "temperature": 1.5,
        "top_p": 0.9,
        "stop": "\n\nEND",
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [*TOOLS, {"type": "custom", "custom": {"name": "x"}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": False,
        "user": "u-42",
        "seed": 7,
        "n": 1,
        "logit_bias": {"50256": -100},
    }
    assert chat_to_messages_request(body, "claude-x") == {
        "model": "claude-x",
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric units."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather and time here?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "clock", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "12:00"}]},
                    {"type": "text", "text": "Thanks. And tomorrow?"},
                ],
            },
        ],
        "max_tokens": 300,
        "temperature": 1.0,
        "top_p": 0.9,
        "stop_sequences": ["\n\nEND"],
        "stream": True,
        "tools": ANTHROPIC_TOOLS,
        "tool_choice": {"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u-42"},
    }


def test_chat_to_messages_request_defaults_and_edges() -> None:
    out = chat_to_messages_request({"model": "a", "messages": [{"role": "user", "content": "hi"}]}, "claude")
    assert out == {"model": "claude", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4096}
    out = chat_to_messages_request(
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "not json"}}],
                },
                {"role": "tool", "tool_call_id": "c", "content": ""},
            ],
            "max_tokens": 9,
            "stop": ["a", "b"],
            "response_format": {"type": "json_object"},
        },
        "claude",
    )
    assert out["max_tokens"] == 9 and out["stop_sequences"] == ["a", "b"]
    # tool history without tools: Anthropic needs them declared; calling stays off, as the client asked
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object"}}] and out["tool_choice"] == {
        "type": "none"
    }
    assert out["system"] == "Respond with a single valid JSON object and nothing else."
    assert out["messages"][1:] == [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c", "name": "f", "input": {"_raw_arguments": "not json"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c"}]},
    ]
    # json_schema: the schema goes into the system prompt, after the client's own system text
    out = chat_to_messages_request(
        {
            "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER_SCHEMA}},
        },
        "claude",
    )
    assert out["system"][0] == {"type": "text", "text": "S"}
    assert out["system"][1]["text"].endswith(orjson.dumps(WEATHER_SCHEMA).decode())


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "clock"}}, None, {"type": "tool", "name": "clock"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
def test_tool_choice_both_ways(choice: Any, parallel: Any, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    out = chat_to_messages_request(body, "claude")
    assert out.get("tool_choice") == expected
    back = messages_to_chat_request(out, "gpt")
    assert back["tools"] == TOOLS
    assert back.get("tool_choice") == (None if expected is None else choice or "auto")
    assert back.get("parallel_tool_calls") == parallel


def test_messages_to_chat_request_full() -> None:
    body = {
        "model": "claude-alias",
        "system": [
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Metric."},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C", "is_error": False},
                    {"type": "text", "text": "Tomorrow?"},
                ],
            },
        ],
        "max_tokens": 500,
        "temperature": 0.3,
        "top_k": 40,
        "stop_sequences": ["END"],
        "stream": True,
        "tools": [*ANTHROPIC_TOOLS, {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u-1"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    assert messages_to_chat_request(body, "gpt-x") == {
        "model": "gpt-x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Metric."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "user", "content": [{"type": "text", "text": "Tomorrow?"}]},
        ],
        "max_tokens": 500,
        "temperature": 0.3,
        "stop": ["END"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "user": "u-1",
    }
    plain = messages_to_chat_request(
        {"system": "S", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}, "g"
    )
    assert plain == {
        "model": "g",
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
        "max_tokens": 5,
    }


def _canonical_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The meaning of a chat request, without the spellings the translation may change."""

    def content(value: Any) -> Any:
        if isinstance(value, str):
            return [{"type": "text", "text": value}] if value else []
        return value or []

    messages = []
    for m in body["messages"]:
        m = {**m, "content": content(m.get("content"))}
        for call in m.get("tool_calls") or ():
            call["function"]["arguments"] = orjson.loads(call["function"]["arguments"] or "{}")
        messages.append(m)
    out = {k: v for k, v in body.items() if k not in ("messages", "stream_options", "max_completion_tokens", "model")}
    out["max_tokens"] = body.get("max_completion_tokens", body.get("max_tokens"))
    return {**out, "messages": messages}


def test_request_round_trips() -> None:
    chat = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hi"},
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "clock", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "assistant", "content": "Sunny."},
        ],
        "max_completion_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.8,
        "stop": ["X"],
        "stream": True,
        "tools": TOOLS,
        "tool_choice": "required",
        "user": "u",
    }
    back = messages_to_chat_request(chat_to_messages_request(chat, "claude"), "gpt")
    assert back["model"] == "gpt" and back["stream_options"] == {"include_usage": True}
    assert _canonical_chat(back) == _canonical_chat(chat)

    messages = chat_to_messages_request(chat, "claude")
    again = chat_to_messages_request(messages_to_chat_request(messages, "gpt"), "claude")
    assert again == messages


# ---------------------------------------------------------------------------------------------------
# Non-streaming responses


def test_chat_response_from_messages() -> None:
    resp = {
        "id": "msg_01XY",
        "type": "message",
        "role": "assistant",
        "model": "claude-upstream",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 3,
            "cache_read_input_tokens": 5,
            "output_tokens": 8,
        },
    }
    out = chat_response_from_messages(resp, "client-model")
    completion = ChatCompletion.model_validate(out)
    assert completion.id == "chatcmpl-01XY" and completion.model == "client-model"
    assert completion.object == "chat.completion" and isinstance(completion.created, int)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Calling." and out["choices"][0]["message"]["reasoning_content"] == "Let me think."
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert (call.id, call.function.name, orjson.loads(call.function.arguments)) == (
        "toolu_9",
        "weather",
        {"city": "Oslo"},
    )  # type: ignore[union-attr]
    assert out["usage"] == {
        "prompt_tokens": 18,
        "completion_tokens": 8,
        "total_tokens": 26,
        "prompt_tokens_details": {"cached_tokens": 5},
    }
    back = messages_response_from_chat(out, "claude-upstream")
    assert back["id"] == "msg_01XY" and back["stop_reason"] == "tool_use"
    assert back["content"] == [{**resp["content"][0], "signature": ""}, *resp["content"][1:]]


@pytest.mark.parametrize(
    ("stop", "finish", "stop_back"),
    [
        ("end_turn", "stop", "end_turn"),
        ("stop_sequence", "stop", "end_turn"),
        ("max_tokens", "length", "max_tokens"),
        ("tool_use", "tool_calls", "tool_use"),
        ("refusal", "content_filter", "refusal"),
        ("pause_turn", "stop", "end_turn"),
    ],
)
def test_finish_reason_mapping(stop: str, finish: str, stop_back: str) -> None:
    resp = {
        "id": "msg_1",
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": stop,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    chat = chat_response_from_messages(resp, "m")
    assert chat["choices"][0]["finish_reason"] == finish
    assert messages_response_from_chat(chat, "m")["stop_reason"] == stop_back


def test_messages_response_from_chat() -> None:
    resp = {
        "id": "chatcmpl-77",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-upstream",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "thinking...",
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                        },
                        {"id": "call_b", "type": "function", "function": {"name": "clock", "arguments": ""}},
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 50,
            "completion_tokens": 20,
            "total_tokens": 70,
            "prompt_tokens_details": {"cached_tokens": 30},
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    }
    out = messages_response_from_chat(resp, "client-model")
    message = Message.model_validate(out)
    assert message.id == "msg_77" and message.model == "client-model" and message.stop_reason == "tool_use"
    assert out["content"] == [
        {"type": "thinking", "thinking": "thinking...", "signature": ""},
        {"type": "tool_use", "id": "call_a", "name": "weather", "input": {"city": "Rome"}},
        {"type": "tool_use", "id": "call_b", "name": "clock", "input": {}},
    ]
    assert out["usage"] == {
        "input_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 30,
        "output_tokens": 20,
        "output_tokens_details": {"thinking_tokens": 4},
    }
    back = chat_response_from_messages(out, "gpt")
    assert back["usage"]["prompt_tokens"] == 50 and back["usage"]["completion_tokens_details"] == {
        "reasoning_tokens": 4
    }
    assert back["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"] == "{}"
    plain = messages_response_from_chat({"choices": [{"message": {"content": "hi"}, "finish_reason": "length"}]}, "m")
    assert plain["content"] == [{"type": "text", "text": "hi"}] and plain["stop_reason"] == "max_tokens"
    assert Message.model_validate(plain).usage.output_tokens == 0


# ---------------------------------------------------------------------------------------------------
# Streams: Anthropic upstream -> OpenAI client


def test_chat_stream_from_messages_sdk_accumulation() -> None:
    raw = to_chat(anthropic_frames(anthropic_stream()))
    completion = openai_final(raw)
    assert completion.id == "chatcmpl-01abc" and completion.model == "client-model"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking both — ünïcode ok."
    assert choice.message.model_extra["reasoning_content"] == "Two tools are needed."  # type: ignore[index]
    calls = [
        (c.id, c.type, c.function.name, orjson.loads(c.function.arguments)) for c in choice.message.tool_calls or []
    ]  # type: ignore[union-attr]
    assert calls == [
        ("toolu_A", "function", "weather", {"city": 'Paris, "FR"', "days": [1, 2]}),
        ("toolu_B", "function", "clock", {"tz": "Europe/Paris"}),
    ]
    assert completion.usage is not None and completion.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 27,
        "completion_tokens": 55,
        "total_tokens": 82,
        "prompt_tokens_details": {"cached_tokens": 7},
    }
    # wire details the SDK does not check but real clients rely on
    chunks = [orjson.loads(d) for _, d in sse_events(raw)[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-01abc" for c in chunks)
    assert all("usage" in c for c in chunks) and all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    tool_deltas = [t for c in chunks[:-1] for t in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [t["index"] for t in tool_deltas if "id" in t] == [0, 1]
    assert all(t["function"]["arguments"] for t in tool_deltas if "id" not in t)  # empty partial_json skipped


def test_chat_stream_without_usage_and_text_only() -> None:
    events = [e for e in anthropic_stream("max_tokens") if "tool_use" not in orjson.dumps(e[1]).decode()]
    events = [e for e in events if e[1].get("index") not in (2, 3)]
    raw = to_chat(anthropic_frames(events), include_usage=False)
    chunks = [orjson.loads(d) for _, d in sse_events(raw)[:-1]]
    assert all("usage" not in c for c in chunks)
    completion = openai_final(raw)
    assert completion.choices[0].finish_reason == "length" and completion.usage is None
    assert completion.choices[0].message.content == "Checking both — ünïcode ok."


def test_chat_stream_through_openai_client() -> None:
    """The whole gateway flow in memory: the SDK's request is translated, the upstream answer streamed back."""
    seen: list[dict[str, Any]] = []

    def gateway(request: dict[str, Any]) -> bytes:
        upstream = chat_to_messages_request(request, "claude-upstream")
        seen.append(upstream)
        include = bool((request.get("stream_options") or {}).get("include_usage"))
        return to_chat(anthropic_frames(anthropic_stream()), include_usage=include)

    client = sdk_client("openai", gateway)
    with client.chat.completions.stream(
        model="gw", messages=[{"role": "user", "content": "go"}], tools=TOOLS, stream_options={"include_usage": True}
    ) as stream:
        kinds = {event.type for event in stream}
        completion = stream.get_final_completion()
    assert {"content.delta", "content.done", "tool_calls.function.arguments.done"} <= kinds
    assert seen[0]["tools"] == ANTHROPIC_TOOLS and seen[0]["stream"] is True and seen[0]["max_tokens"] == 4096
    assert completion.choices[0].message.tool_calls[1].function.arguments == '{"tz": "Europe/Paris"}'  # type: ignore[index, union-attr]
    assert completion.usage is not None and completion.usage.prompt_tokens == 27

    chunks = list(client.chat.completions.create(model="gw", messages=[{"role": "user", "content": "go"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Checking both — ünïcode ok."


def test_chat_stream_error_event() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    events = [*anthropic_stream()[:5], ("error", error)]
    translator = ChatStreamFromMessages("m", True)
    out = [translator.feed(n, d) for n, d in anthropic_frames(events)]
    assert (
        out[-1]
        == b'data: {"error":{"message":"Overloaded","type":"server_error","param":null,"code":"overloaded_error"}}\n\n'
    )
    assert translator.feed("message_stop", b'{"type":"message_stop"}') == b""  # nothing after the error
    assert translator.close() == b""
    client = sdk_client("openai", lambda _: b"".join(out))
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(client.chat.completions.create(model="gw", messages=[{"role": "user", "content": "go"}], stream=True))


def test_chat_stream_close_without_message_stop() -> None:
    translator = ChatStreamFromMessages("m", True)
    for name, data in anthropic_frames(anthropic_stream()[:9]):
        translator.feed(name, data)
    assert translator.close() == b""


# ---------------------------------------------------------------------------------------------------
# Streams: OpenAI upstream -> Anthropic client


def test_messages_stream_from_chat_sdk_accumulation() -> None:
    raw = to_messages(openai_tool_stream())
    message = anthropic_final(raw)
    assert message.id == "msg_xyz" and message.model == "client-model" and message.stop_reason == "tool_use"
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "thinking", "thinking": "Need tools.", "signature": ""},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": 'Paris, "FR"'}},
        {"type": "tool_use", "id": "call_2", "name": "clock", "input": {"tz": "UTC"}},
    ]
    assert message.usage.input_tokens == 20 and message.usage.cache_read_input_tokens == 10
    assert message.usage.output_tokens == 12
    events = [orjson.loads(d) for _, d in sse_events(raw)]
    assert [e["type"] for e in events if e["type"] != "content_block_delta"] == [
        "message_start",
        "content_block_start",
        "content_block_stop",
        "content_block_start",
        "content_block_stop",
        "content_block_start",
        "content_block_stop",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    starts = [e for e in events if e["type"] in ("content_block_start", "content_block_stop")]
    assert [e["index"] for e in starts] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_messages_stream_through_anthropic_client() -> None:
    seen: list[dict[str, Any]] = []

    def gateway(request: dict[str, Any]) -> bytes:
        seen.append(messages_to_chat_request(request, "gpt-upstream"))
        return to_messages(openai_tool_stream())

    client = sdk_client("anthropic", gateway)
    with client.messages.stream(
        model="gw", max_tokens=100, messages=[{"role": "user", "content": "go"}], tools=ANTHROPIC_TOOLS
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == "Let me check."
    assert seen[0]["stream_options"] == {"include_usage": True} and seen[0]["tools"] == TOOLS
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.content[3].input == {"tz": "UTC"}  # type: ignore[union-attr]
    events = list(
        client.messages.create(model="gw", max_tokens=10, messages=[{"role": "user", "content": "go"}], stream=True)
    )
    assert events[0].type == "message_start" and events[-1].type == "message_stop"


def test_messages_stream_message_delta_waits_for_usage() -> None:
    translator = MessagesStreamFromChat("m")
    payloads = openai_chunks({"content": "hi"}, finish="length", usage={"prompt_tokens": 5, "completion_tokens": 1})
    out = [translator.feed(p) for p in payloads]
    names = [[n for n, _ in sse_events(o)] for o in out]
    assert names == [
        ["message_start"],
        ["content_block_start", "content_block_delta"],
        ["content_block_stop"],
        ["message_delta"],
        ["message_stop"],
    ]
    delta = orjson.loads(sse_events(out[3])[0][1])
    assert delta == {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
        "usage": {
            "input_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
        },
    }
    # no usage at all: message_delta at [DONE] with output_tokens 0 (the field is required)
    raw = to_messages(openai_chunks({"content": "hi"}))
    assert anthropic_final(raw).usage.output_tokens == 0
    # upstream closed after the finish without [DONE]: close() completes the message
    translator = MessagesStreamFromChat("m")
    body = b"".join(translator.feed(p) for p in openai_chunks({"content": "hi"})[:-1])
    assert anthropic_final(body + translator.close()).content[0].text == "hi"  # type: ignore[union-attr]
    # cut before any finish: close() leaves it to the proxy
    translator = MessagesStreamFromChat("m")
    for p in openai_chunks({"content": "hi"})[:2]:
        translator.feed(p)
    assert translator.close() == b""


def test_messages_stream_error_chunk() -> None:
    translator = MessagesStreamFromChat("m")
    first = translator.feed(openai_chunks({"content": "a"})[1])
    err = translator.feed(
        orjson.dumps({"error": {"message": "Rate limit", "type": "requests", "code": "rate_limit_exceeded"}})
    )
    assert err == b'event: error\ndata: {"type":"error","error":{"type":"rate_limit_error","message":"Rate limit"}}\n\n'
    assert translator.feed(b"[DONE]") == b"" and translator.close() == b""
    client = sdk_client("anthropic", lambda _: first + err)
    with pytest.raises(anthropic.APIStatusError, match="Rate limit"):
        list(
            client.messages.create(model="gw", max_tokens=10, messages=[{"role": "user", "content": "go"}], stream=True)
        )


# ---------------------------------------------------------------------------------------------------
# Stream round trips


def test_stream_round_trip_anthropic() -> None:
    """Anthropic -> chat -> Anthropic rebuilds the same message (thinking signatures aside)."""
    original = anthropic_final(
        b"".join(b"event: %s\ndata: %s\n\n" % (n.encode(), d) for n, d in anthropic_frames(anthropic_stream()))
    )
    chat = to_chat(anthropic_frames(anthropic_stream()))
    again = anthropic_final(to_messages(d for _, d in sse_events(chat)))
    expected = original.model_dump()
    expected["content"][0]["signature"] = ""
    expected["model"] = "client-model"
    assert again.model_dump() == expected


def test_stream_round_trip_chat() -> None:
    """chat -> Anthropic -> chat rebuilds the same completion."""
    original = openai_final(b"".join(b"data: " + p + b"\n\n" for p in openai_tool_stream()))
    messages = to_messages(openai_tool_stream())
    again = openai_final(to_chat(sse_events(messages)))
    expected, got = original.model_dump(), again.model_dump()
    for d in (expected, got):
        d.pop("created")
    expected["model"] = "client-model"
    assert got == expected


# ---------------------------------------------------------------------------------------------------
# Emulator streams, through the SDKs and through tokenrace's own decoders


def _fetch(emulator: EmulatorProcess, path: str, body: dict[str, Any]) -> bytes:
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
    try:
        conn.request("POST", path, orjson.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read()
    finally:
        conn.close()


def test_emulator_streams_translate(emulator: Callable[..., EmulatorProcess]) -> None:
    emu = emulator(ttft_ms=0, itl_ms=0, tokens=7, reasoning_tokens=3, tokens_per_chunk=2)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say some words"}]
    chat_body = {"model": "gw", "messages": messages, "stream": True, "stream_options": {"include_usage": True}}

    # Anthropic upstream, OpenAI client
    raw = _fetch(emu, "/v1/messages", chat_to_messages_request(chat_body, "emu"))
    direct = tokenrace_decode("anthropic-messages", raw)
    translated = to_chat(sse_events(raw))
    completion = openai_final(translated)
    assert completion.choices[0].message.content == output_text(7)
    assert completion.choices[0].message.model_extra["reasoning_content"] == output_text(3)  # type: ignore[index]
    assert completion.usage is not None and (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        5,
        10,
    )
    via = tokenrace_decode("openai-chat", translated)
    assert (via.output_text, via.reasoning_text) == (direct.output_text, direct.reasoning_text)
    assert len(via.token_times_s) == len(direct.token_times_s) == 6  # one output event per chunk (2 + 4), both sides
    assert (via.usage_prompt_tokens, via.usage_completion_tokens) == (
        direct.usage_prompt_tokens,
        direct.usage_completion_tokens,
    )
    assert via.finish_reason == "stop" and direct.finish_reason == "end_turn"

    # OpenAI upstream, Anthropic client
    anthropic_body = {"model": "gw", "system": "be brief", "messages": messages[1:], "max_tokens": 6, "stream": True}
    raw = _fetch(emu, "/v1/chat/completions", messages_to_chat_request(anthropic_body, "emu"))
    direct = tokenrace_decode("openai-chat", raw)
    translated = to_messages(d for _, d in sse_events(raw))
    message = anthropic_final(translated)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == output_text(3) and message.stop_reason == "max_tokens"  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 6)
    via = tokenrace_decode("anthropic-messages", translated)
    assert (via.output_text, via.reasoning_text) == (direct.output_text, direct.reasoning_text)
    assert len(via.token_times_s) == len(direct.token_times_s) and via.usage_completion_tokens == 6


# ---------------------------------------------------------------------------------------------------
# Error helpers


def test_error_helpers() -> None:
    assert openai_error_body("bad", "invalid_request_error", "x") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": "x"}
    }
    assert anthropic_error_body("bad", "invalid_request_error") == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad"},
    }
    assert sse_error_chunk("boom", "server_error") == (
        b'data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}}\n\n'
    )
    assert anthropic_error_event("boom", "api_error") == (
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"boom"}}\n\n'
    )
