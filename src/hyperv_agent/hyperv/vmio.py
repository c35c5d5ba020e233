"""The disk and network traffic of running VMs, many at once, for GetVmStatsCommand and
GetVmNetworkStatsCommand: from the performance counters Windows keeps in root\\cimv2 for
every running VM, with or without resource metering. Their raw "...Persec" values are
totals.

- "Hyper-V Virtual Storage Device": one instance per virtual hard disk a running VM has
  open, named after the disk's file (``counter_name``): bytes and operations read and
  written since the disk was opened.
- "Hyper-V Virtual Network Adapter": one instance per network adapter of a running VM,
  named ``<VM name>_<adapter name>_<VM GUID>--<adapter GUID>``: bytes received and sent
  since the VM started. An instance is matched to its VM by the GUID before ``--``, in
  any case (``adapter_vm_guid``), never by the names, which may themselves hold ``_``.
  Microsoft documents no naming for either set; public scripts that read this one build
  or match that form. Not checked against a Windows host here.

===================  ===========================================================
``stats_with_io``    1 GetSummaryInformation call + ``io_since_last``, one report
                     at a time
``io_since_last``    3 queries whatever the number of VMs, in 2 round trips of
                     latency (the adapters' counters are read beside the VMs' disk
                     files); 0 for no VM
``adapter_traffic``  2 queries sent at once whatever the number of VMs; 0 for no VM
===================  ===========================================================
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance
from hyperv_agent.errors import CimError
from hyperv_agent.hyperv import inventory, vms
from hyperv_agent.hyperv.schema import NAMESPACE, Class, Subtype
from hyperv_agent.hyperv.session import HyperV

log = logging.getLogger("hyperv_agent.hyperv.vmio")


class _Seen(NamedTuple):
    """A VM's counter instances and uptime as ``io_since_last`` last read them, and when
    (``time.monotonic()``)."""

    counters: dict[str, IoTotals]
    uptime_ms: int
    read_at: float


@dataclass
class _Kept:
    """What the session keeps for this module: what ``io_since_last`` last read of each
    VM (by GUID, upper case), the listing of every VM those records were last checked
    against (``_forget_gone``), and the lock ``stats_with_io`` reads a report under."""

    seen: dict[str, _Seen] = field(default_factory=dict)
    checked_at: float = float("-inf")
    reading: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class IoTotals:
    """I/O of a VM: bytes and operations read and written, summed over its virtual hard
    disks, and bytes received and sent, summed over its network adapters."""

    read_bytes: int = 0
    write_bytes: int = 0
    reads: int = 0
    writes: int = 0
    received_bytes: int = 0
    sent_bytes: int = 0

    def __add__(self, other: IoTotals) -> IoTotals:
        return IoTotals(*(mine + theirs for mine, theirs in zip(
            self._figures(), other._figures(), strict=True)))

    def since(self, before: IoTotals) -> IoTotals:
        """The I/O done since ``before`` was read. A counter below its earlier value was
        opened again (the VM started again) or wrapped (the operation counts are 32-bit),
        so all it holds is new."""
        return IoTotals(*(now - then if now >= then else now for now, then in zip(
            self._figures(), before._figures(), strict=True)))

    def _figures(self) -> tuple[int, int, int, int, int, int]:
        return (self.read_bytes, self.write_bytes, self.reads, self.writes,
                self.received_bytes, self.sent_bytes)


#: VM GUID (upper case) -> each counter instance of the VM -> its totals.
Counters = dict[str, dict[str, IoTotals]]


def total(instances: Mapping[str, IoTotals]) -> IoTotals:
    """The sum of a VM's counter instances."""
    return sum(instances.values(), IoTotals())


#: Up to this many VMs (or disks) a query names them; beyond, it reads the whole host once.
NAMED_AT_MOST = 32
_COUNTERS = ("ReadBytesPersec", "WriteBytesPersec", "ReadOperationsPerSec",
             "WriteOperationsPerSec")
_ADAPTER_COUNTERS = ("BytesReceivedPersec", "BytesSentPersec")


