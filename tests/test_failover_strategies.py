"""Routing strategies and per-request header overrides, end to end (light).

The strategies themselves are pure functions with table tests (test_strategies);
here each is checked through spangate with real fakes behind it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from conftest import Running
from fakeprovider import delay, openai_error
from test_failover_support import (
    ANTHROPIC_HEADERS,
    HELLO,
    Fakes,
    attrs,
    config,
    label,
    message,
    only_server_span,
    post,
    start_fakes,
    targets,
)

from proxy import strategies

Start = Callable[..., Running]


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


def ask(running: Running, model: str = "m", headers: dict[str, str] | None = None) -> Any:
    with openai.OpenAI(
        base_url=running.openai_base_url, api_key="sk-test", max_retries=0
    ) as client:
        return client.chat.completions.with_raw_response.create(
            model=model, messages=HELLO, extra_headers=headers
        )


def served_by(running: Running, count: int, model: str = "m") -> list[str]:
    return [ask(running, model).headers["x-spangate-target"] for _ in range(count)]


def test_round_robin_alternates_between_targets(fakes: Fakes, spangate_for: Start) -> None:
    """round_robin over a, b: four requests go a, b, a, b."""
    running = spangate_for(
        config(fakes, {"m": {"targets": targets("a", "b"), "strategy": "round_robin"}})
    )
    assert served_by(running, 4) == [label("a"), label("b")] * 2
    assert (len(fakes.a.received), len(fakes.b.received)) == (2, 2)


def test_round_robin_still_fails_over(fakes: Fakes, spangate_for: Start) -> None:
    """A failing target on its turn hands the request to the next in the rotation."""
    fakes.a.script(openai_error(503))
    running = spangate_for(
        config(fakes, {"m": {"targets": targets("a", "b"), "strategy": "round_robin"}})
    )
    raw = ask(running)
    assert (raw.headers["x-spangate-target"], raw.headers["x-spangate-attempts"]) == (
        label("b"),
        "2",
    )


def test_ordered_is_the_default_strategy(fakes: Fakes, spangate_for: Start) -> None:
    """No `strategy:`: the first listed target takes every request."""
    running = spangate_for(config(fakes, {"m": {"targets": targets("b", "a")}}))
    assert served_by(running, 3) == [label("b")] * 3
    assert len(fakes.a.received) == 0


def test_weighted_never_picks_a_zero_weight_target_first(fakes: Fakes, spangate_for: Start) -> None:
    """weight 0 on a: twenty requests, all served by b or c, a never asked."""
    model = {
        "targets": [*targets("a", weight=0), *targets("b", weight=1), *targets("c", weight=3)],
        "strategy": "weighted",
    }
    running = spangate_for(config(fakes, {"m": model}))
    served = served_by(running, 20)
    assert label("a") not in served
    assert len(fakes.a.received) == 0
    assert len(fakes.b.received) + len(fakes.c.received) == 20


def test_lowest_cost_prefers_the_cheaper_target(fakes: Fakes, spangate_for: Start) -> None:
    """lowest_cost with explicit prices: b (cheap) serves; a (dear) only when b fails."""
    model = {
        "targets": [
            *targets("a", price={"input": 10.0, "output": 30.0}),
            *targets("b", price={"input": 0.1, "output": 0.4}),
        ],
        "strategy": "lowest_cost",
    }
    running = spangate_for(config(fakes, {"m": model}))
    assert served_by(running, 3) == [label("b")] * 3
    fakes.b.script(openai_error(503))
    assert served_by(running, 1) == [label("a")]


async def test_least_inflight_avoids_the_busy_target(fakes: Fakes, spangate_for: Start) -> None:
    """a is busy with a slow request: least_inflight sends the next one to b."""
    model = {"targets": targets("a", "b"), "strategy": "least_inflight"}
    running = spangate_for(config(fakes, {"m": model}))
    fakes.a.script(delay(0.8))
    slow = asyncio.ensure_future(asyncio.to_thread(ask, running))
    assert await fakes.a.await_requests(1)
    raw = await asyncio.to_thread(ask, running)
    assert raw.headers["x-spangate-target"] == label("b")
    assert (await slow).headers["x-spangate-target"] == label("a")


async def test_max_inflight_skips_a_full_target(fakes: Fakes, spangate_for: Start) -> None:
    """max_inflight: 1 on a (ordered first): while a serves one request, the next goes to b."""
    model = {"targets": [*targets("a", max_inflight=1), *targets("b")]}
    running = spangate_for(config(fakes, {"m": model}))
    fakes.a.script(delay(0.8))
    slow = asyncio.ensure_future(asyncio.to_thread(ask, running))
    assert await fakes.a.await_requests(1)
    raw = await asyncio.to_thread(ask, running)
    assert raw.headers["x-spangate-target"] == label("b")
    assert (await slow).headers["x-spangate-target"] == label("a")
    # The slot is free again once the slow request was relayed.
    assert (await asyncio.to_thread(ask, running)).headers["x-spangate-target"] == label("a")


def test_lowest_latency_moves_away_from_a_slow_target(
    fakes: Fakes, spangate_for: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lowest_latency (exploration off): unobserved targets are tried first, then the one
    with the lower first-byte EWMA leads: a was slow, so b takes the traffic."""
    monkeypatch.setattr(strategies, "EXPLORE_RATE", 0.0)
    model = {"targets": targets("a", "b"), "strategy": "lowest_latency"}
    running = spangate_for(config(fakes, {"m": model}))
    fakes.a.script(delay(0.3))
    assert served_by(running, 5) == [label("a")] + [label("b")] * 4


