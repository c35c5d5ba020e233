"""The other hosts of a cluster as one host sees them: registrations, and requests to them.

A request is one JSON object on one line over a TCP connection to the peer's listener
(:mod:`hyperv_agent.emulator.cluster`), answered by one JSON line. Every request carries
the cluster's token and the name of the host it is for. A peer whose process stopped has
no listener: connecting is refused, as a Hyper-V host whose management service is down
refuses a migration connection.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperv_agent.emulator.offer import Offer

CONNECT_TIMEOUT_S = 5.0
CHECK_TIMEOUT_S = 60.0
#: Taking a VM in copies the files of disks that move: a large disk takes a while.
ACCEPT_TIMEOUT_S = 3600.0
#: How often a waiting worker runs the work other hosts handed in meanwhile.
POLL_S = 0.01
MAX_LINE_BYTES = 64 * 1024 * 1024
# Why a connection to a peer failed, as Windows words it (WSAECONNREFUSED, WSAECONNRESET).
REFUSED = ("No connection could be made because the target machine actively refused it. "
           "(0x8007274D)")
BROKEN = "An existing connection was forcibly closed by the remote host. (0x80072746)"


class PeerUnknown(Exception):
    """No host of the cluster has that name or address."""


class PeerDown(Exception):
    """The host cannot be reached: its process is stopped (connection refused)."""


class PeerLost(PeerDown):
    """The connection broke, or the host did not answer in time, after the request was
    sent: whether it acted on it is not known."""


def why(error: PeerDown) -> str:
    """The reason a migration job gives for ``error``."""
    return BROKEN if isinstance(error, PeerLost) else REFUSED


class PeerRefused(Exception):
    """The host answered with a refusal (a Hyper-V return code and why)."""

    def __init__(self, code: int, description: str, immediate: bool = False) -> None:
        super().__init__(description)
        self.code, self.description, self.immediate = code, description, immediate


@dataclass(frozen=True)
class Registration:
    """What a member publishes of itself in the cluster directory."""

    name: str
    private_ip: str
    addresses: tuple[str, ...]  # its migration listener addresses
    endpoint: tuple[str, int]  # where its listener accepts requests
    pid: int
    up: bool = True

    def answers_to(self, name: str) -> bool:
        """Whether ``name`` names this host: its name or first DNS label (any case), its
        private address or a listener address."""
        wanted = name.strip().lower()
        return (wanted in (self.name.lower(), self.private_ip)
                or wanted.split(".", 1)[0] == self.name.lower() or wanted in self.addresses)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "private_ip": self.private_ip,
                "addresses": list(self.addresses), "endpoint": list(self.endpoint),
                "pid": self.pid, "up": self.up}

    @classmethod
    def read(cls, path: Path) -> Registration | None:
        """The registration in ``path``; None when it is unreadable or not one."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            host, port = data["endpoint"]
            return cls(str(data["name"]), str(data["private_ip"]),
                       tuple(str(a) for a in data["addresses"]), (str(host), int(port)),
                       int(data["pid"]), bool(data["up"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Peer:
    """Another host of the cluster."""

    registration: Registration
    token: str

    @property
    def name(self) -> str:
        return self.registration.name

    def ping(self) -> None:
        """Return when the host answers; PeerDown when it cannot be reached."""
        self._ask("ping", CONNECT_TIMEOUT_S)

    def check(self, offer: Offer, between: Callable[[], None] | None = None) -> None:
        """Whether the host would take the VM ``offer`` carries: PeerRefused with its
        reason when not, PeerDown when it cannot be reached."""
        self._ask("check", CHECK_TIMEOUT_S, between, offer=offer.to_json())

    def accept(self, offer_id: str, between: Callable[[], None] | None = None) -> list[Path]:
        """Ask the host to take the VM of the hand-over ``offer_id``; the source files it
        copied. PeerRefused when it refused (nothing changed), PeerLost when whether it took
        the VM is not known (the hand-over's files say)."""
        reply = self._ask("accept", ACCEPT_TIMEOUT_S, between, id=offer_id)
        return [Path(str(path)) for path in reply.get("copied", ())]

    def holder(self, path: str) -> tuple[str, bool] | None:
        """The VM of the host that holds the file ``path`` (a path on a share both hosts
        reach) open, and whether as its writable disk (``openfiles.Hold``); None when
        none does. PeerDown when the host cannot be reached."""
        reply = self._ask("held", CHECK_TIMEOUT_S, path=path)
        vm = reply.get("vm")
        return (str(vm), bool(reply.get("writable"))) if vm else None

    def _ask(self, op: str, timeout_s: float, between: Callable[[], None] | None = None,
             **fields: Any) -> Mapping[str, Any]:
        if not self.registration.up:
            raise PeerDown(f"{self.name} is stopped")
        message = {"token": self.token, "to": self.name, "op": op, **fields}
        reply = request(self.registration.endpoint, message, timeout_s, between)
        if reply.get("ok") is not True:
            raise PeerRefused(int(reply.get("code", 32768)), str(reply.get("description", "")),
                              bool(reply.get("immediate", False)))
        return reply


def request(endpoint: tuple[str, int], message: Mapping[str, Any], timeout_s: float,
            between: Callable[[], None] | None = None) -> Mapping[str, Any]:
    """Send ``message`` to ``endpoint`` and read the answer, calling ``between`` while it
    is awaited. PeerDown when the connection is refused, PeerLost when it breaks or the
    answer takes longer than ``timeout_s``."""
    try:
        connection = socket.create_connection(endpoint, timeout=CONNECT_TIMEOUT_S)
    except OSError as error:
        raise PeerDown(f"{endpoint[0]}:{endpoint[1]}: {error.strerror or error}") from None
    with connection:
        try:
            connection.sendall(json.dumps(message).encode() + b"\n")
            line = _read_line(connection, time.monotonic() + timeout_s, between)
            reply = json.loads(line)
        except (OSError, ValueError) as error:
            raise PeerLost(f"{endpoint[0]}:{endpoint[1]}: {error}") from None
    if not isinstance(reply, dict):
        raise PeerLost(f"{endpoint[0]}:{endpoint[1]}: the answer is not an object")
    return reply


def _read_line(connection: socket.socket, deadline: float,
               between: Callable[[], None] | None) -> bytes:
    received = bytearray()
    connection.settimeout(POLL_S if between is not None else max(0.0, deadline - time.monotonic()))
    while not received.endswith(b"\n"):
        if time.monotonic() > deadline or len(received) > MAX_LINE_BYTES:
            raise TimeoutError("no complete answer in time")
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            if between is not None:
                between()
            continue
        if not chunk:
            raise ConnectionError("the connection closed before the answer")
        received += chunk
    return bytes(received)
