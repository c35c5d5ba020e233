"""One object of an S3-compatible store, read as a stream: a SigV4-signed GET (on aiohttp,
``web``).

Path-style URLs (``http(s)://endpoint/bucket/key``) work with AWS and with every
S3-compatible server a CloudStack image store points at. The request is signed with AWS
Signature Version 4 for a region: the one an AWS endpoint's host name carries
(``s3.eu-west-1.amazonaws.com``), else ``us-east-1``, as the AWS SDK that CloudStack's
own S3 client uses picks it; a store that names another region in its refusal
(``AuthorizationHeaderMalformed`` with a ``Region``: a bucket elsewhere, a MinIO or Ceph
server set to its own region) is asked once more, signed for that one. The body is never
buffered whole. Secret keys never appear in a message, a log line or a ``repr``.

The store's client settings (S3TO) are honoured as CloudStack's own S3 client (the AWS
SDK's ClientConfiguration) honours them: ``connectionTimeout`` and ``socketTimeout`` in
milliseconds (10 s and 50 s when not given, 0 for no limit), ``maxErrorRetry`` retries (3
when not given) of a request that could not be sent, timed out or met a 5xx, and
``useTCPKeepAlive``. A body that breaks off midway is resumed where it stopped (a Range
request for the same ETag), within the same retries; the count starts afresh once bytes
flow again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import logging
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import quote, urlsplit

from hyperv_agent.errors import TransferError
from hyperv_agent.hostfs.web import (
    Body,
    Get,
    Peer,
    Response,
    Resuming,
    Retries,
    Transient,
    open_get,
)

_LOG = logging.getLogger(__name__)

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
DEFAULT_REGION = "us-east-1"
EMPTY_PAYLOAD_SHA256 = hashlib.sha256(b"").hexdigest()
#: The AWS SDK's defaults, which CloudStack's S3 client keeps when S3TO leaves them null.
DEFAULT_CONNECT_TIMEOUT_MS = 10_000
DEFAULT_SOCKET_TIMEOUT_MS = 50_000
DEFAULT_MAX_ERROR_RETRY = 3
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_RETRY_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"})
_ERROR_BODY_BYTES = 64 * 1024
_WRONG_REGION = "AuthorizationHeaderMalformed"
_REGION = re.compile(r"[a-z]{2}(?:-[a-z0-9]+)+-\d{1,2}")  # eu-west-1, us-gov-west-1, ...
_AWS_HOST = re.compile(r"(?:[^.]+\.)*s3[.-](?:dualstack\.)?(?P<region>[a-z0-9-]+)"
                       r"\.amazonaws\.com(?:\.cn)?")


@dataclass(frozen=True)
class S3Object:
    """Where one object lives and the keys that may read it (``S3TO`` plus a key)."""

    endpoint: str  # [scheme://]host[:port], as S3TO.endPoint gives it
    bucket: str
    key: str
    access_key: str
    secret_key: str = field(repr=False)
    https: bool = True  # S3TO.httpsFlag; a scheme in ``endpoint`` wins over it
    region: str | None = None  # None: the endpoint's (``region_of``)
    connect_timeout_ms: int | None = None  # S3TO.connectionTimeout; None: 10 s; 0: no limit
    socket_timeout_ms: int | None = None  # S3TO.socketTimeout; None: 50 s; 0: no limit
    max_error_retry: int | None = None  # S3TO.maxErrorRetry; None (or < 0): 3
    tcp_keepalive: bool = False  # S3TO.useTCPKeepAlive

    @property
    def label(self) -> str:
        """How messages name the object: ``s3://endpoint/bucket/key``."""
        return f"s3://{self.endpoint}/{self.bucket}/{self.key}"


def open_object(obj: S3Object, stop: threading.Event | None = None) -> BinaryIO:
    """The body of ``obj`` as a stream. Blocking: call it, and read it, from a worker thread.

    A missing bucket or object, refused keys, an unreachable endpoint or a stream cut short
    (each after the retries ``obj`` allows, where a repeat may help) raise TransferError
    with one line a human can act on; ``stop`` set during a pause before a retry raises
    Stopped. Nothing is written anywhere; a repeat is a new GET. Closing the stream closes
    the connection. The stream's ``length`` is the object's size.
    """
    retries = obj.max_error_retry
    fetcher = _Fetcher(obj, Retries(DEFAULT_MAX_ERROR_RETRY if retries is None or retries < 0
                                    else retries, stop))
    response = fetcher.open()
    etag = response.headers.get("ETag")
    return Body(Resuming(fetcher.retries, response.raw_body(),
                         lambda offset, _error: fetcher.reopen(offset, etag)),
                response.length)


