"""One emulated Hyper-V host: its store, clock, files, instruments and first-boot objects."""

from __future__ import annotations

import contextlib
import datetime
import functools
import ipaddress
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ClassVar

from hyperv_agent.cim.api import CIMV2_NAMESPACE, V2_NAMESPACE, CimValue, ObjectPath
from hyperv_agent.cim.values import dmtf_from_python
from hyperv_agent.dirlock import DirectoryLock
from hyperv_agent.emulator import codes
from hyperv_agent.emulator.codes import EnabledState
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.instruments import Counters, Faults
from hyperv_agent.emulator.jobbook import JobBook
from hyperv_agent.emulator.paths import HostPaths
from hyperv_agent.emulator.schema import CLASSES, ClassDef, concrete_classes
from hyperv_agent.emulator.staging import Staging
from hyperv_agent.emulator.store import Record, Store, Transaction
from hyperv_agent.emulator.worker import Worker, shared
from hyperv_agent.errors import DirectoryInUse

if TYPE_CHECKING:
    from hyperv_agent.emulator.cluster import Member

log = logging.getLogger("hyperv_agent.emulator")

Clock = Callable[[], float]

LOCK_FILE = "emulator.lock"  # in the state directory: held by the process that opened it
SERVICES = {
    "Msvm_VirtualSystemManagementService": "vmms",
    "Msvm_ImageManagementService": "vhdsvc",
    "Msvm_VirtualEthernetSwitchManagementService": "nvspwmi",
    "Msvm_VirtualSystemMigrationService": "migrationwmi",
    "Msvm_MetricService": "metricsvc",
}
MIGRATION_SERVICE_SETTINGS = "Msvm_VirtualSystemMigrationServiceSettingData"
MIGRATION_NETWORK_SETTINGS = "Msvm_VirtualSystemMigrationNetworkSettingData"
#: The "Hyper-V Hypervisor Logical Processor" counter set.
HYPERVISOR_LP_COUNTERS = "Win32_PerfFormattedData_HvStats_HyperVHypervisorLogicalProcessor"
HYPERVISOR_LP_RAW = "Win32_PerfRawData_HvStats_HyperVHypervisorLogicalProcessor"
SYS_100NS_PER_S = 10_000_000  # Frequency_Sys100NS
FILETIME_EPOCH_S = 11_644_473_600  # 1601-01-01 to 1970-01-01: Timestamp_Sys100NS's origin
#: Resource-metering definitions of disk I/O (Msvm_AggregationMetricDefinition):
#: ElementName, Units, ProgrammaticUnits. Their Ids are the emulator's own.
DISK_METRICS: tuple[tuple[str, str, str], ...] = (
    ("Disk Data Read", "Megabytes", "byte*2^20"),
    ("Disk Data Written", "Megabytes", "byte*2^20"),
    ("Normalized I/O Count", "Count", "count"),
)
# Template (…\Default) instances: (class, ResourceType, ResourceSubType or None, element name).
TEMPLATES: tuple[tuple[str, int | None, str | None, str], ...] = (
    ("Msvm_ProcessorSettingData", 3, codes.SUBTYPE_PROCESSOR, "Processor"),
    ("Msvm_MemorySettingData", 4, codes.SUBTYPE_MEMORY, "Memory"),
    ("Msvm_ResourceAllocationSettingData", 5, codes.SUBTYPE_IDE, "IDE Controller"),
    ("Msvm_ResourceAllocationSettingData", 6, codes.SUBTYPE_SCSI, "SCSI Controller"),
    ("Msvm_ResourceAllocationSettingData", 17, codes.SUBTYPE_DISK_DRIVE, "Hard Drive"),
    ("Msvm_ResourceAllocationSettingData", 16, codes.SUBTYPE_DVD_DRIVE, "DVD Drive"),
    ("Msvm_ResourceAllocationSettingData", 17, codes.SUBTYPE_PHYSICAL_DISK, "Hard Drive"),
    ("Msvm_StorageAllocationSettingData", 31, codes.SUBTYPE_VHD, "Hard Disk Image"),
    ("Msvm_StorageAllocationSettingData", 31, codes.SUBTYPE_ISO, "ISO Disk Image"),
    ("Msvm_SyntheticEthernetPortSettingData", 10, codes.SUBTYPE_NIC, "Network Adapter"),
    ("Msvm_EthernetPortAllocationSettingData", 33, codes.SUBTYPE_PORT, "Ethernet Connection"),
    ("Msvm_EthernetSwitchPortVlanSettingData", None, None, "Ethernet Switch Port VLAN Settings"),
    ("Msvm_EthernetSwitchPortBandwidthSettingData", None, None,
     "Ethernet Switch Port Bandwidth Settings"),
    ("Msvm_EthernetSwitchPortAclSettingData", None, None, "Ethernet Switch Port Acl Settings"),
    ("Msvm_EthernetSwitchPortExtendedAclSettingData", None, None,
     "Ethernet Switch Port Extended Acl Settings"),
    ("Msvm_EthernetSwitchPortSecuritySettingData", None, None,
     "Ethernet Switch Port Security Settings"),
)


