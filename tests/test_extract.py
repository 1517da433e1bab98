"""GenAI facts extracted from raw OpenAI- and Anthropic-format bodies and streams.

Bodies and streams below are shaped as the real APIs send them. Streams go
through the real SSE decoder and are fed to observers one event at a time.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import msgspec
import pytest

from instrumentation import semconv as sc
from instrumentation.extract import EXTRACTORS, RequestFacts, ResponseFacts
from instrumentation.extract.base import GuardedObserver
from proxy.sse import SSEDecoder, SSEEvent, data_lines, named_lines


def enc(value: Any) -> bytes:
    return msgspec.json.encode(value)


def sse(*events: tuple[str | None, Any]) -> list[SSEEvent]:
    """Events as they come off the wire: `event:` line (when named) and one `data:` line."""
    wire = b""
    for name, data in events:
        payload = data if isinstance(data, str) else enc(data).decode()
        wire += (f"event: {name}\n" if name else "").encode() + f"data: {payload}\n\n".encode()
    return SSEDecoder().feed(wire)


def observe(api: str, events: list[SSEEvent], capture: bool) -> tuple[ResponseFacts, list[bool]]:
    observer = EXTRACTORS[api].stream(capture)
    flags = [observer.event(event) for event in events]
    return observer.finish(), flags


def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """One chat.completion.chunk of choice 0, as OpenAI streams it."""
    body: dict[str, Any] = {
        "id": "chatcmpl-AzR3x",
        "object": "chat.completion.chunk",
        "created": 1739000000,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
        "choices": [],
        "usage": None,
    }
    if delta is not None:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body["choices"] = [choice]
    body.update(extra)
    return body


USAGE_CHUNK = chunk(
    None,
    usage={
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
)


# --- OpenAI chat completions: request -------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 100,
                "max_completion_tokens": 256,
                "temperature": 0.2,
                "top_p": 0.9,
                "frequency_penalty": 0.5,
                "presence_penalty": -0.5,
                "seed": 42,
                "stop": "END",
                "n": 2,
                "stream": True,
                "stream_options": {"include_usage": True},
                "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
                "service_tier": "flex",
            },
            {
                sc.GEN_AI_REQUEST_MAX_TOKENS: 256,
                sc.GEN_AI_REQUEST_TEMPERATURE: 0.2,
                sc.GEN_AI_REQUEST_TOP_P: 0.9,
                sc.GEN_AI_REQUEST_FREQUENCY_PENALTY: 0.5,
                sc.GEN_AI_REQUEST_PRESENCE_PENALTY: -0.5,
                sc.GEN_AI_REQUEST_SEED: 42,
                sc.GEN_AI_REQUEST_STOP_SEQUENCES: ["END"],
                sc.GEN_AI_REQUEST_CHOICE_COUNT: 2,
                sc.GEN_AI_REQUEST_STREAM: True,
                sc.GEN_AI_OUTPUT_TYPE: "json",
                sc.OPENAI_REQUEST_SERVICE_TIER: "flex",
                sc.OPENAI_API_TYPE: "chat_completions",
            },
            id="every-parameter-max_completion_tokens-wins",
        ),
        pytest.param(
            {
                "model": "gpt-4o",
                "messages": [],
                "max_tokens": 64,
                "n": 1,
                "stream": False,
                "stop": ["\n", "###"],
                "service_tier": "auto",
                "response_format": {"type": "json_object"},
            },
            {
                sc.GEN_AI_REQUEST_MAX_TOKENS: 64,
                sc.GEN_AI_REQUEST_STOP_SEQUENCES: ["\n", "###"],
                sc.GEN_AI_OUTPUT_TYPE: "json",
                sc.OPENAI_API_TYPE: "chat_completions",
            },
            id="defaults-n1-nonstream-auto-tier-are-omitted",
        ),
        pytest.param(
            {"model": "gpt-4o-audio-preview", "messages": [], "modalities": ["text", "audio"]},
            {sc.GEN_AI_OUTPUT_TYPE: "speech", sc.OPENAI_API_TYPE: "chat_completions"},
            id="audio-modality-is-speech",
        ),
        pytest.param(
            {"model": "x", "temperature": "hot", "max_tokens": 5, "stop": [1, 2]},
            {sc.GEN_AI_REQUEST_MAX_TOKENS: 5, sc.OPENAI_API_TYPE: "chat_completions"},
            id="wrongly-typed-fields-are-dropped-the-rest-kept",
        ),
    ],
)
def test_chat_request_attributes(body: dict[str, Any], expected: dict[str, Any]) -> None:
    """Sampling parameters map to gen_ai.request.*; absent or default values are not emitted."""
    facts = EXTRACTORS["chat_completions"].request(enc(body), capture=False)
    assert facts.attributes == expected
    assert facts.input_messages is None
    assert sc.GEN_AI_REQUEST_MODEL not in facts.attributes


CHAT_REQUEST = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-abc"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ],
}


def test_chat_request_capture_maps_messages_to_parts() -> None:
    """System/developer messages become system instructions; the rest become parts messages."""
    facts = EXTRACTORS["chat_completions"].request(enc(CHAT_REQUEST), capture=True)
    assert facts.system_instructions == [
        {"type": "text", "content": "You are terse."},
        {"type": "text", "content": "Use metric units."},
    ]
    assert facts.input_messages == [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "Weather in Paris?"},
                {"type": "uri", "modality": "image", "uri": "https://x.test/a.png"},
                {
                    "type": "blob",
                    "modality": "image",
                    "mime_type": "image/jpeg",
                    "content": "/9j/4AAQ",
                },
                {"type": "blob", "modality": "audio", "mime_type": "audio/wav", "content": "UklGR"},
                {"type": "file", "modality": "document", "file_id": "file-abc"},
            ],
        },
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call_1",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "call_1", "response": "18C, sunny"}],
        },
    ]
    assert facts.tool_definitions == CHAT_REQUEST["tools"]


def test_chat_request_without_capture_has_no_content() -> None:
    """Content is decoded only when capture is on."""
    facts = EXTRACTORS["chat_completions"].request(enc(CHAT_REQUEST), capture=False)
    assert (facts.input_messages, facts.system_instructions, facts.tool_definitions) == (
        None,
        None,
        None,
    )


# --- OpenAI chat completions: response ------------------------------------

CHAT_RESPONSE = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": "It is sunny.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        },
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 12,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}


def test_chat_response_facts() -> None:
    """Id, model, raw finish reasons per choice, usage with cache and reasoning, openai extras."""
    facts = EXTRACTORS["chat_completions"].response(enc(CHAT_RESPONSE), capture=False)
    assert facts.response_id == "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert facts.response_model == "gpt-4o-2024-08-06"
    assert facts.finish_reasons == ["tool_calls", "stop"]
    assert (facts.input_tokens, facts.output_tokens) == (1117, 46)
    assert facts.cache_read_input_tokens == 1024
    assert facts.reasoning_output_tokens == 12
    assert facts.attributes == {
        sc.OPENAI_RESPONSE_SERVICE_TIER: "default",
        sc.OPENAI_RESPONSE_SYSTEM_FINGERPRINT: "fp_fc9f1d7035",
    }
    assert facts.output_messages is None
    assert facts.error_type is None


def test_chat_response_capture_gives_one_output_message_per_choice() -> None:
    """Output messages carry parts and the normalized finish reason (tool_calls -> tool_call)."""
    facts = EXTRACTORS["chat_completions"].response(enc(CHAT_RESPONSE), capture=True)
    assert facts.output_messages == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call_abc",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                }
            ],
            "finish_reason": "tool_call",
        },
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "It is sunny."}],
            "finish_reason": "stop",
        },
    ]


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "tool_call"),
        ("function_call", "tool_call"),
    ],
)
def test_openai_finish_reason_normalization(raw: str, normalized: str) -> None:
    """The span keeps the raw value; the output message gets the normalized one."""
    body = {
        "id": "chatcmpl-1",
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": raw}
        ],
    }
    facts = EXTRACTORS["chat_completions"].response(enc(body), capture=True)
    assert facts.finish_reasons == [raw]
    assert facts.output_messages is not None
    assert facts.output_messages[0]["finish_reason"] == normalized


# --- OpenAI chat completions: stream --------------------------------------

TEXT_STREAM = sse(
    (None, chunk({"role": "assistant", "content": "", "refusal": None})),
    (None, chunk({"content": "Hello"})),
    (None, chunk({"content": " there"})),
    (None, chunk({}, finish="stop")),
    (None, USAGE_CHUNK),
    (None, "[DONE]"),
)


def test_chat_stream_text_and_include_usage_chunk() -> None:
    """Only deltas with text count as output; usage comes from the final `choices: []` chunk."""
    facts, flags = observe("chat_completions", TEXT_STREAM, capture=True)
    assert flags == [False, True, True, False, False, False]
    assert facts.output_chunks == 2
    assert facts.response_id == "chatcmpl-AzR3x"
    assert facts.response_model == "gpt-4o-mini-2024-07-18"
    assert facts.finish_reasons == ["stop"]
    assert (facts.input_tokens, facts.output_tokens, facts.cache_read_input_tokens) == (19, 10, 0)
    assert facts.attributes[sc.OPENAI_RESPONSE_SYSTEM_FINGERPRINT] == "fp_06737a9306"
    assert facts.output_messages == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Hello there"}],
            "finish_reason": "stop",
        }
    ]


def test_chat_stream_without_capture_has_no_output_messages() -> None:
    """Without capture the stream still yields usage and finish reasons, but no content."""
    facts, _ = observe("chat_completions", TEXT_STREAM, capture=False)
    assert facts.output_messages is None
    assert facts.finish_reasons == ["stop"]


def _tool_delta(index: int, call_id: str | None, name: str | None, args: str) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if call_id is not None:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


def test_chat_stream_assembles_parallel_tool_calls_by_index() -> None:
    """Tool-call deltas are joined per index; arguments are parsed once complete."""
    events = sse(
        (None, chunk({"role": "assistant", "content": None})),
        (None, chunk(_tool_delta(0, "call_a", "get_weather", ""))),
        (None, chunk(_tool_delta(0, None, None, '{"city":'))),
        (None, chunk(_tool_delta(1, "call_b", "get_time", ""))),
        (None, chunk(_tool_delta(0, None, None, '"Paris"}'))),
        (None, chunk(_tool_delta(1, None, None, '{"tz":"CET"}'))),
        (None, chunk({}, finish="tool_calls")),
        (None, "[DONE]"),
    )
    facts, flags = observe("chat_completions", events, capture=True)
    assert flags == [False, True, True, True, True, True, False, False]
    assert facts.finish_reasons == ["tool_calls"]
    assert facts.output_messages == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call_a",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                },
                {
                    "type": "tool_call",
                    "id": "call_b",
                    "name": "get_time",
                    "arguments": {"tz": "CET"},
                },
            ],
            "finish_reason": "tool_call",
        }
    ]


def test_chat_stream_choice_that_never_finished_is_error() -> None:
    """With n=2, a choice without finish_reason when the stream ends reports "error"."""
    second = chunk({"content": "B"})
    second["choices"][0]["index"] = 1
    events = sse(
        (None, chunk({"content": "A"})),
        (None, second),
        (None, chunk({}, finish="length")),
    )
    facts, _ = observe("chat_completions", events, capture=True)
    assert facts.finish_reasons == ["length", "error"]
    assert facts.output_messages is not None
    assert [m["finish_reason"] for m in facts.output_messages] == ["length", "error"]


def test_chat_stream_in_band_error_sets_error_type() -> None:
    """`data: {"error": {...}}` mid-stream yields the error's type."""
    events = sse(
        (None, chunk({"content": "Hel"})),
        (
            None,
            {"error": {"message": "The server had an error", "type": "server_error", "code": None}},
        ),
    )
    facts, flags = observe("chat_completions", events, capture=False)
    assert flags == [True, False]
    assert facts.error_type == "server_error"
    assert facts.finish_reasons == ["error"]


