"""Shared networks on private VLANs over real HTTPS (protocol §5.1): a StartCommand puts a
``pvlan://`` NIC's port on its isolated or community private VLAN, PvlanSetupCommand makes
the network's DHCP server promiscuous, and the emulated switch then keeps isolated VMs
apart while each reaches the DHCP server (emulator/traffic.py)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.emulator import traffic
from hyperv_agent.hyperv import nics, vms
from hyperv_agent.hyperv.schema import PvlanMode
from tests.e2e.conftest import Running, serving
from tests.e2e.test_start_command import _body
from tests.e2e.test_start_switch_choice import _host
from tests.e2e.test_vm_config_commands import GET, GET_ANSWER, MODIFY, PLUG, PLUG_ANSWER, _plug
from tests.e2e.test_vm_config_commands import _vm as _plain_vm
from tests.e2e.transitions_kit import STARTING, changing, slow
from tests.emulator.kit import ok, request_state
from tests.sessions import hv

START = "com.cloud.agent.api.StartCommand"
START_ANSWER = "com.cloud.agent.api.StartAnswer"
SETUP = "com.cloud.agent.api.PvlanSetupCommand"
ANSWER = "com.cloud.agent.api.Answer"
URI = "pvlan://100-i200"
DHCP_VM, DHCP_MAC = "i-2-30-VM", "02:00:51:2c:00:30"


def _start(running: Running, name: str, mac: str, uri: str = URI,
           label: str | None = None) -> dict[str, Any]:
    """Sample 0005's StartCommand with its one guest NIC on the shared network ``uri``, as
    the MS's NicTO names a private VLAN network, with the traffic label ``label``."""
    body = _body(running, name)
    nic = copy.deepcopy(body["vm"]["nics"][0])
    nic.update(mac=mac, broadcastType="Pvlan", broadcastUri=uri, isolationUri=uri,
               name=label)
    body["vm"]["nics"] = [nic]
    return body


def _setup(kind: str, op: str = "add", **fields: object) -> dict[str, Any]:
    """A PvlanSetupCommand as Gson writes it for the network pvlan://100-i200 (nulls left
    out): createVmSetup or createDhcpSetup."""
    body: dict[str, Any] = {"op": op, "primary": "100", "isolated": "200", "type": kind,
                            "networkTag": "External", "pvlanType": "I", "contextMap": {},
                            "wait": 0, "bypassHostMaintenance": False}
    if kind == "DHCP":
        body.update(dhcpName=DHCP_VM, dhcpMac=DHCP_MAC, dhcpIp="10.1.1.2")
    body.update(fields)
    return body


async def _started(running: Running, name: str, mac: str, uri: str = URI,
                   label: str | None = None) -> None:
    key, answer = await running.answer(START, _start(running, name, mac, uri, label))
    assert (key, answer["result"]) == (START_ANSWER, True), answer


async def _port(running: Running, name: str, mac: str) -> nics.Nic:
    found = await nics.find_by_mac(hv(running.emulator), mac)
    assert found is not None and found[0] == name
    return found[1]


async def test_isolated_vms_reach_the_promiscuous_dhcp_server_and_not_each_other(
    running: Running,
) -> None:
    vms = (("i-2-31-VM", "02:00:51:2c:00:31"), ("i-2-32-VM", "02:00:51:2c:00:32"))
    for name, mac in (*vms, (DHCP_VM, DHCP_MAC)):
        await _started(running, name, mac)
    isolated = nics.PrivateVlan(PvlanMode.ISOLATED, 100, (200,))
    assert (await _port(running, *vms[0])).private == isolated
    key, answer = await running.answer(SETUP, _setup("DHCP"))
    assert (key, answer["result"]) == (ANSWER, True), answer
    for _name, mac in vms:
        key, answer = await running.answer(SETUP, _setup("VM", vmMac=mac))
        assert (key, answer["result"]) == (ANSWER, True), answer
    assert (await _port(running, DHCP_VM, DHCP_MAC)).private == nics.PrivateVlan(
        PvlanMode.PROMISCUOUS, 100, (200,))
    host, dhcp = running.emulator.host, (DHCP_VM, DHCP_MAC)
    assert not traffic.reaches(host, vms[0], vms[1])
    assert not traffic.reaches(host, vms[1], vms[0])
    for vm in vms:
        assert traffic.reaches(host, vm, dhcp), traffic.reaches(host, vm, dhcp).reason
        assert traffic.reaches(host, dhcp, vm), traffic.reaches(host, dhcp, vm).reason


