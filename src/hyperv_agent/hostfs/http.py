"""One file on a web server, read as a stream: a plain HTTP(S) GET (on aiohttp, ``web``).

Redirects are followed a bounded number of times (never from https down to http); TLS
certificates are verified unless the source says otherwise; the body is never buffered
whole. Credentials a URL carries (``user:password@``) are sent as Basic authentication to
the URL's own host only and never appear in a message, a log line or a ``repr``; neither
does the query string, which often carries signed tokens.
"""

from __future__ import annotations

import base64
import logging
import ssl
from dataclasses import dataclass, field, replace
from typing import BinaryIO
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from hyperv_agent.errors import TransferError
from hyperv_agent.hostfs.web import Get, Peer, Response, open_get

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
        response = open_get(_get(current, timeout_s))
        if response.status == 200:
            return response.body()
        location = response.headers.get("Location") if response.status in _REDIRECTS else None
        message = None if location else _status_message(current, response)
        response.close()
        if message is not None:
            raise TransferError(message)
        following = current.redirected(location or "")
        _LOG.info("%s redirects (HTTP %d) to %s", current.label, response.status,
                  following.label)
        current = following
    raise TransferError(f"{obj.label} redirects more than {max_redirects} times; giving up")


def _get(obj: HttpObject, timeout_s: float) -> Get:
    headers = {"Accept-Encoding": "identity", "User-Agent": "hyperv-agent"}
    if obj.credentials is not None:
        token = base64.b64encode(":".join(obj.credentials).encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    where = f"{obj.address} (for {obj.label})"
    peer = Peer(where, f"cannot resolve the host {obj.host} (for {obj.label})",
                "is the host and port right?", "does the server speak https?")
    return Get(f"{obj.scheme}://{obj.address}{obj.target}", headers,
               _tls_context(obj) if obj.https else None, obj.label, peer, timeout_s,
               connect_timeout_s=timeout_s)


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


def _status_message(obj: HttpObject, response: Response) -> str:
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
