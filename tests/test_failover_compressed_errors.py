"""Failover reads compressed error bodies: the SDKs accept gzip, so providers answer errors
gzip-compressed, and the classifier must see what the error says, not its gzip bytes.

The compressed twins of the uncompressed tests in test_failover_attempts.py: the real
SDKs (max_retries=0) are the clients, each fake one deployment, the trace read from the
in-memory exporter. The client still gets the provider's compressed bytes as sent.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import openai
import pytest
from conftest import Running
from fakeprovider import gzipped_reply, openai_error
from test_failover_support import (
    GPT,
    HELLO,
    Fakes,
    attrs,
    chat,
    client_spans,
    config,
    get_status,
    label,
    only_server_span,
    start_fakes,
    targets,
)

Start = Callable[..., Running]


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


def ask(running: Running) -> Any:
    """One chat completion with the openai SDK (which sends Accept-Encoding: gzip)."""
    with openai.OpenAI(
        base_url=running.openai_base_url, api_key="sk-test", max_retries=0
    ) as client:
        return client.chat.completions.with_raw_response.create(model="m", messages=HELLO)


async def post_raw(base: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """POST a chat request accepting gzip; the answer's bytes as they came, not inflated."""
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(
            base + "/v1/chat/completions", json=body, headers={"Accept-Encoding": "gzip"}
        ) as resp,
    ):
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()


async def test_a_gzipped_insufficient_quota_is_quota_and_moves_on(
    fakes: Fakes, spangate_for: Start
) -> None:
    """A gzip-compressed 429 insufficient_quota is an empty wallet, not a rate limit: its
    attempt is classed quota (error.type insufficient_quota, so in the target's recent
    errors too) and the next target serves at once."""
    fakes.a.script(gzipped_reply(openai_error(429, "insufficient_quota")))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    raw = ask(running)
    assert raw.parse().choices[0].message.content == f"Hello from {GPT}: hi there"
    assert raw.headers["x-spangate-target"] == label("b")
    first, _ = client_spans(running)
    assert attrs(first)["spangate.failure_class"] == "quota"
    assert attrs(first)["error.type"] == "insufficient_quota"
    target = (await get_status(running))["targets"][label("a")]
    assert [e["class"] for e in target["recent_errors"]] == ["quota"]


async def test_a_compressed_error_that_is_not_failed_over_reaches_the_client_as_sent(
    fakes: Fakes, spangate_for: Start
) -> None:
    """A gzip-compressed context_length_exceeded with no context fallback is relayed: the
    client gets the provider's compressed bytes and its Content-Encoding unchanged, while
    the attempt was classified by what the inflated body says."""
    error = gzipped_reply(openai_error(400, "context_length_exceeded"))
    fakes.a.script(error)
    fakes.c.script(error)  # the same reply, fetched directly for comparison
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    status, headers, body = await post_raw(running.url, chat())
    want_status, want_headers, want_body = await post_raw(fakes.c.url, chat(GPT))
    assert status == want_status == 400
    assert body == want_body
    assert headers["content-encoding"] == want_headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(body))["error"]["code"] == "context_length_exceeded"
    assert fakes.counts()["b"] == 0
    (only,) = client_spans(running)
    assert attrs(only)["error.type"] == "context_length_exceeded"
    assert attrs(only_server_span(running))["spangate.attempts"] == 1


def test_an_error_that_inflates_past_the_bound_is_classified_by_its_status(
    fakes: Fakes, spangate_for: Start
) -> None:
    """A compressed error body is inflated only up to 64 KiB (an error body is small; a
    bomb must cost little): one that inflates past it is classified by its status alone,
    so a 429 insufficient_quota padded past the bound counts as a rate limit."""
    padded = openai_error(429, "insufficient_quota", "x" * (80 * 1024))
    fakes.a.script(gzipped_reply(padded))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    assert ask(running).headers["x-spangate-target"] == label("b")
    first, _ = client_spans(running)
    assert attrs(first)["spangate.failure_class"] == "rate_limited"
    assert attrs(first)["error.type"] == "429"
