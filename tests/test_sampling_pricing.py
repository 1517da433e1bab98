"""Head sampling and cost estimation: pure decisions with table tests."""

from __future__ import annotations

import pytest

from instrumentation.pricing import Price, PriceTable, shipped_prices
from instrumentation.sampling import make_sampler
from instrumentation.tracecontext import Parent, format_traceparent, parse_traceparent

SAMPLED = Parent(1, 2, True, None)
UNSAMPLED = Parent(1, 2, False, None)


@pytest.mark.parametrize(
    ("name", "arg", "parent", "trace_id", "expected"),
    [
        (None, None, None, 5, True),
        (None, None, UNSAMPLED, 5, False),
        ("always_off", None, SAMPLED, 5, False),
        ("always_on", None, UNSAMPLED, 5, True),
        ("traceidratio", "0.5", None, 1, True),
        ("traceidratio", "0.5", None, (1 << 64) - 1, False),
        ("parentbased_traceidratio", "0.0", SAMPLED, 5, True),
        ("parentbased_traceidratio", "0.0", None, 5, False),
        ("nonsense", None, None, 5, True),
    ],
)
def test_sampler_decisions(
    name: str | None, arg: str | None, parent: Parent | None, trace_id: int, expected: bool
) -> None:
    """OTEL_TRACES_SAMPLER values behave as the OTel SDK specifies."""
    assert make_sampler(name, arg)(parent, trace_id) is expected


def test_traceparent_round_trip_and_invalid_values() -> None:
    """Valid traceparents parse; all-zero ids and bad versions are ignored."""
    header = format_traceparent(0xABC, 0xDEF, True)
    parent = parse_traceparent(header, "k=v")
    assert parent is not None
    assert (parent.trace_id, parent.span_id, parent.sampled) == (0xABC, 0xDEF, True)
    assert parse_traceparent("00-" + "0" * 32 + "-" + "1" * 16 + "-01", None) is None
    assert parse_traceparent("ff-" + "1" * 32 + "-" + "1" * 16 + "-01", None) is None
    assert parse_traceparent("garbage", None) is None


def test_cost_uses_cached_rate_for_cached_input() -> None:
    """input_tokens includes cached ones; those are charged at the cached rate."""
    table = PriceTable({"m": Price(input=2.0, output=10.0, cached_input=1.0)})
    cost = table.cost("m", input_tokens=1000, output_tokens=100, cached_tokens=400)
    assert cost == pytest.approx((600 * 2.0 + 400 * 1.0 + 100 * 10.0) / 1e6)


def test_dated_snapshots_match_the_longest_prefix() -> None:
    """gpt-4o-mini-2024-07-18 is priced as gpt-4o-mini, not as gpt-4o."""
    table = PriceTable(shipped_prices())
    assert table.lookup("gpt-4o-mini-2024-07-18") == shipped_prices()["gpt-4o-mini"]
    assert table.lookup("claude-sonnet-4-20250514") == shipped_prices()["claude-sonnet-4"]
    assert table.lookup("unknown-model") is None


def test_prefix_matches_are_remembered_within_a_bound() -> None:
    """A model priced by prefix answers the same the second time (from memory), and a
    stream of distinct unknown model names never grows that memory past its bound."""
    table = PriceTable(shipped_prices())
    first = table.lookup("gpt-4o-mini-2024-07-18")
    assert table.remembered() == 1
    assert table.lookup("gpt-4o-mini-2024-07-18") is first
    assert table.lookup("gpt-4o-mini") == first  # exact names are not remembered twice
    assert table.remembered() == 1
    for i in range(5000):
        assert table.lookup(f"made-up-model-{i}") is None
    assert 0 < table.remembered() <= 1024
    assert table.lookup("claude-sonnet-4-20250514") == shipped_prices()["claude-sonnet-4"]
