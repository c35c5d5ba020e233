"""Live migration between hosts of different processors, between two agents, each a
``serve`` process on its own loopback address over an emulated host of one cluster
(``[emulator.processor]`` of each): the management server's own bodies, in its order.
A VM started without processor compatibility does not move to older processors, and the
MigrateCommand's answer says which VM, which host and what would let it move; started with
it (its ``guest.cpu.mode`` detail) it moves; between vendors no running VM moves."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cloudstack import names
from tests.e2e.migration_kit import (
    ADDRESSES,
    LOCAL_POOL,
    ROOT_UUID,
    SHARE,
    SWITCH,
    Cluster,
    Member,
    check_body,
    cluster,
    disk_file,
    member_toml,
    migrate_body,
    prepare_body,
    start_body,
    vm_to,
)
from tests.ports import free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="needs 127.0.0.2 and 127.0.0.3 (Linux loopback)")

VM = "i-2-7-VM"


def _pair(tmp_path: Path, processor_a: str, processor_b: str) -> list[Member]:
    """HV-A and HV-B with the ``[emulator.processor]`` lines given."""
    port = free_port(*ADDRESSES.values())
    members = []
    for name, processor in (("HV-A", processor_a), ("HV-B", processor_b)):
        address = ADDRESSES[name]
        config = tmp_path / f"{name}.toml"
        config.write_text(member_toml(
            tmp_path, name, address, port, SHARE, agent=f"local_storage_path = '{LOCAL_POOL}'",
            emulator=f'switches = ["{SWITCH}"]\n[emulator.processor]\n{processor}'))
        members.append(Member(name, config, f"https://{address}:{port}"))
    return members


def _vm(cpu_mode: str | None = None) -> dict[str, Any]:
    vm = vm_to(VM)
    if cpu_mode is not None:
        vm["details"] = {**vm["details"], "guest.cpu.mode": cpu_mode}
    return vm


async def _started(run: Cluster, host: Member, vm: dict[str, Any]) -> None:
    _, started = await run.ask(host, names.START_COMMAND, start_body(vm))
    assert started["result"] is True, started["details"]


async def _migrate(run: Cluster, source: Member, destination: Member, vm: dict[str, Any]
                   ) -> dict[str, Any]:
    """PrepareForMigration on ``destination`` (it cannot know the source's processors and
    succeeds), then MigrateCommand on ``source``: its answer."""
    _, prepared = await run.ask(destination, names.PREPARE_FOR_MIGRATION_COMMAND,
                                prepare_body(vm))
    assert prepared["result"] is True, prepared["details"]
    kind, moved = await run.ask(source, names.MIGRATE_COMMAND,
                                migrate_body(vm, destination.address))
    assert kind == names.MIGRATE_ANSWER
    return moved


async def _stays_on(run: Cluster, hosts: list[Member], host: Member) -> None:
    assert await run.where(hosts, VM) == [host.name]
    _, checked = await run.ask(host, names.CHECK_VIRTUAL_MACHINE_COMMAND, check_body(VM))
    assert checked["state"] == "PowerOn"


async def test_a_vm_moves_to_older_processors_once_started_with_compatibility(
        tmp_path: Path) -> None:
    a, b = hosts = _pair(tmp_path, 'vendor = "Intel"\nfeature_level = 2',
                         'vendor = "Intel"\nfeature_level = 1')
    disk_file(tmp_path / "pool", ROOT_UUID)
    async with cluster(hosts) as run:
        await _started(run, a, _vm())
        refused = await _migrate(run, a, b, _vm())
        assert refused["result"] is False
        details = str(refused["details"])
        assert details.startswith("MigrateCommand failed due to Virtual machine migration "
                                  f"operation for '{VM}' failed at migration destination "
                                  "'HV-B'. "), details
        assert f"Virtual machine '{VM}' is using processor-specific features not supported " \
               "on host 'HV-B'" in details
        assert f"VM {VM} runs with every processor feature of the host it started on, and " \
               f"the processors of {b.address} lack some of them" in details
        assert "guest.cpu.mode detail custom" in details
        assert "[agent] processor_compatibility = true" in details
        await _stays_on(run, hosts, a)

        # The operator sets the VM's detail; the MS stops the VM and starts it again.
        _, stopped = await run.ask(a, names.STOP_COMMAND, {"vmName": VM, "contextMap": {},
                                                           "wait": 0})
        assert stopped["result"] is True, stopped["details"]
        await _started(run, a, _vm("custom"))
        moved = await _migrate(run, a, b, _vm("custom"))
        assert moved["result"] is True, moved["details"]
        await _stays_on(run, hosts, b)
        back = await _migrate(run, b, a, _vm("custom"))
        assert back["result"] is True, back["details"]
        await _stays_on(run, hosts, a)


async def test_no_running_vm_moves_to_processors_of_another_vendor(tmp_path: Path) -> None:
    a, b = hosts = _pair(tmp_path, 'vendor = "Intel"', 'vendor = "AMD"')
    disk_file(tmp_path / "pool", ROOT_UUID)
    async with cluster(hosts) as run:
        await _started(run, a, _vm("custom"))
        refused = await _migrate(run, a, b, _vm("custom"))
        assert refused["result"] is False
        details = str(refused["details"])
        assert "The hardware on the destination computer is not compatible with the " \
               "hardware requirements of this virtual machine." in details
        assert f"VM {VM} already runs with processor compatibility" in details
        assert f"the processors of {b.address} are of another vendor" in details
        assert "stop it and start it on that host" in details
        await _stays_on(run, hosts, a)
