"""Agentless registration: an agent driving another machine over WinRM reports that
machine's facts, and sends the console proxy to its own relay port."""

from __future__ import annotations

import copy
from pathlib import Path

from hyperv_agent.config import load_config
from tests.e2e.conftest import STARTUP_REQUEST, serving

ROUTING = "com.cloud.agent.api.StartupRoutingCommand"
AGENT_IP = "10.9.8.7"  # the Linux machine the management server registers: no NIC of the host


async def test_startup_reports_the_remote_hosts_facts_when_registered_under_the_agents_address(
        tmp_path: Path) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text("""[agent]
console_relay_listen = "0.0.0.0:3390"
[emulator]
host_name = "HV-FAR-07"
cpus = 6
sockets = 1
cpu_mhz = 3100
memory_mb = 24576
os_version = "10.0.20348"
os_caption = "Microsoft Windows Server 2022 Datacenter"
""")
    config = load_config(config_file, state_dir=tmp_path / "state", backend="emulator")
    request = copy.deepcopy(STARTUP_REQUEST)
    request[0][ROUTING].update(privateIpAddress=AGENT_IP, storageIpAddress=AGENT_IP)
    async with serving(config, backend="wsman-http-ntlm") as running:
        assert running.agent.config.agent.backend == "wsman"
        status, data = await running.post("com.cloud.agent.api.StartupCommand", request)
    assert status == 200
    routing = data[0][ROUTING]
    assert (routing["cpus"], routing["cpuSockets"], routing["speed"]) == (6, 1, 3100)
    assert routing["memory"] == (24576 - 2048) * 1024 * 1024  # less the parent partition's
    assert (routing["privateNetmask"], routing["privateMacAddress"]) == (
        "255.255.255.0", "00155D0A0B0C")  # the host's own NIC
    assert routing["privateIpAddress"] == AGENT_IP  # the address the MS reaches the agent at
    details = routing["hostDetails"]
    assert (details["os"], details["os_version"]) == (
        "Microsoft Windows Server 2022 Datacenter", "10.0.20348")
    assert details["rdp.server.port"] == "3390"  # the console relay, not the host
