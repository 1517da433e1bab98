"""Aliases, keys, upstream selection and header policy, checked on the provider's side of the wire.

The fake provider records every request exactly as it arrived, so these tests compare
what the client sent with what the provider received, byte for byte where it matters.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from conftest import Running, basic_config
from fakeprovider import FakeProvider, anthropic_error, custom, gzipped, openai_error, sse
from multidict import CIMultiDictProxy
from yarl import URL

GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"
HELLO: Any = [{"role": "user", "content": "hi there"}]
FAST_ALIAS = {"fast": {"targets": [{"provider": "openai", "model": GPT}]}}
CLIENT_KEY = "sk-client-secret-0123456789"
CONFIGURED_KEY = "sk-configured-abcdef"
# Hand-written: odd whitespace, key order, number spellings, a nested "model" property and
# the alias name inside message content. Only the top-level model value may change.
ODD_BODY = (
    b'{ "messages" : [ {"role":"user", "content":"fast \\u00e9 fast"} ],\n'
    b'  "temperature": 1.0e0, "top_p":1E0,\n'
    b'  "tools": [{"type":"function","function":{"name":"f","parameters":'
    b'{"type":"object","properties":{"model":{"type":"string"}}}}}],\n'
    b'  "model"  :  "fast" ,\n  "seed": -0\n}'
)


async def post(
    url: str | URL, body: bytes, headers: dict[str, str] | None = None, **session: Any
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    """POST raw bytes with aiohttp; returns status, headers and the body as received."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession(**session) as http,
        http.post(url, data=body, headers=sent) as resp,
    ):
        return resp.status, resp.headers, await resp.read()


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a raw HTTP/1.1 request (which must say Connection: close) and read the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def no_value_contains(headers: CIMultiDictProxy[str], secret: str) -> bool:
    return all(secret not in value for value in headers.values())


# --------------------------------------------------------------------------- aliases


