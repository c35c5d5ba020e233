"""A template in a primary pool outlives the linked clones made from it: the legacy
DestroyCommand (the management server's eviction of a template it deems unused in a pool)
and a repeated template download refuse while a disk file beside the template names it as
its parent, whatever VM (stopped, or none) uses that disk. Checked over real HTTPS on an
emulated host, on a local pool and on an SMB pool, on the answers and on the files."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cloudstack import names
from hyperv_agent.config import load_config
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.files import EmulatedFiles
from hyperv_agent.hostfs.children import children_of
from tests.diskfiles import listing
from tests.e2e.conftest import Running, config_with_shares, serving
from tests.e2e.test_volume_commands import _vm_with

POOL_UUID = "5fe2bad3-d785-394e-9949-89786b8a63d2"
SMB_POOL_UUID = "5d719485-f8b3-3fc2-b05a-8f63a912e709"  # 31_ModifyStoragePoolCommand_SMB
SMB_PATH = "/primary?user=administrator&password=Passw0rd&domain=WORKGROUP"
TEMPLATE_TO, VOLUME_TO = names.TEMPLATE_OBJECT_TO, names.VOLUME_OBJECT_TO
PRIMARY_TO = names.PRIMARY_DATA_STORE_TO
MIB = 1 << 20


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Running]:
    """The agent on an emulated host with a local pool C:\\pool and an SMB pool share
    \\\\10.1.1.1\\primary, and an image store share \\\\10.1.1.1\\secondary."""
    for name in ("primary", "secondary"):
        (tmp_path / name).mkdir()
    config = config_with_shares(tmp_path, {"\\\\10.1.1.1\\primary": tmp_path / "primary",
                                           "\\\\10.1.1.1\\secondary": tmp_path / "secondary"},
                                "local_storage_path = 'C:\\pool'")
    async with serving(config) as running:
        yield running


def _pool(running: Running) -> Path:
    folder = running.agent.config.agent.state_dir / "emulator" / "drives" / "C" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _local_store() -> dict[str, Any]:
    return {PRIMARY_TO: {"uuid": POOL_UUID, "id": 201, "host": "10.1.1.1",
                         "type": "Filesystem", "poolType": "Filesystem", "path": "C:\\pool",
                         "port": 0}}


def _smb_store() -> dict[str, Any]:
    return {PRIMARY_TO: {"uuid": SMB_POOL_UUID, "id": 2, "host": "10.1.1.1", "poolType": "SMB",
                         "path": SMB_PATH, "port": 445, "isManaged": False}}


def _disk(path: Path, size: int = 64 * MIB) -> Path:
    fmt = vhd.DiskFormat.VHD if path.suffix == ".vhd" else vhd.DiskFormat.VHDX
    vhd.create(path, fmt, vhd.DiskType.DYNAMIC, size)
    return path


async def _clone(running: Running, store: dict[str, Any], template: str, volume: str,
                 fmt: str = "VHDX") -> None:
    """A root volume made from the template as the management server has it made: a
    CopyCommand, which the agent answers with a linked clone in the same pool."""
    body = {"srcTO": {TEMPLATE_TO: {"path": template, "uuid": template, "id": 206,
                                    "format": fmt, "imageDataStore": store,
                                    "hypervisorType": "Hyperv", "name": template}},
            "destTO": {VOLUME_TO: {"uuid": volume, "volumeType": "ROOT", "dataStore": store,
                                   "name": "ROOT-5", "format": fmt, "volumeId": 10,
                                   "id": 10}},
            "wait": 10800}
    key, answer = await running.answer(names.COPY_COMMAND, body)
    assert (key, answer["result"]) == (names.COPY_CMD_ANSWER, True), answer


def _evict(path: str, pool_type: str = "Filesystem", pool_uuid: str = POOL_UUID,
           mount_point: str = "C:\\pool") -> dict[str, Any]:
    """The DestroyCommand TemplateManagerImpl.evictTemplateFromStoragePool sends: the
    template_spool_ref's install path, the pool's type, uuid and path."""
    return {"volume": {"id": 9, "storagePoolType": pool_type, "storagePoolUuid": pool_uuid,
                       "mountPoint": mount_point, "path": path, "size": 1073741824},
            "contextMap": {}, "wait": 0}


async def _refused(running: Running, body: dict[str, Any], *expected: str) -> str:
    key, answer = await running.answer(names.DESTROY_COMMAND, body)
    assert (key, answer["result"]) == (names.ANSWER, False), answer
    for text in expected:
        assert text in answer["details"], answer["details"]
    return str(answer["details"])


async def test_template_is_kept_while_a_stopped_vms_linked_clone_names_it(
    agent: Running,
) -> None:
    pool = _pool(agent)
    _disk(pool / "tmpl-1.vhdx")
    await _clone(agent, _local_store(), "tmpl-1", "root-a")
    await _vm_with(agent.emulator, "i-2-5-VM", "C:\\pool\\root-a.vhdx", scsi=False,
                   running=False)
    before = listing(pool)
    await _refused(agent, _evict("tmpl-1"), "C:\\pool\\tmpl-1.vhdx is the parent of 1 ",
                   "C:\\pool\\root-a.vhdx", "the file was kept")
    assert listing(pool) == before
    assert vhd.read_info(pool / "root-a.vhdx").parent_path == "C:\\pool\\tmpl-1.vhdx"


async def test_a_clone_of_a_template_cut_short_fails_naming_it_by_its_host_path(
    agent: Running,
) -> None:
    """A template in the pool cut short behind the agent's back (a copy by hand that did
    not finish): Hyper-V makes no linked clone of it, and its error names the template by
    the path the host knows it by, never a file of the machine behind the emulated host;
    no volume is left in the pool and the template is as it was."""
    pool = _pool(agent)
    template = _disk(pool / "tmpl-1.vhdx")
    template.write_bytes(template.read_bytes()[:4096])
    before = listing(pool)
    body = {"srcTO": {TEMPLATE_TO: {"path": "tmpl-1", "uuid": "tmpl-1", "id": 206,
                                    "format": "VHDX", "imageDataStore": _local_store(),
                                    "hypervisorType": "Hyperv", "name": "tmpl-1"}},
            "destTO": {VOLUME_TO: {"uuid": "root-a", "volumeType": "ROOT",
                                   "dataStore": _local_store(), "name": "ROOT-5",
                                   "format": "VHDX", "volumeId": 10, "id": 10}},
            "wait": 10800}
    key, answer = await agent.answer(names.COPY_COMMAND, body)
    assert (key, answer["result"]) == (names.COPY_CMD_ANSWER, False), answer
    assert ("C:\\pool\\tmpl-1.vhdx: the VHDX header at offset 65536 is cut short"
            in answer["details"]), answer["details"]
    assert str(agent.agent.config.agent.state_dir) not in answer["details"], answer
    assert listing(pool) == before


@pytest.mark.parametrize("copy", ["fixed (FAT)", "grown dynamic"])
async def test_eviction_waits_for_a_full_copy_still_reading_the_template(
    agent: Running, copy: str,
) -> None:
    """A full copy of a template (a FAT offering's fixed disk, or a root disk larger than
    its template) reads the template for as long as Hyper-V's job runs; the eviction the
    management server sends meanwhile waits for the copy, as it waits for linked clones
    being made, instead of deleting the file Hyper-V is reading."""
    pool = _pool(agent)
    _disk(pool / "tmpl-1.vhdx", 32 * MIB)
    dest: dict[str, Any] = {"uuid": "root-a", "volumeType": "ROOT", "dataStore": _local_store(),
                            "name": "ROOT-5", "format": "VHDX", "volumeId": 10, "id": 10}
    if copy == "fixed (FAT)":
        dest["provisioningType"] = "FAT"
        agent.emulator.faults.slow_next_job("ConvertVirtualHardDisk", 0.6)
    else:
        dest["size"] = 64 * MIB
        agent.emulator.faults.slow_next_job("ResizeVirtualHardDisk", 0.6)
    body = {"srcTO": {TEMPLATE_TO: {"path": "tmpl-1", "uuid": "tmpl-1", "id": 206,
                                    "format": "VHDX", "imageDataStore": _local_store(),
                                    "hypervisorType": "Hyperv", "name": "tmpl-1"}},
            "destTO": {VOLUME_TO: dest}, "wait": 10800}
    finished: list[str] = []

    async def copied() -> dict[str, Any]:
        answer = await agent.answer(names.COPY_COMMAND, body)
        finished.append("copy")
        return answer[1]

    async def evicted() -> dict[str, Any]:
        await asyncio.sleep(0.2)  # the copy's job has begun
        answer = await agent.answer(names.DESTROY_COMMAND, _evict("tmpl-1"))
        finished.append("eviction")
        return answer[1]

    made, gone = await asyncio.gather(copied(), evicted())
    assert made["result"] is True, made
    assert gone["result"] is True, gone  # a full copy does not name the template
    assert finished == ["copy", "eviction"]
    assert sorted(listing(pool)) == ["root-a.vhdx"]
    assert vhd.read_info(pool / "root-a.vhdx").parent_path is None


async def test_a_sparse_volume_stands_alone_and_lets_its_template_be_evicted(
    agent: Running,
) -> None:
    """A root volume of a SPARSE offering is a dynamic full copy of its template, not a
    linked clone: the management server's eviction of the template succeeds, and the
    volume still holds the template's data without it."""
    pool = _pool(agent)
    vhd.write_data(_disk(pool / "tmpl-1.vhdx"), 0, b"template os")
    body = {"srcTO": {TEMPLATE_TO: {"path": "tmpl-1", "uuid": "tmpl-1", "id": 206,
                                    "format": "VHDX", "imageDataStore": _local_store(),
                                    "hypervisorType": "Hyperv", "name": "tmpl-1"}},
            "destTO": {VOLUME_TO: {"uuid": "root-a", "volumeType": "ROOT",
                                   "dataStore": _local_store(), "name": "ROOT-5",
                                   "format": "VHDX", "volumeId": 10, "id": 10,
                                   "provisioningType": "SPARSE"}},
            "wait": 10800}
    key, answer = await agent.answer(names.COPY_COMMAND, body)
    assert (key, answer["result"]) == (names.COPY_CMD_ANSWER, True), answer
    key, answer = await agent.answer(names.DESTROY_COMMAND, _evict("tmpl-1"))
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert sorted(listing(pool)) == ["root-a.vhdx"]
    info = vhd.read_info(pool / "root-a.vhdx")
    assert (info.type, info.parent_path) == (vhd.DiskType.DYNAMIC, None)
    assert vhd.read_data(pool / "root-a.vhdx", 0, 11) == b"template os"


