"""The request.completed log line, and opt-in message content capture (spans and events).

Log lines are captured with structlog's testing helper (raw event dicts, before
rendering); content capture is switched with the standard environment variable.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import Running, basic_config
from fakeprovider import FakeProvider, openai_error
from opentelemetry.trace import SpanKind
from structlog.testing import capture_logs
from test_telemetry_support import (
    CLAUDE,
    ERROR_500,
    GPT,
    attrs,
    claude,
    completed_lines,
    finished_spans,
    json_attr,
    oai,
    of_kind,
    one_request,
    settle,
)

from instrumentation import semconv as sc

Start = Callable[..., Running]
HELLO: Any = [{"role": "user", "content": "hi there"}]
CONTENT_KEYS = (
    sc.GEN_AI_INPUT_MESSAGES,
    sc.GEN_AI_OUTPUT_MESSAGES,
    sc.GEN_AI_SYSTEM_INSTRUCTIONS,
    sc.GEN_AI_TOOL_DEFINITIONS,
)
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def capture(fake: FakeProvider, spangate_for: Start, mode: str, **telemetry: Any) -> Running:
    config = basic_config(fake, telemetry=telemetry) if telemetry else basic_config(fake)
    return spangate_for(config, env={sc.CAPTURE_CONTENT_ENV: mode})


# --------------------------------------------------------------------------- request.completed


def test_one_completed_line_per_request_with_span_ids_and_facts(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """Exactly one request.completed per request (a rejected one too), ids = the SERVER span's."""
    config = basic_config(
        fake, models={"fast": {"targets": [{"provider": "openai", "model": GPT}]}}
    )
    running = spangate_for(config)
    with capture_logs() as captured:
        resp = oai(running).chat.completions.create(model="fast", messages=HELLO)
        list(oai(running).chat.completions.create(model=GPT, messages=HELLO, stream=True))
        request = urllib.request.Request(
            running.openai_base_url + "/chat/completions",
            data=b'{"messages": []}',
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=10)
        settle(running)
    lines = completed_lines(captured)
    assert len(lines) == 3
    servers = of_kind(finished_spans(running), SpanKind.SERVER)
    # Captured before rendering: the ids are still ints (the line writes them as hex).
    by_ids = {(s.context.trace_id, s.context.span_id): s for s in servers if s.context is not None}
    assert {(line["trace_id"], line["span_id"]) for line in lines} == set(by_ids)

    aliased, streamed, rejected = lines
    assert resp.usage is not None
    assert aliased["method"] == "POST"
    assert aliased["path"] == "/v1/chat/completions"
    assert aliased["route"] == "fast"
    assert aliased["model"] == "fast"
    assert aliased["provider"] == "openai"
    assert aliased["target"] == "openai/gpt-4o-mini"
    assert aliased["status"] == 200
    assert aliased["stream"] is False
    assert aliased["input_tokens"] == resp.usage.prompt_tokens
    assert aliased["output_tokens"] == resp.usage.completion_tokens
    assert aliased["duration_ms"] > 0
    assert aliased["cost_usd"] > 0
    (attempt,) = aliased["attempts"]
    assert attempt["n"] == 1
    assert attempt["target"] == "openai/gpt-4o-mini"
    assert attempt["status"] == 200
    assert 0 < attempt["duration_ms"] <= aliased["duration_ms"]
    assert "error_type" not in aliased

    assert streamed["route"] is None
    assert streamed["model"] == GPT
    assert streamed["stream"] is True
    assert streamed["status"] == 200
    assert streamed["input_tokens"] > 0 and streamed["output_tokens"] > 0

    assert rejected["status"] == 400
    assert rejected["attempts"] == []
    assert rejected["error_type"] == "bad_request"
    assert rejected["provider"] is None


def test_completed_line_for_upstream_error_names_error_type(
    fake: FakeProvider, spangate: Running
) -> None:
    """A relayed 500: the line has status 500 and the attempt's error_type."""
    fake.script(openai_error(500))
    with capture_logs() as captured:
        with pytest.raises(openai.InternalServerError):
            oai(spangate).chat.completions.create(model=GPT, messages=HELLO)
        settle(spangate)
    (line,) = completed_lines(captured)
    assert line["status"] == 500
    assert line["error_type"] in ERROR_500
    assert line["attempts"][0]["status"] == 500


