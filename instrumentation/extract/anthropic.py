"""Anthropic Messages requests (`/v1/messages`) and the extractor for the API.

Content blocks and usage live in `anthropic_content`, streaming in
`anthropic_stream`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from instrumentation import semconv as sc
from instrumentation.extract import parts
from instrumentation.extract.anthropic_content import Block, Message, block_parts, message_facts
from instrumentation.extract.anthropic_stream import MessagesStream
from instrumentation.extract.base import (
    AttrValue,
    GuardedExtractor,
    RequestFacts,
    ResponseFacts,
    StreamObserver,
    put,
)
from instrumentation.extract.decoding import decode
from instrumentation.extract.openai_common import Format, output_type


class _OutputConfig(msgspec.Struct):
    format: Format | None = None


class _Params(msgspec.Struct):
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    # Structured outputs: `output_format` in the beta, `output_config.format` since.
    output_format: Format | None = None
    output_config: _OutputConfig | None = None


class _Message(msgspec.Struct):
    role: str = ""
    content: str | list[Block] | None = None


class _RequestContent(msgspec.Struct):
    messages: list[_Message] | None = None
    system: str | list[Block] | None = None
    tools: list[dict[str, Any]] | None = None


class Messages(GuardedExtractor):
    operation = "chat"

    def read_request(self, body: bytes, capture: bool) -> RequestFacts:
        params = decode(body, _Params) or _Params()
        facts = RequestFacts(attributes=_request_attributes(params))
        content = decode(body, _RequestContent) if capture else None
        if content is not None:
            facts.input_messages = [
                parts.message(m.role, block_parts(m.content))
                for m in content.messages or ()
                if m.role
            ] or None
            facts.system_instructions = block_parts(content.system) or None
            facts.tool_definitions = content.tools or None
        return facts

    def read_response(self, body: bytes, capture: bool) -> ResponseFacts:
        message = decode(body, Message)
        if message is None:
            return ResponseFacts()
        facts = message_facts(message)
        if message.id is not None or message.stop_reason is not None:
            facts.finish_reasons = [message.stop_reason or "error"]
            if capture:
                content = block_parts(message.content)
                facts.output_messages = [parts.output(content, message.stop_reason)]
        return facts

    def observer(self, capture: bool) -> StreamObserver:
        return MessagesStream(capture)


def _request_attributes(params: _Params) -> dict[str, AttrValue]:
    attributes: dict[str, AttrValue] = {}
    put(attributes, sc.GEN_AI_REQUEST_MAX_TOKENS, params.max_tokens)
    put(attributes, sc.GEN_AI_REQUEST_TEMPERATURE, params.temperature)
    put(attributes, sc.GEN_AI_REQUEST_TOP_P, params.top_p)
    put(attributes, sc.GEN_AI_REQUEST_TOP_K, params.top_k)
    put(attributes, sc.GEN_AI_REQUEST_STOP_SEQUENCES, params.stop_sequences or None)
    if params.stream:
        attributes[sc.GEN_AI_REQUEST_STREAM] = True
    fmt = params.output_format or (params.output_config.format if params.output_config else None)
    put(attributes, sc.GEN_AI_OUTPUT_TYPE, output_type(fmt.type if fmt else None))
    return attributes
