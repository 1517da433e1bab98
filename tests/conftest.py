"""Shared fixtures: a wire-exact fake provider, and spangate in front of it.

`spangate_for(config)` starts spangate in a background thread of this process
with in-memory telemetry (spans, metrics, logs), so tests can drive it with the
sync and async SDKs alike and read telemetry where it lands.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeprovider import FakeProvider
from harness import SpangateThread, runtime_for
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from instrumentation.logging import redactor_for
from instrumentation.readers import InMemoryReader
from instrumentation.setup import Telemetry
from proxy.app import create_app


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    """A fake OpenAI/Anthropic provider on 127.0.0.1 (also serves Azure paths)."""
    with FakeProvider() as provider:
        yield provider


def basic_config(fake: FakeProvider, **extra: Any) -> dict[str, Any]:
    """Both dialects (and Azure) pointed at the fake provider, plus `extra` top-level keys."""
    config: dict[str, Any] = {
        "providers": {
            "openai": {"kind": "openai", "base_url": fake.url},
            "anthropic": {"kind": "anthropic", "base_url": fake.url},
            "azure": {"kind": "azure_openai", "base_url": fake.url, "api_version": "2024-10-21"},
        },
    }
    config.update(extra)
    return config


class Running:
    """A started spangate plus the in-memory telemetry it exports to."""

    def __init__(
        self,
        server: SpangateThread,
        telemetry: Telemetry,
        spans: InMemorySpanExporter,
        metrics: InMemoryReader,
        logs: InMemoryLogRecordExporter,
    ) -> None:
        self.server = server
        self.telemetry = telemetry
        self.spans = spans
        self.metrics = metrics
        self.logs = logs

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def openai_base_url(self) -> str:
        return self.server.url + "/v1"

    def flush(self, settle: bool = True) -> None:
        """Wait until no request is in flight (a client can read the last byte before the
        handler hands its record over), then until its telemetry is built and exported.
        `settle=False` skips the wait: a snapshot taken while a request is deliberately held."""
        from proxy.appkeys import STATE

        state = self.server.app[STATE]
        deadline = time.monotonic() + 10
        while settle and state.inflight and time.monotonic() < deadline:
            time.sleep(0.005)
        assert self.telemetry.flush(10)

    def finished_spans(self) -> list[Any]:
        self.flush()
        return list(self.spans.get_finished_spans())

    def metric_points(self, name: str, settle: bool = True) -> list[Any]:
        self.flush(settle)
        data = self.metrics.get_metrics_data()
        points: list[Any] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points


@pytest.fixture
def spangate_for() -> Iterator[Callable[..., Running]]:
    """Factory: `spangate_for(config, env={...})` → a Running spangate (stopped after the test)."""
    started: list[Running] = []

    def start(config: dict[str, Any], env: dict[str, str] | None = None) -> Running:
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
            span_exporter=spans,
            metric_readers=[metrics],
            log_exporter=logs,
        )
        server = SpangateThread(runtime, create_app(runtime, telemetry)).start()
        running = Running(server, telemetry, spans, metrics, logs)
        started.append(running)
        return running

    yield start
    for running in started:
        running.server.stop()


@pytest.fixture
def spangate(fake: FakeProvider, spangate_for: Callable[..., Running]) -> Running:
    """spangate with the basic config in front of `fake`."""
    return spangate_for(basic_config(fake))


@pytest.fixture(scope="session")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and a 127.0.0.1 certificate it signed (in the returned directory)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (make system-deps installs it)")
    where = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
    ca = ("-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=spangate-test-ca")
    ca_ext = ("basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign")
    leaf = ("-CA", "ca.pem", "-CAkey", "ca.key", "-keyout", "leaf.key", "-out", "leaf.pem")
    leaf_ext = ("subjectAltName=IP:127.0.0.1,DNS:localhost", "basicConstraints=CA:FALSE")
    # Signed by the same CA, for another host: trusted, but not for 127.0.0.1.
    other = ("-CA", "ca.pem", "-CAkey", "ca.key", "-keyout", "other.key", "-out", "other.pem")
    other_ext = ("subjectAltName=DNS:elsewhere.example", "basicConstraints=CA:FALSE")
    for args, extensions in ((ca, ca_ext), (leaf, leaf_ext), (other, other_ext)):
        subject = () if args is ca else ("-subj", "/CN=spangate-test")
        added = [part for ext in extensions for part in ("-addext", ext)]
        subprocess.run(
            ["openssl", "req", "-x509", *ec, *args, *subject, *added],
            cwd=where,
            check=True,
            capture_output=True,
        )
    return where


def serving_context(authority: Path, name: str) -> ssl.SSLContext:
    """A server-side TLS context with `authority`'s certificate `name` (leaf, other)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(authority / f"{name}.pem", authority / f"{name}.key")
    return context