def test_chat_stream_azure_filter_chunk_does_not_blank_the_model() -> None:
    """Azure's first chunk has `model: ""` and no choices; the real model comes later."""
    azure_first = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
    events = sse((None, azure_first), (None, chunk({"content": "x"}, finish="stop")))
    facts, _ = observe("chat_completions", events, capture=False)
    assert facts.response_model == "gpt-4o-mini-2024-07-18"
    assert facts.response_id == "chatcmpl-AzR3x"


# --- OpenAI text completions ----------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Say this is a test", [{"type": "text", "content": "Say this is a test"}]),
        (["one", "two"], [{"type": "text", "content": "one"}, {"type": "text", "content": "two"}]),
        ([1212, 318], None),
    ],
    ids=["string", "batch", "token-ids-are-not-captured"],
)
def test_completions_request_prompt_is_input(
    prompt: Any, expected: list[dict[str, Any]] | None
) -> None:
    """The prompt becomes one user message; text completions carry no openai.api.type."""
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": prompt, "max_tokens": 7, "temperature": 0}
    facts = EXTRACTORS["completions"].request(enc(body), capture=True)
    assert facts.attributes == {sc.GEN_AI_REQUEST_MAX_TOKENS: 7, sc.GEN_AI_REQUEST_TEMPERATURE: 0}
    expected_messages = [{"role": "user", "parts": expected}] if expected else None
    assert facts.input_messages == expected_messages
    assert EXTRACTORS["completions"].operation == "text_completion"


