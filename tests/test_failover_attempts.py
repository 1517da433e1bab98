"""Failover end to end: attempts, retry policy, caller faults, defaults and fallbacks.

Each provider in the config points at its own FakeProvider, so every test
scripts the faults of one deployment and counts what each one received. The
real SDKs (max_retries=0) are the clients; the trace is read from the
in-memory exporter.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from conftest import Running
from fakeprovider import (
    Behaviour,
    anthropic_error,
    custom,
    default,
    delay,
    gzipped_reply,
    malformed_json,
    openai_error,
    reset,
    sse,
    unused_port,
)
from test_failover_support import (
    ANTHROPIC_HEADERS,
    GPT,
    HELLO,
    Fakes,
    attrs,
    chat,
    client_spans,
    config,
    get_status,
    label,
    message,
    metric_sum,
    only_server_span,
    post,
    server_spans,
    start_fakes,
    targets,
)

Start = Callable[..., Running]


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


def oai(running: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.openai_base_url, api_key="sk-test", max_retries=0)


def claude(running: Running) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.url, api_key="sk-ant", max_retries=0)


def ask(running: Running, model: str = "m") -> Any:
    """One chat completion through spangate; returns the raw response (headers + parse())."""
    with oai(running) as client:
        return client.chat.completions.with_raw_response.create(model=model, messages=HELLO)


# --------------------------------------------------------------------------- 1. one healthy target


def test_one_healthy_target_among_faulty_ones_serves_every_request(
    fakes: Fakes, spangate_for: Start
) -> None:
    """a answers 500, b resets the connection, c is healthy: every request succeeds via c,
    and each request's trace holds one CLIENT span per attempt with its failure class."""
    requests = 3
    fakes.a.script(*[openai_error(500)] * requests)
    fakes.b.script(*[reset()] * requests)
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b", "c")}}))

    for _ in range(requests):
        raw = ask(running)
        completion = raw.parse()
        assert completion.choices[0].message.content == f"Hello from {GPT}: hi there"
        assert raw.headers["x-spangate-attempts"] == "3"
        assert raw.headers["x-spangate-target"] == label("c")
        assert "x-spangate-fallback" not in raw.headers

    assert fakes.counts() == {"a": requests, "b": requests, "c": requests, "x": 0, "y": 0}
    servers = server_spans(running)
    assert len(servers) == requests
    clients = client_spans(running)
    assert len(clients) == 3 * requests
    for server in servers:
        trace = [s for s in clients if s.context.trace_id == server.context.trace_id]
        assert [s.parent.span_id for s in trace] == [server.context.span_id] * 3
        assert [attrs(s)["spangate.attempt"] for s in trace] == [1, 2, 3]
        assert [attrs(s)["spangate.target"] for s in trace] == [label(n) for n in "abc"]
        assert [attrs(s).get("spangate.failure_class") for s in trace] == [
            "transient",
            "connection",
            None,
        ]
        assert [s.status.is_ok for s in trace] == [False, False, True]
        assert attrs(trace[0])["http.response.status_code"] == 500
        server_attrs = attrs(server)
        assert server_attrs["spangate.attempts"] == 3
        assert server_attrs["spangate.target"] == label("c")
        assert server_attrs["http.response.status_code"] == 200
        assert "spangate.fallback" not in server_attrs
        assert "spangate.hedged" not in server_attrs
    # Served by a later attempt than the first: counted as a failover each time.
    assert metric_sum(running, "spangate.failovers", {"spangate.route": "m"}) == requests
    assert metric_sum(running, "spangate.attempts", {"spangate.outcome": "error"}) == 2 * requests


def test_a_retry_of_the_same_target_is_not_counted_as_a_failover(
    fakes: Fakes, spangate_for: Start
) -> None:
    """spangate.failovers counts requests another target served; a 429 retried on the one
    target it has, then answered, is a retry (its attempts say so), not a failover."""
    fakes.a.script(openai_error(429, "rate_limit_exceeded", retry_after=0.05), default())
    retry = {"same_target": ["rate_limited"], "same_target_max": 1}
    running = spangate_for(config(fakes, {"m": {"targets": targets("a"), "retry": retry}}))
    assert ask(running).headers["x-spangate-attempts"] == "2"
    assert metric_sum(running, "spangate.failovers", {"spangate.route": "m"}) == 0
    assert metric_sum(running, "spangate.attempts", {"spangate.outcome": "error"}) == 1


