"""Disk I/O of many VMs at once.

Per disk, for GetVmDiskStatsCommand: Hyper-V resource metering (Msvm_MetricService,
Msvm_AggregationMetricValue through Msvm_MetricForME). Per VM, for GetVmStatsCommand: the
"Hyper-V Virtual Storage Device" performance counters of root\\cimv2, which Windows keeps
for every virtual hard disk a running VM has open, metering or not: bytes and operations
read and written since the disk was opened (``io_since_last``).

=========================  =============================================================
``disk_stats``             2 queries + 1 ASSOCIATORS OF per disk, issued together (+1
                           query for the metric definitions on first use)
``enable_disk_metering``   1 call (+1 query for the metric service on first use)
``io_since_last``          2 queries whatever the number of VMs (0 for no VM, 1 when
                           they have no virtual hard disk)
=========================  =============================================================
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.errors import CimError, CimNotFound, HyperVError
from hyperv_agent.hyperv import jobs, vms
from hyperv_agent.hyperv.schema import (
    BYTES_PER_MB,
    CAPTION_VM,
    CIMV2,
    DISK_DATA_READ,
    DISK_DATA_WRITTEN,
    DISK_IO_COUNT,
    NAMESPACE,
    Class,
    MetricCollection,
    Subtype,
)
from hyperv_agent.hyperv.session import HyperV

log = logging.getLogger("hyperv_agent.hyperv.diskstats")


@dataclass(frozen=True)
class DiskIo:
    """One virtual hard disk of a VM and its I/O since Hyper-V began metering it.

    Bytes come from the "Disk Data Read"/"Disk Data Written" metrics, which count whole
    megabytes (so they move in steps of 1,048,576). Hyper-V counts I/O operations only
    as one "Normalized I/O Count" (8 KB units, both directions): ``read_ios`` and
    ``write_ios`` share it out in proportion to the data read and written (evenly while
    both are under a megabyte), so their sum is the measured count. All 0 while the
    disk is not metered (``metered`` False).
    """

    image: str
    read_bytes: int = 0
    write_bytes: int = 0
    normalized_ios: int = 0
    metered: bool = False

    @property
    def read_ios(self) -> int:
        moved = self.read_bytes + self.write_bytes
        if moved == 0:
            return (self.normalized_ios + 1) // 2
        return self.normalized_ios * self.read_bytes // moved

    @property
    def write_ios(self) -> int:
        return self.normalized_ios - self.read_ios



async def disk_stats(hv: HyperV, names: Collection[str]) -> dict[str, tuple[DiskIo, ...]]:
    """The virtual hard disks (VHD/VHDX media, not ISOs) of the VMs named in ``names``,
    with their I/O counters.

    Keyed by VM name; names of no VM are left out, a VM without disks maps to (). With
    duplicate names the first VM WMI returns is taken (as ``vms.find_vm`` does). Calls:
    every VM's name and every hard-disk medium on the host (2 queries), then the metric
    values Msvm_MetricForME links to each disk of the named VMs (1 ASSOCIATORS OF per
    disk, all issued at once, so one round trip of latency), plus 1 query for the metric
    definitions on the session's first call; none when ``names`` is empty.

    Metering is switched on lazily: a named VM with a disk that has no metric values
    gets ``enable_disk_metering`` (1 call, +1 query for the service on first use), and
    its disks read 0 this time. So the first call for a VM, and the first after a disk
    was added to it, cost one more call; a VM whose metering cannot be switched on is
    logged and read as 0. Values reach their disk only through the documented
    association, never through the layout of InstanceIDs. Safe to repeat.
    """
    wanted = set(names)
    if not wanted:
        return {}
    by_guid = await _guids_of(hv, wanted)
    if not by_guid:
        return {}
    media = await _disk_media(hv, by_guid)
    ids = await _disk_metric_ids(hv)
    counters = await _metric_values(hv, media, ids) if ids else {}
    unmetered = {vms.owner_guid(key) for key in media if ids and key not in counters}
    for guid in sorted(unmetered):
        await _try_enable(hv, guid, by_guid[guid])
    disks: dict[str, list[DiskIo]] = {name: [] for name in by_guid.values()}
    for key, medium in media.items():
        disks[by_guid[vms.owner_guid(key)]].append(_disk_io(medium.image, counters.get(key)))
    return {name: tuple(found) for name, found in disks.items()}


async def enable_disk_metering(hv: HyperV, vm: ObjectPath) -> None:
    """Switch on Hyper-V resource metering for the VM at ``vm`` and its disks:
    ``ControlMetrics(Subject=vm, Definition=null, Enable)``, 1 call (+1 query for the
    metric service the session's first time).

    Safe to repeat: metering that is on stays on and keeps its values. Counting starts
    at 0 and goes on while the VM runs. A missing VM or a refusal raises HyperVError
    (MethodFailed) or CimError; nothing changes then. Call it when a VM is built to
    count from its first boot; ``disk_stats`` calls it for VMs not yet metered.
    """
    await jobs.call(hv.cim, await _metric_service(hv), "ControlMetrics", {
        "Subject": vm, "Definition": None,
        "MetricCollectionEnabled": int(MetricCollection.ENABLE)})


_DISK_METRICS = (DISK_DATA_READ, DISK_DATA_WRITTEN, DISK_IO_COUNT)


@dataclass
class _Kept:
    """What the session keeps for this module: the disk metric definitions' ids, and the
    I/O totals and uptime of each VM (by GUID) as ``io_since_last`` last read them."""

    metric_ids: dict[str, str] | None = None
    io_seen: dict[str, tuple[IoTotals, int]] = field(default_factory=dict)  # and uptime, ms


@dataclass(frozen=True)
class _Medium:
    image: str  # the disk file
    path: ObjectPath


async def _disk_media(hv: HyperV, by_guid: Mapping[str, str]) -> dict[str, _Medium]:
    """Medium InstanceID (case folded) -> file and path, for the VHD media of the VMs
    ``by_guid``; 1 query."""
    query = wql.select(Class.SASD, wql.eq("ResourceSubType", Subtype.VHD),
                       ("InstanceID", "HostResource"))
    found: dict[str, _Medium] = {}
    for medium in await hv.cim.query(query, NAMESPACE):
        key, files = (medium.string("InstanceID") or "").casefold(), medium.strings(
            "HostResource")
        if vms.owner_guid(key) in by_guid and files and medium.path is not None:
            found[key] = _Medium(files[0], medium.path)
    return found


async def _disk_metric_ids(hv: HyperV) -> dict[str, str]:
    """Metric definition Id -> name, for the disk metrics the host defines; 1 query on
    the session's first call, then kept (an empty answer is not cached)."""
    kept = hv.kept(_Kept)
    if kept.metric_ids is not None:
        return kept.metric_ids
    query = wql.select(Class.METRIC_DEFINITION_BASE, wql.any_of("ElementName", _DISK_METRICS),
                       ("Id", "ElementName"))
    ids = {d.string("Id") or "": d.string("ElementName") or ""
           for d in await hv.cim.query(query, NAMESPACE)}
    ids.pop("", None)
    if ids:
        kept.metric_ids = ids
    return ids


async def _metric_values(hv: HyperV, media: Mapping[str, _Medium],
                         ids: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Medium key -> {metric name: value}, for the media with disk metric values: the
    values Msvm_MetricForME links to each medium, 1 ASSOCIATORS OF per medium, at once."""
    keys = list(media)
    answers = await asyncio.gather(*(
        hv.cim.associators(media[key].path, assoc_class=Class.METRIC_FOR_ME,
                        result_class=Class.METRIC_VALUE_BASE) for key in keys))
    found: dict[str, dict[str, int]] = {}
    for key, values in zip(keys, answers, strict=True):
        for value in values:
            name = ids.get(value.string("MetricDefinitionId") or "")
            text = (value.string("MetricValue") or "").strip()
            if name is not None:
                found.setdefault(key, {})[name] = int(text) if text.isdigit() else 0
    return found


def _disk_io(image: str, counters: Mapping[str, int] | None) -> DiskIo:
    if counters is None:
        return DiskIo(image)
    return DiskIo(image, counters.get(DISK_DATA_READ, 0) * BYTES_PER_MB,
                  counters.get(DISK_DATA_WRITTEN, 0) * BYTES_PER_MB,
                  counters.get(DISK_IO_COUNT, 0), metered=True)


async def _try_enable(hv: HyperV, guid: str, name: str) -> None:
    try:
        await enable_disk_metering(hv, vms.vm_path(guid))
    except (HyperVError, CimError) as error:
        if isinstance(error, CimNotFound):
            hv.forget_service(Class.METRIC_SERVICE)  # looked up again next time
        log.warning("resource metering of VM %s could not be switched on: %s", name, error)


async def _metric_service(hv: HyperV) -> ObjectPath:
    """The Msvm_MetricService path: 1 query on the session's first call, then kept."""
    return await hv.service_path(Class.METRIC_SERVICE,
                                 "resource metering needs Windows Server 2012 or later")


async def _guids_of(hv: HyperV, wanted: Iterable[str]) -> dict[str, str]:
    """VM GUID (upper case) -> name, for the VMs named in ``wanted``; 1 query."""
    names = set(wanted)
    query = wql.select(Class.COMPUTER_SYSTEM, wql.eq("Caption", CAPTION_VM),
                       ("Name", "ElementName"))
    by_guid: dict[str, str] = {}
    for vm in await hv.cim.query(query, NAMESPACE):
        name, guid = vm.string("ElementName"), vm.string("Name")
        if name is not None and name in names and guid:
            by_guid[guid.upper()] = name
            names.discard(name)  # the first VM of a name wins
    return by_guid


# --- per VM: the virtual storage devices' performance counters ------------------------------


@dataclass(frozen=True)
class IoTotals:
    """Disk I/O of a VM, summed over its virtual hard disks: bytes and operations read
    and written."""

    read_bytes: int = 0
    write_bytes: int = 0
    reads: int = 0
    writes: int = 0

    def __add__(self, other: IoTotals) -> IoTotals:
        return IoTotals(self.read_bytes + other.read_bytes, self.write_bytes + other.write_bytes,
                        self.reads + other.reads, self.writes + other.writes)

    def since(self, before: IoTotals) -> IoTotals:
        """The I/O done since ``before`` was read. A counter below its earlier value was
        opened again (the VM started again) or wrapped (the operation counts are 32-bit),
        so all it holds is new."""
        return IoTotals(*(now - then if now >= then else now for now, then in zip(
            self._figures(), before._figures(), strict=True)))

    def _figures(self) -> tuple[int, int, int, int]:
        return self.read_bytes, self.write_bytes, self.reads, self.writes


#: Up to this many VMs (or disks) a query names them; beyond, it reads the whole host once.
NAMED_AT_MOST = 32
_COUNTERS = ("ReadBytesPersec", "WriteBytesPersec", "ReadOperationsPerSec",
             "WriteOperationsPerSec")


async def io_since_last(hv: HyperV, uptimes_ms: Mapping[str, int]) -> dict[str, IoTotals]:
    """The disk I/O of each running VM since the previous call for it, by GUID (upper
    case), as CloudStack's agents report VM statistics: the interval's I/O, which the
    management server adds up. ``uptimes_ms`` holds the VMs' GUIDs and how long each has
    run: a VM seen for the first time reads 0 (its totals become the baseline); one that
    ran for less time than when last seen started again, so all its counters hold is
    new. 2 queries whatever the number of VMs (``disk_totals``); read-only on the host."""
    totals = await disk_totals(hv, list(uptimes_ms))
    seen = hv.kept(_Kept).io_seen
    found: dict[str, IoTotals] = {}
    for guid, uptime_ms in uptimes_ms.items():
        now, before = totals.get(guid.upper(), IoTotals()), seen.get(guid.upper())
        if before is None:
            found[guid.upper()] = IoTotals()
        else:
            found[guid.upper()] = now if uptime_ms < before[1] else now.since(before[0])
        seen[guid.upper()] = (now, uptime_ms)
    return found


async def disk_totals(hv: HyperV, vm_guids: Collection[str]) -> dict[str, IoTotals]:
    """The I/O counters of the virtual hard disks of the VMs ``vm_guids``, summed per VM
    (GUID, upper case), totals since each disk was opened. 1 query for the VMs' disk
    files, 1 for their counters; a VM whose disks have no counters (not running, or a
    host without the counter set, which is logged) is left out."""
    images = await _disk_files(hv, {g.upper() for g in vm_guids})
    if not images:
        return {}
    counters = await _device_counters(hv, {counter_name(f) for fs in images.values()
                                          for f in fs})
    totals: dict[str, IoTotals] = {}
    for guid, files in images.items():
        found = [counters[counter_name(f)] for f in files if counter_name(f) in counters]
        if found:
            totals[guid] = sum(found, IoTotals())
    return totals


def counter_name(image: str) -> str:
    """The counter instance of a disk file, as ``counter_key`` compares them: Windows
    names the instances of the "Hyper-V Virtual Storage Device" set after the file's path
    with each backslash written as "-" (a counter path cannot hold one)."""
    return counter_key(image.replace("\\", "-"))


#: The \\?\ form of a path, as a counter instance name writes it, for a file on a share
#: and for any other file: Windows names some instances after that form of the path.
_VERBATIM_UNC, _VERBATIM = "--?-unc-", "--?-"


def counter_key(instance: str) -> str:
    """A counter instance name as compared with a disk's: case folded, and named after
    the plain path when Windows named it after the path's \\\\?\\ form (``--?-C:-...``,
    ``--?-UNC-server-share-...``)."""
    key = instance.casefold()
    if key.startswith(_VERBATIM_UNC):
        return "--" + key[len(_VERBATIM_UNC):]
    if key.startswith(_VERBATIM):
        return key[len(_VERBATIM):]
    return key


def instance_names(key: str) -> tuple[str, str]:
    """The two names Windows may give the counter instance of a disk (``counter_key``
    of it: ``key``): after the path, and after its \\\\?\\ form."""
    if key.startswith("--"):
        return key, _VERBATIM_UNC + key[2:]
    return key, _VERBATIM + key


async def _disk_files(hv: HyperV, guids: set[str]) -> dict[str, tuple[str, ...]]:
    """GUID -> the virtual hard disk files of that VM, for the VMs ``guids``; 1 query
    naming the VMs (by their devices' InstanceID prefix), or over every disk of the host
    when they are many."""
    if not guids:
        return {}
    where = wql.eq("ResourceSubType", Subtype.VHD)
    if len(guids) <= NAMED_AT_MOST:
        where = where & _any(wql.starts_with("InstanceID", f"Microsoft:{g}\\")
                             for g in sorted(guids))
    found: dict[str, list[str]] = {}
    for medium in await hv.cim.query(wql.select(Class.SASD, where,
                                                ("InstanceID", "HostResource")), NAMESPACE):
        guid = vms.owner_guid(medium.string("InstanceID") or "")
        files = medium.strings("HostResource")
        if guid in guids and files:
            found.setdefault(guid, []).append(files[0])
    return {guid: tuple(files) for guid, files in found.items()}


async def _device_counters(hv: HyperV, names: set[str]) -> dict[str, IoTotals]:
    """Counter instance (``counter_key``) -> its totals, for the instances ``names``, each
    asked for under both names Windows may give it; 1 query (every instance when they
    are many). A host without the counter set gives {} and one warning."""
    named = sorted({name for key in names for name in instance_names(key)})
    where = wql.any_of("Name", named) if len(names) <= NAMED_AT_MOST else None
    query = wql.select(Class.DISK_PERF, where, ("Name", *_COUNTERS))
    try:
        devices = await hv.cim.query(query, CIMV2)
    except CimError as error:
        log.warning("disk I/O counters cannot be read (%s): VM disk statistics read 0", error)
        return {}
    found: dict[str, IoTotals] = {}
    for device in devices:
        key = counter_key(device.string("Name") or "")
        if key in names:  # an open disk has one instance, under one of its names
            found.setdefault(key, IoTotals(*(device.integer(c) or 0 for c in _COUNTERS)))
    return found


def _any(conditions: Iterable[wql.Condition]) -> wql.Condition:
    """Any of ``conditions`` (at least one)."""
    first, *rest = conditions
    for condition in rest:
        first = first | condition
    return first
