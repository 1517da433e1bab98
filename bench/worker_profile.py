"""What the telemetry worker spends per record, in isolation: `python -m bench.worker_profile
[chat|stream]` (from the repo root, in .venv).

Feeds canned records (the bench's chat completion, or its 20-chunk stream) to the
thread pipeline's processor with an in-memory metric reader, and spans and the
request line going to exporters that encode like spangate's OTLP exporters (each
item when queued, by the worker) and then discard, as `spangate serve` has them
with full telemetry; prints microseconds per record and
where the time goes (cProfile, by area). No sockets, no load generator: for
comparing the worker's own cost between revisions.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from bench import canned
from instrumentation.logging import Redactor, configure_logging
from instrumentation.otlpwire import LogEncoder, SpanEncoder
from instrumentation.readers import InMemoryReader
from instrumentation.records import AttemptRecord, RequestRecord
from instrumentation.setup import Telemetry, log_sinks
from proxy.config import TelemetryConfig

#: The processor's steps (function names in instrumentation/processor.py), and the area
#: each one's inclusive time counts to; the span queue and the request line: by_area.
AREAS = {
    "_attempt_metrics": "metrics (record/add)",
    "_request_metrics": "metrics (record/add)",
    "_view": "decoding bodies and events",
    "_build_spans": "spans (build)",
}


class _Discarded(LogRecordExporter):
    """Takes spangate's fast log path, as its OTLP log exporters do (lines encoded when
    queued, framed at export), and sends nothing."""

    fast = True

    def __init__(self) -> None:
        self._encoder = LogEncoder()

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        self._encoder.encode(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _DiscardedSpans(SpanExporter):
    """As spangate's OTLP span exporters: spans encoded when queued, framed at export."""

    fast = True

    def __init__(self) -> None:
        self._encoder = SpanEncoder()

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self._encoder.encode(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


_rng = random.Random(5)


def _id() -> int:
    return _rng.getrandbits(64) or 1


#: What the bench's nginx upstream answers with, by `stream`.
_CONTENT_TYPE = {False: "application/json", True: "text/event-stream"}


def record(stream: bool) -> RequestRecord:
    r = RequestRecord("POST", "/v1/chat/completions")
    r.api, r.operation, r.wire = "chat_completions", "chat", "openai"
    r.body, r.stream, r.request_model = canned.chat_request(stream), stream, "gpt-4o-mini"
    # Ids differ per record, as in traffic: fixed ones hit every cache that unique ids
    # miss (the request line's redaction, the OTLP log record's attributes).
    r.status, r.trace_id, r.span_id, r.sampled = 200, _rng.getrandbits(128), _id(), True
    a = AttemptRecord(
        1, _id(), provider="openai", system="openai", host="h", port=443, target="t", model=None
    )
    a.on_response(200, CIMultiDictProxy(CIMultiDict({"Content-Type": _CONTENT_TYPE[stream]})))
    if stream:
        for event in canned.sse_events():
            a.on_events(event)
    else:
        a.on_body(canned.chat_completion())
    a.on_end(None)
    r.attempts = [a]
    r.end_ns = time.monotonic_ns()
    return r


def main(argv: list[str]) -> None:
    stream = bool(argv) and argv[0] == "stream"
    real_stdout = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- the log lines go nowhere
    telemetry = Telemetry(
        TelemetryConfig(),
        Redactor(),
        span_exporter=_DiscardedSpans(),
        metric_readers=[InMemoryReader()],
        log_exporter=_Discarded(),
    )
    # The request line also goes to OTLP logs, as with `logs_otlp: true`.
    configure_logging(Redactor(), sinks=log_sinks(telemetry))
    sink: Any = telemetry._sink
    lines = sink._flush  # the request lines are held until the worker's drain ends

    def process(r: RequestRecord) -> None:  # one record per drain: one write per line
        sink._process(r)
        lines()

    for r in [record(stream) for _ in range(500)]:  # warm-up: attribute sets, caches
        process(r)
    # Best of several rounds: this machine's speed wanders; the minimum is the cost.
    rounds = []
    for _ in range(7):
        batch = [record(stream) for _ in range(300)]
        start = time.perf_counter()
        for r in batch:
            process(r)
        rounds.append((time.perf_counter() - start) / len(batch) * 1e6)
    profiler = cProfile.Profile()
    batch = [record(stream) for _ in range(1000)]
    profiler.enable()
    for r in batch:
        process(r)
    profiler.disable()
    sys.stdout = real_stdout
    kind = "stream" if stream else "chat"
    print(
        f"{kind}: {min(rounds):.0f} µs per record (best of {len(rounds)}; median "
        f"{sorted(rounds)[len(rounds) // 2]:.0f})"
    )
    for area, share in by_area(pstats.Stats(profiler)):
        print(f"  {share:5.1f} %  {area}")


_SPAN_QUEUE = "spans (encoded as queued)"
_LINE = "request.completed line (structlog chain, redaction, JSON, OTLP log)"


def by_area(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Inclusive time of each processor step, as a share of the processor's total."""
    totals: dict[str, float] = {}
    whole = 0.0
    raw: Any = stats.stats  # type: ignore[attr-defined]
    for (filename, _, function), (_, _, _, inclusive, callers) in raw.items():
        if filename.endswith("instrumentation/logging.py") and function == "__call__":
            # The request line (LineEmitter), called by the processor; the Redactor's
            # and TimeStamp's calls come from the emitter and are inside it.
            by_processor = sum(t[3] for c, t in callers.items() if c[0].endswith("processor.py"))
            totals[_LINE] = totals.get(_LINE, 0.0) + by_processor
            continue
        if filename.endswith("instrumentation/export.py") and function == "put":
            # Spans are encoded as they are queued; the log line's put is inside "emit".
            by_processor = sum(t[3] for c, t in callers.items() if c[0].endswith("processor.py"))
            totals[_SPAN_QUEUE] = totals.get(_SPAN_QUEUE, 0.0) + by_processor
            continue
        if not filename.endswith(("instrumentation/processor.py", "instrumentation/setup.py")):
            continue
        if function == "__call__" and filename.endswith("processor.py"):
            whole = inclusive
        elif function in AREAS:
            totals[AREAS[function]] = totals.get(AREAS[function], 0.0) + inclusive
    whole = whole or 1.0
    totals["other (views, events, glue)"] = max(whole - sum(totals.values()), 0.0)
    return sorted(((a, 100 * t / whole) for a, t in totals.items()), key=lambda x: -x[1])


if __name__ == "__main__":
    main(sys.argv[1:])
