"""Facts and statistics of the Hyper-V host itself: CPUs, memory, OS version, NICs, switches.

Every function here only reads; none changes the host, so every call is safe to repeat
and nothing needs cleaning up when one fails. Round trips (queries) per call:

========================  ===================================================================
``host_facts``            2 (Win32_Processor and Win32_OperatingSystem, sent concurrently)
``host_stats``            3 (hypervisor processor counters, Win32_OperatingSystem, network
                          interface counters, concurrently; the first time +1 beside them
                          and +1 after them)
``cpu_run_time_percent``  1 (the hypervisor's logical processor counters, ``_Total``, raw);
                          2, a second apart, the session's first time
``management_nic``        1 (Win32_NetworkAdapterConfiguration WHERE IPEnabled = TRUE)
``all_nics``              1 (the same query)
``switch_names``          1 (Msvm_VirtualEthernetSwitch)
``external_switch``       1 (Msvm_VirtualEthernetSwitch), +1 per switch not seen before
                          in the session, sent concurrently (its ports' settings)
``nic_switches``          ``switch_names``'s, or ``external_switch``'s: never both
``host_clock``            1 (Win32_OperatingSystem.LocalDateTime)
``vm_count``              1 (Msvm_ComputerSystem)
``services``              1 per service class, sent concurrently
``migration``             2 (the migration service's settings and its networks, concurrently)
``windows_version``       1 (Win32_OperatingSystem) the first time for a session, then 0
``fixed_facts``           0 once ``host_facts`` ran in the session (StartupRoutingCommand
                          and ReadyCommand run it), else ``host_facts``'s, once
``vm_maximums``           ``fixed_facts``'s
``hot_adds_nics``         ``windows_version``'s
``reboots_guests``        ``windows_version``'s
========================  ===================================================================

``Win32_Processor.LoadPercentage`` is never selected: WMI averages it over a second.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, ObjectPath
from hyperv_agent.cim.values import dmtf_to_iso
from hyperv_agent.errors import CimError, CimInvalidClass, HyperVError, InvalidRequest
from hyperv_agent.hyperv import inventory
from hyperv_agent.hyperv.schema import (
    CAPTION_VM,
    CENTRAL_PROCESSOR,
    CIMV2,
    NAMESPACE,
    PERF_TOTAL,
    VM_MAXIMUMS,
    Class,
    EnabledState,
)
from hyperv_agent.hyperv.session import HyperV

_BYTES_PER_KIB = 1024
GENERATION_2_SINCE = (6, 3)  # Windows Server 2012 R2: the first Hyper-V with generation 2
#: Windows Server 2016: the first Hyper-V that adds and removes network adapters of a
#: running (generation 2) VM ("What's new in Hyper-V on Windows Server 2016").
HOT_ADD_NICS_SINCE = (10, 0)
#: Windows Server 2016: the first Hyper-V whose shutdown integration component restarts
#: the guest OS (Msvm_ShutdownComponent.InitiateReboot, "Minimum supported server").
GUEST_REBOOT_SINCE = (10, 0)
_ALL_PERCENT = 100.0
_MAC_SEPARATORS = str.maketrans("", "", ":-.")
IpAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class HostFacts:
    """What CloudStack's StartupRoutingCommand reports about the host."""

    cores: int  # physical cores over all sockets
    sockets: int
    cpu_mhz: int  # MaxClockSpeed (the highest over the sockets)
    memory_bytes: int
    os_version: str  # "10.0.17763"
    product_version: str  # "10.0"
    host_name: str
    os_caption: str = ""  # "Microsoft Windows Server 2019 Datacenter"
    logical_processors: int = 0  # NumberOfLogicalProcessors over all sockets

    @property
    def runs_generation_2(self) -> bool:
        """Whether Hyper-V here runs generation 2 (UEFI) VMs: Windows Server 2012 R2
        (6.3) and later do, Windows Server 2012 (6.2) does not."""
        return _version_tuple(self.product_version) >= GENERATION_2_SINCE


@dataclass(frozen=True)
class HostStats:
    """What CloudStack's GetHostStatsCommand reports about the host."""

    cpu_utilization_percent: float
    total_memory_kib: int
    free_memory_kib: int
    received_bytes: int = 0  # since the host started, over all its network interfaces
    sent_bytes: int = 0


