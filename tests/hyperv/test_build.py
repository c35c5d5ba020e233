"""hyperv.build: defining a VM and adding controllers, disks, NICs and KVP items."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.errors import HyperVError, InvalidRequest
from hyperv_agent.hyperv import build, firmware, kvp, nics, vms
from hyperv_agent.hyperv import devices as hv_devices
from hyperv_agent.hyperv.build import VmSpec
from hyperv_agent.hyperv.vms import PowerState, VmRef
from tests.emulator.kit import devices, failure
from tests.hyperv.kit import image_file
from tests.sessions import hv

GEN1 = "Microsoft:Hyper-V:SubType:1"
GEN2 = "Microsoft:Hyper-V:SubType:2"
RASD = "Msvm_ResourceAllocationSettingData"
SEPSD = "Msvm_SyntheticEthernetPortSettingData"
EPASD = "Msvm_EthernetPortAllocationSettingData"
TEMPLATE_ID = "1734c6e8-3154-4dda-ba5f-a874cc483422"
SPEC = VmSpec(name="i-2-7-VM", notes=("Created by CloudStack", "i-2-7"), generation=1,
              cpus=2, memory_mb=2048, cpu_limit_millipercent=50000, cpu_weight=200)


async def _settings(cim: EmulatorCim, vm: VmRef, class_name: str) -> list[CimInstance]:
    return await devices(cim, vm.path, class_name)


async def _vssd(cim: EmulatorCim, vm: VmRef) -> CimInstance:
    found = await cim.query(wql.select("Msvm_VirtualSystemSettingData",
                                       wql.eq("InstanceID", f"Microsoft:{vm.guid}")))
    assert len(found) == 1
    return found[0]


async def _vm(cim: EmulatorCim, name: str, generation: int = 1) -> VmRef:
    return await build.define_vm(hv(cim), dataclasses.replace(SPEC, name=name,
                                                          generation=generation))


# --- define_vm ----------------------------------------------------------------------------


async def test_define_vm_sets_cpus_memory_and_notes_when_generation_is_1(
    emulator: EmulatorCim,
) -> None:
    vm = await build.define_vm(hv(emulator), SPEC)
    assert vm == await vms.find_vm(hv(emulator), "i-2-7-VM")
    assert vm.power is PowerState.STOPPED
    vssd = await _vssd(emulator, vm)
    assert (vssd["VirtualSystemSubType"], vssd["Notes"]) == (GEN1, SPEC.notes)
    (processor,) = await _settings(emulator, vm, "Msvm_ProcessorSettingData")
    assert (processor["VirtualQuantity"], processor["Limit"], processor["Weight"]) == (
        2, 50000, 200)
    (memory,) = await _settings(emulator, vm, "Msvm_MemorySettingData")
    assert (memory["VirtualQuantity"], memory["Reservation"], memory["Limit"]) == (
        2048, 2048, 2048)
    assert memory["DynamicMemoryEnabled"] is False
    assert len((await hv_devices.controllers(hv(emulator), vm)).ide) == 2


async def test_define_vm_sets_secure_boot_template_when_generation_is_2(
    emulator: EmulatorCim,
) -> None:
    spec = dataclasses.replace(SPEC, generation=2, secure_boot=True,
                               secure_boot_template_id=TEMPLATE_ID.upper(), cpus=4)
    vm = await build.define_vm(hv(emulator), spec)
    vssd = await _vssd(emulator, vm)
    assert (vssd["VirtualSystemSubType"], vssd["SecureBootEnabled"],
            vssd["SecureBootTemplateId"]) == (GEN2, True, TEMPLATE_ID)
    (processor,) = await _settings(emulator, vm, "Msvm_ProcessorSettingData")
    assert processor["VirtualQuantity"] == 4
    assert await hv_devices.controllers(hv(emulator), vm) == hv_devices.Controllers((), ())


async def test_define_vm_turns_secure_boot_off_when_generation_2_does_not_ask(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "plain", generation=2)
    assert (await _vssd(emulator, vm))["SecureBootEnabled"] is False


async def test_define_vm_sets_the_bios_guid_and_reads_it_back_when_spec_names_one(
    emulator: EmulatorCim,
) -> None:
    guid = "a68c5325-84be-4f8b-ace1-0b33ee004759"
    vm = await build.define_vm(hv(emulator), dataclasses.replace(SPEC, bios_guid=guid.upper()))
    assert (await _vssd(emulator, vm))["BIOSGUID"] == f"{{{guid.upper()}}}"
    before = emulator.round_trips()
    assert await build.bios_guid(hv(emulator), vm.guid) == guid
    assert (emulator.round_trips() - before).calls == 1
    assert await build.bios_guid(hv(emulator), "00000000-0000-0000-0000-000000000000") is None


async def test_define_vm_costs_3_calls_and_2_waits_when_caches_are_warm(
    emulator: EmulatorCim,
) -> None:
    await _vm(emulator, "warm-up")
    before = emulator.round_trips()
    await _vm(emulator, "measured")
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (3, 2)
    assert (spent["invoke:DefineSystem"], spent["query"],
            spent["invoke:ModifyResourceSettings"]) == (1, 1, 1)


@pytest.mark.parametrize("change", [
    {"cpus": 0}, {"name": "x" * 101}, {"name": "  "}, {"generation": 3}, {"memory_mb": 0},
    {"memory_max_mb": 1024}, {"memory_max_mb": 4097},
    {"cpu_limit_millipercent": 100001}, {"cpu_reservation_millipercent": 50001},
    {"cpu_weight": 10001}, {"secure_boot": True},
    {"generation": 2, "secure_boot_template_id": TEMPLATE_ID},
    {"generation": 2, "secure_boot": True, "secure_boot_template_id": "not-a-guid"},
    {"bios_guid": "not-a-guid"},
])
async def test_define_vm_creates_nothing_when_spec_is_invalid(
    emulator: EmulatorCim, change: dict[str, object],
) -> None:
    before = emulator.round_trips()
    with pytest.raises(InvalidRequest):
        await build.define_vm(emulator, dataclasses.replace(SPEC, **change))  # type: ignore[arg-type]
    assert (emulator.round_trips() - before).calls == 0
    assert await vms.list_vms(hv(emulator)) == []


async def test_define_vm_leaves_no_vm_and_names_step_when_modify_resource_settings_fails(
    emulator: EmulatorCim,
) -> None:
    emulator.faults.fail_next_job("ModifyResourceSettings", 32768, "no memory for you")
    with pytest.raises(HyperVError, match="setting processors and memory failed") as raised:
        await build.define_vm(hv(emulator), SPEC)
    assert "no memory for you" in str(raised.value)
    assert await vms.list_vms(hv(emulator)) == []
    processors = await emulator.query(wql.select("Msvm_ProcessorSettingData"))
    assert all("Definition" in str(p["InstanceID"]) for p in processors)  # templates only


async def test_define_vm_names_step_when_define_system_fails(emulator: EmulatorCim) -> None:
    emulator.faults.fail_next_call("DefineSystem", 32768)
    with pytest.raises(HyperVError, match="defining the VM failed"):
        await build.define_vm(hv(emulator), SPEC)
    assert await vms.list_vms(hv(emulator)) == []


# --- secure boot templates ----------------------------------------------------------------


async def _template_ids(cim: EmulatorCim) -> dict[str, str]:
    """The template VSSDs as the host holds them, read raw: ElementName -> id."""
    found = await cim.query(wql.select("Msvm_VirtualSystemSettingData", wql.any_of(
        "ElementName", [firmware.WINDOWS_TEMPLATE, firmware.UEFI_CA_TEMPLATE])))
    return {str(t["ElementName"]): str(t["SecureBootTemplateId"]) for t in found
            if t["VirtualSystemType"] != "Microsoft:Hyper-V:System:Realized"}


def _drop_template(cim: EmulatorCim, name: str) -> None:
    """Remove the template ``name`` from the emulated host, as if it never shipped it."""
    txn = cim.host.store.transaction()
    for record in list(cim.host.records("Msvm_VirtualSystemSettingData", txn)):
        if record["ElementName"] == name:
            txn.delete(record.path)
    txn.commit()


async def test_secure_boot_template_id_costs_1_query_then_none_when_looked_up_again(
    emulator: EmulatorCim,
) -> None:
    held = await _template_ids(emulator)
    before = emulator.round_trips()
    uefi_ca = await firmware.secure_boot_template_id(hv(emulator), firmware.UEFI_CA_TEMPLATE)
    spent = emulator.round_trips() - before
    assert (spent.calls, spent["query"]) == (1, 1)
    before = emulator.round_trips()
    windows = await firmware.secure_boot_template_id(hv(emulator), firmware.WINDOWS_TEMPLATE)
    again = await firmware.secure_boot_template_id(hv(emulator), firmware.UEFI_CA_TEMPLATE.upper())
    assert (emulator.round_trips() - before).calls == 0
    assert (uefi_ca, windows, again) == (held[firmware.UEFI_CA_TEMPLATE],
                                         held[firmware.WINDOWS_TEMPLATE], uefi_ca)
    assert uefi_ca != windows


async def test_secure_boot_template_id_raises_naming_template_when_host_has_none(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config(os_version="6.3.9600"))
    try:
        with pytest.raises(InvalidRequest, match="no secure boot template "
                                                 "'MicrosoftUEFICertificateAuthority'"):
            await firmware.secure_boot_template_id(hv(cim), firmware.UEFI_CA_TEMPLATE)
        before = cim.round_trips()
        with pytest.raises(InvalidRequest, match="MicrosoftWindows"):
            await firmware.secure_boot_template_id(hv(cim), firmware.WINDOWS_TEMPLATE)
        assert (cim.round_trips() - before).calls == 0  # the first query saw both missing
    finally:
        await cim.close()


async def test_secure_boot_template_id_ignores_vm_when_vm_carries_template_name(
    emulator: EmulatorCim,
) -> None:
    _drop_template(emulator, firmware.UEFI_CA_TEMPLATE)
    impostor = await _vm(emulator, firmware.UEFI_CA_TEMPLATE, generation=2)
    assert (await _vssd(emulator, impostor))["SecureBootTemplateId"] is not None
    with pytest.raises(InvalidRequest, match="no secure boot template"):
        await firmware.secure_boot_template_id(hv(emulator), firmware.UEFI_CA_TEMPLATE)


async def test_define_vm_keeps_uefi_ca_template_in_3_calls_when_caches_are_warm(
    emulator: EmulatorCim,
) -> None:
    await _vm(emulator, "warm-up")
    template_id = await firmware.secure_boot_template_id(hv(emulator), firmware.UEFI_CA_TEMPLATE)
    spec = dataclasses.replace(SPEC, name="linux", generation=2, secure_boot=True,
                               secure_boot_template_id=template_id)
    before = emulator.round_trips()
    vm = await build.define_vm(hv(emulator), spec)
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (3, 2)
    vssd = await _vssd(emulator, vm)
    assert (vssd["SecureBootEnabled"], vssd["SecureBootTemplateId"]) == (
        True, (await _template_ids(emulator))[firmware.UEFI_CA_TEMPLATE])


async def test_define_vm_leaves_no_vm_when_host_refuses_template_id(
    emulator: EmulatorCim,
) -> None:
    spec = dataclasses.replace(SPEC, generation=2, secure_boot=True,
                               secure_boot_template_id="00000000-0000-0000-0000-00000000000a")
    with pytest.raises(HyperVError, match="defining the VM failed"):
        await build.define_vm(hv(emulator), spec)
    assert await vms.list_vms(hv(emulator)) == []


# --- controllers --------------------------------------------------------------------------


async def test_add_scsi_controller_costs_1_call_and_1_wait_when_caches_are_warm(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "scsi")
    first = await hv_devices.add_scsi_controller(hv(emulator), vm)
    before = emulator.round_trips()
    second = await hv_devices.add_scsi_controller(hv(emulator), vm)
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits, spent["invoke:AddResourceSettings"]) == (1, 1, 1)
    assert (await hv_devices.controllers(hv(emulator), vm)).scsi == (first, second)


async def test_controllers_lists_ide_by_address_in_one_query_when_generation_is_1(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "ide")
    scsi = await hv_devices.add_scsi_controller(hv(emulator), vm)
    before = emulator.round_trips()
    found = await hv_devices.controllers(hv(emulator), vm)
    assert (emulator.round_trips() - before).calls == 1
    ide = {c["Address"]: c.path for c in await _settings(emulator, vm, RASD)
           if c["ResourceSubType"] == "Microsoft:Hyper-V:Emulated IDE Controller" and c.path}
    assert found == hv_devices.Controllers((ide["0"], ide["1"]), (scsi,))


async def test_add_scsi_controller_names_step_when_vm_is_missing(emulator: EmulatorCim) -> None:
    ghost = VmRef("00000000-0000-0000-0000-000000000000", "ghost", PowerState.STOPPED)
    with pytest.raises(HyperVError, match="adding a SCSI controller failed"):
        await hv_devices.add_scsi_controller(hv(emulator), ghost)


# --- disks and DVD drives -----------------------------------------------------------------


async def test_attach_disk_puts_vhdx_on_scsi_and_iso_on_ide_when_generation_is_1(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "disks")
    scsi = await hv_devices.add_scsi_controller(hv(emulator), vm)
    ide = (await hv_devices.controllers(hv(emulator), vm)).ide
    before = emulator.round_trips()
    data = image_file(tmp_path, "data.vhdx")
    disk = await hv_devices.attach_disk(hv(emulator), vm, scsi, 0, data)
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits, spent["invoke:AddResourceSettings"]) == (2, 2, 2)
    setup = image_file(tmp_path, "setup.iso")
    iso = await hv_devices.attach_disk(hv(emulator), vm, ide[1], 0, setup, dvd=True)
    drives = {d.path: d for d in await _settings(emulator, vm, RASD)}
    assert ObjectPath.parse(str(drives[disk.drive]["Parent"])) == scsi
    assert drives[disk.drive]["AddressOnParent"] == "0"
    assert drives[iso.drive]["ResourceSubType"] == "Microsoft:Hyper-V:Synthetic DVD Drive"
    assert ObjectPath.parse(str(drives[iso.drive]["Parent"])) == ide[1]
    media = {m.path: m for m in await _settings(emulator, vm, "Msvm_StorageAllocationSettingData")}
    assert media[disk.medium]["HostResource"] == ("C:\\images\\data.vhdx",)
    assert media[iso.medium]["HostResource"] == ("C:\\images\\setup.iso",)
    assert ObjectPath.parse(str(media[iso.medium]["Parent"])) == iso.drive


async def test_attach_disk_leaves_no_empty_drive_when_file_is_missing(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "nofile")
    ide = (await hv_devices.controllers(hv(emulator), vm)).ide
    with pytest.raises(HyperVError, match=r"inserting C:\\images\\none.vhdx failed"):
        await hv_devices.attach_disk(hv(emulator), vm, ide[0], 0, "C:\\images\\none.vhdx")
    kinds = {d["ResourceSubType"] for d in await _settings(emulator, vm, RASD)}
    assert "Microsoft:Hyper-V:Synthetic Disk Drive" not in kinds


async def test_attach_disk_creates_nothing_when_slot_is_out_of_range(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "slot")
    ide = (await hv_devices.controllers(hv(emulator), vm)).ide
    before = emulator.round_trips()
    with pytest.raises(InvalidRequest):
        await hv_devices.attach_disk(hv(emulator), vm, ide[0], 64, "C:\\images\\x.vhdx")
    assert (emulator.round_trips() - before).calls == 0


async def test_attach_empty_dvd_costs_1_call_and_1_wait_when_caches_are_warm(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "dvd")
    ide = (await hv_devices.controllers(hv(emulator), vm)).ide
    await hv_devices.attach_empty_dvd(hv(emulator), vm, ide[1], 0)
    before = emulator.round_trips()
    drive = await hv_devices.attach_empty_dvd(hv(emulator), vm, ide[1], 1)
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (1, 1)
    (found,) = [d for d in await _settings(emulator, vm, RASD)
                if d.path == drive]
    assert (found["ResourceSubType"], found["AddressOnParent"]) == (
        "Microsoft:Hyper-V:Synthetic DVD Drive", "1")


# --- network adapters ---------------------------------------------------------------------


async def _switch_path(cim: EmulatorCim, name: str) -> ObjectPath:
    (switch,) = await cim.query(wql.select("Msvm_VirtualEthernetSwitch",
                                           wql.eq("ElementName", name)))
    assert switch.path is not None
    return switch.path


async def _features(cim: EmulatorCim, class_name: str, port: ObjectPath) -> list[CimInstance]:
    return await cim.query(wql.select(class_name, wql.starts_with("InstanceID",
                                                                   port.key("InstanceID"))))


async def test_add_nic_sets_mac_switch_vlan_and_limit_when_all_are_given(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "net", generation=2)
    await nics.add_nic(hv(emulator), vm, mac="02:00:51:2c:00:01", switch_name="External",
                        vlan=10, rate_mbps=100, name="warm-up")
    before = emulator.round_trips()
    nic = await nics.add_nic(hv(emulator), vm, mac="02:00:51:2c:00:0e", switch_name="External",
                              vlan=1234, rate_mbps=200, name="eth1")
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (3, 3)
    assert (spent["invoke:AddResourceSettings"], spent["invoke:AddFeatureSettings"]) == (2, 1)
    (adapter,) = [n for n in await _settings(emulator, vm, SEPSD)
                  if n.path == nic.nic]
    assert (adapter["Address"], adapter["StaticMacAddress"], adapter["ElementName"]) == (
        "0200512C000E", True, "eth1")
    assert nic.mac == "0200512C000E"
    (port,) = [p for p in await _settings(emulator, vm, EPASD)
               if p.path == nic.port]
    assert ObjectPath.parse(str(port.strings("HostResource")[0])) == await _switch_path(
        emulator, "External")
    (vlan,) = await _features(emulator, "Msvm_EthernetSwitchPortVlanSettingData", nic.port)
    assert (vlan["OperationMode"], vlan["AccessVlanId"]) == (1, 1234)
    (bandwidth,) = await _features(emulator, "Msvm_EthernetSwitchPortBandwidthSettingData",
                                   nic.port)
    assert bandwidth["Limit"] == 200_000_000
    assert len(nic.features) == 2


async def test_add_nic_costs_2_calls_when_no_vlan_and_no_rate_are_given(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "flat", generation=2)
    await nics.add_nic(hv(emulator), vm, mac="020051000001", switch_name="External", vlan=None,
                        rate_mbps=None, name="eth0")
    before = emulator.round_trips()
    nic = await nics.add_nic(hv(emulator), vm, mac="02-00-51-00-00-02", switch_name="External",
                              vlan=None, rate_mbps=None, name="eth1")
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (2, 2)
    assert nic.features == ()
    assert await _features(emulator, "Msvm_EthernetSwitchPortVlanSettingData", nic.port) == []


async def test_add_nic_creates_nothing_when_switch_is_unknown(emulator: EmulatorCim) -> None:
    vm = await _vm(emulator, "lost")
    with pytest.raises(InvalidRequest, match="'Nowhere'"):
        await nics.add_nic(hv(emulator), vm, mac="020051000001", switch_name="Nowhere",
                            vlan=None, rate_mbps=None, name="eth0")
    assert await _settings(emulator, vm, SEPSD) == []


@pytest.mark.parametrize(("mac", "vlan", "rate"), [
    ("02:00:51:2c:00", None, None), ("02:00:51:2c:00:zz", None, None),
    ("020051000001", 0, None), ("020051000001", 4095, None), ("020051000001", None, 0),
    ("ff:ff:ff:ff:ff:ff", None, None), ("01:00:5e:00:00:fb", None, None),  # group MACs
])
async def test_add_nic_creates_nothing_when_arguments_are_invalid(
    emulator: EmulatorCim, mac: str, vlan: int | None, rate: int | None,
) -> None:
    vm = await _vm(emulator, "bad")
    before = emulator.round_trips()
    with pytest.raises(InvalidRequest):
        await nics.add_nic(hv(emulator), vm, mac=mac, switch_name="External", vlan=vlan,
                            rate_mbps=rate, name="eth0")
    assert (emulator.round_trips() - before).calls == 0


async def test_add_nic_removes_nic_and_names_step_when_features_fail(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "nofeatures")
    emulator.faults.fail_next_job("AddFeatureSettings")
    with pytest.raises(HyperVError, match="setting the port's VLAN and bandwidth failed"):
        await nics.add_nic(hv(emulator), vm, mac="020051000001", switch_name="External",
                            vlan=5, rate_mbps=None, name="eth0")
    assert await _settings(emulator, vm, SEPSD) == []
    assert await _settings(emulator, vm, EPASD) == []


async def test_add_nic_leaves_port_disabled_on_its_switch_when_nic_is_a_spare(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "spare")
    nic = await nics.add_nic(hv(emulator), vm, mac="06A2C8000019", switch_name="External",
                              vlan=None, rate_mbps=None, name="spare", connected=False)
    (port,) = await _settings(emulator, vm, EPASD)
    assert port.path == nic.port and port["EnabledState"] == 3
    assert ObjectPath.parse(str(port.strings("HostResource")[0])) == await _switch_path(
        emulator, "External")
    assert await _features(emulator, "Msvm_EthernetSwitchPortVlanSettingData", nic.port) == []


async def test_add_nic_creates_nothing_when_a_spare_asks_for_a_vlan(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "spare-vlan")
    with pytest.raises(InvalidRequest, match="takes no VLAN"):
        await nics.add_nic(hv(emulator), vm, mac="06A2C8000019", switch_name="External",
                            vlan=300, rate_mbps=None, name="spare", connected=False)
    assert await _settings(emulator, vm, SEPSD) == []


# --- processor shares ---------------------------------------------------------------------


@pytest.mark.parametrize(("mhz", "host_mhz", "share"), [
    (1200, 2400, 50000), (2400, 2400, 100000), (9600, 2400, 100000), (1, 3000, 33),
    (0, 2400, 0), (500, 0, 100000),
])
def test_core_share_is_a_bounded_fraction_of_a_core_when_speeds_are_given(
    mhz: int, host_mhz: int, share: int,
) -> None:
    assert build.core_share(mhz, host_mhz) == share


@pytest.mark.parametrize(("mhz", "host_mhz", "weight"), [
    (2400, 2400, 100), (1200, 2400, 50), (4800, 2400, 200), (1, 2400, 1),
    (10_000_000, 2400, 10000), (None, 2400, 100), (0, 2400, 100), (1200, 0, 100),
])
def test_speed_weight_is_proportional_and_bounded_when_speeds_are_given(
    mhz: int | None, host_mhz: int, weight: int,
) -> None:
    assert build.speed_weight(mhz, host_mhz) == weight


async def test_host_cpu_mhz_reads_the_host_once_when_asked_twice(emulator: EmulatorCim) -> None:
    before = emulator.round_trips()
    assert await build.host_cpu_mhz(hv(emulator)) == 2400
    assert await build.host_cpu_mhz(hv(emulator)) == 2400
    assert (emulator.round_trips() - before).calls == 2  # Win32_Processor + OS, once


async def test_define_vm_sets_limit_reservation_and_weight_when_spec_has_shares(
    emulator: EmulatorCim,
) -> None:
    spec = dataclasses.replace(SPEC, name="shares", cpu_limit_millipercent=40000,
                               cpu_reservation_millipercent=10000, cpu_weight=7)
    vm = await build.define_vm(hv(emulator), spec)
    (processor,) = await _settings(emulator, vm, "Msvm_ProcessorSettingData")
    assert (processor["Limit"], processor["Reservation"], processor["Weight"]) == (
        40000, 10000, 7)


# --- KVP ----------------------------------------------------------------------------------


async def _kvp_items(cim: EmulatorCim, vm: VmRef) -> dict[str, str]:
    (settings,) = await _settings(cim, vm, "Msvm_KvpExchangeComponentSettingData")
    items = [cim.parse_embedded(text) for text in settings.strings("HostExchangeItems")]
    return {str(item["Name"]): str(item["Data"]) for item in items}


async def test_push_kvp_keeps_one_item_with_second_value_when_pushed_twice(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "kvp")
    await kvp.push_kvp(hv(emulator), vm, "warm-up", "1")
    before = emulator.round_trips()
    await kvp.push_kvp(hv(emulator), vm, "cloudstack-vm-userdata", "first")
    first = emulator.round_trips() - before
    assert (first.calls, first.waits, first["invoke:AddKvpItems"]) == (1, 1, 1)
    before = emulator.round_trips()
    await kvp.push_kvp(hv(emulator), vm, "cloudstack-vm-userdata", "second")
    second = emulator.round_trips() - before
    assert (second.calls, second["invoke:ModifyKvpItems"]) == (2, 1)
    assert await _kvp_items(emulator, vm) == {"warm-up": "1", "cloudstack-vm-userdata": "second"}


async def test_push_kvp_replaces_value_when_jobs_are_synchronous(
    sync_emulator: EmulatorCim,
) -> None:
    vm = await _vm(sync_emulator, "kvp")
    await kvp.push_kvp(hv(sync_emulator), vm, "key", "a")
    await kvp.push_kvp(hv(sync_emulator), vm, "key", "b")
    assert await _kvp_items(sync_emulator, vm) == {"key": "b"}


async def test_push_kvp_refuses_value_when_longer_than_1023_characters(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "long")
    await kvp.push_kvp(hv(emulator), vm, "edge", "x" * 1023)
    with pytest.raises(InvalidRequest, match="1024 characters"):
        await kvp.push_kvp(hv(emulator), vm, "big", "x" * 1024)
    assert await _kvp_items(emulator, vm) == {"edge": "x" * 1023}


async def test_push_kvp_names_key_when_vm_is_missing(emulator: EmulatorCim) -> None:
    ghost = VmRef("00000000-0000-0000-0000-000000000000", "ghost", PowerState.STOPPED)
    with pytest.raises(HyperVError, match="pushing KVP item 'key'"):
        await kvp.push_kvp(hv(emulator), ghost, "key", "value")


# --- long KVP values ----------------------------------------------------------------------


def test_split_words_keeps_one_item_when_value_fits() -> None:
    assert kvp.split_words("k", " a=1 b=2") == (("k", " a=1 b=2"),)
    assert kvp.split_words("k", "x" * 1023) == (("k", "x" * 1023),)


def test_split_words_splits_at_whitespace_when_value_is_too_long() -> None:
    words = [f"w{n}={'v' * 90}" for n in range(30)]  # 30 words of ~94 characters
    items = kvp.split_words("k", "\t".join(words))
    assert [key for key, _ in items] == ["k", "k-2", "k-3"]
    assert all(kvp.fits_kvp_value(value) and value[0] == value[-1] == " "
               for _, value in items)
    assert " ".join(value for _, value in items).split() == words


@pytest.mark.parametrize(("value", "expected"), [
    ("a " + "x" * 1022, "at most 1023 characters"),
    (" ".join(["x" * 1000] * 129), "at most 128"),
])
def test_split_words_refuses_naming_the_limit_when_value_cannot_be_carried(
    value: str, expected: str,
) -> None:
    with pytest.raises(InvalidRequest, match=expected):
        kvp.split_words("k", value)


def test_split_words_names_a_long_key_cut_at_40_characters_and_never_the_value() -> None:
    word = "k" * 50 + "=" + "v" * 1000
    with pytest.raises(InvalidRequest) as refused:
        kvp.split_words("k", f"a=1 {word}")
    assert f"word 2 (key '{'k' * 40}'..., 1051 characters)" in str(refused.value)
    assert "k" * 41 not in str(refused.value) and "vv" not in str(refused.value)


def test_fits_kvp_value_counts_utf16_units_and_utf8_bytes_when_text_is_not_ascii() -> None:
    assert kvp.fits_kvp_value("é" * 1023)  # 1023 units, 2046 bytes
    assert not kvp.fits_kvp_value("€" * 700)  # 700 units, 2100 bytes
    assert not kvp.fits_kvp_value("\U0001F600" * 512)  # 1024 units (surrogate pairs)


async def test_push_kvp_items_sends_every_item_in_one_call_when_warm(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "items")
    await kvp.push_kvp(hv(emulator), vm, "warm-up", "1")
    items = kvp.split_words("args", " ".join(f"a{n}={'v' * 200}" for n in range(12)))
    assert len(items) == 3
    before = emulator.round_trips()
    await kvp.push_kvp_items(hv(emulator), vm, items)
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits, spent["invoke:AddKvpItems"]) == (1, 1, 1)
    assert await _kvp_items(emulator, vm) == {"warm-up": "1", **dict(items)}


async def test_emulator_refuses_a_value_of_1024_utf16_units_when_pushed_around_the_check(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, "raw")
    service = await vms.management_service(hv(emulator))
    item = (await emulator.spawn("Msvm_KvpExchangeDataItem")).updated(
        Name="k", Data="\U0001F600" * 512, Source=0)
    result = await emulator.invoke(service, "AddKvpItems",
                                   {"TargetSystem": vm.path, "DataItems": [item]})
    assert await failure(emulator, result) == 32773  # invalid parameter
    assert await _kvp_items(emulator, vm) == {}


# --- set_boot_order_gen2 ------------------------------------------------------------------


async def _boot_vm(cim: EmulatorCim, tmp_path: Path) -> tuple[VmRef, ObjectPath, ObjectPath]:
    """A generation 2 VM given an ISO, then a root disk, then a NIC (its default order)."""
    vm = await _vm(cim, "uefi-boot", generation=2)
    scsi = await hv_devices.add_scsi_controller(hv(cim), vm)
    dvd = await hv_devices.attach_disk(hv(cim), vm, scsi, 1, image_file(tmp_path, "setup.iso"),
                                       dvd=True)
    root = await hv_devices.attach_disk(hv(cim), vm, scsi, 0, image_file(tmp_path, "root.vhdx"))
    await nics.add_nic(hv(cim), vm, mac="020051000009", switch_name="External", vlan=None,
                        rate_mbps=None, name="eth0")
    return vm, root.drive, dvd.drive


async def _boot_kinds(cim: EmulatorCim, vm: VmRef) -> list[str]:
    """The boot order as the kinds of the devices behind it (by Msvm_LogicalIdentity)."""
    kinds = []
    for text in (await _vssd(cim, vm)).strings("BootSourceOrder"):
        device = (await cim.associators(ObjectPath.parse(text),
                                        assoc_class="Msvm_LogicalIdentity"))[0]
        kinds.append("nic" if device.class_name == SEPSD else
                     "dvd" if "DVD" in str(device["ResourceSubType"]) else "disk")
    return kinds


async def test_set_boot_order_gen2_puts_root_disk_first_in_2_calls_and_1_wait(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm, root, _ = await _boot_vm(emulator, tmp_path)
    assert await _boot_kinds(emulator, vm) == ["dvd", "disk", "nic"]
    await vms.management_service(hv(emulator))  # warm
    before = emulator.round_trips()
    await firmware.set_boot_order_gen2(hv(emulator), vm, [root])
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits, spent["invoke:ModifySystemSettings"]) == (2, 1, 1)
    assert await _boot_kinds(emulator, vm) == ["disk", "dvd", "nic"]


async def test_set_boot_order_gen2_changes_nothing_when_order_is_already_right(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm, _, dvd = await _boot_vm(emulator, tmp_path)
    before = emulator.round_trips()
    await firmware.set_boot_order_gen2(hv(emulator), vm, [dvd])
    spent = emulator.round_trips() - before
    assert (spent.calls, spent["invoke:ModifySystemSettings"]) == (1, 0)
    assert await _boot_kinds(emulator, vm) == ["dvd", "disk", "nic"]
    before = emulator.round_trips()
    await firmware.set_boot_order_gen2(hv(emulator), vm, [])
    assert (emulator.round_trips() - before).calls == 0


async def test_set_boot_order_gen2_keeps_named_order_when_several_drives_are_given(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm, root, dvd = await _boot_vm(emulator, tmp_path)
    await firmware.set_boot_order_gen2(hv(emulator), vm, [root, dvd])
    await firmware.set_boot_order_gen2(hv(emulator), vm, [dvd, root, dvd])
    assert await _boot_kinds(emulator, vm) == ["dvd", "disk", "nic"]


async def test_set_boot_order_gen2_raises_and_changes_nothing_when_drive_is_another_vms(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm, root, _ = await _boot_vm(emulator, tmp_path)
    other = await _vm(emulator, "other", generation=2)
    before = (await _vssd(emulator, vm)).strings("BootSourceOrder")
    with pytest.raises(HyperVError, match="is not a device of VM other"):
        await firmware.set_boot_order_gen2(hv(emulator), other, [root])
    assert (await _vssd(emulator, vm)).strings("BootSourceOrder") == before


async def test_set_boot_order_gen2_raises_when_vm_is_generation_1_or_drive_is_missing(
    emulator: EmulatorCim, tmp_path: Path,
) -> None:
    vm = await _vm(emulator, "bios")
    scsi = await hv_devices.add_scsi_controller(hv(emulator), vm)
    data = image_file(tmp_path, "data.vhdx")
    disk = await hv_devices.attach_disk(hv(emulator), vm, scsi, 0, data)
    with pytest.raises(HyperVError, match="has no boot source"):
        await firmware.set_boot_order_gen2(hv(emulator), vm, [disk.drive])
    gone = ObjectPath.for_keys(RASD, InstanceID=f"Microsoft:{vm.guid}\\NOPE\\0\\D")
    with pytest.raises(HyperVError, match="reading the boot source"):
        await firmware.set_boot_order_gen2(hv(emulator), vm, [gone])
    assert (await _vssd(emulator, vm))["BootSourceOrder"] is None
