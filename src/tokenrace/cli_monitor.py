"""CLI commands: monitor (registered on :data:`tokenrace.cli.app`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from tokenrace.cli import (
    StoreOpt,
    UserError,
    _install_sigint,
    _user_errors,
    app,
    console,
    err_console,
    run_async,
)
from tokenrace.config import EndpointConfig, find_config, load_config
from tokenrace.monitor import (
    DEFAULT_REQUESTS,
    DEFAULT_WORKLOAD,
    DOWN,
    UP,
    EndpointTrend,
    FreshWorkload,
    RoundReport,
    monitor_series,
    rolling_summary,
    run_monitor,
)
from tokenrace.profiles import parse_duration
from tokenrace.store import Store
from tokenrace.workloads import parse_workload


def _duration(flag: str, text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UserError(f"{flag}: {exc}") from None
    if seconds <= 0:
        raise UserError(f"{flag} must be > 0, got {text!r}")
    return seconds


def _percent(flag: str, text: str) -> float:
    """``20%`` or ``20`` -> 20.0 (always percent: ``0.2`` would be 0.2%)."""
    raw = text.strip().removesuffix("%").strip()
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{flag} takes a percentage such as 20%, got {text!r}") from None
    if not value > 0:
        raise UserError(f"{flag} must be > 0%, got {text!r}")
    return value


def _span(seconds: float) -> str:
    """A duration the way a user would type it: 72h, 3h, 90m, 0.5s."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if unit == "d" and seconds < 7 * 86400:
            continue  # 72h reads better than 3d
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _change(value: float | None, alert_pct: float, higher_is_worse: bool) -> Text:
    if value is None:
        return Text("–")
    flagged = abs(value) > alert_pct
    worse = value > 0 if higher_is_worse else value < 0
    style = ("bold red" if worse else "bold green") if flagged else ""
    shown = round(value, 1 if abs(value) < 10 else 0) + 0.0  # + 0.0: no "-0.0%"
    return Text(f"{shown:+g}%" + ("!" if flagged else ""), style=style)


_OUTCOME_STYLE = {UP: "green", "degraded": "yellow", DOWN: "bold red"}


def _when(at: float) -> str:
    """Today's probes by time of day, older ones with their date."""
    local = time.localtime(at)
    same_day = time.strftime("%Y-%m-%d", local) == time.strftime("%Y-%m-%d")
    return time.strftime("%H:%M:%S" if same_day else "%m-%d %H:%M", local)


def trend_table(trends: Sequence[EndpointTrend], *, title: str) -> Table:
    """Latest probe, rolling medians and changes per endpoint (Δ = latest vs median of earlier probes)."""
    several_workloads = len({t.workload for t in trends}) > 1
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    # the labels stay whole on a narrow terminal; the number columns give way first
    table.add_column("endpoint", style="bold", min_width=min(24, max([8, *(len(t.endpoint) for t in trends)])))
    if several_workloads:
        table.add_column("workload")
    table.add_column("last probe", min_width=8)
    table.add_column("status", min_width=8)
    for name in ("TTFT ms", "med", "Δ", "tok/s", "med", "Δ", "E2E ms", "med", "Δ", "probes", "avail."):
        table.add_column(name, justify="right")
    for t in trends:
        row: list[Any] = [t.endpoint]
        if several_workloads:
            row.append(t.workload)
        row += [
            _when(t.last_at),
            Text(t.last_outcome, style=_OUTCOME_STYLE.get(t.last_outcome, "")),
            _num(t.ttft_p50_ms),
            _num(t.ttft_median_ms),
            _change(t.ttft_change_pct, t.alert_pct, higher_is_worse=True),
            _num(t.output_speed_p50),
            _num(t.output_speed_median),
            _change(t.output_speed_change_pct, t.alert_pct, higher_is_worse=False),
            _num(t.e2e_p50_ms),
            _num(t.e2e_median_ms),
            _change(t.e2e_change_pct, t.alert_pct, higher_is_worse=True),
            str(t.probes),
            f"{t.availability * 100:.0f}%",
        ]
        table.add_row(*row)
    return table