@dataclass(frozen=True)
class NicFacts:
    """One IP address of a host NIC."""

    ip: str
    netmask: str  # IPSubnet entry at the address's index ("255.255.255.0"; "64" for IPv6)
    mac: str  # 12 upper-case hex digits, no separators
    gateway: str | None  # the NIC's first default gateway of the address's IP version
    description: str = ""  # the adapter's Description, which names its counters


async def host_facts(hv: HyperV) -> HostFacts:
    """CPU, memory and OS facts of the host; 2 queries, read-only, safe to repeat.

    Raises HyperVError when WMI returns no Win32_OperatingSystem instance.
    """
    processors, system = await asyncio.gather(_processors(hv), _operating_system(hv))
    version = system.string("Version") or ""
    facts = HostFacts(
        cores=sum(p.integer("NumberOfCores") or 0 for p in processors),
        sockets=len(processors),
        cpu_mhz=max((p.integer("MaxClockSpeed") or 0 for p in processors), default=0),
        memory_bytes=(system.integer("TotalVisibleMemorySize") or 0) * _BYTES_PER_KIB,
        os_version=version,
        product_version=".".join(version.split(".")[:2]),
        host_name=system.string("CSName") or "",
        os_caption=system.string("Caption") or "",
        logical_processors=sum(p.integer("NumberOfLogicalProcessors") or 0 for p in processors),
    )
    kept = hv.kept(_Kept)
    kept.facts, kept.version = facts, _version_tuple(version)
    return facts


async def fixed_facts(hv: HyperV) -> HostFacts:
    """The host's facts as ``host_facts`` last read them in this session, for those that
    do not change while the host runs (processors, clock speed, Windows version; not its
    memory): no round trip once read, which StartupRoutingCommand and ReadyCommand do on
    every connection of the management server; else ``host_facts`` once."""
    kept = hv.kept(_Kept).facts
    return kept if kept is not None else await host_facts(hv)


async def windows_version(hv: HyperV) -> tuple[int, ...]:
    """The host's Windows version as numbers, (10, 0, 17763). Read-only: 1 query the
    first time for a session, then kept (a host's Windows version does not change while
    it runs)."""
    kept = hv.kept(_Kept)
    if kept.version is None:
        kept.version = _version_tuple((await _operating_system(hv)).string("Version") or "")
    return kept.version


@dataclass(frozen=True)
class VmMaximums:
    """The most vCPUs and memory Hyper-V gives one VM of ``generation`` on this host."""

    generation: int
    cpus: int  # the release's maximum per VM (``VM_MAXIMUMS``)
    memory_mb: int  # the release's maximum per VM
    release: str  # whose maximums these are: "Windows Server 2019"
    logical_processors: int  # the host's; 0 when WMI does not say (then not a bound)


def maximums_of(version: tuple[int, ...], generation: int,
                logical_processors: int) -> VmMaximums:
    """``VM_MAXIMUMS``'s row for a host of Windows ``version``; no round trip."""
    _, release, by_generation = [row for row in VM_MAXIMUMS if version >= row[0]][-1]
    cpus, memory_mb = by_generation[generation]
    return VmMaximums(generation, cpus, memory_mb, release, logical_processors)


async def vm_maximums(hv: HyperV, generation: int) -> VmMaximums:
    """The most vCPUs and memory a VM of ``generation`` gets on this host: its release's
    per-VM maximums, and its logical processors, which no VM's vCPUs may outnumber.
    Read-only; ``fixed_facts``'s round trips (none once the session read them)."""
    facts = await fixed_facts(hv)
    return maximums_of(_version_tuple(facts.os_version), generation,
                       facts.logical_processors)


async def hot_adds_nics(hv: HyperV) -> bool:
    """Whether Hyper-V here adds and removes network adapters of a running generation 2
    VM: Windows Server 2016 (10.0) and later do, 2012 R2 (6.3) does not;
    ``windows_version``'s round trips."""
    return await windows_version(hv) >= HOT_ADD_NICS_SINCE


async def reboots_guests(hv: HyperV) -> bool:
    """Whether Hyper-V here asks a guest OS to restart through its shutdown component
    (InitiateReboot): Windows Server 2016 (10.0) and later do, 2012 R2 (6.3) does not;
    ``windows_version``'s round trips."""
    return await windows_version(hv) >= GUEST_REBOOT_SINCE


