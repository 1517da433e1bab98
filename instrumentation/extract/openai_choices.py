"""OpenAI-format completion responses, whole or streamed: `choices[]` of chat or text.

Chat (`message`, `delta`) and legacy text completions (`text`) share one
envelope, one usage object and one stream framing, so one assembler serves
both. Streamed choices are assembled by `index`, tool calls by their own
`index` within a choice.
"""

from __future__ import annotations

import msgspec

from instrumentation import semconv as sc
from instrumentation.extract import parts
from instrumentation.extract.base import ResponseFacts, decode_all
from instrumentation.extract.decoding import decode, lenient
from instrumentation.extract.openai_common import Error, Usage, apply_usage, error_type
from proxy.sse import SSEEvent


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _Function | None = None


class _TextPart(msgspec.Struct):
    text: str | None = None


class _Content(msgspec.Struct):
    """A whole `message` or a stream `delta`: the same fields, complete or in pieces."""

    role: str | None = None
    content: str | list[_TextPart] | None = None
    refusal: str | None = None
    # Reasoning text of OpenAI-compatible servers (vLLM, DeepSeek, OpenRouter).
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_ToolCall] | None = None
    function_call: _Function | None = None


class _Choice(msgspec.Struct):
    index: int | None = None
    message: _Content | None = None
    delta: _Content | None = None
    text: str | None = None
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    choices: list[_Choice] | None = None
    usage: Usage | None = None
    service_tier: str | None = None
    system_fingerprint: str | None = None
    error: Error | None = None


_decode_completion = lenient(_Completion)
_strict_completion = msgspec.json.Decoder(_Completion).decode


class _ToolBuilder:
    def __init__(self) -> None:
        self.id: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []

    def add(self, call_id: str | None, function: _Function | None) -> bool:
        self.id = call_id or self.id
        if function is None:
            return call_id is not None
        self.name = function.name or self.name
        if function.arguments:
            self.arguments.append(function.arguments)
        return bool(call_id or function.name or function.arguments)

    def part(self) -> parts.Part:
        raw = "".join(self.arguments) if self.arguments else None
        return parts.tool_call(self.id, self.name, parts.arguments(raw))


#: Key of a legacy `function_call`, kept apart from the indexed tool calls.
_FUNCTION_CALL = -1


class _ChoiceBuilder:
    def __init__(self) -> None:
        self.role = "assistant"
        self.finish: str | None = None
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tools: dict[int, _ToolBuilder] = {}

    def add(self, choice: _Choice, whole: bool) -> bool:
        """Fold one choice (or chunk of one) in; True when it carried output."""
        # Runs for every chunk of every stream: the text cases are written out inline.
        carried = False
        if choice.text:
            self._text.append(choice.text)
            carried = True
        content = choice.message or choice.delta
        if content is not None:
            carried = self._add_content(content, whole) or carried
        self.finish = choice.finish_reason or self.finish
        return carried

    def _add_content(self, content: _Content, whole: bool) -> bool:
        self.role = content.role or self.role
        carried = False
        reasoning = content.reasoning_content or content.reasoning
        if reasoning:
            self._reasoning.append(reasoning)
            carried = True
        text = content.content
        if text is not None and type(text) is not str:
            text = _text_of(text)
        if text:
            self._text.append(text)
            carried = True
        if content.refusal:
            self._text.append(content.refusal)
            carried = True
        for position, call in enumerate(content.tool_calls or ()):
            slot = self._slot(call, position if whole else None)
            carried = slot.add(call.id, call.function) or carried
        if content.function_call is not None:
            slot = self._tools.setdefault(_FUNCTION_CALL, _ToolBuilder())
            carried = slot.add(None, content.function_call) or carried
        return carried

    def _slot(self, call: _ToolCall, position: int | None) -> _ToolBuilder:
        key = call.index if call.index is not None else position
        if key is None:
            key = self._continued(call.id)
        return self._tools.setdefault(key, _ToolBuilder())

    def _continued(self, call_id: str | None) -> int:
        """Slot of an index-less delta (some compatible servers omit `index`).

        A new id opens the next call; anything else continues the latest one.
        """
        latest = max(self._tools, default=None)
        if latest is None:
            return 0
        if call_id is not None and call_id != self._tools[latest].id:
            return max(latest + 1, 0)
        return latest

    def message(self) -> parts.Message:
        built: list[parts.Part] = []
        if self._reasoning:
            built.append(parts.reasoning("".join(self._reasoning)))
        if self._text:
            built.append(parts.text("".join(self._text)))
        built += [self._tools[key].part() for key in sorted(self._tools)]
        return parts.output(built, self.finish, self.role)


