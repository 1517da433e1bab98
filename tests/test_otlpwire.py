"""instrumentation.otlpwire writes the same OTLP messages the SDK's encoders build.

Both outputs are parsed with the official protobuf classes and compared as
messages, so any field otlpwire gets wrong (tag, wire type, presence) fails.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from conftest import Running, basic_config
from fakeprovider import FakeProvider, openai_error, stall
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from test_telemetry_support import CLAUDE, GPT, oai

from instrumentation import otlp
from instrumentation.encoded import Encoded
from instrumentation.logging import Redactor
from instrumentation.otlpwire import LogEncoder, SpanEncoder, _one_group, preparer
from instrumentation.records import RequestRecord
from instrumentation.setup import Telemetry
from instrumentation.spans import SpanFactory, SpanLine
from instrumentation.tracecontext import Parent
from proxy.config import TelemetryConfig

HELLO: Any = [{"role": "user", "content": "hi there"}]


def assert_encodes_like_the_sdk(
    encoder: SpanEncoder | LogEncoder, sdk_encode: Callable[[Any], Any], items: list[Any]
) -> None:
    """Our bytes parse to the SDK's message; a second pass (from the caches) is identical."""
    first = encoder.encode(items)
    expected = sdk_encode(items)
    assert type(expected).FromString(first) == expected
    assert encoder.encode(items) == first


def assert_same_message(spans: list[ReadableSpan]) -> None:
    assert_encodes_like_the_sdk(SpanEncoder(), encode_spans, spans)


def test_spans_of_real_traffic_encode_exactly_like_the_sdk(
    fake: FakeProvider, spangate_for: Any
) -> None:
    """Chat, stream, a failover with an error attempt, Anthropic and a caller traceparent."""
    running: Running = spangate_for(basic_config(fake))
    client = oai(running)
    client.chat.completions.create(model=GPT, messages=HELLO, temperature=0.5, max_tokens=9)
    list(client.chat.completions.create(model=GPT, messages=HELLO, stream=True))
    fake.script(openai_error(429))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=GPT, messages=HELLO)
    fake.script(stall(after=2, seconds=0.01))
    list(client.chat.completions.create(model=GPT, messages=HELLO, stream=True))
    client.chat.completions.create(
        model=GPT,
        messages=HELLO,
        extra_headers={"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01", "tracestate": "v=1,w=2"},
    )
    anthropic.Anthropic(base_url=running.url, api_key="sk-test", max_retries=0).messages.create(
        model=CLAUDE, max_tokens=16, messages=HELLO
    )
    spans = running.finished_spans()
    assert len(spans) >= 12
    assert_same_message(spans)


def varied_spans() -> list[ReadableSpan]:
    """Zero values inside AnyValue's oneof, negatives, floats, arrays, bytes, events, links,
    remote parents, trace state, dropped counts, two resources and a scope without version."""
    remote = SpanContext(7, 8, is_remote=True, trace_state=TraceState([("a", "1")]))
    local = SpanContext(7, 9, is_remote=False)
    attributes: dict[str, Any] = {
        "s": "x",
        "empty": "",
        "t": True,
        "f": False,
        "zero": 0,
        "neg": -5,
        "big": 2**62,
        "pi": 3.25,
        "fzero": 0.0,
        "strs": ("a", "b"),
        "ints": [1, -2],
        "long": "y" * 1000,
    }
    return [
        ReadableSpan(
            name="chat gpt",
            context=SpanContext(7, 10, is_remote=False, trace_state=TraceState([("k", "v")])),
            parent=remote,
            resource=Resource({"service.name": "a", "n": 1}),
            attributes=attributes,
            events=[Event("e", {"k": "v", "n": 2}, timestamp=5), Event("bare", timestamp=6)],
            links=[Link(local, {"l": True})],
            kind=SpanKind.CLIENT,
            status=Status(StatusCode.ERROR, "boom"),
            start_time=1,
            end_time=2**63 + 3,
            instrumentation_scope=InstrumentationScope("spangate", "1.0", "https://schema"),
        ),
        ReadableSpan(
            name="POST /v1",
            context=local,
            parent=None,
            resource=Resource({"service.name": "b"}, schema_url="https://r"),
            attributes={},
            kind=SpanKind.SERVER,
            status=Status(StatusCode.OK),
            start_time=10,
            end_time=20,
            instrumentation_scope=InstrumentationScope("other"),
        ),
        ReadableSpan(
            name="internal",
            context=SpanContext(7, 11, is_remote=False),
            parent=local,
            resource=Resource({"service.name": "a", "n": 1}),
            kind=SpanKind.INTERNAL,
            start_time=3,
            end_time=4,
        ),
    ]


