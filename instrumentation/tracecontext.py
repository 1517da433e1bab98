"""W3C trace context on the hot path: parse `traceparent`, mint ids, format headers.

spangate assigns span ids itself when a request arrives, so it can send the
attempt span's id upstream at once and build the spans later, off the request
path (see `instrumentation.worker`).
"""

from __future__ import annotations

import random
import re

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$")
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16
_rand = random.Random()
_getrandbits = _rand.getrandbits


class Parent:
    """The caller's span context, as its `traceparent` / `tracestate` said."""

    __slots__ = ("sampled", "span_id", "trace_id", "tracestate")

    def __init__(self, trace_id: int, span_id: int, sampled: bool, tracestate: str | None):
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.tracestate = tracestate


def parse_traceparent(value: str | None, tracestate: str | None) -> Parent | None:
    """A valid parent, or None (invalid headers are ignored, per the W3C spec)."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    version, trace_hex, span_hex, flags = match.groups()
    if version == "ff" or trace_hex == _INVALID_TRACE or span_hex == _INVALID_SPAN:
        return None
    return Parent(int(trace_hex, 16), int(span_hex, 16), bool(int(flags, 16) & 1), tracestate)


def new_trace_id() -> int:
    while True:
        value = _getrandbits(128)
        if value:
            return value


def new_span_id() -> int:
    while True:
        value = _getrandbits(64)
        if value:
            return value


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
