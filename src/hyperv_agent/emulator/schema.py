"""The emulator's own class table for root\\virtualization\\v2 and root\\cimv2.

Written from Microsoft's Hyper-V WMI v2 reference (the MOF "Syntax" blocks and the method
pages). It deliberately does not import the operation layer's names: a misspelt name there
must fail against this table, not be mirrored by it. A fidelity test checks this table
against an independent list of documented names.

Each property line is ``Name type`` or ``Name type[]``; ``key`` marks key properties and
``= value`` gives the MOF default.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from hyperv_agent.cim.api import CIMV2_NAMESPACE, V2_NAMESPACE, CimScalar, CimValue
from hyperv_agent.cim.classdecl import MethodDecl, ParameterDecl, PropertyDecl


@dataclass(frozen=True)
class ClassDef:
    name: str
    namespace: str
    superclass: str | None
    ancestors: tuple[str, ...]  # every ancestor up to the root, nearest first
    properties: Mapping[str, PropertyDecl]  # all properties, inherited included, keyed lower-case
    methods: Mapping[str, MethodDecl] = field(default_factory=dict)  # keyed lower-case
    association: bool = False

    @functools.cached_property
    def keys(self) -> tuple[PropertyDecl, ...]:
        """Key properties in the order WMI writes them in a path (alphabetical)."""
        return tuple(sorted((p for p in self.properties.values() if p.key), key=lambda p: p.name))

    @functools.cached_property
    def set_defaults(self) -> Mapping[str, CimValue]:
        """The properties whose MOF default is not null, with those defaults: what a new
        record holds before its own values (a property a record does not hold is null)."""
        return {p.name: p.default for p in self.properties.values() if p.default is not None}

    @functools.cached_property
    def array_names(self) -> tuple[str, ...]:
        """The names of the array properties."""
        return tuple(p.name for p in self.properties.values() if p.is_array)

    def prop(self, name: str) -> PropertyDecl | None:
        return self.properties.get(name.lower())

    def method(self, name: str) -> MethodDecl | None:
        return self.methods.get(name.lower())

    def is_a(self, class_name: str) -> bool:
        """Whether this class is ``class_name`` or derives from it (any case)."""
        wanted = class_name.lower()
        return self.name.lower() == wanted or wanted in (a.lower() for a in self.ancestors)


# --- a tiny MOF-like notation -------------------------------------------------------------


def _literal(text: str) -> CimScalar:
    text = text.strip()
    if text.startswith('"'):
        return text.strip('"')
    if text in ("TRUE", "FALSE"):
        return text == "TRUE"
    return int(text)


def _prop(line: str) -> PropertyDecl:
    decl, _, default_text = line.partition("=")
    words = decl.split()
    name, cim_type = words[0], words[1]
    is_array = cim_type.endswith("[]")
    default: CimValue = None
    if default_text.strip():
        default = (
            tuple(_literal(x) for x in default_text.strip(" {}").split(",") if x.strip())
            if is_array
            else _literal(default_text)
        )
    return PropertyDecl(name, cim_type.removesuffix("[]"), is_array, "key" in words[2:], default)


def _props(spec: str) -> tuple[PropertyDecl, ...]:
    return tuple(_prop(line) for line in spec.strip().splitlines() if line.strip())


def _method(spec: str) -> MethodDecl:
    """``Name(in A type, out B type[])``."""
    name, _, rest = spec.partition("(")
    params = []
    for part in rest.rstrip(")").split(","):
        if part.strip():
            direction, pname, ptype = part.split()
            params.append(
                ParameterDecl(pname, ptype.removesuffix("[]"), ptype.endswith("[]"), direction)
            )
    return MethodDecl(name.strip(), tuple(params))


CLASSES: dict[str, ClassDef] = {}
_BASE_PROPS: dict[str, tuple[PropertyDecl, ...]] = {}
_BASE_ANCESTORS: dict[str, tuple[str, ...]] = {}


def _base(name: str, parent: str | None, spec: str = "") -> None:
    """An abstract (CIM_* or Msvm_* base) class: no instances, inherited by others."""
    _BASE_PROPS[name] = (_BASE_PROPS[parent] if parent else ()) + _props(spec)
    _BASE_ANCESTORS[name] = ((parent, *_BASE_ANCESTORS[parent]) if parent else ())


def _class(
    name: str,
    parent: str | None,
    spec: str = "",
    methods: tuple[str, ...] = (),
    namespace: str = V2_NAMESPACE,
    association: bool = False,
) -> None:
    inherited = _BASE_PROPS.get(parent, ()) if parent else ()
    if parent in CLASSES:
        inherited = tuple(CLASSES[parent].properties.values())
    merged: dict[str, PropertyDecl] = {p.name.lower(): p for p in inherited}
    for prop in _props(spec):
        merged[prop.name.lower()] = prop
    ancestors = _ancestors(parent)
    parsed = [_method(m) for m in methods]
    CLASSES[name] = ClassDef(
        name, namespace, parent, ancestors, MappingProxyType(merged),
        MappingProxyType({m.name.lower(): m for m in parsed}), association,
    )


def _ancestors(parent: str | None) -> tuple[str, ...]:
    if parent is None:
        return ()
    if parent in CLASSES:
        return (parent, *CLASSES[parent].ancestors)
    return (parent, *_BASE_ANCESTORS.get(parent, ()))


# --- CIM bases ----------------------------------------------------------------------------

_base("CIM_ManagedElement", None, """
Caption string
Description string
ElementName string
""")
_base("CIM_SettingData", "CIM_ManagedElement", "InstanceID string key")
_base("CIM_ResourceAllocationSettingData", "CIM_SettingData", """
ResourceType uint16
OtherResourceType string
ResourceSubType string
PoolID string
ConsumerVisibility uint16
HostResource string[]
AllocationUnits string
VirtualQuantity uint64
Reservation uint64
Limit uint64
Weight uint32
AutomaticAllocation boolean = TRUE
AutomaticDeallocation boolean = TRUE
Parent string
Connection string[]
Address string
MappingBehavior uint16
AddressOnParent string
VirtualQuantityUnits string
""")
_base("CIM_StorageAllocationSettingData", "CIM_ResourceAllocationSettingData")
_base("CIM_EthernetPortAllocationSettingData", "CIM_ResourceAllocationSettingData", """
DesiredVLANEndpointMode uint16
OtherEndpointMode string
""")
_base("Msvm_EthernetSwitchPortFeatureSettingData", "CIM_SettingData")
_base("CIM_VirtualSystemSettingData", "CIM_SettingData", """
VirtualSystemIdentifier string
VirtualSystemType string
Notes string[]
CreationTime datetime
ConfigurationID string
ConfigurationDataRoot string
ConfigurationFile string
SnapshotDataRoot string
SuspendDataRoot string
SwapFileDataRoot string
LogDataRoot string
AutomaticStartupAction uint16
AutomaticStartupActionDelay datetime
AutomaticStartupActionSequenceNumber uint16
AutomaticShutdownAction uint16
AutomaticRecoveryAction uint16
RecoveryFile string
""")
_base("CIM_ManagedSystemElement", "CIM_ManagedElement", """
InstallDate datetime
Name string
OperationalStatus uint16[]
StatusDescriptions string[]
Status string
HealthState uint16
""")
_base("CIM_EnabledLogicalElement", "CIM_ManagedSystemElement", """
EnabledState uint16
OtherEnabledState string
RequestedState uint16
EnabledDefault uint16
TimeOfLastStateChange datetime
""")
_base("CIM_ComputerSystem", "CIM_EnabledLogicalElement", """
CreationClassName string key
Name string key
NameFormat string
PrimaryOwnerName string
Dedicated uint16[]
""")
_base("CIM_LogicalDevice", "CIM_EnabledLogicalElement", """
SystemCreationClassName string key
SystemName string key
CreationClassName string key
DeviceID string key
""")
_base("CIM_Service", "CIM_EnabledLogicalElement", """
SystemCreationClassName string key
SystemName string key
CreationClassName string key
Name string key
Started boolean
StartMode string
""")
_base("CIM_ConcreteJob", "CIM_ManagedElement", """
InstanceID string key
Name string
JobStatus string
TimeSubmitted datetime
ScheduledStartTime datetime
StartTime datetime
ElapsedTime datetime
JobRunTimes uint32
RunMonth uint8
RunDay sint8
RunDayOfWeek sint8
RunStartInterval datetime
LocalOrUtcTime uint16
Notify string
Owner string
Priority uint32
PercentComplete uint16
DeleteOnCompletion boolean
ErrorCode uint16
ErrorDescription string
RecoveryAction uint16
OtherRecoveryAction string
JobState uint16
TimeOfLastStateChange datetime
TimeBeforeRemoval datetime
""")

_base("CIM_VirtualSystemManagementService", "CIM_Service")
_base("CIM_NetworkPort", "CIM_LogicalDevice")
_base("CIM_EthernetPort", "CIM_NetworkPort")
_base("CIM_VirtualEthernetSwitchSettingData", "CIM_VirtualSystemSettingData")
_base("CIM_VirtualSystemMigrationSettingData", "CIM_SettingData")
_base("CIM_VirtualSystemMigrationService", "CIM_Service")

# --- computer systems ---------------------------------------------------------------------

_COMPUTER_SYSTEM = """
OnTimeInMilliseconds uint64
ProcessID uint32
TimeOfLastConfigurationChange datetime
NumberOfNumaNodes uint16
ReplicationState uint16
ReplicationHealth uint16
ReplicationMode uint16
EnhancedSessionModeState uint16
"""
_class("Msvm_ComputerSystem", "CIM_ComputerSystem", _COMPUTER_SYSTEM, methods=(
    "RequestStateChange(in RequestedState uint16, out Job reference, in TimeoutPeriod datetime)",
))
_class("Msvm_PlannedComputerSystem", "CIM_ComputerSystem", """
OnTimeInMilliseconds uint64
ProcessID uint32
TimeOfLastConfigurationChange datetime
""")

# --- settings -----------------------------------------------------------------------------

_class("Msvm_VirtualSystemSettingData", "CIM_VirtualSystemSettingData", """
BIOSGUID string
BIOSSerialNumber string
BaseBoardSerialNumber string
ChassisSerialNumber string
ChassisAssetTag string
BIOSNumLock boolean
BootOrder uint16[]
Parent string
IsSaved boolean
Version string
VirtualNumaEnabled boolean
VirtualSystemSubType string
BootSourceOrder string[]
SecureBootEnabled boolean
SecureBootTemplateId string
UserSnapshotType uint16
""")
_class("Msvm_BootSourceSettingData", "CIM_SettingData", """
BootSourceType uint32
OtherLocation string
FirmwareDevicePath string
BootSourceDescription string
OptionalData uint8[]
""")
_class("Msvm_ResourceAllocationSettingData", "CIM_ResourceAllocationSettingData",
       "VirtualSystemIdentifiers string[]")
_class("Msvm_ProcessorSettingData", "CIM_ResourceAllocationSettingData", """
LimitCPUID boolean
LimitProcessorFeatures boolean
MaxProcessorsPerNumaNode uint64
MaxNumaNodesPerSocket uint64
ExposeVirtualizationExtensions boolean
""")
_class("Msvm_MemorySettingData", "CIM_ResourceAllocationSettingData", """
DynamicMemoryEnabled boolean
TargetMemoryBuffer uint32
MaxMemoryBlocksPerNumaNode uint64
""")
_class("Msvm_StorageAllocationSettingData", "CIM_StorageAllocationSettingData", """
IOPSLimit uint64
IOPSReservation uint64
PersistentReservationsSupported boolean
""")
_class("Msvm_SyntheticEthernetPortSettingData", "CIM_EthernetPortAllocationSettingData", """
VirtualSystemIdentifiers string[]
StaticMacAddress boolean
ClusterMonitored boolean
DeviceNamingEnabled boolean
AllowPacketDirect boolean
""")
_class("Msvm_EthernetPortAllocationSettingData", "CIM_EthernetPortAllocationSettingData", """
EnabledState uint16
LastKnownSwitchName string
RequiredFeatures string[]
RequiredFeatureHints string[]
""")
_class("Msvm_KvpExchangeComponentSettingData", "CIM_ResourceAllocationSettingData", """
EnabledState uint16
HostExchangeItems string[]
HostOnlyItems string[]
DisableHostKVPItems boolean
""")

# --- switch-port features -----------------------------------------------------------------

_FEATURE = "Msvm_EthernetSwitchPortFeatureSettingData"
_class("Msvm_EthernetSwitchPortVlanSettingData", _FEATURE, """
OperationMode uint32 = 0
AccessVlanId uint16 = 0
NativeVlanId uint16 = 0
PvlanMode uint32 = 0
PrimaryVlanId uint16 = 0
SecondaryVlanId uint16 = 0
PruneVlanIdArray uint16[]
TrunkVlanIdArray uint16[]
SecondaryVlanIdArray uint16[]
""")
_class("Msvm_EthernetSwitchPortAclSettingData", _FEATURE, """
Direction uint8
Applicability uint8
AclType uint8
Action uint8
LocalAddress string
LocalAddressPrefixLength uint8
RemoteAddress string
RemoteAddressPrefixLength uint8
Name string
""")
# Windows Server 2012 R2 and later; text grammar and evaluation in portacl.py.
_class("Msvm_EthernetSwitchPortExtendedAclSettingData", _FEATURE, """
Name string = ""
Direction uint8 = 0
Action uint8 = 0
LocalIPAddress string = "ANY"
RemoteIPAddress string = "ANY"
LocalPort string = "ANY"
RemotePort string = "ANY"
Protocol string = "ANY"
Weight uint16 = 0
Stateful boolean = FALSE
IdleSessionTimeout uint16 = 255
IsolationID uint32 = 0
""")
_class("Msvm_EthernetSwitchPortBandwidthSettingData", _FEATURE, """
Limit uint64 = 0
Reservation uint64 = 0
Weight uint64 = 0
BurstLimit uint64 = 0
BurstSize uint64 = 0
""")
_class("Msvm_EthernetSwitchPortSecuritySettingData", _FEATURE, """
AllowMacSpoofing boolean = FALSE
EnableDhcpGuard boolean = FALSE
EnableRouterGuard boolean = FALSE
VirtualSubnetId uint32 = 0
AllowTeaming boolean = FALSE
""")

# --- switches and ports -------------------------------------------------------------------

_class("Msvm_VirtualEthernetSwitch", "CIM_ComputerSystem", """
MaxVMQOffloads uint32
MaxIOVOffloads uint32
""")
_class("Msvm_VirtualEthernetSwitchSettingData", "CIM_VirtualEthernetSwitchSettingData", """
IOVPreferred boolean
BandwidthReservationMode uint32
""")
_class("Msvm_ExternalEthernetPort", "CIM_EthernetPort", """
PermanentAddress string
Speed uint64
MaxSpeed uint64
IsBound boolean
""")

# --- integration components ---------------------------------------------------------------

_class("Msvm_KvpExchangeComponent", "CIM_LogicalDevice", """
GuestExchangeItems string[]
GuestIntrinsicExchangeItems string[]
""")
_class("Msvm_ShutdownComponent", "CIM_LogicalDevice", methods=(
    "InitiateShutdown(in Force boolean, in Reason string)",
    "InitiateReboot(in Force boolean, in Reason string)",  # 2016+: codes.METHODS_SINCE_MAJOR
))
# What the guest's data exchange (KVP) service reports of one of its network adapters: one
# instance per synthetic NIC of a running VM (``model.guest_network_record``).
_class("Msvm_GuestNetworkAdapterConfiguration", None, """
InstanceID string key
ProtocolIFType uint16 = 0
DHCPEnabled boolean = FALSE
IPAddresses string[]
Subnets string[]
DefaultGateways string[]
DNSServers string[]
IPAddressOrigins uint16[]
""")
_class("Msvm_KvpExchangeDataItem", "CIM_ManagedElement", """
Caption string
Description string
ElementName string
Name string
Data string
Source uint16
""")

# --- results, jobs, disks -----------------------------------------------------------------

_class("Msvm_SummaryInformation", "Msvm_SummaryInformationBase", """
InstanceID string
AllocatedGPU string
Shielded boolean
CreationTime datetime
ElementName string
EnabledState uint16
OtherEnabledState string
GuestOperatingSystem string
HealthState uint16
Heartbeat uint16
MemoryUsage uint64
MemoryAvailable sint32
AvailableMemoryBuffer sint32
SwapFilesInUse boolean
Name string
Notes string
Version string
NumberOfProcessors uint16
OperationalStatus uint16[]
ProcessorLoad uint16
ProcessorLoadHistory uint16[]
StatusDescriptions string[]
ThumbnailImage uint8[]
UpTime uint64
VirtualSystemSubType string
""")
_JOB_METHODS = (
    "RequestStateChange(in RequestedState uint16, in TimeoutPeriod datetime)",
    "GetError(out Error string)",
    "GetErrorEx(out Errors string[])",
)
_class("Msvm_ConcreteJob", "CIM_ConcreteJob", """
Cancellable boolean
ErrorSummaryDescription string
JobType uint16
""", methods=_JOB_METHODS)
_class("Msvm_StorageJob", "CIM_ConcreteJob", """
Cancellable boolean
ErrorSummaryDescription string
JobType uint16
JobCompletionStatusCode uint32
Child string
Parent string
""", methods=_JOB_METHODS)
_class("Msvm_MigrationJob", "CIM_ConcreteJob", """
Cancellable boolean
ErrorSummaryDescription string
JobType uint16
MigrationType uint16
VirtualSystemName string
DestinationHost string
NewSystemSettingData string
NewResourceSettingData string[]
""", methods=_JOB_METHODS)
_class("Msvm_VirtualHardDiskSettingData", "CIM_SettingData", """
Type uint16
Format uint16
Path string
ParentPath string
ParentTimestamp datetime
ParentIdentifier string
MaxInternalSize uint64
BlockSize uint32
LogicalSectorSize uint32
PhysicalSectorSize uint32
VirtualDiskId string
IsPmemCompatible boolean
""")
_class("Msvm_VirtualHardDiskState", None, """
FileSize uint64
InUse boolean
MinInternalSize uint64
PhysicalSectorSize uint32
Alignment uint32
FragmentationPercentage uint32
""")

# --- services -----------------------------------------------------------------------------

_class("Msvm_VirtualSystemManagementService", "CIM_VirtualSystemManagementService", methods=(
    "DefineSystem(in SystemSettings string, in ResourceSettings string[], "
    "in ReferenceConfiguration reference, out ResultingSystem reference, out Job reference)",
    "DestroySystem(in AffectedSystem reference, out Job reference)",
    "ModifySystemSettings(in SystemSettings string, out Job reference)",
    "AddResourceSettings(in AffectedConfiguration reference, in ResourceSettings string[], "
    "out ResultingResourceSettings reference[], out Job reference)",
    "ModifyResourceSettings(in ResourceSettings string[], "
    "out ResultingResourceSettings reference[], out Job reference)",
    "RemoveResourceSettings(in ResourceSettings reference[], out Job reference)",
    "AddFeatureSettings(in AffectedConfiguration reference, in FeatureSettings string[], "
    "out ResultingFeatureSettings reference[], out Job reference)",
    "ModifyFeatureSettings(in FeatureSettings string[], "
    "out ResultingFeatureSettings reference[], out Job reference)",
    "RemoveFeatureSettings(in FeatureSettings reference[], out Job reference)",
    "AddKvpItems(in TargetSystem reference, in DataItems string[], out Job reference)",
    "ModifyKvpItems(in TargetSystem reference, in DataItems string[], out Job reference)",
    "RemoveKvpItems(in TargetSystem reference, in DataItems string[], out Job reference)",
    "GetSummaryInformation(in SettingData reference[], in RequestedInformation uint32[], "
    "out SummaryInformation object[])",
))
_class("Msvm_ImageManagementService", "CIM_Service", methods=(
    "CreateVirtualHardDisk(in VirtualDiskSettingData string, out Job reference)",
    "GetVirtualHardDiskSettingData(in Path string, out SettingData string, out Job reference)",
    "GetVirtualHardDiskState(in Path string, out State string, out Job reference)",
    "ResizeVirtualHardDisk(in Path string, in MaxInternalSize uint64, out Job reference)",
    "ConvertVirtualHardDisk(in SourcePath string, in VirtualDiskSettingData string, "
    "out Job reference)",
    "ValidateVirtualHardDisk(in Path string, out Job reference)",
))
_class("Msvm_VirtualEthernetSwitchManagementService", "CIM_VirtualSystemManagementService",
       methods=(
    "DefineSystem(in SystemSettings string, in ResourceSettings string[], "
    "in ReferenceConfiguration reference, out ResultingSystem reference, out Job reference)",
    "DestroySystem(in AffectedSystem reference, out Job reference)",
    "AddResourceSettings(in AffectedConfiguration reference, in ResourceSettings string[], "
    "out ResultingResourceSettings reference[], out Job reference)",
    "RemoveResourceSettings(in ResourceSettings reference[], out Job reference)",
))
_class("Msvm_VirtualSystemMigrationService", "CIM_VirtualSystemMigrationService", """
MigrationServiceListenerIPAddressList string[]
ActiveVirtualSystemMigrationCount uint32
ActiveStorageMigrationCount uint32
""", methods=(
    "MigrateVirtualSystemToHost(in ComputerSystem reference, in DestinationHost string, "
    "in MigrationSettingData string, in NewSystemSettingData string, "
    "in NewResourceSettingData string[], out Job reference)",
    "CheckVirtualSystemIsMigratableToHost(in ComputerSystem reference, "
    "in DestinationHost string, in MigrationSettingData string, "
    "in NewSystemSettingData string, in NewResourceSettingData string[], "
    "out IsMigratable boolean)",
    "CheckVirtualSystemIsMigratable(in ComputerSystem reference, in DestinationHost string, "
    "in MigrationSettingData string, in NewSystemSettingData string, "
    "in NewResourceSettingData string[], out Job reference)",
    "ModifyServiceSettings(in ServiceSettingData string, out Job reference)",
))
_class("Msvm_VirtualSystemMigrationServiceSettingData", "CIM_SettingData", """
EnableVirtualSystemMigration boolean
MaximumActiveVirtualSystemMigration uint32
MaximumActiveStorageMigration uint32
AuthenticationType uint32
EnableCompression boolean
EnableSmbTransport boolean
""")
_class("Msvm_VirtualSystemMigrationNetworkSettingData", "CIM_SettingData", """
SubnetNumber string
PrefixLength uint8
Metric uint32
Tags string[]
""")
_class("Msvm_VirtualSystemMigrationSettingData", "CIM_VirtualSystemMigrationSettingData", """
MigrationType uint16
TransportType uint16
DestinationIPAddressList string[]
DestinationPlannedVirtualSystemId string
Priority uint16
Bandwidth uint16
EnableCompression boolean
RetainVhdCopiesOnSource boolean
UnmanagedVhds string[]
RemoveSourceUnmanagedVhds boolean
""")

# --- resource metering (services/metrics.py) ----------------------------------------------

_base("CIM_MetricService", "CIM_Service")
_class("Msvm_MetricService", "CIM_MetricService", methods=(
    "ControlMetrics(in Subject reference, in Definition reference, "
    "in MetricCollectionEnabled uint16)",
))
_base("CIM_BaseMetricDefinition", "CIM_ManagedElement", """
InstanceID string key
Id string key
Name string
DataType uint16
Calculable uint16
Units string
BreakdownDimensions string[]
IsContinuous boolean
ChangeType uint16
TimeScope uint16
GatheringType uint16
ProgrammaticUnits string
""")
_base("CIM_AggregationMetricDefinition", "CIM_BaseMetricDefinition", "SimpleFunction uint16")
_class("Msvm_AggregationMetricDefinition", "CIM_AggregationMetricDefinition")
_base("CIM_BaseMetricValue", "CIM_ManagedElement", """
InstanceID string key
MetricDefinitionId string
MeasuredElementName string
TimeStamp datetime
Duration datetime
MetricValue string
BreakdownDimension string
BreakdownValue string
Volatile boolean
""")
_base("CIM_AggregationMetricValue", "CIM_BaseMetricValue", """
AggregationTimeStamp datetime
AggregationDuration datetime
""")
_class("Msvm_AggregationMetricValue", "CIM_AggregationMetricValue")

# --- associations (computed, never stored) ------------------------------------------------


def _association(name: str, parent: str, left: str, right: str) -> None:
    _class(name, parent, f"{left} reference key\n{right} reference key", association=True)


_association("Msvm_SettingsDefineState", "CIM_SettingsDefineState", "ManagedElement",
             "SettingData")
_association("Msvm_VirtualSystemSettingDataComponent", "CIM_VirtualSystemSettingDataComponent",
             "GroupComponent", "PartComponent")
_association("Msvm_SystemDevice", "CIM_SystemDevice", "GroupComponent", "PartComponent")
_association("Msvm_AffectedJobElement", "CIM_AffectedJobElement", "AffectedElement",
             "AffectingElement")
_association("Msvm_EthernetPortSettingDataComponent", "CIM_Component", "GroupComponent",
             "PartComponent")
_association("Msvm_MetricForME", "CIM_MetricForME", "Antecedent", "Dependent")
_association("Msvm_LogicalIdentity", "CIM_LogicalIdentity", "SystemElement", "SameElement")
_association("Msvm_BootSourceComponent", "CIM_Component", "GroupComponent", "PartComponent")
_association("Msvm_SettingDataComponent", "CIM_Component", "GroupComponent", "PartComponent")
_association("Msvm_VirtualSystemMigrationServiceSettingDataComponent", "CIM_Component",
             "GroupComponent", "PartComponent")
_class("Msvm_MetricDefForME", "CIM_MetricDefForME", """
Antecedent reference key
Dependent reference key
MetricCollectionEnabled uint16 = 2
""", association=True)

# --- root\cimv2 ---------------------------------------------------------------------------

# A singleton, as on Windows: its path is Win32_OperatingSystem=@.
_class("Win32_OperatingSystem", "CIM_OperatingSystem", """
Name string
Caption string
Version string
BuildNumber string
CSName string
LastBootUpTime datetime
LocalDateTime datetime
TotalVisibleMemorySize uint64
FreePhysicalMemory uint64
""", namespace=CIMV2_NAMESPACE)
_class("Win32_Processor", "CIM_Processor", """
DeviceID string key
Name string
Caption string
Description string
Manufacturer string
Status string
SystemName string
SystemCreationClassName string
CreationClassName string
Role string
Architecture uint16
AddressWidth uint16
DataWidth uint16
Availability uint16
CpuStatus uint16
Family uint16
MaxClockSpeed uint32
CurrentClockSpeed uint32
NumberOfCores uint32
NumberOfEnabledCore uint32
NumberOfLogicalProcessors uint32
ThreadCount uint32
ProcessorType uint16
LoadPercentage uint16
SocketDesignation string
""", namespace=CIMV2_NAMESPACE)
_class("Win32_ComputerSystem", "CIM_UnitaryComputerSystem", """
Name string key
DNSHostName string
Domain string
Manufacturer string
Model string
NumberOfProcessors uint32
NumberOfLogicalProcessors uint32
TotalPhysicalMemory uint64
""", namespace=CIMV2_NAMESPACE)
_class("Win32_NetworkAdapterConfiguration", "CIM_Setting", """
Index uint32 key
Description string
IPEnabled boolean
IPAddress string[]
IPSubnet string[]
DefaultIPGateway string[]
MACAddress string
""", namespace=CIMV2_NAMESPACE)
_class("Win32_PerfRawData_Tcpip_NetworkInterface", "Win32_PerfRawData", """
Name string key
BytesReceivedPersec uint64
BytesSentPersec uint64
BytesTotalPersec uint64
CurrentBandwidth uint64
""", namespace=CIMV2_NAMESPACE)
# The "Hyper-V Virtual Storage Device" counter set: one instance per virtual hard disk a
# running VM has open, named after its file (each backslash of the path written as "-").
# Raw values: the "...Persec" counters hold totals since the disk was opened.
_class("Win32_PerfRawData_Counters_HyperVVirtualStorageDevice", "Win32_PerfRawData", """
Name string key
ReadBytesPersec uint64
WriteBytesPersec uint64
ReadOperationsPerSec uint32
WriteOperationsPerSec uint32
ErrorCount uint32
FlushCount uint32
QueueLength uint64
""", namespace=CIMV2_NAMESPACE)
# The "Hyper-V Virtual Network Adapter" counter set: one instance per network adapter of
# a running VM, named "<VM name>_<adapter name>_<VM GUID>--<adapter GUID>". Raw values:
# the "...Persec" counters hold totals since the VM started.
_class("Win32_PerfRawData_NvspNicStats_HyperVVirtualNetworkAdapter", "Win32_PerfRawData", """
Name string key
BytesPersec uint64
BytesReceivedPersec uint64
BytesSentPersec uint64
PacketsPersec uint64
PacketsReceivedPersec uint64
PacketsSentPersec uint64
DroppedPacketsIncomingPersec uint64
DroppedPacketsOutgoingPersec uint64
""", namespace=CIMV2_NAMESPACE)
_class("Win32_PerfFormattedData_Counters_ProcessorInformation", None, """
Name string key
PercentIdleTime uint64
PercentProcessorTime uint64
""", namespace=CIMV2_NAMESPACE)
# The "Hyper-V Hypervisor Logical Processor" counter set: the hypervisor's view of every
# logical processor of the host, whichever partition runs on it (the management OS's own
# Processor counters see only its virtual processors). "_Total" averages them all;
# % Total Run Time is % Guest Run Time + % Hypervisor Run Time.
_class("Win32_PerfFormattedData_HvStats_HyperVHypervisorLogicalProcessor",
       "Win32_PerfFormattedData", """
