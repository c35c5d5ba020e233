"""Migration budgets under the emulator's latency model (20 ms a call, 300 ms a job).

Two agents in this process, each over an emulated host of one cluster (a shared
``cluster_dir``, an SMB pool both map to one folder). A running VM with 2 disks on the
pool and 2 NICs moves from the first to the second, as the management server moves it:

- MigrateCommand on the source: at most 4 calls + 1 job wait (caches warm);
- PrepareForMigrationCommand on the destination: at most 3 calls;

and the modelled wall time of each. The figures are taken only when the VM runs on the
destination afterwards with both disks and both NICs, and on the source no more.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import report, require, verdict
from hyperv_agent.cim import wql
from hyperv_agent.config import load_config
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.instruments import RoundTrips
from hyperv_agent.service import Agent, build_agent

CALL_S, JOB_S = 0.02, 0.3
MIGRATE_BUDGET = (4, 1)  # calls, job waits
PREPARE_BUDGET = 3  # calls
API = "com.cloud.agent.api."
ADDRESSES = {"HV-A": "127.0.0.2", "HV-B": "127.0.0.3"}
SHARE = "\\\\10.1.1.1\\primary"
POOL = {"id": 2, "uuid": "5d719485-f8b3-3fc2-b05a-8f63a912e709", "host": "10.1.1.1",
        "path": "/primary?user=administrator&password=Passw0rd&domain=WORKGROUP", "port": 445,
        "type": "SMB"}
STORE = {"org.apache.cloudstack.storage.to.PrimaryDataStoreTO": {
    "uuid": POOL["uuid"], "name": "smb-primary", "id": 2, "poolType": "SMB",
    "host": POOL["host"], "path": POOL["path"], "port": 445, "isManaged": False}}


@dataclass(frozen=True)
class Figures:
    """What one move cost: round trips on each side, and the modelled wall seconds."""

    prepare: RoundTrips
    prepare_s: float
    migrate: RoundTrips
    migrate_s: float


def _vm(name: str) -> dict[str, Any]:
    """A running user VM with a ROOT and a DATADISK volume on the SMB pool and 2 NICs."""
    disks = [{"data": {"org.apache.cloudstack.storage.to.VolumeObjectTO": {
        "uuid": f"{name}-{kind.lower()}", "volumeType": kind, "dataStore": STORE,
        "name": f"{kind}-{name}", "size": 1 << 26, "path": f"{name}-{kind.lower()}",
        "format": "VHDX", "vmName": name}}, "diskSeq": seq, "type": kind,
        "path": f"{name}-{kind.lower()}"} for seq, kind in enumerate(("ROOT", "DATADISK"))]
    nics = [{"deviceId": index, "networkRateMbps": 200, "mac": f"02:00:4c:5f:0{index}:07",
             "broadcastType": "Vlan", "type": "Guest", "broadcastUri": f"vlan://{261 + index}",
             "isolationUri": f"vlan://{261 + index}", "name": "vSwitch0",
             "ip": f"10.1.{index + 1}.59", "netmask": "255.255.255.0"}
            for index in range(2)]
    return {"id": 7, "name": name, "state": "Running", "type": "User", "cpus": 1,
            "minSpeed": 500, "maxSpeed": 500, "minRam": 512 << 20, "maxRam": 512 << 20,
            "uuid": f"uuid-{name}", "disks": disks, "nics": nics}


def _agent(root: Path, name: str, call_s: float, job_s: float) -> Agent:
    config = root / f"{name}.toml"
    config.write_text(f"""[agent]
state_dir = "{root / name}"
backend = "emulator"
private_ip = "{ADDRESSES[name]}"
[emulator]
host_name = "{name}"
cluster_dir = "{root / 'cluster'}"
switches = ["vSwitch0"]
call_latency_s = {call_s}
job_duration_s = {job_s}
memory_mb = 65536
[emulator.shares]
'{SHARE}' = '{root / "pool"}'
""")
    return build_agent(load_config(config, local_storage_path="C:\\pool"))


async def _ask(agent: Agent, command: str, body: dict[str, Any]) -> dict[str, Any]:
    answers = json.loads(await agent.dispatch(API + command, json.dumps(body).encode()))
    ((_, answer),) = answers[0].items()
    assert answer["result"] is True, answer
    return dict(answer)


def _emulator(agent: Agent) -> EmulatorCim:
    assert agent.emulator is not None
    return agent.emulator


async def _running(agent: Agent, name: str) -> tuple[bool, int, int]:
    """Whether ``name`` runs on the agent's host, with how many disks and ports."""
    cim = _emulator(agent)
    found = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", name)))
    if not found or found[0].path is None:
        return False, 0, 0
    guid = found[0].path.key("Name")
    counts = [len(await cim.query(wql.select(class_name, wql.starts_with(
        "InstanceID", f"Microsoft:{guid}\\")))) for class_name in (
        "Msvm_StorageAllocationSettingData", "Msvm_EthernetPortAllocationSettingData")]
    return found[0]["EnabledState"] == 2, counts[0], counts[1]


