"""A VM's synthetic NICs: adding one, listing them, (dis)connecting their ports, setting
port VLANs.

A NIC is a ``Msvm_SyntheticEthernetPortSettingData``; its switch port is the
``Msvm_EthernetPortAllocationSettingData`` whose Parent is the NIC; the port's VLAN is
the ``Msvm_EthernetSwitchPortVlanSettingData`` whose InstanceID extends the port's.
Everything is found by the VM's InstanceID prefix (``Microsoft:<guid>\\``), never by
association walks. Round trips (W = job waits):

================  =====================================================================
``add_nic``       3 calls + 3 W with a VLAN, a bandwidth limit or port ACLs (one
                  AddFeatureSettings for all of them); 2 + 2 W without (warm: see
                  ``settings``)
``list_nics``     2 queries (NICs and ports in one, VLAN settings in the other)
``guest_addresses`` 3 queries: the VM, its NICs and what its guest reports of them,
                  sent at once when the session knows the VM's GUID; else the VM first
``generation``    1 query (the VM's settings)
``hot_pluggable`` 1 query (the VM's settings), +1 the first time for a session
``remove``        1 call + 1 W
``connect``       1 call + 1 W; +1 query when a switch is named or the port has none;
                  +1 query when the NIC has no port yet
``disconnect``    1 call + 1 W; nothing when the port is already disconnected
``set_vlan``      1 call + 1 W (+1 spawn when the port had no VLAN setting); nothing
                  when the VLAN is already as asked
``find_by_mac``   2 queries (+``list_nics``'s 2 when a VM has the MAC)
``wire``          ``set_vlan`` then ``connect``
``unwire``        ``disconnect`` then ``set_vlan``
``switch_name``   1 query (none for a port without a switch)
================  =====================================================================

Hyper-V cannot add or remove NICs of a running
generation 1 VM, so CloudStack wires pre-created spare ones there (protocol §9.4);
generation 2 VMs take and lose NICs while running from Windows Server 2016 on (a 2012 R2
host refuses, as for generation 1): ``hot_pluggable`` says which a VM is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, CimValue, ObjectPath
from hyperv_agent.errors import CimError, HyperVError, InvalidRequest
from hyperv_agent.hyperv import acls, settings, vms
from hyperv_agent.hyperv import host as hyperv_host
from hyperv_agent.hyperv.schema import (
    BITS_PER_MEGABIT,
    GENERATION_SUBTYPES,
    GUEST_NETWORK_ID,
    MAC_HEX_DIGITS,
    NAMESPACE,
    VLAN_ID_MAX,
    VLAN_ID_MIN,
    Class,
    EnabledState,
    PvlanMode,
    ResourceType,
    Subtype,
    VlanMode,
)
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.vms import VmRef


@dataclass(frozen=True)
class PrivateVlan:
    """A port on a private VLAN (OperationMode 3): isolated or community on ``primary``
    and its one secondary VLAN (``secondaries``), or promiscuous on ``primary`` for the
    secondary VLANs it lists. Isolated ports reach only promiscuous ports of their
    primary VLAN; community ports also reach their own community."""

    mode: PvlanMode
    primary: int
    secondaries: tuple[int, ...]

    def __str__(self) -> str:
        listed = ",".join(str(vlan) for vlan in self.secondaries)
        return f"{self.mode.name.lower()} private VLAN {self.primary}/{listed}"


#: What a port's VLAN setting puts it on: an access VLAN, or a private VLAN.
PortVlan = int | PrivateVlan


@dataclass(frozen=True)
class Nic:
    """One synthetic NIC of a VM, with its switch port and the port's VLAN setting."""

    mac: str  # 12 upper-case hex digits
    vlan: int | None  # the access VLAN; None when the port is untagged (or private)
    connected: bool  # the port is enabled (EnabledState 2) and points at a switch
    port: CimInstance | None  # None: the NIC has no port (never connected)
    vlan_setting: CimInstance | None
    setting: CimInstance  # the NIC's own Msvm_SyntheticEthernetPortSettingData
    private: PrivateVlan | None = None  # the port's private VLAN, when it is on one

    @property
    def path(self) -> ObjectPath:
        assert self.setting.path is not None  # listed NICs come with their path
        return self.setting.path

    @property
    def port_vlan(self) -> PortVlan | None:
        """The access or private VLAN the port is on; None when it is on neither."""
        return self.vlan if self.vlan is not None else self.private


