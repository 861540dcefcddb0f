"""The offline HTML report and its PNG charts: spec builders, escaping, the CLI, and a real headless browser."""

from __future__ import annotations

import itertools
import json
import os
import random
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tokenrace import charts, htmlreport
from tokenrace.bench import run_summary
from tokenrace.charts import ContextBucket, SweepStep
from tokenrace.cli import app
from tokenrace.leaderboard import OVERALL, Row
from tokenrace.records import FAILED, OK, PHASE_WARMUP, RequestRecord, RunInfo
from tokenrace.store import Store

CHROMIUM = "/usr/bin/chromium"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert(1)</script>"
CHART_IDS = [info.chart_id for info in htmlreport.CHARTS]

# --------------------------------------------------------------------------------------------------
# A store built from hand-made records: known timings, suites, prices, a sweep and monitor probes.


@dataclass(frozen=True)
class FakeEndpoint:
    name: str
    model: str
    config: dict[str, Any]  # the stored endpoint config (price, engine)
    ttft_s: float
    speed_tps: float
    quality: float  # chance that a scored answer is right


ENDPOINTS = (
    FakeEndpoint("fast-api", "gpt-4o-mini", {"price": {"input": 0.15, "output": 0.6}}, 0.30, 110.0, 0.80),
    FakeEndpoint("big-api", "gpt-4o", {"price": {"input": 2.5, "output": 10.0}}, 0.55, 70.0, 0.92),
    FakeEndpoint("local-llama", "qwen2.5-coder-0.5b", {"engine": "local"}, 0.12, 45.0, 0.45),
)
SUITES = ("chat", "math", "structured", "rag")
RAG_CONTEXTS = {"1k": 1000, "4k": 4000, "16k": 16000}


def make_record(
    run_id: str,
    seq: int,
    endpoint: FakeEndpoint,
    rng: random.Random,
    *,
    start_s: float,
    prompt_tokens: int = 200,
    output_tokens: int = 120,
    slowdown: float = 1.0,
    suite: str | None = None,
    prompt_id: str | None = None,
    failed: bool = False,
    phase: str = "measure",
) -> RequestRecord:
    """One streamed request with lognormal jitter around the endpoint's TTFT and decode speed."""
    sent = start_s
    if failed:
        return RequestRecord(
            run_id=run_id, seq=seq, endpoint=endpoint.name, api="openai-chat", model=endpoint.model,
            phase=phase, workload="w", status=FAILED, error_category="http_5xx", http_status=503,
            scheduled_s=sent, sent_s=sent, done_s=sent + 0.05, suite=suite,
            extra={"prompt_id": prompt_id} if prompt_id else {},
        )  # fmt: skip
    ttft = endpoint.ttft_s * slowdown * (1 + prompt_tokens / 8000) * rng.lognormvariate(0, 0.25)
    speed = endpoint.speed_tps / (1 + prompt_tokens / 40000) / slowdown**0.5 * rng.lognormvariate(0, 0.1)
    first = sent + ttft
    last = first + (output_tokens - 1) / speed
    quality = None
    if suite is not None:
        quality = 1.0 if rng.random() < endpoint.quality else 0.0
    return RequestRecord(
        run_id=run_id, seq=seq, endpoint=endpoint.name, api="openai-chat", model=endpoint.model, phase=phase,
        workload="w", status=OK, scheduled_s=sent, sent_s=sent, headers_s=sent + ttft / 2, first_token_s=first,
        first_answer_s=first, last_token_s=last, done_s=last + 0.003,
        token_times_s=[first, first + (last - first) / 3, first + 2 * (last - first) / 3, last],
        finish_reason="stop", output_text="ok", usage_prompt_tokens=prompt_tokens,
        usage_completion_tokens=output_tokens, client_output_tokens=output_tokens, first_chunk_tokens=1,
        input_tokens_requested=prompt_tokens, suite=suite, quality=quality,
        extra={"prompt_id": prompt_id} if prompt_id else {},
    )  # fmt: skip