def test_every_attribute_type_and_optional_field_encodes_like_the_sdk() -> None:
    assert_same_message(varied_spans())


def test_items_encoded_as_they_are_queued_frame_to_the_same_bytes() -> None:
    """prepare() (run by the producer) then encode() (the export thread) gives the bytes
    of encoding the items at export; prepared and plain items mix; what is queued is
    bytes the garbage collector does not track."""
    spans = varied_spans()
    encoder = SpanEncoder()
    prepared = encoder.prepare(spans)
    assert not any(gc.is_tracked(item) for item in prepared)
    expected = SpanEncoder().encode(spans)
    assert encoder.encode(prepared) == expected
    assert encoder.encode([prepared[0], spans[1], prepared[2]]) == expected


def test_a_batch_prepared_with_one_resource_and_scope_is_framed_like_the_sdk() -> None:
    """The export thread's fast path (items prepared with one resource and scope,
    framed with one join) gives the SDK's message and the general path's bytes; an
    item with another scope or resource object, or one not prepared, takes the general
    path, which merges equal resources as before."""
    resource = Resource({"service.name": "a"}, schema_url="https://r")
    scope = InstrumentationScope("spangate", "1", "https://s")
    spans = [
        ReadableSpan(
            name=f"chat {n}",
            context=SpanContext(7, 10 + n, is_remote=False),
            resource=resource,
            attributes={"n": n, "s": "x" * n},
            instrumentation_scope=scope,
            start_time=n,
            end_time=n + 1,
        )
        for n in range(300)  # lengths past one varint byte at every level
    ]
    encoder = SpanEncoder()
    prepared = encoder.prepare(spans)
    assert len({id(item.group) for item in prepared}) == 1
    assert _one_group(prepared)  # the fast path, which must give the general path's bytes
    one_group = encoder.encode(prepared)
    assert ExportTraceServiceRequest.FromString(one_group) == encode_spans(spans)
    assert one_group == SpanEncoder().encode(spans)
    other_scope = SpanEncoder().prepare([_with(spans[0], scope=InstrumentationScope("x"))])
    mixed = [*prepared, *other_scope]
    assert not _one_group(mixed) and not _one_group([prepared[0], spans[1]])
    assert ExportTraceServiceRequest.FromString(encoder.encode(mixed)) == encode_spans(
        [*spans, _with(spans[0], scope=InstrumentationScope("x"))]
    )
    equal_resource = _with(spans[1], resource=Resource({"service.name": "a"}, "https://r"))
    merged = encoder.encode([*prepared[:1], *encoder.prepare([equal_resource])])
    assert merged == SpanEncoder().encode([spans[0], equal_resource])
    assert len(ExportTraceServiceRequest.FromString(merged).resource_spans) == 1
    assert encoder.encode([prepared[0], spans[1]]) == SpanEncoder().encode(spans[:2])
    assert encoder.encode([]) == b""


def _with(span: ReadableSpan, **changes: Any) -> ReadableSpan:
    return ReadableSpan(
        name=span.name,
        context=span.context,
        resource=changes.get("resource", span.resource),
        attributes=span.attributes,
        instrumentation_scope=changes.get("scope", span.instrumentation_scope),
        start_time=span.start_time,
        end_time=span.end_time,
    )


