"""OpenAI Responses API streams: typed events, ended by a terminal response event.

`response.completed` / `.incomplete` / `.failed` carry the whole final
response (usage, output), which is authoritative. Deltas are assembled per
`output_index` only to have something to show when the stream breaks first.
"""

from __future__ import annotations

import msgspec

from instrumentation.extract import parts
from instrumentation.extract.base import ResponseFacts, fold_typed
from instrumentation.extract.decoding import lenient
from instrumentation.extract.openai_common import Error, error_type
from instrumentation.extract.responses_items import Item, Response, item_parts, response_facts
from proxy.sse import SSEEvent

_TERMINAL = ("response.completed", "response.incomplete", "response.failed")
_STARTED = ("response.created", "response.in_progress", "response.queued")
_TEXT_DELTAS = ("response.output_text.delta", "response.refusal.delta")
_REASONING_DELTAS = ("response.reasoning_summary_text.delta", "response.reasoning_text.delta")
_ARGUMENT_DELTA = "response.function_call_arguments.delta"


class _Event(msgspec.Struct):
    type: str = ""
    response: Response | None = None
    item: Item | None = None
    output_index: int | None = None
    delta: str | None = None
    # The `error` event has its code at the top level; some gateways nest it.
    code: str | int | None = None
    error: Error | None = None


#: Bound once: every event of a stream is decoded with it.
_decode_event = lenient(_Event)
#: A whole stream's events at once (data_batch): any odd one raises.
_strict_event = msgspec.json.Decoder(_Event).decode


class _ItemBuilder:
    def __init__(self) -> None:
        self.item = Item()
        self.done = False
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.arguments: list[str] = []

    def parts(self) -> list[parts.Part]:
        if self.done:
            return item_parts(self.item)
        built: list[parts.Part] = []
        if self.reasoning:
            built.append(parts.reasoning("".join(self.reasoning)))
        if self.text:
            built.append(parts.text("".join(self.text)))
        if self.item.type == "function_call":
            raw = "".join(self.arguments)
            call = self.item
            built.append(parts.tool_call(call.call_id, call.name, parts.arguments(raw)))
        return built


class ResponsesStream:
    def __init__(self, capture: bool) -> None:
        self._capture = capture
        self._response: Response | None = None
        self._finished = False
        self._error: str | None = None
        self._items: dict[int, _ItemBuilder] = {}

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
        if kind in _TERMINAL or (kind in _STARTED and not self._finished):
            self._response = decoded.response or self._response
            self._finished = self._finished or kind in _TERMINAL
        elif kind == "error":
            nested = decoded.error or Error()
            self._error = error_type(Error(nested.type, decoded.code or nested.code))
        else:
            return self._item_event(kind, decoded)
        return False

    def _item_event(self, kind: str, event: _Event) -> bool:
        builder = self._items.setdefault(event.output_index or 0, _ItemBuilder())
        if kind in ("response.output_item.added", "response.output_item.done"):
            builder.item = event.item or builder.item
            builder.done = builder.done or kind == "response.output_item.done"
            return False
        target = _target(builder, kind)
        if target is None or not event.delta:
            return False
        target.append(event.delta)
        return True

    def finish(self) -> ResponseFacts:
        if self._response is None and not self._items:
            facts = ResponseFacts()
        else:
            response = self._response or Response()
            if not self._finished:
                # A response still "in_progress" when the stream ended never finished.
                response = msgspec.structs.replace(response, status=None)
            facts = response_facts(response, self._capture, self._assembled())
        facts.error_type = self._error or facts.error_type
        return facts

    def _assembled(self) -> list[parts.Part]:
        return [part for key in sorted(self._items) for part in self._items[key].parts()]


def _target(builder: _ItemBuilder, kind: str) -> list[str] | None:
    if kind in _TEXT_DELTAS:
        return builder.text
    if kind in _REASONING_DELTAS:
        return builder.reasoning
    if kind == _ARGUMENT_DELTA:
        return builder.arguments
    return None
