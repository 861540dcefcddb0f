"""Multi-step agent tasks in a deterministic tool environment: the number that matters for agents is how
long a whole task takes, in how many turns and tokens, and whether it ends with the right answer.

Each task ("what do orders A and B cost together, in EUR?") needs several tool calls: look up each order,
look up the exchange rate, then answer. The environment answers tool calls from fixed, seeded data, so a
task's right answer is known exactly. The load generator runs a task as a conversation: every turn is an
ordinary request (its own record, with TTFT and speed); a turn that calls tools gets the tools' results and
the next turn is sent at once; a turn without tool calls is the final answer, which is scored. The last
turn's record carries the task's totals in ``extra["agent"]``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson

from tokenrace.records import RequestRecord
from tokenrace.suites import check_options, cut_off_note, resolve_nonce, unique_tag
from tokenrace.suites.base import Score
from tokenrace.tokenizer import count_tokens
from tokenrace.workloads import WorkloadRequest

ITEMS = ("desk lamp", "office chair", "monitor arm", "keyboard", "webcam", "headset", "standing mat", "router")
RATES = {"EUR": "0.92", "GBP": "0.79", "JPY": "151.40", "CHF": "0.88", "CAD": "1.37"}
SYSTEM = (
    "You are an assistant with tools. Use them to look up what you need; do not guess numbers. "
    "When you have the result, reply with a short sentence ending in 'ANSWER: <number>'."
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look up an order by its id: item, quantity and unit price in USD.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string", "description": "e.g. A17"}},
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_exchange_rate",
            "description": "How many units of a currency one US dollar buys.",
            "parameters": {
                "type": "object",
                "properties": {"currency": {"type": "string", "description": "ISO code, e.g. EUR"}},
                "required": ["currency"],
            },
        },
    },
]
ANSWER_RE = re.compile(r"ANSWER:\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)


def _orders(seed: int) -> dict[str, dict[str, Any]]:
    rng = random.Random(seed)
    orders = {}
    for letter in "ABCDEFGH":
        for _ in range(3):
            order_id = f"{letter}{rng.randint(10, 99)}"
            orders[order_id] = {
                "item": rng.choice(ITEMS),
                "quantity": rng.randint(1, 9),
                "unit_price_usd": f"{rng.randint(5, 400)}.{rng.choice(('00', '50', '25', '99'))}",
            }
    return orders


def run_tool(world: dict[str, Any], name: str, arguments: str) -> str:
    """The environment: a tool call in, a JSON result (or a JSON error the model can read) out."""
    try:
        args = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return orjson.dumps({"error": "arguments are not valid JSON"}).decode()
    if not isinstance(args, dict):
        return orjson.dumps({"error": "arguments must be a JSON object"}).decode()
    if name == "get_order":
        order = world["orders"].get(str(args.get("order_id", "")).strip().upper())
        return orjson.dumps(order if order else {"error": f"no order {args.get('order_id')!r}"}).decode()
    if name == "get_exchange_rate":
        currency = str(args.get("currency", "")).strip().upper()
        rate = RATES.get(currency)
        result = {"currency": currency, "per_usd": rate} if rate else {"error": f"unknown currency {currency!r}"}
        return orjson.dumps(result).decode()
    return orjson.dumps({"error": f"unknown tool {name!r}"}).decode()


def expected_total(orders: dict[str, dict[str, Any]], order_ids: list[str], currency: str) -> Decimal:
    usd = sum(Decimal(orders[o]["unit_price_usd"]) * orders[o]["quantity"] for o in order_ids)
    return (usd * Decimal(RATES[currency])).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class AgentSuite:
    name = "agent"
    scored = True

    def __init__(
        self, *, sample: int | None = None, max_tokens: int = 256, max_turns: int = 6, nonce: str | None = None
    ) -> None:
        check_options(sample, max_tokens)
        if max_turns < 2:
            raise ValueError("max_turns must be >= 2 (a task needs a tool turn and an answer)")
        self.sample, self.max_tokens, self.max_turns, self.nonce = sample, max_tokens, max_turns, nonce
        count = sample or 20
        self.description = f"agent: {count} order-total tasks, each needing 3+ tool calls, at most {max_turns} turns"

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        """Seeded tasks (endless: ``sample`` distinct tasks, cycled); each is the conversation's first turn."""
        world = {"orders": _orders(seed)}
        rng = random.Random(seed + 1)
        ids = sorted(world["orders"])
        count = self.sample or 20
        tasks = []
        for index in range(count):
            pair = rng.sample(ids, 2)
            currency = rng.choice(sorted(RATES))
            tasks.append((index, pair, currency))
        nonce = resolve_nonce(self.nonce)
        number = 0
        while True:
            for index, pair, currency in tasks:
                text = (
                    f"{unique_tag(nonce, number)}What do orders {pair[0]} and {pair[1]} cost together, "
                    f"in {currency}? Round to 2 decimals."
                )
                expected = expected_total(world["orders"], pair, currency)
                request = WorkloadRequest(
                    prompt_id=f"agent-{index}",
                    messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
                    max_tokens=self.max_tokens,
                    params={"temperature": 0.0, "tools": TOOLS, "tool_choice": "auto"},
                    suite=self.name,
                    reference={"expected": str(expected), "world": world, "turn": 0, "max_turns": self.max_turns},
                )
                request.input_tokens = count_tokens(request.prompt)
                yield request
                number += 1

    def next_turn(self, request: WorkloadRequest, record: RequestRecord) -> WorkloadRequest | None:
        """The follow-up request after a turn that called tools (None: that turn was the final answer)."""
        reference = request.reference or {}
        turn = int(reference.get("turn", 0))
        if not record.tool_calls or turn + 1 >= int(reference.get("max_turns", self.max_turns)):
            return None
        calls = []
        results = []
        for index, call in enumerate(record.tool_calls):
            call_id = call.get("id") or f"call_{turn}_{index}"
            calls.append(
                {"id": call_id, "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
            )
            output = run_tool(reference["world"], call["name"], call["arguments"])
            results.append({"role": "tool", "tool_call_id": call_id, "content": output})
        assistant = {"role": "assistant", "content": record.output_text or None, "tool_calls": calls}
        follow = WorkloadRequest(
            prompt_id=request.prompt_id,
            messages=[*request.messages, assistant, *results],
            max_tokens=request.max_tokens,
            params=request.params,
            suite=request.suite,
            reference={**reference, "turn": turn + 1},
        )
        follow.input_tokens = count_tokens(follow.prompt)
        return follow

    def score(self, request: WorkloadRequest, record: RequestRecord) -> Score:
        """1.0 when the final answer's number equals the exact total, else 0.0 and why."""
        reference = request.reference or {}
        expected = Decimal(str(reference.get("expected")))
        if record.tool_calls:
            return Score(0.0, f"still calling tools after {int(reference.get('turn', 0)) + 1} turns (turn limit)")
        found = ANSWER_RE.findall(record.output_text)
        if not found:
            return Score(0.0, "no 'ANSWER: <number>' in the final reply" + cut_off_note(record.finish_reason))
        got = Decimal(found[-1].replace(",", ""))
        if abs(got - expected) <= Decimal("0.01"):
            return Score(1.0, "ok")
        return Score(0.0, f"expected {expected}, got {got}")
