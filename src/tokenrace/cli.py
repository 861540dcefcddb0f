"""Command line: ``tokenrace bench | runs | show | export | emulate | demo``.

Errors a user can cause (bad config, unknown endpoint or workload, unreachable endpoint) print one clear
line and exit with status 2 (bad input) or 1 (endpoint unreachable); no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from tokenrace.config import ConfigError, EndpointConfig, UnknownEndpointError, find_config, load_config
from tokenrace.loadgen import LiveStats
from tokenrace.metrics import parse_slo
from tokenrace.profiles import LoadProfile, profile_from_cli
from tokenrace.report import runs_table, summary_renderable
from tokenrace.store import Store, UnknownRunError
from tokenrace.workloads import WorkloadError, parse_workload

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Measure, rank and route LLM endpoints by speed, quality and cost.",
    pretty_exceptions_enable=False,
)


def _width(stream: Any) -> int | None:
    """Piped output (CI logs, `| tee`) gets $COLUMNS or 132 columns instead of rich's 80."""
    if stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() else 132


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))

T = TypeVar("T")


class UserError(Exception):
    """Bad input: printed as one line, exit status 2."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    from tokenrace.bench import PreflightError

    try:
        yield
    except (ConfigError, UnknownEndpointError, WorkloadError, UnknownRunError, UserError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except PreflightError as exc:
        raise _fail(str(exc), code=1) from None


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when available (lower per-request overhead, same semantics)."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _resolve_endpoint(
    endpoint: str | None, config: str | None, base_url: str | None, api: str, model: str | None
) -> EndpointConfig:
    if base_url:
        if not model:
            raise UserError("--base-url needs --model")
        return EndpointConfig.adhoc(base_url, api, model, name=endpoint)
    path = find_config(config)
    if path is None:
        raise UserError(
            "no endpoints config found (looked for --config, $TOKENRACE_CONFIG, ./tokenrace.yaml, "
            "./tokenrace.toml); copy tokenrace.example.yaml to tokenrace.yaml, or pass --base-url and --model"
        )
    cfg = load_config(path)
    if not endpoint:
        if len(cfg.endpoints) == 1:
            return cfg.endpoints[0]
        raise UserError(f"--endpoint is required; endpoints in {path}: {', '.join(cfg.names())}")
    return cfg.endpoint(endpoint)


StoreOpt = Annotated[
    str | None, typer.Option("--store", help="SQLite path or postgresql:// URL [default: ./tokenrace.db]")
]


@app.command()
def bench(
    endpoint: Annotated[str | None, typer.Option("--endpoint", "-e", help="endpoint name from the config")] = None,
    workload: Annotated[
        str, typer.Option("--workload", "-w", help="synthetic:input=N,output=M[,ignore_eos=1] or jsonl:PATH")
    ] = "synthetic:input=256,output=128",
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="requests in flight (cap when --rate is set)")
    ] = None,
    requests: Annotated[int | None, typer.Option("--requests", "-n", help="measured requests")] = None,
    rate: Annotated[float | None, typer.Option("--rate", "-r", help="requests per second (open loop)")] = None,
    arrival: Annotated[
        str | None, typer.Option("--arrival", help="constant | poisson | gamma:B (B = burstiness)")
    ] = None,
    duration: Annotated[str | None, typer.Option("--duration", "-d", help="stop after e.g. 60s, 5m")] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="requests sent first and excluded")] = 0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    slo: Annotated[str | None, typer.Option("--slo", help="goodput SLOs, e.g. ttft=500ms,tpot=50ms")] = None,
    sweep: Annotated[bool, typer.Option("--sweep", help="max throughput, then evenly spaced rates")] = False,
    sweep_steps: Annotated[int, typer.Option("--sweep-steps")] = 5,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the summary as JSON here")] = None,
    config: Annotated[str | None, typer.Option("--config", help="endpoints file (YAML or TOML)")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="ad-hoc endpoint, no config")] = None,
    api: Annotated[str, typer.Option("--api", help="API of --base-url")] = "openai-chat",
    model: Annotated[str | None, typer.Option("--model", help="model of --base-url")] = None,
    store: StoreOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no live progress")] = False,
) -> None:
    """Benchmark one endpoint: stream requests on a load profile, store every record, print the table."""
    from tokenrace.bench import run_bench, run_sweep

    with _user_errors():
        endpoint_cfg = _resolve_endpoint(endpoint, config, base_url, api, model)
        workload_spec = parse_workload(workload)
        profile = profile_from_cli(concurrency, rate, arrival, requests, duration, warmup, seed)
        slo_spec = parse_slo(slo) if slo else None
        endpoint_cfg.api_key()  # a missing secret is bad input, reported before anything starts
        db = Store.open(store)
    args = {
        "workload": workload,
        "concurrency": concurrency,
        "requests": requests,
        "rate": rate,
        "arrival": arrival,
        "duration": duration,
        "warmup": warmup,
        "seed": seed,
        "slo": slo,
    }
    stats = LiveStats()

    async def main() -> Any:
        stop = asyncio.Event()
        _install_sigint(stop)
        async with _progress(stats, quiet or sweep, _total(profile)):
            if sweep:
                return await run_sweep(
                    endpoint_cfg,
                    workload_spec,
                    profile,
                    db,
                    steps=sweep_steps,
                    slo=slo_spec,
                    stop=stop,
                    on_step=lambda r: console.print(summary_renderable(r.summary)),
                )
            return await run_bench(
                endpoint_cfg, workload_spec, profile, db, slo=slo_spec, stop=stop, stats=stats, cli_args=args
            )

    with _user_errors():
        outcome = run_async(main())
    results = outcome if sweep else [outcome]
    if not sweep:
        console.print(summary_renderable(outcome.summary))
    if json_out is not None:
        payload = [r.summary for r in results] if sweep else outcome.summary
        json_out.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
        console.print(f"summary written to {json_out}")
    console.print(f"stored in {db.location}; see [bold]tokenrace runs[/] and [bold]tokenrace show RUN[/]")
    db.close()
    if any(r.load.interrupted for r in results):
        err_console.print("interrupted: every finished request was kept; the run is marked interrupted")
        raise typer.Exit(130)


def _total(profile: LoadProfile) -> int | None:
    return None if profile.requests is None else profile.requests + profile.warmup_requests


def _install_sigint(stop: asyncio.Event) -> None:
    """First Ctrl-C: stop sending, cancel in-flight requests, keep everything finished. Second: abort."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def on_sigint() -> None:
        if stop.is_set():
            if main_task is not None:
                main_task.cancel()
            return
        stop.set()
        err_console.print("\nstopping: in-flight requests cancelled, finished ones kept (Ctrl-C again to abort)")

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, on_sigint)


