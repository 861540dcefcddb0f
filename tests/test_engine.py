"""The engine manager against a real llama.cpp server (xllamacpp) running SmolLM2-135M.

One engine serves the module (it starts in well under a second); tests that need their own process
lifecycle (stop, a killed parent, a failed start) start small ones of their own.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tokenrace.clients import EndpointClient
from tokenrace.engines import server as server_module
from tokenrace.engines.models import ensure_model
from tokenrace.engines.server import Engine, EngineError, EngineSettings, free_port
from tokenrace.metrics import output_speed_tps, server_decode_tps
from tokenrace.records import OK, RequestRecord
from tokenrace.workloads import WorkloadRequest

MODEL = "smollm2-135m"


@pytest.fixture(scope="session")
def model_path() -> Path:
    return ensure_model(MODEL)


@pytest.fixture(scope="module")
def blocked_port() -> Iterator[int]:
    """A port with a listener on it, which an engine asked for it must skip."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def engine(model_path: Path, blocked_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The shared engine, asked for a port that is taken; its process must be gone after stop."""
    log = tmp_path_factory.mktemp("engine") / "engine.log"
    settings = EngineSettings(model_path=model_path, port=blocked_port, parallel=4, alias=MODEL, log_path=log)
    with Engine(settings) as running:
        pid = running.pid
        assert pid is not None
        yield running
    assert running.pid is None
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by whoever adopted it) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def _stream(engine: Engine, requests: list[WorkloadRequest]) -> list[RequestRecord]:
    """Send ``requests`` concurrently through tokenrace's own client; the filled records."""
    client = EndpointClient(
        name="local", api="openai-chat", base_url=engine.base_url, model=MODEL, origin=time.perf_counter()
    )
    try:
        records = [client.new_record("run", i, 0.0, "test") for i in range(len(requests))]
        return list(await asyncio.gather(*(client.send(r, rec) for r, rec in zip(requests, records, strict=True))))
    finally:
        await client.aclose()


def _long(prompt_id: str, tokens: int) -> WorkloadRequest:
    """A request that generates exactly ``tokens`` tokens (EOS ignored)."""
    return WorkloadRequest(
        prompt_id=prompt_id,
        messages=[{"role": "user", "content": f"Tell me a long story about ship number {prompt_id}."}],
        max_tokens=tokens,
        params={"ignore_eos": True},
    )


# ------------------------------------------------------------------------------------------------
# Serving


