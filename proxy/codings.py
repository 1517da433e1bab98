"""A body's Content-Encoding undone, within a size bound: pure, for whoever must read it.

spangate relays compressed bodies as they were sent, so what reads one (the telemetry
worker's extractors, the failover's reading of a provider's error) inflates its own
copy here. gzip (and its old name x-gzip) and deflate (zlib-wrapped, or raw as some
servers send it: the fallback browsers apply) are read with zlib; br with the Brotli
module and zstd with Python's compression.zstd (backports.zstd before 3.14), both
spangate dependencies: an install without one refuses that coding as unsupported, as
it does every other coding. A zstd frame whose window is over 8 MiB (the limit RFC 9659
sets for HTTP) is refused as corrupt rather than given the memory it asks for.

What inflates past `limit` bytes is given up as soon as it passes it: a small body that
would inflate to gigabytes (a decompression bomb) costs at most `limit` bytes of output
(plus, for br, the one 32 KiB block Brotli fills at a time) and the time to make them.

Never compiled (proxy/native.py): inflating is a loop over client-sized data, which
compiled code would run without ever letting the event loop in.
"""

from __future__ import annotations

import sys
import zlib
from typing import Any

try:
    import brotli
except ImportError:  # an install without Brotli: br is unsupported
    brotli = None

_zstd: Any
try:
    if sys.version_info >= (3, 14):
        from compression import zstd as _zstd
    else:
        from backports import zstd as _zstd
except ImportError:  # an install without backports.zstd: zstd is unsupported
    _zstd = None

UNSUPPORTED = "unsupported_encoding"
CORRUPT = "corrupt_encoding"
TOO_LARGE = "decompressed_too_large"

#: Output asked of the decompressor per call: the worker gives up the GIL between calls.
_STEP = 256 * 1024

#: RFC 9659 §3: a zstd Content-Encoding's window is at most 8 MiB (2**23).
_ZSTD_WINDOW_LOG_MAX = 23


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
    if coding == "br" and brotli is not None:
        return _brotli(body, limit)
    if coding == "zstd" and _zstd is not None:
        return _zstandard(body, limit)
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


def _brotli(body: bytes, limit: int) -> bytes:
    """One brotli stream (RFC 7932 has no members: bytes after it are corrupt).

    Brotli's output buffer stops growing once it reaches the size asked, but grows in
    blocks (32 KiB, then doubling): a call can return up to twice the size asked plus a
    block. Asking a quarter of what is left keeps the output within `limit` plus a block."""
    decoder = brotli.Decompressor()
    out = bytearray()
    data = body
    try:
        while True:
            ask = min(_STEP, max(1, (limit + 1 - len(out)) // 4))
            out += decoder.process(data, output_buffer_limit=ask)
            if len(out) > limit:
                raise Undecodable(TOO_LARGE)
            data = b""  # the decoder keeps what it has not read yet
            if decoder.can_accept_more_data():
                break
    except brotli.error:
        raise Undecodable(CORRUPT) from None
    if not decoder.is_finished():
        raise Undecodable(CORRUPT)  # cut short
    return bytes(out)


def _zstandard(body: bytes, limit: int) -> bytes:
    """Every frame of a zstd body (RFC 8878 allows several, as gzip has members)."""
    out = bytearray()
    data = body
    options = {_zstd.DecompressionParameter.window_log_max: _ZSTD_WINDOW_LOG_MAX}
    while True:
        decoder = _zstd.ZstdDecompressor(options=options)
        try:
            while True:
                out += decoder.decompress(data, min(_STEP, limit + 1 - len(out)))
                if len(out) > limit:
                    raise Undecodable(TOO_LARGE)
                data = b""  # the decoder keeps what it has not read yet
                if decoder.eof or decoder.needs_input:
                    break
        except _zstd.ZstdError:
            raise Undecodable(CORRUPT) from None
        if not decoder.eof:
            raise Undecodable(CORRUPT)  # cut short
        data = decoder.unused_data
        if not data:
            return bytes(out)
