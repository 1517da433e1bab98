"""OTLP log export: spangate's LogLines encode exactly as the SDK's log records do,
go out through spangate's drop-and-count queue, and are used only with spangate's exporters."""

from __future__ import annotations

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

from instrumentation.export import DropCounter
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