def _print_trends(trends: Sequence[EndpointTrend], window_s: float, alert_pct: float) -> None:
    if not trends:
        console.print(f"no finished probe in the last {_span(window_s)} (interrupted probes are not counted)")
        return
    title = (
        f"latest probe (p50s) and rolling medians over {_span(window_s)}; Δ = latest vs the median of the "
        f"earlier probes in the window, ! beyond ±{alert_pct:g}%; avail. = probes not down"
    )
    console.print(trend_table(trends, title=title))
    for t in trends:
        if t.last_outcome == DOWN:
            why = t.last_error or "no request completed"
            console.print(f"  {t.endpoint}: down at the last probe ({why}); run {t.last_run_id}", highlight=False)
        if t.error_categories:
            errors = ", ".join(f"{k} {n}" for k, n in t.error_categories.items())
            console.print(
                f"  {t.endpoint}: {t.failed_requests} of {t.requests} requests failed in the window ({errors})",
                highlight=False,
            )


def _endpoints(config: str | None, names: str | None) -> list[EndpointConfig]:
    path = find_config(config)
    if path is None:
        raise UserError(
            "no endpoints config found (looked for --config, $TOKENRACE_CONFIG, ./tokenrace.yaml, "
            "./tokenrace.toml); the monitor probes the endpoints it names"
        )
    cfg = load_config(path)
    if not names:
        return list(cfg.endpoints)
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    if not chosen:
        raise UserError("--endpoints needs at least one endpoint name")
    return [cfg.endpoint(n) for n in dict.fromkeys(chosen)]


