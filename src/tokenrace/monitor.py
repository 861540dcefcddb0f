"""Endpoints probed on a schedule: a time series of small benchmark runs, rolling medians and changes.

Providers change speed by the hour (load, hardware, routing), so one benchmark says little about
tomorrow. A *probe* is an ordinary :func:`tokenrace.bench.run_bench` run — a few requests at
concurrency 1 — tagged ``profile["monitor"]`` so the series can be read back from the store; its
records and summary are exactly those of a ``tokenrace bench`` run. Every probe sends prompts no server
has seen (a fresh nonce per probe), so a prompt cache cannot flatter it.

An outage is data, not a crash: an unreachable endpoint gets a ``failed`` run with the reason in its
summary (``probe_error``), 429s / 5xx / cut streams are categorised request errors like in any run, and
one endpoint's trouble never holds up another's probe (the probes of a round run concurrently).

``docs/metrics.md`` ("Monitoring") defines the rolling median, the change and availability; keep them in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from tokenrace.bench import PreflightError, host_info, new_run_id, preflight, run_bench, run_summary, versions
from tokenrace.config import EndpointConfig
from tokenrace.http import HTTPClientError
from tokenrace.profiles import CONCURRENCY, SYNCHRONOUS, LoadProfile
from tokenrace.records import ERR_CONNECT, RunInfo
from tokenrace.store import Store
from tokenrace.tokenizer import count_tokens
from tokenrace.workloads import RequestSource, WorkloadError, WorkloadRequest, run_nonce

__all__ = [
    "DEFAULT_ALERT_PCT",
    "DEFAULT_REQUESTS",
    "DEFAULT_WINDOW_S",
    "DEFAULT_WORKLOAD",
    "MIN_PREVIOUS",
    "EndpointTrend",
    "FreshWorkload",
    "MonitorResult",
    "RoundReport",
    "SeriesPoint",
    "monitor_series",
    "next_slot",
    "point_from_run",
    "probe_endpoint",
    "probe_profile",
    "rolling_summary",
    "run_monitor",
]

DEFAULT_WORKLOAD = "synthetic:input=256,output=128"
DEFAULT_REQUESTS = 5  # enough for a median, cheap enough to run every few hours on a paid API
DEFAULT_WINDOW_S = 72 * 3600.0  # what public trackers use for their rolling medians
DEFAULT_ALERT_PCT = 20.0
MIN_PREVIOUS = 3  # earlier probes a change needs: one noisy probe is not a baseline

# What a probe says about the endpoint (SeriesPoint.outcome).
UP = "ok"  # every measured request completed
DEGRADED = "degraded"  # some requests failed (429, 5xx, cut...), at least one completed
DOWN = "down"  # unreachable, or no request completed
INCOMPLETE = "incomplete"  # stopped by the user or still running (or its process died): not counted
OUTCOMES = (UP, DEGRADED, DOWN, INCOMPLETE)

# Workload kinds whose generator already puts a fresh nonce into every prompt of every run.
_SELF_NONCED = ("synthetic", "chat")


# --- fresh prompts ---------------------------------------------------------------------------------


class FreshWorkload:
    """A workload whose prompts no earlier probe has sent, with a fingerprint of each in ``prompt_id``.

    Synthetic and chat prompts already start with a per-run nonce; other workloads (a user's JSONL,
    replayed every probe) get ``[probe NONCE-N]`` put in front of their first message, because a
    repeated prefix would be answered from the server's prompt cache. ``prompt_id`` becomes
    ``ORIGINAL#SHA256[:12]`` of the messages sent, so freshness can be checked in the store.
    """

    def __init__(self, base: RequestSource) -> None:
        if base.kind not in (*_SELF_NONCED, "jsonl"):
            raise WorkloadError(
                f"monitor probes take synthetic, chat or jsonl workloads, not {base.kind!r} "
                "(traces bring their own timing, suites their own grading)"
            )
        self.base = base
        self.name = base.name
        self.kind = base.kind

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        nonce = run_nonce()  # a new one per call: run_bench calls this once per probe
        for number, request in enumerate(self.base.requests(seed)):
            if self.kind not in _SELF_NONCED:
                request = _prefixed(request, f"[probe {nonce}-{number}] ")
            digest = hashlib.sha256(orjson.dumps(request.messages)).hexdigest()[:12]
            yield replace(request, prompt_id=f"{request.prompt_id}#{digest}")


def _prefixed(request: WorkloadRequest, tag: str) -> WorkloadRequest:
    """A copy with ``tag`` in front of the first message (the base's messages are reused each cycle)."""
    messages = [dict(m) for m in request.messages]
    if not messages:
        return request
    content = messages[0].get("content")
    if isinstance(content, list):
        messages[0]["content"] = [{"type": "text", "text": tag}, *content]
    else:
        messages[0]["content"] = tag + (content if isinstance(content, str) else "")
    fresh = replace(request, messages=messages)
    fresh.input_tokens = count_tokens(fresh.prompt)
    return fresh


def probe_profile(requests: int = DEFAULT_REQUESTS, concurrency: int = 1, round_index: int = 0) -> LoadProfile:
    """The load of one probe: ``requests`` at ``concurrency`` in flight; the round number seeds the words."""
    if concurrency <= 1:
        return LoadProfile(SYNCHRONOUS, requests=requests, seed=round_index)
    return LoadProfile(CONCURRENCY, concurrency=concurrency, requests=requests, seed=round_index)


# --- one probe -------------------------------------------------------------------------------------


async def probe_endpoint(
    endpoint: EndpointConfig,
    workload: RequestSource,
    store: Store,
    profile: LoadProfile,
    *,
    tags: Mapping[str, Any],
    stop: asyncio.Event | None = None,
    extra_config: dict[str, Any] | None = None,
    cli_args: dict[str, Any] | None = None,
) -> SeriesPoint:
    """One probe, always leaving a run in the store: a bench run, or a ``failed`` run if unreachable."""
    try:
        await preflight(endpoint)
    except PreflightError as exc:
        run = _store_unreachable(endpoint, workload, store, profile, tags, exc, extra_config, cli_args)
        return point_from_run(run)
    result = await run_bench(
        endpoint,
        workload,
        profile,
        store,
        stop=stop,
        cli_args=cli_args,
        skip_preflight=True,
        extra_profile=dict(tags),
        extra_config=extra_config,
    )
    return point_from_run(result.run)


def _store_unreachable(
    endpoint: EndpointConfig,
    workload: RequestSource,
    store: Store,
    profile: LoadProfile,
    tags: Mapping[str, Any],
    exc: PreflightError,
    extra_config: dict[str, Any] | None,
    cli_args: dict[str, Any] | None,
) -> RunInfo:
    """run_bench creates no run when preflight fails; a monitor needs one, or the outage is invisible."""
    cause = exc.__cause__
    category = cause.category if isinstance(cause, HTTPClientError) else ERR_CONNECT
    detail = f"unreachable: {cause.detail}" if isinstance(cause, HTTPClientError) else str(exc)
    run = RunInfo(
        run_id=new_run_id(),
        started_at=time.time(),
        endpoint=endpoint.name,
        workload=workload.name,
        profile={**profile.describe(), **tags},
        config={"endpoint": endpoint.public_dict(), "args": cli_args or {}, **(extra_config or {})},
        versions=versions(),
        host=host_info(),
    )
    store.create_run(run)
    summary = run_summary(run, [])  # the shape of every other summary, with nothing measured
    summary["probe_error"] = {"category": category, "detail": detail}
    finished = time.time()
    store.finish_run(run.run_id, "failed", summary, finished)
    return replace(run, status="failed", summary=summary, finished_at=finished)


# --- the schedule ----------------------------------------------------------------------------------


def next_slot(start: float, every_s: float, now: float, current: int) -> int:
    """The slot (``start + k * every_s``) for the next round after slot ``current``: the next one, or —
    when the round overran — the first that is not yet past, so missed rounds are skipped, not piled up."""
    return max(current + 1, math.ceil((now - start) / every_s))


@dataclass
class RoundReport:
    """What one round did, for the caller to print."""

    index: int  # 0-based round number
    started_at: float  # unix seconds
    points: list[SeriesPoint]
    errors: dict[str, str]  # endpoint -> what went wrong where no run could be stored
    skipped: int  # slots skipped because this round overran
    next_at: float | None  # unix seconds of the next round; None when this was the last


@dataclass
class MonitorResult:
    monitor_id: str
    rounds: int
    points: list[SeriesPoint]
    skipped: int
    stopped: bool  # ended by ``stop`` (Ctrl-C / SIGTERM) rather than by ``count``


async def run_monitor(
    endpoints: Sequence[EndpointConfig],
    store: Store,
    workload: RequestSource,
    *,
    every_s: float,
    requests: int = DEFAULT_REQUESTS,
    concurrency: int = 1,
    count: int | None = None,
    stop: asyncio.Event | None = None,
    monitor_id: str | None = None,
    extra_config: Mapping[str, dict[str, Any]] | None = None,
    cli_args: dict[str, Any] | None = None,
    on_round: Callable[[RoundReport], None] | None = None,
) -> MonitorResult:
    """Probe every endpoint at once, then every ``every_s`` seconds, for ``count`` rounds (None: until
    ``stop``). The probes of a round run concurrently, so a dead endpoint costs the others nothing; an
    error that leaves no run (the store failing, a bug) is reported in the round and the monitor goes on.
    ``extra_config`` maps an endpoint name to what run_bench stores with its runs (a local engine's info).
    """
    if every_s <= 0 or not math.isfinite(every_s):
        raise ValueError("the interval between probes must be > 0")
    if count is not None and count < 1:
        raise ValueError("count must be >= 1")
    stop = stop or asyncio.Event()
    monitor_id = monitor_id or "mon-" + new_run_id()
    fresh = workload if isinstance(workload, FreshWorkload) else FreshWorkload(workload)
    loop = asyncio.get_running_loop()
    start = loop.time()
    slot = 0
    rounds = 0
    skipped = 0
    points: list[SeriesPoint] = []
    while True:
        started_at = time.time()
        profile = probe_profile(requests, concurrency, rounds)
        tags = {"monitor": monitor_id, "monitor_round": rounds, "monitor_every_s": every_s}

        async def one(endpoint: EndpointConfig, profile: LoadProfile = profile, tags: dict[str, Any] = tags) -> Any:
            try:
                return await probe_endpoint(
                    endpoint,
                    fresh,
                    store,
                    profile,
                    tags=tags,
                    stop=stop,
                    extra_config=(extra_config or {}).get(endpoint.name),
                    cli_args=cli_args,
                )
            except Exception as exc:  # the monitor outlives anything one probe can throw
                return exc

        outcomes = await asyncio.gather(*(one(ep) for ep in endpoints))
        rounds += 1
        round_points = [o for o in outcomes if isinstance(o, SeriesPoint)]
        errors = {
            ep.name: f"{type(o).__name__}: {o}"
            for ep, o in zip(endpoints, outcomes, strict=True)
            if isinstance(o, Exception)
        }
        points.extend(round_points)
        last = stop.is_set() or (count is not None and rounds >= count)
        missed = 0
        next_at: float | None = None
        if not last:
            upcoming = next_slot(start, every_s, loop.time(), slot)
            missed = upcoming - slot - 1
            skipped += missed
            slot = upcoming
            next_at = time.time() + max(0.0, start + slot * every_s - loop.time())
        if on_round is not None:
            on_round(RoundReport(rounds - 1, started_at, round_points, errors, missed, next_at))
        if last:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, start + slot * every_s - loop.time()))
        if stop.is_set():
            break
    return MonitorResult(monitor_id, rounds, points, skipped, stop.is_set())


