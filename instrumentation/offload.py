"""The telemetry process, seen from the serving process.

With `telemetry.pipeline: process` (what `auto` picks with two CPUs per
worker), everything the telemetry worker thread would do — decoding bodies,
spans, metrics, the request.completed line, OTLP export — runs in a child
interpreter (instrumentation/telemetry_process.py) instead: the event loop
shares no GIL with it, so an exporter encoding a batch cannot stall a request,
and with a free core the work runs in parallel.

The serving process keeps the request path as it was (one deque append per
request) and a sender thread that, every few milliseconds, writes the finished
records as msgpack frames to a socketpair. It also forwards what only it knows
(in-flight count, circuit states, its own drop counts) and answers /metrics by
asking the child. A child that dies is restarted; records that cannot be
delivered are dropped and counted, never waited for.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import structlog

from instrumentation.channel import FrameReader, frame
from instrumentation.export import DropCounter
from instrumentation.records import RequestRecord
from instrumentation.recordwire import to_wire
from instrumentation.worker import IDLE_POLL_S, POLL_S

log = structlog.get_logger("spangate.telemetry")

FD_ENV = "SPANGATE_TELEMETRY_FD"
#: Encoded bytes per records frame (bodies dominate): bounds the child's decode bursts
#: and the memory a frame takes on both sides.
FRAME_BYTES = 8 * 1024 * 1024
#: A single record larger than this is dropped and counted, not sent.
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: Frames that are not records (log events to export, scrapes) waiting to be sent.
MAX_CONTROL = 1024
#: How often the live state (in-flight, circuits, drops) is sent without being asked.
STATE_EVERY_S = 1.0
#: A child that takes no bytes for this long is stuck: it is killed and replaced.
SEND_TIMEOUT_S = 10.0
#: How long the first child may take to say it is ready (imports, exporters).
READY_TIMEOUT_S = 30.0
#: Starts within RESTART_WINDOW_S before restarts slow down to one per window.
RESTART_LIMIT = 5
RESTART_WINDOW_S = 60.0

StateSource = Callable[[], dict[str, Any]]


class TelemetryStartError(Exception):
    """The telemetry process did not come up (it exited, or never said it was ready)."""


def record_bytes(record: RequestRecord) -> int:
    """Roughly what a record weighs on the wire: its bodies and retained stream bytes."""
    return len(record.body) + sum(len(a.body or b"") + a.retained for a in record.attempts)


def batches(
    records: Sequence[RequestRecord], limit: int = FRAME_BYTES
) -> Iterator[list[RequestRecord]]:
    """Consecutive runs of records of at most `limit` bytes (a heavier record alone)."""
    batch: list[RequestRecord] = []
    size = 0
    for record in records:
        weight = record_bytes(record) + 512
        if batch and size + weight > limit:
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += weight
    if batch:
        yield batch


class _Child:
    """One running telemetry process and our end of its socket."""

    def __init__(self, init: dict[str, Any], on_reply: Callable[[int, Any], None]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # A kernel send timeout rather than settimeout(): the reply reader on the same
        # socket must keep blocking.
        timeout = struct.pack("ll", int(SEND_TIMEOUT_S), 0)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
        env = {**os.environ, FD_ENV: str(theirs.fileno())}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "instrumentation.telemetry_process"],
            env=env,
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            # Its own process group: a terminal's Ctrl-C (sent to the foreground group)
            # reaches the parent only, which then closes the socket so that this process
            # flushes and exits. setpgid happens in C between fork and exec, so it holds
            # even while the child is still importing. If the parent dies instead, the
            # kernel closes its end: the child reads end of input, flushes, exits.
            process_group=0,
        )
        theirs.close()
        self.sock = ours
        self.alive = True
        self.ready = threading.Event()
        self._on_reply = on_reply
        self.sock.sendall(frame("init", init))
        self.reader = threading.Thread(
            target=self._read, name="spangate-telemetry-replies", daemon=True
        )
        self.reader.start()

    def _read(self) -> None:
        reader = FrameReader(self.sock)
        try:
            while (message := reader.read()) is not None:
                kind, payload = message
                if kind == "ready":
                    self.ready.set()
                elif kind == "reply":
                    request_id, value = payload
                    self._on_reply(int(request_id), value)
        except Exception:  # a broken socket or a garbled reply: this child is done
            log.debug("telemetry reply reader failed", exc_info=True)
        finally:
            self.alive = False
            self.ready.set()

    def close(self, timeout_s: float) -> int | None:
        """Ask the child to finish (end of input), wait for it; kill it past the timeout."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        try:
            code = self.popen.wait(max(timeout_s, 0.0))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        self.reader.join(1.0)
        self.sock.close()
        return code


