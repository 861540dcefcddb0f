"""Live gateway traffic, summed like a public routing ranking: token volume and share per provider, model,
endpoint, route or key, with requests, error rate, cost and latency percentiles beside it.

Only runs written by ``tokenrace serve`` (``workload == "gateway"``) count: a benchmark's load is synthetic
and would drown the real traffic. A record's time is its run's ``started_at`` plus its ``sent_s``, so
``--since`` cuts inside a long-running gateway process rather than at its start.

Tokens follow :mod:`tokenrace.pricing` (``P`` and ``O`` of "Token counts of one request"): a failed
request counts what the server reported, nothing more. Cost is the ``cost_usd`` the gateway stored with
each record; a record without one (unknown price) is counted as ``unpriced``. Latency percentiles are
over completed requests, with :func:`tokenrace.metrics.describe`'s method.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tokenrace.config import Price
from tokenrace.metrics import describe, e2e_ms, output_speed_tps, ttft_ms
from tokenrace.pricing import provider_for_url, request_cost
from tokenrace.records import FAILED, GATEWAY_WORKLOAD, OK, RequestRecord, RunInfo
from tokenrace.store import Store

if TYPE_CHECKING:
    from rich.console import Group

__all__ = ["BY_KEYS", "GATEWAY_WORKLOAD", "UsageReport", "UsageRow", "gateway_records", "usage_report", "usage_table"]

BY_KEYS = ("provider", "model", "endpoint", "route", "key")
SELF_HOSTED = "self-hosted"  # an endpoint whose host is no catalog provider (localhost, your own vLLM)
UNKNOWN = "unknown"  # no base_url stored for the endpoint
NO_KEY = "(no key)"  # a gateway without keys
NO_ROUTE = "(none)"

_COUNTS_ONLY = Price(input=0.0, output=0.0)  # request_cost at $0: the billed token counts


@dataclass(slots=True)
class UsageRow:
    """One group's traffic; ``share`` is its part of every token in the selection."""

    group: str
    requests: int
    failed: int
    error_rate: float | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    share: float | None
    cost_usd: float | None  # the known costs summed; None when no request of the group has one
    unpriced: int  # requests stored without a cost
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    e2e_p50_ms: float | None
    e2e_p95_ms: float | None
    output_speed_p50_tps: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class UsageReport:
    by: str
    since_s: float | None  # unix seconds; None: everything stored
    runs: list[str]  # gateway runs with at least one record in the selection
    first_s: float | None  # unix time of the earliest and latest selected record
    last_s: float | None
    total: UsageRow
    rows: list[UsageRow]  # most tokens first

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.since_s,
            "first": self.first_s,
            "last": self.last_s,
            "runs": self.runs,
            "total": self.total.as_dict(),
            "rows": [r.as_dict() for r in self.rows],
        }


def record_time(run: RunInfo, record: RequestRecord) -> float:
    """Unix seconds the request was sent (scheduled, if it never was)."""
    return run.started_at + (record.sent_s if record.sent_s is not None else record.scheduled_s)


def gateway_records(store: Store, since_s: float | None = None) -> Iterator[tuple[RunInfo, RequestRecord]]:
    """Every gateway record sent at or after ``since_s``, with its run, oldest run first."""
    for run in reversed(store.list_runs(None)):
        if run.workload != GATEWAY_WORKLOAD:
            continue
        if since_s is not None and run.finished_at is not None and run.finished_at < since_s:
            continue
        for record in store.records(run.run_id):
            if since_s is None or record_time(run, record) >= since_s:
                yield run, record


def _endpoint_base_url(run: RunInfo, endpoint: str) -> str | None:
    """The endpoint's base_url as the gateway stored it in the run config (a dict by name, or a list)."""
    endpoints = (run.config or {}).get("endpoints")
    entry: Any = None
    if isinstance(endpoints, dict):
        entry = endpoints.get(endpoint)
    elif isinstance(endpoints, list):
        entry = next((e for e in endpoints if isinstance(e, dict) and e.get("name") == endpoint), None)
    url = entry.get("base_url") if isinstance(entry, dict) else None
    return url if isinstance(url, str) and url else None


class _Grouper:
    """The group name of a record; providers are looked up once per (run, endpoint)."""

    def __init__(self, by: str) -> None:
        if by not in BY_KEYS:
            raise ValueError(f"unknown --by {by!r}; valid: {', '.join(BY_KEYS)}")
        self.by = by
        self._providers: dict[tuple[str, str], str] = {}

    def __call__(self, run: RunInfo, record: RequestRecord) -> str:
        if self.by == "model":
            return record.model
        if self.by == "endpoint":
            return record.endpoint
        if self.by == "route":
            route = record.extra.get("route")
            return str(route) if route else NO_ROUTE
        if self.by == "key":
            key_id = record.extra.get("key_id")
            return str(key_id) if key_id else NO_KEY
        cache_key = (run.run_id, record.endpoint)
        provider = self._providers.get(cache_key)
        if provider is None:
            url = _endpoint_base_url(run, record.endpoint)
            provider = UNKNOWN if url is None else (provider_for_url(url) or SELF_HOSTED)
            self._providers[cache_key] = provider
        return provider


