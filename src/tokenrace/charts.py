"""Vega-Lite chart specs for the HTML report and its PNGs: pure functions from plain data to spec dicts.

One spec serves both outputs: the report embeds it for vega-embed in the browser, and ``vl_convert`` renders
the same dict to PNG without a browser, so the two can never disagree. Every builder returns None when it
has nothing to draw, and takes the report-wide endpoint -> colour map so an endpoint keeps its colour from
chart to chart. Data values are rounded to 4 significant digits: the eye cannot tell more, and 100,000
requests must not turn into megabytes of JSON.
"""

from __future__ import annotations

import bisect
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokenrace.leaderboard import Row

Spec = dict[str, Any]

VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"
# Okabe & Ito's colour-blind safe set (minus yellow, unreadable on white), then darker extras.
PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#000000",
    "#8C564B",
    "#7F7F7F",
    "#6A3D9A",
    "#B15928",
    "#1B9E77",
)
DOWN_COLOR = "#C62828"  # monitor probes: nothing completed
DEGRADED_COLOR = "#F57C00"  # some requests of the probe failed
CDF_MAX_POINTS = 400
WIDTH = 640  # a single chart on a laptop screen, with a legend beside it
HEIGHT = 340
PANEL_WIDTH = 300  # one panel of a two-panel chart
PANEL_HEIGHT = 240

# Shared look: larger type than Vega's defaults (charts are read on laptops and pasted into slides).
CONFIG: Spec = {
    "font": "sans-serif",
    "background": "white",
    "padding": 12,
    "title": {"fontSize": 16, "anchor": "start", "subtitleFontSize": 12, "subtitleColor": "#555", "offset": 10},
    "axis": {
        "labelFontSize": 12,
        "titleFontSize": 13,
        "titleFontWeight": "normal",
        "titleColor": "#333",
        "gridColor": "#ececec",
        "domainColor": "#999",
        "tickColor": "#999",
    },
    "header": {"labelFontSize": 13, "labelFontWeight": "bold", "titleFontSize": 13},
    "legend": {"labelFontSize": 12, "titleFontSize": 12, "labelLimit": 240, "symbolSize": 120},
    "view": {"stroke": None},
}


@dataclass(frozen=True, slots=True)
class SweepStep:
    """One run of a throughput sweep (``tokenrace bench --sweep``), from that run's summary."""

    endpoint: str
    sweep: str  # the sweep's id, shared by its runs
    step: str  # "max-throughput" or the index of the rate step
    run_id: str
    target_rps: float | None  # None for the closed-loop max-throughput step
    requests_per_s: float | None  # achieved completed requests per second of the window
    output_tps: float | None  # achieved output tokens per second of all streams together
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    e2e_p50_ms: float | None


@dataclass(frozen=True, slots=True)
class ContextBucket:
    """The rag suite's requests of one endpoint in one context-length bucket (``rag-4k-…`` -> ``4k``)."""

    endpoint: str
    bucket: str
    prompt_tokens_mean: float | None
    completed: int
    output_speed_p50: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


# --------------------------------------------------------------------------------------------------
# Helpers