async def host_stats(hv: HyperV, private_ip: str | None = None) -> HostStats:
    """Host CPU utilisation (``cpu_run_time_percent``), memory and the network byte
    counters of the management NIC, ``management_nic`` of ``private_ip``
    (``_network_bytes``); 3 queries sent at once (one round trip of latency; the
    session's first time +1 beside them, to find that NIC, and +1 after them, the CPU
    counter's second reading), read-only.

    Raises HyperVError when the hypervisor's logical processor counters or
    Win32_OperatingSystem are missing; without the network interface counters the
    network figures read 0.
    """
    run_time, system, (received, sent) = await asyncio.gather(
        cpu_run_time_percent(hv), _operating_system(hv), _network_bytes(hv, private_ip))
    return HostStats(
        cpu_utilization_percent=run_time,
        total_memory_kib=system.integer("TotalVisibleMemorySize") or 0,
        free_memory_kib=system.integer("FreePhysicalMemory") or 0,
        received_bytes=received, sent_bytes=sent,
    )


async def free_memory_kib(hv: HyperV) -> int:
    """The host's free physical memory (Win32_OperatingSystem.FreePhysicalMemory, KiB);
    1 query, read-only. HyperVError when the class has no instance."""
    query = wql.select(Class.OPERATING_SYSTEM, properties=("Name", "FreePhysicalMemory"))
    found = await hv.cim.query(query, CIMV2)
    if not found:
        raise HyperVError(f"{Class.OPERATING_SYSTEM} returned no instance")
    return found[0].integer("FreePhysicalMemory") or 0


async def _network_bytes(hv: HyperV, private_ip: str | None) -> tuple[int, int]:
    """Bytes received and sent by the management NIC (``management_nic`` of
    ``private_ip``, the one registration reports), as the C# agent reported them and KVM
    agents report their management bridge's: the host's own traffic. Summing every
    interface would count it twice on a Hyper-V host, once on the management OS's
    vEthernet adapter and again on the physical NIC under the vSwitch (with the VMs'
    traffic). Over every interface when the address is not given or that NIC has no
    counter instance; (0, 0) when the counters are absent (a host whose performance
    counters are damaged has no such class: logged)."""
    query = wql.select(Class.NIC_PERF, properties=("Name", "BytesReceivedPersec",
                                                   "BytesSentPersec"))
    interfaces, name = await asyncio.gather(
        inventory.read_spared(hv, Class.NIC_PERF, query, "network interface counters"),
        _management_interface(hv, private_ip))
    if not interfaces:
        return 0, 0
    mine = [i for i in interfaces if name is not None and i.string("Name") == name]
    if name is not None and not mine:
        hv.kept(_Kept).interfaces.pop(private_ip or "", None)  # found again next time
    counted = mine or interfaces
    return (sum(i.integer("BytesReceivedPersec") or 0 for i in counted),
            sum(i.integer("BytesSentPersec") or 0 for i in counted))


async def _management_interface(hv: HyperV, private_ip: str | None) -> str | None:
    """The "Network Interface" counter instance (``interface_counter_name`` of its
    Description) of ``management_nic`` of ``private_ip``: the adapter holding it, else
    (an agent driving the host from another machine, whose address no NIC of the host
    holds) the host's on its subnet, else its first IPv4 one. None when there is none.
    1 query the first time for an address, then kept on the session."""
    if not private_ip:
        return None
    kept = hv.kept(_Kept).interfaces
    if private_ip not in kept:
        nic = await management_nic(hv, private_ip)
        if nic is None or not nic.description:
            return None
        kept[private_ip] = interface_counter_name(nic.description)
    return kept[private_ip]


def interface_counter_name(description: str) -> str:
    """The "Network Interface" counter instance of an adapter: its Description, with the
    characters an instance name cannot hold replaced as Windows does ("(" "[", ")" "]",
    "#", "\\" and "/" "_"; the table of .NET's PerformanceCounter.InstanceName)."""
    return description.translate(_INSTANCE_NAME_CHARACTERS)


_INSTANCE_NAME_CHARACTERS = str.maketrans("()#\\/", "[]___")


