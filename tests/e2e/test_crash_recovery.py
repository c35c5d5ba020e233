"""A real ``hyperv-agent serve`` process killed with SIGKILL in the middle of a StartCommand
and in the middle of a large copy, then started again: no VM is left half-built, no
partial copy is left aside, and the command, sent again, succeeds."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bench.bench_vm import start_body

from hyperv_agent.backends import emulator_config
from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance
from hyperv_agent.cloudstack import names
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.hyperv.vms import vm_path
from tests.e2e.conftest import API, LOCAL_POOL, PRIVATE_IP, client_context
from tests.emulator.kit import define_vm
from tests.ports import free_port

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

VM = "i-2-77-VM"
SECONDARY = "cifs://10.1.1.1/secondary"
TEMPLATE = "template/tmpl/2/206/big.vhdx"
START_TIMEOUT_S = 30.0
MIB = 1 << 20


@contextlib.asynccontextmanager
async def serve(config_file: Path) -> AsyncIterator[tuple[Agent, subprocess.Popen[bytes]]]:
    """``hyperv-agent serve`` on free loopback ports, once it answers; killed at the end if
    the test did not kill it."""
    port, admin = free_port(), free_port()
    log = (config_file.parent / f"serve-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "hyperv_agent.cli", "serve", "--config", str(config_file),
         "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"],
        stdout=log, stderr=subprocess.STDOUT)
    log.close()
    connector = aiohttp.TCPConnector(ssl=client_context(), force_close=True)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            agent = Agent(f"https://127.0.0.1:{port}", session)
            await agent.wait_ready(process)
            yield agent, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


class Agent:
    """The agent process as the management server sees it."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url, self.session = url, session

    async def wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, "serve exited"
            with contextlib.suppress(aiohttp.ClientError):
                async with self.session.get(self.url + API.rstrip("/")) as reply:
                    if reply.status == 200:
                        return
            assert time.monotonic() < deadline, "serve did not answer"
            await asyncio.sleep(0.1)

    async def answer(self, fqcn: str, body: object) -> dict[str, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(self.url + API + fqcn, data=data) as reply:
            assert reply.status == 200
            ((_, fields),) = (await reply.json(content_type=None))[0].items()
            assert isinstance(fields, dict)
            return fields


def _config(tmp_path: Path, job_duration_s: float = 0.0) -> Path:
    (tmp_path / "secondary").mkdir(exist_ok=True)
    config = tmp_path / "agent.toml"
    config.write_text(f"""[agent]
state_dir = '{tmp_path / "state"}'
backend = "emulator"
private_ip = "{PRIVATE_IP}"
local_storage_path = '{LOCAL_POOL}'
[emulator]
job_duration_s = {job_duration_s}
[emulator.shares]
'\\\\10.1.1.1\\secondary' = '{tmp_path / "secondary"}'
""")
    return config


def _loaded(config_file: Path) -> AgentConfig:
    return load_config(config_file)


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"{what} did not happen"
        await asyncio.sleep(0.02)


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


async def _vms(config: AgentConfig) -> dict[str, int]:
    """Every VM of the emulated host by name, with its EnabledState (the agent is down)."""
    cim = EmulatorCim.open(emulator_config(config))
    try:
        found = await cim.query(wql.select("Msvm_ComputerSystem",
                                           wql.eq("Caption", "Virtual Machine")))
        return {str(vm["ElementName"]): int(str(vm["EnabledState"])) for vm in found}
    finally:
        await cim.close()


def _start_prepared(tmp_path: Path, job_duration_s: float) -> tuple[Path, AgentConfig, bytes]:
    """An agent's configuration (jobs taking ``job_duration_s``), and a StartCommand of
    ``VM`` for its local pool."""
    config_file = _config(tmp_path, job_duration_s=job_duration_s)
    config = _loaded(config_file)
    drive_c = config.agent.state_dir / "emulator" / "drives" / "C"
    (drive_c / "pool").mkdir(parents=True)
    return config_file, config, start_body(VM, drive_c)


async def _building(agent: Agent, body: bytes) -> asyncio.Task[dict[str, Any]]:
    """The StartCommand ``body`` sent, once its VM is defined: the agent is building it."""
    start = asyncio.create_task(agent.answer(names.START_COMMAND, body))

    async def defined() -> bool:
        checked = await agent.answer(names.CHECK_VIRTUAL_MACHINE_COMMAND, {"vmName": VM})
        return bool(checked["result"])

    await _until(defined, "the VM's definition")
    return start


# --- a StartCommand killed while it builds the VM -------------------------------------------


async def test_start_killed_while_building_leaves_no_half_built_vm_and_the_retry_starts_it(
    tmp_path: Path,
) -> None:
    config_file, config, body = _start_prepared(tmp_path, job_duration_s=0.2)
    async with serve(config_file) as (agent, process):
        start = await _building(agent, body)
        _kill(process)
        with pytest.raises(aiohttp.ClientError):
            await start
    assert await _vms(config) == {VM: 3}  # killed half-built: defined, never started
    async with serve(config_file) as (agent, _):
        checked = await agent.answer(names.CHECK_VIRTUAL_MACHINE_COMMAND, {"vmName": VM})
        assert checked["result"] is False  # removed at start, before anything was served
        started = await agent.answer(names.START_COMMAND, body)
        assert started["result"] is True, started
        checked = await agent.answer(names.CHECK_VIRTUAL_MACHINE_COMMAND, {"vmName": VM})
        assert checked["state"] == "PowerOn"
    assert await _vms(config) == {VM: 2}
    assert not (config.agent.state_dir / "building.json").exists()  # nothing pending


async def test_start_killed_while_building_beside_a_copy_in_an_unknown_state_removes_its_own(
    tmp_path: Path,
) -> None:
    """Hyper-V keeps no name unique: a copy of the name that Hyper-V shows in a state it
    cannot tell (Unknown) may be beside the VM a killed start left half-built, and is the
    one the name means (it may run). At the next start the half-built definition the
    journal recorded is removed, by GUID, and the other copy is left as it is; looked up
    by name, the half-built one stayed, off and forgotten, beside it."""
    config_file, config, body = _start_prepared(tmp_path, job_duration_s=0.2)
    async with serve(config_file) as (agent, process):
        start = await _building(agent, body)
        _kill(process)
        with pytest.raises(aiohttp.ClientError):
            await start
    cim = EmulatorCim.open(emulator_config(config))
    try:
        (half_built,) = [str(vm["Name"]) for vm in await _copies(cim)]
        other = (await define_vm(cim, VM)).key("Name")
        txn = cim.host.store.transaction()
        record = txn.edit(vm_path(other))
        assert record is not None
        record["EnabledState"] = 0  # Unknown: Hyper-V cannot tell the state
        txn.commit()
    finally:
        await cim.close()
    async with serve(config_file) as (agent, _):
        checked = await agent.answer(names.CHECK_VIRTUAL_MACHINE_COMMAND, {"vmName": VM})
        assert (checked["result"], checked["state"]) == (True, "PowerUnknown"), checked
    cim = EmulatorCim.open(emulator_config(config))
    try:
        left = {str(vm["Name"]): vm["EnabledState"] for vm in await _copies(cim)}
    finally:
        await cim.close()
    assert left == {other: 0}, (half_built, left)
    assert not (config.agent.state_dir / "building.json").exists()


async def _copies(cim: EmulatorCim) -> list[CimInstance]:
    """Every VM named ``VM`` on the emulated host."""
    return await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", VM)))


# --- a large copy killed midway -------------------------------------------------------------


def _template_copy(checksum: str) -> dict[str, Any]:
    """CopyCommand case A: the image store's template into the local pool, with a checksum
    that names the file as read, so every byte streams through the agent."""
    src = {"path": TEMPLATE, "origUrl": "http://example.org/big.vhdx", "checksum": checksum,
           "uuid": "f0e1d2c3-b4a5-4697-8877-665544332211", "id": 206, "format": "VHDX",
           "imageDataStore": {names.NFS_TO: {"_url": SECONDARY, "_role": "Image"}}}
    dest = {"path": "big", "uuid": src["uuid"], "id": 206, "format": "VHDX",
            "imageDataStore": {names.PRIMARY_DATA_STORE_TO: {
                "uuid": "local-pool", "poolType": "Filesystem", "host": PRIVATE_IP,
                "path": LOCAL_POOL}}}
    return {"srcTO": {names.TEMPLATE_OBJECT_TO: src}, "destTO": {names.TEMPLATE_OBJECT_TO: dest},
            "wait": 10800}


async def test_copy_killed_midway_leaves_no_partial_file_once_restarted_and_the_retry_copies(
    tmp_path: Path,
) -> None:
    config_file = _config(tmp_path)
    config = _loaded(config_file)
    pool = config.agent.state_dir / "emulator" / "drives" / "C" / "pool"
    pool.mkdir(parents=True)
    (pool / "other.vhdx").write_bytes(b"another volume")
    source = tmp_path / "secondary" / TEMPLATE
    source.parent.mkdir(parents=True)
    with source.open("wb") as sparse:
        sparse.truncate(8 * 1024**3)  # long enough to be caught mid-stream
    async with serve(config_file) as (agent, process):
        copy = asyncio.create_task(agent.answer(names.COPY_COMMAND,
                                                _template_copy("0" * 32)))

        async def copying() -> bool:
            return any(p.name.startswith(".big.vhdx.partial-") and p.stat().st_size > 0
                       for p in pool.iterdir())

        await _until(copying, "the copy")
        _kill(process)
        with pytest.raises(aiohttp.ClientError):
            await copy
    left = sorted(p.name for p in pool.iterdir())
    assert len(left) == 2 and left[0].startswith(".big.vhdx.partial-"), left  # killed aside
    source.unlink()
    vhd.create(source, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 64 * MIB)
    digest = hashlib.md5(source.read_bytes()).hexdigest()
    async with serve(config_file) as (agent, _):
        assert sorted(p.name for p in pool.iterdir()) == ["other.vhdx"]  # swept at start
        copied = await agent.answer(names.COPY_COMMAND, _template_copy(digest))
        assert copied["result"] is True, copied
    assert sorted(p.name for p in pool.iterdir()) == ["big.vhdx", "other.vhdx"]
    assert (pool / "big.vhdx").read_bytes() == source.read_bytes()
    assert (pool / "other.vhdx").read_bytes() == b"another volume"


async def test_config_drives_a_killed_agent_left_aside_are_swept_at_start(
    tmp_path: Path,
) -> None:
    """A config drive ISO is written aside in its folder (``configdrive`` below the pool's
    root or the host's config drive cache) and renamed into place; an agent killed
    meanwhile leaves the aside file, up to a config drive's 64 MiB, which the next start
    removes. Nothing else there is touched: the ISOs, another agent's aside file on a
    shared folder, other files."""
    config_file = _config(tmp_path)
    state = _loaded(config_file).agent.state_dir
    state.mkdir(parents=True)
    (state / "agent-id").write_text("0badc0de")
    drive_c = state / "emulator" / "drives" / "C"
    cache = drive_c / "pool" / "configdrive-cache" / "configdrive"  # the default cache
    on_pool = drive_c / "pool" / "configdrive"
    left = [cache / ".i-2-5-VM.iso.partial-0badc0de-0123456789ab",  # a create's
            cache / ".i-2-6-VM.iso.partial-0badc0de-abcdef012345.iso",  # a replace's copy
            on_pool / ".i-2-8-VM.iso.partial-0badc0de-00aa11bb22cc"]
    kept = [cache / "i-2-5-VM.iso", cache / ".i-2-7-VM.iso.partial-1234abcd-00112233aabb",
            cache / "notes.txt", on_pool / "i-2-8-VM.iso"]
    for path in (*left, *kept):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"CD001")
    async with serve(config_file):
        assert [path.name for path in left if path.exists()] == []
        assert [path.name for path in kept if not path.exists()] == []
    assert "removed 2 partial copies an interrupted run left in C:\\pool\\configdrive-" \
           "cache\\configdrive" in _log_of(config_file)


