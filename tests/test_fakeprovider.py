"""Self-tests of the fake upstream provider, driven by the real SDKs and raw aiohttp."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from fakeprovider import (
    CREATED,
    SYSTEM_FINGERPRINT,
    FakeProvider,
    anthropic_error,
    custom,
    default,
    delay,
    gzipped,
    malformed_json,
    openai_error,
    reset,
    reset_after,
    sse,
    stall,
    stream_error,
    unused_port,
)
from multidict import CIMultiDictProxy

GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"
HELLO: Any = [{"role": "user", "content": "hi there"}]  # Any: the SDKs want TypedDicts
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
CLAUDE_TOOL: Any = {
    "name": "get_weather",
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}
CHAT_STREAM = {"model": GPT, "messages": HELLO, "stream": True}
CLAUDE_STREAM = {"model": CLAUDE, "max_tokens": 64, "messages": HELLO, "stream": True}


# --------------------------------------------------------------------------- fixtures & helpers


@pytest.fixture
def fp() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def oai(fp: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fp.openai_base_url, api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
async def aoai(fp: FakeProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=fp.openai_base_url, api_key="sk-test", max_retries=0)
    async with client:
        yield client


@pytest.fixture
def claude(fp: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fp.base_url, api_key="sk-ant", max_retries=0) as client:
        yield client


async def post(
    fp: FakeProvider, path: str, body: Any, **session: Any
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    """POST JSON with raw aiohttp; returns status, headers and the raw (decoded) body."""
    async with (
        aiohttp.ClientSession(**session) as http,
        http.post(fp.url + path, json=body) as resp,
    ):
        return resp.status, resp.headers, await resp.read()


def sse_blocks(raw: bytes) -> list[bytes]:
    """Split an SSE body into its events (without the blank-line terminators)."""
    return [block for block in raw.split(b"\n\n") if block]


def sse_json(block: bytes) -> tuple[str | None, Any]:
    """(event name, parsed data) of one SSE event."""
    name, data = None, None
    for line in block.decode().split("\n"):
        field, _, value = line.partition(": ")
        if field == "event":
            name = value
        elif field == "data":
            data = value if value == "[DONE]" else json.loads(value)
    return name, data


async def read_events(resp: aiohttp.ClientResponse, into: list[bytes]) -> None:
    """Append SSE events to ``into`` one at a time until EOF (raises if the connection breaks)."""
    while block := await resp.content.readuntil(b"\n\n"):
        into.append(block)


# --------------------------------------------------------------------------- OpenAI chat


def test_sync_chat_completion(fp: FakeProvider, oai: openai.OpenAI) -> None:
    """A non-streamed chat completion has the real object shape, echo content and usage."""
    completion = oai.chat.completions.create(model=GPT, messages=HELLO)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.created == CREATED
    assert completion.model == GPT
    assert completion.system_fingerprint == SYSTEM_FINGERPRINT
    assert completion.service_tier == "default"
    choice = completion.choices[0]
    assert choice.message.content == f"Hello from {GPT}: hi there"
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0
    assert fp.last.path == "/v1/chat/completions"
    assert fp.last.json()["messages"] == HELLO


async def test_identical_requests_get_identical_bytes(fp: FakeProvider) -> None:
    """Responses are deterministic: same body, same bytes; a different body, a different id."""
    body = {"model": GPT, "messages": HELLO}
    first = await post(fp, "/v1/chat/completions", body)
    second = await post(fp, "/v1/chat/completions", body)
    other = await post(fp, "/v1/chat/completions", {**body, "temperature": 0})
    assert first[2] == second[2]
    assert json.loads(first[2])["id"] != json.loads(other[2])["id"]
    assert first[1]["x-request-id"] != second[1]["x-request-id"]


def test_sync_chat_stream_with_usage(oai: openai.OpenAI) -> None:
    """include_usage adds one final chunk with empty choices; earlier chunks carry usage=None."""
    chunks = list(
        oai.chat.completions.create(
            model=GPT,
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content_chunks, usage_chunk = chunks
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == len(content_chunks) - 2  # role + finish chunks
    assert all(c.usage is None and c.object == "chat.completion.chunk" for c in content_chunks)
    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == f"Hello from {GPT}: hi there"
    assert len({c.id for c in chunks}) == 1


async def test_chat_stream_wire_without_usage(fp: FakeProvider) -> None:
    """Without include_usage: data-only SSE events, no usage chunk, ending in data: [DONE]."""
    status, headers, raw = await post(fp, "/v1/chat/completions", CHAT_STREAM)
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert raw.endswith(b"data: [DONE]\n\n")
    events = [sse_json(block) for block in sse_blocks(raw)]
    assert all(name is None for name, _ in events)
    chunks = [data for _, data in events[:-1]]
    assert all(chunk["choices"] and "usage" not in chunk for chunk in chunks)


async def test_async_chat_tool_call(aoai: openai.AsyncOpenAI) -> None:
    """With tools, the model calls the first tool; streamed argument deltas add up to the same."""
    kwargs: Any = {"model": GPT, "messages": HELLO, "tools": [WEATHER_TOOL]}
    completion = await aoai.chat.completions.create(**kwargs)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "example", "days": 1}

    stream = await aoai.chat.completions.create(**kwargs, stream=True)
    arguments, names, finish = "", [], None
    async for chunk in stream:
        choice_delta = chunk.choices[0]
        for delta in choice_delta.delta.tool_calls or []:
            arguments += (delta.function.arguments or "") if delta.function else ""
            if delta.function and delta.function.name:
                names.append(delta.function.name)
        finish = choice_delta.finish_reason or finish
    assert names == ["get_weather"]
    assert arguments == call.function.arguments
    assert finish == "tool_calls"


def test_chat_tool_choice_none_answers_with_text(oai: openai.OpenAI) -> None:
    """tool_choice="none" disables the tool call."""
    completion = oai.chat.completions.create(
        model=GPT,
        messages=HELLO,
        tools=[WEATHER_TOOL],
        tool_choice="none",
    )
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.tool_calls is None


def test_chat_n_choices(oai: openai.OpenAI) -> None:
    """``n`` yields that many choices, streamed and not."""
    completion = oai.chat.completions.create(model=GPT, messages=HELLO, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    stream = oai.chat.completions.create(model=GPT, messages=HELLO, n=2, stream=True)
    texts = ["", ""]
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [completion.choices[0].message.content] * 2


def test_max_tokens_truncates_with_length(oai: openai.OpenAI) -> None:
    """A small max_tokens truncates the answer and sets finish_reason="length"."""
    completion = oai.chat.completions.create(model=GPT, messages=HELLO, max_tokens=2)
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Hello from"


def test_usage_knobs() -> None:
    """cached/reasoning/cache-creation token knobs show up in both dialects' usage."""
    with (
        FakeProvider(cached_tokens=7, reasoning_tokens=3, cache_creation_tokens=2) as fp,
        openai.OpenAI(base_url=fp.openai_base_url, api_key="k", max_retries=0) as oai,
        anthropic.Anthropic(base_url=fp.base_url, api_key="k", max_retries=0) as claude,
    ):
        usage = oai.chat.completions.create(model=GPT, messages=HELLO).usage
        assert usage is not None
        assert usage.prompt_tokens_details is not None
        assert usage.completion_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 7
        assert usage.completion_tokens_details.reasoning_tokens == 3
        message = claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
        assert message.usage.cache_read_input_tokens == 7
        assert message.usage.cache_creation_input_tokens == 2


