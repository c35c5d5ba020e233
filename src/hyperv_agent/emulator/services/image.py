"""Msvm_ImageManagementService: real VHD and VHDX files on the emulated host's drives.

A job that writes a file (CreateVirtualHardDisk, ConvertVirtualHardDisk,
ResizeVirtualHardDisk) holds it open until it ends, as Hyper-V's management service does
while it writes the disk: Windows refuses to delete or rename it meanwhile
(``openfiles.held_by``). Microsoft does not document the share mode; a file being written
whole shares nothing, which is the emulator's reading.

The writing is done once the call's checks are passed, as its job starts (``Call.files``):
a job failed by an injected fault (``Faults.fail_next_job``, ``hang_next_job``,
``lose_next_job`` undone) writes nothing, so its disk is as it was, a disk to make or
convert to is not there, and a disk to grow keeps its size and bytes. Microsoft does not
say what a failed job leaves of a disk; leaving it untouched is the emulator's choice,
the one its own failures make too (a new disk appears only complete, under its temporary
name until then: ``vhd``; a disk whose chain does not open is not grown).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from hyperv_agent.cim import cimxml
from hyperv_agent.cim.api import CimValue, ObjectPath, OutValue
from hyperv_agent.emulator import codes, model, vhd
from hyperv_agent.emulator.calls import Call, Embedded, MethodError, handles, instance_of
from hyperv_agent.emulator.codes import ResourceType, ReturnCode
from hyperv_agent.emulator.host import cim_datetime
from hyperv_agent.emulator.paths import HostPathError
from hyperv_agent.emulator.store import Record

IMS = "Msvm_ImageManagementService"
#: Methods that answer at once (ReturnValue 0, no job), as Hyper-V does for reads.
SYNCHRONOUS = frozenset({"getvirtualharddisksettingdata", "getvirtualharddiskstate"})


def _local(call: Call, path: str | None, *, must_exist: bool) -> Path:
    if not path:
        raise MethodError(ReturnCode.INVALID_PARAMETER, "a path is required", immediate=True)
    try:
        local = call.host.paths.local(path)
    except HostPathError as error:
        raise MethodError(ReturnCode.INVALID_PARAMETER, str(error), immediate=True) from None
    if must_exist and not local.is_file():
        raise MethodError(ReturnCode.FILE_NOT_FOUND, f"the file {path} does not exist",
                          immediate=True)
    return local


def _settings(call: Call, name: str) -> Embedded:
    settings = call.embedded(name)
    if settings.class_def.name != "Msvm_VirtualHardDiskSettingData":
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"{name} holds a {settings.class_def.name}", immediate=True)
    return settings


def _kind(settings: Embedded, path: str) -> tuple[vhd.DiskFormat, vhd.DiskType]:
    try:
        by_name = vhd.format_for_path(path)
        fmt = vhd.DiskFormat(settings.integer("Format") or by_name)
        disk_type = vhd.DiskType(settings.integer("Type") or 0)
    except (ValueError, vhd.VhdError) as error:
        raise MethodError(ReturnCode.INVALID_PARAMETER, f"{path}: {error}",
                          immediate=True) from None
    if fmt != by_name:
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"Format {int(fmt)} does not match the extension of {path}",
                          immediate=True)
    return fmt, disk_type


@handles(IMS, "CreateVirtualHardDisk")
def create_virtual_hard_disk(call: Call) -> Mapping[str, OutValue]:
    """Writes a fixed, dynamic or differencing VHD/VHDX; an existing file is refused."""
    settings = _settings(call, "VirtualDiskSettingData")
    path = settings.text("Path") or ""
    local = _local(call, path, must_exist=False)
    fmt, disk_type = _kind(settings, path)
    parent = _parent(call, settings, disk_type)
    if local.exists():
        raise MethodError(ReturnCode.FAILED, f"the file {path} already exists")
    if not local.parent.is_dir():
        raise MethodError(ReturnCode.FILE_NOT_FOUND, f"the folder of {path} does not exist")
    if disk_type == vhd.DiskType.FIXED:
        _room_for(call, path, local, settings.integer("MaxInternalSize") or 0)
    _write(call, path, lambda: vhd.create(
        local, fmt, disk_type, settings.integer("MaxInternalSize") or 0, parent=parent,
        parent_locator=settings.text("ParentPath"),
        block_size_bytes=settings.integer("BlockSize") or 0,
        logical_sector_size=settings.integer("LogicalSectorSize") or 0,
        physical_sector_size=settings.integer("PhysicalSectorSize") or 0,
        note=call.host.staging.noted, locator=path,
    ))
    return {}


def _parent(call: Call, settings: Embedded, disk_type: vhd.DiskType) -> Path | None:
    if disk_type != vhd.DiskType.DIFFERENCING:
        return None
    parent_path = settings.text("ParentPath")
    if not parent_path:
        raise MethodError(ReturnCode.INVALID_PARAMETER, "a differencing disk needs ParentPath",
                          immediate=True)
    return _local(call, parent_path, must_exist=True)


def _room_for(call: Call, path: str, local: Path, needs: int) -> None:
    """Hyper-V allocates a fixed disk's whole file while its job runs (when it is made,
    converted to, or grown), and the job fails when the volume cannot hold it: the
    volume's free space is what the lab knob ``lab_free_bytes`` reports for the drive,
    else the folder's real one (the emulator's own files are sparse, so they do not use
    it). The wording is the emulator's choice, after Windows' ERROR_DISK_FULL text."""
    free = call.host.paths.reported_free_bytes(path)
    if free is None:
        try:
            free = shutil.disk_usage(local.parent).free
        except OSError:
            return  # no such folder: the write itself fails, as it does on Hyper-V
    if needs > free:
        raise MethodError(ReturnCode.FAILED,
                          f"{path}: There is not enough space on the disk. (0x80070070) "
                          f"({needs} bytes needed, {free} free)")


def _write(call: Call, path: str, action: Callable[[], object]) -> None:
    """The call's job writes the file ``path`` with ``action`` (``Call.files``), once its
    checks are passed and only if it is not failed by an injected fault; a disk error
    fails the job (32773), a file error too (32768), naming ``path`` (the host's path of
    the file, not the emulator's own file behind it)."""

    def files() -> None:
        try:
            action()
        except vhd.VhdError as error:
            raise MethodError(ReturnCode.INVALID_PARAMETER, str(error)) from None
        except OSError as error:
            raise MethodError(ReturnCode.FAILED,
                              f"{path}: {error.strerror or error}") from None

    call.files, call.writes = files, path


@handles(IMS, "GetVirtualHardDiskSettingData")
def get_virtual_hard_disk_setting_data(call: Call) -> Mapping[str, OutValue]:
    """The disk's settings as its headers give them. Microsoft's
    Msvm_VirtualHardDiskSettingData page (learn.microsoft.com/windows/win32/hyperv_v2/
    msvm-virtualharddisksettingdata) has VirtualDiskId identify the disk itself, and
    ParentIdentifier and ParentTimestamp (Windows 10 / Server 2016 on) the parent a
    differencing disk has, empty without one; it does not say which of the file's fields
    they are. A child records of its parent only what it checks the parent by: a VHD its
    unique id and last write time, a VHDX its DataWriteGuid ([MS-VHDX] parent_linkage),
    so those are what the emulator reports (a VHDX has no parent time: null). A VHDX's
    VirtualDiskId is its Virtual Disk ID metadata item, which no child records, so a
    child's ParentIdentifier never equals its parent's VirtualDiskId for VHDX, and the
    parent's DataWriteGuid is in neither this answer nor GetVirtualHardDiskState's."""
    path = call.text("Path") or ""
    info = _info(_local(call, path, must_exist=True))
    parent = vhd.reported_parent(path, info, call.host.paths.file)
    stamp = info.parent_timestamp
    record = call.host.new_record(
        "Msvm_VirtualHardDiskSettingData", InstanceID=f"Microsoft:{info.disk_id.upper()}",
        Path=path, ParentPath=parent or "", Type=int(info.type),
        ParentIdentifier=info.parent_links[0].upper() if info.parent_links else "",
        ParentTimestamp=None if stamp is None else cim_datetime(stamp),
        Format=int(info.format), MaxInternalSize=info.virtual_size_bytes,
        BlockSize=info.block_size_bytes, LogicalSectorSize=info.logical_sector_size,
        PhysicalSectorSize=info.physical_sector_size, VirtualDiskId=info.disk_id.upper(),
        ElementName=Path(path.replace("\\", "/")).name,
    )
    return {"SettingData": cimxml.write_instance(instance_of(record))}


@handles(IMS, "GetVirtualHardDiskState")
def get_virtual_hard_disk_state(call: Call) -> Mapping[str, OutValue]:
    path = call.text("Path") or ""
    info = _info(_local(call, path, must_exist=True))
    record = call.host.new_record(
        "Msvm_VirtualHardDiskState", FileSize=info.file_size_bytes,
        InUse=_attached_running(call, path) is not None, MinInternalSize=info.virtual_size_bytes,
        PhysicalSectorSize=info.physical_sector_size, Alignment=1, FragmentationPercentage=0,
    )
    return {"State": cimxml.write_instance(instance_of(record))}


def _info(local: Path) -> vhd.DiskInfo:
    try:
        return vhd.read_info(local)
    except vhd.VhdError as error:
        raise MethodError(ReturnCode.INVALID_PARAMETER, str(error), immediate=True) from None


def _attached_running(call: Call, path: str) -> Record | None:
    """The drive holding ``path`` in a running VM, if any."""
    for medium in model.media_of_file(call.txn, path):
        resources = medium["HostResource"]
        guid = model.guid_of(medium)
        if not guid or not isinstance(resources, tuple) or not resources:
            continue
        vm = call.txn.get(model.vm_path(guid))
        if vm is not None and model.is_running(vm) and call.host.paths.same(str(resources[0]),
                                                                             path):
            return call.txn.get(ObjectPath.parse(str(medium["Parent"])))
    return None


def _changing_owner(call: Call, path: str) -> int | None:
    """The transitional state of a VM holding ``path`` whose state is changing, if any."""
    for medium in model.media_of_file(call.txn, path):
        resources, guid = medium["HostResource"], model.guid_of(medium)
        vm = call.txn.get(model.vm_path(guid)) if guid else None
        if (vm is None or not isinstance(resources, tuple) or not resources
                or not call.host.paths.same(str(resources[0]), path)):
            continue
        shown = model.transition(call.host, vm)
        if shown is not None:
            return shown
    return None


@handles(IMS, "ResizeVirtualHardDisk")
def resize_virtual_hard_disk(call: Call) -> Mapping[str, OutValue]:
    """Grows a disk; a shrink is 32773; a disk in a running VM grows only as VHDX on SCSI."""
    path = call.text("Path") or ""
    local = _local(call, path, must_exist=True)
    size = call.integer("MaxInternalSize") or 0
    info = _info(local)
    if size < info.virtual_size_bytes:
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"{path} cannot shrink from {info.virtual_size_bytes} to {size} bytes")
    changing = _changing_owner(call, path)
    if changing is not None:
        # Microsoft's page lists no code for a disk of a VM Hyper-V is starting, stopping
        # or saving (its worker opens or closes the disk meanwhile): the emulator answers
        # 32775 (invalid state), as the VM's other changes are answered meanwhile.
        raise MethodError(ReturnCode.INVALID_STATE,
                          f"{path} is in a virtual machine whose state is changing (state "
                          f"{changing}); try again once the change is done")
    drive = _attached_running(call, path)
    if drive is not None and (info.format != vhd.DiskFormat.VHDX or _on_ide(call, drive)):
        raise MethodError(ReturnCode.SYSTEM_IN_USE,
                          f"{path} is in use; only a VHDX on SCSI grows while its VM runs")
    if info.type == vhd.DiskType.FIXED:  # it stays fixed: its file grows by the difference
        _room_for(call, path, local, size - info.virtual_size_bytes)
    _parents_found(call, path, local)
    _write(call, path, lambda: _in_chain(lambda: vhd.resize(local, size, locator=path,
                                                            local_of=call.host.paths.file)))
    return {}


