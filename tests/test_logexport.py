"""OTLP log export: spangate's LogLines encode exactly as the SDK's log records do,
go out through spangate's drop-and-count queue, and are used only with spangate's exporters."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource

from instrumentation.encoded import Encoded
from instrumentation.export import BatchQueue, DropCounter
from instrumentation.logexport import LineSink, LogSink, SdkLogSink, export_logs
from instrumentation.logging import Redactor
from instrumentation.otlp import log_exporter
from instrumentation.otlpwire import LogEncoder
from instrumentation.setup import Telemetry
from proxy.config import TelemetryConfig

RESOURCE = Resource.create({"service.name": "t"})


class Captured(LogRecordExporter):
    """Stands where spangate's OTLP log exporter does (`fast`): keeps what it is given."""

    fast = True

    def __init__(self, result: LogRecordExportResult = LogRecordExportResult.SUCCESS) -> None:
        self.batches: list[list[Any]] = []
        self.result = result

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        self.batches.append(list(batch))
        return self.result

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _emit_all(sink: LogSink) -> None:
    line = sink.emitter("spangate.logs", "1.0")
    line.emit(
        body="request.completed",
        severity_number=SeverityNumber.INFO,
        severity_text="INFO",
        attributes={"status": 200, "path": "/v1/chat/completions", "stream": False, "ms": 1.5},
        trace_id=(1 << 127) + 5,
        span_id=(1 << 63) + 9,
    )
    line.emit(body="spangate.ready", severity_number=SeverityNumber.INFO, severity_text="INFO")
    event = sink.emitter("spangate", "1.0", "https://opentelemetry.io/schemas/1.37.0")
    event.emit(
        body={"gen_ai.input.messages": [{"role": "user", "parts": []}]},
        event_name="gen_ai.client.inference.operation.details",
        timestamp=1_700_000_000_000_000_000,
        trace_id=7,
        span_id=8,
        sampled=False,
    )


def test_log_lines_encode_byte_for_byte_like_the_sdks_log_records() -> None:
    fast, sdk = Captured(), InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    sinks = [export_logs(e, RESOURCE, DropCounter(), {}, 0.05) for e in (fast, sdk)]
    assert isinstance(sinks[0], LineSink) and isinstance(sinks[1], SdkLogSink)
    for sink in sinks:
        _emit_all(sink)
        assert sink.flush(5)
    lines = [line for batch in fast.batches for line in batch]
    records = list(sdk.get_finished_logs())
    assert len(lines) == len(records) == 3
    for line, record in zip(lines, records, strict=True):
        line.observed_timestamp = record.log_record.observed_timestamp = 42
    assert LogEncoder().encode(lines) == LogEncoder().encode(records)


def test_a_full_log_queue_drops_and_counts_instead_of_growing() -> None:
    drops = DropCounter()
    sink = LineSink(Captured(), RESOURCE, drops, {"OTEL_BLRP_MAX_QUEUE_SIZE": "2"}, 60)
    emitter = sink.emitter("spangate.logs", "1.0")
    for _ in range(5):
        emitter.emit(body="x")
    assert drops.snapshot()[("logs", "queue_full")] == 3
    sink.shutdown(5)