async def test_community_vms_reach_each_other_on_a_community_network(
    running: Running,
) -> None:
    vms = (("i-2-33-VM", "02:00:51:2c:00:33"), ("i-2-34-VM", "02:00:51:2c:00:34"))
    for name, mac in vms:
        await _started(running, name, mac, "pvlan://100-c300")
    assert (await _port(running, *vms[0])).private == nics.PrivateVlan(
        PvlanMode.COMMUNITY, 100, (300,))
    assert traffic.reaches(running.emulator.host, vms[0], vms[1])


async def test_start_fails_naming_the_uri_when_a_private_vlan_uri_is_malformed(
    running: Running,
) -> None:
    for number, (uri, says) in enumerate((
            ("pvlan://100-x200", "pvlan://<primary>-i<secondary>"),
            ("pvlan://100", "pvlan://<primary>-i<secondary>"),
            ("pvlan://100-i4095", "4095"), ("pvlan://100-i100", "primary"),
            ("pvlan://100-p100", "promiscuous"),
            ("pvlan://100-i\u00b2", "pvlan://<primary>-i<secondary>"),
            ("pvlan://100-i" + "2" * 5000, "(5000 digits) is outside 1..4094"))):
        key, answer = await running.answer(START, _start(running, f"i-2-{50 + number}-VM",
                                                         "02:00:51:2c:00:35", uri))
        assert (key, answer["result"]) == (START_ANSWER, False), uri
        assert says in answer["details"], (uri, answer["details"])
        assert await nics.find_by_mac(hv(running.emulator), "02:00:51:2c:00:35") is None


async def test_pvlan_setup_fails_in_its_answer_class_when_a_field_is_wrong(
    running: Running,
) -> None:
    await _started(running, "i-2-36-VM", "02:00:51:2c:00:36")
    before = (await _port(running, "i-2-36-VM", "02:00:51:2c:00:36")).private
    assert before == nics.PrivateVlan(PvlanMode.ISOLATED, 100, (200,))
    for body, says in (
        (_setup("VM"), "vmMac"),
        (_setup("VM", vmMac="02:00:51:2c:00:99"), "no VM on this host"),
        (_setup("VM", vmMac="02:00:51:2c:00:36", pvlanType="P"), "promiscuous"),
        (_setup("VM", vmMac="02:00:51:2c:00:36", pvlanType="X"), "pvlanType"),
        (_setup("VM", vmMac="02:00:51:2c:00:36", primary="vlan"), "VLAN ids"),
        (_setup("VM", vmMac="02:00:51:2c:00:36", isolated="100"), "primary"),
        (_setup("VM", op="remove", vmMac="02:00:51:2c:00:36"), "op"),
        (_setup("DHCP", dhcpMac=None), "dhcpMac"),
    ):
        key, answer = await running.answer(SETUP, {k: v for k, v in body.items()
                                                   if v is not None})
        assert (key, answer["result"]) == (ANSWER, False), body
        assert says in answer["details"], (says, answer["details"])
    assert (await _port(running, "i-2-36-VM", "02:00:51:2c:00:36")).private == before


async def test_pvlan_setup_names_a_huge_field_in_a_bounded_answer(running: Running) -> None:
    huge = "9" * 200_000
    for body, says in ((_setup("VM", op=huge, vmMac="02:00:51:2c:00:38"), "op"),
                       (_setup("VM", vmMac="02:00:51:2c:00:38", pvlanType=huge), "pvlanType"),
                       (_setup("VM", vmMac="02:00:51:2c:00:38", pvlanType="P", primary=huge,
                               isolated=huge), "promiscuous")):
        key, answer = await running.answer(SETUP, body)
        assert (key, answer["result"]) == (ANSWER, False), answer["details"][:200]
        assert says in answer["details"] and len(answer["details"]) < 1000, \
            answer["details"][:200]


async def test_pvlan_setup_delete_succeeds_when_the_vm_is_gone(running: Running) -> None:
    key, answer = await running.answer(SETUP, _setup("VM", op="delete",
                                                     vmMac="02:00:51:2c:00:37"))
    assert (key, answer["result"]) == (ANSWER, True), answer


