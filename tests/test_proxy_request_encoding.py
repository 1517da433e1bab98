"""A compressed request body (client's `Content-Encoding`): aiohttp's server undoes gzip,
deflate, br and zstd before spangate reads it, so spangate routes on the decoded JSON and
forwards it decoded, without the coding's header and with its own Content-Length;
server.max_body_bytes bounds the decoded size."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import Callable

import brotli
import pytest
from backports import zstd
from conftest import Running, basic_config
from fakeprovider import FakeProvider
from test_telemetry_support import GPT, raw_post

Start = Callable[..., Running]
CHAT = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
LIMIT = 64 * 1024


@pytest.fixture
def aliased(fake: FakeProvider, spangate_for: Start) -> Running:
    models = {"fast": {"targets": [{"provider": "openai", "model": GPT}]}}
    return spangate_for(basic_config(fake, models=models, server={"max_body_bytes": LIMIT}))


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("GZip", gzip.compress),
        ("br", brotli.compress),
        ("zstd", zstd.compress),
    ],
)
async def test_compressed_request_goes_upstream_decoded_without_its_coding(
    fake: FakeProvider, aliased: Running, encoding: str, pack: Callable[[bytes], bytes]
) -> None:
    """The alias is read from the decoded body and rewritten; the provider gets plain JSON
    with no Content-Encoding and a Content-Length that is the decoded body's."""
    body = json.dumps(CHAT).encode()
    url = aliased.openai_base_url + "/chat/completions"
    headers = {"Content-Encoding": encoding}
    status, answer = await raw_post(url, pack(body), headers)
    assert status == 200, answer
    (received,) = fake.received
    assert "Content-Encoding" not in received.headers
    assert received.headers["Content-Length"] == str(len(received.body))
    assert received.json() == {**CHAT, "model": GPT}


async def test_compressed_request_inflating_past_max_body_bytes_is_413(
    fake: FakeProvider, aliased: Running
) -> None:
    """A small gzip body that inflates past server.max_body_bytes is refused with the
    413 spangate makes in the client's format, and never reaches the provider."""
    padding = "a" * (4 * LIMIT)
    bomb = gzip.compress(json.dumps({**CHAT, "user": padding}).encode())
    assert len(bomb) < LIMIT
    url = aliased.openai_base_url + "/chat/completions"
    status, answer = await raw_post(url, bomb, {"Content-Encoding": "gzip"})
    assert status == 413
    error = json.loads(answer)["error"]
    assert error["code"] == "body_too_large"
    assert "server.max_body_bytes" in error["message"]
    assert fake.received == []


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize(
    ("path", "headers", "field", "kind"),
    [
        ("/v1/chat/completions", {}, "code", "invalid_content_encoding"),
        ("/v1/messages", {"anthropic-version": "2023-06-01"}, "type", "invalid_request_error"),
    ],
    ids=["openai", "anthropic"],
)
async def test_compressed_request_that_does_not_decode_is_400_in_the_client_format(
    fake: FakeProvider,
    aliased: Running,
    path: str,
    headers: dict[str, str],
    field: str,
    kind: str,
    encoding: str,
) -> None:
    """A body labelled gzip, br or zstd that is not so encoded: a 400 in the client's
    format that names the Content-Encoding and the codings read, not aiohttp's plain
    text or an internal error; nothing reaches the provider."""
    sent = {**headers, "Content-Encoding": encoding}
    status, answer = await raw_post(aliased.url + path, b'{"model": "fast"}', sent)
    assert status == 400, answer
    error = json.loads(answer)["error"]
    assert error[field] == kind
    assert "Content-Encoding" in error["message"]
    assert "gzip, deflate, br or zstd" in error["message"]
    assert fake.received == []


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [("br", lambda data: brotli.compress(data, quality=4)), ("zstd", zstd.compress)],
)
async def test_br_or_zstd_request_inflating_past_max_body_bytes_is_413(
    fake: FakeProvider, aliased: Running, encoding: str, pack: Callable[[bytes], bytes]
) -> None:
    """A small br or zstd body that inflates past server.max_body_bytes gets the same
    413 as gzip, in the client's format, and never reaches the provider."""
    bomb = pack(json.dumps({**CHAT, "user": "a" * (4 * LIMIT)}).encode())
    assert len(bomb) < LIMIT
    url = aliased.openai_base_url + "/chat/completions"
    status, answer = await raw_post(url, bomb, {"Content-Encoding": encoding})
    assert status == 413, answer
    assert json.loads(answer)["error"]["code"] == "body_too_large"
    assert fake.received == []


async def test_a_request_with_two_content_encoding_lines_is_400(
    fake: FakeProvider, aliased: Running
) -> None:
    """aiohttp's C parser undoes the last Content-Encoding line and its Python parser the
    first: with two, the body spangate would forward could carry the wrong label, so the
    request is refused with a 400 in the client's format and nothing reaches the provider."""
    body = gzip.compress(json.dumps(CHAT).encode())
    host, port = aliased.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/json\r\nContent-Encoding: identity\r\n"
        f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    try:
        head_in = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        lines = head_in.decode().split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        answer = await asyncio.wait_for(reader.readexactly(int(fields["content-length"])), 30)
    finally:
        writer.close()
    assert lines[0].split()[1] == "400", head_in
    error = json.loads(answer)["error"]
    assert error["code"] == "invalid_content_encoding"
    assert "more than one Content-Encoding" in error["message"]
    assert fake.received == []