def test_response_headers_can_be_switched_off(fakes: Fakes, spangate_for: Start) -> None:
    """server.response_headers: false removes x-spangate-attempts / -target (and -fallback)."""
    fakes.a.script(openai_error(503))
    models = {
        "m": {"targets": targets("a"), "fallbacks": ["n"]},
        "n": {"targets": targets("b")},
    }
    running = spangate_for(config(fakes, models, server={"response_headers": False}))
    raw = ask(running)
    assert raw.parse().choices[0].message.content
    assert not [h for h in raw.headers if h.lower().startswith("x-spangate-")]
    # The decision is still in the trace.
    assert attrs(only_server_span(running))["spangate.fallback"] == "n"


def test_anthropic_overloaded_target_fails_over_to_the_healthy_one(
    fakes: Fakes, spangate_for: Start
) -> None:
    """An Anthropic 529 overloaded_error on x moves the request to y; the client never sees it."""
    fakes.x.script(anthropic_error(529, "overloaded_error"))
    running = spangate_for(config(fakes, {"m": {"targets": targets("x", "y")}}))
    with claude(running) as client:
        raw = client.messages.with_raw_response.create(model="m", max_tokens=64, messages=HELLO)
    reply = raw.parse()
    assert reply.content[0].type == "text"
    assert reply.content[0].text.startswith("Hello from")
    assert raw.headers["x-spangate-target"] == label("y")
    assert raw.headers["x-spangate-attempts"] == "2"
    first, second = client_spans(running)
    assert attrs(first)["spangate.failure_class"] == "transient"
    assert attrs(first)["http.response.status_code"] == 529
    assert attrs(first)["error.type"] == "overloaded_error"
    assert "spangate.failure_class" not in attrs(second)


# --------------------------------------------------------------------------- 2. Retry-After

SAME_TARGET_ON_429 = {"same_target": ["rate_limited"], "same_target_max": 1}


def test_retry_after_is_waited_for_on_the_same_target_and_recorded(
    fakes: Fakes, spangate_for: Start
) -> None:
    """A 429 with Retry-After: 0.3 is retried on the same target after exactly that wait;
    the second attempt's span carries spangate.backoff_s == 0.3."""
    fakes.a.script(openai_error(429, "rate_limit_exceeded", retry_after=0.3), default())
    models = {"m": {"targets": targets("a"), "retry": SAME_TARGET_ON_429}}
    running = spangate_for(config(fakes, models))
    raw = ask(running)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-spangate-attempts"] == "2"
    assert len(fakes.a.received) == 2
    first, second = client_spans(running)
    assert attrs(first)["spangate.failure_class"] == "rate_limited"
    assert attrs(first)["error.type"] == "rate_limit_exceeded"
    assert "spangate.backoff_s" not in attrs(first)
    assert attrs(second)["spangate.backoff_s"] == pytest.approx(0.3)
    assert attrs(second)["spangate.target"] == label("a")


def test_retry_after_ms_wins_over_retry_after(fakes: Fakes, spangate_for: Start) -> None:
    """retry-after-ms (OpenAI/Azure) is more precise and wins over Retry-After seconds."""
    fakes.a.script(
        openai_error(429, "rate_limit_exceeded", retry_after=20, retry_after_ms=200), default()
    )
    models = {"m": {"targets": targets("a"), "retry": SAME_TARGET_ON_429}}
    running = spangate_for(config(fakes, models))
    assert ask(running).parse().choices[0].message.content
    _, second = client_spans(running)
    assert attrs(second)["spangate.backoff_s"] == pytest.approx(0.2)


