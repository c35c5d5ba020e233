"""Virtual hard disks: create, inspect and grow VHD/VHDX files, and find who uses one.

Files are made and changed by Hyper-V's Msvm_ImageManagementService (IMS), never written
by the agent itself, so the format details stay Hyper-V's. The IMS path is kept by
the host's session like the management service's; the embedded
Msvm_VirtualHardDiskSettingData instance is spawned once per session and reused. Round
trips once a session is warm (job polls not counted, W = job waits):

=======================  ================================================================
``create_blank``         1 call + 1 W (CreateVirtualHardDisk)
``create_differencing``  1 call + 1 W (CreateVirtualHardDisk); the parent is not read
``merged_copy``          1 call + 1 W (ConvertVirtualHardDisk); only a refusal for a
                         file that does not open pays more, to say which (``_unopened``):
                         1 call + 1 W (ValidateVirtualHardDisk, ``_validated``) at any
                         depth; when that names no link, 1 call for the source (on "file
                         not found") + 1 for each parent reached (``_missing_link``)
``read_settings``        1 call (GetVirtualHardDiskSettingData)
``broken_parent``        1 call + 1 W when a failure is a broken chain's (``_validated``);
                         when that names no link, 1 call (read_settings) + 1 for each
                         parent reached when it is a missing parent's
``resize``               1 call + 1 W (ResizeVirtualHardDisk); a refusal for a file
                         that does not open pays as ``merged_copy``'s
``find_attachment``      1 query; + 1 get when the file is attached (the VM's power state)
``iso_attachments``      1 query; + 1 get for each medium that matches (its VM)
=======================  ================================================================

Warming costs 1 query for the IMS and 1 spawn for the settings class. The format of a
file follows its extension (``.vhd`` VHD, ``.vhdx`` VHDX), as Hyper-V requires.

A job that writes a file (``create_blank``, ``create_differencing``, ``merged_copy``,
``resize``) and is still running when its wait ends (its ``policy``, or the command's
bound) is asked to stop first (``jobs.wait_or_stop``, for up to ``jobs.STOP_GRACE``), so
its caller can remove or keep what it wrote; one Hyper-V cannot stop runs on, holding its
file open, and the JobTimeout names it (``jobs.after`` removes its file once it ends).
"""

from __future__ import annotations

import dataclasses
import ntpath
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, InValue, MethodResult, ObjectPath
from hyperv_agent.errors import (
    AgentError,
    HyperVError,
    InvalidRequest,
    JobFailed,
    MethodFailed,
)
from hyperv_agent.hostfs import images
from hyperv_agent.hyperv import drives, jobs, vms
from hyperv_agent.hyperv.schema import (
    DISK_EXTENSIONS,
    DISK_MAX_BYTES,
    NAMESPACE,
    Class,
    DiskFormat,
    DiskType,
    ReturnCode,
    Subtype,
)
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import PowerState

_IMS_MISSING = "is Hyper-V installed?"


@dataclass
class _Kept:
    """What the session keeps for this module: the settings instance new disks copy."""

    template: CimInstance | None = None


@dataclass(frozen=True)
class DiskSettings:
    """What Hyper-V reports about a disk file."""

    path: str
    format: DiskFormat
    type: DiskType
    size_bytes: int  # virtual size (MaxInternalSize)
    parent_path: str | None  # differencing disks only


@dataclass(frozen=True)
class Attachment:
    """A disk file in a VM's drive."""

    vm_guid: str
    vm_name: str
    power: PowerState
    medium: ObjectPath  # the Msvm_StorageAllocationSettingData
    drive: ObjectPath  # its parent, the disk drive
    image: str = ""  # the file the medium names, as Hyper-V gives it
    changing: str | None = None  # the change Hyper-V is making to its VM (``vms.changing``)

    @property
    def vm(self) -> vms.VmRef:
        """The VM holding the file, as ``vms.find_vm`` would give it."""
        return vms.VmRef(self.vm_guid, self.vm_name, self.power, self.changing)


def disk_format(path: str) -> DiskFormat:
    """The format a file name implies; InvalidRequest for anything but .vhd / .vhdx."""
    if not images.is_disk(path):
        raise InvalidRequest(f"{path} is not a .vhd or .vhdx file")
    return DISK_EXTENSIONS[ntpath.splitext(path)[1].lower()]


