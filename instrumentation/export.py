"""Bounded, drop-and-count export queues between the telemetry worker and exporters.

The SDK's batch processor warns on every dropped span and exposes no count; a
sidecar needs the opposite: silence on the request path and a metric saying
how much was lost.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")
log = logging.getLogger("spangate.telemetry")


class DropCounter:
    """Thread-safe counts of dropped telemetry items by (signal, reason)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._remote: Callable[[], dict[tuple[str, str], int]] = dict

    def add(self, signal: str, reason: str, count: int = 1) -> None:
        with self._lock:
            self._counts[(signal, reason)] += count

    def snapshot(self) -> dict[tuple[str, str], int]:
        """Own counts plus those of the remote counter watched (the serving process's)."""
        with self._lock:
            counts = collections.Counter(self._counts)
        counts.update(self._remote())
        return dict(counts)

    def watch_remote(self, read: Callable[[], dict[tuple[str, str], int]]) -> None:
        self._remote = read


def time_left(timeout_s: float) -> Callable[[], float]:
    """Seconds left of `timeout_s` from now, never below 0: one deadline that steps run
    one after another share, each getting what the ones before it left."""
    deadline = time.monotonic() + timeout_s
    return lambda: max(deadline - time.monotonic(), 0.0)


def env_size(env: Mapping[str, str], name: str, default: int) -> int:
    """A queue or batch size from the environment (OTEL_BSP_*, OTEL_BLRP_*): unset,
    unparsable or below 1 means the default."""
    try:
        value = int(env.get(name) or default)
    except ValueError:
        return default
    return value if value >= 1 else default


class BatchQueue(Generic[_T]):
    """A thread that hands batches to `export`; `put` never blocks and drops when full.

    `export` returns True on success; a False or an exception counts the batch
    as dropped with reason "export_failed". `prepare`, when given, turns the items
    into what is queued, in the producer's thread (OTLP exporters encode them there:
    instrumentation/otlpwire.Encoded).
    """

    def __init__(
        self,
        name: str,
        export: Callable[[Sequence[Any]], bool],
        drops: DropCounter,
        *,
        max_queue: int = 4096,
        max_batch: int = 512,
        delay_s: float = 1.0,
        prepare: Callable[[Sequence[_T]], Sequence[Any]] | None = None,
    ) -> None:
        self._name = name
        self._prepare = prepare
        self._export = export
        self._drops = drops
        self._max_queue = max_queue
        # As the SDK's batch processors: a batch never exceeds the queue.
        self._max_batch = min(max_batch, max_queue)
        self._delay_s = delay_s
        self._queue: collections.deque[Any] = collections.deque()
        #: Over the queue and the two counts below (logs have several producer threads).
        self._lock = threading.Lock()
        #: Items queued so far, and items taken off and handed to `export` (sent or
        #: failed): flush() waits for the second to reach what the first was when it
        #: began, so lines put after it cannot keep it waiting.
        self._queued = 0
        self._done = 0
        self._progress = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stopped = False
        self._runner = threading.Thread(target=self._run, name=f"spangate-{name}", daemon=True)
        self._runner.start()

    @property
    def prepares(self) -> bool:
        """Whether items are turned into something else when queued (see `prepare`)."""
        return self._prepare is not None

    def put(self, items: Sequence[_T]) -> None:
        room = self._max_queue - len(self._queue)
        if room < len(items):
            self._drops.add(self._name, "queue_full", len(items) - max(room, 0))
            items = items[: max(room, 0)]
        if not items:
            return
        if self._prepare is not None:
            items = self._prepared(items)
        with self._lock:
            self._queue.extend(items)
            self._queued += len(items)
        if len(self._queue) >= self._max_batch:
            self._wake.set()

    def _prepared(self, items: Sequence[_T]) -> Sequence[Any]:
        """`prepare`d items; those it could not prepare are counted as "encode_failed"
        (it never raises into the producer: the worker, or the event loop)."""
        assert self._prepare is not None
        try:
            prepared = self._prepare(items)
        except Exception:
            log.debug("telemetry items not prepared for export", exc_info=True)
            prepared = ()
        if len(prepared) < len(items):
            self._drops.add(self._name, "encode_failed", len(items) - len(prepared))
        return prepared

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    return
                # C-level copies, not a pop per item (held with the lock, and the GIL,
                # on the export thread): the whole queue, or the head of it and a
                # fresh deque of the rest, which put() extends under this same lock.
                queue, size = self._queue, self._max_batch
                if len(queue) <= size:
                    batch = list(queue)
                    queue.clear()
                else:
                    batch = list(itertools.islice(queue, size))
                    self._queue = collections.deque(itertools.islice(queue, size, None))
            self._send(batch)
            with self._progress:
                self._done += len(batch)
                self._progress.notify_all()

    def _send(self, batch: list[Any]) -> None:
        try:
            ok = self._export(batch)
        except Exception:
            log.debug("telemetry export raised", exc_info=True)
            ok = False
        if not ok:
            self._drops.add(self._name, "export_failed", len(batch))

    def flush(self, timeout_s: float) -> bool:
        """Whether every item put before the call was handed to `export` within
        `timeout_s`. One wake is enough: those items are queued already, and the drain
        that follows it takes the queue to empty. (An earlier version waited for an
        idle mark, which a line put during the flush could clear after the drain it
        woke had ended: it then slept out its timeout, ~1 in 300 flushes under load.)"""
        deadline = time.monotonic() + timeout_s
        with self._progress:
            target = self._queued
            self._wake.set()
            while self._done < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(remaining)
        return True

    def shutdown(self, timeout_s: float) -> None:
        self._stopped = True
        self._wake.set()
        self._runner.join(timeout_s)