async def test_a_running_vms_clone_unreadable_to_the_agent_keeps_its_template_by_name(
    agent: Running,
) -> None:
    """A running VM's worker shares no access to its disk, so the clone's headers cannot
    be read: Hyper-V is asked for its parent instead, and the refusal names the clone and
    its VM (Windows would refuse the delete too, naming neither). An unreadable disk that
    Hyper-V reports as standing on another template does not keep this one."""
    pool = _pool(agent)
    _disk(pool / "tmpl-1.vhdx")
    _disk(pool / "tmpl-2.vhdx")
    await _clone(agent, _local_store(), "tmpl-1", "root-a")
    await _vm_with(agent.emulator, "i-2-5-VM", "C:\\pool\\root-a.vhdx", scsi=False,
                   running=True)
    before = listing(pool)
    await _refused(agent, _evict("tmpl-1"), "C:\\pool\\tmpl-1.vhdx is the parent of 1 ",
                   "C:\\pool\\root-a.vhdx, held open by the running VM i-2-5-VM",
                   "1 could not be read", "the file was kept")
    assert listing(pool) == before

    key, answer = await agent.answer(names.DESTROY_COMMAND, _evict("tmpl-2"))
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert "1 could not be read" in answer["details"], answer["details"]
    assert "e.g. C:\\pool\\root-a.vhdx" in answer["details"], answer["details"]
    assert not (pool / "tmpl-2.vhdx").exists()
    assert (pool / "tmpl-1.vhdx").exists()


