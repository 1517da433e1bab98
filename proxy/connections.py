"""Keep-alive connections to the providers: one idle list per origin, one limit for all.

Why not aiohttp's ClientSession: its request path (URL requoting, a ClientRequest with
a dozen update steps, cookie and trace hooks, a connector keyed per request) was
~230 K of the ~620 K instructions a minimal aiohttp pass-through spends per request,
and spangate uses none of what it buys. spangate keeps aiohttp's protocol
(`ResponseHandler`, with aiohttp's C response parser and flow control) and writes the
request head itself (http1.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import time

import aiohappyeyeballs
import structlog
from aiohttp import ClientPayloadError
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import _EXC_SENTINEL, set_exception
from aiohttp.http_exceptions import HttpProcessingError

from proxy.http1 import Origin

log = structlog.get_logger("spangate.upstream")

#: An idle connection older than this is closed, not reused (providers drop idle ones).
KEEPALIVE_S = 30.0
#: Learned idle limits (see ConnectionPool._learn) are this share of what a provider's
#: connection was seen to last idle, and never shorter than MIN_KEEPALIVE_S.
_LEARNED_SHARE = 0.75
MIN_KEEPALIVE_S = 0.5
#: A connection still open this many times as long as the close a limit was learned
#: from disproves it (twice: clear of the jitter between our clock and the provider's).
_OUTLIVED = 2.0
_HAPPY_EYEBALLS_DELAY_S = 0.25


class ConnectionPool:
    """At most `limit` connections in use at once; idle ones kept per origin.

    A provider that closes idle connections sooner than `keepalive_s` (uvicorn, so vLLM,
    after 5 s) races every request sent just as it does: the request goes out on a
    connection being closed, and fails. So the pool learns each origin's idle limit
    from the first connection it sees closed while idle, and stops reusing them well
    before it.
    """

    def __init__(
        self, limit: int, keepalive_s: float = KEEPALIVE_S, min_keepalive_s: float = MIN_KEEPALIVE_S
    ) -> None:
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._min_keepalive_s = min(min_keepalive_s, keepalive_s)
        #: Origins whose connections were seen closed by the provider while idle: how
        #: long that one lasted, and so how long one may stay idle and still be reused.
        self._learned: dict[Origin, tuple[float, float]] = {}
        self._in_use = 0
        self._idle: dict[Origin, list[tuple[float, ResponseHandler]]] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._tls: ssl.SSLContext | None = None
        self._tls_building: asyncio.Future[ssl.SSLContext] | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    def prepare_tls(self) -> None:
        """Start building the TLS context on a thread, so that the first https
        connection does not wait for it: loading the trust store blocks for ~20 ms,
        which on the event loop would stall every request in flight."""
        if self._tls is None and self._tls_building is None:
            loop = asyncio.get_running_loop()
            self._tls_building = loop.run_in_executor(None, _tls_context)

    async def reserve(self) -> None:
        """A slot for one exchange, waiting (first come, first served) when all are
        taken. Raises ConnectionError once the pool is closed."""
        if self._closed:
            raise _closed()
        if self._in_use < self._limit and not self._waiters:
            self._in_use += 1
            return
        await self._wait_for_slot()
        if self._closed:  # handed a slot just as the pool closed
            self._free_slot()
            raise _closed()

    async def open(self, origin: Origin, connect_s: float) -> tuple[ResponseHandler, bool]:
        """On a reserved slot: a connected protocol for `origin` and whether it was
        reused. Raises OSError (ssl.SSLError, socket.gaierror included), TimeoutError,
        or what the connector raises besides (RuntimeError, ValueError); the slot is
        freed then."""
        try:
            # Not `reuse() or connect()`: a protocol is a queue, and an empty one is falsy.
            reused = self._reuse(origin)
            if reused is not None:
                return reused, True
            return await self._connect(origin, connect_s), False
        except BaseException:
            self._free_slot()
            raise

    def release(self, origin: Origin, protocol: ResponseHandler) -> None:
        """Back to the idle list when it can carry another request; closed otherwise."""
        self._free_slot()
        if self._closed or not _reusable(protocol):
            protocol.close()
            return
        self._idle.setdefault(origin, []).append((time.monotonic(), protocol))
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self._keepalive_s, self._expire)

    def discard(self, protocol: ResponseHandler) -> None:
        """A connection left mid-exchange: dropped at once (a provider sees the request
        end and stops generating), never reused."""
        self._free_slot()
        protocol.abort()

    def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in self._idle.values():
            for _, protocol in idle:
                protocol.close()
        self._idle.clear()
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(_closed())

    @property
    def idle(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def learned(self) -> dict[Origin, float]:
        """The idle limits learned so far, per origin (seconds)."""
        return {origin: limit for origin, (_, limit) in self._learned.items()}

    def _reuse(self, origin: Origin) -> ResponseHandler | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        learned = self._learned.get(origin)
        oldest = now - (learned[1] if learned is not None else self._keepalive_s)
        while idle:
            since, protocol = idle.pop()  # most recent first: the likeliest still open
            if not _reusable(protocol):
                self._learn(origin, since, protocol)
            else:
                if learned is not None and now - since > _OUTLIVED * learned[0]:
                    self._unlearn(origin, now - since)
                    learned = None
                if since > oldest:
                    return protocol
            protocol.close()
        return None

    def _learn(self, origin: Origin, since: float, protocol: ResponseHandler) -> None:
        """An idle connection found closed: if the provider closed it sooner than the
        limit the pool keeps to now (so a request could have raced the close), the
        limit becomes a share of the time it lasted."""
        lost_at = getattr(protocol, "lost_at", None)
        if lost_at is None:
            return  # still open (unread bytes, say), or closed by us
        lasted = lost_at - since
        learned = self._learned.get(origin)
        if lasted >= (learned[1] if learned is not None else self._keepalive_s):
            return  # after the pool would have stopped reusing it: no race
        limit = max(self._min_keepalive_s, lasted * _LEARNED_SHARE)
        self._learned[origin] = (lasted, limit)
        _say(
            "upstream.idle_limit_learned",
            origin=_named(origin),
            closed_after_s=round(lasted, 3),
            reuse_within_s=round(limit, 3),
        )

    def _unlearn(self, origin: Origin, alive_s: float) -> None:
        """A connection of `origin` still open after well over the time the limit was
        learned from: that close was not the provider's idle limit (a restart, a cap on
        requests per connection), so the pool's own limit applies again."""
        self._learned.pop(origin, None)
        _say("upstream.idle_limit_forgotten", origin=_named(origin), open_after_s=round(alive_s, 3))

    async def _connect(self, origin: Origin, connect_s: float) -> ResponseHandler:
        loop = asyncio.get_running_loop()
        tls = await self._tls_context() if origin.tls else None
        async with asyncio.timeout(connect_s):
            addresses = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
            # Happy eyeballs (RFC 8305), as aiohttp's connector: an address family that
            # drops packets costs 0.25 s, not the whole connect timeout. uvloop's
            # create_connection has no such option, so the socket is connected here.
            sock = await aiohappyeyeballs.start_connection(
                addresses, happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY_S, interleave=1
            )
            try:
                _, protocol = await loop.create_connection(
                    lambda: _Handler(loop),
                    sock=sock,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
            except BaseException:
                sock.close()
                raise
        return protocol

    async def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            building = self._tls_building
            # Not prepared (no https provider at start): built here, once.
            # Shielded: a request cancelled while it waits must not cancel the build
            # that every later https connection waits for.
            self._tls = await asyncio.shield(building) if building is not None else _tls_context()
        return self._tls

    async def _wait_for_slot(self) -> None:
        """First come, first served: a freed slot is handed to the oldest waiter, so a
        request arriving later cannot take it first."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._free_slot()  # handed over, but this request is gone: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands; in_use stays
                return
        self._in_use -= 1

    def _expire(self) -> None:
        self._sweep = None
        now = time.monotonic()
        oldest = now - self._keepalive_s
        for origin, idle in list(self._idle.items()):
            keep = []
            for since, protocol in idle:
                if not _reusable(protocol):
                    self._learn(origin, since, protocol)
                    protocol.close()
                    continue
                learned = self._learned.get(origin)
                if learned is not None and now - since > _OUTLIVED * learned[0]:
                    self._unlearn(origin, now - since)
                if since > oldest:
                    keep.append((since, protocol))
                else:
                    protocol.close()
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]
        if self._idle:
            self._sweep = asyncio.get_running_loop().call_later(self._keepalive_s, self._expire)


class _Handler(ResponseHandler):
    """aiohttp's protocol, noting when the connection closed (for ConnectionPool._learn),
    and failing the body being read when the provider's framing breaks."""

    __slots__ = ("lost_at",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.lost_at: float | None = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost_at = time.monotonic()
        super().connection_lost(exc)

    def set_exception(self, exc: BaseException, exc_cause: BaseException = _EXC_SENTINEL) -> None:
        """aiohttp (3.14) puts a parse error met in the middle of a body (a bad
        chunk-size line, a chunk longer or shorter than its data) on the protocol only:
        its parser forgets the body first, so neither this call nor the close after it
        ever ends the body, and a reader waits for bytes that will not come until the
        idle timeout, a broken response reported as a slow one. The body gets the error
        too, so its reader fails at once, as with a cut-off body."""
        malformed_http = isinstance(exc, HttpProcessingError)
        if malformed_http and exc_cause is not _EXC_SENTINEL:
            # aiohttp wraps the parser's error (BadStatusLine, TransferEncodingError...)
            # in a plain HttpProcessingError and links the two only if a reader is
            # waiting: linked always, so malformed() can name what broke.
            exc.__cause__ = exc_cause
        super().set_exception(exc, exc_cause)
        payload = self._payload
        if malformed_http and payload is not None and not payload.is_eof():
            set_exception(payload, ClientPayloadError(malformed(exc)), exc)


def malformed(exc: BaseException) -> str:
    """What was malformed in a provider's response, named by the parser's error type
    only: aiohttp's message quotes the response's bytes, and they may carry anything."""
    cause = exc.__cause__ if isinstance(exc.__cause__, HttpProcessingError) else exc
    return f"malformed HTTP response ({type(cause).__name__})"


def _named(origin: Origin) -> str:
    return f"{origin.scheme}://{origin.host}:{origin.port}"


def _say(event: str, **fields: object) -> None:
    """A pool event on the log: never an error for the request that came upon it (a
    closed stdout, say)."""
    with contextlib.suppress(Exception):
        log.info(event, **fields)


def _closed() -> ConnectionError:
    return ConnectionError("the upstream connection pool is closed")


def _reusable(protocol: ResponseHandler) -> bool:
    """Open, nothing unread (a server that sends an unasked answer, a 408 before it
    hangs up, say, would have it read as the answer to our next request) and nothing
    unsent (an early answer to a large upload leaves the rest of it in the buffer)."""
    transport = protocol.transport
    return (
        transport is not None
        and not transport.is_closing()
        and not protocol.should_close
        and not transport.get_write_buffer_size()
    )


def _tls_context() -> ssl.SSLContext:
    # The system's trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured).
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context
