"""The console relay of agentless mode: the console proxy reaches VMConnect through the agent.

The management server registers a host under the agent's address and sends its console
proxy to that address on ``rdp.server.port`` (2179, Hyper-V's VMConnect port). When the
agent drives another machine over WinRM, nothing listens there; this relay does, on
``[agent] console_relay_listen`` (default ``0.0.0.0:2179``), and passes every connection,
byte for byte, to the VMConnect listener of the host named in the WinRM URL (port
``console_relay_target_port``, 2179). Consoles then work unchanged.

- Only clients ``allow_from`` admits are relayed (loopback alone when it is empty); others
  are closed at once, logged at most once a minute per address.
- A side that finishes sending (its FIN) has its end passed on after every byte it sent,
  and the other side's answer still flows back (RDP's last PDUs, the other side's own FIN);
  the connection closes when both have finished, ``HALF_CLOSED_S`` after the first did
  (nothing stays half-open for good), or at once when either side fails.
  Both sides probe their peer with TCP keepalive (``KEEPALIVE_IDLE_S``): a console proxy
  VM that vanished without closing (destroyed, its network gone) is noticed within about
  two minutes, even while nothing is sent, and its connection closed.
- A stopping agent relays no new console from the moment it is told to stop; those open
  then go on while the commands in flight are answered, and close when the agent stops.
- A client that sends nothing within ``FIRST_BYTE_S`` is closed: an RDP client speaks
  first (its preconnection PDU), so a silent one is no console, and would hold a slot and a
  connection to VMConnect for good (keepalive only ends one whose peer is gone).
- At most ``max_connections`` relayed connections at once, lowered to the relay's share of the
  open-file limit (each holds two sockets); a newcomer beyond is closed.

Where it runs: only with ``backend = "wsman"`` to another machine. On the emulator there
is no VMConnect to reach, so nothing is relayed (GetVncPort still answers as on Hyper-V).
On the Hyper-V host itself (``wmi``, or ``wsman`` to this Windows machine) VMConnect
listens on 2179 already and the console proxy reaches it directly. A relay never passes
connections to itself: a WinRM URL naming this machine (the emulator's WinRM face, a tunnel)
with the relay listening on the target port starts no relay, and a target address that
turns out to be the relay's own listener (one the names above did not tell) is refused for
each connection, before any is made to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from hyperv_agent import logs
from hyperv_agent.config import AgentConfig
from hyperv_agent.connections import (
    LISTEN_REUSE,
    RELAY_SHARED_PARTS,
    cannot_listen,
    connection_cap,
    peer_of,
)
from hyperv_agent.server import Listener, Network, allowed

log = logging.getLogger("hyperv_agent.relay")

VMCONNECT_PORT = 2179  # Hyper-V's VMConnect (RDP) listener; CloudStack's rdp.server.port
CONNECT_TIMEOUT_S = 10.0
#: A host name with several addresses: the next is tried this long after the one before
#: got no answer yet (RFC 8305's delay), so one that is dropped does not use up the timeout.
NEXT_ADDRESS_S = 0.25
CHUNK_BYTES = 64 * 1024
#: How long a client may take to send its first byte once relayed; RDP clients speak first.
FIRST_BYTE_S = 30.0
#: How long the other direction of a relayed connection may go on once one side finished
#: sending, before the connection is closed.
HALF_CLOSED_S = 30.0
#: TCP keepalive of both sides of a relayed connection: the first probe after this much
#: silence, then one every ``KEEPALIVE_INTERVAL_S``; ``KEEPALIVE_PROBES`` unanswered ones
#: and the connection fails, so the relay closes it.
KEEPALIVE_IDLE_S = 60
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_PROBES = 6


@dataclass(frozen=True)
class RelayTarget:
    """Where relayed connections go: the host's VMConnect listener."""

    host: str
    port: int = VMCONNECT_PORT


