"""proxy/listeners.py: which listener hosts would collide on one port, decided over the
addresses they bind; and the lookup that finds those addresses."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.listeners import Address, bound, collision


def address(host: str) -> Address:
    """A literal address as an IP object; anything else a name that did not resolve."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return host


def addresses(*hosts: str) -> frozenset[Address]:
    return frozenset(address(host) for host in hosts)


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        (("127.0.0.1",), ("127.0.0.1",), "127.0.0.1"),
        (("0.0.0.0",), ("127.0.0.1",), "127.0.0.1"),
        (("127.0.0.1",), ("0.0.0.0",), "127.0.0.1"),
        (("::",), ("::1",), "::1"),
        (("0.0.0.0", "::"), ("::1",), "::1"),  # an empty host
        (("127.0.0.1", "::1"), ("::1",), "::1"),  # a name that resolved to both
        (("0.0.0.0",), ("db.internal",), "db.internal"),  # unresolved: may be any
        (("::",), ("db.internal",), "db.internal"),
        (("db.internal",), ("db.internal",), "db.internal"),
    ],
)
def test_addresses_that_meet_collide(
    first: tuple[str, ...], second: tuple[str, ...], shared: str
) -> None:
    """The same address, or a wildcard covering one of its family (or a name that did not
    resolve), collides; the answer is the narrower address, for the error message."""
    assert collision(addresses(*first), addresses(*second)) == address(shared)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("127.0.0.1",), ("127.0.0.2",)),
        (("::",), ("127.0.0.1",)),  # asyncio binds :: to IPv6 only
        (("0.0.0.0",), ("::1",)),
        (("127.0.0.1",), ("::1",)),
        (("db.internal",), ("cache.internal",)),
        (("127.0.0.1",), ()),
    ],
)
def test_addresses_apart_do_not_collide(first: tuple[str, ...], second: tuple[str, ...]) -> None:
    """Distinct addresses, a wildcard of the other family, or two names that did not
    resolve and differ: both listeners can bind the port."""
    assert collision(addresses(*first), addresses(*second)) is None


def test_bound_reads_addresses_as_written() -> None:
    """An address (bracketed IPv6 too) is itself; an empty host is both wildcards."""
    assert bound("127.0.0.1") == addresses("127.0.0.1")
    assert bound("[::1]") == bound("::1") == addresses("::1")
    assert bound("") == addresses("0.0.0.0", "::")


def test_bound_resolves_names() -> None:
    """A name binds what it resolves to: localhost a loopback address, in any case."""
    local = bound("localhost")
    assert local and all(not isinstance(a, str) and a.is_loopback for a in local)
    assert bound("LOCALHOST") == local


def test_a_name_that_does_not_resolve_stands_for_itself() -> None:
    """check-config may run where spangate's names do not resolve (.invalid never does,
    RFC 6761): the name is kept, lower case, and compared as written."""
    assert bound("Spangate.INVALID") == frozenset({"spangate.invalid"})
