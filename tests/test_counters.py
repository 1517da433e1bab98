"""spangate's own sums behind observable counters: what the SDK exports is what was added."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum

from instrumentation.counters import CARDINALITY_LIMIT, SummedCounter


def _points(reader: InMemoryMetricReader) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    metrics = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    assert [m.name for m in metrics] == ["spangate.test"]
    data_ = metrics[0].data
    assert isinstance(data_, Sum) and data_.is_monotonic
    return list(data_.data_points)


def _counter() -> tuple[SummedCounter, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    return SummedCounter(meter, "spangate.test", "{item}", "a test counter"), reader


def test_sums_per_attribute_set_are_exported_as_a_cumulative_monotonic_sum() -> None:
    counter, reader = _counter()
    counter.add(1, {"route": "a", "status": "2xx"})
    counter.add(2, {"route": "a", "status": "2xx"})
    counter.add(0.5, {"route": "b", "status": "5xx"})
    sets = {tuple(sorted(p.attributes.items())): p.value for p in _points(reader)}
    assert sets == {
        (("route", "a"), ("status", "2xx")): 3,
        (("route", "b"), ("status", "5xx")): 0.5,
    }
    counter.add(1, {"route": "b", "status": "5xx"})
    routes = {p.attributes["route"]: p.value for p in _points(reader)}
    assert routes == {"a": 3, "b": 1.5}  # cumulative across collections


def test_past_the_cardinality_limit_sums_go_to_the_overflow_set() -> None:
    counter, reader = _counter()
    for i in range(CARDINALITY_LIMIT + 5):
        counter.add(1, {"model": f"m{i}"})
    counter.add(1, {"model": "m0"})  # a set seen before the limit still counts as itself
    points = _points(reader)
    overflow = [p for p in points if p.attributes.get("otel.metric.overflow")]
    assert [p.value for p in overflow] == [5]
    assert next(p.value for p in points if p.attributes.get("model") == "m0") == 2
    assert len(points) == CARDINALITY_LIMIT + 1


def test_integer_amounts_stay_an_integer_sum_exported_as_otlp_int() -> None:
    """As an SDK Counter: whole amounts make an int sum, which OTLP carries as `as_int`.
    Compiled (proxy/native.py), a parameter typed `float` converts what it is given, and
    every spangate.requests point became `as_double`."""
    counter, reader = _counter()
    counter.add(1, {"route": "a"})
    counter.add(2, {"route": "a"})
    data = reader.get_metrics_data()
    assert data is not None
    (point,) = _points(reader)
    assert type(point.value) is int and point.value == 3
    (wire,) = encode_metrics(data).resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points
    assert wire.WhichOneof("value") == "as_int"
