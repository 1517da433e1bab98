"""The upstream client (proxy/upstream.py, connections.py, upstream_response.py) against
raw HTTP/1.1 servers on 127.0.0.1: keep-alive reuse, the pool limit, dead and expired
connections, and the edges of the response framing."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import ClientPayloadError
from aiohttp.client_proto import ResponseHandler
from conftest import serving_context
from multidict import CIMultiDict

from proxy.config import Timeouts
from proxy.connections import ConnectionPool
from proxy.errors import BadRequest, Unavailable, UpstreamTimeout, UpstreamUnreachable
from proxy.http1 import Origin, target_of
from proxy.providers.base import UpstreamRequest
from proxy.upstream import Upstream
from proxy.upstream_response import AttemptTimeout, UpstreamResponse
from proxy.waits import WaitTimer

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]


class RawServer:
    """Answers each request head it reads with `reply`; counts connections and heads."""

    def __init__(
        self, reply: Reply, tls: ssl.SSLContext | None = None, idle_s: float | None = None
    ) -> None:
        self.reply = reply
        self.tls = tls
        #: Closes a connection idle this long, as uvicorn does after 5 s.
        self.idle_s = idle_s
        self.connections = 0
        self.heads: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1/x"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while head := await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_s):
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                self.heads.append(head + body)
                if not await self.reply(head, writer):
                    break
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.CancelledError,
            TimeoutError,
        ):
            pass  # the connection's end, or the test's
        finally:
            writer.close()


def answer(raw: bytes, keep: bool = True) -> Reply:
    async def reply(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return keep

    return reply


async def silent(head: bytes, writer: asyncio.StreamWriter) -> bool:
    """Reads the request and never answers."""
    await asyncio.sleep(5)
    return False


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    client = Upstream(pool_size=8)
    await client.start()
    yield client
    await client.close()


def post(url: str, body: bytes = b"{}", method: str = "POST") -> UpstreamRequest:
    return UpstreamRequest(method, url, CIMultiDict({"Content-Type": "application/json"}), body)


async def call(
    upstream: Upstream, request: UpstreamRequest, timeouts: Timeouts | None = None
) -> UpstreamResponse:
    waits = WaitTimer()
    try:
        return await upstream.send(request, timeouts or Timeouts(), "p", waits)
    finally:
        waits.close()


async def round_trips(upstream: Upstream, url: str, count: int) -> set[tuple[int, bytes]]:
    """`count` requests one after another, each read to its end: the answers seen."""
    seen = set()
    for _ in range(count):
        response = await call(upstream, post(url))
        seen.add((response.status, await response.read()))
        response.release()
    return seen


async def test_sequential_requests_reuse_one_connection(upstream: Upstream) -> None:
    """Keep-alive: three requests read to the end travel over one connection."""
    async with RawServer(answer(OK)) as server:
        assert await round_trips(upstream, server.url, 3) == {(200, b"{}")}
    assert server.connections == 1
    assert server.heads[0].startswith(b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert server.heads[0].endswith(b"Content-Length: 2\r\n\r\n{}")


async def test_response_released_unread_closes_its_connection(upstream: Upstream) -> None:
    """A body left on the wire would be read as the next answer: that connection is closed."""
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"
    replies = iter([partial, OK])

    async def reply(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(next(replies))
        return True

    async with RawServer(reply) as server:
        response = await call(upstream, post(server.url))
        response.release()
        response = await call(upstream, post(server.url))
        assert await response.read() == b"{}"
    assert server.connections == 2


async def test_connection_the_server_closed_is_not_reused(upstream: Upstream) -> None:
    """An idle connection the provider hung up is dropped, not written to: no failed request."""
    async with RawServer(answer(OK, keep=False)) as server:
        for _ in range(2):
            response = await call(upstream, post(server.url))
            assert await response.read() == b"{}"
            await asyncio.sleep(0.05)  # the server's FIN arrives while the connection is idle
    assert server.connections == 2


async def test_answer_sent_while_idle_is_not_taken_for_the_next(upstream: Upstream) -> None:
    """A server that says 408 on an idle connection (and has not hung up yet): the next
    request goes on a new connection and gets its own answer."""
    timeout = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(two_writes(OK, timeout, 0.02, 5)) as server:
        response = await call(upstream, post(server.url))
        assert await response.read() == b"{}"
        await asyncio.sleep(0.1)
        response = await call(upstream, post(server.url))
        assert response.status == 200
    assert server.connections == 2


async def test_large_body_arrives_whole(upstream: Upstream) -> None:
    """A body over the one-write size goes out after its head, byte for byte."""
    body = bytes(range(256)) * 1024
    async with RawServer(answer(OK)) as server:
        response = await call(upstream, post(server.url, body))
        assert await response.read() == b"{}"
    assert server.heads[0].endswith(b"\r\n\r\n" + body)


async def test_pool_limit_queues_requests_until_a_connection_is_free() -> None:
    """pool_size 1: a second concurrent request waits for the first, then shares its socket."""
    client = Upstream(pool_size=1)
    await client.start()
    release = asyncio.Event()

    async def slow(head: bytes, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        writer.write(OK)
        await writer.drain()
        return True

    try:
        async with RawServer(slow) as server:
            first = asyncio.create_task(call(client, post(server.url)))
            second = asyncio.create_task(call(client, post(server.url)))
            await asyncio.sleep(0.05)
            assert len(server.heads) == 1  # the second has not been sent
            release.set()
            for task in (first, second):
                response = await task
                assert await response.read() == b"{}"
        assert server.connections == 1
    finally:
        await client.close()


async def acquire(pool: ConnectionPool, origin: Origin) -> tuple[ResponseHandler, bool]:
    """What Upstream does for each exchange: a slot, then a connection on it."""
    await pool.reserve()
    return await pool.open(origin, 1.0)


async def queue_behind(
    pool: ConnectionPool, url: str, count: int
) -> tuple[ResponseHandler, list[asyncio.Task[tuple[ResponseHandler, bool]]]]:
    """A pool of one: the connection held, and `count` requests queued behind it."""
    origin = target_of(url).origin
    held, _ = await acquire(pool, origin)
    queued = [asyncio.create_task(acquire(pool, origin)) for _ in range(count)]
    await asyncio.sleep(0)
    return held, queued


async def test_cancelled_waiter_passes_its_turn_on() -> None:
    """Requests cancelled while queued for the pool, before or after a slot was handed
    to them, do not swallow it: the next waiter gets it."""
    pool = ConnectionPool(limit=1)
    async with RawServer(answer(OK)) as server:
        held, (gone_early, handed, waiting) = await queue_behind(pool, server.url, 3)
        gone_early.cancel()
        await asyncio.sleep(0)
        pool.discard(held)  # the slot goes to `handed`...
        handed.cancel()  # ...which is cancelled before it runs
        protocol, _ = await asyncio.wait_for(waiting, 1.0)
        assert handed.cancelled()
        assert pool.in_use == 1
        pool.discard(protocol)
        assert pool.in_use == 0
    pool.close()


async def test_closing_the_pool_fails_its_waiters() -> None:
    """At shutdown a queued request fails at once, also one handed a slot just before
    the close; no slot stays taken."""
    pool = ConnectionPool(limit=1)
    async with RawServer(answer(OK)) as server:
        held, (handed, queued) = await queue_behind(pool, server.url, 2)
        pool.discard(held)  # the slot goes to `handed`, which has not run yet
        pool.close()
        for task in (handed, queued):
            with pytest.raises(ConnectionError, match="closed"):
                await asyncio.wait_for(task, 1.0)
        assert pool.in_use == 0


async def test_busy_pool_is_503_naming_pool_size() -> None:
    """Every connection busy for first_byte_s: our capacity, not the provider's fault —
    Unavailable naming server.pool_size, not an UpstreamTimeout against the target."""
    client = Upstream(pool_size=1)
    await client.start()
    try:
        async with RawServer(silent) as server:
            first = asyncio.create_task(call(client, post(server.url)))
            await asyncio.sleep(0.05)
            with pytest.raises(Unavailable, match=r"server\.pool_size 1"):
                await call(client, post(server.url), Timeouts(first_byte_s=0.1))
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            assert client.in_use == 0
    finally:
        await client.close()


async def test_freed_slot_goes_to_the_oldest_waiter() -> None:
    """A request arriving just as a slot frees does not jump the queue."""
    pool = ConnectionPool(limit=1)
    async with RawServer(answer(OK)) as server:
        origin = target_of(server.url).origin
        held, _ = await acquire(pool, origin)
        first = asyncio.create_task(acquire(pool, origin))
        await asyncio.sleep(0)
        pool.release(origin, held)
        late = asyncio.create_task(acquire(pool, origin))
        protocol, reused = await asyncio.wait_for(first, 1.0)
        assert reused  # the connection `held` had, back in the pool
        await asyncio.sleep(0.01)
        assert not late.done()
        pool.release(origin, protocol)
        pool.release(origin, (await asyncio.wait_for(late, 1.0))[0])
        assert pool.in_use == 0
    pool.close()


async def test_response_dropped_unclosed_gives_its_slot_back(upstream: Upstream) -> None:
    """A safety net for a bug: a response nobody closed frees its slot once its connection
    ends and it is collected (while the connection is open, its body reader holds it)."""
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"
    async with RawServer(answer(partial, keep=False)) as server:
        response = await call(upstream, post(server.url))
        assert upstream.in_use == 1
        del response
        await asyncio.sleep(0.05)  # the provider hangs up
        gc.collect()
        await asyncio.sleep(0.01)
        assert upstream.in_use == 0


async def test_idle_connections_expire_after_keepalive() -> None:
    """Idle connections older than the keep-alive are closed by the sweep."""
    pool = ConnectionPool(limit=4, keepalive_s=0.05)
    async with RawServer(answer(OK)) as server:
        origin = target_of(server.url).origin
        protocol, _ = await acquire(pool, origin)
        pool.release(origin, protocol)
        assert pool.idle == 1
        await asyncio.sleep(0.2)
        assert pool.idle == 0
        assert not protocol.is_connected()
    pool.close()


async def test_informational_answers_are_skipped(upstream: Upstream) -> None:
    """100 Continue / 103 Early Hints before the real answer: the caller sees the 200."""
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    async with RawServer(answer(raw)) as server:
        response = await call(upstream, post(server.url))
        assert (response.status, await response.read()) == (200, b"{}")


async def test_body_without_length_is_read_to_close_and_not_reused(upstream: Upstream) -> None:
    """No Content-Length, not chunked: the body ends when the provider closes."""
    raw = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a": 1}'
    async with RawServer(answer(raw, keep=False)) as server:
        response = await call(upstream, post(server.url))
        assert response.content_length is None
        assert await response.read() == b'{"a": 1}'
        response = await call(upstream, post(server.url))
        assert await response.read() == b'{"a": 1}'
    assert server.connections == 2


async def test_chunked_body_is_relayed_as_sent_pieces(upstream: Upstream) -> None:
    """Chunked framing is removed; the bytes inside arrive unchanged; type and length read."""
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n6\r\ndata: \r\n3\r\n{}\n\r\n0\r\n\r\n"
    )
    async with RawServer(answer(raw)) as server:
        response = await call(upstream, post(server.url))
        assert response.content_type == "text/event-stream"
        assert await response.read() == b"data: {}\n"
        response = await call(upstream, post(server.url))
        await response.read()
    assert server.connections == 1


async def test_no_content_answer_keeps_the_connection(upstream: Upstream) -> None:
    """204 has no body whatever its headers say: done at once, connection reused."""
    raw = b"HTTP/1.1 204 No Content\r\n\r\n"
    async with RawServer(answer(raw)) as server:
        assert await round_trips(upstream, server.url, 2) == {(204, b"")}
    assert server.connections == 1


async def test_idempotent_request_is_resent_when_a_kept_connection_dies(
    upstream: Upstream,
) -> None:
    """The provider closes a kept-alive connection as the next request goes out: a GET
    goes again on a new connection; a POST fails as unreachable (never sent twice)."""
    answered: list[asyncio.StreamWriter] = []  # held, so that no identity is reused

    async def reply(head: bytes, writer: asyncio.StreamWriter) -> bool:
        if any(seen is writer for seen in answered):
            return False  # hang up without answering
        answered.append(writer)
        writer.write(OK)
        await writer.drain()
        return True

    async with RawServer(reply) as server:
        await (await call(upstream, post(server.url, b"", method="GET"))).read()
        response = await call(upstream, post(server.url, b"", method="GET"))
        assert (response.status, await response.read()) == (200, b"{}")
        assert server.connections == 2
        with pytest.raises(UpstreamUnreachable, match="closed the connection"):
            await call(upstream, post(server.url))
        assert server.connections == 2
        assert upstream.in_use == 0


async def test_head_request_reads_no_body(upstream: Upstream) -> None:
    """A HEAD answer's Content-Length describes a body that is never sent."""
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"
    async with RawServer(answer(raw)) as server:
        response = await call(upstream, post(server.url, b"", method="HEAD"))
        assert await response.read() == b""
        response = await call(upstream, post(server.url, b"", method="HEAD"))
        assert response.status == 200
    assert server.connections == 1