def checked_size(path: str, size_bytes: int, what: str = "the size") -> int:
    """``size_bytes`` when a disk of ``path``'s format can have that virtual size: 1 byte
    up to Hyper-V's limit for the format (``DISK_MAX_BYTES``: a VHD 2040 GiB, a VHDX
    64 TiB). Otherwise InvalidRequest naming ``what`` (the request's field), so a size
    Hyper-V would refuse is refused before anything is written. No round trip."""
    fmt = disk_format(path)
    limit = DISK_MAX_BYTES[fmt]
    if not 1 <= size_bytes <= limit:
        raise InvalidRequest(f"{what} must be a positive number of bytes that a {fmt.name} "
                             f"holds, at most {limit} ({_units(limit)}), not {size_bytes}")
    return size_bytes


def _units(size: int) -> str:
    """A limit of ``DISK_MAX_BYTES`` (whole GiB) in TiB or GiB."""
    return f"{size >> 40} TiB" if size % (1 << 40) == 0 else f"{size >> 30} GiB"


# --- the image management service ---------------------------------------------------------


async def image_service(hv: HyperV) -> ObjectPath:
    """The IMS path: 1 query on the session's first call, then kept."""
    return await hv.service_path(Class.IMAGE_SERVICE, _IMS_MISSING)


async def _call(hv: HyperV, method: str, params: Mapping[str, InValue],
                policy: jobs.WaitPolicy, grace: jobs.WaitPolicy | None = None) -> MethodResult:
    """``jobs.call`` on the IMS; a stale kept path is looked up again, once."""
    return await hv.call_service(Class.IMAGE_SERVICE, _IMS_MISSING, method, params, policy,
                                 grace)


async def _settings_template(hv: HyperV) -> CimInstance:
    kept = hv.kept(_Kept)
    if kept.template is None:
        kept.template = await hv.cim.spawn(Class.VHD_SETTINGS, NAMESPACE)
    return kept.template


async def _new_disk_settings(hv: HyperV, path: str, disk_type: DiskType, *,
                             size_bytes: int = 0, parent: str | None = None) -> CimInstance:
    """The settings of a new disk at ``path``, of its extension's format; block and sector
    sizes left to Hyper-V."""
    return (await _settings_template(hv)).updated(
        Path=path, Type=int(disk_type), Format=int(disk_format(path)), ParentPath=parent,
        MaxInternalSize=size_bytes, BlockSize=0, LogicalSectorSize=0, PhysicalSectorSize=0)


# --- creating -----------------------------------------------------------------------------


async def create_blank(
    hv: HyperV, path: str, size_bytes: int, *, fixed: bool = False,
    policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY, grace: jobs.WaitPolicy = jobs.STOP_GRACE,
) -> None:
    """Create an empty disk of ``size_bytes`` at ``path`` (.vhd or .vhdx): dynamically
    expanding, or with ``fixed`` a fixed disk, whose file takes the whole size at once
    (Hyper-V allocates it while the job runs, and fails it when the volume lacks room).

    A size the format cannot hold (``checked_size``) or a bad extension: InvalidRequest,
    nothing done. An existing file or a missing folder: Hyper-V refuses
    (MethodFailed/JobFailed) and nothing is written, so a repeat fails; check first.
    Afterwards the file exists, empty, with that virtual size. Hyper-V writes the file
    whole or not at all. 1 call + 1 W when warm.
    """
    checked_size(path, size_bytes)
    kind = DiskType.FIXED if fixed else DiskType.DYNAMIC
    settings = await _new_disk_settings(hv, path, kind, size_bytes=size_bytes)
    await _call(hv, "CreateVirtualHardDisk", {"VirtualDiskSettingData": settings}, policy,
                grace)