def test_retry_after_beyond_the_deadline_is_not_waited_for(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Retry-After: 30 with a 2 s deadline: no wait, the 429 is relayed as the last word."""
    fakes.a.script(openai_error(429, "rate_limit_exceeded", retry_after=30))
    retry = {**SAME_TARGET_ON_429, "deadline_s": 2}
    running = spangate_for(config(fakes, {"m": {"targets": targets("a"), "retry": retry}}))
    with oai(running) as client, pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=HELLO)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "30"
    assert len(fakes.a.received) == 1
    (only,) = client_spans(running)
    assert "spangate.backoff_s" not in attrs(only)


def test_retry_after_beyond_the_deadline_moves_on_to_the_next_target(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Retry-After beyond the deadline with another target: moved on at once, no backoff."""
    fakes.a.script(openai_error(429, "rate_limit_exceeded", retry_after=30))
    retry = {**SAME_TARGET_ON_429, "deadline_s": 2}
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "retry": retry}}))
    raw = ask(running)
    assert raw.headers["x-spangate-target"] == label("b")
    assert fakes.counts()["a"] == 1
    spans = client_spans(running)
    assert [attrs(s)["spangate.target"] for s in spans] == [label("a"), label("b")]
    assert not [s for s in spans if "spangate.backoff_s" in attrs(s)]


def test_backoff_without_retry_after_is_jittered_within_the_ceiling(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Without Retry-After the same-target wait is full jitter in [0, initial_s]."""
    fakes.a.script(openai_error(503), openai_error(503), default())
    retry = {
        "same_target": ["transient"],
        "same_target_max": 2,
        "backoff": {"initial_s": 0.05, "max_s": 0.08, "multiplier": 2},
    }
    running = spangate_for(config(fakes, {"m": {"targets": targets("a"), "retry": retry}}))
    assert ask(running).headers["x-spangate-attempts"] == "3"
    first, second, third = client_spans(running)
    assert "spangate.backoff_s" not in attrs(first)
    assert 0 <= attrs(second).get("spangate.backoff_s", 0.0) <= 0.05
    assert 0 <= attrs(third).get("spangate.backoff_s", 0.0) <= 0.08  # capped by max_s


def test_same_target_retries_are_bounded_then_the_error_is_relayed(
    fakes: Fakes, spangate_for: Start
) -> None:
    """same_target_max: 2 → three attempts at most on one target; then its 429 is relayed."""
    fakes.a.script(*[openai_error(429, "rate_limit_exceeded", retry_after_ms=10)] * 4)
    retry = {"same_target": ["rate_limited"], "same_target_max": 2}
    running = spangate_for(config(fakes, {"m": {"targets": targets("a"), "retry": retry}}))
    with oai(running) as client, pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=HELLO)
    assert len(fakes.a.received) == 3
    spans = client_spans(running)
    assert [attrs(s).get("spangate.backoff_s") for s in spans] == [
        None,
        pytest.approx(0.01),
        pytest.approx(0.01),
    ]


def test_max_attempts_caps_attempts_across_targets(fakes: Fakes, spangate_for: Start) -> None:
    """retry.max_attempts: 2 with three failing targets: c is never tried."""
    fakes.a.script(openai_error(503))
    fakes.b.script(openai_error(502))
    models = {"m": {"targets": targets("a", "b", "c"), "retry": {"max_attempts": 2}}}
    running = spangate_for(config(fakes, models))
    with oai(running) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="m", messages=HELLO)
    assert caught.value.status_code == 502  # the last word is relayed
    assert fakes.counts() == {"a": 1, "b": 1, "c": 0, "x": 0, "y": 0}
    assert attrs(only_server_span(running))["spangate.attempts"] == 2


def test_same_target_retries_then_moves_to_the_next_target(
    fakes: Fakes, spangate_for: Start
) -> None:
    """same_target [transient] once: a, a again (after a backoff), then b serves."""
    fakes.a.script(openai_error(503), openai_error(503))
    retry = {
        "same_target": ["transient"],
        "same_target_max": 1,
        "backoff": {"initial_s": 0.02, "max_s": 0.02},
    }
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b"), "retry": retry}}))
    raw = ask(running)
    assert raw.headers["x-spangate-target"] == label("b")
    spans = client_spans(running)
    assert [attrs(s)["spangate.target"] for s in spans] == [label("a"), label("a"), label("b")]
    assert "spangate.backoff_s" not in attrs(spans[2])  # a new target starts without waiting


def test_max_attempts_above_the_target_count_tries_each_target_once(
    fakes: Fakes, spangate_for: Start
) -> None:
    """max_attempts: 10 with no same-target retries: two targets, two attempts, no loop."""
    fakes.a.script(openai_error(503))
    fakes.b.script(openai_error(503))
    models = {"m": {"targets": targets("a", "b"), "retry": {"max_attempts": 10}}}
    running = spangate_for(config(fakes, models))
    with oai(running) as client, pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=HELLO)
    assert fakes.counts() == {"a": 1, "b": 1, "c": 0, "x": 0, "y": 0}


def test_deadline_bounds_the_whole_request(fakes: Fakes, spangate_for: Start) -> None:
    """retry.deadline_s 0.5: a slow first target uses it up; b is never tried and the client
    gets spangate's 504 in its own format (the first-byte wait was capped by the deadline)."""
    fakes.a.script(delay(3))
    models = {"m": {"targets": targets("a", "b"), "retry": {"deadline_s": 0.5}}}
    running = spangate_for(config(fakes, models))
    with oai(running) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="m", messages=HELLO)
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"
    assert fakes.counts()["b"] == 0
    (only,) = client_spans(running)
    assert attrs(only)["spangate.failure_class"] == "timeout"


