"""Building a VM: define it, add controllers, disks, DVDs and NICs, push KVP items.

These are the pieces a StartCommand handler composes. Every method call goes through
``jobs.call`` on the Virtual System Management Service (VSMS, ``vms.management_service``).

New devices are copies of Hyper-V's template (``…\\Default``) instances. All RASD-derived
templates are read with ONE query the first time a backend needs one; the VSSD, the port
features (VLAN, bandwidth) and the KVP data item are spawned once; switch paths are looked
up by name once. All of it is cached per ``Cim`` (a ``WeakKeyDictionary``), so the figures
below hold once a backend is warm (job polls not counted, W = job waits). Warming costs,
once per backend: 1 query for the VSMS, 1 query for all templates, 1 spawn per spawned
class (VSSD, VLAN, bandwidth, KVP item) and 1 query per switch name.

=======================  ==================================================================
``define_vm``            3 calls + 2 W (DefineSystem, 1 query, ModifyResourceSettings)
``add_scsi_controller``  1 call + 1 W
``attach_disk``          2 calls + 2 W (drive, then medium)
``attach_empty_dvd``     1 call + 1 W
``controllers``          1 query
``add_nic``              3 calls + 3 W with a VLAN or a bandwidth limit; 2 + 2 W without
``push_kvp``             1 call + 1 W; 2 calls + 2 W when the key already exists
=======================  ==================================================================

Requests are checked before anything is created (``InvalidRequest``). A failure of a later
step undoes the earlier ones of the same function and raises a ``HyperVError`` naming the
step; the original error is its ``__cause__``. Cancellation is not undone. Nothing here
deletes a file.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import Cim, CimInstance, InValue, MethodResult, ObjectPath
from hyperv_agent.errors import HyperVError, InvalidRequest, JobFailed, MethodFailed
from hyperv_agent.hyperv import vms
from hyperv_agent.hyperv.schema import (
    BITS_PER_MEGABIT,
    GENERATION_SUBTYPES,
    KVP_KEY_MAX_CHARS,
    KVP_VALUE_MAX_CHARS,
    MAC_HEX_DIGITS,
    MEMORY_MIN_MB,
    NAMESPACE,
    PROCESSOR_LIMIT_PER_PERCENT,
    PROCESSOR_WEIGHT_MAX,
    SCSI_SLOTS,
    TEMPLATE_PREFIX,
    TEMPLATE_SUFFIX,
    VLAN_ID_MAX,
    VLAN_ID_MIN,
    VM_NAME_MAX_CHARS,
    Class,
    KvpSource,
    ResourceType,
    Subtype,
    VlanMode,
)
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
    cpu_limit_percent: int = 100  # 0..100 of each vCPU
    cpu_weight: int = 100  # 0..10000
    secure_boot: bool = False  # generation 2 only
    secure_boot_template_id: str | None = None  # a GUID; needs secure_boot


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


# --- per-backend cache --------------------------------------------------------------------


@dataclass
class _Cache:
    templates: dict[tuple[str, str], CimInstance] | None = None  # (class, subtype) lower-case
    spawned: dict[str, CimInstance] = field(default_factory=dict)  # by class name
    switches: dict[str, ObjectPath] = field(default_factory=dict)  # by ElementName


_CACHES: weakref.WeakKeyDictionary[Cim, _Cache] = weakref.WeakKeyDictionary()


def _cache(cim: Cim) -> _Cache:
    return _CACHES.setdefault(cim, _Cache())


async def default_setting(cim: Cim, class_name: str, subtype: str) -> CimInstance:
    """The ``…\\Default`` instance of ``class_name`` and ``subtype``: 1 query, then cached."""
    cache = _cache(cim)
    if cache.templates is None:
        pattern = wql.like_literal(TEMPLATE_PREFIX) + "%" + wql.like_literal(TEMPLATE_SUFFIX)
        found = await cim.query(wql.select(Class.RASD_BASE, wql.like("InstanceID", pattern)),
                                NAMESPACE)
        cache.templates = {(t.class_name.lower(), (t.string("ResourceSubType") or "").lower()): t
                           for t in reversed(found)}  # the first of duplicates wins
    template = cache.templates.get((class_name.lower(), subtype.lower()))
    if template is None:
        raise HyperVError(f"the host has no {class_name} template for {subtype}")
    return template


async def _spawned(cim: Cim, class_name: str) -> CimInstance:
    """A new instance of ``class_name`` with its defaults: 1 spawn, then cached."""
    spawned = _cache(cim).spawned
    if class_name not in spawned:
        spawned[class_name] = await cim.spawn(class_name, NAMESPACE)
    return spawned[class_name]


async def switch_path(cim: Cim, name: str) -> ObjectPath:
    """The path of the vSwitch called ``name``: 1 query, then cached; InvalidRequest if none."""
    switches = _cache(cim).switches
    if name not in switches:
        query = wql.select(Class.SWITCH, wql.eq("ElementName", name),
                           ("CreationClassName", "Name", "ElementName"))
        found = [s.path for s in await cim.query(query, NAMESPACE) if s.path is not None]
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


async def _add(cim: Cim, vm: VmRef, setting: CimInstance) -> ObjectPath:
    """AddResourceSettings of one setting; its new path (1 call + 1 W)."""
    result = await vms.call_service(cim, "AddResourceSettings",
                         {"AffectedConfiguration": vm.path, "ResourceSettings": [setting]})
    return _first(result, "ResultingResourceSettings")


async def _remove(cim: Cim, paths: Sequence[ObjectPath]) -> None:
    await vms.call_service(cim, "RemoveResourceSettings", {"ResourceSettings": list(paths)})


def _first(result: MethodResult, name: str) -> ObjectPath:
    paths = result.paths(name)
    if not paths:
        raise HyperVError(f"the call returned no {name}")
    return paths[0]


async def _step(name: str, action: Awaitable[_T], undo: _Undo | None = None) -> _T:
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
        (not 0 <= spec.cpu_limit_percent <= 100,
         f"cpu_limit_percent {spec.cpu_limit_percent} is outside 0..100"),
        (not 0 <= spec.cpu_weight <= PROCESSOR_WEIGHT_MAX,
         f"cpu_weight {spec.cpu_weight} is outside 0..{PROCESSOR_WEIGHT_MAX}"),
        (spec.secure_boot and spec.generation != 2, "secure boot needs generation 2"),
        (spec.secure_boot_template_id is not None and not spec.secure_boot,
         "secure_boot_template_id needs secure_boot"),
        (not _is_guid(spec.secure_boot_template_id), "secure_boot_template_id is not a GUID"),
    ) if bad]
    if problems:
        raise InvalidRequest(f"invalid VM {spec.name[:VM_NAME_MAX_CHARS]!r}: {problems[0]}")


def _is_guid(text: str | None) -> bool:
    try:
        return text is None or bool(uuid.UUID(text))
    except ValueError:
        return False


async def define_vm(cim: Cim, spec: VmSpec) -> VmRef:
    """Create a VM (off) with the spec's name, notes, generation, CPUs and static memory.

    The spec is checked first (InvalidRequest, nothing created). Not idempotent: Hyper-V
    allows duplicate names, so a repeat creates a second VM; look the name up first
    (``vms.find_vm``). Afterwards the VM exists, is off, and has the default devices of
    its generation (two IDE controllers on generation 1) and no disk or NIC. If setting
    processors and memory fails, the new VM is destroyed and the error names the step.
    3 calls + 2 W when warm.
    """
    validate(spec)
    settings = (await _spawned(cim, Class.VSSD)).updated(_system_settings(spec))
    result = await _step("defining the VM", vms.call_service(
        cim, "DefineSystem", {"SystemSettings": settings, "ResourceSettings": []}))
    guid = _vm_guid(result)
    await _step("setting processors and memory", _set_processors_and_memory(cim, guid, spec),
                lambda: vms.destroy(cim, guid))
    return VmRef(guid, spec.name, PowerState.STOPPED)


def _system_settings(spec: VmSpec) -> dict[str, object]:
    values: dict[str, object] = {
        "ElementName": spec.name, "Notes": list(spec.notes),
        "VirtualSystemSubType": GENERATION_SUBTYPES[spec.generation],
    }
    if spec.generation == 2:
        values["SecureBootEnabled"] = spec.secure_boot
    if spec.secure_boot_template_id is not None:
        values["SecureBootTemplateId"] = str(uuid.UUID(spec.secure_boot_template_id))
    return values


def _vm_guid(result: MethodResult) -> str:
    path = result.path("ResultingSystem")
    if path is None:
        raise HyperVError("DefineSystem returned no ResultingSystem")
    return path.key("Name")


async def _set_processors_and_memory(cim: Cim, guid: str, spec: VmSpec) -> None:
    kinds = wql.any_of("ResourceType", [int(ResourceType.PROCESSOR), int(ResourceType.MEMORY)])
    found = await cim.query(wql.select(Class.RASD_BASE, _device_prefix(guid) & kinds), NAMESPACE)
    processor = _one(found, Class.PROCESSOR).updated(
        VirtualQuantity=spec.cpus, Weight=spec.cpu_weight,
        Limit=spec.cpu_limit_percent * PROCESSOR_LIMIT_PER_PERCENT)
    memory = _one(found, Class.MEMORY).updated(
        DynamicMemoryEnabled=False, VirtualQuantity=spec.memory_mb,
        Reservation=spec.memory_mb, Limit=spec.memory_mb)
    await vms.call_service(cim, "ModifyResourceSettings", {"ResourceSettings": [processor, memory]})


def _one(found: Sequence[CimInstance], class_name: str) -> CimInstance:
    match = next((item for item in found if item.is_a(class_name)), None)
    if match is None:
        raise HyperVError(f"the VM has no {class_name}")
    return match


# --- controllers, disks and DVD drives ----------------------------------------------------


async def add_scsi_controller(cim: Cim, vm: VmRef) -> ObjectPath:
    """Add a synthetic SCSI controller to the VM (which must be off); its path.

    Missing VM: HyperVError (Hyper-V refuses the call). Not idempotent: each call adds a
    controller (Hyper-V allows 4). Afterwards the VM has one more, empty, controller. On
    failure nothing was added and nothing needs cleaning up. 1 call + 1 W when warm.
    """
    template = await default_setting(cim, Class.RASD, Subtype.SCSI_CONTROLLER)
    controller = template.updated(VirtualSystemIdentifiers=[f"{{{uuid.uuid4()}}}"])
    return await _step("adding a SCSI controller", _add(cim, vm, controller))


async def controllers(cim: Cim, vm: VmRef) -> Controllers:
    """The VM's IDE and SCSI controllers; 1 query, read-only, safe to repeat.

    Missing VM or a generation 2 VM without controllers: empty tuples.
    """
    kinds = wql.any_of("ResourceType", [int(ResourceType.IDE_CONTROLLER),
                                        int(ResourceType.SCSI_CONTROLLER)])
    query = wql.select(Class.RASD, _device_prefix(vm.guid) & kinds,
                       ("InstanceID", "ResourceType", "Address"))
    found = [c for c in await cim.query(query, NAMESPACE) if c.path is not None]
    ide = sorted((c for c in found if c.integer("ResourceType") == ResourceType.IDE_CONTROLLER),
                 key=lambda c: c.string("Address") or "")
    scsi = [c for c in found if c.integer("ResourceType") == ResourceType.SCSI_CONTROLLER]
    return Controllers(tuple(_path(c) for c in ide), tuple(_path(c) for c in scsi))


def _path(instance: CimInstance) -> ObjectPath:
    assert instance.path is not None  # filtered by the caller
    return instance.path


async def attach_disk(
    cim: Cim, vm: VmRef, controller: ObjectPath, slot: int, path: str, *, dvd: bool = False
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
    drive = await _new_drive(cim, vm, controller, slot, dvd=dvd)
    medium = (await default_setting(cim, Class.SASD, Subtype.ISO if dvd else Subtype.VHD)).updated(
        Parent=str(drive), HostResource=[path])
    attached = await _step(f"inserting {path}", _add(cim, vm, medium),
                           lambda: _remove(cim, [drive]))
    return DiskRef(drive, attached)


async def attach_empty_dvd(cim: Cim, vm: VmRef, controller: ObjectPath, slot: int) -> ObjectPath:
    """Add an empty DVD drive at ``slot`` of ``controller``; its path.

    Generation 1 takes DVD drives on IDE only, generation 2 on SCSI. Missing VM or
    controller, or a used slot: HyperVError, nothing changed. Not idempotent: a repeat
    finds the slot taken. Afterwards the drive is there without a medium. Nothing needs
    cleaning up on failure. 1 call + 1 W when warm.
    """
    _check_slot(slot)
    drive = await _drive(cim, Subtype.DVD_DRIVE, controller, slot)
    return await _step("adding a DVD drive", _add(cim, vm, drive))


async def _new_drive(cim: Cim, vm: VmRef, controller: ObjectPath, slot: int, *,
                     dvd: bool) -> ObjectPath:
    if dvd:
        return await attach_empty_dvd(cim, vm, controller, slot)
    drive = await _drive(cim, Subtype.DISK_DRIVE, controller, slot)
    return await _step("adding a disk drive", _add(cim, vm, drive))


async def _drive(cim: Cim, subtype: str, controller: ObjectPath, slot: int) -> CimInstance:
    return (await default_setting(cim, Class.RASD, subtype)).updated(
        Parent=str(controller), AddressOnParent=str(slot))


def _check_slot(slot: int) -> None:
    if not 0 <= slot < SCSI_SLOTS:
        raise InvalidRequest(f"slot {slot} is outside 0..{SCSI_SLOTS - 1}")


# --- network adapters ---------------------------------------------------------------------


async def add_nic(
    cim: Cim, vm: VmRef, *, mac: str, switch_name: str, vlan: int | None,
    rate_mbps: int | None, name: str,
) -> NicRef:
    """Add a synthetic NIC with a static MAC, connected to the vSwitch ``switch_name``.

    ``mac`` takes 12 hex digits with or without ':'/'-'. With ``vlan`` the port is in
    access mode on that VLAN; with ``rate_mbps`` its bandwidth Limit is rate × 10^6.
    An invalid MAC, VLAN or rate or an unknown switch: InvalidRequest, nothing created.
    Missing VM: HyperVError. Not idempotent: a repeat adds another NIC. Afterwards the NIC
    is connected with its features set. If connecting it or setting its features fails,
    the NIC (and its port) is removed again. 3 calls + 3 W when warm (2 + 2 W when no
    VLAN and no rate are given).
    """
    address = _check_nic(mac, vlan, rate_mbps, name)
    switch = await switch_path(cim, switch_name)
    template = await default_setting(cim, Class.SEPSD, Subtype.NIC)
    nic = await _step("adding the network adapter", _add(cim, vm, template.updated(
        ElementName=name, Address=address, StaticMacAddress=True,
        VirtualSystemIdentifiers=[f"{{{uuid.uuid4()}}}"])))
    port = await _step(f"connecting the network adapter to {switch_name!r}",
                       _connect(cim, vm, nic, switch, name), _forget_switch_then(
                           cim, switch_name, lambda: _remove(cim, [nic])))
    features = await _step("setting the port's VLAN and bandwidth",
                           _add_features(cim, port, vlan, rate_mbps),
                           lambda: _remove(cim, [port, nic]))
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


def _forget_switch_then(cim: Cim, switch_name: str, undo: _Undo) -> _Undo:
    """``undo``, after dropping the cached switch path (it may be stale)."""
    async def forget() -> object:
        _cache(cim).switches.pop(switch_name, None)
        return await undo()
    return forget


async def _connect(cim: Cim, vm: VmRef, nic: ObjectPath, switch: ObjectPath,
                   name: str) -> ObjectPath:
    template = await default_setting(cim, Class.EPASD, Subtype.PORT)
    port = template.updated(Parent=str(nic), HostResource=[str(switch)], ElementName=name)
    return await _add(cim, vm, port)


async def _add_features(cim: Cim, port: ObjectPath, vlan: int | None,
                        rate_mbps: int | None) -> tuple[ObjectPath, ...]:
    features: list[CimInstance] = []
    if vlan is not None:
        features.append((await _spawned(cim, Class.VLAN)).updated(
            OperationMode=int(VlanMode.ACCESS), AccessVlanId=vlan))
    if rate_mbps is not None:
        features.append((await _spawned(cim, Class.BANDWIDTH)).updated(
            Limit=rate_mbps * BITS_PER_MEGABIT))
    if not features:
        return ()
    result = await vms.call_service(cim, "AddFeatureSettings",
                         {"AffectedConfiguration": port, "FeatureSettings": features})
    return result.paths("ResultingFeatureSettings")


# --- KVP ----------------------------------------------------------------------------------


async def push_kvp(cim: Cim, vm: VmRef, key: str, value: str) -> None:
    """Set the host-to-guest KVP item ``key`` of the VM to ``value``.

    Values over 1023 characters (and empty or over-long keys) raise InvalidRequest; how
    longer values are split into several keys is decided later. AddKvpItems first; if it
    fails (the key exists), ModifyKvpItems. Missing VM: HyperVError after both attempts.
    Safe to repeat: afterwards the VM has exactly one item ``key`` with ``value``, seen
    by the guest while it runs with KVP integration services. Nothing needs cleaning up
    on failure. 1 call + 1 W when warm; 2 calls + 2 W when the key exists.
    """
    if not key or len(key) > KVP_KEY_MAX_CHARS:
        raise InvalidRequest(f"KVP key must have 1..{KVP_KEY_MAX_CHARS} characters")
    if len(value) > KVP_VALUE_MAX_CHARS:
        raise InvalidRequest(f"KVP value of {key!r} has {len(value)} characters, more than "
                             f"{KVP_VALUE_MAX_CHARS}")
    item = (await _spawned(cim, Class.KVP_ITEM)).updated(
        Name=key, Data=value, Source=int(KvpSource.HOST))
    params: dict[str, InValue] = {"TargetSystem": vm.path, "DataItems": [item]}
    try:
        await vms.call_service(cim, "AddKvpItems", params)
    except (MethodFailed, JobFailed) as added:
        await _step(f"pushing KVP item {key!r}: adding it failed ({added}), then replacing it",
                    vms.call_service(cim, "ModifyKvpItems", params))