# --------------------------------------------------------------------------- other OpenAI


def test_legacy_completions(oai: openai.OpenAI) -> None:
    """/v1/completions returns text_completion objects, streamed and not."""
    completion = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "Hello from gpt-3.5-turbo-instruct: Say hi"
    assert completion.usage is not None
    chunks = list(
        oai.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Say hi",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == completion.choices[0].text
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage == completion.usage


def test_embeddings_base64_default_decodes_to_floats(fp: FakeProvider, oai: openai.OpenAI) -> None:
    """The SDK's default base64 request decodes to exactly the floats of encoding_format=float."""
    decoded = oai.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert fp.last.json()["encoding_format"] == "base64"
    floats = oai.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], encoding_format="float"
    )
    assert [d.embedding for d in decoded.data] == [d.embedding for d in floats.data]
    assert [len(d.embedding) for d in floats.data] == [8, 8]
    assert floats.data[0].embedding != floats.data[1].embedding
    assert floats.object == "list"
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 2
    sized = oai.embeddings.create(model="text-embedding-3-small", input="a", dimensions=4)
    assert len(sized.data[0].embedding) == 4


async def test_embeddings_base64_is_little_endian_float32(fp: FakeProvider) -> None:
    """On the wire, base64 embeddings are packed little-endian float32."""
    body = {"model": "text-embedding-3-small", "input": "a"}
    _, _, as_floats = await post(fp, "/v1/embeddings", {**body, "encoding_format": "float"})
    _, _, as_b64 = await post(fp, "/v1/embeddings", {**body, "encoding_format": "base64"})
    packed = base64.b64decode(json.loads(as_b64)["data"][0]["embedding"])
    assert list(struct.unpack("<8f", packed)) == json.loads(as_floats)["data"][0]["embedding"]


