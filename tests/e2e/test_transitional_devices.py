"""Device, size and NIC commands for a VM Hyper-V is starting or stopping, over real HTTPS:
the emulated host takes no device or setting change while a state change's job runs
(the latency model's job time, 32775), and a starting VM reads as running, a stopping one
as off. The commands wait the change out, then act on the VM as it then is; one still
changing after the agent's bound fails with the command's own answer, naming the change."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cloudstack import names
from hyperv_agent.config import AgentConfig
from hyperv_agent.emulator import vhd
from hyperv_agent.handlers.vm import VmSettings
from hyperv_agent.hyperv import jobs
from tests.e2e.conftest import Running, config_with_shares, serving
from tests.e2e.migration_kit import migrate_body, vm_to, volume_body
from tests.e2e.test_attach_commands import SHARE, _data_disk, _file, _layout, _start, _volume_file
from tests.e2e.test_copy_command import (
    COPY,
    COPY_ANSWER,
    OTHER_POOL_UUID,
    POOL_UUID,
    _other_pool,
    _pool_to_pool,
)
from tests.e2e.test_vm_config_commands import (
    PLUG,
    PLUG_ANSWER,
    ROUTER,
    SCALE,
    SCALE_ANSWER,
    _config,
    _plug,
    _router,
    _scale,
    _vm,
)
from tests.e2e.test_volume_commands import (
    ANSWER,
    DELETE,
    DESTROY,
    GIB,
    RESIZE,
    RESIZE_ANSWER,
    VOLUME_UUID,
    _destroy,
    _disk,
    _pool,
    _resize,
    _vm_with,
    _volume,
)
from tests.e2e.transitions_kit import STARTING, STOPPING, changing, slow
from tests.emulator.kit import devices, ok, request_state


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Running]:
    (tmp_path / "secondary").mkdir()
    async with serving(config_with_shares(tmp_path, {SHARE: tmp_path / "secondary"})) as running:
        yield running


@pytest.mark.parametrize(("requested", "shown", "final"), [(2, STARTING, 2), (3, STOPPING, 3)],
                         ids=["starting", "stopping"])
async def test_attach_to_a_vm_still_starting_or_stopping_waits_then_attaches(
    agent: Running, requested: int, shown: int, final: int,
) -> None:
    """Hyper-V adds no drive while it starts or stops the VM: the attach waits the change
    out, then adds the volume hot (running) or cold (off), at the slot asked for."""
    cim = agent.emulator
    vm = await _start(agent, "i-2-50-VM", data_seq=1)
    if requested == 2:
        await ok(cim, await request_state(cim, vm, 3))
    _volume_file(agent, "vol-50")
    slow(agent)
    await changing(cim, vm, requested, shown)
    key, answer = await agent.answer(names.ATTACH_COMMAND,
                                     {"vmName": "i-2-50-VM", "disk": _data_disk("vol-50", 2)})
    assert (key, answer["result"]) == (names.ATTACH_ANSWER, True), answer
    assert (await _layout(cim, vm))[("scsi", 2)] == ("disk", _file("vol-50"))
    assert (await cim.get(vm))["EnabledState"] == final


async def test_scale_of_a_vm_still_stopping_waits_until_it_is_off_then_resizes_it(
    running: Running,
) -> None:
    """A stopping VM reads as off, but Hyper-V changes none of its settings until it is:
    the scale waits, then gives it the processors and memory asked for, instead of
    answering "stop it first" for a VM that is being stopped."""
    cim = running.emulator
    vm = await _router(running, nic_count=1)
    await ok(cim, await request_state(cim, vm.path, 2))
    slow(running)
    await changing(cim, vm.path, 3, STOPPING)
    key, answer = await running.answer(SCALE, _scale(ROUTER, 4, 2048))
    assert (key, answer["result"]) == (SCALE_ANSWER, True), answer
    (processor,) = await devices(cim, vm.path, "Msvm_ProcessorSettingData")
    assert processor["VirtualQuantity"] == 4


async def test_plug_nic_of_a_generation_2_vm_still_starting_adds_it_once_the_vm_runs(
    running: Running,
) -> None:
    """A starting VM reads as running, and a generation 2 VM takes a NIC hot, but not
    before Hyper-V is done starting it: the plug waits, then adds the NIC."""
    cim = running.emulator
    vm = await _vm(running, "i-2-51-VM", generation=2, start=False)
    slow(running)
    await changing(cim, vm.path, 2, STARTING)
    key, answer = await running.answer(PLUG, _plug("i-2-51-VM"))
    assert (key, answer["result"]) == (PLUG_ANSWER, True), answer
    assert answer["details"] == "NIC 02004A8E0021 added to VM i-2-51-VM"
    assert (await _config(running, "i-2-51-VM"))[2]["macAddress"] == "02004A8E0021"
    assert (await cim.get(vm.path))["EnabledState"] == 2


async def test_resize_of_a_disk_in_a_vm_still_stopping_grows_it_once_the_vm_is_off(
    agent: Running,
) -> None:
    """A VM Hyper-V is stopping still holds its disks, and a VHDX on IDE grows only while
    its VM is off: the resize Hyper-V refuses meanwhile (32775) is made once the stop is
    done, instead of failing the resize the MS sent for a VM it had just stopped."""
    cim = agent.emulator
    pool = _pool(agent)
    _disk(pool, f"{VOLUME_UUID}.vhdx")
    vm = await _vm_with(cim, "i-2-31-VM", f"C:\\pool\\{VOLUME_UUID}.vhdx", scsi=False,
                        running=True)
    slow(agent)
    await changing(cim, vm.path, 3, STOPPING)
    key, answer = await agent.answer(RESIZE, _resize(VOLUME_UUID, 2 * GIB))
    assert (key, answer["result"], answer["newSize"]) == (RESIZE_ANSWER, True, 2 * GIB), answer
    assert vhd.read_info(pool / f"{VOLUME_UUID}.vhdx").virtual_size_bytes == 2 * GIB


async def test_delete_of_a_disk_in_a_vm_still_stopping_deletes_it_once_the_vm_is_off(
    agent: Running,
) -> None:
    """A stopping VM reads as off, but its worker holds its disks until it is: the
    delete waits the stop out, then deletes the file, instead of meeting Windows' sharing
    violation (or, on a host that let it through, deleting a disk still open)."""
    cim = agent.emulator
    pool = _pool(agent)
    _disk(pool, f"{VOLUME_UUID}.vhdx")
    vm = await _vm_with(cim, "i-2-34-VM", f"C:\\pool\\{VOLUME_UUID}.vhdx", scsi=True,
                        running=True)
    slow(agent)
    await changing(cim, vm.path, 3, STOPPING)
    key, answer = await agent.answer(DELETE, {"data": _volume(path=VOLUME_UUID)})
    assert (key, answer["result"]) == (ANSWER, True), answer
    assert not (pool / f"{VOLUME_UUID}.vhdx").exists()


async def test_delete_of_a_disk_in_a_vm_still_starting_is_refused_once_it_runs(
    agent: Running,
) -> None:
    """A starting VM holds its disks, and runs once the start is done: refused, naming
    the running VM, the file kept."""
    cim = agent.emulator
    pool = _pool(agent)
    _disk(pool, f"{VOLUME_UUID}.vhdx")
    vm = await _vm_with(cim, "i-2-35-VM", f"C:\\pool\\{VOLUME_UUID}.vhdx", scsi=True,
                        running=False)
    slow(agent)
    await changing(cim, vm.path, 2, STARTING)
    key, answer = await agent.answer(DELETE, {"data": _volume(path=VOLUME_UUID)})
    assert (key, answer["result"]) == (ANSWER, False), answer
    assert "attached to the running VM i-2-35-VM" in answer["details"], answer
    assert (pool / f"{VOLUME_UUID}.vhdx").is_file()


async def test_legacy_destroy_of_a_disk_in_a_vm_still_starting_detaches_it_once_it_runs(
    agent: Running,
) -> None:
    """Hyper-V removes no drive while it starts the VM: the DestroyCommand's detach waits
    the start out, then takes the disk from the running VM and deletes the file."""
    cim = agent.emulator
    pool = _pool(agent)
    _disk(pool, "data.vhdx")
    vm = await _vm_with(cim, "i-2-36-VM", "C:\\pool\\data.vhdx", scsi=True, running=False)
    slow(agent)
    await changing(cim, vm.path, 2, STARTING)
    key, answer = await agent.answer(DESTROY, _destroy("data.vhdx", "i-2-36-VM"))
    assert (key, answer["result"]) == (ANSWER, True), answer
    assert not (pool / "data.vhdx").exists()
    assert (await cim.get(vm.path))["EnabledState"] == 2


def _bounded(agent_config: Callable[..., AgentConfig]) -> Any:
    """The agent waiting at most 0.3 s for a VM's state change (its job wait)."""
    wait = jobs.WaitPolicy(timeout_s=0.3, first_poll_s=0.05, max_poll_s=0.1)
    return serving(agent_config(), VmSettings(job_wait=wait))