@app.command()
def monitor(
    every: Annotated[str, typer.Option("--every", help="time between probes, e.g. 3h, 30m")] = "3h",
    endpoints: Annotated[
        str | None,
        typer.Option("--endpoints", "-e", help="comma-separated names (default: every endpoint in the config)"),
    ] = None,
    config: Annotated[str | None, typer.Option("--config", help="endpoints file (YAML or TOML)")] = None,
    requests: Annotated[int, typer.Option("--requests", "-n", help="requests per probe")] = DEFAULT_REQUESTS,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="in flight during a probe")] = 1,
    workload: Annotated[
        str, typer.Option("--workload", "-w", help="synthetic:input=N,output=M, chat or jsonl:PATH")
    ] = DEFAULT_WORKLOAD,
    window: Annotated[str, typer.Option("--window", help="rolling-median window, e.g. 72h, 7d")] = "72h",
    count: Annotated[
        int | None, typer.Option("--count", help="stop after N rounds (default: run until stopped)")
    ] = None,
    alert: Annotated[str, typer.Option("--alert", help="flag a change beyond this, e.g. 20%")] = "20%",
    report: Annotated[bool, typer.Option("--report", help="print the rolling table from the store; no probes")] = False,
    store: StoreOpt = None,
) -> None:
    """Probe endpoints on a schedule with fresh prompts; print rolling medians and changes after each round.

    A probe is a small ordinary benchmark run (5 requests, one at a time, prompts no server has seen)
    stored like any run. The first round starts at once; a round that overruns skips the slots it missed.
    Unreachable endpoints, 429s, 5xx and cut streams are recorded as failed probes or request errors and
    never stop the monitor. Ctrl-C or SIGTERM stops it, keeping every stored result (exit 0).
    --report prints the table from the store without probing.

    Run it as a service with a systemd unit, e.g. /etc/systemd/system/tokenrace-monitor.service:

    \b
      [Unit]
      Description=tokenrace endpoint monitor
      After=network-online.target
      Wants=network-online.target
      [Service]
      WorkingDirectory=/srv/tokenrace
      EnvironmentFile=/srv/tokenrace/keys.env
      ExecStart=/srv/tokenrace/.venv/bin/tokenrace monitor --every 3h --config tokenrace.yaml --store monitor.db
      Restart=on-failure
      RestartSec=60
      [Install]
      WantedBy=multi-user.target

    then `systemctl enable --now tokenrace-monitor` and `journalctl -u tokenrace-monitor -f`.
    From cron, `tokenrace monitor --count 1` runs one round and exits.
    """
    with _user_errors():
        every_s = _duration("--every", every)
        window_s = _duration("--window", window)
        alert_pct = _percent("--alert", alert)
        if requests < 1:
            raise UserError("--requests must be >= 1")
        if concurrency < 1:
            raise UserError("--concurrency must be >= 1")
        if count is not None and count < 1:
            raise UserError("--count must be >= 1")
        if report:
            names = [n.strip() for n in endpoints.split(",") if n.strip()] if endpoints else None
            db = Store.open(store)
            _report(db, window_s, alert_pct, names)
            db.close()
            return
        targets = _endpoints(config, endpoints)
        fresh = FreshWorkload(parse_workload(workload))
        for endpoint in targets:
            endpoint.api_key()  # a missing secret is bad input, reported before the first probe
        db = Store.open(store)
    args = {"workload": workload, "every": every, "requests": requests, "concurrency": concurrency, "count": count}
    names = [t.name for t in targets]

    def on_round(done: RoundReport) -> None:
        down = sum(p.outcome == DOWN for p in done.points)
        head = f"round {done.index + 1}: {len(done.points)} probes" + (f", {down} down" if down else "")
        if done.skipped:
            head += f"; it overran, {done.skipped} round(s) skipped"
        console.print(head, highlight=False)
        for name, error in done.errors.items():
            err_console.print(f"  {name}: probe failed and left no run: {error}", highlight=False)
        try:
            points = monitor_series(db, window_s=window_s, endpoints=names, workload=fresh.name)
        except Exception as exc:  # a store that is down for a moment must not end the monitor
            err_console.print(f"  cannot read the series from {db.location}: {exc}", highlight=False)
        else:
            _print_trends(rolling_summary(points, window_s, alert_pct=alert_pct), window_s, alert_pct)
        if done.next_at is not None:
            console.print(f"next round at {time.strftime('%H:%M:%S', time.localtime(done.next_at))}", highlight=False)

    with _user_errors(), contextlib.ExitStack() as engines:
        ready: list[EndpointConfig] = []
        engine_info: dict[str, dict[str, Any]] = {}
        for endpoint in targets:
            if endpoint.is_local:  # one engine for the monitor's lifetime, not one per probe
                from tokenrace.engines.local import running_endpoint

                log = lambda line: err_console.print(f"  {line}", highlight=False)  # noqa: E731
                endpoint, info = engines.enter_context(running_endpoint(endpoint, log=log))
                engine_info[endpoint.name] = {"engine": info}
            ready.append(endpoint)
        console.print(
            f"monitoring {', '.join(names)} every {_span(every_s)} ({requests} requests of {fresh.name} per probe"
            f"{f', {concurrency} in flight' if concurrency > 1 else ''}"
            f"{f', {count} round(s)' if count else ''}); results stored in {db.location}; Ctrl-C to stop",
            highlight=False,
        )

        async def main() -> Any:
            stop = asyncio.Event()
            _install_sigint(stop)
            return await run_monitor(
                ready,
                db,
                fresh,
                every_s=every_s,
                requests=requests,
                concurrency=concurrency,
                count=count,
                stop=stop,
                extra_config=engine_info,
                cli_args=args,
                on_round=on_round,
            )

        result = run_async(main())
    ended = "stopped" if result.stopped else "done"
    console.print(
        f"{ended} after {result.rounds} round(s) of monitor {result.monitor_id}; stored in {db.location}; "
        f"see [bold]tokenrace monitor --report[/] and [bold]tokenrace runs[/]"
    )
    db.close()


def _report(db: Store, window_s: float, alert_pct: float, names: list[str] | None) -> None:
    points = monitor_series(db, window_s=window_s, endpoints=names)
    if not points:
        console.print(
            f"no monitor probes in {db.location} in the last {_span(window_s)}"
            + (f" for {', '.join(names)}" if names else "")
            + ": run `tokenrace monitor --every 3h` first (or `tokenrace monitor --count 1` for one round)",
            highlight=False,
        )
        return
    _print_trends(rolling_summary(points, window_s, alert_pct=alert_pct), window_s, alert_pct)
    console.print(f"{len(points)} probes read from {db.location}", highlight=False)
