"""HTTP entry points: the proxy handler, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import os
import time

import msgspec
import structlog
from aiohttp import HttpVersion11, web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST

from instrumentation.records import AttemptRecord, RequestRecord
from instrumentation.setup import TelemetryUnavailable
from proxy import body as bodylib
from proxy import expect, failover
from proxy.appkeys import HEALTH, RUNTIME, STATE, TELEMETRY, UPSTREAM
from proxy.endpoints import Endpoint, Wire, classify
from proxy.errors import (
    BadRequest,
    BodyTooLarge,
    ErrorFormat,
    MethodNotAllowed,
    NotFound,
    ShuttingDown,
    SpangateError,
    UnreadableBody,
    UpstreamUnreachable,
    error_body,
)
from proxy.failover import Failed
from proxy.providers.base import Incoming
from proxy.routing import Overrides, resolve
from proxy.runtime import RuntimeConfig, describe
from proxy.streaming import relay, whole

log = structlog.get_logger("spangate.proxy")


def error_response(fmt: ErrorFormat, err: SpangateError) -> web.Response:
    response = web.Response(
        status=err.status, body=error_body(fmt, err), content_type="application/json"
    )
    if err.closes:
        response.force_close()
    if err.retry_after_s is not None:
        response.headers["Retry-After"] = str(err.retry_after_s)
    return response


def guess_format(request: web.Request) -> Wire:
    return "anthropic" if "anthropic-version" in request.headers else "openai"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.ready and not state.draining:
        return web.json_response({"status": "ready"})
    reason = "draining" if state.draining else "starting"
    return web.json_response({"status": reason}, status=503)


async def proxy(request: web.Request) -> web.StreamResponse:
    telemetry = request.app[TELEMETRY]
    record = telemetry.begin(request.method, request.path, request.headers, request.remote)
    try:
        response = await _proxy(request, record)
        record.status = response.status
        return response
    except asyncio.CancelledError:
        if not any(a.stream_outcome == "completed" for a in record.attempts):
            record.error_type = record.error_type or _canceller(request)
        raise
    finally:
        telemetry.finish(record)


async def _proxy(request: web.Request, record: RequestRecord) -> web.StreamResponse:
    endpoint = _endpoint(request)
    # Path and query go upstream byte for byte as the client sent them: yarl's forms
    # (even the "raw" query string) undo escapes such as %2F and %7e.
    raw_path, _, raw_query = request.raw_path.partition("?")
    if endpoint is not None and endpoint.deployment is None:
        endpoint = _as_sent(endpoint, raw_path)
    fmt = _format(request, endpoint)
    try:
        if endpoint is None:
            record.route = None
            raise _not_served(request)
        _describe(record, endpoint)
        return await _forward(request, endpoint, raw_query, record)
    except SpangateError as err:
        record.error_type, record.error_message = err.kind, err.message
        return error_response(fmt, err)


def wire_of(request: web.Request) -> ErrorFormat:
    """The format of errors spangate makes for `request`: its endpoint's, else a guess."""
    return _format(request, _endpoint(request))


def _endpoint(request: web.Request) -> Endpoint | None:
    return classify(request.method, request.path, "anthropic-version" in request.headers)


def _format(request: web.Request, endpoint: Endpoint | None) -> ErrorFormat:
    return endpoint.wire if endpoint is not None else guess_format(request)


def _canceller(request: web.Request) -> str:
    """Who cancelled a request: its client, or spangate's drain running out."""
    return "shutdown" if request.app[STATE].stopping else "client_disconnected"


def _describe(record: RequestRecord, endpoint: Endpoint) -> None:
    record.api, record.operation, record.wire = endpoint.api, endpoint.operation, endpoint.wire
    if endpoint.api == "other":
        # Pass-through paths carry ids (/v1/files/file-abc): no low-cardinality
        # template is known, so http.route is left out (HTTP semconv).
        record.route = None
    elif endpoint.deployment is not None:
        record.route = f"/openai/deployments/{{deployment}}/{endpoint.path}"


def _not_served(request: web.Request) -> SpangateError:
    return NotFound(
        f"spangate does not serve {request.method} {request.path}: it proxies the OpenAI "
        "API under /v1/, Azure OpenAI under /openai/deployments/ and the Anthropic API "
        "under /v1/messages; point your SDK's base URL at spangate",
        code="unknown_path",
    )


def _as_sent(endpoint: Endpoint, raw_path: str) -> Endpoint:
    """The endpoint with its path as the client encoded it, for forwarding: matched
    decoded, but an escaped `/` or `%7e` goes upstream unchanged. (Azure deployment
    paths are rebuilt by their adapter from the decoded deployment name.)"""
    if raw_path == endpoint.path:
        return endpoint
    return msgspec.structs.replace(endpoint, path=raw_path)


