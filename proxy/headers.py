"""Header policy for both hops: what never crosses the proxy, and which headers are keys."""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict

#: RFC 9110 §7.6.1 connection-specific headers, plus those a proxy must set itself.
HOP_BY_HOP = frozenset(
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


#: Checked one by one against the copy: a dozen C lookups beat lower-casing every header.
_HOP_BY_HOP_NAMES = tuple(sorted(HOP_BY_HOP))
_OWN_PREFIX_LEN = len(_OWN_PREFIX)


def forwardable(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Client headers that may go upstream: no hop-by-hop (including those the client's
    Connection header names), no spangate-own headers. Order (and, from a multidict,
    repeated headers) are kept."""
    out = CIMultiDict(headers)
    listed = out.getall("connection", ())
    for name in _HOP_BY_HOP_NAMES:
        if name in out:
            del out[name]
    for value in listed:
        for token in value.split(","):
            out.popall(token.strip(), None)
    own = [name for name in out if name[:_OWN_PREFIX_LEN].lower() == _OWN_PREFIX]
    for name in own:
        out.popall(name, None)
    return out


def relayable(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Upstream response headers that may go back to the client."""
    return forwardable(headers)


def replace_auth(headers: CIMultiDict[str], name: str, value: str) -> None:
    """Drop every key the client sent and set the configured one."""
    for header in AUTH_HEADERS:
        headers.popall(header, None)
    headers[name] = value
