"""Load profiles: WHEN requests are sent, as small pure functions; the load generator does the sending.

Kinds:

* ``synchronous`` - one request at a time; the next is sent when the previous finishes.
* ``concurrency`` - a fixed number N in flight (closed loop): a new request as soon as one finishes.
* ``constant`` / ``poisson`` / ``gamma`` - open loop at ``rate`` requests/s, send times from
  :func:`arrival_offsets`; ``concurrency`` then caps how many may be in flight (None: no cap).

Open-loop arrivals are what real traffic looks like: a slow server does not slow the arrivals down,
so queueing shows up in the latencies instead of being hidden by the client waiting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_REQUESTS",
    "KINDS",
    "RATE_KINDS",
    "LoadProfile",
    "arrival_offsets",
    "parse_duration",
    "profile_from_cli",
    "sweep_rates",
]

SYNCHRONOUS = "synchronous"
CONCURRENCY = "concurrency"
CONSTANT = "constant"
POISSON = "poisson"
GAMMA = "gamma"
TRACE = "trace"  # send times come from a recorded trace (the workload's own timestamps)
KINDS: tuple[str, ...] = (SYNCHRONOUS, CONCURRENCY, CONSTANT, POISSON, GAMMA, TRACE)
RATE_KINDS: tuple[str, ...] = (CONSTANT, POISSON, GAMMA)

# Without --requests or --duration a run measures this many requests: enough for stable
# percentiles on a quick look, few enough not to surprise anyone paying per token.
DEFAULT_REQUESTS = 100

_CHUNK = 1024  # intervals drawn per numpy call; fixed so a seed always gives the same sequence


@dataclass(frozen=True)
class LoadProfile:
    """How a run sends its requests. Stops after ``requests`` or ``duration_s``, whichever comes
    first (measure phase; warmup requests come before and are not counted); with neither set,
    ``requests`` defaults to :data:`DEFAULT_REQUESTS`."""

    kind: str  # one of KINDS
    rate: float | None = None  # requests/s for constant/poisson/gamma
    concurrency: int | None = None  # fixed concurrency (kind concurrency) or the cap for rate-based kinds
    burstiness: float = 1.0  # gamma: shape k = 1/burstiness, so CV² of the intervals == burstiness;
    # >1 burstier than Poisson, <1 more regular; set to 1.0 for other kinds
    requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if self.kind in RATE_KINDS:
            if self.rate is None or not (math.isfinite(self.rate) and self.rate > 0):
                raise ValueError(f"a {self.kind} profile needs rate > 0 (requests/s)")
        elif self.rate is not None:
            raise ValueError(f"a {self.kind} profile takes no rate")
        if self.kind == CONCURRENCY and self.concurrency is None:
            raise ValueError("a concurrency profile needs concurrency >= 1")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if not (math.isfinite(self.burstiness) and self.burstiness > 0):
            raise ValueError("burstiness must be > 0")
        # Normalise fields a kind ignores, so dataclasses.replace(profile, kind=...) (the sweep does
        # this) always gives a consistent profile and describe() never stores a misleading value.
        if self.kind != GAMMA:
            object.__setattr__(self, "burstiness", 1.0)
        if self.kind == SYNCHRONOUS:
            object.__setattr__(self, "concurrency", None)
        if self.requests is not None and self.requests < 1:
            raise ValueError("requests must be >= 1")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError("duration_s must be > 0")
        if self.warmup_requests < 0:
            raise ValueError("warmup_requests must be >= 0")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.requests is None and self.duration_s is None:
            object.__setattr__(self, "requests", DEFAULT_REQUESTS)

    @property
    def is_rate_based(self) -> bool:
        """True for open-loop kinds whose send times come from :func:`arrival_offsets`."""
        return self.kind in RATE_KINDS

    @property
    def max_in_flight(self) -> int | None:
        """The most requests in flight at once; None means no cap (rate-based without --concurrency)."""
        if self.kind == SYNCHRONOUS:
            return 1
        return self.concurrency

    def label(self) -> str:
        """A one-line human summary, e.g. ``poisson 5 req/s, max 64 in flight, 100 requests``."""
        if self.kind == SYNCHRONOUS:
            head = "synchronous"
        elif self.kind == CONCURRENCY:
            head = f"concurrency {self.concurrency}"
        elif self.kind == TRACE:
            head = "trace replay" + (f", max {self.concurrency} in flight" if self.concurrency is not None else "")
        else:
            head = f"{self.kind} {self.rate:g} req/s"
            if self.kind == GAMMA:
                head = f"gamma(burstiness {self.burstiness:g}) {self.rate:g} req/s"
            if self.concurrency is not None:
                head += f", max {self.concurrency} in flight"
        stops = []
        if self.requests is not None:
            stops.append(f"{self.requests} requests")
        if self.duration_s is not None:
            stops.append(f"{self.duration_s:g}s")
        out = f"{head}, {' or '.join(stops)}"
        if self.warmup_requests:
            out += f" (+{self.warmup_requests} warmup)"
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-ready fields plus ``label``, stored with the run; :meth:`from_description` reverses it."""
        return {**asdict(self), "label": self.label()}

    @classmethod
    def from_description(cls, data: Mapping[str, Any]) -> LoadProfile:
        """Rebuild a profile from :meth:`describe` output (extra keys such as ``label`` ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def arrival_offsets(profile: LoadProfile) -> Iterator[float]:
    """Send times in seconds from the start of sending, non-decreasing and infinite (the caller stops).

    The first request goes at 0 for every kind, so a random first gap never shifts the window.
    constant: ``i / rate``; poisson: cumulative exponential intervals of mean ``1/rate``;
    gamma: cumulative Gamma(k = 1/burstiness, scale = 1/(rate*k)) intervals, mean ``1/rate`` and
    CV² = burstiness. Random kinds draw from ``numpy.random.default_rng(profile.seed)``.
    Warmup requests take the first offsets.
    """
    if not profile.is_rate_based:
        raise ValueError(f"a {profile.kind} profile has no arrival times: it sends when a request finishes")
    assert profile.rate is not None  # guaranteed by LoadProfile for rate-based kinds
    rate = float(profile.rate)
    if profile.kind == CONSTANT:
        return _constant(rate)
    return _random(profile.kind, rate, profile.burstiness, profile.seed)


def _constant(rate: float) -> Iterator[float]:
    # i / rate rather than a running sum: exact, no drift after millions of requests.
    i = 0
    while True:
        yield i / rate
        i += 1


def _random(kind: str, rate: float, burstiness: float, seed: int) -> Iterator[float]:
    rng = np.random.default_rng(seed)
    mean = 1.0 / rate
    shape = 1.0 / burstiness

    def draw() -> np.ndarray:
        if kind == POISSON:
            return rng.exponential(mean, _CHUNK)
        return rng.gamma(shape, mean / shape, _CHUNK)

    t = 0.0
    yield t
    while True:
        times = t + np.cumsum(draw())
        yield from (float(x) for x in times)
        t = float(times[-1])


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_DURATION_FULL = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|s|m|h|d))+")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(text: str) -> float:
    """``"60s"``, ``"2m"``, ``"500ms"``, ``"1h"``, ``"7d"``, ``"1m30s"`` or a plain number of seconds -> seconds."""
    s = str(text).strip().lower()
    if _NUMBER.fullmatch(s):
        return float(s)
    if s and _DURATION_FULL.fullmatch(s):
        return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(s))
    raise ValueError(
        f"invalid duration {text!r}: use seconds (30) or a number with a unit: 500ms, 60s, 2m, 1h, 7d, 1m30s"
    )


def _parse_arrival(arrival: str) -> tuple[str, float]:
    """``constant`` | ``poisson`` | ``gamma:B`` -> (kind, burstiness)."""
    a = arrival.strip().lower()
    if a == CONSTANT:
        return CONSTANT, 1.0
    if a == POISSON:
        return POISSON, 1.0
    if a == GAMMA or a.startswith(GAMMA + ":"):
        raw = a.partition(":")[2].strip()
        if not raw:
            raise ValueError(
                "--arrival gamma needs a burstiness, e.g. gamma:2 (1 = Poisson, >1 burstier, <1 more regular)"
            )
        try:
            b = float(raw)
        except ValueError:
            raise ValueError(f"--arrival gamma:B needs a number B > 0; got {raw!r}") from None
        if not (math.isfinite(b) and b > 0):
            raise ValueError("--arrival gamma:B needs burstiness B > 0")
        return GAMMA, b
    raise ValueError(f"--arrival must be constant, poisson or gamma:B; got {arrival!r}")


def profile_from_cli(
    concurrency: int | None,
    rate: float | None,
    arrival: str | None,
    requests: int | None,
    duration: str | None,
    warmup: int,
    seed: int,
) -> LoadProfile:
    """The profile the ``bench`` flags describe; ValueError naming the flag when they don't fit.

    No --rate and no --concurrency: synchronous. --concurrency N alone: N in flight. --rate R:
    constant arrivals (or --arrival poisson / gamma:B) with --concurrency as the in-flight cap.
    Neither --requests nor --duration: DEFAULT_REQUESTS (100) requests.
    """
    if concurrency is not None and concurrency < 1:
        raise ValueError("--concurrency must be >= 1")
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise ValueError("--rate must be > 0 (requests per second)")
    if requests is not None and requests < 1:
        raise ValueError("--requests must be >= 1")
    duration_s: float | None = None
    if duration is not None:
        try:
            duration_s = parse_duration(duration)
        except ValueError as err:
            raise ValueError(f"--duration: {err}") from None
        if duration_s <= 0:
            raise ValueError("--duration must be > 0")
    if warmup < 0:
        raise ValueError("--warmup must be >= 0")
    if seed < 0:
        raise ValueError("--seed must be >= 0")
    if arrival is not None and rate is None:
        raise ValueError(
            "--arrival needs --rate (requests per second); without --rate requests are sent "
            "one after another (or N at a time with --concurrency)"
        )
    common: dict[str, Any] = {
        "requests": requests,
        "duration_s": duration_s,
        "warmup_requests": warmup,
        "seed": seed,
    }
    if rate is not None:
        kind, burstiness = _parse_arrival(arrival) if arrival is not None else (CONSTANT, 1.0)
        return LoadProfile(kind, rate=rate, concurrency=concurrency, burstiness=burstiness, **common)
    if concurrency is not None:
        return LoadProfile(CONCURRENCY, concurrency=concurrency, **common)
    return LoadProfile(SYNCHRONOUS, **common)


def sweep_rates(max_rps: float, steps: int, low_fraction: float = 0.1) -> list[float]:
    """``steps`` evenly spaced rates from ``low_fraction * max_rps`` up to ``max_rps``, ascending.

    The sweep measures the endpoint's max throughput first, then runs each of these rates, so the
    latency-vs-load curve spans light load to saturation.
    """
    if not (math.isfinite(max_rps) and max_rps > 0):
        raise ValueError("max_rps must be > 0")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if not (0 < low_fraction <= 1):
        raise ValueError("low_fraction must be in (0, 1]")
    if steps == 1:
        return [float(max_rps)]
    low = low_fraction * max_rps
    span = max_rps - low
    rates = [low + span * i / (steps - 1) for i in range(steps - 1)]
    return [*rates, float(max_rps)]
