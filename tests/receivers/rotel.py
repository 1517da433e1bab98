"""A real OTLP receiver for integration tests: the rotel collector binary from PyPI.

Its embedded Python runs `rotel_processor.py`, which writes every span, metric
and log record it receives to a JSON-lines file that tests poll.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from receivers.process import ReceiverProcess

PROCESSOR = Path(__file__).with_name("rotel_processor.py")


def agent_path() -> Path | None:
    spec = importlib.util.find_spec("rotel")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "rotel-agent"
    return path if path.exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RotelReceiver(ReceiverProcess):
    def __init__(self) -> None:
        agent = agent_path()
        if agent is None:
            pytest.skip("rotel is not installed (pip install rotel)")
        self._agent = agent
        self._dir = tempfile.TemporaryDirectory(prefix="rotel-")
        self.out = Path(self._dir.name) / "received.jsonl"
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> RotelReceiver:
        processor = str(PROCESSOR)
        self._log = (Path(self._dir.name) / "rotel.log").open("wb")
        self.proc = subprocess.Popen(
            [
                str(self._agent),
                "start",
                "--otlp-grpc-endpoint",
                f"127.0.0.1:{self.grpc_port}",
                "--otlp-http-endpoint",
                f"127.0.0.1:{self.http_port}",
                "--exporter",
                "blackhole",
                "--disable-batching",
                "--pid-file",
                str(Path(self._dir.name) / "rotel.pid"),
                "--otlp-with-trace-processor",
                processor,
                "--otlp-with-logs-processor",
                processor,
                "--otlp-with-metrics-processor",
                processor,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SPANGATE_ROTEL_OUT": str(self.out)},
        )
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> RotelReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_listening(self) -> None:
        """Both listeners accept connections (gRPC and HTTP bind separately)."""
        deadline = time.monotonic() + 10
        pending = [self.grpc_port, self.http_port]
        while pending and time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", pending[0]), timeout=0.2):
                    pending.pop(0)
            except OSError:
                time.sleep(0.05)
        if pending:
            log = (Path(self._dir.name) / "rotel.log").read_text(errors="replace")
            raise AssertionError(f"rotel did not start listening on {pending}:\n{log}")

    def items(self, kind: str) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        text = self.out.read_text()
        # The agent may be writing right now: a last line without its newline is incomplete.
        complete = text[: text.rfind("\n") + 1]
        rows = [json.loads(line) for line in complete.splitlines() if line]
        return [row["data"] for row in rows if row["kind"] == kind]

    def raw_output(self) -> str:
        """Everything the receiver wrote (every span, metric and log record), as text."""
        return self.out.read_text() if self.out.exists() else ""

    def wait_for(self, kind: str, predicate: Any, timeout: float = 20) -> list[dict[str, Any]]:
        """Poll until some received items of `kind` satisfy `predicate(items)`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = self.items(kind)
            if predicate(items):
                return items
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {kind}; received: {self.items(kind)[:20]}")
