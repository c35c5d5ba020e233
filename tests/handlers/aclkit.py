"""Security-group ACLs put on an emulated port with raw CIM calls, as a Hyper-V client
would put them: one RemoveFeatureSettings, one AddFeatureSettings (no hyperv/ layer)."""

from __future__ import annotations

from collections.abc import Sequence

from hyperv_agent.cim.api import CimInstance, ObjectPath
from hyperv_agent.cloudstack.objects import IpPortAndProto
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.handlers import sgrules
from hyperv_agent.hyperv import portacls
from hyperv_agent.hyperv.portacls import AclChange, PlacedAcl, PortAcl
from tests.emulator.kit import ok
from tests.emulator.portkit import ACL, SECURITY, Nic, add_features, port_features, remove_features


def rule(proto: str, start: int, end: int, *cidrs: str) -> IpPortAndProto:
    """One rule as the management server writes it."""
    return IpPortAndProto.model_validate(
        {"proto": proto, "startPort": start, "endPort": end, "allowedCidrs": list(cidrs)})


def port_acl(found: CimInstance) -> PortAcl:
    """An ACL read from the port, as the operation layer will hand it over."""
    return PortAcl(
        instance_id=str(found["InstanceID"]), name=str(found["Name"]),
        direction=int(found.integer("Direction") or 0), action=int(found.integer("Action") or 0),
        weight=int(found.integer("Weight") or 0), protocol=str(found["Protocol"]),
        local_ip=str(found["LocalIPAddress"]), remote_ip=str(found["RemoteIPAddress"]),
        local_port=str(found["LocalPort"]), remote_port=str(found["RemotePort"]),
        stateful=found["Stateful"] is True,
        idle_session_timeout_s=int(found.integer("IdleSessionTimeout") or 0),
        isolation_id=int(found.integer("IsolationID") or 0))


async def read_acls(cim: EmulatorCim, nic: Nic) -> list[PortAcl]:
    return [port_acl(found) for found in await port_features(cim, nic.port)]


async def instance(cim: EmulatorCim, placed: PlacedAcl) -> CimInstance:
    spec = placed.spec
    return (await cim.spawn(ACL)).updated(
        Name=spec.name, Direction=int(spec.direction), Action=int(spec.action),
        Protocol=spec.protocol, LocalIPAddress=spec.local_ip, RemoteIPAddress=spec.remote_ip,
        LocalPort=spec.local_port, RemotePort=spec.remote_port, Stateful=spec.stateful,
        IdleSessionTimeout=spec.idle_session_timeout_s, Weight=placed.weight)


async def apply(cim: EmulatorCim, nic: Nic, change: AclChange) -> None:
    """At most one remove call and one add call, each awaited."""
    if change.remove:
        await ok(cim, await remove_features(cim, [
            ObjectPath.for_keys(ACL, InstanceID=i) for i in change.remove]))
    if change.add:
        await ok(cim, await add_features(
            cim, nic.port, [await instance(cim, placed) for placed in change.add]))


async def secure(cim: EmulatorCim, nic: Nic, security: portacls.PortSecurity) -> None:
    setting = (await cim.spawn(SECURITY)).updated(
        AllowMacSpoofing=security.allow_mac_spoofing, EnableDhcpGuard=security.dhcp_guard,
        EnableRouterGuard=security.router_guard)
    await ok(cim, await add_features(cim, nic.port, [setting]))


async def program(cim: EmulatorCim, nic: Nic, ingress: Sequence[IpPortAndProto],
                  egress: Sequence[IpPortAndProto], ip: str | None = "10.1.1.80",
                  ip6: str | None = None, sec_ips: Sequence[str] = ()) -> AclChange:
    """Translate the rules for ``nic`` and bring its port to them; the change applied."""
    addresses = sgrules.nic_addresses(nic.mac, ip, ip6, sec_ips)
    wanted = sgrules.translate(ingress, egress, addresses).acls
    change = portacls.plan_change(await read_acls(cim, nic), wanted)
    await apply(cim, nic, change)
    return change