async def test_vhd_template_is_kept_while_detached_clones_name_it_and_evicted_after(
    agent: Running,
) -> None:
    pool = _pool(agent)
    _disk(pool / "tmpl-2.vhd")
    for volume in ("data-a", "data-b"):
        await _clone(agent, _local_store(), "tmpl-2", volume, fmt="VHD")
    before = listing(pool)
    await _refused(agent, _evict("C:\\pool\\tmpl-2.vhd"), "is the parent of 2 ",
                   "read the headers of 2 of 2 other disk files in C:\\pool (2 differencing)")
    assert listing(pool) == before
    for volume in ("data-a", "data-b"):
        (pool / f"{volume}.vhd").unlink()  # the volumes are expunged
    key, answer = await agent.answer(names.DESTROY_COMMAND, _evict("tmpl-2"))
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert not (pool / "tmpl-2.vhd").exists()


async def test_unrelated_disks_and_clones_of_another_template_do_not_keep_a_template(
    agent: Running,
) -> None:
    pool = _pool(agent)
    _disk(pool / "tmpl-1.vhdx")
    _disk(pool / "tmpl-2.vhdx")
    await _clone(agent, _local_store(), "tmpl-2", "root-of-2")
    _disk(pool / "data.vhdx")
    _disk(pool / "old.vhd")
    (pool / "notes.txt").write_text("tmpl-1.vhdx")
    key, answer = await agent.answer(names.DESTROY_COMMAND, _evict("tmpl-1"))
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert "read the headers of 4 of 4 other disk files in C:\\pool (1 differencing)" \
        in answer["details"], answer["details"]
    assert not (pool / "tmpl-1.vhdx").exists()
    assert {"tmpl-2.vhdx", "root-of-2.vhdx", "data.vhdx", "old.vhd", "notes.txt"} \
        <= set(listing(pool))


