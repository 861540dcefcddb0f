"""What the gateway costs: added latency, CPU per request, maximum rate and memory, against calling directly.

One emulator process is the upstream (scripted: first token after 5 ms, 16 tokens 1 ms apart); one
`tokenrace serve` process (its own HTTP server on uvloop + httptools, telemetry into SQLite) sits in front of
it; this process drives both with tokenrace's own HTTP client, alternating direct and gateway blocks so both
see the same machine. With ``--uvicorn`` a second gateway process serves the same app with uvicorn
(uvloop + httptools too) and is measured in the same blocks, side by side.

- added latency: p50/p99 of (through the gateway) minus p50/p99 of (direct), non-streaming (whole response)
  and streaming (time to the first chunk carrying a token), at concurrency 1 and at constant 100 and 500 requests/s;
- gateway CPU per request: user+system time of the gateway process over a block, divided by its requests;
  beside it the upstream emulator's own CPU per request in the direct block (a minimal server that only
  writes the same answer: a yardstick for what one process pays per call and per chunk on this machine);
- maximum rate: completed non-streaming requests/s through the gateway at 64 in flight;
- memory: the gateway's RSS before and after `--total` requests (default 100,000).

Usage: .venv/bin/python benchmarks/gateway_overhead.py [--quick] [--total 100000] [--uvicorn]
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


async def measure(
    args: argparse.Namespace, direct_url: str, upstream_pid: int, gateways: list[tuple[str, str, int]]
) -> None:
    """``gateways``: (server name, base URL, pid) of each gateway process, measured in the same blocks."""
    direct = ConnectionPool(direct_url)
    pools = [(name, ConnectionPool(url), pid) for name, url, pid in gateways]
    plain = orjson.dumps(BODY)
    streamed = orjson.dumps({**BODY, "stream": True})
    n_seq = 300 if args.quick else 2000
    seconds = 3.0 if args.quick else 10.0
    rows: list[tuple[str, str, str, float, float, float, float, float, float]] = []
    for stream, body, label in (
        (False, plain, "non-streaming (whole response)"),
        (True, streamed, "streaming (first token)"),
    ):
        for _, pool, _ in pools:
            await sequential(pool, body, stream, 50)  # warm every path
        await sequential(direct, body, stream, 50)
        for load in ("c=1", "100/s", "500/s"):
            via: dict[str, list[float]] = {name: [] for name, _, _ in pools}
            cpu: dict[str, float] = dict.fromkeys(via, 0.0)
            straight: list[float] = []
            upstream_cpu = 0.0
            blocks = 4 if load == "c=1" else 1
            for _ in range(blocks):  # alternate blocks: every path sees the same background noise
                for name, pool, pid in pools:
                    before = cpu_seconds(pid)
                    if load == "c=1":
                        via[name] += await sequential(pool, body, stream, n_seq // blocks)
                    else:
                        via[name] += await at_rate(pool, body, stream, float(load.removesuffix("/s")), seconds)
                    cpu[name] += cpu_seconds(pid) - before
                before = cpu_seconds(upstream_pid)
                if load == "c=1":
                    straight += await sequential(direct, body, stream, n_seq // blocks)
                else:
                    straight += await at_rate(direct, body, stream, float(load.removesuffix("/s")), seconds)
                upstream_cpu += cpu_seconds(upstream_pid) - before
            for name in via:
                rows.append(
                    (
                        label,
                        load,
                        name,
                        ms(straight, 50),
                        ms(via[name], 50) - ms(straight, 50),
                        ms(straight, 99),
                        ms(via[name], 99) - ms(straight, 99),
                        cpu[name] * 1000.0 / len(via[name]),
                        upstream_cpu * 1000.0 / len(straight),
                    )
                )
    capacity: list[tuple[str, float, float, float, float]] = []
    for name, pool, pid in pools:
        rss_before = rss_mib(pid)
        cpu_before = cpu_seconds(pid)
        max_rate = await closed_loop(pool, plain, 64, args.total)
        cpu_per_request = (cpu_seconds(pid) - cpu_before) * 1000.0 / args.total
        capacity.append((name, max_rate, cpu_per_request, rss_before, rss_mib(pid)))
        await pool.close()
    direct_rate = await closed_loop(direct, plain, 64, min(args.total, 20000))
    await direct.close()

    servers = len(pools) > 1
    print(
        "| request | load |"
        + (" server |" if servers else "")
        + " direct p50 ms | added p50 ms | direct p99 ms | added p99 ms | gateway CPU ms/req | upstream CPU ms/req |"
    )
    print("|---|---|" + ("---|" if servers else "") + "---:|---:|---:|---:|---:|---:|")
    for label, load, name, d50, a50, d99, a99, gw_cpu, up_cpu in rows:
        server = f" {name} |" if servers else ""
        figures = f"{d50:.3f} | {a50:+.3f} | {d99:.3f} | {a99:+.3f} | {gw_cpu:.3f} | {up_cpu:.3f}"
        print(f"| {label} | {load} |{server} {figures} |")
    print()
    for name, max_rate, cpu_per_request, rss_before, rss_after in capacity:
        who = f"the gateway ({name})" if servers else "the gateway"
        print(
            f"maximum rate through {who}, 64 in flight, {args.total:,} non-streaming requests: {max_rate:,.0f} req/s; "
            f"gateway CPU {cpu_per_request:.3f} ms/request; memory (RSS) {rss_before:.0f} MiB before, "
            f"{rss_after:.0f} MiB after those requests"
        )
    print(f"direct to the emulator, 64 in flight: {direct_rate:,.0f} req/s")


UVICORN_LAUNCH = """
import gc, sys
import uvicorn
from tokenrace.cli_serve import SWITCH_INTERVAL_S, _settle_heap
from tokenrace.config import load_config
from tokenrace.gateway.app import GatewayApp
from tokenrace.store import Store
app = GatewayApp(load_config(sys.argv[1]), Store.open(sys.argv[3]))
_settle_heap()
sys.setswitchinterval(SWITCH_INTERVAL_S)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", http="httptools", lifespan="on",
            log_level="warning", access_log=False, proxy_headers=False, server_header=False)