def test_completions_response_and_stream() -> None:
    """choices[].text is the output, whole or streamed, with usage from the usage chunk."""
    body = {
        "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
        "object": "text_completion",
        "created": 1589478378,
        "model": "gpt-3.5-turbo-instruct",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [
            {
                "text": "\n\nThis is indeed a test",
                "index": 0,
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
    facts = EXTRACTORS["completions"].response(enc(body), capture=True)
    assert facts.finish_reasons == ["length"]
    assert (facts.input_tokens, facts.output_tokens) == (5, 7)
    assert facts.output_messages == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "\n\nThis is indeed a test"}],
            "finish_reason": "length",
        }
    ]

    def text_chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return {**body, "choices": [choice], "usage": None}

    usage = {**body, "choices": [], "usage": body["usage"]}
    events = sse(
        (None, text_chunk("\n\nThis")),
        (None, text_chunk(" is")),
        (None, text_chunk("", "stop")),
        (None, usage),
        (None, "[DONE]"),
    )
    facts, flags = observe("completions", events, capture=True)
    assert flags == [True, True, False, False, False]
    assert facts.finish_reasons == ["stop"]
    assert facts.input_tokens == 5
    assert facts.output_messages is not None
    assert facts.output_messages[0]["parts"] == [{"type": "text", "content": "\n\nThis is"}]


# --- OpenAI embeddings ----------------------------------------------------


def _vector_b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


@pytest.mark.parametrize(
    ("embedding", "dimension"),
    [
        ([0.0023064255, -0.009327292, 0.0028842222, -0.0076543], 4),
        (_vector_b64([0.5, -0.25, 0.125]), 3),
        ("not*base64!", None),
        ([], None),
    ],
    ids=["float", "base64-float32", "invalid-base64", "empty"],
)
def test_embeddings_dimension_from_first_vector(embedding: Any, dimension: int | None) -> None:
    """Dimension is the first vector's length (base64: decoded bytes / 4); usage is input only."""
    body = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": embedding},
            {"object": "embedding", "index": 1, "embedding": "ignored"},
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    facts = EXTRACTORS["embeddings"].response(enc(body), capture=True)
    assert facts.response_model == "text-embedding-3-small"
    assert facts.input_tokens == 8
    assert facts.output_tokens is None
    assert facts.attributes.get(sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT) == dimension


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"model": "m", "input": "hi", "encoding_format": "base64"},
            {sc.GEN_AI_REQUEST_ENCODING_FORMATS: ["base64"]},
        ),
        ({"model": "m", "input": ["a", "b"]}, {}),
    ],
    ids=["given", "absent"],
)
def test_embeddings_request_encoding_formats(
    body: dict[str, Any], expected: dict[str, Any]
) -> None:
    """encoding_formats is emitted only when the request names one."""
    facts = EXTRACTORS["embeddings"].request(enc(body), capture=True)
    assert facts.attributes == expected
    assert facts.input_messages is None


def test_embeddings_stream_observer_learns_nothing() -> None:
    """The embeddings API does not stream; its observer never reports content."""
    facts, flags = observe("embeddings", sse((None, {"data": []})), capture=True)
    assert flags == [False]
    assert facts == ResponseFacts()


# --- OpenAI Responses API -------------------------------------------------


def test_responses_request_attributes_and_capture() -> None:
    """max_output_tokens, text.format, conversation and instructions map onto GenAI names."""
    body = {
        "model": "gpt-4.1",
        "instructions": "Talk like a pirate.",
        "input": [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this image?"},
                    {
                        "type": "input_image",
                        "image_url": "https://x.test/cat.png",
                        "detail": "auto",
                    },
                ],
            },
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "Look."}],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "lookup",
                "arguments": '{"q":"cat"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
            {"type": "item_reference", "id": "msg_0"},
        ],
        "max_output_tokens": 500,
        "temperature": 0.7,
        "top_p": 1.0,
        "stream": True,
        "service_tier": "priority",
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {}}},
        "conversation": {"id": "conv_689667905b048191b4740501625afd940c7533ace33a2dab"},
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
    }
    facts = EXTRACTORS["responses"].request(enc(body), capture=True)
    assert facts.attributes == {
        sc.OPENAI_API_TYPE: "responses",
        sc.GEN_AI_REQUEST_MAX_TOKENS: 500,
        sc.GEN_AI_REQUEST_TEMPERATURE: 0.7,
        sc.GEN_AI_REQUEST_TOP_P: 1.0,
        sc.GEN_AI_REQUEST_STREAM: True,
        sc.OPENAI_REQUEST_SERVICE_TIER: "priority",
        sc.GEN_AI_OUTPUT_TYPE: "json",
        sc.GEN_AI_CONVERSATION_ID: "conv_689667905b048191b4740501625afd940c7533ace33a2dab",
    }
    assert facts.system_instructions == [
        {"type": "text", "content": "Talk like a pirate."},
        {"type": "text", "content": "Be brief."},
    ]
    assert facts.input_messages == [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "What is in this image?"},
                {"type": "uri", "modality": "image", "uri": "https://x.test/cat.png"},
            ],
        },
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "Look."},
                {"type": "tool_call", "id": "call_1", "name": "lookup", "arguments": {"q": "cat"}},
            ],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "call_1", "response": "a cat"}],
        },
    ]
    assert facts.tool_definitions == body["tools"]