def endpoint_colors(endpoints: Iterable[str]) -> dict[str, str]:
    """A fixed colour per endpoint, in sorted order, so every chart of one report agrees."""
    names = sorted(set(endpoints))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _round(value: float | None, digits: int = 4) -> float | None:
    """Round to ``digits`` significant digits (None and non-finite values become None)."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _color(colors: Mapping[str, str], present: Iterable[str], **legend: Any) -> Spec:
    """Colour by endpoint; the domain lists only the endpoints this chart shows, in report order."""
    shown = set(present)
    domain = [name for name in colors if name in shown]
    domain += sorted(shown - set(domain))
    palette = colors if colors else endpoint_colors(domain)
    return {
        "field": "endpoint",
        "type": "nominal",
        "title": "endpoint",
        "scale": {"domain": domain, "range": [palette.get(name, PALETTE[-1]) for name in domain]},
        "legend": {"orient": "right", "symbolOpacity": 1, **legend},
    }


def _base(title: str, subtitle: str | None = None) -> Spec:
    head: Spec = {"text": title}
    if subtitle:
        head["subtitle"] = subtitle
    return {"$schema": VEGA_LITE_SCHEMA, "title": head, "config": CONFIG}


def pareto_front(points: Sequence[tuple[float, float]], *, maximize_x: bool, maximize_y: bool) -> list[int]:
    """Indices of the points no other point dominates, ordered by x (the order the front line joins them).

    A point dominates another when it is at least as good on both axes and strictly better on one, so two
    identical points are both on the front.
    """
    sign_x = 1.0 if maximize_x else -1.0
    sign_y = 1.0 if maximize_y else -1.0
    scored = [(sign_x * x, sign_y * y) for x, y in points]
    front = [
        i
        for i, (x, y) in enumerate(scored)
        if not any(ox >= x and oy >= y and (ox > x or oy > y) for j, (ox, oy) in enumerate(scored) if j != i)
    ]
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def ticks_125(low: float, high: float, most: int = 7) -> list[float]:
    """1-2-5 steps (0.1, 0.2, 0.5, 1, 2, 5 ...) from ``low`` to ``high``, thinned to at most ``most``.

    Vega's own log ticks crowd ("7k8k") or leave a decade empty; these read like a ruler.
    """
    if high <= 0 or low <= 0 or low > high:
        return []
    ticks: list[float] = []
    exponent = math.floor(math.log10(low))
    while (start := 10.0**exponent) <= high * 1.0001:
        for mantissa in (1, 2, 5):
            value = float(f"{mantissa * start:.6g}")
            if low * 0.9999 <= value <= high * 1.0001:
                ticks.append(value)
        exponent += 1
    if len(ticks) > most:  # too many: powers of ten only, then every second, third... decade
        decades = [t for t in ticks if math.isclose(t, 10.0 ** round(math.log10(t)))]
        step = math.ceil(len(decades) / most)
        ticks = decades[::step]
    return ticks


def _log_scale_fits(values: Iterable[float], ratio: float) -> bool:
    """A log axis when the positive values span more than ``ratio`` (tails and far-apart endpoints)."""
    positive = [v for v in values if v is not None and v > 0]
    return bool(positive) and min(positive) > 0 and max(positive) / min(positive) > ratio


# --------------------------------------------------------------------------------------------------
# 1. output speed vs price


def speed_price_chart(rows: Sequence[Row], colors: Mapping[str, str] | None = None) -> Spec | None:
    """Output speed (p50) against blended price, one point per endpoint; the front of cheap-and-fast is joined.

    Free endpoints (price 0: local engines, free tiers) sit on the same axis: it is symlog, linear near 0
    and logarithmic beyond the cheapest paid price, so "free" is a real tick, not a point dropped by a log
    scale. Unpriced endpoints are left out (the caption says so): a missing price is not zero.
    """
    points = [r for r in rows if r.output_speed_p50 is not None and r.usd_per_1m_tokens is not None]
    if not points:
        return None
    colors = colors or endpoint_colors(r.endpoint for r in points)
    front = set(
        pareto_front(
            [(r.usd_per_1m_tokens or 0.0, r.output_speed_p50 or 0.0) for r in points], maximize_x=False, maximize_y=True
        )
    )
    values = []
    for i, r in enumerate(points):
        price = r.usd_per_1m_tokens or 0.0
        values.append(
            {
                "endpoint": r.endpoint,
                "model": r.model,
                "price": _round(price),
                "price_label": "free" if price == 0 else f"${price:,.4g}",
                "speed": _round(r.output_speed_p50),
                "ttft_p50": _round(r.ttft_p50_ms),
                "quality": _round(r.quality),
                "requests": r.completed,
                "front": i in front,
                "front_label": "on the speed–price front" if i in front else "dominated",
                "leaderboard_front": "yes" if r.pareto else "no",
            }
        )
    prices = [v["price"] for v in values]
    positive = [p for p in prices if p > 0]
    constant = min(positive) if positive else 1.0
    high = max(positive) if positive else 1.0
    x = {
        "field": "price",
        "type": "quantitative",
        "title": "blended price ($ per 1M tokens, symlog scale; 0 = free)",
        # a little room left of 0, so a free endpoint is not drawn on top of the y axis
        "scale": {"type": "symlog", "constant": constant, "domain": [-constant * 0.25, high * 1.6], "nice": False},
        "axis": {
            "values": [0.0, *ticks_125(10 ** math.floor(math.log10(constant)), high * 1.6)],
            "labelExpr": "datum.value == 0 ? 'free' : '$' + format(datum.value, '~g')",
        },
    }
    y = {
        "field": "speed",
        "type": "quantitative",
        "title": "output speed p50 (tok/s per request)",
        "scale": {"zero": True, "nice": True},
    }
    tooltip = [
        {"field": "endpoint", "type": "nominal"},
        {"field": "model", "type": "nominal"},
        {"field": "price_label", "type": "nominal", "title": "$ per 1M tokens (blended)"},
        {"field": "speed", "type": "quantitative", "title": "output speed p50 (tok/s)", "format": ",.1f"},
        {"field": "ttft_p50", "type": "quantitative", "title": "TTFT p50 (ms)", "format": ",.0f"},
        {"field": "quality", "type": "quantitative", "title": "quality", "format": ".3f"},
        {"field": "requests", "type": "quantitative", "title": "completed requests"},
        {"field": "front_label", "type": "nominal", "title": "speed–price front"},
        {"field": "leaderboard_front", "type": "nominal", "title": "on leaderboard ★ front"},
    ]
    spec = _base(
        "Output speed vs price",
        "up and to the left is better; the line joins endpoints no other is both cheaper and faster than",
    )
    spec.update(
        width=WIDTH,
        height=HEIGHT,
        data={"values": values},
        layer=[
            _front_line(x, y, "price"),
            {
                "mark": {"type": "point", "filled": True, "size": 170, "opacity": 0.95, "stroke": "#222"},
                "encoding": {
                    "x": x,
                    "y": y,
                    "color": _color(colors, (v["endpoint"] for v in values)),
                    "shape": {
                        "field": "front_label",
                        "type": "nominal",
                        "title": None,
                        "scale": {
                            "domain": ["on the speed–price front", "dominated"],
                            "range": ["diamond", "circle"],
                        },
                        "legend": {"orient": "bottom", "direction": "horizontal"},
                    },
                    "strokeWidth": {"condition": {"test": "datum.front", "value": 2}, "value": 0},
                    "tooltip": tooltip,
                },
            },
            _endpoint_labels(x, y),
        ],
    )
    return spec


def _front_line(x: dict[str, Any], y: dict[str, Any], order: str) -> Spec:
    """The dashed line through the points on the front (``datum.front``), drawn in ``order``."""
    return {
        "transform": [{"filter": "datum.front"}],
        "mark": {"type": "line", "color": "#444", "strokeDash": [6, 4], "strokeWidth": 1.5},
        "encoding": {"x": x, "y": y, "order": {"field": order, "type": "quantitative"}},
    }


def _endpoint_labels(x: dict[str, Any], y: dict[str, Any]) -> Spec:
    """Each point's endpoint name beside it."""
    return {
        "mark": {"type": "text", "align": "left", "dx": 10, "dy": -8, "fontSize": 12, "limit": 180},
        "encoding": {"x": x, "y": y, "text": {"field": "endpoint"}, "color": {"value": "#333"}},
    }


