"""WaitTimer: one timer for a task's waits, with asyncio.timeout's semantics per wait."""

from __future__ import annotations

import asyncio

import pytest

from proxy.waits import WaitTimer


async def test_a_wait_longer_than_its_limit_raises_timeout_error() -> None:
    waits = WaitTimer()
    try:
        with pytest.raises(TimeoutError), waits.limit(0.05):
            await asyncio.sleep(5)
    finally:
        waits.close()
    # The cancellation it used is spent: the task goes on.
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)


async def test_a_wait_within_its_limit_returns_its_result() -> None:
    waits = WaitTimer()
    try:
        with waits.limit(5):
            value = await asyncio.sleep(0.01, result="done")
    finally:
        waits.close()
    assert value == "done"


async def test_a_later_wait_with_a_shorter_limit_times_out_at_its_own_deadline() -> None:
    """The timer armed for a long first wait is moved earlier for a short second one."""
    waits = WaitTimer()
    try:
        with waits.limit(30):
            await asyncio.sleep(0)
        with pytest.raises(TimeoutError), waits.limit(0.05):
            await asyncio.sleep(5)
    finally:
        waits.close()


async def test_each_wait_gets_its_whole_limit_not_what_is_left_of_the_first() -> None:
    """Waits adding up to more than one limit: the timer, armed for the first wait,
    re-arms for the one in progress instead of ending it."""
    waits = WaitTimer()
    try:
        for _ in range(4):
            with waits.limit(0.1):
                await asyncio.sleep(0.04)
            await asyncio.sleep(0.02)  # between waits: no clock runs
    finally:
        waits.close()


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def waiter() -> None:
        waits = WaitTimer()
        try:
            with waits.limit(5):
                await asyncio.sleep(5)
        finally:
            waits.close()

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_closed_timer_never_cancels_its_task() -> None:
    """close() during a wait: its deadline passes inside the wait and nothing fires."""
    waits = WaitTimer()
    with waits.limit(0.02):
        waits.close()
        await asyncio.sleep(0.08)


async def test_a_later_longer_wait_still_times_out_once_its_own_deadline_passes() -> None:
    """The timer armed for a short first wait fires during a longer second one,
    re-arms for the second's deadline, and ends it there."""
    waits = WaitTimer()
    try:
        with waits.limit(0.02):
            await asyncio.sleep(0)
        with pytest.raises(TimeoutError), waits.limit(0.1):
            await asyncio.sleep(5)
    finally:
        waits.close()


async def test_an_enclosing_asyncio_timeout_still_ends_the_wait_as_its_own() -> None:
    waits = WaitTimer()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                with waits.limit(5):
                    await asyncio.sleep(5)
    finally:
        waits.close()


async def test_waits_may_not_nest() -> None:
    waits = WaitTimer()
    try:
        with waits.limit(5), pytest.raises(AssertionError, match="nest"):
            waits.limit(5)
    finally:
        waits.close()


async def test_a_timer_firing_between_waits_leaves_the_task_alone() -> None:
    waits = WaitTimer()
    try:
        with waits.limit(0.02):
            await asyncio.sleep(0)
        await asyncio.sleep(0.08)  # the timer fires here, outside any wait
        with waits.limit(5):
            await asyncio.sleep(0.01)
    finally:
        waits.close()
