"""In-band error events: how a stream that already started ends in failure."""

from __future__ import annotations

import msgspec

from proxy.endpoints import Wire

_encode = msgspec.json.encode


def stream_error_event(wire: Wire, message: str) -> bytes:
    """One complete SSE event the client's SDK raises as an API error."""
    full = f"spangate: {message}; the response is incomplete"
    if wire == "anthropic":
        data = _encode({"type": "error", "error": {"type": "api_error", "message": full}})
        return b"event: error\ndata: " + data + b"\n\n"
    error = {"message": full, "type": "server_error", "param": None, "code": "stream_interrupted"}
    return b"data: " + _encode({"error": error}) + b"\n\n"
