"""The command line as a user drives it: real processes, real signals, a real store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokenrace.store import Store

TOKENRACE = [sys.executable, "-m", "tokenrace"]


def _run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*TOKENRACE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_bench_json_summary_has_every_documented_field_and_show_runs_export_work(emulator, tmp_path):
    emu = emulator(ttft_ms=5, itl_ms=1, tokens=16)
    out = tmp_path / "summary.json"
    result = _run(
        "bench", "--base-url", emu.base_url, "--model", "emulator", "-c", "4", "-n", "24", "--warmup", "4",
        "--slo", "ttft=500ms,tpot=50ms", "--json", str(out), "--store", "t.db", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    for key in ("run_id", "endpoint", "workload", "profile", "requests", "metrics", "throughput", "tokens", "errors"):
        assert key in summary
    assert summary["requests"] == {"completed": 24, "failed": 0, "incomplete": 0, "warmup": 4}
    for metric in ("ttft_ms", "output_speed_tps", "tpot_ms", "itl_ms", "e2e_ms", "schedule_lag_ms"):
        assert set(summary["metrics"][metric]) >= {"mean", "std", "min", "max", "p50", "p90", "p95", "p99", "p999"}
    assert summary["throughput"]["requests_per_s"] > 0 and summary["throughput"]["output_tokens_per_s"] > 0
    assert summary["tokens"]["server_output"] == summary["tokens"]["client_output"] == 24 * 16
    assert summary["goodput"]["good_requests"] == 24

    listing = _run("runs", "--store", "t.db", cwd=tmp_path)
    assert summary["run_id"] in listing.stdout
    shown = _run("show", summary["run_id"][:17], "--store", "t.db", "--json", cwd=tmp_path)
    assert json.loads(shown.stdout)["requests"] == summary["requests"]
    for suffix in ("json", "csv", "parquet"):
        exported = _run("export", summary["run_id"], "-o", f"run.{suffix}", "--store", "t.db", cwd=tmp_path)
        assert exported.returncode == 0, exported.stderr
        assert (tmp_path / f"run.{suffix}").stat().st_size > 0


@pytest.mark.slow
def test_sigint_mid_run_keeps_every_finished_record_and_marks_the_run_interrupted(emulator, tmp_path):
    emu = emulator(ttft_ms=10, itl_ms=20, tokens=20)  # ~0.4 s per request
    env = {**os.environ}
    process = subprocess.Popen(
        [*TOKENRACE, "bench", "--base-url", emu.base_url, "--model", "emulator", "-c", "4", "-n", "1000",
         "--store", "t.db", "--quiet"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    db_path = tmp_path / "t.db"
    deadline = time.monotonic() + 30
    seen = 0
    while time.monotonic() < deadline and seen < 8:
        time.sleep(0.2)
        if db_path.exists():
            with Store.open(str(db_path)) as db:
                runs = db.list_runs()
                seen = len(db.records(runs[0].run_id)) if runs else 0
    assert seen >= 8, "the run did not write records while running"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    with Store.open(str(db_path)) as db:
        run = db.list_runs()[0]
        records = db.records(run.run_id)
    assert run.status == "interrupted"
    assert len(records) >= seen
    # every request that was started has its record: finished ones ok, the four in flight incomplete
    assert [r.seq for r in records] == list(range(len(records)))
    statuses = [r.status for r in records]
    assert statuses.count("incomplete") == 4 and statuses.count("ok") == len(records) - 4


def test_unknown_endpoint_lists_the_known_ones(tmp_path):
    (tmp_path / "tokenrace.yaml").write_text(
        "endpoints:\n"
        "  - {name: alpha, api: openai-chat, base_url: 'http://127.0.0.1:1/v1', model: m}\n"
        "  - {name: beta, api: openai-chat, base_url: 'http://127.0.0.1:1/v1', model: m}\n"
    )
    result = _run("bench", "--endpoint", "gamma", cwd=tmp_path)
    assert result.returncode == 2
    assert "alpha" in result.stderr and "beta" in result.stderr and "Traceback" not in result.stderr


def test_unknown_workload_lists_the_valid_ones(tmp_path):
    result = _run("bench", "--base-url", "http://127.0.0.1:1/v1", "--model", "m", "-w", "poems", cwd=tmp_path)
    assert result.returncode == 2 and "synthetic" in result.stderr and "jsonl" in result.stderr


def test_unreachable_endpoint_is_one_clear_line_and_no_run(tmp_path):
    result = _run("bench", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--store", "t.db", cwd=tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unreachable" in lines[0], result.stderr
    with Store.open(str(tmp_path / "t.db")) as db:
        assert db.list_runs() == []


def test_config_error_names_file_line_and_field(tmp_path):
    (tmp_path / "tokenrace.yaml").write_text(
        "endpoints:\n  - name: a\n    api: openai-chat\n    base_url: http://127.0.0.1:1/v1\n    model: m\n"
        "    max_concurency: 3\n"
    )
    result = _run("bench", "--endpoint", "a", cwd=tmp_path)
    assert result.returncode == 2
    assert "tokenrace.yaml:6" in result.stderr and "max_concurency" in result.stderr


def _engine_children() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"tokenrace.engines._child" in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_bench_local_model_serves_measures_stores_and_leaves_no_engine_behind(tmp_path):
    before = _engine_children()
    out = tmp_path / "summary.json"
    result = _run(
        "bench", "--local", "smollm2-135m", "-w", "chat:output=24", "-c", "2", "-n", "6", "--warmup", "1",
        "--json", str(out), "--store", "t.db", "--quiet", cwd=tmp_path, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    assert summary["endpoint"] == "smollm2-135m"
    assert summary["requests"] == {"completed": 6, "failed": 0, "incomplete": 0, "warmup": 1}
    assert summary["server"]["decode_tps"]["count"] == 6
    with Store.open(str(tmp_path / "t.db")) as db:
        run = db.get_run(summary["run_id"])
    assert run.config["engine"]["model"] == "smollm2-135m" and run.config["engine"]["parallel"] == 4
    assert _engine_children() - before == set()


def test_unknown_local_model_lists_the_known_ones(tmp_path):
    result = _run("bench", "--local", "gpt-5", cwd=tmp_path)
    assert result.returncode == 2
    assert "smollm2-135m" in result.stderr and "qwen2.5-coder-0.5b" in result.stderr


@pytest.mark.slow
def test_demo_benchmarks_two_local_models_and_prints_a_leaderboard(tmp_path):
    before = _engine_children()
    result = _run("demo", "--sample", "1", "--suite", "chat,structured", "--store", "t.db", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "leaderboard" in result.stdout
    assert "smollm2-135m" in result.stdout and "qwen2.5-coder-0.5b" in result.stdout
    with Store.open(str(tmp_path / "t.db")) as db:
        runs = db.list_runs()
    assert sorted(r.endpoint for r in runs) == ["qwen2.5-coder-0.5b", "smollm2-135m"]
    assert all(r.status == "complete" and r.summary["requests"]["completed"] == 2 for r in runs)
    assert all(r.summary["quality"]["suites"]["structured"]["n"] == 1 for r in runs)
    assert _engine_children() - before == set()
    report = tmp_path / "tokenrace-report.html"
    assert f"HTML report (offline, one file): {report}" in result.stdout.replace("\n", "")
    html = report.read_text()
    assert 'data-chart="speed-price"' in html and "smollm2-135m" in html