def test_lowest_latency_explores_the_slower_target(
    fakes: Fakes, spangate_for: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exploration sends a request to a target that is not the fastest, so a recovered
    target gets traffic back (rate forced to 1 here to make it deterministic)."""
    model = {"targets": targets("a", "b"), "strategy": "lowest_latency"}
    running = spangate_for(config(fakes, {"m": model}))
    monkeypatch.setattr(strategies, "EXPLORE_RATE", 0.0)
    fakes.a.script(delay(0.3))
    assert served_by(running, 2) == [label("a"), label("b")]
    monkeypatch.setattr(strategies, "EXPLORE_RATE", 1.0)
    assert served_by(running, 1) == [label("a")]


# --------------------------------------------------------------------------- header overrides

ROUTED = {
    "m": {"targets": targets("a", "b")},
    "other": {"targets": targets("c")},
}


def test_target_header_pins_a_target_when_enabled(fakes: Fakes, spangate_for: Start) -> None:
    """server.route_headers: x-spangate-target picks b although a comes first."""
    running = spangate_for(config(fakes, ROUTED, server={"route_headers": True}))
    raw = ask(running, headers={"x-spangate-target": label("b")})
    assert raw.headers["x-spangate-target"] == label("b")
    assert len(fakes.a.received) == 0


def test_pinned_target_is_not_failed_over(fakes: Fakes, spangate_for: Start) -> None:
    """A pinned request goes to that target only: its failure is relayed."""
    fakes.b.script(openai_error(503))
    running = spangate_for(config(fakes, ROUTED, server={"route_headers": True}))
    with pytest.raises(openai.InternalServerError) as caught:
        ask(running, headers={"x-spangate-target": label("b")})
    assert caught.value.status_code == 503
    assert len(fakes.a.received) == 0


def test_pinned_target_is_not_sent_to_a_context_fallback(fakes: Fakes, spangate_for: Start) -> None:
    """A pinned target's context overflow is relayed, not served by the alias's
    context_fallbacks: a pin means that target only."""
    fakes.b.script(openai_error(400, "context_length_exceeded"))
    models = {**ROUTED, "m": {"targets": targets("a", "b"), "context_fallbacks": ["other"]}}
    running = spangate_for(config(fakes, models, server={"route_headers": True}))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(running, headers={"x-spangate-target": label("b")})
    assert caught.value.code == "context_length_exceeded"
    assert (len(fakes.a.received), len(fakes.b.received), len(fakes.c.received)) == (0, 1, 0)


def test_route_header_picks_another_alias_when_enabled(fakes: Fakes, spangate_for: Start) -> None:
    """x-spangate-route: other serves the request by alias `other` (target c)."""
    running = spangate_for(config(fakes, ROUTED, server={"route_headers": True}))
    raw = ask(running, headers={"x-spangate-route": "other"})
    assert raw.headers["x-spangate-target"] == label("c")
    assert attrs(only_server_span(running))["spangate.route"] == "other"


def test_route_headers_are_ignored_unless_enabled(fakes: Fakes, spangate_for: Start) -> None:
    """By default both headers are ignored: the alias's own order decides."""
    running = spangate_for(config(fakes, ROUTED))
    raw = ask(running, headers={"x-spangate-target": label("b"), "x-spangate-route": "other"})
    assert raw.headers["x-spangate-target"] == label("a")
    # An unknown target is ignored too, not an error.
    raw = ask(running, headers={"x-spangate-target": "nope/x"})
    assert raw.headers["x-spangate-target"] == label("a")


def test_unknown_target_header_is_a_400(fakes: Fakes, spangate_for: Start) -> None:
    """x-spangate-target naming no target of the alias: 400 unknown_target, nothing sent."""
    running = spangate_for(config(fakes, ROUTED, server={"route_headers": True}))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(running, headers={"x-spangate-target": "nope/x"})
    assert caught.value.code == "unknown_target"
    assert label("a") in caught.value.message
    assert fakes.total() == 0


def test_target_header_on_a_model_that_is_no_alias_is_a_400(
    fakes: Fakes, spangate_for: Start
) -> None:
    """x-spangate-target with a pass-through model (no alias has that name) pins nothing:
    400 target_without_alias naming the model and the aliases, nothing sent, rather than
    a request silently served by the default provider."""
    running = spangate_for(config(fakes, ROUTED, server={"route_headers": True}))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(running, model="gpt-4o", headers={"x-spangate-target": label("b")})
    assert caught.value.code == "target_without_alias"
    message = caught.value.message
    assert "x-spangate-target" in message
    assert "'gpt-4o' is not one" in message
    assert "known aliases: m, other" in message
    assert fakes.total() == 0


async def test_target_header_without_an_alias_is_refused_in_the_anthropic_format(
    fakes: Fakes, spangate_for: Start
) -> None:
    """The same refusal on /v1/messages comes in Anthropic's error format."""
    running = spangate_for(config(fakes, ROUTED, server={"route_headers": True}))
    headers = {**ANTHROPIC_HEADERS, "x-spangate-target": label("x")}
    status, _, raw = await post(running.url, "/v1/messages", message("claude-x"), headers)
    assert status == 400
    body = json.loads(raw)
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "'claude-x' is not one" in body["error"]["message"]
    assert fakes.total() == 0


def test_unknown_route_header_is_a_400(fakes: Fakes, spangate_for: Start) -> None:
    """x-spangate-route naming no alias: 400 unknown_route."""
    running = spangate_for(config(fakes, ROUTED, server={"route_headers": True}))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(running, headers={"x-spangate-route": "nope"})
    assert caught.value.code == "unknown_route"
    assert fakes.total() == 0
