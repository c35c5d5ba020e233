"""A VM's SMBIOS identity in the emulator (BIOSGUID, the serial numbers, the asset tag):
made at DefineSystem as Hyper-V makes it, taken when given, refused when malformed, and
changed only while the VM is off."""

from __future__ import annotations

import re

import pytest

from hyperv_agent.emulator.backend import EmulatorCim
from tests.emulator.kit import (
    GEN1,
    define_vm,
    ok,
    request_state,
    system_settings,
    try_define,
    try_modify,
    vm_names,
)

INVALID_PARAMETER = 32773
INVALID_STATE = 32775
GUID = "a68c5325-84be-4f8b-ace1-0b33ee004759"
BRACED = "{A68C5325-84BE-4F8B-ACE1-0B33EE004759}"
SERIAL = re.compile(r"\d{4}-\d{4}-\d{4}-\d{4}-\d{4}-\d{4}-\d{2}")



async def test_define_system_makes_a_braced_bios_guid_and_serial_numbers_when_none_is_given(
    emulator: EmulatorCim,
) -> None:
    first = await system_settings(emulator, await define_vm(emulator, "vm1"))
    second = await system_settings(emulator, await define_vm(emulator, "vm2"))
    for vssd in (first, second):
        assert re.fullmatch(r"\{[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}\}",
                            str(vssd["BIOSGUID"])), vssd["BIOSGUID"]
        assert SERIAL.fullmatch(str(vssd["BIOSSerialNumber"]))
        assert vssd["BaseBoardSerialNumber"] == vssd["ChassisSerialNumber"] == \
            vssd["BIOSSerialNumber"]
        assert SERIAL.fullmatch(str(vssd["ChassisAssetTag"]))
        assert vssd["ChassisAssetTag"] != vssd["BIOSSerialNumber"]
    assert first["BIOSGUID"] != second["BIOSGUID"]
    assert first["BIOSSerialNumber"] != second["BIOSSerialNumber"]


@pytest.mark.parametrize("given", [GUID, GUID.upper(), f"{{{GUID}}}", BRACED])
async def test_define_system_keeps_the_bios_guid_given_in_braces_and_upper_case(
    emulator: EmulatorCim, given: str,
) -> None:
    code, vm = await try_define(emulator, "vm1", GEN1, BIOSGUID=given, BIOSSerialNumber="CS-1")
    assert code == 0 and vm is not None
    vssd = await system_settings(emulator, vm)
    assert (vssd["BIOSGUID"], vssd["BIOSSerialNumber"]) == (BRACED, "CS-1")


@pytest.mark.parametrize("values", [
    {"BIOSGUID": ""},
    {"BIOSGUID": "not-a-guid"},
    {"BIOSGUID": GUID.replace("-", "")},
    {"BIOSGUID": f"{{{GUID}"},
    {"BIOSGUID": f"{GUID}0"},
    {"BIOSSerialNumber": ""},
    {"BIOSSerialNumber": "1" * 33},
    {"ChassisAssetTag": GUID},
])
async def test_define_system_creates_nothing_when_smbios_identity_is_malformed(
    emulator: EmulatorCim, values: dict[str, object],
) -> None:
    code, vm = await try_define(emulator, "vm1", GEN1, **values)
    assert (code, vm) == (INVALID_PARAMETER, None)
    assert await vm_names(emulator) == set()


async def test_modify_system_settings_changes_the_bios_guid_when_the_vm_is_off(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator)
    assert await try_modify(emulator, await system_settings(emulator, vm), BIOSGUID=GUID) == 0
    assert (await system_settings(emulator, vm))["BIOSGUID"] == BRACED


@pytest.mark.parametrize("requested", [2, 6], ids=["running", "saved"])
@pytest.mark.parametrize("name", ["BIOSGUID", "BIOSSerialNumber", "ChassisAssetTag"])
async def test_modify_system_settings_refuses_an_smbios_change_when_the_vm_is_not_off(
    emulator: EmulatorCim, requested: int, name: str,
) -> None:
    vm = await define_vm(emulator)
    await ok(emulator, await request_state(emulator, vm, 2))
    if requested != 2:
        await ok(emulator, await request_state(emulator, vm, requested))
    before = await system_settings(emulator, vm)
    new = {"BIOSGUID": GUID}.get(name, "CS-2")
    assert await try_modify(emulator, before, **{name: new}) == INVALID_STATE
    assert (await system_settings(emulator, vm))[name] == before[name]


async def test_modify_system_settings_renames_a_running_vm_when_its_identity_is_sent_unchanged(
    emulator: EmulatorCim,
) -> None:
    vm = await define_vm(emulator)
    await ok(emulator, await request_state(emulator, vm, 2))
    before = await system_settings(emulator, vm)
    # the whole VSSD as read, the BIOSGUID in another spelling of the same GUID
    same = str(before["BIOSGUID"]).strip("{}").lower()
    assert await try_modify(emulator, before, ElementName="renamed", BIOSGUID=same) == 0
    after = await system_settings(emulator, vm)
    assert (after["ElementName"], after["BIOSGUID"]) == ("renamed", before["BIOSGUID"])