async def list_nics(hv: HyperV, vm_guid: str) -> list[Nic]:
    """The VM's synthetic NICs in WMI's enumeration order, with MAC, VLAN and connection.

    Missing VM (or a VM without NICs): []. Read-only, safe to repeat; 2 queries sent at
    once, whatever the number of NICs.
    """
    prefix = wql.starts_with("InstanceID", f"Microsoft:{vm_guid}\\")
    kinds = wql.any_of("ResourceType", [int(ResourceType.ETHERNET_ADAPTER),
                                        int(ResourceType.ETHERNET_CONNECTION)])
    devices, vlans = await asyncio.gather(
        hv.cim.query(wql.select(Class.RASD_BASE, prefix & kinds), NAMESPACE),
        hv.cim.query(wql.select(Class.VLAN, prefix), NAMESPACE))
    ports = [d for d in devices if d.is_a(Class.EPASD)]
    return [_nic(nic, _port_of(nic, ports), vlans) for nic in devices
            if nic.is_a(Class.SEPSD) and nic.path is not None]


def _port_of(nic: CimInstance, ports: Sequence[CimInstance]) -> CimInstance | None:
    for port in ports:
        parent = port.string("Parent")
        if parent and nic.path is not None and ObjectPath.parse(parent) == nic.path:
            return port
    return None


def _nic(nic: CimInstance, port: CimInstance | None, vlans: Sequence[CimInstance]) -> Nic:
    setting = _vlan_of(port, vlans) if port is not None else None
    connected = port is not None and port.integer("EnabledState") == EnabledState.ENABLED \
        and bool(port.strings("HostResource"))
    return Nic((nic.string("Address") or "").upper(), _access_vlan(setting), connected, port,
               setting, nic, _private_vlan(setting))


def _vlan_of(port: CimInstance, vlans: Sequence[CimInstance]) -> CimInstance | None:
    prefix = (port.string("InstanceID") or "").lower() + "\\"
    return next((v for v in vlans if (v.string("InstanceID") or "").lower().startswith(prefix)),
                None)


def _access_vlan(setting: CimInstance | None) -> int | None:
    if setting is None or setting.integer("OperationMode") != VlanMode.ACCESS:
        return None
    vlan = setting.integer("AccessVlanId") or 0
    return vlan if vlan >= VLAN_ID_MIN else None


def _private_vlan(setting: CimInstance | None) -> PrivateVlan | None:
    if setting is None or setting.integer("OperationMode") != VlanMode.PRIVATE:
        return None
    try:
        mode = PvlanMode(setting.integer("PvlanMode") or 0)
    except ValueError:
        return None
    secondaries = (tuple(int(v) for v in setting.integers("SecondaryVlanIdArray"))
                   if mode is PvlanMode.PROMISCUOUS
                   else (setting.integer("SecondaryVlanId") or 0,))
    return PrivateVlan(mode, setting.integer("PrimaryVlanId") or 0, secondaries)


async def find_by_mac(hv: HyperV, mac: str) -> tuple[str, Nic] | None:
    """The VM (its name) that has a NIC with ``mac`` (any spelling ``normalize_mac``
    takes), and that NIC; None when no VM of the host has it. A snapshot's copy of a NIC
    is not a VM's. Read-only; 2 queries, +2 when a VM has the MAC."""
    address = normalize_mac(mac)
    found = await hv.cim.query(wql.select(Class.SEPSD, wql.eq("Address", address),
                                          ("InstanceID", "Address")), NAMESPACE)
    guids = sorted({guid for item in found
                    if (guid := vms.owner_guid(item.string("InstanceID") or ""))})
    if not guids:
        return None
    systems = await hv.cim.query(wql.select(Class.COMPUTER_SYSTEM, wql.any_of("Name", guids),
                                            ("Name", "ElementName")), NAMESPACE)
    for system in systems:
        guid, name = (system.string("Name") or "").upper(), system.string("ElementName")
        if guid not in guids or not name:
            continue
        nic = next((n for n in await list_nics(hv, guid) if n.mac == address), None)
        if nic is not None:
            return name, nic
    return None


# --- what the guest reports ------------------------------------------------------------


@dataclass(frozen=True)
class GuestNic:
    """One synthetic NIC of a VM and the addresses its guest reports on it."""

    mac: str  # 12 upper-case hex digits
    addresses: tuple[str, ...]  # IPv4 and IPv6, as Hyper-V lists them; () when none


