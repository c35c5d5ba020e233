"""Security-group commands over HTTPS: a user VM started on a security-group network,
rule bodies shaped as CloudStack 4.22 writes them, and reachability asked of the emulated
switch (emulator/traffic.py)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, ObjectPath
from hyperv_agent.cloudstack import names
from hyperv_agent.emulator import traffic, vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.portacl import Packet
from tests.cloudstack.fixtures import ms422_json, sample_json
from tests.e2e.conftest import Running
from tests.emulator.kit import ok
from tests.emulator.portkit import ACL, Nic, acl, add_features, port_features, vm_with_nic

VM_NAME, VM_ID = "i-2-8-VM", 8
MAC = "02:00:4c:5f:00:08"
VM_IP = "10.1.1.80"
VM_IP6 = "2001:db8:1::80"
RULES, RULE_ANSWER = names.SECURITY_GROUP_RULES_CMD, names.SECURITY_GROUP_RULE_ANSWER
START, STOP = names.START_COMMAND, names.STOP_COMMAND
_VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
_STORE_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"


def start_body(running: Running, name: str = VM_NAME, *, ip6: str | None = None,
               security_groups: bool = True) -> dict[str, Any]:
    """A StartCommand of a user VM whose one NIC (``MAC``, ``VM_IP``) is on an untagged
    security-group network; its root volume is created in ``C:\\pool``."""
    body: dict[str, Any] = copy.deepcopy(sample_json("0005_StartCommand.json"))
    vm = body["vm"]
    vm["name"] = name
    vm["disks"] = vm["disks"][:1]
    root = vm["disks"][0]["data"][_VOLUME_TO]
    root["dataStore"][_STORE_TO]["path"] = "C:\\pool"
    root["uuid"] = f"root-of-{name}"
    folder = running.agent.config.agent.state_dir / "emulator" / "drives" / "C" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / f"{root['uuid']}.vhdx").exists():
        vhd.create(folder / f"{root['uuid']}.vhdx", vhd.DiskFormat.VHDX,
                   vhd.DiskType.DYNAMIC, 1 << 26)
    nic = vm["nics"][0]
    nic.pop("isSecurityGroupEnabled", None)
    nic.update({"mac": MAC, "ip": VM_IP, "broadcastType": "Native",
                "broadcastUri": "vlan://untagged", "isolationUri": "ec2://untagged",
                "securityGroupEnabled": security_groups})
    if ip6 is not None:
        nic["ip6address"] = ip6
    return body


def rules_body(seq: int = 1, *, ingress: list[dict[str, Any]] | None = None,
               egress: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    """Sample 50 (ingress icmp from 10.0.0.0/8 and tcp 22 from 192.168.1.0/24, egress tcp
    443 to 10.0.0.0/8) with ``seq`` and the changes given; the signature follows the rules
    as the MS's md5 of them would."""
    body: dict[str, Any] = copy.deepcopy(ms422_json("50_SecurityGroupRulesCmd.json"))
    body["seqNum"] = seq
    if ingress is not None:
        body["ingressRuleSet"] = ingress
    if egress is not None:
        body["egressRuleSet"] = egress
    body.update(fields)
    rules = repr((body["ingressRuleSet"], body["egressRuleSet"])).encode()
    body["signature"] = hashlib.md5(rules, usedforsecurity=False).hexdigest()
    return body


def rule(proto: str, start: int, end: int, *cidrs: str) -> dict[str, Any]:
    return {"proto": proto, "startPort": start, "endPort": end, "allowedCidrs": list(cidrs)}


async def started(running: Running, body: dict[str, Any] | None = None) -> None:
    key, answer = await running.answer(START, body or start_body(running))
    assert (key, answer["result"]) == (names.START_ANSWER, True), answer


async def send(running: Running, body: dict[str, Any]) -> dict[str, Any]:
    """The SecurityGroupRuleAnswer of ``body`` (asserting its class and echoed fields)."""
    key, answer = await running.answer(RULES, body)
    assert key == RULE_ANSWER, (key, answer)
    assert (answer["logSequenceNumber"], answer["vmId"]) == (body.get("seqNum", 0),
                                                             body.get("vmId", 0)), answer
    return answer


def reaches(running: Running, packet: Packet, vm: str = VM_NAME, mac: str = MAC) -> bool:
    """A conversation opened by ``packet`` works: it and its first reply pass the port."""
    return traffic.connects(running.emulator.host, vm, mac, packet)


def ssh(remote: str, local: str = VM_IP) -> Packet:
    return Packet.inbound("tcp", remote, local, local_port=22)


def https_to(remote: str, local: str = VM_IP) -> Packet:
    return Packet.outbound("tcp", local, remote, remote_port=443)


async def port_of(cim: EmulatorCim, vm: str = VM_NAME) -> ObjectPath:
    """The switch port of the VM's one adapter."""
    (found,) = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", vm)))
    (port,) = await cim.query(wql.select(
        "Msvm_EthernetPortAllocationSettingData",
        wql.starts_with("InstanceID", f"Microsoft:{found['Name']}")))
    assert port.path is not None
    return port.path


async def acls_of(cim: EmulatorCim, vm: str = VM_NAME) -> list[CimInstance]:
    return await port_features(cim, await port_of(cim, vm))


async def acl_state(cim: EmulatorCim, vm: str = VM_NAME) -> list[tuple[object, ...]]:
    """Every ACL of the port as stored (instance ids included), for "unchanged" checks."""
    return sorted((str(a["InstanceID"]), str(a["Name"]), a["Weight"], a["RemoteIPAddress"],
                   a["LocalPort"]) for a in await acls_of(cim, vm))


async def orphaned_acl(cim: EmulatorCim, vm: str = VM_NAME, mac: str = MAC) -> Nic:
    """A running VM with one of the agent's ACLs left without its port (the port gone,
    its feature left behind: a state no method of the seam reaches)."""
    nic = await vm_with_nic(cim, vm, mac)
    await ok(cim, await add_features(cim, nic.port, [await acl(
        cim, Name="cloudstack-sg/deny", Direction=1, Action=2, Weight=1)]))
    txn = cim.host.store.transaction()
    txn.delete(nic.port)
    txn.commit()
    return nic


async def left_of(cim: EmulatorCim, nic: Nic) -> list[CimInstance]:
    """The ACLs left of the port ``nic`` had (``orphaned_acl``)."""
    return await cim.query(wql.select(ACL, wql.starts_with("InstanceID",
                                                           nic.port.key("InstanceID"))))
