"""A VM's resource settings, made from Hyper-V's templates and added or removed through the
Virtual System Management Service (VSMS): what the operations that build and change VMs
share.

New devices are copies of Hyper-V's template (``…\\Default``) instances: every
RASD-derived template is read with ONE query the first time a session needs one; the
VSSD, the port features (VLAN, bandwidth) and the KVP data item are spawned once; switch
paths are looked up by name once. All of it is kept by the host's session
(``session.HyperV``). ``step`` runs one step of an operation, undoing the earlier ones
when it fails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, MethodResult, ObjectPath
from hyperv_agent.errors import HyperVError, InvalidRequest
from hyperv_agent.hyperv import jobs, vms
from hyperv_agent.hyperv.schema import NAMESPACE, TEMPLATE_PREFIX, TEMPLATE_SUFFIX, Class
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import VmRef

_T = TypeVar("_T")
Undo = Callable[[], Awaitable[object]]


@dataclass
class _Kept:
    """What the session keeps for this module."""

    templates: dict[tuple[str, str], CimInstance] | None = None  # (class, subtype) lower-case
    spawned: dict[str, CimInstance] = field(default_factory=dict)  # by class name
    switches: dict[str, ObjectPath] = field(default_factory=dict)  # by ElementName


# --- templates and switches ---------------------------------------------------------------


async def default_setting(hv: HyperV, class_name: str, subtype: str) -> CimInstance:
    """The ``…\\Default`` instance of ``class_name`` and ``subtype``: 1 query, then kept."""
    cache = hv.kept(_Kept)
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
    """A new instance of ``class_name`` with its defaults: 1 spawn, then kept."""
    cached = hv.kept(_Kept).spawned
    if class_name not in cached:
        cached[class_name] = await hv.cim.spawn(class_name, NAMESPACE)
    return cached[class_name]


async def switch_path(hv: HyperV, name: str) -> ObjectPath:
    """The path of the vSwitch called ``name``: 1 query, then kept; InvalidRequest if none."""
    switches = hv.kept(_Kept).switches
    if name not in switches:
        query = wql.select(Class.SWITCH, wql.eq("ElementName", name),
                           ("CreationClassName", "Name", "ElementName"))
        found = [s.path for s in await hv.cim.query(query, NAMESPACE) if s.path is not None]
        if not found:
            raise InvalidRequest(f"the host has no virtual switch named {name!r}")
        switches[name] = found[0]
    return switches[name]


def forget_switch(hv: HyperV, name: str) -> None:
    """Drop the kept path of the vSwitch ``name`` (it may be stale)."""
    hv.kept(_Kept).switches.pop(name, None)


# --- adding, removing, undoing ------------------------------------------------------------


async def add_setting(hv: HyperV, vm: VmRef, setting: CimInstance) -> ObjectPath:
    """AddResourceSettings of one setting; its new path (1 call + 1 W)."""
    result = await vms.call_service(hv, "AddResourceSettings",
                         {"AffectedConfiguration": vm.path, "ResourceSettings": [setting]})
    return first_path(result, "ResultingResourceSettings")


async def remove_settings(hv: HyperV, paths: Sequence[ObjectPath]) -> None:
    """RemoveResourceSettings of ``paths`` (1 call + 1 W)."""
    await vms.call_service(hv, "RemoveResourceSettings", {"ResourceSettings": list(paths)})


def first_path(result: MethodResult, name: str) -> ObjectPath:
    """The first path of the out-parameter ``name``; HyperVError when there is none."""
    paths = result.paths(name)
    if not paths:
        raise HyperVError(f"the call returned no {name}")
    return paths[0]


async def step(name: str, action: Awaitable[_T], undo: Undo | None = None) -> _T:
    """Await ``action``; on failure run ``undo`` and raise a HyperVError naming the step."""
    try:
        return await action
    except InvalidRequest:
        raise
    except Exception as error:
        raise HyperVError(f"{name} failed: {error}{await _undone(undo)}") from error


async def _undone(undo: Undo | None) -> str:
    """Run ``undo``, within what is left of all of the command's wait (``jobs.whole_wait``:
    the step may have failed at the command's bound); a note for the error message when
    it fails too."""
    if undo is None:
        return ""
    try:
        with jobs.whole_wait():
            await undo()
    except Exception as error:
        return f" (undoing the earlier steps failed too, something may be left: {error})"
    return ""


def device_prefix(guid: str) -> wql.Condition:
    """Selects the settings of the VM ``guid``'s devices (their InstanceID extends the VM's)."""
    return wql.starts_with("InstanceID", f"Microsoft:{guid}\\")