async def guest_addresses(hv: HyperV, name: str) -> tuple[VmRef, list[GuestNic]] | None:
    """The VM called ``name`` and its synthetic NICs, each with the addresses its guest
    reports on it (Msvm_GuestNetworkAdapterConfiguration, which Hyper-V fills from the
    guest's data exchange (KVP) integration service while the VM runs: a VM that is off,
    a guest without the service, or one without an address yet, reports none).

    Missing VM: None. Read-only, safe to repeat; 3 queries, sent at once when the
    session knows the VM's GUID (``vms.known_guid``), else the VM's first and then the
    other two at once (also when the GUID known turns out stale).
    """
    known = vms.known_guid(hv, name)
    if known is None:
        vm = await vms.find_vm(hv, name)
        if vm is None:
            return None
        nics, configs = await _guest_reads(hv, vm.guid)
    else:
        vm, (nics, configs) = await asyncio.gather(vms.find_vm(hv, name),
                                                   _guest_reads(hv, known))
        if vm is None:
            return None
        if vm.guid.upper() != known.upper():
            nics, configs = await _guest_reads(hv, vm.guid)
    reported = {_adapter_of(c.string("InstanceID") or ""): c.strings("IPAddresses")
                for c in configs}
    return vm, [GuestNic((nic.string("Address") or "").upper(),
                         reported.get(_adapter_of(nic.string("InstanceID") or ""), ()))
                for nic in nics]


async def _guest_reads(hv: HyperV, vm_guid: str
                       ) -> tuple[list[CimInstance], list[CimInstance]]:
    """The VM's synthetic NICs and its guest network adapter configurations, at once."""
    nics = wql.select(Class.SEPSD, wql.starts_with("InstanceID", f"Microsoft:{vm_guid}\\"),
                      ("InstanceID", "Address"))
    configs = wql.select(Class.GUEST_NETWORK, wql.starts_with(
        "InstanceID", f"Microsoft:{GUEST_NETWORK_ID}\\{vm_guid}\\"), ("InstanceID", "IPAddresses"))
    found, reported = await asyncio.gather(hv.cim.query(nics, NAMESPACE),
                                           hv.cim.query(configs, NAMESPACE))
    return found, reported


def _adapter_of(instance_id: str) -> str:
    """``<VM GUID>\\<adapter>`` of a NIC's or its guest configuration's InstanceID, upper
    case, so the two match."""
    _, _, rest = instance_id.partition(":")
    head, separator, tail = rest.partition("\\")
    if separator and head.casefold() == GUEST_NETWORK_ID.casefold():
        rest = tail
    return rest.upper()


# --- adding a NIC --------------------------------------------------------------------------


@dataclass(frozen=True)
class NicRef:
    """A synthetic NIC, its switch port and the port features added with it."""

    nic: ObjectPath
    port: ObjectPath
    mac: str  # 12 upper-case hex digits
    features: tuple[ObjectPath, ...]


def normalize_mac(mac: str) -> str:
    """``mac`` as 12 upper-case hex digits (':' and '-' dropped); InvalidRequest if not."""
    digits = mac.replace(":", "").replace("-", "").upper()
    if len(digits) != MAC_HEX_DIGITS or any(c not in "0123456789ABCDEF" for c in digits):
        raise InvalidRequest(f"MAC address {mac[:40]!r} is not {MAC_HEX_DIGITS} hex digits")
    return digits


def static_mac(mac: str) -> str:
    """``mac`` as ``normalize_mac`` gives it, when a NIC can have it as its static MAC: a
    unicast address. A group address (the low bit of the first octet set: multicast,
    broadcast ff:ff:ff:ff:ff:ff), which Hyper-V refuses as a static MAC, or all zeros:
    InvalidRequest."""
    digits = normalize_mac(mac)
    if int(digits[:2], 16) & 1:
        raise InvalidRequest(f"MAC address {mac[:40]!r} is a multicast (group) address; a "
                             "network adapter takes only a unicast MAC")
    if not int(digits, 16):
        raise InvalidRequest(f"MAC address {mac[:40]!r} is all zeros, the address of no "
                             "network adapter")
    return digits


