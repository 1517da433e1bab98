"""Hedged requests: a slow first target gets a second one raced against it.

The alias hedges after `after_s` (or a latency percentile) without a first
byte; the first attempt to commit wins, the other is cancelled and its upstream
connection closed (the fake sees the disconnect).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import openai
import pytest
from conftest import Running
from fakeprovider import Behaviour, default, delay, openai_error, stall
from harness import runtime_for
from structlog.testing import capture_logs
from test_failover_support import (
    GPT,
    HELLO,
    Fakes,
    attrs,
    chat,
    client_spans,
    config,
    get_status,
    label,
    metric_sum,
    only_server_span,
    start_fakes,
    targets,
)
from test_telemetry_support import completed_lines, settle

from instrumentation.records import AttemptRecord
from proxy import failover
from proxy.config import CircuitConfig
from proxy.health import TargetHealth
from proxy.runtime import Target

Start = Callable[..., Running]
HEDGE = {"after_s": 0.2}
TEXT = f"Hello from {GPT}: hi there"


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


def hedged(fakes: Fakes, *names: str, hedge: dict[str, Any] | None = None) -> dict[str, Any]:
    return config(fakes, {"m": {"targets": targets(*names), "hedge": hedge or HEDGE}})


def aoai(running: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.openai_base_url, api_key="sk-test", max_retries=0)


async def ask(running: Running) -> Any:
    async with aoai(running) as client:
        return await client.chat.completions.with_raw_response.create(model="m", messages=HELLO)


async def ask_stream(running: Running) -> str:
    async with aoai(running) as client:
        stream = await client.chat.completions.create(model="m", messages=HELLO, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


def hedges(running: Running, outcome: str, provider: str | None = None) -> float:
    match = {"spangate.outcome": outcome}
    if provider is not None:
        match["spangate.provider"] = provider
    return metric_sum(running, "spangate.hedges", match)


async def assert_nothing_in_flight(running: Running) -> None:
    """The loser's in-flight slot was given back (no leak that would skew routing)."""
    for name, state in (await get_status(running))["targets"].items():
        assert state["inflight"] == 0, name


async def test_hedge_wins_against_a_slow_target_and_the_loser_is_cancelled(
    fakes: Fakes, spangate_for: Start
) -> None:
    """a takes 3 s; after 0.2 s b is asked too and answers first: the client gets b's reply,
    a's attempt is `lost` (error.type hedge_lost) and its upstream request is cancelled."""
    fakes.a.script(delay(3))
    running = spangate_for(hedged(fakes, "a", "b"))
    raw = await ask(running)
    assert raw.parse().choices[0].message.content == TEXT
    assert raw.headers["x-spangate-target"] == label("b")
    assert raw.headers["x-spangate-attempts"] == "2"
    assert await fakes.a.await_disconnects(1), "the losing upstream request was not cancelled"

    primary, hedge = client_spans(running)
    assert attrs(primary)["spangate.target"] == label("a")
    assert attrs(primary)["spangate.hedge.role"] == "primary"
    assert attrs(primary)["spangate.hedge.outcome"] == "lost"
    assert attrs(primary)["error.type"] == "hedge_lost"
    assert attrs(hedge)["spangate.target"] == label("b")
    assert attrs(hedge)["spangate.hedge.role"] == "hedge"
    assert attrs(hedge)["spangate.hedge.outcome"] == "won"
    assert "error.type" not in attrs(hedge)
    server = only_server_span(running)
    assert attrs(server)["spangate.hedged"] is True
    assert attrs(server)["spangate.target"] == label("b")
    assert attrs(server)["spangate.attempts"] == 2
    assert "error.type" not in attrs(server)

    assert hedges(running, "won", "b") == 1
    assert hedges(running, "lost", "a") == 1
    # A won race is a hedge, not a failover: a did not fail, it was slow.
    assert metric_sum(running, "spangate.failovers") == 0
    await assert_nothing_in_flight(running)


