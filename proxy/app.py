"""create_app(): routes, the front-door middleware and the upstream pool's lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from instrumentation.logging import redactor_for
from instrumentation.setup import Telemetry
from proxy import handlers
from proxy.appkeys import HEALTH, RUNTIME, STATE, TELEMETRY, UPSTREAM
from proxy.health import HealthRegistry
from proxy.http1 import target_of
from proxy.runtime import RuntimeConfig
from proxy.state import TELEMETRY_FLUSH_S, ServerState
from proxy.upstream import Upstream


def create_app(runtime: RuntimeConfig, telemetry: Telemetry | None = None) -> web.Application:
    """The application; without `telemetry`, one built from the config and OTEL_* env."""
    server = runtime.config.server
    state = ServerState()
    app = web.Application(client_max_size=server.max_body_bytes, middlewares=[handlers.front_door])
    app[RUNTIME] = runtime
    app[STATE] = state
    app[TELEMETRY] = telemetry or Telemetry(runtime.config.telemetry, redactor_for(runtime.config))
    app[TELEMETRY].watch_inflight(lambda: state.inflight)
    app[UPSTREAM] = Upstream(server.pool_size)
    app[HEALTH] = HealthRegistry()
    app[TELEMETRY].watch_health(app[HEALTH])
    app.cleanup_ctx.append(_upstream_session)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/spangate/status", handlers.status)
    if runtime.config.telemetry.prometheus.port is None:
        app.router.add_get("/metrics", handlers.metrics)
    app.router.add_route("*", "/{tail:.*}", handlers.proxy, expect_handler=handlers.expect_continue)
    return app


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    providers = app[RUNTIME].providers.values()
    await app[UPSTREAM].start(tls=any(target_of(p.settings.base_url).origin.tls for p in providers))
    yield
    await app[UPSTREAM].close()
    # Shutdown flushes all pending telemetry (blocking: run off the loop), within the
    # time the supervisor allows for it (proxy/state.py stop_bound_s).
    flush = app[TELEMETRY].shutdown
    await asyncio.get_running_loop().run_in_executor(None, flush, TELEMETRY_FLUSH_S)
