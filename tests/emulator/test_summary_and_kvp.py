"""GetSummaryInformation for many VMs in one call, and the KVP exchange rules."""

from __future__ import annotations

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, InValue, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from tests.emulator.kit import define_vm, failure, ok, request_state, service


async def test_summary_for_all_vms_is_one_call_when_setting_data_is_null(
    emulator: EmulatorCim,
) -> None:
    vms = [await define_vm(emulator, f"vm{i}") for i in range(12)]
    await ok(emulator, await request_state(emulator, vms[3], 2))
    vsms = await service(emulator)
    before = emulator.round_trips()
    result = await emulator.invoke(vsms, "GetSummaryInformation", {
        "SettingData": None, "RequestedInformation": [0, 1, 4, 100, 103]})
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits) == (1, 0)
    summaries = result.instances("SummaryInformation")
    assert len(summaries) == 12
    by_name = {s["ElementName"]: s for s in summaries}
    assert by_name["vm3"]["EnabledState"] == 2 and by_name["vm3"]["MemoryUsage"] == 1024
    assert by_name["vm0"]["EnabledState"] == 3 and by_name["vm0"]["NumberOfProcessors"] == 1
    assert all(s["ProcessorLoad"] is None for s in summaries)  # not requested


async def test_summary_keeps_input_order_and_blanks_unknown_paths(emulator: EmulatorCim) -> None:
    first, second = await define_vm(emulator, "first"), await define_vm(emulator, "second")
    missing = ObjectPath.for_keys("Msvm_VirtualSystemSettingData",
                                  InstanceID="Microsoft:00000000-0000-0000-0000-000000000000")
    paths = [ObjectPath.for_keys("Msvm_VirtualSystemSettingData",
                                 InstanceID=f"Microsoft:{vm.key('Name')}")
             for vm in (second, first)]
    result = await emulator.invoke(await service(emulator), "GetSummaryInformation", {
        "SettingData": [paths[0], missing, paths[1]], "RequestedInformation": [1]})
    summaries = result.instances("SummaryInformation")
    assert [s["Name"] for s in summaries] == [second.key("Name"), "", first.key("Name")]
    assert [s["ElementName"] for s in summaries] == ["second", None, "first"]


def _item(name: str, data: str) -> str:
    return ('<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem">'
            f'<PROPERTY NAME="Name" TYPE="string"><VALUE>{name}</VALUE></PROPERTY>'
            f'<PROPERTY NAME="Data" TYPE="string"><VALUE>{data}</VALUE></PROPERTY>'
            '<PROPERTY NAME="Source" TYPE="uint16"><VALUE>0</VALUE></PROPERTY></INSTANCE>')


async def _host_items(cim: EmulatorCim, vm: ObjectPath) -> dict[str, str]:
    settings: list[CimInstance] = await cim.query(wql.select(
        "Msvm_KvpExchangeComponentSettingData",
        wql.starts_with("InstanceID", f"Microsoft:{vm.key('Name')}\\")))
    items = {}
    for text in settings[0].strings("HostExchangeItems"):
        item = cim.parse_embedded(text)
        items[str(item["Name"])] = str(item["Data"])
    return items


async def test_kvp_add_fails_when_key_exists_and_modify_replaces(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    vsms = await service(emulator)
    key = "cloudstack-vm-userdata"
    add: dict[str, InValue] = {"TargetSystem": vm, "DataItems": [_item(key, "one")]}
    await ok(emulator, await emulator.invoke(vsms, "AddKvpItems", add))
    assert await failure(emulator, await emulator.invoke(vsms, "AddKvpItems", add)) == 32773
    assert await _host_items(emulator, vm) == {"cloudstack-vm-userdata": "one"}
    modify: dict[str, InValue] = {"TargetSystem": vm, "DataItems": [_item(key, "two")]}
    await ok(emulator, await emulator.invoke(vsms, "ModifyKvpItems", modify))
    assert await _host_items(emulator, vm) == {"cloudstack-vm-userdata": "two"}
    await ok(emulator, await emulator.invoke(vsms, "RemoveKvpItems", modify))
    assert await _host_items(emulator, vm) == {}


async def test_kvp_value_refused_when_longer_than_the_limit(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    vsms = await service(emulator)
    fits: dict[str, InValue] = {"TargetSystem": vm, "DataItems": [_item("k", "x" * 1023)]}
    await ok(emulator, await emulator.invoke(vsms, "AddKvpItems", fits))
    too_long: dict[str, InValue] = {"TargetSystem": vm, "DataItems": [_item("k2", "x" * 1024)]}
    assert await failure(emulator, await emulator.invoke(vsms, "AddKvpItems", too_long)) == 32773
    assert set(await _host_items(emulator, vm)) == {"k"}
