"""Names and codes of Hyper-V's WMI v2 API as the operation layer uses them.

The only home of WMI magic numbers and class or subtype strings in the operation layer.
Written from Microsoft's documentation, independently of the emulator's own table, so a
misspelling here fails against the emulator instead of being mirrored by it.
"""

from __future__ import annotations

from enum import IntEnum

from hyperv_agent.hostfs import images

NAMESPACE = "root\\virtualization\\v2"
CIMV2 = "root\\cimv2"


class Class:
    COMPUTER_SYSTEM = "Msvm_ComputerSystem"
    VSSD = "Msvm_VirtualSystemSettingData"
    SETTING_DATA_BASE = "CIM_SettingData"  # every setting data class
    BOOT_SOURCE = "Msvm_BootSourceSettingData"  # a generation 2 boot entry
    RASD = "Msvm_ResourceAllocationSettingData"
    RASD_BASE = "CIM_ResourceAllocationSettingData"
    PROCESSOR = "Msvm_ProcessorSettingData"
    MEMORY = "Msvm_MemorySettingData"
    SASD = "Msvm_StorageAllocationSettingData"
    SEPSD = "Msvm_SyntheticEthernetPortSettingData"
    EPASD = "Msvm_EthernetPortAllocationSettingData"
    VLAN = "Msvm_EthernetSwitchPortVlanSettingData"
    BANDWIDTH = "Msvm_EthernetSwitchPortBandwidthSettingData"
    ACL = "Msvm_EthernetSwitchPortAclSettingData"
    EXTENDED_ACL = "Msvm_EthernetSwitchPortExtendedAclSettingData"
    PORT_FEATURE_BASE = "Msvm_EthernetSwitchPortFeatureSettingData"  # every port feature
    PORT_SECURITY = "Msvm_EthernetSwitchPortSecuritySettingData"
    SWITCH = "Msvm_VirtualEthernetSwitch"
    SWITCH_SETTINGS = "Msvm_VirtualEthernetSwitchSettingData"  # its ports' settings hang here
    EXTERNAL_PORT = "Msvm_ExternalEthernetPort"
    KVP_COMPONENT = "Msvm_KvpExchangeComponent"
    #: What a running guest's data exchange (KVP) service reports of one network adapter:
    #: ``Microsoft:GuestNetwork\\<VM GUID>\\<adapter>`` for the NIC
    #: ``Microsoft:<VM GUID>\\<adapter>``
    GUEST_NETWORK = "Msvm_GuestNetworkAdapterConfiguration"
    KVP_SETTINGS = "Msvm_KvpExchangeComponentSettingData"
    KVP_ITEM = "Msvm_KvpExchangeDataItem"
    SHUTDOWN = "Msvm_ShutdownComponent"
    CONCRETE_JOB = "Msvm_ConcreteJob"
    SUMMARY = "Msvm_SummaryInformation"  # GetSummaryInformation's SummaryInformation[]
    VHD_SETTINGS = "Msvm_VirtualHardDiskSettingData"
    VSMS = "Msvm_VirtualSystemManagementService"
    IMAGE_SERVICE = "Msvm_ImageManagementService"
    SWITCH_SERVICE = "Msvm_VirtualEthernetSwitchManagementService"
    MIGRATION_SERVICE = "Msvm_VirtualSystemMigrationService"
    MIGRATION_SETTINGS = "Msvm_VirtualSystemMigrationSettingData"  # how one move is made
    MIGRATION_SERVICE_SETTINGS = "Msvm_VirtualSystemMigrationServiceSettingData"  # the host's
    MIGRATION_NETWORKS = "Msvm_VirtualSystemMigrationNetworkSettingData"  # where it listens
    MIGRATION_JOB = "Msvm_MigrationJob"
    STORAGE_JOB = "Msvm_StorageJob"  # the image management service's jobs
    METRIC_SERVICE = "Msvm_MetricService"
    METRIC_DEFINITION_BASE = "CIM_BaseMetricDefinition"  # every metric definition
    METRIC_VALUE_BASE = "CIM_BaseMetricValue"  # every metric value
    METRIC_FOR_ME = "Msvm_MetricForME"  # a managed element and its metric values
    OPERATING_SYSTEM = "Win32_OperatingSystem"
    PROCESSOR_CIMV2 = "Win32_Processor"
    COMPUTER_SYSTEM_CIMV2 = "Win32_ComputerSystem"
    NIC_CONFIGURATION = "Win32_NetworkAdapterConfiguration"
    #: "Hyper-V Hypervisor Logical Processor" counters: the hypervisor's view of every
    #: logical processor, whichever partition (a VM or the management OS) runs on it; the
    #: management OS's own Processor / Processor Information counters see only its
    #: virtual processors, so they read idle on a host whose VMs are busy
    HYPERVISOR_LP_PERF = "Win32_PerfRawData_HvStats_HyperVHypervisorLogicalProcessor"
    NIC_PERF = "Win32_PerfRawData_Tcpip_NetworkInterface"
    #: "Hyper-V Virtual Storage Device" counters: one per virtual hard disk a running VM
    #: has open, named after its file; raw "...Persec" values are totals since it opened
    DISK_PERF = "Win32_PerfRawData_Counters_HyperVVirtualStorageDevice"
    #: "Hyper-V Virtual Network Adapter" counters: one per network adapter of a running
    #: VM, named ``<VM name>_<adapter name>_<VM GUID>--<adapter GUID>``; raw "...Persec"
    #: values are totals since the VM started
    VNIC_PERF = "Win32_PerfRawData_NvspNicStats_HyperVVirtualNetworkAdapter"


