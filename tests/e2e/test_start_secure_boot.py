"""StartCommand over real HTTPS: the secure boot template of a generation 2 VM follows
its guest OS (MicrosoftWindows for Windows, the Microsoft UEFI CA for anything else)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from tests.cloudstack.fixtures import sample_json
from tests.e2e.conftest import Running

START = "com.cloud.agent.api.StartCommand"
START_ANSWER = "com.cloud.agent.api.StartAnswer"
VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
STORE_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
VSSD = "Msvm_VirtualSystemSettingData"
REALIZED = "Microsoft:Hyper-V:System:Realized"
GEN2 = "Microsoft:Hyper-V:SubType:2"
WINDOWS = "MicrosoftWindows"
UEFI_CA = "MicrosoftUEFICertificateAuthority"


def _body(running: Running, name: str, guest_os: str | None, *, boot_mode: str = "SECURE",
          ) -> dict[str, Any]:
    """Sample 0005 as a UEFI VM with ``guest_os``; its ROOT volume a real VHDX in C:\\pool."""
    body: dict[str, Any] = copy.deepcopy(sample_json("0005_StartCommand.json"))
    vm = body["vm"]
    vm.update(name=name, cpus=2, bootType="UEFI", bootMode=boot_mode, os=guest_os)
    vm["disks"] = vm["disks"][:1]
    root = vm["disks"][0]["data"][VOLUME_TO]
    root["dataStore"][STORE_TO]["path"] = "C:\\pool"
    root["uuid"] = f"root-{name}"
    folder = running.agent.config.agent.state_dir / "emulator" / "drives" / "C" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    vhd.create(Path(folder / f"root-{name}.vhdx"), vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC,
               1 << 26)
    return body


async def _template_ids(cim: EmulatorCim) -> dict[str, str]:
    """The host's template VSSDs, read raw: ElementName -> SecureBootTemplateId."""
    found = await cim.query(wql.select(VSSD, wql.any_of("ElementName", [WINDOWS, UEFI_CA])))
    return {str(t["ElementName"]): str(t["SecureBootTemplateId"]) for t in found
            if t["VirtualSystemType"] != REALIZED}


async def _vm_settings(cim: EmulatorCim, name: str) -> CimInstance | None:
    found = await cim.query(wql.select(VSSD, wql.eq("ElementName", name)
                                       & wql.eq("VirtualSystemType", REALIZED)))
    assert len(found) <= 1
    return found[0] if found else None


async def _start(running: Running, body: dict[str, Any]) -> CimInstance:
    key, answer = await running.answer(START, body)
    assert (key, answer["result"]) == (START_ANSWER, True), answer
    vssd = await _vm_settings(running.emulator, body["vm"]["name"])
    assert vssd is not None
    return vssd


def _drop_template(cim: EmulatorCim, name: str) -> None:
    """Remove the template ``name`` from the emulated host, as if it never shipped it."""
    txn = cim.host.store.transaction()
    for record in list(cim.host.records(VSSD, txn)):
        if record["ElementName"] == name:
            txn.delete(record.path)
    txn.commit()


@pytest.mark.parametrize(("guest_os", "template"), [
    ("CentOS 7 (64-bit)", UEFI_CA),
    ("Ubuntu 22.04 LTS", UEFI_CA),
    (None, UEFI_CA),
    ("Windows Server 2019 (64-bit)", WINDOWS),
    ("MICROSOFT WINDOWS 10 (64-BIT)", WINDOWS),
])
async def test_start_picks_template_by_guest_os_when_vm_boots_uefi_securely(
    running: Running, guest_os: str | None, template: str,
) -> None:
    ids = await _template_ids(running.emulator)
    assert ids[WINDOWS] != ids[UEFI_CA]
    vssd = await _start(running, _body(running, "i-2-40-VM", guest_os))
    assert (vssd["VirtualSystemSubType"], vssd["SecureBootEnabled"],
            vssd["SecureBootTemplateId"]) == (GEN2, True, ids[template])


async def test_start_needs_no_template_when_boot_mode_is_not_secure(running: Running) -> None:
    _drop_template(running.emulator, WINDOWS)
    _drop_template(running.emulator, UEFI_CA)
    vssd = await _start(running, _body(running, "i-2-41-VM", "CentOS 7 (64-bit)",
                                       boot_mode="LEGACY"))
    assert (vssd["VirtualSystemSubType"], vssd["SecureBootEnabled"]) == (GEN2, False)


async def test_start_looks_templates_up_once_when_several_secure_vms_start(
    running: Running,
) -> None:
    cim = running.emulator
    await _start(running, _body(running, "i-2-43-VM", "Debian GNU/Linux 12 (64-bit)"))
    before = cim.round_trips()
    await _start(running, _body(running, "i-2-44-VM", "Windows Server 2022 (64-bit)"))
    windows = cim.round_trips() - before
    before = cim.round_trips()
    await _start(running, _body(running, "i-2-45-VM", "CentOS 7 (64-bit)", boot_mode="LEGACY"))
    plain = cim.round_trips() - before
    assert windows["query"] == plain["query"]  # the template lookup cost nothing
    assert windows["invoke:DefineSystem"] == plain["invoke:DefineSystem"] == 1


@pytest.mark.parametrize(("guest_os", "missing"), [
    ("CentOS 7 (64-bit)", UEFI_CA), ("Windows Server 2019 (64-bit)", WINDOWS),
])
async def test_start_creates_nothing_when_host_lacks_the_template(
    running: Running, guest_os: str, missing: str,
) -> None:
    cim = running.emulator
    _drop_template(cim, missing)
    before = cim.round_trips()
    key, answer = await running.answer(START, _body(running, "i-2-46-VM", guest_os))
    spent = cim.round_trips() - before
    assert (key, answer["result"]) == (START_ANSWER, False), answer
    assert f"no secure boot template '{missing}'" in answer["details"]
    assert guest_os in answer["details"]
    assert spent["invoke:DefineSystem"] == 0
    assert await _vm_settings(cim, "i-2-46-VM") is None
    vms = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("Caption",
                                                                   "Virtual Machine")))
    assert vms == []


@pytest.mark.parametrize(("mode", "secure", "template"), [
    ("SECURE", True, UEFI_CA), ("LEGACY", False, None),
])
async def test_start_boots_uefi_from_the_vm_detail_when_boot_type_is_not_sent(
    running: Running, mode: str, secure: bool, template: str | None,
) -> None:
    # A start not made through the API (after restoreVirtualMachine, say) sends no bootType
    # or bootMode: the VM's UEFI setting is only its "UEFI" detail.
    ids = await _template_ids(running.emulator)
    body = _body(running, "i-2-47-VM", "Ubuntu 22.04 LTS")
    for field in ("bootType", "bootMode"):
        del body["vm"][field]
    body["vm"]["details"] = {"UEFI": mode, "Message.ReservedCapacityFreed.Flag": "false"}
    vssd = await _start(running, body)
    assert (vssd["VirtualSystemSubType"], vssd["SecureBootEnabled"]) == (GEN2, secure)
    if template is not None:
        assert vssd["SecureBootTemplateId"] == ids[template]


async def test_start_keeps_bios_when_boot_type_says_so_despite_a_uefi_detail(
    running: Running,
) -> None:
    body = _body(running, "i-2-48-VM", "Ubuntu 22.04 LTS")
    body["vm"].update(bootType="BIOS", bootMode="LEGACY", details={"UEFI": "SECURE"})
    vssd = await _start(running, body)
    assert vssd["VirtualSystemSubType"] == "Microsoft:Hyper-V:SubType:1"
