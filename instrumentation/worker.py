"""The telemetry worker: turns finished request records into spans, metrics and logs.

Runs on its own thread. Records arrive through a bounded queue (full → drop
and count); everything expensive — decoding bodies, building attributes,
encoding — happens here, never on the event loop.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from instrumentation.export import DropCounter
from instrumentation.records import RequestRecord

log = logging.getLogger("spangate.telemetry")

#: How often the worker looks for records while they keep coming: polling, not a
#: wake-up per record (`Event.set` took a lock and a notify on every request, ~2 % of
#: the event loop's time in the bench profile). When a poll finds none, the worker
#: sleeps until the next record wakes it (one `Event.set` per idle spell, not per
#: request): backing off by polling cost a stream arriving chunk by chunk ~5 wake-ups,
#: ~0.17 ms of CPU (bench/README.md). IDLE_POLL_S is the telemetry process sender's
#: back-off (instrumentation/offload.py); IDLE_WAIT_S the idle worker's safety net.
POLL_S = 0.002
IDLE_POLL_S = 0.05
IDLE_WAIT_S = 1.0
#: The GIL switch interval while telemetry threads run. A busy telemetry or
#: exporter thread keeps the event loop waiting for up to this long when a
#: socket becomes ready (the default 5 ms showed up as p99 stalls).
SWITCH_INTERVAL_S = 0.0005
#: Under sustained load a drain never ends: its held log lines are written (and its
#: records counted as finished, for settle()) every this many records.
FLUSH_EVERY = 64


class RecordSink:
    """A bounded hand-off from the event loop to a processing thread."""

    def __init__(
        self,
        process: Any,
        drops: DropCounter,
        max_queue: int = 8192,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self._process = process
        #: Called after every FLUSH_EVERY records and at the end of each drain (held
        #: log lines are written there); a record counts as finished only after it.
        self._flush = flush
        self._drops = drops
        self._max_queue = max_queue
        self._queue: collections.deque[RequestRecord] = collections.deque()
        #: Records accepted and records finished (processed or failed): settle() compares.
        self._accepted = 0
        self._finished = 0
        self._wake = threading.Event()
        #: The worker sleeps until woken: the next submit() must wake it.
        self._idle = False
        self._busy = False
        self._stopped = False
        self._runner = threading.Thread(target=self._run, name="spangate-telemetry", daemon=True)
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._runner.start()

    def submit(self, record: RequestRecord) -> None:
        """Called on the request path: O(1), never blocks, never raises."""
        if len(self._queue) >= self._max_queue:
            self._drops.add("records", "queue_full")
            return
        self._queue.append(record)
        self._accepted += 1
        if self._idle:
            self._idle = False
            self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            if self._drain():
                self._wake.wait(POLL_S)
            else:
                # Idle first, then a last look: a record appended in between is either
                # seen here or wakes the wait (submit() checks the flag after appending).
                self._idle = True
                if not self._queue:
                    self._wake.wait(IDLE_WAIT_S)
                self._idle = False
            self._wake.clear()
        self._drain()

    def _drain(self) -> int:
        done = unflushed = 0
        try:
            while self._queue:
                self._busy = True
                record = self._queue.popleft()
                try:
                    self._process(record)
                except Exception:
                    # Telemetry must never take the proxy down; say so quietly.
                    log.debug("telemetry processing failed", exc_info=True)
                    self._drops.add("records", "processing_error")
                done += 1
                unflushed += 1
                if unflushed >= FLUSH_EVERY:
                    self._flushed(unflushed)
                    unflushed = 0
        finally:
            # Whatever ended the drain, the lines it held go out and its records count.
            if unflushed:
                self._flushed(unflushed)
            self._busy = False
        return done

    def _flushed(self, count: int) -> None:
        if self._flush is not None:
            try:
                self._flush()
            except Exception:
                # The records were processed; their request lines are what was lost.
                log.debug("request lines not written", exc_info=True)
                self._drops.add("logs", "write_failed", count)
        self._finished += count

    def settle(self, timeout_s: float) -> bool:
        """Every record accepted before this call processed — not waiting for later ones,
        so a scrape under load does not wait for the queue to run dry."""
        target = self._accepted
        deadline = time.monotonic() + timeout_s
        while self._finished < target:
            if time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.002)
        return True

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._queue or self._busy:
            if time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.005)
        return True

    def shutdown(self, timeout_s: float) -> None:
        self._stopped = True
        self._wake.set()
        self._runner.join(timeout_s)
