"""Gateway keys, rate limits and budgets: hashed keys only, exact sliding windows, no overspend under concurrency."""

from __future__ import annotations

import asyncio
import random

import pytest

from tokenrace.config import ConfigError, GatewayKey
from tokenrace.gateway.access import AccessControl, AccessDenied, hash_key, spent_by_key
from tokenrace.records import OK, RequestRecord, RunInfo
from tokenrace.store import Store

SECRET = "sk-gw-alice-0123456789abcdef"
OTHER = "sk-gw-bob-fedcba9876543210"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _control(*keys: GatewayKey, clock: FakeClock | None = None, **kwargs) -> AccessControl:
    return AccessControl(list(keys), clock=clock or FakeClock(), **kwargs)


def _key(**fields) -> GatewayKey:
    fields.setdefault("id", "alice")
    if not any(k in fields for k in ("key_sha256", "key_env", "key_file")):
        fields["key_sha256"] = hash_key(SECRET)
    return GatewayKey(**fields)


def _denied(fn, *args, **kwargs) -> AccessDenied:
    with pytest.raises(AccessDenied) as info:
        fn(*args, **kwargs)
    return info.value


def _all_text(exc: BaseException) -> str:
    return " ".join([str(exc), repr(exc), getattr(exc, "message", "")])


# --- keys -----------------------------------------------------------------------------------------


def test_hash_key_is_sha256_hex():
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_no_keys_means_open_gateway():
    control = _control()
    assert control.enabled is False
    assert control.authenticate(None) is None
    assert control.authenticate("anything") is None
    reservation = control.admit(None, route="any", est_tokens=10**9, est_cost_usd=10**6)
    assert reservation.key_id is None
    reservation.settle(5, 0.1)
    assert control.usage() == {}


@pytest.mark.parametrize("presented", [None, "", "   "])
def test_missing_key_is_401(presented):
    exc = _denied(_control(_key()).authenticate, presented)
    assert (exc.status, exc.code, exc.retry_after_s) == (401, "invalid_api_key", None)
    assert "missing" in exc.message


def test_invalid_key_is_401_and_never_echoed():
    wrong = SECRET + "x"
    exc = _denied(_control(_key()).authenticate, wrong)
    assert (exc.status, exc.code) == (401, "invalid_api_key")
    assert wrong not in _all_text(exc) and SECRET not in _all_text(exc)


def test_keys_from_sha256_env_and_file(tmp_path):
    key_file = tmp_path / "carol.key"
    key_file.write_text("  sk-carol  \n", encoding="utf-8")
    control = _control(
        _key(id="alice"),
        _key(id="bob", key_env="BOB_KEY"),
        _key(id="carol", key_file=str(key_file)),
        environ={"BOB_KEY": f" {OTHER}\n"},
    )
    assert control.enabled is True
    assert control.authenticate(SECRET).id == "alice"
    assert control.authenticate(OTHER).id == "bob"
    assert control.authenticate("sk-carol").id == "carol"
    assert control.authenticate(f" {OTHER} ").id == "bob"  # header whitespace
    _denied(control.authenticate, OTHER.upper())


def test_the_plain_key_is_kept_nowhere(tmp_path):
    key_file = tmp_path / "k"
    key_file.write_text("sk-from-file", encoding="utf-8")
    control = _control(
        _key(id="bob", key_env="BOB_KEY"), _key(id="carol", key_file=str(key_file)), environ={"BOB_KEY": OTHER}
    )
    state = control.authenticate(OTHER)
    reservation = control.admit(state, route="r", est_tokens=1, est_cost_usd=0.0)
    seen = " ".join([repr(control), repr(state), str(state), repr(reservation), repr(control.usage())])
    for secret in (OTHER, "sk-from-file", hash_key(OTHER)):
        assert secret not in seen
    for value in vars(control).values():
        assert OTHER not in repr(value) and "sk-from-file" not in repr(value)


@pytest.mark.parametrize(
    ("environ", "state"), [({}, "is not set"), ({"GW_KEY": "  "}, "is empty")], ids=["unset", "empty"]
)
def test_missing_env_var_names_key_and_variable(environ, state):
    with pytest.raises(ValueError) as info:
        _control(_key(id="ci", key_env="GW_KEY"), environ=environ)
    assert isinstance(info.value, ConfigError)
    assert str(info.value) == f"gateway.keys[0].key_env: gateway key 'ci': environment variable GW_KEY {state}"


