"""Shared fixtures: a real emulator process on 127.0.0.1, a fresh SQLite store, a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import psycopg
import pytest
import sqlalchemy as sa
import uvloop
from psycopg import sql

from tokenrace.emulator import EmulatorProcess, EmulatorSettings
from tokenrace.store import Store


@pytest.fixture
def emulator() -> Iterator[Callable[..., EmulatorProcess]]:
    """Start emulators with given settings; all are stopped at the end of the test."""
    with ExitStack() as stack:

        def start(**settings: object) -> EmulatorProcess:
            return stack.enter_context(EmulatorProcess(EmulatorSettings(**settings)))  # type: ignore[arg-type]

        yield start


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    db = Store.open(str(tmp_path / "tokenrace.db"))
    yield db
    db.close()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on uvloop, the loop the CLI uses."""
    return {"uvloop": uvloop.new_event_loop}


PG_ADMIN_URL = os.environ.get("TOKENRACE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _admin_url() -> str:
    """The configured server URL, or the same server as root (some CI images have no postgres user)."""
    candidates = [PG_ADMIN_URL]
    if "://postgres@" in PG_ADMIN_URL:
        candidates.append(PG_ADMIN_URL.replace("://postgres@", "://root@"))
    errors = []
    for url in candidates:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5):
                return url
        except psycopg.Error as exc:
            errors.append(f"{url}: {exc}")
    message = "PostgreSQL unreachable (set TOKENRACE_SKIP_PG=1 to skip): " + "; ".join(errors)
    if os.environ.get("TOKENRACE_SKIP_PG") == "1":
        pytest.skip(message)
    pytest.fail(message)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh database for this test session on the shared server, dropped afterwards."""
    admin = _admin_url()
    name = f"tokenrace_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
        with psycopg.connect(admin, autocommit=True) as conn:
            try:
                conn.execute(drop + sql.SQL(" WITH (FORCE)"))
            except psycopg.errors.SyntaxError:  # before PostgreSQL 13; every store is closed by now
                conn.execute(drop)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    """An empty schema per test: tables are dropped after each use."""
    store = Store.open(pg_url)
    try:
        yield store
    finally:
        with store.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS feedback, requests, runs, schema_version"))
        store.close()
