"""hyperv.nics: listing a VM's NICs, (dis)connecting ports, setting port VLANs; and
hyperv.scale, which changes a stopped VM's processors and memory."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable

import pytest

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.errors import HyperVError, InvalidRequest, VmNotStopped
from hyperv_agent.hyperv import build, nics, scale, vms
from hyperv_agent.hyperv.build import VmSpec
from hyperv_agent.hyperv.vms import PowerState, VmRef
from tests.emulator.kit import add, devices, ok, request_state, template
from tests.sessions import hv

SPEC = VmSpec(name="r-4-VM", notes=(), generation=1, cpus=1, memory_mb=512)
MACS = ("0200512C000E", "0E0004000016", "06A2C8000018")


@pytest.fixture
async def two_switches(make_config: Callable[..., EmulatorConfig]) -> AsyncIterator[EmulatorCim]:
    cim = EmulatorCim.open(make_config(switches=("External", "Private")))
    yield cim
    await cim.close()


async def _vm(cim: EmulatorCim, vlans: tuple[int | None, ...] = (None, None, 261)) -> VmRef:
    vm = await build.define_vm(hv(cim), SPEC)
    for index, (mac, vlan) in enumerate(zip(MACS, vlans, strict=False)):
        await nics.add_nic(hv(cim), vm, mac=mac, switch_name="External", vlan=vlan, rate_mbps=None,
                            name=f"nic{index}")
    return vm


async def _switch_names(cim: EmulatorCim, vm: VmRef) -> list[str]:
    """The ElementName of the switch each port's HostResource points at."""
    ports = await devices(cim, vm.path, "Msvm_EthernetPortAllocationSettingData")
    switches = [await cim.get(ObjectPath.parse(p.strings("HostResource")[0])) for p in ports]
    return [str(s["ElementName"]) for s in switches]


# --- list_nics ----------------------------------------------------------------------------


async def test_list_nics_reports_mac_vlan_and_connection_in_order_when_vm_has_nics(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator)
    await nics.disconnect(hv(emulator), (await nics.list_nics(hv(emulator), vm.guid))[1])
    found = await nics.list_nics(hv(emulator), vm.guid)
    assert [(n.mac, n.vlan, n.connected) for n in found] == [
        (MACS[0], None, True), (MACS[1], None, False), (MACS[2], 261, True)]


async def test_list_nics_costs_two_queries_when_vm_has_many_nics(emulator: EmulatorCim) -> None:
    vm = await _vm(emulator, (10, 11, 12))
    before = emulator.round_trips()
    found = await nics.list_nics(hv(emulator), vm.guid)
    spent = emulator.round_trips() - before
    assert [n.vlan for n in found] == [10, 11, 12]
    assert (spent.calls, spent["query"]) == (2, 2)


async def test_list_nics_returns_nothing_when_vm_is_unknown(emulator: EmulatorCim) -> None:
    assert await nics.list_nics(hv(emulator), "8F0E5A3C-0000-4000-8000-000000000000") == []


# --- connect / disconnect -----------------------------------------------------------------


async def test_connect_moves_port_to_named_switch_when_switch_exists(
    two_switches: EmulatorCim,
) -> None:
    vm = await _vm(two_switches, (None,))
    (nic,) = await nics.list_nics(hv(two_switches), vm.guid)
    await nics.connect(hv(two_switches), nic, "Private")
    assert await _switch_names(two_switches, vm) == ["Private"]
    (port,) = await devices(two_switches, vm.path, "Msvm_EthernetPortAllocationSettingData")
    assert port["LastKnownSwitchName"] == "Private"
    assert (await nics.list_nics(hv(two_switches), vm.guid))[0].connected is True


async def test_connect_keeps_switch_and_reenables_port_when_no_switch_is_named(
    two_switches: EmulatorCim,
) -> None:
    vm = await _vm(two_switches, (None,))
    (nic,) = await nics.list_nics(hv(two_switches), vm.guid)
    await nics.disconnect(hv(two_switches), nic)
    await nics.disconnect(hv(two_switches), (await nics.list_nics(hv(two_switches), vm.guid))[0])
    (nic,) = await nics.list_nics(hv(two_switches), vm.guid)
    assert nic.connected is False
    await nics.connect(hv(two_switches), nic, None)
    assert (await nics.list_nics(hv(two_switches), vm.guid))[0].connected is True
    assert await _switch_names(two_switches, vm) == ["External"]


async def test_connect_refuses_and_changes_nothing_when_switch_is_unknown(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, (None,))
    (nic,) = await nics.list_nics(hv(emulator), vm.guid)
    await nics.disconnect(hv(emulator), nic)
    (nic,) = await nics.list_nics(hv(emulator), vm.guid)
    with pytest.raises(InvalidRequest, match="Nowhere"):
        await nics.connect(hv(emulator), nic, "Nowhere")
    assert (await nics.list_nics(hv(emulator), vm.guid))[0].connected is False


async def test_connect_adds_a_port_on_the_first_switch_when_nic_has_none(
    two_switches: EmulatorCim,
) -> None:
    cim = two_switches
    vm = await build.define_vm(hv(cim), SPEC)
    nic = (await template(cim, "Msvm_SyntheticEthernetPortSettingData")).updated(
        Address=MACS[0], StaticMacAddress=True)
    await ok(cim, await add(cim, vm.path, [nic]))
    (listed,) = await nics.list_nics(hv(cim), vm.guid)
    assert (listed.mac, listed.connected, listed.port) == (MACS[0], False, None)
    connected = await nics.connect(hv(cim), listed, None)
    await nics.set_vlan(hv(cim), connected, 500)
    (listed,) = await nics.list_nics(hv(cim), vm.guid)
    assert (listed.connected, listed.vlan) == (True, 500)
    assert await _switch_names(cim, vm) == ["External"]


