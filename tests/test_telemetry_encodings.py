"""Compressed answers: relayed as the provider sent them, and still read by telemetry.

Both SDKs ask for gzip; a provider that compresses its JSON answer is relayed
byte for byte, and the telemetry worker inflates its copy (bounded) to find the
tokens, cost, response model and finish reasons. What it cannot inflate leaves
those facts empty and is counted, never held or blown up on.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Running
from fakeprovider import FakeProvider, custom, gzipped
from structlog.testing import capture_logs
from test_telemetry_support import (
    CLAUDE,
    GPT,
    claude,
    completed_lines,
    count,
    metric_points,
    oai,
    points_where,
    raw_post,
    settle,
    total,
)

from instrumentation import semconv as sc
from instrumentation.records import MAX_RETAINED_BYTES
from proxy.codings import CORRUPT, TOO_LARGE, UNSUPPORTED, Undecodable, inflate

HELLO: Any = [{"role": "user", "content": "hi there"}]
Start = Callable[..., Running]


def _tokens(running: Running, kind: str) -> int:
    points = metric_points(running, sc.METRIC_TOKEN_USAGE)
    return count(points_where(points, gen_ai__token__type=kind))


def _dropped(running: Running, reason: str) -> float:
    points = metric_points(running, sc.METRIC_TELEMETRY_DROPPED)
    return total(points_where(points, spangate__signal="responses", spangate__reason=reason))


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_openai_answer_compressed_by_the_provider_still_has_tokens_and_cost(
    fake: FakeProvider, spangate: Running, encoding: str
) -> None:
    """A gzip or deflate chat answer: the SDK reads it, and the request line and the
    token-usage metric carry the tokens it saw, with a cost and the response model."""
    fake.script(gzipped(encoding))
    with capture_logs() as captured:
        raw = oai(spangate).chat.completions.with_raw_response.create(model=GPT, messages=HELLO)
        settle(spangate)
    assert raw.headers["content-encoding"] == encoding  # relayed as sent
    usage = raw.parse().usage
    assert usage is not None
    (line,) = completed_lines(captured)
    assert line["input_tokens"] == usage.prompt_tokens
    assert line["output_tokens"] == usage.completion_tokens
    assert line["cost_usd"] > 0
    assert _tokens(spangate, "input") == 1
    assert _tokens(spangate, "output") == 1
    duration = metric_points(spangate, sc.METRIC_OPERATION_DURATION)
    assert points_where(duration, gen_ai__response__model=GPT)


def test_anthropic_answer_compressed_by_the_provider_still_has_tokens(
    fake: FakeProvider, spangate: Running
) -> None:
    """A gzip Messages answer: tokens in the request line and the token-usage metric."""
    fake.script(gzipped())
    with capture_logs() as captured:
        message = claude(spangate).messages.create(model=CLAUDE, max_tokens=20, messages=HELLO)
        settle(spangate)
    (line,) = completed_lines(captured)
    assert line["input_tokens"] == message.usage.input_tokens
    assert line["output_tokens"] == message.usage.output_tokens
    assert _tokens(spangate, "output") == 1


def test_decompression_bomb_is_relayed_untouched_and_leaves_the_facts_empty(
    fake: FakeProvider, spangate: Running
) -> None:
    """A small gzip body inflating past the retention cap reaches the client byte for
    byte; its facts stay empty, it is counted and said once, and the worker goes on."""
    bomb = gzip.compress(b'{"usage": {"prompt_tokens": 1, "x": "' + b"a" * (64 << 20), mtime=0)
    assert len(bomb) < MAX_RETAINED_BYTES // 16
    headers = {"content-encoding": "gzip"}
    fake.script(custom(200, bomb, headers=headers), custom(200, bomb, headers=headers))
    url = spangate.openai_base_url + "/chat/completions"
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "x"}]}' % GPT.encode()
    with capture_logs() as captured:
        for _ in range(2):
            status, relayed = asyncio.run(raw_post(url, body))
            assert (status, relayed) == (200, bomb)
        oai(spangate).chat.completions.create(model=GPT, messages=HELLO)  # the worker is fine
        settle(spangate)
    first, second, after = completed_lines(captured)
    assert first["input_tokens"] is None and second["input_tokens"] is None
    assert after["input_tokens"] > 0
    warnings = [e for e in captured if e["event"] == "telemetry.response_not_decoded"]
    assert [(w["encoding"], w["reason"]) for w in warnings] == [("gzip", TOO_LARGE)]
    assert _dropped(spangate, TOO_LARGE) == 2


def test_an_encoding_telemetry_cannot_read_is_counted_not_guessed(
    fake: FakeProvider, spangate: Running
) -> None:
    """A `br` answer (no brotli module in spangate) is relayed as sent; its facts stay
    empty and it counts as unsupported_encoding."""
    answer = b"\x8b\x03\x80not really brotli"
    fake.script(custom(200, answer, headers={"content-encoding": "br"}))
    url = spangate.openai_base_url + "/chat/completions"
    body = b'{"model": "%s", "messages": []}' % GPT.encode()
    with capture_logs() as captured:
        assert asyncio.run(raw_post(url, body)) == (200, answer)
        settle(spangate)
    (line,) = completed_lines(captured)
    assert line["output_tokens"] is None
    assert _dropped(spangate, UNSUPPORTED) == 1


# --------------------------------------------------------------------------- inflate


DOC = b'{"usage": {"prompt_tokens": 3}}' * 100


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(DOC)),
        ("x-gzip", gzip.compress(DOC)),
        ("GZIP", gzip.compress(DOC[:1000]) + gzip.compress(DOC[1000:])),  # two members
        ("deflate", zlib.compress(DOC)),
        ("deflate", _raw_deflate(DOC)),  # no zlib header, as some servers send it
        ("deflate, gzip", gzip.compress(zlib.compress(DOC))),  # last applied, first undone
        ("identity", DOC),
    ],
)
def test_inflate_undoes_the_codings_zlib_reads(encoding: str, body: bytes) -> None:
    """gzip/x-gzip (every member), zlib or raw deflate, stacked codings, identity."""
    assert inflate(body, encoding, MAX_RETAINED_BYTES) == DOC


@pytest.mark.parametrize(
    ("encoding", "body", "reason"),
    [
        ("gzip", gzip.compress(DOC)[:-6], CORRUPT),  # cut short
        ("gzip", b"not gzip at all", CORRUPT),
        ("deflate", b"\x00\x01garbage", CORRUPT),
        ("gzip", gzip.compress(DOC) + b"trailing junk", CORRUPT),
        ("br", DOC, UNSUPPORTED),
        ("zstd", DOC, UNSUPPORTED),
        ("gzip", gzip.compress(b"a" * 5000), TOO_LARGE),
        ("deflate", zlib.compress(b"a" * 5000), TOO_LARGE),
    ],
)
def test_inflate_refuses_what_it_cannot_read_within_the_bound(
    encoding: str, body: bytes, reason: str
) -> None:
    """Broken, unknown or past-the-limit bodies raise Undecodable with their reason."""
    with pytest.raises(Undecodable) as caught:
        inflate(body, encoding, limit=4096)
    assert caught.value.reason == reason
