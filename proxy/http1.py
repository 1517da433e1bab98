"""HTTP/1.1 requests as bytes, and the origin a URL names: pure, for the upstream client.

spangate writes its upstream requests itself (see connections.py for why). A request
head carries exactly the headers the adapter built, plus the two a client must set:
Host and, when there is a body, Content-Length. Header lines are refused when a name or
value holds CR, LF or NUL: one of those would let a value start a header (or a request)
of its own.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import quote, urlsplit

_DEFAULT_PORT = {"http": 80, "https": 443}
#: Bytes a request-target may hold as they are (RFC 9112 §3.2: visible ASCII).
_NOT_VISIBLE = re.compile(r"[^\x21-\x7e]")
#: Methods whose requests always state a length, even zero (as clients commonly do).
_SENDS_LENGTH = frozenset({"POST", "PUT", "PATCH"})


class Origin(NamedTuple):
    """Where connections go: one keep-alive pool per origin."""

    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> str:
        host = self._bracketed
        return host if _DEFAULT_PORT[self.scheme] == self.port else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """`scheme://host:port`: the origin as a message names it."""
        return f"{self.scheme}://{self._bracketed}:{self.port}"

    @property
    def _bracketed(self) -> str:
        # An IPv6 address is written in brackets wherever a port may follow it.
        return f"[{self.host}]" if ":" in self.host else self.host


class Target(NamedTuple):
    origin: Origin
    #: The request-target: path and query, as sent on the request line.
    target: str


class UnsafeHeader(ValueError):
    """A header name or value that would break the request head."""

    def __init__(self, name: str) -> None:
        super().__init__(f"header {name!r} holds a line break or NUL")
        self.name = name


@functools.lru_cache(maxsize=1024)
def target_of(url: str) -> Target:
    """The origin and request-target of an http(s) URL (validated at config load)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    path = parts.path or "/"
    target = f"{path}?{parts.query}" if parts.query else path
    if _NOT_VISIBLE.search(target):
        # Already-escaped bytes stay as they are; only what may not appear is escaped.
        target = quote(target, safe="".join(map(chr, range(0x21, 0x7F))))
    host = parts.hostname
    if not host.isascii():
        host = host.encode("idna").decode("ascii")  # what DNS, SNI and Host all carry
    origin = Origin(scheme, host, parts.port or _DEFAULT_PORT[scheme])
    return Target(origin, target)


def request_head(
    method: str,
    target: Target,
    headers: Iterable[tuple[str, str]],
    body_length: int,
) -> bytes:
    """Request line and header block, ending with the blank line."""
    lines = [f"{method} {target.target} HTTP/1.1\r\nHost: {target.origin.host_header}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers)
    if body_length or method in _SENDS_LENGTH:
        lines.append(f"Content-Length: {body_length}\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    # Every line ends in CRLF and none holds another: one count each, in C, instead of
    # a search per header.
    if head.count("\n") != len(lines) + 1 or head.count("\r") != len(lines) + 1 or "\0" in head:
        raise UnsafeHeader(_first_unsafe(headers))
    return head.encode("utf-8", "surrogateescape")


def _first_unsafe(headers: Iterable[tuple[str, str]]) -> str:
    for name, value in headers:
        if breaks_line(name) or breaks_line(value):
            return name
    return "request line"


def breaks_line(text: str) -> bool:
    """True when `text` holds CR, LF or NUL: on a request head it would end its line."""
    return "\r" in text or "\n" in text or "\0" in text
