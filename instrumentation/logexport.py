"""OTLP log export: spangate's own log lines and queue when the exporter is spangate's,
the SDK's LoggerProvider otherwise.

Every request writes a request.completed line, and with OTLP logs on, each one
went through the SDK's Logger: a LogRecord, a ReadWriteLogRecord whose
attributes are copied and validated into BoundedAttributes, an exception
check, a copy for the batch processor — more than the rest of the line's cost.
spangate's log encoder (instrumentation/otlpwire.py) needs none of that: a
LogLine carries what it reads, and a BatchQueue (drop-and-count, like spans)
hands batches to the SDK exporter's transport. Exporters that are not
spangate's (tests' in-memory exporter, an HTTP exporter without the SDK client
spangate's encoder plugs into) get the SDK's records through its own pipeline.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from instrumentation.export import BatchQueue, DropCounter, env_size, time_left
from instrumentation.otlpwire import preparer


class LogSink(Protocol):
    def emitter(self, name: str, version: str, schema_url: str | None = None) -> LogEmitter: ...
    def flush(self, timeout_s: float) -> bool: ...
    def shutdown(self, timeout_s: float) -> None: ...


class LogLine:
    """One log record, shaped as the encoder reads an SDK ReadableLogRecord."""

    __slots__ = (
        "attributes",
        "body",
        "event_name",
        "instrumentation_scope",
        "observed_timestamp",
        "resource",
        "severity_number",
        "severity_text",
        "span_id",
        "timestamp",
        "trace_flags",
        "trace_id",
    )
    attributes: Mapping[str, Any] | None
    body: Any
    event_name: str | None
    observed_timestamp: int
    severity_number: SeverityNumber | None
    severity_text: str | None
    span_id: int
    timestamp: int | None
    trace_flags: int
    trace_id: int
    dropped_attributes = 0

    def __init__(self, resource: Resource, scope: InstrumentationScope) -> None:
        self.resource, self.instrumentation_scope = resource, scope

    @property
    def log_record(self) -> LogLine:
        return self


class LogEmitter:
    """What the log bridge and the content events call; `deliver` is the sink's."""

    def __init__(
        self, deliver: Callable[[LogLine], None], resource: Resource, scope: InstrumentationScope
    ) -> None:
        self._deliver, self._resource, self._scope = deliver, resource, scope

    def emit(
        self,
        *,
        body: Any,
        severity_number: SeverityNumber | None = None,
        severity_text: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        event_name: str | None = None,
        trace_id: int = 0,
        span_id: int = 0,
        sampled: bool = True,
    ) -> None:
        line = LogLine(self._resource, self._scope)
        line.body, line.attributes, line.event_name = body, attributes, event_name
        line.severity_number, line.severity_text = severity_number, severity_text
        line.timestamp, line.observed_timestamp = timestamp, time.time_ns()
        line.trace_id, line.span_id = trace_id, span_id
        line.trace_flags = 1 if trace_id and sampled else 0
        self._deliver(line)


def export_logs(
    exporter: LogRecordExporter,
    resource: Resource,
    drops: DropCounter,
    env: Mapping[str, str],
    delay_s: float,
) -> LogSink:
    if getattr(exporter, "fast", False):
        return LineSink(exporter, resource, drops, env, delay_s)
    return SdkLogSink(exporter, resource, delay_s)


class LineSink:
    def __init__(
        self,
        exporter: LogRecordExporter,
        resource: Resource,
        drops: DropCounter,
        env: Mapping[str, str],
        delay_s: float,
    ) -> None:
        self._exporter, self._resource = exporter, resource
        drops.add("logs", "queue_full", 0)
        self._queue: BatchQueue[LogLine] = BatchQueue(
            "logs",
            self._export,
            drops,
            max_queue=env_size(env, "OTEL_BLRP_MAX_QUEUE_SIZE", 2048),
            max_batch=env_size(env, "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 512),
            delay_s=delay_s,
            prepare=preparer(exporter),
        )

    def emitter(self, name: str, version: str, schema_url: str | None = None) -> LogEmitter:
        scope = InstrumentationScope(name, version, schema_url)
        return LogEmitter(lambda line: self._queue.put((line,)), self._resource, scope)

    def _export(self, batch: Any) -> bool:
        return self._exporter.export(batch) == LogRecordExportResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        return self._queue.flush(timeout_s)

    def shutdown(self, timeout_s: float) -> None:
        left = time_left(timeout_s)
        self._queue.flush(left())
        self._queue.shutdown(left())
        self._exporter.shutdown()  # type: ignore[no-untyped-call]


class SdkLogSink:
    """The SDK's pipeline, for exporters that need the SDK's log records."""

    def __init__(self, exporter: LogRecordExporter, resource: Resource, delay_s: float) -> None:
        self._resource = resource
        self._provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self._provider.add_log_record_processor(
            BatchLogRecordProcessor(exporter, schedule_delay_millis=delay_s * 1000)
        )

    def emitter(self, name: str, version: str, schema_url: str | None = None) -> LogEmitter:
        logger = self._provider.get_logger(name, version, schema_url)
        scope = InstrumentationScope(name, version, schema_url)
        return LogEmitter(functools.partial(_to_sdk, logger), self._resource, scope)

    def flush(self, timeout_s: float) -> bool:
        return self._provider.force_flush(int(timeout_s * 1000))

    def shutdown(self, timeout_s: float) -> None:
        # The SDK's shutdown takes no timeout (its batch processor waits up to 30 s for an
        # export in flight, and its flush ignores the one it is given): it runs on a thread
        # of its own, waited for only `timeout_s`, and a process exit does not wait for it.
        stop = threading.Thread(
            target=self._provider.shutdown, name="spangate-logs-stop", daemon=True
        )
        stop.start()
        stop.join(timeout_s)


def _to_sdk(logger: Any, line: LogLine) -> None:
    context = None
    if line.trace_id and line.span_id:
        flags = TraceFlags(line.trace_flags)
        span = NonRecordingSpan(SpanContext(line.trace_id, line.span_id, False, flags))
        context = trace.set_span_in_context(span)
    logger.emit(
        timestamp=line.timestamp,
        context=context,
        severity_number=line.severity_number,
        severity_text=line.severity_text,
        body=line.body,
        attributes=line.attributes,
        event_name=line.event_name,
    )
