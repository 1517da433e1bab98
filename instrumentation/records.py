"""Facts recorded on the request path: plain slotted objects, no OTel calls.

The hot path only stores references and monotonic timestamps here; decoding
bodies, building spans, recording metrics and writing the log line happen on
the telemetry worker thread once the request is over.
"""

from __future__ import annotations

import time

from multidict import CIMultiDictProxy

from instrumentation.tracecontext import Parent
from proxy.codings import content_coding

#: Bytes of one attempt's streamed body kept for decoding; past it, only timing.
MAX_RETAINED_BYTES = 4 * 1024 * 1024


class AttemptRecord:
    """One upstream attempt; also the relay's Tap for it."""

    __slots__ = (
        "backoff_s",
        "body",
        "encoding",
        "end_ns",
        "error_block",
        "error_type",
        "events",
        "failure_class",
        "headers_ns",
        "hedge_outcome",
        "hedge_role",
        "host",
        "model",
        "number",
        "port",
        "provider",
        "retained",
        "span_id",
        "start_ns",
        "status",
        "stream_outcome",
        "system",
        "target",
        "usage_injected",
    )

    def __init__(
        self,
        number: int,
        span_id: int,
        *,
        provider: str,
        system: str,
        host: str,
        port: int,
        target: str,
        model: str | None,
    ) -> None:
        self.number = number
        self.span_id = span_id
        self.provider = provider
        self.system = system
        self.host = host
        self.port = port
        self.target = target
        self.model = model
        self.start_ns = time.monotonic_ns()
        self.end_ns = 0
        self.headers_ns = 0
        self.status: int | None = None
        self.error_type: str | None = None
        self.failure_class: str | None = None
        self.backoff_s = 0.0
        self.body: bytes | None = None
        #: The response's Content-Encoding: `body` is kept as relayed, compressed or not,
        #: and the telemetry worker undoes the coding (instrumentation/extract/encodings.py).
        self.encoding: str | None = None
        self.events: list[tuple[int, bytes]] | None = None
        self.retained = 0
        self.stream_outcome: str | None = None
        #: The block of events whose in-band error event ended a relayed stream (the
        #: circuit's verdict is read from it: failover.relay_verdict).
        self.error_block: bytes | None = None
        self.usage_injected = False
        #: "primary" / "hedge" when the route hedges; "won" / "lost" once a race ended.
        self.hedge_role: str | None = None
        self.hedge_outcome: str | None = None

    # --- the relay's Tap protocol (must never raise) ---------------------
    def on_response(self, status: int, headers: CIMultiDictProxy[str]) -> None:
        self.status = status
        self.headers_ns = time.monotonic_ns()
        self.encoding = content_coding(headers)

    def on_body(self, body: bytes) -> None:
        self.body = body

    def on_events(self, block: bytes) -> None:
        events = self.events
        if events is None:
            events = self.events = []
        if self.retained < MAX_RETAINED_BYTES:
            self.retained += len(block)
            events.append((time.monotonic_ns(), block))

    def on_error_end(self, block: bytes) -> None:
        self.error_block = block

    def on_end(self, error: str | None) -> None:
        self.end_ns = time.monotonic_ns()
        if self.events is not None or error is not None:
            self.stream_outcome = error or "completed"
        if error is not None and self.error_type is None:
            self.error_type = error

    def fail(self, error_type: str) -> None:
        self.end_ns = time.monotonic_ns()
        self.error_type = error_type


class RequestRecord:
    """One client request, from arrival to the last byte sent back."""

    __slots__ = (
        "alias",
        "api",
        "attempts",
        "body",
        "client_address",
        "end_ns",
        "error_message",
        "error_type",
        "fallback",
        "hedged",
        "method",
        "operation",
        "overhead_ns",
        "parent",
        "path",
        "request_model",
        "route",
        "sampled",
        "span_id",
        "start_ns",
        "start_wall_ns",
        "status",
        "stream",
        "trace_id",
        "user_agent",
        "wire",
    )

    def __init__(self, method: str, path: str) -> None:
        self.start_wall_ns = time.time_ns()
        self.start_ns = time.monotonic_ns()
        self.end_ns = 0
        self.method = method
        self.path = path
        #: Low-cardinality route template; None when only the raw path is known.
        self.route: str | None = path
        self.trace_id = 0
        self.span_id = 0
        self.parent: Parent | None = None
        self.sampled = False
        self.client_address: str | None = None
        self.user_agent: str | None = None
        self.status = 0
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.api: str | None = None
        self.operation: str | None = None
        self.wire = "openai"
        self.alias: str | None = None
        self.request_model: str | None = None
        self.stream = False
        self.body = b""
        self.attempts: list[AttemptRecord] = []
        self.overhead_ns = 0
        #: The fallback alias that served the request, if not the requested one.
        self.fallback: str | None = None
        self.hedged = False

    def wall(self, mono_ns: int) -> int:
        """Wall-clock nanoseconds for a monotonic timestamp taken during this request."""
        return self.start_wall_ns + (mono_ns - self.start_ns)