def test_a_failed_log_export_is_counted() -> None:
    drops = DropCounter()
    sink = LineSink(Captured(LogRecordExportResult.FAILURE), RESOURCE, drops, {}, 0.05)
    sink.emitter("spangate.logs", "1.0").emit(body="x")
    assert sink.flush(5)
    assert drops.snapshot()[("logs", "export_failed")] == 1
    sink.shutdown(5)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spangates_otlp_log_exporters_get_log_lines(protocol: Any) -> None:
    """Both transports take spangate's path (a closed port: nothing is sent here)."""
    config = TelemetryConfig(otlp_endpoint="http://127.0.0.1:9", otlp_protocol=protocol)
    assert getattr(log_exporter({}, config), "fast", False)
    telemetry = Telemetry(
        TelemetryConfig(otlp_endpoint="http://127.0.0.1:9", otlp_protocol=protocol, logs_otlp=True),
        Redactor(),
        env={"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
        pipeline="thread",
        announce=False,
    )
    try:
        assert isinstance(telemetry.logs, LineSink)
    finally:
        telemetry.shutdown(1)


@pytest.mark.parametrize("size", ["0", "-5", "many"])
def test_nonsense_log_batch_and_queue_sizes_fall_back_to_the_defaults(size: str) -> None:
    """A batch size below 1 would make the export thread spin on empty batches."""
    exporter = Captured()
    env = {"OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": size, "OTEL_BLRP_MAX_QUEUE_SIZE": size}
    sink = LineSink(exporter, RESOURCE, DropCounter(), env, 0.05)
    sink.emitter("spangate.logs", "1.0").emit(body="x")
    assert sink.flush(5)
    sink.shutdown(5)
    assert [len(batch) for batch in exporter.batches] == [1]


def test_flush_returns_only_after_every_line_put_before_it_was_exported() -> None:
    """Several threads emit log lines; a flush must not report done while a line put
    before it still waits in the queue (the idle mark and the queue change together)."""
    exporter = Captured()
    sink = LineSink(exporter, RESOURCE, DropCounter(), {"OTEL_BLRP_MAX_QUEUE_SIZE": "100000"}, 60)
    emitter = sink.emitter("spangate.logs", "1.0")
    put = [0]
    done = threading.Event()

    def produce() -> None:
        for _ in range(3000):
            emitter.emit(body="x")
            put[0] += 1
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    rounds = 0
    while not done.is_set() and rounds < 500:  # bounded
        before = put[0]
        assert sink.flush(5)
        assert sum(len(b) for b in exporter.batches) >= before
        rounds += 1
    producer.join()
    sink.shutdown(5)


def test_a_queue_with_prepare_queues_what_the_producer_thread_prepared() -> None:
    """Encoding happens where items are put (the telemetry worker), not in the export
    thread: the export thread only frames and sends, in short bursts."""
    threads: list[str] = []
    exported: list[list[Any]] = []

    def prepare(items: Sequence[int]) -> list[str]:
        threads.append(threading.current_thread().name)
        return [f"encoded-{item}" for item in items]

    def export(batch: Sequence[str]) -> bool:
        exported.append(list(batch))
        return True

    queue = BatchQueue("spans", export, DropCounter(), delay_s=0.01, prepare=prepare)
    producer = threading.Thread(target=queue.put, args=([1, 2],), name="producer")
    producer.start()
    producer.join()
    assert queue.flush(5)
    queue.shutdown(5)
    assert threads == ["producer"]
    assert exported == [["encoded-1", "encoded-2"]]


def test_a_queue_longer_than_a_batch_leaves_in_full_batches_in_order() -> None:
    """Nothing is lost or reordered when the export thread takes a batch off a longer
    queue, while producers keep adding to it."""
    exported: list[list[Any]] = []

    def export(batch: Sequence[Any]) -> bool:
        exported.append(list(batch))
        return True

    queue: BatchQueue[int] = BatchQueue("logs", export, DropCounter(), max_batch=3, delay_s=60)
    queue.put(list(range(8)))
    queue.put(list(range(8, 11)))
    assert queue.flush(5)
    queue.shutdown(5)
    assert [item for batch in exported for item in batch] == list(range(11))
    assert all(len(batch) <= 3 for batch in exported)
    assert sum(len(batch) == 3 for batch in exported) >= 3


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_lines_for_spangates_exporters_are_queued_encoded(protocol: Any) -> None:
    config = TelemetryConfig(otlp_endpoint="http://127.0.0.1:9", otlp_protocol=protocol)
    drops = DropCounter()
    sink = LineSink(log_exporter({}, config), RESOURCE, drops, {}, 60)
    try:
        sink.emitter("spangate.logs", "1.0").emit(body="x")
        assert [type(item) for item in sink._queue._queue] == [Encoded]
    finally:
        sink._queue.shutdown(0.1)


def test_items_that_cannot_be_prepared_are_counted_and_never_raise() -> None:
    """A prepare that loses an item, or fails outright, costs only those items (counted
    as encode_failed), never the producer (the worker or the event loop)."""
    drops = DropCounter()

    def prepare(items: Sequence[int]) -> list[int]:
        if 0 in items:
            raise RecursionError("too deep")
        return [item for item in items if item != 13]

    queue = BatchQueue("logs", lambda batch: True, drops, delay_s=60, prepare=prepare)
    queue.put([12, 13, 14])
    queue.put([0, 1])
    assert drops.snapshot()[("logs", "encode_failed")] == 3
    assert list(queue._queue) == [12, 14]
    queue.shutdown(1)


def test_a_flush_is_not_held_by_lines_put_after_it_began() -> None:
    """A flush waits for what was queued when it was called. A line put while the flush
    waits, whose export then hangs, must not hold it: that was the interleaving in which
    the idle mark the flush waited for never came (the test above caught it ~1 in 300)."""
    entered, release_first, release_rest = threading.Event(), threading.Event(), threading.Event()
    exported: list[list[Any]] = []

    def export(batch: Sequence[Any]) -> bool:
        exported.append(list(batch))
        if len(exported) == 1:
            entered.set()
            release_first.wait(5)
        else:
            release_rest.wait(5)
        return True

    queue: BatchQueue[int] = BatchQueue("logs", export, DropCounter(), delay_s=60)
    queue.put([1])
    result: list[bool] = []
    flushing = threading.Thread(target=lambda: result.append(queue.flush(2)))
    flushing.start()
    assert entered.wait(5)
    queue.put([2])  # after the flush began; its export will hang
    release_first.set()
    flushing.join(5)
    try:
        assert result == [True]
        assert exported[0] == [1]
    finally:
        release_rest.set()
        queue.shutdown(5)


class Stuck(LogRecordExporter):
    """An exporter the SDK's pipeline drives (not `fast`) whose export hangs, as on a
    collector that never answers, until the test releases it (or 10 s pass)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        self.entered.set()
        self.release.wait(10)
        self.finished.set()
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_the_sdk_log_sink_stops_within_its_timeout_with_an_export_in_flight() -> None:
    """The SDK's LoggerProvider.shutdown takes no timeout and waits for an export in flight
    (up to 30 s): SdkLogSink.shutdown(timeout) returns while that export still hangs,
    so Telemetry.shutdown's one deadline holds for it too."""
    exporter = Stuck()
    sink = SdkLogSink(exporter, RESOURCE, 60)
    sink.emitter("spangate.logs", "1.0").emit(body="x")
    try:
        sink.shutdown(0.1)  # the SDK's worker exports the queued line on its way out
        assert exporter.entered.wait(10)
        assert not exporter.finished.is_set()
    finally:
        exporter.release.set()
