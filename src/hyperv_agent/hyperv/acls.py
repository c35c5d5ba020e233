"""A VM adapter's switch port as security groups use it: its extended ACLs and its
security setting, read in one go and brought to what is wanted in one diff.

A port is named by its VM (ElementName) and the adapter's MAC. What it holds is a
``Port``: every ``Msvm_EthernetSwitchPortExtendedAclSettingData`` under it, whoever wrote
it (``portacls.PortAcl``), and its ``Msvm_EthernetSwitchPortSecuritySettingData`` read as
a ``PortSecurity`` (the class defaults when it has none). ``apply`` brings the ACLs the
agent owns to a wanted list (``portacls.plan_change``: administrators' ACLs are left
alone) with at most one RemoveFeatureSettings and one AddFeatureSettings; a security
setting the port lacks is added in that same AddFeatureSettings, one that differs is
changed with a ModifyFeatureSettings. ACLs are removed before new ones are added: if the
add fails, the port has lost allows, not gained them.

What the session keeps: the port as this session last read or wrote it, by VM name and
MAC, with the VM's GUID. It is used while the session knows that GUID for that name
(``vms.known_guid``: a VM re-created by a StartCommand has a new one, a removed VM none),
and dropped by ``forget_vm`` (a VM that left the host). A change planned from a kept port
that Hyper-V refuses (an ACL already gone, a weight taken, a port that no longer exists)
is planned again from a fresh read, once; not one refused because the VM is being
migrated live or has left by its move since (``vms.explain_refusal``), which fails.
A port read while the VM's lookup shows it being migrated live is not kept, and a change
of it fails before any call (``vms.migrating_refusal``): Hyper-V would refuse it after a
job wait, and a refusal that comes once the move is done finds the VM gone.
A VM Hyper-V is starting, stopping or saving takes no feature change on its ports until
that is done (32775): the fresh read waits the change out first (``power.settle``, within
the caller's wait; nothing more for a VM in a steady state), so a kept port of such a VM
costs one refused call and then the read.
``AddFeatureSettings`` is taken to return the
paths of ``ResultingFeatureSettings`` in the order of ``FeatureSettings`` (Microsoft does
not say otherwise); when the counts differ, the port is not kept.

A rule set of thousands of CIDRs is thousands of ACLs, more than one WinRM request holds
(MaxEnvelopeSizekb, 500 KB by default). A remove or add the host refuses as too large
(``CimResponseTooLarge``: nothing was done) is sent again in halves, and the batch size
that fitted is kept by the session for that method, so only the first large change
learns it. Each batch is one call and one job wait.

Round trips (W = job waits; the extended ACL and security classes are spawned once per
session):

==================  ===================================================================
``read_ports``      3 queries: the VM, then its adapters and ports and their features
                    at once (+ P gets while Hyper-V changes the VM's state)
``bring_to``        known port: at most 2 calls + 2 W (remove, add), none when nothing
                    changes, +1 call + 1 W when an existing security setting differs;
                    unknown port: + the 3 queries of ``read_ports``; a remove or add
                    larger than a request holds: 1 call + 1 W per batch
``sweep``           2 queries at once (+1 call + 1 W for each VM there is something
                    to remove of; + P gets while Hyper-V changes the state of such a VM)
==================  ===================================================================
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, InValue, ObjectPath
from hyperv_agent.errors import (
    AgentError,
    CimInvalidClass,
    CimResponseTooLarge,
    CimUnavailable,
    HyperVError,
    InvalidRequest,
    VmMigrating,
)
from hyperv_agent.hyperv import jobs, power, settings, vms
from hyperv_agent.hyperv.portacls import (
    CLASS_DEFAULT_SECURITY,
    NAME_PREFIX,
    AclChange,
    AclSpec,
    PlacedAcl,
    PortAcl,
    PortSecurity,
    plan_change,
)
from hyperv_agent.hyperv.schema import NAMESPACE, Class, ResourceType
from hyperv_agent.hyperv.session import HyperV

log = logging.getLogger("hyperv_agent.hyperv.acls")


class PortUnavailable(HyperVError):
    """The port cannot take ACLs: no such VM, adapter or port, or a host without extended
    port ACLs (before Windows Server 2012 R2)."""


@dataclass(frozen=True)
class Port:
    """One VM adapter's switch port and what it holds."""

    vm_name: str
    vm_guid: str
    mac: str  # 12 upper-case hex digits
    path: ObjectPath  # its Msvm_EthernetPortAllocationSettingData
    acls: tuple[PortAcl, ...]  # every extended ACL, the agent's and administrators'
    security: PortSecurity
    security_setting: CimInstance | None = None  # None: the class defaults
    # the VM's lookup showed it being migrated live (``vms.migrating``): ``apply`` asks
    # Hyper-V for no change of it, and the session does not keep it (true of that moment)
    migrating: bool = False

    @property
    def owned(self) -> tuple[PortAcl, ...]:
        """The ACLs the agent wrote (their Name carries its prefix)."""
        return tuple(acl for acl in self.acls if acl.owned)


