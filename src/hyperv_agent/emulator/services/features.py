"""Switch-port features: Msvm_VirtualSystemManagementService.Add/Modify/RemoveFeatureSettings.

Features hang under a port (EPASD): their InstanceID starts with the port's. A port takes
at most one VLAN, one bandwidth and one security setting; extended-ACL weights are unique
per port and direction, and their text must parse as Hyper-V's does (portacl.py). Values are
checked with the class defaults filled in, as the stored instance will carry them. A port
of a VM whose state is changing (Starting, Stopping, Saving, ...) takes no feature added,
changed or removed until the change is done (``_check_port_vm``: 32775, the emulator's
choice, as for the VM's devices).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

from hyperv_agent.cim.api import CimValue, ObjectPath, OutValue
from hyperv_agent.emulator import codes, model, portacl
from hyperv_agent.emulator.calls import Call, Embedded, MethodError, handles
from hyperv_agent.emulator.codes import ReturnCode
from hyperv_agent.emulator.services import resources
from hyperv_agent.emulator.store import Record

VSMS = "Msvm_VirtualSystemManagementService"
SINGLE_PER_PORT = (
    "Msvm_EthernetSwitchPortVlanSettingData",
    "Msvm_EthernetSwitchPortBandwidthSettingData",
    "Msvm_EthernetSwitchPortSecuritySettingData",
)
FEATURE_IN_USE = ReturnCode.SYSTEM_IN_USE
VLAN_IDS = range(1, 4095)
PVLAN_MODES = (1, 2, 3)  # PvlanMode: isolated, community, promiscuous
PVLAN_PROMISCUOUS = 3


def _refuse(text: str, code: int = ReturnCode.INVALID_PARAMETER) -> MethodError:
    return MethodError(code, text)


@handles(VSMS, "AddFeatureSettings")
def add_feature_settings(call: Call) -> Mapping[str, OutValue]:
    port = call.require(call.path("AffectedConfiguration"), "port")
    if port.class_def.name != "Msvm_EthernetPortAllocationSettingData":
        raise MethodError(ReturnCode.INVALID_PARAMETER, f"{port.path} is not a switch port",
                          immediate=True)
    _check_port_vm(call, str(port["InstanceID"]), "no switch-port feature can be added to")
    existing = list(model.feature_records(call.txn, port))
    added: list[ObjectPath] = []
    for item in call.embedded_list("FeatureSettings"):
        _check_kind(item)
        given = {name: value for name, value in item.values.items() if value is not None}
        record = call.host.new_record(item.class_def.name, **given)
        _check_values(record.class_def.name, record.values)
        _check_unique(record, existing)
        record["InstanceID"] = f"{port['InstanceID']}\\{str(uuid.uuid4()).upper()}"
        call.txn.put(record)
        existing.append(record)
        added.append(record.path)
    return {"ResultingFeatureSettings": tuple(added)}


def _check_port_vm(call: Call, instance_id: str, what: str) -> None:
    """Refuse ``what`` a port (or a feature under it, by its InstanceID) of a VM whose
    state is changing. Microsoft's pages of Add/Modify/RemoveFeatureSettings list an
    invalid state (5) but do not say when, and no page says whether a port's features
    change while Hyper-V starts or stops its VM; the emulator answers 32775, as it does
    for the VM's devices and settings meanwhile (``resources.check_not_changing``). A
    port of no VM (a switch's own) is not concerned."""
    guid = model.guid_of_instance_id(instance_id)
    vm = None if guid is None else call.txn.get(model.vm_path(guid))
    if vm is not None:
        resources.check_not_changing(call, vm, what)


def _check_kind(item: Embedded) -> None:
    if not item.is_a(model.FEATURE_BASE):
        raise MethodError(ReturnCode.INVALID_PARAMETER,
                          f"{item.class_def.name} is not a port feature", immediate=True)


def _check_values(name: str, values: Mapping[str, CimValue]) -> None:
    """Refuse the property values (defaults included) that Hyper-V refuses."""
    if name == "Msvm_EthernetSwitchPortVlanSettingData":
        _check_vlan(values)
    elif name == "Msvm_EthernetSwitchPortBandwidthSettingData":
        _check_bandwidth(values)
    elif name == "Msvm_EthernetSwitchPortAclSettingData":
        _check_acl(values)
    elif name == portacl.ACL_CLASS:
        _check_extended_acl(values)


def _number(values: Mapping[str, CimValue], name: str) -> int:
    value = values.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _check_vlan(values: Mapping[str, CimValue]) -> None:
    mode = _number(values, "OperationMode")
    if mode == 1 and _number(values, "AccessVlanId") not in VLAN_IDS:
        raise _refuse(f"AccessVlanId {values.get('AccessVlanId')} is outside 1..4094")
    if mode == 2:
        ids = values.get("TrunkVlanIdArray")
        trunk = ids if isinstance(ids, tuple) else ()
        if _number(values, "NativeVlanId") not in VLAN_IDS or any(
                v not in VLAN_IDS for v in trunk):
            raise _refuse("trunk VLAN ids must be within 1..4094")
    if mode not in (0, 1, 2, 3):
        raise _refuse(f"OperationMode {mode} is not 1 (access), 2 (trunk) or 3 (private)")
    if mode == 3:
        _check_private_vlan(values)


def _check_private_vlan(values: Mapping[str, CimValue]) -> None:
    """A private VLAN port (OperationMode 3), as Set-VMNetworkAdapterVlan documents it:
    every PvlanMode takes a PrimaryVlanId; isolated (1) and community (2) take one
    SecondaryVlanId, promiscuous (3) a SecondaryVlanIdArray. The emulator's choice where
    Microsoft is silent: a secondary VLAN equal to the primary is refused (a secondary
    VLAN is another VLAN of the primary's domain), and a promiscuous port needs at least
    one secondary VLAN (the cmdlet's -SecondaryVlanIdList is mandatory with it)."""
    pvlan = _number(values, "PvlanMode")
    if pvlan not in PVLAN_MODES:
        raise _refuse(f"PvlanMode {values.get('PvlanMode')} is not 1 (isolated), 2 "
                      "(community) or 3 (promiscuous)")
    primary = _number(values, "PrimaryVlanId")
    if primary not in VLAN_IDS:
        raise _refuse(f"PrimaryVlanId {values.get('PrimaryVlanId')} is outside 1..4094")
    if pvlan == PVLAN_PROMISCUOUS:
        ids = values.get("SecondaryVlanIdArray")
        secondaries = tuple(ids) if isinstance(ids, tuple) else ()
        if not secondaries:
            raise _refuse("a promiscuous port needs the secondary VLANs it reaches "
                          "(SecondaryVlanIdArray)")
    else:
        secondaries = (_number(values, "SecondaryVlanId"),)
    for secondary in secondaries:
        if secondary not in VLAN_IDS or secondary == primary:
            raise _refuse(f"secondary VLAN {secondary} is outside 1..4094 or the primary "
                          f"VLAN {primary}")


def _check_bandwidth(values: Mapping[str, CimValue]) -> None:
    limit = _number(values, "Limit")
    reservation = _number(values, "Reservation")
    burst = _number(values, "BurstLimit")
    if limit and reservation > limit:
        raise _refuse("bandwidth Reservation exceeds Limit (0x80070057)")
    if burst and limit and burst < limit:
        raise _refuse("bandwidth BurstLimit is below Limit (0x80070057)")


def _check_acl(values: Mapping[str, CimValue]) -> None:
    if values.get("Direction") not in (1, 2):
        raise _refuse(f"ACL Direction {values.get('Direction')} is not 1 (in) or 2 (out)")
    if values.get("Action") not in (1, 2, 3):
        raise _refuse(f"ACL Action {values.get('Action')} is not 1, 2 or 3")


def _check_extended_acl(values: Mapping[str, CimValue]) -> None:
    try:
        portacl.parse_acl(values)
    except portacl.AclTextError as error:
        code = codes.ACL_STATEFUL_UNSUPPORTED if error.field == "Stateful" else codes.ACL_INVALID
        raise _refuse(f"extended ACL {error}", code) from None


def _check_unique(record: Record, existing: Iterable[Record]) -> None:
    name = record.class_def.name
    others = [r for r in existing if r.class_def.name == name]
    if name in SINGLE_PER_PORT and others:
        raise _refuse(f"the port already has a {name}", FEATURE_IN_USE)
    if name == portacl.ACL_CLASS:
        key = (record["Direction"], record["Weight"])
        if any((r["Direction"], r["Weight"]) == key for r in others):
            raise _refuse(f"an extended ACL with weight {key[1]} exists for direction {key[0]}",
                          codes.ACL_WEIGHT_IN_USE)


@handles(VSMS, "ModifyFeatureSettings")
def modify_feature_settings(call: Call) -> Mapping[str, OutValue]:
    changed: list[ObjectPath] = []
    for item in call.embedded_list("FeatureSettings"):
        _check_kind(item)
        path = ObjectPath.for_keys(item.class_def.name, InstanceID=item.text("InstanceID") or "")
        record = call.txn.edit(path)
        if record is None:
            raise MethodError(ReturnCode.INVALID_PARAMETER, f"no feature setting {path}",
                              immediate=True)
        _check_port_vm(call, str(record["InstanceID"]),
                       "no switch-port feature can be changed of")
        record.update({k: v for k, v in item.values.items() if k != "InstanceID"})
        _check_values(record.class_def.name, record.values)
        _check_siblings(call, record)
        changed.append(record.path)
    return {"ResultingFeatureSettings": tuple(changed)}


def _check_siblings(call: Call, record: Record) -> None:
    """A modified feature must still be unique on its port (ACL weights)."""
    port_id = str(record["InstanceID"]).rsplit("\\", 1)[0]
    port = call.txn.get(ObjectPath.for_keys("Msvm_EthernetPortAllocationSettingData",
                                            InstanceID=port_id))
    if port is not None and record.class_def.name == portacl.ACL_CLASS:
        siblings = [r for r in model.feature_records(call.txn, port) if r.path != record.path]
        _check_unique(record, siblings)


@handles(VSMS, "RemoveFeatureSettings")
def remove_feature_settings(call: Call) -> Mapping[str, OutValue]:
    for path in call.paths("FeatureSettings"):
        record = call.require(path, "feature setting")
        if model.FEATURE_BASE not in record.class_def.ancestors:
            raise MethodError(ReturnCode.INVALID_PARAMETER, f"{path} is not a port feature",
                              immediate=True)
        _check_port_vm(call, str(record["InstanceID"]),
                       "no switch-port feature can be removed from")
        call.txn.delete(record.path)
    return {}
