"""A host emptied for maintenance: the management server sends PrepareForMigration and
then MigrateCommand for each VM, several at once (executeInSequence is false for
Hyper-V). The source runs only MaximumActiveVirtualSystemMigration (2) of the moves at
a time and queues the others' jobs (New, until a move ends); a queued move is no
failure: each answers success within its ``wait``, and every VM ends up on the
destination."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cloudstack import names
from tests.e2e.migration_kit import (
    Cluster,
    Member,
    cluster,
    disk_file,
    migrate_body,
    pair,
    prepare_body,
    start_body,
    vm_to,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="needs 127.0.0.2 and 127.0.0.3 (Linux loopback)")

JOB_S = 0.5  # each job of the source, a move's included
WAIT_S = 10  # each MigrateCommand's wait: room for two rounds of moves, not for twenty
VMS = [f"i-2-{40 + index}-VM" for index in range(4)]
NEW, RUNNING = 2, 4


async def _watch(source: Member, seen: list[list[int]], done: asyncio.Event) -> None:
    """The JobState of each migration job on ``source``, read every 50 ms until ``done``."""
    cim = source.cim()
    while not done.is_set():
        jobs = await cim.query(wql.select("Msvm_MigrationJob", properties=("JobState",)))
        seen.append([job.integer("JobState") or 0 for job in jobs])
        await asyncio.sleep(0.05)


async def _timed(run: Cluster, source: Member, body: dict[str, Any]
                 ) -> tuple[str, dict[str, Any], float]:
    began = time.monotonic()
    kind, answer = await run.ask(source, names.MIGRATE_COMMAND, body)
    return kind, answer, time.monotonic() - began


async def test_four_moves_at_once_all_succeed_though_two_wait_queued(tmp_path: Path) -> None:
    a, b = hosts = pair(tmp_path, emulator_a=f"job_duration_s = {JOB_S}\n"
                                             "call_latency_s = 0.005")
    vms = [vm_to(name, name) for name in VMS]
    for name in VMS:
        disk_file(tmp_path / "pool", name)
    async with cluster(hosts) as run:
        for _, started in await asyncio.gather(
                *(run.ask(a, names.START_COMMAND, start_body(vm)) for vm in vms)):
            assert started["result"] is True, started["details"]
        for vm in vms:
            _, ready = await run.ask(b, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(vm))
            assert ready["result"] is True, ready["details"]

        seen: list[list[int]] = []
        done = asyncio.Event()
        watcher = asyncio.create_task(_watch(a, seen, done))
        moves = await asyncio.gather(*(_timed(run, a, migrate_body(vm, b.address, WAIT_S))
                                       for vm in vms))
        done.set()
        await watcher

        for (kind, answer, took), vm in zip(moves, vms, strict=True):
            assert (kind, answer["result"]) == (names.MIGRATE_ANSWER, True), \
                (vm["name"], answer["details"])
            assert took < WAIT_S, (vm["name"], took)
        # The host ran two moves at a time; the others waited queued.
        assert any(NEW in states for states in seen), seen
        assert max(states.count(RUNNING) for states in seen) == 2, seen
        assert await run.on(b) >= set(VMS)
        assert not await run.on(a) & set(VMS)


async def test_a_move_whose_wait_ends_while_queued_says_the_slots_were_held(
        tmp_path: Path) -> None:
    """A host that runs one move at a time: a second MigrateCommand whose ``wait`` ends
    before the first move frees the slot never starts. The agent stops its job (queued,
    it ends Terminated), the VM runs on the source, and the answer says why the move
    never started and what would let it: the host's limit or the command's wait."""
    a, b = hosts = pair(tmp_path, emulator_a=f"job_duration_s = {SLOW_JOB_S}\n"
                                             "[emulator.migration]\nsimultaneous = 1\n")
    first, second = vms = [vm_to(name, name) for name in VMS[:2]]
    for name in VMS[:2]:
        disk_file(tmp_path / "pool", name)
    async with cluster(hosts) as run:
        for _, started in await asyncio.gather(
                *(run.ask(a, names.START_COMMAND, start_body(vm)) for vm in vms)):
            assert started["result"] is True, started["details"]
        for vm in vms:
            _, ready = await run.ask(b, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(vm))
            assert ready["result"] is True, ready["details"]

        holding = asyncio.create_task(
            run.ask(a, names.MIGRATE_COMMAND, migrate_body(first, b.address, WAIT_S)))
        await _running_move(a)
        kind, answer = await run.ask(a, names.MIGRATE_COMMAND, migrate_body(
            second, b.address, 1))
        assert (kind, answer["result"]) == (names.MIGRATE_ANSWER, False), answer
        details = answer["details"]
        assert "the move never started" in details, details
        assert "the VM stays where it was" in details, details
        assert "Set-VMHost -MaximumVirtualMachineMigrations" in details, details
        assert "a longer wait than 1 s" in details, details
        _, moved = await holding
        assert moved["result"] is True, moved["details"]
        assert [state for state in await _job_states(a)].count(TERMINATED) == 1
        assert await run.where(hosts, second["name"]) == ["HV-A"]
        assert await run.where(hosts, first["name"]) == ["HV-B"]


SLOW_JOB_S = 2.0  # each job of the source: the first move holds the one slot this long
TERMINATED = 8


async def _running_move(source: Member) -> None:
    """Until a migration job runs on ``source``."""
    deadline = time.monotonic() + 30
    while RUNNING not in await _job_states(source):
        assert time.monotonic() < deadline, "no move began"
        await asyncio.sleep(0.02)


async def _job_states(source: Member) -> list[int]:
    jobs = await source.cim().query(wql.select("Msvm_MigrationJob", properties=("JobState",)))
    return [job.integer("JobState") or 0 for job in jobs]