def _cost(record: RequestRecord) -> float | None:
    value = record.extra.get("cost_usd")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _row(group: str, records: list[RequestRecord], all_tokens: int) -> UsageRow:
    prompt = completion = unpriced = 0
    cost: float | None = None
    for r in records:
        billed = request_cost(r, _COUNTS_ONLY)
        if billed is not None:
            prompt += billed.input_tokens
            completion += billed.output_tokens
        c = _cost(r)
        if c is None:
            unpriced += 1
        else:
            cost = (cost or 0.0) + c
    ok = [r for r in records if r.status == OK]
    ttft = describe([v for r in ok if (v := ttft_ms(r)) is not None])
    e2e = describe([v for r in ok if (v := e2e_ms(r)) is not None])
    speed = describe([v for r in ok if (v := output_speed_tps(r)) is not None])
    failed = sum(1 for r in records if r.status == FAILED)
    total = prompt + completion
    return UsageRow(
        group=group,
        requests=len(records),
        failed=failed,
        error_rate=failed / len(records) if records else None,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        share=total / all_tokens if all_tokens else None,
        cost_usd=cost,
        unpriced=unpriced,
        ttft_p50_ms=ttft["p50"],
        ttft_p95_ms=ttft["p95"],
        e2e_p50_ms=e2e["p50"],
        e2e_p95_ms=e2e["p95"],
        output_speed_p50_tps=speed["p50"],
    )


def usage_report(store: Store, *, by: str = "provider", since_s: float | None = None) -> UsageReport:
    """Gateway traffic since ``since_s`` (unix seconds; None: all), one row per ``by`` group."""
    grouper = _Grouper(by)
    groups: dict[str, list[RequestRecord]] = {}
    everything: list[RequestRecord] = []
    runs: list[str] = []
    first_s: float | None = None
    last_s: float | None = None
    for run, record in gateway_records(store, since_s):
        groups.setdefault(grouper(run, record), []).append(record)
        everything.append(record)
        if not runs or runs[-1] != run.run_id:
            runs.append(run.run_id)
        at = record_time(run, record)
        first_s = at if first_s is None else min(first_s, at)
        last_s = at if last_s is None else max(last_s, at)
    total = _row("total", everything, 0)
    total.share = 1.0 if total.total_tokens else None
    rows = [_row(name, members, total.total_tokens) for name, members in groups.items()]
    rows.sort(key=lambda r: (-r.total_tokens, -r.requests, r.group))
    return UsageReport(by=by, since_s=since_s, runs=runs, first_s=first_s, last_s=last_s, total=total, rows=rows)


# --- rendering ------------------------------------------------------------------------------------------


def _tokens(n: int) -> str:
    """1234567 -> 1.23M: volumes span from a few calls to billions of tokens."""
    for bound, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= bound:
            return f"{n / bound:.3g}{suffix}"
    return str(n)


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _usd(row: UsageRow) -> str:
    if row.cost_usd is None:
        return "unpriced" if row.unpriced else "–"
    digits = 4 if row.cost_usd < 10 else 2
    text = "0" if row.cost_usd == 0 else f"{row.cost_usd:,.{digits}f}"
    return text + ("*" if row.unpriced else "")


def _when(unix_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix_s))


FULL_WIDTH = 132  # columns the full table needs; narrower terminals get the compact one


def usage_table(report: UsageReport, width: int | None = None) -> Group:
    """The report as a terminal table, groups by token volume, the total last.

    Below FULL_WIDTH columns the prompt/completion split and the p95s are left out rather than truncated.
    """
    from rich import box  # rich only when rendering: the gateway imports this module for its records
    from rich.console import Group
    from rich.table import Table

    full = width is None or width >= FULL_WIDTH
    t = report.total
    period = f"{_when(report.first_s)} – {_when(report.last_s)}" if report.first_s and report.last_s else ""
    cost = "cost unknown" if t.cost_usd is None else f"${_usd(t)}"
    title = (
        f"[bold]gateway usage by {report.by}[/]: {t.requests:,} requests, {_tokens(t.total_tokens)} tokens, "
        f"{cost} · {period} · {len(report.runs)} gateway run{'s' * (len(report.runs) != 1)}"
    )
    columns: list[tuple[str, Callable[[UsageRow], str]]] = [
        ("share", lambda r: _pct(r.share)),
        ("tokens", lambda r: _tokens(r.total_tokens)),
    ]
    if full:
        columns += [
            ("prompt", lambda r: _tokens(r.prompt_tokens)),
            ("completion", lambda r: _tokens(r.completion_tokens)),
        ]
    columns += [
        ("requests", lambda r: f"{r.requests:,}"),
        ("errors", lambda r: _pct(r.error_rate)),
        ("cost $", _usd),
        ("TTFT p50", lambda r: _num(r.ttft_p50_ms)),
    ]
    columns += [("p95", lambda r: _num(r.ttft_p95_ms))] * full
    columns += [("E2E p50", lambda r: _num(r.e2e_p50_ms))]
    columns += [("p95", lambda r: _num(r.e2e_p95_ms))] * full
    columns += [("tok/s p50", lambda r: _num(r.output_speed_p50_tps, 1))]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(report.by, no_wrap=True)
    for name, _ in columns:
        table.add_column(name, justify="right", no_wrap=True)
    for i, row in enumerate([*report.rows, t]):
        table.add_row(row.group, *(cell(row) for _, cell in columns), end_section=i == len(report.rows) - 1)
    notes = [
        "share: of all tokens (prompt + completion) · errors: failed / requests · TTFT/E2E in ms over completed "
        "requests · tok/s: output speed per request · live gateway traffic only (`tokenrace bench` runs excluded)"
    ]
    if t.unpriced:
        what = "1 request has" if t.unpriced == 1 else f"{t.unpriced:,} requests have"
        notes.append(f"* {what} no price (set price in tokenrace.yaml): left out of the cost")
    return Group(title, table, *(f"[dim]{n}[/]" for n in notes))
