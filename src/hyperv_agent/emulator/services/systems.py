"""Msvm_VirtualSystemManagementService: DefineSystem, DestroySystem, ModifySystemSettings."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Mapping

from hyperv_agent.cim.api import V2_NAMESPACE, ObjectPath, OutValue
from hyperv_agent.emulator import bootsources, codes, model
from hyperv_agent.emulator.calls import Call, Embedded, MethodError, handles
from hyperv_agent.emulator.codes import EnabledState, ReturnCode
from hyperv_agent.emulator.host import cim_datetime
from hyperv_agent.emulator.indexes import IndexSpec
from hyperv_agent.emulator.schema import concrete_classes
from hyperv_agent.emulator.services import metrics, resources
from hyperv_agent.emulator.store import Record

VSMS = "Msvm_VirtualSystemManagementService"
ELEMENT_NAME_MAX_CHARS = 100
#: VSSD properties a caller may set at DefineSystem or change with ModifySystemSettings.
WRITABLE = (
    "ElementName", "Notes", "AutomaticStartupAction", "AutomaticShutdownAction",
    "AutomaticRecoveryAction", "ConfigurationDataRoot", "SnapshotDataRoot", "SuspendDataRoot",
    "SwapFileDataRoot", "LogDataRoot", "BootOrder", "BootSourceOrder", "SecureBootEnabled",
    "SecureBootTemplateId", "VirtualNumaEnabled", "BIOSNumLock", "UserSnapshotType",
)
#: The VM's SMBIOS identity, which its guest reads: BIOSGUID is the system UUID (SMBIOS
#: type 1; ``dmidecode -s system-uuid``, Win32_ComputerSystemProduct.UUID), the others
#: Win32_BIOS.SerialNumber, Win32_BaseBoard.SerialNumber, Win32_SystemEnclosure's
#: SerialNumber and SMBIOSAssetTag. Writable at DefineSystem; ModifySystemSettings
#: changes them only while the VM is off ("set when a virtual machine is turned off",
#: Microsoft's Hyper-V team; Virtual PC's same properties refuse a running or saved VM).
#: A value equal to the current one is no change, so the whole VSSD read back from a
#: running VM can be sent again.
SMBIOS = ("BIOSGUID", "BIOSSerialNumber", "BaseBoardSerialNumber", "ChassisSerialNumber",
          "ChassisAssetTag")
#: The longest serial number or asset tag. The v2 pages give no limit; Virtual PC's
#: properties of the same names refuse more than 32 characters or an empty string, and
#: Hyper-V's own values ("XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XX") have 32: the emulator refuses
#: what Virtual PC refused.
SMBIOS_TEXT_MAX_CHARS = 32
#: A BIOSGUID as given: the 8-4-4-4-12 hex digits, in braces or not. Hyper-V reports it
#: in braces, upper case, and that is how the emulator stores it; Microsoft documents
#: neither the forms it takes nor a refusal, so the emulator refuses anything else (a
#: GUID without its hyphens, an empty string) as not a GUID.
_HEX_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_BIOS_GUID = re.compile(rf"\{{({_HEX_GUID})\}}|({_HEX_GUID})", re.IGNORECASE)
_PROCESSOR_ID = "B637F346-6A0E-4DEC-AF52-BD70CB80A21D"
_MEMORY_ID = "4764334D-E001-4176-82EE-5594EC9B530E"
_IDE_ID = "83F8638B-8DCA-4152-9EDA-2CA8B33039B4"
_KVP_ID = "8B5F6B0E-5C4E-4F67-A4B1-EF5C4E5B2A1D"


@handles(VSMS, "DefineSystem")
def define_system(call: Call) -> Mapping[str, OutValue]:
    """A new VM (off) with its processor, memory, IDE controllers (generation 1) and KVP."""
    settings = call.embedded("SystemSettings")
    if not settings.is_a("Msvm_VirtualSystemSettingData"):
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"SystemSettings is a {settings.class_def.name}", immediate=True)
    guid = _new_guid(call, settings)
    vssd = _vssd(call, settings, guid)
    call.txn.put(vssd)
    call.txn.put(_computer_system(call, guid, str(vssd["ElementName"])))
    for record in _default_devices(call, guid, model.generation(vssd)):
        call.txn.put(record)
    resources.apply_definitions(call, guid, call.embedded_list("ResourceSettings"))
    return {"ResultingSystem": model.vm_path(guid)}


def _new_guid(call: Call, settings: Embedded) -> str:
    wanted = settings.text("VirtualSystemIdentifier")
    if not wanted:
        return str(uuid.uuid4()).upper()
    try:
        guid = str(uuid.UUID(wanted)).upper()
    except ValueError:
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"VirtualSystemIdentifier {wanted!r} is not a GUID") from None
    if call.txn.get(model.vm_path(guid)) is not None:
        raise MethodError(ReturnCode.INVALID_PARAMETER, f"a VM with GUID {guid} exists")
    return guid


def _vssd(call: Call, settings: Embedded, guid: str) -> Record:
    subtype = settings.text("VirtualSystemSubType") or codes.GENERATION_1
    if subtype not in (codes.GENERATION_1, codes.GENERATION_2):
        raise MethodError(ReturnCode.INVALID_PARAMETER, f"unknown VirtualSystemSubType {subtype}")
    generation_2 = subtype == codes.GENERATION_2
    record = call.host.new_record(
        "Msvm_VirtualSystemSettingData", InstanceID=f"Microsoft:{guid}",
        VirtualSystemIdentifier=guid, ConfigurationID=guid, VirtualSystemType=codes.REALIZED,
        VirtualSystemSubType=subtype, ElementName="New Virtual Machine", Version="9.0",
        CreationTime=cim_datetime(call.host.clock()), Caption="Virtual Machine Settings",
        AutomaticStartupAction=3, AutomaticShutdownAction=3, AutomaticRecoveryAction=3,
        BootOrder=None if generation_2 else (1, 2, 3, 0), SecureBootEnabled=generation_2,
        BootSourceOrder=() if generation_2 else None, VirtualNumaEnabled=True, IsSaved=False,
        SecureBootTemplateId=_default_template(call) if generation_2 else None,
        **_new_identity(),
    )
    _apply_writable(record, settings)
    _apply_identity(record, settings, off=True)
    _check_template(call, record)
    bootsources.check_order(call, record)
    return record


def _template_keys(record: Record) -> tuple[bool, ...]:
    return (True,) if record["VirtualSystemType"] == codes.SECURE_BOOT_TEMPLATE else ()


#: The secure boot template VSSDs, found without walking every VM's settings.
_TEMPLATES = IndexSpec("secure-boot-templates", _template_keys)


def _templates(call: Call) -> dict[uuid.UUID, Record]:
    """The host's secure boot template VSSDs by their SecureBootTemplateId."""
    found: dict[uuid.UUID, Record] = {}
    classes = concrete_classes("Msvm_VirtualSystemSettingData", V2_NAMESPACE)
    for record in call.txn.lookup(classes, _TEMPLATES, True):
        found[uuid.UUID(str(record["SecureBootTemplateId"]))] = record
    return found


