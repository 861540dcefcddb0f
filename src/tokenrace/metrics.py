"""Every number tokenrace reports, as a pure function of :class:`~tokenrace.records.RequestRecord` fields.

This module owns the formulas; ``docs/metrics.md`` mirrors it one to one (same names, formulas and edge
cases), so a reader can check a reported value by hand. The per-request functions (``ttft_ms`` ...) are the
reference definitions; :func:`summarize` applies the very same arithmetic to numpy columns so that a run
of 100,000 requests summarises in well under a second, and the tests hold the two paths equal.

Times in a record are seconds since the run origin; durations are reported in milliseconds, speeds in
tokens per second.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, fields
from itertools import chain, pairwise
from operator import attrgetter
from typing import Any

import numpy as np

from tokenrace.records import FAILED, INCOMPLETE, OK, PHASE_WARMUP, RequestRecord

# Percentile keys of :func:`describe` and the percentile each stands for.
PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
DESCRIBE_KEYS: tuple[str, ...] = ("mean", "std", "min", "max", *PERCENTILES, "count")
# The per-request distributions of a summary, in report order.
METRICS: tuple[str, ...] = (
    "ttft_ms",
    "ttfat_ms",
    "output_speed_tps",
    "tpot_ms",
    "itl_ms",
    "e2e_ms",
    "schedule_lag_ms",
)
# Error key for a failed request that carries no category (a client bug, but it must still be counted).
UNCATEGORIZED = "uncategorized"

Number = int | float


# --------------------------------------------------------------------------------------------------
# Statistics


def describe(values: Iterable[Number] | np.ndarray) -> dict[str, float | int | None]:
    """Summary statistics of one distribution, with a fixed method so numbers are comparable across runs.

    Percentiles use numpy's ``method="linear"`` (its default; type 7 of Hyndman & Fan). ``std`` is the
    sample standard deviation (ddof=1) for n > 1 and 0.0 for a single value. Empty input gives every
    statistic as None and ``count`` 0. Non-finite values are rejected: a NaN here is a bug upstream.
    """
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64).ravel()
    n = int(arr.size)
    if n == 0:
        return {**dict.fromkeys(DESCRIBE_KEYS[:-1]), "count": 0}
    if not np.isfinite(arr).all():
        raise ValueError("describe() got a NaN or infinite value")
    qs = np.percentile(arr, list(PERCENTILES.values()), method="linear")
    out: dict[str, float | int | None] = {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if n > 1 else 0.0,
        "min": float(arr.min()),
        "max": float(arr.max()),
    }
    out.update({key: float(q) for key, q in zip(PERCENTILES, qs, strict=True)})
    out["count"] = n
    return out


# --------------------------------------------------------------------------------------------------
# Per-request metrics: None when the record lacks what the formula needs. They do not look at status;
# summarize() decides which records contribute (status "ok", measure phase).


def _ms(start: float | None, end: float | None) -> float | None:
    """Interval between two record timestamps in milliseconds, None when either is missing."""
    if start is None or end is None:
        return None
    return (end - start) * 1000.0


def ttft_ms(record: RequestRecord) -> float | None:
    """Time to first token: sent -> first event carrying content, reasoning or a tool-call delta."""
    return _ms(record.sent_s, record.first_token_s)


def ttfat_ms(record: RequestRecord) -> float | None:
    """Time to first answer token: sent -> first non-reasoning content (or tool-call delta)."""
    return _ms(record.sent_s, record.first_answer_s)


def e2e_ms(record: RequestRecord) -> float | None:
    """End-to-end latency: sent -> end of stream (includes the tail after the last token)."""
    return _ms(record.sent_s, record.done_s)


def schedule_lag_ms(record: RequestRecord) -> float | None:
    """The load generator's own delay (scheduled -> sent), reported apart so it never hides in latency."""
    return _ms(record.scheduled_s, record.sent_s)


