"""CLI commands: report (registered on :data:`tokenrace.cli.app`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from tokenrace.cli import StoreOpt, UserError, _user_errors, app, console
from tokenrace.cli_rank import EndpointsOpt, RunsArg, SinceOpt
from tokenrace.store import Store


@app.command()
def report(
    run_ids: RunsArg = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="the HTML file to write")] = Path("report.html"),
    png: Annotated[Path | None, typer.Option("--png", help="also write each chart as DIR/<chart>.png")] = None,
    since: SinceOpt = None,
    endpoints: EndpointsOpt = None,
    store: StoreOpt = None,
    router_eval: Annotated[
        list[Path] | None,
        typer.Option(
            "--router-eval",
            help="add a Routing section from a `tokenrace router eval --json FILE` result (repeatable)",
        ),
    ] = None,
) -> None:
    """Write one self-contained HTML report (leaderboard and charts; opens offline), optionally PNG charts."""
    from tokenrace.htmlreport import NoRunsError, load_router_eval, write_report
    from tokenrace.profiles import parse_duration

    with _user_errors():
        routing = [load_router_eval(path) for path in router_eval or []]
        since_s = None
        if since is not None:
            try:
                since_s = time.time() - parse_duration(since)
            except ValueError as err:
                raise UserError(f"--since: {err}") from None
        names = [n.strip() for n in endpoints.split(",") if n.strip()] if endpoints else None
        db = Store.open(store)
        try:
            result = write_report(
                db, output, run_ids=run_ids or None, since_s=since_s, endpoints=names, png_dir=png, routing=routing
            )
        except NoRunsError as err:
            raise UserError(str(err)) from None
        finally:
            db.close()
    size_kb = result.html.stat().st_size / 1024
    data = result.data
    if data is None:
        what = f"no run selected: the {len(routing)} router evaluation{'s' if len(routing) != 1 else ''} only"
    else:
        what = f"{len(data.runs)} runs, {len(data.leaderboard.overall())} endpoints"
        if routing:
            what += f", {len(routing)} router evaluation{'s' if len(routing) != 1 else ''}"
    console.print(
        f"report written to [bold]{result.html}[/] ({size_kb:,.0f} KB; {what})", highlight=False, soft_wrap=True
    )
    for path in result.pngs:
        console.print(f"chart written to {path}", highlight=False, soft_wrap=True)
