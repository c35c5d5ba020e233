"""Migration of a generation 1 VM whose data volumes are on IDE (``dataDiskController=ide``,
for a guest without Hyper-V's synthetic storage driver), between two agents (``serve``
processes on 127.0.0.2 and 127.0.0.3 over emulated hosts of one cluster), with the
management server's own bodies: each disk must arrive at the IDE place it left, or the
guest, which sees no SCSI disk, loses its volumes (or boots from another disk)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import Cim, ObjectPath
from hyperv_agent.cloudstack import names
from tests.e2e.migration_kit import (
    LOCAL_POOL,
    SHARE,
    Member,
    cluster,
    disk_file,
    local_pool_of,
    migrate_body,
    pair,
    prepare_body,
    smb_pool,
    start_body,
    vm_to,
    volume_body,
    with_storage_body,
)
from tests.emulator.kit import devices

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="needs 127.0.0.2 and 127.0.0.3 (Linux loopback)")

RASD, SASD = "Msvm_ResourceAllocationSettingData", "Msvm_StorageAllocationSettingData"
IDE = "Microsoft:Hyper-V:Emulated IDE Controller"
SCSI = "Microsoft:Hyper-V:Synthetic SCSI Controller"
DISK = "Microsoft:Hyper-V:Synthetic Disk Drive"
DVD = "Microsoft:Hyper-V:Synthetic DVD Drive"
B_GUID = "ab416c39-d509-372c-9a0a-7451a45bc65e"

Layout = dict[tuple[str, int], tuple[str, str]]


def _with_ide_data(vm: dict[str, Any], *volumes: str) -> dict[str, Any]:
    """``vm`` with ``dataDiskController=ide`` and the data volumes ``volumes`` (in the pool
    of its root volume), as the MS writes their DiskTOs."""
    vm = copy.deepcopy(vm)
    vm["details"]["dataDiskController"] = "ide"
    root = vm["disks"][0]
    for seq, volume in enumerate(volumes, start=1):
        disk = copy.deepcopy(root)
        disk["data"][names.VOLUME_OBJECT_TO] |= {
            "uuid": volume, "path": volume, "volumeType": "DATADISK", "name": f"DATA-{seq}",
            "id": 40 + seq, "volumeId": 40 + seq, "deviceId": seq}
        disk |= {"diskSeq": seq, "path": volume, "type": "DATADISK"}
        vm["disks"].insert(seq, disk)
    return vm


async def _layout(cim: Cim, name: str) -> Layout:
    """Every drive of VM ``name`` by (``ide0``/``ide1``/``scsi``, slot): (kind, file name)."""
    (system,) = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", name)))
    assert system.path is not None
    rasd = await devices(cim, system.path, RASD)
    media = {ObjectPath.parse(str(m["Parent"])): str(m.strings("HostResource")[0])
             for m in await devices(cim, system.path, SASD)}
    buses = {c.path: (f"ide{c['Address']}" if c["ResourceSubType"] == IDE else "scsi")
             for c in rasd if c["ResourceSubType"] in (IDE, SCSI)}
    return {(buses[ObjectPath.parse(str(d["Parent"]))], int(str(d["AddressOnParent"]))): (
        "disk" if d["ResourceSubType"] == DISK else "dvd", media.get(d.path, ""))
        for d in rasd if d["ResourceSubType"] in (DISK, DVD) and d.path is not None}


def _ide_layout(folder: str, root: str, data: tuple[str, str]) -> Layout:
    """Where StartCommand puts a generation 1 VM's disks with ``dataDiskController=ide``."""
    return {("ide0", 0): ("disk", f"{folder}\\{root}.vhdx"), ("ide1", 0): ("dvd", ""),
            ("ide0", 1): ("disk", f"{folder}\\{data[0]}.vhdx"),
            ("ide1", 1): ("disk", f"{folder}\\{data[1]}.vhdx")}


async def _started_on_ide(run: Any, host: Member, vm: dict[str, Any], folder: str) -> Layout:
    _, started = await run.ask(host, names.START_COMMAND, start_body(vm))
    assert started["result"] is True, started["details"]
    disks = [d["path"] for d in vm["disks"] if d["type"] in ("ROOT", "DATADISK")]
    layout = await _layout(host.cim(), vm["name"])
    assert layout == _ide_layout(folder, disks[0], (disks[1], disks[2]))
    return layout


