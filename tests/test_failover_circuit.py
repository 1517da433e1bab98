"""The circuit breaker end to end: opens, skips, half-opens with one probe, closes.

State is read from `GET /spangate/status` and the spangate.circuit.* metrics;
the cooldown is waited out by polling the status endpoint (no timing asserts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from conftest import Running
from fakeprovider import anthropic_error, default, delay, openai_error, reset_after, stall
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

Start = Callable[..., Running]
CIRCUIT = {"consecutive_failures": 2, "cooldown_s": 0.5}


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


def aoai(running: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.openai_base_url, api_key="sk-test", max_retries=0)


async def ask(running: Running, model: str = "m") -> Any:
    """One chat completion; returns the raw response (headers + parse())."""
    async with aoai(running) as client:
        return await client.chat.completions.with_raw_response.create(model=model, messages=HELLO)


async def target_state(running: Running, name: str) -> dict[str, Any]:
    state: dict[str, Any] = (await get_status(running))["targets"][label(name)]
    return state


async def wait_for_cooldown(running: Running, name: str, within: float = 5.0) -> None:
    """Poll the status endpoint until the open circuit's cooldown has run out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if (await target_state(running, name))["cooldown_remaining_s"] == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the circuit of {name} did not cool down within {within} s")


async def open_circuit_of_a(fakes: Fakes, running: Running) -> None:
    """Two failures on a (served by b each time) open a's circuit."""
    fakes.a.script(openai_error(500), openai_error(500))
    for _ in range(2):
        raw = await ask(running)
        assert raw.headers["x-spangate-target"] == label("b")
    assert (await target_state(running, "a"))["state"] == "open"


def circuit_open_metric(running: Running, name: str) -> float:
    """A gauge read now: it must not wait for a probe deliberately held in flight."""
    match = {"spangate.target": label(name)}
    return metric_sum(running, "spangate.circuit.open", match, settle=False)


def transitions(running: Running, name: str, state: str) -> float:
    match = {"spangate.target": label(name), "spangate.circuit.state": state}
    return metric_sum(running, "spangate.circuit.transitions", match)


async def test_circuit_opens_after_consecutive_failures_and_skips_the_target(
    fakes: Fakes, spangate_for: Start
) -> None:
    """After 2 consecutive failures a's circuit is open: later requests go straight to b,
    a receives nothing more, and status and metrics say so."""
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": CIRCUIT}}))
    fakes.a.script(openai_error(500), openai_error(500))
    await ask(running)
    state = await target_state(running, "a")
    assert (state["state"], state["consecutive_failures"]) == ("closed", 1)
    await ask(running)
    state = await target_state(running, "a")
    assert state["state"] == "open"
    assert 0 < state["cooldown_remaining_s"] <= 0.5
    assert [e["class"] for e in state["recent_errors"]] == ["transient", "transient"]
    assert state["transitions"] == {"open": 1}
    assert (await target_state(running, "b"))["state"] == "closed"

    for _ in range(3):
        raw = await ask(running)
        assert raw.headers["x-spangate-attempts"] == "1"
        assert raw.headers["x-spangate-target"] == label("b")
    assert len(fakes.a.received) == 2
    assert len(fakes.b.received) == 5

    assert circuit_open_metric(running, "a") == 1
    assert circuit_open_metric(running, "b") == 0
    assert transitions(running, "a", "open") == 1


async def test_after_the_cooldown_a_healthy_probe_closes_the_circuit(
    fakes: Fakes, spangate_for: Start
) -> None:
    """open → (cooldown) → half_open: one probe goes to a; it succeeds, the circuit closes."""
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": CIRCUIT}}))
    await open_circuit_of_a(fakes, running)
    await wait_for_cooldown(running, "a")
    raw = await ask(running)
    assert raw.headers["x-spangate-target"] == label("a")
    assert raw.headers["x-spangate-attempts"] == "1"
    assert len(fakes.a.received) == 3
    state = await target_state(running, "a")
    assert state["state"] == "closed"
    assert state["consecutive_failures"] == 0
    assert state["transitions"] == {"open": 1, "half_open": 1, "closed": 1}
    assert circuit_open_metric(running, "a") == 0
    assert transitions(running, "a", "closed") == 1
    assert transitions(running, "a", "half_open") == 1


