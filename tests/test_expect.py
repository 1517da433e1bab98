"""proxy/expect.py: what a request's `Expect:` is answered before its body."""

from __future__ import annotations

import pytest

from proxy.expect import decide, unsupported

LIMIT = 1024


@pytest.mark.parametrize(
    ("value", "length", "answer"),
    [
        ("100-continue", 10, "continue"),
        ("100-Continue", LIMIT, "continue"),  # at the limit: asked for
        (" 100-continue ", None, "continue"),  # unknown length (chunked): read to the limit
        ("100-continue", LIMIT + 1, "withhold"),
        ("200-ok", 10, "refuse"),
        ("100-continue, foo", 10, "refuse"),
        ("", 10, "refuse"),
        ("200-ok", LIMIT + 1, "refuse"),  # refused whatever the size
    ],
)
def test_decide(value: str, length: int | None, answer: str) -> None:
    """100-continue (any case, outer spaces aside) is asked for within the limit and
    withheld over it; any other expectation, or a list of them, is refused."""
    assert decide(value, length, LIMIT) == answer


def test_the_refusal_names_the_value_and_the_fix() -> None:
    """The 417's message quotes the value (cut short when long) and names 100-continue."""
    err = unsupported("200-ok")
    assert (err.status, err.kind, err.code, err.closes) == (
        417,
        "expectation_failed",
        "expectation_failed",
        True,
    )
    assert "'200-ok'" in err.message and "'Expect: 100-continue'" in err.message
    assert len(unsupported("x" * 10_000).message) < 400
