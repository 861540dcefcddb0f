"""One benchmark run, end to end: preflight, run metadata, load, durable records, summary.

The run row is written before the first request and every record as it finishes, so Ctrl-C or a crash
leaves a labelled, partial run in the store (status ``interrupted`` or ``failed``; ``running`` if the
process was killed outright).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import secrets
import socket
import sys
import time
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any

from tokenrace import __version__
from tokenrace.clients import EndpointClient
from tokenrace.config import EndpointConfig, Price
from tokenrace.http import HTTPClientError, probe
from tokenrace.loadgen import LiveStats, LoadResult, run_load
from tokenrace.metrics import SLO, summarize
from tokenrace.pricing import price_for_stored, run_cost
from tokenrace.profiles import LoadProfile, sweep_rates
from tokenrace.records import RunClock, RunInfo
from tokenrace.store import RecordWriter, Store
from tokenrace.workloads import RequestSource


class PreflightError(RuntimeError):
    """The endpoint cannot be reached: reported in one line before any run is created."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def versions() -> dict[str, str]:
    found = {"tokenrace": __version__, "python": sys.version.split()[0]}
    for package in ("httptools", "uvloop", "orjson", "tiktoken", "numpy", "sqlalchemy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "pid": os.getpid(),
    }


async def preflight(endpoint: EndpointConfig) -> None:
    try:
        await probe(endpoint.base_url, timeout=min(endpoint.timeouts.connect_s, 5.0))
    except HTTPClientError as exc:
        raise PreflightError(f"endpoint '{endpoint.name}' ({endpoint.base_url}) is unreachable: {exc}") from exc


def make_client(endpoint: EndpointConfig, clock: RunClock) -> EndpointClient:
    return EndpointClient(
        name=endpoint.name,
        api=endpoint.api,
        base_url=endpoint.base_url,
        model=endpoint.model,
        origin=clock.origin,
        api_key=endpoint.api_key(),
        headers=dict(endpoint.headers),
        connect_timeout_s=endpoint.timeouts.connect_s,
        first_token_timeout_s=endpoint.timeouts.first_token_s,
        idle_timeout_s=endpoint.timeouts.idle_s,
        total_timeout_s=endpoint.timeouts.total_s,
    )


@dataclass
class BenchResult:
    run: RunInfo
    summary: dict[str, Any]
    load: LoadResult


