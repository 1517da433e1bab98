"""API keys never reach telemetry: not the collector, not stdout, not /metrics.

The client's key and a configured provider key (from `${ENV}` interpolation)
are distinctive strings; after real SDK traffic through spangate, including
upstream 401s whose error bodies echo the key, neither string is anywhere in
what the OTLP collector received, what spangate printed, or what /metrics shows.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from fakeprovider import FakeProvider, anthropic_error, openai_error
from receivers.rotel import RotelReceiver
from test_integration_support import (
    ALIAS,
    CLAUDE,
    GPT,
    HELLO,
    anthropic_client,
    http_get,
    openai_client,
    otlp_env,
    poll,
    started,
    wait_for_requests,
)

pytestmark = pytest.mark.integration

CLIENT_KEY = "sk-it-CLIENTSECRET-1234567890"
CONFIG_KEY = "sk-it-CONFIGSECRET-0987654321"
#: The distinctive parts: a leak of any fragment long enough to identify a key fails too.
MARKERS = (CLIENT_KEY, CONFIG_KEY, "CLIENTSECRET", "CONFIGSECRET", "1234567890", "0987654321")


def config_for(fake: FakeProvider) -> dict[str, Any]:
    return {
        "providers": {
            # This key replaces the client's; `${...}` is resolved from spangate's environment.
            "openai": {"kind": "openai", "base_url": fake.url, "api_key": "${IT_PROVIDER_KEY}"},
            # No key configured: the client's key is forwarded.
            "anthropic": {"kind": "anthropic", "base_url": fake.url},
        },
        "models": {ALIAS: {"targets": [{"provider": "openai", "model": GPT}]}},
    }


def leaks(text: str) -> list[str]:
    return [marker for marker in MARKERS if marker in text]


def test_keys_appear_in_no_span_metric_log_or_stdout() -> None:
    with FakeProvider() as fake, RotelReceiver() as receiver:
        env = otlp_env(
            receiver.http_endpoint,
            IT_PROVIDER_KEY=CONFIG_KEY,
            # Content capture on everywhere: more places a key could slip into.
            OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="SPAN_AND_EVENT",
        )
        with started(config_for(fake), env) as proc:
            gpt = openai_client(proc, api_key=CLIENT_KEY)
            claude = anthropic_client(proc, api_key=CLIENT_KEY)
            gpt.chat.completions.create(model=ALIAS, messages=HELLO)
            assert [c for c in gpt.chat.completions.create(model=GPT, messages=HELLO, stream=True)]
            claude.messages.create(model=CLAUDE, max_tokens=32, messages=HELLO)

            # Upstream 401s whose bodies name the key, as OpenAI's do.
            fake.script(
                openai_error(
                    401,
                    "invalid_api_key",
                    f"Incorrect API key provided: {CONFIG_KEY}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                )
            )
            with pytest.raises(openai.AuthenticationError):
                gpt.chat.completions.create(model=GPT, messages=HELLO)
            fake.script(anthropic_error(401, "authentication_error", f"invalid key {CLIENT_KEY}"))
            with pytest.raises(anthropic.AuthenticationError):
                claude.messages.create(model=CLAUDE, max_tokens=32, messages=HELLO)

            # The keys really travelled: the configured one to OpenAI, the client's to Anthropic.
            sent = [
                (r.path, r.headers.get("authorization", "") + r.headers.get("x-api-key", ""))
                for r in fake.received
            ]
            assert all(CONFIG_KEY in auth for path, auth in sent if path.startswith("/v1/chat"))
            assert all(CLIENT_KEY in auth for path, auth in sent if path == "/v1/messages")
            assert len(sent) == 5

            # Everything the five requests produce has arrived.
            wait_for_requests(receiver, 5)
            poll(
                lambda: (
                    sum(1 for r in receiver.items("log") if r["body"] == "request.completed") == 5
                ),
                what="five request.completed log records",
            )
            poll(
                lambda: "spangate.requests" in {m["name"] for m in receiver.items("metric")},
                what="metrics",
            )
            statuses = sorted(
                e["status"] for e in proc.logs() if e.get("event") == "request.completed"
            )
            assert statuses == [200, 200, 200, 401, 401]
            status, metrics_text = http_get(proc.url + "/metrics")
            assert status == 200
            proc.terminate()  # the shutdown's own lines and final exports count too
            assert proc.wait(30) == 0
            stdout = proc.raw_output()
        collected = receiver.raw_output()

    assert "request.completed" in collected and "request.completed" in stdout
    assert leaks(collected) == [], "a key reached the OTLP collector"
    assert leaks(stdout) == [], "a key reached spangate's stdout/stderr"
    assert leaks(metrics_text) == [], "a key reached /metrics"
