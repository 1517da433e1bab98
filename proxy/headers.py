"""Header policy for both hops: what never crosses the proxy, and which headers are keys."""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict

#: RFC 9110 §7.6.1 connection-specific headers, plus those a proxy must set itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
    }
)

#: Every header that may carry a provider API key, in any dialect.
AUTH_HEADERS = ("authorization", "x-api-key", "api-key")

#: spangate's own request headers (routing overrides); never sent upstream.
_OWN_PREFIX = "x-spangate-"


def _listed_in_connection(value: str) -> frozenset[str]:
    return frozenset(token.strip().lower() for token in value.split(","))


def forwardable(headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """Client headers that may go upstream: no hop-by-hop, no spangate-own headers."""
    items = [(name, value, name.lower()) for name, value in headers]
    drop = _HOP_BY_HOP
    for _, value, lower in items:
        if lower == "connection":
            drop = drop | _listed_in_connection(value)
    return CIMultiDict(
        [
            (name, value)
            for name, value, lower in items
            if lower not in drop and not lower.startswith(_OWN_PREFIX)
        ]
    )


def relayable(headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """Upstream response headers that may go back to the client."""
    return forwardable(headers)


def replace_auth(headers: CIMultiDict[str], name: str, value: str) -> None:
    """Drop every key the client sent and set the configured one."""
    for header in AUTH_HEADERS:
        headers.popall(header, None)
    headers[name] = value
