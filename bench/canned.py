"""Canned OpenAI chat-completion payloads shared by the fake upstreams and the load clients."""

from __future__ import annotations

import json
from typing import Any

MODEL = "gpt-4o-mini"
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"
STREAM_CHUNKS = 20
#: Request header that makes the nginx upstream answer with the SSE stream.
STREAM_HEADER = "x-bench-stream"
#: Request header that makes it pass the request to the chunk-by-chunk stream upstream.
CHUNKS_HEADER = "x-bench-chunks"
#: The API key every load client sends (LiteLLM is configured with it as its master key).
CLIENT_KEY = "sk-bench-not-a-key"
#: The headers every load client sends with a chat request.
REQUEST_HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"}

_MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say hello to the benchmark in twenty words."},
]
_USAGE = {"prompt_tokens": 24, "completion_tokens": 20, "total_tokens": 44}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def chat_request(stream: bool) -> bytes:
    """The body every client sends (max_tokens/temperature exercise attribute extraction)."""
    body = {
        "model": MODEL,
        "messages": _MESSAGES,
        "max_tokens": 64,
        "temperature": 0.2,
        "stream": stream,
    }
    return _dumps(body)


def chat_completion() -> bytes:
    return _dumps(
        {
            "id": "chatcmpl-bench0001",
            "object": "chat.completion",
            "created": 1700000000,
            "model": RESPONSE_MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _words(STREAM_CHUNKS)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
        }
    )


def _words(count: int) -> str:
    return " ".join(f"word{i}" for i in range(count))


def _chunk(delta: dict[str, str], finish: str | None, usage: bool = False) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    chunk: dict[str, Any] = {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": RESPONSE_MODEL,
        "system_fingerprint": "fp_bench",
        "choices": choices,
    }
    if usage:
        chunk["usage"] = _USAGE
    return b"data: " + _dumps(chunk) + b"\n\n"


def sse_events() -> list[bytes]:
    """20 content chunks (the last one carries finish_reason), a usage chunk, `[DONE]`."""
    events = [_chunk({"role": "assistant", "content": "word0"}, None)]
    events += [_chunk({"content": f" word{i}"}, None) for i in range(1, STREAM_CHUNKS - 1)]
    events.append(_chunk({}, "stop"))
    events.append(_chunk({}, None, usage=True))
    events.append(b"data: [DONE]\n\n")
    return events


def sse_stream() -> bytes:
    return b"".join(sse_events())
