"""A collector's partial success (instrumentation/otlpresponse.py): read from any
signal's response, and counted and logged over gRPC as over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
import structlog
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

from instrumentation import otlp, otlpresponse
from instrumentation.export import DropCounter
from instrumentation.otlpwire import SpanEncoder
from proxy.config import TelemetryConfig


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", None),
        (ExportTraceServiceResponse().SerializeToString(), None),
        (
            ExportTraceServiceResponse(
                partial_success=ExportTracePartialSuccess(rejected_spans=0)
            ).SerializeToString(),
            None,
        ),
        (
            ExportLogsServiceResponse(
                partial_success=ExportLogsPartialSuccess(error_message="a warning only")
            ).SerializeToString(),
            (0, "a warning only"),
        ),
        (
            ExportLogsServiceResponse(
                partial_success=ExportLogsPartialSuccess(rejected_log_records=2**40)
            ).SerializeToString(),
            (2**40, ""),
        ),
        (b"\x0a\x05\x08", None),  # truncated
        (b"\x0a\x01\xff", None),  # a varint that never ends
        (b"not protobuf at all", None),
        (  # an int64 below zero: nothing to count
            ExportTraceServiceResponse(
                partial_success=ExportTracePartialSuccess(rejected_spans=-1)
            ).SerializeToString(),
            None,
        ),
        (b"\x0a\x05\x08\x05\x09\x01\x02", None),  # a fixed64 field cut short
    ],
)
def test_partial_success_is_read_from_any_signals_response(
    body: bytes, expected: tuple[int, str] | None
) -> None:
    assert otlpresponse.rejected(body) == expected


class GrpcCollector:
    """A real gRPC server for one OTLP service that takes the request as bytes and
    answers with `answer`."""

    def __init__(self, answer: bytes, service: str = "trace.v1.TraceService") -> None:
        self.answer = answer
        self.received: list[bytes] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler(
            f"opentelemetry.proto.collector.{service}",
            {"Export": grpc.unary_unary_rpc_method_handler(self._export)},
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def _export(self, request: bytes, context: Any) -> bytes:
        self.received.append(request)
        return self.answer


@pytest.fixture
def rejecting() -> Iterator[GrpcCollector]:
    partial = ExportTracePartialSuccess(rejected_spans=2, error_message="over quota")
    collector = GrpcCollector(
        ExportTraceServiceResponse(partial_success=partial).SerializeToString()
    )
    collector.server.start()
    try:
        yield collector
    finally:
        collector.server.stop(None)


def test_a_partial_success_over_grpc_is_counted_and_logged(rejecting: GrpcCollector) -> None:
    """The same accounting as OTLP/HTTP's: the export succeeds, its 2 rejected spans are
    counted as dropped ("rejected"), and the collector's message is logged."""
    span = ReadableSpan(
        name="s",
        context=SpanContext(1, 2, is_remote=False),
        resource=Resource({"service.name": "t"}),
        start_time=1,
        end_time=2,
    )
    config = TelemetryConfig(
        otlp_endpoint=f"http://127.0.0.1:{rejecting.port}", otlp_protocol="grpc"
    )
    drops = DropCounter()
    exporter = otlp.span_exporter({}, config, drops)
    try:
        with structlog.testing.capture_logs() as logged:
            assert exporter.export([span]).name == "SUCCESS"
    finally:
        exporter.shutdown()
    assert rejecting.received == [SpanEncoder().encode([span])]
    assert drops.snapshot() == {("spans", "rejected"): 2}
    assert [(line["signal"], line["message"]) for line in logged] == [("traces", "over quota")]


def test_metrics_rejected_over_grpc_are_counted_too() -> None:
    """The SDK's own gRPC metric exporter (its encoding kept), with its answers read."""
    partial = ExportMetricsPartialSuccess(rejected_data_points=4, error_message="bad unit")
    answer = ExportMetricsServiceResponse(partial_success=partial).SerializeToString()
    collector = GrpcCollector(answer, "metrics.v1.MetricsService")
    collector.server.start()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("t").create_counter("c").add(1)
    data = reader.get_metrics_data()
    assert data is not None
    config = TelemetryConfig(
        otlp_endpoint=f"http://127.0.0.1:{collector.port}", otlp_protocol="grpc"
    )
    drops = DropCounter()
    exporter = otlp.metric_exporter({}, config, drops)
    try:
        assert exporter.export(data).name == "SUCCESS"
    finally:
        exporter.shutdown()
        provider.shutdown()
        collector.server.stop(None)
    assert ExportMetricsServiceRequest.FromString(collector.received[0]).resource_metrics
    assert drops.snapshot() == {("metrics", "rejected"): 4}
