"""The gateway's HTTP/1.1 server: one asyncio protocol per connection (httptools), serving any ASGI app.

Why not uvicorn: a streamed answer costs the gateway a read from the upstream and a write to the client
per chunk, and through ASGI every chunk also wakes the call's task and passes a message dict through the
server's ``send`` coroutine. On a long stream those per-chunk costs add up (see benchmarks/gateway_overhead.py). This
server speaks plain ASGI 3 (the app also runs under uvicorn, and the tests run it under both) and offers
one extension, ``scope["extensions"]["tokenrace.direct"]``: the request's :class:`Exchange`, whose
synchronous ``start``/``write`` let the proxy relay a stream from inside the upstream's read callback,
with no task switch per chunk.

What it does: keep-alive with an idle timeout, a request head that takes over 30 s refused with 408,
pipelined requests answered in order (503 for those behind the last answer at shutdown), ``Expect:
100-continue``, bodies of any framing (``Content-Length`` or chunked) handed to ``receive`` as they
arrive, answers framed by ``Content-Length`` when the whole body comes in one message and chunked
otherwise, back-pressure (``send`` waits while the client's socket buffer is full; direct writers are told
through :meth:`Exchange.when_writable`), a client's disconnect reported to ``receive`` as
``http.disconnect``, 400 for bad HTTP and 431 for a request head over 64 KiB, 500 when the app fails
before answering. Shutdown stops accepting, closes idle connections, waits up to ``graceful_s`` for calls
in flight, then cancels them (the app answers those itself), then runs the lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import httptools

__all__ = ["Exchange", "GatewayServer", "StartupFailed"]

MAX_HEAD_BYTES = 64 * 1024  # request line and headers: past this a request is refused with 431
_STATUS_TEXT = {
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    402: b"Payment Required",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    422: b"Unprocessable Content",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    529: b"Overloaded",
}
_DISCONNECT = {"type": "http.disconnect"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[..., Awaitable[None]]], Any]


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _STATUS_TEXT.get(status, b"Status"))


def _plain(status: int, text: str) -> bytes:
    body = text.encode()
    return (
        _status_line(status)
        + b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        + body
    )


class Exchange:
    """One request and its answer on a connection: the ASGI ``receive``/``send`` pair, and the direct path.

    ``receive`` returns a future (an awaitable, as ASGI asks), so a call that waits for the client's
    disconnect beside its work costs no task. ``start``/``write`` are the synchronous form of ``send``
    for the ``tokenrace.direct`` extension: a writer that uses them must stop producing while
    :attr:`paused` and resume from :meth:`when_writable`.
    """

    __slots__ = (
        "_body",
        "_body_done",
        "_body_sent",
        "_chunked",
        "_head",
        "_left",
        "_waiter",
        "_writable",
        "complete",
        "conn",
        "continue_expected",
        "disconnected",
        "head_request",
        "keep_alive",
        "scope",
        "started",
        "status",
        "task",
    )

    def __init__(self, conn: _Connection, scope: dict[str, Any], keep_alive: bool, expect: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.continue_expected = expect
        self.head_request = scope["method"] == "HEAD"
        self.disconnected = False
        self.started = False  # status and headers given (maybe not yet written: they go with the first body)
        self.complete = False
        self.status = 0
        self.task: asyncio.Task[None] | None = None
        self._body: list[bytes] = []
        self._body_done = False
        self._body_sent = False
        self._waiter: asyncio.Future[dict[str, Any]] | None = None
        self._head: bytes | None = None  # status line and headers not written yet
        self._chunked = False
        self._left = -1  # bytes still due under the answer's Content-Length
        self._writable: Callable[[], None] | None = None

    # -- request body (fed by the connection) ----------------------------------------------------------

    def _body_arrived(self, data: bytes | None) -> None:
        if data is None:
            self._body_done = True
        else:
            self._body.append(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_result(self._next_message())

    def _next_message(self) -> dict[str, Any]:
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        self._body = []
        if self._body_done:
            self._body_sent = True
        return {"type": "http.request", "body": body, "more_body": not self._body_done}

    def _lost(self) -> None:
        """The connection is gone (or the answer is complete): a waiting ``receive`` gets a disconnect."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_result(_DISCONNECT)
        writable, self._writable = self._writable, None
        if writable is not None:
            writable()

    # -- ASGI ------------------------------------------------------------------------------------------

    def receive(self) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = self.conn.loop.create_future()
        if self.disconnected or (self._body_sent and self.complete):
            future.set_result(_DISCONNECT)
        elif not self._body_sent and (self._body or self._body_done):
            future.set_result(self._next_message())
        else:
            if self.continue_expected and not self._body_sent:
                self.continue_expected = False
                self.conn.write(_CONTINUE)
            if self._waiter is not None and not self._waiter.done():
                self._waiter.cancel()
            self._waiter = future
        return future

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            self.write(message.get("body", b""), message.get("more_body", False))
            if self.conn.write_paused and not self.disconnected:
                await self.conn.drained()
        elif kind == "http.response.start":
            self.start(message["status"], message.get("headers", ()))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    # -- the direct path (also what ``send`` does) -----------------------------------------------------

    def start(self, status: int, headers: Any) -> None:
        """Status and headers; they are written with the first body bytes (one write for a short answer)."""
        if self.started:
            raise RuntimeError("the response has already started")
        self.started = True
        self.status = status
        parts = [_status_line(status)]
        said_close = False
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                self._left = int(value)
            elif lower == b"connection" and b"close" in value.lower():
                said_close = True
            parts += (name, b": ", value, b"\r\n")
        if said_close:
            self.keep_alive = False
        elif not self.keep_alive:
            parts.append(b"connection: close\r\n")
        self._head = b"".join(parts)

    def write(self, body: bytes, more: bool = True) -> None:
        """Body bytes; ``more=False`` ends the answer. Ignored once the client is gone."""
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.complete:
            raise RuntimeError("the response is already complete")
        if self.disconnected:
            return
        head = self._head
        if head is not None:
            self._head = None
            if self._left >= 0 or self.status in (204, 304):
                framing = b""
            elif not more:  # the whole answer in one message: its length is known
                framing = b"content-length: %d\r\n" % len(body)
                self._left = len(body)
            else:
                framing = b"transfer-encoding: chunked\r\n"
                self._chunked = True
            head += framing + b"\r\n"
        else:
            head = b""
        if self.head_request:
            body = b""
        elif self._chunked:
            if body:
                body = b"%x\r\n%b\r\n" % (len(body), body)
            if not more:
                body += b"0\r\n\r\n"
        elif self._left >= 0:
            self._left -= len(body)
        data = head + body if head else body
        if data:
            self.conn.write(data)
        if not more:
            self.complete = True
            self.conn.exchange_done(self)

    @property
    def paused(self) -> bool:
        """The client's socket buffer is full: a direct writer should stop reading its source."""
        return self.conn.write_paused

    def when_writable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the client can take bytes again (or is gone)."""
        if not self.conn.write_paused or self.disconnected:
            callback()
        else:
            self._writable = callback


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs one exchange at a time, keeps the connection alive."""

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.write_paused = False
        self.closed = False
        self._drain: list[asyncio.Future[None]] = []
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._parsing: Exchange | None = None  # the request whose bytes are arriving
        self._active: Exchange | None = None  # the request being answered
        self._queue: deque[Exchange] = deque()  # pipelined requests waiting their turn
        # Loop times for the server's sweep (no timer per request): idle since (keep-alive), head begun at.
        self.idle_since: float | None = None
        self.head_since: float | None = None
        self._client: tuple[str, int] | None = None
        self._local: tuple[str, int] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self._client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self._local = (str(local[0]), int(local[1])) if isinstance(local, tuple) else None
        self.server.connections.add(self)
        self.idle_since = self.loop.time()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:  # our callbacks' exceptions arrive wrapped in it too
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, f"request head over {MAX_HEAD_BYTES} bytes")
            else:
                self._refuse(400, f"invalid HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for exchange in (self._active, self._parsing, *self._queue):
            if exchange is not None:
                exchange.disconnected = True
                exchange._lost()
        self._queue.clear()
        self._release_drain()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._release_drain()
        active = self._active
        if active is not None:
            writable, active._writable = active._writable, None
            if writable is not None:
                writable()

    # -- httptools callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self.idle_since = None
        self.head_since = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        url = httptools.parse_url(self._url)
        raw_path = url.path or b"/"
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        expect = False
        for name, value in self._headers:
            if name == b"expect" and value.lower() == b"100-continue":
                expect = True
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": parser.get_http_version(),
            "method": parser.get_method().decode("ascii"),
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "root_path": "",
            "headers": self._headers,
            "client": self._client,
            "server": self._local,
            "extensions": {},
        }
        self.head_since = None
        exchange = Exchange(self, scope, parser.should_keep_alive(), expect)
        scope["extensions"]["tokenrace.direct"] = exchange
        self._parsing = exchange
        if self.server.stopping and self._active is None:
            self._refuse(503, "the gateway is shutting down")
        elif self._active is None:
            self._start(exchange)
        else:
            self._queue.append(exchange)
            if self.transport is not None:
                self.transport.pause_reading()  # one request ahead is enough

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing._body_arrived(body)

    def on_message_complete(self) -> None:
        parsing, self._parsing = self._parsing, None
        if parsing is not None:
            parsing._body_arrived(None)

    # -- exchanges -------------------------------------------------------------------------------------

    def _start(self, exchange: Exchange) -> None:
        self._active = exchange
        exchange.task = self.loop.create_task(self.server.run_app(exchange))

    def exchange_done(self, exchange: Exchange) -> None:
        """The answer's last byte is written: next pipelined request, or keep-alive, or close."""
        exchange._lost()  # a receive still waiting (the app's disconnect watch) ends now
        if exchange is not self._active:
            return
        self._active = None
        if self.server.stopping and self._queue:
            self._queue.clear()  # pipelined behind the last answer: told to come back, not left hanging
            self.write(_plain(503, "the gateway is shutting down"))
        if not exchange.keep_alive or self.server.stopping or self._parsing is exchange:
            # A request whose body was not read to its end cannot be followed on this connection.
            self.close()
            return
        if self._queue:
            self._start(self._queue.popleft())
            if not self._queue and self.transport is not None:
                self.transport.resume_reading()
        else:
            self.idle_since = self.loop.time()

    def sweep(self, now: float) -> None:
        """The server's periodic check: close a keep-alive connection idle too long, refuse a request head
        that has been arriving for too long (a client that never finishes it must not hold the connection)."""
        if self.idle_since is not None and self.idle and now - self.idle_since > self.server.keep_alive_s:
            self.close()
        elif self.head_since is not None and now - self.head_since > self.server.head_timeout_s:
            self._refuse(408, f"request head not complete within {self.server.head_timeout_s:g} s")

    @property
    def idle(self) -> bool:
        return self._active is None and self._parsing is None and not self._queue

    # -- writing ---------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    async def drained(self) -> None:
        if not self.write_paused or self.closed:
            return
        waiter = self.loop.create_future()
        self._drain.append(waiter)
        await waiter

    def _release_drain(self) -> None:
        waiters, self._drain = self._drain, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _refuse(self, status: int, text: str) -> None:
        """Bad HTTP: answer if nothing is being answered, then close (the stream position is lost)."""
        if self._active is None or self._active.complete:
            self.write(_plain(status, text))
        self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()


