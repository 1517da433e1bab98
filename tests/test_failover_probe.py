"""A half-open circuit admits one probe, however many requests choose it at once.

The requests are served by `failover.run` itself, gathered in one event loop, so they
all choose their target in the same few loop turns — the window in which a probe
claimed only when its attempt starts (a hedged attempt runs in a task of its own, a
turn later) let every one of them through. Real upstream pool, real sockets, a real
fake provider; the circuit is opened through the health registry with a `now` that
makes its cooldown already over (no sleeping).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from fakeprovider import FakeProvider, delay
from harness import runtime_for
from multidict import CIMultiDict, CIMultiDictProxy

from instrumentation.logging import redactor_for
from instrumentation.setup import Telemetry
from proxy import body as bodylib
from proxy import failover
from proxy.endpoints import classify
from proxy.errors import Unavailable
from proxy.health import HealthRegistry
from proxy.providers.base import Incoming
from proxy.routing import resolve
from proxy.runtime import RuntimeConfig
from proxy.upstream import Upstream

GPT = "gpt-4o-mini"
CHAT = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
CONCURRENT = 8


class Direct:
    """What the app wires together for a request, built without the HTTP server."""

    def __init__(self, runtime: RuntimeConfig, upstream: Upstream) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.health = HealthRegistry()
        self.telemetry = Telemetry(
            runtime.config.telemetry,
            redactor_for(runtime.config),
            env={"OTEL_SDK_DISABLED": "true"},
            announce=False,
        )

    async def serve(self) -> failover.Ready | failover.Failed:
        endpoint = classify("POST", "/v1/chat/completions", False)
        assert endpoint is not None
        headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))
        fields = bodylib.decode_fields(CHAT)
        incoming = Incoming("POST", endpoint, "", headers, CHAT, fields)
        record = self.telemetry.begin("POST", endpoint.path, headers, None)
        plan = resolve(self.runtime, endpoint, "m")
        return await failover.run(
            self.upstream, self.telemetry, self.health, self.runtime, record, incoming, plan
        )

    def open_circuit_cooled_down(self, label: str) -> None:
        """One counted failure long enough ago that the cooldown is already over."""
        route = self.runtime.routes["m"]
        health = self.health.get(label, route.circuit)
        health.start().failed(time.monotonic() - 3600, "transient", None)
        assert health.state == "open"


@pytest.fixture
async def direct(fake: FakeProvider, request: pytest.FixtureRequest) -> AsyncIterator[Direct]:
    model: dict[str, Any] = {
        "targets": [{"provider": "a", "model": GPT}],
        "circuit": {"consecutive_failures": 1, "cooldown_s": 30},
    }
    if request.param == "hedged":
        model["hedge"] = {"after_s": 30}  # hedging on, never reached: only the task matters
    runtime = runtime_for(
        {"providers": {"a": {"kind": "openai", "base_url": fake.url}}, "models": {"m": model}}
    )
    upstream = Upstream(pool_size=CONCURRENT)
    await upstream.start()
    yield Direct(runtime, upstream)
    await upstream.close()


async def serve_all(direct: Direct, count: int) -> list[failover.Ready | Exception]:
    """`count` requests at once; each result is given back as the handler would."""
    results = await asyncio.gather(*(direct.serve() for _ in range(count)), return_exceptions=True)
    out: list[failover.Ready | Exception] = []
    for result in results:
        if isinstance(result, failover.Ready):
            result.response.release()
            result.slot.release()
        assert isinstance(result, failover.Ready | Exception), result
        out.append(result)
    return out


@pytest.mark.parametrize("direct", ["plain", "hedged"], indirect=True)
async def test_concurrent_requests_after_the_cooldown_send_exactly_one_probe(
    fake: FakeProvider, direct: Direct
) -> None:
    """8 requests choose the half-open target in the same loop turns: exactly one is sent
    as the probe, the other 7 find no target available (503 circuits_open), on a hedged
    route as on a plain one."""
    fake.script(delay(0.2))
    direct.open_circuit_cooled_down(f"a/{GPT}")
    results = await serve_all(direct, CONCURRENT)
    assert len(fake.received) == 1
    assert sum(isinstance(r, failover.Ready) for r in results) == 1
    assert sum(isinstance(r, Unavailable) for r in results) == CONCURRENT - 1
    health = direct.health.get(f"a/{GPT}", direct.runtime.routes["m"].circuit)
    assert (health.state, health.inflight, health.probe) == ("closed", 0, None)
