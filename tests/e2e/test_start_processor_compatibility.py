"""StartCommand over real HTTPS gives a VM processor compatibility
(Msvm_ProcessorSettingData.LimitProcessorFeatures) as its ``guest.cpu.mode`` detail says,
else as ``[agent] processor_compatibility`` says, at DefineSystem: the VM can then move
live between hosts of different processor generations of one vendor. On every backend:
the setting reaches a host driven over WinRM too."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cloudstack import names
from hyperv_agent.emulator import vhd
from tests.cloudstack.fixtures import sample_json
from tests.e2e.conftest import Running, config_with_shares, every_backend, serving
from tests.emulator.kit import devices

VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
STORE_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"

Serve = Callable[[str], AbstractAsyncContextManager[Running]]

backend_kind = every_backend  # the emulator in-process, and over WinRM (agentless mode)


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    @asynccontextmanager
    async def serve(agent_toml: str) -> AsyncIterator[Running]:
        async with serving(config_with_shares(tmp_path, {}, agent_toml)) as running:
            yield running

    return serve


def _body(running: Running, name: str, details: dict[str, str]) -> dict[str, Any]:
    """Sample 0005 as VM ``name`` with its root volume made in ``C:\\pool`` and
    ``details`` added to the VM's."""
    body: dict[str, Any] = copy.deepcopy(sample_json("0005_StartCommand.json"))
    vm = body["vm"]
    vm["name"] = name
    vm["details"] = {**(vm.get("details") or {}), **details}
    vm["disks"] = vm["disks"][:1]
    root = vm["disks"][0]["data"][VOLUME_TO]
    root["dataStore"][STORE_TO]["path"] = "C:\\pool"
    root["uuid"] = root["path"] = str(uuid.uuid4())
    folder = running.agent.config.agent.state_dir / "emulator" / "drives" / "C" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    vhd.create(folder / f"{root['uuid']}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC,
               1 << 26)
    return body


async def _started(running: Running, name: str, **details: str) -> tuple[bool, str]:
    """Start VM ``name`` with ``details``: (its LimitProcessorFeatures, the answer's
    details)."""
    key, answer = await running.answer(names.START_COMMAND, _body(running, name, details))
    assert (key, answer["result"]) == (names.START_ANSWER, True), answer
    (vm,) = await running.emulator.query(wql.select("Msvm_ComputerSystem",
                                                    wql.eq("ElementName", name)))
    assert vm.path is not None
    (processor,) = await devices(running.emulator, vm.path, "Msvm_ProcessorSettingData")
    return processor["LimitProcessorFeatures"] is True, str(answer.get("details") or "")


async def test_the_vm_detail_decides_and_the_agent_setting_is_the_default(serve: Serve) -> None:
    async with serve("") as running:
        assert (await _started(running, "i-2-1-VM"))[0] is False
        assert (await _started(running, "i-2-2-VM", **{"guest.cpu.mode": " Custom "}))[0]
        limited, details = await _started(running, "i-2-3-VM", **{
            "guest.cpu.mode": "custom", "guest.cpu.model": "Skylake-Server"})
        assert limited and "guest.cpu.model 'Skylake-Server' not followed" in details
    async with serve("processor_compatibility = true") as running:
        assert (await _started(running, "i-2-4-VM"))[0] is True
        for mode in ("host-model", "host-passthrough"):
            assert (await _started(running, f"i-2-5-{mode}", **{"guest.cpu.mode": mode}))[0] \
                is False


async def test_a_cpu_mode_hyperv_cannot_follow_fails_the_start_before_anything_is_made(
        serve: Serve) -> None:
    async with serve("") as running:
        body = _body(running, "i-2-9-VM", {"guest.cpu.mode": "maximum"})
        key, answer = await running.answer(names.START_COMMAND, body)
        assert (key, answer["result"]) == (names.START_ANSWER, False)
        assert "guest.cpu.mode 'maximum' is not a CPU mode Hyper-V can follow" in \
            answer["details"]
        assert "custom" in answer["details"]
        assert await running.emulator.query(wql.select(
            "Msvm_ComputerSystem", wql.eq("ElementName", "i-2-9-VM"))) == []