# --- a second agent on the same state directory ---------------------------------------------


async def test_a_second_agent_on_the_state_directory_stops_at_once_and_touches_nothing(
    tmp_path: Path,
) -> None:
    """A second ``serve`` of one state directory, while the first builds a VM, exits with
    one line naming the directory and the first agent's PID, before reading or changing
    anything: the VM being built is not taken for a leftover, and the first agent's start
    completes."""
    config_file, config, body = _start_prepared(tmp_path, job_duration_s=0.2)
    async with serve(config_file) as (agent, process):
        start = await _building(agent, body)
        journal = (config.agent.state_dir / "building.json").read_text()
        second = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "hyperv_agent.cli", "serve", "--config",
                             str(config_file), "--listen", f"127.0.0.1:{free_port()}",
                             "--admin-listen", f"127.0.0.1:{free_port()}"],
            capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert second.stderr.strip() == (
            f"error: the agent's state directory {config.agent.state_dir} is in use by "
            f"another process (PID {process.pid}): one agent serves from a state directory; "
            "give this one its own ([agent] state_dir, --state-dir)")
        assert VM in journal
        assert (config.agent.state_dir / "building.json").read_text() == journal
        started = await start
        assert started["result"] is True, started
        checked = await agent.answer(names.CHECK_VIRTUAL_MACHINE_COMMAND, {"vmName": VM})
        assert checked["state"] == "PowerOn"
    assert await _vms(config) == {VM: 2}


