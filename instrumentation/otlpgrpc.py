"""The SDK's OTLP/gRPC exporters: for spans and logs with otlpwire's encoders in place
of the SDK's, and for all three reading a collector's partial success. Only that
changes; channel, TLS, headers, compression, retries and timeouts stay the SDK's.
The seams are the SDK's `_translate_data` and its stub factory.

A module of its own so that OTLP/HTTP (the default protocol) never imports grpc
(~8.5 MB resident) or the protobuf request classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as _GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as _GrpcMetrics,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as _Grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan

from instrumentation.otlpresponse import Rejected, rejected
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


class GrpcMetricExporter(_GrpcMetrics):
    """The SDK's own, encoding included (metrics leave every few seconds, not per
    request); only its answers are read for a partial success."""

    def __init__(self, on_rejected: Rejected | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if on_rejected is not None:
            _send_bytes(self, _METRICS, ExportMetricsServiceResponse, on_rejected, _serialized)


def _serialized(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


_Message = TypeVar("_Message", ExportTraceServiceRequest, ExportLogsServiceRequest)


_TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
_METRICS = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


class _Stub:
    """The generated stub's Export, with the response read for a partial success first,
    and without a request serializer unless given one: gRPC sends bytes given to a
    method without one as they are."""

    def __init__(
        self,
        channel: Any,
        method: str,
        response: Any,
        on_rejected: Rejected | None,
        serialize: Callable[[Any], bytes] | None,
    ) -> None:
        parse = reading(response.FromString, on_rejected)
        self.Export = channel.unary_unary(
            method, request_serializer=serialize, response_deserializer=parse
        )


def _send_bytes(
    exporter: Any,
    method: str,
    response: Any,
    on_rejected: Rejected | None = None,
    serialize: Callable[[Any], bytes] | None = None,
) -> bool:
    """Give the SDK exporter a stub that sends our encoded bytes, so a batch is not
    parsed into protobuf objects only for gRPC to serialise it again (two passes over
    the whole batch in C, holding the GIL). The seam is the SDK's stub factory, used
    again when it reconnects; without it, the bytes are parsed as before.
    With `serialize`, the stub takes the SDK's message objects (metrics)."""
    reconnect = getattr(exporter, "_initialize_channel_and_stub", None)
    if not callable(reconnect) or not hasattr(exporter, "_stub"):
        return False
    old, old_stub = getattr(exporter, "_channel", None), exporter._stub
    exporter._stub = lambda channel: _Stub(channel, method, response, on_rejected, serialize)
    try:
        reconnect()
    except Exception:
        # The SDK's client, on its first channel, still works: keep it as it was.
        exporter._stub = old_stub
        return False
    if old is not None:
        old.close()
    # An SDK that builds its client some other way keeps its serialising stub: parse.
    return isinstance(getattr(exporter, "_client", None), _Stub)


def _reparse(message: type[_Message], encoded: bytes) -> _Message:
    """Without the bytes stub, gRPC serialises the message object it is given; parsing
    our bytes back is C code, a few microseconds per span."""
    parsed: _Message = message.FromString(encoded)
    return parsed


def reading(
    parse: Callable[[bytes], object], on_rejected: Rejected | None
) -> Callable[[bytes], object]:
    """`parse` (a gRPC response deserializer) that first tells `on_rejected` of a
    partial success in the bytes it is given."""
    if on_rejected is None:
        return parse

    def deserialize(data: bytes) -> object:
        partial = rejected(data)
        if partial is not None:
            # Raising here would turn an accepted export into gRPC's INTERNAL error.
            with contextlib.suppress(Exception):
                on_rejected(*partial)
        return parse(data)

    return deserialize
