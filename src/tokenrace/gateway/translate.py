"""OpenAI Chat Completions ⇄ Anthropic Messages: request bodies, responses, streams and errors.

Why: clients speak either API to the gateway and the chosen upstream may speak the other, so the proxy
rewrites the request on the way out and the response (or the stream, chunk by chunk) on the way back.
Everything here is pure and allocation-light: the stream translators parse each upstream event once
(``orjson.loads``) and build their output from pre-rendered byte prefixes around one ``orjson.dumps``.

Choices made where the two APIs do not line up:

* System/developer messages anywhere in an OpenAI conversation become Anthropic ``system`` text blocks,
  in order (one block per message or text part); the reverse gives one system message per block.
* ``response_format`` (``json_object`` / ``json_schema``) has no portable Messages counterpart, so it
  is dropped and an instruction (with the schema) is appended to ``system`` instead.
* OpenAI ``tool`` messages become ``tool_result`` blocks of one user message (consecutive ones merged);
  a user message right after them joins that same message, after the results, as Anthropic asks. The
  reverse splits such a user message back into tool messages followed by a user message.
* Tool-call ``arguments`` that are not a JSON object are sent to Anthropic as
  ``{"_raw_arguments": "<the string>"}`` (the conversation keeps going, the model still sees what it
  wrote); the reverse direction unwraps that form, so it round-trips.
* Anthropic requires ``max_tokens``: ``max_completion_tokens`` or ``max_tokens``, else 4096. The
  reverse sends ``max_tokens`` (what OpenAI-compatible servers accept; OpenAI's o-series wants
  ``max_completion_tokens``).
* Images: ``data:`` URLs ⇄ base64 image blocks, http(s) URLs ⇄ URL image sources.
* Reasoning: Anthropic thinking ⇄ ``reasoning_content`` (``reasoning`` is read too), in responses and
  streams; an OpenAI ``refusal`` becomes text. ``user`` ⇄ ``metadata.user_id``.
* Streams from an OpenAI upstream carry usage only in the last chunk, after the finish reason, so
  ``message_start`` reports zero usage (unless the first chunk has usage) and the real counts travel
  in ``message_delta.usage`` (cumulative ``input_tokens``, cache fields, ``output_tokens``, as the API
  now sends them), which is why ``message_delta`` waits for the usage chunk (or ``[DONE]``). Without
  usage from the upstream, ``output_tokens`` is 0 (the field is required).
* Only choice 0 is translated. Ids map ``msg_X`` ⇄ ``chatcmpl-X``; tool-call ids are kept as they are.
* Messages that end up with no content (empty strings, only dropped parts) are left out.
* An OpenAI request whose history has tool calls but that declares no ``tools`` gets the tools named
  in the history (schema ``{"type": "object"}``) with ``tool_choice: none``: Anthropic rejects tool
  blocks without tool definitions, and the client's request did not allow calls either.

Lossy (information that does not survive a translation):

* OpenAI → Anthropic: ``n``, ``seed``, penalties, ``logit_bias``, ``logprobs``, ``reasoning_effort``,
  ``stream_options``, message ``name``, non-function tools, ``strict``; audio/file content parts and
  non-base64 ``data:`` URLs; where system messages sat in the conversation; ``temperature`` above 1 is
  clamped to 1 (Anthropic's range is 0–1). ``top_k`` passes through.
* Anthropic → OpenAI: ``thinking`` / ``redacted_thinking`` blocks in the history and the ``thinking``
  setting, ``top_k``, ``cache_control``, documents and every block type other than text/image/tool
  use/tool result, images inside tool results, ``is_error`` on tool results, server tools; a final
  assistant message (Anthropic's prefill) becomes an ordinary past assistant turn.
* Responses: an OpenAI ``stop`` cannot tell a stop sequence from a natural end (it becomes
  ``end_turn``, ``stop_sequence`` null); Anthropic ``stop_sequence`` / ``pause_turn`` become ``stop``,
  ``refusal`` ⇄ ``content_filter``, ``model_context_window_exceeded`` becomes ``length``. Thinking
  signatures are lost (reasoning text comes back as a thinking block with an empty signature), and
  ``cache_creation_input_tokens`` folds into the OpenAI prompt count (it comes back as input tokens).
* Streams: thinking ``signature_delta`` and ``citations_delta`` are dropped; an OpenAI tool call that
  resumes after another one started is not reordered (its ``input_json_delta`` goes to its own block,
  which was already stopped); Anthropic server-tool blocks are skipped.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

__all__ = [
    "ChatStreamFromMessages",
    "MessagesStreamFromChat",
    "anthropic_error_body",
    "anthropic_error_event",
    "chat_response_from_messages",
    "chat_to_messages_request",
    "messages_response_from_chat",
    "messages_to_chat_request",
    "openai_error_body",
    "sse_error_chunk",
]

DEFAULT_MAX_TOKENS = 4096
RAW_ARGUMENTS = "_raw_arguments"

FINISH_FROM_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
STOP_FROM_FINISH = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Anthropic error type -> OpenAI error type (the Anthropic type is kept as the OpenAI ``code``).
_OPENAI_ERROR_TYPE = {
    "api_error": "server_error",
    "overloaded_error": "server_error",
    "rate_limit_error": "requests",
    "authentication_error": "invalid_request_error",
    "permission_error": "invalid_request_error",
    "not_found_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "invalid_request_error": "invalid_request_error",
}
_RESPONSE_FORMAT_JSON = "Respond with a single valid JSON object and nothing else."
_RESPONSE_FORMAT_SCHEMA = "Respond with a single JSON value that conforms to this JSON schema, and nothing else:\n"


# ---------------------------------------------------------------------------------------------------
# Errors


def openai_error_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    """A non-streaming OpenAI error body (``param`` included, as OpenAI sends it)."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def anthropic_error_body(message: str, type_: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def sse_error_chunk(message: str, type_: str, code: str | None = None) -> bytes:
    """An OpenAI in-stream error: the SDK raises ``APIError`` on a ``data:`` object with ``error``."""
    return b"data: " + orjson.dumps(openai_error_body(message, type_, code)) + b"\n\n"


