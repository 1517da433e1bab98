"""The facts extractors produce, the protocols they meet, and the never-raise guard.

Extractors run on the telemetry worker thread over bodies spangate relayed
unchanged. A provider extension, a truncated stream or a client's garbage must
cost at most some facts, never the telemetry of the request, so every public
entry point goes through the guard below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import chain, compress, repeat
from operator import itemgetter
from typing import Any, Protocol, TypeVar

import msgspec

from proxy.sse import SSEDecoder, SSEEvent, data_lines, named_lines

AttrValue = str | bool | int | float | list[str] | list[int] | list[float]


class RequestFacts(msgspec.Struct):
    #: gen_ai.request.*, gen_ai.output.type, gen_ai.conversation.id, openai.*:
    #: never the model, operation or provider, which the caller knows better.
    attributes: dict[str, AttrValue] = {}
    input_messages: list[dict[str, Any]] | None = None
    system_instructions: list[dict[str, Any]] | None = None
    tool_definitions: list[dict[str, Any]] | None = None


class ResponseFacts(msgspec.Struct):
    response_id: str | None = None
    response_model: str | None = None
    #: Provider raw values, one per choice; "error" for a choice that never finished.
    finish_reasons: list[str] = []
    #: Includes cached tokens, whatever the provider's own convention.
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    reasoning_output_tokens: int | None = None
    attributes: dict[str, AttrValue] = {}
    output_messages: list[dict[str, Any]] | None = None
    #: In-band error carried by a successful (2xx) response or stream.
    error_type: str | None = None
    output_chunks: int = 0


class StreamObserver(Protocol):
    def event(self, event: SSEEvent) -> bool:
        """Feed one SSE event; True when it carried output content."""
        ...

    def finish(self) -> ResponseFacts: ...


class BatchObserver(StreamObserver, Protocol):
    def data_batch(self, lines: list[bytes], names: list[bytes] | None) -> list[bool] | None:
        """Fold a whole stream's event data at once, with each event's type when the
        stream names them (sse.named_lines; None: sse.data_lines, all "message"): per
        event, whether it carried output content. None, having folded nothing, when
        some event needs `event`'s lenient path."""
        ...


_BLOCK = itemgetter(1)
_STAMP = itemgetter(0)
_E = TypeVar("_E")


#: (each read's bytes, each event's data, each event's type or None for all "message")
_Cut = tuple[list[bytes], list[bytes], list[bytes] | None]


def _whole_events(reads: Sequence[tuple[int, bytes]]) -> _Cut | None:
    """The stream cut into events when every read is whole events of one `data:` line,
    each after one `event:` line or none; else None."""
    try:
        blocks = list(map(_BLOCK, reads))
        # Each read ends an event, so the stream's events are the reads' in turn.
        if not all(map(bytes.endswith, blocks, repeat(b"\n\n"))):
            return None
        stream = b"".join(blocks)
        lines = data_lines(stream)
        if lines is not None:
            return blocks, lines, None
        named = named_lines(stream)
    except Exception:  # not bytes (a record from elsewhere): the decoder's path
        return None
    return None if named is None else (blocks, named[1], named[0])


def decode_all(decode: Callable[[bytes], _E], lines: list[bytes]) -> list[_E] | None:
    """Every event's data decoded strictly, in one C-level map, before any is folded:
    None when one is refused, so that a stream with an odd event is left whole to the
    observer's lenient `event`."""
    try:
        return list(map(decode, lines))
    except (msgspec.MsgspecError, RecursionError):
        return None  # RecursionError: nested deeper than the decoder follows


def fold_typed(
    decode: Callable[[bytes], _E],
    fold: Callable[[_E, str], bool],
    lines: list[bytes],
    names: list[bytes] | None,
) -> list[bool] | None:
    """`data_batch` for a dialect whose events carry their type in their data, the
    event's name standing in when they do not (Anthropic's, the Responses API's):
    every event decoded first (decode_all), then each folded with its name."""
    decoded = decode_all(decode, lines)
    if decoded is None:
        return None
    kinds: Iterable[str] = (
        b"\n".join(names).decode("utf-8", "replace").split("\n")
        if names is not None
        else repeat("message")
    )
    return list(map(fold, decoded, kinds))


