"""Migration of VMs whose DVD drives hold ISOs, between two agents (``serve`` processes on
127.0.0.2 and 127.0.0.3 over emulated hosts of one cluster), with the management server's
own bodies in its order: PrepareForMigration to the destination, Migrate to the source.

Where a zone has more than one image store holding an ISO, the MS takes one of them at
random for each command: the copy PrepareForMigration and MigrateCommand name may be
another store's than the one the VM's drive holds, and the source says so.

StartCommand reads an ISO where the image store keeps it (``\\\\<store>\\<share>\\<path>``),
so after a live move the VM's drives name the same files, which the destination must
reach. For a user VM the management server puts its ISOs in PrepareForMigration's
VirtualMachineTO (the CD, ``diskSeq`` 3, and on a ConfigDrive network the config drive,
``diskSeq`` 4); a system VM's ISO is not in it, and only Hyper-V's own check of the move
finds it missing there.
"""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cloudstack import names
from tests.e2e.migration_kit import (
    Cluster,
    Member,
    cluster,
    disk_file,
    local_pool_of,
    migrate_body,
    pair,
    prepare_body,
    start_body,
    vm_to,
    with_storage_body,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="needs 127.0.0.2 and 127.0.0.3 (Linux loopback)")

STORE = "\\\\10.1.1.2\\secondary"
STORE_URL = "cifs://10.1.1.2/secondary?user=admin&password=s3cret"
INSTALL = "iso/2/205/install.iso"
SYSTEM_ISO = "systemvm/systemvm-4.22.0.iso"
ISO = "Microsoft:Hyper-V:Virtual CD/DVD Disk"


def _config_drive(name: str) -> str:
    """Where the MS keeps VM ``name``'s config drive on the image store."""
    return f"configdrive/{name}.iso"


def _store(tmp_path: Path) -> Path:
    """The image store's folder, holding an install ISO, the config drives of the user
    VMs here and the system VM ISO."""
    folder = tmp_path / "secondary"
    for relative in (INSTALL, _config_drive("i-2-40-VM"), _config_drive("i-2-41-VM"),
                     SYSTEM_ISO):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(b"CD001" * 100)
    return folder


def _hosts(tmp_path: Path, *reaching: str) -> list[Member]:
    """HV-A and HV-B; the hosts named in ``reaching`` map the image store's share."""
    folder = _store(tmp_path)
    return pair(tmp_path, shares={name: {STORE: folder} for name in reaching})


def _iso(seq: int, path: str) -> dict[str, Any]:
    """An ISO DiskTO on the cifs image store, as the MS writes it."""
    return {"data": {names.TEMPLATE_OBJECT_TO: {
        "path": path, "format": "ISO", "uuid": "a68c5325-84be-4f8b-ace1-0b33ee004759",
        "imageDataStore": {names.NFS_TO: {"_url": STORE_URL, "_role": "Image"}}}},
        "diskSeq": seq, "path": path, "type": "ISO"}


def _user_vm(name: str, *, local_root: bool = False) -> dict[str, Any]:
    """A user VM with its install ISO in its CD and, first (as the MS orders them), its
    config drive; its root volume on the SMB pool, or with ``local_root`` on the host's
    local pool."""
    vm = vm_to(name, name, local_root=local_root)
    root, _ = vm["disks"]
    vm["disks"] = [_iso(4, _config_drive(name)), root, _iso(3, INSTALL)]
    return vm


async def _isos(host: Member, name: str) -> set[str]:
    """The files the DVD drives of VM ``name`` on ``host`` hold."""
    cim = host.cim()
    (vm,) = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", name)))
    media = await cim.query(wql.select("Msvm_StorageAllocationSettingData", wql.starts_with(
        "InstanceID", f"Microsoft:{vm['Name']}\\")))
    return {m.strings("HostResource")[0] for m in media if m["ResourceSubType"] == ISO}


async def _started(run: Cluster, host: Member, body: dict[str, Any]) -> None:
    _, started = await run.ask(host, names.START_COMMAND, body)
    assert started["result"] is True, started["details"]


async def _prepared(run: Cluster, host: Member, vm: dict[str, Any]) -> dict[str, Any]:
    kind, prepared = await run.ask(host, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(vm))
    assert kind == names.PREPARE_FOR_MIGRATION_ANSWER
    return prepared


