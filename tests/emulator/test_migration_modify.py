"""ModifyServiceSettings of the migration service: the host's migration settings change
(Enable-VMMigration, Disable-VMMigration, Set-VMHost); what is left out keeps its value;
anything Hyper-V would not take is refused with 32773 and changes nothing."""

from __future__ import annotations

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance
from hyperv_agent.emulator.backend import EmulatorCim
from tests.emulator.kit import ok, service

MIGRATION = "Msvm_VirtualSystemMigrationService"
SETTINGS = "Msvm_VirtualSystemMigrationServiceSettingData"
EDITABLE = ("EnableVirtualSystemMigration", "MaximumActiveVirtualSystemMigration",
            "MaximumActiveStorageMigration", "AuthenticationType", "EnableCompression")


async def _settings(emulator: EmulatorCim) -> CimInstance:
    (found,) = await emulator.query(wql.select(SETTINGS))
    return found


async def _modify(emulator: EmulatorCim, settings: CimInstance) -> int:
    result = await emulator.invoke(await service(emulator, MIGRATION), "ModifyServiceSettings",
                                   {"ServiceSettingData": settings})
    if result.return_value == 4096:
        await ok(emulator, result)
        return 0
    return result.return_value


async def test_migration_is_disabled_and_enabled_again(emulator: EmulatorCim) -> None:
    before = await _settings(emulator)
    assert before["EnableVirtualSystemMigration"] is True
    assert await _modify(emulator, before.updated(EnableVirtualSystemMigration=False,
                                                  AuthenticationType=1)) == 0
    after = await _settings(emulator)
    assert (after["EnableVirtualSystemMigration"], after["AuthenticationType"]) == (False, 1)
    assert after["MaximumActiveVirtualSystemMigration"] == \
        before["MaximumActiveVirtualSystemMigration"]
    assert await _modify(emulator, after.updated(EnableVirtualSystemMigration=True)) == 0
    assert (await _settings(emulator))["EnableVirtualSystemMigration"] is True


async def test_settings_hyper_v_would_not_take_are_refused(emulator: EmulatorCim) -> None:
    before = await _settings(emulator)
    assert await _modify(emulator, before.updated(AuthenticationType=7)) == 32773
    other = await emulator.spawn("Msvm_VirtualSystemMigrationSettingData")
    assert await _modify(emulator, other) == 32773
    after = await _settings(emulator)
    assert [after[name] for name in EDITABLE] == [before[name] for name in EDITABLE]
