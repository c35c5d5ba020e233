"""Resource metering of virtual hard disks: ControlMetrics, the metric values and the
associations between media, values and definitions (raw CIM, no hyperv/ code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.services import metrics
from hyperv_agent.emulator.services.metrics import disk_io
from hyperv_agent.emulator.store import Record
from tests.emulator.kit import attach_vhdx, define_vm, devices, ok, request_state, service

METRIC_SERVICE = "Msvm_MetricService"
VALUE = "Msvm_AggregationMetricValue"
DEFINITION = "Msvm_AggregationMetricDefinition"
SASD = "Msvm_StorageAllocationSettingData"
ROOT = "C:\\disks\\root.vhdx"
MB = 1 << 20


async def _vm(cim: EmulatorCim, tmp_path: Path, *, running: bool = True) -> ObjectPath:
    vm = await define_vm(cim, "vm1")
    await attach_vhdx(cim, vm, tmp_path / "C")
    if running:
        await ok(cim, await request_state(cim, vm, 2))
    return vm


async def _medium(cim: EmulatorCim, vm: ObjectPath) -> ObjectPath:
    (medium,) = await devices(cim, vm, SASD)
    assert medium.path is not None
    return medium.path


async def _control(cim: EmulatorCim, subject: ObjectPath | None, action: int,
                   definition: ObjectPath | None = None) -> int:
    result = await cim.invoke(await service(cim, METRIC_SERVICE), "ControlMetrics", {
        "Subject": subject, "Definition": definition, "MetricCollectionEnabled": action})
    return result.return_value


async def _values(cim: EmulatorCim) -> dict[str, str]:
    """Every disk metric value on the host by its definition's name."""
    definitions = {d.string("Id"): d.string("ElementName")
                   for d in await cim.query(wql.select(DEFINITION))}
    return {str(definitions[v.string("MetricDefinitionId")]): str(v.string("MetricValue"))
            for v in await cim.query(wql.select(VALUE))}


def _io(cim: EmulatorCim, read: int, written: int, ios: int) -> bool:
    return disk_io(cim.host, "vm1", ROOT, read_bytes=read, written_bytes=written, ios=ios)


