"""The same contract on root\\virtualization\\v2, as the operation layer uses it: a method
taking an embedded instance (CIM-XML text) and returning a reference and a job, waited
for until it completes; associators and references of a VM; an out-parameter holding
embedded objects; a reference argument; an embedded instance returned as text. On a
local Windows host these run only where Hyper-V is installed; every VM and file made is
removed again."""

from __future__ import annotations

import contextlib
import ntpath
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.errors import CimNotFound
from tests.contract.conftest import Backend, completed, only, path_of, quietly

pytestmark = pytest.mark.hyperv
VSMS = "Msvm_VirtualSystemManagementService"
IMS = "Msvm_ImageManagementService"
VSSD = "Msvm_VirtualSystemSettingData"
GIB = 1024**3


async def service(backend: Backend, class_name: str) -> ObjectPath:
    return path_of(only(await backend.cim.query(wql.select(class_name))))


@dataclass(frozen=True)
class Vm:
    path: ObjectPath
    name: str


@pytest.fixture
async def vm(backend: Backend) -> AsyncIterator[Vm]:
    """A VM defined with DefineSystem, destroyed afterwards."""
    name = f"hyperv-agent-contract-{uuid.uuid4().hex[:8]}"
    settings = (await backend.cim.spawn(VSSD)).updated(ElementName=name)
    vsms = await service(backend, VSMS)
    defined = await completed(backend.cim, await backend.cim.invoke(vsms, "DefineSystem", {
        "SystemSettings": settings, "ResourceSettings": [], "ReferenceConfiguration": None}))
    path = defined.path("ResultingSystem")
    assert path is not None and path.class_name == "Msvm_ComputerSystem"
    yield Vm(path, name)

    async def destroy() -> None:
        await completed(backend.cim, await backend.cim.invoke(vsms, "DestroySystem",
                                                              {"AffectedSystem": path}))

    await quietly(destroy())


async def test_a_method_takes_an_embedded_instance_and_returns_a_reference_and_a_job(
        backend: Backend, vm: Vm) -> None:
    found = only(await backend.cim.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("ElementName", vm.name)), "root\\virtualization\\v2"))
    assert found.path == vm.path
    assert found.integer("EnabledState") == 3  # defined, not started


async def test_associators_and_references_of_a_vm(backend: Backend, vm: Vm) -> None:
    settings = only(await backend.cim.associators(
        vm.path, assoc_class="Msvm_SettingsDefineState", result_class=VSSD))
    assert settings.string("ElementName") == vm.name
    link = only(await backend.cim.references(vm.path, result_class="Msvm_SettingsDefineState"))
    assert ObjectPath.parse(link.string("ManagedElement") or "") == vm.path
    assert ObjectPath.parse(link.string("SettingData") or "") == settings.path


async def test_an_out_parameter_holds_embedded_objects(backend: Backend, vm: Vm) -> None:
    settings = only(await backend.cim.associators(
        vm.path, assoc_class="Msvm_SettingsDefineState", result_class=VSSD))
    summary = await backend.cim.invoke(await service(backend, VSMS), "GetSummaryInformation", {
        "SettingData": [path_of(settings)], "RequestedInformation": [0, 1]})
    assert summary.return_value == 0, summary
    (item,) = summary.instances("SummaryInformation")
    assert (item.string("ElementName"), item.string("Name")) == (vm.name, vm.path.key("Name"))


async def test_a_reference_argument_names_the_instance_to_act_on(
        backend: Backend, vm: Vm) -> None:
    await completed(backend.cim, await backend.cim.invoke(
        await service(backend, VSMS), "DestroySystem", {"AffectedSystem": vm.path}))
    with pytest.raises(CimNotFound):
        await backend.cim.get(vm.path)
    assert await backend.cim.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("ElementName", vm.name))) == []


async def test_an_embedded_instance_comes_back_as_text(backend: Backend) -> None:
    disk = ntpath.join(backend.scratch, f"contract-{uuid.uuid4().hex[:8]}.vhdx")
    settings = (await backend.cim.spawn("Msvm_VirtualHardDiskSettingData")).updated(
        Path=disk, Type=3, Format=3, MaxInternalSize=GIB)
    ims = await service(backend, IMS)
    try:
        await completed(backend.cim, await backend.cim.invoke(
            ims, "CreateVirtualHardDisk", {"VirtualDiskSettingData": settings}))
        read = await completed(backend.cim, await backend.cim.invoke(
            ims, "GetVirtualHardDiskSettingData", {"Path": disk}))
        text = read.text("SettingData")
        assert text is not None and "<INSTANCE" in text
        found = backend.cim.parse_embedded(text)
        assert found.class_name == "Msvm_VirtualHardDiskSettingData"
        assert (found.string("Path") or "").lower() == disk.lower()
        assert (found.integer("Format"), found.integer("MaxInternalSize")) == (3, GIB)
    finally:
        if backend.emulator is None:  # a local host: the file is this machine's own
            with contextlib.suppress(OSError):
                Path(disk).unlink()
