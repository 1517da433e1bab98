"""The HTTP transport under the SDK's OTLP/HTTP exporters: one keep-alive connection
on the standard library's `http.client`.

The SDK's default transport is `requests`: importing it costs ~5 MB of a sidecar's
resident memory, and each export runs its session, adapter and urllib3 pool in
Python. Everything above the transport (endpoint, headers, compression, retries
with Retry-After, timeouts) stays the SDK's. When `requests` would do something
this transport does not (an HTTP proxy from the environment, a credential
provider, credentials from the URL or .netrc), spangate leaves the SDK's
transport in place: see `applies`.
"""

from __future__ import annotations

import contextlib
import http.client
import inspect
import netrc
import os
import select
import socket
import ssl
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from instrumentation.otlpresponse import Rejected, rejected

# The SDK's transport seam is a private module (opentelemetry-exporter-http-transport,
# with the OTLP/HTTP exporter 1.45): where a version moved or dropped it, spangate
# leaves the SDK's own transport in place (`transport_kwargs`) rather than fail.
if TYPE_CHECKING:
    from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport
else:
    try:
        from opentelemetry.exporter.http.transport._base import (
            BaseHTTPResult,
            BaseHTTPTransport,
        )
    except ImportError:  # stand-ins: the classes below still define, and are never built
        BaseHTTPResult = BaseHTTPTransport = object
#: Whether the seam imported; without it `transport_kwargs` leaves the SDK's transport.
SEAM = BaseHTTPTransport is not object

#: The SDK's env names for TLS material: (signal-specific, general) per setting.
_TLS_ENV = ("CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE")
_CREDENTIAL_PROVIDERS = "_OTEL_PYTHON_EXPORTER_OTLP_HTTP_"
#: Where `requests` looks for a .netrc when NETRC is not set, in order.
_NETRC_FILES = (".netrc", "_netrc")
#: A CA file, or whether to verify at all (as `requests` takes it).
Verify = bool | str
#: A client certificate file, or (certificate, key).
Cert = str | tuple[str, str] | None


_Connection = http.client.HTTPConnection


class _ConnectFailed(ConnectionError):
    """The connection could not be opened (refused, unresolvable, or timed out while
    connecting): a connection error the SDK retries, unlike a timeout mid-response."""


class _Stale(ConnectionError):
    """A kept-alive connection the collector had closed (an idle timeout, a restart):
    a connection error, so the SDK's at-once retry goes out on a new one."""


#: What a request on a reused connection meets when the collector closed it: a reset,
#: an empty answer (RemoteDisconnected is a BadStatusLine), or, over TLS, an EOF.
_STALE_SIGNS = (ConnectionError, http.client.BadStatusLine, ssl.SSLEOFError, ssl.SSLZeroReturnError)


