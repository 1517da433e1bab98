"""Incremental SSE decoding, independent of how the bytes are split."""

from __future__ import annotations

import pytest

from proxy.sse import SSEDecoder, SSEEvent, split_complete

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


def test_split_complete_finds_the_last_event_boundary() -> None:
    """The relay flushes only whole events; a partial one waits."""
    assert split_complete(b'data: 1\n\ndata: {"par') == len(b"data: 1\n\n")
    assert split_complete(b"data: partial") == 0
    assert split_complete(b"data: 1\r\n\r\n") == len(b"data: 1\r\n\r\n")
