"""Msvm_ImageManagementService writes real disk files that qemu-img recognises."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hyperv_agent.cim.api import CimInstance, InValue, MethodResult
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from tests.conftest import requires_tool
from tests.diskfiles import loop_vhd_chain
from tests.emulator.kit import (
    attach_vhdx,
    define_vm,
    failure,
    finished,
    ok,
    request_state,
    service,
)

GIB = 1 << 30


async def _settings(cim: EmulatorCim, path: str, fmt: int, kind: int, size: int = GIB,
                    parent: str | None = None) -> CimInstance:
    return (await cim.spawn("Msvm_VirtualHardDiskSettingData")).updated(
        Path=path, Format=fmt, Type=kind, MaxInternalSize=size, ParentPath=parent,
        BlockSize=0, LogicalSectorSize=0, PhysicalSectorSize=0)


async def _create(cim: EmulatorCim, settings: CimInstance) -> int:
    ims = await service(cim, "Msvm_ImageManagementService")
    result = await cim.invoke(ims, "CreateVirtualHardDisk", {"VirtualDiskSettingData": settings})
    if result.return_value in (0, 4096):
        job = result.path("Job")
        if job is None:
            return 0
        done = await cim.get(job)
        return 0 if done["JobState"] == 7 else int(done.integer("ErrorCode") or 0)
    return result.return_value


def _qemu_info(path: Path) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    info: dict[str, object] = json.loads(out)
    return info


@requires_tool("qemu-img")
async def test_dynamic_vhdx_is_read_by_qemu_when_created_through_the_service(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    (tmp_path / "C" / "vols").mkdir(parents=True)
    code = await _create(emulator, await _settings(emulator, "C:\\vols\\data.vhdx", 3, 3, 8 * GIB))
    assert code == 0
    info = _qemu_info(tmp_path / "C" / "vols" / "data.vhdx")
    assert (info["format"], info["virtual-size"]) == ("vhdx", 8 * GIB)
    assert (tmp_path / "C" / "vols" / "data.vhdx").stat().st_size < 16 << 20


@requires_tool("qemu-img")
async def test_fixed_vhd_is_read_by_qemu_when_created_through_the_service(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    (tmp_path / "C" / "vols").mkdir(parents=True)
    assert await _create(emulator, await _settings(emulator, "C:\\vols\\f.vhd", 2, 2, GIB)) == 0
    out = subprocess.run(["qemu-img", "info", "--output=json", "-f", "vpc",
                          str(tmp_path / "C" / "vols" / "f.vhd")],
                         check=True, capture_output=True, text=True).stdout
    assert json.loads(out)["virtual-size"] == GIB


async def test_differencing_disk_records_its_parent(emulator: EmulatorCim, tmp_path: Path) -> None:
    (tmp_path / "C" / "pool").mkdir(parents=True)
    assert await _create(emulator, await _settings(emulator, "C:\\pool\\base.vhdx", 3, 3)) == 0
    child = await _settings(emulator, "C:\\pool\\child.vhdx", 3, 4, 0, "C:\\pool\\base.vhdx")
    assert await _create(emulator, child) == 0
    ims = await service(emulator, "Msvm_ImageManagementService")
    result = await emulator.invoke(ims, "GetVirtualHardDiskSettingData",
                                   {"Path": "C:\\pool\\child.vhdx"})
    assert result.return_value == 0 and result.path("Job") is None
    text = result.text("SettingData")
    assert text is not None
    settings = emulator.parse_embedded(text)
    assert (settings["Type"], settings["Format"]) == (4, 3)
    assert settings["ParentPath"] == "C:\\pool\\base.vhdx"
    assert settings["MaxInternalSize"] == GIB


async def _parent_path(cim: EmulatorCim, path: str) -> object:
    ims = await service(cim, "Msvm_ImageManagementService")
    result = await cim.invoke(ims, "GetVirtualHardDiskSettingData", {"Path": path})
    text = result.text("SettingData")
    assert result.return_value == 0 and text is not None
    return cim.parse_embedded(text)["ParentPath"]


@pytest.mark.parametrize(("fmt", "ext"), [(3, ".vhdx"), (2, ".vhd")])
async def test_a_disk_reports_the_parent_it_resolves_to_and_the_recorded_one_when_none(
    emulator: EmulatorCim, tmp_path: Path, fmt: int, ext: str,
) -> None:
    """GET_VIRTUAL_DISK_INFO's parent location is the parent's path once resolved, the
    recorded paths when not: a chain made in C:\\old and moved to C:\\new opens by its
    relative locators, and each disk reports the parent beside it, not the file it was
    made from (which is gone); with a parent gone too, the one recorded (absolute)."""
    (tmp_path / "C" / "old").mkdir(parents=True)
    assert await _create(emulator, await _settings(emulator, f"C:\\old\\base{ext}", fmt,
                                                   3)) == 0
    for child, parent in (("mid", "base"), ("top", "mid")):
        settings = await _settings(emulator, f"C:\\old\\{child}{ext}", fmt, 4, 0,
                                   f"C:\\old\\{parent}{ext}")
        assert await _create(emulator, settings) == 0
    new = (tmp_path / "C" / "old").rename(tmp_path / "C" / "new")

    assert await _parent_path(emulator, f"C:\\new\\top{ext}") == f"C:\\new\\mid{ext}"
    assert await _parent_path(emulator, f"C:\\new\\mid{ext}") == f"C:\\new\\base{ext}"
    assert await _parent_path(emulator, f"C:\\new\\base{ext}") == ""
    (new / f"base{ext}").unlink()
    assert await _parent_path(emulator, f"C:\\new\\mid{ext}") == f"C:\\old\\base{ext}"
    assert await _parent_path(emulator, f"C:\\new\\top{ext}") == f"C:\\new\\mid{ext}"


async def test_a_disk_whose_parent_is_gone_reports_the_path_its_validation_names(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    """A VHDX made by Hyper-V records its parent's absolute path with the Win32 prefix
    (``\\\\?\\C:\\...``, as [MS-VHDX]'s absolute_win32_path): once that parent is gone,
    the disk's settings report as its ParentPath the path the failed validation names
    as its Parent, the last one the parent was looked for at, not the raw locator."""
    pool = tmp_path / "C" / "pool"
    pool.mkdir(parents=True)
    base = pool / "base.vhdx"
    vhd.create(base, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, GIB)
    vhd.create(pool / "top.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0,
               parent=base, parent_locator="\\\\?\\C:\\pool\\base.vhdx",
               locator="C:\\pool\\top.vhdx")
    assert await _parent_path(emulator, "C:\\pool\\top.vhdx") == "C:\\pool\\base.vhdx"
    base.unlink()
    job = await finished(emulator, await _validate(emulator, "C:\\pool\\top.vhdx"))
    assert job is not None and job["Parent"] == "C:\\pool\\base.vhdx", job
    assert await _parent_path(emulator, "C:\\pool\\top.vhdx") == job["Parent"]


async def test_create_refused_when_format_or_path_is_wrong(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    (tmp_path / "C" / "vols").mkdir(parents=True)
    cases = [
        ("C:\\vols\\x.vhd", 32773),  # VHDX format with a .vhd name
        ("C:\\nofolder\\x.vhdx", 32779),  # folder missing
        ("C:\\vols\\..\\..\\x.vhdx", 32773),  # climbs out of the drive
        ("Q:\\x.vhdx", 32779),  # a drive with no folder behind it
        ("C:\\vols\\ok.vhdx", 0),
        ("C:\\vols\\ok.vhdx", 32768),  # exists now
    ]
    for path, expected in cases:
        assert await _create(emulator, await _settings(emulator, path, 3, 3)) == expected, path
    assert sorted(p.name for p in (tmp_path / "C" / "vols").iterdir()) == ["ok.vhdx"]


@pytest.mark.parametrize(("fmt", "ext"), [(3, "vhdx"), (2, "vhd")])
async def test_a_checkpoints_avhdx_or_avhd_is_a_disk_of_its_format_everywhere(
    emulator: EmulatorCim, tmp_path: Path, fmt: int, ext: str,
) -> None:
    """A checkpoint's differencing disk is named .avhdx (.avhd for a VHD): Hyper-V makes,
    reads, validates and attaches it as a disk of the format its name ends in."""
    drive_c = tmp_path / "C"
    (drive_c / "pool").mkdir(parents=True)
    base, top = f"C:\\pool\\base.{ext}", f"C:\\pool\\base_1.A{ext.upper()}"
    assert await _create(emulator, await _settings(emulator, base, fmt, 3)) == 0
    assert await _create(emulator, await _settings(emulator, top, fmt, 4, 0, base)) == 0
    assert await _parent_path(emulator, top) == base
    await ok(emulator, await _validate(emulator, top))
    other = 5 - fmt  # the other format, refused for the name as for a .vhd/.vhdx
    mismatched = await _settings(emulator, f"C:\\pool\\x.a{ext}", other, 4, 0, base)
    assert await _create(emulator, mismatched) == 32773
    vm = await define_vm(emulator)
    attached = await attach_vhdx(emulator, vm, drive_c, name="root.avhdx")
    assert vhd.read_info(attached).format is vhd.DiskFormat.VHDX


async def test_resize_grows_and_refuses_shrink(emulator: EmulatorCim, tmp_path: Path) -> None:
    (tmp_path / "C" / "vols").mkdir(parents=True)
    assert await _create(emulator, await _settings(emulator, "C:\\vols\\r.vhdx", 3, 3, GIB)) == 0
    ims = await service(emulator, "Msvm_ImageManagementService")
    grow: dict[str, InValue] = {"Path": "C:\\vols\\r.vhdx", "MaxInternalSize": 2 * GIB}
    await ok(emulator, await emulator.invoke(ims, "ResizeVirtualHardDisk", grow))
    shrink: dict[str, InValue] = {"Path": "C:\\vols\\r.vhdx", "MaxInternalSize": GIB}
    assert await failure(emulator, await emulator.invoke(ims, "ResizeVirtualHardDisk",
                                                         shrink)) == 32773
    state = await emulator.invoke(ims, "GetVirtualHardDiskState", {"Path": "C:\\vols\\r.vhdx"})
    text = state.text("State")
    assert text is not None and emulator.parse_embedded(text)["MinInternalSize"] == 2 * GIB


async def test_resize_grows_a_differencing_vhdx_but_not_a_differencing_vhd(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    """Microsoft's ResizeVirtualHardDisk page: a differencing VHDX grows, a differencing
    VHD does not (a linked clone's root disk grows when its format is VHDX)."""
    (tmp_path / "C" / "pool").mkdir(parents=True)
    ims = await service(emulator, "Msvm_ImageManagementService")
    for ext, fmt, expected in ((".vhdx", 3, None), (".vhd", 2, 32773)):
        base, child = f"C:\\pool\\base{ext}", f"C:\\pool\\child{ext}"
        assert await _create(emulator, await _settings(emulator, base, fmt, 3)) == 0
        settings = await _settings(emulator, child, fmt, 4, 0, base)
        assert await _create(emulator, settings) == 0
        grow: dict[str, InValue] = {"Path": child, "MaxInternalSize": 2 * GIB}
        result = await emulator.invoke(ims, "ResizeVirtualHardDisk", grow)
        if expected is None:
            await ok(emulator, result)
        else:
            assert await failure(emulator, result) == expected
        read = await emulator.invoke(ims, "GetVirtualHardDiskSettingData", {"Path": child})
        text = read.text("SettingData")
        assert text is not None
        disk = emulator.parse_embedded(text)
        size = 2 * GIB if expected is None else GIB
        assert (disk["Type"], disk["MaxInternalSize"], disk["ParentPath"]) == (4, size, base)


@pytest.mark.parametrize(("gone", "expected"), [
    ("base", 32779), ("mid", 32779), ("base replaced", 32773), (None, None)])
async def test_resize_opens_a_differencing_disks_chain_and_refuses_a_broken_one(
    emulator: EmulatorCim, tmp_path: Path, gone: str | None, expected: int | None,
) -> None:
    """Hyper-V opens a differencing disk with its parents to grow it: a clone whose
    parent, or whose parent's parent, cannot be found is refused as ConvertVirtualHardDisk
    refuses it (32779), one whose parent is not the disk it was made from fails its job,
    and the file is left as it was; a whole chain grows."""
    pool = tmp_path / "C" / "pool"
    pool.mkdir(parents=True)
    ims = await service(emulator, "Msvm_ImageManagementService")
    assert await _create(emulator, await _settings(emulator, "C:\\pool\\base.vhdx", 3, 3)) == 0
    for child, parent in (("mid", "base"), ("top", "mid")):
        settings = await _settings(emulator, f"C:\\pool\\{child}.vhdx", 3, 4, 0,
                                   f"C:\\pool\\{parent}.vhdx")
        assert await _create(emulator, settings) == 0
    if gone is not None:
        (pool / f"{gone.split()[0]}.vhdx").unlink()
    if gone == "base replaced":  # a template of the same name made anew
        assert await _create(emulator, await _settings(emulator, "C:\\pool\\base.vhdx", 3,
                                                       3)) == 0
    before = (pool / "top.vhdx").read_bytes()
    grow: dict[str, InValue] = {"Path": "C:\\pool\\top.vhdx", "MaxInternalSize": 2 * GIB}
    result = await emulator.invoke(ims, "ResizeVirtualHardDisk", grow)
    if expected is None:
        await ok(emulator, result)
        assert vhd.read_info(pool / "top.vhdx").virtual_size_bytes == 2 * GIB
    else:
        assert await failure(emulator, result) == expected
        assert (pool / "top.vhdx").read_bytes() == before


async def test_resize_refuses_the_disk_of_a_vm_whose_state_is_changing_until_it_is_done(
    make_config: Callable[..., EmulatorConfig], tmp_path: Path
) -> None:
    """A VM Hyper-V is stopping still holds its disks (its worker closes them when it is
    off): its disk grows once the VM is off, not meanwhile (32775)."""
    now = [1_700_000_000.0]
    cim = EmulatorCim.open(make_config(), lambda: now[0])
    try:
        vm = await define_vm(cim)
        await attach_vhdx(cim, vm, tmp_path / "C")
        await ok(cim, await request_state(cim, vm, 2))
        cim.host.config = dataclasses.replace(cim.host.config, latency=LatencyModel(job_s=2.0))
        assert (await request_state(cim, vm, 3)).return_value == 4096
        ims = await service(cim, "Msvm_ImageManagementService")
        grow: dict[str, InValue] = {"Path": "C:\\disks\\root.vhdx", "MaxInternalSize": 2 * GIB}
        refused = await cim.invoke(ims, "ResizeVirtualHardDisk", grow)
        now[0] += 2.0  # the stop, and the refused job, are done
        assert await failure(cim, refused) == 32775
        grown = await cim.invoke(ims, "ResizeVirtualHardDisk", grow)
        now[0] += 2.0
        await ok(cim, grown)
    finally:
        await cim.close()


async def test_convert_refuses_the_disk_of_a_running_vm_but_not_its_parent(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    """Conversion is an offline operation (Microsoft's Convert-VHD page): the disk of a
    running VM does not convert until the VM is off; the parent it stands on, which the
    VM holds read-only, converts while it runs."""
    drive_c = tmp_path / "C"
    (drive_c / "pool").mkdir(parents=True)
    assert await _create(emulator, await _settings(emulator, "C:\\pool\\base.vhdx", 3, 3)) == 0
    vm = await define_vm(emulator)
    await attach_vhdx(emulator, vm, drive_c, parent="C:\\pool\\base.vhdx")
    await ok(emulator, await request_state(emulator, vm, 2))
    ims = await service(emulator, "Msvm_ImageManagementService")

    async def convert(source: str, target: str) -> MethodResult:
        settings = await _settings(emulator, target, 3, 3, 0)
        return await emulator.invoke(ims, "ConvertVirtualHardDisk",
                                     {"SourcePath": source, "VirtualDiskSettingData": settings})

    running = await convert("C:\\disks\\root.vhdx", "C:\\pool\\copy.vhdx")
    assert await failure(emulator, running) == 32774
    assert not (drive_c / "pool" / "copy.vhdx").exists()
    await ok(emulator, await convert("C:\\pool\\base.vhdx", "C:\\pool\\base-copy.vhdx"))
    await ok(emulator, await request_state(emulator, vm, 3))
    await ok(emulator, await convert("C:\\disks\\root.vhdx", "C:\\pool\\copy.vhdx"))
    assert (drive_c / "pool" / "copy.vhdx").is_file()


async def test_a_fixed_disk_is_refused_where_its_volume_cannot_hold_it_and_grows_fixed(
    make_config: Callable[..., EmulatorConfig], tmp_path: Path
) -> None:
    """Hyper-V allocates a fixed disk's whole file while its job runs: made, converted to
    or grown past the volume's free space, the job fails and no file is left; a dynamic
    disk of any size is made, and a fixed one that fits stays fixed when it grows."""
    pool = tmp_path / "C" / "pool"
    pool.mkdir(parents=True)
    cim = EmulatorCim.open(make_config(lab_free_bytes={"C": 3 * GIB}))
    try:
        ims = await service(cim, "Msvm_ImageManagementService")
        assert await _create(cim, await _settings(cim, "C:\\pool\\big.vhdx", 3, 2, 4 * GIB)) \
            == 32768
        assert await _create(cim, await _settings(cim, "C:\\pool\\thin.vhdx", 3, 3, 4 * GIB)) \
            == 0
        assert await _create(cim, await _settings(cim, "C:\\pool\\fat.vhdx", 3, 2, 2 * GIB)) \
            == 0
        target = await _settings(cim, "C:\\pool\\conv.vhdx", 3, 2, 0)
        convert: dict[str, InValue] = {"SourcePath": "C:\\pool\\thin.vhdx",
                                       "VirtualDiskSettingData": target}
        assert await failure(cim, await cim.invoke(ims, "ConvertVirtualHardDisk", convert)) \
            == 32768
        too_far: dict[str, InValue] = {"Path": "C:\\pool\\fat.vhdx", "MaxInternalSize": 6 * GIB}
        assert await failure(cim, await cim.invoke(ims, "ResizeVirtualHardDisk", too_far)) \
            == 32768
        grow: dict[str, InValue] = {"Path": "C:\\pool\\fat.vhdx", "MaxInternalSize": 4 * GIB}
        await ok(cim, await cim.invoke(ims, "ResizeVirtualHardDisk", grow))
        read = await cim.invoke(ims, "GetVirtualHardDiskSettingData",
                                {"Path": "C:\\pool\\fat.vhdx"})
        text = read.text("SettingData")
        assert text is not None
        disk = cim.parse_embedded(text)
        assert (disk["Type"], disk["MaxInternalSize"]) == (2, 4 * GIB)
    finally:
        await cim.close()
    assert sorted(p.name for p in pool.iterdir()) == ["fat.vhdx", "thin.vhdx"]


_MIB = 1 << 20


async def _disk_call(cim: EmulatorCim, method: str) -> MethodResult:
    """One call of the image service that writes a file of C:\\pool (base.vhdx, 64 MiB,
    dynamic, with data): a new dynamic disk, a differencing disk on base.vhdx, a fixed
    copy of it, or base.vhdx grown."""
    ims = await service(cim, "Msvm_ImageManagementService")
    if method == "ResizeVirtualHardDisk":
        return await cim.invoke(ims, method, {"Path": "C:\\pool\\base.vhdx",
                                              "MaxInternalSize": 128 * _MIB})
    if method == "ConvertVirtualHardDisk":
        target = await _settings(cim, "C:\\pool\\fixed.vhdx", 3, 2, 0)
        return await cim.invoke(ims, method, {"SourcePath": "C:\\pool\\base.vhdx",
                                              "VirtualDiskSettingData": target})
    differencing = method.endswith("differencing")
    settings = await _settings(cim, "C:\\pool\\new.vhdx", 3, 4 if differencing else 3,
                               0 if differencing else 64 * _MIB,
                               "C:\\pool\\base.vhdx" if differencing else None)
    return await cim.invoke(ims, "CreateVirtualHardDisk", {"VirtualDiskSettingData": settings})


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("fault", ["fail", "hang", "lose"])
@pytest.mark.parametrize("call", ["CreateVirtualHardDisk", "CreateVirtualHardDisk differencing",
                                  "ConvertVirtualHardDisk", "ResizeVirtualHardDisk"])
async def test_a_disk_job_that_fails_by_an_injected_fault_leaves_the_files_as_they_were(
    emulator: EmulatorCim, tmp_path: Path, call: str, fault: str,
) -> None:
    """A job that ends in Exception (``fail_next_job``), never ends (``hang_next_job``)
    or is lost undone (``lose_next_job(done=False)``) changes no file: no disk made, no
    temporary file left, the disk to grow as it was. The same call then does its work."""
    pool = tmp_path / "C" / "pool"
    pool.mkdir(parents=True)
    vhd.create(pool / "base.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 64 * _MIB)
    vhd.write_data(pool / "base.vhdx", 0, b"guest data")
    before = _files(pool)
    method = call.split()[0]
    if fault == "fail":
        emulator.faults.fail_next_job(method, 32774, "The disk is in use (injected).")
    elif fault == "hang":
        emulator.faults.hang_next_job(method)
    else:
        emulator.faults.lose_next_job(method, done=False)
    result = await _disk_call(emulator, call)
    assert result.return_value == 4096
    if fault == "fail":
        assert await failure(emulator, result) == 32774
    elif fault == "hang":
        job = await finished(emulator, result)
        assert job is not None and job["JobState"] == 4  # Running
    assert _files(pool) == before
    await ok(emulator, await _disk_call(emulator, call))
    assert _files(pool) != before


async def _clone_of_a_base(cim: EmulatorCim, pool: Path, base: str) -> None:
    """C:\\pool\\top.vhdx, a differencing disk on C:\\pool\\base.vhdx, then the base
    ``base``: "missing" (deleted), "replaced" (made anew: not the disk top was made from)."""
    pool.mkdir(parents=True)
    assert await _create(cim, await _settings(cim, "C:\\pool\\base.vhdx", 3, 3, 64 * _MIB)) == 0
    assert await _create(cim, await _settings(cim, "C:\\pool\\top.vhdx", 3, 4, 0,
                                              "C:\\pool\\base.vhdx")) == 0
    (pool / "base.vhdx").unlink()
    if base == "replaced":
        assert await _create(cim, await _settings(cim, "C:\\pool\\base.vhdx", 3, 3,
                                                  64 * _MIB)) == 0


async def _top_call(cim: EmulatorCim, method: str) -> MethodResult:
    """``method`` of the image service on C:\\pool\\top.vhdx: grown, or converted to
    C:\\pool\\fixed.vhdx."""
    ims = await service(cim, "Msvm_ImageManagementService")
    if method == "ResizeVirtualHardDisk":
        return await cim.invoke(ims, method, {"Path": "C:\\pool\\top.vhdx",
                                              "MaxInternalSize": 128 * _MIB})
    target = await _settings(cim, "C:\\pool\\fixed.vhdx", 3, 2, 0)
    return await cim.invoke(ims, method, {"SourcePath": "C:\\pool\\top.vhdx",
                                          "VirtualDiskSettingData": target})


@pytest.mark.parametrize("method", ["ResizeVirtualHardDisk", "ConvertVirtualHardDisk"])
async def test_a_clone_whose_parent_is_missing_is_refused_at_once_ahead_of_an_injected_fault(
    emulator: EmulatorCim, tmp_path: Path, method: str,
) -> None:
    """A clone whose parent cannot be found is refused at once (32779), no job started,
    also when the next job of its method is made to fail (``fail_next_job``): the
    refusal is the call's, and the fault is the next job's, which it still fails."""
    pool = tmp_path / "C" / "pool"
    await _clone_of_a_base(emulator, pool, "missing")
    emulator.faults.fail_next_job(method, 32774, "The disk is in use (injected).")
    refused = await _top_call(emulator, method)
    assert (refused.return_value, refused.path("Job")) == (32779, None)
    vhd.create(pool / "base.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 64 * _MIB)
    assert await failure(emulator, await _disk_call(emulator, method)) == 32774
    assert not (pool / "fixed.vhdx").exists()



@pytest.mark.parametrize("method", ["ResizeVirtualHardDisk", "ConvertVirtualHardDisk"])
async def test_a_disk_job_that_fails_on_its_own_is_not_one_an_injected_fault_lets_succeed(
    emulator: EmulatorCim, tmp_path: Path, method: str,
) -> None:
    """``fail_next_job(after=1)`` fails the job after the next one that succeeds: a job
    that fails on its own first (a clone whose parent is not the disk it was made from,
    32773) is not that one, so the next call succeeds and the one after fails."""
    pool = tmp_path / "C" / "pool"
    await _clone_of_a_base(emulator, pool, "replaced")
    emulator.faults.fail_next_job(method, 32774, "The disk is in use (injected).", after=1)
    assert await failure(emulator, await _top_call(emulator, method)) == 32773
    await ok(emulator, await _disk_call(emulator, method))
    (pool / "fixed.vhdx").unlink(missing_ok=True)
    assert await failure(emulator, await _disk_call(emulator, method)) == 32774


@pytest.mark.parametrize(("fmt", "ext"), [(3, ".vhdx"), (2, ".vhd")])
async def test_a_differencing_disk_reports_what_it_records_of_its_parent(
    emulator: EmulatorCim, tmp_path: Path, fmt: int, ext: str,
) -> None:
    """Msvm_VirtualHardDiskSettingData's ParentIdentifier and ParentTimestamp are what a
    child records of the parent it was made from: a VHD the parent's unique id (its
    VirtualDiskId too) and last write time, a VHDX the parent's DataWriteGuid
    (parent_linkage), which is not the parent's VirtualDiskId, and no time. A disk with
    no parent reports neither."""
    pool = tmp_path / "C" / "pool"
    pool.mkdir(parents=True)
    base, child = f"C:\\pool\\base{ext}", f"C:\\pool\\child{ext}"
    assert await _create(emulator, await _settings(emulator, base, fmt, 3)) == 0
    written = int((pool / f"base{ext}").stat().st_mtime)
    assert await _create(emulator, await _settings(emulator, child, fmt, 4, 0, base)) == 0
    ims = await service(emulator, "Msvm_ImageManagementService")
    read = {}
    for path in (base, child):
        result = await emulator.invoke(ims, "GetVirtualHardDiskSettingData", {"Path": path})
        text = result.text("SettingData")
        assert result.return_value == 0 and text is not None
        read[path] = emulator.parse_embedded(text)
    assert (read[base]["ParentIdentifier"] or None, read[base]["ParentTimestamp"]) == (None,
                                                                                         None)
    made_from = vhd.read_info(pool / f"base{ext}").link_id.upper()
    assert read[child]["ParentIdentifier"] == made_from
    if fmt == 2:
        assert made_from == read[base]["VirtualDiskId"]
        stamp = str(read[child]["ParentTimestamp"])
        assert stamp == time.strftime("%Y%m%d%H%M%S", time.gmtime(written)) + ".000000+000"
    else:
        assert made_from != read[base]["VirtualDiskId"]
        assert read[child]["ParentTimestamp"] is None


async def _chain_of_three(emulator: EmulatorCim, pool: Path, ext: str = ".vhdx") -> None:
    """``base`` (dynamic), ``mid`` standing on it, ``top`` standing on ``mid``."""
    fmt = 3 if ext == ".vhdx" else 2
    pool.mkdir(parents=True)
    assert await _create(emulator, await _settings(emulator, f"C:\\pool\\base{ext}", fmt,
                                                   3)) == 0
    for child, parent in (("mid", "base"), ("top", "mid")):
        settings = await _settings(emulator, f"C:\\pool\\{child}{ext}", fmt, 4, 0,
                                   f"C:\\pool\\{parent}{ext}")
        assert await _create(emulator, settings) == 0


async def _validate(emulator: EmulatorCim, path: str) -> MethodResult:
    ims = await service(emulator, "Msvm_ImageManagementService")
    return await emulator.invoke(ims, "ValidateVirtualHardDisk", {"Path": path})


@pytest.mark.parametrize(("change", "code", "link", "status"), [
    ("base gone", 32779, ("mid", "base"), 0xC03A000D),
    ("mid gone", 32779, ("top", "mid"), 0xC03A000D),
    ("base replaced", 32768, ("mid", "base"), 0xC03A000E),
    ("mid replaced", 32768, ("top", "mid"), 0xC03A000E),
])
async def test_validate_names_the_link_where_a_chain_breaks_in_its_failed_job(
    emulator: EmulatorCim, tmp_path: Path, change: str, code: int,
    link: tuple[str, str], status: int,
) -> None:
    """ValidateVirtualHardDisk opens a differencing disk's whole chain: a break fails its
    Msvm_StorageJob (JobType 9, Validate VHD Image), whose Child and Parent are the
    deepest link that does not open, a grandparent replaced by another disk of its name
    too (which the clone's own settings cannot tell), with Windows' error as its
    JobCompletionStatusCode; no file changes."""
    pool = tmp_path / "C" / "pool"
    await _chain_of_three(emulator, pool)
    name = change.split()[0]
    (pool / f"{name}.vhdx").unlink()
    if change.endswith("replaced"):  # another disk of the same name made anew
        vhd.create(pool / f"{name}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, GIB)
    before = {path.name: path.read_bytes() for path in pool.iterdir()}
    result = await _validate(emulator, "C:\\pool\\top.vhdx")
    assert result.return_value == 4096
    job = await finished(emulator, result)
    assert job is not None
    assert (job["JobState"], job["ErrorCode"], job["JobType"]) == (10, code, 9)
    assert (job["Child"], job["Parent"]) == tuple(f"C:\\pool\\{disk}.vhdx" for disk in link)
    assert job["JobCompletionStatusCode"] == status
    assert f"C:\\pool\\{link[1]}.vhdx" in str(job["ErrorDescription"])
    assert {path.name: path.read_bytes() for path in pool.iterdir()} == before


@pytest.mark.parametrize("ext", [".vhdx", ".vhd"])
async def test_validate_completes_for_a_whole_chain_and_refuses_a_missing_disk_at_once(
    emulator: EmulatorCim, tmp_path: Path, ext: str,
) -> None:
    """A chain that opens whole completes its job, Child and Parent left empty; a disk
    that cannot be found itself is refused at once (32779), no job; a file that is no
    disk fails the job (32773) naming no link."""
    pool = tmp_path / "C" / "pool"
    await _chain_of_three(emulator, pool, ext)
    for disk in ("top", "mid", "base"):
        result = await _validate(emulator, f"C:\\pool\\{disk}{ext}")
        await ok(emulator, result)
        job = await finished(emulator, result)
        assert job is not None and (job["Child"], job["Parent"]) == (None, None)
    refused = await _validate(emulator, f"C:\\pool\\absent{ext}")
    assert (refused.return_value, refused.path("Job")) == (32779, None)
    (pool / f"junk{ext}").write_bytes(b"not a disk" * 100)
    junk = await finished(emulator, await _validate(emulator, f"C:\\pool\\junk{ext}"))
    assert junk is not None and (junk["ErrorCode"], junk["Child"]) == (32773, None)


@pytest.mark.parametrize("disk", ["top", "mid", "base"])
async def test_validate_names_a_file_of_the_chain_that_is_no_disk_by_its_host_path(
    emulator: EmulatorCim, tmp_path: Path, disk: str,
) -> None:
    """A file of the chain that is cut short (the disk itself, its parent or its
    grandparent) fails the job with 32773, naming no link, and its ErrorDescription names
    that file by the host's path for it (C:\\pool\\...), never by a file of the machine
    behind the emulated host; no file changes."""
    pool = tmp_path / "C" / "pool"
    await _chain_of_three(emulator, pool)
    broken = pool / f"{disk}.vhdx"
    broken.write_bytes(broken.read_bytes()[:4096])
    before = {path.name: path.read_bytes() for path in pool.iterdir()}
    job = await finished(emulator, await _validate(emulator, "C:\\pool\\top.vhdx"))
    assert job is not None
    assert (job["ErrorCode"], job["Child"], job["Parent"]) == (32773, None, None)
    assert str(job["ErrorDescription"]).startswith(
        f"C:\\pool\\{disk}.vhdx: the VHDX header at offset 65536 is cut short"), job
    assert str(tmp_path) not in str(job["ErrorDescription"]), job
    assert {path.name: path.read_bytes() for path in pool.iterdir()} == before


async def test_validate_fails_a_chain_that_loops_with_the_cycle_code_and_the_link(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    """A chain whose parent is the child's own child again (a base replaced by a clone of
    its clone, keeping the base's identity) fails with 32787, "Vhd differencing chain
    cycle detected", the code Microsoft lists for it, naming the link that closes it."""
    pool = tmp_path / "C" / "pool"
    await _chain_of_three(emulator, pool, ".vhd")
    loop_vhd_chain(pool)  # base now stands on mid, which stands on base
    assert vhd.read_info(pool / "base.vhd").link_id == vhd.read_info(
        pool / "mid.vhd").parent_links[0]
    job = await finished(emulator, await _validate(emulator, "C:\\pool\\mid.vhd"))
    assert job is not None
    assert (job["ErrorCode"], job["Child"], job["Parent"]) == (
        32787, "C:\\pool\\base.vhd", "C:\\pool\\mid.vhd")