#: How ValidateVirtualHardDisk's job fails for each break of a chain (``vhd.ChainBreak``):
#: its ErrorCode, and the HRESULT its JobCompletionStatusCode holds (Microsoft's
#: Msvm_StorageJob page: "The HRESULT code that describes the completion status"), the
#: virtual disk driver's error Windows reports for the break. Microsoft's page for the
#: method lists 32779 (file not found) and 32787 (differencing chain cycle detected),
#: which a missing parent and a loop fail with; it lists none for a parent that is not
#: the disk its child was made from: 32768 (failed), as a VM's start fails for it
#: (``codes.PARENT_BROKEN``), is the emulator's choice, and so is a loop's status left
#: unset (Microsoft names no HRESULT for it).
_VALIDATE_BREAKS: Mapping[vhd.ChainBreak, tuple[int, int | None]] = {
    vhd.ChainBreak.MISSING: (codes.PARENT_MISSING, 0xC03A000D),
    vhd.ChainBreak.CHANGED: (codes.PARENT_BROKEN, 0xC03A000E),
    vhd.ChainBreak.LOOP: (ReturnCode.VHD_CHAIN_CYCLE, None),
}


@handles(IMS, "ValidateVirtualHardDisk")
def validate_virtual_hard_disk(call: Call) -> Mapping[str, OutValue]:
    """Opens the disk and, for a differencing disk, its whole chain of parents, read-only,
    as a VM's start opens it (``vhd.check_chain``: the parent's identity its child
    records, by the locators a parent is looked for by), writing nothing. Microsoft's page
    (learn.microsoft.com/windows/win32/hyperv_v2/validatevirtualharddisk-msvm-
    imagemanagementservice): "If the link is broken in the disk chain, a job object is
    returned with the appropriate error initialized and the child and parent properties
    are initialized to the location where the link is broken", the Msvm_StorageJob's Child
    and Parent (learn.microsoft.com/windows/win32/hyperv_v2/msvm-storagejob: "the full
    path of the child", "the file path to the parent"), shown once the job has failed:
    the deepest link that does not open, the differencing disk and the parent it names
    (``_VALIDATE_BREAKS``), as the paths the chain is walked by. A ``Path`` that cannot be
    found itself is refused at once (32779), as the service's other methods refuse it
    (the emulator's choice: the page does not say whether that is the job's error); a
    file of the chain that is no valid disk fails the job with 32773, naming no link (its
    ErrorDescription names the file, by the path the chain names it by)."""
    path = call.text("Path") or ""
    _local(call, path, must_exist=True)
    try:
        vhd.check_chain(path, call.host.paths.file)
    except vhd.BrokenChain as error:
        code, status = _VALIDATE_BREAKS[error.why]
        shows: dict[str, CimValue] = {"Child": error.child, "Parent": error.parent}
        if status is not None:
            shows["JobCompletionStatusCode"] = status
        raise MethodError(code, str(error), shows=shows) from None
    except vhd.VhdError as error:  # names the file of the chain, as the chain names it
        raise MethodError(ReturnCode.INVALID_PARAMETER, str(error)) from None
    except OSError as error:
        raise MethodError(ReturnCode.INVALID_PARAMETER, f"{path}: {error.strerror}") from None
    return {}