async def add_nic(
    hv: HyperV, vm: VmRef, *, mac: str, switch_name: str, vlan: PortVlan | None,
    rate_mbps: int | None, name: str, connected: bool = True, guard: acls.Guard | None = None,
) -> NicRef:
    """Add a synthetic NIC with a static MAC, connected to the vSwitch ``switch_name``.

    ``mac`` takes 12 hex digits with or without ':'/'-'. With ``vlan`` the port is in
    access mode on that VLAN, or on that private VLAN; with ``rate_mbps`` its bandwidth
    Limit is rate × 10^6.
    Without ``connected`` the port names the switch but is disabled (EnabledState 3), so
    the NIC carries no traffic until it is connected (a spare NIC); it takes no VLAN.
    With ``guard`` the port gets its extended ACLs and security setting in the same call as
    its VLAN and bandwidth, so the NIC never carries traffic without them (the session
    keeps the port, ``acls``); a host without extended ACLs: PortUnavailable, nothing
    created.
    Generation 1 VMs take new NICs only while off; generation 2 VMs also while running,
    on Windows Server 2016 and later (``hot_pluggable``).
    An invalid or multicast MAC, VLAN or rate or an unknown switch: InvalidRequest,
    nothing created.
    Missing VM, or a running VM that cannot take the NIC: HyperVError. Not idempotent: a
    repeat adds another NIC. Afterwards the NIC has its port and features. If the port or
    its features fail, the NIC (and its port) is removed again. 3 calls + 3 W when warm
    (2 + 2 W when no VLAN, no rate and no guard are given).
    """
    address = _check_nic(mac, vlan, rate_mbps, name)
    if vlan is not None and not connected:
        raise InvalidRequest("a disconnected (spare) network adapter takes no VLAN")
    guarded = await acls.new_port(hv, guard) if guard is not None else None
    switch = await settings.switch_path(hv, switch_name)
    template = await settings.default_setting(hv, Class.SEPSD, Subtype.NIC)
    setting = template.updated(ElementName=name, Address=address, StaticMacAddress=True,
                               VirtualSystemIdentifiers=[f"{{{uuid.uuid4()}}}"])
    nic = await settings.step("adding the network adapter",
                              settings.add_setting(hv, vm, setting))
    port = await settings.step(f"connecting the network adapter to {switch_name!r}",
                       _connect(hv, vm, nic, switch, name, connected), _forget_switch_then(
                           hv, switch_name, lambda: settings.remove_settings(hv, [nic])))
    what = "VLAN and bandwidth" if guarded is None else "VLAN, bandwidth and ACLs"
    features = await settings.step(f"setting the port's {what}",
                           _add_features(hv, port, vlan, rate_mbps, guarded),
                           lambda: settings.remove_settings(hv, [port, nic]))
    if guarded is not None:
        acls.added_to_port(hv, vm, address, port, guarded,
                           features[len(features) - len(guarded.instances):])
    return NicRef(nic, port, address, features)


def check_vlan(vlan: int) -> int:
    """``vlan`` when a port can be in access mode on it (``VLAN_ID_MIN``..``VLAN_ID_MAX``;
    0 means no VLAN to Hyper-V, which refuses it as an AccessVlanId); else
    InvalidRequest naming it."""
    if not VLAN_ID_MIN <= vlan <= VLAN_ID_MAX:
        raise InvalidRequest(f"VLAN {vlan} is outside {VLAN_ID_MIN}..{VLAN_ID_MAX}")
    return vlan


def is_vlan_text(text: str) -> bool:
    """Whether ``text`` is written as the management server writes a VLAN id: ASCII
    decimal digits only. Python's ``isdigit`` also takes other scripts' digits, which
    ``int`` reads as a number nobody wrote, and superscripts, which it refuses."""
    return text.isascii() and text.isdigit()


def vlan_of_text(text: str) -> int:
    """The VLAN ``text`` (``is_vlan_text``) names, when a port can be in access mode on
    it (``check_vlan``); else InvalidRequest quoting at most 40 of its digits. A number
    with more digits than any VLAN id is refused before it is read (Python refuses to
    read one of more than 4300 digits)."""
    if not is_vlan_text(text):
        raise InvalidRequest(f"VLAN {text[:40]!r} is not a VLAN id (decimal digits)")
    if len(text.lstrip("0")) > len(str(VLAN_ID_MAX)):
        shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text)} digits)"
        raise InvalidRequest(f"VLAN {shown} is outside {VLAN_ID_MIN}..{VLAN_ID_MAX}")
    return check_vlan(int(text))


