"""What the migration tests send and check: the management server's own bodies
(``samples/ms-4.22`` 40-43, the SMB pool of 31) for a VM of choice, and what each host
reports. The bodies' SMB pool is ``\\\\10.1.1.1\\primary`` (every emulated host maps it to one
folder) and their vSwitch ``vSwitch0``."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from hyperv_agent.backends import wsman_settings
from hyperv_agent.cim.wsman.backend import WsmanCim
from hyperv_agent.cloudstack import names
from hyperv_agent.config import load_config
from hyperv_agent.emulator import vhd
from tests.cli import lab
from tests.cloudstack.fixtures import ms422_json
from tests.e2e.conftest import API, client_context
from tests.ports import free_port

SWITCH = "vSwitch0"
SHARE = "\\\\10.1.1.1\\primary"
LOCAL_POOL = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"
ROOT_UUID = "8c93b28e-9a5e-4e24-988b-fdee9591ab94"
VLAN = 261
MIB = 1 << 20

#: Answers a test reads: (answer class, fields) of one command to one host.
Ask = Callable[[str, dict[str, Any]], Awaitable[tuple[str, dict[str, Any]]]]


def emulator_toml(name: str, cluster_dir: Path, share: Path) -> str:
    """The ``[emulator]`` part of a cluster member's configuration."""
    return f"""[emulator]
host_name = "{name}"
cluster_dir = "{cluster_dir}"
switches = ["{SWITCH}"]
[emulator.shares]
'{SHARE}' = '{share}'
"""


