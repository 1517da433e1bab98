"""Relay an upstream response to the client: JSON bodies whole, SSE streams as they arrive.

Streams are flushed on event boundaries: bytes are unchanged, but the client
never holds half an event, so when the upstream breaks after the commit point
spangate can end the stream with a well-formed error event in the client's
format instead of a silent truncation.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import struct
import termios
from collections.abc import Callable, Mapping
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.appkeys import STATE
from proxy.endpoints import StreamErrors
from proxy.errors import UpstreamUnreachable
from proxy.headers import relayable
from proxy.sse import StreamEnd, split_complete
from proxy.sse_errors import stream_error_event
from proxy.sse_transform import Transform
from proxy.upstream_response import AttemptTimeout, UpstreamResponse
from proxy.waits import WaitTimer

#: Bodies up to this size are read whole (cheaper); larger ones are streamed.
_WHOLE_BODY_LIMIT = 8 * 1024 * 1024
#: After a stream's terminal event, how long its close may take before spangate ends
#: the client's response itself (the client has its whole answer).
_AFTER_END_S = 1.0
#: The largest event relayed: past it, the stream ends with an error event rather than
#: hold ever more memory for an event that may never end (a base64 image is a few MB).
_MAX_EVENT = 64 * 1024 * 1024
#: Writes to a client that is behind go in slices this size (the transport's default
#: high-water mark), each limited by the idle timeout.
_SLICE = 64 * 1024


class Tap(Protocol):
    """What telemetry sees of a response; implementations must never raise."""

    def on_response(self, status: int, headers: CIMultiDictProxy[str]) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_events(self, block: bytes) -> None: ...
    def on_error_end(self, block: bytes) -> None: ...
    def on_end(self, error: str | None) -> None: ...


class NullTap:
    def on_response(self, status: int, headers: CIMultiDictProxy[str]) -> None:
        pass

    def on_body(self, body: bytes) -> None:
        pass

    def on_events(self, block: bytes) -> None:
        pass

    def on_error_end(self, block: bytes) -> None:
        pass

    def on_end(self, error: str | None) -> None:
        pass


def is_event_stream(response: UpstreamResponse) -> bool:
    return response.content_type == "text/event-stream"


Extra = Mapping[str, str] | None
#: The terminal event a block of events carries, if any (Adapter.stream_finished).
Finished = Callable[[bytes], StreamEnd | None]


async def relay(
    request: web.Request,
    response: UpstreamResponse,
    *,
    errors: StreamErrors,
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
            request, response, errors=errors, idle_s=idle_s, tap=tap, transform=transform,
            finished=finished, preface=preface, extra=extra,
        )  # fmt: skip
    length = response.content_length
    if length is not None and length <= _WHOLE_BODY_LIMIT:
        return await _relay_whole(response, idle_s, tap, extra)
    return await _relay_bytes(request, response, idle_s, tap, extra)


def whole(response: UpstreamResponse, body: bytes, extra: Extra) -> web.Response:
    """A response relayed in one piece: status, reason, headers and body as received."""
    headers = relayable(response.headers)
    if not body:
        _keep_length(response, headers)
    if extra:
        headers.update(extra)
    return web.Response(status=response.status, reason=response.reason, headers=headers, body=body)


def _keep_length(response: UpstreamResponse, headers: CIMultiDict[str]) -> None:
    """An empty body keeps the provider's Content-Length: a HEAD answer's is the length
    the GET would have had (RFC 9110 §9.3.2), which aiohttp cannot know; any other empty
    body's is 0 (and aiohttp drops it where the status forbids one, 204 and 304)."""
    length = response.headers.get("Content-Length")
    if length is not None:
        headers["Content-Length"] = length


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
    errors: StreamErrors,
    idle_s: float,
    tap: Tap,
    transform: Transform | None,
    finished: Finished | None,
    preface: bytes,
    extra: Extra,
) -> web.StreamResponse:
    out = await _start(request, response, extra, _EventStream)
    pending, end = preface, _End()
    idle = WaitTimer()  # one timer for every wait, each read from and each write to
    client = _Client(request, out, idle, idle_s)
    try:
        while True:
            cut = split_complete(pending)
            if cut:
                block, pending = pending[:cut], pending[cut:]
                tap.on_events(block)
                data = transform(block) if transform else block
                last = finished(block) if finished is not None else None
                if (end.seen or last or finished is None) and not pending and _ended(response):
                    # The provider has already ended its response: the last events and the
                    # end of ours leave in one send (a send on loopback costs ~50 µs of CPU).
                    await client.finish(tap, data, end.error(tap, last, block))
                    return out
                await client.write(data)
                # Only once it is written: a client gone before the terminal event got
                # an incomplete stream.
                end.saw(last, block)
            limit_s = _AFTER_END_S if end.seen and idle_s > _AFTER_END_S else idle_s
            with idle.limit(limit_s):
                chunk = await response.content.readany()
            # pending holds no boundary (every complete event was taken): one that ends
            # in this read starts within its last three bytes ("\r\n\r\n" is four).
            if pending and chunk and not split_complete(pending[-3:] + chunk):
                pending, chunk = await _gather(response, idle, limit_s, pending, chunk)
            if not chunk:
                break
            pending += chunk
        if finished is not None and pending:
            end.saw(finished(pending), pending)
        await _body_ended(client, errors, tap, pending, end, whole=end.seen or finished is None)
    except (_ClientGone, asyncio.CancelledError) as exc:
        await _stopped(request, client, errors, tap, exc, end)
        if isinstance(exc, asyncio.CancelledError):
            raise
        return out
    except (TimeoutError, aiohttp.ClientError, _EventTooLarge) as exc:
        if end.seen:
            # The terminal event reached the client: a break or a silence after it
            # cost nothing, and an error event after it would make an SDK raise.
            await client.finish(tap, b"", end.error(tap))
            return out
        return await client.interrupt(errors, tap, exc)
    finally:
        idle.close()
    return out