#: The host's network adapters: the management OS's vEthernet adapter on the external
#: vSwitch (it holds the private address), and the physical NIC under that switch. Their
#: "Network Interface" counter instances are named after their Description, with the
#: characters an instance name cannot hold replaced as Windows does ("#" becomes "_").
MANAGEMENT_ADAPTER = "Hyper-V Virtual Ethernet Adapter #2"
UPLINK_ADAPTER = "Emulated Ethernet Adapter #1"  # the first external switch's port
#: Steady traffic on the emulated host's network interfaces, so their counters move like a
#: real host's: bytes a second received and sent by the management OS (its vEthernet
#: adapter, which holds the private address), and by the physical NIC under the external
#: vSwitch, which carries the management OS's traffic and the VMs' besides.
NIC_RECEIVE_BPS = 125_000
NIC_SEND_BPS = 50_000
UPLINK_RECEIVE_BPS = 2_125_000
UPLINK_SEND_BPS = 1_050_000


def cim_datetime(epoch: float) -> str:
    """A CIM datetime (``yyyymmddHHMMSS.mmmmmm+000``) in UTC."""
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.strftime("%Y%m%d%H%M%S.%f") + "+000"


def cim_interval(seconds: float) -> str:
    """A CIM interval (``ddddddddhhmmss.mmmmmm:000``): 300 s is ``00000000000500.000000:000``."""
    return dmtf_from_python(datetime.timedelta(seconds=seconds))