def disk_file(folder: Path, volume: str, size: int = 64 * MIB) -> Path:
    """A real dynamic VHDX ``<volume>.vhdx`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{volume}.vhdx"
    vhd.create(path, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, size)
    return path


def vm_to(name: str, root: str = ROOT_UUID, *, router: bool = False,
          local_root: bool = False, memory_mb: int = 512) -> dict[str, Any]:
    """The VirtualMachineTO of samples 40-43 as VM ``name`` with the root volume ``root``
    (on the SMB pool, or with ``local_root`` on the host's local pool); ``router`` makes it
    a virtual router whose boot arguments reach it through KVP."""
    vm: dict[str, Any] = copy.deepcopy(ms422_json("40_PrepareForMigrationCommand.json")["vm"])
    vm |= {"name": name, "minRam": memory_mb * MIB, "maxRam": memory_mb * MIB}
    volume = vm["disks"][0]["data"][names.VOLUME_OBJECT_TO]
    volume |= {"uuid": root, "path": root, "vmName": name}
    vm["disks"][0]["path"] = root
    if local_root:
        volume["dataStore"] = {names.PRIMARY_DATA_STORE_TO: {
            "uuid": "94084e43-4024-3a1b-adb3-b06c7e4fa0f1", "name": "local", "id": 1,
            "poolType": "Filesystem", "host": "127.0.0.2", "path": LOCAL_POOL,
            "port": 0, "isManaged": False}}
    if router:
        vm |= {"type": "DomainRouter", "bootArgs": f" template=domP name={name} eth0ip=0.0.0.0"}
    return vm


def with_second_nic(vm: dict[str, Any], switch: str = SWITCH, vlan: int = VLAN + 1
                    ) -> dict[str, Any]:
    """``vm`` with a second NIC, on ``switch`` and ``vlan``."""
    nic = copy.deepcopy(vm["nics"][0]) | {
        "deviceId": 1, "defaultNic": False, "mac": "02:00:4c:5f:01:07", "name": switch,
        "nicUuid": "2c5d1d6e-8a8e-4f61-9a56-6f5b7c1f0a11", "ip": "10.1.2.59",
        "broadcastUri": f"vlan://{vlan}", "isolationUri": f"vlan://{vlan}"}
    return vm | {"nics": [*vm["nics"], nic]}


def start_body(vm: dict[str, Any]) -> dict[str, Any]:
    return {"vm": vm, "executeInSequence": False, "contextMap": {}, "wait": 0}


def prepare_body(vm: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = ms422_json("40_PrepareForMigrationCommand.json")
    return body | {"vm": vm}


def migrate_body(vm: dict[str, Any], destination_ip: str, wait_s: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = ms422_json("41_MigrateCommand.json")
    return body | {"vmName": vm["name"], "virtualMachine": vm,
                   "destinationIp": destination_ip, "wait": wait_s}


def with_storage_body(vm: dict[str, Any], destination_ip: str, target: dict[str, Any]
                      ) -> dict[str, Any]:
    """MigrateWithStorageCommand of sample 42: the root volume to the pool ``target``."""
    body: dict[str, Any] = ms422_json("42_MigrateWithStorageCommand.json")
    root = vm["disks"][0]["data"][names.VOLUME_OBJECT_TO]
    pair = body["volumeToFilerAsList"][0]
    pair["t"] |= {"path": root["path"], "storagePoolType":
                  root["dataStore"][names.PRIMARY_DATA_STORE_TO]["poolType"]}
    pair["u"] = target
    return body | {"vm": vm, "tgtHost": destination_ip}


def local_pool_of(host_guid: str, address: str) -> dict[str, Any]:
    """The StorageFilerTO of a host's local pool, as sample 42 and 43 name it."""
    return {"id": 3, "uuid": f"{host_guid}-HypervResource", "host": address,
            "path": LOCAL_POOL, "port": 0, "type": "Filesystem"}


def smb_pool() -> dict[str, Any]:
    """The SMB pool of sample 31 as a StorageFilerTO."""
    return dict(ms422_json("31_ModifyStoragePoolCommand_SMB.json")["pool"])


def volume_body(volume: str, vm_name: str | None, pool: dict[str, Any],
                source_pool: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = ms422_json("43_MigrateVolumeCommand.json")
    body |= {"volumePath": volume, "attachedVmName": vm_name, "pool": pool}
    if vm_name is None:
        del body["attachedVmName"]
    if source_pool is not None:
        body["sourcePool"] = source_pool
    return body


def pool_body() -> dict[str, Any]:
    return dict(ms422_json("31_ModifyStoragePoolCommand_SMB.json"))


def check_body(vm_name: str) -> dict[str, Any]:
    return {"vmName": vm_name, "contextMap": {}, "wait": 0}


def powered_on(report: list[dict[str, str]]) -> set[str]:
    """The VMs a state report says are on."""
    return {name for entry in report for name, power in entry.items() if power == "PowerOn"}


# --- two agents in their own processes, hosts of one emulated cluster ------------------------

ADDRESSES = {"HV-A": "127.0.0.2", "HV-B": "127.0.0.3"}
ONLY_ON_A = "vSwitchA"  # a vSwitch host A has and host B lacks
USER, PASSWORD = "lab", "Lab-Pa55word!"


@dataclass
class Member:
    """One ``serve`` process: an agent on its own loopback address over an emulated host."""

    name: str
    config: Path
    url: str
    process: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return ADDRESSES[self.name]

    def cim(self) -> WsmanCim:
        """The emulated host itself, over its WinRM face."""
        return WsmanCim(wsman_settings(load_config(self.config)))

    def local_pool(self, tmp_path: Path) -> Path:
        """Where this host's drive C keeps ``LOCAL_POOL``."""
        return tmp_path / self.name / "emulator" / "drives" / "C" / Path(
            *LOCAL_POOL.split("\\")[1:])


def member_toml(tmp_path: Path, name: str, address: str, port: int, share: str, *,
                agent: str = "", emulator: str = "", lab_knobs: str = "",
                shares: Mapping[str, Path] | None = None) -> str:
    """The configuration of cluster member ``name``: its agent on ``port`` of ``address``,
    its emulated host in ``tmp_path/cluster`` with the SMB share ``share`` mapped to
    ``tmp_path/pool`` (one folder for every member) and a WinRM face of its own; ``agent``,
    ``emulator`` and ``lab_knobs`` are more lines of those sections, ``shares`` more shares
    the host reaches (UNC -> folder)."""
    more = "".join(f"'{unc}' = '{folder}'\n" for unc, folder in (shares or {}).items())
    return f"""[agent]
state_dir = "{tmp_path / name}"
private_ip = "{address}"
listen = "{address}:{port}"
admin_listen = "{address}:{free_port(address)}"
console_relay_listen = ""
{agent}
[emulator]
host_name = "{name}"
cluster_dir = "{tmp_path / 'cluster'}"
winrm = true
{emulator}
[emulator.shares]
'{share}' = '{tmp_path / "pool"}'
{more}[emulator.lab]
{lab_knobs}
[wsman]
url = "http://{address}:{free_port(address)}/wsman"
username = "{USER}"
password = "{PASSWORD}"
auth = "ntlm"
"""


def member(tmp_path: Path, name: str, port: int, lab_knobs: str = "",
           shares: Mapping[str, Path] | None = None, emulator: str = "",
           agent: str = "") -> Member:
    """The configuration of cluster member ``name`` listening on ``port`` of its address;
    both members map the SMB pool's share to one folder, ``tmp_path/pool``; ``shares`` are
    more shares this member reaches (UNC -> folder), ``emulator`` more [emulator] lines,
    ``agent`` more [agent] lines."""
    address = ADDRESSES[name]
    switches = [SWITCH, ONLY_ON_A] if name == "HV-A" else [SWITCH]
    config = tmp_path / f"{name}.toml"
    config.write_text(member_toml(tmp_path, name, address, port, SHARE,
                                  agent=f"local_storage_path = '{LOCAL_POOL}'\n{agent}",
                                  emulator=f"switches = {json.dumps(switches)}\n{emulator}",
                                  lab_knobs=lab_knobs, shares=shares))
    return Member(name, config, f"https://{address}:{port}")


def pair(tmp_path: Path, lab_knobs_a: str = "",
         shares: Mapping[str, Mapping[str, Path]] | None = None,
         emulator_a: str = "", agent_b: str = "") -> list[Member]:
    """HV-A and HV-B, both listening on one port free on both addresses; ``lab_knobs_a``
    are more [emulator.lab] lines of HV-A, ``emulator_a`` more [emulator] lines of it,
    ``agent_b`` more [agent] lines of HV-B, ``shares`` more shares a member (by name)
    reaches."""
    port = free_port(*ADDRESSES.values())
    more = shares or {}
    return [member(tmp_path, "HV-A", port, lab_knobs_a, more.get("HV-A"), emulator_a),
            member(tmp_path, "HV-B", port, shares=more.get("HV-B"), agent=agent_b)]


class Cluster:
    """Talks to the members' agents as the management server does."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def ask(self, host: Member, fqcn: str, body: object) -> tuple[str, dict[str, Any]]:
        """The single answer of ``fqcn`` sent to ``host``: (answer class, fields)."""
        async with self.session.post(host.url + API + fqcn,
                                     data=json.dumps(body).encode()) as reply:
            assert reply.status == 200
            answers: list[dict[str, dict[str, Any]]] = await reply.json(content_type=None)
        assert len(answers) == 1 and len(answers[0]) == 1, answers
        ((key, value),) = answers[0].items()
        return key, value

    async def on(self, host: Member) -> set[str]:
        """The VMs ``host``'s state report shows running."""
        async with self.session.post(host.url + API + names.HOST_VM_STATE_REPORT_COMMAND,
                                     data=b"{}") as reply:
            assert reply.status == 200
            return powered_on(await reply.json(content_type=None))

    async def where(self, hosts: list[Member], vm: str) -> list[str]:
        """The hosts whose state reports show ``vm`` running."""
        return [host.name for host in hosts if vm in await self.on(host)]

    async def start(self, host: Member) -> None:
        host.process = lab.start("serve", "--config", str(host.config))
        deadline = time.monotonic() + 30
        while True:
            assert host.process.poll() is None, host.process.communicate()[1]
            with contextlib.suppress(aiohttp.ClientError):
                async with self.session.get(host.url + API.rstrip("/")) as reply:
                    if reply.status == 200:
                        return
            assert time.monotonic() < deadline, f"{host.name} did not answer"
            await asyncio.sleep(0.1)

    @staticmethod
    def stop(host: Member) -> None:
        if host.process is not None and host.process.poll() is None:
            assert PASSWORD not in lab.stop(host.process)


@contextlib.asynccontextmanager
async def cluster(hosts: list[Member]) -> AsyncIterator[Cluster]:
    """The members' agents running, each with the SMB pool registered."""
    connector = aiohttp.TCPConnector(ssl=client_context(), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        running = Cluster(session)
        try:
            await asyncio.gather(*(running.start(host) for host in hosts))
            for host in hosts:
                _, pool = await running.ask(host, names.MODIFY_STORAGE_POOL_COMMAND,
                                            pool_body())
                assert pool["result"] is True, pool
            yield running
        finally:
            for host in hosts:
                Cluster.stop(host)