def test_span_lines_encode_as_the_readable_spans_they_stand_for() -> None:
    """SpanLines (built when the exporter is spangate's) give the bytes of the
    ReadableSpans the factory builds for any other exporter, which the SDK's encoder
    agrees with: server and client spans, with and without a caller, its tracestate
    (one, then another: the encoded state is kept per record's header; a malformed
    header is dropped whole, as the SDK's TraceState drops it), ok and failed."""
    resource = Resource({"service.name": "a"})
    scope = InstrumentationScope("spangate", "1", "https://s")
    own, sdk = SpanFactory(resource, scope, own=True), SpanFactory(resource, scope)
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "n": 3, "fr": ["stop"]}
    states = (None, "a=1,b=2", "c=3", "a=1,bad member")
    callers: list[Parent | None] = [None, *(Parent(5, 6, True, s) for s in states)]
    for caller in callers:
        record = RequestRecord("POST", "/v1/chat/completions")
        record.trace_id, record.span_id, record.parent = 5 if caller else 9, 11, caller
        record.end_ns = record.start_ns + 5_000
        times = (record.start_ns + 1_000, record.start_ns + 4_000)
        for error in (None, "rate_limited"):
            pairs = [
                (
                    own.server(record, "POST", attrs, error),
                    sdk.server(record, "POST", attrs, error),
                ),
                (
                    own.client(record, 77, "chat gpt", times, attrs, error),
                    sdk.client(record, 77, "chat gpt", times, attrs, error),
                ),
            ]
            for line, span in pairs:
                assert type(line) is SpanLine and type(span) is ReadableSpan
                assert SpanEncoder().encode([line]) == SpanEncoder().encode([span])
                assert_same_message([span])
    with_events = own.client(record, 77, "x", times, attrs, None, events=(Event("e"),))
    assert isinstance(with_events, ReadableSpan) and with_events.events  # SpanLines have none


def test_a_log_record_that_cannot_be_encoded_is_lost_alone_when_queued() -> None:
    resource = Resource({"service.name": "a"})
    good = ReadableLogRecord(LogRecord(timestamp=1, body="fine"), resource=resource)
    unencodable: Any = object()
    bad = ReadableLogRecord(LogRecord(timestamp=2, body=unencodable), resource=resource)
    encoder = LogEncoder()
    prepared = encoder.prepare([bad, good])
    assert len(prepared) == 1
    assert encoder.encode(prepared) == LogEncoder().encode([good])


def test_the_pair_cache_tells_true_from_one_and_stays_bounded() -> None:
    """`True` and `1` are equal in Python but different OTLP values; the cache is capped."""
    encoder = SpanEncoder()

    def make(value: Any) -> ReadableSpan:
        return ReadableSpan(
            name="s",
            context=SpanContext(1, 2, is_remote=False),
            attributes={"k": value},
            resource=Resource({}),
            start_time=1,
            end_time=2,
        )

    for value in (True, 1, False, 0):
        parsed = ExportTraceServiceRequest.FromString(encoder.encode([make(value)]))
        assert parsed == encode_spans([make(value)])
    for n in range(10_000):
        encoder.encode([make(f"value-{n}")])
    assert len(encoder._pairs) <= 8192


@pytest.mark.parametrize(
    "values",
    [
        (1.0, 1, True, 0.2, 0.2),
        (0.0, -0.0, 0.0, -0.0, 0),
        (float("inf"), float("-inf"), float("inf")),
        (["stop"], ("stop",), ["stop"], ["length", "stop"], ["stop"]),
        ([1, 2], [1.0, 2.0], [True, False], [1, 2]),
        ([], (), []),
    ],
    ids=["floats", "zeros", "infinities", "string-lists", "number-lists", "empty"],
)
def test_cached_floats_and_lists_encode_as_the_sdk_does(values: tuple[Any, ...]) -> None:
    """Floats and lists of strings are cached too; a value that equals another in Python
    (0.0 and -0.0, 1.0 and 1 and True, a list and its tuple) still gets its own bytes.
    Each value is encoded after the others, so repeats come from the cache."""
    encoder = SpanEncoder()
    for value in values:
        span = _span_with({"k": value, "other": "x"})
        parsed = ExportTraceServiceRequest.FromString(encoder.encode([span]))
        assert parsed == encode_spans([span]), value


