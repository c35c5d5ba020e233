"""One file on a web server, read as a stream: a plain HTTP(S) GET (on aiohttp, ``web``).

Redirects are followed a bounded number of times (never from https down to http); TLS
certificates are verified unless the source says otherwise; the body is never buffered
whole. Credentials a URL carries (``user:password@``) are sent as Basic authentication to
the URL's own host only and never appear in a message, a log line or a ``repr``; neither
does the query string, which often carries signed tokens.

A request that could not be sent, timed out or met a 5xx is repeated, up to the source's
``retries`` failures in a row, after a short doubling pause (``web.Retries``). A body that
breaks off is asked for again from the byte it stopped at (``Range: bytes=N-`` with
``If-Range`` its strong ETag, else its Last-Modified), so a large template is not read
again from the start. Where that cannot be done safely the download starts over from its
first byte (``web.StartOver``; the reader throws away what it wrote), at most ``retries``
times: a server that answers the Range with the whole file (200: it ignores Ranges, or
the file changed), or with a part of another version or from another byte; one that says
it takes no Ranges (``Accept-Ranges: none``) or named no validator.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import BinaryIO
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from hyperv_agent.errors import TransferError
from hyperv_agent.hostfs.web import (
    Body,
    Get,
    Peer,
    Response,
    Resuming,
    Retries,
    StartOver,
    Transient,
    open_get,
)

__all__ = ["DEFAULT_RETRIES", "MAX_REDIRECTS", "HttpObject", "open_url"]

_LOG = logging.getLogger(__name__)

MAX_REDIRECTS = 5
#: Failures in a row a download may retry, and times it may start over (as S3's default).
DEFAULT_RETRIES = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REASON_CHARS = 80
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


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
    retries: int = DEFAULT_RETRIES  # failures in a row retried, and fresh starts; 0: none

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
             max_redirects: int = MAX_REDIRECTS,
             stop: threading.Event | None = None) -> BinaryIO:
    """The body of ``obj`` as a stream. Blocking: call it, and read it, from a worker thread.

    Up to ``max_redirects`` redirects are followed (again for each repeat). A refused
    connection, an unknown host, a timeout, an untrusted certificate, an HTTP error status
    or a body cut short raise TransferError with one line a human can act on (those a
    repeat may mend, after ``obj.retries`` repeats); ``stop`` set during a pause before a
    repeat raises Stopped. A read may raise StartOver: the body is then read again from
    its first byte. Nothing is written anywhere; a repeat is a new GET. Closing the stream
    closes the connection.
    """
    fetch = _Fetch(obj, Retries(obj.retries, stop), timeout_s, max_redirects)
    return fetch.whole(fetch.retries.attempt(lambda: fetch.follow({})))


class _Fetch:
    """The GETs of one download: the whole file, or the rest of it from a byte on."""

    def __init__(self, obj: HttpObject, retries: Retries, timeout_s: float,
                 max_redirects: int) -> None:
        self.obj, self.retries = obj, retries
        self.timeout_s, self.max_redirects = timeout_s, max_redirects

    def whole(self, response: Response) -> Body:
        """A stream of the file ``response`` (200) carries, resumed when it breaks off."""
        validator = _validator(response)
        ranges = response.headers.get("Accept-Ranges", "").strip().lower() != "none"
        size = response.length
        body = response.raw_body()

        def resume(offset: int, error: Transient) -> io.RawIOBase:
            if not ranges:
                return self._start_over(error, "the server takes no Range requests")
            if validator is None:
                return self._start_over(error, "the server named no ETag or Last-Modified "
                                               "to resume it by")
            _LOG.info("resuming %s at byte %d", self.obj.label, offset)
            rest = self.follow({"Range": f"bytes={offset}-", "If-Range": validator})
            if rest.status == 200:
                return self._start_over(error, "the server sent the whole file again (it "
                                               "ignores Ranges, or the file changed)", rest)
            why = _not_the_rest(rest, offset, size, validator)
            if why is not None:
                rest.close()
                return self._start_over(error, why)
            return rest.raw_body()

        return Body(Resuming(self.retries, body, resume), size)

    def _start_over(self, error: Transient, why: str,
                    response: Response | None = None) -> io.RawIOBase:
        try:
            self.retries.restart(error, why)
        except TransferError:
            if response is not None:
                response.close()
            raise
        if response is None:
            response = self.retries.attempt(lambda: self.follow({}))
        raise StartOver(why, self.whole(response))

    def follow(self, extra: dict[str, str]) -> Response:
        """The answer to a GET of the file with ``extra`` headers, redirects followed: 200,
        or 206 when a Range was asked for. A 5xx is a Transient; a 416 (the Range is past
        the end: the file changed) is a 206 of no use (``_not_the_rest``)."""
        current = self.obj
        for _ in range(self.max_redirects + 1):
            response = open_get(_get(current, self.timeout_s, extra))
            if response.status == 200 or ("Range" in extra and response.status in (206, 416)):
                return response
            location = response.headers.get("Location") \
                if response.status in _REDIRECTS else None
            message = None if location else _status_message(current, response)
            response.close()
            if message is not None:
                raise (Transient if response.status >= 500 else TransferError)(message)
            following = current.redirected(location or "")
            _LOG.info("%s redirects (HTTP %d) to %s", current.label, response.status,
                      following.label)
            current = following
        raise TransferError(f"{self.obj.label} redirects more than {self.max_redirects} "
                            "times; giving up")


def _validator(response: Response) -> str | None:
    """What an If-Range may name for the file ``response`` carries: its strong ETag, else
    its Last-Modified (a weak ETag may not be used so)."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified") or None


def _not_the_rest(response: Response, offset: int, size: int | None,
                  validator: str) -> str | None:
    """Why a 206 (or 416) answer to ``Range: bytes=<offset>-`` is not the rest of the file
    read so far, else None."""
    if response.status != 206:
        return f"the server refused the rest of the file (HTTP {response.status})"
    etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
    if (etag is not None and validator.startswith('"') and etag != validator) or \
            (modified is not None and not validator.startswith('"') and modified != validator):
        return "the file changed on the server"
    found = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if found is None or int(found[1]) != offset:
        return f"the server sent a part that does not start at byte {offset}"
    if size is not None and found[3] != "*" and int(found[3]) != size:
        return "the file changed size on the server"
    return None


def _get(obj: HttpObject, timeout_s: float, extra: Mapping[str, str]) -> Get:
    headers = {"Accept-Encoding": "identity", "User-Agent": "hyperv-agent", **extra}
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
