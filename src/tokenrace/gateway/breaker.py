"""A circuit breaker per endpoint: stop sending to an endpoint that keeps failing, probe it now and then.

States of one endpoint::

    closed ──(failures consecutive failures)──► open ──(cooldown_s passed)──► half-open
      ▲                                          ▲                              │ allow() grants ONE trial
      └──────────────── success() ───────────────┼──────────────────────────────┤
                                                 └──── failure() (a new cooldown starts) ◄┘

While open, callers are refused so a dead upstream is not hammered (a route with a single endpoint then
answers 503 with ``Retry-After: retry_after()``). After the cooldown exactly one caller gets the trial;
the rest are refused until the trial reports ``success`` (closed) or ``failure`` (open again). A trial that
never reports (the client went away and nobody called either) would wedge the circuit half-open, so the
trial's slot lapses after another ``cooldown_s`` and the next caller gets a new trial.

Invariant the router relies on: ``retry_after(e) is None`` exactly when ``allow(e)`` would return True, so
the router can exclude refused endpoints without consuming the half-open trial (``allow`` has that side
effect; the proxy calls it right before sending).

Not thread-safe: the gateway calls it from its one event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


@dataclass(slots=True)
class _Circuit:
    failures: int = 0  # consecutive failures while closed
    opened_at: float | None = None  # None: closed
    trial_at: float | None = None  # when the half-open trial was granted; None: no trial out


class CircuitBreaker:
    """Consecutive-failure circuit breaker keyed by endpoint name; ``clock`` is injectable for tests."""

    def __init__(
        self, failures: int = 5, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures!r}")
        if not cooldown_s > 0:
            raise ValueError(f"cooldown_s must be > 0, got {cooldown_s!r}")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def _circuit(self, endpoint: str) -> _Circuit:
        circuit = self._circuits.get(endpoint)
        if circuit is None:
            circuit = self._circuits[endpoint] = _Circuit()
        return circuit

    def allow(self, endpoint: str) -> bool:
        """May a request go to ``endpoint`` now? In half-open, True hands this caller the one trial."""
        circuit = self._circuits.get(endpoint)
        if circuit is None or circuit.opened_at is None:
            return True
        now = self.clock()
        if now - circuit.opened_at < self.cooldown_s:
            return False
        if circuit.trial_at is not None and now - circuit.trial_at < self.cooldown_s:
            return False  # another caller holds the trial
        circuit.trial_at = now
        return True

    def success(self, endpoint: str) -> None:
        """A request to ``endpoint`` succeeded: the circuit closes and the failure count resets."""
        circuit = self._circuits.get(endpoint)
        if circuit is not None:
            circuit.failures = 0
            circuit.opened_at = None
            circuit.trial_at = None

    def failure(self, endpoint: str) -> None:
        """A request to ``endpoint`` failed (count only the endpoint's fault, not a client's bad request)."""
        circuit = self._circuit(endpoint)
        now = self.clock()
        if circuit.opened_at is None:
            circuit.failures += 1
            if circuit.failures >= self.failures:
                circuit.opened_at = now
        elif now - circuit.opened_at >= self.cooldown_s:
            # Half-open: the trial (or a straggler after the cooldown) failed; open for a new cooldown.
            circuit.opened_at = now
            circuit.trial_at = None
        # Open and still cooling down: a straggler sent before the circuit opened; the cooldown stands.

    def state(self, endpoint: str) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (cooldown over, trial granted or not)."""
        circuit = self._circuits.get(endpoint)
        if circuit is None or circuit.opened_at is None:
            return CLOSED
        return OPEN if self.clock() - circuit.opened_at < self.cooldown_s else HALF_OPEN

    def retry_after(self, endpoint: str) -> float | None:
        """Seconds until ``allow`` would grant a trial; None when it would return True right now.

        Open: the rest of the cooldown. Half-open with the trial out: until the trial's slot lapses (it
        usually reports sooner). Closed, or half-open with the trial free: None.
        """
        circuit = self._circuits.get(endpoint)
        if circuit is None or circuit.opened_at is None:
            return None
        now = self.clock()
        left = circuit.opened_at + self.cooldown_s - now
        if left > 0:
            return left
        if circuit.trial_at is not None:
            left = circuit.trial_at + self.cooldown_s - now
            if left > 0:
                return left
        return None
