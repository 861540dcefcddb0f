"""Sub-millisecond timers on Linux.

libuv (uvloop) timers have millisecond resolution: a send scheduled for t fires anywhere in [t, t + 1 ms],
which would show up as schedule lag in the load generator and as noise in the emulator's ground truth.
A timerfd on ``CLOCK_MONOTONIC`` (the clock ``time.monotonic`` and ``time.perf_counter`` read on Linux)
fires within microseconds. Elsewhere callers fall back to ``loop.call_at`` / ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import heapq
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

# ``time.monotonic`` (CLOCK_MONOTONIC) times; elsewhere ``loop.call_at`` is used.


class _ITimerSpec(ctypes.Structure):
    _fields_ = (
        ("interval_sec", ctypes.c_long),
        ("interval_nsec", ctypes.c_long),
        ("value_sec", ctypes.c_long),
        ("value_nsec", ctypes.c_long),
    )


def _load_timerfd() -> tuple[Any, Any] | None:
    if not sys.platform.startswith("linux") or time.get_clock_info("monotonic").implementation != (
        "clock_gettime(CLOCK_MONOTONIC)"
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes, create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_ITimerSpec), ctypes.c_void_p]
    settime.restype = ctypes.c_int
    return create, settime


TIMERFD = _load_timerfd()


class Timer:
    """A cancellable scheduled call (what ``loop.call_at`` returns, for :class:`PreciseTimers`)."""

    __slots__ = ("args", "callback", "owner")

    def __init__(self, owner: PreciseTimers, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.owner, self.callback, self.args = owner, callback, args

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback, self.args = None, ()
            self.owner.forget()


class PreciseTimers:
    """All timers of one emulator on one timerfd, opened while any timer is pending (no leaked fds)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[tuple[float, int, Timer]] = []
        self.seq = 0
        self.live = 0  # pending, not cancelled
        self.fd = -1
        self.armed = math.inf
        self.firing = False  # fire() arms once at its end, not once per callback that reschedules
        self.spec = _ITimerSpec()

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> Timer:
        timer = Timer(self, callback, args)
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, timer))
        self.live += 1
        if self.fd < 0:
            assert TIMERFD is not None
            self.fd = TIMERFD[0](time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            if self.fd < 0:
                raise OSError(ctypes.get_errno(), "timerfd_create failed")
            self.loop.add_reader(self.fd, self.fire)
        if when < self.armed and not self.firing:
            self.arm(when)
        return timer

    def arm(self, when: float) -> None:
        self.armed = when
        sec = math.floor(when)
        self.spec.value_sec, self.spec.value_nsec = sec, max(1, int((when - sec) * 1e9))
        assert TIMERFD is not None
        TIMERFD[1](self.fd, 1, ctypes.byref(self.spec), None)  # 1: TFD_TIMER_ABSTIME

    def forget(self) -> None:
        self.live -= 1
        if self.live == 0:
            self.close()

    def fire(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)
        self.armed = math.inf
        heap = self.heap
        now = time.monotonic()
        self.firing = True
        try:
            while heap and heap[0][0] <= now:
                timer = heapq.heappop(heap)[2]
                callback, args = timer.callback, timer.args
                if callback is None:
                    continue
                timer.callback, timer.args = None, ()
                self.live -= 1
                try:
                    callback(*args)
                except Exception as exc:
                    msg = "emulator timer callback failed"
                    self.loop.call_exception_handler({"message": msg, "exception": exc})
        finally:
            self.firing = False
        if self.live == 0:
            self.close()
        elif self.fd >= 0:
            while heap[0][2].callback is None:
                heapq.heappop(heap)
            self.arm(heap[0][0])

    def close(self) -> None:
        self.heap.clear()
        self.armed = math.inf
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


_PER_LOOP: dict[int, PreciseTimers] = {}


def loop_timers(loop: asyncio.AbstractEventLoop) -> PreciseTimers | None:
    """The precise timers of ``loop`` (one timerfd per loop), or None where timerfd is unavailable."""
    if TIMERFD is None:
        return None
    timers = _PER_LOOP.get(id(loop))
    if timers is None or timers.loop is not loop:
        timers = _PER_LOOP[id(loop)] = PreciseTimers(loop)
    return timers


async def sleep_until(when: float) -> None:
    """Sleep until ``time.monotonic() >= when`` with microsecond precision where the platform allows."""
    loop = asyncio.get_running_loop()
    timers = loop_timers(loop)
    if timers is None:
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        return
    waiter = loop.create_future()
    timer = timers.call_at(when, _wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
