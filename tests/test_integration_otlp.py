"""What arrives at a real OTLP collector (rotel) from spangate, over gRPC and over HTTP.

spangate runs as a subprocess configured only by OTEL_* variables; the official
openai and anthropic SDKs call it; rotel writes every span, metric point and log
record it receives to a file that the tests read back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fakeprovider import FakeProvider, stall
from harness import SpangateProcess
from receivers.rotel import RotelReceiver
from test_integration_support import (
    ALIAS,
    CLAUDE,
    CLIENT,
    GPT,
    HELLO,
    NO_OTLP,
    SERVER,
    SERVICE_NAME,
    Usage,
    children,
    config_for,
    drive_all_four,
    endpoint_of,
    http_get,
    openai_client,
    otlp_env,
    poll,
    started,
    wait_for_requests,
)

pytestmark = pytest.mark.integration

PROTOCOLS = ["grpc", "http/protobuf"]
DURATION_BUCKETS = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
]  # fmt: skip
TOKEN_BUCKETS = [
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
]  # fmt: skip


@dataclass
class Exported:
    """One spangate run driven by the four SDK calls, and the collector it exported to."""

    protocol: str
    fake: FakeProvider
    receiver: RotelReceiver
    proc: SpangateProcess
    usages: dict[str, Usage]
    servers: list[dict[str, Any]]  # the four SERVER spans, once their trees arrived


#: Each protocol run with one of the two telemetry pipelines (explicit: `auto` would
#: pick by the machine's CPUs), so every assertion below holds for both.
RUNS = [("grpc", "process"), ("http/protobuf", "thread")]


@pytest.fixture(scope="module", params=RUNS, ids=["grpc-process", "http-thread"])
def exported(request: pytest.FixtureRequest) -> Iterator[Exported]:
    protocol, pipeline = request.param
    with FakeProvider() as fake, RotelReceiver() as receiver:
        env = otlp_env(endpoint_of(receiver, protocol), protocol)
        config = config_for(fake, telemetry={"pipeline": pipeline})
        with started(config, env) as proc:
            usages = drive_all_four(proc)
            servers = wait_for_requests(receiver, 4)
            yield Exported(protocol, fake, receiver, proc, usages, servers)


def latest_metrics(receiver: RotelReceiver) -> dict[str, dict[str, Any]]:
    """The most recent export of each metric (spangate exports cumulative sums)."""
    return {row["name"]: row for row in receiver.items("metric")}


def test_resource_carries_the_service_name_and_resource_attributes(exported: Exported) -> None:
    receiver = exported.receiver
    poll(lambda: receiver.items("metric") and receiver.items("log"), what="metrics and logs")
    for kind in ("span", "metric", "log"):
        items = receiver.items(kind)
        assert items, kind
        for item in items:
            resource = item["resource"]
            assert resource["service.name"] == SERVICE_NAME, (kind, resource)
            assert resource["deployment.environment"] == "test", (kind, resource)


def test_each_request_is_a_server_span_with_a_client_child_in_the_same_trace(
    exported: Exported,
) -> None:
    servers = exported.servers
    assert len(servers) == 4
    assert len({s["trace_id"] for s in servers}) == 4  # one trace per independent call
    for server in servers:
        assert server["parent_span_id"] == ""  # the SDK calls carried no traceparent
        kids = children(exported.receiver, server)
        assert [k["kind"] for k in kids] == [CLIENT], kids
        assert kids[0]["trace_id"] == server["trace_id"]
        attrs = server["attributes"]
        assert attrs["http.request.method"] == "POST"
        assert attrs["http.response.status_code"] == 200
        assert attrs["http.route"] in ("/v1/chat/completions", "/v1/messages")
    routes = [s["attributes"].get("spangate.route") for s in servers]
    assert routes.count(ALIAS) == 1  # only the aliased call names a route


def test_each_upstream_call_carries_the_traceparent_of_its_client_span(
    exported: Exported,
) -> None:
    clients = {
        (k["trace_id"], k["span_id"])
        for server in exported.servers
        for k in children(exported.receiver, server)
    }
    sent = set()
    for received in exported.fake.received:
        _, trace_id, span_id, flags = received.headers["traceparent"].split("-")
        assert flags == "01"
        sent.add((trace_id, span_id))
    assert sent == clients


def client_spans(exported: Exported) -> dict[tuple[str, bool], dict[str, Any]]:
    """The CLIENT spans of the four calls, by (provider, streamed)."""
    out: dict[tuple[str, bool], dict[str, Any]] = {}
    for server in exported.servers:
        (client,) = children(exported.receiver, server)
        attrs = client["attributes"]
        out[(attrs["gen_ai.provider.name"], bool(attrs.get("gen_ai.request.stream")))] = client
    return out


def test_client_spans_carry_genai_attributes(exported: Exported) -> None:
    spans = client_spans(exported)
    assert set(spans) == {
        ("openai", False),
        ("openai", True),
        ("anthropic", False),
        ("anthropic", True),
    }
    expected = {
        ("openai", False): ("openai", GPT, ["stop"]),
        ("openai", True): ("openai-stream", GPT, ["stop"]),
        ("anthropic", False): ("anthropic", CLAUDE, ["end_turn"]),
        ("anthropic", True): ("anthropic-stream", CLAUDE, ["end_turn"]),
    }
    for key, (call, model, finish) in expected.items():
        span = spans[key]
        attrs = span["attributes"]
        assert span["kind"] == CLIENT
        assert span["name"] == f"chat {model}"
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.request.model"] == model
        assert attrs["gen_ai.response.model"] == model
        # An OTLP array value, not a string that looks like one.
        assert attrs["gen_ai.response.finish_reasons"] == finish
        assert isinstance(attrs["gen_ai.usage.input_tokens"], int)
        assert isinstance(attrs["gen_ai.usage.output_tokens"], int)
        assert attrs["gen_ai.usage.input_tokens"] > 0
        assert attrs["gen_ai.usage.output_tokens"] > 0
        usage = exported.usages[call]
        if usage.input is not None:  # what the provider told the app is what the span says
            assert attrs["gen_ai.usage.input_tokens"] == usage.input
            assert attrs["gen_ai.usage.output_tokens"] == usage.output
    # The aliased call is reported as the model that was really called.
    assert spans[("openai", False)]["attributes"]["spangate.route"] == ALIAS


def test_genai_and_spangate_metrics_arrive(exported: Exported) -> None:
    receiver = exported.receiver

    def four_requests() -> dict[str, dict[str, Any]] | None:
        metrics = latest_metrics(receiver)
        requests = metrics.get("spangate.requests")
        if requests is None or sum(p["value"] for p in requests["points"]) < 4:
            return None
        return metrics

    metrics = poll(four_requests, what="spangate.requests to count 4")
    for name in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage"):
        assert name in metrics, sorted(metrics)
    assert sum(p["value"] for p in metrics["spangate.requests"]["points"]) == 4

    duration = metrics["gen_ai.client.operation.duration"]
    assert duration["unit"] == "s"
    assert duration["points"]
    for point in duration["points"]:
        assert point["explicit_bounds"] == DURATION_BUCKETS
        assert point["attributes"]["gen_ai.operation.name"] == "chat"
    assert sum(p["count"] for p in duration["points"]) == 4

    usage = metrics["gen_ai.client.token.usage"]
    by_type: dict[str, int] = {}
    for point in usage["points"]:
        assert point["explicit_bounds"] == TOKEN_BUCKETS
        token_type = point["attributes"]["gen_ai.token.type"]
        by_type[token_type] = by_type.get(token_type, 0) + point["count"]
        assert point["attributes"]["gen_ai.provider.name"] in ("openai", "anthropic")
    assert by_type == {"input": 4, "output": 4}


def test_request_completed_logs_arrive_with_the_trace_context(exported: Exported) -> None:
    """Each record's trace context is its SERVER span's; the line's other fields are its
    attributes, the ids not repeated among them."""
    receiver = exported.receiver
    servers = {s["trace_id"]: s for s in exported.servers}

    def completed() -> list[dict[str, Any]] | None:
        logs = [r for r in receiver.items("log") if r["body"] == "request.completed"]
        return logs if len(logs) >= 4 else None

    logs = poll(completed, what="4 request.completed log records")
    assert len(logs) == 4
    assert {r["trace_id"] for r in logs} == set(servers)
    for record in logs:
        assert record["span_id"] == servers[record["trace_id"]]["span_id"]
        assert record["attributes"]["status"] == 200
        assert record["attributes"]["path"] in ("/v1/chat/completions", "/v1/messages")
        assert not {"trace_id", "span_id"} & set(record["attributes"])


def test_the_serving_processs_own_log_lines_arrive_too(exported: Exported) -> None:
    """spangate.ready is written by the serving process: with the telemetry process it
    travels there to be exported, like the request lines that the child writes itself."""
    ready = poll(
        lambda: [r for r in exported.receiver.items("log") if r["body"] == "spangate.ready"],
        what="the spangate.ready log record",
    )
    assert ready[0]["attributes"]["address"] == exported.proc.url


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["grpc", "http"])
def test_sigterm_right_after_a_request_still_delivers_its_telemetry(protocol: str) -> None:
    """Batches are hours away: only the shutdown flush can deliver them."""
    slow = {"OTEL_BSP_SCHEDULE_DELAY": "3600000", "OTEL_METRIC_EXPORT_INTERVAL": "3600000"}
    with FakeProvider() as fake, RotelReceiver() as receiver:
        env = otlp_env(endpoint_of(receiver, protocol), protocol, **slow)
        proc = SpangateProcess(config_for(fake), env).start()
        try:
            reply = openai_client(proc).chat.completions.with_raw_response.create(
                model=GPT, messages=HELLO
            )
            assert reply.http_response.status_code == 200
            assert receiver.items("span") == []  # nothing goes out before the flush
            proc.terminate()
            assert proc.wait(30) == 0
        finally:
            proc.stop()
        (server,) = wait_for_requests(receiver, 1, timeout=10)
        (client,) = children(receiver, server)
        assert (server["kind"], client["kind"]) == (SERVER, CLIENT)
        assert client["name"] == f"chat {GPT}"
        poll(
            lambda: any(r["body"] == "request.completed" for r in receiver.items("log")),
            what="the request.completed log record",
        )
        logged = [r for r in receiver.items("log") if r["body"] == "request.completed"]
        assert [r["trace_id"] for r in logged] == [server["trace_id"]]
        poll(
            lambda: "spangate.requests" in {m["name"] for m in receiver.items("metric")},
            what="the final metric export",
        )


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["grpc", "http"])
def test_the_config_section_configures_export_and_the_environment_wins(protocol: str) -> None:
    with FakeProvider() as fake, RotelReceiver() as receiver:
        telemetry = {
            "otlp_endpoint": endpoint_of(receiver, protocol),
            "otlp_protocol": protocol,
            "service_name": "from-config",
            "resource_attributes": {"team": "llm-platform", "deployment.environment": "config"},
            "logs_otlp": True,
            "metric_export_interval_ms": 500,
        }
        env = {
            **NO_OTLP,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "",
            "OTEL_LOGS_EXPORTER": "",
            "OTEL_METRIC_EXPORT_INTERVAL": "",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",  # wins over the config
        }
        with started(config_for(fake, telemetry=telemetry), env) as proc:
            openai_client(proc).chat.completions.create(model=GPT, messages=HELLO)
            wait_for_requests(receiver, 1)
            poll(
                lambda: receiver.items("metric") and receiver.items("log"),
                what="metrics and logs exported as the config says",
            )
        for kind in ("span", "metric", "log"):
            for item in receiver.items(kind):
                resource = item["resource"]
                assert resource["service.name"] == "from-config", (kind, resource)
                assert resource["team"] == "llm-platform", (kind, resource)
                assert resource["deployment.environment"] == "test", (kind, resource)


def test_a_stream_draining_at_sigterm_is_exported_once_it_ends() -> None:
    """SIGTERM mid-stream: the stream finishes during the drain, then its spans are flushed."""
    slow = {"OTEL_BSP_SCHEDULE_DELAY": "3600000", "OTEL_METRIC_EXPORT_INTERVAL": "3600000"}
    with FakeProvider() as fake, RotelReceiver() as receiver:
        fake.script(stall(after=2, seconds=1.0))
        proc = SpangateProcess(config_for(fake), otlp_env(receiver.http_endpoint, **slow)).start()
        try:
            stream = openai_client(proc).chat.completions.create(
                model=GPT, messages=HELLO, stream=True
            )
            chunks = iter(stream)
            first = next(chunks)
            proc.terminate()  # while the provider is pausing mid-stream
            rest = list(chunks)
            assert [first, *rest][-1].choices[0].finish_reason == "stop"
            assert proc.wait(30) == 0
        finally:
            proc.stop()
        (server,) = wait_for_requests(receiver, 1, timeout=10)
        (client,) = children(receiver, server)
        assert client["attributes"]["gen_ai.request.stream"] is True
        assert client["attributes"]["spangate.stream.outcome"] == "completed"
        assert client["attributes"]["gen_ai.usage.output_tokens"] > 0


def test_delta_temporality_sends_each_value_once_while_prometheus_keeps_totals() -> None:
    """OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta: spangate's histograms reach
    the collector as deltas (every value in exactly one export, idle intervals add
    nothing), while /metrics, cumulative by nature, still counts everything."""
    with FakeProvider() as fake, RotelReceiver() as receiver:
        env = otlp_env(
            endpoint_of(receiver, "grpc"),
            "grpc",
            OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE="delta",
        )
        with started(config_for(fake, telemetry={"pipeline": "thread"}), env) as proc:
            client = openai_client(proc)
            for _ in range(3):
                client.chat.completions.create(model=GPT, messages=HELLO)

            def durations() -> list[dict[str, Any]]:
                rows = receiver.items("metric")
                return [r for r in rows if r["name"] == "gen_ai.client.operation.duration"]

            def counted() -> int:
                return sum(p["count"] for row in durations() for p in row["points"])

            poll(lambda: counted() >= 3, what="3 durations exported")

            def exports() -> int:
                rows = receiver.items("metric")
                return len([r for r in rows if r["name"] == "spangate.requests"])

            # Two more export intervals with nothing new: a cumulative reader would resend 3.
            seen = exports()
            poll(lambda: exports() >= seen + 2, what="two more metric exports")
            assert counted() == 3
            assert {row["temporality"] for row in durations()} == {"delta"}
            status, text = http_get(proc.url + "/metrics")
            assert status == 200
            assert "gen_ai_client_operation_duration_seconds_count{" in text
            # The scrape itself, served by spangate, is not a request in flight.
            (inflight,) = [
                line for line in text.splitlines() if line.startswith("spangate_requests_inflight")
            ]
            assert inflight.endswith("} 0.0"), inflight
            counts = [
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("gen_ai_client_operation_duration_seconds_count{")
            ]
            assert sum(counts) == 3