async def create_differencing(
    hv: HyperV, path: str, parent: str, *, policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY,
    grace: jobs.WaitPolicy = jobs.STOP_GRACE,
) -> None:
    """Create a differencing disk at ``path`` whose parent is ``parent`` (a linked clone).

    Both files must have the same format (extension): InvalidRequest otherwise. A missing
    parent, an existing ``path`` or a missing folder: Hyper-V refuses, nothing is
    written. The parent is never changed, nor read beyond its headers: the new file
    holds only metadata until the guest writes. Its virtual size is the parent's. Not
    idempotent (a repeat finds the file). 1 call + 1 W when warm.
    """
    fmt = disk_format(path)
    if disk_format(parent) is not fmt:
        raise InvalidRequest(f"{path} and its parent {parent} must both be {fmt.name}")
    settings = await _new_disk_settings(hv, path, DiskType.DIFFERENCING, parent=parent)
    await _call(hv, "CreateVirtualHardDisk", {"VirtualDiskSettingData": settings}, policy,
                grace)


async def merged_copy(
    hv: HyperV, source: str, path: str, *, fixed: bool = False, parent: str | None = None,
    policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY, grace: jobs.WaitPolicy = jobs.STOP_GRACE,
) -> None:
    """Write at ``path`` a new dynamic disk (with ``fixed``, a fixed one, its file the
    whole virtual size) holding what the disk ``source`` shows: a differencing disk is
    merged with its chain of parents into it, so the new disk stands alone
    (ConvertVirtualHardDisk). ``source`` and its parents are not changed.
    Both files must have the same format (extension): InvalidRequest otherwise. An
    existing ``path``, a missing parent or folder: Hyper-V refuses. Hyper-V writes the
    file whole or not at all. A job still writing when its wait ends (``policy`` ran out,
    or the caller was cancelled) is stopped first, waited on for up to ``grace``
    (``jobs.wait_or_stop``), so the caller can remove ``path``. ``parent``: the
    ParentPath of ``source`` when the caller has read its settings (``read_settings``). A
    refusal for a file that does not open (``_unopened``) says which: ``source`` itself
    (``MissingDisk``), or the deepest link of its chain that does not open, the disk
    standing on a parent that is missing or is not the disk it was made from
    (``BrokenParent``); the calls that tell are made only then. 1 call + 1 W when warm.
    """
    fmt = disk_format(path)
    if disk_format(source) is not fmt:
        raise InvalidRequest(f"{path} and {source} must both be {fmt.name}")
    settings = await _new_disk_settings(hv, path, DiskType.FIXED if fixed else DiskType.DYNAMIC)
    async with _naming_what_does_not_open(hv, source, parent, policy):
        await _call(hv, "ConvertVirtualHardDisk",
                    {"SourcePath": source, "VirtualDiskSettingData": settings}, policy, grace)


# --- reading and growing ------------------------------------------------------------------


async def read_settings(
    hv: HyperV, path: str, *, policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY
) -> DiskSettings:
    """Format, type, virtual size and parent of the disk at ``path``. Read-only.

    A missing or unreadable file: MethodFailed (Hyper-V's return code, e.g. 32779 file
    not found), naming ``path``, as a return code names no file. 1 call.
    """
    try:
        result = await _call(hv, "GetVirtualHardDiskSettingData", {"Path": path}, policy)
    except MethodFailed as error:
        code = error.return_value
        raise MethodFailed(f"GetVirtualHardDiskSettingData of {path}", code,
                           ReturnCode.describe(code)) from error
    text = result.text("SettingData")
    if not text:
        raise HyperVError(f"GetVirtualHardDiskSettingData returned no settings for {path}")
    return _disk_settings(hv.cim.parse_embedded(text), path)


#: Windows' words for a differencing disk whose parent does not open (the virtual disk
#: driver's ERROR_VHD_PARENT_VHD_NOT_FOUND, 0xC03A000D, and
#: ERROR_VHD_CHILD_PARENT_ID_MISMATCH, 0xC03A000E), as a failed start job's
#: ErrorDescription quotes them: the parent cannot be found, or is not the disk the child
#: was made from. Neither names the parent.
_PARENT_NOT_FOUND = ("0xc03a000d", "cannot locate the parent virtual hard disk")
_PARENT_MISMATCH = ("0xc03a000e", "mismatch in the identifiers of the parent")


