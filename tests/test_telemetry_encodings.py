"""Compressed answers: relayed as the provider sent them, and still read by telemetry.

Both SDKs ask for gzip (and br and zstd where brotli and zstd modules are installed); a
provider that compresses its JSON answer is relayed byte for byte, and the telemetry
worker inflates its copy (bounded) to find the tokens, cost, response model and finish
reasons. What it cannot inflate leaves
those facts empty and is counted, never held or blown up on.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from typing import Any

import brotli
import pytest
from backports import zstd
from conftest import Running
from fakeprovider import (
    Behaviour,
    FakeProvider,
    brotli_compressed,
    custom,
    gzipped,
    zstd_compressed,
)
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
from proxy.codings import CORRUPT, TOO_LARGE, UNSUPPORTED

HELLO: Any = [{"role": "user", "content": "hi there"}]
Start = Callable[..., Running]


def _tokens(running: Running, kind: str) -> int:
    points = metric_points(running, sc.METRIC_TOKEN_USAGE)
    return count(points_where(points, gen_ai__token__type=kind))


def _dropped(running: Running, reason: str) -> float:
    points = metric_points(running, sc.METRIC_TELEMETRY_DROPPED)
    return total(points_where(points, spangate__signal="responses", spangate__reason=reason))


COMPRESSED = {
    "gzip": gzipped(),
    "deflate": gzipped("deflate"),
    "br": brotli_compressed(),
    "zstd": zstd_compressed(),
}


@pytest.mark.parametrize("encoding", list(COMPRESSED))
def test_openai_answer_compressed_by_the_provider_still_has_tokens_and_cost(
    fake: FakeProvider, spangate: Running, encoding: str
) -> None:
    """A gzip, deflate, br or zstd chat answer: the SDK reads it, and the request line and
    the token-usage metric carry the tokens it saw, with a cost and the response model."""
    fake.script(COMPRESSED[encoding])
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


@pytest.mark.parametrize(
    "behaviour",
    [gzipped(), brotli_compressed(), zstd_compressed(frames=3)],
    ids=["gzip", "br", "zstd-3-frames"],
)
def test_anthropic_answer_compressed_by_the_provider_still_has_tokens(
    fake: FakeProvider, spangate: Running, behaviour: Behaviour
) -> None:
    """A gzip, br or zstd (several frames) Messages answer: tokens in the request line and
    the token-usage metric."""
    fake.script(behaviour)
    with capture_logs() as captured:
        message = claude(spangate).messages.create(model=CLAUDE, max_tokens=20, messages=HELLO)
        settle(spangate)
    (line,) = completed_lines(captured)
    assert line["input_tokens"] == message.usage.input_tokens
    assert line["output_tokens"] == message.usage.output_tokens
    assert _tokens(spangate, "output") == 1


BOMB = b'{"usage": {"prompt_tokens": 1, "x": "' + b"a" * (64 << 20)
PACKERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "br": lambda data: brotli.compress(data, quality=4),
    "zstd": zstd.compress,
}


@pytest.mark.parametrize("encoding", list(PACKERS))
def test_decompression_bomb_is_relayed_untouched_and_leaves_the_facts_empty(
    fake: FakeProvider, spangate: Running, encoding: str
) -> None:
    """A small gzip, br or zstd body inflating past the retention cap reaches the client
    byte for byte; its facts stay empty, it is counted and said once, and the worker
    goes on."""
    bomb = PACKERS[encoding](BOMB)
    assert len(bomb) < MAX_RETAINED_BYTES // 16
    headers = {"content-encoding": encoding}
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
    assert [(w["encoding"], w["reason"]) for w in warnings] == [(encoding, TOO_LARGE)]
    assert _dropped(spangate, TOO_LARGE) == 2


@pytest.mark.parametrize(
    ("encoding", "reason"), [("compress", UNSUPPORTED), ("br", CORRUPT), ("zstd", CORRUPT)]
)
def test_an_answer_telemetry_cannot_read_is_counted_not_guessed(
    fake: FakeProvider, spangate: Running, encoding: str, reason: str
) -> None:
    """An answer in a coding spangate does not read (`compress`), or labelled br or zstd
    but not so encoded, is relayed as sent; its facts stay empty and it is counted with
    its reason."""
    answer = b"\x8b\x03\x80not really compressed"
    fake.script(custom(200, answer, headers={"content-encoding": encoding}))
    url = spangate.openai_base_url + "/chat/completions"
    body = b'{"model": "%s", "messages": []}' % GPT.encode()
    with capture_logs() as captured:
        assert asyncio.run(raw_post(url, body)) == (200, answer)
        settle(spangate)
    (line,) = completed_lines(captured)
    assert line["output_tokens"] is None
    assert _dropped(spangate, reason) == 1
