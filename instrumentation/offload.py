"""The telemetry process, seen from the serving process.

With `telemetry.pipeline: process` (what `spangate serve` runs), everything the
telemetry worker thread would do — decoding bodies, spans, metrics, the
request.completed line, OTLP export — runs in a child interpreter
(instrumentation/telemetry_process.py) instead: the event loop shares no GIL
with it, so an exporter encoding a batch cannot stall a request, and on a
machine with a free core the work runs in parallel.

The serving process keeps the request path as it was (one deque append per
request) and a sender thread that, every few milliseconds, writes the finished
records as msgpack frames to a socketpair. It also forwards what only it knows
(in-flight count, circuit states, its own drop counts) and answers /metrics by
asking the child. A child that dies is restarted (within a budget); records
that cannot be delivered are dropped and counted, never waited for.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
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
PARENT_ENV = "SPANGATE_TELEMETRY_PARENT"
#: Records per frame: bounds one frame's size and the child's decode bursts.
BATCH = 256
#: How often the live state (in-flight, circuits, drops) is sent without being asked.
STATE_EVERY_S = 1.0
#: Restarts of a child that keeps dying, within RESTART_WINDOW_S, before giving up.
RESTART_LIMIT = 5
RESTART_WINDOW_S = 60.0

StateSource = Callable[[], dict[str, Any]]


class _Child:
    """One running telemetry process and our end of its socket."""

    def __init__(self, init: dict[str, Any]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {**os.environ, FD_ENV: str(theirs.fileno()), PARENT_ENV: str(os.getpid())}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "instrumentation.telemetry_process"],
            env=env,
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            # Its own process group: a terminal's Ctrl-C (sent to the foreground group)
            # reaches the parent only, which then closes the socket so that this process
            # flushes and exits. setpgid happens in C between fork and exec, so it holds
            # even while the child is still importing.
            process_group=0,
        )
        theirs.close()
        self.sock = ours
        self.pending: dict[int, Future[Any]] = {}
        self.alive = True
        self.sock.sendall(frame("init", init))
        self.reader = threading.Thread(
            target=self._read, name="spangate-telemetry-replies", daemon=True
        )
        self.reader.start()

    def _read(self) -> None:
        reader = FrameReader(self.sock)
        with contextlib.suppress(OSError, ValueError):
            while (message := reader.read()) is not None:
                _, (request_id, value) = message
                future = self.pending.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result(value)
        self.alive = False
        for future in list(self.pending.values()):
            if not future.done():
                future.set_exception(ConnectionError("the telemetry process exited"))

    def close(self, timeout_s: float) -> int | None:
        """Ask the child to finish (EOF), wait for it; kill it past the timeout."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        try:
            code = self.popen.wait(timeout_s)
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
        self._ids = itertools.count(1)
        self._wake = threading.Event()
        self._busy = False
        self._stopped = False
        self._restarts: collections.deque[float] = collections.deque()
        self._child: _Child | None = _Child(init)
        self._thread = threading.Thread(target=self._run, name="spangate-telemetry", daemon=True)
        self._thread.start()

    # --- any thread ---------------------------------------------------------
    def submit(self, record: RequestRecord) -> None:
        """Called on the request path: O(1), never blocks, never raises."""
        if len(self._queue) >= self._max_queue:
            self._drops.add("records", "queue_full")
            return
        self._queue.append(record)

    def send(self, kind: str, payload: Any) -> None:
        """A frame that needs no answer (a log event to export), in order with the records."""
        self._control.append(frame(kind, payload))

    def request(self, kind: str, payload: Any, timeout_s: float) -> Any:
        """Ask the child and wait for its answer; raises when it cannot answer in time."""
        child = self._child
        if child is None or not child.alive:
            raise ConnectionError("the telemetry process is not running")
        request_id = next(self._ids)
        future: Future[Any] = Future()
        child.pending[request_id] = future
        self._control.append(frame(kind, [request_id, payload]))
        self._wake.set()
        try:
            return future.result(timeout_s)
        finally:
            child.pending.pop(request_id, None)

    def flush(self, timeout_s: float) -> bool:
        """Everything submitted so far processed and handed to the exporters."""
        deadline = time.monotonic() + timeout_s
        while self._queue or self._control or self._busy:
            if time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.005)
        try:
            return bool(self.request("flush", max(deadline - time.monotonic(), 0.1), timeout_s))
        except Exception:
            return False

    def shutdown(self, timeout_s: float) -> None:
        self.flush(timeout_s)
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout_s)
        child, self._child = self._child, None
        if child is not None:
            code = child.close(timeout_s)
            if code:
                log.warning("telemetry.process_exit", code=code)

    # --- the sender thread -----------------------------------------------------
    def _run(self) -> None:
        poll, last_state = POLL_S, 0.0
        while not self._stopped:
            self._wake.wait(poll)
            self._wake.clear()
            if time.monotonic() - last_state >= STATE_EVERY_S:
                last_state = time.monotonic()
                self._control.append(frame("state", self._safe_state()))
            poll = POLL_S if self._send_pending() else min(poll * 2, IDLE_POLL_S)
        self._send_pending()

    def _send_pending(self) -> int:
        sent = 0
        while self._queue or self._control:
            self._busy = True
            # Control frames after the records taken with them: a scrape or a flush then
            # covers every request that finished before it was asked for.
            control = [self._control.popleft() for _ in range(len(self._control))]
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH))]
            chunks = []
            try:
                if batch:
                    chunks.append(frame("records", [to_wire(r) for r in batch]))
            except Exception:
                log.debug("telemetry record encoding failed", exc_info=True)
                self._drops.add("records", "processing_error", len(batch))
                batch = []
            chunks += control
            if not self._deliver(b"".join(chunks)):
                self._drops.add("records", "telemetry_process_down", len(batch))
            sent += len(batch)
        self._busy = False
        return sent

    def _deliver(self, data: bytes) -> bool:
        child = self._living_child()
        if child is None:
            return False
        try:
            child.sock.sendall(data)
            return True
        except OSError:
            child.alive = False
            return False

    def _living_child(self) -> _Child | None:
        child = self._child
        if child is not None and child.alive and child.popen.poll() is None:
            return child
        if child is not None:
            code = child.close(1.0)
            self._child = None
            log.warning("telemetry.process_exited", code=code, restarting=self._may_restart())
        if self._child is None and self._may_restart():
            self._restarts.append(time.monotonic())
            try:
                self._child = _Child(self._init)
            except OSError:
                log.warning("telemetry.process_start_failed", exc_info=True)
        return self._child

    def _may_restart(self) -> bool:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
            self._restarts.popleft()
        return not self._stopped and len(self._restarts) < RESTART_LIMIT

    def _safe_state(self) -> dict[str, Any]:
        try:
            return self._state()
        except Exception:  # live state read from another thread: skip this round
            log.debug("telemetry state snapshot failed", exc_info=True)
            return {}