def test_what_is_cached_is_a_snapshot_and_long_names_are_not_kept() -> None:
    """A list changed after it was encoded encodes its new items; long span names and
    status descriptions are encoded every time rather than kept."""
    encoder = SpanEncoder()
    reasons = ["stop"]
    for _ in range(2):
        span = _span_with({"k": reasons})
        assert ExportTraceServiceRequest.FromString(encoder.encode([span])) == encode_spans([span])
        reasons.append("length")
    long_name = "chat " + "m" * 300
    span = ReadableSpan(
        name=long_name,
        context=SpanContext(1, 2, is_remote=False),
        resource=Resource({}),
        status=Status(StatusCode.ERROR, "e" * 300),
        start_time=1,
        end_time=2,
    )
    for _ in range(2):
        assert ExportTraceServiceRequest.FromString(encoder.encode([span])) == encode_spans([span])
    assert long_name not in encoder._names
    assert all(description != "e" * 300 for _, description in encoder._statuses)


def test_a_nan_attribute_encodes_as_nan_every_time() -> None:
    encoder = SpanEncoder()
    for _ in range(3):
        parsed = ExportTraceServiceRequest.FromString(
            encoder.encode([_span_with({"k": float("nan")})])
        )
        (attribute,) = parsed.resource_spans[0].scope_spans[0].spans[0].attributes
        assert math.isnan(attribute.value.double_value)


def _span_with(attributes: dict[str, Any]) -> ReadableSpan:
    return ReadableSpan(
        name="s",
        context=SpanContext(1, 2, is_remote=False),
        attributes=attributes,
        resource=Resource({}),
        start_time=1,
        end_time=2,
    )


def test_keys_whose_values_never_repeat_stop_being_cached_and_encode_the_same() -> None:
    """A trace id on every line filled the pair cache, which was then cleared with the
    pairs that do repeat; now such a key is left out of the cache, and spans still
    encode exactly as the SDK encodes them."""
    encoder = SpanEncoder()

    def make(n: int) -> ReadableSpan:
        return ReadableSpan(
            name="s",
            context=SpanContext(1, 2, is_remote=False),
            attributes={"request.id": f"req-{n}", "model": "gpt-4o-mini", "port": 443},
            resource=Resource({}),
            start_time=1,
            end_time=2,
        )

    for n in range(10_000):
        encoder.encode([make(n)])
    assert (9, "request.id") in encoder._unique
    assert not any(key == "request.id" for _, key, _, _ in encoder._pairs)
    assert (9, "model", str, "gpt-4o-mini") in encoder._pairs
    for n in (10_000, 10_001):
        parsed = ExportTraceServiceRequest.FromString(encoder.encode([make(n)]))
        assert parsed == encode_spans([make(n)])


class _Interleaved(str):
    """An attribute key whose hash, once armed, runs `interleave` first: where the pair
    cache hashes it while counting its keys, a thread switch can let another thread
    encode a line with the same encoder (the log encoder has several producer threads)."""

    interleave: Callable[[], object] | None = None

    def __hash__(self) -> int:
        step, _Interleaved.interleave = _Interleaved.interleave, None  # once
        if step is not None:
            step()
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)


