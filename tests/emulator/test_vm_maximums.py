"""The most vCPUs and memory a VM gets, by the host's release and the VM's generation
(Microsoft's "Plan for Hyper-V scalability in Windows Server"), and no more vCPUs than the
host has logical processors: the emulator refuses what Hyper-V refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from tests.emulator.kit import GEN1, GEN2, define_vm, devices, failure, finished, service

TB_MB = 1 << 20
INVALID_PARAMETER = 32773
#: (Windows version, generation, most vCPUs, most memory MB) of each host profile.
PROFILES = [
    ("6.3.9600", 1, 64, TB_MB),  # Windows Server 2012 R2
    ("6.3.9600", 2, 64, TB_MB),
    ("10.0.14393", 1, 64, TB_MB),  # 2016
    ("10.0.14393", 2, 240, 12 * TB_MB),
    ("10.0.17763", 1, 64, TB_MB),  # 2019
    ("10.0.17763", 2, 250, 12 * TB_MB),
    ("10.0.20348", 1, 64, TB_MB),  # 2022
    ("10.0.20348", 2, 1024, 240 * TB_MB),
]
IDS = [f"{version}-gen{generation}" for version, generation, _, _ in PROFILES]


@pytest.fixture
async def opened(make_config: Callable[..., EmulatorConfig]) -> AsyncIterator[
        Callable[..., EmulatorCim]]:
    opened: list[EmulatorCim] = []

    def open_host(**overrides: object) -> EmulatorCim:
        cim = EmulatorCim.open(make_config(**overrides))
        opened.append(cim)
        return cim

    yield open_host
    for cim in opened:
        await cim.close()


async def _modify(cim: EmulatorCim, vm: ObjectPath, class_name: str,
                  **values: object) -> int:
    """Change the VM's one ``class_name`` device: 0, or the failure code."""
    (current,) = await devices(cim, vm, class_name)
    result = await cim.invoke(await service(cim), "ModifyResourceSettings", {
        "ResourceSettings": [current.updated(values)]})
    job = await finished(cim, result)
    if job is None or job["JobState"] == 7:
        return result.return_value if job is None else 0
    return await failure(cim, result)


@pytest.mark.parametrize(("version", "generation", "cpus", "memory_mb"), PROFILES, ids=IDS)
async def test_vcpus_refused_above_the_releases_maximum_for_the_generation(
    opened: Callable[..., EmulatorCim], version: str, generation: int, cpus: int,
    memory_mb: int,
) -> None:
    cim = opened(os_version=version, cpus=4096, sockets=2)
    vm = await define_vm(cim, "big", GEN2 if generation == 2 else GEN1)
    processor = "Msvm_ProcessorSettingData"
    assert await _modify(cim, vm, processor, VirtualQuantity=cpus + 1) == INVALID_PARAMETER
    assert (await devices(cim, vm, processor))[0]["VirtualQuantity"] == 1
    assert await _modify(cim, vm, processor, VirtualQuantity=cpus) == 0
    assert (await devices(cim, vm, processor))[0]["VirtualQuantity"] == cpus


@pytest.mark.parametrize(("version", "generation", "cpus", "memory_mb"), PROFILES, ids=IDS)
async def test_memory_refused_above_the_releases_maximum_for_the_generation(
    opened: Callable[..., EmulatorCim], version: str, generation: int, cpus: int,
    memory_mb: int,
) -> None:
    cim = opened(os_version=version)
    vm = await define_vm(cim, "big", GEN2 if generation == 2 else GEN1)
    memory = "Msvm_MemorySettingData"
    over = memory_mb + 2
    static = {"DynamicMemoryEnabled": False, "Reservation": over, "Limit": over}
    assert await _modify(cim, vm, memory, VirtualQuantity=over, **static) == INVALID_PARAMETER
    dynamic = {"DynamicMemoryEnabled": True, "Reservation": 512, "VirtualQuantity": 1024}
    assert await _modify(cim, vm, memory, Limit=over, **dynamic) == INVALID_PARAMETER
    assert (await devices(cim, vm, memory))[0]["VirtualQuantity"] == 1024
    assert await _modify(cim, vm, memory, Limit=memory_mb, **dynamic) == 0
    fitting = {"DynamicMemoryEnabled": False, "Reservation": memory_mb, "Limit": memory_mb}
    assert await _modify(cim, vm, memory, VirtualQuantity=memory_mb, **fitting) == 0
    assert (await devices(cim, vm, memory))[0]["VirtualQuantity"] == memory_mb


async def test_vcpus_refused_above_the_hosts_logical_processors(
    opened: Callable[..., EmulatorCim],
) -> None:
    cim = opened(os_version="10.0.20348", cpus=8, sockets=2)
    vm = await define_vm(cim, "wide", GEN2)
    processor = "Msvm_ProcessorSettingData"
    assert await _modify(cim, vm, processor, VirtualQuantity=9) == INVALID_PARAMETER
    assert await _modify(cim, vm, processor, VirtualQuantity=8) == 0