async def _forward(
    request: web.Request, endpoint: Endpoint, raw_query: str, record: RequestRecord
) -> web.StreamResponse:
    app = request.app
    runtime = app[RUNTIME]
    # Up to the commit point (written inline: a coroutine of its own would cost every
    # request a call, and a try block costs nothing until it catches).
    try:
        body = await _read_body(request)
        fields = _fields(request.method, endpoint, body)
        record.body, record.stream = body, bool(fields.stream)
        record.request_model = fields.model or endpoint.deployment
        incoming = Incoming(request.method, endpoint, raw_query, request.headers, body, fields)
        plan = resolve(runtime, endpoint, fields.model, _overrides(request, runtime))
        record.alias = plan.alias
        result = await failover.run(
            app[UPSTREAM], app[TELEMETRY], app[HEALTH], runtime, record, incoming, plan
        )
    except asyncio.CancelledError:
        if not app[STATE].stopping:
            raise  # the client left: nobody to answer
        raise _shutting_down(record) from None
    extra = (
        _decision_headers(record, result.attempt)
        if runtime.config.server.response_headers
        else None
    )
    if isinstance(result, Failed):
        return _final_failure(result, record, extra)
    record.status = result.response.status
    adapter = result.target.provider.adapter
    try:
        return await relay(
            request,
            result.response,
            errors=endpoint.stream_errors,
            idle_s=result.target.effective_timeouts().idle_s,
            tap=result.attempt,
            transform=adapter.stream_transform(result.request),
            # Only the APIs whose terminal event is known can tell a cut stream from a
            # whole one; a pass-through path's stream ends when it ends.
            finished=adapter.stream_finished if endpoint.api != "other" else None,
            preface=result.preface,
            body=result.body,
            extra=extra,
        )
    finally:
        # Returns a fully read connection to the pool, closes an unfinished one
        # (which is how a client disconnect cancels the upstream request).
        result.response.release()
        failover.relayed(result)  # a stream's verdict for the circuit is known only now
        _overhead(record, result.attempt)


def _shutting_down(record: RequestRecord) -> ShuttingDown:
    """The drain ran out while the request was still before its commit point: no byte of
    an answer has left, so the client, still waiting, gets a 503 to retry instead of a
    dropped connection."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()  # the cancellation is answered here, not passed on
    for attempt in record.attempts:
        # The attempts took the cancellation for their client leaving; the drain did it.
        if attempt.error_type == "client_disconnected":
            attempt.error_type = "shutdown"
    return ShuttingDown(
        "spangate is shutting down and its drain timeout ran out before this request was "
        "answered; retry it",
        code="shutting_down",
    )


def _final_failure(
    result: Failed, record: RequestRecord, extra: dict[str, str] | None
) -> web.StreamResponse:
    """The last word was a failure: relay the provider's answer verbatim, or say what broke."""
    if result.response is None:
        raise result.error or UpstreamUnreachable(
            f"provider {result.target.provider.name!r} failed ({result.verdict.reason})"
        )
    try:
        return whole(result.response, result.body or b"", extra)
    finally:
        result.response.release()
        _overhead(record, result.attempt)


def _overrides(request: web.Request, runtime: RuntimeConfig) -> Overrides:
    if not runtime.config.server.route_headers:
        return Overrides()
    headers = request.headers
    return Overrides(headers.get("x-spangate-route"), headers.get("x-spangate-target"))


def _decision_headers(record: RequestRecord, final: AttemptRecord) -> dict[str, str]:
    headers = {
        "x-spangate-attempts": str(len(record.attempts)),
        "x-spangate-target": final.target,
    }
    if record.fallback:
        headers["x-spangate-fallback"] = record.fallback
    return headers


def _overhead(record: RequestRecord, attempt: AttemptRecord) -> None:
    """Time in spangate itself: before the first send, and after the upstream finished."""
    first = record.attempts[0].start_ns
    tail = max(time.monotonic_ns() - (attempt.end_ns or time.monotonic_ns()), 0)
    record.overhead_ns = (first - record.start_ns) + tail


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """`Expect:` on a forwarded request (aiohttp asks before any middleware or handler):
    100-continue gets its 100 Continue, except that a body over server.max_body_bytes is
    not asked for (the client waits, and the 413 that _read_body makes of its
    Content-Length is the answer: the body is never sent); any other expectation gets a
    417 in the client's format. HTTP/1.0 has no 100 Continue: there it is ignored."""
    if request.version != HttpVersion11:
        return None
    value = request.headers.get("Expect", "")
    limit = request.app[RUNTIME].config.server.max_body_bytes
    answer = expect.decide(value, request.content_length, limit)
    if answer == "refuse":
        return error_response(wire_of(request), expect.unsupported(value))
    transport = request.transport
    if answer == "continue" and transport is not None:  # None: the client already left
        # On the socket, as aiohttp's docs do it: an interim answer is not the response,
        # whose writer must still count nothing sent.
        transport.write(expect.CONTINUE)
    return None