def _default_template(call: Call) -> str | None:
    """A new generation 2 VM's template: MicrosoftWindows, when the host has templates."""
    for template in _templates(call).values():
        if template["ElementName"] == codes.DEFAULT_SECURE_BOOT_TEMPLATE:
            return str(template["SecureBootTemplateId"])
    return None


def _check_template(call: Call, record: Record) -> None:
    """Refuse a SecureBootTemplateId that names none of the host's templates; store the
    template's own spelling of the GUID."""
    wanted = record["SecureBootTemplateId"]
    if wanted is None:
        return
    try:
        template = _templates(call).get(uuid.UUID(str(wanted)))
    except ValueError:
        template = None
    if template is None:
        raise MethodError(codes.UNKNOWN_SECURE_BOOT_TEMPLATE,
                          f"SecureBootTemplateId {str(wanted)[:40]!r} names no secure boot "
                          "template of this host")
    record["SecureBootTemplateId"] = template["SecureBootTemplateId"]


def _apply_writable(record: Record, settings: Embedded) -> None:
    for name in WRITABLE:
        if settings.values.get(name) is not None:
            record[name] = settings.values[name]
    element_name = record["ElementName"]
    if not isinstance(element_name, str) or not element_name.strip():
        raise MethodError(ReturnCode.INVALID_PARAMETER, "ElementName must not be empty")
    if len(element_name) > ELEMENT_NAME_MAX_CHARS:
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"ElementName exceeds {ELEMENT_NAME_MAX_CHARS} characters")
    if record["SecureBootEnabled"] and record["VirtualSystemSubType"] != codes.GENERATION_2:
        raise MethodError(ReturnCode.NOT_SUPPORTED,
                          "secure boot needs a generation 2 virtual machine")


