"""Win32_Process on the emulated host: Create's refusals, ids and program paths, and the
singleton operating system with its Win32_SystemOperatingSystem link. (What every backend
answers alike is in tests/contract/.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperv_agent.cim.api import CIMV2_NAMESPACE, CimInstance, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.errors import CimInvalidParameter

PROCESS = ObjectPath("Win32_Process", (), CIMV2_NAMESPACE)


async def _create(emulator: EmulatorCim, command: str | None,
                  startup: CimInstance | None = None) -> tuple[int, int | None]:
    result = await emulator.invoke(PROCESS, "Create", {
        "CommandLine": command, "ProcessStartupInformation": startup})
    process_id = result["ProcessId"]
    assert process_id is None or isinstance(process_id, int)
    return int(result.return_value), process_id


@pytest.mark.parametrize(("command", "code"), [
    (None, 21), ("   ", 21), ("no-such-program.exe /x", 9), ("C:\\Tools\\missing.exe", 9),
    ("..\\cmd.exe", 9),
])
async def test_create_refuses_as_windows_when_the_program_is_missing_or_unnamed(
        emulator: EmulatorCim, command: str | None, code: int) -> None:
    assert await _create(emulator, command) == (code, None)
    assert await emulator.query("SELECT Handle FROM Win32_Process", CIMV2_NAMESPACE) == []


async def test_create_finds_system_programs_and_files_on_the_host_drives(
        emulator: EmulatorCim, tmp_path: Path) -> None:
    tool = tmp_path / "C" / "Tools" / "agent tool.exe"
    tool.parent.mkdir(parents=True)
    tool.write_bytes(b"MZ")
    first = await _create(emulator, "ping -n 5 127.0.0.1")
    second = await _create(emulator, '"C:\\Tools\\agent tool.exe" --flag')
    assert first[0] == second[0] == 0
    assert first[1] is not None and second[1] == first[1] + 4
    found = {p.integer("ProcessId"): p for p in await emulator.query(
        "SELECT * FROM Win32_Process", CIMV2_NAMESPACE)}
    assert found[first[1]]["ExecutablePath"] == "C:\\Windows\\System32\\ping.exe"
    assert found[first[1]]["Handle"] == str(first[1])
    assert found[second[1]]["Name"] == "agent tool.exe"
    assert found[second[1]]["CommandLine"] == '"C:\\Tools\\agent tool.exe" --flag'


async def test_create_refuses_startup_information_of_another_class(
        emulator: EmulatorCim) -> None:
    wrong = await emulator.spawn("Win32_ComputerSystem", CIMV2_NAMESPACE)
    assert await _create(emulator, "cmd.exe", wrong.updated(Name="x")) == (21, None)
    with pytest.raises(CimInvalidParameter, match="takes object"):
        await emulator.invoke(PROCESS, "Create", {"CommandLine": "cmd.exe",
                                                  "ProcessStartupInformation": "<INSTANCE/>"})


async def test_the_operating_system_is_a_singleton_linked_to_its_computer(
        emulator: EmulatorCim) -> None:
    system = (await emulator.query("SELECT * FROM Win32_OperatingSystem", CIMV2_NAMESPACE))[0]
    assert system.path is not None and system.path.relative() == "Win32_OperatingSystem=@"
    assert (await emulator.get(ObjectPath.parse("root\\cimv2:Win32_OperatingSystem=@")))[
        "Caption"] == system["Caption"]
    links = await emulator.references(system.path)
    assert [(link.class_name, link["PrimaryOS"]) for link in links] == [
        ("Win32_SystemOperatingSystem", True)]
    assert link_end(links[0], "PartComponent") == system.path


def link_end(link: CimInstance, role: str) -> ObjectPath:
    value = link.string(role)
    assert value is not None
    return ObjectPath.parse(value)
