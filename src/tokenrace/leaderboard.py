"""The leaderboard: one row per endpoint, overall and per suite, pooled over the selected runs of the store.

Benchmarks and (later) live gateway traffic write the same records into the same store, so a row pools
every measured request of an endpoint in the selection. Latency and speed are percentiles of the pooled
requests; throughput is a property of a load level, so a row shows the best throughput any one of its
runs reached and the load it was measured at. Every column is defined in ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tokenrace.records import RunInfo

OVERALL = "overall"  # the suite name of an endpoint's row over all its requests


@dataclass(slots=True)
class Row:
    """One endpoint over one suite (or ``overall``); None means "not measured", never zero."""

    endpoint: str
    suite: str
    model: str = ""
    runs: list[str] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    output_speed_p50: float | None = None  # tok/s per request, median
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p95_ms: float | None = None
    throughput_tps: float | None = None  # output tok/s of all streams together, best run of the row
    throughput_at: str | None = None  # the load it was measured at: "c=4", "10 req/s"
    quality: float | None = None  # mean score in [0, 1]
    quality_ci95: tuple[float, float] | None = None
    quality_n: int = 0
    usd_per_1m_tokens: float | None = None  # blended at the measured input:output ratio
    usd_per_1m_output_tokens: float | None = None
    usd_per_1k_requests: float | None = None  # what 1,000 requests of this suite cost
    speed_per_usd: float | None = None  # output_speed_p50 / usd_per_1m_tokens (None when free or unpriced)
    price_source: str = ""
    prompt_tokens_mean: float | None = None
    output_tokens_mean: float | None = None
    pareto: bool = False  # on the speed/quality/cost front of its group (same suite)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["quality_ci95"] = list(self.quality_ci95) if self.quality_ci95 else None
        return out


@dataclass(slots=True)
class Leaderboard:
    rows: list[Row]  # overall rows first, then per-suite rows
    runs: list[RunInfo]

    def overall(self) -> list[Row]:
        return [r for r in self.rows if r.suite == OVERALL]

    def suites(self) -> list[str]:
        return sorted({r.suite for r in self.rows if r.suite != OVERALL})

    def suite_rows(self, suite: str) -> list[Row]:
        return [r for r in self.rows if r.suite == suite]


def select_runs(
    store: Any,
    *,
    run_ids: Sequence[str] | None = None,
    since_s: float | None = None,
    endpoints: Sequence[str] | None = None,
) -> list[RunInfo]:
    """The runs a leaderboard or report covers (finished or interrupted; never one still running)."""
    raise NotImplementedError


def build_leaderboard(store: Any, runs: Iterable[RunInfo]) -> Leaderboard:
    """Pool the records of ``runs`` per endpoint (and per endpoint and suite) into rows, Pareto front marked."""
    raise NotImplementedError