#: The ACLs wanted on a port, worked out from what it holds now.
Wanted = Callable[[Port], Sequence[AclSpec]]


@dataclass(frozen=True)
class Applied:
    """What ``bring_to`` did: the port as it is now, the change, and whether the port had
    to be read first."""

    port: Port
    change: AclChange
    read: bool


@dataclass
class _Kept:
    """What the session keeps for this module: ports by (VM name, MAC), and the number of
    features a remove or add call fitted in one request, by method, once one did not."""

    ports: dict[tuple[str, str], Port] = field(default_factory=dict)
    batch_sizes: dict[str, int] = field(default_factory=dict)


# --- what the session knows ---------------------------------------------------------------


def known_port(hv: HyperV, vm_name: str, mac: str) -> Port | None:
    """The port as this session last read or wrote it, while the session knows the same
    GUID for the VM's name; None otherwise. No round trip."""
    kept = hv.kept(_Kept).ports
    port = kept.get((vm_name, mac.upper()))
    if port is not None and vms.known_guid(hv, vm_name) != port.vm_guid:
        del kept[(vm_name, mac.upper())]
        return None
    return port


def remember(hv: HyperV, port: Port) -> None:
    hv.kept(_Kept).ports[(port.vm_name, port.mac)] = port


def forget_vm(hv: HyperV, vm_name: str) -> None:
    """Drop every kept port of ``vm_name`` (a VM that left the host); no round trip."""
    kept = hv.kept(_Kept).ports
    for key in [key for key in kept if key[0] == vm_name]:
        del kept[key]


def forget_absent(hv: HyperV, present: set[str]) -> set[str]:
    """Drop the kept ports of VMs whose names are not in ``present``; those VMs' names."""
    gone = {name for name, _ in hv.kept(_Kept).ports} - present
    for name in gone:
        forget_vm(hv, name)
    return gone


# --- reading ------------------------------------------------------------------------------


async def read_ports(hv: HyperV, vm_name: str,
                     policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY) -> list[Port]:
    """Every adapter port of the VM ``vm_name`` with its ACLs and security setting, in
    WMI's order (adapters without a port are left out), kept by the session. No such VM:
    PortUnavailable. A VM Hyper-V is starting, stopping or saving is waited for first,
    within ``policy`` (``power.find_settled``: its ports take no feature change until
    then); one still changing after it raises HyperVError naming the change. A VM the
    lookup shows being migrated live: its ports say so (``Port.migrating``) and are not
    kept. Read-only; 3 queries for a VM in a steady state."""
    vm = await power.find_settled(hv, vm_name, policy)
    if vm is None:
        raise PortUnavailable(f"there is no VM named {vm_name!r} on this host")
    prefix = settings.device_prefix(vm.guid)
    kinds = wql.any_of("ResourceType", [int(ResourceType.ETHERNET_ADAPTER),
                                        int(ResourceType.ETHERNET_CONNECTION)])
    devices, features = await asyncio.gather(
        hv.cim.query(wql.select(Class.RASD_BASE, prefix & kinds), NAMESPACE),
        hv.cim.query(wql.select(Class.PORT_FEATURE_BASE, prefix), NAMESPACE))
    ports = [_port(vm.name, vm.guid, nic, port, features, migrating=vm.migrating)
             for nic, port in _adapters(devices)]
    for port in ports if not vm.migrating else ():
        remember(hv, port)
    return ports


