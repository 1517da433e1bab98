"""OTLP/HTTP on spangate's own connection (instrumentation/otlphttp.py), against a fake
collector on a real socket: keep-alive, the SDK's retry rules over it, compression,
headers, TLS, and the SDK's `requests` transport kept where only it would do."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import serving_context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

from instrumentation import otlp, otlphttp
from instrumentation.export import DropCounter
from instrumentation.otlpwire import SpanEncoder
from proxy.config import TelemetryConfig

SECRET = "sk-otlp-header-secret-123"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Set when the request has arrived; the answer waits for `release`, if given.
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event | None = None


@dataclass
class Collector:
    """Answers each POST with the next scripted Answer, then empty 200s."""

    url: str
    received: list[Received] = field(default_factory=list)
    script: list[Answer] = field(default_factory=list)
    #: Close the socket after each answer while claiming keep-alive (a collector
    #: restarting, or an idle timeout racing the next export).
    drop_after_answer: bool = False

    def connections(self) -> int:
        return len({r.peer for r in self.received})


def _lowered(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def _handler(collector: Collector) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            collector.received.append(
                Received(self.path, _lowered(self.headers.items()), body, self.client_address)
            )
            answer = collector.script.pop(0) if collector.script else Answer()
            answer.arrived.set()
            if answer.release is not None:
                answer.release.wait(10)
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
            if collector.drop_after_answer:
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[Collector]:
    collector = Collector("")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(collector))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    collector.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    yield from _serve()


def span(n: int = 1) -> ReadableSpan:
    return ReadableSpan(
        name=f"s{n}",
        context=SpanContext(1, n + 1, is_remote=False),
        attributes={"n": n},
        resource=Resource({"service.name": "t"}),
        start_time=1,
        end_time=2,
    )


def exporter_for(url: str, drops: DropCounter | None = None, **settings: Any) -> Any:
    config = TelemetryConfig(otlp_endpoint=url, otlp_protocol="http/protobuf", **settings)
    # The tests' OTEL_* settings; not a proxy the machine may have (this transport is
    # the subject, and it would step aside for one).
    env = {name: value for name, value in os.environ.items() if name.startswith("OTEL_")}
    return otlp.span_exporter(env, config, drops)


def export(exporter: Any, *spans: ReadableSpan) -> str:
    return str(exporter.export(list(spans)).name)


def test_spans_arrive_as_encoded_over_one_kept_alive_connection(collector: Collector) -> None:
    """Three exports: the bytes otlpwire encoded, at /v1/traces as protobuf, and one TCP
    connection for all three."""
    exporter = exporter_for(collector.url)
    assert isinstance(exporter._client._transport, otlphttp.Transport)
    try:
        for n in (1, 2, 3):
            assert export(exporter, span(n)) == "SUCCESS"
    finally:
        exporter.shutdown()
    assert [r.body for r in collector.received] == [
        SpanEncoder().encode([span(n)]) for n in (1, 2, 3)
    ]
    assert {r.path for r in collector.received} == {"/v1/traces"}
    assert collector.received[0].headers["content-type"] == "application/x-protobuf"
    assert collector.connections() == 1


def test_a_503_with_retry_after_is_retried_and_then_delivered(collector: Collector) -> None:
    """The SDK's retry rules run over this transport: it sees the status and the
    Retry-After header (0 s here, so the test does not wait)."""
    collector.script = [Answer(503, {"Retry-After": "0"})]
    exporter = exporter_for(collector.url)
    try:
        assert export(exporter, span()) == "SUCCESS"
    finally:
        exporter.shutdown()
    assert len(collector.received) == 2


def test_a_400_is_not_retried_and_the_export_fails(collector: Collector) -> None:
    collector.script = [Answer(400)]
    exporter = exporter_for(collector.url)
    try:
        assert export(exporter, span()) == "FAILURE"
    finally:
        exporter.shutdown()
    assert len(collector.received) == 1


def test_a_kept_alive_connection_the_collector_closed_is_reopened(collector: Collector) -> None:
    """The collector drops the connection after answering: the next export finds it
    closed, and the SDK's at-once retry goes out on a new one."""
    collector.drop_after_answer = True
    exporter = exporter_for(collector.url)
    try:
        assert export(exporter, span(1)) == "SUCCESS"
        assert export(exporter, span(2)) == "SUCCESS"
    finally:
        exporter.shutdown()
    assert [r.body for r in collector.received] == [SpanEncoder().encode([span(n)]) for n in (1, 2)]
    assert collector.connections() == 2


