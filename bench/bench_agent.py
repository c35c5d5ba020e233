"""Agent budgets (issue: the agent, host registration and health).

- PingRoutingCommand over HTTPS, a new TLS connection per request as the management server
  makes them, costs < 1.2x the bare liveness route measured in the same run;
- HostVmStateReport for 1000 VMs is one backend round trip and answers in < 50 ms;
- the agent's resident memory with 1000 VMs is < 120 MB;
- ``serve`` is ready (answers the liveness route) in < 1.5 s.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from bench.bench_emulator import seed
from bench.common import report, verdict
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig

VM_COUNT = 1000
PORT, ADMIN_PORT = 18350, 19350
URL = f"https://127.0.0.1:{PORT}/api/HypervResource"
PING = {"_hostVmStateReport": {}, "_gatewayAccessible": True, "_vnetAccessible": True,
        "hostType": "Routing", "hostId": 1, "contextMap": {}, "wait": 0}


def _client_ssl() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _request(method: str, url: str, body: bytes | None = None) -> float:
    """One request on its own connection and TLS handshake; seconds taken."""
    connector = aiohttp.TCPConnector(ssl=_client_ssl(), force_close=True)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session, session.request(
        method, url, data=body, headers={"content-type": "application/json"}
    ) as reply:
        await reply.read()
        assert reply.status == 200, reply.status
    return time.perf_counter() - started


async def ping_ratio(rounds: int = 150) -> tuple[float, float]:
    ping_body = json.dumps(PING).encode()
    ping, liveness = [], []
    for _ in range(rounds):  # interleaved, so both see the same machine
        liveness.append(await _request("GET", URL))
        ping.append(await _request("POST", URL + "/com.cloud.agent.api.PingRoutingCommand",
                                   ping_body))
    return statistics.median(ping) * 1000, statistics.median(liveness) * 1000


async def state_report_ms(rounds: int = 15) -> float:
    samples = [await _request("POST", URL + "/org.apache.cloudstack.HostVmStateReportCommand",
                              b"{}") for _ in range(rounds)]
    return statistics.median(samples) * 1000


async def report_round_trips() -> float:
    """Round trips spent on state reports so far, from the agent's own /metrics."""
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{ADMIN_PORT}/metrics"
    ) as reply:
        text = await reply.text()
    for line in text.splitlines():
        if line.startswith("hyperv_agent_command_cim_round_trips_sum") and "StateReport" in line:
            return float(line.split()[-1])
    return float("nan")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_serve(state_dir: Path) -> tuple[subprocess.Popen[bytes], float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "hyperv_agent.cli", "serve", "--state-dir", str(state_dir),
         "--listen", f"127.0.0.1:{PORT}", "--admin-listen", f"127.0.0.1:{ADMIN_PORT}"],
        stderr=subprocess.DEVNULL)
    context = _client_ssl()
    while time.perf_counter() - started < 30:
        try:
            urllib.request.urlopen(URL, context=context, timeout=1).read()
            return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.01)
    process.kill()
    raise RuntimeError("serve did not become ready within 30 s")


async def seeded(state_dir: Path) -> None:
    cim = EmulatorCim.open(EmulatorConfig(state_dir=state_dir / "emulator", async_jobs=False))
    await seed(cim, VM_COUNT)
    running = await cim.query("SELECT * FROM Msvm_ComputerSystem WHERE Caption = "
                              "'Virtual Machine'")
    for vm in running[: VM_COUNT // 2]:  # half of them running
        assert vm.path is not None
        await cim.invoke(vm.path, "RequestStateChange", {"RequestedState": 2})
    await cim.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        empty, full = Path(scratch) / "empty", Path(scratch) / "full"
        process, ready_s = start_serve(empty)
        try:
            ping_ms, liveness_ms = await ping_ratio()
        finally:
            process.terminate()
            process.wait()
        await seeded(full)
        process, _ = start_serve(full)
        try:
            await state_report_ms(1)  # the first report also finds the service
            before = await report_round_trips()
            report_ms = await state_report_ms()
            per_report = (await report_round_trips() - before) / 15
            memory = rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait()
    ratio = ping_ms / liveness_ms
    report("agent", [
        ("liveness route, new TLS conn", f"{liveness_ms:.2f} ms", "-", "-"),
        ("PingRoutingCommand, new TLS conn", f"{ping_ms:.2f} ms", "-", "-"),
        ("ping / liveness", f"{ratio:.2f}x", "< 1.2x", verdict(ratio < 1.2)),
        (f"HostVmStateReport, {VM_COUNT} VMs: round trips", f"{per_report:.0f}", "1",
         verdict(per_report == 1)),
        (f"HostVmStateReport, {VM_COUNT} VMs: median", f"{report_ms:.1f} ms", "< 50 ms",
         verdict(report_ms < 50)),
        (f"resident memory, {VM_COUNT} VMs", f"{memory:.0f} MB", "< 120 MB",
         verdict(memory < 120)),
        ("serve ready", f"{ready_s * 1000:.0f} ms", "< 1500 ms", verdict(ready_s < 1.5)),
    ])


if __name__ == "__main__":
    asyncio.run(main())
