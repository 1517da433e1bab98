"""A fake upstream LLM provider speaking the OpenAI, Azure OpenAI and Anthropic wire formats.

The server runs on 127.0.0.1 in its own thread with its own event loop, so it can be used from
sync tests, async tests on any loop, and by a proxy running in a separate process::

    with FakeProvider() as fp:
        client = openai.OpenAI(base_url=fp.openai_base_url, api_key="sk-test", max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        assert fp.last.path == "/v1/chat/completions"

Unscripted requests get a deterministic default answer: identical request bodies give
byte-identical responses (ids are derived from a hash of the request, ``created`` is fixed).
Fault injection is scripted per request, first in first out, then back to the default::

    fp.script(openai_error(429, "rate_limit_exceeded", retry_after=1), stall(after=3))

Routes (all optionally under ``prefix``):

* OpenAI: ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
  ``/v1/responses``; ``GET /v1/models`` and ``/v1/models/{id}``.
* Azure OpenAI: ``POST /openai/deployments/{deployment}/chat/completions|completions|embeddings``;
  ``POST /openai/v1/responses`` (the v1 surface).
* Anthropic: ``POST /v1/messages``, ``/v1/messages/count_tokens``; ``GET /v1/models`` answers in
  Anthropic's format when the request carries an ``anthropic-version`` header.
* Anything else: 404 in OpenAI's error format.

``HEAD`` on any of these gets the ``GET``'s status and headers (``Content-Length`` included)
and no body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import itertools
import json
import math
import re
import socket
import ssl
import struct
import threading
import zlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import brotli
from aiohttp import web
from backports import zstd
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "CREATED",
    "SYSTEM_FINGERPRINT",
    "Behaviour",
    "Exchange",
    "FakeProvider",
    "Received",
    "Wire",
    "anthropic_error",
    "brotli_compressed",
    "count_tokens",
    "custom",
    "default",
    "delay",
    "gzipped",
    "malformed_json",
    "openai_error",
    "reset",
    "reset_after",
    "sse",
    "stall",
    "stream_error",
    "unused_port",
    "zstd_compressed",
]

Json = dict[str, Any]
Dialect = Literal["openai", "anthropic"]
# One write of a response body: (seconds to pause before it, bytes to send).
# ``None`` instead of bytes means "reset the connection here" (TCP RST).
Step = tuple[float, bytes | None]

CREATED = 1_700_000_000
SYSTEM_FINGERPRINT = "fp_fake0c0ffee"
DEFAULT_EMBEDDING_DIM = 8
MAX_ECHO_CHARS = 40
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"
RESET_GRACE_SECONDS = 0.05  # lets the client read what was sent before the RST discards it
SHUTDOWN_TIMEOUT_SECONDS = 0.25
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_FINISH = {
    "chat": {"stop": "stop", "length": "length", "tool": "tool_calls"},
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"},
}
OPENAI_MODELS = (
    ("gpt-4o", 1715367049),
    ("gpt-4o-mini", 1721172741),
    ("gpt-4.1", 1744316542),
    ("o3-mini", 1737146383),
    ("text-embedding-3-small", 1705948997),
    ("gpt-3.5-turbo-instruct", 1692901427),
)
ANTHROPIC_MODELS = (
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
    ("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
)


# --------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class Received:
    """One request as it arrived at the fake provider."""

    method: str
    path: str  # full path as sent, including any prefix
    query: dict[str, str]
    headers: CIMultiDictProxy[str]  # case-insensitive: headers["authorization"]
    body: bytes
    request_id: str = ""  # the x-request-id / request-id the fake answered with
    raw_query: str = ""  # the query string as it was encoded on the wire
    raw_path: str = ""  # the path as it was encoded on the wire (``path`` is decoded)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


# --------------------------------------------------------------------------- wire helpers


@dataclass
class Wire:
    """A response about to be written: status, content type, extra headers and body steps."""

    status: int
    content_type: str
    steps: list[Step]
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None  # None: chunked transfer encoding

    @property
    def body(self) -> bytes:
        """All bytes of the body, ignoring pauses and resets."""
        return b"".join(data for _, data in self.steps if data)


def _dumps(obj: Any, *, pretty: bool = False) -> bytes:
    if pretty:
        return json.dumps(obj, indent=2, ensure_ascii=False).encode()
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def json_wire(obj: Any, status: int = 200, *, pretty: bool = False) -> Wire:
    """A JSON response (OpenAI pretty-prints non-streaming bodies, Anthropic does not)."""
    body = _dumps(obj, pretty=pretty)
    return Wire(status, JSON_TYPE, [(0.0, body)], content_length=len(body))


def sse_wire(events: Sequence[bytes], pause: float = 0.0) -> Wire:
    """A ``text/event-stream`` response with ``pause`` seconds between events."""
    steps: list[Step] = [(pause if i else 0.0, e) for i, e in enumerate(events)]
    return Wire(200, SSE_TYPE, steps)


def sse_data(obj: Any) -> bytes:
    """An SSE event with only a data line (OpenAI chat/completions style)."""
    return b"data: " + _dumps(obj) + b"\n\n"


def sse_event(name: str, obj: Any) -> bytes:
    """An SSE event with an event line and a data line (Anthropic / Responses style)."""
    return b"event: " + name.encode() + b"\ndata: " + _dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


# --------------------------------------------------------------------------- text & tokens


def count_tokens(text: str) -> int:
    """The fake tokenizer's count: one token per four characters, rounded up."""
    return math.ceil(len(text) / 4)


def _pieces(text: str) -> list[str]:
    """Split text into word pieces (leading whitespace kept); each piece is one output token."""
    return re.findall(r"\s*\S+", text)