async def test_alias_rewrites_only_the_model_value(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """An alias reaches its target with every byte but the top-level model value unchanged."""
    running = spangate_for(basic_config(fake, models=FAST_ALIAS))
    status, _, body = await post(running.openai_base_url + "/chat/completions", ODD_BODY)
    assert status == 200, body
    expected = ODD_BODY.replace(b'"model"  :  "fast"', b'"model"  :  "gpt-4o-mini"')
    assert fake.last.body == expected
    assert json.loads(body)["model"] == GPT


def test_alias_via_sdk_matches_direct_body_with_model_replaced(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """The SDK's own body for an alias arrives with only `"fast"` replaced by the target model."""
    running = spangate_for(basic_config(fake, models=FAST_ALIAS))
    with (
        openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0) as direct,
        openai.OpenAI(base_url=running.openai_base_url, api_key="k", max_retries=0) as proxied,
    ):
        direct.chat.completions.create(model="fast", messages=HELLO, temperature=0.2)
        answer = proxied.chat.completions.create(model="fast", messages=HELLO, temperature=0.2)
    first, second = fake.received
    assert first.body.count(b'"fast"') == 1
    assert second.body == first.body.replace(b'"fast"', b'"gpt-4o-mini"')
    assert answer.model == GPT


def test_anthropic_alias_rewrites_only_the_model(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """An Anthropic-format alias reaches its Anthropic target with only the model replaced."""
    models = {"claude-fast": {"targets": [{"provider": "anthropic", "model": CLAUDE}]}}
    running = spangate_for(basic_config(fake, models=models))
    with (
        anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0) as direct,
        anthropic.Anthropic(base_url=running.url, api_key="k", max_retries=0) as proxied,
    ):
        direct.messages.create(model="claude-fast", max_tokens=32, messages=HELLO)
        message = proxied.messages.create(model="claude-fast", max_tokens=32, messages=HELLO)
    first, second = fake.received
    assert second.body == first.body.replace(b'"claude-fast"', b'"claude-sonnet-4-6"')
    assert message.model == CLAUDE


async def test_unaliased_model_passes_through_byte_identical(
    fake: FakeProvider, spangate: Running
) -> None:
    """A model no alias names goes to the default provider with the body exactly as sent."""
    body = ODD_BODY.replace(b'"fast" ,', b'"my-local-model" ,')
    status, _, answer = await post(spangate.openai_base_url + "/chat/completions", body)
    assert status == 200
    assert fake.last.body == body
    assert fake.last.path == "/v1/chat/completions"
    assert json.loads(answer)["model"] == "my-local-model"


async def test_query_string_reaches_the_provider_as_encoded(
    fake: FakeProvider, spangate: Running
) -> None:
    """The query goes upstream byte for byte: escapes a decoder would undo (`%2F`, a
    lower-case `%7e`) stay as the client wrote them, and `%26` stays one value."""
    query = "tag=a%26b&note=x%20y&path=a%2Fb&t=%7e&empty="
    # encoded=True: aiohttp's client would otherwise normalise the query itself.
    url = URL(spangate.openai_base_url + "/chat/completions?" + query, encoded=True)
    status, _, _ = await post(url, ODD_BODY.replace(b'"fast" ,', b'"gpt-4o-mini" ,'))
    assert status == 200
    assert fake.last.raw_query == query
    assert fake.last.query == {"tag": "a&b", "note": "x y", "path": "a/b", "t": "~", "empty": ""}


async def test_path_reaches_the_provider_as_encoded(fake: FakeProvider, spangate: Running) -> None:
    """A passthrough path goes upstream as the client encoded it: an escaped `/` stays
    inside one segment, `%7e` is not turned into `~`."""
    path = "/v1/files/file-a%2Fb%7e/content"
    async with (
        aiohttp.ClientSession() as http,
        http.get(URL(spangate.url + path, encoded=True)) as resp,
    ):
        await resp.read()
    assert fake.last.raw_path == path
    assert fake.last.path == "/v1/files/file-a/b~/content"


def test_azure_deployment_alias_goes_to_openai_target(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """An Azure deployment named like an alias reaches its plain-OpenAI target with the model."""
    config = basic_config(fake, models=FAST_ALIAS)
    config["providers"]["openai"]["api_key"] = CONFIGURED_KEY
    running = spangate_for(config)
    with openai.AzureOpenAI(
        azure_endpoint=running.url, api_version="2024-10-21", api_key=CLIENT_KEY, max_retries=0
    ) as azure:
        completion = azure.chat.completions.create(model="fast", messages=HELLO)
    upstream = fake.last
    assert upstream.path == "/v1/chat/completions"
    assert upstream.query == {}
    assert upstream.json()["model"] == GPT
    assert upstream.json()["messages"] == HELLO
    assert upstream.headers["Authorization"] == f"Bearer {CONFIGURED_KEY}"
    assert no_value_contains(upstream.headers, CLIENT_KEY)
    assert completion.model == GPT


async def test_an_alias_named_by_a_repeated_model_member_is_refused_not_bypassed(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """`model` twice: routing reads the last, a provider's parser may read either. The
    rewrite cannot make both say the target, so the client gets a 400 in its own
    format and the provider gets nothing (no model the alias does not pin runs)."""
    running = spangate_for(basic_config(fake, models=FAST_ALIAS))
    body = b'{"model":"o1-pro","messages":[{"role":"user","content":"hi"}],"model":"fast"}'
    status, _, answer = await post(running.openai_base_url + "/chat/completions", body)
    assert status == 400
    error = json.loads(answer)["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "duplicate_member",
        "model",
        "invalid_request_error",
    )
    assert 'send "model" once' in error["message"]
    assert fake.received == []


async def test_alias_of_anthropic_format_on_openai_endpoint_is_refused(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """An Anthropic-format alias called on /v1/chat/completions: 400 model_format_mismatch."""
    models = {"claude-fast": {"targets": [{"provider": "anthropic", "model": CLAUDE}]}}
    running = spangate_for(basic_config(fake, models=models))
    body = json.dumps({"model": "claude-fast", "messages": HELLO}).encode()
    status, headers, answer = await post(running.openai_base_url + "/chat/completions", body)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(answer)
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["code"] == "model_format_mismatch"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["param"] == "model"
    assert "claude-fast" in error["error"]["message"]
    assert fake.received == []


def test_alias_of_openai_format_on_messages_is_refused_in_anthropic_format(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """An OpenAI-format alias on /v1/messages: the Anthropic SDK gets a BadRequestError."""
    running = spangate_for(basic_config(fake, models=FAST_ALIAS))
    with (
        anthropic.Anthropic(base_url=running.url, api_key="k", max_retries=0) as client,
        pytest.raises(anthropic.BadRequestError) as caught,
    ):
        client.messages.create(model="fast", max_tokens=16, messages=HELLO)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "'fast'" in body["error"]["message"]
    assert fake.received == []


# --------------------------------------------------------------------------- keys


def test_configured_openai_key_replaces_the_client_key(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """With providers.X.api_key the upstream sees Bearer <configured>, never the client's key."""
    config = basic_config(fake)
    config["providers"]["openai"]["api_key"] = CONFIGURED_KEY
    running = spangate_for(config)
    with openai.OpenAI(
        base_url=running.openai_base_url, api_key=CLIENT_KEY, max_retries=0
    ) as client:
        client.chat.completions.create(model=GPT, messages=HELLO)
    headers = fake.last.headers
    assert headers.getall("Authorization") == [f"Bearer {CONFIGURED_KEY}"]
    assert "x-api-key" not in headers and "api-key" not in headers
    assert no_value_contains(headers, CLIENT_KEY)


async def test_configured_anthropic_key_is_sent_as_x_api_key(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """For kind anthropic the configured key goes in x-api-key; Bearer and x-api-key are dropped."""
    config = basic_config(fake)
    config["providers"]["anthropic"]["api_key"] = CONFIGURED_KEY
    running = spangate_for(config)
    with anthropic.Anthropic(base_url=running.url, api_key=CLIENT_KEY, max_retries=0) as client:
        client.messages.create(model=CLAUDE, max_tokens=16, messages=HELLO)
    body = json.dumps({"model": CLAUDE, "max_tokens": 16, "messages": HELLO}).encode()
    headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    status, _, _ = await post(running.url + "/v1/messages", body, headers)
    assert status == 200
    for received in fake.received:
        assert received.headers.getall("x-api-key") == [CONFIGURED_KEY]
        assert "authorization" not in received.headers
        assert no_value_contains(received.headers, CLIENT_KEY)


async def test_without_configured_key_the_client_key_is_forwarded(
    fake: FakeProvider, spangate: Running
) -> None:
    """No api_key configured: Bearer and x-api-key reach the provider exactly as sent."""
    with openai.OpenAI(
        base_url=spangate.openai_base_url, api_key=CLIENT_KEY, max_retries=0
    ) as client:
        client.models.list()
    assert fake.last.headers.getall("Authorization") == [f"Bearer {CLIENT_KEY}"]
    body = json.dumps({"model": CLAUDE, "max_tokens": 16, "messages": HELLO}).encode()
    headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    status, _, _ = await post(spangate.url + "/v1/messages", body, headers)
    assert status == 200
    assert fake.last.headers.getall("x-api-key") == [CLIENT_KEY]
    assert "authorization" not in fake.last.headers


# --------------------------------------------------------------------------- upstream selection


@pytest.mark.parametrize("suffix", ["/openai", "/openai/"])
def test_base_url_path_prefix_is_kept(spangate_for: Callable[..., Running], suffix: str) -> None:
    """A base_url with a path prefix gets the request path appended to it."""
    with FakeProvider(prefix="/openai") as fake:
        config: dict[str, Any] = {
            "providers": {"openai": {"kind": "openai", "base_url": fake.url + suffix}}
        }
        running = spangate_for(config)
        with (
            openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0) as direct,
            openai.OpenAI(base_url=running.openai_base_url, api_key="k", max_retries=0) as via,
        ):
            a = direct.chat.completions.create(model=GPT, messages=HELLO)
            b = via.chat.completions.create(model=GPT, messages=HELLO)
        assert b.model_dump() == a.model_dump()
        assert [r.path for r in fake.received] == ["/openai/v1/chat/completions"] * 2
        assert fake.received[1].body == fake.received[0].body


async def test_host_header_never_selects_the_upstream(
    fake: FakeProvider, spangate: Running
) -> None:
    """Host: evil.example still goes to the configured provider (with its own Host)."""
    body = json.dumps({"model": GPT, "messages": HELLO}).encode()
    status, _, _ = await post(
        spangate.openai_base_url + "/chat/completions", body, {"Host": "evil.example"}
    )
    assert status == 200
    assert len(fake.received) == 1
    assert fake.last.headers["Host"] == f"127.0.0.1:{fake.port}"
    assert no_value_contains(fake.last.headers, "evil.example")


async def test_spangate_request_headers_are_not_forwarded(
    fake: FakeProvider, spangate: Running
) -> None:
    """x-spangate-* request headers are spangate's own and never reach the provider."""
    body = json.dumps({"model": GPT, "messages": HELLO}).encode()
    headers = {"x-spangate-route": "fast", "X-Spangate-Debug": "1", "x-end-to-end": "kept"}
    status, _, _ = await post(spangate.openai_base_url + "/chat/completions", body, headers)
    assert status == 200
    received = fake.last.headers
    assert not [name for name in received if name.lower().startswith("x-spangate-")]
    assert received["x-end-to-end"] == "kept"


async def test_hop_by_hop_request_headers_are_not_forwarded(
    fake: FakeProvider, spangate: Running
) -> None:
    """Connection (and what it names), Keep-Alive, TE, Trailer, Upgrade, Proxy-* stay behind."""
    body = json.dumps({"model": GPT, "messages": HELLO}).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close, X-Hop-Custom\r\n"
        b"Keep-Alive: timeout=5, max=100\r\n"
        b"TE: trailers\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Upgrade: h2c\r\n"
        b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"X-Hop-Custom: drop-me\r\n"
        b"X-End-To-End: keep-me\r\n"
        b"\r\n" + body
    )
    status, _, answer = await raw_exchange(spangate.server.port, request)
    assert status == 200, answer
    received = fake.last.headers
    for name in ("Keep-Alive", "TE", "Trailer", "Upgrade", "Proxy-Authorization"):
        assert name not in received, name
    assert "Proxy-Connection" not in received
    assert "X-Hop-Custom" not in received
    assert "x-hop-custom" not in received.get("Connection", "").lower()
    assert "close" not in received.get("Connection", "").lower()
    assert received["X-End-To-End"] == "keep-me"
    assert fake.last.body == body


async def test_hop_by_hop_response_headers_are_not_relayed(
    fake: FakeProvider, spangate: Running
) -> None:
    """Keep-Alive / Proxy-Authenticate from the provider stay behind; other headers pass."""
    fake.script(
        custom(
            200,
            b'{"ok":true}',
            headers={
                "Keep-Alive": "timeout=99",
                "Proxy-Authenticate": "Basic",
                "X-Upstream-Extra": "1",
            },
        )
    )
    request = json.dumps({"model": GPT, "messages": HELLO}).encode()
    status, headers, body = await post(spangate.openai_base_url + "/chat/completions", request)
    assert (status, body) == (200, b'{"ok":true}')
    assert headers["X-Upstream-Extra"] == "1"
    assert "Keep-Alive" not in headers
    assert "Proxy-Authenticate" not in headers


# --------------------------------------------------------------------------- responses relayed


async def test_upstream_response_headers_are_relayed(fake: FakeProvider, spangate: Running) -> None:
    """x-request-id, openai-version and rate-limit headers reach the client as sent."""
    body = json.dumps({"model": GPT, "messages": HELLO}).encode()
    _, direct, _ = await post(fake.openai_base_url + "/chat/completions", body)
    status, proxied, _ = await post(spangate.openai_base_url + "/chat/completions", body)
    assert status == 200
    assert proxied["x-request-id"] == fake.last.request_id
    relayed = [n for n in direct if n.lower().startswith(("x-ratelimit-", "openai-"))]
    assert relayed
    for name in relayed:
        assert proxied[name] == direct[name], name


#: A file over the size spangate reads whole before relaying (streamed when it has a body).
LARGE_FILE = 9 * 1024 * 1024


@pytest.mark.parametrize(
    ("path", "size"),
    [("/v1/models", None), ("/v1/files/file-abc/content", LARGE_FILE), ("/v1/nope", None)],
    ids=["models", "large-file", "provider-404"],
)
async def test_head_answer_keeps_the_providers_content_length(
    path: str, size: int | None, fake: FakeProvider, spangate: Running
) -> None:
    """HEAD: the client gets the provider's status and Content-Length (the length the GET
    would have had, RFC 9110 9.3.2), and no body, for a small answer, one too large to
    be read whole, and a provider's 404 alike."""
    request = f"HEAD {path} HTTP/1.1\r\nHost: spangate\r\nConnection: close\r\n\r\n".encode()
    if size is not None:
        fake.script(*[custom(200, b"x" * size, content_type="application/octet-stream")] * 2)
    d_status, d_headers, _ = await raw_exchange(fake.port, request)
    status, headers, body = await raw_exchange(spangate.server.port, request)
    assert (status, body) == (d_status, b"")
    assert headers["content-length"] == d_headers["content-length"] != "0"
    if size is not None:
        assert headers["content-length"] == str(size)


@pytest.mark.parametrize("path", ["/v1/events", "/v1/models"], ids=["pass-through", "models"])
async def test_head_answer_naming_an_event_stream_is_relayed(
    path: str, fake: FakeProvider, spangate: Running
) -> None:
    """HEAD on a path whose GET is an event stream: the provider's status and headers,
    no body, and a request recorded as the success it is (it used to wait, at the
    stream's commit, for events a HEAD answer never carries, and became a 502)."""
    request = f"HEAD {path} HTTP/1.1\r\nHost: spangate\r\nConnection: close\r\n\r\n".encode()
    fake.script(*[sse([b"data: {}\n\n"], headers={"x-stream-id": "s-1"})] * 2)
    d_status, d_headers, _ = await raw_exchange(fake.port, request)
    status, headers, body = await raw_exchange(spangate.server.port, request)
    assert (status, body) == (d_status, b"") == (200, b"")
    assert headers["content-type"] == d_headers["content-type"]
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-stream-id"] == "s-1"
    assert "content-length" not in headers and "transfer-encoding" not in headers
    assert len(fake.received) == 2  # one each: no retry of a failure that was not one
    spans = spangate.finished_spans()
    assert [s.attributes.get("http.response.status_code") for s in spans] == [200, 200]
    assert all("error.type" not in s.attributes for s in spans)


async def test_upstream_openai_error_is_relayed_verbatim(
    fake: FakeProvider, spangate: Running
) -> None:
    """A provider 429 reaches the client unchanged: status, body bytes, Retry-After."""
    body = json.dumps({"model": GPT, "messages": HELLO}).encode()
    fake.script(openai_error(429, "rate_limit_exceeded", retry_after=3))
    d_status, d_headers, d_body = await post(fake.openai_base_url + "/chat/completions", body)
    fake.script(openai_error(429, "rate_limit_exceeded", retry_after=3))
    status, headers, answer = await post(spangate.openai_base_url + "/chat/completions", body)
    assert (status, answer) == (d_status, d_body) == (429, d_body)
    assert headers["Retry-After"] == d_headers["Retry-After"] == "3"
    assert headers["Content-Type"] == d_headers["Content-Type"]
    assert headers["x-request-id"] == fake.last.request_id
    assert len(fake.received) == 2  # pass-through: no retry


def test_upstream_openai_error_reaches_the_sdk(fake: FakeProvider, spangate: Running) -> None:
    """The openai SDK raises RateLimitError with the provider's error object and headers."""
    fake.script(openai_error(429, "rate_limit_exceeded", retry_after=3))
    with (
        openai.OpenAI(base_url=spangate.openai_base_url, api_key="k", max_retries=0) as client,
        pytest.raises(openai.RateLimitError) as caught,
    ):
        client.chat.completions.create(model=GPT, messages=HELLO)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.request_id == fake.last.request_id


async def test_upstream_anthropic_error_is_relayed_verbatim(
    fake: FakeProvider, spangate: Running
) -> None:
    """A provider 529 overloaded_error reaches the client with the same bytes and headers."""
    body = json.dumps({"model": CLAUDE, "max_tokens": 16, "messages": HELLO}).encode()
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "k"}
    fake.script(anthropic_error(529, "overloaded_error", retry_after=2))
    d_status, _, d_body = await post(fake.url + "/v1/messages", body, headers)
    fake.script(anthropic_error(529, "overloaded_error", retry_after=2))
    status, got_headers, answer = await post(spangate.url + "/v1/messages", body, headers)
    first, second = fake.received
    assert status == d_status == 529
    assert answer == d_body.replace(first.request_id.encode(), second.request_id.encode())
    assert got_headers["request-id"] == second.request_id
    assert got_headers["Retry-After"] == "2"


async def test_gzipped_body_is_relayed_compressed(fake: FakeProvider, spangate: Running) -> None:
    """A gzip body reaches the client byte-identical, with Content-Encoding: gzip."""
    body = json.dumps({"model": GPT, "messages": HELLO}).encode()
    fake.script(gzipped(), gzipped())
    url = "/chat/completions"
    _, _, direct = await post(fake.openai_base_url + url, body, auto_decompress=False)
    status, headers, proxied = await post(
        spangate.openai_base_url + url, body, auto_decompress=False
    )
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert proxied == direct
    assert json.loads(gzip.decompress(proxied))["model"] == GPT


def test_gzipped_body_is_parsed_by_the_sdk(fake: FakeProvider, spangate: Running) -> None:
    """The openai SDK decodes a gzip answer relayed by spangate."""
    fake.script(gzipped())
    with openai.OpenAI(base_url=spangate.openai_base_url, api_key="k", max_retries=0) as client:
        completion = client.chat.completions.create(model=GPT, messages=HELLO)
    assert completion.choices[0].message.content == f"Hello from {GPT}: hi there"


async def test_gzipped_answer_is_not_mistaken_for_malformed_json(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """A valid gzip JSON answer from the first target is the answer: no failover, one request."""
    models = {
        "fast": {
            "targets": [
                {"provider": "openai", "model": GPT},
                {"provider": "openai", "model": "gpt-4o"},
            ]
        }
    }
    running = spangate_for(basic_config(fake, models=models))
    fake.script(gzipped())
    body = json.dumps({"model": "fast", "messages": HELLO}).encode()
    url = running.openai_base_url + "/chat/completions"
    status, headers, answer = await post(url, body, auto_decompress=False)
    assert status == 200
    assert [r.json()["model"] for r in fake.received] == [GPT]
    assert headers.get("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(answer))["model"] == GPT
