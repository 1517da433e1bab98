"""The attempt loop: build the upstream request from the original, send, decide.

Every attempt is rebuilt from the client's original request, so adapters stay
pure and a retry never sees a previous attempt's edits.
"""

from __future__ import annotations

import time

import aiohttp
import msgspec

from proxy.errors import SpangateError
from proxy.providers.base import Incoming
from proxy.routing import RoutePlan
from proxy.runtime import Target
from proxy.upstream import Upstream


class Attempt(msgspec.Struct):
    number: int
    target: Target
    start_ns: int
    end_ns: int = 0
    status: int | None = None
    error: str | None = None


class Outcome(msgspec.Struct):
    """The response that will be relayed, with the attempts that led to it."""

    target: Target
    response: aiohttp.ClientResponse
    attempts: list[Attempt]


async def run(upstream: Upstream, incoming: Incoming, plan: RoutePlan) -> Outcome:
    target = plan.targets[0]
    attempt = Attempt(1, target, time.monotonic_ns())
    provider = target.provider
    request = provider.adapter.build_request(incoming, provider.settings, target.model)
    try:
        response = await upstream.send(request, provider.timeouts, provider.name)
    except SpangateError as exc:
        attempt.error, attempt.end_ns = exc.kind, time.monotonic_ns()
        raise
    attempt.status = response.status
    return Outcome(target, response, [attempt])
