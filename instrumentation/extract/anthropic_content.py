"""Anthropic Messages content: blocks, usage and the message object, and their parts.

Anthropic reports `input_tokens` without the cached ones, so input usage is
the sum of plain, cache-read and cache-creation tokens.
"""

from __future__ import annotations

from typing import Any

import msgspec

from instrumentation import semconv as sc
from instrumentation.extract import parts
from instrumentation.extract.base import ResponseFacts

_TOOL_CALLS = ("tool_use", "server_tool_use", "mcp_tool_use")


class Source(msgspec.Struct):
    type: str = ""
    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    file_id: str | None = None


class Block(msgspec.Struct):
    type: str = ""
    text: str | None = None
    thinking: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: Any = None
    source: Source | None = None


class Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class ErrorBody(msgspec.Struct):
    type: str | None = None


class Message(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    role: str | None = None
    content: list[Block] | None = None
    stop_reason: str | None = None
    usage: Usage | None = None
    #: A 200 body can still be `{"type": "error", "error": {...}}`.
    error: ErrorBody | None = None


def message_facts(message: Message) -> ResponseFacts:
    """Identity, usage and in-band error of a message (whole, or a stream's so far)."""
    facts = ResponseFacts(response_id=message.id or None, response_model=message.model or None)
    if message.usage is not None:
        apply_usage(facts, message.usage)
    if message.error is not None:
        facts.error_type = message.error.type or sc.ERROR_TYPE_OTHER
    return facts


def apply_usage(facts: ResponseFacts, usage: Usage) -> None:
    counts = (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens)
    known = [count for count in counts if count is not None]
    facts.input_tokens = sum(known) if known else None
    facts.output_tokens = usage.output_tokens
    facts.cache_read_input_tokens = usage.cache_read_input_tokens
    facts.cache_creation_input_tokens = usage.cache_creation_input_tokens


def block_parts(content: str | list[Block] | None) -> list[parts.Part]:
    if isinstance(content, str):
        return [parts.text(content)]
    return [block_part(block) for block in content or ()]


def block_part(block: Block) -> parts.Part:
    if block.type == "text":
        return parts.text(block.text or "")
    if block.type == "thinking":
        return parts.reasoning(block.thinking or "")
    if block.type in _TOOL_CALLS:
        return parts.tool_call(block.id, block.name, block.input)
    if block.tool_use_id is not None:
        # tool_result and the server tools' *_tool_result blocks.
        return parts.tool_response(block.tool_use_id, block.content)
    if block.source is not None:
        return _source_part(block.source, "image" if block.type == "image" else "document")
    return {"type": block.type or "unknown"}


def _source_part(source: Source, kind: str) -> parts.Part:
    if source.type == "text" and source.data is not None:
        return parts.text(source.data)
    if source.type == "base64" and source.data is not None:
        return parts.blob(parts.modality(source.media_type, kind), source.media_type, source.data)
    if source.url:
        return {"type": "uri", "modality": kind, "uri": source.url}
    if source.file_id:
        return parts.file(kind, source.file_id)
    return {"type": kind}