async def test_values_count_disk_io_in_megabytes_when_metering_is_on_and_vm_runs(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, tmp_path)
    assert await _control(emulator, vm, 2) == 0
    assert await _values(emulator) == {
        "Disk Data Read": "0", "Disk Data Written": "0", "Normalized I/O Count": "0"}
    assert _io(emulator, 3 * MB + MB // 2, MB, 400)
    assert _io(emulator, MB // 2, 0, 100)
    assert await _values(emulator) == {
        "Disk Data Read": "4", "Disk Data Written": "1", "Normalized I/O Count": "500"}
    assert await _control(emulator, vm, 2) == 0  # enabling again keeps the values
    assert (await _values(emulator))["Disk Data Read"] == "4"


async def test_nothing_is_counted_when_metering_is_off_or_vm_is_not_running(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, tmp_path, running=False)
    assert not _io(emulator, MB, MB, 10)
    assert await _values(emulator) == {}
    assert await _control(emulator, vm, 2) == 0
    assert not _io(emulator, MB, MB, 10)  # metered, but the VM is off
    await ok(emulator, await request_state(emulator, vm, 2))
    await ok(emulator, await request_state(emulator, vm, 9))  # paused
    assert not _io(emulator, MB, MB, 10)
    assert set((await _values(emulator)).values()) == {"0"}


async def test_disable_drops_values_and_reset_zeroes_them_when_asked(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, tmp_path)
    await _control(emulator, vm, 2)
    _io(emulator, 2 * MB, 2 * MB, 20)
    assert await _control(emulator, vm, 4) == 0
    assert set((await _values(emulator)).values()) == {"0"}
    assert await _control(emulator, await _medium(emulator, vm), 3) == 0
    assert await _values(emulator) == {}
    assert not _io(emulator, MB, MB, 1)
    assert await _control(emulator, vm, 4) == 0  # resetting what is off switches nothing on
    assert await _values(emulator) == {}


async def test_one_definition_is_enabled_alone_when_subject_and_definition_are_given(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, tmp_path)
    written = next(d for d in await emulator.query(wql.select(DEFINITION))
                   if d["ElementName"] == "Disk Data Written")
    assert written.path is not None
    assert await _control(emulator, await _medium(emulator, vm), 2, written.path) == 0
    _io(emulator, 5 * MB, 2 * MB, 70)
    assert await _values(emulator) == {"Disk Data Written": "2"}


@pytest.mark.parametrize("case", ["both null", "not a disk", "unknown definition", "action 5"])
async def test_control_metrics_fails_with_2_and_changes_nothing_when_asked_wrongly(
    emulator: EmulatorCim, tmp_path: Path, case: str,
) -> None:
    vm = await _vm(emulator, tmp_path)
    vssd = ObjectPath.for_keys("Msvm_VirtualSystemSettingData",
                               InstanceID=f"Microsoft:{vm.key('Name')}")
    bogus = ObjectPath.for_keys(DEFINITION, Id="Microsoft:nope", InstanceID="Microsoft:nope")
    subject, definition, action = {
        "both null": (None, None, 2), "not a disk": (vssd, None, 2),
        "unknown definition": (vm, bogus, 2), "action 5": (vm, None, 5)}[case]
    assert await _control(emulator, subject, action, definition) == 2
    assert await _values(emulator) == {}


async def test_associations_link_media_values_and_definitions_when_metered(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, tmp_path)
    medium = await _medium(emulator, vm)
    assert await _linked(emulator, medium, "Msvm_MetricForME") == []
    await _control(emulator, vm, 2)
    values = await _linked(emulator, medium, "Msvm_MetricForME")
    assert sorted(v.class_name for v in values) == [VALUE] * 3
    assert values[0].path is not None
    back = await _linked(emulator, values[0].path, "Msvm_MetricForME")
    assert [b.path for b in back] == [medium]
    definitions = await _linked(emulator, medium, "Msvm_MetricDefForME")
    assert sorted(str(d["ElementName"]) for d in definitions) == [
        "Disk Data Read", "Disk Data Written", "Normalized I/O Count"]
    assert definitions[0].path is not None
    applies_to = {i.path for i in await _linked(emulator, definitions[0].path,
                                                "Msvm_MetricDefForME")}
    assert {medium, vm} <= applies_to


async def _linked(cim: EmulatorCim, path: ObjectPath, assoc: str) -> list[CimInstance]:
    return await cim.query(wql.associators_of(path, assoc_class=assoc))


async def test_disk_io_refuses_when_vm_or_disk_is_unknown(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    await _vm(emulator, tmp_path)
    with pytest.raises(LookupError, match="no VM named"):
        disk_io(emulator.host, "nope", ROOT, read_bytes=1)
    with pytest.raises(LookupError, match="no virtual hard disk"):
        disk_io(emulator.host, "vm1", "C:\\disks\\other.vhdx", read_bytes=1)
    with pytest.raises(ValueError, match="negative"):
        disk_io(emulator.host, "vm1", ROOT, read_bytes=-1)


# --- the disk's performance counters (root\cimv2) -----------------------------------------

DEVICE = "Win32_PerfRawData_Counters_HyperVVirtualStorageDevice"
CIMV2 = "root\\cimv2"


async def _device(cim: EmulatorCim) -> dict[str, int]:
    (counters,) = await cim.query(wql.select(DEVICE, wql.eq("Name", "C:-disks-root.vhdx")),
                                  CIMV2)
    return {name: counters.integer(name) or 0 for name in (
        "ReadBytesPersec", "WriteBytesPersec", "ReadOperationsPerSec", "WriteOperationsPerSec")}


async def test_device_counters_count_io_of_a_running_vm_without_metering(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, tmp_path)
    assert not disk_io(emulator.host, "vm1", ROOT, read_bytes=3 * MB, written_bytes=5,
                       reads=7, writes=1)  # no metric value counted it: not metered
    disk_io(emulator.host, "vm1", ROOT, read_bytes=MB, reads=2)
    assert await _device(emulator) == {"ReadBytesPersec": 4 * MB, "WriteBytesPersec": 5,
                                       "ReadOperationsPerSec": 9, "WriteOperationsPerSec": 1}
    await ok(emulator, await request_state(emulator, vm, 3))
    assert await emulator.query(wql.select(DEVICE), CIMV2) == []  # gone with the run
    assert not disk_io(emulator.host, "vm1", ROOT, read_bytes=MB, reads=1)  # off: no I/O
    await ok(emulator, await request_state(emulator, vm, 2))
    disk_io(emulator.host, "vm1", ROOT, written_bytes=MB, writes=4)
    assert await _device(emulator) == {"ReadBytesPersec": 0, "WriteBytesPersec": MB,
                                       "ReadOperationsPerSec": 0, "WriteOperationsPerSec": 4}


async def test_device_counters_are_named_after_the_disk_file_and_wrap_at_32_bits(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    await _vm(emulator, tmp_path)
    disk_io(emulator.host, "vm1", "c:\\DISKS\\Root.vhdx", reads=(1 << 32) - 1)  # any case
    disk_io(emulator.host, "vm1", ROOT, reads=3, read_bytes=1 << 40)
    counters = await _device(emulator)  # named after C:\disks\root.vhdx, as attached
    assert (counters["ReadOperationsPerSec"], counters["ReadBytesPersec"]) == (2, 1 << 40)


async def test_metering_one_vm_reads_its_own_values_and_a_destroyed_vm_leaves_none(
    emulator: EmulatorCim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ControlMetrics for a VM checks that VM's values for media gone, not every value
    on the host (a host metering thousands of VMs paid for all of them at each VM it
    started metering); a destroyed VM's values go with it."""
    vms = []
    for index in range(6):
        vm = await define_vm(emulator, f"metered-{index}")
        await attach_vhdx(emulator, vm, tmp_path / "C", name=f"disk{index}.vhdx")
        assert await _control(emulator, vm, 2) == 0
        vms.append(vm)
    checked: list[str] = []
    element_of = metrics.element_of

    def counted(txn: object, value: Record) -> Record | None:
        checked.append(str(value["InstanceID"]))
        return element_of(txn, value)  # type: ignore[arg-type]

    monkeypatch.setattr(metrics, "element_of", counted)
    assert await _control(emulator, vms[0], 2) == 0
    guid = str(vms[0].key("Name")).lower()
    assert len(checked) == 3 and all(guid in value.lower() for value in checked)
    assert len(await emulator.query(wql.select(VALUE))) == 18
    await ok(emulator, await emulator.invoke(
        await service(emulator, "Msvm_VirtualSystemManagementService"), "DestroySystem",
        {"AffectedSystem": vms[1]}))
    remaining = [str(v["InstanceID"]) for v in await emulator.query(wql.select(VALUE))]
    assert len(remaining) == 15
    assert not any(str(vms[1].key("Name")).lower() in value.lower() for value in remaining)
