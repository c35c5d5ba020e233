"""WinRM budgets: the agent on the wsman backend, through the emulator's WinRM face on
loopback, beside the agent on the same emulated host directly, in the same run.

- HostVmStateReport for 1000 VMs in at most 1 + ceil(N/500) WS-Management requests and
  under 150 ms (median of 15, caches warm), over HTTP with NTLM and message encryption
  and over HTTPS with Basic; the first report (cold: class metadata, the service lookup
  and learning that every VM's summary overflows MaxEnvelopeSize) is printed too;
- a StartCommand (2 disks, 2 NICs, caches warm) sends as many requests as the emulated
  host counts round trips (calls and job polls), and the same number as the emulator
  counts for the agent on it directly.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_emulator import seed
from bench.bench_vm import start_body, start_one
from bench.common import report, require, verdict
from hyperv_agent import winrm_face
from hyperv_agent.cim.wsman.backend import WsmanCim
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.instruments import RoundTrips
from hyperv_agent.emulator.winrm.auth import Account
from hyperv_agent.service import Agent, build_agent

VM_COUNT = 1000
REPORT = "org.apache.cloudstack.HostVmStateReportCommand"
ACCOUNT = Account("bench", "Bench-Pa55!")
KINDS = (("HTTP+NTLM+encryption", False, "ntlm"), ("HTTPS+Basic", True, "basic"))
BUDGET_MS = 150.0


def budget_requests(vm_count: int) -> int:
    """The budget of WS-Management requests for one state report of ``vm_count`` VMs."""
    return 1 + math.ceil(vm_count / 500)


def primitives(spent: RoundTrips) -> int:
    """What the emulated host served: the operation's calls and its job polls."""
    return spent.calls + spent["job_poll"]


async def state_report(agent: Agent, vm_count: int) -> float:
    started = time.perf_counter()
    answer = json.loads(await agent.dispatch(REPORT, b"{}"))
    elapsed = time.perf_counter() - started
    running = len(answer)  # one entry per running VM (half the seeded, and the started)
    require(vm_count // 2 <= running <= vm_count // 2 + 8,
            f"a state report of {vm_count // 2} running VMs (and those started; it "
            f"listed {running})")
    return elapsed


async def direct_rows(agent: Agent, emulator: EmulatorCim, drive_c: Path, vm_count: int
                      ) -> tuple[list[tuple[str, str, str, str]], int]:
    await state_report(agent, vm_count)  # finds the service
    before = emulator.round_trips()
    samples = [await state_report(agent, vm_count) for _ in range(15)]
    trips = primitives(emulator.round_trips() - before) / 15
    await start_one(agent, start_body("warm-direct", drive_c))
    before = emulator.round_trips()
    await start_one(agent, start_body("i-2-5001-VM", drive_c))
    start_trips = primitives(emulator.round_trips() - before)
    return [(f"HostVmStateReport, {vm_count} VMs, emulator directly", f"{trips:.0f} round "
             f"trips, {statistics.median(samples) * 1000:.1f} ms", "-", "-"),
            ("StartCommand (2 disks, 2 NICs), emulator directly",
             f"{start_trips} round trips (calls + job polls)", "-", "-")], start_trips


async def face_rows(config: AgentConfig, emulator: EmulatorCim, drive_c: Path, label: str,
                    use_tls: bool, auth: str, direct_start: int, vm_count: int
                    ) -> list[tuple[str, str, str, str]]:
    face = await winrm_face.start_face(config, "127.0.0.1", 0, ACCOUNT, use_tls, emulator)
    over_winrm = winrm_face.agent_config(config, face.url, ACCOUNT, auth)
    own = config.agent.state_dir.with_name(f"state-{label}")  # one agent a state directory
    agent = build_agent(over_winrm.model_copy(update={
        "agent": over_winrm.agent.model_copy(update={"state_dir": own})}))
    try:
        served = face.service
        before = served.requests
        cold_ms = await state_report(agent, vm_count) * 1000
        cold = served.requests - before
        before = served.requests
        samples = [await state_report(agent, vm_count) for _ in range(15)]
        per_report = (served.requests - before) / 15
        median_ms = statistics.median(samples) * 1000
        await start_one(agent, start_body(f"warm-{auth}", drive_c))
        before, trips = served.requests, emulator.round_trips()
        await start_one(agent, start_body(f"i-2-{5002 + use_tls}-VM", drive_c))
        requests = served.requests - before
        host_trips = primitives(emulator.round_trips() - trips)
        assert isinstance(agent.opened.wsman, WsmanCim)  # the agent drove the host over WinRM
    finally:
        await agent.close()
        await face.runner.cleanup()
    same = requests == host_trips == direct_start
    return [
        (f"HostVmStateReport, {vm_count} VMs, {label}: requests",
         f"{per_report:.0f} (first report: {cold}, {cold_ms:.0f} ms)",
         f"<= {budget_requests(vm_count)}", verdict(per_report <= budget_requests(vm_count))),
        (f"HostVmStateReport, {vm_count} VMs, {label}: median", f"{median_ms:.1f} ms",
         f"< {BUDGET_MS:.0f} ms", verdict(median_ms < BUDGET_MS)),
        (f"StartCommand, {label}: requests / host round trips",
         f"{requests} / {host_trips}", f"equal, and = {direct_start} (directly)",
         verdict(same)),
    ]


async def measure(root: Path, vm_count: int = VM_COUNT) -> list[tuple[str, str, str, str]]:
    """The rows of this benchmark, for a host of ``vm_count`` VMs (half running) under
    ``root``: the agent on the emulator directly, then through the WinRM face."""
    config_file = root / "agent.toml"
    config_file.write_text(f'[agent]\nstate_dir = "{root / "state"}"\n'
                           'backend = "emulator"\nlocal_storage_path = \'C:\\pool\'\n'
                           '[emulator]\nmemory_mb = 1048576\n')
    config = load_config(config_file)
    agent = build_agent(config)
    emulator = agent.emulator
    assert isinstance(emulator, EmulatorCim)
    await seed(emulator, vm_count)
    running = await emulator.query("SELECT * FROM Msvm_ComputerSystem WHERE Caption = "
                                   "'Virtual Machine'")
    for vm in running[: vm_count // 2]:  # half of them running
        assert vm.path is not None
        result = await emulator.invoke(vm.path, "RequestStateChange", {"RequestedState": 2})
        require(result.return_value in (0, 4096), f"VM {vm['ElementName']} started")
    drive_c = root / "state" / "emulator" / "drives" / "C"
    (drive_c / "pool").mkdir(parents=True, exist_ok=True)
    rows, direct_start = await direct_rows(agent, emulator, drive_c, vm_count)
    await asyncio.sleep(0)
    for label, use_tls, auth in KINDS:
        rows += await face_rows(config, emulator, drive_c, label, use_tls, auth,
                                direct_start, vm_count)
    await emulator.close()
    return rows


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        rows = await measure(Path(scratch))
    report("wsman", rows)


if __name__ == "__main__":
    asyncio.run(main())