def test_a_partially_rejected_export_counts_and_logs_what_was_lost(
    collector: Collector,
) -> None:
    """A 200 whose body says 3 spans were rejected: the export succeeded, and the 3 are
    counted as dropped ("rejected") with the collector's reason logged."""
    partial = ExportTracePartialSuccess(rejected_spans=3, error_message="spans too old")
    body = ExportTraceServiceResponse(partial_success=partial).SerializeToString()
    collector.script = [Answer(body=body)]
    drops = DropCounter()
    exporter = exporter_for(collector.url, drops)
    try:
        with structlog.testing.capture_logs() as logged:
            assert export(exporter, span()) == "SUCCESS"
            assert export(exporter, span(2)) == "SUCCESS"  # an empty answer: none rejected
    finally:
        exporter.shutdown()
    assert drops.snapshot() == {("spans", "rejected"): 3}
    warnings = [line for line in logged if line["event"] == "otlp.partially_rejected"]
    assert [(w["signal"], w["rejected"], w["message"]) for w in warnings] == [
        ("traces", 3, "spans too old")
    ]


def test_gzip_from_the_environment_compresses_the_body(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    exporter = exporter_for(collector.url)
    try:
        assert export(exporter, span()) == "SUCCESS"
    finally:
        exporter.shutdown()
    (received,) = collector.received
    assert received.headers["content-encoding"] == "gzip"
    assert gzip.decompress(received.body) == SpanEncoder().encode([span()])


def test_configured_headers_reach_the_collector_but_not_the_logs(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    """An auth header is sent; the failure the collector answers with is logged
    without it."""
    collector.script = [Answer(401)]
    exporter = exporter_for(collector.url, otlp_headers={"authorization": f"Bearer {SECRET}"})
    try:
        assert export(exporter, span()) == "FAILURE"
    finally:
        exporter.shutdown()
    assert collector.received[0].headers["authorization"] == f"Bearer {SECRET}"
    assert caplog.records, "the failed export was not logged"
    assert SECRET not in caplog.text


def test_an_unreachable_collector_fails_the_export_with_a_result_not_an_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    exporter = exporter_for("http://127.0.0.1:9")
    try:
        assert export(exporter, span()) == "FAILURE"
    finally:
        exporter.shutdown()


def test_a_refused_connection_is_a_connection_error_the_sdk_retries() -> None:
    """What makes the SDK retry: the transport's own classification of its result."""
    transport = otlphttp.Transport()
    result = transport.request("POST", "http://127.0.0.1:9/v1/traces", data=b"", timeout=1)
    assert result.status_code is None
    assert transport.is_connection_error(result.error)


def test_a_closed_transport_opens_no_connection(collector: Collector) -> None:
    """After the SDK's shutdown closed it, even the SDK's at-once retry goes nowhere."""
    transport = otlphttp.Transport()
    assert transport.request("POST", collector.url + "/v1/traces", data=b"x").status_code == 200
    transport.close()
    result = transport.request("POST", collector.url + "/v1/traces", data=b"y")
    assert result.status_code is None
    assert [r.body for r in collector.received] == [b"x"]


def test_close_during_a_request_lets_it_finish_then_closes_the_connection(
    collector: Collector,
) -> None:
    """The SDK's shutdown may close the transport while its export thread waits for an
    answer: that answer is still read, the connection is closed after it, and nothing
    more is sent."""
    release = threading.Event()
    answer = Answer(release=release)
    collector.script = [answer]
    transport = otlphttp.Transport()
    results: list[Any] = []
    sender = threading.Thread(
        target=lambda: results.append(
            transport.request("POST", collector.url + "/v1/traces", data=b"x", timeout=10)
        )
    )
    sender.start()
    assert answer.arrived.wait(10)
    transport.close()
    release.set()
    sender.join(10)
    assert [r.status_code for r in results] == [200]
    assert transport._connection is None
    assert transport.request("POST", collector.url + "/v1/traces", data=b"y").status_code is None
    assert [r.body for r in collector.received] == [b"x"]


def test_a_failing_rejection_counter_does_not_fail_the_export(collector: Collector) -> None:
    partial = ExportTracePartialSuccess(rejected_spans=1)
    collector.script = [
        Answer(body=ExportTraceServiceResponse(partial_success=partial).SerializeToString())
    ]

    def broken(count: int, message: str) -> None:
        raise RuntimeError("counter broke")

    transport = otlphttp.Transport(on_rejected=broken)
    assert transport.request("POST", collector.url + "/v1/traces", data=b"x").status_code == 200


def test_an_idle_connection_is_readable_only_once_its_peer_closed() -> None:
    """What decides reuse; also for descriptors from 1024 up, which select() refuses."""
    ours, theirs = socket.socketpair()
    high: socket.socket | None = None
    try:
        assert not otlphttp._readable(ours)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > 1100:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1100), hard))
            high = socket.socket(fileno=os.dup2(ours.fileno(), 1050))
            assert not otlphttp._readable(high)
        theirs.close()
        assert otlphttp._readable(ours)
    finally:
        ours.close()
        theirs.close()
        if high is not None:
            high.close()


