"""Queries, gets and associations as WMI answers them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CIMV2_NAMESPACE, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.errors import (
    CimInvalidClass,
    CimInvalidMethod,
    CimInvalidParameter,
    CimInvalidProperty,
    CimInvalidQuery,
    CimNotFound,
)
from tests.emulator.kit import define_vm, service


async def test_base_class_query_returns_every_subclass(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    guid = vm.key("Name")
    found = await emulator.query(wql.select(
        "CIM_ResourceAllocationSettingData", wql.starts_with("InstanceID", f"Microsoft:{guid}\\")))
    classes = {i.class_name for i in found}
    assert {"Msvm_ProcessorSettingData", "Msvm_MemorySettingData",
            "Msvm_ResourceAllocationSettingData"} <= classes
    assert all(i.is_a("CIM_ResourceAllocationSettingData") for i in found)


async def test_query_selects_only_matching_instances_with_projection(emulator: EmulatorCim) -> None:
    await define_vm(emulator, "alpha")
    await define_vm(emulator, "beta")
    found = await emulator.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("Caption", "Virtual Machine") & wql.ne("ElementName", "beta"),
        ["ElementName", "EnabledState"]))
    assert [(i["ElementName"], i["EnabledState"]) for i in found] == [("alpha", 3)]
    assert "Caption" not in found[0]
    assert found[0].path is not None and found[0].path.class_name == "Msvm_ComputerSystem"


async def test_query_refused_when_property_is_unknown(emulator: EmulatorCim) -> None:
    with pytest.raises(CimInvalidQuery, match="ElementNmae"):
        await emulator.query("SELECT * FROM Msvm_ComputerSystem WHERE ElementNmae = 'x'")
    with pytest.raises(CimInvalidQuery, match="Bogus"):
        await emulator.query("SELECT Bogus FROM Msvm_ComputerSystem")


async def test_query_refused_when_class_is_unknown(emulator: EmulatorCim) -> None:
    with pytest.raises(CimInvalidClass):
        await emulator.query("SELECT * FROM Msvm_ComputerSytem")
    with pytest.raises(CimInvalidClass):
        await emulator.query("SELECT * FROM Msvm_ComputerSystem", CIMV2_NAMESPACE)


async def test_spawned_instance_refuses_unknown_property(emulator: EmulatorCim) -> None:
    vssd = await emulator.spawn("Msvm_VirtualSystemSettingData")
    with pytest.raises(CimInvalidProperty):
        vssd.updated(ElementNmae="x")
    with pytest.raises(CimInvalidClass):
        await emulator.spawn("Msvm_NoSuchClass")


async def test_embedded_instance_with_unknown_property_returns_32773(
    emulator: EmulatorCim,
) -> None:
    text = ('<INSTANCE CLASSNAME="Msvm_VirtualSystemSettingData">'
            '<PROPERTY NAME="ElementNmae" TYPE="string"><VALUE>x</VALUE></PROPERTY></INSTANCE>')
    result = await emulator.invoke(await service(emulator), "DefineSystem",
                                   {"SystemSettings": text})
    assert result.return_value == 32773
    assert await emulator.query("SELECT * FROM Msvm_ComputerSystem WHERE Caption = "
                                "'Virtual Machine'") == []


async def test_get_finds_instance_when_path_differs_only_in_case(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator, "CaseVm")
    upper = ObjectPath.parse(str(vm).upper())
    assert str(upper) != str(vm)
    assert (await emulator.get(upper))["ElementName"] == "CaseVm"


async def test_unknown_paths_and_methods_raise_typed_errors(emulator: EmulatorCim) -> None:
    missing = ObjectPath.for_keys("Msvm_ComputerSystem", CreationClassName="Msvm_ComputerSystem",
                                  Name="00000000-0000-0000-0000-000000000000")
    with pytest.raises(CimNotFound):
        await emulator.get(missing)
    with pytest.raises(CimNotFound):
        await emulator.invoke(missing, "RequestStateChange", {"RequestedState": 2})
    vm = await define_vm(emulator)
    with pytest.raises(CimInvalidMethod):
        await emulator.invoke(vm, "RequestStateChnage", {"RequestedState": 2})
    with pytest.raises(CimInvalidParameter):
        await emulator.invoke(vm, "RequestStateChange", {"RequestedSate": 2})


async def test_associators_walk_from_vm_to_settings_and_devices(emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    vssd = await emulator.associators(vm, assoc_class="Msvm_SettingsDefineState",
                                      result_class="Msvm_VirtualSystemSettingData")
    assert len(vssd) == 1 and vssd[0]["ElementName"] == "vm1"
    assert vssd[0].path is not None
    parts = await emulator.associators(vssd[0].path,
                                       assoc_class="Msvm_VirtualSystemSettingDataComponent",
                                       result_class="Msvm_ProcessorSettingData")
    assert [p.class_name for p in parts] == ["Msvm_ProcessorSettingData"]
    references = await emulator.references(vm, result_class="Msvm_SettingsDefineState")
    assert len(references) == 1
    assert ObjectPath.parse(str(references[0]["ManagedElement"])) == vm


async def test_host_facts_are_in_root_cimv2(emulator: EmulatorCim) -> None:
    os_info = (await emulator.query("SELECT TotalVisibleMemorySize, FreePhysicalMemory, Version "
                                    "FROM Win32_OperatingSystem", CIMV2_NAMESPACE))[0]
    assert os_info["TotalVisibleMemorySize"] == 65536 * 1024
    assert os_info["FreePhysicalMemory"] == 65536 * 1024
    processors = await emulator.query(
        "SELECT NumberOfCores, MaxClockSpeed FROM Win32_Processor WHERE ProcessorType = 3",
        CIMV2_NAMESPACE)
    assert sum(int(p.integer("NumberOfCores") or 0) for p in processors) == 16
    assert {p["MaxClockSpeed"] for p in processors} == {2400}


async def test_processors_share_cores_the_sockets_do_not_divide_evenly(
        make_config: Callable[..., EmulatorConfig]) -> None:
    """NumberOfCores and NumberOfLogicalProcessors are those of each socket (Microsoft:
    "for the current instance of the processor"): over all sockets they add up to the
    host's, whatever the socket count."""
    cim = EmulatorCim.open(make_config(cpus=6, sockets=4))
    try:
        processors = await cim.query(
            "SELECT DeviceID, NumberOfCores, NumberOfLogicalProcessors FROM Win32_Processor",
            CIMV2_NAMESPACE)
        system = await cim.query("SELECT NumberOfLogicalProcessors FROM Win32_ComputerSystem",
                                 CIMV2_NAMESPACE)
    finally:
        await cim.close()
    assert [(p["DeviceID"], p["NumberOfCores"], p["NumberOfLogicalProcessors"])
            for p in processors] == [("CPU0", 2, 2), ("CPU1", 2, 2), ("CPU2", 1, 1),
                                     ("CPU3", 1, 1)]
    assert system[0]["NumberOfLogicalProcessors"] == 6


