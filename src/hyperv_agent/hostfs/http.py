"""One file on a web server, read as a stream: a plain HTTP(S) GET.

Redirects are followed a bounded number of times (never from https down to http); TLS
certificates are verified unless the source says otherwise; the body is never buffered
whole. Credentials a URL carries (``user:password@``) are sent as Basic authentication to
the URL's own host only and never appear in a message, a log line or a ``repr``; neither
does the query string, which often carries signed tokens.
"""

from __future__ import annotations

import base64
import http.client
import io
import logging
import socket
import ssl
from dataclasses import dataclass, field, replace
from typing import BinaryIO
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from hyperv_agent.errors import TransferError
from hyperv_agent.hostfs.api import COPY_CHUNK_BYTES

__all__ = ["MAX_REDIRECTS", "HttpObject", "open_url"]

_LOG = logging.getLogger(__name__)

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REASON_CHARS = 80


@dataclass(frozen=True)
class HttpObject:
    """Where one file lives on a web server and how to reach it."""

    host: str
    target: str  # the request target: the URL's path (as sent) plus ``?query``
    https: bool = True
    port: int | None = None
    verify_tls: bool = True  # False: any certificate is accepted (lab servers only)
    ca_file: str | None = None  # trust these certificates instead of the system's
    credentials: tuple[str, str] | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str, *, verify_tls: bool = True,
                 ca_file: str | None = None) -> HttpObject:
        """The source an ``http://`` or ``https://`` URL names; TransferError for any
        other URL (the message never quotes credentials or the query)."""
        parts = _split(url)
        credentials = None
        if parts.username is not None:
            credentials = (unquote(parts.username), unquote(parts.password or ""))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(host=parts.hostname or "", target=target, https=parts.scheme == "https",
                   port=parts.port, verify_tls=verify_tls, ca_file=ca_file,
                   credentials=credentials)

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"

    @property
    def address(self) -> str:
        """``host[:port]`` as the URL gives it (the port only when not the default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        shown = self.port is not None and self.port != _DEFAULT_PORTS[self.scheme]
        return f"{host}:{self.port}" if shown else host

    @property
    def label(self) -> str:
        """How messages name the file: the URL without credentials and query."""
        return f"{self.scheme}://{self.address}{self.target.partition('?')[0]}"

    @property
    def name(self) -> str:
        """The last segment of the URL's path, decoded (``t.vhd.bz2``)."""
        return unquote(self.target.partition("?")[0].rstrip("/").rpartition("/")[2])

    def redirected(self, location: str) -> HttpObject:
        """The source a ``Location`` header points at, relative to this one. Credentials
        go along only to the same host; https never downgrades to http."""
        base = f"{self.scheme}://{self.address}{self.target}"
        moved = HttpObject.from_url(urljoin(base, location), verify_tls=self.verify_tls,
                                    ca_file=self.ca_file)
        if self.https and not moved.https:
            raise TransferError(f"{self.label} redirects to plain http ({moved.label}); "
                                "refusing to leave https")
        same_host = (moved.host.casefold(), moved.port) == (self.host.casefold(), self.port)
        if same_host and moved.credentials is None:
            moved = replace(moved, credentials=self.credentials)
        return moved


def _split(url: str) -> SplitResult:
    text = url.strip()
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme not in _DEFAULT_PORTS:
        raise TransferError(f"{scheme or 'a URL without a scheme'} is not http or https")
    try:
        parts = urlsplit(text)
        _ = parts.port  # ValueError for a port that is not a number in range
    except ValueError:
        raise TransferError(f"the {scheme} URL has a malformed host or port") from None
    if not parts.hostname:
        raise TransferError(f"the {scheme} URL names no host")
    if any(ch.isspace() or ord(ch) < 32 for ch in parts.path + parts.query):
        raise TransferError(f"the {scheme} URL holds spaces or control characters")
    return parts


