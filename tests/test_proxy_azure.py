"""Azure OpenAI deployment paths (`/openai/deployments/{deployment}/...`): the deployment
in the URL is the model, and the body is read on arrival as on any other inference path,
so an Azure stream gets usage injection and stream telemetry like an OpenAI stream.

Driven with the real `openai.AzureOpenAI` client; the oracle is the fake provider called
directly with the same client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import Running, basic_config
from fakeprovider import FakeProvider
from structlog.testing import capture_logs
from test_telemetry_support import (
    attrs,
    completed_lines,
    finished_spans,
    metric_points,
    one_request,
    raw_post,
    settle,
)

from instrumentation import semconv as sc

Start = Callable[..., Running]
VERSION = "2024-10-21"  # the api_version basic_config gives the azure provider
DEPLOYMENT = "my-gpt"
HELLO: Any = [{"role": "user", "content": "hi there"}]
#: USD per 1M tokens for the deployment (no shipped price names it).
PRICE = {"input": 1000.0, "output": 2000.0}


def azure(endpoint: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=endpoint,
        azure_deployment=DEPLOYMENT,
        api_version=VERSION,
        api_key="az-key",
        max_retries=0,
    )


def priced(fake: FakeProvider, spangate_for: Start) -> Running:
    return spangate_for(basic_config(fake, telemetry={"prices": {DEPLOYMENT: PRICE}}))


def test_azure_chat_stream_asks_upstream_for_usage_and_hides_it_from_the_client(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """An Azure deployment chat stream the client asked no usage of: spangate sets
    `stream_options.include_usage` upstream, the client's chunks equal the provider's
    without it (no usage chunk, no `usage` member), and the telemetry has the stream's
    tokens, cost, stream flag and time to first chunk."""
    running = priced(fake, spangate_for)
    with capture_logs() as captured, azure(running.url) as client:
        via = list(client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
        settle(running)
    upstream = fake.last
    assert upstream.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert upstream.json()["stream_options"] == {"include_usage": True}
    with azure(fake.url) as client:
        direct = list(client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
        usage = next(
            chunk.usage
            for chunk in client.chat.completions.create(
                model="gpt-4o",
                messages=HELLO,
                stream=True,
                stream_options={"include_usage": True},
            )
            if chunk.usage is not None
        )
    assert [c.model_dump(exclude={"id"}) for c in via] == [
        c.model_dump(exclude={"id"}) for c in direct
    ]
    assert all(c.usage is None and c.choices for c in via)

    server, span = one_request(finished_spans(running))
    assert attrs(server)[sc.HTTP_ROUTE] == "/openai/deployments/{deployment}/chat/completions"
    a = attrs(span)
    assert a[sc.SPANGATE_USAGE_INJECTED] is True
    assert a[sc.GEN_AI_REQUEST_STREAM] is True
    assert a[sc.GEN_AI_REQUEST_MODEL] == DEPLOYMENT
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == usage.prompt_tokens
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == usage.completion_tokens
    cost = (usage.prompt_tokens * PRICE["input"] + usage.completion_tokens * PRICE["output"]) / 1e6
    assert a[sc.SPANGATE_COST_USD] == pytest.approx(cost, rel=1e-9)
    assert a[sc.SPANGATE_STREAM_OUTCOME] == "completed"
    assert a[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    (ttfc,) = metric_points(running, sc.METRIC_TIME_TO_FIRST_CHUNK)
    assert ttfc.count == 1
    (line,) = completed_lines(captured)
    assert line["stream"] is True
    assert line["model"] == DEPLOYMENT
    assert (line["input_tokens"], line["output_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )


async def test_azure_completions_stream_gets_usage_injected_and_stripped(
    fake: FakeProvider, spangate: Running
) -> None:
    """Legacy completions on a deployment path, a body without `model`: usage asked for
    upstream, the client's bytes those of the provider's stream without it."""
    path = f"/openai/deployments/{DEPLOYMENT}/completions?api-version={VERSION}"
    body = b'{"prompt": "hi there", "stream": true}'
    status, proxied = await raw_post(spangate.url + path, body, {"api-key": "az-key"})
    assert status == 200
    assert fake.last.json()["stream_options"] == {"include_usage": True}
    status, direct = await raw_post(fake.url + path, body, {"api-key": "az-key"})
    assert status == 200
    assert b'"usage"' not in proxied
    assert _without_ids(proxied) == _without_ids(direct)
    _, span = one_request(finished_spans(spangate))
    assert attrs(span)[sc.GEN_AI_USAGE_OUTPUT_TOKENS] > 0


def _without_ids(stream: bytes) -> list[Any]:
    events = [json.loads(e[6:]) for e in stream.split(b"\n\n") if e.startswith(b"data: {")]
    return [{k: v for k, v in e.items() if k != "id"} for e in events]


def test_azure_stream_with_client_asked_usage_is_relayed_as_sent(
    fake: FakeProvider, spangate: Running
) -> None:
    """A client that asks for usage itself: nothing injected, its usage chunk reaches it."""
    with azure(spangate.url) as client:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    _, span = one_request(finished_spans(spangate))
    assert sc.SPANGATE_USAGE_INJECTED not in attrs(span)
    assert attrs(span)[sc.GEN_AI_USAGE_INPUT_TOKENS] == chunks[-1].usage.prompt_tokens


def test_azure_non_stream_call_goes_as_sent_and_routes_on_the_deployment(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """A non-stream deployment call is unchanged by reading its body: the bytes go as sent
    (nothing injected), the deployment, not the body's `model`, picks the route and is the
    request model, and the non-stream response's usage is recorded."""
    running = spangate_for(
        basic_config(
            fake, models={DEPLOYMENT: {"targets": [{"provider": "azure", "model": DEPLOYMENT}]}}
        )
    )
    with azure(running.url) as client:
        got = client.chat.completions.create(model="gpt-4o", messages=HELLO)
    upstream = fake.last
    with azure(fake.url) as client:
        want = client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert got.model_dump(exclude={"id"}) == want.model_dump(exclude={"id"})
    assert upstream.body == fake.last.body
    assert "stream_options" not in upstream.json()
    _, span = one_request(finished_spans(running))
    a = attrs(span)
    assert a[sc.SPANGATE_ROUTE] == DEPLOYMENT
    assert a[sc.GEN_AI_REQUEST_MODEL] == DEPLOYMENT
    assert sc.GEN_AI_REQUEST_STREAM not in a
    assert got.usage is not None
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == got.usage.prompt_tokens


@pytest.mark.parametrize(
    "body",
    [b'{"stream": true, "messages": [', b"stream=true", b'["stream"]', b'{"stream": "yes"}', b""],
    ids=["truncated", "form", "array", "stream-not-bool", "empty"],
)
async def test_azure_body_spangate_cannot_read_is_forwarded_as_sent(
    fake: FakeProvider, spangate: Running, body: bytes
) -> None:
    """The deployment names the model, so an Azure body that is not a JSON object with
    the fields' types is no error of spangate's: it goes upstream byte for byte, for
    the provider to refuse, and its answer reaches the client."""
    path = f"/openai/deployments/{DEPLOYMENT}/chat/completions?api-version={VERSION}"
    status, proxied = await raw_post(spangate.url + path, body, {"api-key": "az-key"})
    upstream = fake.last
    assert upstream.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert upstream.body == body
    direct_status, direct = await raw_post(fake.url + path, body, {"api-key": "az-key"})
    assert (status, proxied) == (direct_status, direct)
