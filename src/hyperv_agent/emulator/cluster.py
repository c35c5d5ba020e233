"""Emulated hosts of several processes as one cluster, through a shared directory.

Every emulated host whose configuration names the same ``cluster_dir`` is a member. The
directory holds:

- ``hosts/<name>.json``: each member's registration (``peers.Registration``): its name,
  private address, migration listener addresses, the endpoint of its listener, its pid,
  and whether it is up;
- ``handovers/``: migrations under way (:mod:`hyperv_agent.emulator.handover`);
- ``secret``: a random token that every request between members carries (made once,
  readable by its owner only).

A member listens on a free TCP port of its private address (of loopback when that address
is not one of this machine's) and publishes it. Liveness needs no heartbeat: a member
whose process stopped has no listener, so connecting to it is refused, as a Hyper-V host
whose management service is stopped refuses the migration connection; a clean stop also
marks its registration down. A name or private address a live member already has is
refused at start.

Requests run on the emulator's thread (``Worker.call``); a worker waiting on another
member meanwhile runs them (``Worker.drain``), so two members asking each other at the same
moment both proceed.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hyperv_agent.emulator import handover, openfiles
from hyperv_agent.emulator.calls import MethodError
from hyperv_agent.emulator.codes import ReturnCode
from hyperv_agent.emulator.offer import Offer
from hyperv_agent.emulator.peers import (
    ACCEPT_TIMEOUT_S,
    CHECK_TIMEOUT_S,
    MAX_LINE_BYTES,
    Peer,
    PeerDown,
    PeerLost,
    PeerRefused,
    PeerUnknown,
    Registration,
)
from hyperv_agent.errors import ConfigError

if TYPE_CHECKING:
    from hyperv_agent.emulator.host import EmulatedHost

log = logging.getLogger("hyperv_agent.emulator")
#: How soon a closing member's listener notices it is asked to stop.
SHUTDOWN_POLL_S = 0.05

__all__ = ["Directory", "Member", "Peer", "PeerDown", "PeerLost", "PeerRefused", "PeerUnknown",
           "join"]


class Directory:
    """The cluster directory's layout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hosts = root / "hosts"
        self.handovers = root / "handovers"
        for folder in (self.hosts, self.handovers):
            folder.mkdir(parents=True, exist_ok=True)

    def token(self) -> str:
        """The cluster's secret, made by the first member that needs it."""
        path = self.root / "secret"
        if not path.exists():
            made = self.root / f".secret-{os.getpid()}-{secrets.token_hex(4)}"
            handle = os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(handle, "w", encoding="ascii") as stream:
                stream.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):
                os.link(made, path)  # atomic: only the first one lands
            made.unlink()
        return path.read_text(encoding="ascii").strip()

    def registrations(self) -> list[Registration]:
        found = (Registration.read(path) for path in sorted(self.hosts.glob("*.json")))
        return [registration for registration in found if registration is not None]

    def publish(self, registration: Registration) -> None:
        path = self.hosts / f"{registration.name.lower()}.json"
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(registration.to_json()), encoding="utf-8")
        temporary.replace(path)


