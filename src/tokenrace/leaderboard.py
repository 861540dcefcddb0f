"""The leaderboard: one row per endpoint, overall and per suite, pooled over the selected runs of the store.

Benchmarks and (later) live gateway traffic write the same records into the same store, so a row pools
every measured request of an endpoint in the selection. Latency and speed are percentiles of the pooled
requests; throughput is a property of a load level, so a row shows the best throughput any one of its
runs reached and the load it was measured at. Every column is defined in ``docs/metrics.md``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tokenrace.bench import run_price
from tokenrace.config import Price
from tokenrace.metrics import confidence_interval_95, describe, e2e_ms, measurement_window, output_speed_tps, ttft_ms
from tokenrace.pricing import price_for_stored, run_cost, safe_ratio
from tokenrace.records import FAILED, GATEWAY_WORKLOAD, OK, PHASE_WARMUP, RequestRecord, RunInfo
from tokenrace.store import Store

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


UNPRICED = "unknown: set price in tokenrace.yaml"
FINISHED = ("complete", "interrupted")  # run statuses a leaderboard pools by default
SORT_KEYS: dict[str, tuple[str, bool]] = {  # --sort name -> (Row attribute, higher is better)
    "speed": ("output_speed_p50", True),
    "ttft": ("ttft_p50_ms", False),
    "ttft95": ("ttft_p95_ms", False),
    "e2e": ("e2e_p50_ms", False),
    "e2e95": ("e2e_p95_ms", False),
    "throughput": ("throughput_tps", True),
    "quality": ("quality", True),
    "cost": ("usd_per_1m_tokens", False),
    "speed-per-usd": ("speed_per_usd", True),
}


class EmptySelectionError(ValueError):
    """Nothing to rank: the message says what to run first."""


def select_runs(
    store: Store,
    *,
    run_ids: Sequence[str] | None = None,
    since_s: float | None = None,
    endpoints: Sequence[str] | None = None,
) -> list[RunInfo]:
    """The runs a leaderboard or report covers, newest first.

    Named runs are taken as they are (unique prefixes work; an unknown id raises the store's error).
    Otherwise every finished or interrupted run, optionally since a unix time and of some endpoints: a
    run still "running" (or killed mid-way) and a failed one (a probe that found the endpoint down) are
    not results to rank.
    """
    if run_ids:
        runs = [store.get_run(run_id) for run_id in run_ids]
        if endpoints:
            runs = [r for r in runs if r.endpoint in endpoints]
    else:
        runs = [r for r in store.list_runs(None, since=since_s, endpoints=endpoints) if r.status in FINISHED]
    if not runs:
        if store.list_runs(1):
            raise EmptySelectionError(
                f"no finished runs match in {store.location} "
                "(check --since/--endpoints; `tokenrace runs` lists what is stored)"
            )
        raise EmptySelectionError(f"{store.location} has no runs yet: run `tokenrace demo` or `tokenrace bench` first")
    return runs


def cost_text(value: float | None, price_source: str, currency: str = "") -> str:
    """A row's cost for people: "unpriced" when no price is known, "free" at $0, 4 decimals under 10."""
    if value is None:
        return "unpriced" if price_source.startswith("unknown") else "–"
    if value == 0:
        return "free"
    return f"{currency}{value:,.4f}" if value < 10 else f"{currency}{value:,.2f}"


def with_feedback(store: Store, run_id: str, records: Sequence[RequestRecord]) -> list[RequestRecord]:
    """Live traffic is scored by its clients: a gateway call's quality is its latest ``/v1/feedback`` score.

    Copies of the records that received one (a record is written once and never rewritten; the feedback
    lives in its own table), the others as they are.
    """
    scores = {f.request_id: f.score for f in store.feedback(run_id)}  # oldest first: the latest wins
    if not scores:
        return list(records)
    out = []
    for record in records:
        score = scores.get(record.extra.get("request_id")) if record.quality is None else None
        out.append(replace(record, quality=float(score)) if score is not None else record)
    return out


def build_leaderboard(
    store: Store, runs: Iterable[RunInfo], records: Mapping[str, Sequence[RequestRecord]] | None = None
) -> Leaderboard:
    """Pool the records of ``runs`` per endpoint (and per endpoint and suite) into rows, Pareto front marked.

    ``records`` (run id -> records) saves reading them again when the caller already has them.
    """
    runs = list(runs)
    groups: dict[tuple[str, str], _Group] = {}
    for run in runs:
        loaded = records[run.run_id] if records is not None else store.records(run.run_id)
        if run.workload == GATEWAY_WORKLOAD:
            loaded = with_feedback(store, run.run_id, loaded)
        for name, part, price, source, price_per_hour, live in _endpoint_parts(run, loaded):
            window = measurement_window(part)
            duration_s = window[1] - window[0] if window else None
            by_suite: dict[str, list[RequestRecord]] = {}
            for record in part:
                if record.suite:
                    by_suite.setdefault(record.suite, []).append(record)
            # live traffic has no load level of its own: its rate is whatever the clients sent
            throughput = None if live else _run_throughput(run, part, duration_s)
            for suite, subset in [(OVERALL, part), *sorted(by_suite.items())]:
                group = groups.setdefault((name, suite), _Group(name, suite))
                group.add(
                    run,
                    subset,
                    price,
                    source,
                    price_per_hour,
                    # the hardware's hour is shared by the suites of a mixed run in proportion to their requests
                    None if duration_s is None else duration_s * len(subset) / len(part),
                    # a throughput belongs to one load: a suite gets one only from a run of that suite alone
                    throughput if suite == OVERALL or len(subset) == len(part) else None,
                )
    rows = [group.row() for group in groups.values()]
    rows.sort(key=lambda r: (r.suite != OVERALL, r.suite, -(r.output_speed_p50 or 0.0), r.endpoint))
    for suite in {r.suite for r in rows}:
        mark_pareto([r for r in rows if r.suite == suite])
    return Leaderboard(rows=rows, runs=runs)


def mark_pareto(rows: Sequence[Row]) -> None:
    """Set ``pareto`` on the rows no other row dominates on (speed up, quality up, cost down).

    A row dominates another when it is at least as good on all three and strictly better on one. A value
    that was not measured counts as the worst possible (so an unscored endpoint can still be on the front
    by speed or price, but never by quality); a row without a completed request is never on the front.
    """
    points = [(_objectives(r), r) for r in rows]
    for mine, row in points:
        row.pareto = row.completed > 0 and not any(
            other is not row and other.completed > 0 and _dominates(theirs, mine) for theirs, other in points
        )


def _objectives(row: Row) -> tuple[float, float, float]:
    """Larger is better on each axis."""
    return (
        row.output_speed_p50 if row.output_speed_p50 is not None else -math.inf,
        row.quality if row.quality is not None else -math.inf,
        -row.usd_per_1m_tokens if row.usd_per_1m_tokens is not None else -math.inf,
    )


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def sort_rows(rows: Iterable[Row], key: str) -> list[Row]:
    """Best first by ``key`` (a :data:`SORT_KEYS` name); rows missing the value go last."""
    if key not in SORT_KEYS:
        raise ValueError(f"unknown sort key {key!r}; valid: {', '.join(SORT_KEYS)}")
    attribute, higher_better = SORT_KEYS[key]
    known = [r for r in rows if getattr(r, attribute) is not None]
    unknown = [r for r in rows if getattr(r, attribute) is None]
    known.sort(key=lambda r: getattr(r, attribute), reverse=higher_better)
    return known + unknown


def _endpoint_parts(
    run: RunInfo, records: Sequence[RequestRecord]
) -> list[tuple[str, list[RequestRecord], Price | None, str, float | None, bool]]:
    """(endpoint, its measured records, price, price source, price per hour, live?) for one run.

    A benchmark run measures one endpoint at the run's price. A gateway run holds live traffic to many
    upstreams: its records are split by the endpoint that answered, each priced from that endpoint's
    entry in the run's stored config (same rules as a benchmark).
    """
    measured = [r for r in records if r.phase != PHASE_WARMUP]
    if not measured:
        return []
    config = run.config or {}
    if run.workload != GATEWAY_WORKLOAD:
        price, source = run_price(run)
        hourly = (config.get("endpoint") or {}).get("price_per_hour")
        return [(run.endpoint, measured, price, source, hourly, False)]
    by_endpoint: dict[str, list[RequestRecord]] = {}
    for record in measured:
        by_endpoint.setdefault(record.endpoint, []).append(record)
    parts = []
    for name, part in by_endpoint.items():
        endpoint = (config.get("endpoints") or {}).get(name) or {}
        price, source = price_for_stored(endpoint, part[0].model)
        parts.append((name, part, price, source, endpoint.get("price_per_hour"), True))
    return parts


def _run_throughput(run: RunInfo, records: list[RequestRecord], duration_s: float | None) -> tuple[float, str] | None:
    """Output tok/s of the whole run and the load it ran at (the stored summary's figure when present)."""
    summary = run.summary or {}
    value = (summary.get("throughput") or {}).get("output_tokens_per_s")
    if value is None and duration_s:
        value = sum(r.output_tokens or 0 for r in records if r.status == OK) / duration_s
    if value is None:
        return None
    profile = run.profile or {}
    if profile.get("rate"):
        load = f"{profile['rate']:g} req/s"
    elif profile.get("concurrency"):
        load = f"c={profile['concurrency']}"
    else:
        load = str(profile.get("kind") or "?")
    return float(value), load


class _Group:
    """The records of one (endpoint, suite) across runs, and the cost figures of each run's share."""

    def __init__(self, endpoint: str, suite: str) -> None:
        self.endpoint = endpoint
        self.suite = suite
        self.model = ""
        self.run_ids: list[str] = []
        self.records: list[RequestRecord] = []
        self.sources: set[str] = set()
        self.unpriced = False
        self.total_usd = 0.0
        self.tokens = 0
        self.output_tokens = 0
        self.priced_requests = 0
        self.throughput: tuple[float, str] | None = None

    def add(
        self,
        run: RunInfo,
        records: list[RequestRecord],
        price: Price | None,
        source: str,
        price_per_hour: float | None,
        duration_s: float | None,
        throughput: tuple[float, str] | None,
    ) -> None:
        self.run_ids.append(run.run_id)
        self.records.extend(records)
        self.model = self.model or str(((run.config or {}).get("endpoint") or {}).get("model") or records[0].model)
        self.sources.add(source)
        cost = run_cost(records, price, price_per_hour=price_per_hour, duration_s=duration_s)
        if cost["total_usd"] is None:
            self.unpriced = True
        else:
            self.total_usd += cost["total_usd"]
        self.tokens += cost["input_tokens"] + cost["output_tokens"]
        self.output_tokens += cost["output_tokens"]
        self.priced_requests += cost["requests_priced"]
        if throughput is not None and (self.throughput is None or throughput[0] > self.throughput[0]):
            self.throughput = throughput

    def row(self) -> Row:
        ok = [r for r in self.records if r.status == OK]
        ttft = _stats(ttft_ms(r) for r in ok)
        e2e = _stats(e2e_ms(r) for r in ok)
        speed = _stats(output_speed_tps(r) for r in ok)
        scores = [float(r.quality) for r in ok if r.quality is not None]
        prompt = [p for r in ok if (p := r.usage_prompt_tokens or r.input_tokens_requested)]
        output = [n for r in ok if (n := r.output_tokens) is not None]
        total = None if self.unpriced else self.total_usd
        per_1m = safe_ratio(total, self.tokens, 1e6)
        row = Row(
            endpoint=self.endpoint,
            suite=self.suite,
            model=self.model,
            runs=self.run_ids,
            completed=len(ok),
            failed=sum(r.status == FAILED for r in self.records),
            output_speed_p50=speed["p50"],
            ttft_p50_ms=ttft["p50"],
            ttft_p95_ms=ttft["p95"],
            e2e_p50_ms=e2e["p50"],
            e2e_p95_ms=e2e["p95"],
            throughput_tps=self.throughput[0] if self.throughput else None,
            throughput_at=self.throughput[1] if self.throughput else None,
            quality=sum(scores) / len(scores) if scores else None,
            quality_ci95=confidence_interval_95(scores)[:2] if scores else None,
            quality_n=len(scores),
            usd_per_1m_tokens=per_1m,
            usd_per_1m_output_tokens=safe_ratio(total, self.output_tokens, 1e6),
            usd_per_1k_requests=safe_ratio(total, self.priced_requests, 1000.0),
            price_source="; ".join(sorted(self.sources))
            if not self.unpriced
            else "unknown: set price in tokenrace.yaml",
            prompt_tokens_mean=sum(prompt) / len(prompt) if prompt else None,
            output_tokens_mean=sum(output) / len(output) if output else None,
        )
        if row.output_speed_p50 is not None and per_1m:  # free (0) or unpriced: no ratio to show
            row.speed_per_usd = row.output_speed_p50 / per_1m
        return row


def _stats(values: Iterable[float | None]) -> dict[str, float | None]:
    stats = describe([v for v in values if v is not None])
    return {"p50": stats["p50"], "p95": stats["p95"]}


# Columns of the plain-text exports, in order: (header, Row attribute).
EXPORT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("endpoint", "endpoint"),
    ("suite", "suite"),
    ("model", "model"),
    ("pareto", "pareto"),
    ("completed", "completed"),
    ("failed", "failed"),
    ("output_speed_p50_tps", "output_speed_p50"),
    ("ttft_p50_ms", "ttft_p50_ms"),
    ("ttft_p95_ms", "ttft_p95_ms"),
    ("e2e_p50_ms", "e2e_p50_ms"),
    ("e2e_p95_ms", "e2e_p95_ms"),
    ("throughput_tps", "throughput_tps"),
    ("throughput_at", "throughput_at"),
    ("quality", "quality"),
    ("quality_n", "quality_n"),
    ("usd_per_1m_tokens", "usd_per_1m_tokens"),
    ("usd_per_1m_output_tokens", "usd_per_1m_output_tokens"),
    ("usd_per_1k_requests", "usd_per_1k_requests"),
    ("speed_per_usd", "speed_per_usd"),
    ("price_source", "price_source"),
)


