"""A state directory is held by one process at a time (``dirlock``)."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hyperv_agent.backends import emulator_config
from hyperv_agent.config import load_config
from hyperv_agent.dirlock import DirectoryLock
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.errors import DirectoryInUse
from hyperv_agent.service import build_agent

HOLDER = """
import sys, time
from pathlib import Path
from hyperv_agent.dirlock import DirectoryLock
DirectoryLock.take(Path(sys.argv[1]), "x.lock", "the test directory")
print("held", flush=True)
time.sleep(60)
"""


def test_a_directory_held_by_another_process_is_refused_with_its_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(DirectoryInUse) as refused:
            DirectoryLock.take(tmp_path, "x.lock", "the test directory", "use another")
        assert str(refused.value) == (f"the test directory {tmp_path} is in use by another "
                                      f"process (PID {holder.pid}): use another")
        assert refused.value.fact == (f"the test directory {tmp_path} is in use by another "
                                      f"process (PID {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    held = DirectoryLock.take(tmp_path, "x.lock", "the test directory")  # gone with its process
    assert (tmp_path / "x.lock").read_text() == f"{os.getpid()}\n"
    held.release()
    again = DirectoryLock.take(tmp_path, "x.lock", "the test directory")
    again.release()


def _full_disk_for_pids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing this process's PID fails as on a full disk (ENOSPC); other writes work."""
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if data == f"{os.getpid()}\n".encode():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


async def test_an_agent_restarted_on_a_full_disk_holds_its_directory_and_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host whose disk filled up while the agent ran: at its next start the lock file's
    PID cannot be written. The agent starts (its state is there; later writes that fail
    are served from memory), and a second one is still refused, without a PID."""
    config = load_config(None, state_dir=tmp_path / "state", backend="emulator")
    await build_agent(config).close()  # the state directory, as a first start left it
    _full_disk_for_pids(monkeypatch)
    agent = build_agent(config)
    try:
        with pytest.raises(DirectoryInUse) as refused:
            DirectoryLock.take(config.agent.state_dir, "agent.lock", "the agent's state "
                               "directory")
        assert str(refused.value) == (f"the agent's state directory {config.agent.state_dir} "
                                      "is in use by another process")
    finally:
        await agent.close()


async def test_an_agent_holds_its_state_directory_until_it_closes(tmp_path: Path) -> None:
    config = load_config(None, state_dir=tmp_path / "state", backend="emulator")
    first = build_agent(config)
    try:
        with pytest.raises(DirectoryInUse, match=r"the agent's state directory .* is in use"):
            build_agent(config)
    finally:
        await first.close()
    second = build_agent(config)
    await second.close()


async def test_an_emulated_host_is_refused_while_held_or_read_only_when_asked(
        tmp_path: Path) -> None:
    config = emulator_config(load_config(None, state_dir=tmp_path, backend="emulator"))
    holder = EmulatorCim.open(config)
    try:
        with pytest.raises(DirectoryInUse, match="through its WinRM face"):
            EmulatedHost(config)
        # a reader configured with another address: its host changes that in memory only
        reader = EmulatedHost(replace(config, read_if_held=True, private_ip="10.9.9.9"))
        assert reader.held_elsewhere is not None
        assert "emulated host's state directory" in reader.held_elsewhere
        assert _addresses(reader) == ("10.9.9.9",)
        assert len(list(reader.records("Msvm_ComputerSystem"))) == 1  # the host, as stored
        reader.close()
        with contextlib.closing(sqlite3.connect(config.state_dir / "emulator.sqlite3")) as db:
            (doc,) = db.execute("SELECT doc FROM records "
                                "WHERE class = 'Msvm_VirtualSystemMigrationService'").fetchone()
        assert config.private_ip in doc and "10.9.9.9" not in doc  # the reader wrote nothing
    finally:
        await holder.close()


def _addresses(host: EmulatedHost) -> tuple[str, ...]:
    (service,) = host.records("Msvm_VirtualSystemMigrationService")
    addresses = service["MigrationServiceListenerIPAddressList"]
    assert isinstance(addresses, tuple)
    return tuple(str(a) for a in addresses)
