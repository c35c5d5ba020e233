"""The emulator's secure boot templates: template VSSDs on 2016+ hosts, never VMs, and the
SecureBootTemplateId checks of DefineSystem and ModifySystemSettings."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from tests.emulator.kit import (
    GEN1,
    GEN2,
    define_vm,
    service,
    system_settings,
    try_define,
    try_modify,
)

VSSD = "Msvm_VirtualSystemSettingData"
REALIZED = "Microsoft:Hyper-V:System:Realized"
NAMES = ("MicrosoftWindows", "MicrosoftUEFICertificateAuthority", "OpenSourceShieldedVM")
WINDOWS_ID = "1734c6e8-3154-4dda-ba5f-a874cc483422"  # as Hyper-V ships it
UEFI_CA_ID = "272e7447-90a4-4563-a4b9-8e4ab00526ce"
INVALID_PARAMETER = 32773
ACCESS_DENIED = 32769


async def _templates(cim: EmulatorCim) -> dict[str, CimInstance]:
    found = await cim.query(wql.select(VSSD, wql.any_of("ElementName", list(NAMES))))
    return {str(t["ElementName"]): t for t in found}


@pytest.fixture
async def old_host(make_config: Callable[..., EmulatorConfig]) -> AsyncIterator[EmulatorCim]:
    """A Windows Server 2012 R2 host: secure boot, but no templates."""
    cim = EmulatorCim.open(make_config(os_version="6.3.9600"))
    yield cim
    await cim.close()


# --- the templates ------------------------------------------------------------------------


async def test_host_has_three_templates_with_shipped_ids_when_it_runs_2016_or_later(
    emulator: EmulatorCim,
) -> None:
    templates = await _templates(emulator)
    assert set(templates) == set(NAMES)
    ids = {name: str(t["SecureBootTemplateId"]) for name, t in templates.items()}
    assert (ids["MicrosoftWindows"], ids["MicrosoftUEFICertificateAuthority"]) == (
        WINDOWS_ID, UEFI_CA_ID)
    assert len({uuid.UUID(i) for i in ids.values()}) == 3
    assert all(t["VirtualSystemType"] != REALIZED for t in templates.values())


async def test_host_has_no_templates_when_it_runs_2012_r2(old_host: EmulatorCim) -> None:
    assert await _templates(old_host) == {}


async def test_templates_are_no_vms_when_vms_are_listed_or_summarised(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator, "real")
    vms = await emulator.query(wql.select("Msvm_ComputerSystem",
                                          wql.eq("Caption", "Virtual Machine")))
    assert [v["ElementName"] for v in vms] == ["real"]
    realized = await emulator.query(wql.select(VSSD, wql.eq("VirtualSystemType", REALIZED)))
    assert [v["ElementName"] for v in realized] == ["real"]
    summary = await emulator.invoke(await service(emulator), "GetSummaryInformation",
                                    {"SettingData": None, "RequestedInformation": [0, 1]})
    assert [(s["ElementName"], s["Name"]) for s in summary.instances("SummaryInformation")] \
        == [("real", vm.key("Name"))]
    for template in (await _templates(emulator)).values():
        assert template.path is not None
        assert await emulator.associators(template.path) == []


# --- SecureBootTemplateId checks -------------------------------------------------------


async def test_new_generation_2_vm_gets_windows_template_when_none_is_asked(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator, "gen2", GEN2)
    assert uuid.UUID(str((await system_settings(emulator, vm))["SecureBootTemplateId"])) == \
        uuid.UUID(WINDOWS_ID)
    gen1 = await define_vm(emulator, "gen1", GEN1)
    assert (await system_settings(emulator, gen1))["SecureBootTemplateId"] is None


async def test_define_system_keeps_template_when_id_names_one(emulator: EmulatorCim) -> None:
    code, vm = await try_define(emulator, "linux", GEN2, SecureBootEnabled=True,
                             SecureBootTemplateId="{" + UEFI_CA_ID.upper() + "}")
    assert code == 0 and vm is not None
    vssd = await system_settings(emulator, vm)
    assert (vssd["SecureBootEnabled"], vssd["SecureBootTemplateId"]) == (True, UEFI_CA_ID)


@pytest.mark.parametrize("template_id", [str(uuid.UUID(int=7)), "not-a-guid"])
async def test_define_system_creates_nothing_when_template_id_names_no_template(
    emulator: EmulatorCim, template_id: str,
) -> None:
    code, vm = await try_define(emulator, "stray", GEN2, SecureBootEnabled=True,
                             SecureBootTemplateId=template_id)
    assert (code, vm) == (INVALID_PARAMETER, None)
    assert await emulator.query(wql.select(VSSD, wql.eq("ElementName", "stray"))) == []


async def test_define_system_refuses_any_template_id_when_host_has_no_templates(
    old_host: EmulatorCim,
) -> None:
    code, _ = await try_define(old_host, "linux", GEN2, SecureBootEnabled=True,
                            SecureBootTemplateId=UEFI_CA_ID)
    assert code == INVALID_PARAMETER
    code, vm = await try_define(old_host, "plain", GEN2, SecureBootEnabled=True)
    assert code == 0 and vm is not None
    assert (await system_settings(old_host, vm))["SecureBootTemplateId"] is None


async def test_modify_system_settings_switches_template_when_id_names_one(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator, "switch", GEN2)
    assert await try_modify(emulator, await system_settings(emulator, vm),
                         SecureBootTemplateId=UEFI_CA_ID) == 0
    assert (await system_settings(emulator, vm))["SecureBootTemplateId"] == UEFI_CA_ID


async def test_modify_system_settings_changes_nothing_when_template_id_is_unknown(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator, "keep", GEN2)
    before = await system_settings(emulator, vm)
    code = await try_modify(emulator, before, SecureBootTemplateId=str(uuid.UUID(int=9)),
                         ElementName="renamed")
    assert code == INVALID_PARAMETER
    after = await system_settings(emulator, vm)
    assert (after["SecureBootTemplateId"], after["ElementName"]) == (
        before["SecureBootTemplateId"], "keep")


async def test_modify_system_settings_refuses_to_change_a_template(
    emulator: EmulatorCim,
) -> None:
    template = (await _templates(emulator))["MicrosoftWindows"]
    assert await try_modify(emulator, template, ElementName="Mine") == ACCESS_DENIED
    assert set(await _templates(emulator)) == set(NAMES)
