"""The telemetry worker thread (RecordSink): every record processed, and no wake-ups
while nothing comes."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from instrumentation import worker
from instrumentation.export import DropCounter
from instrumentation.records import RequestRecord
from instrumentation.worker import RecordSink

#: Bounds for waiting on the worker: a broken worker fails the test, never hangs it.
WAIT_S = 10.0


class _Processed:
    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.changed = threading.Condition()

    def __call__(self, record: RequestRecord) -> None:
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.records) >= count, WAIT_S)


def _wait_idle(sink: RecordSink) -> None:
    deadline = time.monotonic() + WAIT_S
    while not sink._idle:
        assert time.monotonic() < deadline, "the worker never went idle"
        time.sleep(0.01)


def _runs(thread: threading.Thread) -> int:
    """How many times the kernel has run `thread` (Linux schedstat: timeslices)."""
    stat = Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text()
    return int(stat.split()[2])


@contextlib.contextmanager
def _idle_sink() -> Iterator[tuple[RecordSink, _Processed]]:
    """A worker that has processed one record and gone idle; shut down afterwards."""
    processed = _Processed()
    sink = RecordSink(processed, DropCounter())
    try:
        sink.submit(RequestRecord("POST", "/v1/chat/completions"))
        assert processed.wait_for(1)
        _wait_idle(sink)
        yield sink, processed
    finally:
        sink.shutdown(WAIT_S)
    assert not sink._runner.is_alive(), "the worker did not stop at shutdown"


def test_an_idle_worker_is_woken_by_the_next_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a quiet spell the worker sleeps without a timer worth waiting for; the next
    record wakes it, and records that follow are all processed."""
    monkeypatch.setattr(worker, "IDLE_WAIT_S", 3600.0)
    with _idle_sink() as (sink, processed):
        for _ in range(50):
            sink.submit(RequestRecord("POST", "/v1/chat/completions"))
        assert processed.wait_for(51)
        assert sink.flush(WAIT_S)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc schedstat")
def test_an_idle_worker_thread_is_not_woken_by_a_timer() -> None:
    """An idle sidecar costs no CPU for telemetry: the worker sleeps until a record comes
    (polling with back-off woke it every 2-50 ms, ~10 times in half a second)."""
    with _idle_sink() as (sink, _):
        before = _runs(sink._runner)
        time.sleep(0.5)
        assert _runs(sink._runner) - before <= 1


def test_a_record_counts_as_finished_only_once_its_drain_is_flushed() -> None:
    """settle() waits for the flush that writes a record's held line; records queued
    while the worker is busy are flushed every FLUSH_EVERY records and at the end."""
    flushed: list[int] = []
    held: list[RequestRecord] = []
    release = threading.Event()

    def flush() -> None:
        assert release.wait(WAIT_S)
        flushed.append(len(held))
        held.clear()

    sink = RecordSink(held.append, DropCounter(), flush=flush)
    try:
        sink.submit(RequestRecord("POST", "/v1/chat/completions"))
        assert not sink.settle(0.2)  # processed, but its flush has not returned
        for _ in range(2 * worker.FLUSH_EVERY + 8):
            sink.submit(RequestRecord("POST", "/v1/chat/completions"))
        release.set()
        assert sink.settle(WAIT_S)
        assert flushed == [1, worker.FLUSH_EVERY, worker.FLUSH_EVERY, 8]
    finally:
        release.set()
        sink.shutdown(WAIT_S)


def test_lines_that_cannot_be_written_are_counted_and_the_records_still_finish() -> None:
    def flush() -> None:
        raise BrokenPipeError("stdout is gone")

    drops = DropCounter()
    sink = RecordSink(lambda record: None, drops, flush=flush)
    try:
        for _ in range(3):
            sink.submit(RequestRecord("POST", "/v1/chat/completions"))
        assert sink.settle(WAIT_S)
    finally:
        sink.shutdown(WAIT_S)
    assert drops.snapshot()[("logs", "write_failed")] == 3
