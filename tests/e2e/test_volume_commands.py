"""Volume commands over real HTTPS: CreateObject, Delete, ResizeVolume and the legacy
Create, Destroy and PrimaryStorageDownload commands, checked on disk and in the emulator."""

from __future__ import annotations

import bz2
import errno
import gzip
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.files import EmulatedFiles
from hyperv_agent.emulator.instruments import CALL_PRIMITIVES
from hyperv_agent.errors import HostFileError
from hyperv_agent.handlers.vm import VmSettings
from hyperv_agent.hostfs import images
from hyperv_agent.hostfs.room import KEEP_FREE_BYTES
from hyperv_agent.hyperv import build, devices, disks, jobs, vms
from tests.conftest import requires_tool
from tests.diskfiles import listing, qemu_info
from tests.e2e.conftest import Running, config_with_shares, every_backend, serving
from tests.emulator.kit import ok, request_state, service
from tests.hostfs.test_http import FileServer, identity, serve, tls_server_context
from tests.ports import free_port
from tests.sessions import hv

CREATE_OBJECT = "org.apache.cloudstack.storage.command.CreateObjectCommand"
CREATE_OBJECT_ANSWER = "org.apache.cloudstack.storage.command.CreateObjectAnswer"
DELETE = "org.apache.cloudstack.storage.command.DeleteCommand"
MODIFY_POOL = "com.cloud.agent.api.ModifyStoragePoolCommand"
RESIZE = "com.cloud.agent.api.storage.ResizeVolumeCommand"
RESIZE_ANSWER = "com.cloud.agent.api.storage.ResizeVolumeAnswer"
CREATE = "com.cloud.agent.api.storage.CreateCommand"
CREATE_ANSWER = "com.cloud.agent.api.storage.CreateAnswer"
DESTROY = "com.cloud.agent.api.storage.DestroyCommand"
DOWNLOAD = "com.cloud.agent.api.storage.PrimaryStorageDownloadCommand"
DOWNLOAD_ANSWER = "com.cloud.agent.api.storage.PrimaryStorageDownloadAnswer"
STOP = "com.cloud.agent.api.StopCommand"
ANSWER = "com.cloud.agent.api.Answer"
VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
TEMPLATE_TO = "org.apache.cloudstack.storage.to.TemplateObjectTO"
PRIMARY_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
POOL_UUID = "5fe2bad3-d785-394e-9949-89786b8a63d2"
VOLUME_UUID = "19ae8e67-cb2c-4ab4-901e-e0b864272b59"
OTHER_UUID = "5d0c3f6e-8a41-4b7e-9c2d-1e6f7a8b9c0d"
SECONDARY_URL = "cifs://10.1.1.1/secondary?user=administrator&password=1pass%40word1"
MIB = 1 << 20
GIB = 1 << 30


backend_kind = every_backend  # every test here runs on the emulator and over WinRM

# --- fixture and helpers ------------------------------------------------------------------


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Running]:
    """The agent on an emulated host whose \\\\10.1.1.1\\secondary share is a local folder."""
    (tmp_path / "secondary").mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
state_dir = "{tmp_path / 'state'}"
backend = "emulator"
private_ip = "192.168.100.10"
local_storage_path = 'C:\\pool'
[emulator.shares]
'\\\\10.1.1.1\\secondary' = "{tmp_path / 'secondary'}"
""")
    async with serving(load_config(config)) as running:
        yield running


def _pool_with_room(tmp_path: Path, free: int | None = None) -> AgentConfig:
    """The agent on an emulated host with the local pool C:\\pool, on a volume with
    ``free`` bytes free (the lab's figure; the machine's own when None)."""
    config = tmp_path / "agent.toml"
    room = f"[emulator.lab]\nfree_bytes = {{C = {free}}}\n" if free is not None else ""
    config.write_text(f"""
[agent]
state_dir = "{tmp_path / 'state'}"
backend = "emulator"
private_ip = "192.168.100.10"
local_storage_path = 'C:\\pool'
{room}""")
    return load_config(config)


def _pool(running: Running, name: str = "pool") -> Path:
    folder = running.agent.config.agent.state_dir / "emulator" / "drives" / "C" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _store(path: str = "C:\\pool") -> dict[str, Any]:
    return {PRIMARY_TO: {"uuid": POOL_UUID, "id": 201, "host": "10.1.1.1", "type": "Filesystem",
                         "poolType": "Filesystem", "path": path, "port": 0}}


def _volume(size: int = 50 * MIB, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"uuid": VOLUME_UUID, "volumeType": "DATADISK",
                              "dataStore": _store(), "name": "DATA-10", "size": size,
                              "volumeId": 10, "accountId": 3, "id": 10}
    values.update(fields)
    return {VOLUME_TO: values}


def _disk(folder: Path, name: str, size: int = GIB) -> Path:
    path = folder / name
    fmt = vhd.DiskFormat.VHD if name.endswith(".vhd") else vhd.DiskFormat.VHDX
    vhd.create(path, fmt, vhd.DiskType.DYNAMIC, size)
    return path


async def _vm_with(cim: EmulatorCim, name: str, path: str, *, scsi: bool,
                   running: bool) -> vms.VmRef:
    vm = await build.define_vm(hv(cim), build.VmSpec(name=name, notes=(), generation=1, cpus=1,
                                                 memory_mb=512))
    if scsi:
        controller = await devices.add_scsi_controller(hv(cim), vm)
    else:
        controller = (await devices.controllers(hv(cim), vm)).ide[0]
    await devices.attach_disk(hv(cim), vm, controller, 0, path)
    if running:
        await ok(cim, await request_state(cim, vm.path, 2))
    return vm


# --- CreateObjectCommand ------------------------------------------------------------------


@requires_tool("qemu-img")
async def test_create_object_makes_dynamic_vhdx_named_by_uuid_when_volume_is_new(
    agent: Running,
) -> None:
    pool = _pool(agent)
    key, answer = await agent.answer(CREATE_OBJECT, {"data": _volume(), "wait": 0})
    assert (key, answer["result"]) == (CREATE_OBJECT_ANSWER, True), answer
    data = answer["data"][VOLUME_TO]
    assert (data["path"], data["size"], data["format"], data["uuid"]) == (
        VOLUME_UUID, 50 * MIB, "VHDX", VOLUME_UUID)
    info = qemu_info(pool / f"{VOLUME_UUID}.vhdx")
    assert (info["format"], info["virtual-size"]) == ("vhdx", 50 * MIB)
    assert (pool / f"{VOLUME_UUID}.vhdx").stat().st_size < 8 * MIB
    assert vhd.read_info(pool / f"{VOLUME_UUID}.vhdx").type is vhd.DiskType.DYNAMIC


@pytest.mark.parametrize(("provisioning", "kind"), [
    (None, vhd.DiskType.DYNAMIC), ("THIN", vhd.DiskType.DYNAMIC),
    ("SPARSE", vhd.DiskType.DYNAMIC), ("FAT", vhd.DiskType.FIXED),
])
async def test_create_object_makes_a_fixed_disk_for_a_fat_offering_and_a_dynamic_one_else(
    agent: Running, provisioning: str | None, kind: vhd.DiskType,
) -> None:
    """A FAT disk offering reserves its volumes' space when they are made: a fixed VHDX
    of the volume's size, which no later write can find the pool too full for."""
    pool = _pool(agent)
    body = _volume(provisioningType=provisioning) if provisioning else _volume()
    _, answer = await agent.answer(CREATE_OBJECT, {"data": body, "wait": 0})
    assert answer["result"] is True, answer
    data = answer["data"][VOLUME_TO]
    assert (data["path"], data["size"]) == (VOLUME_UUID, 50 * MIB)
    assert data.get("provisioningType") == provisioning
    info = vhd.read_info(pool / f"{VOLUME_UUID}.vhdx")
    assert (info.format, info.type, info.virtual_size_bytes) == (
        vhd.DiskFormat.VHDX, kind, 50 * MIB)
    if kind is vhd.DiskType.FIXED:
        assert info.file_size_bytes > 50 * MIB


async def test_create_object_for_a_fat_offering_fails_and_keeps_a_dynamic_disk_of_its_name(
    agent: Running,
) -> None:
    pool = _pool(agent)
    await agent.answer(CREATE_OBJECT, {"data": _volume()})
    before = listing(pool)
    key, answer = await agent.answer(CREATE_OBJECT, {"data": _volume(provisioningType="FAT")})
    assert (key, answer["result"]) == (CREATE_OBJECT_ANSWER, False), answer
    assert "already exists as a dynamic disk" in answer["details"], answer["details"]
    assert "not a fixed one" in answer["details"], answer["details"]
    assert listing(pool) == before


async def test_create_object_for_a_fat_offering_is_refused_when_the_pool_cannot_hold_it(
    tmp_path: Path,
) -> None:
    """A fixed disk takes its whole size at once: one that would leave the pool's volume
    less than KEEP_FREE_BYTES free is refused before Hyper-V is asked, naming the room
    there is; a dynamic disk of the same size is still made."""
    free = KEEP_FREE_BYTES + 40 * MIB  # room for 40 MiB
    async with serving(_pool_with_room(tmp_path, free)) as running:
        pool = _pool(running)
        spent = running.emulator.round_trips()
        key, answer = await running.answer(
            CREATE_OBJECT, {"data": _volume(provisioningType="FAT")})
        assert (key, answer["result"]) == (CREATE_OBJECT_ANSWER, False), answer
        details = answer["details"]
        assert "not enough free space for a fixed disk (FAT)" in details, details
        assert f"it takes {50 * MIB} bytes, and only {40 * MIB} may be written" in details
        assert "nothing was made" in details, details
        spent = running.emulator.round_trips() - spent
        assert spent["invoke:CreateVirtualHardDisk"] == 0
        assert listing(pool) == {}
        _, thin = await running.answer(CREATE_OBJECT, {"data": _volume(provisioningType="THIN")})
        assert thin["result"] is True, thin