@dataclass(frozen=True, slots=True)
class Result(BaseHTTPResult):
    body: bytes = b""
    header_map: Mapping[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        return self.body

    def headers(self) -> Mapping[str, str]:
        return self.header_map


class Transport(BaseHTTPTransport):
    """One connection, reused while the collector keeps it open.

    An exporter's requests come from one thread at a time (its export thread). `close`
    (the SDK's shutdown) may come from another: it lets a request in flight finish,
    as `requests` does, and the connection is closed when that request ends; no
    request starts after it. The lock guards only those two flags."""

    def __init__(
        self,
        *,
        verify: Verify = True,
        cert: Cert = None,
        on_rejected: Rejected | None = None,
    ) -> None:
        self._verify = verify
        self._cert = cert
        self._on_rejected = on_rejected
        self._context: ssl.SSLContext | None = None
        self._connection: http.client.HTTPConnection | None = None
        self._origin: tuple[str, str, int] | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._busy = False

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        data: bytes | None = None,
    ) -> BaseHTTPResult:
        with self._lock:
            if self._closed:
                return Result(error=ConnectionAbortedError("the exporter is shut down"))
            self._busy = True
        try:
            return self._exchange(method, url, headers, timeout, data)
        finally:
            with self._lock:
                self._busy = False
                if self._closed:
                    self._drop()

    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None,
        timeout: float | None,
        data: bytes | None,
    ) -> BaseHTTPResult:
        reused = False
        try:
            scheme, host, port, target = _split(url)
            connection, reused = self._open(scheme, host, port, _seconds(timeout))
            connection.request(method, target, body=data, headers=headers or {})
            response = connection.getresponse()
            body = response.read()
        except Exception as error:  # a transport returns failures, never raises them
            self._drop()
            return Result(error=_reported(error, reused))
        if response.will_close:
            self._drop()
        if body and 200 <= response.status < 300:
            self._tell_rejected(body)
        # Lower-cased: the SDK looks up "retry-after".
        headers_in = {name.lower(): value for name, value in response.getheaders()}
        return Result(
            status_code=response.status, reason=response.reason, body=body, header_map=headers_in
        )

    def _tell_rejected(self, body: bytes) -> None:
        if self._on_rejected is None:
            return
        partial = rejected(body)
        if partial is not None:
            with contextlib.suppress(Exception):  # the export itself succeeded
                self._on_rejected(*partial)

    def _open(self, scheme: str, host: str, port: int, timeout: float) -> tuple[_Connection, bool]:
        """The connection to use, and whether it was kept from an earlier request."""
        connection = self._connection
        if connection is not None and self._origin == (scheme, host, port):
            sock = connection.sock
            # An idle connection the collector closed reads as ready (its EOF): a new
            # one now rather than a failed request (urllib3 checks the same way).
            if sock is not None and not _readable(sock):
                connection.timeout = timeout
                sock.settimeout(timeout)
                return connection, True
        self._drop()
        if scheme == "https":
            connection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=self._tls()
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.connect()
        except ssl.SSLError:
            raise  # a certificate problem: retrying at once will not mend it
        except OSError as error:
            raise _ConnectFailed(f"cannot connect to {host}:{port}: {error}") from error
        # Small requests (a metrics export) go out at once, not after a delayed ACK.
        assert connection.sock is not None
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._connection, self._origin = connection, (scheme, host, port)
        return connection, False

    def _tls(self) -> ssl.SSLContext:
        if self._context is None:
            ca = self._verify if isinstance(self._verify, str) else None
            # `requests` takes a directory of hashed certificates as well as a file.
            if ca is not None and os.path.isdir(ca):
                context = ssl.create_default_context(capath=ca)
            else:
                context = ssl.create_default_context(cafile=ca)
            if self._verify is False:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if isinstance(self._cert, tuple):
                context.load_cert_chain(self._cert[0], self._cert[1])
            elif self._cert:
                context.load_cert_chain(self._cert)
            self._context = context
        return self._context

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if not self._busy:
                self._drop()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def is_connection_error(self, exception: Exception | None) -> bool:
        # A reset or a keep-alive connection the collector closed (RemoteDisconnected
        # is a ConnectionResetError): the SDK retries these once at once.
        return isinstance(exception, ConnectionError | socket.gaierror)