def test_responses_request_string_input_and_string_conversation() -> None:
    """A plain string input is one user message; `conversation` may be a bare id."""
    body = {"model": "gpt-4.1", "input": "Tell me a joke", "conversation": "conv_1"}
    facts = EXTRACTORS["responses"].request(enc(body), capture=True)
    assert facts.attributes[sc.GEN_AI_CONVERSATION_ID] == "conv_1"
    assert facts.input_messages == [
        {"role": "user", "parts": [{"type": "text", "content": "Tell me a joke"}]}
    ]
    assert facts.system_instructions is None


def _response(status: str, output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": "gpt-4.1-2025-04-14",
        "output": output,
        "service_tier": "default",
        "usage": {
            "input_tokens": 36,
            "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 87,
            "output_tokens_details": {"reasoning_tokens": 64},
            "total_tokens": 123,
        },
    }
    body.update(extra)
    return body


MESSAGE_ITEM = {
    "type": "message",
    "id": "msg_1",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "In a peaceful grove...", "annotations": []}],
}
REASONING_ITEM = {
    "type": "reasoning",
    "id": "rs_1",
    "summary": [{"type": "summary_text", "text": "Thinking about groves."}],
}
CALL_ITEM = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_9",
    "name": "get_weather",
    "arguments": '{"location":"Paris"}',
    "status": "completed",
}


@pytest.mark.parametrize(
    ("body", "finish", "error_type"),
    [
        (_response("completed", [REASONING_ITEM, MESSAGE_ITEM]), "stop", None),
        (_response("completed", [CALL_ITEM]), "tool_call", None),
        (
            _response(
                "incomplete", [MESSAGE_ITEM], incomplete_details={"reason": "max_output_tokens"}
            ),
            "length",
            None,
        ),
        (
            _response("incomplete", [], incomplete_details={"reason": "content_filter"}),
            "content_filter",
            None,
        ),
        (
            _response("failed", [], error={"code": "server_error", "message": "boom"}),
            "error",
            "server_error",
        ),
    ],
    ids=["completed", "function-call", "max-output-tokens", "content-filter", "failed"],
)
def test_responses_status_becomes_finish_reason(
    body: dict[str, Any], finish: str, error_type: str | None
) -> None:
    """The response status (and incomplete reason) stands in for a finish reason."""
    facts = EXTRACTORS["responses"].response(enc(body), capture=True)
    assert facts.finish_reasons == [finish]
    assert facts.error_type == error_type
    assert facts.output_messages is not None
    assert facts.output_messages[0]["finish_reason"] == finish


def test_responses_response_usage_and_output_parts() -> None:
    """Usage details map to cache_read and reasoning; output items become one message's parts."""
    body = _response("completed", [REASONING_ITEM, MESSAGE_ITEM, CALL_ITEM])
    facts = EXTRACTORS["responses"].response(enc(body), capture=True)
    assert facts.response_id == body["id"]
    assert facts.response_model == "gpt-4.1-2025-04-14"
    assert (facts.input_tokens, facts.output_tokens) == (36, 87)
    assert (facts.cache_read_input_tokens, facts.reasoning_output_tokens) == (4, 64)
    assert facts.attributes == {sc.OPENAI_RESPONSE_SERVICE_TIER: "default"}
    assert facts.output_messages == [
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "Thinking about groves."},
                {"type": "text", "content": "In a peaceful grove..."},
                {
                    "type": "tool_call",
                    "id": "call_9",
                    "name": "get_weather",
                    "arguments": {"location": "Paris"},
                },
            ],
            "finish_reason": "tool_call",
        }
    ]


def _rs(kind: str, seq: int, **fields: Any) -> tuple[str, dict[str, Any]]:
    return kind, {"type": kind, "sequence_number": seq, **fields}


def _responses_text_stream() -> list[SSEEvent]:
    created = _response("in_progress", [], usage=None)
    return sse(
        _rs("response.created", 0, response=created),
        _rs("response.in_progress", 1, response=created),
        _rs("response.output_item.added", 2, output_index=0, item={**MESSAGE_ITEM, "content": []}),
        _rs("response.content_part.added", 3, item_id="msg_1", output_index=0, content_index=0),
        _rs(
            "response.output_text.delta",
            4,
            item_id="msg_1",
            output_index=0,
            content_index=0,
            delta="In a",
        ),
        _rs(
            "response.output_text.delta",
            5,
            item_id="msg_1",
            output_index=0,
            content_index=0,
            delta=" grove",
        ),
        _rs(
            "response.output_text.done",
            6,
            item_id="msg_1",
            output_index=0,
            content_index=0,
            text="In a grove",
        ),
        _rs("response.output_item.done", 7, output_index=0, item=MESSAGE_ITEM),
        _rs("response.completed", 8, response=_response("completed", [MESSAGE_ITEM])),
    )


RESPONSES_TEXT_STREAM = _responses_text_stream()


def test_responses_stream_text_completed() -> None:
    """Text deltas are output chunks; the terminal response gives usage and the output."""
    events = RESPONSES_TEXT_STREAM
    facts, flags = observe("responses", events, capture=True)
    assert flags == [False, False, False, False, True, True, False, False, False]
    assert facts.output_chunks == 2
    assert facts.finish_reasons == ["stop"]
    assert (facts.input_tokens, facts.output_tokens, facts.cache_read_input_tokens) == (36, 87, 4)
    assert facts.output_messages == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "In a peaceful grove..."}],
            "finish_reason": "stop",
        }
    ]


def test_responses_stream_cut_short_assembles_deltas_and_reports_error() -> None:
    """Without a terminal event the assembled deltas are the output and the finish is "error"."""
    added = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_9",
        "name": "get_weather",
        "arguments": "",
    }
    events = sse(
        _rs("response.created", 0, response=_response("in_progress", [], usage=None)),
        _rs(
            "response.reasoning_summary_text.delta", 1, item_id="rs_1", output_index=0, delta="Hmm."
        ),
        _rs("response.output_item.added", 2, output_index=1, item=added),
        _rs(
            "response.function_call_arguments.delta",
            3,
            item_id="fc_1",
            output_index=1,
            delta='{"location":',
        ),
        _rs(
            "response.function_call_arguments.delta",
            4,
            item_id="fc_1",
            output_index=1,
            delta='"Paris"}',
        ),
    )
    facts, flags = observe("responses", events, capture=True)
    assert flags == [False, True, False, True, True]
    assert facts.response_id == "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
    assert facts.finish_reasons == ["error"]
    assert facts.input_tokens is None
    assert facts.output_messages == [
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "Hmm."},
                {
                    "type": "tool_call",
                    "id": "call_9",
                    "name": "get_weather",
                    "arguments": {"location": "Paris"},
                },
            ],
            "finish_reason": "error",
        }
    ]


