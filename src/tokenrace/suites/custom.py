"""The user's own prompts, scored the way the user says: ``--suite custom:prompts.jsonl``.

One JSON object per line: ``messages`` (chat messages) or ``prompt`` (a string), optional ``reference``
(the right answer), ``scorer`` (how to compare; ``exact`` when a reference is given, else unscored),
``max_tokens`` and ``id``. Scorers:

- ``exact``: the answer equals the reference after trimming and case-folding;
- ``contains``: the reference appears in the answer (case-insensitive);
- ``number``: the answer's final number equals the reference (as the math suite reads it);
- ``regex``: the reference is a regular expression that must match somewhere in the answer;
- ``json``: the answer is JSON (a fenced block is fine) whose fields equal the reference object's; the score is
  the share of the reference's fields that match.

A malformed line is named (file and line) and skipped; the run goes on with the others.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tokenrace.records import RequestRecord
from tokenrace.suites import check_options, cut_off_note, endless, resolve_nonce, seeded_subset, unique_tag
from tokenrace.suites.base import Score, SuiteError
from tokenrace.suites.math import extract_answer, parse_number
from tokenrace.suites.structured import parse_json_answer, same_value
from tokenrace.tokenizer import count_tokens
from tokenrace.workloads import WorkloadRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    line: int
    item_id: str
    messages: list[dict[str, Any]]
    reference: Any
    scorer: str | None
    max_tokens: int | None


def _exact(answer: str, reference: Any) -> Score:
    ok = answer.strip().casefold() == str(reference).strip().casefold()
    return Score(1.0, "ok") if ok else Score(0.0, f"expected {str(reference)[:80]!r}")


def _contains(answer: str, reference: Any) -> Score:
    ok = str(reference).casefold() in answer.casefold()
    return Score(1.0, "ok") if ok else Score(0.0, f"{str(reference)[:80]!r} not in the answer")


def _number(answer: str, reference: Any) -> Score:
    expected = parse_number(str(reference))
    got, _ = extract_answer(answer)
    if expected is None:
        return Score(0.0, f"reference {reference!r} is not a number")
    if got is None:
        return Score(0.0, "no number in the answer")
    return Score(1.0, "ok") if got == expected else Score(0.0, f"expected {reference}, got {float(got):g}")


def _regex(answer: str, reference: Any) -> Score:
    try:
        ok = re.search(str(reference), answer) is not None
    except re.error as exc:
        return Score(0.0, f"bad regex in reference: {exc}")
    return Score(1.0, "ok") if ok else Score(0.0, f"no match for /{str(reference)[:80]}/")


def _json(answer: str, reference: Any) -> Score:
    if not isinstance(reference, dict) or not reference:
        return Score(0.0, "the json scorer needs a non-empty object as reference")
    parsed = parse_json_answer(answer)
    if not isinstance(parsed, dict):
        return Score(0.0, "the answer is not a JSON object")
    wrong = [key for key, value in reference.items() if key not in parsed or not same_value(value, parsed[key])]
    share = 1 - len(wrong) / len(reference)
    return Score(share, "ok" if not wrong else f"{len(wrong)}/{len(reference)} fields wrong: {', '.join(wrong)}")


SCORERS: dict[str, Callable[[str, Any], Score]] = {
    "exact": _exact,
    "contains": _contains,
    "number": _number,
    "regex": _regex,
    "json": _json,
}


def load_items(path: Path) -> tuple[list[Item], list[str]]:
    """Valid lines as items, and one warning per malformed line (file:line: why)."""
    items: list[Item] = []
    warnings: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"custom: cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            warnings.append(f"{where}: not valid JSON ({exc}); line skipped")
            continue
        if not isinstance(row, dict):
            warnings.append(f"{where}: not a JSON object; line skipped")
            continue
        if isinstance(row.get("messages"), list) and row["messages"]:
            messages = row["messages"]
        elif isinstance(row.get("prompt"), str) and row["prompt"].strip():
            messages = [{"role": "user", "content": row["prompt"]}]
        else:
            warnings.append(f"{where}: needs a 'messages' list or a 'prompt' string; line skipped")
            continue
        scorer = row.get("scorer") or ("exact" if "reference" in row else None)
        if scorer is not None and scorer not in SCORERS:
            warnings.append(f"{where}: unknown scorer {scorer!r} (valid: {', '.join(SCORERS)}); line skipped")
            continue
        max_tokens = row.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            warnings.append(f"{where}: max_tokens must be a positive integer; line skipped")
            continue
        items.append(
            Item(
                number, str(row.get("id", f"{path.name}:{number}")), messages, row.get("reference"), scorer, max_tokens
            )
        )
    return items, warnings


class CustomSuite:
    name = "custom"
    scored = True

    def __init__(
        self, *, path: str | Path, sample: int | None = None, max_tokens: int = 512, nonce: str | None = None
    ) -> None:
        check_options(sample, max_tokens)
        self.path = Path(path)
        self.sample, self.max_tokens, self.nonce = sample, max_tokens, nonce
        self.items, self.warnings = load_items(self.path)
        for warning in self.warnings:
            log.warning("%s", warning)
        if not self.items:
            raise SuiteError(f"custom: no usable requests in {self.path}")
        scored = sum(1 for item in self.items if item.scorer)
        skipped = f", {len(self.warnings)} malformed lines skipped" if self.warnings else ""
        self.description = f"custom: {len(self.items)} requests from {self.path} ({scored} scored){skipped}"

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        rng = random.Random(seed)
        chosen = seeded_subset(self.items, self.sample, rng)
        nonce = resolve_nonce(self.nonce)
        for number, item in enumerate(endless(chosen, rng)):
            messages = [dict(m) for m in item.messages]
            last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
            if last_user is not None and isinstance(last_user.get("content"), str):
                last_user["content"] = unique_tag(nonce, number) + last_user["content"]
            request = WorkloadRequest(
                prompt_id=item.item_id,
                messages=messages,
                max_tokens=item.max_tokens or self.max_tokens,
                params={"temperature": 0.0},
                suite=self.name,
                reference={"reference": item.reference, "scorer": item.scorer, "line": item.line},
            )
            request.input_tokens = count_tokens(request.prompt)
            yield request

    def score(self, request: WorkloadRequest, record: RequestRecord) -> Score | None:
        reference = request.reference or {}
        scorer = SCORERS.get(str(reference.get("scorer")))
        if scorer is None:
            return None
        if not record.output_text.strip():
            return Score(0.0, "empty answer" + cut_off_note(record.finish_reason))
        score = scorer(record.output_text, reference.get("reference"))
        return score if score.value == 1.0 else Score(score.value, score.reason + cut_off_note(record.finish_reason))