# --------------------------------------------------------------------------------------------------
# 2. quality vs output speed


def quality_speed_chart(rows: Sequence[Row], colors: Mapping[str, str] | None = None) -> Spec | None:
    """Mean quality score against output speed, with the score's 95% interval as an error bar."""
    points = [r for r in rows if r.quality is not None and r.output_speed_p50 is not None]
    if not points:
        return None
    colors = colors or endpoint_colors(r.endpoint for r in points)
    front = set(
        pareto_front([(r.output_speed_p50 or 0.0, r.quality or 0.0) for r in points], maximize_x=True, maximize_y=True)
    )
    values = []
    for i, r in enumerate(points):
        low, high = r.quality_ci95 if r.quality_ci95 else (None, None)
        values.append(
            {
                "endpoint": r.endpoint,
                "model": r.model,
                "speed": _round(r.output_speed_p50),
                "quality": _round(r.quality),
                "ci_low": _round(low),
                "ci_high": _round(high),
                "n": r.quality_n,
                "front": i in front,
            }
        )
    x = {
        "field": "speed",
        "type": "quantitative",
        "title": "output speed p50 (tok/s per request)",
        "scale": {"zero": False, "padding": 28},
    }
    y = {
        "field": "quality",
        "type": "quantitative",
        "title": "quality (mean score; bar = 95% CI)",
        "scale": {"domain": [0, 1]},
        "axis": {"format": ".0%"},
    }
    tooltip = [
        {"field": "endpoint", "type": "nominal"},
        {"field": "model", "type": "nominal"},
        {"field": "quality", "type": "quantitative", "format": ".1%"},
        {"field": "ci_low", "type": "quantitative", "title": "95% CI low", "format": ".1%"},
        {"field": "ci_high", "type": "quantitative", "title": "95% CI high", "format": ".1%"},
        {"field": "n", "type": "quantitative", "title": "scored requests"},
        {"field": "speed", "type": "quantitative", "title": "output speed p50 (tok/s)", "format": ",.1f"},
    ]
    color = _color(colors, (v["endpoint"] for v in values))
    spec = _base("Quality vs output speed", "up and to the right is better; the line joins the speed–quality front")
    spec.update(
        width=WIDTH,
        height=HEIGHT,
        data={"values": values},
        layer=[
            _front_line(x, y, "speed"),
            {
                "transform": [{"filter": "datum.ci_low != null"}],
                "mark": {"type": "rule", "strokeWidth": 2.5, "opacity": 0.6},
                "encoding": {"x": x, "y": {**y, "field": "ci_low"}, "y2": {"field": "ci_high"}, "color": color},
            },
            {
                "mark": {"type": "point", "filled": True, "size": 150, "opacity": 0.95},
                "encoding": {"x": x, "y": y, "color": color, "tooltip": tooltip},
            },
            _endpoint_labels(x, y),
        ],
    )
    return spec


