"""Length-prefixed msgpack frames over a stream socket: `[kind, payload]` each."""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgspec

_LENGTH = struct.Struct("!I")
# No enc_hook: everything sent is plain data, and a value that is not (an object in
# a log event) must fail the send rather than travel as an unredacted str().
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
#: A frame larger than this is a protocol error, not something to allocate.
MAX_FRAME = 256 * 1024 * 1024


def frame(kind: str, payload: Any) -> bytes:
    body = _encoder.encode((kind, payload))
    return _LENGTH.pack(len(body)) + body


class FrameReader:
    """Reads frames from a blocking socket; `read()` is None once the peer closed."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self) -> tuple[str, Any] | None:
        header = self._exactly(_LENGTH.size)
        if header is None:
            return None
        (length,) = _LENGTH.unpack(header)
        if length > MAX_FRAME:
            raise ValueError(f"frame of {length} bytes exceeds {MAX_FRAME}")
        body = self._exactly(length)
        if body is None:
            return None
        kind, payload = _decoder.decode(body)
        return str(kind), payload

    def _exactly(self, size: int) -> bytearray | None:
        """Exactly `size` bytes, received straight into one buffer (no over-read, no copy)."""
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            n = self._sock.recv_into(view[got:], size - got)
            if n == 0:
                return None
            got += n
        return buffer