def anthropic_error_event(message: str, type_: str) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(anthropic_error_body(message, type_)) + b"\n\n"


def _anthropic_error_type(error: dict[str, Any]) -> str:
    kind, code = error.get("type"), error.get("code")
    if kind in ("requests", "tokens") or code == "rate_limit_exceeded":
        return "rate_limit_error"
    if kind == "invalid_request_error":
        return "invalid_request_error"
    return "api_error"


# ---------------------------------------------------------------------------------------------------
# Shared pieces


def _tool_input(arguments: Any) -> dict[str, Any]:
    """OpenAI ``arguments`` (a JSON string) as an Anthropic ``input`` object (see the module docstring)."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        value = None
    return value if isinstance(value, dict) else {RAW_ARGUMENTS: str(arguments)}


def _tool_arguments(value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(RAW_ARGUMENTS), str):
        return value[RAW_ARGUMENTS]
    return orjson.dumps(value if value is not None else {}).decode()


def _text_parts(content: Any) -> list[str]:
    """The non-empty texts of string content or of a list of text parts/blocks."""
    if isinstance(content, str):
        return [content] if content else []
    texts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                text = part.get("text")
                if isinstance(text, str) and text:
                    texts.append(text)
    return texts


def _openai_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage as OpenAI usage: the prompt count includes cache reads and cache writes."""
    usage = usage or {}
    cache_read = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cache_read + (usage.get("cache_creation_input_tokens") or 0)
    completion = usage.get("output_tokens") or 0
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }
    details = usage.get("output_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("thinking_tokens"), int):
        out["completion_tokens_details"] = {"reasoning_tokens": details["thinking_tokens"]}
    return out


def _anthropic_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI usage as Anthropic usage: cached prompt tokens move from input to cache reads."""
    usage = usage or {}
    prompt = usage.get("prompt_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    out: dict[str, Any] = {
        "input_tokens": max(prompt - cached, 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.get("completion_tokens") or 0,
    }
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    if isinstance(reasoning, int) and reasoning > 0:
        out["output_tokens_details"] = {"thinking_tokens": reasoning}
    return out


def _new_id() -> str:
    return uuid.uuid4().hex[:24]


# ---------------------------------------------------------------------------------------------------
# Requests: OpenAI chat -> Anthropic Messages


def _image_block(image_url: Any) -> dict[str, Any] | None:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        return None
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        media_type, _, params = header[5:].partition(";")
        if not sep or params.rpartition(";")[2] != "base64" or not media_type:
            return None
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    return None


def _anthropic_blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI user/assistant content as Anthropic blocks; parts with no counterpart are dropped."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" or kind == "refusal":
            text = part.get(kind)
            if isinstance(text, str) and text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            block = _image_block(part.get("image_url"))
            if block is not None:
                blocks.append(block)
    return blocks


def _tool_result_content(content: Any) -> str | list[dict[str, Any]] | None:
    if isinstance(content, str):
        return content or None
    blocks = [{"type": "text", "text": text} for text in _text_parts(content)]
    return blocks or None


def _anthropic_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice == "auto" or choice is None:
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name", "")}
    else:
        return None
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # nothing to say: Anthropic's default is auto
    return out


def chat_to_messages_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat request as an Anthropic Messages request for ``model`` (see the module docstring)."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the open user message of tool results, if the last one
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend({"type": "text", "text": text} for text in _text_parts(content))
            continue
        if role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id", "")}
            result = _tool_result_content(content)
            if result is not None:
                block["content"] = result
            if results is None:
                results = []
                messages.append({"role": "user", "content": results})
            results.append(block)
            continue
        if role == "user":
            blocks = _anthropic_blocks(content)
            if results is not None:  # Anthropic wants the text after the results of the same turn
                results.extend(blocks)
            elif isinstance(content, str) and content:
                messages.append({"role": "user", "content": content})
            elif blocks:
                messages.append({"role": "user", "content": blocks})
            results = None
            continue
        if role != "assistant":
            continue  # legacy "function" messages have no counterpart
        results = None
        calls = message.get("tool_calls") or ()
        if not calls:
            if isinstance(content, str) and content:
                messages.append({"role": "assistant", "content": content})
            elif blocks := _anthropic_blocks(content):
                messages.append({"role": "assistant", "content": blocks})
            continue
        blocks = _anthropic_blocks(content)
        for call in calls:
            if not isinstance(call, dict):
                continue
            function = call.get("function") or {}
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.get("id") or "toolu_" + _new_id(),
                    "name": function.get("name", ""),
                    "input": _tool_input(function.get("arguments")),
                }
            )
        messages.append({"role": "assistant", "content": blocks})

    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            system.append({"type": "text", "text": _RESPONSE_FORMAT_JSON})
        elif kind == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            system.append({"type": "text", "text": _RESPONSE_FORMAT_SCHEMA + orjson.dumps(schema).decode()})

    out: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    out["max_tokens"] = max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        out["temperature"] = min(temperature, 1.0)
    for key in ("top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = list(stop)
    if body.get("stream"):
        out["stream"] = True
    tools = []
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if isinstance(function, dict):
            spec = {"name": function.get("name", "")}
            if function.get("description"):
                spec["description"] = function["description"]
            spec["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
            tools.append(spec)
    if tools:
        out["tools"] = tools
        choice = _anthropic_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    elif used := _tools_in_history(messages):
        # Anthropic rejects tool_use/tool_result blocks in a request without tools (OpenAI does not):
        # declare the tools the history used, and forbid calling them, as the client's request did.
        out["tools"] = [{"name": name, "input_schema": {"type": "object"}} for name in used]
        out["tool_choice"] = {"type": "none"}
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    return out


def _tools_in_history(messages: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for message in messages:
        if message["role"] == "assistant" and isinstance(message["content"], list):
            names.update((b["name"], None) for b in message["content"] if b.get("type") == "tool_use")
    return list(names)


# ---------------------------------------------------------------------------------------------------
# Requests: Anthropic Messages -> OpenAI chat


def _openai_part(block: dict[str, Any]) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return {"type": "text", "text": text} if isinstance(text, str) and text else None
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
        elif source.get("type") == "url":
            url = source.get("url", "")
        else:
            return None
        return {"type": "image_url", "image_url": {"url": url}}
    return None


def _openai_tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    return None


def messages_to_chat_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat request for ``model`` (see the module docstring)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": text} for text in _text_parts(body.get("system"))]
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant"):
            continue
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        if role == "assistant":
            text = "".join(b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str))
            calls = [
                {
                    "id": b.get("id", ""),
                    "type": "function",
                    "function": {"name": b.get("name", ""), "arguments": _tool_arguments(b.get("input"))},
                }
                for b in blocks
                if b.get("type") == "tool_use"
            ]
            out: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
            if calls:
                out["tool_calls"] = calls
            messages.append(out)
            continue
        parts: list[dict[str, Any]] = []
        for block in blocks:
            if block.get("type") == "tool_result":
                result = block.get("content")
                if not isinstance(result, str):
                    result = [{"type": "text", "text": t} for t in _text_parts(result)] or ""
                messages.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": result})
            elif (part := _openai_part(block)) is not None:
                parts.append(part)
        if parts:
            messages.append({"role": "user", "content": parts})

    out = {"model": model, "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop_sequences")
    if stop:
        out["stop"] = list(stop)
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    tools = []
    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and tool.get("type") in (None, "custom") and "name" in tool:
            function = {"name": tool["name"]}
            if tool.get("description"):
                function["description"] = tool["description"]
            function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
            tools.append({"type": "function", "function": function})
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        mapped = _openai_tool_choice(choice)
        if mapped is not None:
            out["tool_choice"] = mapped
        if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") and mapped != "none":
            out["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    return out


# ---------------------------------------------------------------------------------------------------
# Non-streaming responses


def chat_response_from_messages(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic message as an OpenAI ``chat.completion`` (thinking goes to ``reasoning_content``)."""
    text: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in resp.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "thinking":
            thinking.append(block.get("thinking") or "")
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": _tool_arguments(block.get("input"))},
                }
            )
    content = "".join(text)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content or (None if calls else ""),
        "refusal": None,
    }
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    if calls:
        message["tool_calls"] = calls
    rid = str(resp.get("id") or _new_id())
    return {
        "id": "chatcmpl-" + rid.removeprefix("msg_"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_FROM_STOP.get(resp.get("stop_reason") or "end_turn", "stop"),
            }
        ],
        "usage": _openai_usage(resp.get("usage")),
    }