Name string key
PercentTotalRunTime uint64
PercentGuestRunTime uint64
PercentHypervisorRunTime uint64
PercentIdleTime uint64
""", namespace=CIMV2_NAMESPACE)
# The same counters raw, as a refresher reads them before formatting: the run times are
# PERF_100NSEC_TIMER counters (100 ns of run time, averaged over the logical processors
# for "_Total"), formatted as 100 x their change / the change of Timestamp_Sys100NS.
_class("Win32_PerfRawData_HvStats_HyperVHypervisorLogicalProcessor", "Win32_PerfRawData", """
Name string key
PercentTotalRunTime uint64
PercentGuestRunTime uint64
PercentHypervisorRunTime uint64
PercentIdleTime uint64
Timestamp_Sys100NS uint64
Frequency_Sys100NS uint64
""", namespace=CIMV2_NAMESPACE)
_class("Win32_Process", "CIM_Process", """
Handle string key
Caption string
CommandLine string
CreationClassName string
CreationDate datetime
CSCreationClassName string
CSName string
Description string
ExecutablePath string
ExecutionState uint16
HandleCount uint32
InstallDate datetime
KernelModeTime uint64
MaximumWorkingSetSize uint32
MinimumWorkingSetSize uint32
Name string
OSCreationClassName string
OSName string
OtherOperationCount uint64
OtherTransferCount uint64
PageFaults uint32
PageFileUsage uint32
ParentProcessId uint32
PeakPageFileUsage uint32
PeakVirtualSize uint64
PeakWorkingSetSize uint32
Priority uint32
PrivatePageCount uint64
ProcessId uint32
QuotaNonPagedPoolUsage uint32
QuotaPagedPoolUsage uint32
QuotaPeakNonPagedPoolUsage uint32
QuotaPeakPagedPoolUsage uint32
ReadOperationCount uint64
ReadTransferCount uint64
SessionId uint32
Status string
TerminationDate datetime
ThreadCount uint32
UserModeTime uint64
VirtualSize uint64
WindowsVersion string
WorkingSetSize uint64
WriteOperationCount uint64
WriteTransferCount uint64
""", methods=(
    "Create(in CommandLine string, in CurrentDirectory string, "
    "in ProcessStartupInformation object, out ProcessId uint32)",
    "Terminate(in Reason uint32)",
), namespace=CIMV2_NAMESPACE)
# Abstract on Windows (a method-parameter class): no instances, only spawned ones.
_class("Win32_ProcessStartup", "Win32_MethodParameterClass", """
CreateFlags uint32
EnvironmentVariables string[]
ErrorMode uint16 = 1
FillAttribute uint32
PriorityClass uint32
ShowWindow uint16
Title string
WinstationDesktop string
X uint32
XCountChars uint32
XSize uint32
Y uint32
YCountChars uint32
YSize uint32
""", namespace=CIMV2_NAMESPACE)
_class("Win32_SystemOperatingSystem", "CIM_InstalledOS", """
GroupComponent reference key
PartComponent reference key
PrimaryOS boolean
""", namespace=CIMV2_NAMESPACE, association=True)

@functools.cache
def lookup(name: str, namespace: str | None = None) -> ClassDef | None:
    """The concrete class ``name`` (case-insensitive) in ``namespace`` if given."""
    for class_def in CLASSES.values():
        if class_def.name.lower() == name.lower() and (
            namespace is None or class_def.namespace.lower() == namespace.lower()
        ):
            return class_def
    return None


@functools.cache
def concrete_classes(name: str, namespace: str) -> tuple[ClassDef, ...]:
    """Every concrete class that is ``name`` or derives from it, in ``namespace``."""
    return tuple(
        c for c in CLASSES.values() if c.namespace.lower() == namespace.lower() and c.is_a(name)
    )


def abstract_class(name: str, namespace: str) -> ClassDef | None:
    """The abstract base class ``name`` (any case) as declared, when a concrete class of
    ``namespace`` derives from it; None otherwise. It has no instances of its own."""
    key = next((k for k in _BASE_PROPS if k.lower() == name.lower()), None)
    if key is None or not concrete_classes(key, namespace):
        return None
    ancestors = _BASE_ANCESTORS[key]
    props = MappingProxyType({p.name.lower(): p for p in _BASE_PROPS[key]})
    return ClassDef(key, namespace, ancestors[0] if ancestors else None, ancestors, props)
