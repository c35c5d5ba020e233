"""Migration between two emulated hosts: live, storage, staged, and every refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CIMV2_NAMESPACE, CimInstance, CimValue, MethodResult, ObjectPath
from hyperv_agent.emulator import traffic
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.services import metrics
from hyperv_agent.errors import CimNotFound
from tests.emulator.kit import devices, failure, finished, ok, request_state, service, state
from tests.emulator.migration_kit import (
    LIVE,
    LIVE_AND_STORAGE,
    STAGED,
    STORAGE,
    build_vm,
    migrate,
    moved_disk,
    new_disk,
)

SOURCE, DESTINATION = "HV-SOURCE", "HV-DEST"
SOURCE_IP, DESTINATION_IP = "10.0.0.1", "10.0.0.2"
SHARED_DISK = "S:\\vms\\root.vhdx"
LOCAL_DISK = "C:\\vms\\root.vhdx"
#: Classes whose instances make up a host's VMs; compared before and after a refusal.
WATCHED = ("Msvm_ComputerSystem", "Msvm_PlannedComputerSystem", "Msvm_VirtualSystemSettingData",
           "CIM_ResourceAllocationSettingData", "Msvm_EthernetSwitchPortFeatureSettingData",
           "Msvm_ShutdownComponent", "Msvm_KvpExchangeComponent")

Pair = tuple[EmulatorCim, EmulatorCim]


def _config(tmp_path: Path, name: str, ip: str, **overrides: object) -> EmulatorConfig:
    values: dict[str, object] = {
        "state_dir": tmp_path / name / "state", "host_name": name, "private_ip": ip,
        "drives": {"C": tmp_path / name / "C", "S": tmp_path / "shared"},
    }
    values.update(overrides)
    return EmulatorConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def open_pair(tmp_path: Path) -> AsyncIterator[Callable[..., Pair]]:
    """Opens a source and a destination host (the destination with ``overrides``)."""
    opened: list[EmulatorCim] = []

    def open_pair(**overrides: object) -> Pair:
        source = EmulatorCim.open(_config(tmp_path, SOURCE, SOURCE_IP))
        destination = EmulatorCim.open(_config(tmp_path, DESTINATION, DESTINATION_IP,
                                               **overrides))
        opened.extend((source, destination))
        return source, destination

    yield open_pair
    for cim in opened:
        await cim.close()


@pytest.fixture
def pair(open_pair: Callable[..., Pair]) -> Pair:
    return open_pair()


# --- building a VM ------------------------------------------------------------------------


def _new_disk(cim: EmulatorCim, windows_path: str) -> Path:
    return new_disk(cim.host.paths.local(windows_path))


async def _vm(cim: EmulatorCim, disk: str = SHARED_DISK, running: bool = True) -> ObjectPath:
    """A VM with a disk at ``disk`` and a NIC on the "External" switch (with a VLAN)."""
    _new_disk(cim, disk)
    return await build_vm(cim, disk, running=running)


# --- calling and observing ----------------------------------------------------------------


async def _migrate(
    source: EmulatorCim, vm: ObjectPath, destination: str | None = DESTINATION,
    kind: int = LIVE, resources: Sequence[CimInstance] = (), **settings: object,
) -> MethodResult:
    return await migrate(source, vm, destination, kind, resources, **settings)


async def _moved_disk(source: EmulatorCim, vm: ObjectPath, new_path: str) -> CimInstance:
    return await moved_disk(source, vm, new_path)


async def _snapshot(cim: EmulatorCim) -> set[tuple[str, tuple[tuple[str, CimValue], ...]]]:
    seen = set()
    for class_name in WATCHED:
        for found in await cim.query(wql.select(class_name)):
            values = tuple((p.name, p.value) for p in found if p.name != "OnTimeInMilliseconds")
            seen.add((str(found.path), values))
    return seen


async def _world(source: EmulatorCim, destination: EmulatorCim, tmp_path: Path) -> object:
    """Both hosts' VMs and every file on their drives."""
    files = sorted((p, p.stat().st_size) for p in tmp_path.rglob("*")
                   if p.is_file() and "state" not in p.relative_to(tmp_path).parts)
    return await _snapshot(source), await _snapshot(destination), files


