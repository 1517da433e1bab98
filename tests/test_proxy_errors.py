"""Errors spangate makes itself: right status, the caller's wire format, a message that says
what to fix, and never a Python traceback.

Every case runs against both formats: OpenAI `{"error": {message, type, param, code}}` on
/v1/chat/completions and Anthropic `{"type": "error", "error": {type, message}}` on
/v1/messages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from conftest import Running, basic_config
from fakeprovider import FakeProvider, delay, reset, unused_port

GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"
HELLO: Any = [{"role": "user", "content": "hi there"}]
SMALL_LIMIT = 1024


@dataclass(frozen=True)
class Format:
    """One wire format: where to call, what to send, and the error codes it uses."""

    name: str
    path: str
    headers: dict[str, str]
    valid: dict[str, Any]

    @property
    def body(self) -> bytes:
        return json.dumps(self.valid).encode()


OPENAI = Format("openai", "/v1/chat/completions", {}, {"model": GPT, "messages": HELLO})
ANTHROPIC = Format(
    "anthropic",
    "/v1/messages",
    {"anthropic-version": "2023-06-01", "x-api-key": "k"},
    {"model": CLAUDE, "max_tokens": 16, "messages": HELLO},
)
FORMATS = pytest.mark.parametrize("fmt", [OPENAI, ANTHROPIC], ids=["openai", "anthropic"])


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def send(
    base: str, fmt: Format, body: Any, *, path: str | None = None, method: str = "POST"
) -> Reply:
    """Send `body` (bytes, or an async iterator for a chunked upload) with raw aiohttp."""
    headers = {"Content-Type": "application/json", **fmt.headers}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base + (path or fmt.path), data=body, headers=headers) as resp,
    ):
        return Reply(resp.status, resp.headers.get("Content-Type", ""), await resp.read())


def check_error(
    fmt: Format,
    reply: Reply,
    status: int,
    *,
    code: str,
    anthropic_type: str,
    openai_type: str = "invalid_request_error",
    param: str | None = None,
    mentions: tuple[str, ...] = (),
) -> str:
    """Assert status and the exact error shape of `fmt`; return the message."""
    assert reply.status == status, reply.body
    assert reply.content_type == "application/json"
    assert_no_traceback(reply.body)
    body = reply.json()
    if fmt is OPENAI:
        assert list(body) == ["error"]
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["param"], error["code"]) == (openai_type, param, code)
    else:
        assert set(body) == {"type", "error"}
        assert body["type"] == "error"
        error = body["error"]
        assert set(error) == {"type", "message"}
        assert error["type"] == anthropic_type
    message = error["message"]
    assert isinstance(message, str) and message
    for word in mentions:
        assert word in message, (word, message)
    return message


def assert_no_traceback(body: bytes) -> None:
    assert b"Traceback" not in body
    assert b'File "' not in body


@pytest.fixture
def small(fake: FakeProvider, spangate_for: Callable[..., Running]) -> Running:
    """spangate with server.max_body_bytes = 1024."""
    return spangate_for(basic_config(fake, server={"max_body_bytes": SMALL_LIMIT}))


# --------------------------------------------------------------------------- bad bodies


def _malformed(fmt: Format) -> bytes:
    return b'{"model": "x", "messages": ['


def _array(fmt: Format) -> bytes:
    return json.dumps([fmt.valid]).encode()


def _empty(fmt: Format) -> bytes:
    return b""


def _model_not_a_string(fmt: Format) -> bytes:
    return json.dumps({**fmt.valid, "model": 5}).encode()


@FORMATS
@pytest.mark.parametrize(
    ("body", "mention"),
    [
        pytest.param(_malformed, "JSON", id="malformed"),
        pytest.param(_array, "JSON object", id="array"),
        pytest.param(_empty, "JSON object", id="empty"),
        pytest.param(_model_not_a_string, "model", id="model-not-a-string"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_400(
    fmt: Format,
    body: Callable[[Format], bytes],
    mention: str,
    fake: FakeProvider,
    spangate: Running,
) -> None:
    """Malformed JSON, an array, an empty body, a `model` that is not a string: 400
    invalid_json in the client's format, naming what is wrong; nothing goes upstream."""
    reply = await send(spangate.url, fmt, body(fmt))
    check_error(
        fmt,
        reply,
        400,
        code="invalid_json",
        anthropic_type="invalid_request_error",
        mentions=(mention,),
    )
    assert fake.received == []


