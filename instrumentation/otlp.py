"""OTLP exporters from the standard OTEL_* variables, with the config as fallback.

The environment wins, as users of OpenTelemetry expect: when a variable is
set, the exporter reads it itself; the config's value is passed only when the
environment is silent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from instrumentation.export import DropCounter
from proxy.config import TelemetryConfig

log = structlog.get_logger("spangate.telemetry")

#: The OTLP signal's name in spangate_telemetry_dropped_total's spangate_signal label.
_DROP_SIGNAL = {"traces": "spans", "metrics": "metrics", "logs": "logs"}
_SIGNAL_PATH = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}


def endpoint_for(signal: str, env: Mapping[str, str], config: TelemetryConfig) -> str | None:
    """The endpoint a signal would be exported to, or None when none is configured."""
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    return specific or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or config.otlp_endpoint


def protocol_for(signal: str, env: Mapping[str, str], config: TelemetryConfig) -> str:
    return (
        env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or config.otlp_protocol
        or "http/protobuf"
    ).strip()


def _kwargs(
    signal: str, env: Mapping[str, str], config: TelemetryConfig, grpc: bool
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    env_has_endpoint = bool(
        env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    if not env_has_endpoint and config.otlp_endpoint:
        base = config.otlp_endpoint.rstrip("/")
        kwargs["endpoint"] = base if grpc else base + _SIGNAL_PATH[signal]
        if grpc and base.startswith("http://"):
            kwargs["insecure"] = True
    has_env_headers = env.get("OTEL_EXPORTER_OTLP_HEADERS") or env.get(
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS"
    )
    if not has_env_headers and config.otlp_headers:
        kwargs["headers"] = dict(config.otlp_headers)
    return kwargs


def span_exporter(
    env: Mapping[str, str], config: TelemetryConfig, drops: DropCounter | None = None
) -> Any:
    """The SDK's OTLP span exporter for its transport (TLS, headers, compression,
    retries), with spangate's own encoder in place of the SDK's (instrumentation/otlpwire.py)."""
    if _uses_grpc("traces", env, config):
        from instrumentation import otlpgrpc

        return otlpgrpc.GrpcSpanExporter(
            **_kwargs("traces", env, config, True), on_rejected=_counter("traces", drops)
        )
    from instrumentation import otlpexport

    return _http(otlpexport.HttpSpanExporter, "traces", env, config, drops)


def metric_exporter(
    env: Mapping[str, str], config: TelemetryConfig, drops: DropCounter | None = None
) -> Any:
    if _uses_grpc("metrics", env, config):
        from instrumentation import otlpgrpc

        return otlpgrpc.GrpcMetricExporter(
            **_kwargs("metrics", env, config, True), on_rejected=_counter("metrics", drops)
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetrics,
    )

    return _http(HttpMetrics, "metrics", env, config, drops)


def log_exporter(
    env: Mapping[str, str], config: TelemetryConfig, drops: DropCounter | None = None
) -> Any:
    """Like span_exporter: the SDK's transport with spangate's log encoder."""
    if _uses_grpc("logs", env, config):
        from instrumentation import otlpgrpc

        return otlpgrpc.GrpcLogExporter(
            **_kwargs("logs", env, config, True), on_rejected=_counter("logs", drops)
        )
    from instrumentation import otlpexport

    return _http(otlpexport.HttpLogExporter, "logs", env, config, drops)


# Each protocol's modules are imported only when it is chosen: gRPC's alone hold ~8.5 MB
# of a process's resident memory.
def _uses_grpc(signal: str, env: Mapping[str, str], config: TelemetryConfig) -> bool:
    return protocol_for(signal, env, config) == "grpc"


def _http(
    exporter: Any,
    signal: str,
    env: Mapping[str, str],
    config: TelemetryConfig,
    drops: DropCounter | None,
) -> Any:
    """An SDK OTLP/HTTP exporter on instrumentation/otlphttp's connection where it can
    take one (the SDK's `requests` transport otherwise)."""
    from instrumentation import otlphttp

    url = endpoint_for(signal, env, config)
    on_rejected = _counter(signal, drops)
    return exporter(
        **_kwargs(signal, env, config, False),
        **otlphttp.transport_kwargs(exporter, signal, url, env, on_rejected),
    )


def _counter(signal: str, drops: DropCounter | None) -> Callable[[int, str], None]:
    """What to do with a collector's partial success: count the items it rejected as
    dropped ("rejected") and log its message."""
    counted = _DROP_SIGNAL[signal]

    def on_rejected(count: int, message: str) -> None:
        if drops is not None and count > 0:
            drops.add(counted, "rejected", count)
        log.warning("otlp.partially_rejected", signal=signal, rejected=count, message=message)

    return on_rejected
