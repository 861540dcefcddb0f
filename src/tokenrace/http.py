"""A small HTTP/1.1 streaming client built on httptools, with one keep-alive pool per endpoint.

Why not a general-purpose client: a benchmark needs the arrival time of every byte as the process sees it,
not when a coroutine later gets round to reading it. Here each network read is stamped with
``time.perf_counter()`` inside ``data_received``, before any parsing and before the coroutine that
reads the stream is woken, so the decoding of other streams never lands in a timestamp. It also keeps
the client's CPU per request small enough that one process can drive thousands of streamed requests per
second (see ``benchmarks/``).

Scope, deliberately: HTTP/1.1 over TCP or TLS, ``Content-Length``/chunked/close-delimited bodies, no
proxies, no compression (we send ``Accept-Encoding: identity``), no redirects, no retries — a benchmark
reports what happened rather than hiding it.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlsplit

import httptools

perf_counter = time.perf_counter


class HTTPClientError(Exception):
    """Transport-level failure; ``category`` is one of the record's error categories."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(detail)
        self.category = category
        self.detail = detail


class _Connection(asyncio.Protocol):
    """One TCP connection; parses responses as bytes arrive and stamps every read."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.close_reason: str = ""
        self.response: Response | None = None
        self._read_at = 0.0
        self._header_name = b""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._read_at = perf_counter()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.response is not None:
                self.response._fail("malformed", f"invalid HTTP from server: {exc}")
            self._abort()
            return
        response = self.response
        if response is not None and response.sink is not None:
            response.sink.read_done()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.close_reason = str(exc) if exc else "connection closed by server"
        response = self.response
        if response is not None and not response.complete:
            if response.headers_at is None:
                response._fail("connect", f"connection closed before the response: {self.close_reason}")
            else:
                response._fail("stream_cut", f"connection closed mid-body: {self.close_reason}")
        self.pool._forget(self)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        response = self.response
        if response is not None:
            response.status = self.parser.get_status_code()
            response.headers_at = self._read_at
            response._wake()

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None:
            sink = response.sink
            if sink is not None:
                sink.piece(self._read_at, body)
            else:
                response._chunks.append((self._read_at, body))
                response._wake()

    def on_message_complete(self) -> None:
        response = self.response
        if response is not None:
            response.complete = True
            response.done_at = self._read_at
            response.keep_alive = self.parser.should_keep_alive()
            response._wake()

    def _abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    def peer_closed(self) -> bool:
        """Whether an idle connection has become readable: the server closed it (EOF) or sent bytes
        nobody asked for. Some servers (llama.cpp among them) close after every streamed response
        while announcing keep-alive; the FIN is already in the socket before the event loop reports it,
        so this check keeps the next request off a dead connection."""
        transport = self.transport
        if transport is None:
            return True
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if fd < 0:
            return True
        readable, _, _ = select.select([fd], [], [], 0)
        return bool(readable)


class BodySink(Protocol):
    """Takes a response's body inside the connection's read callback (see :meth:`Response.wait_end`)."""

    def piece(self, arrived: float, data: bytes) -> None:
        """Body bytes that arrived at ``arrived`` (perf_counter); must not raise."""

    def read_done(self) -> None:
        """Every piece of one network read has been given (and ``complete`` is set if it ended the body)."""


class Response:
    """A response being received: status and headers first, then timestamped body pieces.

    The body is read one of two ways: awaiting :meth:`next_chunks` (a task wakes up for every read), or
    handing it to a :class:`BodySink` with :meth:`wait_end`, which processes each read in the connection's
    callback itself (a relay that forwards every read pays no task switch per read).
    """

    __slots__ = (
        "_chunks",
        "_conn",
        "_error",
        "_expiry",
        "_paused",
        "_timer",
        "_timer_at",
        "_waiter",
        "complete",
        "done_at",
        "headers",
        "headers_at",
        "keep_alive",
        "sink",
        "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_at: float | None = None
        self.done_at: float | None = None
        self.complete = False
        self.keep_alive = False
        self._chunks: list[tuple[float, bytes]] = []
        self._error: HTTPClientError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._expiry: tuple[float, str, str, float] = (0.0, "", "", 0.0)
        self._paused = False
        self.sink: BodySink | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, category: str, detail: str) -> None:
        if self._error is None:
            self._error = HTTPClientError(category, detail)
        self._wake()

    async def _wait(self, timeout: float, category: str, what: str) -> None:
        loop = asyncio.get_running_loop()
        self.set_deadline(loop.time() + timeout, category, what, timeout)
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def set_deadline(self, expiry: float, category: str, what: str, timeout: float) -> None:
        """Fail a waiting reader with ``category`` ("no WHAT within TIMEOUT s") unless the body moves on by
        ``expiry`` (loop time).

        One lazily re-armed timer per response instead of a timer per wait: a stream waits once per network
        read, and creating and cancelling a timer each time was a visible share of its CPU.
        """
        self._expiry = (expiry, category, what, timeout)
        if self._timer is None or expiry < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(expiry, self._check_expiry)
            self._timer_at = expiry

    def _check_expiry(self) -> None:
        self._timer = None
        if self._waiter is None or self.complete:
            return
        loop = asyncio.get_running_loop()
        expiry, category, what, timeout = self._expiry
        if self._paused:  # held back by our own reader (its client is slow), not by the server
            expiry = loop.time() + 1.0
        elif loop.time() >= expiry:
            self._fail(category, f"no {what} within {timeout:g} s")
            return
        self._timer = loop.call_at(expiry, self._check_expiry)
        self._timer_at = expiry

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def wait_headers(self, timeout: float) -> None:
        while self.headers_at is None:
            if self._error is not None:
                raise self._error
            await self._wait(timeout, "timeout", "response headers")
        if self._error is not None and not self._chunks:
            raise self._error

    async def next_chunks(self, idle_timeout: float, category: str = "stall") -> list[tuple[float, bytes]]:
        """Body pieces received since the last call as ``(arrival perf_counter, bytes)``; ``[]`` at the end.

        Raises HTTPClientError for a cut stream, bad HTTP, or no bytes within ``idle_timeout`` (reported
        under ``category``: a stall mid-stream, a timeout before the first token).
        """
        while not self._chunks:
            if self.complete:
                self._stop_timer()
                self._conn.pool._release(self._conn)
                return []
            if self._error is not None:
                raise self._error
            await self._wait(idle_timeout, category, "bytes")
        chunks, self._chunks = self._chunks, []
        return chunks

    async def wait_end(self, sink: BodySink) -> None:
        """Hand the body to ``sink`` (pieces already received first) and wait for its end.

        The deadline is the sink's to keep (:meth:`set_deadline`; a first one must be set before). Raises
        HTTPClientError for a cut stream, bad HTTP or a passed deadline; returns at the end of the body or
        when woken early with :meth:`wake` (the sink gave up).
        """
        self.sink = sink
        if self._chunks:
            chunks, self._chunks = self._chunks, []
            for arrived, data in chunks:
                sink.piece(arrived, data)
            sink.read_done()
        loop = asyncio.get_running_loop()
        try:
            while not self.complete and self.sink is sink:
                if self._error is not None:
                    raise self._error
                waiter = self._waiter = loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
        finally:
            self.sink = None
        if self.complete:
            self._stop_timer()
            self._conn.pool._release(self._conn)

    def detach(self) -> None:
        """Stop giving the body to the sink and wake :meth:`wait_end` (the sink gave up on this body)."""
        self.sink = None
        self._wake()

    def pause_reading(self) -> None:
        """Stop reading from the server for now (our reader's own client is slow); deadlines wait too."""
        transport = self._conn.transport
        if not self._paused and transport is not None and not self._conn.closed:
            self._paused = True
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._conn.transport
        if self._paused:
            self._paused = False
            if transport is not None and not self._conn.closed:
                transport.resume_reading()

    async def read_all(self, idle_timeout: float) -> bytes:
        parts: list[bytes] = []
        while pieces := await self.next_chunks(idle_timeout):
            parts.extend(body for _, body in pieces)
        return b"".join(parts)

    def abort(self) -> None:
        """Drop the connection (used when a request is cancelled or abandoned mid-stream)."""
        self._stop_timer()
        if not self.complete:
            self._conn._abort()


class ConnectionPool:
    """Keep-alive connections to one origin; idle connections are reused most-recent first."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port][/path], got {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path_prefix = parts.path.rstrip("/")
        default_port = self.port == (443 if self.scheme == "https" else 80)
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
        self.connect_timeout = connect_timeout
        self.ssl_context = ssl_context or (ssl.create_default_context() if self.scheme == "https" else None)
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self.connections_opened = 0

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise HTTPClientError(
                "timeout", f"connect to {self.host}:{self.port} timed out after {self.connect_timeout:g} s"
            ) from exc
        except OSError as exc:
            raise HTTPClientError("connect", f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self._all.add(conn)
        self.connections_opened += 1
        return conn

    async def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes = b"", *, fresh: bool = False
    ) -> tuple[Response, float | None]:
        """Send a request; return the pending response and, when a new connection was opened for it,
        how long connecting took (seconds)."""
        conn = None
        connect_s = None
        while self._idle and not fresh:
            candidate = self._idle.pop()
            if not candidate.closed and not candidate.peer_closed():
                conn = candidate
                break
            candidate._abort()
        if conn is None:
            started = perf_counter()
            conn = await self._connect()
            connect_s = perf_counter() - started
        lines = [f"{method} {self.path_prefix}{path} HTTP/1.1", f"Host: {self.host_header}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        response = conn.response = Response(conn)
        conn.parser = httptools.HttpResponseParser(conn)
        assert conn.transport is not None
        conn.transport.write(head + body)
        return response, connect_s

    def _release(self, conn: _Connection) -> None:
        response = conn.response
        conn.response = None
        if conn.closed or response is None or not response.keep_alive:
            conn._abort()
            self._all.discard(conn)
            return
        self._idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)

    async def close(self) -> None:
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)


async def probe(base_url: str, timeout: float = 5.0) -> None:
    """Preflight: open (and close) one connection so an unreachable endpoint fails before the run."""
    pool = ConnectionPool(base_url, connect_timeout=timeout)
    try:
        conn = await pool._connect()
        conn._abort()
    finally:
        await pool.close()