async def test_a_clone_naming_the_template_by_either_locator_alone_keeps_it(
    agent: Running, tmp_path: Path,
) -> None:
    """Hyper-V finds a parent by its relative path from the child's folder, or by its
    absolute path, compared without regard to case: either alone keeps the template."""
    pool = _pool(agent)
    template = _disk(pool / "tmpl-1.vhdx")
    # the absolute path alone (long form, other case); the relative one leads elsewhere
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(template, elsewhere / "copy.vhdx")
    vhd.create(elsewhere / "abs.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0,
               parent=elsewhere / "copy.vhdx", parent_locator="\\\\?\\C:\\POOL\\Tmpl-1.VHDX")
    shutil.move(elsewhere / "abs.vhdx", pool / "abs.vhdx")
    await _refused(agent, _evict("tmpl-1"), "is the parent of 1 ", "C:\\pool\\abs.vhdx")
    (pool / "abs.vhdx").unlink()
    # the relative path alone: the absolute one names the share by another server name
    vhd.create(pool / "rel.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0,
               parent=template, parent_locator="\\\\hv-store.example\\pool\\tmpl-1.vhdx")
    await _refused(agent, _evict("tmpl-1"), "is the parent of 1 ", "C:\\pool\\rel.vhdx")
    assert template.is_file()


async def test_template_on_an_smb_pool_is_kept_while_a_clone_names_it(
    agent: Running, tmp_path: Path,
) -> None:
    key, answer = await agent.answer(names.MODIFY_STORAGE_POOL_COMMAND, {
        "add": True, "pool": {"id": 2, "uuid": SMB_POOL_UUID, "host": "10.1.1.1",
                              "path": SMB_PATH, "port": 445, "type": "SMB"},
        "localPath": f"/mnt//{SMB_POOL_UUID}", "details": {}, "wait": 300})
    assert answer["result"] is True, answer
    share = tmp_path / "primary"
    _disk(share / "tmpl-3.vhdx")
    await _clone(agent, _smb_store(), "tmpl-3", "root-smb")
    evict = _evict("tmpl-3", "SMB", SMB_POOL_UUID, SMB_PATH)
    details = await _refused(agent, evict, "\\\\10.1.1.1\\primary\\tmpl-3.vhdx is the parent "
                             "of 1 ", "\\\\10.1.1.1\\primary\\root-smb.vhdx")
    assert "Passw0rd" not in details
    assert (share / "tmpl-3.vhdx").is_file()
    (share / "root-smb.vhdx").unlink()
    key, answer = await agent.answer(names.DESTROY_COMMAND, evict)
    assert (key, answer["result"]) == (names.ANSWER, True), answer
    assert not (share / "tmpl-3.vhdx").exists()