@FORMATS
async def test_missing_model_is_400(fmt: Format, fake: FakeProvider, spangate: Running) -> None:
    """No `model`: 400 missing_model with param "model", naming the parameter."""
    body = {k: v for k, v in fmt.valid.items() if k != "model"}
    reply = await send(spangate.url, fmt, json.dumps(body).encode())
    check_error(
        fmt,
        reply,
        400,
        code="missing_model",
        anthropic_type="invalid_request_error",
        param="model",
        mentions=("model",),
    )
    assert fake.received == []


def check_too_large(fmt: Format, reply: Reply) -> None:
    """The 413 for a body over server.max_body_bytes, in the client's format, naming it."""
    check_error(
        fmt,
        reply,
        413,
        code="body_too_large",
        anthropic_type="request_too_large",
        mentions=("max_body_bytes", str(SMALL_LIMIT)),
    )


@FORMATS
async def test_body_over_max_body_bytes_is_413(
    fmt: Format, fake: FakeProvider, small: Running
) -> None:
    """A body over server.max_body_bytes (Content-Length known): 413 naming the setting."""
    big = {**fmt.valid, "padding": "x" * (2 * SMALL_LIMIT)}
    reply = await send(small.url, fmt, json.dumps(big).encode())
    check_too_large(fmt, reply)
    assert fake.received == []


@FORMATS
async def test_chunked_body_over_max_body_bytes_is_413(
    fmt: Format, fake: FakeProvider, small: Running
) -> None:
    """The same limit holds for a chunked upload without Content-Length."""

    async def chunks() -> AsyncIterator[bytes]:
        yield fmt.body[:-1] + b', "padding": "'
        for _ in range(4):
            yield b"x" * SMALL_LIMIT
        yield b'"}'

    reply = await send(small.url, fmt, chunks())
    check_error(
        fmt,
        reply,
        413,
        code="body_too_large",
        anthropic_type="request_too_large",
        mentions=("max_body_bytes",),
    )
    assert fake.received == []