def check_port_vlan(vlan: PortVlan) -> PortVlan:
    """``vlan`` when a port can be put on it: an access VLAN as ``check_vlan`` takes it,
    or a private VLAN as Set-VMNetworkAdapterVlan documents one (a primary VLAN; one
    secondary for isolated and community ports, at least one for promiscuous ones; none
    of them the primary); else InvalidRequest naming what is wrong."""
    if isinstance(vlan, int):
        return check_vlan(vlan)
    check_vlan(vlan.primary)
    single = vlan.mode is not PvlanMode.PROMISCUOUS
    if (single and len(vlan.secondaries) != 1) or not vlan.secondaries:
        raise InvalidRequest(f"a {vlan.mode.name.lower()} private VLAN port needs "
                             f"{'one secondary VLAN' if single else 'its secondary VLANs'}")
    for secondary in vlan.secondaries:
        check_vlan(secondary)
        if secondary == vlan.primary:
            raise InvalidRequest(f"secondary VLAN {secondary} is the primary VLAN of the "
                                 "private VLAN")
    return vlan


def vlan_values(vlan: PortVlan) -> dict[str, CimValue]:
    """The Msvm_EthernetSwitchPortVlanSettingData properties that put a port on ``vlan``,
    with those of the other modes at their class defaults (a modified setting keeps none
    of its former mode)."""
    if isinstance(vlan, int):
        return {**_VLAN_DEFAULTS, "OperationMode": int(VlanMode.ACCESS), "AccessVlanId": vlan}
    promiscuous = vlan.mode is PvlanMode.PROMISCUOUS
    return {**_VLAN_DEFAULTS, "OperationMode": int(VlanMode.PRIVATE),
            "PvlanMode": int(vlan.mode), "PrimaryVlanId": vlan.primary,
            "SecondaryVlanId": 0 if promiscuous else vlan.secondaries[0],
            "SecondaryVlanIdArray": vlan.secondaries if promiscuous else ()}


_VLAN_DEFAULTS: dict[str, CimValue] = {
    "AccessVlanId": 0, "PvlanMode": 0, "PrimaryVlanId": 0, "SecondaryVlanId": 0,
    "SecondaryVlanIdArray": ()}


def _check_nic(mac: str, vlan: PortVlan | None, rate_mbps: int | None, name: str) -> str:
    """The MAC as 12 upper-case hex digits; InvalidRequest for any bad argument."""
    address = static_mac(mac)
    if vlan is not None:
        check_port_vlan(vlan)
    if rate_mbps is not None and rate_mbps < 1:
        raise InvalidRequest(f"network rate {rate_mbps} Mbps is not positive")
    if not name.strip():
        raise InvalidRequest("the network adapter needs a name")
    return address


def _forget_switch_then(hv: HyperV, switch_name: str, undo: settings.Undo) -> settings.Undo:
    """``undo``, after dropping the cached switch path (it may be stale)."""
    async def forget() -> object:
        settings.forget_switch(hv, switch_name)
        return await undo()
    return forget


async def _connect(hv: HyperV, vm: VmRef, nic: ObjectPath, switch: ObjectPath,
                   name: str, enabled: bool) -> ObjectPath:
    template = await settings.default_setting(hv, Class.EPASD, Subtype.PORT)
    state = EnabledState.ENABLED if enabled else EnabledState.DISABLED
    port = template.updated(Parent=str(nic), HostResource=[str(switch)], ElementName=name,
                            EnabledState=int(state))
    return await settings.add_setting(hv, vm, port)


async def _add_features(hv: HyperV, port: ObjectPath, vlan: PortVlan | None,
                        rate_mbps: int | None, guarded: acls.NewPort | None
                        ) -> tuple[ObjectPath, ...]:
    """One AddFeatureSettings: the VLAN, the bandwidth, then the guard's ACLs and
    security setting (the order ``acls.added_to_port`` reads the resulting paths in)."""
    features: list[CimInstance] = []
    if vlan is not None:
        features.append((await settings.spawned(hv, Class.VLAN)).updated(vlan_values(vlan)))
    if rate_mbps is not None:
        features.append((await settings.spawned(hv, Class.BANDWIDTH)).updated(
            Limit=rate_mbps * BITS_PER_MEGABIT))
    features += guarded.instances if guarded is not None else ()
    if not features:
        return ()
    result = await vms.call_service(hv, "AddFeatureSettings",
                         {"AffectedConfiguration": port, "FeatureSettings": features})
    return result.paths("ResultingFeatureSettings")