@dataclass
class _Kept:
    """What the session keeps for this module: the counter instance of the management
    NIC, by the address it was found for (``management_nic``), the host's facts and
    Windows version, and which switches are External."""

    interfaces: dict[str, str] = field(default_factory=dict)
    version: tuple[int, ...] | None = None
    facts: HostFacts | None = None  # as ``host_facts`` last read them
    external: dict[str, bool] = field(default_factory=dict)  # switch GUID (lower case)


async def management_nic(hv: HyperV, ip: str) -> NicFacts | None:
    """The host NIC address a StartupRoutingCommand reports for ``ip``, the address the
    management server registered: the one equal to it; else (an agent driving the host
    from another machine, whose address no NIC of the host holds) the IPv4 one whose
    subnet holds ``ip``; else the first IPv4 one. The management server checks the
    reported netmask against the pod's CIDR, reading it as a dotted IPv4 mask: another
    subnet's, or an IPv6 prefix length ("64"), has it refuse the host. None when no
    IP-enabled NIC has an address. 1 query, read-only, safe to repeat."""
    nics = await all_nics(hv)
    try:
        wanted: IpAddress | None = ipaddress.ip_address(ip.strip())
    except ValueError:
        wanted = None
    ipv4 = [(nic, network) for nic in nics if (network := _ipv4_network(nic)) is not None]
    ranked = ([nic for nic in nics if wanted is not None and _same_ip(nic.ip, wanted)]
              + [nic for nic, network in ipv4 if wanted is not None and wanted in network]
              + [nic for nic, _ in ipv4] + list(nics))
    return ranked[0] if ranked else None


def _ipv4_network(nic: NicFacts) -> ipaddress.IPv4Network | None:
    """The IPv4 subnet of ``nic`` (its address and dotted netmask); None for an IPv6
    address or a netmask that is not a dotted IPv4 one."""
    try:
        network = ipaddress.ip_network(f"{nic.ip.strip()}/{nic.netmask.strip()}",
                                       strict=False)
    except ValueError:
        return None
    if not isinstance(network, ipaddress.IPv4Network) or "." not in nic.netmask:
        return None
    return network


async def all_nics(hv: HyperV) -> tuple[NicFacts, ...]:
    """One entry per address of every IP-enabled host NIC, in WMI's order; 1 query,
    read-only, safe to repeat; empty when no NIC is IP-enabled."""
    query = wql.select(
        Class.NIC_CONFIGURATION, wql.eq("IPEnabled", True),
        ("IPAddress", "IPSubnet", "MACAddress", "DefaultIPGateway", "Description"),
    )
    adapters = await hv.cim.query(query, CIMV2)
    return tuple(nic for adapter in adapters for nic in _addresses(adapter))


async def switch_names(hv: HyperV) -> tuple[str, ...]:
    """ElementNames of the host's virtual switches; 1 query, read-only, safe to repeat."""
    return (await nic_switches(hv, unlabelled=False))[0]


def switch_named(names: Sequence[str], label: str) -> str | None:
    """The switch of ``names`` (``switch_names``) that ``label`` (a traffic label) names,
    as the host spells it; None when none does. Hyper-V matches a switch's name without
    regard to case (a WQL ``=`` on ElementName, ``Get-VMSwitch -Name``), as the C# agent
    found the switch of a label, so a label typed "vswitch0" is the switch "vSwitch0";
    a name spelt exactly as the label is preferred when the host has several."""
    if label in names:
        return label
    folded = label.casefold()
    return next((name for name in names if name.casefold() == folded), None)


async def external_switch(hv: HyperV) -> str:
    """The ElementName of the vSwitch for a NIC without a traffic label: the first, in the
    order WMI lists the host's switches, that is External, i.e. connects the VMs on it
    to a physical network adapter (one of its ports' settings, associated with the
    switch's Msvm_VirtualEthernetSwitchSettingData, has an Msvm_ExternalEthernetPort as
    HostResource). Internal and Private switches reach nothing outside the host.

    None External: InvalidRequest naming the switches there are. Read-only, safe to
    repeat. 1 query, +1 per switch not seen before in this session (concurrently): a
    switch's kind is kept by its GUID for the session.
    """
    return (await nic_switches(hv, unlabelled=True))[1]


