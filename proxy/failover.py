"""The attempt loop: build, send, classify, then retry, move on, hedge or stop.

Every attempt is rebuilt from the client's original request (adapters are
pure). Nothing reaches the client until an attempt *commits*: for a JSON
response when its body is read and valid, for a stream when its first content
event arrived (opening frames such as Anthropic's `message_start` are held
back). Until then any failure can still go elsewhere.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple

import aiohttp
import msgspec

from instrumentation.records import AttemptRecord, RequestRecord
from instrumentation.setup import Telemetry
from instrumentation.tracecontext import new_span_id
from proxy import codings, strategies
from proxy.classify import (
    Verdict,
    classify_exception,
    classify_response,
    classify_stream_end,
    classify_stream_error,
)
from proxy.config import FailureClass, RetryConfig, Timeouts
from proxy.errors import SpangateError, Unavailable, UpstreamTimeout, UpstreamUnreachable
from proxy.health import HealthRegistry, Slot, TargetHealth
from proxy.providers.base import Incoming, UpstreamRequest
from proxy.routing import RoutePlan
from proxy.runtime import Route, RuntimeConfig, Target
from proxy.sse import SSEDecoder, SSEEvent
from proxy.streaming import is_event_stream
from proxy.upstream import Upstream
from proxy.upstream_response import UpstreamResponse
from proxy.waits import WaitTimer

_WHOLE_BODY_LIMIT = 8 * 1024 * 1024
#: What a compressed error body may inflate to for the classifier: error bodies are small.
_ERROR_BODY_LIMIT = 64 * 1024
_rng = random.Random()


class Ready(msgspec.Struct):
    """A committed attempt: relay `preface` (held-back stream bytes) or `body`, then the rest."""

    target: Target
    request: UpstreamRequest
    response: UpstreamResponse
    attempt: AttemptRecord
    #: The target's in-flight slot, held until the relay ends.
    slot: Slot
    preface: bytes = b""
    body: bytes | None = None


class Failed(msgspec.Struct):
    """A failed attempt; `response`+`body` are relayed verbatim if it is the last word."""

    target: Target
    attempt: AttemptRecord
    verdict: Verdict
    response: UpstreamResponse | None = None
    body: bytes | None = None
    error: SpangateError | None = None

    def discard(self) -> None:
        if self.response is not None:
            self.response.release()


class _Context:
    """Everything one request's attempts share."""

    def __init__(
        self,
        upstream: Upstream,
        telemetry: Telemetry,
        health: HealthRegistry,
        record: RequestRecord,
        incoming: Incoming,
        deadline: float,
    ) -> None:
        self.upstream = upstream
        self.telemetry = telemetry
        self.health = health
        self.record = record
        self.incoming = incoming
        self.deadline = deadline

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def health_of(self, route: Route, target: Target) -> TargetHealth:
        # Pass-through traffic has no circuit to report (routing._PASSTHROUGH_CIRCUIT).
        return self.health.get(target.label, route.circuit, listed=not target.passthrough)


async def run(
    upstream: Upstream,
    telemetry: Telemetry,
    health: HealthRegistry,
    runtime: RuntimeConfig,
    record: RequestRecord,
    incoming: Incoming,
    plan: RoutePlan,
) -> Ready | Failed:
    """Serve `plan`, then its fallbacks; return the committed attempt or the last failure."""
    ctx = _Context(
        upstream, telemetry, health, record, incoming,
        time.monotonic() + plan.route.retry.deadline_s,
    )  # fmt: skip
    queue, seen = [plan.route], {plan.route.alias}
    last: Failed | None = None
    for route in _drain(queue):
        try:
            result = await _serve_route(ctx, route)
        except BaseException:
            # The request is gone: a kept failure may still hold an unread stream.
            if last is not None:
                last.discard()
            raise
        if isinstance(result, Ready):
            if route is not plan.route:
                record.fallback = route.alias
            if last is not None:
                last.discard()
            return result
        if result is not None:
            if last is not None:
                last.discard()
            last = result
        for name in _next_aliases(route, last):
            if name not in seen and name in runtime.routes and ctx.remaining() > 0:
                seen.add(name)
                queue.append(runtime.routes[name])
    if last is None:
        raise Unavailable(
            "every target of this model is unavailable (circuit open or at its in-flight "
            "limit); retry shortly, or see GET /spangate/status",
            code="circuits_open",
            retry_after_s=_reopens_in(ctx, queue),
        )
    return last