@pytest.mark.parametrize(
    "slow",
    [
        pytest.param(delay(3), id="no-headers"),
        pytest.param(stall(after=0, seconds=3), id="headers-but-no-content"),
    ],
)
async def test_streaming_hedge_wins_against_a_slow_stream(
    fakes: Fakes, spangate_for: Start, slow: Behaviour
) -> None:
    """A stream whose first content does not come in time is hedged; b's stream wins whole."""
    fakes.a.script(slow)
    running = spangate_for(hedged(fakes, "a", "b"))
    assert await ask_stream(running) == TEXT
    assert await fakes.a.await_disconnects(1)
    primary, hedge = client_spans(running)
    assert attrs(primary)["spangate.hedge.outcome"] == "lost"
    assert attrs(hedge)["spangate.hedge.outcome"] == "won"
    assert attrs(hedge)["spangate.stream.outcome"] == "completed"
    assert attrs(only_server_span(running))["spangate.hedged"] is True
    await assert_nothing_in_flight(running)


async def test_fast_primary_is_not_hedged(fakes: Fakes, spangate_for: Start) -> None:
    """A primary that answers within after_s is the only attempt; no hedge is recorded."""
    running = spangate_for(hedged(fakes, "a", "b"))
    raw = await ask(running)
    assert raw.headers["x-spangate-attempts"] == "1"
    assert len(fakes.b.received) == 0
    (only,) = client_spans(running)
    assert attrs(only)["spangate.hedge.role"] == "primary"
    assert "spangate.hedge.outcome" not in attrs(only)
    assert "spangate.hedged" not in attrs(only_server_span(running))
    assert hedges(running, "won") == hedges(running, "lost") == 0


async def test_primary_can_still_win_the_race(fakes: Fakes, spangate_for: Start) -> None:
    """a answers after 0.5 s, the hedge to b would take 3 s: a wins, b is cancelled."""
    fakes.a.script(delay(0.5))
    fakes.b.script(delay(3))
    running = spangate_for(hedged(fakes, "a", "b"))
    with capture_logs() as captured:
        raw = await ask(running)
        assert raw.headers["x-spangate-target"] == label("a")
        assert await fakes.b.await_disconnects(1)
        primary, hedge = client_spans(running)
        settle(running)
    # The request line names the attempt that answered, as the SERVER span does, not the
    # last one started.
    (line,) = completed_lines(captured)
    tokens = raw.parse().usage.completion_tokens
    assert (line["provider"], line["target"], line["output_tokens"]) == ("a", label("a"), tokens)
    assert "error_type" not in line and line["cost_usd"] > 0
    assert attrs(primary)["spangate.hedge.outcome"] == "won"
    assert attrs(hedge)["spangate.hedge.outcome"] == "lost"
    assert attrs(hedge)["error.type"] == "hedge_lost"
    server = attrs(only_server_span(running))
    assert (server["spangate.target"], server["spangate.hedged"]) == (label("a"), True)
    assert hedges(running, "won", "a") == hedges(running, "lost", "b") == 1


async def test_a_hedge_that_cannot_be_built_fails_the_request_and_frees_the_primary(
    fakes: Fakes, spangate_for: Start
) -> None:
    """The body names `model` twice: the primary (no rewrite) goes out, the hedge would
    have to rewrite it and cannot. The client gets the 400 saying so, and the primary's
    upstream request is cancelled and its in-flight slot given back."""
    fakes.a.script(delay(3))
    models = {
        "m": {
            "targets": [{"provider": "a", "model": "m"}, {"provider": "b", "model": "other"}],
            "hedge": HEDGE,
        }
    }
    running = spangate_for(config(fakes, models))
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"model":"m"}'
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            running.openai_base_url + "/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as resp,
    ):
        status, answer = resp.status, await resp.json()
    assert (status, answer["error"]["code"]) == (400, "duplicate_member")
    assert await fakes.a.await_disconnects(1)
    await assert_nothing_in_flight(running)


async def test_a_race_won_after_the_first_target_failed_is_still_a_failover(
    fakes: Fakes, spangate_for: Start
) -> None:
    """a fails at once; b, next, is slow and gets a hedge to c, which wins. The request
    was served by another target than the first after the first failed: one failover,
    and one hedge won."""
    fakes.a.script(openai_error(503))
    fakes.b.script(delay(3))
    running = spangate_for(hedged(fakes, "a", "b", "c"))
    raw = await ask(running)
    assert raw.headers["x-spangate-target"] == label("c")
    assert metric_sum(running, "spangate.failovers") == 1
    assert hedges(running, "won", "c") == 1


