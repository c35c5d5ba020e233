"""A streamed HTTP GET on aiohttp, read with blocking reads: the transport of ``http`` (a
file on a web server) and ``s3`` (an object of an S3-compatible store).

A copy reads its source on a worker thread (``transfer``). Each GET therefore runs its
own event loop on a thread of its own: aiohttp receives the body there, and the worker
reads it as a plain binary stream; closing the stream closes the connection and ends the
loop. Redirects are not followed here (the caller decides where to go next); the body is
never decoded or buffered whole. Every failure is a TransferError of one line, naming the
server as the caller describes it (``Peer``); one a repeat may not meet (the server could
not be reached or stopped sending) is a ``Transient``.

A download is read across connections by ``Resuming``: a request that meets a Transient is
repeated as its ``Retries`` allow (a short doubling pause between, cut short by the copy's
cancellation), and a body that breaks off is asked for again from the byte it stopped at;
where that cannot be done safely the caller's ``resume`` raises ``StartOver`` with the
whole body anew, and the reader throws away what it read and starts again (at most as many
times as there are retries).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO, TypeVar

import aiohttp
from yarl import URL

from hyperv_agent.errors import TransferError
from hyperv_agent.hostfs.api import COPY_CHUNK_BYTES

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")
_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
_BACKOFF_FIRST_S = 0.1  # doubled after each failure in a row
_BACKOFF_MAX_S = 5.0
_CLOSE_WAIT_S = 10.0  # the longest a close waits for the loop, at each step


@dataclass(frozen=True)
class Peer:
    """How messages name the server and what to suggest when it cannot be reached."""

    where: str  # "127.0.0.1:8080 (for http://...)", "S3 endpoint s3.lab:9000"
    unresolved: str  # "cannot resolve the host ..."
    refused_hint: str  # "is the host and port right?"
    tls_hint: str  # "does the server speak https?"


@dataclass(frozen=True)
class Get:
    """One GET: ``url`` as sent (already encoded), its headers and TLS context (None for
    plain http), how messages name the file (``label``) and its server."""

    url: str
    headers: Mapping[str, str]
    tls: ssl.SSLContext | None
    label: str
    peer: Peer
    timeout_s: float | None  # the longest wait for a byte; None: no limit
    connect_timeout_s: float | None = None  # for the connection; None: no limit
    keepalive: bool = False  # TCP keepalive probes on the connection


class Transient(TransferError):
    """The server could not be reached or asked, or stopped sending midway: a repeat of
    the request may succeed."""


class Stopped(Exception):
    """The copy reading a download was cancelled (noticed during a pause before a retry)."""


class StartOver(Exception):
    """What was read of a download must be thrown away: it is read again from its first
    byte from ``stream`` (the whole body, already asked for), as ``why`` says."""

    def __init__(self, why: str, stream: BinaryIO) -> None:
        super().__init__(why)
        self.why, self.stream = why, stream


class Retries:
    """The repeats one download may make: ``budget`` failures in a row (the count starts
    afresh once bytes arrive, ``flowing``), each after a pause that doubles from 0.1 s up
    to 5 s and ends early when ``stop`` is set (``Stopped``); and ``budget`` fresh starts
    in all (``restart``), which never start afresh."""

    def __init__(self, budget: int, stop: threading.Event | None = None) -> None:
        self.budget = max(0, budget)
        self.failures = 0
        self.restarts = 0
        self._stop = stop if stop is not None else threading.Event()

    def attempt(self, request: Callable[[], _T]) -> _T:
        """``request()``, repeated after each Transient as the budget allows."""
        while True:
            try:
                return request()
            except Transient as error:
                self.failed(error)

    def failed(self, error: Transient) -> None:
        """Raise ``error`` when the retries are spent, else pause before the repeat."""
        if self.failures >= self.budget:
            if self.failures:
                raise TransferError(f"{error} (gave up after {self.failures} "
                                    f"{'retry' if self.failures == 1 else 'retries'})"
                                    ) from None
            raise error
        self.failures += 1
        pause = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (self.failures - 1))
        _LOG.warning("%s; trying again in %.1f s (retry %d of %d)", error, pause,
                     self.failures, self.budget)
        if self._stop.wait(pause):
            raise Stopped

    def flowing(self) -> None:
        self.failures = 0

    def restart(self, error: TransferError, why: str) -> None:
        """Count one fresh start of the download after ``error`` (``why``: why it cannot
        go on where it stopped); TransferError when none is left."""
        if self.restarts >= self.budget:
            raise TransferError(f"{error}; {why}, and it was started over "
                                f"{self.restarts} {'time' if self.restarts == 1 else 'times'}"
                                " already") from None
        self.restarts += 1
        _LOG.warning("%s; %s: starting over (%d of %d)", error, why, self.restarts,
                     self.budget)


class Resuming(io.RawIOBase):
    """A download's bytes in order across connections: a body that breaks off (a
    Transient) is closed and ``resume(offset, error)`` asked for the rest from ``offset``
    (the bytes read so far), as ``retries`` allow. ``resume`` may raise StartOver, which
    reaches the reader. The bodies are raw (``Response.raw_body``): a buffered one drops
    what it holds when a read fails, so the offset would not be where the body broke."""

    def __init__(self, retries: Retries, body: io.RawIOBase,
                 resume: Callable[[int, Transient], io.RawIOBase]) -> None:
        super().__init__()
        self._retries, self._body, self._resume = retries, body, resume
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while True:
            try:
                count = self._body.readinto(buffer)
            except Transient as error:
                self._body.close()
                self._retries.failed(error)
                self._body = self._retries.attempt(partial(self._resume, self._offset, error))
                continue
            if count:
                self._offset += count
                self._retries.flowing()
            return count

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class Response:
    """A response whose body has not been read: its status, headers, and the body as a
    blocking stream (``body``) or a bounded error text (``error_text``). ``close`` ends
    the connection and its loop, unless the body stream took them over."""

    def __init__(self, loop: _Loop, session: aiohttp.ClientSession,
                 response: aiohttp.ClientResponse, get: Get) -> None:
        self._loop, self._session, self._response, self._get = loop, session, response, get
        self.status = response.status
        self.reason = response.reason or ""
        self.headers: Mapping[str, str] = response.headers

    @property
    def length(self) -> int | None:
        """The byte count the response's Content-Length announces; None when it says none."""
        return self._response.content_length

    def body(self) -> Body:
        """The body as a stream (the stream owns the connection from now on)."""
        return Body(self.raw_body(), self.length)

    def raw_body(self) -> io.RawIOBase:
        """The body as an unbuffered stream (which owns the connection from now on)."""
        return _Body(self._loop, self._session, self._response, self._get.label)

    def error_text(self, limit_bytes: int) -> bytes:
        """Up to ``limit_bytes`` of the body (an error document); b"" when unreadable."""
        try:
            return self._loop.run(self._response.content.read(limit_bytes))
        except _ERRORS:
            return b""

    def close(self) -> None:
        self._loop.close(self._session)


