"""A cluster member killed in the middle of a hand-over (its process exits mid-commit, as
a killed one does): when it starts again, the VM is on exactly one host."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hyperv_agent.emulator.backend import EmulatorCim
from tests.emulator.kit import ok, state
from tests.emulator.migration_kit import build_vm, migrate, new_disk, portrait
from tests.emulator.test_cluster import SHARED_DISK, A, B, host_config

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="exits mid-commit")
KILLED = 70  # the exit status of Faults.die_during_next_commit


def _member(tmp_path: Path, name: str, **settings: object) -> subprocess.Popen[str]:
    config = host_config(tmp_path, name)
    described = {"state_dir": str(config.state_dir), "host_name": name,
                 "private_ip": config.private_ip, "cluster_dir": str(config.cluster_dir),
                 "drives": {k: str(v) for k, v in config.drives.items()},
                 "shares": {k: str(v) for k, v in config.shares.items()}, **settings}
    return subprocess.Popen([sys.executable, "-m", "tests.emulator.cluster_member",
                             json.dumps(described)], stdout=subprocess.PIPE, text=True)


def _handovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cluster" / "handovers").iterdir())


async def test_vm_is_the_destinations_when_it_dies_after_accepting(tmp_path: Path) -> None:
    new_disk(tmp_path / "pool" / "vms" / "root.vhdx")
    destination = _member(tmp_path, B, die_at_commit=True)
    assert destination.stdout is not None
    assert await asyncio.to_thread(destination.stdout.readline) == "ready\n"
    source = EmulatorCim.open(host_config(tmp_path, A))
    try:
        vm = await build_vm(source, SHARED_DISK, kvp=True)
        before = await portrait(source, vm)
        await ok(source, await migrate(source, vm, B))  # decided: B accepted, then died
        assert await asyncio.to_thread(destination.wait, 30) == KILLED
        assert not await _has(source, vm.key("Name"))
        restarted = EmulatorCim.open(host_config(tmp_path, B))
        try:
            assert await portrait(restarted, vm) == before  # stored as it started again
            await ok(restarted, await migrate(restarted, vm, A))  # and it comes back
            new_disk(tmp_path / "pool" / "vms" / "other.vhdx")
            other = await build_vm(source, SHARED_DISK.replace("root", "other"), name="other")
            await ok(source, await migrate(source, other, B))
        finally:
            await restarted.close()
        assert await state(source, vm) == 2  # the old hand-over did not take it again
        assert _handovers(tmp_path) == []
    finally:
        destination.kill()
        await source.close()


async def _has(cim: EmulatorCim, guid: str) -> bool:
    return bool(await cim.query(f"SELECT Name FROM Msvm_ComputerSystem WHERE Name = '{guid}'"))


async def test_vm_leaves_the_source_when_it_dies_after_handing_over(tmp_path: Path) -> None:
    new_disk(tmp_path / "pool" / "vms" / "root.vhdx")
    source = EmulatorCim.open(host_config(tmp_path, A))
    vm = await build_vm(source, SHARED_DISK)
    await source.close()
    destination = EmulatorCim.open(host_config(tmp_path, B))
    try:
        mover = _member(tmp_path, A, die_at_commit=True,
                        migrate={"vm": vm.key("Name"), "to": B})
        assert await asyncio.to_thread(mover.wait, 60) == KILLED  # after B took the VM
        assert await state(destination, vm) == 2
        assert [name.rsplit(".", 1)[1] for name in _handovers(tmp_path)] == ["arrived"]
        restarted = EmulatorCim.open(host_config(tmp_path, A))
        try:
            assert not await _has(restarted, vm.key("Name"))
            # the move was made (handed over): its job completed, though A died before
            # its own commit
            moves = await restarted.query("SELECT * FROM Msvm_MigrationJob")
            assert [(job["JobState"], job["ErrorCode"]) for job in moves] == [(7, 0)]
        finally:
            await restarted.close()
        assert _handovers(tmp_path) == []
    finally:
        await destination.close()