# --------------------------------------------------------------------------- 3. caller faults

CALLER_FAULTS = [
    pytest.param(openai_error(400, type="invalid_request_error", param="messages"), 400, id="400"),
    pytest.param(openai_error(413, message="Request too large."), 413, id="413"),
    pytest.param(openai_error(422, type="invalid_request_error"), 422, id="422"),
    pytest.param(openai_error(400, "context_length_exceeded"), 400, id="context_length"),
]
#: A policy that retries everything retryable: caller faults must still go out only once.
EAGER_RETRY = {
    "same_target": ["transient", "rate_limited", "timeout", "connection", "unknown"],
    "same_target_max": 3,
    "max_attempts": 10,
}


@pytest.mark.parametrize(("behaviour", "status"), CALLER_FAULTS)
async def test_caller_faults_are_relayed_verbatim_and_never_retried(
    fakes: Fakes, spangate_for: Start, behaviour: Behaviour, status: int
) -> None:
    """400/413/422/context_length_exceeded: one upstream request in total across all
    fakes (no retry, no next target, no fallback), status and body relayed verbatim."""
    fakes.a.script(behaviour)
    fakes.c.script(behaviour)  # the same reply, fetched directly for comparison
    models = {
        "m": {"targets": targets("a", "b"), "retry": EAGER_RETRY, "fallbacks": ["n"]},
        "n": {"targets": targets("b")},
    }
    running = spangate_for(config(fakes, models))
    got_status, headers, body = await post(running.url, "/v1/chat/completions", chat())
    want_status, _, want_body = await post(fakes.c.url, "/v1/chat/completions", chat(GPT))
    assert (got_status, body) == (want_status, want_body)
    assert got_status == status
    assert fakes.counts() == {"a": 1, "b": 0, "c": 1, "x": 0, "y": 0}
    assert headers["x-spangate-attempts"] == "1"
    (only,) = client_spans(running)
    assert attrs(only)["spangate.failure_class"] == "caller_fault"
    server = attrs(only_server_span(running))
    assert server["spangate.attempts"] == 1
    assert "spangate.fallback" not in server
    assert only_server_span(running).status.is_unset  # a 4xx is not a server error


def test_caller_fault_reaches_the_sdk_as_its_own_exception(
    fakes: Fakes, spangate_for: Start
) -> None:
    """The SDK sees the provider's 400 with its type/param/code, exactly as sent."""
    fakes.a.script(openai_error(400, "context_length_exceeded"))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    with oai(running) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=HELLO)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages"
    assert fakes.counts()["b"] == 0


def test_anthropic_prompt_too_long_without_context_fallback_is_relayed(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Anthropic's context error (a plain invalid_request_error) is a caller fault too."""
    fakes.x.script(anthropic_error(400, "invalid_request_error", "prompt is too long: 210000"))
    running = spangate_for(config(fakes, {"m": {"targets": targets("x", "y")}}))
    with claude(running) as client, pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="m", max_tokens=64, messages=HELLO)
    assert "prompt is too long" in caught.value.message
    assert fakes.counts() == {"a": 0, "b": 0, "c": 0, "x": 1, "y": 0}


#: An error body as the provider sends it: plain, or gzip-compressed as real providers
#: answer the SDKs (which accept gzip); the failover reads both alike.
AS_SENT = [
    pytest.param(lambda reply: reply, id="plain"),
    pytest.param(gzipped_reply, id="gzip"),
]