def test_completed_line_lists_every_attempt_of_a_failover(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """A 500 then a success on the next target: one line, both attempts, the serving target."""
    targets = [{"provider": "openai", "model": GPT}, {"provider": "openai", "model": "gpt-4o"}]
    running = spangate_for(basic_config(fake, models={"duo": {"targets": targets}}))
    fake.script(openai_error(500))
    with capture_logs() as captured:
        oai(running).chat.completions.create(model="duo", messages=HELLO)
        settle(running)
    (line,) = completed_lines(captured)
    assert line["status"] == 200
    assert line["route"] == "duo"
    assert line["target"] == "openai/gpt-4o"
    first, second = line["attempts"]
    assert (first["n"], first["target"], first["status"]) == (1, "openai/gpt-4o-mini", 500)
    assert first["error_type"] in ERROR_500
    assert (second["n"], second["target"], second["status"]) == (2, "openai/gpt-4o", 200)
    assert "error_type" not in second


# --------------------------------------------------------------------------- content capture


def test_no_content_by_default(spangate: Running) -> None:
    """NO_CONTENT (default): no gen_ai.input/output messages, instructions or tool definitions."""
    oai(spangate).chat.completions.create(
        model=GPT,
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
        tools=[WEATHER_TOOL],
    )
    _, client = one_request(finished_spans(spangate))
    assert not set(CONTENT_KEYS) & set(attrs(client))
    assert spangate.logs.get_finished_logs() == ()


def test_span_only_captures_chat_content_in_parts_schema(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """SPAN_ONLY: JSON strings; system instructions apart; tools listed; tool call in output."""
    running = capture(fake, spangate_for, "SPAN_ONLY")
    resp = oai(running).chat.completions.create(
        model=GPT,
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
        tools=[WEATHER_TOOL],
    )
    call = resp.choices[0].message.tool_calls[0]  # type: ignore[index]
    _, client = one_request(finished_spans(running))
    assert json_attr(client, sc.GEN_AI_SYSTEM_INSTRUCTIONS) == [
        {"type": "text", "content": "Be brief."}
    ]
    assert json_attr(client, sc.GEN_AI_INPUT_MESSAGES) == [
        {"role": "user", "parts": [{"type": "text", "content": "hi there"}]}
    ]
    assert json_attr(client, sc.GEN_AI_TOOL_DEFINITIONS) == [WEATHER_TOOL]
    assert json_attr(client, sc.GEN_AI_OUTPUT_MESSAGES) == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": call.id,
                    "name": "get_weather",
                    "arguments": json.loads(call.function.arguments),  # type: ignore[union-attr]
                }
            ],
            "finish_reason": "tool_call",
        }
    ]
    assert running.logs.get_finished_logs() == ()
    assert sc.SPANGATE_CONTENT_TRUNCATED not in attrs(client)