#: Parents followed from one disk when the one that cannot be found is looked for: Hyper-V's
#: checkpoints and linked clones stay far below, and the bound keeps a failure's diagnosis
#: short whatever the files say.
_MAX_CHAIN = 16


@dataclass(frozen=True)
class MissingDisk:
    """The disk ``path`` a call was given cannot be found itself (not a parent of it)."""

    path: str

    def __str__(self) -> str:
        return f"the disk {self.path} cannot be found"


@dataclass(frozen=True)
class BrokenParent:
    """The differencing disk ``disk`` stands on ``parent`` (its ParentPath), which cannot
    be found (``missing``) or is not the disk it was made from; ``other``: another reason
    it does not open, in words (a loop, or Hyper-V's own for a break it names no cause of)."""

    disk: str
    parent: str
    missing: bool
    other: str = ""

    def __str__(self) -> str:
        why = (f"which does not open: {self.other}" if self.other else
               "which cannot be found" if self.missing else
               "which is not the disk it was made from (replaced or written since)")
        return f"the disk {self.disk} stands on the parent {self.parent}, {why}"


async def broken_parent(
    hv: HyperV, failure: str, paths: Sequence[str], *,
    policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY,
) -> BrokenParent | None:
    """When ``failure`` (a failed job's words) is Windows' error for a broken chain of
    differencing disks, which link broke it, in the chain of the first of ``paths`` (the
    VM's disks, its root first) that ``failure`` names, else of the first of ``paths``:
    the one Hyper-V's validation of that disk names (``_validated``: a clone of a clone
    whose grandparent is gone, or was replaced by another disk of its name, names the
    grandparent and the parent standing on it, not the clone's own parent). When the
    validation names none, as before it: for a parent that cannot be found the deepest
    link that does not open (``_missing_link``), else the disk's own ParentPath. None when
    ``failure`` is another error, or no such disk names a parent it can be asked for.
    Read-only; 1 call + 1 W (ValidateVirtualHardDisk) for a broken chain, none
    otherwise, so only a failure pays it."""
    missing = _parent_missing(failure)
    if missing is None:
        return None
    text = failure.lower()
    named = [path for path in paths if path.lower() in text]
    for path in (named or list(paths))[:1]:
        if isinstance(found := await _validated(hv, path, policy), BrokenParent):
            return found
        try:
            parent = (await read_settings(hv, path, policy=policy)).parent_path
        except AgentError:
            return None
        if parent:
            return await _deepest_break(hv, path, parent, missing, policy)
    return None


def _parent_missing(failure: str) -> bool | None:
    """Whether ``failure``'s words are Windows' for a parent that cannot be found (True)
    or one that is not the disk its child was made from (False); None for any other."""
    text = failure.lower()
    if any(words in text for words in _PARENT_NOT_FOUND):
        return True
    if any(words in text for words in _PARENT_MISMATCH):
        return False
    return None


@asynccontextmanager
async def _naming_what_does_not_open(hv: HyperV, disk: str, parent: str | None,
                                     policy: jobs.WaitPolicy) -> AsyncIterator[None]:
    """Around a call that changes the disk ``disk`` (whose ParentPath the caller read as
    ``parent``, None when it did not), which Hyper-V makes only once the disk opens with
    its chain of parents (ConvertVirtualHardDisk, ResizeVirtualHardDisk): a refusal for a
    file that does not open (``_unopened``) is raised as a HyperVError adding which, any
    other as Hyper-V worded it. No round trip unless such a refusal comes."""
    try:
        yield
    except (MethodFailed, JobFailed) as error:
        broken = await _unopened(hv, error, disk, parent, policy)
        if broken is None:
            raise
        raise HyperVError(f"{error}; {broken}") from error