def _seconds(ms: int | None, default_ms: int) -> float | None:
    """A timeout as S3TO gives it (ms; None: the default; 0: none) in seconds."""
    if ms is None or ms < 0:
        ms = default_ms
    return ms / 1000 if ms else None


class _Fetcher:
    """GETs of one object, retried as ``maxErrorRetry`` allows (``retries``)."""

    def __init__(self, obj: S3Object, retries: Retries) -> None:
        self.obj = obj
        self.retries = retries
        self.region = obj.region or region_of(obj.endpoint)
        self._asked_region = False

    def open(self, offset: int = 0, etag: str | None = None) -> Response:
        """A response carrying the object from ``offset`` (200, or 206 for a Range)."""
        return self.retries.attempt(lambda: self._open_once(offset, etag))

    def reopen(self, offset: int, etag: str | None) -> io.RawIOBase:
        """The object's body from ``offset`` on (Range, If-Match ``etag``); a store that
        ignores the Range sends the whole object again, and the part already read is
        skipped."""
        label = self.obj.label
        _LOG.info("resuming %s at byte %d", label, offset)
        response = self._open_once(offset, etag)
        if response.status == 206:
            return response.raw_body()
        if etag and response.headers.get("ETag") not in (None, etag):
            response.close()
            raise TransferError(f"{label} changed while it was being read; nothing was "
                                "copied")
        body = response.raw_body()
        left = offset
        try:
            while left:
                skipped = len(body.read(min(left, 1 << 20)))
                if not skipped:
                    raise Transient(f"the store sent {label} shorter than before")
                left -= skipped
        except BaseException:  # broken off again while skipping: its connection goes too
            body.close()
            raise
        return body

    def _open_once(self, offset: int, etag: str | None) -> Response:
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if etag:
                headers["If-Match"] = etag
        response = _get(self.obj, self.region, headers)
        if response.status == 200 or (offset and response.status == 206):
            return response
        error = _error_fields(response)
        response.close()
        other = error.region if error.code == _WRONG_REGION else ""
        if other and other != self.region and not self._asked_region:
            _LOG.info("%s is in region %s, not %s; asking again", self.obj.label, other,
                      self.region)
            self.region, self._asked_region = other, True
            return self._open_once(offset, etag)
        if response.status == 412:
            raise TransferError(f"{self.obj.label} changed while it was being read; "
                                "nothing was copied")
        message = _status_message(self.obj, response, error)
        if response.status in _RETRY_STATUSES or error.code in _RETRY_CODES:
            raise Transient(message)
        raise TransferError(message)


def region_of(endpoint: str) -> str:
    """The region requests to ``endpoint`` are signed for: the one an AWS S3 host name
    carries (``s3.eu-west-1.amazonaws.com``, ``s3-eu-west-1.amazonaws.com``), else
    ``us-east-1`` (AWS's global endpoint, and what other S3 servers take by default)."""
    host = _bare_endpoint(endpoint).lower().rpartition("@")[2].partition(":")[0]
    found = _AWS_HOST.fullmatch(host)
    if found and _REGION.fullmatch(found["region"]):
        return found["region"]
    return DEFAULT_REGION


def _get(obj: S3Object, region: str, extra: Mapping[str, str]) -> Response:
    host, port = _host_and_port(obj.endpoint)
    path = object_path(obj.bucket, obj.key)
    headers = signed_headers(method="GET", host=_bare_endpoint(obj.endpoint), path=path,
                             headers=extra, payload_hash=UNSIGNED_PAYLOAD,
                             access_key=obj.access_key, secret_key=obj.secret_key,
                             region=region, when=dt.datetime.now(dt.UTC))
    headers["Accept-Encoding"] = "identity"  # unsigned: the body is taken as stored
    where = f"S3 endpoint {_bare_endpoint(obj.endpoint)}"
    https = _uses_https(obj)
    peer = Peer(where, f"cannot resolve the host of {where}",
                "is the endpoint and port right?", _tls_hint(obj, https))
    address = f"[{host}]" if ":" in host else host
    url = f"{'https' if https else 'http'}://{address}{f':{port}' if port else ''}{path}"
    return open_get(Get(url, headers, ssl.create_default_context() if https else None,
                        obj.label, peer,
                        _seconds(obj.socket_timeout_ms, DEFAULT_SOCKET_TIMEOUT_MS),
                        _seconds(obj.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS),
                        keepalive=obj.tcp_keepalive))