def test_another_thread_encoding_while_the_full_pair_cache_is_counted_changes_nothing() -> None:
    """The interleaving two threads logging at once can produce, driven explicitly: the
    pair cache is full, one thread counts its keys (_retire), and another encodes a line
    in the middle of that count. Counting over the cache itself raised "dictionary
    changed size during iteration" in pure mode and lost the batch; both lines must
    encode as a fresh encoder encodes them."""
    resource = Resource({"service.name": "a"})

    def line(attributes: dict[str, Any]) -> ReadableLogRecord:
        return ReadableLogRecord(
            LogRecord(timestamp=1, body="x", attributes=attributes), resource=resource
        )

    encoder = LogEncoder()
    encoder.encode([line({_Interleaved("hooked"): "v"})])  # the first pair in the cache
    n = 0
    while len(encoder._pairs) < 8192:  # full (_CACHE_LIMIT), no key near a share of it
        encoder.encode([line({f"k{n % 256}": n})])
        n += 1
    other, meanwhile = line({"other": "thread"}), []
    _Interleaved.interleave = lambda: meanwhile.append(encoder.encode([other]))
    last = line({"one": "more"})  # a new pair: the cache is full, so it is counted
    try:
        assert encoder.encode([last]) == LogEncoder().encode([last])
    finally:
        _Interleaved.interleave = None
    assert meanwhile == [LogEncoder().encode([other])]  # the other thread's line ran


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_exporters_use_otlpwire_with_the_installed_sdk(protocol: str) -> None:
    """Spans and logs, both transports take the fast encoders; an SDK change that
    disables them fails here."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
    }
    for exporter in (
        otlp.span_exporter(env, TelemetryConfig()),
        otlp.log_exporter(env, TelemetryConfig()),
    ):
        try:
            assert exporter.fast is True
        finally:
            exporter.shutdown()


def assert_same_logs(records: list[ReadableLogRecord]) -> None:
    assert_encodes_like_the_sdk(LogEncoder(), encode_logs, records)


def test_log_records_of_real_traffic_encode_exactly_like_the_sdk(
    fake: FakeProvider, spangate_for: Any
) -> None:
    """GenAI content events (nested maps and lists in the
    body, trace context, event names) encode exactly as the SDK's encoder does."""
    capture = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "EVENT_ONLY"}
    running: Running = spangate_for(basic_config(fake), env=capture)
    client = oai(running)
    client.chat.completions.create(model=GPT, messages=HELLO)
    list(client.chat.completions.create(model=GPT, messages=HELLO, stream=True))
    fake.script(openai_error(500))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=GPT, messages=HELLO)
    running.flush()
    records = list(running.logs.get_finished_logs())
    assert len(records) >= 3
    assert any(r.log_record.event_name for r in records)
    assert any(isinstance(r.log_record.body, dict) for r in records)
    assert_same_logs(records)


def test_log_record_optional_fields_encode_like_the_sdk() -> None:
    """Severity, no body, zero trace context, string body, attributes of every type."""
    resource = Resource({"service.name": "a"})
    scope = InstrumentationScope("spangate", "1.0", "https://schema")
    records = [
        ReadableLogRecord(
            LogRecord(timestamp=5, observed_timestamp=6, body=None),
            resource=resource,
            instrumentation_scope=scope,
        ),
        ReadableLogRecord(
            LogRecord(
                timestamp=7,
                observed_timestamp=8,
                context=set_span_in_context(
                    NonRecordingSpan(SpanContext(9, 10, is_remote=False, trace_flags=TraceFlags(1)))
                ),
                severity_text="WARN",
                severity_number=SeverityNumber.WARN,
                body="text body",
                attributes={"s": "x", "b": False, "i": 0, "f": 1.5, "l": ("a", "b")},
                event_name="gen_ai.client.inference.operation.details",
            ),
            resource=resource,
            instrumentation_scope=scope,
        ),
        ReadableLogRecord(
            LogRecord(timestamp=1, body={"nested": [{"k": 1}, [True, None]], "n": -3}),
            resource=Resource({"service.name": "b"}),
            instrumentation_scope=None,
        ),
    ]
    assert_same_logs(records)


def one_span(attributes: dict[str, Any], span_id: int = 2) -> ReadableSpan:
    return ReadableSpan(
        name="s",
        context=SpanContext(1, span_id, is_remote=False),
        attributes=attributes,
        resource=Resource({}),
        start_time=1,
        end_time=2,
    )


def exported_attributes(encoded: bytes) -> list[dict[str, Any]]:
    """Per span, attribute key → the AnyValue field set and its value."""
    message = ExportTraceServiceRequest.FromString(encoded)
    spans = [s for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans]
    out = []
    for span in spans:
        values = {}
        for kv in span.attributes:
            kind = kv.value.WhichOneof("value")
            values[kv.key] = (kind, getattr(kv.value, kind) if kind else None)
        out.append(values)
    return out


