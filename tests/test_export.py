"""export_run: every format carries every record field and reads back with the usual tools."""

from __future__ import annotations

import builtins
import csv
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tokenrace import records as rec
from tokenrace.export import FORMATS, export_run
from tokenrace.records import RequestRecord, RunInfo
from tokenrace.store import Store, UnknownRunError

FIELDS = [f.name for f in dataclasses.fields(RequestRecord)]


def _records(run_id: str, n: int) -> list[RequestRecord]:
    out = []
    for seq in range(n):
        ok = seq % 4 != 3
        r = RequestRecord(
            run_id=run_id,
            seq=seq,
            endpoint="ep",
            api="openai-chat",
            model="m",
            phase=rec.PHASE_WARMUP if seq < 2 else rec.PHASE_MEASURE,
            status=rec.OK if ok else rec.FAILED,
            scheduled_s=seq / 3,
        )
        if ok:
            r.first_token_s = seq / 3 + 0.1 + 0.2
            r.event_times_s = [seq / 3 + k / 7 for k in range(1, 65)]
            r.token_times_s = r.event_times_s[1:]
            r.output_text = f'réponse n°{seq} 🚀, with "quotes", commas\nand a newline'
            r.usage_completion_tokens = 64
            r.tool_calls = [{"function": {"name": "f", "arguments": "{}"}}] if seq % 5 == 0 else []
            r.server_timings = {"predicted_per_second": 41.5}
        else:
            r.error_category = rec.ERR_HTTP_5XX
            r.http_status = 503
        r.extra = {"prompt_id": f"p{seq}", "ids": [seq]}
        out.append(r)
    return out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(str(tmp_path / "runs.db")) as store:
        info = RunInfo(
            run_id="20240501-120000-abcd",
            started_at=1_714_564_800.5,
            endpoint="ep",
            workload="chat",
            profile={"kind": "constant", "rate": 2.0},
            config={"model": "m"},
            versions={"tokenrace": "0.1.0"},
            host={"hostname": "h"},
        )
        store.create_run(info)
        store.add_records(_records(info.run_id, 40))
        store.finish_run(info.run_id, "complete", {"ok": 30, "failed": 10}, finished_at=1_714_564_860.25)
        yield store


def test_json(store: Store, tmp_path: Path) -> None:
    path = export_run(store, "20240501", tmp_path / "out.json")
    data = orjson.loads(path.read_bytes())
    assert data["run"]["run_id"] == "20240501-120000-abcd"
    assert data["run"]["summary"] == {"ok": 30, "failed": 10}
    assert data["run"]["status"] == "complete"
    assert len(data["requests"]) == 40
    first = data["requests"][0]
    assert list(first) == FIELDS
    assert RequestRecord(**first) == store.records("20240501-120000-abcd")[0]
    assert data["requests"][3]["error_category"] == "http_5xx"
    assert b"\n  " in path.read_bytes()  # indented for humans


def test_csv(store: Store, tmp_path: Path) -> None:
    path = export_run(store, "20240501-120000-abcd", tmp_path / "out.CSV")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40
    assert list(rows[0]) == FIELDS
    original = store.records("20240501-120000-abcd")
    assert rows[0]["output_text"] == original[0].output_text
    assert float(rows[1]["first_token_s"]) == original[1].first_token_s  # exact
    assert orjson.loads(rows[1]["event_times_s"]) == original[1].event_times_s
    assert orjson.loads(rows[0]["extra"]) == {"prompt_id": "p0", "ids": [0]}
    assert rows[3]["status"] == "failed" and rows[3]["http_status"] == "503"
    assert rows[3]["first_token_s"] == ""  # None


def test_parquet(store: Store, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = export_run(store, "20240501-120000-abcd", tmp_path / "out.bin", fmt="parquet")
    table = pq.read_table(path)
    assert table.num_rows == 40
    assert table.column_names == FIELDS
    assert table.schema.field("event_times_s").type == pa.list_(pa.float64())
    assert table.schema.field("scheduled_s").type == pa.float64()
    assert table.schema.field("http_status").type == pa.int64()
    assert table.schema.field("extra").type == pa.string()
    original = store.records("20240501-120000-abcd")
    rows = table.to_pylist()
    assert rows[1]["event_times_s"] == original[1].event_times_s
    assert rows[3]["first_token_s"] is None
    assert orjson.loads(rows[0]["tool_calls"]) == original[0].tool_calls
    assert orjson.loads(rows[0]["server_timings"]) == {"predicted_per_second": 41.5}
    assert rows[3]["server_timings"] is None
    run = orjson.loads(table.schema.metadata[b"tokenrace.run"])
    assert run["run_id"] == "20240501-120000-abcd" and run["finished_at"] == 1_714_564_860.25


def test_format_from_suffix_and_errors(store: Store, tmp_path: Path) -> None:
    for fmt in FORMATS:
        assert export_run(store, "2024", tmp_path / f"x.{fmt}").exists()
    with pytest.raises(ValueError, match="json, csv, parquet"):
        export_run(store, "2024", tmp_path / "x.xlsx")
    with pytest.raises(ValueError, match="json, csv, parquet"):
        export_run(store, "2024", tmp_path / "x.json", fmt="yaml")
    with pytest.raises(UnknownRunError):
        export_run(store, "nope", tmp_path / "y.json")
    assert not (tmp_path / "y.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_missing_pyarrow_says_what_to_install(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_pyarrow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] == "pyarrow":
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ImportError, match=r"pip install 'tokenrace\[parquet\]'"):
        export_run(store, "2024", tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()
