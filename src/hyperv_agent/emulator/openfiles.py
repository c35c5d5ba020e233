"""Which files the emulated host's VMs hold open, as Windows holds them.

A running or paused VM has each disk of its drives open, and with a differencing disk
every parent of its chain, read-only; Windows then refuses to delete such a file or to
replace it by a rename ("the process cannot access the file because it is being used by
another process"), whoever asks. The emulated host's files refuse the same
(``EmulatedFiles``): a template a running VM's linked clone stands on is not replaced
under it. A saved or stopped VM holds nothing open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperv_agent.emulator import model, vhd
from hyperv_agent.emulator.paths import HostPathError, HostPaths
from hyperv_agent.emulator.store import Record

if TYPE_CHECKING:
    from hyperv_agent.emulator.host import EmulatedHost

_MAX_CHAIN = 16  # parents followed from one disk; deeper chains are not Hyper-V's


def held_by(host: EmulatedHost, path: str) -> str | None:
    """The name of a VM that holds the file ``path`` open, or None: a running or paused
    VM with it in a drive, or with a disk whose parents include it (both looked up by file
    in the host's indexes: no file is read)."""
    txn = host.store.transaction()
    for medium in (*model.media_of_file(txn, path), *model.media_over_file(txn, path)):
        owner = _running_owner(host, medium)
        if owner is not None:
            return owner
    return None


def parent_chain(host: EmulatedHost, parent: str | None) -> tuple[str, ...]:
    """The identities of a disk's parents, nearest first: ``parent`` (the disk's own
    ``parent_path``; None when it is not a differencing disk) and the parents its headers
    name in turn, as far as they can be read; kept on a medium as ``model.MEDIUM_PARENTS``
    when it is set."""
    found: list[str] = []
    while parent and len(found) < _MAX_CHAIN and HostPaths.identity(parent) not in found:
        found.append(HostPaths.identity(parent))
        try:
            parent = vhd.read_info(host.paths.local(parent)).parent_path
        except (HostPathError, vhd.VhdError, OSError):
            break
    return tuple(found)


def _running_owner(host: EmulatedHost, medium: Record) -> str | None:
    guid = model.guid_of(medium)
    vm = host.store.get(model.vm_path(guid)) if guid else None
    if vm is None or not model.is_running(vm):
        return None
    return str(vm["ElementName"])