async def stats_with_io(hv: HyperV, names: Collection[str]
                        ) -> dict[str, tuple[vms.VmStats, IoTotals]]:
    """The statistics of the VMs named in ``names`` (``vms.vm_stats``, by name; names of
    no VM left out), each with its I/O since the previous report (``io_since_last``; none
    for a VM that is not running): what GetVmStatsCommand answers. 1 GetSummaryInformation
    call and 3 queries whatever the number of VMs; none for no name.

    One report at a time per session: the management server asks from its stats collector
    and from its AutoScale monitor on their own timers, and a report read before another
    but done after it would take its older counters for the new baseline, and its VMs'
    shorter run times for restarts, and count the VMs' I/O since they started again. So
    the run times and the counters of each report are read and kept before the next
    report reads its own (a report waits for the one under way).
    """
    async with hv.kept(_Kept).reading:
        found = await vms.vm_stats(hv, names)
        running = {stats.guid: stats.uptime_ms for stats in found.values()
                   if stats.running and stats.guid}
        io = await io_since_last(hv, running) if running else {}
    return {name: (stats, io.get(stats.guid, IoTotals())) for name, stats in found.items()}


async def io_since_last(hv: HyperV, uptimes_ms: Mapping[str, int]) -> dict[str, IoTotals]:
    """The disk and network I/O of each running VM since the previous call for it, by
    GUID (upper case), as CloudStack's agents report VM statistics: the interval's I/O,
    which the management server adds up. ``uptimes_ms`` holds the VMs' GUIDs and how long
    each has run: a VM seen for the first time reads 0 (its counters become the baseline);
    one that ran for less time than when last seen started again, so all its counters
    hold is new. Otherwise each counter instance (a disk, a network adapter) counts what
    it moved since the previous call: an instance that appeared since (a disk attached, an
    adapter added) counts all it holds, one that is gone (removed) counts nothing, so
    removing a device never makes the others count their history again. What is kept of
    a VM goes once a listing of every VM no longer finds it (``_forget_gone``). 3 queries
    whatever the number of VMs (``disk_counters`` and, beside it, ``adapter_counters``);
    read-only on the host. The uptimes must have been read after what the previous call
    read, and no other call may run meanwhile: ``stats_with_io`` sees to both.

    When the counters cannot be read this time (a CimError other than a host without the
    counter set), every VM reads 0 and the previous totals stay the baseline, so the next
    call counts both intervals: nothing is lost, and nothing is counted twice.
    """
    if not uptimes_ms:
        return {}
    guids = list(uptimes_ms)
    try:
        disks, adapters = await asyncio.gather(disk_counters(hv, guids),
                                               adapter_counters(hv, guids))
    except CimError as error:
        log.warning("VM I/O counters cannot be read now (%s): this report counts no I/O, "
                    "the next one counts it", error)
        return {guid.upper(): IoTotals() for guid in uptimes_ms}
    kept = hv.kept(_Kept)
    _forget_gone(hv, kept)
    read_at = time.monotonic()
    found: dict[str, IoTotals] = {}
    for guid, uptime_ms in uptimes_ms.items():
        key = guid.upper()
        now = {**disks.get(key, {}), **adapters.get(key, {})}
        found[key] = _interval(now, uptime_ms, kept.seen.get(key))
        kept.seen[key] = _Seen(now, uptime_ms, read_at)
    return found


def _interval(now: Mapping[str, IoTotals], uptime_ms: int, before: _Seen | None) -> IoTotals:
    """What a VM's counter instances ``now`` moved since ``before`` (what was last read
    of it), as ``io_since_last`` says."""
    if before is None:
        return IoTotals()
    if uptime_ms < before.uptime_ms:
        return total(now)
    return sum((moved.since(before.counters[name]) if name in before.counters else moved
                for name, moved in now.items()), IoTotals())


def _forget_gone(hv: HyperV, kept: _Kept) -> None:
    """Drop the records of VMs that the session's last listing of every VM
    (``vms.list_vms``, which each state report makes) no longer found: destroyed, or gone
    to another host, so a long-running agent does not keep a record of every VM it ever
    read. Once per listing. A record read after the listing was asked for stays, as its
    VM may be newer than the listing; a VM that comes back starts from a new baseline,
    as its counters do."""
    listed = vms.last_listed(hv)
    if listed is None or listed.asked_at <= kept.checked_at:
        return
    kept.checked_at = listed.asked_at
    for guid in [guid for guid, record in kept.seen.items()
                 if record.read_at < listed.asked_at and guid not in listed.guids]:
        del kept.seen[guid]