def test_responses_non_stream(oai: openai.OpenAI) -> None:
    """/v1/responses returns a completed response object with output_text and usage."""
    response = oai.responses.create(model="gpt-4o", input="hello", instructions="be brief")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.output_text == "Hello from gpt-4o: hello"
    assert response.instructions == "be brief"
    assert response.usage is not None
    assert response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )


def test_responses_stream_event_sequence(oai: openai.OpenAI) -> None:
    """Streamed responses emit the real event sequence with consecutive sequence_numbers."""
    events = list(oai.responses.create(model="gpt-4o", input="hello", stream=True))
    types = [e.type for e in events]
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == deltas == "Hello from gpt-4o: hello"


def test_responses_function_call(oai: openai.OpenAI) -> None:
    """With a function tool the Responses API returns a function_call item, streamed or not."""
    parameters = WEATHER_TOOL["function"]["parameters"]
    tool: Any = {"type": "function", "name": "get_weather", "parameters": parameters}
    response = oai.responses.create(model="gpt-4o", input="weather?", tools=[tool])
    item = response.output[0]
    assert item.type == "function_call"
    assert item.name == "get_weather"
    with oai.responses.stream(model="gpt-4o", input="weather?", tools=[tool]) as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "function_call"
    assert final.output[0].arguments == item.arguments


