"""Notices SMB servers that stop answering while calls wait on them.

smbprotocol waits for each response without a bound (``Connection.receive`` with no
timeout; ``connection_timeout`` covers only the TCP connect and the negotiation): a
server that goes silent without closing TCP (a host frozen or cut off, a hung file
server) holds every call on its connection until smbprotocol's own keep-alive gives up,
after two idle receive timeouts of 10 minutes each. A total bound on each call would cut
long legitimate ones short (a server-side copy of a large template), so liveness is asked
of the server instead: once a call has waited ``probe_after_s`` on a server, the
connection is sent an SMB2 ECHO, which a live server answers at once even while it works
on other requests. Answered, the calls go on (and the server is asked again
``probe_after_s`` later if they still wait); not answered within ``answer_within_s``, the
connection is dropped: taken out of the pool, so the next call reconnects, and its socket
shut down, which wakes every call waiting on it with an error. Those calls are marked
(``Call.dropped``) so their error can say why.

The kernel is asked to notice a peer that is gone altogether (``keep_alive``): an idle
connection to a host that was powered off or cut off is closed within ~25 s, so the next
call reconnects at once instead of waiting for the echo.

One daemon thread watches while calls are in progress and ends when none are; each echo
is sent from a thread of its own, since sending can itself block on a silent server.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from smbprotocol.exceptions import SMBResponseException  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

KEEPIDLE_S, KEEPINTVL_S, KEEPCNT = 10, 5, 3  # a dead idle peer is noticed in ~25 s
USER_TIMEOUT_MS = 25_000  # unacknowledged data for this long closes the connection
_ECHO_GRACE_S = 5  # the echo's own wait outlives the watchdog's, which decides


@dataclass(eq=False)
class Call:
    """One call in progress on ``server`` (lower case)."""

    server: str
    since: float = field(default_factory=time.monotonic)
    dropped: bool = False  # its connection was dropped because the server went silent


class Watchdog:
    """Watches calls on pooled SMB connections (see the module's docstring).

    ``connection_for(server)`` gives the pooled smbprotocol Connection of a server, or
    None; ``drop(server, connection)`` takes it out of the pool if it is still there."""

    def __init__(self, probe_after_s: float, answer_within_s: float,
                 connection_for: Callable[[str], Any | None],
                 drop: Callable[[str, Any], None]) -> None:
        self.probe_after_s = probe_after_s
        self.answer_within_s = answer_within_s
        self._connection_for = connection_for
        self._drop = drop
        self._condition = threading.Condition()
        self._calls: set[Call] = set()
        self._probing: set[str] = set()
        self._answered: dict[str, float] = {}  # server -> when it last answered an echo
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, server: str) -> Iterator[Call]:
        """Watch the call made inside the block; the block's Call says whether it was
        dropped."""
        call = Call(server.lower())
        with self._condition:
            self._calls.add(call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="smb-watchdog",
                                                daemon=True)
                self._thread.start()
        try:
            yield call
        finally:
            with self._condition:
                self._calls.discard(call)

    def _watch(self) -> None:
        tick = min(1.0, self.probe_after_s / 4)
        while True:
            with self._condition:
                if not self._calls:
                    self._thread = None
                    return
                now = time.monotonic()
                due = {call.server for call in self._calls
                       if call.server not in self._probing
                       and now - max(call.since, self._answered.get(call.server, 0.0))
                       >= self.probe_after_s}
                self._probing |= due
            for server in due:
                threading.Thread(target=self._probe, args=(server,), name="smb-echo",
                                 daemon=True).start()
            time.sleep(tick)

    def _probe(self, server: str) -> None:
        try:
            connection = self._connection_for(server)
            answered = True if connection is None else self._echo(connection)
            with self._condition:
                if answered is not False:
                    self._answered[server] = time.monotonic()
                    return
                silent = [call for call in self._calls if call.server == server]
                for call in silent:
                    call.dropped = True
            log.warning("SMB server %s did not answer an echo within %g s; dropping its "
                        "connection (%d call(s) waiting)", server, self.answer_within_s,
                        len(silent))
            self._drop(server, connection)
            shut_down(connection)
        finally:
            with self._condition:
                self._probing.discard(server)

    def _echo(self, connection: Any) -> bool | None:
        """True when the server answered an echo in time, False when it did not, None when
        no echo could be sent (the connection is closing: its calls wake by themselves)."""
        outcome: list[bool | None] = []

        def ask() -> None:
            try:
                connection.echo(sid=0, timeout=self.answer_within_s + _ECHO_GRACE_S)
                outcome.append(True)
            except SMBResponseException:
                outcome.append(True)  # an error status is an answer too
            except Exception as error:  # any other failure proves nothing either way
                log.debug("SMB echo could not be sent: %s", error)
                outcome.append(None)

        asker = threading.Thread(target=ask, name="smb-echo-send", daemon=True)
        asker.start()
        asker.join(self.answer_within_s)
        return outcome[0] if outcome else False


def connection_socket(connection: Any) -> socket.socket | None:
    """The TCP socket of an smbprotocol Connection, or None when it has none.

    smbprotocol offers no public way to it: ``Connection.transport`` is public but its
    ``Tcp`` keeps the socket in the private ``_sock`` (smbprotocol 1.17). Reached only
    here; tests/hostfs/test_smbwatch.py fails if the library moves it."""
    sock = getattr(getattr(connection, "transport", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def keep_alive(connection: Any) -> None:
    """Have the kernel notice a peer that is gone: TCP keepalive on an idle connection
    (first probe after KEEPIDLE_S, then every KEEPINTVL_S, KEEPCNT unanswered probes close
    it) and TCP_USER_TIMEOUT on data the peer does not acknowledge, instead of Linux's ~15
    minutes of retransmissions. smbprotocol's receive thread then fails with ETIMEDOUT,
    the transport counts as closed and the next call reconnects. Set once per connection
    (a socket with SO_KEEPALIVE on is left as it is); a platform without these options
    keeps its defaults."""
    sock = connection_socket(connection)
    if sock is None or sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE):
        return
    options = [(socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
               (socket.IPPROTO_TCP, "TCP_KEEPIDLE", KEEPIDLE_S),
               (socket.IPPROTO_TCP, "TCP_KEEPINTVL", KEEPINTVL_S),
               (socket.IPPROTO_TCP, "TCP_KEEPCNT", KEEPCNT),
               (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", USER_TIMEOUT_MS)]
    with contextlib.suppress(OSError):  # a socket closed meanwhile fails its next call
        for level, name, value in options:
            if hasattr(socket, name):
                sock.setsockopt(level, getattr(socket, name), value)


def shut_down(connection: Any) -> None:
    """Shut a connection's socket down at once. smbprotocol's own ``disconnect`` takes the
    lock a send blocked on a silent server holds; a shutdown needs no lock, fails that
    send, and makes the connection's receive thread see the end of the stream, close the
    transport and wake every call waiting for a response."""
    sock = connection_socket(connection)
    if sock is None:
        threading.Thread(target=connection.disconnect, args=(False,), daemon=True).start()
        return
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)
