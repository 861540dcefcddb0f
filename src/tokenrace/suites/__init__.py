"""The suite registry: names → suites, and the small helpers every suite shares.

Suites are registered by import path and imported only when asked for, so a suite whose module or
packages are missing (``coding`` needs a sandbox, ``tools`` is written separately) turns into a
``SuiteError`` naming the problem instead of breaking every other suite. ``scored`` says whether a suite's
``score`` grades answers at all (``chat`` has no right answer and returns ``None``).
"""

from __future__ import annotations

import importlib
import inspect
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from math import isfinite  # not `import math`: the submodule suites.math would rebind that name
from typing import Any, TypeVar

from tokenrace.suites.base import Score, Suite, SuiteError
from tokenrace.tokenizer import count_tokens
from tokenrace.workloads import WorkloadRequest, run_nonce

__all__ = [
    "SUITES",
    "SUITE_NAMES",
    "Score",
    "Suite",
    "SuiteError",
    "SuiteInfo",
    "get_suite",
    "mixed_requests",
    "parse_suites",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SuiteInfo:
    name: str
    description: str
    scored: bool  # False: ``score`` returns None (nothing to grade), reports show speed only
    factory: Callable[..., Suite]  # keyword options → a suite; raises SuiteError


def _lazy(name: str, module: str, class_name: str) -> Callable[..., Suite]:
    """A factory that imports ``module`` on first use, so a missing module is a SuiteError, not a crash."""

    def factory(**options: Any) -> Suite:
        try:
            cls = getattr(importlib.import_module(module), class_name)
        except ImportError as exc:  # the module itself, or a package it needs
            raise SuiteError(f"suite {name!r} is unavailable: {exc}") from exc
        except AttributeError as exc:
            raise SuiteError(f"suite {name!r} is unavailable: {module} has no {class_name}") from exc
        _check_options(name, cls, options)
        return cls(**options)

    factory.__name__ = f"make_{name}_suite"
    return factory


def _check_options(name: str, cls: Any, options: Mapping[str, Any]) -> None:
    """Bad option names are the user's mistake: say which options the suite takes."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # no introspectable signature: let the constructor judge
        return
    try:
        signature.bind(**options)
    except TypeError as exc:
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        valid = sorted(p.name for p in signature.parameters.values() if p.kind in kinds)
        unknown = sorted(set(options) - set(valid))
        what = f"unknown option(s) {', '.join(unknown)}" if unknown else str(exc)
        raise SuiteError(f"suite {name!r}: {what}; valid options: {', '.join(valid) or 'none'}") from exc


SUITES: dict[str, SuiteInfo] = {
    info.name: info
    for info in (
        SuiteInfo(
            "agent",
            "multi-step tasks in a deterministic tool environment; task time, turns, tokens and success",
            True,
            _lazy("agent", "tokenrace.suites.agent", "AgentSuite"),
        ),
        SuiteInfo(
            "chat",
            "short everyday assistant prompts; speed only (no right answer to score)",
            False,
            _lazy("chat", "tokenrace.suites.chat", "ChatSuite"),
        ),
        SuiteInfo(
            "coding",
            "write a function; scored by running its tests in the sandbox",
            True,
            _lazy("coding", "tokenrace.suites.coding", "CodingSuite"),
        ),
        SuiteInfo(
            "custom",
            "your own JSONL prompts (custom:PATH), scored exact/contains/number/regex/json against a reference",
            True,
            _lazy("custom", "tokenrace.suites.custom", "CustomSuite"),
        ),
        SuiteInfo(
            "math",
            "grade-school word problems; exact match of the final number",
            True,
            _lazy("math", "tokenrace.suites.math", "MathSuite"),
        ),
        SuiteInfo(
            "rag",
            "facts planted in long filler documents at several context lengths; recall of the asked facts",
            True,
            _lazy("rag", "tokenrace.suites.rag", "RagSuite"),
        ),
        SuiteInfo(
            "structured",
            "extract a record from prose into JSON under a JSON schema; fraction of fields right",
            True,
            _lazy("structured", "tokenrace.suites.structured", "StructuredSuite"),
        ),
        SuiteInfo(
            "tools",
            "choose and call the right tool with the right arguments",
            True,
            _lazy("tools", "tokenrace.suites.tools", "ToolsSuite"),
        ),
    )
}
SUITE_NAMES: tuple[str, ...] = tuple(SUITES)


def _valid_names() -> str:
    return ", ".join(SUITE_NAMES)


def get_suite(name: str, **options: Any) -> Suite:
    """The suite called ``name`` built with ``options`` (unknown name or option → SuiteError)."""
    info = SUITES.get(name.strip())
    if info is None:
        raise SuiteError(f"unknown suite {name!r}; valid suites: {_valid_names()}")
    return info.factory(**options)


def parse_suites(spec: str, options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Suite]:
    """``"chat,coding,rag"`` → suites in that order; ``options`` maps a suite name to its options."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise SuiteError(f"no suites in {spec!r}; valid suites: {_valid_names()}")
    unknown = [name for name in names if name not in SUITES]
    if unknown:
        raise SuiteError(f"unknown suite(s) {', '.join(map(repr, unknown))}; valid suites: {_valid_names()}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SuiteError(f"suite(s) listed twice: {', '.join(repeated)}")
    options = options or {}
    stray = sorted(set(options) - set(names))
    if stray:
        raise SuiteError(f"options given for suite(s) not in {spec!r}: {', '.join(stray)}")
    return [get_suite(name, **dict(options.get(name, {}))) for name in names]


def mixed_requests(
    suites: Sequence[Suite], seed: int = 0, weights: Sequence[float] | Mapping[str, float] | None = None
) -> Iterator[WorkloadRequest]:
    """The suites' requests interleaved: round-robin, or in proportion to ``weights`` (a list parallel
    to ``suites`` or a name → weight mapping whose missing names weigh 1). The interleaving is smooth
    weighted round-robin, so it is deterministic and every prefix of the stream is close to the weights;
    each suite gets the same ``seed``, so its own sequence does not depend on what it is mixed with.
    A suite whose stream ends drops out. Bad weights raise SuiteError here, not at the first ``next``."""
    if not suites:
        raise SuiteError(f"no suites to mix; valid suites: {_valid_names()}")
    shares = _weights(suites, weights)
    return _interleave([iter(s.requests(seed)) for s in suites], shares)


def _weights(suites: Sequence[Suite], weights: Sequence[float] | Mapping[str, float] | None) -> list[float]:
    names = [s.name for s in suites]
    if weights is None:
        return [1.0] * len(suites)
    if isinstance(weights, Mapping):
        stray = sorted(set(weights) - set(names))
        if stray:
            raise SuiteError(f"weights for suite(s) not mixed: {', '.join(stray)}; mixed: {', '.join(names)}")
        shares = [float(weights.get(name, 1.0)) for name in names]
    else:
        if len(weights) != len(suites):
            raise SuiteError(f"{len(weights)} weights for {len(suites)} suites ({', '.join(names)})")
        shares = [float(w) for w in weights]
    if any(not isfinite(w) or w < 0 for w in shares) or not any(shares):
        raise SuiteError(f"weights must be finite, >= 0 and not all 0: {shares}")
    return shares


def _interleave(streams: list[Iterator[WorkloadRequest]], shares: list[float]) -> Iterator[WorkloadRequest]:
    credit = [0.0] * len(streams)
    active = [i for i, w in enumerate(shares) if w > 0]
    while active:
        total = sum(shares[i] for i in active)
        for i in active:
            credit[i] += shares[i]
        pick = max(active, key=lambda i: credit[i])  # ties go to the earlier suite
        credit[pick] -= total
        try:
            yield next(streams[pick])
        except StopIteration:
            active.remove(pick)
            credit[pick] = 0.0


# --- helpers shared by the built-in suites -------------------------------------------------------------


def check_options(sample: int | None, max_tokens: int | None) -> None:
    """Options common to every suite: a sample and a token budget of at least 1."""
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise SuiteError(f"sample must be a whole number >= 1, got {sample!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise SuiteError(f"max_tokens must be a whole number >= 1, got {max_tokens!r}")


def seeded_subset(items: Sequence[T], sample: int | None, rng: random.Random) -> list[T]:
    """``sample`` items drawn with ``rng``, kept in their original order (all of them when ``sample`` is
    None or not smaller than the dataset)."""
    if sample is None or sample >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.sample(range(len(items)), sample))]


def endless(items: Sequence[T], rng: random.Random) -> Iterator[T]:
    """``items`` over and over, reshuffled each pass (a finite dataset is cycled, never exhausted)."""
    if not items:
        return
    order = list(items)
    while True:
        rng.shuffle(order)
        yield from order


def resolve_nonce(nonce: str | None) -> str:
    """``None`` → a fresh per-run nonce (prompts unique across runs: no prompt-cache flattery);
    ``""`` → none (tests, or deliberately cache-friendly runs)."""
    return run_nonce() if nonce is None else nonce


def unique_tag(nonce: str, number: int) -> str:
    """The prefix that makes each prompt unique, first so no prefix cache can match past it."""
    return f"({nonce}-{number}) " if nonce else ""


def make_request(
    prompt_id: str,
    text: str,
    *,
    suite: str,
    reference: Any,
    max_tokens: int | None,
    params: dict[str, Any] | None = None,
    input_tokens: int | None = None,
) -> WorkloadRequest:
    """One user message at temperature 0 (comparable, repeatable answers) with its cl100k count
    (``input_tokens`` when the caller already knows it: a long prompt is slow to count)."""
    request = WorkloadRequest(
        prompt_id=prompt_id,
        messages=[{"role": "user", "content": text}],
        max_tokens=max_tokens,
        params={"temperature": 0.0, **(params or {})},
        suite=suite,
        reference=reference,
    )
    request.input_tokens = count_tokens(request.prompt) if input_tokens is None else input_tokens
    return request


def cut_off_note(finish_reason: str | None) -> str:
    """Appended to a failing reason when the answer was truncated, the likeliest cause."""
    return " (cut off at max_tokens)" if finish_reason == "length" else ""
