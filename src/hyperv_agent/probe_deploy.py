"""``hyperv-agent probe URL --deploy``: a whole deployment, played as the management server
plays it, one timed line per step.

Register the host, copy a template from a cifs image store to the host's local pool, make
a root volume from it, start a VM on it, see the VM in the state report and the VM
statistics, stop it, delete the volume. With ``security_groups`` the VM's NIC is on a
security-group network and, once it runs, gets rules as the MS programs them: applied,
re-sent, and a malformed rule refused with the reason the MS reads. Bodies are raw JSON in
the management server's shapes, so the run works against any Hyper-V agent. Out of the box
it targets ``serve`` on the emulator, whose default image store holds a small template for
the purpose.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from hyperv_agent.probe import (
    JsonObject,
    Prober,
    ProbeReport,
    require,
    startup_request,
    wrapped,
)

PRIMARY_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
TEMPLATE_TO = "org.apache.cloudstack.storage.to.TemplateObjectTO"
VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
NFS_TO = "com.cloud.agent.api.to.NfsTO"
COPY = "org.apache.cloudstack.storage.command.CopyCommand"
COPY_ANSWER = "org.apache.cloudstack.storage.command.CopyCmdAnswer"
DEFAULT_TEMPLATE = "template/tmpl/1/1/hyperv-agent-probe.vhdx"
VM_RAM_BYTES = 256 * 1024 * 1024
PROBE_VNC_PASSWORD = "probe-vnc-Xk3p9"  # noqa: S105 - a marker, checked not to come back
# What the MS sends for every VM without an ISO: an ISO disk naming no ISO.
EMPTY_ISO_DISK = {"data": {"org.apache.cloudstack.storage.to.TemplateObjectTO": {
    "id": 0, "format": "ISO", "accountId": 0, "hvm": False, "bootable": False}},
    "diskSeq": 3, "type": "ISO"}
VM_IP, VM_MAC = "10.1.1.67", "02:00:51:2c:90:01"
SG_RULES = "com.cloud.agent.api.SecurityGroupRulesCmd"
SG_ANSWER = "com.cloud.agent.api.SecurityGroupRuleAnswer"
VM_STATS_FIELDS = ("cpuUtilization", "numCPUs", "diskReadIOs", "diskWriteIOs",
                   "diskReadKBs", "diskWriteKBs", "memoryKBs")


@dataclass
class DeployPlan:
    """What to deploy: the image store, the template on it, the VM's name."""

    secondary_url: str | None = None  # default: cifs://<host name>/secondary
    template_path: str = DEFAULT_TEMPLATE
    vm_name: str = "i-2-9001-VM"
    security_groups: bool = False  # the NIC on a security-group network, rules programmed


