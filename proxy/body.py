"""Request bodies: decode only the routing fields, and edit raw JSON bytes surgically.

spangate forwards the client's bytes. When it must change one top-level member
(an alias's `model`, or `stream_options` for usage injection) it splices that
member alone, so every other byte — key order, whitespace, number spelling —
reaches the provider as the client wrote it.
"""

from __future__ import annotations

import functools
import re

import msgspec


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class RequestFields(msgspec.Struct):
    """The few top-level fields the routing and relay decisions need."""

    model: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None


class BodyError(ValueError):
    """The body is not a JSON object (message says what is wrong)."""


class DuplicateMember(BodyError):
    """A member spangate rewrites appears more than once at the top level (perhaps
    spelled with escapes): which one a provider reads is up to its parser, so the
    rewrite could be bypassed."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f'the request body has more than one top-level "{key}" member (counting '
            f'names written with escapes); send "{key}" once'
        )
        self.key = key


_fields_decoder = msgspec.json.Decoder(RequestFields)


def decode_fields(body: bytes) -> RequestFields:
    """Decode routing fields; raise BodyError with a client-facing message."""
    try:
        return _fields_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BodyError(f"invalid request body: {_humanize(exc)}") from None
    except msgspec.DecodeError as exc:
        raise BodyError(f"request body is not valid JSON: {exc}") from None


def _humanize(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if text.startswith("Expected `object`"):
        return "the body must be a JSON object"
    return text.replace("`$.", "`").replace(" - at ", " at ")


_WS = b" \t\r\n"


def find_member(body: bytes, key: str) -> tuple[int, int] | None:
    """Byte span [start, end) of the *value* of top-level member `key`, or None.

    A fast regex finds candidates; a candidate is accepted only when a scan of
    the top-level object confirms it sits at depth 1 (a nested tool schema may
    well have a property called "model").
    """
    if _member_pattern(key).search(body) is None:
        return None
    return _scan_top_level(body, key)


@functools.lru_cache(maxsize=16)
def _member_pattern(key: str) -> re.Pattern[bytes]:
    # Keys are a few fixed names (model, stream_options): compiled once, not per request.
    return re.compile(rb'"' + re.escape(key.encode()) + rb'"\s*:')


def _scan_top_level(body: bytes, key: str) -> tuple[int, int] | None:
    pos = _skip_ws(body, 0)
    if pos >= len(body) or body[pos] != ord("{"):
        return None
    pos += 1
    while True:
        pos = _skip_ws(body, pos)
        if pos >= len(body) or body[pos] == ord("}"):
            return None
        key_end = _skip_string(body, pos)
        name = msgspec.json.decode(body[pos:key_end])
        pos = _skip_ws(body, key_end)
        pos = _skip_ws(body, pos + 1)  # the colon
        value_end = _skip_value(body, pos)
        if name == key:
            return pos, value_end
        pos = _skip_ws(body, value_end)
        if pos < len(body) and body[pos] == ord(","):
            pos += 1


def _skip_ws(body: bytes, pos: int) -> int:
    while pos < len(body) and body[pos] in _WS:
        pos += 1
    return pos


_STRING_BODY = re.compile(rb'(?:[^"\\]|\\.)*"', re.DOTALL)


def _skip_string(body: bytes, pos: int) -> int:
    match = _STRING_BODY.match(body, pos + 1)
    if match is None:
        raise BodyError("request body is not valid JSON: unterminated string")
    return match.end()


def _skip_value(body: bytes, pos: int) -> int:
    if pos < len(body) and body[pos] == ord('"'):
        return _skip_string(body, pos)
    depth = 0
    while pos < len(body):
        char = body[pos]
        if char == ord('"'):
            pos = _skip_string(body, pos)
            continue
        if char in b"[{":
            depth += 1
        elif char in b"]}":
            if depth == 0:
                return pos
            depth -= 1
        elif char == ord(",") and depth == 0:
            return pos
        pos += 1
    return pos


def _trim(body: bytes, start: int, end: int) -> int:
    while end > start and body[end - 1] in _WS:
        end -= 1
    return end


def set_member(body: bytes, key: str, value: object) -> bytes:
    """`body` with top-level member `key` set to `value`, all other bytes untouched.

    Replaces the value in place when the member exists; otherwise inserts the
    member right after the opening brace.
    """
    encoded = msgspec.json.encode(value)
    span = find_member(body, key)
    if span is not None:
        start, end = span
        end = _trim(body, start, end)
        edited = body[:start] + encoded + body[end:]
    else:
        brace = body.index(b"{") + 1
        rest = body[_skip_ws(body, brace) :]
        separator = b"" if rest.startswith(b"}") else b","
        member = b'"' + key.encode() + b'":' + encoded + separator
        edited = body[:brace] + member + body[brace:]
    # Parsers that keep a repeated name's last value (msgspec, which spangate routes
    # on, Python's, Go's, JavaScript's) must read the value spliced in: the literal
    # search edits the first, and misses a name written with escapes.
    if _last_values.decode(edited).get(key) != msgspec.Raw(encoded):
        raise DuplicateMember(key)
    return edited


_last_values = msgspec.json.Decoder(dict[str, msgspec.Raw])
