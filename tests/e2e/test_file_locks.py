"""Commands that write or delete the same file queue behind one lock table, whichever
handler serves them; commands on different files run side by side."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bench.bench_vm import start_body

from hyperv_agent.cloudstack import names
from hyperv_agent.config import load_config
from hyperv_agent.emulator import vhd
from tests.e2e.conftest import PRIVATE_IP, Running, serving

PRIMARY_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
TEMPLATE_TO = "org.apache.cloudstack.storage.to.TemplateObjectTO"
VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
VOLUME = "0d1f6a4e-2b3c-4d5e-8f90-a1b2c3d4e5f6"
OTHER = "9e8d7c6b-5a49-4382-b1a0-f0e1d2c3b4a5"
CALL_S, JOB_S = 0.2, 0.3  # a linked clone then takes about half a second


def _store() -> dict[str, Any]:
    return {PRIMARY_TO: {"uuid": "5fe2bad3-d785-394e-9949-89786b8a63d2", "id": 201,
                         "host": "10.1.1.1", "poolType": "Filesystem", "path": "C:\\pool",
                         "port": 0}}


def _volume(uuid: str) -> dict[str, Any]:
    return {VOLUME_TO: {"uuid": uuid, "volumeType": "ROOT", "dataStore": _store(),
                        "format": "VHDX", "name": "ROOT-5", "id": 10}}


def _clone(uuid: str) -> dict[str, Any]:
    """A root volume made from tmpl-1 in the same pool: a linked clone."""
    template = {TEMPLATE_TO: {"path": "tmpl-1", "format": "VHDX", "imageDataStore": _store(),
                              "uuid": "7e4ca941-cb1b-4113-ab9e-043960d0fb10", "id": 206}}
    return {"srcTO": template, "destTO": _volume(uuid), "executeInSequence": False,
            "wait": 10800}


@pytest.fixture
async def slow(tmp_path: Path) -> AsyncIterator[tuple[Running, Path]]:
    """An agent whose emulated host takes CALL_S a round trip and JOB_S a job, with a
    template in its local pool."""
    toml = tmp_path / "agent.toml"
    toml.write_text(f"[emulator]\ncall_latency_s = {CALL_S}\njob_duration_s = {JOB_S}\n")
    config = load_config(toml, state_dir=tmp_path / "state", backend="emulator",
                         private_ip=PRIVATE_IP, local_storage_path="C:\\pool")
    async with serving(config, backend="emulator") as running:
        pool = config.agent.state_dir / "emulator" / "drives" / "C" / "pool"
        pool.mkdir(parents=True)
        vhd.create(pool / "tmpl-1.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 16 << 20)
        yield running, pool


async def _copy_under_way(running: Running) -> asyncio.Task[dict[str, Any]]:
    """Send the clone and return once it has reached the emulated host: its first round
    trip comes after it took the file's lock (a fixed sleep races on a loaded machine)."""
    before = running.emulator.round_trips().calls
    copying = asyncio.create_task(_answered(running, names.COPY_COMMAND, _clone(VOLUME)))
    for _ in range(500):
        if running.emulator.round_trips().calls > before:
            return copying
        await asyncio.sleep(0.01)
    raise AssertionError("the copy never reached the emulated host")


async def _answered(running: Running, fqcn: str, body: dict[str, Any]) -> dict[str, Any]:
    _, answer = await running.answer(fqcn, body)
    assert answer["result"] is True, answer
    return answer


async def test_delete_waits_for_the_copy_of_its_file_when_both_arrive_together(
    slow: tuple[Running, Path],
) -> None:
    running, pool = slow
    copying = await _copy_under_way(running)  # the copy holds the file's lock, its clone under way
    deleted = await _answered(running, names.DELETE_COMMAND, {"data": _volume(VOLUME)})
    await copying
    # The delete found the file: it ran once the copy had made it (without the shared
    # lock it would have found nothing yet, and the copy's file would remain).
    assert deleted["details"].startswith(f"deleted C:\\pool\\{VOLUME}.vhdx; "), deleted
    assert sorted(p.name for p in pool.iterdir()) == ["tmpl-1.vhdx"]


