"""SDK equivalence: every call gives the same SDK result through spangate as directly.

Each test makes the same call twice, first straight to the fake provider and then
through spangate, and checks two things: the SDK objects are equal
(`model_dump()`), and the provider got the same body bytes both times. The one
allowed difference is OpenAI stream usage injection (on by default): spangate adds
exactly one `stream_options` member upstream and hides the extra usage chunk from
the client.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
from conftest import Running, basic_config
from fakeprovider import FakeProvider, Received

GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"
AZURE_VERSION = "2024-10-21"  # the api_version basic_config gives the azure provider
HELLO: Any = [{"role": "user", "content": "hi there"}]  # Any: the SDKs want TypedDicts
WEATHER_PARAMS: Any = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
CHAT_TOOL: Any = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": WEATHER_PARAMS},
}
RESPONSES_TOOL: Any = {"type": "function", "name": "get_weather", "parameters": WEATHER_PARAMS}
CLAUDE_TOOL: Any = {"name": "get_weather", "input_schema": WEATHER_PARAMS}
INJECTED = re.compile(
    rb',\s*"stream_options"\s*:\s*\{"include_usage":true\}(?=\s*\}\s*$)'
    rb'|"stream_options"\s*:\s*\{"include_usage":true\}\s*,'
)


# --------------------------------------------------------------------------- fixtures & helpers


@pytest.fixture
def direct(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
def proxied(spangate: Running) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=spangate.openai_base_url, api_key="sk-test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def adirect(fake: FakeProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    async with client:
        yield client


@pytest.fixture
async def aproxied(spangate: Running) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=spangate.openai_base_url, api_key="sk-test", max_retries=0)
    async with client:
        yield client


@pytest.fixture
def claude_direct(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.base_url, api_key="sk-ant", max_retries=0) as client:
        yield client


@pytest.fixture
def claude_proxied(spangate: Running) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=spangate.url, api_key="sk-ant", max_retries=0) as client:
        yield client


def dumps(items: Any) -> list[dict[str, Any]]:
    """model_dump() of every SDK object in `items`."""
    return [item.model_dump() for item in items]


def two_requests(fake: FakeProvider) -> tuple[Received, Received]:
    """The direct request and the proxied one, after checking there were exactly two."""
    received = fake.received
    assert len(received) == 2, [r.path for r in received]
    return received[0], received[1]


def assert_same_request(fake: FakeProvider) -> None:
    """The provider saw the same method, path, query and body bytes both times."""
    first, second = two_requests(fake)
    assert (second.method, second.path, second.query) == (first.method, first.path, first.query)
    assert second.body == first.body


def assert_only_usage_injected(fake: FakeProvider) -> None:
    """The proxied body is the direct body plus exactly `stream_options.include_usage`."""
    first, second = two_requests(fake)
    assert second.path == first.path
    assert json.loads(second.body) == {
        **json.loads(first.body),
        "stream_options": {"include_usage": True},
    }
    stripped, count = INJECTED.subn(b"", second.body, count=1)
    assert count == 1
    assert stripped == first.body


def without_ids(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chunks minus the completion and tool-call ids, which the fake derives from the body.

    With usage injection the upstream body differs, so these ids differ too; each stream
    still carries exactly one completion id.
    """
    assert len({chunk["id"] for chunk in chunks}) == 1
    out = []
    for chunk in copy.deepcopy(chunks):
        del chunk["id"]
        for choice in chunk["choices"]:
            for call in choice["delta"].get("tool_calls") or []:
                call["id"] = None
        out.append(chunk)
    return out


# --------------------------------------------------------------------------- OpenAI chat


def test_openai_sync_chat_equals_direct(
    fake: FakeProvider, direct: openai.OpenAI, proxied: openai.OpenAI
) -> None:
    """A sync non-streamed chat completion is identical, and so is the upstream body."""
    a = direct.chat.completions.create(model=GPT, messages=HELLO, temperature=0.5, seed=7)
    b = proxied.chat.completions.create(model=GPT, messages=HELLO, temperature=0.5, seed=7)
    assert b.model_dump() == a.model_dump()
    assert_same_request(fake)


async def test_openai_async_chat_equals_direct(
    fake: FakeProvider, adirect: openai.AsyncOpenAI, aproxied: openai.AsyncOpenAI
) -> None:
    """An async non-streamed chat completion is identical, and so is the upstream body."""
    a = await adirect.chat.completions.create(model=GPT, messages=HELLO, max_tokens=3)
    b = await aproxied.chat.completions.create(model=GPT, messages=HELLO, max_tokens=3)
    assert b.model_dump() == a.model_dump()
    assert_same_request(fake)


