"""hyperv.disks: creating, reading, growing and finding disk files on the emulated host."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperv_agent.cim.api import CimInstance
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.instruments import RoundTrips
from hyperv_agent.errors import HyperVError, InvalidRequest, JobFailed, MethodFailed
from hyperv_agent.hyperv import build, devices, disks, vms
from hyperv_agent.hyperv.build import VmSpec
from hyperv_agent.hyperv.schema import DiskFormat, DiskType
from hyperv_agent.hyperv.vms import PowerState
from tests.diskfiles import loop_vhd_chain
from tests.emulator.kit import ok, request_state
from tests.sessions import hv

GIB = 1 << 30
SPEC = VmSpec(name="i-2-9-VM", notes=(), generation=1, cpus=1, memory_mb=512)


def _pool(tmp_path: Path) -> Path:
    folder = tmp_path / "C" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def _warm(cim: EmulatorCim, tmp_path: Path) -> None:
    """Look up the service and spawn the settings class once."""
    _pool(tmp_path)
    await disks.create_blank(hv(cim), "C:\\pool\\warm.vhdx", GIB)


async def test_create_dynamic_writes_vhdx_in_one_call_and_one_wait_when_warm(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    await _warm(emulator, tmp_path)
    before = emulator.round_trips()
    await disks.create_blank(hv(emulator), "C:\\pool\\data.vhdx", 3 * GIB)
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits, spent["invoke:CreateVirtualHardDisk"]) == (1, 1, 1)
    info = vhd.read_info(tmp_path / "C" / "pool" / "data.vhdx")
    assert (info.format, info.type, info.virtual_size_bytes) == (
        vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 3 * GIB)


async def test_create_dynamic_writes_vhd_when_extension_is_vhd(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    _pool(tmp_path)
    await disks.create_blank(hv(emulator), "C:\\pool\\old.vhd", GIB)
    assert vhd.read_info(tmp_path / "C" / "pool" / "old.vhd").format is vhd.DiskFormat.VHD


@pytest.mark.parametrize(("path", "size"), [
    ("C:\\pool\\x.raw", GIB), ("C:\\pool\\x.vhdx", 0), ("C:\\pool\\x.vhdx", -GIB),
    ("C:\\pool\\x.vhdx", (64 << 40) + 1), ("C:\\pool\\x.vhd", (2040 << 30) + 1),
])
async def test_create_dynamic_refuses_bad_request_before_any_call_when_name_or_size_bad(
    emulator: EmulatorCim, tmp_path: Path, path: str, size: int
) -> None:
    _pool(tmp_path)
    before = emulator.round_trips()
    with pytest.raises(InvalidRequest):
        await disks.create_blank(hv(emulator), path, size)
    assert (emulator.round_trips() - before).calls == 0
    assert list((tmp_path / "C" / "pool").iterdir()) == []


async def test_create_dynamic_fails_and_keeps_file_when_it_exists(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    await _warm(emulator, tmp_path)
    before = (tmp_path / "C" / "pool" / "warm.vhdx").read_bytes()
    with pytest.raises(HyperVError):
        await disks.create_blank(hv(emulator), "C:\\pool\\warm.vhdx", 2 * GIB)
    assert (tmp_path / "C" / "pool" / "warm.vhdx").read_bytes() == before


async def test_create_differencing_records_parent_in_one_call_when_warm(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    await _warm(emulator, tmp_path)
    parent = tmp_path / "C" / "pool" / "warm.vhdx"
    vhd.write_data(parent, 0, b"template data" * 100)
    parent_bytes = parent.read_bytes()
    before = emulator.round_trips()
    await disks.create_differencing(hv(emulator), "C:\\pool\\clone.vhdx", "C:\\pool\\warm.vhdx")
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (1, 1)
    settings = await disks.read_settings(hv(emulator), "C:\\pool\\clone.vhdx")
    assert (settings.format, settings.type, settings.size_bytes, settings.parent_path) == (
        DiskFormat.VHDX, DiskType.DIFFERENCING, GIB, "C:\\pool\\warm.vhdx")
    assert parent.read_bytes() == parent_bytes
    clone = tmp_path / "C" / "pool" / "clone.vhdx"
    assert clone.stat().st_size < 8 << 20


async def test_create_differencing_refuses_mixed_formats(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    await _warm(emulator, tmp_path)
    with pytest.raises(InvalidRequest, match="VHD"):
        await disks.create_differencing(hv(emulator), "C:\\pool\\c.vhd", "C:\\pool\\warm.vhdx")
    assert not (tmp_path / "C" / "pool" / "c.vhd").exists()


#: Windows' words for a differencing disk whose parent cannot be found, as a failed job
#: of Hyper-V quotes them (ERROR_VHD_PARENT_VHD_NOT_FOUND); they name no parent.
_NOT_FOUND = ("The chain of virtual hard disks is broken. The system cannot locate the parent "
              "virtual hard disk for the differencing disk. (0xC03A000D)")


@pytest.mark.parametrize(("fault", "parent", "named", "validated"), [
    ("job", "C:\\pool\\warm.vhdx", True, 1),  # every parent found: the nearest is named
    ("code", "C:\\pool\\warm.vhdx", False, 1),  # the source and its parent are there
    ("job", None, False, 1),  # the parent not read: the refusal as Hyper-V worded it
    ("other", "C:\\pool\\warm.vhdx", False, 0),  # another failure keeps its own words
])
async def test_merged_copy_refused_for_a_broken_chain_names_the_parent_it_was_given(
    emulator: EmulatorCim, tmp_path: Path, fault: str, parent: str | None, named: bool,
    validated: int,
) -> None:
    """A conversion Hyper-V refuses with Windows' words for a broken chain names the
    parent the caller read when Hyper-V's validation finds the whole chain opens (the
    words say no more). A "file not found" for a clone whose files are all there was for
    another file (a destination folder, say): it keeps Hyper-V's words, as any other
    refusal does. The validation that tells is asked only on such a refusal, and no
    settings are read."""
    await _warm(emulator, tmp_path)
    await disks.create_differencing(hv(emulator), "C:\\pool\\clone.vhdx",
                                    "C:\\pool\\warm.vhdx")
    if fault == "code":
        emulator.faults.fail_next_call("ConvertVirtualHardDisk", 32779)
    else:
        emulator.faults.fail_next_job("ConvertVirtualHardDisk", 32768, _NOT_FOUND if fault ==
                                      "job" else "There is not enough space on the disk.")
    before = emulator.round_trips()
    with pytest.raises(HyperVError) as raised:
        await disks.merged_copy(hv(emulator), "C:\\pool\\clone.vhdx",
                                "C:\\pool\\merged.vhdx", parent=parent)
    spent = emulator.round_trips() - before
    assert (spent["invoke:ConvertVirtualHardDisk"], spent["invoke:ValidateVirtualHardDisk"],
            spent["invoke:GetVirtualHardDiskSettingData"]) == (1, validated, 0), spent
    text = str(raised.value)
    assert text.startswith("ConvertVirtualHardDisk "), text
    suffix = ("; the disk C:\\pool\\clone.vhdx stands on the parent C:\\pool\\warm.vhdx, "
              "which cannot be found")
    assert text.endswith(suffix) is named, text
    assert isinstance(raised.value, (MethodFailed, JobFailed)) is not named


async def _clone_of_a_clone(emulator: EmulatorCim, tmp_path: Path) -> None:
    """C:\\pool\\top.vhdx stands on mid.vhdx, which stands on base.vhdx (a template made
    from a linked clone, and a clone of it)."""
    _pool(tmp_path)
    await disks.create_blank(hv(emulator), "C:\\pool\\base.vhdx", GIB)
    await disks.create_differencing(hv(emulator), "C:\\pool\\mid.vhdx",
                                    "C:\\pool\\base.vhdx")
    await disks.create_differencing(hv(emulator), "C:\\pool\\top.vhdx",
                                    "C:\\pool\\mid.vhdx")


async def _refused_with_a_file_gone(cim: EmulatorCim, tmp_path: Path, method: str,
                                   gone: str) -> tuple[str, RoundTrips]:
    """A clone of a clone whose file ``gone`` (top, mid or base) was deleted, merged or
    grown by ``method``: the refusal's text (Hyper-V's "file not found") and the round
    trips it cost."""
    await _clone_of_a_clone(cim, tmp_path)
    (tmp_path / "C" / "pool" / f"{gone}.vhdx").unlink()
    before = cim.round_trips()
    with pytest.raises(HyperVError) as raised:
        if method == "ConvertVirtualHardDisk":
            await disks.merged_copy(hv(cim), "C:\\pool\\top.vhdx", "C:\\pool\\merged.vhdx",
                                    parent="C:\\pool\\mid.vhdx")
        else:
            await disks.resize(hv(cim), "C:\\pool\\top.vhdx", 2 * GIB,
                               parent="C:\\pool\\mid.vhdx")
    text = str(raised.value)
    assert text.startswith(f"{method} failed with return code 32779"), text
    return text, cim.round_trips() - before


@pytest.mark.parametrize("method", ["ConvertVirtualHardDisk", "ResizeVirtualHardDisk"])
@pytest.mark.parametrize(("gone", "suffix"), [
    ("top", "the disk C:\\pool\\top.vhdx cannot be found"),
    ("mid", "the disk C:\\pool\\top.vhdx stands on the parent C:\\pool\\mid.vhdx, "
     "which cannot be found"),
    ("base", "the disk C:\\pool\\mid.vhdx stands on the parent C:\\pool\\base.vhdx, "
     "which cannot be found"),
])
async def test_a_merge_or_resize_refused_for_a_missing_file_names_the_file_that_is_missing(
    emulator: EmulatorCim, tmp_path: Path, method: str, gone: str, suffix: str,
) -> None:
    """Hyper-V opens a differencing disk with its chain to merge it or to grow it, and its
    "file not found" names no file: the clone itself may be gone since its settings were
    read (a volume removed meanwhile), or a link of its chain, which for a clone of a
    clone may be the grandparent while the parent is there. The refusal names the file
    that is missing, and the disk standing on it, from Hyper-V's validation of the clone
    asked only now (one call and one wait, however deep the break; the clone itself gone,
    the validation's call and a read of its settings); nothing is written (no merged
    copy, the clone's size unchanged)."""
    text, spent = await _refused_with_a_file_gone(emulator, tmp_path, method, gone)
    assert text.endswith(f"; {suffix}"), text
    pool = tmp_path / "C" / "pool"
    assert (spent[f"invoke:{method}"], spent["invoke:ValidateVirtualHardDisk"],
            spent["invoke:GetVirtualHardDiskSettingData"], spent.waits) == (
        1, 1, *((1, 0) if gone == "top" else (0, 1))), spent  # a disk not there is
    # refused at once with a "file not found" naming no file: its settings' read tells
    assert not (pool / "merged.vhdx").exists()
    if gone != "top":
        assert vhd.read_info(pool / "top.vhdx").virtual_size_bytes == GIB


@pytest.mark.parametrize("method", ["ConvertVirtualHardDisk", "ResizeVirtualHardDisk"])
@pytest.mark.parametrize(("gone", "suffix"), [
    ("top", "the disk C:\\pool\\top.vhdx cannot be found"),
    ("mid", "the disk C:\\pool\\top.vhdx stands on the parent C:\\pool\\mid.vhdx, "
     "which cannot be found"),
    ("base", "the disk C:\\pool\\mid.vhdx stands on the parent C:\\pool\\base.vhdx, "
     "which cannot be found"),
])
async def test_a_missing_file_is_named_when_the_validation_answers_without_a_job(
    sync_emulator: EmulatorCim, tmp_path: Path, method: str, gone: str, suffix: str,
) -> None:
    """A host that answers ValidateVirtualHardDisk at once, without a job, says "file not
    found" (32779) for a missing link of the chain as for the disk itself, naming neither:
    a clone whose parent or grandparent is gone is not reported as gone itself. The
    clone's settings, and its parents' in turn, are read to tell."""
    text, spent = await _refused_with_a_file_gone(sync_emulator, tmp_path, method, gone)
    assert text.endswith(f"; {suffix}"), text
    pool = tmp_path / "C" / "pool"
    assert (spent["invoke:ValidateVirtualHardDisk"], spent.waits) == (1, 0), spent
    assert not (pool / "merged.vhdx").exists()


async def test_resize_refused_in_a_moved_pool_names_the_file_that_is_missing(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    """A pool moved to another folder (a volume's folder renamed): its linked clones still
    open by the relative paths they record, and Hyper-V reports each parent where it found
    it. With the template's own parent gone too, the refusal names that file, standing
    under the disk beside the clone, not the clone's parent in the folder it was made in
    (which was never missing)."""
    await _clone_of_a_clone(emulator, tmp_path)
    pool = (tmp_path / "C" / "pool").rename(tmp_path / "C" / "moved")
    (pool / "base.vhdx").unlink()
    settings = await disks.read_settings(hv(emulator), "C:\\moved\\top.vhdx")
    with pytest.raises(HyperVError) as raised:
        await disks.resize(hv(emulator), "C:\\moved\\top.vhdx", 2 * GIB,
                           parent=settings.parent_path)
    text = str(raised.value)
    assert text.startswith("ResizeVirtualHardDisk failed with return code 32779"), text
    assert text.endswith("; the disk C:\\moved\\mid.vhdx stands on the parent "
                         "C:\\pool\\base.vhdx, which cannot be found"), text
    assert settings.parent_path == "C:\\moved\\mid.vhdx"
    assert vhd.read_info(pool / "top.vhdx").virtual_size_bytes == GIB


@pytest.mark.parametrize(("parent", "fault", "named"), [
    ("C:\\pool\\mid.vhdx", None, True),  # Windows' words, the ParentPath read before
    (None, None, True),  # the parent not read: Hyper-V's validation names it all the same
    ("C:\\pool\\mid.vhdx", "code", False),  # "file not found", every file there
    ("C:\\pool\\mid.vhdx", "other", False),  # another failure keeps its own words
])
async def test_resize_refused_for_a_replaced_parent_names_the_disk_and_its_parent(
    emulator: EmulatorCim, tmp_path: Path, parent: str | None, fault: str | None,
    named: bool,
) -> None:
    """A linked clone whose template was replaced by another disk of its name does not
    grow: Hyper-V's job fails with Windows' words for a corrupted chain, which name no
    file. The refusal names the clone and its parent, which Hyper-V's validation of the
    clone names (one call and one wait, no settings read); a "file not found" for a
    clone whose chain opens whole (validated to tell), or any other refusal, keeps
    Hyper-V's words."""
    await _clone_of_a_clone(emulator, tmp_path)
    pool = tmp_path / "C" / "pool"
    if fault is None:  # a template of the same name made anew
        (pool / "mid.vhdx").unlink()
        vhd.create(pool / "mid.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, GIB)
    elif fault == "code":
        emulator.faults.fail_next_call("ResizeVirtualHardDisk", 32779)
    elif fault == "other":
        emulator.faults.fail_next_call("ResizeVirtualHardDisk", 32768)
    before = emulator.round_trips()
    with pytest.raises(HyperVError) as raised:
        await disks.resize(hv(emulator), "C:\\pool\\top.vhdx", 2 * GIB, parent=parent)
    spent = emulator.round_trips() - before
    assert (spent["invoke:ResizeVirtualHardDisk"], spent["invoke:ValidateVirtualHardDisk"],
            spent["invoke:GetVirtualHardDiskSettingData"]) == (
        1, 0 if fault == "other" else 1, 0), spent
    text = str(raised.value)
    assert text.startswith("ResizeVirtualHardDisk "), text
    suffix = ("; the disk C:\\pool\\top.vhdx stands on the parent C:\\pool\\mid.vhdx, "
              "which is not the disk it was made from (replaced or written since)")
    assert text.endswith(suffix) is named, text
    assert isinstance(raised.value, (MethodFailed, JobFailed)) is not named
    assert vhd.read_info(pool / "top.vhdx").virtual_size_bytes == GIB


@pytest.mark.parametrize("method", ["ConvertVirtualHardDisk", "ResizeVirtualHardDisk"])
async def test_a_merge_or_resize_refused_for_a_replaced_grandparent_names_that_link(
    emulator: EmulatorCim, tmp_path: Path, method: str,
) -> None:
    """A clone of a clone whose grandparent was replaced by another disk of its name: the
    clone's settings cannot tell which link changed (a VHDX child records its parent's
    DataWriteGuid, which WMI does not report), Hyper-V's validation of the clone can. The
    refusal names the parent standing on the grandparent, not the clone on its own
    parent (which is the disk it was made from), in one call and one wait."""
    await _clone_of_a_clone(emulator, tmp_path)
    pool = tmp_path / "C" / "pool"
    (pool / "base.vhdx").unlink()
    vhd.create(pool / "base.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, GIB)
    before = emulator.round_trips()
    with pytest.raises(HyperVError) as raised:
        if method == "ConvertVirtualHardDisk":
            await disks.merged_copy(hv(emulator), "C:\\pool\\top.vhdx",
                                    "C:\\pool\\merged.vhdx", parent="C:\\pool\\mid.vhdx")
        else:
            await disks.resize(hv(emulator), "C:\\pool\\top.vhdx", 2 * GIB,
                               parent="C:\\pool\\mid.vhdx")
    spent = emulator.round_trips() - before
    assert str(raised.value).endswith(
        "; the disk C:\\pool\\mid.vhdx stands on the parent C:\\pool\\base.vhdx, which is "
        "not the disk it was made from (replaced or written since)"), str(raised.value)
    assert (spent["invoke:ValidateVirtualHardDisk"],
            spent["invoke:GetVirtualHardDiskSettingData"]) == (1, 0), spent
    assert not (pool / "merged.vhdx").exists()


#: Windows' words for a differencing disk whose parent is not the disk it was made from
#: (ERROR_VHD_CHILD_PARENT_ID_MISMATCH); they name no parent either.
_MISMATCH = ("The chain of virtual hard disks is corrupted. There is a mismatch in the "
             "identifiers of the parent virtual hard disk and differencing disk. (0xC03A000E)")


@pytest.mark.parametrize(("gone", "child", "replaced"), [
    ("mid", "top", False), ("base", "mid", False), ("mid", "top", True), ("base", "mid", True)])
async def test_broken_parent_names_the_deepest_link_that_does_not_open(
    emulator: EmulatorCim, tmp_path: Path, gone: str, child: str, replaced: bool,
) -> None:
    """Windows' words for a start refused by a broken chain name no parent: for a clone of
    a clone whose grandparent is gone, or was replaced by another disk of its name, the
    parent standing on it is named, not the clone's own parent, which is there and is the
    disk it was made from; Hyper-V's validation of the clone tells, in one call and one
    wait, no settings read."""
    await _clone_of_a_clone(emulator, tmp_path)
    (tmp_path / "C" / "pool" / f"{gone}.vhdx").unlink()
    if replaced:
        vhd.create(tmp_path / "C" / "pool" / f"{gone}.vhdx", vhd.DiskFormat.VHDX,
                   vhd.DiskType.DYNAMIC, GIB)
    before = emulator.round_trips()
    broken = await disks.broken_parent(hv(emulator), _MISMATCH if replaced else _NOT_FOUND,
                                       ["C:\\pool\\top.vhdx"])
    spent = emulator.round_trips() - before
    assert broken == disks.BrokenParent(f"C:\\pool\\{child}.vhdx",
                                        f"C:\\pool\\{gone}.vhdx", not replaced)
    assert (spent.calls, spent.waits, spent["invoke:ValidateVirtualHardDisk"]) == (1, 1, 1)


async def test_broken_parent_names_a_chain_that_loops(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    """A chain that loops back on itself (Hyper-V's "differencing chain cycle detected")
    is named by the link that closes the loop, in words of its own."""
    pool = _pool(tmp_path)
    await disks.create_blank(hv(emulator), "C:\\pool\\base.vhd", GIB)
    await disks.create_differencing(hv(emulator), "C:\\pool\\mid.vhd", "C:\\pool\\base.vhd")
    await disks.create_differencing(hv(emulator), "C:\\pool\\top.vhd", "C:\\pool\\mid.vhd")
    loop_vhd_chain(pool)  # base now stands on mid, which stands on base
    broken = await disks.broken_parent(hv(emulator), _MISMATCH, ["C:\\pool\\mid.vhd"])
    assert str(broken) == ("the disk C:\\pool\\base.vhd stands on the parent "
                           "C:\\pool\\mid.vhd, which does not open: it is already in the "
                           "disk's chain of parents (a loop)")


async def test_read_settings_costs_one_call_and_raises_when_file_missing(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    await _warm(emulator, tmp_path)
    before = emulator.round_trips()
    settings = await disks.read_settings(hv(emulator), "C:\\pool\\warm.vhdx")
    assert (emulator.round_trips() - before).calls == 1
    assert (settings.type, settings.size_bytes, settings.parent_path) == (
        DiskType.DYNAMIC, GIB, None)
    with pytest.raises(MethodFailed, match="32779"):
        await disks.read_settings(hv(emulator), "C:\\pool\\absent.vhdx")


@pytest.mark.parametrize(("name", "parent"), [
    ("warm.vhdx", None), ("clone.vhdx", "C:\\pool\\warm.vhdx"), ("clone.vhdx", None),
])
async def test_resize_grows_in_one_call_and_one_wait_and_refuses_shrink(
    emulator: EmulatorCim, tmp_path: Path, name: str, parent: str | None,
) -> None:
    """A disk grows in one call and one wait, a linked clone too: what a refusal reads to
    name a file that does not open is read only on that refusal."""
    await _warm(emulator, tmp_path)
    if name == "clone.vhdx":
        await disks.create_differencing(hv(emulator), "C:\\pool\\clone.vhdx",
                                        "C:\\pool\\warm.vhdx")
    before = emulator.round_trips()
    await disks.resize(hv(emulator), f"C:\\pool\\{name}", 2 * GIB, parent=parent)
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (1, 1)
    local = tmp_path / "C" / "pool" / name
    assert vhd.read_info(local).virtual_size_bytes == 2 * GIB
    with pytest.raises((JobFailed, MethodFailed)):
        await disks.resize(hv(emulator), f"C:\\pool\\{name}", GIB, parent=parent)
    assert vhd.read_info(local).virtual_size_bytes == 2 * GIB


@pytest.mark.parametrize(("name", "size"), [("warm.vhdx", (64 << 40) + 1), ("warm.vhdx", -1)])
async def test_resize_refuses_size_the_format_cannot_hold_before_any_call(
    emulator: EmulatorCim, tmp_path: Path, name: str, size: int
) -> None:
    await _warm(emulator, tmp_path)
    before = emulator.round_trips()
    with pytest.raises(InvalidRequest, match="at most 70368744177664 \\(64 TiB\\)"):
        await disks.resize(hv(emulator), f"C:\\pool\\{name}", size)
    assert (emulator.round_trips() - before).calls == 0
    assert vhd.read_info(tmp_path / "C" / "pool" / name).virtual_size_bytes == GIB


async def _vm_with_disk(cim: EmulatorCim, tmp_path: Path, *, scsi: bool) -> vms.VmRef:
    await _warm(cim, tmp_path)
    vm = await build.define_vm(hv(cim), SPEC)
    if scsi:
        controller = await devices.add_scsi_controller(hv(cim), vm)
    else:
        controller = (await devices.controllers(hv(cim), vm)).ide[0]
    await devices.attach_disk(hv(cim), vm, controller, 0, "C:\\pool\\warm.vhdx")
    return vm


async def test_find_attachment_reports_vm_and_power_when_file_is_attached(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    vm = await _vm_with_disk(emulator, tmp_path, scsi=True)
    before = emulator.round_trips()
    found = await disks.find_attachment(hv(emulator), "c:/POOL/warm.VHDX")
    spent = emulator.round_trips() - before
    assert (spent.calls, spent["query"], spent["get"]) == (2, 1, 1)
    assert found is not None
    assert (found.vm_guid, found.vm_name, found.power) == (vm.guid, "i-2-9-VM",
                                                          PowerState.STOPPED)
    await ok(emulator, await request_state(emulator, vm.path, 2))
    found = await disks.find_attachment(hv(emulator), "C:\\pool\\warm.vhdx")
    assert found is not None and found.power is PowerState.RUNNING


async def test_find_attachment_takes_the_running_vm_of_two_holding_the_file(
    emulator: EmulatorCim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopped VM's definition left beside the running VM (a failed host's, the VM then
    migrated back) names the same files: the running VM is the one using the file, whichever
    medium WMI lists first, or a caller refusing a running VM's disk would touch it."""
    leftover = await _vm_with_disk(emulator, tmp_path, scsi=True)
    live = await build.define_vm(hv(emulator), VmSpec(
        name="i-2-9-VM", notes=(), generation=1, cpus=1, memory_mb=512))
    await disks.create_blank(hv(emulator), "C:\\pool\\live.vhdx", GIB)
    controller = await devices.add_scsi_controller(hv(emulator), live)
    await devices.attach_disk(hv(emulator), live, controller, 0, "C:\\pool\\live.vhdx")
    await ok(emulator, await request_state(emulator, live.path, 2))
    query = emulator.query

    async def one_file(text: str, namespace: str = "root\\virtualization\\v2"
                       ) -> list[CimInstance]:
        # the running VM's medium names the leftover's file (the emulator refuses to
        # attach it twice), and the leftover's is listed first
        found = [medium.updated(HostResource=["C:\\pool\\warm.vhdx"])
                 if live.guid in (medium.string("InstanceID") or "") else medium
                 for medium in await query(text, namespace)]
        return sorted(found, key=lambda medium: leftover.guid not in str(medium.string(
            "InstanceID")))

    monkeypatch.setattr(emulator, "query", one_file)
    found = await disks.find_attachment(hv(emulator), "C:\\pool\\warm.vhdx")
    assert found is not None
    assert (found.vm_guid, found.power) == (live.guid, PowerState.RUNNING)


async def test_find_attachment_costs_one_query_when_file_is_unused(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    await _vm_with_disk(emulator, tmp_path, scsi=True)
    before = emulator.round_trips()
    assert await disks.find_attachment(hv(emulator), "C:\\pool\\other.vhdx") is None
    assert (emulator.round_trips() - before).calls == 1


async def test_grow_of_running_vm_disk_succeeds_on_scsi_and_is_refused_on_ide(
    emulator: EmulatorCim, tmp_path: Path
) -> None:
    vm = await _vm_with_disk(emulator, tmp_path, scsi=True)
    await ok(emulator, await request_state(emulator, vm.path, 2))
    await disks.resize(hv(emulator), "C:\\pool\\warm.vhdx", 2 * GIB)
    assert vhd.read_info(tmp_path / "C" / "pool" / "warm.vhdx").virtual_size_bytes == 2 * GIB
    other = await build.define_vm(hv(emulator), VmSpec(name="ide-vm", notes=(), generation=1,
                                                   cpus=1, memory_mb=512))
    await disks.create_blank(hv(emulator), "C:\\pool\\ide.vhdx", GIB)
    ide = (await devices.controllers(hv(emulator), other)).ide[0]
    await devices.attach_disk(hv(emulator), other, ide, 0, "C:\\pool\\ide.vhdx")
    await ok(emulator, await request_state(emulator, other.path, 2))
    with pytest.raises(HyperVError):
        await disks.resize(hv(emulator), "C:\\pool\\ide.vhdx", 2 * GIB)
    assert vhd.read_info(tmp_path / "C" / "pool" / "ide.vhdx").virtual_size_bytes == GIB