def _on_ide(call: Call, drive: Record) -> bool:
    controller = call.txn.get(ObjectPath.parse(str(drive["Parent"])))
    return controller is not None and controller["ResourceType"] == ResourceType.IDE_CONTROLLER


@handles(IMS, "ConvertVirtualHardDisk")
def convert_virtual_hard_disk(call: Call) -> Mapping[str, OutValue]:
    source_path = call.text("SourcePath") or ""
    source = _local(call, source_path, must_exist=True)
    if _attached_running(call, source_path) is not None:
        # "Conversion is an offline operation; the virtual hard disk must not be attached"
        # (Microsoft's Convert-VHD page): a running VM holds its disk open. The parents of
        # its disk it holds read-only, and those convert. The code is the emulator's
        # choice: "System is in use", the one Hyper-V gives for a file another holds.
        raise MethodError(ReturnCode.SYSTEM_IN_USE,
                          f"{source_path} is attached to a running virtual machine")
    settings = _settings(call, "VirtualDiskSettingData")
    path = settings.text("Path") or ""
    destination = _local(call, path, must_exist=False)
    fmt, disk_type = _kind(settings, path)
    if destination.exists():
        raise MethodError(ReturnCode.FAILED, f"the file {path} already exists")
    if disk_type == vhd.DiskType.FIXED:
        _room_for(call, path, destination, _info(source).virtual_size_bytes)
    _parents_found(call, source_path, source)
    _write(call, path, lambda: _convert(call, source_path, source, destination, fmt,
                                        disk_type))
    return {}