class _End:
    """The terminal event a relay has passed to the client, if any, and the block of
    events that carried it (kept, not copied: an error event is classified from it)."""

    __slots__ = ("block", "kind")

    def __init__(self) -> None:
        self.kind: StreamEnd | None = None
        self.block = b""

    @property
    def seen(self) -> bool:
        return self.kind is not None

    def saw(self, kind: StreamEnd | None, block: bytes) -> None:
        if kind is not None and self.kind is None:
            self.kind, self.block = kind, block

    def error(self, tap: Tap, last: StreamEnd | None = None, block: bytes = b"") -> str | None:
        """The outcome the tap is told at a whole end: None, or "stream_error" when the
        provider ended the stream with an in-band error event (an answer, not a break:
        nothing is appended, and it is not counted a truncation), the tap then given the
        block that carried the event first (its verdict for the circuit comes from it)."""
        self.saw(last, block)
        if self.kind != "stream_error":
            return None
        tap.on_error_end(self.block)
        return "stream_error"


async def _stopped(
    request: web.Request,
    client: _Client,
    errors: StreamErrors,
    tap: Tap,
    exc: BaseException,
    end: _End,
) -> None:
    """The relay stopped on the client's side: the client left, or spangate's drain ran
    out and cancelled it."""
    if isinstance(exc, asyncio.CancelledError) and not end.seen and request.app[STATE].stopping:
        # Not the client leaving: it still reads, so it is told in-band rather than
        # left with a stream cut mid-answer.
        await client.interrupt(errors, tap, _ShuttingDown())
        return
    # An SDK may hang up right after the terminal event (openai-python does after
    # `data: [DONE]`, or raising on an in-band error event): that stream was complete,
    # not abandoned.
    tap.on_end(end.error(tap) if end.seen else "client_disconnected")
    if isinstance(exc, _ClientGone):
        client.cut()


async def _body_ended(
    client: _Client, errors: StreamErrors, tap: Tap, rest: bytes, end: _End, *, whole: bool
) -> None:
    """The provider's body ended: `rest` (events, or half of one), then the end of the
    response, or, when the terminal event never came (`whole` false), the error event."""
    if rest:
        tap.on_events(rest)
        if whole:
            await client.write(rest)
        # Otherwise half an event, and the error event below would fuse with it into one
        # the SDK cannot parse: it is dropped, so the SDK raises the error instead.
    if whole:
        await client.finish(tap, b"", end.error(tap))
    else:
        # A clean close without the terminal event is a truncation, not a success.
        await client.interrupt(errors, tap, _Truncated())


