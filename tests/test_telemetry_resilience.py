"""Telemetry never hurts traffic: failing or blocked span exporters cost spans, not requests.

The exporters are tiny SpanExporter subclasses handed to Telemetry's public
constructor; drops are read from the spangate.telemetry.dropped counter.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import Running, basic_config
from fakeprovider import FakeProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from structlog.testing import capture_logs
from test_telemetry_support import (
    GPT,
    completed_lines,
    count,
    oai,
    points_where,
    settle,
    spangate_with,
    total,
)

from instrumentation import semconv as sc
from instrumentation.logging import Redactor
from instrumentation.setup import Telemetry
from proxy.config import TelemetryConfig

HELLO: Any = [{"role": "user", "content": "hi there"}]
#: Export as soon as spans are queued (the default batch delay is a second).
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "5"}
#: The least a SlowExporter's export takes, and the budget its shutdown test gives.
HOLD_S = 0.3
SHUTDOWN_BUDGET_S = 5.0


class RaisingExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise ConnectionError("collector down")


class FailingExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        return SpanExportResult.FAILURE


class BlockingExporter(SpanExporter):
    """Blocks every export until released (bounded, so a broken test cannot hang)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.exported: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(20)
        self.exported.extend(spans)
        return SpanExportResult.SUCCESS