class _HeadTooLarge(Exception):
    pass


class StartupFailed(Exception):
    """The app's lifespan start-up failed (its message says why)."""


class GatewayServer:
    """Serve an ASGI app on listening sockets until :meth:`request_exit` (thread-safe) or a signal.

    ``started`` turns true once the lifespan start-up completed and the sockets accept connections.
    """

    def __init__(
        self, app: ASGIApp, *, keep_alive_s: float = 5.0, graceful_s: float = 5.0, head_timeout_s: float = 30.0
    ) -> None:
        self.app = app
        self.keep_alive_s = keep_alive_s
        self.head_timeout_s = head_timeout_s
        self.graceful_s = graceful_s
        self.connections: set[_Connection] = set()
        self.started = False
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._exit: asyncio.Event | None = None
        self._exit_requested = False

    # -- control ---------------------------------------------------------------------------------------

    def request_exit(self, *_: Any) -> None:
        """Stop serving (from a signal handler, the loop's thread or another thread)."""
        self._exit_requested = True
        loop, event = self.loop, self._exit
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def run(self, sockets: list[Any]) -> None:
        """Serve in this thread, on a new uvloop event loop (as the tests run it)."""
        import uvloop

        uvloop.run(self.serve(sockets))

    async def serve(self, sockets: list[Any]) -> None:
        self.loop = asyncio.get_running_loop()
        self._exit = asyncio.Event()
        if self._exit_requested:
            self._exit.set()
        lifespan = _Lifespan(self.app)
        await lifespan.startup()
        servers = [
            await self.loop.create_server(lambda: _Connection(self), sock=sock, backlog=2048) for sock in sockets
        ]
        self.started = True
        sweeper = asyncio.create_task(self._sweep())
        try:
            await self._exit.wait()
        finally:
            sweeper.cancel()
            self.stopping = True
            for server in servers:
                server.close()
            await self._drain_calls()
            await lifespan.shutdown()

    async def _sweep(self) -> None:
        """Idle keep-alive and slow request heads, checked for every connection a few times per timeout
        (a timer per request would be created and cancelled on every call)."""
        period = max(min(self.keep_alive_s, self.head_timeout_s) / 4, 0.01)
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            for conn in list(self.connections):
                conn.sweep(now)

    async def _drain_calls(self) -> None:
        """Close idle connections; give calls in flight ``graceful_s``; then cancel what is left."""
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
        deadline = self.loop.time() + self.graceful_s
        while self._in_flight() and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        tasks = self._in_flight()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for conn in list(self.connections):
            conn.close()

    def _in_flight(self) -> list[asyncio.Task[None]]:
        return [
            c._active.task
            for c in self.connections
            if c._active is not None and c._active.task is not None and not c._active.task.done()
        ]

    async def run_app(self, exchange: Exchange) -> None:
        try:
            await self.app(exchange.scope, exchange.receive, exchange.send)
        except asyncio.CancelledError:
            if not exchange.complete:
                exchange.conn.abort()
            return
        except Exception:
            print(f"tokenrace gateway: the app failed on {exchange.scope['path']}:", file=sys.stderr)
            traceback.print_exc()
            if not exchange.started:
                exchange.conn.write(_plain(500, "internal error"))
            exchange.conn.abort() if exchange.started else exchange.conn.close()
            return
        if not exchange.complete:
            if not exchange.started:  # the app returned without an answer
                exchange.conn.write(_plain(500, "the app sent no response"))
                exchange.conn.close()
            else:
                exchange.conn.abort()  # an answer cut short: the client must not take it as whole


class _Lifespan:
    """The ASGI lifespan protocol: start-up before the first connection, shutdown after the last call."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.supported = True

    async def _run(self) -> None:
        try:
            await self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, self.inbox.get, self.outbox.put)
        except Exception as exc:  # an app without lifespan support may raise on the scope: serve without
            self.supported = False
            await self.outbox.put({"type": "lifespan.unsupported", "message": repr(exc)})
        else:  # returned: after its shutdown, or without taking part at all
            self.supported = False
            await self.outbox.put({"type": "lifespan.unsupported", "message": "the app returned"})

    async def startup(self) -> None:
        self.task = asyncio.create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self.outbox.get()
        if message["type"] == "lifespan.startup.failed":
            raise StartupFailed(f"the gateway did not start: {message.get('message', '')}")

    async def shutdown(self) -> None:
        if not self.supported or self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.outbox.get(), 30.0)
