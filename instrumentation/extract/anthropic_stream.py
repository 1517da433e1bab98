"""Anthropic Messages streams: message_start, content blocks by index, message_delta.

Usage arrives in two places: `message_start` (input and cache tokens, a
placeholder output count) and `message_delta` (output tokens, cumulative;
newer API versions repeat the input counts there too). The latest value of
each field wins.
"""

from __future__ import annotations

import msgspec

from instrumentation import semconv as sc
from instrumentation.extract import parts
from instrumentation.extract.anthropic_content import (
    Block,
    ErrorBody,
    Message,
    Usage,
    block_part,
    message_facts,
)
from instrumentation.extract.base import ResponseFacts, fold_typed
from instrumentation.extract.decoding import lenient
from proxy.sse import SSEEvent


class _Delta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    stop_reason: str | None = None


class _Event(msgspec.Struct):
    type: str = ""
    message: Message | None = None
    index: int | None = None
    content_block: Block | None = None
    delta: _Delta | None = None
    usage: Usage | None = None
    error: ErrorBody | None = None


#: Bound once: every event of a stream is decoded with it.
_decode_event = lenient(_Event)
#: A whole stream's events at once (data_batch): any odd one raises.
_strict_event = msgspec.json.Decoder(_Event).decode


class _BlockBuilder:
    def __init__(self, start: Block) -> None:
        self.start = start
        self.pieces: list[str] = []

    def add(self, delta: _Delta) -> bool:
        piece = {
            "text_delta": delta.text,
            "thinking_delta": delta.thinking,
            "input_json_delta": delta.partial_json,
        }.get(delta.type or "")
        if piece:
            self.pieces.append(piece)
        return bool(piece)

    def part(self) -> parts.Part:
        start, joined = self.start, "".join(self.pieces)
        if start.type == "text":
            start = msgspec.structs.replace(start, text=(start.text or "") + joined)
        elif start.type == "thinking":
            start = msgspec.structs.replace(start, thinking=(start.thinking or "") + joined)
        elif self.pieces:
            # Tool input streams as JSON text; the start block holds only `{}`.
            start = msgspec.structs.replace(start, input=parts.arguments(joined))
        return block_part(start)


class MessagesStream:
    def __init__(self, capture: bool) -> None:
        self._capture = capture
        self._message: Message | None = None
        self._usage = Usage()
        self._stop_reason: str | None = None
        self._error: str | None = None
        self._blocks: dict[int, _BlockBuilder] = {}

    def event(self, event: SSEEvent) -> bool:
        decoded = _decode_event(event.data)
        if decoded is None:
            return False
        return self._fold(decoded, event.event)

    def data_batch(self, lines: list[bytes], names: list[bytes] | None) -> list[bool] | None:
        """See base.BatchObserver."""
        return fold_typed(_strict_event, self._fold, lines, names)

    def _fold(self, decoded: _Event, named: str) -> bool:
        kind = decoded.type or named
        if kind == "message_start" and decoded.message is not None:
            self._message = decoded.message
            self._merge_usage(decoded.message.usage)
        elif kind == "content_block_start" and decoded.content_block is not None:
            self._blocks[decoded.index or 0] = _BlockBuilder(decoded.content_block)
        elif kind == "content_block_delta" and decoded.delta is not None:
            builder = self._blocks.setdefault(decoded.index or 0, _BlockBuilder(Block()))
            return builder.add(decoded.delta)
        elif kind == "message_delta":
            self._stop_reason = (decoded.delta and decoded.delta.stop_reason) or self._stop_reason
            self._merge_usage(decoded.usage)
        elif kind == "error":
            error = decoded.error or ErrorBody()
            self._error = error.type or sc.ERROR_TYPE_OTHER
        return False

    def _merge_usage(self, usage: Usage | None) -> None:
        if usage is None:
            return
        merged = {
            field: getattr(usage, field) if getattr(usage, field) is not None else old
            for field, old in msgspec.structs.asdict(self._usage).items()
        }
        self._usage = Usage(**merged)

    def finish(self) -> ResponseFacts:
        message = self._message
        if message is None:
            facts = ResponseFacts()
        else:
            facts = message_facts(msgspec.structs.replace(message, usage=self._usage))
            facts.finish_reasons = [self._stop_reason or "error"]
            if self._capture:
                built = [self._blocks[key].part() for key in sorted(self._blocks)]
                facts.output_messages = [parts.output(built, self._stop_reason)]
        facts.error_type = self._error or facts.error_type
        return facts
