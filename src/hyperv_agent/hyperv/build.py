"""Building a VM: define it, add controllers, disks, DVDs and NICs (KVP items: ``kvp``;
secure boot templates and boot order: ``firmware``).

These are the pieces a StartCommand handler composes. Every method call goes through
``jobs.call`` on the Virtual System Management Service (VSMS, ``vms.management_service``).

New devices are copies of Hyper-V's template (``…\\Default``) instances. All RASD-derived
templates are read with ONE query the first time a session needs one; the VSSD, the port
features (VLAN, bandwidth) and the KVP data item are spawned once; switch paths are looked
up by name once. All of it is kept by the host's session (``session.HyperV``), so the
figures below hold once a session is warm (job polls not counted, W = job waits). Warming
costs, once per session: 1 query for the VSMS, 1 query for all templates, 1 spawn per spawned
class (VSSD, VLAN, bandwidth, KVP item), 1 query per switch name, 2 queries for the
host's clock speed (``host_cpu_mhz``).

===========================  ==============================================================
``define_vm``                3 calls + 2 W (DefineSystem, 1 query, ModifyResourceSettings)
``add_scsi_controller``      1 call + 1 W
``attach_disk``              2 calls + 2 W (drive, then medium)
``attach_empty_dvd``         1 call + 1 W
``controllers``              1 query
``add_nic``                  3 calls + 3 W with a VLAN or a bandwidth limit; 2 + 2 W without
``host_cpu_mhz``             2 queries the first time for a session, then none
===========================  ==============================================================

Requests are checked before anything is created (``InvalidRequest``). A failure of a later
step undoes the earlier ones of the same function and raises a ``HyperVError`` naming the
step; the original error is its ``__cause__``. Cancellation is not undone. Nothing here
deletes a file.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, MethodResult, ObjectPath
from hyperv_agent.errors import HyperVError, InvalidRequest
from hyperv_agent.hyperv import host, vms
from hyperv_agent.hyperv.schema import (
    BITS_PER_MEGABIT,
    BOOT_CD_FIRST,
    BOOT_DISK_FIRST,
    GENERATION_SUBTYPES,
    MAC_HEX_DIGITS,
    MEMORY_MIN_MB,
    NAMESPACE,
    PROCESSOR_LIMIT_FULL,
    PROCESSOR_WEIGHT_DEFAULT,
    PROCESSOR_WEIGHT_MAX,
    PROCESSOR_WEIGHT_MIN,
    SCSI_SLOTS,
    TEMPLATE_PREFIX,
    TEMPLATE_SUFFIX,
    VLAN_ID_MAX,
    VLAN_ID_MIN,
    VM_NAME_MAX_CHARS,
    Class,
    EnabledState,
    ResourceType,
    Subtype,
    VlanMode,
)
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import PowerState, VmRef

_T = TypeVar("_T")
_Undo = Callable[[], Awaitable[object]]

# --- requests and results -----------------------------------------------------------------


@dataclass(frozen=True)
class VmSpec:
    """What a new VM looks like; checked by ``validate`` before anything is created."""

    name: str  # ElementName, 1..100 characters
    notes: tuple[str, ...]
    generation: int  # 1 or 2
    cpus: int
    memory_mb: int  # static memory (startup = minimum = maximum)
    cpu_limit_millipercent: int = PROCESSOR_LIMIT_FULL  # 0..100000 (100 %) of each vCPU
    cpu_reservation_millipercent: int = 0  # 0..cpu_limit_millipercent of each vCPU
    cpu_weight: int = PROCESSOR_WEIGHT_DEFAULT  # 0..10000
    secure_boot: bool = False  # generation 2 only
    secure_boot_template_id: str | None = None  # a GUID; needs secure_boot
    boot_from_cd: bool = False  # generation 1: the CD before the hard disk


@dataclass(frozen=True)
class DiskRef:
    """A drive and the medium (VHD, VHDX or ISO) in it."""

    drive: ObjectPath
    medium: ObjectPath


@dataclass(frozen=True)
class NicRef:
    """A synthetic NIC, its switch port and the port features added with it."""

    nic: ObjectPath
    port: ObjectPath
    mac: str  # 12 upper-case hex digits
    features: tuple[ObjectPath, ...]


@dataclass(frozen=True)
class Controllers:
    """A VM's storage controllers: IDE by Address ("0", "1"), SCSI in WMI's order."""

    ide: tuple[ObjectPath, ...]
    scsi: tuple[ObjectPath, ...]


# --- what the session keeps ---------------------------------------------------------------


@dataclass
class _Kept:
    templates: dict[tuple[str, str], CimInstance] | None = None  # (class, subtype) lower-case
    spawned: dict[str, CimInstance] = field(default_factory=dict)  # by class name
    switches: dict[str, ObjectPath] = field(default_factory=dict)  # by ElementName
    cpu_mhz: int | None = None  # the host's clock speed per core


def _cache(hv: HyperV) -> _Kept:
    return hv.kept(_Kept)


async def default_setting(hv: HyperV, class_name: str, subtype: str) -> CimInstance:
    """The ``…\\Default`` instance of ``class_name`` and ``subtype``: 1 query, then cached."""
    cache = _cache(hv)
    if cache.templates is None:
        pattern = wql.like_literal(TEMPLATE_PREFIX) + "%" + wql.like_literal(TEMPLATE_SUFFIX)
        found = await hv.cim.query(wql.select(Class.RASD_BASE, wql.like("InstanceID", pattern)),
                                NAMESPACE)
        cache.templates = {(t.class_name.lower(), (t.string("ResourceSubType") or "").lower()): t
                           for t in reversed(found)}  # the first of duplicates wins
    template = cache.templates.get((class_name.lower(), subtype.lower()))
    if template is None:
        raise HyperVError(f"the host has no {class_name} template for {subtype}")
    return template


async def spawned(hv: HyperV, class_name: str) -> CimInstance:
    """A new instance of ``class_name`` with its defaults: 1 spawn, then cached."""
    cached = _cache(hv).spawned
    if class_name not in cached:
        cached[class_name] = await hv.cim.spawn(class_name, NAMESPACE)
    return cached[class_name]


async def switch_path(hv: HyperV, name: str) -> ObjectPath:
    """The path of the vSwitch called ``name``: 1 query, then cached; InvalidRequest if none."""
    switches = _cache(hv).switches
    if name not in switches:
        query = wql.select(Class.SWITCH, wql.eq("ElementName", name),
                           ("CreationClassName", "Name", "ElementName"))
        found = [s.path for s in await hv.cim.query(query, NAMESPACE) if s.path is not None]
        if not found:
            raise InvalidRequest(f"the host has no virtual switch named {name!r}")
        switches[name] = found[0]
    return switches[name]


def normalize_mac(mac: str) -> str:
    """``mac`` as 12 upper-case hex digits (':' and '-' dropped); InvalidRequest if not."""
    digits = mac.replace(":", "").replace("-", "").upper()
    if len(digits) != MAC_HEX_DIGITS or any(c not in "0123456789ABCDEF" for c in digits):
        raise InvalidRequest(f"MAC address {mac[:40]!r} is not {MAC_HEX_DIGITS} hex digits")
    return digits


# --- shared steps -------------------------------------------------------------------------


async def _add(hv: HyperV, vm: VmRef, setting: CimInstance) -> ObjectPath:
    """AddResourceSettings of one setting; its new path (1 call + 1 W)."""
    result = await vms.call_service(hv, "AddResourceSettings",
                         {"AffectedConfiguration": vm.path, "ResourceSettings": [setting]})
    return _first(result, "ResultingResourceSettings")


async def _remove(hv: HyperV, paths: Sequence[ObjectPath]) -> None:
    await vms.call_service(hv, "RemoveResourceSettings", {"ResourceSettings": list(paths)})


def _first(result: MethodResult, name: str) -> ObjectPath:
    paths = result.paths(name)
    if not paths:
        raise HyperVError(f"the call returned no {name}")
    return paths[0]


async def step(name: str, action: Awaitable[_T], undo: _Undo | None = None) -> _T:
    """Await ``action``; on failure run ``undo`` and raise a HyperVError naming the step."""
    try:
        return await action
    except InvalidRequest:
        raise
    except Exception as error:
        raise HyperVError(f"{name} failed: {error}{await _undone(undo)}") from error


async def _undone(undo: _Undo | None) -> str:
    """Run ``undo``; a note for the error message when it fails too."""
    if undo is None:
        return ""
    try:
        await undo()
    except Exception as error:
        return f" (undoing the earlier steps failed too, something may be left: {error})"
    return ""


def _device_prefix(guid: str) -> wql.Condition:
    return wql.starts_with("InstanceID", f"Microsoft:{guid}\\")


# --- the VM -------------------------------------------------------------------------------


def validate(spec: VmSpec) -> None:
    """Raise InvalidRequest naming the first invalid field of ``spec``; no round trip."""
    problems = [text for bad, text in (
        (not spec.name.strip() or len(spec.name) > VM_NAME_MAX_CHARS,
         f"name must have 1..{VM_NAME_MAX_CHARS} characters and not be blank"),
        (spec.generation not in GENERATION_SUBTYPES, f"generation {spec.generation} is not 1 or 2"),
        (spec.cpus < 1, f"cpus must be at least 1, not {spec.cpus}"),
        (spec.memory_mb < MEMORY_MIN_MB, f"memory_mb must be at least {MEMORY_MIN_MB}, "
                                         f"not {spec.memory_mb}"),
        (not 0 <= spec.cpu_limit_millipercent <= PROCESSOR_LIMIT_FULL,
         f"cpu_limit_millipercent {spec.cpu_limit_millipercent} is outside "
         f"0..{PROCESSOR_LIMIT_FULL}"),
        (not 0 <= spec.cpu_reservation_millipercent <= spec.cpu_limit_millipercent,
         f"cpu_reservation_millipercent {spec.cpu_reservation_millipercent} is outside "
         f"0..cpu_limit_millipercent"),
        (not 0 <= spec.cpu_weight <= PROCESSOR_WEIGHT_MAX,
         f"cpu_weight {spec.cpu_weight} is outside 0..{PROCESSOR_WEIGHT_MAX}"),
        (spec.secure_boot and spec.generation != 2, "secure boot needs generation 2"),
        (spec.secure_boot_template_id is not None and not spec.secure_boot,
         "secure_boot_template_id needs secure_boot"),
        (not is_guid(spec.secure_boot_template_id), "secure_boot_template_id is not a GUID"),
    ) if bad]
    if problems:
        raise InvalidRequest(f"invalid VM {spec.name[:VM_NAME_MAX_CHARS]!r}: {problems[0]}")


def is_guid(text: str | None) -> bool:
    try:
        return text is None or bool(uuid.UUID(text))
    except ValueError:
        return False


async def define_vm(hv: HyperV, spec: VmSpec) -> VmRef:
    """Create a VM (off) with the spec's name, notes, generation, CPUs and static memory.

    The spec is checked first (InvalidRequest, nothing created). Not idempotent: Hyper-V
    allows duplicate names, so a repeat creates a second VM; look the name up first
    (``vms.find_vm``). Afterwards the VM exists, is off, and has the default devices of
    its generation (two IDE controllers on generation 1) and no disk or NIC. If setting
    processors and memory fails, the new VM is destroyed and the error names the step.
    3 calls + 2 W when warm.
    """
    validate(spec)
    settings = (await spawned(hv, Class.VSSD)).updated(_system_settings(spec))
    result = await step("defining the VM", vms.call_service(
        hv, "DefineSystem", {"SystemSettings": settings, "ResourceSettings": []}))
    guid = _vm_guid(result)
    await step("setting processors and memory", _set_processors_and_memory(hv, guid, spec),
                lambda: vms.destroy(hv, guid))
    vms.remember(hv, spec.name, guid)
    return VmRef(guid, spec.name, PowerState.STOPPED)


def _system_settings(spec: VmSpec) -> dict[str, object]:
    values: dict[str, object] = {
        "ElementName": spec.name, "Notes": list(spec.notes),
        "VirtualSystemSubType": GENERATION_SUBTYPES[spec.generation],
    }
    if spec.generation == 2:
        values["SecureBootEnabled"] = spec.secure_boot
    else:
        order = BOOT_CD_FIRST if spec.boot_from_cd else BOOT_DISK_FIRST
        values["BootOrder"] = [int(device) for device in order]
    if spec.secure_boot_template_id is not None:
        values["SecureBootTemplateId"] = str(uuid.UUID(spec.secure_boot_template_id))
    return values


def _vm_guid(result: MethodResult) -> str:
    path = result.path("ResultingSystem")
    if path is None:
        raise HyperVError("DefineSystem returned no ResultingSystem")
    return path.key("Name")


async def _set_processors_and_memory(hv: HyperV, guid: str, spec: VmSpec) -> None:
    kinds = wql.any_of("ResourceType", [int(ResourceType.PROCESSOR), int(ResourceType.MEMORY)])
    found = await hv.cim.query(wql.select(Class.RASD_BASE, _device_prefix(guid) & kinds), NAMESPACE)
    processor = _one(found, Class.PROCESSOR).updated(
        VirtualQuantity=spec.cpus, Weight=spec.cpu_weight, Limit=spec.cpu_limit_millipercent,
        Reservation=spec.cpu_reservation_millipercent)
    memory = _one(found, Class.MEMORY).updated(
        DynamicMemoryEnabled=False, VirtualQuantity=spec.memory_mb,
        Reservation=spec.memory_mb, Limit=spec.memory_mb)
    await vms.call_service(hv, "ModifyResourceSettings", {"ResourceSettings": [processor, memory]})


def _one(found: Sequence[CimInstance], class_name: str) -> CimInstance:
    match = next((item for item in found if item.is_a(class_name)), None)
    if match is None:
        raise HyperVError(f"the VM has no {class_name}")
    return match


# --- processor shares ---------------------------------------------------------------------


async def host_cpu_mhz(hv: HyperV) -> int:
    """The host's clock speed per core in MHz (0 when WMI does not say).

    Read-only: 2 queries the first time for a session, then kept (a host's clock
    speed does not change while it runs).
    """
    cache = _cache(hv)
    if cache.cpu_mhz is None:
        cache.cpu_mhz = (await host.host_facts(hv)).cpu_mhz
    return cache.cpu_mhz


def core_share(mhz: int, host_mhz: int) -> int:
    """``mhz`` of one host core as a processor Limit or Reservation (percent / 1000),
    at most 100000 (a whole core); a whole core when the host speed is unknown."""
    if host_mhz <= 0:
        return PROCESSOR_LIMIT_FULL
    return max(0, min(PROCESSOR_LIMIT_FULL, mhz * PROCESSOR_LIMIT_FULL // host_mhz))


def speed_weight(mhz: int | None, host_mhz: int) -> int:
    """A processor Weight proportional to ``mhz``: Hyper-V's default (100) for a whole
    host core, bounded to 1..10000; the default when either speed is unknown."""
    if not mhz or mhz <= 0 or host_mhz <= 0:
        return PROCESSOR_WEIGHT_DEFAULT
    weight = round(mhz * PROCESSOR_WEIGHT_DEFAULT / host_mhz)
    return max(PROCESSOR_WEIGHT_MIN, min(PROCESSOR_WEIGHT_MAX, weight))


# --- controllers, disks and DVD drives ----------------------------------------------------


async def add_scsi_controller(hv: HyperV, vm: VmRef) -> ObjectPath:
    """Add a synthetic SCSI controller to the VM (which must be off); its path.

    Missing VM: HyperVError (Hyper-V refuses the call). Not idempotent: each call adds a
    controller (Hyper-V allows 4). Afterwards the VM has one more, empty, controller. On
    failure nothing was added and nothing needs cleaning up. 1 call + 1 W when warm.
    """
    template = await default_setting(hv, Class.RASD, Subtype.SCSI_CONTROLLER)
    controller = template.updated(VirtualSystemIdentifiers=[f"{{{uuid.uuid4()}}}"])
    return await step("adding a SCSI controller", _add(hv, vm, controller))


async def controllers(hv: HyperV, vm: VmRef) -> Controllers:
    """The VM's IDE and SCSI controllers; 1 query, read-only, safe to repeat.

    Missing VM or a generation 2 VM without controllers: empty tuples.
    """
    kinds = wql.any_of("ResourceType", [int(ResourceType.IDE_CONTROLLER),
                                        int(ResourceType.SCSI_CONTROLLER)])
    query = wql.select(Class.RASD, _device_prefix(vm.guid) & kinds,
                       ("InstanceID", "ResourceType", "Address"))
    found = [c for c in await hv.cim.query(query, NAMESPACE) if c.path is not None]
    ide = sorted((c for c in found if c.integer("ResourceType") == ResourceType.IDE_CONTROLLER),
                 key=lambda c: c.string("Address") or "")
    scsi = [c for c in found if c.integer("ResourceType") == ResourceType.SCSI_CONTROLLER]
    return Controllers(tuple(_path(c) for c in ide), tuple(_path(c) for c in scsi))


def _path(instance: CimInstance) -> ObjectPath:
    assert instance.path is not None  # filtered by the caller
    return instance.path


async def attach_disk(
    hv: HyperV, vm: VmRef, controller: ObjectPath, slot: int, path: str, *, dvd: bool = False
) -> DiskRef:
    """Add a drive at ``slot`` of ``controller`` and put the image at ``path`` in it.

    A hard disk drive with a VHD/VHDX medium, or with ``dvd`` a DVD drive with an ISO.
    ``path`` is a path on the Hyper-V host. Missing VM, controller or file, a used slot or
    an image attached elsewhere: HyperVError naming the step. Not idempotent: a repeat
    finds the slot taken and fails with nothing changed. Afterwards the image is attached.
    If the medium fails, the new drive is removed again, so nothing is left. The file is
    never touched. 2 calls + 2 W when warm.
    """
    _check_slot(slot)
    if not path.strip():
        raise InvalidRequest("the image path is empty")
    drive = await _new_drive(hv, vm, controller, slot, dvd=dvd)
    medium = (await default_setting(hv, Class.SASD, Subtype.ISO if dvd else Subtype.VHD)).updated(
        Parent=str(drive), HostResource=[path])
    attached = await step(f"inserting {path}", _add(hv, vm, medium),
                           lambda: _remove(hv, [drive]))
    return DiskRef(drive, attached)


async def attach_empty_dvd(hv: HyperV, vm: VmRef, controller: ObjectPath, slot: int) -> ObjectPath:
    """Add an empty DVD drive at ``slot`` of ``controller``; its path.

    Generation 1 takes DVD drives on IDE only, generation 2 on SCSI. Missing VM or
    controller, or a used slot: HyperVError, nothing changed. Not idempotent: a repeat
    finds the slot taken. Afterwards the drive is there without a medium. Nothing needs
    cleaning up on failure. 1 call + 1 W when warm.
    """
    _check_slot(slot)
    drive = await _drive(hv, Subtype.DVD_DRIVE, controller, slot)
    return await step("adding a DVD drive", _add(hv, vm, drive))


async def _new_drive(hv: HyperV, vm: VmRef, controller: ObjectPath, slot: int, *,
                     dvd: bool) -> ObjectPath:
    if dvd:
        return await attach_empty_dvd(hv, vm, controller, slot)
    drive = await _drive(hv, Subtype.DISK_DRIVE, controller, slot)
    return await step("adding a disk drive", _add(hv, vm, drive))


async def _drive(hv: HyperV, subtype: str, controller: ObjectPath, slot: int) -> CimInstance:
    return (await default_setting(hv, Class.RASD, subtype)).updated(
        Parent=str(controller), AddressOnParent=str(slot))


def _check_slot(slot: int) -> None:
    if not 0 <= slot < SCSI_SLOTS:
        raise InvalidRequest(f"slot {slot} is outside 0..{SCSI_SLOTS - 1}")


# --- network adapters ---------------------------------------------------------------------


async def add_nic(
    hv: HyperV, vm: VmRef, *, mac: str, switch_name: str, vlan: int | None,
    rate_mbps: int | None, name: str, connected: bool = True,
) -> NicRef:
    """Add a synthetic NIC with a static MAC, connected to the vSwitch ``switch_name``.

    ``mac`` takes 12 hex digits with or without ':'/'-'. With ``vlan`` the port is in
    access mode on that VLAN; with ``rate_mbps`` its bandwidth Limit is rate × 10^6.
    Without ``connected`` the port names the switch but is disabled (EnabledState 3), so
    the NIC carries no traffic until it is connected (a spare NIC); it takes no VLAN.
    Generation 1 VMs take new NICs only while off; generation 2 VMs also while running.
    An invalid MAC, VLAN or rate or an unknown switch: InvalidRequest, nothing created.
    Missing VM, or a running VM that cannot take the NIC: HyperVError. Not idempotent: a
    repeat adds another NIC. Afterwards the NIC has its port and features. If the port or
    its features fail, the NIC (and its port) is removed again. 3 calls + 3 W when warm
    (2 + 2 W when no VLAN and no rate are given).
    """
    address = _check_nic(mac, vlan, rate_mbps, name)
    if vlan is not None and not connected:
        raise InvalidRequest("a disconnected (spare) network adapter takes no VLAN")
    switch = await switch_path(hv, switch_name)
    template = await default_setting(hv, Class.SEPSD, Subtype.NIC)
    nic = await step("adding the network adapter", _add(hv, vm, template.updated(
        ElementName=name, Address=address, StaticMacAddress=True,
        VirtualSystemIdentifiers=[f"{{{uuid.uuid4()}}}"])))
    port = await step(f"connecting the network adapter to {switch_name!r}",
                       _connect(hv, vm, nic, switch, name, connected), _forget_switch_then(
                           hv, switch_name, lambda: _remove(hv, [nic])))
    features = await step("setting the port's VLAN and bandwidth",
                           _add_features(hv, port, vlan, rate_mbps),
                           lambda: _remove(hv, [port, nic]))
    return NicRef(nic, port, address, features)


def _check_nic(mac: str, vlan: int | None, rate_mbps: int | None, name: str) -> str:
    """The MAC as 12 upper-case hex digits; InvalidRequest for any bad argument."""
    address = normalize_mac(mac)
    if vlan is not None and not VLAN_ID_MIN <= vlan <= VLAN_ID_MAX:
        raise InvalidRequest(f"VLAN {vlan} is outside {VLAN_ID_MIN}..{VLAN_ID_MAX}")
    if rate_mbps is not None and rate_mbps < 1:
        raise InvalidRequest(f"network rate {rate_mbps} Mbps is not positive")
    if not name.strip():
        raise InvalidRequest("the network adapter needs a name")
    return address


def _forget_switch_then(hv: HyperV, switch_name: str, undo: _Undo) -> _Undo:
    """``undo``, after dropping the cached switch path (it may be stale)."""
    async def forget() -> object:
        _cache(hv).switches.pop(switch_name, None)
        return await undo()
    return forget


async def _connect(hv: HyperV, vm: VmRef, nic: ObjectPath, switch: ObjectPath,
                   name: str, enabled: bool) -> ObjectPath:
    template = await default_setting(hv, Class.EPASD, Subtype.PORT)
    state = EnabledState.ENABLED if enabled else EnabledState.DISABLED
    port = template.updated(Parent=str(nic), HostResource=[str(switch)], ElementName=name,
                            EnabledState=int(state))
    return await _add(hv, vm, port)


async def _add_features(hv: HyperV, port: ObjectPath, vlan: int | None,
                        rate_mbps: int | None) -> tuple[ObjectPath, ...]:
    features: list[CimInstance] = []
    if vlan is not None:
        features.append((await spawned(hv, Class.VLAN)).updated(
            OperationMode=int(VlanMode.ACCESS), AccessVlanId=vlan))
    if rate_mbps is not None:
        features.append((await spawned(hv, Class.BANDWIDTH)).updated(
            Limit=rate_mbps * BITS_PER_MEGABIT))
    if not features:
        return ()
    result = await vms.call_service(hv, "AddFeatureSettings",
                         {"AffectedConfiguration": port, "FeatureSettings": features})
    return result.paths("ResultingFeatureSettings")