async def read_port(hv: HyperV, vm_name: str, mac: str,
                    policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY) -> Port:
    """The port of the adapter ``mac`` (12 hex digits, upper case) of ``vm_name``; no
    such VM, adapter or port: PortUnavailable. The VM's state change waited out as
    ``read_ports`` does. 3 queries."""
    for port in await read_ports(hv, vm_name, policy):
        if port.mac == mac:
            return port
    raise PortUnavailable(f"VM {vm_name!r} has no network adapter {mac} with a switch port")


def _adapters(devices: Sequence[CimInstance]) -> list[tuple[CimInstance, CimInstance]]:
    """(adapter, its port) pairs; adapters without a port are left out."""
    ports = [d for d in devices if d.is_a(Class.EPASD)]
    pairs = []
    for nic in devices:
        if not nic.is_a(Class.SEPSD) or nic.path is None:
            continue
        port = next((p for p in ports if _parent(p) == nic.path and p.path is not None), None)
        if port is not None:
            pairs.append((nic, port))
    return pairs


def _parent(port: CimInstance) -> ObjectPath | None:
    parent = port.string("Parent")
    return ObjectPath.parse(parent) if parent else None


def _port(vm_name: str, vm_guid: str, nic: CimInstance, port: CimInstance,
          features: Sequence[CimInstance], *, migrating: bool) -> Port:
    prefix = (port.string("InstanceID") or "").lower() + "\\"
    mine = [f for f in features if (f.string("InstanceID") or "").lower().startswith(prefix)]
    security = next((f for f in mine if f.is_a(Class.PORT_SECURITY)), None)
    assert port.path is not None  # _adapters pairs only ports with a path
    return Port(vm_name, vm_guid, (nic.string("Address") or "").upper(), port.path,
                tuple(_acl(f) for f in mine if f.is_a(Class.EXTENDED_ACL)),
                _security(security), security, migrating)


def _acl(found: CimInstance) -> PortAcl:
    isolation = found.integer("IsolationID") if "IsolationID" in found else 0
    return PortAcl(
        instance_id=found.string("InstanceID") or "", name=found.string("Name") or "",
        direction=found.integer("Direction") or 0, action=found.integer("Action") or 0,
        weight=found.integer("Weight") or 0, protocol=found.string("Protocol") or "",
        local_ip=found.string("LocalIPAddress") or "",
        remote_ip=found.string("RemoteIPAddress") or "",
        local_port=found.string("LocalPort") or "", remote_port=found.string("RemotePort") or "",
        stateful=found.boolean("Stateful") is True,
        idle_session_timeout_s=found.integer("IdleSessionTimeout") or 0,
        isolation_id=isolation or 0)


def _security(setting: CimInstance | None) -> PortSecurity:
    if setting is None:
        return CLASS_DEFAULT_SECURITY
    return PortSecurity(allow_mac_spoofing=setting.boolean("AllowMacSpoofing") is True,
                        dhcp_guard=setting.boolean("EnableDhcpGuard") is True,
                        router_guard=setting.boolean("EnableRouterGuard") is True)


# --- changing -----------------------------------------------------------------------------