def relay_target(config: AgentConfig, on_windows: bool = sys.platform == "win32"
                 ) -> RelayTarget | None:
    """The VMConnect listener to relay to; None when this agent relays nothing: a backend
    other than ``wsman``, a WinRM URL naming this Windows machine (the host itself), an
    empty ``console_relay_listen``, or a target that is the relay's own listener."""
    host = _wsman_host(config)
    if not host or (on_windows and this_machine(host)) or relays_to_itself(config, on_windows):
        return None
    return RelayTarget(host, config.agent.console_relay_target_port)


def relays_to_itself(config: AgentConfig, on_windows: bool = sys.platform == "win32") -> bool:
    """Whether a relay would pass every connection back to itself: off Windows, the WinRM
    URL names this machine (the emulator's WinRM face, a tunnel) and the relay listens on
    the port it would relay to."""
    host = _wsman_host(config)
    agent = config.agent
    return (bool(host) and not on_windows and this_machine(host)
            and Listener.parse(agent.console_relay_listen).port
            == agent.console_relay_target_port)


def _wsman_host(config: AgentConfig) -> str:
    """The host the WinRM URL names when a relay is asked for (``wsman``, a non-empty
    ``console_relay_listen``); "" otherwise."""
    agent = config.agent
    if agent.backend != "wsman" or not agent.console_relay_listen or not config.wsman.url:
        return ""
    return urlsplit(config.wsman.url).hostname or ""


def this_machine(host: str) -> bool:
    """Whether ``host`` names the machine this process runs on."""
    host = _ipv4_mapped(host) or host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    names = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
    return host.lower() in names or host.lower().split(".")[0] in names


def console_port(config: AgentConfig) -> int:
    """The port the management server's console proxy is told (``rdp.server.port``): the
    relay's own when this agent relays, else VMConnect's."""
    if relay_target(config) is None:
        return VMCONNECT_PORT
    return Listener.parse(config.agent.console_relay_listen).port


