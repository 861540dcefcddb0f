"""The offline HTML report (``tokenrace report``): leaderboard and charts of the selected runs in one file.

The file must open anywhere, years later, with no network: the Vega, Vega-Lite and vega-embed libraries
are embedded once (``vl_convert.javascript_bundle``) and every chart's Vega-Lite spec, data included,
sits in the page as JSON. ``write_pngs`` renders the very same specs to PNG with ``vl_convert`` (no
browser). Everything read from the store (endpoint names, models, workloads, hosts) is user input and is
escaped before it reaches the HTML; inside the JSON, ``<``, ``>`` and ``&`` are escaped too so no value
can close the script element that holds it.

A router evaluation (``tokenrace router eval --json FILE``) adds a Routing section: the quality-vs-strong-share
curve of each router with the random and oracle baselines, and the APGR / CPT table, with the data and split it
was measured on (``tokenrace report --router-eval FILE``, or ``router eval --html`` for that section alone).
"""

from __future__ import annotations

import functools
import html
import itertools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenrace import __version__, charts
from tokenrace.charts import ContextBucket, Spec, SweepStep
from tokenrace.leaderboard import EmptySelectionError, Leaderboard, Row, build_leaderboard, cost_text, select_runs
from tokenrace.metrics import e2e_ms, summarize, ttft_ms
from tokenrace.monitor import monitor_series
from tokenrace.records import FAILED, GATEWAY_WORKLOAD, OK, PHASE_WARMUP, RequestRecord, RunInfo
from tokenrace.store import Store, json_dumps

__all__ = [
    "CHARTS",
    "ROUTER_EVAL_KIND",
    "ChartInfo",
    "NoRunsError",
    "ReportData",
    "ReportOutput",
    "chart_specs",
    "collect_report",
    "load_router_eval",
    "render_html",
    "render_routing_html",
    "routing_specs",
    "write_pngs",
    "write_report",
]

# What `tokenrace router eval --json` writes; the report refuses any other JSON.
ROUTER_EVAL_KIND = "tokenrace-router-eval"


class NoRunsError(LookupError):
    """Nothing to report; the message says which command produces data."""


@dataclass(slots=True)
class ReportData:
    """Everything the report shows, gathered from the store once; charts and HTML are pure functions of it."""

    leaderboard: Leaderboard
    ttft_ms: dict[str, list[float]]  # per endpoint: every completed measure-phase request, pooled over runs
    e2e_ms: dict[str, list[float]]
    sweep_steps: list[SweepStep]
    context_buckets: list[ContextBucket]
    monitor_points: list[Any]  # tokenrace.monitor.SeriesPoint (empty when that module is absent)
    requests_completed: int = 0
    requests_failed: int = 0
    requests_other: int = 0  # incomplete (cut off by the run's end or Ctrl-C)
    store_location: str = ""
    selection: str = "every finished run"
    generated_at: float = field(default_factory=time.time)

    @property
    def runs(self) -> list[RunInfo]:
        return self.leaderboard.runs

    def endpoints(self) -> list[str]:
        # a gateway run is labelled "gateway"; its requests carry the upstream that answered
        names = {r.endpoint for r in self.leaderboard.rows}
        names |= {run.endpoint for run in self.runs if run.workload != GATEWAY_WORKLOAD}
        names |= {str(charts.point_attr(p, "endpoint", "")) for p in self.monitor_points}
        return sorted(names)

    def colors(self) -> dict[str, str]:
        return charts.endpoint_colors(self.endpoints())

    def monitor_window_s(self) -> float:
        """Rolling-median window: five typical probe intervals (at least 5 min), so it smooths but follows."""
        gaps: list[float] = []
        by_endpoint: dict[str, list[float]] = {}
        for p in self.monitor_points:
            started = charts.point_attr(p, "started_at")
            if started is not None:
                by_endpoint.setdefault(str(charts.point_attr(p, "endpoint", "")), []).append(float(started))
        for times in by_endpoint.values():
            times.sort()
            gaps.extend(b - a for a, b in itertools.pairwise(times) if b > a)
        typical = statistics.median(gaps) if gaps else 60.0
        return max(300.0, 5 * typical)


@dataclass(frozen=True, slots=True)
class ChartInfo:
    """What a chart section says around its chart: its meaning, its exact definition, its source."""

    chart_id: str
    title: str
    caption: str
    definition: str
    command: str  # the command whose runs feed the chart
    empty: str  # shown instead of the chart when the selection has no data for it
    build: Callable[[ReportData, dict[str, str]], Spec | None]


def _speed_price(data: ReportData, colors: dict[str, str]) -> Spec | None:
    return charts.speed_price_chart(data.leaderboard.overall(), colors)


def _quality_speed(data: ReportData, colors: dict[str, str]) -> Spec | None:
    return charts.quality_speed_chart(data.leaderboard.overall(), colors)


def _ttft_cdf(data: ReportData, colors: dict[str, str]) -> Spec | None:
    return charts.latency_cdf_chart(data.ttft_ms, "ttft", colors)


def _e2e_cdf(data: ReportData, colors: dict[str, str]) -> Spec | None:
    return charts.latency_cdf_chart(data.e2e_ms, "e2e", colors)


def _sweep(data: ReportData, colors: dict[str, str]) -> Spec | None:
    return charts.sweep_chart(data.sweep_steps, colors)


def _context(data: ReportData, colors: dict[str, str]) -> Spec | None:
    return charts.context_chart(data.context_buckets, colors)