@pytest.mark.parametrize(("command", "answer_class", "body"), [
    (SCALE, SCALE_ANSWER, _scale("i-2-52-VM", 2, 1024)),
    (PLUG, PLUG_ANSWER, _plug("i-2-52-VM")),
], ids=["scale", "plug-nic"])
async def test_a_vm_still_starting_after_the_bound_fails_the_command_naming_the_change(
    agent_config: Callable[..., AgentConfig], command: str, answer_class: str,
    body: dict[str, object],
) -> None:
    async with _bounded(agent_config) as running:
        cim = running.emulator
        vm = await _vm(running, "i-2-52-VM", generation=2, start=False)
        slow(running, job_s=5.0)
        await changing(cim, vm.path, 2, STARTING)
        before = cim.round_trips()
        key, answer = await running.answer(command, body)
        spent = cim.round_trips() - before
        assert (key, answer["result"]) == (answer_class, False), answer
        assert "VM i-2-52-VM is still starting on this host after 0.3 s" in answer["details"]
        assert spent["invoke:ModifyResourceSettings"] == spent["invoke:AddResourceSettings"] == 0


@pytest.mark.parametrize(("command", "answer_class", "body"), [
    (SCALE, SCALE_ANSWER, _scale("i-2-53-VM", 2, 1024)),
    (PLUG, PLUG_ANSWER, _plug("i-2-53-VM")),
], ids=["scale", "plug-nic"])
async def test_the_wait_for_a_state_change_is_bounded_by_half_the_commands_wait(
    running: Running, command: str, answer_class: str, body: dict[str, object],
) -> None:
    """A command the MS waits 2 s for does not wait the job wait (600 s) for a VM still
    starting: it answers within its own ``wait``, naming the change, instead of after
    the MS has given up on it."""
    cim = running.emulator
    vm = await _vm(running, "i-2-53-VM", generation=2, start=False)
    slow(running, job_s=30.0)
    await changing(cim, vm.path, 2, STARTING)
    key, answer = await running.answer(command, {**body, "wait": 2})
    assert (key, answer["result"]) == (answer_class, False), answer
    assert "VM i-2-53-VM is still starting on this host after 1 s" in answer["details"]


