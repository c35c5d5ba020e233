"""Msvm_GuestNetworkAdapterConfiguration: what a running guest reports of its network
adapters through its data exchange (KVP) integration service, one instance per synthetic
NIC, ``Microsoft:GuestNetwork\\<VM GUID>\\<adapter>``, linked to the NIC by
Msvm_SettingDataComponent."""

from __future__ import annotations

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from tests.emulator.kit import GEN2, add, define_vm, ok, request_state, service, template

GUEST_NETWORK = "Msvm_GuestNetworkAdapterConfiguration"
MAC = "02:00:4c:5f:00:08"
RUNNING, OFF = 2, 3


async def _vm_with_nic(cim: EmulatorCim, name: str, mac: str = MAC,
                       subtype: str | None = None) -> tuple[ObjectPath, CimInstance]:
    vm = await define_vm(cim, name, subtype) if subtype else await define_vm(cim, name)
    nic = (await template(cim, "Msvm_SyntheticEthernetPortSettingData")).updated(
        ElementName="eth0", Address=mac, StaticMacAddress=True)
    nic_path = (await ok(cim, await add(cim, vm, [nic]))).paths("ResultingResourceSettings")[0]
    return vm, await cim.get(nic_path)


async def _guest_networks(cim: EmulatorCim, vm: ObjectPath) -> list[CimInstance]:
    return await cim.query(wql.select(GUEST_NETWORK, wql.starts_with(
        "InstanceID", f"Microsoft:GuestNetwork\\{vm.key('Name')}\\")))


async def test_running_vm_has_one_per_nic_named_after_it_and_none_when_off(
        emulator: EmulatorCim) -> None:
    vm, nic = await _vm_with_nic(emulator, "guest")
    assert await _guest_networks(emulator, vm) == []  # off: nothing to report
    await ok(emulator, await request_state(emulator, vm, RUNNING))
    (config,) = await _guest_networks(emulator, vm)
    adapter = str(nic["InstanceID"]).removeprefix("Microsoft:")
    assert config["InstanceID"] == f"Microsoft:GuestNetwork\\{adapter}"
    # nothing reported yet: protocol Unknown, no address
    assert (config["ProtocolIFType"], config["DHCPEnabled"]) == (0, False)
    assert config.strings("IPAddresses") == ()
    assert nic.path is not None
    linked = await emulator.query(wql.associators_of(
        nic.path, assoc_class="Msvm_SettingDataComponent", result_class=GUEST_NETWORK))
    assert [c["InstanceID"] for c in linked] == [config["InstanceID"]]
    assert config.path is not None
    back = await emulator.query(wql.associators_of(
        config.path, assoc_class="Msvm_SettingDataComponent"))
    assert [n.path for n in back] == [nic.path]
    await ok(emulator, await request_state(emulator, vm, OFF))
    assert await _guest_networks(emulator, vm) == []


async def test_shows_the_addresses_the_guest_reports(emulator: EmulatorCim) -> None:
    vm, _ = await _vm_with_nic(emulator, "leased")
    await ok(emulator, await request_state(emulator, vm, RUNNING))
    emulator.faults.guest_addresses("leased", "02004C5F0008", "10.1.1.23/24", "fe80::5/64")
    (config,) = await _guest_networks(emulator, vm)
    assert config.strings("IPAddresses") == ("10.1.1.23", "fe80::5")
    assert config.strings("Subnets") == ("255.255.255.0", "64")
    assert (config["ProtocolIFType"], config["DHCPEnabled"]) == (4098, True)
    emulator.faults.guest_addresses(vm.key("Name"), MAC, "fe80::5/64", dhcp=False)
    (config,) = await _guest_networks(emulator, vm)
    assert (config.strings("IPAddresses"), config["ProtocolIFType"],
            config["DHCPEnabled"]) == (("fe80::5",), 4097, False)
    found = await emulator.query(wql.select(GUEST_NETWORK, wql.eq("ProtocolIFType", 4097)))
    assert [c["InstanceID"] for c in found] == [config["InstanceID"]]


async def test_guest_without_integration_services_reports_nothing(
        emulator: EmulatorCim) -> None:
    vm, _ = await _vm_with_nic(emulator, "bare")
    emulator.faults.lack_integration_services("bare")
    emulator.faults.guest_addresses("bare", MAC, "10.1.1.23/24")
    await ok(emulator, await request_state(emulator, vm, RUNNING))
    (config,) = await _guest_networks(emulator, vm)
    assert (config.strings("IPAddresses"), config["ProtocolIFType"]) == ((), 0)


async def test_hot_added_nic_gains_one_and_a_removed_nic_loses_it(
        emulator: EmulatorCim) -> None:
    vm, first = await _vm_with_nic(emulator, "hot", subtype=GEN2)
    assert first.path is not None
    await ok(emulator, await request_state(emulator, vm, RUNNING))
    nic = (await template(emulator, "Msvm_SyntheticEthernetPortSettingData")).updated(
        ElementName="eth1", Address="02:00:4c:5f:00:09", StaticMacAddress=True)
    await ok(emulator, await add(emulator, vm, [nic]))
    assert len(await _guest_networks(emulator, vm)) == 2
    await ok(emulator, await emulator.invoke(await service(emulator), "RemoveResourceSettings",
                                             {"ResourceSettings": [first.path]}))
    (left,) = await _guest_networks(emulator, vm)
    assert str(first["InstanceID"]).removeprefix("Microsoft:") not in str(left["InstanceID"])
