"""llama.cpp servers (xllamacpp) as child processes that never outlive tokenrace.

xllamacpp's ``Server`` serves HTTP for as long as the Python object lives and holds the GIL while it
loads a model, so each engine gets its own interpreter (``tokenrace.engines._child``). The child:

* runs in its own session, so a terminal Ctrl-C reaches only tokenrace, which then stops engines in order;
* asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``, Linux) and also polls
  ``os.getppid()`` once loaded, so even a SIGKILLed tokenrace leaves no orphan;
* writes stdout and stderr (llama.cpp logs there) to one log file, where a failed start's cause is found.

The parent stops its engines on ``stop()``, at the end of a ``with`` block, at interpreter exit
(``atexit``) and on SIGTERM (a handler is installed when the process had none).
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import orjson

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# How far free_port() walks up from a preferred port before it lets the OS choose.
PORT_SCAN = 100
# Log lines that only restate that something failed; a line that says why is preferred.
_GENERIC = re.compile(
    r"failed to load model\s*(?:,.*)?$|exiting due to|failed to init server|cleaning up before exit|^traceback",
    re.IGNORECASE,
)
_FAILURE = re.compile(r"error|failed|fail to|cannot|can't|couldn't|unable|invalid|not found|no such", re.IGNORECASE)
# What the child writes once the server has bound its port and loaded the model (see _child.py).
READY_MARK = b"tokenrace-engine: ready at "
# llama.cpp's log prefix: "0.00.004.750 E " (elapsed time, level).
_LLAMA_PREFIX = re.compile(r"^\d+\.\d+\.\d+\.\d+ ([DIWE]) +")


class EngineError(RuntimeError):
    """An engine could not start or serve; the message is one line for the user."""


@dataclass(frozen=True)
class EngineSettings:
    """How to run one llama.cpp server.

    ``context`` is the total KV-cache size in tokens, shared by the slots: with the defaults each of the
    4 slots holds 8192 / 4 = 2048 tokens of prompt plus output (llama.cpp's ``n_ctx`` / ``n_parallel``).
    ``threads`` defaults to ``os.cpu_count()`` (both decode and prompt processing). ``alias`` is the model
    name the server reports and accepts (default: the file's stem). ``port`` None means any free port;
    a taken port is skipped for the next free one.
    """

    model_path: Path
    port: int | None = None
    parallel: int = 4
    context: int = 8192
    threads: int | None = None
    log_path: Path | None = None
    alias: str | None = None


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when nothing listens there, else the next free port above it, else one the OS picks."""
    if preferred:
        for port in range(preferred, min(preferred + PORT_SCAN, 65536)):
            if _port_is_free(port):
                if port != preferred:
                    log.warning("port %d is in use; using %d", preferred, port)
                return port
        log.warning("ports %d-%d are in use; letting the OS choose", preferred, preferred + PORT_SCAN - 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR as llama.cpp's server sets it: a port in TIME_WAIT is usable, one with a listener is not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def default_log_dir() -> Path:
    """``$XDG_CACHE_HOME/tokenrace/logs`` (``~/.cache/tokenrace/logs``): logs outlive the run for post-mortems."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tokenrace" / "logs"


class Engine:
    """One llama.cpp server in a child process; a context manager (``with Engine(s) as e:``)."""

    def __init__(self, settings: EngineSettings) -> None:
        if settings.parallel < 1:
            raise ValueError("parallel must be at least 1")
        if settings.context < settings.parallel:
            raise ValueError("context is shared by the slots: it must be at least `parallel` tokens")
        self.settings = settings
        self.alias = settings.alias or Path(settings.model_path).stem
        self.threads = settings.threads or os.cpu_count() or 1
        self.port = settings.port or 0
        self.startup_s: float | None = None  # process spawn -> first /health 200
        self._t_spawn = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root, what an endpoint's ``base_url`` takes."""
        return f"{self.url}/v1"

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs (None before start and after stop)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        if self.settings.log_path is not None:
            return Path(self.settings.log_path)
        return default_log_dir() / f"{_safe_name(self.alias)}-{self.port}.log"

    def start(self, timeout_s: float = 120) -> Engine:
        """Spawn the server and wait until ``/health`` answers 200 (llama.cpp says 503 while it loads)."""
        if self._proc is not None:
            return self
        model = Path(self.settings.model_path)
        if not model.is_file():
            raise EngineError(f"model file not found: {model}")
        deadline = time.monotonic() + timeout_s
        preferred = self.settings.port
        for _attempt in range(3):
            self.port = free_port(preferred)
            try:
                self._spawn(model)
                self._wait_healthy(deadline, timeout_s)
                return self
            except _PortTaken:  # another process bound the port between our check and the server's bind
                self.stop()
                preferred = self.port + 1
            except BaseException:
                self.stop()
                raise
        raise EngineError(f"engine {self.alias}: could not bind a port near {self.settings.port or self.port}")

    def _spawn(self, model: Path) -> None:
        path = self.log_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log = path.open("wb")  # one log per start: a failed start's cause is all that is in it
        except OSError as exc:
            raise EngineError(f"cannot write the engine log {path}: {exc.strerror or exc}") from exc
        args = {
            "model_path": str(model.resolve()),
            "host": HOST,
            "port": self.port,
            "parallel": self.settings.parallel,
            "context": self.settings.context,
            "threads": self.threads,
            "alias": self.alias,
            "parent_pid": os.getpid(),
        }
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = [sys.executable, "-m", "tokenrace.engines._child", orjson.dumps(args).decode()]
        t0 = time.perf_counter()
        self._proc = _popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self._t_spawn = t0
        _register(self)

    def _wait_healthy(self, deadline: float, timeout_s: float) -> None:
        """Wait for the child's ready line, then /health 200.

        The ready line comes only once the server has bound its port and loaded the model, so a
        foreign server on the port (one that won a race for it) is never mistaken for ours.
        """
        proc = self._proc
        assert proc is not None
        ready = _LogWatch(self.log_path, READY_MARK)
        while True:
            code = proc.poll()
            if code is not None:
                self._raise_exited(code)
            if ready.seen() and _health(self.port) == 200 and proc.poll() is None:
                self.startup_s = time.perf_counter() - self._t_spawn
                log.info("engine %s ready on %s in %.2f s", self.alias, self.base_url, self.startup_s)
                return
            if time.monotonic() > deadline:
                raise EngineError(
                    f"engine {self.alias} did not become ready within {timeout_s:g} s"
                    f" (last log line: {_last_line(self.log_path) or 'none'}; log: {self.log_path})"
                )
            time.sleep(0.05)

    def _raise_exited(self, code: int) -> None:
        lines = _read_tail(self.log_path)
        if any("couldn't bind" in line for line in lines):
            raise _PortTaken
        why = _error_line(lines) or f"exited with code {code}"
        raise EngineError(f"engine {self.alias} failed to start: {why} (log: {self.log_path})")

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM the engine's process group, SIGKILL it after ``timeout_s``; safe to call twice."""
        proc, self._proc = self._proc, None
        _unregister(self)
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning("engine %s did not stop within %g s; killing it", self.alias, timeout_s)
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
            _signal_group(proc.pid, signal.SIGKILL)  # anything the server left in its group
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Engine({self.alias!r}, port={self.port}, pid={self.pid})"


class _LogWatch:
    """Reads a growing log incrementally and remembers whether ``mark`` has appeared."""

    def __init__(self, path: Path, mark: bytes) -> None:
        self.path = path
        self.mark = mark
        self.offset = 0
        self.tail = b""
        self.found = False

    def seen(self) -> bool:
        if self.found:
            return True
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return False
        self.offset += len(data)
        window = self.tail + data
        self.found = self.mark in window
        self.tail = window[-len(self.mark) :]
        return self.found


class _PortTaken(Exception):
    """The server could not bind its port (lost a race for it)."""


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "engine"


def _health(port: int) -> int | None:
    conn = http.client.HTTPConnection(HOST, port, timeout=2.0)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _signal_group(pid: int, sig: int) -> None:
    # The child leads its own session, so its pid is its process group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _read_tail(path: Path, limit: int = 64 * 1024) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()


def _last_line(path: Path) -> str | None:
    lines = [line.strip() for line in _read_tail(path) if line.strip()]
    return _LLAMA_PREFIX.sub("", lines[-1]) if lines else None


def _error_line(lines: list[str]) -> str | None:
    """The line of a failed start's log that best says why: llama.cpp's first specific error.

    llama.cpp logs the cause first (``invalid magic characters``, ``data is not within the file bounds``)
    and then generic consequences (``failed to load model``, ``exiting due to ...``), so the first error
    that is not generic wins; lines without llama.cpp's level prefix are searched by keyword.
    """
    errors: list[str] = []
    others: list[str] = []
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        match = _LLAMA_PREFIX.match(line)
        text = line[match.end() :] if match else line
        if match and match.group(1) == "E":
            errors.append(text)
        elif not match and _FAILURE.search(text):
            others.append(text)
    for group in (errors, others):
        specific = [line for line in group if not _GENERIC.search(line)]
        if specific:
            return specific[0][:400]
    for group in (errors, others):
        if group:
            return group[0][:400]
    return None


# ------------------------------------------------------------------------------------------------
# Spawning and the parent's cleanup

# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. A start() from a
# short-lived thread would take its engine down with it, so such spawns go through one long-lived thread.
_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    global _spawner

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, **kwargs)

    if threading.current_thread() is threading.main_thread():
        return spawn()
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenrace-engine-spawner")
    return _spawner.submit(spawn).result()


_live: dict[int, Engine] = {}
_live_lock = threading.RLock()  # re-entrant: the SIGTERM handler may run while the main thread holds it
_hooks_installed = False


def _register(engine: Engine) -> None:
    global _hooks_installed
    with _live_lock:
        _live[id(engine)] = engine
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(stop_all)
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _on_sigterm)


def _unregister(engine: Engine) -> None:
    with _live_lock:
        _live.pop(id(engine), None)


def stop_all(timeout_s: float = 5) -> None:
    """Stop every engine this process started, newest first (atexit and SIGTERM run this)."""
    with _live_lock:
        engines = list(_live.values())
    for engine in reversed(engines):
        with contextlib.suppress(Exception):
            engine.stop(timeout_s)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Stop the engines, then die of SIGTERM as the process would have without this handler."""
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _after_fork_in_child() -> None:
    """A forked child owns none of its parent's engines: it must not stop them on its own exit, and its
    SIGTERM must kill it outright (a Python-level handler misses a signal that lands just before a blocking
    call, and a multiprocessing worker killed that way would hang its pool)."""
    global _live_lock
    _live_lock = threading.RLock()  # the parent's may have been held by another thread at fork time
    _live.clear()
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_after_fork_in_child)