def messages_response_from_chat(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` as an Anthropic message (first choice only)."""
    choices = resp.get("choices") or [{}]
    choice = choices[0] or {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = "".join(_text_parts(message.get("content"))) or message.get("refusal") or ""
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + _new_id(),
                "name": function.get("name", ""),
                "input": _tool_input(function.get("arguments")),
            }
        )
    finish = choice.get("finish_reason") or "stop"
    rid = str(resp.get("id") or _new_id())
    return {
        "id": "msg_" + rid.removeprefix("chatcmpl-"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_FROM_FINISH.get(finish, "end_turn"),
        "stop_sequence": None,
        "usage": _anthropic_usage(resp.get("usage")),
    }


# ---------------------------------------------------------------------------------------------------
# Streams: Anthropic events -> OpenAI chunks


class ChatStreamFromMessages:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` SSE bytes out (choice 0)."""

    __slots__ = (
        "_base",
        "_created",
        "_done",
        "_finished",
        "_head",
        "_null_usage",
        "_tail",
        "_tools",
        "_usage",
        "include_usage",
        "model",
    )

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self._created = int(time.time())
        self._null_usage = b',"usage":null' if include_usage else b""
        self._tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index
        self._usage: dict[str, Any] = {}
        self._finished = False
        self._done = False
        self._base = self._head = self._tail = b""
        self._set_id("chatcmpl-" + _new_id())

    def _set_id(self, chunk_id: str) -> None:
        """Pre-render the bytes around every delta: per chunk only the delta itself is serialised."""
        obj = {"id": chunk_id, "object": "chat.completion.chunk", "created": self._created, "model": self.model}
        self._base = b"data: " + orjson.dumps(obj)[:-1]
        self._head = self._base + b',"choices":[{"index":0,"delta":'
        self._tail = b',"logprobs":null,"finish_reason":null}]' + self._null_usage + b"}\n\n"

    def _delta(self, delta: bytes) -> bytes:
        return self._head + delta + self._tail

    def feed(self, event: str | None, data: bytes) -> bytes:
        """Translate one upstream event (its ``event:`` name and raw ``data:``)."""
        if self._done or not data:
            return b""
        payload = orjson.loads(data)
        if not isinstance(payload, dict):
            return b""
        kind = payload.get("type") or event
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                text = delta.get("text")
                return self._delta(b'{"content":' + orjson.dumps(text) + b"}") if text else b""
            if delta_type == "thinking_delta":
                text = delta.get("thinking")
                return self._delta(b'{"reasoning_content":' + orjson.dumps(text) + b"}") if text else b""
            if delta_type == "input_json_delta":
                index = self._tools.get(payload.get("index", 0))
                partial = delta.get("partial_json")
                if index is None or not partial:
                    return b""
                call = {"index": index, "function": {"arguments": partial}}
                return self._delta(b'{"tool_calls":[' + orjson.dumps(call) + b"]}")
            return b""  # signature_delta, citations_delta
        if kind == "content_block_start":
            return self._block_start(payload)
        if kind == "message_start":
            message = payload.get("message") or {}
            if message.get("id"):
                self._set_id("chatcmpl-" + str(message["id"]).removeprefix("msg_"))
            self._merge_usage(message.get("usage"))
            return self._delta(b'{"role":"assistant","content":""}')
        if kind == "message_delta":
            self._merge_usage(payload.get("usage"))
            return self._finish((payload.get("delta") or {}).get("stop_reason"))
        if kind == "message_stop":
            self._done = True
            out = self._finish(None)
            if self.include_usage:
                usage = orjson.dumps(_openai_usage(self._usage))
                out += self._base + b',"choices":[],"usage":' + usage + b"}\n\n"
            return out + b"data: [DONE]\n\n"
        if kind == "error":
            self._done = True
            error = payload.get("error") or {}
            anthropic_type = str(error.get("type") or "api_error")
            kind = _OPENAI_ERROR_TYPE.get(anthropic_type, "server_error")
            return sse_error_chunk(str(error.get("message") or "upstream error"), kind, anthropic_type)
        return b""  # ping, content_block_stop, unknown events

    def _block_start(self, payload: dict[str, Any]) -> bytes:
        block = payload.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            index = self._tools[payload.get("index", 0)] = len(self._tools)
            tool_input = block.get("input")
            call = {
                "index": index,
                "id": block.get("id") or "call_" + _new_id(),
                "type": "function",
                "function": {
                    "name": block.get("name", ""),
                    "arguments": _tool_arguments(tool_input) if tool_input else "",
                },
            }
            return self._delta(b'{"tool_calls":[' + orjson.dumps(call) + b"]}")
        if kind == "text" and block.get("text"):
            return self._delta(b'{"content":' + orjson.dumps(block["text"]) + b"}")
        if kind == "thinking" and block.get("thinking"):
            return self._delta(b'{"reasoning_content":' + orjson.dumps(block["thinking"]) + b"}")
        return b""

    def _merge_usage(self, usage: dict[str, Any] | None) -> None:
        """Anthropic usage counts are cumulative: later non-null values replace earlier ones."""
        if usage:
            self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def _finish(self, stop_reason: str | None) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        finish = FINISH_FROM_STOP.get(stop_reason or "end_turn", "stop")
        return (
            self._base
            + b',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"'
            + finish.encode()
            + b'"}]'
            + self._null_usage
            + b"}\n\n"
        )

    def close(self) -> bytes:
        """The upstream ended without ``message_stop``: nothing to add, the proxy decides what to send."""
        return b""


# ---------------------------------------------------------------------------------------------------
# Streams: OpenAI chunks -> Anthropic events


def _event(name: bytes, obj: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


_TEXT = 1
_THINKING = 2
_TOOL = 3
_BLOCK_START = {
    _TEXT: {"type": "text", "text": ""},
    _THINKING: {"type": "thinking", "thinking": "", "signature": ""},
}
_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_DELTA_KIND = {
    _TEXT: b',"delta":{"type":"text_delta","text":',
    _THINKING: b',"delta":{"type":"thinking_delta","thinking":',
    _TOOL: b',"delta":{"type":"input_json_delta","partial_json":',
}


class MessagesStreamFromChat:
    """OpenAI chunk payloads in, Anthropic SSE event frames out (choice 0).

    Blocks open lazily when content of a new kind begins and close when another kind (or the finish)
    arrives; ``message_delta`` waits for the usage chunk that follows the finish reason.
    """

    __slots__ = (
        "_block",
        "_delta_sent",
        "_kind",
        "_next",
        "_started",
        "_stop_reason",
        "_stopped",
        "_tools",
        "_usage",
        "model",
    )

    def __init__(self, model: str) -> None:
        self.model = model
        self._started = False
        self._block = -1  # index of the open block
        self._kind = 0  # kind of the open block, 0 when none is open
        self._next = 0  # index of the next block
        self._tools: dict[int, int] = {}  # OpenAI tool call index -> Anthropic block index
        self._usage: dict[str, Any] | None = None
        self._stop_reason: str | None = None
        self._delta_sent = False
        self._stopped = False

    def feed(self, data: bytes) -> bytes:
        """Translate one upstream ``data:`` payload (``b"[DONE]"`` included)."""
        if self._stopped:
            return b""
        if data.startswith(b"[DONE]"):
            return self._end()
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict):
            return b""
        error = chunk.get("error")
        if error:
            self._stopped = True
            if not isinstance(error, dict):
                error = {"message": str(error)}
            return anthropic_error_event(str(error.get("message") or "upstream error"), _anthropic_error_type(error))
        out = b"" if self._started else self._message_start(chunk)
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if delta:
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if reasoning:
                    out += self._text(_THINKING, reasoning)
                content = delta.get("content")
                if content:
                    out += self._text(_TEXT, content)
                refusal = delta.get("refusal")
                if refusal:
                    out += self._text(_TEXT, refusal)
                for call in delta.get("tool_calls") or ():
                    out += self._tool(call)
            finish = choice.get("finish_reason")
            if finish:
                out += self._close_block()
                self._stop_reason = STOP_FROM_FINISH.get(finish, "end_turn")
        if self._stop_reason is not None and self._usage is not None and not self._delta_sent:
            out += self._message_delta()
        return out

    def close(self) -> bytes:
        """The upstream ended without ``[DONE]``: complete the message if a finish reason came, else b""."""
        if self._stopped or self._stop_reason is None:
            return b""
        return self._end()

    def _message_start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        chunk_id = chunk.get("id")
        usage = chunk.get("usage")
        message = {
            "id": "msg_" + (str(chunk_id).removeprefix("chatcmpl-") if chunk_id else _new_id()),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _anthropic_usage(usage),  # usually all 0 here: OpenAI sends usage last
        }
        return _event(b"message_start", {"type": "message_start", "message": message})

    def _open(self, kind: int, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block, self._kind = self._next, kind
        self._next += 1
        start = {"type": "content_block_start", "index": self._block, "content_block": block}
        return out + _event(b"content_block_start", start)

    def _close_block(self) -> bytes:
        if not self._kind:
            return b""
        self._kind = 0
        return _event(b"content_block_stop", {"type": "content_block_stop", "index": self._block})

    def _text(self, kind: int, text: str) -> bytes:
        out = b"" if self._kind == kind else self._open(kind, dict(_BLOCK_START[kind]))
        return out + _DELTA_HEAD + b"%d" % self._block + _DELTA_KIND[kind] + orjson.dumps(text) + b"}}\n\n"

    def _tool(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0)
        function = call.get("function") or {}
        block = self._tools.get(index)
        out = b""
        if block is None:
            tool = {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + _new_id(),
                "name": function.get("name") or "",
                "input": {},
            }
            out = self._open(_TOOL, tool)
            block = self._tools[index] = self._block
        arguments = function.get("arguments")
        if arguments:
            out += _DELTA_HEAD + b"%d" % block + _DELTA_KIND[_TOOL] + orjson.dumps(arguments) + b"}}\n\n"
        return out

    def _message_delta(self) -> bytes:
        self._delta_sent = True
        # cumulative totals, as the API sends them; output_tokens is required, so 0 when the upstream sent none
        usage = _anthropic_usage(self._usage) if self._usage is not None else {"output_tokens": 0}
        delta = {"stop_reason": self._stop_reason or "end_turn", "stop_sequence": None}
        return _event(b"message_delta", {"type": "message_delta", "delta": delta, "usage": usage})

    def _end(self) -> bytes:
        out = b"" if self._started else self._message_start({})
        out += self._close_block()
        if not self._delta_sent:
            out += self._message_delta()
        self._stopped = True
        return out + _event(b"message_stop", {"type": "message_stop"})
