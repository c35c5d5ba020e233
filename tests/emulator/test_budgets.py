"""The deterministic halves of the emulator's budgets: round trips, whatever the VM count."""

from __future__ import annotations

from collections.abc import Callable

from hyperv_agent.cim import wql
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from tests.emulator.kit import service

VM_COUNT = 1000


async def test_summary_of_1000_vms_is_one_call_and_lists_them_all(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config(async_jobs=False, persist=False))
    try:
        vsms = await service(cim)
        template = await cim.spawn("Msvm_VirtualSystemSettingData")
        for index in range(VM_COUNT):
            result = await cim.invoke(vsms, "DefineSystem", {
                "SystemSettings": template.updated(ElementName=f"i-2-{index}-VM")})
            assert result.return_value == 0
        before = cim.round_trips()
        result = await cim.invoke(vsms, "GetSummaryInformation", {
            "SettingData": None, "RequestedInformation": [0, 1, 100]})
        spent = cim.round_trips() - before
        assert (spent.calls, spent.waits) == (1, 0)
        names = {s["ElementName"] for s in result.instances("SummaryInformation")}
        assert names == {f"i-2-{index}-VM" for index in range(VM_COUNT)}
        before = cim.round_trips()
        listed = await cim.query(wql.select("Msvm_ComputerSystem",
                                            wql.eq("Caption", "Virtual Machine"),
                                            ["Name", "ElementName", "EnabledState"]))
        assert len(listed) == VM_COUNT
        assert (cim.round_trips() - before).calls == 1
    finally:
        await cim.close()