@pytest.mark.parametrize("sent", AS_SENT)
def test_context_length_exceeded_goes_to_the_context_fallback(
    fakes: Fakes, spangate_for: Start, sent: Callable[[Any], Any]
) -> None:
    """context_length_exceeded with context_fallbacks: [big] is served by the big alias,
    not by the next target or the ordinary fallbacks, compressed or not."""
    fakes.a.script(sent(openai_error(400, "context_length_exceeded")))
    models = {
        "m": {
            "targets": targets("a", "b"),
            "fallbacks": ["other"],
            "context_fallbacks": ["big"],
        },
        "big": {"targets": targets("c", model="gpt-4.1")},
        "other": {"targets": targets("b")},
    }
    running = spangate_for(config(fakes, models))
    raw = ask(running)
    assert raw.parse().choices[0].message.content == "Hello from gpt-4.1: hi there"
    assert raw.headers["x-spangate-fallback"] == "big"
    assert raw.headers["x-spangate-target"] == "c/gpt-4.1"
    assert fakes.counts() == {"a": 1, "b": 0, "c": 1, "x": 0, "y": 0}
    assert fakes.c.last.json()["model"] == "gpt-4.1"
    server = attrs(only_server_span(running))
    assert server["spangate.fallback"] == "big"
    assert server["spangate.target"] == "c/gpt-4.1"
    assert server["spangate.attempts"] == 2


@pytest.mark.parametrize("sent", AS_SENT)
def test_anthropic_prompt_too_long_goes_to_the_context_fallback(
    fakes: Fakes, spangate_for: Start, sent: Callable[[Any], Any]
) -> None:
    """Anthropic "prompt is too long" also triggers context_fallbacks, compressed or not."""
    too_long = anthropic_error(400, "invalid_request_error", "prompt is too long: 210000")
    fakes.x.script(sent(too_long))
    models = {
        "m": {"targets": targets("x"), "context_fallbacks": ["big"]},
        "big": {"targets": targets("y", model="claude-opus-4-6")},
    }
    running = spangate_for(config(fakes, models))
    with claude(running) as client:
        raw = client.messages.with_raw_response.create(model="m", max_tokens=64, messages=HELLO)
    assert raw.parse().model == "claude-opus-4-6"
    assert raw.headers["x-spangate-fallback"] == "big"
    assert attrs(only_server_span(running))["spangate.fallback"] == "big"


# --------------------------------------------------------------------------- 4. defaults

MOVES_ON = [
    pytest.param(openai_error(500), "transient", id="500"),
    pytest.param(openai_error(502), "transient", id="502"),
    pytest.param(openai_error(503), "transient", id="503"),
    pytest.param(custom(504, b""), "timeout", id="504-empty"),
    pytest.param(openai_error(429, "rate_limit_exceeded"), "rate_limited", id="429"),
    pytest.param(
        openai_error(429, "rate_limit_exceeded", retry_after=0.5),
        "rate_limited",
        id="429-retry-after",
    ),
    pytest.param(openai_error(429, "insufficient_quota"), "quota", id="insufficient_quota"),
    pytest.param(openai_error(401, "invalid_api_key"), "credential", id="401"),
    pytest.param(openai_error(404, "model_not_found"), "model_unavailable", id="404"),
    pytest.param(reset(), "connection", id="reset"),
    pytest.param(malformed_json(), "transient", id="malformed-json-200"),
]


@pytest.mark.parametrize(("behaviour", "failure_class"), MOVES_ON)
def test_plain_target_list_moves_on_once_per_target(
    fakes: Fakes, spangate_for: Start, behaviour: Behaviour, failure_class: str
) -> None:
    """With no `retry:` a retryable failure moves to the next target immediately (no wait),
    the failing target is tried exactly once, and the failure class is on its span."""
    fakes.a.script(behaviour, behaviour)
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    raw = ask(running)
    assert raw.parse().choices[0].message.content == f"Hello from {GPT}: hi there"
    assert raw.headers["x-spangate-target"] == label("b")
    assert fakes.counts() == {"a": 1, "b": 1, "c": 0, "x": 0, "y": 0}
    first, second = client_spans(running)
    assert attrs(first)["spangate.failure_class"] == failure_class
    assert "spangate.backoff_s" not in attrs(second)