# --- changing a NIC -----------------------------------------------------------------------


async def connect(hv: HyperV, nic: Nic, switch_name: str | None) -> Nic:
    """Connect the NIC's port to the vSwitch ``switch_name`` (or keep its switch); the NIC
    as it is afterwards.

    With no name the port keeps the switch it points at, or, when it points at none, the
    host's External switch is taken (``host.external_switch``; none: InvalidRequest). A
    NIC without a port gets one. An unknown switch:
    InvalidRequest, nothing changed. Safe to repeat: afterwards the port is enabled
    (EnabledState 2) on that switch; its VLAN is left as it was. On failure Hyper-V has
    changed nothing. 1 call + 1 W (+``external_switch``'s queries for a default switch,
    +1 query for a named or default switch or the port template the first time; both
    are kept by the session for ``settings``).
    """
    switch, name = await _switch_for(hv, nic.port, switch_name)
    if nic.port is None:
        return dataclasses.replace(nic, port=await _add_port(hv, nic, switch), connected=True)
    changed = nic.port.updated(EnabledState=int(EnabledState.ENABLED),
                               HostResource=[str(switch)])
    if name and "LastKnownSwitchName" in changed:
        changed = changed.updated(LastKnownSwitchName=name)
    await _modify(hv, changed)
    return dataclasses.replace(nic, port=changed, connected=True)


async def _add_port(hv: HyperV, nic: Nic, switch: ObjectPath) -> CimInstance:
    template = await settings.default_setting(hv, Class.EPASD, Subtype.PORT)
    port = template.updated(Parent=str(nic.path), HostResource=[str(switch)],
                            EnabledState=int(EnabledState.ENABLED))
    vm_guid = (nic.setting.string("InstanceID") or "").partition(":")[2].partition("\\")[0]
    result = await vms.call_service(hv, "AddResourceSettings", {
        "AffectedConfiguration": vms.vm_path(vm_guid), "ResourceSettings": [port]})
    paths = result.paths("ResultingResourceSettings")
    if not paths:
        raise HyperVError("AddResourceSettings returned no ResultingResourceSettings")
    return dataclasses.replace(port, path=paths[0])


async def disconnect(hv: HyperV, nic: Nic) -> None:
    """Disable the NIC's port (EnabledState 3), so it carries no traffic.

    A NIC without a port, or with a disabled one, is left alone (a repeat is safe).
    Afterwards the port is disabled; its switch and VLAN settings are kept. On failure
    Hyper-V has changed nothing. 1 call + 1 W; none when there is nothing to do.
    """
    if nic.port is None or nic.port.integer("EnabledState") == EnabledState.DISABLED:
        return
    await _modify(hv, nic.port.updated(EnabledState=int(EnabledState.DISABLED)))


async def set_vlan(hv: HyperV, nic: Nic, vlan: PortVlan | None) -> None:
    """Put the NIC's port in access mode on ``vlan``, or on that private VLAN; with None
    remove its VLAN setting.

    A VLAN ``check_port_vlan`` refuses: InvalidRequest, nothing changed. A NIC without a
    port: HyperVError (with None: nothing to do). Safe to repeat: a port already as
    asked is left alone. On failure Hyper-V has changed nothing. 1 call + 1 W (+1 spawn
    when the port had no VLAN setting).
    """
    if vlan is not None:
        check_port_vlan(vlan)
    if vlan == nic.port_vlan and (vlan is not None or nic.vlan_setting is None):
        return
    if vlan is None:
        assert nic.vlan_setting is not None and nic.vlan_setting.path is not None
        await vms.call_service(hv, "RemoveFeatureSettings",
                               {"FeatureSettings": [nic.vlan_setting.path]})
        return
    values = vlan_values(vlan)
    if nic.vlan_setting is not None:
        await vms.call_service(hv, "ModifyFeatureSettings",
                               {"FeatureSettings": [nic.vlan_setting.updated(values)]})
        return
    port = _require_port(nic)
    assert port.path is not None
    setting = (await hv.cim.spawn(Class.VLAN, NAMESPACE)).updated(values)
    await vms.call_service(hv, "AddFeatureSettings",
                           {"AffectedConfiguration": port.path, "FeatureSettings": [setting]})


