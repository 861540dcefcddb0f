"""Two stored runs side by side: the difference of every metric, with a bootstrap interval and a verdict.

This is the regression check after a provider or config change. A difference is only *flagged* when it
is statistically significant and, optionally, large enough to matter (``min_change``); everything else is
reported but called "unchanged". Significance is decided over the whole comparison (Holm's step-down on
bootstrap p-values), because a dozen metrics tested at 5% each would raise a false alarm in about a third
of comparisons where nothing changed. ``docs/metrics.md`` ("Comparing two runs") states every definition.

The intervals are percentile-bootstrap intervals: each run's per-request values are resampled with
replacement, independently of the other run, and the statistic (p50, p95, mean) recomputed on each
resample. Requests, not tokens or gaps, are the resampled unit, because values within one request are
correlated (a slow request has slow gaps). Run-level throughput is a single number per run, so it has no
interval and is never flagged.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import chain
from typing import Any, Literal

import numpy as np

from tokenrace.metrics import (
    PERCENTILES,
    e2e_ms,
    measurement_window,
    output_speed_tps,
    tpot_ms,
    ttfat_ms,
    ttft_ms,
)
from tokenrace.records import FAILED, OK, PHASE_WARMUP, RequestRecord, RunInfo
from tokenrace.store import Store

__all__ = [
    "METRICS",
    "Comparison",
    "MetricDiff",
    "MetricSpec",
    "RunSide",
    "bootstrap_p_value",
    "bootstrap_replicates",
    "compare_records",
    "compare_runs",
    "holm_rejections",
    "parse_change",
]

Better = Literal["lower", "higher"]
Direction = Literal["better", "worse", "changed", "unchanged"]

# Methods of a MetricDiff: how (or why not) its interval was computed.
BOOTSTRAP = "bootstrap"
RUN_LEVEL = "one value per run"
UNDEFINED = "undefined in one run"
TOO_FEW = "too few values"

CORRECTIONS = ("holm", "none")
MIN_VALUES = 2  # per run; with fewer there is nothing to resample
MIN_RESAMPLES = 100  # fewer leaves a handful of replicates in each tail of a 95% interval
SMALL_SAMPLE = 20  # below this many values per run, percentile intervals are rough: say so
# Upper bound of one chunk of the resample matrix (int32 indices + their float64 values), so a run of
# 100,000 requests resamples in ~40-row chunks instead of one 2,000 x 100,000 matrix.
CHUNK_BYTES = 48 * 2**20
_BYTES_PER_CELL = 12
_ITL_SLICE_EVENTS = 1_000_000  # token times per slice when computing per-request median gaps


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One compared figure: which per-request column, which statistic of it, and which way is better.

    ``better`` None means neither direction is a regression (output length): a significant change is
    reported as "changed" and never fails a pipeline.
    """

    key: str
    label: str
    unit: str  # "ms", "tok/s", "req/s", "tokens", "usd", "fraction", "score"
    better: Better | None
    column: str | None  # per-request column; None for run-level figures
    statistic: str  # "p50", "p95" (keys of metrics.PERCENTILES) or "mean"


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("ttft_p50_ms", "TTFT p50", "ms", "lower", "ttft_ms", "p50"),
    MetricSpec("ttft_p95_ms", "TTFT p95", "ms", "lower", "ttft_ms", "p95"),
    MetricSpec("ttfat_p50_ms", "TTFAT p50", "ms", "lower", "ttfat_ms", "p50"),
    MetricSpec("e2e_p50_ms", "E2E p50", "ms", "lower", "e2e_ms", "p50"),
    MetricSpec("e2e_p95_ms", "E2E p95", "ms", "lower", "e2e_ms", "p95"),
    MetricSpec("output_speed_p50_tps", "output speed p50", "tok/s", "higher", "output_speed_tps", "p50"),
    MetricSpec("output_speed_mean_tps", "output speed mean", "tok/s", "higher", "output_speed_tps", "mean"),
    MetricSpec("tpot_p50_ms", "TPOT p50", "ms", "lower", "tpot_ms", "p50"),
    MetricSpec("itl_p50_ms", "ITL p50 (request medians)", "ms", "lower", "itl_request_median_ms", "p50"),
    MetricSpec("error_rate", "error rate", "fraction", "lower", "failed", "mean"),
    MetricSpec("quality_mean", "quality mean", "score", "higher", "quality", "mean"),
    MetricSpec("output_tokens_mean", "output tokens mean", "tokens", None, "output_tokens", "mean"),
    MetricSpec("cost_per_request_usd", "cost per request", "usd", "lower", "cost_usd", "mean"),
    MetricSpec("requests_per_s", "throughput", "req/s", "higher", None, "run"),
    MetricSpec("output_tokens_per_s", "output throughput", "tok/s", "higher", None, "run"),
)


