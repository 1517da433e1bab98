"""Process lifecycle state shared by the handlers and the serve loop."""

from __future__ import annotations

import asyncio
from typing import Any

#: After server.drain_timeout_s, how long the requests still open get to end once
#: cancelled (a stream its last write, every request its telemetry). aiohttp's own
#: shutdown waits up to twice this more for any that ignore the cancellation; never 0,
#: which aiohttp reads as "no limit".
WIND_DOWN_S = 0.5
#: How long the pending telemetry may take to flush once the requests are done.
TELEMETRY_FLUSH_S = 10.0


def stop_bound_s(drain_timeout_s: float) -> float:
    """The longest a spangate process should take from SIGTERM to exit: the drain, the
    wind-down of the requests it left (spangate's, then aiohttp's two waits), and the
    telemetry flush."""
    return drain_timeout_s + 3 * WIND_DOWN_S + TELEMETRY_FLUSH_S


class ServerState:
    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        #: The drain ran out (server.drain_timeout_s): the requests still open are being
        #: cancelled by spangate, not by their clients.
        self.stopping = False
        #: The tasks of the requests in flight (aiohttp's, one per connection).
        self._open: set[asyncio.Task[Any]] = set()
        # Only while someone waits for idle: every request entering and leaving would
        # otherwise clear and set an Event.
        self._idle: asyncio.Event | None = None

    @property
    def inflight(self) -> int:
        return len(self._open)

    def enter(self, task: asyncio.Task[Any]) -> None:
        self._open.add(task)

    def leave(self, task: asyncio.Task[Any]) -> None:
        self._open.discard(task)
        if not self._open and self._idle is not None:
            self._idle.set()
            self._idle = None

    def cancel_open(self) -> None:
        """Cancel every request still in flight, as aiohttp does when a client hangs up
        (handler_cancellation): each ends the way it ends then, and leaves."""
        self.stopping = True
        for task in self._open:
            task.cancel()

    async def wait_idle(self, limit_s: float) -> bool:
        """Wait until no request is in flight; False if `limit_s` ran out first."""
        if not self._open:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        idle = self._idle
        try:
            async with asyncio.timeout(limit_s):
                await idle.wait()
        except TimeoutError:
            return False
        return True
