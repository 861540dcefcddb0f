"""Automatic checks of live answers: JSON mode and tool calls, by hand and through the running gateway."""

from __future__ import annotations

import orjson

from tokenrace.gateway.checks import automatic_checks
from tokenrace.records import OK, RequestRecord

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": SCHEMA}}


def answered(text: str = "", tool_calls: list | None = None) -> RequestRecord:
    return RequestRecord(
        run_id="r", seq=0, endpoint="e", api="openai-chat", model="m", status=OK, output_text=text,
        tool_calls=tool_calls or [],
    )  # fmt: skip


def test_nothing_is_checked_when_nothing_was_asked() -> None:
    assert automatic_checks({"messages": []}, answered("hello")) is None


def test_json_mode_and_schema() -> None:
    json_object = {"response_format": {"type": "json_object"}}
    assert automatic_checks(json_object, answered('{"a": 1}')) == {"json_valid": True}
    bad = automatic_checks(json_object, answered("Sure! {a: 1}"))
    assert bad is not None and bad["json_valid"] is False and bad["json_error"]
    with_schema = {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}}
    assert automatic_checks(with_schema, answered('{"city": "Oslo", "n": 2}')) == {
        "json_valid": True,
        "schema_valid": True,
    }
    wrong = automatic_checks(with_schema, answered('{"n": "two"}'))
    assert wrong is not None and wrong["schema_valid"] is False
    assert wrong["schema_errors"] == ["$: missing 'city'", "$.n: expected integer, got string"]


def test_tool_calls_openai_and_anthropic_shapes() -> None:
    body = {"tools": [WEATHER]}
    good = answered(tool_calls=[{"id": "1", "name": "weather", "arguments": '{"city": "Oslo"}'}])
    assert automatic_checks(body, good) == {"tool_calls_valid": True}
    anthropic_body = {"tools": [{"name": "weather", "input_schema": SCHEMA}]}
    assert automatic_checks(anthropic_body, good) == {"tool_calls_valid": True}
    bad = answered(
        tool_calls=[
            {"id": "1", "name": "forecast", "arguments": "{}"},
            {"id": "2", "name": "weather", "arguments": "{city: Oslo"},
            {"id": "3", "name": "weather", "arguments": '{"n": 1}'},
        ]
    )
    checks = automatic_checks(body, bad)
    assert checks is not None and checks["tool_calls_valid"] is False
    assert checks["tool_call_errors"] == [
        "'forecast' was not offered",
        "weather: arguments are not JSON",
        "weather: $: missing 'city'",
    ]
    required = automatic_checks({"tools": [WEATHER], "tool_choice": "required"}, answered("no call"))
    assert required == {"tool_calls_valid": False, "tool_call_errors": ["a tool call was required and none was made"]}


def test_the_gateway_records_the_checks(emulator, tmp_path) -> None:
    from test_gateway import Gateway  # the in-process gateway harness
    from tokenrace.store import Store

    emu = emulator(api="openai", tokens=4, ttft_ms=1, itl_ms=1)
    store = Store.open(str(tmp_path / "g.db"))
    gw = Gateway({"endpoints": [{"name": "e", "api": "openai-chat", "base_url": emu.base_url, "model": "m"}]}, store)
    try:
        body = {"model": "e", "messages": [{"role": "user", "content": "json please"}],
                "response_format": {"type": "json_object"}}  # fmt: skip
        status, _, _ = gw.request(
            "POST", "/v1/chat/completions", orjson.dumps(body), {"content-type": "application/json"}
        )
        assert status == 200
        (record,) = gw.wait_records(1)
        assert record.extra["checks"]["json_valid"] is False  # the emulator answers prose
    finally:
        gw.stop()
        store.close()