async def test_a_clone_another_host_s_vm_holds_keeps_its_smb_template_naming_no_process(
    tmp_path: Path,
) -> None:
    """A template in the SMB pool that a VM running on another host of the cluster stands
    on (its linked clone open there, so this host can read neither it nor, through its
    own Hyper-V, find a VM holding it): the eviction is refused, and the answer does not
    send the operator after a process other than a VM, but names a VM of another host as
    what may hold the clone."""
    share = tmp_path / "primary"
    share.mkdir()
    template = _disk(share / "tmpl-4.vhdx")
    vhd.create(share / "root-b.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0,
               parent=template, parent_locator="\\\\10.1.1.1\\primary\\tmpl-4.vhdx")
    (tmp_path / "HV-A.toml").write_text(f"""[emulator]
host_name = "HV-A"
cluster_dir = "{tmp_path / 'cluster'}"
[emulator.shares]
'\\\\10.1.1.1\\primary' = '{share}'
""")
    config = load_config(tmp_path / "HV-A.toml", state_dir=tmp_path / "HV-A",
                         backend="emulator", private_ip="10.1.1.21",
                         local_storage_path="C:\\pool")
    on_b = EmulatorCim.open(EmulatorConfig(
        state_dir=tmp_path / "HV-B", host_name="HV-B", private_ip="10.1.1.22",
        cluster_dir=tmp_path / "cluster", shares={"\\\\10.1.1.1\\primary": share}))
    try:
        await _vm_with(on_b, "i-2-7-VM", "\\\\10.1.1.1\\primary\\root-b.vhdx", scsi=True,
                       running=True)
        async with serving(config) as agent:
            _, answer = await agent.answer(names.MODIFY_STORAGE_POOL_COMMAND, {
                "add": True, "pool": {"id": 2, "uuid": SMB_POOL_UUID, "host": "10.1.1.1",
                                      "path": SMB_PATH, "port": 445, "type": "SMB"},
                "localPath": f"/mnt//{SMB_POOL_UUID}", "details": {}, "wait": 300})
            assert answer["result"] is True, answer
            details = await _refused(
                agent, _evict("tmpl-4", "SMB", SMB_POOL_UUID, SMB_PATH),
                "\\\\10.1.1.1\\primary\\tmpl-4.vhdx is the parent of 1 ",
                "\\\\10.1.1.1\\primary\\root-b.vhdx, held open by no VM of this host "
                "(a VM of another host reaching the pool, or another process)",
                "the file was kept")
            assert "a process other than a VM" not in details, details
        assert template.is_file()
    finally:
        await on_b.close()


async def test_download_over_a_template_a_stopped_vms_clone_names_fails_and_keeps_it(
    agent: Running, tmp_path: Path,
) -> None:
    """A repeated download to a template's path would replace the parent of a stopped
    VM's root disk (Windows refuses only while the VM runs): refused, both kept."""
    pool = _pool(agent)
    _disk(pool / "tmpl-1.vhdx")
    await _clone(agent, _local_store(), "tmpl-1", "root-a")
    _disk(tmp_path / "secondary" / "new.vhdx", 16 * MIB)
    before = listing(pool)
    body = {"srcTO": {TEMPLATE_TO: {"path": "new.vhdx", "id": 206, "format": "VHDX",
                                    "imageDataStore": {"com.cloud.agent.api.to.NfsTO": {
                                        "_url": "cifs://10.1.1.1/secondary", "_role": "Image"}},
                                    "hypervisorType": "Hyperv"}},
            "destTO": {TEMPLATE_TO: {"path": "tmpl-1", "id": 206, "format": "VHDX",
                                     "imageDataStore": _local_store(),
                                     "hypervisorType": "Hyperv"}},
            "wait": 10800}
    key, answer = await agent.answer(names.COPY_COMMAND, body)
    assert (key, answer["result"]) == (names.COPY_CMD_ANSWER, False), answer
    assert "is the parent of 1 " in answer["details"], answer["details"]
    assert "the earlier template was kept" in answer["details"]
    assert listing(pool) == before


async def test_a_search_out_of_time_is_incomplete(agent: Running) -> None:
    pool = _pool(agent)
    template = _disk(pool / "tmpl-1.vhdx")
    _disk(pool / "data.vhdx")
    files = EmulatedFiles(agent.emulator.host)
    found = await children_of(files, "C:\\pool\\tmpl-1.vhdx", ("C:\\pool",), budget_s=-1)
    assert (found.complete, found.checked, found.disks) == (False, 0, 1)
    assert "read the headers of 0 of 1 other disk files" in found.summary()
    found = await children_of(files, "C:\\pool\\tmpl-1.vhdx", ("C:\\pool",))
    assert (found.complete, found.children) == (True, ())
    assert template.is_file()