def output_speed_tps(record: RequestRecord) -> float | None:
    """Decode speed after the first chunk: (n - first_chunk_tokens) / (last_token_s - first_token_s).

    The first chunk is excluded from both sides because its arrival is TTFT's business. Undefined with
    fewer than two output events, a non-positive time span, a missing count, or a negative token
    numerator (server usage smaller than the client's first-chunk count: the tokenizers disagree).
    """
    n = record.output_tokens
    first_chunk = record.first_chunk_tokens
    first, last = record.first_token_s, record.last_token_s
    if n is None or first_chunk is None or first is None or last is None or len(record.token_times_s) < 2:
        return None
    span = last - first
    extra = n - first_chunk
    if span <= 0 or extra < 0:
        return None
    return extra / span


def tpot_ms(record: RequestRecord) -> float | None:
    """Time per output token after the first, vLLM style: (e2e - ttft) / (n - 1); needs n >= 2."""
    n = record.output_tokens
    if n is None or n < 2 or record.first_token_s is None or record.done_s is None:
        return None
    return (record.done_s - record.first_token_s) * 1000.0 / (n - 1)


def itl_ms(record: RequestRecord) -> list[float]:
    """Inter-token latencies: gaps between consecutive output-carrying events (not tokens)."""
    return [(b - a) * 1000.0 for a, b in pairwise(record.token_times_s)]


def _timing(record: RequestRecord, key: str) -> float | None:
    """A positive finite number from ``server_timings``, else None (absent, malformed or zero)."""
    timings = record.server_timings
    if not timings:
        return None
    value = timings.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def server_decode_tps(record: RequestRecord) -> float | None:
    """The server's own decode speed (llama.cpp ``timings.predicted_per_second``), when it reports one."""
    return _timing(record, "predicted_per_second")


def server_prefill_tps(record: RequestRecord) -> float | None:
    """The server's own prompt-processing speed (llama.cpp ``timings.prompt_per_second``)."""
    return _timing(record, "prompt_per_second")


# --------------------------------------------------------------------------------------------------
# Service-level objectives and goodput


@dataclass(frozen=True, slots=True)
class SLO:
    """Per-request thresholds; a completed request is "good" when it meets every one that is set.

    Latency bounds are inclusive maxima (value <= bound); ``min_output_speed_tps`` is an inclusive
    minimum. ``itl_ms`` bounds the request's *largest* inter-token gap (every gap must be <= bound):
    it is the only per-request reading that catches a stall, the mean gap being already ``tpot_ms``.
    """

    ttft_ms: float | None = None
    ttfat_ms: float | None = None
    tpot_ms: float | None = None
    itl_ms: float | None = None
    e2e_ms: float | None = None
    min_output_speed_tps: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"SLO {f.name} must be a positive finite number, got {value!r}")

    def as_dict(self) -> dict[str, float]:
        """The thresholds that are set, for the summary's JSON."""
        return {f.name: float(v) for f in fields(self) if (v := getattr(self, f.name)) is not None}


# parse_slo key -> (SLO field, kind); kind decides the accepted units.
SLO_KEYS: dict[str, tuple[str, str]] = {
    "ttft": ("ttft_ms", "time"),
    "ttfat": ("ttfat_ms", "time"),
    "tpot": ("tpot_ms", "time"),
    "itl": ("itl_ms", "time"),
    "e2e": ("e2e_ms", "time"),
    "speed": ("min_output_speed_tps", "speed"),
}
_UNITS: dict[str, dict[str, float]] = {
    "time": {"": 1.0, "ms": 1.0, "s": 1000.0},
    "speed": {"": 1.0, "tps": 1.0, "tok/s": 1.0},
}
_VALUE_RE = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?\s*([a-z/]*)$")


def parse_slo(text: str) -> SLO:
    """Parse ``"ttft=500ms,tpot=50ms,e2e=2s,speed=20"``: times in ms or s (bare number = ms), speed in tok/s.

    Strict on purpose: an unknown key, unit, duplicate or non-positive value raises ValueError rather
    than silently measuring against a different objective than the user meant.
    """
    values: dict[str, float] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = (part.strip().lower() for part in item.partition("="))
        if not sep or not value:
            raise ValueError(f"SLO item {item!r} is not key=value")
        if key not in SLO_KEYS:
            raise ValueError(f"unknown SLO key {key!r}; valid keys: {', '.join(SLO_KEYS)}")
        name, kind = SLO_KEYS[key]
        if name in values:
            raise ValueError(f"SLO key {key!r} given twice")
        match = _VALUE_RE.match(value)
        if match is None or match.group(2) not in _UNITS[kind]:
            units = ", ".join(u for u in _UNITS[kind] if u) + " or a bare number"
            raise ValueError(f"bad SLO value {value!r} for {key}; use {units}")
        number = float(value[: len(value) - len(match.group(2))])
        values[name] = number * _UNITS[kind][match.group(2)]
    if not values:
        raise ValueError("empty SLO; give at least one of " + ", ".join(SLO_KEYS))
    return SLO(**values)