def _reopens_in(ctx: _Context, routes: list[Route]) -> int:
    """Whole seconds (rounded up, at least 1) until the first circuit among `routes`
    half-opens: a Retry-After that keeps SDKs from retrying into open circuits at once."""
    now = time.monotonic()
    soonest = min(
        (
            ctx.health_of(route, target).reopens_in(now)
            for route in routes
            for target in route.targets
        ),
        default=0.0,
    )
    return max(math.ceil(soonest), 1)


def _drain(queue: list[Route]) -> Iterator[Route]:
    index = 0
    while index < len(queue):
        yield queue[index]
        index += 1


def _next_aliases(route: Route, last: Failed | None) -> tuple[str, ...]:
    if last is None:  # nothing could even be tried: every circuit open
        return route.fallbacks
    if last.verdict.context_exceeded:
        return route.context_fallbacks
    if last.verdict.cls in route.retry.next_target:
        return route.fallbacks
    return ()


# --- one route ----------------------------------------------------------------
async def _serve_route(ctx: _Context, route: Route) -> Ready | Failed | None:
    retry = route.retry
    budget = retry.max_attempts or len(route.targets) * (
        1 + (retry.same_target_max if retry.same_target else 0)
    )
    candidates = iter(_ordered(ctx, route))
    last: Failed | None = None
    while budget > 0 and ctx.remaining() > 0:
        claimed = _next_available(ctx, route, candidates)
        if claimed is None:
            break
        target, slot = claimed
        try:
            result, budget = await _serve_target(ctx, route, target, slot, candidates, budget)
        except BaseException:
            if last is not None:
                last.discard()
            raise
        if isinstance(result, Ready):
            if last is not None:
                last.discard()
            return result
        if last is not None:
            last.discard()
        last = result
        if result.verdict.cls not in retry.next_target:
            break
    return last


async def _serve_target(
    ctx: _Context,
    route: Route,
    target: Target,
    slot: Slot,
    candidates: Iterator[Target],
    budget: int,
) -> tuple[Ready | Failed, int]:
    """Attempts on one target (retries included), hedged when the route says so; `slot`
    was claimed for the first of them."""
    retry, tries, backoff = route.retry, 0, 0.0
    while True:
        result, used = await _maybe_hedged(ctx, route, target, slot, candidates, backoff)
        budget -= used
        if isinstance(result, Ready) or budget <= 0:
            return result, budget
        wait = _same_target_wait(retry, result.verdict, tries, ctx.remaining())
        if wait is None:
            return result, budget
        result.discard()
        await asyncio.sleep(wait)
        tries, backoff = tries + 1, wait
        # A same-target retry goes without asking the circuit, as it always has.
        slot = ctx.health_of(route, target).start()


def _same_target_wait(
    retry: RetryConfig, verdict: Verdict, tries: int, remaining: float
) -> float | None:
    """Seconds to wait before retrying the same target, or None to stop retrying it."""
    if verdict.cls not in retry.same_target or tries >= retry.same_target_max:
        return None
    if verdict.retry_after_s is not None:
        # Honour the provider's Retry-After only when it fits in the deadline.
        return verdict.retry_after_s if verdict.retry_after_s < remaining else None
    backoff = retry.backoff
    ceiling = min(backoff.max_s, backoff.initial_s * backoff.multiplier**tries)
    wait = _rng.uniform(0, ceiling)  # full jitter
    return wait if wait < remaining else None


def _ordered(ctx: _Context, route: Route) -> list[Target]:
    if len(route.targets) == 1:  # the common route: nothing to order, no stats to read
        return list(route.targets)
    now = time.monotonic()
    stats = [_stats(ctx.health_of(route, t), t) for t in route.targets]
    turn = ctx.health.next_turn(route.alias)
    return [route.targets[i] for i in strategies.order(route.strategy, stats, _rng, turn, now)]


def _stats(health: TargetHealth, target: Target) -> strategies.TargetStats:
    return strategies.TargetStats(
        target.weight, health.inflight, health.ewma_first_byte_s, health.last_observed, target.cost
    )


