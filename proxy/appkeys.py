"""Typed keys for what the aiohttp Application carries."""

from __future__ import annotations

from aiohttp import web

from instrumentation.setup import Telemetry
from proxy.health import HealthRegistry
from proxy.runtime import RuntimeConfig
from proxy.state import ServerState
from proxy.upstream import Upstream

RUNTIME = web.AppKey("runtime", RuntimeConfig)
UPSTREAM = web.AppKey("upstream", Upstream)
STATE = web.AppKey("state", ServerState)
TELEMETRY = web.AppKey("telemetry", Telemetry)
HEALTH = web.AppKey("health", HealthRegistry)
