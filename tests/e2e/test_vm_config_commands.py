"""VM configuration commands over real HTTPS, answered from the emulated host:
ScaleVm, GetVmConfig and ModifyVmNicConfig (as the MS sends them for PlugNic/UnPlugNic),
and PlugNic/UnPlugNic themselves, hot-plugging where Hyper-V allows it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.config import load_config
from hyperv_agent.hyperv import build, nics
from hyperv_agent.hyperv.build import VmSpec
from hyperv_agent.hyperv.vms import VmRef
from tests.e2e.conftest import LOCAL_POOL, PRIVATE_IP, Running, serving
from tests.emulator.kit import devices, ok, request_state
from tests.sessions import hv

GET = "com.cloud.agent.api.GetVmConfigCommand"
GET_ANSWER = "com.cloud.agent.api.GetVmConfigAnswer"
MODIFY = "com.cloud.agent.api.ModifyVmNicConfigCommand"
MODIFY_ANSWER = "com.cloud.agent.api.ModifyVmNicConfigAnswer"
SCALE = "com.cloud.agent.api.ScaleVmCommand"
SCALE_ANSWER = "com.cloud.agent.api.ScaleVmAnswer"
ROUTER = "r-4-VM"
#: The router of protocol §13 (and §9.4): control, guest and public NICs, then a spare
#: (disconnected).
ROUTER_NICS = (("0200512C000E", None), ("0E0004000016", None), ("06A2C8000018", 261),
               ("06A2C8000019", None))
MB = 1024 * 1024


async def _router(running: Running, nic_count: int = 4) -> VmRef:
    cim = running.emulator
    vm = await build.define_vm(hv(cim), VmSpec(name=ROUTER, notes=(), generation=1, cpus=1,
                                           memory_mb=512))
    for index, (mac, vlan) in enumerate((ROUTER_NICS * 3)[:nic_count]):
        await nics.add_nic(hv(cim), vm, mac=mac if index < 4 else f"06A2C80001{index:02X}",
                            switch_name="External", vlan=vlan, rate_mbps=None,
                            name=f"nic{index}")
    if nic_count >= 4:
        await running.answer(MODIFY, _modify(index=3, enable=False))
    return vm


def _modify(**fields: object) -> dict[str, object]:
    return {"vmName": ROUTER, "vlan": None, "macAddress": None, "index": 0, "enable": False,
            "switchLableName": None, "contextMap": {}, "wait": 0, **fields}


async def _nics(running: Running) -> list[dict[str, Any]]:
    key, answer = await running.answer(GET, {"vmName": ROUTER, "contextMap": {}, "wait": 0})
    assert (key, answer["result"]) == (GET_ANSWER, True), answer
    nics: list[dict[str, Any]] = answer["nics"]
    return nics


# --- GetVmConfigCommand -------------------------------------------------------------------


async def test_get_vm_config_lists_nics_in_order_when_router_has_a_spare_nic(
    running: Running,
) -> None:
    await _router(running)
    key, answer = await running.answer(GET, {"vmName": ROUTER, "contextMap": {}, "wait": 0})
    assert key == GET_ANSWER
    assert (answer["result"], answer["vmName"], answer.get("details")) == (True, ROUTER, None)
    assert answer["nics"] == [
        {"macAddress": "0200512C000E", "vlanid": "-1", "state": True},
        {"macAddress": "0E0004000016", "vlanid": "-1", "state": True},
        {"macAddress": "06A2C8000018", "vlanid": "261", "state": True},
        {"macAddress": "06A2C8000019", "vlanid": "-1", "state": False},
    ]


async def test_get_vm_config_stays_within_three_calls_when_vm_has_eight_nics(
    running: Running,
) -> None:
    await _router(running, nic_count=8)
    cim = running.emulator
    before = cim.round_trips()
    nics = await _nics(running)
    spent = cim.round_trips() - before
    assert len(nics) == 8
    assert spent.calls <= 3 and spent.waits == 0


async def test_get_vm_config_fails_with_details_when_vm_is_unknown(running: Running) -> None:
    status, data = await running.post(GET, {"vmName": "r-99-VM", "contextMap": {}, "wait": 0})
    assert status == 200
    answer = data[0][GET_ANSWER]
    assert answer["result"] is False
    assert "r-99-VM" in answer["details"]


# --- ModifyVmNicConfigCommand -------------------------------------------------------------


async def test_modify_vm_nic_config_connects_spare_nic_on_vlan_when_plug_nic_picks_it(
    running: Running,
) -> None:
    await _router(running)
    key, answer = await running.answer(MODIFY, _modify(vlan="262", index=3, enable=True,
                                                       switchLableName="External"))
    assert (key, answer["result"], answer["vmName"]) == (MODIFY_ANSWER, True, ROUTER), answer
    assert (await _nics(running))[3] == {"macAddress": "06A2C8000019", "vlanid": "262",
                                         "state": True}


async def test_modify_vm_nic_config_disconnects_and_clears_vlan_when_unplug_nic_disables_it(
    running: Running,
) -> None:
    await _router(running)
    _, answer = await running.answer(MODIFY, _modify(vlan="2", index=2, enable=False,
                                                     switchLableName=""))
    assert answer["result"] is True, answer
    nics = await _nics(running)
    assert nics[2] == {"macAddress": "06A2C8000018", "vlanid": "-1", "state": False}
    assert [n["state"] for n in nics[:2]] == [True, True]


async def test_modify_vm_nic_config_leaves_nic_on_its_vlan_when_disconnecting_it_fails(
    running: Running,
) -> None:
    # UnPlugNic: the port is disconnected before its VLAN goes, so a failure never leaves
    # the router's NIC (still holding its tier's address) on the untagged network.
    await _router(running)
    running.emulator.faults.fail_next_job("ModifyResourceSettings", 32768, "port busy")
    _, answer = await running.answer(MODIFY, _modify(vlan="2", index=2, enable=False,
                                                     switchLableName=""))
    assert answer["result"] is False and "port busy" in answer["details"], answer
    assert (await _nics(running))[2] == {"macAddress": "06A2C8000018", "vlanid": "261",
                                         "state": True}


async def test_modify_vm_nic_config_leaves_spare_disconnected_when_setting_its_vlan_fails(
    running: Running,
) -> None:
    # PlugNic: the spare takes its VLAN before it is connected, so a failure never leaves
    # it connected on the untagged network.
    await _router(running)
    running.emulator.faults.fail_next_job("AddFeatureSettings", 32768, "no vlan today")
    _, answer = await running.answer(MODIFY, _modify(vlan="262", index=3, enable=True,
                                                     switchLableName="External"))
    assert answer["result"] is False and "no vlan today" in answer["details"], answer
    assert (await _nics(running))[3] == {"macAddress": "06A2C8000019", "vlanid": "-1",
                                         "state": False}


async def test_modify_vm_nic_config_connects_nic_by_mac_when_mac_has_colons(
    running: Running,
) -> None:
    await _router(running)
    _, answer = await running.answer(MODIFY, _modify(vlan="vlan://263",
                                                     macAddress="06:a2:c8:00:00:19"))
    assert answer["result"] is True, answer
    assert (await _nics(running))[3] == {"macAddress": "06A2C8000019", "vlanid": "263",
                                         "state": True}


async def test_modify_vm_nic_config_removes_vlan_when_vlan_is_untagged(
    running: Running,
) -> None:
    await _router(running)
    _, answer = await running.answer(MODIFY, _modify(vlan="untagged", macAddress="06A2C8000018"))
    assert answer["result"] is True, answer
    assert (await _nics(running))[2] == {"macAddress": "06A2C8000018", "vlanid": "-1",
                                         "state": True}


async def test_modify_vm_nic_config_fails_when_neither_mac_nor_index_is_given(
    running: Running,
) -> None:
    await _router(running)
    _, answer = await running.answer(MODIFY, _modify(vlan="262", enable=True))
    assert answer["result"] is False
    assert "neither a macAddress nor an index" in answer["details"]


async def test_modify_vm_nic_config_fails_and_changes_nothing_when_target_is_unknown(
    running: Running,
) -> None:
    await _router(running)
    before = await _nics(running)
    for fields, expected in (
        ({"index": 9, "enable": True}, "index 9"),
        ({"macAddress": "0A0000000001"}, "MAC 0A0000000001"),
        ({"vmName": "r-99-VM", "index": 3, "enable": True}, "r-99-VM"),
        ({"index": 3, "enable": True, "switchLableName": "Nowhere"}, "Nowhere"),
        ({"index": 3, "enable": True, "vlan": "two"}, "two"),
        ({"index": 3, "enable": True, "vlan": "4095"}, "4095"),
        ({"index": 3, "enable": True, "vlan": "0"}, "VLAN 0"),
        ({"macAddress": "06A2C8000019", "vlan": "vlan://5000"}, "5000"),
        # a range is no VLAN id, and only a bare value names a private VLAN
        ({"index": 3, "enable": True, "vlan": "vlan://1-2"}, "'vlan://1-2' is not a VLAN id"),
        # digits of other scripts and superscripts are no VLAN id the MS writes
        ({"index": 3, "enable": True, "vlan": "\u0661\u0662"}, "is not a VLAN id"),
        ({"index": 3, "enable": True, "vlan": "\u00b2"}, "is not a VLAN id"),
        ({"index": 3, "enable": True, "vlan": "100-i\u00b2"}, "pvlan://100-i"),
        # nor begin a private VLAN, whose refusal would name a pvlan:// URI never sent
        ({"index": 3, "enable": True, "vlan": "\u0663-i2"},
         "vlan '\u0663-i2' is not a VLAN id or 'untagged'"),
        ({"index": 3, "enable": True, "vlan": "1" * 5000}, "(5000 digits) is outside 1..4094"),
    ):
        _, answer = await running.answer(MODIFY, _modify(**fields))
        assert answer["result"] is False, fields
        assert expected in answer["details"], answer
    assert await _nics(running) == before


# --- ScaleVmCommand -----------------------------------------------------------------------


def _scale(name: str, cpus: int, ram_mb: int) -> dict[str, object]:
    return {"vmName": name, "cpus": cpus, "minSpeed": 500, "maxSpeed": 2000,
            "minRam": ram_mb * MB, "maxRam": ram_mb * MB, "contextMap": {}, "wait": 0}


async def test_scale_vm_changes_cpus_and_memory_when_vm_is_stopped(running: Running) -> None:
    vm = await _router(running, nic_count=1)
    key, answer = await running.answer(SCALE, _scale(ROUTER, 4, 2048))
    assert (key, answer["result"]) == (SCALE_ANSWER, True), answer
    cim = running.emulator
    (processor,) = await devices(cim, vm.path, "Msvm_ProcessorSettingData")
    (memory,) = await devices(cim, vm.path, "Msvm_MemorySettingData")
    assert (processor["VirtualQuantity"], memory["VirtualQuantity"]) == (4, 2048)


async def test_scale_vm_rounds_memory_up_to_2_mb_when_offering_has_an_odd_number_of_mb(
    running: Running,
) -> None:
    vm = await _router(running, nic_count=1)
    key, answer = await running.answer(SCALE, _scale(ROUTER, 2, 2049))
    assert (key, answer["result"]) == (SCALE_ANSWER, True), answer
    assert "2050 MB of memory" in answer["details"]
    (memory,) = await devices(running.emulator, vm.path, "Msvm_MemorySettingData")
    assert (memory["VirtualQuantity"], memory["Reservation"], memory["Limit"]) == (
        2050, 2050, 2050)


async def test_scale_vm_gives_dynamic_memory_when_min_ram_is_less_than_max_ram(
    running: Running,
) -> None:
    cim = running.emulator
    vm = await build.define_vm(hv(cim), VmSpec(name="i-2-70-VM", notes=(), generation=1,
                                                cpus=1, memory_mb=512))
    overprovisioned = {**_scale("i-2-70-VM", 2, 2048), "minRam": 512 * MB}
    key, answer = await running.answer(SCALE, overprovisioned)
    assert (key, answer["result"]) == (SCALE_ANSWER, True), answer
    assert answer["details"] == ("VM i-2-70-VM now has 2 processors and 512 MB to 2048 MB "
                                 "of dynamic memory")
    (memory,) = await devices(cim, vm.path, "Msvm_MemorySettingData")
    assert (memory["DynamicMemoryEnabled"], memory["Reservation"], memory["VirtualQuantity"],
            memory["Limit"]) == (True, 512, 512, 2048)
    _, answer = await running.answer(SCALE, {**overprovisioned, "minRam": 4096 * MB})
    assert answer["result"] is False
    assert "vm.minRam 4294967296 bytes is more than vm.maxRam 2147483648 bytes" in (
        answer["details"])
    _, answer = await running.answer(SCALE, _scale("i-2-70-VM", 2, 1024))  # factor 1 again
    assert answer["result"] is True, answer
    (memory,) = await devices(cim, vm.path, "Msvm_MemorySettingData")
    assert (memory["DynamicMemoryEnabled"], memory["Reservation"], memory["VirtualQuantity"],
            memory["Limit"]) == (False, 1024, 1024, 1024)


@pytest.mark.parametrize(("cpus", "ram_mb", "expected"), [
    (17, 2048, "cpus 17 is more than this host's 16 logical processors"),
    (2, 12 * 1024 * 1024 + 2, "a generation 2 VM on Windows Server 2019: 0 to 12582912 MB"),
], ids=["logical-processors", "memory-2019"])
async def test_scale_vm_refuses_before_any_call_what_hyperv_cannot_run_on_this_host(
    running: Running, cpus: int, ram_mb: int, expected: str,
) -> None:
    vm = await _router(running, nic_count=1)
    cim = running.emulator
    kinds = ("Msvm_ProcessorSettingData", "Msvm_MemorySettingData")
    sizes = [(await devices(cim, vm.path, kind))[0]["VirtualQuantity"] for kind in kinds]
    before = cim.round_trips()
    key, answer = await running.answer(SCALE, _scale(ROUTER, cpus, ram_mb))
    spent = cim.round_trips() - before
    assert (key, answer["result"]) == (SCALE_ANSWER, False), answer
    assert expected in answer["details"], answer["details"]
    assert spent["invoke:ModifyResourceSettings"] == 0
    assert [(await devices(cim, vm.path, kind))[0]["VirtualQuantity"]
            for kind in kinds] == sizes


async def test_scale_vm_refuses_naming_max_ram_when_it_is_below_32_mb(running: Running) -> None:
    # A body without minRam (0: static memory of maxRam) was refused in words naming no
    # field of the command ("memory_mb must be at least 32, not 16").
    vm = await _router(running, nic_count=1)
    cim = running.emulator
    before = cim.round_trips()
    body = {**_scale(ROUTER, 2, 16)}
    del body["minRam"]
    key, answer = await running.answer(SCALE, body)
    assert (key, answer["result"]) == (SCALE_ANSWER, False), answer
    assert answer["details"] == ("ScaleVmCommand failed: vm.maxRam 16777216 bytes is less "
                                 "than 32 MB, the least memory Hyper-V gives a VM")
    assert (cim.round_trips() - before)["invoke:ModifyResourceSettings"] == 0
    (memory,) = await devices(cim, vm.path, "Msvm_MemorySettingData")
    assert memory["VirtualQuantity"] != 16


async def test_scale_vm_refuses_and_changes_nothing_when_vm_runs(running: Running) -> None:
    vm = await _router(running, nic_count=1)
    cim = running.emulator
    await ok(cim, await request_state(cim, vm.path, 2))
    _, answer = await running.answer(SCALE, _scale(ROUTER, 4, 2048))
    assert answer["result"] is False
    assert "a running VM cannot change processors or memory on this host; stop it first" in (
        answer["details"])
    (processor,) = await devices(cim, vm.path, "Msvm_ProcessorSettingData")
    assert processor["VirtualQuantity"] == 1


@pytest.mark.parametrize(("suspended", "word"), [(9, "paused"), (6, "saved")])
async def test_scale_vm_refuses_naming_the_state_when_vm_is_paused_or_saved(
    running: Running, suspended: int, word: str,
) -> None:
    # A paused or saved VM holds its memory (in the host's, or its saved state): its
    # sizes are as fixed as a running VM's, and the answer says which it is.
    vm = await _router(running, nic_count=1)
    cim = running.emulator
    await ok(cim, await request_state(cim, vm.path, 2))
    await ok(cim, await request_state(cim, vm.path, suspended))
    before = cim.round_trips()
    _, answer = await running.answer(SCALE, _scale(ROUTER, 4, 2048))
    assert answer["result"] is False
    assert answer["details"] == (f"ScaleVmCommand failed: VM {ROUTER}: a {word} VM cannot "
                                 "change processors or memory on this host; stop it first")
    assert (cim.round_trips() - before)["invoke:ModifyResourceSettings"] == 0
    (processor,) = await devices(cim, vm.path, "Msvm_ProcessorSettingData")
    assert processor["VirtualQuantity"] == 1


async def test_scale_vm_fails_with_details_when_vm_is_unknown(running: Running) -> None:
    key, answer = await running.answer(SCALE, _scale("i-9-99-VM", 2, 1024))
    assert (key, answer["result"]) == (SCALE_ANSWER, False)
    assert "i-9-99-VM" in answer["details"]


# --- PlugNicCommand / UnPlugNicCommand ----------------------------------------------------

PLUG = "com.cloud.agent.api.PlugNicCommand"
PLUG_ANSWER = "com.cloud.agent.api.PlugNicAnswer"
UNPLUG = "com.cloud.agent.api.UnPlugNicCommand"
UNPLUG_ANSWER = "com.cloud.agent.api.UnPlugNicAnswer"
NEW_MAC = "02:00:4a:8e:00:21"


async def _vm(running: Running, name: str, generation: int, *, start: bool = True) -> VmRef:
    cim = running.emulator
    vm = await build.define_vm(hv(cim), VmSpec(name=name, notes=(), generation=generation, cpus=1,
                                           memory_mb=512))
    await nics.add_nic(hv(cim), vm, mac="0200512C000E", switch_name="External", vlan=None,
                        rate_mbps=None, name="nic0")
    await nics.add_nic(hv(cim), vm, mac="06A2C8000019", switch_name="External", vlan=None,
                        rate_mbps=None, name="spare", connected=False)
    if start:
        await ok(cim, await request_state(cim, vm.path, 2))
    return vm


def _plug(vm_name: str, mac: str = NEW_MAC, **nic: object) -> dict[str, object]:
    return {"instanceName": vm_name, "vmType": "User", "contextMap": {}, "wait": 0, "nic": {
        "deviceId": 2, "mac": mac, "name": "External", "broadcastUri": "vlan://305",
        "broadcastType": "Vlan", "type": "Guest", "networkRateMbps": 200,
        "uuid": "5c5f9e1a-1d6b-4b8e-9d76-2c1f0f6c9a11", **nic}}


async def _config(running: Running, name: str) -> list[dict[str, Any]]:
    key, answer = await running.answer(GET, {"vmName": name, "contextMap": {}, "wait": 0})
    assert (key, answer["result"]) == (GET_ANSWER, True), answer
    nics: list[dict[str, Any]] = answer["nics"]
    return nics


async def test_plug_nic_hot_adds_nic_with_vlan_and_rate_when_generation_2_vm_runs(
    running: Running,
) -> None:
    cim = running.emulator
    vm = await _vm(running, "i-2-60-VM", generation=2)
    key, answer = await running.answer(PLUG, _plug("i-2-60-VM"))
    assert (key, answer["result"]) == (PLUG_ANSWER, True), answer
    assert (await _config(running, "i-2-60-VM"))[2] == {
        "macAddress": "02004A8E0021", "vlanid": "305", "state": True}
    (limit,) = await devices(cim, vm.path, "Msvm_EthernetSwitchPortBandwidthSettingData")
    assert limit["Limit"] == 200_000_000
    assert (await cim.get(vm.path))["EnabledState"] == 2


async def test_plug_nic_adds_one_nic_when_two_plugs_of_one_mac_race(running: Running) -> None:
    await _vm(running, "i-2-61-VM", generation=2)
    answers = await asyncio.gather(running.answer(PLUG, _plug("i-2-61-VM")),
                                   running.answer(PLUG, _plug("i-2-61-VM")))
    assert [a["result"] for _, a in answers] == [True, True], answers
    macs = [nic["macAddress"] for nic in await _config(running, "i-2-61-VM")]
    assert macs.count("02004A8E0021") == 1


async def test_plug_nic_adds_nic_when_generation_1_vm_is_stopped(running: Running) -> None:
    await _vm(running, "i-2-62-VM", generation=1, start=False)
    _, answer = await running.answer(PLUG, _plug("i-2-62-VM"))
    assert answer["result"] is True, answer
    assert len(await _config(running, "i-2-62-VM")) == 3


async def test_plug_nic_refuses_naming_spares_when_generation_1_vm_runs_and_mac_is_new(
    running: Running,
) -> None:
    await _vm(running, "r-7-VM", generation=1)
    before = await _config(running, "r-7-VM")
    _, answer = await running.answer(PLUG, _plug("r-7-VM"))
    assert answer["result"] is False
    assert "generation 1" in answer["details"] and "06A2C8000019" in answer["details"]
    assert "cannot change the MAC address" in answer["details"]
    assert await _config(running, "r-7-VM") == before


async def test_plug_nic_connects_the_spare_when_generation_1_vm_runs_and_mac_is_the_spares(
    running: Running,
) -> None:
    await _vm(running, "r-8-VM", generation=1)
    _, answer = await running.answer(PLUG, _plug("r-8-VM", mac="06:a2:c8:00:00:19"))
    assert answer["result"] is True, answer
    assert (await _config(running, "r-8-VM"))[1] == {
        "macAddress": "06A2C8000019", "vlanid": "305", "state": True}


async def test_unplug_nic_hot_removes_nic_when_generation_2_vm_runs(running: Running) -> None:
    cim = running.emulator
    vm = await _vm(running, "i-2-63-VM", generation=2)
    assert (await running.answer(PLUG, _plug("i-2-63-VM")))[1]["result"] is True
    key, answer = await running.answer(UNPLUG, {"instanceName": "i-2-63-VM",
                                                "nic": {"mac": NEW_MAC}, "contextMap": {}})
    assert (key, answer["result"]) == (UNPLUG_ANSWER, True), answer
    assert [n["macAddress"] for n in await _config(running, "i-2-63-VM")] == [
        "0200512C000E", "06A2C8000019"]
    assert len(await devices(cim, vm.path, "Msvm_EthernetPortAllocationSettingData")) == 2
    assert (await cim.get(vm.path))["EnabledState"] == 2


async def test_unplug_nic_sent_again_after_the_nic_is_gone_succeeds_changing_nothing(
    running: Running,
) -> None:
    """The management server sends UnPlugNic again when it lost the answer, and keeps the
    NIC in its database while the unplug fails: a MAC the VM no longer has is success, as
    the KVM agent answers it, and nothing changes."""
    await _vm(running, "i-2-66-VM", generation=2)
    assert (await running.answer(PLUG, _plug("i-2-66-VM")))[1]["result"] is True
    body = {"instanceName": "i-2-66-VM", "nic": {"mac": NEW_MAC}, "contextMap": {}}
    assert (await running.answer(UNPLUG, body))[1]["result"] is True
    before = await _config(running, "i-2-66-VM")
    key, answer = await running.answer(UNPLUG, body)
    assert (key, answer["result"]) == (UNPLUG_ANSWER, True), answer
    assert answer["details"] == "VM i-2-66-VM has no NIC with MAC 02004A8E0021: nothing to unplug"
    assert await _config(running, "i-2-66-VM") == before


async def test_unplug_nic_disconnects_and_keeps_nic_when_generation_1_vm_runs(
    running: Running,
) -> None:
    await _vm(running, "r-9-VM", generation=1)
    assert (await running.answer(PLUG, _plug("r-9-VM", mac="06A2C8000019")))[1]["result"]
    _, answer = await running.answer(UNPLUG, {"instanceName": "r-9-VM",
                                              "nic": {"mac": "06:A2:C8:00:00:19"},
                                              "contextMap": {}})
    assert answer["result"] is True, answer
    assert "disconnected" in answer["details"]
    assert (await _config(running, "r-9-VM"))[1] == {
        "macAddress": "06A2C8000019", "vlanid": "-1", "state": False}


@pytest.mark.parametrize(("command", "body", "expected"), [
    (PLUG, _plug("i-9-99-VM"), "no VM 'i-9-99-VM'"),
    (PLUG, {"instanceName": "i-2-64-VM", "contextMap": {}}, "names no nic"),
    (PLUG, _plug("i-2-64-VM", mac="02:00:4a"), "MAC address"),
    (PLUG, _plug("i-2-64-VM", broadcastUri="vlan://5000"), "VLAN 5000"),
    (PLUG, _plug("i-2-64-VM", broadcastUri="vlan://\u00b2"), "is not a VLAN id"),
    (PLUG, _plug("i-2-64-VM", broadcastUri="vlan://" + "1" * 5000), "(5000 digits) is outside"),
    (PLUG, _plug("i-2-64-VM", name="Nowhere"), "Nowhere"),
    (PLUG, _plug("i-2-64-VM", networkRateMbps=1 << 40),
     "nic.networkRateMbps: 1099511627776 does not fit a Java int"),
    (PLUG, _plug("i-2-64-VM", mac="00:00:00:00:00:00"), "is all zeros"),
    (UNPLUG, {"instanceName": "i-9-99-VM", "nic": {"mac": NEW_MAC}, "contextMap": {}},
     "no VM 'i-9-99-VM'"),
    (UNPLUG, {"nic": {"mac": NEW_MAC}, "contextMap": {}}, "names no instanceName"),
])
async def test_plug_and_unplug_fail_and_change_nothing_when_input_is_bad(
    running: Running, command: str, body: dict[str, object], expected: str,
) -> None:
    await _vm(running, "i-2-64-VM", generation=2)
    before = await _config(running, "i-2-64-VM")
    key, answer = await running.answer(command, body)
    assert key == (PLUG_ANSWER if command == PLUG else UNPLUG_ANSWER)
    assert answer["result"] is False
    assert expected in answer["details"], answer
    assert await _config(running, "i-2-64-VM") == before


async def test_plug_and_unplug_nic_keep_the_nics_when_generation_2_vm_runs_on_2012_r2(
    tmp_path: Path,
) -> None:
    # Hot add and remove of network adapters is new in Windows Server 2016 ("What's new
    # in Hyper-V on Windows Server 2016"): on 2012 R2 a running generation 2 VM is wired
    # through its spares, as a running generation 1 VM is.
    toml = tmp_path / "agent.toml"
    toml.write_text('[emulator]\nos_version = "6.3.9600"\n')
    config = load_config(toml, state_dir=tmp_path / "state", backend="emulator",
                         private_ip=PRIVATE_IP, local_storage_path=LOCAL_POOL)
    async with serving(config) as on_2012_r2:
        await _vm(on_2012_r2, "i-2-65-VM", generation=2)
        before = await _config(on_2012_r2, "i-2-65-VM")
        _, answer = await on_2012_r2.answer(PLUG, _plug("i-2-65-VM"))
        assert answer["result"] is False, answer
        assert "06A2C8000019" in answer["details"] and "2016" in answer["details"]
        assert await _config(on_2012_r2, "i-2-65-VM") == before
        _, answer = await on_2012_r2.answer(UNPLUG, {"instanceName": "i-2-65-VM",
                                                     "nic": {"mac": "02:00:51:2C:00:0E"},
                                                     "contextMap": {}})
        assert answer["result"] is True, answer
        assert "disconnected" in answer["details"]
        assert (await _config(on_2012_r2, "i-2-65-VM"))[0] == {
            "macAddress": "0200512C000E", "vlanid": "-1", "state": False}


@pytest.mark.parametrize(("suspended", "word"), [(9, "paused"), (6, "saved")])
async def test_plug_nic_fails_and_unplug_nic_disconnects_when_vm_is_paused_or_saved(
    running: Running, suspended: int, word: str,
) -> None:
    # Hyper-V adds and removes no network adapter of a paused or saved VM, generation 2
    # on Windows Server 2016 or not: a new NIC is refused before any call, and an unplugged
    # one is disconnected and kept, as on a running generation 1 VM.
    cim = running.emulator
    vm = await _vm(running, "i-2-65-VM", generation=2)
    await ok(cim, await request_state(cim, vm.path, suspended))
    before = cim.round_trips()
    key, answer = await running.answer(PLUG, _plug("i-2-65-VM"))
    assert (key, answer["result"]) == (PLUG_ANSWER, False), answer
    assert answer["details"] == (
        f"PlugNicCommand failed: nothing changed: VM i-2-65-VM is {word} on this host, and "
        f"Hyper-V adds and removes no device of a {word} VM; try again once the VM runs "
        "again or is stopped")
    assert (cim.round_trips() - before)["invoke:AddResourceSettings"] == 0
    _, answer = await running.answer(UNPLUG, {"instanceName": "i-2-65-VM",
                                              "nic": {"mac": "02:00:51:2C:00:0E"},
                                              "contextMap": {}})
    assert answer["result"] is True, answer
    assert answer["details"] == (f"NIC 0200512C000E of {word} VM i-2-65-VM disconnected "
                                 f"(Hyper-V cannot remove it from a {word} VM)")
    assert await _config(running, "i-2-65-VM") == [
        {"macAddress": "0200512C000E", "vlanid": "-1", "state": False},
        {"macAddress": "06A2C8000019", "vlanid": "-1", "state": False}]
    assert (await cim.get(vm.path))["EnabledState"] == suspended