def meets_slo(record: RequestRecord, slo: SLO) -> bool:
    """Whether one request is good under ``slo`` (the reference for goodput).

    Only status "ok" can be good. A threshold on a metric the request does not define fails it, with one
    exception: the pace metrics (tpot, itl, speed) are met by a response too short to have a pace
    (tpot: n < 2 tokens; itl and speed: fewer than two output events) — there is no gap to violate.
    """
    if record.status != OK:
        return False
    checks: list[bool] = []
    if slo.ttft_ms is not None:
        checks.append(_le(ttft_ms(record), slo.ttft_ms))
    if slo.ttfat_ms is not None:
        checks.append(_le(ttfat_ms(record), slo.ttfat_ms))
    if slo.e2e_ms is not None:
        checks.append(_le(e2e_ms(record), slo.e2e_ms))
    if slo.tpot_ms is not None:
        n = record.output_tokens
        checks.append((n is not None and n < 2) or _le(tpot_ms(record), slo.tpot_ms))
    short = len(record.token_times_s) < 2
    if slo.itl_ms is not None:
        checks.append(short or max(itl_ms(record)) <= slo.itl_ms)
    if slo.min_output_speed_tps is not None:
        speed = output_speed_tps(record)
        checks.append(short or (speed is not None and speed >= slo.min_output_speed_tps))
    return all(checks)


def _le(value: float | None, bound: float) -> bool:
    """value <= bound, False when the value is undefined."""
    return value is not None and value <= bound


# --------------------------------------------------------------------------------------------------
# The run summary


def measurement_window(records: Iterable[RequestRecord]) -> tuple[float, float] | None:
    """(earliest sent_s, latest done_s) over measure-phase records that were sent, any status.

    Failed and cut-off requests occupy the endpoint too, so they bound the window. None when no record
    was sent or none has a done_s.
    """
    sent = [r for r in records if r.phase != PHASE_WARMUP and r.sent_s is not None]
    done = [r.done_s for r in sent if r.done_s is not None]
    if not sent or not done:
        return None
    return min(r.sent_s for r in sent if r.sent_s is not None), max(done)


def _col(records: list[RequestRecord], name: str) -> np.ndarray:
    """One record field as a float64 column; None becomes NaN (so missing values drop out of formulas)."""
    return np.array(list(map(attrgetter(name), records)), dtype=np.float64)


def _sum_or_none(column: np.ndarray) -> int | None:
    """Sum of the reported (non-NaN) counts; None when nothing was reported, so unknown is never 0."""
    known = column[~np.isnan(column)]
    return int(known.sum()) if known.size else None


def _rate(amount: float | None, duration_s: float | None) -> float | None:
    """amount per second of the window; None without a positive window."""
    if amount is None or duration_s is None or duration_s <= 0:
        return None
    return float(amount) / duration_s


def _ok_columns(ok: list[RequestRecord]) -> dict[str, np.ndarray]:
    """Per-request metric columns of the completed requests (NaN = undefined), same arithmetic as above."""
    sent = _col(ok, "sent_s")
    first = _col(ok, "first_token_s")
    first_answer = _col(ok, "first_answer_s")
    last = _col(ok, "last_token_s")
    done = _col(ok, "done_s")
    usage = _col(ok, "usage_completion_tokens")
    client = _col(ok, "client_output_tokens")
    n = np.where(np.isnan(usage), client, usage)  # RequestRecord.output_tokens
    first_chunk = _col(ok, "first_chunk_tokens")
    events = np.fromiter(map(len, map(attrgetter("token_times_s"), ok)), dtype=np.int64, count=len(ok))

    with np.errstate(invalid="ignore", divide="ignore"):
        span = last - first
        extra = n - first_chunk
        speed = np.where((events >= 2) & (span > 0) & (extra >= 0), extra / span, np.nan)
        tpot = np.where(n >= 2, (done - first) * 1000.0 / (n - 1), np.nan)
    return {
        "ttft_ms": (first - sent) * 1000.0,
        "ttfat_ms": (first_answer - sent) * 1000.0,
        "e2e_ms": (done - sent) * 1000.0,
        "output_speed_tps": speed,
        "tpot_ms": tpot,
        "n": n,
        "usage": usage,
        "client": client,
        "prompt": _col(ok, "usage_prompt_tokens"),
        "events": events,
    }


