"""CLI commands: compare (registered on :data:`tokenrace.cli.app`)."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import orjson
import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from tokenrace.cli import StoreOpt, UserError, _user_errors, app, console
from tokenrace.compare import (
    BOOTSTRAP,
    RUN_LEVEL,
    Comparison,
    MetricDiff,
    RunSide,
    compare_runs,
    format_delta,
    format_value,
    parse_change,
    threshold_text,
)
from tokenrace.store import Store

FORMATS = ("table", "json", "markdown")
_UNIT_SUFFIX = {"ms": " (ms)", "tok/s": " (tok/s)", "req/s": " (req/s)"}
_STYLE = {"worse": "red", "better": "green", "changed": "yellow"}


def _label(m: MetricDiff) -> str:
    return m.label + _UNIT_SUFFIX.get(m.unit, "")


def _rel(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1%}"


def _interval(m: MetricDiff) -> str:
    """The interval of Δ% when defined, else of Δ (e.g. an error rate that was 0 in run A)."""
    if m.rel_ci is not None:
        return f"[{m.rel_ci[0]:+.1%}, {m.rel_ci[1]:+.1%}]"
    if m.ci is not None:
        return f"[{format_delta(m.ci[0], m.unit)}, {format_delta(m.ci[1], m.unit)}]"
    return "–"


def _verdict_text(m: MetricDiff, min_change: float) -> str:
    """The last column: the verdict, or why there is none."""
    if m.method == RUN_LEVEL:
        return "one value per run"
    if m.method != BOOTSTRAP:
        return "–" if m.a is None or m.b is None else m.method
    if m.flagged:
        return m.direction
    if m.significant:
        return f"unchanged (< {threshold_text(min_change)})"
    if m.ci is not None and (m.ci[0] > 0 or m.ci[1] < 0):
        return "unchanged (not after Holm)"
    return "unchanged"


def _p(m: MetricDiff) -> str:
    """The bootstrap p-value before correction (Holm compares it with alpha / (metrics left))."""
    if m.p_value is None:
        return "–"
    return "<0.001" if m.p_value < 0.001 else f"{m.p_value:.3f}"


def _started(side: RunSide) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(side.started_at))


def _header(comparison: Comparison) -> Table:
    """Both runs, one line of identity and one of load and outcome each."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for name, side in (("A", comparison.run_a), ("B", comparison.run_b)):
        head.add_row(name, Text(f"{side.run_id} · {side.endpoint} · {side.workload} · started {_started(side)}"))
        head.add_row("", Text(_outcome(side), style="dim"))
    return head


def _outcome(side: RunSide) -> str:
    return f"{side.profile} · {side.completed} completed, {side.failed} failed · {side.status}"


def _method(comparison: Comparison) -> str:
    threshold = f", min change {threshold_text(comparison.min_change)}" if comparison.min_change else ""
    level = threshold_text(comparison.confidence)
    alpha = threshold_text(1.0 - comparison.confidence)
    tested = sum(m.method == BOOTSTRAP for m in comparison.metrics)
    control = (
        f"flags controlled at {alpha} for the whole comparison (Holm over {tested} metrics)"
        if comparison.correction == "holm"
        else f"each metric tested on its own at {alpha} (no correction)"
    )
    return f"{level} percentile-bootstrap intervals, {comparison.resamples} resamples, {control}{threshold}"


def _table(comparison: Comparison) -> Table:
    table = Table(title=f"B vs A: {_method(comparison)}", title_justify="left")
    table.add_column("metric")
    for name in ("A", "B", "Δ", "Δ%", "CI of Δ%", "p"):
        table.add_column(name, justify="right")
    table.add_column("verdict")
    for m in comparison.metrics:
        style = _STYLE.get(m.direction, "dim") if m.flagged else "dim"
        verdict = _verdict_text(m, comparison.min_change)
        table.add_row(*_figures(m), Text(verdict, style=style), style=None if m.flagged else "dim")
    return table


def _figures(m: MetricDiff) -> tuple[str, ...]:
    """A metric's row before its verdict: name, A, B, Δ, Δ%, interval of Δ%, p (the table and markdown)."""
    return (
        _label(m),
        format_value(m.a, m.unit),
        format_value(m.b, m.unit),
        format_delta(m.diff, m.unit),
        _rel(m.rel_diff),
        _interval(m),
        _p(m),
    )


def _verdict_line(comparison: Comparison) -> Text:
    line = comparison.verdict()
    style = "bold red" if comparison.regressions else ("bold green" if comparison.improvements else "bold")
    return Text(line, style=style)


def _markdown(comparison: Comparison) -> str:
    """A GitHub-flavoured table for a pull request or CI summary."""
    lines = []
    for name, side in (("A", comparison.run_a), ("B", comparison.run_b)):
        lines.append(
            f"- **{name}**: `{side.run_id}` · {side.endpoint} · {side.workload} · started {_started(side)} · "
            + _outcome(side)
        )
    lines += [
        "",
        _method(comparison),
        "",
        "| metric | A | B | Δ | Δ% | CI of Δ% | p | verdict |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for m in comparison.metrics:
        verdict = _verdict_text(m, comparison.min_change)
        if m.flagged:
            verdict = f"**{verdict}**"
        cells = (*_figures(m), verdict)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    if comparison.notes:
        lines += ["", *(f"> note: {note}" for note in comparison.notes)]
    lines += ["", f"**{comparison.verdict()}**"]
    return "\n".join(lines) + "\n"


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="the baseline run (id or unique prefix)")],
    run_b: Annotated[str, typer.Argument(help="the run to check against it")],
    store: StoreOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | markdown")] = "table",
    resamples: Annotated[int, typer.Option("--resamples", help="bootstrap resamples per run")] = 2000,
    confidence: Annotated[float, typer.Option("--confidence", help="interval level, e.g. 0.95")] = 0.95,
    min_change: Annotated[
        str, typer.Option("--min-change", help="don't flag significant changes smaller than this, e.g. 5%")
    ] = "0%",
    seed: Annotated[int, typer.Option("--seed", help="bootstrap seed (results are reproducible)")] = 0,
    correction: Annotated[
        str,
        typer.Option("--correction", help="holm: false alarms ≤ 1−confidence per comparison; none: per metric"),
    ] = "holm",
    fail_on_regression: Annotated[
        bool, typer.Option("--fail-on-regression", help="exit 1 when any metric got significantly worse")
    ] = False,
) -> None:
    """Compare two runs metric by metric (B − A) and flag only statistically significant changes."""
    with _user_errors():
        if fmt not in FORMATS:
            raise UserError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
        threshold = parse_change(min_change)
        db = Store.open(store)
        try:
            comparison = compare_runs(
                db,
                run_a,
                run_b,
                resamples=resamples,
                confidence=confidence,
                min_change=threshold,
                seed=seed,
                correction=correction,
            )
        finally:
            db.close()
    if fmt == "json":
        sys.stdout.write(orjson.dumps(comparison.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "markdown":
        sys.stdout.write(_markdown(comparison))
    else:
        parts: list[Table | Text] = [_header(comparison), Text(""), _table(comparison)]
        parts += [Text(f"note: {note}", style="yellow") for note in comparison.notes]
        parts.append(_verdict_line(comparison))
        console.print(Group(*parts))
    if fail_on_regression and comparison.regressions:
        raise typer.Exit(1)
