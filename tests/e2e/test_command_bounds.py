"""Every wait for Hyper-V inside a command ends within the command's bound, over real
HTTPS on an emulated host whose jobs take longer than the management server waits: the
command fails in its own answer class, naming what did not finish and the bound, while
the MS still waits for the answer, instead of answering after the MS has failed it while
Hyper-V goes on (a StartCommand whose VM then runs unknown to the MS)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hyperv_agent.cim import wql
from tests.e2e.conftest import Running
from tests.e2e.test_start_command import _body
from tests.e2e.transitions_kit import STARTING, changing, slow
from tests.emulator.kit import define_vm, vm_names

START = "com.cloud.agent.api.StartCommand"
START_ANSWER = "com.cloud.agent.api.StartAnswer"
CREATE_OBJECT = "org.apache.cloudstack.storage.command.CreateObjectCommand"
CREATE_OBJECT_ANSWER = "org.apache.cloudstack.storage.command.CreateObjectAnswer"
VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
STORE_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
VOLUME_UUID = "5d1f4a0e-7a43-4c55-8e0f-3c1b2f6a9d10"
POOL_UUID = "5fe2bad3-d785-394e-9949-89786b8a63d2"
MIB = 1 << 20


def _pool(running: Running) -> Path:
    folder = running.agent.config.agent.state_dir / "emulator" / "drives" / "C" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _start_body(running: Running, name: str, wait_s: int) -> dict[str, Any]:
    """Sample 0005 with its ROOT volume (a real VHDX) in ``C:\\pool``, and ``wait_s``."""
    return {**_body(running, name), "wait": wait_s}



def _fat_volume(volume_id: int) -> dict[str, Any]:
    """A FAT data volume of 50 MiB in ``C:\\pool``, as CreateObjectCommand carries it."""
    store = {STORE_TO: {"uuid": POOL_UUID, "id": 201, "host": "10.1.1.1",
                        "type": "Filesystem", "poolType": "Filesystem", "path": "C:\\pool",
                        "port": 0}}
    return {VOLUME_TO: {"uuid": VOLUME_UUID, "volumeType": "DATADISK", "dataStore": store,
                        "name": f"DATA-{volume_id}", "size": 50 * MIB, "volumeId": volume_id,
                        "id": volume_id, "accountId": 3, "provisioningType": "FAT"}}


async def _timed(running: Running, fqcn: str, body: dict[str, Any]
                 ) -> tuple[str, dict[str, Any], float]:
    loop = asyncio.get_running_loop()
    began = loop.time()
    key, answer = await running.answer(fqcn, body)
    return key, answer, loop.time() - began


async def test_a_start_whose_jobs_outlast_half_its_wait_fails_in_time_and_leaves_no_vm(
    running: Running,
) -> None:
    """Each job of the build takes 1.2 s and the MS waits 4 s: the job still running at
    2 s (half the wait) fails the start, and the half-built VM is removed within the
    rest of the wait, so nothing runs that the MS has given up on."""
    body = _start_body(running, "i-2-70-VM", wait_s=4)
    slow(running, job_s=1.2)
    key, answer, took_s = await _timed(running, START, body)
    assert (key, answer["result"]) == (START_ANSWER, False), answer
    assert ("job did not finish within the command's bound (2 s, half the 4 s the "
            "management server waits for StartCommand)") in answer["details"], answer
    assert took_s < 4.0, took_s
    assert "i-2-70-VM" not in await vm_names(running.emulator)


async def test_a_start_of_a_vm_still_starting_waits_at_most_half_its_wait(
    running: Running,
) -> None:
    """A VM Hyper-V is still starting (its start takes 30 s) is waited for within half the
    command's ``wait``, not the job wait (600 s): the MS waits 2 s, and the answer comes
    within that, naming the change and the bound."""
    cim = running.emulator
    path = await define_vm(cim, "i-2-71-VM")
    slow(running, job_s=30.0)
    await changing(cim, path, 2, STARTING)
    slow(running, job_s=0.01)  # the start still lasts 30 s; the command's own jobs do not
    key, answer, took_s = await _timed(running, START, _start_body(running, "i-2-71-VM", 2))
    assert (key, answer["result"]) == (START_ANSWER, False), answer
    assert ("waiting for the existing VM to finish starting: VM i-2-71-VM is still starting "
            "on this host after 1 s, half the 2 s the management server waits for "
            "StartCommand") in answer["details"], answer
    assert took_s < 2.0, took_s


async def test_a_fixed_volume_whose_job_outlasts_half_the_wait_fails_in_time(
    running: Running,
) -> None:
    """Hyper-V writes a fixed disk whole; a CreateObjectCommand the MS waits 2 s for
    (its ``wait``) fails at 1 s while the job still runs, instead of answering success
    after the MS has failed the volume's creation."""
    _pool(running)
    volume = _fat_volume(11)
    slow(running, job_s=3.0)
    key, answer, took_s = await _timed(running, CREATE_OBJECT, {"data": volume, "wait": 2})
    assert (key, answer["result"]) == (CREATE_OBJECT_ANSWER, False), answer
    assert ("CreateVirtualHardDisk job did not finish within the command's bound (1 s, half "
            "the 2 s the management server waits for CreateObjectCommand)"
            ) in answer["details"], answer
    assert took_s < 2.0, took_s


async def test_a_fixed_volume_cut_at_the_bound_leaves_no_file_once_its_job_ends(
    running: Running,
) -> None:
    """Hyper-V holds the fixed disk it writes open until its job ends, and the job cannot
    be stopped: the failure the MS gets at half its wait names the job, not the file the
    agent could not remove, and once the job has ended nothing of the volume is left in
    the pool (the MS knows no such file, and a retry finds no disk of that name)."""
    pool = _pool(running)
    volume = _fat_volume(12)
    slow(running, job_s=2.0)
    key, answer, took_s = await _timed(running, CREATE_OBJECT, {"data": volume, "wait": 2})
    assert (key, answer["result"]) == (CREATE_OBJECT_ANSWER, False), answer
    assert "CreateVirtualHardDisk job did not finish" in answer["details"], answer
    assert "cannot delete" not in answer["details"], answer
    assert took_s < 2.0, took_s
    jobs = await running.emulator.query(wql.select("Msvm_StorageJob"))
    assert [job["JobState"] for job in jobs] == [4]  # Running: Hyper-V writes on
    left = sorted(path.name for path in pool.iterdir())
    for _ in range(100):  # the job ends 2 s after it began; its file goes then
        await asyncio.sleep(0.05)
        left = sorted(path.name for path in pool.iterdir())
        if not left:
            break
    jobs = await running.emulator.query(wql.select("Msvm_StorageJob"))
    assert [job["JobState"] for job in jobs] == [7]  # Completed
    assert left == []
