"""What a workload suite is: requests that carry their own scorer.

A suite yields ``WorkloadRequest``s tagged with the suite's name and a ``reference`` (whatever its scorer
needs: the expected answer, the planted facts, the test code). After a request finishes, the suite's
``score`` turns the record's output into a number in [0, 1] with a reason, so a fast wrong answer is never
mistaken for a good one. Scoring is pure (no network); code execution goes through ``tokenrace.sandbox``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from tokenrace.records import RequestRecord
from tokenrace.workloads import WorkloadRequest


@dataclass(frozen=True, slots=True)
class Score:
    value: float  # 0.0 (wrong) .. 1.0 (right); partial credit where the suite defines it
    reason: str = ""  # why: "ok", "no number in the answer", "test failed: AssertionError ..."


class Suite(Protocol):
    name: str
    description: str

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        """Requests in a seeded order; a finite dataset is cycled. Each has ``suite`` and ``reference`` set."""
        ...

    def score(self, request: WorkloadRequest, record: RequestRecord) -> Score | None:
        """Grade one finished, successful request (never raises: unparseable output scores 0 with a
        reason). None: the suite does not score (chat)."""
        ...


class SuiteError(ValueError):
    """A suite cannot run here (a missing dataset package names its `pip install`), or bad options."""
