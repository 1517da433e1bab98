"""One configuration measured once: warm-up, wrk at each concurrency, idle RSS, streams."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench import load, streams
from bench.configs import Configuration, Setup, full_telemetry, start_spangate
from bench.procs import LOAD_CORE, VENV_PYTHON, Proc, free_port, memory_mb, settle_cpu, wait_tcp


@dataclass(frozen=True)
class Settings:
    seconds: float
    repeats: int
    concurrency: tuple[int, ...]
    warmup_s: float
    streams: int
    open_streams: int
    hold_s: float


@dataclass(frozen=True)
class ConfigRun:
    name: str
    loads: tuple[load.LoadResult, ...]
    rss_idle_mb: float | None
    stream: streams.StreamResult


def run_configuration(
    config: Configuration, setup: Setup, settings: Settings, script: Path, upstream: Proc
) -> ConfigRun:
    running = config.start(setup)
    try:
        load.run_wrk(running.url + "/v1/chat/completions", script, 16, settings.warmup_s)
        loads = tuple(
            load.measure(running.url, script, c, settings.seconds, running.proc, upstream)
            for c in settings.concurrency
        )
        rss = _idle_rss(running.proc)
        stream = streams.sequential(running.url, settings.streams, running.proc)
    finally:
        if running.proc is not None:
            setup.procs.stop(running.proc)
    return ConfigRun(config.name, loads, rss, stream)


def _idle_rss(proc: Proc | None) -> float | None:
    if proc is None:
        return None
    settle_cpu(proc.pid)
    return memory_mb(proc.pid)


def run_open_streams(setup: Setup, settings: Settings) -> streams.OpenStreamsResult:
    """spangate (full telemetry) in front of the slow upstream, with N streams held open."""
    port = free_port()
    argv = [str(VENV_PYTHON), "-m", "bench.slow_stream", "--port", str(port)]
    argv += ["--hold-s", f"{settings.hold_s:g}"]
    slow = setup.procs.start("slow-stream", argv, LOAD_CORE)
    try:
        wait_tcp(slow, port)
        running = start_spangate(
            setup.procs,
            "spangate-streams",
            f"http://127.0.0.1:{port}",
            full_telemetry(setup.otlp_port),
            pool_size=settings.open_streams + 64,
        )
        assert running.proc is not None
        try:
            timeout = settings.hold_s * 0.8
            return streams.open_streams(running.url, settings.open_streams, running.proc, timeout)
        finally:
            setup.procs.stop(running.proc)
    finally:
        setup.procs.stop(slow)
