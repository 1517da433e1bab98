"""API keys never reach telemetry: spans, metrics, OTel log records, log lines, error bodies.

Distinctive keys go through every path that handles them — client keys via
`Authorization: Bearer` and `x-api-key`, a configured provider key that replaces
the client's, a provider that rejects the key (401), a request spangate rejects
itself, and an unreachable provider — then every exported byte is searched.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import Running
from fakeprovider import FakeProvider, openai_error, unused_port
from structlog.testing import capture_logs
from test_telemetry_support import (
    CLAUDE,
    GPT,
    claude,
    finished_spans,
    logs_json,
    metrics_json,
    oai,
    settle,
    spans_json,
)

from instrumentation import semconv as sc

Start = Callable[..., Running]
HELLO: Any = [{"role": "user", "content": "hi there"}]
CLIENT_KEY = "sk-client-SECRET-123456789"
CONFIG_KEY = "sk-config-SECRET-987654321"
#: Parts that identify each key even if a prefix or suffix was cut off somewhere.
MARKERS = (CLIENT_KEY, CONFIG_KEY, "SECRET-123456789", "SECRET-987654321")


def secret_config(fake: FakeProvider) -> dict[str, Any]:
    dead = f"http://127.0.0.1:{unused_port()}"
    return {
        "providers": {
            "openai": {"kind": "openai", "base_url": fake.url, "api_key": CONFIG_KEY},
            "anthropic": {"kind": "anthropic", "base_url": fake.url},
            "plain": {"kind": "openai", "base_url": fake.url},
            "dead": {"kind": "openai", "base_url": dead, "api_key": CONFIG_KEY},
        },
        "models": {
            "viaplain": {"targets": [{"provider": "plain", "model": GPT}]},
            "deadalias": {"targets": [{"provider": "dead", "model": GPT}]},
        },
    }


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST with urllib (no SDK in the way); returns status and body text, errors included."""
    sent = {"Content-Type": "application/json", **headers}
    request = urllib.request.Request(url, data=body, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def leaks(text: str) -> list[str]:
    return [marker for marker in MARKERS if marker in text]


def test_keys_appear_in_no_telemetry_and_no_error_body(
    fake: FakeProvider, spangate_for: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """Every key path exercised; no span, metric, log record, log line or error body names a key."""
    running = spangate_for(secret_config(fake), env={sc.CAPTURE_CONTENT_ENV: "SPAN_AND_EVENT"})
    bodies: list[str] = []
    with capture_logs() as captured:
        # Bearer client key, replaced upstream by the configured key.
        oai(running, api_key=CLIENT_KEY).chat.completions.create(model=GPT, messages=HELLO)
        assert fake.last.headers["authorization"] == f"Bearer {CONFIG_KEY}"
        # Bearer client key forwarded unchanged (provider without a configured key), streamed.
        list(
            oai(running, api_key=CLIENT_KEY).chat.completions.create(
                model="viaplain", messages=HELLO, stream=True
            )
        )
        assert fake.last.headers["authorization"] == f"Bearer {CLIENT_KEY}"
        # The Anthropic SDK's key (sent as Bearer by current SDKs), forwarded unchanged.
        claude(running, api_key=CLIENT_KEY).messages.create(
            model=CLAUDE, max_tokens=20, messages=HELLO
        )
        assert fake.last.headers["authorization"] == f"Bearer {CLIENT_KEY}"
        # x-api-key, the Anthropic API's own header, forwarded unchanged.
        status = post(
            running.url + "/v1/messages",
            b'{"model": "claude-sonnet-4-6", "max_tokens": 20, "messages": '
            b'[{"role": "user", "content": "hi"}]}',
            {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
        )[0]
        assert status == 200
        assert fake.last.headers["x-api-key"] == CLIENT_KEY
        # The provider rejects the key: 401 relayed.
        fake.script(openai_error(401, "invalid_api_key"))
        with pytest.raises(openai.AuthenticationError) as rejected_key:
            oai(running, api_key=CLIENT_KEY).chat.completions.create(
                model="viaplain", messages=HELLO
            )
        bodies.append(rejected_key.value.response.text)
        # spangate rejects the request itself (not JSON).
        status, body = post(
            running.openai_base_url + "/chat/completions",
            b"{oops",
            {"Authorization": f"Bearer {CLIENT_KEY}"},
        )
        assert status == 400
        bodies.append(body)
        # Upstream unreachable: spangate's own 502, for a provider with a configured key.
        with pytest.raises(openai.APIStatusError) as unreachable:
            oai(running, api_key=CLIENT_KEY).chat.completions.create(
                model="deadalias", messages=HELLO
            )
        assert unreachable.value.status_code == 502
        bodies.append(unreachable.value.response.text)
        settle(running)

    spans = finished_spans(running)
    assert len(spans) == 13
    assert leaks(spans_json(spans)) == []
    assert leaks(metrics_json(running)) == []
    exported_logs = logs_json(running)
    assert exported_logs  # content events were emitted, so there was something to search
    assert leaks(exported_logs) == []
    assert len([e for e in captured if e.get("event") == "request.completed"]) == 7
    assert leaks(repr(captured)) == []
    assert leaks(caplog.text) == []
    assert len(bodies) == 3
    for body in bodies:
        assert leaks(body) == []


def test_key_shaped_text_a_client_chose_is_redacted_on_spans_metrics_and_events(
    fake: FakeProvider, spangate_for: Start
) -> None:
    """A key pasted where a client writes free text (the model field, which the provider
    echoes back as its response model; the User-Agent; a path; a stop sequence) reaches no
    span name or attribute, metric label or content event: the request line was redacted
    as a whole, and spans, metrics and events get the same redaction field by field."""
    running = spangate_for(secret_config(fake), env={sc.CAPTURE_CONTENT_ENV: "SPAN_AND_EVENT"})
    client = openai.OpenAI(
        base_url=running.openai_base_url,
        api_key="not-a-secret",
        max_retries=0,
        default_headers={"User-Agent": f"myapp key={CLIENT_KEY}"},
    )
    client.chat.completions.create(model=CLIENT_KEY, messages=HELLO, stop=[CLIENT_KEY])
    assert fake.last.json()["model"] == CLIENT_KEY  # the bytes upstream are the client's
    client.models.retrieve(CLIENT_KEY)  # a pass-through path holding the key
    settle(running)

    spans = finished_spans(running)
    assert {s.name for s in spans} >= {"chat [REDACTED]"}
    assert leaks(spans_json(spans)) == []
    metrics = metrics_json(running)
    assert "[REDACTED]" in metrics  # the request model label is there, redacted
    assert leaks(metrics) == []
    assert leaks(logs_json(running)) == []


def test_stdlib_log_records_are_json_lines_on_stderr_and_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """aiohttp logs a request it could not parse as it came, a client's key included, and
    with a traceback: after configure_logging such a record is one JSON line on stderr,
    the key redacted in the message and in the exception text, and one handler however
    often logging is configured."""
    import json
    import logging

    import structlog

    from instrumentation.logging import Redactor, configure_logging

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        configure_logging(Redactor())
        configure_logging(Redactor())
        ours = [h for h in root.handlers if h not in before]
        assert len(ours) == 1
        try:
            raise ValueError(f"Invalid header: Authorization : Bearer {CLIENT_KEY}")
        except ValueError:
            logging.getLogger("aiohttp.server").exception("Error handling request %s", CLIENT_KEY)
        (line,) = capsys.readouterr().err.splitlines()
        entry = json.loads(line)
        assert (entry["logger"], entry["level"]) == ("aiohttp.server", "error")
        assert entry["event"] == "Error handling request [REDACTED]"
        assert "ValueError" in entry["exception"]
        assert leaks(line) == []
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
        structlog.reset_defaults()
