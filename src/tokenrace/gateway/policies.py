"""The router: which endpoints a call may go to, in which order, and a one-line reason why.

:meth:`Router.plan` is pure and synchronous (no I/O, no awaits): it resolves the client's model name to a
route, orders the route's candidates by the route's policy, applies the client's overrides, and leaves out
endpoints whose circuit is open. The proxy then tries the candidates in order. Everything a plan needs is
in memory (prices are looked up once, at start), so a plan costs microseconds.

Resolution of the client's ``model``: ``overrides.route`` (body ``route`` or header ``x-tokenrace-route``)
when given, else ``model`` if it names a route, else an endpoint of that name (a plan with that one
endpoint, policy ``fixed``), else ``gateway.default_route``, else :class:`UnknownModelError`.

Policies (every candidate stays in the list, after the first, as a fallback)::

    fixed        the route's order
    weighted     the first drawn with probability weight / Σ weights, the rest in the route's order
    cheapest     ascending output price, then input price (pricing.effective_price); unknown price last
    fastest      descending live output speed (tok/s)       } endpoints not measured yet go FIRST, in the
    lowest-ttft  ascending live TTFT (ms)                    } route's order, so they get measured
    least-busy   endpoints at their max_concurrency last; then ascending load: in_flight / max_concurrency
                 for a capped endpoint, in_flight for an uncapped one (no capacity to compare against)
    cascade      difficulty score >= threshold: premium tier then cheap tier, else cheap then premium; with
                 premium_share, a score exactly at the calibrated threshold goes premium with the
                 calibrator's tie_fraction (so a block of identical scores cannot swing the share)

"Not measured yet" means no value, no request in flight and fewer than 3 finished requests: an endpoint
with a request out is already being measured (sending every concurrent call there would be a stampede),
and one that has finished 3 requests without giving a value (all failed, or never streamed two chunks)
goes after the measured ones instead of staying first forever. Ties keep the route's order.

Then ``overrides.sort`` re-orders the whole list (``price`` like cheapest, ``throughput`` like fastest,
``latency`` like lowest-ttft), ``overrides.max_price`` drops candidates whose output price is above it
(or unknown), and the circuit breaker's refusals are dropped (see :class:`Plan`).
"""

from __future__ import annotations

import difflib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenrace.config import Config, EndpointConfig, RouteConfig
from tokenrace.gateway.breaker import OPEN, CircuitBreaker
from tokenrace.gateway.difficulty import DifficultyEstimator, HeuristicDifficulty, PremiumShareCalibrator
from tokenrace.gateway.livestats import EndpointStats, LiveStats
from tokenrace.pricing import effective_price

__all__ = ["MEASURE_TRIES", "SORTS", "Overrides", "Plan", "Router", "UnknownModelError"]

SORTS = ("price", "throughput", "latency")
MEASURE_TRIES = 3  # finished requests without a value after which an endpoint is no longer "to be measured"