async def _error(cim: EmulatorCim, result: MethodResult) -> str:
    job = await finished(cim, result)
    assert job is not None
    return str(job["ErrorDescription"])


def _edit(cim: EmulatorCim, path: ObjectPath | None, **values: int | bool) -> None:
    """Change stored values directly (states that no method of the seam reaches)."""
    txn = cim.host.store.transaction()
    staged = txn.edit(path) if path is not None else None
    assert staged is not None
    staged.values.update(values)
    txn.commit()


async def _switch_of(cim: EmulatorCim, vm: ObjectPath) -> ObjectPath:
    port = (await devices(cim, vm, "Msvm_EthernetPortAllocationSettingData"))[0]
    return ObjectPath.parse(port.strings("HostResource")[0])


async def _gone(cim: EmulatorCim, path: ObjectPath) -> bool:
    try:
        await cim.get(path)
    except CimNotFound:
        return True
    return False


# --- moves --------------------------------------------------------------------------------


async def test_running_vm_moves_with_its_port_when_storage_is_shared(pair: Pair) -> None:
    source, destination = pair
    vm = await _vm(source)
    settings_before = len(await devices(source, vm))
    await ok(source, await _migrate(source, vm, DestinationIPAddressList=[DESTINATION_IP]))
    assert await _gone(source, vm) and await devices(source, vm) == []
    moved = await destination.get(vm)
    assert (moved["Name"], moved["EnabledState"]) == (vm.key("Name"), 2)
    assert len(await devices(destination, vm)) == settings_before
    switch = await destination.get(await _switch_of(destination, vm))
    assert (switch.path, switch["ElementName"]) == (
        (await destination.query(wql.select("Msvm_VirtualEthernetSwitch")))[0].path, "External")
    vlan = await devices(destination, vm, "Msvm_EthernetSwitchPortVlanSettingData")
    assert [v["AccessVlanId"] for v in vlan] == [42]
    components = await destination.associators(vm, result_class="Msvm_ShutdownComponent")
    assert len(components) == 1


async def test_running_vm_keeps_its_uptime_and_memory_when_it_moves(pair: Pair) -> None:
    source, destination = pair
    vm = await _vm(source)
    await ok(source, await _migrate(source, vm))
    stored = destination.host.store.get(vm)
    assert stored is not None and stored.meta["memory_mb"] == 1024
    free = (await destination.query(wql.select("Win32_OperatingSystem"), CIMV2_NAMESPACE))[0]
    assert free["FreePhysicalMemory"] == (65536 - 1024) * 1024
    assert (await destination.get(vm)).integer("OnTimeInMilliseconds") is not None


async def test_running_vm_runs_in_a_worker_process_of_the_destination(pair: Pair) -> None:
    """A moved VM runs in a new vmwp.exe on the destination: its ProcessID is one the
    destination gives, which none of the destination's running VMs holds (both hosts,
    new, would give their first VM the same id)."""
    source, destination = pair
    vm = await _vm(source)
    staying = await _vm(destination, "C:\\vms\\staying.vhdx")
    held = (await destination.get(staying)).integer("ProcessID")
    assert held is not None and held == (await source.get(vm)).integer("ProcessID")
    await ok(source, await _migrate(source, vm))
    moved = (await destination.get(vm)).integer("ProcessID")
    assert moved is not None and moved % 4 == 0 and moved != held


async def test_running_vm_takes_its_processor_load_to_the_destination(pair: Pair) -> None:
    source, destination = pair
    vm = await _vm(source, running=False)
    processor = (await devices(source, vm, "Msvm_ProcessorSettingData"))[0]
    await ok(source, await source.invoke(await service(source), "ModifyResourceSettings", {
        "ResourceSettings": [processor.updated(VirtualQuantity=16)]}))
    await ok(source, await request_state(source, vm, 2))
    before = await _run_time(source)
    await ok(source, await _migrate(source, vm))
    assert (await _run_time(source), await _run_time(destination)) == (0, before)
    assert before > 0


