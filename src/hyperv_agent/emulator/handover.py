"""Handing a VM over to a host of another process, through the cluster directory.

Once the migration job has ended, the VM must be on exactly one host, whichever process
dies midway. The decision is one atomic rename in the directory's ``handovers`` folder:

1. the source writes ``<id>.offer`` (the offer as JSON) and asks the destination to
   accept it;
2. the destination stages the VM (``arrival.receive``), copies the files of disks that
   move, writes ``<id>.adapted`` (the changes it will store) and renames ``<id>.offer`` to
   ``<id>.accepted``: from this rename on the VM is the destination's;
3. the destination commits, renames ``<id>.accepted`` to ``<id>.arrived`` and answers,
   the guest of a VM moved live going on there with a shutdown or restart it was
   carrying out (``power.guest_arrived``);
4. the source deletes its copy of the VM and removes ``<id>.arrived``.

A source that gives up (the destination refused, could not be reached, or broke off)
withdraws the offer by renaming ``<id>.offer`` away; when that rename fails, the
destination had accepted, and the source completes the move. A member finishes at start
(``recover``) what its process left: as destination it stores the VM of an ``.accepted``
hand-over it did not commit; as source it deletes the VM it handed over (the incarnation
it offered, never one that came back since) and withdraws an offer nobody accepted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator import arrival, model
from hyperv_agent.emulator.arrival import DESTINATION_UNREACHABLE, FileCopy
from hyperv_agent.emulator.calls import MethodError
from hyperv_agent.emulator.codes import ReturnCode
from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.jobbook import Settle
from hyperv_agent.emulator.offer import ARRIVAL, Offer, record_from_json, record_json
from hyperv_agent.emulator.peers import Peer, PeerDown, PeerRefused, why
from hyperv_agent.emulator.schema import CLASSES
from hyperv_agent.emulator.services import power
from hyperv_agent.emulator.store import Transaction

log = logging.getLogger("hyperv_agent.emulator")

OFFERED, ACCEPTED, ARRIVED, ADAPTED, WITHDRAWN = (
    ".offer", ".accepted", ".arrived", ".adapted", ".withdrawn")
WITHDRAWN_BEFORE_ACCEPT = ReturnCode.FAILED


class Handover:
    """The source's side of handing ``offer``'s VM to ``peer`` (run at the call's commit)."""

    def __init__(self, folder: Path, host: EmulatedHost, peer: Peer, offer: Offer) -> None:
        self.folder, self.host, self.peer, self.offer = folder, host, peer, offer

    def complete(self) -> list[Path]:
        """Hand the VM over; the source files the destination copied (to remove unless
        kept). MethodError when the move did not happen, with nothing changed."""
        _write(self.folder / f"{self.offer.id}{OFFERED}", {"offer": self.offer.to_json()})
        try:
            return self.peer.accept(self.offer.id, between=self.host.worker.drain)
        except PeerRefused as refused:
            if _withdraw(self.folder, self.offer.id):
                raise MethodError(refused.code, self.offer.failure(
                    "destination", refused.description)) from None
        except PeerDown as error:
            if _withdraw(self.folder, self.offer.id):
                raise MethodError(DESTINATION_UNREACHABLE, self.offer.failure(
                    "source", f"Failed to establish a connection with host "
                    f"'{self.peer.name}': {why(error)}")) from None
        log.warning("migration %s: the answer of %s was lost after it took %s; the files "
                    "of disks that moved stay on the source", self.offer.id, self.peer.name,
                    self.offer.vm_name)
        return []

    def finish(self) -> None:
        """After the source's commit: the hand-over is over, and so are the earlier ones
        whose destination stored the VM only when it started again."""
        (self.folder / f"{self.offer.id}{ARRIVED}").unlink(missing_ok=True)
        for path in sorted(self.folder.glob(f"*{ARRIVED}")):
            offer = _read_offer(path)
            if offer is not None and offer.source.lower() == self.host.name.lower():
                _recover_source(self.host, self.folder, offer, path)


def check(host: EmulatedHost, offer: Offer) -> None:
    """The destination's check of ``offer``: MethodError when it would refuse it."""
    arrival.receive(host, host.store.transaction(), offer)


def accept(host: EmulatedHost, folder: Path, offer_id: str) -> list[str]:
    """The destination takes the VM of hand-over ``offer_id`` (steps 2 and 3); the source
    files it copied. MethodError, with nothing changed, when it refuses or the offer was
    withdrawn."""
    offer = _read_offer(folder / f"{offer_id}{OFFERED}")
    if offer is None or offer.id != offer_id:
        raise MethodError(WITHDRAWN_BEFORE_ACCEPT, f"the migration {offer_id} was withdrawn")
    if offer.destination.lower() != host.name.lower():
        raise MethodError(ReturnCode.INVALID_PARAMETER, f"the migration is for {offer.destination}")
    txn = host.store.transaction()
    copies = arrival.receive(host, txn, offer)
    _decide(folder, offer, txn, copies)
    txn.commit()
    _arrived(folder, offer_id)
    if offer.moves_the_vm:  # a guest shutting down or restarting goes on here
        power.guest_arrived(host, offer.guid)
    return [str(source) for source, _ in copies]


def _decide(folder: Path, offer: Offer, txn: Transaction, copies: list[FileCopy]) -> None:
    copied: list[Path] = []
    adapted = folder / f"{offer.id}{ADAPTED}"
    try:
        for source, target in copies:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            copied.append(target)
        puts, deletes = txn.changes()
        _write(adapted, {"offer": offer.to_json(), "puts": [record_json(r) for r in puts],
                         "deletes": deletes})
        (folder / f"{offer.id}{OFFERED}").rename(folder / f"{offer.id}{ACCEPTED}")
    except BaseException as error:
        for target in copied:
            target.unlink(missing_ok=True)
        adapted.unlink(missing_ok=True)
        if isinstance(error, FileNotFoundError) and not (folder / f"{offer.id}{OFFERED}").exists():
            raise MethodError(WITHDRAWN_BEFORE_ACCEPT,
                              f"the migration {offer.id} was withdrawn") from None
        raise


def _arrived(folder: Path, offer_id: str) -> None:
    (folder / f"{offer_id}{ACCEPTED}").rename(folder / f"{offer_id}{ARRIVED}")
    (folder / f"{offer_id}{ADAPTED}").unlink(missing_ok=True)


def _withdraw(folder: Path, offer_id: str) -> bool:
    """Take the offer back; False when the destination had accepted it."""
    withdrawn = folder / f"{offer_id}{WITHDRAWN}"
    try:
        (folder / f"{offer_id}{OFFERED}").rename(withdrawn)
    except FileNotFoundError:
        return False
    withdrawn.unlink(missing_ok=True)
    return True


# --- recovery -----------------------------------------------------------------------------


def recover(host: EmulatedHost, folder: Path) -> None:
    """Finish what an earlier run of this host left half-way in ``folder``."""
    for path in sorted(folder.iterdir()):
        if path.suffix not in (OFFERED, ACCEPTED, ARRIVED):
            continue
        offer = _read_offer(path)
        if offer is None:
            continue
        me = host.name.lower()
        if offer.destination.lower() == me and path.suffix == ACCEPTED:
            _store_adapted(host, folder, offer)
            _arrived(folder, offer.id)
        elif offer.source.lower() == me:
            _recover_source(host, folder, offer, path)


def _recover_source(host: EmulatedHost, folder: Path, offer: Offer, path: Path) -> None:
    if path.suffix == OFFERED and _withdraw(folder, offer.id):
        log.info("migration %s of %s: withdrawn, nobody took it", offer.id, offer.vm_name)
        return
    _forget(host, offer)
    (folder / f"{offer.id}{ARRIVED}").unlink(missing_ok=True)


def _forget(host: EmulatedHost, offer: Offer) -> None:
    """Delete the VM the source handed over, unless it is another incarnation; the move
    is made, so its job's work is done (``jobbook.Settle``): a source stopped before its
    own commit shows that job completed, not failed, when it opens again."""
    txn = host.store.transaction()
    if offer.job:
        Settle(ObjectPath.parse(offer.job))(txn)
    vm = txn.get(model.vm_path(offer.guid))
    if not offer.moves_the_vm or vm is None or vm.meta.get(ARRIVAL) != offer.incarnation:
        txn.commit()
        return
    for record in model.owned_records(txn, tuple(CLASSES.values()), offer.guid):
        txn.delete(record.path)
    txn.commit()
    log.warning("migration %s: %s was handed to %s before this host stopped; removed here",
                offer.id, offer.vm_name, offer.destination)


def _store_adapted(host: EmulatedHost, folder: Path, offer: Offer) -> None:
    """Store the VM of an accepted hand-over the destination did not commit."""
    data = _read(folder / f"{offer.id}{ADAPTED}")
    present = host.store.get(model.vm_path(offer.guid) if offer.moves_the_vm
                             else arrival.planned_path(offer.guid))
    if data is None or present is not None:
        return
    txn = host.store.transaction()
    for key in data["deletes"]:
        txn.delete_key(str(key))
    for item in data["puts"]:
        txn.put(record_from_json(item))
    txn.commit()
    log.warning("migration %s: %s stored, as accepted before this host stopped",
                offer.id, offer.vm_name)


# --- files --------------------------------------------------------------------------------


def _write(path: Path, data: dict[str, Any]) -> None:
    """Write ``path`` whole or not at all."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return data
    return None


def _read_offer(path: Path) -> Offer | None:
    data = _read(path)
    if data is None:
        return None
    try:
        return Offer.from_json(data["offer"])
    except (KeyError, ValueError):
        log.warning("hand-over file %s is not readable; left alone", path)
        return None
