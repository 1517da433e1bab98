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


#: Request codings aiohttp's server (3.13 and later: zstd) undoes before spangate reads
#: the body (one coding: a request with two Content-Encoding lines is refused, since
#: aiohttp's C and Python parsers undo different ones): spangate forwards the decoded
#: bytes, so that line goes.
#: aiohttp bounds the inflated body by server.max_body_bytes (client_max_size). br and
#: zstd need the Brotli and backports.zstd modules (spangate dependencies): without
#: them aiohttp refuses such a body with its own plain-text 400 before spangate sees it.
DECODED_REQUEST_CODINGS = frozenset({"gzip", "deflate", "br", "zstd"})


def forwardable(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Client headers that may go upstream: no hop-by-hop (including those the client's
    Connection header names), no spangate-own headers, and no Content-Encoding that
    aiohttp already undid (the body sent is the decoded one). Order (and, from a
    multidict, repeated headers) are kept."""
    out = _end_to_end(headers)
    if "content-encoding" in out:
        codings = out.getall("content-encoding")
        last = codings[-1]
        if last.isascii() and last.lower() in DECODED_REQUEST_CODINGS:
            del out["content-encoding"]
            for coding in codings[:-1]:  # several lines: only the last was undone
                out.add("Content-Encoding", coding)
    return out


def relayable(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Upstream response headers that may go back to the client (a Content-Encoding
    with them: the body is relayed as the provider encoded it)."""
    return _end_to_end(headers)


def _end_to_end(headers: Mapping[str, str]) -> CIMultiDict[str]:
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


def uncompressed(headers: CIMultiDict[str]) -> None:
    """Ask for the answer without a content coding: `Accept-Encoding: identity` in place
    of every value the client sent. For streams: spangate flushes, fails over on and reads
    a stream event by event, none of which it can do with compressed bytes, and on the
    loopback hop to the app compression saves nothing (it also batches tokens)."""
    headers.popall("accept-encoding", None)
    headers["Accept-Encoding"] = "identity"


def replace_auth(headers: CIMultiDict[str], name: str, value: str) -> None:
    """Drop every key the client sent and set the configured one."""
    for header in AUTH_HEADERS:
        headers.popall(header, None)
    headers[name] = value
