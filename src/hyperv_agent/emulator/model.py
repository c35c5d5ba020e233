"""Shared facts about VMs in the store: identities, device lists, power state, views.

These follow the identity rules Hyper-V documents: a VM's ``Msvm_ComputerSystem.Name``
is its GUID, its current settings are ``Microsoft:<GUID>``, and every device setting's
InstanceID starts with ``Microsoft:<GUID>\\``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from hyperv_agent.cim.api import CIMV2_NAMESPACE, V2_NAMESPACE, CimValue, ObjectPath
from hyperv_agent.emulator import codes
from hyperv_agent.emulator.codes import EnabledState
from hyperv_agent.emulator.host import (
    HYPERVISOR_LP_COUNTERS,
    HYPERVISOR_LP_RAW,
    NIC_RECEIVE_BPS,
    NIC_SEND_BPS,
    EmulatedHost,
    cim_datetime,
)
from hyperv_agent.emulator.indexes import IndexSpec, TallySpec
from hyperv_agent.emulator.jobs import active_jobs, holding, is_job, job_view
from hyperv_agent.emulator.offer import ARRIVAL
from hyperv_agent.emulator.paths import HostPaths
from hyperv_agent.emulator.schema import CLASSES, ClassDef, concrete_classes
from hyperv_agent.emulator.store import Probe, Record, Transaction

RASD_BASE = "CIM_ResourceAllocationSettingData"
FEATURE_BASE = "Msvm_EthernetSwitchPortFeatureSettingData"


def vm_path(guid: str) -> ObjectPath:
    return ObjectPath.for_keys(
        "Msvm_ComputerSystem", CreationClassName="Msvm_ComputerSystem", Name=guid
    )


def vssd_path(guid: str) -> ObjectPath:
    return ObjectPath.for_keys("Msvm_VirtualSystemSettingData", InstanceID=f"Microsoft:{guid}")


def is_vm(record: Record) -> bool:
    return (record.class_def.name == "Msvm_ComputerSystem"
            and record.values.get("Caption") == codes.CAPTION_VM)


def guid_of_instance_id(instance_id: str) -> str | None:
    """The VM GUID in ``Microsoft:<GUID>[\\…]`` (or a guest network adapter's
    ``Microsoft:GuestNetwork\\<GUID>\\…``); None for templates and host objects."""
    prefix, _, rest = instance_id.partition(":")
    if prefix.lower() != "microsoft":
        return None
    head, _, tail = rest.partition("\\")
    if head.lower() == GUEST_NETWORK_PREFIX.lower():
        return tail.partition("\\")[0] or None
    return None if head.lower() == "definition" else head


def guid_of(record: Record) -> str | None:
    """The VM a record belongs to (a VM, its settings, devices or runtime components)."""
    values = record.values
    if is_vm(record):
        return str(values.get("Name"))
    instance_id = values.get("InstanceID")
    if isinstance(instance_id, str):
        return guid_of_instance_id(instance_id)
    system_name = values.get("SystemName")
    return str(system_name) if isinstance(system_name, str) else None


def _owner_keys(record: Record) -> tuple[str, ...]:
    guid = guid_of(record)
    return (guid.lower(),) if guid else ()


#: Records by the VM they belong to (``guid_of``, lower case), so what one VM owns is
#: found without walking the host: one index across every class, so the settings of a
#: VM's devices, of several classes, are one probe.
OWNER = IndexSpec("owner", _owner_keys, across=True)


def owner_probe(class_def: ClassDef, name: str, prefix: str) -> Probe | None:
    """(OWNER, the VM) for records of ``class_def`` whose property ``name`` begins with
    ``prefix`` (folded, up to and with a backslash), when the prefix names that VM whole:
    an InstanceID ``Microsoft:<GUID>\\…`` or ``Microsoft:GuestNetwork\\<GUID>\\…`` is the
    VM's (``guid_of``). A VM's own record is told by its Name instead: never for VMs."""
    if (name.lower() != "instanceid" or class_def.name == "Msvm_ComputerSystem"
            or not prefix.isascii()):  # folded as the owner index lowers it
        return None
    guid = guid_of_instance_id(prefix)  # whole: the prefix ends with a backslash
    return (OWNER, guid.lower()) if guid else None


def owned_records(txn: Transaction, classes: tuple[ClassDef, ...], guid: str) -> list[Record]:
    """The records of ``classes`` that belong to the VM ``guid``."""
    return txn.lookup(classes, OWNER, guid.lower())


def device_records(txn: Transaction, guid: str) -> Iterator[Record]:
    """Every resource setting (processor, memory, controllers, drives, media, NICs, ports)."""
    prefix = f"microsoft:{guid.lower()}\\"
    for record in owned_records(txn, concrete_classes(RASD_BASE, V2_NAMESPACE), guid):
        instance_id = record["InstanceID"]
        if isinstance(instance_id, str) and instance_id.lower().startswith(prefix):
            yield record


def feature_records(txn: Transaction, port: Record) -> Iterator[Record]:
    """The port features under ``port`` (their InstanceIDs extend the port's)."""
    prefix = f"{str(port['InstanceID']).lower()}\\"
    classes = concrete_classes(FEATURE_BASE, V2_NAMESPACE)
    guid = guid_of_instance_id(str(port["InstanceID"]))
    candidates = txn.instances_of(classes) if guid is None else owned_records(txn, classes, guid)
    for record in candidates:
        if str(record["InstanceID"]).lower().startswith(prefix):
            yield record


def features_under(txn: Transaction, guid: str, records: Iterable[Record]) -> list[Record]:
    """The port features under any of the VM ``guid``'s ``records`` (``feature_records``
    of each), the VM's features read once, not once per record."""
    prefixes = tuple(f"{str(record['InstanceID']).lower()}\\" for record in records)
    if not prefixes:
        return []
    classes = concrete_classes(FEATURE_BASE, V2_NAMESPACE)
    return [record for record in owned_records(txn, classes, guid)
            if str(record["InstanceID"]).lower().startswith(prefixes)]


GUEST_NETWORK = "Msvm_GuestNetworkAdapterConfiguration"
#: The head of a guest network adapter's InstanceID: ``Microsoft:GuestNetwork\\<VM GUID>\\
#: <adapter>``, where ``Microsoft:<VM GUID>\\<adapter>`` is its synthetic NIC's InstanceID (as
#: Hyper-V names them: Get-VMNetworkAdapter's Id is the NIC's, and tools that read the
#: guest's addresses turn one into the other).
GUEST_NETWORK_PREFIX = "GuestNetwork"


def guest_network_id(nic: Record) -> str:
    """The Msvm_GuestNetworkAdapterConfiguration InstanceID of the synthetic NIC ``nic``."""
    _, _, rest = str(nic["InstanceID"]).partition(":")
    return f"Microsoft:{GUEST_NETWORK_PREFIX}\\{rest}"


def guest_network_path(nic: Record) -> ObjectPath:
    """The Msvm_GuestNetworkAdapterConfiguration path of the synthetic NIC ``nic``."""
    return ObjectPath.for_keys(GUEST_NETWORK, V2_NAMESPACE, InstanceID=guest_network_id(nic))


def nic_of_guest_network(record: Record) -> ObjectPath:
    """The path of the synthetic NIC a guest network adapter configuration is about."""
    _, _, adapter = str(record["InstanceID"]).partition(f"{GUEST_NETWORK_PREFIX}\\")
    return ObjectPath.for_keys("Msvm_SyntheticEthernetPortSettingData", V2_NAMESPACE,
                               InstanceID=f"Microsoft:{adapter}")


def guest_network_record(host: EmulatedHost, nic: Record) -> Record:
    """The guest network adapter configuration of the synthetic NIC ``nic`` of a running
    VM, as the VM's start (or the NIC's hot-add) makes it: nothing reported yet
    (ProtocolIFType 0, Unknown, and no addresses); what the guest reports is laid over it
    (``computed``). Hyper-V keeps one per network adapter while the VM runs; that it keeps
    none for a VM that is off is the emulator's choice (Microsoft does not say), and the
    agent reads both shapes alike (no instance, or one with no address)."""
    return host.new_record(GUEST_NETWORK, InstanceID=guest_network_id(nic))


def guest_network_records(txn: Transaction, guid: str) -> list[Record]:
    """The guest network adapter configurations of the VM ``guid`` (while it runs)."""
    return owned_records(txn, (CLASSES[GUEST_NETWORK],), guid)


def add_guest_networks(host: EmulatedHost, txn: Transaction) -> None:
    """Stage, for each running or paused VM without them (one an earlier version
    started), the guest network adapter configurations of its synthetic NICs."""
    for vm in list(txn.instances_of(concrete_classes("Msvm_ComputerSystem", V2_NAMESPACE))):
        guid = str(vm["Name"])
        if is_vm(vm) and is_running(vm) and not guest_network_records(txn, guid):
            for nic in device_records(txn, guid):
                if nic.class_def.name == "Msvm_SyntheticEthernetPortSettingData":
                    txn.put(guest_network_record(host, nic))


def runtime_records(txn: Transaction, guid: str) -> Iterator[Record]:
    """The VM's runtime integration components (present only while it runs)."""
    classes = (CLASSES["Msvm_KvpExchangeComponent"], CLASSES["Msvm_ShutdownComponent"])
    for record in owned_records(txn, classes, guid):
        if str(record["SystemName"]).lower() == guid.lower():
            yield record


def _medium_file_keys(record: Record) -> tuple[str, ...]:
    resources = record["HostResource"]
    if not isinstance(resources, tuple) or not resources:
        return ()
    return (HostPaths.identity(str(resources[0])),)


#: Storage settings by the file they hold (``HostPaths.identity`` of HostResource[0]).
MEDIUM_FILE = IndexSpec("medium-file", _medium_file_keys)


def media_of_file(txn: Transaction, path: str) -> list[Record]:
    """Every Msvm_StorageAllocationSettingData whose HostResource names the file ``path``."""
    classes = concrete_classes("Msvm_StorageAllocationSettingData", V2_NAMESPACE)
    return txn.lookup(classes, MEDIUM_FILE, HostPaths.identity(path))


#: Hidden state of a disk medium: the identities of its disk's parents (a differencing
#: disk's chain), read from the file's headers when the medium was set.
MEDIUM_PARENTS = "parents"


def _medium_parent_keys(record: Record) -> tuple[str, ...]:
    return tuple(record.meta.get(MEDIUM_PARENTS, ()))


#: Storage settings by the parents of the disk they hold.
MEDIUM_PARENT = IndexSpec("medium-parent", _medium_parent_keys)


def media_over_file(txn: Transaction, path: str) -> list[Record]:
    """Every Msvm_StorageAllocationSettingData whose disk has the file ``path`` among its
    parents."""
    classes = concrete_classes("Msvm_StorageAllocationSettingData", V2_NAMESPACE)
    return txn.lookup(classes, MEDIUM_PARENT, HostPaths.identity(path))


def is_running(vm: Record) -> bool:
    return vm["EnabledState"] in (EnabledState.ENABLED, EnabledState.QUIESCE)


#: Hidden state of the host's own Msvm_ComputerSystem: the process id it gave last
#: (``new_process_id``).
LAST_PROCESS_ID = "last_process_id"
#: Hidden state of a VM that ran: the process id of its last run's worker process.
PREVIOUS_PROCESS_ID = "previous_process_id"
#: The highest process id the emulator gives; after it, the count starts again at
#: ``codes.FIRST_PROCESS_ID``. Windows gives process ids in multiples of 4 and does not
#: say which it hands out next: counting up, and this bound, are the emulator's choice.
MAX_PROCESS_ID = 65532
_PROCESS_ID_STEP = 4


def _process_keys(record: Record) -> tuple[int, ...]:
    process = record.values.get("ProcessID")
    return (process,) if is_vm(record) and isinstance(process, int) else ()


#: VMs by the process id of their worker process (while it runs).
PROCESS = IndexSpec("process-id", _process_keys)


def new_process_id(host: EmulatedHost, txn: Transaction, vm: Record | None = None) -> int:
    """The id of a process ``host`` starts: a Win32_Process (Create), or the worker
    process (vmwp.exe) the VM ``vm`` runs in. Microsoft documents
    Msvm_ComputerSystem.ProcessID as the id of the process the VM runs under, which "can
    be used to uniquely identify the instance of Vmwp.exe": the id is one no other VM's
    worker process nor Win32_Process of the host holds, and not the one of ``vm``'s
    previous run. The host counts them in its own record (``LAST_PROCESS_ID``), kept in
    the store, so a host opened again goes on from where it was."""
    record = txn.edit(host.host_path())
    assert record is not None  # the host's first boot made it
    systems = concrete_classes("Msvm_ComputerSystem", V2_NAMESPACE)
    guid = str(vm["Name"]).lower() if vm is not None else None
    previous = vm.meta.get(PREVIOUS_PROCESS_ID) if vm is not None else None
    taken = {p.integer("ProcessId") for p in txn.instances_of(
        concrete_classes("Win32_Process", CIMV2_NAMESPACE))}
    candidate = int(record.meta.get(LAST_PROCESS_ID, codes.FIRST_PROCESS_ID))
    for _ in range((MAX_PROCESS_ID - codes.FIRST_PROCESS_ID) // _PROCESS_ID_STEP):
        candidate += _PROCESS_ID_STEP
        if candidate > MAX_PROCESS_ID:
            candidate = codes.FIRST_PROCESS_ID + _PROCESS_ID_STEP
        if candidate == previous or candidate in taken or any(
                str(other["Name"]).lower() != guid
                for other in txn.lookup(systems, PROCESS, candidate)):
            continue
        record.meta[LAST_PROCESS_ID] = candidate
        return candidate
    raise RuntimeError(f"every process id of {host.name} is taken")


#: ``Record.meta`` key of a VM whose state change is under way: [the transitional
#: EnabledState shown, the RequestedState asked for, the clock time the change ends].
#: The stored EnabledState is already the state the change ends in.
TRANSITION = "transition"


def transition(host: EmulatedHost, vm: Record) -> int | None:
    """The transitional EnabledState the VM shows while its RequestStateChange job runs
    (Starting, Stopping, Saving, Pausing, Resuming); None when no change is under way."""
    entry = vm.meta.get(TRANSITION)
    if not isinstance(entry, list) or host.clock() >= float(entry[2]):
        return None
    return int(entry[0])


def enabled_state(host: EmulatedHost, vm: Record) -> int | None:
    """The EnabledState Hyper-V shows for the VM now: its transitional state while a
    state change runs, else the stored one."""
    shown = transition(host, vm)
    return shown if shown is not None else vm.integer("EnabledState")


def _running_memory(record: Record) -> int:
    # A running VM holds the memory it started with (its VirtualQuantity, the startup
    # memory), static or dynamic: the emulator models no guest whose demand would make
    # Hyper-V add memory to a dynamic VM up to its Limit or take it back down to its
    # Reservation, so a dynamic VM keeps its startup memory for the whole run.
    return int(record.meta.get("memory_mb", 0)) if is_vm(record) and is_running(record) else 0


#: Memory held by running or paused VMs, kept as VMs change rather than summed each time.
RUNNING_MEMORY = TallySpec("running-memory", _running_memory)


def processor_load(guid: str) -> int:
    """The steady CPU load (1..30 %) of the running VM ``guid`` over its virtual
    processors: its ProcessorLoad in GetSummaryInformation."""
    return 1 + zlib.crc32(guid.encode()) % 30


def memory_available(guid: str) -> int:
    """The steady share (20..59 %) of its memory the guest of the running VM ``guid``
    has free: its MemoryAvailable in GetSummaryInformation under dynamic memory."""
    return 20 + zlib.crc32(f"memory:{guid}".encode()) % 40


def dynamic_memory(txn: Transaction, guid: str) -> bool:
    """Whether the VM has dynamic memory (its Msvm_MemorySettingData.DynamicMemoryEnabled)."""
    found = owned_records(txn, concrete_classes("Msvm_MemorySettingData", V2_NAMESPACE), guid)
    return bool(found[-1]["DynamicMemoryEnabled"]) if found else False


def virtual_processors(txn: Transaction, guid: str) -> int:
    """The VM's virtual processor count (its Msvm_ProcessorSettingData.VirtualQuantity)."""
    found = owned_records(txn, concrete_classes("Msvm_ProcessorSettingData", V2_NAMESPACE),
                          guid)
    return found[-1].integer("VirtualQuantity") if found else 0


#: Hidden state of a running VM: the virtual processors it started with (Hyper-V fixes
#: the count while the VM runs).
RUNNING_CPUS = "cpus"
#: Hidden state of a running VM: set when its guest runs without integration services
#: (``Faults.lack_integration_services`` when it started).
NO_GUEST_SERVICES = "no-guest-services"


def remember_running_cpus(txn: Transaction) -> None:
    """Stage, for each running or paused VM whose record does not keep the virtual
    processors it started with (one stored by an earlier version), its current count:
    Hyper-V does not let the count change while the VM runs, so it is the one the VM
    started with."""
    for vm in list(txn.instances_of(concrete_classes("Msvm_ComputerSystem", V2_NAMESPACE))):
        if is_vm(vm) and is_running(vm) and RUNNING_CPUS not in vm.meta:
            staged = txn.edit(vm.path)
            assert staged is not None
            staged.meta[RUNNING_CPUS] = virtual_processors(txn, str(vm["Name"]))


def _busy_processors(record: Record) -> int:
    """Hundredths of a logical processor a VM keeps busy: its load times its virtual
    processors while it runs (a paused VM runs no code)."""
    if not is_vm(record) or record["EnabledState"] != EnabledState.ENABLED:
        return 0
    return processor_load(str(record["Name"])) * int(record.meta.get(RUNNING_CPUS, 0))


#: Hundredths of logical processors running VMs keep busy, kept as VMs change.
BUSY_PROCESSORS = TallySpec("busy-processors", _busy_processors)


def busy_processors(host: EmulatedHost, txn: Transaction) -> int:
    """Hundredths of the host's logical processors the running VMs keep busy, at most all
    of them. The management OS is idle (its own processor counters read 100 % idle)."""
    busy = txn.tally(concrete_classes("Msvm_ComputerSystem", V2_NAMESPACE), BUSY_PROCESSORS)
    return min(100 * host.logical_processors, busy)


def hypervisor_run_time(host: EmulatedHost, txn: Transaction) -> int:
    """The hypervisor's "% Total Run Time" of all the host's logical processors (the
    ``_Total`` instance of "Hyper-V Hypervisor Logical Processor"): the share of them
    the running VMs keep busy (``busy_processors``), in whole percent."""
    return round(busy_processors(host, txn) / host.logical_processors)


def generation(vssd: Record) -> int:
    return 2 if vssd["VirtualSystemSubType"] == codes.GENERATION_2 else 1


def running_memory_mb(host: EmulatedHost, txn: Transaction) -> int:
    """Memory held by VMs that are running or paused."""
    return txn.tally(concrete_classes("Msvm_ComputerSystem", V2_NAMESPACE), RUNNING_MEMORY)


def counter_instance(host: EmulatedHost, txn: Transaction, class_name: str, name: str,
                     vm: Record, device: Record, zeros: Iterable[str]) -> Record:
    """The performance counter instance ``name`` of ``class_name`` (in root\\cimv2) that
    counts for ``device`` (a disk medium or a network adapter) of ``vm`` in its current
    run, staged in ``txn`` for the caller to add to: the one there (``present``), or a new
    one with the counters ``zeros`` at 0."""
    record = txn.edit(ObjectPath.for_keys(class_name, CIMV2_NAMESPACE, Name=name))
    if record is None or not present(txn, record):
        record = host.new_record(class_name, Name=name, **dict.fromkeys(zeros, 0))
        txn.put(record)
    record.meta.update({"vm": str(vm["Name"]), "run": vm.meta.get("started_at"),
                        ARRIVAL: vm.meta.get(ARRIVAL), "device": str(device.path)})
    return record


def present(txn: Transaction, record: Record) -> bool:
    """Whether a performance counter instance made by ``counter_instance`` is there: Windows
    keeps the instance of a VM's disk or network adapter while the VM runs (or is paused)
    with the device attached, and drops it when the VM stops or the device is removed.
    The instances live in the VM's worker process on the host it runs on, so they are
    also gone when the VM leaves for another host, and a VM that comes back (its run, and
    its uptime, going on) counts from 0 again: an instance belongs to one run of the VM
    and to the migration that brought the VM to this host (``ARRIVAL``), if any. Any
    other record is there."""
    device = record.meta.get("device")
    if not isinstance(device, str):
        return True
    vm = txn.get(vm_path(str(record.meta.get("vm"))))
    if vm is None or not is_running(vm) or vm.meta.get("started_at") != record.meta.get("run"):
        return False
    if vm.meta.get(ARRIVAL) != record.meta.get(ARRIVAL):
        return False
    return txn.get(ObjectPath.parse(device)) is not None


#: Classes whose instances a query lists by a key property, not in the order they were
#: made, and that property. Microsoft documents no order of enumeration; Windows' CIMWin32
#: provider lists network adapters by Index, ascending, and the emulator does so (its
#: choice where Microsoft is silent). Other classes keep the order their records were
#: first stored.
_LISTED_BY = {"win32_networkadapterconfiguration": "Index"}


def in_listing_order(classes: Sequence[ClassDef], records: list[Record]) -> list[Record]:
    """``records``, as a query of ``classes`` found them, in the order Windows lists them
    (``_LISTED_BY``): the records of such a class sorted among their own places, the
    others left where they are. A query of no such class costs nothing more."""
    if not any(class_def.name.lower() in _LISTED_BY for class_def in classes):
        return records
    places: dict[str, list[int]] = {}
    for place, record in enumerate(records):
        name = record.class_def.name.lower()
        if name in _LISTED_BY:
            places.setdefault(name, []).append(place)
    if not places:
        return records
    ordered = list(records)
    for name, taken in places.items():
        key = _LISTED_BY[name]
        listed = sorted((records[place] for place in taken), key=lambda r: r.integer(key))
        for place, record in zip(taken, listed, strict=True):
            ordered[place] = record
    return ordered


_COMPUTED_CLASSES = ("Win32_PerfRawData_Tcpip_NetworkInterface", "Win32_OperatingSystem",
                     HYPERVISOR_LP_COUNTERS, HYPERVISOR_LP_RAW)


def seen_as_stored(class_def: ClassDef, name: str) -> bool:
    """Whether a query sees property ``name`` of ``class_def`` as stored, so an index of
    stored values answers for it: ``computed`` lays nothing over it."""
    if class_def.name == "Msvm_ConcreteJob" or "CIM_ConcreteJob" in class_def.ancestors:
        return False
    if class_def.name in _COMPUTED_CLASSES:
        return False
    if class_def.name == GUEST_NETWORK:  # what the guest reports is laid over it
        return name.lower() == "instanceid"
    return not (class_def.name == "Msvm_ComputerSystem" and name.lower() in (
        "ontimeinmilliseconds", "enabledstate", "requestedstate"))


def computed(host: EmulatedHost, txn: Transaction, record: Record) -> dict[str, CimValue]:
    """Clock- and state-dependent property values laid over a stored record."""
    now = host.clock()
    if is_job(record):
        return job_view(record, now)
    if is_vm(record):
        return _vm_view(host, txn, record, now)
    if record.class_def.name == GUEST_NETWORK:
        return _guest_reported(host, txn, record)
    if record.class_def.name == "Win32_PerfRawData_Tcpip_NetworkInterface":
        seconds = max(0.0, now - float(record.meta.get("since", now)))
        received = int(seconds * float(record.meta.get("receive_bps", NIC_RECEIVE_BPS)))
        sent = int(seconds * float(record.meta.get("send_bps", NIC_SEND_BPS)))
        return {"BytesReceivedPersec": received, "BytesSentPersec": sent,
                "BytesTotalPersec": received + sent}
    if record.class_def.name == "Win32_OperatingSystem":
        used_kb = running_memory_mb(host, txn) * 1024
        total_kb = record.integer("TotalVisibleMemorySize")
        return {"FreePhysicalMemory": max(0, total_kb - used_kb),
                "LocalDateTime": cim_datetime(now)}
    if record.class_def.name == HYPERVISOR_LP_COUNTERS:
        run = hypervisor_run_time(host, txn)
        return {"PercentTotalRunTime": run, "PercentGuestRunTime": run,
                "PercentHypervisorRunTime": 0, "PercentIdleTime": 100 - run}
    if record.class_def.name == HYPERVISOR_LP_RAW:
        run_100ns, idle_100ns, at_100ns = host.run_time_100ns(busy_processors(host, txn))
        return {"PercentTotalRunTime": run_100ns, "PercentGuestRunTime": run_100ns,
                "PercentHypervisorRunTime": 0, "PercentIdleTime": idle_100ns,
                "Timestamp_Sys100NS": at_100ns}
    if record.class_def.name == "Msvm_VirtualSystemMigrationService":
        return {"ActiveVirtualSystemMigrationCount": active_jobs(
                    host, txn, LIVE_MOVE_SLOTS, now),
                "ActiveStorageMigrationCount": active_jobs(
                    host, txn, "MaximumActiveStorageMigration", now)}
    return {}


#: Hidden state of a running or paused VM: the seconds it spent paused in its current run
#: (pauses that ended).
PAUSED_S = "paused_s"
#: Hidden state of a paused VM: the clock time its pause began.
PAUSED_AT = "paused_at"


def on_time_ms(vm: Record, now: float) -> int:
    """The VM's Msvm_ComputerSystem.OnTimeInMilliseconds at ``now``: Microsoft's "time
    since the VM was last turned on, reset, or restored", which "excludes the time the VM
    was in the paused state" (the time since its run began, ``started_at``, less the
    pauses of that run, the one under way included); 0 when it is not running or paused."""
    if not is_running(vm):
        return 0
    started = float(vm.meta.get("started_at", now))
    paused = float(vm.meta.get(PAUSED_S, 0.0))
    paused_at = vm.meta.get(PAUSED_AT)
    if paused_at is not None:
        paused += max(0.0, now - float(paused_at))
    return max(0, int((now - started - paused) * 1000))


def pause(vm: Record, now: float) -> None:
    """Note on the (staged) ``vm`` that its pause begins at ``now``."""
    vm.meta[PAUSED_AT] = now


def resume(vm: Record, now: float) -> None:
    """Note on the (staged) ``vm`` that its pause ends at ``now``: its length joins the
    run's paused time."""
    paused_at = vm.meta.pop(PAUSED_AT, None)
    if paused_at is not None:
        total = float(vm.meta.get(PAUSED_S, 0.0)) + max(0.0, now - float(paused_at))
        vm.meta[PAUSED_S] = total


#: Hidden state of a running, paused or saved VM: the requests its guest accepted through
#: its shutdown component (a shutdown or a restart, ``power._ask_guest``) and has not
#: carried out yet, each [token, action, seconds of the guest's own time it still needs,
#: the clock time it last resumed work on it, or None while the guest is frozen]. A live
#: move carries them with the VM's other hidden state; a new boot drops them (``new_run``),
#: as does a turn off (``drop_guest_requests``): the guest that accepted them is gone.
GUEST_REQUESTS = "guest_requests"
#: Hidden state of a VM whose guest was asked: the last token given to a request, so that
#: a timer armed for a request that is gone, or was frozen and armed again, finds none.
_GUEST_REQUEST_SEQ = "guest_request_seq"


def new_run(vm: Record, now: float, *, boots: bool = True) -> None:
    """Note on the (staged) ``vm`` that a run begins at ``now`` (a start, a restore, a
    reset or a guest's restart), with no time paused yet. Its guest boots (``boots``),
    knowing nothing of its last boot's requests (``GUEST_REQUESTS``), unless the run is
    restored from a saved state, whose guest goes on from where it was saved
    (``thaw_guest``)."""
    vm.meta["started_at"] = now
    vm.meta.pop(PAUSED_S, None)
    vm.meta.pop(PAUSED_AT, None)
    if boots:
        drop_guest_requests(vm)


def ask_guest(vm: Record, action: str, delay_s: float, now: float) -> int:
    """Note on the (staged), running ``vm`` that its guest accepted ``action``, which
    takes it ``delay_s`` from ``now``; the token a timer for it is armed with."""
    token = _next_guest_token(vm)
    vm.meta[GUEST_REQUESTS] = [*_guest_requests(vm), [token, action, delay_s, now]]
    return token


def _next_guest_token(vm: Record) -> int:
    """A token no request of the (staged) ``vm`` has had (``_GUEST_REQUEST_SEQ``)."""
    token = int(vm.meta.get(_GUEST_REQUEST_SEQ, 0)) + 1
    vm.meta[_GUEST_REQUEST_SEQ] = token
    return token


def guest_request_due(vm: Record, token: int) -> str | None:
    """The action of the (staged) ``vm``'s request armed with ``token``, taken off its
    requests: its guest carries it out now; None if no request is armed with it (it was
    dropped, or frozen and armed again with another token)."""
    requests = _guest_requests(vm)
    for request in requests:
        if request[0] == token and request[3] is not None:
            requests.remove(request)
            vm.meta[GUEST_REQUESTS] = requests
            return str(request[1])
    return None


def freeze_guest(vm: Record, now: float) -> None:
    """Note on the (staged) ``vm`` that its guest is frozen at ``now`` (the VM paused or
    saved): each request it is carrying out keeps the time it still needs, and the timer
    armed for it finds none when it fires (the guest does nothing while frozen). A
    guest already frozen (a paused VM saved) stays as it was."""
    requests = _guest_requests(vm)
    for request in requests:
        if request[3] is not None:
            request[2] = _guest_time_left(request, now)
            request[0], request[3] = None, None
    if requests:
        vm.meta[GUEST_REQUESTS] = requests


def thaw_guest(vm: Record, now: float) -> None:
    """Note on the (staged) ``vm`` that its frozen guest runs again from ``now`` (the VM
    resumed, or restored from its saved state): each request goes on, with the time it
    still needed when frozen counted from ``now``, under a new token (``guest_timers``).
    Microsoft does not say when a guest frozen in the middle of a shutdown carries it
    out once it runs again; needing the rest of its own time, as a guest that was never
    frozen would have, is the emulator's choice."""
    requests = _guest_requests(vm)
    frozen = [request for request in requests if request[3] is None]
    for request in frozen:
        request[0], request[3] = _next_guest_token(vm), now
    if frozen:
        vm.meta[GUEST_REQUESTS] = requests


def guest_timers(vm: Record, now: float) -> list[tuple[int, float]]:
    """The timers a (running) ``vm``'s guest needs at ``now``: for each request it is
    carrying out (not frozen), its token and the seconds of its own time it still needs
    from ``now``, 0 for one overdue (the guest has carried it out by now)."""
    return [(int(request[0]), _guest_time_left(request, now))
            for request in _guest_requests(vm) if request[3] is not None]


def _guest_time_left(request: list[Any], now: float) -> float:
    """The seconds a request being carried out (not frozen) still needs at ``now``."""
    return max(0.0, float(request[2]) - max(0.0, now - float(request[3])))


def drop_guest_requests(vm: Record) -> None:
    """Note on the (staged) ``vm`` that its guest is gone (turned off, or booted
    afresh): the requests it accepted go with it."""
    vm.meta.pop(GUEST_REQUESTS, None)


def _guest_requests(vm: Record) -> list[list[Any]]:
    requests = vm.meta.get(GUEST_REQUESTS)
    return [list(request) for request in requests] if isinstance(requests, list) else []


def end_run(vm: Record) -> None:
    """Drop the (staged) ``vm``'s run times: it is turned off or saved."""
    for key in ("started_at", PAUSED_S, PAUSED_AT):
        vm.meta.pop(key, None)


#: The slots of the live moves of a host (jobs of MigrateVirtualSystemToHost that move a
#: VM to another host; ``jobs.Slots``), named after the setting that bounds them.
LIVE_MOVE_SLOTS = "MaximumActiveVirtualSystemMigration"
#: Msvm_ComputerSystem.OperationalStatus of a VM: OK (2); while a live move of it runs
#: (its job begun, not ended), In Service (11), "processing a request", with Migrating
#: Virtual Machine (32774), "being migrated live from one physical computer to another"
#: (Microsoft's values). Microsoft says a primary status of OK marks an operation that
#: can be interrupted: a move under way here cannot be stopped (its job is not
#: Cancellable), hence In Service. Its StatusDescriptions are not documented: none shown.
OPERATIONAL_OK: tuple[int, ...] = (2,)
OPERATIONAL_MIGRATING: tuple[int, ...] = (11, 32774)


def live_move(host: EmulatedHost, txn: Transaction, vm: Record, now: float) -> Record | None:
    """The job of the live move of ``vm`` under way at ``now`` (begun, not ended: not one
    still queued for a slot); None when none is."""
    begun = [job for job in holding(host, txn, LIVE_MOVE_SLOTS, now)
             if job.meta.get("affected") and float(job.meta.get("begin", now)) <= now]
    if not begun:  # the VM's path is made only when some move is under way
        return None
    path = vm.path.normalized
    return next((job for job in begun
                 if ObjectPath.parse(str(job.meta["affected"])).normalized == path), None)


def being_migrated(host: EmulatedHost, txn: Transaction, vm: Record) -> str | None:
    """Why ``vm`` takes no change now because it is being migrated live (its move under
    way, ``live_move``), in words that name the move's job; None when it is not.

    Hyper-V keeps the VM running on its source until the move's switch-over, and the
    move carries the VM as it is: Microsoft documents no answer to a state change, a
    settings or device change, a guest shutdown asked through the host, or DestroySystem
    of a VM "being migrated live". The emulator refuses them all with 32775 (invalid
    state, ``codes.CHANGE_WHILE_MIGRATING``), as it refuses them while the VM's state
    changes, and answers reads as ever (its choice); a move still queued for a slot has
    not begun, and takes the VM as it is when it begins."""
    job = live_move(host, txn, vm, host.clock())
    if job is None:
        return None
    return (f"the virtual machine is being migrated live (job {job['InstanceID']}); it takes "
            "no other change until the move is done")


def operational_status(host: EmulatedHost, txn: Transaction, vm: Record,
                       now: float) -> tuple[int, ...]:
    """The VM's OperationalStatus at ``now`` (``OPERATIONAL_MIGRATING`` while it moves)."""
    moving = live_move(host, txn, vm, now) is not None
    return OPERATIONAL_MIGRATING if moving else OPERATIONAL_OK


def _vm_view(host: EmulatedHost, txn: Transaction, vm: Record,
             now: float) -> dict[str, CimValue]:
    """A VM's run time while it runs (``on_time_ms``), its transitional state (with
    the RequestedState Hyper-V shows "while the state change is in progress") while a
    state change runs, and its OperationalStatus (``operational_status``)."""
    view: dict[str, CimValue] = {"OperationalStatus": operational_status(host, txn, vm, now)}
    if is_running(vm):
        view["OnTimeInMilliseconds"] = on_time_ms(vm, now)
    shown = transition(host, vm)
    if shown is not None:
        view.update(EnabledState=shown, RequestedState=int(vm.meta[TRANSITION][1]))
    return view


#: Msvm_GuestNetworkAdapterConfiguration.ProtocolIFType by the IP versions of its addresses.
_PROTOCOL_IF_TYPE = {frozenset(): 0, frozenset({4}): 4096, frozenset({6}): 4097,
                     frozenset({4, 6}): 4098}


def _guest_reported(host: EmulatedHost, txn: Transaction, record: Record) -> dict[str, CimValue]:
    """What the guest of a running VM with integration services reports of the network
    adapter of ``record`` (``Faults.guest_addresses``); nothing for any other guest.
    Subnets go with IPAddresses element by element; Microsoft does not document their
    form, so an IPv4 mask dotted and an IPv6 prefix length as its number are the
    emulator's choice. IPAddressOrigins, DefaultGateways and DNSServers stay empty."""
    guid = guid_of(record)
    vm = txn.get(vm_path(guid)) if guid else None
    if vm is None or not is_running(vm) or vm.meta.get(NO_GUEST_SERVICES):
        return {}
    nic = txn.get(nic_of_guest_network(record))
    reported = None if nic is None else host.faults.guest_addresses_of(
        str(guid), str(vm["ElementName"]), str(nic["Address"]))
    if reported is None:
        return {}
    interfaces = reported.interfaces
    return {
        "ProtocolIFType": _PROTOCOL_IF_TYPE[frozenset(i.version for i in interfaces)],
        "DHCPEnabled": reported.dhcp,
        "IPAddresses": tuple(str(i.ip) for i in interfaces),
        "Subnets": tuple(str(i.netmask) if i.version == 4 else str(i.network.prefixlen)
                         for i in interfaces),
    }
