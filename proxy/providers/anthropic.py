"""Anthropic Messages API."""

from __future__ import annotations

from typing import ClassVar

from proxy.endpoints import Wire
from proxy.providers.base import BaseAdapter, EventKind, has_error_event
from proxy.sse import FieldLine, SSEEvent, StreamEnd

#: Frames Anthropic sends before any content: held back so a failure right
#: after them can still move to another target.
#: A content_block_start carries an empty text (or a tool name without input):
#: nothing the client could use yet, so it is held back too.
_OPENING = frozenset({"message_start", "ping", "content_block_start"})


_STOP = FieldLine(b"event", b"message_stop")


class AnthropicAdapter(BaseAdapter):
    kind: ClassVar[str] = "anthropic"
    wire: ClassVar[Wire] = "anthropic"
    provider_name: ClassVar[str] = "anthropic"
    auth_header: ClassVar[tuple[str, str]] = ("x-api-key", "")

    def stream_event_kind(self, event: SSEEvent) -> EventKind:
        if event.event == "error":
            return "error"
        return "opening" if event.event in _OPENING else "content"

    def stream_finished(self, block: bytes) -> StreamEnd | None:
        # An error event ends the stream as message_stop would: Anthropic closes it next.
        if has_error_event(block):
            return "stream_error"
        return "completed" if _STOP.matches(block) else None