def _uses_https(obj: S3Object) -> bool:
    """Whether ``obj`` is read over https: as the endpoint's scheme says when it has one
    (``http://minio.lab:9000``; CloudStack's S3 client takes it over the https flag),
    else as ``https`` says."""
    scheme = _scheme(obj.endpoint)
    return obj.https if scheme is None else scheme == "https"


def _tls_hint(obj: S3Object, https: bool) -> str:
    """What to check when TLS fails: the setting https came from (the endpoint's scheme
    or httpsFlag)."""
    scheme = _scheme(obj.endpoint)
    if scheme is None:
        return "is httpsFlag right for this endpoint?"
    other = "http" if https else "https"
    return (f"the endpoint names {scheme}:// (it overrides httpsFlag); does the server "
            f"speak {scheme}, or should the endpoint say {other}://?")


def _scheme(endpoint: str) -> str | None:
    """The scheme ``endpoint`` starts with (http or https), else None."""
    text = endpoint.strip().lower()
    for scheme in ("https", "http"):
        if text.startswith(f"{scheme}://"):
            return scheme
    return None


def object_path(bucket: str, key: str) -> str:
    """The path-style request path, URI-encoded once per segment as S3 signs it."""
    return "/" + quote(bucket, safe="") + "/" + quote(key, safe="/~")


def signed_headers(*, method: str, host: str, path: str, headers: Mapping[str, str],
                   payload_hash: str, access_key: str, secret_key: str, region: str,
                   when: dt.datetime, service: str = "s3") -> dict[str, str]:
    """``headers`` plus Host, X-Amz-Date, X-Amz-Content-Sha256 and the SigV4 Authorization
    for a request without a query string."""
    stamp = when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = {"Host": host, **headers, "X-Amz-Date": stamp, "X-Amz-Content-Sha256": payload_hash}
    canonical = {name.lower(): " ".join(value.split()) for name, value in out.items()}
    names = ";".join(sorted(canonical))
    request = "\n".join([method, path, "",
                         *(f"{name}:{canonical[name]}" for name in sorted(canonical)),
                         "", names, payload_hash])
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(request.encode()).hexdigest()])
    key = _signing_key(secret_key, stamp[:8], region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                            f"SignedHeaders={names}, Signature={signature}")
    return out


def _signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _bare_endpoint(endpoint: str) -> str:
    text = endpoint.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
    return text.rstrip("/")


def _host_and_port(endpoint: str) -> tuple[str, int | None]:
    bare = _bare_endpoint(endpoint)
    try:
        parts = urlsplit("//" + bare)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is not None and (parts.username or parts.password):
        raise TransferError("an S3 endpoint must be host[:port], without credentials")
    if parts is None or not parts.hostname or parts.path or parts.query or parts.fragment:
        raise TransferError(f"S3 endpoint {bare!r} is not host[:port]")
    return parts.hostname, port


@dataclass(frozen=True)
class _Refusal:
    """What an S3 error body says: its Code, Message and Region ("" where absent)."""

    code: str = ""
    detail: str = ""
    region: str = ""


def _status_message(obj: S3Object, response: Response, error: _Refusal) -> str:
    code, detail = error.code, error.detail
    what = f"{obj.bucket}/{obj.key}"
    said = f"; S3 said {code}" if code else ""
    if response.status == 403:
        return f"access denied for {what} (check the access and secret keys{said})"
    if response.status == 404 and code == "NoSuchBucket":
        return f"no such bucket {obj.bucket} at S3 endpoint {_bare_endpoint(obj.endpoint)}"
    if response.status == 404:
        return f"no such object {what} at S3 endpoint {_bare_endpoint(obj.endpoint)}"
    reason = f"{code}: {detail}" if code else response.reason
    return f"S3 endpoint {_bare_endpoint(obj.endpoint)} refused {what}: HTTP {response.status} " \
           f"({reason})"


def _error_fields(response: Response) -> _Refusal:
    """The Code, Message and Region of an S3 error body; empty strings when there is none
    (a Region only when it looks like one)."""
    from defusedxml import ElementTree  # loaded by the first S3 error, not at start-up

    try:
        root = ElementTree.fromstring(response.error_text(_ERROR_BODY_BYTES))
    except Exception:  # an unreadable error body only loses detail
        return _Refusal()
    code = (root.findtext("Code") or "").strip()
    message = " ".join((root.findtext("Message") or "").split())
    region = (root.findtext("Region") or "").strip()
    return _Refusal(code[:80], message[:200], region if _REGION.fullmatch(region) else "")
