"""The listeners' connections: counted from accept to close, capped, and closed when idle.

Every socket a listener accepts holds a slot until it closes, its TLS handshake included
(TLS is started here, on the accepted socket, with ``loop.start_tls``):

- **Idle deadline.** From accept, and from the end of each answer, a client has
  ``idle_timeout_s`` to finish the TLS handshake and deliver a whole request, headers and
  body; otherwise the connection is closed. The clock stops while a command is answered (a
  StartCommand may take minutes) and starts again once the answer is handed over.
- **Cap.** At most ``cap`` connections at once. A connection beyond the cap takes the slot
  of the connection idle the longest; only when every slot is answering a command is the
  newcomer closed at once. Idle or slow clients cannot lock the management server out.
  :func:`connection_cap` keeps the cap below the process's open-file limit.
- **Quiet failures.** A malformed request is answered 400 and logged as one warning line
  (rate-limited), never a traceback; every response names the server without a version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_request import BaseRequest

from hyperv_agent import logs

SERVER_NAME = "hyperv-agent"
#: Descriptors kept free below the open-file limit: a quarter of it, and at least this many
#: (disks, shares, the emulator's database, the admin listener).
MIN_FILE_HEADROOM = 64
log = logging.getLogger("hyperv_agent.http")


@dataclass(frozen=True)
class Limits:
    """How long a client may stay idle, and how many connections a listener holds at once."""

    idle_timeout_s: float = 30.0
    max_connections: int = 256


#: With a console relay, the descriptors for connections are shared in this many parts: one
#: for the CloudStack listener's connections, two for the relay's (each holds two sockets).
RELAY_SHARED_PARTS = 3


def connection_cap(wanted: int, file_limit: int | None, parts: int = 1) -> int:
    """``wanted``, lowered to ``1/parts`` of what is left of ``file_limit`` once a quarter
    of it (at least :data:`MIN_FILE_HEADROOM` descriptors) is kept free; ``wanted`` when
    there is no limit."""
    if file_limit is None:
        return wanted
    headroom = max(MIN_FILE_HEADROOM, file_limit // 4)
    return max(1, min(wanted, (file_limit - headroom) // parts))


def open_file_limit() -> int | None:
    """The process's soft limit on open files; None where there is none (Windows)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows: sockets are not in a descriptor table
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def peer_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


class Slot:
    """One accepted connection's place under the cap, and its idle clock."""

    def __init__(self, guard: Guard, transport: asyncio.Transport, now: float) -> None:
        self.transport = transport  # the accepted socket; TLS, if any, runs on top of it
        self.peer = peer_of(transport)
        self.idle_since: float | None = now  # None while a command is answered
        self.timer: asyncio.TimerHandle | None = None
        self.handshake: asyncio.Task[None] | None = None
        self.expired = False  # closed for idling past the deadline
        self._guard = guard

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Stop the idle clock while a command is answered; start it again after."""
        self._guard.busy(self)
        try:
            yield
        finally:
            self._guard.idle(self)

    def abort(self) -> None:
        """Close at once: no TLS close_notify to wait for, the descriptor is freed now."""
        self.transport.abort()


class Guard:
    """The slots of one listener: the cap, eviction of the longest idle, idle deadlines."""

    def __init__(self, limits: Limits, name: str) -> None:
        self.limits = limits
        self.name = name
        self._slots: dict[Slot, None] = {}
        self._throttle = logs.Throttle()

    @property
    def open_count(self) -> int:
        return len(self._slots)

    def admit(self, transport: asyncio.Transport) -> Slot | None:
        """A slot for a newly accepted connection, or None (every slot is answering)."""
        if len(self._slots) >= self.limits.max_connections and not self._evict_longest_idle():
            self.note(f"refused a connection from {peer_of(transport)}: all "
                      f"{self.limits.max_connections} connections of the {self.name} "
                      "listener are answering commands", "refused")
            return None
        slot = Slot(self, transport, asyncio.get_running_loop().time())
        self._slots[slot] = None
        self._arm(slot)
        return slot

    def release(self, slot: Slot) -> None:
        """Free ``slot`` (its connection closed); a repeat is harmless."""
        self._slots.pop(slot, None)
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None

    def busy(self, slot: Slot) -> None:
        slot.idle_since = None
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None

    def idle(self, slot: Slot) -> None:
        if slot in self._slots:
            slot.idle_since = asyncio.get_running_loop().time()
            self._arm(slot)

    def close_idle(self) -> None:
        """Close every connection not answering a command (the listener is stopping)."""
        for slot in [s for s in self._slots if s.idle_since is not None]:
            self.release(slot)
            slot.abort()

    def note(self, message: str, kind: str, level: int = logging.WARNING) -> None:
        """Log ``message`` unless a line of this ``kind`` was written lately."""
        note = self._throttle.admit(kind)
        if note is not None:
            log.log(level, "%s%s", message, note)

    def _arm(self, slot: Slot) -> None:
        if slot.timer is not None:
            slot.timer.cancel()
        assert slot.idle_since is not None
        deadline = slot.idle_since + self.limits.idle_timeout_s
        slot.timer = asyncio.get_running_loop().call_at(deadline, self._expire, slot)

    def _expire(self, slot: Slot) -> None:
        slot.timer = None
        if slot in self._slots and slot.idle_since is not None:
            self.release(slot)
            slot.expired = True
            slot.abort()
            log.debug("closed a connection from %s: no whole request within %g s", slot.peer,
                      self.limits.idle_timeout_s)

    def _evict_longest_idle(self) -> bool:
        idle = [s for s in self._slots if s.idle_since is not None]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.idle_since or 0.0)
        self.release(victim)
        victim.abort()
        self.note(f"{self.name} listener at its cap of {self.limits.max_connections} "
                  f"connections: closed the longest idle, from {victim.peer}", "evicted")
        return True


def lost_because(request: BaseRequest) -> str:
    """Why ``request``'s connection closed before its body arrived, for the log."""
    protocol = request.protocol
    if isinstance(protocol, HttpHandler) and protocol.slot.expired:
        return (f"closed the connection from {protocol.slot.peer}: the request did not "
                f"arrive within idle_timeout_s ({protocol.guard.limits.idle_timeout_s:g} s)")
    return f"{request.remote} dropped the connection while sending its request"


