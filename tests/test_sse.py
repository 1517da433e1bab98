"""Incremental SSE decoding, independent of how the bytes are split."""

from __future__ import annotations

import random

import pytest

from proxy.sse import SSEDecoder, SSEEvent, data_lines, named_lines, split_complete

STREAM = (
    b'event: message_start\ndata: {"a":1}\n\n'
    b": keep-alive comment\n\n"
    b"data: line one\r\ndata: line two\r\n\r\n"
    b"event: ping\ndata:{}\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent("message_start", '{"a":1}'),
    SSEEvent("message", "line one\nline two"),
    SSEEvent("ping", "{}"),
    SSEEvent("message", "[DONE]"),
]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_events_are_the_same_for_any_chunking(size: int) -> None:
    """Splitting the stream anywhere (even inside CRLF) yields the same events."""
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for start in range(0, len(STREAM), size):
        events += decoder.feed(STREAM[start : start + size])
    assert events == EXPECTED


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("size", [1, 2, 4, len(STREAM) + 3])
def test_a_leading_byte_order_mark_is_ignored_however_the_stream_is_split(size: int) -> None:
    """One BOM at the start of a stream is not part of it (the spec says to ignore it),
    even when it arrives a byte at a time, through both `feed` and `events`."""
    marked = BOM + STREAM
    for decode in ("feed", "events"):
        decoder = SSEDecoder()
        events: list[SSEEvent] = []
        for start in range(0, len(marked), size):
            events += getattr(decoder, decode)(marked[start : start + size])
        assert events == EXPECTED


def test_only_the_first_byte_order_mark_is_ignored() -> None:
    """A BOM later in the stream, or a second one at its start, is content: the first
    field name then starts with it and the event is not a `data:` one."""
    decoder = SSEDecoder()
    assert decoder.feed(BOM + b"data: a\n\n") == [SSEEvent("message", "a")]
    assert decoder.feed(b"data: " + BOM + b"b\n\n") == [SSEEvent("message", "\ufeffb")]
    assert SSEDecoder().feed(BOM + BOM + b"data: a\n\n") == []


def test_bytes_that_only_begin_like_a_byte_order_mark_are_kept() -> None:
    """A first read that is a BOM's first byte followed by something else is data."""
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef") == []
    assert decoder.feed(b"data: x\n\n") == []  # the field name is "\ufffddata"
    assert decoder.feed(b"data: y\n\n") == [SSEEvent("message", "y")]


def test_split_complete_finds_the_last_event_boundary() -> None:
    """The relay flushes only whole events; a partial one waits."""
    assert split_complete(b'data: 1\n\ndata: {"par') == len(b"data: 1\n\n")
    assert split_complete(b"data: partial") == 0
    assert split_complete(b"data: 1\r\n\r\n") == len(b"data: 1\r\n\r\n")
    # Ending on a boundary of any kind (the usual case, answered from the tail alone).
    for whole in (b"data: 1\n\ndata: 2\n\n", b"data: 1\r\rdata: 2\r\r", b"data: 1\r\n\n"):
        assert split_complete(whole) == len(whole)
    assert split_complete(b"data: 1\r\rdata: 2\n\ndata: 3\r\n") == len(b"data: 1\r\rdata: 2\n\n")


