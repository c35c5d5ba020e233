"""A file a running VM holds open (a disk of its drives, or a parent of one) is neither
deleted nor replaced on the emulated host, as on Windows."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.emulator.files import IN_USE, EmulatedFiles
from hyperv_agent.emulator.paths import HostPaths
from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs.api import OpenMode
from tests.emulator.kit import attach_vhdx, define_vm, finished, request_state, state

BASE = "C:\\disks\\base.vhdx"
WRITES: tuple[OpenMode, ...] = ("r+b", "wb")


async def test_a_running_vms_disk_and_its_parent_are_neither_deleted_nor_replaced(
        emulator: EmulatorCim) -> None:
    drive_c = emulator.host.config.drive_root("C")
    (drive_c / "disks").mkdir(parents=True)
    base = drive_c / "disks" / "base.vhdx"
    vhd.create(base, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 30)
    vm = await define_vm(emulator, "linked")
    await attach_vhdx(emulator, vm, drive_c, parent=BASE)
    await finished(emulator, await request_state(emulator, vm, 2))
    assert await state(emulator, vm) == 2
    files = EmulatedFiles(emulator.host)
    before = base.read_bytes()
    (drive_c / "disks" / "fresh.vhdx").write_bytes(b"a newer template")

    for path in (BASE, "C:\\disks\\root.vhdx"):
        with pytest.raises(HostFileError, match=f"cannot delete .*: {IN_USE}"):
            await files.remove(path)
    with pytest.raises(HostFileError, match=f"cannot rename .*: {IN_USE}"):
        await files.rename("C:\\disks\\fresh.vhdx", BASE)  # a re-downloaded template
    assert base.read_bytes() == before

    await files.rename("C:\\disks\\fresh.vhdx", "C:\\disks\\other.vhdx")  # not in use
    await finished(emulator, await request_state(emulator, vm, 3))  # stopped: nothing held
    await files.rename("C:\\disks\\other.vhdx", BASE)
    assert base.read_bytes() == b"a newer template"
    assert await files.remove("C:\\disks\\root.vhdx")


async def test_a_running_vms_disk_is_not_read_and_its_parent_is_read_but_not_written(
        emulator: EmulatorCim) -> None:
    drive_c = emulator.host.config.drive_root("C")
    (drive_c / "disks").mkdir(parents=True)
    vhd.create(drive_c / "disks" / "base.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC,
               1 << 30)
    vm = await define_vm(emulator, "linked")
    await attach_vhdx(emulator, vm, drive_c, parent=BASE)
    files = EmulatedFiles(emulator.host)
    top = "C:\\disks\\root.vhdx"
    await finished(emulator, await request_state(emulator, vm, 2))

    # the disk in the drive: the worker shares neither reading nor writing
    for mode in ("rb", *WRITES):
        with pytest.raises(HostFileError, match=f"cannot open .*root.vhdx: {IN_USE}"):
            await asyncio.to_thread(files.open_binary, top, mode)
    with pytest.raises(HostFileError, match=f"cannot read .*: {IN_USE}"):
        await files.read_text(top)
    with pytest.raises(HostFileError, match=f"cannot copy .*root.vhdx to .*: {IN_USE}"):
        await files.copy_file(top, "C:\\disks\\copy.vhdx")
    assert (await files.stat(top)) is not None  # its attributes are read without opening it

    # its parent: read-only, shared for reading
    with await asyncio.to_thread(files.open_binary, BASE, "rb") as handle:
        assert handle.read(8) == b"vhdxfile"
    assert await files.copy_file(BASE, "C:\\disks\\copy.vhdx") > 0
    for mode in WRITES:
        with pytest.raises(HostFileError, match=f"cannot open .*base.vhdx: {IN_USE}"):
            await asyncio.to_thread(files.open_binary, BASE, mode)
    with pytest.raises(HostFileError, match=f"cannot copy .*copy.vhdx to .*: {IN_USE}"):
        await files.copy_file("C:\\disks\\copy.vhdx", BASE)
    with pytest.raises(HostFileError, match=f"cannot write .*: {IN_USE}"):
        await files.write_text(BASE, "over it")

    await finished(emulator, await request_state(emulator, vm, 3))  # stopped: nothing held
    with await asyncio.to_thread(files.open_binary, top, "r+b") as handle:
        assert handle.read(8) == b"vhdxfile"
    await files.copy_file(top, "C:\\disks\\copy.vhdx")


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_stopping_vms_disk_is_held_until_the_vm_is_off(
        make_config: Callable[..., EmulatorConfig]) -> None:
    # A stopping VM reads as off, but its worker closes its disks only once it is.
    clock = _Clock()
    cim = EmulatorCim.open(make_config(), clock)
    try:
        drive_c = cim.host.config.drive_root("C")
        (drive_c / "disks").mkdir(parents=True)
        vm = await define_vm(cim, "stopping")
        await attach_vhdx(cim, vm, drive_c)
        await finished(cim, await request_state(cim, vm, 2))
        cim.host.config = dataclasses.replace(cim.host.config, latency=LatencyModel(job_s=2.0))
        assert (await request_state(cim, vm, 3)).return_value == 4096
        assert await state(cim, vm) == 4  # Stopping
        files = EmulatedFiles(cim.host)
        with pytest.raises(HostFileError, match=f"cannot delete .*: {IN_USE}"):
            await files.remove("C:\\disks\\root.vhdx")
        clock.now += 2.0  # off: the worker has closed it
        assert await files.remove("C:\\disks\\root.vhdx")
    finally:
        await cim.close()


async def test_the_holds_of_a_host_reached_by_its_name_are_its_own_of_two_of_that_name(
        make_config: Callable[..., EmulatorConfig], tmp_path: Path) -> None:
    """An agent reaching an emulated host's files by its mapped folders finds the host's
    holds by its name: of two live hosts of one name (each in its own state directory,
    with its own drives), the one whose folders hold the file, not the last opened."""
    first = EmulatorCim.open(make_config())
    second = EmulatorCim.open(make_config(state_dir=tmp_path / "again",
                                          drives={"C": tmp_path / "again-C"}))
    try:
        drive_c = first.host.config.drive_root("C")
        vm = await define_vm(first, "held")
        await attach_vhdx(first, vm, drive_c)
        await finished(first, await request_state(first, vm, 2))
        files = EmulatedFiles(HostPaths(first.host.config))
        with pytest.raises(HostFileError, match=f"cannot delete .*: {IN_USE}"):
            await files.remove("C:\\disks\\root.vhdx")
        assert (drive_c / "disks" / "root.vhdx").is_file()
        (second.host.config.drive_root("C") / "disks").mkdir(parents=True)
        (second.host.config.drive_root("C") / "disks" / "root.vhdx").write_bytes(b"free")
        assert await EmulatedFiles(HostPaths(second.host.config)).remove(
            "C:\\disks\\root.vhdx")
    finally:
        await second.close()
        await first.close()
