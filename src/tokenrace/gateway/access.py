"""Gateway keys, per-key rate limits and spend budgets, held in process (one asyncio thread, no locks).

Keys are configured as a SHA-256, an environment variable or a file (``GatewayKey``); variables and files
are read once at start-up and only their hash is kept, so neither a repr, a log line nor an error message
can carry a key. A presented key is hashed and compared in constant time with every configured hash.

Rate limits are **sliding-window logs** over the last 60 s: ``rpm`` counts admitted requests, ``tpm`` sums
their tokens (the caller's estimate at admission, replaced by the real count at settle). A window log is
exact where a token bucket would allow a burst of a whole minute's tokens at once, and it yields an exact
Retry-After: the time until enough of the window's oldest entries have aged out.

Budgets are enforced by reservation: admission reserves the estimated cost, so in-flight requests count
against the budget before they finish and any number of concurrent calls can never overspend it (as long
as a request's real cost stays within its estimate — the caller's estimate covers ``max_tokens``, so only
an under-estimated prompt can exceed it, and the overshoot is charged anyway: the money was spent).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tokenrace.config import ConfigError, GatewayKey, SecretUnavailable, read_secret
from tokenrace.store import Store
from tokenrace.usage import gateway_records

__all__ = [
    "WINDOW_S",
    "AccessControl",
    "AccessDenied",
    "KeyState",
    "Reservation",
    "hash_key",
    "spent_by_key",
]

WINDOW_S = 60.0  # the rate-limit window: rpm and tpm are per minute

INVALID_KEY = "invalid_api_key"
ROUTE_NOT_ALLOWED = "route_not_allowed"
RATE_LIMITED = "rate_limited"
BUDGET_EXHAUSTED = "budget_exhausted"


def hash_key(key: str) -> str:
    """SHA-256 hex of the key's UTF-8 bytes: what ``key_sha256`` holds (``printf %s KEY | sha256sum``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class AccessDenied(Exception):
    """A request refused before any upstream call; ``status`` and ``code`` go into the HTTP error as they are.

    The message names the key by id only, never by value.
    """

    def __init__(self, status: int, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"AccessDenied({self.status}, {self.code!r}, {self.message!r}, retry_after_s={self.retry_after_s!r})"


class _TokenEntry:
    """One admission in the tpm window; mutable so settle() can replace the estimate by the real count."""

    __slots__ = ("at", "live", "tokens")

    def __init__(self, at: float, tokens: int) -> None:
        self.at = at
        self.tokens = tokens
        self.live = True  # still inside the window (counted in KeyState._tpm_sum)


@dataclass(slots=True)
class KeyState:
    """A configured key's limits and its live counters; only ``id`` identifies it anywhere outside."""

    id: str
    rpm: int | None
    tpm: int | None
    budget_usd: float | None
    routes: list[str] | None
    spent_usd: float = 0.0  # settled cost, including what earlier processes recorded (spent_by_key)
    reserved_usd: float = 0.0  # estimates of the requests in flight
    requests: int = 0  # admitted by this process
    tokens: int = 0  # settled by this process
    unpriced: int = 0  # settled with an unknown cost (counted as $0 against the budget)
    key_sha256: str = field(default="", repr=False)
    _rpm_log: deque[float] = field(default_factory=deque, repr=False)
    _tpm_log: deque[_TokenEntry] = field(default_factory=deque, repr=False)
    _tpm_sum: int = field(default=0, repr=False)
    _open: int = field(default=0, repr=False)  # reservations neither settled nor released

    def _evict(self, now: float) -> None:
        """Drop window entries older than WINDOW_S."""
        horizon = now - WINDOW_S
        while self._rpm_log and self._rpm_log[0] <= horizon:
            self._rpm_log.popleft()
        while self._tpm_log and self._tpm_log[0].at <= horizon:
            entry = self._tpm_log.popleft()
            entry.live = False
            self._tpm_sum -= entry.tokens

    def _tpm_wait(self, now: float, needed: int) -> float:
        """Seconds until the window has room for ``needed`` more tokens (entries age out oldest first)."""
        excess = self._tpm_sum + needed - (self.tpm or 0)
        for entry in self._tpm_log:
            excess -= entry.tokens
            if excess <= 0:
                return max(entry.at + WINDOW_S - now, 0.0)
        return WINDOW_S  # unreachable when needed <= tpm; kept as a safe upper bound


class Reservation:
    """What one admitted request holds: its rpm/tpm window entry and its reserved budget.

    Exactly one of settle() or release() takes effect; release() after either is a no-op (so it can sit in
    a ``finally``), settle() twice or after release() raises RuntimeError.
    """

    __slots__ = ("_done", "_entry", "_est_cost", "_state", "key_id")

    def __init__(self, state: KeyState | None, entry: _TokenEntry | None, est_cost: float) -> None:
        self.key_id = state.id if state is not None else None
        self._state = state
        self._entry = entry
        self._est_cost = est_cost
        self._done = False

    def settle(self, tokens: int, cost_usd: float | None) -> None:
        """Replace the estimate by what the request really used: ``tokens`` = prompt + completion.

        ``cost_usd`` None means the endpoint's price is unknown: the request counts $0 against the budget
        (a budget cannot bound an unpriced endpoint; ``usage()`` counts these calls as ``unpriced``).
        """
        if self._done:
            raise RuntimeError("reservation already settled or released")
        self._done = True
        state = self._state
        if state is None:
            return
        tokens = max(int(tokens), 0)
        self._set_tokens(state, tokens)
        state.tokens += tokens
        if cost_usd is None:
            state.unpriced += 1
        else:
            state.spent_usd += max(float(cost_usd), 0.0)
        self._unreserve(state)

    def release(self) -> None:
        """Nothing was spent (the call failed before any token): give back the tokens and the budget.

        The request still counts against rpm: it was made.
        """
        if self._done:
            return
        self._done = True
        state = self._state
        if state is None:
            return
        self._set_tokens(state, 0)
        self._unreserve(state)

    def _set_tokens(self, state: KeyState, tokens: int) -> None:
        entry = self._entry
        if entry is None:
            return
        if entry.live:
            state._tpm_sum += tokens - entry.tokens
        entry.tokens = tokens

    def _unreserve(self, state: KeyState) -> None:
        state._open -= 1
        # Repeated float subtraction drifts; with nothing in flight the reservation is exactly zero.
        state.reserved_usd = max(state.reserved_usd - self._est_cost, 0.0) if state._open > 0 else 0.0

    def __repr__(self) -> str:
        return f"Reservation(key_id={self.key_id!r}, est_cost_usd={self._est_cost!r}, done={self._done})"


class AccessControl:
    """Authentication, route permissions, rate limits and budgets of every configured gateway key.

    With no keys configured the gateway is open: ``enabled`` is False, ``authenticate`` returns None and
    ``admit`` admits everything (keep such a gateway on loopback).
    """

    def __init__(
        self,
        keys: Sequence[GatewayKey],
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        spent: Mapping[str, float] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._clock = clock
        self._keys: dict[str, KeyState] = {}
        by_hash: dict[str, str] = {}
        for i, key in enumerate(keys):
            digest = _configured_hash(key, i, env)
            if digest in by_hash:
                raise ConfigError(
                    f"gateway keys {by_hash[digest]!r} and {key.id!r} are the same key", field=f"gateway.keys[{i}]"
                )
            by_hash[digest] = key.id
            self._keys[key.id] = KeyState(
                id=key.id,
                rpm=key.rpm,
                tpm=key.tpm,
                budget_usd=key.budget_usd,
                routes=list(key.routes) if key.routes is not None else None,
                spent_usd=float((spent or {}).get(key.id, 0.0)),
                key_sha256=digest,
            )
        self.enabled = bool(self._keys)

    @property
    def keys(self) -> dict[str, KeyState]:
        """Key states by id (read them; change them through admit and reservations)."""
        return self._keys

    def authenticate(self, presented: str | None) -> KeyState | None:
        """The key state for a presented key (Bearer token or x-api-key value); AccessDenied 401 otherwise.

        Every configured hash is compared, in constant time, so timing tells nothing about which or how
        much of a key matched.
        """
        if not self.enabled:
            return None
        value = (presented or "").strip()
        if not value:
            raise AccessDenied(
                401, INVALID_KEY, "missing API key: send 'Authorization: Bearer KEY' or an 'x-api-key' header"
            )
        digest = hash_key(value)
        found: KeyState | None = None
        for state in self._keys.values():
            if hmac.compare_digest(digest, state.key_sha256):
                found = state
        if found is None:
            raise AccessDenied(401, INVALID_KEY, "invalid API key")
        return found

    def admit(self, key: KeyState | None, *, route: str, est_tokens: int, est_cost_usd: float | None) -> Reservation:
        """Let one request through or raise AccessDenied; the returned reservation must be settled or released.

        Checked in order: route (403), budget (402), requests per minute then tokens per minute (429 with
        Retry-After). Nothing is counted unless every check passes. ``est_cost_usd`` None (unknown price)
        reserves nothing and is admitted while the budget is not yet used up.
        """
        if key is None:
            return Reservation(None, None, 0.0)
        if key.routes is not None and route not in key.routes:
            allowed = ", ".join(key.routes) if key.routes else "none"
            raise AccessDenied(
                403, ROUTE_NOT_ALLOWED, f"key {key.id!r} may not use {route!r}; allowed routes: {allowed}"
            )
        est_cost = max(float(est_cost_usd), 0.0) if est_cost_usd is not None else 0.0
        if key.budget_usd is not None:
            _check_budget(key, key.budget_usd, est_cost, priced=est_cost_usd is not None)
        now = self._clock()
        key._evict(now)
        est_tokens = max(int(est_tokens), 0)
        if key.rpm is not None and len(key._rpm_log) >= key.rpm:
            wait = max(key._rpm_log[len(key._rpm_log) - key.rpm] + WINDOW_S - now, 0.0)
            raise AccessDenied(
                429,
                RATE_LIMITED,
                f"key {key.id!r} is over its limit of {key.rpm} requests per minute; retry in {wait:.1f} s",
                retry_after_s=wait,
            )
        if key.tpm is not None:
            if est_tokens > key.tpm:
                raise AccessDenied(
                    429,
                    RATE_LIMITED,
                    f"request too large for key {key.id!r}: about {est_tokens} tokens (prompt + max_tokens) "
                    f"exceed its limit of {key.tpm} tokens per minute; lower max_tokens",
                )
            if key._tpm_sum + est_tokens > key.tpm:
                wait = key._tpm_wait(now, est_tokens)
                raise AccessDenied(
                    429,
                    RATE_LIMITED,
                    f"key {key.id!r} is over its limit of {key.tpm} tokens per minute; retry in {wait:.1f} s",
                    retry_after_s=wait,
                )
        key._rpm_log.append(now)
        entry = _TokenEntry(now, est_tokens)
        key._tpm_log.append(entry)
        key._tpm_sum += est_tokens
        key.requests += 1
        key.reserved_usd += est_cost
        key._open += 1
        return Reservation(key, entry, est_cost)

    def usage(self) -> dict[str, dict[str, float]]:
        """Per key id: spent_usd, reserved_usd, requests, tokens, unpriced (for logs and metrics)."""
        return {
            kid: {
                "spent_usd": s.spent_usd,
                "reserved_usd": s.reserved_usd,
                "requests": float(s.requests),
                "tokens": float(s.tokens),
                "unpriced": float(s.unpriced),
            }
            for kid, s in self._keys.items()
        }

    def __repr__(self) -> str:
        return f"AccessControl(keys={list(self._keys)!r}, enabled={self.enabled})"


def _check_budget(key: KeyState, budget: float, est_cost: float, *, priced: bool) -> None:
    """spent + reserved + estimate must stay within the budget; an unpriced call needs some budget left."""
    committed = key.spent_usd + key.reserved_usd
    if (committed + est_cost <= budget) if priced else (committed < budget):
        return
    if key.spent_usd >= budget:
        message = f"key {key.id!r} has spent its budget (${key.spent_usd:.4f} of ${budget:.4f})"
    elif not priced:
        message = (
            f"key {key.id!r}: requests in flight hold the rest of its budget "
            f"(${key.spent_usd:.4f} spent + ${key.reserved_usd:.4f} reserved of ${budget:.4f})"
        )
    else:
        message = (
            f"key {key.id!r} would exceed its budget: ${key.spent_usd:.4f} spent + ${key.reserved_usd:.4f} "
            f"reserved by requests in flight + ${est_cost:.4f} for this one > ${budget:.4f}"
        )
    raise AccessDenied(402, BUDGET_EXHAUSTED, message)


def _configured_hash(key: GatewayKey, index: int, env: Mapping[str, str]) -> str:
    """The key's SHA-256 from its one source; the plain value lives only inside this function."""
    if key.key_sha256 is not None:
        return key.key_sha256.lower()
    try:
        return hash_key(read_secret(key.key_env, key.key_file, env))
    except SecretUnavailable as err:
        what, field = ("key file", "key_file") if err.from_file else ("environment variable", "key_env")
        raise ConfigError(
            f"gateway key {key.id!r}: {what} {err.source} {err.problem}", field=f"gateway.keys[{index}].{field}"
        ) from None


def spent_by_key(store: Store, since_s: float | None = None) -> dict[str, float]:
    """Dollars each key id has spent through the gateway, summed from stored gateway records.

    A restarted gateway starts from these sums, so a budget is a total rather than a per-process
    allowance. ``since_s`` (unix seconds) counts only records sent since then (record time is the run's
    ``started_at`` plus the record's ``sent_s``).
    """
    totals: dict[str, float] = {}
    for _run, record in gateway_records(store, since_s):
        key_id = record.extra.get("key_id")
        cost = record.extra.get("cost_usd")
        if isinstance(key_id, str) and not isinstance(cost, bool) and isinstance(cost, int | float):
            totals[key_id] = totals.get(key_id, 0.0) + float(cost)
    return totals
