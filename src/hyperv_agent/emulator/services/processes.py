"""Win32_Process (root\\cimv2): Create and Terminate, as every Windows host offers them.

Create is static: it finds the program its command line names (see
``codes.SYSTEM32_PROGRAMS``), checks the optional Win32_ProcessStartup, and adds a
Win32_Process whose Handle is the new ProcessId (one the host gives no other process,
its VMs' worker processes included: ``model.new_process_id``). Terminate removes the instance it is
called on. The emulated host runs no program: a process lives until it is terminated.
"""

from __future__ import annotations

import ntpath
from collections.abc import Mapping

from hyperv_agent.cim.api import OutValue
from hyperv_agent.emulator import codes, model
from hyperv_agent.emulator.calls import Call, MethodError, handles
from hyperv_agent.emulator.codes import ProcessReturn
from hyperv_agent.emulator.host import cim_datetime
from hyperv_agent.emulator.store import Record

PROCESS = "Win32_Process"


@handles(PROCESS, "Create")
def create(call: Call) -> Mapping[str, OutValue]:
    """A new process running the command line's program; 21 without a command line, 9
    when the program is not on the host, 21 for startup information of another class."""
    command = (call.text("CommandLine") or "").strip()
    if not command:
        raise _refused(ProcessReturn.INVALID_PARAMETER, "CommandLine is required")
    if call.arg("ProcessStartupInformation") is not None:
        startup = call.embedded("ProcessStartupInformation")
        if not startup.is_a("Win32_ProcessStartup"):
            raise _refused(ProcessReturn.INVALID_PARAMETER, "ProcessStartupInformation is "
                           f"a {startup.class_def.name}, not a Win32_ProcessStartup")
    program = _program(call, _first_word(command))
    process_id = model.new_process_id(call.host, call.txn)
    call.txn.put(_process(call, process_id, program, command))
    return {"ProcessId": process_id}


@handles(PROCESS, "Terminate")
def terminate(call: Call) -> Mapping[str, OutValue]:
    """The process ends: its instance is gone."""
    assert call.target is not None  # an instance method: the backend resolved the path
    call.txn.delete(call.target.path)
    return {}


def _refused(code: ProcessReturn, description: str) -> MethodError:
    return MethodError(code, description, immediate=True)


def _first_word(command: str) -> str:
    if command.startswith('"'):
        return command[1:].partition('"')[0]
    return command.split()[0]


def _program(call: Call, word: str) -> str:
    """The full path of the program ``word`` names; 9 (path not found) when the host has
    no such program."""
    if ntpath.isabs(word):
        if call.host.paths.file(word) is None:
            raise _refused(ProcessReturn.PATH_NOT_FOUND, f"no program {word}")
        return word
    name = word if ntpath.splitext(word)[1] else f"{word}.exe"
    if ntpath.basename(name).lower() != name.lower() or \
            name.lower() not in codes.SYSTEM32_PROGRAMS:
        raise _refused(ProcessReturn.PATH_NOT_FOUND, f"no program {word} in the search path")
    return ntpath.join(codes.SYSTEM32, name)


def _process(call: Call, process_id: int, program: str, command: str) -> Record:
    host = call.host
    system = next(host.records("Win32_OperatingSystem", call.txn), None)
    name = ntpath.basename(program)
    return host.new_record(
        PROCESS, Handle=str(process_id), ProcessId=process_id, Name=name, Caption=name,
        Description=name, CommandLine=command, ExecutablePath=program,
        CreationClassName=PROCESS, CSCreationClassName="Win32_ComputerSystem",
        CSName=host.name, OSCreationClassName="Win32_OperatingSystem",
        OSName=system["Name"] if system is not None else None,
        WindowsVersion=host.config.os_version, CreationDate=cim_datetime(host.clock()),
        SessionId=0, ThreadCount=1, Priority=8, HandleCount=0,
    )