def _monitor(data: ReportData, colors: dict[str, str]) -> Spec | None:
    return charts.monitor_chart(data.monitor_points, colors, data.monitor_window_s())


CHARTS: tuple[ChartInfo, ...] = (
    ChartInfo(
        "speed-price",
        "Output speed vs price",
        "Each endpoint's median per-request output speed against what its tokens cost. Endpoints joined by the "
        "dashed line are on the speed–price front: no other endpoint is both cheaper and faster. Free and local "
        "endpoints sit at “free” on the left.",
        "y = p50 of output_speed_tps = (n − first_chunk_tokens) / (last_token_s − first_token_s) over completed "
        "requests; x = usd_per_1m_tokens = total cost · 10⁶ / (input + output tokens) of the endpoint's runs.",
        "tokenrace bench",
        "No endpoint has both a measured output speed and a known price: run `tokenrace bench`, and set `price:` "
        "in tokenrace.yaml for endpoints the price catalog does not know.",
        _speed_price,
    ),
    ChartInfo(
        "quality-speed",
        "Quality vs output speed",
        "Mean score of the scored suites against output speed. Bars are 95% confidence intervals of the mean: "
        "where two bars overlap, the difference in quality may be noise.",
        "y = mean quality score in [0, 1] over scored completed requests of every suite (95% CI: Wilson for "
        "pass/fail scores, else normal); x = p50 of output_speed_tps as above.",
        "tokenrace bench --suite chat,coding,math,structured,rag,tools",
        "No scored requests in the selected runs: run `tokenrace bench --suite chat,math,structured` "
        "(or `tokenrace demo`) to draw this chart.",
        _quality_speed,
    ),
    ChartInfo(
        "ttft-cdf",
        "Time to first token, distribution",
        "For each latency x, the share of requests whose first token arrived within x. Further left is faster; a "
        "curve that reaches 100% late has a slow tail.",
        "ttft_ms = (first_token_s − sent_s) · 1000 per completed measure-phase request, pooled over the "
        f"endpoint's runs; at most {charts.CDF_MAX_POINTS} points per curve (exact minimum and maximum kept).",
        "tokenrace bench",
        "No completed request has a first token: run `tokenrace bench`.",
        _ttft_cdf,
    ),
    ChartInfo(
        "e2e-cdf",
        "End-to-end latency, distribution",
        "For each latency x, the share of requests that were complete within x: what a user waiting for the "
        "whole answer experiences. Longer answers shift the curve right.",
        "e2e_ms = (done_s − sent_s) · 1000 per completed measure-phase request, pooled over the endpoint's "
        f"runs; at most {charts.CDF_MAX_POINTS} points per curve (exact minimum and maximum kept).",
        "tokenrace bench",
        "No completed request in the selected runs: run `tokenrace bench`.",
        _e2e_cdf,
    ),
    ChartInfo(
        "sweep",
        "Throughput vs latency",
        "Latency at each load step of a throughput sweep: first the closed-loop maximum, then evenly spaced "
        "request rates up to it. The load an endpoint can take is where its line turns upward.",
        "x = output_tokens_per_s = output tokens of the run's completed requests / its measurement window (s); "
        "y = p50 and p95 of ttft_ms, p50 of e2e_ms, over the run's completed requests; one point per run.",
        "tokenrace bench --sweep",
        "No load sweep in the selected runs: run `tokenrace bench --sweep` to draw this chart.",
        _sweep,
    ),
    ChartInfo(
        "context",
        "Speed and TTFT vs context length",
        "How prompt length changes time to first token (prefill) and decode speed, from the rag suite's context "
        "buckets (prompt ids rag-<bucket>-<n>).",
        "x = mean prompt tokens (server usage, else requested) of the bucket's completed requests; y = p50 of "
        "output_speed_tps and p50 of ttft_ms over those requests, pooled over the endpoint's runs.",
        "tokenrace bench --suite rag",
        "No rag-suite requests in the selected runs: run `tokenrace bench --suite rag` (add `--max-context N` "
        "for the endpoint's window) to draw this chart.",
        _context,
    ),
    ChartInfo(
        "monitor",
        "Monitored endpoints over time",
        "Each probe of the monitor as a dot, the trailing rolling median as a line, and a tick under every probe "
        "that was down (red: nothing completed) or degraded (orange: some requests failed): drift and outages at a "
        "glance.",
        "Per probe run: p50 of ttft_ms and of output_speed_tps over its completed requests; rolling median over "
        "the probes started in the trailing window (times in UTC).",
        "tokenrace monitor",
        "No monitor probes in the selected period: run `tokenrace monitor` to draw this chart.",
        _monitor,
    ),
)


# --------------------------------------------------------------------------------------------------
# Gathering


