"""Spans per endpoint (SERVER + one CLIENT per attempt) and span-level error reporting.

Every test drives spangate with the real OpenAI / Anthropic SDKs over real sockets
and compares the exported spans with exact GenAI semantic-convention names and
values; expected ids and token counts come from what the SDK received.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from conftest import Running, basic_config
from fakeprovider import (
    FakeProvider,
    anthropic_error,
    openai_error,
    reset_after,
    stall,
    stream_error,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from test_telemetry_support import (
    CLAUDE,
    EMBED,
    ERROR_429,
    ERROR_500,
    GPT,
    INSTRUCT,
    attrs,
    claude,
    finished_spans,
    genai,
    metric_points,
    oai,
    of_kind,
    one_request,
    points_where,
    total,
)

from instrumentation import semconv as sc

HELLO: Any = [{"role": "user", "content": "hi there"}]
Start = Callable[..., Running]


def assert_server(
    server: ReadableSpan, method: str, route: str, status: int, user_agent: str
) -> None:
    """SERVER span: HTTP server conventions for the request as the app made it."""
    assert server.name == f"{method} {route}"
    assert server.kind == SpanKind.SERVER
    a = attrs(server)
    assert a[sc.HTTP_REQUEST_METHOD] == method
    assert a[sc.HTTP_ROUTE] == route
    assert a[sc.HTTP_RESPONSE_STATUS_CODE] == status
    assert a[sc.CLIENT_ADDRESS] == "127.0.0.1"
    assert a[sc.USER_AGENT_ORIGINAL] == user_agent


def assert_upstream(client: ReadableSpan, fake: FakeProvider, running: Running) -> None:
    """CLIENT span: server.address/port name the upstream provider, never spangate."""
    assert client.kind == SpanKind.CLIENT
    a = attrs(client)
    assert a[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert a[sc.SERVER_PORT] == fake.port
    assert a[sc.SERVER_PORT] != running.server.port


def ttfc_of(client: ReadableSpan) -> float:
    """The stream's time to first chunk: positive and within the span's own duration."""
    ttfc = attrs(client)[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert isinstance(ttfc, float)
    assert client.start_time is not None and client.end_time is not None
    assert 0 < ttfc <= (client.end_time - client.start_time) / 1e9
    return ttfc


OPENAI_UA = f"OpenAI/Python {openai.__version__}"
ANTHROPIC_UA = f"Anthropic/Python {anthropic.__version__}"


# --------------------------------------------------------------------------- chat completions


def test_chat_completion_spans_carry_exact_request_response_and_usage_attributes(
    fake: FakeProvider, spangate: Running
) -> None:
    """Chat: SERVER `POST /v1/chat/completions` with one CLIENT child `chat gpt-4o-mini`.

    max_completion_tokens wins over max_tokens, stop becomes a list, n=2 is reported
    as choice.count, and a non-stream has no gen_ai.request.stream.
    """
    resp = oai(spangate).chat.completions.create(
        model=GPT,
        messages=HELLO,
        temperature=0.5,
        top_p=0.9,
        max_completion_tokens=50,
        max_tokens=40,
        stop=["x", "y"],
        seed=7,
        n=2,
        frequency_penalty=0.25,
        presence_penalty=0.5,
    )
    server, client = one_request(finished_spans(spangate))
    assert_server(server, "POST", "/v1/chat/completions", 200, OPENAI_UA)
    assert server.status.status_code == StatusCode.UNSET
    assert server.parent is None
    assert client.name == "chat gpt-4o-mini"
    assert client.status.status_code == StatusCode.UNSET
    assert_upstream(client, fake, spangate)
    assert resp.usage is not None
    assert genai(client) == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: GPT,
        sc.GEN_AI_REQUEST_MAX_TOKENS: 50,
        sc.GEN_AI_REQUEST_TEMPERATURE: 0.5,
        sc.GEN_AI_REQUEST_TOP_P: 0.9,
        sc.GEN_AI_REQUEST_STOP_SEQUENCES: ["x", "y"],
        sc.GEN_AI_REQUEST_SEED: 7,
        sc.GEN_AI_REQUEST_CHOICE_COUNT: 2,
        sc.GEN_AI_REQUEST_FREQUENCY_PENALTY: 0.25,
        sc.GEN_AI_REQUEST_PRESENCE_PENALTY: 0.5,
        sc.GEN_AI_RESPONSE_ID: resp.id,
        sc.GEN_AI_RESPONSE_MODEL: resp.model,
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["stop", "stop"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: resp.usage.prompt_tokens,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: resp.usage.completion_tokens,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 0,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 0,
        sc.OPENAI_API_TYPE: "chat_completions",
        sc.OPENAI_RESPONSE_SERVICE_TIER: "default",
        sc.OPENAI_RESPONSE_SYSTEM_FINGERPRINT: resp.system_fingerprint,
    }


def test_chat_single_choice_has_no_choice_count_and_string_stop_becomes_list(
    spangate: Running,
) -> None:
    """n=1 is the default, so gen_ai.request.choice.count is absent; stop="END" → ["END"]."""
    oai(spangate).chat.completions.create(model=GPT, messages=HELLO, n=1, stop="END")
    _, client = one_request(finished_spans(spangate))
    a = attrs(client)
    assert sc.GEN_AI_REQUEST_CHOICE_COUNT not in a
    assert sc.GEN_AI_REQUEST_STREAM not in a
    assert a[sc.GEN_AI_REQUEST_STOP_SEQUENCES] == ["END"]


def test_chat_usage_reports_cached_and_reasoning_tokens(
    spangate_for: Start,
) -> None:
    """OpenAI: input includes cached tokens; cache_read and reasoning come from the details."""
    with FakeProvider(cached_tokens=6, reasoning_tokens=4) as fp:
        running = spangate_for(basic_config(fp))
        resp = oai(running).chat.completions.create(model=GPT, messages=HELLO)
        _, client = one_request(finished_spans(running))
    assert resp.usage is not None
    a = attrs(client)
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == resp.usage.prompt_tokens
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 6
    assert a[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 4
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == resp.usage.completion_tokens


def test_chat_stream_spans_have_stream_flag_ttfc_and_injected_usage(
    fake: FakeProvider, spangate: Running
) -> None:
    """Chat stream: gen_ai.request.stream=true, 0 < ttfc <= duration, usage read from the stream."""
    expected = oai_direct(fake).chat.completions.create(
        model=GPT, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    usage = next(c.usage for c in expected if c.usage is not None)
    chunks = list(oai(spangate).chat.completions.create(model=GPT, messages=HELLO, stream=True))
    server, client = one_request(finished_spans(spangate))
    assert_server(server, "POST", "/v1/chat/completions", 200, OPENAI_UA)
    assert server.status.status_code == StatusCode.UNSET
    assert client.name == "chat gpt-4o-mini"
    assert_upstream(client, fake, spangate)
    ttfc_of(client)
    got = genai(client)
    del got[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert got == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: GPT,
        sc.GEN_AI_REQUEST_STREAM: True,
        sc.GEN_AI_RESPONSE_ID: chunks[0].id,
        sc.GEN_AI_RESPONSE_MODEL: GPT,
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: usage.prompt_tokens,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: usage.completion_tokens,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 0,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 0,
        sc.OPENAI_API_TYPE: "chat_completions",
        sc.OPENAI_RESPONSE_SERVICE_TIER: "default",
        sc.OPENAI_RESPONSE_SYSTEM_FINGERPRINT: chunks[0].system_fingerprint,
    }
    assert attrs(client)[sc.SPANGATE_STREAM_OUTCOME] == "completed"


def oai_direct(fake: FakeProvider) -> openai.OpenAI:
    """An SDK client talking to the fake provider directly (the oracle)."""
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)


# --------------------------------------------------------------------------- completions


def test_text_completion_spans(fake: FakeProvider, spangate: Running) -> None:
    """Legacy completions: CLIENT `text_completion gpt-3.5-turbo-instruct`, no openai.api.type."""
    resp = oai(spangate).completions.create(
        model=INSTRUCT, prompt="hello there", max_tokens=20, stop="z", temperature=0.1
    )
    server, client = one_request(finished_spans(spangate))
    assert_server(server, "POST", "/v1/completions", 200, OPENAI_UA)
    assert client.name == f"text_completion {INSTRUCT}"
    assert_upstream(client, fake, spangate)
    assert resp.usage is not None
    assert genai(client) == {
        sc.GEN_AI_OPERATION_NAME: "text_completion",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: INSTRUCT,
        sc.GEN_AI_REQUEST_MAX_TOKENS: 20,
        sc.GEN_AI_REQUEST_TEMPERATURE: 0.1,
        sc.GEN_AI_REQUEST_STOP_SEQUENCES: ["z"],
        sc.GEN_AI_RESPONSE_ID: resp.id,
        sc.GEN_AI_RESPONSE_MODEL: INSTRUCT,
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: resp.usage.prompt_tokens,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: resp.usage.completion_tokens,
    }


def test_text_completion_stream_spans(fake: FakeProvider, spangate: Running) -> None:
    """Completions stream: stream flag, ttfc, and usage obtained by injection."""
    chunks = list(
        oai(spangate).completions.create(model=INSTRUCT, prompt="hello there", stream=True)
    )
    direct = oai_direct(fake).completions.create(model=INSTRUCT, prompt="hello there")
    assert direct.usage is not None
    server, client = one_request(finished_spans(spangate))
    assert_server(server, "POST", "/v1/completions", 200, OPENAI_UA)
    assert client.name == f"text_completion {INSTRUCT}"
    assert_upstream(client, fake, spangate)
    ttfc_of(client)
    a = attrs(client)
    assert a[sc.GEN_AI_REQUEST_STREAM] is True
    assert a[sc.GEN_AI_RESPONSE_ID] == chunks[0].id
    assert a[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == direct.usage.prompt_tokens
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == direct.usage.completion_tokens
    assert a[sc.SPANGATE_USAGE_INJECTED] is True


# --------------------------------------------------------------------------- embeddings


def test_embeddings_spans_report_dimension_and_encoding(
    fake: FakeProvider, spangate: Running
) -> None:
    """Embeddings: CLIENT `embeddings text-embedding-3-small`, dimension count, input usage."""
    resp = oai(spangate).embeddings.create(
        model=EMBED, input=["alpha", "beta"], dimensions=16, encoding_format="float"
    )
    server, client = one_request(finished_spans(spangate))
    assert_server(server, "POST", "/v1/embeddings", 200, OPENAI_UA)
    assert client.name == "embeddings text-embedding-3-small"
    assert_upstream(client, fake, spangate)
    assert len(resp.data[0].embedding) == 16
    assert genai(client) == {
        sc.GEN_AI_OPERATION_NAME: "embeddings",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: EMBED,
        sc.GEN_AI_REQUEST_ENCODING_FORMATS: ["float"],
        sc.GEN_AI_RESPONSE_MODEL: EMBED,
        sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT: 16,
        sc.GEN_AI_USAGE_INPUT_TOKENS: resp.usage.prompt_tokens,
    }


def test_embeddings_dimension_counted_from_base64_vectors(spangate: Running) -> None:
    """The SDK's default base64 encoding still yields the vector dimension (8 floats)."""
    oai(spangate).embeddings.create(model=EMBED, input="alpha")
    _, client = one_request(finished_spans(spangate))
    assert attrs(client)[sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 8
    assert attrs(client)[sc.GEN_AI_REQUEST_ENCODING_FORMATS] == ["base64"]


# --------------------------------------------------------------------------- Responses API


def test_responses_api_spans(fake: FakeProvider, spangate: Running) -> None:
    """Responses: `chat` with openai.api.type=responses; max_output_tokens → max_tokens."""
    resp = oai(spangate).responses.create(
        model=GPT, input="hi there", max_output_tokens=30, temperature=0.3, top_p=0.8
    )
    server, client = one_request(finished_spans(spangate))
    assert_server(server, "POST", "/v1/responses", 200, OPENAI_UA)
    assert client.name == "chat gpt-4o-mini"
    assert_upstream(client, fake, spangate)
    assert resp.usage is not None
    assert genai(client) == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: GPT,
        sc.GEN_AI_REQUEST_MAX_TOKENS: 30,
        sc.GEN_AI_REQUEST_TEMPERATURE: 0.3,
        sc.GEN_AI_REQUEST_TOP_P: 0.8,
        sc.GEN_AI_RESPONSE_ID: resp.id,
        sc.GEN_AI_RESPONSE_MODEL: GPT,
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: resp.usage.input_tokens,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: resp.usage.output_tokens,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 0,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 0,
        sc.OPENAI_API_TYPE: "responses",
        sc.OPENAI_RESPONSE_SERVICE_TIER: "default",
    }


