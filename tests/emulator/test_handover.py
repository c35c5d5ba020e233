"""The source's side of a hand-over against a stand-in destination that answers as a
member would, or breaks off: the name of the offer file decides, whatever the answer."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hyperv_agent.emulator.calls import MethodError
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.handover import Handover
from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.offer import LIVE, Offer
from hyperv_agent.emulator.peers import Peer, Registration

#: What the stand-in does with a request: it gets the hand-over folder and the request,
#: and returns the answer line (None: close without answering).
Behaviour = Callable[[Path, dict[str, object]], bytes | None]


@contextmanager
def _destination(folder: Path, behaviour: Behaviour) -> Iterator[Peer]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            answer = behaviour(folder, json.loads(self.rfile.readline()))
            if answer is not None:
                self.wfile.write(answer + b"\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    port = int(server.server_address[1])
    try:
        yield Peer(Registration("HV-B", "10.0.0.2", ("10.0.0.2",), ("127.0.0.1", port), 1),
                   "token")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[EmulatedHost]:
    opened = EmulatedHost(EmulatorConfig(state_dir=tmp_path / "a", host_name="HV-A"))
    yield opened
    opened.close()


def _offer() -> Offer:
    return Offer(kind=LIVE, source="HV-A", destination="HV-B", guid="G", vm_name="vm1",
                 records=())


def _refuses(folder: Path, request: dict[str, object]) -> bytes:
    return json.dumps({"ok": False, "code": 32778, "description": "no memory left"}).encode()


def _accepts_then_breaks_off(folder: Path, request: dict[str, object]) -> None:
    offer_id = request["id"]
    (folder / f"{offer_id}.offer").rename(folder / f"{offer_id}.accepted")


def test_refused_hand_over_is_withdrawn_and_fails_at_the_destination(
        host: EmulatedHost, tmp_path: Path) -> None:
    with _destination(tmp_path, _refuses) as peer:
        handover = Handover(tmp_path, host, peer, _offer())
        with pytest.raises(MethodError) as refused:
            handover.complete()
    assert refused.value.code == 32778
    assert refused.value.description == ("Virtual machine migration operation for 'vm1' "
                                         "failed at migration destination 'HV-B'. "
                                         "no memory left")
    assert list(tmp_path.glob("*.offer")) == list(tmp_path.glob("*.withdrawn")) == []


def test_hand_over_counts_as_done_when_the_destination_accepted_and_broke_off(
        host: EmulatedHost, tmp_path: Path) -> None:
    with _destination(tmp_path, _accepts_then_breaks_off) as peer:
        copied = Handover(tmp_path, host, peer, _offer()).complete()
    assert copied == []  # not known: the source keeps its files
    assert [p.suffix for p in tmp_path.glob("*.*") if p.is_file()] == [".accepted"]


def test_hand_over_is_withdrawn_when_the_destination_breaks_off_before_accepting(
        host: EmulatedHost, tmp_path: Path) -> None:
    with _destination(tmp_path, lambda folder, request: None) as peer:
        handover = Handover(tmp_path, host, peer, _offer())
        with pytest.raises(MethodError) as lost:
            handover.complete()
    assert lost.value.code == 32777
    assert lost.value.description.endswith(
        "Failed to establish a connection with host 'HV-B': An existing connection was "
        "forcibly closed by the remote host. (0x80072746)")
    assert list(tmp_path.glob("*.offer")) == []
