"""Resource metering of virtual hard disks: Msvm_MetricService.ControlMetrics and the
disk I/O that the metric values count.

What is modelled. The host defines three Msvm_AggregationMetricDefinition instances
(``host.DISK_METRICS``): "Disk Data Read" and "Disk Data Written" in whole megabytes
(2^20 bytes, rounded down) and "Normalized I/O Count". They apply (Msvm_MetricDefForME)
to every virtual hard disk medium (a Msvm_StorageAllocationSettingData holding a VHD or
VHDX, not an ISO) and to every VM. ControlMetrics with MetricCollectionEnabled 2 (Enable)
creates one Msvm_AggregationMetricValue per medium and definition, at 0, linked to the
medium through Msvm_MetricForME; enabling again keeps the values. 3 (Disable) removes the
values (the data is gone), 4 (Reset) sets them to 0. A VM as Subject stands for all of
its media. Subject and Definition both null, an unknown Subject or Definition, or a
Subject the definitions do not apply to (an ISO, a NIC) fail with 2 (Failed).

I/O happens only when a test says so (``disk_io``); values grow only while metering is
enabled for the medium and the VM runs (not when it is off, saved or paused). A value's
InstanceID is its medium's InstanceID followed by ``\\`` and the definition's GUID.

The same I/O moves the disk's performance counters in root\\cimv2
(Win32_PerfRawData_Counters_HyperVVirtualStorageDevice, "Hyper-V Virtual Storage
Device"), which Windows keeps without metering: bytes and operations read and written,
totals since the VM began running (a VM started again counts from 0). The instance is
named after the disk's file, each backslash written as "-" (``counter_name``): the path
itself, or its ``\\\\?\\`` form as ``[emulator] disk_counter_names = "verbatim"`` asks
(``--?-C:-...``; ``--?-UNC-server-share-...`` for a file on a share), both of which Windows
uses. It is made at the disk's first I/O and is there, as on Windows, while the VM runs
(or is paused) with the disk attached: it is gone when the VM stops, the disk is
removed or the VM migrates away (a VM that comes back counts from 0), and the next I/O
starts a new one from 0 (``model.present``).

What is not modelled: CPU, memory and network metrics, the non-aggregated
Msvm_BaseMetricValue series, latency and throughput averages, sample intervals
(ControlSampleTimes) and the other methods of the service. Values of a medium removed
from its VM are dropped at the next ControlMetrics or ``disk_io`` call for that VM (or
for the whole host) rather than at once; those of a VM go with it (DestroySystem).
REFERENCES OF returns Msvm_MetricDefForME without MetricCollectionEnabled.
"""

from __future__ import annotations

import ntpath
from collections.abc import Iterator, Mapping

from hyperv_agent.cim.api import V2_NAMESPACE, ObjectPath, OutValue
from hyperv_agent.emulator import codes, model
from hyperv_agent.emulator.calls import Call, MethodError, handles
from hyperv_agent.emulator.codes import EnabledState
from hyperv_agent.emulator.host import EmulatedHost, cim_datetime, cim_interval
from hyperv_agent.emulator.indexes import IndexSpec
from hyperv_agent.emulator.schema import concrete_classes
from hyperv_agent.emulator.store import Record, Transaction

DEFINITION = "Msvm_AggregationMetricDefinition"
VALUE = "Msvm_AggregationMetricValue"
MEDIUM = "Msvm_StorageAllocationSettingData"
ENABLE, DISABLE, RESET = 2, 3, 4  # ControlMetrics MetricCollectionEnabled
FAILED = 2  # ControlMetrics return value "Failed"
BYTES_PER_MB = 1 << 20
READ, WRITTEN, IO_COUNT = "Disk Data Read", "Disk Data Written", "Normalized I/O Count"


@handles("Msvm_MetricService", "ControlMetrics")
def control_metrics(call: Call) -> Mapping[str, OutValue]:
    action = call.integer("MetricCollectionEnabled")
    if action not in (ENABLE, DISABLE, RESET):
        raise _failed(f"MetricCollectionEnabled {action} is not 2, 3 or 4")
    subject, definition = call.path("Subject"), call.path("Definition")
    if subject is None and definition is None:
        raise _failed("Subject and Definition are both null")
    definitions = [_definition(call, definition)] if definition else list(definitions_of(
        call.host, call.txn))
    for medium in _media_of_subject(call, subject):
        for metric in definitions:
            _apply(call, medium, metric, action)
    owner = None if subject is None else call.txn.get(subject)
    _drop_orphans(call.host, call.txn, None if owner is None else model.guid_of(owner))
    return {}