# --------------------------------------------------------------------------------------------------
# 3, 4. latency CDFs


def cdf_points(values: Iterable[float], max_points: int = CDF_MAX_POINTS) -> list[tuple[float, float]]:
    """The empirical CDF as (value, share of values <= it), at most ``max_points`` points.

    Keeps the exact minimum and maximum (share 1/n and 1); points in between are evenly spaced ranks of
    the sorted values, so the curve stays monotone and a 100,000-request run costs no more than a small one.
    """
    arr = np.sort(np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64))
    n = int(arr.size)
    if n == 0:
        return []
    if n <= max_points:
        ranks = np.arange(n)
    else:
        ranks = np.unique(np.round(np.linspace(0, n - 1, max(max_points, 2))).astype(np.int64))
    return [(float(arr[i]), (int(i) + 1) / n) for i in ranks]


_CDF_METRICS = {
    "ttft": ("Time to first token (TTFT), CDF", "TTFT (ms)"),
    "e2e": ("End-to-end latency (E2E), CDF", "E2E latency (ms)"),
}


def latency_cdf_chart(
    values_by_endpoint: Mapping[str, Sequence[float]],
    metric: str,
    colors: Mapping[str, str] | None = None,
    max_points: int = CDF_MAX_POINTS,
) -> Spec | None:
    """One CDF line per endpoint of a per-request latency (``metric`` "ttft" or "e2e"), in ms.

    The x axis turns logarithmic when the values span more than 20x, so a slow tail and a fast endpoint
    both stay readable.
    """
    title, axis_title = _CDF_METRICS[metric]
    values: list[Spec] = []
    counts: dict[str, int] = {}
    for endpoint, samples in values_by_endpoint.items():
        points = cdf_points(samples, max_points)
        counts[endpoint] = sum(1 for v in samples if v is not None and math.isfinite(v))
        values.extend({"endpoint": endpoint, "ms": _round(v), "share": _round(p, 5)} for v, p in points)
    if not values:
        return None
    colors = colors or endpoint_colors(values_by_endpoint)
    log = _log_scale_fits((v["ms"] for v in values), 20.0) and all(v["ms"] > 0 for v in values)
    x: Spec = {
        "field": "ms",
        "type": "quantitative",
        "title": axis_title + (", log scale" if log else ""),
        "scale": {"type": "log", "nice": False} if log else {"zero": True},
        "axis": {"format": "~s" if log else ",~r"},
    }
    y = {
        "field": "share",
        "type": "quantitative",
        "title": "share of requests ≤ x",
        "scale": {"domain": [0, 1]},
        "axis": {"format": ".0%", "values": [0, 0.25, 0.5, 0.75, 1]},
    }
    color = _color(colors, counts, symbolType="stroke", symbolStrokeWidth=3)
    n_text = ", ".join(f"{name}: {count:,}" for name, count in counts.items())
    spec = _base(title, f"completed requests per endpoint: {n_text}" if len(n_text) < 110 else None)
    spec.update(
        width=WIDTH,
        height=HEIGHT,
        layer=[
            {
                "data": {"values": [{"share": 0.5, "label": "p50"}, {"share": 0.95, "label": "p95"}]},
                "layer": [
                    {
                        "mark": {"type": "rule", "color": "#aaa", "strokeDash": [3, 3]},
                        "encoding": {"y": {"field": "share", "type": "quantitative"}},
                    },
                    {
                        "mark": {"type": "text", "align": "right", "dx": -4, "dy": -7, "x": WIDTH, "color": "#777"},
                        "encoding": {"y": {"field": "share", "type": "quantitative"}, "text": {"field": "label"}},
                    },
                ],
            },
            {
                "data": {"values": values},
                "mark": {"type": "line", "interpolate": "step-after", "strokeWidth": 2},
                "encoding": {"x": x, "y": y, "color": color},
            },
            {
                # invisible points carry the tooltips (a line's path has one tooltip for the whole curve)
                "data": {"values": values},
                "mark": {"type": "point", "opacity": 0, "size": 60},
                "encoding": {
                    "x": x,
                    "y": y,
                    "color": color,
                    "tooltip": [
                        {"field": "endpoint", "type": "nominal"},
                        {"field": "ms", "type": "quantitative", "title": axis_title, "format": ",.1f"},
                        {"field": "share", "type": "quantitative", "title": "share ≤ value", "format": ".1%"},
                    ],
                },
            },
        ],
        resolve={"scale": {"y": "shared"}},
    )
    return spec


