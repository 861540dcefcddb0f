"""The gateway's own HTTP/1.1 server, on real sockets: framing, keep-alive, pipelining, bad input, disconnects,
back-pressure and shutdown, with small ASGI apps (the gateway itself is tested over it in test_gateway*.py)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tokenrace.gateway.server import GatewayServer, StartupFailed

Scope = dict[str, Any]


class Served:
    """An ASGI app on GatewayServer in a background thread, on a free port."""

    def __init__(self, app: Any, **kw: Any) -> None:
        self.server = GatewayServer(app, **kw)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.server.run([sock])
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive():
                return
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.005)

    def connect(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return conn

    def stop(self) -> None:
        self.server.request_exit()
        self.thread.join(15)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(app: Any, **kw: Any) -> Served:
        served = Served(app, **kw)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def read_response(conn: socket.socket, buffer: bytearray | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from ``conn`` (Content-Length or chunked); leftovers stay in ``buffer``."""
    buf = buffer if buffer is not None else bytearray()

    def fill() -> None:
        data = conn.recv(65536)
        if not data:
            raise ConnectionError("closed")
        buf.extend(data)

    while b"\r\n\r\n" not in buf:
        fill()
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    body = bytearray()
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            fill()
        body += buf[:n]
        del buf[:n]
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            while b"\r\n" not in buf:
                fill()
            size_line, _, _ = bytes(buf).partition(b"\r\n")
            size = int(size_line, 16)
            while len(buf) < len(size_line) + 2 + size + 2:
                fill()
            body += buf[len(size_line) + 2 : len(size_line) + 2 + size]
            del buf[: len(size_line) + 2 + size + 2]
            if size == 0:
                break
    return status, headers, bytes(body)


async def lifespan(receive: Any, send: Any, on_shutdown: Callable[[], None] = lambda: None) -> None:
    """The ASGI lifespan protocol, taking part in both steps."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def echo_app(scope: Scope, receive: Any, send: Any) -> None:
    """Echoes method, path, query and body; ``/stream`` answers in three chunks."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    text = f"{scope['method']} {scope['path']} {scope['query_string'].decode()} ".encode() + body
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"echo")]})
    await send({"type": "http.response.body", "body": text, "more_body": False})


def test_content_length_chunked_and_keep_alive(serve: Callable[..., Served]) -> None:
    served = serve(echo_app)
    conn = served.connect()
    buf = bytearray()
    conn.sendall(b"POST /a%20b?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
    status, headers, body = read_response(conn, buf)
    assert (status, body) == (200, b"POST /a b x=1 hello")
    assert headers["content-length"] == str(len(body)) and headers["x-app"] == "echo"
    # the same connection, a chunked request body, then a streamed (chunked) answer
    conn.sendall(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert read_response(conn, buf)[2] == b"POST /c  abcde"
    conn.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = read_response(conn, buf)
    assert headers["transfer-encoding"] == "chunked" and body == b"one two three"
    conn.close()


def test_pipelined_requests_are_answered_in_order(serve: Callable[..., Served]) -> None:
    served = serve(echo_app)
    conn = served.connect()
    conn.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(5)))
    buf = bytearray()
    assert [read_response(conn, buf)[2] for _ in range(5)] == [b"GET /%d  " % i for i in range(5)]
    conn.close()


