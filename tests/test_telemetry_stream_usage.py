"""OpenAI stream usage injection, end to end: usage for telemetry, invisible to the client.

The oracle is the fake provider called directly with the same request. Its chunk
ids are derived from the request body it received (which injection changes), so
byte comparisons swap the one id for the other and compare every other byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import Running, basic_config
from fakeprovider import FakeProvider
from test_telemetry_support import (
    GPT,
    attrs,
    finished_spans,
    metric_points,
    oai,
    one_request,
    raw_post,
    sse_data_events,
)

from instrumentation import semconv as sc

Start = Callable[..., Running]
BODY = (
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}], '
    b'"stream": true}'
)
HELLO: Any = [{"role": "user", "content": "hi there"}]
_ID = re.compile(rb'"id":"((?:chatcmpl-|call_)[A-Za-z0-9]+)"')


def _ids(raw: bytes) -> list[bytes]:
    return list(dict.fromkeys(_ID.findall(raw)))


def same_id(raw: bytes, like: bytes) -> bytes:
    """`raw` with its ids (completion and tool-call ids, in order) replaced by those of `like`."""
    mine, theirs = _ids(raw), _ids(like)
    assert len(mine) == len(theirs), (mine, theirs)
    for old, new in zip(mine, theirs, strict=True):
        raw = raw.replace(old, new)
    return raw


async def proxied_and_direct(
    fake: FakeProvider, running: Running, body: bytes
) -> tuple[bytes, bytes]:
    status, proxied = await raw_post(running.openai_base_url + "/chat/completions", body)
    assert status == 200
    upstream = fake.last
    status, direct = await raw_post(fake.openai_base_url + "/chat/completions", body)
    assert status == 200
    assert upstream.body != b""
    return proxied, direct


async def test_injected_usage_is_read_for_telemetry_and_hidden_from_the_client(
    fake: FakeProvider, spangate: Running
) -> None:
    """Without include_usage: upstream asked for usage, span has it, client sees no usage chunk."""
    proxied, direct = await proxied_and_direct(fake, spangate, BODY)
    upstream_body = fake.received[-2].json()
    assert upstream_body["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in upstream_body.items() if k != "stream_options"} == json.loads(BODY)
    # Every event the provider would have sent without injection, and no usage-only chunk.
    got, want = sse_data_events(proxied), sse_data_events(same_id(direct, proxied))
    assert len(got) == len(want)
    assert [json.loads(e).get("choices") for e in got[:-1]] == [
        json.loads(e).get("choices") for e in want[:-1]
    ]
    assert got[-1] == want[-1] == b"[DONE]"
    assert not [e for e in got[:-1] if json.loads(e).get("usage")]
    _, client = one_request(finished_spans(spangate))
    usage = next(c.usage for c in usage_oracle(fake) if c.usage is not None)
    a = attrs(client)
    assert a[sc.SPANGATE_USAGE_INJECTED] is True
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == usage.prompt_tokens
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == usage.completion_tokens


_MSG = b'"messages": [{"role": "user", "content": "hi there"}]'
_TOOL = (
    b'"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": '
    b'{"type": "object", "properties": {"city": {"type": "string"}}}}}]'
)


@pytest.mark.parametrize(
    "body",
    [
        BODY,
        b'{"model": "gpt-4o-mini", ' + _MSG + b', "stream": true, "n": 2}',
        b'{"model": "gpt-4o-mini", ' + _MSG + b", " + _TOOL + b', "stream": true}',
        b'{"model":"gpt-4o-mini",'
        + _MSG
        + b',"stream":true,"stream_options":{"include_usage":false}}',
        b'{"model": "gpt-4o-mini", ' + _MSG + b', "stream": true,\n "stream_options": '
        b'{"include_obfuscation": false}}',
    ],
    ids=["plain", "n=2", "tool-call", "include_usage-false", "other-stream-option"],
)
async def test_injected_stream_bytes_identical_to_uninjected_provider_stream(
    fake: FakeProvider, spangate: Running, body: bytes
) -> None:
    """README promise: the client's bytes equal what the provider sends without injection.

    Regression (failed at d0d89b7): the `"usage":null` member OpenAI adds to every chunk
    once include_usage is set reached the client; only the final usage chunk was removed.
    """
    proxied, direct = await proxied_and_direct(fake, spangate, body)
    assert fake.received[-2].json()["stream_options"]["include_usage"] is True
    assert proxied == same_id(direct, proxied)


def test_injected_stream_chunks_seen_by_the_sdk_equal_the_direct_stream(
    fake: FakeProvider, spangate: Running
) -> None:
    """Through the SDK, every chunk equals the direct provider's (ids aside); no usage surfaces."""
    via = list(oai(spangate).chat.completions.create(model=GPT, messages=HELLO, stream=True))
    direct = list(
        openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
        .chat.completions.create(model=GPT, messages=HELLO, stream=True)
    )  # fmt: skip
    assert len(via) == len(direct)
    for a, b in zip(via, direct, strict=True):
        assert a.usage is None
        assert a.model_dump(exclude={"id"}) == b.model_dump(exclude={"id"})


def usage_oracle(fake: FakeProvider) -> list[Any]:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    return list(
        client.chat.completions.create(
            model=GPT, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )


async def test_client_requested_usage_is_left_alone(fake: FakeProvider, spangate: Running) -> None:
    """include_usage from the client: body goes unchanged, the usage chunk reaches the client."""
    body = (
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}], '
        b'"stream": true, "stream_options": {"include_usage": true}}'
    )
    proxied, direct = await proxied_and_direct(fake, spangate, body)
    assert fake.received[-2].body == body
    assert proxied == direct
    usage_chunks = [e for e in sse_data_events(proxied)[:-1] if json.loads(e).get("usage")]
    assert len(usage_chunks) == 1
    usage = json.loads(usage_chunks[0])["usage"]
    _, client = one_request(finished_spans(spangate))
    a = attrs(client)
    assert sc.SPANGATE_USAGE_INJECTED not in a
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == usage["prompt_tokens"]
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == usage["completion_tokens"]


def test_client_requested_usage_reaches_the_sdk(spangate: Running) -> None:
    """Through the SDK with include_usage: the final chunk carries usage, as the provider sent."""
    chunks = list(
        oai(spangate).chat.completions.create(
            model=GPT, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].choices == []


async def test_passthrough_provider_sends_body_unchanged_and_records_no_usage(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """stream_usage: passthrough → upstream body byte-identical, no usage and no injection flag."""
    config = basic_config(fake)
    config["providers"]["openai"]["stream_usage"] = "passthrough"
    running = spangate_for(config)
    proxied, direct = await proxied_and_direct(fake, running, BODY)
    assert fake.received[-2].body == BODY
    assert proxied == direct
    _, client = one_request(finished_spans(running))
    a = attrs(client)
    assert sc.SPANGATE_USAGE_INJECTED not in a
    assert not [k for k in a if k.startswith("gen_ai.usage.")]
    # Token usage is recorded only when the provider reports it: never guessed.
    assert metric_points(running, sc.METRIC_TOKEN_USAGE) == []
