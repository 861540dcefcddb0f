"""Metric definitions against hand-computed answers.

Timestamps are multiples of 1/16 s so that every interval is exact in binary floating point and the
expected values can be asserted with ``==``.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest

from tokenrace.metrics import (
    DESCRIBE_KEYS,
    METRICS,
    SLO,
    UNCATEGORIZED,
    describe,
    e2e_ms,
    itl_ms,
    measurement_window,
    meets_slo,
    output_speed_tps,
    parse_slo,
    schedule_lag_ms,
    server_decode_tps,
    server_prefill_tps,
    summarize,
    tpot_ms,
    ttfat_ms,
    ttft_ms,
)
from tokenrace.records import FAILED, INCOMPLETE, OK, PHASE_WARMUP, RequestRecord


def rec(**kw: Any) -> RequestRecord:
    base: dict[str, Any] = {"run_id": "r", "seq": 0, "endpoint": "e", "api": "openai", "model": "m"}
    base.update(kw)
    return RequestRecord(**base)


def streamed(
    *,
    scheduled: float = 0.9375,
    sent: float = 1.0,
    tokens: tuple[float, ...] = (1.25, 1.5, 2.0),
    done: float = 2.125,
    first_answer: float | None = None,
    usage: int | None = 9,
    client: int | None = 9,
    first_chunk: int | None = 3,
    **kw: Any,
) -> RequestRecord:
    """A completed streamed request; by default ttft 250, e2e 1125, itl [250, 500], speed 8, tpot 109.375."""
    return rec(
        status=OK,
        scheduled_s=scheduled,
        sent_s=sent,
        first_token_s=tokens[0] if tokens else None,
        first_answer_s=first_answer if first_answer is not None else (tokens[0] if tokens else None),
        last_token_s=tokens[-1] if tokens else None,
        done_s=done,
        token_times_s=list(tokens),
        event_times_s=list(tokens),
        usage_completion_tokens=usage,
        client_output_tokens=client,
        first_chunk_tokens=first_chunk,
        **kw,
    )


def failed(sent: float = 1.0, done: float = 1.5, category: str | None = "http_5xx", **kw: Any) -> RequestRecord:
    return rec(status=FAILED, scheduled_s=sent - 0.125, sent_s=sent, done_s=done, error_category=category, **kw)


# ------------------------------------------------------------------------------------------ describe


def test_describe_known_array_linear_percentiles_and_sample_std() -> None:
    d = describe(range(1, 11))
    assert d["count"] == 10
    assert d["mean"] == 5.5
    assert d["min"] == 1.0 and d["max"] == 10.0
    assert d["std"] == pytest.approx(math.sqrt(82.5 / 9), rel=1e-15)  # ddof=1
    # linear interpolation: rank = q * (n - 1), so p90 sits at 8.1 -> 9 + 0.1 * (10 - 9)
    assert d["p50"] == 5.5
    assert d["p90"] == pytest.approx(9.1, rel=1e-15)
    assert d["p95"] == pytest.approx(9.55, rel=1e-15)
    assert d["p99"] == pytest.approx(9.91, rel=1e-15)
    assert d["p999"] == pytest.approx(9.991, rel=1e-15)
    assert list(d) == list(DESCRIBE_KEYS)


def test_describe_interpolates_rather_than_picking_a_sample() -> None:
    d = describe([0.0, 100.0])
    assert (d["p50"], d["p90"], d["p999"]) == (50.0, 90.0, pytest.approx(99.9, rel=1e-15))
    assert d["std"] == pytest.approx(math.sqrt(5000.0), rel=1e-15)


def test_describe_single_value_and_empty() -> None:
    one = describe([42.0])
    assert one == {
        "mean": 42.0, "std": 0.0, "min": 42.0, "max": 42.0,
        "p50": 42.0, "p90": 42.0, "p95": 42.0, "p99": 42.0, "p999": 42.0, "count": 1,
    }  # fmt: skip
    empty = describe([])
    assert empty["count"] == 0
    assert all(empty[k] is None for k in DESCRIBE_KEYS if k != "count")


def test_describe_returns_python_types_and_rejects_nan() -> None:
    d = describe(np.array([1, 2, 3], dtype=np.int32))
    assert all(type(v) is float for k, v in d.items() if k != "count") and type(d["count"]) is int
    with pytest.raises(ValueError):
        describe([1.0, float("nan")])


# ---------------------------------------------------------------------------------- per request


def test_per_request_metrics_hand_computed() -> None:
    r = streamed()
    assert ttft_ms(r) == 250.0
    assert ttfat_ms(r) == 250.0
    assert e2e_ms(r) == 1125.0
    assert schedule_lag_ms(r) == 62.5
    assert itl_ms(r) == [250.0, 500.0]
    assert output_speed_tps(r) == 8.0  # (9 - 3) tokens / (2.0 - 1.25) s
    assert tpot_ms(r) == 109.375  # (1125 - 250) ms / (9 - 1)


def test_reasoning_record_ttfat_after_ttft() -> None:
    r = streamed(first_answer=1.75)
    assert ttft_ms(r) == 250.0
    assert ttfat_ms(r) == 750.0


def test_single_token_response() -> None:
    r = streamed(tokens=(1.25,), done=1.3125, usage=1, client=1, first_chunk=1)
    assert ttft_ms(r) == 250.0 and e2e_ms(r) == 312.5
    assert output_speed_tps(r) is None  # one output event: no time after the first chunk
    assert tpot_ms(r) is None  # n < 2
    assert itl_ms(r) == []


def test_client_count_fallback_without_usage() -> None:
    r = streamed(usage=None, client=7)
    assert r.output_tokens == 7
    assert output_speed_tps(r) == (7 - 3) / 0.75
    assert tpot_ms(r) == 875.0 / 6


def test_speed_undefined_cases() -> None:
    assert output_speed_tps(streamed(first_chunk=None)) is None
    assert output_speed_tps(streamed(usage=None, client=None)) is None
    assert output_speed_tps(streamed(usage=2, first_chunk=3)) is None  # tokenizers disagree: negative
    assert output_speed_tps(streamed(tokens=(1.25, 1.25))) is None  # zero span
    assert output_speed_tps(streamed(usage=3, first_chunk=3)) == 0.0  # everything was in the first chunk


def test_missing_timestamps_give_none() -> None:
    r = rec(status=FAILED, scheduled_s=1.0)
    assert ttft_ms(r) is None and e2e_ms(r) is None and schedule_lag_ms(r) is None
    assert tpot_ms(r) is None and output_speed_tps(r) is None and itl_ms(r) == []


def test_server_timings() -> None:
    r = streamed(server_timings={"predicted_per_second": 12.5, "prompt_per_second": 800})
    assert server_decode_tps(r) == 12.5 and server_prefill_tps(r) == 800.0
    assert server_decode_tps(streamed()) is None
    assert server_decode_tps(streamed(server_timings={"predicted_per_second": "fast"})) is None
    assert server_decode_tps(streamed(server_timings={"predicted_per_second": 0})) is None


# ------------------------------------------------------------------------------------------ SLO


def test_parse_slo_units() -> None:
    assert parse_slo("ttft=500ms,tpot=50ms,e2e=2s,speed=20") == SLO(
        ttft_ms=500.0, tpot_ms=50.0, e2e_ms=2000.0, min_output_speed_tps=20.0
    )
    assert parse_slo(" TTFT = 250 , itl=0.1s, ttfat=1.5e3ms, speed=12.5tps ,") == SLO(
        ttft_ms=250.0, itl_ms=100.0, ttfat_ms=1500.0, min_output_speed_tps=12.5
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        " , ",
        "ttft",
        "ttft=",
        "ttft=abc",
        "ttft=5min",
        "speed=20ms",
        "ttft=0",
        "ttft=-5ms",
        "ttft=1,ttft=2",
    ],
)
def test_parse_slo_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_slo(text)


def test_parse_slo_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ValueError, match="latency") as err:
        parse_slo("latency=5s")
    for key in ("ttft", "ttfat", "tpot", "itl", "e2e", "speed"):
        assert key in str(err.value)


def test_meets_slo_rules() -> None:
    r = streamed()  # ttft 250, e2e 1125, tpot 109.375, itl max 500, speed 8
    assert meets_slo(r, SLO(ttft_ms=250, e2e_ms=1125, tpot_ms=109.375, itl_ms=500, min_output_speed_tps=8))
    assert not meets_slo(r, SLO(ttft_ms=249.9))
    assert not meets_slo(r, SLO(itl_ms=499))  # one gap over the bound is enough
    assert not meets_slo(r, SLO(min_output_speed_tps=8.1))
    single = streamed(tokens=(1.25,), done=1.3125, usage=1, client=1, first_chunk=1)
    assert meets_slo(single, SLO(tpot_ms=1, itl_ms=1, min_output_speed_tps=1000))  # no pace to violate
    no_answer = streamed(first_answer=None)
    no_answer.first_answer_s = None  # reasoning only, never answered
    assert not meets_slo(no_answer, SLO(ttfat_ms=10_000))
    assert not meets_slo(streamed(first_chunk=None), SLO(min_output_speed_tps=1))  # unknown speed fails
    assert not meets_slo(failed(), SLO(e2e_ms=10_000))


# ------------------------------------------------------------------------------------ summarize


def test_summary_counts_exclusions_and_window() -> None:
    records = [
        streamed(),  # ok: sent 1.0, done 2.125
        streamed(sent=2.0, scheduled=2.0, tokens=(2.5, 2.75, 3.0), done=3.0, first_chunk=1),
        failed(sent=3.0, done=4.5, category="timeout"),  # bounds the window end
        failed(sent=3.5, done=3.75, category=None),
        rec(status=INCOMPLETE, scheduled_s=3.75, sent_s=4.0, first_token_s=4.25, token_times_s=[4.25]),
        rec(status=INCOMPLETE, scheduled_s=4.0, sent_s=4.0625, error_category="cancelled", done_s=4.25),
        rec(status=INCOMPLETE, scheduled_s=4.5),  # never sent
        streamed(phase=PHASE_WARMUP, sent=0.0, scheduled=0.0, tokens=(0.5,), done=9.0),
        failed(phase=PHASE_WARMUP, sent=0.25, done=0.5),
    ]
    s = summarize(records)
    assert s["requests"] == {"completed": 2, "failed": 2, "incomplete": 3, "warmup": 2}
    assert measurement_window(records) == (1.0, 4.5)
    assert s["duration_s"] == 3.5
    m = s["metrics"]
    assert m["ttft_ms"]["count"] == 2 and m["ttft_ms"]["mean"] == 375.0  # (250 + 500) / 2
    assert m["e2e_ms"]["count"] == 2 and m["e2e_ms"]["max"] == 1125.0
    assert m["itl_ms"]["count"] == 4  # [250, 500] + [250, 250]; nothing from failed/incomplete/warmup
    assert m["itl_ms"]["mean"] == 312.5 and m["itl_ms"]["max"] == 500.0
    assert m["output_speed_tps"]["count"] == 2 and m["output_speed_tps"]["max"] == 16.0  # (9-1)/0.5
    assert m["tpot_ms"]["min"] == 62.5  # (1000 - 500) / 8
    # schedule lag: every sent measure record (2 ok, 2 failed, 2 sent incomplete)
    assert m["schedule_lag_ms"]["count"] == 6
    assert m["schedule_lag_ms"]["mean"] == (62.5 + 0 + 125 + 125 + 250 + 62.5) / 6
    assert s["throughput"]["requests_per_s"] == 2 / 3.5
    assert s["throughput"]["output_tokens_per_s"] == 18 / 3.5
    assert s["throughput"]["total_tokens_per_s"] == 18 / 3.5  # no prompt usage known
    assert s["errors"] == {"cancelled": 1, "timeout": 1, UNCATEGORIZED: 1}
    assert s["goodput"] is None
    assert "server" not in s


def test_summary_single_token_and_reasoning() -> None:
    single = streamed(tokens=(1.25,), done=1.3125, usage=1, client=1, first_chunk=1)
    reasoning = streamed(sent=2.0, scheduled=2.0, tokens=(2.25, 2.5, 3.0), first_answer=2.75, done=3.0)
    m = summarize([single, reasoning])["metrics"]
    assert m["ttft_ms"]["count"] == 2 and m["ttft_ms"]["max"] == 250.0
    assert m["ttfat_ms"]["max"] == 750.0
    assert m["output_speed_tps"]["count"] == 1 and m["output_speed_tps"]["mean"] == 8.0
    assert m["tpot_ms"]["count"] == 1 and m["tpot_ms"]["mean"] == 93.75  # (1000 - 250) / 8
    assert m["itl_ms"]["count"] == 2 and m["itl_ms"]["min"] == 250.0


def test_summary_tokens_and_discrepancy() -> None:
    records = [
        streamed(usage=10, client=11, usage_prompt_tokens=100),
        streamed(usage=30, client=30, usage_prompt_tokens=50),
        streamed(usage=None, client=5),  # client fallback; not in the discrepancy
        streamed(usage=None, client=None),  # no count at all: contributes nothing
        failed(),
    ]
    s = summarize(records)
    assert s["tokens"] == {
        "server_output": 40,
        "client_output": 46,
        "discrepancy_pct": 2.5,  # (41 - 40) / 40 * 100, over the two requests with both counts
        "requests_without_usage": 2,
        "prompt": 150,
    }
    duration = 2.125 - 1.0
    assert s["duration_s"] == duration
    assert s["throughput"]["output_tokens_per_s"] == 45 / duration  # 10 + 30 + 5
    assert s["throughput"]["total_tokens_per_s"] == 195 / duration


def test_summary_no_usage_anywhere() -> None:
    t = summarize([streamed(usage=None, client=9)])["tokens"]
    assert t == {
        "server_output": None,
        "client_output": 9,
        "discrepancy_pct": None,
        "requests_without_usage": 1,
        "prompt": None,
    }


def test_goodput() -> None:
    records = [
        streamed(),  # ttft 250, tpot 109.375 -> good
        streamed(sent=2.0, scheduled=2.0, tokens=(2.5, 2.75, 3.0), done=3.0),  # ttft 500 -> bad
        streamed(sent=3.0, scheduled=3.0, tokens=(3.125,), done=3.25, usage=1, client=1),  # good
        failed(sent=3.0, done=5.0),  # finished, never good
        rec(status=INCOMPLETE, scheduled_s=4.0, sent_s=4.0),  # not finished: not in the fraction
    ]
    g = summarize(records, slo=parse_slo("ttft=300ms,tpot=110"))["goodput"]
    assert g == {
        "slo": {"ttft_ms": 300.0, "tpot_ms": 110.0},
        "good_requests": 2,
        "good_fraction": 0.5,  # 2 of 4 finished (3 completed + 1 failed)
        "goodput_requests_per_s": 2 / 4.0,  # window 1.0 .. 5.0
    }
    assert sum(meets_slo(r, parse_slo("ttft=300ms,tpot=110")) for r in records) == 2


def test_empty_run() -> None:
    s = summarize([], slo=SLO(ttft_ms=1))
    assert s["requests"] == {"completed": 0, "failed": 0, "incomplete": 0, "warmup": 0}
    assert s["duration_s"] is None
    assert all(s["metrics"][k]["count"] == 0 and s["metrics"][k]["mean"] is None for k in METRICS)
    assert s["throughput"] == {
        "requests_per_s": None,
        "output_tokens_per_s": None,
        "total_tokens_per_s": None,
    }
    assert s["tokens"] == {
        "server_output": None,
        "client_output": None,
        "discrepancy_pct": None,
        "requests_without_usage": 0,
        "prompt": None,
    }
    assert s["errors"] == {}
    assert s["goodput"] == {
        "slo": {"ttft_ms": 1.0},
        "good_requests": 0,
        "good_fraction": None,
        "goodput_requests_per_s": None,
    }


def test_server_section() -> None:
    records = [
        streamed(server_timings={"predicted_per_second": 10.0, "prompt_per_second": 500.0}),  # client 8
        streamed(usage=17, server_timings={"predicted_per_second": 16.0}),  # client (17-3)/0.75
        streamed(),
    ]
    server = summarize(records)["server"]
    assert server["decode_tps"]["count"] == 2 and server["decode_tps"]["mean"] == 13.0
    assert server["prefill_tps"]["count"] == 1 and server["prefill_tps"]["mean"] == 500.0
    # per request: (8 - 10) / 10 = -20 %, (18.666.. - 16) / 16 = +16.666.. %; median of the two
    assert server["client_vs_server_speed_pct"] == pytest.approx((-20.0 + (14 / 0.75 - 16) / 16 * 100) / 2)


def test_summary_shape_is_plain_json() -> None:
    records = [streamed(server_timings={"predicted_per_second": 10.0}), failed()]
    s = summarize(records, slo=SLO(e2e_ms=2000))
    assert list(s) == [
        "requests", "duration_s", "metrics", "throughput", "tokens", "errors", "goodput", "server",
    ]  # fmt: skip
    assert list(s["metrics"]) == list(METRICS)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        else:
            assert node is None or type(node) in (int, float, str), type(node)

    walk(s)
    assert json.loads(json.dumps(s)) == s


# ---------------------------------------------- the vectorised summary equals the per-request definitions


def _random_records(seed: int, count: int) -> list[RequestRecord]:
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        sent = rnd.uniform(0, 100)
        k = rnd.choice([0, 1, 1, 2, 5, 40])
        tokens = sorted(sent + rnd.uniform(0.01, 3) for _ in range(k))
        if k and rnd.random() < 0.1:
            tokens = [tokens[0]] * k  # degenerate zero span
        r = streamed(
            scheduled=sent - rnd.uniform(0, 0.01),
            sent=sent,
            tokens=tuple(tokens),
            done=(tokens[-1] if tokens else sent) + rnd.uniform(0, 0.05),
            first_answer=tokens[-1] if tokens and rnd.random() < 0.3 else None,
            usage=rnd.choice([None, 0, 1, k, k + 3]),
            client=rnd.choice([None, k, k + 1]),
            first_chunk=rnd.choice([None, 0, 1, 4]),
            usage_prompt_tokens=rnd.choice([None, 20]),
        )
        r.status = rnd.choice([OK, OK, OK, FAILED, INCOMPLETE])
        r.phase = PHASE_WARMUP if rnd.random() < 0.05 else r.phase
        r.seq = i
        out.append(r)
    return out


def test_summary_matches_per_request_functions() -> None:
    records = _random_records(7, 600)
    slo = SLO(ttft_ms=1500, ttfat_ms=2500, tpot_ms=120, itl_ms=900, e2e_ms=3000, min_output_speed_tps=2)
    s = summarize(records, slo=slo)
    ok = [r for r in records if r.status == OK and r.phase != PHASE_WARMUP]
    sent = [r for r in records if r.phase != PHASE_WARMUP and r.sent_s is not None]

    def values(fn: Any, recs: list[RequestRecord]) -> list[float]:
        return [v for r in recs if (v := fn(r)) is not None]

    expected = {
        "ttft_ms": describe(values(ttft_ms, ok)),
        "ttfat_ms": describe(values(ttfat_ms, ok)),
        "output_speed_tps": describe(values(output_speed_tps, ok)),
        "tpot_ms": describe(values(tpot_ms, ok)),
        "itl_ms": describe([x for r in ok for x in itl_ms(r)]),
        "e2e_ms": describe(values(e2e_ms, ok)),
        "schedule_lag_ms": describe(values(schedule_lag_ms, sent)),
    }
    assert s["metrics"] == expected
    good = sum(meets_slo(r, slo) for r in records if r.phase != PHASE_WARMUP)
    assert 0 < good < len(ok)
    assert s["goodput"]["good_requests"] == good


@pytest.mark.slow
def test_summarize_100k_records_is_fast() -> None:
    """Guards against a per-token Python loop creeping in (measured ~0.4-0.8 s; the bound is generous)."""
    import time

    records = []
    for i in range(100_000):
        sent = i * 0.01
        tokens = [sent + 0.2 + j * 0.01 for j in range(64)]
        records.append(streamed(scheduled=sent, sent=sent, tokens=tuple(tokens), done=tokens[-1] + 0.001, usage=64))
    start = time.perf_counter()
    s = summarize(records, slo=SLO(ttft_ms=300, itl_ms=20, min_output_speed_tps=50))
    elapsed = time.perf_counter() - start
    assert s["metrics"]["itl_ms"]["count"] == 100_000 * 63
    assert s["goodput"]["good_requests"] == 100_000
    assert elapsed < 5.0, elapsed
