"""``hyperv-agent probe URL``: play the management server against any Hyper-V agent.

Sends what a management server sends when it adds a host and keeps it Up (Ready, Startup,
the VM state report, PingRouting, GetHostStats), and two commands that must fail (an
unreachable SMB pool, a malformed body), checks every answer against the rules an
unmodified management server (CloudStack 4.22) depends on, and reports what it learned.
Works against this agent and against the C# agent alike; it reads raw JSON, not this
agent's models.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

API = "/api/HypervResource/"
POWER_STATES = frozenset({"PowerOn", "PowerOff", "PowerUnknown", "PowerReportMissing"})
# The MS's hypervisor_capabilities has one Hyperv row, 6.2, and no default row.
DEFAULT_HYPERVISOR_VERSIONS = ("6.2",)
UEFI_ENABLE = "host.uefi.enable"
UP_POLL_S = 0.25  # how often an agent still starting is tried again
MODIFY_POOL = "com.cloud.agent.api.ModifyStoragePoolCommand"
JsonObject = dict[str, Any]

if TYPE_CHECKING:
    from hyperv_agent.probe_deploy import DeployPlan as DeployPlanLike
    from hyperv_agent.probe_ha import HaPlan


@dataclass
class Finding:
    step: str
    ok: bool
    detail: str
    rule: str = ""
    elapsed_ms: float = 0.0


@dataclass
class ProbeReport:
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(f.ok for f in self.findings)

    def table(self) -> str:
        lines = [f"{'step':<22} {'ms':>7}  {'result':<6} detail"]
        for f in self.findings:
            verdict = "ok" if f.ok else "FAIL"
            rule = f" [rule: {f.rule}]" if f.rule and not f.ok else ""
            lines.append(f"{f.step:<22} {f.elapsed_ms:>7.1f}  {verdict:<6} {f.detail}{rule}")
        lines.append("")
        lines += [f"{key:<22} {value}" for key, value in self.facts.items()]
        return "\n".join(lines)


class ProbeError(Exception):
    """The agent broke a rule; the step is abandoned."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule


def startup_request(private_ip: str) -> list[JsonObject]:
    """The Command[] a management server sends to register a host."""
    guid = str(uuid.uuid3(uuid.NAMESPACE_DNS, private_ip)) + "-HypervResource"
    return [{"com.cloud.agent.api.StartupRoutingCommand": {
        "cpus": 0, "speed": 0, "memory": 0, "dom0MinMemory": 0, "poolSync": False,
        "supportsClonedVolumes": False, "pool": str(uuid.uuid4()), "hypervisorType": "Hyperv",
        "hostDetails": {"com.cloud.network.Networks.RouterPrivateIpStrategy": "HostLocal"},
        "hostTags": [], "groupDetails": {}, "type": "Routing", "dataCenter": "1", "pod": "1",
        "cluster": "1", "guid": guid, "name": private_ip, "version": "4.20.0",
        "privateIpAddress": private_ip, "storageIpAddress": private_ip,
        "connectionTransferred": False, "contextMap": {}, "wait": 0,
        "bypassHostMaintenance": False}}]


