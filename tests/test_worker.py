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
    assert not sink._thread.is_alive(), "the worker did not stop at shutdown"


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
        before = _runs(sink._thread)
        time.sleep(0.5)
        assert _runs(sink._thread) - before <= 1


def test_a_record_counts_as_finished_only_once_its_drain_is_flushed() -> None:
    """settle() returns only after the flush that writes the records' held lines; under
    sustained load a drain is flushed every FLUSH_EVERY records, not only at its end."""
    held: list[RequestRecord] = []
    written: list[RequestRecord] = []
    flushes: list[int] = []

    def flush() -> None:
        flushes.append(len(held))
        written.extend(held)
        held.clear()

    sink = RecordSink(held.append, DropCounter(), flush=flush)
    try:
        records = [RequestRecord("POST", "/v1/chat/completions") for _ in range(200)]
        for record in records:
            sink.submit(record)
        assert sink.settle(WAIT_S)
        assert written == records
        assert max(flushes) <= worker.FLUSH_EVERY
    finally:
        sink.shutdown(WAIT_S)
