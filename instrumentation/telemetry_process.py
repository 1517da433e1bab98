"""The telemetry process: `python -m instrumentation.telemetry_process`, started by
instrumentation/offload.py with one end of a socketpair in SPANGATE_TELEMETRY_FD.

It builds the same telemetry stack a thread pipeline would (Telemetry with its
worker thread, exporters, Prometheus registry, JSON log lines on the shared
stdout) from the config the parent sends first, then feeds it what arrives:
finished request records, the parent's live state, log events to export,
scrape and flush requests. End of input means: flush everything, exit.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from instrumentation.channel import FrameReader, frame
from instrumentation.offload import FD_ENV
from instrumentation.recordwire import from_wire
from proxy import native
from proxy.config import TelemetryConfig

if TYPE_CHECKING:
    from instrumentation.setup import Telemetry

log = structlog.get_logger("spangate.telemetry")


@dataclass(frozen=True)
class _Target:
    label: str
    state: str
    transitions: Mapping[str, int]


@dataclass
class ParentState:
    """The parent's live state as last reported: what the observable metrics read."""

    inflight: int = 0
    targets: Sequence[_Target] = ()
    drops: dict[tuple[str, str], int] = field(default_factory=dict)

    def update(self, payload: dict[str, Any]) -> None:
        if "inflight" in payload:
            self.inflight = int(payload["inflight"])
        if "health" in payload:
            self.targets = [_Target(str(a), str(b), dict(c)) for a, b, c in payload["health"]]
        if "drops" in payload:
            self.drops = {(str(s), str(r)): int(c) for s, r, c in payload["drops"]}

    def all(self) -> Sequence[_Target]:
        return self.targets


def build(init: dict[str, Any], state: ParentState) -> tuple[Telemetry, list[Any]]:
    # Imported here, not at the top: the OTel SDK takes a while to import, and the
    # signal dispositions in main() should be set before that.
    from instrumentation.logging import Redactor, configure_logging, tag_worker
    from instrumentation.setup import Telemetry, log_sinks

    config = msgspec.convert(init["config"], TelemetryConfig)
    patterns, literals = init["redact"]
    redactor = Redactor(patterns, literals)
    configure_logging(redactor)  # JSON lines from the start, like the parent's
    telemetry = Telemetry(config, redactor, announce=False)  # the parent said it already
    telemetry.watch_inflight(lambda: state.inflight)
    telemetry.watch_health(state)
    telemetry.drops.watch_remote(lambda: state.drops)
    sinks = log_sinks(telemetry)
    configure_logging(redactor, sinks=sinks)
    worker = init.get("worker")
    if worker is not None:
        tag_worker(int(worker))
    return telemetry, sinks


def serve(sock: socket.socket) -> int:
    reader = FrameReader(sock)
    first = reader.read()
    if first is None or first[0] != "init":
        print("spangate telemetry process: no init frame", file=sys.stderr)
        return 2
    state = ParentState()
    telemetry, sinks = build(first[1], state)
    # It decides compiled or pure for itself (proxy/native.py), as each serving process
    # does: a build swapped in or an edit between the two starts can make them differ.
    log.info("telemetry.process_ready", pid=os.getpid(), native=native.describe())
    sock.sendall(frame("ready", None))
    while (message := reader.read()) is not None:
        try:
            _handle(message, sock, telemetry, state, sinks)
        except Exception:
            # One bad frame costs its own telemetry, never the process.
            log.debug("telemetry frame failed", exc_info=True)
            telemetry.drops.add("records", "processing_error")
    telemetry.shutdown()
    return 0


def _handle(
    message: tuple[str, Any],
    sock: socket.socket,
    telemetry: Telemetry,
    state: ParentState,
    sinks: list[Any],
) -> None:
    kind, payload = message
    if kind == "records":
        for values in payload:
            telemetry.submit(from_wire(values))
    elif kind == "state":
        state.update(payload)
    elif kind == "log":
        method, event = payload
        for sink in sinks:
            sink(None, method, dict(event))
    elif kind == "scrape":
        request_id, parent_state = payload
        state.update(parent_state)
        sock.sendall(frame("reply", [request_id, telemetry.prometheus_text()]))
    elif kind == "flush":
        request_id, timeout_s = payload
        sock.sendall(frame("reply", [request_id, telemetry.flush(float(timeout_s))]))


def main() -> int:
    # The parent acts on SIGINT/SIGTERM (this process has a group of its own, so only a
    # signal sent to its pid gets here): it closes the socket, and this process flushes
    # and exits. A parent that dies closes it too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd = int(os.environ.pop(FD_ENV))
    with socket.socket(fileno=fd) as sock:
        return serve(sock)


if __name__ == "__main__":
    sys.exit(main())
