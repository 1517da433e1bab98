"""Process lifecycle state shared by the handlers and the serve loop."""

from __future__ import annotations

import asyncio


class ServerState:
    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.inflight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    async def wait_idle(self, limit_s: float) -> bool:
        """Wait until no request is in flight; False if `limit_s` ran out first."""
        try:
            async with asyncio.timeout(limit_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
