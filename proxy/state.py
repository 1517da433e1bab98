"""Process lifecycle state shared by the handlers and the serve loop."""

from __future__ import annotations

import asyncio


class ServerState:
    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.inflight = 0
        # Only while someone waits for idle: every request entering and leaving would
        # otherwise clear and set an Event.
        self._idle: asyncio.Event | None = None

    def enter(self) -> None:
        self.inflight += 1

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._idle is not None:
            self._idle.set()
            self._idle = None

    async def wait_idle(self, limit_s: float) -> bool:
        """Wait until no request is in flight; False if `limit_s` ran out first."""
        if self.inflight == 0:
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