# --- set_vlan -----------------------------------------------------------------------------


async def test_set_vlan_adds_changes_and_removes_the_setting_when_asked(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator, (None,))
    for wanted in (300, 301, None, None):
        (nic,) = await nics.list_nics(hv(emulator), vm.guid)
        await nics.set_vlan(hv(emulator), nic, wanted)
        (nic,) = await nics.list_nics(hv(emulator), vm.guid)
        assert nic.vlan == wanted
    assert await devices(emulator, vm.path, "Msvm_EthernetSwitchPortVlanSettingData") == []


async def test_set_vlan_costs_nothing_when_vlan_is_already_set(emulator: EmulatorCim) -> None:
    vm = await _vm(emulator, (77,))
    (nic,) = await nics.list_nics(hv(emulator), vm.guid)
    before = emulator.round_trips()
    await nics.set_vlan(hv(emulator), nic, 77)
    assert (emulator.round_trips() - before).calls == 0


async def test_set_vlan_refuses_when_vlan_is_out_of_range(emulator: EmulatorCim) -> None:
    vm = await _vm(emulator, (None,))
    (nic,) = await nics.list_nics(hv(emulator), vm.guid)
    with pytest.raises(InvalidRequest, match="4095"):
        await nics.set_vlan(hv(emulator), nic, 4095)


def test_normalize_mac_accepts_separators_when_case_is_mixed() -> None:
    assert nics.normalize_mac("06:a2:c8-00:00:18") == "06A2C8000018"
    with pytest.raises(InvalidRequest):
        nics.normalize_mac("06:a2:c8")


# --- scale --------------------------------------------------------------------------------


async def test_set_processors_and_memory_changes_both_when_vm_is_stopped(
    emulator: EmulatorCim,
) -> None:
    vm = await build.define_vm(hv(emulator), SPEC)
    await scale.set_processors_and_memory(hv(emulator), vm, 4, 2048)
    (processor,) = await devices(emulator, vm.path, "Msvm_ProcessorSettingData")
    (memory,) = await devices(emulator, vm.path, "Msvm_MemorySettingData")
    assert (processor["VirtualQuantity"], memory["VirtualQuantity"]) == (4, 2048)


async def test_set_processors_and_memory_refuses_when_hyperv_finds_vm_running(
    emulator: EmulatorCim,
) -> None:
    vm = await build.define_vm(hv(emulator), SPEC)
    await ok(emulator, await request_state(emulator, vm.path, 2))
    stale = dataclasses.replace(vm, power=PowerState.STOPPED)  # as read before it started
    with pytest.raises(VmNotStopped, match="stop it first"):
        await scale.set_processors_and_memory(hv(emulator), stale, 4, 2048)
    (processor,) = await devices(emulator, vm.path, "Msvm_ProcessorSettingData")
    assert processor["VirtualQuantity"] == 1
    assert (await vms.find_vm(hv(emulator), SPEC.name)) is not None


# --- generation and remove ----------------------------------------------------------------


async def test_generation_reads_the_vm_settings_when_vms_of_both_generations_exist(
    emulator: EmulatorCim,
) -> None:
    first = await build.define_vm(hv(emulator), SPEC)
    second = await build.define_vm(hv(emulator), dataclasses.replace(SPEC, name="g2", generation=2))
    before = emulator.round_trips()
    assert await nics.generation(hv(emulator), first.guid) == 1
    assert await nics.generation(hv(emulator), second.guid) == 2
    assert (emulator.round_trips() - before).calls == 2


async def test_generation_raises_when_vm_is_unknown(emulator: EmulatorCim) -> None:
    with pytest.raises(HyperVError, match="no VM"):
        await nics.generation(hv(emulator), "00000000-0000-0000-0000-000000000000")


async def test_remove_takes_nic_and_port_away_when_generation_2_vm_runs(
    emulator: EmulatorCim,
) -> None:
    vm = await build.define_vm(hv(emulator), dataclasses.replace(SPEC, generation=2))
    for index, mac in enumerate(MACS[:2]):
        await nics.add_nic(hv(emulator), vm, mac=mac, switch_name="External", vlan=300 + index,
                            rate_mbps=None, name=f"nic{index}")
    await ok(emulator, await request_state(emulator, vm.path, 2))
    (first, second) = await nics.list_nics(hv(emulator), vm.guid)
    before = emulator.round_trips()
    await nics.remove(hv(emulator), first)
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (1, 1)
    assert [n.mac for n in await nics.list_nics(hv(emulator), vm.guid)] == [second.mac]
    assert len(await devices(emulator, vm.path, "Msvm_EthernetPortAllocationSettingData")) == 1
    vlans = await devices(emulator, vm.path, "Msvm_EthernetSwitchPortVlanSettingData")
    assert [v["AccessVlanId"] for v in vlans] == [301]


async def test_remove_refuses_and_keeps_nic_when_generation_1_vm_runs(
    emulator: EmulatorCim,
) -> None:
    vm = await _vm(emulator)
    await ok(emulator, await request_state(emulator, vm.path, 2))
    found = await nics.list_nics(hv(emulator), vm.guid)
    with pytest.raises(HyperVError):
        await nics.remove(hv(emulator), found[0])
    assert len(await nics.list_nics(hv(emulator), vm.guid)) == len(found)