async def test_total_timeout_cuts_a_body_that_never_ends(upstream: Upstream) -> None:
    """timeouts.total_s covers the body too: a stalled body read fails with TimeoutError;
    released after the rest arrived anyway, the connection is closed, its slot freed."""
    events: list[str] = []

    async def late_body(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}")
        await asyncio.sleep(0.3)
        writer.write(b"12345678")
        events.append("rest sent")
        return True

    async with RawServer(late_body) as server:
        response = await call(upstream, post(server.url), Timeouts(total_s=0.1))
        with pytest.raises(AttemptTimeout, match="total_s"):
            await response.read()
        await asyncio.sleep(0.4)
        assert events == ["rest sent"]
        response.release()
        assert upstream.in_use == 0
        response = await call(upstream, post(server.url), Timeouts(total_s=0.1))
        response.close()
    assert server.connections == 2


@pytest.mark.parametrize(
    ("timeouts", "setting"),
    [(Timeouts(first_byte_s=0.1), "first_byte_s"), (Timeouts(total_s=0.1), "total_s")],
)
async def test_no_answer_in_time_is_a_timeout_naming_the_setting(
    upstream: Upstream, timeouts: Timeouts, setting: str
) -> None:
    """No response head within first_byte_s, or within total_s (counted from the send,
    shorter here than first_byte_s): UpstreamTimeout naming that setting; the
    connection's slot is given back."""
    async with RawServer(silent) as server:
        with pytest.raises(UpstreamTimeout, match=setting):
            await call(upstream, post(server.url), timeouts)
        assert upstream.in_use == 0


