"""Incremental Server-Sent Events decoding (WHATWG HTML §9.2.6), pure and I/O free.

`SSEDecoder.feed` takes bytes as they arrive, split anywhere, and returns the
events completed by them. `split_complete` finds the relay's safe flush point.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import repeat
from typing import Literal

import msgspec

#: What a stream's terminal event says: it ended whole, or with an in-band error event
#: (after which the provider closes it: nothing is missing, and nothing more is owed).
StreamEnd = Literal["completed", "stream_error"]


class SSEEvent(msgspec.Struct, frozen=True):
    event: str
    data: str


#: UTF-8's byte order mark: one at the very start of a stream is not part of it.
_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    def __init__(self) -> None:
        self._pending = b""
        self._event = ""
        self._data: list[str] = []
        #: Until the stream's first three bytes have been seen: they may be a BOM.
        self._fresh = True
        self._head = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._fresh:
            chunk = self._unmarked(chunk)
        single = self._single(chunk)
        if single is not None:
            return [single]
        if self._pending or self._data or self._event or b"\r" in chunk:
            return list(self._decode_lines(chunk))
        return self._data_events(chunk)

    def _data_events(self, chunk: bytes) -> list[SSEEvent]:
        """Several `data: ...` events in one chunk (a stream read whole, or chunks that
        arrived together), nothing pending: each cut off at its LF LF, with byte
        searches and no function call per line; the rest, if any is in another shape,
        through the line decoder."""
        events, start, size = [], 0, len(chunk)
        while start < size:
            cut = chunk.find(b"\n\n", start)
            if cut < 0 or not chunk.startswith(b"data: ", start):
                break
            if chunk.find(b"\n", start, cut) >= 0:
                break  # more than one line in this event
            events.append(SSEEvent("message", chunk[start + 6 : cut].decode("utf-8", "replace")))
            start = cut + 2
        if start < size:
            events.extend(self._decode_lines(chunk[start:]))
        return events

    def _unmarked(self, chunk: bytes) -> bytes:
        """`chunk` without the stream's leading BOM, which the spec says to ignore
        (WHATWG HTML §9.2.5); a BOM split across reads is held until it is whole."""
        head = self._head + chunk
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._head = head
            return b""
        self._fresh, self._head = False, b""
        return head.removeprefix(_BOM)

    def _single(self, chunk: bytes) -> SSEEvent | None:
        """The event of a chunk that is exactly one `data: ...` line and the blank line
        after it, with nothing pending: how OpenAI-style providers send each chunk.
        Three byte checks instead of splitting lines; None for anything else."""
        if (
            chunk.endswith(b"\n\n")
            and chunk.startswith(b"data: ")
            and chunk.find(b"\n") == len(chunk) - 2
            and b"\r" not in chunk  # a lone CR ends a line too
            and not (self._pending or self._data or self._event)
        ):
            return SSEEvent("message", chunk[6:-2].decode("utf-8", "replace"))
        return None

    def events(self, chunk: bytes) -> Iterator[SSEEvent]:
        """Like `feed`, lazily: a caller that stops early (the stream commit point stops
        at the first content event) leaves the rest of the chunk undecoded.

        The chunk is taken in pieces cut after each LF LF pair (the decoder accepts
        any split), so a whole stream arriving in one read is not cut into lines first.
        """
        if self._fresh:
            chunk = self._unmarked(chunk)
        start, size = 0, len(chunk)
        while start < size:
            cut = chunk.find(b"\n\n", start)
            end = size if cut < 0 else cut + 2
            yield from self._decode(chunk[start:end])
            start = end

    def _decode(self, chunk: bytes) -> Iterator[SSEEvent]:
        single = self._single(chunk)
        if single is not None:
            yield single
        else:
            yield from self._decode_lines(chunk)

    def _decode_lines(self, chunk: bytes) -> Iterator[SSEEvent]:
        buffer = self._pending + chunk
        lines = buffer.splitlines(keepends=True)
        # A trailing "\r" may be the first half of "\r\n" split across chunks.
        if lines and not lines[-1].endswith(b"\n"):
            self._pending = lines.pop()
        else:
            self._pending = b""
        for raw in lines:
            event = self._line(raw.rstrip(b"\r\n").decode("utf-8", "replace"))
            if event is not None:
                yield event

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent(self._event or "message", "\n".join(self._data))
        self._event, self._data = "", []
        return event


class FieldLine:
    """`matches(block)`: does a `name: value...` line (the space after the colon is
    optional in SSE) begin one of the block's lines? Only at a line's start: text in an
    event's JSON data holds no raw line break, so a model writing the same words in its
    answer never matches. A few byte searches, for a check made on every block."""

    __slots__ = ("_first", "_later")

    def __init__(self, name: bytes, value: bytes) -> None:
        self._first = (name + b": " + value, name + b":" + value)
        self._later = (b"\n" + self._first[0], b"\n" + self._first[1])

    def matches(self, block: bytes) -> bool:
        later = self._later
        return block.startswith(self._first) or later[0] in block or later[1] in block


def data_lines(block: bytes) -> list[bytes] | None:
    """The data of each event in `block`, undecoded, when the block is whole events that
    are each one `data: ` line and nothing else (how OpenAI-style providers stream):
    what SSEDecoder would give, with C-level byte operations only. None for any
    other shape (a CR, a comment, another field, a multi-line event, a partial one)."""
    if not block.startswith(b"data: ") or not block.endswith(b"\n\n") or b"\r" in block:
        return None
    lines = block[6:-2].split(b"\n\ndata: ")
    # Two LFs per event, and none inside one: each is exactly `data: ...` LF LF.
    return lines if block.count(b"\n") == 2 * len(lines) else None


def named_lines(block: bytes) -> tuple[list[bytes], list[bytes]] | None:
    """(each event's type, its data), undecoded, when the block is whole events that
    are each one `event: ` line, one `data: ` line and nothing else (how Anthropic
    streams): what SSEDecoder would give, with C-level byte operations only. None for
    any other shape."""
    if not block.startswith(b"event: ") or not block.endswith(b"\n\n") or b"\r" in block:
        return None
    events = block[7:-2].split(b"\n\nevent: ")
    # Three LFs per event, and each event holds an LF before `data: `: so each is
    # exactly `event: NAME` LF `data: ...` LF LF.
    if block.count(b"\n") != 3 * len(events) or not all(
        map(bytes.__contains__, events, repeat(b"\ndata: "))
    ):
        return None
    fields = b"\n".join(events).split(b"\n")
    names = fields[0::2]
    if not all(names):
        return None  # `event: ` with no name: the decoder calls it "message"
    return names, b"\n".join(fields[1::2])[6:].split(b"\ndata: ")


_BOUNDARIES = (b"\n\n", b"\r\n\r\n", b"\r\r")


def split_complete(buffer: bytes) -> int:
    """Length of the prefix of `buffer` made of complete events (0 if none)."""
    if buffer.endswith(_BOUNDARIES):  # the usual case, without three backward scans
        return len(buffer)
    end = 0
    for boundary in _BOUNDARIES:
        index = buffer.rfind(boundary)
        if index >= 0:
            end = max(end, index + len(boundary))
    return end