class Subtype:
    PROCESSOR = "Microsoft:Hyper-V:Processor"
    MEMORY = "Microsoft:Hyper-V:Memory"
    IDE_CONTROLLER = "Microsoft:Hyper-V:Emulated IDE Controller"
    SCSI_CONTROLLER = "Microsoft:Hyper-V:Synthetic SCSI Controller"
    DISK_DRIVE = "Microsoft:Hyper-V:Synthetic Disk Drive"
    DVD_DRIVE = "Microsoft:Hyper-V:Synthetic DVD Drive"
    VHD = "Microsoft:Hyper-V:Virtual Hard Disk"
    ISO = "Microsoft:Hyper-V:Virtual CD/DVD Disk"
    NIC = "Microsoft:Hyper-V:Synthetic Ethernet Port"
    PORT = "Microsoft:Hyper-V:Ethernet Connection"
    REALIZED = "Microsoft:Hyper-V:System:Realized"
    GENERATION_1 = "Microsoft:Hyper-V:SubType:1"
    GENERATION_2 = "Microsoft:Hyper-V:SubType:2"


class ReturnCode(IntEnum):
    """Method return values (ReturnValue)."""

    COMPLETED = 0
    CIM_RUNNING = 4  # os-win treats a CIM "running" as a started job
    JOB_STARTED = 4096
    FAILED = 32768
    ACCESS_DENIED = 32769
    NOT_SUPPORTED = 32770
    STATUS_UNKNOWN = 32771
    TIMEOUT = 32772
    INVALID_PARAMETER = 32773
    SYSTEM_IN_USE = 32774
    INVALID_STATE = 32775
    INCORRECT_DATA_TYPE = 32776
    SYSTEM_NOT_AVAILABLE = 32777
    OUT_OF_MEMORY = 32778
    FILE_NOT_FOUND = 32779
    NOT_READY = 32780
    MACHINE_LOCKED = 32781
    SHUTDOWN_IN_PROGRESS = 32782

    @classmethod
    def describe(cls, value: int) -> str:
        try:
            return cls(value).name.replace("_", " ").lower()
        except ValueError:
            return "unknown return code"


class JobState(IntEnum):
    NEW = 2
    STARTING = 3
    RUNNING = 4
    SUSPENDED = 5
    SHUTTING_DOWN = 6
    COMPLETED = 7
    TERMINATED = 8
    KILLED = 9
    EXCEPTION = 10
    SERVICE = 11
    COMPLETED_WITH_WARNINGS = 32768


JOB_FINISHED = frozenset(
    {JobState.COMPLETED, JobState.TERMINATED, JobState.KILLED, JobState.EXCEPTION,
     JobState.COMPLETED_WITH_WARNINGS}
)
JOB_SUCCEEDED = frozenset({JobState.COMPLETED, JobState.COMPLETED_WITH_WARNINGS})


class JobRequest(IntEnum):
    """A job's RequestStateChange RequestedState (CIM_ConcreteJob)."""

    TERMINATE = 4  # stop cleanly: a migration stops and the VM stays on its source
    KILL = 5


class JobStateChange(IntEnum):
    """ReturnValue of a job's RequestStateChange (CIM_ConcreteJob)."""

    COMPLETED = 0
    TRANSITION_STARTED = 4096
    INVALID_STATE_TRANSITION = 4097  # the job has ended, or can no longer be stopped


