"""Build finished spans from request records, off the request path.

Spans are constructed as ReadableSpan objects with the ids assigned when the
request arrived, then handed to the export queue: no live Span objects, locks
or context switches on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import AttributeValue

from instrumentation.records import RequestRecord

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
# Immutable, so shared by every span: two objects fewer to build per span.
_NO_STATE = TraceState()
_UNSET = Status(StatusCode.UNSET)
Attributes = Mapping[str, AttributeValue]


class SpanFactory:
    def __init__(self, resource: Resource, scope: InstrumentationScope) -> None:
        self._resource = resource
        self._scope = scope
        #: The last server span context (with what it was made of), which the same
        #: record's client spans take as their parent: built once per record.
        self._server: tuple[tuple[int, int, str | None], SpanContext] | None = None

    def _server_context(self, record: RequestRecord) -> SpanContext:
        made_of = (
            record.trace_id,
            record.span_id,
            record.parent.tracestate if record.parent is not None else None,
        )
        last = self._server
        if last is not None and last[0] == made_of:
            return last[1]
        context = self._context(record, record.span_id)
        self._server = (made_of, context)
        return context

    def _context(self, record: RequestRecord, span_id: int) -> SpanContext:
        return SpanContext(
            record.trace_id,
            span_id,
            is_remote=False,
            trace_flags=_SAMPLED,
            trace_state=_tracestate(record),
        )

    def server(
        self, record: RequestRecord, name: str, attributes: Attributes, error: str | None
    ) -> ReadableSpan:
        parent = record.parent
        parent_ctx = (
            SpanContext(parent.trace_id, parent.span_id, is_remote=True, trace_flags=_SAMPLED)
            if parent is not None
            else None
        )
        return ReadableSpan(
            name=name,
            context=self._server_context(record),
            parent=parent_ctx,
            resource=self._resource,
            attributes=attributes,
            kind=SpanKind.SERVER,
            status=_status(error),
            start_time=record.start_wall_ns,
            end_time=record.wall(record.end_ns),
            instrumentation_scope=self._scope,
        )

    def client(
        self,
        record: RequestRecord,
        span_id: int,
        name: str,
        times: tuple[int, int],
        attributes: Attributes,
        error: str | None,
        events: tuple[Event, ...] = (),
    ) -> ReadableSpan:
        return ReadableSpan(
            name=name,
            context=self._context(record, span_id),
            parent=self._server_context(record),
            resource=self._resource,
            attributes=attributes,
            events=events,
            kind=SpanKind.CLIENT,
            status=_status(error),
            start_time=record.wall(times[0]),
            end_time=record.wall(times[1]),
            instrumentation_scope=self._scope,
        )


def _status(error: str | None) -> Status:
    return Status(StatusCode.ERROR, error) if error else _UNSET


def _tracestate(record: RequestRecord) -> TraceState:
    if record.parent is None or not record.parent.tracestate:
        return _NO_STATE
    return TraceState.from_header([record.parent.tracestate])
