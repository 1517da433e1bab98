"""spangate's own histograms: the same points as the SDK's, through the SDK's readers."""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    Histogram,
    InMemoryMetricReader,
    MetricReader,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest

from instrumentation import semconv as sc
from instrumentation.counters import CARDINALITY_LIMIT
from instrumentation.histograms import SummedHistogram
from instrumentation.logging import Redactor
from instrumentation.readers import InMemoryReader, PrometheusReader, takes_summed_histograms
from instrumentation.records import AttemptRecord, RequestRecord
from instrumentation.setup import Telemetry
from proxy.config import PrometheusConfig, TelemetryConfig

BOUNDS = (0.01, 0.1, 1.0, 10.0)
DELTA: dict[type, AggregationTemporality] = {HistogramInstrument: AggregationTemporality.DELTA}
SCOPE = InstrumentationScope("spangate", "test")


def _values(seed: int, n: int = 400) -> list[tuple[float, dict[str, Any]]]:
    """Values on and around every boundary, ints and floats, over three attribute sets."""
    rng = random.Random(seed)
    picks: list[float] = [0, 0.0, *BOUNDS, 10, 11, 1e9, 1e-12]
    out = []
    for i in range(n):
        value = rng.choice(picks) if i % 3 == 0 else rng.uniform(0, 20)
        out.append((value, {"route": f"r{i % 3}", "status": 200 + i % 2}))
    return out


def _sdk(reader: MetricReader) -> Any:
    meter = MeterProvider(metric_readers=[reader]).get_meter("spangate")
    return meter.create_histogram("h", unit="s", explicit_bucket_boundaries_advisory=list(BOUNDS))


def _ours(*readers: InMemoryReader) -> SummedHistogram:
    # An SDK point keeps the collection going, as Instruments' gauges do in spangate.
    meter = MeterProvider(metric_readers=list(readers)).get_meter("spangate")
    meter.create_observable_gauge("g", callbacks=[lambda _: [Observation(1)]])
    histogram = SummedHistogram("h", "s", "", BOUNDS)
    for reader in readers:
        reader.attach([histogram], SCOPE, Resource.get_empty())
    return histogram


def _points(reader: InMemoryMetricReader) -> dict[Any, tuple[Any, ...]]:
    data = reader.get_metrics_data()
    out = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "h":
                    continue
                assert isinstance(metric.data, Histogram)
                for p in metric.data.data_points:
                    key = tuple(sorted(p.attributes.items()))  # type: ignore[union-attr]
                    out[key] = (
                        p.count,
                        p.sum,
                        tuple(p.bucket_counts),
                        tuple(p.explicit_bounds),
                        p.min,
                        p.max,
                        metric.data.aggregation_temporality,
                    )
    return out


def _raw_points(data: MetricsData | None) -> list[Any]:
    assert data is not None
    (metric,) = (m for m in data.resource_metrics[0].scope_metrics[0].metrics if m.name == "h")
    return list(metric.data.data_points)


