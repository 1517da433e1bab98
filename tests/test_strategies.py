"""Load-balancing strategies are pure functions: table tests with a seeded RNG."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from proxy.strategies import EXPLORE_AFTER_S, TargetStats, order


def stats(
    weight: float = 1.0,
    inflight: int = 0,
    latency: float | None = None,
    seen: float = 0.0,
    cost: float | None = None,
) -> TargetStats:
    return TargetStats(weight, inflight, latency, seen, cost)


NOW = 1000.0


def test_ordered_keeps_configured_priority() -> None:
    """`ordered` is the config order, whatever the stats."""
    assert order("ordered", [stats(), stats(inflight=9), stats()], random.Random(1), 0, NOW) == [
        0,
        1,
        2,
    ]


def test_round_robin_rotates_the_start() -> None:
    """Each turn starts one target later and still lists every target."""
    targets = [stats(), stats(), stats()]
    starts = [order("round_robin", targets, random.Random(1), t, NOW)[0] for t in range(6)]
    assert starts == [0, 1, 2, 0, 1, 2]
    assert sorted(order("round_robin", targets, random.Random(1), 4, NOW)) == [0, 1, 2]


def test_weighted_follows_weights_and_never_picks_weight_zero_first() -> None:
    """Over many draws, first picks follow the weights; weight 0 is always last."""
    targets = [stats(weight=0), stats(weight=3), stats(weight=1)]
    rng = random.Random(7)
    firsts = Counter(order("weighted", targets, rng, 0, NOW)[0] for _ in range(4000))
    assert firsts[0] == 0
    assert 2.4 < firsts[1] / firsts[2] < 3.6


@pytest.mark.parametrize(
    ("inflight", "expected_first"),
    [([3, 1, 2], 1), ([0, 0, 5], 0), ([4, 4, 0], 2)],
)
def test_least_inflight(inflight: list[int], expected_first: int) -> None:
    """The target with the fewest requests in flight goes first (ties keep config order)."""
    targets = [stats(inflight=n) for n in inflight]
    assert order("least_inflight", targets, random.Random(1), 0, NOW)[0] == expected_first


def test_lowest_latency_prefers_fast_and_explores_unknown_or_stale() -> None:
    """Fresh fast targets first; a never-seen or stale target is explored before them."""
    rng = random.Random(3)
    rng.random = lambda: 0.99  # type: ignore[method-assign]  # disable random exploration
    fresh = [stats(latency=0.5, seen=NOW), stats(latency=0.1, seen=NOW)]
    assert order("lowest_latency", fresh, rng, 0, NOW) == [1, 0]
    unknown = [stats(latency=0.1, seen=NOW), stats()]
    assert order("lowest_latency", unknown, rng, 0, NOW)[0] == 1
    stale = [stats(latency=0.1, seen=NOW), stats(latency=0.9, seen=NOW - EXPLORE_AFTER_S - 1)]
    assert order("lowest_latency", stale, rng, 0, NOW)[0] == 1


def test_lowest_latency_sometimes_explores_at_random() -> None:
    """A small share of requests try a slower target, so it is re-measured."""
    targets = [stats(latency=0.1, seen=NOW), stats(latency=0.9, seen=NOW)]
    rng = random.Random(11)
    firsts = Counter(order("lowest_latency", targets, rng, 0, NOW)[0] for _ in range(2000))
    assert firsts[0] > firsts[1] > 0


def test_lowest_cost_puts_unpriced_targets_last() -> None:
    """Cheapest first; a target without a price is tried only after priced ones."""
    targets = [stats(cost=None), stats(cost=12.5), stats(cost=0.75)]
    assert order("lowest_cost", targets, random.Random(1), 0, NOW) == [2, 1, 0]
