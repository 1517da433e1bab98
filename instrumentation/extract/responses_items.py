"""OpenAI Responses API objects: input/output items, the response, and their facts.

A response is one assistant turn whose output items (messages, function
calls, reasoning) become the parts of one output message. Its `status`
stands in for a finish reason, since the API has none.
"""

from __future__ import annotations

from typing import Any

import msgspec

from instrumentation import semconv as sc
from instrumentation.extract import parts
from instrumentation.extract.base import ResponseFacts, put
from instrumentation.extract.openai_common import Error, error_type

_TEXT_TYPES = ("input_text", "output_text", "text")
_REASONING_TYPES = ("reasoning_text", "summary_text")
#: `incomplete_details.reason` onto finish reasons.
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


class ContentPart(msgspec.Struct):
    type: str = ""
    text: str | None = None
    refusal: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None


class Item(msgspec.Struct):
    """An input or output item; `type` is absent on plain `{role, content}` inputs."""

    type: str | None = None
    role: str | None = None
    content: str | list[ContentPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: Any = None
    summary: list[ContentPart] | None = None


class _InputDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None


class _Incomplete(msgspec.Struct):
    reason: str | None = None


class Response(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    status: str | None = None
    error: Error | None = None
    incomplete_details: _Incomplete | None = None
    output: list[Item] | None = None
    usage: _Usage | None = None
    service_tier: str | None = None


def item_parts(item: Item) -> list[parts.Part]:
    """The parts of one output item, or of a non-message input item."""
    if item.type == "function_call":
        return [parts.tool_call(item.call_id, item.name, parts.arguments(item.arguments))]
    if item.type == "reasoning":
        return content_parts(item.summary) + content_parts(item.content)
    if item.type == "message" or item.role is not None:
        return content_parts(item.content)
    # Built-in tool calls (web_search_call, …): their kind is the useful fact.
    return [{"type": item.type or "unknown"}]


def content_parts(content: str | list[ContentPart] | None) -> list[parts.Part]:
    if isinstance(content, str):
        return [parts.text(content)]
    return [_part(part) for part in content or ()]


def _part(part: ContentPart) -> parts.Part:
    if part.type in _REASONING_TYPES and part.text is not None:
        return parts.reasoning(part.text)
    if part.text is not None and (part.type in _TEXT_TYPES or not part.type):
        return parts.text(part.text)
    if part.refusal is not None:
        return parts.text(part.refusal)
    kind = "image" if part.type == "input_image" else "document"
    url = part.image_url or part.file_url or part.file_data
    if url:
        return parts.from_url(url, kind)
    if part.file_id:
        return parts.file(kind, part.file_id)
    return {"type": part.type or "unknown"}


def finish_reason(response: Response, output: list[Item]) -> str | None:
    """`status` as a finish reason; None while the response has not finished."""
    if response.status == "completed":
        called = any(item.type == "function_call" for item in output)
        return "tool_call" if called else "stop"
    if response.status == "incomplete":
        details = response.incomplete_details
        return _INCOMPLETE.get(details.reason or "", "length") if details else "length"
    if response.status in ("failed", "cancelled"):
        return "error"
    return None


def response_facts(
    response: Response, capture: bool, assembled: list[parts.Part] | None = None
) -> ResponseFacts:
    """Facts of a response object; `assembled` parts stand in when it has no output."""
    facts = ResponseFacts(response_id=response.id or None, response_model=response.model or None)
    put(facts.attributes, sc.OPENAI_RESPONSE_SERVICE_TIER, response.service_tier)
    _apply_usage(facts, response.usage)
    if response.status == "failed":
        facts.error_type = error_type(response.error or Error())
    items = response.output or []
    finish = finish_reason(response, items)
    facts.finish_reasons = [finish or "error"]
    if capture:
        built = [part for item in items for part in item_parts(item)]
        facts.output_messages = [parts.output(built or assembled or [], finish)]
    return facts


def _apply_usage(facts: ResponseFacts, usage: _Usage | None) -> None:
    if usage is None:
        return
    # As in chat completions, input_tokens already include the cached ones.
    facts.input_tokens = usage.input_tokens
    facts.output_tokens = usage.output_tokens
    cached, reasoning = usage.input_tokens_details, usage.output_tokens_details
    facts.cache_read_input_tokens = cached.cached_tokens if cached else None
    facts.reasoning_output_tokens = reasoning.reasoning_tokens if reasoning else None
