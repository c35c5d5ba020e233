"""A file a running VM holds open (a disk of its drives, or a parent of one) is neither
deleted nor replaced on the emulated host, as on Windows."""

from __future__ import annotations

import pytest

from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.files import IN_USE, EmulatedFiles
from hyperv_agent.errors import HostFileError
from tests.emulator.kit import attach_vhdx, define_vm, finished, request_state, state

BASE = "C:\\disks\\base.vhdx"


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