def _new_identity() -> dict[str, str]:
    """A new VM's SMBIOS identity, as Hyper-V makes it: a random BIOSGUID, a random
    numeric BIOSSerialNumber that the base board and chassis serial numbers repeat, and
    another for the asset tag (Microsoft's Hyper-V team: "XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XX",
    randomly generated)."""
    serial = _random_serial()
    return {"BIOSGUID": f"{{{str(uuid.uuid4()).upper()}}}", "BIOSSerialNumber": serial,
            "BaseBoardSerialNumber": serial, "ChassisSerialNumber": serial,
            "ChassisAssetTag": _random_serial()}


def _random_serial() -> str:
    digits = "".join(str(secrets.randbelow(10)) for _ in range(26))
    return "-".join(digits[start:start + 4] for start in range(0, 26, 4))


def _apply_identity(record: Record, settings: Embedded, *, off: bool) -> None:
    """The SMBIOS values ``settings`` gives (``SMBIOS``), each checked; a change while
    the VM is not ``off``: refused, nothing changed."""
    for name in SMBIOS:
        given = settings.values.get(name)
        if given is None:
            continue
        value = _bios_guid(given) if name == "BIOSGUID" else _smbios_text(name, given)
        if value == record[name]:
            continue
        if not off:
            raise MethodError(codes.CHANGE_WHILE_RUNNING,
                              f"{name} changes only while the virtual machine is off")
        record[name] = value


def _bios_guid(given: object) -> str:
    match = _BIOS_GUID.fullmatch(given) if isinstance(given, str) else None
    if match is None:
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"BIOSGUID {str(given)[:50]!r} is not a GUID", immediate=True)
    return f"{{{(match.group(1) or match.group(2)).upper()}}}"


def _smbios_text(name: str, given: object) -> str:
    if not isinstance(given, str) or not 0 < len(given) <= SMBIOS_TEXT_MAX_CHARS:
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"{name} must have 1..{SMBIOS_TEXT_MAX_CHARS} characters",
                          immediate=True)
    return given


def _computer_system(call: Call, guid: str, element_name: str) -> Record:
    return call.host.new_record(
        "Msvm_ComputerSystem", CreationClassName="Msvm_ComputerSystem", Name=guid,
        ElementName=element_name, Caption=codes.CAPTION_VM,
        Description="Microsoft Virtual Machine", EnabledState=EnabledState.DISABLED,
        RequestedState=codes.RequestedState.NOT_APPLICABLE, HealthState=codes.HealthState.OK,
        OperationalStatus=(2,), EnabledDefault=EnabledState.ENABLED, NumberOfNumaNodes=1,
        InstallDate=cim_datetime(call.host.clock()), OnTimeInMilliseconds=0,
        TimeOfLastStateChange=cim_datetime(call.host.clock()),
    )