async def run_bench(
    endpoint: EndpointConfig,
    workload: RequestSource,
    profile: LoadProfile,
    store: Store,
    *,
    slo: SLO | None = None,
    stop: asyncio.Event | None = None,
    stats: LiveStats | None = None,
    cli_args: dict[str, Any] | None = None,
    skip_preflight: bool = False,
    extra_profile: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> BenchResult:
    """Benchmark one endpoint; records stream into ``store`` as they finish."""
    if not skip_preflight:
        await preflight(endpoint)
    clock = RunClock()
    client = make_client(endpoint, clock)
    run = RunInfo(
        run_id=new_run_id(),
        started_at=clock.wall_origin,
        endpoint=endpoint.name,
        workload=workload.name,
        profile={**profile.describe(), **(extra_profile or {})},
        config={
            "endpoint": endpoint.public_dict(),
            "args": cli_args or {},
            # record times are seconds after this perf_counter value: lets a reader line them up with
            # other monotonic timestamps taken on the same host (server logs, the emulator's write times)
            "clock": {"monotonic_origin": clock.origin, "wall_origin": clock.wall_origin},
            **(extra_config or {}),
        },
        versions=versions(),
        host=host_info(),
    )
    store.create_run(run)
    writer = RecordWriter(store)
    status = "failed"
    load: LoadResult | None = None
    try:
        load = await run_load(
            client,
            workload,
            profile,
            run_id=run.run_id,
            on_record=writer.put,
            stop=stop,
            stats=stats,
            max_concurrency=endpoint.max_concurrency,
        )
        status = "interrupted" if load.interrupted else "complete"
    except (KeyboardInterrupt, asyncio.CancelledError):
        status = "interrupted"
        raise
    finally:
        await client.aclose()
        writer.close()  # every finished record is on disk before the run is closed
        records = store.records(run.run_id)
        summary = run_summary(run, records, slo)
        store.finish_run(run.run_id, status, summary, time.time())
        run = replace(run, status=status, summary=summary)
    assert load is not None
    return BenchResult(run=run, summary=summary, load=load)


def run_summary(run: RunInfo, records: list[Any], slo: SLO | None = None) -> dict[str, Any]:
    """The ``--json`` summary: run identity first, then every metric section, then what it cost."""
    summary = {
        "run_id": run.run_id,
        "endpoint": run.endpoint,
        "workload": run.workload,
        "profile": run.profile,
        **summarize(records, slo=slo),
    }
    price, source = run_price(run)
    endpoint = (run.config or {}).get("endpoint") or {}
    cost = run_cost(records, price, price_per_hour=endpoint.get("price_per_hour"), duration_s=summary.get("duration_s"))
    summary["cost"] = {"price_source": source, "price": price.model_dump() if price else None, **cost}
    return summary


def run_price(run: RunInfo) -> tuple[Price | None, str]:
    """The price a stored run is billed at, from its stored endpoint config (same rules as live)."""
    return price_for_stored((run.config or {}).get("endpoint") or {})


async def run_sweep(
    endpoint: EndpointConfig,
    workload: RequestSource,
    profile: LoadProfile,
    store: Store,
    *,
    steps: int = 5,
    saturation_concurrency: int = 32,
    error_budget: float = 0.05,
    slo: SLO | None = None,
    stop: asyncio.Event | None = None,
    on_step: Any = None,
) -> list[BenchResult]:
    """Find the endpoint's maximum throughput, then run evenly spaced rates up to it.

    Stops early when the endpoint saturates — the achieved rate falls below 90% of the target while TTFT
    p50 keeps rising — or when the share of failed requests exceeds ``error_budget``.
    """
    sweep_id = new_run_id()
    await preflight(endpoint)
    results: list[BenchResult] = []
    throughput_profile = replace(profile, kind="concurrency", rate=None, concurrency=saturation_concurrency)
    first = await run_bench(
        endpoint,
        workload,
        throughput_profile,
        store,
        slo=slo,
        stop=stop,
        skip_preflight=True,
        extra_profile={"sweep": sweep_id, "sweep_step": "max-throughput"},
    )
    results.append(first)
    if on_step:
        on_step(first)
    max_rps = first.summary["throughput"]["requests_per_s"] or 0.0
    if max_rps <= 0 or (stop is not None and stop.is_set()):
        return results
    previous_ttft: float | None = None
    kind = profile.kind if profile.kind in ("constant", "poisson", "gamma") else "constant"
    for index, rate in enumerate(sweep_rates(max_rps, steps)):
        step_profile = replace(profile, kind=kind, rate=rate, concurrency=profile.concurrency)
        result = await run_bench(
            endpoint,
            workload,
            step_profile,
            store,
            slo=slo,
            stop=stop,
            skip_preflight=True,
            extra_profile={"sweep": sweep_id, "sweep_step": index, "target_rps": rate},
        )
        results.append(result)
        if on_step:
            on_step(result)
        if stop is not None and stop.is_set():
            break
        requests = result.summary["requests"]
        finished = requests["completed"] + requests["failed"]
        if finished and requests["failed"] / finished > error_budget:
            break
        achieved = result.summary["throughput"]["requests_per_s"] or 0.0
        ttft = result.summary["metrics"]["ttft_ms"]["p50"]
        rising = previous_ttft is not None and ttft is not None and ttft > previous_ttft * 1.5
        if achieved < 0.9 * rate and rising:
            break
        previous_ttft = ttft
    return results
