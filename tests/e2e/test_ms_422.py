"""A CloudStack 4.22 management server's own bodies (``samples/ms-4.22``) over real HTTPS,
on an emulated host whose shares ``\\\\10.1.1.1\\primary`` and ``\\\\10.1.1.1\\secondary`` are
local folders and whose vSwitch is the sample's ``vSwitch0``."""

from __future__ import annotations

import bz2
import copy
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.cloudstack import names
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from tests.cloudstack.fixtures import json_contains, ms422_json
from tests.e2e.conftest import PRIVATE_IP, Running, samples_host_config, serving
from tests.emulator.kit import devices

LOCAL_POOL = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"
SMB_POOL_UUID = "9a3f1c2e-5b7d-3e8f-a1b2-c3d4e5f60718"
SMB_ROOT = "\\\\10.1.1.1\\primary"
TEMPLATE_TO, PRIMARY_TO = names.TEMPLATE_OBJECT_TO, names.PRIMARY_DATA_STORE_TO
VOLUME_TO = names.VOLUME_OBJECT_TO
DVD = "Microsoft:Hyper-V:Synthetic DVD Drive"
MIB = 1 << 20


@pytest.fixture
async def ms(tmp_path: Path) -> AsyncIterator[Running]:
    async with serving(samples_host_config(tmp_path)) as running:
        yield running


