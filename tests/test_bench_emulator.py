"""End-to-end measurement against the emulator's scripted ground truth, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tokenrace.bench import PreflightError, run_bench
from tokenrace.config import EndpointConfig
from tokenrace.metrics import output_speed_tps, ttfat_ms, ttft_ms
from tokenrace.profiles import LoadProfile
from tokenrace.records import FAILED, OK, PHASE_MEASURE
from tokenrace.workloads import parse_workload


def _endpoint(emu, api: str = "openai-chat", **overrides) -> EndpointConfig:
    endpoint = EndpointConfig.adhoc(emu.base_url, api, "emulator", name="emu")
    return endpoint.model_copy(update=overrides) if overrides else endpoint


async def _bench(emu, store, *, api="openai-chat", concurrency=4, requests=20, warmup=0, workload=None, **kw):
    profile = LoadProfile(kind="concurrency", concurrency=concurrency, requests=requests, warmup_requests=warmup)
    return await run_bench(
        kw.pop("endpoint", None) or _endpoint(emu, api),
        parse_workload(workload or "synthetic:input=64,output=1000"),
        profile,
        store,
        **kw,
    )


@pytest.mark.slow
async def test_ttft_and_output_speed_match_the_script_at_64_concurrent_streams(emulator, store):
    emu = emulator(ttft_ms=50, itl_ms=10, tokens=40, timings=True)
    result = await _bench(emu, store, concurrency=64, requests=256, warmup=64)
    measured = [r for r in result.load.records if r.phase == PHASE_MEASURE]
    assert len(measured) == 256 and all(r.status == OK for r in measured)
    origin = result.run.config["clock"]["monotonic_origin"]
    # Bounds: 2 ms / 1% for nine requests in ten, and a loose ceiling for the rest — two processes share
    # two cores here and the OS may deschedule either for a time slice. The p99 figures are measured,
    # not asserted, by benchmarks/loadgen_capacity.py.
    # The client's own error: when it stamped the first token vs when the emulator wrote it (one clock).
    stamp_late_ms = np.array(
        [(r.first_token_s + origin - r.server_timings["emulator"]["first_token_sent"]) * 1000 for r in measured]
    )
    assert stamp_late_ms.min() >= 0, "a token cannot arrive before it was written"
    assert np.percentile(stamp_late_ms, 90) <= 2.0 and stamp_late_ms.max() <= 10.0, np.percentile(stamp_late_ms, 90)
    # Against the script itself (the emulator's own request queueing is inside this one).
    ttft_error = np.abs(np.array([ttft_ms(r) for r in measured]) - 50.0)
    assert np.percentile(ttft_error, 50) <= 2.0 and ttft_error.max() <= 10.0, np.percentile(ttft_error, 50)
    # Output speed: within 1% of what the emulator actually did, request by request, and the mean within
    # 1% of the script (39 chunks after the first, 10 ms apart: 100 tok/s).
    speed = np.array([output_speed_tps(r) for r in measured])
    actual = np.array([r.server_timings["predicted_per_second"] for r in measured])
    relative_error = np.abs(speed - actual) / actual
    assert np.percentile(relative_error, 90) <= 0.01 and relative_error.max() <= 0.05, relative_error.max()
    assert abs(speed.mean() - 100.0) <= 1.0, speed.mean()
    summary = result.summary
    assert summary["requests"] == {"completed": 256, "failed": 0, "incomplete": 0, "warmup": 64}
    assert summary["tokens"]["server_output"] == summary["tokens"]["client_output"] == 256 * 40
    assert summary["tokens"]["discrepancy_pct"] == 0.0
    assert abs(summary["server"]["client_vs_server_speed_pct"]) <= 1.0


async def test_role_only_first_chunk_is_not_counted_as_the_first_token(emulator, store):
    emu = emulator(ttft_ms=60, itl_ms=5, tokens=8)
    result = await _bench(emu, store, concurrency=1, requests=3)
    for record in result.load.records:
        assert 58 <= ttft_ms(record) <= 75
        # the role chunk arrived long before: it is an event but not a token
        assert record.event_times_s[0] < record.first_token_s - 0.04
        assert len(record.token_times_s) == 8
        assert record.client_output_tokens == 8 and record.first_chunk_tokens == 1


async def test_missing_usage_falls_back_to_the_client_tokenizer(emulator, store):
    emu = emulator(ttft_ms=0, itl_ms=0, tokens=17, usage=False)
    result = await _bench(emu, store, requests=8)
    for record in result.load.records:
        assert record.usage_completion_tokens is None
        assert record.client_output_tokens == 17 == record.output_tokens
    assert result.summary["tokens"]["requests_without_usage"] == 8


@pytest.mark.parametrize("api", ["openai-chat", "openai-completions", "anthropic-messages"])
async def test_every_api_streams_text_usage_and_finish_reason(emulator, store, api):
    emu = emulator(ttft_ms=5, itl_ms=1, tokens=12, tokens_per_chunk=3)
    result = await _bench(emu, store, api=api, requests=4, workload="synthetic:input=30,output=100")
    for record in result.load.records:
        assert record.status == OK, record.error_detail
        assert record.usage_completion_tokens == 12 == record.client_output_tokens
        assert record.usage_prompt_tokens is not None
        assert len(record.token_times_s) == 4 and record.first_chunk_tokens == 3
        assert record.finish_reason in ("stop", "end_turn")
        assert len(record.output_text.split()) == 12


async def test_reasoning_tokens_delay_the_first_answer_token(emulator, store):
    emu = emulator(ttft_ms=20, itl_ms=5, tokens=6, reasoning_tokens=10)
    result = await _bench(emu, store, requests=3)
    for record in result.load.records:
        assert record.reasoning_text and record.output_text
        assert ttfat_ms(record) - ttft_ms(record) >= 45  # ten reasoning chunks, 5 ms apart
        assert record.first_answer_s > record.first_token_s


async def test_max_tokens_truncation_reports_length(emulator, store):
    emu = emulator(ttft_ms=0, itl_ms=0, tokens=50)
    result = await _bench(emu, store, requests=2, workload="synthetic:input=10,output=7")
    for record in result.load.records:
        assert record.finish_reason == "length" and record.usage_completion_tokens == 7


@pytest.mark.parametrize(
    ("fault", "category"),
    [
        ("429", "rate_limited"),
        ("500", "http_5xx"),
        ("refuse", "connect"),
        ("cut", "stream_cut"),
        ("malformed", "malformed"),
        ("stall", "stall"),
    ],
)
async def test_each_injected_fault_is_categorised_and_the_run_goes_on(emulator, store, fault, category):
    emu = emulator(ttft_ms=2, itl_ms=1, tokens=20, faults={fault: 0.5}, seed=3, stall_s=5)
    endpoint = _endpoint(emu).model_copy(
        update={"timeouts": _endpoint(emu).timeouts.model_copy(update={"idle_s": 0.3})}
    )
    result = await _bench(emu, store, requests=30, endpoint=endpoint)
    records = result.load.records
    assert len(records) == 30
    failed = [r for r in records if r.status == FAILED]
    assert failed and all(r.error_category == category for r in failed), {r.error_category for r in failed}
    assert any(r.status == OK for r in records)
    assert result.summary["errors"] == {category: len(failed)}
    if fault == "429":
        assert all(r.extra.get("retry_after") for r in failed)
    stored = store.records(result.run.run_id)
    assert [r.status for r in stored] == [r.status for r in records]
    assert store.get_run(result.run.run_id).status == "complete"


async def test_unreachable_endpoint_fails_in_preflight_before_any_run(store):
    endpoint = EndpointConfig.adhoc("http://127.0.0.1:9/v1", "openai-chat", "m", name="dead")
    with pytest.raises(PreflightError, match=r"'dead'.*unreachable"):
        await _bench(None, store, endpoint=endpoint)
    assert store.list_runs() == []


async def test_stop_event_cancels_in_flight_requests_and_keeps_finished_ones(emulator, store):
    emu = emulator(ttft_ms=10, itl_ms=20, tokens=20)  # ~0.4 s per request
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)
    result = await _bench(emu, store, concurrency=4, requests=1000, stop=stop)
    assert result.load.interrupted
    statuses = [r.status for r in result.load.records]
    assert statuses.count(OK) >= 4 and statuses.count("incomplete") == 4
    assert store.get_run(result.run.run_id).status == "interrupted"
    assert len(store.records(result.run.run_id)) == len(statuses)


async def test_the_same_run_reads_back_identically_from_postgresql_and_sqlite(emulator, store, pg_store):
    emu = emulator(ttft_ms=2, itl_ms=1, tokens=10, faults={"cut": 0.2}, seed=5)
    result = await _bench(emu, pg_store, requests=30, warmup=3)
    from_pg = pg_store.records(result.run.run_id)
    assert len(from_pg) == 33
    store.create_run(pg_store.get_run(result.run.run_id))
    store.add_records(from_pg)
    assert store.records(result.run.run_id) == from_pg
    assert store.get_run(result.run.run_id) == pg_store.get_run(result.run.run_id)
    assert pg_store.get_run(result.run.run_id).summary["requests"]["failed"] >= 1


async def test_sweep_finds_max_throughput_then_runs_rising_rates(emulator, store):
    from tokenrace.bench import run_sweep

    emu = emulator(ttft_ms=5, itl_ms=2, tokens=8)
    profile = LoadProfile(kind="constant", rate=1.0, requests=40)
    results = await run_sweep(_endpoint(emu), parse_workload("synthetic:input=16,output=8"), profile, store, steps=3)
    assert results[0].run.profile["sweep_step"] == "max-throughput"
    max_rps = results[0].summary["throughput"]["requests_per_s"]
    targets = [r.run.profile["target_rps"] for r in results[1:]]
    assert targets == sorted(targets) and targets[-1] == pytest.approx(max_rps)
    assert len({r.run.profile["sweep"] for r in results}) == 1
    for result in results[1:]:
        assert result.run.profile["kind"] == "constant"
        assert result.summary["requests"]["completed"] == 40


async def test_duration_stops_sending_and_lets_in_flight_requests_finish(emulator, store):
    emu = emulator(ttft_ms=5, itl_ms=2, tokens=10)
    profile = LoadProfile(kind="constant", rate=40.0, duration_s=1.0, warmup_requests=2)
    result = await run_bench(_endpoint(emu), parse_workload("synthetic:input=16,output=10"), profile, store)
    measured = [r for r in result.load.records if r.phase == PHASE_MEASURE]
    assert 36 <= len(measured) <= 44 and all(r.status == OK for r in measured)
    assert not result.load.interrupted


async def test_rate_with_a_concurrency_cap_never_exceeds_the_cap(emulator, store):
    emu = emulator(ttft_ms=50, itl_ms=10, tokens=5)  # ~0.1 s per request
    profile = LoadProfile(kind="poisson", rate=200.0, concurrency=4, requests=40)
    result = await run_bench(_endpoint(emu), parse_workload("synthetic:input=16,output=5"), profile, store)
    spans = [(r.sent_s, r.done_s) for r in result.load.records]
    peak = max(sum(1 for s, d in spans if s <= t < d) for t, _ in spans)
    assert peak == 4
    # the cap makes requests wait: that delay is schedule lag, not latency
    lags = sorted(r.sent_s - r.scheduled_s for r in result.load.records)
    assert lags[-1] > 0.2 and all(49 <= ttft_ms(r) <= 60 for r in result.load.records)


async def test_a_trace_is_replayed_on_its_own_clock(emulator, store, tmp_path):
    emu = emulator(ttft_ms=2, itl_ms=1, tokens=4)
    path = tmp_path / "trace.jsonl"
    stamps = [1700000100.0, 1700000100.2, 1700000100.2, 1700000100.5, 1700000101.0]
    path.write_text("".join(f'{{"timestamp": {t}, "prompt": "hello {i}"}}\n' for i, t in enumerate(stamps)))
    for speed in (1, 2):
        workload = parse_workload(f"trace:{path},speed={speed}")
        profile = LoadProfile(kind="trace", requests=len(workload))
        result = await run_bench(_endpoint(emu), workload, profile, store)
        records = result.load.records
        assert [r.status for r in records] == [OK] * 5
        scheduled = [r.scheduled_s - records[0].scheduled_s for r in records]
        assert scheduled == pytest.approx([(t - stamps[0]) / speed for t in stamps], abs=1e-6)
        assert all(r.sent_s - r.scheduled_s < 0.01 for r in records)
        assert [r.extra["prompt_id"] for r in records] == [f"trace.jsonl:{i + 1}" for i in range(5)]