class Deployer(Prober):
    """The register-to-delete sequence; each step needs the ones before it to have passed."""

    def __init__(self, *args: Any, plan: DeployPlan, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.pool: JsonObject = {}
        self.host_name = ""
        self.template_path = ""
        self.template_format = "VHDX"
        self.volume_uuid = str(uuid.uuid4())
        self.volume: JsonObject = {}

    # --- steps ----------------------------------------------------------------------------

    async def register(self) -> str:
        await self.ready()
        status, data = await self.post("com.cloud.agent.api.StartupCommand",
                                       startup_request(self.private_ip))
        require(status == 200 and isinstance(data, list) and len(data) > 1,
                 "Startup answers routing + storage commands", f"HTTP {status}")
        routing = wrapped(data[0], "com.cloud.agent.api.StartupRoutingCommand")
        storage = wrapped(data[1], "com.cloud.agent.api.StartupStorageCommand")
        info = storage.get("poolInfo")
        require(isinstance(info, dict) and bool(info.get("hostPath")),
                 "StartupStorageCommand reports the local pool", "no poolInfo.hostPath")
        assert isinstance(info, dict)
        self.host_name = str(routing.get("name") or "")
        self.pool = {PRIMARY_TO: {
            "uuid": info.get("uuid") or str(uuid.uuid4()), "id": 1,
            "host": info.get("host") or self.private_ip, "type": "Filesystem",
            "poolType": "Filesystem", "path": info["hostPath"], "port": 0}}
        return f"host {self.host_name}, local pool {info['hostPath']}"

    def _secondary(self) -> str:
        return self.plan.secondary_url or f"cifs://{self.host_name or 'localhost'}/secondary"

    async def copy_template(self) -> str:
        fmt = "VHD" if self.plan.template_path.lower().endswith(".vhd") else "VHDX"
        template = {"uuid": str(uuid.uuid4()), "id": 201, "format": fmt, "accountId": 2,
                    "hvm": True, "name": "201-2-probe", "hypervisorType": "Hyperv"}
        src = {TEMPLATE_TO: {**template, "path": self.plan.template_path,
                             "imageDataStore": {NFS_TO: {"_url": self._secondary(),
                                                         "_role": "Image"}}}}
        dest = {TEMPLATE_TO: {**template, "imageDataStore": self.pool}}
        new = await self._copy(src, dest, TEMPLATE_TO)
        self.template_path = str(new.get("path") or "")
        self.template_format = str(new.get("format") or fmt)
        require(bool(self.template_path), "CopyCmdAnswer names the copy", "newData.path empty")
        return f"template {self.template_path} ({new.get('size')} bytes)"

    async def root_volume(self) -> str:
        src = {TEMPLATE_TO: {"uuid": str(uuid.uuid4()), "id": 201, "path": self.template_path,
                             "format": self.template_format, "imageDataStore": self.pool,
                             "name": "201-2-probe"}}
        dest = {VOLUME_TO: {"uuid": self.volume_uuid, "volumeType": "ROOT",
                            "dataStore": self.pool, "name": "ROOT-9001", "size": 0,
                            "volumeId": 9001, "vmName": self.plan.vm_name, "accountId": 2,
                            "id": 9001}}
        new = await self._copy(src, dest, VOLUME_TO)
        self.volume = {**dest[VOLUME_TO], **new}
        return f"volume {new.get('path')}"

    async def _copy(self, src: JsonObject, dest: JsonObject, kind: str) -> JsonObject:
        answer = await self.answer(COPY, {"srcTO": src, "destTO": dest, "wait": 0,
                                          "contextMap": {}}, COPY_ANSWER)
        require(answer.get("result") is True, "CopyCommand succeeds",
                 str(answer.get("details")))
        return wrapped(answer.get("newData"), kind)

    async def start_vm(self) -> str:
        volume = {**self.volume, "format": self.volume.get("format") or self.template_format}
        vm = {"id": 9001, "name": self.plan.vm_name, "type": "User", "cpus": 1, "speed": 500,
              "minRam": VM_RAM_BYTES, "maxRam": VM_RAM_BYTES, "arch": "x86_64",
              "os": "Other (64-bit)", "bootArgs": "", "limitCpuUse": False,
              "enableHA": False, "rebootOnCrash": False, "params": {},
              "uuid": str(uuid.uuid4()), "vncPassword": PROBE_VNC_PASSWORD,
              "disks": [{"data": {VOLUME_TO: volume}, "diskSeq": 0, "type": "ROOT"},
                        EMPTY_ISO_DISK],
              "nics": [self._nic()]}
        answer = await self.answer("com.cloud.agent.api.StartCommand",
                                   {"vm": vm, "contextMap": {}, "wait": 0},
                                   "com.cloud.agent.api.StartAnswer")
        require(answer.get("result") is True, "StartCommand succeeds",
                 str(answer.get("details")))
        require(PROBE_VNC_PASSWORD not in json.dumps(answer), "StartAnswer carries no secret",
                 "the VM's vncPassword came back in the answer")
        return f"{self.plan.vm_name} started"

    def _nic(self) -> JsonObject:
        nic: JsonObject = {
            "deviceId": 0, "defaultNic": True, "uuid": str(uuid.uuid4()), "ip": VM_IP,
            "netmask": "255.255.255.0", "gateway": "10.1.1.1", "mac": VM_MAC,
            "broadcastType": "Vlan", "type": "Guest", "broadcastUri": "vlan://261",
            "isolationUri": "vlan://261", "networkRateMbps": 100}
        if self.plan.security_groups:  # a basic zone's guest network
            nic.update(broadcastType="Native", broadcastUri="vlan://untagged",
                       isolationUri="ec2://untagged", securityGroupEnabled=True)
        return nic

    async def security_groups(self) -> str:
        """Rules as SecurityGroupManagerImpl sends them: applied, re-sent unchanged, and a
        malformed CIDR refused with PROGRAMMING_FAILED (the MS retries it)."""
        rules = [{"proto": "tcp", "startPort": 22, "endPort": 22,
                  "allowedCidrs": ["192.168.1.0/24"]}]
        body = {"guestIp": VM_IP, "vmName": self.plan.vm_name, "guestMac": VM_MAC,
                "signature": "0c2f41a4dbbe5bd3fc3b5a3b5c0c8a5e", "seqNum": 1, "vmId": 9001,
                "msId": 1, "ingressRuleSet": rules, "egressRuleSet": [], "contextMap": {},
                "wait": 0}
        for what in ("applied", "re-sent"):
            answer = await self.answer(SG_RULES, body, SG_ANSWER)
            require(answer.get("result") is True, f"SecurityGroupRulesCmd {what}",
                    str(answer.get("details")))
            require((answer.get("logSequenceNumber"), answer.get("vmId")) == (1, 9001),
                    "SecurityGroupRuleAnswer echoes seqNum and vmId",
                    f"{answer.get('logSequenceNumber')}, {answer.get('vmId')}")
        bad = {**body, "seqNum": 2, "ingressRuleSet": [{**rules[0],
                                                       "allowedCidrs": ["192.168.1.0/33"]}]}
        answer = await self.answer(SG_RULES, bad, SG_ANSWER)
        require(answer.get("result") is False
                and answer.get("reason") == "PROGRAMMING_FAILED",
                "a malformed rule fails with PROGRAMMING_FAILED",
                f"result {answer.get('result')}, reason {answer.get('reason')}")
        return "ssh from 192.168.1.0/24 applied, re-sent; a bad CIDR refused"

    async def reported(self, expected: str | None) -> str:
        status, data = await self.post("org.apache.cloudstack.HostVmStateReportCommand", {})
        require(status == 200 and isinstance(data, list), "state report is a bare array",
                 f"HTTP {status}")
        states = {k: v for entry in data if isinstance(entry, dict) for k, v in entry.items()}
        got = states.get(self.plan.vm_name)
        require(got == expected, "the state report follows the VM",
                 f"{self.plan.vm_name} reported as {got!r}, expected {expected!r}")
        return f"{self.plan.vm_name}: {got or 'absent'}"

    async def vm_stats(self) -> str:
        answer = await self.answer("com.cloud.agent.api.GetVmStatsCommand",
                                   {"vmNames": [self.plan.vm_name], "hostGuid": "probe",
                                    "hostName": "probe", "contextMap": {}, "wait": 0},
                                   "com.cloud.agent.api.GetVmStatsAnswer")
        stats = (answer.get("vmStatsMap") or {}).get(self.plan.vm_name)
        require(isinstance(stats, dict), "GetVmStats reports the VM", "no entry")
        assert isinstance(stats, dict)
        missing = [name for name in VM_STATS_FIELDS if not isinstance(stats.get(name),
                                                                       int | float)]
        require(not missing, "VmStatsEntry uses the Java field names",
                 f"no number for {', '.join(missing)}")
        return f"{stats.get('numCPUs')} vCPU, cpu {stats.get('cpuUtilization')}%"

    async def stop_vm(self) -> str:
        answer = await self.answer("com.cloud.agent.api.StopCommand",
                                   {"vmName": self.plan.vm_name, "isProxy": False,
                                    "checkBeforeCleanup": False, "forceStop": False,
                                    "contextMap": {}, "wait": 0},
                                   "com.cloud.agent.api.StopAnswer")
        require(answer.get("result") is True, "StopCommand succeeds",
                 str(answer.get("details")))
        return f"{self.plan.vm_name} stopped"

    async def delete_volume(self) -> str:
        answer = await self.answer("org.apache.cloudstack.storage.command.DeleteCommand",
                                   {"data": {VOLUME_TO: self.volume}, "contextMap": {},
                                    "wait": 0}, "com.cloud.agent.api.Answer")
        require(answer.get("result") is True, "DeleteCommand succeeds",
                 str(answer.get("details")))
        return f"volume {self.volume.get('path')} deleted"

    async def run(self) -> ProbeReport:
        steps = [("register", self.register), ("copy template", self.copy_template),
                 ("root volume", self.root_volume), ("start VM", self.start_vm),
                 *([("security groups", self.security_groups)]
                   if self.plan.security_groups else []),
                 ("state report", lambda: self.reported("PowerOn")),
                 ("VM stats", self.vm_stats), ("stop VM", self.stop_vm),
                 ("VM gone", lambda: self.reported(None)),
                 ("delete volume", self.delete_volume)]
        for name, check in steps:
            await self.step(name, check)
            if not self.report.findings[-1].ok:
                break
        return self.report
