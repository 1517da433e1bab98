"""The SDK's OTLP span and log exporters with otlpwire's encoders in place of the SDK's.

Only the encoding changes; transport, headers, compression, retries and
timeouts stay the SDK's. The hooks used are the SDK's own seams: gRPC's
`_translate_data`, and for HTTP the client that `export` hands the bytes to.
Where an SDK version lacks that client, the HTTP exporter falls back to the
SDK's own (slower) encoder rather than fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import structlog
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as _GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as _Grpc
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as _HttpLogs
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as _Http
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from instrumentation.otlpwire import LogEncoder, SpanEncoder

log = structlog.get_logger("spangate.telemetry")


class GrpcSpanExporter(_Grpc):
    fast = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = SpanEncoder()
        self._raw = _send_bytes(self, _TRACES, ExportTraceServiceResponse)

    def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
        encoded = self._encoder.encode(data)
        return encoded if self._raw else _reparse(ExportTraceServiceRequest, encoded)


class HttpSpanExporter(_Http):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = SpanEncoder()
        self.fast = _has_client(self)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        sent = _send(self, self._encoder, spans)
        if sent is None:
            return super().export(spans)
        return SpanExportResult.SUCCESS if sent else SpanExportResult.FAILURE


class GrpcLogExporter(_GrpcLogs):
    fast = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = LogEncoder()
        self._raw = _send_bytes(self, _LOGS, ExportLogsServiceResponse)

    def _translate_data(self, data: Sequence[ReadableLogRecord]) -> Any:
        encoded = self._encoder.encode(data)
        return encoded if self._raw else _reparse(ExportLogsServiceRequest, encoded)


class HttpLogExporter(_HttpLogs):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = LogEncoder()
        self.fast = _has_client(self)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        sent = _send(self, self._encoder, batch)
        if sent is None:
            return super().export(batch)
        return LogRecordExportResult.SUCCESS if sent else LogRecordExportResult.FAILURE


_Message = TypeVar("_Message", ExportTraceServiceRequest, ExportLogsServiceRequest)


_TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


class _BytesStub:
    """The generated stub's Export, minus its request serializer: gRPC sends bytes
    given to a method without one as they are."""

    def __init__(self, channel: Any, method: str, response: Any) -> None:
        self.Export = channel.unary_unary(method, response_deserializer=response.FromString)


def _send_bytes(exporter: Any, method: str, response: Any) -> bool:
    """Give the SDK exporter a stub that sends our encoded bytes, so a batch is not
    parsed into protobuf objects only for gRPC to serialise it again (two passes over
    the whole batch in C, holding the GIL). The seam is the SDK's stub factory, used
    again when it reconnects; without it, the bytes are parsed as before."""
    reconnect = getattr(exporter, "_initialize_channel_and_stub", None)
    if not callable(reconnect) or not hasattr(exporter, "_stub"):
        return False
    old = getattr(exporter, "_channel", None)
    exporter._stub = lambda channel: _BytesStub(channel, method, response)
    reconnect()
    if old is not None:
        old.close()
    # An SDK that builds its client some other way keeps its serialising stub: parse.
    return isinstance(getattr(exporter, "_client", None), _BytesStub)


def _reparse(message: type[_Message], encoded: bytes) -> _Message:
    """Without the bytes stub, gRPC serialises the message object it is given; parsing
    our bytes back is C code, a few microseconds per span."""
    parsed: _Message = message.FromString(encoded)
    return parsed


def _send(exporter: Any, encoder: SpanEncoder | LogEncoder, batch: Sequence[Any]) -> bool | None:
    """Sent with our encoder through the SDK's HTTP client: did it succeed? None when
    the SDK's own path must be taken (no such client in this SDK version)."""
    if not exporter.fast:
        return None
    if getattr(exporter, "_shutdown", False):
        # Not the SDK's export: the batch may hold items encoded when queued, which
        # only spangate's encoder frames.
        return False
    data = encoder.encode(batch)
    limit = getattr(exporter, "_max_request_size", None)
    if isinstance(limit, int) and len(data) > limit:
        # The SDK's own rule: a request the collector would refuse is not sent.
        log.warning("otlp.batch_too_large", size=len(data), limit=limit, items=len(batch))
        return False
    return bool(exporter._client.export(data).success)


def _has_client(exporter: Any) -> bool:
    """The SDK's HTTP client that sends encoded bytes (opentelemetry-exporter-otlp ≥ 1.4x)."""
    return callable(getattr(getattr(exporter, "_client", None), "export", None))