async def test_a_gen1_vm_with_data_volumes_on_ide_moves_live_keeping_each_ide_place(
        tmp_path: Path) -> None:
    a, b = hosts = pair(tmp_path)
    name, data = "i-2-50-VM", ("5a1d0c0e-0001-4c1e-9a11-d1d1d1d1d101",
                               "5a1d0c0e-0002-4c1e-9a11-d1d1d1d1d102")
    root = "5a1d0c0e-0000-4c1e-9a11-d1d1d1d1d100"
    for volume in (root, *data):
        disk_file(tmp_path / "pool", volume)
    vm = _with_ide_data(vm_to(name, root), *data)
    async with cluster(hosts) as run:
        before = await _started_on_ide(run, a, vm, SHARE)
        kind, prepared = await run.ask(b, names.PREPARE_FOR_MIGRATION_COMMAND,
                                       prepare_body(vm))
        assert (kind, prepared["result"]) == (names.PREPARE_FOR_MIGRATION_ANSWER, True), \
            prepared["details"]
        kind, moved = await run.ask(a, names.MIGRATE_COMMAND, migrate_body(vm, b.address))
        assert (kind, moved["result"]) == (names.MIGRATE_ANSWER, True), moved["details"]
        assert await run.where(hosts, name) == ["HV-B"]
        assert await _layout(b.cim(), name) == before
        kind, back = await run.ask(b, names.MIGRATE_COMMAND, migrate_body(vm, a.address))
        assert (kind, back["result"]) == (names.MIGRATE_ANSWER, True), back["details"]
        assert await _layout(a.cim(), name) == before


async def test_a_gen1_vm_with_data_volumes_on_ide_moves_with_them_keeping_each_ide_place(
        tmp_path: Path) -> None:
    a, b = hosts = pair(tmp_path)
    name, data = "i-2-51-VM", ("5a1d0c0e-0011-4c1e-9a11-d1d1d1d1d111",
                               "5a1d0c0e-0012-4c1e-9a11-d1d1d1d1d112")
    (tmp_path / "pool").mkdir()  # the SMB pool, which this VM does not use
    for volume in (name, *data):
        disk_file(a.local_pool(tmp_path), volume)
    vm = _with_ide_data(vm_to(name, name, local_root=True), *data)
    async with cluster(hosts) as run:
        await _started_on_ide(run, a, vm, LOCAL_POOL)
        target = local_pool_of(B_GUID, b.address)
        body = with_storage_body(vm, b.address, target)
        (root_pair,) = body["volumeToFilerAsList"]
        for seq, volume in enumerate(data, start=1):
            body["volumeToFilerAsList"].append({
                "t": root_pair["t"] | {"id": 40 + seq, "name": f"DATA-{seq}", "path": volume,
                                       "type": "DATADISK", "deviceId": seq},
                "u": target})
        kind, moved = await run.ask(a, names.MIGRATE_WITH_STORAGE_COMMAND, body)
        assert (kind, moved["result"]) == (names.MIGRATE_WITH_STORAGE_ANSWER, True), moved
        assert [(v["id"], v["path"]) for v in moved["volumeTos"]] == [
            (31, name), (41, data[0]), (42, data[1])]
        assert await run.where(hosts, name) == ["HV-B"]
        assert await _layout(b.cim(), name) == _ide_layout(LOCAL_POOL, name, data)
        for volume in (name, *data):
            assert (b.local_pool(tmp_path) / f"{volume}.vhdx").is_file()
            assert not (a.local_pool(tmp_path) / f"{volume}.vhdx").exists()

        # one volume on to the SMB pool while the VM runs (storage migration): same place
        kind, alone = await run.ask(b, names.MIGRATE_VOLUME_COMMAND,
                                    volume_body(data[1], name, smb_pool()))
        assert (kind, alone["result"]) == (names.MIGRATE_VOLUME_ANSWER, True), alone
        assert await _layout(b.cim(), name) == _ide_layout(LOCAL_POOL, name, data) | {
            ("ide1", 1): ("disk", f"{SHARE}\\{data[1]}.vhdx")}
        assert (tmp_path / "pool" / f"{data[1]}.vhdx").is_file()
