"""ServerState: the in-flight count draining waits on."""

from __future__ import annotations

import asyncio

from proxy.state import ServerState


async def test_waiting_for_idle_ends_when_the_last_request_leaves() -> None:
    state = ServerState()
    assert await state.wait_idle(0.01)  # nothing in flight: at once
    state.enter()
    state.enter()
    assert not await state.wait_idle(0.02)  # still busy: the wait times out
    waiters = [asyncio.create_task(state.wait_idle(5)) for _ in range(2)]
    await asyncio.sleep(0)
    state.leave()
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)  # one request still in flight
    state.leave()
    assert await asyncio.gather(*waiters) == [True, True]
    state.enter()  # a later spell of work needs a wait of its own
    later = asyncio.create_task(state.wait_idle(5))
    await asyncio.sleep(0)
    assert not later.done()
    state.leave()
    assert await later