async def _run_time(cim: EmulatorCim) -> int:
    """The hypervisor's % Total Run Time of all the host's logical processors."""
    found = await cim.query(wql.select(
        "Win32_PerfFormattedData_HvStats_HyperVHypervisorLogicalProcessor",
        wql.eq("Name", "_Total")), CIMV2_NAMESPACE)
    value = found[0].integer("PercentTotalRunTime")
    assert value is not None
    return value


async def test_stopped_vm_moves_when_it_is_off(pair: Pair) -> None:
    source, destination = pair
    vm = await _vm(source, running=False)
    await ok(source, await _migrate(source, vm))
    assert await state(destination, vm) == 3
    assert await _gone(source, vm)


async def test_disk_follows_the_vm_when_storage_moves_too(pair: Pair, tmp_path: Path) -> None:
    source, destination = pair
    vm = await _vm(source, LOCAL_DISK)
    new_path = "C:\\moved\\root.vhdx"
    result = await _migrate(source, vm, kind=LIVE_AND_STORAGE,
                            resources=[await _moved_disk(source, vm, new_path)])
    await ok(source, result)
    disk = (await devices(destination, vm, "Msvm_StorageAllocationSettingData"))[0]
    assert disk.strings("HostResource") == (new_path,)
    assert (tmp_path / DESTINATION / "C" / "moved" / "root.vhdx").is_file()
    assert not (tmp_path / SOURCE / "C" / "vms" / "root.vhdx").exists()
    assert await state(destination, vm) == 2


@pytest.mark.parametrize("retain", [False, True])
async def test_disk_moves_on_the_same_host_when_migration_is_storage_only(
    pair: Pair, tmp_path: Path, retain: bool
) -> None:
    source, _ = pair
    vm = await _vm(source, LOCAL_DISK)
    new_path = "C:\\elsewhere\\root.vhdx"
    result = await _migrate(source, vm, None, STORAGE, [await _moved_disk(source, vm, new_path)],
                            RetainVhdCopiesOnSource=retain)
    await ok(source, result)
    disk = (await devices(source, vm, "Msvm_StorageAllocationSettingData"))[0]
    assert disk.strings("HostResource") == (new_path,)
    assert (tmp_path / SOURCE / "C" / "elsewhere" / "root.vhdx").is_file()
    assert (tmp_path / SOURCE / "C" / "vms" / "root.vhdx").exists() == retain
    assert await state(source, vm) == 2


async def test_planned_vm_appears_on_destination_when_move_is_staged(pair: Pair) -> None:
    source, destination = pair
    vm = await _vm(source)
    await ok(source, await _migrate(source, vm, kind=STAGED))
    assert await state(source, vm) == 2
    planned = await destination.query(wql.select("Msvm_PlannedComputerSystem"))
    assert [(p["Name"], p["ElementName"]) for p in planned] == [(vm.key("Name"), "mover")]
    settings = await destination.query(wql.select("Msvm_VirtualSystemSettingData",
                                                  wql.eq("ElementName", "mover")))
    assert [s["VirtualSystemType"] for s in settings] == ["Microsoft:Hyper-V:System:Planned"]
    assert await _gone(destination, vm)
    ports = await devices(destination, vm, "Msvm_EthernetPortAllocationSettingData")
    assert ports and await _switch_of(destination, vm) != await _switch_of(source, vm)


async def test_live_move_replaces_planned_vm_when_planned_id_names_it(pair: Pair) -> None:
    source, destination = pair
    vm = await _vm(source)
    await ok(source, await _migrate(source, vm, kind=STAGED))
    guid = vm.key("Name")
    await ok(source, await _migrate(source, vm, DestinationPlannedVirtualSystemId=guid))
    assert await destination.query(wql.select("Msvm_PlannedComputerSystem")) == []
    settings = await destination.query(wql.select("Msvm_VirtualSystemSettingData",
                                                  wql.eq("ElementName", "mover")))
    assert [s["VirtualSystemType"] for s in settings] == ["Microsoft:Hyper-V:System:Realized"]
    assert await state(destination, vm) == 2