async def _migrated(run: Cluster, host: Member, vm: dict[str, Any], address: str
                    ) -> dict[str, Any]:
    kind, moved = await run.ask(host, names.MIGRATE_COMMAND, migrate_body(vm, address))
    assert kind == names.MIGRATE_ANSWER
    return moved


async def test_a_vm_moves_with_its_isos_where_both_hosts_reach_the_store(
        tmp_path: Path) -> None:
    a, b = hosts = _hosts(tmp_path, "HV-A", "HV-B")
    disk_file(tmp_path / "pool", "i-2-40-VM")
    vm = _user_vm("i-2-40-VM")
    held = {f"{STORE}\\iso\\2\\205\\install.iso",
            f"{STORE}\\configdrive\\i-2-40-VM.iso"}
    async with cluster(hosts) as run:
        await _started(run, a, start_body(vm))
        assert await _isos(a, "i-2-40-VM") == held
        prepared = await _prepared(run, b, vm)
        assert prepared["result"] is True, prepared["details"]
        moved = await _migrated(run, a, vm, b.address)
        assert moved["result"] is True, moved["details"]
        assert await run.where(hosts, "i-2-40-VM") == ["HV-B"]
        assert await _isos(b, "i-2-40-VM") == held


async def test_a_destination_without_the_vms_isos_is_not_ready_and_the_vm_stays(
        tmp_path: Path) -> None:
    a, b = hosts = _hosts(tmp_path, "HV-A")
    disk_file(tmp_path / "pool", "i-2-41-VM")
    vm = _user_vm("i-2-41-VM")
    async with cluster(hosts) as run:
        await _started(run, a, start_body(vm))
        prepared = await _prepared(run, b, vm)
        details = str(prepared["details"])
        assert prepared["result"] is False, details
        assert "install.iso" in details and "i-2-41-VM.iso" in details, details
        assert "s3cret" not in details
        # Sent anyway, the move is refused by Hyper-V's check, before anything moves.
        moved = await _migrated(run, a, vm, b.address)
        assert moved["result"] is False
        assert "install.iso" in moved["details"] or "i-2-41-VM.iso" in moved["details"], moved
        assert await run.where(hosts, "i-2-41-VM") == ["HV-A"]


async def test_a_system_vm_is_not_moved_where_its_iso_cannot_be_opened(
        tmp_path: Path) -> None:
    a, b = hosts = _hosts(tmp_path, "HV-A")
    disk_file(tmp_path / "pool", "r-3-VM")
    vm = vm_to("r-3-VM", "r-3-VM", router=True)
    vm["disks"] = vm["disks"][:1]  # the MS gives a system VM no ISO disk
    async with cluster(hosts) as run:
        await _started(run, a, start_body(vm) | {"secondaryStorage": STORE_URL})
        assert await _isos(a, "r-3-VM") == {f"{STORE}\\systemvm\\systemvm-4.22.0.iso"}
        moved = await _migrated(run, a, vm, b.address)
        assert moved["result"] is False
        assert "systemvm-4.22.0.iso" in moved["details"], moved
        assert await run.where(hosts, "r-3-VM") == ["HV-A"]
        assert await _isos(a, "r-3-VM") == {f"{STORE}\\systemvm\\systemvm-4.22.0.iso"}


async def test_a_vm_moving_with_its_volumes_does_not_leave_for_a_host_without_its_isos(
        tmp_path: Path) -> None:
    """Shared nothing moves the volumes, not the ISOs: they stay on the image store, which
    the destination must reach; a move refused there copies nothing."""
    a, b = hosts = _hosts(tmp_path, "HV-A")
    name = "i-2-41-VM"
    root = disk_file(a.local_pool(tmp_path), name)
    (tmp_path / "pool").mkdir()  # the SMB pool, which every host registers
    vm = _user_vm(name, local_root=True)
    async with cluster(hosts) as run:
        await _started(run, a, start_body(vm))
        prepared = await _prepared(run, b, vm)
        assert prepared["result"] is False and "install.iso" in prepared["details"], prepared
        target = local_pool_of("ab416c39-d509-372c-9a0a-7451a45bc65e", b.address)
        config_drive, volume, cd = vm["disks"]
        body = with_storage_body(vm | {"disks": [volume, config_drive, cd]}, b.address,
                                 target) | {"vm": vm}
        kind, moved = await run.ask(a, names.MIGRATE_WITH_STORAGE_COMMAND, body)
        assert (kind, moved["result"]) == (names.MIGRATE_WITH_STORAGE_ANSWER, False), moved
        assert "0x80070002" in moved["details"], moved
        assert await run.where(hosts, name) == ["HV-A"]
        assert root.exists() and not (b.local_pool(tmp_path) / f"{name}.vhdx").exists()


