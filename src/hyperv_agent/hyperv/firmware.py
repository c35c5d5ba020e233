"""Firmware settings of a VM: the secure boot template a guest needs (docs/architecture.md,
"Hyper-V facts") and the boot order of a generation 2 VM.

=============================  ==========================================================
``secure_boot_template_id``    1 query the first time per session, then none
``set_boot_order_gen2``        2 calls + 1 W for one drive (1 + n calls + 1 W for n)
=============================  ==========================================================
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, ObjectPath
from hyperv_agent.errors import CimInvalidParameter, HyperVError, InvalidRequest
from hyperv_agent.hyperv import build, settings, vms
from hyperv_agent.hyperv.schema import NAMESPACE, Class
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import VmRef

#: The secure boot templates (VSSD ElementName) of 2016+ hosts: Windows guests boot with
#: MicrosoftWindows, other guests (Linux shim loaders) need the Microsoft UEFI CA.
WINDOWS_TEMPLATE = "MicrosoftWindows"
UEFI_CA_TEMPLATE = "MicrosoftUEFICertificateAuthority"
SECURE_BOOT_TEMPLATES = (WINDOWS_TEMPLATE, UEFI_CA_TEMPLATE)
#: VirtualSystemType prefixes of a VM's own settings (current, planned, snapshots, replicas):
#: a VM or snapshot that happens to carry a template's name is never taken for one.
_VM_SETTING_TYPES = ("microsoft:hyper-v:system:", "microsoft:hyper-v:snapshot:",
                     "microsoft:hyper-v:replica")


@dataclass
class _Kept:
    """What the session keeps for this module: template ids by lower-case name (None:
    the host has no such template)."""

    templates: dict[str, str | None] = field(default_factory=dict)


# --- secure boot --------------------------------------------------------------------------


async def secure_boot_template_id(hv: HyperV, name: str) -> str:
    """The SecureBootTemplateId (a GUID) of the host's secure boot template ``name``.

    Read-only: the session's first lookup reads every template in
    ``SECURE_BOOT_TEMPLATES`` (and ``name``) with 1 query; later lookups of those names
    cost none (a host's templates do not change while it runs). A host without the
    template (before Windows Server 2016): InvalidRequest naming it.
    """
    found = hv.kept(_Kept).templates
    if name.lower() not in found:
        names = [n for n in SECURE_BOOT_TEMPLATES if n.lower() not in found]
        names += [] if name.lower() in (n.lower() for n in names) else [name]
        found.update(await _read_templates(hv, names))
    template_id = found[name.lower()]
    if template_id is None:
        raise InvalidRequest(f"the host has no secure boot template {name!r} (Hyper-V has "
                             "them from Windows Server 2016)")
    return template_id


async def _read_templates(hv: HyperV, names: Sequence[str]) -> dict[str, str | None]:
    """The template id of each of ``names`` (lower-cased; None when missing): 1 query."""
    query = wql.select(Class.VSSD, wql.any_of("ElementName", names),
                       ("InstanceID", "ElementName", "VirtualSystemType", "SecureBootTemplateId"))
    ids = {(t.string("ElementName") or "").lower(): str(uuid.UUID(str(t["SecureBootTemplateId"])))
           for t in reversed(await hv.cim.query(query, NAMESPACE)) if _is_template(t)}
    return {n.lower(): ids.get(n.lower()) for n in names}


def _is_template(instance: CimInstance) -> bool:
    """A template VSSD: not a VM's own settings, and its SecureBootTemplateId a GUID."""
    if (instance.string("VirtualSystemType") or "").lower().startswith(_VM_SETTING_TYPES):
        return False
    template_id = instance.string("SecureBootTemplateId")
    return template_id is not None and build.is_guid(template_id)


# --- boot order (generation 2) ------------------------------------------------------------


async def set_boot_order_gen2(hv: HyperV, vm: VmRef, first: Sequence[ObjectPath]) -> None:
    """Make a generation 2 VM boot from the drives ``first`` (drive RASD paths, in that
    order); every other boot source (other drives, network boot) keeps its current order
    after them.

    Hyper-V gives each drive and NIC of a generation 2 VM a ``Msvm_BootSourceSettingData``
    and appends it to ``VSSD.BootSourceOrder`` (the paths of those entries), so by default
    the VM boots from devices in the order they were added. Each drive's entry and the
    VM's settings come from one ``ASSOCIATORS OF`` the drive (its boot source through
    ``Msvm_LogicalIdentity`` and its VSSD), then one ModifySystemSettings writes the new
    order. Paths are compared without regard to case or host. 2 calls + 1 W for one drive
    (1 + n calls + 1 W for n); only the reads when the order is already right; no round
    trip for no drive. A drive that is missing, belongs to another VM or has no boot
    source (a generation 1 VM, or not a drive): HyperVError, nothing changed. A repeat is
    safe. Nothing needs cleaning up on failure.
    """
    vssd: CimInstance | None = None
    sources: list[str] = []
    for drive in dict.fromkeys(first):
        found = await settings.step(f"reading the boot source of {drive.relative()}",
                                 hv.cim.associators(drive, result_class=Class.SETTING_DATA_BASE))
        vssd = vssd or _settings_of(found, vm, drive)
        sources.append(_boot_source(found, drive))
    if vssd is None:
        return
    current = vssd.strings("BootSourceOrder")
    order = _boot_order(sources, current)
    if order == list(current):
        return
    await settings.step("setting the boot order", vms.call_service(
        hv, "ModifySystemSettings", {"SystemSettings": vssd.updated(BootSourceOrder=order)}))


def _settings_of(found: Sequence[CimInstance], vm: VmRef, drive: ObjectPath) -> CimInstance:
    wanted = f"Microsoft:{vm.guid}".lower()
    for instance in found:
        if instance.is_a(Class.VSSD) and (instance.string("InstanceID") or "").lower() == wanted:
            return instance
    raise HyperVError(f"{drive.relative()} is not a device of VM {vm.name}")


def _boot_source(found: Sequence[CimInstance], drive: ObjectPath) -> str:
    for instance in found:
        if instance.is_a(Class.BOOT_SOURCE) and instance.path is not None:
            return str(instance.path)
    raise HyperVError(f"{drive.relative()} has no boot source (a generation 1 VM, or not a drive)")


def _boot_order(first: Sequence[str], current: Sequence[str]) -> list[str]:
    """``first``, then the entries of ``current`` not in it; an entry keeps the spelling it
    has in ``current``."""
    spelled = {_path_key(entry): entry for entry in current}
    wanted = [_path_key(entry) for entry in first]
    head = [spelled.get(key, entry) for key, entry in zip(wanted, first, strict=True)]
    return head + [entry for entry in current if _path_key(entry) not in wanted]


def _path_key(text: str) -> str:
    try:
        return ObjectPath.parse(text).normalized
    except CimInvalidParameter:
        return text.upper()
