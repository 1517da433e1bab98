"""One trace from the app through spangate to the provider, as a real collector receives it.

The openai SDK sends no `traceparent` by itself, so the app passes one; the
anthropic SDK, given the app's OpenTelemetry tracer provider, sends its own.
Both use the default OTLP protocol (no OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from fakeprovider import FakeProvider
from harness import SpangateProcess
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from receivers.rotel import RotelReceiver
from test_integration_support import (
    CLAUDE,
    CLIENT,
    GPT,
    HELLO,
    NO_OTLP,
    SERVER,
    children,
    config_for,
    openai_client,
    otlp_env,
    poll,
    spans,
    started,
)

pytestmark = pytest.mark.integration

ANTHROPIC_SCOPE = "com.anthropic.sdk.python"


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[FakeProvider, RotelReceiver, SpangateProcess]]:
    with (
        FakeProvider() as fake,
        RotelReceiver() as receiver,
        started(config_for(fake), otlp_env(receiver.http_endpoint)) as proc,
    ):
        yield fake, receiver, proc


def parse_traceparent(value: str) -> tuple[str, str, str]:
    version, trace_id, span_id, flags = value.split("-")
    assert (version, len(trace_id), len(span_id)) == ("00", 32, 16), value
    return trace_id, span_id, flags


def wait_for_server_span(receiver: RotelReceiver, trace_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        matches = [
            s
            for s in spans(receiver)
            if s["kind"] == SERVER and s["trace_id"] == trace_id and children(receiver, s)
        ]
        return matches[0] if len(matches) == 1 else None

    return poll(found, what=f"the SERVER span of trace {trace_id}")


def test_caller_traceparent_is_continued_and_propagated_upstream(
    setup: tuple[FakeProvider, RotelReceiver, SpangateProcess],
) -> None:
    fake, receiver, proc = setup
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    before = len(fake.received)
    openai_client(proc).chat.completions.create(
        model=GPT,
        messages=HELLO,
        extra_headers={
            "traceparent": f"00-{trace_id}-{caller_span}-01",
            "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        },
    )

    server = wait_for_server_span(receiver, trace_id)
    assert server["parent_span_id"] == caller_span
    (client,) = children(receiver, server)
    assert client["kind"] == CLIENT
    assert client["trace_id"] == trace_id

    (upstream,) = fake.received[before:]
    sent_trace, sent_span, flags = parse_traceparent(upstream.headers["traceparent"])
    assert sent_trace == trace_id
    assert sent_span == client["span_id"]  # the provider's parent is the attempt's CLIENT span
    assert flags == "01"
    assert upstream.headers["tracestate"] == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def test_unsampled_caller_trace_exports_no_spans_but_is_still_logged(
    setup: tuple[FakeProvider, RotelReceiver, SpangateProcess],
) -> None:
    """parentbased_always_on: the caller's "not sampled" is honoured and passed on."""
    fake, receiver, proc = setup
    gpt = openai_client(proc)
    unsampled = secrets.token_hex(16)
    before = len(fake.received)
    gpt.chat.completions.create(
        model=GPT,
        messages=HELLO,
        extra_headers={"traceparent": f"00-{unsampled}-{secrets.token_hex(8)}-00"},
    )
    (upstream,) = fake.received[before:]
    sent_trace, _, flags = parse_traceparent(upstream.headers["traceparent"])
    assert (sent_trace, flags) == (unsampled, "00")

    # A sampled request after it: once its spans are in, the unsampled one's would be too.
    sampled = secrets.token_hex(16)
    gpt.chat.completions.create(
        model=GPT,
        messages=HELLO,
        extra_headers={"traceparent": f"00-{sampled}-{secrets.token_hex(8)}-01"},
    )
    wait_for_server_span(receiver, sampled)
    assert [s for s in spans(receiver) if s["trace_id"] == unsampled] == []
    # The log line is kept for every request, sampled or not, with its trace id.
    logged = poll(
        lambda: [r for r in receiver.items("log") if r["trace_id"] == unsampled],
        what="the unsampled request's log record",
    )
    assert [r["body"] for r in logged] == ["request.completed"]


def sdk_client_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if span.instrumentation_scope is not None
        and span.instrumentation_scope.name == ANTHROPIC_SCOPE
        and span.kind == SpanKind.CLIENT
    ]


def test_anthropic_sdk_span_is_the_parent_of_spangate_server_span(
    setup: tuple[FakeProvider, RotelReceiver, SpangateProcess],
) -> None:
    fake, receiver, proc = setup
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app_tracer = provider.get_tracer("integration-test-app")

    def client(base_url: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=base_url,
            api_key="sk-ant-test",
            max_retries=0,
            timeout=20,
            open_telemetry={"tracer_provider": provider},
        )

    # First, without spangate: does this anthropic SDK send traceparent at all?
    before = len(fake.received)
    with app_tracer.start_as_current_span("probe"):
        client(fake.url).messages.create(model=CLAUDE, max_tokens=16, messages=HELLO)
    (direct,) = fake.received[before:]
    if "traceparent" not in direct.headers or not sdk_client_spans(exporter):
        pytest.skip(
            f"anthropic {anthropic.__version__} sends no traceparent with an app tracer provider"
        )
    exporter.clear()

    with app_tracer.start_as_current_span("app-operation") as app_span:
        client(proc.url).messages.create(model=CLAUDE, max_tokens=16, messages=HELLO)
    provider.shutdown()
    (sdk_span,) = sdk_client_spans(exporter)
    assert sdk_span.parent is not None
    assert sdk_span.parent.span_id == app_span.get_span_context().span_id
    sdk_trace = f"{sdk_span.context.trace_id:032x}"
    sdk_span_id = f"{sdk_span.context.span_id:016x}"

    server = wait_for_server_span(receiver, sdk_trace)
    assert server["parent_span_id"] == sdk_span_id
    (spangate_client,) = children(receiver, server)
    assert spangate_client["name"] == f"chat {CLAUDE}"
    upstream_trace, upstream_span, _ = parse_traceparent(fake.last.headers["traceparent"])
    assert (upstream_trace, upstream_span) == (sdk_trace, spangate_client["span_id"])


def test_without_an_exporter_the_callers_context_reaches_the_provider_unchanged() -> None:
    """spangate not exporting spans must not cut the app's model server out of the trace:
    with no span of ours to be a parent, the caller's traceparent (its span, its sampled
    flag) passes through as the app sent it, so a tracing provider (vLLM) joins the
    caller's trace directly."""
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    with FakeProvider() as fake, started(config_for(fake), NO_OTLP) as proc:
        proc.wait_for_log("telemetry.traces_not_exported")
        openai_client(proc).chat.completions.create(
            model=GPT,
            messages=HELLO,
            extra_headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
        sent_trace, sent_parent, flags = parse_traceparent(fake.last.headers["traceparent"])
    assert (sent_trace, sent_parent, flags) == (trace_id, caller_span, "01")


def test_without_an_exporter_or_a_caller_context_no_traceparent_is_invented() -> None:
    """No caller context and no spans of ours: the provider gets no traceparent at all
    (a tracing provider starts its own trace rather than join one nobody exports)."""
    with FakeProvider() as fake, started(config_for(fake), NO_OTLP) as proc:
        proc.wait_for_log("telemetry.traces_not_exported")
        openai_client(proc).chat.completions.create(model=GPT, messages=HELLO)
        assert "traceparent" not in {k.lower() for k in fake.last.headers}