def test_openai_format_504_is_a_timeout(fakes: Fakes, spangate_for: Start) -> None:
    """A 504 is a (gateway) timeout per the classifier's own rule, whatever its body says."""
    fakes.a.script(openai_error(504))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    assert ask(running).headers["x-spangate-target"] == label("b")
    first, _ = client_spans(running)
    assert attrs(first)["spangate.failure_class"] == "timeout"


def test_chunked_malformed_json_moves_on(fakes: Fakes, spangate_for: Start) -> None:
    """The same malformed 200 JSON, sent chunked instead of with Content-Length."""
    broken = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index'
    fakes.a.script(sse([broken], content_type="application/json"))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b")}}))
    assert ask(running).headers["x-spangate-target"] == label("b")


def test_anthropic_529_moves_on_under_defaults(fakes: Fakes, spangate_for: Start) -> None:
    """Anthropic 529 overloaded_error is transient: the default policy moves on."""
    fakes.x.script(anthropic_error(529, "overloaded_error", retry_after=0.5))
    running = spangate_for(config(fakes, {"m": {"targets": targets("x", "y")}}))
    with claude(running) as client:
        reply = client.messages.create(model="m", max_tokens=64, messages=HELLO)
    assert reply.content[0].type == "text"
    assert fakes.counts() == {"a": 0, "b": 0, "c": 0, "x": 1, "y": 1}


@pytest.mark.parametrize("level", ["alias", "target"])
def test_first_byte_timeout_moves_on(fakes: Fakes, spangate_for: Start, level: str) -> None:
    """No response headers within timeouts.first_byte_s (set on the alias or the target):
    the attempt is a `timeout` and the next target serves."""
    fakes.a.script(delay(3))
    timeouts = {"first_byte_s": 0.3}
    if level == "alias":
        model: dict[str, Any] = {"targets": targets("a", "b"), "timeouts": timeouts}
    else:
        model = {"targets": [*targets("a", timeouts=timeouts), *targets("b")]}
    running = spangate_for(config(fakes, {"m": model}))
    raw = ask(running)
    assert raw.headers["x-spangate-target"] == label("b")
    first, _ = client_spans(running)
    assert attrs(first)["spangate.failure_class"] == "timeout"
    assert attrs(first)["error.type"] == "upstream_timeout"
    assert fakes.a.wait_for_disconnects(1), "the timed-out upstream request was not closed"


def test_connection_refused_moves_on(fakes: Fakes, spangate_for: Start) -> None:
    """A provider whose base_url refuses connections is a `connection` failure."""
    dead = {"a": {"base_url": f"http://127.0.0.1:{unused_port()}"}}
    running = spangate_for(
        config(fakes, {"m": {"targets": targets("a", "b")}}, provider_overrides=dead)
    )
    raw = ask(running)
    assert raw.headers["x-spangate-target"] == label("b")
    first, _ = client_spans(running)
    assert attrs(first)["spangate.failure_class"] == "connection"
    assert attrs(first)["error.type"] == "upstream_unreachable"


def test_every_target_failing_tries_each_once_and_relays_the_last(
    fakes: Fakes, spangate_for: Start
) -> None:
    """All three targets fail: each is tried once, the last provider's answer is relayed."""
    fakes.a.script(openai_error(503))
    fakes.b.script(openai_error(500))
    fakes.c.script(openai_error(502))
    running = spangate_for(config(fakes, {"m": {"targets": targets("a", "b", "c")}}))
    with oai(running) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="m", messages=HELLO)
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-spangate-attempts"] == "3"
    assert fakes.counts() == {"a": 1, "b": 1, "c": 1, "x": 0, "y": 0}
    server = only_server_span(running)
    assert attrs(server)["spangate.attempts"] == 3
    assert attrs(server)["spangate.target"] == label("c")
    assert server.status.is_ok is False  # a relayed 5xx is an error on the SERVER span


