"""Metric instruments, created once, with the advised (second-based) buckets.

Recording happens on the telemetry worker thread; only the in-flight gauge
reads live state, through a callback at collection time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from instrumentation import semconv as sc
from instrumentation.counters import SummedCounter
from instrumentation.export import DropCounter


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
    def __init__(self, meter: Meter, inflight: Callable[[], int], drops: DropCounter) -> None:
        self.token_usage = meter.create_histogram(
            sc.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(sc.TOKEN_BUCKETS),
        )
        self.duration = meter.create_histogram(
            sc.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(sc.DURATION_BUCKETS),
        )
        self.time_to_first_chunk = meter.create_histogram(
            sc.METRIC_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=list(sc.DURATION_BUCKETS),
        )
        self.time_per_output_chunk = meter.create_histogram(
            sc.METRIC_TIME_PER_OUTPUT_CHUNK,
            unit="s",
            description="Time between consecutive chunks of a streamed response",
            explicit_bucket_boundaries_advisory=list(sc.DURATION_BUCKETS),
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
        self.overhead = meter.create_histogram(
            sc.METRIC_PROXY_OVERHEAD,
            unit="s",
            description="Time spent inside spangate, excluding waiting for the upstream",
            explicit_bucket_boundaries_advisory=list(sc.OVERHEAD_BUCKETS),
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
