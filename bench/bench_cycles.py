"""Memory over VM start/stop cycles: RSS after 2,000 cycles within 10 MB of RSS after 100.

Each cycle is a StartCommand (2 disks, 2 NICs), a GetVmStatsCommand, a StopCommand (which
removes the VM's definition, its disks kept) and a HostVmStateReportCommand for the same VM
name, a new VM each time, through the agent's dispatcher, as a management server keeps
asking for statistics and state reports; on the emulator with its default job retention
(300 s). The emulated host's clock advances 15 s a
cycle (a start and a stop take at least that on a real host), so jobs reach their
retention as they would there. Printed beside RSS: the jobs still stored.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import tempfile
import time
from pathlib import Path

from bench.bench_vm import START, emulator_of, start_body
from bench.common import report, verdict
from hyperv_agent.config import load_config
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.service import Agent, build_agent

STOP = "com.cloud.agent.api.StopCommand"
STATS = "com.cloud.agent.api.GetVmStatsCommand"
REPORT = "org.apache.cloudstack.HostVmStateReportCommand"
CYCLE_S = 15.0  # emulated time a start and a stop take
WARM_CYCLES, CYCLES = 100, 2000
RSS_BUDGET_MB = 10.0


class SteppedClock:
    """The emulated host's clock: real time plus the steps taken."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


def open_agent(root: Path, retention_s: float | None = None) -> tuple[Agent, SteppedClock]:
    """The agent on an emulated host under ``root``, its clock stepped by the caller."""
    config_file = root / "agent.toml"
    retention = "" if retention_s is None else f"job_retention_s = {retention_s}\n"
    config_file.write_text(f"[emulator]\nmemory_mb = 262144\n{retention}")
    agent = build_agent(load_config(config_file, state_dir=root / "state", backend="emulator",
                                    local_storage_path="C:\\pool"))
    clock = SteppedClock()
    emulator_of(agent).host.clock = clock
    (root / "state" / "emulator" / "drives" / "C" / "pool").mkdir(parents=True, exist_ok=True)
    return agent, clock


async def cycle(agent: Agent, clock: SteppedClock, name: str) -> None:
    """Start ``name``, read its statistics, stop it, report the host's VMs, and let
    CYCLE_S pass on the host."""
    drive_c = emulator_of(agent).host.config.drive_root("C")
    started = json.loads(await agent.dispatch(START, start_body(name, drive_c)))
    assert started[0]["com.cloud.agent.api.StartAnswer"]["result"] is True, started
    stats = json.dumps({"vmNames": [name], "hostName": "hv", "contextMap": {}, "wait": 0})
    read = json.loads(await agent.dispatch(STATS, stats.encode()))
    assert name in read[0]["com.cloud.agent.api.GetVmStatsAnswer"]["vmStatsMap"], read
    stop = json.dumps({"vmName": name, "contextMap": {}, "wait": 0}).encode()
    stopped = json.loads(await agent.dispatch(STOP, stop))
    assert stopped[0]["com.cloud.agent.api.StopAnswer"]["result"] is True, stopped
    reported = json.loads(await agent.dispatch(REPORT, b"{}"))
    assert reported == [], reported  # no VM is left on the host
    clock.advance(CYCLE_S)


def stored_jobs(cim: EmulatorCim) -> int:
    return sum(1 for _ in cim.host.records("CIM_ConcreteJob"))


def stored_vms(cim: EmulatorCim) -> int:
    return sum(1 for vm in cim.host.records("Msvm_ComputerSystem")
               if vm["Caption"] == "Virtual Machine")


def rss_mb() -> float:
    """Resident memory now (not the peak), after a full collection."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1_000_000


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        agent, clock = open_agent(Path(scratch))
        cim = emulator_of(agent)
        started = time.perf_counter()
        for index in range(CYCLES):
            await cycle(agent, clock, "i-2-7-VM")
            if index + 1 == WARM_CYCLES:
                warm_rss, warm_jobs = rss_mb(), stored_jobs(cim)
        elapsed = time.perf_counter() - started
        final_rss, final_jobs, vms = rss_mb(), stored_jobs(cim), stored_vms(cim)
        await agent.close()
    growth = final_rss - warm_rss
    report("cycles", [
        (f"RSS after {WARM_CYCLES} start/stop cycles", f"{warm_rss:.1f} MB", "-", "-"),
        (f"RSS after {CYCLES} start/stop cycles", f"{final_rss:.1f} MB",
         f"within {RSS_BUDGET_MB:.0f} MB of the first", verdict(abs(growth) <= RSS_BUDGET_MB)),
        ("RSS growth", f"{growth:+.1f} MB", f"<= {RSS_BUDGET_MB:.0f} MB",
         verdict(abs(growth) <= RSS_BUDGET_MB)),
        (f"jobs stored after {WARM_CYCLES} / {CYCLES} cycles", f"{warm_jobs} / {final_jobs}",
         "steady (300 s retention)", verdict(final_jobs <= warm_jobs)),
        ("VMs left defined", str(vms), "0", verdict(vms == 0)),
        (f"{CYCLES} cycles took", f"{elapsed:.0f} s", "-", "-"),
    ])


if __name__ == "__main__":
    asyncio.run(main())