async def _gather(
    response: UpstreamResponse, idle: WaitTimer, limit_s: float, pending: bytes, chunk: bytes
) -> tuple[bytes, bytes]:
    """An event that goes on past this read: the reads that bring no boundary are
    gathered and joined once (appended one by one, a multi-megabyte event in 64 KiB
    reads was a copy and a scan of all of it per read). (the event so far, the read that
    ends it, or b"" when the body ended first)."""
    parts, tail, size = [pending, chunk], (pending[-3:] + chunk)[-3:], len(pending) + len(chunk)
    while size <= _MAX_EVENT:
        with idle.limit(limit_s):
            chunk = await response.content.readany()
        if not chunk or split_complete(tail + chunk):
            return b"".join(parts), chunk
        parts.append(chunk)
        size += len(chunk)
        tail = (tail + chunk)[-3:]
    raise _EventTooLarge


def _ended(response: UpstreamResponse) -> bool:
    """Everything the provider will send has been read (its end already parsed)."""
    return response.content.at_eof()


async def _relay_bytes(
    request: web.Request,
    response: UpstreamResponse,
    idle_s: float,
    tap: Tap,
    extra: Extra,
) -> web.StreamResponse:
    """Large or compressed bodies: copied chunk by chunk, unchanged."""
    out = await _start(request, response, extra)
    idle = WaitTimer()
    client = _Client(request, out, idle, idle_s)
    try:
        while True:
            with idle.limit(idle_s):
                chunk = await response.content.readany()
            if not chunk:
                break
            await client.write(chunk)
    except (_ClientGone, asyncio.CancelledError) as exc:
        tap.on_end("client_disconnected")
        if isinstance(exc, asyncio.CancelledError):
            raise
        client.cut()
        return out
    except (TimeoutError, aiohttp.ClientError) as exc:
        # No event to say it in (a file, audio, a compressed stream; an event stream in
        # the clear goes through _relay_events): a clean end would hand the client a
        # short body as a whole one, so its connection is cut instead, which its HTTP
        # client reports as the broken transfer it is.
        tap.on_end(_interruption(exc)[0])
        client.cut()
        return out
    else:
        await client.finish(tap)
    finally:
        idle.close()
    return out


class _ClientGone(Exception):
    pass


class _Truncated(Exception):
    """The upstream closed the stream cleanly but before its terminal event."""


class _EventTooLarge(Exception):
    """One event grew past _MAX_EVENT bytes without ending."""


class _ShuttingDown(Exception):
    """spangate stopped the stream: server.drain_timeout_s ran out during a shutdown."""


