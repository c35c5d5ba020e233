"""Msvm_VirtualSystemManagementService.GetSummaryInformation: the bulk query.

SettingData null means every VM; otherwise one entry per path, in order, with Name empty
for a path that names no VM. Name is always filled; properties not asked for are null.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from hyperv_agent.cim.api import (
    CimInstance,
    CimProperty,
    CimValue,
    ObjectPath,
    OutValue,
)
from hyperv_agent.emulator import codes, model
from hyperv_agent.emulator.calls import Call, MethodError, handles
from hyperv_agent.emulator.codes import EnabledState, ReturnCode
from hyperv_agent.emulator.host import EmulatedHost
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


#: What a kept summary may hold: values that change only with the VM's record or its
#: settings' (not UpTime, which follows the clock, nor NumberOfProcessors and the memory
#: demand, read from the processor and memory settings a kept summary is not compared with).
_KEEPABLE = frozenset(INFORMATION.values()) - {"UpTime", "NumberOfProcessors",
                                               "MemoryAvailable", "AvailableMemoryBuffer"}


@dataclass(frozen=True)
class _Kept:
    """A summary built from exactly these records (compared by identity: the store
    replaces a record whenever it changes)."""

    vm: Record
    vm_key: str  # the VM's normalised path
    vssd: Record
    wanted: frozenset[str]
    summary: CimInstance


#: Summaries already built, per host and by the identity of the settings record they were
#: built from, so a report of thousands of VMs rebuilds only the summaries of VMs that
#: changed and finds the others without working out whose they are.
_KEPT: weakref.WeakKeyDictionary[EmulatedHost, dict[int, _Kept]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _Every:
    """The summaries of every VM, as built at a revision of the host's store."""

    revision: int
    wanted: frozenset[str]
    found: tuple[CimInstance, ...]


#: The last answer for every VM, per host: asked again with nothing changed on the host
#: (the state report, sent back to back), it is handed out again rather than rebuilt.
_EVERY: weakref.WeakKeyDictionary[EmulatedHost, _Every] = weakref.WeakKeyDictionary()


@handles("Msvm_VirtualSystemManagementService", "GetSummaryInformation")
def get_summary_information(call: Call) -> Mapping[str, OutValue]:
    requested = call.integers("RequestedInformation") or (0,)
    unknown = [i for i in requested if i not in INFORMATION]
    if unknown:
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"unknown RequestedInformation {unknown}", immediate=True)
    facts = _Facts(call, frozenset({INFORMATION[i] for i in requested} | {"Name"}))
    if call.arg("SettingData") is None:
        found = _every_vm(call, facts)
    else:
        found = tuple(facts.of_path(p) for p in call.paths("SettingData"))
    call.host.counters.add("summarized", len(found))
    return {"SummaryInformation": found}


def _every_vm(call: Call, facts: _Facts) -> tuple[CimInstance, ...]:
    """Every VM's summary; the last answer again when the host has not changed since."""
    if facts.kept is None or call.txn.staged:
        return facts.every_vm()
    revision = call.host.store.revision
    last = _EVERY.get(call.host)
    if last is not None and (last.revision, last.wanted) == (revision, facts.wanted):
        return last.found
    found = facts.every_vm()
    if not facts.transient:
        _EVERY[call.host] = _Every(revision, facts.wanted, found)
    return found


