"""Broken HTTP framing from a provider, end to end: a raw asyncio server on 127.0.0.1
answers with a good response head and then chunked framing that does not parse. The
client hears at once that the provider's response broke (a 502 before the commit point,
an in-band error event after it), never a timeout after waiting for bytes that cannot
come."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from conftest import Running

#: Far longer than any test here may take: a response that waited for one of these
#: would show as a test that ran out of its own (shorter) bound.
PATIENT = {"timeouts": {"first_byte_s": 30, "idle_s": 30}}
WITHIN_S = 10.0
CHAT_STREAM = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
TEXT = "h\u00e9llo w\u00f6rld"
#: A chunk-size line that is not hex; a size that counts characters, not UTF-8 bytes (the
#: data runs past its chunk); a size longer than its data (the next size line is eaten).
BAD_FRAMING = pytest.mark.parametrize(
    "broken",
    [
        b"zz-not-hex\r\nxxx\r\n",
        b"%x\r\n%s\r\n" % (len(TEXT), TEXT.encode()),
        b"9\r\nhello\r\n5\r\nworld\r\n",
    ],
    ids=["bad_size_line", "size_in_characters", "size_too_long"],
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def delta(content: str | None = None, role: str | None = None) -> bytes:
    body = {"role": role} if role else {"content": content}
    event = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": body}]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


class BrokenFraming:
    """Answers each request with the SSE head and `events` (each its own chunk), then,
    a moment later (so those are parsed first), `broken`; then holds the connection open
    far longer than the test may run, as a provider that goes on would."""

    def __init__(self, events: list[bytes], broken: bytes) -> None:
        self.events = events
        self.broken = broken
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> BrokenFraming:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(SSE_HEAD + b"".join(chunk(event) for event in self.events))
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.write(self.broken)
            await writer.drain()
            await asyncio.sleep(60)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # spangate dropped the connection, or the test ended
        finally:
            writer.close()


@pytest.fixture
async def post_through(
    spangate_for: Callable[..., Running],
) -> AsyncIterator[Callable[..., Any]]:
    """post(events, broken) → (status, body, running): one streaming chat request through a
    spangate whose provider breaks its framing as BrokenFraming does."""

    async def post(events: list[bytes], broken: bytes) -> tuple[int, bytes, Running]:
        async with BrokenFraming(events, broken) as provider:
            config = {"providers": {"openai": {"kind": "openai", "base_url": provider.url}}}
            running = await asyncio.to_thread(spangate_for, {**config, "server": PATIENT})
            async with (
                asyncio.timeout(WITHIN_S),
                aiohttp.ClientSession() as http,
                http.post(running.openai_base_url + "/chat/completions", json=CHAT_STREAM) as r,
            ):
                return r.status, await r.read(), running

    yield post


@BAD_FRAMING
async def test_broken_framing_before_the_commit_point_is_an_immediate_502(
    post_through: Callable[..., Any], broken: bytes
) -> None:
    """Framing that breaks before the first content event: a 502 in the client's format,
    long before timeouts.first_byte_s (30 s), not a 504 after it; the attempt failed as a
    broken stream, not a timeout."""
    status, body, running = await post_through([delta(role="assistant")], broken)
    assert status == 502, body
    error = json.loads(body)["error"]
    assert error["code"] == "upstream_unreachable"
    assert "time" not in error["message"]
    assert attempt_errors(running) == {"stream_interrupted"}


@BAD_FRAMING
async def test_broken_framing_after_the_commit_point_ends_with_an_error_event(
    post_through: Callable[..., Any], broken: bytes
) -> None:
    """Framing that breaks after content reached the client: the events sent so far, then
    at once (long before timeouts.idle_s, 30 s) one error event saying the stream broke,
    not that the provider went idle."""
    events = [delta(role="assistant"), delta("Hello")]
    status, body, running = await post_through(events, broken)
    assert status == 200
    assert body.startswith(b"".join(events))
    last = json.loads(body.removeprefix(b"".join(events)).removeprefix(b"data: "))
    assert last["error"]["code"] == "stream_interrupted"
    assert "broke off" in last["error"]["message"]
    assert "idle" not in last["error"]["message"]
    assert attempt_errors(running) == {"stream_interrupted"}


def attempt_errors(running: Running) -> set[str]:
    """The error.type of the request's attempts (CLIENT spans)."""
    spans = running.finished_spans()
    return {
        str(span.attributes.get("error.type"))
        for span in spans
        if not span.name.startswith("POST ")
    }