async def _unopened(hv: HyperV, error: MethodFailed | JobFailed, disk: str,
                    parent: str | None, policy: jobs.WaitPolicy
                    ) -> BrokenParent | MissingDisk | None:
    """The file that made Hyper-V refuse to open the disk ``disk`` with its chain (to
    merge or grow it; the caller read its ParentPath as ``parent``), when the refusal is
    for one: "file not found" (32779, returned or a job's error code; the emulator
    refuses a missing disk or parent so, Microsoft lists the code without saying for
    what), or a failed job quoting Windows' words for a broken chain
    (``_parent_missing``, as a start's does). Neither names the file, so Hyper-V's
    validation of ``disk`` is asked (``_validated``): the link its failed job names,
    however deep (a grandparent missing, or replaced by another disk of its name). A
    chain that opens whole was refused for another file (a merge's destination folder):
    None, and the refusal keeps its own words. When the validation tells nothing (its
    own "file not found" returned without a job names no file either: ``disk`` gone, or,
    on a host answering without a job, a link), as before it: on "file not found"
    ``disk``'s settings are read, ``disk`` gone itself (a volume removed meanwhile) a
    ``MissingDisk``, else its parents' in turn (``_missing_link``); on Windows' words
    ``_deepest_break`` follows from ``parent`` (nothing without it).

    None for any other failure, which keeps its own words. Read-only, and paid only by
    a refusal: 1 call + 1 W (ValidateVirtualHardDisk, no W when it returns a code); the
    reads of before only when it tells nothing (1 call for the disk, + 1 per parent
    reached)."""
    missing = _parent_missing(str(error))
    code = error.return_value if isinstance(error, MethodFailed) else error.error_code
    if missing is None and code != ReturnCode.FILE_NOT_FOUND:
        return None
    found = await _validated(hv, disk, policy)
    if not isinstance(found, _Untold):
        if found is None and missing is not None and parent is not None:
            return BrokenParent(disk, parent, missing)  # opens now: laid at its own parent
        return found
    if missing is not None:
        return None if parent is None else await _deepest_break(hv, disk, parent, missing,
                                                                policy)
    try:
        settings = await read_settings(hv, disk, policy=policy)
    except MethodFailed as unread:
        return MissingDisk(disk) if unread.return_value == ReturnCode.FILE_NOT_FOUND else None
    except AgentError:
        return None
    if not settings.parent_path:
        return None
    return await _missing_link(hv, disk, settings.parent_path, policy)


class _Untold:
    """What ``_validated`` gives when Hyper-V's validation tells nothing of a chain."""


_UNTOLD = _Untold()

#: The HRESULTs a failed Msvm_StorageJob's JobCompletionStatusCode holds for a broken
#: chain (the virtual disk driver's ERROR_VHD_PARENT_VHD_NOT_FOUND and
#: ERROR_VHD_CHILD_PARENT_ID_MISMATCH, the errors ``_PARENT_NOT_FOUND`` and
#: ``_PARENT_MISMATCH`` quote): Microsoft's Msvm_StorageJob page has it hold "the HRESULT
#: code that describes the completion status".
_STATUS_NOT_FOUND = 0xC03A000D
_STATUS_MISMATCH = 0xC03A000E
#: ValidateVirtualHardDisk's "Vhd differencing chain cycle detected" (Microsoft's page
#: for the method lists it, from Windows Server 2012 R2 on).
_CHAIN_CYCLE = 32787