async def wire(hv: HyperV, nic: Nic, switch_name: str | None, vlan: PortVlan | None) -> None:
    """Put the NIC's port on ``vlan`` (None: untagged) and connect it to ``switch_name``
    (``connect`` chooses the switch), the VLAN first: the port never carries traffic on
    the untagged network or its former VLAN, and when connecting fails it is left
    disconnected on the new VLAN. A NIC without a port is connected first, then given
    its VLAN. Safe to repeat. ``set_vlan``'s round trips, then ``connect``'s.
    """
    if nic.port is None:
        await set_vlan(hv, await connect(hv, nic, switch_name), vlan)
        return
    await set_vlan(hv, nic, vlan)
    await connect(hv, nic, switch_name)


async def unwire(hv: HyperV, nic: Nic) -> None:
    """Disconnect the NIC's port, then remove its VLAN: the port never carries traffic
    untagged, and when disconnecting fails it keeps its VLAN. Safe to repeat.
    ``disconnect``'s round trips, then ``set_vlan``'s."""
    await disconnect(hv, nic)
    await set_vlan(hv, nic, None)


async def switch_name(hv: HyperV, nic: Nic) -> str | None:
    """The ElementName of the vSwitch the NIC's port points at (connected or not); None
    when it has no port, points at none, or at a switch since removed. Read-only; 1
    query (none without a switch)."""
    current = nic.port.strings("HostResource") if nic.port is not None else ()
    if not current or not current[0]:
        return None
    try:
        guid = ObjectPath.parse(current[0]).key("Name")
    except CimError:  # not a switch's path: no switch
        return None
    query = wql.select(Class.SWITCH, wql.eq("Name", guid), ("Name", "ElementName"))
    found = [s.string("ElementName") for s in await hv.cim.query(query, NAMESPACE)]
    return next((name for name in found if name), None)


def _require_port(nic: Nic) -> CimInstance:
    if nic.port is None or nic.port.path is None:
        raise HyperVError(f"the network adapter {nic.mac} has no switch port to change")
    return nic.port


async def _switch_for(hv: HyperV, port: CimInstance | None,
                      name: str | None) -> tuple[ObjectPath, str | None]:
    """The switch to connect to and its name (None when the port keeps its switch)."""
    current = port.strings("HostResource") if port is not None else ()
    if not name and current and current[0]:
        return ObjectPath.parse(current[0]), None
    if name:
        return await settings.switch_path(hv, name), name
    chosen = await hyperv_host.external_switch(hv)
    return await settings.switch_path(hv, chosen), chosen


async def _modify(hv: HyperV, setting: CimInstance) -> None:
    await vms.call_service(hv, "ModifyResourceSettings", {"ResourceSettings": [setting]})




async def generation(hv: HyperV, vm_guid: str) -> int:
    """The VM's generation (1 or 2); 1 query, read-only.

    Missing VM: HyperVError. Hosts older than 2012 R2 name no generation: 1.
    """
    query = wql.select(Class.VSSD, wql.eq("InstanceID", f"Microsoft:{vm_guid}"),
                       ("InstanceID", "VirtualSystemSubType"))
    found = await hv.cim.query(query, NAMESPACE)
    if not found:
        raise HyperVError(f"there is no VM {vm_guid}")
    subtype = (found[0].string("VirtualSystemSubType") or "").lower()
    return next((number for number, name in GENERATION_SUBTYPES.items()
                 if name.lower() == subtype), 1)


async def hot_pluggable(hv: HyperV, vm_guid: str) -> bool:
    """Whether the VM takes and loses NICs while it runs: generation 2 on a host of
    Windows Server 2016 or later. Read-only; 1 query (+1 the first time for a session).

    Missing VM: HyperVError.
    """
    return await generation(hv, vm_guid) == 2 and await hyperv_host.hot_adds_nics(hv)


async def remove(hv: HyperV, nic: Nic) -> None:
    """Remove the NIC and its switch port (and the port's features) from its VM.

    Generation 1 VMs (and all VMs of a host older than Windows Server 2016) lose NICs only
    while off; a running one: HyperVError (MethodFailed or JobFailed) with nothing
    changed. A NIC already gone: HyperVError, nothing changed.
    Afterwards the VM no longer has the NIC. 1 call + 1 W.
    """
    await vms.call_service(hv, "RemoveResourceSettings", {"ResourceSettings": [nic.path]})
