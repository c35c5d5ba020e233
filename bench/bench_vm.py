"""VM lifecycle budgets under the emulator's latency model (20 ms a call, 300 ms a job).

- the modelled wall time of a StartCommand with 2 disks and 2 NICs, beside the same work
  priced at the C# agent's round-trip counts (docs/architecture.md, "Round trips": define
  + CPU/memory 8 calls + 2 waits and TagVm 3 + 1; each disk ~11 calls + 2 waits; each NIC
  ≥14 + 2, its VLAN 5 + 1 and bandwidth 4 + 1; start 2 + 1; its job waits poll once a
  second, so each costs at least 1 s);
- 32 concurrent StartCommands for different VMs finish within 3x one StartCommand's time;
- the round trips of each step of a start (told apart by what each round trip does,
  bench/start_steps.py; caches warm), of re-creating a stopped VM, of a system VM's ISO
  and boot arguments, and of the stats of every VM, beside the C# agent's counts for the
  same step (docs/architecture.md, "Round trips") and the project's budget;
- the modelled wall time of the stats of every VM (its I/O baseline already set), beside
  the C# agent's 2N+2 calls priced at 20 ms each.
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import start_steps
from bench.common import report, require, verdict
from hyperv_agent.cim.counting import CountingCim
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
STATS = "com.cloud.agent.api.GetVmStatsCommand"
SHARE = "\\\\10.1.1.2\\secondary"
SECONDARY = "cifs://10.1.1.2/secondary?user=admin&password=secret"
#: Per step: the C# agent's count (docs/architecture.md, "Round trips") and the budget
#: (calls, waits; None: no budget).
STEP_FIGURES: dict[str, tuple[str, tuple[int, int] | None]] = {
    start_steps.STEP_DEFINE: ("8 / 2 (+ TagVm 3 / 1)", (3, 2)),
    start_steps.STEP_CONTROLLERS: ("SCSI controller 3 / 1", None),
    start_steps.STEP_DISK: ("VHD 11+k / 2; system VM ISO 11 / 2", (3, 2)),
    start_steps.STEP_NIC: ("NIC >=14 / 2 + VLAN 5 / 1 + rate 4 / 1", (3, 3)),
    start_steps.STEP_BOOT_ORDER: ("-", (2, 1)),
    start_steps.STEP_KVP: ("4 / 1", (1, 1)),
    start_steps.STEP_POWER_ON: ("2 / 1", (1, 1)),
    start_steps.STEP_REMOVE: ("~10+3p / 2+p (+ shutdown polls)", (2, 2)),
}


class StepCosts(start_steps.StartSteps):
    """The round trips of every step of the starts observed, by kind."""

    async def observed(self, agent: Agent, body: bytes) -> None:
        """Start ``body``, adding the steps of that start."""
        assert isinstance(agent.cim, CountingCim)
        with agent.cim.observe() as trips:
            await start_one(agent, body)
        self.steps += start_steps.start_steps(trips).steps

    def rows(self, label: str) -> list[tuple[str, str, str, str]]:
        """One row per kind of step: the worst step of that kind."""
        rows = []
        for kind, (csharp, budget) in STEP_FIGURES.items():
            spent = self.of(kind)
            if not spent:
                continue
            calls, waits = max(c for c, _ in spent), max(w for _, w in spent)
            rows.append((f"{label}: {kind} (x{len(spent)}, worst)", f"{calls} / {waits}",
                         f"C# agent: {csharp}" + (f"; budget {budget[0]} / {budget[1]}"
                                                  if budget else ""),
                         verdict(calls <= budget[0] and waits <= budget[1])
                         if budget else "-"))
        return rows


def _disk(uuid: str, kind: str, seq: int) -> dict[str, Any]:
    return {"data": {VOLUME: {"uuid": uuid, "volumeType": kind, "format": "VHDX",
                              "dataStore": copy.deepcopy(STORE), "size": 1 << 26}},
            "diskSeq": seq, "type": kind}


def _nic(index: int, vlan: int) -> dict[str, Any]:
    return {"deviceId": index, "networkRateMbps": 100, "mac": f"02:00:51:2c:00:{index + 10:02x}",
            "broadcastType": "Vlan", "type": "Guest", "broadcastUri": f"vlan://{vlan}"}


def start_body(name: str, drive_c: Path, *, system: bool = False, uefi: bool = False) -> bytes:
    """A StartCommand with a ROOT and a DATADISK volume (files created) and 2 NICs; with
    ``system`` a console proxy with boot arguments and the image store's ISO; with ``uefi``
    a generation 2 VM (the DATADISK listed first, so its boot order is set)."""
    disks = []
    for kind, seq in (("ROOT", 0), ("DATADISK", 1)):
        uuid = f"{name}-{kind.lower()}"
        path = drive_c / "pool" / f"{uuid}.vhdx"
        if not path.exists():
            vhd.create(path, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
        disks.append(_disk(uuid, kind, seq))
    vm = {"id": 1, "name": name, "type": "ConsoleProxy" if system else "User", "cpus": 2,
          "speed": 2000, "minRam": 512 << 20, "maxRam": 512 << 20, "uuid": f"uuid-{name}",
          "disks": disks[::-1] if uefi else disks, "nics": [_nic(0, 100), _nic(1, 200)]}
    if uefi:
        vm["bootType"] = "UEFI"
    body: dict[str, Any] = {"vm": vm, "contextMap": {}, "wait": 0}
    if system:
        vm["bootArgs"] = f" template=domP type=consoleproxy name={name}"
        body["secondaryStorage"] = SECONDARY
    return json.dumps(body).encode()


async def start_one(agent: Agent, body: bytes) -> float:
    started = time.perf_counter()
    answer = json.loads(await agent.dispatch(START, body))
    assert answer[0]["com.cloud.agent.api.StartAnswer"]["result"] is True, answer
    return time.perf_counter() - started


async def _require_running(agent: Agent, names: list[str]) -> None:
    """Every VM of ``names`` runs on the emulated host (each has 2 disks and 2 NICs)."""
    found = {str(vm["ElementName"]): vm["EnabledState"] for vm in await emulator_of(
        agent).query("SELECT ElementName, EnabledState FROM Msvm_ComputerSystem "
                     "WHERE Caption = 'Virtual Machine'")}
    require(all(found.get(name) == 2 for name in names),
            f"{len(names)} VMs started and running (running: "
            f"{sum(found.get(name) == 2 for name in names)})")


def emulator_of(agent: Agent) -> EmulatorCim:
    assert agent.emulator is not None
    return agent.emulator


async def step_rows(agent: Agent, drive_c: Path) -> list[tuple[str, str, str, str]]:
    """Per-step round trips (caches warm): a user VM, the same VM re-created after a
    power-off, a system VM; then the stats of every VM on the host in one command."""
    cim = emulator_of(agent)
    await start_one(agent, start_body("v-1-VM", drive_c, system=True))  # warms the KVP cache
    costs = StepCosts()
    await costs.observed(agent, start_body("i-2-2-VM", drive_c))
    (vm,) = [v for v in await cim.query(
        "SELECT * FROM Msvm_ComputerSystem WHERE ElementName = 'i-2-2-VM'") if v.path]
    assert vm.path is not None
    await cim.invoke(vm.path, "RequestStateChange", {"RequestedState": 3})
    await asyncio.sleep(JOB_S * 2)
    await costs.observed(agent, start_body("i-2-2-VM", drive_c))
    await costs.observed(agent, start_body("v-3-VM", drive_c, system=True))
    await costs.observed(agent, start_body("i-2-4-VM", drive_c, uefi=True))
    rows = costs.rows("StartCommand step")
    names = [str(v["ElementName"]) for v in await cim.query(
        "SELECT * FROM Msvm_ComputerSystem WHERE Caption = 'Virtual Machine'")]
    body = json.dumps({"vmNames": names, "contextMap": {}, "wait": 0}).encode()
    await agent.dispatch(STATS, body)  # sets each running VM's I/O baseline
    before, started = cim.round_trips(), time.perf_counter()
    stats = json.loads(await agent.dispatch(STATS, body))
    wall_s, spent = time.perf_counter() - started, cim.round_trips() - before
    assert stats[0]["com.cloud.agent.api.GetVmStatsAnswer"]["result"] is True, stats
    csharp_calls = 2 * len(names) + 2
    rows.append((f"GetVmStatsCommand, {len(names)} VMs", f"{spent.calls} / {spent.waits}",
                 f"C# agent: {csharp_calls} (2N+2); budget 1",
                 verdict(spent.calls == 1)))
    rows.append((f"GetVmStatsCommand, {len(names)} VMs: modelled wall time",
                 f"{wall_s * 1000:.0f} ms ({wall_s / CALL_S:.1f} calls' latency)",
                 f"C# agent priced: {csharp_calls * CALL_S * 1000:.0f} ms",
                 verdict(wall_s < csharp_calls * CALL_S)))
    return rows


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        config_file = root / "agent.toml"
        (root / "secondary" / "systemvm").mkdir(parents=True)
        (root / "secondary" / "systemvm" / "systemvm-4.2.0.iso").write_bytes(b"\0" * 4096)
        config_file.write_text(f'[agent]\nstate_dir = "{root / "state"}"\nbackend = "emulator"\n'
                               f"[emulator]\ncall_latency_s = {CALL_S}\n"
                               f"job_duration_s = {JOB_S}\nmemory_mb = 262144\n"
                               f"[emulator.shares]\n'{SHARE}' = '{root / 'secondary'}'\n")
        agent = build_agent(load_config(config_file, local_storage_path="C:\\pool"))
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
        await _require_running(agent, [f"i-2-{index + 100}-VM" for index in range(32)])
        steps = await step_rows(agent, drive_c)
        await agent.close()
    csharp = CSHARP_CALLS * CALL_S + CSHARP_WAITS * max(JOB_S, CSHARP_POLL_S)
    report("vm", [
        ("StartCommand (2 disks, 2 NICs): calls / waits", f"{spent.calls} / {spent.waits}",
         f"C# agent: {CSHARP_CALLS} / {CSHARP_WAITS}", "-"),
        ("StartCommand modelled wall time", f"{single:.2f} s",
         f"C# agent priced: {csharp:.1f} s", verdict(single < csharp)),
        ("32 concurrent StartCommands", f"{concurrent:.2f} s ({concurrent / single:.2f}x)",
         "< 3x one start", verdict(concurrent < 3 * single)),
        *steps,
    ])


if __name__ == "__main__":
    asyncio.run(main())
