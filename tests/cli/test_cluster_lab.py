"""Two ``hyperv-agent serve`` processes, one on 127.0.0.2 and one on 127.0.0.3, both on the
same port, whose emulated hosts share a ``cluster_dir`` and an SMB pool: a VM made through
the emulator's WinRM face moves from one host to the other and back keeping its state,
each agent's state report shows it on exactly one host, a migration job failing midway
leaves it on the source, moves in both directions at once both go through, and a stopped
host refuses as Hyper-V refuses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hyperv_agent.backends import emulator_config, wsman_settings
from hyperv_agent.cim.api import Cim, MethodResult, ObjectPath
from hyperv_agent.cim.wsman.backend import WsmanCim
from hyperv_agent.cloudstack import names
from hyperv_agent.config import load_config
from hyperv_agent.emulator.lab import open_emulator
from hyperv_agent.errors import ConfigError
from tests.cli import lab
from tests.e2e.conftest import API, client_context
from tests.e2e.migration_kit import member_toml
from tests.emulator.kit import finished, ok, state
from tests.emulator.migration_kit import build_vm, migrate, new_disk, portrait
from tests.ports import free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="needs 127.0.0.2 and 127.0.0.3 (Linux loopback)")

ADDRESSES = {"HV-A": "127.0.0.2", "HV-B": "127.0.0.3", "HV-C": "127.0.0.4"}
USER, PASSWORD = "lab", "Lab-Pa55word!"
POOL = "\\\\127.0.0.1\\pool"
REFUSED = "(0x8007274D)"


@dataclass
class Host:
    name: str
    config: Path
    url: str
    process: subprocess.Popen[str] | None = None

    def cim(self) -> WsmanCim:
        return WsmanCim(wsman_settings(load_config(self.config)))


def _write_config(tmp_path: Path, name: str, port: int, lab_knobs: str = "",
                  agent_settings: str = "") -> Host:
    address = ADDRESSES[name]
    config = tmp_path / f"{name}.toml"
    config.write_text(member_toml(tmp_path, name, address, port, POOL, agent=agent_settings,
                                  lab_knobs=lab_knobs))
    return Host(name, config, f"https://{address}:{port}")


async def _wait_ready(host: Host, session: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert host.process is not None and host.process.poll() is None, \
            host.process.communicate()[1] if host.process else ""
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(host.url + API.rstrip("/")) as reply:
                if reply.status == 200:
                    return
        assert time.monotonic() < deadline, f"{host.name} did not answer"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _serving(hosts: list[Host]) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=client_context(), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            for host in hosts:
                host.process = lab.start("serve", "--config", str(host.config))
            for host in hosts:
                await _wait_ready(host, session)
            yield session
        finally:
            for host in hosts:
                _stop(host)


def _stop(host: Host) -> None:
    if host.process is not None and host.process.poll() is None:
        errors = lab.stop(host.process)
        assert PASSWORD not in errors


async def _restart(host: Host, session: aiohttp.ClientSession) -> None:
    _stop(host)
    host.process = lab.start("serve", "--config", str(host.config))
    await _wait_ready(host, session)


async def _answer(session: aiohttp.ClientSession, host: Host, fqcn: str,
                  body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(host.url + API + fqcn, data=json.dumps(body).encode()) as reply:
        assert reply.status == 200
        answers: list[dict[str, dict[str, Any]]] = await reply.json(content_type=None)
    return next(iter(answers[0].values()))


async def _reported(session: aiohttp.ClientSession, host: Host) -> set[str]:
    """The VMs the agent's state report shows running."""
    async with session.post(host.url + API + names.HOST_VM_STATE_REPORT_COMMAND,
                            data=b"{}") as reply:
        assert reply.status == 200
        report: list[dict[str, str]] = await reply.json(content_type=None)
    return {name for entry in report for name, power in entry.items() if power == "PowerOn"}


async def _where(session: aiohttp.ClientSession, hosts: list[Host], vm: str) -> list[str]:
    return [host.name for host in hosts if vm in await _reported(session, host)]


async def _failed(cim: Cim, result: MethodResult) -> str:
    job = await finished(cim, result)
    assert job is not None and job["JobState"] == 10, job
    return str(job["ErrorDescription"])