async def test_a_fixed_disk_is_written_for_as_long_as_the_management_server_waits(
    tmp_path: Path,
) -> None:
    """Hyper-V writes a fixed disk whole, which for a large volume takes longer than the
    agent's bound for jobs that touch only metadata. A CreateObjectCommand comes with
    ``wait`` 0, for which the management server waits its own ``wait`` setting (1800 s):
    the job is waited for that long, not cut off at the metadata bound while Hyper-V still
    writes and the management server still waits."""
    settings = VmSettings(job_wait=jobs.WaitPolicy(timeout_s=0.3, max_poll_s=0.05))
    async with serving(_pool_with_room(tmp_path), vm_settings=settings) as running:
        pool = _pool(running)
        running.emulator.faults.slow_next_job("CreateVirtualHardDisk", 1.0)
        _, answer = await running.answer(
            CREATE_OBJECT, {"data": _volume(provisioningType="FAT"), "wait": 0})
        assert answer["result"] is True, answer
        info = vhd.read_info(pool / f"{VOLUME_UUID}.vhdx")
        assert info.type is vhd.DiskType.FIXED


async def test_create_object_succeeds_unchanged_when_repeated_with_same_size(
    agent: Running,
) -> None:
    pool = _pool(agent)
    await agent.answer(CREATE_OBJECT, {"data": _volume()})
    before = listing(pool)
    _, answer = await agent.answer(CREATE_OBJECT, {"data": _volume()})
    assert answer["result"] is True, answer
    assert answer["data"][VOLUME_TO]["path"] == VOLUME_UUID
    assert listing(pool) == before


async def test_create_object_fails_and_keeps_file_when_name_exists_with_other_size(
    agent: Running,
) -> None:
    pool = _pool(agent)
    await agent.answer(CREATE_OBJECT, {"data": _volume()})
    before = listing(pool)
    key, answer = await agent.answer(CREATE_OBJECT, {"data": _volume(size=80 * MIB)})
    assert (key, answer["result"], answer.get("data")) == (CREATE_OBJECT_ANSWER, False, None)
    assert "already exists" in answer["details"] and str(80 * MIB) in answer["details"]
    assert listing(pool) == before


@pytest.mark.parametrize(("change", "expected"), [
    ({"uuid": "..\\..\\escape"}, "climbs out"),
    ({"uuid": "vol:stream"}, "stream"),
    ({"uuid": "CON"}, "device name"),
    ({"uuid": "\u202evm"}, "invisible control or formatting character"),
    ({"uuid": None}, "uuid is missing"),
    ({"size": 0}, "positive"),
    ({"size": "big"}, "size"),
    ({"size": 1 << 62}, f"data.size must be a positive number of bytes that a VHDX holds, "
                        f"at most {64 << 40} (64 TiB), not {1 << 62}"),
    ({"size": (2040 << 30) + 1, "format": "VHD"}, f"a VHD holds, at most {2040 << 30} (2040 GiB)"),
    ({"dataStore": _store("C:\\absent")}, "pool root C:\\absent is not registered"),
    ({"dataStore": _store("relative\\pool")}, "not an absolute"),
    ({"format": "QCOW2"}, "not VHD or VHDX"),
    ({"provisioningType": "THICK"}, "data.provisioningType 'THICK' is not a provisioning type "
                                    "this host knows: THIN, SPARSE or FAT"),
])
async def test_create_object_fails_and_creates_nothing_when_input_is_bad(
    agent: Running, change: dict[str, Any], expected: str
) -> None:
    pool = _pool(agent)
    body = _volume()
    body[VOLUME_TO].update(change)
    key, answer = await agent.answer(CREATE_OBJECT, {"data": body})
    assert (key, answer["result"]) == (CREATE_OBJECT_ANSWER, False), answer
    assert expected in answer["details"]
    assert listing(pool) == {}
    assert not (pool.parent / "escape.vhdx").exists()


async def test_create_object_fails_when_data_is_a_template(agent: Running) -> None:
    _pool(agent)
    body = {TEMPLATE_TO: {"uuid": VOLUME_UUID, "path": "t", "format": "VHDX",
                          "imageDataStore": _store()}}
    _, answer = await agent.answer(CREATE_OBJECT, {"data": body})
    assert answer["result"] is False and "volumes only" in answer["details"]


# --- DeleteCommand ------------------------------------------------------------------------


async def test_delete_removes_volume_file_and_succeeds_again_when_missing(
    agent: Running,
) -> None:
    pool = _pool(agent)
    _disk(pool, f"{VOLUME_UUID}.vhdx")
    for _ in range(2):
        key, answer = await agent.answer(DELETE, {"data": _volume(path=VOLUME_UUID,
                                                                  format="VHDX")})
        assert (key, answer["result"]) == (ANSWER, True), answer
        assert not (pool / f"{VOLUME_UUID}.vhdx").exists()


@pytest.mark.parametrize("command", ["delete", "destroy"])
async def test_volume_on_a_share_that_cannot_be_reached_is_not_reported_deleted(
    tmp_path: Path, command: str
) -> None:
    """Windows reports a share whose server is down, or that was taken away, as a path
    that is not found: a volume there reads as absent. Answered "nothing to delete", the
    management server would forget the volume while its file stays on the share for
    good; the answer fails naming the pool's root, and the same command, once the share
    is back, deletes the file."""
    share = tmp_path / "primary"
    share.mkdir()
    config = config_with_shares(tmp_path, {r"\\10.1.1.1\primary": share})
    path = "/primary?user=administrator&password=1pass%40word1"
    store = {PRIMARY_TO: {"uuid": POOL_UUID, "id": 201, "host": "10.1.1.1", "type": "SMB",
                          "poolType": "SMB", "path": path, "port": 445}}
    body = ({"data": _volume(path=VOLUME_UUID, format="VHDX", dataStore=store)}
            if command == "delete" else {"volume": {
                "name": "ROOT-10", "storagePoolType": "SMB", "mountPoint": path,
                "path": VOLUME_UUID, "storagePoolUuid": POOL_UUID, "type": "ROOT", "id": 10,
                "size": 0}})
    async with serving(config) as running:
        _, added = await running.answer(MODIFY_POOL, {"add": True, "pool": {
            "uuid": POOL_UUID, "host": "10.1.1.1", "type": "SMB", "path": path, "port": 445}})
        assert added["result"] is True, added
        _disk(share, f"{VOLUME_UUID}.vhdx")
        share.rename(tmp_path / "away")  # the share cannot be reached
        _, answer = await running.answer(DELETE if command == "delete" else DESTROY, body)
        assert answer["result"] is False, answer
        assert r"\\10.1.1.1\primary" in answer["details"], answer["details"]
        assert "cannot be reached" in answer["details"], answer["details"]
        (tmp_path / "away").rename(share)  # back
        _, answer = await running.answer(DELETE if command == "delete" else DESTROY, body)
        assert answer["result"] is True, answer
    assert not (share / f"{VOLUME_UUID}.vhdx").exists()