def test_http_1_0_and_connection_close_end_the_connection(serve: Callable[..., Served]) -> None:
    served = serve(echo_app)
    for request in (b"GET /x HTTP/1.0\r\n\r\n", b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"):
        conn = served.connect()
        conn.sendall(request)
        status, headers, _ = read_response(conn)
        assert status == 200 and headers["connection"] == "close"
        assert conn.recv(100) == b""  # closed by the server
        conn.close()


def test_expect_100_continue(serve: Callable[..., Served]) -> None:
    served = serve(echo_app)
    conn = served.connect()
    conn.sendall(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert conn.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.sendall(b"data")
    assert read_response(conn)[2] == b"POST /e  data"
    conn.close()


def test_bad_http_gets_400_and_a_huge_head_431(serve: Callable[..., Served]) -> None:
    served = serve(echo_app)
    conn = served.connect()
    conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    assert read_response(conn)[0] == 400
    conn.close()
    conn = served.connect()
    conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert read_response(conn)[0] == 431
    conn.close()


def test_app_failures_are_500_or_a_cut_connection(serve: Callable[..., Served]) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")  # an app without lifespan support: served anyway
        if scope["path"] == "/raise":
            raise RuntimeError("boom")
        if scope["path"] == "/nothing":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        raise RuntimeError("half way")

    served = serve(app)
    for path, status in ((b"/raise", 500), (b"/nothing", 500)):
        conn = served.connect()
        conn.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
        assert read_response(conn)[0] == status
        conn.close()
    conn = served.connect()
    conn.sendall(b"GET /half HTTP/1.1\r\nHost: t\r\n\r\n")
    with pytest.raises(ConnectionError):
        read_response(conn)  # 5 of the 10 announced bytes, then the connection is dropped
    conn.close()


def test_client_disconnect_reaches_receive(serve: Callable[..., Served]) -> None:
    seen: list[str] = []
    done = threading.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan")
        await receive()  # the (empty) body
        seen.append((await receive())["type"])  # waits until the client goes
        done.set()

    served = serve(app)
    conn = served.connect()
    conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.1)
    conn.close()
    assert done.wait(5) and seen == ["http.disconnect"]


def test_send_waits_for_a_slow_client(serve: Callable[..., Served]) -> None:
    """Back-pressure: with the client not reading, ``send`` blocks instead of buffering without bound."""
    sent = 0
    blocked = threading.Event()
    piece = b"x" * 65536

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        nonlocal sent
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan")
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(400):  # 25 MiB if nothing held it back
            try:
                await asyncio.wait_for(send({"type": "http.response.body", "body": piece, "more_body": True}), 1.0)
            except TimeoutError:
                blocked.set()
                return
            sent += 1

    served = serve(app)
    conn = served.connect()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert blocked.wait(20)
    assert sent * len(piece) < 16 * 1024 * 1024  # socket buffers plus the transport's high-water mark
    conn.close()


def test_shutdown_cancels_calls_in_flight_after_the_grace_period(serve: Callable[..., Served]) -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, on_shutdown=lambda: events.append("shutdown"))
            return
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            events.append("cancelled")
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"bye", "more_body": False})

    served = serve(app, graceful_s=0.3)
    conn = served.connect()
    conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.1)
    started = time.monotonic()
    served.stop()
    assert read_response(conn)[:1] == (503,)
    assert time.monotonic() - started < 5
    assert events == ["cancelled", "shutdown"]  # calls end before the app's own shutdown
    conn.close()


def test_a_failed_startup_is_reported() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    served = Served(app)
    served.thread.join(10)
    assert isinstance(served.error, StartupFailed) and "no database" in str(served.error)


def test_idle_keep_alive_is_closed_and_a_slow_request_head_gets_408(serve: Callable[..., Served]) -> None:
    served = serve(echo_app, keep_alive_s=0.2, head_timeout_s=0.4)
    conn = served.connect()
    conn.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(conn)[0] == 200
    time.sleep(0.6)
    assert conn.recv(100) == b""  # closed after the keep-alive timeout
    conn.close()
    conn = served.connect()
    conn.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n")  # the head never ends
    assert read_response(conn)[0] == 408
    assert conn.recv(100) == b""
    conn.close()


def test_requests_pipelined_behind_the_last_answer_at_shutdown_get_503(serve: Callable[..., Served]) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan")
        await receive()
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode(), "more_body": False})

    served = serve(app, graceful_s=5.0)
    conn = served.connect()
    conn.sendall(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\nGET /second HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.1)
    stopper = threading.Thread(target=served.stop)
    stopper.start()
    buf = bytearray()
    assert read_response(conn, buf)[::2] == (200, b"/first")  # in flight: finished within the grace period
    assert read_response(conn, buf)[0] == 503
    stopper.join(10)
    conn.close()