async def test_chat_stream_through_endpoint_client(engine: Engine) -> None:
    question = "What is the capital of France?"
    request = WorkloadRequest(
        prompt_id="france",
        messages=[{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": question}],
        max_tokens=32,
        params={"temperature": 0},
    )
    [record] = await _stream(engine, [request])
    assert record.status == OK, record.error_detail
    assert record.http_status == 200
    assert record.finish_reason in ("stop", "length")
    assert record.usage_prompt_tokens and record.usage_completion_tokens
    assert record.server_timings and record.server_timings["predicted_n"] == record.usage_completion_tokens
    assert record.server_timings["predicted_per_second"] > 0
    # The GGUF's chat template is applied: an assistant answer, not the prompt echoed or template markup.
    text = record.output_text
    assert "paris" in text.lower(), text
    assert question not in text and "<|im_" not in text
    status, body = _get(engine.port, "/v1/models")
    assert status == 200 and orjson.loads(body)["data"][0]["id"] == MODEL


async def test_four_concurrent_streams_on_four_slots(engine: Engine) -> None:
    records = await _stream(engine, [_long(f"c{i}", 64) for i in range(4)])
    for record in records:
        assert record.status == OK, record.error_detail
        assert record.usage_completion_tokens == 64
        assert record.server_timings and record.server_timings["predicted_n"] == 64
    # All four were decoded at once (one per slot), not queued one after another.
    assert max(r.first_token_s for r in records) < min(r.done_s for r in records)  # type: ignore[operator,type-var]


async def test_client_output_speed_matches_server_decode_speed(engine: Engine) -> None:
    [record] = await _stream(engine, [_long("speed", 128)])
    assert record.status == OK, record.error_detail
    client_tps = output_speed_tps(record)
    server_tps = server_decode_tps(record)
    assert client_tps is not None and server_tps is not None
    assert abs(client_tps - server_tps) <= 0.10 * server_tps, (client_tps, server_tps)


def test_metrics_and_slots_endpoints(engine: Engine) -> None:
    status, body = _get(engine.port, "/metrics")
    assert status == 200 and b"llamacpp:" in body
    status, body = _get(engine.port, "/slots")
    slots = orjson.loads(body)
    assert status == 200 and len(slots) == 4
    assert all(slot["n_ctx"] == 8192 // 4 for slot in slots)  # the context is shared by the slots


# ------------------------------------------------------------------------------------------------
# Ports


def test_port_in_use_is_skipped(engine: Engine, blocked_port: int) -> None:
    assert engine.port != blocked_port
    assert free_port(blocked_port) > blocked_port
    assert _get(engine.port, "/health")[0] == 200


def test_free_port_without_preference() -> None:
    port = free_port()
    assert 0 < port < 65536
    assert free_port(port) == port  # nothing listens there


def test_port_lost_to_a_race_is_retried(
    model_path: Path, blocked_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If another process binds the port between the check and the server's bind, the next port is tried."""
    real = server_module.free_port
    calls: list[int | None] = []

    def racy(preferred: int | None = None) -> int:
        calls.append(preferred)
        return blocked_port if len(calls) == 1 else real(preferred)

    monkeypatch.setattr(server_module, "free_port", racy)
    settings = EngineSettings(model_path=model_path, parallel=1, context=512, log_path=tmp_path / "e.log")
    with Engine(settings) as engine:
        assert engine.port != blocked_port
        assert _get(engine.port, "/health")[0] == 200
    assert calls == [None, blocked_port + 1]


def test_port_skip_is_logged(blocked_port: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tokenrace.engines.server"):
        port = free_port(blocked_port)
    assert f"port {blocked_port} is in use; using {port}" in caplog.text


# ------------------------------------------------------------------------------------------------
# Failed starts


@pytest.mark.parametrize(
    ("content", "llama_words"),
    [
        (b"NOPE" + bytes(range(256)) * 256, "invalid magic characters: 'nope'"),
        (b"GGUF" + (3).to_bytes(4, "little") + (2**62).to_bytes(8, "little") + bytes(4096), "number of tensors"),
    ],
    ids=["garbage", "bad-header"],
)
def test_corrupt_gguf_gives_the_engines_own_error(tmp_path: Path, content: bytes, llama_words: str) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    engine = Engine(EngineSettings(model_path=path, log_path=tmp_path / "broken.log"))
    with pytest.raises(EngineError) as caught:
        engine.start(timeout_s=30)
    message = str(caught.value)
    assert "\n" not in message
    assert llama_words in message.lower(), message
    assert "failed to start" in message and str(tmp_path / "broken.log") in message
    assert engine.pid is None


def test_truncated_gguf_names_the_damage(model_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.gguf"
    with model_path.open("rb") as f:
        path.write_bytes(f.read(4 * 1024 * 1024))
    with pytest.raises(EngineError, match="model is corrupted or incomplete"):
        Engine(EngineSettings(model_path=path, log_path=tmp_path / "t.log")).start(timeout_s=30)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="model file not found"):
        Engine(EngineSettings(model_path=tmp_path / "nope.gguf")).start()


def test_unwritable_log_is_an_engine_error(model_path: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    engine = Engine(EngineSettings(model_path=model_path, log_path=tmp_path / "file" / "engine.log"))
    with pytest.raises(EngineError, match="cannot write the engine log"):
        engine.start()
    assert engine.pid is None


def test_startup_timeout_stops_the_child(model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "_health", lambda port: 503)  # a server that never finishes loading
    log = tmp_path / "slow.log"
    engine = Engine(EngineSettings(model_path=model_path, parallel=1, context=512, log_path=log))
    with pytest.raises(EngineError, match=r"did not become ready within 1\.5 s") as caught:
        engine.start(timeout_s=1.5)
    assert "\n" not in str(caught.value)
    assert engine.pid is None
    first = log.read_text().splitlines()[0]  # "tokenrace-engine: pid N serving ..."
    assert not _alive(int(first.split()[2]))


# ------------------------------------------------------------------------------------------------
# No orphans


def test_stop_ends_the_process_and_is_idempotent(model_path: Path, tmp_path: Path) -> None:
    engine = Engine(EngineSettings(model_path=model_path, parallel=1, context=512, log_path=tmp_path / "e.log"))
    engine.start()
    pid = engine.pid
    assert pid is not None and _alive(pid)
    assert engine.startup_s is not None and engine.startup_s > 0
    engine.stop()
    assert not _alive(pid)
    engine.stop()
    assert engine.pid is None
    assert "stopping on SIGTERM" in (tmp_path / "e.log").read_text()


PARENT = textwrap.dedent(
    """
    import signal, sys, threading, time
    from pathlib import Path
    from tokenrace.engines.server import Engine, EngineSettings

    # Ctrl-C as in a terminal: a job started in the background (nohup ... &) inherits SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    model, log, how = sys.argv[1], sys.argv[2], sys.argv[3]
    engine = Engine(EngineSettings(model_path=Path(model), parallel=1, context=512, log_path=Path(log)))
    if how == "thread":  # started from a thread that ends at once: the engine must not die with it
        starter = threading.Thread(target=engine.start)
        starter.start()
        starter.join()
    else:
        engine.start()
    print(engine.pid, engine.port, flush=True)
    if how == "exit":
        sys.exit(0)  # no stop(): atexit must do it
    time.sleep(120)
    """
)


@pytest.mark.parametrize(
    ("how", "sig"),
    [
        ("main", signal.SIGKILL),
        ("thread", signal.SIGKILL),
        ("main", signal.SIGTERM),
        ("main", signal.SIGINT),
        ("exit", None),
    ],
    ids=["sigkill", "thread-then-sigkill", "sigterm", "sigint", "normal-exit"],
)
def test_no_orphan_when_the_parent_ends(model_path: Path, tmp_path: Path, how: str, sig: int | None) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(model_path), str(tmp_path / "e.log"), how],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pid_text, port_text = parent.stdout.readline().split()
        pid = int(pid_text)
        if how == "thread":
            time.sleep(0.5)
            assert _alive(pid) and _get(int(port_text), "/health")[0] == 200
        if sig is not None:
            assert _alive(pid)
            parent.send_signal(sig)
        parent.wait(10)
        assert _wait_gone(pid), f"engine {pid} outlived its parent ({how}, {sig})"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