def open_url(obj: HttpObject, timeout_s: float = 30.0,
             max_redirects: int = MAX_REDIRECTS) -> BinaryIO:
    """The body of ``obj`` as a stream. Blocking: call it, and read it, from a worker thread.

    Up to ``max_redirects`` redirects are followed. A refused connection, an unknown
    host, a timeout, an untrusted certificate, an HTTP error status or a body cut short
    raise TransferError with one line a human can act on. Nothing is written anywhere; a
    repeat is a new GET. Closing the stream closes the connection.
    """
    current = obj
    for _ in range(max_redirects + 1):
        connection, response = _get(current, timeout_s)
        if response.status == 200:
            return io.BufferedReader(ResponseBody(current.label, connection, response),
                                     COPY_CHUNK_BYTES)
        location = response.getheader("Location") if response.status in _REDIRECTS else None
        message = None if location else _status_message(current, response)
        connection.close()
        if message is not None:
            raise TransferError(message)
        following = current.redirected(location or "")
        _LOG.info("%s redirects (HTTP %d) to %s", current.label, response.status,
                  following.label)
        current = following
    raise TransferError(f"{obj.label} redirects more than {max_redirects} times; giving up")


def _get(obj: HttpObject, timeout_s: float) -> tuple[http.client.HTTPConnection,
                                                     http.client.HTTPResponse]:
    connection = _connection(obj, timeout_s)
    headers = {"Accept-Encoding": "identity", "User-Agent": "hyperv-agent"}
    if obj.credentials is not None:
        token = base64.b64encode(":".join(obj.credentials).encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        connection.request("GET", obj.target, headers=headers)
        return connection, connection.getresponse()
    except (OSError, http.client.HTTPException) as error:
        connection.close()
        raise TransferError(_connect_message(obj, error, timeout_s)) from None


def _connection(obj: HttpObject, timeout_s: float) -> http.client.HTTPConnection:
    if not obj.https:
        return http.client.HTTPConnection(obj.host, obj.port, timeout=timeout_s)
    return http.client.HTTPSConnection(obj.host, obj.port, timeout=timeout_s,
                                       context=_tls_context(obj))


def _tls_context(obj: HttpObject) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=obj.ca_file)
    except (OSError, ssl.SSLError) as error:
        raise TransferError(f"cannot load the CA certificates {obj.ca_file}: "
                            f"{getattr(error, 'strerror', None) or error}") from None
    if not obj.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _connect_message(obj: HttpObject, error: BaseException, timeout_s: float) -> str:
    where = f"{obj.address} (for {obj.label})"
    if isinstance(error, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused (is the host and port right?)"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host {obj.host} (for {obj.label})"
    if isinstance(error, TimeoutError):
        return f"{where} did not answer within {timeout_s:g} s"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the TLS certificate of {where} is not trusted ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        return f"TLS with {where} failed ({error.reason}); does the server speak https?"
    if isinstance(error, OSError):
        return f"cannot reach {where}: {error.strerror or type(error).__name__}"
    return f"{where} sent no valid HTTP answer ({type(error).__name__})"


def _status_message(obj: HttpObject, response: http.client.HTTPResponse) -> str:
    status = f"HTTP {response.status} {_one_line(response.reason)}".rstrip()
    if response.status in _REDIRECTS:
        return f"{obj.label} redirects ({status}) without saying where to"
    if response.status == 404:
        return f"{obj.label} does not exist on the server ({status})"
    if response.status in (401, 403):
        return f"the server refused access to {obj.label} ({status}; check the credentials)"
    if response.status >= 500:
        return f"the server failed to send {obj.label} ({status}); try again later"
    return f"the server refused {obj.label} ({status})"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())[:_REASON_CHARS]


class ResponseBody(io.RawIOBase):
    """The response body; a connection that closes before Content-Length is an error."""

    def __init__(self, label: str, connection: http.client.HTTPConnection,
                 response: http.client.HTTPResponse) -> None:
        super().__init__()
        self._label = label
        self._connection = connection
        self._response = response
        self._expected = response.length
        self._received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            count = self._response.readinto(buffer)
        except (OSError, http.client.HTTPException) as error:
            raise TransferError(f"reading {self._label} failed after {self._received} "
                                f"bytes: {reason(error)}") from None
        self._received += count
        if count == 0 and len(buffer) and self._expected is not None \
                and self._received < self._expected:
            raise TransferError(f"the server closed the connection after {self._received} "
                                f"of {self._expected} bytes of {self._label}")
        return count

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._connection.close()
        super().close()


def reason(error: BaseException) -> str:
    """Why reading a response failed, in a few words."""
    if isinstance(error, TimeoutError):
        return "the server stopped sending (timed out)"
    if isinstance(error, http.client.IncompleteRead):
        return "the body ended early"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__
