"""The serving process: event loop, listener, signals and the shutdown drain.

The same code runs stand-alone and as one worker of `serve --workers N`
(proxy/workers.py); a worker differs only in sharing its port (SO_REUSEPORT),
its metrics port offset, and telling the supervisor when it is ready.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from instrumentation.cpus import choose_pipeline, usable_cpus
from instrumentation.logging import configure_logging, redactor_for, tag_worker
from instrumentation.setup import Telemetry, log_sinks
from proxy import native
from proxy.app import create_app
from proxy.appkeys import STATE, TELEMETRY
from proxy.handlers import metrics
from proxy.runtime import RuntimeConfig
from proxy.state import WIND_DOWN_S, ServerState
from proxy.workers import WorkerSlot

log = structlog.get_logger("spangate")

#: spangate's own endpoints, which say which worker answered when there are several.
_OWN_PATHS = frozenset({"/healthz", "/readyz", "/spangate/status", "/metrics"})


class ListenError(Exception):
    """A listener could not be opened (port taken, address not local, ...)."""


def serve(runtime: RuntimeConfig, source: str) -> int:
    _install_uvloop()
    slot = WorkerSlot.from_env(os.environ)
    try:
        asyncio.run(_serve(runtime, source, slot))
    except ListenError as exc:
        print(f"spangate: {exc}", file=sys.stderr)
        return 1
    return 0


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(runtime: RuntimeConfig, source: str, slot: WorkerSlot | None) -> None:
    settings = runtime.config.server
    telemetry = Telemetry(
        runtime.config.telemetry,
        redactor_for(runtime.config),
        pipeline=choose_pipeline(
            runtime.config.telemetry.pipeline,
            usable_cpus(),
            slot.count if slot is not None else 1,
        ),
        worker=slot.index if slot is not None else None,
    )
    configure_logging(redactor_for(runtime.config), sinks=log_sinks(telemetry))
    app = create_app(runtime, telemetry)
    if slot is not None:
        tag_worker(slot.index)
        app.on_response_prepare.append(_worker_headers(slot))
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        # Not drain_timeout_s: _drain has already waited that long and cancelled what
        # was left, and aiohttp waits its shutdown_timeout twice more (it made a stream
        # outlive SIGTERM by 3x drain_timeout_s).
        shutdown_timeout=WIND_DOWN_S,
    )
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    try:
        # Our own listener (not a TCPSite) so that draining can stop accepting new
        # connections while the open ones finish.
        listener = await _listen(runner.server, settings.host, settings.port, slot is not None)
        metrics_runner = await _metrics_listener(runtime, telemetry, slot)
    except ListenError:
        await runner.cleanup()
        raise
    host, port = listener.sockets[0].getsockname()[:2]
    state = app[STATE]
    _settle_garbage_collector()
    state.ready = True
    _announce(f"http://{host}:{port}", source, slot)
    await _wait_for_signal(loop, slot is not None)
    await _drain(listener, runner, state, settings.drain_timeout_s)
    if metrics_runner is not None:
        await metrics_runner.cleanup()


def _settle_garbage_collector() -> None:
    """Keep full collections off the request path.

    Everything allocated at startup (config, SDK, imported modules) lives for the
    whole process; frozen, the collector never walks it again. Without this,
    full collections walking it showed as 5-10 ms p99 stalls in the bench.
    """
    gc.collect()
    gc.freeze()


async def _listen(server: web.Server, host: str, port: int, shared: bool) -> asyncio.Server:
    """The main listener. Only a supervised worker sets SO_REUSEPORT: a stand-alone
    spangate must fail when something else already holds the port, not share it."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_server(server, host, port, backlog=1024, reuse_port=shared)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _announce(address: str, source: str, slot: WorkerSlot | None) -> None:
    if slot is None:
        log.info("spangate.ready", address=address, config=source, native=native.describe())
        return
    # The supervisor logs the one spangate.ready line once every worker is up.
    # Each worker decides for itself whether its compiled modules match its sources.
    log.info("spangate.worker_ready", address=address, pid=os.getpid(), native=native.describe())
    slot.signal_ready()


def _worker_headers(
    slot: WorkerSlot,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """Which worker answered /healthz, /readyz, /spangate/status or /metrics: with a
    shared port each of those is one worker's view. Proxied responses stay untouched."""
    index, pid = str(slot.index), str(os.getpid())

    async def add(request: web.Request, response: web.StreamResponse) -> None:
        if request.path in _OWN_PATHS:
            response.headers["x-spangate-worker"] = index
            response.headers["x-spangate-worker-pid"] = pid

    return add


async def _metrics_listener(
    runtime: RuntimeConfig, telemetry: Telemetry, slot: WorkerSlot | None
) -> web.AppRunner | None:
    """/metrics on its own address, when telemetry.prometheus.port is set (worker i of
    `--workers N` on port + i, so each worker can be scraped)."""
    prometheus = runtime.config.telemetry.prometheus
    if prometheus.port is None or not prometheus.enabled:
        return None
    app = web.Application()
    app[TELEMETRY] = telemetry
    app.router.add_get("/metrics", metrics)
    if slot is not None:
        app.on_response_prepare.append(_worker_headers(slot))
    # A scrape in progress at shutdown must not hold the exit (aiohttp's default: 60 s).
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=WIND_DOWN_S)
    await runner.setup()
    host = prometheus.host or runtime.config.server.host
    port = prometheus.port + slot.index if slot is not None and prometheus.port else prometheus.port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(f"cannot listen for metrics on {host}:{port}: {exc.strerror}") from None
    actual = runner.addresses[0][1] if runner.addresses else port
    log.info("spangate.metrics_listener", address=f"http://{host}:{actual}/metrics")
    return runner


async def _wait_for_signal(loop: asyncio.AbstractEventLoop, supervised: bool) -> None:
    """SIGTERM, and SIGINT when stand-alone. A supervised worker leaves SIGINT ignored (the
    supervisor started it so): Ctrl-C reaches the whole process group, and the
    supervisor turns it into one SIGTERM per worker."""
    stop = asyncio.Event()
    for sig in (signal.SIGTERM,) if supervised else (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _drain(
    listener: asyncio.Server, runner: web.AppRunner, state: ServerState, drain_s: float
) -> None:
    state.draining = True
    listener.close()
    log.info("spangate.draining", inflight=state.inflight, timeout_s=drain_s)
    if not await state.wait_idle(drain_s):
        log.warning("spangate.drain_timeout", abandoned=state.inflight)
        # Cancelled here, not by aiohttp's shutdown: it would wait WIND_DOWN_S for them
        # to end by themselves first, and its cancel does not reach a handler that is
        # not reading the request body (a stream being relayed).
        state.cancel_open()
        await state.wait_idle(WIND_DOWN_S)
    await runner.cleanup()
    log.info("spangate.stopped")