class _Client:
    """The client's end of a relay. A client that takes no byte for as long as the idle
    timeout (a hung app, a stalled reader) is treated as gone and its connection cut,
    rather than holding an upstream connection and a pool slot for as long as it stays
    connected; one that reads slowly is making progress and is waited for."""

    __slots__ = ("_limit_s", "_out", "_relayed", "_timer", "_transport")

    def __init__(
        self, request: web.Request, out: web.StreamResponse, timer: WaitTimer, limit_s: float
    ) -> None:
        self._out, self._timer, self._limit_s = out, timer, limit_s
        # Looked up once: write() asks it for every event. A connection lost later
        # fails the next write (ConnectionResetError), as it would through the request.
        self._transport = request.transport
        #: The last block of events written, kept (not copied) for an error event to
        #: number itself after (the Responses API's sequence_number): not an empty one
        #: (a transform took all of it) nor a keep-alive comment, which carry none.
        self._relayed = b""

    async def write(self, data: bytes) -> None:
        if data[:1] not in (b"", b":"):
            self._relayed = data
        transport = self._transport
        try:
            if (
                len(data) <= _SLICE
                and transport is not None
                and not transport.get_write_buffer_size()
            ):
                # All the earlier bytes are gone: this one is taken at once (a send
                # blocks only above the transport's high-water mark), with no timer.
                await self._out.write(data)
                return
            for start in range(0, len(data), _SLICE):
                await self._patiently(data[start : start + _SLICE])
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            raise _ClientGone from None

    async def _patiently(self, piece: bytes) -> None:
        """Write `piece` to a client that is behind, for as long as it keeps taking
        bytes. Progress is read from the socket's send queue too: the kernel may hold
        megabytes, which a slow reader empties for seconds before the transport's own
        buffer moves at all."""
        transport = self._transport
        if transport is None:
            raise _ClientGone
        # What will be waiting once the write has queued `piece` in its chunk framing
        # (the write runs only when this task next waits, so it is not counted yet).
        before = _unsent(transport) + len(piece) + len(b"%x\r\n\r\n" % len(piece))
        write = asyncio.ensure_future(self._out.write(piece))
        try:
            while True:
                done, _ = await asyncio.wait((write,), timeout=self._limit_s)
                if done:
                    write.result()
                    return
                now = _unsent(transport)
                if now >= before:
                    raise _ClientGone  # not a byte taken for the whole idle timeout
                before = now
        finally:
            if not write.done():
                write.cancel()

    async def finish(self, tap: Tap, last: bytes = b"", outcome: str | None = None) -> None:
        """`last`, then the end of the response; the tap is told `outcome` (None: whole)."""
        try:
            transport = self._transport
            if (
                len(last) <= _SLICE
                and transport is not None
                and not transport.get_write_buffer_size()
            ):
                # Taken at once, as in write(): the last events and the end in one send.
                await self._out.write_eof(last)
            else:
                await self.write(last)  # as any block to a client that is behind
                with self._timer.limit(self._limit_s):
                    await self._out.write_eof()
        except (_ClientGone, TimeoutError, ConnectionError, aiohttp.ClientConnectionResetError):
            tap.on_end("client_disconnected")
            self.cut()
            return
        tap.on_end(outcome)

    async def interrupt(
        self, errors: StreamErrors | None, tap: Tap, exc: BaseException
    ) -> web.StreamResponse:
        """The upstream broke after the commit point: say so in-band, never truncate
        silently."""
        reason, message = _interruption(exc)
        tap.on_end(reason)
        try:
            with self._timer.limit(self._limit_s):
                if errors is not None:
                    await self._out.write(stream_error_event(errors, message, self._relayed))
                await self._out.write_eof()
        except (TimeoutError, ConnectionError, aiohttp.ClientConnectionResetError):
            self.cut()
        return self._out

    def cut(self) -> None:
        """Close the client's connection at once: nothing more can be said on it, and
        aiohttp's own end of the response would wait on a client that does not read."""
        if self._transport is not None:
            self._transport.abort()


def _unsent(transport: asyncio.BaseTransport) -> int:
    """Bytes written to a client and not yet taken: the transport's buffer and, where
    the kernel says (Linux: SIOCOUTQ), the socket's send queue."""
    unsent = transport.get_write_buffer_size()  # type: ignore[attr-defined]
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError, ValueError):
        unsent += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    return int(unsent)


def _interruption(exc: BaseException) -> tuple[str, str]:
    """(stream outcome, client-facing message) for a stream that broke after the commit."""
    if isinstance(exc, AttemptTimeout):
        return "stream_total_timeout", "the attempt ran past its overall timeout"
    if isinstance(exc, TimeoutError):
        return "stream_idle_timeout", "the provider stopped sending within the idle timeout"
    if isinstance(exc, _Truncated):
        return "stream_truncated", "the provider closed the stream before its final event"
    if isinstance(exc, _EventTooLarge):
        return "stream_interrupted", f"the provider sent an event over {_MAX_EVENT >> 20} MiB"
    if isinstance(exc, _ShuttingDown):
        return "shutdown", "spangate is shutting down and its drain timeout ran out"
    return "stream_interrupted", f"the provider's stream broke off ({_name(exc)})"


def _name(exc: BaseException) -> str:
    return "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