def test_models_list(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    """GET /v1/models answers in OpenAI format, or Anthropic's when anthropic-version is sent."""
    assert GPT in [m.id for m in oai.models.list()]
    assert oai.models.retrieve("gpt-x").id == "gpt-x"
    assert CLAUDE in [m.id for m in claude.models.list()]


def test_azure_deployment_routes(fp: FakeProvider) -> None:
    """Azure deployment paths work; the response model is the deployment name."""
    with openai.AzureOpenAI(
        azure_endpoint=fp.url, api_key="k", api_version="2024-10-21", max_retries=0
    ) as azure:
        completion = azure.chat.completions.create(model="my-gpt", messages=HELLO)
        assert completion.model == "my-gpt"
        assert fp.last.path == "/openai/deployments/my-gpt/chat/completions"
        assert fp.last.query == {"api-version": "2024-10-21"}
        assert fp.last.headers["API-KEY"] == "k"
        embedding = azure.embeddings.create(model="my-embed", input="a")
        assert embedding.model == "my-embed"


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_message(fp: FakeProvider, claude: anthropic.Anthropic) -> None:
    """A non-streamed message has the real shape, usage fields and provider headers."""
    raw = claude.messages.with_raw_response.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    message = raw.parse()
    assert message.id.startswith("msg_01")
    assert message.content[0].type == "text"
    assert message.content[0].text == f"Hello from {CLAUDE}: hi there"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.cache_read_input_tokens == 0
    assert raw.headers["request-id"] == fp.last.request_id
    assert "anthropic-ratelimit-requests-remaining" in raw.headers
    key_headers = fp.last.headers.get("x-api-key", ""), fp.last.headers.get("authorization", "")
    assert any(value.endswith("sk-ant") for value in key_headers)  # newer SDKs send Bearer
    assert "anthropic-version" in fp.last.headers


def test_anthropic_stream_text(claude: anthropic.Anthropic) -> None:
    """messages.stream assembles the same message; output_tokens in message_delta is total."""
    plain = claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert [text] == [b.text for b in final.content if b.type == "text"]
    assert [text] == [b.text for b in plain.content if b.type == "text"]
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


def test_anthropic_stream_tool_use(claude: anthropic.Anthropic) -> None:
    """With tools, the stream carries a text block then a tool_use block built from JSON deltas."""
    with claude.messages.stream(
        model=CLAUDE,
        max_tokens=64,
        messages=HELLO,
        tools=[CLAUDE_TOOL],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["text", "tool_use"]
    tool_use = final.content[1]
    assert tool_use.type == "tool_use"
    assert tool_use.id.startswith("toolu_01")
    assert tool_use.input == {"city": "example", "days": 1}


async def test_anthropic_stream_wire(fp: FakeProvider) -> None:
    """The raw stream has event: lines matching data.type in the documented order."""
    _, headers, raw = await post(fp, "/v1/messages", CLAUDE_STREAM)
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    events = [sse_json(block) for block in sse_blocks(raw)]
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, delta = events[0][1], events[-2][1]
    assert start["message"]["usage"]["output_tokens"] == 1
    assert delta["usage"]["output_tokens"] == names.count("content_block_delta")
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


def test_anthropic_count_tokens_matches_usage(claude: anthropic.Anthropic) -> None:
    """count_tokens returns the same input_tokens that messages.create reports."""
    counted = claude.messages.count_tokens(model=CLAUDE, messages=HELLO, system="be nice")
    message = claude.messages.create(
        model=CLAUDE,
        max_tokens=64,
        messages=HELLO,
        system="be nice",
    )
    assert counted.input_tokens == message.usage.input_tokens


async def test_async_anthropic_stream(fp: FakeProvider) -> None:
    """The async Anthropic client streams from the fake too."""
    client = anthropic.AsyncAnthropic(base_url=fp.base_url, api_key="k", max_retries=0)
    request: Any = {"model": CLAUDE, "max_tokens": 64, "messages": HELLO}
    async with client, client.messages.stream(**request) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "end_turn"


# --------------------------------------------------------------------------- scripted errors


def test_openai_errors_map_to_sdk_exceptions(fp: FakeProvider, oai: openai.OpenAI) -> None:
    """Scripted OpenAI errors surface as the SDK's exception classes with real bodies."""
    cases: list[tuple[Any, type[openai.APIStatusError], str]] = [
        (
            openai_error(429, "rate_limit_exceeded", retry_after=2),
            openai.RateLimitError,
            "requests",
        ),
        (
            openai_error(429, code="insufficient_quota", type="insufficient_quota"),
            openai.RateLimitError,
            "insufficient_quota",
        ),
        (openai_error(401, "invalid_api_key"), openai.AuthenticationError, "invalid_request_error"),
        (openai_error(404, "model_not_found"), openai.NotFoundError, "invalid_request_error"),
        (
            openai_error(400, "context_length_exceeded"),
            openai.BadRequestError,
            "invalid_request_error",
        ),
        (openai_error(503), openai.InternalServerError, "server_error"),
    ]
    for behaviour, exc_type, error_type in cases:
        fp.script(behaviour)
        with pytest.raises(exc_type) as caught:
            oai.chat.completions.create(model=GPT, messages=HELLO)
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["type"] == error_type
        assert set(caught.value.body) == {"message", "type", "param", "code"}
    assert oai.chat.completions.create(model=GPT, messages=HELLO).choices


def test_error_details_and_retry_headers(fp: FakeProvider, oai: openai.OpenAI) -> None:
    """Error bodies name the requested model; Retry-After and retry-after-ms are sent."""
    fp.script(
        openai_error(404, "model_not_found"), openai_error(429, retry_after=2, retry_after_ms=1500)
    )
    with pytest.raises(openai.NotFoundError) as missing:
        oai.chat.completions.create(model="gpt-9", messages=HELLO)
    assert missing.value.code == "model_not_found"
    assert "`gpt-9`" in missing.value.message
    with pytest.raises(openai.RateLimitError) as limited:
        oai.chat.completions.create(model=GPT, messages=HELLO)
    assert limited.value.response.headers["retry-after"] == "2"
    assert limited.value.response.headers["retry-after-ms"] == "1500"
    assert limited.value.request_id == fp.last.request_id


def test_anthropic_errors_map_to_sdk_exceptions(
    fp: FakeProvider, claude: anthropic.Anthropic
) -> None:
    """Anthropic error bodies (type/error/request_id) map to the SDK's classes, 529 included."""
    fp.script(
        anthropic_error(529, "overloaded_error"),
        anthropic_error(429, retry_after=3),
        anthropic_error(401),
    )
    expected = [
        (anthropic.OverloadedError, 529, "overloaded_error"),
        (anthropic.RateLimitError, 429, "rate_limit_error"),
        (anthropic.AuthenticationError, 401, "authentication_error"),
    ]
    for exc_type, status, error_type in expected:
        with pytest.raises(exc_type) as caught:
            claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
        assert caught.value.status_code == status
        body = caught.value.body
        assert isinstance(body, dict)
        assert body["type"] == "error"
        assert body["error"]["type"] == error_type
        assert body["request_id"] == fp.last.request_id
        assert caught.value.response.headers["request-id"] == fp.last.request_id
    assert fp.received[1].request_id != fp.received[2].request_id


def test_script_is_fifo_then_default(fp: FakeProvider, oai: openai.OpenAI) -> None:
    """Scripted behaviours are consumed one per request in order, then the default resumes."""
    fp.script(openai_error(500), default(), openai_error(502))
    assert fp.pending == 3
    outcomes = []
    for _ in range(4):
        try:
            oai.chat.completions.create(model=GPT, messages=HELLO)
            outcomes.append(200)
        except openai.APIStatusError as exc:
            outcomes.append(exc.status_code)
    assert outcomes == [500, 200, 502, 200]
    assert fp.pending == 0


# --------------------------------------------------------------------------- stream faults


def test_openai_stream_error_first_event(fp: FakeProvider, oai: openai.OpenAI) -> None:
    """A first SSE event of ``data: {"error": ...}`` raises openai.APIError in the SDK."""
    fp.script(stream_error(message="boom"))
    with pytest.raises(openai.APIError) as caught:
        list(oai.chat.completions.create(model=GPT, messages=HELLO, stream=True))
    assert caught.value.message == "boom"
    assert caught.value.body == {
        "message": "boom",
        "type": "server_error",
        "param": None,
        "code": None,
    }


def test_anthropic_stream_error_event(fp: FakeProvider, claude: anthropic.Anthropic) -> None:
    """An ``event: error`` in an Anthropic stream raises APIStatusError with the error body."""
    fp.script(stream_error(after=3))
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        claude.messages.stream(model=CLAUDE, max_tokens=64, messages=HELLO) as stream,
    ):
        stream.get_final_message()
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


async def test_stream_error_wire_formats(fp: FakeProvider) -> None:
    """stream_error keeps the first ``after`` events and ends with the dialect's error event."""
    fp.script(stream_error(after=3), stream_error())
    _, _, claude_raw = await post(fp, "/v1/messages", CLAUDE_STREAM)
    responses_body = {"model": "gpt-4o", "input": "hi", "stream": True}
    _, _, responses_raw = await post(fp, "/v1/responses", responses_body)
    names = [sse_json(b)[0] for b in sse_blocks(claude_raw)]
    assert names == ["message_start", "content_block_start", "ping", "error"]
    name, data = sse_json(sse_blocks(responses_raw)[0])
    assert name == "error"
    assert data["type"] == "error"
    assert data["sequence_number"] == 0


async def test_stall_then_client_disconnect_is_recorded(fp: FakeProvider) -> None:
    """A stalled stream sends N events then nothing; the client leaving counts a disconnect."""
    fp.script(stall(after=2, seconds=30))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(fp.url + "/v1/chat/completions", json=CHAT_STREAM)
        first = [await resp.content.readuntil(b"\n\n") for _ in range(2)]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 0.2)
        resp.close()
    assert all(block.startswith(b"data: {") for block in first)
    assert await fp.await_disconnects(1)
    assert fp.disconnects == 1


