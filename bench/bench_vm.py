"""VM lifecycle budgets under the emulator's latency model (20 ms a call, 300 ms a job).

- the modelled wall time of a StartCommand with 2 disks and 2 NICs, beside the same work
  priced at the C# agent's round-trip counts (hyperv-wmi-v2.md §5.2, CloudStack column:
  define + CPU/memory 8 calls + 2 waits and TagVm 3 + 1; each disk ~11 calls + 2 waits;
  each NIC ≥14 + 2, its VLAN 5 + 1 and bandwidth 4 + 1; start 2 + 1; its job waits poll
  once a second, so each costs at least 1 s);
- 32 concurrent StartCommands for different VMs finish within 3x one StartCommand's time.
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import report, verdict
from hyperv_agent.config import load_config
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.service import Agent, build_agent

CALL_S, JOB_S = 0.02, 0.3
START = "com.cloud.agent.api.StartCommand"
VOLUME = "org.apache.cloudstack.storage.to.VolumeObjectTO"
STORE = {"org.apache.cloudstack.storage.to.PrimaryDataStoreTO": {
    "uuid": "5fe2bad3-d785-394e-9949-89786b8a63d2", "id": 201, "host": "10.1.1.1",
    "poolType": "Filesystem", "path": "C:\\pool", "port": 0}}
CSHARP_CALLS = (8 + 3) + 2 * 11 + 2 * (14 + 5 + 4) + 2
CSHARP_WAITS = (2 + 1) + 2 * 2 + 2 * (2 + 1 + 1) + 1
CSHARP_POLL_S = 1.0


def _disk(uuid: str, kind: str, seq: int) -> dict[str, Any]:
    return {"data": {VOLUME: {"uuid": uuid, "volumeType": kind, "format": "VHDX",
                              "dataStore": copy.deepcopy(STORE), "size": 1 << 26}},
            "diskSeq": seq, "type": kind}


def _nic(index: int, vlan: int) -> dict[str, Any]:
    return {"deviceId": index, "networkRateMbps": 100, "mac": f"02:00:51:2c:00:{index + 10:02x}",
            "broadcastType": "Vlan", "type": "Guest", "broadcastUri": f"vlan://{vlan}"}


def start_body(name: str, drive_c: Path) -> bytes:
    """A StartCommand with a ROOT and a DATADISK volume (files created) and 2 NICs."""
    disks = []
    for kind, seq in (("ROOT", 0), ("DATADISK", 1)):
        uuid = f"{name}-{kind.lower()}"
        vhd.create(drive_c / "pool" / f"{uuid}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC,
                   1 << 26)
        disks.append(_disk(uuid, kind, seq))
    vm = {"id": 1, "name": name, "type": "User", "cpus": 2, "speed": 2000,
          "minRam": 512 << 20, "maxRam": 512 << 20, "uuid": f"uuid-{name}",
          "disks": disks, "nics": [_nic(0, 100), _nic(1, 200)]}
    return json.dumps({"vm": vm, "contextMap": {}, "wait": 0}).encode()


async def start_one(agent: Agent, body: bytes) -> float:
    started = time.perf_counter()
    answer = json.loads(await agent.dispatch(START, body))
    assert answer[0]["com.cloud.agent.api.StartAnswer"]["result"] is True, answer
    return time.perf_counter() - started


def emulator_of(agent: Agent) -> EmulatorCim:
    inner = getattr(agent.cim, "inner", None)
    assert isinstance(inner, EmulatorCim)
    return inner


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        config_file = root / "agent.toml"
        config_file.write_text(f'[agent]\nstate_dir = "{root / "state"}"\nbackend = "emulator"\n'
                               f"[emulator]\ncall_latency_s = {CALL_S}\n"
                               f"job_duration_s = {JOB_S}\nmemory_mb = 262144\n")
        agent = build_agent(load_config(config_file))
        drive_c = root / "state" / "emulator" / "drives" / "C"
        (drive_c / "pool").mkdir(parents=True)
        await start_one(agent, start_body("warm-up", drive_c))  # fills the caches
        before = emulator_of(agent).round_trips()
        single = await start_one(agent, start_body("i-2-1-VM", drive_c))
        spent = emulator_of(agent).round_trips() - before
        bodies = [start_body(f"i-2-{index + 100}-VM", drive_c) for index in range(32)]
        started = time.perf_counter()
        await asyncio.gather(*(start_one(agent, body) for body in bodies))
        concurrent = time.perf_counter() - started
        await agent.cim.close()
    csharp = CSHARP_CALLS * CALL_S + CSHARP_WAITS * max(JOB_S, CSHARP_POLL_S)
    report("vm", [
        ("StartCommand (2 disks, 2 NICs): calls / waits", f"{spent.calls} / {spent.waits}",
         f"C# agent: {CSHARP_CALLS} / {CSHARP_WAITS}", "-"),
        ("StartCommand modelled wall time", f"{single:.2f} s",
         f"C# agent priced: {csharp:.1f} s", verdict(single < csharp)),
        ("32 concurrent StartCommands", f"{concurrent:.2f} s ({concurrent / single:.2f}x)",
         "< 3x one start", verdict(concurrent < 3 * single)),
    ])


if __name__ == "__main__":
    asyncio.run(main())
