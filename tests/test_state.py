"""ServerState: the requests in flight that draining waits on, and cancels."""

from __future__ import annotations

import asyncio

from proxy.state import ServerState


def request_task() -> asyncio.Task[None]:
    """A stand-in for an aiohttp connection task serving one request."""
    return asyncio.create_task(asyncio.sleep(30))


async def test_waiting_for_idle_ends_when_the_last_request_leaves() -> None:
    state = ServerState()
    first, second = request_task(), request_task()
    assert await state.wait_idle(0.01)  # nothing in flight: at once
    state.enter(first)
    state.enter(second)
    assert not await state.wait_idle(0.02)  # still busy: the wait times out
    waiters = [asyncio.create_task(state.wait_idle(5)) for _ in range(2)]
    await asyncio.sleep(0)
    state.leave(first)
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)  # one request still in flight
    state.leave(second)
    assert await asyncio.gather(*waiters) == [True, True]
    state.enter(first)  # a later spell of work needs a wait of its own
    later = asyncio.create_task(state.wait_idle(5))
    await asyncio.sleep(0)
    assert not later.done()
    state.leave(first)
    assert await later
    first.cancel()
    second.cancel()


async def test_cancel_open_cancels_the_requests_in_flight_and_says_spangate_did() -> None:
    """When the drain runs out: each request still in flight has its task cancelled (it
    leaves as it would when its client hangs up); one that already left is untouched;
    `stopping` tells a cancelled request that spangate, not its client, ended it."""
    state = ServerState()
    open_task, done_task = request_task(), request_task()
    state.enter(open_task)
    state.enter(done_task)
    state.leave(done_task)
    assert not state.stopping
    state.cancel_open()
    assert state.stopping
    await asyncio.sleep(0)
    assert open_task.cancelled() and not done_task.done()
    done_task.cancel()
