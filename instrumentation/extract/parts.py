"""Message parts in the GenAI "Message content" schema, shared by every dialect.

Each dialect maps its own blocks onto these few builders, so the captured
shape is the same whichever provider answered.
"""

from __future__ import annotations

from typing import Any

import msgspec

Part = dict[str, Any]
Message = dict[str, Any]

#: Provider finish reasons onto the output-message enum. The dialects' raw
#: values do not collide, so one table serves all of them.
_FINISH = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "content_filter": "content_filter",
    "refusal": "content_filter",
    "tool_calls": "tool_call",
    "function_call": "tool_call",
    "tool_use": "tool_call",
    "tool_call": "tool_call",
    "error": "error",
}


def normalize_finish(raw: str | None) -> str:
    """Output-message finish reason; a choice that never finished is an "error".

    An unknown provider value passes through: the schema's enum is open, and
    guessing would hide a new reason from whoever reads the span.
    """
    if raw is None:
        return "error"
    return _FINISH.get(raw, raw)


def text(content: str) -> Part:
    return {"type": "text", "content": content}


def reasoning(content: str) -> Part:
    return {"type": "reasoning", "content": content}


def tool_call(call_id: str | None, name: str | None, arguments: Any) -> Part:
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def tool_response(call_id: str | None, response: Any) -> Part:
    return {"type": "tool_call_response", "id": call_id, "response": response}


def arguments(raw: str | None) -> Any:
    """Tool-call arguments as a JSON value when they parse, else the raw string.

    OpenAI sends a JSON string and Anthropic an object; parsing makes both
    look alike, and a model's invalid JSON is still worth seeing as it was.
    """
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw


def modality(mime_type: str | None, default: str) -> str:
    """image/audio/video from a MIME type; anything else keeps the block's own kind."""
    major = (mime_type or "").partition("/")[0]
    return major if major in ("image", "audio", "video") else default


def from_url(url: str, kind: str) -> Part:
    """A `data:` URL becomes a blob (its payload inline); any other URL a uri part."""
    if not url.startswith("data:"):
        return {"type": "uri", "modality": kind, "uri": url}
    header, _, payload = url[5:].partition(",")
    mime_type = header.split(";")[0] or None
    return blob(modality(mime_type, kind), mime_type, payload)


def blob(kind: str, mime_type: str | None, content: str) -> Part:
    part: Part = {"type": "blob", "modality": kind, "content": content}
    if mime_type:
        part["mime_type"] = mime_type
    return part


def file(kind: str, file_id: str, mime_type: str | None = None) -> Part:
    part: Part = {"type": "file", "modality": kind, "file_id": file_id}
    if mime_type:
        part["mime_type"] = mime_type
    return part


def message(role: str, parts: list[Part], name: str | None = None) -> Message:
    built: Message = {"role": role, "parts": parts}
    if name:
        built["name"] = name
    return built


def output(parts: list[Part], finish: str | None, role: str = "assistant") -> Message:
    return {"role": role, "parts": parts, "finish_reason": normalize_finish(finish)}