def test_every_target_unreachable_gives_a_502_in_the_clients_format(
    fakes: Fakes, spangate_for: Start
) -> None:
    """No provider answered at all: spangate's own error, in the client's format."""
    dead = {
        "x": {"base_url": f"http://127.0.0.1:{unused_port()}"},
        "y": {"base_url": f"http://127.0.0.1:{unused_port()}"},
    }
    running = spangate_for(
        config(fakes, {"m": {"targets": targets("x", "y")}}, provider_overrides=dead)
    )
    with claude(running) as client, pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="m", max_tokens=64, messages=HELLO)
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert attrs(only_server_span(running))["spangate.attempts"] == 2


def test_fallback_alias_serves_when_every_target_failed(fakes: Fakes, spangate_for: Start) -> None:
    """Alias A's targets all answer 503; fallbacks: [B] serves, spangate.fallback says so."""
    fakes.a.script(openai_error(503))
    fakes.b.script(openai_error(503))
    models = {
        "A": {"targets": targets("a", "b"), "fallbacks": ["B"]},
        "B": {"targets": targets("c", model="gpt-4o")},
    }
    running = spangate_for(config(fakes, models))
    raw = ask(running, model="A")
    assert raw.parse().choices[0].message.content == "Hello from gpt-4o: hi there"
    assert raw.headers["x-spangate-fallback"] == "B"
    assert raw.headers["x-spangate-attempts"] == "3"
    assert raw.headers["x-spangate-target"] == "c/gpt-4o"
    server = attrs(only_server_span(running))
    assert server["spangate.fallback"] == "B"
    assert server["spangate.route"] == "A"
    assert server["spangate.attempts"] == 3
    assert metric_sum(running, "spangate.failovers", {"spangate.route": "A"}) == 1


def test_fallbacks_are_tried_in_order_and_chain(fakes: Fakes, spangate_for: Start) -> None:
    """A → [B, C]: B fails too, C serves; B's own fallbacks do not loop back to A."""
    fakes.a.script(openai_error(503))
    fakes.b.script(openai_error(503))
    models = {
        "A": {"targets": targets("a"), "fallbacks": ["B", "C"]},
        "B": {"targets": targets("b"), "fallbacks": ["A"]},
        "C": {"targets": targets("c")},
    }
    running = spangate_for(config(fakes, models))
    raw = ask(running, model="A")
    assert raw.headers["x-spangate-fallback"] == "C"
    assert fakes.counts() == {"a": 1, "b": 1, "c": 1, "x": 0, "y": 0}


def test_request_body_reaches_every_attempt_unchanged_but_the_model(
    fakes: Fakes, spangate_for: Start
) -> None:
    """Every attempt is rebuilt from the client's request: same body, target's model."""
    fakes.a.script(openai_error(503))
    models = {"m": {"targets": [*targets("a"), *targets("b", model="gpt-4o")]}}
    running = spangate_for(config(fakes, models))
    with oai(running) as client:
        client.chat.completions.create(model="m", messages=HELLO, temperature=0.25, seed=7)
    first, second = fakes.a.last.json(), fakes.b.last.json()
    assert first == {**second, "model": GPT}
    assert second["model"] == "gpt-4o"
    assert json.loads(fakes.b.last.body)["temperature"] == 0.25


def test_unaliased_model_is_passed_through_without_failover(
    fakes: Fakes, spangate_for: Start
) -> None:
    """A model that is not an alias goes to the first provider as sent: no retry."""
    fakes.a.script(openai_error(503))
    running = spangate_for(config(fakes, {"m": {"targets": targets("b")}}))
    with oai(running) as client, pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=GPT, messages=HELLO)
    assert fakes.counts() == {"a": 1, "b": 0, "c": 0, "x": 0, "y": 0}


async def test_anthropic_raw_headers_name_the_decision(fakes: Fakes, spangate_for: Start) -> None:
    """Raw check: the decision headers ride on an Anthropic-format response too."""
    fakes.x.script(anthropic_error(500))
    running = spangate_for(config(fakes, {"m": {"targets": targets("x", "y")}}))
    status, headers, _ = await post(running.url, "/v1/messages", message(), ANTHROPIC_HEADERS)
    assert status == 200
    assert headers["x-spangate-attempts"] == "2"
    assert headers["x-spangate-target"] == label("y")


# --------------------------------------------------------------------------- compressed errors
# The SDKs accept gzip, so providers answer errors gzip-compressed: the classifier reads an
# inflated copy, and the client still gets the provider's compressed bytes as sent.


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
