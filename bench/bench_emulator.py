"""Emulator budgets: summary of 1000 VMs, opening a 1000-VM state, `cim query` of all VMs.

Budgets (issue: foundation): GetSummaryInformation over 1000 VMs is one call in < 50 ms;
the emulator opens a state directory holding 1000 VMs in < 1 s; `hyperv-agent cim query`
of all VMs on that host returns in < 1 s.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import median_ms, report, require, timed_async, verdict
from hyperv_agent.cim import wql
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig

VM_COUNT = 1000


async def seed(cim: EmulatorCim, count: int) -> None:
    """``count`` VMs defined through DefineSystem, as an operator's host would hold them."""
    vsms = (await cim.query(wql.select("Msvm_VirtualSystemManagementService")))[0].path
    assert vsms is not None
    template = await cim.spawn("Msvm_VirtualSystemSettingData")
    for index in range(count):
        settings = template.updated(ElementName=f"i-2-{index}-VM", Notes=[f"uuid-{index}"])
        result = await cim.invoke(vsms, "DefineSystem", {"SystemSettings": settings})
        assert result.return_value in (0, 4096)


async def summary_ms(cim: EmulatorCim) -> tuple[float, int, int]:
    vsms = (await cim.query(wql.select("Msvm_VirtualSystemManagementService")))[0].path
    assert vsms is not None
    request = {"SettingData": None, "RequestedInformation": [0, 1, 4, 100, 101, 103, 104, 105]}
    before = cim.round_trips()
    result = await cim.invoke(vsms, "GetSummaryInformation", request)
    calls = (cim.round_trips() - before).calls
    count = len(result.instances("SummaryInformation"))
    samples = await timed_async(lambda: cim.invoke(vsms, "GetSummaryInformation", request), 15)
    return median_ms(samples), calls, count


def open_ms(state_dir: Path) -> float:
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        EmulatorCim.open(EmulatorConfig(state_dir=state_dir)).host.close()
        samples.append(time.perf_counter() - started)
    return min(samples) * 1000


def cli_query_ms(root: Path) -> tuple[float, int]:
    query = "SELECT Name, ElementName, EnabledState FROM Msvm_ComputerSystem " \
            "WHERE Caption = 'Virtual Machine'"
    samples, found = [], 0
    for _ in range(3):
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "hyperv_agent.cli", "cim", "query",
                              "--state-dir", str(root), query],
                             capture_output=True, text=True, check=True)
        samples.append(time.perf_counter() - started)
        found = run.stdout.count('"__CLASS"')
    return min(samples) * 1000, found


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        state_dir = root / "emulator"  # where `hyperv-agent --state-dir root` keeps it
        cim = EmulatorCim.open(EmulatorConfig(state_dir=state_dir, async_jobs=False))
        started = time.perf_counter()
        await seed(cim, VM_COUNT)
        seed_s = time.perf_counter() - started
        summary, calls, count = await summary_ms(cim)
        require(count == VM_COUNT, f"a summary of {VM_COUNT} VMs (it had {count})")
        await cim.close()
        opened = open_ms(state_dir)
        cli, found = cli_query_ms(root)
        require(found == VM_COUNT, f"a query of {VM_COUNT} VMs (it found {found})")
    report("emulator", [
        (f"define {VM_COUNT} VMs (setup)", f"{seed_s:.2f} s", "-", "-"),
        (f"GetSummaryInformation, {count} VMs: calls", str(calls), "1", verdict(calls == 1)),
        (f"GetSummaryInformation, {count} VMs: median", f"{summary:.1f} ms", "< 50 ms",
         verdict(summary < 50)),
        (f"open state dir with {VM_COUNT} VMs", f"{opened:.0f} ms", "< 1000 ms",
         verdict(opened < 1000)),
        (f"`hyperv-agent cim query` of all VMs ({found})", f"{cli:.0f} ms", "< 1000 ms",
         verdict(cli < 1000 and found == VM_COUNT)),
    ])


if __name__ == "__main__":
    asyncio.run(main())
