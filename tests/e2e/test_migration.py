"""Migration between two agents, each a ``serve`` process on its own loopback address
(127.0.0.2 and 127.0.0.3, one port) over an emulated host; the hosts share a
``cluster_dir`` and map the SMB pool's share to one folder. The management server's own
bodies, in its order: PrepareForMigration to the destination, Migrate to the source,
CheckVirtualMachine to the destination; the state reports of both hosts after each step."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.cloudstack import names
from tests.e2e.migration_kit import (
    ADDRESSES,
    ROOT_UUID,
    Cluster,
    Member,
    check_body,
    cluster,
    disk_file,
    free_port,
    member,
    migrate_body,
    prepare_body,
    start_body,
    vm_to,
    with_second_nic,
)
from tests.emulator.kit import ok, service
from tests.emulator.migration_kit import kvp_item, portrait

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="needs 127.0.0.2 and 127.0.0.3 (Linux loopback)")

FAILED_MIDWAY = "failing_jobs = {MigrateVirtualSystemToHost = 1}"


def _pair(tmp_path: Path, lab_a: str = "") -> list[Member]:
    port = free_port(tuple(ADDRESSES.values()))  # both agents listen on one port
    return [member(tmp_path, "HV-A", port, lab_a), member(tmp_path, "HV-B", port)]


async def _started(run: Cluster, host: Member, vm: dict[str, Any]) -> None:
    _, started = await run.ask(host, names.START_COMMAND, start_body(vm))
    assert started["result"] is True, started["details"]


async def _vm_path(host: Member, name: str) -> ObjectPath:
    found = await host.cim().query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName",
                                                                             name)))
    assert len(found) == 1
    return found[0].path


async def _move(run: Cluster, source: Member, destination: Member, vm: dict[str, Any]
                ) -> dict[str, Any]:
    """Prepare on ``destination``, Migrate on ``source``: the MigrateAnswer's fields."""
    _, prepared = await run.ask(destination, names.PREPARE_FOR_MIGRATION_COMMAND,
                                prepare_body(vm))
    assert prepared["result"] is True, prepared["details"]
    kind, moved = await run.ask(source, names.MIGRATE_COMMAND,
                                migrate_body(vm, destination.address))
    assert kind == names.MIGRATE_ANSWER
    return moved


async def _power(run: Cluster, host: Member, name: str) -> str:
    _, checked = await run.ask(host, names.CHECK_VIRTUAL_MACHINE_COMMAND, check_body(name))
    return str(checked["state"])


async def test_a_running_vm_moves_there_and_back_keeping_its_devices(tmp_path: Path) -> None:
    a, b = hosts = _pair(tmp_path, FAILED_MIDWAY)
    disk_file(tmp_path / "pool", ROOT_UUID)
    vm = with_second_nic(vm_to("i-2-7-VM"))
    async with cluster(hosts) as run:
        await _started(run, a, vm)
        path = await _vm_path(a, "i-2-7-VM")
        on_a = a.cim()
        await ok(on_a, await on_a.invoke(await service(on_a), "AddKvpItems", {
            "TargetSystem": path, "DataItems": [kvp_item("cloudstack-vm-userdata", "hi")]}))
        before = await portrait(on_a, path)

        midway = await run.ask(a, names.MIGRATE_COMMAND, migrate_body(vm, b.address))
        assert midway[1]["result"] is False
        assert midway[1]["details"].startswith("MigrateCommand failed due to ")
        assert "injected fault" in midway[1]["details"]
        assert await run.where(hosts, "i-2-7-VM") == ["HV-A"]

        moved = await _move(run, a, b, vm)
        assert moved["result"] is True, moved["details"]
        assert await run.where(hosts, "i-2-7-VM") == ["HV-B"]
        assert await _power(run, b, "i-2-7-VM") == "PowerOn"
        after = await portrait(b.cim(), path)
        assert after == before and len(after["vlans"]) == 2

        back = await _move(run, b, a, vm)
        assert back["result"] is True, back["details"]
        assert await run.where(hosts, "i-2-7-VM") == ["HV-A"]
        assert await _power(run, a, "i-2-7-VM") == "PowerOn"
        assert await portrait(on_a, path) == before