# --------------------------------------------------------------------------------------------------
# 5. throughput vs latency (sweeps)


def sweep_chart(steps: Sequence[SweepStep], colors: Mapping[str, str] | None = None) -> Spec | None:
    """Latency against achieved output throughput, one line per endpoint and sweep, one point per step.

    TTFT (p50 solid, p95 dashed) and E2E p50 have their own panels because they differ by orders of
    magnitude. Where the line turns upward is the load the endpoint can take.
    """
    usable = [s for s in steps if s.output_tps is not None]
    if not usable:
        return None
    colors = colors or endpoint_colors(s.endpoint for s in usable)
    sweeps_per_endpoint: dict[str, set[str]] = {}
    for s in usable:
        sweeps_per_endpoint.setdefault(s.endpoint, set()).add(s.sweep)
    values: list[Spec] = []
    for s in usable:
        series = s.endpoint if len(sweeps_per_endpoint[s.endpoint]) == 1 else f"{s.endpoint} · sweep {s.sweep}"
        common = {
            "endpoint": s.endpoint,
            "series": series,
            "sweep": s.sweep,
            "step": s.step,
            "run_id": s.run_id,
            "target": "max throughput (closed loop)" if s.target_rps is None else f"{s.target_rps:.3g} req/s",
            "output_tps": _round(s.output_tps),
            "rps": _round(s.requests_per_s),
        }
        for panel, metric, value in (
            ("TTFT (ms)", "p50", s.ttft_p50_ms),
            ("TTFT (ms)", "p95", s.ttft_p95_ms),
            ("E2E latency (ms)", "p50", s.e2e_p50_ms),
        ):
            if value is not None:
                values.append({**common, "panel": panel, "metric": metric, "ms": _round(value)})
    if not values:
        return None
    spec = _base(
        "Throughput vs latency (load sweep)",
        "each point is one run of the sweep; latency rises sharply where the endpoint saturates",
    )
    return _side_by_side(
        spec,
        values,
        ["TTFT (ms)", "E2E latency (ms)"],
        {
            "encoding": {
                "x": {
                    "field": "output_tps",
                    "type": "quantitative",
                    "title": "achieved output throughput (tok/s, all streams)",
                },
                "y": {"field": "ms", "type": "quantitative", "title": None},
                "color": _color(colors, (v["endpoint"] for v in values)),
            },
            "layer": [
                {
                    # a layer of its own, so the percentile legend shows dashes rather than dots
                    "mark": {"type": "line", "strokeWidth": 2},
                    "encoding": {
                        "strokeDash": {
                            "field": "metric",
                            "type": "nominal",
                            "title": "percentile",
                            "scale": {"domain": ["p50", "p95"], "range": [[1, 0], [6, 4]]},
                            "legend": {
                                "symbolType": "stroke",
                                "symbolStrokeColor": "#444",
                                "symbolStrokeWidth": 2,
                                "symbolSize": 400,
                            },
                        },
                        "detail": {"field": "series", "type": "nominal"},
                        "order": {"field": "output_tps", "type": "quantitative"},
                    },
                },
                {
                    "mark": {"type": "point", "filled": True, "size": 60, "opacity": 1},
                    "encoding": {
                        "tooltip": [
                            {"field": "series", "type": "nominal", "title": "endpoint / sweep"},
                            {"field": "target", "type": "nominal", "title": "offered load"},
                            {"field": "rps", "type": "quantitative", "title": "achieved req/s", "format": ",.2f"},
                            {"field": "output_tps", "type": "quantitative", "title": "output tok/s", "format": ",.1f"},
                            {"field": "panel", "type": "nominal", "title": "metric"},
                            {"field": "metric", "type": "nominal", "title": "percentile"},
                            {"field": "ms", "type": "quantitative", "title": "latency (ms)", "format": ",.0f"},
                            {"field": "run_id", "type": "nominal", "title": "run"},
                        ]
                    },
                },
            ],
        },
    )