async def test_garbage_answer_is_unreachable_naming_a_malformed_response(
    upstream: Upstream,
) -> None:
    """Bytes that are not HTTP: the attempt fails as unreachable, with a message that says
    the response was malformed (not that the connection closed) and quotes none of its
    bytes; the connection is dropped."""
    async with RawServer(answer(b"SSH-2.0-OpenSSH_9.2 s3cret\r\n\r\n", keep=False)) as server:
        with pytest.raises(UpstreamUnreachable, match="malformed HTTP response") as caught:
            await call(upstream, post(server.url))
        assert "SSH" not in caught.value.message and "s3cret" not in caught.value.message
        assert upstream.in_use == 0


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
#: Broken chunked framing after a good first chunk: a chunk-size line that is not hex; a
#: chunk whose size counts characters, not UTF-8 bytes (so its data runs past its end);
#: a chunk longer than its data (so the next size line is read as data).
BAD_FRAMING = pytest.mark.parametrize(
    "broken",
    [
        b"zz-not-hex\r\nxxx\r\n",
        b"%x\r\n%s\r\n" % (len("h\u00e9llo w\u00f6rld"), "h\u00e9llo w\u00f6rld".encode()),
        b"9\r\nhello\r\n5\r\nworld\r\n",
    ],
    ids=["bad_size_line", "size_in_characters", "size_too_long"],
)