async def test_a_failed_probe_reopens_the_circuit(fakes: Fakes, spangate_for: Start) -> None:
    """The half-open probe fails: the circuit re-opens for another cooldown, b serves."""
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": CIRCUIT}}))
    await open_circuit_of_a(fakes, running)
    await wait_for_cooldown(running, "a")
    fakes.a.script(openai_error(503))
    raw = await ask(running)
    assert raw.headers["x-spangate-target"] == label("b")
    assert raw.headers["x-spangate-attempts"] == "2"
    state = await target_state(running, "a")
    assert state["state"] == "open"
    assert state["cooldown_remaining_s"] > 0
    assert state["transitions"] == {"open": 2, "half_open": 1}
    # Open again: skipped.
    await ask(running)
    assert len(fakes.a.received) == 3
    assert transitions(running, "a", "open") == 2


async def test_half_open_admits_a_single_probe_at_a_time(fakes: Fakes, spangate_for: Start) -> None:
    """While the probe is in flight, other requests skip a; the probe's success closes it."""
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": CIRCUIT}}))
    await open_circuit_of_a(fakes, running)
    await wait_for_cooldown(running, "a")
    fakes.a.script(delay(0.8))
    probe = asyncio.ensure_future(ask(running))
    assert await fakes.a.await_requests(3)
    assert (await target_state(running, "a"))["state"] == "half_open"
    assert circuit_open_metric(running, "a") == 1  # half-open counts as not closed
    for _ in range(2):
        raw = await ask(running)
        assert raw.headers["x-spangate-target"] == label("b")
    assert len(fakes.a.received) == 3
    raw = await probe
    assert raw.headers["x-spangate-target"] == label("a")
    assert (await target_state(running, "a"))["state"] == "closed"


async def test_retry_after_lengthens_the_cooldown(fakes: Fakes, spangate_for: Start) -> None:
    """The circuit stays open at least as long as the provider's Retry-After (1 s > 0.2 s)."""
    circuit = {"consecutive_failures": 1, "cooldown_s": 0.2}
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": circuit}}))
    fakes.a.script(openai_error(503, retry_after=1))
    await ask(running)
    state = await target_state(running, "a")
    assert state["state"] == "open"
    assert 0.5 < state["cooldown_remaining_s"] <= 1.0


async def test_caller_faults_do_not_open_the_circuit(fakes: Fakes, spangate_for: Start) -> None:
    """A bad request says nothing about the target: three 400s leave the circuit closed."""
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": CIRCUIT}}))
    fakes.a.script(*[openai_error(400, type="invalid_request_error")] * 3)
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            await ask(running)
    state = await target_state(running, "a")
    assert (state["state"], state["consecutive_failures"]) == ("closed", 0)
    assert len(fakes.b.received) == 0


