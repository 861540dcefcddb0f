"""Suites end to end: requests go out over real HTTP, answers come back, every one is scored and stored."""

from __future__ import annotations

import pytest

from tokenrace.bench import run_bench
from tokenrace.config import EndpointConfig
from tokenrace.engines.local import running_endpoint
from tokenrace.profiles import LoadProfile
from tokenrace.records import OK
from tokenrace.suites.workload import parse_suite_workload


async def test_every_suite_runs_against_the_emulator_and_each_answer_is_scored_with_a_reason(emulator, store):
    emu = emulator(ttft_ms=1, itl_ms=0.2, tokens=12)
    endpoint = EndpointConfig.adhoc(emu.base_url, "openai-chat", "emulator", name="emu")
    workload = parse_suite_workload("chat,math,structured,rag,tools,coding", sample=2, max_context=4096)
    profile = LoadProfile(kind="concurrency", concurrency=4, requests=12)
    result = await run_bench(endpoint, workload, profile, store)
    records = store.records(result.run.run_id)
    assert len(records) == 12 and all(r.status == OK for r in records)
    assert sorted({r.suite for r in records}) == ["chat", "coding", "math", "rag", "structured", "tools"]
    for record in records:
        if record.suite == "chat":
            assert record.quality is None
        else:  # the emulator answers word salad: a wrong answer, scored 0 with the scorer's reason
            assert record.quality == 0.0 and record.quality_detail
    quality = result.summary["quality"]
    assert set(quality["suites"]) == {"coding", "math", "rag", "structured", "tools"}
    assert quality["overall"]["n"] == 10 and quality["overall"]["ci95"][0] == 0.0
    assert set(result.summary["by_suite"]["rag"]["by_context"]) <= {"1k", "4k"}
    assert result.summary["cost"]["price_source"].startswith("unknown")


@pytest.mark.slow
async def test_suites_against_the_real_local_engine(store):
    endpoint = EndpointConfig(name="smollm2", engine="local", model="smollm2-135m")
    workload = parse_suite_workload("structured,rag", sample=2, max_context=2048)
    with running_endpoint(endpoint) as (ready, info):
        profile = LoadProfile(kind="concurrency", concurrency=4, requests=4)
        result = await run_bench(ready, workload, profile, store, extra_config={"engine": info})
    records = store.records(result.run.run_id)
    assert all(r.status == OK and r.quality is not None and 0.0 <= r.quality <= 1.0 for r in records)
    assert all(r.quality_detail for r in records)
    assert result.summary["cost"]["total_usd"] == 0.0 and result.summary["cost"]["price_source"] == "local engine"
