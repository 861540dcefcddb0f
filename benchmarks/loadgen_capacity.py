"""Load-generator capacity and timing accuracy, against the emulator on 127.0.0.1.

    .venv/bin/python benchmarks/loadgen_capacity.py [--quick]

Prints one table. The emulator runs in its own process; the load generator, the clients and the SQLite
record writer run in this one, exactly as `tokenrace bench` runs them, and client CPU is this process's
user+system time (writer thread included) divided by the requests it completed.

1. capacity: closed loop, instant-mode emulator (64 one-token chunks per stream), as fast as it goes;
2. schedule lag: constant-rate open loop at 100, 500 and 1000 requests/s;
3. TTFT error: 64 concurrent streams against a scripted 50 ms TTFT (10 ms ITL); the error against the
   script, and the client's own stamping error against the emulator's write times (same monotonic clock).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import uvloop
from rich.console import Console
from rich.table import Table

from tokenrace.bench import run_bench
from tokenrace.config import EndpointConfig
from tokenrace.emulator import EmulatorProcess, EmulatorSettings
from tokenrace.metrics import schedule_lag_ms, ttft_ms
from tokenrace.profiles import LoadProfile
from tokenrace.records import OK, PHASE_MEASURE
from tokenrace.store import Store
from tokenrace.workloads import parse_workload


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(endpoint: EndpointConfig, store: Store, profile: LoadProfile, workload: str) -> dict:
    cpu_before = cpu_seconds()
    result = await run_bench(endpoint, parse_workload(workload), profile, store)
    cpu = cpu_seconds() - cpu_before
    measured = [r for r in result.load.records if r.phase == PHASE_MEASURE]
    ok = [r for r in measured if r.status == OK]
    lags = np.array([schedule_lag_ms(r) for r in measured if r.sent_s is not None])
    return {
        "summary": result.summary,
        "ok": ok,
        "completed": len(ok),
        "failed": len(measured) - len(ok),
        "rps": result.summary["throughput"]["requests_per_s"],
        "cpu_ms_per_request": cpu * 1000 / max(len(result.load.records), 1),
        "lag_p50": float(np.percentile(lags, 50)),
        "lag_p99": float(np.percentile(lags, 99)),
    }


def add_row(table: Table, scenario: str, row: dict) -> None:
    table.add_row(
        scenario,
        f"{row['completed']:,}",
        str(row["failed"]),
        f"{row['rps']:,.0f}",
        f"{row['cpu_ms_per_request']:.3f}",
        f"{row['lag_p50']:.3f}",
        f"{row['lag_p99']:.3f}",
    )


async def main(quick: bool) -> None:
    console = Console(width=150)
    table = Table(title="tokenrace load generator vs the emulator (one client process)", title_justify="left")
    for column in ("scenario", "completed", "failed", "req/s", "client CPU ms/req", "lag p50 ms", "lag p99 ms"):
        table.add_column(column, justify="right" if column != "scenario" else "left")
    accuracy = Table(title="TTFT accuracy, 64 concurrent streams, scripted TTFT 50 ms", title_justify="left")
    for column in ("error", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        accuracy.add_column(column, justify="right" if column != "error" else "left")
    workload = "synthetic:input=32,output=64"
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(str(Path(tmp) / "bench.db"))
        with EmulatorProcess(EmulatorSettings(ttft_ms=0, itl_ms=0, tokens=64)) as emu:
            endpoint = EndpointConfig.adhoc(emu.base_url, "openai-chat", "emulator", name="emulator")
            total = 5_000 if quick else 20_000
            for concurrency in (32, 128):
                profile = LoadProfile(kind="concurrency", concurrency=concurrency, requests=total, warmup_requests=200)
                row = await measure(endpoint, store, profile, workload)
                add_row(table, f"capacity, closed loop, {concurrency} streams", row)
            seconds = 3 if quick else 6
            for rate in (100, 500, 1000):
                profile = LoadProfile(kind="constant", rate=rate, requests=rate * seconds, warmup_requests=50)
                row = await measure(endpoint, store, profile, workload)
                add_row(table, f"constant rate {rate}/s", row)
        with EmulatorProcess(EmulatorSettings(ttft_ms=50, itl_ms=10, tokens=64, timings=True)) as emu:
            endpoint = EndpointConfig.adhoc(emu.base_url, "openai-chat", "emulator", name="emulator")
            requests = 640 if quick else 1280
            profile = LoadProfile(kind="concurrency", concurrency=64, requests=requests, warmup_requests=64)
            result = await run_bench(endpoint, parse_workload(workload), profile, store)
            origin = result.run.config["clock"]["monotonic_origin"]
            ok = [r for r in result.load.records if r.phase == PHASE_MEASURE and r.status == OK]
            script_error = np.array([ttft_ms(r) - 50.0 for r in ok])
            stamp_error = np.array(
                [(r.first_token_s + origin - r.server_timings["emulator"]["first_token_sent"]) * 1000 for r in ok]
            )
            for label, values in (
                ("measured TTFT − scripted 50 ms", script_error),
                ("client stamp − emulator write time", stamp_error),
            ):
                accuracy.add_row(
                    label, *(f"{np.percentile(values, q):.3f}" for q in (50, 90, 99)), f"{values.max():.3f}"
                )
        store.close()
    console.print(table)
    console.print(accuracy)
    console.print(f"python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}, uvloop {uvloop.__version__}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests (about 1 minute)")
    uvloop.run(main(parser.parse_args().quick))
