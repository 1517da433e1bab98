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
A body of more than 1,024 gzip members or zstd frames is too large too, however little
they hold: each costs a decoder, so a body of many empty ones would cost time without
ever nearing the limit.

Never compiled (proxy/native.py): inflating is a loop over client-sized data, which
compiled code would run without ever letting the event loop in.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from typing import Any

from multidict import CIMultiDictProxy

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

#: Members (gzip) or frames (zstd) read from one body: aiohttp's own bound for request
#: bodies.
_MAX_MEMBERS = 1024
#: Input given a decoder at a time (see _member).
_FEED = 64 * 1024

#: RFC 9659 §3: a zstd Content-Encoding's window is at most 8 MiB (2**23).
_ZSTD_WINDOW_LOG_MAX = 23


class Undecodable(Exception):
    """A body whose coding cannot be undone; `reason` is one of the three above."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def content_coding(headers: CIMultiDictProxy[str]) -> str | None:
    """A message's Content-Encoding as one value, its lines joined in order (RFC 9110
    §5.5: several lines are one list, codings applied in the order listed); None
    without one. What `inflate` takes."""
    lines = headers.getall("Content-Encoding", ())
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else ", ".join(lines)


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
    """Every member of a gzip body (RFC 1952 allows several), or one zlib/raw stream
    (what follows its end is ignored, as zlib does)."""
    gzip = wbits == zlib.MAX_WBITS | 16
    return _members(body, limit, lambda: zlib.decompressobj(wbits), zlib.error, every=gzip)


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
    options = {_zstd.DecompressionParameter.window_log_max: _ZSTD_WINDOW_LOG_MAX}
    return _members(
        body, limit, lambda: _zstd.ZstdDecompressor(options=options), _zstd.ZstdError, every=True
    )


def _members(
    body: bytes, limit: int, decoder: Callable[[], Any], error: type[Exception], every: bool
) -> bytes:
    """The members (gzip) or frames (zstd) of `body`, each read by a `decoder()` (zlib's
    and zstd's decompressor objects share the calls used here); only the first unless
    `every`. More than _MAX_MEMBERS is too large: each costs a decoder however little it
    holds, so many empty ones would cost time without ever nearing `limit`."""
    out = bytearray()
    view = memoryview(body)
    start = 0
    for _ in range(_MAX_MEMBERS):
        try:
            start = _member(decoder(), view, start, out, limit)
        except error:
            raise Undecodable(CORRUPT) from None
        if start >= len(view) or not every:
            return bytes(out)
    raise Undecodable(TOO_LARGE)


def _member(decoder: Any, view: memoryview, start: int, out: bytearray, limit: int) -> int:
    """Feeds `decoder` from `view[start:]` into `out` until its member ends; returns where
    the next one starts. Input goes in _FEED-sized pieces: what is left of a piece when
    the member ends is copied (unused_data), never the whole rest of the body."""
    at = start
    while not decoder.eof:
        if at >= len(view):
            raise Undecodable(CORRUPT)  # cut short
        data: bytes | memoryview = view[at : at + _FEED]
        at += len(data)
        while True:
            ask = min(_STEP, limit + 1 - len(out))
            got = decoder.decompress(data, ask)
            out += got
            if len(out) > limit:
                raise Undecodable(TOO_LARGE)
            # zlib hands back the input it had no room to read; zstd keeps it. A full
            # answer may mean more output is waiting either way: ask again.
            data = getattr(decoder, "unconsumed_tail", b"")
            if decoder.eof or (not data and len(got) < ask):
                break
    return at - len(decoder.unused_data)
