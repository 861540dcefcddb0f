"""`tokenrace usage`: hand-built gateway records with known token shares, costs and percentiles."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from tokenrace.cli import app
from tokenrace.records import ERR_RATE_LIMIT, FAILED, OK, RequestRecord, RunInfo
from tokenrace.store import Store
from tokenrace.usage import usage_report

NOW = time.time()
DAY = 86_400.0
ENDPOINTS = {
    "oai": {"name": "oai", "base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini"},
    "local": {"name": "local", "base_url": "http://127.0.0.1:8081/v1", "model": "llama"},
    "anth": {"name": "anth", "base_url": "https://api.anthropic.com/v1", "model": "claude"},
}


def _run(store: Store, run_id: str, started_at: float, *, workload: str = "gateway", finished: bool = False) -> None:
    store.create_run(
        RunInfo(
            run_id=run_id,
            started_at=started_at,
            endpoint="gateway",
            workload=workload,
            profile={},
            config={"endpoints": ENDPOINTS},
            versions={},
            host={},
        )
    )
    if finished:
        store.finish_run(run_id, "complete", None, started_at + 100.0)


def _rec(
    run_id: str, seq: int, endpoint: str, model: str, *, prompt: int | None, completion: int | None,
    ttft: float = 0.1, e2e: float = 1.0, route: str = "chat", key: str | None = "alice",
    cost: float | None = 0.001, status: str = OK, sent: float = 0.0, speed: float = 100.0,
) -> RequestRecord:  # fmt: skip
    """A gateway record; a completed one decodes its tokens after the first at ``speed`` tok/s."""
    extra: dict[str, Any] = {"route": route, "key_id": key, "cost_usd": cost, "request_id": f"{run_id}-{seq}"}
    record = RequestRecord(
        run_id=run_id, seq=seq, endpoint=endpoint, api="openai-chat", model=model, workload="gateway",
        status=status, sent_s=sent, done_s=sent + e2e, usage_prompt_tokens=prompt,
        usage_completion_tokens=completion, extra=extra,
    )  # fmt: skip
    if status == OK:
        assert completion is not None
        first = sent + ttft
        record.first_token_s = first
        record.last_token_s = first + (completion - 1) / speed
        record.token_times_s = [first, record.last_token_s]
        record.first_chunk_tokens = 1
    else:
        record.error_category = ERR_RATE_LIMIT
        record.http_status = 429
    return record


def fill(store: Store) -> Store:
    """Two days ago: 2 OpenAI calls and 1 self-hosted; ten minutes ago: 2 OpenAI, 2 Anthropic (one a 429) and
    one call to an endpoint the run config does not list. A bench run with huge numbers must not count."""
    _run(store, "g-old", NOW - 2 * DAY, finished=True)
    store.add_records([
        _rec("g-old", 0, "oai", "gpt-4o-mini", prompt=100, completion=50, ttft=0.1, e2e=1.0),
        _rec("g-old", 1, "oai", "gpt-4o-mini", prompt=100, completion=50, ttft=0.2, e2e=2.0, sent=5),
        _rec("g-old", 2, "local", "llama", prompt=200, completion=100, ttft=0.05, e2e=0.5, key="bob", cost=0.0),
    ])  # fmt: skip
    _run(store, "g-new", NOW - 600)
    store.add_records([
        _rec("g-new", 0, "oai", "gpt-4o-mini", prompt=100, completion=50, ttft=0.3, e2e=3.0),
        _rec("g-new", 1, "oai", "gpt-4o-mini", prompt=100, completion=50, ttft=0.4, e2e=4.0),
        _rec("g-new", 2, "anth", "claude", prompt=300, completion=200, ttft=0.5, e2e=5.0, route="premium", cost=0.01),
        _rec("g-new", 3, "anth", "claude", prompt=None, completion=None, route="premium", cost=0.0, status=FAILED),
        _rec("g-new", 4, "ghost", "x", prompt=50, completion=50, ttft=1.0, e2e=2.0, key=None, cost=None),
    ])  # fmt: skip
    _run(store, "bench", NOW - 60, workload="synthetic:input=256,output=128", finished=True)
    store.add_records([_rec("bench", 0, "oai", "gpt-4o-mini", prompt=10**6, completion=10**6)])
    return store


@pytest.fixture
def traffic(store: Store) -> Store:
    return fill(store)


def _rows(report) -> dict[str, Any]:
    return {r.group: r for r in report.rows}


def test_by_provider_shares_costs_and_percentiles(traffic):
    report = usage_report(traffic, by="provider")
    assert report.runs == ["g-old", "g-new"]
    total = report.total
    assert (total.requests, total.failed) == (8, 1)
    assert (total.prompt_tokens, total.completion_tokens, total.total_tokens) == (950, 550, 1500)
    assert total.cost_usd == pytest.approx(0.014) and total.unpriced == 1
    rows = _rows(report)
    assert [r.group for r in report.rows] == ["openai", "anthropic", "self-hosted", "unknown"]  # most tokens first
    assert {g: r.share for g, r in rows.items()} == pytest.approx(
        {"openai": 0.4, "anthropic": 500 / 1500, "self-hosted": 0.2, "unknown": 100 / 1500}
    )
    oai = rows["openai"]
    assert (oai.requests, oai.failed, oai.error_rate) == (4, 0, 0.0)
    assert oai.cost_usd == pytest.approx(0.004)
    # TTFT 100/200/300/400 ms and E2E 1/2/3/4 s: numpy's linear percentiles.
    assert (oai.ttft_p50_ms, oai.ttft_p95_ms) == pytest.approx((250.0, 385.0))
    assert (oai.e2e_p50_ms, oai.e2e_p95_ms) == pytest.approx((2500.0, 3850.0))
    assert oai.output_speed_p50_tps == pytest.approx(100.0)
    anth = rows["anthropic"]
    assert (anth.requests, anth.failed, anth.error_rate) == (2, 1, 0.5)
    assert anth.ttft_p50_ms == pytest.approx(500.0)  # the 429 is not a latency
    assert rows["unknown"].cost_usd is None and rows["unknown"].unpriced == 1
    assert rows["self-hosted"].cost_usd == 0.0


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("model", {"gpt-4o-mini": 600, "claude": 500, "llama": 300, "x": 100}),
        ("endpoint", {"oai": 600, "anth": 500, "local": 300, "ghost": 100}),
        ("route", {"chat": 1000, "premium": 500}),
        ("key", {"alice": 1100, "bob": 300, "(no key)": 100}),
    ],
)
def test_other_groupings(traffic, by, expected):
    report = usage_report(traffic, by=by)
    assert {r.group: r.total_tokens for r in report.rows} == expected
    assert sum(r.share for r in report.rows) == pytest.approx(1.0)


def test_since_uses_record_time_inside_a_long_running_gateway(traffic):
    report = usage_report(traffic, by="endpoint", since_s=NOW - DAY)
    assert report.runs == ["g-new"]
    assert {r.group: r.requests for r in report.rows} == {"oai": 2, "anth": 2, "ghost": 1}
    assert _rows(report)["oai"].ttft_p50_ms == pytest.approx(350.0)
    # A gateway started two days ago and still running: only its recent record counts.
    _run(traffic, "g-long", NOW - 2 * DAY)
    traffic.add_records([
        _rec("g-long", 0, "local", "llama", prompt=1, completion=9, sent=0.0),
        _rec("g-long", 1, "local", "llama", prompt=2, completion=8, sent=2 * DAY - 30),
    ])  # fmt: skip
    recent = _rows(usage_report(traffic, by="endpoint", since_s=NOW - DAY))
    assert recent["local"].requests == 1 and recent["local"].total_tokens == 10


def test_unknown_grouping_is_an_error(store):
    with pytest.raises(ValueError, match="unknown --by 'team'"):
        usage_report(store, by="team")


# -- CLI ------------------------------------------------------------------------------------------------


def test_cli_usage_table_and_json(traffic):
    runner = CliRunner()
    db = ["--store", traffic.url]
    table = runner.invoke(app, ["usage", *db], env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    out = table.output
    assert "gateway usage by provider: 8 requests, 1.5k tokens" in out
    for text in (
        "openai",
        "40.0%",
        "anthropic",
        "50.0%",
        "self-hosted",
        "unknown",
        "unpriced",
        "total",
        "2 gateway runs",
    ):
        assert text in out
    assert "bench" not in out.split("live gateway traffic only")[0]
    data = orjson.loads(runner.invoke(app, ["usage", *db, "--by", "key", "--since", "24h", "-f", "json"]).output)
    assert data["by"] == "key" and data["runs"] == ["g-new"]
    assert {r["group"]: r["total_tokens"] for r in data["rows"]} == {"alice": 800, "(no key)": 100}
    assert data["total"]["requests"] == 5 and data["total"]["cost_usd"] == pytest.approx(0.012)


def test_cli_usage_empty_and_bad_options(tmp_path, traffic):
    runner = CliRunner()
    empty = runner.invoke(app, ["usage", "--store", str(tmp_path / "empty.db")])
    assert empty.exit_code == 0
    assert "no gateway traffic in" in empty.output and "tokenrace serve" in empty.output
    assert len(empty.output.strip().splitlines()) <= 2  # one line (wrapped at most once)
    quiet = runner.invoke(app, ["usage", "--store", traffic.url, "--since", "1s", "-f", "json"])
    assert quiet.exit_code == 0 and orjson.loads(quiet.output)["rows"] == []
    bad_by = runner.invoke(app, ["usage", "--store", traffic.url, "--by", "team"])
    assert bad_by.exit_code == 2 and "valid: provider, model, endpoint, route, key" in bad_by.output
    bad_since = runner.invoke(app, ["usage", "--store", traffic.url, "--since", "soon"])
    assert bad_since.exit_code == 2 and "invalid duration" in bad_since.output
    bad_format = runner.invoke(app, ["usage", "--store", traffic.url, "-f", "csv"])
    assert bad_format.exit_code == 2