async def test_failing_hedge_leaves_the_race_to_the_primary(
    fakes: Fakes, spangate_for: Start
) -> None:
    """The hedge to b fails at once; the slow primary a still serves the request."""
    fakes.a.script(delay(0.5))
    fakes.b.script(openai_error(500))
    running = spangate_for(hedged(fakes, "a", "b"))
    raw = await ask(running)
    assert raw.headers["x-spangate-target"] == label("a")
    primary, hedge = client_spans(running)
    assert attrs(primary)["spangate.hedge.outcome"] == "won"
    assert attrs(hedge)["spangate.failure_class"] == "transient"
    assert attrs(only_server_span(running))["spangate.target"] == label("a")


async def test_both_racers_failing_moves_on_to_the_next_target(
    fakes: Fakes, spangate_for: Start
) -> None:
    """a (slow, then 500) and its hedge b (500) both fail: c serves as the third attempt."""
    fakes.a.script(delay(0.4, openai_error(500)))
    fakes.b.script(openai_error(500))
    running = spangate_for(hedged(fakes, "a", "b", "c"))
    raw = await ask(running)
    assert raw.parse().choices[0].message.content == TEXT
    assert raw.headers["x-spangate-target"] == label("c")
    assert raw.headers["x-spangate-attempts"] == "3"
    assert fakes.counts() == {"a": 1, "b": 1, "c": 1, "x": 0, "y": 0}
    await assert_nothing_in_flight(running)


async def test_single_target_alias_has_nothing_to_hedge_with(
    fakes: Fakes, spangate_for: Start
) -> None:
    """With one target the slow primary simply finishes; no hedge is recorded."""
    fakes.a.script(delay(0.5))
    running = spangate_for(hedged(fakes, "a"))
    raw = await ask(running)
    assert raw.headers["x-spangate-target"] == label("a")
    assert "spangate.hedged" not in attrs(only_server_span(running))


async def test_percentile_hedge_needs_samples_then_hedges(
    fakes: Fakes, spangate_for: Start
) -> None:
    """hedge.percentile without after_s: no hedging until min_samples first-byte latencies
    were observed; then a request slower than that percentile is hedged."""
    running = spangate_for(hedged(fakes, "a", "b", hedge={"percentile": 0.5, "min_samples": 3}))
    fakes.a.script(default(), default(), default(), delay(2))
    for _ in range(3):
        raw = await ask(running)
        assert raw.headers["x-spangate-attempts"] == "1"
    raw = await ask(running)
    assert raw.headers["x-spangate-target"] == label("b")
    assert await fakes.a.await_disconnects(1)
    running.flush()
    hedged_servers = [
        s
        for s in running.finished_spans()
        if s.kind.name == "SERVER" and attrs(s).get("spangate.hedged")
    ]
    assert len(hedged_servers) == 1


# --------------------------------------------------------------------------- cancellation & leaks


async def give_up_after(running: Running, seconds: float) -> None:
    """A client that stops waiting after `seconds` (closing its connection)."""
    timeout = aiohttp.ClientTimeout(total=seconds)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(TimeoutError):
            async with session.post(
                running.openai_base_url + "/chat/completions", json=chat()
            ) as resp:
                await resp.read()


