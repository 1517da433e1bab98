"""Telemetry: build the pipelines from OTEL_* + config, and the hot-path API.

The request path calls `begin`, `attempt`, `traceparent` and `finish` — plain
object work and one queue append. Everything else runs on worker threads.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import unquote

import msgspec
import structlog
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from instrumentation import otlp
from instrumentation import semconv as sc
from instrumentation.content import ContentPolicy, capture_mode
from instrumentation.export import BatchQueue, DropCounter, env_size, time_left
from instrumentation.histograms import SummedHistogram
from instrumentation.logexport import LogSink, export_logs
from instrumentation.logging import LineEmitter, Redactor
from instrumentation.metrics import HealthSource, Instruments
from instrumentation.otlpwire import preparer
from instrumentation.pricing import Price, PriceTable, shipped_prices
from instrumentation.processor import Processor
from instrumentation.readers import (
    MergingReader,
    PeriodicReader,
    PrometheusReader,
    takes_summed_histograms,
)
from instrumentation.records import AttemptRecord, RequestRecord
from instrumentation.sampling import make_sampler
from instrumentation.spans import SpanFactory, SpanLine
from instrumentation.tracecontext import (
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
)
from instrumentation.worker import RecordSink
from proxy import __version__
from proxy.config import TelemetryConfig

if TYPE_CHECKING:
    from instrumentation.offload import TelemetryProcess

log = structlog.get_logger("spangate.telemetry")
#: How long a scrape waits for finished requests' records to be processed.
SCRAPE_SETTLE_S = 2.0


class Telemetry:
    def __init__(
        self,
        config: TelemetryConfig,
        redactor: Redactor,
        *,
        env: Mapping[str, str] | None = None,
        span_exporter: SpanExporter | None = None,
        metric_readers: Sequence[MetricReader] = (),
        log_exporter: LogRecordExporter | None = None,
        pipeline: Literal["thread", "process"] = "thread",
        worker: int | None = None,
        announce: bool = True,
    ) -> None:
        """`pipeline="process"` runs the telemetry work in a child process
        (instrumentation/offload.py); exporters and readers given here need "thread"."""
        env = os.environ if env is None else env
        self._inflight: Callable[[], int] = lambda: 0
        self._health: list[HealthSource] = []
        self.enabled = not (_truthy(env.get("OTEL_SDK_DISABLED")) or config.sdk_disabled)
        self.drops = DropCounter()
        for signal in ("records", "spans"):
            self.drops.add(signal, "queue_full", 0)
        self.resource = _resource(config, env)
        self._sampler = make_sampler(
            env.get("OTEL_TRACES_SAMPLER") or config.traces_sampler,
            env.get("OTEL_TRACES_SAMPLER_ARG") or config.traces_sampler_arg,
        )
        self.content = ContentPolicy(
            capture_mode(env, config.capture_content), config.content_max_bytes, redactor
        )
        self.span_queue: BatchQueue[ReadableSpan | SpanLine] | None = None
        self.registry: CollectorRegistry | None = None
        self.logs: LogSink | None = None
        self._span_exporter: SpanExporter | None = None
        self._meter_provider: MeterProvider | None = None
        #: Whether histograms are spangate's (instrumentation/readers.py) or the SDK's.
        self.summed_histograms = False
        self._remote: TelemetryProcess | None = None
        self._sink: RecordSink | TelemetryProcess
        if pipeline == "process" and self.enabled:
            self._remote = self._start_process(config, redactor, worker)
        if self._remote is not None:
            self._sink = self._remote
            self._exports = _exports_traces(env, config)
            self._prometheus = config.prometheus.enabled
            self._forward_logs = _exports_logs(env, config)
        else:
            self._sink = self._pipelines(env, config, span_exporter, metric_readers, log_exporter)
            self._exports = self.span_queue is not None
            self._prometheus = self.registry is not None
            self._forward_logs = False
        if announce:
            self._announce(env, config)

    def _start_process(
        self, config: TelemetryConfig, redactor: Redactor, worker: int | None
    ) -> TelemetryProcess | None:
        """The telemetry process, or None (said loudly) to fall back to the thread."""
        from instrumentation.offload import TelemetryProcess, TelemetryStartError

        init = {
            "config": msgspec.to_builtins(config),
            "redact": list(redactor.spec),
            "worker": worker,
        }
        try:
            return TelemetryProcess(init, self.drops, self.live_state)
        except (TelemetryStartError, OSError) as exc:
            log.error("telemetry.process_failed", error=str(exc), fallback="thread")
            return None

    def _pipelines(
        self,
        env: Mapping[str, str],
        config: TelemetryConfig,
        span_exporter: SpanExporter | None,
        metric_readers: Sequence[MetricReader],
        log_exporter: LogRecordExporter | None,
    ) -> RecordSink:
        """Exporters, readers and the worker thread that turns records into telemetry."""
        self._span_exporter = self._pick_span_exporter(env, config, span_exporter)
        own_spans = False
        if self._span_exporter is not None:
            self.span_queue = BatchQueue(
                "spans",
                self._export_spans,
                self.drops,
                max_queue=env_size(env, "OTEL_BSP_MAX_QUEUE_SIZE", 4096),
                max_batch=env_size(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
                delay_s=_batch_delay(env),
                prepare=preparer(self._span_exporter),
            )
            # SpanLines only where spans are encoded as they are queued: no other
            # encoder reads them.
            own_spans = self.span_queue.prepares
        readers = self._readers(env, config, metric_readers)
        self._meter_provider = meter_provider = MeterProvider(
            metric_readers=readers, resource=self.resource, shutdown_on_exit=False
        )
        self.logs = self._loggers(env, config, log_exporter)
        self.summed_histograms = all(takes_summed_histograms(r) for r in readers)
        summed: list[SummedHistogram] | None = [] if self.summed_histograms else None
        instruments = Instruments(
            meter_provider.get_meter("spangate", __version__),
            lambda: self._inflight(),  # noqa: PLW0108 -- watch_inflight rebinds it later
            self.drops,
            summed,
        )
        if summed is not None:
            scope = InstrumentationScope("spangate", __version__)
            for reader in readers:
                cast(MergingReader, reader).attach(summed, scope, self.resource)
        instruments.health = self._health
        lines = _completed_logger()
        processor = Processor(
            # No reader, no metrics: nothing would ever collect what is recorded.
            instruments if readers else None,
            SpanFactory(
                self.resource,
                InstrumentationScope("spangate", __version__, sc.SCHEMA_URL),
                own=own_spans,
            ),
            self.span_queue,
            self.content,
            PriceTable({**shipped_prices(), **_prices(config)}),
            lines,
            self._event_emitter(),
        )
        return RecordSink(processor, self.drops, flush=lines.flush)

    # --- construction -----------------------------------------------------
    def _pick_span_exporter(
        self, env: Mapping[str, str], config: TelemetryConfig, given: SpanExporter | None
    ) -> SpanExporter | None:
        if not self.enabled:
            return None
        if given is not None:
            return given
        if _exports_traces(env, config):
            exporter: SpanExporter = otlp.span_exporter(env, config, self.drops)
            return exporter
        return None

    def _readers(
        self, env: Mapping[str, str], config: TelemetryConfig, extra: Sequence[MetricReader]
    ) -> list[MetricReader]:
        readers = list(extra)
        if self.enabled and config.prometheus.enabled:
            self.registry = CollectorRegistry()
            ProcessCollector(registry=self.registry)
            readers.append(PrometheusReader(registry=self.registry))
        if (
            self.enabled
            and otlp.endpoint_for("metrics", env, config)
            and env.get("OTEL_METRICS_EXPORTER", "otlp") != "none"
        ):
            interval = env.get("OTEL_METRIC_EXPORT_INTERVAL") or config.metric_export_interval_ms
            readers.append(
                PeriodicReader(
                    otlp.metric_exporter(env, config, self.drops),
                    export_interval_millis=float(interval) if interval else None,
                )
            )
        return readers

    def _loggers(
        self, env: Mapping[str, str], config: TelemetryConfig, given: LogRecordExporter | None
    ) -> LogSink | None:
        if not self.enabled:
            return None
        exporter = given
        if exporter is None and _exports_logs(env, config):
            exporter = otlp.log_exporter(env, config, self.drops)
        if exporter is None:
            return None
        return export_logs(exporter, self.resource, self.drops, env, _batch_delay(env))

    def _event_emitter(
        self,
    ) -> Callable[[RequestRecord, AttemptRecord, dict[str, Any]], None] | None:
        if self.logs is None:
            return None
        logger = self.logs.emitter("spangate", __version__, sc.SCHEMA_URL)

        def emit(record: RequestRecord, attempt: AttemptRecord, details: dict[str, Any]) -> None:
            logger.emit(
                timestamp=record.wall(attempt.end_ns or record.end_ns),
                trace_id=record.trace_id,
                span_id=attempt.span_id,
                sampled=record.sampled,
                body=details,
                event_name=sc.EVENT_INFERENCE_DETAILS,
            )

        return emit

    def _export_spans(self, spans: Sequence[ReadableSpan]) -> bool:
        assert self._span_exporter is not None
        return self._span_exporter.export(spans) == SpanExportResult.SUCCESS

    def _announce(self, env: Mapping[str, str], config: TelemetryConfig) -> None:
        if not self.enabled:
            log.info("telemetry.disabled", reason="OTEL_SDK_DISABLED")
        elif not self._exports:
            log.info(
                "telemetry.traces_not_exported",
                hint="set OTEL_EXPORTER_OTLP_ENDPOINT or telemetry.otlp_endpoint to export traces",
                pipeline=self.pipeline,
            )
        else:
            log.info(
                "telemetry.exporting",
                traces=otlp.endpoint_for("traces", env, config) or "in-process",
                protocol=otlp.protocol_for("traces", env, config),
                pipeline=self.pipeline,
            )

    @property
    def pipeline(self) -> str:
        """Where the telemetry work runs: "process" or "thread"."""
        return "process" if self._remote is not None else "thread"

    @property
    def exports_spans(self) -> bool:
        """Spans are built and exported (telemetry on, with a span exporter)."""
        return self._exports

    def watch_inflight(self, read: Callable[[], int]) -> None:
        """Where the in-flight gauge reads its value (the server's live counter)."""
        self._inflight = read

    def watch_health(self, source: HealthSource) -> None:
        """Report circuit state and transitions of `source` as metrics."""
        self._health.append(source)

    def live_state(self) -> dict[str, Any]:
        """What only the serving process knows, for a telemetry process's metrics."""
        return {
            "inflight": self._inflight(),
            "health": [
                [t.label, t.state, dict(t.transitions)] for s in self._health for t in s.all()
            ],
            "drops": [[s, r, c] for (s, r), c in self.drops.snapshot().items()],
        }

    # --- the request path -------------------------------------------------
    def begin(
        self, method: str, path: str, headers: Mapping[str, str], peer: str | None
    ) -> RequestRecord:
        record = RequestRecord(method, path)
        parent = parse_traceparent(headers.get("traceparent"), headers.get("tracestate"))
        record.parent = parent
        record.trace_id = parent.trace_id if parent is not None else new_trace_id()
        record.span_id = new_span_id()
        record.sampled = self._sampler(parent, record.trace_id)
        record.client_address = peer
        record.user_agent = headers.get("User-Agent")
        return record

    @staticmethod
    def traceparent(record: RequestRecord, attempt: AttemptRecord) -> str:
        return format_traceparent(record.trace_id, attempt.span_id, record.sampled)

    def finish(self, record: RequestRecord) -> None:
        record.end_ns = time.monotonic_ns()
        self._sink.submit(record)

    def submit(self, record: RequestRecord) -> None:
        """A finished record from elsewhere (the serving process, in a telemetry process)."""
        self._sink.submit(record)

    # --- outside the request path ------------------------------------------
    def prometheus_text(self, timeout_s: float = 10.0) -> bytes | None:
        """The exposition text; None when Prometheus is off. Raises TelemetryUnavailable
        when the telemetry process cannot answer."""
        if self._remote is not None and self._prometheus:
            try:
                text = self._remote.request("scrape", self.live_state(), timeout_s)
            except Exception as exc:
                raise TelemetryUnavailable(str(exc) or type(exc).__name__) from None
            return bytes(text) if text is not None else None
        if self.registry is None:
            return None
        # Requests that finished before the scrape count in it (bounded wait).
        if isinstance(self._sink, RecordSink):
            self._sink.settle(min(timeout_s, SCRAPE_SETTLE_S))
        return generate_latest(self.registry)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Whether everything pending was exported, within `timeout_s` in all: as in
        `shutdown`, each step gets what the ones before it left (a collector that never
        answers holds the span step for the whole budget, and the log step then gets
        none, rather than a budget of its own)."""
        left = time_left(timeout_s)
        ok = self._sink.flush(left())
        if self.span_queue is not None:
            ok = self.span_queue.flush(left()) and ok
        if self.logs is not None:
            ok = self.logs.flush(left()) and ok
        return ok

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Flush everything pending, then stop the pipelines, within `timeout_s` in all:
        a supervisor waits only so long (proxy/state.py stop_bound_s), and a collector
        that never answers would hold each step for a whole timeout of its own."""
        if self._remote is not None:
            self._remote.shutdown(timeout_s)
            return
        left = time_left(timeout_s)
        self._sink.flush(left())
        self._sink.shutdown(left())
        if self.span_queue is not None:
            self.span_queue.flush(left())
            self.span_queue.shutdown(left())
        if self._span_exporter is not None:
            # No wait to bound: the OTLP exporters close their connection, and an export
            # still in flight ends on its own thread.
            self._span_exporter.shutdown()
        if self._meter_provider is not None:
            try:
                self._meter_provider.shutdown(timeout_millis=left() * 1000)
            except Exception:
                # The SDK raises when the deadline passed before a reader's turn: that
                # reader's last export is lost, as the budget says it must be.
                log.debug("metric readers not shut down", exc_info=True)
        if self.logs is not None:
            self.logs.shutdown(left())


class TelemetryUnavailable(Exception):
    """The telemetry process did not answer (restarting, or stuck)."""


def _exports_traces(env: Mapping[str, str], config: TelemetryConfig) -> bool:
    return bool(
        otlp.endpoint_for("traces", env, config)
        and env.get("OTEL_TRACES_EXPORTER", "otlp") != "none"
    )


def _exports_logs(env: Mapping[str, str], config: TelemetryConfig) -> bool:
    wants = config.logs_otlp or env.get("OTEL_LOGS_EXPORTER") == "otlp"
    return bool(wants and otlp.endpoint_for("logs", env, config))


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _batch_delay(env: Mapping[str, str]) -> float:
    raw = env.get("OTEL_BSP_SCHEDULE_DELAY")
    try:
        return float(raw) / 1000 if raw else 1.0
    except ValueError:
        return 1.0


def _resource(config: TelemetryConfig, env: Mapping[str, str]) -> Resource:
    """Config first, then OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME on top: the env wins."""
    attributes: dict[str, str] = {
        "service.name": config.service_name or "spangate",
        "service.version": __version__,
        **config.resource_attributes,
        **_parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
    }
    if env.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = env["OTEL_SERVICE_NAME"]
    return Resource.create(attributes)


def _parse_resource_attributes(raw: str) -> dict[str, str]:
    """`key1=value1,key2=value2`, values percent-decoded (OTel SDK environment spec)."""
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {key.strip(): unquote(value.strip()) for key, value in pairs if key.strip()}


def _prices(config: TelemetryConfig) -> dict[str, Price]:
    return {model: Price(p.input, p.output, p.cached_input) for model, p in config.prices.items()}


def _completed_logger() -> LineEmitter:
    # Held until the worker's drain ends: one write for the lines of a drain.
    return LineEmitter("spangate.access", "request.completed", hold=True)


def log_sinks(telemetry: Telemetry) -> list[Any]:
    """structlog processors that ship log lines over OTLP, when log export is on."""
    if telemetry._remote is not None:
        return [_LogForwarder(telemetry._remote)] if telemetry._forward_logs else []
    if telemetry.logs is None:
        return []
    from instrumentation.logbridge import OTelLogBridge

    return [OTelLogBridge(telemetry.logs.emitter("spangate.logs", __version__))]


class _LogForwarder:
    """A structlog processor handing (redacted) events to the telemetry process, whose
    OTLP log bridge exports them."""

    def __init__(self, remote: TelemetryProcess) -> None:
        self._remote = remote

    def __call__(
        self, _: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        with contextlib.suppress(Exception):  # a telemetry failure never fails the caller
            self._remote.send("log", [method, dict(event)])
        return event
