"""The math suite: grade-school word problems, scored by exact match of the final number.

Problems come from a JSONL file with ``question`` and ``answer`` per line (GSM8K's own format, whose answers
end in ``#### 42``, or a plain number). tokenrace ships a small sample it wrote itself
(``tokenrace/data/math_sample.jsonl``); ``path=`` points at any other file, such as the GSM8K test split.
A malformed line is named (file and line) in ``warnings`` and skipped, so one bad row does not cost a run.

The model is asked to reason and end with ``#### <number>``; the scorer still finds the answer when a model
ignores that (``\\boxed{}``, "the answer is ...", or the last number), since the suite measures arithmetic,
not obedience to a format.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from tokenrace.records import RequestRecord
from tokenrace.suites import (
    check_options,
    cut_off_note,
    endless,
    make_request,
    resolve_nonce,
    seeded_subset,
    unique_tag,
)
from tokenrace.suites.base import Score, SuiteError
from tokenrace.workloads import WorkloadRequest

log = logging.getLogger(__name__)

SAMPLE_FILE = "math_sample.jsonl"

INSTRUCTION = (
    "Solve the following math word problem. Think it through step by step, then write the final answer "
    'alone on the last line in the form "#### <number>" (just the number: no units, no currency sign).'
)

# A number as models write it: optional sign and $, thousands commas, decimals, a fraction "3/4".
_NUMBER = re.compile(
    r"(?<![\w.])[-−]?(?:\$\s?)?[-−]?"
    r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:\s?/\s?\d+(?:\.\d+)?)?"
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_ANSWER_IS = re.compile(r"answer\s*(?:is|was|would be|=|:)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Problem:
    question: str
    answer: Fraction
    line: int  # in the source file: a stable id


def parse_number(text: str) -> Fraction | None:
    """One number token (``-$1,234.50``, ``3/4``) as an exact fraction; None when it is not one."""
    cleaned = re.sub(r"[\s$,]", "", text).replace("−", "-")
    if cleaned.startswith("--"):
        cleaned = cleaned[2:]
    try:
        if "/" in cleaned:
            top, bottom = cleaned.split("/", 1)
            denominator = Fraction(bottom)
            return Fraction(top) / denominator if denominator else None
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def _numbers(text: str) -> list[Fraction]:
    values = (parse_number(m.group()) for m in _NUMBER.finditer(text))
    return [v for v in values if v is not None]


def _first_number(text: str) -> Fraction | None:
    found = _numbers(text)
    return found[0] if found else None


def extract_answer(text: str) -> tuple[Fraction | None, str]:
    """The final number of a model's answer and how it was found, trying in order: the last ``####``,
    the last ``\\boxed{}``, the last "answer is ...", then the last number anywhere."""
    text = _LATEX_FRAC.sub(r"\1/\2", text or "")
    if "####" in text:
        found = _first_number(text.rsplit("####", 1)[1])
        if found is not None:
            return found, "####"
    boxed = _BOXED.findall(text)
    if boxed and (found := _first_number(boxed[-1])) is not None:
        return found, "boxed"
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        rest = text[matches[-1].end() :].split("\n", 1)[0]
        if (found := _first_number(rest)) is not None:
            return found, "answer is"
    found_all = _numbers(text)
    return (found_all[-1], "last number") if found_all else (None, "")


def format_number(value: Fraction) -> str:
    """``42``, ``4.75``, or ``1/3`` when no finite decimal exists."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for factor in (2, 5):
        while denominator % factor == 0:
            denominator //= factor
    if denominator == 1:
        digits = 0
        while (value * 10**digits).denominator != 1:
            digits += 1
        scaled = str(abs(value.numerator) * 10**digits // value.denominator).rjust(digits + 1, "0")
        return f"{'-' if value < 0 else ''}{scaled[:-digits]}.{scaled[-digits:]}"  # exact, unlike float
    return f"{value.numerator}/{value.denominator}"


def expected_answer(answer: Any) -> Fraction | None:
    """A dataset answer: a JSON number, GSM8K's ``... #### 42``, or a string that is just a number."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int | float):
        return Fraction(str(answer)) if answer == answer and abs(answer) != float("inf") else None
    if not isinstance(answer, str):
        return None
    if "####" in answer:
        return _first_number(answer.rsplit("####", 1)[1])
    match = _NUMBER.fullmatch(answer.strip().rstrip("."))
    return parse_number(match.group()) if match else None


def load_problems(text: str, source: str) -> tuple[list[Problem], list[str]]:
    """Valid problems and one warning per malformed line (``source:line: why``)."""
    problems: list[Problem] = []
    warnings: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            warnings.append(f"{source}:{number}: not valid JSON ({exc}); line skipped")
            continue
        if not isinstance(row, dict):
            warnings.append(f"{source}:{number}: expected a JSON object; line skipped")
            continue
        question, answer = row.get("question"), row.get("answer")
        if not isinstance(question, str) or not question.strip():
            warnings.append(f"{source}:{number}: missing a 'question' string; line skipped")
            continue
        value = expected_answer(answer)
        if value is None:
            warnings.append(f"{source}:{number}: 'answer' {str(answer)[:60]!r} has no final number; line skipped")
            continue
        problems.append(Problem(question.strip(), value, number))
    return problems, warnings


class MathSuite:
    name = "math"
    scored = True

    def __init__(
        self,
        *,
        sample: int | None = None,
        max_tokens: int = 1024,
        path: str | Path | None = None,
        nonce: str | None = None,
    ) -> None:
        check_options(sample, max_tokens)
        self.sample = sample
        self.max_tokens = max_tokens
        self.nonce = nonce
        if path is None:
            source = SAMPLE_FILE
            text = (resources.files("tokenrace") / "data" / SAMPLE_FILE).read_text(encoding="utf-8")
        else:
            source = str(path)
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise SuiteError(f"math: cannot read {source}: {exc}") from exc
        self.problems, self.warnings = load_problems(text, source)
        for warning in self.warnings:
            log.warning("%s", warning)
        if not self.problems:
            raise SuiteError(f"math: no valid problems in {source} (each line needs 'question' and 'answer')")
        count = min(sample or len(self.problems), len(self.problems))
        origin = "tokenrace's own sample" if path is None else source
        skipped = f", {len(self.warnings)} malformed lines skipped" if self.warnings else ""
        self.description = f"math: {count} word problems from {origin}, exact final number{skipped}"

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        """A seeded subset (``sample``) of the problems, reshuffled each pass."""
        rng = random.Random(seed)
        chosen = seeded_subset(self.problems, self.sample, rng)
        nonce = resolve_nonce(self.nonce)
        for number, problem in enumerate(endless(chosen, rng)):
            yield make_request(
                f"math-{problem.line}",
                f"{unique_tag(nonce, number)}{INSTRUCTION}\n\nProblem: {problem.question}",
                suite=self.name,
                reference={"answer": format_number(problem.answer), "line": problem.line},
                max_tokens=self.max_tokens,
            )

    def score(self, request: WorkloadRequest, record: RequestRecord) -> Score:
        """1.0 when the final number equals the expected one exactly (3/4 == 0.75), else 0.0 and why."""
        try:
            expected = parse_number(str((request.reference or {})["answer"]))
        except (KeyError, TypeError):
            expected = None
        if expected is None:
            return Score(0.0, f"bad reference: {request.reference!r}"[:200])
        if not record.output_text.strip():
            return Score(0.0, "empty answer" + cut_off_note(record.finish_reason))
        got, how = extract_answer(record.output_text)
        if got is None:
            return Score(0.0, "no number in the answer" + cut_off_note(record.finish_reason))
        if how == "last number" and record.finish_reason == "length":
            return Score(0.0, "no final answer" + cut_off_note(record.finish_reason))  # mid-working, not an answer
        if got == expected:
            return Score(1.0, "ok")
        return Score(
            0.0, f"expected {format_number(expected)}, got {format_number(got)}" + cut_off_note(record.finish_reason)
        )
