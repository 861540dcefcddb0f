"""Store and RecordWriter: exact round trips on SQLite and a real PostgreSQL, durability, messages."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tokenrace import records as rec
from tokenrace.records import RequestRecord, RunInfo
from tokenrace.store import (
    SCHEMA_VERSION,
    AmbiguousRunError,
    RecordWriter,
    RecordWriterError,
    Store,
    UnknownRunError,
)

TEXTS = [
    "",
    "Hello, world!",
    "Grüße aus Köln — ünïcödé ✓",
    "日本語のテキストと中文",
    "emoji 🚀🔥 \"quotes\" 'apostrophes'\nnew line\ttab",
    "back\\slash, {json: [1, 2]}, 100% _under_score",
]


def make_run(run_id: str, started_at: float = 1_700_000_000.123456) -> RunInfo:
    return RunInfo(
        run_id=run_id,
        started_at=started_at,
        endpoint="local-llama",
        workload="chat-short",
        profile={"kind": "poisson", "rate": 12.5, "duration_s": 60},
        config={"base_url": "http://127.0.0.1:8080/v1", "model": "qwen", "args": ["--rate", "12.5"]},
        versions={"tokenrace": "0.1.0", "python": "3.11.9"},
        host={"hostname": "bench-1", "cpus": 16, "note": "ünïcödé"},
    )


def make_records(run_id: str, n: int = 300, seed: int = 7) -> list[RequestRecord]:
    """A realistic mix: warmup and measure, ok/failed/incomplete, None, lists, dicts, unicode."""
    rng = random.Random(seed)
    out = []
    for seq in range(n):
        r = RequestRecord(
            run_id=run_id,
            seq=seq,
            endpoint="local-llama",
            api=rng.choice(["openai-chat", "anthropic-messages"]),
            model="qwen2.5-7b-instruct",
            phase=rec.PHASE_WARMUP if seq < 10 else rec.PHASE_MEASURE,
            workload="chat-short",
            scheduled_s=seq * 0.0831 + rng.random() / 3,
        )
        kind = rng.random()
        if kind < 0.7:
            r.status = rec.OK
            r.sent_s = r.scheduled_s + rng.random() * 1e-3
            r.headers_s = r.sent_s + 0.1 + 0.2  # 0.30000000000000004-style floats
            r.first_token_s = r.headers_s + rng.random() / 7
            r.first_answer_s = r.first_token_s if rng.random() < 0.5 else r.first_token_s + 0.37
            r.event_times_s = sorted(r.first_token_s + rng.random() * 5 for _ in range(rng.randint(1, 64)))
            r.token_times_s = r.event_times_s[:-1] or list(r.event_times_s)
            r.last_token_s = r.token_times_s[-1]
            r.done_s = r.event_times_s[-1] + 1e-6
            r.finish_reason = rng.choice(["stop", "length", "tool_calls", None])
            r.output_text = rng.choice(TEXTS) * rng.randint(1, 5)
            r.reasoning_text = rng.choice(["", "Let me think… ∑ x²"])
            if rng.random() < 0.2:
                r.tool_calls = [
                    {
                        "id": f"call_{seq}",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'},
                    }
                ]
            r.usage_prompt_tokens = rng.randint(10, 4000) if rng.random() < 0.8 else None
            r.usage_completion_tokens = rng.randint(1, 512) if r.usage_prompt_tokens else None
            r.usage_cached_tokens = rng.choice([None, 0, 128])
            r.usage_reasoning_tokens = rng.choice([None, 0, 37])
            r.client_output_tokens = rng.randint(1, 512)
            r.first_chunk_tokens = rng.randint(1, 3)
            r.http_status = 200
            if rng.random() < 0.3:
                r.server_timings = {"prompt_per_second": rng.random() * 5000, "predicted_n": 123}
        elif kind < 0.9:
            r.status = rec.FAILED
            r.error_category = rng.choice(rec.ERROR_CATEGORIES)
            r.error_detail = rng.choice(["HTTP 429: slow down", "Connection refused", "ошибка 🙁", None])
            r.http_status = rng.choice([None, 429, 500, 503])
            r.sent_s = r.scheduled_s + 0.001
            r.done_s = r.sent_s + rng.random()
        # else: left incomplete, every optional field None
        r.input_tokens_requested = rng.choice([None, 256, 1024])
        r.output_tokens_requested = rng.choice([None, 128])
        r.extra = {
            "prompt_id": f"p-{seq % 17}",
            "route": rng.choice(["a", "b"]),
            "nested": {"ids": [seq, seq + 1], "ok": True, "none": None},
            "extremes": [5e-324, 1.7976931348623157e308, -0.1, 2**53 + 1],
            "clé": "valeur",
        }
        out.append(r)
    return out


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(str(tmp_path / "runs.db"))
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "pg"])
def store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")


# --- round trips -----------------------------------------------------------------------------------


def _write_run(store: Store, run_id: str) -> tuple[RunInfo, list[RequestRecord]]:
    info = make_run(run_id)
    records = make_records(run_id)
    store.create_run(info)
    store.add_records(records[:150])
    store.add_records(records[150:])
    summary = {"ttft_p50_s": 0.1 + 0.2, "ok": 210, "by_error": {"timeout": 3}, "ratios": [1 / 3, 2 / 3]}
    store.finish_run(run_id, "complete", summary, finished_at=info.started_at + 61.000001)
    info.status, info.summary, info.finished_at = "complete", summary, info.started_at + 61.000001
    return info, records


def test_round_trip_sqlite_and_postgres_identical(sqlite_store: Store, pg_store: Store) -> None:
    results = {}
    for name, store in (("sqlite", sqlite_store), ("postgresql", pg_store)):
        info, records = _write_run(store, "run-2024-01-01-abc")
        back = store.records("run-2024-01-01-abc")
        assert back == records, name
        assert store.get_run("run-2024-01-01-abc") == info, name
        assert store.list_runs() == [info], name
        results[name] = (store.get_run("run-2024"), back)
    assert results["sqlite"] == results["postgresql"]
    # Equal is not enough for floats stored as text somewhere: check the exact bits and types.
    for a, b in zip(results["sqlite"][1], results["postgresql"][1], strict=True):
        assert repr(a) == repr(b)


def test_records_by_phase_in_seq_order(store: Store) -> None:
    _, records = _write_run(store, "r")
    warmup = store.records("r", phase=rec.PHASE_WARMUP)
    measure = store.records("r", phase=rec.PHASE_MEASURE)
    assert [r.seq for r in warmup] == list(range(10))
    assert [r.seq for r in measure] == list(range(10, len(records)))
    assert store.records("r", phase="nope") == []
    assert store.records("other") == []


def test_unrun_run_has_null_summary(store: Store) -> None:
    store.create_run(make_run("r"))
    got = store.get_run("r")
    assert got.status == "running" and got.summary is None and got.finished_at is None
    assert Store.is_incomplete(got)


def test_list_runs_newest_first_and_limit(store: Store) -> None:
    for i in range(5):
        store.create_run(make_run(f"run-{i}", started_at=1_700_000_000.0 + i))
    assert [r.run_id for r in store.list_runs()] == [f"run-{i}" for i in (4, 3, 2, 1, 0)]
    assert [r.run_id for r in store.list_runs(limit=2)] == ["run-4", "run-3"]


def test_finish_unknown_run_raises(store: Store) -> None:
    with pytest.raises(UnknownRunError):
        store.finish_run("ghost", "complete", None, finished_at=1.0)


# --- get_run messages ------------------------------------------------------------------------------


def test_get_run_empty_store_says_run_bench(store: Store) -> None:
    with pytest.raises(UnknownRunError, match="tokenrace bench"):
        store.get_run("abc")


def test_get_run_prefix_unknown_and_ambiguous(store: Store) -> None:
    for i, run_id in enumerate(["20240101-aaa", "20240101-abb", "20240202-ccc", "x_y"]):
        store.create_run(make_run(run_id, started_at=1_700_000_000.0 + i))
    assert store.get_run("20240202").run_id == "20240202-ccc"
    assert store.get_run("20240101-aa").run_id == "20240101-aaa"
    assert store.get_run("20240101-abb").run_id == "20240101-abb"

    with pytest.raises(AmbiguousRunError) as ambiguous:
        store.get_run("20240101")
    assert "20240101-aaa" in str(ambiguous.value) and "20240101-abb" in str(ambiguous.value)
    assert isinstance(ambiguous.value, LookupError)

    with pytest.raises(UnknownRunError) as unknown:
        store.get_run("1999")
    message = str(unknown.value)
    assert "1999" in message and "x_y" in message and "20240202-ccc" in message

    # LIKE wildcards in a prefix are literal.
    with pytest.raises(UnknownRunError):
        store.get_run("x%")
    assert store.get_run("x_").run_id == "x_y"
    with pytest.raises(UnknownRunError):
        store.get_run("2024_101")


# --- opening ---------------------------------------------------------------------------------------


def test_open_default_path_and_plain_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Store.open(None) as store:
        store.create_run(make_run("r"))
    assert (tmp_path / "tokenrace.db").exists()
    with Store.open(str(tmp_path / "sub" / "dir" / "x.db")) as store:
        assert store.url.startswith("sqlite:///")
    assert (tmp_path / "sub" / "dir" / "x.db").exists()
    with Store.open(f"sqlite:///{tmp_path / 'tokenrace.db'}") as store:
        assert store.get_run("r").run_id == "r"


def test_sqlite_uses_wal(sqlite_store: Store) -> None:
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


def test_postgresql_url_uses_psycopg3(pg_url: str) -> None:
    assert pg_url.startswith("postgresql://")
    with Store.open(pg_url) as store:
        assert store.engine.dialect.driver == "psycopg"
        assert store.url.startswith("postgresql+psycopg://")


def test_in_memory_store_is_shared_across_threads() -> None:
    with Store("sqlite://") as store:
        store.create_run(make_run("r"))
        with RecordWriter(store) as writer:
            for r in make_records("r", n=20):
                writer.put(r)
        assert len(store.records("r")) == 20


# --- schema evolution ------------------------------------------------------------------------------


def test_new_record_field_is_added_to_an_old_store(tmp_path: Path) -> None:
    """A store made before a field existed gains the column and reads old rows with the default."""
    path = str(tmp_path / "old.db")
    with Store.open(path) as store:
        store.create_run(make_run("r"))
        store.add_records(make_records("r", n=5))
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE requests DROP COLUMN extra")
            conn.exec_driver_sql("ALTER TABLE requests DROP COLUMN server_timings")
    with Store.open(path) as store:
        back = store.records("r")
        assert [r.extra for r in back] == [{}] * 5
        assert [r.server_timings for r in back] == [None] * 5
        assert [r.seq for r in back] == list(range(5))
        fresh = make_records("r", n=6)[5:]
        store.add_records(fresh)
        assert store.records("r")[5:] == fresh


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "new.db")
    with Store.open(path) as store, store.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="upgrade tokenrace"):
        Store.open(path)


# --- RecordWriter ----------------------------------------------------------------------------------


async def test_writer_from_asyncio_loop(store: Store) -> None:
    store.create_run(make_run("r"))
    records = make_records("r", n=1200)
    writer = RecordWriter(store, flush_interval_s=0.01)

    async def request(r: RequestRecord) -> None:
        await asyncio.sleep(random.random() / 100)
        writer.put(r)

    await asyncio.gather(*(request(r) for r in records[:700]))
    await asyncio.to_thread(writer.flush)
    assert len(store.records("r")) == 700
    for r in records[700:]:
        writer.put(r)
    await asyncio.to_thread(writer.close)
    assert sorted(store.records("r"), key=lambda r: r.seq) == records
    assert writer.written == 1200


def test_writer_writes_without_flush(sqlite_store: Store, tmp_path: Path) -> None:
    """Both triggers: a full batch, and the interval for a trickle."""
    sqlite_store.create_run(make_run("r"))
    records = make_records("r", n=25)
    with Store.open(str(tmp_path / "runs.db")) as reader:
        with RecordWriter(sqlite_store, flush_interval_s=60, batch_size=10) as writer:
            for r in records:
                writer.put(r)
            assert _wait_for(lambda: len(reader.records("r")) >= 20)
        assert len(reader.records("r")) == 25
        with RecordWriter(sqlite_store, flush_interval_s=0.02) as writer:
            for r in make_records("r", n=28)[25:]:
                writer.put(r)
            assert _wait_for(lambda: len(reader.records("r")) == 28)


def _wait_for(condition: object, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_writer_error_surfaces(store: Store) -> None:
    store.create_run(make_run("r"))
    records = make_records("r", n=3)
    writer = RecordWriter(store)
    writer.put(records[0])
    writer.flush()
    writer.put(records[0])  # duplicate primary key: the batch fails in the writer thread
    writer.put(records[1])
    with pytest.raises(RecordWriterError) as failed:
        writer.flush()
    assert isinstance(failed.value.__cause__, sa.exc.IntegrityError)
    assert "2 not" in str(failed.value)
    with pytest.raises(RecordWriterError):
        writer.put(records[2])
    with pytest.raises(RecordWriterError):
        writer.close()
    assert [r.seq for r in store.records("r")] == [0]


def test_writer_error_surfaces_from_context_exit(sqlite_store: Store) -> None:
    def broken(records: object) -> None:
        raise OSError("disk full")

    sqlite_store.add_records = broken  # type: ignore[method-assign]
    with pytest.raises(RecordWriterError, match="disk full"), RecordWriter(sqlite_store) as writer:
        writer.put(make_records("r", n=1)[0])


def test_put_after_close_raises(sqlite_store: Store) -> None:
    writer = RecordWriter(sqlite_store)
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        writer.put(make_records("r", n=1)[0])


def test_flushed_record_visible_to_another_connection_while_running(store: Store) -> None:
    """Durability: once flush() returns, another process (here another Store) can read it."""
    store.create_run(make_run("r"))
    record = make_records("r", n=1)[0]
    with RecordWriter(store, flush_interval_s=60) as writer:
        writer.put(record)
        writer.flush()
        with Store.open(store.url) as other:
            assert other.records("r") == [record]
            run = other.get_run("r")
            assert run.status == "running" and Store.is_incomplete(run)


def _open_and_close(path: str) -> None:
    Store.open(path).close()


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Creation checks then creates: losers of that race must retry, not fail (seen with bench + monitor)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for round_ in range(6):
        path = str(tmp_path / f"race{round_}.db")
        with context.Pool(4) as pool:
            pool.map(_open_and_close, [path] * 8)
        with Store.open(path) as db:
            assert db.list_runs() == []
