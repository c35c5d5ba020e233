"""Reachability of a VM's adapter, asked of the emulated host (emulator/traffic.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hyperv_agent.emulator import traffic
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.portacl import Packet
from tests.emulator.kit import ok, request_state, service
from tests.emulator.portkit import SECURITY, acl, add_features, modify_features, port_features
from tests.emulator.portkit import vm_with_nic as nic_of

VM = "10.1.1.80"
SSH = Packet.inbound("tcp", "192.168.1.10", VM, local_port=22)


async def test_everything_passes_when_the_running_vm_has_no_acl(emulator: EmulatorCim) -> None:
    nic = await nic_of(emulator)
    verdict = traffic.admits(emulator.host, nic.vm_name, nic.mac, SSH)
    assert verdict.passed, verdict.reason
    assert traffic.connects(emulator.host, nic.vm_name, "02-00-4C-5F-00-08", SSH)


async def test_nothing_passes_when_the_vm_is_off_or_the_port_disconnected(
    emulator: EmulatorCim,
) -> None:
    nic = await nic_of(emulator, running=False)
    verdict = traffic.admits(emulator.host, nic.vm_name, nic.mac, SSH)
    assert not verdict.passed and "not running" in verdict.reason
    await ok(emulator, await request_state(emulator, nic.vm, 2))
    assert traffic.admits(emulator.host, nic.vm_name, nic.mac, SSH)
    port = (await emulator.get(nic.port)).updated(HostResource=[])
    await ok(emulator, await emulator.invoke(await service(emulator), "ModifyResourceSettings",
                                             {"ResourceSettings": [port]}))
    verdict = traffic.admits(emulator.host, nic.vm_name, nic.mac, SSH)
    assert not verdict.passed and "not connected" in verdict.reason


async def test_ssh_reaches_the_vm_only_from_the_allowed_subnet_when_acls_say_so(
    emulator: EmulatorCim,
) -> None:
    nic = await nic_of(emulator)
    await ok(emulator, await add_features(emulator, nic.port, [
        await acl(emulator, Direction=1, Action=2, Weight=1),
        await acl(emulator, Direction=2, Action=2, Weight=1),
        await acl(emulator, Direction=1, Action=1, Protocol="TCP", LocalPort="22",
                  RemoteIPAddress="192.168.1.0/24", Stateful=True, Weight=10)]))
    host = emulator.host
    assert traffic.connects(host, nic.vm_name, nic.mac, SSH)
    outsider = Packet.inbound("tcp", "192.168.2.10", VM, local_port=22)
    assert not traffic.connects(host, nic.vm_name, nic.mac, outsider)
    assert not traffic.admits(host, nic.vm_name, nic.mac,
                              Packet.inbound("tcp", "192.168.1.10", VM, local_port=80))


async def test_outgoing_packet_is_dropped_when_its_source_mac_is_not_the_adapters(
    emulator: EmulatorCim,
) -> None:
    nic = await nic_of(emulator)
    forged = replace(Packet.outbound("udp", VM, "192.0.2.1", remote_port=53),
                     source_mac="02:00:00:00:00:99")
    verdict = traffic.admits(emulator.host, nic.vm_name, nic.mac, forged)
    assert not verdict.passed and "spoofing" in verdict.reason
    security = (await emulator.spawn(SECURITY)).updated(AllowMacSpoofing=True)
    await ok(emulator, await add_features(emulator, nic.port, [security]))
    assert traffic.admits(emulator.host, nic.vm_name, nic.mac, forged)


async def test_guards_drop_dhcp_offers_and_router_advertisements_from_the_vm(
    emulator: EmulatorCim,
) -> None:
    nic = await nic_of(emulator)
    offer = Packet.outbound("udp", VM, "255.255.255.255", remote_port=68, local_port=67)
    advert = replace(Packet.outbound("icmpv6", "fe80::1", "ff02::1"), icmp_type=134)
    solicit = replace(Packet.outbound("icmpv6", "fe80::1", "ff02::2"), icmp_type=133)
    host = emulator.host
    assert traffic.admits(host, nic.vm_name, nic.mac, offer)
    assert traffic.admits(host, nic.vm_name, nic.mac, advert)
    await ok(emulator, await add_features(emulator, nic.port, [
        (await emulator.spawn(SECURITY)).updated(EnableDhcpGuard=True, EnableRouterGuard=True)]))
    assert "DHCP guard" in traffic.admits(host, nic.vm_name, nic.mac, offer).reason
    assert "router guard" in traffic.admits(host, nic.vm_name, nic.mac, advert).reason
    assert traffic.admits(host, nic.vm_name, nic.mac, solicit)
    assert traffic.admits(host, nic.vm_name, nic.mac, offer.reply_to())  # DHCP to the VM
    security = (await port_features(emulator, nic.port, SECURITY))[0]
    await ok(emulator, await modify_features(emulator, [security.updated(EnableDhcpGuard=False)]))
    assert traffic.admits(host, nic.vm_name, nic.mac, offer)


async def test_lookup_fails_when_the_vm_or_adapter_is_unknown(emulator: EmulatorCim) -> None:
    nic = await nic_of(emulator)
    with pytest.raises(LookupError, match="named"):
        traffic.admits(emulator.host, "nobody", nic.mac, SSH)
    with pytest.raises(LookupError, match="no network adapter"):
        traffic.admits(emulator.host, nic.vm_name, "02:00:00:00:00:01", SSH)
