"""Request heads and origins for the upstream client (proxy/http1.py): pure functions."""

from __future__ import annotations

import pytest

from proxy.http1 import Origin, UnsafeHeader, request_head, target_of


def test_request_head_has_host_length_and_headers_in_order() -> None:
    """Host (with a non-default port) first, the adapter's headers as given, then the length."""
    target = target_of("http://127.0.0.1:8080/v1/chat/completions")
    head = request_head("POST", target, [("B", "2"), ("a", "1"), ("a", "3")], 17)
    assert head == (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"B: 2\r\na: 1\r\na: 3\r\nContent-Length: 17\r\n\r\n"
    )


def test_default_port_is_left_out_of_host() -> None:
    """https on 443 (and http on 80) send the bare host name, as browsers and SDKs do."""
    head = request_head("GET", target_of("https://api.openai.com/v1/models"), [], 0)
    assert head == b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"


def test_post_without_body_states_zero_length() -> None:
    """A bodiless POST says Content-Length: 0 so the server does not wait for a body."""
    head = request_head("POST", target_of("http://h/x"), [], 0)
    assert b"Content-Length: 0\r\n" in head


def test_query_is_kept_and_ipv6_host_is_bracketed() -> None:
    target = target_of("http://[::1]:9000/deployments/d/chat?api-version=2024-10-21")
    assert target.origin == Origin("http", "::1", 9000)
    assert target.target == "/deployments/d/chat?api-version=2024-10-21"
    assert target.origin.host_header == "[::1]:9000"


def test_target_escapes_only_what_a_request_line_cannot_hold() -> None:
    """Spaces and non-ASCII are percent-encoded; existing escapes are left as they are."""
    target = target_of("http://h/v1/models/gpt 4o/é%2F")
    assert target.target == "/v1/models/gpt%204o/%C3%A9%2F"


@pytest.mark.parametrize(
    "header",
    [("X-Evil", "a\r\nInjected: 1"), ("X-Evil", "a\nb"), ("X-Nul", "a\0b"), ("X\r\nY", "v")],
)
def test_line_breaks_in_headers_are_refused(header: tuple[str, str]) -> None:
    """A CR, LF or NUL in a name or value would start a header of its own: refused, named."""
    with pytest.raises(UnsafeHeader) as caught:
        request_head("POST", target_of("http://h/x"), [("Ok", "fine"), header], 2)
    assert caught.value.name == header[0]


def test_international_host_name_goes_as_idna() -> None:
    """DNS, SNI and the Host header all carry the ASCII (IDNA) form of the name."""
    target = target_of("https://bücher.example/v1/x")
    assert target.origin.host == "xn--bcher-kva.example"
    assert target.origin.host_header == "xn--bcher-kva.example"


def test_only_http_urls_have_a_target() -> None:
    with pytest.raises(ValueError, match="not an http"):
        target_of("ftp://h/x")
