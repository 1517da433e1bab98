"""A real Prometheus scraping spangate's /metrics, on the main listener and on its own one.

Also: with no OTLP endpoint spangate says so once, and still serves /metrics.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakeprovider import FakeProvider
from harness import SpangateProcess
from receivers.prometheus import PrometheusServer
from receivers.rotel import free_port
from test_integration_support import (
    ALIAS,
    CLAUDE,
    GPT,
    HELLO,
    NO_OTLP,
    anthropic_client,
    config_for,
    http_get,
    openai_client,
    poll,
    sample_sum,
    started,
)

pytestmark = pytest.mark.integration

#: The advised second-based buckets, as Prometheus `le` labels.
DURATION_LE = {
    "0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12",
    "10.24", "20.48", "40.96", "81.92", "+Inf",
}  # fmt: skip
TOKEN_BOUNDS = {
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
}  # fmt: skip


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def port_of(proc: SpangateProcess) -> int:
    return int(proc.url.rsplit(":", 1)[1])


def drive(proc: SpangateProcess) -> int:
    """Three calls (alias, plain model, Anthropic); returns how many were made."""
    gpt = openai_client(proc)
    gpt.chat.completions.create(model=ALIAS, messages=HELLO)
    gpt.chat.completions.create(model=GPT, messages=HELLO)
    anthropic_client(proc).messages.create(model=CLAUDE, max_tokens=32, messages=HELLO)
    return 3


def wait_for_value(prometheus: PrometheusServer, expr: str, value: float) -> None:
    def reached() -> bool:
        result = prometheus.query(expr)
        return bool(result) and float(result[0]["value"][1]) == value

    poll(reached, timeout=20, what=f"{expr} == {value}", every=0.25)


def test_prometheus_scrapes_the_main_listener(fake: FakeProvider) -> None:
    with started(config_for(fake), NO_OTLP) as proc:
        calls = drive(proc)
        with PrometheusServer(target=f"127.0.0.1:{port_of(proc)}") as prometheus:
            wait_for_value(prometheus, "sum(spangate_requests_total)", calls)
            routed = prometheus.wait_for(f'spangate_requests_total{{spangate_route="{ALIAS}"}}')
            assert float(routed[0]["value"][1]) == 1

            duration = prometheus.wait_for("gen_ai_client_operation_duration_seconds_bucket")
            assert {s["metric"]["le"] for s in duration} == DURATION_LE
            assert {s["metric"]["gen_ai_provider_name"] for s in duration} == {
                "openai",
                "anthropic",
            }
            wait_for_value(
                prometheus,
                'sum(gen_ai_client_operation_duration_seconds_bucket{le="+Inf"})',
                calls,
            )

            tokens = prometheus.wait_for("gen_ai_client_token_usage_bucket")
            le = {s["metric"]["le"] for s in tokens}
            assert "+Inf" in le
            assert {float(b) for b in le - {"+Inf"}} == TOKEN_BOUNDS
            assert {s["metric"]["gen_ai_token_type"] for s in tokens} == {"input", "output"}
            wait_for_value(
                prometheus,
                'sum(gen_ai_client_token_usage_count{gen_ai_token_type="input"})',
                calls,
            )


def test_prometheus_scrapes_the_separate_metrics_listener(fake: FakeProvider) -> None:
    metrics_port = free_port()
    config = config_for(fake, telemetry={"prometheus": {"host": "127.0.0.1", "port": metrics_port}})
    with started(config, NO_OTLP) as proc:
        listener = proc.wait_for_log("spangate.metrics_listener")
        assert listener["address"] == f"http://127.0.0.1:{metrics_port}/metrics"
        calls = drive(proc)

        status, text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert "spangate_requests_total" in text
        main_status, main_text = http_get(proc.url + "/metrics")
        assert main_status == 404  # not served there any more (nor sent upstream)
        assert "spangate_requests_total" not in main_text

        with PrometheusServer(target=f"127.0.0.1:{metrics_port}") as prometheus:
            # The 404 above is a client request too; the SDK calls are the 2xx ones.
            wait_for_value(
                prometheus, 'sum(spangate_requests_total{http_response_status_class="2xx"})', calls
            )
            prometheus.wait_for('gen_ai_client_operation_duration_seconds_bucket{le="0.01"}')
            prometheus.wait_for('gen_ai_client_token_usage_bucket{le="+Inf"}')


def test_without_an_otlp_endpoint_spangate_says_so_once_and_serves_metrics(
    fake: FakeProvider,
) -> None:
    with started(config_for(fake), NO_OTLP) as proc:
        drive(proc)
        poll(
            lambda: sum(1 for e in proc.logs() if e.get("event") == "request.completed") == 3,
            what="three request.completed lines",
        )
        status, text = http_get(proc.url + "/metrics")
        assert status == 200
        assert sample_sum(text, "spangate_requests_total") == 3
        assert sample_sum(text, "gen_ai_client_token_usage_count", gen_ai_token_type="input") == 3
        events = [e.get("event") for e in proc.logs()]
    assert events.count("telemetry.traces_not_exported") == 1
    assert "telemetry.exporting" not in events
    # Said at startup, before the listener was ready.
    assert events.index("telemetry.traces_not_exported") < events.index("spangate.ready")