async def expect_continue(
    port: int, fmt: Format, length: int, expectation: str = "100-continue"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection and send only the head of a POST of `length` bytes that says
    `Expect: 100-continue` (or `expectation`), as a client that waits to be asked for its
    body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {fmt.path} HTTP/1.1\r\nHost: spangate\r\nContent-Type: application/json\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in fmt.headers.items())
    head += f"Content-Length: {length}\r\nExpect: {expectation}\r\n\r\n"
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of the next response on `reader` (its body sized by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    sized = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    length = int(sized[0].split(b":", 1)[1]) if sized else 0
    return head, await asyncio.wait_for(reader.readexactly(length), 10)


@FORMATS
async def test_expect_continue_over_the_limit_is_413_without_100_continue(
    fmt: Format, fake: FakeProvider, small: Running
) -> None:
    """`Expect: 100-continue` with a Content-Length over server.max_body_bytes: the first
    answer is the 413 in the client's format, never a 100 Continue, so the client (which
    sends nothing until asked) never sends the body; the 413 says the connection closes."""
    reader, writer = await expect_continue(small.server.port, fmt, 2 * SMALL_LIMIT)
    try:
        head, body = await read_answer(reader)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b"\r\nConnection: close\r\n" in head
    reply = Reply(413, "application/json", body)
    check_too_large(fmt, reply)
    assert fake.received == []


@pytest.mark.parametrize("expectation", ["100-continue", "100-Continue"])
async def test_expect_continue_within_the_limit_is_asked_for_and_forwarded(
    expectation: str, fake: FakeProvider, small: Running
) -> None:
    """`Expect: 100-continue` (its name in any case) with a body within the limit still
    gets its 100 Continue, and the body sent after it is forwarded."""
    reader, writer = await expect_continue(small.server.port, OPENAI, len(OPENAI.body), expectation)
    try:
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(OPENAI.body)
        head, _ = await read_answer(reader)
    finally:
        writer.close()
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert fake.last.body == OPENAI.body


@FORMATS
@pytest.mark.parametrize("size", [len(OPENAI.body), 2 * SMALL_LIMIT], ids=["within", "over"])
async def test_an_expectation_other_than_100_continue_is_417_in_the_clients_format(
    fmt: Format, size: int, fake: FakeProvider, small: Running
) -> None:
    """`Expect: 200-ok`: the first answer is a 417 in the client's format (not aiohttp's
    plain text) naming the value and the one expectation spangate supports, never a 100
    Continue, and it says the connection closes (the client may be sending the body)."""
    reader, writer = await expect_continue(small.server.port, fmt, size, "200-ok")
    try:
        head, body = await read_answer(reader)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 417 "), head
    assert b"\r\nConnection: close\r\n" in head
    reply = Reply(417, "application/json", body)
    check_error(
        fmt,
        reply,
        417,
        code="expectation_failed",
        anthropic_type="invalid_request_error",
        mentions=("'200-ok'", "100-continue"),
    )
    assert fake.received == []


@FORMATS
async def test_body_just_under_the_limit_is_forwarded(
    fmt: Format, fake: FakeProvider, small: Running
) -> None:
    """A body at the limit is not refused: the limit is on size, not on everything."""
    body = fmt.body[:-1] + b', "pad": "'
    body += b"x" * (SMALL_LIMIT - len(body) - 2) + b'"}'
    assert len(body) == SMALL_LIMIT
    reply = await send(small.url, fmt, body)
    assert reply.status == 200, reply.body
    assert fake.last.body == body


def test_openai_sdk_gets_413_with_the_fix(fake: FakeProvider, small: Running) -> None:
    """The openai SDK raises APIStatusError(413) whose message names max_body_bytes."""
    messages: Any = [{"role": "user", "content": "x" * (2 * SMALL_LIMIT)}]
    with (
        openai.OpenAI(base_url=small.openai_base_url, api_key="k", max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        client.chat.completions.create(model=GPT, messages=messages)
    assert caught.value.status_code == 413
    assert caught.value.code == "body_too_large"
    assert "max_body_bytes" in caught.value.message
    assert fake.received == []


def test_anthropic_sdk_gets_413_request_too_large(fake: FakeProvider, small: Running) -> None:
    """The anthropic SDK raises APIStatusError(413) with type request_too_large."""
    messages: Any = [{"role": "user", "content": "x" * (2 * SMALL_LIMIT)}]
    with (
        anthropic.Anthropic(base_url=small.url, api_key="k", max_retries=0) as client,
        pytest.raises(anthropic.APIStatusError) as caught,
    ):
        client.messages.create(model=CLAUDE, max_tokens=16, messages=messages)
    assert caught.value.status_code == 413
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "request_too_large"
    assert "max_body_bytes" in body["error"]["message"]


# --------------------------------------------------------------------------- paths


@FORMATS
@pytest.mark.parametrize("path", ["/api/chat", "/v2/chat/completions", "/"])
async def test_unknown_path_is_404(
    fmt: Format, path: str, fake: FakeProvider, spangate: Running
) -> None:
    """A path spangate does not serve: 404 unknown_path that says where the APIs live."""
    reply = await send(spangate.url, fmt, fmt.body, path=path)
    check_error(
        fmt,
        reply,
        404,
        code="unknown_path",
        anthropic_type="not_found_error",
        mentions=(path, "/v1/"),
    )
    assert fake.received == []


# --------------------------------------------------------------------------- upstream failures


@FORMATS
async def test_unreachable_upstream_is_502(
    fmt: Format, fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """Nothing listening at the provider's base_url: 502 upstream_unreachable naming base_url."""
    config = basic_config(fake)
    for provider in config["providers"].values():
        provider["base_url"] = f"http://127.0.0.1:{unused_port()}"
    running = spangate_for(config)
    reply = await send(running.url, fmt, fmt.body)
    check_error(
        fmt,
        reply,
        502,
        code="upstream_unreachable",
        anthropic_type="api_error",
        openai_type="server_error",
        mentions=("base_url",),
    )


@FORMATS
async def test_slow_upstream_is_504(
    fmt: Format, fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """No response within server.timeouts.first_byte_s: 504 naming the setting."""
    config = basic_config(fake, server={"timeouts": {"first_byte_s": 0.3}})
    running = spangate_for(config)
    fake.script(delay(5))
    reply = await send(running.url, fmt, fmt.body)
    check_error(
        fmt,
        reply,
        504,
        code="upstream_timeout",
        anthropic_type="timeout_error",
        openai_type="server_error",
        mentions=("first_byte_s",),
    )
    assert await fake.await_disconnects(1)  # spangate gave up on the upstream request


@FORMATS
async def test_upstream_reset_before_answering_is_502(
    fmt: Format, fake: FakeProvider, spangate: Running
) -> None:
    """The provider resets the connection without a response: 502 upstream_unreachable."""
    fake.script(reset())
    reply = await send(spangate.url, fmt, fmt.body)
    check_error(
        fmt,
        reply,
        502,
        code="upstream_unreachable",
        anthropic_type="api_error",
        openai_type="server_error",
        mentions=("closed the connection",),
    )
    assert len(fake.received) == 1


def test_openai_sdk_sees_502_as_internal_server_error(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """The openai SDK raises InternalServerError(502) carrying spangate's explanation."""
    config = basic_config(fake)
    config["providers"]["openai"]["base_url"] = f"http://127.0.0.1:{unused_port()}"
    running = spangate_for(config)
    with (
        openai.OpenAI(base_url=running.openai_base_url, api_key="k", max_retries=0) as client,
        pytest.raises(openai.InternalServerError) as caught,
    ):
        client.chat.completions.create(model=GPT, messages=HELLO)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unreachable"
    assert "base_url" in caught.value.message


def test_openai_sdk_raises_bad_request_for_a_format_mismatch(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """openai.BadRequestError carries spangate's message for input it can send (wrong alias)."""
    models = {"claude-fast": {"targets": [{"provider": "anthropic", "model": CLAUDE}]}}
    running = spangate_for(basic_config(fake, models=models))
    with (
        openai.OpenAI(base_url=running.openai_base_url, api_key="k", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.chat.completions.create(model="claude-fast", messages=HELLO)
    assert caught.value.code == "model_format_mismatch"
    assert caught.value.param == "model"
    assert "claude-fast" in caught.value.message
    assert fake.received == []


# --------------------------------------------------------------------------- not a forward proxy


async def raw_exchange(port: int, request: bytes) -> tuple[int, bytes]:
    """Send raw bytes (a request that says Connection: close); return status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    ("request_line", "extra", "fmt"),
    [
        (b"GET http://example.com/v1/models HTTP/1.1", b"", OPENAI),
        (b"GET http://127.0.0.1/v1/models HTTP/1.1", b"", OPENAI),
        (b"POST http://example.com/v1/messages HTTP/1.1", b"anthropic-version: 1\r\n", ANTHROPIC),
    ],
    ids=["foreign-host", "own-host", "anthropic"],
)
async def test_absolute_form_uri_is_refused(
    request_line: bytes, extra: bytes, fmt: Format, fake: FakeProvider, spangate: Running
) -> None:
    """`GET http://host/... HTTP/1.1`: 400 absolute_uri_refused; nothing is contacted."""
    request = request_line + b"\r\nHost: example.com\r\nConnection: close\r\n" + extra
    request += b"Content-Length: 0\r\n\r\n"
    status, body = await raw_exchange(spangate.server.port, request)
    reply = Reply(status, "application/json", body)
    check_error(
        fmt,
        reply,
        400,
        code="absolute_uri_refused",
        anthropic_type="invalid_request_error",
        mentions=("forward proxy",),
    )
    assert fake.received == []


async def test_connect_is_refused(fake: FakeProvider, spangate: Running) -> None:
    """CONNECT host:port: refused with a 4xx (connect_refused); nothing is contacted."""
    port = fake.port
    target = f"127.0.0.1:{port}"
    request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode()
    status, body = await raw_exchange(spangate.server.port, request)
    assert 400 <= status < 500
    assert_no_traceback(body)
    error = json.loads(body)["error"]
    assert error["code"] == "connect_refused"
    assert "CONNECT" in error["message"]
    assert fake.received == []