async def nic_switches(hv: HyperV, *, unlabelled: bool) -> tuple[tuple[str, ...], str]:
    """``switch_names`` and, when ``unlabelled``, ``external_switch`` ("" otherwise), from
    one query of the switches (+``external_switch``'s for switches not seen before)."""
    query = wql.select(Class.SWITCH, properties=("Name", "ElementName"))
    found = [(guid, name) for s in await hv.cim.query(query, NAMESPACE)
             if (guid := (s.string("Name") or "").lower()) and (name := s.string("ElementName"))]
    names = tuple(name for _, name in found)
    if not unlabelled:
        return names, ""
    kinds = hv.kept(_Kept).external
    fresh = [guid for guid, _ in found if guid not in kinds]
    answers = await asyncio.gather(*(_has_external_port(hv, guid) for guid in fresh))
    kinds.update(zip(fresh, answers, strict=True))
    chosen = next((name for guid, name in found if kinds[guid]), None)
    if chosen is None:
        there = ", ".join(repr(name) for _, name in found) or "none"
        raise InvalidRequest("the NIC names no switch (traffic label) and the host has no "
                             "External virtual switch (one bound to a physical network "
                             f"adapter) to put it on; its switches: {there}")
    return names, chosen


async def _has_external_port(hv: HyperV, guid: str) -> bool:
    """Whether the switch ``guid`` has a port to a physical adapter; 1 query."""
    settings = ObjectPath.for_keys(Class.SWITCH_SETTINGS, NAMESPACE, InstanceID=f"Microsoft:{guid}")
    ports = await hv.cim.associators(settings, result_class=Class.EPASD)
    return any(_names_class(resource, Class.EXTERNAL_PORT)
               for port in ports for resource in port.strings("HostResource"))


def _names_class(path: str, class_name: str) -> bool:
    try:
        return ObjectPath.parse(path).class_name.lower() == class_name.lower()
    except CimError:  # not a path: no class
        return False


async def host_clock(hv: HyperV) -> float:
    """The host's clock now, as seconds since the UNIX epoch (Win32_OperatingSystem's
    LocalDateTime, with its UTC offset); 1 query, read-only, safe to repeat.

    Raises HyperVError when the host reports no time or one that cannot be read.
    """
    query = wql.select(Class.OPERATING_SYSTEM, properties=("Name", "LocalDateTime"))
    found = await hv.cim.query(query, CIMV2)
    text = found[0].string("LocalDateTime") if found else None
    if not text:
        raise HyperVError(f"{Class.OPERATING_SYSTEM} reports no LocalDateTime")
    try:
        moment = datetime.datetime.fromisoformat(dmtf_to_iso(text))
    except (CimError, ValueError):
        raise HyperVError(f"{Class.OPERATING_SYSTEM}.LocalDateTime {text!r} is not a "
                          "time") from None
    return moment.timestamp()


@dataclass(frozen=True)
class ServiceState:
    """One of Hyper-V's management services: its instance's Name (``vmms``) and whether it
    runs; ``name`` None when the class has no instance (the service is not there)."""

    class_name: str
    name: str | None
    started: bool


async def services(hv: HyperV, class_names: Sequence[str]) -> tuple[ServiceState, ...]:
    """The state of each service class in ``class_names``; 1 query each, concurrently,
    read-only. CimInvalidClass when the host has no such class."""
    return tuple(await asyncio.gather(*(_service(hv, name) for name in class_names)))


async def _service(hv: HyperV, class_name: str) -> ServiceState:
    found = await hv.cim.query(wql.select(class_name, properties=("Name", "Started",
                                                               "EnabledState")), NAMESPACE)
    if not found:
        return ServiceState(class_name, None, False)
    started = found[0].boolean("Started")
    if started is None:
        started = found[0].integer("EnabledState") == EnabledState.ENABLED
    return ServiceState(class_name, found[0].string("Name"), started)


async def vm_count(hv: HyperV) -> int:
    """How many VMs the host has (Msvm_ComputerSystem instances captioned as VMs); 1 query,
    read-only. What it proves is that root\\virtualization\\v2 answers."""
    found = await hv.cim.query(wql.select(Class.COMPUTER_SYSTEM, properties=("Name", "Caption")),
                            NAMESPACE)
    return sum(1 for system in found if system.string("Caption") == CAPTION_VM)