async def test_network_adapters_are_listed_by_index_not_in_the_order_they_came(
        emulator: EmulatorCim) -> None:
    host = emulator.host
    for index in (7, 0):  # the host's own adapter is Index 1
        txn = host.store.transaction()
        txn.put(host.new_record("Win32_NetworkAdapterConfiguration", Index=index,
                                Description=f"Ethernet adapter {index}", IPEnabled=True,
                                IPAddress=(f"10.0.0.{index + 10}",),
                                IPSubnet=("255.255.255.0",)))
        txn.commit()
    every = await emulator.query(wql.select("Win32_NetworkAdapterConfiguration"),
                                 CIMV2_NAMESPACE)
    enabled = await emulator.query(wql.select("Win32_NetworkAdapterConfiguration",
                                              wql.eq("IPEnabled", True), ["Index"]),
                                   CIMV2_NAMESPACE)
    assert [a["Index"] for a in every] == [a["Index"] for a in enabled] == [0, 1, 7]


async def test_host_has_services_switch_and_templates(emulator: EmulatorCim) -> None:
    for service_class in ("Msvm_VirtualSystemManagementService", "Msvm_ImageManagementService",
                          "Msvm_VirtualEthernetSwitchManagementService",
                          "Msvm_VirtualSystemMigrationService"):
        assert len(await emulator.query(wql.select(service_class))) == 1
    switches = await emulator.query(wql.select("Msvm_VirtualEthernetSwitch"))
    assert [s["ElementName"] for s in switches] == ["External"]
    host = await emulator.query(wql.select("Msvm_ComputerSystem",
                                           wql.eq("Caption", "Hosting Computer System")))
    assert len(host) == 1
    defaults = await emulator.query(wql.select("Msvm_ResourceAllocationSettingData",
                                               wql.ends_with("InstanceID", "\\Default")))
    assert len(defaults) >= 5