async def test_pvlan_setup_delete_leaves_the_ports_of_a_vm_still_here_as_they_are(
    running: Running,
) -> None:
    """The MS sends op "delete" when a VM or the network's router stops (and after an
    UnPlugNic), while Hyper-V may still hold the VM: its port keeps its private VLAN,
    which goes with the VM, and the next start sets it again."""
    vm = ("i-2-41-VM", "02:00:51:2c:00:41")
    for name, mac in (vm, (DHCP_VM, DHCP_MAC)):
        await _started(running, name, mac)
    key, answer = await running.answer(SETUP, _setup("DHCP"))
    assert (key, answer["result"]) == (ANSWER, True), answer
    promiscuous = nics.PrivateVlan(PvlanMode.PROMISCUOUS, 100, (200,))
    isolated = nics.PrivateVlan(PvlanMode.ISOLATED, 100, (200,))
    for body in (_setup("DHCP", op="delete"), _setup("VM", op="delete", vmMac=vm[1])):
        key, answer = await running.answer(SETUP, body)
        assert (key, answer["result"]) == (ANSWER, True), answer
    assert (await _port(running, DHCP_VM, DHCP_MAC)).private == promiscuous
    assert (await _port(running, *vm)).private == isolated
    assert traffic.reaches(running.emulator.host, vm, (DHCP_VM, DHCP_MAC))


async def test_pvlan_setup_sent_after_a_start_puts_a_changed_port_back_on_its_vlan(
    running: Running,
) -> None:
    """The setup the MS sends for each user VM once it starts re-asserts the port: one
    whose private VLAN was taken off meanwhile (Set-VMNetworkAdapterVlan -Untagged) is
    put back, so the VM does not stay on the untagged network the MS does not know of."""
    vm = ("i-2-42-VM", "02:00:51:2c:00:42")
    await _started(running, *vm)
    await nics.set_vlan(hv(running.emulator), await _port(running, *vm), None)
    assert (await _port(running, *vm)).private is None
    key, answer = await running.answer(SETUP, _setup("VM", vmMac=vm[1]))
    assert (key, answer["result"]) == (ANSWER, True), answer
    assert (await _port(running, *vm)).private == nics.PrivateVlan(
        PvlanMode.ISOLATED, 100, (200,))


async def test_plug_nic_and_modify_vm_nic_config_put_a_nic_on_its_private_vlan(
    running: Running,
) -> None:
    cim = running.emulator
    await _plain_vm(running, "i-2-38-VM", generation=2)
    key, answer = await running.answer(PLUG, _plug(
        "i-2-38-VM", broadcastUri="pvlan://100-i200", broadcastType="Pvlan"))
    assert (key, answer["result"]) == (PLUG_ANSWER, True), answer
    plugged = await nics.find_by_mac(hv(cim), "02:00:4a:8e:00:21")
    assert plugged is not None
    assert plugged[1].private == nics.PrivateVlan(PvlanMode.ISOLATED, 100, (200,))
    _, answer = await running.answer(MODIFY, {
        "vmName": "i-2-38-VM", "vlan": "100-c300", "macAddress": "06A2C8000019", "index": 0,
        "enable": True, "contextMap": {}, "wait": 0})
    assert answer["result"] is True, answer
    spare = await _port(running, "i-2-38-VM", "06A2C8000019")
    assert spare.connected and spare.private == nics.PrivateVlan(
        PvlanMode.COMMUNITY, 100, (300,))
    _, answer = await running.answer(MODIFY, {
        "vmName": "i-2-38-VM", "vlan": "pvlan://100-q300", "macAddress": "06A2C8000019",
        "index": 0, "enable": True, "contextMap": {}, "wait": 0})
    assert answer["result"] is False and "pvlan://100-q300" in answer["details"], answer


async def test_pvlan_setup_for_a_vm_still_starting_waits_for_the_start(
    running: Running,
) -> None:
    """The MS sends the DHCP server's setup once its start is answered; on a slow host the
    router may still be starting, and Hyper-V changes no port of it meanwhile: the setup
    waits the start out, as the other NIC commands do, instead of failing."""
    await _started(running, DHCP_VM, DHCP_MAC)
    cim = running.emulator
    vm = await vms.find_vm(hv(cim), DHCP_VM)
    assert vm is not None
    await ok(cim, await request_state(cim, vm.path, 3))
    slow(running)
    await changing(cim, vm.path, 2, STARTING)
    key, answer = await running.answer(SETUP, _setup("DHCP"))
    assert (key, answer["result"]) == (ANSWER, True), answer
    assert (await _port(running, DHCP_VM, DHCP_MAC)).private == nics.PrivateVlan(
        PvlanMode.PROMISCUOUS, 100, (200,))