def _next_available(
    ctx: _Context, route: Route, candidates: Iterator[Target]
) -> tuple[Target, Slot] | None:
    """The next candidate that may take a request, with the slot claimed on it at once:
    a check now and a claim a loop turn later (when a hedged attempt's task starts) would
    let concurrent requests past max_inflight or a half-open circuit's single probe."""
    now = time.monotonic()
    for target in candidates:
        health = ctx.health_of(route, target)
        if target.max_inflight is not None and health.inflight >= target.max_inflight:
            continue
        slot = health.claim(now)
        if slot is not None:
            return target, slot
    return None


# --- hedging --------------------------------------------------------------------
class _Launch(NamedTuple):
    """An attempt running in a task of its own. Its record and slot exist from the
    launch, so whoever cancels it can say why it ended and give back what it held."""

    task: asyncio.Future[Ready | Failed]
    attempt: AttemptRecord
    slot: Slot


async def _maybe_hedged(
    ctx: _Context,
    route: Route,
    target: Target,
    slot: Slot,
    candidates: Iterator[Target],
    backoff: float,
) -> tuple[Ready | Failed, int]:
    threshold = _hedge_threshold(ctx, route, target)
    if threshold is None:
        return await _attempt(ctx, route, target, slot, backoff), 1
    primary = _launch(ctx, route, target, slot, backoff, "primary")
    second = None
    try:
        done, _ = await asyncio.wait({primary.task}, timeout=threshold)
        if not done:
            second = _next_available(ctx, route, candidates)
            if second is None:  # no target to hedge with: wait the primary out
                await asyncio.wait({primary.task})
    except asyncio.CancelledError:
        # asyncio.wait does not cancel what it waits for: the client left, so must we.
        await _give_up([primary], lost=False)
        raise
    if second is None:
        return primary.task.result(), 1
    ctx.record.hedged = True
    try:
        hedge = _launch(ctx, route, *second, 0.0, "hedge")
    except BaseException:
        # The hedge could not be built (a body it would have to rewrite is ambiguous):
        # the request fails, and the primary, left running, would keep its slot (a
        # half-open circuit's probe, perhaps) for good.
        await _give_up([primary], lost=False, why="cancelled")
        raise
    return await _race([primary, hedge]), 2


def _launch(
    ctx: _Context, route: Route, target: Target, slot: Slot, backoff: float, role: str
) -> _Launch:
    request, attempt = _prepare(ctx, route, target, slot, backoff, role)
    task = asyncio.ensure_future(_run(ctx, target, request, attempt, slot))
    return _Launch(task, attempt, slot)


def _hedge_threshold(ctx: _Context, route: Route, target: Target) -> float | None:
    hedge = route.hedge
    if hedge is None:
        return None
    health = ctx.health_of(route, target)
    if hedge.percentile is not None and len(health.first_byte_samples) >= hedge.min_samples:
        return health.percentile(hedge.percentile)
    return hedge.after_s


async def _race(launches: list[_Launch]) -> Ready | Failed:
    """First attempt to commit wins; the others lose the race and are cancelled (their
    upstream closed). If the request itself is cancelled (the client left), every racer
    ends as a client disconnect: nobody lost a race."""
    pending = {launch.task: launch for launch in launches}
    failures: list[Failed] = []
    try:
        winner = await _first_ready(pending, failures)
    except BaseException:
        for failure in failures:
            failure.discard()
        await _give_up(list(pending.values()), lost=False)
        raise
    if winner is None:
        for failure in failures[:-1]:
            failure.discard()
        return failures[-1]
    for failure in failures:  # a racer that failed before the winner committed
        failure.discard()
    try:
        await _give_up(list(pending.values()), lost=True)
    except BaseException:
        _drop(winner)  # the client left while the losers were being closed
        raise
    return winner


async def _first_ready(
    pending: dict[asyncio.Future[Ready | Failed], _Launch], failures: list[Failed]
) -> Ready | None:
    """Wait for the first racer to commit (None: all failed); removes ended racers from
    `pending` and adds the failed ones to `failures`."""
    while pending:
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        results = [pending.pop(task).task.result() for task in done]
        ready = [r for r in results if isinstance(r, Ready)]
        failures += [r for r in results if isinstance(r, Failed)]
        if ready:
            for extra in ready[1:]:  # committed in the same wakeup: too late, close it
                _lose(extra)
            ready[0].attempt.hedge_outcome = "won"
            return ready[0]
    return None


