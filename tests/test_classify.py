"""The failure classifier: real provider error bodies → failure classes, in one table."""

from __future__ import annotations

import pytest

from proxy.classify import (
    _error_fields,
    classify_exception,
    classify_response,
    classify_stream_end,
    classify_stream_error,
    retry_after_seconds,
)
from proxy.providers.anthropic import AnthropicAdapter
from proxy.providers.openai import OpenAIAdapter
from proxy.sse import SSEEvent

OPENAI_RATE = (
    b'{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-x on '
    b'requests per min (RPM): Limit 3, Used 3, Requested 1.","type":"requests",'
    b'"param":null,"code":"rate_limit_exceeded"}}'
)
OPENAI_QUOTA = (
    b'{"error":{"message":"You exceeded your current quota, please check your plan and '
    b'billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}'
)
OPENAI_QUOTA_NULL_CODE = (
    b'{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota",'
    b'"param":null,"code":null}}'
)
OPENAI_CONTEXT = (
    b'{"error":{"message":"This model\'s maximum context length is 128000 tokens. However, '
    b'your messages resulted in 130000 tokens.","type":"invalid_request_error",'
    b'"param":"messages","code":"context_length_exceeded"}}'
)
OPENAI_KEY = (
    b'{"error":{"message":"Incorrect API key provided: sk-abc***.","type":"invalid_request_error",'
    b'"param":null,"code":"invalid_api_key"}}'
)
OPENAI_MODEL = (
    b'{"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.",'
    b'"type":"invalid_request_error","param":null,"code":"model_not_found"}}'
)
OPENAI_SERVER = (
    b'{"error":{"message":"The server had an error while processing your request.",'
    b'"type":"server_error","param":null,"code":null}}'
)
OPENAI_BAD = (
    b'{"error":{"message":"Invalid type for \'temperature\'","type":"invalid_request_error",'
    b'"param":"temperature","code":"invalid_type"}}'
)
AZURE_DEPLOYMENT = (
    b'{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource '
    b'does not exist."}}'
)


def anthropic(kind: str, message: str = "x") -> bytes:
    return (
        b'{"type":"error","error":{"type":"' + kind.encode() + b'","message":"'
        + message.encode() + b'"},"request_id":"req_011"}'
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "expected_class", "expected_reason"),
    [
        # OpenAI
        (429, OPENAI_RATE, "rate_limited", "rate_limit_exceeded"),
        (429, OPENAI_QUOTA, "quota", "insufficient_quota"),
        (429, OPENAI_QUOTA_NULL_CODE, "quota", "insufficient_quota"),
        (400, OPENAI_CONTEXT, "caller_fault", "context_length_exceeded"),
        (401, OPENAI_KEY, "credential", "invalid_api_key"),
        (404, OPENAI_MODEL, "model_unavailable", "model_not_found"),
        (500, OPENAI_SERVER, "transient", "server_error"),
        (503, b"<html>Service Unavailable</html>", "transient", "503"),
        (502, b"", "transient", "502"),
        (400, OPENAI_BAD, "caller_fault", "invalid_type"),
        (413, b"", "caller_fault", "413"),
        (422, b"{}", "caller_fault", "422"),
        (504, b"", "timeout", "504"),
        # Azure OpenAI
        (404, AZURE_DEPLOYMENT, "model_unavailable", "DeploymentNotFound"),
        # Anthropic
        (529, anthropic("overloaded_error", "Overloaded"), "transient", "overloaded_error"),
        (429, anthropic("rate_limit_error"), "rate_limited", "rate_limit_error"),
        (401, anthropic("authentication_error"), "credential", "authentication_error"),
        (403, anthropic("permission_error"), "credential", "permission_error"),
        (402, anthropic("billing_error"), "quota", "billing_error"),
        (404, anthropic("not_found_error"), "model_unavailable", "not_found_error"),
        (500, anthropic("api_error"), "transient", "api_error"),
        (413, anthropic("request_too_large"), "caller_fault", "request_too_large"),
        (
            400,
            anthropic("invalid_request_error", "max_tokens: field required"),
            "caller_fault",
            "invalid_request_error",
        ),
        (418, b"teapot", "unknown", "418"),
    ],
)
def test_error_responses_map_to_failure_classes(
    status: int, body: bytes, expected_class: str, expected_reason: str
) -> None:
    """Each provider error maps to the class that drives retry and fallback."""
    verdict = classify_response(status, {}, body)
    assert (verdict.cls, verdict.reason) == (expected_class, expected_reason)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, OPENAI_KEY),
        (401, anthropic("authentication_error")),
        (403, anthropic("permission_error")),
    ],
)
def test_a_rejected_client_key_is_the_callers_fault_and_a_configured_one_the_targets(
    status: int, body: bytes
) -> None:
    """401/403 on the client's own key (the provider has no api_key) is caller_fault: the
    caller must fix it, and it says nothing about the target; on spangate's configured key
    it stays a credential fault of the target. The reason is the provider's either way;
    an error as a stream's first event is judged alike."""
    theirs = classify_response(status, {}, body, client_key=True)
    ours = classify_response(status, {}, body, client_key=False)
    assert (theirs.cls, ours.cls) == ("caller_fault", "credential")
    assert theirs.reason == ours.reason
    event = anthropic("authentication_error")  # an error as a stream's first event
    assert classify_stream_error(event, client_key=True).cls == "caller_fault"
    assert classify_stream_error(event).cls == "credential"