async def test_error_rate_over_the_window_opens_the_circuit(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Never two failures in a row, but 3 of 5 over the window (> 40 %) opens the circuit."""
    circuit = {
        "consecutive_failures": 100,
        "error_rate": 0.4,
        "min_requests": 5,
        "window_s": 60,
        "cooldown_s": 30,
    }
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": circuit}}))
    fail = openai_error(500)
    fakes.a.script(fail, default(), fail, default(), fail)
    for _ in range(5):
        await ask(running)
    assert (await target_state(running, "a"))["state"] == "open"
    await ask(running)
    assert len(fakes.a.received) == 5


async def test_circuit_state_is_shared_by_aliases_naming_the_same_target(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Health is per provider/model: a opened via alias m is skipped by alias n too."""
    models = {
        "m": {"targets": targets("a", "b"), "circuit": CIRCUIT},
        "n": {"targets": targets("a", "c"), "circuit": CIRCUIT},
    }
    running = spangate_for(config(fakes, models))
    await open_circuit_of_a(fakes, running)
    raw = await ask(running, model="n")
    assert raw.headers["x-spangate-target"] == label("c")
    assert raw.headers["x-spangate-attempts"] == "1"
    assert len(fakes.a.received) == 2


async def test_every_circuit_open_without_fallback_is_a_503_circuits_open(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Both targets open and no fallback: 503 with code circuits_open, nothing sent upstream."""
    circuit = {"consecutive_failures": 1, "cooldown_s": 30}
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": circuit}}))
    fakes.a.script(openai_error(500))
    fakes.b.script(openai_error(500))
    with pytest.raises(openai.InternalServerError):
        await ask(running)
    running.flush()
    running.spans.clear()
    with pytest.raises(openai.InternalServerError) as caught:
        await ask(running)
    assert caught.value.status_code == 503
    assert caught.value.code == "circuits_open"
    assert caught.value.type == "server_error"
    assert "GET /spangate/status" in caught.value.message
    assert fakes.total() == 2
    server = only_server_span(running)
    assert attrs(server)["http.response.status_code"] == 503
    assert attrs(server)["spangate.attempts"] == 0
    assert client_spans(running) == []


async def test_circuits_open_says_when_to_retry(fakes: Fakes, spangate_for: Start) -> None:
    """The 503 circuits_open carries Retry-After: the whole seconds (rounded up, at least
    1) until the alias's first circuit half-opens, so SDKs wait instead of retrying into
    the open circuit at once. Here a opened for its 30 s cooldown, b for the 90 s its
    provider's own Retry-After asked."""
    circuit = {"consecutive_failures": 1, "cooldown_s": 30}
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": circuit}}))
    fakes.a.script(openai_error(500))
    fakes.b.script(openai_error(500, retry_after=90))
    with pytest.raises(openai.InternalServerError):
        await ask(running)
    with pytest.raises(openai.InternalServerError) as caught:
        await ask(running)
    assert caught.value.code == "circuits_open"
    assert caught.value.response.headers["retry-after"] in ("29", "30")


async def test_every_circuit_open_answers_in_the_anthropic_format(
    fakes: Fakes, spangate_for: Start
) -> None:
    """The circuits_open 503 speaks the client's dialect: Anthropic's error envelope."""
    circuit = {"consecutive_failures": 1, "cooldown_s": 30}
    running = spangate_for(config(fakes, {"m": {"targets": targets("x", "y"), "circuit": circuit}}))
    fakes.x.script(anthropic_error(529, "overloaded_error"))
    fakes.y.script(anthropic_error(529, "overloaded_error"))
    async with anthropic.AsyncAnthropic(
        base_url=running.url, api_key="sk-ant", max_retries=0
    ) as client:
        for _ in range(2):
            with pytest.raises(anthropic.APIStatusError) as caught:
                await client.messages.create(model="m", max_tokens=64, messages=HELLO)
    assert caught.value.status_code == 503
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "overloaded_error"
    assert fakes.total() == 2


async def test_every_circuit_open_goes_to_the_fallback(fakes: Fakes, spangate_for: Start) -> None:
    """All of m's circuits open: the fallback alias serves without m being tried."""
    circuit = {"consecutive_failures": 1, "cooldown_s": 30}
    models = {
        "m": {"targets": targets("a"), "circuit": circuit, "fallbacks": ["n"]},
        "n": {"targets": targets("c")},
    }
    running = spangate_for(config(fakes, models))
    fakes.a.script(openai_error(500))
    raw = await ask(running)
    assert raw.headers["x-spangate-fallback"] == "n"
    running.flush()
    running.spans.clear()
    raw = await ask(running)
    assert raw.headers["x-spangate-fallback"] == "n"
    assert raw.headers["x-spangate-attempts"] == "1"
    assert len(fakes.a.received) == 1
    assert attrs(only_server_span(running))["spangate.fallback"] == "n"


async def test_disabled_circuit_never_opens(fakes: Fakes, spangate_for: Start) -> None:
    """circuit.enabled: false keeps trying a however often it fails."""
    circuit = {"enabled": False, "consecutive_failures": 1}
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": circuit}}))
    fakes.a.script(*[openai_error(500)] * 3)
    for _ in range(3):
        await ask(running)
    assert len(fakes.a.received) == 3
    assert (await target_state(running, "a"))["state"] == "closed"


async def test_pass_through_traffic_shows_no_circuit_in_status_or_metrics(
    fakes: Fakes, spangate_for: Start
) -> None:
    """A model no alias names goes to provider a's default route, which no circuit judges
    (it fails here and is still sent the next request): /spangate/status and the
    spangate.circuit.* metrics list only the alias's target, not a circuit of `a` that
    could only ever read closed."""
    running = spangate_for(config(fakes, {"m": {"targets": targets("a"), "circuit": CIRCUIT}}))
    fakes.a.script(*[openai_error(500)] * 3)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            await ask(running, model=GPT)
    await ask(running)
    assert len(fakes.a.received) == 4
    assert list((await get_status(running))["targets"]) == [label("a")]
    observed = {
        dict(point.attributes)["spangate.target"]
        for name in ("spangate.circuit.open", "spangate.circuit.transitions")
        for point in running.metric_points(name)
    }
    assert observed == {label("a")}


# --------------------------------------------------------------------------- streams after commit


async def stream_text(running: Running) -> str:
    """Stream a chat completion; raises the SDK's APIError when the stream broke off."""
    async with aoai(running) as client:
        stream = await client.chat.completions.create(model="m", messages=HELLO, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


async def until_idle(running: Running, name: str, within: float = 5.0) -> dict[str, Any]:
    """Poll the status endpoint until `name` has nothing in flight; its last state."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        state = await target_state(running, name)
        if state["inflight"] == 0:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} still has requests in flight after {within} s")


async def test_streams_breaking_after_content_open_the_circuit(
    fakes: Fakes, spangate_for: Start
) -> None:
    """a always resets its streams after the first content: those requests cannot fail
    over (content reached the client), but each counts against a's circuit, which opens
    after 2, so the next stream goes to b and arrives whole."""
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": CIRCUIT}}))
    fakes.a.script(reset_after(events=3), reset_after(events=3))
    for _ in range(2):
        with pytest.raises(openai.APIError):
            await stream_text(running)
    state = await until_idle(running, "a")
    assert state["state"] == "open"
    assert [e["class"] for e in state["recent_errors"]] == ["connection", "connection"]
    assert await stream_text(running) == "Hello from gpt-4o-mini: hi there"
    assert (len(fakes.a.received), len(fakes.b.received)) == (2, 1)


async def test_a_half_open_probe_whose_stream_breaks_reopens_the_circuit(
    fakes: Fakes, spangate_for: Start
) -> None:
    """A streamed probe is judged when its stream ends, not at its first content: one that
    breaks after content sends the circuit back to open (it never closed in between)."""
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": CIRCUIT}}))
    await open_circuit_of_a(fakes, running)
    await wait_for_cooldown(running, "a")
    fakes.a.script(reset_after(events=3))
    with pytest.raises(openai.APIError):
        await stream_text(running)
    state = await until_idle(running, "a")
    assert state["state"] == "open"
    assert state["transitions"] == {"open": 2, "half_open": 1}


async def test_a_client_leaving_mid_stream_does_not_count_against_the_target(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Clients that hang up after the first content (twice, the circuit's threshold) say
    nothing about the target: a's circuit stays closed with no failure counted."""
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": CIRCUIT}}))
    fakes.a.script(stall(after=2, seconds=3), stall(after=2, seconds=3))
    for _ in range(2):
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                running.openai_base_url + "/chat/completions", json=chat(stream=True)
            ) as resp,
        ):
            assert resp.status == 200
            assert await resp.content.readline()  # content reached us; now hang up
    assert await fakes.a.await_disconnects(2)
    state = await until_idle(running, "a")
    assert (state["state"], state["consecutive_failures"]) == ("closed", 0)
    assert state["recent_errors"] == []


async def test_a_clients_rejected_key_never_opens_the_circuit_for_other_callers(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Provider a has no api_key, so the client's key goes upstream: a 401 for it is the
    caller's fault. However often it comes, it is relayed to that caller as the provider
    sent it, is not failed over (b, with spangate's own key, is never asked), and leaves
    a's circuit closed, so the next caller with a good key is served."""
    models = {"m": {"targets": targets("a", "b"), "circuit": CIRCUIT}}
    running = spangate_for(config(fakes, models, provider_overrides={"a": {"api_key": None}}))
    for _ in range(4):  # twice what opens the circuit
        fakes.a.script(openai_error(401, "invalid_api_key"))
        async with openai.AsyncOpenAI(
            base_url=running.openai_base_url, api_key="sk-wrong", max_retries=0
        ) as client:
            with pytest.raises(openai.AuthenticationError) as caught:
                await client.chat.completions.create(model="m", messages=HELLO)
        assert caught.value.code == "invalid_api_key"
    assert len(fakes.b.received) == 0
    state = await target_state(running, "a")
    assert (state["state"], state["consecutive_failures"]) == ("closed", 0)
    raw = await ask(running)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-spangate-target"] == label("a")
    assert fakes.a.last.headers["authorization"] == "Bearer sk-test"


async def test_a_rejected_configured_key_is_the_targets_fault_and_fails_over(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Provider a sets api_key: a 401 means spangate's key is bad, a credential fault of a
    that counts toward its circuit and moves on to b."""
    circuit = {"consecutive_failures": 1, "cooldown_s": 30}
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "circuit": circuit}}))
    fakes.a.script(openai_error(401, "invalid_api_key"))
    raw = await ask(running)
    assert raw.headers["x-spangate-target"] == label("b")
    state = await target_state(running, "a")
    assert state["state"] == "open"
    assert [e["class"] for e in state["recent_errors"]] == ["credential"]