async def _give_up(
    launches: list[_Launch], *, lost: bool, why: str = "client_disconnected"
) -> None:
    """Cancel attempts whose results are no longer wanted and wait for them to end. Each
    is settled as it ends (a done callback, so even if this wait is itself cancelled).
    `lost`: they lost a hedge race; otherwise the request they served ended (`why`: the
    client left, or the request failed)."""
    if not launches:
        return
    for launch in launches:
        launch.task.add_done_callback(functools.partial(_settle, launch, lost, why))
        launch.task.cancel()
    await asyncio.wait([launch.task for launch in launches])


def _settle(launch: _Launch, lost: bool, why: str, task: asyncio.Future[Ready | Failed]) -> None:
    """A given-up attempt has ended: record why, and give back what it still holds — a
    response it committed in the same step the cancel reached it, and its slot (which
    its own cleanup gave back unless the task was cancelled before its first step)."""
    if not task.cancelled() and task.exception() is not None:
        return  # a bug: the attempt recorded it and gave its slot back itself
    result = None if task.cancelled() else task.result()
    if isinstance(result, Failed):
        result.discard()  # it failed on its own before the cancel: that verdict stands
        return
    if isinstance(result, Ready):
        result.response.close()
    launch.slot.release()
    if lost:
        _mark_lost(launch.attempt)
    else:
        launch.attempt.fail(why)


def _lose(result: Ready) -> None:
    """A committed attempt that lost the race: close it and give its slot back."""
    result.response.close()
    result.slot.release()
    _mark_lost(result.attempt)


def _drop(result: Ready) -> None:
    """A committed attempt whose request was cancelled before it could be relayed."""
    result.response.close()
    result.slot.release()
    result.attempt.fail("client_disconnected")


def _mark_lost(attempt: AttemptRecord) -> None:
    attempt.fail("hedge_lost")
    attempt.hedge_outcome = "lost"


# --- one attempt ----------------------------------------------------------------
async def _attempt(
    ctx: _Context,
    route: Route,
    target: Target,
    slot: Slot,
    backoff: float,
    role: str = "primary",
) -> Ready | Failed:
    request, attempt = _prepare(ctx, route, target, slot, backoff, role)
    return await _run(ctx, target, request, attempt, slot)


async def _run(
    ctx: _Context, target: Target, request: UpstreamRequest, attempt: AttemptRecord, slot: Slot
) -> Ready | Failed:
    try:
        return await _exchange(ctx, target, request, attempt, slot)
    except asyncio.CancelledError:
        # The request was cancelled: its client left. (A hedge race that cancels its
        # loser says so itself, in _settle.)
        attempt.fail("client_disconnected")
        slot.release()
        raise
    except BaseException:
        # A bug, reported as a 500 by front_door; the target must not keep the slot
        # (or a half-open circuit its probe) for good.
        attempt.fail("spangate_error")
        slot.release()
        raise


def _prepare(
    ctx: _Context, route: Route, target: Target, slot: Slot, backoff: float, role: str
) -> tuple[UpstreamRequest, AttemptRecord]:
    """The attempt's request and record. A request that cannot be built (an ambiguous
    body, a bug in an adapter) gives `slot` back: it must not keep it, or the probe."""
    provider = target.provider
    try:
        request = provider.adapter.build_request(ctx.incoming, provider.settings, target.model)
        attempt = _record(ctx, target, backoff, role if route.hedge is not None else None)
        _propagate(ctx.telemetry, ctx.record, attempt, request, provider.propagate_trace)
    except BaseException:
        slot.release()
        raise
    attempt.usage_injected = request.usage_injected
    return request, attempt


async def _exchange(
    ctx: _Context,
    target: Target,
    request: UpstreamRequest,
    attempt: AttemptRecord,
    slot: Slot,
) -> Ready | Failed:
    timeouts = _within(target.effective_timeouts(), ctx.remaining())
    waits = WaitTimer()  # one timer for the attempt's waits: headers, then body
    try:
        try:
            response = await ctx.upstream.send(request, timeouts, target.provider.name, waits)
        except SpangateError as exc:
            return _failed(target, attempt, slot, classify_exception(exc.kind), error=exc)
        attempt.on_response(response.status, response.headers)
        try:
            return await _commit(target, request, response, attempt, slot, timeouts, waits)
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            response.close()
            kind = "upstream_timeout" if isinstance(exc, TimeoutError) else "stream_interrupted"
            error = UpstreamTimeout(_timeout_text(target)) if kind == "upstream_timeout" else None
            return _failed(target, attempt, slot, classify_exception(kind), error=error)
        except BaseException:
            response.close()
            raise
    finally:
        waits.close()


