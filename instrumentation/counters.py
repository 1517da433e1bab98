"""Monotonic counters summed by spangate and reported through observable counters.

An SDK `Counter.add` builds a Measurement (validating every attribute) and then
copies and hashes the attribute set once per metric reader — tens of
microseconds per call with two readers, on every request (bench/worker_profile.py).
Summing into a dict keyed by the attribute values costs well under a microsecond;
the SDK then reads the sums at collection time through an observable counter,
which exports the same cumulative Sum (same name, unit, Prometheus `_total`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

#: Distinct attribute sets kept per counter; past it, sums go to one overflow set, as
#: the SDK does with its cardinality limit (a request model is client-chosen text).
CARDINALITY_LIMIT = 2000
OVERFLOW: tuple[tuple[str, Any], ...] = (("otel.metric.overflow", True),)
#: A sum, or an amount added to one. `int | float`, never `float`: compiled
#: (proxy/native.py), a value typed `float` is converted to one, and an int sum must stay
#: an int (the SDK exports it as OTLP's as_int, a float as as_double).
Number = int | float


class SummedCounter:
    """`add(amount, attributes)` like an SDK Counter; written by one thread (the
    telemetry worker), read by the SDK's collection."""

    def __init__(self, meter: Meter, name: str, unit: str, description: str) -> None:
        self._sums: dict[tuple[tuple[str, Any], ...], Number] = {}
        meter.create_observable_counter(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def add(self, amount: Number, attributes: Mapping[str, Any]) -> None:
        # Insertion order: the processor builds each counter's attributes in a fixed order.
        key = tuple(attributes.items())
        sums = self._sums
        if key not in sums and len(sums) >= CARDINALITY_LIMIT:
            key = OVERFLOW
        sums[key] = sums.get(key, 0) + amount

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        # dict() copies in one C call: the worker's concurrent add cannot interleave.
        return [Observation(total, dict(key)) for key, total in dict(self._sums).items()]
