""" "The fastest endpoint *for you*": rank endpoints on a traffic mix under quality, cost and latency limits.

A public leaderboard ranks by one generic prompt; a team's traffic is a mix (half coding, a third chat,
some long-context RAG). Each endpoint's per-suite leaderboard rows are weighted by the mix, so a model
that is fast on short chat but slow on 16k-token prompts is ranked for the traffic it would really get.
Nothing is guessed: an endpoint without data for a suite of the mix is excluded and the reason says which
benchmark to run. Every figure is defined in ``docs/metrics.md`` ("Recommendation").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from tokenrace.leaderboard import OVERALL, Leaderboard, Row

RANK_BY: dict[str, tuple[str, bool]] = {  # --by name -> (Candidate attribute, higher is better)
    "e2e": ("e2e_ms", False),
    "ttft": ("ttft_ms", False),
    "speed": ("output_speed", True),
}


class MixError(ValueError):
    """A mix that cannot be parsed or names an unknown suite."""


def parse_mix(text: str, valid: Iterable[str]) -> dict[str, float]:
    """``"coding=0.5,chat=0.3,rag=0.2"`` -> weights normalised to sum 1 (``chat`` alone means weight 1).

    Weights are relative: ``coding=5,chat=3`` is the same mix as ``coding=0.625,chat=0.375``.
    """
    valid_names = sorted(set(valid))
    weights: dict[str, float] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = (part.strip() for part in item.partition("="))
        if name not in valid_names:
            raise MixError(f"unknown suite {name!r} in --mix; valid suites: {', '.join(valid_names)}")
        if name in weights:
            raise MixError(f"suite {name!r} appears twice in --mix")
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise MixError(f"bad weight {value!r} for {name} in --mix: use a number, e.g. {name}=0.3") from None
        if not weight >= 0 or weight == float("inf"):
            raise MixError(f"weight of {name} must be a finite number >= 0, got {value!r}")
        weights[name] = weight
    total = sum(weights.values())
    if not weights or total <= 0:
        raise MixError("empty --mix: give suites with weights, e.g. coding=0.5,chat=0.3,rag=0.2")
    return {name: w / total for name, w in weights.items() if w > 0}


@dataclass(slots=True)
class Constraints:
    min_quality: float | None = None  # mix-weighted mean score
    max_cost_per_1m: float | None = None  # mix-blended $ per 1M tokens
    max_p95_ttft_ms: float | None = None  # every suite of the mix


@dataclass(slots=True)
class Candidate:
    """One endpoint's figures on the mix; ``missing`` and ``violations`` say why it is out."""

    endpoint: str
    e2e_ms: float | None = None  # Σ w · E2E p50: how long a call of this mix takes, typically
    ttft_ms: float | None = None  # Σ w · TTFT p50
    output_speed: float | None = None  # Σ w · output speed p50
    worst_p95_ttft_ms: float | None = None  # max over the mix's suites of TTFT p95
    worst_p95_ttft_suite: str | None = None
    quality: float | None = None  # Σ w · quality; None when a suite of the mix is unscored
    unscored: list[str] = field(default_factory=list)
    usd_per_1m_tokens: float | None = None  # Σ w · $/request  /  Σ w · tokens/request  · 10⁶
    usd_per_1k_requests: float | None = None  # Σ w · $ per 1,000 requests of the suite
    missing: list[str] = field(default_factory=list)  # suites of the mix with no data
    violations: list[str] = field(default_factory=list)
    shortfall: float = 0.0  # Σ relative distance to the limits it misses (ranks the closest candidates)

    @property
    def qualifies(self) -> bool:
        return not self.missing and not self.violations

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Recommendation:
    mix: dict[str, float]
    constraints: Constraints
    by: str
    ranked: list[Candidate]  # qualifying endpoints, best first
    excluded: list[Candidate]  # with data but outside a limit, closest first
    incomplete: list[Candidate]  # missing data for a suite of the mix
    suites_without_data: list[str]  # suites of the mix no endpoint has been measured on

    @property
    def best(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "mix": self.mix,
            "constraints": asdict(self.constraints),
            "by": self.by,
            "best": self.best.endpoint if self.best else None,
            "ranked": [c.as_dict() for c in self.ranked],
            "excluded": [c.as_dict() for c in self.excluded],
            "incomplete": [c.as_dict() for c in self.incomplete],
            "suites_without_data": self.suites_without_data,
        }


