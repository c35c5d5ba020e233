"""A live move of a VM whose config drive is in the host's cache, between two agents
(``serve`` processes on 127.0.0.2 and 127.0.0.3 over emulated hosts of one cluster), in
the management server's order (ConfigDriveNetworkElement, VirtualMachineManagerImpl):

1. HandleConfigDriveIsoCommand (create, ``preferHostCache``, no ``destStore``) to the
   destination, from ``prepareMigration`` while the MS prepares the VM's NICs;
2. PrepareForMigrationCommand to the destination, its VM's ``configDriveLocation`` HOST
   and the config drive disk naming no store (``addConfigDriveDisk(profile, null)``);
3. MigrateCommand to the source;
4. HandleConfigDriveIsoCommand (delete, ``preferHostCache``) to the source, from
   ``commitMigration``.

The live move keeps the path in the VM's DVD drive, so the cache is at the same place on
both hosts (the default, below the local pool's folder).
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cloudstack import names
from tests.e2e.migration_kit import (
    LOCAL_POOL,
    Cluster,
    Member,
    cluster,
    disk_file,
    migrate_body,
    pair,
    prepare_body,
    start_body,
    vm_to,
)
from tests.e2e.test_config_drive_iso import config_drive_disk, iso_image

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="needs 127.0.0.2 and 127.0.0.3 (Linux loopback)")

VM = "i-2-44-VM"
ISO_FILE = f"configdrive/{VM}.iso"
IN_CACHE = f"{LOCAL_POOL}\\configdrive-cache\\configdrive\\{VM}.iso"
ISO_SUBTYPE = "Microsoft:Hyper-V:Virtual CD/DVD Disk"


def _handle(create: bool, store: dict[str, Any] | None = None, *, host_cache: bool = True,
            data: bytes = b"local-hostname: web\n") -> dict[str, Any]:
    """HandleConfigDriveIsoCommand for the host's cache (else for ``store``), as Gson
    writes it."""
    body: dict[str, Any] = {"isoFile": ISO_FILE, "create": create,
                            "useHostCacheOnUnsupportedPool": False,
                            "preferHostCache": host_cache,
                            "contextMap": {}, "wait": 0, "bypassHostMaintenance": False}
    if create:
        body["isoData"] = base64.b64encode(iso_image(data)).decode()
    if store is not None:
        body["destStore"] = store
    return body


def _vm(*, pool_named: bool, location: str = "HOST") -> dict[str, Any]:
    """The user VM, its root volume on the SMB pool, its config drive in the host's cache
    first in its disks (naming the root volume's pool with ``pool_named``, as at a start,
    else no store, as in a move), and an empty CD."""
    vm = vm_to(VM, VM)
    root, cd = vm["disks"]
    pool = root["data"][names.VOLUME_OBJECT_TO]["dataStore"]
    vm["disks"] = [config_drive_disk(pool if pool_named else None), root, cd]
    vm["disks"][0]["data"][names.TEMPLATE_OBJECT_TO]["path"] = ISO_FILE
    vm["disks"][0]["path"] = ISO_FILE
    return vm | {"configDriveLocation": location}


def _cached(tmp_path: Path, host: Member) -> Path:
    return host.local_pool(tmp_path) / "configdrive-cache" / "configdrive" / f"{VM}.iso"


async def _isos(host: Member) -> set[str]:
    cim = host.cim()
    (vm,) = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", VM)))
    media = await cim.query(wql.select("Msvm_StorageAllocationSettingData", wql.starts_with(
        "InstanceID", f"Microsoft:{vm['Name']}\\")))
    return {m.strings("HostResource")[0] for m in media if m["ResourceSubType"] == ISO_SUBTYPE}


async def _ok(run: Cluster, host: Member, fqcn: str, body: dict[str, Any]) -> dict[str, Any]:
    _, answer = await run.ask(host, fqcn, body)
    assert answer["result"] is True, answer
    return answer


async def test_a_vm_with_its_config_drive_in_the_host_cache_moves_live(
        tmp_path: Path) -> None:
    a, b = hosts = pair(tmp_path)
    disk_file(tmp_path / "pool", VM)
    pool = vm_to(VM, VM)["disks"][0]["data"][names.VOLUME_OBJECT_TO]["dataStore"]
    async with cluster(hosts) as run:
        # the start: the MS names the root volume's pool, the ISO goes to A's cache
        created = await _ok(run, a, names.HANDLE_CONFIG_DRIVE_ISO_COMMAND, _handle(True, pool))
        assert created["location"] == "HOST"
        await _ok(run, a, names.START_COMMAND, start_body(_vm(pool_named=True)))
        assert IN_CACHE in await _isos(a)

        moving = _vm(pool_named=False)
        _, early = await run.ask(b, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(moving))
        assert early["result"] is False and IN_CACHE in early["details"], early

        await _ok(run, b, names.HANDLE_CONFIG_DRIVE_ISO_COMMAND, _handle(True))
        await _ok(run, b, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(moving))
        await _ok(run, a, names.MIGRATE_COMMAND, migrate_body(moving, b.address))
        assert await run.where(hosts, VM) == ["HV-B"]
        assert IN_CACHE in await _isos(b)

        await _ok(run, a, names.HANDLE_CONFIG_DRIVE_ISO_COMMAND, _handle(False))
        assert not _cached(tmp_path, a).exists()
        assert _cached(tmp_path, b).read_bytes() == iso_image(b"local-hostname: web\n")
        # the ISO the moved VM holds stays while it runs
        _, kept = await run.ask(b, names.HANDLE_CONFIG_DRIVE_ISO_COMMAND, _handle(False))
        assert kept["result"] is False and f"running VM {VM}" in kept["details"], kept


async def test_the_destination_cannot_rebuild_a_config_drive_the_source_vm_holds(
        tmp_path: Path) -> None:
    """With the config drive on the shared pool, prepareMigration rebuilds it (with the
    destination's host name) through the destination while the source's VM holds it open
    over SMB: the file server refuses the rename, and the destination, which cannot reach
    that VM's drive, says so; the MS logs it and the move goes on, the ISO as it was."""
    a, b = hosts = pair(tmp_path)
    disk_file(tmp_path / "pool", VM)
    pool = vm_to(VM, VM)["disks"][0]["data"][names.VOLUME_OBJECT_TO]["dataStore"]
    on_share = tmp_path / "pool" / "configdrive" / f"{VM}.iso"
    async with cluster(hosts) as run:
        created = await _ok(run, a, names.HANDLE_CONFIG_DRIVE_ISO_COMMAND,
                            _handle(True, pool, host_cache=False, data=b"host: HV-A"))
        assert created["location"] == "PRIMARY"
        vm = _vm(pool_named=True, location="PRIMARY")
        await _ok(run, a, names.START_COMMAND, start_body(vm))

        _, refused = await run.ask(b, names.HANDLE_CONFIG_DRIVE_ISO_COMMAND,
                                   _handle(True, pool, host_cache=False, data=b"host: HV-B"))
        assert refused["result"] is False, refused
        assert "being used by another process" in refused["details"], refused
        assert "no VM of this host has it in a DVD drive" in refused["details"], refused
        assert "this host cannot change that VM's drive" in refused["details"], refused
        assert on_share.read_bytes() == iso_image(b"host: HV-A")
        assert [p.name for p in on_share.parent.iterdir()] == [f"{VM}.iso"]

        await _ok(run, b, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(vm))
        await _ok(run, a, names.MIGRATE_COMMAND, migrate_body(vm, b.address))
        # on its new host the VM's config drive can be rebuilt: its drive changes media
        rebuilt = await _ok(run, b, names.HANDLE_CONFIG_DRIVE_ISO_COMMAND,
                            _handle(True, pool, host_cache=False, data=b"host: HV-B"))
        assert f"running VM {VM} changed media" in rebuilt["details"], rebuilt
        assert on_share.read_bytes() == iso_image(b"host: HV-B")


async def test_hosts_whose_config_drive_caches_differ_say_which_setting_to_change(
        tmp_path: Path) -> None:
    """HV-B keeps its config drive cache elsewhere: the MS writes the config drive into
    it and PrepareForMigration finds it there, but the move keeps the path the VM's DVD
    drive names, in HV-A's cache, which HV-B lacks. The refusal names HV-A's ISO and
    cache and the setting to make alike; the VM stays on HV-A."""
    a, b = hosts = pair(tmp_path, agent_b="config_drive_cache_path = 'C:\\cd-cache'")
    disk_file(tmp_path / "pool", VM)
    pool = vm_to(VM, VM)["disks"][0]["data"][names.VOLUME_OBJECT_TO]["dataStore"]
    async with cluster(hosts) as run:
        await _ok(run, a, names.HANDLE_CONFIG_DRIVE_ISO_COMMAND, _handle(True, pool))
        await _ok(run, a, names.START_COMMAND, start_body(_vm(pool_named=True)))
        moving = _vm(pool_named=False)
        written = await _ok(run, b, names.HANDLE_CONFIG_DRIVE_ISO_COMMAND, _handle(True))
        assert f"C:\\cd-cache\\configdrive\\{VM}.iso" in written["details"], written
        await _ok(run, b, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(moving))
        _, refused = await run.ask(a, names.MIGRATE_COMMAND, migrate_body(moving, b.address))
        assert refused["result"] is False, refused
        assert (f"the VM's config drive is in this host's config drive cache, at {IN_CACHE}"
                in refused["details"]), refused
        assert (f"({LOCAL_POOL}\\configdrive-cache here); set [agent] "
                "config_drive_cache_path alike on every host" in refused["details"]), refused
        assert await run.where(hosts, VM) == ["HV-A"]