class _Facts:
    """Summaries of the VMs asked for: each VM and its settings looked up directly, so k
    VMs cost O(k) whatever the number of VMs on the host; one pass for every VM."""

    def __init__(self, call: Call, wanted: frozenset[str]) -> None:
        self.call = call
        self.wanted = wanted
        self.kept = _KEPT.setdefault(call.host, {}) if wanted <= _KEEPABLE else None
        # a VM changing state shows a state that follows the clock: its summary is not kept
        self.transient = False

    def every_vm(self) -> tuple[CimInstance, ...]:
        found: list[CimInstance] = []
        seen: set[int] = set()
        for vssd in self.call.host.records("Msvm_VirtualSystemSettingData", self.call.txn):
            seen.add(id(vssd))
            kept = self._kept(vssd)
            if kept is not None:
                found.append(kept.summary)
                continue
            guid = model.guid_of(vssd) if vssd["VirtualSystemType"] == codes.REALIZED else None
            if guid:
                found.append(self.summary(vssd, guid, self._vm(guid)))
        if self.kept is not None:  # settings not seen belong to VMs that are gone
            for gone in self.kept.keys() - seen:
                del self.kept[gone]
        return tuple(found)

    def _kept(self, vssd: Record) -> _Kept | None:
        kept = self.kept.get(id(vssd)) if self.kept is not None else None
        if kept is None or kept.vssd is not vssd or kept.wanted != self.wanted:
            return None
        return kept if self.call.txn.get_key(kept.vm_key) is kept.vm else None

    def _vm(self, guid: str) -> Record | None:
        vm = self.call.txn.get(model.vm_path(guid))
        return vm if vm is not None and model.is_vm(vm) else None

    def of_path(self, path: ObjectPath) -> CimInstance:
        vssd = self.call.txn.get(path)
        if vssd is None or vssd.class_def.name != "Msvm_VirtualSystemSettingData":
            return self._instance({"Name": ""})
        kept = self._kept(vssd)
        if kept is not None:
            return kept.summary
        guid = model.guid_of(vssd)
        return self.summary(vssd, guid or "", self._vm(guid) if guid else None)

    def summary(self, vssd: Record, guid: str, vm: Record | None) -> CimInstance:
        if vm is None:
            return self._instance({"Name": ""})
        summary = self._instance(self._values(vssd, vm))
        if model.transition(self.call.host, vm) is not None:
            self.transient = True
        elif self.kept is not None:
            self.kept[id(vssd)] = _Kept(vm, vm.path.normalized, vssd, self.wanted, summary)
        return summary

    def _instance(self, values: Mapping[str, CimValue]) -> CimInstance:
        props = dict(_NULLS)
        for name in self.wanted:
            null = props[name.lower()]
            props[name.lower()] = CimProperty(null.name, null.cim_type, null.is_array,
                                              values.get(name))
        return CimInstance(_SUMMARY.name, props, None, _SUMMARY.namespace)

    def cpus(self, guid: str) -> int:
        return model.virtual_processors(self.call.txn, guid)

    def _memory_demand(self, guid: str, running: bool) -> dict[str, CimValue]:
        """MemoryAvailable and AvailableMemoryBuffer (percent) of a running VM with
        dynamic memory: the guest's steady free share of its memory
        (``model.memory_available``), and that free memory as a share of what the guest
        uses. Null otherwise: Microsoft documents them for dynamic memory only, and the
        emulator leaves them null without it."""
        wanted = {"MemoryAvailable", "AvailableMemoryBuffer"} & set(self.wanted)
        if not wanted or not running or not model.dynamic_memory(self.call.txn, guid):
            return {}
        available = model.memory_available(guid)
        return {"MemoryAvailable": available,
                "AvailableMemoryBuffer": available * 100 // (100 - available)}

    @staticmethod
    def _heartbeat(vm: Record) -> int:
        """No Contact from a guest without integration services, else OK."""
        if vm.meta.get(model.NO_GUEST_SERVICES):
            return codes.Heartbeat.NO_CONTACT
        return codes.Heartbeat.OK

    def _values(self, vssd: Record, vm: Record) -> dict[str, CimValue]:
        guid = str(vm["Name"])
        running = vm["EnabledState"] == EnabledState.ENABLED
        # A paused VM keeps its partition: its memory stays assigned (the host's free
        # memory counts it, ``model.RUNNING_MEMORY``) and its run goes on, while its
        # processors run nothing. Microsoft does not say what the summary of a paused VM
        # holds; this is the choice made here: MemoryUsage and UpTime as while it ran,
        # ProcessorLoad 0. UpTime is documented only as the time "since the virtual
        # machine was last booted" (no unit, no word on pauses): here milliseconds since
        # its run began, paused time included, unlike OnTimeInMilliseconds, which
        # Microsoft says "excludes the time the VM was in the paused state"
        # (``model.on_time_ms``).
        held = model.is_running(vm)
        now = self.call.host.clock()
        notes = vssd["Notes"]
        return {
            "Name": guid, "ElementName": vm["ElementName"], "CreationTime": vssd["CreationTime"],
            "Notes": "\n".join(str(n) for n in notes) if isinstance(notes, tuple) else None,
            "NumberOfProcessors": self.cpus(guid) if "NumberOfProcessors" in self.wanted else 0,
            "EnabledState": model.enabled_state(self.call.host, vm),
            "HealthState": vm["HealthState"],
            "OperationalStatus": model.operational_status(self.call.host, self.call.txn, vm,
                                                          now),
            "Version": vssd["Version"],
            "ProcessorLoad": model.processor_load(guid) if running else 0,
            "ProcessorLoadHistory": (model.processor_load(guid),) * 10 if running else (),
            "MemoryUsage": int(vm.meta.get("memory_mb", 0)) if held else 0,
            **self._memory_demand(guid, running),
            "Heartbeat": self._heartbeat(vm) if running else None,
            "UpTime": int((now - float(vm.meta.get("started_at", now))) * 1000) if held else 0,
            "GuestOperatingSystem": "Linux" if running else None, "ThumbnailImage": (),
            "Shielded": False,
            "VirtualSystemSubType": vssd["VirtualSystemSubType"], "SwapFilesInUse": False,
        }
