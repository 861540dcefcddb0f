"""What the gateway costs: added latency, CPU per request, maximum rate and memory, against calling directly.

One emulator process is the upstream (scripted: first token after 5 ms, 16 tokens 1 ms apart); one
`tokenrace serve` process (uvloop + httptools, telemetry into SQLite) sits in front of it; this process drives
both with tokenrace's own HTTP client, alternating direct and gateway blocks so both see the same machine.

- added latency: p50/p99 of (through the gateway) minus p50/p99 of (direct), non-streaming (whole response)
  and streaming (time to the first chunk carrying a token), at concurrency 1 and at constant 100 and 500 requests/s;
- gateway CPU per request: user+system time of the gateway process over a block, divided by its requests;
- maximum rate: completed non-streaming requests/s through the gateway at 64 in flight;
- memory: the gateway's RSS before and after `--total` requests (default 100,000).

Usage: .venv/bin/python benchmarks/gateway_overhead.py [--quick] [--total 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import uvloop

from tokenrace.emulator import EmulatorProcess, EmulatorSettings
from tokenrace.http import ConnectionPool

BODY = {"model": "emu", "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 16}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


FIRST_TOKEN = b'"content":"'  # a delta with text (the role-only opening chunk carries "content":"")
EMPTY = b'"content":""'


async def one(pool: ConnectionPool, body: bytes, stream: bool) -> float:
    """Seconds from send to the whole body (non-streaming) or to the first chunk carrying a token (streaming).

    The first *token* is what a user waits for; the gateway holds the role-only opening chunk back until the
    upstream's first token arrives (so it can still fall back), so time to the first byte would compare
    different things.
    """
    started = time.perf_counter()
    response, _ = await pool.request("POST", "/chat/completions", HEADERS, body)
    await response.wait_headers(30.0)
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {await response.read_all(30.0)!r}")
    if not stream:
        await response.read_all(30.0)
        return time.perf_counter() - started
    at = None
    while pieces := await response.next_chunks(30.0):
        for arrived, data in pieces:
            if at is None and data.replace(EMPTY, b"").find(FIRST_TOKEN) >= 0:
                at = arrived
    if at is None:
        raise RuntimeError("stream without a token")
    return at - started


async def sequential(pool: ConnectionPool, body: bytes, stream: bool, n: int) -> list[float]:
    return [await one(pool, body, stream) for _ in range(n)]


async def at_rate(pool: ConnectionPool, body: bytes, stream: bool, rate: float, seconds: float) -> list[float]:
    """Constant-rate open loop: request k is sent at k/rate whatever happened to the others."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks = []
    for k in range(int(rate * seconds)):
        delay = start + k / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(pool, body, stream)))
    return list(await asyncio.gather(*tasks))


async def closed_loop(pool: ConnectionPool, body: bytes, concurrency: int, total: int) -> float:
    """Completed requests per second with ``concurrency`` in flight until ``total`` are done."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one(pool, body, False)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


async def measure(args: argparse.Namespace, direct_url: str, gateway_url: str, gateway_pid: int) -> None:
    direct = ConnectionPool(direct_url)
    gateway = ConnectionPool(gateway_url)
    plain = orjson.dumps(BODY)
    streamed = orjson.dumps({**BODY, "stream": True})
    n_seq = 300 if args.quick else 2000
    seconds = 3.0 if args.quick else 10.0
    rows: list[tuple[str, str, float, float, float, float, float | None]] = []
    for stream, body, label in (
        (False, plain, "non-streaming (whole response)"),
        (True, streamed, "streaming (first token)"),
    ):
        await sequential(gateway, body, stream, 50)  # warm both paths
        await sequential(direct, body, stream, 50)
        for load in ("c=1", "100/s", "500/s"):
            cpu_before = cpu_seconds(gateway_pid)
            if load == "c=1":
                via, straight = [], []
                for _ in range(4):  # alternate blocks: both see the same background noise
                    via += await sequential(gateway, body, stream, n_seq // 4)
                    straight += await sequential(direct, body, stream, n_seq // 4)
                sent = len(via)
            else:
                rate = float(load.removesuffix("/s"))
                via = await at_rate(gateway, body, stream, rate, seconds)
                cpu_after = cpu_seconds(gateway_pid)
                straight = await at_rate(direct, body, stream, rate, seconds)
                sent = len(via)
            cpu_after = cpu_seconds(gateway_pid) if load == "c=1" else cpu_after
            cpu_ms = (cpu_after - cpu_before) * 1000.0 / sent
            rows.append(
                (
                    label,
                    load,
                    ms(straight, 50),
                    ms(via, 50) - ms(straight, 50),
                    ms(straight, 99),
                    ms(via, 99) - ms(straight, 99),
                    cpu_ms,
                )
            )
    rss_before = rss_mib(gateway_pid)
    cpu_before = cpu_seconds(gateway_pid)
    max_rate = await closed_loop(gateway, plain, 64, args.total)
    cpu_per_request = (cpu_seconds(gateway_pid) - cpu_before) * 1000.0 / args.total
    rss_after = rss_mib(gateway_pid)
    direct_rate = await closed_loop(direct, plain, 64, min(args.total, 20000))
    await direct.close()
    await gateway.close()

    print("| request | load | direct p50 ms | added p50 ms | direct p99 ms | added p99 ms | gateway CPU ms/req |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, load, d50, a50, d99, a99, cpu in rows:
        print(f"| {label} | {load} | {d50:.3f} | {a50:+.3f} | {d99:.3f} | {a99:+.3f} | {cpu:.3f} |")
    print()
    print(
        f"maximum rate through the gateway, 64 in flight, {args.total:,} non-streaming requests: {max_rate:,.0f} req/s "
        f"(direct to the emulator: {direct_rate:,.0f} req/s); gateway CPU {cpu_per_request:.3f} ms/request"
    )
    print(f"gateway memory (RSS): {rss_before:.0f} MiB before, {rss_after:.0f} MiB after those {args.total:,} requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--total", type=int, default=100_000, help="requests for the max-rate and memory run")
    args = parser.parse_args()
    if args.quick:
        args.total = min(args.total, 5000)
    settings = EmulatorSettings(api="openai", ttft_ms=5.0, itl_ms=1.0, tokens=16)
    with EmulatorProcess(settings) as emulator, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "tokenrace.yaml")
        config.write_text(
            f"endpoints:\n  - {{name: emu, api: openai-chat, base_url: '{emulator.base_url}', model: m}}\n"
        )
        port = free_port()
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokenrace",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--store",
                str(Path(tmp, "gateway.db")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if gateway.poll() is not None or time.monotonic() > deadline:
                        detail = gateway.stderr.read().decode() if gateway.stderr else ""
                        raise SystemExit(f"gateway did not start: {detail}") from None
                    time.sleep(0.1)
            uvloop.run(measure(args, emulator.base_url, f"http://127.0.0.1:{port}/v1", gateway.pid))
        finally:
            gateway.terminate()
            gateway.wait(10)


if __name__ == "__main__":
    main()
