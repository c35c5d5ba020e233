"""Disk I/O of many VMs at once, per disk, for GetVmDiskStatsCommand: Hyper-V resource
metering (Msvm_MetricService, Msvm_AggregationMetricValue through Msvm_MetricForME). The
I/O of each VM as a whole, for GetVmStatsCommand, comes from the performance counters
Windows keeps without metering (``vmio``).

=========================  =============================================================
``disk_stats``             2 queries + 1 ASSOCIATORS OF per disk, issued together (+1
                           query for the metric definitions on first use)
``enable_disk_metering``   1 call (+1 query for the metric service on first use)
=========================  =============================================================
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.errors import CimError, CimNotFound, HyperVError
from hyperv_agent.hyperv import jobs, vmio, vms
from hyperv_agent.hyperv.schema import (
    BYTES_PER_MB,
    CAPTION_VM,
    DISK_DATA_READ,
    DISK_DATA_WRITTEN,
    DISK_IO_COUNT,
    NAMESPACE,
    Class,
    MetricCollection,
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
    the named VMs (every VM when they are many), then their hard-disk media (2 queries),
    then the metric values Msvm_MetricForME links to each disk of the named VMs (1
    ASSOCIATORS OF per disk, all issued at once, so one round trip of latency), plus 1
    query for the metric definitions on the session's first call; none when ``names`` is
    empty.

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
    """What the session keeps for this module: the disk metric definitions' ids."""

    metric_ids: dict[str, str] | None = None


@dataclass(frozen=True)
class _Medium:
    image: str  # the disk file
    path: ObjectPath


async def _disk_media(hv: HyperV, by_guid: Mapping[str, str]) -> dict[str, _Medium]:
    """Medium InstanceID (case folded) -> file and path, for the VHD media of the VMs
    ``by_guid``; 1 query (``vmio.hard_disk_media``)."""
    return {(medium.string("InstanceID") or "").casefold(): _Medium(
                medium.strings("HostResource")[0], medium.path)
            for media in (await vmio.hard_disk_media(hv, by_guid)).values()
            for medium in media if medium.path is not None}


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
    """VM GUID (upper case) -> name, for the VMs named in ``wanted``; 1 query, for those
    names only, or for every VM when more than ``vmio.NAMED_AT_MOST`` are named (the
    management server names every VM of the host at each ``vm.disk.stats.interval``)."""
    names = set(wanted)
    where = wql.eq("Caption", CAPTION_VM)
    if len(names) <= vmio.NAMED_AT_MOST:
        where = where & wql.any_of("ElementName", sorted(names))
    query = wql.select(Class.COMPUTER_SYSTEM, where, ("Name", "ElementName"))
    by_guid: dict[str, str] = {}
    for vm in await hv.cim.query(query, NAMESPACE):
        name, guid = vm.string("ElementName"), vm.string("Name")
        if name is not None and name in names and guid:
            by_guid[guid.upper()] = name
            names.discard(name)  # the first VM of a name wins
    return by_guid
