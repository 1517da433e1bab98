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


def _timed(cls: type, method: str, label: Callable[[Any], str]) -> None:
    original = getattr(cls, method)

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return original(self, *args, **kwargs)
        finally:
            _intervals.append((start, time.monotonic(), label(self)))

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
    _timed(RecordSink, "_drain", lambda _: "worker drain")
    _timed(BatchQueue, "_send", lambda queue: f"export send: {queue._name}")
    _timed(PeriodicExportingMetricReader, "collect", lambda _: "metric collection + export")
    gc.callbacks.append(_on_gc)

    def dump(*_: Any) -> None:
        out.write_text(json.dumps(_intervals))
        _intervals.clear()

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
