"""Persistence of runs and request records: the only module of tokenrace that knows SQL.

One schema, written with SQLAlchemy core, serves SQLite (the default, a file next to the user) and
PostgreSQL (shared results). The ``requests`` columns are derived from :class:`RequestRecord`'s fields
and type hints, so adding a field there needs no change here: a store created by an older version gets
the new column added (nullable) when it is opened, and rows written before it read back with the
field's default.

Floats are stored as double precision on both backends and list/dict fields as orjson text (orjson
writes the shortest round-tripping repr), so a record read back is equal to the one written.

A run whose status is still ``"running"`` is either in progress or was left so by a crashed process:
the store has no way to tell them apart, and both are incomplete, so readers must show it as such
(:meth:`Store.is_incomplete`). Nothing is rewritten behind the user's back: guessing that a writer is
dead (by age, by pid) would mislabel long runs and runs written from other hosts.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
import types
import typing
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Self

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool

from .records import RequestRecord, RunInfo

__all__ = [
    "DEFAULT_PATH",
    "RECORD_FIELDS",
    "RUN_FIELDS",
    "SCHEMA_VERSION",
    "AmbiguousRunError",
    "Feedback",
    "FieldSpec",
    "RecordWriter",
    "RecordWriterError",
    "Store",
    "UnknownRunError",
    "json_dumps",
]

DEFAULT_PATH = "./tokenrace.db"
# Bump when a change needs more than adding a nullable column (which open() does by itself), and add
# the migration step to Store._migrate.
SCHEMA_VERSION = 1
STATUS_RUNNING = "running"
_SQLITE_BUSY_TIMEOUT_MS = 10_000
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class UnknownRunError(LookupError):
    """No run matches the id or prefix the user gave; the message says what exists."""


class AmbiguousRunError(UnknownRunError):
    """A prefix matches several runs; a LookupError too, so callers need one except clause."""


class RecordWriterError(RuntimeError):
    """The background writer failed; records put after the failure are not stored."""


def json_dumps(value: Any) -> str:
    """orjson as text: shortest round-trip floats, numpy scalars (summaries) and non-str keys allowed."""
    return orjson.dumps(value, option=_JSON_OPTIONS).decode()


# --- mapping dataclass fields to columns -----------------------------------------------------------


class FieldSpec(NamedTuple):
    """What the store (and exporters) need to know about one dataclass field."""

    name: str
    base: type  # int, float, str, bool, list or dict
    optional: bool  # the hint allows None
    item: type | None  # element type of a list[...] hint, when it is a plain type
    default: Callable[[], Any] | None  # makes the field's default; None when the field is required


def _identity(value: Any) -> Any:
    return value


def _field_specs(cls: type) -> tuple[FieldSpec, ...]:
    """Read the fields' hints once, so columns, reads and exports follow the dataclass."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            non_none = [a for a in args if a is not type(None)]
            if len(non_none) != 1:
                raise TypeError(f"{cls.__name__}.{f.name}: unsupported union hint {hint!r}")
            optional = len(non_none) != len(args)
            hint = non_none[0]
        base = typing.get_origin(hint) or hint
        if base not in (int, float, str, bool, list, dict):
            raise TypeError(f"{cls.__name__}.{f.name}: no column mapping for {hint!r}")
        item_args = typing.get_args(hint)
        item = item_args[0] if base is list and item_args and isinstance(item_args[0], type) else None
        default: Callable[[], Any] | None = None
        if f.default is not dataclasses.MISSING:
            default = functools.partial(_identity, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory
        specs.append(FieldSpec(f.name, base, optional, item, default))
    return tuple(specs)


RECORD_FIELDS = _field_specs(RequestRecord)
RUN_FIELDS = _field_specs(RunInfo)


class _JsonText(sa.types.TypeDecorator[Any]):
    """List/dict stored as orjson text: identical bytes and exact floats on every backend."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        return None if value is None else json_dumps(value)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return None if value is None else orjson.loads(value)


_SCALAR_TYPES: dict[type, Any] = {int: sa.Integer, float: sa.Double, str: sa.Text, bool: sa.Boolean}


def _column_type(spec: FieldSpec, json_type: Any) -> Any:
    if spec.base in (list, dict):
        return json_type
    return _SCALAR_TYPES[spec.base]()


def _columns(specs: Iterable[FieldSpec], json_type: Any, keys: Sequence[str]) -> list[sa.Column[Any]]:
    """Nullable exactly when the hint is Optional; key columns are never null."""
    return [
        sa.Column(s.name, _column_type(s, json_type), primary_key=s.name in keys, nullable=s.optional) for s in specs
    ]


_metadata = sa.MetaData()
_runs = sa.Table("runs", _metadata, *_columns(RUN_FIELDS, sa.JSON(none_as_null=True), ("run_id",)))
_requests = sa.Table(
    "requests",
    _metadata,
    *_columns(RECORD_FIELDS, _JsonText(), ("run_id", "seq")),
    sa.Index("ix_requests_run_id", "run_id"),
)
_schema_version = sa.Table("schema_version", _metadata, sa.Column("version", sa.Integer, nullable=False))
# Quality signals sent to the gateway (POST /v1/feedback) after a request ended. Kept apart from
# ``requests`` because they arrive later and may arrive more than once; a reader takes the latest per
# request (Store.feedback). ``create_all`` adds the table to stores made before it existed.
_feedback = sa.Table(
    "feedback",
    _metadata,
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=True),
    sa.Column("score", sa.Double, nullable=False),
    sa.Column("key_id", sa.Text, nullable=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Index("ix_feedback_run_id", "run_id"),
)


class Feedback(NamedTuple):
    """One quality signal: ``score`` in [0, 1] for the gateway request ``request_id``, at unix time ``at``."""

    request_id: str
    run_id: str | None
    score: float
    key_id: str | None
    at: float


def _from_row(cls: type, specs: Sequence[FieldSpec], row: sa.Row[Any]) -> Any:
    """NULL in a non-Optional column (a column added after the row was written) -> the field default."""
    values = {}
    for spec in specs:
        value = getattr(row, spec.name)
        if value is None and not spec.optional and spec.default is not None:
            value = spec.default()
        values[spec.name] = value
    return cls(**values)


def _as_dict(obj: Any, specs: Sequence[FieldSpec]) -> dict[str, Any]:
    """Shallow field dict (dataclasses.asdict deep-copies every list, which costs at 1,000+ rows/s)."""
    return {s.name: getattr(obj, s.name) for s in specs}


def _driver_insert(dialect: sa.Dialect) -> tuple[str, Callable[[RequestRecord], Any]]:
    """The requests INSERT in the driver's own SQL, and a function from a record to its parameters (a tuple
    for positional paramstyles, a dict for named ones), JSON fields encoded as ``_JsonText`` does."""
    compiled = _requests.insert().compile(dialect=dialect)
    json_fields = frozenset(s.name for s in RECORD_FIELDS if s.base in (list, dict))
    names = list(compiled.positiontup) if compiled.positiontup is not None else [s.name for s in RECORD_FIELDS]
    getters = [(name, name in json_fields) for name in names]

    def values(record: RequestRecord) -> list[Any]:
        out = []
        for name, is_json in getters:
            value = getattr(record, name)
            out.append(json_dumps(value) if is_json and value is not None else value)
        return out

    if compiled.positiontup is not None:
        return str(compiled), lambda record: tuple(values(record))
    return str(compiled), lambda record: dict(zip(names, values(record), strict=True))


# --- the store -------------------------------------------------------------------------------------


def _normalise_url(url: str) -> str:
    """postgresql:// (and postgres://) mean the psycopg 3 driver, which is the one tokenrace ships."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers (tokenrace show) read while a bench writes; NORMAL keeps commits cheap and
    loses nothing when the process crashes (only an OS crash can lose the last commits)."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cur.close()


