"""Msvm_VirtualSystemManagementService.GetSummaryInformation: the bulk query.

SettingData null means every VM; otherwise one entry per path, in order, with Name empty
for a path that names no VM. Name is always filled; properties not asked for are null.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from hyperv_agent.cim.api import CimInstance, CimProperty, CimValue, ObjectPath, OutValue
from hyperv_agent.emulator import codes, model
from hyperv_agent.emulator.calls import Call, MethodError, handles
from hyperv_agent.emulator.codes import EnabledState, ReturnCode
from hyperv_agent.emulator.schema import CLASSES
from hyperv_agent.emulator.store import Record

#: RequestedInformation id -> Msvm_SummaryInformation property.
INFORMATION: Mapping[int, str] = {
    0: "Name", 1: "ElementName", 2: "CreationTime", 3: "Notes", 4: "NumberOfProcessors",
    5: "ThumbnailImage", 6: "ThumbnailImage", 7: "ThumbnailImage", 8: "AllocatedGPU",
    10: "Version", 11: "Shielded", 100: "EnabledState", 101: "ProcessorLoad",
    102: "ProcessorLoadHistory", 103: "MemoryUsage", 104: "Heartbeat", 105: "UpTime",
    106: "GuestOperatingSystem",
    109: "HealthState", 110: "OperationalStatus", 111: "StatusDescriptions",
    112: "MemoryAvailable", 113: "AvailableMemoryBuffer", 120: "SwapFilesInUse",
    132: "OtherEnabledState",
}
_SUMMARY = CLASSES["Msvm_SummaryInformation"]
#: Every property null: the answer for what was not asked (shared, instances are immutable).
_NULLS = {key: CimProperty(p.name, p.cim_type, p.is_array, None)
          for key, p in _SUMMARY.properties.items()}


@handles("Msvm_VirtualSystemManagementService", "GetSummaryInformation")
def get_summary_information(call: Call) -> Mapping[str, OutValue]:
    requested = call.integers("RequestedInformation") or (0,)
    unknown = [i for i in requested if i not in INFORMATION]
    if unknown:
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"unknown RequestedInformation {unknown}", immediate=True)
    wanted = {INFORMATION[i] for i in requested} | {"Name"}
    facts = _Facts(call)
    paths = call.paths("SettingData") if call.arg("SettingData") is not None else None
    vssds = facts.all_vssds() if paths is None else [facts.vssd(p) for p in paths]
    return {"SummaryInformation": tuple(facts.summary(v, wanted) for v in vssds)}


class _Facts:
    """One pass over processors, memory and VMs, so N VMs cost O(N), not O(N²)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.cpus: dict[str, int] = {}
        for record in call.host.records("Msvm_ProcessorSettingData", call.txn):
            guid = model.guid_of(record)
            if guid:
                self.cpus[guid.lower()] = record.integer("VirtualQuantity")
        self.vms = {str(vm["Name"]).lower(): vm
                    for vm in call.host.records("Msvm_ComputerSystem", call.txn)
                    if model.is_vm(vm)}

    def all_vssds(self) -> list[Record | None]:
        return [
            v for v in self.call.host.records("Msvm_VirtualSystemSettingData", self.call.txn)
            if v["VirtualSystemType"] == codes.REALIZED and model.guid_of(v)
        ]

    def vssd(self, path: ObjectPath) -> Record | None:
        record = self.call.txn.get(path)
        ok = record is not None and record.class_def.name == "Msvm_VirtualSystemSettingData"
        return record if ok else None

    def summary(self, vssd: Record | None, wanted: set[str]) -> CimInstance:
        guid = model.guid_of(vssd) if vssd is not None else None
        vm = self.vms.get(guid.lower()) if guid else None
        values = self._values(vssd, vm) if vssd is not None and vm is not None else {"Name": ""}
        props = dict(_NULLS)
        for name in wanted:
            null = props[name.lower()]
            props[name.lower()] = CimProperty(null.name, null.cim_type, null.is_array,
                                              values.get(name))
        return CimInstance(_SUMMARY.name, props, None, _SUMMARY.namespace)

    def _values(self, vssd: Record, vm: Record) -> dict[str, CimValue]:
        guid = str(vm["Name"])
        running = vm["EnabledState"] == EnabledState.ENABLED
        now = self.call.host.clock()
        notes = vssd["Notes"]
        return {
            "Name": guid, "ElementName": vm["ElementName"], "CreationTime": vssd["CreationTime"],
            "Notes": "\n".join(str(n) for n in notes) if isinstance(notes, tuple) else None,
            "NumberOfProcessors": self.cpus.get(guid.lower(), 0),
            "EnabledState": vm["EnabledState"], "HealthState": vm["HealthState"],
            "OperationalStatus": vm["OperationalStatus"], "Version": vssd["Version"],
            "ProcessorLoad": _load(guid) if running else 0,
            "ProcessorLoadHistory": (_load(guid),) * 10 if running else (),
            "MemoryUsage": int(vm.meta.get("memory_mb", 0)) if running else 0,
            "Heartbeat": codes.Heartbeat.OK if running else None,
            "UpTime": int((now - float(vm.meta.get("started_at", now))) * 1000) if running else 0,
            "GuestOperatingSystem": "Linux" if running else None, "ThumbnailImage": (),
            "Shielded": False,
            "VirtualSystemSubType": vssd["VirtualSystemSubType"], "SwapFilesInUse": False,
        }


def _load(guid: str) -> int:
    """A steady, VM-specific CPU load for running VMs (1..30 %)."""
    return 1 + zlib.crc32(guid.encode()) % 30
