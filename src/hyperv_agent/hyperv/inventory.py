"""Every class, property and method of Hyper-V's WMI that the operation layer uses, in one
table, and the check that a host has them all.

``USED`` is built from ``schema.Class`` and what the modules of this package read, write,
query and call. It cannot drift from the code: ``tests/hyperv/test_inventory.py`` scans the
package's source and fails when a name used there is missing here, and
``tests/e2e/test_inventory_use.py`` records what a whole deployment selects, filters on and
calls, class by class, and fails when a name sits under the wrong class. ``doctor`` checks
a host against it (``missing_on``): one class declaration read per class.

Properties the code reads only when present (a newer Hyper-V's) are ``optional``, and
methods it calls only on a host new enough to have them are ``optional_methods``: their
absence is reported, not a failure. Performance counter sets (``counters``) come from
Windows' performance counters through WMI, whatever the Hyper-V version: they go missing
when the host's counter registrations are damaged. Some of them the agent can go without
(``spared``: what it loses then).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from hyperv_agent.cim.api import CimInstance
from hyperv_agent.cim.classdecl import CimClass
from hyperv_agent.errors import CimError, CimInvalidClass
from hyperv_agent.hyperv.schema import CIMV2, NAMESPACE, Class
from hyperv_agent.hyperv.session import HyperV

log = logging.getLogger("hyperv_agent.hyperv.inventory")

_JOB = ("Job",)


@dataclass(frozen=True)
class ClassUse:
    """What the operation layer uses of one class: properties it reads or writes, and
    methods with the parameters it passes or reads back."""

    name: str
    namespace: str = NAMESPACE
    properties: tuple[str, ...] = ()
    methods: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({}))
    optional: tuple[str, ...] = ()  # read only when the host has them
    #: Methods called only on a host that has them (a newer Windows'); the agent does
    #: without them elsewhere.
    optional_methods: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({}))
    service: bool = False  # a singleton service every Hyper-V host runs
    counters: bool = False  # a performance counter set (Win32_PerfRawData_*, _PerfFormattedData_*)
    spared: str = ""  # what the agent goes without when the class is missing; "": it fails


def _methods(**methods: tuple[str, ...]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType(methods)


_RASD = ("InstanceID", "ElementName", "ResourceType", "ResourceSubType", "Address",
         "AddressOnParent", "Parent", "HostResource", "VirtualQuantity", "Reservation",
         "Limit", "Weight")
_SERVICE_KEYS = ("CreationClassName", "Name", "SystemCreationClassName", "SystemName",
                 "Started", "EnabledState")
_MIGRATION_PARAMETERS = ("ComputerSystem", "DestinationHost", "MigrationSettingData",
                         "NewSystemSettingData", "NewResourceSettingData")

USED: tuple[ClassUse, ...] = (
    ClassUse(Class.COMPUTER_SYSTEM, properties=(
        "CreationClassName", "Name", "ElementName", "EnabledState", "Caption",
        "OperationalStatus"),
        methods=_methods(RequestStateChange=("RequestedState", *_JOB))),
    ClassUse(Class.VSSD, properties=(
        "InstanceID", "ElementName", "Notes", "VirtualSystemType", "VirtualSystemSubType",
        "BootOrder", "BootSourceOrder", "SecureBootEnabled", "SecureBootTemplateId",
        "AutomaticStartupAction", "AutomaticShutdownAction", "BIOSGUID")),
    ClassUse(Class.SETTING_DATA_BASE, properties=("InstanceID",)),
    ClassUse(Class.BOOT_SOURCE, properties=("InstanceID",)),
    ClassUse(Class.RASD_BASE, properties=_RASD),
    ClassUse(Class.RASD, properties=(*_RASD, "VirtualSystemIdentifiers")),
    ClassUse(Class.PROCESSOR, properties=(
        "InstanceID", "ResourceType", "VirtualQuantity", "Reservation", "Limit", "Weight",
        "LimitProcessorFeatures")),
    ClassUse(Class.MEMORY, properties=(
        "InstanceID", "ResourceType", "VirtualQuantity", "Reservation", "Limit",
        "DynamicMemoryEnabled")),
    ClassUse(Class.SASD, properties=(
        "InstanceID", "ResourceType", "ResourceSubType", "Parent", "HostResource", "PoolID")),
    ClassUse(Class.SEPSD, properties=(
        "InstanceID", "ResourceSubType", "ElementName", "Address", "StaticMacAddress",
        "VirtualSystemIdentifiers")),
    ClassUse(Class.EPASD, properties=(
        "InstanceID", "ResourceSubType", "ElementName", "Parent", "HostResource",
        "EnabledState"), optional=("LastKnownSwitchName",)),
    ClassUse(Class.VLAN, properties=(
        "InstanceID", "OperationMode", "AccessVlanId", "PvlanMode", "PrimaryVlanId",
        "SecondaryVlanId", "SecondaryVlanIdArray")),
    ClassUse(Class.GUEST_NETWORK, properties=("InstanceID", "IPAddresses")),
    ClassUse(Class.BANDWIDTH, properties=("InstanceID", "Limit")),
    ClassUse(Class.PORT_FEATURE_BASE, properties=("InstanceID",)),
    ClassUse(Class.EXTENDED_ACL, properties=(
        "InstanceID", "Name", "Direction", "Action", "Weight", "Protocol", "LocalIPAddress",
        "RemoteIPAddress", "LocalPort", "RemotePort", "Stateful", "IdleSessionTimeout"),
        optional=("IsolationID",)),
    ClassUse(Class.PORT_SECURITY, properties=(
        "InstanceID", "AllowMacSpoofing", "EnableDhcpGuard", "EnableRouterGuard")),
    ClassUse(Class.SWITCH, properties=("CreationClassName", "Name", "ElementName")),
    ClassUse(Class.SWITCH_SETTINGS, properties=("InstanceID",)),
    ClassUse(Class.EXTERNAL_PORT),
    ClassUse(Class.KVP_ITEM, properties=("Name", "Data", "Source")),
    ClassUse(Class.SHUTDOWN, properties=(
        "CreationClassName", "DeviceID", "SystemCreationClassName", "SystemName"),
        methods=_methods(InitiateShutdown=("Force", "Reason")),
        # Windows Server 2016 and later; RebootCommand resets the VM without it.
        optional_methods=_methods(InitiateReboot=("Force", "Reason"))),
    ClassUse(Class.CONCRETE_JOB, properties=(
        "JobState", "PercentComplete", "ErrorCode", "ErrorDescription",
        "ErrorSummaryDescription"), methods=_methods(RequestStateChange=("RequestedState",))),
    ClassUse(Class.STORAGE_JOB, properties=(
        "JobState", "PercentComplete", "ErrorCode", "ErrorDescription",
        "ErrorSummaryDescription", "Child", "Parent", "JobCompletionStatusCode"),
        methods=_methods(RequestStateChange=("RequestedState",))),
    ClassUse(Class.MIGRATION_JOB, properties=(
        "JobState", "PercentComplete", "ErrorCode", "ErrorDescription"),
        methods=_methods(RequestStateChange=("RequestedState",))),
    ClassUse(Class.SUMMARY, properties=(
        "Name", "ElementName", "EnabledState", "Notes", "ProcessorLoad",
        "NumberOfProcessors", "MemoryUsage", "UpTime", "MemoryAvailable")),
    ClassUse(Class.VHD_SETTINGS, properties=(
        "Path", "Type", "Format", "MaxInternalSize", "ParentPath", "BlockSize",
        "LogicalSectorSize", "PhysicalSectorSize")),
    ClassUse(Class.VSMS, properties=_SERVICE_KEYS, service=True, methods=_methods(
        DefineSystem=("SystemSettings", "ResourceSettings", "ResultingSystem", *_JOB),
        DestroySystem=("AffectedSystem", *_JOB),
        ModifySystemSettings=("SystemSettings", *_JOB),
        AddResourceSettings=("AffectedConfiguration", "ResourceSettings",
                             "ResultingResourceSettings", *_JOB),
        ModifyResourceSettings=("ResourceSettings", *_JOB),
        RemoveResourceSettings=("ResourceSettings", *_JOB),
        AddFeatureSettings=("AffectedConfiguration", "FeatureSettings",
                            "ResultingFeatureSettings", *_JOB),
        ModifyFeatureSettings=("FeatureSettings", *_JOB),
        RemoveFeatureSettings=("FeatureSettings", *_JOB),
        AddKvpItems=("TargetSystem", "DataItems", *_JOB),
        ModifyKvpItems=("TargetSystem", "DataItems", *_JOB),
        GetSummaryInformation=("SettingData", "RequestedInformation",
                               "SummaryInformation"))),
    ClassUse(Class.IMAGE_SERVICE, properties=_SERVICE_KEYS, service=True, methods=_methods(
        ConvertVirtualHardDisk=("SourcePath", "VirtualDiskSettingData", *_JOB),
        CreateVirtualHardDisk=("VirtualDiskSettingData", *_JOB),
        GetVirtualHardDiskSettingData=("Path", "SettingData", *_JOB),
        ResizeVirtualHardDisk=("Path", "MaxInternalSize", *_JOB),
        ValidateVirtualHardDisk=("Path", *_JOB))),
    ClassUse(Class.MIGRATION_SERVICE, properties=_SERVICE_KEYS, service=True,
        methods=_methods(
            MigrateVirtualSystemToHost=_MIGRATION_PARAMETERS + _JOB,
            CheckVirtualSystemIsMigratableToHost=(*_MIGRATION_PARAMETERS, "IsMigratable"),
            CheckVirtualSystemIsMigratable=_MIGRATION_PARAMETERS + _JOB)),
    ClassUse(Class.MIGRATION_SETTINGS, properties=(
        "MigrationType", "TransportType", "DestinationIPAddressList")),
    ClassUse(Class.MIGRATION_SERVICE_SETTINGS, properties=(
        "InstanceID", "EnableVirtualSystemMigration", "AuthenticationType",
        "MaximumActiveVirtualSystemMigration")),
    ClassUse(Class.METRIC_SERVICE, properties=_SERVICE_KEYS, service=True, methods=_methods(
        ControlMetrics=("Subject", "Definition", "MetricCollectionEnabled"))),
    ClassUse(Class.METRIC_DEFINITION_BASE, properties=("Id", "ElementName")),
    ClassUse(Class.METRIC_VALUE_BASE, properties=("MetricDefinitionId", "MetricValue")),
    ClassUse(Class.METRIC_FOR_ME),
    ClassUse(Class.MIGRATION_NETWORKS, properties=(
        "InstanceID", "SubnetNumber", "PrefixLength", "Metric")),
    ClassUse(Class.OPERATING_SYSTEM, CIMV2, properties=(
        "Name", "Version", "Caption", "CSName", "TotalVisibleMemorySize",
        "FreePhysicalMemory", "LocalDateTime")),
    ClassUse(Class.PROCESSOR_CIMV2, CIMV2, properties=(
        "DeviceID", "NumberOfCores", "NumberOfLogicalProcessors", "MaxClockSpeed",
        "ProcessorType")),
    ClassUse(Class.NIC_CONFIGURATION, CIMV2, properties=(
        "IPEnabled", "IPAddress", "IPSubnet", "MACAddress", "DefaultIPGateway",
        "Description")),
    ClassUse(Class.HYPERVISOR_LP_PERF, CIMV2,
             properties=("Name", "PercentTotalRunTime", "Timestamp_Sys100NS"),
             counters=True),
    ClassUse(Class.NIC_PERF, CIMV2, properties=(
        "Name", "BytesReceivedPersec", "BytesSentPersec"), counters=True,
             spared="host network statistics read 0"),
    ClassUse(Class.DISK_PERF, CIMV2, properties=(
        "Name", "ReadBytesPersec", "WriteBytesPersec", "ReadOperationsPerSec",
        "WriteOperationsPerSec"), counters=True, spared="VM disk statistics read 0"),
    ClassUse(Class.VNIC_PERF, CIMV2, properties=(
        "Name", "BytesReceivedPersec", "BytesSentPersec"), counters=True,
             spared="VM network statistics read 0"),
)

#: The performance counter sets among ``USED``.
COUNTER_SETS = frozenset(use.name for use in USED if use.counters)
#: The classes the agent goes without, by name.
_SPARED = MappingProxyType({use.name: use for use in USED if use.spared})


async def read_spared(hv: HyperV, class_name: str, query: str, what: str
                      ) -> list[CimInstance]:
    """What ``query`` of ``class_name``, a class the agent goes without (``spared``),
    returns: [] on a host without the class, with one warning that ``what`` cannot be read
    and what that costs. Any other CimError is raised."""
    use = _SPARED[class_name]
    try:
        return await hv.cim.query(query, use.namespace)
    except CimInvalidClass as error:
        log.warning("%s cannot be read (%s): %s", what, error, use.spared)
        return []


@dataclass(frozen=True)
class Shortfall:
    """What one host lacks of ``USED``: ``missing`` fails the agent's operations there,
    ``spared`` are missing classes it goes without, each with what that costs,
    ``absent_optional`` only switches a refinement off."""

    classes_checked: int
    names_checked: int
    missing: tuple[str, ...]
    absent_optional: tuple[str, ...]
    spared: tuple[tuple[str, str], ...] = ()  # (class, what is lost)

    def counters_only(self) -> bool:
        """Whether all that is missing or spared belongs to performance counter sets."""
        lacking = [*(name.partition(".")[0] for name in self.missing),
                   *(name for name, _ in self.spared)]
        return bool(lacking) and all(name in COUNTER_SETS for name in lacking)


async def missing_on(hv: HyperV, used: tuple[ClassUse, ...] = USED) -> Shortfall:
    """Read the declaration of every class in ``used`` (one metadata read each) and list
    what the host does not declare: ``Class`` for a whole class, ``Class.Property``,
    ``Class.Method()`` and ``Class.Method(Parameter)``. Read-only, safe to repeat.
    CimError other than an unknown class (the host unreachable) is raised."""
    missing: list[str] = []
    optional: list[str] = []
    spared: list[tuple[str, str]] = []
    names = 0
    for use in used:
        names += 1 + len(use.properties) + sum(1 + len(p) for p in use.methods.values())
        names += sum(1 + len(p) for p in use.optional_methods.values())
        try:
            declared = await hv.cim.get_class(use.name, use.namespace)
        except CimInvalidClass:
            if use.spared:
                spared.append((use.name, use.spared))
            else:
                missing.append(use.name)
            continue
        missing += [f"{use.name}.{p}" for p in use.properties if declared.prop(p) is None]
        optional += [f"{use.name}.{p}" for p in use.optional if declared.prop(p) is None]
        missing += _missing_methods(use.name, use.methods, declared)
        optional += _missing_methods(use.name, use.optional_methods, declared)
    return Shortfall(len(used), names, tuple(missing), tuple(optional), tuple(spared))


def _missing_methods(class_name: str, methods: Mapping[str, tuple[str, ...]],
                     declared: CimClass) -> list[str]:
    missing: list[str] = []
    for method, parameters in methods.items():
        try:
            found = declared.method(method)
        except CimError:
            missing.append(f"{class_name}.{method}()")
            continue
        missing += [f"{class_name}.{method}({p})" for p in parameters
                    if found.parameter(p) is None]
    return missing


def services() -> tuple[ClassUse, ...]:
    """The service classes of ``USED``: each must have its one instance on a host."""
    return tuple(use for use in USED if use.service)
