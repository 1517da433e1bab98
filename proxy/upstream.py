"""The only module that owns the aiohttp ClientSession (one keep-alive pool per process).

Failures outside the HTTP protocol are turned here, at the I/O edge, into
spangate errors with a message that names the provider and what to check.
"""

from __future__ import annotations

import functools
import socket

import aiohttp

from proxy.config import Timeouts
from proxy.errors import UpstreamTimeout, UpstreamUnreachable
from proxy.providers.base import UpstreamRequest
from proxy.waits import WaitTimer


class Upstream:
    def __init__(self, pool_size: int) -> None:
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._pool_size,
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=30,
            family=socket.AF_UNSPEC,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Bytes go to the client as the provider encoded them.
            auto_decompress=False,
            # A proxy shared by clients must never replay one client's cookies.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Only what the client sent: no default User-Agent / Accept-Encoding.
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self, request: UpstreamRequest, timeouts: Timeouts, provider: str, waits: WaitTimer
    ) -> aiohttp.ClientResponse:
        """Send and wait for response headers (within timeouts.first_byte_s, on the
        attempt's `waits`); the caller owns (and closes) the response."""
        assert self._session is not None, "Upstream.start() was not awaited"
        timeout = _client_timeout(timeouts.total_s, timeouts.connect_s)
        try:
            with waits.limit(timeouts.first_byte_s):
                return await self._session.request(
                    request.method,
                    request.url,
                    headers=request.headers,
                    data=request.body or None,
                    timeout=timeout,
                    allow_redirects=False,
                )
        except TimeoutError:
            raise UpstreamTimeout(_timeout_message(provider, timeouts)) from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnreachable(
                f"could not connect to provider {provider!r} at {exc.host}:{exc.port} "
                f"({_reason(exc)}); check providers.{provider}.base_url and that it is up"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnreachable(
                f"provider {provider!r} closed the connection before responding "
                f"({type(exc).__name__})"
            ) from None


@functools.lru_cache(maxsize=256)
def _client_timeout(total_s: float, connect_s: float) -> aiohttp.ClientTimeout:
    """One immutable ClientTimeout per distinct setting: building it (an attrs class
    with validation) on every attempt showed in the profile."""
    return aiohttp.ClientTimeout(total=total_s or None, sock_connect=connect_s)


def _reason(exc: aiohttp.ClientConnectorError) -> str:
    return exc.os_error.strerror or type(exc.os_error).__name__


def _timeout_message(provider: str, timeouts: Timeouts) -> str:
    return (
        f"provider {provider!r} sent no response within {timeouts.first_byte_s:g} s "
        f"(timeouts.first_byte_s) or the connection took longer than "
        f"{timeouts.connect_s:g} s (timeouts.connect_s)"
    )