@pytest.mark.parametrize("backend_kind", ["emulator"])  # the agent's own file access
async def test_delete_on_a_share_that_refuses_the_host_fails_naming_the_file_and_keeps_it(
    agent: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A share whose account's password changed (or whose permissions did) refuses the
    host: Windows answers ERROR_ACCESS_DENIED, which Python raises as PermissionError,
    also when only asked whether a file is there. The answer names the file and what the
    host met, not a bare internal error, and the file is kept."""
    pool = _pool(agent)
    volume = _disk(pool, f"{VOLUME_UUID}.vhdx")
    stat = Path.stat

    def refused(self: Path, **kwargs: Any) -> Any:
        if self == volume:
            raise PermissionError(errno.EACCES, "Access is denied", str(self))
        return stat(self, **kwargs)

    monkeypatch.setattr(Path, "stat", refused)
    _, answer = await agent.answer(DELETE, {"data": _volume(path=VOLUME_UUID, format="VHDX")})
    assert answer["result"] is False, answer
    assert f"C:\\pool\\{VOLUME_UUID}.vhdx" in answer["details"], answer["details"]
    assert "Access is denied" in answer["details"], answer["details"]
    monkeypatch.undo()
    assert volume.is_file()


async def test_delete_refuses_and_keeps_file_when_volume_is_in_running_vm(
    agent: Running,
) -> None:
    pool = _pool(agent)
    _disk(pool, f"{VOLUME_UUID}.vhdx")
    cim = agent.emulator
    vm = await _vm_with(cim, "i-2-30-VM", f"C:\\pool\\{VOLUME_UUID}.vhdx", scsi=True,
                        running=True)
    _, answer = await agent.answer(DELETE, {"data": _volume(path=VOLUME_UUID)})
    assert answer["result"] is False
    assert "running VM i-2-30-VM" in answer["details"] and "kept" in answer["details"]
    assert (pool / f"{VOLUME_UUID}.vhdx").is_file()
    attached = await disks.find_attachment(hv(cim), f"C:\\pool\\{VOLUME_UUID}.vhdx")
    assert attached is not None and attached.vm_guid == vm.guid


@pytest.mark.parametrize("child", [f"{VOLUME_UUID}_8B1C0D9E-1F5A-4C2B-9E3D-7A6F5B4C3D21.avhdx",
                                   "root-b.vhdx"])
async def test_delete_refuses_and_keeps_a_volume_that_a_checkpoint_or_clone_names_as_parent(
    agent: Running, tmp_path: Path, child: str,
) -> None:
    """A checkpoint's disk (``<volume>_<GUID>.avhdx``, beside the volume: a VM with a
    checkpoint runs from it, its volume only the parent) or a linked clone names the
    volume as its parent; deleting the volume would lose them, and no running VM holds
    the volume itself open for Windows to refuse it. The answer fails naming the child,
    nothing is deleted; once the child is gone the same command deletes the volume."""
    pool = _pool(agent)
    volume = _disk(pool, f"{VOLUME_UUID}.vhdx")
    staged = tmp_path / "child.vhdx"  # made aside: the emulator names disks .vhd(x) only
    vhd.create(staged, vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0, parent=volume,
               parent_locator=f"C:\\pool\\{VOLUME_UUID}.vhdx")
    shutil.move(staged, pool / child)
    before = listing(pool)
    body = {"data": _volume(path=VOLUME_UUID, format="VHDX")}
    key, answer = await agent.answer(DELETE, body)
    assert (key, answer["result"]) == (ANSWER, False), answer
    assert (f"C:\\pool\\{VOLUME_UUID}.vhdx is the parent of 1 differencing disk(s)"
            in answer["details"]), answer["details"]
    assert f"e.g. C:\\pool\\{child}" in answer["details"], answer["details"]
    assert "the file was kept" in answer["details"], answer["details"]
    assert listing(pool) == before
    (pool / child).unlink()
    key, answer = await agent.answer(DELETE, body)
    assert (key, answer["result"]) == (ANSWER, True), answer
    assert not volume.exists()


async def test_delete_costs_no_call_for_the_disks_running_vms_hold_open_in_its_pool(
    agent: Running,
) -> None:
    """The parent check reads the headers of the disk files beside the volume; a running
    VM's disk cannot be read (its worker holds it open, sharing nothing), and is not
    asked of Hyper-V either: one that stood on the volume would hold it open, and Windows
    would refuse the delete. So a delete in a pool of running VMs costs what it costs in
    an idle one: the round trips are the same with two running VMs beside it as with
    none, and their disks are left as they were."""
    pool = _pool(agent)
    cim = agent.emulator
    spent = []
    for index, uuid in enumerate((VOLUME_UUID, OTHER_UUID)):
        _disk(pool, f"{uuid}.vhdx")
        before = cim.host.counters.snapshot()
        key, answer = await agent.answer(DELETE, {"data": _volume(path=uuid, format="VHDX")})
        trips = cim.host.counters.snapshot() - before
        spent.append((trips.calls, trips.waits))
        assert (key, answer["result"]) == (ANSWER, True), answer
        assert not (pool / f"{uuid}.vhdx").exists()
        if index == 0:
            for name in ("i-2-40-VM", "i-2-41-VM"):
                _disk(pool, f"{name}.vhdx")
                await _vm_with(cim, name, f"C:\\pool\\{name}.vhdx", scsi=True, running=True)
            assert "could not be read" not in answer["details"], answer["details"]
        else:
            assert "2 could not be read" in answer["details"], answer["details"]
    assert spent[0] == spent[1], spent
    assert {path.name for path in pool.glob("i-2-4*")} == {"i-2-40-VM.vhdx", "i-2-41-VM.vhdx"}


async def test_delete_of_a_volume_a_running_vm_s_clone_stands_on_names_that_vm(
    agent: Running,
) -> None:
    """A running VM's linked clone stands on the volume: the clone cannot be read, and
    Windows refuses to delete the volume its chain holds open; the answer names the VM
    (asked of Hyper-V on that failure only), and the volume is kept."""
    pool = _pool(agent)
    volume = _disk(pool, f"{VOLUME_UUID}.vhdx")
    vhd.create(pool / "root-c.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0,
               parent=volume, parent_locator=f"C:\\pool\\{VOLUME_UUID}.vhdx")
    await _vm_with(agent.emulator, "i-2-42-VM", "C:\\pool\\root-c.vhdx", scsi=True,
                   running=True)
    key, answer = await agent.answer(DELETE, {"data": _volume(path=VOLUME_UUID, format="VHDX")})
    assert (key, answer["result"]) == (ANSWER, False), answer
    assert (f"C:\\pool\\{VOLUME_UUID}.vhdx is the parent of 1 differencing disk(s) (linked "
            "clones), e.g. C:\\pool\\root-c.vhdx, held open by the running VM i-2-42-VM") in answer[
        "details"], answer["details"]
    assert volume.is_file()


async def test_delete_fails_and_keeps_template_when_data_is_a_template(agent: Running) -> None:
    pool = _pool(agent)
    _disk(pool, "tmpl.vhdx")
    body = {TEMPLATE_TO: {"uuid": VOLUME_UUID, "path": "tmpl", "format": "VHDX",
                          "imageDataStore": _store()}}
    _, answer = await agent.answer(DELETE, {"data": body})
    assert answer["result"] is False and "template" in answer["details"]
    assert (pool / "tmpl.vhdx").is_file()


@pytest.mark.parametrize("path", ["..\\outside", "C:\\elsewhere\\x", "\\\\evil\\share\\x",
                                  "x.vhdx:hidden", "LPT1"])
async def test_delete_fails_and_touches_nothing_when_path_leaves_pool(
    agent: Running, path: str
) -> None:
    pool = _pool(agent)
    outside = _disk(pool.parent, "outside.vhdx")
    _disk(pool, "x.vhdx")
    before = listing(pool.parent)
    _, answer = await agent.answer(DELETE, {"data": _volume(path=path, format="VHDX")})
    assert answer["result"] is False, answer
    assert answer["details"]
    assert listing(pool.parent) == before and outside.is_file()


# --- ResizeVolumeCommand ------------------------------------------------------------------


def _resize(path: str, new_size: int, current: int = GIB) -> dict[str, Any]:
    return {"path": path, "pool": {"id": 201, "uuid": POOL_UUID, "host": "10.1.1.1",
                                   "path": "C:\\pool", "port": 0, "type": "Filesystem"},
            "vmInstance": "i-2-31-VM", "currentSize": current, "newSize": new_size,
            "shrinkOk": False}


@requires_tool("qemu-img")
async def test_resize_grows_volume_when_new_size_is_larger(agent: Running) -> None:
    pool = _pool(agent)
    _disk(pool, f"{VOLUME_UUID}.vhdx")
    key, answer = await agent.answer(RESIZE, _resize(VOLUME_UUID, 3 * GIB))
    assert (key, answer["result"], answer["newSize"]) == (RESIZE_ANSWER, True, 3 * GIB), answer
    assert qemu_info(pool / f"{VOLUME_UUID}.vhdx")["virtual-size"] == 3 * GIB


async def test_resize_grows_disk_of_running_vm_when_vhdx_is_on_scsi(agent: Running) -> None:
    pool = _pool(agent)
    _disk(pool, f"{VOLUME_UUID}.vhdx")
    await _vm_with(agent.emulator, "i-2-31-VM", f"C:\\pool\\{VOLUME_UUID}.vhdx", scsi=True,
                   running=True)
    _, answer = await agent.answer(RESIZE, _resize(f"{VOLUME_UUID}.vhdx", 2 * GIB))
    assert answer["result"] is True, answer
    assert vhd.read_info(pool / f"{VOLUME_UUID}.vhdx").virtual_size_bytes == 2 * GIB


async def test_resize_keeps_a_fixed_disk_fixed_and_counts_its_growth_against_the_pool(
    tmp_path: Path,
) -> None:
    """A FAT volume's file grows by the difference when it is resized: growth that would
    leave the pool's volume less than KEEP_FREE_BYTES free is refused before Hyper-V is
    asked and the disk left as it was; growth that fits keeps it fixed. A dynamic disk
    grows however little room there is, taking none yet."""
    free = KEEP_FREE_BYTES + 48 * MIB  # room for 48 MiB
    async with serving(_pool_with_room(tmp_path, free)) as running:
        pool = _pool(running)
        fixed = pool / f"{VOLUME_UUID}.vhdx"
        vhd.create(fixed, vhd.DiskFormat.VHDX, vhd.DiskType.FIXED, 64 * MIB)
        _disk(pool, "thin.vhdx", 64 * MIB)
        spent = running.emulator.round_trips()
        key, answer = await running.answer(RESIZE, _resize(VOLUME_UUID, 128 * MIB, 64 * MIB))
        assert (key, answer["result"]) == (RESIZE_ANSWER, False), answer
        details = answer["details"]
        assert f"not enough free space for growing the fixed disk C:\\pool\\{VOLUME_UUID}" \
            f".vhdx" in details, details
        assert f"it takes {64 * MIB} bytes, and only {48 * MIB} may be written" in details
        assert "the volume is unchanged" in details, details
        assert (running.emulator.round_trips() - spent)["invoke:ResizeVirtualHardDisk"] == 0
        assert vhd.read_info(fixed).virtual_size_bytes == 64 * MIB

        _, grown = await running.answer(RESIZE, _resize(VOLUME_UUID, 96 * MIB, 64 * MIB))
        assert (grown["result"], grown["newSize"]) == (True, 96 * MIB), grown
        info = vhd.read_info(fixed)
        assert (info.type, info.virtual_size_bytes) == (vhd.DiskType.FIXED, 96 * MIB)
        _, thin = await running.answer(RESIZE, _resize("thin", 128 * MIB, 64 * MIB))
        assert thin["result"] is True, thin


async def test_resize_refuses_shrink_and_leaves_file_unchanged(agent: Running) -> None:
    pool = _pool(agent)
    _disk(pool, f"{VOLUME_UUID}.vhdx", 2 * GIB)
    before = listing(pool)
    key, answer = await agent.answer(RESIZE, _resize(VOLUME_UUID, GIB, 2 * GIB))
    assert (key, answer["result"]) == (RESIZE_ANSWER, False)
    assert "shrinking" in answer["details"] and "unchanged" in answer["details"]
    assert listing(pool) == before


async def test_resize_whose_hyperv_job_fails_answers_so_and_leaves_the_volume_as_it_was(
    agent: Running,
) -> None:
    """Hyper-V's ResizeVirtualHardDisk job ends in Exception: the answer fails with its
    words, and the volume keeps its size and bytes (a failed job grew nothing)."""
    pool = _pool(agent)
    volume = _disk(pool, f"{VOLUME_UUID}.vhdx")
    vhd.write_data(volume, 0, b"volume data")
    before = volume.read_bytes()
    agent.emulator.faults.fail_next_job("ResizeVirtualHardDisk", 32768,
                                        "The disk is in use (injected).")
    key, answer = await agent.answer(RESIZE, _resize(VOLUME_UUID, 2 * GIB))
    assert (key, answer["result"]) == (RESIZE_ANSWER, False), answer
    assert "The disk is in use (injected)." in answer["details"], answer["details"]
    assert vhd.read_info(volume).virtual_size_bytes == GIB
    assert volume.read_bytes() == before


@pytest.mark.parametrize(("name", "size", "expected"), [
    (f"{VOLUME_UUID}.vhdx", 1 << 62, f"newSize must be a positive number of bytes that a VHDX "
                                     f"holds, at most {64 << 40} (64 TiB), not {1 << 62}"),
    (f"{VOLUME_UUID}.vhd", (2040 << 30) + 512, f"a VHD holds, at most {2040 << 30} (2040 GiB)"),
])
async def test_resize_fails_and_leaves_file_unchanged_when_new_size_is_more_than_format_holds(
    agent: Running, name: str, size: int, expected: str,
) -> None:
    pool = _pool(agent)
    _disk(pool, name)
    before = listing(pool)
    spent = agent.emulator.round_trips()
    key, answer = await agent.answer(RESIZE, _resize(name, size))
    assert (key, answer["result"]) == (RESIZE_ANSWER, False), answer
    assert expected in answer["details"], answer["details"]
    assert (agent.emulator.round_trips() - spent)["invoke:ResizeVirtualHardDisk"] == 0
    assert listing(pool) == before
    assert vhd.read_info(pool / name).virtual_size_bytes == GIB


@pytest.mark.parametrize(("change", "refusal", "why"), [
    ("removed", "ResizeVirtualHardDisk failed with return code 32779 (file not found)",
     "which cannot be found"),
    ("replaced", "ResizeVirtualHardDisk job ended in state 10 with error code 32773: ",
     "which is not the disk it was made from (replaced or written since)"),
])
async def test_resize_of_a_linked_clone_whose_template_is_gone_or_changed_names_the_template(
    agent: Running, change: str, refusal: str, why: str,
) -> None:
    """Hyper-V opens a linked clone with its template to grow it: with the template
    deleted, or replaced by another disk of its name, behind CloudStack's back, the
    ResizeVolume fails, and Hyper-V's words ("file not found", or Windows' corrupted
    chain error) name no file. The answer names the volume and the template file it
    stands on, and why, from Hyper-V's validation of the volume asked only on the refusal
    (one call and one wait; the resize reads the volume's settings anyway, and no more).
    The volume keeps its size."""
    pool = _pool(agent)
    _disk(pool, "tmpl-1.vhdx")
    clone = pool / f"{VOLUME_UUID}.vhdx"
    await disks.create_differencing(hv(agent.emulator), f"C:\\pool\\{clone.name}",
                                    "C:\\pool\\tmpl-1.vhdx")
    (pool / "tmpl-1.vhdx").unlink()
    if change == "replaced":  # a template of the same name made anew
        _disk(pool, "tmpl-1.vhdx")
    spent = agent.emulator.round_trips()
    key, answer = await agent.answer(RESIZE, _resize(VOLUME_UUID, 2 * GIB))
    assert (key, answer["result"]) == (RESIZE_ANSWER, False), answer
    details = answer["details"]
    assert refusal in details, details
    assert details.endswith(f"; the disk C:\\pool\\{clone.name} stands on the parent "
                            f"C:\\pool\\tmpl-1.vhdx, {why}"), details
    spent = agent.emulator.round_trips() - spent
    assert (spent["invoke:ResizeVirtualHardDisk"], spent["invoke:ValidateVirtualHardDisk"],
            spent["invoke:GetVirtualHardDiskSettingData"]) == (1, 1, 1), spent
    assert vhd.read_info(clone).virtual_size_bytes == GIB


async def test_resize_of_a_vhd_linked_clone_fails_naming_it_by_its_host_path(
    agent: Running,
) -> None:
    """A differencing VHD does not grow (Microsoft's ResizeVirtualHardDisk page lists
    differencing disks as growing only as VHDX): the ResizeVolume of a linked clone of a
    VHD template fails, naming the volume by the path the host knows it by, never a file
    of the machine behind the emulated host, and every file is as it was."""
    pool = _pool(agent)
    _disk(pool, "tmpl-1.vhd")
    clone = pool / f"{VOLUME_UUID}.vhd"
    await disks.create_differencing(hv(agent.emulator), f"C:\\pool\\{clone.name}",
                                    "C:\\pool\\tmpl-1.vhd")
    before = listing(pool)
    key, answer = await agent.answer(RESIZE, _resize(VOLUME_UUID, 2 * GIB))
    assert (key, answer["result"]) == (RESIZE_ANSWER, False), answer
    assert (f"C:\\pool\\{clone.name}: cannot resize a differencing disk"
            in answer["details"]), answer["details"]
    assert str(agent.agent.config.agent.state_dir) not in answer["details"], answer
    assert listing(pool) == before


async def test_resize_of_a_linked_clone_in_a_moved_pool_names_the_file_that_is_missing(
    agent: Running,
) -> None:
    """A pool moved to another folder (its files moved together, the primary storage's
    path changed to match): its linked clones still open by the relative paths they
    record. A volume cloned from a template that is a clone itself, whose own parent was
    then deleted, does not grow, and the answer names that missing file and the template
    standing on it, not the template in the folder the chain was made in (which is there,
    beside the volume)."""
    old = _pool(agent, "old")
    _disk(old, "base.vhdx")
    cim = hv(agent.emulator)
    await disks.create_differencing(cim, "C:\\old\\tmpl-1.vhdx", "C:\\old\\base.vhdx")
    await disks.create_differencing(cim, f"C:\\old\\{VOLUME_UUID}.vhdx",
                                    "C:\\old\\tmpl-1.vhdx")
    pool = old.rename(old.with_name("pool"))
    (pool / "base.vhdx").unlink()
    key, answer = await agent.answer(RESIZE, _resize(VOLUME_UUID, 2 * GIB))
    assert (key, answer["result"]) == (RESIZE_ANSWER, False), answer
    details = answer["details"]
    assert "ResizeVirtualHardDisk failed with return code 32779" in details, details
    assert details.endswith("; the disk C:\\pool\\tmpl-1.vhdx stands on the parent "
                            "C:\\old\\base.vhdx, which cannot be found"), details
    assert vhd.read_info(pool / f"{VOLUME_UUID}.vhdx").virtual_size_bytes == GIB


async def test_resize_fails_when_volume_is_missing_or_outside_pool(agent: Running) -> None:
    _pool(agent)
    for path, expected in (("absent", "does not exist"), ("..\\x", "climbs out")):
        _, answer = await agent.answer(RESIZE, _resize(path, 2 * GIB))
        assert answer["result"] is False and expected in answer["details"], answer


async def test_resize_of_a_volume_on_a_share_that_cannot_be_reached_says_so(
    tmp_path: Path,
) -> None:
    """Windows reports a share whose server is down, or that was taken away, as a path not
    found: a volume there reads as absent. The ResizeVolumeAnswer names the pool's root as
    what cannot be reached, not the volume as missing (which sends the operator looking
    for a file that is there); the disk is unchanged, and once the share is back the same
    resize grows it."""
    share = tmp_path / "primary"
    share.mkdir()
    config = config_with_shares(tmp_path, {r"\\10.1.1.1\primary": share})
    path = "/primary?user=administrator&password=1pass%40word1"
    body = _resize(VOLUME_UUID, 2 * GIB)
    body["pool"] = {"id": 201, "uuid": POOL_UUID, "host": "10.1.1.1", "path": path,
                    "port": 445, "type": "SMB"}
    async with serving(config) as running:
        _, added = await running.answer(MODIFY_POOL, {"add": True, "pool": body["pool"]})
        assert added["result"] is True, added
        _disk(share, f"{VOLUME_UUID}.vhdx")
        share.rename(tmp_path / "away")  # the share cannot be reached
        key, answer = await running.answer(RESIZE, body)
        assert (key, answer["result"]) == (RESIZE_ANSWER, False), answer
        assert "pool's root \\\\10.1.1.1\\primary," in answer["details"], answer["details"]
        assert "cannot be reached" in answer["details"], answer["details"]
        assert "1pass" not in answer["details"], answer["details"]
        (tmp_path / "away").rename(share)  # back
        assert vhd.read_info(share / f"{VOLUME_UUID}.vhdx").virtual_size_bytes == GIB
        key, answer = await running.answer(RESIZE, body)
        assert (key, answer["result"], answer["newSize"]) == (RESIZE_ANSWER, True, 2 * GIB)
    assert vhd.read_info(share / f"{VOLUME_UUID}.vhdx").virtual_size_bytes == 2 * GIB


# --- legacy CreateCommand -----------------------------------------------------------------


def _legacy_create(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "volId": 10, "pool": {"id": 201, "uuid": POOL_UUID, "host": "10.1.1.1",
                              "path": "C:\\pool", "port": 0, "type": "Filesystem"},
        "diskCharacteristics": {"size": 0, "tags": [], "type": "ROOT", "name": "ROOT-9",
                                "useLocalStorage": True, "recreatable": True,
                                "diskOfferingId": 11, "volumeId": 10, "hyperType": "Hyperv"},
        "templateUrl": "TestCopiedLocalTemplate.vhdx", "contextMap": {}, "wait": 0}
    body.update(fields)
    return body


async def test_legacy_create_copies_template_to_new_guid_file(agent: Running) -> None:
    pool = _pool(agent)
    template = _disk(pool, "TestCopiedLocalTemplate.vhdx")
    key, answer = await agent.answer(CREATE, _legacy_create())
    assert (key, answer["result"]) == (CREATE_ANSWER, True), answer
    volume = answer["volume"]
    assert volume["name"].endswith(".vhdx") and volume["name"] != template.name
    assert volume["path"] == volume["mountPoint"] == f"C:\\pool\\{volume['name']}"
    assert (volume["id"], volume["type"], volume["storagePoolType"],
            volume["storagePoolUuid"]) == (10, "ROOT", "Filesystem", POOL_UUID)
    assert (pool / volume["name"]).read_bytes() == template.read_bytes()


async def test_legacy_create_makes_empty_disk_when_no_template_is_named(agent: Running) -> None:
    pool = _pool(agent)
    body = _legacy_create(templateUrl=None)
    body["diskCharacteristics"]["size"] = 64 * MIB
    _, answer = await agent.answer(CREATE, body)
    assert answer["result"] is True, answer
    info = vhd.read_info(pool / answer["volume"]["name"])
    assert (info.format, info.type, info.virtual_size_bytes) == (
        vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 64 * MIB)


async def test_legacy_create_makes_a_fixed_disk_when_the_offering_is_fat(agent: Running) -> None:
    pool = _pool(agent)
    body = _legacy_create(templateUrl=None)
    body["diskCharacteristics"].update(size=64 * MIB, provisioningType="FAT")
    _, answer = await agent.answer(CREATE, body)
    assert answer["result"] is True, answer
    info = vhd.read_info(pool / answer["volume"]["name"])
    assert (info.type, info.virtual_size_bytes) == (vhd.DiskType.FIXED, 64 * MIB)


@pytest.mark.parametrize(("stored", "provisioning", "made"), [
    (vhd.DiskType.DYNAMIC, "FAT", vhd.DiskType.FIXED),
    (vhd.DiskType.FIXED, "THIN", vhd.DiskType.DYNAMIC),
    (vhd.DiskType.FIXED, "SPARSE", vhd.DiskType.DYNAMIC),
    (vhd.DiskType.FIXED, None, vhd.DiskType.FIXED),
])
async def test_legacy_create_copies_the_template_as_the_offering_provisions(
    agent: Running, stored: vhd.DiskType, provisioning: str | None, made: vhd.DiskType,
) -> None:
    """A volume copied from a template by the legacy CreateCommand is of the kind its
    offering's provisioning type asks, as CopyCommand makes it: a FAT one a fixed disk
    Hyper-V writes whole from the template, a THIN or SPARSE one dynamic (a fixed
    template converted); with no type given, as the template is stored."""
    pool = _pool(agent)
    template = pool / "TestCopiedLocalTemplate.vhdx"
    vhd.create(template, vhd.DiskFormat.VHDX, stored, 64 * MIB)
    vhd.write_data(template, 0, b"template os")
    before = template.read_bytes()
    body = _legacy_create()
    if provisioning is not None:
        body["diskCharacteristics"]["provisioningType"] = provisioning
    _, answer = await agent.answer(CREATE, body)
    assert answer["result"] is True, answer
    copied = pool / answer["volume"]["name"]
    info = vhd.read_info(copied)
    assert (info.type, info.parent_path, info.virtual_size_bytes) == (made, None, 64 * MIB)
    assert vhd.read_data(copied, 0, 11) == b"template os"
    assert sorted(listing(pool)) == sorted([template.name, copied.name])
    assert template.read_bytes() == before


async def test_legacy_create_of_a_fat_volume_is_refused_when_the_pool_cannot_hold_it(
    tmp_path: Path,
) -> None:
    """The fixed copy's whole size is counted against the pool's free space before
    Hyper-V writes a byte of it."""
    free = KEEP_FREE_BYTES + 48 * MIB  # room for 48 MiB: not for a 64 MiB fixed copy
    async with serving(_pool_with_room(tmp_path, free)) as running:
        pool = _pool(running)
        _disk(pool, "TestCopiedLocalTemplate.vhdx", 64 * MIB)
        before = listing(pool)
        spent = running.emulator.round_trips()
        body = _legacy_create()
        body["diskCharacteristics"]["provisioningType"] = "FAT"
        _, answer = await running.answer(CREATE, body)
        assert answer["result"] is False, answer
        assert ("not enough free space for a fixed copy (FAT) of "
                "C:\\pool\\TestCopiedLocalTemplate.vhdx") in answer["details"], answer
        assert (running.emulator.round_trips() - spent)["invoke:ConvertVirtualHardDisk"] == 0
        assert listing(pool) == before


@pytest.mark.parametrize(("change", "expected"), [
    ({"templateUrl": "..\\TestCopiedLocalTemplate.vhdx"}, "bare file name"),
    ({"templateUrl": "absent.vhdx"}, "does not exist"),
    ({"templateUrl": "notes.txt"}, "not a .vhd or .vhdx"),
    ({"pool": {"uuid": POOL_UUID, "path": "\\\\10.1.1.1\\secondary", "type": "SMB"}},
     "Filesystem pool"),
])
async def test_legacy_create_fails_and_creates_nothing_when_input_is_bad(
    agent: Running, change: dict[str, Any], expected: str
) -> None:
    pool = _pool(agent)
    _disk(pool, "TestCopiedLocalTemplate.vhdx")
    before = listing(pool.parent)
    _, answer = await agent.answer(CREATE, _legacy_create(**change))
    assert answer["result"] is False and expected in answer["details"], answer
    assert listing(pool.parent) == before


async def test_legacy_create_fails_and_creates_nothing_when_size_is_more_than_a_vhdx_holds(
    agent: Running,
) -> None:
    pool = _pool(agent)
    body = _legacy_create(templateUrl=None)
    body["diskCharacteristics"]["size"] = 1 << 62
    _, answer = await agent.answer(CREATE, body)
    assert answer["result"] is False, answer
    assert (f"diskCharacteristics.size must be a positive number of bytes that a VHDX holds, "
            f"at most {64 << 40} (64 TiB)") in answer["details"], answer["details"]
    assert listing(pool) == {}


# --- legacy DestroyCommand ----------------------------------------------------------------


def _destroy(path: str, vm_name: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"volume": {
        "name": "TestVolumeTemp", "storagePoolType": "Filesystem", "mountPoint": "C:\\pool",
        "path": path, "storagePoolUuid": POOL_UUID, "type": "ROOT", "id": 9, "size": 0}}
    if vm_name:
        body["vmName"] = vm_name
    return body


async def test_destroy_succeeds_when_file_is_missing(agent: Running) -> None:
    _pool(agent)
    key, answer = await agent.answer(DESTROY, _destroy("storagepool"))
    assert (key, answer["result"]) == (ANSWER, True), answer


async def test_destroy_detaches_from_named_vm_then_deletes(agent: Running) -> None:
    pool = _pool(agent)
    _disk(pool, "data.vhdx")
    cim = agent.emulator
    await _vm_with(cim, "i-2-32-VM", "C:\\pool\\data.vhdx", scsi=True, running=True)
    _, answer = await agent.answer(DESTROY, _destroy("C:\\pool\\data.vhdx", "i-2-32-VM"))
    assert answer["result"] is True, answer
    assert not (pool / "data.vhdx").exists()
    assert await disks.find_attachment(hv(cim), "C:\\pool\\data.vhdx") is None
    vm = await vms.find_vm(hv(cim), "i-2-32-VM")
    assert vm is not None and vm.power is vms.PowerState.RUNNING


async def test_destroy_refuses_and_keeps_file_when_another_vm_uses_it(agent: Running) -> None:
    pool = _pool(agent)
    _disk(pool, "data.vhdx")
    await _vm_with(agent.emulator, "i-2-33-VM", "C:\\pool\\data.vhdx", scsi=False,
                   running=True)
    for vm_name in (None, "i-2-99-VM"):
        _, answer = await agent.answer(DESTROY, _destroy("data.vhdx", vm_name))
        assert answer["result"] is False and "i-2-33-VM" in answer["details"], answer
        assert (pool / "data.vhdx").is_file()
    _, answer = await agent.answer(DESTROY, _destroy("data", "i-2-33-VM"))  # IDE, running
    assert answer["result"] is False and "could not be detached" in answer["details"]
    assert (pool / "data.vhdx").is_file()


async def test_destroy_costs_no_call_for_the_disks_running_vms_hold_open_in_its_pool(
    agent: Running,
) -> None:
    """DestroyCommand's parent check is DeleteCommand's: the disk files beside the volume
    that running VMs hold open cannot be read, and none is asked of Hyper-V (a running
    child would hold the volume open, and Windows would refuse the delete), so the round
    trips are the same with two running VMs in the pool as with none, and their disks
    are left as they were."""
    pool = _pool(agent)
    cim = agent.emulator
    spent = []
    for index, name in enumerate(("data-a.vhdx", "data-b.vhdx")):
        _disk(pool, name)
        before = cim.host.counters.snapshot()
        key, answer = await agent.answer(DESTROY, _destroy(name))
        trips = cim.host.counters.snapshot() - before
        spent.append((trips.calls, trips.waits))
        assert (key, answer["result"]) == (ANSWER, True), answer
        assert not (pool / name).exists()
        if index == 0:
            for vm_name in ("i-2-40-VM", "i-2-41-VM"):
                _disk(pool, f"{vm_name}.vhdx")
                await _vm_with(cim, vm_name, f"C:\\pool\\{vm_name}.vhdx", scsi=True,
                               running=True)
            assert "could not be read" not in answer["details"], answer["details"]
        else:
            assert "2 could not be read" in answer["details"], answer["details"]
    assert spent[0] == spent[1], spent
    assert {path.name for path in pool.glob("i-2-4*")} == {"i-2-40-VM.vhdx", "i-2-41-VM.vhdx"}


async def test_destroy_of_a_volume_a_running_vm_s_clone_stands_on_names_that_vm(
    agent: Running,
) -> None:
    """A running VM's linked clone stands on the volume: Windows refuses to delete the
    volume its chain holds open, and the answer names the clone and its VM; the volume
    is kept. Hyper-V is asked of the clone on that failure only: a destroy beside the
    running clone that succeeds costs what one costs in a pool where no VM runs, and
    the failed one costs that and the clone's asks (its settings, then the drive that
    holds it), nothing more."""
    pool = _pool(agent)
    cim = agent.emulator

    async def destroy(name: str, result: bool) -> tuple[dict[str, Any], Counter[str]]:
        """The answer, and the calls it cost by primitive and by method (what the
        emulator examined to answer them is its own work, not a round trip)."""
        before = cim.round_trips()
        key, answer = await agent.answer(DESTROY, _destroy(name))
        trips = cim.round_trips() - before
        assert (key, answer["result"]) == (ANSWER, result), answer
        return answer, Counter({name: count for name, count in trips.counts.items()
                                if name.split(":")[0] in (*CALL_PRIMITIVES, "jobs_started")})

    _disk(pool, "data-a.vhdx")
    _, idle = await destroy("data-a.vhdx", True)  # no VM runs
    volume = _disk(pool, "data.vhdx")
    vhd.create(pool / "root-c.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0,
               parent=volume, parent_locator="C:\\pool\\data.vhdx")
    await _vm_with(cim, "i-2-42-VM", "C:\\pool\\root-c.vhdx", scsi=True, running=True)
    _disk(pool, "data-b.vhdx")
    beside, trips = await destroy("data-b.vhdx", True)
    assert "1 could not be read" in beside["details"], beside["details"]
    assert trips == idle, (trips, idle)
    answer, trips = await destroy("data.vhdx", False)
    assert ("C:\\pool\\data.vhdx is the parent of 1 differencing disk(s) (linked clones), "
            "e.g. C:\\pool\\root-c.vhdx, held open by the running VM i-2-42-VM") in answer[
        "details"], answer["details"]
    assert "the file was kept" in answer["details"], answer["details"]
    assert volume.is_file()
    # the image service's path, the clone's settings from it, the drives holding the
    # clone, and their VM
    assert trips - idle == {"query": 2, "invoke": 1, "invoke:GetVirtualHardDiskSettingData": 1,
                           "get": 1}, (trips, idle)


async def test_destroy_under_a_running_clone_keeps_the_volume_in_its_stopped_vm(
    agent: Running,
) -> None:
    """A volume in the stopped VM the command names, that a running VM's linked clone
    stands on: the delete would fail (the clone's chain holds the volume open), so the
    volume is refused, naming the clone's VM, before it is detached: the stopped VM keeps
    its disk, as it would start again from it."""
    pool = _pool(agent)
    volume = _disk(pool, "data.vhdx")
    vhd.create(pool / "root-c.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0,
               parent=volume, parent_locator="C:\\pool\\data.vhdx")
    await _vm_with(agent.emulator, "i-2-43-VM", "C:\\pool\\data.vhdx", scsi=True,
                   running=False)
    await _vm_with(agent.emulator, "i-2-42-VM", "C:\\pool\\root-c.vhdx", scsi=True,
                   running=True)
    key, answer = await agent.answer(DESTROY, _destroy("data.vhdx", "i-2-43-VM"))
    assert (key, answer["result"]) == (ANSWER, False), answer
    assert "held open by the running VM i-2-42-VM" in answer["details"], answer["details"]
    assert volume.is_file()
    attached = await disks.find_attachment(hv(agent.emulator), "C:\\pool\\data.vhdx")
    assert attached is not None and attached.vm_name == "i-2-43-VM"


async def test_destroy_of_a_stopped_vm_s_volume_reads_its_pool_s_disk_headers_once(
    agent: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A volume in the stopped VM the command names is detached and deleted after one
    search of its folder for disks standing on it: the pool is listed once and each
    other disk's headers read once (a pool of thousands of volumes on a share costs one
    search, not two), and the one disk that cannot be read (a running VM holds it open)
    is asked of Hyper-V once, before the detach."""
    pool = _pool(agent)
    cim = agent.emulator
    volume = _disk(pool, "data.vhdx")
    for name in ("data-a.vhdx", "data-b.vhdx", "i-2-48-VM.vhdx"):
        _disk(pool, name)
    await _vm_with(cim, "i-2-47-VM", "C:\\pool\\data.vhdx", scsi=True, running=False)
    await _vm_with(cim, "i-2-48-VM", "C:\\pool\\i-2-48-VM.vhdx", scsi=True, running=True)
    files = agent.agent.opened.files
    listed: Counter[str] = Counter()
    read: Counter[str] = Counter()
    list_dir, disk_parent = files.list_dir, images.disk_parent

    async def counted_listing(folder: str) -> list[str]:
        listed[folder] += 1
        return await list_dir(folder)

    def counted_read(host_files: Any, path: str) -> Any:
        read[path] += 1
        return disk_parent(host_files, path)

    monkeypatch.setattr(files, "list_dir", counted_listing)
    monkeypatch.setattr(images, "disk_parent", counted_read)
    before = cim.round_trips()
    key, answer = await agent.answer(DESTROY, _destroy("data.vhdx", "i-2-47-VM"))
    spent = cim.round_trips() - before
    assert (key, answer["result"]) == (ANSWER, True), answer
    assert not volume.exists()
    assert await disks.find_attachment(hv(cim), "C:\\pool\\data.vhdx") is None
    assert listed == {"C:\\pool": 1}, listed
    assert read == {f"C:\\pool\\{name}": 1 for name in (
        "data-a.vhdx", "data-b.vhdx", "i-2-48-VM.vhdx")}, read
    assert spent["invoke:GetVirtualHardDiskSettingData"] == 1, spent


async def test_destroy_whose_delete_fails_after_the_detach_says_the_volume_was_detached(
    agent: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows refuses the delete of a volume just detached from its VM for a cause no
    check foresees (a process other than a VM holds it, its ACL denies the delete): the
    file is kept, and the answer says that the VM no longer has it, not the file alone."""
    pool = _pool(agent)
    volume = _disk(pool, "data.vhdx")
    await _vm_with(agent.emulator, "i-2-44-VM", "C:\\pool\\data.vhdx", scsi=True,
                   running=False)

    async def denied(_: EmulatedFiles, path: str) -> bool:
        raise HostFileError(f"cannot delete {path}: Access is denied")

    monkeypatch.setattr(EmulatedFiles, "remove", denied)
    key, answer = await agent.answer(DESTROY, _destroy("data.vhdx", "i-2-44-VM"))
    assert (key, answer["result"]) == (ANSWER, False), answer
    assert answer["details"] == (
        "DestroyCommand failed: cannot delete C:\\pool\\data.vhdx: Access is denied; the "
        "file was kept, detached from VM i-2-44-VM, which no longer has it"), answer
    assert volume.is_file()
    assert await disks.find_attachment(hv(agent.emulator), "C:\\pool\\data.vhdx") is None


async def test_destroy_tells_of_no_detach_when_the_drive_went_before_it(
    agent: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The volume's drive is removed from its VM (by an operator, in Hyper-V Manager)
    between the lookup of the VM holding it and the detach, which then finds no drive to
    remove: when Windows refuses the delete, the answer does not claim the file was
    detached from that VM by the command."""
    pool = _pool(agent)
    volume = _disk(pool, "data.vhdx")
    await _vm_with(agent.emulator, "i-2-45-VM", "C:\\pool\\data.vhdx", scsi=True,
                   running=False)
    cim = agent.emulator
    looked_up = disks.find_attachment

    async def then_removed(session: Any, path: str, *, iso: bool = False
                           ) -> disks.Attachment | None:
        found = await looked_up(session, path, iso=iso)
        if found is not None:
            await ok(cim, await cim.invoke(await service(cim), "RemoveResourceSettings", {
                "ResourceSettings": [found.medium, found.drive]}))
        return found

    async def denied(_: EmulatedFiles, path: str) -> bool:
        raise HostFileError(f"cannot delete {path}: Access is denied")

    monkeypatch.setattr(disks, "find_attachment", then_removed)
    monkeypatch.setattr(EmulatedFiles, "remove", denied)
    key, answer = await agent.answer(DESTROY, _destroy("data.vhdx", "i-2-45-VM"))
    assert (key, answer["result"]) == (ANSWER, False), answer
    assert answer["details"] == ("DestroyCommand failed: cannot delete C:\\pool\\data.vhdx: "
                                 "Access is denied"), answer
    assert volume.is_file()


async def test_destroy_fails_when_path_is_missing_or_escapes(agent: Running) -> None:
    pool = _pool(agent)
    _disk(pool.parent, "outside.vhdx")
    for body, expected in ((_destroy(""), "volume.path"),
                           (_destroy("C:\\outside.vhdx"), "outside the pool")):
        _, answer = await agent.answer(DESTROY, body)
        assert answer["result"] is False and expected in answer["details"], answer
    assert (pool.parent / "outside.vhdx").is_file()


# --- data volumes survive VM operations ---------------------------------------------------


async def test_stop_keeps_data_disk_file_when_vm_is_removed(agent: Running) -> None:
    pool = _pool(agent)
    data = _disk(pool, "datadisk.vhdx")
    before = data.read_bytes()
    await _vm_with(agent.emulator, "i-2-34-VM", "C:\\pool\\datadisk.vhdx", scsi=True,
                   running=True)
    _, answer = await agent.answer(STOP, {"vmName": "i-2-34-VM", "forceStop": True})
    assert answer["result"] is True, answer
    assert await vms.find_vm(hv(agent.emulator), "i-2-34-VM") is None
    assert data.read_bytes() == before


# --- legacy PrimaryStorageDownloadCommand -------------------------------------------------


def _download(url: str, local: str = "C:\\pool") -> dict[str, Any]:
    return {"localPath": local, "poolUuid": POOL_UUID, "poolId": 201,
            "secondaryStorageUrl": SECONDARY_URL, "url": url, "format": "VHDX",
            "accountId": 2, "name": "204-2-5a1db1ac", "contextMap": {}, "wait": 10800}


def _secondary(tmp_path: Path, relative: str) -> Path:
    path = tmp_path / "secondary" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


async def test_download_copies_template_from_cifs_store_into_pool(
    agent: Running, tmp_path: Path
) -> None:
    pool = _pool(agent)
    source = _disk(_secondary(tmp_path, "template/tmpl/2/204/x").parent, "af39.vhdx")
    url = "cifs://10.1.1.1/secondary/template/tmpl/2/204/af39.vhdx?user=a&password=p%40ss"
    key, answer = await agent.answer(DOWNLOAD, _download(url))
    assert (key, answer["result"]) == (DOWNLOAD_ANSWER, True), answer
    installed = pool / answer["installPath"]
    assert answer["installPath"].endswith(".vhdx") and "\\" not in answer["installPath"]
    assert answer["templateSize"] == source.stat().st_size
    assert installed.read_bytes() == source.read_bytes()


async def test_download_decompresses_bz2_template(agent: Running, tmp_path: Path) -> None:
    pool = _pool(agent)
    raw = _disk(tmp_path, "plain.vhd", 64 * MIB)
    _secondary(tmp_path, "t/sys.vhd.bz2").write_bytes(bz2.compress(raw.read_bytes()))
    _, answer = await agent.answer(DOWNLOAD, _download(
        "cifs://10.1.1.1/secondary/t/sys.vhd.bz2"))
    assert answer["result"] is True, answer
    assert answer["installPath"].endswith(".vhd")
    assert (pool / answer["installPath"]).read_bytes() == raw.read_bytes()


@pytest.mark.parametrize(("url", "expected"), [
    ("nfs://10.70.176.36/mnt/secondary/t.vhdx", "nfs://"),
    ("cifs://10.1.1.1/secondary/t/notes.txt", "not a .vhd or .vhdx"),
    ("cifs://10.1.1.1/secondary/t/absent.vhdx", "absent.vhdx"),
    ("cifs://10.9.9.9/nowhere/t.vhdx", "10.9.9.9"),
    ("cifs://10.1.1.1/secondary/../t.vhdx", "'..'"),
])
async def test_download_fails_and_leaves_pool_empty_when_source_is_bad(
    agent: Running, tmp_path: Path, url: str, expected: str
) -> None:
    pool = _pool(agent)
    _secondary(tmp_path, "t/notes.txt").write_text("not a disk")
    _, answer = await agent.answer(DOWNLOAD, _download(url))
    assert answer["result"] is False and expected in answer["details"], answer
    assert listing(pool) == {}


async def test_download_from_an_image_store_that_cannot_be_reached_says_so(
    agent: Running, tmp_path: Path
) -> None:
    """A share that went away reads as a path not found, every template on it as absent:
    the PrimaryStorageDownloadAnswer names the image store as what cannot be reached, not
    the template as missing, and the pool is left empty; once the share is back the same
    download succeeds."""
    pool = _pool(agent)
    _disk(_secondary(tmp_path, "template/tmpl/2/204/x").parent, "af39.vhdx")
    body = _download("cifs://10.1.1.1/secondary/template/tmpl/2/204/af39.vhdx"
                     "?user=a&password=p%40ss")
    (tmp_path / "secondary").rename(tmp_path / "away")  # the share cannot be reached
    key, answer = await agent.answer(DOWNLOAD, body)
    assert (key, answer["result"]) == (DOWNLOAD_ANSWER, False), answer
    assert "image store's root \\\\10.1.1.1\\secondary," in answer["details"], answer
    assert "cannot be reached" in answer["details"], answer["details"]
    assert "p@ss" not in answer["details"], answer["details"]
    assert listing(pool) == {}
    (tmp_path / "away").rename(tmp_path / "secondary")  # back
    key, answer = await agent.answer(DOWNLOAD, body)
    assert (key, answer["result"]) == (DOWNLOAD_ANSWER, True), answer
    assert sorted(listing(pool)) == [answer["installPath"]]


async def test_download_fails_and_leaves_pool_empty_when_bz2_is_corrupt(
    agent: Running, tmp_path: Path
) -> None:
    pool = _pool(agent)
    _secondary(tmp_path, "t/bad.vhd.bz2").write_bytes(b"BZh91AY&SY" + b"\x00" * 4096)
    _, answer = await agent.answer(DOWNLOAD, _download("cifs://10.1.1.1/secondary/t/bad.vhd.bz2"))
    assert answer["result"] is False and answer["details"], answer
    assert listing(pool) == {}


# --- PrimaryStorageDownloadCommand from http(s) and nfs:// --------------------------------

NFS_STORE = "nfs://10.70.176.36/mnt/cshv3/secondarystorage"
NFS_TEMPLATE = "af39aa7f-2b12-37e1-86d3-e23f2f005101.vhdx"


@pytest.fixture
def web(tmp_path: Path) -> Iterator[FileServer]:
    """A web server on 127.0.0.1 serving ``tmp_path/web`` at ``/files/``."""
    (tmp_path / "web").mkdir()
    yield from serve(tmp_path / "web")


def _published(web: FileServer, name: str, data: bytes) -> str:
    path = web.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return web.url(f"/files/{name}")


def _mounted_secondary(running: Running) -> Path:
    """The emulated host's C:\\Secondary, the default local_secondary_storage_path."""
    return _pool(running, "Secondary")


def _nfs_download(url: str) -> dict[str, Any]:
    return {**_download(url), "secondaryStorageUrl": NFS_STORE}


@requires_tool("qemu-img")
async def test_download_streams_template_from_http_url_into_pool(
    agent: Running, web: FileServer, tmp_path: Path
) -> None:
    pool = _pool(agent)
    source = _disk(tmp_path, "tmpl.vhdx", 256 * MIB)
    url = _published(web, "template/tmpl/2/204/tmpl.vhdx", source.read_bytes())
    key, answer = await agent.answer(DOWNLOAD, _download(url + "?token=abc"))
    assert (key, answer["result"]) == (DOWNLOAD_ANSWER, True), answer
    assert list(listing(pool)) == [answer["installPath"]]
    assert answer["installPath"].endswith(".vhdx") and "\\" not in answer["installPath"]
    installed = pool / answer["installPath"]
    assert answer["templateSize"] == source.stat().st_size == installed.stat().st_size
    assert installed.read_bytes() == source.read_bytes()
    assert qemu_info(installed)["format"] == "vhdx"
    assert web.seen[-1][0] == "/files/template/tmpl/2/204/tmpl.vhdx?token=abc"


async def test_download_expands_compressed_template_when_url_path_names_bz2_or_gz(
    agent: Running, web: FileServer, tmp_path: Path
) -> None:
    pool = _pool(agent)
    raw = _disk(tmp_path, "sys.vhd", 64 * MIB).read_bytes()
    sizes = []
    for url in (_published(web, "t/sys.vhd.bz2", bz2.compress(raw)),
                _published(web, "t/sys.vhd.gz", gzip.compress(raw, 1))):
        _, answer = await agent.answer(DOWNLOAD, _download(url))
        assert answer["result"] is True, answer
        assert answer["installPath"].endswith(".vhd")
        assert (pool / answer["installPath"]).read_bytes() == raw
        sizes.append(answer["templateSize"])
    assert sizes == [len(raw), len(raw)] and len(listing(pool)) == 2


async def test_download_follows_redirects_to_the_template(
    agent: Running, web: FileServer, tmp_path: Path
) -> None:
    pool = _pool(agent)
    raw = _disk(tmp_path, "r.vhdx", 32 * MIB).read_bytes()
    _published(web, "t/r.vhdx", raw)
    _, answer = await agent.answer(DOWNLOAD, _download(web.url("/redirect/3/t/r.vhdx")))
    assert answer["result"] is True, answer
    assert (pool / answer["installPath"]).read_bytes() == raw


async def test_download_names_file_by_content_when_url_gives_other_disk_format(
    agent: Running, web: FileServer, tmp_path: Path
) -> None:
    pool = _pool(agent)
    raw = _disk(tmp_path, "really.vhd", 32 * MIB).read_bytes()
    url = _published(web, "t/misnamed.vhdx", raw)
    _, answer = await agent.answer(DOWNLOAD, _download(url))
    assert answer["result"] is True, answer
    assert answer["installPath"].endswith(".vhd")
    assert list(listing(pool)) == [answer["installPath"]]
    assert (pool / answer["installPath"]).read_bytes() == raw


async def test_download_over_https_succeeds_only_when_certificate_is_trusted(
    agent: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = _pool(agent)
    raw = _disk(tmp_path, "s.vhdx", 32 * MIB).read_bytes()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "s.vhdx").write_bytes(raw)
    for server in serve(tmp_path / "site", tls_server_context(tmp_path / "tls")):
        url = server.url("/files/s.vhdx")
        _, refused = await agent.answer(DOWNLOAD, _download(url))
        assert refused["result"] is False and "is not trusted" in refused["details"], refused
        assert listing(pool) == {}
        monkeypatch.setenv("SSL_CERT_FILE", str(identity(tmp_path / "tls").cert_path))
        _, answer = await agent.answer(DOWNLOAD, _download(url))
    assert answer["result"] is True, answer
    assert (pool / answer["installPath"]).read_bytes() == raw


@pytest.mark.parametrize(("name", "data", "path", "expected"), [
    ("t/gone.vhdx", b"", "/files/t/missing.vhdx", "does not exist on the server (HTTP 404"),
    ("t/notes.vhdx", b"not a disk\n" * 1000, "/files/t/notes.vhdx", "is not a VHD or VHDX disk"),
    ("t/bad.vhd.bz2", b"BZh91AY&SY" + b"\x00" * 4096, "/files/t/bad.vhd.bz2",
     "is not a valid bzip2 stream"),
    ("t/text.vhd.gz", gzip.compress(b"hello" * 1000), "/files/t/text.vhd.gz",
     "is not a VHD or VHDX disk"),
    ("t/disk.qcow2", b"QFI\xfb", "/files/t/disk.qcow2", "is not a .vhd or .vhdx template"),
    ("t/x.vhdx", b"", "/status/500/x.vhdx", "the server failed to send"),
    ("t/x.vhdx", b"", "/cut/x.vhdx", "closed the connection after 10 of 100000 bytes"),
])
async def test_download_fails_and_leaves_pool_empty_when_http_source_is_bad(
    agent: Running, web: FileServer, name: str, data: bytes, path: str, expected: str
) -> None:
    pool = _pool(agent)
    (pool / "keep.vhdx").write_bytes(b"existing")
    before = listing(pool)
    _published(web, name, data)
    url = web.url(path).replace("://", "://cloud:s3cret@", 1)
    _, answer = await agent.answer(DOWNLOAD, _download(url))
    assert answer["result"] is False and expected in answer["details"], answer
    assert "s3cret" not in answer["details"] and "\n" not in answer["details"]
    assert listing(pool) == before


@pytest.mark.parametrize("suffix", [".vhd", ".vhdx"])
async def test_download_refuses_a_disk_cut_short_when_the_body_had_no_length(
    agent: Running, web: FileServer, tmp_path: Path, suffix: str
) -> None:
    """A body without Content-Length ends when the connection does, so a dropped
    connection looks like the end of the file: the disk itself must be whole (a VHD ends
    with its footer, a VHDX holds every region it lists) before it becomes a template."""
    pool = _pool(agent)
    disk = _disk(tmp_path, f"cut{suffix}", 64 * MIB)
    vhd.write_data(disk, 0, b"boot" * 1024)
    vhd.write_data(disk, 64 * MIB - 4096, b"last" * 1024)
    raw = disk.read_bytes()
    _published(web, f"t/cut{suffix}", raw)
    _, answer = await agent.answer(DOWNLOAD, _download(
        web.url(f"/unsized/{len(raw) - 4096}/t/cut{suffix}")))
    assert answer["result"] is False and "is cut short" in answer["details"], answer
    assert listing(pool) == {}
    _, whole = await agent.answer(DOWNLOAD, _download(
        web.url(f"/unsized/{len(raw)}/t/cut{suffix}")))
    assert whole["result"] is True, whole
    assert (pool / whole["installPath"]).read_bytes() == raw


@pytest.mark.parametrize("suffix", [".vhd", ".vhdx"])
async def test_download_refuses_a_differencing_disk_whose_parent_lies_elsewhere(
    agent: Running, web: FileServer, tmp_path: Path, suffix: str
) -> None:
    """A differencing disk names its parent by path: a template downloaded as one, and every
    volume cloned from it, would read whatever file the server chose on the host (another
    volume of the pool, say) or fail once deployed when there is none."""
    pool = _pool(agent)
    victim = _disk(pool, f"other-tenant{suffix}", 64 * MIB)
    before = listing(pool)
    fmt = vhd.DiskFormat.VHD if suffix == ".vhd" else vhd.DiskFormat.VHDX
    child = tmp_path / f"child{suffix}"
    vhd.create(child, fmt, vhd.DiskType.DIFFERENCING, 0, parent=victim,
               parent_locator=f"C:\\pool\\other-tenant{suffix}")
    url = _published(web, f"t/evil{suffix}", child.read_bytes())
    _, answer = await agent.answer(DOWNLOAD, _download(url))
    assert answer["result"] is False and "is a differencing disk" in answer["details"], answer
    assert listing(pool) == before


async def test_download_fails_with_clear_details_when_server_is_unreachable(
    agent: Running,
) -> None:
    pool = _pool(agent)
    url = f"http://127.0.0.1:{free_port()}/t/x.vhdx"
    _, answer = await agent.answer(DOWNLOAD, _download(url))
    assert answer["result"] is False and "connection refused" in answer["details"], answer
    assert listing(pool) == {}


async def test_download_reads_nfs_template_below_mounted_secondary_storage(
    agent: Running, tmp_path: Path
) -> None:
    pool, mounted = _pool(agent), _mounted_secondary(agent)
    folder = mounted / "template" / "tmpl" / "2" / "204"
    folder.mkdir(parents=True)
    source = _disk(folder, NFS_TEMPLATE, 64 * MIB)
    (mounted / NFS_TEMPLATE).write_bytes(b"a different file of the same name")
    url = f"{NFS_STORE}/template/tmpl//2/204//{NFS_TEMPLATE}"
    _, answer = await agent.answer(DOWNLOAD, _nfs_download(url))
    assert answer["result"] is True, answer
    assert answer["templateSize"] == source.stat().st_size
    assert (pool / answer["installPath"]).read_bytes() == source.read_bytes()
    assert source.exists()


async def test_download_reads_nfs_template_by_file_name_as_the_csharp_agent_does(
    agent: Running,
) -> None:
    pool, mounted = _pool(agent), _mounted_secondary(agent)
    source = _disk(mounted, NFS_TEMPLATE, 32 * MIB)
    url = f"nfs://10.70.176.36/elsewhere/template/{NFS_TEMPLATE}"
    _, answer = await agent.answer(DOWNLOAD, _nfs_download(url))
    assert answer["result"] is True, answer
    assert (pool / answer["installPath"]).read_bytes() == source.read_bytes()


@pytest.mark.parametrize(("url", "expected"), [
    (f"{NFS_STORE}/template/../../../outside/{NFS_TEMPLATE}", "climbs out"),
    (f"{NFS_STORE}/template/tmpl/2/204/absent.vhdx", "is not in local_secondary_storage_path"),
    (f"{NFS_STORE}/template/tmpl/2/204/notes.txt", "not a .vhd or .vhdx"),
    ("nfs://10.70.176.36", "names no file"),
])
async def test_download_fails_and_leaves_pool_empty_when_nfs_source_is_bad(
    agent: Running, url: str, expected: str
) -> None:
    pool, mounted = _pool(agent), _mounted_secondary(agent)
    _disk(_pool(agent, "outside"), NFS_TEMPLATE, 32 * MIB)
    (mounted / "notes.txt").write_text("not a disk")
    _, answer = await agent.answer(DOWNLOAD, _nfs_download(url))
    assert answer["result"] is False and expected in answer["details"], answer
    assert listing(pool) == {}


async def test_download_fails_when_local_secondary_storage_path_is_not_configured(
    tmp_path: Path,
) -> None:
    config = config_with_shares(tmp_path, {}, local_secondary_storage_path="")
    async with serving(config) as running:
        pool = _pool(running)
        _, answer = await running.answer(DOWNLOAD, _nfs_download(f"{NFS_STORE}/{NFS_TEMPLATE}"))
    assert answer["result"] is False, answer
    assert "local_secondary_storage_path, which is not configured" in answer["details"]
    assert listing(pool) == {}


@pytest.mark.parametrize(("fields", "expected"), [
    ({"url": "ftp://10.1.1.1/t.vhdx"}, "'ftp' is not supported"),
    ({"url": "http:///t.vhdx"}, "names no host"),
    ({"localPath": "C:\\pool\\..\\..\\Windows"}, "climbs out"),
    ({"localPath": None}, "localPath is required"),
    ({"url": ["http://127.0.0.1/t.vhdx"]}, "url"),
])
async def test_download_fails_and_touches_nothing_when_command_is_malformed(
    agent: Running, web: FileServer, fields: dict[str, Any], expected: str
) -> None:
    pool = _pool(agent)
    body = _download(_published(web, "t/ok.vhdx", b"vhdxfile" + bytes(4096)))
    body.update(fields)
    body = {key: value for key, value in body.items() if value is not None}
    _, answer = await agent.answer(DOWNLOAD, body)
    assert answer["result"] is False and expected in answer["details"], answer
    assert listing(pool) == {} and web.seen == []