def test_a_region_refusal_is_the_targets_even_on_the_clients_key() -> None:
    """OpenAI's 403 unsupported_country_region_territory refuses where spangate calls
    from, not the key: no caller can mend it, so it stays a credential fault of the
    target (the circuit opens, the alias fails over) whoever's key was sent."""
    body = (
        b'{"error": {"message": "Country, region, or territory not supported", '
        b'"type": "request_forbidden", "code": "unsupported_country_region_territory"}}'
    )
    assert classify_response(403, {}, body, client_key=True).cls == "credential"


def test_context_window_errors_are_flagged_for_context_fallbacks() -> None:
    """OpenAI's code and Anthropic's "prompt is too long" both mark context overflow."""
    assert classify_response(400, {}, OPENAI_CONTEXT).context_exceeded
    too_long = anthropic("invalid_request_error", "prompt is too long: 210000 tokens > 200000")
    assert classify_response(400, {}, too_long).context_exceeded
    assert not classify_response(400, {}, OPENAI_BAD).context_exceeded


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "Wed, 25 Nov 2026 10:00:10 GMT"}, 10.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
        # Not a finite, non-negative number: ignored as if absent (never an endless wait).
        ({"retry-after-ms": "inf"}, None),
        ({"retry-after-ms": "nan"}, None),
        ({"retry-after-ms": "-100"}, None),
        ({"retry-after": "Infinity"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "1e400"}, None),
        # A bad retry-after-ms leaves the standard header to speak.
        ({"retry-after-ms": "inf", "retry-after": "4"}, 4.0),
        # Huge but finite passes: the circuit caps what it takes from it.
        ({"retry-after": "1e12"}, 1e12),
        ({"retry-after": "Wed, 25 Nov 2026 09:59:00 GMT"}, 0.0),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    """retry-after-ms wins; Retry-After may be seconds or an HTTP date (one in the past is
    0); infinite, NaN and negative values are ignored."""
    now = 1_795_600_800.0  # 2026-11-25T10:00:00Z
    assert retry_after_seconds(headers, now=now) == expected


def test_retry_after_is_carried_on_the_verdict() -> None:
    """The classifier hands Retry-After to the retry policy and the circuit breaker."""
    verdict = classify_response(429, {"retry-after": "3"}, OPENAI_RATE)
    assert verdict.retry_after_s == 3.0


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("upstream_unreachable", "connection"),
        ("upstream_timeout", "timeout"),
        ("stream_interrupted", "connection"),
        ("stream_idle_timeout", "timeout"),
        ("stream_truncated", "connection"),
        ("malformed_response", "transient"),
        ("something_else", "unknown"),
    ],
)
def test_io_edge_failures(kind: str, expected: str) -> None:
    """Failures outside the protocol classify by what broke."""
    assert classify_exception(kind).cls == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            "transient",
        ),
        (b'{"type":"error","error":{"type":"rate_limit_error","message":"x"}}', "rate_limited"),
        (b'{"error":{"message":"x","type":"server_error","code":null}}', "transient"),
        (b'{"error":{"message":"x","type":"invalid_request_error","code":"bad"}}', "caller_fault"),
    ],
)
def test_in_band_stream_errors(data: bytes, expected: str) -> None:
    """An error as the first event of a 200 stream classifies like its HTTP twin."""
    assert classify_stream_error(data).cls == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (b"400", "caller_fault"),
        (b"429", "rate_limited"),
        (b"503", "transient"),
        (b"404", "model_unavailable"),
    ],
)
def test_an_in_band_error_whose_code_is_an_http_status_classifies_as_that_status(
    code: bytes, expected: str
) -> None:
    """vLLM and other OpenAI-compatible servers put the HTTP status in `code` (a number)
    and a class name in `type`: the status decides, as over HTTP (it was transient)."""
    data = (
        b'{"error":{"object":"error","message":"x","type":"BadRequestError","code":' + code + b"}}"
    )
    assert classify_stream_error(data).cls == expected