STORE_2 = "\\\\10.1.1.3\\secondary2"
STORE_2_URL = "cifs://10.1.1.3/secondary2?user=admin&password=s3cret"


def _on_store_2(vm: dict[str, Any]) -> dict[str, Any]:
    """``vm`` with its ISOs taken from the second image store, as the MS may name them."""
    moved = copy.deepcopy(vm)
    for disk in moved["disks"]:
        if disk["type"] == "ISO":
            disk["data"][names.TEMPLATE_OBJECT_TO]["imageDataStore"][names.NFS_TO][
                "_url"] = STORE_2_URL
    return moved


def _two_stores(tmp_path: Path, b_reaches_first: bool) -> list[Member]:
    """HV-A reaching both image stores, each with its copy of the ISOs; HV-B the second
    only, or with ``b_reaches_first`` both."""
    first = _store(tmp_path)
    second = tmp_path / "secondary2"
    shutil.copytree(first, second)
    both = {STORE: first, STORE_2: second}
    return pair(tmp_path, shares={"HV-A": both, "HV-B": both if b_reaches_first
                                  else {STORE_2: second}})


def _mismatch(name: str) -> str:
    held = f"{STORE}\\iso\\2\\205\\install.iso, {STORE}\\configdrive\\{name}.iso"
    named = (f"{STORE_2}\\configdrive\\{name}.iso, {STORE_2}\\iso\\2\\205\\install.iso")
    return (f"the VM's DVD drives hold {held}, which the management server did not name "
            f"for this move: it named {named} (another image store's copy), which "
            "PrepareForMigration checked on the destination; the VM moves with the files "
            "its drives hold (no ISO is copied or changed), so the destination must reach "
            "those")


async def test_a_move_where_the_ms_named_another_stores_iso_copy_says_which_file_moves(
        tmp_path: Path) -> None:
    """The destination reaches only the second store: PrepareForMigration, naming its
    copies, says ready; Hyper-V's check refuses the move for the first store's file the
    drive holds, and the answer says why the two disagree. The VM stays."""
    a, b = hosts = _two_stores(tmp_path, b_reaches_first=False)
    name = "i-2-40-VM"
    disk_file(tmp_path / "pool", name)
    vm = _user_vm(name)
    async with cluster(hosts) as run:
        await _started(run, a, start_body(vm))
        moving = _on_store_2(vm)
        prepared = await _prepared(run, b, moving)
        assert prepared["result"] is True, prepared["details"]
        moved = await _migrated(run, a, moving, b.address)
        details = str(moved["details"])
        assert moved["result"] is False, details
        assert details.startswith("MigrateCommand failed due to "), details
        assert "0x80070002" in details and details.endswith(_mismatch(name)), details
        assert "s3cret" not in details
        assert await run.where(hosts, name) == ["HV-A"]


async def test_a_move_with_another_stores_iso_copy_named_goes_ahead_where_both_are_reached(
        tmp_path: Path) -> None:
    a, b = hosts = _two_stores(tmp_path, b_reaches_first=True)
    name = "i-2-40-VM"
    disk_file(tmp_path / "pool", name)
    vm = _user_vm(name)
    held = {f"{STORE}\\iso\\2\\205\\install.iso", f"{STORE}\\configdrive\\{name}.iso"}
    async with cluster(hosts) as run:
        await _started(run, a, start_body(vm))
        moving = _on_store_2(vm)
        assert (await _prepared(run, b, moving))["result"] is True
        moved = await _migrated(run, a, moving, b.address)
        assert moved["result"] is True, moved["details"]
        assert moved["details"] == f"{name} moved to 127.0.0.3; {_mismatch(name)}"
        assert await _isos(b, name) == held
        back = await _migrated(run, b, vm, a.address)  # named as the drives hold them
        assert (back["result"], back["details"]) == (True, f"{name} moved to 127.0.0.2")