def _failed(description: str) -> MethodError:
    return MethodError(FAILED, description, immediate=True)


def _definition(call: Call, path: ObjectPath) -> Record:
    record = call.txn.get(path)
    if record is None or record.class_def.name != DEFINITION:
        raise _failed(f"no metric definition at {path}")
    return record


def _media_of_subject(call: Call, subject: ObjectPath | None) -> list[Record]:
    if subject is None:
        return list(disk_media(call.host, call.txn))
    record = call.txn.get(subject)
    if record is not None and model.is_vm(record):
        return list(disk_media(call.host, call.txn, str(record["Name"])))
    if record is not None and is_disk_medium(record):
        return [record]
    raise _failed(f"{subject} is not a VM or a virtual hard disk the disk metrics apply to")


def _apply(call: Call, medium: Record, metric: Record, action: int) -> None:
    path = value_path(medium, metric)
    present = call.txn.get(path)
    if action == DISABLE:
        if present is not None:
            call.txn.delete(path)
    elif (action == RESET) == (present is not None):  # reset a value, or enable anew
        call.txn.put(_new_value(call.host, medium, metric))


def _new_value(host: EmulatedHost, medium: Record, metric: Record) -> Record:
    now = host.clock()
    record = host.new_record(
        VALUE, InstanceID=value_path(medium, metric).key("InstanceID"),
        MetricDefinitionId=metric["Id"], MeasuredElementName=medium["ElementName"],
        ElementName=metric["ElementName"], MetricValue="0", Volatile=True,
        TimeStamp=cim_datetime(now), AggregationTimeStamp=cim_datetime(now),
    )
    record.meta.update(element=str(medium.path), since=now, count=0)
    return record


# --- lookups shared with the associations ---------------------------------------------------


def is_disk_medium(record: Record) -> bool:
    """A virtual hard disk medium of a VM (not an ISO, not a template)."""
    return (record.class_def.name == MEDIUM and record["ResourceSubType"] == codes.SUBTYPE_VHD
            and model.guid_of(record) is not None)


def disk_media(host: EmulatedHost, txn: Transaction, guid: str | None = None
               ) -> Iterator[Record]:
    """The virtual hard disk media of the VM ``guid`` (of every VM when None)."""
    records = model.device_records(txn, guid) if guid else host.records(MEDIUM, txn)
    return (r for r in records if is_disk_medium(r))


def definitions_of(host: EmulatedHost, txn: Transaction) -> Iterator[Record]:
    return host.records(DEFINITION, txn)


def value_path(medium: Record, metric: Record) -> ObjectPath:
    guid = str(metric["Id"]).partition(":")[2]
    return ObjectPath.for_keys(VALUE, InstanceID=f"{medium['InstanceID']}\\{guid}")


def _element_keys(value: Record) -> tuple[str, ...]:
    return (ObjectPath.parse(str(value.meta.get("element", ""))).normalized,)


#: Metric values by the (normalised) path of the medium they are kept for.
ELEMENT = IndexSpec("metric-element", _element_keys)


def values_of(host: EmulatedHost, txn: Transaction, medium: Record) -> Iterator[Record]:
    """The metric values kept for ``medium`` (none while metering is off)."""
    classes = concrete_classes(VALUE, V2_NAMESPACE)
    return iter(txn.lookup(classes, ELEMENT, medium.path.normalized))


def element_of(txn: Transaction, value: Record) -> Record | None:
    element = value.meta.get("element")
    return txn.get(ObjectPath.parse(element)) if element else None


def owned_values(txn: Transaction, guid: str) -> list[Record]:
    """The metric values kept for the media of the VM ``guid``."""
    return model.owned_records(txn, concrete_classes(VALUE, V2_NAMESPACE), guid)


def _drop_orphans(host: EmulatedHost, txn: Transaction, guid: str | None) -> None:
    """Drop the metric values whose medium is gone: of the VM ``guid`` (its own, found
    without walking the host), of every VM when None."""
    values = list(host.records(VALUE, txn)) if guid is None else owned_values(txn, guid)
    for value in values:
        if element_of(txn, value) is None:
            txn.delete(value.path)


# --- the instrument: a VM's disk does I/O ---------------------------------------------------