async def bring_to(hv: HyperV, vm_name: str, mac: str, wanted: Wanted,
                   security: PortSecurity | None,
                   policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY) -> Applied:
    """Bring the agent's ACLs on the port of adapter ``mac`` of ``vm_name`` to
    ``wanted(port)`` and its security setting to ``security`` (None: left as it is).

    The port as the session knows it is used when it can be (see the module notes), else
    it is read, once the VM's state change is done (``read_ports``, within ``policy``).
    No such VM, adapter or port, or no extended ACLs on this host:
    PortUnavailable, nothing changed. More ACLs than a weight band holds: InvalidRequest
    (``portacls.TooManyAcls``), nothing changed. A change Hyper-V refuses because the VM
    is being migrated live, or has left by its move since (``vms.explain_refusal``):
    VmMigrating, from the known port too, not read again: a read would find the VM
    migrating and be refused again, or find it gone and say there is no such VM, which
    the management server takes as a host that cannot filter and never retries. Safe to
    repeat: an unchanged port costs no call. On a failure of the add, the port has lost
    the ACLs removed before it (a repeat finishes the change). Round trips: the module
    notes.
    """
    known = known_port(hv, vm_name, mac)
    if known is not None:
        try:
            return Applied(*await apply(hv, known, wanted(known), security), read=False)
        except (InvalidRequest, PortUnavailable, VmMigrating):
            raise
        except AgentError as error:
            log.info("the port of %s %s was not as this session knew it (%s); reading it",
                     vm_name, mac, error)
    port = await read_port(hv, vm_name, mac, policy)
    return Applied(*await apply(hv, port, wanted(port), security), read=True)


async def apply(hv: HyperV, port: Port, wanted: Sequence[AclSpec],
                security: PortSecurity | None) -> tuple[Port, AclChange]:
    """Change ``port`` as it was read to hold ``wanted`` (the agent's ACLs) and
    ``security`` (None: as it is): at most one remove call, one add call and, for a
    differing security setting, one modify call. The port afterwards, kept by the
    session, and the change. The session forgets the port when a call fails.

    A port read while its VM is being migrated live (``Port.migrating``) that needs a
    change raises ``vms.migrating_refusal`` before any call (Hyper-V would refuse it,
    32775, after a job wait, and a refusal seen once the move is done reads as the VM
    gone); one that holds what is wanted already is returned as it is, not kept. The
    plan is made first, so a rule set that cannot be placed says so all the same."""
    change = plan_change(port.acls, wanted)
    security = port.security if security is None else security
    if port.migrating:
        if not change.unchanged or port.security != security:
            raise vms.migrating_refusal(port.vm_name, _WHAT)
        return port, change
    try:
        added = await _instances(hv, change.add, security, port)
        if change.remove:
            await _remove(hv, change.remove)
        paths = await _add(hv, port.path, added) if added else ()
        modified = await _modify_security(hv, port, security)
    except AgentError as error:
        forget_vm(hv, port.vm_name)
        if isinstance(error, HyperVError):  # a VM being migrated live says so
            await vms.explain_refusal(hv, port.vm_guid, port.vm_name, _WHAT, error)
        raise
    after = _after(port, change, security, added, paths, modified)
    if after is None:
        forget_vm(hv, port.vm_name)
        return port, change
    remember(hv, after)
    return after, change


#: How ``vms.migrating_refusal`` names what ``apply`` does.
_WHAT = "the change of security group rules"


async def _call(hv: HyperV, method: str, params: dict[str, InValue]) -> None:
    await vms.call_service(hv, method, params)


async def _add(hv: HyperV, port: ObjectPath, features: Sequence[CimInstance]
               ) -> tuple[ObjectPath, ...]:
    async def add(batch: Sequence[CimInstance]) -> tuple[ObjectPath, ...]:
        result = await vms.call_service(hv, "AddFeatureSettings", {
            "AffectedConfiguration": port, "FeatureSettings": list(batch)})
        return result.paths("ResultingFeatureSettings")

    return tuple(await _batched(hv, "AddFeatureSettings", features, add))