@pytest.mark.parametrize("value", [2**63, 2**64 - 1, 2**70, -(2**63) - 1])
def test_integers_outside_int64_lose_the_attribute_not_the_batch(value: int) -> None:
    """A client-controlled integer (seed, max_tokens) beyond int64 is dropped, as the SDK
    drops it; never wrapped into another number, never a corrupt message."""
    spans = [one_span({"gen_ai.request.seed": value, "ok": 1}), one_span({"ok": 2}, span_id=3)]
    encoded = SpanEncoder().encode(spans)
    assert exported_attributes(encoded) == [{"ok": ("int_value", 1)}, {"ok": ("int_value", 2)}]
    assert ExportTraceServiceRequest.FromString(encoded) == encode_spans(spans)


def test_int64_extremes_encode_like_the_sdk() -> None:
    """The largest and smallest int64 are exported exactly."""
    assert_same_message([one_span({"max": 2**63 - 1, "min": -(2**63)})])


def test_undecodable_header_bytes_are_replaced_not_fatal() -> None:
    """aiohttp hands header bytes that are not UTF-8 over as lone surrogates; the value is
    exported with U+FFFD in their place and the rest of the batch is untouched."""
    spans = [one_span({"user_agent.original": "bad\udcff", "ok": True}), one_span({"ok": False})]
    assert exported_attributes(SpanEncoder().encode(spans)) == [
        {"user_agent.original": ("string_value", "bad\ufffd"), "ok": ("bool_value", True)},
        {"ok": ("bool_value", False)},
    ]


def test_an_unencodable_value_loses_only_that_attribute() -> None:
    """A value of a type OTLP has no encoding for is skipped; the span still goes out."""
    spans = [one_span({"weird": object(), "ok": "yes"})]
    assert exported_attributes(SpanEncoder().encode(spans)) == [{"ok": ("string_value", "yes")}]


@pytest.mark.parametrize(
    ("first", "second"),
    [((True, False), (1, 0)), ((1, 2), (1.0, 2.0)), ((0.0,), (-0.0,)), (("a",), ("a",))],
)
def test_the_pair_cache_never_confuses_equal_but_different_arrays(
    first: tuple[Any, ...], second: tuple[Any, ...]
) -> None:
    """Python calls (1, 0) and (True, False) equal; OTLP does not. Same key, one encoder."""
    encoder = SpanEncoder()
    for value in (first, second):
        spans = [one_span({"k": value})]
        assert ExportTraceServiceRequest.FromString(encoder.encode(spans)) == encode_spans(spans)


def test_dropped_attribute_counts_of_events_and_links_are_exported() -> None:
    """Attribute limits that dropped event or link attributes say so, as the SDK does."""
    from opentelemetry.attributes import BoundedAttributes

    span = ReadableSpan(
        name="s",
        context=SpanContext(1, 2, is_remote=False),
        resource=Resource({}),
        events=[Event("e", BoundedAttributes(maxlen=1, attributes={"a": 1, "b": 2}), 5)],
        links=[
            Link(
                SpanContext(1, 3, is_remote=False),
                BoundedAttributes(maxlen=1, attributes={"a": 1, "b": 2}),
            )
        ],
        start_time=1,
        end_time=2,
    )
    assert_same_message([span])