def test_openai_sync_chat_stream_chunks_equal_direct(
    fake: FakeProvider, direct: openai.OpenAI, proxied: openai.OpenAI
) -> None:
    """The client sees the provider's chunks (no usage chunk); upstream gains stream_options."""
    a = dumps(direct.chat.completions.create(model=GPT, messages=HELLO, stream=True))
    b = dumps(proxied.chat.completions.create(model=GPT, messages=HELLO, stream=True))
    assert all(chunk["choices"] for chunk in b), "the injected usage chunk reached the client"
    assert without_ids(b) == without_ids(a)
    assert "".join(c["choices"][0]["delta"]["content"] or "" for c in b) == (
        f"Hello from {GPT}: hi there"
    )
    assert_only_usage_injected(fake)


async def test_openai_async_chat_stream_chunks_equal_direct(
    fake: FakeProvider, adirect: openai.AsyncOpenAI, aproxied: openai.AsyncOpenAI
) -> None:
    """Async streaming: the same chunks as direct; upstream only gains stream_options."""
    a = [
        c.model_dump()
        async for c in await adirect.chat.completions.create(model=GPT, messages=HELLO, stream=True)
    ]
    b = [
        c.model_dump()
        async for c in await aproxied.chat.completions.create(
            model=GPT, messages=HELLO, stream=True
        )
    ]
    assert without_ids(b) == without_ids(a)
    assert_only_usage_injected(fake)


def test_openai_stream_that_asks_for_usage_is_untouched(
    fake: FakeProvider, direct: openai.OpenAI, proxied: openai.OpenAI
) -> None:
    """A client that sets include_usage itself gets its usage chunk, and the body goes as sent."""
    options: Any = {"include_usage": True}
    a = dumps(
        direct.chat.completions.create(
            model=GPT, messages=HELLO, stream=True, stream_options=options
        )
    )
    b = dumps(
        proxied.chat.completions.create(
            model=GPT, messages=HELLO, stream=True, stream_options=options
        )
    )
    assert b == a
    assert b[-1]["choices"] == [] and b[-1]["usage"] is not None
    assert_same_request(fake)


def test_openai_stream_with_passthrough_usage_is_identical(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """With stream_usage: passthrough the stream (ids included) and the body are identical."""
    config = basic_config(fake)
    config["providers"]["openai"]["stream_usage"] = "passthrough"
    running = spangate_for(config)
    with (
        openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0) as direct,
        openai.OpenAI(base_url=running.openai_base_url, api_key="k", max_retries=0) as proxied,
    ):
        a = dumps(direct.chat.completions.create(model=GPT, messages=HELLO, stream=True))
        b = dumps(proxied.chat.completions.create(model=GPT, messages=HELLO, stream=True))
    assert b == a
    assert_same_request(fake)


def test_openai_chat_tool_calls_equal_direct(
    fake: FakeProvider, direct: openai.OpenAI, proxied: openai.OpenAI
) -> None:
    """A chat completion with tool_calls is identical through spangate."""
    a = direct.chat.completions.create(model=GPT, messages=HELLO, tools=[CHAT_TOOL])
    b = proxied.chat.completions.create(model=GPT, messages=HELLO, tools=[CHAT_TOOL])
    assert b.model_dump() == a.model_dump()
    assert b.choices[0].finish_reason == "tool_calls"
    assert b.choices[0].message.tool_calls
    assert_same_request(fake)


