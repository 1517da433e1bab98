"""Whether /metrics' own listener would need the main listener's port on an address both
bind: a pure decision over the addresses each host binds, apart from the name lookup
(`bound`) that finds them.

Addresses are compared as Linux binds them through asyncio's create_server: a name binds
every address it resolves to, an empty host 0.0.0.0 and `::`, and `::` is bound IPv6 only
(asyncio sets IPV6_V6ONLY), so it shares no port with an IPv4 address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from proxy.config import Config, ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: An address a listener binds; a str is a name that did not resolve where it was checked.
Address = IPAddress | str

_EVERY = frozenset({ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")})


def check_listeners(config: Config, workers: int) -> None:
    """/metrics' own listener (telemetry.prometheus.port; worker i of `workers` on port + i)
    must not need the main listener's port on an address both bind: that would only fail
    at start, as a bind error. Called again by `serve` with --port and --workers applied.
    Hosts are resolved only when the ports meet."""
    server, prometheus = config.server, config.telemetry.prometheus
    if not prometheus.enabled or not prometheus.port or not server.port:
        return  # no own listener, or port 0: the system picks a free one
    worker = server.port - prometheus.port
    if not 0 <= worker < max(workers, 1):
        return
    metrics_host = prometheus.host or server.host
    shared = collision(bound(metrics_host), bound(server.host))
    if shared is None:
        return
    where = _where(shared, server.host, metrics_host)
    if worker == 0:
        raise ConfigError(
            f"telemetry.prometheus.port: {server.port} is server.port too, on an address "
            f"both listeners bind (telemetry.prometheus.host, default server.host){where}, "
            "so /metrics' own listener could not open; pick another port, or remove "
            "telemetry.prometheus.port to serve /metrics on the main listener"
        )
    raise ConfigError(
        f"telemetry.prometheus.port: with {workers} workers, worker {worker} would serve "
        f"/metrics on port {server.port} (telemetry.prometheus.port + {worker}), which is "
        f"server.port, on an address both listeners bind{where}; worker i takes "
        f"telemetry.prometheus.port + i, so keep ports {prometheus.port} to "
        f"{prometheus.port + workers - 1} clear of server.port"
    )


def collision(first: Iterable[Address], second: Iterable[Address]) -> Address | None:
    """An address that listeners binding `first` and `second` would both hold on one port
    (the narrower of the two where a wildcard covers the other), or None. Pure."""
    others = tuple(second)
    for a in first:
        for b in others:
            if a == b or _covers(a, b):
                return b
            if _covers(b, a):
                return a
    return None


def _covers(wildcard: Address, other: Address) -> bool:
    """0.0.0.0 and `::` are every address of their own family, and a name that did not
    resolve (it may resolve to either)."""
    if not isinstance(wildcard, IPAddress) or not wildcard.is_unspecified:
        return False
    return isinstance(other, str) or other.version == wildcard.version


def bound(host: str) -> frozenset[Address]:
    """The addresses a listener on `host` binds, as asyncio finds them (getaddrinfo with
    AI_PASSIVE): an address as written, both wildcards for an empty host, what a name
    resolves to. A name that does not resolve here (check-config may run away from where
    spangate serves) stands for itself, compared as written."""
    if host == "":
        return _EVERY
    try:
        return frozenset({ipaddress.ip_address(host.strip("[]"))})
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return frozenset({host.lower()})
    found: set[Address] = set()
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            found.add(ipaddress.ip_address(sockaddr[0]))
    return frozenset(found) or frozenset({host.lower()})


def _where(shared: Address, server_host: str, metrics_host: str) -> str:
    """How hosts written differently meet (nothing to add where they are the same)."""
    if server_host == metrics_host or isinstance(shared, str):
        return ""
    return f", {shared} (server.host {server_host!r}, telemetry.prometheus.host {metrics_host!r})"
