"""WaitTimer: one timer for a task's waits, with asyncio.timeout's semantics per wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from proxy.waits import WaitTimer


@contextlib.contextmanager
def _timer() -> Iterator[WaitTimer]:
    """A WaitTimer of the running test's task (it binds to the task that makes it)."""
    waits = WaitTimer()
    try:
        yield waits
    finally:
        waits.close()


async def test_a_wait_longer_than_its_limit_raises_timeout_error() -> None:
    with _timer() as waits, pytest.raises(TimeoutError), waits.limit(0.05):
        await asyncio.sleep(5)
    # The cancellation it used is spent: the task goes on.
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)


async def test_a_wait_within_its_limit_returns_its_result() -> None:
    with _timer() as waits, waits.limit(5):
        value = await asyncio.sleep(0.01, result="done")
    assert value == "done"


@pytest.mark.parametrize(
    ("first_s", "second_s"),
    [
        (30, 0.05),  # the timer armed for a long first wait is moved earlier
        (0.02, 0.1),  # it fires during the second wait and re-arms for its deadline
    ],
)
async def test_a_later_wait_times_out_at_its_own_deadline(first_s: float, second_s: float) -> None:
    with _timer() as waits:
        with waits.limit(first_s):
            await asyncio.sleep(0)
        with pytest.raises(TimeoutError), waits.limit(second_s):
            await asyncio.sleep(5)


async def test_each_wait_gets_its_whole_limit_not_what_is_left_of_the_first() -> None:
    """Waits adding up to more than one limit: the timer, armed for the first wait,
    re-arms for the one in progress instead of ending it."""
    with _timer() as waits:
        for _ in range(4):
            with waits.limit(0.1):
                await asyncio.sleep(0.04)
            await asyncio.sleep(0.02)  # between waits: no clock runs


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def waiter() -> None:
        with _timer() as waits, waits.limit(5):
            await asyncio.sleep(5)

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_enclosing_asyncio_timeout_still_ends_the_wait_as_its_own() -> None:
    with _timer() as waits, pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            with waits.limit(5):
                await asyncio.sleep(5)


async def test_a_closed_timer_never_cancels_its_task() -> None:
    """close() during a wait: its deadline passes inside the wait and nothing fires."""
    waits = WaitTimer()
    with waits.limit(0.02):
        waits.close()
        await asyncio.sleep(0.08)


async def test_a_timer_firing_between_waits_leaves_the_task_alone() -> None:
    with _timer() as waits:
        with waits.limit(0.02):
            await asyncio.sleep(0)
        await asyncio.sleep(0.08)  # the timer fires here, outside any wait
        with waits.limit(5):
            await asyncio.sleep(0.01)


async def test_waits_may_not_nest() -> None:
    with _timer() as waits, waits.limit(5), pytest.raises(AssertionError, match="nest"):
        waits.limit(5)
