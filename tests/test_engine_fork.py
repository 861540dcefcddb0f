"""A forked child does not inherit the engine bookkeeping: it owns none of the parent's engines, and SIGTERM
kills it outright (an inherited Python-level handler once hung a multiprocessing pool's terminate)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tokenrace.engines import server


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_forked_child_forgets_engines_and_dies_of_sigterm() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    sentinel = object()
    signal.signal(signal.SIGTERM, server._on_sigterm)
    server._live[id(sentinel)] = sentinel  # type: ignore[assignment]
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what it inherited, then wait to be terminated
            try:
                clean = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and not server._live
                os.write(write, b"1" if clean else b"0")
                signal.pause()
            finally:
                os._exit(3)
        os.close(write)
        inherited_clean = os.read(read, 1) == b"1"
        os.close(read)
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:  # SIGTERM did not end it: do not leave it behind
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child survived SIGTERM")
        assert inherited_clean
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    finally:
        server._live.pop(id(sentinel), None)
        signal.signal(signal.SIGTERM, previous)
    assert signal.getsignal(signal.SIGTERM) == previous