def _default_devices(call: Call, guid: str, generation: int) -> list[Record]:
    new = call.host.new_record
    devices = [
        new("Msvm_ProcessorSettingData", InstanceID=f"Microsoft:{guid}\\{_PROCESSOR_ID}\\0",
            ResourceType=codes.ResourceType.PROCESSOR, ResourceSubType=codes.SUBTYPE_PROCESSOR,
            ElementName="Processor", VirtualQuantity=1, Reservation=0, Limit=100000,
            Weight=100, AllocationUnits="percent / 1000", LimitProcessorFeatures=False),
        new("Msvm_MemorySettingData", InstanceID=f"Microsoft:{guid}\\{_MEMORY_ID}",
            ResourceType=codes.ResourceType.MEMORY, ResourceSubType=codes.SUBTYPE_MEMORY,
            ElementName="Memory", VirtualQuantity=1024, Reservation=1024, Limit=1048576,
            AllocationUnits="byte * 2^20", DynamicMemoryEnabled=False, Weight=5000),
        new("Msvm_KvpExchangeComponentSettingData", InstanceID=f"Microsoft:{guid}\\{_KVP_ID}",
            ResourceType=codes.ResourceType.OTHER, OtherResourceType=codes.KVP_COMPONENT_TYPE,
            ElementName="Key-Value Pair Exchange", EnabledState=EnabledState.ENABLED,
            HostExchangeItems=(), HostOnlyItems=(), DisableHostKVPItems=False),
    ]
    if generation == 1:
        devices += [
            new("Msvm_ResourceAllocationSettingData",
                InstanceID=f"Microsoft:{guid}\\{_IDE_ID}\\{index}",
                ResourceType=codes.ResourceType.IDE_CONTROLLER, ResourceSubType=codes.SUBTYPE_IDE,
                ElementName=f"IDE Controller {index}", Address=str(index))
            for index in (0, 1)
        ]
    return devices


@handles(VSMS, "DestroySystem")
def destroy_system(call: Call) -> Mapping[str, OutValue]:
    """Removes the VM's definition; its disk files stay where they are."""
    vm = call.require(call.path("AffectedSystem"), "virtual machine")
    if not (model.is_vm(vm) or vm.class_def.name == "Msvm_PlannedComputerSystem"):
        raise MethodError(ReturnCode.INVALID_PARAMETER, f"{vm.path} is not a virtual machine",
                          immediate=True)
    moving = model.being_migrated(call.host, call.txn, vm) if model.is_vm(vm) else None
    if moving is not None:
        raise MethodError(codes.CHANGE_WHILE_MIGRATING, moving)
    if model.is_running(vm):
        raise MethodError(codes.DESTROY_WHILE_RUNNING, "the virtual machine is running")
    if model.is_vm(vm) and model.transition(call.host, vm) is not None:
        raise MethodError(codes.DESTROY_WHILE_RUNNING, "the virtual machine is changing state")
    guid = str(vm["Name"])
    bootsources.remove_all(call, guid)
    records = [*model.device_records(call.txn, guid), *model.runtime_records(call.txn, guid)]
    for feature in model.features_under(call.txn, guid, records):
        call.txn.delete(feature.path)
    for record in records:
        call.txn.delete(record.path)
    for value in metrics.owned_values(call.txn, guid):  # its disks' metering goes with it
        call.txn.delete(value.path)
    call.txn.delete(model.vssd_path(guid))
    call.txn.delete(vm.path)
    return {}


@handles(VSMS, "ModifySystemSettings")
def modify_system_settings(call: Call) -> Mapping[str, OutValue]:
    settings = call.embedded("SystemSettings")
    instance_id = settings.text("InstanceID")
    path = ObjectPath.for_keys("Msvm_VirtualSystemSettingData", InstanceID=instance_id or "")
    vssd = call.txn.edit(path) if instance_id else None
    if vssd is None:
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"no virtual system settings {instance_id!r}", immediate=True)
    if vssd["VirtualSystemType"] == codes.SECURE_BOOT_TEMPLATE:
        raise MethodError(codes.TEMPLATE_READ_ONLY,
                          f"{vssd['ElementName']} is a secure boot template; it cannot change")
    subtype = settings.text("VirtualSystemSubType")
    if subtype is not None and subtype != vssd["VirtualSystemSubType"]:
        raise MethodError(ReturnCode.INVALID_PARAMETER, "the generation of a VM cannot change")
    guid = str(vssd["VirtualSystemIdentifier"])
    vm = call.txn.edit(model.vm_path(guid))
    if vm is not None:
        resources.check_not_changing(call, vm, "no system setting can be changed of")
    _apply_writable(vssd, settings)
    _apply_identity(vssd, settings, off=vm is None or vm["EnabledState"] == EnabledState.DISABLED)
    _check_template(call, vssd)
    bootsources.check_order(call, vssd)
    if vm is not None:
        vm["ElementName"] = vssd["ElementName"]
    return {}