def _held_by(vm_name: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Commands on the disk ``C:\\pool\\<VOLUME_UUID>.vhdx`` of ``vm_name``, or on that VM:
    (command, answer class, body)."""
    other_pool = {"id": 202, "uuid": OTHER_POOL_UUID, "host": "10.1.1.1",
                  "path": "C:\\pool2", "port": 0, "type": "Filesystem"}
    return {
        "delete": (DELETE, ANSWER, {"data": _volume(path=VOLUME_UUID)}),
        "copy": (COPY, COPY_ANSWER, _pool_to_pool()),
        "resize": (RESIZE, RESIZE_ANSWER, _resize(f"{VOLUME_UUID}.vhdx", 2 * GIB)),
        "migrate-volume": (names.MIGRATE_VOLUME_COMMAND, names.MIGRATE_VOLUME_ANSWER,
                           volume_body(VOLUME_UUID, vm_name, other_pool)),
        "migrate-detached-volume": (names.MIGRATE_VOLUME_COMMAND,
                                    names.MIGRATE_VOLUME_ANSWER,
                                    volume_body(VOLUME_UUID, None, other_pool,
                                                source_pool=other_pool
                                                | {"path": "C:\\pool", "uuid": POOL_UUID})),
        "migrate": (names.MIGRATE_COMMAND, names.MIGRATE_ANSWER,
                    migrate_body(vm_to(vm_name), "127.0.0.9")),
    }


@pytest.mark.parametrize("command", list(_held_by("")))
async def test_a_disk_or_move_command_waits_for_its_vm_at_most_half_its_wait(
    agent: Running, command: str,
) -> None:
    """The file commands wait out the state change of the VM holding their disk, and a
    migration that of its VM, within the job wait and half the command's ``wait``, as the
    VM commands do: a command the MS waits 2 s for answers within that, naming the change,
    instead of after the MS has given up on it (the job wait is 600 s)."""
    cim = agent.emulator
    _disk(_pool(agent), f"{VOLUME_UUID}.vhdx")
    await _other_pool(agent)
    vm = await _vm_with(cim, "i-2-54-VM", f"C:\\pool\\{VOLUME_UUID}.vhdx", scsi=True,
                        running=False)
    slow(agent, job_s=30.0)
    await changing(cim, vm.path, 2, STARTING)
    slow(agent, job_s=0.01)  # the start still lasts 30 s; the command's own jobs do not
    name, answer_class, body = _held_by("i-2-54-VM")[command]
    key, answer = await agent.answer(name, {**body, "wait": 2})
    assert (key, answer["result"]) == (answer_class, False), answer
    assert "VM i-2-54-VM is still starting on this host after 1 s" in answer["details"]