@pytest.mark.parametrize(
    ("terminal", "error_type", "finish"),
    [
        (
            _rs("error", 3, code="ERR_SOMETHING", message="Something went wrong", param=None),
            "ERR_SOMETHING",
            "error",
        ),
        (
            _rs(
                "response.failed",
                3,
                response=_response("failed", [], error={"code": "server_error", "message": "x"}),
            ),
            "server_error",
            "error",
        ),
        (
            _rs(
                "response.incomplete",
                3,
                response=_response(
                    "incomplete", [], incomplete_details={"reason": "max_output_tokens"}
                ),
            ),
            None,
            "length",
        ),
    ],
    ids=["error-event", "response-failed", "response-incomplete"],
)
def test_responses_stream_terminal_failures(
    terminal: tuple[str, dict[str, Any]], error_type: str | None, finish: str
) -> None:
    """An `error` event or `response.failed` is an in-band error; incomplete is a length finish."""
    events = sse(
        _rs("response.created", 0, response=_response("in_progress", [], usage=None)),
        _rs(
            "response.output_text.delta",
            1,
            item_id="m",
            output_index=0,
            content_index=0,
            delta="Hi",
        ),
        terminal,
    )
    facts, _ = observe("responses", events, capture=True)
    assert facts.error_type == error_type
    assert facts.finish_reasons == [finish]
    assert facts.output_messages is not None
    assert facts.output_messages[0]["parts"] == [{"type": "text", "content": "Hi"}]


# --- Anthropic Messages ---------------------------------------------------

ANTHROPIC_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 40,
    "stop_sequences": ["\n\nHuman:"],
    "stream": True,
    "metadata": {"user_id": "user-1234"},
    "system": [
        {"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}}
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Get the weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0"},
                },
                {"type": "text", "text": "Weather where this photo was taken?"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "It looks like Paris.", "signature": "EqQB"},
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C"}],
        },
    ],
}


def test_anthropic_request_attributes() -> None:
    """Sampling fields and stream map to gen_ai.request.*; metadata maps to nothing."""
    facts = EXTRACTORS["messages"].request(enc(ANTHROPIC_REQUEST), capture=False)
    assert facts.attributes == {
        sc.GEN_AI_REQUEST_MAX_TOKENS: 1024,
        sc.GEN_AI_REQUEST_TEMPERATURE: 0.5,
        sc.GEN_AI_REQUEST_TOP_P: 0.9,
        sc.GEN_AI_REQUEST_TOP_K: 40,
        sc.GEN_AI_REQUEST_STOP_SEQUENCES: ["\n\nHuman:"],
        sc.GEN_AI_REQUEST_STREAM: True,
    }
    assert facts.input_messages is None


def test_anthropic_request_capture_maps_blocks_to_parts() -> None:
    """Blocks become parts; `system` (blocks or string) becomes system instructions."""
    facts = EXTRACTORS["messages"].request(enc(ANTHROPIC_REQUEST), capture=True)
    assert facts.system_instructions == [{"type": "text", "content": "You are a weather bot."}]
    assert facts.input_messages == [
        {
            "role": "user",
            "parts": [
                {
                    "type": "blob",
                    "modality": "image",
                    "mime_type": "image/png",
                    "content": "iVBORw0",
                },
                {"type": "text", "content": "Weather where this photo was taken?"},
            ],
        },
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "It looks like Paris."},
                {
                    "type": "tool_call",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "parts": [{"type": "tool_call_response", "id": "toolu_01A", "response": "18C"}],
        },
    ]
    assert facts.tool_definitions == ANTHROPIC_REQUEST["tools"]
    string_system = {**ANTHROPIC_REQUEST, "system": "Be nice."}
    facts = EXTRACTORS["messages"].request(enc(string_system), capture=True)
    assert facts.system_instructions == [{"type": "text", "content": "Be nice."}]


ANTHROPIC_RESPONSE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "text", "text": "Let me check."},
        {
            "type": "tool_use",
            "id": "toolu_01T1x",
            "name": "get_weather",
            "input": {"city": "Paris"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 2000,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 57,
        "service_tier": "standard",
    },
}


def test_anthropic_response_facts_include_cache_in_input() -> None:
    """Input tokens = input + cache_read + cache_creation; stop_reason is the raw finish reason."""
    facts = EXTRACTORS["messages"].response(enc(ANTHROPIC_RESPONSE), capture=True)
    assert facts.response_id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert facts.response_model == "claude-sonnet-4-5-20250929"
    assert facts.finish_reasons == ["tool_use"]
    assert (facts.input_tokens, facts.output_tokens) == (2112, 57)
    assert (facts.cache_read_input_tokens, facts.cache_creation_input_tokens) == (2000, 100)
    assert facts.output_messages == [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "Let me check."},
                {
                    "type": "tool_call",
                    "id": "toolu_01T1x",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                },
            ],
            "finish_reason": "tool_call",
        }
    ]


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_call"),
        ("refusal", "content_filter"),
    ],
)
def test_anthropic_finish_reason_normalization(raw: str, normalized: str) -> None:
    """Anthropic stop reasons normalize onto the output-message enum."""
    body = {**ANTHROPIC_RESPONSE, "stop_reason": raw}
    facts = EXTRACTORS["messages"].response(enc(body), capture=True)
    assert facts.finish_reasons == [raw]
    assert facts.output_messages is not None
    assert facts.output_messages[0]["finish_reason"] == normalized


def test_anthropic_200_error_body_sets_error_type() -> None:
    """An error object in a successful body is an in-band error, not a response."""
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    facts = EXTRACTORS["messages"].response(enc(body), capture=True)
    assert facts.error_type == "overloaded_error"
    assert facts.finish_reasons == []