def test_a_header_value_with_a_newline_fails_without_logging_the_value(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    """http.client quotes an invalid header value in its error; the SDK logs that
    error, so the transport reports it without the value (a key read from a file
    with its trailing newline would otherwise be logged)."""
    exporter = exporter_for(collector.url, otlp_headers={"authorization": f"Bearer {SECRET}\n"})
    try:
        with structlog.testing.capture_logs() as logged:
            assert export(exporter, span()) == "FAILURE"
    finally:
        exporter.shutdown()
    assert collector.received == []
    assert "OTEL_EXPORTER_OTLP_HEADERS" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in repr(logged)


def test_a_kept_alive_https_connection_is_reused_and_reopened_once_closed(
    authority: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TLS a collector's close shows as an EOF, not a reset: still a new connection
    and a delivered export, never a lost batch. And an open one is reused."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(authority / "ca.pem"))
    for dropping in (False, True):
        for server in _serve(serving_context(authority, "leaf")):
            server.drop_after_answer = dropping
            exporter = exporter_for(server.url)
            try:
                assert [export(exporter, span(n)) for n in (1, 2, 3)] == ["SUCCESS"] * 3
            finally:
                exporter.shutdown()
            assert len(server.received) == 3
            assert server.connections() == (3 if dropping else 1)


def test_https_is_verified_against_the_ca_file_from_the_environment(
    authority: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With OTEL_EXPORTER_OTLP_CERTIFICATE naming the CA the export succeeds; without
    it the collector's certificate is not trusted and nothing is sent."""
    for server in _serve(serving_context(authority, "leaf")):
        untrusted = exporter_for(server.url)
        try:
            assert export(untrusted, span()) == "FAILURE"
        finally:
            untrusted.shutdown()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(authority / "ca.pem"))
        trusted = exporter_for(server.url)
        try:
            assert export(trusted, span()) == "SUCCESS"
        finally:
            trusted.shutdown()
        assert [r.body for r in server.received] == [SpanEncoder().encode([span()])]


def test_a_collector_certificate_for_another_host_is_refused(
    authority: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(authority / "ca.pem"))
    for server in _serve(serving_context(authority, "other")):
        exporter = exporter_for(server.url)
        try:
            assert export(exporter, span()) == "FAILURE"
        finally:
            exporter.shutdown()
        assert server.received == []


def test_a_ca_directory_is_taken_as_requests_takes_it(
    authority: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_EXPORTER_OTLP_CERTIFICATE may name a directory of hashed certificates."""
    shutil.copy(authority / "ca.pem", tmp_path / "ca.pem")
    subprocess.run(["openssl", "rehash", str(tmp_path)], check=True, capture_output=True)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(tmp_path))
    for server in _serve(serving_context(authority, "leaf")):
        exporter = exporter_for(server.url)
        try:
            assert export(exporter, span()) == "SUCCESS"
        finally:
            exporter.shutdown()


def test_a_collector_asking_for_a_client_certificate_gets_the_configured_one(
    authority: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mTLS: with OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and _CLIENT_KEY the export is
    accepted; without them the handshake fails and nothing is sent."""
    context = serving_context(authority, "leaf")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(authority / "ca.pem")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(authority / "ca.pem"))
    for server in _serve(context):
        anonymous = exporter_for(server.url)
        try:
            assert export(anonymous, span()) == "FAILURE"
        finally:
            anonymous.shutdown()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(authority / "other.pem"))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(authority / "other.key"))
        identified = exporter_for(server.url)
        try:
            assert export(identified, span()) == "SUCCESS"
        finally:
            identified.shutdown()
        assert len(server.received) == 1


