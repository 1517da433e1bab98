"""Compile a validated Config into the form the request path uses.

All cross-references are resolved here, once, so that a request never meets a
dangling name; every problem is reported with its key path.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import msgspec

from instrumentation.pricing import PriceTable, shipped_prices
from instrumentation.semconv import PASSTHROUGH_ROUTE
from proxy.config import (
    CircuitConfig,
    Config,
    ConfigError,
    HedgeConfig,
    ModelConfig,
    ProviderConfig,
    RetryConfig,
    Strategy,
    TargetConfig,
    Timeouts,
)
from proxy.endpoints import Dialect
from proxy.headers import HOP_BY_HOP
from proxy.http1 import Origin, breaks_line, target_of
from proxy.listeners import check_listeners
from proxy.providers import ADAPTERS, Adapter
from proxy.providers.base import ProviderSettings


class Provider(msgspec.Struct, frozen=True):
    name: str
    kind: str
    adapter: Adapter
    settings: ProviderSettings
    #: `gen_ai.provider.name`.
    system: str
    host: str
    port: int
    timeouts: Timeouts
    propagate_trace: bool


class Target(msgspec.Struct, frozen=True):
    provider: Provider
    #: Upstream model; None for pass-through (the client's model goes as sent).
    model: str | None
    weight: float = 1.0
    #: USD per million input + output tokens, for `lowest_cost`.
    cost: float | None = None
    max_inflight: int | None = None
    timeouts: Timeouts | None = None

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.model}" if self.model else self.provider.name

    @property
    def passthrough(self) -> bool:
        """Unaliased traffic's target: the provider, with the client's model as sent."""
        return self.model is None

    def effective_timeouts(self) -> Timeouts:
        return self.timeouts or self.provider.timeouts


class Route(msgspec.Struct, frozen=True):
    alias: str
    targets: tuple[Target, ...]
    strategy: Strategy = "ordered"
    retry: RetryConfig = RetryConfig()
    fallbacks: tuple[str, ...] = ()
    context_fallbacks: tuple[str, ...] = ()
    circuit: CircuitConfig = CircuitConfig()
    hedge: HedgeConfig | None = None


#: Policy for unaliased (pass-through) requests: one target, one attempt.
PASSTHROUGH_RETRY = RetryConfig(next_target=[])


class RuntimeConfig(msgspec.Struct, frozen=True):
    config: Config
    providers: dict[str, Provider]
    routes: dict[str, Route]
    #: First provider of each dialect: where unaliased models go.
    defaults: dict[Dialect, Provider]


def compile_config(config: Config) -> RuntimeConfig:
    if not config.providers:
        raise ConfigError("providers: at least one provider is required")
    _check_ports(config)
    check_listeners(config, config.server.workers)
    providers = {
        name: _provider(name, spec, config.server.timeouts)
        for name, spec in config.providers.items()
    }
    prices = PriceTable(shipped_prices())
    routes = {
        alias: _route(alias, spec, providers, prices) for alias, spec in config.models.items()
    }
    _check_alias_references(config, routes)
    _check_shared_circuits(routes)
    _check_key_origins(routes)
    return RuntimeConfig(config, providers, routes, _defaults(providers))


#: RFC 9110 §5.6.2 token characters: what a header name may hold.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check_header_lines(name: str, spec: ProviderConfig) -> None:
    """Values go onto the request head as written: a line break would start another
    header. The messages never quote a value (it may be a key)."""
    for header, value in spec.headers.items():
        if not _TOKEN.fullmatch(header):
            raise ConfigError(f"providers.{name}.headers: {header!r} is not a valid header name")
        if header.lower() in HOP_BY_HOP:
            raise ConfigError(
                f"providers.{name}.headers: {header!r} is set by spangate for each connection "
                "and request (Host from base_url), so it cannot be configured"
            )
        if breaks_line(value):
            raise ConfigError(
                f"providers.{name}.headers.{header}: the value holds a line break or NUL"
            )
    if spec.api_key is not None and breaks_line(spec.api_key):
        raise ConfigError(
            f"providers.{name}.api_key: holds a line break or NUL (check the variable it "
            "comes from for a trailing newline)"
        )


def _provider(name: str, spec: ProviderConfig, default_timeouts: Timeouts) -> Provider:
    base_url = spec.base_url.rstrip("/")
    try:
        parts = urlsplit(base_url)
    except ValueError:
        # An unclosed `[` or a bracketed host that is no IPv6 address. Not quoted: the
        # URL did not parse, so its credentials or query cannot be told apart to leave out.
        raise ConfigError(
            f"providers.{name}.base_url: not a URL spangate can read: an IPv6 address "
            "must be a valid address in closed brackets, e.g. 'http://[::1]:8000'"
        ) from None
    # First: the messages below quote the URL, and its credentials must not be quoted.
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"providers.{name}.base_url: must not carry credentials; "
            f"set providers.{name}.api_key or providers.{name}.headers instead"
        )
    # Also before any quoting: a query may hold a key (`?api-key=...`).
    if parts.query or parts.fragment:
        raise ConfigError(
            f"providers.{name}.base_url: must not carry a query or fragment; "
            f"a key goes in providers.{name}.api_key or providers.{name}.headers"
        )
    try:
        port = parts.port
        # Sent as IDNA on the wire (Host, SNI, DNS): a name that has none is refused here.
        (parts.hostname or "").encode("idna")
    except (ValueError, UnicodeError):
        raise ConfigError(
            f"providers.{name}.base_url: the host or port cannot be used in {_shown(parts)!r}"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"providers.{name}.base_url: expected an http(s) URL such as "
            f"'https://api.openai.com', got {_shown(parts)!r}"
        )
    if not _valid_host(parts):
        raise ConfigError(
            f"providers.{name}.base_url: the host in {_shown(parts)!r} is not a host name "
            "(letters, digits, '-' and '_' in dot-separated labels of up to 63 characters) "
            "nor an IP address (an IPv6 one in brackets)"
        )
    _check_path_root(name, spec, parts)
    _check_header_lines(name, spec)
    if spec.kind == "azure_openai" and spec.api_version is None:
        raise ConfigError(
            f"providers.{name}.api_version: required for kind azure_openai (e.g. '2024-10-21')"
        )
    adapter = ADAPTERS[spec.kind]
    settings = ProviderSettings(
        base_url,
        spec.api_key or None,
        spec.api_version,
        tuple(spec.headers.items()),
        inject_stream_usage=spec.stream_usage == "inject",
    )
    return Provider(
        name=name,
        kind=spec.kind,
        adapter=adapter,
        settings=settings,
        system=spec.provider_name or adapter.provider_name,
        host=parts.hostname,
        port=port or (443 if parts.scheme == "https" else 80),
        timeouts=spec.timeouts or default_timeouts,
        propagate_trace=spec.propagate_trace,
    )


#: One DNS label, as sent (IDNA): `_` too, which Docker and Compose service names use.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_BRACKETED = re.compile(r"\[[^\]]+\](?::[0-9]*)?")


def _valid_host(parts: SplitResult) -> bool:
    """A name whose labels DNS can carry, or an IP address. urlsplit has already
    refused a bracketed host that is no IPv6 address, but not text after the `]`
    (`http://[::1]x`), which it drops (`hostname` is lower-cased)."""
    host = parts.hostname or ""
    if ":" in host:
        return _BRACKETED.fullmatch(parts.netloc.rpartition("@")[2]) is not None
    name = host.encode("idna").decode("ascii") if not host.isascii() else host
    labels = name.removesuffix(".").split(".")
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _check_path_root(name: str, spec: ProviderConfig, parts: SplitResult) -> None:
    """The request path is appended to base_url, and for most kinds it already starts
    with the API's root (`/v1/chat/completions`): a base_url written the way
    OPENAI_BASE_URL is (`https://api.openai.com/v1`) would send `/v1/v1/...`."""
    root = ADAPTERS[spec.kind].path_root
    if root and parts.path.lower().endswith(root):
        kept = _shown(parts._replace(path=parts.path[: -len(root)]))
        raise ConfigError(
            f"providers.{name}.base_url: ends in {root}, and spangate appends the request "
            f"path, which for kind {spec.kind} already starts with {root}, so requests would "
            f"go to {root}{root}/...; drop the trailing {root}: {kept!r}"
        )


def _shown(parts: SplitResult) -> str:
    """The URL as an error may quote it: never its userinfo, query or fragment, which
    can carry secrets, even if a check that refuses them is ever moved after this one."""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _route(
    alias: str, spec: ModelConfig, providers: dict[str, Provider], prices: PriceTable
) -> Route:
    if alias == PASSTHROUGH_ROUTE:  # the route label of unaliased requests
        raise ConfigError(
            f"models.{alias}: this name is reserved: metrics label requests that no alias "
            f'serves spangate_route="{alias}", so this alias\'s series would merge with '
            "theirs; give the alias another name"
        )
    if not spec.targets:
        raise ConfigError(f"models.{alias}.targets: list at least one target")
    targets = []
    wires = set()
    for index, target in enumerate(spec.targets):
        path = f"models.{alias}.targets[{index}]"
        provider = providers.get(target.provider)
        if provider is None:
            known = ", ".join(sorted(providers))
            raise ConfigError(
                f"{path}.provider: unknown provider {target.provider!r} (known: {known})"
            )
        wires.add(provider.adapter.wire)
        targets.append(_target(provider, target, spec, prices))
    if len(wires) > 1:
        raise ConfigError(
            f"models.{alias}.targets: mixes OpenAI-format and Anthropic-format providers; "
            "spangate does not translate between formats, so one alias serves one format"
        )
    _check_duplicates(alias, spec)
    _check_weights(alias, spec)
    _check_policy(alias, spec)
    return Route(
        alias,
        tuple(targets),
        spec.strategy,
        spec.retry,
        tuple(spec.fallbacks),
        tuple(spec.context_fallbacks),
        spec.circuit,
        spec.hedge,
    )


def _target(
    provider: Provider, spec: TargetConfig, route: ModelConfig, prices: PriceTable
) -> Target:
    price = spec.price or prices.lookup(spec.model)
    cost = price.input + price.output if price is not None else None
    return Target(
        provider,
        spec.model,
        spec.weight,
        cost,
        spec.max_inflight,
        spec.timeouts or route.timeouts,
    )


def _check_ports(config: Config) -> None:
    ports = {
        "server.port": config.server.port,
        "telemetry.prometheus.port": config.telemetry.prometheus.port,
    }
    for key, port in ports.items():
        problem = port_problem(port) if port is not None else None
        if problem is not None:
            raise ConfigError(f"{key}: {problem}")


def port_problem(port: int) -> str | None:
    """What is wrong with a listen port (the config's and --port's), or None."""
    if 0 <= port <= 65535:
        return None
    return f"must be between 0 and 65535 (0 = any free port), got {port}"


def _check_duplicates(alias: str, spec: ModelConfig) -> None:
    # A target listed twice shares one circuit and one x-spangate-target label with its
    # twin; what the operator wants from that is a same-target retry, which has backoff.
    first: dict[tuple[str, str], int] = {}
    for index, target in enumerate(spec.targets):
        seen = first.setdefault((target.provider, target.model), index)
        if seen != index:
            raise ConfigError(
                f"models.{alias}.targets[{index}]: the same target as targets[{seen}] "
                f"({target.provider}/{target.model}); list it once, and use "
                "retry.same_target to try it again"
            )


def _check_weights(alias: str, spec: ModelConfig) -> None:
    # Weight 0 means "never first": with every weight 0 the strategy has nothing to weigh.
    if spec.strategy == "weighted" and all(t.weight == 0 for t in spec.targets):
        raise ConfigError(
            f"models.{alias}.targets: every target has weight 0, so strategy weighted has "
            "nothing to pick by; give at least one target a weight above 0"
        )


def _check_policy(alias: str, spec: ModelConfig) -> None:
    retry = spec.retry
    if not 0 <= spec.circuit.error_rate <= 1:
        raise ConfigError(
            f"models.{alias}.circuit.error_rate: must be between 0 and 1 (a fraction of "
            f"requests, e.g. 0.5; 1 never opens on rate), got {spec.circuit.error_rate}"
        )
    overlap = sorted({"caller_fault"} & set(retry.same_target + retry.next_target))
    if overlap:
        raise ConfigError(
            f"models.{alias}.retry: caller_fault is never retried (the request itself is wrong)"
        )
    hedge = spec.hedge
    if hedge is not None and hedge.after_s is None and hedge.percentile is None:
        raise ConfigError(f"models.{alias}.hedge: set after_s, percentile, or both")
    if hedge is not None and hedge.percentile is not None and not 0 < hedge.percentile < 1:
        raise ConfigError(
            f"models.{alias}.hedge.percentile: must be between 0 and 1 (exclusive), e.g. 0.95"
        )


_FORMAT_NAMES: dict[str, str] = {"openai": "OpenAI", "anthropic": "Anthropic"}


def _check_alias_references(config: Config, routes: dict[str, Route]) -> None:
    for alias, spec in config.models.items():
        for key in ("fallbacks", "context_fallbacks"):
            for index, name in enumerate(getattr(spec, key)):
                path = f"models.{alias}.{key}[{index}]"
                if name not in config.models:
                    raise ConfigError(
                        f"{path}: unknown alias {name!r} "
                        f"(known: {', '.join(sorted(config.models))})"
                    )
                if name == alias:
                    raise ConfigError(f"{path}: an alias cannot fall back to itself")
                _check_same_wire(path, routes[alias], routes[name])


def _check_same_wire(path: str, source: Route, fallback: Route) -> None:
    """A fallback replays the client's body as sent: it must be a body the fallback's
    providers understand. Checked per edge, so every chain of fallbacks holds too."""
    have, got = _wire(source), _wire(fallback)
    if have != got:
        raise ConfigError(
            f"{path}: alias {fallback.alias!r} serves the {_FORMAT_NAMES[got]} format but "
            f"{source.alias!r} serves the {_FORMAT_NAMES[have]} format, and spangate does "
            "not translate request bodies between formats; fall back to an alias with "
            f"{_FORMAT_NAMES[have]}-format targets instead"
        )


def _wire(route: Route) -> str:
    # _route has already refused an alias whose targets mix formats.
    return route.targets[0].provider.adapter.wire


def _check_shared_circuits(routes: dict[str, Route]) -> None:
    """A target has one breaker, shared by every alias that names it (one state in
    /spangate/status and in `spangate_circuit_open{spangate_target}`). Were their
    `circuit` settings allowed to differ, whichever alias was requested first would set
    them for all; so they must agree, and the later alias is the one reported."""
    first: dict[str, tuple[Route, int]] = {}
    for route in routes.values():
        for index, target in enumerate(route.targets):
            owner, owner_index = first.setdefault(target.label, (route, index))
            if owner.circuit != route.circuit:
                raise ConfigError(
                    f"models.{route.alias}.circuit: differs from models.{owner.alias}.circuit, "
                    f"and both aliases name target {target.label} (models.{route.alias}."
                    f"targets[{index}], models.{owner.alias}.targets[{owner_index}]); a target "
                    "has one circuit breaker shared by every alias that names it, so give "
                    "both aliases the same circuit settings"
                )


def _check_key_origins(routes: dict[str, Route]) -> None:
    """A provider without `api_key` gets the key the client sent (providers/base.py
    `headers`), and that key is meant for one provider. An alias whose attempts,
    fallbacks included, could send it to two origins would hand one vendor's key to
    another on failover, so that is refused. Own targets are checked for every alias
    first, so a bad alias is reported at its own key, not at one that falls back to it."""
    for route in routes.values():
        _check_origins(route, routes, follow=False)
    for route in routes.values():
        _check_origins(route, routes, follow=True)


def _check_origins(start: Route, routes: dict[str, Route], follow: bool) -> None:
    first: Provider | None = None
    queue: list[tuple[Route, str | None]] = [(start, None)]
    seen = {start.alias}
    for route, via in queue:
        for index, target in enumerate(route.targets):
            provider = target.provider
            if provider.settings.api_key is not None:
                continue
            if first is None:
                first = provider
            elif _origin(provider) != _origin(first):
                path = via or f"models.{start.alias}.targets[{index}]"
                raise ConfigError(_crossover_message(path, start, route, provider, first))
        for key in ("fallbacks", "context_fallbacks") if follow else ():
            for index, name in enumerate(getattr(route, key)):
                if name not in seen:
                    seen.add(name)
                    queue.append((routes[name], via or f"models.{start.alias}.{key}[{index}]"))


def _crossover_message(
    path: str, start: Route, route: Route, provider: Provider, first: Provider
) -> str:
    through = "" if route is start else f"through alias {route.alias!r}, "
    return (
        f"{path}: {through}a request to {start.alias!r} could send the API key the client "
        f"sent to provider {provider.name!r} ({_origin(provider).url}) as well as to provider "
        f"{first.name!r} ({_origin(first).url}), since neither sets api_key, and a client's key "
        f"is meant for one provider; set providers.{provider.name}.api_key (spangate then "
        "sends that key instead of the client's), or keep these providers in separate "
        "aliases that do not fall back to each other"
    )


def _origin(provider: Provider) -> Origin:
    return target_of(provider.settings.base_url).origin


def _defaults(providers: dict[str, Provider]) -> dict[Dialect, Provider]:
    defaults: dict[Dialect, Provider] = {}
    for provider in providers.values():
        dialect: Dialect = provider.kind  # type: ignore[assignment]  # kinds are dialects
        defaults.setdefault(dialect, provider)
    return defaults


def describe(runtime: RuntimeConfig) -> dict[str, Any]:
    """A secret-free summary for `check-config` and `/spangate/status`."""
    return {
        "providers": {
            name: {
                "kind": p.kind,
                "base_url": p.settings.base_url,
                "provider_name": p.system,
                "api_key": "configured" if p.settings.api_key else "forwarded from client",
            }
            for name, p in runtime.providers.items()
        },
        "models": {
            alias: {
                "strategy": route.strategy,
                "targets": [t.label for t in route.targets],
                "fallbacks": list(route.fallbacks),
            }
            for alias, route in runtime.routes.items()
        },
        "defaults": {dialect: p.name for dialect, p in runtime.defaults.items()},
    }
