"""Trace continuity: the caller's W3C context in, the attempt's CLIENT span out to the provider.

Also the switches that turn spans off (OTEL_SDK_DISABLED, the sampler, an unsampled
caller) and what must still happen then (metrics and the request.completed line).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import Running, basic_config
from fakeprovider import FakeProvider
from opentelemetry.trace import format_span_id, format_trace_id
from structlog.testing import capture_logs
from test_telemetry_support import (
    GPT,
    completed_lines,
    count,
    finished_spans,
    metric_points,
    oai,
    one_request,
    settle,
    total,
)

from instrumentation import semconv as sc

HELLO: Any = [{"role": "user", "content": "hi there"}]
Start = Callable[..., Running]
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACESTATE = "vendor=abc,other=1"


def caller_headers(flags: str = "01", tracestate: str | None = TRACESTATE) -> dict[str, str]:
    headers = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}"}
    if tracestate is not None:
        headers["tracestate"] = tracestate
    return headers


def test_caller_traceparent_is_continued_and_client_span_goes_upstream(
    fake: FakeProvider, spangate: Running
) -> None:
    """SERVER span joins the caller's trace as a child of its (remote) span; tracestate kept.

    The upstream request's traceparent names the attempt's CLIENT span in that trace,
    and the caller's tracestate travels with it.
    """
    oai(spangate, default_headers=caller_headers()).chat.completions.create(
        model=GPT, messages=HELLO
    )
    server, client = one_request(finished_spans(spangate))
    assert server.context is not None and client.context is not None
    assert format_trace_id(server.context.trace_id) == CALLER_TRACE
    assert server.parent is not None
    assert server.parent.is_remote
    assert format_span_id(server.parent.span_id) == CALLER_SPAN
    assert format_trace_id(server.parent.trace_id) == CALLER_TRACE
    assert server.context.trace_state.to_header() == TRACESTATE
    assert client.context.trace_state.to_header() == TRACESTATE
    upstream = fake.last.headers
    assert upstream["traceparent"] == (
        f"00-{CALLER_TRACE}-{format_span_id(client.context.span_id)}-01"
    )
    assert upstream["tracestate"] == TRACESTATE


def test_without_caller_context_upstream_traceparent_names_the_client_span(
    fake: FakeProvider, spangate: Running
) -> None:
    """A root request: a new trace; upstream gets the CLIENT span's traceparent, sampled."""
    oai(spangate).chat.completions.create(model=GPT, messages=HELLO)
    server, client = one_request(finished_spans(spangate))
    assert server.parent is None
    assert client.context is not None
    expected = (
        f"00-{format_trace_id(client.context.trace_id)}-{format_span_id(client.context.span_id)}-01"
    )
    assert fake.last.headers["traceparent"] == expected
    assert "tracestate" not in fake.last.headers