async def _remove(hv: HyperV, instance_ids: Sequence[str]) -> None:
    async def remove(batch: Sequence[str]) -> tuple[()]:
        await _call(hv, "RemoveFeatureSettings",
                    {"FeatureSettings": [_acl_path(i) for i in batch]})
        return ()

    await _batched(hv, "RemoveFeatureSettings", instance_ids, remove)


_Item = TypeVar("_Item")
_Out = TypeVar("_Out")


async def _batched(hv: HyperV, method: str, items: Sequence[_Item],
                   send: Callable[[Sequence[_Item]], Awaitable[Sequence[_Out]]]
                   ) -> list[_Out]:
    """``send`` the items in order, all at once or in the batch size the session learnt
    for ``method``; a batch the host refuses as too large is sent again in halves (the
    size kept). What each batch returned, concatenated in order."""
    sizes = hv.kept(_Kept).batch_sizes
    out: list[_Out] = []
    start = 0
    while start < len(items):
        batch = items[start:start + sizes.get(method, len(items))]
        try:
            out.extend(await send(batch))
        except CimResponseTooLarge:
            if len(batch) == 1:
                raise
            sizes[method] = len(batch) // 2
            log.info("%s of %d features is larger than a request holds; sending %d at a "
                     "time", method, len(batch), sizes[method])
            continue
        start += len(batch)
    return out


async def _instances(hv: HyperV, placed: Sequence[PlacedAcl], security: PortSecurity,
                     port: Port) -> list[CimInstance]:
    """The feature instances to add: the placed ACLs, then a security setting when the
    port has none and the wanted one is not the class defaults."""
    instances = [await acl_instance(hv, one) for one in placed]
    if port.security_setting is None and security != CLASS_DEFAULT_SECURITY:
        instances.append(await security_instance(hv, security))
    return instances


async def _modify_security(hv: HyperV, port: Port, security: PortSecurity
                           ) -> CimInstance | None:
    """Change the port's existing security setting to ``security`` when it differs."""
    if port.security_setting is None or port.security == security:
        return None
    changed = port.security_setting.updated(_security_values(security))
    await _call(hv, "ModifyFeatureSettings", {"FeatureSettings": [changed]})
    return changed


def _after(port: Port, change: AclChange, security: PortSecurity,
           added: Sequence[CimInstance], paths: Sequence[ObjectPath],
           modified: CimInstance | None) -> Port | None:
    """The port after a change; None when the paths returned cannot be matched."""
    if len(paths) != len(added):
        return None
    removed = set(change.remove)
    acls = [acl for acl in port.acls if acl.instance_id not in removed]
    acls += [_placed_acl(one, path) for one, path in zip(change.add, paths, strict=False)]
    setting = modified or port.security_setting
    if setting is None and len(paths) > len(change.add):
        setting = dataclasses.replace(added[-1].updated(
            InstanceID=paths[-1].key("InstanceID")), path=paths[-1])
    return dataclasses.replace(port, acls=tuple(acls), security=security,
                               security_setting=setting)


def _placed_acl(placed: PlacedAcl, path: ObjectPath) -> PortAcl:
    spec = placed.spec
    return PortAcl(path.key("InstanceID"), spec.name, int(spec.direction), int(spec.action),
                   placed.weight, spec.protocol, spec.local_ip, spec.remote_ip,
                   spec.local_port, spec.remote_port, spec.stateful,
                   spec.idle_session_timeout_s)


def _acl_path(instance_id: str) -> ObjectPath:
    return ObjectPath.for_keys(Class.EXTENDED_ACL, NAMESPACE, InstanceID=instance_id)


# --- instances ----------------------------------------------------------------------------