class EmulatedHost:
    """State and identity of one emulated host. Several can live in one process."""

    #: The live hosts of this process by name (lower case), in the order they opened:
    #: hosts made in different state directories may share a name (``named``).
    registry: ClassVar[dict[str, list[EmulatedHost]]] = {}

    def __init__(self, config: EmulatorConfig, clock: Clock = time.time,
                 worker: Worker | None = None) -> None:
        self.config = config
        self.clock = clock
        # The processors' run time (in 100 ns times hundredths of a logical processor),
        # the time counted (in 100 ns) and when they were last read (in 100 ns), integers
        # so that figures formatted from them are exact: see ``run_time_100ns``.
        self._run_time, self._counted = 0, 0
        self._run_time_at = round(clock() * SYS_100NS_PER_S)
        self.worker = worker or shared()  # where the host's work runs (see ``worker``)
        self.paths = HostPaths(config)
        self.counters = Counters()
        self.faults = Faults()
        self.job_book = JobBook()  # when its jobs go, which hold slots (see ``jobs``)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        config.drive_root("C").mkdir(parents=True, exist_ok=True)
        self.lock: DirectoryLock | None = None
        #: Whether ``close`` has run: the actions the host set for later (``later``) then
        #: find it closed and do nothing.
        self.closed = False
        #: Why this host only reads its state directory (another process holds it).
        self.held_elsewhere: str | None = None
        db = config.state_dir / "emulator.sqlite3" if config.persist else None
        self.cluster: Member | None = None
        # what is opened is closed again, in reverse order, when a later step fails
        with contextlib.ExitStack() as opened:
            if db is not None:
                self._hold(config)
                opened.callback(self._let_go)
            self.store = Store(db, self.faults.before_commit,
                               read_only=self.held_elsewhere is not None)
            opened.callback(self.store.close)
            self._bring_up(config)
            if config.cluster_dir is not None and self.held_elsewhere is None:
                from hyperv_agent.emulator.cluster import join  # it needs the VM model

                self.cluster = join(self)
                opened.callback(self.cluster.close)
            from hyperv_agent.emulator import jobs  # jobs import this module

            # the jobs an earlier process left (``jobs._book``), once the cluster's
            # recovery settled those of the moves it finished
            jobs.open_book(self)
            from hyperv_agent.emulator.services import power  # the services import this module

            # the guests still shutting down or restarting go on, their timers armed again
            power.guests_go_on(self)
            opened.pop_all()
        EmulatedHost.registry.setdefault(config.host_name.lower(), []).append(self)

    def _bring_up(self, config: EmulatorConfig) -> None:
        """The stored host made ready: disks left half made swept, a first boot's
        records made or an earlier version's completed, its address and migration
        settings as ``config`` has them."""
        # disks being made are noted where a later opening finds them (not by a reader)
        self.staging = Staging(config.state_dir / "staging" if self.lock is not None
                               else None)
        self.staging.sweep()
        if self.store.empty:
            self._first_boot()
        self._complete_stored_host()
        self._listen_on(config.private_ip)
        self._migration_settings()

    def _hold(self, config: EmulatorConfig) -> None:
        """Hold the state directory; when another process holds it, refuse, or read it
        (``read_if_held``)."""
        try:
            self.lock = DirectoryLock.take(
                config.state_dir, LOCK_FILE, "the emulated host's state directory",
                "the emulated host lives in that process; others reach it through its WinRM "
                "face ([emulator] winrm, then --backend wsman)")
        except DirectoryInUse as error:
            if not config.read_if_held:
                raise
            self.held_elsewhere = error.fact

    def _let_go(self) -> None:
        if self.lock is not None:
            self.lock.release()

    @property
    def name(self) -> str:
        return self.config.host_name

    @classmethod
    def named(cls, name: str) -> list[EmulatedHost]:
        """The live hosts of this process named ``name`` (ignoring case)."""
        return list(cls.registry.get(name.lower(), ()))

    @classmethod
    def live(cls) -> list[EmulatedHost]:
        """Every live host of this process."""
        return [host for hosts in cls.registry.values() for host in hosts]

    def later(self, delay_s: float, action: Callable[[], None]) -> None:
        """Run ``action`` after ``delay_s`` on the emulator's thread (``Worker.later``:
        timed once an event loop runs), unless the host is closed by then: what it set
        for later (a guest's shutdown, a queued job's work) goes with it, and the host
        opened again on its state directory sets it afresh from what it stored
        (``power.guests_go_on``, ``jobs`` module notes), so nothing acts on the records
        a closed host left in memory."""
        self.worker.later(delay_s, functools.partial(self._if_open, action))

    def _if_open(self, action: Callable[[], None]) -> None:
        if self.closed:
            log.debug("a delayed action of the closed emulated host %s is dropped", self.name)
            return
        action()

    @property
    def os_major(self) -> int:
        """The major version of the host's Windows (10 for 10.0.17763; 0 if unreadable)."""
        major = self.config.os_version.partition(".")[0]
        return int(major) if major.isdigit() else 0

    @property
    def os_release(self) -> tuple[int, ...]:
        """The host's Windows version as numbers, (10, 0, 17763): its leading numeric
        parts; (0,) when unreadable."""
        parts: list[int] = []
        for part in self.config.os_version.split("."):
            if not part.isdigit():
                break
            parts.append(int(part))
        return tuple(parts) or (0,)

    def vm_maximums(self, generation: int) -> tuple[int, int, str]:
        """(vCPUs, memory MB, release): the most Hyper-V on this host gives one VM of
        ``generation`` (``codes.VM_MAXIMUMS``)."""
        version = self.os_release
        _, release, by_generation = [r for r in codes.VM_MAXIMUMS if version >= r[0]][-1]
        cpus, memory_mb = by_generation[generation]
        return cpus, memory_mb, release

    def has_method(self, class_name: str, method: str) -> bool:
        """Whether this host's Windows has ``method`` of ``class_name`` (declared in the
        schema): False for one newer than it (``codes.METHODS_SINCE_MAJOR``)."""
        since = codes.METHODS_SINCE_MAJOR.get((class_name.lower(), method.lower()), 0)
        return self.os_major >= since

    def close(self) -> None:
        self.closed = True  # before anything goes: what it set for later finds it closed
        if self.cluster is not None:
            self.cluster.close()
        key = self.name.lower()
        others = [host for host in EmulatedHost.registry.get(key, ()) if host is not self]
        if others:
            EmulatedHost.registry[key] = others
        else:
            EmulatedHost.registry.pop(key, None)
        self.store.close()
        self._let_go()

    def _complete_stored_host(self) -> None:
        """A state directory an earlier version made, brought up to what this version
        keeps, in one transaction, so the host reads from its first call as one made now:

        - the hypervisor's logical processor counters (``_Total``, formatted and raw),
          which its first boot did not make;
        - the virtual processors a running or paused VM started with, which its record
          did not keep (``model.remember_running_cpus``);
        - the ports of its switches (``_switch_ports``), which its first boot did not make;
        - the processor features a running, paused or saved VM started with, which its
          record did not keep (``processors.remember_started``);
        - the guest network adapter configurations of a running or paused VM's NICs,
          which its start did not make (``model.add_guest_networks``).
        """
        # the VM model and the processors' import this module
        from hyperv_agent.emulator import model, processors

        txn = self.store.transaction()
        for counters in self._hypervisor_counters(
                lambda name: next(self.records(name), None) is None):
            txn.put(counters)
        ports = concrete_classes("Msvm_EthernetPortAllocationSettingData", V2_NAMESPACE)
        bare = frozenset(guid for s in self.records("Msvm_VirtualEthernetSwitch")
                         if not model.owned_records(txn, ports, guid := str(s["Name"])))
        if bare:
            stale = {str(p["DeviceID"]).lower() for p in self.records("Msvm_ExternalEthernetPort")}
            for record in self._switch_ports(bare):
                if str(record["DeviceID"] or "").lower() not in stale:
                    txn.put(record)
        model.remember_running_cpus(txn)
        processors.remember_started(self, txn)
        model.add_guest_networks(self, txn)
        txn.commit()

    def _listen_on(self, address: str) -> None:
        """The migration service listens on the configured private address (also when it
        changed since the host's first boot), as the host's NIC reports it."""
        txn = self.store.transaction()
        for class_name, name in (("Msvm_VirtualSystemMigrationService",
                                  "MigrationServiceListenerIPAddressList"),
                                 ("Win32_NetworkAdapterConfiguration", "IPAddress")):
            for record in self.records(class_name):
                if record[name] != (address,):
                    staged = txn.edit(record.path)
                    assert staged is not None
                    staged[name] = (address,)
        txn.commit()

    def _migration_settings(self) -> None:
        """The live-migration settings and networks of the configuration (also when they
        changed since the host's first boot), as ModifyServiceSettings and
        Add/RemoveNetworkSettings leave them on a real host."""
        wanted = self.config.migration
        txn = self.store.transaction()
        for record in self.records(MIGRATION_SERVICE_SETTINGS):
            staged = txn.edit(record.path)
            assert staged is not None
            staged["EnableVirtualSystemMigration"] = wanted.enabled
            staged["AuthenticationType"] = 1 if wanted.kerberos else 0
            staged["MaximumActiveVirtualSystemMigration"] = wanted.simultaneous
        for record in self.records(MIGRATION_NETWORK_SETTINGS):
            txn.delete(record.path)
        for metric, subnet in enumerate(self._migration_networks()):
            txn.put(self.new_record(
                MIGRATION_NETWORK_SETTINGS, InstanceID=f"Microsoft:{self.name}\\{subnet}",
                ElementName=str(subnet), SubnetNumber=str(subnet.network_address),
                PrefixLength=subnet.prefixlen, Metric=metric, Tags=()))
        txn.commit()

    def _migration_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        named = self.config.migration.networks
        if named is None:
            mask = self.config.private_netmask
            return [ipaddress.ip_network(f"{self.config.private_ip}/{mask}", strict=False)]
        return [ipaddress.ip_network(subnet, strict=False) for subnet in named]

    # --- building records -----------------------------------------------------------------

    def new_record(self, class_name: str, **values: CimValue) -> Record:
        """A record of ``class_name`` with the class defaults, then ``values`` (a record
        holds no null: a property it does not hold reads null)."""
        class_def = CLASSES[class_name]
        merged = dict(class_def.set_defaults)
        for name, value in values.items():
            prop = class_def.prop(name)
            if prop is None:
                raise KeyError(f"{class_name} has no property {name}")
            if value is None:
                merged.pop(prop.name, None)
            else:
                merged[prop.name] = value
        return Record(class_def, merged)

    def service_path(self, class_name: str) -> ObjectPath:
        return ObjectPath.for_keys(
            class_name, CreationClassName=class_name, Name=SERVICES[class_name],
            SystemCreationClassName="Msvm_ComputerSystem", SystemName=self.name,
        )

    def host_path(self) -> ObjectPath:
        return ObjectPath.for_keys(
            "Msvm_ComputerSystem", CreationClassName="Msvm_ComputerSystem", Name=self.name
        )

    def records(self, class_name: str, txn: Transaction | None = None) -> Iterator[Record]:
        """Instances of ``class_name`` or its subclasses (seen through ``txn`` if given)."""
        return (txn or self.store).instances_of(self._concrete(class_name))

    def keyed_records(self, class_name: str) -> Iterator[tuple[str, Record]]:
        """The stored instances of ``class_name`` or its subclasses, with their path keys."""
        return self.store.keyed_instances_of(self._concrete(class_name))

    @staticmethod
    def _concrete(class_name: str) -> tuple[ClassDef, ...]:
        class_def = CLASSES.get(class_name)
        namespace = class_def.namespace if class_def else V2_NAMESPACE
        return concrete_classes(class_name, namespace)

    # --- first boot -----------------------------------------------------------------------

    def _first_boot(self) -> None:
        txn = self.store.transaction()
        for record in self._host_records():
            txn.put(record)
        txn.commit()

    def _host_records(self) -> Iterator[Record]:
        yield self.new_record(
            "Msvm_ComputerSystem", CreationClassName="Msvm_ComputerSystem", Name=self.name,
            ElementName=self.name, Caption=codes.CAPTION_HOST,
            Description="Microsoft Hosting Computer System",
            EnabledState=EnabledState.ENABLED, HealthState=codes.HealthState.OK,
            OperationalStatus=(2,), RequestedState=codes.RequestedState.NOT_APPLICABLE,
        )
        yield from self._service_records()
        yield from self._metric_definitions()
        yield from self._template_records()
        yield from self._secure_boot_templates()
        yield from self._switch_records()
        yield from self._cimv2_records()

    def _service_records(self) -> Iterator[Record]:
        for class_name, name in SERVICES.items():
            record = self.new_record(
                class_name, CreationClassName=class_name, Name=name,
                SystemCreationClassName="Msvm_ComputerSystem", SystemName=self.name,
                ElementName=name, EnabledState=EnabledState.ENABLED, Started=True,
                HealthState=codes.HealthState.OK,
            )
            if class_name == "Msvm_VirtualSystemMigrationService":
                record["MigrationServiceListenerIPAddressList"] = (self.config.private_ip,)
            yield record
        yield self.new_record(
            MIGRATION_SERVICE_SETTINGS,
            InstanceID=f"Microsoft:{self.name}", EnableVirtualSystemMigration=True,
            MaximumActiveVirtualSystemMigration=2, MaximumActiveStorageMigration=2,
            AuthenticationType=1, EnableCompression=True, EnableSmbTransport=False,
        )
        for migration_type in (32768, 32769, 32770, 32771):
            yield self.new_record(
                "Msvm_VirtualSystemMigrationSettingData",
                InstanceID=f"Microsoft:MigrationSettings\\{migration_type}",
                MigrationType=migration_type, TransportType=5,
            )

    def _metric_definitions(self) -> Iterator[Record]:
        """Cumulative counters since metering began (ChangeType 3 Counter, TimeScope 3
        Interval, DataType 13 uint64, Calculable 2 Summable, GatheringType 2 OnChange)."""
        for name, units, programmatic in DISK_METRICS:
            metric_id = f"Microsoft:{str(uuid.uuid5(uuid.NAMESPACE_URL, name)).upper()}"
            yield self.new_record(
                "Msvm_AggregationMetricDefinition", InstanceID=metric_id, Id=metric_id,
                Name=name, ElementName=name, Units=units, ProgrammaticUnits=programmatic,
                DataType=13, Calculable=2, IsContinuous=True, ChangeType=3, TimeScope=3,
                GatheringType=2, BreakdownDimensions=(),
            )

    def _template_records(self) -> Iterator[Record]:
        for class_name, resource_type, subtype, element in TEMPLATES:
            guid = uuid.uuid5(uuid.NAMESPACE_URL, f"{class_name}/{subtype}")
            values: dict[str, CimValue] = {
                "InstanceID": f"Microsoft:Definition\\{str(guid).upper()}\\Default",
                "ElementName": element,
            }
            if resource_type is not None:
                values.update(ResourceType=resource_type, ResourceSubType=subtype)
            yield self.new_record(class_name, **values)

    def _secure_boot_templates(self) -> Iterator[Record]:
        """The secure boot template VSSDs (2016+ only): no VM, no devices, read-only."""
        if self.os_major < codes.SECURE_BOOT_TEMPLATES_SINCE_MAJOR:
            return
        for name, template_id in codes.SECURE_BOOT_TEMPLATES:
            yield self.new_record(
                "Msvm_VirtualSystemSettingData",
                InstanceID=f"Microsoft:Definition\\{template_id.upper()}\\SecureBootTemplate",
                ElementName=name, VirtualSystemType=codes.SECURE_BOOT_TEMPLATE,
                VirtualSystemSubType=codes.GENERATION_2, SecureBootEnabled=True,
                SecureBootTemplateId=template_id, Caption="Secure Boot Template",
            )

    def _switch_records(self) -> Iterator[Record]:
        for switch_name in self.config.switches:
            guid = self._switch_guid(switch_name)
            yield self.new_record(
                "Msvm_VirtualEthernetSwitch", CreationClassName="Msvm_VirtualEthernetSwitch",
                Name=guid, ElementName=switch_name, EnabledState=EnabledState.ENABLED,
                HealthState=codes.HealthState.OK, Caption="Virtual Switch",
            )
            yield self.new_record(
                "Msvm_VirtualEthernetSwitchSettingData", InstanceID=f"Microsoft:{guid}",
                VirtualSystemIdentifier=guid, ElementName=switch_name,
                BandwidthReservationMode=2, IOVPreferred=False,
            )
        yield from self._switch_ports()

    def _switch_guid(self, switch_name: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.name}/switch/{switch_name}"))

    def _switch_ports(self, only: frozenset[str] | None = None) -> Iterator[Record]:
        """The switches' own ports (of ``only`` when given, by GUID), as Hyper-V keeps
        them: each a Msvm_EthernetPortAllocationSettingData of the switch's settings
        (InstanceID ``Microsoft:<switch>\\<port>``) whose HostResource is what the port
        connects the switch to. An External switch has one to its Msvm_ExternalEthernetPort
        and one to the management OS (the host's Msvm_ComputerSystem); an Internal switch
        only the latter; a Private switch none. External adapters are numbered in the
        order of their switches."""
        externals = 0
        for switch_name in self.config.switches:
            guid, kind = self._switch_guid(switch_name), self.config.switch_type(switch_name)
            if kind == "External":
                externals += 1
            if only is not None and guid not in only:
                continue
            if kind == "External":
                adapter = self._external_port(externals, guid)
                yield adapter
                yield self._switch_port(guid, f"{switch_name}/external", adapter.path,
                                        str(adapter["ElementName"]))
            if kind in ("External", "Internal"):
                yield self._switch_port(guid, f"{switch_name}/internal", self.host_path(),
                                        switch_name)

    def _switch_port(self, switch_guid: str, key: str, connects: ObjectPath,
                     name: str) -> Record:
        port = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.name}/switch-port/{key}")).upper()
        return self.new_record(
            "Msvm_EthernetPortAllocationSettingData",
            InstanceID=f"Microsoft:{switch_guid}\\{port}", ElementName=name,
            ResourceType=33, ResourceSubType=codes.SUBTYPE_PORT,
            HostResource=(str(connects),), EnabledState=EnabledState.ENABLED,
        )

    def _external_port(self, number: int, switch_guid: str) -> Record:
        mac = f"00155D{0x0A0000 + number - 1:06X}"
        return self.new_record(
            "Msvm_ExternalEthernetPort", CreationClassName="Msvm_ExternalEthernetPort",
            DeviceID=f"Microsoft:{switch_guid}", SystemCreationClassName="Msvm_ComputerSystem",
            SystemName=self.name, ElementName=f"Emulated Ethernet Adapter #{number}",
            Name=f"Emulated Ethernet Adapter #{number}", PermanentAddress=mac,
            IsBound=True, EnabledState=EnabledState.ENABLED, Speed=10_000_000_000,
            MaxSpeed=10_000_000_000,
        )

    def _cimv2_records(self) -> Iterator[Record]:
        config = self.config
        memory_kb = config.memory_mb * 1024
        yield self.new_record(
            "Win32_OperatingSystem",
            Name=f"{config.os_caption}|C:\\Windows|\\Device\\Harddisk0\\Partition2",
            Caption=config.os_caption, Version=config.os_version,
            BuildNumber=config.os_version.rsplit(".", 1)[-1], CSName=self.name,
            TotalVisibleMemorySize=memory_kb, FreePhysicalMemory=memory_kb,
        )
        yield from self._processor_records()
        yield self.new_record(
            "Win32_ComputerSystem", Name=self.name, DNSHostName=self.name.lower(),
            Domain="WORKGROUP", Manufacturer="hyperv-agent", Model="Embedded Hyper-V emulator",
            NumberOfProcessors=config.sockets, NumberOfLogicalProcessors=config.cpus,
            TotalPhysicalMemory=config.memory_mb * 1024 * 1024,
        )
        yield self.new_record(
            "Win32_NetworkAdapterConfiguration", Index=1, Description=MANAGEMENT_ADAPTER,
            IPEnabled=True, IPAddress=(config.private_ip,), IPSubnet=(config.private_netmask,),
            DefaultIPGateway=(), MACAddress=config.private_mac,
        )
        yield from self._interface_counters()
        yield self.new_record(
            "Win32_PerfFormattedData_Counters_ProcessorInformation", Name="_Total",
            PercentIdleTime=100, PercentProcessorTime=0,
        )
        yield from self._hypervisor_counters()

    def _hypervisor_counters(self, missing: Callable[[str], bool] = lambda _: True
                             ) -> Iterator[Record]:
        """The hypervisor's counters of every logical processor (``_Total``), formatted
        and raw, those of the classes ``missing`` names; the run times follow the running
        VMs when read (``model.computed``)."""
        if missing(HYPERVISOR_LP_COUNTERS):
            yield self.new_record(
                HYPERVISOR_LP_COUNTERS, Name="_Total", PercentTotalRunTime=0,
                PercentGuestRunTime=0, PercentHypervisorRunTime=0, PercentIdleTime=100)
        if missing(HYPERVISOR_LP_RAW):
            yield self.new_record(
                HYPERVISOR_LP_RAW, Name="_Total", PercentTotalRunTime=0,
                PercentGuestRunTime=0, PercentHypervisorRunTime=0, PercentIdleTime=0,
                Timestamp_Sys100NS=0, Frequency_Sys100NS=SYS_100NS_PER_S)

    @property
    def logical_processors(self) -> int:
        """The host's logical processors, those its processor counters count over."""
        return max(1, self.config.cpus)

    def run_time_100ns(self, busy: int) -> tuple[int, int, int]:
        """The raw "_Total" run and idle times of the logical processors and their
        timestamp, in 100 ns units, ``busy`` hundredths of a logical processor (400: four
        of them) having been kept busy since the previous reading. The run time grows by
        that exact share of all of them, not by the whole percent the formatted class
        shows: a share under half a percent (a small VM on a large host) still counts, as
        it does on Windows. The emulated host keeps no clock of its guests' work between
        readings: the run time grows at the rate seen when it is read (where Windows
        integrates continuously), so a VM started or stopped between two readings counts
        from the second one. Kept in memory: a restarted emulator starts its count again,
        as a rebooted host does."""
        now = round(self.clock() * SYS_100NS_PER_S)
        elapsed = max(0, now - self._run_time_at)
        self._run_time += elapsed * busy  # unscaled, so no reading rounds it
        self._counted += elapsed
        self._run_time_at = max(now, self._run_time_at)
        run = self._run_time // (100 * self.logical_processors)
        # idle is the rest of the time counted, so the two add up to it at every reading
        return (run, self._counted - run,
                self._run_time_at + FILETIME_EPOCH_S * SYS_100NS_PER_S)

    def _interface_counters(self) -> Iterator[Record]:
        """The "Network Interface" counters of the two adapters, moving at their steady
        rates from now (``model.computed``)."""
        for description, receive_bps, send_bps in (
                (MANAGEMENT_ADAPTER, NIC_RECEIVE_BPS, NIC_SEND_BPS),
                (UPLINK_ADAPTER, UPLINK_RECEIVE_BPS, UPLINK_SEND_BPS)):
            counters = self.new_record(
                "Win32_PerfRawData_Tcpip_NetworkInterface",
                Name=description.replace("#", "_"), CurrentBandwidth=10_000_000_000)
            counters.meta.update(since=self.clock(), receive_bps=receive_bps,
                                 send_bps=send_bps)
            yield counters

    def _processor_records(self) -> Iterator[Record]:
        """One Win32_Processor per socket, as Windows lists them (values from Microsoft's
        Win32_Processor page: Architecture 9 x64, Availability 3 running, CpuStatus 1
        enabled, Family 2 unknown, ProcessorType 3 central processor). NumberOfCores and
        NumberOfLogicalProcessors are the socket's ("for the current instance of the
        processor"), so over all sockets they add up to ``cpus``, one logical processor a
        core (no SMT). ``cpus`` that the sockets do not divide evenly gives the first
        sockets a core more than the rest: the emulator's choice, as a host of unlike
        processors would have (Microsoft documents no such host); a socket holds at
        least one core, so more sockets than ``cpus`` list one core each."""
        config = self.config
        sockets = max(1, config.sockets)
        caption = _PROCESSOR_CAPTIONS[config.processor.vendor]
        for socket in range(config.sockets):
            per_socket = max(1, config.cpus // sockets + (socket < config.cpus % sockets))
            yield self.new_record(
                "Win32_Processor", DeviceID=f"CPU{socket}",
                Name="Emulated x64 Processor", Caption=caption, Description=caption,
                Manufacturer=config.processor.manufacturer,
                Status="OK", SystemName=self.name, SystemCreationClassName="Win32_ComputerSystem",
                CreationClassName="Win32_Processor", Role="CPU", Architecture=9,
                AddressWidth=64, DataWidth=64, Availability=3, CpuStatus=1, Family=2,
                MaxClockSpeed=config.cpu_mhz, CurrentClockSpeed=config.cpu_mhz,
                NumberOfCores=per_socket, NumberOfEnabledCore=per_socket,
                NumberOfLogicalProcessors=per_socket, ThreadCount=per_socket,
                ProcessorType=3, LoadPercentage=0, SocketDesignation=f"CPU{socket}",
            )


#: Win32_Processor's Caption (and Description) by vendor, as Windows words a server
#: processor of each (family, model and stepping are those of one real part).
_PROCESSOR_CAPTIONS = {"Intel": "Intel64 Family 6 Model 85 Stepping 7",
                       "AMD": "AMD64 Family 25 Model 1 Stepping 1"}

__all__ = ["CIMV2_NAMESPACE", "V2_NAMESPACE", "EmulatedHost"]