def _within(timeouts: Timeouts, remaining: float) -> Timeouts:
    """The target's timeouts, the wait for the first byte cut to the retry deadline."""
    if timeouts.first_byte_s <= remaining:
        return timeouts
    return msgspec.structs.replace(timeouts, first_byte_s=max(remaining, 0.001))


async def _commit(
    target: Target,
    request: UpstreamRequest,
    response: UpstreamResponse,
    attempt: AttemptRecord,
    slot: Slot,
    timeouts: Timeouts,
    waits: WaitTimer,
) -> Ready | Failed:
    if response.status >= 400:
        with waits.limit(timeouts.idle_s):
            error_body = await response.read()
        attempt.on_body(error_body)
        verdict = classify_response(
            response.status,
            response.headers,
            _readable(response, error_body),
            client_key=target.provider.settings.client_key,
        )
        return _failed(target, attempt, slot, verdict, response=response, body=error_body)
    bodiless = _bodiless(request.method, response.status)
    if not bodiless and is_event_stream(response) and "Content-Encoding" not in response.headers:
        return await _commit_stream(target, request, response, attempt, slot, timeouts, waits)
    body: bytes | None = None
    if bodiless or _read_before_commit(response):
        with waits.limit(timeouts.idle_s):
            body = await response.read()
        if not _valid_json(response, body):
            attempt.on_body(body)
            verdict = classify_exception("malformed_response")
            return _failed(target, attempt, slot, verdict, response=response, body=body)
        slot.succeeded(time.monotonic(), _first_byte_s(attempt))
    else:
        slot.committed(time.monotonic(), _first_byte_s(attempt))  # the rest may yet break
    return Ready(target, request, response, attempt, slot, body=body)


async def _commit_stream(
    target: Target,
    request: UpstreamRequest,
    response: UpstreamResponse,
    attempt: AttemptRecord,
    slot: Slot,
    timeouts: Timeouts,
    waits: WaitTimer,
) -> Ready | Failed:
    adapter = target.provider.adapter
    decoder, preface = SSEDecoder(), b""
    with waits.limit(timeouts.first_byte_s):
        while chunk := await response.content.readany():
            preface += chunk
            for event in decoder.events(chunk):
                kind = adapter.stream_event_kind(event)
                if kind == "error":
                    attempt.on_events(preface)
                    attempt.on_end("stream_error")
                    verdict = classify_stream_error(
                        event.data.encode(), client_key=target.provider.settings.client_key
                    )
                    return _failed(target, attempt, slot, verdict, response=response, body=preface)
                if kind == "content":
                    slot.committed(time.monotonic(), _first_byte_s(attempt))
                    return Ready(target, request, response, attempt, slot, preface=preface)
    if adapter.stream_finished(preface):
        # A complete stream without content (e.g. max_tokens 0): relay it as it is.
        slot.succeeded(time.monotonic(), _first_byte_s(attempt))
        return Ready(target, request, response, attempt, slot, preface=preface)
    # The upstream hung up before any content and before its terminal event.
    attempt.on_events(preface)
    attempt.on_end("stream_interrupted")
    response.close()
    error = UpstreamUnreachable(
        f"provider {target.provider.name!r} ended the stream before sending any content"
    )
    return _failed(target, attempt, slot, classify_exception("stream_interrupted"), error=error)


def relayed(ready: Ready) -> None:
    """The relay of a committed attempt ended (or the client left): free its slot, with the
    verdict a streamed response could not have at its commit."""
    verdict = relay_verdict(ready.attempt, ready.target)
    now = time.monotonic()
    if verdict == "ok":
        ready.slot.completed(now)
    elif verdict is not None:
        ready.slot.failed(now, verdict, None)
    else:
        ready.slot.release()


def relay_verdict(attempt: AttemptRecord, target: Target) -> FailureClass | Literal["ok"] | None:
    """How a relay ended, for the circuit: "ok" (whole), the class of an upstream fault
    after the commit (reset, idle or total timeout, truncation, an in-band error event),
    or None when the client
    left first — which says nothing about the target. An in-band error event is judged
    by what it says (an invalid_request_error is the caller's, not the target's)."""
    outcome = attempt.stream_outcome
    if outcome == "stream_error" and attempt.error_block is not None:
        return classify_stream_end(
            attempt.error_block,
            _is_error_event(target),
            client_key=target.provider.settings.client_key,
        ).cls
    if outcome in _BROKEN_AFTER_COMMIT:
        return classify_exception(outcome).cls
    if attempt.end_ns and attempt.error_type is None:
        return "ok"
    return None