def test_responses_api_stream_spans(fake: FakeProvider, spangate: Running) -> None:
    """Responses stream: usage from response.completed, ttfc, stream flag, no injection."""
    with oai(spangate).responses.stream(model=GPT, input="hi there") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    server, client = one_request(finished_spans(spangate))
    assert_server(server, "POST", "/v1/responses", 200, OPENAI_UA)
    assert client.name == "chat gpt-4o-mini"
    assert_upstream(client, fake, spangate)
    ttfc_of(client)
    assert final.usage is not None
    a = attrs(client)
    assert a[sc.GEN_AI_REQUEST_STREAM] is True
    assert a[sc.OPENAI_API_TYPE] == "responses"
    assert a[sc.GEN_AI_RESPONSE_ID] == final.id
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == final.usage.input_tokens
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == final.usage.output_tokens
    assert sc.SPANGATE_USAGE_INJECTED not in a


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_messages_spans_input_includes_cache_tokens(spangate_for: Start) -> None:
    """Anthropic: input = input + cache_read + cache_creation; request params exact."""
    with FakeProvider(cached_tokens=7, cache_creation_tokens=5) as fp:
        running = spangate_for(basic_config(fp))
        msg = claude(running).messages.create(
            model=CLAUDE,
            max_tokens=100,
            messages=HELLO,
            stop_sequences=["q"],
            extra_body={"temperature": 0.2, "top_p": 0.7, "top_k": 5},
        )
        server, client = one_request(finished_spans(running))
        assert_server(server, "POST", "/v1/messages", 200, ANTHROPIC_UA)
        assert client.name == "chat claude-sonnet-4-6"
        assert_upstream(client, fp, running)
    assert genai(client) == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "anthropic",
        sc.GEN_AI_REQUEST_MODEL: CLAUDE,
        sc.GEN_AI_REQUEST_MAX_TOKENS: 100,
        sc.GEN_AI_REQUEST_TEMPERATURE: 0.2,
        sc.GEN_AI_REQUEST_TOP_P: 0.7,
        sc.GEN_AI_REQUEST_TOP_K: 5,
        sc.GEN_AI_REQUEST_STOP_SEQUENCES: ["q"],
        sc.GEN_AI_RESPONSE_ID: msg.id,
        sc.GEN_AI_RESPONSE_MODEL: CLAUDE,
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["end_turn"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: msg.usage.input_tokens + 7 + 5,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: msg.usage.output_tokens,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 7,
        sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 5,
    }


