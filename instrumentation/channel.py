"""Length-prefixed msgpack frames over a stream socket: `[kind, payload]` each."""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgspec

_LENGTH = struct.Struct("!I")
_encoder = msgspec.msgpack.Encoder(enc_hook=str)
_decoder = msgspec.msgpack.Decoder()
#: A frame larger than this is a protocol error, not something to allocate.
MAX_FRAME = 256 * 1024 * 1024


def frame(kind: str, payload: Any) -> bytes:
    """One frame. Values msgpack cannot hold (exceptions, paths) travel as their str()."""
    body = _encoder.encode((kind, payload))
    return _LENGTH.pack(len(body)) + body


class FrameReader:
    """Reads frames from a blocking socket; `read()` is None once the peer closed."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

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

    def _exactly(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            chunk = self._sock.recv(max(65536, size - len(self._buffer)))
            if not chunk:
                return None
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data