def test_openai_chat_tool_call_stream_equals_direct(
    fake: FakeProvider, direct: openai.OpenAI, proxied: openai.OpenAI
) -> None:
    """Streamed tool_call deltas reach the client as the provider sent them."""
    a = dumps(
        direct.chat.completions.create(model=GPT, messages=HELLO, tools=[CHAT_TOOL], stream=True)
    )
    b = dumps(
        proxied.chat.completions.create(model=GPT, messages=HELLO, tools=[CHAT_TOOL], stream=True)
    )
    assert without_ids(b) == without_ids(a)
    assert b[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert_only_usage_injected(fake)


# --------------------------------------------------------------------------- other OpenAI APIs


def test_openai_completions_equal_direct(
    fake: FakeProvider, direct: openai.OpenAI, proxied: openai.OpenAI
) -> None:
    """Legacy /v1/completions is identical through spangate."""
    model = "gpt-3.5-turbo-instruct"
    a = direct.completions.create(model=model, prompt="Say hi", max_tokens=16)
    b = proxied.completions.create(model=model, prompt="Say hi", max_tokens=16)
    assert b.model_dump() == a.model_dump()
    assert_same_request(fake)


def test_openai_embeddings_base64_equal_direct(
    fake: FakeProvider, direct: openai.OpenAI, proxied: openai.OpenAI
) -> None:
    """Embeddings (the SDK's default base64 encoding) decode to the same floats."""
    model = "text-embedding-3-small"
    a = direct.embeddings.create(model=model, input=["alpha", "beta"])
    b = proxied.embeddings.create(model=model, input=["alpha", "beta"])
    assert b.model_dump() == a.model_dump()
    assert len(b.data) == 2 and len(b.data[0].embedding) == 8
    assert json.loads(fake.last.body)["encoding_format"] == "base64"
    assert_same_request(fake)


def test_openai_responses_create_equals_direct(
    fake: FakeProvider, direct: openai.OpenAI, proxied: openai.OpenAI
) -> None:
    """A non-streamed Responses API call is identical through spangate."""
    a = direct.responses.create(model="gpt-4o", input="hello", instructions="be brief")
    b = proxied.responses.create(model="gpt-4o", input="hello", instructions="be brief")
    assert b.model_dump() == a.model_dump()
    assert b.output_text == "Hello from gpt-4o: hello"
    assert_same_request(fake)


def test_openai_responses_stream_events_equal_direct(
    fake: FakeProvider, direct: openai.OpenAI, proxied: openai.OpenAI
) -> None:
    """A streamed Responses API call yields the same events (no usage injection there)."""
    a = dumps(direct.responses.create(model="gpt-4o", input="hello", stream=True))
    b = dumps(proxied.responses.create(model="gpt-4o", input="hello", stream=True))
    assert b == a
    assert b[0]["type"] == "response.created" and b[-1]["type"] == "response.completed"
    assert_same_request(fake)


def test_openai_responses_stream_helper_final_response_equals_direct(
    fake: FakeProvider, direct: openai.OpenAI, proxied: openai.OpenAI
) -> None:
    """responses.stream(...).get_final_response() with a function tool is identical."""
    with direct.responses.stream(model="gpt-4o", input="weather?", tools=[RESPONSES_TOOL]) as s:
        a = s.get_final_response()
    with proxied.responses.stream(model="gpt-4o", input="weather?", tools=[RESPONSES_TOOL]) as s:
        b = s.get_final_response()
    assert b.model_dump() == a.model_dump()
    assert b.output[0].type == "function_call"
    assert_same_request(fake)


def test_openai_models_list_equals_direct(
    fake: FakeProvider, direct: openai.OpenAI, proxied: openai.OpenAI
) -> None:
    """GET /v1/models lists the same models through spangate."""
    a = dumps(direct.models.list())
    b = dumps(proxied.models.list())
    assert b == a
    assert GPT in [m["id"] for m in b]
    assert_same_request(fake)


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_sync_message_equals_direct(
    fake: FakeProvider, claude_direct: anthropic.Anthropic, claude_proxied: anthropic.Anthropic
) -> None:
    """A sync messages.create is identical through spangate."""
    a = claude_direct.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO, system="hi")
    b = claude_proxied.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO, system="hi")
    assert b.model_dump() == a.model_dump()
    assert_same_request(fake)


async def test_anthropic_async_message_equals_direct(fake: FakeProvider, spangate: Running) -> None:
    """An async messages.create is identical through spangate."""
    direct = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="k", max_retries=0)
    proxied = anthropic.AsyncAnthropic(base_url=spangate.url, api_key="k", max_retries=0)
    async with direct, proxied:
        a = await direct.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
        b = await proxied.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert b.model_dump() == a.model_dump()
    assert_same_request(fake)


def test_anthropic_stream_text_equals_direct(
    fake: FakeProvider, claude_direct: anthropic.Anthropic, claude_proxied: anthropic.Anthropic
) -> None:
    """messages.stream: the same text deltas and the same final message."""
    results = []
    for client in (claude_direct, claude_proxied):
        with client.messages.stream(model=CLAUDE, max_tokens=64, messages=HELLO) as stream:
            text = list(stream.text_stream)
            results.append((text, stream.get_final_message().model_dump()))
    assert results[1] == results[0]
    assert "".join(results[1][0]) == f"Hello from {CLAUDE}: hi there"
    assert_same_request(fake)


