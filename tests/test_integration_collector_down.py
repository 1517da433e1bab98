"""A collector that is down never fails a request; the lost telemetry is counted.

OTEL_EXPORTER_OTLP_ENDPOINT names a port nobody listens on, for both OTLP
protocols; every request still succeeds and /metrics reports the spans spangate
could not export.
"""

from __future__ import annotations

import pytest
from fakeprovider import FakeProvider
from receivers.rotel import free_port
from test_integration_support import (
    CLAUDE,
    GPT,
    HELLO,
    anthropic_client,
    config_for,
    http_get,
    openai_client,
    otlp_env,
    poll,
    sample_sum,
    started,
)

pytestmark = pytest.mark.integration

REQUESTS = 30
DROPPED = "spangate_telemetry_dropped_total"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"], ids=["grpc", "http"])
def test_requests_succeed_and_failed_exports_are_counted(protocol: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    # A short exporter timeout keeps each failed export (and the shutdown flush) brief.
    env = otlp_env(closed, protocol, OTEL_EXPORTER_OTLP_TIMEOUT="1")
    with FakeProvider() as fake, started(config_for(fake), env) as proc:
        exporting = proc.wait_for_log("telemetry.exporting")
        assert exporting["traces"] == closed
        gpt, claude = openai_client(proc), anthropic_client(proc)
        for n in range(REQUESTS):
            if n % 3 == 0:
                reply = gpt.chat.completions.create(model=GPT, messages=HELLO)
                assert reply.choices[0].message.content
            elif n % 3 == 1:
                stream = gpt.chat.completions.create(model=GPT, messages=HELLO, stream=True)
                assert [chunk for chunk in stream if chunk.choices]
            else:
                message = claude.messages.create(model=CLAUDE, max_tokens=16, messages=HELLO)
                assert message.content
        assert len(fake.received) == REQUESTS

        def dropped_spans() -> float:
            status, text = http_get(proc.url + "/metrics")
            assert status == 200
            return sample_sum(
                text, DROPPED, spangate_signal="spans", spangate_reason="export_failed"
            )

        assert poll(dropped_spans, timeout=20, what="export_failed span drops") > 0
        assert http_get(proc.url + "/readyz")[0] == 200
        completed = [e for e in proc.logs() if e.get("event") == "request.completed"]
        assert len(completed) == REQUESTS
        assert {e["status"] for e in completed} == {200}
        proc.terminate()
        assert proc.wait(30) == 0  # the final flush gives up; the exit is still clean