class UnknownModelError(LookupError):
    """The client's model names no route or endpoint and there is no default route; lists what it may name."""

    def __init__(self, name: str, routes: list[str], endpoints: list[str]) -> None:
        self.name = name
        self.routes = routes
        self.endpoints = endpoints
        msg = f"unknown model {name!r}"
        close = difflib.get_close_matches(name, [*routes, *endpoints], n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        msg += "; routes: " + (", ".join(routes) if routes else "(none)")
        msg += "; endpoints: " + (", ".join(endpoints) if endpoints else "(none)")
        super().__init__(msg)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(slots=True)
class Overrides:
    """What a client may ask of one call beyond the model name."""

    route: str | None = None  # body "route" or header x-tokenrace-route: use this route instead of the model name
    sort: str | None = None  # "price" | "throughput" | "latency": re-order candidates by that
    max_price: float | None = None  # $ per 1M output tokens: drop candidates priced above it


@dataclass(slots=True)
class Plan:
    """Where one call may go, in try order, and why.

    Breaker contract: ``plan`` excludes an endpoint when ``breaker.retry_after(name)`` is not None (circuit
    open, or half-open with the one trial already out), which has no side effect. It does NOT call
    ``breaker.allow``, because in half-open ``allow`` hands out the single trial: the proxy must call
    ``breaker.allow(name)`` right before sending to each candidate, skip the candidate when it returns False
    (the state may have changed since the plan, or another call took the trial), and then report
    ``breaker.success(name)`` or ``breaker.failure(name)``. When ``candidates`` is empty and
    ``retry_after_s`` is set, every remaining endpoint is behind an open circuit: answer 503 with
    ``Retry-After: ceil(retry_after_s)``.
    """

    route: str  # route name, or the endpoint name when the model named an endpoint directly
    candidates: list[EndpointConfig]  # try order; empty when every candidate is excluded (breaker open, max_price)
    reason: str  # one short human line, e.g. "fastest: b 120 tok/s > a 80 tok/s"
    policy: str
    difficulty: float | None = None
    excluded: dict[str, str] = field(default_factory=dict)  # endpoint -> why ("circuit open, retry in 12 s")
    retries: int = 1
    fallback: bool = True
    retry_after_s: float | None = None  # when candidates is empty because of open circuits: the soonest trial


_Order = tuple[list[EndpointConfig], str]


def _dedupe(endpoints: list[EndpointConfig]) -> list[EndpointConfig]:
    seen: set[str] = set()
    out: list[EndpointConfig] = []
    for ep in endpoints:
        if ep.name not in seen:
            seen.add(ep.name)
            out.append(ep)
    return out


def _usd(x: float) -> str:
    return f"${x:.2f}"


class Router:
    """Plans calls for one config; keeps per-route state (cascade calibrators) between calls."""

    def __init__(
        self,
        config: Config,
        stats: LiveStats,
        breaker: CircuitBreaker,
        difficulty: DifficultyEstimator | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.breaker = breaker
        self.difficulty: DifficultyEstimator = difficulty if difficulty is not None else HeuristicDifficulty()
        self.rng = rng if rng is not None else random.Random()
        self._endpoints: dict[str, EndpointConfig] = {ep.name: ep for ep in config.endpoints}
        self._routes: dict[str, RouteConfig] = {r.name: r for r in config.routes}
        # (output, input) $ per 1M tokens, None when unknown; the config is frozen, so once is enough.
        self._prices: dict[str, tuple[float, float] | None] = {}
        for ep in config.endpoints:
            price, _source = effective_price(ep)
            self._prices[ep.name] = None if price is None else (price.output, price.input)
        self._cheap: dict[str, list[EndpointConfig]] = {}
        self._premium: dict[str, list[EndpointConfig]] = {}
        self._weights: dict[str, list[float]] = {}
        self._calibrators: dict[str, PremiumShareCalibrator] = {}
        for route in config.routes:
            cheap = [self._endpoints[name] for name in route.endpoints]
            self._cheap[route.name] = _dedupe(cheap)
            self._premium[route.name] = _dedupe([self._endpoints[name] for name in route.premium])
            if route.weights is not None:
                summed: dict[str, float] = {}
                for ep, w in zip(cheap, route.weights, strict=True):
                    summed[ep.name] = summed.get(ep.name, 0.0) + w
                self._weights[route.name] = [summed[ep.name] for ep in self._cheap[route.name]]
            if route.policy == "cascade" and route.threshold is None and route.premium_share is not None:
                self._calibrators[route.name] = PremiumShareCalibrator(route.premium_share)

    def model_names(self) -> list[str]:
        """Every name a client may send as ``model``: routes, then endpoints (for GET /v1/models)."""
        return [r.name for r in self.config.routes] + self.config.names()

    def calibrator(self, route: str) -> PremiumShareCalibrator | None:
        """The premium-share calibrator of a cascade route (None for a fixed threshold or another policy)."""
        return self._calibrators.get(route)

    # ------------------------------------------------------------------------------------------
    # Planning

    def plan(self, model: str, messages: list[dict[str, Any]], overrides: Overrides | None = None) -> Plan:
        """The candidates for one call; raises UnknownModelError, or ValueError for an unknown sort."""
        ov = overrides if overrides is not None else Overrides()
        if ov.sort is not None and ov.sort not in SORTS:
            raise ValueError(f"unknown sort {ov.sort!r}; use one of: {', '.join(SORTS)}")
        prefix = ""
        if ov.route is not None:
            name = ov.route
            if name not in self._routes and name not in self._endpoints:
                raise self._unknown(name)
        elif model in self._routes or model in self._endpoints:
            name = model
        elif self.config.gateway.default_route is not None:
            name = self.config.gateway.default_route
            prefix = "default route: "
        else:
            raise self._unknown(model)

        route = self._routes.get(name)
        if route is None:
            plan = Plan(
                route=name, candidates=[self._endpoints[name]], reason=f"endpoint {name} named directly", policy="fixed"
            )
        else:
            plan = self._plan_route(route, messages)
        if prefix:
            plan.reason = prefix + plan.reason
        self._apply_overrides(plan, ov)
        self._apply_breaker(plan)
        return plan

    def _unknown(self, name: str) -> UnknownModelError:
        return UnknownModelError(name, [r.name for r in self.config.routes], self.config.names())

    def _plan_route(self, route: RouteConfig, messages: list[dict[str, Any]]) -> Plan:
        cheap = self._cheap[route.name]
        policy = route.policy
        difficulty: float | None = None
        if policy == "fixed":
            order, reason = list(cheap), f"fixed: {cheap[0].name} first (config order)"
        elif policy == "weighted":
            order, reason = self._weighted(route.name, cheap)
        elif policy == "cheapest":
            order, reason = self._cheapest(cheap)
        elif policy == "fastest":
            order, reason = self._fastest(cheap)
        elif policy == "lowest-ttft":
            order, reason = self._lowest_ttft(cheap)
        elif policy == "least-busy":
            order, reason = self._least_busy(cheap)
        elif policy == "cascade":
            difficulty = self.difficulty.score(messages)
            order, reason = self._cascade(route, difficulty)
        else:  # the config validates policies; a new one must be added here
            raise ValueError(f"route {route.name!r}: unknown policy {policy!r}")
        return Plan(
            route=route.name,
            candidates=order,
            reason=reason,
            policy=policy,
            difficulty=difficulty,
            retries=route.retries,
            fallback=route.fallback,
        )

    def _apply_overrides(self, plan: Plan, ov: Overrides) -> None:
        if ov.sort is not None and len(plan.candidates) > 1:
            sorter = {"price": self._cheapest, "throughput": self._fastest, "latency": self._lowest_ttft}[ov.sort]
            plan.candidates, why = sorter(plan.candidates)
            plan.reason += f"; sort={ov.sort} -> {why}"
        if ov.max_price is not None:
            kept: list[EndpointConfig] = []
            for ep in plan.candidates:
                price = self._prices[ep.name]
                if price is None:
                    plan.excluded[ep.name] = f"price unknown, max_price {float(ov.max_price)}"
                elif price[0] > ov.max_price:
                    plan.excluded[ep.name] = f"price {float(price[0])} > max_price {float(ov.max_price)}"
                else:
                    kept.append(ep)
            if len(kept) < len(plan.candidates):
                dropped = ", ".join(ep.name for ep in plan.candidates if ep.name in plan.excluded)
                plan.reason += f"; max_price {float(ov.max_price)} dropped {dropped}"
                plan.candidates = kept

    def _apply_breaker(self, plan: Plan) -> None:
        breaker = self.breaker
        kept: list[EndpointConfig] = []
        soonest: float | None = None
        skipped: list[str] = []
        for ep in plan.candidates:
            wait = breaker.retry_after(ep.name)  # None exactly when allow() would say yes; no side effect
            if wait is None:
                kept.append(ep)
                continue
            secs = max(1, math.ceil(wait))
            if breaker.state(ep.name) == OPEN:
                plan.excluded[ep.name] = f"circuit open, retry in {secs} s"
            else:
                plan.excluded[ep.name] = f"circuit half-open, trial in flight (retry in {secs} s)"
            skipped.append(ep.name)
            soonest = wait if soonest is None else min(soonest, wait)
        if skipped:
            plan.candidates = kept
            plan.reason += f"; skipped {', '.join(skipped)} (circuit breaker)"
            if not kept:
                plan.retry_after_s = soonest

    # ------------------------------------------------------------------------------------------
    # Policies: each returns the new order and the reason

    def _weighted(self, route: str, cheap: list[EndpointConfig]) -> _Order:
        weights = self._weights[route]
        total = sum(weights)
        x = self.rng.random() * total
        pick = max(i for i, w in enumerate(weights) if w > 0)  # float edge: x == total lands on the last
        acc = 0.0
        for i, w in enumerate(weights):
            acc += w
            if w > 0 and x < acc:
                pick = i
                break
        first = cheap[pick]
        order = [first, *(ep for i, ep in enumerate(cheap) if i != pick)]
        return order, f"weighted: drew {first.name} (p={weights[pick] / total:.2f})"

    def _price_key(self, ep: EndpointConfig) -> tuple[int, float, float]:
        price = self._prices[ep.name]
        return (1, 0.0, 0.0) if price is None else (0, price[0], price[1])

    def _price_text(self, ep: EndpointConfig, with_input: bool) -> str:
        price = self._prices[ep.name]
        if price is None:
            return "price unknown"
        text = f"{_usd(price[0])}/M out"
        return f"{text} ({_usd(price[1])}/M in)" if with_input else text

    def _cheapest(self, eps: list[EndpointConfig]) -> _Order:
        order = sorted(eps, key=self._price_key)
        a = order[0]
        if len(order) == 1:
            return order, f"cheapest: {a.name} {self._price_text(a, False)} (only candidate)"
        b = order[1]
        ka, kb = self._price_key(a), self._price_key(b)
        with_input = ka[0] == kb[0] == 0 and ka[1] == kb[1]
        op = "<" if ka < kb else "="
        return (
            order,
            f"cheapest: {a.name} {self._price_text(a, with_input)} {op} {b.name} {self._price_text(b, with_input)}",
        )

    def _by_live(
        self,
        eps: list[EndpointConfig],
        value: Callable[[EndpointStats], float | None],
        descending: bool,
    ) -> tuple[list[EndpointConfig], list[tuple[float, EndpointConfig]], list[EndpointConfig], list[EndpointConfig]]:
        """(order, measured sorted, to measure, unmeasurable) for a live-figure policy."""
        to_measure: list[EndpointConfig] = []
        measured: list[tuple[float, EndpointConfig]] = []
        unmeasurable: list[EndpointConfig] = []
        for ep in eps:
            st = self.stats.get(ep.name)
            v = value(st)
            if v is not None:
                measured.append((v, ep))
            elif st.in_flight == 0 and st.requests < MEASURE_TRIES:
                to_measure.append(ep)
            else:
                unmeasurable.append(ep)
        measured.sort(key=lambda t: -t[0] if descending else t[0])
        order = [*to_measure, *(ep for _, ep in measured), *unmeasurable]
        return order, measured, to_measure, unmeasurable

    @staticmethod
    def _live_reason(
        label: str,
        measured: list[tuple[float, EndpointConfig]],
        to_measure: list[EndpointConfig],
        fmt: Callable[[float], str],
        op: str,
    ) -> str:
        parts: list[str] = []
        if to_measure:
            parts.append(f"{to_measure[0].name} unmeasured, measuring it first")
        if len(measured) >= 2:
            (va, a), (vb, b) = measured[0], measured[1]
            parts.append(f"{a.name} {fmt(va)} {op if va != vb else '='} {b.name} {fmt(vb)}")
        elif measured:
            parts.append(f"{measured[0][1].name} {fmt(measured[0][0])} (only one measured)")
        elif not to_measure:
            parts.append("nothing measurable yet, config order")
        return f"{label}: " + "; then ".join(parts)

    def _fastest(self, eps: list[EndpointConfig]) -> _Order:
        order, measured, to_measure, _ = self._by_live(eps, _speed, descending=True)
        return order, self._live_reason("fastest", measured, to_measure, _fmt_speed, ">")

    def _lowest_ttft(self, eps: list[EndpointConfig]) -> _Order:
        order, measured, to_measure, _ = self._by_live(eps, _ttft, descending=False)
        return order, self._live_reason("lowest-ttft", measured, to_measure, _fmt_ms, "<")

    def _least_busy(self, eps: list[EndpointConfig]) -> _Order:
        keyed: list[tuple[tuple[bool, float], EndpointConfig, str]] = []
        for ep in eps:
            n = self.stats.get(ep.name).in_flight
            cap = ep.max_concurrency
            if cap is not None:
                keyed.append(((n >= cap, n / cap), ep, f"{n}/{cap} in flight"))
            else:
                keyed.append(((False, float(n)), ep, f"{n} in flight"))
        keyed.sort(key=lambda t: t[0])
        order = [ep for _, ep, _ in keyed]
        if len(keyed) == 1:
            return order, f"least-busy: {keyed[0][1].name} {keyed[0][2]} (only candidate)"
        (ka, a, ta), (kb, b, tb) = keyed[0], keyed[1]
        return order, f"least-busy: {a.name} {ta} {'<' if ka < kb else '='} {b.name} {tb}"

    def _cascade(self, route: RouteConfig, score: float) -> _Order:
        calibrator = self._calibrators.get(route.name)
        if route.threshold is not None:
            threshold, how = route.threshold, "fixed threshold"
            hard = score >= threshold
        elif calibrator is not None:
            threshold = calibrator.threshold()
            share = f"{calibrator.share * 100:.0f}% premium"
            if calibrator.warm or calibrator.share in (0.0, 1.0):
                how = f"calibrated for {share}"
            else:
                how = f"warming up {calibrator.seen}/{calibrator.WARMUP} for {share}"
            if score == threshold and (tie := calibrator.tie_fraction()) < 1.0:
                # A block of equal scores straddles the quantile: draw, so the block splits at the target share.
                hard = self.rng.random() < tie
                how += ", tie drawn"
            else:
                hard = score >= threshold
            calibrator.observe(score)  # after deciding: a decision depends only on the past
        else:  # unreachable with a validated config
            raise ValueError(f"route {route.name!r}: cascade needs threshold or premium_share")
        cheap, premium = self._cheap[route.name], self._premium[route.name]
        shown = f"{min(threshold, 1.0):.2f}"
        if hard:
            return _dedupe([*premium, *cheap]), f"cascade: difficulty {score:.2f} >= {shown} ({how}) -> premium"
        op = "=" if score == threshold else "<"
        return _dedupe([*cheap, *premium]), f"cascade: difficulty {score:.2f} {op} {shown} ({how}) -> cheap"


def _speed(st: EndpointStats) -> float | None:
    return st.output_speed


def _ttft(st: EndpointStats) -> float | None:
    return st.ttft_ms


def _fmt_speed(v: float) -> str:
    return f"{v:.0f} tok/s"


def _fmt_ms(v: float) -> str:
    return f"{v:.0f} ms"
