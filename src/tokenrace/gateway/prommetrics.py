"""Prometheus metrics of the gateway (``GET /metrics``), from the same RequestRecord the store receives.

Each GatewayMetrics owns its registry, so several gateways (and tests) in one process never collide in the
global one. Labelled children are cached per label tuple: ``observe`` runs once per request on the event
loop, and prometheus_client's ``labels()`` lookup (lock, tuple validation) is the expensive part.

Latency and speed histograms take completed requests only (status ``ok``), as the benchmark summaries
do: a request refused in 3 ms is an error to count, not a fast answer. Tokens follow the billing rules of
:mod:`tokenrace.pricing` (a failed request counts only what the server reported).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tokenrace.config import Price
from tokenrace.metrics import e2e_ms, output_speed_tps, ttft_ms
from tokenrace.pricing import request_cost
from tokenrace.records import OK, RequestRecord

__all__ = ["BREAKER_STATES", "LATENCY_BUCKETS_S", "SPEED_BUCKETS_TPS", "GatewayMetrics"]

# From a cached short answer (50 ms) to a reasoning model thinking for two minutes.
_SUB_SECOND = (0.05, 0.1, 0.25, 0.5, 0.75)
LATENCY_BUCKETS_S = (*_SUB_SECOND, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0)
# Per-request decode speed: a loaded CPU engine (a few tok/s) up to speculative / wafer-scale serving.
SPEED_BUCKETS_TPS = (1.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0, 2000.0)
BREAKER_STATES: dict[str, int] = {"closed": 0, "half-open": 1, "half_open": 1, "open": 2}
NO_ERROR = "none"  # the error label of a request without an error category

_COUNTS_ONLY = Price(input=0.0, output=0.0)  # request_cost at $0 gives the billed token counts


class _EndpointChildren:
    """The per-endpoint children observe() touches on every request."""

    __slots__ = ("completion", "cost", "e2e", "prompt", "speed", "ttft")

    def __init__(self, m: GatewayMetrics, endpoint: str) -> None:
        self.prompt = m.tokens.labels(endpoint=endpoint, kind="prompt")
        self.completion = m.tokens.labels(endpoint=endpoint, kind="completion")
        self.cost = m.cost.labels(endpoint=endpoint)
        self.ttft = m.ttft.labels(endpoint=endpoint)
        self.e2e = m.e2e.labels(endpoint=endpoint)
        self.speed = m.speed.labels(endpoint=endpoint)


class GatewayMetrics:
    """Counters, histograms and gauges of one gateway process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tokenrace_gateway_requests",
            "Requests answered, by upstream endpoint, route, status (ok/failed/incomplete) and error category",
            ("endpoint", "route", "status", "error"),
            registry=r,
        )
        self.tokens = Counter(
            "tokenrace_gateway_tokens",
            "Tokens billed, by endpoint and kind (prompt/completion)",
            ("endpoint", "kind"),
            registry=r,
        )
        self.cost = Counter(
            "tokenrace_gateway_cost_usd", "Cost in US dollars at the endpoint's price", ("endpoint",), registry=r
        )
        self.ttft = Histogram(
            "tokenrace_gateway_ttft_seconds",
            "Time to first token of completed requests",
            ("endpoint",),
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.e2e = Histogram(
            "tokenrace_gateway_e2e_seconds",
            "Sent to end of stream, completed requests",
            ("endpoint",),
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.speed = Histogram(
            "tokenrace_gateway_output_tokens_per_second",
            "Output speed after the first chunk, completed requests",
            ("endpoint",),
            buckets=SPEED_BUCKETS_TPS,
            registry=r,
        )
        self.in_flight = Gauge(
            "tokenrace_gateway_in_flight", "Requests in flight per endpoint", ("endpoint",), registry=r
        )
        self.breaker = Gauge(
            "tokenrace_gateway_breaker_state",
            "Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open",
            ("endpoint",),
            registry=r,
        )
        self.refused_calls = Counter(
            "tokenrace_gateway_refused",
            "Generation calls refused before any upstream was tried (bad request, key, rate limit, budget, body"
            " size), by HTTP status, error code and key id",
            ("status", "code", "key"),
            registry=r,
        )
        self._endpoints: dict[str, _EndpointChildren] = {}
        self._requests: dict[tuple[str, str, str, str], Counter] = {}

    def _children(self, endpoint: str) -> _EndpointChildren:
        children = self._endpoints.get(endpoint)
        if children is None:
            children = self._endpoints[endpoint] = _EndpointChildren(self, endpoint)
        return children

    def observe(self, record: RequestRecord, *, route: str, cost_usd: float | None) -> None:
        """Count one finished request (any status) answered by ``record.endpoint`` for ``route``."""
        endpoint = record.endpoint
        key = (endpoint, route, record.status, record.error_category or NO_ERROR)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(*key)
        counter.inc()
        children = self._children(endpoint)
        billed = request_cost(record, _COUNTS_ONLY)
        if billed is not None:
            if billed.input_tokens:
                children.prompt.inc(billed.input_tokens)
            if billed.output_tokens:
                children.completion.inc(billed.output_tokens)
        if cost_usd is not None and cost_usd > 0:
            children.cost.inc(cost_usd)
        if record.status != OK:
            return
        ttft = ttft_ms(record)
        if ttft is not None and ttft >= 0:
            children.ttft.observe(ttft / 1000.0)
        e2e = e2e_ms(record)
        if e2e is not None and e2e >= 0:
            children.e2e.observe(e2e / 1000.0)
        speed = output_speed_tps(record)
        if speed is not None:
            children.speed.observe(speed)

    def refused(self, status: int, code: str, key_id: str | None) -> None:
        """Count a call refused before routing (never recorded as a request: no endpoint was involved)."""
        self.refused_calls.labels(status=str(status), code=code, key=key_id or NO_ERROR).inc()

    def set_in_flight(self, endpoint: str, value: int) -> None:
        self.in_flight.labels(endpoint=endpoint).set(value)

    def set_breaker(self, endpoint: str, state: str) -> None:
        """``state`` is closed, half-open (or half_open) or open; anything else is a caller bug."""
        try:
            code = BREAKER_STATES[state]
        except KeyError:
            raise ValueError(f"unknown breaker state {state!r}; expected closed, half-open or open") from None
        self.breaker.labels(endpoint=endpoint).set(code)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
