"""Live migration between hosts of different processors, on members of one emulated
cluster: a running VM takes the processor features of the host it started on, and moves
only to hosts of the same vendor that have them (all of them with processor compatibility,
LimitProcessorFeatures); a stopped VM goes anywhere."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hyperv_agent.backends import emulator_config, open_backend
from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CIMV2_NAMESPACE, ObjectPath
from hyperv_agent.config import load_config
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, ProcessorModel
from hyperv_agent.errors import CimNotFound, ConfigError
from tests.emulator.kit import define_vm, devices, failure, finished, ok, request_state, service
from tests.emulator.migration_kit import build_vm, call, migrate, new_disk

OLD, NEW, OTHER = "HV-OLD", "HV-NEW", "HV-AMD"
IPS = {OLD: "10.0.0.1", NEW: "10.0.0.2", OTHER: "10.0.0.3"}
PROCESSORS = {OLD: ProcessorModel("Intel", 1), NEW: ProcessorModel("Intel", 2),
              OTHER: ProcessorModel("AMD", 2)}
POOL = "\\\\fs\\pool"
SHARED_DISK = f"{POOL}\\vms\\root.vhdx"
FEATURES = ("Virtual machine 'mover' is using processor-specific features not supported on "
            f"host '{OLD}'. To allow for migration of this virtual machine to a server with "
            "a different processor, modify the virtual machine settings to limit the "
            "processor features used by the virtual machine.")
VENDOR = ("The virtual machine cannot be moved to the destination computer. The hardware on "
          "the destination computer is not compatible with the hardware requirements of this "
          "virtual machine.")

Hosts = dict[str, EmulatorCim]


def _config(tmp_path: Path, name: str) -> EmulatorConfig:
    return EmulatorConfig(
        state_dir=tmp_path / name / "state", host_name=name, private_ip=IPS[name],
        drives={"C": tmp_path / name / "C"}, shares={POOL: tmp_path / "pool"},
        cluster_dir=tmp_path / "cluster", processor=PROCESSORS[name])


@pytest.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[Callable[[], Hosts]]:
    """Opens the three hosts (each open once at a time: a test may close and reopen one
    through the dictionary it gets)."""
    opened: Hosts = {}

    def open_all() -> Hosts:
        for name in IPS:
            opened[name] = EmulatorCim.open(_config(tmp_path, name))
        return opened

    new_disk(tmp_path / "pool" / "vms" / "root.vhdx")
    yield open_all
    for cim in opened.values():
        await cim.close()


async def _limit(cim: EmulatorCim, vm: ObjectPath, limited: bool) -> int:
    """Set the VM's LimitProcessorFeatures: the call's failure code, 0 when it succeeded."""
    (processor,) = await devices(cim, vm, "Msvm_ProcessorSettingData")
    result = await cim.invoke(await service(cim), "ModifyResourceSettings", {
        "ResourceSettings": [processor.updated(LimitProcessorFeatures=limited)]})
    job = await finished(cim, result)
    if result.return_value == 0 or (job is not None and job["JobState"] == 7):
        return 0
    return await failure(cim, result)


async def _vm(cim: EmulatorCim, *, limited: bool = False) -> ObjectPath:
    vm = await build_vm(cim, SHARED_DISK, running=False)
    assert await _limit(cim, vm, limited) == 0
    await ok(cim, await request_state(cim, vm, 2))
    return vm


async def _refusal(source: EmulatorCim, vm: ObjectPath, destination: str) -> str:
    """The move's job error; the check before it says no, and the VM stays running."""
    verdict = await call(source, "CheckVirtualSystemIsMigratableToHost", vm, destination)
    assert (verdict.return_value, verdict["IsMigratable"]) == (0, False)
    job = await finished(source, await migrate(source, vm, destination))
    assert job is not None and job["JobState"] == 10
    assert (await source.get(vm))["EnabledState"] == 2
    return str(job["ErrorDescription"])


async def _on(cim: EmulatorCim, vm: ObjectPath) -> bool:
    try:
        await cim.get(vm)
    except CimNotFound:
        return False
    return True


async def test_a_vm_started_on_newer_processors_does_not_move_to_older_ones(
        hosts: Callable[[], Hosts]) -> None:
    on = hosts()
    vm = await _vm(on[NEW])
    assert await _refusal(on[NEW], vm, OLD) == (
        f"Virtual machine migration operation for 'mover' failed at migration destination "
        f"'{OLD}'. {FEATURES}")
    assert not await _on(on[OLD], vm)


async def test_a_vm_keeps_the_features_it_started_with_wherever_it_moves(
        hosts: Callable[[], Hosts]) -> None:
    on = hosts()
    vm = await _vm(on[OLD])
    await ok(on[OLD], await migrate(on[OLD], vm, NEW))
    await ok(on[NEW], await migrate(on[NEW], vm, OLD))  # it still uses level 1 only
    assert await _on(on[OLD], vm) and not await _on(on[NEW], vm)


