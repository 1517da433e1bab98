"""Streams and failover: retried elsewhere before the first content, never after.

Before the commit point (the first content event) an upstream's opening frames
are held back, so a stream that fails right at its start is served by the next
target and the client sees one clean stream. After content reached the client,
a failure ends the stream with a well-formed error event in the client's format
and is never retried.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
from conftest import Running
from fakeprovider import SSE_DONE, reset_after, sse, stall, stream_error
from test_failover_support import (
    ANTHROPIC_HEADERS,
    CLAUDE,
    GPT,
    HELLO,
    Fakes,
    attrs,
    chat,
    client_spans,
    config,
    get_status,
    label,
    message,
    metric_sum,
    only_server_span,
    post,
    start_fakes,
    targets,
)

from proxy.providers.anthropic import AnthropicAdapter
from proxy.providers.openai import OpenAIAdapter

Start = Callable[..., Running]
OPENAI_TEXT = f"Hello from {GPT}: hi there"
CLAUDE_TEXT = f"Hello from {CLAUDE}: hi there"
#: The fake's Responses stream: created, in_progress, output_item.added,
#: content_part.added, then the first output_text.delta (event index 4).
RESPONSES_FIRST_DELTA = 4


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


def sse_blocks(raw: bytes) -> list[bytes]:
    return [block for block in raw.split(b"\n\n") if block.strip()]


def anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


MESSAGE_START = anthropic_event(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_from_the_failing_target",
            "type": "message",
            "role": "assistant",
            "model": CLAUDE,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 6, "output_tokens": 1},
        },
    },
)
PING = anthropic_event("ping", {"type": "ping"})
CONTENT_BLOCK_START = anthropic_event(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
OVERLOADED = anthropic_event(
    "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
)


def openai_stream_text(running: Running) -> str:
    """Stream a chat completion with the OpenAI SDK; the concatenated text."""
    with openai.OpenAI(
        base_url=running.openai_base_url, api_key="sk-test", max_retries=0
    ) as client:
        stream = client.chat.completions.create(model="m", messages=HELLO, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def claude_stream_text(running: Running) -> str:
    with (
        anthropic.Anthropic(base_url=running.url, api_key="sk-ant", max_retries=0) as client,
        client.messages.stream(model="m", max_tokens=64, messages=HELLO) as stream,
    ):
        return "".join(stream.text_stream)


# --------------------------------------------------------------------------- before first content


def test_openai_stream_whose_first_event_is_an_error_fails_over(
    fakes: Fakes, spangate_for: Start
) -> None:
    """a's 200 stream opens with `data: {"error": ...}`: b serves, the client sees b only."""
    fakes.a.script(stream_error(after=0))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    assert openai_stream_text(running) == OPENAI_TEXT
    assert [len(fakes.a.received), len(fakes.b.received)] == [1, 1]
    first, second = client_spans(running)
    assert attrs(first)["spangate.failure_class"] == "transient"
    assert first.status.is_ok is False
    assert attrs(second)["spangate.stream.outcome"] == "completed"
    server = attrs(only_server_span(running))
    assert (server["spangate.attempts"], server["spangate.target"]) == (2, label("b"))
    assert "error.type" not in server