def add_run(
    store: Store,
    endpoint: FakeEndpoint,
    run_id: str,
    started_at: float,
    records: list[RequestRecord],
    *,
    workload: str,
    profile: dict[str, Any] | None = None,
    status: str = "complete",
) -> RunInfo:
    run = RunInfo(
        run_id=run_id,
        started_at=started_at,
        endpoint=endpoint.name,
        workload=workload,
        profile={"kind": "concurrency", "concurrency": 4, "label": "concurrency 4", **(profile or {})},
        config={"endpoint": {"name": endpoint.name, "model": endpoint.model, **endpoint.config}, "args": {}},
        versions={"tokenrace": "0.1.0", "python": "3.11"},
        host={
            "hostname": "bench-box",
            "platform": "Linux-6.1-x86_64",
            "cpus": 16,
            "machine": "x86_64",
            "pid": started_at,
        },
    )
    store.create_run(run)
    store.add_records(records)
    summary = run_summary(run, records)
    store.finish_run(run_id, status, summary, started_at + 60)
    return run


def suite_run(
    store: Store, endpoint: FakeEndpoint, run_id: str, started_at: float, rng: random.Random, per_suite: int
) -> None:
    """A scored run of every suite; rag prompts come in three context buckets (``rag-4k-3``)."""
    records = []
    seq = 0
    for _ in range(2):  # warmup: never counted
        records.append(make_record(run_id, seq, endpoint, rng, start_s=seq * 0.1, phase=PHASE_WARMUP))
        seq += 1
    for suite in SUITES:
        for i in range(per_suite):
            bucket, prompt_tokens = list(RAG_CONTEXTS.items())[i % len(RAG_CONTEXTS)]
            rag = suite == "rag"
            records.append(
                make_record(
                    run_id, seq, endpoint, rng, start_s=seq * 0.2, suite=suite,
                    prompt_tokens=prompt_tokens if rag else 300, output_tokens=80 if rag else 150,
                    prompt_id=f"rag-{bucket}-{i}" if rag else f"{suite}-{i}", failed=(seq % 37 == 5),
                )
            )  # fmt: skip
            seq += 1
    add_run(store, endpoint, run_id, started_at, records, workload="suites:" + ",".join(SUITES))


def sweep_runs(store: Store, endpoint: FakeEndpoint, sweep_id: str, started_at: float, rng: random.Random) -> None:
    """A throughput sweep: the closed-loop max first, then rising rates (latency grows with load)."""
    steps: list[tuple[str, float | None, float]] = [("max-throughput", None, 3.0)]
    steps += [(str(i), rate, 1.0 + i * 0.4) for i, rate in enumerate((1.0, 3.0, 5.0, 7.0))]
    for index, (step, rate, slowdown) in enumerate(steps):
        run_id = f"{sweep_id}-s{index}"
        n = 30
        gap = 1.0 / rate if rate else 0.05
        records = [
            make_record(run_id, i, endpoint, rng, start_s=i * gap, slowdown=slowdown, output_tokens=100)
            for i in range(n)
        ]
        profile: dict[str, Any] = {"sweep": sweep_id, "sweep_step": step if rate is None else int(step)}
        if rate is not None:
            profile.update(kind="constant", rate=rate, target_rps=rate, label=f"constant {rate:g} req/s")
        add_run(
            store, endpoint, run_id, started_at + index * 70, records, workload="synthetic:input=256,output=100",
            profile=profile,
        )  # fmt: skip


def monitor_runs(
    store: Store, endpoint: FakeEndpoint, started_at: float, rng: random.Random, probes: int
) -> list[RunInfo]:
    """Small probe runs every 10 minutes, tagged like `tokenrace monitor`'s: every 7th one down, every 5th degraded."""
    runs = []
    for p in range(probes):
        run_id = f"mon-{endpoint.name}-{p:03d}"
        records = [
            make_record(
                run_id, i, endpoint, rng, start_s=i * 0.5, output_tokens=60,
                failed=p % 7 == 3 or (p % 5 == 1 and i == 0),
            )
            for i in range(3)
        ]  # fmt: skip
        profile = {"monitor": "test-monitor"}
        workload = "synthetic:input=64,output=60"
        runs.append(add_run(store, endpoint, run_id, started_at + p * 600, records, workload=workload, profile=profile))
    return runs