@pytest.mark.parametrize("temporality", [None, DELTA], ids=["cumulative", "delta"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_points_equal_the_sdk_histograms_for_the_same_values(
    seed: int, temporality: dict[type, AggregationTemporality] | None
) -> None:
    """Buckets (boundary values in their own bucket), count, sum, min, max, temporality —
    over two collections, so delta resets and cumulative carries on like the SDK."""
    sdk_reader = InMemoryMetricReader(preferred_temporality=temporality)
    our_reader = InMemoryReader(preferred_temporality=temporality)
    sdk, ours = _sdk(sdk_reader), _ours(our_reader)
    values = _values(seed)
    for half in (values[:150], values[150:]):
        for value, attrs in half:
            sdk.record(value, attrs)
            ours.record(value, attrs)
        expected, got = _points(sdk_reader), _points(our_reader)
        assert expected
        assert got.keys() == expected.keys()
        for key, (count, total, *rest) in expected.items():
            assert got[key][0] == count
            assert got[key][1] == pytest.approx(total, rel=1e-12)  # addition order differs
            assert list(got[key][2:]) == rest


@pytest.mark.parametrize("temporality", [None, DELTA], ids=["cumulative", "delta"])
def test_record_many_gives_the_points_of_one_record_per_value(
    temporality: dict[type, AggregationTemporality] | None,
) -> None:
    """A stream's chunk gaps go in with one call: same buckets, count, min, max and the
    very same float sum as recording them one by one (negatives and NaN skipped)."""
    one_reader = InMemoryReader(preferred_temporality=temporality)
    many_reader = InMemoryReader(preferred_temporality=temporality)
    one, many = _ours(one_reader), _ours(many_reader)
    rng = random.Random(7)
    for round_ in range(2):
        for n in range(30):
            values = [rng.uniform(0, 0.3) for _ in range(n)] + [0.1, -1.0, math.nan, 1e-9]
            attrs = {"route": f"r{n % 2}", "round": round_}
            for value in values:
                one.record(value, attrs)
            many.record_many(values, attrs)
        many.record_many([], {"route": "never"})
        expected = _points(one_reader)
        assert expected
        assert _points(many_reader) == expected


def test_record_many_past_the_cardinality_limit_goes_to_the_overflow_series() -> None:
    one_reader, many_reader = InMemoryReader(), InMemoryReader()
    one, many = _ours(one_reader), _ours(many_reader)
    for i in range(CARDINALITY_LIMIT + 5):
        one.record(0.5, {"i": i})
        one.record(2.0, {"i": i})
        many.record_many([0.5, 2.0], {"i": i})
    assert _points(many_reader) == _points(one_reader)


def test_negative_and_nan_values_are_ignored_like_the_sdk() -> None:
    sdk_reader, our_reader = InMemoryMetricReader(), InMemoryReader()
    sdk, ours = _sdk(sdk_reader), _ours(our_reader)
    for value in (-1.0, math.nan, 2.0):
        sdk.record(value, {"a": 1})
        ours.record(value, {"a": 1})
    assert _points(our_reader) == _points(sdk_reader)
    assert next(iter(_points(our_reader).values()))[0] == 1


def test_delta_collection_reports_only_new_values_and_skips_idle_series() -> None:
    reader = InMemoryReader(preferred_temporality=DELTA)
    histogram = _ours(reader)
    histogram.record(1.0, {"a": 1})
    histogram.record(2.0, {"a": 2})
    first = reader.get_metrics_data()
    histogram.record(3.0, {"a": 1})
    second = reader.get_metrics_data()
    (p1, _), (p2,) = _raw_points(first), _raw_points(second)
    assert (p2.attributes, p2.count, p2.sum) == ({"a": 1}, 1, 3.0)
    assert p2.start_time_unix_nano == p1.time_unix_nano  # the interval since the last collection


def test_a_delta_and_a_cumulative_reader_each_see_every_value() -> None:
    cumulative, delta = InMemoryReader(), InMemoryReader(preferred_temporality=DELTA)
    histogram = _ours(cumulative, delta)
    histogram.record(1.0, {})
    assert [p[0] for p in _points(cumulative).values()] == [1]
    assert [p[0] for p in _points(delta).values()] == [1]
    histogram.record(1.0, {})
    assert [p[0] for p in _points(cumulative).values()] == [2]
    assert [p[0] for p in _points(delta).values()] == [1]


def test_attribute_sets_past_the_cardinality_limit_go_to_the_overflow_series() -> None:
    reader = InMemoryReader()
    histogram = _ours(reader)
    for i in range(CARDINALITY_LIMIT + 50):
        histogram.record(1.0, {"model": f"m{i}"})
    points = _points(reader)
    assert len(points) == CARDINALITY_LIMIT + 1
    assert points[(("otel.metric.overflow", True),)][0] == 50
    assert sum(p[0] for p in points.values()) == CARDINALITY_LIMIT + 50


def test_values_recorded_while_readers_collect_are_all_counted() -> None:
    """A scrape and the worker run on different threads; no value is lost or torn."""
    reader = InMemoryReader(preferred_temporality=DELTA)
    histogram = _ours(reader)
    seen = 0
    done = threading.Event()

    def write() -> None:
        for i in range(20_000):
            histogram.record(i % 7 / 3, {"a": i % 2})
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set():
        for count, _, buckets, *_ in _points(reader).values():
            assert count == sum(buckets)
            seen += count
    writer.join()
    seen += sum(p[0] for p in _points(reader).values())
    assert seen == 20_000


def test_prometheus_text_of_a_histogram_is_the_same_as_with_the_sdk() -> None:
    """Names, `le` labels, `_sum`/`_count` and the scope labels: scrapes don't change."""
    texts = []
    for ours in (False, True):
        registry = CollectorRegistry()
        reader = PrometheusReader(registry=registry)
        provider = MeterProvider(metric_readers=[reader], resource=Resource.get_empty())
        meter = provider.get_meter("spangate", "test")
        meter.create_counter("c").add(1)  # the scope exists either way
        if ours:
            histogram: Any = SummedHistogram(sc.METRIC_OPERATION_DURATION, "s", "d", BOUNDS)
            reader.attach([histogram], SCOPE, Resource.get_empty())
        else:
            histogram = meter.create_histogram(
                sc.METRIC_OPERATION_DURATION,
                unit="s",
                description="d",
                explicit_bucket_boundaries_advisory=list(BOUNDS),
            )
        for value, attrs in _values(7, 60):
            histogram.record(value, attrs)
        texts.append(generate_latest(registry).decode())
    sdk_text, our_text = texts
    assert "gen_ai_client_operation_duration_seconds_bucket" in our_text
    assert our_text == sdk_text


def _telemetry(reader: MetricReader) -> Telemetry:
    return Telemetry(
        TelemetryConfig(),
        Redactor(),
        env={"OTEL_TRACES_EXPORTER": "none"},
        metric_readers=[reader],
        pipeline="thread",
    )


def test_spangate_readers_get_spangate_histograms() -> None:
    """The default setup (in-memory + Prometheus reader) takes the fast path."""
    telemetry = _telemetry(InMemoryReader())
    try:
        assert telemetry.summed_histograms
    finally:
        telemetry.shutdown()


@pytest.mark.parametrize(
    "config",
    [
        TelemetryConfig(sdk_disabled=True),
        TelemetryConfig(prometheus=PrometheusConfig(enabled=False)),
    ],
    ids=["sdk-disabled", "no-reader"],
)
def test_without_any_metric_reader_the_worker_records_no_metrics(config: TelemetryConfig) -> None:
    """Nothing would ever collect them; the request line is still written."""
    telemetry = Telemetry(config, Redactor(), env={}, pipeline="thread", announce=False)
    try:
        processor: Any = telemetry._sink._process  # type: ignore[union-attr]
        assert processor._m is None
        telemetry.submit(_chat_record())
        assert telemetry.flush()
    finally:
        telemetry.shutdown()


@pytest.mark.parametrize(
    ("reader", "kind"),
    [
        (InMemoryMetricReader(), Histogram),
        (
            InMemoryReader(
                preferred_aggregation={HistogramInstrument: ExponentialBucketHistogramAggregation()}
            ),
            ExponentialHistogram,
        ),
        (
            InMemoryReader(
                preferred_aggregation={
                    HistogramInstrument: ExplicitBucketHistogramAggregation(boundaries=[1.0, 2.0])
                }
            ),
            Histogram,
        ),
    ],
    ids=["plain-sdk-reader", "exponential", "own-boundaries"],
)
def test_readers_wanting_other_histograms_get_the_sdks(reader: MetricReader, kind: type) -> None:
    """A reader spangate can't serve exactly makes every histogram the SDK's."""
    assert not takes_summed_histograms(reader)
    assert _exported_durations(reader, summed=False) == [kind]


def test_spangate_histograms_are_exported_through_telemetry() -> None:
    assert _exported_durations(InMemoryReader(), summed=True) == [Histogram]


def _exported_durations(reader: MetricReader, summed: bool) -> list[type]:
    """One chat record through Telemetry with `reader`: the duration metric's data types."""
    telemetry = _telemetry(reader)
    try:
        assert telemetry.summed_histograms is summed
        telemetry.submit(_chat_record())
        assert telemetry.flush()
        return _duration_kinds(reader)
    finally:
        telemetry.shutdown()


def _chat_record() -> RequestRecord:
    record = RequestRecord("POST", "/v1/chat/completions")
    record.api, record.operation, record.wire = "chat_completions", "chat", "openai"
    record.body, record.request_model, record.status = b'{"model":"m"}', "m", 200
    attempt = AttemptRecord(
        1, 7, provider="openai", system="openai", host="h", port=443, target="t", model=None
    )
    attempt.on_response(200, CIMultiDictProxy(CIMultiDict()))
    attempt.on_body(b'{"model":"m","usage":{"prompt_tokens":3,"completion_tokens":4}}')
    attempt.on_end(None)
    record.attempts = [attempt]
    record.end_ns = time.monotonic_ns()
    return record


@pytest.mark.parametrize("reader", [InMemoryMetricReader(), InMemoryReader()], ids=["sdk", "ours"])
def test_a_streams_chunk_gaps_are_all_recorded_whichever_histograms(reader: MetricReader) -> None:
    """time_per_output_chunk gets one value per gap between content chunks (four chunks,
    three gaps), through the SDK's histograms and through spangate's."""
    telemetry = _telemetry(reader)
    try:
        record = _chat_record()
        record.stream = True
        attempt = record.attempts[0]
        attempt.body = None
        for text in ("a", "b", "c", "d"):
            chunk = (
                b'{"model":"m","choices":[{"index":0,"delta":{"content":"%s"}}]}' % text.encode()
            )
            attempt.on_events(b"data: " + chunk + b"\n\n")
        attempt.on_events(b"data: [DONE]\n\n")
        telemetry.submit(record)
        assert telemetry.flush()
        data = reader.get_metrics_data()  # type: ignore[attr-defined]
        (metric,) = (
            metric
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == sc.METRIC_TIME_PER_OUTPUT_CHUNK
        )
        assert [point.count for point in metric.data.data_points] == [3]
    finally:
        telemetry.shutdown()


def _duration_kinds(reader: MetricReader) -> list[type]:
    data = reader.get_metrics_data()  # type: ignore[attr-defined]
    return [
        type(metric.data)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == sc.METRIC_OPERATION_DURATION
    ]


def test_a_delta_reader_keeps_room_for_new_series_after_the_cumulative_store_filled() -> None:
    """The cumulative store never empties; the delta store does at each collection, so a
    series first seen later is its own point there (as with the SDK), not overflow."""
    cumulative, delta = InMemoryReader(), InMemoryReader(preferred_temporality=DELTA)
    histogram = _ours(cumulative, delta)
    for i in range(CARDINALITY_LIMIT):
        histogram.record(1.0, {"model": f"m{i}"})
    _points(delta)  # the delta store empties
    histogram.record(1.0, {"model": "new"})
    assert list(_points(delta)) == [(("model", "new"),)]
    assert (("otel.metric.overflow", True),) in _points(cumulative)


@pytest.mark.parametrize("many", [False, True], ids=["record", "record_many"])
def test_integer_values_keep_integer_sum_min_and_max_like_the_sdk(many: bool) -> None:
    """Token counts are ints: the SDK keeps their sum, min and max ints, and so do these
    (compiled, proxy/native.py, a value typed `float` would be converted to one)."""
    sdk_reader, our_reader = InMemoryMetricReader(), InMemoryReader()
    sdk, ours = _sdk(sdk_reader), _ours(our_reader)
    for value in (3, 12, 7):
        sdk.record(value, {"k": "v"})
    if many:
        ours.record_many([3, 12, 7], {"k": "v"})
    else:
        for value in (3, 12, 7):
            ours.record(value, {"k": "v"})
    (expected,) = _raw_points(sdk_reader.get_metrics_data())
    (got,) = _raw_points(our_reader.get_metrics_data())
    assert (got.sum, got.min, got.max) == (expected.sum, expected.min, expected.max) == (22, 3, 12)
    assert [type(v) for v in (got.sum, got.min, got.max)] == [int, int, int]