class _Reference:
    """The decoder as first written, line by line for every input: the rule."""

    def __init__(self) -> None:
        self._pending, self._event = b"", ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buffer = self._pending + chunk
        lines = buffer.splitlines(keepends=True)
        self._pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        out = []
        for raw in lines:
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if not line:
                if self._data:
                    out.append(SSEEvent(self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    self._data.append(value)
                elif name == "event":
                    self._event = value
        return out


_PIECES = [
    b"data: ", b"data:", b"data:  ", b"event: ", b"event:", b": c", b"id: 1", b"x", b'{"a":1}',
    b"\n", b"\n", b"\n\n", b"\n\n\n", b"\r\n", b"\r", b"\r\n\r\n", "é".encode(), b"\xff", b"data",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(40))
def test_decoding_equals_the_line_by_line_rule_for_random_streams_and_chunkings(
    seed: int,
) -> None:
    """Any framing (CR, CRLF, comments, multi-line data, event names, bad UTF-8), split
    anywhere, gives the events of the plain line-by-line rule: a guard for any faster
    decoder: chunks are also cut right after an LF LF, as providers send one event per
    chunk, which is what the single-event path takes, and fed whole, which is what the
    several-events path takes (a stream read in one piece, events that arrived together)."""
    rng = random.Random(seed)
    stream = b"".join(rng.choice(_PIECES) for _ in range(rng.randrange(1, 120)))
    if seed % 2:  # half of them mostly in providers' shape
        stream = b"".join(b'data: {"i":%d}\n\n' % i for i in range(20)) + stream
    fast, lazy, reference = SSEDecoder(), SSEDecoder(), _Reference()
    got: list[SSEEvent] = []
    got_lazily: list[SSEEvent] = []  # `events`, which takes a chunk piece by piece
    expected: list[SSEEvent] = []
    position = 0
    while position < len(stream):
        size = rng.choice([1, 2, 5, 17, 64, 400, 0, len(stream)])
        if size == 0:  # up to the next LF LF: one whole event, as providers send them
            boundary = stream.find(b"\n\n", position)
            size = boundary + 2 - position if boundary >= 0 else len(stream) - position
        chunk = stream[position : position + size]
        got += fast.feed(chunk)
        got_lazily += lazy.events(chunk)
        expected += reference.feed(chunk)
        position += size
    got += fast.feed(b"\n\n")  # whatever was pending ends the same way in both
    got_lazily += lazy.events(b"\n\n")
    expected += reference.feed(b"\n\n")
    assert got == expected
    assert got_lazily == expected


def test_several_events_in_one_chunk_in_any_shape_decode_as_line_by_line() -> None:
    """The several-events path stops at the first event that is not one `data: ` line
    (a comment, `data:` without its space, an event name) and hands the rest on."""
    chunk = b"data: a\n\n: c\n\ndata:b\n\nevent: e\ndata: c\n\ndata: d\n\n"
    assert SSEDecoder().feed(chunk) == [
        SSEEvent("message", "a"),
        SSEEvent("message", "b"),
        SSEEvent("e", "c"),
        SSEEvent("message", "d"),
    ]


@pytest.mark.parametrize("seed", range(40))
def test_data_lines_gives_what_the_decoder_gives_or_nothing(seed: int) -> None:
    """For any read of whole events (random framing, as above), `data_lines` either
    gives exactly the data of the decoder's events, all "message", or refuses."""
    rng = random.Random(seed)
    block = b"".join(rng.choice(_PIECES) for _ in range(rng.randrange(1, 40)))
    if seed % 2:
        block = b"".join(b'data: {"i":%d}\n\n' % i for i in range(rng.randrange(1, 5))) + block
    block += b"\n\n"  # a read the relay passes on ends an event
    lines = data_lines(block)
    if lines is not None:
        assert [SSEEvent("message", line.decode("utf-8", "replace")) for line in lines] == (
            SSEDecoder().feed(block)
        )


@pytest.mark.parametrize(
    "block",
    [
        b'data: {"a":1}\n\n',
        b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n',
        b"data:  two spaces keep one\n\n",
        b"data: \n\n",
    ],
)
def test_data_lines_takes_one_line_data_events(block: bytes) -> None:
    lines = data_lines(block)
    assert lines is not None
    assert [SSEEvent("message", line.decode()) for line in lines] == SSEDecoder().feed(block)


@pytest.mark.parametrize(
    "block",
    [
        b'data: {"a":1}\r\n\r\n',  # CR
        b": keep-alive\n\ndata: x\n\n",  # a comment
        b"event: delta\ndata: x\n\n",  # a named event
        b"data: x\n\nid: 7\ndata: y\n\n",  # another field
        b"data: a\ndata: b\n\n",  # a two-line event
        b"data:x\n\n",  # no space after the colon
        b"data: x\n\ndata:y\n\n",
        b"data: x\n",  # an event not ended
        b"",
    ],
)
def test_data_lines_refuses_any_other_shape(block: bytes) -> None:
    assert data_lines(block) is None


_NAMED = [
    b'event: content_block_delta\ndata: {"type":"content_block_delta"}\n\n',
    b'event: ping\ndata: {"type": "ping"}\n\n',
    b"event:  two spaces\ndata:  keep one\n\n",
    b"event: data: odd\ndata: name\n\n",
    "event: é\ndata: é\n\n".encode(),
]


def test_named_lines_gives_what_the_decoder_gives_or_nothing() -> None:
    """For any read of whole events (named events in Anthropic's shape, mixed with any
    other framing), `named_lines` either gives exactly the decoder's events, name and
    data, or refuses; both happen."""
    rng, taken = random.Random(7), 0
    for _ in range(3000):
        pieces = [rng.choice(_NAMED) for _ in range(rng.randrange(1, 6))]
        for _ in range(rng.randrange(0, 3)):
            pieces.insert(rng.randrange(len(pieces) + 1), rng.choice(_PIECES))
        block = b"".join(pieces) + (b"\n\n" if rng.random() < 0.5 else b"")
        cut = named_lines(block)
        if cut is None:
            continue
        taken += 1
        names, lines = cut
        events = [
            SSEEvent(name.decode("utf-8", "replace"), line.decode("utf-8", "replace"))
            for name, line in zip(names, lines, strict=True)
        ]
        assert events == SSEDecoder().feed(block)
    assert 300 < taken < 3000


@pytest.mark.parametrize(
    "block",
    [
        b'event: a\ndata: {"a":1}\n\n',
        b"event: a\ndata: x\n\nevent: b\ndata: y\n\n",
        b"event: a\ndata: \n\n",
        b"event: data: x\ndata: y\n\n",
    ],
)
def test_named_lines_takes_one_named_one_line_events(block: bytes) -> None:
    cut = named_lines(block)
    assert cut is not None
    events = [SSEEvent(n.decode(), d.decode()) for n, d in zip(*cut, strict=True)]
    assert events == SSEDecoder().feed(block)


@pytest.mark.parametrize(
    "block",
    [
        b"data: x\n\n",  # not named
        b"event: a\ndata: x\r\n\r\n",  # CR
        b"event: a\ndata: x\ndata: y\n\nevent: data: z\n\n",  # LFs uneven, same total
        b"event: a\ndata: x\n\ndata: y\n\n",  # one event named, the next not
        b"event: a\nid: 1\n\n",  # another field
        b"event: a\ndata:x\n\n",  # no space after the colon
        b"event: \ndata: x\n\n",  # an empty name: the decoder's "message"
        b"event:a\ndata: x\n\n",
        b"event: a\ndata: x\n",  # an event not ended
        b"",
    ],
)
def test_named_lines_refuses_any_other_shape(block: bytes) -> None:
    assert named_lines(block) is None