async def disk_counters(hv: HyperV, vm_guids: Collection[str]) -> Counters:
    """The I/O counters of each virtual hard disk of the VMs ``vm_guids`` (by VM GUID,
    upper case, then ``disk:<counter_key>``), totals since the disk was opened. 1 query
    for the VMs' disk files, 1 for their counters; a VM whose disks have no counters (not
    running, or a host without the counter set, which is logged) is left out."""
    media = await hard_disk_media(hv, vm_guids)
    if not media:
        return {}
    names = {guid: [counter_name(m.strings("HostResource")[0]) for m in found]
             for guid, found in media.items()}
    counters = await _device_counters(hv, {name for keys in names.values() for name in keys})
    found: Counters = {}
    for guid, keys in names.items():
        mine = {f"disk:{key}": counters[key] for key in keys if key in counters}
        if mine:
            found[guid] = mine
    return found


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


async def hard_disk_media(hv: HyperV, vm_guids: Collection[str]
                          ) -> dict[str, list[CimInstance]]:
    """The virtual hard disk media (VHD and VHDX, each with its file) of the VMs
    ``vm_guids``, by VM GUID (upper case); 1 query naming the VMs (by their devices'
    InstanceID prefix), or over every medium of the host when they are more than
    NAMED_AT_MOST; no query for no VM."""
    guids = {guid.upper() for guid in vm_guids}
    if not guids:
        return {}
    where = wql.eq("ResourceSubType", Subtype.VHD)
    if len(guids) <= NAMED_AT_MOST:
        where = where & wql.either(wql.starts_with("InstanceID", f"Microsoft:{g}\\")
                                   for g in sorted(guids))
    found: dict[str, list[CimInstance]] = {}
    for medium in await hv.cim.query(wql.select(Class.SASD, where,
                                                ("InstanceID", "HostResource")), NAMESPACE):
        guid = vms.owner_guid(medium.string("InstanceID") or "")
        if guid in guids and medium.strings("HostResource"):
            found.setdefault(guid, []).append(medium)
    return found


async def _device_counters(hv: HyperV, names: set[str]) -> dict[str, IoTotals]:
    """Counter instance (``counter_key``) -> its totals, for the instances ``names``, each
    asked for under both names Windows may give it; 1 query (every instance when they
    are many). A host without the counter set gives {} and one warning; any other CimError
    is raised."""
    named = sorted({name for key in names for name in instance_names(key)})
    where = wql.any_of("Name", named) if len(names) <= NAMED_AT_MOST else None
    query = wql.select(Class.DISK_PERF, where, ("Name", *_COUNTERS))
    devices = await inventory.read_spared(hv, Class.DISK_PERF, query, "disk I/O counters")
    found: dict[str, IoTotals] = {}
    for device in devices:
        key = counter_key(device.string("Name") or "")
        if key in names:  # an open disk has one instance, under one of its names
            found.setdefault(key, IoTotals(*(device.integer(c) or 0 for c in _COUNTERS)))
    return found


async def adapter_counters(hv: HyperV, vm_guids: Collection[str]) -> Counters:
    """The bytes received and sent by each network adapter of the VMs ``vm_guids`` (by VM
    GUID, upper case, then ``nic:<instance name>``), totals since the VM started or the
    adapter was added. 1 query naming the VMs, or over every adapter of the host when
    they are many; a VM without counters (not running, no adapter, or a host without the
    counter set, which is logged) is left out. Any other CimError is raised."""
    guids = {guid.upper() for guid in vm_guids}
    if not guids:
        return {}
    where = (wql.either(wql.like("Name", f"%{wql.like_literal(guid)}--%")
                        for guid in sorted(guids))
             if len(guids) <= NAMED_AT_MOST else None)
    query = wql.select(Class.VNIC_PERF, where, ("Name", *_ADAPTER_COUNTERS))
    adapters = await inventory.read_spared(hv, Class.VNIC_PERF, query,
                                           "network adapter counters")
    found: Counters = {}
    for adapter in adapters:
        name = adapter.string("Name") or ""
        guid = adapter_vm_guid(name)
        if guid in guids:
            found.setdefault(guid, {})[f"nic:{name.casefold()}"] = IoTotals(
                received_bytes=adapter.integer("BytesReceivedPersec") or 0,
                sent_bytes=adapter.integer("BytesSentPersec") or 0)
    return found


