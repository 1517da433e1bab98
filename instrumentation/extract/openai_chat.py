"""OpenAI chat completions (`/v1/chat/completions`, also Azure OpenAI and compatible servers)."""

from __future__ import annotations

from typing import Any

import msgspec

from instrumentation import semconv as sc
from instrumentation.extract import parts
from instrumentation.extract.base import (
    GuardedExtractor,
    RequestFacts,
    ResponseFacts,
    StreamObserver,
)
from instrumentation.extract.decoding import decode
from instrumentation.extract.openai_choices import ChoicesAssembler
from instrumentation.extract.openai_common import SamplingParams, sampling_attributes

#: Roles whose messages are instructions rather than conversation.
_SYSTEM_ROLES = ("system", "developer")


class _URL(msgspec.Struct):
    url: str | None = None


class _Audio(msgspec.Struct):
    data: str | None = None
    format: str | None = None


class _File(msgspec.Struct):
    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None


class _InPart(msgspec.Struct):
    type: str = ""
    text: str | None = None
    refusal: str | None = None
    # Some clients send the URL string itself rather than {"url": ...}.
    image_url: _URL | str | None = None
    input_audio: _Audio | None = None
    file: _File | None = None


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    id: str | None = None
    function: _Function | None = None


class _Message(msgspec.Struct):
    role: str = ""
    content: str | list[_InPart] | None = None
    name: str | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: _Function | None = None


class _ChatContent(msgspec.Struct):
    messages: list[_Message] | None = None
    tools: list[dict[str, Any]] | None = None
    #: The deprecated predecessor of `tools`, still sent by older clients.
    functions: list[dict[str, Any]] | None = None


class ChatCompletions(GuardedExtractor):
    operation = "chat"

    def read_request(self, body: bytes, capture: bool) -> RequestFacts:
        params = decode(body, SamplingParams) or SamplingParams()
        attributes = sampling_attributes(params)
        attributes[sc.OPENAI_API_TYPE] = "chat_completions"
        facts = RequestFacts(attributes=attributes)
        content = decode(body, _ChatContent) if capture else None
        if content is not None:
            _capture_content(facts, content)
        return facts

    def read_response(self, body: bytes, capture: bool) -> ResponseFacts:
        return ChoicesAssembler(capture).body(body)

    def observer(self, capture: bool) -> StreamObserver:
        return ChoicesAssembler(capture)


def _capture_content(facts: RequestFacts, content: _ChatContent) -> None:
    system: list[parts.Part] = []
    messages: list[parts.Message] = []
    for message in content.messages or ():
        if not message.role:
            continue  # salvaged from a malformed message: nothing to attribute it to
        if message.role in _SYSTEM_ROLES:
            system += _content_parts(message.content)
        else:
            messages.append(parts.message(message.role, _parts(message), message.name))
    facts.input_messages = messages or None
    facts.system_instructions = system or None
    facts.tool_definitions = (content.tools or []) + (content.functions or []) or None


def _parts(message: _Message) -> list[parts.Part]:
    if message.role in ("tool", "function"):
        # A tool result: the whole content is the response to one call. The
        # legacy `function` role has a name but no call id.
        response: Any = _plain(message.content)
        return [parts.tool_response(message.tool_call_id, response)]
    built = _content_parts(message.content)
    for call in message.tool_calls or ():
        function = call.function or _Function()
        built.append(parts.tool_call(call.id, function.name, parts.arguments(function.arguments)))
    legacy = message.function_call
    if legacy is not None:
        built.append(parts.tool_call(None, legacy.name, parts.arguments(legacy.arguments)))
    return built


def _plain(content: str | list[_InPart] | None) -> str | None:
    if isinstance(content, list):
        return "".join(part.text or "" for part in content)
    return content


def _content_parts(content: str | list[_InPart] | None) -> list[parts.Part]:
    if isinstance(content, str):
        return [parts.text(content)]
    return [_part(part) for part in content or ()]


def _part(part: _InPart) -> parts.Part:
    if part.text is not None:
        return parts.text(part.text)
    if part.refusal is not None:
        return parts.text(part.refusal)
    image = part.image_url
    url = image if isinstance(image, str) else image.url if image else None
    if url:
        return parts.from_url(url, "image")
    audio = part.input_audio
    if audio is not None and audio.data:
        return parts.blob("audio", f"audio/{audio.format}" if audio.format else None, audio.data)
    if part.file is not None:
        return _file(part.file)
    return {"type": part.type or "unknown"}


def _file(file: _File) -> parts.Part:
    if file.file_id:
        return parts.file("document", file.file_id)
    if file.file_data:
        return parts.from_url(file.file_data, "document")
    return {"type": "file"}