# --- the time series -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesPoint:
    """One probe run, as the report plots it. Latency values are the probe's medians (p50) over its
    completed requests; None where nothing completed."""

    endpoint: str
    run_id: str
    monitor: str  # the monitor that made it (one per `tokenrace monitor` process)
    workload: str
    started_at: float  # unix seconds
    status: str  # the run's: complete | failed | interrupted | running
    outcome: str  # ok | degraded | down | incomplete (see OUTCOMES)
    completed: int  # measured requests that completed
    errors: int  # measured requests that failed
    error_categories: dict[str, int] = field(default_factory=dict)  # rate_limited, http_5xx, stream_cut...
    error: str | None = None  # why the probe itself failed (unreachable endpoint), else None
    ttft_p50_ms: float | None = None
    output_speed_p50: float | None = None  # tokens/s
    e2e_p50_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _p50(summary: Mapping[str, Any], metric: str) -> float | None:
    value = ((summary.get("metrics") or {}).get(metric) or {}).get("p50")
    return float(value) if value is not None else None


def point_from_run(run: RunInfo) -> SeriesPoint:
    """The point of a stored probe run; works for any run with a summary (a bench run reads the same)."""
    summary = run.summary or {}
    requests = summary.get("requests") or {}
    completed = int(requests.get("completed") or 0)
    failed = int(requests.get("failed") or 0)
    probe_error = summary.get("probe_error") or {}
    if run.status in ("interrupted", "running") or not summary:
        outcome = INCOMPLETE
    elif run.status == "failed" or completed == 0:
        outcome = DOWN
    elif failed:
        outcome = DEGRADED
    else:
        outcome = UP
    return SeriesPoint(
        endpoint=run.endpoint,
        run_id=run.run_id,
        monitor=str((run.profile or {}).get("monitor", "")),
        workload=run.workload,
        started_at=run.started_at,
        status=run.status,
        outcome=outcome,
        completed=completed,
        errors=failed,
        error_categories=dict(summary.get("errors") or {}),
        error=probe_error.get("detail"),
        ttft_p50_ms=_p50(summary, "ttft_ms"),
        output_speed_p50=_p50(summary, "output_speed_tps"),
        e2e_p50_ms=_p50(summary, "e2e_ms"),
    )