@dataclass(frozen=True)
class MigrationSettings:
    """The host's live-migration settings (Msvm_VirtualSystemMigrationServiceSettingData)
    and the subnets it accepts migrations on, by priority (Metric, lowest first)."""

    enabled: bool
    kerberos: bool  # AuthenticationType 1; 0 is CredSSP
    simultaneous: int  # MaximumActiveVirtualSystemMigration
    networks: tuple[str, ...]  # "10.1.2.0/24"


async def migration(hv: HyperV) -> MigrationSettings:
    """The host's live-migration settings; 2 queries, concurrently, read-only.
    HyperVError when the host has no settings instance."""
    settings, networks = await asyncio.gather(
        hv.cim.query(wql.select(Class.MIGRATION_SERVICE_SETTINGS, properties=(
            "InstanceID", "EnableVirtualSystemMigration", "AuthenticationType",
            "MaximumActiveVirtualSystemMigration")), NAMESPACE),
        hv.cim.query(wql.select(Class.MIGRATION_NETWORKS, properties=(
            "InstanceID", "SubnetNumber", "PrefixLength", "Metric")), NAMESPACE))
    if not settings:
        raise HyperVError(f"the host has no {Class.MIGRATION_SERVICE_SETTINGS} instance")
    found = settings[0]
    ordered = sorted(networks, key=lambda n: n.integer("Metric") or 0)
    return MigrationSettings(
        enabled=found.boolean("EnableVirtualSystemMigration") is True,
        kerberos=found.integer("AuthenticationType") == 1,
        simultaneous=found.integer("MaximumActiveVirtualSystemMigration") or 0,
        networks=tuple(f"{n.string('SubnetNumber')}/{n.integer('PrefixLength')}"
                       for n in ordered))


# --- helpers ------------------------------------------------------------------------------


async def _processors(hv: HyperV) -> list[CimInstance]:
    query = wql.select(
        Class.PROCESSOR_CIMV2, wql.eq("ProcessorType", CENTRAL_PROCESSOR),
        ("DeviceID", "NumberOfCores", "NumberOfLogicalProcessors", "MaxClockSpeed"),
    )
    return await hv.cim.query(query, CIMV2)


async def _operating_system(hv: HyperV) -> CimInstance:
    query = wql.select(
        Class.OPERATING_SYSTEM,
        properties=("Version", "Caption", "CSName", "TotalVisibleMemorySize",
                    "FreePhysicalMemory"),
    )
    found = await hv.cim.query(query, CIMV2)
    if not found:
        raise HyperVError(f"{Class.OPERATING_SYSTEM} returned no instance")
    return found[0]


@dataclass(frozen=True)
class RunTimeSample:
    """One reading of the hypervisor's ``_Total`` % Total Run Time counter, raw: run time
    and the time it was read, both in 100 ns units (a PERF_100NSEC_TIMER counter)."""

    run_100ns: int
    at_100ns: int

    def percent_since(self, earlier: RunTimeSample) -> float | None:
        """The counter's value over the time from ``earlier`` to this reading, as Perfmon
        formats it (100 x run time / elapsed time); None when the two cannot be
        compared (the same instant, or the counter went back: the host restarted)."""
        elapsed = self.at_100ns - earlier.at_100ns
        run = self.run_100ns - earlier.run_100ns
        if elapsed <= 0 or run < 0:
            return None
        return 100.0 * run / elapsed


@dataclass
class _RunTimeKept:
    """The session's last reading of the run time counter."""

    last: RunTimeSample | None = None


#: A reading kept longer than this does not start the next interval: its figure would
#: average over a time the management server did not ask about.
RUN_TIME_WINDOW_100NS = 600 * 10_000_000
#: The interval between two readings taken for one figure (the first of a session, or
#: after a gap longer than the window): Perfmon's own sample interval.
RUN_TIME_SAMPLE_S = 1.0


