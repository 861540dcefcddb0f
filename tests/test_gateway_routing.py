"""Routing policies and budgets through the running gateway, against controlled emulator upstreams."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from test_gateway import CHAT, GATEWAY_KEY, Gateway, _ep, gateway  # noqa: F401  (the fixture and harness)

HARD = [
    {
        "role": "user",
        "content": "Write a Python function that parses a CSV file and computes per-column statistics, then explain "
        "step by step why it is O(n), compare it with a streaming version, and prove the memory bound. "
        "```python\ndef stats(rows):\n    pass\n```",
    }
]


def endpoint_of(gw: Gateway, model: str, messages: list[dict[str, Any]] = CHAT, **extra: Any) -> str:
    raw = gw.openai().chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=8, **extra)
    return raw.headers["x-tokenrace-endpoint"]


def test_fastest_and_lowest_ttft_follow_live_measurements(emulator, gateway) -> None:  # noqa: F811
    quick_start = emulator(api="openai", ttft_ms=5, itl_ms=20, tokens=6)  # early first token, slow stream
    quick_stream = emulator(api="openai", ttft_ms=80, itl_ms=1, tokens=6)  # late first token, fast stream
    gw = gateway(
        {
            "endpoints": [_ep("early", quick_start), _ep("swift", quick_stream)],
            "routes": [
                {"name": "fast", "policy": "fastest", "endpoints": ["early", "swift"]},
                {"name": "ttft", "policy": "lowest-ttft", "endpoints": ["swift", "early"]},
            ],
        }
    )
    # streamed calls measure both endpoints (unmeasured endpoints are tried first)
    for _ in range(8):
        list(gw.openai().chat.completions.create(model="fast", messages=CHAT, stream=True))
    picks = {endpoint_of(gw, "fast", stream=False) for _ in range(3)}
    assert picks == {"swift"}
    assert {endpoint_of(gw, "ttft") for _ in range(3)} == {"early"}


def test_cheapest_weighted_least_busy_and_overrides(emulator, gateway) -> None:  # noqa: F811
    emu = emulator(api="openai", ttft_ms=1, itl_ms=1, tokens=4)
    slow = emulator(api="openai", ttft_ms=400, itl_ms=1, tokens=4)
    gw = gateway(
        {
            "endpoints": [
                _ep("pricey", emu, price={"input": 5.0, "output": 15.0}),
                _ep("thrifty", emu, price={"input": 0.1, "output": 0.4}),
                _ep("busy", slow, price={"input": 0.1, "output": 0.4}),
            ],
            "routes": [
                {"name": "cheap", "policy": "cheapest", "endpoints": ["pricey", "thrifty"]},
                {"name": "split", "policy": "weighted", "endpoints": ["pricey", "thrifty"], "weights": [0, 1]},
                {"name": "idle", "policy": "least-busy", "endpoints": ["busy", "thrifty"]},
            ],
        }
    )
    assert endpoint_of(gw, "cheap") == "thrifty"
    assert {endpoint_of(gw, "split") for _ in range(5)} == {"thrifty"}
    # a per-call override: the route of the body, sorted by price, capped by max_price
    assert endpoint_of(gw, "pricey", extra_body={"route": "cheap"}) == "thrifty"
    assert endpoint_of(gw, "split", extra_body={"max_price": 1.0}) == "thrifty"

    async def busy_then_idle() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        first = asyncio.create_task(client.chat.completions.with_raw_response.create(model="idle", messages=CHAT))
        await asyncio.sleep(0.15)  # the first call is in flight at `busy` (400 ms to its first token)
        second = await client.chat.completions.with_raw_response.create(model="idle", messages=CHAT)
        return (await first).headers["x-tokenrace-endpoint"], second.headers["x-tokenrace-endpoint"]

    assert asyncio.run(busy_then_idle()) == ("busy", "thrifty")


def test_cascade_sends_easy_prompts_to_cheap_and_hard_ones_to_premium(emulator, gateway) -> None:  # noqa: F811
    emu = emulator(api="openai", ttft_ms=1, itl_ms=1, tokens=4)
    gw = gateway(
        {
            "endpoints": [_ep("small", emu), _ep("large", emu)],
            "routes": [
                {"name": "auto", "policy": "cascade", "endpoints": ["small"], "premium": ["large"], "threshold": 0.3}
            ],
        }
    )
    raw = gw.openai().chat.completions.with_raw_response.create(model="auto", messages=CHAT, max_tokens=8)
    assert raw.headers["x-tokenrace-endpoint"] == "small" and "-> cheap" in raw.headers["x-tokenrace-route-reason"]
    raw = gw.openai().chat.completions.with_raw_response.create(model="auto", messages=HARD, max_tokens=8)
    assert raw.headers["x-tokenrace-endpoint"] == "large" and "-> premium" in raw.headers["x-tokenrace-route-reason"]


def test_a_budget_holds_under_50_concurrent_calls(emulator, gateway) -> None:  # noqa: F811
    """Each call is estimated at (prompt chars/4 + max_tokens) tokens at $1M/1M: $0.0001 for max_tokens 100."""
    emu = emulator(api="openai", ttft_ms=50, itl_ms=5, tokens=10)
    gw = gateway(
        {
            "endpoints": [_ep("e", emu, api_key_env="UP", price={"input": 1_000_000.0, "output": 1_000_000.0})],
            "gateway": {"keys": [{"id": "team", "key_env": "GW", "budget_usd": 2_000.0}]},
        },
        environ={"GW": GATEWAY_KEY, "UP": "sk-up"},
    )

    async def fire() -> list[int]:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=30)

        async def one() -> int:
            try:
                await client.chat.completions.create(model="e", messages=CHAT, max_tokens=100)
                return 200
            except openai.APIStatusError as exc:
                return exc.status_code

        return list(await asyncio.gather(*(one() for _ in range(50))))

    statuses = asyncio.run(fire())
    assert set(statuses) <= {200, 402} and statuses.count(402) > 0 and statuses.count(200) > 0
    records = gw.wait_records(statuses.count(200))
    spent = sum(r.extra["cost_usd"] or 0.0 for r in records if r.extra.get("key_id") == "team")
    assert spent <= 2_000.0
    assert gw.app.access.usage()["team"]["spent_usd"] == pytest.approx(spent)
