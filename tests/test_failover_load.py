"""A bounded loopback load test: many requests, a third of upstream replies faulty,
not one request lost.

Alias `m` lists a, b, c in order. a fails every third request it receives (a mix
of 503, 429, connection reset, malformed JSON, 500), b resets every fifth
connection it gets, c is healthy; the circuit breaker is off so the faults keep
coming. Every client request must succeed, and the
telemetry must account for every attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import openai
import pytest
from conftest import Running
from fakeprovider import Behaviour, default, malformed_json, openai_error, reset
from test_failover_support import (
    GPT,
    HELLO,
    Fakes,
    config,
    metric_sum,
    settle,
    start_fakes,
    targets,
)

Start = Callable[..., Running]
REQUESTS = 2000
CONCURRENCY = 32
A_FAULTS: tuple[Callable[[], Behaviour], ...] = (
    lambda: openai_error(503),
    lambda: openai_error(429, "rate_limit_exceeded"),
    reset,
    malformed_json,
    lambda: openai_error(500),
)


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


def a_script(count: int) -> list[Behaviour]:
    """Every third reply of a is a fault, cycling through the fault kinds."""
    return [A_FAULTS[(i // 3) % len(A_FAULTS)]() if i % 3 == 0 else default() for i in range(count)]


async def test_thousands_of_requests_with_a_third_faulty_lose_none(
    fakes: Fakes, spangate_for: Start
) -> None:
    """2,000 chat completions (32 concurrent) through a, b, c with a failing 1/3 of the time
    and b resetting 1/5 of its connections: every request succeeds."""
    fakes.a.script(*a_script(REQUESTS))
    fakes.b.script(*[reset() if i % 5 == 0 else default() for i in range(REQUESTS)])
    # The circuit stays out of it so that every scripted fault really reaches spangate
    # (a's 1/3 error rate is below the default threshold anyway, but completion order
    # under concurrency is not arrival order).
    model = {"targets": targets("a", "b", "c"), "circuit": {"enabled": False}}
    running = spangate_for(config(fakes, {"m": model}))

    failures: list[BaseException] = []
    answers: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)

    async def worker(client: openai.AsyncOpenAI) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            try:
                completion = await client.chat.completions.create(
                    model="m", messages=HELLO, user=f"load-{i}"
                )
                answers.append(completion.choices[0].message.content or "")
            except openai.OpenAIError as exc:
                failures.append(exc)

    async with openai.AsyncOpenAI(
        base_url=running.openai_base_url, api_key="sk-test", max_retries=0, timeout=30
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))

    assert failures == []
    assert len(answers) == REQUESTS
    assert set(answers) == {f"Hello from {GPT}: hi there"}

    counts = fakes.counts()
    a_faults = (REQUESTS + 2) // 3  # requests 0, 3, 6, ... of a
    b_faults = (a_faults + 4) // 5  # every fifth request b received
    assert counts["a"] == REQUESTS
    assert counts["b"] == a_faults
    assert counts["c"] == b_faults
    upstream = counts["a"] + counts["b"] + counts["c"]
    assert (a_faults + b_faults) / upstream > 0.28  # close to a third of replies faulty

    settle(running, REQUESTS, within=30)
    ok = {"spangate.route": "m", "http.response.status_class": "2xx"}
    assert metric_sum(running, "spangate.requests", ok) == REQUESTS
    assert metric_sum(running, "spangate.attempts", {"spangate.outcome": "error"}) == (
        a_faults + b_faults
    )
    assert metric_sum(running, "spangate.attempts", {"spangate.outcome": "success"}) == REQUESTS
