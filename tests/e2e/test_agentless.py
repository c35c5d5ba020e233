"""Agentless registration: an agent driving another machine over WinRM reports that
machine's facts, and sends the console proxy to its own relay port."""

from __future__ import annotations

import copy
from pathlib import Path

from hyperv_agent.config import AgentConfig, load_config
from tests.e2e.conftest import STARTUP_REQUEST, Running, serving

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


async def test_startup_reports_the_host_nic_on_the_registered_subnet_not_its_first_one(
        tmp_path: Path) -> None:
    """The registered address is the agent's, which no NIC of the host holds: the NIC
    reported is the host's on that subnet. The management server checks privateNetmask
    against the pod's CIDR: the first adapter WMI lists (the host's NIC on 192.168.100.0/24,
    then a storage NIC on a /16) would give it another subnet's and have it refuse the
    host."""
    request = _registered_as_the_agent()
    async with serving(_config(tmp_path), backend="wsman-http-ntlm") as running:
        _add_nics(running, (
            (("fe80::5d1a:2b3c:4d5e:6f70",), ("64",), "00:15:5D:01:00:01"),
            (("172.16.0.5",), ("255.255.0.0",), "00:15:5D:01:00:02"),
            (("10.9.8.20", "fe80::1"), ("255.255.255.0", "64"), "00:15:5D:01:00:03")))
        status, data = await running.post("com.cloud.agent.api.StartupCommand", request)
    assert status == 200
    routing = data[0][ROUTING]
    assert (routing["privateNetmask"], routing["privateMacAddress"]) == (
        "255.255.255.0", "00155D010003")
    assert (routing["storageNetmask"], routing["storageMacAddress"]) == (
        "255.255.255.0", "00155D010003")


async def test_startup_reports_an_ipv4_nic_when_the_first_holds_only_ipv6(
        tmp_path: Path) -> None:
    """With no NIC on the registered subnet, the first IPv4 address is reported: an IPv6
    one's netmask is a prefix length ("64"), which the management server reads as a
    dotted IPv4 mask, and refuses the host for."""
    request = _registered_as_the_agent()
    async with serving(_config(tmp_path), backend="wsman-http-ntlm") as running:
        host = running.emulator.host
        txn = host.store.transaction()
        for key, _ in list(host.keyed_records("Win32_NetworkAdapterConfiguration")):
            txn.delete_key(key)
        txn.commit()
        _add_nics(running, (
            (("fe80::5d1a:2b3c:4d5e:6f70",), ("64",), "00:15:5D:01:00:01"),
            (("172.16.0.5",), ("255.255.0.0",), "00:15:5D:01:00:02")))
        status, data = await running.post("com.cloud.agent.api.StartupCommand", request)
    assert status == 200
    routing = data[0][ROUTING]
    assert (routing["privateNetmask"], routing["privateMacAddress"]) == (
        "255.255.0.0", "00155D010002")


def _config(tmp_path: Path) -> AgentConfig:
    return load_config(None, state_dir=tmp_path / "state", backend="emulator")


def _registered_as_the_agent() -> list[dict[str, dict[str, object]]]:
    """STARTUP_REQUEST, registering the agent's address, which no NIC of the host holds."""
    request = copy.deepcopy(STARTUP_REQUEST)
    request[0][ROUTING].update(privateIpAddress=AGENT_IP, storageIpAddress=AGENT_IP)
    return request


def _add_nics(running: Running,
              nics: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...]) -> None:
    """Give the emulated host IP-enabled adapters (addresses, IPSubnet, MAC), listed after
    those it has, in this order."""
    host = running.emulator.host
    txn = host.store.transaction()
    for index, (ips, masks, mac) in enumerate(nics):
        txn.put(host.new_record(
            "Win32_NetworkAdapterConfiguration", Index=10 + index, IPEnabled=True,
            Description=f"Ethernet adapter {index}", IPAddress=ips, IPSubnet=masks,
            MACAddress=mac, DefaultIPGateway=()))
    txn.commit()


async def test_host_stats_count_the_traffic_of_the_nic_on_the_registered_subnet(
        tmp_path: Path) -> None:
    """GetHostStats counts the traffic of the NIC registration reported (the host's on
    the registered subnet), not every interface's: the registered address is the agent's,
    on no NIC of the host, and the sum would count the host's own traffic twice (its
    vEthernet adapter and the physical NIC under the vSwitch) and the storage NIC's."""
    async with serving(_config(tmp_path), backend="wsman-http-ntlm") as running:
        _add_nics(running, (
            (("172.16.0.5",), ("255.255.0.0",), "00:15:5D:01:00:02"),
            (("10.9.8.20",), ("255.255.255.0",), "00:15:5D:01:00:03")))
        hour_ago = _count_traffic(running, {"Ethernet adapter 0": (4_000_000, 3_000_000),
                                            "Ethernet adapter 1": (40_960, 10_240)})
        status, _ = await running.post("com.cloud.agent.api.StartupCommand",
                                        _registered_as_the_agent())
        assert status == 200
        status, data = await running.post("com.cloud.agent.api.GetHostStatsCommand",
                                          {"hostId": 5, "contextMap": {}, "wait": 0})
        elapsed = running.emulator.host.clock() - hour_ago
    assert status == 200
    stats = data[0]["com.cloud.agent.api.GetHostStatsAnswer"]["hostStats"]
    # 40 KiB and 10 KiB a second on the 10.9.8.0/24 NIC, over the hour since its counters
    # started (and the second or so the commands took)
    assert 40 * 3600 <= stats["networkReadKBs"] <= 40 * elapsed
    assert 10 * 3600 <= stats["networkWriteKBs"] <= 10 * elapsed


def _count_traffic(running: Running, rates: dict[str, tuple[int, int]]) -> float:
    """Give the adapters named (by Description) "Network Interface" counters, moving at
    (bytes received, bytes sent) a second since an hour ago; that time."""
    host = running.emulator.host
    since = host.clock() - 3600
    txn = host.store.transaction()
    for description, (receive_bps, send_bps) in rates.items():
        counters = host.new_record("Win32_PerfRawData_Tcpip_NetworkInterface",
                                   Name=description, CurrentBandwidth=10_000_000_000)
        counters.meta.update(since=since, receive_bps=receive_bps, send_bps=send_bps)
        txn.put(counters)
    txn.commit()
    return since
