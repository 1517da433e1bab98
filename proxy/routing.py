"""Pure planning: which route serves a request, honouring opt-in header overrides."""

from __future__ import annotations

import msgspec

from proxy.config import CircuitConfig
from proxy.endpoints import Endpoint
from proxy.errors import BadRequest, NotFound
from proxy.runtime import PASSTHROUGH_RETRY, Provider, Route, RuntimeConfig, Target

#: Unaliased traffic goes to one provider as sent: no retries, no circuit (an
#: honest relay of whatever that provider answers).
_PASSTHROUGH_CIRCUIT = CircuitConfig(enabled=False)


class RoutePlan(msgspec.Struct, frozen=True):
    #: The alias the request named, or None for pass-through.
    alias: str | None
    route: Route


class Overrides(msgspec.Struct, frozen=True):
    """x-spangate-route / x-spangate-target, already gated by `server.route_headers`."""

    route: str | None = None
    target: str | None = None


def resolve(
    runtime: RuntimeConfig,
    endpoint: Endpoint,
    model: str | None,
    overrides: Overrides | None = None,
) -> RoutePlan:
    """Alias → its route; anything else → the default provider of the dialect."""
    overrides = overrides or Overrides()
    name = overrides.route or (model if model is not None else endpoint.deployment)
    route = runtime.routes.get(name) if name is not None else None
    if overrides.route and route is None:
        raise BadRequest(
            f"x-spangate-route names unknown model alias {overrides.route!r} "
            f"(known: {', '.join(sorted(runtime.routes)) or 'none'})",
            code="unknown_route",
        )
    if route is None:
        if overrides.target:
            raise _target_without_alias(runtime, endpoint, name, overrides.target)
        target = Target(_default_provider(runtime, endpoint), None)
        return RoutePlan(None, _passthrough(target))
    _check_wire(route, endpoint)
    if overrides.target:
        route = _pinned(route, overrides.target)
    return RoutePlan(route.alias, route)


def _passthrough(target: Target) -> Route:
    return Route("", (target,), retry=PASSTHROUGH_RETRY, circuit=_PASSTHROUGH_CIRCUIT)


def _pinned(route: Route, label: str) -> Route:
    chosen = tuple(t for t in route.targets if t.label == label)
    if not chosen:
        known = ", ".join(t.label for t in route.targets)
        raise BadRequest(
            f"x-spangate-target {label!r} is not a target of alias {route.alias!r} "
            f"(targets: {known})",
            code="unknown_target",
        )
    # That target only: no other target, and no alias after it, not even for a context
    # overflow.
    return msgspec.structs.replace(route, targets=chosen, fallbacks=(), context_fallbacks=())


def _target_without_alias(
    runtime: RuntimeConfig, endpoint: Endpoint, model: str | None, label: str
) -> BadRequest:
    """x-spangate-target on pass-through traffic: there is no target to pin, and ignoring
    the header would let the caller believe the request went where it asked."""
    sent = f"model {model!r} is not one" if model is not None else "this request names no model"
    return BadRequest(
        f"x-spangate-target {label!r} pins a target of a model alias, but {sent} "
        f"(known aliases: {', '.join(sorted(runtime.routes)) or 'none'}); send an alias "
        f"as the model, or drop the header to pass {endpoint.path} through as sent",
        code="target_without_alias",
    )


def _check_wire(route: Route, endpoint: Endpoint) -> None:
    wrong = [t for t in route.targets if t.provider.adapter.wire != endpoint.wire]
    if wrong:
        raise BadRequest(
            f"model alias {route.alias!r} routes to {wrong[0].provider.adapter.wire}-format "
            f"providers, but this endpoint ({endpoint.path}) speaks the {endpoint.wire} format; "
            f"call the alias through the matching API",
            param="model",
            code="model_format_mismatch",
        )


def _default_provider(runtime: RuntimeConfig, endpoint: Endpoint) -> Provider:
    provider = runtime.defaults.get(endpoint.dialect)
    if provider is None:
        raise NotFound(
            f"no provider of kind {endpoint.dialect!r} is configured, so spangate cannot "
            f"serve {endpoint.path}; add one under `providers:` or use a model alias",
            code="no_provider",
        )
    return provider
