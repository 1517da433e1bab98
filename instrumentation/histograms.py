"""Explicit-bucket histograms aggregated by spangate, exported through the SDK's readers.

An SDK `Histogram.record` validates a Measurement and then, once per metric reader,
copies and hashes the attribute set and takes a lock — about ten microseconds per
call with two readers, and a stream records ~24 values (bench/worker_profile.py).
Here a value costs one tuple of the attributes, a bisect and a few additions.
The result is the SDK's: same buckets (a value equal to a boundary counts in that
boundary's bucket), sum, min, max, count and cardinality overflow; the readers in
instrumentation/readers.py put the points into each collection.

Cumulative readers share one store; each delta reader has its own, emptied when it
collects. Values that are negative or NaN are ignored, as the SDK does.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
)

from instrumentation.counters import CARDINALITY_LIMIT, OVERFLOW, Number

Key = tuple[tuple[str, Any], ...]


class _Point:
    __slots__ = ("counts", "max", "min", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        # Sum, min and max stay ints for integer values, as in the SDK: typed Number, not
        # float, which compiled code (proxy/native.py) would convert them to.
        self.sum: Number = 0
        self.min: Number = math.inf
        self.max: Number = -math.inf


class Store:
    """One reader's (or all cumulative readers') aggregation of one histogram."""

    __slots__ = ("points", "start_ns", "temporality")

    def __init__(self, temporality: AggregationTemporality, start_ns: int) -> None:
        self.temporality = temporality
        self.points: dict[Key, _Point] = {}
        self.start_ns = start_ns


class SummedHistogram:
    """`record(value, attributes)` like an SDK Histogram with explicit buckets."""

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = tuple(bounds)
        self._created_ns = time.time_ns()
        self._lock = threading.Lock()
        self._stores: list[Store] = []
        self._cumulative: Store | None = None

    def store_for(self, temporality: AggregationTemporality) -> Store:
        """The store a reader collects from; attach every reader before recording."""
        if temporality is AggregationTemporality.CUMULATIVE:
            if self._cumulative is None:
                self._cumulative = self._add_store(temporality)
            return self._cumulative
        return self._add_store(temporality)

    def _add_store(self, temporality: AggregationTemporality) -> Store:
        store = Store(temporality, self._created_ns)
        with self._lock:
            self._stores = [*self._stores, store]
        return store

    def record(self, value: Number, attributes: Mapping[str, Any]) -> None:
        if not value >= 0:  # also false for NaN
            return
        # Keyed by the attributes in insertion order: the processor builds each metric's
        # attribute dict in a fixed order with str/int/bool values that never mix.
        key = tuple(attributes.items())
        index = bisect_left(self.bounds, value)
        with self._lock:
            for store in self._stores:
                point = self._point(store, key)
                point.counts[index] += 1
                point.sum += value
                point.min = min(point.min, value)
                point.max = max(point.max, value)

    def record_many(self, values: Sequence[Number], attributes: Mapping[str, Any]) -> None:
        """`record` for each value (a stream's chunk gaps): one key and one lock for all."""
        key = tuple(attributes.items())
        bounds = self.bounds
        valid = [(value, bisect_left(bounds, value)) for value in values if value >= 0]
        if not valid:
            return
        low = min(value for value, _ in valid)
        high = max(value for value, _ in valid)
        with self._lock:
            for store in self._stores:
                point = self._point(store, key)
                counts, total = point.counts, point.sum
                for value, index in valid:
                    counts[index] += 1
                    total += value  # one at a time, as record() sums: the same float
                point.sum = total
                point.min = min(point.min, low)
                point.max = max(point.max, high)

    def _point(self, store: Store, key: Key) -> _Point:
        points = store.points
        point = points.get(key)
        if point is None:
            # Per store: a delta store, emptied on collect, has room that the
            # cumulative one may no longer have.
            here = OVERFLOW if len(points) >= CARDINALITY_LIMIT else key
            point = points.get(here)
            if point is None:
                point = points[here] = _Point(len(self.bounds) + 1)
        return point

    def collect(self, store: Store, now_ns: int) -> Metric | None:
        """The store's points as an SDK Metric (None when it has none, as the SDK omits
        a histogram nothing was recorded in)."""
        with self._lock:
            start_ns = store.start_ns
            if store.temporality is AggregationTemporality.DELTA:
                points, store.points, store.start_ns = store.points, {}, now_ns
                rows = [(k, p.counts, p.sum, p.min, p.max) for k, p in points.items()]
            else:
                rows = [(k, list(p.counts), p.sum, p.min, p.max) for k, p in store.points.items()]
        if not rows:
            return None
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(
                data_points=[
                    HistogramDataPoint(
                        attributes=dict(key),
                        start_time_unix_nano=start_ns,
                        time_unix_nano=now_ns,
                        count=sum(counts),
                        sum=total,
                        bucket_counts=tuple(counts),
                        explicit_bounds=self.bounds,
                        min=low,
                        max=high,
                    )
                    for key, counts, total, low, high in rows
                ],
                aggregation_temporality=store.temporality,
            ),
        )
