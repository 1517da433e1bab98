"""The SDK's OTLP/HTTP span and log exporters with otlpwire's encoders in place of the
SDK's.

Only the encoding changes; headers, compression, retries and timeouts stay the
SDK's, and the connection is instrumentation/otlphttp's unless the environment
asks for what only the SDK's `requests` transport does. The seam is the client
that `export` hands the bytes to; where an SDK version lacks it, the exporter
falls back to the SDK's own (slower) encoder rather than fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as _HttpLogs
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as _Http
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from instrumentation.otlpwire import LogEncoder, SpanEncoder

log = structlog.get_logger("spangate.telemetry")


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