def test_credentials_in_the_endpoint_keep_the_sdks_transport() -> None:
    """`requests` sends them as Basic auth; this transport would drop them."""
    assert not otlphttp.applies("https://user:token@collector.internal:4318/v1/traces", {})


@pytest.mark.parametrize(
    ("netrc", "ours"),
    [
        ("machine collector.internal login otel password s3cret\n", False),
        ("default login otel password s3cret\n", False),
        ("machine elsewhere.internal login otel password s3cret\n", True),
        ("machine collector.internal login\n", True),  # unparsable: `requests` skips it too
    ],
)
def test_a_netrc_entry_for_the_collector_keeps_the_sdks_transport(
    tmp_path: Path, netrc: str, ours: bool
) -> None:
    """`requests` sends a .netrc entry for the host as Basic auth; this transport
    would drop it. Found as `requests` finds it: NETRC, else the home directory."""
    url = "https://collector.internal:4318/v1/traces"
    (tmp_path / ".netrc").write_text(netrc)
    assert otlphttp.applies(url, {"NETRC": str(tmp_path / ".netrc")}) is ours
    assert otlphttp.applies(url, {"HOME": str(tmp_path)}) is ours
    assert otlphttp.applies(url, {"NETRC": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    ("env", "ours"),
    [
        ({}, True),
        ({"HTTPS_PROXY": "http://proxy.internal:3128"}, False),
        ({"https_proxy": "http://proxy.internal:3128", "NO_PROXY": "collector.internal"}, True),
        ({"HTTP_PROXY": "http://proxy.internal:3128"}, True),  # another scheme's proxy
        ({"ALL_PROXY": "http://proxy.internal:3128"}, False),
        ({"_OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": "mine"}, False),
    ],
)
def test_the_sdks_transport_stays_where_only_requests_would_honour_the_environment(
    env: dict[str, str], ours: bool
) -> None:
    assert otlphttp.applies("https://collector.internal:4318/v1/traces", env) is ours


def test_tls_files_resolve_per_signal_then_general() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_CERTIFICATE": "ca.pem",
        "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE": "logs-ca.pem",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "client.pem",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": "client.key",
    }
    assert otlphttp.tls_files("traces", env) == ("ca.pem", ("client.pem", "client.key"))
    assert otlphttp.tls_files("logs", env)[0] == "logs-ca.pem"
    assert otlphttp.tls_files("metrics", {}) == (True, None)
    # As `requests` would, when no OTLP variable names a CA.
    assert otlphttp.tls_files("traces", {"REQUESTS_CA_BUNDLE": "corp.pem"}) == ("corp.pem", None)
    assert otlphttp.tls_files("traces", {"CURL_CA_BUNDLE": "curl.pem"})[0] == "curl.pem"


_IMPORTED = """
import json, sys
from instrumentation import otlp
from proxy.config import TelemetryConfig
config = TelemetryConfig(otlp_endpoint="http://127.0.0.1:9", otlp_protocol=sys.argv[1])
for build in (otlp.span_exporter, otlp.metric_exporter, otlp.log_exporter):
    build({}, config).shutdown()
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize(
    ("protocol", "absent"),
    [("http/protobuf", {"grpc", "requests", "urllib3"}), ("grpc", {"requests", "urllib3"})],
)
def test_exporters_import_only_their_own_protocols_stack(protocol: str, absent: set[str]) -> None:
    """What a sidecar's resident memory pays for: OTLP/HTTP, the default, loads neither
    gRPC (~8.5 MB) nor requests (~5 MB); gRPC does not load requests."""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORTED, protocol],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    imported = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not imported & absent
