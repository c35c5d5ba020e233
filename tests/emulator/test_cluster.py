"""Emulated hosts as members of one cluster (a shared ``cluster_dir``): they find each other
by name and address, VMs move between them through the members' listeners and the
hand-over files, a stopped member refuses as Hyper-V refuses, and both hosts agree where a
VM is whatever the outcome."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.store import Record
from hyperv_agent.errors import CimNotFound, ConfigError
from tests.emulator.kit import finished, ok, state
from tests.emulator.migration_kit import (
    LIVE_AND_STORAGE,
    STAGED,
    build_vm,
    call,
    migrate,
    moved_disk,
    new_disk,
    portrait,
)

A, B = "HV-A", "HV-B"
IPS = {A: "10.0.0.1", B: "10.0.0.2", "HV-C": "10.0.0.3"}
POOL = "\\\\fs\\pool"  # an SMB share both hosts map to the same folder
SHARED_DISK = f"{POOL}\\vms\\root.vhdx"
LOCAL_DISK = "C:\\vms\\root.vhdx"
REFUSED = "No connection could be made because the target machine actively refused it. " \
          "(0x8007274D)"

Opener = Callable[..., EmulatorCim]


def host_config(tmp_path: Path, name: str, **overrides: object) -> EmulatorConfig:
    values: dict[str, object] = {
        "state_dir": tmp_path / name / "state", "host_name": name, "private_ip": IPS[name],
        "drives": {"C": tmp_path / name / "C"}, "shares": {POOL: tmp_path / "pool"},
        "cluster_dir": tmp_path / "cluster"}
    values.update(overrides)
    return EmulatorConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def open_host(tmp_path: Path) -> AsyncIterator[Opener]:
    opened: list[EmulatorCim] = []

    def open_host(name: str, **overrides: object) -> EmulatorCim:
        cim = EmulatorCim.open(host_config(tmp_path, name, **overrides))
        opened.append(cim)
        return cim

    yield open_host
    for cim in opened:
        await cim.close()


@pytest.fixture
def pair(open_host: Opener, tmp_path: Path) -> tuple[EmulatorCim, EmulatorCim]:
    new_disk(tmp_path / "pool" / "vms" / "root.vhdx")
    return open_host(A), open_host(B)


async def _gone(cim: EmulatorCim, vm: ObjectPath) -> bool:
    try:
        await cim.get(vm)
    except CimNotFound:
        return True
    return False


async def _where(pair: tuple[EmulatorCim, EmulatorCim], vm: ObjectPath) -> list[str]:
    """The hosts that have the VM."""
    return [cim.host.name for cim in pair if not await _gone(cim, vm)]


def _handovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cluster" / "handovers").iterdir())


async def _error(cim: EmulatorCim, result: object) -> tuple[int, str]:
    job = await finished(cim, result)  # type: ignore[arg-type]
    assert job is not None and job["JobState"] == 10
    return int(str(job["ErrorCode"])), str(job["ErrorDescription"])


# --- moves --------------------------------------------------------------------------------


async def test_vm_moves_to_another_member_and_back_keeping_its_state(
        pair: tuple[EmulatorCim, EmulatorCim], tmp_path: Path) -> None:
    a, b = pair
    vm = await build_vm(a, SHARED_DISK, acl=True, kvp=True)
    before = await portrait(a, vm)
    await ok(a, await migrate(a, vm, B, DestinationIPAddressList=[IPS[B]]))
    assert await _where(pair, vm) == [B]
    assert await portrait(b, vm) == before
    await ok(b, await migrate(b, vm, A.lower()))
    assert await _where(pair, vm) == [A]
    assert await portrait(a, vm) == before
    assert before["vlans"] == [42] and before["acls"] == ["allow-ssh"] and before["kvp"]
    assert _handovers(tmp_path) == []


async def test_destination_is_found_by_its_private_address_and_dns_name(
        pair: tuple[EmulatorCim, EmulatorCim]) -> None:
    a, b = pair
    vm = await build_vm(a, SHARED_DISK)
    await ok(a, await migrate(a, vm, IPS[B]))
    await ok(b, await migrate(b, vm, "hv-a.lab.example"))
    assert await _where(pair, vm) == [A]


async def test_running_vm_keeps_running_with_its_memory_on_the_destination(
        pair: tuple[EmulatorCim, EmulatorCim]) -> None:
    a, b = pair
    vm = await build_vm(a, SHARED_DISK)
    await ok(a, await migrate(a, vm, B))
    stored = b.host.store.get(vm)
    assert stored is not None and stored.meta["memory_mb"] == 1024
    assert await state(b, vm) == 2
    summary = (await b.query(wql.select("Win32_OperatingSystem"), "root\\cimv2"))[0]
    assert summary["FreePhysicalMemory"] == (65536 - 1024) * 1024


async def test_disk_on_local_storage_moves_when_storage_moves_too(
        pair: tuple[EmulatorCim, EmulatorCim], tmp_path: Path) -> None:
    a, b = pair
    new_disk(tmp_path / A / "C" / "vms" / "root.vhdx")
    vm = await build_vm(a, LOCAL_DISK)
    moved = await moved_disk(a, vm, "C:\\moved\\root.vhdx")
    await ok(a, await migrate(a, vm, B, LIVE_AND_STORAGE, [moved]))
    assert (await portrait(b, vm))["disks"] == [("C:\\moved\\root.vhdx",)]
    assert (tmp_path / B / "C" / "moved" / "root.vhdx").is_file()
    assert not (tmp_path / A / "C" / "vms" / "root.vhdx").exists()


async def test_staged_move_leaves_a_planned_vm_on_the_other_member(
        pair: tuple[EmulatorCim, EmulatorCim]) -> None:
    a, b = pair
    vm = await build_vm(a, SHARED_DISK)
    await ok(a, await migrate(a, vm, B, STAGED))
    planned = await b.query(wql.select("Msvm_PlannedComputerSystem"))
    assert [p["Name"] for p in planned] == [vm.key("Name")]
    assert await _where(pair, vm) == [A]
    await ok(a, await migrate(a, vm, B, DestinationPlannedVirtualSystemId=vm.key("Name")))
    assert await _where(pair, vm) == [B] and await b.query(
        wql.select("Msvm_PlannedComputerSystem")) == []


# --- refusals: the VM stays running where it was ------------------------------------------


async def _stays(pair: tuple[EmulatorCim, EmulatorCim], vm: ObjectPath, tmp_path: Path) -> None:
    assert await _where(pair, vm) == [A]
    assert await state(pair[0], vm) == 2
    assert _handovers(tmp_path) == []


async def test_move_refused_as_hyperv_refuses_when_the_destination_is_stopped(
        open_host: Opener, tmp_path: Path) -> None:
    new_disk(tmp_path / "pool" / "vms" / "root.vhdx")
    a, b = open_host(A), open_host(B)
    vm = await build_vm(a, SHARED_DISK)
    await b.close()
    code, description = await _error(a, await migrate(a, vm, B))
    assert code == 32777
    assert description == (f"Virtual machine migration operation for 'mover' failed at "
                           f"migration source '{A}'. Failed to establish a connection with "
                           f"host '{B}': {REFUSED}")
    assert await _where((a, a), vm) == [A, A] and await state(a, vm) == 2
    assert _handovers(tmp_path) == []


async def test_move_refused_when_the_destination_is_unknown(
        pair: tuple[EmulatorCim, EmulatorCim], tmp_path: Path) -> None:
    a, _ = pair
    vm = await build_vm(a, SHARED_DISK)
    code, description = await _error(a, await migrate(a, vm, "HV-NOWHERE"))
    assert code == 32777 and description.endswith(
        "Failed to establish a connection with host 'HV-NOWHERE': No such host is known. "
        "(0x80072AF9)")
    await _stays(pair, vm, tmp_path)


async def test_live_move_refused_when_a_disk_is_on_local_storage(
        pair: tuple[EmulatorCim, EmulatorCim], tmp_path: Path) -> None:
    a, _ = pair
    new_disk(tmp_path / A / "C" / "vms" / "root.vhdx")
    vm = await build_vm(a, LOCAL_DISK)
    code, description = await _error(a, await migrate(a, vm, B))
    assert code == 32779
    assert description.startswith(
        f"Virtual machine migration operation for 'mover' failed at migration destination "
        f"'{B}'. the file {LOCAL_DISK} cannot be found from {B}")
    await _stays(pair, vm, tmp_path)


async def test_move_refused_when_the_destination_lacks_the_switch(
        open_host: Opener, tmp_path: Path) -> None:
    new_disk(tmp_path / "pool" / "vms" / "root.vhdx")
    a, b = open_host(A), open_host(B, switches=("Internal",))
    vm = await build_vm(a, SHARED_DISK)
    code, description = await _error(a, await migrate(a, vm, B))
    assert code == 32773 and "Could not find Ethernet switch 'External'" in description
    await _stays((a, b), vm, tmp_path)


async def test_job_failing_midway_leaves_the_vm_running_on_the_source(
        pair: tuple[EmulatorCim, EmulatorCim], tmp_path: Path) -> None:
    a, _ = pair
    vm = await build_vm(a, SHARED_DISK)
    a.faults.fail_next_job("MigrateVirtualSystemToHost")
    code, _ = await _error(a, await migrate(a, vm, B))
    assert code == 32768
    await _stays(pair, vm, tmp_path)
    await ok(a, await migrate(a, vm, B))  # the next one goes through
    assert await _where(pair, vm) == [B]


# --- checks -------------------------------------------------------------------------------


async def test_checks_answer_as_the_move_would_and_move_nothing(
        open_host: Opener, tmp_path: Path) -> None:
    new_disk(tmp_path / "pool" / "vms" / "root.vhdx")
    a, b = open_host(A), open_host(B)
    open_host("HV-C", switches=("Internal",))
    vm = await build_vm(a, SHARED_DISK)
    to_host = "CheckVirtualSystemIsMigratableToHost"
    verdict = await call(a, to_host, vm, B)
    assert (verdict.return_value, verdict["IsMigratable"]) == (0, True)
    verdict = await call(a, to_host, vm, "HV-C")
    assert (verdict.return_value, verdict["IsMigratable"]) == (0, False)
    await b.close()
    assert (await call(a, to_host, vm, B)).return_value == 5
    checked = await call(a, "CheckVirtualSystemIsMigratable", vm, "HV-C")
    assert "Could not find Ethernet switch 'External'" in (await _error(a, checked))[1]
    assert await state(a, vm) == 2


# --- membership ---------------------------------------------------------------------------


async def test_member_refused_when_a_running_member_has_its_name_or_address(
        open_host: Opener, tmp_path: Path) -> None:
    open_host(A)
    with pytest.raises(ConfigError, match="has that name"):
        EmulatorCim.open(host_config(tmp_path, A, state_dir=tmp_path / "other"))
    with pytest.raises(ConfigError, match=r"private address 10\.0\.0\.1"):
        open_host(B, private_ip=IPS[A])


async def test_stopped_member_is_marked_down_and_takes_its_name_back_at_restart(
        open_host: Opener, tmp_path: Path) -> None:
    await open_host(B).close()
    registration = (tmp_path / "cluster" / "hosts" / "hv-b.json").read_text()
    assert '"up": false' in registration
    restarted = open_host(B)
    assert restarted.host.cluster is not None
    assert '"up": true' in (tmp_path / "cluster" / "hosts" / "hv-b.json").read_text()


async def test_migration_listener_is_the_private_address_also_after_it_changed(
        open_host: Opener) -> None:
    await open_host(A).close()
    moved = open_host(A, private_ip="10.0.0.9")
    service = (await moved.query(wql.select("Msvm_VirtualSystemMigrationService")))[0]
    assert service["MigrationServiceListenerIPAddressList"] == ("10.0.0.9",)
    nic = (await moved.query(wql.select("Win32_NetworkAdapterConfiguration"),
                             "root\\cimv2"))[0]
    assert nic["IPAddress"] == ("10.0.0.9",)
    settings = (await moved.query(wql.select(
        "Msvm_VirtualSystemMigrationServiceSettingData")))[0]
    assert settings["EnableVirtualSystemMigration"] is True


async def test_a_move_under_way_to_a_member_completes_though_it_stopped_taking_moves(
        tmp_path: Path) -> None:
    """Whether the destination takes moves is asked as the move begins: the member it
    goes to disabling live migration while the move runs lets the move complete through
    the hand-over; a new move from it is refused then (32770)."""
    now = [1_700_000_000.0]
    new_disk(tmp_path / "pool" / "vms" / "root.vhdx")
    a = EmulatorCim.open(host_config(tmp_path, A), lambda: now[0])
    b = EmulatorCim.open(host_config(tmp_path, B), lambda: now[0])
    try:
        vm = await build_vm(a, SHARED_DISK)
        a.host.config = dataclasses.replace(a.host.config, latency=LatencyModel(job_s=10.0))
        result = await migrate(a, vm, B, DestinationIPAddressList=[IPS[B]])
        (settings,) = await b.query(wql.select(
            "Msvm_VirtualSystemMigrationServiceSettingData"))
        assert settings.path is not None
        txn = b.host.store.transaction()
        staged = txn.edit(settings.path)
        assert staged is not None
        staged.values["EnableVirtualSystemMigration"] = False
        txn.commit()
        now[0] += 10.1
        await ok(a, result)
        assert await _where((a, b), vm) == [B]
        assert _handovers(tmp_path) == []
        code, description = await _error(b, await migrate(b, vm, A))
        assert code == 32770, description
    finally:
        await a.close()
        await b.close()


async def test_a_member_that_fails_to_open_after_joining_leaves_the_cluster(
        open_host: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's stored jobs cannot be read (a disk error) after it joined the cluster:
    opening it fails, and what it opened is closed again, in reverse order: it stops
    listening and reads down in the cluster, its store and state directory are let go.
    Opened again once the disk reads, it joins under its name at once."""
    await open_host(B).close()
    keyed_records = EmulatedHost.keyed_records

    def failing(host: EmulatedHost, class_name: str) -> Iterator[tuple[str, Record]]:
        if class_name == "CIM_ConcreteJob":
            raise sqlite3.OperationalError("disk I/O error")
        return keyed_records(host, class_name)

    monkeypatch.setattr(EmulatedHost, "keyed_records", failing)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        EmulatorCim.open(host_config(tmp_path, B))
    registration = (tmp_path / "cluster" / "hosts" / "hv-b.json").read_text()
    assert '"up": false' in registration
    assert EmulatedHost.named(B) == []
    monkeypatch.undo()
    again = open_host(B)
    assert again.host.cluster is not None
    assert '"up": true' in (tmp_path / "cluster" / "hosts" / "hv-b.json").read_text()