class Prober:
    def __init__(self, base_url: str, private_ip: str, session: aiohttp.ClientSession,
                 hypervisor_versions: tuple[str, ...] = DEFAULT_HYPERVISOR_VERSIONS) -> None:
        self.base = base_url.rstrip("/")
        self.private_ip = private_ip
        self.session = session
        self.hypervisor_versions = hypervisor_versions
        self.report = ProbeReport()

    async def post(self, fqcn: str, body: object) -> tuple[int, Any]:
        async with self.session.post(self.base + API + fqcn, data=json.dumps(body),
                                     headers={"content-type": "application/json"}) as reply:
            text = await reply.text()
            if reply.status != 200:
                return reply.status, text
            try:
                return 200, json.loads(text)
            except json.JSONDecodeError:
                raise ProbeError("answers are JSON", f"{fqcn}: body is not JSON") from None

    async def step(self, name: str, check: Callable[[], Any]) -> None:
        started = time.perf_counter()
        try:
            detail = await check()
            finding = Finding(name, True, str(detail))
        except ProbeError as error:
            finding = Finding(name, False, str(error), error.rule)
        except (aiohttp.ClientError, TimeoutError) as error:
            finding = Finding(name, False, f"{type(error).__name__}: {error}", "HTTPS on 8250")
        finding.elapsed_ms = (time.perf_counter() - started) * 1000
        self.report.findings.append(finding)

    async def answer(self, fqcn: str, body: object, answer_class: str) -> JsonObject:
        status, data = await self.post(fqcn, body)
        if status != 200:
            raise ProbeError("200 with result:false, never another status",
                             f"{fqcn}: HTTP {status}")
        if not (isinstance(data, list) and data and isinstance(data[0], dict)
                and len(data[0]) == 1):
            raise ProbeError("Answer[] envelope", f"{fqcn}: not [{{\"<FQCN>\": {{...}}}}]")
        (key, value), = data[0].items()
        if key != answer_class:
            raise ProbeError("real Java answer class", f"{fqcn}: answered {key}")
        return dict(value)

    async def ready(self) -> str:
        answer = await self.answer("com.cloud.agent.api.ReadyCommand",
                                   {"contextMap": {}, "wait": 0},
                                   "com.cloud.agent.api.ReadyAnswer")
        require(answer.get("result") is True, "Ready answers result:true", "result is not true")
        uefi = (answer.get("detailsMap") or {}).get(UEFI_ENABLE)
        require(uefi in ("true", "false"), "ReadyAnswer.detailsMap says host.uefi.enable",
                 f"detailsMap has {UEFI_ENABLE} {uefi!r}: the MS never places a UEFI VM here")
        self.report.facts["UEFI guests"] = str(uefi)
        return f"result true, {UEFI_ENABLE} {uefi}"

    async def startup(self) -> str:
        request = startup_request(self.private_ip)
        status, data = await self.post("com.cloud.agent.api.StartupCommand", request)
        if status != 200 or not isinstance(data, list) or not data:
            raise ProbeError("Startup answers a Command[]", f"HTTP {status}, body {str(data)[:80]}")
        routing = wrapped(data[0], "com.cloud.agent.api.StartupRoutingCommand")
        sent = request[0]["com.cloud.agent.api.StartupRoutingCommand"]
        check_startup(sent, routing, self.report.facts)
        check_version(routing, self.hypervisor_versions)
        if len(data) > 1:
            storage = wrapped(data[1], "com.cloud.agent.api.StartupStorageCommand")
            check_storage(storage, self.report.facts)
        return f"{routing.get('cpus')} cores, {int(routing.get('memory', 0)) >> 20} MiB"

    async def state_report(self) -> str:
        status, data = await self.post("org.apache.cloudstack.HostVmStateReportCommand", {})
        require(status == 200 and isinstance(data, list), "state report is a bare array",
                 f"HTTP {status}")
        for entry in data:
            require(isinstance(entry, dict) and len(entry) == 1, "state report entries",
                     f"entry {entry!r} is not a one-key object")
            require(next(iter(entry.values())) in POWER_STATES, "PowerState names",
                     f"entry {entry!r} has no PowerState name")
        self.report.facts["VMs reported"] = str(len(data))
        return f"{len(data)} VMs"

    async def ping(self) -> str:
        body = {"_hostVmStateReport": {}, "_gatewayAccessible": True, "_vnetAccessible": True,
                "hostType": "Routing", "hostId": 1, "outOfBand": False, "contextMap": {},
                "wait": 0}
        answer = await self.answer("com.cloud.agent.api.PingRoutingCommand", body,
                                   "com.cloud.agent.api.Answer")
        require(answer.get("result") is True, "PingRouting answers result:true",
                 "result is not true: the host would go Down")
        return "result true"

    async def host_stats(self) -> str:
        answer = await self.answer("com.cloud.agent.api.GetHostStatsCommand",
                                   {"hostGuid": "probe", "hostName": "probe", "hostId": 1,
                                    "contextMap": {}, "wait": 0},
                                   "com.cloud.agent.api.GetHostStatsAnswer")
        stats = answer.get("hostStats")
        require(answer.get("result") is True and isinstance(stats, dict),
                 "GetHostStats answers hostStats", str(answer.get("details")))
        assert isinstance(stats, dict)
        for name in ("cpuUtilization", "totalMemoryKBs", "freeMemoryKBs"):
            require(isinstance(stats.get(name), int | float), "host stats are numbers",
                     f"{name} is {stats.get(name)!r}")
        return f"cpu {stats['cpuUtilization']}%, free {int(stats['freeMemoryKBs']) >> 10} MiB"

    async def failures(self) -> str:
        """Failures keep their class: the MS casts the answer and reads its fields."""
        pool = {"add": True, "localPath": f"/mnt//{uuid.uuid4()}", "details": {},
                "pool": {"id": 99, "uuid": str(uuid.uuid4()), "host": "probe.invalid",
                         "path": "/probe?user=probe&password=probe&domain=probe",
                         "port": 445, "type": "SMB"}, "contextMap": {}, "wait": 0}
        answer = await self.answer(MODIFY_POOL, pool, "com.cloud.agent.api.ModifyStoragePoolAnswer")
        require(answer.get("result") is False, "an unreachable pool fails",
                 "ModifyStoragePool of probe.invalid succeeded")
        require(isinstance(answer.get("datastoreClusterChildren"), list),
                 "ModifyStoragePoolAnswer.datastoreClusterChildren is a list",
                 "missing: the MS iterates it")
        config = await self.answer("com.cloud.agent.api.GetVmConfigCommand",
                                   {"vmName": "probe-vm", "wait": "soon", "contextMap": {}},
                                   "com.cloud.agent.api.GetVmConfigAnswer")
        require(config.get("result") is False and isinstance(config.get("nics"), list),
                 "a failed GetVmConfigAnswer has its nics list",
                 "nics is missing: the MS iterates it without checking result")
        return "ModifyStoragePoolAnswer and GetVmConfigAnswer, result false"

    async def run(self) -> ProbeReport:
        await self.step("ReadyCommand", self.ready)
        await self.step("StartupCommand", self.startup)
        await self.step("HostVmStateReport", self.state_report)
        await self.step("PingRoutingCommand", self.ping)
        await self.step("GetHostStatsCommand", self.host_stats)
        await self.step("failure answers", self.failures)
        return self.report