async def test_short_stall_resumes_stream(fp: FakeProvider) -> None:
    """After a stall the rest of the default stream follows, byte-identical."""
    _, _, expected = await post(fp, "/v1/messages", CLAUDE_STREAM)
    fp.script(stall(after=1, seconds=0.05))
    _, _, stalled = await post(fp, "/v1/messages", CLAUDE_STREAM)
    assert stalled == expected
    assert fp.disconnects == 0


async def test_reset_after_events(fp: FakeProvider) -> None:
    """reset_after(N) delivers exactly N events, then the connection breaks."""
    fp.script(reset_after(3))
    events: list[bytes] = []
    async with (
        aiohttp.ClientSession() as http,
        http.post(fp.url + "/v1/messages", json=CLAUDE_STREAM) as resp,
    ):
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_events(resp, into=events)
    names = [sse_json(block)[0] for block in events]
    assert names == ["message_start", "content_block_start", "ping"]
    assert fp.disconnects == 0


async def test_reset_before_response(fp: FakeProvider) -> None:
    """reset() drops the connection without any response; the request is still recorded."""
    fp.script(reset())
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(fp, "/v1/chat/completions", {"model": GPT, "messages": HELLO})
    assert fp.last.json()["model"] == GPT
    assert fp.disconnects == 0


