"""Streams are asked of the provider uncompressed: `Accept-Encoding: identity` upstream.

The SDKs accept gzip (and br and zstd where those modules are installed), and providers
then compress their event streams (Anthropic gzips them). A compressed stream can only be
relayed as opaque bytes: no flushing on event boundaries, no failover on a first-event
error, no error event on a break, no tokens or cost in telemetry. So spangate asks for a
stream in plain bytes; a non-stream request keeps the client's Accept-Encoding (a
compressed JSON answer is read by telemetry and the failover alike).
"""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import aiohttp
import pytest
from conftest import Running
from fakeprovider import FakeProvider, accepts_gzip, gzip_if_accepted, gzipped
from multidict import CIMultiDict, CIMultiDictProxy
from structlog.testing import capture_logs
from test_telemetry_support import (
    CLAUDE,
    GPT,
    claude,
    completed_lines,
    count,
    metric_points,
    oai,
    points_where,
    settle,
)

from instrumentation import semconv as sc
from proxy import body as bodylib
from proxy.endpoints import classify
from proxy.providers import ADAPTERS
from proxy.providers.base import Incoming, ProviderSettings

HELLO: Any = [{"role": "user", "content": "hi there"}]
SDK_ACCEPT = "gzip, deflate, br, zstd"
SETTINGS = ProviderSettings("http://127.0.0.1:9", None, "2024-10-21", ())


def _incoming(path: str, body: dict[str, Any], accept: str = SDK_ACCEPT) -> Incoming:
    """A request as spangate's handler builds it (fields decoded where a model is read)."""
    endpoint = classify("POST", path, anthropic_hint=path.startswith("/v1/messages"))
    assert endpoint is not None
    raw = json.dumps(body).encode()
    fields = bodylib.decode_fields(raw) if endpoint.reads_body else bodylib.RequestFields()
    headers = CIMultiDictProxy(CIMultiDict({"Accept-Encoding": accept, "Accept": "*/*"}))
    return Incoming("POST", endpoint, "", headers, raw, fields)


STREAMS = {
    "chat_completions": ("/v1/chat/completions", {"model": GPT, "stream": True}),
    "completions": ("/v1/completions", {"model": GPT, "prompt": "x", "stream": True}),
    "responses": ("/v1/responses", {"model": GPT, "input": "x", "stream": True}),
    "messages": ("/v1/messages", {"model": CLAUDE, "max_tokens": 5, "stream": True}),
    "azure_deployment": (
        "/openai/deployments/gpt4/chat/completions",
        {"messages": [], "stream": True},
    ),
}


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
@pytest.mark.parametrize("api", list(STREAMS))
def test_adapter_asks_for_a_stream_in_identity(kind: str, api: str) -> None:
    """Every adapter builds a stream request (the body's `"stream": true`, an Azure
    deployment path's too) with one `Accept-Encoding: identity`, whatever the client
    accepted."""
    path, body = STREAMS[api]
    request = ADAPTERS[kind].build_request(_incoming(path, body), SETTINGS, None)
    assert request.headers.getall("Accept-Encoding") == ["identity"]
    assert request.headers["Accept"] == "*/*"  # the rest as the client sent it


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": GPT, "stream": False}),
        ("/v1/messages", {"model": CLAUDE, "max_tokens": 5}),
        ("/openai/deployments/gpt4/chat/completions", {"messages": []}),
        ("/v1/some/other", {"stream": True}),  # pass-through: the body is not read
    ],
    ids=["stream-false", "no-stream", "azure-deployment", "pass-through"],
)
def test_adapter_keeps_the_client_accept_encoding_when_no_stream_is_asked(
    kind: str, path: str, body: dict[str, Any]
) -> None:
    """A request that does not ask for a stream goes with the client's Accept-Encoding."""
    request = ADAPTERS[kind].build_request(_incoming(path, body), SETTINGS, None)
    assert request.headers.getall("Accept-Encoding") == [SDK_ACCEPT]


def test_a_configured_accept_encoding_is_the_operators_choice() -> None:
    """`providers.NAME.headers` setting Accept-Encoding wins over spangate's identity."""
    settings = ProviderSettings("http://127.0.0.1:9", None, None, (("Accept-Encoding", "br"),))
    path, body = STREAMS["chat_completions"]
    request = ADAPTERS["openai"].build_request(_incoming(path, body), settings, None)
    assert request.headers.getall("Accept-Encoding") == ["br"]


