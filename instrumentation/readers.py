"""The SDK's metric readers, with spangate's own histograms merged into each collection.

`_receive_metrics` is the SDK's extension point for reader subclasses: every
collection (a Prometheus scrape, a periodic OTLP export, a test's read) passes
through it, so the histograms of instrumentation/histograms.py join the
"spangate" scope there, next to the SDK's counters and gauges.

A reader can take spangate's histograms only when it asks for what they compute:
explicit buckets with the advised boundaries, cumulative or delta. Anything else
(say, OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=
base2_exponential_bucket_histogram) makes Instruments use the SDK's histograms.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    Metric,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.view import DefaultAggregation, ExplicitBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from instrumentation.histograms import Store, SummedHistogram


class MergingReader(MetricReader):
    """Base of the readers below; never instantiated alone.

    The SDK calls `_receive_metrics` only when one of its own instruments has a point;
    Instruments' observable gauges always do, so a collection is never skipped."""

    _histograms: Sequence[tuple[SummedHistogram, Store]] = ()
    _scope: InstrumentationScope = InstrumentationScope("spangate")
    _resource: Resource = Resource.get_empty()

    def attach(
        self, histograms: Sequence[SummedHistogram], scope: InstrumentationScope, resource: Resource
    ) -> None:
        temporality = histogram_temporality(self) or AggregationTemporality.CUMULATIVE
        self._histograms = [(h, h.store_for(temporality)) for h in histograms]
        self._scope, self._resource = scope, resource

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        now = time.time_ns()
        extra = [m for h, store in self._histograms if (m := h.collect(store, now)) is not None]
        merged = merge(metrics_data, extra, self._scope, self._resource)
        # The MRO of each class below continues at a concrete SDK reader.
        super()._receive_metrics(merged, timeout_millis, **kwargs)  # type: ignore[safe-super]


class InMemoryReader(MergingReader, InMemoryMetricReader):
    """InMemoryMetricReader with spangate's histograms (tests, bench.worker_profile)."""


class PrometheusReader(MergingReader, PrometheusMetricReader):
    """PrometheusMetricReader with spangate's histograms (the /metrics endpoint)."""


class PeriodicReader(MergingReader, PeriodicExportingMetricReader):
    """PeriodicExportingMetricReader with spangate's histograms (OTLP metrics)."""


def histogram_temporality(reader: MetricReader) -> AggregationTemporality | None:
    # The SDK keeps a reader's preferences in private maps; when they are not where
    # this version puts them, spangate does not guess (Instruments uses the SDK).
    preferred = getattr(reader, "_instrument_class_temporality", None)
    if not isinstance(preferred, dict):
        return None
    value = _for_histograms(preferred)
    return value if isinstance(value, AggregationTemporality) else None


def _for_histograms(preferences: dict[Any, Any]) -> Any:
    # Keyed by the SDK's internal subclass of Histogram, not the public class.
    for instrument_class, value in preferences.items():
        if isinstance(instrument_class, type) and issubclass(instrument_class, HistogramInstrument):
            return value
    return None


def takes_summed_histograms(reader: MetricReader) -> bool:
    """Whether `reader` wants exactly what SummedHistogram computes."""
    if not isinstance(reader, MergingReader) or histogram_temporality(reader) is None:
        return False
    aggregations = getattr(reader, "_instrument_class_aggregation", None)
    if not isinstance(aggregations, dict):
        return False
    aggregation = _for_histograms(aggregations)
    if isinstance(aggregation, ExplicitBucketHistogramAggregation):
        # Given boundaries replace the advised ones; only the default (None) matches,
        # and spangate always reports min and max.
        return (
            getattr(aggregation, "_boundaries", object()) is None
            and getattr(aggregation, "_record_min_max", False) is True
        )
    return isinstance(aggregation, DefaultAggregation)


def merge(
    data: MetricsData | None,
    metrics: Sequence[Metric],
    scope: InstrumentationScope,
    resource: Resource,
) -> MetricsData:
    """`data` with `metrics` added to `scope`'s ScopeMetrics (created when absent)."""
    resources = list(data.resource_metrics) if data is not None else []
    if not metrics:
        return data if data is not None else MetricsData(resource_metrics=[])
    if not resources:
        resources = [ResourceMetrics(resource=resource, scope_metrics=[], schema_url="")]
    first = resources[0]
    scopes = list(first.scope_metrics)
    for i, scope_metrics in enumerate(scopes):
        if scope_metrics.scope.name == scope.name:
            scopes[i] = dataclasses.replace(
                scope_metrics, metrics=[*scope_metrics.metrics, *metrics]
            )
            break
    else:
        scopes.append(ScopeMetrics(scope=scope, metrics=list(metrics), schema_url=""))
    resources[0] = dataclasses.replace(first, scope_metrics=scopes)
    return MetricsData(resource_metrics=resources)