async def _moved(source: Cim, vm: ObjectPath, destination: str) -> None:
    await ok(source, await migrate(source, vm, destination,
                                   DestinationIPAddressList=[ADDRESSES[destination]]))


async def test_vm_moves_between_two_serve_processes_and_a_stopped_one_refuses(
        tmp_path: Path) -> None:
    port = free_port(*ADDRESSES.values())  # both agents listen on one port
    a = _write_config(tmp_path, "HV-A", port, "failing_jobs = {MigrateVirtualSystemToHost = 1}")
    b = _write_config(tmp_path, "HV-B", port)
    for disk in ("mover", "other"):
        new_disk(tmp_path / "pool" / "vms" / f"{disk}.vhdx")
    hosts = [a, b]
    async with _serving(hosts) as session:
        on_a, on_b = a.cim(), b.cim()
        try:
            vm = await build_vm(on_a, f"{POOL}\\vms\\mover.vhdx", name="i-2-10-VM", acl=True,
                                kvp=True)
            before = await portrait(on_a, vm)
            assert await _where(session, hosts, "i-2-10-VM") == ["HV-A"]

            midway = await _failed(on_a, await migrate(on_a, vm, "HV-B"))  # the lab knob
            assert "injected fault" in midway
            assert await _where(session, hosts, "i-2-10-VM") == ["HV-A"]

            await _moved(on_a, vm, "HV-B")
            assert await _where(session, hosts, "i-2-10-VM") == ["HV-B"]
            assert await portrait(on_b, vm) == before
            await _moved(on_b, vm, "HV-A")
            assert await _where(session, hosts, "i-2-10-VM") == ["HV-A"]
            assert await portrait(on_a, vm) == before

            other = await build_vm(on_b, f"{POOL}\\vms\\other.vhdx", name="i-2-11-VM")
            await asyncio.gather(_moved(on_a, vm, "HV-B"), _moved(on_b, other, "HV-A"))
            assert await _where(session, hosts, "i-2-10-VM") == ["HV-B"]
            assert await _where(session, hosts, "i-2-11-VM") == ["HV-A"]

            _stop(b)
            refused = await _failed(on_a, await migrate(on_a, other, "HV-B"))
            assert refused.endswith(f"Failed to establish a connection with host 'HV-B': No "
                                    f"connection could be made because the target machine "
                                    f"actively refused it. {REFUSED}")
            assert await state(on_a, other) == 2
            assert await _reported(session, a) == {"i-2-11-VM"}
        finally:
            await on_a.close()
            await on_b.close()


POOL_BODY = {"add": True, "pool": {"type": "SMB", "host": "127.0.0.1", "port": 445,
                                   "path": "/pool?user=lab&password=Lab-Pa55word%21",
                                   "uuid": "5d719485-f8b3-3fc2-b05a-8f63a912e709"}}


def _is_alive(address: str) -> dict[str, Any]:
    return {"host": {"guid": "neighbour", "privateNetwork": {"ip": address}}, "contextMap": {}}


STALE_S = 4
HA_TIMING = f"heartbeat_interval_s = 1\nheartbeat_stale_s = {STALE_S}"  # production: 60, 180


async def _check_on(session: aiohttp.ClientSession, asked: Host, suspect: str
                    ) -> tuple[bool, bool, bool]:
    """CheckOnHost sent to ``asked`` about ``suspect``: (result, determined, alive); the MS's
    HypervInvestigator reads ``result`` true as Down, false as Up."""
    answer = await _answer(session, asked, names.CHECK_ON_HOST_COMMAND,
                           _is_alive(ADDRESSES[suspect]))
    return answer["result"], answer["determined"], answer["alive"]


UP, DOWN = (False, True, True), (True, True, False)