# --- refusals leave both hosts unchanged --------------------------------------------------


async def _refused(pair: Pair, tmp_path: Path, vm: ObjectPath, code: int,
                   **call: object) -> MethodResult:
    source, destination = pair
    before = await _world(source, destination, tmp_path)
    result = await _migrate(source, vm, **call)  # type: ignore[arg-type]
    assert await failure(source, result) == code
    assert await _world(source, destination, tmp_path) == before
    return result


async def test_move_refused_when_destination_is_not_reachable(
    pair: Pair, tmp_path: Path
) -> None:
    vm = await _vm(pair[0])
    await _refused(pair, tmp_path, vm, 32777, destination="HV-NOWHERE")
    await _refused(pair, tmp_path, vm, 32777, DestinationIPAddressList=["192.0.2.7"])


async def test_move_refused_when_vm_is_not_a_vm(pair: Pair, tmp_path: Path) -> None:
    source, _ = pair
    await _vm(source)
    host = (await source.query(wql.select("Msvm_ComputerSystem",
                                          wql.eq("Name", SOURCE))))[0].path
    missing = ObjectPath.for_keys("Msvm_ComputerSystem", CreationClassName="Msvm_ComputerSystem",
                                  Name="6B1AE4A3-0000-4000-8000-000000000000")
    for path in (host, missing):
        assert path is not None
        result = await _refused(pair, tmp_path, path, 32773)
        assert result.return_value == 32773


async def test_move_refused_when_destination_is_the_vms_own_host(
    pair: Pair, tmp_path: Path
) -> None:
    vm = await _vm(pair[0])
    await _refused(pair, tmp_path, vm, 32773, destination=SOURCE.lower())
    await _refused(pair, tmp_path, vm, 32773, destination=None)


@pytest.mark.parametrize("side", [0, 1])
async def test_move_refused_when_a_host_disables_migration(
    pair: Pair, tmp_path: Path, side: int
) -> None:
    vm = await _vm(pair[0])
    found = await pair[side].query(wql.select("Msvm_VirtualSystemMigrationServiceSettingData"))
    _edit(pair[side], found[0].path, EnableVirtualSystemMigration=False)
    await _refused(pair, tmp_path, vm, 32770)


async def test_move_refused_when_vm_is_in_transition(pair: Pair, tmp_path: Path) -> None:
    vm = await _vm(pair[0])
    _edit(pair[0], vm, EnabledState=4)  # shutting down
    await _refused(pair, tmp_path, vm, 32775)


async def test_move_refused_when_destination_lacks_the_switch(
    open_pair: Callable[..., Pair], tmp_path: Path
) -> None:
    pair = open_pair(switches=("Internal",))
    vm = await _vm(pair[0])
    result = await _refused(pair, tmp_path, vm, 32773)
    assert "'External'" in await _error(pair[0], result)


async def test_move_refused_when_guid_exists_on_destination(pair: Pair, tmp_path: Path) -> None:
    source, destination = pair
    vm = await _vm(source)
    twin = (await destination.spawn("Msvm_VirtualSystemSettingData")).updated(
        ElementName="twin", VirtualSystemIdentifier=vm.key("Name"))
    await ok(destination, await destination.invoke(await service(destination), "DefineSystem",
                                                    {"SystemSettings": twin}))
    await _refused(pair, tmp_path, vm, 32773)


async def test_move_refused_when_planned_vm_is_not_named(pair: Pair, tmp_path: Path) -> None:
    source, _ = pair
    vm = await _vm(source)
    await ok(source, await _migrate(source, vm, kind=STAGED))
    await _refused(pair, tmp_path, vm, 32773)
    await _refused(pair, tmp_path, vm, 32773, kind=STAGED)


async def test_move_refused_when_disk_is_not_on_shared_storage(
    pair: Pair, tmp_path: Path
) -> None:
    vm = await _vm(pair[0], LOCAL_DISK)
    result = await _refused(pair, tmp_path, vm, 32779)
    assert LOCAL_DISK in await _error(pair[0], result)