def build_store(store: Store, *, per_suite: int = 12, probes: int = 24, evil: bool = True) -> None:
    """The whole picture: suites for three endpoints (API, pricier API, free local), two sweeps, monitors."""
    rng = random.Random(7)
    now = time.time()
    endpoints = list(ENDPOINTS)
    if evil:
        endpoints.append(FakeEndpoint(EVIL, "<b>model</b>", {"price": {"input": 1.0, "output": 1.0}}, 0.4, 60.0, 0.6))
    for i, endpoint in enumerate(endpoints):
        suite_run(store, endpoint, f"run-{i}-suites", now - 20000 + i * 100, rng, per_suite)
    sweep_runs(store, ENDPOINTS[0], "sweep-a", now - 15000, rng)
    sweep_runs(store, ENDPOINTS[2], "sweep-b", now - 14000, rng)
    for endpoint in ENDPOINTS[:2]:
        monitor_runs(store, endpoint, now - probes * 600 - 60, rng, probes)


@pytest.fixture
def full_store(store: Store) -> Store:
    build_store(store)
    return store


@pytest.fixture(scope="module")
def router_eval_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`router eval --json` on a small outcome file (one subject's name is markup): the report's input."""
    rng = random.Random(5)
    folder = tmp_path_factory.mktemp("router-eval")
    lines = [json.dumps({"meta": {"weak": "small", "strong": "big"}})]
    for g, group in enumerate(["algebra", "biology", EVIL, "history", "law"]):
        for i in range(40):
            hard = rng.random() < 0.4
            prompt = f"{group} q{i}: " + (
                "why does it hold, step by step? " * rng.randint(8, 20) if hard else "name one"
            )
            weak = 0 if hard and rng.random() < 0.9 else 1
            lines.append(
                json.dumps({"id": f"{g}/{i}", "group": group, "prompt": prompt, "scores": {"small": weak, "big": 1}})
            )
    data = folder / "outcomes.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = folder / "router-eval.json"
    args = ["router", "eval", "--data", str(data), "-r", "length", "-r", "features", "--folds", "3", "--splits", "3"]
    args += ["--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def router_eval_doc(router_eval_file: Path) -> dict[str, Any]:
    return htmlreport.load_router_eval(router_eval_file)


def _row(endpoint: str, *, speed: float | None, price: float | None, quality: float | None = None) -> Row:
    return Row(
        endpoint=endpoint,
        suite=OVERALL,
        completed=10,
        output_speed_p50=speed,
        usd_per_1m_tokens=price,
        quality=quality,
        quality_ci95=(quality - 0.1, min(1.0, quality + 0.1)) if quality is not None else None,
        quality_n=10 if quality is not None else 0,
        price_source="config" if price is not None else "unknown: set price in tokenrace.yaml",
    )


def _layer_data(spec: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """The rows a layer draws after its `datum.front` filter (the only filter the point charts use)."""
    rows = spec["data"]["values"]
    transforms = spec["layer"][index].get("transform") or []
    if transforms == [{"filter": "datum.front"}]:
        rows = [r for r in rows if r["front"]]
    return rows


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    return struct.unpack(">II", data[16:24])


# --------------------------------------------------------------------------------------------------
# Spec builders (pure)


def test_pareto_front_keeps_exactly_the_undominated_points_in_x_order():
    points = [(0.0, 40.0), (1.0, 90.0), (2.0, 80.0), (5.0, 120.0), (5.0, 100.0), (0.5, 40.0)]
    # cheaper (min x) and faster (max y): (0.5, 40) is beaten by (0, 40); (2, 80) by (1, 90); (5, 100) by (5, 120)
    assert charts.pareto_front(points, maximize_x=False, maximize_y=True) == [0, 1, 3]
    assert charts.pareto_front([(1.0, 1.0), (1.0, 1.0)], maximize_x=True, maximize_y=True) == [0, 1]


def test_speed_price_line_joins_exactly_the_front_and_free_endpoints_are_on_the_axis():
    rows = [
        _row("free-local", speed=40.0, price=0.0),
        _row("cheap", speed=90.0, price=0.3),
        _row("dominated", speed=60.0, price=1.0),
        _row("fast", speed=150.0, price=8.0),
        _row("unpriced", speed=500.0, price=None),
    ]
    spec = charts.speed_price_chart(rows)
    assert spec is not None
    line, points = spec["layer"][0], spec["layer"][1]
    assert line["mark"]["type"] == "line" and points["mark"]["type"] == "point"
    front = sorted(_layer_data(spec, 0), key=lambda r: r["price"])
    assert [r["endpoint"] for r in front] == ["free-local", "cheap", "fast"]
    assert [r["endpoint"] for r in _layer_data(spec, 1)] == ["free-local", "cheap", "dominated", "fast"]
    free = next(r for r in spec["data"]["values"] if r["endpoint"] == "free-local")
    assert free["price"] == 0 and free["price_label"] == "free"
    x = points["encoding"]["x"]
    assert x["scale"]["type"] == "symlog" and x["scale"]["domain"][0] <= 0
    assert 0 in x["axis"]["values"] and "free" in x["axis"]["labelExpr"]
    assert "$ per 1M tokens" in x["title"] and "tok/s" in points["encoding"]["y"]["title"]


def test_colors_are_the_same_for_an_endpoint_in_every_chart():
    colors = charts.endpoint_colors(["b", "a", "c"])
    one = charts.speed_price_chart([_row("c", speed=1.0, price=1.0), _row("a", speed=2.0, price=2.0)], colors)
    two = charts.latency_cdf_chart({"c": [1.0, 2.0], "b": [3.0]}, "ttft", colors)
    assert one is not None and two is not None
    scale_one = one["layer"][1]["encoding"]["color"]["scale"]
    scale_two = two["layer"][1]["encoding"]["color"]["scale"]
    assert dict(zip(scale_one["domain"], scale_one["range"], strict=True)) == {"a": colors["a"], "c": colors["c"]}
    assert dict(zip(scale_two["domain"], scale_two["range"], strict=True)) == {"b": colors["b"], "c": colors["c"]}


def test_quality_chart_has_error_bars_from_the_ci_and_skips_unscored_endpoints():
    spec = charts.quality_speed_chart(
        [_row("a", speed=50.0, price=1.0, quality=0.8), _row("b", speed=80.0, price=1.0, quality=None)]
    )
    assert spec is not None
    (value,) = spec["data"]["values"]
    assert value["endpoint"] == "a" and value["ci_low"] == pytest.approx(0.7) and value["ci_high"] == pytest.approx(0.9)
    assert any(layer["mark"]["type"] == "rule" and "y2" in layer["encoding"] for layer in spec["layer"])
    assert charts.quality_speed_chart([_row("b", speed=80.0, price=1.0)]) is None


def test_cdf_downsampling_keeps_min_max_and_stays_monotone():
    rng = random.Random(1)
    values = [rng.expovariate(1 / 300) for _ in range(100_000)]
    points = charts.cdf_points(values, max_points=400)
    assert len(points) <= 400
    assert points[0] == (min(values), 1 / len(values))
    assert points[-1] == (max(values), 1.0)
    xs, ps = zip(*points, strict=True)
    assert all(a <= b for a, b in itertools.pairwise(xs))
    assert all(a < b for a, b in itertools.pairwise(ps))
    small = charts.cdf_points([3.0, 1.0, 2.0])
    assert small == [(1.0, 1 / 3), (2.0, 2 / 3), (3.0, 1.0)]
    assert charts.cdf_points([]) == []


def test_cdf_chart_stays_small_for_100k_requests_and_uses_a_log_axis_for_wide_ranges():
    rng = random.Random(2)
    spec = charts.latency_cdf_chart(
        {
            "a": [rng.lognormvariate(5, 1) for _ in range(100_000)],
            "b": [rng.lognormvariate(7, 0.5) for _ in range(500)],
        },
        "ttft",
    )
    assert spec is not None
    data = spec["layer"][1]["data"]["values"]
    assert len([d for d in data if d["endpoint"] == "a"]) <= charts.CDF_MAX_POINTS
    assert spec["layer"][1]["encoding"]["x"]["scale"]["type"] == "log"
    assert "ms" in spec["layer"][1]["encoding"]["x"]["title"]
    assert charts.latency_cdf_chart({"a": []}, "e2e") is None


def test_sweep_context_and_monitor_charts_from_plain_inputs():
    steps = [
        SweepStep("a", "s1", "max-throughput", "r0", None, 9.0, 900.0, 800.0, 1500.0, 4000.0),
        SweepStep("a", "s1", "0", "r1", 1.0, 1.0, 100.0, 200.0, 260.0, 1800.0),
    ]
    sweep = charts.sweep_chart(steps)
    assert sweep is not None and {v["metric"] for v in sweep["data"]["values"]} == {"p50", "p95"}
    assert "tok/s" in sweep["spec"]["encoding"]["x"]["title"]
    assert charts.sweep_chart([]) is None

    buckets = [
        ContextBucket("a", "1k", 1000.0, 5, 80.0, 200.0, 300.0),
        ContextBucket("a", "16k", 16000.0, 5, 60.0, 900.0, 1200.0),
    ]
    context = charts.context_chart(buckets)
    assert context is not None and {v["prompt_tokens"] for v in context["data"]["values"]} == {1000.0, 16000.0}
    assert charts.context_chart([]) is None

    t0 = 1_700_000_000.0
    points = [
        {
            "endpoint": "a",
            "started_at": t0 + 600 * i,
            "status": "ok",
            "ttft_p50_ms": 100.0 + i,
            "output_speed_p50": 50.0,
            "errors": 0,
        }
        for i in range(6)
    ]
    points.append(
        {
            "endpoint": "a",
            "started_at": t0 + 3600,
            "status": "failed",
            "ttft_p50_ms": None,
            "output_speed_p50": None,
            "errors": 3,
        }
    )
    monitor = charts.monitor_chart(points, rolling_window_s=1800)
    assert monitor is not None
    values = monitor["data"]["values"]
    assert sum(v["failed"] for v in values) == 2  # the failed probe, in both panels
    ttft = [v for v in values if v["panel"].startswith("TTFT") and not v["failed"]]
    assert ttft[-1]["median"] == pytest.approx(104.0)  # median of 103, 104, 105 (30 min trailing window)
    assert charts.monitor_chart([]) is None


def test_rolling_median_uses_a_trailing_window_and_skips_missing_values():
    times = [0.0, 10.0, 20.0, 30.0, 40.0]
    values = [1.0, None, 3.0, 100.0, 5.0]
    assert charts.rolling_median(times, values, 25.0) == [1.0, 1.0, 2.0, 51.5, 5.0]


# --------------------------------------------------------------------------------------------------
# The report from a store


def test_report_sections_have_stable_ids_and_escape_store_strings(full_store: Store, tmp_path: Path):
    data = htmlreport.collect_report(full_store)
    page = htmlreport.render_html(data)
    for chart_id in CHART_IDS:
        assert f'id="section-{chart_id}"' in page
        assert f'id="chart-{chart_id}" data-chart="{chart_id}"' in page
    assert 'id="section-leaderboard"' in page and "<details" in page
    assert page.count("bench-box") == 1  # one line per machine, not per run (each run has its own pid)
    # the endpoint name is user input: escaped in the HTML, unicode-escaped inside the JSON
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in page
    assert "<b>model</b>" not in page
    assert page.count("window.vegaEmbed = vegaEmbed") <= 1 and page.count('<script type="module">') == 2
    markup = page[: page.index("<script")]  # everything but the embedded data and libraries
    assert not any(ref in markup for ref in ("src=", "<link", "@import", "url(")), "external resource in the markup"
    assert len(page) < 2_000_000


def test_empty_charts_say_which_command_draws_them(store: Store):
    rng = random.Random(3)
    endpoint = ENDPOINTS[0]
    records = [make_record("plain", i, endpoint, rng, start_s=i * 0.1) for i in range(20)]
    add_run(store, endpoint, "plain", time.time() - 100, records, workload="synthetic:input=256,output=128")
    data = htmlreport.collect_report(store)
    specs = htmlreport.chart_specs(data)
    assert specs["ttft-cdf"] is not None and specs["sweep"] is None and specs["context"] is None
    page = htmlreport.render_html(data)
    assert 'id="chart-sweep" data-chart="sweep" data-empty="true"' in page
    assert "<code>tokenrace bench --sweep</code>" in page
    assert "<code>tokenrace bench --suite rag</code>" in page


def test_write_pngs_writes_a_valid_png_per_chart_with_data(full_store: Store, tmp_path: Path):
    data = htmlreport.collect_report(full_store)
    paths = htmlreport.write_pngs(data, tmp_path / "png")
    expected = [chart_id for chart_id, spec in htmlreport.chart_specs(data).items() if spec is not None]
    assert [p.name for p in paths] == [f"{chart_id}.png" for chart_id in expected]
    assert {"speed-price", "quality-speed", "ttft-cdf", "e2e-cdf", "sweep", "context"} <= set(expected)
    for path in paths:
        blob = path.read_bytes()
        width, height = _png_size(blob)
        assert width >= 600 and height >= 300 and len(blob) > 10_000, path.name


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli_report_writes_html_and_pngs(full_store: Store, tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "out" / "r.html"
    result = runner.invoke(
        app, ["report", "-o", str(out), "--png", str(tmp_path / "png"), "--store", full_store.url.split("///", 1)[1]]
    )
    assert result.exit_code == 0, result.output
    assert str(out.resolve()) in result.output.replace("\n", "")
    assert out.read_text().startswith("<!doctype html>")
    assert "speed-price.png" in result.output
    assert (tmp_path / "png" / "speed-price.png").read_bytes()[:8] == PNG_SIGNATURE


def test_cli_report_selects_runs_by_id_and_endpoint(full_store: Store, tmp_path: Path):
    runner = CliRunner()
    db = full_store.url.split("///", 1)[1]
    out = tmp_path / "one.html"
    result = runner.invoke(app, ["report", "run-0-suites", "-o", str(out), "--store", db])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert 'data-endpoint="fast-api"' in page and 'data-endpoint="big-api"' not in page
    result = runner.invoke(
        app, ["report", "-o", str(out), "--endpoints", "big-api,local-llama", "--since", "7d", "--store", db]
    )
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert 'data-endpoint="big-api"' in page and 'data-endpoint="fast-api"' not in page


def test_cli_report_on_an_empty_store_says_what_to_run(tmp_path: Path):
    result = CliRunner().invoke(app, ["report", "-o", str(tmp_path / "r.html"), "--store", str(tmp_path / "empty.db")])
    assert result.exit_code == 2
    assert "tokenrace bench" in result.output and "tokenrace demo" in result.output
    assert not (tmp_path / "r.html").exists()


def test_cli_report_unknown_run_id_is_the_stores_message(full_store: Store, tmp_path: Path):
    db = full_store.url.split("///", 1)[1]
    result = CliRunner().invoke(app, ["report", "no-such-run", "-o", str(tmp_path / "r.html"), "--store", db])
    assert result.exit_code == 2
    assert "no run matches 'no-such-run'" in " ".join(result.output.split())


def test_cli_report_bad_since_is_a_user_error(full_store: Store, tmp_path: Path):
    db = full_store.url.split("///", 1)[1]
    result = CliRunner().invoke(app, ["report", "--since", "soon", "-o", str(tmp_path / "r.html"), "--store", db])
    assert result.exit_code == 2 and "--since" in result.output


# --------------------------------------------------------------------------------------------------
# Routing: router evaluations in the report


def test_routing_section_shows_curves_table_and_split_escaped(
    full_store: Store, router_eval_doc: dict[str, Any]
) -> None:
    data = htmlreport.collect_report(full_store)
    page = htmlreport.render_html(data, routing=[router_eval_doc])
    assert 'id="section-routing"' in page and 'id="chart-routing" data-chart="routing"' in page
    for router in ("length", "features", "random", "subject-oracle", "oracle", "always-weak", "always-strong"):
        assert f'data-router="{router}"' in page
    for text in ("APGR", "CPT(50%)", "CPT(80%)", "3 folds, mean ± std", "test fraction 0.2, seed 0", "outcomes.jsonl"):
        assert text in page
    # the repeated-splits columns: the features router's mean ± std over the 3 splits, as the JSON has it
    assert "3 splits, mean ± std" in page and "3 splits, mean" in page
    features = next(r for r in router_eval_doc["splits"]["rows"] if r["router"] == "features")
    assert f"{features['apgr']['mean']:.4f} ± {features['apgr']['std']:.4f}" in page
    assert "weak <code>small</code>, strong <code>big</code>" in page
    specs = htmlreport.routing_specs([router_eval_doc])
    assert specs["routing"] is not None
    assert {v["router"] for v in specs["routing"]["data"]["values"]} == set(router_eval_doc["held_out"]["curves"])
    # the subject name is user input: escaped in the split line, and never raw anywhere
    assert EVIL not in page and page.count('<script type="module">') == 2
    held_out_subjects = router_eval_doc["held_out"]["test"]["subjects"]
    if EVIL in held_out_subjects:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    without = htmlreport.render_html(data)
    assert 'id="section-routing"' not in without


def test_cli_report_with_router_eval_writes_the_section_and_its_png(
    full_store: Store, router_eval_file: Path, tmp_path: Path
) -> None:
    db = full_store.url.split("///", 1)[1]
    out = tmp_path / "r.html"
    args = ["report", "-o", str(out), "--store", db, "--router-eval", str(router_eval_file), "--png", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 router evaluation" in result.output
    assert 'id="chart-routing"' in out.read_text()
    width, _ = _png_size((tmp_path / "routing.png").read_bytes())
    assert width >= 600

    # no run in the store: the routing section alone, not an error
    empty = CliRunner().invoke(
        app, ["report", "-o", str(out), "--store", str(tmp_path / "e.db"), "--router-eval", str(router_eval_file)]
    )
    assert empty.exit_code == 0, empty.output
    assert "no run selected" in empty.output
    page = out.read_text()
    assert 'id="chart-routing"' in page and 'id="section-leaderboard"' not in page

    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}', encoding="utf-8")
    refused = CliRunner().invoke(app, ["report", "-o", str(out), "--store", db, "--router-eval", str(bad)])
    assert refused.exit_code == 2 and "not a `tokenrace router eval --json FILE` result" in refused.output


# --------------------------------------------------------------------------------------------------
# A real browser


def _chromium_or_skip() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("TOKENRACE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and TOKENRACE_REQUIRE_BROWSER=1 (`make test` installs it)")
        pytest.skip(f"{CHROMIUM} not installed")


@pytest.mark.slow
def test_report_renders_every_chart_offline_in_headless_chromium(
    full_store: Store, router_eval_doc: dict[str, Any], tmp_path: Path
):
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    data = htmlreport.collect_report(full_store)
    routing = [router_eval_doc]
    specs = {**htmlreport.chart_specs(data), **htmlreport.routing_specs(routing)}
    path = tmp_path / "report.html"
    path.write_text(htmlreport.render_html(data, routing), encoding="utf-8")
    url = path.resolve().as_uri()
    alone = tmp_path / "routing.html"  # `router eval --html`: the routing section as its own page
    alone.write_text(htmlreport.render_routing_html(routing), encoding="utf-8")
    alone_url = alone.resolve().as_uri()

    console_errors: list[str] = []
    page_errors: list[str] = []
    requests: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(url, wait_until="load")
            page.wait_for_function("document.body.dataset.chartsDone === 'true'", timeout=20_000)

            for chart_id, spec in specs.items():
                chart = page.locator(f"#chart-{chart_id}")
                assert chart.count() == 1, chart_id
                if spec is None:
                    assert chart.get_attribute("data-empty") == "true"
                    continue
                assert chart.get_attribute("data-rendered") == "true", chart_id
                marks = chart.locator("svg .mark-symbol path, svg .mark-line path, svg .mark-rule line").count()
                assert marks > 0, chart_id
            assert specs["monitor"] is not None and specs["routing"] is not None
            curves = router_eval_doc["held_out"]["curves"]
            singles = [name for name, (share, _) in curves.items() if len(share) == 1]  # always-weak, always-strong
            assert page.locator("#chart-routing svg .mark-line path").count() == len(curves) - len(singles)
            assert page.locator("#chart-routing svg .mark-symbol.role-mark path").count() == len(singles)
            # a row per curve, and the subject-oracle's row (a table baseline, not drawn)
            assert "subject-oracle" not in curves
            assert page.locator("#section-routing tr[data-router]").count() == len(curves) + 1
            assert page.locator("#chart-speed-price svg .mark-line path").count() == 1  # the Pareto line
            assert page.locator("#chart-ttft-cdf svg .mark-line path").count() == len(ENDPOINTS) + 1
            assert page.locator("details.suite").count() == len(SUITES)
            assert page.evaluate("document.querySelectorAll('main script').length") == 0  # nothing injected
            assert page.locator("td.name", has_text=EVIL).count() >= 1  # shown as text

            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)

            page.goto(alone_url, wait_until="load")
            page.wait_for_function("document.body.dataset.chartsDone === 'true'", timeout=20_000)
            assert page.locator("#chart-routing").get_attribute("data-rendered") == "true"
            assert page.locator("#chart-routing svg .mark-line path").count() == len(curves) - len(singles)
        finally:
            browser.close()

    assert console_errors == [] and page_errors == [] and dialogs == []
    assert requests == [url, alone_url], requests
    width, height = _png_size(shot.read_bytes())
    assert width >= 1000 and height > 3000 and shot.stat().st_size > 100_000


def test_gateway_traffic_is_charted_under_the_endpoints_that_answered(store: Store) -> None:
    """A gateway run is labelled "gateway"; its CDFs and legend use the upstreams its requests went to."""
    rng = random.Random(7)
    cheap = FakeEndpoint("cheap", "c", {}, 0.1, 90.0, 0.5)
    premium = FakeEndpoint("premium", "p", {}, 0.4, 40.0, 0.9)
    records = [make_record("gw", i, cheap if i % 2 else premium, rng, start_s=i * 0.1) for i in range(20)]
    run = RunInfo(
        run_id="gw", started_at=time.time(), endpoint="gateway", workload="gateway", profile={"kind": "gateway"},
        config={"endpoints": {"cheap": {"name": "cheap", "model": "c"}, "premium": {"name": "premium", "model": "p"}}},
        versions={}, host={},
    )  # fmt: skip
    store.create_run(run)
    store.add_records(records)
    store.finish_run("gw", "complete", None, time.time())
    data = htmlreport.collect_report(store)
    assert set(data.ttft_ms) == set(data.e2e_ms) == {"cheap", "premium"}
    assert data.endpoints() == ["cheap", "premium"]
    assert {r.endpoint for r in data.leaderboard.overall()} == {"cheap", "premium"}
