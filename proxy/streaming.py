"""Relay an upstream response to the client: JSON bodies whole, SSE streams as they arrive.

Streams are flushed on event boundaries: bytes are unchanged, but the client
never holds half an event, so when the upstream breaks after the commit point
spangate can end the stream with a well-formed error event in the client's
format instead of a silent truncation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from proxy.endpoints import Wire
from proxy.errors import UpstreamUnreachable
from proxy.headers import relayable
from proxy.sse import split_complete
from proxy.sse_errors import stream_error_event
from proxy.sse_transform import Transform
from proxy.upstream_response import AttemptTimeout, UpstreamResponse
from proxy.waits import WaitTimer

#: Bodies up to this size are read whole (cheaper); larger ones are streamed.
_WHOLE_BODY_LIMIT = 8 * 1024 * 1024


class Tap(Protocol):
    """What telemetry sees of a response; implementations must never raise."""

    def on_response(self, status: int, headers: CIMultiDictProxy[str]) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_events(self, block: bytes) -> None: ...
    def on_end(self, error: str | None) -> None: ...


class NullTap:
    def on_response(self, status: int, headers: CIMultiDictProxy[str]) -> None:
        pass

    def on_body(self, body: bytes) -> None:
        pass

    def on_events(self, block: bytes) -> None:
        pass

    def on_end(self, error: str | None) -> None:
        pass


def is_event_stream(response: UpstreamResponse) -> bool:
    return response.content_type == "text/event-stream"


Extra = Mapping[str, str] | None
#: Does a block of events carry the stream's terminal event?
Finished = Callable[[bytes], bool]


async def relay(
    request: web.Request,
    response: UpstreamResponse,
    *,
    wire: Wire,
    idle_s: float,
    tap: Tap,
    transform: Transform | None = None,
    finished: Finished | None = None,
    preface: bytes = b"",
    body: bytes | None = None,
    extra: Extra = None,
) -> web.StreamResponse:
    """Relay `response`; `preface` / `body` are bytes already read from it (pre-commit)."""
    if body is not None:
        tap.on_body(body)
        tap.on_end(None)
        return whole(response, body, extra)
    if is_event_stream(response) and "Content-Encoding" not in response.headers:
        return await _relay_events(
            request, response, wire=wire, idle_s=idle_s, tap=tap, transform=transform,
            finished=finished, preface=preface, extra=extra,
        )  # fmt: skip
    length = response.content_length
    if length is not None and length <= _WHOLE_BODY_LIMIT:
        return await _relay_whole(response, idle_s, tap, extra)
    return await _relay_bytes(request, response, wire, idle_s, tap, extra)


def whole(response: UpstreamResponse, body: bytes, extra: Extra) -> web.Response:
    """A response relayed in one piece: status, reason, headers and body as received."""
    headers = relayable(response.headers)
    if extra:
        headers.update(extra)
    return web.Response(status=response.status, reason=response.reason, headers=headers, body=body)


async def _relay_whole(
    response: UpstreamResponse, idle_s: float, tap: Tap, extra: Extra
) -> web.Response:
    try:
        async with asyncio.timeout(idle_s):
            body = await response.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise UpstreamUnreachable(
            f"the provider's response broke off before it was complete ({_name(exc)})"
        ) from None
    tap.on_body(body)
    tap.on_end(None)
    return whole(response, body, extra)


class _EventStream(web.StreamResponse):
    """A StreamResponse whose headers leave with its first write, not in a send of their
    own at prepare(): the relay writes the events it already holds right after, so this
    saves one loopback send per stream (aiohttp's own web.Response buffers the same way;
    were the attribute gone in a later aiohttp, headers would just go out first again)."""

    _send_headers_immediately = False


async def _start(
    request: web.Request,
    response: UpstreamResponse,
    extra: Extra,
    kind: type[web.StreamResponse] = web.StreamResponse,
) -> web.StreamResponse:
    headers = relayable(response.headers)
    if extra:
        headers.update(extra)
    out = kind(status=response.status, reason=response.reason, headers=headers)
    await out.prepare(request)
    return out


async def _relay_events(
    request: web.Request,
    response: UpstreamResponse,
    *,
    wire: Wire,
    idle_s: float,
    tap: Tap,
    transform: Transform | None,
    finished: Finished | None,
    preface: bytes,
    extra: Extra,
) -> web.StreamResponse:
    out = await _start(request, response, extra, _EventStream)
    pending, done = preface, False
    idle = WaitTimer()  # time spent writing to the client is not idle: each read starts it
    try:
        while True:
            cut = split_complete(pending)
            if cut:
                block, pending = pending[:cut], pending[cut:]
                tap.on_events(block)
                data = transform(block) if transform else block
                last = finished is not None and finished(block)
                if (done or last or finished is None) and not pending and _ended(response):
                    # The provider has already ended its response: the last events and the
                    # end of ours leave in one send (a send on loopback costs ~50 µs of CPU).
                    await _finish(out, tap, data)
                    return out
                await _write(out, data)
                # Only once it is written: a client gone before the terminal event got
                # an incomplete stream.
                done = done or last
            with idle.limit(idle_s):
                chunk = await response.content.readany()
            if not chunk:
                break
            pending += chunk
        if pending:
            tap.on_events(pending)
            done = done or (finished is not None and finished(pending))
            if done or finished is None:
                await _write(out, pending)
            # Otherwise half an event, and the error event below would fuse with it into
            # one the SDK cannot parse: it is dropped, so the SDK raises the error instead.
        if finished is not None and not done:
            # A clean close without the terminal event is a truncation, not a success.
            return await _interrupt(out, wire, tap, _Truncated())
        await _finish(out, tap)
    except (_ClientGone, asyncio.CancelledError) as exc:
        # An SDK may hang up right after the terminal event (openai-python does after
        # `data: [DONE]`): that stream was complete, not abandoned.
        tap.on_end(None if done else "client_disconnected")
        if isinstance(exc, asyncio.CancelledError):
            raise
        return out
    except (TimeoutError, aiohttp.ClientError) as exc:
        return await _interrupt(out, wire, tap, exc)
    finally:
        idle.close()
    return out


def _ended(response: UpstreamResponse) -> bool:
    """Everything the provider will send has been read (its end already parsed)."""
    return response.content.at_eof()


async def _relay_bytes(
    request: web.Request,
    response: UpstreamResponse,
    wire: Wire,
    idle_s: float,
    tap: Tap,
    extra: Extra,
) -> web.StreamResponse:
    """Large or compressed bodies: copied chunk by chunk, unchanged."""
    out = await _start(request, response, extra)
    idle = WaitTimer()
    try:
        while True:
            with idle.limit(idle_s):
                chunk = await response.content.readany()
            if not chunk:
                break
            await _write(out, chunk)
    except (_ClientGone, asyncio.CancelledError) as exc:
        tap.on_end("client_disconnected")
        if isinstance(exc, asyncio.CancelledError):
            raise
        return out
    except (TimeoutError, aiohttp.ClientError) as exc:
        return await _interrupt(out, wire if is_event_stream(response) else None, tap, exc)
    finally:
        idle.close()
    await _finish(out, tap)
    return out


class _ClientGone(Exception):
    pass


class _Truncated(Exception):
    """The upstream closed the stream cleanly but before its terminal event."""


async def _write(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        raise _ClientGone from None


async def _finish(out: web.StreamResponse, tap: Tap, last: bytes = b"") -> None:
    try:
        await out.write_eof(last)
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        tap.on_end("client_disconnected")
        return
    tap.on_end(None)


async def _interrupt(
    out: web.StreamResponse, wire: Wire | None, tap: Tap, exc: BaseException
) -> web.StreamResponse:
    """The upstream broke after the commit point: say so in-band, never truncate silently."""
    reason, message = _interruption(exc)
    tap.on_end(reason)
    try:
        if wire is not None:
            await out.write(stream_error_event(wire, message))
        await out.write_eof()
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        pass
    return out


def _interruption(exc: BaseException) -> tuple[str, str]:
    """(stream outcome, client-facing message) for a stream that broke after the commit."""
    if isinstance(exc, AttemptTimeout):
        return "stream_total_timeout", "the attempt ran past its overall timeout"
    if isinstance(exc, TimeoutError):
        return "stream_idle_timeout", "the provider stopped sending within the idle timeout"
    if isinstance(exc, _Truncated):
        return "stream_truncated", "the provider closed the stream before its final event"
    return "stream_interrupted", f"the provider's stream broke off ({_name(exc)})"


def _name(exc: BaseException) -> str:
    return "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
