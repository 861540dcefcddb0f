"""Shared fixtures: a real emulator process on 127.0.0.1 and a fresh SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
import uvloop

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
