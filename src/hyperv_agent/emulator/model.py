"""Shared facts about VMs in the store: identities, device lists, power state, views.

These follow the identity rules Hyper-V documents: a VM's ``Msvm_ComputerSystem.Name``
is its GUID, its current settings are ``Microsoft:<GUID>``, and every device setting's
InstanceID starts with ``Microsoft:<GUID>\\``.
"""

from __future__ import annotations

from collections.abc import Iterator

from hyperv_agent.cim.api import V2_NAMESPACE, CimValue, ObjectPath
from hyperv_agent.emulator import codes
from hyperv_agent.emulator.codes import EnabledState
from hyperv_agent.emulator.host import EmulatedHost, cim_datetime
from hyperv_agent.emulator.jobs import is_job, job_view
from hyperv_agent.emulator.schema import CLASSES, concrete_classes
from hyperv_agent.emulator.store import Record, Transaction

RASD_BASE = "CIM_ResourceAllocationSettingData"
#: Steady traffic on the emulated host's NIC, so its counters move like a real host's.
NIC_RECEIVE_BPS = 125_000
NIC_SEND_BPS = 50_000
FEATURE_BASE = "Msvm_EthernetSwitchPortFeatureSettingData"


def vm_path(guid: str) -> ObjectPath:
    return ObjectPath.for_keys(
        "Msvm_ComputerSystem", CreationClassName="Msvm_ComputerSystem", Name=guid
    )


def vssd_path(guid: str) -> ObjectPath:
    return ObjectPath.for_keys("Msvm_VirtualSystemSettingData", InstanceID=f"Microsoft:{guid}")


def is_vm(record: Record) -> bool:
    return record.class_def.name == "Msvm_ComputerSystem" and record["Caption"] == codes.CAPTION_VM


def guid_of_instance_id(instance_id: str) -> str | None:
    """The VM GUID in ``Microsoft:<GUID>[\\…]``; None for templates and host objects."""
    prefix, _, rest = instance_id.partition(":")
    if prefix.lower() != "microsoft":
        return None
    head = rest.partition("\\")[0]
    return None if head.lower() == "definition" else head


def guid_of(record: Record) -> str | None:
    """The VM a record belongs to (a VM, its settings, devices or runtime components)."""
    if is_vm(record):
        return str(record["Name"])
    instance_id = record["InstanceID"]
    if isinstance(instance_id, str) and "InstanceID" in record.values:
        return guid_of_instance_id(instance_id)
    system_name = record["SystemName"]
    return str(system_name) if isinstance(system_name, str) else None


def device_records(txn: Transaction, guid: str) -> Iterator[Record]:
    """Every resource setting (processor, memory, controllers, drives, media, NICs, ports)."""
    prefix = f"microsoft:{guid.lower()}\\"
    for record in txn.instances_of(concrete_classes(RASD_BASE, V2_NAMESPACE)):
        instance_id = record["InstanceID"]
        if isinstance(instance_id, str) and instance_id.lower().startswith(prefix):
            yield record


def feature_records(txn: Transaction, port: Record) -> Iterator[Record]:
    prefix = f"{str(port['InstanceID']).lower()}\\"
    for record in txn.instances_of(concrete_classes(FEATURE_BASE, V2_NAMESPACE)):
        if str(record["InstanceID"]).lower().startswith(prefix):
            yield record


def runtime_records(txn: Transaction, guid: str) -> Iterator[Record]:
    """The VM's runtime integration components (present only while it runs)."""
    classes = (CLASSES["Msvm_KvpExchangeComponent"], CLASSES["Msvm_ShutdownComponent"])
    for record in txn.instances_of(classes):
        if str(record["SystemName"]).lower() == guid.lower():
            yield record


def is_running(vm: Record) -> bool:
    return vm["EnabledState"] in (EnabledState.ENABLED, EnabledState.QUIESCE)


def generation(vssd: Record) -> int:
    return 2 if vssd["VirtualSystemSubType"] == codes.GENERATION_2 else 1


def running_memory_mb(host: EmulatedHost, txn: Transaction) -> int:
    """Memory held by VMs that are running or paused."""
    total = 0
    for vm in host.records("Msvm_ComputerSystem", txn):
        if is_vm(vm) and is_running(vm):
            total += int(vm.meta.get("memory_mb", 0))
    return total


def computed(host: EmulatedHost, txn: Transaction, record: Record) -> dict[str, CimValue]:
    """Clock- and state-dependent property values laid over a stored record."""
    now = host.clock()
    if is_job(record):
        return job_view(record, now)
    if is_vm(record) and is_running(record):
        started = float(record.meta.get("started_at", now))
        return {"OnTimeInMilliseconds": int((now - started) * 1000)}
    if record.class_def.name == "Win32_PerfRawData_Tcpip_NetworkInterface":
        seconds = max(0.0, now - float(record.meta.get("since", now)))
        received, sent = int(seconds * NIC_RECEIVE_BPS), int(seconds * NIC_SEND_BPS)
        return {"BytesReceivedPersec": received, "BytesSentPersec": sent,
                "BytesTotalPersec": received + sent}
    if record.class_def.name == "Win32_OperatingSystem":
        used_kb = running_memory_mb(host, txn) * 1024
        total_kb = record.integer("TotalVisibleMemorySize")
        return {"FreePhysicalMemory": max(0, total_kb - used_kb),
                "LocalDateTime": cim_datetime(now)}
    return {}
