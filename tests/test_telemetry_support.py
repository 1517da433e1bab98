"""Helpers shared by the test_telemetry_* modules (this module holds no tests).

They read telemetry the way an operator would: finished spans, metric points
and log lines, after real SDK calls over real sockets through spangate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import aiohttp
import anthropic
import openai
from conftest import Running
from harness import SpangateThread, runtime_for
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from instrumentation.logging import redactor_for
from instrumentation.readers import InMemoryReader
from instrumentation.setup import Telemetry
from proxy.app import create_app
from proxy.appkeys import STATE

GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"
EMBED = "text-embedding-3-small"
INSTRUCT = "gpt-3.5-turbo-instruct"

#: Acceptable error.type values for an upstream error (semconv: the provider's error
#: code/type, the HTTP status as a string, or a low-cardinality failure class).
ERROR_429 = {"429", "rate_limited", "rate_limit_exceeded", "requests"}
ERROR_500 = {"500", "transient", "server_error"}

#: Advised buckets, copied from /work/shared/semconv.md (the authority), not from the code.
SPEC_DURATION_BUCKETS = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
]  # fmt: skip
SPEC_TOKEN_BUCKETS = [
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
]  # fmt: skip


def settle(running: Running, timeout_s: float = 10.0) -> None:
    """Wait until spangate has no request in flight, then until its telemetry is exported.

    `Running.flush()` alone races with the end of a request: a client can read the
    last byte before spangate's handler has handed the request's record over.
    """
    state = running.server.app[STATE]
    deadline = time.monotonic() + timeout_s
    while state.inflight and time.monotonic() < deadline:
        time.sleep(0.002)
    assert state.inflight == 0, "a request is still in flight"
    running.flush()


def finished_spans(running: Running) -> list[ReadableSpan]:
    settle(running)
    return list(running.spans.get_finished_spans())


def metric_points(running: Running, name: str) -> list[Any]:
    settle(running)
    return running.metric_points(name)


def oai(running: Running, api_key: str = "sk-test", **kwargs: Any) -> openai.OpenAI:
    """A real OpenAI SDK client pointed at spangate (no SDK retries)."""
    return openai.OpenAI(base_url=running.openai_base_url, api_key=api_key, max_retries=0, **kwargs)


def claude(running: Running, api_key: str = "sk-test", **kwargs: Any) -> anthropic.Anthropic:
    """A real Anthropic SDK client pointed at spangate (no SDK retries)."""
    return anthropic.Anthropic(base_url=running.url, api_key=api_key, max_retries=0, **kwargs)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    """Span attributes as a plain dict, sequences as lists (the SDK may store tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()}


def genai(span: ReadableSpan) -> dict[str, Any]:
    """Only the GenAI / OpenAI semantic-convention attributes of a span."""
    return {k: v for k, v in attrs(span).items() if k.startswith(("gen_ai.", "openai."))}


def of_kind(spans: Sequence[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


def one_request(spans: Sequence[ReadableSpan]) -> tuple[ReadableSpan, ReadableSpan]:
    """The SERVER span and its single CLIENT span, checking the parent/child link."""
    servers, clients = of_kind(spans, SpanKind.SERVER), of_kind(spans, SpanKind.CLIENT)
    assert len(servers) == 1, [s.name for s in spans]
    assert len(clients) == 1, [s.name for s in spans]
    server, client = servers[0], clients[0]
    assert server.context is not None and client.context is not None
    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    assert client.context.trace_id == server.context.trace_id
    assert client.context.span_id != server.context.span_id
    return server, client


def point_attrs(point: Any) -> dict[str, Any]:
    return dict(point.attributes or {})


def points_where(points: Sequence[Any], **match: Any) -> list[Any]:
    """Data points whose attributes include every `match` item (keys with dots as `__`)."""
    wanted = {k.replace("__", "."): v for k, v in match.items()}
    return [p for p in points if all(point_attrs(p).get(k) == v for k, v in wanted.items())]


def total(points: Sequence[Any]) -> float:
    """Sum of counter values or histogram sums."""
    return float(sum(p.value if hasattr(p, "value") else p.sum for p in points))


def count(points: Sequence[Any]) -> int:
    """Sum of histogram counts."""
    return int(sum(p.count for p in points))


def spans_json(spans: Sequence[ReadableSpan]) -> str:
    return "\n".join(s.to_json() for s in spans)


def metrics_json(running: Running) -> str:
    settle(running)
    data = running.metrics.get_metrics_data()
    return data.to_json() if data is not None else ""


def logs_json(running: Running) -> str:
    settle(running)
    return "\n".join(r.to_json() for r in running.logs.get_finished_logs())


def completed_lines(captured: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The `request.completed` events among structlog-captured entries."""
    return [entry for entry in captured if entry.get("event") == "request.completed"]


@contextmanager
def spangate_with(
    config: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    span_exporter: SpanExporter | None = None,
    live_inflight: bool = False,
) -> Iterator[Running]:
    """spangate with in-memory metrics and logs, built through Telemetry's public constructor.

    `span_exporter` replaces the in-memory span exporter. `live_inflight` is kept for
    readability at call sites: create_app always wires the gauge to the live counter.
    """
    runtime = runtime_for(config)
    spans, metrics, logs = (
        InMemorySpanExporter(),
        InMemoryReader(),
        InMemoryLogRecordExporter(),  # type: ignore[no-untyped-call]
    )
    telemetry = Telemetry(
        runtime.config.telemetry,
        redactor_for(runtime.config),
        env=env or {},
        span_exporter=span_exporter if span_exporter is not None else spans,
        metric_readers=[metrics],
        log_exporter=logs,
    )
    app = create_app(runtime, telemetry)
    server = SpangateThread(runtime, app).start()
    try:
        yield Running(server, telemetry, spans, metrics, logs)
    finally:
        server.stop()


async def raw_post(
    url: str, body: bytes, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """POST raw bytes with aiohttp and return (status, the raw response body bytes)."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(url, data=body, headers=sent) as resp,
    ):
        return resp.status, await resp.read()


def sse_data_events(raw: bytes) -> list[bytes]:
    """The `data:` payloads of a raw SSE body, in order."""
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    return [e[len(b"data: ") :] for e in events if e.startswith(b"data: ")]


def json_attr(span: ReadableSpan, key: str) -> Any:
    value = attrs(span)[key]
    assert isinstance(value, str), f"{key} must be a JSON string, got {type(value).__name__}"
    return json.loads(value)
