"""Pure planning: which targets may serve a request, in which order."""

from __future__ import annotations

import msgspec

from proxy.endpoints import Endpoint
from proxy.errors import BadRequest, NotFound
from proxy.runtime import Provider, RuntimeConfig, Target


class RoutePlan(msgspec.Struct, frozen=True):
    #: The alias the request named, or None for pass-through.
    alias: str | None
    targets: tuple[Target, ...]


def resolve(runtime: RuntimeConfig, endpoint: Endpoint, model: str | None) -> RoutePlan:
    """Alias → its targets; anything else → the default provider of the dialect."""
    name = model if model is not None else endpoint.deployment
    route = runtime.routes.get(name) if name is not None else None
    if route is None:
        return RoutePlan(None, (Target(_default_provider(runtime, endpoint), None),))
    wrong = [t for t in route.targets if t.provider.adapter.wire != endpoint.wire]
    if wrong:
        raise BadRequest(
            f"model alias {route.alias!r} routes to {wrong[0].provider.adapter.wire}-format "
            f"providers, but this endpoint ({endpoint.path}) speaks the {endpoint.wire} format; "
            f"call the alias through the matching API",
            param="model",
            code="model_format_mismatch",
        )
    return RoutePlan(route.alias, route.targets)


def _default_provider(runtime: RuntimeConfig, endpoint: Endpoint) -> Provider:
    provider = runtime.defaults.get(endpoint.dialect)
    if provider is None:
        raise NotFound(
            f"no provider of kind {endpoint.dialect!r} is configured, so spangate cannot "
            f"serve {endpoint.path}; add one under `providers:` or use a model alias",
            code="no_provider",
        )
    return provider
