"""Metrics: GenAI client histograms (names, buckets, attribute sets) and spangate's own series.

Expected values come from the usage the SDK received and from the shipped price
table; durations are only checked to be positive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import Running, basic_config
from fakeprovider import FakeProvider, openai_error, stall
from opentelemetry.trace import format_span_id, format_trace_id
from test_telemetry_support import (
    CLAUDE,
    ERROR_500,
    GPT,
    SPEC_DURATION_BUCKETS,
    SPEC_TOKEN_BUCKETS,
    attrs,
    claude,
    count,
    finished_spans,
    metric_points,
    oai,
    one_request,
    point_attrs,
    points_where,
    settle,
    spangate_with,
    total,
)

from instrumentation import semconv as sc

HELLO: Any = [{"role": "user", "content": "hi there"}]
Start = Callable[..., Running]
GENAI_KEYS = {
    sc.GEN_AI_OPERATION_NAME,
    sc.GEN_AI_PROVIDER_NAME,
    sc.GEN_AI_REQUEST_MODEL,
    sc.GEN_AI_RESPONSE_MODEL,
    sc.SERVER_ADDRESS,
    sc.SERVER_PORT,
}
GENAI_HISTOGRAMS = (
    sc.METRIC_OPERATION_DURATION,
    sc.METRIC_TOKEN_USAGE,
    sc.METRIC_TIME_TO_FIRST_CHUNK,
    sc.METRIC_TIME_PER_OUTPUT_CHUNK,
)


def test_operation_duration_histogram_buckets_and_exact_attributes(
    fake: FakeProvider, spangate: Running
) -> None:
    """gen_ai.client.operation.duration: advised buckets, exactly the six low-cardinality keys."""
    oai(spangate).chat.completions.create(model=GPT, messages=HELLO)
    (point,) = metric_points(spangate, sc.METRIC_OPERATION_DURATION)
    assert list(point.explicit_bounds) == SPEC_DURATION_BUCKETS
    assert point_attrs(point) == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: GPT,
        sc.GEN_AI_RESPONSE_MODEL: GPT,
        sc.SERVER_ADDRESS: "127.0.0.1",
        sc.SERVER_PORT: fake.port,
    }
    assert point.count == 1
    assert point.sum > 0


def test_failed_operation_adds_error_type_and_never_ids(
    fake: FakeProvider, spangate: Running
) -> None:
    """A failed call: duration gets error.type; no metric attribute carries an id of any kind."""
    oai(spangate).chat.completions.create(model=GPT, messages=HELLO)
    fake.script(openai_error(500))
    with pytest.raises(openai.InternalServerError):
        oai(spangate).chat.completions.create(model=GPT, messages=HELLO)
    spans = finished_spans(spangate)
    ids: set[Any] = set()
    for span in spans:
        assert span.context is not None
        ids |= {format_trace_id(span.context.trace_id), format_span_id(span.context.span_id)}
        ids |= {v for k, v in attrs(span).items() if k == sc.GEN_AI_RESPONSE_ID}
    points = metric_points(spangate, sc.METRIC_OPERATION_DURATION)
    failed = [p for p in points if sc.ERROR_TYPE in point_attrs(p)]
    (bad,) = failed
    assert point_attrs(bad)[sc.ERROR_TYPE] in ERROR_500
    assert set(point_attrs(bad)) <= GENAI_KEYS | {sc.ERROR_TYPE}
    for name in GENAI_HISTOGRAMS:
        for point in metric_points(spangate, name):
            keys = set(point_attrs(point))
            assert keys <= GENAI_KEYS | {sc.ERROR_TYPE, sc.GEN_AI_TOKEN_TYPE}, name
            assert not set(point_attrs(point).values()) & ids, name


def test_provider_error_codes_stay_on_spans_and_metrics_carry_their_class(
    fake: FakeProvider, spangate: Running
) -> None:
    """Every distinct error code a provider invents would be a new series for the life of
    the process: metrics carry the failure class it was judged (a closed set), while the
    CLIENT span keeps the provider's own code."""
    codes = [f"made_up_{n}" for n in range(3)]
    fake.script(*[openai_error(400, code=code) for code in codes], openai_error(429))
    for _ in range(4):
        with pytest.raises(openai.APIStatusError):
            oai(spangate).chat.completions.create(model=GPT, messages=HELLO)
    settle(spangate)
    client_errors = {
        attrs(span).get(sc.ERROR_TYPE)
        for span in finished_spans(spangate)
        if attrs(span).get(sc.SPANGATE_ATTEMPT) is not None
    }
    assert set(codes) <= client_errors
    points = metric_points(spangate, sc.METRIC_OPERATION_DURATION)
    by_error = {point_attrs(p)[sc.ERROR_TYPE]: p.count for p in points}
    assert by_error == {"caller_fault": 3, "rate_limited": 1}