async def test_move_refused_when_destination_lacks_memory(
    open_pair: Callable[..., Pair], tmp_path: Path
) -> None:
    pair = open_pair(memory_mb=512)
    vm = await _vm(pair[0])
    await _refused(pair, tmp_path, vm, 32778)


async def test_storage_move_refused_when_target_file_exists(pair: Pair, tmp_path: Path) -> None:
    source, destination = pair
    vm = await _vm(source, LOCAL_DISK)
    _new_disk(destination, "C:\\moved\\root.vhdx")
    moved = await _moved_disk(source, vm, "C:\\moved\\root.vhdx")
    await _refused(pair, tmp_path, vm, 32773, kind=LIVE_AND_STORAGE, resources=[moved])


async def test_storage_move_refused_when_source_file_is_missing(
    pair: Pair, tmp_path: Path
) -> None:
    source, _ = pair
    vm = await _vm(source, LOCAL_DISK, running=False)
    source.host.paths.local(LOCAL_DISK).unlink()
    moved = await _moved_disk(source, vm, "C:\\moved\\root.vhdx")
    await _refused(pair, tmp_path, vm, 32779, kind=LIVE_AND_STORAGE, resources=[moved])


async def test_nothing_changes_when_the_migration_job_fails(pair: Pair, tmp_path: Path) -> None:
    source, _ = pair
    vm = await _vm(source, LOCAL_DISK)
    source.faults.fail_next_job("MigrateVirtualSystemToHost")
    moved = await _moved_disk(source, vm, "C:\\moved\\root.vhdx")
    result = await _refused(pair, tmp_path, vm, 32768, kind=LIVE_AND_STORAGE, resources=[moved])
    job = await finished(source, result)
    assert job is not None and job.class_name == "Msvm_MigrationJob"


async def test_a_vm_that_comes_back_counts_its_io_on_this_host_from_its_return(
    pair: Pair,
) -> None:
    # Windows keeps a running VM's disk and network adapter counter instances in its
    # worker process on the host it runs on: a VM that leaves takes none along, and one
    # that comes back (its run, and so its uptime, goes on) counts from 0 again.
    source, destination = pair
    vm = await _vm(source)
    (nic,) = await devices(source, vm, "Msvm_SyntheticEthernetPortSettingData")
    mac = str(nic["Address"])
    assert traffic.network_io(source.host, "mover", mac, received_bytes=8 << 20)
    metrics.disk_io(source.host, "mover", SHARED_DISK, read_bytes=4 << 20, reads=40)
    await ok(source, await _migrate(source, vm, DestinationIPAddressList=[DESTINATION_IP]))
    assert await _counters(destination) == {}  # nothing moved along
    assert traffic.network_io(destination.host, "mover", mac, received_bytes=1 << 20)
    await ok(destination, await migrate(destination, vm, SOURCE, LIVE, (),
                                        DestinationIPAddressList=[SOURCE_IP]))
    assert await _counters(source) == {}
    assert traffic.network_io(source.host, "mover", mac, received_bytes=2 << 20)
    metrics.disk_io(source.host, "mover", SHARED_DISK, read_bytes=1 << 20, reads=5)
    assert await _counters(source) == {traffic.ADAPTER_COUNTERS: [2 << 20],
                                       metrics.DEVICE_COUNTERS: [1 << 20]}


async def _counters(cim: EmulatorCim) -> dict[str, list[int]]:
    """Bytes received by each network adapter instance, and read by each disk instance,
    of the host's performance counters, by counter set."""
    found: dict[str, list[int]] = {}
    for class_name, counter in ((traffic.ADAPTER_COUNTERS, "BytesReceivedPersec"),
                                (metrics.DEVICE_COUNTERS, "ReadBytesPersec")):
        for instance in await cim.query(wql.select(class_name), CIMV2_NAMESPACE):
            found.setdefault(class_name, []).append(instance.integer(counter) or 0)
    return found