def collect_report(
    store: Store,
    *,
    run_ids: Sequence[str] | None = None,
    since_s: float | None = None,
    endpoints: Sequence[str] | None = None,
) -> ReportData:
    """Read the selected runs (same selection as the leaderboard) and everything the charts need.

    Raises NoRunsError when nothing is selected, and the store's UnknownRunError for an unknown run id.
    """
    runs = select_runs(store, run_ids=run_ids, since_s=since_s, endpoints=endpoints)
    if not runs:
        raise NoRunsError(f"{store.location} has no runs to report: run `tokenrace bench` or `tokenrace demo` first")
    loaded = {run.run_id: store.records(run.run_id) for run in runs}
    board = build_leaderboard(store, runs, loaded)
    ttft: dict[str, list[float]] = {}
    e2e: dict[str, list[float]] = {}
    rag: dict[str, list[RequestRecord]] = {}
    steps: list[SweepStep] = []
    counts = {"completed": 0, "failed": 0, "other": 0}
    for run in sorted(runs, key=lambda r: (r.started_at, r.run_id)):
        records = [r for r in loaded[run.run_id] if r.phase != PHASE_WARMUP]
        for r in records:
            key = "completed" if r.status == OK else "failed" if r.status == FAILED else "other"
            counts[key] += 1
            if r.status != OK:
                continue
            if (value := ttft_ms(r)) is not None:
                ttft.setdefault(r.endpoint, []).append(value)
            if (value := e2e_ms(r)) is not None:
                e2e.setdefault(r.endpoint, []).append(value)
        rag_records = [r for r in records if r.suite == "rag"]
        if rag_records:
            rag.setdefault(run.endpoint, []).extend(rag_records)
        if (run.profile or {}).get("sweep"):
            steps.append(_sweep_step(run, records))
    return ReportData(
        leaderboard=board,
        ttft_ms=ttft,
        e2e_ms=e2e,
        sweep_steps=steps,
        context_buckets=[b for endpoint, records in sorted(rag.items()) for b in _context_buckets(endpoint, records)],
        monitor_points=_monitor_points(store, runs, run_ids=run_ids, since_s=since_s, endpoints=endpoints),
        requests_completed=counts["completed"],
        requests_failed=counts["failed"],
        requests_other=counts["other"],
        store_location=store.location,
        selection=_selection_text(run_ids, since_s, endpoints),
    )


def _sweep_step(run: RunInfo, records: list[RequestRecord]) -> SweepStep:
    """One sweep run as a chart point, from its stored summary (recomputed if the run has none)."""
    summary = run.summary
    if not summary or "metrics" not in summary:
        from tokenrace.bench import run_summary  # bench pulls in the HTTP client; only needed here

        summary = run_summary(run, records)
    metrics = summary.get("metrics") or {}
    throughput = summary.get("throughput") or {}
    profile = run.profile or {}
    target = profile.get("target_rps")
    return SweepStep(
        endpoint=run.endpoint,
        sweep=str(profile["sweep"]),
        step=str(profile.get("sweep_step", "")),
        run_id=run.run_id,
        target_rps=float(target) if target is not None else None,
        requests_per_s=throughput.get("requests_per_s"),
        output_tps=throughput.get("output_tokens_per_s"),
        ttft_p50_ms=(metrics.get("ttft_ms") or {}).get("p50"),
        ttft_p95_ms=(metrics.get("ttft_ms") or {}).get("p95"),
        e2e_p50_ms=(metrics.get("e2e_ms") or {}).get("p50"),
    )


def _context_buckets(endpoint: str, records: list[RequestRecord]) -> list[ContextBucket]:
    """The rag suite's per-context rows over all of an endpoint's rag requests (metrics.summarize's buckets)."""
    by_context = ((summarize(records).get("by_suite") or {}).get("rag") or {}).get("by_context") or {}
    return [
        ContextBucket(
            endpoint=endpoint,
            bucket=bucket,
            prompt_tokens_mean=row.get("prompt_tokens_mean"),
            completed=int(row.get("completed") or 0),
            output_speed_p50=(row.get("output_speed_tps") or {}).get("p50"),
            ttft_p50_ms=(row.get("ttft_ms") or {}).get("p50"),
            ttft_p95_ms=(row.get("ttft_ms") or {}).get("p95"),
        )
        for bucket, row in by_context.items()
        if row.get("completed")
    ]


def _monitor_points(
    store: Store,
    runs: list[RunInfo],
    *,
    run_ids: Sequence[str] | None,
    since_s: float | None,
    endpoints: Sequence[str] | None,
) -> list[Any]:
    """The monitor's probe series; with named runs, only those runs' probes."""
    kwargs: dict[str, Any] = {"since_s": since_s, "endpoints": list(endpoints) if endpoints else None}
    if run_ids:
        kwargs["endpoints"] = sorted({run.endpoint for run in runs})
    points = list(monitor_series(store, **kwargs))
    if run_ids:
        chosen = {run.run_id for run in runs}
        points = [
            p for p in points if charts.point_attr(p, "run_id") is None or charts.point_attr(p, "run_id") in chosen
        ]
    return points


def _selection_text(run_ids: Sequence[str] | None, since_s: float | None, endpoints: Sequence[str] | None) -> str:
    parts = []
    if run_ids:
        parts.append("runs " + ", ".join(run_ids))
    else:
        parts.append("every finished run")
    if since_s is not None:
        parts.append("started since " + _utc(since_s))
    if endpoints:
        parts.append("of " + ", ".join(endpoints))
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------------
# Charts and PNGs


def chart_specs(data: ReportData) -> dict[str, Spec | None]:
    """Every chart id -> its Vega-Lite spec, None where the selection has no data for it."""
    colors = data.colors()
    return {info.chart_id: info.build(data, colors) for info in CHARTS}


def write_pngs(
    data: ReportData | None,
    directory: Path,
    *,
    scale: float = 2.0,
    routing: Sequence[Mapping[str, Any]] = (),
) -> list[Path]:
    """Render every chart that has data to ``<directory>/<chart-id>.png`` (same specs as the HTML)."""
    import vl_convert as vlc

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    specs = chart_specs(data) if data is not None else {}
    for chart_id, spec in {**specs, **routing_specs(routing)}.items():
        if spec is None:
            continue
        path = directory / f"{chart_id}.png"
        path.write_bytes(vlc.vegalite_to_png(spec, scale=scale, allowed_base_urls=[]))
        written.append(path)
    return written