# --------------------------------------------------------------------------------------------------
# 6. speed and TTFT vs context length (rag)


def context_chart(buckets: Sequence[ContextBucket], colors: Mapping[str, str] | None = None) -> Spec | None:
    """Output speed p50 and TTFT p50 per rag context bucket, at the bucket's mean prompt length.

    Long prompts are where prefill dominates TTFT and attention slows decoding, which a short-prompt
    benchmark never shows.
    """
    values: list[Spec] = []
    for b in buckets:
        if b.prompt_tokens_mean is None:
            continue
        common = {
            "endpoint": b.endpoint,
            "bucket": b.bucket,
            "prompt_tokens": _round(b.prompt_tokens_mean),
            "completed": b.completed,
        }
        for panel, value, unit in (
            ("output speed p50 (tok/s)", b.output_speed_p50, "tok/s"),
            ("TTFT p50 (ms)", b.ttft_p50_ms, "ms"),
        ):
            if value is not None:
                values.append({**common, "panel": panel, "value": _round(value), "unit": unit})
    if not values:
        return None
    colors = colors or endpoint_colors(v["endpoint"] for v in values)
    tokens = [v["prompt_tokens"] for v in values]
    log = _log_scale_fits(tokens, 4.0)
    spec = _base(
        "Speed and TTFT vs context length (rag suite)",
        "one point per context bucket; x is the mean prompt length of the bucket's completed requests",
    )
    return _side_by_side(
        spec,
        values,
        ["output speed p50 (tok/s)", "TTFT p50 (ms)"],
        {
            "mark": {"type": "line", "point": {"filled": True, "size": 60}, "strokeWidth": 2},
            "encoding": {
                "x": {
                    "field": "prompt_tokens",
                    "type": "quantitative",
                    "title": "prompt tokens (bucket mean" + (", log scale)" if log else ")"),
                    "scale": {"type": "log", "nice": False, "padding": 12} if log else {"zero": True},
                    "axis": {"format": "~s", **({"values": ticks_125(min(tokens), max(tokens))} if log else {})},
                },
                "y": {"field": "value", "type": "quantitative", "title": None, "scale": {"zero": True}},
                "color": _color(colors, (v["endpoint"] for v in values)),
                "order": {"field": "prompt_tokens", "type": "quantitative"},
                "tooltip": [
                    {"field": "endpoint", "type": "nominal"},
                    {"field": "bucket", "type": "nominal", "title": "context bucket"},
                    {"field": "prompt_tokens", "type": "quantitative", "title": "prompt tokens (mean)", "format": ","},
                    {"field": "panel", "type": "nominal", "title": "metric"},
                    {"field": "value", "type": "quantitative", "format": ",.1f"},
                    {"field": "unit", "type": "nominal"},
                    {"field": "completed", "type": "quantitative", "title": "completed requests"},
                ],
            },
        },
    )


def _side_by_side(spec: Spec, values: list[Spec], order: list[str], panel: Spec) -> Spec:
    """``values`` split by their ``panel`` field into panels left to right in ``order``, each with its own
    y scale (milliseconds beside tokens per second); ``panel`` is the mark and encoding every panel shares."""
    spec.update(
        data={"values": values},
        facet={"column": {"field": "panel", "type": "nominal", "title": None, "sort": order}},
        spec={"width": PANEL_WIDTH, "height": PANEL_HEIGHT, **panel},
        resolve={"scale": {"y": "independent"}},
    )
    return spec


# --------------------------------------------------------------------------------------------------
# 7. monitored time series


def point_attr(point: Any, name: str, default: Any = None) -> Any:
    """Monitor points may be dataclasses or dicts (the monitor module evolves on its own)."""
    if isinstance(point, Mapping):
        return point.get(name, default)
    return getattr(point, name, default)


