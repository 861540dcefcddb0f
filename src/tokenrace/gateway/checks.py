"""Cheap automatic quality checks of live answers: is JSON-mode output JSON, are tool calls callable.

Live traffic has no reference answer, but two failures are visible without one: a JSON-mode answer that
does not parse (or breaks the schema the caller gave), and a tool call naming a tool that was not offered or
with arguments that are not a JSON object matching the tool's parameters. They are recorded on the request
(``extra["checks"]``) beside the user's own ``/v1/feedback`` scores, and cost microseconds, so every call is
checked. Nothing is checked when the request asked for neither.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenrace.records import RequestRecord
from tokenrace.suites.structured import validate

MAX_ERRORS = 3  # reasons kept per check: enough to see the pattern, short enough for a record


def automatic_checks(body: dict[str, Any], record: RequestRecord) -> dict[str, Any] | None:
    """The checks that apply to this call's answer, or None when none does.

    ``body`` is the client's request (OpenAI chat or Anthropic Messages shape); ``record`` the finished call.
    """
    checks: dict[str, Any] = {}
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        checks.update(_json_mode(record.output_text, response_format))
    offered = _offered_tools(body.get("tools"))
    if record.tool_calls or (offered and body.get("tool_choice") in ("required", "any")):
        checks.update(_tool_calls(record.tool_calls, offered))
    return checks or None


def _json_mode(text: str, response_format: dict[str, Any]) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return {"json_valid": False, "json_error": str(exc)[:200]}
    out: dict[str, Any] = {"json_valid": True}
    schema = (response_format.get("json_schema") or {}).get("schema")
    if isinstance(schema, dict):
        problems = validate(value, schema)
        out["schema_valid"] = not problems
        if problems:
            out["schema_errors"] = problems[:MAX_ERRORS]
    return out


def _offered_tools(tools: Any) -> dict[str, dict[str, Any]]:
    """Tool name -> parameters schema, from OpenAI (``function.parameters``) or Anthropic (``input_schema``)."""
    offered: dict[str, dict[str, Any]] = {}
    if not isinstance(tools, list):
        return offered
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        name = function.get("name")
        if isinstance(name, str):
            schema = function.get("parameters", function.get("input_schema"))
            offered[name] = schema if isinstance(schema, dict) else {}
    return offered


def _tool_calls(calls: list[dict[str, Any]], offered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if not calls:
        return {"tool_calls_valid": False, "tool_call_errors": ["a tool call was required and none was made"]}
    errors: list[str] = []
    for call in calls:
        name = call.get("name")
        if name not in offered:
            errors.append(f"{name!r} was not offered")
            continue
        raw = call.get("arguments")
        try:
            arguments = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
        except orjson.JSONDecodeError:
            errors.append(f"{name}: arguments are not JSON")
            continue
        if not isinstance(arguments, dict):
            errors.append(f"{name}: arguments are not a JSON object")
            continue
        if offered[name]:
            errors.extend(f"{name}: {problem}" for problem in validate(arguments, offered[name]))
    out: dict[str, Any] = {"tool_calls_valid": not errors}
    if errors:
        out["tool_call_errors"] = errors[:MAX_ERRORS]
    return out