def test_token_usage_histogram_sums_input_and_output(spangate: Running) -> None:
    """gen_ai.client.token.usage: one input and one output series, sums equal to reported usage."""
    client = oai(spangate)
    first = client.chat.completions.create(model=GPT, messages=HELLO)
    second = client.chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": "a much longer question " * 5}]
    )
    assert first.usage is not None and second.usage is not None
    points = metric_points(spangate, sc.METRIC_TOKEN_USAGE)
    assert len(points) == 2
    inputs = points_where(points, gen_ai__token__type="input")
    outputs = points_where(points, gen_ai__token__type="output")
    assert count(inputs) == 2 and count(outputs) == 2
    assert total(inputs) == first.usage.prompt_tokens + second.usage.prompt_tokens
    assert total(outputs) == first.usage.completion_tokens + second.usage.completion_tokens
    for point in points:
        assert list(point.explicit_bounds) == SPEC_TOKEN_BUCKETS
        assert set(point_attrs(point)) == GENAI_KEYS | {sc.GEN_AI_TOKEN_TYPE}


def test_anthropic_token_usage_input_includes_cache(spangate_for: Start) -> None:
    """Anthropic input tokens in the metric include cache_read and cache_creation tokens."""
    with FakeProvider(cached_tokens=10, cache_creation_tokens=20) as fp:
        running = spangate_for(basic_config(fp))
        msg = claude(running).messages.create(model=CLAUDE, max_tokens=50, messages=HELLO)
        points = metric_points(running, sc.METRIC_TOKEN_USAGE)
    inputs = points_where(points, gen_ai__token__type="input")
    assert total(inputs) == msg.usage.input_tokens + 10 + 20
    assert total(points_where(points, gen_ai__token__type="output")) == msg.usage.output_tokens


def test_chunk_timing_histograms_only_for_streams(spangate: Running) -> None:
    """time_to_first_chunk: one point per stream; time_per_output_chunk: content chunks - 1.

    A non-streaming call records neither.
    """
    client = oai(spangate)
    client.chat.completions.create(model=GPT, messages=HELLO)
    assert metric_points(spangate, sc.METRIC_TIME_TO_FIRST_CHUNK) == []
    assert metric_points(spangate, sc.METRIC_TIME_PER_OUTPUT_CHUNK) == []
    chunks = list(client.chat.completions.create(model=GPT, messages=HELLO, stream=True))
    content_chunks = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert content_chunks >= 3
    (ttfc,) = metric_points(spangate, sc.METRIC_TIME_TO_FIRST_CHUNK)
    assert ttfc.count == 1
    assert ttfc.sum > 0
    assert list(ttfc.explicit_bounds) == SPEC_DURATION_BUCKETS
    assert set(point_attrs(ttfc)) == GENAI_KEYS
    (per_chunk,) = metric_points(spangate, sc.METRIC_TIME_PER_OUTPUT_CHUNK)
    assert per_chunk.count == content_chunks - 1
    assert list(per_chunk.explicit_bounds) == SPEC_DURATION_BUCKETS
    assert set(point_attrs(per_chunk)) == GENAI_KEYS


