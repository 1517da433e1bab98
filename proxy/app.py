"""create_app(): routes, middlewares and the upstream session's lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from proxy import handlers
from proxy.appkeys import RUNTIME, STATE, UPSTREAM
from proxy.runtime import RuntimeConfig
from proxy.state import ServerState
from proxy.upstream import Upstream


def create_app(runtime: RuntimeConfig) -> web.Application:
    server = runtime.config.server
    app = web.Application(
        client_max_size=server.max_body_bytes,
        middlewares=[
            handlers.no_tracebacks,
            handlers.refuse_forward_proxying,
            handlers.count_inflight,
        ],
    )
    app[RUNTIME] = runtime
    app[STATE] = ServerState()
    app[UPSTREAM] = Upstream(server.pool_size)
    app.cleanup_ctx.append(_upstream_session)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_route("*", "/{tail:.*}", handlers.proxy)
    return app


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    await app[UPSTREAM].start()
    yield
    await app[UPSTREAM].close()