@dataclass(frozen=True, slots=True)
class RunSide:
    """What identifies one side of the comparison in the header."""

    run_id: str
    endpoint: str
    workload: str
    started_at: float
    status: str
    profile: str  # the load profile's label
    models: list[str]
    completed: int
    failed: int
    incomplete: int
    warmup: int
    price_source: str | None


@dataclass(frozen=True, slots=True)
class MetricDiff:
    """One metric in both runs. ``diff`` = b − a, ``rel_diff`` = (b − a) / a (None when a is 0).

    ``significant``: Δ = 0 is rejected — by Holm's step-down over all bootstrapped metrics of the
    comparison (the default), or, uncorrected, when the interval excludes 0. ``flagged``: significant and
    ``|rel_diff| >= min_change``. ``direction`` is the verdict: "better"/"worse" (or "changed" for a
    metric with no better side) only when flagged, "unchanged" otherwise.
    """

    key: str
    label: str
    unit: str
    better: Better | None
    method: str  # BOOTSTRAP, RUN_LEVEL, UNDEFINED or TOO_FEW
    a: float | None
    b: float | None
    n_a: int
    n_b: int
    diff: float | None = None
    rel_diff: float | None = None
    ci: tuple[float, float] | None = None
    rel_ci: tuple[float, float] | None = None
    significant: bool = False
    flagged: bool = False
    direction: Direction = "unchanged"
    p_value: float | None = None  # two-sided bootstrap p-value of Δ = 0, before the family-wise correction


@dataclass(slots=True)
class Comparison:
    """The whole comparison; :meth:`as_dict` is the ``--format json`` document."""

    run_a: RunSide
    run_b: RunSide
    metrics: list[MetricDiff]
    notes: list[str] = field(default_factory=list)
    resamples: int = 2000
    confidence: float = 0.95
    min_change: float = 0.0
    seed: int = 0
    correction: str = "holm"  # "holm" (family-wise error rate) or "none" (each metric on its own)

    def metric(self, key: str) -> MetricDiff:
        for m in self.metrics:
            if m.key == key:
                return m
        raise KeyError(key)

    @property
    def regressions(self) -> list[MetricDiff]:
        return [m for m in self.metrics if m.direction == "worse"]

    @property
    def improvements(self) -> list[MetricDiff]:
        return [m for m in self.metrics if m.direction == "better"]

    @property
    def changes(self) -> list[MetricDiff]:
        """Flagged changes of metrics with no better side (never a regression)."""
        return [m for m in self.metrics if m.direction == "changed"]

    def verdict(self) -> str:
        """One line: the flagged regressions first, with Δ% and its interval, or "no significant change"."""
        parts = []
        for items, noun in (
            (self.regressions, "regression"),
            (self.improvements, "improvement"),
            (self.changes, "change"),
        ):
            if items:
                plural = "s" if len(items) > 1 else ""
                parts.append(f"{len(items)} significant {noun}{plural}: " + ", ".join(map(describe_change, items)))
        if not parts:
            small = sum(m.significant and not m.flagged for m in self.metrics)
            tail = f" ({small} significant below --min-change {threshold_text(self.min_change)})" if small else ""
            return "no significant change" + tail
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for m in out["metrics"]:
            for key in ("ci", "rel_ci"):
                m[key] = list(m[key]) if m[key] is not None else None
        out["regressions"] = [m.key for m in self.regressions]
        out["improvements"] = [m.key for m in self.improvements]
        out["verdict"] = self.verdict()
        return out