def test_missing_or_empty_key_file(tmp_path):
    with pytest.raises(ConfigError, match=r"gateway key 'ci': key file .*nope does not exist"):
        _control(_key(id="ci", key_file=str(tmp_path / "nope")))
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        _control(_key(id="ci", key_file=str(empty)))


def test_two_ids_with_the_same_key_are_refused():
    with pytest.raises(ConfigError, match="'a' and 'b' are the same key") as info:
        _control(_key(id="a"), _key(id="b", key_env="B"), environ={"B": SECRET})
    assert SECRET not in str(info.value)


# --- routes ---------------------------------------------------------------------------------------


def test_route_restriction_is_403():
    control = _control(_key(routes=["chat", "cheap"]))
    state = control.authenticate(SECRET)
    control.admit(state, route="chat", est_tokens=1, est_cost_usd=0.0).release()
    exc = _denied(control.admit, state, route="premium", est_tokens=1, est_cost_usd=0.0)
    assert (exc.status, exc.code) == (403, "route_not_allowed")
    assert "'premium'" in exc.message and "chat, cheap" in exc.message
    assert control.usage()["alice"]["requests"] == 1  # a refused request is not counted


# --- rate limits ----------------------------------------------------------------------------------


def test_rpm_sliding_window_and_retry_after():
    clock = FakeClock()
    control = _control(_key(rpm=3), clock=clock)
    state = control.authenticate(SECRET)
    for offset in (0.0, 10.0, 20.0):
        clock.now = 1000.0 + offset
        control.admit(state, route="r", est_tokens=1, est_cost_usd=None).settle(1, None)
    clock.now = 1030.0
    exc = _denied(control.admit, state, route="r", est_tokens=1, est_cost_usd=None)
    assert (exc.status, exc.code) == (429, "rate_limited")
    assert exc.retry_after_s == pytest.approx(30.0)  # the first request leaves the window at 1060
    assert "3 requests per minute" in exc.message
    clock.now = 1059.9
    assert _denied(control.admit, state, route="r", est_tokens=1, est_cost_usd=None).retry_after_s == pytest.approx(0.1)
    clock.now = 1060.0
    control.admit(state, route="r", est_tokens=1, est_cost_usd=None).release()  # one slot freed
    exc = _denied(control.admit, state, route="r", est_tokens=1, est_cost_usd=None)
    assert exc.retry_after_s == pytest.approx(10.0)  # next to leave: the one sent at 1010


def test_released_requests_still_count_against_rpm():
    control = _control(_key(rpm=2))
    state = control.authenticate(SECRET)
    control.admit(state, route="r", est_tokens=1, est_cost_usd=0.0).release()
    control.admit(state, route="r", est_tokens=1, est_cost_usd=0.0).release()
    assert _denied(control.admit, state, route="r", est_tokens=1, est_cost_usd=0.0).status == 429


def test_tpm_counts_estimates_then_actual_tokens():
    clock = FakeClock()
    control = _control(_key(tpm=1000), clock=clock)
    state = control.authenticate(SECRET)
    a = control.admit(state, route="r", est_tokens=600, est_cost_usd=None)  # t=1000
    clock.now = 1005.0
    exc = _denied(control.admit, state, route="r", est_tokens=500, est_cost_usd=None)
    assert (exc.status, exc.code) == (429, "rate_limited")
    assert exc.retry_after_s == pytest.approx(55.0)  # the 600-token estimate leaves at 1060
    a.settle(300, None)  # the real count frees 300 tokens at once
    b = control.admit(state, route="r", est_tokens=500, est_cost_usd=None)  # 300 + 500 <= 1000
    clock.now = 1010.0
    exc = _denied(control.admit, state, route="r", est_tokens=400, est_cost_usd=None)
    assert exc.retry_after_s == pytest.approx(50.0)  # 300 leaving at 1060 is enough room
    exc = _denied(control.admit, state, route="r", est_tokens=900, est_cost_usd=None)
    assert exc.retry_after_s == pytest.approx(55.0)  # needs both entries gone: 1065
    b.release()  # failed before any token: its tokens come back
    control.admit(state, route="r", est_tokens=700, est_cost_usd=None).settle(700, None)
    usage = control.usage()["alice"]
    assert usage["tokens"] == 1000 and usage["requests"] == 3