async def _read_body(request: web.Request) -> bytes:
    if len(request.headers.getall("Content-Encoding", ())) > 1:
        # Which line aiohttp undid depends on its parser (C: the last, Python: the
        # first): the body spangate would forward could carry the wrong label.
        raise UnreadableBody(
            "the request has more than one Content-Encoding header; send one (gzip, "
            "deflate, br or zstd) or none",
            code="invalid_content_encoding",
        )
    limit = request.app[RUNTIME].config.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request.content_length, limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(None, limit) from None
    except web.RequestPayloadError:
        raise _unreadable(request) from None


def _unreadable(request: web.Request) -> UnreadableBody:
    """aiohttp could not read the body: a coding it undoes (gzip, deflate, br, zstd) that
    does not decode, or broken chunked framing."""
    if "Content-Encoding" in request.headers:
        return UnreadableBody(
            "the request body does not decode as its Content-Encoding says; send it "
            "uncompressed, or gzip, deflate, br or zstd compressed and labelled so",
            code="invalid_content_encoding",
        )
    return UnreadableBody(
        "the request body could not be read: it broke off or its chunked framing is "
        "broken; send it again",
        code="invalid_body",
    )


def _too_large(size: int | None, limit: int) -> BodyTooLarge:
    got = f" ({size} bytes)" if size is not None else ""
    return BodyTooLarge(
        f"request body is larger than the {limit}-byte limit{got}; send a smaller body or "
        "raise server.max_body_bytes in the spangate config",
        code="body_too_large",
    )


def _fields(method: str, endpoint: Endpoint, body: bytes) -> bodylib.RequestFields:
    if method != "POST" or not endpoint.reads_body:
        return bodylib.RequestFields()
    if endpoint.deployment is not None:
        return _deployment_fields(body)
    if not body:
        raise BadRequest("request body is empty: send a JSON object", code="invalid_json")
    try:
        fields = bodylib.decode_fields(body)
    except bodylib.BodyError as exc:
        raise BadRequest(str(exc), code="invalid_json") from None
    if not fields.model:
        raise BadRequest(
            "missing required parameter 'model': name the model (or a spangate model alias)",
            param="model",
            code="missing_model",
        )
    return fields


def _deployment_fields(body: bytes) -> bodylib.RequestFields:
    """An Azure deployment body's fields (`stream`, `stream_options`), for the stream
    handling and telemetry every inference request gets. The URL's deployment is the
    model, so a body `model` (which Azure ignores) is not routed on, and a body that does
    not decode is no error of spangate's: it goes as sent, the provider's to refuse."""
    try:
        fields = bodylib.decode_fields(body)
    except bodylib.BodyError:
        return bodylib.RequestFields()
    fields.model = None
    return fields


@web.middleware
async def front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request: forward-proxy requests refused (CONNECT reaches no route, so this
    is a middleware), in-flight counted (for draining), and whatever goes wrong inside
    answered with a clean error in the client's format. One middleware, not one for
    each: aiohttp runs its own with any, and four of them cost ~3 % of spangate's CPU
    per request, measured in instructions."""
    state, counted = request.app[STATE], False
    try:
        refusal = _refusal(request)
        if refusal is not None:
            return error_response(guess_format(request), refusal)
        # Only forwarded requests: spangate's own endpoints answer at once, and a scrape
        # of /metrics on this listener read itself as a request in flight. The task is
        # the connection's, the one aiohttp cancels when the client hangs up: the drain
        # cancels it the same way when server.drain_timeout_s runs out.
        if request.match_info.handler is proxy:
            state.enter(request.task)
            counted = True
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("request.internal_error", path=request.path)
        err = SpangateError("spangate failed internally; the error is in spangate's log")
        return error_response(guess_format(request), err)
    finally:
        if counted:
            state.leave(request.task)


def _refusal(request: web.Request) -> SpangateError | None:
    """spangate is a reverse proxy: it never lets a request pick an arbitrary upstream."""
    if request.method == "CONNECT":
        return MethodNotAllowed(
            "spangate is not a forward proxy: CONNECT is refused", code="connect_refused"
        )
    if not request.raw_path.startswith("/"):
        return BadRequest(
            "spangate is not a forward proxy: send the request to a path such as "
            "/v1/chat/completions, not an absolute URL",
            code="absolute_uri_refused",
        )
    return None


async def metrics(request: web.Request) -> web.Response:
    """Prometheus scrape endpoint (collection runs off the event loop)."""
    telemetry = request.app[TELEMETRY]
    loop = asyncio.get_running_loop()
    try:
        text = await loop.run_in_executor(None, telemetry.prometheus_text)
    except TelemetryUnavailable as exc:
        return web.Response(status=503, text=f"metrics unavailable: {exc}; retry shortly\n")
    if text is None:
        return web.Response(status=404, text="prometheus metrics are disabled\n")
    return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def status(request: web.Request) -> web.Response:
    """Live routing state: per-target circuit, in-flight, latency EWMA, recent errors."""
    app = request.app
    # The pid says which process answered (one of several under --workers).
    body = {"pid": os.getpid(), "targets": app[HEALTH].snapshot(), "config": describe(app[RUNTIME])}
    return web.json_response(body)