def _convert(call: Call, source_path: str, source: Path, destination: Path,
             fmt: vhd.DiskFormat, disk_type: vhd.DiskType) -> None:
    """A differencing source is merged with its chain of parents, found as a start finds
    them (``vhd.check_chain``: a parent moved together with its child is found beside
    it); a broken chain is refused as ``_in_chain`` says."""
    _in_chain(lambda: vhd.convert(source, destination, fmt, disk_type,
                                  note=call.host.staging.noted, locator=source_path,
                                  local_of=call.host.paths.file))


def _parents_found(call: Call, path: str, local: Path) -> None:
    """The call's check that the parents of ``path`` (at ``local``), when it is a
    differencing disk, are all found: one that is not is refused at once (``_in_chain``),
    as the call's other checks refuse, before any job (an injected fault is the next
    job's). Any other break of the chain, or a file that is no valid disk, fails the job
    as it opens the chain (``_write``)."""
    with contextlib.suppress(vhd.VhdError):
        if vhd.read_info(local).type == vhd.DiskType.DIFFERENCING:
            _in_chain(lambda: vhd.check_chain(path, call.host.paths.file))


def _in_chain(action: Callable[[], object]) -> None:
    """Run ``action``, a change of a disk that opens its chain of parents first
    (``vhd.check_chain``, for ConvertVirtualHardDisk and ResizeVirtualHardDisk alike). A
    parent that cannot be found is refused as a source that cannot be (32779), naming the
    deepest link that does not open: the missing parent and the disk that names it, as
    Hyper-V's worker names "a virtual disk in the chain of differencing disks" and the
    disk referencing it. Microsoft's pages list no code for it: the emulator's choice.
    Any other break of the chain fails the job (``_write``)."""
    try:
        action()
    except vhd.BrokenChain as error:
        if error.why is not vhd.ChainBreak.MISSING:
            raise
        raise MethodError(ReturnCode.FILE_NOT_FOUND,
                          f"the file {error.parent} does not exist (the parent of "
                          f"{error.child})", immediate=True) from None
