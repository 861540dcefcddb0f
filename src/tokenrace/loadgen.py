"""The load generator: sends a workload's requests on a load profile's schedule.

Closed loop (synchronous, fixed concurrency): N workers, each sends its next request as soon as the
previous one finished, so ``scheduled_s`` is the moment a worker became free. Open loop (constant,
Poisson, gamma): a dispatcher sends request *i* at ``start + offset_i`` whatever is still in flight, with an
optional cap on concurrency; ``scheduled_s`` is the intended time, so any delay of ours (or the cap's) shows
up as schedule lag, never inside the endpoint's latency.

Every finished record — completed, failed, or cancelled by a stop — goes to ``on_record`` at once, which
is how the store receives it while the run is still going.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from time import monotonic, perf_counter
from typing import Any

from tokenrace.clients import EndpointClient
from tokenrace.profiles import LoadProfile, arrival_offsets
from tokenrace.records import FAILED, OK, PHASE_MEASURE, PHASE_WARMUP, RequestRecord
from tokenrace.timers import sleep_until
from tokenrace.workloads import RequestSource, WorkloadRequest


@dataclass
class LiveStats:
    """Cheap running counters for the progress display."""

    started: float = field(default_factory=perf_counter)
    completed: int = 0
    failed: int = 0
    incomplete: int = 0
    in_flight: int = 0
    recent_ttft_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    def add(self, record: RequestRecord) -> None:
        if record.status == OK:
            self.completed += 1
            if record.first_token_s is not None and record.sent_s is not None:
                self.recent_ttft_ms.append((record.first_token_s - record.sent_s) * 1000)
        elif record.status == FAILED:
            self.failed += 1
        else:
            self.incomplete += 1

    def p50_ttft_ms(self) -> float | None:
        if not self.recent_ttft_ms:
            return None
        ordered = sorted(self.recent_ttft_ms)
        return ordered[len(ordered) // 2]

    def requests_per_s(self) -> float:
        elapsed = perf_counter() - self.started
        return self.completed / elapsed if elapsed > 0 else 0.0


@dataclass
class LoadResult:
    records: list[RequestRecord]
    interrupted: bool


async def run_load(
    client: EndpointClient,
    workload: RequestSource,
    profile: LoadProfile,
    *,
    run_id: str,
    on_record: Callable[[RequestRecord], None] | None = None,
    stop: asyncio.Event | None = None,
    stats: LiveStats | None = None,
    max_concurrency: int | None = None,
) -> LoadResult:
    """Run ``profile`` against ``client``; returns every record (warmup included, marked as such).

    Setting ``stop`` ends the run: nothing new is sent and requests in flight are cancelled (their
    records are kept with status ``incomplete``).
    """
    stop = stop or asyncio.Event()
    stats = stats or LiveStats()
    with _tuned_runtime():
        return await _run_load(client, workload, profile, run_id, on_record, stop, stats, max_concurrency)


_runtime_lock = threading.Lock()
_runtime_users = 0
_runtime_saved: tuple[float, bool] = (0.005, True)


@contextlib.contextmanager
def _tuned_runtime() -> Iterator[None]:
    """Interpreter settings for the length of a run, shared by overlapping runs (a monitor probes several
    endpoints at once): the first run in saves and changes them, the last one out restores them.

    Other threads (the store writer, the progress display) must not hold the GIL for the default 5 ms
    while a response arrives: that delay would land in the timestamps. A full cyclic-GC pass over a large
    heap pauses the loop for milliseconds; a run makes no cycles that matter, so collection waits until
    it ends (existing objects are frozen out of the scans).
    """
    global _runtime_users, _runtime_saved
    with _runtime_lock:
        if _runtime_users == 0:
            _runtime_saved = (sys.getswitchinterval(), gc.isenabled())
            sys.setswitchinterval(min(_runtime_saved[0], 0.0002))
            gc.collect()
            gc.freeze()
            gc.disable()
        _runtime_users += 1
    try:
        yield
    finally:
        with _runtime_lock:
            _runtime_users -= 1
            if _runtime_users == 0:
                sys.setswitchinterval(_runtime_saved[0])
                gc.unfreeze()
                if _runtime_saved[1]:
                    gc.enable()


async def _run_load(
    client: EndpointClient,
    workload: RequestSource,
    profile: LoadProfile,
    run_id: str,
    on_record: Callable[[RequestRecord], None] | None,
    stop: asyncio.Event,
    stats: LiveStats,
    max_concurrency: int | None,
) -> LoadResult:
    records: list[RequestRecord] = []
    origin = client.origin
    requests = workload.requests(profile.seed)
    warmup = profile.warmup_requests
    total = None if profile.requests is None else warmup + profile.requests
    in_flight: set[asyncio.Task[None]] = set()
    deadline: list[float | None] = [None]  # set when the first measured request goes out

    def finished(record: RequestRecord) -> None:
        records.append(record)
        stats.add(record)
        if on_record is not None:
            on_record(record)

    # Suites grade each answer. Grading (HumanEval runs code) happens off the event loop and after the
    # request's timing is complete, so it neither delays other streams nor holds a closed-loop worker.
    scorer = getattr(workload, "score", None)
    scoring: set[asyncio.Task[None]] = set()
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="score") if scorer else None

    async def score_then_finish(request: WorkloadRequest, record: RequestRecord) -> None:
        try:
            score = await asyncio.get_running_loop().run_in_executor(pool, scorer, request, record)
            if score is not None:
                record.quality, record.quality_detail = score.value, score.reason
        finally:
            finished(record)

    # Multi-turn tasks (the agent suite): every turn is its own record, numbered seq·TURN_STRIDE + turn.
    turn_suites: set[str] = getattr(workload, "multi_turn_suites", set())
    next_turn = getattr(workload, "next_turn", None) if turn_suites else None

    async def send(seq: int, scheduled_s: float) -> None:
        if seq == warmup and profile.duration_s is not None:
            deadline[0] = perf_counter() + profile.duration_s
        request = next(requests)
        turns: list[RequestRecord] = []
        while True:
            record = client.new_record(
                run_id, seq * TURN_STRIDE + len(turns) if next_turn else seq, scheduled_s, workload.name
            )
            record.phase = PHASE_WARMUP if seq < warmup else PHASE_MEASURE
            record.suite = request.suite or None
            if request.suite in turn_suites:
                record.extra["turn"] = len(turns)
            turns.append(record)
            stats.in_flight += 1
            follow = None
            try:
                await client.send(request, record)
                if next_turn is not None and record.status == OK:
                    follow = next_turn(request, record)
            finally:
                stats.in_flight -= 1
                if follow is None:  # the last turn (or the only request): totals, score, store
                    if request.suite in turn_suites:
                        record.extra["agent"] = _task_totals(turns)
                    if scorer is not None and record.status == OK:
                        task = asyncio.create_task(score_then_finish(request, record))
                        scoring.add(task)
                        task.add_done_callback(scoring.discard)
                    else:
                        finished(record)
                else:
                    finished(record)
            if follow is None:
                return
            request = follow
            scheduled_s = perf_counter() - origin  # the next turn is due as soon as the tools answered

    def may_send(seq: int) -> bool:
        if stop.is_set() or (total is not None and seq >= total):
            return False
        return deadline[0] is None or perf_counter() < deadline[0]

    counter = itertools.count()
    if profile.kind in ("synchronous", "concurrency"):
        workers = 1 if profile.kind == "synchronous" else _cap(profile.concurrency or 1, max_concurrency)

        async def worker() -> None:
            while may_send(seq := next(counter)):
                await send(seq, perf_counter() - origin)

        tasks = [asyncio.create_task(worker()) for _ in range(workers)]
        in_flight.update(tasks)
        await _wait_or_stop(tasks, stop)
    else:
        cap = asyncio.Semaphore(_cap(profile.concurrency or 10**9, max_concurrency))
        start = perf_counter()
        # A trace brings its own send times; other open-loop kinds draw them from the profile.
        offsets = iter(workload.offsets) if profile.kind == "trace" else arrival_offsets(profile)  # type: ignore[attr-defined]
        for seq, offset in zip(counter, offsets, strict=False):
            if not may_send(seq):
                break
            delay = start + offset - perf_counter()
            if delay > 0.05:  # long gaps: wake at once on Ctrl-C
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            elif delay > 0:
                await sleep_until(monotonic() + delay)  # sub-millisecond, unlike loop timers
            if cap.locked():
                await _acquire_or_stop(cap, stop)
                if stop.is_set():
                    break
            else:
                await cap.acquire()
            task = asyncio.create_task(send(seq, start + offset - origin))
            in_flight.add(task)
            task.add_done_callback(lambda t: (in_flight.discard(t), cap.release()))
        if in_flight:
            await _wait_or_stop(list(in_flight), stop)
    interrupted = stop.is_set()
    if in_flight:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
    if scoring:  # answers already received are graded even after a stop
        await asyncio.gather(*list(scoring), return_exceptions=True)
    if pool is not None:
        pool.shutdown(wait=False)
    records.sort(key=lambda r: r.seq)
    return LoadResult(records=records, interrupted=interrupted)


TURN_STRIDE = 64  # record seq of turn t of scheduled item i: i·64 + t (tasks are capped below 64 turns)


def _task_totals(turns: list[RequestRecord]) -> dict[str, Any]:
    """Task-level figures for a multi-turn task, kept on its last turn's record."""
    first, last = turns[0], turns[-1]
    e2e = (last.done_s - first.sent_s) * 1000 if last.done_s is not None and first.sent_s is not None else None
    return {
        "turns": len(turns),
        "task_e2e_ms": e2e,
        "output_tokens": sum(r.output_tokens or 0 for r in turns),
        "prompt_tokens": sum(r.usage_prompt_tokens or r.input_tokens_requested or 0 for r in turns),
        "tool_calls": sum(len(r.tool_calls) for r in turns),
    }


def _cap(wanted: int, endpoint_limit: int | None) -> int:
    """The endpoint's own ``max_concurrency`` bounds whatever the profile asks for."""
    return min(int(wanted), endpoint_limit) if endpoint_limit else int(wanted)


async def _wait_or_stop(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    stopper = asyncio.create_task(stop.wait())
    try:
        pending = set(tasks)
        while pending and not stop.is_set():
            done, pending = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
            pending.discard(stopper)
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
    finally:
        stopper.cancel()


async def _acquire_or_stop(cap: asyncio.Semaphore, stop: asyncio.Event) -> None:
    acquire = asyncio.create_task(cap.acquire())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({acquire, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not acquire.done():
        acquire.cancel()
    elif stop.is_set():
        cap.release()