def monitor_series(
    store: Store,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    since_s: float | None = None,
    endpoints: Sequence[str] | None = None,
    monitor: str | None = None,
    workload: str | None = None,
    now: float | None = None,
) -> list[SeriesPoint]:
    """Every probe run since ``since_s`` (unix seconds; default: ``window_s`` before ``now``), oldest
    first, of any monitor unless ``monitor`` names one; bench runs are not probes and are left out."""
    since = since_s if since_s is not None else (time.time() if now is None else now) - window_s
    points = []
    for run in store.list_runs(limit=None, since=since, endpoints=endpoints):
        tag = (run.profile or {}).get("monitor")
        if not tag or (monitor is not None and tag != monitor) or (workload is not None and run.workload != workload):
            continue
        points.append(point_from_run(run))
    points.sort(key=lambda p: (p.started_at, p.run_id))
    return points


# --- rolling medians and changes -------------------------------------------------------------------

# (SeriesPoint attribute, short name used in EndpointTrend.changed_metrics)
_METRICS = (("ttft_p50_ms", "ttft"), ("output_speed_p50", "output_speed"), ("e2e_p50_ms", "e2e"))


@dataclass(frozen=True)
class EndpointTrend:
    """An endpoint's latest probe against its rolling window (definitions in docs/metrics.md, "Monitoring").

    The window is the ``window_s`` seconds up to and including the latest counted probe (probes whose
    outcome is not ``incomplete``). ``*_median`` is the median of the per-probe p50s in the window;
    ``*_change_pct`` is ``(latest - M) / M * 100`` where M is the median of the *earlier* probes in the
    window (None with fewer than ``min_previous`` of them); ``changed`` when any change exceeds
    ``alert_pct`` in either direction. ``availability`` = probes ok or degraded / probes counted.
    """

    endpoint: str
    workload: str
    window_s: float
    alert_pct: float
    last_at: float  # unix seconds of the latest counted probe
    last_run_id: str
    last_outcome: str
    last_error: str | None
    ttft_p50_ms: float | None  # the latest probe's values
    output_speed_p50: float | None
    e2e_p50_ms: float | None
    ttft_median_ms: float | None  # rolling medians of the per-probe values over the window
    output_speed_median: float | None
    e2e_median_ms: float | None
    ttft_change_pct: float | None  # latest vs the median of the earlier probes in the window
    output_speed_change_pct: float | None
    e2e_change_pct: float | None
    changed: bool
    changed_metrics: list[str]  # "ttft", "output_speed", "e2e"
    probes: int  # counted probes in the window
    failed_probes: int  # of which down
    availability: float  # (probes - failed_probes) / probes
    requests: int  # measured requests finished in the window (completed + failed)
    failed_requests: int
    error_categories: dict[str, int]  # summed over the window

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _change_pct(latest: float | None, previous: Sequence[float], min_previous: int) -> float | None:
    if latest is None or len(previous) < min_previous:
        return None
    base = statistics.median(previous)
    if base == 0:
        return None
    return (latest - base) / base * 100.0