async def test_openai_failed_stream_start_leaves_no_trace_in_the_client_bytes(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Raw check: the held-back error event of a never reaches the client."""
    fakes.a.script(stream_error(after=0))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    status, headers, raw = await post(running.url, "/v1/chat/completions", chat(stream=True))
    assert status == 200
    assert headers["x-spangate-target"] == label("b")
    assert b'"error"' not in raw
    assert sse_blocks(raw)[-1] == b"data: [DONE]"


@pytest.mark.parametrize(
    "opening",
    [
        pytest.param([MESSAGE_START, OVERLOADED], id="message_start-error"),
        pytest.param([MESSAGE_START, PING, OVERLOADED], id="message_start-ping-error"),
        pytest.param([OVERLOADED], id="error-first"),
    ],
)
async def test_anthropic_stream_failing_after_its_opening_frames_fails_over(
    fakes: Fakes, spangate_for: Start, opening: list[bytes]
) -> None:
    """x sends message_start (and ping), then `event: error` overloaded: the opening frames
    were held back, so y serves and the client gets exactly one message_start, y's."""
    fakes.x.script(sse(opening))
    running = spangate_for(config(fakes, {"m": {"targets": targets("x", "y")}}))
    status, headers, raw = await post(
        running.url, "/v1/messages", message(stream=True), ANTHROPIC_HEADERS
    )
    assert status == 200
    assert headers["x-spangate-target"] == label("y")
    assert b"msg_from_the_failing_target" not in raw
    assert b"event: error" not in raw
    assert raw.count(b"event: message_start") == 1
    first, _ = client_spans(running)
    assert attrs(first)["spangate.failure_class"] == "transient"
    assert attrs(first)["error.type"] == "overloaded_error"


def test_anthropic_sdk_sees_a_clean_stream_after_an_opening_failure(
    fakes: Fakes, spangate_for: Start
) -> None:
    """The Anthropic SDK's stream helper gets y's full text, no error."""
    fakes.x.script(sse([MESSAGE_START, OVERLOADED]))
    running = spangate_for(config(fakes, {"m": {"targets": targets("x", "y")}}))
    assert claude_stream_text(running) == CLAUDE_TEXT


def test_fake_default_anthropic_stream_error_at_start_fails_over(
    fakes: Fakes, spangate_for: Start
) -> None:
    """The fake's own stream_error(after=1) (message_start, then error) fails over too."""
    fakes.x.script(stream_error(after=1))
    running = spangate_for(config(fakes, {"m": {"targets": targets("x", "y")}}))
    assert claude_stream_text(running) == CLAUDE_TEXT
    assert len(fakes.y.received) == 1


def test_openai_error_right_after_the_role_chunk_fails_over(
    fakes: Fakes, spangate_for: Start
) -> None:
    """The first chat chunk carries only the role and empty content: still an opening frame."""
    fakes.a.script(stream_error(after=1))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    assert openai_stream_text(running) == OPENAI_TEXT


def responses_stream_text(running: Running) -> str:
    """Stream a Responses answer with the OpenAI SDK; the concatenated text deltas."""
    with openai.OpenAI(
        base_url=running.openai_base_url, api_key="sk-test", max_retries=0
    ) as client:
        stream = client.responses.create(model="m", input="hi", stream=True)
        return "".join(e.delta for e in stream if e.type == "response.output_text.delta")


@pytest.mark.parametrize("after", [0, 2], ids=["first-event", "after-opening-frames"])
async def test_a_responses_rate_limit_error_event_at_the_start_is_rate_limited(
    fakes: Fakes, spangate_for: Start, after: int
) -> None:
    """A Responses stream whose first event past its opening frames is `event: error`
    with code rate_limit_exceeded (its fields at the top level) is a rate limit, as a
    429 would be, not a transient fault: b serves the SDK a clean stream, and a's
    attempt and circuit say rate_limited."""
    fakes.a.script(stream_error(after=after, code="rate_limit_exceeded"))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    assert responses_stream_text(running) == f"Hello from {GPT}: hi"
    assert [len(fakes.a.received), len(fakes.b.received)] == [1, 1]
    first, _ = client_spans(running)
    assert attrs(first)["spangate.failure_class"] == "rate_limited"
    assert attrs(first)["error.type"] == "rate_limit_exceeded"
    target = (await get_status(running))["targets"][label("a")]
    assert target["consecutive_failures"] == 1
    assert [e["class"] for e in target["recent_errors"]] == ["rate_limited"]


def test_anthropic_error_right_after_an_empty_content_block_start_fails_over(
    fakes: Fakes, spangate_for: Start
) -> None:
    """content_block_start with empty text carries no content yet: still failover-able."""
    fakes.x.script(sse([MESSAGE_START, CONTENT_BLOCK_START, PING, OVERLOADED]))
    running = spangate_for(config(fakes, {"m": {"targets": targets("x", "y")}}))
    assert claude_stream_text(running) == CLAUDE_TEXT


def test_stream_first_byte_timeout_fails_over(fakes: Fakes, spangate_for: Start) -> None:
    """Headers arrive but no event within first_byte_s: a timeout, the next target serves."""
    fakes.a.script(stall(after=0, seconds=3))
    models = {"m": {"targets": targets("a", "b"), "timeouts": {"first_byte_s": 0.3}}}
    running = spangate_for(config(fakes, models))
    assert openai_stream_text(running) == OPENAI_TEXT
    first, _ = client_spans(running)
    assert attrs(first)["spangate.failure_class"] == "timeout"
    assert fakes.a.wait_for_disconnects(1)


_TRUNCATION_BUG = (
    "BUG: failover._commit_stream relays a stream that ended (clean EOF) before any content "
    "and without a terminal event as a success ('nothing to fail over for'), so an upstream "
    "that dies right at the start is not retried elsewhere"
)


def test_openai_stream_ending_with_no_event_at_all_fails_over(
    fakes: Fakes, spangate_for: Start
) -> None:
    """a answers 200 text/event-stream and closes without a single event: b serves."""
    fakes.a.script(sse([]))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    assert openai_stream_text(running) == OPENAI_TEXT


def test_anthropic_stream_ending_after_message_start_fails_over(
    fakes: Fakes, spangate_for: Start
) -> None:
    """x sends message_start and ends the stream: no content, no message_stop: y serves."""
    fakes.x.script(sse([MESSAGE_START]))
    running = spangate_for(config(fakes, {"m": {"targets": targets("x", "y")}}))
    assert claude_stream_text(running) == CLAUDE_TEXT


# --------------------------------------------------------------------------- after content


def test_openai_stream_reset_after_content_ends_with_an_error_and_no_retry(
    fakes: Fakes, spangate_for: Start
) -> None:
    """a resets after 3 events (content reached the client): the SDK raises while iterating,
    b is never asked, the CLIENT span is an error with stream.outcome stream_interrupted and
    spangate.streams.interrupted counts 1."""
    fakes.a.script(reset_after(events=3))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    seen = []
    with openai.OpenAI(
        base_url=running.openai_base_url, api_key="sk-test", max_retries=0
    ) as client:
        stream = client.chat.completions.create(model="m", messages=HELLO, stream=True)
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "Hello from"  # content did reach the client first
    assert "incomplete" in caught.value.message
    assert len(fakes.b.received) == 0
    (only,) = client_spans(running)
    assert attrs(only)["spangate.stream.outcome"] == "stream_interrupted"
    assert attrs(only)["error.type"] == "stream_interrupted"
    assert only.status.is_ok is False
    server = only_server_span(running)
    assert attrs(server)["spangate.attempts"] == 1
    assert attrs(server)["error.type"] == "stream_interrupted"
    assert server.status.is_ok is False
    assert metric_sum(running, "spangate.streams.interrupted", {"spangate.provider": "a"}) == 1


async def test_openai_interrupted_stream_wire_ends_with_a_data_error_event(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Raw check: the last event is an OpenAI `data: {"error": ...}` object, no [DONE]."""
    fakes.a.script(reset_after(events=3))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    status, _, raw = await post(running.url, "/v1/chat/completions", chat(stream=True))
    assert status == 200
    blocks = sse_blocks(raw)
    assert len(blocks) == 4
    last = json.loads(blocks[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "stream_interrupted"
    assert last["error"]["type"] == "server_error"
    assert b"[DONE]" not in raw


def test_responses_stream_reset_after_content_raises_spangates_message_in_the_sdk(
    fakes: Fakes, spangate_for: Start
) -> None:
    """A Responses stream cut after its first text delta: `responses.create(stream=True)`
    yields the delta, then raises APIError with spangate's message (not a silently
    yielded error event), and b is never asked."""
    fakes.a.script(reset_after(events=RESPONSES_FIRST_DELTA + 1))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    seen: list[str] = []
    with openai.OpenAI(
        base_url=running.openai_base_url, api_key="sk-test", max_retries=0
    ) as client:
        stream = client.responses.create(model="m", input="hi", stream=True)
        with pytest.raises(openai.APIError) as caught:
            for event in stream:
                assert event.type != "error", event
                if event.type == "response.output_text.delta":
                    seen.append(event.delta)
    assert "".join(seen) == "Hello"  # content did reach the client first
    assert caught.value.message.startswith("spangate: the provider's stream broke off")
    assert "incomplete" in caught.value.message
    assert len(fakes.b.received) == 0
    (only,) = client_spans(running)
    assert attrs(only)["spangate.stream.outcome"] == "stream_interrupted"


async def test_responses_interrupted_stream_wire_ends_with_the_responses_error_event(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Raw check: a Responses stream ends with `event: error` whose data has the Responses
    API's documented fields (type, code, message, param, sequence_number one past the last
    event relayed) and the nested `error` object the live API sends; no chat-style data."""
    fakes.a.script(reset_after(events=RESPONSES_FIRST_DELTA + 1))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    body = {"model": "m", "input": "hi", "stream": True}
    status, _, raw = await post(running.url, "/v1/responses", body)
    assert status == 200
    blocks = sse_blocks(raw)
    assert len(blocks) == RESPONSES_FIRST_DELTA + 2
    name, data = blocks[-1].split(b"\n", 1)
    assert name == b"event: error"
    event = json.loads(data.removeprefix(b"data: "))
    assert event["type"] == "error"
    assert event["code"] == "stream_interrupted"
    assert event["param"] is None
    assert event["message"].startswith("spangate: ")
    assert event["sequence_number"] == RESPONSES_FIRST_DELTA + 1
    assert event["error"] == {
        "type": "server_error",
        "code": "stream_interrupted",
        "message": event["message"],
        "param": None,
    }


async def test_a_responses_stream_without_sequence_numbers_ends_without_one(
    fakes: Fakes, spangate_for: Start
) -> None:
    """A provider whose Responses events carry no sequence_number (some compatible
    servers): spangate's error event invents none either."""
    created = b'event: response.created\ndata: {"type":"response.created"}\n\n'
    delta = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta"}\n\n'
    fakes.a.script(sse([created, delta]))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a")}}))
    body = {"model": "m", "input": "hi", "stream": True}
    _, _, raw = await post(running.url, "/v1/responses", body)
    assert raw.startswith(created + delta), raw
    name, data = sse_blocks(raw)[-1].split(b"\n", 1)
    assert name == b"event: error"
    event = json.loads(data.removeprefix(b"data: "))
    assert "sequence_number" not in event
    assert event["code"] == "stream_interrupted"


async def test_a_keep_alive_comment_last_does_not_lose_the_sequence_number(
    fakes: Fakes, spangate_for: Start
) -> None:
    """The error event numbers itself after the last numbered event, even when the last
    block relayed before the break was a keep-alive comment, which carries no number."""
    created = b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
    delta = (
        b"event: response.output_text.delta\n"
        b'data: {"type":"response.output_text.delta","sequence_number":1}\n\n'
    )
    fakes.a.script(sse([created, delta, b": ping\n\n"]))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a")}}))
    body = {"model": "m", "input": "hi", "stream": True}
    _, _, raw = await post(running.url, "/v1/responses", body)
    assert raw.startswith(created + delta + b": ping\n\n"), raw
    name, data = sse_blocks(raw)[-1].split(b"\n", 1)
    assert name == b"event: error"
    assert json.loads(data.removeprefix(b"data: "))["sequence_number"] == 2


def test_anthropic_stream_reset_after_content_raises_in_the_sdk(
    fakes: Fakes, spangate_for: Start
) -> None:
    """x resets after the first text delta: messages.stream raises, y is never asked."""
    fakes.x.script(reset_after(events=4))
    running = spangate_for(config(fakes, {"m": {"targets": targets("x", "y")}}))
    seen: list[str] = []
    with (
        anthropic.Anthropic(base_url=running.url, api_key="sk-ant", max_retries=0) as client,
        pytest.raises(anthropic.APIError) as caught,
        client.messages.stream(model="m", max_tokens=64, messages=HELLO) as stream,
    ):
        seen.extend(stream.text_stream)
    assert seen == ["Hello"]
    assert "incomplete" in str(caught.value)
    assert len(fakes.y.received) == 0
    (only,) = client_spans(running)
    assert attrs(only)["spangate.stream.outcome"] == "stream_interrupted"
    assert metric_sum(running, "spangate.streams.interrupted") == 1


async def test_anthropic_interrupted_stream_wire_ends_with_event_error(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Raw check: Anthropic's in-band error is `event: error` with an api_error body."""
    fakes.x.script(reset_after(events=4))
    running = spangate_for(config(fakes, {"m": {"targets": targets("x", "y")}}))
    _, _, raw = await post(running.url, "/v1/messages", message(stream=True), ANTHROPIC_HEADERS)
    last = sse_blocks(raw)[-1]
    name, data = last.split(b"\n", 1)
    assert name == b"event: error"
    body = json.loads(data.removeprefix(b"data: "))
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert b"message_stop" not in raw


def test_idle_gap_after_content_ends_the_stream_with_an_error(
    fakes: Fakes, spangate_for: Start
) -> None:
    """A stall longer than timeouts.idle_s after content: stream_idle_timeout, no retry."""
    fakes.a.script(stall(after=3, seconds=3))
    models = {"m": {"targets": targets("a", "b"), "timeouts": {"idle_s": 0.3}}}
    running = spangate_for(config(fakes, models))
    with pytest.raises(openai.APIError):
        openai_stream_text(running)
    assert len(fakes.b.received) == 0
    (only,) = client_spans(running)
    assert attrs(only)["spangate.stream.outcome"] == "stream_idle_timeout"
    assert metric_sum(running, "spangate.streams.interrupted") == 1
    assert fakes.a.wait_for_disconnects(1), "the stalled upstream was not closed"


def test_upstream_error_event_after_content_counts_as_an_interrupted_stream(
    fakes: Fakes, spangate_for: Start
) -> None:
    """a sends content, then its own `data: {"error": ...}`: no retry (content went out),
    and the stream is a failure in the telemetry like any other broken stream."""
    fakes.a.script(stream_error(after=3))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    with pytest.raises(openai.APIError):
        openai_stream_text(running)
    assert len(fakes.b.received) == 0
    (only,) = client_spans(running)
    assert only.status.is_ok is False
    server = only_server_span(running)
    assert server.status.is_ok is False, attrs(server)
    assert attrs(only)["spangate.stream.outcome"] == "stream_error"
    assert metric_sum(running, "spangate.streams.interrupted") == 1


@pytest.mark.parametrize(
    ("name", "path", "body", "after"),
    [
        pytest.param("a", "/v1/chat/completions", chat(stream=True), 3, id="chat"),
        pytest.param(
            "a", "/v1/responses", {"model": "m", "input": "hi", "stream": True}, 5, id="responses"
        ),
        pytest.param("x", "/v1/messages", message(stream=True), 5, id="anthropic"),
    ],
)
async def test_a_providers_error_event_after_content_ends_the_stream_as_sent(
    fakes: Fakes, spangate_for: Start, name: str, path: str, body: dict[str, Any], after: int
) -> None:
    """The provider ends a stream with its own error event after content and closes it
    (OpenAI sends no [DONE] after one): that event is the stream's end, so the client gets
    the provider's stream byte for byte with no spangate error appended, the outcome is
    stream_error (not stream_truncated), and the target's circuit counts a transient
    failure."""
    fakes[name].script(stream_error(after=after))
    direct = await post(fakes[name].url, path, {**body, "model": GPT}, ANTHROPIC_HEADERS)
    fakes[name].script(stream_error(after=after))
    running = spangate_for(config(fakes, {"m": {"targets": targets(name)}}))
    status, _, raw = await post(running.url, path, body, ANTHROPIC_HEADERS)
    assert status == 200
    assert b"error" in sse_blocks(raw)[-1]
    assert sse_blocks(raw)[-1] == sse_blocks(direct[2])[-1]
    assert b"spangate" not in raw
    (only,) = client_spans(running)
    assert attrs(only)["spangate.stream.outcome"] == "stream_error"
    target = (await get_status(running))["targets"][label(name)]
    assert [e["class"] for e in target["recent_errors"]] == ["transient"]


@pytest.mark.parametrize(
    ("name", "path", "body", "after", "blameless", "counted"),
    [
        pytest.param(
            "x", "/v1/messages", message(stream=True), 5,
            "invalid_request_error", "overloaded_error", id="anthropic",
        ),
        pytest.param(
            "a", "/v1/chat/completions", chat(stream=True), 3,
            "invalid_request_error", "server_error", id="chat",
        ),
        # The Responses `error` event: its code at the top level.
        pytest.param(
            "a", "/v1/responses", {"model": "m", "input": "hi", "stream": True}, 5,
            "invalid_prompt", "server_error", id="responses",
        ),
    ],
)  # fmt: skip
async def test_an_error_event_after_content_counts_against_the_circuit_by_what_it_says(
    fakes: Fakes,
    spangate_for: Start,
    name: str,
    path: str,
    body: dict[str, Any],
    after: int,
    blameless: str,
    counted: str,
) -> None:
    """An in-band error event after content is judged by its own type, as one at a
    stream's start would be: an invalid_request_error (the caller's fault) does not count
    toward the target's circuit, while an overloaded/server error counts as a transient
    failure."""
    running = spangate_for(config(fakes, {"m": {"targets": targets(name)}}))
    fakes[name].script(stream_error(after=after, type=blameless))
    status, _, raw = await post(running.url, path, body, ANTHROPIC_HEADERS)
    assert status == 200
    assert blameless.encode() in sse_blocks(raw)[-1]
    target = (await get_status(running))["targets"][label(name)]
    assert (target["state"], target["consecutive_failures"]) == ("closed", 0)
    assert target["recent_errors"] == []
    fakes[name].script(stream_error(after=after, type=counted))
    status, _, raw = await post(running.url, path, body, ANTHROPIC_HEADERS)
    assert status == 200
    assert counted.encode() in sse_blocks(raw)[-1]
    target = (await get_status(running))["targets"][label(name)]
    assert target["consecutive_failures"] == 1
    assert [e["class"] for e in target["recent_errors"]] == ["transient"]


def responses_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


RESPONSES_CONTENT = [
    responses_event(
        "response.created",
        {"sequence_number": 0, "response": {"id": "resp_1", "status": "in_progress"}},
    ),
    responses_event(
        "response.output_text.delta",
        {"sequence_number": 1, "item_id": "msg_1", "output_index": 0, "delta": "Hi"},
    ),
]


def response_failed(code: str) -> bytes:
    error = {"code": code, "message": "it failed"}
    failed = {"id": "resp_1", "object": "response", "status": "failed", "error": error}
    return responses_event("response.failed", {"sequence_number": 2, "response": failed})


async def test_a_responses_failed_event_after_content_counts_by_its_code(
    fakes: Fakes, spangate_for: Start
) -> None:
    """`response.failed` after content carries its code in the failed response's `error`:
    invalid_prompt is the caller's fault and does not count against the target's circuit,
    while server_error counts as a transient failure. Either way the stream is relayed as
    the provider ended it."""
    running = spangate_for(config(fakes, {"m": {"targets": targets("a")}}))
    body = {"model": "m", "input": "hi", "stream": True}
    fakes.a.script(sse([*RESPONSES_CONTENT, response_failed("invalid_prompt")]))
    status, _, raw = await post(running.url, "/v1/responses", body)
    assert status == 200
    assert raw == b"".join([*RESPONSES_CONTENT, response_failed("invalid_prompt")])
    target = (await get_status(running))["targets"][label("a")]
    assert (target["state"], target["consecutive_failures"]) == ("closed", 0)
    assert target["recent_errors"] == []
    fakes.a.script(sse([*RESPONSES_CONTENT, response_failed("server_error")]))
    await post(running.url, "/v1/responses", body)
    target = (await get_status(running))["targets"][label("a")]
    assert target["consecutive_failures"] == 1
    assert [e["class"] for e in target["recent_errors"]] == ["transient"]


OPENAI_HELLO_CHUNK = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
    b'"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},'
    b'"finish_reason":null}]}\n\n'
)
TEXT_DELTA = anthropic_event(
    "content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
)


def test_error_event_read_by_a_client_that_then_hangs_up_is_still_the_providers_fault(
    fakes: Fakes, spangate_for: Start
) -> None:
    """The provider sends content, an in-band error event, then keeps the connection
    open: the SDK raises and hangs up first, yet the stream counts as interrupted by
    the provider (stream_error), not as abandoned by the client."""
    error = b'data: {"error":{"message":"overloaded","type":"server_error","code":null}}\n\n'
    fakes.a.script(sse([OPENAI_HELLO_CHUNK, error, (2.0, SSE_DONE)]))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    with pytest.raises(openai.APIError):
        openai_stream_text(running)
    (only,) = client_spans(running)
    assert attrs(only)["spangate.stream.outcome"] == "stream_error"
    assert metric_sum(running, "spangate.streams.interrupted") == 1


@pytest.mark.parametrize(
    ("dialect", "events"),
    [
        pytest.param("openai", [OPENAI_HELLO_CHUNK], id="openai-no-done"),
        pytest.param(
            "anthropic", [MESSAGE_START, CONTENT_BLOCK_START, TEXT_DELTA], id="anthropic-no-stop"
        ),
    ],
)
@pytest.mark.parametrize("half", [b"", b'data: {"id": "c1", "choices": [{"delta": {"conte'])
async def test_stream_truncated_after_content_ends_with_an_error_event(
    fakes: Fakes, spangate_for: Start, dialect: str, events: list[bytes], half: bytes
) -> None:
    """The upstream closes cleanly mid-answer (content sent, no terminal event; perhaps in
    the middle of an event): the client's stream ends with an error event of its own in
    the client's format (never fused to half an event) and counts as interrupted."""
    name, path, body, headers = (
        ("a", "/v1/chat/completions", chat(stream=True), None)
        if dialect == "openai"
        else ("x", "/v1/messages", message(stream=True), ANTHROPIC_HEADERS)
    )
    fakes[name].script(sse([*events, half] if half else events))
    running = spangate_for(config(fakes, {"m": {"targets": targets(name)}}))
    _, _, raw = await post(running.url, path, body, headers)
    sent = b"".join(events)
    assert raw.startswith(sent), raw
    error = raw[len(sent) :]
    assert error.startswith(b"event: error" if dialect == "anthropic" else b'data: {"error"'), raw
    assert error.endswith(b"\n\n") and error.count(b"\n\n") == 1, raw
    (only,) = client_spans(running)
    assert attrs(only)["spangate.stream.outcome"] != "completed"
    assert metric_sum(running, "spangate.streams.interrupted") == 1


# A provider's stream may arrive with its end already known (the whole answer in one
# read, as from a cache or a fast local model): spangate then sends the last events and
# the end of its response together. Both paths must relay the same bytes and complete.
@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([OPENAI_HELLO_CHUNK + SSE_DONE], id="whole-in-one-write"),
        pytest.param([OPENAI_HELLO_CHUNK, SSE_DONE, (0.3, b"")], id="close-lags-done"),
    ],
)
async def test_stream_is_relayed_whole_and_completes_however_its_end_arrives(
    fakes: Fakes, spangate_for: Start, steps: list[bytes | tuple[float, bytes]]
) -> None:
    """Whether the provider's close comes with `data: [DONE]` or after it, the client gets
    exactly the provider's bytes and the attempt counts as a completed stream."""
    fakes["a"].script(sse(steps))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a")}}))
    status, _, raw = await post(running.url, "/v1/chat/completions", chat(stream=True))
    assert (status, raw) == (200, OPENAI_HELLO_CHUNK + SSE_DONE)
    (only,) = client_spans(running)
    assert attrs(only)["spangate.stream.outcome"] == "completed"
    assert metric_sum(running, "spangate.streams.interrupted") == 0


