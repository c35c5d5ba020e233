"""Start/stop cycles through the agent leave nothing behind: no VM, a steady number of
jobs, and no statistics baseline of a VM that is gone (the deterministic part of
bench/bench_cycles.py)."""

from __future__ import annotations

from pathlib import Path

from bench.bench_cycles import CYCLE_S, cycle, open_agent, stored_jobs, stored_vms
from bench.bench_vm import emulator_of

from hyperv_agent.hyperv import vmio


async def test_jobs_stored_stay_steady_and_no_vm_is_left_when_cycling(tmp_path: Path) -> None:
    retention_s = 4 * CYCLE_S
    agent, clock = open_agent(tmp_path, retention_s=retention_s)
    cim = emulator_of(agent)
    try:
        counts = []
        for _ in range(24):
            await cycle(agent, clock, "i-2-7-VM")
            counts.append(stored_jobs(cim))
        per_cycle = counts[0]
        assert max(counts) <= per_cycle * (retention_s / CYCLE_S + 2)
        assert counts[-1] == counts[-7]  # steady: as many jobs expire as start
        assert stored_vms(cim) == 0
        # 24 VMs of one name read and gone: the baseline of the last is left until the
        # next listing of every VM, that of the others went with the listing after each.
        assert len(agent.opened.hyperv.kept(vmio._Kept).seen) == 1
    finally:
        await agent.close()