async def _move(source: Agent, destination: Agent, name: str) -> Figures:
    vm = _vm(name)
    before, started = _emulator(destination).round_trips(), time.perf_counter()
    await _ask(destination, "PrepareForMigrationCommand", {"vm": vm, "rollback": False,
                                                           "contextMap": {}, "wait": 0})
    prepare_s = time.perf_counter() - started
    prepare = _emulator(destination).round_trips() - before
    before, started = _emulator(source).round_trips(), time.perf_counter()
    await _ask(source, "MigrateCommand", {
        "vmName": name, "destinationIp": ADDRESSES["HV-B"], "hostGuid": "hv-b-guid",
        "windows": False, "virtualMachine": vm, "contextMap": {}, "wait": 0})
    migrate_s = time.perf_counter() - started
    return Figures(prepare, prepare_s, _emulator(source).round_trips() - before, migrate_s)


async def measure(root: Path, call_s: float = CALL_S, job_s: float = JOB_S) -> Figures:
    """Start two VMs on HV-A, move the first to HV-B (caches warm), then measure the move
    of the second; ``require`` that it runs on HV-B alone with its 2 disks and 2 NICs."""
    for name in ("warm-up", "i-2-7-VM"):
        for kind in ("root", "datadisk"):
            vhd.create(root / "pool" / f"{name}-{kind}.vhdx", vhd.DiskFormat.VHDX,
                       vhd.DiskType.DYNAMIC, 1 << 26)
    source, destination = (_agent(root, name, call_s, job_s) for name in ADDRESSES)
    try:
        for agent in (source, destination):
            await _ask(agent, "ModifyStoragePoolCommand", {
                "add": True, "pool": POOL, "localPath": f"/mnt//{POOL['uuid']}",
                "details": {}, "contextMap": {}, "wait": 0})
        for name in ("warm-up", "i-2-7-VM"):
            await _ask(source, "StartCommand", {"vm": _vm(name), "contextMap": {}, "wait": 0})
        await _move(source, destination, "warm-up")
        figures = await _move(source, destination, "i-2-7-VM")
        require(await _running(destination, "i-2-7-VM") == (True, 2, 2),
                "the VM runs on the destination with its 2 disks and 2 NICs")
        require(not (await _running(source, "i-2-7-VM"))[0], "the VM left the source")
        return figures
    finally:
        for agent in (source, destination):
            await agent.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "pool").mkdir()
        figures = await measure(Path(scratch))
    migrate, prepare = figures.migrate, figures.prepare
    calls, waits = MIGRATE_BUDGET
    report("migration", [
        ("MigrateCommand (2 disks, 2 NICs), source: calls / job waits",
         f"{migrate.calls} / {migrate.waits}", f"<= {calls} / {waits}",
         verdict(migrate.calls <= calls and migrate.waits <= waits)),
        ("MigrateCommand modelled wall time", f"{figures.migrate_s:.2f} s",
         f"{migrate.calls} x {CALL_S * 1000:.0f} ms + {migrate.waits} x "
         f"{JOB_S * 1000:.0f} ms = {migrate.calls * CALL_S + migrate.waits * JOB_S:.2f} s "
         "+ the job's polling", "-"),
        ("PrepareForMigrationCommand, destination: calls / job waits",
         f"{prepare.calls} / {prepare.waits}", f"<= {PREPARE_BUDGET} / 0",
         verdict(prepare.calls <= PREPARE_BUDGET and prepare.waits == 0)),
        ("PrepareForMigrationCommand modelled wall time", f"{figures.prepare_s:.2f} s",
         f"{PREPARE_BUDGET} x {CALL_S * 1000:.0f} ms (sent at once)", "-"),
    ])


if __name__ == "__main__":
    asyncio.run(main())