# --------------------------------------------------------------------------- stream ends

MESSAGE_STOP = anthropic_event("message_stop", {"type": "message_stop"})


def _no_space(event: bytes) -> bytes:
    """The same event without the optional space after each field's colon."""
    return event.replace(b"event: ", b"event:").replace(b"data: ", b"data:")


@pytest.mark.parametrize(
    ("dialect", "events"),
    [
        pytest.param("openai", [OPENAI_HELLO_CHUNK, SSE_DONE], id="openai"),
        pytest.param(
            "anthropic",
            [MESSAGE_START, CONTENT_BLOCK_START, TEXT_DELTA, MESSAGE_STOP],
            id="anthropic",
        ),
    ],
)
@pytest.mark.parametrize("spacing", ["no-space", "then-reset", "then-silence"])
async def test_a_stream_whose_terminal_event_arrived_is_complete_whatever_follows(
    fakes: Fakes, spangate_for: Start, dialect: str, events: list[bytes], spacing: str
) -> None:
    """The terminal event ends the answer: written without the optional space after the
    colon (`data:[DONE]`, `event:message_stop`), or followed by a reset or a silence
    before the close, the client gets exactly the provider's events, no error event
    after them, and the stream counts as completed."""
    name, path, body, headers = (
        ("a", "/v1/chat/completions", chat(stream=True), None)
        if dialect == "openai"
        else ("x", "/v1/messages", message(stream=True), ANTHROPIC_HEADERS)
    )
    sent = [_no_space(e) for e in events] if spacing == "no-space" else events
    steps: list[Any] = [*sent, (5.0, b"")] if spacing == "then-silence" else sent
    fakes[name].script(sse(steps, then_reset=spacing == "then-reset"))
    server = {"timeouts": {"idle_s": 0.3}}
    running = spangate_for(config(fakes, {"m": {"targets": targets(name)}}, server=server))
    status, _, raw = await post(running.url, path, body, headers)
    assert (status, raw) == (200, b"".join(sent))
    (only,) = client_spans(running)
    assert attrs(only)["spangate.stream.outcome"] == "completed"
    assert metric_sum(running, "spangate.streams.interrupted") == 0


