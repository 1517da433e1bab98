"""Metric instruments, created once, with the advised (second-based) buckets.

Histograms are spangate's own when every reader takes them (instrumentation/readers.py),
else the SDK's; counters are always summed by spangate (instrumentation/counters.py).

Recording happens on the telemetry worker thread; only the in-flight gauge
reads live state, through a callback at collection time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation

from instrumentation import semconv as sc
from instrumentation.counters import SummedCounter
from instrumentation.export import DropCounter
from instrumentation.histograms import SummedHistogram


class TargetState(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def transitions(self) -> Mapping[str, int]: ...


class HealthSource(Protocol):
    """What the metrics read of the router's live per-target state."""

    def all(self) -> Sequence[TargetState]: ...


class Instruments:
    def __init__(
        self,
        meter: Meter,
        inflight: Callable[[], int],
        drops: DropCounter,
        summed: list[SummedHistogram] | None = None,
    ) -> None:
        """`summed`: when given, histograms are spangate's (instrumentation/histograms.py)
        and are appended to it for the readers to attach; else the SDK's."""
        histogram = _histogram_maker(meter, summed)
        #: What spangate_telemetry_dropped_total reads; the processor counts into it too.
        self.drops = drops
        self.token_usage = histogram(
            sc.METRIC_TOKEN_USAGE,
            "{token}",
            "Number of input and output tokens used",
            sc.TOKEN_BUCKETS,
        )
        self.duration = histogram(
            sc.METRIC_OPERATION_DURATION, "s", "GenAI operation duration", sc.DURATION_BUCKETS
        )
        self.time_to_first_chunk = histogram(
            sc.METRIC_TIME_TO_FIRST_CHUNK,
            "s",
            "Time to receive the first chunk of a streamed response",
            sc.DURATION_BUCKETS,
        )
        self.time_per_output_chunk = histogram(
            sc.METRIC_TIME_PER_OUTPUT_CHUNK,
            "s",
            "Time between consecutive chunks of a streamed response",
            sc.DURATION_BUCKETS,
        )
        # Counters are summed by spangate and observed by the SDK (instrumentation/counters.py).
        self.requests = SummedCounter(
            meter, sc.METRIC_REQUESTS, "{request}", "Client requests handled"
        )
        self.attempts = SummedCounter(
            meter, sc.METRIC_ATTEMPTS, "{attempt}", "Upstream attempts made"
        )
        self.interrupted = SummedCounter(
            meter,
            sc.METRIC_INTERRUPTED_STREAMS,
            "{stream}",
            "Streams that ended with an error after bytes reached the client",
        )
        self.cost = SummedCounter(
            meter,
            sc.METRIC_COST,
            # Braces: an annotation, so Prometheus names it spangate_cost_usd_total.
            "{USD}",
            "Estimated spend from the price table (USD)",
        )
        self.overhead = histogram(
            sc.METRIC_PROXY_OVERHEAD,
            "s",
            "Time spent inside spangate, excluding waiting for the upstream",
            sc.OVERHEAD_BUCKETS,
        )
        self.failovers = SummedCounter(
            meter,
            sc.METRIC_FAILOVERS,
            "{request}",
            "Requests served by another target or alias than the first tried",
        )
        self.hedges = SummedCounter(
            meter, sc.METRIC_HEDGES, "{hedge}", "Hedged attempts, by outcome (won/lost)"
        )
        self.health: list[HealthSource] = []
        meter.create_observable_gauge(
            sc.METRIC_CIRCUIT_OPEN,
            callbacks=[self._open_circuits],
            unit="{circuit}",
            description="1 while a target's circuit is open or half-open, else 0",
        )
        meter.create_observable_counter(
            sc.METRIC_CIRCUIT_TRANSITIONS,
            callbacks=[self._transitions],
            unit="{transition}",
            description="Circuit state changes per target, by the state entered",
        )
        meter.create_observable_gauge(
            sc.METRIC_INFLIGHT,
            callbacks=[_gauge(inflight)],
            unit="{request}",
            description="Requests in flight",
        )
        meter.create_observable_counter(
            sc.METRIC_TELEMETRY_DROPPED,
            callbacks=[_drops(drops)],
            unit="{item}",
            description="Telemetry items dropped (queue full, exporter failing)",
        )

    def _open_circuits(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(0 if target.state == "closed" else 1, {sc.SPANGATE_TARGET: target.label})
            for source in self.health
            for target in source.all()
        ]

    def _transitions(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {sc.SPANGATE_TARGET: target.label, sc.ATTR_STATE: state})
            for source in self.health
            for target in source.all()
            for state, count in dict(target.transitions).items()
        ]


class _Record(Protocol):
    def record(self, value: float, attributes: Mapping[str, Any]) -> None: ...
    def record_many(self, values: Sequence[float], attributes: Mapping[str, Any]) -> None: ...


class _EachValue:
    """An SDK histogram, given `record_many` (one SDK `record` per value)."""

    def __init__(self, histogram: Histogram) -> None:
        self.record = histogram.record

    def record_many(self, values: Sequence[float], attributes: Mapping[str, Any]) -> None:
        for value in values:
            self.record(value, attributes)


def _histogram_maker(
    meter: Meter, summed: list[SummedHistogram] | None
) -> Callable[[str, str, str, Sequence[float]], _Record]:
    def make(name: str, unit: str, description: str, bounds: Sequence[float]) -> _Record:
        if summed is None:
            return _EachValue(
                meter.create_histogram(
                    name,
                    unit=unit,
                    description=description,
                    explicit_bucket_boundaries_advisory=list(bounds),
                )
            )
        histogram = SummedHistogram(name, unit, description, bounds)
        summed.append(histogram)
        return histogram

    return make


def _gauge(read: Callable[[], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(read())]

    return callback


def _drops(drops: DropCounter) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {sc.ATTR_SIGNAL: signal, sc.ATTR_REASON: reason})
            for (signal, reason), count in drops.snapshot().items()
        ]

    return callback
