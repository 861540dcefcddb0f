"""The agent suite end to end: a scripted OpenAI-format server that calls the tools, then answers.

No local model here emits structured tool calls, so the model side is emulated on the exact wire format
(streamed tool-call deltas); the environment, the turn loop, the records and the scoring are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import orjson
import pytest

from tokenrace.bench import run_bench
from tokenrace.config import EndpointConfig
from tokenrace.profiles import LoadProfile
from tokenrace.records import OK, RequestRecord
from tokenrace.suites.agent import RATES, AgentSuite, expected_total, run_tool
from tokenrace.suites.workload import parse_suite_workload


def _sse(*chunks: dict) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _agent_reply(body: dict, *, wrong: bool) -> bytes:
    """Turn 1: call get_order twice and get_exchange_rate in parallel. Turn 2: add up the results."""
    messages = body["messages"]
    results = [orjson.loads(m["content"]) for m in messages if m["role"] == "tool"]
    if not results:
        question = messages[-1]["content"]
        words = question.replace("?", "").split()
        orders = [words[words.index("orders") + 1], words[words.index("and") + 1]]
        currency = words[words.index("in") + 1].rstrip("?")
        calls = [("get_order", {"order_id": o}) for o in orders] + [("get_exchange_rate", {"currency": currency})]
        deltas = [
            {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "id": f"c{i}", "type": "function",
                                                               "function": {"name": n, "arguments": ""}}]}}]}
            for i, (n, _) in enumerate(calls)
        ] + [
            {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "function": {"arguments": orjson.dumps(a).decode()}}]}}]}
            for i, (_, a) in enumerate(calls)
        ]  # fmt: skip
        return _sse({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}, *deltas,
                    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
                    {"choices": [], "usage": {"prompt_tokens": 90, "completion_tokens": 30}})  # fmt: skip
    usd = sum(Decimal(r["unit_price_usd"]) * r["quantity"] for r in results if "item" in r)
    rate = next(Decimal(r["per_usd"]) for r in results if "per_usd" in r)
    total = (usd * rate).quantize(Decimal("0.01")) + (Decimal(1) if wrong else 0)
    return _sse({"choices": [{"index": 0, "delta": {"content": f"That comes to ANSWER: {total}"}}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {"choices": [], "usage": {"prompt_tokens": 200, "completion_tokens": 9}})  # fmt: skip


@pytest.fixture
async def agent_server() -> AsyncIterator[Callable[..., str]]:
    servers: list[asyncio.Server] = []

    async def start(*, wrong: bool = False) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                length = next(
                    int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                )
                body = _agent_reply(orjson.loads(await reader.readexactly(length)), wrong=wrong)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("wrong", [False, True])
async def test_agent_tasks_run_over_turns_and_are_scored_on_the_final_answer(agent_server, store, wrong):
    url = await agent_server(wrong=wrong)
    endpoint = EndpointConfig.adhoc(url, "openai-chat", "scripted-agent", name="agent")
    workload = parse_suite_workload("agent", sample=3)
    result = await run_bench(endpoint, workload, LoadProfile(kind="concurrency", concurrency=2, requests=3), store)
    records = store.records(result.run.run_id)
    assert len(records) == 6 and all(r.status == OK for r in records)  # 3 tasks × 2 turns
    assert [r.seq % 64 for r in records] == [0, 1] * 3
    first_turns = [r for r in records if r.extra["turn"] == 0]
    finals = [r for r in records if r.extra["turn"] == 1]
    assert all(len(r.tool_calls) == 3 and r.quality is None for r in first_turns)
    assert all(r.quality == (0.0 if wrong else 1.0) for r in finals)
    for final in finals:
        totals = final.extra["agent"]
        assert totals["turns"] == 2 and totals["tool_calls"] == 3 and totals["output_tokens"] == 39
        first = next(r for r in first_turns if r.seq == final.seq - 1)
        assert totals["task_e2e_ms"] == pytest.approx((final.done_s - first.sent_s) * 1000)
    tasks = result.summary["by_suite"]["agent"]["tasks"]
    assert tasks["tasks"] == 3 and tasks["success_rate"] == (0.0 if wrong else 1.0) and tasks["turns_mean"] == 2
    assert result.summary["quality"]["suites"]["agent"]["n"] == 3


def test_environment_answers_tools_deterministically_and_reports_bad_calls():
    suite = AgentSuite(sample=2, nonce="")
    request = next(suite.requests(seed=4))
    world = request.reference["world"]
    order_id = next(iter(world["orders"]))
    assert (
        orjson.loads(run_tool(world, "get_order", f'{{"order_id": "{order_id.lower()}"}}')) == world["orders"][order_id]
    )
    assert orjson.loads(run_tool(world, "get_exchange_rate", '{"currency": "eur"}'))["per_usd"] == RATES["EUR"]
    assert "error" in orjson.loads(run_tool(world, "get_order", '{"order_id": "ZZ1"}'))
    assert "error" in orjson.loads(run_tool(world, "launch_rocket", "{}"))
    assert "error" in orjson.loads(run_tool(world, "get_order", "not json"))
    assert expected_total({"X": {"unit_price_usd": "10.50", "quantity": 2}}, ["X"], "EUR") == Decimal("19.32")


def test_a_final_reply_without_an_answer_line_scores_zero_with_a_reason():
    suite = AgentSuite(sample=1, nonce="")
    request = next(suite.requests())
    record = RequestRecord(run_id="r", seq=0, endpoint="e", api="openai-chat", model="m", output_text="about 12 euros")
    assert suite.next_turn(request, record) is None  # no tool call: this is the final answer
    score = suite.score(request, record)
    assert score.value == 0.0 and "ANSWER" in score.reason
