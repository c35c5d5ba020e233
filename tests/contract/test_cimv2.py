"""The CIM behaviours the operation layer relies on, on root\\cimv2 classes every Windows
host has: queries (full, projected, filtered), gets, associators and references, spawned
instances with their class defaults, a static method taking an embedded object and
returning an out-parameter, an instance method called on a path, a method's failure as
its return value, and the typed errors of the seam. Each test runs on every backend of
the run (tests/contract/conftest.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CIMV2_NAMESPACE, ObjectPath
from hyperv_agent.errors import (
    CimInvalidClass,
    CimInvalidMethod,
    CimInvalidParameter,
    CimInvalidQuery,
    CimNotFound,
)
from tests.contract.conftest import Backend, eventually, only, path_of, quietly

NS = CIMV2_NAMESPACE
PROCESS = ObjectPath("Win32_Process", (), NS)
#: A process that lives long enough to be found, then is terminated by the test.
COMMAND = "ping.exe -n 600 127.0.0.1"


async def test_a_query_returns_typed_full_instances_with_their_paths(backend: Backend) -> None:
    system = only(await backend.cim.query("SELECT * FROM Win32_OperatingSystem", NS))
    assert system.class_name == "Win32_OperatingSystem"
    assert path_of(system).relative() == "Win32_OperatingSystem=@"  # a singleton
    assert re.fullmatch(r"\d+\.\d+\.\d+", system.string("Version") or "")
    memory = system.prop("TotalVisibleMemorySize")
    assert (memory.cim_type, memory.is_array) == ("uint64", False)
    assert (system.integer("TotalVisibleMemorySize") or 0) > 0
    assert "Caption" in system and "LastBootUpTime" in system


async def test_a_projection_carries_the_selected_properties(backend: Backend) -> None:
    full = only(await backend.cim.query("SELECT * FROM Win32_OperatingSystem", NS))
    projected = only(await backend.cim.query(
        "SELECT Caption, TotalVisibleMemorySize FROM Win32_OperatingSystem", NS))
    assert projected.string("Caption") == full.string("Caption")
    assert projected.integer("TotalVisibleMemorySize") == full.integer(
        "TotalVisibleMemorySize")


async def test_where_selects_by_quoted_literals(backend: Backend) -> None:
    computer = only(await backend.cim.query("SELECT * FROM Win32_ComputerSystem", NS))
    name = computer.string("Name") or ""
    same = await backend.cim.query(wql.select("Win32_ComputerSystem", wql.eq("Name", name),
                                              ["Name"]), NS)
    assert [item.string("Name") for item in same] == [name]
    other = wql.eq("Name", name + "-not-this-one'\\")
    assert await backend.cim.query(wql.select("Win32_ComputerSystem", other), NS) == []


async def test_a_get_by_path_returns_the_instance(backend: Backend) -> None:
    computer = only(await backend.cim.query("SELECT * FROM Win32_ComputerSystem", NS))
    again = await backend.cim.get(path_of(computer))
    assert again.string("Name") == computer.string("Name") and again.path == computer.path
    system = only(await backend.cim.query("SELECT * FROM Win32_OperatingSystem", NS))
    assert (await backend.cim.get(path_of(system))).string("Caption") == system.string(
        "Caption")


async def test_associators_and_references_follow_an_association(backend: Backend) -> None:
    computer = only(await backend.cim.query("SELECT * FROM Win32_ComputerSystem", NS))
    system = only(await backend.cim.associators(
        path_of(computer), assoc_class="Win32_SystemOperatingSystem"))
    assert system.class_name == "Win32_OperatingSystem"
    assert system.string("Caption") == only(await backend.cim.query(
        "SELECT Caption FROM Win32_OperatingSystem", NS)).string("Caption")
    link = only(await backend.cim.references(path_of(computer),
                                             result_class="Win32_SystemOperatingSystem"))
    assert ObjectPath.parse(link.string("GroupComponent") or "") == computer.path
    assert ObjectPath.parse(link.string("PartComponent") or "").class_name == (
        "Win32_OperatingSystem")


async def test_a_spawned_instance_carries_the_class_defaults(backend: Backend) -> None:
    startup = await backend.cim.spawn("Win32_ProcessStartup", NS)
    assert startup.class_name == "Win32_ProcessStartup" and startup.path is None
    assert startup.integer("ErrorMode") == 1  # the MOF default
    assert startup["ShowWindow"] is None


@pytest.fixture
async def process(backend: Backend) -> AsyncIterator[ObjectPath]:
    """A process created with Win32_Process.Create, terminated afterwards."""
    startup = (await backend.cim.spawn("Win32_ProcessStartup", NS)).updated(ShowWindow=0)
    created = await backend.cim.invoke(PROCESS, "Create", {
        "CommandLine": COMMAND, "CurrentDirectory": None, "ProcessStartupInformation": startup})
    assert created.return_value == 0, created
    process_id = created["ProcessId"]
    assert isinstance(process_id, int) and process_id > 0
    found = only(await backend.cim.query(
        wql.select("Win32_Process", wql.eq("ProcessId", process_id)), NS))
    yield path_of(found)
    await quietly(backend.cim.invoke(path_of(found), "Terminate", {"Reason": 1}))


async def test_a_static_method_takes_an_embedded_object_and_returns_out_parameters(
        backend: Backend, process: ObjectPath) -> None:
    found = await backend.cim.get(process)
    assert (found.string("Name") or "").lower() == "ping.exe"
    assert found.string("CommandLine") is not None
    assert "600" in (found.string("CommandLine") or "")
    assert process.key("Handle") == str(found.integer("ProcessId"))
    created = found.prop("CreationDate")  # a datetime: DMTF text across the seam
    assert created.cim_type == "datetime"
    assert re.fullmatch(r"\d{14}\.\d{6}[+-]\d{3}", str(created.value)), created


async def test_an_instance_method_acts_on_the_instance_at_a_path(
        backend: Backend, process: ObjectPath) -> None:
    ended = await backend.cim.invoke(process, "Terminate", {"Reason": 0})
    assert ended.return_value == 0, ended

    async def gone() -> bool:
        try:
            await backend.cim.get(process)
        except CimNotFound:
            return True
        return False

    await eventually(gone)


async def test_a_method_failure_is_its_return_value(backend: Backend) -> None:
    missing = await backend.cim.invoke(PROCESS, "Create", {
        "CommandLine": "hyperv-agent-no-such-program.exe"})
    assert missing.return_value == 9  # path not found


async def test_a_missing_instance_is_not_found(backend: Backend) -> None:
    with pytest.raises(CimNotFound):
        await backend.cim.get(ObjectPath.for_keys("Win32_Process", NS, Handle="4294967292"))
    with pytest.raises(CimNotFound):
        await backend.cim.invoke(ObjectPath.for_keys("Win32_Process", NS, Handle="4294967292"),
                                 "Terminate", {"Reason": 0})


@pytest.mark.parametrize(("wql_text", "error"), [
    ("SELECT * FROM HypervAgent_NoSuchClass", CimInvalidClass),
    ("SELECT * FROM", CimInvalidQuery),
    ("SELECT NoSuchProperty FROM Win32_Process", CimInvalidQuery),
])
async def test_a_bad_query_is_a_typed_error(backend: Backend, wql_text: str,
                                            error: type[Exception]) -> None:
    with pytest.raises(error):
        await backend.cim.query(wql_text, NS)


async def test_unknown_names_are_typed_errors(backend: Backend) -> None:
    with pytest.raises(CimInvalidClass):
        await backend.cim.spawn("HypervAgent_NoSuchClass", NS)
    with pytest.raises(CimInvalidMethod):
        await backend.cim.invoke(PROCESS, "HypervAgentNoSuchMethod", {})
    with pytest.raises(CimInvalidParameter):
        await backend.cim.invoke(PROCESS, "Create", {"NoSuchParameter": "x"})