def _itl_columns(ok: list[RequestRecord], events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled ITLs (ms) of all completed requests, and each request's largest ITL (NaN when < 2 events).

    Token times are flattened once; the differences that straddle two requests are masked out.
    """
    total = int(events.sum())
    flat = np.fromiter(chain.from_iterable(r.token_times_s for r in ok), dtype=np.float64, count=total)
    diffs = (flat[1:] - flat[:-1]) * 1000.0
    keep = np.ones(diffs.size, dtype=bool)
    cross = np.cumsum(events)[:-1] - 1  # index of the diff from one request's last to the next's first
    keep[cross[(cross >= 0) & (cross < diffs.size)]] = False
    itl = diffs[keep]
    per_request = np.maximum(events - 1, 0)
    max_itl = np.full(len(ok), np.nan)
    has = per_request > 0
    if itl.size:
        starts = (np.cumsum(per_request) - per_request)[has]
        max_itl[has] = np.maximum.reduceat(itl, starts)
    return itl, max_itl


def _good_mask(cols: dict[str, np.ndarray], max_itl: np.ndarray, slo: SLO) -> np.ndarray:
    """Vectorised :func:`meets_slo` over the completed requests (NaN comparisons are False = fails)."""
    good = np.ones(cols["n"].size, dtype=bool)
    short = cols["events"] < 2
    with np.errstate(invalid="ignore"):
        for name in ("ttft_ms", "ttfat_ms", "e2e_ms"):
            bound = getattr(slo, name)
            if bound is not None:
                good &= cols[name] <= bound
        if slo.tpot_ms is not None:
            good &= (cols["n"] < 2) | (cols["tpot_ms"] <= slo.tpot_ms)
        if slo.itl_ms is not None:
            good &= short | (max_itl <= slo.itl_ms)
        if slo.min_output_speed_tps is not None:
            good &= short | (cols["output_speed_tps"] >= slo.min_output_speed_tps)
    return good


def _defined(column: np.ndarray) -> np.ndarray:
    return column[~np.isnan(column)]


def summarize(records: Iterable[RequestRecord], *, slo: SLO | None = None) -> dict[str, Any]:
    """The run's report as plain JSON-ready values (see docs/metrics.md for every definition).

    Warmup records are only counted. Latency and speed distributions use completed (status "ok")
    requests; schedule lag uses every request that was sent; the window bounds all sent requests.
    """
    all_records = list(records)
    measure = [r for r in all_records if r.phase != PHASE_WARMUP]
    ok = [r for r in measure if r.status == OK]
    failed = [r for r in measure if r.status == FAILED]
    incomplete = [r for r in measure if r.status == INCOMPLETE]

    window = measurement_window(measure)
    duration_s = float(window[1] - window[0]) if window else None

    cols = _ok_columns(ok)
    itl, max_itl = _itl_columns(ok, cols["events"])
    sent = [r for r in measure if r.sent_s is not None]
    lag = (_col(sent, "sent_s") - _col(sent, "scheduled_s")) * 1000.0

    metrics = {
        "ttft_ms": describe(_defined(cols["ttft_ms"])),
        "ttfat_ms": describe(_defined(cols["ttfat_ms"])),
        "output_speed_tps": describe(_defined(cols["output_speed_tps"])),
        "tpot_ms": describe(_defined(cols["tpot_ms"])),
        "itl_ms": describe(itl),
        "e2e_ms": describe(_defined(cols["e2e_ms"])),
        "schedule_lag_ms": describe(lag),
    }

    usage, client = cols["usage"], cols["client"]
    both = ~np.isnan(usage) & ~np.isnan(client)
    server_both = float(usage[both].sum())
    discrepancy = (float(client[both].sum()) - server_both) / server_both * 100.0 if server_both > 0 else None
    prompt = _sum_or_none(cols["prompt"])
    output_total = _sum_or_none(cols["n"]) or 0

    errors: dict[str, int] = {}
    for r in chain(failed, (r for r in incomplete if r.error_category)):
        key = r.error_category or UNCATEGORIZED
        errors[key] = errors.get(key, 0) + 1

    goodput: dict[str, Any] | None = None
    if slo is not None:
        good = int(_good_mask(cols, max_itl, slo).sum())
        finished = len(ok) + len(failed)
        goodput = {
            "slo": slo.as_dict(),
            "good_requests": good,
            "good_fraction": good / finished if finished else None,
            "goodput_requests_per_s": _rate(good, duration_s),
        }

    summary: dict[str, Any] = {
        "requests": {
            "completed": len(ok),
            "failed": len(failed),
            "incomplete": len(incomplete),
            "warmup": len(all_records) - len(measure),
        },
        "duration_s": duration_s,
        "metrics": metrics,
        "throughput": {
            "requests_per_s": _rate(len(ok), duration_s),
            "output_tokens_per_s": _rate(output_total, duration_s),
            "total_tokens_per_s": _rate(output_total + (prompt or 0), duration_s),
        },
        "tokens": {
            "server_output": _sum_or_none(usage),
            "client_output": _sum_or_none(client),
            "discrepancy_pct": discrepancy,
            "requests_without_usage": int(np.isnan(usage).sum()),
            "prompt": prompt,
        },
        "errors": dict(sorted(errors.items())),
        "goodput": goodput,
    }
    if any(r.server_timings for r in measure):
        summary["server"] = _server_section(ok, cols["output_speed_tps"])
    if any(r.suite for r in measure):
        summary["quality"] = quality_summary(measure)
        summary["by_suite"] = _by_suite(measure)
    return summary


Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def confidence_interval_95(values: list[float]) -> tuple[float, float, str]:
    """95% interval for the mean score: Wilson's for pass/fail scores (exact 0/1 values; right even at
    0% or 100%), otherwise the normal approximation mean ± z·s/√n clipped to [0, 1]."""
    n = len(values)
    mean = sum(values) / n
    if all(v in (0.0, 1.0) for v in values):
        z2 = Z_95 * Z_95
        centre = (mean + z2 / (2 * n)) / (1 + z2 / n)
        half = Z_95 * math.sqrt(mean * (1 - mean) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        return max(0.0, centre - half), min(1.0, centre + half), "wilson"
    std = statistics.stdev(values) if n > 1 else 0.0
    half = Z_95 * std / math.sqrt(n)
    return max(0.0, mean - half), min(1.0, mean + half), "normal"


def _quality_stats(values: list[float]) -> dict[str, Any]:
    low, high, method = confidence_interval_95(values)
    return {"n": len(values), "mean": sum(values) / len(values), "ci95": [low, high], "ci_method": method}


def quality_summary(records: Iterable[RequestRecord]) -> dict[str, Any] | None:
    """Mean score with a 95% interval per suite and over all scored requests (measure phase, status ok;
    a failed request has no answer to score and is counted under ``requests`` instead)."""
    by_suite: dict[str, list[float]] = {}
    for r in records:
        if r.phase != PHASE_WARMUP and r.status == OK and r.quality is not None and r.suite:
            by_suite.setdefault(r.suite, []).append(float(r.quality))
    if not by_suite:
        return None
    every = [v for values in by_suite.values() for v in values]
    return {
        "overall": _quality_stats(every),
        "suites": {suite: _quality_stats(values) for suite, values in sorted(by_suite.items())},
    }


def _by_suite(records: list[RequestRecord]) -> dict[str, Any]:
    """Speed beside quality for each suite; for ``rag`` also per context-length bucket (the bucket is the
    middle of the prompt id, ``rag-4k-17``), since long prompts are where TTFT and speed change most."""
    groups: dict[str, list[RequestRecord]] = {}
    for r in records:
        if r.suite and r.phase != PHASE_WARMUP:
            groups.setdefault(r.suite, []).append(r)
    section: dict[str, Any] = {}
    for suite, group in sorted(groups.items()):
        section[suite] = _speed_row(group)
        tasks = [r for r in group if "agent" in r.extra]
        if tasks:
            section[suite]["tasks"] = _task_row(tasks)
        if suite == "rag":
            buckets: dict[str, list[RequestRecord]] = {}
            for r in group:
                parts = str(r.extra.get("prompt_id", "")).split("-")
                if len(parts) >= 3:
                    buckets.setdefault(parts[1], []).append(r)
            section[suite]["by_context"] = {
                bucket: _speed_row(rows) for bucket, rows in sorted(buckets.items(), key=lambda kv: _bucket_size(kv[0]))
            }
    return section


def _task_row(finals: list[RequestRecord]) -> dict[str, Any]:
    """Multi-turn tasks (agent suite), one row per task from its last turn: the task is the unit a user
    waits for, so its whole duration, turns and tokens are reported beside its success rate."""
    totals = [r.extra["agent"] for r in finals]
    e2e = describe([t["task_e2e_ms"] for t in totals if t.get("task_e2e_ms") is not None])
    scored = [float(r.quality) for r in finals if r.quality is not None]
    return {
        "tasks": len(finals),
        "success_rate": sum(scored) / len(scored) if scored else None,
        "turns_mean": sum(t["turns"] for t in totals) / len(totals),
        "task_e2e_ms": {"p50": e2e["p50"], "p95": e2e["p95"], "mean": e2e["mean"]},
        "output_tokens_mean": sum(t["output_tokens"] for t in totals) / len(totals),
        "prompt_tokens_mean": sum(t["prompt_tokens"] for t in totals) / len(totals),
        "tool_calls_mean": sum(t["tool_calls"] for t in totals) / len(totals),
    }


def _bucket_size(bucket: str) -> float:
    try:
        return float(bucket.rstrip("k")) * (1000 if bucket.endswith("k") else 1)
    except ValueError:
        return math.inf


def _speed_row(records: list[RequestRecord]) -> dict[str, Any]:
    ok = [r for r in records if r.status == OK]
    ttft = describe(_defined(np.array([v if (v := ttft_ms(r)) is not None else np.nan for r in ok], dtype=float)))
    speed = describe(
        _defined(np.array([v if (v := output_speed_tps(r)) is not None else np.nan for r in ok], dtype=float))
    )
    e2e = describe(_defined(np.array([v if (v := e2e_ms(r)) is not None else np.nan for r in ok], dtype=float)))
    scores = [float(r.quality) for r in ok if r.quality is not None]
    prompt = [r.usage_prompt_tokens or r.input_tokens_requested for r in ok]
    prompt_known = [p for p in prompt if p]
    return {
        "completed": len(ok),
        "failed": sum(1 for r in records if r.status == FAILED),
        "prompt_tokens_mean": sum(prompt_known) / len(prompt_known) if prompt_known else None,
        "ttft_ms": {"p50": ttft["p50"], "p95": ttft["p95"]},
        "output_speed_tps": {"p50": speed["p50"]},
        "e2e_ms": {"p50": e2e["p50"]},
        "quality": sum(scores) / len(scores) if scores else None,
    }


def _server_section(ok: list[RequestRecord], client_speed: np.ndarray) -> dict[str, Any]:
    """Server-reported speeds next to the client's, to expose network/streaming overhead (or a bad clock)."""
    decode = np.array([server_decode_tps(r) for r in ok], dtype=np.float64)
    prefill = np.array([server_prefill_tps(r) for r in ok], dtype=np.float64)
    both = ~np.isnan(decode) & ~np.isnan(client_speed)
    pct = (client_speed[both] - decode[both]) / decode[both] * 100.0
    return {
        "decode_tps": describe(_defined(decode)),
        "prefill_tps": describe(_defined(prefill)),
        "client_vs_server_speed_pct": float(np.median(pct)) if pct.size else None,
    }
