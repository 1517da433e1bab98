"""In-band error events: how a stream that already started ends in failure."""

from __future__ import annotations

import re

import msgspec

from proxy.endpoints import StreamErrors

_encode = msgspec.json.encode
_SEQUENCE_KEY = b'"sequence_number"'
#: The key, then its value (a JSON string holds no bare `"`, so the key cannot be text).
_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d+)')


def stream_error_event(kind: StreamErrors, message: str, relayed: bytes = b"") -> bytes:
    """One complete SSE event the client's SDK raises as an API error. `relayed` is the
    last block of events the client got (a Responses error event numbers itself after it)."""
    full = f"spangate: {message}; the response is incomplete"
    if kind == "anthropic":
        data = _encode({"type": "error", "error": {"type": "api_error", "message": full}})
        return b"event: error\ndata: " + data + b"\n\n"
    error = {"message": full, "type": "server_error", "param": None, "code": "stream_interrupted"}
    if kind == "openai_responses":
        return b"event: error\ndata: " + _encode(_responses_error(error, relayed)) + b"\n\n"
    return b"data: " + _encode({"error": error}) + b"\n\n"


def _responses_error(error: dict[str, str | None], relayed: bytes) -> dict[str, object]:
    """The Responses API's `error` event in both of its shapes: the flat fields its
    reference documents (type, code, message, param, sequence_number) and the nested
    `error` object the live API sends, which is what makes openai-python raise (given
    only the flat fields it yields the event and the failure goes unnoticed)."""
    event: dict[str, object] = {
        "type": "error",
        "code": error["code"],
        "message": error["message"],
        "param": None,
    }
    sequence = _next_sequence(relayed)
    if sequence is not None:
        event["sequence_number"] = sequence
    event["error"] = error
    return event


def _next_sequence(relayed: bytes) -> int | None:
    """One past the last sequence_number the client got, or None when the last events
    relayed carried none (a provider that does not number its events, or no event yet):
    spangate does not invent one."""
    at = relayed.rfind(_SEQUENCE_KEY)
    found = _SEQUENCE.match(relayed, at) if at >= 0 else None
    return int(found.group(1)) + 1 if found is not None else None