def test_requests_counter_by_route_alias_and_status_class(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """spangate.requests: spangate.route is the alias or "passthrough", plus the status class."""
    config = basic_config(
        fake, models={"fast": {"targets": [{"provider": "openai", "model": GPT}]}}
    )
    running = spangate_for(config)
    client = oai(running)
    client.chat.completions.create(model="fast", messages=HELLO)
    client.chat.completions.create(model=GPT, messages=HELLO)
    client.chat.completions.create(model=GPT, messages=HELLO)
    fake.script(openai_error(429, "rate_limit_exceeded"))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=GPT, messages=HELLO)
    fake.script(openai_error(500))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fast", messages=HELLO)
    points = metric_points(running, sc.METRIC_REQUESTS)
    got = {
        (p.attributes[sc.ATTR_ROUTE], p.attributes[sc.ATTR_STATUS_CLASS]): p.value for p in points
    }
    assert got == {
        ("fast", "2xx"): 1,
        ("passthrough", "2xx"): 2,
        ("passthrough", "4xx"): 1,
        ("fast", "5xx"): 1,
    }
    # The alias is also on the spans of the aliased request, and the upstream model is the target's.
    spans = finished_spans(running)
    aliased = [s for s in spans if attrs(s).get(sc.SPANGATE_ROUTE) == "fast"]
    assert {s.name for s in aliased} == {"POST /v1/chat/completions", "chat gpt-4o-mini"}


def test_attempts_counter_by_provider_and_outcome(fake: FakeProvider, spangate: Running) -> None:
    """spangate.attempts: one per upstream attempt, by spangate.provider and spangate.outcome."""
    oai(spangate).chat.completions.create(model=GPT, messages=HELLO)
    claude(spangate).messages.create(model=CLAUDE, max_tokens=20, messages=HELLO)
    fake.script(openai_error(500))
    with pytest.raises(openai.InternalServerError):
        oai(spangate).chat.completions.create(model=GPT, messages=HELLO)
    points = metric_points(spangate, sc.METRIC_ATTEMPTS)
    got = {
        (p.attributes[sc.SPANGATE_PROVIDER], p.attributes[sc.ATTR_OUTCOME]): p.value for p in points
    }
    assert got == {("openai", "success"): 1, ("anthropic", "success"): 1, ("openai", "error"): 1}


def test_cost_counter_for_priced_model_from_shipped_table(spangate_for: Start) -> None:
    """gpt-4o-mini (0.15 in / 0.075 cached / 0.60 out USD per 1M): cost from the reported tokens."""
    with FakeProvider(cached_tokens=4) as fp:
        running = spangate_for(basic_config(fp))
        resp = oai(running).chat.completions.create(model=GPT, messages=HELLO)
        points = metric_points(running, sc.METRIC_COST)
        _, client = one_request(finished_spans(running))
    assert resp.usage is not None
    fresh = resp.usage.prompt_tokens - 4
    expected = (fresh * 0.15 + 4 * 0.075 + resp.usage.completion_tokens * 0.60) / 1_000_000
    (point,) = points
    assert point_attrs(point) == {sc.GEN_AI_PROVIDER_NAME: "openai", sc.GEN_AI_REQUEST_MODEL: GPT}
    assert point.value == pytest.approx(expected, rel=1e-9)
    assert attrs(client)[sc.SPANGATE_COST_USD] == pytest.approx(expected, rel=1e-9)


def test_cost_price_override_from_config(fake: FakeProvider, spangate_for: Start) -> None:
    """telemetry.prices overrides the shipped price (no cached rate: cached at the input rate)."""
    config = basic_config(fake, telemetry={"prices": {GPT: {"input": 1000.0, "output": 2000.0}}})
    running = spangate_for(config)
    resp = oai(running).chat.completions.create(model=GPT, messages=HELLO)
    assert resp.usage is not None
    expected = (resp.usage.prompt_tokens * 1000 + resp.usage.completion_tokens * 2000) / 1e6
    (point,) = metric_points(running, sc.METRIC_COST)
    assert point.value == pytest.approx(expected, rel=1e-9)


def test_unpriced_model_records_no_cost(spangate: Running) -> None:
    """A model the price table does not know has no cost series and no cost attribute."""
    oai(spangate).chat.completions.create(model="mystery-model-1", messages=HELLO)
    assert metric_points(spangate, sc.METRIC_COST) == []
    _, client = one_request(finished_spans(spangate))
    assert sc.SPANGATE_COST_USD not in attrs(client)


