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

_DISK_SUFFIXES = (".vhd", ".vhdx", ".avhd", ".avhdx")
_MAX_CHAIN = 16  # parents followed from one disk; deeper chains are not Hyper-V's


def held_by(host: EmulatedHost, path: str) -> str | None:
    """The name of a VM that holds the file ``path`` open, or None. Its drives are looked
    up by file (an index); a disk file is then looked for among the parents of every
    running VM's differencing disks (their headers read)."""
    txn = host.store.transaction()
    for medium in model.media_of_file(txn, path):
        vm = _running_owner(host, medium)
        if vm is not None:
            return vm
    if not path.lower().endswith(_DISK_SUFFIXES):
        return None
    wanted = HostPaths.identity(path)
    for medium in host.records("Msvm_StorageAllocationSettingData", txn):
        owner = _running_owner(host, medium)
        if owner is not None and wanted in _parents(host, _file_of(medium)):
            return owner
    return None


def _running_owner(host: EmulatedHost, medium: Record) -> str | None:
    guid = model.guid_of(medium)
    vm = host.store.get(model.vm_path(guid)) if guid else None
    if vm is None or not model.is_running(vm):
        return None
    return str(vm["ElementName"])


def _file_of(medium: Record) -> str | None:
    resources = medium["HostResource"]
    return str(resources[0]) if isinstance(resources, tuple) and resources else None


def _parents(host: EmulatedHost, path: str | None) -> set[str]:
    """The identities of the parents of the disk ``path`` (none when it is not a
    differencing disk or cannot be read)."""
    found: set[str] = set()
    while path and len(found) < _MAX_CHAIN:
        try:
            parent = vhd.read_info(host.paths.local(path)).parent_path
        except (HostPathError, vhd.VhdError, OSError):
            return found
        if not parent:
            return found
        found.add(HostPaths.identity(parent))
        path = parent
    return found