class Extractor(Protocol):
    operation: str

    def request(self, body: bytes, capture: bool) -> RequestFacts: ...

    def response(self, body: bytes, capture: bool) -> ResponseFacts: ...

    def stream(self, capture: bool) -> GuardedObserver: ...


class GuardedExtractor:
    """Implements the Extractor protocol over `read_*` methods that may raise.

    The decoders are lenient already; the guard is for what they cannot
    foresee (deep nesting, a bug on an odd shape), because a telemetry failure
    must never surface on the worker thread as lost records.
    """

    operation = ""

    def read_request(self, body: bytes, capture: bool) -> RequestFacts:
        raise NotImplementedError

    def read_response(self, body: bytes, capture: bool) -> ResponseFacts:
        raise NotImplementedError

    def observer(self, capture: bool) -> StreamObserver:
        raise NotImplementedError

    def request(self, body: bytes, capture: bool) -> RequestFacts:
        try:
            return self.read_request(body, capture)
        except Exception:
            return RequestFacts()

    def response(self, body: bytes, capture: bool) -> ResponseFacts:
        try:
            return self.read_response(body, capture)
        except Exception:
            return ResponseFacts()

    def stream(self, capture: bool) -> GuardedObserver:
        try:
            return GuardedObserver(self.observer(capture))
        except Exception:
            return GuardedObserver(NullObserver())


class GuardedObserver:
    """Never raises, and counts the content-carrying events for every dialect at once."""

    def __init__(self, inner: StreamObserver) -> None:
        self._inner = inner
        self._chunks = 0
        self._broken = False

    def event(self, event: SSEEvent) -> bool:
        if self._broken:
            return False
        try:
            carried = self._inner.event(event)
        except Exception:
            # The observer's state may be half-updated: stop feeding it rather
            # than build facts on top of an inconsistent assembly.
            self._broken = True
            return False
        self._chunks += carried
        return carried

    def carried(self, events: list[SSEEvent]) -> int:
        """Feed `events` (one read's worth) as `event` would, one guard for all of them;
        how many carried output content."""
        if self._broken:
            return 0
        inner, carried = self._inner, 0
        try:
            for event in events:
                carried += inner.event(event)
        except Exception:
            self._broken = True
        self._chunks += carried
        return carried

    def stamps(self, reads: Sequence[tuple[int, bytes]]) -> list[int]:
        """Feed a stream read by read, (arrival stamp, bytes): the stamp of each event
        that carried output content. A stream of one-line `data:` events (each after
        one `event:` line or none) goes to the observer's `data_batch` when it has one
        (decoding and folding event by event were half a stream record's cost on the
        worker); anything else, event by event."""
        batched = self._batched(reads)
        if batched is not None:
            return batched
        decoder = SSEDecoder()
        stamps: list[int] = []
        try:
            for stamp, block in reads:
                carried = self.carried(decoder.feed(block))
                if carried:
                    stamps += [stamp] * carried
        except Exception:  # a read that is not bytes: the stamps so far stand
            self._broken = True
        return stamps

    def _batched(self, reads: Sequence[tuple[int, bytes]]) -> list[int] | None:
        batch = getattr(self._inner, "data_batch", None)
        if batch is None or self._broken:
            return None
        cut = _whole_events(reads)
        if cut is None:
            return None
        blocks, lines, names = cut
        try:
            flags = batch(lines, names)
        except Exception:
            self._broken = True
            return []
        if flags is None:
            return None
        # One `data:` line per event (and no other LF LF), so a read's LF LF pairs are
        # its events.
        counts = map(bytes.count, blocks, repeat(b"\n\n"))
        per_event = chain.from_iterable(map(repeat, map(_STAMP, reads), counts))
        stamps = list(compress(per_event, flags))
        self._chunks += len(stamps)
        return stamps

    def finish(self) -> ResponseFacts:
        try:
            facts = self._inner.finish()
        except Exception:
            facts = ResponseFacts()
        facts.output_chunks = self._chunks
        return facts


class NullObserver:
    """For APIs that do not stream (embeddings): nothing is content, nothing is learnt."""

    def event(self, event: SSEEvent) -> bool:
        return False

    def finish(self) -> ResponseFacts:
        return ResponseFacts()


def put(attributes: dict[str, AttrValue], key: str, value: AttrValue | None) -> None:
    """Set `key` only when the body carried a value: absent is not the same as default."""
    if value is not None:
        attributes[key] = value