def require(condition: bool, rule: str, detail: str) -> None:
    if not condition:
        raise ProbeError(rule, detail)


def wrapped(element: object, fqcn: str) -> JsonObject:
    require(isinstance(element, dict) and list(element) == [fqcn],
             f"element is wrapped as {fqcn}", f"got {str(element)[:80]}")
    assert isinstance(element, dict)
    value = element[fqcn]
    require(isinstance(value, dict), f"{fqcn} is an object", "not an object")
    return dict(value)


ECHOED = ("dataCenter", "pod", "cluster", "guid", "privateIpAddress", "name")


def check_startup(sent: JsonObject, got: JsonObject, facts: dict[str, str]) -> None:
    """The rules of a StartupRoutingCommand answer (echo, host facts, console port)."""
    for key in ECHOED:
        require(got.get(key) == sent[key], "identity fields are echoed",
                 f"{key} came back as {got.get(key)!r}, sent {sent[key]!r}")
    _check_netmask(got.get("privateNetmask"))
    require(got.get("caps") == "hvm", "caps is hvm", f"caps is {got.get('caps')!r}")
    for key in ("cpus", "speed", "memory", "cpuSockets"):
        require(isinstance(got.get(key), int) and got[key] > 0,
                 "host facts are filled", f"{key} is {got.get(key)!r}")
    require(isinstance(got.get("dom0MinMemory"), int), "dom0MinMemory is in bytes",
             f"dom0MinMemory is {got.get('dom0MinMemory')!r}")
    require(int(got.get("memory") or 0) > 1 << 30, "memory is in bytes",
             f"memory {got.get('memory')} looks like KiB or MiB")
    details = got.get("hostDetails") or {}
    port = str(details.get("rdp.server.port"))
    require(port.isdigit() and 0 < int(port) < 65536, "rdp.server.port is a TCP port",
             f"hostDetails has rdp.server.port {details.get('rdp.server.port')!r} "
             "(2179, VMConnect's, or an agentless agent's console relay port)")
    require(bool(details.get("product_version")), "hostDetails has product_version", "missing")
    require(bool(got.get("hypervisorVersion")), "hypervisorVersion is set", "missing")
    mac = str(got.get("privateMacAddress") or "")
    facts.update({"hypervisorVersion": str(got.get("hypervisorVersion")),
                  "cores / sockets": f"{got.get('cpus')} / {got.get('cpuSockets')}",
                  "speed": f"{got.get('speed')} MHz", "memory": f"{got.get('memory')} bytes",
                  "private NIC": f"{got.get('privateNetmask')} {mac}",
                  "console port": port})


