"""The attempt loop: build the upstream request from the original, send, decide.

Every attempt is rebuilt from the client's original request, so adapters stay
pure and a retry never sees a previous attempt's edits.
"""

from __future__ import annotations

import aiohttp
import msgspec

from instrumentation.records import AttemptRecord, RequestRecord
from instrumentation.setup import Telemetry
from instrumentation.tracecontext import new_span_id
from proxy.errors import SpangateError
from proxy.providers.base import Incoming, UpstreamRequest
from proxy.routing import RoutePlan
from proxy.runtime import Target
from proxy.upstream import Upstream


class Outcome(msgspec.Struct):
    """The response that will be relayed, the request that produced it, and its record."""

    target: Target
    request: UpstreamRequest
    response: aiohttp.ClientResponse
    attempt: AttemptRecord


async def run(
    upstream: Upstream,
    telemetry: Telemetry,
    record: RequestRecord,
    incoming: Incoming,
    plan: RoutePlan,
) -> Outcome:
    target = plan.targets[0]
    provider = target.provider
    request = provider.adapter.build_request(incoming, provider.settings, target.model)
    attempt = _attempt(record, 1, target, incoming)
    _propagate(telemetry, record, attempt, request, provider.propagate_trace)
    attempt.usage_injected = request.usage_injected
    try:
        response = await upstream.send(request, provider.timeouts, provider.name)
    except SpangateError as exc:
        attempt.fail(exc.kind)
        raise
    return Outcome(target, request, response, attempt)


def _attempt(
    record: RequestRecord, number: int, target: Target, incoming: Incoming
) -> AttemptRecord:
    provider = target.provider
    attempt = AttemptRecord(
        number,
        new_span_id(),
        provider=provider.name,
        system=provider.system,
        host=provider.host,
        port=provider.port,
        target=target.label,
        model=target.model or incoming.fields.model or incoming.endpoint.deployment,
    )
    record.attempts.append(attempt)
    return attempt


def _propagate(
    telemetry: Telemetry,
    record: RequestRecord,
    attempt: AttemptRecord,
    request: UpstreamRequest,
    enabled: bool,
) -> None:
    """The upstream joins the trace as a child of this attempt's CLIENT span."""
    headers = request.headers
    if not enabled:
        headers.popall("traceparent", None)
        headers.popall("tracestate", None)
        return
    if not telemetry.enabled:
        return  # not part of the trace: the client's own context passes through
    headers["traceparent"] = telemetry.traceparent(record, attempt)
    if record.parent is None or not record.parent.tracestate:
        headers.popall("tracestate", None)