# --- stopping while a command runs ----------------------------------------------------------


def _log_of(config_file: Path) -> str:
    return "".join(p.read_text() for p in config_file.parent.glob("serve-*.log"))


async def test_sigterm_lets_the_command_in_flight_finish_and_says_it_waits(
    tmp_path: Path,
) -> None:
    config_file, config, body = _start_prepared(tmp_path, job_duration_s=0.3)
    async with serve(config_file) as (agent, process):
        start = await _building(agent, body)
        process.send_signal(signal.SIGTERM)
        started = await start
        assert started["result"] is True, started
        assert await asyncio.to_thread(process.wait, 30) == 0
    log = _log_of(config_file)
    assert "stopping: taking no new commands; waiting up to 30 s for 1 in flight" in log
    assert "unanswered" not in log and "hyperv-agent stopped" in log
    assert await _vms(config) == {VM: 2}


async def test_a_second_signal_stops_at_once_and_the_next_start_clears_what_was_cut_short(
    tmp_path: Path,
) -> None:
    config_file, _, body = _start_prepared(tmp_path, job_duration_s=0.3)
    async with serve(config_file) as (agent, process):
        start = await _building(agent, body)
        process.send_signal(signal.SIGTERM)
        await _until(lambda: _said(config_file, "waiting up to"), "the first signal's line")
        signalled = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(process.wait, 30) == 0
        assert time.monotonic() - signalled < 5  # not the 30 s grace, nor aiohttp's 2 x 60 s
        with pytest.raises(aiohttp.ClientError):
            await start
    assert "stopping with 1 command(s) unanswered" in _log_of(config_file)
    async with serve(config_file) as (agent, _):
        checked = await agent.answer(names.CHECK_VIRTUAL_MACHINE_COMMAND, {"vmName": VM})
        assert checked["result"] is False  # the half-built VM was removed at start
        started = await agent.answer(names.START_COMMAND, body)
        assert started["result"] is True, started


