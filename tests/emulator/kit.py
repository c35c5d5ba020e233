"""Raw CIM steps used by the emulator tests (written against the seam, not hyperv/)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import Cim, CimInstance, MethodResult, ObjectPath
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.indexes import ClassIndexes
from hyperv_agent.emulator.schema import ClassDef
from hyperv_agent.emulator.store import Record, Store

IDE = "Microsoft:Hyper-V:Emulated IDE Controller"
DISK = "Microsoft:Hyper-V:Synthetic Disk Drive"
VHD = "Microsoft:Hyper-V:Virtual Hard Disk"
GEN1 = "Microsoft:Hyper-V:SubType:1"
GEN2 = "Microsoft:Hyper-V:SubType:2"


class Clock:
    """A clock that stands still until a test moves it (``now``, in seconds), for an
    emulated host opened with it."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def service(cim: Cim, class_name: str = "Msvm_VirtualSystemManagementService") -> ObjectPath:
    found = await cim.query(wql.select(class_name))
    assert len(found) == 1 and found[0].path is not None
    return found[0].path


async def finished(cim: Cim, result: MethodResult) -> CimInstance | None:
    """The job of a 4096 result (None for a synchronous 0)."""
    job = result.path("Job")
    return None if job is None else await cim.get(job)


async def define_vm(cim: Cim, name: str = "vm1", subtype: str = GEN1) -> ObjectPath:
    vssd = (await cim.spawn("Msvm_VirtualSystemSettingData")).updated(
        ElementName=name, VirtualSystemSubType=subtype
    )
    result = await cim.invoke(await service(cim), "DefineSystem",
                              {"SystemSettings": vssd, "ResourceSettings": []})
    assert result.return_value in (0, 4096), result
    path = result.path("ResultingSystem")
    assert path is not None
    return path


async def system_settings(cim: Cim, vm: ObjectPath) -> CimInstance:
    """The VM's Msvm_VirtualSystemSettingData."""
    (vssd,) = await cim.query(wql.select("Msvm_VirtualSystemSettingData", wql.eq(
        "InstanceID", f"Microsoft:{vm.key('Name')}")))
    return vssd


async def try_define(cim: Cim, name: str, subtype: str,
                     **values: object) -> tuple[int, ObjectPath | None]:
    """DefineSystem of a VM of ``subtype`` with ``values``: (failure code or 0, the VM)."""
    settings = (await cim.spawn("Msvm_VirtualSystemSettingData")).updated(
        {"ElementName": name, "VirtualSystemSubType": subtype, **values})
    result = await cim.invoke(await service(cim), "DefineSystem",
                              {"SystemSettings": settings, "ResourceSettings": []})
    done = await finished(cim, result)
    if result.return_value not in (0, 4096) or (done and done["JobState"] != 7):
        return await failure(cim, result), None
    return 0, result.path("ResultingSystem")


async def try_modify(cim: Cim, settings: CimInstance, **values: object) -> int:
    """ModifySystemSettings of ``settings`` with ``values``: 0 or the failure code."""
    result = await cim.invoke(await service(cim), "ModifySystemSettings",
                              {"SystemSettings": settings.updated(values)})
    done = await finished(cim, result)
    if result.return_value in (0, 4096) and (done is None or done["JobState"] == 7):
        return 0
    return await failure(cim, result)


async def template(cim: Cim, class_name: str, subtype: str | None = None) -> CimInstance:
    condition = wql.ends_with("InstanceID", "\\Default")
    if subtype is not None:
        condition = condition & wql.eq("ResourceSubType", subtype)
    found = await cim.query(wql.select(class_name, condition))
    assert len(found) == 1, found
    return found[0]


async def devices(cim: Cim, vm: ObjectPath, class_name: str = "CIM_ResourceAllocationSettingData"
                  ) -> list[CimInstance]:
    guid = vm.key("Name")
    return await cim.query(wql.select(class_name, wql.starts_with("InstanceID",
                                                                   f"Microsoft:{guid}\\")))


async def add(cim: Cim, vm: ObjectPath, settings: Sequence[CimInstance]) -> MethodResult:
    return await cim.invoke(await service(cim), "AddResourceSettings",
                            {"AffectedConfiguration": vm, "ResourceSettings": list(settings)})


async def ok(cim: Cim, result: MethodResult) -> MethodResult:
    """Assert a call succeeded (synchronously or through a Completed job)."""
    job = await finished(cim, result)
    assert result.return_value in (0, 4096), result
    if job is not None:
        assert job["JobState"] == 7, (job["ErrorCode"], job["ErrorDescription"])
    return result


async def failure(cim: Cim, result: MethodResult) -> int:
    """The failure code of a call: its ReturnValue, or its job's ErrorCode."""
    job = await finished(cim, result)
    if job is None:
        assert result.return_value != 0
        return result.return_value
    assert job["JobState"] == 10, "the job should have ended in Exception"
    return int(job.integer("ErrorCode") or 0)


async def state(cim: Cim, vm: ObjectPath) -> int:
    return int((await cim.get(vm)).integer("EnabledState") or 0)


async def request_state(cim: Cim, vm: ObjectPath, requested: int) -> MethodResult:
    return await cim.invoke(vm, "RequestStateChange", {"RequestedState": requested})