TEMPLATE_UUID = "5c4a0e1a-0b1e-4f57-9a55-7f3d9e3c2a01"  # 12_CopyCommand's template


def _download_body() -> dict[str, Any]:
    """The CopyCommand that copies a template from the image store into the local pool
    (12_CopyCommand): the destination names no path."""
    store = {"com.cloud.agent.api.to.NfsTO": {"_url": "cifs://10.1.1.1/secondary",
                                              "_role": "Image"}}
    template = {"uuid": TEMPLATE_UUID, "id": 201, "format": "VHDX",
                "hypervisorType": "Hyperv", "name": "201-2-6b8b7ab1"}
    return {"srcTO": {TEMPLATE_TO: {**template, "imageDataStore": store,
                                    "path": f"template/tmpl/2/201/{TEMPLATE_UUID}.vhdx"}},
            "destTO": {TEMPLATE_TO: {**template, "imageDataStore": _local_store()}},
            "wait": 10800}


def _image_store_template(tmp_path: Path) -> None:
    folder = tmp_path / "secondary" / "template" / "tmpl" / "2" / "201"
    folder.mkdir(parents=True)
    _disk(folder / f"{TEMPLATE_UUID}.vhdx")


async def _downloaded(running: Running) -> str:
    key, answer = await running.answer(names.COPY_COMMAND, _download_body())
    assert (key, answer["result"]) == (names.COPY_CMD_ANSWER, True), answer
    return str(answer["newData"][TEMPLATE_TO]["path"])


async def test_a_template_copy_sent_again_replaces_the_first_instead_of_leaving_it(
    agent: Running, tmp_path: Path,
) -> None:
    """The management server names no path for a template's copy into a pool, and copies
    anew after a lost answer or a timeout: the copies are named by the template's uuid,
    so the second replaces the first, which nothing names, and the pool holds one."""
    pool = _pool(agent)
    _image_store_template(tmp_path)
    first = await _downloaded(agent)
    again = await _downloaded(agent)
    assert first == again == TEMPLATE_UUID
    assert sorted(listing(pool)) == [f"{TEMPLATE_UUID}.vhdx"]


async def test_a_template_copy_over_an_earlier_one_with_clones_gets_a_name_of_its_own(
    agent: Running, tmp_path: Path,
) -> None:
    """An earlier copy of the template whose linked clones name it is kept as it is: the
    new copy gets a GUID of its own, and the clone keeps its parent."""
    pool = _pool(agent)
    _image_store_template(tmp_path)
    first = await _downloaded(agent)
    await _clone(agent, _local_store(), first, "root-a")
    again = await _downloaded(agent)
    assert again != first
    assert sorted(listing(pool)) == sorted([f"{first}.vhdx", f"{again}.vhdx", "root-a.vhdx"])
    assert vhd.read_info(pool / "root-a.vhdx").parent_path == f"C:\\pool\\{first}.vhdx"


async def test_a_template_copy_over_one_with_clones_in_the_other_format_gets_a_name_of_its_own(
    agent: Running, tmp_path: Path,
) -> None:
    """A template registered as VHDX whose file is a VHD lands in the pool as ``.vhd``
    (renamed to its content's format): a copy sent again, under the ``.vhdx`` name the
    format gives, would be renamed over the first, the parent of its linked clones. It
    gets a GUID of its own instead, and the clone keeps its parent as it was."""
    pool = _pool(agent)
    folder = tmp_path / "secondary" / "template" / "tmpl" / "2" / "201"
    folder.mkdir(parents=True)
    _disk(folder / "upload.vhd").rename(folder / f"{TEMPLATE_UUID}.vhdx")
    first = await _downloaded(agent)
    await _clone(agent, _local_store(), first, "root-a", fmt="VHD")
    parent = pool / f"{first}.vhd"
    stamp = parent.stat().st_mtime_ns, parent.stat().st_ino
    again = await _downloaded(agent)
    assert again != first
    assert sorted(listing(pool)) == sorted([f"{first}.vhd", f"{again}.vhd", "root-a.vhd"])
    assert (parent.stat().st_mtime_ns, parent.stat().st_ino) == stamp  # not replaced
    assert vhd.read_info(pool / "root-a.vhd").parent_path == f"C:\\pool\\{first}.vhd"
