"""One engine process: ``python -m tokenrace.engines._child '<json settings>'`` (started by ``Engine``).

It serves until SIGTERM, or until its parent is gone: the kernel sends SIGTERM when the parent dies
(``PR_SET_PDEATHSIG``; the default action kills even while the model loads and the GIL is held), and
once loaded the main thread also watches ``os.getppid()`` (other platforms, and a parent that died before
``prctl`` ran).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

PR_SET_PDEATHSIG = 1
PARENT_POLL_S = 0.25


def _say(message: str) -> None:
    sys.stderr.write(f"tokenrace-engine: {message}\n")
    sys.stderr.flush()


def _die_with_parent(parent_pid: int) -> None:
    """Ask for SIGTERM on the parent's death; exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
                _say(f"prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}")
        except (OSError, AttributeError) as exc:
            _say(f"prctl unavailable ({exc}); relying on the parent watcher")
    if os.getppid() != parent_pid:
        _say("parent is gone before start; exiting")
        os._exit(0)


def _params(args: dict[str, Any]) -> Any:
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = args["model_path"]
    p.hostnames = [args["host"]]
    p.port = int(args["port"])
    p.n_parallel = int(args["parallel"])
    p.n_ctx = int(args["context"])  # total: each slot gets n_ctx / n_parallel
    p.cpuparams.n_threads = int(args["threads"])
    p.cpuparams_batch.n_threads = int(args["threads"])
    p.model_alias = {args["alias"]}
    p.use_jinja = True  # render the GGUF's own chat template (system prompts, roles) rather than a guess
    p.endpoint_metrics = True
    p.endpoint_slots = True
    return p


def _stop(signum: int, frame: FrameType | None) -> None:
    _say(f"stopping on {signal.Signals(signum).name}")
    os._exit(0)  # the server keeps no state worth a slow teardown; the kernel closes its sockets


def main() -> None:
    args = json.loads(sys.argv[1])
    parent_pid = int(args["parent_pid"])
    _die_with_parent(parent_pid)
    _say(
        f"pid {os.getpid()} serving {args['model_path']} as {args['alias']!r} on {args['host']}:{args['port']}"
        f" (slots {args['parallel']}, context {args['context']}, threads {args['threads']})"
    )
    import xllamacpp

    params = _params(args)
    try:
        server = xllamacpp.Server(params)  # loads the model and serves while this object lives
    except RuntimeError as exc:
        _say(f"llama.cpp server did not start: {exc}")
        sys.exit(3)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    _say(f"ready at {server.listening_address}")
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    _say("parent is gone; exiting")
    os._exit(0)


if __name__ == "__main__":
    main()