@dataclass(frozen=True)
class AdapterTraffic:
    """A synthetic network adapter of a running VM, by its MAC (12 upper-case hex
    digits), with the bytes it received and sent since the VM started: 0 before its
    first traffic, when Windows has no counter instance for it yet."""

    mac: str
    received_bytes: int = 0
    sent_bytes: int = 0


async def adapter_traffic(hv: HyperV, vm_guids: Collection[str]
                          ) -> dict[str, list[AdapterTraffic]]:
    """The synthetic network adapters of the running VMs ``vm_guids`` that have a static
    MAC address (by VM GUID, upper case; WMI's order), each with its totals, for
    GetVmNetworkStatsCommand. Every adapter CloudStack has made has one (its NIC's MAC);
    one with a MAC Hyper-V chose (an adapter added on the host) is left out: the
    management server looks each reported MAC up among its NICs and, finding none, fails
    the collection of every VM of the host. An adapter
    is matched to its counter instance by its own GUID (the end of its settings'
    InstanceID, ``Microsoft:<VM GUID>\\<adapter GUID>``, which the instance name ends
    with). 2 queries sent at once whatever the number of VMs (their adapters' settings,
    naming the VMs or over the whole host as ``hard_disk_media`` does, and
    ``adapter_counters``); none for no VM. Read-only; a CimError is raised."""
    guids = {guid.upper() for guid in vm_guids}
    if not guids:
        return {}
    where = (wql.either(wql.starts_with("InstanceID", f"Microsoft:{g}\\")
                        for g in sorted(guids))
             if len(guids) <= NAMED_AT_MOST else None)
    query = wql.select(Class.SEPSD, where, ("InstanceID", "Address", "StaticMacAddress"))
    settings, counters = await asyncio.gather(hv.cim.query(query, NAMESPACE),
                                              adapter_counters(hv, guids))
    moved = {(guid, adapter): totals for guid, instances in counters.items()
             for name, totals in instances.items()
             if (adapter := _adapter_guid(name)) is not None}
    found: dict[str, list[AdapterTraffic]] = {}
    for setting in settings:
        instance_id = setting.string("InstanceID") or ""
        guid = vms.owner_guid(instance_id)
        if guid not in guids or not setting.boolean("StaticMacAddress"):
            continue
        adapter = instance_id.rpartition("\\")[2].strip("{}").upper()
        totals = moved.get((guid, adapter), IoTotals())
        found.setdefault(guid, []).append(AdapterTraffic(
            (setting.string("Address") or "").upper(), totals.received_bytes,
            totals.sent_bytes))
    return found


_GUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_VM_GUID_OF_ADAPTER = re.compile(f"({_GUID})--{{?{_GUID}", re.IGNORECASE)
_ADAPTER_GUID = re.compile(f"{_GUID}--{{?({_GUID})}}?$", re.IGNORECASE)


def _adapter_guid(instance: str) -> str | None:
    """The GUID (upper case) of the adapter itself in a "Hyper-V Virtual Network
    Adapter" instance name (the one after ``--``); None for another form."""
    found = _ADAPTER_GUID.search(instance)
    return found.group(1).upper() if found else None


def adapter_vm_guid(instance: str) -> str | None:
    """The GUID (upper case) of the VM whose network adapter a "Hyper-V Virtual Network
    Adapter" instance counts: ``<VM name>_<adapter name>_<VM GUID>--<adapter GUID>``;
    None for an instance of another form (the host's own adapters)."""
    found = _VM_GUID_OF_ADAPTER.findall(instance)
    return found[-1].upper() if found else None