@contextlib.asynccontextmanager
async def _progress(stats: LiveStats, quiet: bool, total: int | None = None) -> AsyncIterator[None]:
    """Live bar: finished/total, req/s, TTFT p50 of recent requests, errors (refreshed 4x a second)."""
    if quiet or not console.is_terminal:
        yield
        return
    columns = (
        SpinnerColumn(),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rps]} req/s  TTFT p50 {task.fields[ttft]}  in flight {task.fields[busy]}"),
        TextColumn("[red]{task.fields[errors]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("bench", total=total, rps="–", ttft="–", busy=0, errors="")

        async def refresh() -> None:
            while True:
                p50 = stats.p50_ttft_ms()
                progress.update(
                    task,
                    completed=stats.completed + stats.failed + stats.incomplete,
                    rps=f"{stats.requests_per_s():.1f}",
                    ttft=f"{p50:.1f} ms" if p50 is not None else "–",
                    busy=stats.in_flight,
                    errors=f"{stats.failed} errors" if stats.failed else "",
                )
                await asyncio.sleep(0.25)

        updater = asyncio.create_task(refresh())
        try:
            yield
        finally:
            updater.cancel()


@app.command()
def runs(
    store: StoreOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
) -> None:
    """List stored runs, newest first."""
    db = Store.open(store)
    found = db.list_runs(limit)
    if not found:
        console.print("no runs yet: run `tokenrace bench` (or `tokenrace demo`) first")
        return
    console.print(runs_table(found))


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="run id or a unique prefix")],
    store: StoreOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    slo: Annotated[str | None, typer.Option("--slo", help="recompute goodput under these SLOs")] = None,
) -> None:
    """Show one run's summary, recomputed from its stored records."""
    from tokenrace.bench import run_summary

    with _user_errors():
        db = Store.open(store)
        run = db.get_run(run_id)
        summary = run_summary(run, db.records(run.run_id), parse_slo(slo) if slo else None)
    summary["status"] = run.status
    if json_out:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if Store.is_incomplete(run):
        console.print("status: running — or incomplete: no end was recorded (the process may have been killed)")
    else:
        console.print(f"status: {run.status}")
    console.print(summary_renderable(summary))


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="run id or a unique prefix")],
    output: Annotated[Path, typer.Option("--output", "-o", help="file .json, .csv or .parquet")],
    fmt: Annotated[str | None, typer.Option("--format", help="json | csv | parquet")] = None,
    store: StoreOpt = None,
) -> None:
    """Export a run's records to JSON, CSV or Parquet."""
    from tokenrace.export import export_run

    with _user_errors():
        db = Store.open(store)
        run = db.get_run(run_id)
        path = export_run(db, run.run_id, output, fmt)
    console.print(f"wrote {path}")


