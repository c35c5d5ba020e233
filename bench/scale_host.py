"""A host being filled for the scale benchmark: the agent in-process on the emulator
(no latency model), VMs added two at a time, commands timed with their round trips and
the longest event-loop stall they caused.

Adding a VM pair is what fills a real host: a CloudStack VM started through the agent's
StartCommand (a root disk and a NIC; it runs) and a stopped VM of the operator's own,
defined with a disk through the same Hyper-V building blocks (no CloudStack note, so
state reports leave it alone). Half the VMs of the host therefore run.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperv_agent.config import load_config
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.instruments import RoundTrips
from hyperv_agent.hyperv import build, devices, vms
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.service import Agent, build_agent

START = "com.cloud.agent.api.StartCommand"
STOP = "com.cloud.agent.api.StopCommand"
CHECK = "com.cloud.agent.api.CheckVirtualMachineCommand"
STATS = "com.cloud.agent.api.GetVmStatsCommand"
REPORT = "org.apache.cloudstack.HostVmStateReportCommand"
VOLUME = "org.apache.cloudstack.storage.to.VolumeObjectTO"
POOL = "C:\\pool"
DISK_BYTES = 1 << 26


@dataclass(frozen=True)
class Timed:
    """One command: wall seconds, round trips (calls, waits), longest loop stall, answer."""

    seconds: float
    calls: int
    waits: int
    stall_s: float
    answer: Any


class StallMonitor:
    """The longest time the event loop went without running a 1 ms timer."""

    def __init__(self) -> None:
        self.longest_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            self.longest_s = max(self.longest_s, time.perf_counter() - before - 0.001)

    async def __aenter__(self) -> StallMonitor:
        self._task = asyncio.create_task(self._watch())
        await asyncio.sleep(0)  # let the watcher take its first timestamp
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        await asyncio.sleep(0.002)  # let it see the end of a stall
        self._task.cancel()


class FilledHost:
    """The agent under test and the host it drives."""

    def __init__(self, root: Path) -> None:
        self.root = root
        config = root / "agent.toml"
        config.write_text(f'[agent]\nstate_dir = "{root / "state"}"\nbackend = "emulator"\n'
                          f"local_storage_path = '{POOL}'\n"
                          "[emulator]\nmemory_mb = 16777216\ncpus = 1024\n")
        self.agent: Agent = build_agent(load_config(config))
        self.pool = root / "state" / "emulator" / "drives" / "C" / "pool"
        self.pool.mkdir(parents=True)
        self.template = root / "template.vhdx"
        vhd.create(self.template, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, DISK_BYTES)
        self.pair_s: list[float] = []  # the time each pair took to add, in order

    @property
    def emulator(self) -> EmulatorCim:
        assert self.agent.emulator is not None
        return self.agent.emulator

    @property
    def pairs(self) -> int:
        return len(self.pair_s)

    @property
    def vm_count(self) -> int:
        return 2 * self.pairs

    @property
    def adding_s(self) -> float:
        """Time spent adding VMs (commands only, not file copies)."""
        return sum(self.pair_s)

    def disk(self, name: str) -> str:
        """A disk file of its own name in the pool, its host path: a hard link of the
        template, since nothing writes to it. Copies would put gigabytes of the fixture's
        own data in the kernel's write-back while the timed commands run (5000 VMs, two
        4 MB files each), and the fill would measure that rather than the agent."""
        os.link(self.template, self.pool / f"{name}.vhdx")
        return f"{POOL}\\{name}.vhdx"

    async def command(self, fqcn: str, body: dict[str, Any]) -> Timed:
        """Dispatch one command in-process, as the HTTPS endpoint would."""
        before = self.emulator.round_trips()
        async with StallMonitor() as monitor:
            started = time.perf_counter()
            raw = await self.agent.dispatch(fqcn, json.dumps(body).encode())
            seconds = time.perf_counter() - started
        spent: RoundTrips = self.emulator.round_trips() - before
        return Timed(seconds, spent.calls, spent.waits, monitor.longest_s, json.loads(raw))

    async def fill_to(self, vm_count: int) -> None:
        while self.vm_count < vm_count:
            await self.add_pair()

    async def add_pair(self) -> None:
        index = self.pairs
        cloudstack, own = self.disk(f"i-2-{index}-VM-root"), self.disk(f"ops-{index}")
        body = json.dumps(start_body(f"i-2-{index}-VM", cloudstack)).encode()
        started = time.perf_counter()
        answer = json.loads(await self.agent.dispatch(START, body))
        assert answer[0]["com.cloud.agent.api.StartAnswer"]["result"] is True, answer
        await self.operator_vm(f"ops-{index}", own)
        self.pair_s.append(time.perf_counter() - started)

    async def operator_vm(self, name: str, disk: str) -> None:
        hv = self.agent.opened.hyperv
        spec = build.VmSpec(name=name, notes=("kept by the operator",), generation=1,
                            cpus=1, memory_mb=512)
        vm = await build.define_vm(hv, spec)
        controller = await devices.add_scsi_controller(hv, vm)
        await devices.attach_disk(hv, vm, controller, 0, disk)

    async def running_count(self) -> int:
        listed = await vms.list_vms(HyperV(self.emulator))
        return sum(1 for vm in listed if vm.power is vms.PowerState.RUNNING)


def start_body(name: str, disk: str) -> dict[str, Any]:
    """A StartCommand for a one-disk, one-NIC CloudStack VM, as the management server
    sends it."""
    store = {"org.apache.cloudstack.storage.to.PrimaryDataStoreTO": {
        "uuid": "5fe2bad3-d785-394e-9949-89786b8a63d2", "id": 201, "host": "10.1.1.1",
        "poolType": "Filesystem", "path": POOL, "port": 0}}
    root = {"data": {VOLUME: {"uuid": disk.rsplit("\\", 1)[1].removesuffix(".vhdx"),
                              "volumeType": "ROOT", "format": "VHDX", "dataStore": store,
                              "size": DISK_BYTES}},
            "diskSeq": 0, "type": "ROOT"}
    nic = {"deviceId": 0, "networkRateMbps": 100, "mac": "02:00:51:2c:00:10",
           "broadcastType": "Vlan", "type": "Guest", "broadcastUri": "vlan://100"}
    vm = {"id": 1, "name": name, "type": "User", "cpus": 1, "speed": 2000,
          "minRam": 512 << 20, "maxRam": 512 << 20, "uuid": f"uuid-{name}",
          "disks": [root], "nics": [nic]}
    return {"vm": vm, "contextMap": {}, "wait": 0}


def stop_body(name: str) -> dict[str, Any]:
    return {"vmName": name, "checkBeforeCleanup": False, "forceStop": False,
            "isProxy": False, "contextMap": {}, "wait": 0}


def _answer(timed: Timed) -> dict[str, Any]:
    ((_, fields),) = timed.answer[0].items()
    assert isinstance(fields, dict)
    return fields


def answer_of(timed: Timed) -> dict[str, Any]:
    """The fields of a command's single answer."""
    return _answer(timed)


async def repeated(rounds: int, run: Callable[[int], Awaitable[Timed]]) -> list[Timed]:
    return [await run(index) for index in range(rounds)]
