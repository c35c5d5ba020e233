"""Agent budgets: host registration and health.

- PingRoutingCommand over HTTPS, a new TLS connection per request as the management server
  makes them, costs < 1.2x the bare liveness route measured in the same run;
- HostVmStateReport on a host of 1000 VMs, 500 of them running (checked: every report
  lists the 500), is one backend round trip and answers in < 50 ms;
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
from bench.common import free_port, report, require, verdict
from hyperv_agent.backends import open_backend
from hyperv_agent.config import load_config
from hyperv_agent.emulator.backend import EmulatorCim

VM_COUNT = 1000
RUNNING = VM_COUNT // 2
PORT, ADMIN_PORT = free_port(), free_port()
URL = f"https://127.0.0.1:{PORT}/api/HypervResource"
#: An emulated host with room for every VM to run (a 64 GiB host runs only 64 of them).
HOST = "[emulator]\nmemory_mb = 4194304\ncpus = 1024\n"
PING = {"_hostVmStateReport": {}, "_gatewayAccessible": True, "_vnetAccessible": True,
        "hostType": "Routing", "hostId": 1, "contextMap": {}, "wait": 0}


def _client_ssl() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _request(method: str, url: str, body: bytes | None = None) -> float:
    """One request on its own connection and TLS handshake; seconds taken."""
    return (await _exchange(method, url, body))[0]


async def _exchange(method: str, url: str, body: bytes | None = None) -> tuple[float, bytes]:
    """One request on its own connection and TLS handshake; seconds taken, and the body."""
    connector = aiohttp.TCPConnector(ssl=_client_ssl(), force_close=True)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session, session.request(
        method, url, data=body, headers={"content-type": "application/json"}
    ) as reply:
        data = await reply.read()
        assert reply.status == 200, reply.status
    return time.perf_counter() - started, data


async def ping_ratio(rounds: int = 150) -> tuple[float, float]:
    ping_body = json.dumps(PING).encode()
    ping, liveness = [], []
    for _ in range(rounds):  # interleaved, so both see the same machine
        liveness.append(await _request("GET", URL))
        ping.append(await _request("POST", URL + "/com.cloud.agent.api.PingRoutingCommand",
                                   ping_body))
    return statistics.median(ping) * 1000, statistics.median(liveness) * 1000


async def state_report_ms(rounds: int = 15) -> float:
    """The median of ``rounds`` state reports, each checked to list the running VMs."""
    samples = []
    for _ in range(rounds):
        seconds, data = await _exchange(
            "POST", URL + "/org.apache.cloudstack.HostVmStateReportCommand", b"{}")
        reported = json.loads(data)
        require(len(reported) == RUNNING and all(
            state == "PowerOn" for entry in reported for state in entry.values()),
            f"a state report of {RUNNING} running VMs (it listed {len(reported)})")
        samples.append(seconds)
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
        [sys.executable, "-m", "hyperv_agent.cli", "serve", "--config", str(_config(state_dir)),
         "--state-dir", str(state_dir), "--listen", f"127.0.0.1:{PORT}",
         "--admin-listen", f"127.0.0.1:{ADMIN_PORT}"], stderr=subprocess.DEVNULL)
    context = _client_ssl()
    while time.perf_counter() - started < 30:
        try:
            urllib.request.urlopen(URL, context=context, timeout=1).read()
            return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.01)
    process.kill()
    raise RuntimeError("serve did not become ready within 30 s")


def _config(state_dir: Path, host: str = HOST) -> Path:
    path = state_dir.parent / f"{state_dir.name}.toml"
    path.write_text(host)
    return path


async def seeded(state_dir: Path, count: int = VM_COUNT, running: int = RUNNING,
                 host: str = HOST) -> None:
    """``count`` VMs on the emulated host ``serve`` will open (``host``: its ``[emulator]``
    settings), ``running`` of them running; NotWhatItNames when the host holds another
    state (a host too small to run them all)."""
    cim = open_backend(load_config(_config(state_dir, host), state_dir=state_dir,
                                   backend="emulator"))
    assert isinstance(cim, EmulatorCim)
    try:
        await seed(cim, count)
        vms = await cim.query("SELECT * FROM Msvm_ComputerSystem WHERE Caption = "
                              "'Virtual Machine'")
        for vm in vms[:running]:
            assert vm.path is not None
            await cim.invoke(vm.path, "RequestStateChange", {"RequestedState": 2})
        states = [vm["EnabledState"] for vm in await cim.query(
            "SELECT EnabledState FROM Msvm_ComputerSystem WHERE Caption = 'Virtual Machine'")]
    finally:
        await cim.close()
    require((len(states), states.count(2)) == (count, running),
            f"{count} VMs, {running} running (found {len(states)}, {states.count(2)} "
            "running)")


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
        (f"HostVmStateReport, {VM_COUNT} VMs ({RUNNING} running): round trips",
         f"{per_report:.0f}", "1", verdict(per_report == 1)),
        (f"HostVmStateReport, {VM_COUNT} VMs ({RUNNING} running): median",
         f"{report_ms:.1f} ms", "< 50 ms", verdict(report_ms < 50)),
        (f"resident memory, {VM_COUNT} VMs ({RUNNING} running)", f"{memory:.0f} MB", "< 120 MB",
         verdict(memory < 120)),
        ("serve ready", f"{ready_s * 1000:.0f} ms", "< 1500 ms", verdict(ready_s < 1.5)),
    ])


if __name__ == "__main__":
    asyncio.run(main())
