"""The wmi backend's adapter (cim/local.py) on a PyMI session serving an emulated host:
what the contract suite does not show. Values read through it equal the emulator's own;
MI's value kinds (datetimes without offset, intervals, char16, reals, embedded objects)
convert as documented; arguments PyMI cannot carry are refused with one clear line;
classes and method targets are fetched once; MI failures become typed errors."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator

import pytest

from hyperv_agent.cim import faults, wql
from hyperv_agent.cim.api import (
    CIMV2_NAMESPACE,
    V2_NAMESPACE,
    CimInstance,
    CimProperty,
    MethodResult,
    ObjectPath,
)
from hyperv_agent.cim.local import (
    MI_ARRAY,
    LocalCim,
    MiInstance,
    _plain,
    cim_type_of,
    mi_type_of,
)
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.errors import (
    CimAccessDenied,
    CimError,
    CimInvalidParameter,
    CimNotFound,
    CimUnavailable,
)
from tests.cim.pymi_fake import Element, FakeInstance, FakeMiError, FakeMiSession
from tests.emulator.kit import define_vm, service

PROCESS = ObjectPath("Win32_Process", (), CIMV2_NAMESPACE)


@pytest.fixture
async def session(emulator: EmulatorCim) -> FakeMiSession:
    return FakeMiSession(emulator, asyncio.get_running_loop())


@pytest.fixture
async def local(session: FakeMiSession) -> AsyncIterator[LocalCim]:
    cim = LocalCim(session)
    yield cim
    await cim.close()


def test_mi_type_codes_are_those_of_mi_h() -> None:
    assert [mi_type_of(t, False) for t in ("boolean", "uint16", "datetime", "string")] == [
        0, 3, 12, 13]
    assert (mi_type_of("reference", False), mi_type_of("object", True)) == (14, 31)
    assert all(cim_type_of(mi_type_of(*cim_type_of(code))) == cim_type_of(code)
               for code in range(2 * MI_ARRAY))
    with pytest.raises(CimError, match="unknown MI type 32"):
        cim_type_of(32)


def _shape(instance: CimInstance) -> dict[str, tuple[str, bool, object]]:
    return {p.name: (p.cim_type, p.is_array, p.value) for p in instance}


async def test_everything_read_through_the_adapter_equals_the_emulators_own(
        emulator: EmulatorCim, local: LocalCim) -> None:
    vm = await define_vm(emulator)  # a VM, its settings, devices and a job
    await emulator.invoke(PROCESS, "Create", {"CommandLine": "cmd.exe"})
    for text, namespace in [("SELECT * FROM CIM_ManagedElement", V2_NAMESPACE),
                            ("SELECT * FROM Win32_Process", CIMV2_NAMESPACE),
                            ("SELECT * FROM Win32_ComputerSystem", CIMV2_NAMESPACE)]:
        direct = {i.path: i for i in await emulator.query(text, namespace)}
        adapted = {i.path: i for i in await local.query(text, namespace)}
        assert direct.keys() == adapted.keys() and len(direct) > 0
        for path, instance in direct.items():
            assert _shape(adapted[path]) == _shape(instance), path
            assert adapted[path].class_name == instance.class_name
    job = only_job(await local.query("SELECT * FROM Msvm_ConcreteJob"))
    assert job.prop("TimeBeforeRemoval").value == "00000000000500.000000:000"  # an interval
    assert (await local.get(vm)).string("ElementName") == "vm1"


def only_job(found: list[CimInstance]) -> CimInstance:
    assert len(found) == 1
    return found[0]


class Prepared(FakeMiSession):
    """A session whose query answers prepared instances (MI value kinds the emulated
    host has no property of)."""

    def __init__(self, base: FakeMiSession, answer: list[MiInstance]) -> None:
        super().__init__(base.emulator, base.loop)
        self.answer = answer

    def query(self, namespace: str, wql: str) -> list[MiInstance]:
        return self.answer


async def test_mi_value_kinds_become_the_seams(session: FakeMiSession) -> None:
    offset = datetime.timezone(datetime.timedelta(hours=-5))
    nested = FakeInstance("Msvm_Nested", "root/virtualization/v2", "", [
        Element("Label", mi_type_of("string", False), "x")])
    reference = FakeInstance("Win32_ComputerSystem", "root/cimv2", "HV01", [
        Element("Name", mi_type_of("string", False), "HV01")], ["Name"])
    item = FakeInstance("Test_Kinds", "root/cimv2", "HV01", [
        Element("Naive", 12, datetime.datetime(2025, 1, 10, 9, 15, 2, 123456)),
        Element("Aware", 12, datetime.datetime(2025, 1, 10, 9, 15, 2, tzinfo=offset)),
        Element("Interval", 12, datetime.timedelta(days=1, hours=2, seconds=3)),
        Element("Letter", mi_type_of("char16", False), ord("Z")),
        Element("Ratio", mi_type_of("real64", False), 0.25),
        Element("Owner", mi_type_of("reference", False), reference),
        Element("Parts", mi_type_of("object", True), (nested, nested)),
        Element("Flags", mi_type_of("boolean", True), (True, False)),
    ])
    (found,) = await LocalCim(Prepared(session, [item])).query("SELECT * FROM Test_Kinds", "x")
    assert str(found.path) == "\\\\HV01\\root\\cimv2:Test_Kinds=@"  # keyless: a singleton
    assert found["Naive"] == "20250110091502.123456+000"  # PyMI drops the offset
    assert found["Aware"] == "20250110091502.000000-300"
    assert found["Interval"] == "00000001020003.000000:000"
    assert (found["Letter"], found["Ratio"], found["Flags"]) == ("Z", "0.25", (True, False))
    assert ObjectPath.parse(found.string("Owner") or "") == ObjectPath.for_keys(
        "Win32_ComputerSystem", CIMV2_NAMESPACE, Name="HV01")
    parts = found.prop("Parts")
    assert (parts.cim_type, parts.is_array) == ("string", True)
    assert 'CLASSNAME="Msvm_Nested"' in str(found.strings("Parts")[1])


@pytest.mark.parametrize(("params", "message"), [
    ({"CommandLine": ["a", "b"]}, "CommandLine takes one value"),
    ({"NoSuch": 1}, "Create has no in-parameter 'NoSuch'"),
    ({"CommandLine": "cmd", "ProcessStartupInformation": "<INSTANCE/>"},
     "ProcessStartupInformation takes an instance of a class"),
])
async def test_bad_arguments_are_refused_before_the_call(
        local: LocalCim, emulator: EmulatorCim, params: dict[str, object],
        message: str) -> None:
    before = emulator.round_trips()
    with pytest.raises(CimInvalidParameter, match=message):
        await local.invoke(PROCESS, "Create", params)  # type: ignore[arg-type]
    assert (emulator.round_trips() - before)["invoke"] == 0


async def test_arguments_pymi_cannot_carry_are_one_clear_line(
        local: LocalCim, emulator: EmulatorCim) -> None:
    vm = await define_vm(emulator)
    with pytest.raises(CimInvalidParameter, match="PyMI cannot pass a datetime argument"):
        await local.invoke(vm, "RequestStateChange", {
            "RequestedState": 2, "TimeoutPeriod": "00000000000010.000000:000"})
    process = await local.invoke(PROCESS, "Create", {"CommandLine": "cmd.exe"})
    target = ObjectPath.for_keys("Win32_Process", CIMV2_NAMESPACE,
                                 Handle=str(process["ProcessId"]))
    with pytest.raises(CimInvalidParameter, match="Reason takes uint32"):
        await local.invoke(target, "Terminate", {"Reason": "soon"})
    with pytest.raises(CimInvalidParameter, match="takes a reference"):
        await local.invoke(await service(emulator), "DestroySystem", {"AffectedSystem": 7})


async def test_classes_and_method_targets_are_fetched_once(
        local: LocalCim, session: FakeMiSession, emulator: EmulatorCim) -> None:
    for _ in range(3):
        await local.spawn("Win32_ProcessStartup", CIMV2_NAMESPACE)
    vm = await define_vm(emulator)
    before = emulator.round_trips()
    for state in (2, 3, 2):
        assert (await local.invoke(vm, "RequestStateChange", {"RequestedState": state})
                ).return_value == 4096
    spent = emulator.round_trips() - before
    assert (spent["get"], spent["invoke"]) == (1, 3)  # the VM itself, once
    assert session.classes_fetched.count("Win32_ProcessStartup") == 1
    assert session.classes_fetched.count("Msvm_ComputerSystem") == 1


async def test_a_target_gone_since_it_was_read_is_read_again(
        local: LocalCim, emulator: EmulatorCim) -> None:
    created = await local.invoke(PROCESS, "Create", {"CommandLine": "cmd.exe"})
    target = ObjectPath.for_keys("Win32_Process", CIMV2_NAMESPACE,
                                 Handle=str(created["ProcessId"]))
    assert (await local.invoke(target, "Terminate", {"Reason": 0})).return_value == 0
    with pytest.raises(CimNotFound):
        await local.invoke(target, "Terminate", {"Reason": 0})
    before = emulator.round_trips()
    with pytest.raises(CimNotFound):
        await local.invoke(target, "Terminate", {"Reason": 0})
    assert (emulator.round_trips() - before)["get"] == 1  # read again, not the kept one


async def test_only_the_latest_targets_are_kept(session: FakeMiSession,
                                                emulator: EmulatorCim) -> None:
    local = LocalCim(session, max_targets=1)
    first, second = await define_vm(emulator, "a"), await define_vm(emulator, "b")
    before = emulator.round_trips()
    for vm in (first, second, first):
        await local.invoke(vm, "RequestStateChange", {"RequestedState": 2})
    assert (emulator.round_trips() - before)["get"] == 3


async def test_a_path_naming_no_key_of_its_class_is_not_found(local: LocalCim) -> None:
    with pytest.raises(CimNotFound, match="Win32_Process has no NoSuchKey"):
        await local.get(ObjectPath.for_keys("Win32_Process", CIMV2_NAMESPACE, NoSuchKey="x"))


class Failing(FakeMiSession):
    def __init__(self, base: FakeMiSession, failure: BaseException) -> None:
        super().__init__(base.emulator, base.loop)
        self.failure = failure

    def query(self, namespace: str, wql: str) -> list[MiInstance]:
        raise self.failure


@pytest.mark.parametrize(("details", "kind", "text"), [
    ({"mi_result": 1, "error_code": faults.WBEM_S_TIMEDOUT, "message": "timed\nout"},
     CimUnavailable, "WMI: timed out (0x00040004)"),
    ({"mi_result": 2, "error_code": 0x80041003, "message": "Access denied "},
     CimAccessDenied, "WMI: Access denied (0x80041003)"),
    ({"message": "MI_RESULT_FAILED"}, CimError, "WMI: MI_RESULT_FAILED"),
])
async def test_mi_failures_are_typed_one_line_errors(
        session: FakeMiSession, details: dict[str, object], kind: type[CimError],
        text: str) -> None:
    cim = LocalCim(Failing(session, FakeMiError(details)))
    with pytest.raises(kind) as caught:
        await cim.query(wql.select("Msvm_ComputerSystem"))
    assert str(caught.value) == text


async def test_embedded_instances_are_cim_xml_both_ways(local: LocalCim) -> None:
    item = CimInstance.build("Msvm_KvpExchangeDataItem", [
        CimProperty("Name", "string", False, "key\n1"), CimProperty("Source", "uint16", False, 0)])
    again = local.parse_embedded(local.to_embedded(item))
    assert (again.class_name, again["Name"], again["Source"]) == (
        "Msvm_KvpExchangeDataItem", "key\n1", 0)


async def test_out_parameters_keep_references_and_arrays(
        local: LocalCim, emulator: EmulatorCim) -> None:
    vssd = await local.spawn("Msvm_VirtualSystemSettingData")
    result = await local.invoke(await service(emulator), "DefineSystem", {
        "SystemSettings": vssd.updated(ElementName="out"), "ResourceSettings": []})
    assert isinstance(result, MethodResult) and result.return_value == 4096
    system, job = result.path("ResultingSystem"), result.path("Job")
    assert system is not None and system.class_name == "Msvm_ComputerSystem"
    assert job is not None and (await local.get(job)).integer("JobState") == 7


def test_the_fake_reads_ints_as_pymi_does_without_a_range_check() -> None:
    item = FakeInstance("Test_Widths", "root/cimv2", "", [
        Element(name, mi_type_of(name, False), None)
        for name in ("uint8", "sint16", "uint16", "char16", "uint32", "boolean")])
    item["uint16"], item["sint16"], item["uint8"] = 70000, 40000, "300"
    item["char16"], item["boolean"] = 0x1F600, 2
    assert [item.get_element(i)[2] for i in range(5)] == [44, -25536, 4464, 0xF600, None]
    assert item.get_element("boolean")[2] is True
    for wide in (-1, 2**32):  # beyond what the C read holds: an error PyMI leaves pending
        with pytest.raises(SystemError):
            item["uint32"] = wide


@pytest.mark.parametrize(("method", "params", "message"), [
    ("RequestStateChange", {"RequestedState": 65538}, "65538 is out of the range of uint16"),
    ("RequestStateChange", {"RequestedState": "-1"}, "-1 is out of the range of uint16"),
])
async def test_integers_out_of_their_types_range_are_refused_not_truncated(
        local: LocalCim, emulator: EmulatorCim, method: str, params: dict[str, object],
        message: str) -> None:
    vm = await define_vm(emulator)
    before = emulator.round_trips()
    with pytest.raises(CimInvalidParameter, match=f"RequestedState: {message}"):
        await local.invoke(vm, method, params)  # type: ignore[arg-type]  # 65538 is 2 to PyMI
    assert (emulator.round_trips() - before)["invoke"] == 0


async def test_a_process_is_not_terminated_by_a_reason_pymi_cannot_read(
        local: LocalCim) -> None:
    process = await local.invoke(PROCESS, "Create", {"CommandLine": "cmd.exe"})
    target = ObjectPath.for_keys("Win32_Process", CIMV2_NAMESPACE,
                                 Handle=str(process["ProcessId"]))
    for reason in (2**32, -1):
        with pytest.raises(CimInvalidParameter, match="out of the range of uint32"):
            await local.invoke(target, "Terminate", {"Reason": reason})
    assert (await local.get(target)).class_name == "Win32_Process"
    with pytest.raises(CimInvalidParameter, match="out of the range of char16"):
        _plain("char16", "\U0001F600", "Letter")
    assert _plain("char16", "Z", "Letter") == ord("Z")
    assert _plain("sint64", -2**63, "Low") == -2**63