class EnabledState(IntEnum):
    UNKNOWN = 0
    OTHER = 1
    ENABLED = 2
    DISABLED = 3
    SHUTTING_DOWN = 4
    OFFLINE = 6
    QUIESCE = 9
    STARTING = 10
    RESET = 11
    V1_PAUSED = 32768
    V1_SUSPENDED = 32769
    V1_STARTING = 32770
    V1_SNAPSHOTTING = 32771
    SAVING = 32773
    V1_STOPPING = 32774
    PAUSING = 32776
    RESUMING = 32777
    FAST_SAVED = 32779
    FAST_SAVING = 32780
    RUNNING_CRITICAL = 32781
    OFF_CRITICAL = 32782
    STOPPING_CRITICAL = 32783
    SAVED_CRITICAL = 32784
    PAUSED_CRITICAL = 32785
    STARTING_CRITICAL = 32786
    RESET_CRITICAL = 32787
    SAVING_CRITICAL = 32788
    PAUSING_CRITICAL = 32789
    RESUMING_CRITICAL = 32790
    FAST_SAVED_CRITICAL = 32791
    FAST_SAVING_CRITICAL = 32792


#: Msvm_ComputerSystem.OperationalStatus's Migrating Virtual Machine: a VM "being migrated
#: live from one physical computer to another" (beside In Service, 11), on its source.
MIGRATING_LIVE = 32774


class RequestedState(IntEnum):
    ENABLED = 2
    DISABLED = 3
    OFFLINE = 6
    QUIESCE = 9
    REBOOT = 10
    RESET = 11


class ResourceType(IntEnum):
    OTHER = 1
    PROCESSOR = 3
    MEMORY = 4
    IDE_CONTROLLER = 5
    SCSI_CONTROLLER = 6
    ETHERNET_ADAPTER = 10
    DVD_DRIVE = 16
    DISK_DRIVE = 17
    LOGICAL_DISK = 31
    ETHERNET_CONNECTION = 33


class DiskType(IntEnum):
    FIXED = 2
    DYNAMIC = 3
    DIFFERENCING = 4


class DiskFormat(IntEnum):
    VHD = 2
    VHDX = 3


#: The disk format Hyper-V requires for a file extension (``hostfs.images``' suffixes).
DISK_EXTENSIONS = {images.VHD: DiskFormat.VHD, images.VHDX: DiskFormat.VHDX}

#: The largest virtual size (MaxInternalSize) Hyper-V gives a disk of each format: 2,040 GB
#: for a VHD, 64 TB for a VHDX ("Plan for Hyper-V scalability in Windows Server", the same
#: from Windows Server 2016 to 2025; binary units, as the formats count them).
DISK_MAX_BYTES = {DiskFormat.VHD: 2040 << 30, DiskFormat.VHDX: 64 << 40}


class BootDevice(IntEnum):
    """Msvm_VirtualSystemSettingData.BootOrder entries (generation 1 BIOS)."""

    FLOPPY = 0
    CD = 1
    IDE = 2
    NETWORK = 3


#: Generation 1 boot orders: the hard disk first (a blank disk falls through to the CD,
#: so an install from ISO still starts), or the CD first for a VM without a root disk.
BOOT_DISK_FIRST = (BootDevice.IDE, BootDevice.CD, BootDevice.NETWORK, BootDevice.FLOPPY)
BOOT_CD_FIRST = (BootDevice.CD, BootDevice.IDE, BootDevice.NETWORK, BootDevice.FLOPPY)


class StartupAction(IntEnum):
    """Msvm_VirtualSystemSettingData.AutomaticStartupAction: what the host does with the
    VM when it boots. Hyper-V's default for a new VM is RESTART_IF_ACTIVE."""

    NONE = 2
    RESTART_IF_ACTIVE = 3
    ALWAYS = 4


class ShutdownAction(IntEnum):
    """Msvm_VirtualSystemSettingData.AutomaticShutdownAction: what the host does with the
    VM when it shuts down. Hyper-V's default for a new VM is SAVE."""

    TURN_OFF = 2
    SAVE = 3
    SHUT_DOWN = 4


class KvpSource(IntEnum):
    HOST = 0
    HOST_ONLY = 4


class SummaryInfo(IntEnum):
    """GetSummaryInformation RequestedInformation ids."""

    NAME = 0
    ELEMENT_NAME = 1
    CREATION_TIME = 2
    NOTES = 3
    NUMBER_OF_PROCESSORS = 4
    ENABLED_STATE = 100
    PROCESSOR_LOAD = 101
    MEMORY_USAGE = 103
    HEARTBEAT = 104
    UP_TIME = 105
    MEMORY_AVAILABLE = 112  # under dynamic memory: the share (%) of its memory a guest has free