def test_proxy_overhead_recorded_per_forwarded_request(spangate: Running) -> None:
    """spangate.proxy.overhead: one observation per forwarded request, by spangate.route."""
    client = oai(spangate)
    client.chat.completions.create(model=GPT, messages=HELLO)
    list(client.chat.completions.create(model=GPT, messages=HELLO, stream=True))
    (point,) = metric_points(spangate, sc.METRIC_PROXY_OVERHEAD)
    assert point_attrs(point) == {sc.ATTR_ROUTE: "passthrough"}
    assert point.count == 2
    assert point.sum > 0


def test_inflight_gauge_is_present_and_zero_when_idle(spangate: Running) -> None:
    """spangate.requests.inflight is exported; with nothing in flight it reads 0."""
    oai(spangate).chat.completions.create(model=GPT, messages=HELLO)
    (point,) = metric_points(spangate, sc.METRIC_INFLIGHT)
    assert point.value == 0


def test_inflight_gauge_counts_a_request_in_progress(fake: FakeProvider) -> None:
    """With the gauge wired to the app's counter, a stalled stream reads 1, then 0 once it ends."""
    with spangate_with(basic_config(fake), live_inflight=True) as running:
        fake.script(stall(after=2, seconds=30))
        stream = oai(running).chat.completions.create(model=GPT, messages=HELLO, stream=True)
        next(iter(stream))
        (during,) = running.metric_points(sc.METRIC_INFLIGHT, settle=False)
        assert during.value == 1
        stream.close()
        assert fake.wait_for_disconnects(1, within=10)
        settle(running)
        (after,) = running.metric_points(sc.METRIC_INFLIGHT)
        assert after.value == 0


def test_metrics_recorded_from_concurrent_requests_add_up(spangate: Running) -> None:
    """Concurrent calls each count once: requests, attempts and duration observations."""
    errors: list[BaseException] = []

    def call() -> None:
        try:
            oai(spangate).chat.completions.create(model=GPT, messages=HELLO)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert total(metric_points(spangate, sc.METRIC_REQUESTS)) == 8
    assert total(metric_points(spangate, sc.METRIC_ATTEMPTS)) == 8
    assert count(metric_points(spangate, sc.METRIC_OPERATION_DURATION)) == 8


def test_non_inference_calls_record_no_genai_metrics(spangate: Running) -> None:
    """models / count_tokens: counted in spangate.requests, absent from every GenAI histogram."""
    oai(spangate).models.list()
    claude(spangate).messages.count_tokens(model=CLAUDE, messages=HELLO)
    for name in GENAI_HISTOGRAMS:
        assert metric_points(spangate, name) == [], name
    assert total(metric_points(spangate, sc.METRIC_REQUESTS)) == 2
    assert total(metric_points(spangate, sc.METRIC_ATTEMPTS)) == 2


def test_embeddings_record_only_input_tokens_and_their_cost(spangate: Running) -> None:
    """Embeddings report input tokens only: one input series, no output series; priced at 0.02."""
    resp = oai(spangate).embeddings.create(model="text-embedding-3-small", input="alpha beta")
    points = metric_points(spangate, sc.METRIC_TOKEN_USAGE)
    (point,) = points
    assert point_attrs(point)[sc.GEN_AI_TOKEN_TYPE] == "input"
    assert point_attrs(point)[sc.GEN_AI_OPERATION_NAME] == "embeddings"
    assert point.sum == resp.usage.prompt_tokens
    (cost,) = metric_points(spangate, sc.METRIC_COST)
    assert cost.value == pytest.approx(resp.usage.prompt_tokens * 0.02 / 1e6, rel=1e-9)


def test_stream_ttfc_metric_matches_span_and_fits_in_duration(spangate: Running) -> None:
    """The ttfc histogram observes the span's gen_ai.response.time_to_first_chunk, <= duration."""
    list(oai(spangate).chat.completions.create(model=GPT, messages=HELLO, stream=True))
    _, client = one_request(finished_spans(spangate))
    (ttfc,) = metric_points(spangate, sc.METRIC_TIME_TO_FIRST_CHUNK)
    (duration,) = metric_points(spangate, sc.METRIC_OPERATION_DURATION)
    assert ttfc.sum == pytest.approx(attrs(client)[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK])
    assert 0 < ttfc.sum <= duration.sum