def test_span_only_stream_output_is_assembled_from_chunks(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """SPAN_ONLY with a stream: the output message is the concatenation of the content deltas."""
    running = capture(fake, spangate_for, "span_only")
    chunks = list(oai(running).chat.completions.create(model=GPT, messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello from gpt-4o-mini")
    _, client = one_request(finished_spans(running))
    assert json_attr(client, sc.GEN_AI_OUTPUT_MESSAGES) == [
        {"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": "stop"}
    ]
    assert sc.GEN_AI_SYSTEM_INSTRUCTIONS not in attrs(client)
    assert sc.GEN_AI_TOOL_DEFINITIONS not in attrs(client)


def test_event_only_emits_details_event_and_no_span_content(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """EVENT_ONLY: a gen_ai.client.inference.operation.details log record, none on the span."""
    running = capture(fake, spangate_for, "EVENT_ONLY")
    oai(running).chat.completions.create(
        model=GPT, messages=[{"role": "system", "content": "Be brief."}, *HELLO]
    )
    _, client = one_request(finished_spans(running))
    assert not set(CONTENT_KEYS) & set(attrs(client))
    records = [r.log_record for r in running.logs.get_finished_logs()]
    (event,) = [r for r in records if r.event_name == sc.EVENT_INFERENCE_DETAILS]
    assert client.context is not None
    assert event.trace_id == client.context.trace_id
    assert event.span_id == client.context.span_id
    body: Any = event.body
    assert body[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert body[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert body[sc.GEN_AI_INPUT_MESSAGES] == [
        {"role": "user", "parts": [{"type": "text", "content": "hi there"}]}
    ]
    assert body[sc.GEN_AI_SYSTEM_INSTRUCTIONS] == [{"type": "text", "content": "Be brief."}]
    assert body[sc.GEN_AI_OUTPUT_MESSAGES][0]["role"] == "assistant"


def test_content_over_max_bytes_is_truncated_and_stays_valid_json(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """content_max_bytes: long strings are cut, the shape survives, truncated=true is set."""
    running = capture(fake, spangate_for, "SPAN_ONLY", content_max_bytes=256)
    long_text = "lorem ipsum dolor sit amet " * 100
    oai(running).chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": long_text}]
    )
    _, client = one_request(finished_spans(running))
    raw = attrs(client)[sc.GEN_AI_INPUT_MESSAGES]
    assert isinstance(raw, str)
    assert len(raw.encode()) <= 256
    (message,) = json.loads(raw)
    assert message["role"] == "user"
    (part,) = message["parts"]
    assert part["type"] == "text"
    assert long_text.startswith(part["content"][:32])
    assert len(part["content"]) < len(long_text)
    assert attrs(client)[sc.SPANGATE_CONTENT_TRUNCATED] is True


def test_secret_in_captured_content_is_redacted(fake: FakeProvider, spangate_for: Start) -> None:
    """A key-shaped string in a user message never reaches captured content (input or output)."""
    running = capture(fake, spangate_for, "SPAN_AND_EVENT")
    secret = "sk-abcdefghijklmnop1234"
    oai(running).chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": f"my key is {secret}"}]
    )
    _, client = one_request(finished_spans(running))
    inputs = json_attr(client, sc.GEN_AI_INPUT_MESSAGES)
    text = inputs[0]["parts"][0]["content"]
    assert secret not in text
    assert text.startswith("my key is ")
    assert secret not in client.to_json()
    events = [r.to_json() for r in running.logs.get_finished_logs()]
    assert events
    assert not [e for e in events if secret in e]


def test_span_only_anthropic_stream_captures_system_tools_and_assembled_tool_call(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """Anthropic stream with tools: system apart, tool definitions, text + tool_call assembled."""
    tool: Any = {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": WEATHER_TOOL["function"]["parameters"],
    }
    running = capture(fake, spangate_for, "SPAN_ONLY")
    with claude(running).messages.stream(
        model=CLAUDE, max_tokens=100, system="Be brief.", messages=HELLO, tools=[tool]
    ) as stream:
        final = stream.get_final_message()
    text_block, tool_block = final.content
    assert text_block.type == "text" and tool_block.type == "tool_use"
    _, client = one_request(finished_spans(running))
    assert json_attr(client, sc.GEN_AI_SYSTEM_INSTRUCTIONS) == [
        {"type": "text", "content": "Be brief."}
    ]
    assert json_attr(client, sc.GEN_AI_TOOL_DEFINITIONS) == [tool]
    assert json_attr(client, sc.GEN_AI_INPUT_MESSAGES) == [
        {"role": "user", "parts": [{"type": "text", "content": "hi there"}]}
    ]
    assert json_attr(client, sc.GEN_AI_OUTPUT_MESSAGES) == [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": text_block.text},
                {
                    "type": "tool_call",
                    "id": tool_block.id,
                    "name": "get_weather",
                    "arguments": tool_block.input,
                },
            ],
            "finish_reason": "tool_call",
        }
    ]
