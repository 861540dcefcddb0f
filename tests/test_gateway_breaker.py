"""Circuit breaker state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from tokenrace.gateway.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_closed_until_n_consecutive_failures(clock: FakeClock) -> None:
    br = CircuitBreaker(failures=3, cooldown_s=10.0, clock=clock)
    assert br.state("a") == "closed" and br.allow("a") and br.retry_after("a") is None
    br.failure("a")
    br.failure("a")
    assert br.state("a") == "closed" and br.allow("a")
    br.failure("a")
    assert br.state("a") == "open"
    assert not br.allow("a")
    assert br.retry_after("a") == pytest.approx(10.0)
    assert br.state("b") == "closed" and br.allow("b")  # per endpoint


def test_success_resets_the_consecutive_count(clock: FakeClock) -> None:
    br = CircuitBreaker(failures=2, cooldown_s=10.0, clock=clock)
    br.failure("a")
    br.success("a")
    br.failure("a")
    assert br.state("a") == "closed"
    br.failure("a")
    assert br.state("a") == "open"


def test_half_open_grants_exactly_one_trial_then_closes_on_success(clock: FakeClock) -> None:
    br = CircuitBreaker(failures=1, cooldown_s=30.0, clock=clock)
    br.failure("a")
    clock.now += 29.0
    assert not br.allow("a")
    assert br.retry_after("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert br.state("a") == "half-open"
    assert br.retry_after("a") is None  # a trial is available: allow() would say yes
    assert br.allow("a")  # the trial
    assert [br.allow("a") for _ in range(5)] == [False] * 5  # everyone else waits for it
    assert br.retry_after("a") is not None
    assert br.state("a") == "half-open"
    br.success("a")
    assert br.state("a") == "closed"
    assert all(br.allow("a") for _ in range(5))


def test_failed_trial_reopens_for_a_new_cooldown(clock: FakeClock) -> None:
    br = CircuitBreaker(failures=2, cooldown_s=10.0, clock=clock)
    br.failure("a")
    br.failure("a")
    clock.now += 10.0
    assert br.allow("a")
    clock.now += 2.0
    br.failure("a")  # the trial failed
    assert br.state("a") == "open"
    assert not br.allow("a")
    assert br.retry_after("a") == pytest.approx(10.0)
    clock.now += 10.0
    assert br.allow("a")


def test_straggler_failure_while_open_keeps_the_cooldown(clock: FakeClock) -> None:
    br = CircuitBreaker(failures=1, cooldown_s=10.0, clock=clock)
    br.failure("a")
    clock.now += 5.0
    br.failure("a")  # a request sent before the circuit opened
    assert br.retry_after("a") == pytest.approx(5.0)


def test_unreported_trial_lapses_after_a_cooldown(clock: FakeClock) -> None:
    br = CircuitBreaker(failures=1, cooldown_s=10.0, clock=clock)
    br.failure("a")
    clock.now += 10.0
    assert br.allow("a")
    clock.now += 9.0
    assert not br.allow("a")
    assert br.retry_after("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert br.allow("a")  # the first trial never reported; a new one goes out


def test_retry_after_is_none_exactly_when_allow_would_grant(clock: FakeClock) -> None:
    br = CircuitBreaker(failures=1, cooldown_s=5.0, clock=clock)
    br.failure("a")
    for _ in range(12):
        expected = br.retry_after("a") is None
        assert br.allow("a") is expected
        clock.now += 1.0


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)
    with pytest.raises(ValueError):
        CircuitBreaker(cooldown_s=0)
