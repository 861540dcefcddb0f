"""The router's policies, overrides and breaker exclusions on hand-made live stats; LiveStats arithmetic."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from tokenrace.config import Config
from tokenrace.gateway.breaker import CircuitBreaker
from tokenrace.gateway.livestats import EndpointStats, LiveStats
from tokenrace.gateway.policies import Overrides, Plan, Router, UnknownModelError
from tokenrace.records import ERR_CANCELLED, ERR_HTTP_5XX, FAILED, INCOMPLETE, OK, RequestRecord


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def endpoint(name: str, out: float | None = None, inp: float = 0.1, **extra: Any) -> dict[str, Any]:
    ep: dict[str, Any] = {
        "name": name,
        "api": "openai-chat",
        "base_url": f"http://{name}.test/v1",
        "model": f"m-{name}",
    }
    if out is not None:
        ep["price"] = {"input": inp, "output": out}
    return {**ep, **extra}


def make_config(routes: list[dict[str, Any]], endpoints: list[dict[str, Any]] | None = None, **gateway: Any) -> Config:
    eps = endpoints or [endpoint("a", 2.0), endpoint("b", 15.0), endpoint("c", 0.6)]
    return Config.model_validate({"endpoints": eps, "routes": routes, "gateway": gateway})


def record(
    status: str = OK,
    ttft_ms: float | None = None,
    speed: float | None = None,
    category: str | None = None,
    detail: str | None = None,
) -> RequestRecord:
    """A finished record whose metrics.ttft_ms / output_speed_tps are exactly ``ttft_ms`` / ``speed``."""
    r = RequestRecord(run_id="gw", seq=0, endpoint="x", api="openai-chat", model="m", status=status)
    r.error_category, r.error_detail = category, detail
    if ttft_ms is not None:
        r.sent_s = 10.0
        r.first_token_s = 10.0 + ttft_ms / 1000.0
        if speed is not None:
            r.first_chunk_tokens = 1
            r.usage_completion_tokens = 101
            r.last_token_s = r.first_token_s + 100 / speed
            r.token_times_s = [r.first_token_s, r.last_token_s]
    return r


def measured(stats: LiveStats, name: str, ttft_ms: float, speed: float) -> None:
    stats.started(name)
    stats.finished(name, record(ttft_ms=ttft_ms, speed=speed))


def names(plan: Plan) -> list[str]:
    return [ep.name for ep in plan.candidates]


def router(
    config: Config, stats: LiveStats | None = None, breaker: CircuitBreaker | None = None, seed: int = 0
) -> Router:
    return Router(config, stats or LiveStats(), breaker or CircuitBreaker(), rng=random.Random(seed))


HI = [{"role": "user", "content": "hi"}]
HARD = """Design and implement a lock-free queue in C++. First explain the trade-offs against a mutex-based queue,
then write the code step by step. It must be linearizable and should handle at least 8 producers.
1. Prove that enqueue is wait-free, and derive the expected number of CAS retries as an equation.
2. Analyze the memory ordering: `std::atomic<Node*> head; head.load(std::memory_order_acquire);`
3. Include unit tests and compare throughput against `std::queue` under contention.
"""


# --------------------------------------------------------------------------------------------------
# LiveStats


def test_livestats_ewma_by_hand() -> None:
    stats = LiveStats(alpha=0.5)
    assert stats.get("a") == EndpointStats()
    stats.started("a")
    stats.started("a")
    assert stats.get("a").in_flight == 2
    stats.finished("a", record(ttft_ms=100.0, speed=50.0))
    s = stats.get("a")
    assert (s.ttft_ms, s.output_speed, s.error_rate, s.in_flight, s.requests) == (
        pytest.approx(100.0),
        pytest.approx(50.0),
        0.0,
        1,
        1,
    )  # the first observation is the value, not 0.5·x
    stats.finished("a", record(ttft_ms=300.0, speed=150.0))
    s = stats.get("a")
    assert s.ttft_ms == pytest.approx(0.5 * 300 + 0.5 * 100)  # 200
    assert s.output_speed == pytest.approx(0.5 * 150 + 0.5 * 50)  # 100
    assert s.in_flight == 0 and s.requests == 2
    stats.started("a")
    stats.finished("a", record(FAILED, category=ERR_HTTP_5XX, detail="HTTP 503"))
    s = stats.get("a")
    assert s.error_rate == pytest.approx(0.5 * 1 + 0.5 * 0)
    assert s.ttft_ms == pytest.approx(200.0)  # failures leave the latency averages alone
    assert s.last_error == "http_5xx: HTTP 503"
    stats.started("a")
    stats.finished("a", record(ttft_ms=400.0))  # ok without a speed (one chunk)
    s = stats.get("a")
    assert s.ttft_ms == pytest.approx(300.0) and s.output_speed == pytest.approx(100.0)
    assert s.error_rate == pytest.approx(0.25)
    assert s.requests == 4


def test_livestats_first_error_observation_and_cancelled() -> None:
    stats = LiveStats(alpha=0.2)
    stats.finished("a", record(FAILED, category=ERR_CANCELLED))
    stats.finished("a", record(INCOMPLETE))
    assert stats.get("a").error_rate == 0.0 and stats.get("a").last_error is None
    assert stats.get("a").requests == 2 and stats.get("a").in_flight == 0  # never below 0
    stats.finished("a", record(FAILED, category=ERR_HTTP_5XX))
    assert stats.get("a").error_rate == 1.0  # first observation: the value itself
    stats.finished("a", record(OK))
    assert stats.get("a").error_rate == pytest.approx(0.8)


def test_livestats_snapshot_is_a_copy() -> None:
    stats = LiveStats()
    stats.started("a")
    snap = stats.snapshot()
    stats.started("a")
    assert snap["a"].in_flight == 1 and stats.get("a").in_flight == 2
    with pytest.raises(ValueError):
        LiveStats(alpha=0.0)


# --------------------------------------------------------------------------------------------------
# Resolution


def test_resolution_route_endpoint_default_and_unknown() -> None:
    cfg = make_config([{"name": "chat", "endpoints": ["a", "b"]}])
    r = router(cfg)
    plan = r.plan("chat", HI)
    assert (plan.route, plan.policy, names(plan)) == ("chat", "fixed", ["a", "b"])
    assert plan.reason == "fixed: a first (config order)"
    plan = r.plan("c", HI)
    assert (plan.route, plan.policy, names(plan)) == ("c", "fixed", ["c"])
    assert "named directly" in plan.reason
    with pytest.raises(UnknownModelError) as err:
        r.plan("gpt-5", HI)
    msg = str(err.value)
    assert "'gpt-5'" in msg and "routes: chat" in msg and "endpoints: a, b, c" in msg
    assert err.value.routes == ["chat"] and err.value.endpoints == ["a", "b", "c"]
    with pytest.raises(UnknownModelError, match="did you mean 'chat'"):
        r.plan("chatt", HI)
    assert r.model_names() == ["chat", "a", "b", "c"]

    cfg = make_config([{"name": "chat", "endpoints": ["a", "b"]}], default_route="chat")
    plan = router(cfg).plan("gpt-5", HI)
    assert plan.route == "chat" and plan.reason.startswith("default route: ")


def test_override_route_wins_over_the_model() -> None:
    cfg = make_config(
        [{"name": "chat", "endpoints": ["a"]}, {"name": "cheap", "policy": "cheapest", "endpoints": ["a", "b", "c"]}]
    )
    r = router(cfg)
    plan = r.plan("chat", HI, Overrides(route="cheap"))
    assert plan.route == "cheap" and names(plan) == ["c", "a", "b"]
    assert names(r.plan("chat", HI, Overrides(route="b"))) == ["b"]
    with pytest.raises(UnknownModelError):
        r.plan("chat", HI, Overrides(route="nope"))


def test_route_options_travel_in_the_plan() -> None:
    cfg = make_config([{"name": "chat", "endpoints": ["a", "b"], "retries": 3, "fallback": False}])
    plan = router(cfg).plan("chat", HI)
    assert (plan.retries, plan.fallback, plan.difficulty, plan.excluded, plan.retry_after_s) == (
        3,
        False,
        None,
        {},
        None,
    )


# --------------------------------------------------------------------------------------------------
# Policies


def test_weighted_draws_match_weights() -> None:
    cfg = make_config([{"name": "w", "policy": "weighted", "endpoints": ["a", "b", "c"], "weights": [1, 3, 0]}])
    r = router(cfg, seed=7)
    firsts: Counter[str] = Counter()
    for _ in range(10_000):
        plan = r.plan("w", HI)
        firsts[plan.candidates[0].name] += 1
        assert sorted(names(plan)) == ["a", "b", "c"]  # the others stay as fallbacks
    assert firsts["c"] == 0
    assert firsts["a"] / 10_000 == pytest.approx(0.25, abs=0.02)
    assert firsts["b"] / 10_000 == pytest.approx(0.75, abs=0.02)
    plan = r.plan("w", HI)
    rest = [n for n in names(plan) if n != plan.candidates[0].name]
    assert rest == [n for n in ["a", "b", "c"] if n in rest]  # config order after the draw
    assert plan.reason.startswith("weighted: drew ")


def test_cheapest_orders_by_output_then_input_unknown_last() -> None:
    eps = [endpoint("a", 2.0, 0.5), endpoint("b"), endpoint("c", 2.0, 0.1), endpoint("d", 0.6)]
    cfg = make_config([{"name": "r", "policy": "cheapest", "endpoints": ["a", "b", "c", "d"]}], eps)
    plan = router(cfg).plan("r", HI)
    assert names(plan) == ["d", "c", "a", "b"]
    assert plan.reason == "cheapest: d $0.60/M out < c $2.00/M out"


def test_fastest_and_lowest_ttft_on_measured_stats() -> None:
    stats = LiveStats()
    measured(stats, "a", ttft_ms=200, speed=80)
    measured(stats, "b", ttft_ms=500, speed=120)
    measured(stats, "c", ttft_ms=100, speed=40)
    cfg = make_config(
        [
            {"name": "fast", "policy": "fastest", "endpoints": ["a", "b", "c"]},
            {"name": "snappy", "policy": "lowest-ttft", "endpoints": ["a", "b", "c"]},
        ]
    )
    r = router(cfg, stats)
    plan = r.plan("fast", HI)
    assert names(plan) == ["b", "a", "c"]
    assert plan.reason == "fastest: b 120 tok/s > a 80 tok/s"
    plan = r.plan("snappy", HI)
    assert names(plan) == ["c", "a", "b"]
    assert plan.reason == "lowest-ttft: c 100 ms < a 200 ms"


def test_unmeasured_endpoints_go_first() -> None:
    stats = LiveStats()
    measured(stats, "a", ttft_ms=200, speed=80)
    measured(stats, "b", ttft_ms=500, speed=120)
    eps = [endpoint("a", 1), endpoint("b", 1), endpoint("c", 1), endpoint("d", 1)]
    cfg = make_config(
        [
            {"name": "fast", "policy": "fastest", "endpoints": ["a", "b", "c", "d"]},
            {"name": "snappy", "policy": "lowest-ttft", "endpoints": ["d", "a", "b", "c"]},
        ],
        eps,
    )
    r = router(cfg, stats)
    plan = r.plan("fast", HI)
    assert names(plan) == ["c", "d", "b", "a"]  # c, d unmeasured, in config order
    assert plan.reason == "fastest: c unmeasured, measuring it first; then b 120 tok/s > a 80 tok/s"
    plan = r.plan("snappy", HI)
    assert names(plan) == ["d", "c", "a", "b"]
    assert "measuring it first" in plan.reason


def test_unmeasured_with_a_request_out_or_repeated_failures_goes_last() -> None:
    stats = LiveStats()
    measured(stats, "a", ttft_ms=200, speed=80)
    stats.started("b")  # being measured right now
    for _ in range(3):  # failed three times: no value to wait for
        stats.started("c")
        stats.finished("c", record(FAILED, category=ERR_HTTP_5XX))
    cfg = make_config([{"name": "fast", "policy": "fastest", "endpoints": ["b", "c", "a"]}])
    plan = router(cfg, stats).plan("fast", HI)
    assert names(plan) == ["a", "b", "c"]
    assert plan.reason == "fastest: a 80 tok/s (only one measured)"


def test_nothing_measured_keeps_config_order() -> None:
    cfg = make_config([{"name": "fast", "policy": "fastest", "endpoints": ["b", "a"]}])
    plan = router(cfg).plan("fast", HI)
    assert names(plan) == ["b", "a"]
    assert plan.reason == "fastest: b unmeasured, measuring it first"


def test_least_busy() -> None:
    stats = LiveStats()
    eps = [endpoint("a", 1, max_concurrency=4), endpoint("b", 1), endpoint("c", 1, max_concurrency=2)]
    for name, n in (("a", 1), ("b", 3), ("c", 2)):
        for _ in range(n):
            stats.started(name)
    cfg = make_config([{"name": "lb", "policy": "least-busy", "endpoints": ["c", "b", "a"]}], eps)
    plan = router(cfg, stats).plan("lb", HI)
    # a: 1/4 = 0.25; b (uncapped): 3; c: 2/2 = at capacity, last
    assert names(plan) == ["a", "b", "c"]
    assert plan.reason == "least-busy: a 1/4 in flight < b 3 in flight"
    idle = router(make_config([{"name": "lb", "policy": "least-busy", "endpoints": ["b", "a"]}], eps)).plan("lb", HI)
    assert names(idle) == ["b", "a"]  # ties keep config order
    assert "=" in idle.reason


def cascade_config(**route: Any) -> Config:
    return make_config([{"name": "smart", "policy": "cascade", "endpoints": ["c", "a"], "premium": ["b"], **route}])


def test_cascade_easy_to_cheap_hard_to_premium() -> None:
    r = router(cascade_config(threshold=0.55))
    easy = r.plan("smart", [{"role": "user", "content": "Hello there!"}])
    assert names(easy) == ["c", "a", "b"]
    assert easy.difficulty is not None and easy.difficulty < 0.55
    assert easy.reason.startswith("cascade: difficulty 0.") and easy.reason.endswith(
        "< 0.55 (fixed threshold) -> cheap"
    )
    hard = r.plan("smart", [{"role": "user", "content": HARD}])
    assert names(hard) == ["b", "c", "a"]
    assert hard.difficulty is not None and hard.difficulty >= 0.55
    assert hard.reason.endswith(">= 0.55 (fixed threshold) -> premium")
    assert hard.policy == "cascade"


def test_cascade_with_premium_share_calibrates() -> None:
    r = router(cascade_config(premium_share=0.3))
    cal = r.calibrator("smart")
    assert cal is not None and cal.share == 0.3
    first = r.plan("smart", HI)
    assert "warming up 0/20 for 30% premium" in first.reason
    rng = random.Random(3)
    words = ["hi", "prove", "def", "step by step", "the", "integral", "must", "class", "compare", "x = 1 + 2;"]
    premium = 0
    n = 600
    for _ in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
        plan = r.plan("smart", [{"role": "user", "content": text}])
        premium += plan.candidates[0].name == "b"
    assert cal.seen == n + 1
    assert premium / n == pytest.approx(0.3, abs=0.08)
    assert "(calibrated for 30% premium)" in r.plan("smart", HI).reason


def test_cascade_dedupes_overlapping_tiers() -> None:
    cfg = make_config([{"name": "s", "policy": "cascade", "endpoints": ["c", "b"], "premium": ["b"], "threshold": 0.0}])
    assert names(router(cfg).plan("s", HI)) == ["b", "c"]


# --------------------------------------------------------------------------------------------------
# Overrides


def test_sort_override_reorders() -> None:
    stats = LiveStats()
    measured(stats, "a", ttft_ms=300, speed=200)
    measured(stats, "b", ttft_ms=100, speed=50)
    measured(stats, "c", ttft_ms=200, speed=100)
    cfg = make_config([{"name": "chat", "endpoints": ["a", "b", "c"]}])
    r = router(cfg, stats)
    assert names(r.plan("chat", HI, Overrides(sort="price"))) == ["c", "a", "b"]
    assert names(r.plan("chat", HI, Overrides(sort="throughput"))) == ["a", "c", "b"]
    plan = r.plan("chat", HI, Overrides(sort="latency"))
    assert names(plan) == ["b", "c", "a"]
    assert plan.reason == "fixed: a first (config order); sort=latency -> lowest-ttft: b 100 ms < c 200 ms"
    assert plan.policy == "fixed"
    with pytest.raises(ValueError, match="unknown sort"):
        r.plan("chat", HI, Overrides(sort="vibes"))


def test_max_price_drops_expensive_and_unknown() -> None:
    eps = [endpoint("a", 2.0), endpoint("b", 15.0), endpoint("c", 0.6), endpoint("u")]
    cfg = make_config([{"name": "chat", "endpoints": ["b", "a", "u", "c"]}], eps)
    plan = router(cfg).plan("chat", HI, Overrides(max_price=2.0))
    assert names(plan) == ["a", "c"]  # price == max_price is kept
    assert plan.excluded == {"b": "price 15.0 > max_price 2.0", "u": "price unknown, max_price 2.0"}
    assert "max_price 2.0 dropped b, u" in plan.reason
    plan = router(cfg).plan("chat", HI, Overrides(max_price=0.1))
    assert plan.candidates == [] and plan.retry_after_s is None  # nothing to wait for


# --------------------------------------------------------------------------------------------------
# Breaker


def test_open_circuits_are_excluded_without_taking_the_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=2, cooldown_s=30.0, clock=clock)
    cfg = make_config([{"name": "chat", "endpoints": ["a", "b"]}])
    r = router(cfg, breaker=breaker)
    breaker.failure("a")
    breaker.failure("a")
    clock.now = 18.0
    plan = r.plan("chat", HI)
    assert names(plan) == ["b"]
    assert plan.excluded == {"a": "circuit open, retry in 12 s"}
    assert "skipped a" in plan.reason and plan.retry_after_s is None
    clock.now = 30.0
    for _ in range(3):  # planning has no side effect: every plan still offers a, the trial is not consumed
        assert names(r.plan("chat", HI)) == ["a", "b"]
    assert breaker.allow("a")  # the proxy takes the trial right before sending
    plan = r.plan("chat", HI)
    assert names(plan) == ["b"] and "trial in flight" in plan.excluded["a"]


def test_single_endpoint_route_with_open_circuit_gives_retry_after() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, cooldown_s=30.0, clock=clock)
    cfg = make_config([{"name": "solo", "endpoints": ["a"]}])
    r = router(cfg, breaker=breaker)
    breaker.failure("a")
    clock.now = 5.5
    plan = r.plan("solo", HI)
    assert plan.candidates == []
    assert plan.retry_after_s == pytest.approx(24.5)
    assert plan.excluded == {"a": "circuit open, retry in 25 s"}
    direct = r.plan("a", HI)  # the endpoint named directly: the same answer
    assert direct.candidates == [] and direct.retry_after_s == pytest.approx(24.5)


class ScriptedDifficulty:
    """A stand-in estimator: the score is the message text as a number."""

    name = "scripted"

    def score(self, messages: list[dict[str, Any]]) -> float:
        return float(messages[-1]["content"])


def test_cascade_share_holds_when_many_scores_tie() -> None:
    cfg = cascade_config(premium_share=0.5)
    r = Router(cfg, LiveStats(), CircuitBreaker(), difficulty=ScriptedDifficulty(), rng=random.Random(5))
    rng = random.Random(9)
    premium = 0
    n = 2000
    for _ in range(n):
        score = 0.1 if rng.random() < 0.6 else rng.uniform(0.3, 1.0)  # 60% identical easy prompts
        plan = r.plan("smart", [{"role": "user", "content": str(score)}])
        premium += plan.candidates[0].name == "b"
    assert premium / n == pytest.approx(0.5, abs=0.05)
    plan = r.plan("smart", [{"role": "user", "content": "0.1"}])
    assert "tie drawn" in plan.reason and plan.difficulty == 0.1