async def wait_until_idle(running: Running, within: float = 3.0) -> dict[str, Any]:
    """Poll /spangate/status until no target has anything in flight; the last snapshot."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    targets_state: dict[str, Any] = {}
    while loop.time() < deadline:
        targets_state = (await get_status(running))["targets"]
        if all(state["inflight"] == 0 for state in targets_state.values()):
            break
        await asyncio.sleep(0.05)
    return targets_state


async def test_client_giving_up_during_a_race_cancels_both_racers(
    fakes: Fakes, spangate_for: Start
) -> None:
    """The client leaves while a and its hedge b are both pending: both upstream requests
    are closed and neither target keeps an in-flight slot."""
    fakes.a.script(delay(3))
    fakes.b.script(delay(3))
    running = spangate_for(hedged(fakes, "a", "b"))
    await give_up_after(running, 0.6)
    assert await fakes.a.await_disconnects(1)
    assert await fakes.b.await_disconnects(1)
    state = await wait_until_idle(running)
    assert [s["inflight"] for s in state.values()] == [0, 0]


async def test_client_leaving_during_a_race_is_a_disconnect_not_two_lost_hedges(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Nobody lost a race when the client hangs up mid-race: both CLIENT spans say
    error.type client_disconnected with no hedge outcome, spangate.hedges counts nothing,
    exactly as for an unhedged attempt the client abandoned."""
    fakes.a.script(delay(3))
    fakes.b.script(delay(3))
    running = spangate_for(hedged(fakes, "a", "b"))
    await give_up_after(running, 0.6)
    assert await fakes.b.await_disconnects(1)
    await wait_until_idle(running)
    running.flush()
    primary, hedge = client_spans(running)
    for span, role in ((primary, "primary"), (hedge, "hedge")):
        assert attrs(span)["spangate.hedge.role"] == role
        assert attrs(span)["error.type"] == "client_disconnected"
        assert "spangate.hedge.outcome" not in attrs(span)
    server = attrs(only_server_span(running))
    assert (server["error.type"], server["spangate.hedged"]) == ("client_disconnected", True)
    assert hedges(running, "lost") == hedges(running, "won") == 0


async def test_client_giving_up_cancels_an_unhedged_attempt(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Without hedging, a client that leaves cancels the upstream request (reference case)."""
    fakes.a.script(delay(3))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    await give_up_after(running, 0.3)
    assert await fakes.a.await_disconnects(1)
    assert (await wait_until_idle(running))[label("a")]["inflight"] == 0
    running.flush()
    (attempt,) = client_spans(running)
    assert attrs(attempt)["error.type"] == "client_disconnected"


async def test_client_giving_up_before_the_hedge_threshold_cancels_the_primary(
    fakes: Fakes, spangate_for: Start
) -> None:
    """hedge.after_s 2 s, client leaves after 0.3 s: the primary's upstream request must be
    closed like an unhedged one, and a must not keep an in-flight slot."""
    fakes.a.script(delay(1))
    running = spangate_for(hedged(fakes, "a", "b", hedge={"after_s": 2}))
    await give_up_after(running, 0.3)
    assert await fakes.a.await_disconnects(1, within=2)
    assert (await wait_until_idle(running))[label("a")]["inflight"] == 0


class _StubResponse:
    """Stands in for an aiohttp response: records whether it was closed or released."""

    def __init__(self) -> None:
        self.closed = False

    def release(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


def _ready(name: str, number: int) -> tuple[failover.Ready, _StubResponse]:
    runtime = runtime_for({"providers": {name: {"kind": "openai", "base_url": "http://h"}}})
    target = Target(runtime.providers[name], GPT)
    slot = TargetHealth(target.label, CircuitConfig()).start()
    slot.succeeded(0.0, 0.01)  # committed: in flight until released
    attempt = AttemptRecord(
        number, number, provider=name, system="openai", host="h", port=80, target=target.label,
        model=GPT,
    )  # fmt: skip
    response = _StubResponse()
    stub: Any = response
    return failover.Ready(target, stub, stub, attempt, slot), response


async def test_race_releases_a_second_winner_that_committed_at_the_same_time() -> None:
    """Both racers commit in the same loop iteration: one wins, the other must be closed,
    its in-flight slot returned and its outcome recorded as lost."""
    first, first_response = _ready("a", 1)
    second, second_response = _ready("b", 2)
    loop = asyncio.get_running_loop()
    launches: list[failover._Launch] = []
    for ready in (first, second):
        future: asyncio.Future[failover.Ready | failover.Failed] = loop.create_future()
        future.set_result(ready)
        launches.append(failover._Launch(future, ready.attempt, ready.slot))
    winner = await failover._race(launches)
    assert isinstance(winner, failover.Ready)
    loser, loser_response = (
        (second, second_response) if winner is first else (first, first_response)
    )
    assert winner.attempt.hedge_outcome == "won"
    assert loser_response.closed, "the losing response was left open"
    assert loser.slot.health.inflight == 0, "the losing target keeps an in-flight slot"
    assert loser.attempt.hedge_outcome == "lost"
