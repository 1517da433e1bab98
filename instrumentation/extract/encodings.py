"""A response body's Content-Encoding undone for the extractors, within a size bound.

spangate relays a compressed answer as the provider sent it (both SDKs ask for
gzip), so the attempt record keeps the compressed bytes and their coding; the
telemetry worker inflates them here before an extractor reads them. gzip (and its
old name x-gzip) and deflate (zlib-wrapped, or raw as some servers send it: the
fallback browsers apply) are read with zlib. br would need a brotli module, which
spangate does not depend on, and zstd one Python 3.11 lacks: neither is read, nor is
any other coding. What inflates past `limit` bytes is given up as soon as it passes
it: a small body that would inflate to gigabytes (a decompression bomb) costs at most
`limit` bytes of memory and the time to make them.

Pure and never compiled (proxy/native.py): inflating is a loop over client-sized
data, which compiled code would run without ever letting the event loop in.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import structlog

from instrumentation.records import MAX_RETAINED_BYTES

log = structlog.get_logger("spangate.telemetry")

#: The drop counter's signal for responses whose facts could not be read.
SIGNAL = "responses"
UNSUPPORTED = "unsupported_encoding"
CORRUPT = "corrupt_encoding"
TOO_LARGE = "decompressed_too_large"

#: Output asked of the decompressor per call: the worker gives up the GIL between calls.
_STEP = 256 * 1024


class Undecodable(Exception):
    """A body whose coding cannot be undone; `reason` is one of the three above."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def inflate(body: bytes, encoding: str, limit: int = MAX_RETAINED_BYTES) -> bytes:
    """`body` with the codings of a Content-Encoding value undone, last applied first;
    raises Undecodable when one is unknown, broken, or inflates past `limit` bytes."""
    codings = [c.strip().lower() for c in encoding.split(",")]
    for coding in reversed(codings):
        if coding in ("", "identity"):
            continue
        body = _undo(coding, body, limit)
    return body


def _undo(coding: str, body: bytes, limit: int) -> bytes:
    if coding in ("gzip", "x-gzip"):
        return _zlib(body, zlib.MAX_WBITS | 16, limit)
    if coding == "deflate":
        try:
            return _zlib(body, zlib.MAX_WBITS, limit)
        except Undecodable as exc:
            if exc.reason != CORRUPT:
                raise
            return _zlib(body, -zlib.MAX_WBITS, limit)  # raw deflate, no zlib header
    raise Undecodable(UNSUPPORTED)


def _zlib(body: bytes, wbits: int, limit: int) -> bytes:
    """Every member of a gzip body (RFC 1952 allows several), or one zlib/raw stream."""
    out = bytearray()
    data = body
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            while True:
                out += inflater.decompress(data, min(_STEP, limit + 1 - len(out)))
                if len(out) > limit:
                    raise Undecodable(TOO_LARGE)
                data = inflater.unconsumed_tail
                if not data:
                    break
            out += inflater.flush()
        except zlib.error:
            raise Undecodable(CORRUPT) from None
        if len(out) > limit:
            raise Undecodable(TOO_LARGE)
        if not inflater.eof:
            raise Undecodable(CORRUPT)  # cut short
        data = inflater.unused_data
        if not data or wbits != zlib.MAX_WBITS | 16:
            return bytes(out)


class Inflater:
    """Undoes a response's coding for the extractors; counts each body it cannot read in
    `count(SIGNAL, reason)` and says so in a log line once per coding and reason."""

    def __init__(
        self, count: Callable[[str, str], None] | None, limit: int = MAX_RETAINED_BYTES
    ) -> None:
        self._count = count
        self._limit = limit
        self._said: set[tuple[str, str]] = set()

    def __call__(self, body: bytes, encoding: str) -> bytes | None:
        """The decoded body, or None when it cannot be decoded (facts stay empty)."""
        try:
            return inflate(body, encoding, self._limit)
        except Undecodable as exc:
            self._report(encoding, exc.reason)
            return None

    def _report(self, encoding: str, reason: str) -> None:
        if self._count is not None:
            self._count(SIGNAL, reason)
        key = (encoding.lower()[:32], reason)
        if key in self._said or len(self._said) >= 64:
            return
        self._said.add(key)
        log.warning(
            "telemetry.response_not_decoded",
            encoding=key[0],
            reason=reason,
            limit=self._limit,
            hint="responses so encoded get no tokens, cost, response model or finish "
            "reasons; they are counted in spangate_telemetry_dropped_total"
            f'{{spangate_signal="{SIGNAL}"}} (said once per encoding and reason)',
        )
