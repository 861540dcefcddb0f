"""Suites as a workload: ``--suite chat,coding,rag`` mixes their requests and scores each answer."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tokenrace.records import RequestRecord
from tokenrace.suites.base import Score, Suite, SuiteError
from tokenrace.workloads import WorkloadRequest


@dataclass
class SuiteWorkload:
    """Quacks like ``workloads.Workload`` (``name``, ``kind``, ``requests``) and adds ``score``."""

    suites: list[Suite]
    name: str
    kind: str = "suite"
    options: dict[str, Any] = field(default_factory=dict)

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        from tokenrace.suites import mixed_requests

        return mixed_requests(self.suites, seed)

    @property
    def multi_turn_suites(self) -> set[str]:
        """The suites here that run tasks over several turns (the agent suite)."""
        return {suite.name for suite in self.suites if hasattr(suite, "next_turn")}

    def next_turn(self, request: WorkloadRequest, record: RequestRecord) -> WorkloadRequest | None:
        suite = next((s for s in self.suites if s.name == request.suite), None)
        follow = getattr(suite, "next_turn", None)
        return follow(request, record) if follow is not None else None

    def score(self, request: WorkloadRequest, record: RequestRecord) -> Score | None:
        """The request's own suite grades it; a scorer that breaks its promise not to raise scores 0."""
        suite = next((s for s in self.suites if s.name == request.suite), None)
        if suite is None:
            return None
        try:
            score = suite.score(request, record)
        except Exception as exc:  # one bad answer must not end a run
            return Score(0.0, f"scorer error: {type(exc).__name__}: {exc}"[:300])
        if score is None or math.isnan(score.value):
            return None
        return score


def parse_suite_workload(spec: str, *, sample: int | None = None, max_context: int | None = None) -> SuiteWorkload:
    """``chat,coding,rag`` → the suites (unknown names list the valid ones)."""
    from tokenrace.suites import get_suite

    names = [name.strip() for name in spec.split(",") if name.strip()]
    suites = []
    for entry in names:
        name, _, argument = entry.partition(":")  # custom:PATH, math:PATH
        options: dict[str, Any] = {}
        if argument:
            options["path"] = argument
        elif name == "custom":
            raise SuiteError("the custom suite needs a file: --suite custom:prompts.jsonl")
        if sample is not None:
            options["sample"] = sample
        if name == "rag" and max_context is not None:
            options["max_context"] = max_context
        suites.append(get_suite(name, **options))
    label = "suite:" + ",".join(names) + (f" (sample {sample})" if sample else "")
    return SuiteWorkload(suites=suites, name=label, options={"suites": names, "sample": sample})