RESPONSES_ERROR = (
    b'{"type":"error","code":"rate_limit_exceeded","message":"Rate limit reached.",'
    b'"param":null,"sequence_number":3}'
)
RESPONSES_ERROR_NESTED = (
    b'{"type":"error","sequence_number":3,"error":{"type":"tokens",'
    b'"code":"rate_limit_exceeded","message":"Rate limit reached.","param":null}}'
)


def _responses_error(code: bytes) -> bytes:
    return b'{"type":"error","code":"' + code + b'","message":"x","param":null}'


RESPONSES_FAILED = (
    b'{"type":"response.failed","sequence_number":7,"response":{"id":"resp_1",'
    b'"object":"response","status":"failed","error":{"code":"server_error",'
    b'"message":"The model failed to generate a response."}}}'
)


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        (OPENAI_RATE, ("requests", "rate_limit_exceeded")),
        (anthropic("overloaded_error"), ("overloaded_error", None)),
        (RESPONSES_ERROR, (None, "rate_limit_exceeded")),
        (RESPONSES_ERROR_NESTED, ("tokens", "rate_limit_exceeded")),
        (RESPONSES_FAILED, (None, "server_error")),
        # The event's own name is never the error's kind.
        (b'{"type":"error","message":"x"}', (None, None)),
        (b'{"type":"response.failed","response":{"status":"failed","error":null}}', (None, None)),
        (b'{"type":"response.completed","response":{"status":"completed"}}', (None, None)),
        (b'{"type":"response.failed","response":"failed"}', (None, None)),
        (b'{"error":"overloaded"}', (None, None)),
        (b"not json", (None, None)),
    ],
)
def test_error_fields_are_read_from_every_error_shape(
    data: bytes, fields: tuple[str | None, str | None]
) -> None:
    """The error's type and code come from `{"error": {...}}` (OpenAI, Anthropic, a
    Responses error event nested so), from a Responses `error` event's top level, or from
    a `response.failed` event's response.error; the event's `type` is never taken for the
    error's."""
    error = _error_fields(data)
    assert (error.type, error.code) == fields


@pytest.mark.parametrize(
    ("data", "expected", "reason"),
    [
        (RESPONSES_ERROR, "rate_limited", "rate_limit_exceeded"),
        (RESPONSES_ERROR_NESTED, "rate_limited", "rate_limit_exceeded"),
        (RESPONSES_FAILED, "transient", "server_error"),
        (_responses_error(b"invalid_prompt"), "caller_fault", "invalid_prompt"),
        (_responses_error(b"image_too_large"), "caller_fault", "image_too_large"),
        (_responses_error(b"vector_store_timeout"), "timeout", "vector_store_timeout"),
        (_responses_error(b"insufficient_quota"), "quota", "insufficient_quota"),
        (_responses_error(b"model_not_found"), "model_unavailable", "model_not_found"),
        (_responses_error(b"something_new"), "transient", "something_new"),
        (b'{"type":"error","code":null,"message":"x"}', "transient", "stream_error"),
        # OpenAI chat: the code is more specific than the type it refines.
        (
            b'{"error":{"type":"tokens","code":"rate_limit_exceeded"}}',
            "rate_limited",
            "rate_limit_exceeded",
        ),
        (
            b'{"error":{"type":"invalid_request_error","code":"model_not_found"}}',
            "model_unavailable",
            "model_not_found",
        ),
    ],
)
def test_a_stream_error_maps_by_its_code_as_well_as_its_type(
    data: bytes, expected: str, reason: str
) -> None:
    """An in-band error maps to the status its code (else its type) comes with over
    HTTP: a Responses rate_limit_exceeded is rate_limited, server_error transient,
    vector_store_timeout a timeout, invalid_prompt or a bad image the caller's; an
    unknown code is transient, as a 500. The reason is the code, never the event's
    `type` ("error")."""
    verdict = classify_stream_error(data)
    assert (verdict.cls, verdict.reason) == (expected, reason)


def test_a_responses_context_overflow_is_flagged_for_context_fallbacks() -> None:
    """A Responses error event with code context_length_exceeded is the caller's fault
    and marks a context overflow, as the HTTP 400 does."""
    data = b'{"type":"error","code":"context_length_exceeded","message":"x","param":"input"}'
    verdict = classify_stream_error(data)
    assert (verdict.cls, verdict.context_exceeded) == ("caller_fault", True)


def _responses_delta() -> bytes:
    return (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"sequence_number":4,"delta":"Hi"}\n\n'
    )


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            _responses_delta() + b"event: response.failed\ndata: " + RESPONSES_FAILED + b"\n\n",
            "transient",
        ),
        (
            _responses_delta()
            + b'event: response.failed\ndata: {"type":"response.failed","response":'
            b'{"status":"failed","error":{"code":"invalid_prompt","message":"x"}}}\n\n',
            "caller_fault",
        ),
        (_responses_delta() + b"event: error\ndata: " + RESPONSES_ERROR + b"\n\n", "rate_limited"),
    ],
)
def test_a_responses_error_ending_a_stream_classifies_by_its_code(
    block: bytes, expected: str
) -> None:
    """A Responses `response.failed` or `error` event after content: judged by its code."""
    assert classify_stream_end(block, _openai_error_event).cls == expected