async def _validated(hv: HyperV, disk: str, policy: jobs.WaitPolicy
                     ) -> BrokenParent | _Untold | None:
    """Where the chain of the disk ``disk`` breaks, as Hyper-V's
    Msvm_ImageManagementService.ValidateVirtualHardDisk tells it: the method opens the
    disk's whole chain, and "if the link is broken in the disk chain, a job object is
    returned with the appropriate error initialized and the child and parent properties
    are initialized to the location where the link is broken"
    (learn.microsoft.com/windows/win32/hyperv_v2/validatevirtualharddisk-msvm-
    imagemanagementservice; the Msvm_StorageJob's Child and Parent, "the full path of the
    child" and "the file path to the parent", learn.microsoft.com/windows/win32/hyperv_v2/
    msvm-storagejob). The one answer that names a link whose parent changed: a disk's
    settings do not (a VHDX child records its parent's DataWriteGuid, which WMI does not
    report), so a grandparent replaced by another disk of its name is found only so.

    The link named is a ``BrokenParent``: missing for "file not found" (32779, or the
    driver's 0xC03A000D in JobCompletionStatusCode or Windows' words), not the disk its
    child was made from for the driver's mismatch (0xC03A000E, or its words), else
    Hyper-V's words for it (a loop, 32787). A chain that opens whole, None. A refusal
    returned without a job (``MethodFailed``), any other failure, a failed job naming no
    link, or a host without the method: ``_UNTOLD``. A returned "file not found" (32779)
    names no file: ``disk`` itself may be gone, or, on a host that answers the method
    without a job (the page has it return 4096 only "if the operation is performed
    asynchronously"), a link of its chain; the caller's reads of the disk's settings and
    its parents' tell which. Read-only; 1 call + 1 W at any depth of the chain."""
    try:
        await _call(hv, "ValidateVirtualHardDisk", {"Path": disk}, policy)
    except MethodFailed:
        return _UNTOLD
    except JobFailed as error:
        job = error.job
        if not isinstance(job, CimInstance) or not (child := job.string("Child")) or not (
                parent := job.string("Parent")):
            return _UNTOLD
        status = job.integer("JobCompletionStatusCode") or 0
        words = _parent_missing(error.description)
        if status == _STATUS_NOT_FOUND or words is True or (
                error.error_code == ReturnCode.FILE_NOT_FOUND):
            return BrokenParent(child, parent, True)
        if status == _STATUS_MISMATCH or words is False:
            return BrokenParent(child, parent, False)
        other = ("it is already in the disk's chain of parents (a loop)"
                 if error.error_code == _CHAIN_CYCLE else
                 error.description or f"error code {error.error_code}")
        return BrokenParent(child, parent, False, other)
    except AgentError:
        return _UNTOLD
    return None


async def _deepest_break(hv: HyperV, disk: str, parent: str, missing: bool,
                         policy: jobs.WaitPolicy) -> BrokenParent:
    """The broken link Windows' words for a broken chain below the differencing disk
    ``disk`` (whose ParentPath is ``parent``) point at: for a missing parent the deepest
    link that does not open (``_missing_link``), else (or when every parent is found
    now) ``disk``'s own parent, the link the words cannot be laid at more precisely."""
    found = await _missing_link(hv, disk, parent, policy) if missing else None
    return found or BrokenParent(disk, parent, missing)


async def _missing_link(hv: HyperV, disk: str, parent: str,
                        policy: jobs.WaitPolicy) -> BrokenParent | None:
    """The deepest link of the chain of the differencing disk ``disk`` (whose ParentPath
    is ``parent``) that does not open: following the ParentPath each parent's settings
    report, the first parent that cannot be found (32779), with the disk that names it,
    as Hyper-V's worker names the disk of a chain it could not open and the one
    referencing it. A clone of a clone whose grandparent is gone is the parent standing
    on the grandparent, not the clone on its parent (which is there). None when every
    parent is found (or one cannot be read for another reason, or the chain loops or is
    deeper than ``_MAX_CHAIN``). Read-only; 1 call (``read_settings``) per parent
    reached."""
    seen = {disk.lower()}
    for _ in range(_MAX_CHAIN):
        try:
            settings = await read_settings(hv, parent, policy=policy)
        except MethodFailed as error:
            if error.return_value != ReturnCode.FILE_NOT_FOUND:
                return None
            return BrokenParent(disk, parent, True)
        except AgentError:
            return None
        seen.add(parent.lower())
        if not settings.parent_path or settings.parent_path.lower() in seen:
            return None
        disk, parent = parent, settings.parent_path
    return None


def _disk_settings(data: CimInstance, path: str) -> DiskSettings:
    try:
        fmt = DiskFormat(data.integer("Format") or 0)
        kind = DiskType(data.integer("Type") or 0)
    except ValueError as error:
        raise HyperVError(f"{path}: Hyper-V reports an unknown disk kind ({error})") from None
    return DiskSettings(path=data.string("Path") or path, format=fmt, type=kind,
                        size_bytes=data.integer("MaxInternalSize") or 0,
                        parent_path=data.string("ParentPath") or None)