def test_tpm_window_slides():
    clock = FakeClock()
    control = _control(_key(tpm=100), clock=clock)
    state = control.authenticate(SECRET)
    control.admit(state, route="r", est_tokens=100, est_cost_usd=None).settle(100, None)
    clock.now += 59.999
    _denied(control.admit, state, route="r", est_tokens=1, est_cost_usd=None)
    clock.now += 0.001
    control.admit(state, route="r", est_tokens=100, est_cost_usd=None).settle(100, None)


def test_settle_after_the_window_moved_on_does_not_corrupt_the_sum():
    clock = FakeClock()
    control = _control(_key(tpm=100), clock=clock)
    state = control.authenticate(SECRET)
    long_call = control.admit(state, route="r", est_tokens=80, est_cost_usd=None)
    clock.now += 120.0  # a two-minute stream: its entry has left the window
    control.admit(state, route="r", est_tokens=90, est_cost_usd=None).release()
    long_call.settle(80, None)
    control.admit(state, route="r", est_tokens=100, est_cost_usd=None).release()  # window is empty again


def test_request_larger_than_tpm_is_refused_without_retry_after():
    control = _control(_key(tpm=1000))
    exc = _denied(control.admit, control.authenticate(SECRET), route="r", est_tokens=1001, est_cost_usd=None)
    assert (exc.status, exc.code, exc.retry_after_s) == (429, "rate_limited", None)
    assert "max_tokens" in exc.message


# --- budgets --------------------------------------------------------------------------------------


def test_budget_reserves_before_the_call_and_settles_the_real_cost():
    control = _control(_key(budget_usd=1.0))
    state = control.authenticate(SECRET)
    a = control.admit(state, route="r", est_tokens=10, est_cost_usd=0.6)
    assert state.reserved_usd == pytest.approx(0.6)
    exc = _denied(control.admit, state, route="r", est_tokens=10, est_cost_usd=0.5)
    assert (exc.status, exc.code) == (402, "budget_exhausted")
    assert "reserved" in exc.message
    a.settle(10, 0.2)
    assert (state.spent_usd, state.reserved_usd) == (pytest.approx(0.2), 0.0)
    b = control.admit(state, route="r", est_tokens=10, est_cost_usd=0.5)
    b.release()
    assert state.reserved_usd == 0.0 and state.spent_usd == pytest.approx(0.2)
    control.admit(state, route="r", est_tokens=10, est_cost_usd=0.8).settle(10, 0.8)
    exc = _denied(control.admit, state, route="r", est_tokens=10, est_cost_usd=0.01)
    assert "has spent its budget" in exc.message
    control.admit(state, route="r", est_tokens=10, est_cost_usd=0.0).settle(10, 0.0)  # a free endpoint still works
    assert control.usage()["alice"] == {
        "spent_usd": pytest.approx(1.0),
        "reserved_usd": 0.0,
        "requests": 4.0,
        "tokens": 30.0,
        "unpriced": 0.0,
    }


def test_unpriced_calls_count_zero_and_need_budget_left():
    control = _control(_key(budget_usd=0.5))
    state = control.authenticate(SECRET)
    r = control.admit(state, route="r", est_tokens=10, est_cost_usd=None)
    r.settle(10, None)
    assert state.spent_usd == 0.0 and control.usage()["alice"]["unpriced"] == 1
    control.admit(state, route="r", est_tokens=10, est_cost_usd=0.5).settle(10, 0.5)
    assert _denied(control.admit, state, route="r", est_tokens=10, est_cost_usd=None).status == 402


def test_release_is_idempotent_and_settle_happens_once():
    control = _control(_key(budget_usd=1.0))
    state = control.authenticate(SECRET)
    r = control.admit(state, route="r", est_tokens=10, est_cost_usd=0.3)
    r.settle(10, 0.1)
    r.release()  # after settle, in a finally: nothing happens
    r.release()
    assert state.spent_usd == pytest.approx(0.1) and state.reserved_usd == 0.0
    with pytest.raises(RuntimeError):
        r.settle(10, 0.1)
    r2 = control.admit(state, route="r", est_tokens=10, est_cost_usd=0.3)
    r2.release()
    r2.release()
    with pytest.raises(RuntimeError):
        r2.settle(1, 0.1)
    assert state.spent_usd == pytest.approx(0.1) and state.reserved_usd == 0.0


