"""VM configuration commands over real HTTPS, answered from the emulated host:
ScaleVm, GetVmConfig and ModifyVmNicConfig (as the MS sends them for PlugNic/UnPlugNic)."""

from __future__ import annotations

from typing import Any

from hyperv_agent.hyperv import build
from hyperv_agent.hyperv.build import VmSpec
from hyperv_agent.hyperv.vms import VmRef
from tests.e2e.conftest import Running
from tests.emulator.kit import devices, ok, request_state

GET = "com.cloud.agent.api.GetVmConfigCommand"
GET_ANSWER = "com.cloud.agent.api.GetVmConfigAnswer"
MODIFY = "com.cloud.agent.api.ModifyVmNicConfigCommand"
MODIFY_ANSWER = "com.cloud.agent.api.ModifyVmNicConfigAnswer"
SCALE = "com.cloud.agent.api.ScaleVmCommand"
SCALE_ANSWER = "com.cloud.agent.api.ScaleVmAnswer"
ROUTER = "r-4-VM"
#: The router of protocol §13: control, guest and public NICs, then a spare (disconnected).
ROUTER_NICS = (("0200512C000E", None), ("0E0004000016", None), ("06A2C8000018", 261),
               ("06A2C8000019", None))
MB = 1024 * 1024


async def _router(running: Running, nic_count: int = 4) -> VmRef:
    cim = running.emulator
    vm = await build.define_vm(cim, VmSpec(name=ROUTER, notes=(), generation=1, cpus=1,
                                           memory_mb=512))
    for index, (mac, vlan) in enumerate((ROUTER_NICS * 3)[:nic_count]):
        await build.add_nic(cim, vm, mac=mac if index < 4 else f"06A2C80001{index:02X}",
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
        {"macAddress": "0200512C000E", "vlanid": -1, "state": True},
        {"macAddress": "0E0004000016", "vlanid": -1, "state": True},
        {"macAddress": "06A2C8000018", "vlanid": 261, "state": True},
        {"macAddress": "06A2C8000019", "vlanid": -1, "state": False},
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
    assert (await _nics(running))[3] == {"macAddress": "06A2C8000019", "vlanid": 262,
                                         "state": True}


async def test_modify_vm_nic_config_disconnects_and_clears_vlan_when_unplug_nic_disables_it(
    running: Running,
) -> None:
    await _router(running)
    _, answer = await running.answer(MODIFY, _modify(vlan="2", index=2, enable=False,
                                                     switchLableName=""))
    assert answer["result"] is True, answer
    nics = await _nics(running)
    assert nics[2] == {"macAddress": "06A2C8000018", "vlanid": -1, "state": False}
    assert [n["state"] for n in nics[:2]] == [True, True]


async def test_modify_vm_nic_config_connects_nic_by_mac_when_mac_has_colons(
    running: Running,
) -> None:
    await _router(running)
    _, answer = await running.answer(MODIFY, _modify(vlan="vlan://263",
                                                     macAddress="06:a2:c8:00:00:19"))
    assert answer["result"] is True, answer
    assert (await _nics(running))[3] == {"macAddress": "06A2C8000019", "vlanid": 263,
                                         "state": True}


async def test_modify_vm_nic_config_removes_vlan_when_vlan_is_untagged(
    running: Running,
) -> None:
    await _router(running)
    _, answer = await running.answer(MODIFY, _modify(vlan="untagged", macAddress="06A2C8000018"))
    assert answer["result"] is True, answer
    assert (await _nics(running))[2] == {"macAddress": "06A2C8000018", "vlanid": -1,
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


async def test_scale_vm_fails_with_details_when_vm_is_unknown(running: Running) -> None:
    key, answer = await running.answer(SCALE, _scale("i-9-99-VM", 2, 1024))
    assert (key, answer["result"]) == (SCALE_ANSWER, False)
    assert "i-9-99-VM" in answer["details"]
