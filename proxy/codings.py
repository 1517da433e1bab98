"""A body's Content-Encoding undone, within a size bound: pure, for whoever must read it.

spangate relays compressed bodies as they were sent, so what reads one (the telemetry
worker's extractors, the failover's reading of a provider's error) inflates its own
copy here. gzip (and its old name x-gzip) and deflate (zlib-wrapped, or raw as some
servers send it: the fallback browsers apply) are read with zlib. br would need a
brotli module, which spangate does not depend on, and zstd one Python 3.11 lacks:
neither is read, nor is any other coding. What inflates past `limit` bytes is given up
as soon as it passes it: a small body that would inflate to gigabytes (a decompression
bomb) costs at most `limit` bytes of memory and the time to make them.

Never compiled (proxy/native.py): inflating is a loop over client-sized data, which
compiled code would run without ever letting the event loop in.
"""

from __future__ import annotations

import zlib

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


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
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