def _message_start(**usage: int) -> tuple[str, dict[str, Any]]:
    message: dict[str, Any] = {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return "message_start", {"type": "message_start", "message": message}


def _ev(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return kind, {"type": kind, **fields}


def _delta(index: int, kind: str, **fields: str) -> tuple[str, dict[str, Any]]:
    return _ev("content_block_delta", index=index, delta={"type": kind, **fields})


ANTHROPIC_STREAM = sse(
    _message_start(
        input_tokens=472,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=1024,
        output_tokens=2,
    ),
    _ev(
        "content_block_start",
        index=0,
        content_block={"type": "thinking", "thinking": "", "signature": ""},
    ),
    _ev("ping"),
    _delta(0, "thinking_delta", thinking="User wants"),
    _delta(0, "thinking_delta", thinking=" weather."),
    _delta(0, "signature_delta", signature="EqQBCgIYAhIM"),
    _ev("content_block_stop", index=0),
    _ev("content_block_start", index=1, content_block={"type": "text", "text": ""}),
    _delta(1, "text_delta", text="Checking"),
    _ev("content_block_stop", index=1),
    _ev(
        "content_block_start",
        index=2,
        content_block={"type": "tool_use", "id": "toolu_01T1x", "name": "get_weather", "input": {}},
    ),
    _delta(2, "input_json_delta", partial_json=""),
    _delta(2, "input_json_delta", partial_json='{"city": "Pa'),
    _delta(2, "input_json_delta", partial_json='ris"}'),
    _ev("content_block_stop", index=2),
    _ev(
        "message_delta",
        delta={"stop_reason": "tool_use", "stop_sequence": None},
        usage={"output_tokens": 40},
    ),
    _ev(
        "message_delta",
        delta={"stop_reason": None, "stop_sequence": None},
        usage={"output_tokens": 89},
    ),
    _ev("message_stop"),
)


def test_anthropic_stream_assembles_blocks_and_cumulative_usage() -> None:
    """Deltas join per block index; the last cumulative output_tokens wins; input includes cache."""
    facts, flags = observe("messages", ANTHROPIC_STREAM, capture=True)
    content = [i for i, flag in enumerate(flags) if flag]
    assert content == [3, 4, 8, 12, 13]
    assert facts.output_chunks == 5
    assert facts.response_id == "msg_014p7gG3wDgGV9EUtLvnow3U"
    assert facts.response_model == "claude-sonnet-4-5-20250929"
    assert facts.finish_reasons == ["tool_use"]
    assert (facts.input_tokens, facts.output_tokens) == (1496, 89)
    assert (facts.cache_read_input_tokens, facts.cache_creation_input_tokens) == (1024, 0)
    assert facts.error_type is None
    assert facts.output_messages == [
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "User wants weather."},
                {"type": "text", "content": "Checking"},
                {
                    "type": "tool_call",
                    "id": "toolu_01T1x",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                },
            ],
            "finish_reason": "tool_call",
        }
    ]


def test_anthropic_stream_without_capture_has_no_output_messages() -> None:
    """Without capture: usage and finish reasons only."""
    facts, _ = observe("messages", ANTHROPIC_STREAM, capture=False)
    assert facts.output_messages is None
    assert facts.output_tokens == 89


def test_anthropic_stream_error_event_sets_error_type() -> None:
    """`event: error` (overloaded_error) mid-stream: error type set, the message never finished."""
    events = sse(
        _message_start(input_tokens=10, output_tokens=1),
        _ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        _delta(0, "text_delta", text="Hel"),
        _ev("error", error={"type": "overloaded_error", "message": "Overloaded"}),
    )
    facts, flags = observe("messages", events, capture=True)
    assert flags == [False, False, True, False]
    assert facts.error_type == "overloaded_error"
    assert facts.finish_reasons == ["error"]
    assert facts.input_tokens == 10
    assert facts.output_messages == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Hel"}],
            "finish_reason": "error",
        }
    ]


# --- Garbage never raises -------------------------------------------------

GARBAGE_BODIES = [
    b"",
    b"not json at all",
    b"\xff\xfe\x00binary",
    b"null",
    b"[1, 2, 3]",
    b'"a string"',
    b'{"choices": "nope", "usage": [1], "data": {}, "output": 5, "content": 7, "messages": "x"}',
    b'{"id": 5, "model": ["m"], "stop_reason": {}, "usage": {"input_tokens": "many"}}',
    b'{"input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}], "tools": "x"}',
    b'{"messages": [{"role": "user", "content": [{"type": "text", "text": null}, 5]}]}',
    b'{"messages": [{"role": 5}], "system": 3, "instructions": [], "prompt": [[1, 2]]}',
    b"[" * 50_000,
    enc(CHAT_RESPONSE)[:-40],
    enc(ANTHROPIC_RESPONSE)[:57],
]


@pytest.mark.parametrize("api", sorted(EXTRACTORS))
@pytest.mark.parametrize("body", GARBAGE_BODIES)
@pytest.mark.parametrize("capture", [True, False])
def test_garbage_bodies_never_raise(api: str, body: bytes, capture: bool) -> None:
    """Malformed or unexpected bodies yield (possibly empty) facts, never an exception."""
    extractor = EXTRACTORS[api]
    assert isinstance(extractor.request(body, capture), RequestFacts)
    assert isinstance(extractor.response(body, capture), ResponseFacts)


GARBAGE_EVENTS = [
    SSEEvent("message", "[DONE]"),
    SSEEvent("message", "{"),
    SSEEvent("message", ""),
    SSEEvent("message", "null"),
    SSEEvent("message", '{"choices": [{"index": "zero", "delta": 5}]}'),
    SSEEvent("message", '{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}}]}'),
    SSEEvent("message", '{"choices": [{"delta": {"tool_calls": [{"id": "c", "function": 3}]}}]}'),
    SSEEvent("message", '{"error": "just a string"}'),
    SSEEvent("content_block_delta", '{"type": "content_block_delta", "delta": "x"}'),
    SSEEvent(
        "content_block_delta",
        '{"type": "content_block_delta", "index": 9, "delta": {"type": "text_delta"}}',
    ),
    SSEEvent(
        "message_start", '{"type": "message_start", "message": {"usage": {"input_tokens": "x"}}}'
    ),
    SSEEvent("message_delta", '{"type": "message_delta", "delta": null, "usage": 4}'),
    SSEEvent("error", '{"type": "error"}'),
    SSEEvent(
        "response.completed", '{"type": "response.completed", "response": {"output": [1, {}]}}'
    ),
    SSEEvent(
        "response.output_text.delta", '{"type": "response.output_text.delta", "delta": {"x": 1}}'
    ),
    SSEEvent("response.output_item.added", '{"type": "response.output_item.added", "item": 3}'),
    SSEEvent("x", '{"type": 5}'),
]