class Body(io.BufferedReader):
    """A response body as a blocking stream; ``length`` is the byte count its
    Content-Length announced (None when the server did not say)."""

    def __init__(self, raw: io.RawIOBase, length: int | None) -> None:
        super().__init__(raw, COPY_CHUNK_BYTES)
        self.length = length


def announced_length(stream: object) -> int | None:
    """The size a source stream announced before its first byte (a web body's
    Content-Length), else None."""
    length = getattr(stream, "length", None)
    return length if isinstance(length, int) else None


def open_get(get: Get) -> Response:
    """Send ``get`` and wait for the response's head. Blocking: call it from a worker
    thread (or any thread without a running event loop). A refused connection, an
    unknown host, a timeout, an untrusted certificate or a failed TLS handshake raise
    TransferError with one line; nothing is left open then."""
    loop = _Loop()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=get.connect_timeout_s,
                                    sock_read=get.timeout_s)
    session = loop.run(_session(timeout, get.keepalive))
    try:
        response = loop.run(_send(session, get))
    except _ERRORS as error:
        loop.close(session)
        kind = TransferError if _tls_failure(error) else Transient  # TLS: settings, not luck
        raise kind(connect_problem(get.peer, error, get)) from None
    except BaseException:
        loop.close(session)
        raise
    return Response(loop, session, response, get)


async def _session(timeout: aiohttp.ClientTimeout, keepalive: bool) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(socket_factory=_keepalive_socket) if keepalive else None
    return aiohttp.ClientSession(timeout=timeout, auto_decompress=False, connector=connector,
                                 skip_auto_headers=("User-Agent",))


def _keepalive_socket(address: tuple[Any, ...]) -> socket.socket:
    """A socket for ``address`` (a getaddrinfo entry) that sends TCP keepalive probes."""
    family, kind, proto = address[0], address[1], address[2]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


async def _send(session: aiohttp.ClientSession, get: Get) -> aiohttp.ClientResponse:
    return await session.get(URL(get.url, encoded=True), headers=dict(get.headers),
                             ssl=get.tls if get.tls is not None else False,
                             allow_redirects=False)