def _tokens(running: Running, kind: str) -> int:
    points = metric_points(running, sc.METRIC_TOKEN_USAGE)
    return count(points_where(points, gen_ai__token__type=kind))


def test_anthropic_sdk_stream_is_asked_uncompressed_and_read_by_telemetry(
    fake: FakeProvider, spangate: Running
) -> None:
    """A provider that gzips streams for clients accepting gzip (as Anthropic does) is
    asked for identity: the SDK gets the events, and telemetry the tokens, the cost and
    the response model."""
    fake.script(gzip_if_accepted())
    client = claude(spangate)
    with capture_logs() as captured:
        with client.messages.stream(model=CLAUDE, max_tokens=20, messages=HELLO) as stream:
            text = "".join(stream.text_stream)
            message = stream.get_final_message()
        settle(spangate)
    assert fake.last.headers.getall("accept-encoding") == ["identity"]
    assert text == f"Hello from {CLAUDE}: hi there"
    (line,) = completed_lines(captured)
    assert line["input_tokens"] == message.usage.input_tokens
    assert line["output_tokens"] == message.usage.output_tokens
    assert line["cost_usd"] > 0
    assert _tokens(spangate, "output") == 1
    duration = metric_points(spangate, sc.METRIC_OPERATION_DURATION)
    assert points_where(duration, gen_ai__response__model=CLAUDE)


def test_openai_sdk_stream_is_asked_uncompressed_and_read_by_telemetry(
    fake: FakeProvider, spangate: Running
) -> None:
    """An OpenAI chat stream through spangate reaches the provider with Accept-Encoding:
    identity; the SDK gets the chunks, and telemetry the tokens, cost and time to first
    chunk."""
    fake.script(gzip_if_accepted())
    with capture_logs() as captured:
        chunks = list(oai(spangate).chat.completions.create(model=GPT, messages=HELLO, stream=True))
        settle(spangate)
    assert fake.last.headers.getall("accept-encoding") == ["identity"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Hello from {GPT}: hi there"
    (line,) = completed_lines(captured)
    assert line["input_tokens"] > 0 and line["output_tokens"] > 0
    assert line["cost_usd"] > 0
    assert _tokens(spangate, "input") == 1
    first_chunk = metric_points(spangate, sc.METRIC_TIME_TO_FIRST_CHUNK)
    assert count(points_where(first_chunk, gen_ai__response__model=GPT)) == 1


def test_non_stream_request_keeps_the_client_accept_encoding(
    fake: FakeProvider, spangate: Running
) -> None:
    """A non-stream call goes up with the SDK's Accept-Encoding, and its gzip answer
    comes back compressed, read by telemetry as before."""
    fake.script(gzip_if_accepted())
    client = oai(spangate)
    with capture_logs() as captured:
        raw = client.chat.completions.with_raw_response.create(model=GPT, messages=HELLO)
        settle(spangate)
    sent = fake.last.headers.getall("accept-encoding")
    assert sent != ["identity"] and accepts_gzip(sent)
    assert raw.headers["content-encoding"] == "gzip"
    (line,) = completed_lines(captured)
    assert line["output_tokens"] == raw.parse().usage.completion_tokens  # type: ignore[union-attr]


async def _raw_stream(url: str, body: bytes) -> tuple[str | None, bytes]:
    headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip"}
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(url, data=body, headers=headers) as resp,
    ):
        return resp.headers.get("Content-Encoding"), await resp.read()


def test_a_stream_compressed_anyway_is_relayed_as_sent(
    fake: FakeProvider, spangate: Running
) -> None:
    """A provider that ignores identity and gzips the stream anyway: the request did ask
    for identity, and the compressed events reach the client as the provider sent them."""
    fake.script(gzipped())
    body = json.dumps({"model": GPT, "messages": HELLO, "stream": True}).encode()
    coding, relayed = asyncio.run(_raw_stream(spangate.openai_base_url + "/chat/completions", body))
    assert fake.last.headers.getall("accept-encoding") == ["identity"]
    assert coding == "gzip"
    assert b"data: [DONE]" in gzip.decompress(relayed)
