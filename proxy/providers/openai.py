"""OpenAI and OpenAI-compatible servers (vLLM, llama.cpp, Ollama, …)."""

from __future__ import annotations

import re
from typing import ClassVar

import msgspec

from proxy.endpoints import Wire
from proxy.providers import openai_usage
from proxy.providers.base import (
    BaseAdapter,
    EventKind,
    Incoming,
    ProviderSettings,
    UpstreamRequest,
    has_error_event,
)
from proxy.sse import FieldLine, SSEEvent, StreamEnd
from proxy.sse_transform import Transform

#: Where each Azure deployment operation lives on the plain OpenAI API.
_FROM_AZURE = {
    "chat/completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}


class OpenAIWire(BaseAdapter):
    """What every OpenAI-format provider shares: stream usage injection."""

    def build_request(
        self, incoming: Incoming, settings: ProviderSettings, model: str | None
    ) -> UpstreamRequest:
        request = super().build_request(incoming, settings, model)
        if not openai_usage.wants_injection(incoming, settings.inject_stream_usage):
            return request
        body = openai_usage.inject(request.body)
        return UpstreamRequest(request.method, request.url, request.headers, body, True)

    def stream_transform(self, request: UpstreamRequest) -> Transform | None:
        return openai_usage.strip_usage_chunk if request.usage_injected else None

    def stream_event_kind(self, event: SSEEvent) -> EventKind:
        # Chat/completions chunks: `data: {"error": ...}` is an in-band failure.
        # Responses API: `event: error` / `response.failed`; its lifecycle events
        # before the first output are opening frames.
        data = event.data
        name = event.event
        if name == "message":
            # Servers that send no `event:` lines name a Responses event only by the type
            # leading its data (as stream_finished reads their ends).
            typed = _LEADING_TYPE.match(data)
            if typed is not None and typed.group(1) in _NAMED_BY_TYPE:
                name = typed.group(1)
        if name in _ERROR_EVENTS or data.lstrip().startswith('{"error"'):
            return "error"
        if name in _RESPONSES_OPENING:
            return "opening"
        if name == "message" and _is_empty_chunk(data):
            # The first chat chunk usually carries only {"role":"assistant","content":""}.
            return "opening"
        return "content"

    def stream_finished(self, block: bytes) -> StreamEnd | None:
        # Chat/completions end with `data: [DONE]`, or in failure with an in-band
        # `data: {"error": ...}` after which OpenAI closes the stream (no [DONE]); the
        # Responses API with a terminal event, or `event: error`.
        if b"error" in block and (
            _CHAT_ERROR.matches(block) or has_error_event(block) or _TYPED_ERROR.search(block)
        ):
            return "stream_error"
        if _DONE.matches(block):
            return "completed"
        end = _RESPONSES_END.search(block) if b"response." in block else None
        if end is None:
            return None
        return "stream_error" if end.group(1) == b"failed" else "completed"


_ERROR_EVENTS = frozenset({"error", "response.failed"})
#: A Responses event's type where it leads its data, as the API writes it: what names an
#: event sent without an `event:` line.
_LEADING_TYPE = re.compile(r'\s*\{\s*"type"\s*:\s*"([^"]*)"')
#: A Responses `error` event sent without an `event:` line (a data-only
#: `response.failed` is one of _RESPONSES_END's).
_TYPED_ERROR = re.compile(rb'^data: ?\s*\{\s*"type"\s*:\s*"error"', re.MULTILINE)
_DONE = FieldLine(b"data", b"[DONE]")
#: What openai-python raises on: an event whose data is an object with an `error` member.
_CHAT_ERROR = FieldLine(b"data", b'{"error"')
#: A terminal Responses event, named on its `event:` line or only by its data's type.
_RESPONSES_END = re.compile(
    rb'(?:^event: ?|"type": ?")response\.(completed|incomplete|failed)\b', re.MULTILINE
)
_RESPONSES_OPENING = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.queued",
        "response.output_item.added",
        "response.content_part.added",
    }
)
#: The data-only events named by their leading type: only these, since some
#: OpenAI-compatible gateways lead chat chunks with `"type":"chat.completion.chunk"`.
_NAMED_BY_TYPE = _RESPONSES_OPENING | _ERROR_EVENTS


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[object] | None = None
    function_call: object | None = None
    reasoning_content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    text: str | None = None
    finish_reason: str | None = None


class _ChunkChoices(msgspec.Struct):
    choices: list[_Choice] | None = None


_decode_choices = msgspec.json.Decoder(_ChunkChoices).decode


def _is_empty_chunk(data: str) -> bool:
    """A chunk that carries no output yet: only a role, empty strings, no finish reason."""
    try:
        chunk = _decode_choices(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return bool(chunk.choices) and all(_choice_empty(c) for c in chunk.choices or ())


def _choice_empty(choice: _Choice) -> bool:
    if choice.finish_reason is not None or choice.text:
        return False
    delta = choice.delta or _Delta()
    return not (
        delta.content
        or delta.refusal
        or delta.tool_calls
        or delta.function_call
        or delta.reasoning_content
    )


class OpenAIAdapter(OpenAIWire):
    kind: ClassVar[str] = "openai"
    wire: ClassVar[Wire] = "openai"
    provider_name: ClassVar[str] = "openai"
    auth_header: ClassVar[tuple[str, str]] = ("Authorization", "Bearer ")

    def path_and_query(
        self, incoming: Incoming, settings: ProviderSettings, model: str | None
    ) -> str:
        endpoint = incoming.endpoint
        if endpoint.deployment is None:
            return super().path_and_query(incoming, settings, model)
        # An Azure-dialect client routed to a plain OpenAI deployment: the
        # api-version query means nothing there.
        return _FROM_AZURE.get(endpoint.path, "/v1/" + endpoint.path)

    def body(self, incoming: Incoming, model: str | None) -> bytes:
        if incoming.endpoint.deployment is not None and model is None:
            # Azure bodies may omit `model`; OpenAI needs it.
            model = incoming.endpoint.deployment
        return super().body(incoming, model)