def test_a_responses_error_sent_without_an_event_line_is_judged_by_its_code() -> None:
    """Servers that send data-only Responses events: `response.failed` and `error` are
    error events by their data's type (as their end is), so their codes decide."""
    failed = (
        b'data: {"type":"response.failed","response":{"status":"failed",'
        b'"error":{"code":"invalid_prompt","message":"x"}}}\n\n'
    )
    assert classify_stream_end(_DATA_ONLY_DELTA + failed, _openai_error_event).cls == (
        "caller_fault"
    )
    error = b"data: " + RESPONSES_ERROR + b"\n\n"
    assert classify_stream_end(_DATA_ONLY_DELTA + error, _openai_error_event).cls == (
        "rate_limited"
    )
    # A content event that mentions an error type further in is content.
    assert not _openai_error_event(
        SSEEvent(
            "message", '{"type":"response.output_text.delta","delta":"\\"type\\":\\"error\\""}'
        )
    )


def test_a_chat_chunk_led_by_a_type_field_is_still_a_chat_chunk() -> None:
    """Some OpenAI-compatible gateways lead chat chunks with `"type":"chat.completion.chunk"`:
    only Responses opening and error types name a data-only event, so an empty first chunk
    stays an opening frame (held back, failover still possible) and a text chunk content."""
    role_only = (
        '{"type":"chat.completion.chunk","id":"c","choices":[{"index":0,'
        '"delta":{"role":"assistant","content":""}}]}'
    )
    text = '{"type":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}'
    assert OpenAIAdapter().stream_event_kind(SSEEvent("message", role_only)) == "opening"
    assert OpenAIAdapter().stream_event_kind(SSEEvent("message", text)) == "content"


_DATA_ONLY_DELTA = (
    b'data: {"type":"response.output_text.delta","sequence_number":4,"delta":"Hi"}\n\n'
)


def _anthropic_error(kind: bytes) -> bytes:
    return (
        b'event: error\ndata: {"type":"error","error":{"type":"' + kind + b'","message":"x"}}\n\n'
    )


_CLAUDE_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hi"}}\n\n'
)
_CHAT_CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'


def _anthropic_error_event(event: SSEEvent) -> bool:
    return AnthropicAdapter().stream_event_kind(event) == "error"


def _openai_error_event(event: SSEEvent) -> bool:
    return OpenAIAdapter().stream_event_kind(event) == "error"


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (_CLAUDE_DELTA + _anthropic_error(b"invalid_request_error"), "caller_fault"),
        (_CLAUDE_DELTA + _anthropic_error(b"rate_limit_error"), "rate_limited"),
        (_CLAUDE_DELTA + _anthropic_error(b"overloaded_error"), "transient"),
        (_anthropic_error(b"api_error"), "transient"),
        # The provider closed right after the event, without its blank line.
        (_anthropic_error(b"invalid_request_error")[:-1], "caller_fault"),
    ],
)
def test_an_error_event_ending_a_stream_after_content_classifies_by_what_it_says(
    block: bytes, expected: str
) -> None:
    """The in-band error event that ended a stream after content is judged by its own
    type, as one at a stream's start would be: the caller's fault or a rate limit is not
    the target's 5xx."""
    assert classify_stream_end(block, _anthropic_error_event).cls == expected


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            _CHAT_CHUNK + b'data: {"error":{"message":"x","type":"invalid_request_error",'
            b'"code":"bad"}}\n\n',
            "caller_fault",
        ),
        (
            _CHAT_CHUNK + b'data: {"error":{"message":"x","type":"server_error","code":null}}\n\n',
            "transient",
        ),
    ],
)
def test_an_openai_chat_error_ending_a_stream_classifies_by_its_type(
    block: bytes, expected: str
) -> None:
    """OpenAI chat's `data: {"error": ...}` after content: judged by its type too."""
    assert classify_stream_end(block, _openai_error_event).cls == expected


@pytest.mark.parametrize(
    "block",
    [
        b'event: error\ndata: {"type":"error","error":{"type":"invalid_re\n\n',  # cut JSON
        b"event: error\ndata: not json\n\n",
        _CLAUDE_DELTA,  # no error event found in the block
        b"",
    ],
)
def test_an_error_end_that_cannot_be_read_counts_as_transient(block: bytes) -> None:
    """An error end whose event cannot be found or parsed falls back to transient, as a
    5xx would."""
    verdict = classify_stream_end(block, _anthropic_error_event)
    assert verdict.cls == "transient"
    assert verdict.cls == classify_exception("stream_error").cls