# --- identities and host statistics (root\cimv2) -------------------------------------------

CAPTION_VM = "Virtual Machine"  # Msvm_ComputerSystem.Caption of a VM (the host's differs)
CENTRAL_PROCESSOR = 3  # Win32_Processor.ProcessorType of a CPU socket
PERF_TOTAL = "_Total"  # the all-processors instance of a processor counter set


# --- building a VM (hyperv/build.py, devices.py, nics.py) ---------------------------------

GENERATION_SUBTYPES = {1: Subtype.GENERATION_1, 2: Subtype.GENERATION_2}
VM_NAME_MAX_CHARS = 100  # VSSD.ElementName
TEMPLATE_PREFIX = "Microsoft:Definition\\"  # InstanceID of a template (…\Default) instance
TEMPLATE_SUFFIX = "\\Default"
PROCESSOR_WEIGHT_MAX = 10000
MEMORY_MIN_MB = 32
#: The most memory any Hyper-V release gives a VM, by generation, in MB as VirtualQuantity:
#: 1 TB for generation 1, 240 TB for generation 2 (Windows Server 2022 and 2025). What the
#: host's own release allows is ``VM_MAXIMUMS``; this bound serves where it is not known.
MEMORY_MAX_MB = {1: 1 << 20, 2: 240 << 20}
_TB_MB = 1 << 20
#: The most vCPUs and memory (MB) Hyper-V gives one VM, by host release and generation:
#: (first Windows version of the row, the release's name, {generation: (vCPUs, memory
#: MB)}), oldest first; a host takes the last row its version reaches. Microsoft's "Plan for
#: Hyper-V scalability in Windows Server" (Maximums for virtual machines): 2016, 240 vCPUs
#: and 12 TB for generation 2; 2019, 250 and 12 TB (an earlier revision of the page, for
#: 2016 and 2019 together, said 240); 2022, 1,024 and 240 TB; 2025, 2,048 and 240 TB; 64
#: vCPUs and 1 TB for generation 1 on each. "Hyper-V scalability in Windows Server 2012
#: and Windows Server 2012 R2": 64 vCPUs and 1 TB, of either generation. Builds between
#: the releases (semi-annual channel) take the row of the release before them; a version
#: that cannot be read, the oldest row.
VM_MAXIMUMS: tuple[tuple[tuple[int, ...], str, dict[int, tuple[int, int]]], ...] = (
    ((0,), "Windows Server 2012 R2", {1: (64, _TB_MB), 2: (64, _TB_MB)}),
    ((10, 0), "Windows Server 2016", {1: (64, _TB_MB), 2: (240, 12 * _TB_MB)}),
    ((10, 0, 17763), "Windows Server 2019", {1: (64, _TB_MB), 2: (250, 12 * _TB_MB)}),
    ((10, 0, 20348), "Windows Server 2022", {1: (64, _TB_MB), 2: (1024, 240 * _TB_MB)}),
    ((10, 0, 26100), "Windows Server 2025", {1: (64, _TB_MB), 2: (2048, 240 * _TB_MB)}),
)
#: Hyper-V takes a VM's memory (VirtualQuantity, Reservation, Limit) only in whole 2 MB
#: units: "The memory value assigned ('4019' MB) is not properly aligned". Microsoft's WMI
#: documentation does not say so; its hcsshim rounds memory up to 2 MB for this reason.
MEMORY_ALIGN_MB = 2
SCSI_SLOTS = 64  # AddressOnParent 0..63 (IDE: 0..1)
SCSI_CONTROLLERS_MAX = 4  # synthetic SCSI controllers a VM takes ("Plan for Hyper-V scalability")
IDE_SLOTS = 2  # AddressOnParent 0..1 of an IDE controller
DVD_IDE_CONTROLLER = 1  # generation 1: the DVD drive sits on IDE controller 1 (Address "1")
IDE_CONTROLLERS = 2  # a generation 1 VM's IDE controllers (Address "0", "1"); generation 2: none
#: Where a generation 1 VM's data volumes go when they are to be on IDE (the VM detail
#: ``dataDiskController`` ``ide``), as (IDE controller, slot) in order of preference: beside
#: the root disk (IDE 0 slot 0) and the CD (IDE 1 slot 0) first, their own places only when
#: the VM has no root disk or no CD.
IDE_DATA_PLACES = ((0, 1), (1, 1), (0, 0), (1, 0))
MAC_HEX_DIGITS = 12  # SEPSD.Address: 12 hex digits, no separators
#: The head of a Msvm_GuestNetworkAdapterConfiguration's InstanceID (``Microsoft:GuestNetwork\\
#: <VM GUID>\\<adapter>``), before the part it shares with its NIC's
GUEST_NETWORK_ID = "GuestNetwork"
VLAN_ID_MIN = 1
VLAN_ID_MAX = 4094
BITS_PER_MEGABIT = 1_000_000  # bandwidth Limit = Mbps × 1,000,000 (CloudStack's reading)
KVP_KEY_MAX_CHARS = 1024  # Msvm_KvpExchangeDataItem.Name MAXLEN
KVP_VALUE_MAX_CHARS = 1023  # Msvm_KvpExchangeDataItem.Data, in UTF-16 units
KVP_GUEST_VALUE_MAX_BYTES = 2047  # a guest pool record's value: 2048 bytes of UTF-8 with NUL
KVP_ITEMS_PER_CALL = 128  # AddKvpItems / ModifyKvpItems take at most 128 DataItems
PROCESSOR_LIMIT_FULL = 100000  # Limit / Reservation of a whole vCPU (100 %, percent / 1000)
PROCESSOR_WEIGHT_DEFAULT = 100  # Msvm_ProcessorSettingData.Weight when nothing is asked
PROCESSOR_WEIGHT_MIN = 1