async def test_a_pass_through_stream_ends_when_it_ends(fakes: Fakes, spangate_for: Start) -> None:
    """A stream on a path spangate only passes through has no terminal event spangate
    knows: its clean close is its end, with nothing appended."""
    events = [b"event: transcript.text.delta\ndata: {}\n\n", b"event: done\ndata: {}\n\n"]
    fakes.a.script(sse(events))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a")}}))
    status, _, raw = await post(running.url, "/v1/audio/transcriptions", {"stream": True})
    assert (status, raw) == (200, b"".join(events))


async def test_a_client_that_stops_reading_is_cut_off_after_the_idle_timeout(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Writes to the client are limited like reads from the provider: a client that keeps
    its connection open but takes no byte for timeouts.idle_s is treated as gone, so the
    upstream request is cancelled and its connection and pool slot come back."""
    big = b"data: " + b"x" * 60_000 + b"\n\n"
    # 120 MB: far more than every socket buffer between the fake and the client can
    # hold once the kernel has grown them (12 MB could all be absorbed under load, and a
    # reply the fake finished writing is no disconnect).
    fakes.a.script(sse([OPENAI_HELLO_CHUNK, *[big] * 2000, SSE_DONE]))
    server = {"timeouts": {"idle_s": 0.5}}
    running = spangate_for(config(fakes, {"m": {"targets": targets("a")}}, server=server))
    host, port = running.url.removeprefix("http://").split(":")
    _unread, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps(chat(stream=True)).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
        f"\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    try:
        # Nothing is read: spangate's sends fill the socket buffers, then wait.
        assert await fakes.a.await_disconnects(1, within=15)
        (only,) = client_spans(running)
        assert attrs(only)["spangate.stream.outcome"] == "client_disconnected"
        assert (await get_status(running))["targets"][label("a")]["inflight"] == 0
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("block", "finished"),
    [
        (b"event: response.completed\ndata: {}\n\n", "completed"),
        (b"event:response.incomplete\ndata:{}\n\n", "completed"),
        (b'data: {"type":"response.failed","response":{}}\n\n', "stream_error"),
        (b'data: {"type": "response.completed"}\n\n', "completed"),
        (b'event: response.output_text.delta\ndata: {"delta":"response.completed"}\n\n', None),
        (b"event: response.completed_soon\ndata: {}\n\n", None),
        (b"data:[DONE]\n\n", "completed"),
        (b'data: {"a":1}\n\ndata: [DONE]\n\n', "completed"),
        (b'data: {"choices":[{"delta":{"content":"data: [DONE]"}}]}\n\n', None),
        (b'data: {"choices":[{"delta":{"content":"x\\ndata: [DONE]"}}]}\n\n', None),
        (b'data: {"a":1}\n\ndata: {"error":{"type":"server_error"}}\n\n', "stream_error"),
        (b'data:{"error":{"type":"server_error"}}\n\ndata: [DONE]\n\n', "stream_error"),
        (b'event: error\ndata: {"type":"error","code":"server_error"}\n\n', "stream_error"),
        (b'data: {"choices":[{"delta":{"content":"data: {\\"error\\""}}]}\n\n', None),
    ],
)
def test_the_terminal_event_is_recognised_in_every_legal_spelling(
    block: bytes, finished: str | None
) -> None:
    """A stream ends with `data: [DONE]` or, for the Responses API, response.completed /
    incomplete / failed, named on its `event:` line (with or without the space) or only
    by its data's type; text that merely mentions one, even `data: [DONE]` itself inside
    a model's answer, is not an end. An in-band error event (chat's `data: {"error"...}`,
    Responses' `event: error` or response.failed) ends it too, as a stream_error."""
    assert OpenAIAdapter().stream_finished(block) == finished


@pytest.mark.parametrize(
    ("block", "finished"),
    [
        (b'event: message_stop\ndata: {"type":"message_stop"}\n\n', "completed"),
        (b'event:message_stop\ndata:{"type":"message_stop"}\n\n', "completed"),
        (b"event: ping\ndata: {}\n\nevent: message_stop\ndata: {}\n\n", "completed"),
        (
            b'event: content_block_delta\ndata: {"delta":{"text":"event: message_stop"}}\n\n',
            None,
        ),
        (b'event: error\ndata: {"type":"error","error":{}}\n\n', "stream_error"),
        (b'event: content_block_delta\ndata: {"delta":{"text":"event: error"}}\n\n', None),
    ],
)
def test_an_anthropic_stream_ends_only_at_a_message_stop_or_error_event(
    block: bytes, finished: str | None
) -> None:
    """`event: message_stop` (or, in failure, `event: error`) ends an Anthropic stream
    only as an event's own line, not as text inside a delta."""
    assert AnthropicAdapter().stream_finished(block) == finished


async def test_a_client_reading_a_large_event_slowly_is_waited_for(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Writes are limited by progress, not by how long one write takes: a 1 MB event (a
    base64 image, say; more than the kernel's socket buffers take at once) to a client
    that reads steadily but slowly (less than one 64 KiB write's worth per idle timeout)
    takes many idle timeouts to deliver, and arrives whole."""
    big = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"x" * 1_000_000 + b'"}}]}\n\n'
    fakes.a.script(sse([OPENAI_HELLO_CHUNK, big, SSE_DONE]))
    server = {"timeouts": {"idle_s": 0.2}}
    running = spangate_for(config(fakes, {"m": {"targets": targets("a")}}, server=server))
    host, port = running.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=32 * 1024)
    body = json.dumps(chat(stream=True)).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    received = b""
    try:
        while piece := await asyncio.wait_for(reader.read(8 * 1024), 10):
            received += piece
            await asyncio.sleep(0.05)  # ~160 KB/s: under one 64 KiB slice an idle_s
    finally:
        writer.close()
    assert _dechunked(received.partition(b"\r\n\r\n")[2]) == OPENAI_HELLO_CHUNK + big + SSE_DONE
    (only,) = client_spans(running)
    assert attrs(only)["spangate.stream.outcome"] == "completed"


def _dechunked(body: bytes) -> bytes:
    """A whole chunked transfer's payload (and only a whole one: the last chunk is 0)."""
    out, rest = b"", body
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n", "the transfer did not end"
            return out
        out, rest = out + rest[:size], rest[size + 2 :]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_stream_cut_into_arbitrary_reads_reaches_the_client_byte_for_byte(
    fakes: Fakes, spangate_for: Start, seed: int
) -> None:
    """However the provider's writes cut the stream (inside a line, inside a CRLF, one
    event over many reads), the client gets exactly its bytes, and only whole events."""
    rng = random.Random(seed)
    events = [
        OPENAI_HELLO_CHUNK,
        OPENAI_HELLO_CHUNK.replace(b"\n", b"\r\n"),
        OPENAI_HELLO_CHUNK.replace(b"\n\n", b"\r\r"),
        b'data: {"choices":[{"index":0,"delta":{"content":"' + b"y" * 300_000 + b'"}}]}\n\n',
        SSE_DONE,
    ]
    stream, pieces, at = b"".join(events), [], 0
    while at < len(stream):
        size = rng.choice([1, 2, 3, 7, 100, 65_536])
        pieces.append(stream[at : at + size])
        at += size
    fakes.a.script(sse(pieces))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a")}}))
    status, _, raw = await post(running.url, "/v1/chat/completions", chat(stream=True))
    assert (status, raw) == (200, stream)


async def test_an_event_that_never_ends_is_cut_off_with_an_error_event(
    fakes: Fakes, spangate_for: Start
) -> None:
    """An event that grows past 64 MiB without its blank line is not held for ever: the
    stream ends there with an error event in the client's format, and counts as broken."""
    endless = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"z" * (1 << 20)
    fakes.a.script(sse([OPENAI_HELLO_CHUNK, *[endless] * 65]))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a")}}))
    status, _, raw = await post(running.url, "/v1/chat/completions", chat(stream=True))
    assert status == 200 and raw.startswith(OPENAI_HELLO_CHUNK)
    error = json.loads(raw[len(OPENAI_HELLO_CHUNK) :].removeprefix(b"data: "))["error"]
    assert "an event over 64 MiB" in error["message"]
    (only,) = client_spans(running)
    assert attrs(only)["spangate.stream.outcome"] == "stream_interrupted"


def _data_only(event: bytes) -> bytes:
    """A Responses event as servers that send no `event:` lines write it."""
    return b"".join(line + b"\n" for line in event.split(b"\n") if line.startswith(b"data:"))


async def test_a_data_only_responses_error_after_content_ends_the_stream_judged_by_its_code(
    fakes: Fakes, spangate_for: Start
) -> None:
    """From a server that names events only by their data's type, an `error` event after
    content is the stream's end as `event: error` is: relayed as sent, with no error event
    of spangate's after it and no truncation; invalid_prompt is the caller's fault and
    does not count against the target's circuit."""
    running = spangate_for(config(fakes, {"m": {"targets": targets("a")}}))
    body = {"model": "m", "input": "hi", "stream": True}
    error = (
        b'data: {"type":"error","code":"invalid_prompt","message":"x","param":null,'
        b'"sequence_number":2}\n\n'
    )
    content = [_data_only(event) for event in RESPONSES_CONTENT]
    fakes.a.script(sse([*content, error]))
    status, _, raw = await post(running.url, "/v1/responses", body)
    assert status == 200
    assert raw == b"".join([*content, error])
    (only,) = client_spans(running)
    assert attrs(only)["spangate.stream.outcome"] == "stream_error"
    target = (await get_status(running))["targets"][label("a")]
    assert (target["consecutive_failures"], target["recent_errors"]) == (0, [])


async def test_a_data_only_responses_error_after_its_opening_frames_fails_over(
    fakes: Fakes, spangate_for: Start
) -> None:
    """`response.created` sent without an `event:` line is still an opening frame, not
    content: a rate_limit_exceeded `error` right after it fails over to b before anything
    reached the client, and counts as rate_limited."""
    created = (
        b'data: {"type":"response.created","sequence_number":0,'
        b'"response":{"id":"resp_1","status":"in_progress"}}\n\n'
    )
    error = (
        b'data: {"type":"error","code":"rate_limit_exceeded","message":"x","param":null,'
        b'"sequence_number":1}\n\n'
    )
    fakes.a.script(sse([created, error]))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    assert responses_stream_text(running) == f"Hello from {GPT}: hi"
    assert [len(fakes.a.received), len(fakes.b.received)] == [1, 1]
    target = (await get_status(running))["targets"][label("a")]
    assert [e["class"] for e in target["recent_errors"]] == ["rate_limited"]