async def test_fifty_concurrent_requests_never_overspend():
    budget = 1.0
    control = AccessControl([_key(budget_usd=budget)])
    state = control.authenticate(SECRET)
    rng = random.Random(7)
    outcomes: list[str] = []

    async def call(i: int) -> None:
        est = rng.uniform(0.02, 0.08)
        try:
            reservation = control.admit(state, route="r", est_tokens=100, est_cost_usd=est)
        except AccessDenied as exc:
            assert exc.status == 402
            outcomes.append("denied")
            return
        try:
            assert state.spent_usd + state.reserved_usd <= budget + 1e-12
            await asyncio.sleep(rng.uniform(0.0, 0.02))
            if i % 7 == 0:
                outcomes.append("released")
                return  # upstream failed before any token: the finally releases
            reservation.settle(80, est * rng.uniform(0.5, 1.0))  # the real cost is within the estimate
            outcomes.append("settled")
        finally:
            reservation.release()
        assert state.spent_usd <= budget + 1e-12

    await asyncio.gather(*(call(i) for i in range(50)))
    assert len(outcomes) == 50
    assert "denied" in outcomes and "settled" in outcomes  # the budget really was the limit
    assert state.spent_usd <= budget + 1e-12
    assert state.reserved_usd == 0.0
    # With everything settled there is room again for whatever is left.
    left = budget - state.spent_usd
    control.admit(state, route="r", est_tokens=1, est_cost_usd=left * 0.99).release()


# --- restart --------------------------------------------------------------------------------------


def _gateway_record(run_id: str, seq: int, key_id: str | None, cost: float | None, sent_s: float) -> RequestRecord:
    return RequestRecord(
        run_id=run_id, seq=seq, endpoint="up", api="openai-chat", model="m", workload="gateway", status=OK,
        sent_s=sent_s, done_s=sent_s + 1, extra={"route": "r", "key_id": key_id, "cost_usd": cost, "request_id": f"q{seq}"},
    )  # fmt: skip


def _run(store: Store, run_id: str, started_at: float, workload: str = "gateway") -> None:
    store.create_run(
        RunInfo(run_id=run_id, started_at=started_at, endpoint="gateway", workload=workload, profile={}, config={},
                versions={}, host={})
    )  # fmt: skip


def test_spent_by_key_restores_budgets_after_a_restart(store):
    _run(store, "g1", started_at=1_000.0)
    store.add_records([
        _gateway_record("g1", 0, "alice", 0.25, 0.0),
        _gateway_record("g1", 1, "alice", 0.5, 100.0),
        _gateway_record("g1", 2, "bob", 0.125, 200.0),
        _gateway_record("g1", 3, "bob", None, 300.0),  # unpriced
        _gateway_record("g1", 4, None, 9.0, 300.0),  # no key
    ])  # fmt: skip
    store.finish_run("g1", "complete", None, 1_400.0)
    _run(store, "g2", started_at=5_000.0)
    store.add_records([_gateway_record("g2", 0, "alice", 0.125, 10.0)])
    _run(store, "bench", started_at=5_000.0, workload="synthetic:input=1,output=1")
    store.add_records([_gateway_record("bench", 0, "alice", 100.0, 10.0)])  # not gateway traffic

    spent = spent_by_key(store)
    assert spent == {"alice": pytest.approx(0.875), "bob": pytest.approx(0.125)}
    assert spent_by_key(store, since_s=1_050.0) == {"alice": pytest.approx(0.625), "bob": pytest.approx(0.125)}
    assert spent_by_key(store, since_s=2_000.0) == {"alice": pytest.approx(0.125)}

    control = _control(_key(budget_usd=1.0), spent=spent)
    state = control.authenticate(SECRET)
    assert state.spent_usd == pytest.approx(0.875)
    exc = _denied(control.admit, state, route="r", est_tokens=1, est_cost_usd=0.2)
    assert exc.status == 402
    control.admit(state, route="r", est_tokens=1, est_cost_usd=0.1).settle(1, 0.1)