@pytest.mark.parametrize("api", sorted(EXTRACTORS))
@pytest.mark.parametrize("capture", [True, False])
def test_garbage_stream_events_never_raise(api: str, capture: bool) -> None:
    """Every observer takes every odd event without raising and still finishes."""
    facts, flags = observe(api, GARBAGE_EVENTS, capture)
    assert all(isinstance(flag, bool) for flag in flags)
    assert isinstance(facts, ResponseFacts)
    assert facts.output_chunks == sum(flags)


def test_empty_stream_yields_empty_facts() -> None:
    """A stream that ended before any event says nothing: no finish reasons, no messages."""
    for api in EXTRACTORS:
        facts, _ = observe(api, [], capture=True)
        assert facts.finish_reasons == []
        assert facts.output_messages is None


def test_wrongly_typed_nested_field_keeps_sibling_facts() -> None:
    """A bad usage sub-field costs only that field: id, model and other counts survive."""
    body = {**CHAT_RESPONSE, "usage": {"prompt_tokens": 10, "completion_tokens": "many"}}
    facts = EXTRACTORS["chat_completions"].response(enc(body), capture=False)
    assert facts.response_id == CHAT_RESPONSE["id"]
    assert facts.input_tokens == 10
    assert facts.output_tokens is None
    assert facts.finish_reasons == ["tool_calls", "stop"]


def test_invalid_tool_arguments_are_kept_as_the_raw_string() -> None:
    """A model's malformed JSON arguments are captured as sent rather than lost."""
    body = {
        "id": "chatcmpl-1",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{bad"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    facts = EXTRACTORS["chat_completions"].response(enc(body), capture=True)
    assert facts.output_messages is not None
    assert facts.output_messages[0]["parts"][0]["arguments"] == "{bad"


class _BreaksOnThird:
    """A dialect observer with a bug: raises on its third event."""

    def __init__(self) -> None:
        self.seen = 0

    def event(self, event: SSEEvent) -> bool:
        self.seen += 1
        if self.seen == 3:
            raise RuntimeError("a bug on an odd shape")
        return True

    def finish(self) -> ResponseFacts:
        return ResponseFacts()


def test_a_read_of_events_counts_what_carried_content_until_the_observer_breaks() -> None:
    """GuardedObserver.carried feeds a whole read's events under one guard: the events
    before a failing one count, the observer is then left alone, and facts still come."""
    inner = _BreaksOnThird()
    observer = GuardedObserver(inner)
    events = [SSEEvent("message", "{}")] * 5
    assert observer.carried(events) == 2
    assert observer.carried(events) == 0
    assert inner.seen == 3
    assert observer.finish().output_chunks == 2


# --- a stream folded in one batch (GuardedObserver.stamps) -----------------


def _reads(*bodies: Any, per_read: int = 1) -> list[bytes]:
    """Wire `data:` events, `per_read` of them per read (as the relay passes them on)."""
    events = [
        b"data: " + (body.encode() if isinstance(body, str) else enc(body)) + b"\n\n"
        for body in bodies
    ]
    return [b"".join(events[i : i + per_read]) for i in range(0, len(events), per_read)]


_TEXT = (
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, finish="stop"),
    USAGE_CHUNK,
    "[DONE]",
)
_TOOLS = (
    chunk({"role": "assistant", "content": None}),
    chunk(_tool_delta(0, "call_a", "get_weather", "")),
    chunk(_tool_delta(1, "call_b", "get_time", "")),
    chunk(_tool_delta(0, None, None, '{"city":"Paris"}')),
    chunk({}, finish="tool_calls"),
    "[DONE]",
)
_TWO_CHOICES = (
    {"id": "c", "model": "m", "choices": [{"index": 1, "delta": {"content": "b"}}]},
    {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "a"}}]},
    {"id": "c", "choices": [{"index": 0, "finish_reason": "stop"}, {"index": 1, "delta": {}}]},
)
_ERROR = (chunk({"content": "Hel"}), {"error": {"type": "server_error", "message": "x"}})
#: Shapes the batch leaves to the event-by-event path, whole: a wrongly typed field
#: (salvaged leniently), data that is not JSON, a `[DONE]` before the end.
_ODD = (chunk({"content": "a"}), {"choices": 5, "model": "m"}, chunk({"content": "b"}))
_NOT_JSON = (chunk({"content": "a"}), "keep-alive", chunk({}, finish="stop"))
_EARLY_DONE = (chunk({"content": "a"}), "[DONE]", chunk({"content": "b"}), " [DONE] ")
#: Nested deeper than the decoder's recursion limit (RecursionError, not a decode error).
_DEEP = (chunk({"content": "a"}), '{"x": ' + "[" * 1200 + "]" * 1200 + "}")


def _assert_batch_equals_events(api: str, reads: list[bytes], capture: bool) -> None:
    """`stamps` (the batch path when it takes the stream) gives the stamps and facts
    that feeding the decoder's events read by read gives."""
    in_batch = EXTRACTORS[api].stream(capture)
    stamps = in_batch.stamps(list(enumerate(reads)))
    one_by_one = EXTRACTORS[api].stream(capture)
    decoder, expected = SSEDecoder(), []
    for index, read in enumerate(reads):
        expected += [index] * one_by_one.carried(decoder.feed(read))
    assert stamps == expected
    assert in_batch.finish() == one_by_one.finish()


