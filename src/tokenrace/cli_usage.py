"""CLI command ``usage``: live gateway traffic by provider, model, endpoint, route or key (on ``cli.app``)."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import orjson
import typer

from tokenrace.cli import StoreOpt, UserError, _user_errors, app, console
from tokenrace.profiles import parse_duration
from tokenrace.store import Store
from tokenrace.usage import BY_KEYS, usage_report, usage_table

FORMATS = ("table", "json")


@app.command()
def usage(
    since: Annotated[
        str | None,
        typer.Option("--since", help="only requests sent in this last span, e.g. 1h, 24h, 7d \\[default: all]"),
    ] = None,
    by: Annotated[str, typer.Option("--by", "-b", help=" | ".join(BY_KEYS))] = "provider",
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json")] = "table",
    store: StoreOpt = None,
) -> None:
    """Token volume, share, requests, errors, cost and latency of live gateway traffic, grouped like a routing ranking.

    Counts only what `tokenrace serve` recorded; `tokenrace bench` runs are synthetic load and are left out.
    """
    with _user_errors():
        if fmt not in FORMATS:
            raise UserError(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
        if by not in BY_KEYS:
            raise UserError(f"unknown --by {by!r}; valid: {', '.join(BY_KEYS)}")
        since_s = time.time() - parse_duration(since) if since else None
        db = Store.open(store)
        try:
            report = usage_report(db, by=by, since_s=since_s)
            location = db.location
        finally:
            db.close()
    if not report.rows:
        span = f" in the last {since}" if since else ""
        message = (
            f"no gateway traffic{span} in {location}: run `tokenrace serve` and send requests to it, "
            "then `tokenrace usage` shows them"
        )
        if fmt == "json":
            sys.stdout.write(
                orjson.dumps({**report.as_dict(), "message": message}, option=orjson.OPT_INDENT_2).decode() + "\n"
            )
        else:
            console.print(message, highlight=False)
        return
    if fmt == "json":
        sys.stdout.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        console.print(usage_table(report, width=console.width))