async def cpu_run_time_percent(hv: HyperV, sample_s: float | None = None) -> float:
    """How busy the host's logical processors are, 0..100: the hypervisor's
    "Hyper-V Hypervisor Logical Processor(_Total)\\% Total Run Time" (guest plus
    hypervisor run time, averaged over every logical processor) since the session's
    previous reading, as KVM's agent reports the host's CPU since its previous report;
    1 query, read-only. The session's first call (and one after a gap longer than
    ``RUN_TIME_WINDOW_100NS``, or when the counter went back) reads twice, ``sample_s``
    (default ``RUN_TIME_SAMPLE_S``) apart: 2 queries.

    It is read from the hypervisor because on a Hyper-V host the management OS is itself
    a partition: its Processor and Processor Information counters see only its own
    virtual processors, so a host whose VMs keep every core busy reads nearly idle there.
    The raw counter class is read and the figure computed from two readings: a rate
    counter needs two samples, and the formatted class (Win32_PerfFormattedData_*) read
    once without a refresher — as one WMI query reads it — has only one ("classes derived
    from Win32_PerfRawData and from Win32_PerfFormattedData must be used with a refresher
    object", Monitoring Performance Data). The figure can pass 100 by a hair (the counter
    and the clock are read one after the other); it is clamped to 0..100 and given to
    hundredths of a percent, as the management server shows it (digits beyond are the
    noise of reading the two one after the other).

    Raises HyperVError naming the class when the host has no such counters (no hypervisor
    running, or its performance counters damaged: ``doctor`` names both and the counter
    rebuild) or no ``_Total`` instance. It does not fall back to the management OS's
    processor counters: that figure is the one that misses the VMs, and an operator
    reading a plausible but wrong utilisation on the management server would have no sign
    of it, where a failed GetHostStatsCommand names what to fix.
    """
    kept = hv.kept(_RunTimeKept)
    earlier = kept.last
    now = await _run_time_sample(hv)
    percent = None
    if earlier is not None and now.at_100ns - earlier.at_100ns <= RUN_TIME_WINDOW_100NS:
        percent = now.percent_since(earlier)
    if percent is None:
        await asyncio.sleep(RUN_TIME_SAMPLE_S if sample_s is None else sample_s)
        earlier, now = now, await _run_time_sample(hv)
        percent = now.percent_since(earlier)
    kept.last = now
    return round(min(_ALL_PERCENT, max(0.0, percent or 0.0)), 2)


async def _run_time_sample(hv: HyperV) -> RunTimeSample:
    query = wql.select(Class.HYPERVISOR_LP_PERF, wql.eq("Name", PERF_TOTAL),
                       ("Name", "PercentTotalRunTime", "Timestamp_Sys100NS"))
    try:
        found = await hv.cim.query(query, CIMV2)
    except CimInvalidClass:
        raise HyperVError(
            f"{Class.HYPERVISOR_LP_PERF} (the \"Hyper-V Hypervisor Logical Processor\" "
            "counters) is missing on this host: is the hypervisor running? If it is, "
            "rebuild the performance counters (lodctr /R, then winmgmt /resyncperf)"
        ) from None
    run = found[0].integer("PercentTotalRunTime") if found else None
    at = found[0].integer("Timestamp_Sys100NS") if found else None
    if run is None or at is None:
        raise HyperVError(f"{Class.HYPERVISOR_LP_PERF} has no {PERF_TOTAL} total run time")
    return RunTimeSample(run, at)


def _version_tuple(text: str) -> tuple[int, ...]:
    """``"6.3"`` -> (6, 3); the leading numeric parts only, (0,) for none."""
    parts = []
    for part in text.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts) or (0,)


def _addresses(adapter: CimInstance) -> list[NicFacts]:
    masks = adapter.strings("IPSubnet")
    gateways = adapter.strings("DefaultIPGateway")
    mac = (adapter.string("MACAddress") or "").translate(_MAC_SEPARATORS).upper()
    description = adapter.string("Description") or ""
    return [
        NicFacts(ip, masks[index] if index < len(masks) else "", mac, _gateway(ip, gateways),
                 description)
        for index, ip in enumerate(adapter.strings("IPAddress"))
    ]


def _gateway(ip: str, gateways: tuple[str, ...]) -> str | None:
    """The first gateway of the same IP version as ``ip``."""
    version = _version(ip)
    return next((g for g in gateways if _version(g) == version), None)


def _version(text: str) -> int | None:
    try:
        return ipaddress.ip_address(text.strip()).version
    except ValueError:
        return None


def _same_ip(text: str, wanted: IpAddress) -> bool:
    try:
        return ipaddress.ip_address(text.strip()) == wanted
    except ValueError:
        return False
