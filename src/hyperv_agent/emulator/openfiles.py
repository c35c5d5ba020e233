"""Which files the emulated host's VMs hold open, as Windows holds them.

A running or paused VM's worker process (vmwp.exe) has each disk of its drives open, and
with a differencing disk every parent of its chain, read-only; Windows then refuses to
delete such a file or to replace it by a rename ("the process cannot access the file
because it is being used by another process", ERROR_SHARING_VIOLATION, 32), whoever asks.
What else another process may do follows from the share mode the worker opened the file
with (CreateFile's dwShareMode: a later open asking for read, write or delete access fails
with a sharing violation unless every open handle shares that access). Microsoft does not
document the worker's share modes; the emulator takes them from what is observed on
Windows and what Hyper-V itself must allow:

- the disk in a drive (the top of its chain) is opened for read and write and shares
  nothing: copying a running VM's VHD/VHDX fails with the sharing violation (which is why
  backups of running VMs go through VSS checkpoints instead), so neither reading nor
  writing it is allowed (``Hold.writable``);
- a parent of the chain, and an ISO image in a DVD drive, is opened read-only sharing
  read: several VMs' differencing disks stand on one parent, and one ISO is inserted in
  several VMs at once, which only works if each worker lets the others read it; so it
  may be read, but not opened for writing.

The emulated host's files refuse the same (``EmulatedFiles``): a template a running VM's
linked clone stands on is not replaced under it, and a running VM's volume is not read.
A saved or stopped VM holds nothing open; a VM whose state is changing (Starting,
Stopping, Saving, ...: a RequestStateChange job runs) holds its files as a running one
does, whatever state it reads as meanwhile: a stopping VM's worker closes its disks only
when the VM is off, a starting one's has opened them, and a saving one's writes its memory
while the disks stay open (Microsoft does not say when the worker opens and closes them;
the emulator's reading, as for the resize of such a VM's disk). A file on a share is
refused too while a VM of another host of the cluster holds it
(``cluster.Member.held_elsewhere``): the file server enforces the share modes of every
client's handles, so a host replacing the config drive ISO of a VM that runs on another
host meets the same sharing violation. A disk the image management service still writes
(a storage job creating, converting into or growing it) is held as a running VM's disk is,
until the job ends (``services.image``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hyperv_agent.emulator import codes, jobs, model, vhd
from hyperv_agent.emulator.paths import HostPaths
from hyperv_agent.emulator.store import Record

if TYPE_CHECKING:
    from hyperv_agent.emulator.host import EmulatedHost

@dataclass(frozen=True)
class Hold:
    """How a running VM holds a file open: ``writable``, the disk in one of its drives
    (read and write, shared with no one), else a parent of one or an ISO image (read-only,
    shared for reading). ``vm`` names the holder: the VM, or the storage job writing
    the file."""

    vm: str
    writable: bool


def held_by(host: EmulatedHost, path: str) -> Hold | None:
    """How a VM holds the file ``path`` open, or None: a running or paused VM (or one
    whose state is changing) with it in
    a drive, or with a disk whose parents include it (both looked up by file in the host's
    indexes: no file is read). A writable hold comes first when there are several. A disk
    a storage job still writes is held as a running VM's disk is, by the job
    (``jobs.writer``)."""
    writing = jobs.writer(host, path)
    if writing is not None:
        return Hold(f"the {writing['ElementName']} job", writable=True)
    txn = host.store.transaction()
    found: Hold | None = None
    for medium in model.media_of_file(txn, path):
        owner = _running_owner(host, medium)
        if owner is not None:
            if medium["ResourceSubType"] != codes.SUBTYPE_ISO:
                return Hold(owner, writable=True)
            found = found or Hold(owner, writable=False)
    for medium in model.media_over_file(txn, path):
        owner = _running_owner(host, medium)
        if owner is not None:
            return found or Hold(owner, writable=False)
    return found


def parent_chain(host: EmulatedHost, path: str | None) -> tuple[str, ...]:
    """The identities of the parents of the disk ``path`` (None: no disk, an ISO image),
    nearest first, as far as its chain can be walked (``vhd.parents``: a parent that
    cannot be found or read is named, and ends it); kept on a medium as
    ``model.MEDIUM_PARENTS`` when it is set."""
    found: list[str] = []
    try:
        for parent in vhd.parents(path, host.paths.file) if path else ():
            if parent.looped:
                break
            found.append(HostPaths.identity(parent.path))
    except (vhd.VhdError, OSError):
        pass
    return tuple(found)


def _running_owner(host: EmulatedHost, medium: Record) -> str | None:
    guid = model.guid_of(medium)
    vm = host.store.get(model.vm_path(guid)) if guid else None
    if vm is None or not (model.is_running(vm) or model.transition(host, vm) is not None):
        return None
    return str(vm["ElementName"])
