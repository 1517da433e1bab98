"""Runs `python -m proxy ...` with its telemetry's busy moments timed (used by bench.stalls).

Usage: `python bench/stalls_probe.py OUT.json proxy serve --config ...`. Records
(start, end, what) on the monotonic clock, which every process on the machine
shares, for every telemetry worker drain, export send, periodic metric
collection and garbage collection (generation and thread); SIGUSR1 writes them
to OUT.json and starts afresh. Wraps methods of the classes in place: nothing
in spangate knows it is being watched.
"""

from __future__ import annotations

import gc
import json
import runpy
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from instrumentation.export import BatchQueue
from instrumentation.worker import RecordSink

Interval = tuple[float, float, str]
_intervals: list[Interval] = []
_gc_started: dict[int, float] = {}


_NEVER = object()


def _timed(cls: type, method: str, label: Callable[[Any], str], idle: Any = _NEVER) -> None:
    """Log each call of `cls.method`, except those that return `idle` (nothing done)."""
    original = getattr(cls, method)

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        result = original(self, *args, **kwargs)
        if result != idle:
            _intervals.append((start, time.monotonic(), label(self)))
        return result

    setattr(cls, method, timed)


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    thread = threading.get_ident()
    if phase == "start":
        _gc_started[thread] = time.monotonic()
        return
    start = _gc_started.pop(thread, None)
    if start is not None:
        name = threading.current_thread().name
        _intervals.append((start, time.monotonic(), f"gc gen {info['generation']} ({name})"))


def main() -> None:
    out = Path(sys.argv[1])
    # Only drains that processed records: the worker polls every 2 ms, so counting empty
    # ones would make any request longer than that "overlap a drain".
    _timed(RecordSink, "_drain", lambda _: "worker drain", idle=0)
    _timed(BatchQueue, "_send", lambda queue: f"export send: {queue._name}")
    _timed(PeriodicExportingMetricReader, "collect", lambda _: "metric collection + export")
    gc.callbacks.append(_on_gc)

    def dump(*_: Any) -> None:
        # Swapped out first: threads keep appending while the file is written.
        taken = _intervals[:]
        del _intervals[: len(taken)]
        out.write_text(json.dumps(taken))

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
