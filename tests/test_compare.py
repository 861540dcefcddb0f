"""`tokenrace compare`: bootstrap intervals on hand-built runs with known differences, and the command.

Runs are built from lognormal noise with fixed seeds, so every assertion is deterministic; the sizes are
chosen so that a real 20% change is many standard errors away and a null comparison sits near the middle
of its interval.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tokenrace import compare as cmp
from tokenrace.cli import app
from tokenrace.compare import (
    BOOTSTRAP,
    RUN_LEVEL,
    TOO_FEW,
    UNDEFINED,
    Comparison,
    bootstrap_p_value,
    bootstrap_replicates,
    compare_records,
    compare_runs,
    describe_change,
    holm_rejections,
    parse_change,
    request_median_itl_ms,
)
from tokenrace.records import FAILED, OK, PHASE_WARMUP, RequestRecord, RunInfo
from tokenrace.store import Store, UnknownRunError

PRICED = {"endpoint": {"model": "m", "base_url": "http://127.0.0.1:9/v1", "price": {"input": 1.0, "output": 4.0}}}


def make_run(
    run_id: str, *, endpoint: str = "ep", workload: str = "synthetic:input=256,output=128", **kw: Any
) -> RunInfo:
    base: dict[str, Any] = {
        "run_id": run_id,
        "started_at": 1_700_000_000.0,
        "endpoint": endpoint,
        "workload": workload,
        "profile": {"kind": "concurrency", "concurrency": 4, "label": "concurrency 4, 200 requests"},
        "config": PRICED,
        "versions": {},
        "host": {},
        "status": "complete",
    }
    base.update(kw)
    return RunInfo(**base)


def make_records(
    run_id: str,
    n: int = 200,
    *,
    seed: int = 0,
    scale: float = 1.0,
    fail_rate: float = 0.0,
    quality: list[float] | None = None,
    warmup: int = 0,
    token_seed: int = 0,
) -> list[RequestRecord]:
    """``n`` measured requests (plus ``warmup``): lognormal TTFT (median 200 ms) and gaps (median 20 ms),
    50-150 tokens streamed one per event. ``scale`` stretches every request's timeline (TTFT, gaps, E2E).
    Output lengths come from ``token_seed``, so by default two runs ask for the same lengths, as two runs
    of one workload do, and only the timing noise differs."""
    rng = np.random.default_rng(seed)
    lengths = np.random.default_rng(token_seed)
    records = []
    for seq in range(n + warmup):
        sent = seq * 0.5
        record = RequestRecord(
            run_id=run_id,
            seq=seq,
            endpoint="ep",
            api="openai-chat",
            model="m",
            phase=PHASE_WARMUP if seq < warmup else "measure",
            scheduled_s=sent,
            sent_s=sent,
            usage_prompt_tokens=256,
            input_tokens_requested=256,
        )
        if rng.random() < fail_rate:
            record.status, record.error_category, record.done_s = FAILED, "http_5xx", sent + 0.05
            records.append(record)
            continue
        tokens = int(lengths.integers(50, 151))
        ttft = 0.2 * rng.lognormal(0.0, 0.3) * scale
        gaps = 0.02 * rng.lognormal(0.0, 0.3, size=tokens - 1) * scale
        times = sent + ttft + np.concatenate(([0.0], np.cumsum(gaps)))
        record.status = OK
        record.token_times_s = record.event_times_s = times.tolist()
        record.first_token_s = record.first_answer_s = float(times[0])
        record.last_token_s = float(times[-1])
        record.done_s = float(times[-1]) + 0.005 * scale
        record.usage_completion_tokens = record.client_output_tokens = tokens
        record.first_chunk_tokens = 1
        if quality is not None:
            record.suite, record.quality = "math", quality[(seq - warmup) % len(quality)]
        records.append(record)
    return records


def store_run(store: Store, info: RunInfo, records: list[RequestRecord]) -> None:
    store.create_run(info)
    store.add_records(records)
    store.finish_run(info.run_id, info.status, None, info.started_at + 100)


def flagged(comparison: Comparison) -> set[str]:
    return {m.key for m in comparison.metrics if m.flagged}


# --------------------------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("n", [1, 2, 5, 200, 1001])
def test_bootstrap_replicates_are_the_plain_statistics_of_each_resample(n, monkeypatch):
    """The partial-sort shortcut equals np.percentile / mean of the gathered resample, chunk by chunk."""
    monkeypatch.setattr(cmp, "CHUNK_BYTES", 7 * n * cmp._BYTES_PER_CELL)  # 7 resamples per chunk
    values = np.random.default_rng(3).lognormal(size=n)
    got = bootstrap_replicates(values, ["p50", "p95", "mean"], 100, np.random.default_rng(11))
    x, rng = np.sort(values), np.random.default_rng(11)
    for start in range(0, 100, 7):
        sample = x[rng.integers(0, n, size=(min(7, 100 - start), n), dtype=np.int32)]
        stop = start + sample.shape[0]
        np.testing.assert_allclose(got["p50"][start:stop], np.percentile(sample, 50, axis=1), rtol=1e-12)
        np.testing.assert_allclose(got["p95"][start:stop], np.percentile(sample, 95, axis=1), rtol=1e-12)
        np.testing.assert_allclose(got["mean"][start:stop], sample.mean(axis=1), rtol=1e-12)


def test_resample_chunks_stay_under_the_memory_bound_for_100k_requests():
    rows = max(1, cmp.CHUNK_BYTES // (cmp._BYTES_PER_CELL * 100_000))
    assert rows >= 10 and rows * 100_000 * cmp._BYTES_PER_CELL <= 50 * 2**20


@pytest.mark.parametrize("slice_events", [1, 250, 10**6])
def test_request_median_itl_is_each_requests_median_gap(slice_events, monkeypatch):
    monkeypatch.setattr(cmp, "_ITL_SLICE_EVENTS", slice_events)
    records = make_records("r", 30, seed=4, token_seed=4)
    records[3].token_times_s = [1.0]  # one event: no gap, left out
    records[4].token_times_s = records[4].token_times_s[:4]  # an even number of gaps: mean of the middle two
    expected = [statistics.median(np.diff(r.token_times_s) * 1000) for r in records if len(r.token_times_s) > 1]
    np.testing.assert_allclose(request_median_itl_ms(records), expected, rtol=1e-12)
    assert request_median_itl_ms([]).size == 0


def test_parse_change():
    assert parse_change("5%") == pytest.approx(0.05)
    assert parse_change("0.05") == pytest.approx(0.05)
    assert parse_change(" 12.5 % ") == pytest.approx(0.125)
    assert parse_change("0") == 0.0
    for bad in ("5", "-5%", "five", ""):
        with pytest.raises(ValueError):
            parse_change(bad)


# ------------------------------------------------------------------------------------------- verdicts


def test_a_real_20_percent_slowdown_is_a_significant_regression(store):
    store_run(store, make_run("20240101-000000-aaaaaa"), make_records("20240101-000000-aaaaaa", seed=1, warmup=5))
    store_run(store, make_run("20240102-000000-bbbbbb"), make_records("20240102-000000-bbbbbb", seed=2, scale=1.2))
    comparison = compare_runs(store, "20240101", "20240102")

    assert comparison.run_a.run_id == "20240101-000000-aaaaaa" and comparison.run_a.warmup == 5
    assert comparison.correction == "holm"
    for key in ("ttft_p50_ms", "e2e_p50_ms", "e2e_p95_ms", "tpot_p50_ms", "itl_p50_ms"):
        m = comparison.metric(key)
        assert m.method == BOOTSTRAP and m.significant and m.flagged and m.direction == "worse", m
        assert m.ci is not None and m.ci[0] > 0 and m.rel_ci is not None and m.rel_ci[0] > 0
        assert 0.08 < m.rel_diff < 0.35, m  # near +20%: different seeds, so not exactly
    # a p95 of 200 requests is the least powered figure: its own interval excludes 0 (p ≈ 0.01), but
    # after Holm's family-wise correction over 12 metrics it is not enough on its own
    p95 = comparison.metric("ttft_p95_ms")
    assert p95.ci is not None and p95.ci[0] > 0 and p95.p_value is not None and 0.001 < p95.p_value < 0.05
    uncorrected = compare_runs(store, "20240101", "20240102", correction="none").metric("ttft_p95_ms")
    assert uncorrected.flagged and uncorrected.direction == "worse"
    speed = comparison.metric("output_speed_p50_tps")
    assert speed.direction == "worse" and speed.diff < 0
    # one number per run: shown, never tested
    for key in ("requests_per_s", "output_tokens_per_s"):
        m = comparison.metric(key)
        assert m.method == RUN_LEVEL and m.a is not None and m.ci is None and not m.significant and not m.flagged
    assert comparison.metric("error_rate").direction == "unchanged"
    assert comparison.metric("quality_mean").method == UNDEFINED
    assert comparison.metric("cost_per_request_usd").method == BOOTSTRAP
    assert "regression" in comparison.verdict() and "TTFT p50 +" in comparison.verdict()
    assert not any("different" in note for note in comparison.notes)


def test_runs_from_one_distribution_are_flagged_at_about_the_nominal_rate():
    """False positives: 20 pairs of independent runs from the same distribution (seeds fixed, so the test
    is deterministic). Uncorrected, each tested metric should flag in ~5% of the pairs: we assert at most
    10% overall and at most 3 of 20 pairs for any one metric (binomial(20, 0.05) exceeds 3 with
    probability 1.6%); a biased interval (e.g. one that ignored the within-request correlation) fails.
    With Holm's correction (the default) a whole comparison should raise a false alarm in at most ~5% of
    pairs: at most 2 of 20 (binomial(20, 0.05) exceeds 2 with probability 7.5%; the seeds are fixed)."""
    counts: dict[str, int] = {}
    tested = 0
    alarms = 0
    for seed in range(20):
        a = make_records("a", 150, seed=1000 + seed, fail_rate=0.05, token_seed=1000 + seed)
        b = make_records("b", 150, seed=2000 + seed, fail_rate=0.05, token_seed=2000 + seed)
        raw = compare_records(make_run("a"), a, make_run("b"), b, resamples=1000, seed=seed, correction="none")
        for m in raw.metrics:
            if m.method == BOOTSTRAP:
                tested += 1
                counts[m.key] = counts.get(m.key, 0) + m.flagged
        corrected = compare_records(make_run("a"), a, make_run("b"), b, resamples=1000, seed=seed)
        alarms += any(m.flagged for m in corrected.metrics)
    assert tested == 20 * 12  # everything except quality (unscored) and the two run-level throughputs
    assert sum(counts.values()) <= 0.10 * tested, counts
    assert max(counts.values()) <= 3, counts
    assert alarms <= 2, alarms


def test_holm_step_down_on_hand_computed_p_values():
    # m = 4, alpha = 0.05: thresholds 0.0125, 0.0167, 0.025, 0.05 for the sorted p-values
    assert holm_rejections([0.01, 0.04, 0.03, 0.005], 0.05) == [True, False, False, True]
    assert holm_rejections([0.001, 0.01, 0.02, 0.04], 0.05) == [True, True, True, True]
    assert holm_rejections([0.02, 0.001], 0.05) == [True, True]
    assert holm_rejections([0.03, 0.03], 0.05) == [False, False]
    assert holm_rejections([], 0.05) == []
    assert bootstrap_p_value(np.array([1.0, 2.0, 3.0, -1.0])) == pytest.approx(3 / 5)
    assert bootstrap_p_value(np.ones(999)) == pytest.approx(1 / 1000)
    assert bootstrap_p_value(np.zeros(10)) == 1.0


def test_the_same_run_against_itself_flags_nothing(store):
    records = make_records("20240101-000000-aaaaaa", seed=5, fail_rate=0.1, quality=[1.0, 0.0, 1.0])
    store_run(store, make_run("20240101-000000-aaaaaa"), records)
    comparison = compare_runs(store, "20240101-000000-aaaaaa", "2024")
    assert flagged(comparison) == set()
    assert all(m.diff == 0 for m in comparison.metrics if m.diff is not None)
    assert all(m.ci[0] <= 0 <= m.ci[1] for m in comparison.metrics if m.ci is not None)
    assert comparison.verdict() == "no significant change"
    assert any("same run" in note for note in comparison.notes)


def test_a_quality_drop_from_90_to_60_percent_is_flagged_worse():
    a = make_records("a", 100, seed=1, quality=[1.0] * 9 + [0.0])  # 90 of 100 pass
    b = make_records("b", 100, seed=2, quality=[1.0] * 6 + [0.0] * 4)  # 60 of 100 pass
    m = compare_records(make_run("a"), a, make_run("b"), b).metric("quality_mean")
    assert (m.a, m.b, m.n_a, m.n_b) == (pytest.approx(0.9), pytest.approx(0.6), 100, 100)
    assert m.significant and m.flagged and m.direction == "worse"
    assert m.ci is not None and m.ci[1] < -0.15 and m.ci[0] > -0.45  # SE of the difference ≈ 0.057


def test_the_interval_contains_the_true_difference_in_a_known_case():
    """TTFT medians are 200 ms and exactly 1.2 x 200 ms in the two populations: true Δ = 40 ms, Δ% = +20%."""
    a = make_records("a", 400, seed=21)
    b = make_records("b", 400, seed=22, scale=1.2)
    m = compare_records(make_run("a"), a, make_run("b"), b).metric("ttft_p50_ms")
    assert m.ci is not None and m.rel_ci is not None
    assert m.ci[0] < 40.0 < m.ci[1]
    assert m.rel_ci[0] < 0.2 < m.rel_ci[1]
    assert m.ci[1] - m.ci[0] < 40.0  # and it is informative: narrower than the effect


def test_min_change_keeps_a_small_significant_change_unflagged():
    a = make_records("a", 2000, seed=31)
    b = make_records("b", 2000, seed=31, scale=1.04)  # same noise, +4%: significant (z ≈ 3) but small
    strict = compare_records(make_run("a"), a, make_run("b"), b, resamples=500)
    lenient = compare_records(make_run("a"), a, make_run("b"), b, resamples=500, min_change=0.05)
    assert strict.metric("ttft_p50_ms").direction == "worse"
    m = lenient.metric("ttft_p50_ms")
    assert m.significant and not m.flagged and m.direction == "unchanged"
    assert lenient.regressions == [] and "below --min-change 5%" in lenient.verdict()


def test_an_error_rate_up_from_zero_is_flagged_in_percentage_points():
    a = make_records("a", 200, seed=41)
    b = make_records("b", 200, seed=42, fail_rate=0.2)
    m = compare_records(make_run("a"), a, make_run("b"), b).metric("error_rate")
    assert m.a == 0.0 and m.b > 0.1 and m.rel_diff is None and m.rel_ci is None
    assert m.direction == "worse"
    assert describe_change(m).startswith("error rate +") and " pp [" in describe_change(m)


def test_undefined_and_tiny_metrics_are_never_significant_and_differences_are_noted():
    a = make_records("a", 50, seed=1)
    b = make_records("b", 1, seed=2, quality=[1.0])
    for r in a:
        r.first_answer_s = None  # reasoning-only answers: no TTFAT
    comparison = compare_records(make_run("a"), a, make_run("b", endpoint="other", workload="suite:math", config={}), b)
    assert comparison.metric("ttfat_p50_ms").method == UNDEFINED and comparison.metric("ttfat_p50_ms").a is None
    assert comparison.metric("quality_mean").method == UNDEFINED
    ttft = comparison.metric("ttft_p50_ms")
    assert ttft.method == TOO_FEW and ttft.diff is not None and ttft.ci is None
    assert comparison.metric("cost_per_request_usd").method == UNDEFINED
    assert flagged(comparison) == set()
    notes = "\n".join(comparison.notes)
    assert "different endpoints: ep vs other" in notes
    assert "different workloads: synthetic:input=256,output=128 vs suite:math" in notes
    assert "quality: only run B is scored" in notes
    assert "cost: run B has no price" in notes
    assert "only 1 completed requests" in notes


def test_same_seed_gives_the_same_intervals():
    a, b = make_records("a", 100, seed=1), make_records("b", 100, seed=2)
    first = compare_records(make_run("a"), a, make_run("b"), b, resamples=300, seed=7).as_dict()
    again = compare_records(make_run("a"), a, make_run("b"), b, resamples=300, seed=7).as_dict()
    other = compare_records(make_run("a"), a, make_run("b"), b, resamples=300, seed=8).as_dict()
    assert first == again and first != other


def test_bad_parameters_are_value_errors():
    a = make_records("a", 10)
    for kwargs in ({"resamples": 10}, {"confidence": 95.0}, {"min_change": -0.1}):
        with pytest.raises(ValueError):
            compare_records(make_run("a"), a, make_run("a"), a, **kwargs)


# ------------------------------------------------------------------------------------------------- CLI

runner = CliRunner()


@pytest.fixture
def two_runs(tmp_path) -> str:
    path = str(tmp_path / "t.db")
    with Store.open(path) as db:
        store_run(db, make_run("20240101-000000-aaaaaa"), make_records("20240101-000000-aaaaaa", seed=1))
        store_run(db, make_run("20240102-000000-bbbbbb"), make_records("20240102-000000-bbbbbb", seed=2, scale=1.2))
    return path


def test_cli_table_names_both_runs_and_the_regressions(two_runs):
    result = runner.invoke(app, ["compare", "20240101", "20240102", "--store", two_runs, "--resamples", "500"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("20240101-000000-aaaaaa", "20240102-000000-bbbbbb", "TTFT p50", "worse", "one value per run"):
        assert text in out
    assert "significant regressions: TTFT p50 +" in " ".join(out.split())


def test_cli_json_and_markdown(two_runs):
    result = runner.invoke(app, ["compare", "20240101", "20240102", "--store", two_runs, "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["run_a"]["run_id"] == "20240101-000000-aaaaaa" and doc["resamples"] == 2000
    assert "ttft_p50_ms" in doc["regressions"] and doc["verdict"].startswith(f"{len(doc['regressions'])} significant")
    ttft = next(m for m in doc["metrics"] if m["key"] == "ttft_p50_ms")
    assert ttft["direction"] == "worse" and len(ttft["ci"]) == 2 and math.isfinite(ttft["rel_diff"])

    md = runner.invoke(app, ["compare", "20240101", "20240102", "--store", two_runs, "--format", "markdown"])
    assert md.exit_code == 0 and "| TTFT p50 (ms) |" in md.stdout and "**worse**" in md.stdout


def test_cli_fail_on_regression_exits_1_only_on_a_regression(two_runs):
    args = ["--store", two_runs, "--resamples", "300", "--fail-on-regression"]
    assert runner.invoke(app, ["compare", "20240101", "20240102", *args]).exit_code == 1
    assert runner.invoke(app, ["compare", "20240102", "20240101", *args]).exit_code == 0  # faster: improvement
    assert runner.invoke(app, ["compare", "20240101", "20240101", *args]).exit_code == 0
    # a 20% change is not flagged under a 50% practical threshold
    assert runner.invoke(app, ["compare", "20240101", "20240102", *args, "--min-change", "50%"]).exit_code == 0


def test_cli_user_errors_exit_2(two_runs, tmp_path):
    unknown = runner.invoke(app, ["compare", "20240101", "nope", "--store", two_runs])
    assert unknown.exit_code == 2 and "no run matches 'nope'" in unknown.stderr
    assert "20240102-000000-bbbbbb" in unknown.stderr  # the store's message lists the latest runs
    empty = runner.invoke(app, ["compare", "a", "b", "--store", str(tmp_path / "empty.db")])
    assert empty.exit_code == 2 and "tokenrace bench" in empty.stderr
    for bad in (["--min-change", "5"], ["--format", "html"], ["--confidence", "95"]):
        result = runner.invoke(app, ["compare", "20240101", "20240102", "--store", two_runs, *bad])
        assert result.exit_code == 2, (bad, result.output)


def test_unknown_run_error_propagates_from_compare_runs(store):
    with pytest.raises(UnknownRunError, match="tokenrace bench"):
        compare_runs(store, "x", "y")