async def running_vm_with_cpus(cim: Cim, name: str, cpus: int) -> ObjectPath:
    """A VM of ``cpus`` virtual processors, started (its processor load is the emulator's)."""
    vm = await define_vm(cim, name)
    processor = (await devices(cim, vm, "Msvm_ProcessorSettingData"))[0]
    await ok(cim, await cim.invoke(await service(cim), "ModifyResourceSettings", {
        "ResourceSettings": [processor.updated(VirtualQuantity=cpus)]}))
    await ok(cim, await request_state(cim, vm, 2))
    return vm


async def vm_names(cim: Cim) -> set[str]:
    """The ElementNames of the host's VMs (not the host itself)."""
    found = await cim.query(wql.select("Msvm_ComputerSystem",
                                       wql.eq("Caption", "Virtual Machine")))
    return {str(vm["ElementName"]) for vm in found}


async def attach_vhdx(cim: Cim, vm: ObjectPath, drive_c: Path, parent: str | None = None,
                      name: str = "root.vhdx") -> Path:
    """A real dynamic VHDX (C:\\disks\\root.vhdx, or ``name``) on IDE 0, slot 0, or a
    differencing one of the disk ``parent`` (a path on drive C); returns the local file."""
    folder = drive_c / "disks"
    folder.mkdir(parents=True, exist_ok=True)
    if parent is None:
        vhd.create(folder / name, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 30)
    else:
        vhd.create(folder / name, vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0,
                   parent=drive_c / parent.removeprefix("C:\\").replace("\\", "/"),
                   parent_locator=parent)
    ide = [d for d in await devices(cim, vm) if d["ResourceSubType"] == IDE]
    controller = next(d.path for d in ide if d["Address"] == "0")
    drive = (await template(cim, "Msvm_ResourceAllocationSettingData", DISK)).updated(
        Parent=str(controller), AddressOnParent="0")
    drive_path = (await ok(cim, await add(cim, vm, [drive]))).paths(
        "ResultingResourceSettings")[0]
    medium = (await template(cim, "Msvm_StorageAllocationSettingData", VHD)).updated(
        Parent=str(drive_path), HostResource=[f"C:\\disks\\{name}"])
    await ok(cim, await add(cim, vm, [medium]))
    return folder / name


class IterationReads:
    """Stored records the emulator went through to answer, by class (lower case).

    ``walked``: those ``Store.instances_of`` and ``Store.keyed_instances_of`` yielded
    (every walk of a whole class, a ``Transaction``'s and a WHERE clause's no index
    answers, goes through them; a transaction's staged records, the call's own, are not
    counted). ``found``: those an index lookup (``Store.lookup``) returned, so a bucket
    holding every VM's records counts as the walk it is. ``per_call`` is their sum: what
    the same call costs each time. ``built``: those an index or tally went through when
    it was first asked for; it is kept up to date from then on, so that is paid once per
    class and index while the emulator runs, not by every call.
    """

    def __init__(self) -> None:
        self.walked: Counter[str] = Counter()
        self.found: Counter[str] = Counter()
        self.built: Counter[str] = Counter()

    @property
    def per_call(self) -> int:
        return self.walked.total() + self.found.total()

    def __repr__(self) -> str:
        return (f"IterationReads(walked={dict(self.walked)}, found={dict(self.found)}, "
                f"built={dict(self.built)})")


@contextlib.contextmanager
def iteration_reads() -> Iterator[IterationReads]:
    """Count the stored records the emulator reads (``IterationReads``) while the block
    runs, on every store and thread."""
    reads = IterationReads()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("instances_of", "keyed_instances_of"):
            patch.setattr(Store, name, _walking(getattr(Store, name), reads.walked))
        patch.setattr(Store, "lookup", _looking(Store.lookup, reads.found))
        patch.setattr(ClassIndexes, "index", _building(ClassIndexes.index, "indexes",
                                                       reads.built))
        patch.setattr(ClassIndexes, "tally", _building(ClassIndexes.tally, "tallies",
                                                       reads.built))
        yield reads


def _walking(method: Callable[..., Iterator[Any]], counts: Counter[str]
             ) -> Callable[..., Iterator[Any]]:
    def counted(store: Store, classes: Iterable[ClassDef]) -> Iterator[Any]:
        for class_def in classes:
            for item in method(store, (class_def,)):
                counts[class_def.name.lower()] += 1
                yield item
    return counted


def _looking(method: Callable[..., list[tuple[str, Record]]], counts: Counter[str]
             ) -> Callable[..., list[tuple[str, Record]]]:
    def counted(store: Store, *args: Any) -> list[tuple[str, Record]]:
        found = method(store, *args)
        counts.update(record.class_def.name.lower() for _, record in found)
        return found
    return counted


def _building(method: Callable[..., Any], kept: str, counts: Counter[str]
              ) -> Callable[..., Any]:
    """``ClassIndexes.index`` or ``tally`` (whose built ones ``kept`` names), counting the
    records it goes through when it builds one."""
    def counted(indexes: ClassIndexes, spec: Any, records: dict[str, Record]) -> Any:
        if spec.name not in getattr(indexes, kept) and records:
            counts[next(iter(records.values())).class_def.name.lower()] += len(records)
        return method(indexes, spec, records)
    return counted