def test_anthropic_messages_stream_spans(spangate_for: Start) -> None:
    """messages.stream: usage from message_start + message_delta, cache included, ttfc set."""
    with FakeProvider(cached_tokens=3, cache_creation_tokens=2) as fp:
        running = spangate_for(basic_config(fp))
        with claude(running).messages.stream(
            model=CLAUDE, max_tokens=100, messages=HELLO
        ) as stream:
            for _ in stream:
                pass
            final = stream.get_final_message()
        server, client = one_request(finished_spans(running))
        assert_server(server, "POST", "/v1/messages", 200, ANTHROPIC_UA)
        assert_upstream(client, fp, running)
    assert client.name == "chat claude-sonnet-4-6"
    ttfc_of(client)
    got = genai(client)
    del got[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert got == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "anthropic",
        sc.GEN_AI_REQUEST_MODEL: CLAUDE,
        sc.GEN_AI_REQUEST_MAX_TOKENS: 100,
        sc.GEN_AI_REQUEST_STREAM: True,
        sc.GEN_AI_RESPONSE_ID: final.id,
        sc.GEN_AI_RESPONSE_MODEL: CLAUDE,
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["end_turn"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: final.usage.input_tokens + 3 + 2,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: final.usage.output_tokens,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 3,
        sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 2,
    }
    assert attrs(client)[sc.SPANGATE_STREAM_OUTCOME] == "completed"


# --------------------------------------------------------------------------- non-inference


def test_count_tokens_is_a_plain_client_span_without_genai_usage(
    fake: FakeProvider, spangate: Running
) -> None:
    """count_tokens is not inference: CLIENT `POST /v1/messages/count_tokens`, no usage."""
    claude(spangate).messages.count_tokens(model=CLAUDE, messages=HELLO)
    server, client = one_request(finished_spans(spangate))
    assert_server(server, "POST", "/v1/messages/count_tokens", 200, ANTHROPIC_UA)
    assert client.name == "POST /v1/messages/count_tokens"
    assert_upstream(client, fake, spangate)
    a = attrs(client)
    assert a[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert sc.GEN_AI_OPERATION_NAME not in a
    assert not [k for k in a if k.startswith("gen_ai.usage.")]


def test_models_list_is_a_plain_client_span_without_genai_usage(
    fake: FakeProvider, spangate: Running
) -> None:
    """GET /v1/models: CLIENT `GET /v1/models`, no gen_ai.operation.name and no usage."""
    oai(spangate).models.list()
    server, client = one_request(finished_spans(spangate))
    assert_server(server, "GET", "/v1/models", 200, OPENAI_UA)
    assert client.name == "GET /v1/models"
    assert_upstream(client, fake, spangate)
    a = attrs(client)
    assert sc.GEN_AI_OPERATION_NAME not in a
    assert not [k for k in a if k.startswith("gen_ai.usage.")]


# --------------------------------------------------------------------------- providers


def test_azure_openai_provider_name_and_deployment_route(
    fake: FakeProvider, spangate: Running
) -> None:
    """Azure: provider azure.ai.openai, SERVER route templated on {deployment}."""
    client_sdk = openai.AzureOpenAI(
        azure_endpoint=spangate.url, api_version="2024-10-21", api_key="k-test", max_retries=0
    )
    resp = client_sdk.chat.completions.create(model="my-gpt", messages=HELLO)
    server, client = one_request(finished_spans(spangate))
    route = "/openai/deployments/{deployment}/chat/completions"
    assert_server(server, "POST", route, 200, f"AzureOpenAI/Python {openai.__version__}")
    assert attrs(server)[sc.URL_PATH] == "/openai/deployments/my-gpt/chat/completions"
    assert client.name == "chat my-gpt"
    assert_upstream(client, fake, spangate)
    a = attrs(client)
    assert a[sc.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"
    assert a[sc.GEN_AI_REQUEST_MODEL] == "my-gpt"
    assert a[sc.GEN_AI_RESPONSE_ID] == resp.id


def test_custom_provider_name_from_config(fake: FakeProvider, spangate_for: Start) -> None:
    """providers.NAME.provider_name (vllm) is gen_ai.provider.name in spans and metrics."""
    config = {
        "providers": {
            "local": {"kind": "openai", "base_url": fake.url, "provider_name": "vllm"},
        }
    }
    running = spangate_for(config)
    oai(running).chat.completions.create(model="smollm2", messages=HELLO)
    _, client = one_request(finished_spans(running))
    assert client.name == "chat smollm2"
    assert attrs(client)[sc.GEN_AI_PROVIDER_NAME] == "vllm"
    assert attrs(client)[sc.SPANGATE_PROVIDER] == "local"
    points = metric_points(running, sc.METRIC_OPERATION_DURATION)
    assert [p.attributes[sc.GEN_AI_PROVIDER_NAME] for p in points] == ["vllm"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "behaviour", "accepted"),
    [
        (429, openai_error(429, "rate_limit_exceeded"), ERROR_429),
        (500, openai_error(500), ERROR_500),
    ],
)
def test_relayed_upstream_error_marks_client_span_error(
    fake: FakeProvider, spangate: Running, status: int, behaviour: Any, accepted: set[str]
) -> None:
    """An upstream 429/500 relayed to the client: CLIENT span ERROR, low-cardinality error.type."""
    fake.script(behaviour)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(spangate).chat.completions.create(model=GPT, messages=HELLO)
    assert raised.value.status_code == status
    server, client = one_request(finished_spans(spangate))
    assert client.status.status_code == StatusCode.ERROR
    assert attrs(client)[sc.ERROR_TYPE] in accepted
    assert attrs(client)[sc.HTTP_RESPONSE_STATUS_CODE] == status
    assert attrs(server)[sc.HTTP_RESPONSE_STATUS_CODE] == status
    if status >= 500:
        assert server.status.status_code == StatusCode.ERROR
        assert attrs(server)[sc.ERROR_TYPE] == str(status)
    else:
        # HTTP semconv: a 4xx is the caller's problem; the SERVER span stays UNSET.
        assert server.status.status_code == StatusCode.UNSET


def test_anthropic_overloaded_529_is_an_error_on_both_spans(
    fake: FakeProvider, spangate: Running
) -> None:
    """Anthropic 529 overloaded_error: CLIENT ERROR with error.type, SERVER ERROR (5xx)."""
    fake.script(anthropic_error(529))
    with pytest.raises(anthropic.APIStatusError):
        claude(spangate).messages.create(model=CLAUDE, max_tokens=10, messages=HELLO)
    server, client = one_request(finished_spans(spangate))
    assert client.status.status_code == StatusCode.ERROR
    assert attrs(client)[sc.ERROR_TYPE] in {"529", "overloaded_error", "transient"}
    assert server.status.status_code == StatusCode.ERROR


def test_malformed_json_rejected_by_spangate_has_server_span_only(spangate: Running) -> None:
    """spangate's own 400: SERVER error.type=bad_request, status UNSET, and no CLIENT span."""
    request = urllib.request.Request(
        spangate.openai_base_url + "/chat/completions",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 400
    spans = finished_spans(spangate)
    assert of_kind(spans, SpanKind.CLIENT) == []
    (server,) = spans
    assert server.kind == SpanKind.SERVER
    assert server.name == "POST /v1/chat/completions"
    assert server.status.status_code == StatusCode.UNSET
    assert attrs(server)[sc.ERROR_TYPE] == "bad_request"
    assert attrs(server)[sc.HTTP_RESPONSE_STATUS_CODE] == 400


def test_stream_broken_after_content_is_interrupted(fake: FakeProvider, spangate: Running) -> None:
    """A TCP reset mid-stream: CLIENT ERROR, outcome stream_interrupted, SERVER ERROR, metric +1."""
    fake.script(reset_after(3))
    with pytest.raises(openai.APIError):
        for _ in oai(spangate).chat.completions.create(model=GPT, messages=HELLO, stream=True):
            pass
    server, client = one_request(finished_spans(spangate))
    assert client.status.status_code == StatusCode.ERROR
    assert attrs(client)[sc.SPANGATE_STREAM_OUTCOME] == "stream_interrupted"
    assert attrs(client)[sc.ERROR_TYPE] == "stream_interrupted"
    assert server.status.status_code == StatusCode.ERROR
    points = metric_points(spangate, sc.METRIC_INTERRUPTED_STREAMS)
    assert total(points_where(points, spangate__provider="openai")) == 1
    assert total(points) == 1


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_stream_whose_first_event_is_an_error_sets_error_type(
    fake: FakeProvider, spangate: Running, dialect: str
) -> None:
    """A 200 stream opening with an in-band error event: CLIENT span ERROR with error.type."""
    fake.script(stream_error(after=0))
    if dialect == "openai":
        with pytest.raises(openai.APIError):
            for _ in oai(spangate).chat.completions.create(model=GPT, messages=HELLO, stream=True):
                pass
    else:
        with (
            pytest.raises(anthropic.APIError),
            claude(spangate).messages.stream(model=CLAUDE, max_tokens=10, messages=HELLO) as s,
        ):
            for _ in s:
                pass
    _, client = one_request(finished_spans(spangate))
    assert client.status.status_code == StatusCode.ERROR
    assert attrs(client).get(sc.ERROR_TYPE)


# --------------------------------------------------------------------------- more request facts


def test_request_service_tier_and_json_output_type(spangate: Running) -> None:
    """service_tier ≠ auto → openai.request.service_tier; json_object → gen_ai.output.type json."""
    client = oai(spangate)
    client.chat.completions.create(
        model=GPT, messages=HELLO, service_tier="flex", response_format={"type": "json_object"}
    )
    client.chat.completions.create(model=GPT, messages=HELLO, service_tier="auto")
    flex, auto = (
        c for c in of_kind(finished_spans(spangate), SpanKind.CLIENT) if c.name.startswith("chat")
    )
    assert attrs(flex)[sc.OPENAI_REQUEST_SERVICE_TIER] == "flex"
    assert attrs(flex)[sc.GEN_AI_OUTPUT_TYPE] == "json"
    assert sc.OPENAI_REQUEST_SERVICE_TIER not in attrs(auto)
    assert sc.GEN_AI_OUTPUT_TYPE not in attrs(auto)


# --------------------------------------------------------------------------- attempts


def test_each_attempt_is_its_own_client_span_under_one_server_span(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """Failover: a 500 then a success → two CLIENT children (attempt 1 ERROR, attempt 2 OK).

    Each attempt's traceparent went upstream naming its own CLIENT span.
    """
    config = basic_config(
        fake,
        models={
            "duo": {
                "targets": [
                    {"provider": "openai", "model": GPT},
                    {"provider": "openai", "model": "gpt-4o"},
                ]
            }
        },
    )
    running = spangate_for(config)
    fake.script(openai_error(500))
    resp = oai(running).chat.completions.create(model="duo", messages=HELLO)
    assert resp.model == "gpt-4o"
    spans = finished_spans(running)
    (server,) = of_kind(spans, SpanKind.SERVER)
    clients = sorted(of_kind(spans, SpanKind.CLIENT), key=lambda s: attrs(s)[sc.SPANGATE_ATTEMPT])
    assert [c.name for c in clients] == ["chat gpt-4o-mini", "chat gpt-4o"]
    assert server.context is not None
    for client in clients:
        assert client.parent is not None and client.context is not None
        assert client.parent.span_id == server.context.span_id
        assert client.context.trace_id == server.context.trace_id
    first, second = clients
    assert first.status.status_code == StatusCode.ERROR
    assert attrs(first)[sc.ERROR_TYPE] in ERROR_500
    assert second.status.status_code == StatusCode.UNSET
    assert attrs(second)[sc.GEN_AI_RESPONSE_ID] == resp.id
    assert attrs(server)[sc.SPANGATE_ATTEMPTS] == 2
    assert attrs(server)[sc.HTTP_RESPONSE_STATUS_CODE] == 200
    assert server.status.status_code == StatusCode.UNSET
    sent = [r.headers["traceparent"].split("-")[2] for r in fake.received[-2:]]
    assert sent == [f"{c.context.span_id:016x}" for c in clients if c.context is not None]


# --------------------------------------------------------------------------- regressions
# Both failed at commit d0d89b7 (see the test_telemetry report); fixed since.


def test_client_abandoning_a_stream_ends_the_client_span_with_an_error(
    fake: FakeProvider, spangate: Running
) -> None:
    """The app closes a stream mid-way: CLIENT span ERROR, outcome client_disconnected.

    Regression: the relay only noticed a failed write, not the handler being cancelled
    while it waited on the provider, so the CLIENT span looked like a success.
    """
    fake.script(stall(after=3, seconds=30))
    stream = oai(spangate).chat.completions.create(model=GPT, messages=HELLO, stream=True)
    chunks = iter(stream)
    # All three events before the stall have reached the app, so spangate is now waiting
    # on the provider (not writing) when the app goes away.
    for _ in range(3):
        next(chunks)
    stream.close()
    assert fake.wait_for_disconnects(1, within=10)
    server, client = one_request(finished_spans(spangate))
    assert attrs(server)[sc.ERROR_TYPE] == "client_disconnected"
    # Not a provider failure: no interrupted-stream count either way.
    assert metric_points(spangate, sc.METRIC_INTERRUPTED_STREAMS) == []
    assert attrs(client).get(sc.SPANGATE_STREAM_OUTCOME) == "client_disconnected"
    assert attrs(client).get(sc.ERROR_TYPE) == "client_disconnected"
    assert client.status.status_code == StatusCode.ERROR


def test_passthrough_path_with_an_id_keeps_route_and_span_names_low_cardinality(
    spangate: Running,
) -> None:
    """GET /v1/models/gpt-4o: neither http.route nor the span names contain the model id.

    Regression: pass-through paths used the raw path as http.route and in span names.
    """
    oai(spangate).models.retrieve("gpt-4o")
    server, client = one_request(finished_spans(spangate))
    assert "gpt-4o" not in attrs(server).get(sc.HTTP_ROUTE, "")
    assert "gpt-4o" not in server.name
    assert "gpt-4o" not in client.name
    assert server.name.startswith("GET")