def _is_error_event(target: Target) -> Callable[[SSEEvent], bool]:
    kind = target.provider.adapter.stream_event_kind
    return lambda event: kind(event) == "error"


#: Relay outcomes (proxy/streaming.py) that are the upstream's doing.
_BROKEN_AFTER_COMMIT = frozenset(
    {
        "stream_interrupted",
        "stream_idle_timeout",
        "stream_total_timeout",
        "stream_truncated",
        "stream_error",
    }
)


def _bodiless(method: str, status: int) -> bool:
    """An answer that ends at its head (RFC 9112 §6.3), whatever length or type it names:
    read at once (empty), it goes to the client whole, the provider's Content-Length
    kept. An event stream's commit would wait for events that never come."""
    return method == "HEAD" or status in (204, 304)


def _read_before_commit(response: UpstreamResponse) -> bool:
    """Bodies read (and checked) before anything reaches the client: sized ones up to
    the limit, and JSON API answers of unknown length (chunked), which are small."""
    length = response.content_length
    if length is not None:
        return length <= _WHOLE_BODY_LIMIT
    return response.content_type == "application/json"


def _readable(response: UpstreamResponse, body: bytes) -> bytes:
    """An error body as the classifier reads it: a compressed one inflated (a copy; the
    client and telemetry get the bytes as sent). One that does not inflate, or is or
    inflates past _ERROR_BODY_LIMIT, is classified as sent, by its status."""
    encoding = codings.content_coding(response.headers)
    if encoding is None or len(body) > _ERROR_BODY_LIMIT:
        # Compressed, an error this long would inflate past the limit anyway.
        return body
    try:
        return codings.inflate(body, encoding, _ERROR_BODY_LIMIT)
    except codings.Undecodable:
        return body


class _AnyJSON(msgspec.Struct):
    pass


_validate = msgspec.json.Decoder(_AnyJSON | list[object]).decode


def _valid_json(response: UpstreamResponse, body: bytes) -> bool:
    """A 2xx JSON body that does not parse is a provider fault worth another target."""
    encoded = "Content-Encoding" in response.headers  # compressed bytes are not JSON text
    if response.content_type != "application/json" or not body or encoded:
        return True
    try:
        _validate(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return True


def _failed(
    target: Target,
    attempt: AttemptRecord,
    slot: Slot,
    verdict: Verdict,
    *,
    response: UpstreamResponse | None = None,
    body: bytes | None = None,
    error: SpangateError | None = None,
) -> Failed:
    attempt.failure_class = verdict.cls
    attempt.fail(verdict.reason if error is None else error.kind)
    slot.failed(time.monotonic(), verdict.cls, verdict.retry_after_s)
    return Failed(target, attempt, verdict, response, body, error)


def _first_byte_s(attempt: AttemptRecord) -> float | None:
    if not attempt.headers_ns:
        return None
    return (attempt.headers_ns - attempt.start_ns) / 1e9


def _timeout_text(target: Target) -> str:
    return (
        f"provider {target.provider.name!r} sent no content within the first-byte timeout "
        f"or the request deadline (timeouts.first_byte_s / retry.deadline_s)"
    )


def _record(ctx: _Context, target: Target, backoff: float, role: str | None) -> AttemptRecord:
    provider = target.provider
    incoming = ctx.incoming
    attempt = AttemptRecord(
        len(ctx.record.attempts) + 1,
        new_span_id(),
        provider=provider.name,
        system=provider.system,
        host=provider.host,
        port=provider.port,
        target=target.label,
        model=target.model or incoming.fields.model or incoming.endpoint.deployment,
    )
    attempt.backoff_s = backoff
    attempt.hedge_role = role
    ctx.record.attempts.append(attempt)
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
    if not telemetry.exports_spans:
        # No span of ours will exist to be a parent: the client's own context passes
        # through untouched, so a tracing provider joins the caller's trace directly
        # (and starts its own when the caller sent none).
        return
    headers["traceparent"] = telemetry.traceparent(record, attempt)
    if record.parent is None or not record.parent.tracestate:
        headers.popall("tracestate", None)
