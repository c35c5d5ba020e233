"""The emulator's indexes: a query looks at what it can return, never misses a match, and
answers in the order a walk over every instance would."""

from __future__ import annotations

import random
from collections.abc import Callable

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance
from hyperv_agent.emulator import wqlparse
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.indexes import Index, IndexSpec, Tally, TallySpec
from hyperv_agent.emulator.schema import lookup
from hyperv_agent.emulator.store import Record
from tests.emulator.kit import (
    GEN2,
    add,
    define_vm,
    devices,
    ok,
    request_state,
    service,
    system_settings,
    template,
)

VM_COUNT = 200
RASD = "CIM_ResourceAllocationSettingData"


async def _host_with_vms(make_config: Callable[..., EmulatorConfig], count: int,
                         **config: object) -> EmulatorCim:
    cim = EmulatorCim.open(make_config(async_jobs=False, **config))
    for index in range(count):
        await define_vm(cim, f"vm-{index}", GEN2 if index % 3 == 0 else
                        "Microsoft:Hyper-V:SubType:1")
    return cim


async def test_query_by_name_examines_one_vm_when_host_has_200(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = await _host_with_vms(make_config, VM_COUNT)
    try:
        before = cim.round_trips()
        found = await cim.query(wql.select(
            "Msvm_ComputerSystem", wql.eq("ElementName", "VM-150") & wql.eq(
                "Caption", "Virtual Machine"), ["Name", "ElementName"]))
        spent = cim.round_trips() - before
        assert [vm["ElementName"] for vm in found] == ["vm-150"]
        assert (spent.calls, spent["examined"]) == (1, 1)
    finally:
        await cim.close()


async def test_device_query_examines_only_that_vms_devices_when_host_has_200(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = await _host_with_vms(make_config, VM_COUNT)
    try:
        (vm,) = [v.path for v in await cim.query(wql.select(
            "Msvm_ComputerSystem", wql.eq("ElementName", "vm-7"))) if v.path]
        before = cim.round_trips()
        found = await devices(cim, vm)
        spent = cim.round_trips() - before
        assert {d.class_name for d in found} >= {"Msvm_ProcessorSettingData",
                                                  "Msvm_MemorySettingData"}
        assert spent["examined"] <= len(found) + 1  # + the VM's own settings, at most
    finally:
        await cim.close()


async def test_device_query_probes_one_index_for_every_device_class_when_host_has_200(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """The settings of a VM's devices are of seven classes; what the VM owns is filed in
    one index across them, so the query probes one table, not one per class, and its
    other condition builds no index of its own (the VM's few records are taken)."""
    cim = await _host_with_vms(make_config, VM_COUNT)
    try:
        (vm,) = [v.path for v in await cim.query(wql.select(
            "Msvm_ComputerSystem", wql.eq("ElementName", "vm-7"))) if v.path]
        guid = vm.key("Name")
        before = cim.round_trips()
        found = await cim.query(wql.select(RASD, wql.starts_with(
            "InstanceID", f"Microsoft:{guid}\\") & wql.any_of("ResourceType", [3, 4])))
        spent = cim.round_trips() - before
        assert sorted(d.class_name for d in found) == ["Msvm_MemorySettingData",
                                                       "Msvm_ProcessorSettingData"]
        assert spent["probed"] == 1
        assert spent["examined"] <= len(await devices(cim, vm))
    finally:
        await cim.close()


async def test_query_answers_in_stored_order_when_an_earlier_vm_changes_and_state_reopens(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """A changed record keeps its place among the others, in memory and when the state
    dir is read again."""
    cim = await _host_with_vms(make_config, 4)
    by_caption = wql.select("Msvm_VirtualSystemSettingData",
                            wql.eq("Caption", "Virtual Machine Settings"), ["ElementName"])
    try:
        (vssd,) = await cim.query(wql.select("Msvm_VirtualSystemSettingData",
                                             wql.eq("ElementName", "vm-1")))
        result = await cim.invoke(await service(cim), "ModifySystemSettings", {
            "SystemSettings": vssd.updated(Notes=["changed"])})
        assert result.return_value == 0
        names = [s["ElementName"] for s in await cim.query(by_caption)]
        assert names == ["vm-0", "vm-1", "vm-2", "vm-3"]
    finally:
        await cim.close()
    reopened = EmulatorCim.open(make_config(async_jobs=False))
    try:
        assert [s["ElementName"] for s in await reopened.query(by_caption)] == names
        await define_vm(reopened, "vm-4")
        assert [s["ElementName"] for s in await reopened.query(by_caption)] == [*names, "vm-4"]
    finally:
        await reopened.close()


async def test_summary_of_one_vm_looks_at_that_vm_only_when_host_has_200(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = await _host_with_vms(make_config, VM_COUNT)
    try:
        (vssd,) = await cim.query(wql.select("Msvm_VirtualSystemSettingData",
                                             wql.eq("ElementName", "vm-42")))
        before = cim.round_trips()
        result = await cim.invoke(await service(cim), "GetSummaryInformation", {
            "SettingData": [vssd], "RequestedInformation": [0, 1, 4]})
        spent = cim.round_trips() - before
        (summary,) = result.instances("SummaryInformation")
        assert (summary["ElementName"], summary["NumberOfProcessors"]) == ("vm-42", 1)
        assert spent["summarized"] == 1
    finally:
        await cim.close()


async def test_guest_adapter_query_examines_only_that_vms_adapters_when_20_vms_run(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """Every guest network adapter configuration's InstanceID begins
    Microsoft:GuestNetwork\\, the head the index files them under; the VM's GUID after it
    narrows a query to that VM's."""
    cim = EmulatorCim.open(make_config(async_jobs=False))
    try:
        guids = []
        for index in range(20):
            vm = await define_vm(cim, f"vm-{index}")
            for mac in (f"02004C5F{index:02X}01", f"02004C5F{index:02X}02"):
                nic = (await template(cim, "Msvm_SyntheticEthernetPortSettingData")).updated(
                    Address=mac, StaticMacAddress=True)
                await ok(cim, await add(cim, vm, [nic]))
            await ok(cim, await request_state(cim, vm, 2))
            guids.append(str(vm.key("Name")))
        wanted = f"Microsoft:GuestNetwork\\{guids[7].lower()}\\"
        for pattern, examined in ((wanted + "%", 2), (wanted.upper() + "%", 2),
                                  (wanted[:-4] + "%", 40)):  # a GUID cut short: every one
            before = cim.round_trips()
            found = await cim.query(wql.select("Msvm_GuestNetworkAdapterConfiguration",
                                               wql.like("InstanceID", pattern)))
            spent = cim.round_trips() - before
            assert [str(c["InstanceID"]).lower().startswith(wanted.lower())
                    for c in found] == [True, True], pattern
            assert spent["examined"] == examined, pattern
    finally:
        await cim.close()


async def test_query_finds_the_new_name_only_when_a_vm_is_renamed(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = await _host_with_vms(make_config, 3)
    try:
        (vssd,) = await cim.query(wql.select("Msvm_VirtualSystemSettingData",
                                             wql.eq("ElementName", "vm-1")))
        result = await cim.invoke(await service(cim), "ModifySystemSettings", {
            "SystemSettings": vssd.updated(ElementName="renamed")})
        assert result.return_value == 0
        by_name = [await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", n)))
                   for n in ("vm-1", "renamed")]
        assert [len(found) for found in by_name] == [0, 1]
    finally:
        await cim.close()


async def test_query_by_name_finds_vms_when_state_is_reopened(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = await _host_with_vms(make_config, 5)
    await cim.close()
    reopened = EmulatorCim.open(make_config(async_jobs=False))
    try:
        found = await reopened.query(wql.select("Msvm_ComputerSystem",
                                                wql.eq("ElementName", "vm-3")))
        assert [vm["ElementName"] for vm in found] == ["vm-3"]
    finally:
        await reopened.close()


# --- indexed answers are the answers of a walk ----------------------------------------------

#: Values to compare with: real ones in other cases, numbers as text, near misses.
_TEXTS = ("vm-1", "VM-1", "vm-10", "Virtual Machine", "virtual machine", "Hosting Computer System",
          "2", "3", "Microsoft:Hyper-V:Processor", "IDE Controller 0", "", "vm-%", "x")
_PROPS = {
    "Msvm_ComputerSystem": ("ElementName", "Caption", "EnabledState", "Name"),
    RASD: ("InstanceID", "ResourceType", "ResourceSubType", "Address", "ElementName"),
}
#: The classes queried between random changes: ``_PROPS``', and records a VM owns through
#: its SystemName (made as it starts, removed as it stops) or by a GuestNetwork InstanceID.
_CHANGING_PROPS = {
    **_PROPS,
    "Msvm_ShutdownComponent": ("SystemName", "DeviceID", "ElementName"),
    "Msvm_GuestNetworkAdapterConfiguration": ("InstanceID",),
    "Msvm_VirtualSystemSettingData": ("InstanceID", "ElementName", "VirtualSystemIdentifier"),
}


def _leaf(rng: random.Random, class_name: str, samples: list[CimInstance]) -> wql.Condition:
    prop = rng.choice(_CHANGING_PROPS[class_name])
    seen: list[str | int] = [v for s in samples if isinstance(v := s[prop], str | int)]
    value: str | int = rng.choice([*_TEXTS, *seen, *seen, 2, 3, 5, 10])
    text = str(value)
    kind = rng.randrange(6)
    if kind == 0:
        return wql.like(prop, wql.like_literal(text[: rng.randrange(len(text) + 1)]) + "%")
    if kind == 1:
        return wql.ne(prop, value)
    if kind == 2:
        return wql.Condition(f"{prop} IS NULL")
    if kind == 3 and isinstance(value, str):
        return wql.eq(prop, value.upper() if rng.random() < 0.5 else value.lower())
    return wql.eq(prop, value)


def _condition(rng: random.Random, class_name: str, samples: list[CimInstance],
               depth: int = 0) -> wql.Condition:
    if depth >= 2 or rng.random() < 0.35:
        return _leaf(rng, class_name, samples)
    left = _condition(rng, class_name, samples, depth + 1)
    right = _condition(rng, class_name, samples, depth + 1)
    shape = rng.randrange(3)
    if shape == 2:
        return wql.Condition(f"NOT {left.text}") & right
    return left & right if shape == 0 else left | right


def _walked(everything: list[CimInstance], text: str) -> list[str]:
    parsed = wqlparse.parse(text)
    assert isinstance(parsed, wqlparse.SelectQuery) and parsed.where is not None
    where = parsed.where
    return [str(i.path) for i in everything if wqlparse.evaluate(where, i.__getitem__)]


async def test_indexed_queries_answer_as_a_walk_when_conditions_are_random(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = await _host_with_vms(make_config, 12)
    rng = random.Random(16)
    narrowed = matched = 0
    try:
        for class_name in _PROPS:
            everything = await cim.query(wql.select(class_name))
            for _ in range(150):
                text = wql.select(class_name, _condition(rng, class_name, everything))
                before = cim.round_trips()
                found = [str(i.path) for i in await cim.query(text)]
                assert found == _walked(everything, text), text
                narrowed += (cim.round_trips() - before)["examined"] < len(everything)
                matched += bool(found)
    finally:
        await cim.close()
    assert narrowed > 50 and matched > 50  # both the indexes and the matches were exercised


async def _random_change(cim: EmulatorCim, rng: random.Random, defined: list[int]) -> None:
    """One change a host meets: a VM defined, renamed, started or stopped (its runtime
    records and guest adapters made or removed), given a NIC, or removed."""
    vms = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("Caption",
                                                                   "Virtual Machine")))
    kind = rng.randrange(5)
    if kind == 0 or not vms:
        defined.append(len(defined))
        await define_vm(cim, f"vm-{len(defined) + 100}")
        return
    vm = rng.choice(vms)
    assert vm.path is not None
    if kind == 1:
        vssd = await system_settings(cim, vm.path)
        await ok(cim, await cim.invoke(await service(cim), "ModifySystemSettings", {
            "SystemSettings": vssd.updated(ElementName=f"vm-{rng.randrange(20)}")}))
    elif kind == 2:
        await request_state(cim, vm.path, 2 if vm["EnabledState"] == 3 else 3)
    elif kind == 3:
        nic = await template(cim, "Msvm_SyntheticEthernetPortSettingData")
        await add(cim, vm.path, [nic.updated(ElementName="nic")])
    elif vm["EnabledState"] == 3:
        await cim.invoke(await service(cim), "DestroySystem", {"AffectedSystem": vm.path})


async def test_indexed_queries_answer_as_a_walk_when_records_change_between_them(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """Indexes kept up to date commit by commit (a record refiled only when its keys
    change, the owner index across classes) answer as a walk over every instance does,
    in the same order, as VMs come, change, start, stop and go, and once the state dir is
    opened again."""
    cim = EmulatorCim.open(make_config(async_jobs=False))
    rng = random.Random(5)
    defined: list[int] = []
    reopened = 0
    try:
        for _ in range(60):
            for _ in range(rng.randrange(1, 3)):
                await _random_change(cim, rng, defined)
            if rng.random() < 0.15:
                await cim.close()
                cim = EmulatorCim.open(make_config(async_jobs=False))
                reopened += 1
            for class_name in _CHANGING_PROPS:
                everything = await cim.query(wql.select(class_name))
                for _ in range(8):
                    text = wql.select(class_name, _condition(rng, class_name, everything))
                    found = [str(i.path) for i in await cim.query(text)]
                    assert found == _walked(everything, text), text
    finally:
        await cim.close()
    assert reopened > 3 and len(defined) > 5


# --- an index kept as records change ---------------------------------------------------------

def test_changed_record_keeps_its_place_in_its_bucket_unless_its_keys_change() -> None:
    """A change that leaves a record's keys as they were touches none of the index's
    buckets (most changes do: a VM's state, a setting's value); one that changes them
    files the record under its new keys only."""
    rasd = lookup("Msvm_ResourceAllocationSettingData")
    assert rasd is not None
    index = Index(IndexSpec("by-type", lambda record: [record["ResourceType"]]))
    records = {name: Record(rasd, {"InstanceID": name, "ResourceType": 5})
               for name in ("a", "b", "c")}
    for name, record in records.items():
        index.add(name, record)
    index.replace("a", records["a"], Record(rasd, {"InstanceID": "a", "ResourceType": 5,
                                                   "ElementName": "changed"}))
    assert list(index.get(5)) == ["a", "b", "c"]
    index.replace("b", records["b"], Record(rasd, {"InstanceID": "b", "ResourceType": 6}))
    assert (list(index.get(5)), list(index.get(6))) == (["a", "c"], ["b"])
    tally = Tally(TallySpec("types", lambda record: record.integer("ResourceType")))
    for name, record in records.items():
        tally.add(name, record)
    tally.replace("b", records["b"], Record(rasd, {"InstanceID": "b", "ResourceType": 6}))
    assert tally.total == 16
