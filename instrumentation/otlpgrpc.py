"""The SDK's OTLP/gRPC span and log exporters with otlpwire's encoders in place of the
SDK's: only the encoding changes; channel, TLS, headers, compression, retries and
timeouts stay the SDK's. The seam is the SDK's `_translate_data` and its stub factory.

A module of its own so that OTLP/HTTP (the default protocol) never imports grpc
(~8.5 MB resident) or the protobuf request classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as _GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as _Grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan

from instrumentation.otlpresponse import Rejected, reading
from instrumentation.otlpwire import LogEncoder, SpanEncoder


class GrpcSpanExporter(_Grpc):
    fast = True

    def __init__(self, on_rejected: Rejected | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = SpanEncoder()
        self._raw = _send_bytes(self, _TRACES, ExportTraceServiceResponse, on_rejected)

    def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
        encoded = self._encoder.encode(data)
        return encoded if self._raw else _reparse(ExportTraceServiceRequest, encoded)


class GrpcLogExporter(_GrpcLogs):
    fast = True

    def __init__(self, on_rejected: Rejected | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = LogEncoder()
        self._raw = _send_bytes(self, _LOGS, ExportLogsServiceResponse, on_rejected)

    def _translate_data(self, data: Sequence[ReadableLogRecord]) -> Any:
        encoded = self._encoder.encode(data)
        return encoded if self._raw else _reparse(ExportLogsServiceRequest, encoded)


_Message = TypeVar("_Message", ExportTraceServiceRequest, ExportLogsServiceRequest)


_TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


class _BytesStub:
    """The generated stub's Export, minus its request serializer: gRPC sends bytes
    given to a method without one as they are."""

    def __init__(
        self, channel: Any, method: str, response: Any, on_rejected: Rejected | None
    ) -> None:
        parse = reading(response.FromString, on_rejected)
        self.Export = channel.unary_unary(method, response_deserializer=parse)


def _send_bytes(
    exporter: Any, method: str, response: Any, on_rejected: Rejected | None = None
) -> bool:
    """Give the SDK exporter a stub that sends our encoded bytes, so a batch is not
    parsed into protobuf objects only for gRPC to serialise it again (two passes over
    the whole batch in C, holding the GIL). The seam is the SDK's stub factory, used
    again when it reconnects; without it, the bytes are parsed as before."""
    reconnect = getattr(exporter, "_initialize_channel_and_stub", None)
    if not callable(reconnect) or not hasattr(exporter, "_stub"):
        return False
    old = getattr(exporter, "_channel", None)
    exporter._stub = lambda channel: _BytesStub(channel, method, response, on_rejected)
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