def rows_as_csv(rows: Iterable[Row]) -> str:
    """Full precision, one header line; empty cells for values that were not measured."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([header for header, _ in EXPORT_COLUMNS])
    for row in rows:
        writer.writerow(["" if (v := getattr(row, attr)) is None else v for _, attr in EXPORT_COLUMNS])
    return out.getvalue()


def rows_as_markdown(rows: Iterable[Row]) -> str:
    """A GitHub table for a README or a pull request (rounded for reading; the CSV keeps full precision)."""
    headers = (
        "endpoint",
        "suite",
        "front",
        "speed tok/s",
        "TTFT p50 ms",
        "TTFT p95 ms",
        "E2E p50 ms",
        "E2E p95 ms",
        "throughput tok/s",
        "quality",
        "$/1M tok",
        "$/1k req",
    )
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in range(12)) + "|"]
    for r in rows:
        cells = (
            r.endpoint.replace("|", "\\|"),
            r.suite,
            "★" if r.pareto else "",
            _num(r.output_speed_p50, 1),
            _num(r.ttft_p50_ms, 1),
            _num(r.ttft_p95_ms, 1),
            _num(r.e2e_p50_ms, 0),
            _num(r.e2e_p95_ms, 0),
            f"{_num(r.throughput_tps, 1)} @{r.throughput_at}" if r.throughput_tps is not None else "–",
            f"{r.quality:.3f} (n={r.quality_n})" if r.quality is not None else "–",
            _num(r.usd_per_1m_tokens, 4),
            _num(r.usd_per_1k_requests, 4),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"
