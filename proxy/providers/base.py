"""The adapter protocol: everything that differs between provider dialects.

An adapter turns the client's *original* request into the upstream request for
one target. It is a pure function of its inputs, so a retry or a failover can
call it again and get the same result.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Protocol

import msgspec
from multidict import CIMultiDict, CIMultiDictProxy

from proxy import body as bodylib
from proxy.endpoints import Endpoint, Wire
from proxy.errors import BadRequest
from proxy.headers import AUTH_HEADERS, forwardable, replace_auth, uncompressed
from proxy.sse import FieldLine, SSEEvent, StreamEnd
from proxy.sse_transform import Transform


class Incoming(msgspec.Struct, frozen=True):
    """The client's request as spangate received it."""

    method: str
    endpoint: Endpoint
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes
    fields: bodylib.RequestFields


class UpstreamRequest(msgspec.Struct, frozen=True):
    method: str
    url: str
    headers: CIMultiDict[str]
    body: bytes
    #: spangate asked for stream usage the client did not ask for (see openai_usage).
    usage_injected: bool = False


class ProviderSettings(msgspec.Struct, frozen=True):
    """The parts of a provider's config an adapter needs."""

    base_url: str
    api_key: str | None
    api_version: str | None
    headers: tuple[tuple[str, str], ...]
    inject_stream_usage: bool = False

    @property
    def client_key(self) -> bool:
        """Is the key upstream the client's own? Yes unless spangate sets one: `api_key`,
        or a key header among the configured `headers`. A 401/403 is then the caller's
        fault, not the target's (classify.classify_response)."""
        return self.api_key is None and not any(
            name.lower() in AUTH_HEADERS for name, _ in self.headers
        )


#: What an SSE event means for the commit point: held back, commits, or fails over.
EventKind = Literal["opening", "content", "error"]


class Adapter(Protocol):
    kind: ClassVar[str]
    wire: ClassVar[Wire]
    #: Default `gen_ai.provider.name`.
    provider_name: ClassVar[str]
    #: The path segment every request path this adapter sends starts with, which
    #: base_url must therefore not end in (runtime refuses `.../v1` + `/v1/...`).
    path_root: ClassVar[str]

    def build_request(
        self, incoming: Incoming, settings: ProviderSettings, model: str | None
    ) -> UpstreamRequest: ...

    def stream_transform(self, request: UpstreamRequest) -> Transform | None:
        """How to rewrite this request's SSE blocks for the client (None: unchanged)."""
        ...

    def stream_event_kind(self, event: SSEEvent) -> EventKind:
        """Classify a stream event before the commit point."""
        ...

    def stream_finished(self, block: bytes) -> StreamEnd | None:
        """The terminal event this block of events carries, if any: the stream's normal
        end ("completed") or an in-band error event ("stream_error"), after which the
        provider closes the stream."""
        ...


class BaseAdapter:
    """Shared mechanics: header filtering, key substitution, model rewrite."""

    kind: ClassVar[str]
    wire: ClassVar[Wire]
    provider_name: ClassVar[str]
    #: Header name and value prefix this dialect uses for its key.
    auth_header: ClassVar[tuple[str, str]]
    #: OpenAI and Anthropic paths, and what other kinds pass through, are `/v1/...`.
    path_root: ClassVar[str] = "/v1"

    def build_request(
        self, incoming: Incoming, settings: ProviderSettings, model: str | None
    ) -> UpstreamRequest:
        headers = self.headers(incoming, settings)
        body = self.body(incoming, model)
        url = settings.base_url + self.path_and_query(incoming, settings, model)
        return UpstreamRequest(incoming.method, url, headers, body)

    def stream_transform(self, request: UpstreamRequest) -> Transform | None:
        return None

    def stream_event_kind(self, event: SSEEvent) -> EventKind:
        return "error" if event.event == "error" else "content"

    def stream_finished(self, block: bytes) -> StreamEnd | None:
        return "stream_error" if has_error_event(block) else None

    def headers(self, incoming: Incoming, settings: ProviderSettings) -> CIMultiDict[str]:
        headers = forwardable(incoming.headers)
        if asks_stream(incoming):
            uncompressed(headers)  # a provider's `headers` may still set Accept-Encoding
        for name, value in settings.headers:
            headers[name] = value
        if settings.api_key is not None:
            name, prefix = self.auth_header
            replace_auth(headers, name, prefix + settings.api_key)
        return headers

    def body(self, incoming: Incoming, model: str | None) -> bytes:
        """The original bytes, with `model` rewritten only when routing chose another."""
        if model is None or not incoming.body or model == incoming.fields.model:
            return incoming.body
        return spliced(incoming.body, "model", model)

    def path_and_query(
        self, incoming: Incoming, settings: ProviderSettings, model: str | None
    ) -> str:
        query = f"?{incoming.query}" if incoming.query else ""
        return incoming.endpoint.path + query


def asks_stream(incoming: Incoming) -> bool:
    """Does the request ask for an event stream? Every streaming API spangate serves says
    so with the body's `"stream": true` (OpenAI chat/completions, completions and
    Responses, Azure deployments, Anthropic messages), decoded once on arrival; a
    pass-through path's body is not spangate's to read."""
    return incoming.fields.stream is True


#: `event: error` ends a stream in failure (Anthropic, the OpenAI Responses API).
_ERROR_EVENT = FieldLine(b"event", b"error")


def has_error_event(block: bytes) -> bool:
    """Does `block` hold an `event: error` event? (`b"error" in` first: one byte search
    for the blocks, nearly all, that cannot.)"""
    return b"error" in block and _ERROR_EVENT.matches(block)


def spliced(body: bytes, key: str, value: object) -> bytes:
    """`bodylib.set_member`, its refusal of an ambiguous body a 400 for the client."""
    try:
        return bodylib.set_member(body, key, value)
    except bodylib.DuplicateMember as exc:
        raise BadRequest(str(exc), param=exc.key, code="duplicate_member") from None
