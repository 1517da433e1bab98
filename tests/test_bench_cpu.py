"""The benchmark's CPU readings (bench/procs.py): nanoseconds where they are whole,
ticks where a thread's time went with it."""

from __future__ import annotations

import os
import time

from bench.procs import CpuReading, cpu_seconds

TICK = 1 / os.sysconf("SC_CLK_TCK")
TASKS = frozenset({(1, 1), (1, 2)})


def test_the_difference_is_exact_when_every_thread_is_still_there() -> None:
    """Ticks round 3.25 ms of work to 0 or 10 ms; the threads' run time gives it whole."""
    earlier = CpuReading(ticks_s=1.00, exact_s=1.004, tasks=TASKS)
    later = CpuReading(ticks_s=1.00, exact_s=1.00725, tasks=TASKS | {(1, 3)})
    assert later - earlier == 1.00725 - 1.004


def test_the_ticks_count_when_a_thread_of_the_first_reading_is_gone() -> None:
    earlier = CpuReading(ticks_s=1.00, exact_s=1.004, tasks=TASKS)
    later = CpuReading(ticks_s=1.05, exact_s=0.300, tasks=frozenset({(1, 1)}))
    assert later - earlier == 1.05 - 1.00


def test_the_ticks_count_when_a_thread_came_and_went_in_between() -> None:
    """Same threads at both readings, but the ticks saw 50 ms more than the live
    threads' nanoseconds: a thread ran and exited between them."""
    earlier = CpuReading(ticks_s=1.00, exact_s=1.004, tasks=TASKS)
    later = CpuReading(ticks_s=1.06, exact_s=1.0142, tasks=TASKS)
    assert later - earlier == 1.06 - 1.00


def test_without_schedstat_the_ticks_count() -> None:
    earlier = CpuReading(ticks_s=1.00, exact_s=None, tasks=TASKS)
    later = CpuReading(ticks_s=1.02, exact_s=1.5, tasks=TASKS)
    assert later - earlier == 1.02 - 1.00


def test_a_reading_of_this_process_agrees_with_its_own_cpu_clock() -> None:
    """Busy work in this process, read from /proc, matches process_time to well under
    a tick (CPU time against CPU time: no wall clock involved)."""
    before, clock = cpu_seconds(os.getpid()), time.process_time()
    total = 0
    for number in range(400_000):
        total += number
    used, clocked = cpu_seconds(os.getpid()) - before, time.process_time() - clock
    # Without schedstat (some kernels) it is the ticks: within one.
    assert abs(used - clocked) < (TICK / 2 if before.exact_s is not None else TICK)