@functools.cache
def _vega_bundle() -> str:
    """vega + vega-lite + vega-embed as one script (~0.9 MB), made once per process (~1 s)."""
    import vl_convert as vlc

    bundle = vlc.javascript_bundle("window.vegaEmbed = vegaEmbed;")
    if "</script" in bundle.lower():  # would end the inline script early; never seen, but fatal if it happened
        raise RuntimeError("the vl-convert JavaScript bundle contains '</script' and cannot be inlined")
    return bundle


# --------------------------------------------------------------------------------------------------
# HTML


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _utc(unix_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix_s))


def _script_json(value: Any) -> str:
    """JSON that is safe inside <script>: no value can write '</script>' or '<!--'."""
    return json_dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        digits = 0
    return f"{value:,.{digits}f}"


def _code(text: str) -> str:
    """Escape, then show `backticked` spans as code."""
    parts = _esc(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


_COLUMNS = (
    ("endpoint", "model", "the endpoint's name in the config and its model; ★ on the Pareto front of its suite"),
    ("speed", "tok/s", "output speed per request, p50"),
    ("TTFT p50", "ms", "time to first token, median"),
    ("TTFT p95", "ms", "time to first token, 95th percentile"),
    ("E2E p50", "ms", "end-to-end latency, median"),
    ("E2E p95", "ms", "end-to-end latency, 95th percentile"),
    ("throughput", "tok/s @ load", "output tok/s of all streams together, best run, at its load"),
    ("quality", "mean [95% CI]", "mean score in [0, 1] with its 95% confidence interval and number of scored requests"),
    ("$ / 1M tok", "blended", "price per million tokens at the measured input:output ratio"),
    ("$ / 1k req", "per 1,000", "what 1,000 requests like these cost"),
    ("ok / failed", "requests", "completed and failed measured requests"),
)


def _table(rows: Sequence[Row], colors: dict[str, str]) -> str:
    head = "".join(
        f'<th title="{_esc(tip)}">{_esc(name)}' + (f'<span class="unit">{_esc(unit)}</span>' if unit else "") + "</th>"
        for name, unit, tip in _COLUMNS
    )
    body = []
    for r in rows:
        quality = "–"
        if r.quality is not None:
            quality = f"{r.quality:.3f}"
            detail = f"[{r.quality_ci95[0]:.2f}–{r.quality_ci95[1]:.2f}] " if r.quality_ci95 else ""
            quality += f'<span class="sub">{detail}n={r.quality_n:,}</span>'
        throughput = "–"
        if r.throughput_tps is not None:
            throughput = f'{_num(r.throughput_tps)}<span class="sub">@{_esc(r.throughput_at or "?")}</span>'
        color = colors.get(r.endpoint, "#888")
        star = '<span class="star" title="on the Pareto front">★</span>' if r.pareto else ""
        model = f'<span class="sub">{_esc(r.model)}</span>' if r.model else ""
        body.append(
            f'<tr class="{"front" if r.pareto else ""}" data-endpoint="{_esc(r.endpoint)}">'
            f'<td class="name"><span class="swatch" style="background:{color}"></span>{_esc(r.endpoint)}{star}'
            f"{model}</td>"
            f"<td>{_num(r.output_speed_p50)}</td><td>{_num(r.ttft_p50_ms)}</td><td>{_num(r.ttft_p95_ms)}</td>"
            f"<td>{_num(r.e2e_p50_ms, 0)}</td><td>{_num(r.e2e_p95_ms, 0)}</td><td>{throughput}</td>"
            f"<td>{quality}</td>"
            f'<td title="{_esc(r.price_source)}">{cost_text(r.usd_per_1m_tokens, r.price_source, "$")}</td>'
            f'<td title="{_esc(r.price_source)}">{cost_text(r.usd_per_1k_requests, r.price_source, "$")}</td>'
            f"<td>{r.completed:,} / {r.failed:,}</td></tr>"
        )
    rows_html = "".join(body)
    return (
        f'<div class="table-wrap"><table class="board"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows_html}</tbody></table></div>"
    )


def _leaderboard_section(data: ReportData, colors: dict[str, str]) -> str:
    board = data.leaderboard
    suites = []
    for suite in board.suites():
        rows = board.suite_rows(suite)
        suites.append(
            f'<details class="suite" data-suite="{_esc(suite)}"><summary>{_esc(suite)} '
            f'<span class="muted">— {len(rows)} endpoint{"s" if len(rows) != 1 else ""}</span></summary>'
            f"{_table(rows, colors)}</details>"
        )
    per_suite = (
        '<h3>Per suite</h3><p class="muted">Each suite ranked on its own requests (click to open).</p>'
        + "".join(suites)
        if suites
        else ""
    )
    return (
        '<section id="section-leaderboard" class="card"><h2>Leaderboard</h2>'
        '<p class="caption">One row per endpoint, pooling every measured request of the selected runs. '
        "★ marks the Pareto front: no other endpoint is at least as fast, as good and as cheap, and better on one. "
        "Hover a column header for its definition; every formula is in docs/metrics.md.</p>"
        f"{_table(board.overall(), colors)}{per_suite}</section>"
    )


def _header(data: ReportData, colors: dict[str, str]) -> str:
    runs = data.runs
    start = min(r.started_at for r in runs)
    end = max(r.finished_at or r.started_at for r in runs)
    models = {r.endpoint: r.model for r in data.leaderboard.overall()}
    endpoint_items = "".join(
        f'<li><span class="swatch" style="background:{color}"></span>{_esc(name)}'
        + (f' <span class="muted">({_esc(models[name])})</span>' if models.get(name) else "")
        + "</li>"
        for name, color in colors.items()
    )
    workloads = sorted({r.workload for r in runs if r.workload})
    suites = data.leaderboard.suites()
    # one line per machine, not per run (run.host also holds the pid of the process that ran it)
    machines = sorted(
        {
            (
                str((r.host or {}).get("hostname") or "unknown host"),
                ", ".join(str(v) for k in ("platform", "machine") if (v := (r.host or {}).get(k)))
                + (f", {cpus} CPUs" if (cpus := (r.host or {}).get("cpus")) else ""),
            )
            for r in runs
        }
    )
    hosts = [
        f"{_esc(name)} <span class='muted'>({_esc(detail)})</span>" if detail else _esc(name)
        for name, detail in machines
    ]
    if len(hosts) > 8:
        hosts = [*hosts[:8], f"and {len(hosts) - 8} more"]
    versions = sorted({str((r.versions or {}).get("tokenrace", "?")) for r in runs})
    sweeps = len({s.sweep for s in data.sweep_steps})
    monitor_runs = sum(1 for r in runs if (r.profile or {}).get("monitor"))
    run_note = []
    if sweeps:
        run_note.append(f"{sweeps} sweep{'s' if sweeps != 1 else ''}")
    if monitor_runs:
        run_note.append(f"{monitor_runs} monitor probe{'s' if monitor_runs != 1 else ''}")
    facts = [
        ("endpoints", f'<ul class="endpoints">{endpoint_items}</ul>'),
        (
            "workloads",
            ", ".join(f"<code>{_esc(w)}</code>" for w in workloads[:12]) + (" …" if len(workloads) > 12 else ""),
        ),
        ("suites", ", ".join(_esc(s) for s in suites) or "none (unscored workloads)"),
        ("when", f"{_utc(start)} → {_utc(end)}"),
        ("hosts", "<br>".join(hosts)),
        (
            "runs",
            f"{len(runs):,}"
            + (f" ({', '.join(run_note)})" if run_note else "")
            + f"; selection: {_esc(data.selection)}",
        ),
        (
            "requests",
            f"{data.requests_completed:,} completed, {data.requests_failed:,} failed"
            + (f", {data.requests_other:,} incomplete" if data.requests_other else "")
            + " (measure phase; warmup excluded)",
        ),
        ("tokenrace", f"runs by {_esc(', '.join(versions))}; report by {_esc(__version__)}"),
        ("store", f"<code>{_esc(data.store_location)}</code>"),
    ]
    items = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    return (
        "<header><h1>tokenrace report</h1>"
        f'<p class="lede">{len(colors)} endpoint{"s" if len(colors) != 1 else ""} · {len(runs):,} runs · '
        f"{data.requests_completed + data.requests_failed + data.requests_other:,} measured requests · "
        f"generated {_utc(data.generated_at)}</p>"
        f'<dl class="facts">{items}</dl></header>'
    )


def _chart_section(info: ChartInfo, spec: Spec | None, note: str = "") -> str:
    head = (
        f'<section id="section-{info.chart_id}" class="card chart-section" data-section="{info.chart_id}">'
        f"<h2>{_esc(info.title)}</h2>"
    )
    if spec is None:
        return (
            head + f'<div class="chart empty" id="chart-{info.chart_id}" data-chart="{info.chart_id}" '
            f'data-empty="true"><p>{_code(info.empty)}</p></div></section>'
        )
    return (
        head + f'<p class="caption">{_esc(info.caption)}</p>'
        f'<div class="chart" id="chart-{info.chart_id}" data-chart="{info.chart_id}"></div>'
        f'<p class="definition"><strong>Definition.</strong> {_esc(info.definition)}</p>'
        + (f'<p class="note">{note}</p>' if note else "")
        + f'<p class="source">Data from <code>{_esc(info.command)}</code>.</p></section>'
    )


def _notes(data: ReportData) -> dict[str, str]:
    """Per-chart remarks on what was left out, so a missing endpoint is never a silent omission."""
    overall = data.leaderboard.overall()
    notes: dict[str, str] = {}
    unpriced = [r.endpoint for r in overall if r.output_speed_p50 is not None and r.usd_per_1m_tokens is None]
    if unpriced:
        notes["speed-price"] = "Not shown, price unknown: " + ", ".join(_esc(n) for n in unpriced) + "."
    unscored = [r.endpoint for r in overall if r.quality is None]
    if unscored:
        notes["quality-speed"] = "Not shown, no scored requests: " + ", ".join(_esc(n) for n in unscored) + "."
    if data.monitor_points:
        window = data.monitor_window_s()
        label = f"{window / 3600:g} h" if window >= 3600 else f"{window / 60:g} min"
        notes["monitor"] = f"Rolling window: {label} (five typical probe intervals, at least 5 min)."
    return notes


# --------------------------------------------------------------------------------------------------
# Routing: router evaluations written by `tokenrace router eval --json`


def load_router_eval(path: Path) -> dict[str, Any]:
    """A ``router eval --json`` file, checked enough that the section cannot fail half way."""
    import orjson

    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"--router-eval {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError:
        raise ValueError(f"--router-eval {path}: not JSON") from None
    held = doc.get("held_out") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("kind") != ROUTER_EVAL_KIND
        or not isinstance(held, dict)
        or not isinstance(held.get("rows"), list)
        or not isinstance(held.get("curves"), dict)
    ):
        raise ValueError(f"--router-eval {path}: not a `tokenrace router eval --json FILE` result")
    return doc