def _split(url: str) -> tuple[str, str, int, str]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return scheme, parts.hostname, port, target


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: its EOF (or stray bytes, which
    would corrupt the next answer): either way it is not to be reused."""
    # poll, not select: select() refuses descriptors from 1024 up, which a busy
    # proxy's export sockets can be.
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _reported(error: Exception, reused: bool) -> Exception:
    """The error the SDK sees: a closed kept-alive connection as a connection error (it
    retries those at once), and no header value in a message (the SDK logs it)."""
    if reused and isinstance(error, _STALE_SIGNS):
        return _Stale(
            f"the collector had closed the kept-alive connection ({type(error).__name__})"
        )
    if _header_error(error):
        # http.client quotes the offending value, which may be a credential.
        return ValueError(
            "an OTLP header name or value is not valid in HTTP (a newline in it?): "
            "check OTEL_EXPORTER_OTLP_HEADERS and telemetry.otlp_headers"
        )
    return error


def _header_error(error: Exception) -> bool:
    """http.client's complaint about a header name or value: its ValueError, or the
    latin-1 encoding error of a value (a request line that is not ASCII is another)."""
    if isinstance(error, UnicodeEncodeError):
        return error.encoding == "latin-1"
    return isinstance(error, ValueError) and "header" in str(error).lower()


def _seconds(timeout: float | None) -> float:
    """A socket timeout: never None (blocking forever) and never 0 (non-blocking),
    which is what the SDK passes once its deadline has passed."""
    return 10.0 if timeout is None else max(timeout, 0.001)


def tls_files(signal: str, env: Mapping[str, str]) -> tuple[Verify, Cert]:
    """(verify, cert) for `signal` as the SDK and `requests` resolve them: the signal's
    variable, then the general one; a client certificate with a key is a pair."""

    def setting(name: str) -> str | None:
        return env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}") or env.get(
            f"OTEL_EXPORTER_OTLP_{name}"
        )

    ca, key, certificate = (setting(name) for name in _TLS_ENV)
    cert = (certificate, key) if certificate and key else certificate
    # `requests` reads these when no CA is given; without one either, the system's
    # trust store (SSL_CERT_FILE honoured), as for providers.
    ca = ca or env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
    return ca or True, cert


def applies(url: str, env: Mapping[str, str]) -> bool:
    """Whether this transport can stand in for `requests` at `url`: not when the
    environment routes it through an HTTP proxy (which `requests` honours), names a
    credential provider (a `requests` session the SDK loads), or the URL or a .netrc
    entry carries credentials for it."""
    if any(name.startswith(_CREDENTIAL_PROVIDERS) and value for name, value in env.items()):
        return False
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        return False  # `requests` sends them as Basic auth
    if _netrc_names(parts.hostname, env):
        return False  # so does it a .netrc entry for the host
    proxies = {
        name.lower()[: -len("_proxy")]: value
        for name, value in env.items()
        if name.lower().endswith("_proxy") and value
    }
    if parts.scheme.lower() not in proxies and "all" not in proxies:
        return True
    # In the standard library since 3.3, missing from typeshed.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return bool(bypass(parts.hostname or "", proxies))


def _netrc_names(host: str | None, env: Mapping[str, str]) -> bool:
    """Whether the .netrc file `requests` would read (NETRC, else ~/.netrc or
    ~/_netrc) has credentials for `host`, its `default` entry included. A file it
    cannot read or parse is one `requests` skips too."""
    if not host:
        return False
    named = env.get("NETRC")
    home = env.get("HOME") or os.path.expanduser("~")
    candidates = [named] if named is not None else [os.path.join(home, n) for n in _NETRC_FILES]
    paths = [os.path.expanduser(c) for c in candidates]
    path = next((p for p in paths if os.path.exists(p)), None)
    if path is None:
        return False
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError, UnicodeDecodeError):
        return False
    return bool(entry and any(entry))


def transport_kwargs(
    exporter: type[Any],
    signal: str,
    url: str | None,
    env: Mapping[str, str],
    on_rejected: Rejected | None = None,
) -> dict[str, Any]:
    """`_transport=Transport(...)` for an SDK exporter class that takes one (its seam
    since opentelemetry-exporter-otlp-proto-http 1.4x), or nothing: the SDK's own
    (also when the seam's base classes did not import: `SEAM`)."""
    if not SEAM or url is None or not applies(url, env):
        return {}
    if not _takes_transport(exporter):
        return {}
    verify, cert = tls_files(signal, env)
    return {"_transport": Transport(verify=verify, cert=cert, on_rejected=on_rejected)}


def _takes_transport(exporter: type[Any]) -> bool:
    """Whether some __init__ of `exporter`'s classes names `_transport` (spangate's
    subclasses pass their keywords through)."""
    return any(
        "_transport" in inspect.signature(init).parameters
        for init in (vars(cls).get("__init__") for cls in exporter.__mro__)
        if init is not None
    )