def disk_io(host: EmulatedHost, vm_name: str, image: str, *, read_bytes: int = 0,
            written_bytes: int = 0, ios: int = 0, reads: int = 0, writes: int = 0) -> bool:
    """The guest of ``vm_name`` reads ``read_bytes`` from and writes ``written_bytes`` to
    the virtual hard disk whose file is ``image``, in ``ios`` normalized (8 KB) I/Os, or
    ``reads`` read and ``writes`` write operations as the disk's counters see them.

    Returns whether the metric values counted it: False when the VM is not running or
    the medium is not metered. The performance counters count it whenever the VM runs.
    LookupError when the VM or the disk does not exist, ValueError for a negative amount.
    """
    if min(read_bytes, written_bytes, ios, reads, writes) < 0:
        raise ValueError("I/O amounts cannot be negative")
    txn = host.store.transaction()
    vm, medium = _find_disk(host, txn, vm_name, image)
    if vm["EnabledState"] != EnabledState.ENABLED:
        return False
    _count_device(host, txn, vm, medium, (read_bytes, written_bytes, reads, writes))
    values = list(values_of(host, txn, medium))
    if not values:
        txn.commit()
        return False
    amounts = {READ: read_bytes, WRITTEN: written_bytes, IO_COUNT: ios}
    for value in values:
        staged = txn.edit(value.path)
        assert staged is not None
        _count(host, staged, amounts.get(str(staged["ElementName"]), 0))
    _drop_orphans(host, txn, str(vm["Name"]))
    txn.commit()
    return True


DEVICE_COUNTERS = "Win32_PerfRawData_Counters_HyperVVirtualStorageDevice"
#: Each counter and where it wraps: bytes are 64-bit counters, operations 32-bit.
_DEVICE_TOTALS = (("ReadBytesPersec", 1 << 64), ("WriteBytesPersec", 1 << 64),
                  ("ReadOperationsPerSec", 1 << 32), ("WriteOperationsPerSec", 1 << 32))


def counter_name(image: str, verbatim: bool = False) -> str:
    """The counter instance of the disk whose file is ``image``: its path with each
    backslash written as "-", as Windows names the instances of this counter set; with
    ``verbatim``, the same of the path's ``\\\\?\\`` form (``\\\\?\\UNC\\`` for a share)."""
    if verbatim and not image.startswith("\\\\?\\"):
        image = ("\\\\?\\UNC\\" + image[2:] if image.startswith("\\\\")
                 else "\\\\?\\" + image)
    return image.replace("\\", "-")


def _count_device(host: EmulatedHost, txn: Transaction, vm: Record, medium: Record,
                  amounts: tuple[int, int, int, int]) -> None:
    """Add ``amounts`` (bytes read and written, read and write operations) to the
    counters of the disk ``medium``; counters no longer there (the VM stopped, or the disk
    was removed, since they counted) start again from 0."""
    files = medium["HostResource"]
    assert isinstance(files, tuple) and files  # _find_disk matched the medium by its file
    name = counter_name(str(files[0]), verbatim=host.config.disk_counter_names == "verbatim")
    record = model.counter_instance(
        host, txn, DEVICE_COUNTERS, name, vm, medium,
        zeros=("ErrorCount", "FlushCount", "QueueLength", *(n for n, _ in _DEVICE_TOTALS)))
    for (name, wrap), amount in zip(_DEVICE_TOTALS, amounts, strict=True):
        record[name] = (record.integer(name) + amount) % wrap


def _find_disk(host: EmulatedHost, txn: Transaction, vm_name: str, image: str
               ) -> tuple[Record, Record]:
    vm = next((r for r in host.records("Msvm_ComputerSystem", txn)
               if model.is_vm(r) and r["ElementName"] == vm_name), None)
    if vm is None:
        raise LookupError(f"no VM named {vm_name}")
    wanted = ntpath.normcase(image)
    for medium in disk_media(host, txn, str(vm["Name"])):
        files = medium["HostResource"]
        if isinstance(files, tuple) and files and ntpath.normcase(str(files[0])) == wanted:
            return vm, medium
    raise LookupError(f"VM {vm_name} has no virtual hard disk {image}")


def _count(host: EmulatedHost, value: Record, amount: int) -> None:
    now = host.clock()
    total = int(value.meta.get("count", 0)) + amount
    value.meta["count"] = total
    megabytes = str(value["ElementName"]) in (READ, WRITTEN)
    value["MetricValue"] = str(total // BYTES_PER_MB if megabytes else total)
    value["TimeStamp"] = value["AggregationTimeStamp"] = cim_datetime(now)
    value["AggregationDuration"] = value["Duration"] = cim_interval(
        now - float(value.meta.get("since", now)))