# --- migration (hyperv/migration.py) --------------------------------------------------------


class MigrationType(IntEnum):
    """Msvm_VirtualSystemMigrationSettingData.MigrationType."""

    VIRTUAL_SYSTEM = 32768  # live: the VM moves, its disks stay (on shared storage)
    STORAGE = 32769  # the VM's disks move; the VM stays on its host
    STAGED = 32770
    VIRTUAL_SYSTEM_AND_STORAGE = 32771  # shared nothing: the VM and its disks move


class MigrationTransport(IntEnum):
    """Msvm_VirtualSystemMigrationSettingData.TransportType."""

    TCP = 5


class MigrationCheck(IntEnum):
    """ReturnValue of CheckVirtualSystemIsMigratableToHost (CIM's values)."""

    COMPLETED = 0
    INVALID_PARAMETER = 4
    INVALID_STATE = 5  # a host or the VM cannot take part in a move now


class MigrationAuthentication(IntEnum):
    """Msvm_VirtualSystemMigrationServiceSettingData.AuthenticationType."""

    CREDSSP = 0
    KERBEROS = 1


class VlanMode(IntEnum):
    """Msvm_EthernetSwitchPortVlanSettingData.OperationMode."""

    ACCESS = 1
    TRUNK = 2
    PRIVATE = 3


class PvlanMode(IntEnum):
    """Msvm_EthernetSwitchPortVlanSettingData.PvlanMode of a private (OperationMode 3)
    port: isolated and community ports send on their secondary VLAN, a promiscuous one on
    the primary, to the secondaries it lists."""

    ISOLATED = 1
    COMMUNITY = 2
    PROMISCUOUS = 3


# --- resource metering (hyperv/drives.py disk statistics) ----------------------------------

DISK_DATA_READ = "Disk Data Read"  # metric definition ElementName; MetricValue in MB
DISK_DATA_WRITTEN = "Disk Data Written"  # MB
DISK_IO_COUNT = "Normalized I/O Count"  # I/Os normalized to 8 KB, both directions
BYTES_PER_MB = 1_048_576  # the metering megabyte: 2^20 bytes


class MetricCollection(IntEnum):
    """Msvm_MetricService.ControlMetrics MetricCollectionEnabled."""

    ENABLE = 2
    DISABLE = 3
    RESET = 4


# --- switch-port ACLs (hyperv/portacls.py, hyperv/acls.py) ---------------------------------


class AclDirection(IntEnum):
    """Msvm_EthernetSwitchPortExtendedAclSettingData.Direction, seen from the VM: Incoming
    packets go to it, Outgoing ones leave it."""

    INCOMING = 1
    OUTGOING = 2


class AclAction(IntEnum):
    """Msvm_EthernetSwitchPortExtendedAclSettingData.Action."""

    ALLOW = 1
    DENY = 2


ACL_ANY = "ANY"  # any address, port or protocol in an extended ACL's text fields
ACL_ADDRESS_MAX_CHARS = 40  # MaxLen of LocalIPAddress and RemoteIPAddress
ACL_DEFAULT_IDLE_TIMEOUT_S = 255  # IdleSessionTimeout's class default
