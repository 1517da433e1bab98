"""deploy/compose.yaml, otel-collector.yaml and deploy/prometheus/prometheus.yml read
together (docker is not available here, so statically): every scrape target is a
compose service on a port it serves, every exporter the collector runs is fed or
scraped, and spangate is configured to send each signal the collector has a pipeline
for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from instrumentation.setup import _exports_logs, _exports_traces
from proxy.config import load_config

REPO = Path(__file__).resolve().parent.parent


def load(path: str) -> Any:
    return yaml.safe_load((REPO / path).read_text())


def compose() -> dict[str, Any]:
    services: dict[str, Any] = load("deploy/compose.yaml")["services"]
    return services


def collector() -> dict[str, Any]:
    config: dict[str, Any] = load("otel-collector.yaml")
    return config


def spangate_env() -> dict[str, str]:
    env = compose()["spangate"]["environment"]
    return {str(k): str(v) for k, v in env.items()}


def served_ports() -> dict[str, set[int]]:
    """Where each compose service serves Prometheus text, by its own config."""
    command = compose()["spangate"]["command"]
    assert "--port" not in command and "--config" not in command, "update this test"
    spangate = load_config(None, spangate_env())  # the image's embedded default
    assert spangate.telemetry.prometheus.port is None  # so /metrics is on the main listener
    exporters = collector()["exporters"]
    return {
        "spangate": {spangate.server.port},
        "otel-collector": {
            int(exporter["endpoint"].rpartition(":")[2])
            for name, exporter in exporters.items()
            if name.split("/")[0] == "prometheus"
        },
    }


def scrape_targets() -> set[tuple[str, int]]:
    targets = set()
    for job in load("deploy/prometheus/prometheus.yml")["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                targets.add((host, int(port)))
    return targets


def test_every_scrape_target_is_a_service_port_that_serves_metrics() -> None:
    served = served_ports()
    for host, port in scrape_targets():
        assert host in compose(), host
        assert port in served.get(host, set()), (host, port)


def test_every_prometheus_exporter_of_the_collector_is_scraped() -> None:
    targets = scrape_targets()
    for port in served_ports()["otel-collector"]:
        assert ("otel-collector", port) in targets


def test_the_collectors_copy_does_not_reuse_spangates_metric_names() -> None:
    """Both copies in one Prometheus under the same names would double every sum the
    rules take (an interrupted-streams count, a dropped-telemetry count)."""
    for name, exporter in collector()["exporters"].items():
        if name.split("/")[0] == "prometheus":
            assert exporter.get("namespace"), name


def test_spangate_sends_every_signal_the_collector_has_a_pipeline_for() -> None:
    env = spangate_env()
    config = load_config(None, env).telemetry
    endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint.rpartition(":")[0] == "http://otel-collector"
    grpc = collector()["receivers"]["otlp"]["protocols"][env["OTEL_EXPORTER_OTLP_PROTOCOL"]]
    assert grpc["endpoint"].rpartition(":")[2] == endpoint.rpartition(":")[2]
    pipelines = collector()["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    assert _exports_traces(env, config)
    assert _exports_logs(env, config), "the logs pipeline would receive nothing"
    assert env.get("OTEL_METRICS_EXPORTER", "otlp") != "none"