SETUP_ATTEMPTS = 5  # opening a store another process is creating right now: see Store._setup


class Store:
    """Runs and their request records in a SQLite file or a PostgreSQL database.

    Thread-safe: the engine pools connections, so a RecordWriter thread and the caller share it.
    """

    def __init__(self, url: str) -> None:
        self.url = _normalise_url(url)
        parsed = make_url(self.url)
        kwargs: dict[str, Any] = {"json_serializer": json_dumps, "json_deserializer": orjson.loads}
        is_sqlite = parsed.get_backend_name() == "sqlite"
        in_memory = is_sqlite and parsed.database in (None, "", ":memory:")
        if in_memory:
            # One shared connection, or each thread would see its own empty database.
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        self.engine: Engine = sa.create_engine(parsed, **kwargs)
        if is_sqlite:
            if not in_memory:
                Path(parsed.database or DEFAULT_PATH).parent.mkdir(parents=True, exist_ok=True)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._setup()
        self._record_insert = _driver_insert(self.engine.dialect)

    @classmethod
    def open(cls, arg: str | None = None) -> Store:
        """The CLI's --store: None (./tokenrace.db), a file path, or a sqlite/postgresql URL."""
        if arg is None:
            arg = DEFAULT_PATH
        if "://" not in arg:
            arg = "sqlite:///" + str(Path(arg).expanduser())
        return cls(arg)

    @property
    def location(self) -> str:
        """The URL without its password, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    def _setup(self) -> None:
        """Create what is missing and refuse a store written by a newer schema.

        Another process may be creating the same store at the same moment (a benchmark starting while a
        report or a monitor opens the file): creation checks, then creates, so the loser of that race gets
        "already exists" (or a duplicate version row or column). The retry then finds the winner's tables.
        """
        for attempt in range(SETUP_ATTEMPTS):
            try:
                self._setup_once()
                return
            except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError):
                if attempt == SETUP_ATTEMPTS - 1:
                    raise
                time.sleep(0.02 * (attempt + 1))

    def _setup_once(self) -> None:
        _metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            version = conn.execute(sa.select(sa.func.max(_schema_version.c.version))).scalar()
            if version is None:
                conn.execute(_schema_version.insert().values(version=SCHEMA_VERSION))
            elif version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.location} has schema version {version}, newer than this tokenrace "
                    f"understands ({SCHEMA_VERSION}); upgrade tokenrace"
                )
            self._migrate(conn)

    def _migrate(self, conn: sa.Connection) -> None:
        """Add columns for dataclass fields newer than the table (nullable, read back as defaults)."""
        inspector = sa.inspect(conn)
        for table in (_runs, _requests):
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    name = conn.dialect.identifier_preparer.quote(column.name)
                    ddl = column.type.compile(dialect=conn.dialect)
                    conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {ddl}"))

    # -- runs --

    def create_run(self, info: RunInfo) -> None:
        """Store the run before its first request, so a crash still leaves a labelled run."""
        with self.engine.begin() as conn:
            conn.execute(_runs.insert().values(**_as_dict(info, RUN_FIELDS)))

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any] | None, finished_at: float) -> None:
        """Record how the run ended; raises UnknownRunError if it was never created."""
        with self.engine.begin() as conn:
            result = conn.execute(
                _runs.update()
                .where(_runs.c.run_id == run_id)
                .values(status=status, summary=summary, finished_at=finished_at)
            )
            if result.rowcount == 0:
                raise UnknownRunError(f"cannot finish run {run_id!r}: it is not in {self.location}")

    def list_runs(
        self, limit: int | None = 50, *, since: float | None = None, endpoints: Sequence[str] | None = None
    ) -> list[RunInfo]:
        """Newest first; ``since`` (unix seconds) and ``endpoints`` narrow the selection, ``limit=None`` is all."""
        query = _runs.select().order_by(_runs.c.started_at.desc(), _runs.c.run_id.desc())
        if since is not None:
            query = query.where(_runs.c.started_at >= since)
        if endpoints:
            query = query.where(_runs.c.endpoint.in_(list(endpoints)))
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_from_row(RunInfo, RUN_FIELDS, row) for row in conn.execute(query)]

    def get_run(self, run_id: str) -> RunInfo:
        """A run by full id or unique prefix, with an error message that helps the user pick one."""
        with self.engine.connect() as conn:
            row = conn.execute(_runs.select().where(_runs.c.run_id == run_id)).first()
            if row is not None:
                return _from_row(RunInfo, RUN_FIELDS, row)
            query = (
                _runs.select()
                .where(_runs.c.run_id.startswith(run_id, autoescape=True))
                .order_by(_runs.c.started_at.desc())
                .limit(21)
            )
            matches = list(conn.execute(query))
        if len(matches) == 1:
            return _from_row(RunInfo, RUN_FIELDS, matches[0])
        if matches:
            ids = ", ".join(m.run_id for m in matches[:20]) + (", ..." if len(matches) > 20 else "")
            raise AmbiguousRunError(f"run id prefix {run_id!r} matches several runs: {ids}")
        latest = self.list_runs(limit=5)
        if not latest:
            raise UnknownRunError(f"no run {run_id!r}: {self.location} has no runs yet; run `tokenrace bench` first")
        raise UnknownRunError(
            f"no run matches {run_id!r} in {self.location}; latest runs: " + ", ".join(r.run_id for r in latest)
        )

    @staticmethod
    def is_incomplete(info: RunInfo) -> bool:
        """Still "running" means in progress or crashed: either way not a finished result."""
        return info.status == STATUS_RUNNING

    # -- requests --

    def add_records(self, records: Sequence[RequestRecord]) -> None:
        """All in one transaction (one executemany): a batch is stored whole or not at all.

        The INSERT is compiled once for the backend and given plain rows: SQLAlchemy's per-row parameter
        processing was half the writer's CPU, and a gateway's event loop competes with that thread.
        """
        if not records:
            return
        sql, row = self._record_insert
        with self.engine.begin() as conn:
            conn.exec_driver_sql(sql, [row(r) for r in records])

    def records(self, run_id: str, phase: str | None = None) -> list[RequestRecord]:
        """A run's records in scheduling order, optionally of one phase (warmup/measure)."""
        query = _requests.select().where(_requests.c.run_id == run_id).order_by(_requests.c.seq)
        if phase is not None:
            query = query.where(_requests.c.phase == phase)
        with self.engine.connect() as conn:
            return [_from_row(RequestRecord, RECORD_FIELDS, row) for row in conn.execute(query)]

    # -- feedback --

    def add_feedback(
        self, request_id: str, score: float, key_id: str | None, at: float, *, run_id: str | None = None
    ) -> None:
        """Store one quality signal for a gateway request (another one for the same request supersedes it)."""
        with self.engine.begin() as conn:
            conn.execute(
                _feedback.insert().values(request_id=request_id, run_id=run_id, score=score, key_id=key_id, at=at)
            )

    def feedback(self, run_id: str) -> list[Feedback]:
        """The feedback on a run's requests, oldest first (so a dict built from it keeps the latest score)."""
        query = _feedback.select().where(_feedback.c.run_id == run_id).order_by(_feedback.c.at)
        with self.engine.connect() as conn:
            return [Feedback(r.request_id, r.run_id, r.score, r.key_id, r.at) for r in conn.execute(query)]

    def close(self) -> None:
        """Release pooled connections (and the SQLite file handles)."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- background writer -----------------------------------------------------------------------------

_STOP = object()


class RecordWriter:
    """Stores records from the load generator without blocking its event loop.

    put() only appends to a deque; a daemon thread writes batches (one transaction each) every
    flush_interval_s or as soon as batch_size records wait. A write error stops the writer and is
    raised by the next put(), flush() or close(): a benchmark whose records are lost must not go on
    looking healthy. flush() and close() block: from a coroutine, call them via asyncio.to_thread.
    """

    def __init__(self, store: Store, flush_interval_s: float = 0.05, batch_size: int = 500) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.written = 0
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._error: BaseException | None = None
        self._lost = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tokenrace-record-writer", daemon=True)
        self._thread.start()

    def put(self, record: RequestRecord) -> None:
        """Queue one record; cheap enough to call per request from the asyncio loop."""
        if self._error is not None or self._closed:
            self._raise_if_failed()
            raise RuntimeError("RecordWriter is closed")
        self._queue.append(record)
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def flush(self) -> None:
        """Block until every record put so far is committed; raise the writer's error if it failed."""
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        # The thread may die between our check and our append: poll so we never wait forever.
        while not done.wait(0.1):
            if not self._thread.is_alive():
                break
        self._raise_if_failed()

    def close(self) -> None:
        """Write what is queued, stop the thread, raise the writer's error if it failed."""
        if not self._closed:
            self._closed = True
            self._queue.append(_STOP)
            self._wake.set()
            self._thread.join()
        self._raise_if_failed()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RecordWriterError(
                f"writing records to {self.store.location} failed ({self.written} written, "
                f"{self._lost} not): {self._error!r}"
            ) from self._error

    def _run(self) -> None:
        try:
            stop = False
            while not stop:
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()  # before draining: a put() after this wakes the next round
                stop = self._drain()
        except BaseException as exc:  # kept for put/flush/close; the thread has no one to tell
            self._error = exc
            self._release_waiters()

    def _drain(self) -> bool:
        """Write everything queued; True when the stop marker was seen."""
        batch: list[RequestRecord] = []
        while True:
            try:
                item = self._queue.popleft()
            except IndexError:
                break
            if isinstance(item, RequestRecord):
                batch.append(item)
                if len(batch) >= self.batch_size:
                    self._write(batch)
                    batch = []
                continue
            self._write(batch)
            batch = []
            if item is _STOP:
                return True
            item.set()  # a flush() marker: everything before it is committed
        self._write(batch)
        return False

    def _write(self, batch: list[RequestRecord]) -> None:
        if not batch:
            return
        try:
            self.store.add_records(batch)
        except BaseException:
            self._lost += len(batch)
            raise
        self.written += len(batch)

    def _release_waiters(self) -> None:
        """After a failure: count the records dropped and wake every flush() waiting on a marker."""
        while True:
            try:
                item = self._queue.popleft()
            except IndexError:
                return
            if isinstance(item, RequestRecord):
                self._lost += 1
            elif isinstance(item, threading.Event):
                item.set()
