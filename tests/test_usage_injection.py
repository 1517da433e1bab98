"""OpenAI stream usage injection: the upstream body asks for usage, the client never sees it."""

from __future__ import annotations

import re

import msgspec
import pytest

from proxy.providers.openai_usage import inject, strip_null_usage, strip_usage_chunk

CONTENT = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}\n\n'
)
FINAL = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
)
USAGE = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n'
)
DONE = b"data: [DONE]\n\n"


def test_inject_adds_include_usage_and_keeps_other_stream_options() -> None:
    """Existing stream_options members survive; other members are byte-identical."""
    body = b'{"model":"m", "stream":true, "stream_options":{"include_obfuscation":false}}'
    out = inject(body)
    assert msgspec.json.decode(out)["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }
    assert out.startswith(b'{"model":"m", "stream":true, "stream_options":')


def test_inject_inserts_stream_options_when_absent() -> None:
    """A body without stream_options gets exactly one new member."""
    assert inject(b'{"model":"m","stream":true}') == (
        b'{"stream_options":{"include_usage":true},"model":"m","stream":true}'
    )


@pytest.mark.parametrize(
    "blocks",
    [
        [CONTENT, FINAL, USAGE, DONE],
        [CONTENT + FINAL + USAGE + DONE],
        [CONTENT, FINAL + USAGE, DONE],
    ],
)
def test_strip_restores_the_uninjected_stream(blocks: list[bytes]) -> None:
    """Whatever the block boundaries, the client gets exactly the bytes the provider
    sends without include_usage: no usage chunk and no `"usage":null` members."""
    out = b"".join(strip_usage_chunk(block) for block in blocks)
    assert out == (CONTENT + FINAL + DONE).replace(b',"usage":null', b"")


def test_null_usage_is_removed_in_any_member_position_and_spacing() -> None:
    """`"usage": null` first, last or spaced is removed without touching other members."""
    first = b'data: {"usage": null, "id":"c"}\n\n'
    assert strip_usage_chunk(first) == b'data: {"id":"c"}\n\n'
    last = b'data: {"id":"c" , "usage" : null}\n\n'
    assert strip_usage_chunk(last) == b'data: {"id":"c" }\n\n'
    quoted = b'data: {"id":"c","choices":[{"delta":{"content":"say \\"usage\\":null"}}]}\n\n'
    assert strip_usage_chunk(quoted) == quoted


#: The rule strip_null_usage implements, as the single regex it replaced (slower: an
#: alternation that starts with `,` makes `re` try every position of the block).
REFERENCE = re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,\s*')


@pytest.mark.parametrize(
    "member",
    ['"usage":null', '"usage" : null', '"usage":\tnull', '"usage":nullx', '"usage":{}'],
)
@pytest.mark.parametrize(
    "shape",
    [
        "{%s}",
        '{%s,"id":1}',
        '{%s , "id":1}',
        '{"id":1,%s}',
        '{"id":1 ,  %s }',
        '{"a":1,%s,"b":2}',
        "[%s]",
        '{"x":[%s],%s}',
        '{"s":"%s"}',
    ],
)
def test_null_usage_removal_matches_the_reference_rule_byte_for_byte(
    member: str, shape: str
) -> None:
    text = shape.replace("%s", member)
    block = f"data: {text}\n\ndata: {text}\n\n".encode()
    assert strip_null_usage(block) == REFERENCE.sub(b"", block)
    # strip_usage_chunk takes a faster path for OpenAI's compact spelling: same rule.
    assert strip_usage_chunk(block) == REFERENCE.sub(b"", block)
    # ... and searches from the first mention of usage: events before it stay whole.
    later = b'data: {"id":1, "choices":[]}\n\n' * 3 + block
    assert strip_usage_chunk(later) == REFERENCE.sub(b"", later)


def test_strip_leaves_content_chunks_that_carry_usage() -> None:
    """A server that puts usage on a content chunk keeps it: removing it would lose content."""
    chunk = b'data: {"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1}}\n\n'
    assert strip_usage_chunk(chunk) == chunk
