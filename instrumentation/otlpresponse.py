"""What a collector's answer to an export says beyond its status: `partial_success`.

Every signal's Export*ServiceResponse has the same shape (field 1, a message of a
rejected count and an error message), over OTLP/HTTP and gRPC alike. The SDK's
exporters ignore it; an operator needs it, as it is telemetry lost after an
export that "succeeded".
"""

from __future__ import annotations

from collections.abc import Callable

#: Told (items rejected, the collector's message) of a partially accepted export.
Rejected = Callable[[int, str], None]
#: How much of a collector's message is kept for the log line.
_MESSAGE_LIMIT = 300
_INT64_SIGN = 1 << 63


def rejected(body: bytes) -> tuple[int, str] | None:
    """(items rejected, the collector's message) from an Export*ServiceResponse's
    `partial_success`, or None when it reports no rejection or cannot be read."""
    try:
        partial = _fields(body).get(1)
        if not isinstance(partial, bytes):
            return None
        fields = _fields(partial)
    except (IndexError, ValueError):
        return None
    count = fields.get(1, 0)
    message = fields.get(2, b"")
    if not isinstance(count, int) or not isinstance(message, bytes):
        return None
    if count >= _INT64_SIGN:
        count = 0  # an int64 below zero: nothing sensible to count
    if count <= 0 and not message:
        return None
    return count, message.decode("utf-8", "replace")[:_MESSAGE_LIMIT]


def _fields(data: bytes) -> dict[int, int | bytes]:
    """A protobuf message's varint and length-delimited fields (the last of each number);
    fixed-width fields skipped. Raises IndexError or ValueError on a malformed one."""
    fields: dict[int, int | bytes] = {}
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, kind = key >> 3, key & 7
        if kind == 0:
            fields[number], position = _varint(data, position)
        elif kind == 2:
            size, position = _varint(data, position)
            if position + size > len(data):
                raise ValueError("truncated field")
            fields[number] = data[position : position + size]
            position += size
        elif kind in (1, 5):
            position += 8 if kind == 1 else 4
            if position > len(data):
                raise ValueError("truncated field")
        else:
            raise ValueError(f"wire type {kind}")
    return fields


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
