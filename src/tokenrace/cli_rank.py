"""CLI commands ``leaderboard`` and ``recommend``: rank what the store holds (registered on ``cli.app``)."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import orjson
import typer

from tokenrace.cli import StoreOpt, UserError, _user_errors, app, console
from tokenrace.leaderboard import (
    OVERALL,
    SORT_KEYS,
    Leaderboard,
    Row,
    build_leaderboard,
    rows_as_csv,
    rows_as_markdown,
    select_runs,
    sort_rows,
)
from tokenrace.profiles import parse_duration
from tokenrace.store import Store

FORMATS = ("table", "json", "csv", "markdown")

SinceOpt = Annotated[
    str | None, typer.Option("--since", help="only runs started in this last span, e.g. 24h, 7d (default: every run)")
]
EndpointsOpt = Annotated[str | None, typer.Option("--endpoints", "-e", help="only these endpoints (comma-separated)")]
RunsArg = Annotated[list[str] | None, typer.Argument(help="run ids or unique prefixes [default: every finished run]")]


def load_board(store: str | None, run_ids: list[str] | None, since: str | None, endpoints: str | None) -> Leaderboard:
    """The selection options shared by leaderboard, recommend and report, turned into a leaderboard."""
    since_s = time.time() - parse_duration(since) if since else None
    names = [n.strip() for n in endpoints.split(",") if n.strip()] if endpoints else None
    db = Store.open(store)
    try:
        runs = select_runs(db, run_ids=run_ids, since_s=since_s, endpoints=names)
        return build_leaderboard(db, runs)
    finally:
        db.close()


def _percent_or_number(text: str, what: str) -> float:
    """``0.7`` or ``70%`` -> 0.7."""
    raw = text.strip()
    try:
        return float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UserError(f"bad {what} {text!r}: use a number such as 0.7 or 70%") from None


@app.command()
def leaderboard(
    run_ids: RunsArg = None,
    sort: Annotated[str, typer.Option("--sort", help=f"one of {', '.join(SORT_KEYS)}")] = "speed",
    suite: Annotated[
        str | None, typer.Option("--suite", "-s", help="only these suites (comma-separated; 'overall' too)")
    ] = None,
    min_quality: Annotated[str | None, typer.Option("--min-quality", help="hide rows scoring below, e.g. 0.7")] = None,
    pareto_only: Annotated[bool, typer.Option("--pareto", help="only rows on the Pareto front")] = False,
    since: SinceOpt = None,
    endpoints: EndpointsOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | csv | markdown")] = "table",
    store: StoreOpt = None,
) -> None:
    """Rank endpoints over everything in the store: speed, latency, throughput, quality and cost side by side.

    One row per endpoint over all its requests (suite 'overall') and one per suite; requests of every
    selected run are pooled. ★ marks the speed/quality/cost Pareto front within each suite.
    """
    with _user_errors():
        if fmt not in FORMATS:
            raise UserError(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
        if sort not in SORT_KEYS:
            raise UserError(f"unknown --sort {sort!r}; valid: {', '.join(SORT_KEYS)}")
        floor = _percent_or_number(min_quality, "--min-quality") if min_quality is not None else None
        board = load_board(store, run_ids, since, endpoints)
        wanted = [s.strip() for s in suite.split(",") if s.strip()] if suite else None
        known = [OVERALL, *board.suites()]
        if wanted:
            unknown = [s for s in wanted if s not in known]
            if unknown:
                raise UserError(f"no rows for suite {', '.join(unknown)}; suites in the selection: {', '.join(known)}")
    rows: list[Row] = []
    for group in known:
        if wanted and group not in wanted:
            continue
        chosen = [
            r
            for r in board.rows
            if r.suite == group
            and (not pareto_only or r.pareto)
            and (floor is None or (r.quality is not None and r.quality >= floor))
        ]
        rows.extend(sort_rows(chosen, sort))
    if fmt == "json":
        payload = {"runs": [r.run_id for r in board.runs], "rows": [r.as_dict() for r in rows]}
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "csv":
        sys.stdout.write(rows_as_csv(rows))
    elif fmt == "markdown":
        sys.stdout.write(rows_as_markdown(rows))
    else:
        from tokenrace.report import leaderboard_table

        requests = sum(r.completed + r.failed for r in board.overall())
        title = f"leaderboard: {len(board.runs)} runs, {requests:,} requests, sorted by {sort}"
        console.print(leaderboard_table(rows, title=title))
        if not rows:
            console.print("no row passes the filters")


@app.command()
def recommend(
    mix: Annotated[str, typer.Option("--mix", "-m", help="traffic mix, e.g. coding=0.5,chat=0.3,rag=0.2")],
    min_quality: Annotated[
        str | None, typer.Option("--min-quality", help="mix-weighted mean score at least, e.g. 0.7")
    ] = None,
    max_cost_per_1m: Annotated[
        float | None, typer.Option("--max-cost-per-1m", help="at most this many $ per 1M tokens (blended)")
    ] = None,
    max_p95_ttft: Annotated[
        str | None, typer.Option("--max-p95-ttft", help="TTFT p95 on every suite of the mix, e.g. 800ms, 1.5s")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="e2e (time per call) | ttft | speed")] = "e2e",
    run_ids: RunsArg = None,
    since: SinceOpt = None,
    endpoints: EndpointsOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json")] = "table",
    store: StoreOpt = None,
) -> None:
    """The fastest endpoint for your traffic mix under quality, cost and latency limits — and why the others lost."""
    from tokenrace.recommend import RANK_BY, Constraints, parse_mix
    from tokenrace.recommend import recommend as rank_mix
    from tokenrace.suites import SUITE_NAMES

    with _user_errors():
        if fmt not in ("table", "json"):
            raise UserError(f"unknown --format {fmt!r}; valid: table, json")
        if by not in RANK_BY:
            raise UserError(f"unknown --by {by!r}; valid: {', '.join(RANK_BY)}")
        board = load_board(store, run_ids, since, endpoints)
        weights = parse_mix(mix, [*SUITE_NAMES, *board.suites()])
        constraints = Constraints(
            min_quality=_percent_or_number(min_quality, "--min-quality") if min_quality is not None else None,
            max_cost_per_1m=max_cost_per_1m,
            max_p95_ttft_ms=parse_duration(max_p95_ttft) * 1000.0 if max_p95_ttft else None,
        )
        result = rank_mix(board, weights, constraints, by=by)
    if fmt == "json":
        sys.stdout.write(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        from tokenrace.report import recommendation_renderable

        console.print(recommendation_renderable(result))
    if result.best is None:
        raise typer.Exit(1)