def check_version(got: JsonObject, versions: tuple[str, ...]) -> None:
    """hypervisorVersion, and the product_version detail the MS looks up first, must name
    a hypervisor_capabilities row, or attaching a volume fails on the MS."""
    details = got.get("hostDetails") or {}
    for name, value in (("hypervisorVersion", got.get("hypervisorVersion")),
                        ("hostDetails.product_version", details.get("product_version"))):
        require(value in versions, "hypervisorVersion has a hypervisor_capabilities row",
                 f"{name} is {value!r}; the MS has rows for {', '.join(versions)} only")


def _check_netmask(mask: object) -> None:
    try:
        ipaddress.IPv4Network(f"0.0.0.0/{mask}")
    except (ValueError, TypeError):
        raise ProbeError("privateNetmask is a valid netmask", f"privateNetmask is {mask!r}"
                         ) from None


def check_storage(storage: JsonObject, facts: dict[str, str]) -> None:
    info = storage.get("poolInfo")
    require(isinstance(info, dict), "StartupStorageCommand has poolInfo", "missing")
    assert isinstance(info, dict)
    require(storage.get("resourceType") == "STORAGE_POOL", "resourceType is STORAGE_POOL",
             f"resourceType is {storage.get('resourceType')!r}")
    for key in ("capacityBytes", "availableBytes"):
        require(isinstance(info.get(key), int), "pool sizes are bytes", f"{key} missing")
    facts["local pool"] = f"{info.get('localPath')} ({info.get('capacityBytes')} bytes)"


async def probe(url: str, private_ip: str, timeout_s: float = 60.0,
                deploy: DeployPlanLike | None = None,
                hypervisor_versions: tuple[str, ...] = DEFAULT_HYPERVISOR_VERSIONS,
                ha: HaPlan | None = None) -> ProbeReport:
    """Play registration and health (or, with ``deploy``, a whole deployment; with ``ha``,
    the management server's part in HA) against the agent at ``url``;
    ``hypervisor_versions`` are the Hyperv rows of the MS's hypervisor_capabilities table.
    An agent that refuses connections (still starting) is tried again until it answers,
    within ``timeout_s``."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the management server trusts any certificate
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(ssl=context, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        down = await wait_for_agent(session, url, timeout_s)
        if down is not None:
            return ProbeReport([Finding("agent", False, down, "HTTPS on 8250")])
        if ha is not None:
            from hyperv_agent.probe_ha import HaProber

            return await HaProber(url, private_ip, session, hypervisor_versions, plan=ha).run()
        if deploy is None:
            return await Prober(url, private_ip, session, hypervisor_versions).run()
        from hyperv_agent.probe_deploy import Deployer

        return await Deployer(url, private_ip, session, hypervisor_versions, plan=deploy).run()


async def wait_for_agent(session: aiohttp.ClientSession, url: str, timeout_s: float,
                         clock: Callable[[], float] = time.monotonic) -> str | None:
    """None once the agent at ``url`` answers its liveness GET; while it refuses
    connections (it is still starting) it is tried every ``UP_POLL_S`` until ``timeout_s``
    has passed. Why not, when it never answers or cannot be reached at all."""
    deadline = clock() + timeout_s
    while True:
        try:
            async with session.get(url.rstrip("/") + API.rstrip("/")) as reply:
                await reply.read()
            return None  # any HTTP answer: it is up
        except aiohttp.ClientConnectorError as error:
            if not isinstance(error.os_error, ConnectionRefusedError):
                return f"{url} cannot be reached: {error}"
            last = error
        except (aiohttp.ClientError, TimeoutError) as error:
            return f"{url} does not answer over HTTPS: {type(error).__name__}: {error}"
        if clock() >= deadline:
            return f"no agent answered at {url} within {timeout_s:g} s ({last.os_error})"
        await asyncio.sleep(min(UP_POLL_S, max(0.0, deadline - clock())))
