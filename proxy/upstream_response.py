"""One provider response: status and headers parsed, the body still on the connection.

The connection goes back to its pool once the body has been read to its end (on the
parser's end-of-body callback, as aiohttp's ClientResponse does), and is closed instead
when the response is closed or released before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

from aiohttp import ClientConnectionError
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_parser import RawResponseMessage
from aiohttp.streams import StreamReader
from multidict import CIMultiDictProxy

from proxy.connections import ConnectionPool
from proxy.http1 import Origin


class AttemptTimeout(TimeoutError):
    """The attempt ran past timeouts.total_s (the response head or body unfinished)."""


class UpstreamResponse:
    __slots__ = (
        "_loop",
        "_origin",
        "_pool",
        "_protocol",
        "_timer",
        "content",
        "headers",
        "reason",
        "status",
    )

    def __init__(
        self,
        message: RawResponseMessage,
        content: StreamReader,
        pool: ConnectionPool,
        origin: Origin,
        protocol: ResponseHandler,
        timer: asyncio.TimerHandle | None,
    ) -> None:
        self.status = message.code
        self.reason = message.reason
        self.headers: CIMultiDictProxy[str] = message.headers
        self.content = content
        self._pool = pool
        self._origin = origin
        self._protocol: ResponseHandler | None = protocol
        self._timer = timer
        self._loop = asyncio.get_running_loop()
        content.on_eof(self._ended)

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters (aiohttp's default when absent)."""
        return _media_type(self.headers.get("Content-Type"))

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    async def read(self) -> bytes:
        """The whole body (the connection is back in the pool when this returns)."""
        return await self.content.read()

    def close(self) -> None:
        """Done with the response. A body read to its end has already given its
        connection back; one that was not (or failed) cannot carry another request, so
        its connection is dropped."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            self._stop_timer()
            if not self.content.is_eof():
                # A later read must fail, not see a clean end of a cut-off body.
                self.content.set_exception(ClientConnectionError("Connection closed"))
            self._pool.discard(protocol)

    #: The name callers use when a response's end is normal, not a failure: the same.
    release = close

    def __del__(self) -> None:
        # A response dropped unclosed (a bug) must not keep its pool slot forever. The
        # collector may run this on any thread: the pool is the loop's, so hand it there.
        protocol = getattr(self, "_protocol", None)
        if protocol is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(_abandoned, self._pool, protocol, self._timer)

    def _ended(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            self._stop_timer()
            self._pool.release(self._origin, protocol)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _abandoned(
    pool: ConnectionPool, protocol: ResponseHandler, timer: asyncio.TimerHandle | None
) -> None:
    if timer is not None:
        timer.cancel()
    pool.discard(protocol)


@functools.lru_cache(maxsize=64)
def _media_type(header: str | None) -> str:
    if not header:
        return "application/octet-stream"
    return header.split(";", 1)[0].strip().lower()
