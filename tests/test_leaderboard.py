"""Leaderboard, Pareto front and recommendation on a store of hand-built records (known answers)."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from tokenrace.cli import app
from tokenrace.leaderboard import (
    OVERALL,
    EmptySelectionError,
    Row,
    build_leaderboard,
    mark_pareto,
    rows_as_csv,
    rows_as_markdown,
    select_runs,
    sort_rows,
)
from tokenrace.recommend import Constraints, MixError, parse_mix, recommend
from tokenrace.records import FAILED, OK, RequestRecord, RunInfo
from tokenrace.store import Store, UnknownRunError
from tokenrace.suites import SUITE_NAMES

PROMPT, OUTPUT = 100, 51  # tokens per request: 100 in, 51 out (50 gaps after the first token)


def request(
    run_id: str,
    seq: int,
    endpoint: str,
    *,
    ttft_ms: float,
    speed: float,
    suite: str | None = None,
    quality: float | None = None,
    status: str = OK,
    start: float = 0.0,
) -> RequestRecord:
    """A streamed request whose TTFT, output speed and E2E are exact: e2e = ttft + 50/speed + 1 ms."""
    sent = start
    first = sent + ttft_ms / 1000.0
    times = [first + i / speed for i in range(OUTPUT)]
    record = RequestRecord(
        run_id=run_id,
        seq=seq,
        endpoint=endpoint,
        api="openai-chat",
        model=f"{endpoint}-model",
        status=status,
        scheduled_s=sent,
        sent_s=sent,
        suite=suite,
        extra={"prompt_id": f"{suite or 'synthetic'}-{seq}"},
    )
    if status != OK:
        record.error_category = "http_5xx"
        record.done_s = sent + 0.01
        return record
    record.first_token_s = record.first_answer_s = first
    record.token_times_s = record.event_times_s = times
    record.last_token_s = times[-1]
    record.done_s = times[-1] + 0.001
    record.usage_prompt_tokens = PROMPT
    record.usage_completion_tokens = OUTPUT
    record.client_output_tokens = OUTPUT
    record.first_chunk_tokens = 1
    record.quality = quality
    return record


def add_run(
    store: Store,
    run_id: str,
    endpoint: str,
    records: list[RequestRecord],
    *,
    price: dict[str, float] | None = None,
    local: bool = False,
    status: str = "complete",
    started_at: float | None = None,
    profile: dict[str, Any] | None = None,
) -> RunInfo:
    endpoint_cfg: dict[str, Any] = {"name": endpoint, "model": f"{endpoint}-model", "base_url": "http://127.0.0.1:1/v1"}
    if price is not None:
        endpoint_cfg["price"] = price
    if local:
        endpoint_cfg["engine"] = "local"
    run = RunInfo(
        run_id=run_id,
        started_at=started_at if started_at is not None else time.time(),
        endpoint=endpoint,
        workload="suite",
        profile=profile or {"kind": "concurrency", "concurrency": 4},
        config={"endpoint": endpoint_cfg},
        versions={},
        host={},
    )
    store.create_run(run)
    store.add_records(records)
    store.finish_run(run_id, status, None, time.time())
    run.status = status
    return run


def suite_records(run_id: str, endpoint: str, spec: dict[str, tuple[float, float, float | None]], n: int = 10) -> list:
    """``spec`` = {suite: (ttft_ms, speed, quality)}; n requests per suite, start times spread over 1 s."""
    out = []
    for suite, (ttft, speed, quality) in spec.items():
        for _ in range(n):
            out.append(request(run_id, len(out), endpoint, ttft_ms=ttft, speed=speed, suite=suite, quality=quality))
    for i, record in enumerate(out):  # spread the sends so the run has a measurement window
        shift = i * 0.01
        record.scheduled_s += shift
        record.sent_s = (record.sent_s or 0.0) + shift
        for name in ("first_token_s", "first_answer_s", "last_token_s", "done_s"):
            if getattr(record, name) is not None:
                setattr(record, name, getattr(record, name) + shift)
        record.token_times_s = [t + shift for t in record.token_times_s]
        record.event_times_s = list(record.token_times_s)
    return out


@pytest.fixture
def board_store(store: Store) -> Store:
    """Four endpoints with known speed/quality/price: three on the front, one dominated."""
    specs = {
        # endpoint: (coding (ttft, speed, q), rag (ttft, speed, q), price)
        "fast-cheap": ((100, 100, 0.5), (900, 90, 0.5), {"input": 1.0, "output": 2.0}),
        "slow-good": ((300, 40, 0.9), (400, 40, 0.9), {"input": 3.0, "output": 15.0}),
        "dominated": ((400, 30, 0.4), (500, 30, 0.4), {"input": 5.0, "output": 20.0}),
        "local-free": ((200, 50, 0.6), (300, 50, 0.6), None),
    }
    for endpoint, (coding, rag, price) in specs.items():
        records = suite_records(f"run-{endpoint}", endpoint, {"coding": coding, "rag": rag})
        add_run(store, f"run-{endpoint}", endpoint, records, price=price, local=price is None)
    return store


def by(board_rows: list[Row], endpoint: str, suite: str = OVERALL) -> Row:
    return next(r for r in board_rows if r.endpoint == endpoint and r.suite == suite)


def test_overall_and_suite_rows_carry_exact_figures(board_store: Store) -> None:
    board = build_leaderboard(board_store, select_runs(board_store))
    row = by(board.rows, "fast-cheap", "coding")
    assert row.completed == 10 and row.failed == 0
    assert row.output_speed_p50 == pytest.approx(100.0)
    assert row.ttft_p50_ms == pytest.approx(100.0)
    assert row.e2e_p50_ms == pytest.approx(100.0 + 500.0 + 1.0)
    assert row.quality == pytest.approx(0.5) and row.quality_n == 10
    # 100 in at $1/M + 51 out at $2/M = $0.000202 per request
    assert row.usd_per_1k_requests == pytest.approx(0.202)
    assert row.usd_per_1m_tokens == pytest.approx(0.000202 / 151 * 1e6)
    assert row.usd_per_1m_output_tokens == pytest.approx(0.000202 / 51 * 1e6)
    assert row.speed_per_usd == pytest.approx(100.0 / (0.000202 / 151 * 1e6))
    overall = by(board.rows, "fast-cheap")
    assert overall.completed == 20
    assert overall.ttft_p50_ms == pytest.approx(500.0)  # median of ten 100s and ten 900s
    assert overall.ttft_p95_ms == pytest.approx(900.0)
    # throughput belongs to a load: the overall row has its run's, a suite of a mixed run has none
    assert overall.throughput_tps is not None and overall.throughput_at == "c=4"
    assert row.throughput_tps is None
    free = by(board.rows, "local-free")
    assert free.usd_per_1m_tokens == 0.0 and free.speed_per_usd is None
    assert free.price_source == "local engine"
    assert [r.suite for r in board.rows][:4] == [OVERALL] * 4  # overall rows first
    assert board.suites() == ["coding", "rag"]


def test_pareto_front_is_fastest_best_and_cheapest_not_the_dominated(board_store: Store) -> None:
    board = build_leaderboard(board_store, select_runs(board_store))
    front = {r.endpoint for r in board.overall() if r.pareto}
    assert front == {"fast-cheap", "slow-good", "local-free"}
    for suite in ("coding", "rag"):
        assert not by(board.rows, "dominated", suite).pareto


def test_pareto_rules_on_hand_built_rows() -> None:
    a = Row("a", OVERALL, completed=1, output_speed_p50=10, quality=0.5, usd_per_1m_tokens=1.0)
    twin = Row("twin", OVERALL, completed=1, output_speed_p50=10, quality=0.5, usd_per_1m_tokens=1.0)
    worse = Row("worse", OVERALL, completed=1, output_speed_p50=10, quality=0.5, usd_per_1m_tokens=2.0)
    unscored_fast = Row("unscored", OVERALL, completed=1, output_speed_p50=50, usd_per_1m_tokens=5.0)
    dead = Row("dead", OVERALL, completed=0, failed=5, usd_per_1m_tokens=0.0)
    mark_pareto([a, twin, worse, unscored_fast, dead])
    assert (a.pareto, twin.pareto, worse.pareto) == (True, True, False)  # ties do not dominate
    assert unscored_fast.pareto  # fastest: on the front though unscored
    assert not dead.pareto  # no completed request: never on the front


def test_pooling_runs_sums_requests_and_keeps_best_throughput(store: Store) -> None:
    first = suite_records("r1", "ep", {"coding": (100, 50, 1.0)}, n=4)
    second = suite_records("r2", "ep", {"coding": (100, 50, 0.0)}, n=4)
    second.append(request("r2", 99, "ep", ttft_ms=100, speed=50, suite="coding", status=FAILED))
    add_run(
        store, "r1", "ep", first, price={"input": 1, "output": 1}, profile={"kind": "concurrency", "concurrency": 1}
    )
    add_run(store, "r2", "ep", second, price={"input": 1, "output": 1}, profile={"kind": "constant", "rate": 8.0})
    board = build_leaderboard(store, select_runs(store))
    row = by(board.rows, "ep", "coding")
    assert (row.completed, row.failed, row.runs) == (8, 1, ["r2", "r1"])
    assert row.quality == pytest.approx(0.5)
    assert row.quality_ci95 is not None and row.quality_ci95[0] < 0.5 < row.quality_ci95[1]
    # a single-suite run gives the suite row a throughput; the best of the two runs is shown
    assert row.throughput_tps is not None and row.throughput_at in ("c=1", "8 req/s")


def test_select_runs_skips_unfinished_and_failed_and_filters(store: Store) -> None:
    with pytest.raises(EmptySelectionError, match="no runs yet: run `tokenrace demo`"):
        select_runs(store)
    old = time.time() - 10 * 86400
    add_run(store, "old", "a", suite_records("old", "a", {"chat": (1, 10, None)}), started_at=old)
    add_run(store, "new", "b", suite_records("new", "b", {"chat": (1, 10, None)}))
    add_run(store, "down", "b", [], status="failed")
    add_run(store, "live", "b", suite_records("live", "b", {"chat": (1, 10, None)}), status="running")
    assert {r.run_id for r in select_runs(store)} == {"old", "new"}
    assert [r.run_id for r in select_runs(store, since_s=time.time() - 86400)] == ["new"]
    assert [r.run_id for r in select_runs(store, endpoints=["a"])] == ["old"]
    assert [r.run_id for r in select_runs(store, run_ids=["liv"])] == ["live"]  # named runs are taken as they are
    with pytest.raises(EmptySelectionError, match="no finished runs match"):
        select_runs(store, endpoints=["nobody"])
    with pytest.raises(UnknownRunError):
        select_runs(store, run_ids=["zzz"])


def test_sort_rows_puts_missing_values_last() -> None:
    rows = [Row("a", OVERALL, ttft_p50_ms=None), Row("b", OVERALL, ttft_p50_ms=300), Row("c", OVERALL, ttft_p50_ms=10)]
    assert [r.endpoint for r in sort_rows(rows, "ttft")] == ["c", "b", "a"]
    with pytest.raises(ValueError, match="valid"):
        sort_rows(rows, "colour")


def test_exports_keep_every_row(board_store: Store) -> None:
    board = build_leaderboard(board_store, select_runs(board_store))
    parsed = list(csv.DictReader(io.StringIO(rows_as_csv(board.rows))))
    assert len(parsed) == len(board.rows) == 12
    assert float(parsed[0]["output_speed_p50_tps"]) > 0
    markdown = rows_as_markdown(board.overall())
    assert markdown.count("\n") == 2 + 4 and "★" in markdown


# -- recommend ------------------------------------------------------------------------------------------


def test_parse_mix_normalises_and_names_valid_suites() -> None:
    assert parse_mix("coding=5, chat=3", SUITE_NAMES) == {"coding": 0.625, "chat": 0.375}
    assert parse_mix("rag", SUITE_NAMES) == {"rag": 1.0}
    with pytest.raises(MixError, match=r"unknown suite 'poetry'.*valid suites: agent, chat, coding"):
        parse_mix("poetry=1", SUITE_NAMES)
    for bad in ("coding=x", "coding=-1", "", "coding=0", "coding=1,coding=2"):
        with pytest.raises(MixError):
            parse_mix(bad, SUITE_NAMES)


def test_recommend_picks_the_fastest_for_the_mix(board_store: Store) -> None:
    board = build_leaderboard(board_store, select_runs(board_store))
    # coding-heavy traffic: fast-cheap wins (coding E2E 601 ms)
    coding = recommend(board, {"coding": 1.0})
    assert coding.best is not None and coding.best.endpoint == "fast-cheap"
    # rag-heavy traffic: fast-cheap's 900 ms TTFT costs it; E2E rag: fast-cheap 900+555.6+1, local-free 300+1000+1,
    # slow-good 400+1250+1 -> fast-cheap still best on E2E, local-free best on TTFT
    rag = recommend(board, {"rag": 1.0})
    assert [c.endpoint for c in rag.ranked][:2] == ["local-free", "fast-cheap"] or rag.best.endpoint == "fast-cheap"
    expected = {
        "fast-cheap": 900 + 50 / 90 * 1000 + 1,
        "local-free": 300 + 1000 + 1,
        "slow-good": 400 + 1250 + 1,
        "dominated": 500 + 50 / 30 * 1000 + 1,
    }
    assert {c.endpoint: c.e2e_ms for c in rag.ranked} == pytest.approx(expected)
    assert [c.endpoint for c in rag.ranked] == sorted(expected, key=expected.__getitem__)
    by_ttft = recommend(board, {"rag": 1.0}, by="ttft")
    assert by_ttft.best is not None and by_ttft.best.endpoint == "local-free"
    mixed = recommend(board, {"coding": 0.5, "rag": 0.5})
    best = mixed.best
    assert best is not None and best.endpoint == "fast-cheap"
    assert best.e2e_ms == pytest.approx(0.5 * 601 + 0.5 * expected["fast-cheap"])
    assert best.quality == pytest.approx(0.5)
    assert best.worst_p95_ttft_ms == pytest.approx(900) and best.worst_p95_ttft_suite == "rag"


def test_recommend_explains_every_exclusion(board_store: Store) -> None:
    board = build_leaderboard(board_store, select_runs(board_store))
    mix = {"coding": 0.5, "rag": 0.5}
    rec = recommend(board, mix, Constraints(min_quality=0.55, max_p95_ttft_ms=800))
    assert rec.best is not None and rec.best.endpoint == "local-free"  # fast-cheap: quality 0.5, TTFT p95 900 on rag
    reasons = {c.endpoint: c.violations for c in rec.excluded}
    assert reasons["fast-cheap"] == ["quality 0.50 < 0.55", "TTFT p95 900 ms on rag > 800 ms"]
    assert reasons["dominated"] == ["quality 0.40 < 0.55"]
    assert [c.endpoint for c in rec.ranked] == ["local-free", "slow-good"]
    cheap = recommend(board, mix, Constraints(max_cost_per_1m=2.0))
    assert {c.endpoint for c in cheap.ranked} == {"fast-cheap", "local-free"}
    assert any("per 1M tokens > $2" in v for c in cheap.excluded for v in c.violations)


def test_recommend_none_qualifies_lists_the_closest(board_store: Store) -> None:
    board = build_leaderboard(board_store, select_runs(board_store))
    rec = recommend(board, {"coding": 1.0}, Constraints(min_quality=0.95))
    assert rec.best is None and rec.ranked == []
    assert rec.excluded[0].endpoint == "slow-good"  # 0.9 is the nearest to 0.95
    assert [c.endpoint for c in rec.excluded] == ["slow-good", "local-free", "fast-cheap", "dominated"]


def test_recommend_never_guesses_missing_suites(board_store: Store) -> None:
    add_run(board_store, "run-chat-only", "chatty", suite_records("run-chat-only", "chatty", {"chat": (50, 200, None)}))
    board = build_leaderboard(board_store, select_runs(board_store))
    rec = recommend(board, {"coding": 0.5, "tools": 0.5})
    assert rec.best is None and rec.suites_without_data == ["tools"]
    assert {c.endpoint for c in rec.incomplete} == {"fast-cheap", "slow-good", "dominated", "local-free", "chatty"}
    chat = recommend(board, {"chat": 1.0}, Constraints(min_quality=0.5))
    assert chat.best is None and chat.excluded[0].violations == ["quality unknown: chat not scored"]


# -- CLI ------------------------------------------------------------------------------------------------


def test_cli_leaderboard_formats(board_store: Store) -> None:
    runner = CliRunner()
    db = ["--store", board_store.url]
    table = runner.invoke(app, ["leaderboard", *db], env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    assert "★ fast-cheap" in table.output and "  dominated" in table.output and "free" in table.output
    data = orjson.loads(runner.invoke(app, ["leaderboard", *db, "--format", "json", "--suite", "rag"]).output)
    assert {r["suite"] for r in data["rows"]} == {"rag"} and len(data["rows"]) == 4
    quick = orjson.loads(
        runner.invoke(app, ["leaderboard", *db, "-f", "json", "--sort", "ttft", "-s", "coding"]).output
    )
    assert quick["rows"][0]["endpoint"] == "fast-cheap"
    front = orjson.loads(runner.invoke(app, ["leaderboard", *db, "-f", "json", "--pareto", "-s", "overall"]).output)
    assert {r["endpoint"] for r in front["rows"]} == {"fast-cheap", "slow-good", "local-free"}
    good = runner.invoke(app, ["leaderboard", *db, "-f", "csv", "--min-quality", "85%"])
    assert {row["endpoint"] for row in csv.DictReader(io.StringIO(good.output))} == {"slow-good"}
    assert runner.invoke(app, ["leaderboard", *db, "-f", "markdown"]).output.startswith("| endpoint |")
    bad = runner.invoke(app, ["leaderboard", *db, "--suite", "poetry"])
    assert bad.exit_code == 2 and "suites in the selection: overall, coding, rag" in bad.output


def test_cli_recommend(board_store: Store, tmp_path) -> None:
    runner = CliRunner()
    db = ["--store", board_store.url]
    ok = runner.invoke(app, ["recommend", *db, "--mix", "coding=0.5,rag=0.5", "--min-quality", "0.55"])
    assert ok.exit_code == 0, ok.output
    assert "fastest for this mix: local-free" in ok.output and "quality 0.50 < 0.55" in ok.output
    as_json = orjson.loads(
        runner.invoke(app, ["recommend", *db, "-m", "coding", "--max-p95-ttft", "150ms", "-f", "json"]).output
    )
    assert as_json["best"] == "fast-cheap" and as_json["constraints"]["max_p95_ttft_ms"] == 150.0
    none = runner.invoke(app, ["recommend", *db, "-m", "coding", "--min-quality", "0.99"])
    assert none.exit_code == 1 and "none qualifies" in none.output and "closest candidates" in none.output
    unknown = runner.invoke(app, ["recommend", *db, "-m", "poetry=1"])
    assert unknown.exit_code == 2 and "valid suites: agent, chat, coding" in unknown.output
    empty = runner.invoke(app, ["recommend", "--store", str(tmp_path / "empty.db"), "-m", "chat"])
    assert empty.exit_code == 2 and "tokenrace demo" in empty.output


def test_gateway_runs_are_split_by_the_endpoint_that_answered(store: Store) -> None:
    """Live traffic: one gateway run holds requests answered by several upstreams, each priced on its own."""
    records = suite_records("gw", "cheap", {"chat": (100, 100, None)}, n=6)
    for i, record in enumerate(records):
        record.extra["request_id"] = f"gw-{i}"
    for record in records[3:]:
        record.endpoint = "premium"
    run = RunInfo(
        run_id="gw",
        started_at=time.time(),
        endpoint="gateway",
        workload="gateway",
        profile={"kind": "gateway"},
        config={
            "endpoints": {
                "cheap": {"name": "cheap", "model": "c", "price": {"input": 1.0, "output": 1.0}},
                "premium": {"name": "premium", "model": "p", "price": {"input": 10.0, "output": 10.0}},
            }
        },
        versions={},
        host={},
    )
    store.create_run(run)
    store.add_records(records)
    store.finish_run("gw", "complete", None, time.time())
    board = build_leaderboard(store, select_runs(store))
    rows = {r.endpoint: r for r in board.overall()}
    assert set(rows) == {"cheap", "premium"} and rows["cheap"].completed == rows["premium"].completed == 3
    assert rows["cheap"].usd_per_1k_requests == pytest.approx(151 * 1.0 / 1e6 * 1000)
    assert rows["premium"].usd_per_1k_requests == pytest.approx(151 * 10.0 / 1e6 * 1000)
    assert rows["cheap"].throughput_tps is None  # live traffic has no load level of its own
    assert rows["cheap"].quality is None  # no feedback yet

    # Feedback scores the calls: the latest score per request is its quality; calls without one do not count.
    ids = [r.extra["request_id"] for r in records]
    for request_id, score, at in ((ids[0], 0.0, 1.0), (ids[0], 1.0, 2.0), (ids[1], 0.5, 3.0), (ids[4], 0.25, 4.0)):
        store.add_feedback(request_id, score, None, at, run_id="gw")
    rows = {r.endpoint: r for r in build_leaderboard(store, select_runs(store)).overall()}
    assert (rows["cheap"].quality, rows["cheap"].quality_n) == (0.75, 2)
    assert (rows["premium"].quality, rows["premium"].quality_n) == (0.25, 1)
