"""The configurations compared in one run, and how each one is started.

Every configuration answers the same POST /v1/chat/completions at its URL; the
process under test (if any) is pinned to the proxy core and is the one whose
CPU and memory are read.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import nginx
from bench.procs import (
    LOAD_CORE,
    PROXY_CORE,
    REPO,
    VENV_PYTHON,
    Proc,
    Procs,
    free_port,
    wait_http_ok,
    wait_tcp,
)

DIRECT = "direct"
PASSTHROUGH = "aiohttp-passthrough"
FULL = "spangate-full"
WORKERS2 = "spangate-workers2"


@dataclass(frozen=True)
class Setup:
    """What every configuration shares: the upstream and the OTLP receiver."""

    procs: Procs
    upstream_port: int
    #: The OTLP receiver's gRPC and HTTP ports.
    otlp_port: int
    otlp_http_port: int
    #: A port nothing listens on: the "collector unreachable" endpoint.
    closed_port: int


@dataclass(frozen=True)
class Running:
    name: str
    url: str
    #: The proxy under test; None for `direct` (nothing between client and upstream).
    proc: Proc | None


@dataclass(frozen=True)
class Configuration:
    name: str
    meaning: str
    start: Callable[[Setup], Running]


def _direct(setup: Setup) -> Running:
    return Running(DIRECT, f"http://127.0.0.1:{setup.upstream_port}", None)


def _nginx_hop(setup: Setup) -> Running:
    proc, port = nginx.start_hop(setup.procs, setup.upstream_port)
    return Running("nginx-proxy", f"http://127.0.0.1:{port}", proc)


def _passthrough(setup: Setup) -> Running:
    port = free_port()
    argv = [str(VENV_PYTHON), "-m", "bench.passthrough", "--port", str(port)]
    argv += ["--upstream", f"http://127.0.0.1:{setup.upstream_port}"]
    proc = setup.procs.start(PASSTHROUGH, argv, PROXY_CORE)
    wait_tcp(proc, port)
    return Running(PASSTHROUGH, f"http://127.0.0.1:{port}", proc)


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without OTEL_*/SPANGATE_* (the environment would beat the config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANGATE_"))}
    return {**env, **(extra or {})}


def start_spangate(
    procs: Procs,
    name: str,
    upstream_url: str,
    telemetry: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    pool_size: int = 256,
    args: tuple[str, ...] = (),
    core: str = PROXY_CORE,
    source: Path = REPO,
) -> Running:
    """`python -m proxy serve` on a generated config, stdout to `<workdir>/<name>.log`."""
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "pool_size": pool_size},
        "providers": {"upstream": {"kind": "openai", "base_url": upstream_url}},
        "telemetry": telemetry,
    }
    path = procs.workdir / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    argv = [str(VENV_PYTHON), "-m", "proxy", "serve", "--config", str(path), "--port", str(port)]
    # `python -m` puts the working directory first on sys.path: the code run is `source`'s.
    proc = procs.start(name, argv + list(args), core, env=clean_env(env), cwd=source)
    wait_http_ok(proc, f"http://127.0.0.1:{port}/readyz")
    # With --workers, /readyz answers from whichever worker is up first; the supervisor's
    # spangate.ready line means all are.
    wait_logged(proc, '"spangate.ready"')
    return Running(name, f"http://127.0.0.1:{port}", proc)


def wait_logged(proc: Proc, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s * proc.patience
    while text not in proc.log.read_text(errors="replace"):
        if time.monotonic() > deadline or not proc.alive():
            raise RuntimeError(f"{proc.name} never logged {text}: see {proc.log}")
        time.sleep(0.05)


#: The OTLP protocol of the full-telemetry configurations: spangate's default unless
#: BENCH_OTLP_PROTOCOL=grpc (the protocol of every run before the ninth session).
PROTOCOL = os.environ.get("BENCH_OTLP_PROTOCOL", "http/protobuf")


def full_telemetry(grpc_port: int, http_port: int, protocol: str = PROTOCOL) -> dict[str, Any]:
    """Traces, metrics and logs over OTLP to the receiver's port for `protocol`
    (metrics every 5 s, so exports happen in a run)."""
    port = grpc_port if protocol == "grpc" else http_port
    return {
        "otlp_endpoint": f"http://127.0.0.1:{port}",
        "otlp_protocol": protocol,
        "logs_otlp": True,
        "metric_export_interval_ms": 5000,
    }


def _spangate_off(setup: Setup) -> Running:
    upstream = f"http://127.0.0.1:{setup.upstream_port}"
    extra = {"OTEL_SDK_DISABLED": "true"}
    return start_spangate(setup.procs, "spangate-off", upstream, {"sdk_disabled": True}, env=extra)


def _spangate_workers2(setup: Setup) -> Running:
    """spangate-full with `--workers 2`, allowed on every core (the others are pinned to one):
    what a second core buys at high concurrency. Its CPU figures cover all its processes."""
    upstream = f"http://127.0.0.1:{setup.upstream_port}"
    telemetry = full_telemetry(setup.otlp_port, setup.otlp_http_port)
    return start_spangate(
        setup.procs, WORKERS2, upstream, telemetry, args=("--workers", "2"), core=_every_core()
    )


def _spangate_unreachable(setup: Setup) -> Running:
    upstream = f"http://127.0.0.1:{setup.upstream_port}"
    telemetry = full_telemetry(setup.closed_port, setup.closed_port)
    return start_spangate(setup.procs, "spangate-unreachable", upstream, telemetry)


def _variant(
    name: str,
    telemetry: dict[str, Any],
    env: dict[str, str] | None = None,
    every_core: bool = False,
) -> Callable[[Setup], Running]:
    """spangate-full with some settings changed: to see what each part costs."""

    def start(setup: Setup) -> Running:
        upstream = f"http://127.0.0.1:{setup.upstream_port}"
        protocol = str(telemetry.get("otlp_protocol", PROTOCOL))
        settings = {
            **full_telemetry(setup.otlp_port, setup.otlp_http_port, protocol),
            **telemetry,
        }
        core = _every_core() if every_core else PROXY_CORE
        return start_spangate(setup.procs, name, upstream, settings, env=env, core=core)

    return start


def _every_core() -> str:
    return ",".join(str(core) for core in sorted(os.sched_getaffinity(0)))


CONFIGURATIONS = (
    Configuration(DIRECT, "load generator straight to the nginx upstream (baseline)", _direct),
    Configuration("nginx-proxy", "nginx as a plain keep-alive reverse proxy hop", _nginx_hop),
    Configuration(PASSTHROUGH, "minimal aiohttp reverse proxy, no telemetry", _passthrough),
    Configuration("spangate-off", "spangate with OTEL_SDK_DISABLED=true", _spangate_off),
    Configuration(
        FULL,
        f"spangate, traces+metrics+logs over OTLP ({PROTOCOL}) to rotel",
        _variant(FULL, {}),
    ),
    Configuration(
        "spangate-unreachable",
        "spangate, full telemetry to a closed OTLP port",
        _spangate_unreachable,
    ),
    Configuration(
        "spangate-2cores",
        "spangate-full, not pinned: `pipeline: auto` runs the telemetry process on the other core",
        _variant("spangate-2cores", {}, every_core=True),
    ),
)
#: Only when named in BENCH_CONFIGS (e.g. spangate-workers2): not pinned, so it would
#: disturb the pinned measurements of a default run.
_THREAD = {"pipeline": "thread"}
_PROCESS = {"pipeline": "process"}
#: spangate-full is pinned to one core, so its `pipeline: auto` runs telemetry on a thread.
_VARIANTS: tuple[tuple[str, str, Callable[[Setup], Running]], ...] = (
    (
        "spangate-http",
        "spangate-full over OTLP/HTTP",
        _variant("spangate-http", {"otlp_protocol": "http/protobuf"}),
    ),
    (
        "spangate-grpc",
        "spangate-full over OTLP/gRPC",
        _variant("spangate-grpc", {"otlp_protocol": "grpc"}),
    ),
    (
        "spangate-nologs",
        "spangate-full without OTLP log export",
        _variant("spangate-nologs", {"logs_otlp": False}),
    ),
    (
        "spangate-notraces",
        "spangate-full without trace export (metrics + OTLP logs)",
        _variant("spangate-notraces", {}, env={"OTEL_TRACES_EXPORTER": "none"}),
    ),
    (
        "spangate-metrics",
        "spangate-full without trace or log export (metrics, JSON log lines)",
        _variant("spangate-metrics", {"logs_otlp": False}, env={"OTEL_TRACES_EXPORTER": "none"}),
    ),
    (
        "spangate-sampled",
        "spangate-full with 1 trace in 10 sampled (metrics and log lines for every request)",
        _variant(
            "spangate-sampled",
            {"traces_sampler": "parentbased_traceidratio", "traces_sampler_arg": "0.1"},
        ),
    ),
    (
        "spangate-batch64",
        "spangate-full exporting spans and log lines in batches of 64 (default 512)",
        _variant(
            "spangate-batch64",
            {},
            env={"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "64"},
        ),
    ),
    (
        "spangate-process",
        "spangate-full with the telemetry process forced onto the same single core",
        _variant("spangate-process", _PROCESS),
    ),
    (
        "spangate-thread-2cores",
        "spangate-full, not pinned, telemetry forced onto a thread",
        _variant("spangate-thread-2cores", _THREAD, every_core=True),
    ),
)
OPTIONAL_CONFIGURATIONS = (
    *(Configuration(name, meaning, start) for name, meaning, start in _VARIANTS),
    Configuration(
        WORKERS2, "spangate-full with --workers 2, not pinned to one core", _spangate_workers2
    ),
)


def rotel_agent() -> Path:
    spec = importlib.util.find_spec("rotel")
    if spec is None or spec.origin is None:
        raise RuntimeError("rotel is not installed in the venv: .venv/bin/pip install rotel")
    path = Path(spec.origin).parent / "rotel-agent"
    if not path.exists():
        raise RuntimeError(f"rotel-agent binary missing at {path}")
    return path


def start_rotel(procs: Procs) -> tuple[Proc, int, int]:
    """A live OTLP receiver that discards what it receives: (process, gRPC port, HTTP port)."""
    grpc_port, http_port = free_port(), free_port()
    argv = [
        str(rotel_agent()),
        "start",
        "--otlp-grpc-endpoint",
        f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint",
        f"127.0.0.1:{http_port}",
        "--exporter",
        "blackhole",
        "--pid-file",
        str(procs.workdir / "rotel.pid"),
    ]
    proc = procs.start("rotel", argv, LOAD_CORE)
    wait_tcp(proc, grpc_port)
    wait_tcp(proc, http_port)
    return proc, grpc_port, http_port


def start_setup(procs: Procs, upstream_port: int) -> Setup:
    """What every configuration shares, around an upstream already started: the OTLP
    receiver and a port nothing listens on."""
    _, otlp_port, otlp_http_port = start_rotel(procs)
    return Setup(procs, upstream_port, otlp_port, otlp_http_port, closed_port=free_port())


def by_name() -> dict[str, Configuration]:
    """Every configuration a tool may be asked for by name (LiteLLM aside), with
    `spangate-full@REV` when BENCH_BASELINE names a revision."""
    from bench import baseline  # it imports this module

    named = {c.name: c for c in (*CONFIGURATIONS, *OPTIONAL_CONFIGURATIONS)}
    revision = baseline.configuration()
    if revision is not None:
        named[revision.name] = revision
    return named
