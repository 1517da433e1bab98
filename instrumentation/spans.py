"""Build finished spans from request records, off the request path.

Spans are constructed with the ids assigned when the request arrived, then handed
to the export queue: no live Span objects, locks or context switches on the hot
path. For an exporter of spangate's own (which encodes spans as they are queued)
they are SpanLines, which carry what that encoder reads as plain slots; for any
other exporter, the SDK's ReadableSpans.
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


class SpanLine:
    """A finished span as spangate's OTLP encoder reads it (instrumentation/otlpwire.py).

    A ReadableSpan costs two SDK constructors to build (the span and its
    SpanContext) and, to encode, reads through properties that copy (`attributes`,
    `events`, `links`) or compute (the three dropped counts, the kind's enum hash).
    The telemetry worker's instructions per chat record fell 638 → 551 K without
    them (bench/README.md, eighth session).
    Only spangate's encoder sees these; the SDK's exporters get ReadableSpans.
    """

    __slots__ = (
        "attributes",
        "end_time",
        "error",
        "instrumentation_scope",
        "kind",
        "name",
        "parent_id",
        "parent_remote",
        "resource",
        "span_id",
        "start_time",
        "trace_id",
        "trace_state",
    )
    attributes: Attributes
    end_time: int
    resource: Resource
    instrumentation_scope: InstrumentationScope
    #: The status: ERROR with this description, or UNSET when None.
    error: str | None
    kind: SpanKind
    name: str
    parent_id: int  # 0: no parent
    parent_remote: bool
    span_id: int
    start_time: int
    trace_id: int
    #: The caller's tracestate as the SDK's TraceState keeps it (see tracestate_text),
    #: or "".
    trace_state: str


class SpanFactory:
    def __init__(self, resource: Resource, scope: InstrumentationScope, own: bool = False) -> None:
        self._resource = resource
        self._scope = scope
        #: SpanLines for spangate's own encoder, rather than ReadableSpans.
        self.own = own
        #: The last record's tracestate header, and its text as a SpanLine carries it.
        self._state: tuple[str | None, str] = (None, "")
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
    ) -> ReadableSpan | SpanLine:
        parent = record.parent
        if self.own:
            span = self._line(record, record.span_id, name, attributes, error, SpanKind.SERVER)
            span.start_time, span.end_time = record.start_wall_ns, record.wall(record.end_ns)
            if parent is not None:
                span.parent_id, span.parent_remote = parent.span_id, True
            return span
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
    ) -> ReadableSpan | SpanLine:
        if self.own and not events:
            span = self._line(record, span_id, name, attributes, error, SpanKind.CLIENT)
            span.start_time, span.end_time = record.wall(times[0]), record.wall(times[1])
            span.parent_id = record.span_id
            return span
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

    def _line(
        self,
        record: RequestRecord,
        span_id: int,
        name: str,
        attributes: Attributes,
        error: str | None,
        kind: SpanKind,
    ) -> SpanLine:
        span = SpanLine()
        span.resource, span.instrumentation_scope = self._resource, self._scope
        span.trace_id, span.span_id, span.name, span.kind = record.trace_id, span_id, name, kind
        span.attributes, span.error = attributes, error
        span.parent_id, span.parent_remote = 0, False
        span.trace_state = self._trace_state(record)
        return span

    def _trace_state(self, record: RequestRecord) -> str:
        header = record.parent.tracestate if record.parent is not None else None
        if not header:
            return ""
        last = self._state
        if last[0] != header:
            last = self._state = (header, tracestate_text(_tracestate(record)))
        return last[1]


def tracestate_text(state: TraceState) -> str:
    """The tracestate header of a (validated) TraceState, as OTLP's Span.trace_state holds
    it: what spangate exports for SpanLines and ReadableSpans alike."""
    return ",".join(f"{k}={v}" for k, v in state.items())


def _status(error: str | None) -> Status:
    return Status(StatusCode.ERROR, error) if error else _UNSET


def _tracestate(record: RequestRecord) -> TraceState:
    if record.parent is None or not record.parent.tracestate:
        return _NO_STATE
    return TraceState.from_header([record.parent.tracestate])
