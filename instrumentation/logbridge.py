"""Forward structlog events (already redacted) to an OpenTelemetry logger for OTLP export."""

from __future__ import annotations

import contextlib
from collections.abc import MutableMapping
from typing import Any

import msgspec
from opentelemetry import trace
from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

_SEVERITY = {
    "debug": SeverityNumber.DEBUG,
    "info": SeverityNumber.INFO,
    "warning": SeverityNumber.WARN,
    "error": SeverityNumber.ERROR,
    "critical": SeverityNumber.FATAL,
}
_SCALARS = (str, bool, int, float)


class OTelLogBridge:
    def __init__(self, logger: Logger) -> None:
        self._logger = logger

    def __call__(
        self, _: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        # A telemetry failure never fails the caller.
        with contextlib.suppress(Exception):
            self._emit(method, event)
        return event

    def _emit(self, method: str, event: MutableMapping[str, Any]) -> None:
        attributes = {
            key: value if isinstance(value, _SCALARS) else msgspec.json.encode(value).decode()
            for key, value in event.items()
            if key not in ("event", "level", "ts") and value is not None
        }
        self._logger.emit(
            severity_number=_SEVERITY.get(method, SeverityNumber.INFO),
            severity_text=method.upper(),
            body=str(event.get("event", "")),
            attributes=attributes,
            context=_context(event),
        )


def _context(event: MutableMapping[str, Any]) -> Any:
    trace_id, span_id = event.get("trace_id"), event.get("span_id")
    if not isinstance(trace_id, str) or not isinstance(span_id, str):
        return None
    try:
        ctx = SpanContext(int(trace_id, 16), int(span_id, 16), False, TraceFlags(1))
    except ValueError:
        return None
    return trace.set_span_in_context(NonRecordingSpan(ctx))