def _local(running: Running, windows_path: str) -> Path:
    path: Path = running.emulator.host.paths.local(windows_path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _disk(path: Path, size: int = 64 * MIB) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    vhd.create(path, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, size)
    return path


async def _vm(cim: EmulatorCim, name: str) -> tuple[ObjectPath, int]:
    (vm,) = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", name)))
    assert vm.path is not None
    return vm.path, int(str(vm["EnabledState"]))


async def _dvd_media(cim: EmulatorCim, vm: ObjectPath) -> list[list[str]]:
    """The medium (HostResource) of each DVD drive of the VM; [] for an empty drive."""
    drives = [d for d in await devices(cim, vm, "Msvm_ResourceAllocationSettingData")
              if d["ResourceSubType"] == DVD]
    media = await devices(cim, vm, "Msvm_StorageAllocationSettingData")
    return [[f for m in media if ObjectPath.parse(str(m["Parent"])) == d.path
             for f in m.strings("HostResource")] for d in drives]


# --- 1, 10: the path-less ISO disk and what StartAnswer echoes ----------------------------


async def test_user_vm_starts_with_an_empty_dvd_drive_when_its_iso_disk_has_no_path(
    ms: Running,
) -> None:
    body = ms422_json("15_StartCommand.json")
    _disk(_local(ms, LOCAL_POOL) / "03164c49-b0a9-4db9-baf2-20e389d54e6a.vhdx")
    key, answer = await ms.answer(names.START_COMMAND, body)
    assert (key, answer["result"]) == (names.START_ANSWER, True), answer
    vm, enabled = await _vm(ms.emulator, "i-2-5-VM")
    assert enabled == 2  # running
    assert await _dvd_media(ms.emulator, vm) == [[]]  # one DVD drive, empty
    wanted = copy.deepcopy(body["vm"])
    assert wanted.pop("vncPassword") and "vncPassword" not in answer["vm"]
    assert json_contains(answer["vm"], wanted)  # NICs and disks as the MS reads them back


async def test_network_adapter_is_named_after_the_nic_not_its_network(ms: Running) -> None:
    body = ms422_json("15_StartCommand.json")
    (nic,) = body["vm"]["nics"]
    assert nic["nicUuid"] != nic["uuid"]  # the NIC's own uuid, and its network's
    _disk(_local(ms, LOCAL_POOL) / "03164c49-b0a9-4db9-baf2-20e389d54e6a.vhdx")
    _, answer = await ms.answer(names.START_COMMAND, body)
    assert answer["result"] is True, answer
    vm, _ = await _vm(ms.emulator, "i-2-5-VM")
    (adapter,) = await devices(ms.emulator, vm, "Msvm_SyntheticEthernetPortSettingData")
    assert adapter["ElementName"] == nic["nicUuid"]


async def test_start_answer_replaces_boot_argument_secrets_when_a_system_vm_starts(
    ms: Running,
) -> None:
    body = ms422_json("15_StartCommand.json")
    body["vm"] |= {"name": "r-6-VM", "type": "DomainRouter",
                   "bootArgs": " template=domP name=r-6-VM vmpassword=Pa55 "
                               "keystore_password=K3y authorized_key=c3NoLXJzYQ"}
    _disk(_local(ms, LOCAL_POOL) / "03164c49-b0a9-4db9-baf2-20e389d54e6a.vhdx")
    _, answer = await ms.answer(names.START_COMMAND, body)
    assert answer["result"] is True, answer
    assert answer["vm"]["bootArgs"] == (" template=domP name=r-6-VM vmpassword=***** "
                                        "keystore_password=***** authorized_key=c3NoLXJzYQ")


async def test_start_answer_carries_no_guest_password_from_vm_data_or_details(
    ms: Running,
) -> None:
    """A VM on a network whose provider sets passwords: the MS puts the guest's password in
    ``vm.vmData`` (``["password", "vm_password", <clear text>]``) and, encrypted, in
    ``vm.details["password"]``; it never reads them back from the StartAnswer, but logs that
    answer (its cleaner misses the vmData array)."""
    body = ms422_json("15_StartCommand.json")
    body["vm"]["vmData"] = [["userdata", "user_data", "I2Nsb3VkLWNvbmZpZw=="],
                            ["password", "vm_password", "Gu3stPw-7731"]]
    body["vm"]["details"] |= {"password": "EncGu3stPw-7731", "Encrypted.Password": "RSAblob"}
    _disk(_local(ms, LOCAL_POOL) / "03164c49-b0a9-4db9-baf2-20e389d54e6a.vhdx")
    status, reply = await ms.post(names.START_COMMAND, body)
    assert status == 200
    answer = reply[0][names.START_ANSWER]
    assert answer["result"] is True, answer
    text = json.dumps(reply)
    assert "Gu3stPw-7731" not in text and "RSAblob" not in text
    assert "vmData" not in answer["vm"] and "I2Nsb3VkLWNvbmZpZw" not in text
    assert answer["vm"]["details"] == {"Message.ReservedCapacityFreed.Flag": "false"}


async def test_attach_and_dettach_of_a_path_less_iso_empty_the_dvd_drive(ms: Running) -> None:
    body = ms422_json("15_StartCommand.json")
    _disk(_local(ms, LOCAL_POOL) / "03164c49-b0a9-4db9-baf2-20e389d54e6a.vhdx")
    iso = _local(ms, "C:\\isos") / "tools.iso"
    iso.write_bytes(b"CD001" * 100)
    _, registered = await ms.answer(names.MODIFY_STORAGE_POOL_COMMAND, {"add": True, "pool": {
        "uuid": "c6a3e1f0-0d6e-4b8e-9a43-1f1d2e3c4b5a", "host": "127.0.0.1",
        "path": "C:\\isos", "type": "Filesystem"}, "localPath": "C:\\isos"})
    assert registered["result"] is True, registered
    await ms.answer(names.START_COMMAND, body)
    vm, _ = await _vm(ms.emulator, "i-2-5-VM")
    empty_iso = body["vm"]["disks"][1]
    full_iso = {"type": "ISO", "diskSeq": 3, "data": {TEMPLATE_TO: {
        "path": "C:\\isos\\tools.iso", "format": "ISO", "imageDataStore": {PRIMARY_TO: {
            "poolType": "Filesystem", "path": "C:\\isos", "host": "127.0.0.1"}}}}}
    for fqcn, disk, media in ((names.ATTACH_COMMAND, full_iso, [["C:\\isos\\tools.iso"]]),
                              (names.DETTACH_COMMAND, empty_iso, [[]]),
                              (names.ATTACH_COMMAND, full_iso, [["C:\\isos\\tools.iso"]]),
                              (names.ATTACH_COMMAND, empty_iso, [[]]),
                              (names.DETTACH_COMMAND, empty_iso, [[]])):
        _, answer = await ms.answer(fqcn, {"vmName": "i-2-5-VM", "disk": disk})
        assert answer["result"] is True, answer
        assert await _dvd_media(ms.emulator, vm) == media, (fqcn, disk)
    assert iso.read_bytes() == b"CD001" * 100


# --- 3, 6, 8: SMB primary pools -------------------------------------------------------------


async def _register(ms: Running) -> dict[str, Any]:
    key, answer = await ms.answer(names.MODIFY_STORAGE_POOL_COMMAND,
                                  ms422_json("10_ModifyStoragePoolCommand.json"))
    assert (key, answer["result"]) == (names.MODIFY_STORAGE_POOL_ANSWER, True), answer
    return answer


async def test_smb_pool_is_the_share_not_the_mount_point_when_the_ms_registers_it(
    ms: Running, tmp_path: Path
) -> None:
    answer = await _register(ms)
    info = answer["poolInfo"]
    assert (info["localPath"], info["hostPath"], info["poolType"]) == (
        SMB_ROOT, "/primary", "SMB")
    assert 0 < info["availableBytes"] <= info["capacityBytes"]
    assert "Passw0rd" not in json.dumps(answer)
    stats_body = {"id": SMB_POOL_UUID, "pooltype": "SMB",
                  "localPath": "/primary?user=administrator&password=Passw0rd&domain=WORKGROUP"}
    key, stats = await ms.answer(names.GET_STORAGE_STATS_COMMAND, stats_body)
    assert (key, stats["result"]) == (names.GET_STORAGE_STATS_ANSWER, True), stats
    assert stats["capacityBytes"] == info["capacityBytes"] > 0
    await ms.agent.host.write_heartbeats()
    assert (tmp_path / "primary" / f"hb-{PRIVATE_IP}").is_file()
    registry = (ms.agent.config.agent.state_dir / "pools.json").read_text()
    assert "Passw0rd" not in registry and SMB_POOL_UUID in registry


async def test_template_is_evicted_from_an_smb_pool_when_the_ms_destroys_it(
    ms: Running, tmp_path: Path
) -> None:
    await _register(ms)
    template = _disk(tmp_path / "primary" / "5c4a0e1a-0b1e-4f57-9a55-7f3d9e3c2a01.vhdx")
    destroy = {"volume": {"id": 9, "storagePoolType": "SMB", "storagePoolUuid": SMB_POOL_UUID,
                          "mountPoint": "/primary?user=administrator&password=Passw0rd"
                                        "&domain=WORKGROUP",
                          "path": "5c4a0e1a-0b1e-4f57-9a55-7f3d9e3c2a01",
                          "size": 1073741824, "deviceId": 0}, "contextMap": {}, "wait": 0}
    for _ in range(2):  # the second time the file is gone: still a success
        key, answer = await ms.answer(names.DESTROY_COMMAND, destroy)
        assert (key, answer["result"]) == (names.ANSWER, True), answer
        assert not template.exists()
    assert "Passw0rd" not in answer.get("details", "")


async def test_delete_storage_pool_forgets_the_pool_when_the_ms_removes_it(
    ms: Running, tmp_path: Path
) -> None:
    await _register(ms)
    delete = {"_pool": ms422_json("10_ModifyStoragePoolCommand.json")["pool"],
              "_localPath": "/mnt//5d719485-f8b3-3fc2-b05a-8f63a912e709",
              "_removeDatastore": False, "contextMap": {}, "wait": 0}
    key, answer = await ms.answer(names.DELETE_STORAGE_POOL_COMMAND, delete)
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert "forgotten" in answer["details"]
    _, stats = await ms.answer(names.GET_STORAGE_STATS_COMMAND,
                               {"id": SMB_POOL_UUID, "pooltype": "SMB"})
    assert stats["result"] is False and "not registered" in stats["details"]
    assert json.loads((ms.agent.config.agent.state_dir / "pools.json").read_text()) == {}
    beat = tmp_path / "primary" / f"hb-{PRIVATE_IP}"  # stamped when the pool was registered
    beat.write_text("2024-5-7@3:4:9")
    await ms.agent.host.write_heartbeats()
    assert beat.read_text() == "2024-5-7@3:4:9"  # a forgotten pool is stamped no more
    assert (tmp_path / "primary").is_dir()  # the pool's files are kept


async def test_root_volume_on_an_smb_pool_is_found_when_the_ms_starts_the_vm(
    ms: Running, tmp_path: Path
) -> None:
    await ms.answer(names.MODIFY_STORAGE_POOL_COMMAND,
                    ms422_json("31_ModifyStoragePoolCommand_SMB.json"))
    _disk(tmp_path / "primary" / "8c93b28e-9a5e-4e24-988b-fdee9591ab94.vhdx")
    key, answer = await ms.answer(names.START_COMMAND,
                                  ms422_json("30_StartCommand_root_on_SMB_pool.json"))
    assert (key, answer["result"]) == (names.START_ANSWER, True), answer
    assert "Passw0rd" not in json.dumps(answer)
    _, enabled = await _vm(ms.emulator, "i-2-7-VM")
    assert enabled == 2


async def test_start_answer_hides_all_of_an_smb_password_holding_punctuation(
    ms: Running, tmp_path: Path
) -> None:
    """The MS writes the pool's password into its path as typed, not percent-encoded: a
    password with ',', ';' or "'" (which Windows password rules invite) is echoed in the
    StartAnswer's disk with nothing of it left."""
    password = "Pa;ss,w0'rd"
    def typed(name: str) -> Any:
        return json.loads(json.dumps(ms422_json(name)).replace("Passw0rd", password))
    _, registered = await ms.answer(names.MODIFY_STORAGE_POOL_COMMAND,
                                    typed("31_ModifyStoragePoolCommand_SMB.json"))
    assert registered["result"] is True, registered
    _disk(tmp_path / "primary" / "8c93b28e-9a5e-4e24-988b-fdee9591ab94.vhdx")
    key, answer = await ms.answer(names.START_COMMAND,
                                  typed("30_StartCommand_root_on_SMB_pool.json"))
    assert (key, answer["result"]) == (names.START_ANSWER, True), answer
    store = answer["vm"]["disks"][0]["data"][VOLUME_TO]["dataStore"][PRIMARY_TO]
    assert store["path"] == "/primary?user=administrator&password=*****&domain=WORKGROUP"
    assert store["url"].startswith("SMB://10.1.1.1/primary?user=administrator&password=*****"
                                   "&domain=WORKGROUP/?ROLE=Primary")
    assert not any(part in json.dumps(answer) for part in ("Pa;", "ss,", "w0'rd"))


# --- 2: template checksums ------------------------------------------------------------------


def _template_copy(path: str, orig_url: str, checksum: str) -> dict[str, Any]:
    body: dict[str, Any] = ms422_json("12_CopyCommand.json")
    src = body["srcTO"][TEMPLATE_TO]
    src |= {"path": path, "origUrl": orig_url, "checksum": checksum}
    body["destTO"][TEMPLATE_TO]["origUrl"] = orig_url
    return body


async def test_cifs_template_copies_when_its_checksum_is_that_of_the_bz2_download(
    ms: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _disk(tmp_path / "secondary" / "template" / "tmpl" / "2" / "201" / "tiny.vhdx")
    downloaded = bz2.compress(source.read_bytes())  # what download.example.org served
    body = _template_copy("template/tmpl/2/201/tiny.vhdx",
                          "http://download.example.org/templates/hyperv/tiny.vhdx.bz2",
                          "{MD5}" + hashlib.md5(downloaded).hexdigest())
    caplog.set_level(logging.INFO, logger="hyperv_agent")
    pool = _local(ms, LOCAL_POOL)
    key, answer = await ms.answer(names.COPY_COMMAND, body)
    assert (key, answer["result"]) == (names.COPY_CMD_ANSWER, True), answer
    path = answer["newData"][TEMPLATE_TO]["path"]
    assert (pool / f"{path}.vhdx").read_bytes() == source.read_bytes()
    assert sum("checksum not applicable" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("right", [True, False])
async def test_checksum_is_verified_when_the_file_read_is_the_one_downloaded(
    ms: Running, tmp_path: Path, right: bool
) -> None:
    raw = _disk(tmp_path / "raw.vhdx").read_bytes()
    packed = bz2.compress(raw)
    folder = tmp_path / "secondary" / "template" / "tmpl" / "2" / "201"
    folder.mkdir(parents=True)
    (folder / "tiny.vhdx.bz2").write_bytes(packed)
    digest = hashlib.sha512(packed if right else raw).hexdigest()
    body = _template_copy("template/tmpl/2/201/tiny.vhdx.bz2",
                          "http://download.example.org/templates/hyperv/tiny.vhdx.bz2",
                          "{SHA-512}" + digest)
    pool = _local(ms, LOCAL_POOL)
    key, answer = await ms.answer(names.COPY_COMMAND, body)
    assert (key, answer["result"]) == (names.COPY_CMD_ANSWER, right), answer
    if right:
        path = answer["newData"][TEMPLATE_TO]["path"]
        assert (pool / f"{path}.vhdx").read_bytes() == raw
    else:
        assert "checksum mismatch" in answer["details"]
        assert sorted(p.name for p in pool.iterdir()) == []  # nothing left behind


# --- 5, 11, 12: registration ----------------------------------------------------------------


async def test_registration_reports_hypervisor_version_6_2_when_nothing_is_configured(
    ms: Running,
) -> None:
    status, reply = await ms.post(names.STARTUP_COMMAND, ms422_json("02_StartupCommand.json"))
    assert status == 200
    routing = reply[0][names.STARTUP_ROUTING_COMMAND]
    assert routing["hypervisorVersion"] == routing["hostDetails"]["product_version"] == "6.2"
    details = routing["hostDetails"]
    assert (details["os"], details["os_version"]) == (
        "Microsoft Windows Server 2019 Datacenter", "10.0.17763")
    # Win32_Processor, one instance per socket: 2 sockets of 8 cores at 2400 MHz.
    assert (routing["cpuSockets"], routing["cpus"], routing["speed"]) == (2, 16, 2400)


async def test_registration_reports_the_configured_hypervisor_version_when_set(
    tmp_path: Path,
) -> None:
    async with serving(samples_host_config(tmp_path, 'hypervisor_version = "10.0"')) as running:
        _, reply = await running.post(names.STARTUP_COMMAND,
                                      ms422_json("02_StartupCommand.json"))
    routing = reply[0][names.STARTUP_ROUTING_COMMAND]
    assert routing["hypervisorVersion"] == routing["hostDetails"]["product_version"] == "10.0"


@pytest.mark.parametrize(("os_version", "uefi"), [("10.0.17763", "true"), ("6.3.9600", "true"),
                                                   ("6.2.9200", "false")])
async def test_ready_answer_says_whether_the_host_runs_uefi_guests(
    tmp_path: Path, os_version: str, uefi: str
) -> None:
    config = samples_host_config(tmp_path, emulator_toml=f'os_version = "{os_version}"')
    async with serving(config) as ms:
        key, answer = await ms.answer(names.READY_COMMAND, {"contextMap": {}, "wait": 0})
    assert (key, answer["result"]) == (names.READY_ANSWER, True)
    assert answer["detailsMap"] == {"host.uefi.enable": uefi}


# --- 9: types are checked --------------------------------------------------------------------


async def test_field_of_the_wrong_type_fails_naming_it_and_the_agent_keeps_serving(
    ms: Running,
) -> None:
    stop = ms422_json("24_StopCommand.json") | {"volumesToDisconnect": "all"}
    key, answer = await ms.answer(names.STOP_COMMAND, stop)
    assert (key, answer["result"]) == (names.STOP_ANSWER, False)
    assert "volumesToDisconnect" in answer["details"]
    key, answer = await ms.answer(names.GET_HOST_STATS_COMMAND,
                                  {"hostGuid": "g", "hostName": "h", "hostId": [5]})
    assert (key, answer["result"]) == (names.GET_HOST_STATS_ANSWER, False)
    assert "hostId" in answer["details"]
    _, ready = await ms.answer(names.READY_COMMAND, {})
    assert ready["result"] is True
