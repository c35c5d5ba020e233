"""Association classes of the emulated host, computed from identities rather than stored.

Each rule says, for a source record, which records it is linked to, under which
association class and with which roles (source role, other role).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from hyperv_agent.cim.api import V2_NAMESPACE, CimValue, ObjectPath
from hyperv_agent.emulator import bootsources, model
from hyperv_agent.emulator.host import (
    MIGRATION_NETWORK_SETTINGS,
    MIGRATION_SERVICE_SETTINGS,
    EmulatedHost,
)
from hyperv_agent.emulator.indexes import IndexSpec
from hyperv_agent.emulator.jobs import is_job
from hyperv_agent.emulator.schema import concrete_classes
from hyperv_agent.emulator.services import metrics
from hyperv_agent.emulator.store import Record, Transaction


def _affected_keys(job: Record) -> tuple[str, ...]:
    affected = job.meta.get("affected")
    return (ObjectPath.parse(affected).normalized,) if affected else ()


#: Jobs by the (normalised) path of what they affect.
AFFECTED = IndexSpec("affected", _affected_keys)


@dataclass(frozen=True)
class Link:
    association: str
    other: Record
    role: str  # the source's role
    result_role: str  # the other end's role
    values: Mapping[str, CimValue] = field(default_factory=dict)  # its other properties


def links(host: EmulatedHost, txn: Transaction, source: Record) -> Iterator[Link]:
    yield from _settings_define_state(host, txn, source)
    yield from _settings_components(host, txn, source)
    yield from _system_devices(host, txn, source)
    yield from _port_features(host, txn, source)
    yield from _guest_network(host, txn, source)
    yield from _affected_jobs(host, txn, source)
    yield from _metric_values(host, txn, source)
    yield from _metric_definitions(host, txn, source)
    yield from _boot_sources(host, txn, source)
    yield from _installed_os(host, txn, source)
    yield from _migration_networks(host, txn, source)


def _settings_define_state(host: EmulatedHost, txn: Transaction, source: Record) -> Iterator[Link]:
    name = source.class_def.name
    guid = model.guid_of(source)
    if guid is None:
        return
    if model.is_vm(source):
        other = txn.get(model.vssd_path(guid))
        if other is not None:
            yield Link("Msvm_SettingsDefineState", other, "ManagedElement", "SettingData")
    elif name == "Msvm_VirtualSystemSettingData":
        other = txn.get(model.vm_path(guid))
        if other is not None:
            yield Link("Msvm_SettingsDefineState", other, "SettingData", "ManagedElement")


def _settings_components(host: EmulatedHost, txn: Transaction, source: Record) -> Iterator[Link]:
    guid = model.guid_of(source)
    if guid is None:
        return
    association = "Msvm_VirtualSystemSettingDataComponent"
    if source.class_def.name == "Msvm_VirtualSystemSettingData":
        for device in model.device_records(txn, guid):
            yield Link(association, device, "GroupComponent", "PartComponent")
    elif source.class_def.name == "Msvm_VirtualEthernetSwitchSettingData":
        ports = concrete_classes("Msvm_EthernetPortAllocationSettingData", V2_NAMESPACE)
        for port in model.owned_records(txn, ports, guid):
            yield Link(association, port, "GroupComponent", "PartComponent")
    elif model.RASD_BASE in source.class_def.ancestors:
        vssd = txn.get(model.vssd_path(guid)) or txn.get(ObjectPath.for_keys(
            "Msvm_VirtualEthernetSwitchSettingData", InstanceID=f"Microsoft:{guid}"))
        if vssd is not None:
            yield Link(association, vssd, "PartComponent", "GroupComponent")


def _system_devices(host: EmulatedHost, txn: Transaction, source: Record) -> Iterator[Link]:
    if model.is_vm(source):
        for device in model.runtime_records(txn, str(source["Name"])):
            yield Link("Msvm_SystemDevice", device, "GroupComponent", "PartComponent")
    elif source.class_def.name == "Msvm_ComputerSystem":
        for port in host.records("Msvm_ExternalEthernetPort", txn):
            yield Link("Msvm_SystemDevice", port, "GroupComponent", "PartComponent")
    elif "CIM_LogicalDevice" in source.class_def.ancestors:
        owner = _owner_of_device(host, txn, source)
        if owner is not None:
            yield Link("Msvm_SystemDevice", owner, "PartComponent", "GroupComponent")


def _owner_of_device(host: EmulatedHost, txn: Transaction, device: Record) -> Record | None:
    system = str(device["SystemName"])
    if system.lower() == host.name.lower():
        return txn.get(host.host_path())
    return txn.get(model.vm_path(system))


def _port_features(host: EmulatedHost, txn: Transaction, source: Record) -> Iterator[Link]:
    association = "Msvm_EthernetPortSettingDataComponent"
    if source.class_def.name == "Msvm_EthernetPortAllocationSettingData":
        for feature in model.feature_records(txn, source):
            yield Link(association, feature, "GroupComponent", "PartComponent")
    elif model.FEATURE_BASE in source.class_def.ancestors:
        instance_id = str(source["InstanceID"])
        guid = model.guid_of_instance_id(instance_id)
        if guid is None:
            return
        ports = concrete_classes("Msvm_EthernetPortAllocationSettingData", V2_NAMESPACE)
        for port in model.owned_records(txn, ports, guid):
            if instance_id.lower().startswith(f"{str(port['InstanceID']).lower()}\\"):
                yield Link(association, port, "PartComponent", "GroupComponent")


def _guest_network(host: EmulatedHost, txn: Transaction, source: Record) -> Iterator[Link]:
    """Msvm_SettingDataComponent: a synthetic NIC (GroupComponent) and what its guest
    reports of it (PartComponent), while the VM runs."""
    association = "Msvm_SettingDataComponent"
    if source.class_def.name == "Msvm_SyntheticEthernetPortSettingData":
        other = txn.get(model.guest_network_path(source))
        if other is not None:
            yield Link(association, other, "GroupComponent", "PartComponent")
    elif source.class_def.name == model.GUEST_NETWORK:
        nic = txn.get(model.nic_of_guest_network(source))
        if nic is not None:
            yield Link(association, nic, "PartComponent", "GroupComponent")


def _affected_jobs(host: EmulatedHost, txn: Transaction, source: Record) -> Iterator[Link]:
    association = "Msvm_AffectedJobElement"
    if is_job(source):
        affected = source.meta.get("affected")
        if affected:
            other = txn.get(ObjectPath.parse(affected))
            if other is not None:
                yield Link(association, other, "AffectingElement", "AffectedElement")
    elif model.is_vm(source):
        jobs = concrete_classes("CIM_ConcreteJob", V2_NAMESPACE)
        for job in txn.lookup(jobs, AFFECTED, source.path.normalized):
            yield Link(association, job, "AffectedElement", "AffectingElement")


def _metric_values(host: EmulatedHost, txn: Transaction, source: Record) -> Iterator[Link]:
    """Msvm_MetricForME: a virtual hard disk medium and the metric values kept for it."""
    association = "Msvm_MetricForME"
    if metrics.is_disk_medium(source):
        for value in metrics.values_of(host, txn, source):
            yield Link(association, value, "Antecedent", "Dependent")
    elif source.class_def.name == metrics.VALUE:
        element = metrics.element_of(txn, source)
        if element is not None:
            yield Link(association, element, "Dependent", "Antecedent")


def _metric_definitions(host: EmulatedHost, txn: Transaction, source: Record) -> Iterator[Link]:
    """Msvm_MetricDefForME: the disk metric definitions and what they apply to (virtual
    hard disk media and VMs)."""
    association = "Msvm_MetricDefForME"
    if metrics.is_disk_medium(source) or model.is_vm(source):
        for definition in metrics.definitions_of(host, txn):
            yield Link(association, definition, "Antecedent", "Dependent")
    elif source.class_def.name == metrics.DEFINITION:
        elements = [*metrics.disk_media(host, txn),
                    *(r for r in host.records("Msvm_ComputerSystem", txn) if model.is_vm(r))]
        for element in elements:
            yield Link(association, element, "Dependent", "Antecedent")


def _boot_sources(host: EmulatedHost, txn: Transaction, source: Record) -> Iterator[Link]:
    """Msvm_LogicalIdentity (drive or NIC setting <-> its boot source) and
    Msvm_BootSourceComponent (VSSD -> boot sources) of generation 2 VMs."""
    identity, component = "Msvm_LogicalIdentity", "Msvm_BootSourceComponent"
    name = source.class_def.name
    if name == bootsources.BSSD:
        device = bootsources.device_of(txn, source)
        if device is not None:
            yield Link(identity, device, "SameElement", "SystemElement")
        guid = model.guid_of(source)
        vssd = txn.get(model.vssd_path(guid)) if guid else None
        if vssd is not None:
            yield Link(component, vssd, "PartComponent", "GroupComponent")
    elif name == "Msvm_VirtualSystemSettingData":
        guid = model.guid_of(source)
        for entry in bootsources.sources_of(txn, guid) if guid else ():
            yield Link(component, entry, "GroupComponent", "PartComponent")
    elif bootsources.boot_type(source) is not None:
        boot = bootsources.source_of(txn, source)
        if boot is not None:
            yield Link(identity, boot, "SystemElement", "SameElement")


def _installed_os(host: EmulatedHost, txn: Transaction, source: Record) -> Iterator[Link]:
    """Win32_SystemOperatingSystem (root\\cimv2): the computer and its one, primary OS."""
    association, primary = "Win32_SystemOperatingSystem", {"PrimaryOS": True}
    if source.class_def.name == "Win32_ComputerSystem":
        for system in host.records("Win32_OperatingSystem", txn):
            yield Link(association, system, "GroupComponent", "PartComponent", primary)
    elif source.class_def.name == "Win32_OperatingSystem":
        for computer in host.records("Win32_ComputerSystem", txn):
            yield Link(association, computer, "PartComponent", "GroupComponent", primary)


def _migration_networks(host: EmulatedHost, txn: Transaction, source: Record
                        ) -> Iterator[Link]:
    """The migration service's settings and the networks it listens on."""
    association = "Msvm_VirtualSystemMigrationServiceSettingDataComponent"
    if source.class_def.name == MIGRATION_SERVICE_SETTINGS:
        for network in host.records(MIGRATION_NETWORK_SETTINGS, txn):
            yield Link(association, network, "GroupComponent", "PartComponent")
    elif source.class_def.name == MIGRATION_NETWORK_SETTINGS:
        for settings in host.records(MIGRATION_SERVICE_SETTINGS, txn):
            yield Link(association, settings, "PartComponent", "GroupComponent")
