"""Header policy at both hops: what never crosses the proxy, whatever its spelling."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.headers import forwardable, relayable


def _proxy(*items: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(items))


def test_end_to_end_headers_pass_in_order_with_their_repeats() -> None:
    """Everything that is not hop-by-hop or spangate's own goes on unchanged: order,
    spelling and repeated headers (two Accept lines stay two)."""
    headers = _proxy(
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        ("X-Request-Id", "r1"),
        ("accept", "application/json"),
        ("X-Spangate", "not ours: no dash after the prefix"),
    )
    assert list(forwardable(headers).items()) == list(headers.items())


def test_hop_by_hop_and_connection_listed_headers_are_dropped_in_any_case() -> None:
    """RFC 9110 §7.6.1: the fixed hop-by-hop set, and every header any Connection line
    names (several Connection lines, odd spacing and case), never cross the proxy."""
    headers = _proxy(
        ("HOST", "127.0.0.1"),
        ("Connection", "keep-alive, X-Hop-One"),
        ("connection", " x-hop-two ,"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("content-length", "12"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic x"),
        ("Expect", "100-continue"),
        ("x-hop-one", "1"),
        ("X-HOP-TWO", "2"),
        ("X-Kept", "yes"),
    )
    assert list(forwardable(headers).items()) == [("X-Kept", "yes")]


def test_spangate_own_headers_are_never_forwarded() -> None:
    """x-spangate-* (routing overrides) stop at spangate, however they are spelled."""
    headers = _proxy(
        ("X-Spangate-Route", "fast"),
        ("x-spangate-target", "a"),
        ("X-SPANGATE-ANYTHING", "z"),
        ("Authorization", "Bearer k"),
    )
    assert list(forwardable(headers).items()) == [("Authorization", "Bearer k")]


def test_response_headers_follow_the_same_rule_and_plain_dicts_work() -> None:
    """The provider's answer is filtered by the same rule; a plain mapping is accepted."""
    relayed = relayable({"Content-Length": "9", "Connection": "close", "X-Ratelimit": "5"})
    assert list(relayed.items()) == [("X-Ratelimit", "5")]


def test_a_request_coding_aiohttp_undid_is_not_forwarded_but_a_response_keeps_its_own() -> None:
    """aiohttp's server inflates a gzip/deflate request body (the last Content-Encoding
    line, any case), so that label leaves the forwarded headers; a coding it does not
    undo (x-gzip) stays with the bytes it labels, and a response's coding is relayed."""
    assert "Content-Encoding" not in forwardable(_proxy(("Content-Encoding", "GZip")))
    assert "Content-Encoding" not in forwardable(_proxy(("content-encoding", "deflate")))
    kept = forwardable(_proxy(("Content-Encoding", "x-gzip")))
    assert kept.getall("Content-Encoding") == ["x-gzip"]
    stacked = forwardable(_proxy(("Content-Encoding", "deflate"), ("Content-Encoding", "gzip")))
    assert stacked.getall("Content-Encoding") == ["deflate"]
    assert relayable(_proxy(("Content-Encoding", "gzip")))["Content-Encoding"] == "gzip"