class ConsoleRelay:
    """A TCP listener relaying each admitted connection to ``target``."""

    def __init__(self, target: RelayTarget, allow_from: Sequence[Network] = (),
                 max_connections: int = 256,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.target = target
        self.allow_from = tuple(allow_from)
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self._server: asyncio.Server | None = None
        self._listener = Listener("", 0)  # the address bound (``bind``)
        self._open: set[asyncio.StreamWriter] = set()  # client sides of relayed connections
        self._handlers: set[asyncio.Task[None]] = set()  # one per connection admitted
        self._throttle = logs.Throttle()

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, listener: Listener) -> None:
        await self.bind(listener)
        await self.serve()

    async def bind(self, listener: Listener) -> None:
        """Take ``listener``'s address without taking connections yet (``serve``): one
        that cannot be listened on fails here, before anything is said to serve."""
        self._server = await asyncio.start_server(self._accept, listener.host, listener.port,
                                                  reuse_address=LISTEN_REUSE,
                                                  start_serving=False)
        self._listener = listener

    async def serve(self) -> None:
        """Take connections at the address ``bind`` took, and say so."""
        assert self._server is not None
        await self._server.start_serving()
        log.info("relaying consoles from %s:%d to VMConnect at %s:%d", self._listener.host,
                 self.port, self.target.host, self.target.port)
        if not self.allow_from:
            log.warning("the console relay serves only loopback clients: add the console "
                        "proxy VMs' network to [agent] allow_from")

    def stop_accepting(self) -> None:
        """Stop listening: no new console is relayed (a client is refused by the system),
        while the relayed ones go on until they end or ``close``. A stopping agent calls
        this at once, then lets open consoles run through its grace period."""
        if self._server is not None:
            self._server.close()  # closes the listening sockets only, not the relayed ones

    async def close(self) -> None:
        """Stop listening and close every relayed connection, those still reaching
        VMConnect too; nothing of theirs is left running."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer.transport)
        refusal = self._refusal(peer)
        if refusal is not None:
            self._note(f"console relay refused {peer}: {refusal}", peer)
            writer.transport.abort()
            return
        self._open.add(writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            _keep_alive(writer)
            await self._relay(peer, reader, writer)
        except asyncio.CancelledError:
            pass  # ``close`` ends it; a cancelled handler would be logged as an error
        finally:
            self._open.discard(writer)
            self._handlers.discard(handler)
            writer.transport.abort()

    def _refusal(self, peer: str) -> str | None:
        if not allowed(peer, self.allow_from):
            return ("not in allow_from" if self.allow_from else
                    "allow_from is empty, so only loopback clients are relayed")
        if len(self._open) >= self.max_connections:
            return f"all {self.max_connections} relayed connections are in use"
        return None

    async def _relay(self, peer: str, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        where = f"{self.target.host}:{self.target.port}"
        if await self._is_itself():
            self._note(f"console relay: {where} is this relay's own listener, not VMConnect; "
                       "nothing is relayed (set console_relay_target_port to the host's "
                       "VMConnect port, or console_relay_listen to another port)", "itself")
            return
        try:
            far_reader, far_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target.host, self.target.port,
                                        happy_eyeballs_delay=NEXT_ADDRESS_S),
                self.connect_timeout_s)
        except (OSError, TimeoutError) as error:
            log.warning("console relay: cannot reach VMConnect at %s for %s (%s)", where,
                        peer, _unreached(error, self.connect_timeout_s))
            return
        _keep_alive(far_writer)
        started = time.monotonic()
        try:
            sent, received, silent = await _pipe(reader, writer, far_reader, far_writer)
        finally:
            far_writer.transport.abort()
        if silent:  # logged at most once a minute per address, like a refusal
            self._note(f"console relay: {peer} sent nothing within {FIRST_BYTE_S:g} s of "
                       "connecting, as no console does; closed", f"silent {peer}")
        log.info("console relay: %s <-> %s closed after %.1f s (%d bytes in, %d out)", peer,
                 where, time.monotonic() - started, sent, received)

    async def _is_itself(self) -> bool:
        """Whether the target is this relay's own listener: an address of this machine, on
        a port the relay listens on (at that address or all)."""
        listening = [sock.getsockname()[:2] for sock in
                     (self._server.sockets if self._server is not None else ())]
        if all(port != self.target.port for _, port in listening):
            return False
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                self.target.host, self.target.port, type=socket.SOCK_STREAM)
        except OSError:
            return False  # the connection that follows fails and says so
        for family, _, _, _, address in found:
            ip = str(address[0])
            mapped = _ipv4_mapped(ip)
            if mapped is not None:  # a connection to it goes to the IPv4 address
                family, ip = socket.AF_INET, mapped
            if any(port == self.target.port
                   and (host == ip or (ipaddress.ip_address(host).is_unspecified
                                       and _local_address(family, ip)))
                   for host, port in listening):
                return True
        return False

    def _note(self, message: str, key: str) -> None:
        note = self._throttle.admit(key)
        if note is not None:
            log.warning("%s%s", message, note)


def _unreached(error: OSError, timeout_s: float) -> str:
    """Why VMConnect could not be reached, for the log: the connect timing out, the
    system's words for one address, or every address's own failure where a host name
    has several (asyncio then raises one OSError holding them all, with no errno). On
    Windows the error carries the system's words itself (``winerror``): its C library
    knows no socket error, and ``os.strerror`` says "unknown error" for them all."""
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(error, socket.gaierror):
        return f"the host name does not resolve: {error.strerror or error}"
    if getattr(error, "winerror", None) is not None and error.strerror:
        return error.strerror
    if error.errno is not None:  # asyncio's words name the address, not why
        return os.strerror(error.errno).lower()
    return str(error) or type(error).__name__


def _keep_alive(writer: asyncio.StreamWriter) -> None:
    """Turn TCP keepalive on for the connection of ``writer``, with the relay's timing
    where the platform lets it be set per socket (Linux, Windows 10 1709 and later)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
                              ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                              ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _ipv4_mapped(ip: str) -> str | None:
    """The IPv4 address an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) stands for; None
    for any other address or name."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return None if mapped is None else str(mapped)


def _local_address(family: int, ip: str) -> bool:
    """Whether ``ip`` is an address of this machine (one a socket can be bound to)."""
    if ipaddress.ip_address(ip).is_loopback:
        return True
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((ip, 0))
    except OSError:
        return False
    return True


@dataclass
class _Flow:
    bytes: int = 0
    silent: bool = False  # nothing came within the time for the first byte


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                far_reader: asyncio.StreamReader, far_writer: asyncio.StreamWriter
                ) -> tuple[int, int, bool]:
    """Copy both ways until both sides finished sending (each end passed on to the other
    side), ``HALF_CLOSED_S`` after the first did, or either side fails or the client sends
    nothing within ``FIRST_BYTE_S``; then close both, after what was copied to them when
    they finished; bytes (to the host, back), and whether the client was silent."""
    outward, inward = _Flow(), _Flow()
    tasks = (asyncio.create_task(_copy(reader, far_writer, outward, FIRST_BYTE_S)),
             asyncio.create_task(_copy(far_reader, writer, inward)))
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if pending and all(task.result() for task in done):
            await asyncio.wait(pending, timeout=HALF_CLOSED_S)
        if all(task.done() and task.result() for task in tasks):
            await _closed_after_sending((writer, far_writer))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return outward.bytes, inward.bytes, outward.silent


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                flow: _Flow, first_within: float | None = None) -> bool:
    """Copy until the reader's side finished sending, then pass its end on: True. False
    when either side failed, or nothing came within ``first_within`` seconds."""
    wait = first_within
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(CHUNK_BYTES), wait)
            except TimeoutError:
                flow.silent = True
                return False
            if not chunk:
                break
            wait = None
            writer.write(chunk)
            await writer.drain()
            flow.bytes += len(chunk)
        if writer.can_write_eof():
            writer.write_eof()  # after what is still buffered
    except OSError:
        return False
    return True


async def _closed_after_sending(writers: Sequence[asyncio.StreamWriter]) -> None:
    """Close ``writers`` once what is buffered for them went out, or ``HALF_CLOSED_S`` on
    (a peer that reads nothing more); the caller aborts what is left."""
    for writer in writers:
        writer.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(_gone(writer) for writer in writers)),
                               HALF_CLOSED_S)


async def _gone(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def start_for(config: AgentConfig, allow_from: Sequence[Network],
                    file_limit: int | None = None) -> ConsoleRelay | None:
    """The relay ``config`` asks for, listening (``bind_for``, then serving); None when
    this agent relays nothing."""
    relay = await bind_for(config, allow_from, file_limit)
    if relay is not None:
        await relay.serve()
    return relay


async def bind_for(config: AgentConfig, allow_from: Sequence[Network],
                   file_limit: int | None = None) -> ConsoleRelay | None:
    """The relay ``config`` asks for, its address bound but taking no console until
    ``serve``; None when this agent relays nothing. An address that cannot be listened on
    raises CannotListen naming ``console_relay_listen``. It holds at most ``max_connections``
    consoles, lowered to its share of the open-file limit ``file_limit``
    (``connections.connection_cap``): each console holds two sockets."""
    target = relay_target(config)
    if target is None:
        if relays_to_itself(config):
            log.warning("no console relay: the WinRM URL names this machine and "
                        "console_relay_listen %s is the port it would relay to",
                        config.agent.console_relay_listen)
        return None
    listen = config.agent.console_relay_listen
    wanted = config.agent.max_connections
    cap = connection_cap(wanted, file_limit, RELAY_SHARED_PARTS)
    if cap < wanted:
        log.warning("console relay: max_connections lowered from %d to %d consoles: each "
                    "holds two sockets, and the process may open %s files (ulimit -n)",
                    wanted, cap, file_limit)
    relay = ConsoleRelay(target, allow_from, cap)
    try:
        await relay.bind(Listener.parse(listen))
    except OSError as error:  # named, so the operator knows which listener and setting
        raise cannot_listen(listen, "[agent] console_relay_listen", error) from None
    return relay