def answering(request: BaseRequest) -> contextlib.AbstractContextManager[None]:
    """The idle clock of ``request``'s connection, stopped while its command is answered."""
    protocol = request.protocol
    if isinstance(protocol, HttpHandler):
        return protocol.slot.answering()
    return contextlib.nullcontext()


def close_unread(request: BaseRequest) -> None:
    """Close ``request``'s connection once its answer is sent, without waiting for a body
    the client was never asked for (aiohttp otherwise reads on for up to ten seconds)."""
    protocol = request.protocol
    if isinstance(protocol, HttpHandler):
        protocol.skip_lingering()


class HttpHandler(web.RequestHandler):
    """aiohttp's HTTP/1.1 protocol for one connection, holding its slot; protocol errors
    are one warning line and every response names the server without a version."""

    def __init__(self, manager: web.Server, *, slot: Slot, guard: Guard,
                 **options: Any) -> None:
        super().__init__(manager, **options)
        self.slot = slot
        self.guard = guard

    def skip_lingering(self) -> None:
        """No lingering read of an unread body after the answer: the connection closes."""
        self._lingering_time = 0.0

    def log_exception(self, *args: Any, **kw: Any) -> None:
        error = kw.get("exc_info")
        what = str(args[0]) if args else "error"
        detail = f": {type(error).__name__}: {error}" if isinstance(error, BaseException) else ""
        self.guard.note(f"{what} from {self.slot.peer}{detail}", f"http:{self.slot.peer}")

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A plain ``status`` answer that closes the connection; no traceback anywhere."""
        phrase = HTTPStatus(status).phrase if status in HTTPStatus.__members__.values() else ""
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else (message or phrase)
        self.guard.note(f"answered {status} to a malformed request from {self.slot.peer}: "
                         f"{reason}", f"http:{self.slot.peer}")
        if request.writer.output_size > 0:
            raise ConnectionError("the answer was already under way; closing the connection")
        text = f"{status} {phrase}" + (f": {message}" if message and status < 500 else "")
        response = web.Response(status=status, text=text)
        response.force_close()
        return response

    async def finish_response(self, request: BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> Any:
        if isinstance(resp, web.StreamResponse) and not resp.prepared:
            resp.headers[hdrs.SERVER] = SERVER_NAME
        return await super().finish_response(request, resp, start_time)


class _Connection(asyncio.Protocol):
    """An accepted socket: takes a slot, runs the TLS handshake, then hands the bytes to
    aiohttp's HTTP protocol. It stays the socket's (or the TLS layer's) protocol and
    forwards to the HTTP protocol, so it sees the connection close whatever closes it."""

    def __init__(self, site: GuardedSite) -> None:
        self._site = site
        self._slot: Slot | None = None
        self._http: HttpHandler | None = None
        self._early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        slot = self._site.guard.admit(transport)
        if slot is None:
            transport.abort()
            return
        self._slot = slot
        context = self._site.tls
        if context is None:
            self._serve(transport)
            return
        transport.pause_reading()  # until start_tls has taken the socket over
        slot.handshake = asyncio.get_running_loop().create_task(self._secure(transport, context))

    async def _secure(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        assert self._slot is not None
        loop = asyncio.get_running_loop()
        try:
            secured = await loop.start_tls(
                raw, self, context, server_side=True,
                ssl_handshake_timeout=self._site.guard.limits.idle_timeout_s)
        except asyncio.CancelledError:
            self._site.guard.release(self._slot)
            raw.abort()
            raise
        except (OSError, TimeoutError, EOFError) as error:
            self._site.guard.release(self._slot)
            raw.abort()
            self._site.guard.note(f"TLS handshake with {self._slot.peer} failed: "
                                  f"{type(error).__name__}: {error}", f"tls:{self._slot.peer}")
            return
        if secured is None:  # closed by the guard during the handshake
            return
        self._serve(secured)

    def _serve(self, transport: asyncio.BaseTransport) -> None:
        assert self._slot is not None
        self._http = self._site.new_handler(self._slot)
        self._http.connection_made(transport)
        for chunk in self._early:
            self._http.data_received(chunk)
        self._early.clear()

    def data_received(self, data: bytes) -> None:
        if self._http is None:
            self._early.append(data)  # decrypted before the HTTP protocol was attached
        else:
            self._http.data_received(data)

    def eof_received(self) -> None:
        if self._http is not None:
            self._http.eof_received()

    def pause_writing(self) -> None:
        if self._http is not None:
            self._http.pause_writing()

    def resume_writing(self) -> None:
        if self._http is not None:
            self._http.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._slot is not None:
            self._site.guard.release(self._slot)
        if self._http is not None:
            self._http.connection_lost(exc)


#: How listeners (this one, the console relay's) set SO_REUSEADDR: as asyncio chooses, on
#: Unix only. There it lets a restarted agent listen again at once, past the closed
#: connections the last one left in TIME_WAIT; on Windows it lets a second socket bind a
#: port already listened on, so a second agent, or a C# agent left running on 8250, would
#: start without "address in use" and the connections be shared between them.
LISTEN_REUSE = None


class CannotListen(OSError):
    """A listener's address could not be listened on; the message names the address, its
    setting and why (:func:`cannot_listen`). Any other OSError is not a listener's."""


def cannot_listen(address: str, setting: str, error: OSError) -> CannotListen:
    """The refusal of ``address`` (of ``setting``) that ``error`` says cannot be bound."""
    return CannotListen(error.errno, f"{address} ({setting}): "
                                     f"{why_not_listening(error, address)}")


def why_not_listening(error: OSError, address: str) -> str:
    """Why the listener address ``address`` (HOST:PORT, an IPv6 host in brackets) could not
    be bound, in the operator's terms: a name that does not resolve, an address not of
    this machine (the any-address of its family suggested), one in use; else the system's
    words."""
    import errno
    import socket

    said = error.strerror or str(error)
    if isinstance(error, socket.gaierror):
        return f"the host name does not resolve ({said})"
    if error.errno == errno.EADDRNOTAVAIL:
        ipv6 = ":" in address.rpartition(":")[0]  # [host]:port
        every = "[::]" if ipv6 else "0.0.0.0"  # noqa: S104 - advice, not a bind
        return (f"not an address of this machine (give one of its addresses, or {every} "
                "for all of them)")
    if error.errno == errno.EADDRINUSE:
        return "the address is in use (another program listens there)"
    return said


class GuardedSite(web.BaseSite):
    """A TCP listener (TLS when given a context) whose connections a :class:`Guard` keeps."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 ssl_context: ssl.SSLContext | None, limits: Limits, name: str) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port = host, port
        self.tls = ssl_context
        self.guard = Guard(limits, name)

    @property
    def name(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self._host}:{self._port}"

    async def bind(self) -> None:
        """Take the address (its host name resolved, its sockets bound) without taking
        connections yet: one that cannot be listened on fails here, before anything is
        said to serve; ``start`` then takes connections. The runner stops the site either
        way."""
        if self._server is not None:
            return
        await super().start()  # registered with the runner, whose cleanup closes it
        loop = asyncio.get_running_loop()
        # reuse_address left to asyncio (``LISTEN_REUSE``)
        self._server = await loop.create_server(
            lambda: _Connection(self), self._host, self._port, backlog=self._backlog,
            reuse_address=LISTEN_REUSE, start_serving=False)

    async def start(self) -> None:
        await self.bind()
        assert self._server is not None
        await self._server.start_serving()

    async def stop(self) -> None:
        await super().stop()
        self.guard.close_idle()

    def new_handler(self, slot: Slot) -> HttpHandler:
        server = self._runner.server
        assert server is not None
        timeout = self.guard.limits.idle_timeout_s
        return HttpHandler(server, loop=asyncio.get_running_loop(), slot=slot, guard=self.guard,
                           keepalive_timeout=timeout, access_log=None, auto_decompress=False)