def rolling_summary(
    points: Sequence[SeriesPoint],
    window_s: float = DEFAULT_WINDOW_S,
    *,
    alert_pct: float = DEFAULT_ALERT_PCT,
    min_previous: int = MIN_PREVIOUS,
) -> list[EndpointTrend]:
    """One trend per (endpoint, workload) present in ``points``, sorted by endpoint then workload.

    Windows are anchored at each endpoint's own latest counted probe, so a report read hours later says
    the same thing. Probes still running or stopped by the user are left out of everything.
    """
    if window_s <= 0:
        raise ValueError("the window must be > 0")
    groups: dict[tuple[str, str], list[SeriesPoint]] = {}
    for point in points:
        if point.outcome != INCOMPLETE:
            groups.setdefault((point.endpoint, point.workload), []).append(point)
    trends = []
    for (endpoint, workload), group in sorted(groups.items()):
        group.sort(key=lambda p: (p.started_at, p.run_id))
        latest = group[-1]
        in_window = [p for p in group if p.started_at >= latest.started_at - window_s]
        earlier = in_window[:-1]
        medians: dict[str, float | None] = {}
        changes: dict[str, float | None] = {}
        for attr, name in _METRICS:
            medians[name] = _median([v for p in in_window if (v := getattr(p, attr)) is not None])
            previous = [v for p in earlier if (v := getattr(p, attr)) is not None]
            changes[name] = _change_pct(getattr(latest, attr), previous, min_previous)
        changed = [name for name, change in changes.items() if change is not None and abs(change) > alert_pct]
        failed = sum(p.outcome == DOWN for p in in_window)
        categories: dict[str, int] = {}
        for p in in_window:
            for key, n in p.error_categories.items():
                categories[key] = categories.get(key, 0) + n
        trends.append(
            EndpointTrend(
                endpoint=endpoint,
                workload=workload,
                window_s=window_s,
                alert_pct=alert_pct,
                last_at=latest.started_at,
                last_run_id=latest.run_id,
                last_outcome=latest.outcome,
                last_error=latest.error,
                ttft_p50_ms=latest.ttft_p50_ms,
                output_speed_p50=latest.output_speed_p50,
                e2e_p50_ms=latest.e2e_p50_ms,
                ttft_median_ms=medians["ttft"],
                output_speed_median=medians["output_speed"],
                e2e_median_ms=medians["e2e"],
                ttft_change_pct=changes["ttft"],
                output_speed_change_pct=changes["output_speed"],
                e2e_change_pct=changes["e2e"],
                changed=bool(changed),
                changed_metrics=changed,
                probes=len(in_window),
                failed_probes=failed,
                availability=(len(in_window) - failed) / len(in_window),
                requests=sum(p.completed + p.errors for p in in_window),
                failed_requests=sum(p.errors for p in in_window),
                error_categories=dict(sorted(categories.items())),
            )
        )
    return trends
