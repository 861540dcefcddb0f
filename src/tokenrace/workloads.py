"""Workloads: what to send. A workload yields requests; the load profile decides when.

``synthetic:input=1000,output=200`` builds prompts of an exact cl100k token count from words that are one
token each, with a unique prefix per request so no prefix cache can flatter the endpoint.
``jsonl:PATH`` replays the user's own prompts (``messages`` or ``prompt`` per line).
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from tokenrace.tokenizer import count_tokens

# Common words that are exactly one cl100k token when preceded by a space (checked in tests).
SINGLE_TOKEN_WORDS = (
    "the time people year way day man thing woman life child world school state family student group "
    "country problem hand part place case week company system program question work government number "
    "night point home water room mother area money story fact month lot right study book eye job word "
    "business issue side kind head house service friend father power hour game line end member law car "
    "city community name president team minute idea kid body information back parent face others level "
    "office door health person art war history party result change morning reason research girl guy "
    "moment air teacher force education"
).split()

log = logging.getLogger(__name__)

WORKLOAD_KINDS = ("synthetic", "chat", "jsonl", "trace")

# Short conversational requests of the kind a chat assistant gets all day (written for tokenrace).
CHAT_PROMPTS = (
    "What is a good way to start learning to cook at home?",
    "Explain in two sentences why the sky is blue.",
    "Give me three ideas for a rainy Sunday afternoon with kids.",
    "How do I politely decline a meeting invitation?",
    "What is the difference between a virus and a bacterium?",
    "Write a haiku about a train leaving the station at dawn.",
    "Suggest a name for a small bakery that sells sourdough bread.",
    "How long should I boil an egg for a soft yolk?",
    "Summarise the plot of Romeo and Juliet in three sentences.",
    "What are the main benefits of regular walking?",
    "Translate 'Where is the train station?' into French and Spanish.",
    "Explain what a budget is to a ten-year-old.",
    "What should I pack for a weekend hiking trip?",
    "Why do leaves change colour in autumn?",
    "Give me a short motivational message for a Monday morning.",
    "How can I make my houseplants grow better?",
    "What is the capital of Australia, and why is it not Sydney?",
    "Write a two-line thank-you note to a colleague who helped me.",
    "Explain the rules of tic-tac-toe.",
    "What are some tips for sleeping better?",
    "Describe the taste of a ripe mango to someone who has never had one.",
    "How does a rainbow form?",
    "Recommend a simple stretching routine for people who sit all day.",
    "What is the difference between weather and climate?",
)


class WorkloadError(ValueError):
    pass


@dataclass(slots=True)
class WorkloadRequest:
    """One request to send: chat messages (completion APIs get them flattened into a prompt)."""

    prompt_id: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # extra body fields (temperature, ignore_eos...)
    input_tokens: int | None = None  # cl100k count of the prompt text, when known
    suite: str = ""  # the workload suite that made it, which also scores it
    reference: Any = None  # what the suite's scorer needs (expected answer, tests, planted facts)

    @property
    def prompt(self) -> str:
        return "\n\n".join(_text_of(m.get("content")) for m in self.messages)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class RequestSource(Protocol):
    """What the load generator needs from a workload (``Workload`` here, ``SuiteWorkload`` for suites)."""

    name: str
    kind: str

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]: ...


@dataclass(frozen=True)
class Workload:
    name: str  # the spec as the user wrote it, stored with the run
    kind: str
    options: dict[str, Any]

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        """Endless stream of requests (a finite file is cycled)."""
        if self.kind == "synthetic":
            return _synthetic(self.options, seed)
        if self.kind == "chat":
            return _chat(self.options, seed)
        return _jsonl(Path(self.options["path"]), self.options)


def parse_workload(spec: str) -> Workload:
    """``synthetic:input=1000,output=200[,ignore_eos=1,temperature=0]``, ``chat[:output=N]`` or
    ``jsonl:PATH[,output=N]``."""
    kind, _, rest = spec.partition(":")
    if kind not in WORKLOAD_KINDS:
        raise WorkloadError(
            f"unknown workload {spec!r}; valid: synthetic:input=N,output=M[,ignore_eos=1], chat[:output=N], "
            "or jsonl:PATH"
        )
    if kind == "chat":
        options = {"output": 256, **_parse_options(rest, spec, {"output", "temperature"})}
        return Workload(spec, kind, options)
    if kind == "trace":
        path, _, opts = rest.partition(",")
        if not path or not Path(path).is_file():
            raise WorkloadError(f"trace workload needs an existing JSONL file: trace:PATH[,speed=2] (got {path!r})")
        options = {"speed": 1.0, **_parse_options(opts, spec, {"speed", "output", "temperature"})}
        if options["speed"] <= 0:
            raise WorkloadError(f"{spec}: speed must be > 0")
        trace = TraceWorkload(spec, Path(path), options)
        return trace  # type: ignore[return-value]
    if kind == "jsonl":
        path, _, opts = rest.partition(",")
        if not path:
            raise WorkloadError("jsonl workload needs a path: jsonl:prompts.jsonl")
        if not Path(path).is_file():
            raise WorkloadError(f"workload file not found: {path}")
        options: dict[str, Any] = {"path": path, **_parse_options(opts, spec, {"output", "temperature"})}
        return Workload(spec, kind, options)
    options = {"input": 256, "output": 128, **_parse_options(rest, spec, _SYNTHETIC_KEYS)}
    if options["input"] < 1 or options["output"] < 1:
        raise WorkloadError(f"{spec}: input and output must be >= 1")
    return Workload(spec, kind, options)


_SYNTHETIC_KEYS = {"input", "output", "ignore_eos", "temperature", "vary"}


def _parse_options(text: str, spec: str, allowed: set[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise WorkloadError(f"{spec}: bad option {item!r}; valid options: {', '.join(sorted(allowed))}")
        try:
            options[key] = int(value) if key in ("input", "output", "ignore_eos") else float(value)
        except ValueError as exc:
            raise WorkloadError(f"{spec}: {key} must be a number, got {value!r}") from exc
    return options


def run_nonce() -> str:
    """A few random hex digits that make a run's prompts unique even against an earlier run with the
    same seed: servers keep prompt caches across requests (llama.cpp, vLLM prefix caching), and a
    repeated prompt would flatter TTFT."""
    return secrets.token_hex(3)


def synthetic_prompt(tokens: int, rng: random.Random, request_id: str) -> tuple[str, int]:
    """A prompt of ``tokens`` cl100k tokens (at least the unique prefix) whose first tokens are unique
    to the request; returns the text and its exact token count."""
    unique = f"Request {request_id}:"
    prefix_tokens = count_tokens(unique)
    words = rng.choices(SINGLE_TOKEN_WORDS, k=max(tokens - prefix_tokens, 0))
    return unique + "".join(" " + w for w in words), prefix_tokens + len(words)


def _synthetic(options: dict[str, Any], seed: int) -> Iterator[WorkloadRequest]:
    rng = random.Random(seed)
    nonce = run_nonce()
    vary = float(options.get("vary", 0.0))  # ± fraction of the input length, uniform
    params: dict[str, Any] = {"temperature": float(options.get("temperature", 0.0))}
    if options.get("ignore_eos"):
        params["ignore_eos"] = True  # vLLM / llama.cpp / SGLang: force exactly `output` tokens
    number = 0
    while True:
        length = options["input"]
        if vary:
            length = max(1, round(length * (1 + rng.uniform(-vary, vary))))
        text, length = synthetic_prompt(length, rng, f"{nonce}-{number}")
        yield WorkloadRequest(
            prompt_id=f"synthetic-{number}",
            messages=[{"role": "user", "content": text}],
            max_tokens=options["output"],
            params=dict(params),
            input_tokens=length,
        )
        number += 1


class TraceWorkload:
    """A recorded trace replayed on its own clock: JSONL lines with ``timestamp`` (seconds; any origin)
    and ``messages`` or ``prompt`` (optional ``max_tokens``), sent in timestamp order at
    ``(timestamp - first) / speed`` after the start. The load profile is ``trace``."""

    kind = "trace"

    def __init__(self, name: str, path: Path, options: dict[str, Any]) -> None:
        self.name = name
        self.options = options
        rows: list[tuple[float, int, dict[str, Any]]] = []
        for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
                timestamp = float(row["timestamp"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise WorkloadError(f"{path}:{line_number}: needs JSON with a numeric 'timestamp' ({exc})") from exc
            rows.append((timestamp, line_number, row))
        if not rows:
            raise WorkloadError(f"{path}: no requests in trace")
        rows.sort(key=lambda r: (r[0], r[1]))
        first = rows[0][0]
        self.offsets = [(t - first) / options["speed"] for t, _, _ in rows]
        self._items: list[WorkloadRequest] = []
        for _, line_number, row in rows:
            self._items.append(_request_from_row(path, line_number, row, options))

    def __len__(self) -> int:
        return len(self._items)

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        yield from self._items


def _chat(options: dict[str, Any], seed: int) -> Iterator[WorkloadRequest]:
    """The built-in chat prompts in a seeded order; a request number keeps every prompt unique so a
    prompt cache cannot answer a repeat for free."""
    rng = random.Random(seed)
    nonce = run_nonce()
    order = list(range(len(CHAT_PROMPTS)))
    number = 0
    while True:
        rng.shuffle(order)
        for index in order:
            text = f"({nonce}-{number}) {CHAT_PROMPTS[index]}"
            yield WorkloadRequest(
                prompt_id=f"chat-{index}",
                messages=[{"role": "user", "content": text}],
                max_tokens=int(options["output"]),
                params={"temperature": float(options.get("temperature", 0.0))},
                input_tokens=count_tokens(text),
            )
            number += 1


def _request_from_row(path: Path, line_number: int, row: dict[str, Any], options: dict[str, Any]) -> WorkloadRequest:
    """One line of a user's JSONL (``messages`` or ``prompt``, optional ``id`` and ``max_tokens``)."""
    if isinstance(row.get("messages"), list):
        messages = row["messages"]
    elif isinstance(row.get("prompt"), str):
        messages = [{"role": "user", "content": row["prompt"]}]
    else:
        raise WorkloadError(f"{path}:{line_number}: needs a 'messages' list or a 'prompt' string")
    request = WorkloadRequest(
        prompt_id=str(row.get("id", f"{path.name}:{line_number}")),
        messages=messages,
        max_tokens=row.get("max_tokens", options.get("output")),
        params={"temperature": options.get("temperature", 0.0)},
    )
    request.input_tokens = count_tokens(request.prompt)
    return request


def _jsonl(path: Path, options: dict[str, Any]) -> Iterator[WorkloadRequest]:
    items: list[WorkloadRequest] = []
    problems: list[str] = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            if not isinstance(row, dict):
                raise WorkloadError(f"{path}:{line_number}: not a JSON object")
            items.append(_request_from_row(path, line_number, row, options))
        except orjson.JSONDecodeError as exc:
            problems.append(f"{path}:{line_number}: not valid JSON ({exc}); line skipped")
        except WorkloadError as exc:
            problems.append(f"{exc}; line skipped")
    for problem in problems:  # a bad line is reported and skipped; the run goes on with the others
        log.warning("%s", problem)
    if not items:
        raise WorkloadError(f"{path}: no usable requests in file" + (f" ({problems[0]})" if problems else ""))
    while True:
        yield from items