async def test_processor_compatibility_moves_a_vm_to_older_processors_of_its_vendor(
        hosts: Callable[[], Hosts]) -> None:
    on = hosts()
    vm = await _vm(on[NEW], limited=True)
    verdict = await call(on[NEW], "CheckVirtualSystemIsMigratableToHost", vm, OLD)
    assert verdict["IsMigratable"] is True
    await ok(on[NEW], await migrate(on[NEW], vm, OLD))
    assert (await on[OLD].get(vm))["EnabledState"] == 2


@pytest.mark.parametrize("limited", [False, True])
async def test_no_running_vm_moves_to_processors_of_another_vendor(
        hosts: Callable[[], Hosts], limited: bool) -> None:
    on = hosts()
    vm = await _vm(on[NEW], limited=limited)
    assert await _refusal(on[NEW], vm, OTHER) == (
        f"Virtual machine migration operation for 'mover' failed at migration destination "
        f"'{OTHER}'. {VENDOR}")


async def test_a_saved_vm_keeps_its_features_and_a_stopped_one_moves_anywhere(
        hosts: Callable[[], Hosts]) -> None:
    on = hosts()
    vm = await _vm(on[NEW])
    await ok(on[NEW], await request_state(on[NEW], vm, 6))  # saved
    assert "processor-specific features" in await _saved_refusal(on[NEW], vm, OLD)
    await ok(on[NEW], await request_state(on[NEW], vm, 3))  # its saved state discarded
    await ok(on[NEW], await migrate(on[NEW], vm, OTHER))
    await ok(on[OTHER], await request_state(on[OTHER], vm, 2))  # starts on AMD's features
    await ok(on[OTHER], await request_state(on[OTHER], vm, 3))
    await ok(on[OTHER], await migrate(on[OTHER], vm, OLD))


async def _saved_refusal(source: EmulatorCim, vm: ObjectPath, destination: str) -> str:
    job = await finished(source, await migrate(source, vm, destination))
    assert job is not None and job["JobState"] == 10
    return str(job["ErrorDescription"])


async def test_processor_compatibility_changes_only_while_the_vm_is_off(
        hosts: Callable[[], Hosts]) -> None:
    cim = hosts()[NEW]
    vm = await _vm(cim)
    assert await _limit(cim, vm, True) == 32775
    await ok(cim, await request_state(cim, vm, 3))
    assert await _limit(cim, vm, True) == 0


async def test_the_host_reports_its_processor_vendor(hosts: Callable[[], Hosts]) -> None:
    on = hosts()
    for name, manufacturer in ((OLD, "GenuineIntel"), (OTHER, "AuthenticAMD")):
        processors = await on[name].query(wql.select("Win32_Processor"), CIMV2_NAMESPACE)
        assert {p["Manufacturer"] for p in processors} == {manufacturer}


async def test_a_defined_vm_has_no_processor_compatibility_unless_asked(
        hosts: Callable[[], Hosts]) -> None:
    cim = hosts()[OLD]
    vm = await define_vm(cim, "plain")
    (processor,) = await devices(cim, vm, "Msvm_ProcessorSettingData")
    assert processor["LimitProcessorFeatures"] is False


async def test_the_lab_configuration_names_the_processors(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text('[emulator.processor]\nvendor = "AMD"\nfeature_level = 3\n')
    config = load_config(path, state_dir=tmp_path / "state", backend="emulator")
    assert emulator_config(config).processor == ProcessorModel("AMD", 3)
    cim = open_backend(config)
    try:
        processors = await cim.query(wql.select("Win32_Processor"), CIMV2_NAMESPACE)
        assert {p["Manufacturer"] for p in processors} == {"AuthenticAMD"}
    finally:
        await cim.close()
    path.write_text('[emulator.processor]\nvendor = "ARM"\n')
    with pytest.raises(ConfigError, match="vendor"):
        load_config(path, state_dir=tmp_path / "state", backend="emulator")


async def test_a_vm_stored_running_by_an_earlier_version_is_taken_as_started_on_its_host(
        hosts: Callable[[], Hosts], tmp_path: Path) -> None:
    on = hosts()
    vm = await _vm(on[NEW])
    await on[NEW].close()
    with sqlite3.connect(tmp_path / NEW / "state" / "emulator.sqlite3") as db:
        rows = db.execute("SELECT id, doc FROM records WHERE class = 'Msvm_ComputerSystem'")
        for row_id, doc in rows.fetchall():
            data = json.loads(doc)
            data["meta"].pop("processor", None)  # as versions before it kept the VM
            db.execute("UPDATE records SET doc = ? WHERE id = ?", (json.dumps(data), row_id))
    on[NEW] = EmulatorCim.open(_config(tmp_path, NEW))
    assert "processor-specific features" in await _refusal(on[NEW], vm, OLD)
