"""Live per-endpoint statistics the router orders candidates by: EWMA TTFT, output speed, error rate, in-flight.

Each average is an exponentially weighted moving average so the router follows an endpoint's current
state (a provider slowing down at peak hours) without keeping a history::

    new = α·x + (1 − α)·old        (the first observation sets new = x, so nothing is biased towards 0)

``α`` is ``gateway.ewma_alpha`` (default 0.2: the newest request weighs 20 %, one from 10 requests ago
about 2.7 %). The inputs are the reference formulas of :mod:`tokenrace.metrics` applied to the gateway's
own :class:`~tokenrace.records.RequestRecord`, so live figures and benchmark figures mean the same thing.

Not thread-safe: the gateway calls it from its one event loop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tokenrace.metrics import output_speed_tps, ttft_ms
from tokenrace.records import ERR_CANCELLED, FAILED, OK, RequestRecord

__all__ = ["EndpointStats", "LiveStats"]


@dataclass(slots=True)
class EndpointStats:
    """One endpoint's live figures; None until the first observation of that figure."""

    ttft_ms: float | None = None  # EWMA over completed requests
    output_speed: float | None = None  # EWMA of output_speed_tps (tok/s) over completed requests with a speed
    error_rate: float = 0.0  # EWMA of 1 (failed) / 0 (ok); cancelled-by-client requests don't count
    in_flight: int = 0
    requests: int = 0  # finished requests seen
    last_error: str | None = None


def _ewma(old: float | None, x: float, alpha: float) -> float:
    return x if old is None else alpha * x + (1.0 - alpha) * old


class LiveStats:
    """EWMA statistics per endpoint, updated as gateway requests start and finish.

    ``finished`` reads the record:

    - ``ttft_ms`` and ``output_speed`` average :func:`~tokenrace.metrics.ttft_ms` and
      :func:`~tokenrace.metrics.output_speed_tps` over requests with status ``ok`` whose value is defined
      (a failed request's TTFT says little about the endpoint's speed);
    - ``error_rate`` averages 1 for status ``failed`` and 0 for ``ok``; a request whose error category is
      ``cancelled`` (the client went away) and any other status (``incomplete``) are not the endpoint's
      doing and leave it unchanged;
    - ``requests`` counts every finished request; ``last_error`` is the latest failure as
      ``category: detail``.
    """

    def __init__(self, alpha: float = 0.2) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self.alpha = alpha
        self._stats: dict[str, EndpointStats] = {}
        self._errors_seen: set[str] = set()  # endpoints whose error_rate has had its first observation

    def _entry(self, endpoint: str) -> EndpointStats:
        stats = self._stats.get(endpoint)
        if stats is None:
            stats = self._stats[endpoint] = EndpointStats()
        return stats

    def started(self, endpoint: str) -> None:
        """A request was sent to ``endpoint``."""
        self._entry(endpoint).in_flight += 1

    def finished(self, endpoint: str, record: RequestRecord) -> None:
        """A request to ``endpoint`` ended (any status); one call per ``started``."""
        stats = self._entry(endpoint)
        stats.in_flight = max(0, stats.in_flight - 1)
        stats.requests += 1
        a = self.alpha
        if record.status == OK:
            ttft = ttft_ms(record)
            if ttft is not None:
                stats.ttft_ms = _ewma(stats.ttft_ms, ttft, a)
            speed = output_speed_tps(record)
            if speed is not None:
                stats.output_speed = _ewma(stats.output_speed, speed, a)
            self._observe_error(endpoint, stats, 0.0)
        elif record.status == FAILED and record.error_category != ERR_CANCELLED:
            self._observe_error(endpoint, stats, 1.0)
            detail = (record.error_detail or "").strip()
            category = record.error_category or "error"
            stats.last_error = f"{category}: {detail}" if detail else category

    def _observe_error(self, endpoint: str, stats: EndpointStats, x: float) -> None:
        if endpoint in self._errors_seen:
            stats.error_rate = self.alpha * x + (1.0 - self.alpha) * stats.error_rate
        else:
            self._errors_seen.add(endpoint)
            stats.error_rate = x

    def get(self, endpoint: str) -> EndpointStats:
        """The live stats of ``endpoint`` (fresh, unstored ones if it has seen nothing); read, don't modify."""
        stats = self._stats.get(endpoint)
        return stats if stats is not None else EndpointStats()

    def snapshot(self) -> dict[str, EndpointStats]:
        """Copies of every endpoint's stats, safe to keep or serialise while requests go on."""
        return {name: dataclasses.replace(stats) for name, stats in self._stats.items()}
