"""Terminal rendering of summaries and run lists (rich). Pure presentation: no metric is computed here."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table

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


def leaderboard_table(summaries: list[dict[str, Any]], title: str = "leaderboard") -> Table:
    """One row per run, fastest output speed first: the numbers people compare models by."""
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.caption = (
        "speed: output tok/s per request (p50); throughput: output tok/s of all streams together at the given "
        "concurrency; server: llama.cpp's own decode speed (p50); "
        "quality: mean score over the scored suites (n answers)"
    )
    table.add_column("endpoint", no_wrap=True)
    for column in ("speed", "TTFT p50 ms", "TTFT p95 ms", "E2E p50 ms", "throughput", "req/s", "server", "ok/failed"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("quality")

    def speed(summary: dict[str, Any]) -> float:
        return summary["metrics"]["output_speed_tps"].get("p50") or 0.0

    for summary in sorted(summaries, key=speed, reverse=True):
        metrics = summary["metrics"]
        throughput = summary["throughput"]
        requests = summary["requests"]
        concurrency = (summary.get("profile") or {}).get("concurrency")
        server = (summary.get("server") or {}).get("decode_tps") or {}
        table.add_row(
            summary["endpoint"],
            _fmt(metrics["output_speed_tps"].get("p50"), 1),
            _fmt(metrics["ttft_ms"].get("p50"), 1),
            _fmt(metrics["ttft_ms"].get("p95"), 1),
            _fmt(metrics["e2e_ms"].get("p50"), 0),
            _fmt(throughput["output_tokens_per_s"], 1) + (f" @{concurrency}" if concurrency else ""),
            _fmt(throughput["requests_per_s"]),
            _fmt(server.get("p50"), 1),
            f"{requests['completed']}/{requests['failed']}",
            _quality_cell(summary.get("quality")),
        )
    return table


def _quality_cell(quality: dict[str, Any] | None) -> str:
    if not quality:
        return "–"
    overall = quality["overall"]
    return f"{overall['mean']:.2f} (n={overall['n']})"
