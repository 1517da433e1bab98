"""The serving process: event loop, listener, signals and the shutdown drain."""

from __future__ import annotations

import asyncio
import signal

import structlog
from aiohttp import web

from instrumentation.logging import configure_logging, redactor_for
from instrumentation.setup import Telemetry, log_sinks
from proxy.app import create_app
from proxy.appkeys import STATE, TELEMETRY
from proxy.handlers import metrics
from proxy.runtime import RuntimeConfig
from proxy.state import ServerState

log = structlog.get_logger("spangate")


def serve(runtime: RuntimeConfig, source: str) -> int:
    _install_uvloop()
    asyncio.run(_serve(runtime, source))
    return 0


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(runtime: RuntimeConfig, source: str) -> None:
    settings = runtime.config.server
    telemetry = Telemetry(runtime.config.telemetry, redactor_for(runtime.config))
    configure_logging(redactor_for(runtime.config), sinks=log_sinks(telemetry))
    app = create_app(runtime, telemetry)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=settings.drain_timeout_s,
    )
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    # Our own listener (not a TCPSite) so that draining can stop accepting new
    # connections while the open ones finish.
    listener = await loop.create_server(runner.server, settings.host, settings.port, backlog=1024)
    host, port = listener.sockets[0].getsockname()[:2]
    metrics_runner = await _metrics_listener(runtime, telemetry)
    state = app[STATE]
    state.ready = True
    log.info("spangate.ready", address=f"http://{host}:{port}", config=source)
    await _wait_for_signal(loop)
    await _drain(listener, runner, state, settings.drain_timeout_s)
    if metrics_runner is not None:
        await metrics_runner.cleanup()


async def _metrics_listener(runtime: RuntimeConfig, telemetry: Telemetry) -> web.AppRunner | None:
    """/metrics on its own address, when telemetry.prometheus.port is set."""
    prometheus = runtime.config.telemetry.prometheus
    if prometheus.port is None or not prometheus.enabled:
        return None
    app = web.Application()
    app[TELEMETRY] = telemetry
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host = prometheus.host or runtime.config.server.host
    await web.TCPSite(runner, host, prometheus.port).start()
    log.info("spangate.metrics_listener", address=f"http://{host}:{prometheus.port}/metrics")
    return runner


async def _wait_for_signal(loop: asyncio.AbstractEventLoop) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _drain(
    listener: asyncio.Server, runner: web.AppRunner, state: ServerState, drain_s: float
) -> None:
    state.draining = True
    listener.close()
    log.info("spangate.draining", inflight=state.inflight, timeout_s=drain_s)
    finished = await state.wait_idle(drain_s)
    if not finished:
        log.warning("spangate.drain_timeout", abandoned=state.inflight)
    await runner.cleanup()
    log.info("spangate.stopped")
