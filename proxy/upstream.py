"""The upstream client: one keep-alive pool per process, one request at a time per connection.

Failures outside the HTTP protocol are turned here, at the I/O edge, into
spangate errors with a message that names the provider and what to check.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from aiohttp import ClientError, ClientOSError, ServerDisconnectedError
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader

from proxy.config import Timeouts
from proxy.connections import ConnectionPool, malformed
from proxy.errors import BadRequest, Unavailable, UpstreamTimeout, UpstreamUnreachable
from proxy.http1 import Target, UnsafeHeader, request_head, target_of
from proxy.providers.base import UpstreamRequest
from proxy.upstream_response import AttemptTimeout, UpstreamResponse
from proxy.waits import WaitTimer

#: Informational answers (100 Continue, 103 Early Hints) come before the real one.
_INFORMATIONAL = range(100, 200)
#: Methods that may be sent again when a kept-alive connection fails under them.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
#: Bodies up to this size are sent in one piece with the head (one copy, one send).
_JOIN_LIMIT = 64 * 1024


class Upstream:
    def __init__(self, pool_size: int) -> None:
        self._pool_size = pool_size
        self._pool: ConnectionPool | None = None

    async def start(self, tls: bool = False) -> None:
        """`tls`: some provider is reached over https (its context is built now, off
        the event loop)."""
        self._pool = ConnectionPool(self._pool_size)
        if tls:
            self._pool.prepare_tls()

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    @property
    def in_use(self) -> int:
        """Connections carrying a request now (0 once every response is released)."""
        return self._pool.in_use if self._pool is not None else 0

    async def send(
        self, request: UpstreamRequest, timeouts: Timeouts, provider: str, waits: WaitTimer
    ) -> UpstreamResponse:
        """Send and wait for response headers (within timeouts.first_byte_s, on the
        attempt's `waits`); the caller owns (and closes) the response."""
        pool = self._pool
        assert pool is not None, "Upstream.start() was not awaited"
        target = target_of(request.url)
        try:
            head = request_head(request.method, target, request.headers.items(), len(request.body))
        except UnsafeHeader as exc:
            raise BadRequest(f"{exc}; it cannot be sent to provider {provider!r}") from None
        first_byte_s, deadline = timeouts.first_byte_s, None
        if timeouts.total_s:
            # total_s counts from here: the wait for a pool slot and the connect too.
            deadline = asyncio.get_running_loop().time() + timeouts.total_s
            first_byte_s = min(first_byte_s, timeouts.total_s)
        progress = _Progress()
        try:
            with waits.limit(first_byte_s):
                return await _send(
                    pool, target, head, request, timeouts, provider, deadline, progress
                )
        except TimeoutError:
            if progress.queued:
                # Our own pool, not the provider: no mark against its health.
                raise Unavailable(
                    f"every upstream connection (server.pool_size {self._pool_size}) was "
                    f"busy for {first_byte_s:g} s; raise server.pool_size or send fewer "
                    "requests at once",
                    code="pool_exhausted",
                ) from None
            raise UpstreamTimeout(_timeout_message(provider, timeouts)) from None
        except HttpProcessingError as exc:
            # Not a closed connection: the provider answered, in bytes that are not HTTP.
            raise UpstreamUnreachable(f"provider {provider!r} sent a {malformed(exc)}") from None
        except (ClientError, OSError) as exc:
            raise UpstreamUnreachable(
                f"provider {provider!r} closed the connection before responding "
                f"({type(exc).__name__})"
            ) from None


async def _send(
    pool: ConnectionPool,
    target: Target,
    head: bytes,
    request: UpstreamRequest,
    timeouts: Timeouts,
    provider: str,
    deadline: float | None,
    progress: _Progress,
) -> UpstreamResponse:
    protocol, reused = await _connect(pool, target, timeouts, provider, progress)
    try:
        return await _exchange(pool, target, protocol, head, request, deadline)
    except (ServerDisconnectedError, ClientOSError):
        # A kept-alive connection the provider closed just as the request went out.
        # aiohttp's rule: an idempotent request goes again, once, on a new attempt at a
        # connection; a POST is never sent twice (the provider may have run it).
        if not reused or request.method not in _IDEMPOTENT:
            raise
    protocol, _ = await _connect(pool, target, timeouts, provider, progress)
    return await _exchange(pool, target, protocol, head, request, deadline)


class _Progress:
    """How far a send got: a timeout while queued for a pool slot is ours to report."""

    __slots__ = ("queued",)

    def __init__(self) -> None:
        self.queued = False


async def _connect(
    pool: ConnectionPool, target: Target, timeouts: Timeouts, provider: str, progress: _Progress
) -> tuple[ResponseHandler, bool]:
    """A pool slot (its wait marked in `progress`), then a connection on it (the slot
    freed again if that fails), and whether the connection was reused."""
    progress.queued = True
    await pool.reserve()
    progress.queued = False
    try:
        return await pool.open(target.origin, timeouts.connect_s)
    except TimeoutError:
        raise
    # RuntimeError and ValueError: what aiohappyeyeballs passes on from the loop (a
    # reused descriptor) or an empty address list; a client should never see a 500.
    except (OSError, UnicodeError, RuntimeError, ValueError) as exc:
        origin = target.origin
        raise UpstreamUnreachable(
            f"could not connect to provider {provider!r} at {origin.host}:{origin.port} "
            f"({_reason(exc)}); check providers.{provider}.base_url and that it is up"
        ) from None


async def _exchange(
    pool: ConnectionPool,
    target: Target,
    protocol: ResponseHandler,
    head: bytes,
    request: UpstreamRequest,
    deadline: float | None,
) -> UpstreamResponse:
    total = _Total(protocol, deadline) if deadline is not None else None
    try:
        # Bytes go to the client as the provider encoded them: no decompression.
        protocol.set_response_params(
            skip_payload=request.method == "HEAD", read_until_eof=True, auto_decompress=False
        )
        transport = protocol.transport
        if transport is None:
            raise ServerDisconnectedError("the connection closed before the request went out")
        if len(request.body) <= _JOIN_LIMIT:
            transport.write(head + request.body)
        else:
            transport.writelines((head, request.body))  # uvloop: no head+body copy
        message, content = await protocol.read()
        while message.code in _INFORMATIONAL and message.code != 101:
            message, content = await protocol.read()
    except BaseException:
        if total is not None:
            total.handle.cancel()
        pool.discard(protocol)
        raise
    if total is not None:
        total.content = content
    handle = total.handle if total is not None else None
    return UpstreamResponse(message, content, pool, target.origin, protocol, handle)


class _Total:
    """timeouts.total_s: past the deadline, the attempt's reads fail with AttemptTimeout
    (a TimeoutError), the response head's and the body's alike."""

    __slots__ = ("content", "handle", "protocol")

    def __init__(self, protocol: ResponseHandler, deadline: float) -> None:
        self.protocol = protocol
        self.content: StreamReader | None = None
        self.handle = asyncio.get_running_loop().call_at(deadline, self._fire)

    def _fire(self) -> None:
        error = AttemptTimeout("the attempt ran past timeouts.total_s")
        self.protocol.set_exception(error)
        if self.content is not None:
            self.content.set_exception(error)


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeError):
        return "the host name cannot be encoded"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, socket.gaierror):
        return f"name not resolved: {exc.strerror}"
    # aiohappyeyeballs joins several addresses' errors into one message, no strerror.
    strerror = exc.strerror if isinstance(exc, OSError) else None
    return strerror or str(exc) or type(exc).__name__


def _timeout_message(provider: str, timeouts: Timeouts) -> str:
    total = (
        f", or the attempt ran past {timeouts.total_s:g} s (timeouts.total_s)"
        if timeouts.total_s
        else ""
    )
    return (
        f"provider {provider!r} sent no response within {timeouts.first_byte_s:g} s "
        f"(timeouts.first_byte_s) or the connection took longer than "
        f"{timeouts.connect_s:g} s (timeouts.connect_s){total}"
    )