def test_reset_surfaces_as_sdk_connection_error(fp: FakeProvider, oai: openai.OpenAI) -> None:
    """The OpenAI SDK reports a reset as APIConnectionError."""
    fp.script(reset())
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model=GPT, messages=HELLO)


async def test_delay_then_default(fp: FakeProvider) -> None:
    """delay() answers normally after waiting."""
    fp.script(delay(0.05))
    status, _, body = await post(fp, "/v1/chat/completions", {"model": GPT, "messages": HELLO})
    assert status == 200
    assert json.loads(body)["object"] == "chat.completion"


async def test_delay_client_timeout_counts_disconnect(fp: FakeProvider) -> None:
    """A client giving up during the first-byte delay is recorded as a disconnect."""
    fp.script(delay(30))
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    with pytest.raises(asyncio.TimeoutError):
        await post(fp, "/v1/chat/completions", CHAT_STREAM, timeout=timeout)
    assert await fp.await_disconnects(1)


async def test_cancelled_client_task_counts_disconnect(fp: FakeProvider) -> None:
    """Cancelling a client mid-stream is observable as an upstream disconnect."""
    fp.script(stall(after=1, seconds=30))
    task = asyncio.create_task(post(fp, "/v1/chat/completions", CHAT_STREAM))
    assert await fp.await_requests(1)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await fp.await_disconnects(1)


# --------------------------------------------------------------------------- odd bodies


async def test_malformed_json(fp: FakeProvider) -> None:
    """malformed_json() is a 200 application/json reply that does not parse."""
    fp.script(malformed_json())
    status, headers, body = await post(fp, "/v1/chat/completions", {"model": GPT})
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


async def test_gzipped_default(fp: FakeProvider, oai: openai.OpenAI) -> None:
    """gzipped() sends the default body compressed with Content-Encoding: gzip."""
    body: Any = {"model": GPT, "messages": HELLO}
    _, _, plain = await post(fp, "/v1/chat/completions", body)
    fp.script(gzipped())
    _, headers, raw = await post(fp, "/v1/chat/completions", body, auto_decompress=False)
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(raw) == plain
    fp.script(gzipped())
    completion = await asyncio.to_thread(lambda: oai.chat.completions.create(**body))
    assert completion.choices[0].message.content == f"Hello from {GPT}: hi there"