def probe_state(point: Any) -> str:
    """``ok``, ``degraded`` (some requests failed), ``down`` (nothing completed) or ``incomplete``.

    The monitor's own ``outcome`` when the point has one; otherwise read from status, errors and values.
    """
    outcome = point_attr(point, "outcome")
    if outcome in ("ok", "degraded", "down", "incomplete"):
        return str(outcome)
    status = str(point_attr(point, "status", "") or "").lower()
    if status in ("running", "interrupted", "incomplete"):
        return "incomplete"
    nothing = point_attr(point, "ttft_p50_ms") is None and point_attr(point, "output_speed_p50") is None
    if status in ("failed", "error", "down") or nothing:
        return "down"
    return "degraded" if _error_count(point) else "ok"


def _error_count(point: Any) -> int:
    errors = point_attr(point, "errors", 0)
    return int(sum(errors.values()) if isinstance(errors, Mapping) else (errors or 0))


def rolling_median(times: Sequence[float], values: Sequence[float | None], window_s: float) -> list[float | None]:
    """For each time, the median of the values in the trailing window (t - window_s, t]; None values skipped.

    ``times`` must be ascending. A trailing window (not centred) shows what a live monitor knew at the time.
    """
    out: list[float | None] = []
    for i, t in enumerate(times):
        start = bisect.bisect_right(times, t - window_s, 0, i + 1)
        window = [v for v in values[start : i + 1] if v is not None]
        out.append(statistics.median(window) if window else None)
    return out


def monitor_chart(
    points: Sequence[Any], colors: Mapping[str, str] | None = None, rolling_window_s: float = 3600.0
) -> Spec | None:
    """TTFT p50 and output speed p50 of every monitor probe over time, with a trailing rolling median per
    endpoint; probes that failed are ticks at the bottom of both panels (times in UTC). Incomplete probes
    (stopped by the user, still running) say nothing about the endpoint and are left out, as the monitor does."""
    by_endpoint: dict[str, list[Any]] = {}
    for p in points:
        if point_attr(p, "started_at") is not None and probe_state(p) != "incomplete":
            by_endpoint.setdefault(str(point_attr(p, "endpoint", "")), []).append(p)
    if not by_endpoint:
        return None
    colors = colors or endpoint_colors(by_endpoint)
    values: list[Spec] = []
    panels = (("TTFT p50 (ms)", "ttft_p50_ms"), ("output speed p50 (tok/s)", "output_speed_p50"))
    for endpoint, series in by_endpoint.items():
        series.sort(key=lambda p: float(point_attr(p, "started_at")))
        times = [float(point_attr(p, "started_at")) for p in series]
        states = [probe_state(p) for p in series]
        for panel, field in panels:
            raw = [point_attr(p, field) for p in series]
            measured = [
                None if state == "down" or v is None else float(v) for v, state in zip(raw, states, strict=True)
            ]
            medians = rolling_median(times, measured, rolling_window_s)
            for t, v, m, state, p in zip(times, measured, medians, states, series, strict=True):
                values.append(
                    {
                        "endpoint": endpoint,
                        "time": round(t * 1000.0),
                        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)),
                        "panel": panel,
                        "value": _round(v),
                        "median": _round(m),
                        "state": state,
                        "failed": state in ("down", "degraded"),
                        "errors": _error_count(p),
                        "detail": str(point_attr(p, "error", "") or ""),
                    }
                )
    times_ms = [v["time"] for v in values]
    short = max(times_ms) - min(times_ms) <= 36 * 3600 * 1000
    x = {
        "field": "time",
        "type": "temporal",
        "title": "probe start (UTC)",
        "scale": {"type": "utc"},
        "axis": {"format": "%H:%M" if short else "%b %d %H:%M", "labelOverlap": True},
    }
    color = _color(colors, by_endpoint)
    window_label = f"{rolling_window_s / 3600:g} h" if rolling_window_s >= 3600 else f"{rolling_window_s / 60:g} min"
    tooltip = [
        {"field": "endpoint", "type": "nominal"},
        {"field": "time_utc", "type": "nominal", "title": "probe start"},
        {"field": "panel", "type": "nominal", "title": "metric"},
        {"field": "value", "type": "quantitative", "format": ",.1f"},
        {"field": "median", "type": "quantitative", "title": f"rolling median ({window_label})", "format": ",.1f"},
        {"field": "state", "type": "nominal", "title": "probe"},
        {"field": "errors", "type": "quantitative", "title": "failed requests"},
        {"field": "detail", "type": "nominal", "title": "error"},
    ]
    spec = _base(
        "Monitored endpoints over time",
        f"dots: one probe each; line: trailing {window_label} rolling median; "
        "ticks: probes that were down (red) or degraded (orange: some requests failed)",
    )
    y = {"field": "value", "type": "quantitative", "title": None, "scale": {"zero": False}}
    spec.update(
        data={"values": values},
        facet={
            "row": {
                "field": "panel",
                "type": "nominal",
                "title": None,
                "sort": [panel for panel, _ in panels],
                "header": {"labelAngle": 0, "labelAlign": "left", "labelAnchor": "start", "labelOrient": "top"},
            }
        },
        spec={
            "width": WIDTH,
            "height": 170,
            "layer": [
                {
                    "transform": [{"filter": "datum.value != null"}],
                    "mark": {"type": "point", "filled": True, "size": 28, "opacity": 0.45},
                    "encoding": {"x": x, "y": y, "color": color, "tooltip": tooltip},
                },
                {
                    "transform": [{"filter": "datum.median != null"}],
                    "mark": {"type": "line", "strokeWidth": 2.2},
                    "encoding": {"x": x, "y": {**y, "field": "median"}, "color": color},
                },
                {
                    "transform": [{"filter": "datum.failed"}],
                    "mark": {"type": "tick", "thickness": 2, "size": 14, "orient": "vertical"},
                    "encoding": {
                        "x": x,
                        "y": {"value": 170},
                        "color": {
                            "condition": {"test": "datum.state == 'down'", "value": DOWN_COLOR},
                            "value": DEGRADED_COLOR,
                        },
                        "tooltip": tooltip,
                    },
                },
            ],
        },
        resolve={"scale": {"y": "independent"}},
    )
    return spec


