"""Forward structlog events (already redacted) to an OpenTelemetry logger for OTLP export."""

from __future__ import annotations

import contextlib
from collections.abc import MutableMapping
from typing import Any

import msgspec
from opentelemetry._logs import SeverityNumber

from instrumentation.logexport import LogEmitter

_SEVERITY = {
    "debug": SeverityNumber.DEBUG,
    "info": SeverityNumber.INFO,
    "warning": SeverityNumber.WARN,
    "error": SeverityNumber.ERROR,
    "critical": SeverityNumber.FATAL,
}
_SCALARS = (str, bool, int, float)
#: Line keys that are the record's own fields (body, severity, time), not attributes.
_NOT_ATTRIBUTES = frozenset({"event", "level", "ts"})
_NOT_ATTRIBUTES_WITH_IDS = _NOT_ATTRIBUTES | {"trace_id", "span_id"}


class OTelLogBridge:
    def __init__(self, logger: LogEmitter) -> None:
        self._logger = logger

    def __call__(
        self, _: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        # A telemetry failure never fails the caller.
        with contextlib.suppress(Exception):
            self._emit(method, event)
        return event

    def _emit(self, method: str, event: MutableMapping[str, Any]) -> None:
        trace_id, span_id = _ids(event)
        # Ids that became the record's own trace context are not repeated as attributes:
        # two values new on every record, which no encoder cache can keep.
        skipped = _NOT_ATTRIBUTES_WITH_IDS if trace_id else _NOT_ATTRIBUTES
        attributes = {
            key: value if isinstance(value, _SCALARS) else msgspec.json.encode(value).decode()
            for key, value in event.items()
            if key not in skipped and value is not None
        }
        self._logger.emit(
            severity_number=_SEVERITY.get(method, SeverityNumber.INFO),
            severity_text=method.upper(),
            body=str(event.get("event", "")),
            attributes=attributes,
            trace_id=trace_id,
            span_id=span_id,
        )


def _ids(event: MutableMapping[str, Any]) -> tuple[int, int]:
    """The line's trace and span ids (ints until the line is rendered, or hex text from
    another caller), or zeros when it has none."""
    trace_id, span_id = event.get("trace_id"), event.get("span_id")
    if type(trace_id) is int and type(span_id) is int:
        ids = trace_id, span_id
    elif isinstance(trace_id, str) and isinstance(span_id, str):
        try:
            ids = int(trace_id, 16), int(span_id, 16)
        except ValueError:
            return 0, 0
    else:
        return 0, 0
    # As an invalid SpanContext gave no ids before: both or neither.
    return ids if ids[0] and ids[1] and ids[0] < 1 << 128 and ids[1] < 1 << 64 else (0, 0)