def _slices(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _text_of(content: Any) -> str:
    """Plain text of a message content: a string, a list of parts, or a block with text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(t for t in (_text_of(part) for part in content) if t)
    if isinstance(content, dict):
        text = content.get("text")
        return text if isinstance(text, str) else _text_of(content.get("content"))
    return ""


def _last_user_text(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role", "user") == "user":
            return _text_of(message.get("content"))
    return ""


def _prompt_tokens(*parts: Any) -> int:
    """Input tokens of a request: its text plus three tokens of overhead per message."""
    messages = [m for p in parts if isinstance(p, list) for m in p]
    text = " ".join(_text_of(p) for p in parts)
    return count_tokens(text) + 3 * len(messages)


def reply_text(model: str, user_text: str) -> str:
    """The default assistant answer: ``Hello from <model>: <last user text, truncated>``."""
    echo = " ".join(user_text.split())
    if len(echo) > MAX_ECHO_CHARS:
        echo = echo[:MAX_ECHO_CHARS].rstrip() + "..."
    return f"Hello from {model}: {echo}"


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class ToolCall:
    """The tool call the fake model makes: the first offered (or the forced) tool."""

    name: str
    input: dict[str, Any]

    @property
    def arguments(self) -> str:
        return json.dumps(self.input)


@dataclass(frozen=True)
class Outcome:
    """What the fake model "generated", independent of the wire format."""

    pieces: tuple[str, ...]
    tool: ToolCall | None
    stop: Literal["stop", "length", "tool"]

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def output_tokens(self) -> int:
        args = count_tokens(self.tool.arguments) if self.tool else 0
        return len(self.pieces) + args


_SAMPLES: dict[str, Any] = {
    "string": "example",
    "integer": 1,
    "number": 1.5,
    "boolean": True,
    "array": [],
    "object": {},
    "null": None,
}


def _sample_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "example"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = kind[0] if kind else "string"
    return _SAMPLES.get(kind, "example")


def _sample_input(schema: Any) -> dict[str, Any]:
    """Arguments matching a JSON schema's properties, one sample value per property."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return {}
    return {name: _sample_value(prop) for name, prop in props.items()}


def _choose_tool(
    tools: list[tuple[str, Any]], forced: str | None, disabled: bool
) -> ToolCall | None:
    """Pick the forced tool, else the first one; ``tools`` is [(name, parameter schema)]."""
    if disabled or not tools:
        return None
    schemas = dict(tools)
    name = forced if forced in schemas else tools[0][0]
    return ToolCall(name, _sample_input(schemas[name]))


def _outcome(
    text: str, tool: ToolCall | None, max_tokens: Any, *, text_with_tool: bool = False
) -> Outcome:
    if tool is not None:
        pieces = _pieces(f"Calling {tool.name}.") if text_with_tool else []
        return Outcome(tuple(pieces), tool, "tool")
    pieces = _pieces(text)
    if isinstance(max_tokens, int) and 0 < max_tokens < len(pieces):
        return Outcome(tuple(pieces[:max_tokens]), None, "length")
    return Outcome(tuple(pieces), None, "stop")


# --------------------------------------------------------------------------- usage objects


def _openai_usage(fp: FakeProvider, prompt: int, completion: int) -> Json:
    prompt_total = prompt + fp.cached_tokens
    completion_total = completion + fp.reasoning_tokens
    return {
        "prompt_tokens": prompt_total,
        "completion_tokens": completion_total,
        "total_tokens": prompt_total + completion_total,
        "prompt_tokens_details": {"cached_tokens": fp.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": fp.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _responses_usage(fp: FakeProvider, prompt: int, completion: int) -> Json:
    usage = _openai_usage(fp, prompt, completion)
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": fp.cached_tokens},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": fp.reasoning_tokens},
        "total_tokens": usage["total_tokens"],
    }


def _anthropic_usage(fp: FakeProvider, prompt: int, output: int) -> Json:
    return {
        "input_tokens": prompt,
        "cache_creation_input_tokens": fp.cache_creation_tokens,
        "cache_read_input_tokens": fp.cached_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": fp.cache_creation_tokens,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": output,
        "service_tier": "standard",
    }


# --------------------------------------------------------------------------- OpenAI chat


def _chat_tools(body: Json) -> tuple[list[tuple[str, Any]], str | None, bool]:
    tools = [
        (t["function"]["name"], t["function"].get("parameters"))
        for t in body.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    choice = body.get("tool_choice")
    forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    return tools, forced, choice == "none"


def _chat_outcome(ex: Exchange, body: Json) -> Outcome:
    tool = _choose_tool(*_chat_tools(body))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    return _outcome(reply_text(ex.model, _last_user_text(body.get("messages"))), tool, limit)


def _chat_tool_call(ex: Exchange, tool: ToolCall, index: int) -> Json:
    call_id = ex.ident("call_", 24, salt=f"tool{index}")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": tool.name, "arguments": tool.arguments},
    }


def _chat_message(ex: Exchange, outcome: Outcome, index: int) -> Json:
    message: Json = {
        "role": "assistant",
        "content": None if outcome.tool else outcome.text,
        "refusal": None,
        "annotations": [],
    }
    if outcome.tool:
        message["tool_calls"] = [_chat_tool_call(ex, outcome.tool, index)]
    return message


def _chat_envelope(ex: Exchange, kind: str) -> Json:
    return {
        "id": ex.ident("chatcmpl-", 29),
        "object": kind,
        "created": CREATED,
        "model": ex.model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _chat_usage(ex: Exchange, body: Json, outcomes: list[Outcome]) -> Json:
    prompt = _prompt_tokens(body.get("messages"))
    return _openai_usage(ex.provider, prompt, sum(o.output_tokens for o in outcomes))


def _chat_deltas(ex: Exchange, outcome: Outcome, index: int) -> list[tuple[Json, str | None]]:
    """The (delta, finish_reason) sequence streamed for one choice."""
    if outcome.tool:
        call = _chat_tool_call(ex, outcome.tool, index)
        opening: Json = {
            **call,
            "index": 0,
            "function": {"name": outcome.tool.name, "arguments": ""},
        }
        first: Json = {"role": "assistant", "content": None, "tool_calls": [opening]}
        args = _slices(outcome.tool.arguments)
        rest: list[Json] = [
            {"tool_calls": [{"index": 0, "function": {"arguments": a}}]} for a in args
        ]
    else:
        first = {"role": "assistant", "content": "", "refusal": None}
        rest = [{"content": piece} for piece in outcome.pieces]
    finish = _FINISH["chat"][outcome.stop]
    return [(first, None), *((d, None) for d in rest), ({}, finish)]


def _chat_choices(body: Json) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and n > 0 else 1


def openai_chat(ex: Exchange, body: Json) -> Wire:
    """Default answer for POST /v1/chat/completions (and the Azure equivalent)."""
    outcomes = [_chat_outcome(ex, body)] * _chat_choices(body)
    usage = _chat_usage(ex, body, outcomes)
    if body.get("stream"):
        return _chat_stream(ex, body, outcomes, usage)
    choices = [
        {
            "index": i,
            "message": _chat_message(ex, o, i),
            "logprobs": None,
            "finish_reason": _FINISH["chat"][o.stop],
        }
        for i, o in enumerate(outcomes)
    ]
    envelope = _chat_envelope(ex, "chat.completion")
    return json_wire({**envelope, "choices": choices, "usage": usage}, pretty=True)


def _include_usage(body: Json) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _chat_stream(ex: Exchange, body: Json, outcomes: list[Outcome], usage: Json) -> Wire:
    envelope = _chat_envelope(ex, "chat.completion.chunk")
    with_usage = _include_usage(body)
    per_choice = [_chat_deltas(ex, o, i) for i, o in enumerate(outcomes)]
    events: list[bytes] = []
    for row in itertools.zip_longest(*per_choice):
        for index, item in enumerate(row):
            if item is None:
                continue
            delta, finish = item
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            chunk: Json = {**envelope, "choices": [choice]}
            if with_usage:
                chunk["usage"] = None
            events.append(sse_data(chunk))
    if with_usage:
        events.append(sse_data({**envelope, "choices": [], "usage": usage}))
    events.append(SSE_DONE)
    return sse_wire(events, ex.provider.stream_delay)


# --------------------------------------------------------------------------- OpenAI legacy


def _completion_prompt(body: Json) -> str:
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        return " ".join(p for p in prompt if isinstance(p, str))
    return prompt if isinstance(prompt, str) else ""


def openai_completions(ex: Exchange, body: Json) -> Wire:
    """Default answer for POST /v1/completions (legacy text completions)."""
    prompt = _completion_prompt(body)
    outcome = _outcome(reply_text(ex.model, prompt), None, body.get("max_tokens"))
    n = _chat_choices(body)
    usage = _openai_usage(ex.provider, count_tokens(prompt), outcome.output_tokens * n)
    del usage["prompt_tokens_details"], usage["completion_tokens_details"]
    envelope = {
        "id": ex.ident("cmpl-", 29),
        "object": "text_completion",
        "created": CREATED,
        "model": ex.model,
    }
    finish = _FINISH["chat"][outcome.stop]
    if not body.get("stream"):
        choices = [
            {"text": outcome.text, "index": i, "logprobs": None, "finish_reason": finish}
            for i in range(n)
        ]
        return json_wire({**envelope, "choices": choices, "usage": usage}, pretty=True)
    texts = [(p, None) for p in outcome.pieces] + [("", finish)]
    events = [
        sse_data(
            {
                **envelope,
                "choices": [{"text": t, "index": i, "logprobs": None, "finish_reason": f}],
            }
        )
        for t, f in texts
        for i in range(n)
    ]
    if _include_usage(body):
        events.append(sse_data({**envelope, "choices": [], "usage": usage}))
    events.append(SSE_DONE)
    return sse_wire(events, ex.provider.stream_delay)


# --------------------------------------------------------------------------- embeddings


def embedding_vector(item: Any, dim: int = DEFAULT_EMBEDDING_DIM) -> list[float]:
    """The fake embedding of one input: a unit vector derived from its hash, float32-exact."""
    seed = json.dumps(item).encode()
    raw = hashlib.shake_256(seed).digest(2 * dim)
    values = [int.from_bytes(raw[2 * i : 2 * i + 2], "big") / 32767.5 - 1.0 for i in range(dim)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dim}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dim}f", packed))


def _embedding_inputs(value: Any) -> list[Any]:
    """Normalise ``input``: a string, a token list, or a list of either."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [value]
    return list(value) if isinstance(value, list) else []


def _encode_embedding(vector: list[float], encoding: Any) -> list[float] | str:
    if encoding != "base64":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def openai_embeddings(ex: Exchange, body: Json) -> Wire:
    """Default answer for POST /v1/embeddings; honours ``dimensions`` and ``encoding_format``."""
    dims = body.get("dimensions")
    dim = dims if isinstance(dims, int) and dims > 0 else ex.provider.embedding_dim
    inputs = _embedding_inputs(body.get("input"))
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": _encode_embedding(
                embedding_vector(item, dim), body.get("encoding_format")
            ),
        }
        for i, item in enumerate(inputs)
    ]
    tokens = sum(count_tokens(i) if isinstance(i, str) else len(i) for i in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json_wire({"object": "list", "data": data, "model": ex.model, "usage": usage})


# --------------------------------------------------------------------------- Responses API


def _responses_tools(body: Json) -> tuple[list[tuple[str, Any]], str | None, bool]:
    tools = [
        (t["name"], t.get("parameters"))
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type") == "function" and "name" in t
    ]
    choice = body.get("tool_choice")
    forced = choice.get("name") if isinstance(choice, dict) else None
    return tools, forced, choice == "none"


def _response_object(ex: Exchange, body: Json, status: str, output: list[Json], usage: Any) -> Json:
    return {
        "id": ex.ident("resp_", 48, hexadecimal=True),
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "completed_at": CREATED + 1 if status == "completed" else None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": ex.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _responses_item(ex: Exchange, outcome: Outcome, *, done: bool) -> Json:
    status = "completed" if done else "in_progress"
    if outcome.tool:
        return {
            "id": ex.ident("fc_", 48, hexadecimal=True),
            "type": "function_call",
            "status": status,
            "arguments": outcome.tool.arguments if done else "",
            "call_id": ex.ident("call_", 24, salt="tool0"),
            "name": outcome.tool.name,
        }
    content = [_output_text(outcome.text)] if done else []
    return {
        "id": ex.ident("msg_", 48, hexadecimal=True),
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _output_text(text: str) -> Json:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def openai_responses(ex: Exchange, body: Json) -> Wire:
    """Default answer for POST /v1/responses (non-streaming and streaming)."""
    tool = _choose_tool(*_responses_tools(body))
    outcome = _outcome(reply_text(ex.model, _last_user_text(body.get("input"))), tool, None)
    prompt = _prompt_tokens(body.get("input"), body.get("instructions"))
    usage = _responses_usage(ex.provider, prompt, outcome.output_tokens)
    final = _response_object(
        ex, body, "completed", [_responses_item(ex, outcome, done=True)], usage
    )
    if not body.get("stream"):
        return json_wire(final, pretty=True)
    events = _responses_events(ex, body, outcome, final)
    numbered = [{**payload, "sequence_number": i} for i, payload in enumerate(events)]
    return sse_wire([sse_event(e["type"], e) for e in numbered], ex.provider.stream_delay)


def _responses_events(ex: Exchange, body: Json, outcome: Outcome, final: Json) -> list[Json]:
    started = _response_object(ex, body, "in_progress", [], None)
    item = _responses_item(ex, outcome, done=False)
    body_events = (
        _responses_tool_events(ex, outcome) if outcome.tool else _responses_text_events(ex, outcome)
    )
    return [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        *body_events,
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": _responses_item(ex, outcome, done=True),
        },
        {"type": "response.completed", "response": final},
    ]


def _responses_text_events(ex: Exchange, outcome: Outcome) -> list[Json]:
    where = {"item_id": _responses_item(ex, outcome, done=False)["id"], "output_index": 0}
    part = {**where, "content_index": 0}
    return [
        {"type": "response.content_part.added", **part, "part": _output_text("")},
        *(
            {"type": "response.output_text.delta", **part, "delta": piece, "logprobs": []}
            for piece in outcome.pieces
        ),
        {"type": "response.output_text.done", **part, "text": outcome.text, "logprobs": []},
        {"type": "response.content_part.done", **part, "part": _output_text(outcome.text)},
    ]


def _responses_tool_events(ex: Exchange, outcome: Outcome) -> list[Json]:
    assert outcome.tool is not None
    where = {"item_id": _responses_item(ex, outcome, done=False)["id"], "output_index": 0}
    arguments = outcome.tool.arguments
    kind = "response.function_call_arguments"
    return [
        *({"type": f"{kind}.delta", **where, "delta": a} for a in _slices(arguments)),
        {"type": f"{kind}.done", **where, "arguments": arguments},
    ]


# --------------------------------------------------------------------------- models


def openai_models(ex: Exchange, body: Json) -> Wire:
    """Default answer for GET /v1/models (OpenAI or, with anthropic-version, Anthropic)."""
    if ex.route.dialect == "anthropic":
        data = [
            {"type": "model", "id": i, "display_name": name, "created_at": at}
            for i, name, at in ANTHROPIC_MODELS
        ]
        page = {"has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        return json_wire({"data": data, **page})
    data = [_openai_model(name, created) for name, created in OPENAI_MODELS]
    return json_wire({"object": "list", "data": data}, pretty=True)


def _openai_model(name: str, created: int = CREATED) -> Json:
    return {"id": name, "object": "model", "created": created, "owned_by": "system"}


def openai_model(ex: Exchange, body: Json) -> Wire:
    """Default answer for GET /v1/models/{id}: any id exists."""
    return json_wire(_openai_model(ex.model), pretty=True)


# --------------------------------------------------------------------------- Anthropic


def _anthropic_tools(body: Json) -> tuple[list[tuple[str, Any]], str | None, bool]:
    tools = [
        (t["name"], t.get("input_schema"))
        for t in body.get("tools") or []
        if isinstance(t, dict) and "name" in t and t.get("type", "custom") == "custom"
    ]
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else None
    forced = choice.get("name") if isinstance(choice, dict) and kind == "tool" else None
    return tools, forced, kind == "none"


def _anthropic_prompt_tokens(body: Json) -> int:
    return _prompt_tokens(body.get("messages"), body.get("system"))


def _anthropic_outcome(ex: Exchange, body: Json) -> Outcome:
    tool = _choose_tool(*_anthropic_tools(body))
    text = reply_text(ex.model, _last_user_text(body.get("messages")))
    return _outcome(text, tool, body.get("max_tokens"), text_with_tool=True)


def _anthropic_blocks(ex: Exchange, outcome: Outcome) -> list[Json]:
    blocks: list[Json] = []
    if outcome.pieces:
        blocks.append({"type": "text", "text": outcome.text})
    if outcome.tool:
        tool_id = ex.ident("toolu_01", 22, salt="tool0")
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_id,
                "name": outcome.tool.name,
                "input": outcome.tool.input,
            }
        )
    return blocks


def _anthropic_message(ex: Exchange, outcome: Outcome, content: list[Json], usage: Json) -> Json:
    done = bool(content)
    return {
        "id": ex.ident("msg_01", 22),
        "type": "message",
        "role": "assistant",
        "model": ex.model,
        "content": content,
        "stop_reason": _FINISH["anthropic"][outcome.stop] if done else None,
        "stop_sequence": None,
        "usage": usage,
    }


def anthropic_messages(ex: Exchange, body: Json) -> Wire:
    """Default answer for POST /v1/messages (non-streaming and streaming)."""
    if not isinstance(body.get("max_tokens"), int):
        return _anthropic_error_wire(ex, 400, "invalid_request_error", "max_tokens: Field required")
    outcome = _anthropic_outcome(ex, body)
    prompt = _anthropic_prompt_tokens(body)
    if body.get("stream"):
        return _anthropic_stream(ex, outcome, prompt)
    usage = _anthropic_usage(ex.provider, prompt, outcome.output_tokens)
    return json_wire(_anthropic_message(ex, outcome, _anthropic_blocks(ex, outcome), usage))


def _anthropic_stream(ex: Exchange, outcome: Outcome, prompt: int) -> Wire:
    fp = ex.provider
    start = _anthropic_message(ex, outcome, [], _anthropic_usage(fp, prompt, 1))
    events = [sse_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(_anthropic_blocks(ex, outcome)):
        events += _anthropic_block_events(index, block, outcome)
    final_usage = _anthropic_usage(fp, prompt, outcome.output_tokens)
    delta = {"stop_reason": _FINISH["anthropic"][outcome.stop], "stop_sequence": None}
    usage = {k: final_usage[k] for k in ("input_tokens", "cache_creation_input_tokens")}
    usage |= {k: final_usage[k] for k in ("cache_read_input_tokens", "output_tokens")}
    events.append(
        sse_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
    )
    events.append(sse_event("message_stop", {"type": "message_stop"}))
    return sse_wire(events, fp.stream_delay)


def _anthropic_block_events(index: int, block: Json, outcome: Outcome) -> list[bytes]:
    if block["type"] == "text":
        opening: Json = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in outcome.pieces]
    else:
        opening = {**block, "input": {}}
        arguments = json.dumps(block["input"])
        deltas = [
            {"type": "input_json_delta", "partial_json": p} for p in ["", *_slices(arguments)]
        ]
    events = [
        sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": opening},
        )
    ]
    if index == 0:
        events.append(sse_event("ping", {"type": "ping"}))
    events += [
        sse_event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}
        )
        for d in deltas
    ]
    events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def anthropic_count_tokens(ex: Exchange, body: Json) -> Wire:
    """Default answer for POST /v1/messages/count_tokens; equals the messages input_tokens."""
    return json_wire({"input_tokens": _anthropic_prompt_tokens(body)})


# --------------------------------------------------------------------------- error bodies


_OPENAI_CODES: dict[str, tuple[str, str, str | None]] = {  # code -> (type, message, param)
    "rate_limit_exceeded": (
        "requests",
        "Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 20s.",
        None,
    ),
    "insufficient_quota": (
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
        None,
    ),
    "invalid_api_key": (
        "invalid_request_error",
        "Incorrect API key provided: sk-fake***. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        None,
    ),
    "model_not_found": (
        "invalid_request_error",
        "The model `{model}` does not exist or you do not have access to it.",
        None,
    ),
    "context_length_exceeded": (
        "invalid_request_error",
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 130000 tokens. Please reduce the length of the messages.",
        "messages",
    ),
}
_OPENAI_STATUS_MESSAGES = {
    400: "Invalid request.",
    401: "You didn't provide an API key.",
    403: "You are not allowed to access this resource.",
    404: "The requested resource was not found.",
    429: "Rate limit reached. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The server is overloaded or not ready yet.",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_MESSAGES = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "model: {model}",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "This request would exceed your organization's rate limit.",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}


def openai_error_body(
    status: int,
    code: str | None = None,
    message: str | None = None,
    *,
    type: str | None = None,
    param: str | None = None,
    model: str = "gpt-4o",
) -> Json:
    """``{"error": {"message", "type", "param", "code"}}`` with realistic defaults per code."""
    default_type, default_message, default_param = _OPENAI_CODES.get(code or "", ("", "", None))
    fallback_type = "server_error" if status >= 500 else "invalid_request_error"
    fallback_message = _OPENAI_STATUS_MESSAGES.get(status, f"Error {status}.")
    return {
        "error": {
            "message": (message or default_message or fallback_message).replace("{model}", model),
            "type": type or default_type or fallback_type,
            "param": param if param is not None else default_param,
            "code": code,
        }
    }


def anthropic_error_body(
    status: int,
    type: str | None = None,
    message: str | None = None,
    *,
    request_id: str | None = None,
    model: str = "claude",
) -> Json:
    """``{"type": "error", "error": {"type", "message"}, "request_id"}``."""
    kind = type or _ANTHROPIC_TYPES.get(status, "api_error")
    text = message or _ANTHROPIC_MESSAGES.get(kind, "Error")
    body: Json = {
        "type": "error",
        "error": {"type": kind, "message": text.replace("{model}", model)},
    }
    if request_id is not None:
        body["request_id"] = request_id
    return body


def _anthropic_error_wire(ex: Exchange, status: int, kind: str, message: str) -> Wire:
    body = anthropic_error_body(status, kind, message, request_id=ex.received.request_id)
    return json_wire(body, status)


def _retry_headers(retry_after: float | None, retry_after_ms: float | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    if retry_after_ms is not None:
        headers["retry-after-ms"] = f"{retry_after_ms:g}"
    return headers


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Route:
    """Which endpoint a request hit, in which dialect; ``model`` is forced for Azure."""

    name: str
    dialect: Dialect = "openai"
    model: str | None = None


Builder = Callable[["Exchange", Json], Wire]
_POST_ROUTES: dict[str, Route] = {
    "/v1/chat/completions": Route("chat"),
    "/v1/completions": Route("completions"),
    "/v1/embeddings": Route("embeddings"),
    "/v1/responses": Route("responses"),
    # Azure OpenAI's v1 surface (the deployment named by the body's model).
    "/openai/v1/responses": Route("responses"),
    "/v1/messages": Route("messages", "anthropic"),
    "/v1/messages/count_tokens": Route("count_tokens", "anthropic"),
}
_AZURE = re.compile(r"/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)")
_AZURE_KINDS = {
    "chat/completions": "chat",
    "completions": "completions",
    "embeddings": "embeddings",
}
_MODEL = re.compile(r"/v1/models/(.+)")
_BUILDERS: dict[str, Builder] = {
    "chat": openai_chat,
    "completions": openai_completions,
    "embeddings": openai_embeddings,
    "responses": openai_responses,
    "models": openai_models,
    "model": openai_model,
    "messages": anthropic_messages,
    "count_tokens": anthropic_count_tokens,
}
_JSON_ROUTES = {"chat", "completions", "embeddings", "responses", "messages", "count_tokens"}


def match_route(method: str, path: str, headers: CIMultiDictProxy[str]) -> Route:
    """Map a method and a prefix-stripped path to a Route ("not_found" when nothing matches)."""
    if method == "POST":
        if path in _POST_ROUTES:
            return _POST_ROUTES[path]
        if azure := _AZURE.fullmatch(path):
            return Route(_AZURE_KINDS[azure.group(2)], model=azure.group(1))
    if method in ("GET", "HEAD"):  # HEAD: the GET's head, without its body
        dialect: Dialect = "anthropic" if "anthropic-version" in headers else "openai"
        if path == "/v1/models":
            return Route("models", dialect)
        if model := _MODEL.fullmatch(path):
            return Route("model", model=model.group(1))
    return Route("not_found")


# --------------------------------------------------------------------------- exchange


_UNPARSED = object()


class Exchange:
    """One request being answered: what arrived, the route it matched, and how to reply."""

    def __init__(
        self, provider: FakeProvider, request: web.Request, received: Received, route: Route
    ) -> None:
        self.provider = provider
        self.request = request
        self.received = received
        self.route = route
        self.finished = False  # set once the whole reply was written (or reset on purpose)
        self._disconnected = False
        self._payload: Any = _UNPARSED
        self._seed = hashlib.sha256(
            received.method.encode() + b" " + received.path.encode() + b"\n" + received.body
        ).digest()

    # ---- request facts

    def payload(self) -> Any:
        """The request body parsed as JSON, or None when it is not valid JSON."""
        if self._payload is _UNPARSED:
            try:
                self._payload = json.loads(self.received.body) if self.received.body else None
            except ValueError:
                self._payload = None
        return self._payload

    @property
    def model(self) -> str:
        """The model to answer as: the Azure deployment or model path segment, else body.model."""
        if self.route.model:
            return self.route.model
        payload = self.payload()
        model = payload.get("model") if isinstance(payload, dict) else None
        return model if isinstance(model, str) else "unknown"

    def ident(self, prefix: str, length: int, *, salt: str = "", hexadecimal: bool = False) -> str:
        """A deterministic id: ``prefix`` plus characters derived from the request hash."""
        digest = hashlib.sha256(self._seed + salt.encode()).digest()
        if hexadecimal:
            return prefix + (digest.hex() * 2)[:length]
        number = int.from_bytes(digest, "big")
        chars = []
        for _ in range(length):
            number, rest = divmod(number, 62)
            chars.append(_B62[rest])
        return prefix + "".join(chars)

    # ---- replies

    def default(self) -> Wire:
        """The deterministic default reply for this request."""
        name = self.route.name
        if name == "not_found":
            return self._not_found()
        body = self.payload()
        if name in _JSON_ROUTES and not isinstance(body, dict):
            return self._bad_request("We could not parse the JSON body of your request.")
        if name in _JSON_ROUTES and not isinstance(body.get("model"), str) and not self.route.model:
            return self._bad_request("you must provide a model parameter")
        return _BUILDERS[name](self, body if isinstance(body, dict) else {})

    def _not_found(self) -> Wire:
        message = f"Invalid URL ({self.received.method} {self.received.path})"
        return json_wire(openai_error_body(404, message=message), 404, pretty=True)

    def _bad_request(self, message: str) -> Wire:
        if self.route.dialect == "anthropic":
            return _anthropic_error_wire(self, 400, "invalid_request_error", message)
        return json_wire(openai_error_body(400, message=message), 400, pretty=True)

    def base_headers(self) -> dict[str, str]:
        """Headers every reply of this dialect carries (request id, rate-limit headers)."""
        rid = self.received.request_id
        if self.route.dialect == "anthropic":
            return {
                "request-id": rid,
                "anthropic-ratelimit-requests-limit": "4000",
                "anthropic-ratelimit-requests-remaining": "3999",
                "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:21Z",
                "anthropic-ratelimit-tokens-limit": "400000",
                "anthropic-ratelimit-tokens-remaining": "399000",
                "anthropic-ratelimit-tokens-reset": "2023-11-14T22:13:21Z",
            }
        return {
            "x-request-id": rid,
            "openai-version": "2020-10-01",
            "openai-processing-ms": "7",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-limit-tokens": "30000000",
            "x-ratelimit-remaining-tokens": "29999000",
            "x-ratelimit-reset-tokens": "2ms",
        }

    def client_gone(self) -> None:
        """Note that the client went away before the reply was complete (counted once)."""
        if not self._disconnected and not self.finished and not self.provider.stopping:
            self._disconnected = True
            self.provider._note_disconnect()

    async def play(self, wire: Wire) -> web.StreamResponse:
        """Write ``wire`` step by step, honouring pauses and resets."""
        headers = CIMultiDict(self.base_headers())
        headers.update(wire.headers)
        headers["Content-Type"] = wire.content_type
        response = web.StreamResponse(status=wire.status, headers=headers)
        # A HEAD answer has the GET's head (its Content-Length included) and no body
        # (RFC 9110 §9.3.2): a StreamResponse would write one.
        bodiless = self.request.method == "HEAD"
        if wire.content_length is not None:
            response.content_length = wire.content_length
        try:
            await response.prepare(self.request)
            for pause, data in wire.steps:
                if pause > 0:
                    await asyncio.sleep(pause)
                if data is None:
                    await self.reset()
                    return response
                if data and not bodiless:
                    await response.write(data)
        except ConnectionError:
            self.client_gone()
            return response
        self.finished = True
        return response

    async def reset(self) -> None:
        """Reset the connection (TCP RST) after giving the client a moment to read."""
        await asyncio.sleep(RESET_GRACE_SECONDS)
        self.finished = True
        transport = self.request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


# --------------------------------------------------------------------------- behaviours


class Behaviour(ABC):
    """How to answer one request. Build them with the module functions, pass to fp.script()."""

    @abstractmethod
    async def respond(self, ex: Exchange) -> web.StreamResponse:
        """Write the reply for ``ex``."""


class _WireBehaviour(Behaviour):
    """A behaviour fully described by a Wire (possibly derived from the default reply)."""

    @abstractmethod
    def wire(self, ex: Exchange) -> Wire:
        """The wire to play."""

    async def respond(self, ex: Exchange) -> web.StreamResponse:
        return await ex.play(self.wire(ex))


@dataclass(frozen=True)
class _Default(_WireBehaviour):
    def wire(self, ex: Exchange) -> Wire:
        return ex.default()


@dataclass(frozen=True)
class _OpenAIError(_WireBehaviour):
    status: int
    code: str | None
    message: str | None
    type: str | None
    param: str | None
    headers: dict[str, str]

    def wire(self, ex: Exchange) -> Wire:
        body = openai_error_body(
            self.status, self.code, self.message, type=self.type, param=self.param, model=ex.model
        )
        return replace(json_wire(body, self.status, pretty=True), headers=dict(self.headers))


@dataclass(frozen=True)
class _AnthropicError(_WireBehaviour):
    status: int
    type: str | None
    message: str | None
    headers: dict[str, str]

    def wire(self, ex: Exchange) -> Wire:
        body = anthropic_error_body(
            self.status,
            self.type,
            self.message,
            request_id=ex.received.request_id,
            model=ex.model,
        )
        return replace(json_wire(body, self.status), headers=dict(self.headers))


@dataclass(frozen=True)
class _Delay(Behaviour):
    seconds: float
    then: Behaviour

    async def respond(self, ex: Exchange) -> web.StreamResponse:
        await asyncio.sleep(self.seconds)
        return await self.then.respond(ex)


@dataclass(frozen=True)
class _Stall(_WireBehaviour):
    after: int
    seconds: float

    def wire(self, ex: Exchange) -> Wire:
        wire = ex.default()
        steps = list(wire.steps)
        if self.after < len(steps):
            pause, data = steps[self.after]
            steps[self.after] = (pause + self.seconds, data)
        else:
            steps.append((self.seconds, b""))
        return replace(wire, steps=steps)


@dataclass(frozen=True)
class _ResetAfter(_WireBehaviour):
    after: int

    def wire(self, ex: Exchange) -> Wire:
        wire = ex.default()
        return replace(wire, steps=[*wire.steps[: self.after], (0.0, None)])


@dataclass(frozen=True)
class _StreamError(_WireBehaviour):
    after: int
    message: str | None
    type: str | None
    code: str | None

    def wire(self, ex: Exchange) -> Wire:
        wire = ex.default()
        kept = wire.steps[: self.after] if wire.content_type == SSE_TYPE else []
        pause = ex.provider.stream_delay if kept else 0.0
        error: Step = (pause, self._event(ex, len(kept)))
        return Wire(200, SSE_TYPE, [*kept, error], headers=wire.headers)

    def _event(self, ex: Exchange, sequence_number: int) -> bytes:
        if ex.route.dialect == "anthropic":
            body = anthropic_error_body(529, self.type or "overloaded_error", self.message)
            return sse_event("error", body)
        error = openai_error_body(500, self.code, self.message, type=self.type)["error"]
        if ex.route.name == "responses":
            payload = {
                "type": "error",
                "code": error["code"] or error["type"],
                "message": error["message"],
                "param": error["param"],
                "sequence_number": sequence_number,
            }
            return sse_event("error", payload)
        return sse_data({"error": error})


@dataclass(frozen=True)
class _Reset(Behaviour):
    async def respond(self, ex: Exchange) -> web.StreamResponse:
        ex.finished = True
        transport = ex.request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response()  # never delivered: the connection is gone


@dataclass(frozen=True)
class _Gzip(_WireBehaviour):
    encoding: str

    def wire(self, ex: Exchange) -> Wire:
        wire = ex.default()
        if self.encoding == "deflate":
            body = zlib.compress(wire.body)
        else:
            body = gzip.compress(wire.body, mtime=0)
        headers = {**wire.headers, "content-encoding": self.encoding}
        return replace(wire, steps=[(0.0, body)], headers=headers, content_length=len(body))


@dataclass(frozen=True)
class _Custom(_WireBehaviour):
    status: int
    content_type: str
    steps: tuple[Step, ...]
    headers: dict[str, str]
    chunked: bool

    def wire(self, ex: Exchange) -> Wire:
        length = None if self.chunked else sum(len(d) for _, d in self.steps if d)
        return Wire(self.status, self.content_type, list(self.steps), dict(self.headers), length)


def default() -> Behaviour:
    """Answer normally (useful between scripted faults: ``script(err, default(), err)``)."""
    return _Default()


def openai_error(
    status: int,
    code: str | None = None,
    message: str | None = None,
    *,
    type: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
    retry_after_ms: float | None = None,
    headers: dict[str, str] | None = None,
) -> Behaviour:
    """An OpenAI error reply; type, message and param default sensibly from code and status.

    Known codes: rate_limit_exceeded, insufficient_quota (use status 429), invalid_api_key (401),
    model_not_found (404), context_length_exceeded (400).
    """
    extra = _retry_headers(retry_after, retry_after_ms) | (headers or {})
    return _OpenAIError(status, code, message, type, param, extra)


def anthropic_error(
    status: int,
    type: str | None = None,
    message: str | None = None,
    *,
    retry_after: float | None = None,
    retry_after_ms: float | None = None,
    headers: dict[str, str] | None = None,
) -> Behaviour:
    """An Anthropic error reply; ``type`` defaults from status (529 -> overloaded_error, ...)."""
    extra = _retry_headers(retry_after, retry_after_ms) | (headers or {})
    return _AnthropicError(status, type, message, extra)


def delay(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Wait ``seconds`` before sending anything, then answer with ``then`` (default reply)."""
    return _Delay(seconds, then or _Default())


def stall(after: int = 1, seconds: float = 30.0) -> Behaviour:
    """Default reply that pauses ``seconds`` after ``after`` SSE events, then carries on.

    A non-streaming JSON reply counts as one event, so ``after=0`` stalls after the headers.
    A client that disconnects during the pause is counted in ``fp.disconnects``.
    """
    return _Stall(after, seconds)


def reset_after(events: int = 1) -> Behaviour:
    """Default reply cut by a TCP reset after ``events`` SSE events (0: right after headers)."""
    return _ResetAfter(events)


def stream_error(
    after: int = 0,
    message: str | None = None,
    *,
    type: str | None = None,
    code: str | None = None,
) -> Behaviour:
    """A 200 SSE stream whose event number ``after`` (0 = first) is an in-stream error.

    OpenAI chat/completions: ``data: {"error": {...}}``; Responses: ``event: error`` with
    code/message/param/sequence_number; Anthropic: ``event: error`` with a full error body.
    The stream ends after the error event.
    """
    return _StreamError(after, message, type, code)


def reset() -> Behaviour:
    """Close the connection with a TCP reset without sending any response."""
    return _Reset()


def malformed_json(status: int = 200) -> Behaviour:
    """A ``application/json`` reply whose body is truncated, invalid JSON."""
    body = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index'
    return _Custom(status, JSON_TYPE, ((0.0, body),), {}, chunked=False)


def gzipped(encoding: str = "gzip") -> Behaviour:
    """The default reply, compressed with ``Content-Encoding: gzip`` (or ``x-gzip``), or
    zlib-wrapped with ``deflate``."""
    return _Gzip(encoding)


@dataclass(frozen=True)
class _Packed(_WireBehaviour):
    encoding: str
    pack: Callable[[bytes], bytes]

    def wire(self, ex: Exchange) -> Wire:
        wire = ex.default()
        body = self.pack(wire.body)
        headers = {**wire.headers, "content-encoding": self.encoding}
        return replace(wire, steps=[(0.0, body)], headers=headers, content_length=len(body))


def brotli_compressed() -> Behaviour:
    """The default reply, compressed with ``Content-Encoding: br``."""
    return _Packed("br", brotli.compress)


def zstd_compressed(frames: int = 1) -> Behaviour:
    """The default reply, compressed with ``Content-Encoding: zstd``; with ``frames`` > 1,
    as that many zstd frames one after the other (a body may have several)."""

    def pack(body: bytes) -> bytes:
        cut = [len(body) * i // frames for i in range(frames + 1)]
        return b"".join(zstd.compress(body[a:b]) for a, b in itertools.pairwise(cut))

    return _Packed("zstd", pack)


def custom(
    status: int = 200,
    body: bytes | str = b"",
    *,
    content_type: str = JSON_TYPE,
    headers: dict[str, str] | None = None,
) -> Behaviour:
    """A fully custom reply: any status, headers and body bytes."""
    data = body.encode() if isinstance(body, str) else body
    return _Custom(status, content_type, ((0.0, data),), dict(headers or {}), chunked=False)


def sse(
    chunks: Sequence[bytes | tuple[float, bytes]],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    content_type: str = SSE_TYPE,
    then_reset: bool = False,
) -> Behaviour:
    """Raw stream chunks written as-is (chunked); ``(seconds, chunk)`` pauses before a chunk."""
    steps: list[Step] = [c if isinstance(c, tuple) else (0.0, c) for c in chunks]
    if then_reset:
        steps.append((0.0, None))
    return _Custom(status, content_type, tuple(steps), dict(headers or {}), chunked=True)


# --------------------------------------------------------------------------- server


class FakeProvider:
    """A fake OpenAI/Azure/Anthropic upstream on 127.0.0.1, served from its own thread."""

    def __init__(
        self,
        prefix: str = "",
        *,
        embedding_dim: int = DEFAULT_EMBEDDING_DIM,
        cached_tokens: int = 0,
        cache_creation_tokens: int = 0,
        reasoning_tokens: int = 0,
        stream_delay: float = 0.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.tls = tls
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.embedding_dim = embedding_dim
        self.cached_tokens = cached_tokens
        self.cache_creation_tokens = cache_creation_tokens
        self.reasoning_tokens = reasoning_tokens
        self.stream_delay = stream_delay
        self.stopping = False
        self._port: int | None = None
        self._lock = threading.Condition()
        self._received: list[Received] = []
        self._script: deque[Behaviour] = deque()
        self._disconnects = 0
        self._sequence = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._startup_error: BaseException | None = None

    # ---- lifecycle

    def start(self) -> FakeProvider:
        """Start serving; returns self once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("FakeProvider already started")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="FakeProvider", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if self._startup_error is not None:
            raise RuntimeError("FakeProvider failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        """Stop serving and join the thread; in-flight stalled streams are cut."""
        if self._thread is None or self._loop is None:
            return
        self.stopping = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _open(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self._port = self._runner.addresses[0][1]

    # ---- addresses

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeProvider not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` when serving TLS; no prefix)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``url`` plus the prefix: the Anthropic SDK's and Azure's base URL."""
        return self.url + self.prefix

    @property
    def openai_base_url(self) -> str:
        """``base_url`` plus ``/v1``: the OpenAI SDK's base URL."""
        return self.base_url + "/v1"

    # ---- scripting

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each request consumes the next one, then the default resumes."""
        with self._lock:
            self._script.extend(behaviours)

    @property
    def pending(self) -> int:
        """How many scripted behaviours are not yet consumed."""
        with self._lock:
            return len(self._script)

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else _Default()

    # ---- recording

    @property
    def received(self) -> list[Received]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def last(self) -> Received:
        """The most recent request (AssertionError when there was none)."""
        with self._lock:
            assert self._received, "FakeProvider received no request"
            return self._received[-1]

    @property
    def disconnects(self) -> int:
        """How many clients went away before their reply was completely written."""
        with self._lock:
            return self._disconnects

    def clear(self) -> None:
        """Forget received requests, pending script and the disconnect count."""
        with self._lock:
            self._received.clear()
            self._script.clear()
            self._disconnects = 0

    def wait_for_requests(self, count: int = 1, within: float = 5.0) -> bool:
        """Block until ``count`` requests were received; False after ``within`` seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._received) >= count, within)

    def wait_for_disconnects(self, count: int = 1, within: float = 5.0) -> bool:
        """Block until ``count`` mid-reply disconnects were seen; False after ``within`` s."""
        with self._lock:
            return self._lock.wait_for(lambda: self._disconnects >= count, within)

    async def await_requests(self, count: int = 1, within: float = 5.0) -> bool:
        """Async ``wait_for_requests`` that does not block the caller's event loop."""
        return await asyncio.to_thread(self.wait_for_requests, count, within)

    async def await_disconnects(self, count: int = 1, within: float = 5.0) -> bool:
        """Async ``wait_for_disconnects`` that does not block the caller's event loop."""
        return await asyncio.to_thread(self.wait_for_disconnects, count, within)

    def _note_disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1
            self._lock.notify_all()

    def _record(self, request: web.Request, body: bytes, dialect: Dialect) -> Received:
        with self._lock:
            self._sequence += 1
            digest = hashlib.sha256(f"request-{self._sequence}".encode()).hexdigest()
            rid = f"req_011C{digest[:20]}" if dialect == "anthropic" else f"req_{digest[:32]}"
            received = Received(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=body,
                request_id=rid,
                raw_query=request.raw_path.partition("?")[2],
                raw_path=request.raw_path.partition("?")[0],
            )
            self._received.append(received)
            self._lock.notify_all()
            return received

    # ---- handling

    def _route(self, request: web.Request) -> Route:
        path = request.path
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return Route("not_found")
            path = path[len(self.prefix) :]
        return match_route(request.method, path, request.headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        route = self._route(request)
        received = self._record(request, body, route.dialect)
        exchange = Exchange(self, request, received, route)
        behaviour = self._next_behaviour()
        try:
            return await behaviour.respond(exchange)
        except asyncio.CancelledError:
            exchange.client_gone()
            raise


def unused_port() -> int:
    """A port on 127.0.0.1 with nothing listening (for connection-refused tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- compressed replies


@dataclass(frozen=True)
class _GzipOf(_WireBehaviour):
    inner: _WireBehaviour

    def wire(self, ex: Exchange) -> Wire:
        wire = self.inner.wire(ex)
        body = gzip.compress(wire.body, mtime=0)
        headers = {**wire.headers, "content-encoding": "gzip"}
        return replace(wire, steps=[(0.0, body)], headers=headers, content_length=len(body))


def gzipped_reply(behaviour: Behaviour) -> Behaviour:
    """``behaviour``'s whole reply (an ``openai_error(...)``, say) sent compressed, with
    ``Content-Encoding: gzip``, as providers answer clients that accept gzip."""
    if not isinstance(behaviour, _WireBehaviour):
        raise TypeError(f"{behaviour!r} has no wire to compress")
    return _GzipOf(behaviour)


# --------------------------------------------------------------------------- negotiated compression


def accepts_gzip(values: Sequence[str]) -> bool:
    """Do these Accept-Encoding values allow gzip (RFC 9110 §12.5.3: `gzip` or `x-gzip`
    or `*` with a q above 0, a named gzip's q ruling over `*`)? No header: no, as
    providers send plain bytes to a client that names no coding."""
    named: float | None = None
    star: float | None = None
    for value in values:
        for item in value.split(","):
            coding, _, params = item.strip().partition(";")
            q = 1.0
            for param in params.split(";"):
                key, _, number = param.strip().partition("=")
                if key.strip().lower() == "q":
                    with contextlib.suppress(ValueError):
                        q = float(number)
            coding = coding.strip().lower()
            if coding in ("gzip", "x-gzip"):
                named = q
            elif coding == "*":
                star = q
    chosen = named if named is not None else star
    return chosen is not None and chosen > 0


@dataclass(frozen=True)
class _GzipIfAccepted(_WireBehaviour):
    def wire(self, ex: Exchange) -> Wire:
        wire = ex.default()
        if not accepts_gzip(ex.received.headers.getall("accept-encoding", ())):
            return wire
        body = gzip.compress(wire.body, mtime=0)
        headers = {**wire.headers, "content-encoding": "gzip"}
        return replace(wire, steps=[(0.0, body)], headers=headers, content_length=len(body))


def gzip_if_accepted() -> Behaviour:
    """The default reply (a stream too) compressed with ``Content-Encoding: gzip`` when the
    request's Accept-Encoding allows gzip, and plain otherwise, as Anthropic answers."""
    return _GzipIfAccepted()