class TelemetryProcess:
    """RecordSink's interface (submit/flush/shutdown), backed by a child process."""

    def __init__(
        self, init: dict[str, Any], drops: DropCounter, state: StateSource, max_queue: int = 8192
    ) -> None:
        self._init = init
        self._drops = drops
        self._state = state
        self._max_queue = max_queue
        self._queue: collections.deque[RequestRecord] = collections.deque()
        self._control: collections.deque[bytes] = collections.deque()
        self._pending: dict[int, Future[Any]] = {}
        self._ids = itertools.count(1)
        self._wake = threading.Event()
        self._busy = False
        self._stopped = False
        self._starts: collections.deque[float] = collections.deque()
        self._throttled = False
        self._child: _Child | None = self._first_child()
        self._thread = threading.Thread(target=self._run, name="spangate-telemetry", daemon=True)
        self._thread.start()

    def _first_child(self) -> _Child:
        """Started and ready, or TelemetryStartError: a broken telemetry setup is
        reported at startup, not discovered later as missing data."""
        self._starts.append(time.monotonic())
        child = _Child(self._init, self._reply)
        if child.ready.wait(READY_TIMEOUT_S) and child.alive:
            return child
        code = child.close(1.0)
        raise TelemetryStartError(
            f"the telemetry process exited with code {code} before it was ready"
            " (its error is on stderr)"
            if code
            else f"the telemetry process was not ready within {READY_TIMEOUT_S:g} s"
        )

    # --- any thread ---------------------------------------------------------
    def submit(self, record: RequestRecord) -> None:
        """Called on the request path: O(1), never blocks, never raises."""
        if len(self._queue) >= self._max_queue:
            self._drops.add("records", "queue_full")
            return
        self._queue.append(record)

    def send(self, kind: str, payload: Any) -> None:
        """A frame that needs no answer (a log event to export)."""
        if len(self._control) >= MAX_CONTROL:
            self._drops.add("logs", "queue_full")
            return
        self._control.append(frame(kind, payload))

    def request(self, kind: str, payload: Any, timeout_s: float) -> Any:
        """Ask the child and wait for its answer; raises when it cannot answer in time."""
        child = self._child
        if child is None or not child.alive:
            raise ConnectionError("the telemetry process is not running")
        request_id = next(self._ids)
        future: Future[Any] = Future()
        self._pending[request_id] = future
        self._control.append(frame(kind, [request_id, payload]))
        self._wake.set()
        try:
            return future.result(timeout_s)
        finally:
            self._pending.pop(request_id, None)

    def flush(self, timeout_s: float) -> bool:
        """Everything submitted so far processed and handed to the exporters."""
        deadline = time.monotonic() + timeout_s
        while self._queue or self._control or self._busy:
            if time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.005)
        remaining = max(deadline - time.monotonic(), 0.1)
        try:
            # The child gets a little less than we wait, so that its answer arrives.
            return bool(self.request("flush", remaining * 0.9, remaining))
        except Exception:
            return False

    def shutdown(self, timeout_s: float) -> None:
        """Flush, stop the sender, let the child flush its exporters and exit: all
        within one deadline (a supervisor waits only so long)."""
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        self._stopped = True
        self._wake.set()
        self._thread.join(max(deadline - time.monotonic(), 0.1))
        child, self._child = self._child, None
        if child is not None:
            code = child.close(deadline - time.monotonic())
            if code:
                log.warning("telemetry.process_exit", code=code)
        self._fail_pending()

    # --- replies (reader threads) ---------------------------------------------
    def _reply(self, request_id: int, value: Any) -> None:
        future = self._pending.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(value)

    def _fail_pending(self) -> None:
        """Requests that a retired child will never answer fail now, not at their timeout."""
        for request_id in list(self._pending):
            future = self._pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_exception(ConnectionError("the telemetry process exited"))

    # --- the sender thread -----------------------------------------------------
    def _run(self) -> None:
        poll, last_state = POLL_S, 0.0
        while not self._stopped:
            self._wake.wait(poll)
            self._wake.clear()
            try:
                if time.monotonic() - last_state >= STATE_EVERY_S:
                    last_state = time.monotonic()
                    self._control.append(frame("state", self._safe_state()))
                poll = POLL_S if self._send_pending() else min(poll * 2, IDLE_POLL_S)
            except Exception:  # the sender must outlive any one bad round
                log.debug("telemetry sender round failed", exc_info=True)
                self._busy = False
        with contextlib.suppress(Exception):
            self._send_pending()

    def _send_pending(self) -> int:
        sent = 0
        while self._queue or self._control:
            self._busy = True
            # The records queued before the control frames go first: a scrape or a flush
            # then covers every request that finished before it was asked for.
            control = [self._control.popleft() for _ in range(len(self._control))]
            records = [self._queue.popleft() for _ in range(len(self._queue))]
            for batch in batches(records):
                self._send_records(batch)
            if control and not self._deliver(b"".join(control)):
                self._fail_pending()
            sent += len(records)
        self._busy = False
        return sent

    def _send_records(self, batch: list[RequestRecord]) -> None:
        if len(batch) == 1 and record_bytes(batch[0]) > MAX_RECORD_BYTES:
            self._drops.add("records", "too_large")
            return
        try:
            data = frame("records", [to_wire(r) for r in batch])
        except Exception:
            log.debug("telemetry record encoding failed", exc_info=True)
            self._drops.add("records", "processing_error", len(batch))
            return
        if not self._deliver(data):
            self._drops.add("records", "telemetry_process_down", len(batch))

    def _deliver(self, data: bytes) -> bool:
        child = self._living_child()
        if child is None:
            return False
        try:
            child.sock.sendall(data)
            return True
        except OSError:  # gone, or stuck past SEND_TIMEOUT_S
            child.alive = False
            return False

    def _living_child(self) -> _Child | None:
        child = self._child
        if child is not None and child.alive and child.popen.poll() is None:
            return child
        if child is not None:
            self._child = None
            code = child.close(1.0)
            self._fail_pending()
            log.warning("telemetry.process_exited", code=code, restarting=not self._stopped)
        if self._stopped or not self._may_start():
            return None
        self._starts.append(time.monotonic())
        try:
            self._child = _Child(self._init, self._reply)
        except OSError:
            log.warning("telemetry.process_start_failed", exc_info=True)
        return self._child

    def _may_start(self) -> bool:
        """At most RESTART_LIMIT starts within any RESTART_WINDOW_S (said once when hit)."""
        now = time.monotonic()
        while self._starts and now - self._starts[0] > RESTART_WINDOW_S:
            self._starts.popleft()
        if len(self._starts) < RESTART_LIMIT:
            self._throttled = False
            return True
        if not self._throttled:
            self._throttled = True
            log.error(
                "telemetry.process_crash_loop",
                starts=len(self._starts),
                window_s=RESTART_WINDOW_S,
                hint="telemetry is dropped (spangate_telemetry_dropped_total) until a"
                " restart holds; the child's error is on stderr",
            )
        return False

    def _safe_state(self) -> dict[str, Any]:
        try:
            return self._state()
        except Exception:  # live state read from another thread: skip this round
            log.debug("telemetry state snapshot failed", exc_info=True)
            return {}
