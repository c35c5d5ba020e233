"""hyperv.acls: a VM adapter's port read, and brought to the agent's ACLs in one diff; what
the session keeps of it; the guard a new NIC gets with its other features."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator import traffic
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.portacl import Packet
from hyperv_agent.errors import CimUnavailable
from hyperv_agent.hyperv import acls, build, nics, power, vms
from hyperv_agent.hyperv.acls import Guard, PortUnavailable
from hyperv_agent.hyperv.build import VmSpec
from hyperv_agent.hyperv.portacls import (
    CLASS_DEFAULT_SECURITY,
    AclSpec,
    Band,
    PortSecurity,
    TooManyAcls,
    plan_change,
)
from hyperv_agent.hyperv.schema import AclAction, AclDirection
from hyperv_agent.hyperv.session import HyperV
from tests.emulator.kit import ok
from tests.emulator.portkit import ACL, acl, add_features, remove_features, vm_with_nic
from tests.sessions import hv

IN, OUT = AclDirection.INCOMING, AclDirection.OUTGOING
ALLOW, DENY = AclAction.ALLOW, AclAction.DENY
MAC = "02004C5F0008"
VM_IP = "10.1.1.80"
SSH = AclSpec("ingress", IN, ALLOW, "TCP", remote_ip="192.168.1.0/24", local_port="22",
              stateful=True)
WEB = dataclasses.replace(SSH, local_port="80")
EGRESS = AclSpec("egress-open", OUT, ALLOW, "TCP", local_ip=VM_IP, stateful=True)
DENIES = (AclSpec("default-deny", IN, DENY), AclSpec("default-deny", OUT, DENY))
GUARDED = PortSecurity(allow_mac_spoofing=False, dhcp_guard=True, router_guard=True)


async def _vm(cim: EmulatorCim, name: str = "i-2-8-VM", guard: Guard | None = None,
              vlan: int | None = None, rate_mbps: int | None = None) -> vms.VmRef:
    """A running VM with one NIC ``MAC`` on the default switch."""
    session = hv(cim)
    vm = await build.define_vm(session, VmSpec(name=name, notes=(), generation=1, cpus=1,
                                               memory_mb=512))
    await nics.add_nic(session, vm, mac=MAC, switch_name="External", vlan=vlan,
                       rate_mbps=rate_mbps, name="eth0", guard=guard)
    await power.start(session, vm.guid)
    return vm


def _ssh(remote: str) -> Packet:
    return Packet.inbound("tcp", remote, VM_IP, local_port=22)


def _reaches(cim: EmulatorCim, packet: Packet, vm: str = "i-2-8-VM") -> bool:
    return traffic.connects(cim.host, vm, MAC, packet)


def _wanted(*specs: AclSpec) -> acls.Wanted:
    return lambda _port: specs


def _held(port: acls.Port | None) -> object:
    """What a port holds, for comparing a kept port with one read afresh."""
    assert port is not None
    return port.path, sorted(port.acls, key=lambda a: a.instance_id), port.security


def _fresh(cim: EmulatorCim) -> HyperV:
    """A session that knows nothing yet, as after an agent restart."""
    return HyperV(cim)


# --- reading ------------------------------------------------------------------------------


async def test_read_port_finds_the_adapter_by_mac_in_three_queries(emulator: EmulatorCim) -> None:
    await _vm(emulator)
    session = _fresh(emulator)
    before = emulator.round_trips()
    port = await acls.read_port(session, "i-2-8-VM", MAC)
    spent = emulator.round_trips() - before
    assert (spent.calls, spent["query"]) == (3, 3)
    assert port.mac == MAC and port.acls == () and port.security == CLASS_DEFAULT_SECURITY
    assert _held(acls.known_port(session, "i-2-8-VM", MAC)) == _held(port)


@pytest.mark.parametrize(("vm_name", "mac", "problem"), [
    ("i-9-9-VM", MAC, "no VM named 'i-9-9-VM'"),
    ("i-2-8-VM", "02004C5F0009", "no network adapter 02004C5F0009"),
])
async def test_read_port_says_what_is_missing_when_vm_or_adapter_is_unknown(
    emulator: EmulatorCim, vm_name: str, mac: str, problem: str,
) -> None:
    await _vm(emulator)
    with pytest.raises(PortUnavailable, match=problem):
        await acls.read_port(hv(emulator), vm_name, mac)


# --- changing -----------------------------------------------------------------------------


async def test_unknown_port_is_read_then_changed_with_one_add_call(emulator: EmulatorCim) -> None:
    await _vm(emulator)
    session = _fresh(emulator)  # as after a restart, once the service and classes are known
    await vms.management_service(session)
    await acls.security_instance(session, GUARDED)
    await acls.acl_instance(session, plan_change([], [SSH]).add[0])
    before = emulator.round_trips()
    applied = await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(SSH, EGRESS, *DENIES),
                                  GUARDED)
    spent = emulator.round_trips() - before
    assert applied.read and len(applied.change.add) == 4
    assert (spent.calls, spent.waits, spent["query"]) == (4, 1, 3)
    assert _reaches(emulator, _ssh("192.168.1.10"))
    assert not _reaches(emulator, _ssh("192.168.2.10"))
    assert (await acls.read_port(session, "i-2-8-VM", MAC)).security == GUARDED


async def test_known_port_changes_in_one_remove_and_one_add_without_reading(
    emulator: EmulatorCim,
) -> None:
    await _vm(emulator)
    session = hv(emulator)
    await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(SSH, EGRESS, *DENIES), GUARDED)
    before = emulator.round_trips()
    applied = await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(WEB, EGRESS, *DENIES),
                                  GUARDED)
    spent = emulator.round_trips() - before
    assert not applied.read
    assert (len(applied.change.remove), len(applied.change.add), applied.change.kept) == (1, 1, 3)
    assert (spent.calls, spent.waits) == (2, 2)
    assert spent["invoke:RemoveFeatureSettings"] == spent["invoke:AddFeatureSettings"] == 1
    assert _reaches(emulator, Packet.inbound("tcp", "192.168.1.10", VM_IP, local_port=80))
    assert not _reaches(emulator, _ssh("192.168.1.10"))
    assert _held(acls.known_port(session, "i-2-8-VM", MAC)) == _held(await acls.read_port(
        _fresh(emulator), "i-2-8-VM", MAC))


async def test_unchanged_port_costs_no_round_trip_when_the_session_knows_it(
    emulator: EmulatorCim,
) -> None:
    await _vm(emulator)
    session = hv(emulator)
    await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(SSH, *DENIES), GUARDED)
    before = emulator.round_trips()
    applied = await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(*DENIES, SSH), GUARDED)
    assert applied.change.unchanged and not applied.read
    assert (emulator.round_trips() - before).calls == 0


async def test_administrators_acl_stays_and_keeps_its_weight_when_the_agent_changes_its_own(
    emulator: EmulatorCim,
) -> None:
    await _vm(emulator)
    session = hv(emulator)
    await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(SSH, *DENIES), None)
    port = await acls.read_port(session, "i-2-8-VM", MAC)
    admin = await acl(emulator, Name="admin-block-smtp", Direction=2, Action=2,
                      Protocol="TCP", RemotePort="25", Weight=60000)
    await ok(emulator, await add_features(emulator, port.path, [admin]))
    await acls.bring_to(_fresh(emulator), "i-2-8-VM", MAC, _wanted(WEB, *DENIES), None)
    after = await acls.read_port(_fresh(emulator), "i-2-8-VM", MAC)
    assert [(a.name, a.weight) for a in after.acls if not a.owned] == [
        ("admin-block-smtp", 60000)]
    assert {a.name for a in after.owned} == {"cloudstack-sg/ingress", "cloudstack-sg/default-deny"}


async def test_change_is_planned_again_from_a_read_when_an_acl_went_behind_the_sessions_back(
    emulator: EmulatorCim,
) -> None:
    await _vm(emulator)
    session = hv(emulator)
    await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(SSH, WEB, *DENIES), None)
    port = acls.known_port(session, "i-2-8-VM", MAC)
    assert port is not None
    gone = next(a for a in port.acls if a.local_port == "80")
    await ok(emulator, await remove_features(emulator, [
        ObjectPath.for_keys(ACL, InstanceID=gone.instance_id)]))
    applied = await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(SSH, *DENIES), None)
    assert applied.read  # the remove of the vanished ACL failed: read, planned again
    after = await acls.read_port(_fresh(emulator), "i-2-8-VM", MAC)
    assert sorted(a.local_port for a in after.owned) == ["22", "ANY", "ANY"]


async def test_change_is_planned_again_when_an_administrator_took_the_weight_it_wanted(
    emulator: EmulatorCim,
) -> None:
    await _vm(emulator)
    session = hv(emulator)
    await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(*DENIES), None)
    port = acls.known_port(session, "i-2-8-VM", MAC)
    assert port is not None
    taken = await acl(emulator, Name="admin", Direction=1, Action=1, Protocol="TCP",
                      LocalPort="8080", Weight=Band.STATEFUL.weights[0])
    await ok(emulator, await add_features(emulator, port.path, [taken]))
    applied = await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(SSH, *DENIES), None)
    assert applied.read
    assert _reaches(emulator, _ssh("192.168.1.10"))


async def test_too_many_acls_change_nothing(emulator: EmulatorCim) -> None:
    await _vm(emulator)
    many = [dataclasses.replace(SSH, local_port=str(port)) for port in range(1, 29002)]
    with pytest.raises(TooManyAcls):
        await acls.bring_to(hv(emulator), "i-2-8-VM", MAC, _wanted(*many), None)
    assert (await acls.read_port(_fresh(emulator), "i-2-8-VM", MAC)).acls == ()


async def test_differing_security_setting_is_modified_in_one_more_call(
    emulator: EmulatorCim,
) -> None:
    await _vm(emulator)
    session = hv(emulator)
    await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(*DENIES), GUARDED)
    open_guards = PortSecurity(allow_mac_spoofing=False, dhcp_guard=False, router_guard=False)
    before = emulator.round_trips()
    await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(*DENIES), open_guards)
    spent = emulator.round_trips() - before
    assert (spent.calls, spent["invoke:ModifyFeatureSettings"]) == (1, 1)
    assert (await acls.read_port(_fresh(emulator), "i-2-8-VM", MAC)).security == open_guards


# --- what the session keeps ---------------------------------------------------------------


async def test_new_nic_gets_its_guard_in_the_add_call_of_its_features_and_is_known(
    emulator: EmulatorCim,
) -> None:
    session = hv(emulator)
    await _vm(emulator, "warm-up", Guard((SSH, *DENIES), GUARDED), vlan=262, rate_mbps=10)
    vm = await build.define_vm(session, VmSpec(name="i-2-8-VM", notes=(), generation=1,
                                               cpus=1, memory_mb=512))
    before = emulator.round_trips()
    await nics.add_nic(session, vm, mac=MAC, switch_name="External", vlan=261,
                       rate_mbps=100, name="eth0", guard=Guard((SSH, *DENIES), GUARDED))
    spent = emulator.round_trips() - before
    assert (spent.calls, spent.waits, spent["invoke:AddFeatureSettings"]) == (3, 3, 1)
    known = acls.known_port(session, "i-2-8-VM", MAC)
    assert _held(known) == _held(await acls.read_port(_fresh(emulator), "i-2-8-VM", MAC))
    assert known is not None and known.security == GUARDED and len(known.owned) == 3
    await power.start(session, vm.guid)
    assert not _reaches(emulator, Packet.inbound("tcp", "10.0.0.5", VM_IP, local_port=80))
    before = emulator.round_trips()
    await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(SSH, *DENIES), GUARDED)
    assert (emulator.round_trips() - before).calls == 0


async def test_kept_port_is_not_used_once_the_vm_is_re_created_under_its_name(
    emulator: EmulatorCim,
) -> None:
    session = hv(emulator)
    old = await _vm(emulator, guard=Guard((SSH, *DENIES), GUARDED))
    await vms.remove_vm(session, old.guid)
    assert acls.known_port(session, "i-2-8-VM", MAC) is None
    await _vm(emulator)
    assert acls.known_port(session, "i-2-8-VM", MAC) is None
    applied = await acls.bring_to(session, "i-2-8-VM", MAC, _wanted(SSH, *DENIES), None)
    assert applied.read and len(applied.change.add) == 3


async def test_forget_vm_drops_its_ports(emulator: EmulatorCim) -> None:
    session = hv(emulator)
    await _vm(emulator, guard=Guard((SSH, *DENIES), GUARDED))
    acls.forget_vm(session, "i-2-8-VM")
    assert acls.known_port(session, "i-2-8-VM", MAC) is None


async def test_sweep_finds_nothing_to_remove_when_every_acl_has_its_port(
    emulator: EmulatorCim,
) -> None:
    await _vm(emulator, guard=Guard((SSH, *DENIES), GUARDED))
    before = emulator.round_trips()
    assert await acls.sweep(hv(emulator)) == acls.Swept(0)
    assert (emulator.round_trips() - before).calls == 2


async def test_sweep_ends_when_the_host_does_not_answer(
    emulator: EmulatorCim, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A VM whose leftovers the host refuses is passed over (the next one is tried), but a
    host that does not answer would not answer for the next VM either: the sweep ends
    there, with the host's error and the VM it was at, instead of waiting the outage out
    once per VM."""
    guids = []
    for name, mac in (("i-2-5-VM", "02:00:4c:5f:00:05"), ("i-2-8-VM", "02:00:4c:5f:00:08")):
        nic = await vm_with_nic(emulator, name, mac)
        guids.append(nic.vm.key("Name").upper())
        await ok(emulator, await add_features(emulator, nic.port, [await acl(
            emulator, Name="cloudstack-sg/deny", Direction=1, Action=2, Weight=1)]))
        txn = emulator.host.store.transaction()  # the port gone, its ACL left behind
        txn.delete(nic.port)
        txn.commit()
    tried: list[str] = []

    async def out_of_reach(path: ObjectPath, method: str, params: Any = None) -> Any:
        tried.append(method)
        raise CimUnavailable("hv01:5986: cannot reach the WinRM service (refused)")

    session = hv(emulator)
    await vms.management_service(session)  # found before the outage
    monkeypatch.setattr(emulator, "invoke", out_of_reach)
    swept = await acls.sweep(session)
    assert tried == ["RemoveFeatureSettings"]
    assert (swept.removed, swept.left) == (0, ())
    assert swept.cut_short is not None
    assert (swept.cut_short.cleared, swept.cut_short.error) == (
        0, "hv01:5986: cannot reach the WinRM service (refused)")
    assert swept.cut_short.vm == min(guids)  # by GUID: no VM listed to name it