async def acl_instance(hv: HyperV, placed: PlacedAcl) -> CimInstance:
    """The extended ACL ``placed`` as a new instance (1 spawn the first time); a host
    without the class: PortUnavailable."""
    spec = placed.spec
    return (await _spawned(hv, Class.EXTENDED_ACL)).updated(
        Name=spec.name, Direction=int(spec.direction), Action=int(spec.action),
        Protocol=spec.protocol, LocalIPAddress=spec.local_ip, RemoteIPAddress=spec.remote_ip,
        LocalPort=spec.local_port, RemotePort=spec.remote_port, Stateful=spec.stateful,
        IdleSessionTimeout=spec.idle_session_timeout_s, Weight=placed.weight)


async def security_instance(hv: HyperV, security: PortSecurity) -> CimInstance:
    """A new security setting saying ``security`` (1 spawn the first time)."""
    return (await _spawned(hv, Class.PORT_SECURITY)).updated(_security_values(security))


def _security_values(security: PortSecurity) -> dict[str, object]:
    return {"AllowMacSpoofing": security.allow_mac_spoofing,
            "EnableDhcpGuard": security.dhcp_guard, "EnableRouterGuard": security.router_guard}


async def _spawned(hv: HyperV, class_name: str) -> CimInstance:
    try:
        return await settings.spawned(hv, class_name)
    except CimInvalidClass:
        raise PortUnavailable(f"this host has no {class_name}: security groups need "
                              "Windows Server 2012 R2 or later") from None


