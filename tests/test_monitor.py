"""The monitor: scheduled probes against real emulator processes, outages as data, rolling medians."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tokenrace.bench import run_summary
from tokenrace.config import EndpointConfig, Timeouts
from tokenrace.monitor import (
    DEGRADED,
    DOWN,
    INCOMPLETE,
    UP,
    FreshWorkload,
    RoundReport,
    SeriesPoint,
    monitor_series,
    next_slot,
    rolling_summary,
    run_monitor,
)
from tokenrace.records import RunInfo
from tokenrace.store import Store
from tokenrace.workloads import parse_workload

TOKENRACE = [sys.executable, "-m", "tokenrace"]
HOUR = 3600.0


def _run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*TOKENRACE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _closed_port() -> int:
    """A port nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """Accepts TCP connections (the kernel's backlog does) but never answers: a hung endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def _endpoint(name: str, base_url: str, **extra: object) -> EndpointConfig:
    return EndpointConfig(name=name, api="openai-chat", base_url=base_url, model="emulator", **extra)  # type: ignore[arg-type]


# --- probes against real processes ----------------------------------------------------------------


def test_two_rounds_store_fresh_probes_and_a_dead_endpoint_is_recorded_as_failed_probes(emulator, tmp_path):
    up = emulator(ttft_ms=5, itl_ms=1, tokens=16)
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    (tmp_path / "tokenrace.yaml").write_text(
        "endpoints:\n"
        f"  - {{name: up, api: openai-chat, base_url: '{up.base_url}', model: emulator}}\n"
        f"  - {{name: dead, api: anthropic-messages, base_url: '{dead}', model: m}}\n"
    )
    result = _run("monitor", "--every", "0.5s", "--count", "2", "--requests", "3", "--store", "t.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "t.db" in result.stdout and "round 2" in result.stdout and "unreachable" in result.stdout

    with Store.open(str(tmp_path / "t.db")) as db:
        runs = sorted(db.list_runs(limit=None), key=lambda r: r.started_at)
        by_endpoint = {name: [r for r in runs if r.endpoint == name] for name in ("up", "dead")}
        records = {r.run_id: db.records(r.run_id) for r in by_endpoint["up"]}
        points = monitor_series(db)

    assert [len(v) for v in by_endpoint.values()] == [2, 2]
    assert len({r.profile["monitor"] for r in runs}) == 1
    # the second round waited for its slot, half a second after the first round's: a run's own start may lag
    # its round's slot by a little on a busy machine, but back-to-back rounds would be ~0.1 s apart
    assert by_endpoint["up"][1].started_at - by_endpoint["up"][0].started_at >= 0.3
    # the live endpoint: ordinary complete bench runs, every prompt never sent before
    assert [r.status for r in by_endpoint["up"]] == ["complete", "complete"]
    assert all(r.summary["requests"]["completed"] == 3 for r in by_endpoint["up"])
    prompt_ids = [rec.extra["prompt_id"] for recs in records.values() for rec in recs]
    assert len(prompt_ids) == 6 and len({p.split("#")[1] for p in prompt_ids}) == 6
    # the dead one: a failed run per round, with the reason, and no requests
    for run in by_endpoint["dead"]:
        assert run.status == "failed"
        assert run.summary["probe_error"]["category"] == "connect"
        assert "unreachable" in run.summary["probe_error"]["detail"]
        assert run.summary["requests"]["completed"] == 0
    assert [p.outcome for p in points if p.endpoint == "dead"] == [DOWN, DOWN]
    assert [p.outcome for p in points if p.endpoint == "up"] == [UP, UP]
    trends = {t.endpoint: t for t in rolling_summary(points)}
    assert trends["dead"].availability == 0.0 and trends["up"].availability == 1.0


async def test_429s_and_cut_streams_are_recorded_as_categorised_errors(emulator, store):
    flaky = emulator(ttft_ms=2, itl_ms=1, tokens=8, faults={"429": 0.4, "cut": 0.4}, seed=7)
    result = await run_monitor([_endpoint("flaky", flaky.base_url)], store, parse_workload("synthetic:input=32,output=8"),
                               every_s=60, requests=12, count=1)  # fmt: skip
    [point] = result.points
    assert point.status == "complete" and point.outcome in (DEGRADED, DOWN)
    assert set(point.error_categories) == {"rate_limited", "stream_cut"}
    assert point.errors == sum(point.error_categories.values()) and point.completed + point.errors == 12
    [trend] = rolling_summary(monitor_series(store))
    assert trend.failed_requests == point.errors and trend.error_categories == point.error_categories


async def test_a_hung_endpoint_times_out_on_its_own_and_does_not_delay_the_others(emulator, store, hanging_port):
    up = emulator(ttft_ms=5, itl_ms=1, tokens=8)
    hung = _endpoint("hung", f"http://127.0.0.1:{hanging_port}/v1", timeouts=Timeouts(first_token_s=1.0))
    began = time.time()
    result = await run_monitor([hung, _endpoint("up", up.base_url)], store, parse_workload("synthetic:input=32,output=8"),
                               every_s=60, requests=2, count=1)  # fmt: skip
    runs = {r.endpoint: r for r in store.list_runs()}
    assert runs["up"].finished_at - began < 1.0  # finished while the hung one was still waiting
    assert runs["hung"].finished_at - began >= 2.0  # two requests, each given its 1 s
    points = {p.endpoint: p for p in result.points}
    assert points["hung"].outcome == DOWN and points["hung"].error_categories == {"timeout": 2}
    assert points["up"].outcome == UP


async def test_stop_between_rounds_ends_at_once_and_keeps_the_probes(emulator, store):
    up = emulator(ttft_ms=2, itl_ms=1, tokens=4)
    stop = asyncio.Event()
    rounds: list[RoundReport] = []

    def on_round(report: RoundReport) -> None:
        rounds.append(report)
        stop.set()  # as Ctrl-C / SIGTERM would, while the monitor waits an hour for the next round

    began = time.monotonic()
    result = await run_monitor([_endpoint("up", up.base_url)], store, parse_workload("synthetic:input=16,output=4"),
                               every_s=HOUR, requests=2, stop=stop, on_round=on_round)  # fmt: skip
    assert time.monotonic() - began < 10
    assert result.stopped and result.rounds == 1 and len(rounds) == 1
    assert [r.status for r in store.list_runs()] == ["complete"]


def test_an_overrunning_round_skips_the_slots_it_missed_instead_of_piling_up():
    assert next_slot(start=0, every_s=10, now=3, current=0) == 1  # on time: the next slot
    assert next_slot(start=0, every_s=10, now=10, current=0) == 1  # exactly due
    assert next_slot(start=0, every_s=10, now=25, current=0) == 3  # slots 1 and 2 missed: run at 30
    assert next_slot(start=0, every_s=10, now=25, current=2) == 3


def test_fresh_workload_changes_replayed_prompts_every_probe(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": f"p{i}", "prompt": f"question {i}"}) + b"\n" for i in range(2)))
    workload = FreshWorkload(parse_workload(f"jsonl:{path}"))
    first = [next(it) for it in [workload.requests()] for _ in range(4)]
    second = [next(it) for it in [workload.requests()] for _ in range(4)]
    texts = [r.prompt for r in first + second]
    assert len(set(texts)) == 8 and all(t.endswith(f"question {i % 2}") for i, t in enumerate(texts))
    assert len({r.prompt_id for r in first + second}) == 8 and first[0].prompt_id.startswith("p0#")
    synthetic = FreshWorkload(parse_workload("synthetic:input=64,output=8"))
    assert next(synthetic.requests()).prompt != next(synthetic.requests()).prompt
    with pytest.raises(ValueError, match="synthetic, chat or jsonl"):
        FreshWorkload(parse_workload("trace:" + str(_trace(tmp_path))))


def _trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text('{"timestamp": 0, "prompt": "hi"}\n')
    return path


# --- rolling medians, changes, windows (known answers) ---------------------------------------------


def _point(at: float, ttft: float | None, speed: float | None = 100.0, e2e: float | None = 1000.0,
           outcome: str = UP, endpoint: str = "a") -> SeriesPoint:  # fmt: skip
    down = outcome == DOWN
    return SeriesPoint(
        endpoint=endpoint, run_id=f"{endpoint}-{at}", monitor="m", workload="w", started_at=at,
        status="failed" if down else "complete", outcome=outcome, completed=0 if down else 5, errors=0,
        ttft_p50_ms=None if down else ttft, output_speed_p50=None if down else speed,
        e2e_p50_ms=None if down else e2e,
    )  # fmt: skip


def _history(latest_ttft: float, latest_speed: float = 100.0) -> list[SeriesPoint]:
    """Four earlier probes (TTFT 98, 100, 102, 100: median 100), an outage, a stopped probe, then the latest."""
    earlier = [_point(i * 3 * HOUR, t) for i, t in enumerate((98.0, 100.0, 102.0, 100.0))]
    return [
        *earlier,
        _point(13 * HOUR, None, outcome=DOWN),
        _point(14 * HOUR, 500.0, outcome=INCOMPLETE),  # Ctrl-C'd: ignored everywhere
        _point(15 * HOUR, latest_ttft, speed=latest_speed),
    ]


def test_rolling_medians_and_a_30_percent_ttft_jump_is_flagged():
    [trend] = rolling_summary(_history(130.0), 72 * HOUR)
    assert trend.ttft_p50_ms == 130.0
    assert trend.ttft_median_ms == 100.0  # median of 98, 100, 102, 100, 130
    assert trend.ttft_change_pct == pytest.approx(30.0)  # 130 vs the median (100) of the earlier probes
    assert trend.changed and trend.changed_metrics == ["ttft"]
    assert trend.output_speed_median == 100.0 and trend.output_speed_change_pct == 0.0
    assert trend.probes == 6 and trend.failed_probes == 1 and trend.availability == pytest.approx(5 / 6)
    assert trend.last_outcome == UP and trend.last_at == 15 * HOUR


def test_a_5_percent_ttft_change_is_not_flagged_but_a_speed_drop_is():
    [calm] = rolling_summary(_history(105.0), 72 * HOUR)
    assert calm.ttft_change_pct == pytest.approx(5.0) and not calm.changed
    [slower] = rolling_summary(_history(100.0, latest_speed=70.0), 72 * HOUR, alert_pct=20)
    assert slower.output_speed_change_pct == pytest.approx(-30.0) and slower.changed_metrics == ["output_speed"]
    [strict] = rolling_summary(_history(105.0), 72 * HOUR, alert_pct=4)
    assert strict.changed_metrics == ["ttft"]


def test_no_change_without_enough_earlier_probes():
    points = [_point(0, 100.0), _point(HOUR, 100.0), _point(2 * HOUR, 300.0)]
    [trend] = rolling_summary(points, 72 * HOUR)
    assert trend.ttft_change_pct is None and not trend.changed and trend.ttft_median_ms == 100.0
    [loose] = rolling_summary(points, 72 * HOUR, min_previous=2)
    assert loose.ttft_change_pct == pytest.approx(200.0) and loose.changed


def test_the_window_excludes_older_probes():
    old = [_point(0, 1000.0), _point(HOUR, 1000.0, outcome=DOWN)]
    recent = [_point(100 * HOUR + i * HOUR, t) for i, t in enumerate((100.0, 110.0, 120.0))]
    [trend] = rolling_summary([*old, *recent], 72 * HOUR)
    assert trend.probes == 3 and trend.failed_probes == 0 and trend.ttft_median_ms == 110.0
    [wide] = rolling_summary([*old, *recent], 200 * HOUR)
    assert wide.probes == 5 and wide.failed_probes == 1 and wide.ttft_median_ms == 115.0  # 100, 110, 120, 1000


def test_series_reads_probe_runs_in_the_window_and_skips_bench_runs(store):
    now = time.time()

    def stored(run_id: str, started_at: float, profile: dict) -> None:
        run = RunInfo(run_id=run_id, started_at=started_at, endpoint="a", workload="w", profile=profile,
                      config={}, versions={}, host={})  # fmt: skip
        store.create_run(run)
        store.finish_run(run_id, "complete", run_summary(run, []), started_at + 1)

    stored("old-probe", now - 100 * HOUR, {"monitor": "m1"})
    stored("probe", now - HOUR, {"monitor": "m1"})
    stored("other-monitor", now - HOUR / 2, {"monitor": "m2"})
    stored("bench", now - HOUR, {"kind": "synchronous"})
    assert [p.run_id for p in monitor_series(store)] == ["probe", "other-monitor"]
    assert [p.run_id for p in monitor_series(store, monitor="m1")] == ["probe"]
    everything = monitor_series(store, since_s=now - 200 * HOUR)
    assert [p.run_id for p in everything] == ["old-probe", "probe", "other-monitor"]
    assert monitor_series(store, endpoints=["b"]) == []
    assert monitor_series(store)[0].as_dict()["outcome"] == DOWN  # nothing completed


# --- command line ----------------------------------------------------------------------------------


def test_report_on_an_empty_store_says_what_to_run_first(tmp_path):
    result = _run("monitor", "--report", "--store", "empty.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no monitor probes" in result.stdout and "tokenrace monitor" in result.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "tokenrace.yaml").write_text(
        "endpoints:\n  - {name: alpha, api: openai-chat, base_url: 'http://127.0.0.1:1/v1', model: m}\n"
    )
    for args, expected in (
        (("--every", "soon"), "--every"),
        (("--endpoints", "alpah"), "alpha"),
        (("--alert", "lots"), "--alert"),
    ):
        result = _run("monitor", *args, "--count", "1", "--store", "t.db", cwd=tmp_path)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tmp_path / "t.db").exists()  # nothing starts before the input is checked