def test_anthropic_stream_tool_use_equals_direct(
    fake: FakeProvider, claude_direct: anthropic.Anthropic, claude_proxied: anthropic.Anthropic
) -> None:
    """messages.stream with a tool: the same tool_use final message."""
    finals = []
    for client in (claude_direct, claude_proxied):
        with client.messages.stream(
            model=CLAUDE, max_tokens=64, messages=HELLO, tools=[CLAUDE_TOOL]
        ) as stream:
            finals.append(stream.get_final_message())
    assert finals[1].model_dump() == finals[0].model_dump()
    assert finals[1].stop_reason == "tool_use"
    assert [block.type for block in finals[1].content] == ["text", "tool_use"]
    assert_same_request(fake)


async def test_anthropic_async_stream_equals_direct(fake: FakeProvider, spangate: Running) -> None:
    """The async messages.stream helper gives the same final message through spangate."""
    finals = []
    for base_url in (fake.base_url, spangate.url):
        client = anthropic.AsyncAnthropic(base_url=base_url, api_key="k", max_retries=0)
        async with (
            client,
            client.messages.stream(model=CLAUDE, max_tokens=64, messages=HELLO) as stream,
        ):
            finals.append((await stream.get_final_message()).model_dump())
    assert finals[1] == finals[0]
    assert_same_request(fake)


def test_anthropic_count_tokens_equals_direct(
    fake: FakeProvider, claude_direct: anthropic.Anthropic, claude_proxied: anthropic.Anthropic
) -> None:
    """messages.count_tokens is identical through spangate."""
    a = claude_direct.messages.count_tokens(model=CLAUDE, messages=HELLO, system="be nice")
    b = claude_proxied.messages.count_tokens(model=CLAUDE, messages=HELLO, system="be nice")
    assert b.model_dump() == a.model_dump()
    assert b.input_tokens > 0
    assert fake.last.path == "/v1/messages/count_tokens"
    assert_same_request(fake)


# --------------------------------------------------------------------------- Azure OpenAI


def test_azure_openai_chat_equals_direct(fake: FakeProvider, spangate: Running) -> None:
    """AzureOpenAI through spangate: same result, path, api-version query and api-key header."""
    results = []
    for endpoint in (fake.url, spangate.url):
        with openai.AzureOpenAI(
            azure_endpoint=endpoint, api_version=AZURE_VERSION, api_key="az-key", max_retries=0
        ) as azure:
            results.append(azure.chat.completions.create(model="my-gpt", messages=HELLO))
    assert results[1].model_dump() == results[0].model_dump()
    assert results[1].model == "my-gpt"
    assert_same_request(fake)
    upstream = fake.last
    assert upstream.path == "/openai/deployments/my-gpt/chat/completions"
    assert upstream.query == {"api-version": AZURE_VERSION}
    assert upstream.headers["api-key"] == "az-key"
    assert "authorization" not in upstream.headers


def test_responses_through_an_alias_to_azure_use_its_v1_surface(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """The Responses API has no deployment path on Azure: an alias whose target is an
    azure_openai provider sends it to `{base_url}/openai/v1/responses`, the deployment
    as the body's model, the configured key in `api-key` and no dated api-version
    (Azure's v1 surface takes none)."""
    config = basic_config(
        fake, models={"az": {"targets": [{"provider": "azure", "model": "my-gpt"}]}}
    )
    config["providers"]["azure"]["api_key"] = "az-configured"
    running = spangate_for(config)
    with openai.OpenAI(
        base_url=running.openai_base_url, api_key="sk-client", max_retries=0
    ) as client:
        response = client.responses.create(model="az", input="hi")
    assert response.output_text
    upstream = fake.last
    assert (upstream.method, upstream.path, upstream.query) == ("POST", "/openai/v1/responses", {})
    assert json.loads(upstream.body)["model"] == "my-gpt"
    assert upstream.headers["api-key"] == "az-configured"
    assert "authorization" not in upstream.headers


def test_azure_openai_embeddings_equal_direct(fake: FakeProvider, spangate: Running) -> None:
    """Azure embeddings deployments work through spangate too."""
    results = []
    for endpoint in (fake.url, spangate.url):
        with openai.AzureOpenAI(
            azure_endpoint=endpoint, api_version=AZURE_VERSION, api_key="az-key", max_retries=0
        ) as azure:
            results.append(azure.embeddings.create(model="my-embed", input="a"))
    assert results[1].model_dump() == results[0].model_dump()
    assert fake.last.path == "/openai/deployments/my-embed/embeddings"
    assert_same_request(fake)
