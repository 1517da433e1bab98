"""Timeouts for one task's waits on the upstream, one wait after another, with one timer.

`asyncio.timeout` builds a Timeout, arms a timer and cancels it for every wait: two of
them per request (response headers, then the body) were ~5 % of spangate's CPU per
request, and one per read was ~5 µs per chunk of a stream. A `WaitTimer` arms one timer
and, when it fires during a later wait than the one it was armed for, re-arms it for
that wait's deadline instead; a fast request never sees it fire. Expiry cancels the
task and the wait raises TimeoutError, as with `asyncio.timeout` (a cancellation from
elsewhere stays a cancellation).
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class WaitTimer:
    """`with timer.limit(s): await ...` raises TimeoutError if that wait lasts over `s`.

    Bound to the task that creates it; `close()` when done with it. Waits must not nest.
    """

    __slots__ = (
        "_armed_at",
        "_armed_for",
        "_cancelling",
        "_deadline",
        "_expired",
        "_loop",
        "_task",
        "_timer",
        "_waiting",
        "_waits",
    )

    def __init__(self) -> None:
        task = asyncio.current_task()
        assert task is not None, "a WaitTimer belongs to a running task"
        self._loop = asyncio.get_running_loop()
        self._task = task
        self._waits = 0
        self._waiting = False
        self._deadline = 0.0
        #: The wait the timer was armed for. Comparing waits, not clocks: uvloop's
        #: millisecond timers may fire a hair before the deadline loop.time() computes.
        self._armed_for = 0
        self._armed_at = 0.0
        self._cancelling = 0
        self._expired = False
        self._timer: asyncio.TimerHandle | None = None

    def limit(self, seconds: float) -> WaitTimer:
        # A nested wait's exit would end the outer one's clock without a word.
        assert not self._waiting, "WaitTimer waits must not nest"
        self._waits += 1
        self._waiting = True
        self._deadline = self._loop.time() + seconds
        self._cancelling = self._task.cancelling()
        if self._timer is None or self._deadline < self._armed_at:
            self._arm()
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._waiting = False
        if self._expired:
            self._expired = False
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = self._waits
        self._armed_at = self._deadline
        self._timer = self._loop.call_at(self._deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._waiting:
            return  # between waits: the next one arms the timer again
        if self._waits != self._armed_for:
            self._arm()  # a later wait: its own deadline
            return
        self._expired = True
        self._task.cancel()