# --- a new port ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """What a port holds from the moment it is made (``nics.add_nic``): the agent's ACLs
    and its security setting."""

    acls: tuple[AclSpec, ...]
    security: PortSecurity


@dataclass(frozen=True)
class NewPort:
    """A guard as features of a port that has none yet: its ACLs placed, and the
    instances to add (the ACLs, then the security setting unless it is the default)."""

    guard: Guard
    placed: tuple[PlacedAcl, ...]
    instances: tuple[CimInstance, ...]


async def new_port(hv: HyperV, guard: Guard) -> NewPort:
    """The features that give a new port ``guard`` (the classes are spawned the first
    time; a host without them: PortUnavailable; too many ACLs: InvalidRequest)."""
    placed = plan_change([], guard.acls).add
    empty = Port("", "", "", ObjectPath.for_keys(Class.EPASD, NAMESPACE), (),
                 CLASS_DEFAULT_SECURITY)
    return NewPort(guard, placed, tuple(await _instances(hv, placed, guard.security, empty)))


def added_to_port(hv: HyperV, vm: vms.VmRef, mac: str, port: ObjectPath, new: NewPort,
                  paths: Sequence[ObjectPath]) -> None:
    """Keep what ``new`` put on the new ``port`` of adapter ``mac`` (``paths``: the
    ResultingFeatureSettings of its instances, in order); no round trip."""
    empty = Port(vm.name, vm.guid, mac, port, (), CLASS_DEFAULT_SECURITY)
    change = AclChange((), new.placed, 0)
    after = _after(empty, change, new.guard.security, new.instances, paths, None)
    if after is not None:
        remember(hv, after)


# --- leftovers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Left:
    """The leftover ACLs of one VM that a sweep could not remove now, and why."""

    vm: str  # its name when it is on the host, else the GUID in their InstanceID
    count: int
    reason: str


@dataclass(frozen=True)
class CutShort:
    """Where a sweep ended because the host stopped answering: the VM whose leftovers it
    was removing (whether the host removed them before it went is not known), how many
    VMs' leftovers it had removed before, and the host's error."""

    vm: str  # as in ``Left``
    cleared: int
    error: str


@dataclass(frozen=True)
class Swept:
    """What ``sweep`` did: the number of ACLs removed, what it left, by VM, and where it
    ended when the host stopped answering part-way."""

    removed: int
    left: tuple[Left, ...] = ()
    cut_short: CutShort | None = None


async def sweep(hv: HyperV, listed: Iterable[vms.VmInfo] = (),
                policy: jobs.WaitPolicy = jobs.DEFAULT_POLICY) -> Swept:
    """Remove the agent's ACLs whose port no longer exists (Hyper-V removes a port's
    features with it; whatever it left behind goes). 2 queries at once, then 1 call + 1 W
    for each VM the leftovers are of; safe to repeat.

    ``listed``: the host's VMs as just listed (``vms.list_vms``). A leftover of a VM
    among them that Hyper-V is starting, stopping or saving takes no removal until that
    is done (32775): the change is waited out first, within ``policy`` (``power.settle``,
    + P gets). The leftovers of each VM are removed in a call of their own, so that one
    VM still changing after the wait, or whose removal the host refuses, keeps only its
    own: it is in ``left`` with the reason, and the next sweep, which reads the host
    afresh, tries them again. A host that does not answer (CimUnavailable) ends the
    sweep there: while removing a VM's leftovers, with what was removed until then and
    that VM in ``cut_short`` (the rest wait for the next sweep); before any removal (the
    queries, the waits), raised."""
    owned_query = wql.select(Class.EXTENDED_ACL, wql.starts_with("Name", NAME_PREFIX + "/"),
                             ("InstanceID",))
    port_query = wql.select(Class.EPASD, None, ("InstanceID",))
    owned, ports = await asyncio.gather(hv.cim.query(owned_query, NAMESPACE),
                                        hv.cim.query(port_query, NAMESPACE))
    live = {(p.string("InstanceID") or "").lower() for p in ports}
    by_owner: dict[str, list[str]] = {}
    for found in (acl.string("InstanceID") or "" for acl in owned):
        if not _under_any(found.lower(), live):
            by_owner.setdefault(vms.owner_guid(found), []).append(found)
    on_host = {vm.guid.upper(): vm for vm in listed}
    label = {guid: on_host[guid].name if guid in on_host else guid or "(no GUID)"
             for guid in by_owner}
    owners = sorted(by_owner, key=label.__getitem__)
    waits = await asyncio.gather(*(_settled(hv, on_host.get(guid), policy)
                                   for guid in owners))
    removed, cleared = 0, 0
    left: list[Left] = []
    for guid, unsettled in zip(owners, waits, strict=True):
        try:
            reason = unsettled or await _refused(_remove(hv, by_owner[guid]))
        except CimUnavailable as error:
            log.warning("the host stopped answering while the leftover ACLs of VM %s were "
                        "being removed, after those of %d VMs: %s", label[guid], cleared,
                        error)
            return Swept(removed, tuple(left), CutShort(label[guid], cleared, str(error)))
        if reason is None:
            removed += len(by_owner[guid])
            cleared += 1
            continue
        log.warning("%d leftover ACLs of VM %s are left for the next sweep: %s",
                    len(by_owner[guid]), label[guid], reason)
        left.append(Left(label[guid], len(by_owner[guid]), reason))
    return Swept(removed, tuple(left))


async def _settled(hv: HyperV, vm: vms.VmInfo | None, policy: jobs.WaitPolicy) -> str | None:
    """None once ``vm`` (None: not on the host) is in a steady state; else why not."""
    if vm is None or vm.changing is None:
        return None
    return await _refused(power.settle(hv, vms.VmRef(vm.guid, vm.name, vm.power, vm.changing),
                                       policy))


async def _refused(work: Awaitable[object]) -> str | None:
    """None once ``work`` is done; else why the host did not do it. A host that does not
    answer (CimUnavailable) is raised: it ends the sweep."""
    try:
        await work
    except CimUnavailable:
        raise
    except AgentError as error:
        return str(error)
    return None


def _under_any(instance_id: str, ports: set[str]) -> bool:
    """Whether ``instance_id`` extends the InstanceID of one of ``ports`` (lower case)."""
    parts = instance_id.split("\\")
    return any("\\".join(parts[:end]) in ports for end in range(1, len(parts)))