# --------------------------------------------------------------------------------------------------
# Routing: quality vs strong-model share (`tokenrace router eval --png`)


def routing_colors(names: Iterable[str]) -> dict[str, str]:
    """A colour per router in the order given (routers, then baselines), shared by the chart and its table."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def routing_curve_chart(curves: dict[str, tuple[list[float], list[float]]]) -> Spec | None:
    """PGR against the share of calls sent to the strong model, one line per router or baseline.

    ``curves`` maps a name to (share, pgr) points. The higher a line at a given share, the more of the
    weak→strong quality gap that router recovers for the same number of strong calls; the random
    baseline is the diagonal, so the area between a router and it is what the router is worth.
    """
    values: list[Spec] = []
    for name, (share, pgr) in curves.items():
        step = max(1, len(share) // CDF_MAX_POINTS)  # thin long curves, keep the last point
        keep = list(range(0, len(share), step))
        if keep and keep[-1] != len(share) - 1:
            keep.append(len(share) - 1)
        values.extend({"router": name, "share": _round(share[i], 5), "pgr": _round(pgr[i], 5)} for i in keep)
    if not values:
        return None
    names = list(curves)
    colors = routing_colors(names)
    x = {
        "field": "share",
        "type": "quantitative",
        "title": "share of calls sent to the strong model",
        "scale": {"domain": [0, 1]},
        "axis": {"format": ".0%"},
    }
    y = {
        "field": "pgr",
        "type": "quantitative",
        "title": "performance gap recovered (PGR)",
        "axis": {"format": ".0%"},
    }
    color = {
        "field": "router",
        "type": "nominal",
        "title": "router",
        "scale": {"domain": names, "range": [colors[n] for n in names]},
        "legend": {"orient": "right", "symbolType": "stroke", "symbolStrokeWidth": 3},
    }
    spec = _base("Quality vs strong-model share", "held-out subjects; higher and further left is better")
    tooltip = [
        {"field": "router", "type": "nominal"},
        {"field": "share", "type": "quantitative", "format": ".1%"},
        {"field": "pgr", "type": "quantitative", "title": "PGR", "format": ".1%"},
    ]
    # always-weak and always-strong are single points (0, 0) and (1, 1): drawn as dots, not lines
    single = [name for name, (share, _) in curves.items() if len(share) == 1]
    is_single = {"field": "router", "oneOf": single}
    spec.update(
        width=WIDTH,
        height=HEIGHT,
        data={"values": values},
        layer=[
            {
                "transform": [{"filter": {"not": is_single}}],
                "mark": {"type": "line", "strokeWidth": 2},
                "encoding": {"x": x, "y": y, "color": color, "tooltip": tooltip},
            },
            {
                "transform": [{"filter": is_single}],
                "mark": {"type": "point", "filled": True, "size": 120},
                "encoding": {"x": x, "y": y, "color": color, "tooltip": tooltip},
            },
        ],
    )
    return spec
