"""OpenAI Responses API requests (`/v1/responses`) and the extractor for the API.

The request's `input` is a string or a list of typed items; `instructions`
are the system prompt. Response objects live in `responses_items`, streaming
in `responses_stream`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from instrumentation import semconv as sc
from instrumentation.extract import parts
from instrumentation.extract.base import (
    AttrValue,
    GuardedExtractor,
    RequestFacts,
    ResponseFacts,
    StreamObserver,
    put,
)
from instrumentation.extract.decoding import decode
from instrumentation.extract.openai_common import Format, output_type, request_service_tier
from instrumentation.extract.responses_items import (
    Item,
    Response,
    content_parts,
    item_parts,
    response_facts,
)
from instrumentation.extract.responses_stream import ResponsesStream

_SYSTEM_ROLES = ("system", "developer")
#: Input items without a role that belong to the assistant turn they follow.
_ASSISTANT_ITEMS = ("function_call", "reasoning")


class _Text(msgspec.Struct):
    format: Format | None = None


class _Conversation(msgspec.Struct):
    id: str | None = None


class _Params(msgspec.Struct):
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool | None = None
    service_tier: str | None = None
    text: _Text | None = None
    conversation: str | _Conversation | None = None


class _RequestContent(msgspec.Struct):
    input: str | list[Item] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None


class Responses(GuardedExtractor):
    operation = "chat"

    def read_request(self, body: bytes, capture: bool) -> RequestFacts:
        params = decode(body, _Params) or _Params()
        facts = RequestFacts(attributes=_request_attributes(params))
        content = decode(body, _RequestContent) if capture else None
        if content is not None:
            _capture_request(facts, content)
        return facts

    def read_response(self, body: bytes, capture: bool) -> ResponseFacts:
        response = decode(body, Response)
        return response_facts(response, capture) if response else ResponseFacts()

    def observer(self, capture: bool) -> StreamObserver:
        return ResponsesStream(capture)


def _request_attributes(params: _Params) -> dict[str, AttrValue]:
    attributes: dict[str, AttrValue] = {sc.OPENAI_API_TYPE: "responses"}
    put(attributes, sc.GEN_AI_REQUEST_MAX_TOKENS, params.max_output_tokens)
    put(attributes, sc.GEN_AI_REQUEST_TEMPERATURE, params.temperature)
    put(attributes, sc.GEN_AI_REQUEST_TOP_P, params.top_p)
    if params.stream:
        attributes[sc.GEN_AI_REQUEST_STREAM] = True
    put(attributes, sc.OPENAI_REQUEST_SERVICE_TIER, request_service_tier(params.service_tier))
    fmt = params.text.format if params.text else None
    put(attributes, sc.GEN_AI_OUTPUT_TYPE, output_type(fmt.type if fmt else None))
    conversation = params.conversation
    if isinstance(conversation, _Conversation):
        conversation = conversation.id
    put(attributes, sc.GEN_AI_CONVERSATION_ID, conversation or None)
    return attributes


def _capture_request(facts: RequestFacts, content: _RequestContent) -> None:
    system = [parts.text(content.instructions)] if content.instructions else []
    messages: list[parts.Message] = []
    items = content.input
    if isinstance(items, str):
        messages.append(parts.message("user", [parts.text(items)]))
    for item in items if isinstance(items, list) else ():
        if item.role in _SYSTEM_ROLES:
            system += content_parts(item.content)
        else:
            _add_input_item(messages, item)
    facts.input_messages = messages or None
    facts.system_instructions = system or None
    facts.tool_definitions = content.tools or None


def _add_input_item(messages: list[parts.Message], item: Item) -> None:
    if item.type == "function_call_output":
        messages.append(parts.message("tool", [parts.tool_response(item.call_id, item.output)]))
    elif item.role is not None:
        messages.append(parts.message(item.role, content_parts(item.content)))
    elif item.type in _ASSISTANT_ITEMS:
        if messages and messages[-1]["role"] == "assistant":
            messages[-1]["parts"] += item_parts(item)
        else:
            messages.append(parts.message("assistant", item_parts(item)))
    # Other items (item_reference, built-in tool calls) point at stored
    # state rather than carry conversation content.
