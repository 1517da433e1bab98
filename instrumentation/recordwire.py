"""Request records as plain msgpack-able lists, to cross into the telemetry process.

Positional (the slot order of RequestRecord / AttemptRecord), so a record costs
one list per object and no field names on the wire. 128-bit trace ids do not
fit a msgpack integer and travel as 16 bytes. Both ends run the same code, so
the layout needs no versioning.
"""

from __future__ import annotations

from typing import Any

from instrumentation.records import AttemptRecord, RequestRecord
from instrumentation.tracecontext import Parent

_REQUEST = RequestRecord.__slots__
_ATTEMPT = AttemptRecord.__slots__
_ATTEMPTS_AT = _REQUEST.index("attempts")
_PARENT_AT = _REQUEST.index("parent")
_TRACE_ID_AT = _REQUEST.index("trace_id")


def to_wire(record: RequestRecord) -> list[Any]:
    values = [getattr(record, name) for name in _REQUEST]
    values[_ATTEMPTS_AT] = [[getattr(a, name) for name in _ATTEMPT] for a in record.attempts]
    parent = record.parent
    if parent is not None:
        values[_PARENT_AT] = [
            parent.trace_id.to_bytes(16, "big"),
            parent.span_id,
            parent.sampled,
            parent.tracestate,
        ]
    values[_TRACE_ID_AT] = record.trace_id.to_bytes(16, "big")
    return values


def from_wire(values: list[Any]) -> RequestRecord:
    if len(values) != len(_REQUEST):
        raise ValueError(f"a request record has {len(_REQUEST)} fields, got {len(values)}")
    record = RequestRecord.__new__(RequestRecord)
    for name, value in zip(_REQUEST, values, strict=True):
        setattr(record, name, value)
    record.trace_id = int.from_bytes(values[_TRACE_ID_AT], "big")
    raw_parent = values[_PARENT_AT]
    if raw_parent is not None:
        trace_id, span_id, sampled, tracestate = raw_parent
        record.parent = Parent(int.from_bytes(trace_id, "big"), span_id, sampled, tracestate)
    record.attempts = [_attempt(a) for a in values[_ATTEMPTS_AT]]
    return record


def _attempt(values: list[Any]) -> AttemptRecord:
    attempt = AttemptRecord.__new__(AttemptRecord)
    for name, value in zip(_ATTEMPT, values, strict=True):
        setattr(attempt, name, value)
    return attempt