def _routing_ids(count: int) -> list[str]:
    """Stable chart ids: ``routing`` for the first evaluation, ``routing-2``... for the next ones."""
    return ["routing" if i == 0 else f"routing-{i + 1}" for i in range(count)]


def _curves(doc: Mapping[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    return {str(name): (list(xy[0]), list(xy[1])) for name, xy in doc["held_out"]["curves"].items()}


def routing_specs(docs: Sequence[Mapping[str, Any]]) -> dict[str, Spec | None]:
    """Chart id -> the quality-vs-strong-share chart of each evaluation (the same spec as its PNG)."""
    return {
        chart_id: charts.routing_curve_chart(_curves(doc))
        for chart_id, doc in zip(_routing_ids(len(docs)), docs, strict=True)
    }


_ROUTING_COLUMNS = (
    ("router", "", "a router fitted on the training subjects (or a saved FILE.npz, scored as saved), or a baseline"),
    ("APGR", "area", "area under the PGR curve over the strong-call share 0…1 (random 0.5)"),
    ("CPT(50%)", "strong calls", "smallest share of strong calls that recovers 50% of the weak→strong gap"),
    ("CPT(80%)", "strong calls", "smallest share of strong calls that recovers 80% of the weak→strong gap"),
    ("routing", "p50 / p99 ms", "wall time of one routing decision, one prompt per call"),
)
_BASELINES = {
    "random": "exact expectation over random orders",
    "subject-oracle": "knows each held-out subject's mean gain, nothing about single prompts",
    "oracle": "knows each prompt's outcome",
}


def _fraction(value: Any) -> str:
    return "–" if value is None else f"{float(value):.1%}"


def _routing_table(doc: Mapping[str, Any], colors: Mapping[str, str]) -> str:
    held = doc["held_out"]
    kfold = {str(r.get("router")): r for r in doc.get("kfold") or [] if isinstance(r, dict)}
    columns = list(_ROUTING_COLUMNS)
    if kfold:
        folds = doc.get("folds")
        label = f"{folds} folds" if folds else "k-fold"
        columns.append(("APGR", f"{label}, mean ± std", "APGR over folds of subjects: each fold held out in turn"))
    spread = doc.get("splits") if isinstance(doc.get("splits"), dict) else {}
    split_rows = {str(r.get("router")): r for r in spread.get("rows") or [] if isinstance(r, dict)}
    if split_rows:
        label = f"{spread.get('count', '?')} splits"
        columns.append(
            ("APGR", f"{label}, mean ± std", "APGR over distinct held-out splits by subject, the router fitted on each")
        )
        columns.append(("CPT(50%)", f"{label}, mean", "CPT(50%) over the same splits"))
    head = "".join(
        f'<th title="{_esc(tip)}">{_esc(name)}' + (f'<span class="unit">{_esc(unit)}</span>' if unit else "") + "</th>"
        for name, unit, tip in columns
    )
    body = []
    for row in held["rows"]:
        name = str(row.get("router"))
        baseline = name in _BASELINES
        sub = f'<span class="sub">{_esc(_BASELINES[name])}</span>' if baseline else ""
        p50, p99 = row.get("p50_ms"), row.get("p99_ms")
        latency = "–" if p50 is None else f"{float(p50):.2f} / {float(p99):.2f}" if p99 is not None else f"{p50:.2f}"
        cells = [
            f'<td class="name"><span class="swatch" style="background:{colors.get(name, "#888")}"></span>'
            f"{_esc(name)}{sub}</td>",
            f"<td>{float(row['apgr']):.4f}</td>",
            f"<td>{_fraction(row.get('cpt50'))}</td>",
            f"<td>{_fraction(row.get('cpt80'))}</td>",
            f"<td>{latency}</td>",
        ]
        if kfold:
            fold = kfold.get(name)
            cells.append(
                f"<td>{float(fold['apgr']):.4f} ± {float(fold['apgr_std']):.4f}</td>" if fold else "<td>–</td>"
            )
        if split_rows:
            split = split_rows.get(name)
            cells.append(
                f"<td>{float(split['apgr']['mean']):.4f} ± {float(split['apgr']['std']):.4f}</td>"
                f"<td>{_fraction(split['cpt50']['mean'])}</td>"
                if split
                else "<td>–</td><td>–</td>"
            )
        body.append(f'<tr class="{"baseline" if baseline else ""}" data-router="{_esc(name)}">{"".join(cells)}</tr>')
    ends = []
    for name, apgr, cpt, quality in (
        ("always-weak", "–", "never", held.get("always_weak_quality")),
        ("always-strong", "–", "100.0%", held.get("always_strong_quality")),
    ):
        q = f'<span class="sub">quality {float(quality):.4f}</span>' if quality is not None else ""
        ends.append(
            f'<tr class="baseline" data-router="{name}"><td class="name"><span class="swatch" '
            f'style="background:{colors.get(name, "#888")}"></span>{name}{q}</td><td>{apgr}</td><td>{cpt}</td>'
            f"<td>{cpt}</td><td>–</td>"
            + ("<td>–</td>" if kfold else "")
            + ("<td>–</td><td>–</td>" if split_rows else "")
            + "</tr>"
        )
    return (
        f'<div class="table-wrap"><table class="board routing"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}{''.join(ends)}</tbody></table></div>"
    )


def _count(n: Any, noun: str) -> str:
    n = int(n)
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _routing_facts(doc: Mapping[str, Any]) -> str:
    held = doc["held_out"]
    train, test = held.get("train") or {}, held.get("test") or {}
    subjects = [str(s) for s in test.get("subjects") or []]
    shown = ", ".join(_esc(s) for s in subjects[:20]) + (
        f" and {len(subjects) - 20} more" if len(subjects) > 20 else ""
    )
    facts = [
        ("data", _esc(doc.get("data", "?"))),
        (
            "pair",
            f"weak <code>{_esc(doc.get('weak', '?'))}</code>, strong <code>{_esc(doc.get('strong', '?'))}</code>",
        ),
        (
            "split",
            f"by subject, test fraction {_esc(doc.get('test_fraction', '?'))}, seed {_esc(doc.get('seed', '?'))}: "
            f"trained on {_count(train.get('prompts', 0), 'prompt')} / {_count(train.get('subjects', 0), 'subject')}, "
            f"judged on {_count(test.get('prompts', 0), 'prompt')} / {_count(len(subjects), 'subject')} ({shown})",
        ),
    ]
    when = doc.get("generated_at")
    if isinstance(when, int | float):
        facts.append(("measured", f"{_utc(float(when))} by tokenrace {_esc(doc.get('tokenrace', '?'))}"))
    return '<dl class="facts compact">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"


def _routing_section(docs: Sequence[Mapping[str, Any]], specs: Mapping[str, Spec | None]) -> str:
    """One card: what the curves mean, then per evaluation its facts, its chart and its table."""
    parts = []
    for chart_id, doc in zip(_routing_ids(len(docs)), docs, strict=True):
        colors = charts.routing_colors(_curves(doc))
        title = f"<h3>{_esc(doc.get('data', 'router evaluation'))}</h3>" if len(docs) > 1 else ""
        chart = (
            f'<div class="chart" id="chart-{chart_id}" data-chart="{chart_id}"></div>'
            if specs.get(chart_id) is not None
            else f'<div class="chart empty" id="chart-{chart_id}" data-chart="{chart_id}" data-empty="true">'
            "<p>No curve in this evaluation.</p></div>"
        )
        parts.append(
            f'<div class="routing-eval" data-eval="{chart_id}">{title}{_routing_facts(doc)}{chart}'
            f"{_routing_table(doc, colors)}</div>"
        )
    return (
        '<section id="section-routing" class="card chart-section" data-section="routing"><h2>Routing</h2>'
        '<p class="caption">Weak/strong routers judged on subjects they never saw. Each curve sweeps a router\'s '
        "threshold: the share of calls sent to the strong model against the share of the weak→strong quality gap "
        "recovered (PGR). The random router is the diagonal and the oracle the best any router can do; higher and "
        "further left is better.</p>"
        + "".join(parts)
        + '<p class="definition"><strong>Definition.</strong> PGR(x) = (q(x) − q_weak) / (q_strong − q_weak), '
        "where q(x) is the mean score when the share x of prompts with the highest router scores goes to the "
        "strong model (tied scores count with their block's mean gain); APGR = its area over x in [0, 1]; "
        "CPT(p) = the smallest x with PGR(x) ≥ p. Details in docs/metrics.md.</p>"
        '<p class="source">Data from <code>tokenrace router eval --json FILE</code>.</p></section>'
    )


_CSS = """
:root { --ink:#1d2330; --muted:#5f6878; --line:#e3e6eb; --bg:#f5f6f8; --card:#fff; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main, header { max-width:1200px; margin:0 auto; padding:0 24px; }
header { padding-top:28px; padding-bottom:8px; }
h1 { font-size:28px; margin:0 0 4px; letter-spacing:-0.01em; }
h2 { font-size:20px; margin:0 0 6px; }
h3 { font-size:16px; margin:22px 0 4px; }
.lede { color:var(--muted); margin:0 0 16px; font-size:16px; }
.facts { display:grid; grid-template-columns:120px 1fr; gap:4px 16px; margin:0; padding:16px 20px;
  background:var(--card); border:1px solid var(--line); border-radius:10px; }
.facts dt { color:var(--muted); font-weight:600; }
.facts dd { margin:0; }
.endpoints { list-style:none; margin:0; padding:0; display:flex; flex-wrap:wrap; gap:4px 18px; }
.swatch { display:inline-block; width:11px; height:11px; border-radius:3px; margin-right:7px; vertical-align:0; }
.muted { color:var(--muted); font-weight:normal; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:20px 22px;
  margin:18px 0; }
.caption { margin:0 0 12px; max-width:860px; }
.definition, .source, .note { color:var(--muted); font-size:13.5px; margin:8px 0 0; max-width:900px; }
code { font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; background:#eef1f5;
  padding:1px 5px; border-radius:4px; }
.table-wrap { overflow-x:auto; }
table.board { border-collapse:collapse; width:100%; font-size:13.5px; font-variant-numeric:tabular-nums; }
.board th { text-align:right; font-weight:600; color:var(--muted); border-bottom:2px solid var(--line);
  padding:6px 8px; white-space:nowrap; cursor:help; vertical-align:bottom; }
.board th .unit { display:block; font-weight:normal; font-size:12px; }
.board th:first-child, .board td:first-child { text-align:left; }
.board td { text-align:right; padding:7px 8px; border-bottom:1px solid var(--line); white-space:nowrap;
  vertical-align:top; }
.board .sub { display:block; color:var(--muted); font-size:12px; font-weight:normal; }
.board td.name .sub { margin-left:18px; max-width:260px; overflow:hidden; text-overflow:ellipsis; }
.board tbody tr:hover { background:#f7f9fc; }
.board td.name { font-weight:600; white-space:normal; overflow-wrap:anywhere; min-width:150px; max-width:260px; }
.board tr.front td.name { color:#000; }
.star { color:#d08a00; margin-left:6px; }
details.suite { border:1px solid var(--line); border-radius:8px; margin:8px 0; padding:4px 12px; }
details.suite summary { cursor:pointer; font-weight:600; padding:4px 0; }
details.suite[open] { padding-bottom:10px; }
.chart { min-height:120px; overflow-x:auto; }
.chart.empty { min-height:0; color:var(--muted); background:#fafbfc; border:1px dashed #cfd5dd; border-radius:8px;
  padding:2px 16px; }
.vega-embed { max-width:100%; }
#vg-tooltip-element { font-family:inherit; font-size:13px; }
.facts.compact { grid-template-columns:80px 1fr; padding:10px 14px; margin:10px 0 12px; font-size:13.5px; }
.routing-eval { margin:8px 0 20px; }
.board tr.baseline td { color:var(--muted); }
footer { max-width:1200px; margin:0 auto; padding:8px 24px 36px; color:var(--muted); font-size:13px; }
"""

_RENDER_JS = """
const specs = JSON.parse(document.getElementById("tokenrace-chart-specs").textContent);
const jobs = Object.entries(specs).map(([id, spec]) => {
  const el = document.getElementById("chart-" + id);
  return window.vegaEmbed(el, spec, { actions: false, renderer: "svg" })
    .then(() => { el.dataset.rendered = "true"; })
    .catch((err) => {
      el.dataset.rendered = "error";
      el.textContent = "This chart could not be drawn: " + err;
      console.error(err);
    });
});
Promise.allSettled(jobs).then(() => { document.body.dataset.chartsDone = "true"; });
"""


def render_html(data: ReportData, routing: Sequence[Mapping[str, Any]] = ()) -> str:
    """The whole report as one self-contained HTML document (no network access needed to view it).

    ``routing``: router evaluations (``load_router_eval``) shown in a Routing section after the charts.
    """
    colors = data.colors()
    specs = chart_specs(data)
    notes = _notes(data)
    sections = "".join(_chart_section(info, specs[info.chart_id], notes.get(info.chart_id, "")) for info in CHARTS)
    if routing:
        routing_charts = routing_specs(routing)
        sections += _routing_section(routing, routing_charts)
        specs = {**specs, **routing_charts}
    title = f"tokenrace report — {', '.join(colors)}" if len(colors) <= 4 else "tokenrace report"
    return _page(title, f"{_header(data, colors)}<main>{_leaderboard_section(data, colors)}{sections}</main>", specs)


def render_routing_html(routing: Sequence[Mapping[str, Any]]) -> str:
    """A report of router evaluations alone (``router eval --html``): the same Routing section, self-contained."""
    specs = routing_specs(routing)
    header = (
        "<header><h1>tokenrace router evaluation</h1>"
        f'<p class="lede">{len(routing)} evaluation{"s" if len(routing) != 1 else ""} · '
        f"generated {_utc(time.time())} by tokenrace {_esc(__version__)}</p></header>"
    )
    return _page("tokenrace router evaluation", f"{header}<main>{_routing_section(routing, specs)}</main>", specs)


def _page(title: str, body: str, specs: Mapping[str, Spec | None]) -> str:
    """The document around ``body``: styles, the chart specs as JSON, the embedded Vega bundle, the renderer."""
    drawable = {chart_id: spec for chart_id, spec in specs.items() if spec is not None}
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="tokenrace {_esc(__version__)}">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"{body}"
        "<footer>Made with tokenrace. Charts: Vega-Lite, embedded; this file needs no network. "
        "<noscript>JavaScript is off: the charts cannot be drawn (`tokenrace report --png DIR` writes them as "
        "images).</noscript></footer>"
        f'<script type="application/json" id="tokenrace-chart-specs">{_script_json(drawable)}</script>'
        f'<script type="module">{_vega_bundle()}</script>'
        f'<script type="module">{_RENDER_JS}</script>'
        "</body></html>\n"
    )


@dataclass(frozen=True, slots=True)
class ReportOutput:
    html: Path  # absolute
    pngs: list[Path]
    data: ReportData | None  # None: a report of router evaluations alone (no run selected)


def write_report(
    store: Store,
    output: Path,
    *,
    run_ids: Sequence[str] | None = None,
    since_s: float | None = None,
    endpoints: Sequence[str] | None = None,
    png_dir: Path | None = None,
    routing: Sequence[Mapping[str, Any]] = (),
) -> ReportOutput:
    """Collect, render and write the report (and the PNGs when ``png_dir`` is given).

    With ``routing`` (router evaluations) and no run selected, the report is the Routing section alone
    (``data`` is None) rather than an error: the evaluation does not come from the store.
    """
    try:
        data: ReportData | None = collect_report(store, run_ids=run_ids, since_s=since_s, endpoints=endpoints)
    except (NoRunsError, EmptySelectionError):
        if not routing:
            raise
        data = None
    output = output.expanduser().resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    page = render_html(data, routing) if data is not None else render_routing_html(routing)
    output.write_text(page, encoding="utf-8")
    pngs = write_pngs(data, png_dir.expanduser().resolve(), routing=routing) if png_dir is not None else []
    return ReportOutput(html=output, pngs=pngs, data=data)