"""


def start_gateway(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                detail = process.stderr.read().decode() if process.stderr else ""
                process.kill()
                raise SystemExit(f"gateway did not start: {detail}") from None
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--total", type=int, default=100_000, help="requests for the max-rate and memory run")
    parser.add_argument("--uvicorn", action="store_true", help="also serve the same app with uvicorn, side by side")
    args = parser.parse_args()
    if args.quick:
        args.total = min(args.total, 5000)
    settings = EmulatorSettings(api="openai", ttft_ms=5.0, itl_ms=1.0, tokens=16)
    with EmulatorProcess(settings) as emulator, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "tokenrace.yaml")
        config.write_text(
            f"endpoints:\n  - {{name: emu, api: openai-chat, base_url: '{emulator.base_url}', model: m}}\n"
        )
        processes: list[subprocess.Popen[bytes]] = []
        try:
            gateways = []
            port = free_port()
            store = str(Path(tmp, "gateway.db"))
            argv = [sys.executable, "-m", "tokenrace", "serve", "--config", str(config), "--port", str(port)]
            processes.append(start_gateway([*argv, "--store", store], port))
            gateways.append(("tokenrace", f"http://127.0.0.1:{port}/v1", processes[-1].pid))
            if args.uvicorn:
                port = free_port()
                launch = [sys.executable, "-c", UVICORN_LAUNCH, str(config), str(port), str(Path(tmp, "uv.db"))]
                processes.append(start_gateway(launch, port))
                gateways.append(("uvicorn", f"http://127.0.0.1:{port}/v1", processes[-1].pid))
            assert emulator.proc is not None
            uvloop.run(measure(args, emulator.base_url, emulator.proc.pid, gateways))
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)


if __name__ == "__main__":
    main()
