"""Load-balancing strategies: pure functions from target stats to an attempt order.

Each returns target indices, best first. Randomness and time come in as
arguments, so every decision is a table test.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import NamedTuple

from proxy.config import Strategy

#: A target whose latency was last observed longer ago than this is explored
#: again (first), so a recovered target gets traffic back.
EXPLORE_AFTER_S = 30.0
#: Share of requests that explore a random target under `lowest_latency`.
EXPLORE_RATE = 0.05


class TargetStats(NamedTuple):
    weight: float
    inflight: int
    latency_s: float | None
    last_observed: float
    #: USD per million tokens (input + output), None when unknown.
    cost: float | None


def order(
    strategy: Strategy, stats: Sequence[TargetStats], rng: random.Random, turn: int, now: float
) -> list[int]:
    return _STRATEGIES[strategy](stats, rng, turn, now)


def _ordered(stats: Sequence[TargetStats], rng: random.Random, turn: int, now: float) -> list[int]:
    return list(range(len(stats)))


def _weighted(stats: Sequence[TargetStats], rng: random.Random, turn: int, now: float) -> list[int]:
    """Weighted random order without replacement (Efraimidis-Spirakis keys u^(1/w))."""

    def key(index: int) -> float:
        weight = stats[index].weight
        return rng.random() ** (1.0 / weight) if weight > 0 else -1.0

    return sorted(range(len(stats)), key=key, reverse=True)


def _round_robin(
    stats: Sequence[TargetStats], rng: random.Random, turn: int, now: float
) -> list[int]:
    count = len(stats)
    return [(turn + offset) % count for offset in range(count)]


def _least_inflight(
    stats: Sequence[TargetStats], rng: random.Random, turn: int, now: float
) -> list[int]:
    return sorted(range(len(stats)), key=lambda i: stats[i].inflight)


def _lowest_latency(
    stats: Sequence[TargetStats], rng: random.Random, turn: int, now: float
) -> list[int]:
    def key(index: int) -> float:
        item = stats[index]
        stale = now - item.last_observed > EXPLORE_AFTER_S
        return -1.0 if item.latency_s is None or stale else item.latency_s

    ranked = sorted(range(len(stats)), key=key)
    if len(ranked) > 1 and rng.random() < EXPLORE_RATE:
        pick = ranked.pop(rng.randrange(1, len(ranked)))
        ranked.insert(0, pick)
    return ranked


def _lowest_cost(
    stats: Sequence[TargetStats], rng: random.Random, turn: int, now: float
) -> list[int]:
    def key(index: int) -> float:
        cost = stats[index].cost
        return math.inf if cost is None else cost

    return sorted(range(len(stats)), key=key)


_STRATEGIES: dict[str, Callable[[Sequence[TargetStats], random.Random, int, float], list[int]]] = {
    "ordered": _ordered,
    "weighted": _weighted,
    "round_robin": _round_robin,
    "least_inflight": _least_inflight,
    "lowest_latency": _lowest_latency,
    "lowest_cost": _lowest_cost,
}