async def _vlan_ids(running: Running, name: str) -> list[str]:
    key, answer = await running.answer(GET, {"vmName": name, "contextMap": {}, "wait": 0})
    assert (key, answer["result"]) == (GET_ANSWER, True), answer
    return [nic["vlanid"] for nic in answer["nics"]]


async def test_get_vm_config_reports_a_private_vlan_nic_as_its_network_uri_value(
    running: Running,
) -> None:
    """The MS finds a router's NIC in GetVmConfigAnswer by comparing ``vlanid`` with
    BroadcastDomainType.getValue of the network's URI (getVmNics): "100-i200" for
    pvlan://100-i200. A private VLAN port read as untagged ("-1") would be taken for a
    spare, and the network's NIC never found; the value round-trips into
    ModifyVmNicConfig's ``vlan``."""
    await _started(running, "i-2-39-VM", "02:00:51:2c:00:39", "pvlan://100-c300")
    assert await _vlan_ids(running, "i-2-39-VM") == ["100-c300"]
    await _started(running, DHCP_VM, DHCP_MAC)
    assert await _vlan_ids(running, DHCP_VM) == ["100-i200"]
    key, answer = await running.answer(SETUP, _setup("DHCP"))
    assert (key, answer["result"]) == (ANSWER, True), answer
    assert await _vlan_ids(running, DHCP_VM) == ["100-i200"]  # promiscuous: the DHCP server
    _, answer = await running.answer(MODIFY, {
        "vmName": "i-2-39-VM", "vlan": "100-c300", "macAddress": "02:00:51:2c:00:39",
        "index": 0, "enable": True, "contextMap": {}, "wait": 0})
    assert answer["result"] is True, answer
    assert (await _port(running, "i-2-39-VM", "02:00:51:2c:00:39")).private == \
        nics.PrivateVlan(PvlanMode.COMMUNITY, 100, (300,))


@pytest.fixture
async def two_switches(tmp_path: Path) -> AsyncIterator[Running]:
    """A host with the External switch "Guest" and the Internal switch "Backup"."""
    async with serving(_host(tmp_path, ["Guest", "Backup"], {"Backup": "Internal"})) as running:
        yield running


async def test_pvlan_setup_fails_when_the_nic_is_not_on_the_switch_of_the_traffic_label(
    two_switches: Running,
) -> None:
    """``networkTag`` is the network's traffic label, the one StartCommand got as the
    NIC's ``name``: the NIC's port must be on the switch it names (the External one when
    it is absent). A private VLAN set on a port of another switch would isolate the VM on
    a network the MS did not mean, so the setup fails naming both and changes nothing."""
    running = two_switches
    await _started(running, DHCP_VM, DHCP_MAC)  # no label: on "Guest", the External one
    await _started(running, "i-2-40-VM", "02:00:51:2c:00:40", label="Backup")
    isolated = nics.PrivateVlan(PvlanMode.ISOLATED, 100, (200,))
    for body, says in (
        (_setup("DHCP", networkTag="Backup"), ("'Guest'", "'Backup'", "networkTag")),
        (_setup("DHCP", networkTag="Uplink"), ("'Uplink'", "no virtual switch", "'Backup'")),
        (_setup("VM", networkTag=None, vmMac="02:00:51:2c:00:40"),
         ("'Backup'", "'Guest'", "External")),
    ):
        key, answer = await running.answer(SETUP, {k: v for k, v in body.items()
                                                   if v is not None})
        assert (key, answer["result"]) == (ANSWER, False), body
        assert all(word in answer["details"] for word in says), (says, answer["details"])
    assert (await _port(running, DHCP_VM, DHCP_MAC)).private == isolated
    # the label names its switch without regard to case, as StartCommand reads it
    key, answer = await running.answer(SETUP, _setup("DHCP", networkTag="guest"))
    assert (key, answer["result"]) == (ANSWER, True), answer
    assert (await _port(running, DHCP_VM, DHCP_MAC)).private == nics.PrivateVlan(
        PvlanMode.PROMISCUOUS, 100, (200,))
    body = _setup("VM", vmMac="02:00:51:2c:00:40", networkTag="Backup")
    key, answer = await running.answer(SETUP, body)
    assert (key, answer["result"]) == (ANSWER, True), answer