def test_a_log_record_whose_body_cannot_be_encoded_is_lost_alone() -> None:
    """The other records of the batch are exported."""
    resource = Resource({"service.name": "a"})
    good = ReadableLogRecord(LogRecord(timestamp=1, body="fine"), resource=resource)
    unencodable: Any = object()
    bad = ReadableLogRecord(LogRecord(timestamp=2, body=unencodable), resource=resource)
    parsed = ExportLogsServiceRequest.FromString(LogEncoder().encode([bad, good]))
    records = [r for rl in parsed.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    assert [r.body.string_value for r in records] == ["fine"]


class RecordingGrpcStub:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def Export(self, request: Any, metadata: Any = None, timeout: Any = None) -> None:
        self.requests.append(request)


class RecordingHttpClient:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def export(self, data: bytes) -> Any:
        self.payloads.append(data)
        return type("Result", (), {"success": True})()

    def shutdown(self) -> None:
        pass


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_sdk_exporters_really_send_what_otlpwire_encoded(protocol: str) -> None:
    """Through the exporters' own export(): the bytes that reach the transport are
    otlpwire's (an SDK release that stops using the seams fails here)."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
    }
    exporter = otlp.span_exporter(env, TelemetryConfig())
    spans = [one_span({"k": "v"})]
    expected = SpanEncoder().encode(spans)
    try:
        if protocol == "grpc":
            # The bytes go to gRPC as they are: no protobuf object in between, also after
            # the SDK rebuilds its channel and stub (it does on UNAVAILABLE).
            assert exporter._raw
            exporter._initialize_channel_and_stub()
            assert type(exporter._client).__name__ == "_Stub"
            stub = RecordingGrpcStub()
            exporter._client = stub
            assert exporter.export(spans).name == "SUCCESS"
            assert stub.requests == [expected]
        else:
            client = RecordingHttpClient()
            exporter._client = client
            assert exporter.export(spans).name == "SUCCESS"
            assert client.payloads == [expected]
    finally:
        exporter._shutdown = True


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spangates_exporters_take_items_encoded_when_queued(protocol: str) -> None:
    """The queue encodes items for spangate's exporters (spans and logs, both transports),
    and what reaches the transport is the bytes of encoding them in one batch; an
    exporter that is not spangate's gets the SDK's objects."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
    }
    assert preparer(InMemorySpanExporter()) is None
    assert preparer(otlp.log_exporter(env, TelemetryConfig())) is not None
    exporter = otlp.span_exporter(env, TelemetryConfig())
    prepare = preparer(exporter)
    assert prepare is not None
    spans = [one_span({"k": "v"}), one_span({"k": 1}, span_id=3)]
    expected = SpanEncoder().encode(spans)
    try:
        if protocol == "grpc":
            stub = RecordingGrpcStub()
            exporter._client = stub
            assert exporter.export(prepare(spans)).name == "SUCCESS"
            assert stub.requests == [expected]
        else:
            client = RecordingHttpClient()
            exporter._client = client
            assert exporter.export(prepare(spans)).name == "SUCCESS"
            assert client.payloads == [expected]
    finally:
        exporter._shutdown = True


def test_an_http_batch_over_the_request_size_limit_is_not_sent() -> None:
    """As the SDK's exporter does: a batch the collector would refuse fails at once."""
    from instrumentation.otlpexport import HttpSpanExporter

    exporter: Any = HttpSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", max_request_size=16)
    client = RecordingHttpClient()
    exporter._client = client
    try:
        assert exporter.export([one_span({"k": "v" * 100})]).name == "FAILURE"
        assert client.payloads == []
    finally:
        exporter._shutdown = True


def test_a_log_body_nested_deeper_than_the_stack_is_lost_alone() -> None:
    """A client's tool schema can nest deeper than Python's recursion limit (msgspec
    decodes it fine): that one record is lost, the others and the caller are not. Compiled
    (proxy/native.py), the encoder's calls use the C stack: 100,000 levels would crash
    the process without its own depth limit."""
    deep: Any = "leaf"
    for _ in range(100_000):
        deep = {"a": deep}
    resource = Resource({"service.name": "a"})
    bad = ReadableLogRecord(LogRecord(timestamp=1, body=deep), resource=resource)
    good = ReadableLogRecord(LogRecord(timestamp=2, body="fine"), resource=resource)
    encoder = LogEncoder()
    assert encoder.encode(encoder.prepare([bad, good])) == LogEncoder().encode([good])


def test_the_span_queue_holds_spans_encoded_for_spangates_exporter() -> None:
    telemetry = Telemetry(
        TelemetryConfig(otlp_endpoint="http://127.0.0.1:9", otlp_protocol="grpc"),
        Redactor(),
        env={"OTEL_BSP_SCHEDULE_DELAY": "60000", "OTEL_METRICS_EXPORTER": "none"},
        pipeline="thread",
        announce=False,
    )
    try:
        queue = telemetry.span_queue
        assert queue is not None
        queue.put([one_span({"k": "v"})])
        assert [type(item) for item in queue._queue] == [Encoded]
    finally:
        telemetry.shutdown(0.5)