async def test_custom_reply_and_sse_chunks(fp: FakeProvider) -> None:
    """custom() and sse() send exactly the given status, headers and bytes."""
    chunks: list[bytes | tuple[float, bytes]] = [
        b"data: 1\n\n",
        (0.02, b"data: 2\n"),
        b"\n",
        b"data: [DONE]\n\n",
    ]
    fp.script(
        custom(418, b"teapot", content_type="text/plain", headers={"x-extra": "1"}),
        sse(chunks, headers={"x-extra": "2"}),
    )
    status, headers, body = await post(fp, "/v1/chat/completions", {})
    assert (status, headers["Content-Type"], headers["x-extra"], body) == (
        418,
        "text/plain",
        "1",
        b"teapot",
    )
    status, headers, body = await post(fp, "/v1/chat/completions", {})
    assert headers["Transfer-Encoding"] == "chunked"
    assert body == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"


async def test_unknown_path_and_bad_json(fp: FakeProvider) -> None:
    """Unknown paths get an OpenAI-format 404; unparsable bodies a dialect-format 400."""
    status, _, body = await post(fp, "/v1/nope", {})
    assert status == 404
    assert json.loads(body) == {
        "error": {
            "message": "Invalid URL (POST /v1/nope)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(fp.url + "/v1/messages", data=b"{nope") as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_head_gets_the_gets_head_and_no_body(fp: FakeProvider) -> None:
    """HEAD is answered with the GET's status and Content-Length, and not one body byte
    (read on a raw socket: an HTTP client would hide bytes sent after the head)."""
    async with aiohttp.ClientSession() as http, http.get(fp.url + "/v1/models") as resp:
        got = (resp.status, len(await resp.read()))
    reader, writer = await asyncio.open_connection("127.0.0.1", fp.port)
    writer.write(b"HEAD /v1/models HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert int(head.split(b" ", 2)[1]) == got[0] == 200
    assert b"\r\nContent-Length: %d\r\n" % got[1] in head + b"\r\n"
    assert body == b""


# --------------------------------------------------------------------------- plumbing


def test_prefix_routes() -> None:
    """With a prefix, routes live under it and the bare paths are 404."""
    with (
        FakeProvider(prefix="/openai") as fp,
        openai.OpenAI(base_url=fp.openai_base_url, api_key="k", max_retries=0) as client,
        openai.OpenAI(base_url=fp.url + "/v1", api_key="k", max_retries=0) as bare,
    ):
        assert client.models.list().data
        assert fp.last.path == "/openai/v1/models"
        with pytest.raises(openai.NotFoundError):
            bare.models.list()


def test_recording_and_clear(fp: FakeProvider, oai: openai.OpenAI) -> None:
    """Requests are recorded with case-insensitive headers, query and body; clear() resets."""
    oai.models.list(extra_query={"limit": "5"}, extra_headers={"X-Trace": "abc"})
    received = fp.last
    assert (received.method, received.path, received.query) == ("GET", "/v1/models", {"limit": "5"})
    assert received.headers["x-trace"] == received.headers["X-TRACE"] == "abc"
    assert received.headers["Authorization"] == "Bearer sk-test"
    assert received.body == b""
    fp.script(openai_error(500))
    fp.clear()
    assert (fp.received, fp.pending, fp.disconnects) == ([], 0, 0)


def test_usable_from_several_event_loops(fp: FakeProvider) -> None:
    """The provider's own thread serves clients on any number of separate event loops."""
    body = {"model": GPT, "messages": HELLO}
    results = [asyncio.run(post(fp, "/v1/chat/completions", body)) for _ in range(2)]
    assert results[0][2] == results[1][2]
    assert fp.wait_for_requests(2)


async def test_unused_port_refuses_connections() -> None:
    """unused_port() gives a port where connecting fails."""
    port = unused_port()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorError):
            await http.get(f"http://127.0.0.1:{port}/")