@app.command()
def emulate(
    port: Annotated[int, typer.Option("--port", "-p")] = 8765,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    api: Annotated[str, typer.Option("--api", help="openai | anthropic | all")] = "all",
    ttft_ms: Annotated[float, typer.Option("--ttft-ms")] = 50.0,
    itl_ms: Annotated[float, typer.Option("--itl-ms")] = 10.0,
    tokens: Annotated[int, typer.Option("--tokens")] = 64,
    tokens_per_chunk: Annotated[int, typer.Option("--tokens-per-chunk")] = 1,
    reasoning_tokens: Annotated[int, typer.Option("--reasoning-tokens")] = 0,
    jitter: Annotated[str, typer.Option("--jitter", help="none | uniform:A | normal:S | exp:M (ms)")] = "none",
    fault: Annotated[
        list[str] | None, typer.Option("--fault", help="KIND:RATE, kinds 429 500 refuse cut malformed stall")
    ] = None,
    no_usage: Annotated[bool, typer.Option("--no-usage", help="never report usage")] = False,
    timings: Annotated[
        bool, typer.Option("--timings", help="llama.cpp-style server timings in scripted OpenAI streams")
    ] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Serve OpenAI/Anthropic-format SSE with scripted timing and injected faults (a test upstream)."""
    from tokenrace.emulator import EmulatorSettings, parse_faults, parse_jitter, run_emulator

    with _user_errors():
        parse_jitter(jitter)
        settings = EmulatorSettings(
            api=api,
            ttft_ms=ttft_ms,
            itl_ms=itl_ms,
            tokens=tokens,
            tokens_per_chunk=tokens_per_chunk,
            reasoning_tokens=reasoning_tokens,
            jitter=jitter,
            faults=parse_faults(",".join(fault or [])),
            seed=seed,
            usage=not no_usage,
            timings=timings,
        )

    def ready(bound: int) -> None:
        console.print(f"emulator on http://{host}:{bound}/v1 (api {api}, TTFT {ttft_ms:g} ms, ITL {itl_ms:g} ms)")

    run_emulator(settings, host, port, ready=ready)


@app.command()
def demo(
    store: StoreOpt = None,
    requests: Annotated[int, typer.Option("--requests", "-n")] = 200,
) -> None:
    """The main job on embedded defaults. Until the local engine lands, it benchmarks the emulator."""
    from tokenrace.bench import run_bench
    from tokenrace.emulator import EmulatorProcess, EmulatorSettings

    console.print(
        "[bold]tokenrace demo[/] — the local-model engine is not built yet, so this demo benchmarks the "
        "built-in [bold]provider emulator[/] (scripted TTFT 80 ms, ITL 12 ms, 64 tokens; a few injected "
        "faults) over real HTTP on 127.0.0.1. Every number below is measured, not scripted into the report."
    )
    settings = EmulatorSettings(ttft_ms=80, itl_ms=12, tokens=64, faults={"429": 0.02, "cut": 0.01}, seed=7)
    db = Store.open(store)
    with EmulatorProcess(settings) as emulator:
        endpoint = EndpointConfig.adhoc(emulator.base_url, "openai-chat", "emulator", name="emulator")
        workload = parse_workload("synthetic:input=512,output=64")
        profile = LoadProfile(kind="concurrency", concurrency=16, requests=requests, warmup_requests=16)
        stats = LiveStats()

        async def main() -> Any:
            stop = asyncio.Event()
            _install_sigint(stop)
            async with _progress(stats, False, _total(profile)):
                return await run_bench(endpoint, workload, profile, db, stop=stop, stats=stats)

        result = run_async(main())
    console.print(summary_renderable(result.summary))
    console.print(
        f"stored in {db.location}. Next: [bold]tokenrace show {result.run.run_id}[/], "
        "[bold]tokenrace export RUN -o run.parquet[/], or benchmark your own endpoint with "
        "[bold]tokenrace bench --base-url URL --model NAME[/] (see tokenrace.example.yaml)."
    )
    db.close()