def _text_of(content: str | list[_TextPart] | None) -> str | None:
    if isinstance(content, list):
        return "".join(part.text for part in content if part.text) or None
    return content


class ChoicesAssembler:
    """Facts of a completion body, or of a stream fed chunk by chunk."""

    def __init__(self, capture: bool) -> None:
        self._capture = capture
        self._facts = ResponseFacts()
        self._choices: dict[int, _ChoiceBuilder] = {}

    def body(self, body: bytes) -> ResponseFacts:
        completion = decode(body, _Completion)
        if completion is not None:
            self._fold(completion, whole=True)
        return self.finish()

    def event(self, event: SSEEvent) -> bool:
        data = event.data
        if "[DONE]" in data and data.strip() == "[DONE]":  # no copy of every chunk's text
            return False
        chunk = _decode_completion(data)
        return chunk is not None and self._fold(chunk, whole=False)

    def data_batch(self, lines: list[bytes], names: list[bytes] | None) -> list[bool] | None:
        """See base.BatchObserver: every event decoded strictly first (one C-level map),
        so a stream with an odd event is left whole to `event`. Only the closing
        `[DONE]`s are skipped here; one anywhere else fails the decode, and goes there.
        Named events are not this dialect's: they go there too."""
        if names is not None:
            return None
        end = len(lines)
        while end and lines[end - 1].strip() == b"[DONE]":
            end -= 1
        chunks = decode_all(_strict_completion, lines[:end] if end < len(lines) else lines)
        if chunks is None:
            return None
        fold = self._fold
        return [fold(chunk, False) for chunk in chunks] + [False] * (len(lines) - end)

    def _fold(self, completion: _Completion, whole: bool) -> bool:
        facts = self._facts
        # The first non-empty id and model win: Azure opens a stream with a
        # content-filter chunk whose model is "".
        facts.response_id = facts.response_id or completion.id or None
        facts.response_model = facts.response_model or completion.model or None
        # Runs for every chunk of every stream: put() written out.
        if completion.service_tier is not None:
            facts.attributes[sc.OPENAI_RESPONSE_SERVICE_TIER] = completion.service_tier
        if completion.system_fingerprint is not None:
            fingerprint = completion.system_fingerprint
            facts.attributes[sc.OPENAI_RESPONSE_SYSTEM_FINGERPRINT] = fingerprint
        if completion.usage is not None:
            apply_usage(facts, completion.usage)
        if completion.error is not None:
            facts.error_type = error_type(completion.error)
        carried = False
        for position, choice in enumerate(completion.choices or ()):
            key = choice.index if choice.index is not None else position
            builder = self._choices.get(key)
            if builder is None:
                builder = self._choices[key] = _ChoiceBuilder()
            carried = builder.add(choice, whole) or carried
        return carried

    def finish(self) -> ResponseFacts:
        facts = self._facts
        ordered = [self._choices[key] for key in sorted(self._choices)]
        facts.finish_reasons = [choice.finish or "error" for choice in ordered]
        if self._capture and ordered:
            facts.output_messages = [choice.message() for choice in ordered]
        return facts