def wait_for_requests_counted(running: Running, expected: int, within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        data = running.metrics.get_metrics_data()
        points = [
            p
            for rm in (data.resource_metrics if data else [])
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == sc.METRIC_REQUESTS
            for p in m.data.data_points
        ]
        if total(points) >= expected:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("exporter_class", [RaisingExporter, FailingExporter])
def test_failing_span_exporter_drops_and_counts_but_requests_succeed(
    fake: FakeProvider, exporter_class: type[RaisingExporter | FailingExporter]
) -> None:
    """An exporter that raises or returns FAILURE: every request still succeeds, and each lost
    span is counted as spangate.telemetry.dropped{signal=spans, reason=export_failed}.
    """
    exporter = exporter_class()
    with (
        spangate_with(basic_config(fake), env=FAST_EXPORT, span_exporter=exporter) as running,
        capture_logs() as captured,
    ):
        client = oai(running)
        for _ in range(3):
            assert client.chat.completions.create(model=GPT, messages=HELLO).choices
        chunks = list(client.chat.completions.create(model=GPT, messages=HELLO, stream=True))
        assert chunks
        settle(running)
        assert exporter.calls >= 1
        dropped = running.metric_points(sc.METRIC_TELEMETRY_DROPPED)
        failed = points_where(dropped, spangate__signal="spans", spangate__reason="export_failed")
        assert total(failed) == 8  # 4 requests x (SERVER + CLIENT)
        # Metrics and log lines do not depend on the span exporter.
        assert total(running.metric_points(sc.METRIC_REQUESTS)) == 4
        assert count(running.metric_points(sc.METRIC_OPERATION_DURATION)) == 4
    assert len(completed_lines(captured)) == 4


def test_dropped_counter_starts_at_zero_for_queue_full(fake: FakeProvider) -> None:
    """With a healthy exporter the dropped counter is exported, with queue_full at 0."""
    with spangate_with(basic_config(fake)) as running:
        oai(running).chat.completions.create(model=GPT, messages=HELLO)
        settle(running)
        dropped = running.metric_points(sc.METRIC_TELEMETRY_DROPPED)
    full = points_where(dropped, spangate__signal="spans", spangate__reason="queue_full")
    assert total(full) == 0
    assert total(points_where(dropped, spangate__reason="export_failed")) == 0


def test_blocked_span_exporter_does_not_block_requests(fake: FakeProvider) -> None:
    """While the exporter is stuck inside export(), further requests (and streams) complete."""
    exporter = BlockingExporter()
    with spangate_with(basic_config(fake), env=FAST_EXPORT, span_exporter=exporter) as running:
        client = oai(running)
        try:
            client.chat.completions.create(model=GPT, messages=HELLO)
            assert exporter.entered.wait(10), "the exporter was never called"
            for _ in range(5):
                assert client.chat.completions.create(model=GPT, messages=HELLO).choices
            assert list(client.chat.completions.create(model=GPT, messages=HELLO, stream=True))
            assert not exporter.release.is_set()
            # Metrics keep flowing meanwhile (read without flushing the blocked span queue).
            assert wait_for_requests_counted(running, 7)
        finally:
            exporter.release.set()
        settle(running)
        assert len(exporter.exported) == 14


def test_span_queue_overflow_is_counted_as_queue_full(fake: FakeProvider) -> None:
    """A blocked exporter plus a full span queue (OTEL_BSP_MAX_QUEUE_SIZE=4): requests still
    succeed and the overflow is counted as {spans, queue_full}."""
    exporter = BlockingExporter()
    env = {**FAST_EXPORT, "OTEL_BSP_MAX_QUEUE_SIZE": "4", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2"}
    with spangate_with(basic_config(fake), env=env, span_exporter=exporter) as running:
        client = oai(running)
        try:
            client.chat.completions.create(model=GPT, messages=HELLO)
            assert exporter.entered.wait(10), "the exporter was never called"
            for _ in range(6):
                assert client.chat.completions.create(model=GPT, messages=HELLO).choices
            assert wait_for_requests_counted(running, 7)
        finally:
            exporter.release.set()
        settle(running)
        points = running.metric_points(sc.METRIC_TELEMETRY_DROPPED)
    full = points_where(points, spangate__signal="spans", spangate__reason="queue_full")
    # 6 requests x 2 spans arrived while at most 4 could wait: at least 8 were dropped.
    assert total(full) >= 8


def test_busy_telemetry_threads_hand_the_gil_back_to_the_event_loop_quickly(
    spangate: Running,
) -> None:
    """With telemetry threads running, the GIL switch interval is at most 0.5 ms (not
    Python's 5 ms), so an exporter encoding a batch cannot stall a request for longer."""
    assert sys.getswitchinterval() <= 0.0005


class SlowExporter(SpanExporter):
    """A collector that takes at least HOLD_S to answer each export."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        time.sleep(HOLD_S)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


class ShutdownTimeouts(InMemoryMetricReader):
    """A metric reader that notes the timeout its shutdown is given."""

    def __init__(self) -> None:
        super().__init__()
        self.given_ms: list[float] = []

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.given_ms.append(timeout_millis)
        super().shutdown(timeout_millis=timeout_millis, **kwargs)


def test_shutdown_steps_share_one_deadline() -> None:
    """Telemetry.shutdown(budget) spends one budget across its steps: after the span flush
    waited out a slow export, the metric readers get what is left of it, not a budget of
    their own (each step its own timeout let a dead collector hold a worker past the
    supervisor's kill, proxy/workers.py). HOLD_S is the least the export takes, so the
    bound holds however slow the machine."""
    exporter, reader = SlowExporter(), ShutdownTimeouts()
    telemetry = Telemetry(
        TelemetryConfig(),
        Redactor(),
        env={},
        span_exporter=exporter,
        metric_readers=[reader],
        pipeline="thread",
        announce=False,
    )
    telemetry.finish(telemetry.begin("POST", "/v1/chat/completions", {}, None))
    telemetry.shutdown(SHUTDOWN_BUDGET_S)
    assert exporter.exported == 1  # the flush waited for the slow export
    (given_ms,) = reader.given_ms
    assert given_ms <= (SHUTDOWN_BUDGET_S - HOLD_S) * 1000


class SlowLogExporter(LogRecordExporter):
    """spangate's own log path (`fast`, so lines go through its batch queue) to a
    collector that takes at least `hold_s` to answer each export."""

    fast = True

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.finished = threading.Event()

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        time.sleep(self.hold_s)
        self.finished.set()
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_flush_steps_share_one_deadline() -> None:
    """Telemetry.flush(budget) spends one budget across its steps, as shutdown does: the
    span step waits out a slow export (at least HOLD_S), so the log step gets at most
    budget - HOLD_S, too little for a log export that takes 1.5 x HOLD_S, and flush
    returns without it. With a budget per step, the log step got the whole budget and
    waited for it. Both queues export only when flushed (a one-minute batch delay), so
    the log export cannot start before the log step; the bounds hold however slow the
    machine (no assertion on elapsed time)."""
    budget_s = 2 * HOLD_S
    logs = SlowLogExporter(1.5 * HOLD_S)
    telemetry = Telemetry(
        TelemetryConfig(),
        Redactor(),
        env={"OTEL_BSP_SCHEDULE_DELAY": "60000"},
        span_exporter=SlowExporter(),
        log_exporter=logs,
        pipeline="thread",
        announce=False,
    )
    try:
        assert telemetry.logs is not None
        telemetry.finish(telemetry.begin("POST", "/v1/chat/completions", {}, None))
        telemetry.logs.emitter("test", "1").emit(body="a line")
        assert telemetry.flush(budget_s) is False
        assert not logs.finished.is_set()  # flush did not wait for the log export
    finally:
        telemetry.shutdown(SHUTDOWN_BUDGET_S)
    assert logs.finished.is_set()  # shutdown, with a budget of its own, did
