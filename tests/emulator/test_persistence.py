"""The emulated host's state survives a restart and is never left half-written."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from hyperv_agent.cim import wql
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from tests.emulator.kit import define_vm, devices, ok, request_state, service, state

VMS = wql.select("Msvm_ComputerSystem", wql.eq("Caption", "Virtual Machine"))


async def test_vm_survives_restart_when_state_dir_is_reused(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config())
    vm = await define_vm(cim, "durable")
    await ok(cim, await request_state(cim, vm, 2))
    before = sorted(str(d.path) for d in await devices(cim, vm))
    await cim.close()

    again = EmulatorCim.open(make_config())
    try:
        found = await again.query(VMS)
        assert [v["ElementName"] for v in found] == ["durable"]
        assert await state(again, vm) == 2
        assert sorted(str(d.path) for d in await devices(again, vm)) == before
    finally:
        await again.close()


async def test_failed_call_leaves_nothing_when_a_later_setting_is_refused(
    emulator: EmulatorCim,
) -> None:
    vssd = (await emulator.spawn("Msvm_VirtualSystemSettingData")).updated(ElementName="half")
    bad_drive = (await emulator.spawn("Msvm_ResourceAllocationSettingData")).updated(
        ResourceType=17, ResourceSubType="Microsoft:Hyper-V:Synthetic Disk Drive",
        Parent="Msvm_ResourceAllocationSettingData.InstanceID=\"Microsoft:nope\"")
    result = await emulator.invoke(await service(emulator), "DefineSystem",
                                   {"SystemSettings": vssd, "ResourceSettings": [bad_drive]})
    job = result.path("Job")
    assert job is not None and (await emulator.get(job))["JobState"] == 10
    assert await emulator.query(VMS) == []
    assert await emulator.query(wql.select("Msvm_VirtualSystemSettingData",
                                           wql.eq("ElementName", "half"))) == []


def test_killed_process_leaves_no_half_defined_vm(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, pathlib
        from hyperv_agent.emulator.backend import EmulatorCim
        from hyperv_agent.emulator.config import EmulatorConfig
        from tests.emulator.kit import define_vm

        async def main():
            cim = EmulatorCim.open(EmulatorConfig(state_dir=pathlib.Path({str(tmp_path)!r})))
            await define_vm(cim, "kept")
            cim.faults.die_during_next_commit()
            await define_vm(cim, "lost")

        asyncio.run(main())
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 70, run.stderr

    async def check() -> None:
        cim = EmulatorCim.open(EmulatorConfig(state_dir=tmp_path))
        try:
            assert [v["ElementName"] for v in await cim.query(VMS)] == ["kept"]
            names = [v["ElementName"] for v in await cim.query(
                wql.select("Msvm_VirtualSystemSettingData"))]
            assert "lost" not in names
            assert await cim.query(wql.select("CIM_ResourceAllocationSettingData",
                                              wql.starts_with("InstanceID", "Microsoft:"))) != []
        finally:
            await cim.close()

    import asyncio

    asyncio.run(check())
