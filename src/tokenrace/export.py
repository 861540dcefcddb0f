"""Export one run to JSON, CSV or Parquet, so results can leave tokenrace for notebooks and sheets.

Every format carries every RequestRecord field under its own name; columns follow the dataclass (via
the store's field specs), so a new field is exported without a change here.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import orjson

from .records import RequestRecord, RunInfo
from .store import RECORD_FIELDS, FieldSpec, Store, json_dumps

__all__ = ["FORMATS", "export_run"]

FORMATS = ("json", "csv", "parquet")
_SUFFIXES = {".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_PARQUET_RUN_KEY = b"tokenrace.run"


def _format_for(path: Path, fmt: str | None) -> str:
    """Explicit fmt wins; otherwise the suffix decides, and a guess is never made."""
    valid = ", ".join(FORMATS)
    if fmt is not None:
        if fmt.lower() not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; valid formats: {valid}")
        return fmt.lower()
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise ValueError(
            f"cannot tell the export format from {path.name!r}; use a .json, .csv or .parquet "
            f"suffix or pass a format (valid formats: {valid})"
        )
    return found


def export_run(store: Store, run_id: str, path: str | Path, fmt: str | None = None) -> Path:
    """Write the run (id or unique prefix) and all its records to path; returns the path written.

    The file is written beside the target and renamed into place, so a failed export never leaves
    a truncated file that looks like a result.
    """
    path = Path(path)
    fmt = _format_for(path, fmt)
    run = store.get_run(run_id)
    records = store.records(run.run_id)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        _WRITERS[fmt](run, records, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_json(run: RunInfo, records: list[RequestRecord], path: Path) -> None:
    # orjson serialises (slots) dataclasses natively, field by field, with exact floats.
    options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    path.write_bytes(orjson.dumps({"run": run, "requests": records}, option=options))


def _csv_cell(spec: FieldSpec, value: Any) -> Any:
    if value is None:
        return ""
    if spec.base in (list, dict):
        return json_dumps(value)
    return value  # csv writes repr() of floats: exact round trip


def _write_csv(run: RunInfo, records: list[RequestRecord], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([s.name for s in RECORD_FIELDS])
        for record in records:
            writer.writerow([_csv_cell(s, getattr(record, s.name)) for s in RECORD_FIELDS])


def _write_parquet(run: RunInfo, records: list[RequestRecord], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("Parquet export needs pyarrow: pip install 'tokenrace[parquet]'") from exc

    def arrow_type(spec: FieldSpec) -> Any:
        if spec.base is list and spec.item in (float, int):
            return pa.list_(pa.float64() if spec.item is float else pa.int64())
        if spec.base in (list, dict):
            return pa.string()  # nested, free-form: JSON text, like the store
        return {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}[spec.base]

    columns = {}
    for spec in RECORD_FIELDS:
        values = [getattr(r, spec.name) for r in records]
        typ = arrow_type(spec)
        if pa.types.is_string(typ) and spec.base in (list, dict):
            values = [None if v is None else json_dumps(v) for v in values]
        columns[spec.name] = pa.array(values, type=typ)
    schema = pa.schema(
        [pa.field(s.name, columns[s.name].type, nullable=s.optional) for s in RECORD_FIELDS],
        metadata={_PARQUET_RUN_KEY: json_dumps(run).encode()},
    )
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path)


_WRITERS = {"json": _write_json, "csv": _write_csv, "parquet": _write_parquet}
