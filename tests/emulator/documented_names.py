"""Microsoft's documented WMI names, as an oracle for the emulator's schema.

This table is written from Microsoft's reference pages, never from the emulator's
code: the MOF "Syntax" block of each class page (``desktop-src/HyperV_v2/*.md`` and
``desktop-src/CIMWin32Prov/*.md`` in MicrosoftDocs/win32) for properties and their
CIM types, and each method page for parameter names, directions, types and arrays.
Those class blocks include inherited properties, so each entry lists every property
an instance carries.

Conventions:

* ``cim_type`` is one of :data:`CIM_TYPES`. ``reference`` is a ``REF`` typed property
  or parameter. Strings that carry an embedded instance (``SystemSettings``,
  ``ResourceSettings[]`` ...) are ``string``. ``object`` is a property or parameter
  whose type is a class without ``REF`` (an embedded object such as
  ``Msvm_SummaryInformation.Snapshots`` or ``GetSummaryInformation(SummaryInformation)``).
* ``ReturnValue`` (always ``uint32``) is not listed.
* Methods that a page marks "not supported"/"not implemented" (``SetPowerState``,
  ``KillJob``, ``EnableDevice``, ...) are left out on purpose: an emulator must not offer
  them. Documented methods whose pages were not tabulated are named in a comment next
  to their class.
* Doubts are marked ``NOTE`` where they occur.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

V2: Final = "root\\virtualization\\v2"
CIMV2: Final = "root\\cimv2"
NAMESPACES: Final = frozenset({V2, CIMV2})

_INTEGERS: Final = tuple(f"{sign}int{bits}" for sign in "us" for bits in (8, 16, 32, 64))
CIM_TYPES: Final = frozenset(
    {"string", "boolean", "datetime", "real32", "real64", "char16", "reference", "object"}
    | set(_INTEGERS)
)
DIRECTIONS: Final = frozenset({"in", "out"})


@dataclass(frozen=True)
class DocProperty:
    name: str
    cim_type: str
    is_array: bool = False


@dataclass(frozen=True)
class DocParam:
    name: str
    cim_type: str
    is_array: bool
    direction: str


@dataclass(frozen=True)
class DocMethod:
    name: str
    params: tuple[DocParam, ...]

    def param(self, name: str) -> DocParam | None:
        """The parameter spelled exactly ``name``, or None."""
        return next((p for p in self.params if p.name == name), None)


@dataclass(frozen=True)
class DocClass:
    name: str
    namespace: str
    superclass: str | None
    properties: tuple[DocProperty, ...]
    methods: tuple[DocMethod, ...] = ()

    def prop(self, name: str) -> DocProperty | None:
        """The property spelled exactly ``name``, or None."""
        return next((p for p in self.properties if p.name == name), None)

    def method(self, name: str) -> DocMethod | None:
        """The method spelled exactly ``name``, or None."""
        return next((m for m in self.methods if m.name == name), None)


# --- compact notation -------------------------------------------------------------------
# A property spec is groups separated by ";", each "type Name Name ..."; "type[]" marks
# arrays. A parameter spec is groups "in|out type Name Name ...".


def _groups(spec: str) -> Iterable[list[str]]:
    return (group.split() for group in spec.split(";") if group.strip())


def _props(*specs: str) -> tuple[DocProperty, ...]:
    found: list[DocProperty] = []
    for words in _groups(";".join(specs)):
        cim_type, names = words[0], words[1:]
        base = cim_type.removesuffix("[]")
        found.extend(DocProperty(n, base, base != cim_type) for n in names)
    return tuple(found)


def _method(name: str, spec: str = "") -> DocMethod:
    params: list[DocParam] = []
    for words in _groups(spec):
        direction, cim_type, names = words[0], words[1], words[2:]
        base = cim_type.removesuffix("[]")
        params.extend(DocParam(n, base, base != cim_type, direction) for n in names)
    return DocMethod(name, tuple(params))


def _cls(
    name: str,
    superclass: str | None,
    props: tuple[DocProperty, ...],
    methods: tuple[DocMethod, ...] = (),
    namespace: str = V2,
) -> DocClass:
    return DocClass(name, namespace, superclass, props, methods)


# --- property groups shared through CIM inheritance ------------------------------------
_MANAGED = "string InstanceID Caption Description ElementName"
_SYSTEM_ELEMENT = (
    "datetime InstallDate; string Name; uint16[] OperationalStatus; string[] StatusDescriptions;"
    " string Status; uint16 HealthState CommunicationStatus DetailedStatus OperatingStatus"
    " PrimaryStatus"
)
_ENABLED = (
    "uint16 EnabledState; string OtherEnabledState; uint16 RequestedState EnabledDefault;"
    " datetime TimeOfLastStateChange; uint16[] AvailableRequestedStates;"
    " uint16 TransitioningToState"
)
_COMPUTER_SYSTEM = (
    f"{_MANAGED}; {_SYSTEM_ELEMENT}; {_ENABLED};"
    " string CreationClassName PrimaryOwnerName PrimaryOwnerContact NameFormat;"
    " string[] Roles OtherIdentifyingInfo IdentifyingDescriptions OtherDedicatedDescriptions;"
    " uint16[] Dedicated PowerManagementCapabilities; uint16 ResetCapability"
)
_LOGICAL_DEVICE = (
    f"{_MANAGED}; {_SYSTEM_ELEMENT}; {_ENABLED};"
    " string SystemCreationClassName SystemName CreationClassName DeviceID;"
    " boolean PowerManagementSupported; uint16[] PowerManagementCapabilities;"
    " uint16 Availability StatusInfo; uint32 LastErrorCode; string ErrorDescription;"
    " boolean ErrorCleared; string[] OtherIdentifyingInfo; uint64 PowerOnHours"
    " TotalPowerOnHours; string[] IdentifyingDescriptions; uint16[] AdditionalAvailability;"
    " uint64 MaxQuiesceTime"
)
# NOTE: the Msvm_ExternalEthernetPort page types AdditionalAvailability as a string array;
# CIM_LogicalDevice and the sibling Msvm_EthernetSwitchPort page say uint16 array.
_ETHERNET_PORT = (
    f"{_LOGICAL_DEVICE}; uint64 Speed MaxSpeed RequestedSpeed; uint16 UsageRestriction PortType;"
    " string OtherPortType OtherNetworkPortType; uint16 PortNumber LinkTechnology;"
    " string OtherLinkTechnology PermanentAddress; string[] NetworkAddresses;"
    " boolean FullDuplex AutoSense; uint64 SupportedMaximumTransmissionUnit"
    " ActiveMaximumTransmissionUnit; uint32 MaxDataSize; uint16[] Capabilities;"
    " string[] CapabilityDescriptions; uint16[] EnabledCapabilities;"
    " string[] OtherEnabledCapabilities"
)
_SERVICE = (
    f"{_MANAGED}; {_SYSTEM_ELEMENT}; {_ENABLED};"
    " string SystemCreationClassName SystemName CreationClassName PrimaryOwnerName"
    " PrimaryOwnerContact StartMode; boolean Started"
)
_JOB = (
    f"{_MANAGED}; {_SYSTEM_ELEMENT}; string JobStatus;"
    " datetime TimeSubmitted ScheduledStartTime StartTime ElapsedTime; uint32 JobRunTimes;"
    " uint8 RunMonth; sint8 RunDay RunDayOfWeek; datetime RunStartInterval;"
    " uint16 LocalOrUtcTime; datetime UntilTime; string Notify Owner; uint32 Priority;"
    " uint16 PercentComplete; boolean DeleteOnCompletion; uint16 ErrorCode;"
    " string ErrorDescription ErrorSummaryDescription; uint16 RecoveryAction;"
    " string OtherRecoveryAction; uint16 JobState; datetime TimeOfLastStateChange"
    " TimeBeforeRemoval"
)
_MSVM_JOB = f"{_JOB}; boolean Cancellable; uint16 JobType"
_RASD = (
    f"{_MANAGED}; uint16 ResourceType; string OtherResourceType ResourceSubType PoolID;"
    " uint16 ConsumerVisibility; string[] HostResource; string AllocationUnits;"
    " uint64 VirtualQuantity Reservation Limit; uint32 Weight;"
    " boolean AutomaticAllocation AutomaticDeallocation; string Parent; string[] Connection;"
    " string Address; uint16 MappingBehavior; string AddressOnParent VirtualQuantityUnits"
)
_EPASD = f"{_RASD}; uint16 DesiredVLANEndpointMode; string OtherEndpointMode"
_VSSD = (
    f"{_MANAGED}; string VirtualSystemIdentifier VirtualSystemType; string[] Notes;"
    " datetime CreationTime; string ConfigurationID ConfigurationDataRoot ConfigurationFile"
    " SnapshotDataRoot SuspendDataRoot SwapFileDataRoot LogDataRoot;"
    " uint16 AutomaticStartupAction; datetime AutomaticStartupActionDelay;"
    " uint16 AutomaticStartupActionSequenceNumber AutomaticShutdownAction"
    " AutomaticRecoveryAction; string RecoveryFile"
)

# --- method signatures shared by several classes ----------------------------------------
_SYSTEM_STATE_CHANGE = _method(
    "RequestStateChange", "in uint16 RequestedState; out reference Job; in datetime TimeoutPeriod"
)
_JOB_METHODS = (
    _method("RequestStateChange", "in uint16 RequestedState; in datetime TimeoutPeriod"),
    _method("GetError", "out string Error"),
    _method("GetErrorEx", "out string[] Errors"),
)
_SYSTEM_LIFECYCLE = (
    _method(
        "DefineSystem",
        "in string SystemSettings; in string[] ResourceSettings;"
        " in reference ReferenceConfiguration; out reference ResultingSystem Job",
    ),
    _method("DestroySystem", "in reference AffectedSystem; out reference Job"),
    _method("ModifySystemSettings", "in string SystemSettings; out reference Job"),
)
_RESOURCE_AND_FEATURE_SETTINGS = (
    _method(
        "AddResourceSettings",
        "in reference AffectedConfiguration; in string[] ResourceSettings;"
        " out reference[] ResultingResourceSettings; out reference Job",
    ),
    _method(
        "ModifyResourceSettings",
        "in string[] ResourceSettings; out reference[] ResultingResourceSettings;"
        " out reference Job",
    ),
    _method("RemoveResourceSettings", "in reference[] ResourceSettings; out reference Job"),
    _method(
        "AddFeatureSettings",
        "in reference AffectedConfiguration; in string[] FeatureSettings;"
        " out reference[] ResultingFeatureSettings; out reference Job",
    ),
    _method(
        "ModifyFeatureSettings",
        "in string[] FeatureSettings; out reference[] ResultingFeatureSettings; out reference Job",
    ),
    _method("RemoveFeatureSettings", "in reference[] FeatureSettings; out reference Job"),
)
_KVP = "in reference TargetSystem; in string[] DataItems; out reference Job"
_MIGRATE_IN = (
    "in reference ComputerSystem; in string DestinationHost MigrationSettingData"
    " NewSystemSettingData; in string[] NewResourceSettingData"
)
_COMPONENT_ASSOCIATION = "reference GroupComponent PartComponent"

_VIRTUALIZATION: Final = (
    # Documented but not tabulated: InjectNonMaskableInterrupt, RequestReplicationStateChange,
    # RequestReplicationStateChangeEx.
    _cls(
        "Msvm_ComputerSystem",
        "CIM_ComputerSystem",
        _props(
            _COMPUTER_SYSTEM,
            "uint64 OnTimeInMilliseconds; uint32 ProcessID; datetime TimeOfLastConfigurationChange;"
            " uint16 NumberOfNumaNodes ReplicationState ReplicationHealth ReplicationMode"
            " FailedOverReplicationType LastReplicationType;"
            " datetime LastApplicationConsistentReplicationTime LastReplicationTime"
            " LastSuccessfulBackupTime; uint16 EnhancedSessionModeState",
        ),
        (_SYSTEM_STATE_CHANGE,),
    ),
    _cls(
        "Msvm_PlannedComputerSystem",
        "CIM_ComputerSystem",
        _props(
            _COMPUTER_SYSTEM,
            "uint16[] AssignedNumaNodeList; uint64 OnTimeInMilliseconds; uint32 ProcessID;"
            " datetime TimeOfLastConfigurationChange",
        ),
        (_SYSTEM_STATE_CHANGE,),
    ),
    _cls(
        "Msvm_VirtualSystemSettingData",
        "CIM_VirtualSystemSettingData",
        _props(
            _VSSD,
            "string BIOSGUID BIOSSerialNumber BaseBoardSerialNumber ChassisSerialNumber"
            " Architecture ChassisAssetTag; boolean BIOSNumLock; uint16[] BootOrder;"
            " string Parent; uint16 UserSnapshotType; boolean IsSaved;"
            " string AdditionalRecoveryInformation; boolean AllowFullSCSICommandSet;"
            " uint32 DebugChannelId; uint16 DebugPortEnabled; uint32 DebugPort; string Version;"
            " boolean IncrementalBackupEnabled VirtualNumaEnabled AllowReducedFcRedundancy;"
            " string VirtualSystemSubType; string[] BootSourceOrder; boolean PauseAfterBootFailure;"
            " uint16 NetworkBootPreferredProtocol; boolean GuestControlledCacheTypes"
            " AutomaticSnapshotsEnabled IsAutomaticSnapshot; string GuestStateFile"
            " GuestStateDataRoot; boolean LockOnDisconnect; string ParentPackage;"
            " datetime AutomaticCriticalErrorActionTimeout; uint16 AutomaticCriticalErrorAction"
            " ConsoleMode; boolean SecureBootEnabled; string SecureBootTemplateId;"
            " uint64 LowMmioGapSize HighMmioGapSize; uint16 EnhancedSessionTransportType",
        ),
    ),
    _cls(
        "Msvm_ResourceAllocationSettingData",
        "CIM_ResourceAllocationSettingData",
        _props(_RASD, "string[] VirtualSystemIdentifiers"),
    ),
    _cls(
        "Msvm_ProcessorSettingData",
        "CIM_ResourceAllocationSettingData",
        _props(
            _RASD,
            "boolean LimitCPUID; uint64 HwThreadsPerCore; boolean LimitProcessorFeatures;"
            " uint64 MaxProcessorsPerNumaNode MaxNumaNodesPerSocket;"
            " boolean EnableHostResourceProtection; string CpuGroupId;"
            " boolean HideHypervisorPresent ExposeVirtualizationExtensions",
        ),
    ),
    _cls(
        "Msvm_MemorySettingData",
        "CIM_ResourceAllocationSettingData",
        _props(
            _RASD,
            "boolean HugePagesEnabled DynamicMemoryEnabled; uint32 TargetMemoryBuffer;"
            " boolean IsVirtualized SwapFilesInUse; uint64 MaxMemoryBlocksPerNumaNode SgxSize;"
            " boolean SgxEnabled",
        ),
    ),
    _cls(
        "Msvm_StorageAllocationSettingData",
        "CIM_StorageAllocationSettingData",
        _props(
            _RASD,
            "string StorageQoSPolicyID; uint64 VirtualResourceBlockSize; uint16 Access;"
            " uint64 HostResourceBlockSize HostExtentStartingAddress; string HostExtentName;"
            " uint16 HostExtentNameFormat; string OtherHostExtentNameFormat;"
            " uint16 HostExtentNameNamespace; string OtherHostExtentNameNamespace;"
            " uint64 IOPSLimit IOPSReservation; string IOPSAllocationUnits;"
            " boolean PersistentReservationsSupported; uint16 CachingMode; string SnapshotId;"
            " boolean IgnoreFlushes; uint16 WriteHardeningMethod",
        ),
    ),
    _cls(
        "Msvm_SyntheticEthernetPortSettingData",
        "CIM_EthernetPortAllocationSettingData",
        _props(
            _EPASD,
            "string[] VirtualSystemIdentifiers; boolean DeviceNamingEnabled AllowPacketDirect"
            " StaticMacAddress ClusterMonitored",
        ),
    ),
    _cls(
        "Msvm_EthernetPortAllocationSettingData",
        "CIM_EthernetPortAllocationSettingData",
        _props(
            _EPASD,
            "uint16 EnabledState; string LastKnownSwitchName; string[] RequiredFeatures"
            " RequiredFeatureHints; string TestReplicaPoolID TestReplicaSwitchName"
            " CompartmentGuid",
        ),
    ),
    _cls(
        "Msvm_EthernetSwitchPortFeatureSettingData",  # abstract
        "Msvm_FeatureSettingData",
        _props(_MANAGED),
    ),
    _cls(
        "Msvm_EthernetSwitchPortVlanSettingData",
        "Msvm_EthernetSwitchPortFeatureSettingData",
        _props(
            _MANAGED,
            "uint32 OperationMode PvlanMode; uint16 AccessVlanId NativeVlanId PrimaryVlanId"
            " SecondaryVlanId; uint16[] PruneVlanIdArray TrunkVlanIdArray SecondaryVlanIdArray",
        ),
    ),
    _cls(
        "Msvm_EthernetSwitchPortAclSettingData",
        "Msvm_EthernetSwitchPortFeatureSettingData",
        _props(
            _MANAGED,
            "string Name LocalAddress RemoteAddress; uint8 Direction Applicability AclType Action"
            " LocalAddressPrefixLength RemoteAddressPrefixLength",
        ),
    ),
    # NOTE: this page's MOF block omits the four properties every feature setting inherits
    # (InstanceID, Caption, Description, ElementName); they are listed here.
    _cls(
        "Msvm_EthernetSwitchPortExtendedAclSettingData",
        "Msvm_EthernetSwitchPortFeatureSettingData",
        _props(
            _MANAGED,
            "string Name LocalIPAddress RemoteIPAddress LocalPort RemotePort Protocol;"
            " uint8 Direction Action; uint16 Weight IdleSessionTimeout; boolean Stateful;"
            " uint32 IsolationID",
        ),
    ),
    _cls(
        "Msvm_EthernetSwitchPortBandwidthSettingData",
        "Msvm_EthernetSwitchPortFeatureSettingData",
        _props(_MANAGED, "uint64 Reservation Weight Limit BurstLimit BurstSize"),
    ),
    _cls(
        "Msvm_EthernetSwitchPortSecuritySettingData",
        "Msvm_EthernetSwitchPortFeatureSettingData",
        _props(
            _MANAGED,
            "boolean AllowMacSpoofing EnableDhcpGuard EnableRouterGuard AllowIeeePriorityTag"
            " AllowTeaming EnableFixSpeed10G Reserved; uint8 MonitorMode MonitorSession;"
            " uint32 VirtualSubnetId TeamNumber DynamicIPAddressLimit StormLimit; string TeamName",
        ),
    ),
    _cls(
        "Msvm_EthernetSwitchPortOffloadSettingData",
        "Msvm_EthernetSwitchPortFeatureSettingData",
        _props(
            _MANAGED,
            "uint32 IPSecOffloadLimit VMQOffloadWeight IOVOffloadWeight IOVQueuePairsRequested"
            " IOVInterruptModeration PacketDirectModerationInterval VmmqQueuePairs"
            " VrssVmbusChannelAffinityPolicy VrssQueueSchedulingMode VrssMinQueuePairs"
            " PacketDirectModerationCount PacketDirectNumProcs;"
            " boolean VrssIndependentHostSpreading VrssExcludePrimaryProcessor VmmqEnabled"
            " VrssEnabled",
        ),
    ),
    _cls(
        "Msvm_VirtualEthernetSwitch",
        "CIM_ComputerSystem",
        _props(_COMPUTER_SYSTEM, "uint32 MaxVMQOffloads MaxIOVOffloads"),
        (_SYSTEM_STATE_CHANGE,),  # NOTE: signature taken from the computer-system pages
    ),
    _cls(
        "Msvm_VirtualEthernetSwitchSettingData",
        "CIM_VirtualEthernetSwitchSettingData",
        _props(
            _VSSD,
            "string[] VLANConnection AssociatedResourcePool ExtensionOrder;"
            " uint32 MaxNumMACAddress BandwidthReservationMode;"
            " boolean IOVPreferred TeamingEnabled PacketDirectEnabled",
        ),
    ),
    # Documented but not tabulated for the ports and components below: RequestStateChange, Reset.
    _cls(
        "Msvm_ExternalEthernetPort",
        "CIM_EthernetPort",
        _props(_ETHERNET_PORT, "boolean IsBound"),
    ),
    _cls(
        "Msvm_EthernetSwitchPort",
        "CIM_EthernetPort",
        _props(_ETHERNET_PORT, "uint32 VMQOffloadUsage IOVOffloadUsage"),
    ),
    _cls(
        "Msvm_LANEndpoint",
        "CIM_LANEndpoint",
        _props(
            _MANAGED,
            _SYSTEM_ELEMENT,
            _ENABLED,
            "string SystemCreationClassName SystemName CreationClassName NameFormat"
            " OtherTypeDescription LANID OtherLANType MACAddress; uint16 ProtocolType"
            " ProtocolIFType LANType; string[] AliasAddresses GroupAddresses;"
            " uint32 MaxDataSize; boolean Connected",
        ),
    ),
    _cls(
        "Msvm_KvpExchangeComponent",
        "CIM_LogicalDevice",
        _props(_LOGICAL_DEVICE, "string[] GuestExchangeItems GuestIntrinsicExchangeItems"),
    ),
    _cls(
        "Msvm_KvpExchangeComponentSettingData",
        "CIM_ResourceAllocationSettingData",
        _props(
            _RASD,
            "boolean DisableHostKVPItems; uint16 EnabledState;"
            " string[] HostExchangeItems HostOnlyItems",
        ),
    ),
    _cls(
        "Msvm_GuestNetworkAdapterConfiguration",
        None,
        _props("string InstanceID; uint16 ProtocolIFType; boolean DHCPEnabled;"
               " string[] IPAddresses Subnets DefaultGateways DNSServers;"
               " uint16[] IPAddressOrigins"),
    ),
    _cls(
        "Msvm_KvpExchangeDataItem",
        "CIM_ManagedElement",
        _props(_MANAGED, "uint16 Source; string Name Data"),
    ),
    _cls(
        "Msvm_ShutdownComponent",
        "CIM_LogicalDevice",
        _props(_LOGICAL_DEVICE),
        (
            _method("InitiateShutdown", "in boolean Force; in string Reason"),
            # Minimum supported server: Windows Server 2016; older hosts lack it.
            _method("InitiateReboot", "in boolean Force; in string Reason"),
        ),
    ),
    _cls(
        "Msvm_SummaryInformation",
        "Msvm_SummaryInformationBase",
        _props(
            "string InstanceID AllocatedGPU ElementName OtherEnabledState GuestOperatingSystem"
            " Name Notes Version VirtualSystemSubType HostComputerSystemName;"
            " boolean Shielded SwapFilesInUse MemorySpansPhysicalNumaNodes;"
            " object[] AsynchronousTasks Snapshots; datetime CreationTime;"
            " uint16 EnabledState HealthState Heartbeat NumberOfProcessors ProcessorLoad"
            " ThumbnailImageHeight ThumbnailImageWidth ReplicationState ReplicationHealth"
            " ReplicationMode ApplicationHealth IntegrationServicesVersionState"
            " EnhancedSessionModeState; uint64 MemoryUsage UpTime;"
            " sint32 MemoryAvailable AvailableMemoryBuffer;"
            " uint16[] OperationalStatus ProcessorLoadHistory ReplicationStateEx"
            " ReplicationHealthEx; string[] StatusDescriptions ReplicationProviderId"
            " VirtualSwitchNames; uint8[] ThumbnailImage; reference TestReplicaSystem",
        ),
    ),
    _cls("Msvm_ConcreteJob", "CIM_ConcreteJob", _props(_MSVM_JOB), _JOB_METHODS),
    _cls(
        "Msvm_StorageJob",
        "CIM_ConcreteJob",
        _props(_MSVM_JOB, "string Child Parent; uint32 JobCompletionStatusCode"),
        _JOB_METHODS,
    ),
    _cls(
        "Msvm_MigrationJob",
        "CIM_ConcreteJob",
        _props(
            _MSVM_JOB,
            "uint16 MigrationType; string VirtualSystemName DestinationHost NewSystemSettingData;"
            " string[] NewResourceSettingData",
        ),
        _JOB_METHODS,
    ),
    _cls(
        "Msvm_VirtualHardDiskSettingData",
        "CIM_SettingData",
        _props(
            _MANAGED,
            "uint16 Type Format PmemAddressAbstractionType; string Path ParentPath"
            " ParentIdentifier VirtualDiskId; datetime ParentTimestamp;"
            " uint64 MaxInternalSize DataAlignment; uint32 BlockSize LogicalSectorSize"
            " PhysicalSectorSize; boolean IsPmemCompatible",
        ),
    ),
    _cls(
        "Msvm_VirtualHardDiskState",
        None,  # the page's MOF block names no superclass
        _props(
            "uint64 FileSize MinInternalSize; boolean InUse; uint32 PhysicalSectorSize Alignment"
            " FragmentationPercentage; datetime Timestamp",
        ),
    ),
    # Documented but not tabulated: AddBootSourceSettings, AddFibreChannelChap,
    # AddGuestServiceSettings, AddSystemComponentSettings, DefinePlannedSystem,
    # DiagnoseNetworkConnection, ExportSystemDefinition, FormatError, GenerateWwpn,
    # GetCurrentWwpnFromGenerator, GetDefinitionFileSummaryInformation, GetSizeOfSystemFiles,
    # GetVirtualSystemThumbnailImage, ImportSnapshotDefinitions, ImportSystemDefinition,
    # ModifyDiskMergeSettings, ModifyGuestServiceSettings, ModifyServiceSettings,
    # ModifySystemComponentSettings, RemoveBootSourceSettings and more.
    _cls(
        "Msvm_VirtualSystemManagementService",
        "CIM_VirtualSystemManagementService",
        _props(_SERVICE),
        (
            *_SYSTEM_LIFECYCLE,
            *_RESOURCE_AND_FEATURE_SETTINGS,
            _method("AddKvpItems", _KVP),
            _method("ModifyKvpItems", _KVP),
            _method("RemoveKvpItems", _KVP),
            _method(
                "GetSummaryInformation",
                "in reference[] SettingData; in uint32[] RequestedInformation;"
                " out object[] SummaryInformation",
            ),
            _method(
                "RealizePlannedSystem",
                "in reference PlannedSystem; out reference ResultingSystem Job",
            ),
            _method("ValidatePlannedSystem", "in reference PlannedSystem; out reference Job"),
        ),
    ),
    # Documented but not tabulated: AttachVirtualHardDisk, ConvertVirtualHardDiskToVHDSet,
    # CreateVirtualFloppyDisk, DeleteVHDSnapshot, FindMountedStorageImageInstance,
    # GetVHDSetInformation, GetVHDSnapshotInformation, GetVirtualDiskChanges, OptimizeVHDSet,
    # RequestStateChange, SetVHDSnapshotInformation, StartService, StopService,
    # ValidatePersistentReservationSupport.
    _cls(
        "Msvm_ImageManagementService",
        "CIM_Service",
        _props(_SERVICE),
        (
            _method("CreateVirtualHardDisk", "in string VirtualDiskSettingData; out reference Job"),
            _method(
                "GetVirtualHardDiskSettingData",
                "in string Path; out string SettingData; out reference Job",
            ),
            _method(
                "GetVirtualHardDiskState", "in string Path; out string State; out reference Job"
            ),
            _method(
                "ResizeVirtualHardDisk",
                "in string Path; in uint64 MaxInternalSize; out reference Job",
            ),
            _method(
                "ConvertVirtualHardDisk",
                "in string SourcePath VirtualDiskSettingData; out reference Job",
            ),
            _method(
                "MergeVirtualHardDisk", "in string SourcePath DestinationPath; out reference Job"
            ),
            _method(
                "SetVirtualHardDiskSettingData",
                "in string VirtualDiskSettingData; out reference Job",
            ),
            _method(
                "SetParentVirtualHardDisk",
                "in string ChildPath ParentPath LeafPath; in boolean IgnoreIDMismatch;"
                " out reference Job",
            ),
            _method("ValidateVirtualHardDisk", "in string Path; out reference Job"),
            _method("CompactVirtualHardDisk", "in string Path; in uint16 Mode; out reference Job"),
        ),
    ),
    # Documented but not tabulated: RequestStateChange, StartService, StopService.
    _cls(
        "Msvm_VirtualEthernetSwitchManagementService",
        "CIM_VirtualSystemManagementService",
        _props(_SERVICE),
        (*_SYSTEM_LIFECYCLE, *_RESOURCE_AND_FEATURE_SETTINGS),
    ),
    # NOTE: this page types EnabledState as string; CIM_EnabledLogicalElement and every other
    # page say uint16, which is kept here. Documented but not tabulated: AddNetworkSettings,
    # CheckSystemCompatibilityInfo, GetSystemCompatibilityInfo,
    # GetSystemCompatibilityVectors, MigrateVirtualSystemToSystem, ModifyNetworkSettings,
    # RemoveNetworkSettings, RequestStateChange, StartService, StopService.
    _cls(
        "Msvm_VirtualSystemMigrationService",
        "CIM_VirtualSystemMigrationService",
        _props(
            _SERVICE,
            "uint32 ActiveVirtualSystemMigrationCount ActiveStorageMigrationCount;"
            " string[] MigrationServiceListenerIPAddressList",
        ),
        (
            _method("MigrateVirtualSystemToHost", f"{_MIGRATE_IN}; out reference Job"),
            _method(
                "CheckVirtualSystemIsMigratableToHost", f"{_MIGRATE_IN}; out boolean IsMigratable"
            ),
            _method("CheckVirtualSystemIsMigratable", f"{_MIGRATE_IN}; out reference Job"),
            _method("ModifyServiceSettings", "in string ServiceSettingData; out reference Job"),
        ),
    ),
    _cls(
        "Msvm_VirtualSystemMigrationServiceSettingData",
        "CIM_SettingData",
        _props(
            _MANAGED,
            "boolean EnableVirtualSystemMigration EnableCompression EnableSmbTransport;"
            " uint32 MaximumActiveVirtualSystemMigration MaximumActiveStorageMigration"
            " AuthenticationType",
        ),
    ),
    _cls(
        "Msvm_VirtualSystemMigrationNetworkSettingData",
        "CIM_SettingData",
        _props(_MANAGED, "string SubnetNumber; uint8 PrefixLength; uint32 Metric;"
               " string[] Tags"),
    ),
    _cls(
        "Msvm_VirtualSystemMigrationSettingData",
        "CIM_VirtualSystemMigrationSettingData",
        _props(
            _MANAGED,
            "uint16 MigrationType Priority Bandwidth TransportType CPUCappingMagnitude;"
            " string BandwidthUnit OtherTransportType DestinationPlannedVirtualSystemId;"
            " boolean RemoveSourceUnmanagedVhds AvoidRemovingVHDs"
            " CancelIfBlackoutThresholdExceeded AllowOverwriteExistingFile"
            " RetainVhdCopiesOnSource EnableCompression;"
            " string[] UnmanagedVhds DestinationIPAddressList",
        ),
    ),
    _cls(
        "Msvm_SettingsDefineState",
        "CIM_SettingsDefineState",
        _props("reference ManagedElement SettingData"),
    ),
    _cls(
        "Msvm_VirtualSystemSettingDataComponent",
        "CIM_VirtualSystemSettingDataComponent",
        _props(_COMPONENT_ASSOCIATION),
    ),
    _cls("Msvm_SystemDevice", "CIM_SystemDevice", _props(_COMPONENT_ASSOCIATION)),
    _cls(
        "Msvm_AffectedJobElement",
        "CIM_AffectedJobElement",
        _props(
            "reference AffectedElement AffectingElement; uint16[] ElementEffects;"
            " string[] OtherElementEffectsDescriptions",
        ),
    ),
    _cls(
        "Msvm_HostedDependency",
        "CIM_HostedDependency",
        _props("reference Antecedent Dependent"),
    ),
    _cls(
        "Msvm_ElementSettingData",
        "CIM_ElementSettingData",
        _props("reference ManagedElement SettingData; uint16 IsDefault IsCurrent IsNext"),
    ),
    _cls("Msvm_EthernetPortSettingDataComponent", "CIM_Component", _props(_COMPONENT_ASSOCIATION)),
    _cls(
        "Msvm_LogicalIdentity",
        "CIM_LogicalIdentity",
        _props("reference SameElement SystemElement"),
    ),
    _cls("Msvm_BootSourceComponent", "CIM_Component", _props(_COMPONENT_ASSOCIATION)),
    _cls("Msvm_SettingDataComponent", "CIM_Component", _props(_COMPONENT_ASSOCIATION)),
    _cls("Msvm_VirtualSystemMigrationServiceSettingDataComponent", "CIM_Component",
         _props(_COMPONENT_ASSOCIATION)),
    _cls(
        "Msvm_BootSourceSettingData",
        "CIM_SettingData",
        _props(
            _MANAGED,
            "uint32 BootSourceType; string OtherLocation FirmwareDevicePath BootSourceDescription;"
            " uint8[] OptionalData",
        ),
    ),
    _cls(
        "Msvm_TerminalServiceSettingData",
        "CIM_SettingData",
        _props(
            _MANAGED,
            "uint32 ListenerPort; boolean DisableSelfSignedCertificateGeneration;"
            " uint8[] AuthCertificateHash; string[] TrustedIssuerCertificateHashes"
            " AllowedHashAlgorithms",
        ),
    ),
    _cls(
        "Msvm_Error",
        "CIM_Error",
        _props(
            "uint16 ErrorType PerceivedSeverity ProbableCause ErrorSourceFormat;"
            " string OtherErrorType OwningEntity MessageID Message ProbableCauseDescription"
            " ErrorSource OtherErrorSourceFormat CIMStatusCodeDescription;"
            " string[] MessageArguments RecommendedActions; uint32 CIMStatusCode",
        ),
    ),
    # Resource metering. NOTE: the Msvm_MetricService page types EnabledState as string;
    # CIM_EnabledLogicalElement says uint16, which is kept here. Documented but not
    # tabulated: ControlMetricsByClass, ControlSampleTimes, GetMetricValues,
    # ModifyServiceSettings, RequestStateChange, ShowMetrics, ShowMetricsByClass,
    # StartService, StopService.
    _cls(
        "Msvm_MetricService",
        "CIM_MetricService",
        _props(_SERVICE),
        (
            _method(
                "ControlMetrics",
                "in reference Subject Definition; in uint16 MetricCollectionEnabled",
            ),
        ),
    ),
    _cls(
        "Msvm_AggregationMetricDefinition",
        "CIM_AggregationMetricDefinition",
        _props(
            _MANAGED,
            "string Id Name; uint16 DataType Calculable; string Units;"
            " string[] BreakdownDimensions; boolean IsContinuous;"
            " uint16 ChangeType TimeScope GatheringType; string ProgrammaticUnits;"
            " uint16 SimpleFunction",
        ),
    ),
    _cls(
        "Msvm_AggregationMetricValue",
        "CIM_AggregationMetricValue",
        _props(
            _MANAGED,
            "string MetricDefinitionId MeasuredElementName; datetime TimeStamp Duration;"
            " string MetricValue BreakdownDimension BreakdownValue; boolean Volatile;"
            " datetime AggregationTimeStamp AggregationDuration",
        ),
    ),
    _cls(
        "Msvm_BaseMetricValue",
        "CIM_BaseMetricValue",
        _props(
            _MANAGED,
            "string MetricDefinitionId MeasuredElementName; datetime TimeStamp Duration;"
            " string MetricValue BreakdownDimension BreakdownValue; boolean Volatile",
        ),
    ),
    _cls("Msvm_MetricForME", "CIM_MetricForME", _props("reference Antecedent Dependent")),
    _cls(
        "Msvm_MetricDefForME",
        "CIM_MetricDefForME",
        _props("reference Antecedent Dependent; uint16 MetricCollectionEnabled"),
    ),
)

# CIM base classes, for base-class queries. Their own pages list only locally defined
# properties, so each entry holds what every documented Msvm subclass above inherits from it.
# Superclasses follow the DMTF schema (CIM_ConcreteJob : CIM_Job is on its page). No methods.
_CIM_BASES: Final = (
    _cls("CIM_SettingData", "CIM_ManagedElement", _props(_MANAGED)),
    _cls("CIM_ResourceAllocationSettingData", "CIM_SettingData", _props(_RASD)),
    _cls("CIM_VirtualSystemSettingData", "CIM_SettingData", _props(_VSSD)),
    _cls("CIM_ComputerSystem", "CIM_System", _props(_COMPUTER_SYSTEM)),
    _cls("CIM_ConcreteJob", "CIM_Job", _props(_JOB)),
)

_WIN32: Final = (
    # Documented but not tabulated: Reboot, SetDateTime, Shutdown, Win32ShutdownTracker.
    _cls(
        "Win32_OperatingSystem",
        "CIM_OperatingSystem",
        _props(
            "string BootDevice BuildNumber BuildType Caption CodeSet CountryCode"
            " CreationClassName CSCreationClassName CSDVersion CSName Description Locale"
            " Manufacturer Name Organization OSArchitecture OtherTypeDescription PlusProductID"
            " PlusVersionNumber RegisteredUser SerialNumber Status SystemDevice SystemDirectory"
            " SystemDrive Version WindowsDirectory; sint16 CurrentTimeZone;"
            " boolean DataExecutionPrevention_Available DataExecutionPrevention_32BitApplications"
            " DataExecutionPrevention_Drivers Debug Distributed PAEEnabled"
            " PortableOperatingSystem Primary; uint8 DataExecutionPrevention_SupportPolicy"
            " ForegroundApplicationBoost QuantumLength QuantumType; uint32 EncryptionLevel"
            " LargeSystemCache MaxNumberOfProcesses NumberOfLicensedUsers NumberOfProcesses"
            " NumberOfUsers OperatingSystemSKU OSLanguage OSProductSuite ProductType SuiteMask;"
            " uint64 FreePhysicalMemory FreeSpaceInPagingFiles FreeVirtualMemory"
            " MaxProcessMemorySize SizeStoredInPagingFiles TotalSwapSpaceSize"
            " TotalVirtualMemorySize TotalVisibleMemorySize;"
            " datetime InstallDate LastBootUpTime LocalDateTime; string[] MUILanguages;"
            " uint16 OSType ServicePackMajorVersion ServicePackMinorVersion",
        ),
        (_method("Win32Shutdown", "in sint32 Flags Reserved"),),
        CIMV2,
    ),
    _cls(
        "Win32_Processor",
        "CIM_Processor",
        _props(
            "uint16 AddressWidth Architecture Availability CpuStatus CurrentVoltage DataWidth"
            " Family Level LoadPercentage ProcessorType Revision StatusInfo UpgradeMethod;"
            " string AssetTag Caption CreationClassName Description DeviceID ErrorDescription"
            " Manufacturer Name OtherFamilyDescription PartNumber PNPDeviceID ProcessorId Role"
            " SerialNumber SocketDesignation Status Stepping SystemCreationClassName SystemName"
            " UniqueId Version; uint32 Characteristics ConfigManagerErrorCode CurrentClockSpeed"
            " ExtClock L2CacheSize L2CacheSpeed L3CacheSize L3CacheSpeed LastErrorCode"
            " MaxClockSpeed NumberOfCores NumberOfEnabledCore NumberOfLogicalProcessors"
            " ThreadCount VoltageCaps; boolean ConfigManagerUserConfig ErrorCleared"
            " PowerManagementSupported SecondLevelAddressTranslationExtensions"
            " VirtualizationFirmwareEnabled VMMonitorModeExtensions; datetime InstallDate;"
            " uint16[] PowerManagementCapabilities",
        ),
        namespace=CIMV2,
    ),
    # Documented but not tabulated: JoinDomainOrWorkgroup, Rename, UnjoinDomainOrWorkgroup.
    _cls(
        "Win32_ComputerSystem",
        "CIM_UnitaryComputerSystem",
        _props(
            "uint16 AdminPasswordStatus BootOptionOnLimit BootOptionOnWatchDog ChassisBootupState"
            " DomainRole FrontPanelResetStatus KeyboardPasswordStatus PCSystemType PCSystemTypeEx"
            " PowerOnPasswordStatus PowerState PowerSupplyState ResetCapability"
            " SystemStartupDelay ThermalState WakeUpType;"
            " boolean AutomaticManagedPagefile AutomaticResetBootOption AutomaticResetCapability"
            " BootROMSupported DaylightInEffect EnableDaylightSavingsTime HypervisorPresent"
            " InfraredSupported NetworkServerModeEnabled PartOfDomain PowerManagementSupported;"
            " string BootupState Caption ChassisSKUNumber CreationClassName Description"
            " DNSHostName Domain LastLoadInfo Manufacturer Model Name NameFormat"
            " PrimaryOwnerContact PrimaryOwnerName Status SystemFamily SystemSKUNumber"
            " SystemType UserName Workgroup; uint16[] BootStatus PowerManagementCapabilities;"
            " sint16 CurrentTimeZone ResetCount ResetLimit; string[] InitialLoadInfo"
            " OEMStringArray Roles SupportContactDescription SystemStartupOptions;"
            " datetime InstallDate; uint32 NumberOfLogicalProcessors NumberOfProcessors;"
            " uint8[] OEMLogoBitmap; sint64 PauseAfterReset; uint8 SystemStartupSetting;"
            " uint64 TotalPhysicalMemory",
        ),
        namespace=CIMV2,
    ),
    _cls(
        "Win32_NetworkAdapterConfiguration",
        "CIM_Setting",
        _props(
            "string Caption Description SettingID DatabasePath DHCPServer DNSDomain DNSHostName"
            " IPXAddress IPXVirtualNetNumber MACAddress ServiceName WINSHostLookupFile"
            " WINSPrimaryServer WINSScopeID WINSSecondaryServer;"
            " boolean ArpAlwaysSourceRoute ArpUseEtherSNAP DeadGWDetectEnabled DHCPEnabled"
            " DNSEnabledForWINSResolution DomainDNSRegistrationEnabled FullDNSRegistrationEnabled"
            " IPEnabled IPFilterSecurityEnabled IPPortSecurityEnabled IPUseZeroBroadcast"
            " IPXEnabled PMTUBHDetectEnabled PMTUDiscoveryEnabled TcpUseRFC1122UrgentPointer"
            " WINSEnableLMHostsLookup; string[] DefaultIPGateway DNSDomainSuffixSearchOrder"
            " DNSServerSearchOrder IPAddress IPSecPermitIPProtocols IPSecPermitTCPPorts"
            " IPSecPermitUDPPorts IPSubnet IPXNetworkNumber; uint8 DefaultTOS DefaultTTL"
            " IGMPLevel; datetime DHCPLeaseExpires DHCPLeaseObtained;"
            " uint32 ForwardBufferMemory Index InterfaceIndex IPConnectionMetric IPXMediaType"
            " KeepAliveInterval KeepAliveTime MTU NumForwardPackets TcpipNetbiosOptions"
            " TcpMaxConnectRetransmissions TcpMaxDataRetransmissions TcpNumConnections;"
            " uint16[] GatewayCostMetric; uint32[] IPXFrameType; uint16 TcpWindowSize",
        ),
        namespace=CIMV2,
    ),
    # Documented but not tabulated: Disable, Enable.
    _cls(
        "Win32_NetworkAdapter",
        "CIM_NetworkAdapter",
        _props(
            "string AdapterType Caption CreationClassName Description DeviceID ErrorDescription"
            " GUID MACAddress Manufacturer Name NetConnectionID PermanentAddress PNPDeviceID"
            " ProductName ServiceName Status SystemCreationClassName SystemName;"
            " uint16 AdapterTypeID Availability NetConnectionStatus StatusInfo;"
            " boolean AutoSense ConfigManagerUserConfig ErrorCleared Installed NetEnabled"
            " PhysicalAdapter PowerManagementSupported; uint32 ConfigManagerErrorCode Index"
            " InterfaceIndex LastErrorCode MaxNumberControlled; uint64 MaxSpeed Speed;"
            " datetime InstallDate TimeOfLastReset; string[] NetworkAddresses;"
            " uint16[] PowerManagementCapabilities",
        ),
        namespace=CIMV2,
    ),
    # NOTE: no Microsoft page for this performance class is in the sources. Only the
    # properties the reference names (Name, PercentIdleTime) and PercentProcessorTime are
    # listed; the uint64 type of the percentage counters and the missing superclass are
    # assumptions.
    _cls(
        "Win32_PerfFormattedData_Counters_ProcessorInformation",
        None,
        _props("string Name; uint64 PercentIdleTime PercentProcessorTime"),
        namespace=CIMV2,
    ),
    # NOTE: the "Hyper-V Hypervisor Logical Processor" counter set; no reference page is
    # in the sources. Names and types as Microsoft's generated bindings of root\cimv2 list
    # them (microsoft/wmi, server2019: every counter uint64, under Win32_PerfFormattedData);
    # only the properties the emulator defines are tabulated.
    _cls(
        "Win32_PerfFormattedData_HvStats_HyperVHypervisorLogicalProcessor",
        "Win32_PerfFormattedData",
        _props("string Name; uint64 PercentTotalRunTime PercentGuestRunTime"
               " PercentHypervisorRunTime PercentIdleTime"),
        namespace=CIMV2,
    ),
    # NOTE: the same counter set raw, as the formatted one above (microsoft/wmi lists both
    # classes); Timestamp_Sys100NS and Frequency_Sys100NS are Win32_PerfRawData's own
    # (uint64, its reference page), which every raw counter class inherits.
    _cls(
        "Win32_PerfRawData_HvStats_HyperVHypervisorLogicalProcessor",
        "Win32_PerfRawData",
        _props("string Name; uint64 PercentTotalRunTime PercentGuestRunTime"
               " PercentHypervisorRunTime PercentIdleTime Timestamp_Sys100NS"
               " Frequency_Sys100NS"),
        namespace=CIMV2,
    ),
    # NOTE: a formatted/raw performance class (Tcpip "Network Interface" counters); the
    # counters are 64-bit raw values, typed uint64 as the other raw counters are.
    _cls(
        "Win32_PerfRawData_Tcpip_NetworkInterface",
        "Win32_PerfRawData",
        _props("string Name; uint64 BytesReceivedPersec BytesSentPersec BytesTotalPersec"
               " CurrentBandwidth"),
        namespace=CIMV2,
    ),
    # NOTE: the "Hyper-V Virtual Storage Device" counter set; no reference page is in the
    # sources. Names and types as Microsoft's generated bindings of root\cimv2 list them
    # (microsoft/wmi); only the properties the emulator defines are tabulated.
    _cls(
        "Win32_PerfRawData_Counters_HyperVVirtualStorageDevice",
        "Win32_PerfRawData",
        _props("string Name; uint64 ReadBytesPersec WriteBytesPersec QueueLength;"
               " uint32 ReadOperationsPerSec WriteOperationsPerSec ErrorCount FlushCount"),
        namespace=CIMV2,
    ),
    # NOTE: the "Hyper-V Virtual Network Adapter" counter set; no reference page is in the
    # sources. Names and types as Microsoft's generated bindings of root\cimv2 list them
    # for the formatted class (microsoft/wmi; every counter uint64), which the raw class
    # mirrors; only the properties the emulator defines are tabulated.
    _cls(
        "Win32_PerfRawData_NvspNicStats_HyperVVirtualNetworkAdapter",
        "Win32_PerfRawData",
        _props("string Name; uint64 BytesPersec BytesReceivedPersec BytesSentPersec"
               " PacketsPersec PacketsReceivedPersec PacketsSentPersec"
               " DroppedPacketsIncomingPersec DroppedPacketsOutgoingPersec"),
        namespace=CIMV2,
    ),
    # Documented but not tabulated: Chkdsk, ExcludeFromAutochk, ScheduleAutoChk.
    _cls(
        "Win32_LogicalDisk",
        "CIM_LogicalDisk",
        _props(
            "uint16 Access Availability StatusInfo; uint64 BlockSize FreeSpace NumberOfBlocks Size;"
            " string Caption CreationClassName Description DeviceID ErrorDescription"
            " ErrorMethodology FileSystem Name PNPDeviceID ProviderName Purpose Status"
            " SystemCreationClassName SystemName VolumeName VolumeSerialNumber;"
            " boolean Compressed ConfigManagerUserConfig ErrorCleared PowerManagementSupported"
            " QuotasDisabled QuotasIncomplete QuotasRebuilding SupportsDiskQuotas"
            " SupportsFileBasedCompression VolumeDirty; uint32 ConfigManagerErrorCode DriveType"
            " LastErrorCode MaximumComponentLength MediaType; datetime InstallDate;"
            " uint16[] PowerManagementCapabilities",
        ),
        namespace=CIMV2,
    ),
    # Documented but not tabulated: AttachDebugger, GetAvailableVirtualSize, GetOwner,
    # GetOwnerSid, SetPriority.
    _cls(
        "Win32_Process",
        "CIM_Process",
        _props(
            "string Caption CommandLine CreationClassName CSCreationClassName CSName"
            " Description ExecutablePath Handle Name OSCreationClassName OSName Status"
            " WindowsVersion; datetime CreationDate InstallDate TerminationDate;"
            " uint16 ExecutionState; uint32 HandleCount MaximumWorkingSetSize"
            " MinimumWorkingSetSize PageFaults PageFileUsage ParentProcessId PeakPageFileUsage"
            " PeakWorkingSetSize Priority ProcessId QuotaNonPagedPoolUsage QuotaPagedPoolUsage"
            " QuotaPeakNonPagedPoolUsage QuotaPeakPagedPoolUsage SessionId ThreadCount;"
            " uint64 KernelModeTime OtherOperationCount OtherTransferCount PeakVirtualSize"
            " PrivatePageCount ReadOperationCount ReadTransferCount UserModeTime VirtualSize"
            " WorkingSetSize WriteOperationCount WriteTransferCount",
        ),
        (
            _method("Create", "in string CommandLine CurrentDirectory;"
                    " in object ProcessStartupInformation; out uint32 ProcessId"),
            _method("Terminate", "in uint32 Reason"),
        ),
        CIMV2,
    ),
    # An abstract method-parameter class: the type of Create's ProcessStartupInformation.
    _cls(
        "Win32_ProcessStartup",
        "Win32_MethodParameterClass",
        _props("uint32 CreateFlags FillAttribute PriorityClass X XCountChars XSize Y"
               " YCountChars YSize; string[] EnvironmentVariables; uint16 ErrorMode ShowWindow;"
               " string Title WinstationDesktop"),
        namespace=CIMV2,
    ),
    _cls(
        "Win32_SystemOperatingSystem",
        "CIM_InstalledOS",
        _props("boolean PrimaryOS; reference GroupComponent PartComponent"),
        namespace=CIMV2,
    ),
)

ALL_CLASSES: Final[tuple[DocClass, ...]] = (*_VIRTUALIZATION, *_CIM_BASES, *_WIN32)
DOCUMENTED: Final[dict[str, DocClass]] = {cls.name: cls for cls in ALL_CLASSES}