@pytest.mark.parametrize("capture", [False, True])
@pytest.mark.parametrize("per_read", [1, 2, 100])
@pytest.mark.parametrize(
    ("api", "bodies", "batched"),
    [
        ("chat_completions", _TEXT, True),
        ("chat_completions", _TOOLS, True),
        ("chat_completions", _TWO_CHOICES, True),
        ("chat_completions", _ERROR, True),
        ("completions", ({"id": "t", "choices": [{"text": "hi"}]}, "[DONE]"), True),
        ("chat_completions", _ODD, False),
        ("chat_completions", _NOT_JSON, False),
        ("chat_completions", _EARLY_DONE, False),
        ("chat_completions", _DEEP, False),
    ],
)
def test_a_stream_folded_in_one_batch_has_the_facts_and_stamps_of_event_by_event(
    api: str, bodies: tuple[Any, ...], batched: bool, per_read: int, capture: bool
) -> None:
    """The batch path (every read's `data:` lines decoded at once) and the event path
    give the same facts, chunk count and per-read stamps; a stream the batch cannot
    take whole goes event by event."""
    reads = _reads(*bodies, per_read=per_read)
    lines = data_lines(b"".join(reads))
    assert lines is not None
    took = EXTRACTORS[api].stream(capture)._inner.data_batch(lines, None)  # type: ignore[attr-defined]
    assert (took is not None) is batched
    _assert_batch_equals_events(api, reads, capture)


def _wire(events: list[SSEEvent], per_read: int, named: bool = True) -> list[bytes]:
    """Events back on the wire (`event:` lines only when `named`), `per_read` a read."""
    wire = [
        (f"event: {e.event}\n" if named else "").encode() + f"data: {e.data}\n\n".encode()
        for e in events
    ]
    return [b"".join(wire[i : i + per_read]) for i in range(0, len(wire), per_read)]


_ANTHROPIC_ERROR = sse(
    _message_start(input_tokens=10, output_tokens=1),
    _ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    _delta(0, "text_delta", text="Hel"),
    _ev("error", error={"type": "overloaded_error", "message": "Overloaded"}),
)
#: The type only on the wire: the event's name stands in for it.
_ANTHROPIC_UNTYPED = sse(
    _message_start(input_tokens=3, output_tokens=1),
    ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "a"}}),
    ("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}),
)
_ANTHROPIC_ODD = [*ANTHROPIC_STREAM[:4], SSEEvent("message_delta", '{"usage": 4}')]
_ANTHROPIC_DEEP = [
    *ANTHROPIC_STREAM[:4],
    SSEEvent("ping", '{"x": ' + "[" * 1200 + "]" * 1200 + "}"),
]


@pytest.mark.parametrize("capture", [False, True])
@pytest.mark.parametrize("per_read", [1, 3, 100])
@pytest.mark.parametrize(
    ("api", "events", "named", "batched"),
    [
        ("messages", ANTHROPIC_STREAM, True, True),
        ("messages", ANTHROPIC_STREAM, False, True),  # data only: each type in its JSON
        ("messages", _ANTHROPIC_ERROR, True, True),
        ("messages", _ANTHROPIC_UNTYPED, True, True),
        ("messages", _ANTHROPIC_ODD, True, False),  # a wrongly typed field: salvaged
        ("messages", _ANTHROPIC_DEEP, True, False),
        ("responses", RESPONSES_TEXT_STREAM, True, True),
        ("responses", RESPONSES_TEXT_STREAM, False, True),
        ("responses", [*RESPONSES_TEXT_STREAM[:5], SSEEvent("x", '{"delta": 5}')], True, False),
    ],
)
def test_a_typed_stream_folded_in_one_batch_has_the_facts_of_event_by_event(
    api: str, events: list[SSEEvent], named: bool, batched: bool, per_read: int, capture: bool
) -> None:
    """Named events (`event:` then one `data:` line, as Anthropic and the Responses API
    stream) take the batch path too, with the same facts, chunk count and per-read
    stamps as event by event; a stream the batch cannot take whole goes event by event."""
    reads = _wire(events, per_read, named)
    stream = b"".join(reads)
    cut = named_lines(stream) if named else (None, data_lines(stream))
    assert cut is not None and cut[1] is not None
    took = EXTRACTORS[api].stream(capture)._inner.data_batch(cut[1], cut[0])  # type: ignore[attr-defined]
    assert (took is not None) is batched
    _assert_batch_equals_events(api, reads, capture)


@pytest.mark.parametrize("api", ["chat_completions", "messages"])
def test_a_stream_that_starts_with_a_byte_order_mark_has_the_facts_of_one_without(
    api: str,
) -> None:
    """A BOM before the first event (which the spec says to ignore) costs no event: the
    stream's facts and stamps are those of the same stream without it."""
    # The first event carries facts: the text's first chunk, the message's start (its
    # input tokens) as a bare `data:` line.
    first_has_facts = {
        "messages": _wire(ANTHROPIC_STREAM, 1, named=False),
        "chat_completions": _reads(*_TEXT[1:]),
    }
    reads = first_has_facts[api]
    plain = EXTRACTORS[api].stream(False)
    expected = plain.stamps(list(enumerate(reads)))
    marked = EXTRACTORS[api].stream(False)
    reads[0] = b"\xef\xbb\xbf" + reads[0]
    assert marked.stamps(list(enumerate(reads))) == expected
    assert marked.finish() == plain.finish()


def test_named_events_of_the_openai_dialect_go_event_by_event() -> None:
    """Chat completions are not streamed with `event:` lines: such a stream is left to
    the decoder, which gives what it always gave."""
    reads = [b'event: delta\ndata: {"choices": [{"delta": {"content": "a"}}]}\n\n']
    cut = named_lines(reads[0])
    assert cut is not None
    observer = EXTRACTORS["chat_completions"].stream(False)
    assert observer._inner.data_batch(cut[1], cut[0]) is None  # type: ignore[attr-defined]
    assert observer.stamps(list(enumerate(reads))) == [0]


@pytest.mark.parametrize("api", ["chat_completions", "messages", "responses"])
def test_stamps_never_raise_on_a_read_that_is_not_bytes(api: str) -> None:
    """The observer's guard covers its decoder too: a record from elsewhere (a str, a
    memoryview) costs its stamps, never an exception on the worker."""
    observer = EXTRACTORS[api].stream(False)
    reads: list[Any] = [(0, "data: {}\n\n"), (1, memoryview(b"data: {}\n\n"))]
    assert observer.stamps(reads) == []
    assert isinstance(observer.finish(), ResponseFacts)