async def resize(
    hv: HyperV, path: str, size_bytes: int, *, parent: str | None = None,
    policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY, grace: jobs.WaitPolicy = jobs.STOP_GRACE,
) -> None:
    """Set the virtual size of the disk at ``path`` to ``size_bytes`` (grow only). The disk
    keeps its type: a fixed disk's file grows by the difference while the job runs.

    A size the format cannot hold (``checked_size``): InvalidRequest, no call. The caller
    refuses shrinking; Hyper-V refuses it too (32773), as it refuses growing a disk in use
    other than a VHDX on SCSI of a running VM. Hyper-V opens a differencing disk with its
    chain of parents to grow it: a refusal for a file that does not open says which, as
    ``merged_copy``'s does (``_unopened``; ``parent``: the ParentPath of ``path`` when the
    caller has read its settings, named when Hyper-V's validation names no link), the
    calls that tell made only then. On any refusal the file is unchanged.
    Safe to repeat with the same size. 1 call + 1 W.
    """
    checked_size(path, size_bytes)
    async with _naming_what_does_not_open(hv, path, parent, policy):
        await _call(hv, "ResizeVirtualHardDisk",
                    {"Path": path, "MaxInternalSize": size_bytes}, policy, grace)


# --- who uses a file ----------------------------------------------------------------------


async def find_attachment(hv: HyperV, path: str, *, iso: bool = False) -> Attachment | None:
    """The VM drive holding the disk file ``path`` (with ``iso``, the DVD drive holding
    the ISO image ``path``); None when no VM uses it. Read-only.
    (``drives.detach_volume`` takes it out of that VM.)

    Hyper-V does not stop a stopped VM's definition from naming a file another VM uses
    (one left behind by a host that failed while the VM was started elsewhere, and then
    migrated back), so of several VMs holding the file the one that is on is taken
    (``vms.on_first``), as ``vms.find_vm`` takes the one that is on of several of one
    name: a caller refusing to touch a running VM's disk must see that VM, not the
    leftover.

    One query over every virtual hard disk medium of the host (WMI cannot filter on the
    array HostResource, so the match is made here, ignoring case), then one get for the
    owning VM's name and power state (one per VM holding the file until a running one).
    Media of snapshots are not VMs and are skipped.
    """
    key = drives.same_file_key(path)
    found: list[Attachment] = []
    async for owner in _holding(hv, Subtype.ISO if iso else Subtype.VHD,
                                lambda image: drives.same_file_key(image) == key):
        if owner.power is PowerState.RUNNING:
            return owner
        found.append(owner)
    return min(found, key=lambda owner: vms.on_first(owner.power), default=None)


async def iso_attachments(hv: HyperV, wanted: Callable[[str], bool]) -> list[Attachment]:
    """Every DVD drive of the host's VMs whose ISO medium is a file ``wanted`` (given the
    medium's host path) accepts, with its VM, in WMI's order; media of snapshots are
    skipped. Read-only. 1 query, + 1 get for each medium that matches."""
    return [owner async for owner in _holding(hv, Subtype.ISO, wanted)]


async def _holding(hv: HyperV, subtype: str, wanted: Callable[[str], bool]
                   ) -> AsyncIterator[Attachment]:
    """The media of kind ``subtype`` (virtual hard disks, ISOs) whose file ``wanted``
    accepts, each with its VM (one get as each is reached), in WMI's order; media of
    snapshots are skipped. 1 query over every medium of the kind."""
    query = wql.select(Class.SASD, wql.eq("ResourceSubType", subtype),
                       ("InstanceID", "HostResource", "Parent"))
    for medium in await hv.cim.query(query, NAMESPACE):
        resources = medium.strings("HostResource")
        if medium.path is None or not resources or not wanted(resources[0]):
            continue
        owner = await _owner(hv, medium)
        if owner is not None:
            yield dataclasses.replace(owner, image=resources[0])


async def _owner(hv: HyperV, medium: CimInstance) -> Attachment | None:
    assert medium.path is not None
    guid = vms.owner_guid(medium.string("InstanceID") or "")
    parent = medium.string("Parent")
    if not guid or not parent:
        return None
    vm = await vms.get_vm(hv, guid)
    if vm is None:
        return None
    state = vm.integer("EnabledState")
    return Attachment(guid, vm.string("ElementName") or "", vms.power_state(state),
                      medium.path, ObjectPath.parse(parent), changing=vms.changing(state))