def recommend(
    board: Leaderboard, mix: Mapping[str, float], constraints: Constraints | None = None, *, by: str = "e2e"
) -> Recommendation:
    """Rank every endpoint of ``board`` on ``mix`` (weights summing to 1), best first, under ``constraints``."""
    if by not in RANK_BY:
        raise ValueError(f"unknown ranking {by!r}; valid: {', '.join(RANK_BY)}")
    constraints = constraints or Constraints()
    rows: dict[str, dict[str, Row]] = {}
    for row in board.rows:
        if row.suite != OVERALL:
            rows.setdefault(row.endpoint, {})[row.suite] = row
    endpoints = sorted({r.endpoint for r in board.rows})
    candidates = [_candidate(endpoint, rows.get(endpoint, {}), mix, constraints) for endpoint in endpoints]
    attribute, higher_better = RANK_BY[by]

    def rank_key(c: Candidate) -> tuple[float, float, str]:
        value = getattr(c, attribute)
        primary = -value if higher_better else value
        return (primary, c.ttft_ms if c.ttft_ms is not None else float("inf"), c.endpoint)

    ranked = sorted((c for c in candidates if c.qualifies and getattr(c, attribute) is not None), key=rank_key)
    excluded = sorted(
        (c for c in candidates if not c.missing and c.violations), key=lambda c: (c.shortfall, c.endpoint)
    )
    incomplete = [c for c in candidates if c.missing]
    measured = {suite for per_endpoint in rows.values() for suite in per_endpoint}
    return Recommendation(
        mix=dict(mix),
        constraints=constraints,
        by=by,
        ranked=ranked,
        excluded=excluded,
        incomplete=incomplete,
        suites_without_data=[s for s in mix if s not in measured],
    )


def _candidate(endpoint: str, rows: dict[str, Row], mix: Mapping[str, float], limits: Constraints) -> Candidate:
    c = Candidate(endpoint=endpoint)
    c.missing = [s for s in mix if s not in rows or rows[s].completed == 0]
    if c.missing:
        return c
    chosen = [(w, rows[s]) for s, w in mix.items()]
    c.e2e_ms = _weighted(chosen, "e2e_p50_ms")
    c.ttft_ms = _weighted(chosen, "ttft_p50_ms")
    c.output_speed = _weighted(chosen, "output_speed_p50")
    p95 = [(r.ttft_p95_ms, s) for s, r in rows.items() if s in mix and r.ttft_p95_ms is not None]
    if p95:
        c.worst_p95_ttft_ms, c.worst_p95_ttft_suite = max(p95)
    c.unscored = [s for s in mix if rows[s].quality is None]
    if not c.unscored:
        c.quality = _weighted(chosen, "quality")
    per_request = _weighted(chosen, "usd_per_1k_requests")
    tokens = _weighted_sum(chosen, lambda r: (r.prompt_tokens_mean or 0.0) + (r.output_tokens_mean or 0.0))
    c.usd_per_1k_requests = per_request
    if per_request is not None and tokens:
        c.usd_per_1m_tokens = per_request / 1000.0 / tokens * 1e6

    if limits.min_quality is not None:
        if c.quality is None:
            c.violations.append(f"quality unknown: {', '.join(c.unscored)} not scored")
            c.shortfall += 1.0
        elif c.quality < limits.min_quality:
            c.violations.append(f"quality {c.quality:.2f} < {limits.min_quality:g}")
            c.shortfall += (limits.min_quality - c.quality) / max(limits.min_quality, 1e-9)
    if limits.max_cost_per_1m is not None:
        if c.usd_per_1m_tokens is None:
            c.violations.append("price unknown: set price in tokenrace.yaml")
            c.shortfall += 1.0
        elif c.usd_per_1m_tokens > limits.max_cost_per_1m:
            c.violations.append(f"${c.usd_per_1m_tokens:.3f} per 1M tokens > ${limits.max_cost_per_1m:g}")
            c.shortfall += (c.usd_per_1m_tokens - limits.max_cost_per_1m) / max(limits.max_cost_per_1m, 1e-9)
    if limits.max_p95_ttft_ms is not None:
        if c.worst_p95_ttft_ms is None:
            c.violations.append("TTFT p95 unknown")
            c.shortfall += 1.0
        elif c.worst_p95_ttft_ms > limits.max_p95_ttft_ms:
            c.violations.append(
                f"TTFT p95 {c.worst_p95_ttft_ms:,.0f} ms on {c.worst_p95_ttft_suite} > {limits.max_p95_ttft_ms:g} ms"
            )
            c.shortfall += (c.worst_p95_ttft_ms - limits.max_p95_ttft_ms) / limits.max_p95_ttft_ms
    return c


def _weighted(chosen: list[tuple[float, Row]], attribute: str) -> float | None:
    """Σ w · row.attribute, None when any suite of the mix lacks the value (no partial sums)."""
    values = [(w, getattr(r, attribute)) for w, r in chosen]
    if any(v is None for _, v in values):
        return None
    return sum(w * v for w, v in values)


def _weighted_sum(chosen: list[tuple[float, Row]], value: Any) -> float:
    return sum(w * value(r) for w, r in chosen)