# --------------------------------------------------------------------------------------------------
# Formatting helpers shared by the CLI and the verdict line


def format_value(value: float | None, unit: str) -> str:
    """A metric value in its unit's usual precision; "–" when undefined."""
    if value is None:
        return "–"
    if unit == "fraction":
        return f"{value:.2%}"
    if unit == "usd":
        return "$" + _dollars(value)
    if unit == "score":
        return f"{value:.3f}"
    if unit in ("req/s",):
        return f"{value:,.2f}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"


def threshold_text(fraction: float) -> str:
    """0.05 -> "5%", 0.025 -> "2.5%": a threshold as the user wrote it."""
    return f"{fraction * 100:g}%"


def _dollars(value: float) -> str:
    """Three significant digits without an exponent: per-request costs are often millionths of a dollar."""
    if value == 0 or not math.isfinite(value):
        return f"{value:.2f}"
    digits = max(2, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


def format_delta(value: float | None, unit: str) -> str:
    """A signed absolute difference (error rate in percentage points)."""
    if value is None:
        return "–"
    if unit == "fraction":
        return f"{value * 100:+.2f} pp"
    if unit == "usd":
        return f"{'+' if value >= 0 else '-'}${_dollars(abs(value))}"
    if unit == "score":
        return f"{value:+.3f}"
    return f"{value:+,.1f}" if abs(value) >= 10 else f"{value:+,.2f}"


def describe_change(m: MetricDiff) -> str:
    """``TTFT p50 +21.3% [+18.0%, +24.9%]``; the absolute difference when the relative one is undefined."""
    if m.rel_diff is not None and m.rel_ci is not None:
        return f"{m.label} {m.rel_diff:+.1%} [{m.rel_ci[0]:+.1%}, {m.rel_ci[1]:+.1%}]"
    text = f"{m.label} {format_delta(m.diff, m.unit)}"
    if m.ci is not None:
        text += f" [{format_delta(m.ci[0], m.unit)}, {format_delta(m.ci[1], m.unit)}]"
    return text


_CHANGE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")


def parse_change(text: str) -> float:
    """``"5%"`` or ``"0.05"`` -> 0.05. A bare number of 1 or more is refused: 5 could mean 5% or 500%."""
    match = _CHANGE_RE.match(text)
    if match is None:
        raise ValueError(f"bad --min-change {text!r}: write a percentage such as 5% (or a fraction such as 0.05)")
    value = float(match.group(1))
    if match.group(2):
        return value / 100.0
    if value >= 1.0:
        raise ValueError(f"ambiguous --min-change {text!r}: write {value:g}% or a fraction below 1")
    return value


# --------------------------------------------------------------------------------------------------
# The bootstrap


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """numpy's own linear interpolation (``method="linear"``), so replicates use describe()'s formula."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1.0 - t), a + diff * t)


def _point(values: np.ndarray, statistic: str) -> float:
    """The statistic as ``tokenrace show`` reports it (metrics.describe: linear percentiles, plain mean)."""
    if statistic == "mean":
        return float(values.mean())
    return float(np.percentile(values, PERCENTILES[statistic], method="linear"))


def bootstrap_replicates(
    values: np.ndarray, statistics: Sequence[str], resamples: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``resamples`` bootstrap replicates of each statistic ("mean", "p50", "p95"...) of ``values``.

    Each replicate draws ``n`` indices with replacement. The indices point into the *sorted* values, so
    a replicate's k-th order statistic is the value at its k-th smallest index: percentiles need only a
    partial sort of the index rows (no gathering of values), and every statistic of one replicate is
    computed from the same draw. The matrix is built in chunks of at most ``CHUNK_BYTES``.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0:
        raise ValueError("cannot bootstrap an empty sample")
    out = {s: np.empty(resamples, dtype=np.float64) for s in statistics}
    # For each percentile: the two order statistics around numpy's virtual index (n − 1)·q, and the weight.
    positions: dict[str, tuple[int, int, float]] = {}
    for s in statistics:
        if s != "mean":
            h = (n - 1) * PERCENTILES[s] / 100.0
            lo = min(math.floor(h), n - 1)
            positions[s] = (lo, min(lo + 1, n - 1), h - lo)
    kth = sorted({k for lo, hi, _ in positions.values() for k in (lo, hi)})
    rows = max(1, CHUNK_BYTES // (_BYTES_PER_CELL * n))
    dtype = np.int32 if n < 2**31 else np.int64
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=dtype)
        if "mean" in out:
            out["mean"][start:stop] = x[idx].mean(axis=1)
        if kth:
            idx.partition(kth, axis=1)
            for s, (lo, hi, t) in positions.items():
                out[s][start:stop] = _lerp(x[idx[:, lo]], x[idx[:, hi]], t)
    return out


def _interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(replicates, [tail, 100.0 - tail], method="linear")
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------------
# Per-run values


@dataclass(slots=True)
class _RunData:
    side: RunSide
    columns: dict[str, np.ndarray]
    run_level: dict[str, float | None]  # requests_per_s, output_tokens_per_s, cost_per_request_usd (hourly)
    price_per_hour: float | None
    priced: bool
    suites: set[str]


def _column(values: Sequence[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None], dtype=np.float64)


def request_median_itl_ms(records: Sequence[RequestRecord]) -> np.ndarray:
    """Each request's median inter-token gap (ms), for requests with at least two output events.

    Requests are processed in slices of about ``_ITL_SLICE_EVENTS`` token times, so a 100k-request run
    never holds all its gaps (and their sort order) at once.
    """
    parts = []
    start = events = 0
    for i, r in enumerate(records):
        events += len(r.token_times_s)
        if events >= _ITL_SLICE_EVENTS or i == len(records) - 1:
            parts.append(_median_gaps(records[start : i + 1]))
            start, events = i + 1, 0
    return np.concatenate(parts) if parts else np.empty(0)


def _median_gaps(records: Sequence[RequestRecord]) -> np.ndarray:
    """Vectorised: token times flattened, gaps across two requests dropped, gaps sorted inside each
    request, and the middle one (or the mean of the middle two) taken."""
    counts = np.fromiter((len(r.token_times_s) for r in records), dtype=np.int64, count=len(records))
    flat = np.fromiter(chain.from_iterable(r.token_times_s for r in records), dtype=np.float64, count=counts.sum())
    owner = np.repeat(np.arange(len(records)), counts)
    same = owner[1:] == owner[:-1]
    gaps = (np.diff(flat) * 1000.0)[same]
    who = owner[1:][same]
    if gaps.size == 0:
        return np.empty(0)
    gaps = gaps[np.lexsort((gaps, who))]  # `who` is already grouped: this sorts within each request
    per = np.bincount(who, minlength=len(records))
    per = per[per > 0]
    starts = np.cumsum(per) - per
    return (gaps[starts + (per - 1) // 2] + gaps[starts + per // 2]) / 2.0


def _run_data(run: RunInfo, records: Sequence[RequestRecord]) -> _RunData:
    """Every per-request column that a compared statistic needs, measure phase only."""
    from tokenrace.bench import run_price  # bench imports the whole client stack; only needed here
    from tokenrace.pricing import request_cost, run_cost

    measure = [r for r in records if r.phase != PHASE_WARMUP]
    ok = [r for r in measure if r.status == OK]
    finished = [r for r in measure if r.status in (OK, FAILED)]
    n_failed = sum(r.status == FAILED for r in measure)

    window = measurement_window(measure)
    duration = window[1] - window[0] if window else None
    out_tokens = _column([r.output_tokens for r in ok])

    def rate(amount: float) -> float | None:
        return amount / duration if duration is not None and duration > 0 else None

    price, source = run_price(run)
    endpoint = (run.config or {}).get("endpoint") or {}
    per_hour = endpoint.get("price_per_hour")
    costs = np.empty(0)
    run_level: dict[str, float | None] = {
        "requests_per_s": rate(len(ok)),
        "output_tokens_per_s": rate(float(out_tokens.sum())),
        "cost_per_request_usd": None,
    }
    if per_hour is not None:  # the hour is billed, not the request: a run-level figure
        run_level["cost_per_request_usd"] = run_cost(measure, price, price_per_hour=per_hour)["per_request_mean_usd"]
    elif price is not None:
        costs = _column([c.total_usd if (c := request_cost(r, price)) else None for r in measure])

    columns = {
        "ttft_ms": _column([ttft_ms(r) for r in ok]),
        "ttfat_ms": _column([ttfat_ms(r) for r in ok]),
        "e2e_ms": _column([e2e_ms(r) for r in ok]),
        "output_speed_tps": _column([output_speed_tps(r) for r in ok]),
        "tpot_ms": _column([tpot_ms(r) for r in ok]),
        "itl_request_median_ms": request_median_itl_ms(ok),
        "failed": np.array([r.status == FAILED for r in finished], dtype=np.float64),
        "quality": _column([r.quality for r in ok]),
        "output_tokens": out_tokens,
        "cost_usd": costs,
    }
    side = RunSide(
        run_id=run.run_id,
        endpoint=run.endpoint,
        workload=run.workload,
        started_at=run.started_at,
        status=run.status,
        profile=str((run.profile or {}).get("label") or (run.profile or {}).get("kind", "")),
        models=sorted({r.model for r in measure}),
        completed=len(ok),
        failed=n_failed,
        incomplete=len(measure) - len(finished),
        warmup=len(records) - len(measure),
        price_source=source,
    )
    suites = {r.suite for r in ok if r.suite and r.quality is not None}
    return _RunData(side, columns, run_level, per_hour, price is not None or per_hour is not None, suites)


# --------------------------------------------------------------------------------------------------
# The comparison


def _verdict(
    better: Better | None, diff: float, rel: float | None, significant: bool, min_change: float
) -> tuple[bool, Direction]:
    """(flagged, direction) of a difference whose significance is already decided."""
    # a change from 0 has no relative size: it is as large as any threshold
    big_enough = rel is None or abs(rel) >= min_change
    flagged = significant and big_enough
    if not flagged:
        return False, "unchanged"
    if better is None:
        return True, "changed"
    improved = diff < 0 if better == "lower" else diff > 0
    return True, "better" if improved else "worse"


def bootstrap_p_value(replicates: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from bootstrap replicates of Δ.

    ``(1 + 2·min(#{Δ* ≤ 0}, #{Δ* ≥ 0})) / (R + 1)``, capped at 1: twice the share of replicates on the far
    side of 0, with the +1 that keeps a finite number of resamples from ever claiming p = 0. The
    percentile interval at level c excludes 0 roughly when p < 1 − c.
    """
    below = int(np.count_nonzero(replicates <= 0.0))
    above = int(np.count_nonzero(replicates >= 0.0))
    return min(1.0, (1 + 2 * min(below, above)) / (replicates.size + 1))


def holm_rejections(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down: which hypotheses to reject so that P(any false rejection) ≤ alpha.

    Sort the m p-values ascending and reject the k-th smallest while p₍ₖ₎ ≤ alpha / (m − k + 1); stop at
    the first that fails. Valid whatever the dependence between the metrics (TTFT and E2E move together).
    """
    m = len(p_values)
    rejected = [False] * m
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        if p_values[index] > alpha / (m - rank):
            break
        rejected[index] = True
    return rejected


def _rel(diff: float, a: float) -> float | None:
    return diff / a if a != 0 else None


def _run_level_diff(spec: MetricSpec, a: float | None, b: float | None) -> MetricDiff:
    diff = b - a if a is not None and b is not None else None
    return MetricDiff(
        key=spec.key,
        label=spec.label,
        unit=spec.unit,
        better=spec.better,
        method=RUN_LEVEL if diff is not None else UNDEFINED,
        a=a,
        b=b,
        n_a=1 if a is not None else 0,
        n_b=1 if b is not None else 0,
        diff=diff,
        rel_diff=_rel(diff, a) if diff is not None and a is not None else None,
    )


def _bootstrap_diffs(
    specs: Sequence[MetricSpec],
    data_a: _RunData,
    data_b: _RunData,
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, MetricDiff]:
    """Every per-request metric; the statistics of one column share one resample draw per run."""
    out: dict[str, MetricDiff] = {}
    by_column: dict[str, list[MetricSpec]] = {}
    for spec in specs:
        assert spec.column is not None
        by_column.setdefault(spec.column, []).append(spec)
    for column, group in by_column.items():
        va, vb = data_a.columns[column], data_b.columns[column]
        stats = [s.statistic for s in group]
        can_resample = va.size >= MIN_VALUES and vb.size >= MIN_VALUES
        reps_a = reps_b = None
        if can_resample:
            # One stream per (column, side), keyed by name: adding a metric never moves another's interval.
            key = zlib.crc32(column.encode())
            reps_a = bootstrap_replicates(va, stats, resamples, np.random.default_rng([seed, key, 0]))
            reps_b = bootstrap_replicates(vb, stats, resamples, np.random.default_rng([seed, key, 1]))
        for spec in group:
            a = _point(va, spec.statistic) if va.size else None
            b = _point(vb, spec.statistic) if vb.size else None
            common = {
                "key": spec.key,
                "label": spec.label,
                "unit": spec.unit,
                "better": spec.better,
                "a": a,
                "b": b,
                "n_a": int(va.size),
                "n_b": int(vb.size),
            }
            if a is None or b is None:
                out[spec.key] = MetricDiff(method=UNDEFINED, **common)
                continue
            diff = b - a
            rel = _rel(diff, a)
            if reps_a is None or reps_b is None:
                out[spec.key] = MetricDiff(method=TOO_FEW, diff=diff, rel_diff=rel, **common)
                continue
            ra, rb = reps_a[spec.statistic], reps_b[spec.statistic]
            ci = _interval(rb - ra, confidence)
            rel_ci = _interval((rb - ra) / ra, confidence) if rel is not None and np.all(ra > 0) else None
            out[spec.key] = MetricDiff(
                method=BOOTSTRAP,
                diff=diff,
                rel_diff=rel,
                ci=ci,
                rel_ci=rel_ci,
                significant=ci[0] > 0.0 or ci[1] < 0.0,  # per metric; compare_records may correct it
                p_value=bootstrap_p_value(rb - ra),
                **common,
            )
    return out


def _notes(a: _RunData, b: _RunData) -> list[str]:
    """What makes the two runs less than like for like; comparing them is still allowed."""
    sa, sb = a.side, b.side
    notes = []
    if sa.run_id == sb.run_id:
        notes.append("the same run on both sides: every difference is 0")
    if sa.endpoint != sb.endpoint:
        notes.append(f"different endpoints: {sa.endpoint} vs {sb.endpoint}")
    if sa.models != sb.models:
        notes.append(f"different models: {', '.join(sa.models) or '–'} vs {', '.join(sb.models) or '–'}")
    if sa.workload != sb.workload:
        notes.append(f"different workloads: {sa.workload} vs {sb.workload}")
    if sa.profile != sb.profile:
        notes.append(f"different load profiles (latency depends on load): {sa.profile} vs {sb.profile}")
    for name, side in (("A", sa), ("B", sb)):
        if side.status != "complete":
            state = "still running or killed" if side.status == "running" else side.status
            notes.append(f"run {name} ({side.run_id}) is not complete: {state}")
        if side.completed == 0:
            notes.append(f"run {name} has no completed request: its latency and speed metrics are undefined")
        elif side.completed < SMALL_SAMPLE:
            notes.append(f"run {name} has only {side.completed} completed requests: intervals are rough")
    qa, qb = a.columns["quality"].size, b.columns["quality"].size
    if bool(qa) != bool(qb):
        notes.append(f"quality: only run {'A' if qa else 'B'} is scored")
    elif qa and a.suites != b.suites:
        suites_a, suites_b = ", ".join(sorted(a.suites)), ", ".join(sorted(b.suites))
        notes.append(f"quality: different suites scored: {suites_a} vs {suites_b}")
    if not a.priced or not b.priced:
        which = " and ".join(n for n, d in (("A", a), ("B", b)) if not d.priced)
        notes.append(f"cost: run {which} has no price ({(sa if not a.priced else sb).price_source})")
    elif a.price_per_hour is not None or b.price_per_hour is not None:
        notes.append("cost: priced per hour on at least one side, so cost per request is one value per run")
    elif sa.price_source != sb.price_source:
        notes.append(f"cost: prices from different sources: {sa.price_source} vs {sb.price_source}")
    return notes


def compare_records(
    run_a: RunInfo,
    records_a: Sequence[RequestRecord],
    run_b: RunInfo,
    records_b: Sequence[RequestRecord],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    min_change: float = 0.0,
    seed: int = 0,
    correction: str = "holm",
) -> Comparison:
    """The comparison of two runs given their records (no store needed; see :func:`compare_runs`)."""
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; use one of {', '.join(CORRECTIONS)}")
    if resamples < MIN_RESAMPLES:
        raise ValueError(f"--resamples must be at least {MIN_RESAMPLES}, got {resamples}")
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"--confidence must be a fraction in [0.5, 1), e.g. 0.95; got {confidence:g}")
    if not (math.isfinite(min_change) and min_change >= 0):
        raise ValueError(f"--min-change must be 0 or more, got {min_change!r}")
    data_a, data_b = _run_data(run_a, records_a), _run_data(run_b, records_b)
    sampled = [s for s in METRICS if s.column is not None]
    if data_a.price_per_hour is not None or data_b.price_per_hour is not None:
        sampled = [s for s in sampled if s.key != "cost_per_request_usd"]
    diffs = _bootstrap_diffs(sampled, data_a, data_b, resamples=resamples, confidence=confidence, seed=seed)
    tested = [key for key, m in diffs.items() if m.method == BOOTSTRAP]
    if correction == "holm":
        rejected = holm_rejections([diffs[key].p_value or 1.0 for key in tested], 1.0 - confidence)
        for key, reject in zip(tested, rejected, strict=True):
            diffs[key] = replace(diffs[key], significant=reject)
    for key in tested:
        m = diffs[key]
        assert m.diff is not None
        flagged, direction = _verdict(m.better, m.diff, m.rel_diff, m.significant, min_change)
        diffs[key] = replace(m, flagged=flagged, direction=direction)
    for spec in METRICS:
        if spec.key not in diffs:
            diffs[spec.key] = _run_level_diff(spec, data_a.run_level[spec.key], data_b.run_level[spec.key])
    return Comparison(
        run_a=data_a.side,
        run_b=data_b.side,
        metrics=[diffs[s.key] for s in METRICS],
        notes=_notes(data_a, data_b),
        resamples=resamples,
        confidence=confidence,
        min_change=min_change,
        seed=seed,
        correction=correction,
    )


def compare_runs(
    store: Store,
    run_a: str,
    run_b: str,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    min_change: float = 0.0,
    seed: int = 0,
    correction: str = "holm",
) -> Comparison:
    """Compare two stored runs by id or unique prefix (UnknownRunError, with the store's message, if not)."""
    info_a = store.get_run(run_a)
    info_b = store.get_run(run_b)
    records_a = store.records(info_a.run_id)
    records_b = records_a if info_b.run_id == info_a.run_id else store.records(info_b.run_id)
    return compare_records(
        info_a,
        records_a,
        info_b,
        records_b,
        resamples=resamples,
        confidence=confidence,
        min_change=min_change,
        seed=seed,
        correction=correction,
    )