def test_propagate_trace_false_sends_no_trace_headers_upstream(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """providers.X.propagate_trace: false → neither traceparent nor tracestate goes upstream."""
    config = basic_config(fake)
    config["providers"]["openai"]["propagate_trace"] = False
    running = spangate_for(config)
    oai(running, default_headers=caller_headers()).chat.completions.create(
        model=GPT, messages=HELLO
    )
    server, _ = one_request(finished_spans(running))
    assert server.context is not None
    assert format_trace_id(server.context.trace_id) == CALLER_TRACE
    assert "traceparent" not in fake.last.headers
    assert "tracestate" not in fake.last.headers


def test_sdk_disabled_builds_no_spans_and_passes_caller_context_through(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """OTEL_SDK_DISABLED=true: no spans; the caller's traceparent/tracestate go upstream as sent."""
    running = spangate_for(basic_config(fake), env={"OTEL_SDK_DISABLED": "true"})
    headers = caller_headers()
    resp = oai(running, default_headers=headers).chat.completions.create(model=GPT, messages=HELLO)
    assert resp.choices
    assert finished_spans(running) == []
    assert fake.last.headers["traceparent"] == headers["traceparent"]
    assert fake.last.headers["tracestate"] == headers["tracestate"]


def test_sampler_always_off_builds_no_spans_but_keeps_metrics_and_log_line(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """OTEL_TRACES_SAMPLER=always_off: no spans, but metrics and request.completed are recorded."""
    running = spangate_for(basic_config(fake), env={"OTEL_TRACES_SAMPLER": "always_off"})
    with capture_logs() as captured:
        oai(running).chat.completions.create(model=GPT, messages=HELLO)
        settle(running)
    assert finished_spans(running) == []
    assert total(metric_points(running, sc.METRIC_REQUESTS)) == 1
    assert count(metric_points(running, sc.METRIC_OPERATION_DURATION)) == 1
    assert len(metric_points(running, sc.METRIC_TOKEN_USAGE)) == 2
    (line,) = completed_lines(captured)
    assert line["status"] == 200
    # The decision travels upstream: the provider is told not to sample either.
    assert fake.last.headers["traceparent"].endswith("-00")


def test_unsampled_caller_means_no_spans_and_unsampled_upstream(
    fake: FakeProvider, spangate: Running
) -> None:
    """A caller traceparent with flags 00 (parentbased default): no spans, upstream flags 00."""
    oai(spangate, default_headers=caller_headers(flags="00")).chat.completions.create(
        model=GPT, messages=HELLO
    )
    assert finished_spans(spangate) == []
    upstream = fake.last.headers["traceparent"]
    version, trace_id, span_id, flags = upstream.split("-")
    assert (version, trace_id, flags) == ("00", CALLER_TRACE, "00")
    assert span_id != CALLER_SPAN
    assert total(metric_points(spangate, sc.METRIC_REQUESTS)) == 1


def test_invalid_caller_traceparent_starts_a_new_trace(
    fake: FakeProvider, spangate: Running
) -> None:
    """An all-zero trace id is invalid (W3C): ignored, the request becomes a sampled root."""
    bad = {"traceparent": f"00-{'0' * 32}-{CALLER_SPAN}-01"}
    oai(spangate, default_headers=bad).chat.completions.create(model=GPT, messages=HELLO)
    server, client = one_request(finished_spans(spangate))
    assert server.parent is None
    assert client.context is not None
    assert fake.last.headers["traceparent"] == (
        f"00-{format_trace_id(client.context.trace_id)}-{format_span_id(client.context.span_id)}-01"
    )


def test_traceidratio_zero_ignores_a_sampled_caller(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """traceidratio (not parent-based) with ratio 0: no spans even when the caller sampled."""
    env = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    running = spangate_for(basic_config(fake), env=env)
    oai(running, default_headers=caller_headers()).chat.completions.create(
        model=GPT, messages=HELLO
    )
    assert finished_spans(running) == []
    assert fake.last.headers["traceparent"].endswith("-00")


def test_parentbased_always_off_follows_a_sampled_caller(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """parentbased_always_off: roots are dropped, but a sampled caller's request is traced."""
    running = spangate_for(
        basic_config(fake), env={"OTEL_TRACES_SAMPLER": "parentbased_always_off"}
    )
    client = oai(running)
    client.chat.completions.create(model=GPT, messages=HELLO)
    assert finished_spans(running) == []
    oai(running, default_headers=caller_headers()).chat.completions.create(
        model=GPT, messages=HELLO
    )
    server, _ = one_request(finished_spans(running))
    assert server.context is not None
    assert format_trace_id(server.context.trace_id) == CALLER_TRACE


def test_sampler_environment_wins_over_config(fake: FakeProvider, spangate_for: Start) -> None:
    """Config traces_sampler=always_off, env OTEL_TRACES_SAMPLER=always_on: the env wins."""
    config = basic_config(fake, telemetry={"traces_sampler": "always_off"})
    running = spangate_for(config, env={"OTEL_TRACES_SAMPLER": "always_on"})
    oai(running).chat.completions.create(model=GPT, messages=HELLO)
    one_request(finished_spans(running))


def test_config_sdk_disabled_builds_no_spans_and_passes_caller_context_through(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """telemetry.sdk_disabled: true behaves like OTEL_SDK_DISABLED=true."""
    running = spangate_for(basic_config(fake, telemetry={"sdk_disabled": True}))
    headers = caller_headers()
    oai(running, default_headers=headers).chat.completions.create(model=GPT, messages=HELLO)
    assert finished_spans(running) == []
    assert fake.last.headers["traceparent"] == headers["traceparent"]
