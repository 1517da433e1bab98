"""One configuration measured once: warm-up, wrk at each concurrency, idle RSS, streams."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench import canned, load, streams
from bench.configs import Configuration, Setup, full_telemetry, start_spangate
from bench.procs import (
    LOAD_CORE,
    VENV_PYTHON,
    Proc,
    Procs,
    free_port,
    memory_mb,
    settle_cpu,
    wait_tcp,
)


@dataclass(frozen=True)
class Settings:
    seconds: float
    repeats: int
    concurrency: tuple[int, ...]
    warmup_s: float
    streams: int
    open_streams: int
    hold_s: float
    #: Sequential streams that arrive one event per upstream write (0 = skip), and the gap.
    chunk_streams: int = 0
    chunk_gap_ms: float = 1.0


@dataclass(frozen=True)
class ConfigRun:
    name: str
    loads: tuple[load.LoadResult, ...]
    rss_idle_mb: float | None
    stream: streams.StreamResult
    chunked: streams.StreamResult | None = None


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
        chunked = None
        if settings.chunk_streams:
            count = settings.chunk_streams
            # Each of a stream's events waits for the gap; twice that, plus the usual.
            stream_s = 0.1 + 2 * len(canned.sse_events()) * settings.chunk_gap_ms / 1e3
            chunked = streams.sequential(running.url, count, running.proc, True, stream_s)
    finally:
        if running.proc is not None:
            setup.procs.stop(running.proc)
    return ConfigRun(config.name, loads, rss, stream, chunked)


def start_chunk_stream(procs: Procs, gap_ms: float) -> int:
    """bench/slow_stream.py writing each event on its own, `gap_ms` apart; its port."""
    port = free_port()
    argv = [str(VENV_PYTHON), "-m", "bench.slow_stream", "--port", str(port)]
    wait_tcp(procs.start("chunk-stream", [*argv, "--gap-ms", f"{gap_ms:g}"], LOAD_CORE), port)
    return port


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
            full_telemetry(setup.otlp_port, setup.otlp_http_port),
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