def framing_breaks_after(first: bytes, broken: bytes) -> Reply:
    """The head and a good chunk, then (a moment later, so they are parsed first) the
    broken framing; the connection is then held open, as a provider that goes on would."""
    return two_writes(CHUNKED_HEAD + b"%x\r\n%s\r\n" % (len(first), first), broken, 0.1, 30)


def two_writes(first: bytes, then: bytes, gap_s: float, hold_s: float) -> Reply:
    """`first`, `then` `gap_s` later, then the connection held open for `hold_s`."""

    async def reply(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(first)
        await writer.drain()
        await asyncio.sleep(gap_s)
        writer.write(then)
        await writer.drain()
        await asyncio.sleep(hold_s)
        return False

    return reply


@BAD_FRAMING
async def test_broken_chunked_framing_fails_the_body_read_at_once(
    upstream: Upstream, broken: bytes
) -> None:
    """aiohttp's parser fails the connection on broken chunked framing but not the body:
    the body read must fail at once with a ClientPayloadError naming a malformed response
    (not wait out the provider, which holds the connection for 30 s); the connection is
    dropped and its slot freed."""
    async with RawServer(framing_breaks_after(b"hello", broken)) as server:
        response = await call(upstream, post(server.url))
        assert await response.content.readany() == b"hello"
        async with asyncio.timeout(10):  # well before the provider's 30 s
            with pytest.raises(ClientPayloadError, match="malformed HTTP response"):
                while await response.content.readany():
                    pass
        response.close()
        assert upstream.in_use == 0


async def test_name_with_several_addresses_connects_to_the_one_listening(
    upstream: Upstream,
) -> None:
    """`localhost` may resolve to ::1 before 127.0.0.1: the address that refuses is
    passed over (happy eyeballs) and the Host header keeps the name."""
    async with RawServer(answer(OK)) as server:
        url = f"http://localhost:{server.port}/v1/x"
        response = await call(upstream, post(url))
        assert await response.read() == b"{}"
    assert server.heads[0].startswith(
        f"POST /v1/x HTTP/1.1\r\nHost: localhost:{server.port}".encode()
    )


async def test_refused_connection_names_host_and_setting(upstream: Upstream) -> None:
    """Nothing listening: unreachable, naming host:port and the setting; slot freed."""
    async with RawServer(answer(OK)) as server:
        url = server.url
    with pytest.raises(UpstreamUnreachable, match=r"127\.0\.0\.1:\d+ .*providers\.p\.base_url"):
        await call(upstream, post(url))
    assert upstream.in_use == 0


async def test_unsafe_header_is_a_bad_request_naming_it(upstream: Upstream) -> None:
    request = UpstreamRequest("POST", "http://127.0.0.1:1/x", CIMultiDict({"X-A": "1\r\n2"}), b"")
    with pytest.raises(BadRequest, match="'X-A'"):
        await call(upstream, request)


def record_tls_contexts(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The threads client TLS contexts are built on, from now on."""
    built_on: list[threading.Thread] = []
    create = ssl.create_default_context

    def recording(*args: object, **kwargs: object) -> ssl.SSLContext:
        built_on.append(threading.current_thread())
        return create(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", recording)
    return built_on


async def test_an_https_provider_has_its_tls_context_built_at_start_off_the_loop(
    authority: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading the trust store blocks for ~20 ms: with an https provider configured it
    is done once at start, on a thread, not on the event loop by the first request."""
    monkeypatch.setenv("SSL_CERT_FILE", str(authority / "ca.pem"))
    async with RawServer(answer(OK), tls=serving_context(authority, "leaf")) as server:
        built_on = record_tls_contexts(monkeypatch)
        client = Upstream(pool_size=2)
        await client.start(tls=True)
        try:
            assert await round_trips(client, server.url, 2) == {(200, b"{}")}
        finally:
            await client.close()
    assert len(built_on) == 1
    assert built_on[0] is not threading.main_thread()


async def test_without_an_https_provider_at_start_the_first_https_connection_builds_it(
    authority: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread at start when nothing needs TLS; an https URL still works, the context
    built once, when first needed."""
    monkeypatch.setenv("SSL_CERT_FILE", str(authority / "ca.pem"))
    async with RawServer(answer(OK), tls=serving_context(authority, "leaf")) as server:
        built_on = record_tls_contexts(monkeypatch)
        client = Upstream(pool_size=2)
        await client.start()
        assert built_on == []
        try:
            assert await round_trips(client, server.url, 2) == {(200, b"{}")}
        finally:
            await client.close()
    assert built_on == [threading.main_thread()]


async def use_once(pool: ConnectionPool, origin: Origin) -> bool:
    """A connection taken and given back idle: whether it was a reused one."""
    protocol, reused = await acquire(pool, origin)
    pool.release(origin, protocol)
    return reused


async def test_a_providers_idle_limit_is_learned_and_kept_clear_of() -> None:
    """A provider that closes idle connections after 1 s (uvicorn: 5 s) would race a
    request sent at that moment. Once the pool has seen one of its connections closed
    while idle, it stops reusing them at 3/4 of what that one lasted: a request after
    0.85 s goes on a new connection, not on one the provider is about to close."""
    pool = ConnectionPool(limit=2, min_keepalive_s=0.1)
    async with RawServer(answer(OK), idle_s=1.0) as server:
        origin = target_of(server.url).origin
        assert [await use_once(pool, origin) for _ in range(2)] == [False, True]
        await asyncio.sleep(1.3)  # the provider closes it
        with structlog.testing.capture_logs() as logs:
            assert not await use_once(pool, origin)
        assert 0.75 <= pool.learned[origin] < 1.0
        assert [line["event"] for line in logs] == ["upstream.idle_limit_learned"]
        assert logs[0]["origin"] == f"http://127.0.0.1:{server.port}"
        await asyncio.sleep(0.85)  # past what was learned, short of the provider's 1 s
        assert not await use_once(pool, origin)
        assert server.connections == 3
    pool.close()


async def test_a_connection_we_expired_teaches_nothing() -> None:
    """Only a provider's close counts: a connection the pool closed itself (past its
    own limit) leaves the limit as it was."""
    pool = ConnectionPool(limit=2, keepalive_s=0.2, min_keepalive_s=0.1)
    async with RawServer(answer(OK)) as server:
        origin = target_of(server.url).origin
        assert not await use_once(pool, origin)
        await asyncio.sleep(0.3)
        assert not await use_once(pool, origin)
        assert server.connections == 2
    assert pool.learned == {}
    pool.close()


async def exchange_once(pool: ConnectionPool, origin: Origin) -> bool:
    """One request and its answer on a pooled connection (which restarts the server's
    idle timer), given back idle: whether the connection was a reused one."""
    protocol, reused = await acquire(pool, origin)
    protocol.set_response_params(read_until_eof=True)
    assert protocol.transport is not None
    protocol.transport.write(b"GET /v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    _, payload = await protocol.read()
    assert await payload.read() == b"{}"
    pool.release(origin, protocol)
    return reused


async def test_a_close_after_the_pools_own_limit_teaches_nothing() -> None:
    """A provider that closes idle connections later than the pool stops reusing them
    (the sweep runs every keepalive_s, so one may outlive it) raced nothing."""
    pool = ConnectionPool(limit=2, keepalive_s=1.0, min_keepalive_s=0.1)
    async with RawServer(answer(OK), idle_s=1.2) as server:
        origin = target_of(server.url).origin
        assert not await exchange_once(pool, origin)
        await asyncio.sleep(0.6)
        assert await exchange_once(pool, origin)  # idle from 0.6 s; closed at 1.8
        await asyncio.sleep(1.7)
        assert not await exchange_once(pool, origin)
    assert pool.learned == {}
    pool.close()


class FirstClosedEarly:
    """Closes its first connection after `after_s` (a restart, a per-connection request
    cap); keeps every other one open until the test ends."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> FirstClosedEarly:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        if self.connections == 1:
            await asyncio.sleep(self.after_s)
            writer.close()


async def test_a_limit_a_longer_lived_connection_disproves_is_forgotten() -> None:
    """One connection closed early teaches a short limit; a later one still open at
    twice that age shows it was no idle limit, and the pool's own limit applies again."""
    pool = ConnectionPool(limit=2, min_keepalive_s=0.1)
    async with FirstClosedEarly(after_s=0.2) as server:
        origin = Origin("http", "127.0.0.1", server.port)
        assert not await use_once(pool, origin)
        await asyncio.sleep(0.4)
        assert not await use_once(pool, origin)
        assert 0.1 <= pool.learned[origin] < 0.2
        await asyncio.sleep(0.5)
        with structlog.testing.capture_logs() as logs:
            assert not await use_once(pool, origin)  # too old for what was learned...
        assert pool.learned == {}  # ...but alive: forgotten
        assert [line["event"] for line in logs] == ["upstream.idle_limit_forgotten"]
        assert await use_once(pool, origin)
    pool.close()


async def test_a_log_that_fails_does_not_fail_the_request_that_learned() -> None:
    """The pool's log lines are written on the event loop inside a request's connect:
    an output that raises (a closed stdout) must not turn into that request's error."""

    def broken(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        raise BrokenPipeError(32, "Broken pipe")

    pool = ConnectionPool(limit=2, min_keepalive_s=0.1)
    async with RawServer(answer(OK), idle_s=0.2) as server:
        origin = target_of(server.url).origin
        assert not await use_once(pool, origin)
        await asyncio.sleep(0.4)
        saved = structlog.get_config()
        structlog.configure(processors=[broken], cache_logger_on_first_use=False)
        try:
            assert not await use_once(pool, origin)
        finally:
            structlog.configure(**saved)
        assert origin in pool.learned
    pool.close()


async def test_a_request_cancelled_while_the_tls_context_builds_leaves_it_to_the_next(
    authority: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build at start is shared: the first https request being cancelled while it
    waits (its client gone, a hedge lost) must not cancel it for every later one."""
    monkeypatch.setenv("SSL_CERT_FILE", str(authority / "ca.pem"))
    async with RawServer(answer(OK), tls=serving_context(authority, "leaf")) as server:
        create = ssl.create_default_context

        def slow(*args: object, **kwargs: object) -> ssl.SSLContext:
            threading.Event().wait(0.3)  # a large trust store, a busy machine
            return create(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(ssl, "create_default_context", slow)
        pool = ConnectionPool(limit=2)
        pool.prepare_tls()
        origin = target_of(server.url).origin
        first = asyncio.create_task(acquire(pool, origin))
        await asyncio.sleep(0.05)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        protocol, reused = await asyncio.wait_for(acquire(pool, origin), 2.0)
        assert not reused
        pool.release(origin, protocol)
        pool.close()