class Member:
    """This process's emulated host as a member of the cluster."""

    def __init__(self, host: EmulatedHost, directory: Directory) -> None:
        self.host, self.directory = host, directory
        self.token = directory.token()
        self.closed = False
        self._server = _Listener(self, _bind_address(host.config.private_ip))
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        args=(SHUTDOWN_POLL_S,), daemon=True,
                                        name=f"cluster-{host.name}")
        bound = self._server.server_address
        self.registration = Registration(
            host.name, host.config.private_ip, (host.config.private_ip,),
            (str(bound[0]), int(bound[1])), os.getpid())

    @property
    def name(self) -> str:
        return self.host.name

    def start(self) -> None:
        self._thread.start()
        self.directory.publish(self.registration)

    def is_me(self, name: str) -> bool:
        return self.registration.answers_to(name)

    def find(self, name: str) -> Peer:
        """The other member ``name`` names (its name, DNS label or address); PeerUnknown
        when none does."""
        for registration in self.directory.registrations():
            if registration.name.lower() != self.name.lower() and registration.answers_to(name):
                return Peer(registration, self.token)
        raise PeerUnknown(name)

    def held_elsewhere(self, path: str) -> openfiles.Hold | None:
        """How a VM of another member holds the file ``path`` open (a file on a share the
        members reach: the file server enforces every client's share modes, so a rename
        over an ISO a VM of another host has in its DVD drive fails as on that host);
        None when none does. A member that cannot be reached holds nothing (its process,
        and with it its VMs' workers, is gone). Blocks: run it off the event loop."""
        for registration in self.directory.registrations():
            if registration.name.lower() == self.name.lower() or not registration.up:
                continue
            try:
                found = Peer(registration, self.token).holder(path)
            except (PeerDown, PeerRefused):
                continue
            if found is not None:
                return openfiles.Hold(found[0], writable=found[1])
        return None

    def close(self) -> None:
        """Stop listening and mark this host down (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(OSError):
            self.directory.publish(_down(self.registration))

    # --- requests from other members ------------------------------------------------------

    def answer(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """The answer to one request (run on a listener thread)."""
        token = str(message.get("token", ""))
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return _refusal(ReturnCode.ACCESS_DENIED, "not a member of this cluster")
        if str(message.get("to", "")).lower() != self.name.lower():
            return _refusal(ReturnCode.INVALID_PARAMETER, f"this host is {self.name}")
        try:
            return self._operation(message)
        except MethodError as error:
            return _refusal(error.code, error.description, error.immediate)
        except TimeoutError:
            return _refusal(ReturnCode.TIMEOUT, f"{self.name} did not finish in time")
        except Exception as error:  # the requester gets a refusal; this host serves on
            log.exception("cluster request %s failed", message.get("op"))
            return _refusal(ReturnCode.FAILED, f"{self.name}: {error}")

    def _operation(self, message: Mapping[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "ping":
            return {"ok": True, "name": self.name}
        if op == "check":
            offer = Offer.from_json(message["offer"])
            self._on_worker(lambda: handover.check(self.host, offer), CHECK_TIMEOUT_S)
            return {"ok": True}
        if op == "accept":
            offer_id = str(message["id"])
            copied = self._on_worker(
                lambda: handover.accept(self.host, self.directory.handovers, offer_id),
                ACCEPT_TIMEOUT_S)
            return {"ok": True, "copied": copied}
        if op == "held":
            path = str(message["path"])
            hold = self._on_worker(lambda: openfiles.held_by(self.host, path), CHECK_TIMEOUT_S)
            return {"ok": True, "vm": hold.vm if hold else None,
                    "writable": bool(hold and hold.writable)}
        return _refusal(ReturnCode.NOT_SUPPORTED, f"unknown request {op!r}")

    def _on_worker(self, work: Callable[[], Any], timeout_s: float) -> Any:
        def guarded() -> Any:
            if self.closed:
                raise MethodError(ReturnCode.SYSTEM_NOT_AVAILABLE, f"{self.name} is stopping")
            return work()

        return self.host.worker.call(guarded, timeout_s)


def _refusal(code: int, description: str, immediate: bool = False) -> dict[str, Any]:
    return {"ok": False, "code": int(code), "description": description, "immediate": immediate}


def _down(registration: Registration) -> Registration:
    return Registration(registration.name, registration.private_ip, registration.addresses,
                        registration.endpoint, registration.pid, up=False)


def _bind_address(private_ip: str) -> tuple[str, int]:
    """The host's private address when this machine has it, else loopback (port: any)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((private_ip, 0))
        except OSError:
            return ("127.0.0.1", 0)
    return (private_ip, 0)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _Listener)
        line = self.rfile.readline(MAX_LINE_BYTES + 1)
        try:
            message = json.loads(line)
            answer = server.member.answer(message) if isinstance(message, dict) else (
                _refusal(ReturnCode.INVALID_PARAMETER, "a request is a JSON object"))
        except ValueError:
            answer = _refusal(ReturnCode.INVALID_PARAMETER, "a request is one line of JSON")
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(answer).encode() + b"\n")


class _Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, member: Member, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.member = member


def join(host: EmulatedHost) -> Member:
    """Make ``host`` a member of the cluster its configuration names: refuse a name or
    private address a live member has, finish the hand-overs an earlier run of it left,
    then listen and publish its registration."""
    assert host.config.cluster_dir is not None
    directory = Directory(host.config.cluster_dir)
    _refuse_duplicate(directory, host)
    handover.recover(host, directory.handovers)
    member = Member(host, directory)
    member.start()
    return member


def _refuse_duplicate(directory: Directory, host: EmulatedHost) -> None:
    token = directory.token()
    for registration in directory.registrations():
        same_name = registration.name.lower() == host.name.lower()
        if not (same_name or registration.private_ip == host.config.private_ip):
            continue
        try:
            Peer(registration, token).ping()
        except (PeerDown, PeerRefused):
            continue  # an earlier run that is gone
        taken = "name" if same_name else f"private address {registration.private_ip}"
        raise ConfigError(
            f"the emulated host {host.name} cannot join the cluster in {directory.root}: "
            f"the running host {registration.name} (pid {registration.pid}) has that "
            f"{taken}; give each host its own [emulator] host_name and [agent] private_ip")
