"""Terminal rendering of summaries and run lists (rich). Pure presentation: no metric is computed here."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table

from tokenrace.leaderboard import OVERALL, Row, cost_text
from tokenrace.recommend import Recommendation
from tokenrace.records import RunInfo

_METRIC_ROWS = (
    ("ttft_ms", "TTFT", "ms"),
    ("ttfat_ms", "TTFAT", "ms"),
    ("output_speed_tps", "output speed", "tok/s"),
    ("tpot_ms", "TPOT", "ms"),
    ("itl_ms", "ITL", "ms"),
    ("e2e_ms", "E2E", "ms"),
    ("schedule_lag_ms", "schedule lag", "ms"),
)
_STATS = ("mean", "std", "min", "p50", "p90", "p95", "p99", "p999", "max")


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) >= 1000:
            digits = min(digits, 0)
        elif abs(value) >= 100:
            digits = min(digits, 1)
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def summary_renderable(summary: dict[str, Any]) -> Group:
    """The final table of a run: counts, throughput, every latency distribution, tokens, errors."""
    requests = summary["requests"]
    throughput = summary["throughput"]
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("run", summary.get("run_id", "–"))
    head.add_row("endpoint", summary.get("endpoint", "–"))
    head.add_row("workload", summary.get("workload", "–"))
    profile = summary.get("profile") or {}
    head.add_row("profile", str(profile.get("label") or profile.get("kind", "–")))
    head.add_row(
        "requests",
        f"{requests['completed']} completed, {requests['failed']} failed, "
        f"{requests['incomplete']} incomplete, {requests.get('warmup', 0)} warmup (excluded)",
    )
    head.add_row(
        "throughput",
        f"{_fmt(throughput['requests_per_s'])} req/s, {_fmt(throughput['output_tokens_per_s'], 1)} output tok/s"
        f" over {_fmt(summary.get('duration_s'))} s",
    )
    tokens = summary.get("tokens") or {}
    discrepancy = tokens.get("discrepancy_pct")
    head.add_row(
        "output tokens",
        f"server {_fmt(tokens.get('server_output'))}, client (cl100k) {_fmt(tokens.get('client_output'))}"
        + (f", discrepancy {discrepancy:+.2f}%" if discrepancy is not None else ""),
    )
    goodput = summary.get("goodput")
    if goodput:
        head.add_row(
            "goodput",
            f"{_fmt(goodput.get('good_requests'))} requests met the SLO "
            f"({_fmt((goodput.get('good_fraction') or 0) * 100, 1)}%), "
            f"{_fmt(goodput.get('goodput_requests_per_s'))} req/s",
        )
    cost = summary.get("cost") or {}
    if cost.get("total_usd") is not None:
        line = f"${cost['total_usd']:.6f} for the run ({cost.get('price_source')})"
        if cost.get("cost_per_1m_output_tokens_usd") is not None:
            line += f", ${cost['cost_per_1m_output_tokens_usd']:.4f} per 1M output tokens"
        if cost.get("quality_per_usd") is not None:
            line += f", quality per $ {cost['quality_per_usd']:,.1f}"
        head.add_row("cost", line)
    elif cost:
        head.add_row("cost", str(cost.get("price_source")))
    quality = (summary.get("quality") or {}).get("overall")
    if quality:
        low, high = quality["ci95"]
        head.add_row("quality", f"{quality['mean']:.3f} mean score, 95% CI {low:.3f}–{high:.3f}, n={quality['n']}")
    errors = summary.get("errors") or {}
    if errors:
        head.add_row("errors", ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())))

    table = Table(
        title="latency and speed (successful, measured requests; TTFAT = time to first answer token)",
        title_justify="left",
    )
    table.add_column("metric")
    table.add_column("unit")
    for stat in _STATS:
        table.add_column(stat, justify="right")
    metrics = summary.get("metrics") or {}
    for key, label, unit in _METRIC_ROWS:
        stats = metrics.get(key)
        if not stats or not stats.get("count"):
            continue
        table.add_row(label, unit, *(_fmt(stats.get(s)) for s in _STATS))
    parts: list[Any] = [head, table]
    by_suite = summary.get("by_suite")
    if by_suite:
        parts.append(_suites_table(by_suite, (summary.get("quality") or {}).get("suites") or {}))
    server = summary.get("server")
    if server:
        # Server-side truth (llama.cpp's own timings) beside the client's measurement of the same streams.
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        decode = server.get("decode_tps") or {}
        prefill = server.get("prefill_tps") or {}
        if decode.get("count"):
            grid.add_row("server decode", f"{_fmt(decode.get('p50'), 1)} tok/s p50 (the engine's own timing)")
        if prefill.get("count"):
            grid.add_row("server prefill", f"{_fmt(prefill.get('p50'), 1)} tok/s p50")
        gap = server.get("client_vs_server_speed_pct")
        if gap is not None:
            grid.add_row("client vs server", f"client output speed {gap:+.2f}% from the server's figure (median)")
        parts.append(grid)
    return Group(*parts)


def _suites_table(by_suite: dict[str, Any], quality: dict[str, Any]) -> Table:
    """Speed and quality side by side per suite; rag rows per context length."""
    table = Table(title="by suite (quality: mean score with its 95% interval)", title_justify="left")
    for column in ("suite", "ok/failed", "prompt tok", "TTFT p50 ms", "TTFT p95 ms", "speed p50", "E2E p50 ms"):
        table.add_column(column, justify="left" if column == "suite" else "right")
    table.add_column("quality")

    def add(label: str, row: dict[str, Any], q: dict[str, Any] | None) -> None:
        if q:
            low, high = q["ci95"]
            shown = f"{q['mean']:.3f} [{low:.2f}–{high:.2f}] n={q['n']}"
        elif row.get("quality") is not None:
            shown = f"{row['quality']:.3f}"
        else:
            shown = "not scored"
        table.add_row(
            label,
            f"{row['completed']}/{row['failed']}",
            _fmt(row.get("prompt_tokens_mean"), 0),
            _fmt(row["ttft_ms"]["p50"], 1),
            _fmt(row["ttft_ms"]["p95"], 1),
            _fmt(row["output_speed_tps"]["p50"], 1),
            _fmt(row["e2e_ms"]["p50"], 0),
            shown,
        )

    for suite, row in by_suite.items():
        add(suite, row, quality.get(suite))
        tasks = row.get("tasks")
        if tasks:  # multi-turn tasks: the whole task is what a user waits for
            rate = tasks["success_rate"]
            table.add_row(
                f"  {suite} tasks",
                str(tasks["tasks"]),
                _fmt(tasks["prompt_tokens_mean"], 0),
                "",
                "",
                "",
                _fmt(tasks["task_e2e_ms"]["p50"], 0),
                f"success {rate:.2f}, {tasks['turns_mean']:.1f} turns, {tasks['tool_calls_mean']:.1f} calls"
                if rate is not None
                else f"{tasks['turns_mean']:.1f} turns",
            )
        for bucket, sub in (row.get("by_context") or {}).items():
            add(f"  {suite} {bucket}", sub, None)
    return table


def runs_table(runs: list[RunInfo]) -> Table:
    table = Table(title="runs (newest first)", title_justify="left")
    table.add_column("run id", no_wrap=True)
    for column in ("started", "status", "endpoint", "workload", "profile", "ok/failed", "req/s"):
        table.add_column(column)
    for run in runs:
        summary = run.summary or {}
        requests = summary.get("requests") or {}
        throughput = summary.get("throughput") or {}
        profile = run.profile or {}
        shape = profile.get("kind", "")
        if profile.get("rate"):
            shape += f" {profile['rate']:g}/s"
        if profile.get("concurrency"):
            shape += f" c={profile['concurrency']}"
        table.add_row(
            run.run_id,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started_at)),
            "running / incomplete" if run.status == "running" else run.status,
            run.endpoint,
            run.workload,
            shape,
            f"{requests.get('completed', '–')}/{requests.get('failed', '–')}",
            _fmt(throughput.get("requests_per_s")),
        )
    return table


def leaderboard_table(rows: Sequence[Row], title: str = "leaderboard") -> Group:
    """Endpoints side by side, one table per suite (``overall`` first); ★ marks the speed/quality/cost front.

    Columns no row of a table has a value for (throughput of a suite inside mixed runs, prices when every
    endpoint is a free local engine) are left out and said once below, so the table fits a terminal.
    """
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.suite, []).append(row)
    parts: list[Any] = [f"[bold]{title}[/]"] if title else []
    notes: list[str] = []
    for suite, members in groups.items():
        show_throughput = any(r.throughput_tps is not None for r in members)
        show_cost = any(r.usd_per_1m_tokens for r in members)  # some endpoint costs something
        show_quality = any(r.quality is not None for r in members)
        table = Table(title=suite, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("endpoint", no_wrap=True)
        columns = ["tok/s", "TTFT p50", "p95", "E2E p50", "p95"]
        columns += ["throughput"] * show_throughput + ["ok/fail"] + ["quality"] * show_quality
        columns += ["$/1M tok", "$/1k req", "speed/$"] if show_cost else []
        for column in columns:
            table.add_column(column, justify="right", no_wrap=True)
        for row in members:
            cells = [
                ("★ " if row.pareto else "  ") + row.endpoint,
                _fmt(row.output_speed_p50, 1),
                _fmt(row.ttft_p50_ms, 0),
                _fmt(row.ttft_p95_ms, 0),
                _fmt(row.e2e_p50_ms, 0),
                _fmt(row.e2e_p95_ms, 0),
            ]
            if show_throughput:
                cells.append(
                    f"{_fmt(row.throughput_tps, 1)} @{row.throughput_at}" if row.throughput_tps is not None else "–"
                )
            cells.append(f"{row.completed}/{row.failed}")
            if show_quality:
                cells.append(_quality(row))
            if show_cost:
                cells += [
                    cost_text(row.usd_per_1m_tokens, row.price_source),
                    cost_text(row.usd_per_1k_requests, row.price_source),
                    _fmt(row.speed_per_usd, 1) if row.speed_per_usd is not None else "–",
                ]
            table.add_row(*cells)
        parts.append(table)
        if not show_cost and suite == OVERALL:
            priced = {r.usd_per_1m_tokens for r in members}
            notes.append(
                "cost: every endpoint is free (a local engine without price_per_hour)"
                if priced == {0.0}
                else "cost: no price known (set price or price_per_hour in tokenrace.yaml)"
            )
    notes.append(
        "★ on the speed/quality/cost Pareto front of its suite · tok/s: output speed per request (p50) · "
        "TTFT/E2E in ms · throughput: output tok/s of all streams together, best run, at its load (a suite inside "
        "mixed runs has none) · quality: mean score [95% CI] · $/1M tok: blended at the measured "
        "input:output ratio · speed/$: tok/s ÷ $/1M tok (definitions: docs/metrics.md)"
    )
    parts.extend(f"[dim]{note}[/]" for note in notes)
    return Group(*parts)


def _quality(row: Row) -> str:
    if row.quality is None:
        return "–"
    if not row.quality_ci95:
        return f"{row.quality:.2f}"
    low, high = row.quality_ci95
    return f"{row.quality:.2f} [{low:.2f}–{high:.2f}]"


def recommendation_renderable(rec: Recommendation, limit: int = 5) -> Group:
    """The pick, the runners-up and why each other endpoint is out."""
    mix = ", ".join(f"{suite} {weight:.0%}" for suite, weight in rec.mix.items())
    limits = rec.constraints
    wanted = [
        f"quality ≥ {limits.min_quality:g}" if limits.min_quality is not None else "",
        f"≤ ${limits.max_cost_per_1m:g} per 1M tokens" if limits.max_cost_per_1m is not None else "",
        f"TTFT p95 ≤ {limits.max_p95_ttft_ms:g} ms on every suite" if limits.max_p95_ttft_ms is not None else "",
    ]
    wanted = [w for w in wanted if w]
    ranking = {"e2e": "E2E p50 of a typical call", "ttft": "TTFT p50", "speed": "output speed p50"}[rec.by]
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("mix", mix)
    head.add_row("limits", ", ".join(wanted) if wanted else "none")
    head.add_row("ranked by", f"{ranking}, weighted by the mix")
    parts: list[Any] = [head]
    if rec.best is not None:
        best = rec.best
        parts.append(
            f"[bold green]fastest for this mix: {best.endpoint}[/] — a typical call takes {_fmt(best.e2e_ms, 0)} ms "
            f"end to end (TTFT {_fmt(best.ttft_ms, 0)} ms, {_fmt(best.output_speed, 1)} tok/s)"
            + (f", quality {best.quality:.2f}" if best.quality is not None else "")
            + (f", ${best.usd_per_1m_tokens:.4f} per 1M tokens" if best.usd_per_1m_tokens else "")
        )
    else:
        parts.append("[bold red]none qualifies[/]" + (" — closest candidates below" if rec.excluded else ""))
    shown = rec.ranked[:limit] if rec.ranked else rec.excluded[:limit]
    if shown:
        table = Table(title="qualifying, best first" if rec.ranked else "closest candidates", title_justify="left")
        for column in ("#", "endpoint", "E2E ms", "TTFT ms", "speed", "worst TTFT p95", "quality", "$/1M tok"):
            table.add_column(column, justify="left" if column == "endpoint" else "right")
        table.add_column("why not" if not rec.ranked else "")
        for index, c in enumerate(shown, 1):
            table.add_row(
                str(index),
                c.endpoint,
                _fmt(c.e2e_ms, 0),
                _fmt(c.ttft_ms, 0),
                _fmt(c.output_speed, 1),
                f"{_fmt(c.worst_p95_ttft_ms, 0)} ({c.worst_p95_ttft_suite})" if c.worst_p95_ttft_suite else "–",
                f"{c.quality:.2f}" if c.quality is not None else "unscored",
                _fmt(c.usd_per_1m_tokens, 4) if c.usd_per_1m_tokens else ("free" if c.usd_per_1m_tokens == 0 else "–"),
                "; ".join(c.violations),
            )
        parts.append(table)
    out = [c for c in rec.excluded if rec.ranked or c not in shown]
    for c in out:
        parts.append(f"  out: [bold]{c.endpoint}[/] — {'; '.join(c.violations)}")
    for c in rec.incomplete:
        parts.append(
            f"  no data: [bold]{c.endpoint}[/] has not been measured on {', '.join(c.missing)} "
            f"(run `tokenrace bench -e {c.endpoint} --suite {','.join(c.missing)}`)"
        )
    for suite in rec.suites_without_data:
        parts.append(
            f"[yellow]no endpoint has data for {suite}[/]: run `tokenrace bench -e ENDPOINT --suite {suite}` "
            "for each candidate; nothing is guessed"
        )
    return Group(*parts)