def connect_problem(peer: Peer, error: BaseException, get: Get) -> str:
    """Why the server could not be reached or asked, in one line."""
    cause = _cause(error)
    if isinstance(cause, ConnectionRefusedError):
        return f"cannot connect to {peer.where}: connection refused ({peer.refused_hint})"
    if isinstance(cause, socket.gaierror):
        return peer.unresolved
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return (f"the TLS certificate of {peer.where} is not trusted "
                f"({_verify_message(error.certificate_error)})")
    if isinstance(cause, ssl.SSLError) or isinstance(error, aiohttp.ClientSSLError):
        reason = getattr(cause, "reason", None) or type(cause).__name__
        return f"TLS with {peer.where} failed ({reason}); {peer.tls_hint}"
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return f"{peer.where} did not accept a connection within {get.connect_timeout_s:g} s"
    if isinstance(error, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return f"{peer.where} did not answer within {get.timeout_s:g} s"
    if isinstance(cause, OSError) and not isinstance(error, aiohttp.ServerDisconnectedError):
        return f"cannot reach {peer.where}: {cause.strerror or type(cause).__name__}"
    return f"{peer.where} sent no valid HTTP answer ({type(error).__name__})"


def _tls_failure(error: BaseException) -> bool:
    return isinstance(error, aiohttp.ClientSSLError) or isinstance(_cause(error), ssl.SSLError)


def _cause(error: BaseException) -> BaseException:
    """The OS or TLS error behind an aiohttp connection error, else ``error`` itself."""
    found = getattr(error, "os_error", None) or error.__cause__
    return found if isinstance(found, BaseException) else error


def _verify_message(error: BaseException) -> str:
    return str(getattr(error, "verify_message", None) or error)


def reason(error: BaseException) -> str:
    """Why reading a response failed, in a few words."""
    if isinstance(error, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "the server stopped sending (timed out)"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the body ended early"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__


class _Body(io.RawIOBase):
    """The response body; a connection that closes before Content-Length is an error."""

    def __init__(self, loop: _Loop, session: aiohttp.ClientSession,
                 response: aiohttp.ClientResponse, label: str) -> None:
        super().__init__()
        self._loop, self._session, self._response = loop, session, response
        self._label = label
        self._expected = response.content_length
        self._received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._loop.run(self._response.content.read(len(buffer)))
        except aiohttp.ClientPayloadError:
            raise self._cut_short() from None
        except _ERRORS as error:
            raise Transient(f"reading {self._label} failed after {self._received} "
                            f"bytes: {reason(error)}") from None
        if not data and len(buffer) and self._expected is not None \
                and self._received < self._expected:
            raise self._cut_short()
        buffer[:len(data)] = data
        self._received += len(data)
        return len(data)

    def _cut_short(self) -> Transient:
        arrived = max(self._received, self._response.content.total_bytes)
        return Transient(f"the server closed the connection after {arrived} of "
                             f"{self._expected} bytes of {self._label}")

    def close(self) -> None:
        if not self.closed:
            self._loop.close(self._session)
        super().close()


class _Loop:
    """An event loop on a daemon thread of its own, for one GET."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ending = False
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name="hyperv-agent-get")
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def run(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run ``work`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def close(self, session: aiohttp.ClientSession) -> None:
        """Close ``session`` (and its connection), then end the loop and its thread.

        Safe from any thread at any time, a finaliser's included: it waits at most
        ``_CLOSE_WAIT_S`` for each step, and not at all where the loop cannot answer: on
        the loop's own thread (a finaliser the garbage collector ran there) it leaves the
        work to the loop, and at interpreter exit (the daemon thread is frozen or gone)
        it leaves the connection to the operating system."""
        if self._ending:
            return
        self._ending = True
        if threading.current_thread() is self._thread:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                self._loop.create_task(self._end_here(session))
            return
        if sys.is_finalizing() or not self._thread.is_alive():
            return
        try:
            future = asyncio.run_coroutine_threadsafe(session.close(), self._loop)
            try:
                future.result(_CLOSE_WAIT_S)
            except concurrent.futures.TimeoutError:
                future.cancel()
                _LOG.warning("a download's connection did not close within %g s; "
                             "left to the operating system", _CLOSE_WAIT_S)
        finally:
            self._stop()
            self._thread.join(_CLOSE_WAIT_S)

    async def _end_here(self, session: aiohttp.ClientSession) -> None:
        try:
            await session.close()
        finally:
            self._loop.stop()

    def _stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # already closed: the thread has ended
            self._loop.call_soon_threadsafe(self._loop.stop)