async def test_stopped_hosts_heartbeat_goes_stale_where_its_neighbours_read_it(
        tmp_path: Path) -> None:
    port = free_port(*ADDRESSES.values())
    a, b, c = (_write_config(tmp_path, name, port, agent_settings=HA_TIMING)
               for name in ADDRESSES)
    (tmp_path / "pool").mkdir()
    async with _serving([a, b, c]) as session:
        for host in (a, b, c):
            registered = await _answer(session, host, names.MODIFY_STORAGE_POOL_COMMAND,
                                       POOL_BODY)
            assert registered["result"] is True, registered
            assert (tmp_path / "pool" / f"hb-{ADDRESSES[host.name]}").is_file()
        assert await _check_on(session, b, "HV-A") == await _check_on(session, c, "HV-A") == UP
        _stop(a)
        stopped = time.monotonic()
        while await _check_on(session, b, "HV-A") == UP:
            assert time.monotonic() - stopped < STALE_S + 3, "HV-A still alive"
            await asyncio.sleep(0.2)
        assert time.monotonic() - stopped > 0.5  # not before the heartbeat aged
        assert await _check_on(session, b, "HV-A") == await _check_on(session, c, "HV-A") == DOWN
        # The running hosts keep stamping: each is alive for the other, long after registration.
        assert await _check_on(session, b, "HV-C") == await _check_on(session, c, "HV-B") == UP
        await _restart(a, session)  # a host that is back stamps its pools at once
        assert await _check_on(session, b, "HV-A") == UP


def test_cluster_settings_reach_the_emulated_host(tmp_path: Path) -> None:
    knob = 'failing_jobs = {"MigrateVirtualSystemToHost" = 2}'
    host = _write_config(tmp_path, "HV-A", 8250, knob)
    settings = emulator_config(load_config(host.config))
    assert (settings.host_name, settings.private_ip) == ("HV-A", "127.0.0.2")
    assert settings.cluster_dir == tmp_path / "cluster"
    assert dict(settings.lab_failing_jobs) == {"MigrateVirtualSystemToHost": 2}


@pytest.mark.parametrize(("text", "message"), [
    ("[emulator]\nwinrm = true\n", "[emulator] winrm serves the emulated host at [wsman] url"),
    ("[emulator.lab]\nfailing_jobs = {MigrateVirtualSystemToHost = 0}\n", "a count >= 1"),
    ('[emulator.lab]\nfailing_jobs = {"not a method" = 1}\n', "a method name"),
    ("[agent]\nheartbeat_interval_s = 60\nheartbeat_stale_s = 90\n",
     "heartbeat_stale_s (90) must be at least twice heartbeat_interval_s (60)"),
])
def test_bad_cluster_settings_are_one_clear_error(tmp_path: Path, text: str,
                                                  message: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(config)


VSMS = ('Msvm_VirtualSystemManagementService.CreationClassName='
        '"Msvm_VirtualSystemManagementService",Name="vmms",'
        'SystemCreationClassName="Msvm_ComputerSystem",SystemName="HV-A"')


async def test_second_process_for_a_running_host_is_refused_in_one_line(tmp_path: Path) -> None:
    """Another process of a running cluster host: on its state directory, it may read
    (a diagnostic query) but not change it; on another state directory under the same
    name, it cannot join the cluster."""
    host = _write_config(tmp_path, "HV-A", 8250)
    running = open_emulator(emulator_config(load_config(host.config)))
    query = ("cim", "query", "--config", str(host.config), "SELECT Name FROM Msvm_ComputerSystem")
    try:
        read = await asyncio.to_thread(lab.command, *query)
        changed = await asyncio.to_thread(lab.command, "cim", "invoke", "--config",
                                          str(host.config), VSMS, "DefineSystem")
        elsewhere = await asyncio.to_thread(lab.command, *query, "--state-dir",
                                            str(tmp_path / "elsewhere"))
    finally:
        await running.close()
    assert read.returncode == 0, read.stderr
    assert read.stderr.startswith("note: the emulated host's state directory")
    assert changed.returncode == 2 and changed.stdout == ""
    assert changed.stderr.startswith("error: the emulated host's state directory")
    assert len(changed.stderr.splitlines()) == 1
    assert elsewhere.returncode == 2 and elsewhere.stdout == ""
    assert elsewhere.stderr.startswith("error: the emulated host HV-A cannot join the cluster")
    assert "the running host HV-A" in elsewhere.stderr
    assert len(elsewhere.stderr.splitlines()) == 1