async def test_delete_of_another_file_does_not_wait_for_a_copy_when_both_arrive_together(
    slow: tuple[Running, Path],
) -> None:
    running, pool = slow
    copying = await _copy_under_way(running)
    deleted = await _answered(running, names.DELETE_COMMAND, {"data": _volume(OTHER)})
    assert not copying.done()
    assert "does not exist" in deleted["details"]
    await copying
    assert sorted(p.name for p in pool.iterdir()) == [f"{VOLUME}.vhdx", "tmpl-1.vhdx"]


async def test_delete_of_a_volume_waits_for_the_vm_being_built_on_it_then_keeps_it(
    slow: tuple[Running, Path],
) -> None:
    """A StartCommand holds its volumes' files while it builds the VM: a DeleteCommand of
    the root volume, sent once the VM is defined, waits, then finds the VM running and
    keeps the file; the start succeeds (without the shared lock the file was deleted under
    the VM being built, and the start failed at RequestStateChange)."""
    running, pool = slow
    drive_c = pool.parent
    vm = "i-2-31-VM"
    starting = asyncio.create_task(running.answer(names.START_COMMAND,
                                                  json.loads(start_body(vm, drive_c))))
    for _ in range(500):  # until the VM is defined: the build is under way
        _, checked = await running.answer(names.CHECK_VIRTUAL_MACHINE_COMMAND, {"vmName": vm})
        if checked["result"]:
            break
        await asyncio.sleep(0.05)
    assert not starting.done()
    root = {VOLUME_TO: {**_volume(f"{vm}-root")[VOLUME_TO], "path": f"{vm}-root"}}
    _, deleted = await running.answer(names.DELETE_COMMAND, {"data": root})
    _, started = await starting
    assert started["result"] is True, started
    assert deleted["result"] is False
    assert "is attached to the running VM i-2-31-VM" in deleted["details"]
    assert (pool / f"{vm}-root.vhdx").is_file()


async def test_linked_clones_of_one_template_are_made_side_by_side(
    slow: tuple[Running, Path],
) -> None:
    """Deploying many VMs from one template at once makes their clones together: each
    holds the template's lock shared (held alone, one clone at a time, the last of 32 VMs
    waited some 32 clones' time for its root disk)."""
    running, pool = slow
    volumes = [f"0d1f6a4e-2b3c-4d5e-8f90-a1b2c3d4e5{index:02x}" for index in range(8)]
    started = time.perf_counter()
    await asyncio.gather(*(_answered(running, names.COPY_COMMAND, _clone(volume))
                           for volume in volumes))
    # one at a time, their differencing-disk jobs alone would take 8 * JOB_S (2.4 s);
    # side by side, about one clone's time (0.7 s)
    assert time.perf_counter() - started < len(volumes) * JOB_S
    assert {f"{volume}.vhdx" for volume in volumes} <= {p.name for p in pool.iterdir()}


async def test_eviction_of_a_template_waits_for_its_clones_under_way_then_keeps_it(
    slow: tuple[Running, Path],
) -> None:
    running, pool = slow
    copying = await _copy_under_way(running)  # the clone holds tmpl-1 shared
    evict = {"volume": {"id": 9, "storagePoolType": "Filesystem", "mountPoint": "C:\\pool",
                        "storagePoolUuid": "5fe2bad3-d785-394e-9949-89786b8a63d2",
                        "path": "tmpl-1", "size": 1 << 30}, "wait": 0}
    _, evicted = await running.answer(names.DESTROY_COMMAND, evict)
    assert copying.done()  # it waited for the clone, then found it
    assert evicted["result"] is False and "is the parent of 1 " in evicted["details"]
    assert (pool / "tmpl-1.vhdx").is_file() and (pool / f"{VOLUME}.vhdx").is_file()