async def _said(config_file: Path, text: str) -> bool:
    return text in _log_of(config_file)


# --- the state files a power loss cut short -------------------------------------------------


async def test_state_files_a_power_loss_cut_short_are_named_at_start_and_the_agent_serves(
    tmp_path: Path,
) -> None:
    """A host that lost power while the agent wrote its state: the pools file cut short,
    the journal and the agent id never written, the generated TLS key empty. The agent
    starts, names each file and what it did, keeps what the files held aside, and serves
    (an empty key stopped it at every start until an operator deleted the pair)."""
    config_file = _config(tmp_path)
    state = _loaded(config_file).agent.state_dir
    async with serve(config_file) as (_, process):
        _kill(process)
    pools = b'{"ab-1": {"host": "", "path": "", "pool_type": "Filesystem", "root": "C:\\\\po'
    (state / "pools.json").write_bytes(pools)
    (state / "building.json").write_bytes(b"\0" * 16)
    (state / "agent-id").write_bytes(b"")
    (state / "tls" / "agent.key").write_bytes(b"")
    async with serve(config_file) as (agent, process):
        checked = await agent.answer(names.CHECK_VIRTUAL_MACHINE_COMMAND, {"vmName": VM})
        assert checked["result"] is False  # served
    (log,) = [path.read_text() for path in tmp_path.glob("serve-*.log")
              if "cannot be read" in path.read_text()]
    assert "Traceback" not in log
    assert f"{state / 'pools.json'} cannot be read: it is not JSON" in log
    assert "no storage pool is registered until the management server" in log
    assert f"{state / 'building.json'} cannot be read" in log
    assert f"{state / 'agent-id'} holds no agent id (it is empty)" in log
    assert f"generated TLS certificate {state / 'tls' / 'agent.crt'}" in log
    assert "agent.key is empty" in log
    (kept,) = state.glob("pools.json.unreadable-*")
    assert kept.read_bytes() == pools
