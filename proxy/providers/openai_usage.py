"""OpenAI-format stream usage: ask for it upstream, hide it from a client that did not.

OpenAI streams report token usage only when the request sets
`stream_options.include_usage`; the answer is one extra chunk with
`"choices": []` and a `usage` object just before `data: [DONE]`. spangate sets
the option for telemetry and removes exactly that chunk, so the client's bytes
are what the provider would have sent without it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from proxy import body as bodylib
from proxy.providers.base import Incoming, spliced

#: Chat completions and legacy completions accept stream_options; others do not.
_APIS = frozenset({"chat_completions", "completions"})


def wants_injection(incoming: Incoming, enabled: bool) -> bool:
    fields = incoming.fields
    if not enabled or not fields.stream or incoming.endpoint.api not in _APIS:
        return False
    options = fields.stream_options
    return options is None or not options.include_usage


def inject(body: bytes) -> bytes:
    """`body` with `stream_options.include_usage: true`, keeping other stream options."""
    span = bodylib.find_member(body, "stream_options")
    options: dict[str, Any] = {}
    if span is not None:
        try:
            decoded = msgspec.json.decode(body[span[0] : span[1]])
        except msgspec.DecodeError:
            decoded = None
        options = decoded if isinstance(decoded, dict) else {}
    options["include_usage"] = True
    return spliced(body, "stream_options", options)


class _Chunk(msgspec.Struct):
    choices: list[Any] | None = None
    usage: dict[str, Any] | None = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


#: With include_usage set, OpenAI adds `"usage":null` to every chunk. The member
#: cannot occur unescaped inside a JSON string, so removing it is exact. A pattern
#: that starts with a literal lets `re` skip ahead; the comma around it is handled
#: by strip_null_usage (one alternation starting with `,` cost 3-4x more per block).
_NULL_MEMBER = re.compile(rb'"usage"\s*:\s*null')
_COMPACT_NULL = re.compile(rb',"usage":null(?=[,}])')
_WS = b" \t\r\n"
_COMMA = ord(",")


def strip_usage_chunk(block: bytes) -> bytes:
    """Undo injection in a block of complete events: drop the usage-only chunk and the
    `"usage":null` members, leaving every other byte as the provider sent it."""
    first = block.find(b'"usage"')
    if first < 0:
        return block
    # Nothing before `first` names usage, and what follows removes only bytes from its
    # comma on: later searches start there, not at the top of a stream read whole.
    first = max(first - 1, 0)
    # OpenAI's own spelling (compact, never the first member) in one C pass; other
    # spellings are left to strip_null_usage (the two differ only for an object that
    # repeats the key, which no provider sends).
    if block.find(b',"usage":null', first) >= 0:
        block = _COMPACT_NULL.sub(b"", block)
        if block.find(b'"usage"', first) < 0:
            return block
    block = strip_null_usage(block, first)
    # Only events still naming "usage" can be the usage chunk: find each by byte
    # search and decode just that one (decoding every chunk of the block was a
    # quarter of the proxy's time per stream in the bench profile).
    start = 0
    while (at := block.find(b'"usage"', start)) >= 0:
        begin = block.rfind(b"\n\n", 0, at)
        begin = 0 if begin < 0 else begin + 2
        end = block.find(b"\n\n", at)
        if end < 0:  # not a complete event: left as it is
            break
        end += 2
        if _is_usage_only(block[begin:end]):
            block, start = block[:begin] + block[end:], begin
        else:
            start = end
    return block


def strip_null_usage(block: bytes, start: int = 0) -> bytes:
    """Remove each `"usage":null` member with its separating comma: `, "usage": null`
    before a `,` or `}`, else `"usage": null ,` (a first member) with the space after.
    `start`: where to look from, when nothing before it names usage."""
    kept: list[bytes] = []
    pos, size = 0, len(block)
    for match in _NULL_MEMBER.finditer(block, start):
        at, end = match.start(), match.end()
        before = at - 1
        while before >= pos and block[before] in _WS:
            before -= 1
        after = end
        while after < size and block[after] in _WS:
            after += 1
        if before >= pos and block[before] == _COMMA and after < size and block[after] in b",}":
            kept.append(block[pos:before])
            pos = end
        elif after < size and block[after] == _COMMA:
            after += 1
            while after < size and block[after] in _WS:
                after += 1
            kept.append(block[pos:at])
            pos = after
    if not kept:
        return block
    kept.append(block[pos:])
    return b"".join(kept)


def _is_usage_only(event: bytes) -> bool:
    if not event.startswith(b"data:"):
        return False
    payload = event[5:].strip()
    try:
        chunk = _decode_chunk(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return chunk.choices == [] and chunk.usage is not None
