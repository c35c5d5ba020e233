"""GetVolumeStatsCommand over real HTTPS on an emulated host: the sizes of a pool's volumes,
by the locators the management server sends (each volume's path), read from the files and
their headers, with Hyper-V asked only about the disks a running VM holds open.

The bodies are shaped as CloudStack 4.22's GetVolumeStatsCommand serialises (its fields
``volumeUuids``, ``poolType``, ``poolUuid`` and Command's), which
``UserVmManagerImpl.getVolumeStatistics`` sends every ``volume.stats.interval`` with
``wait`` set from ``stats.timeout`` (60 s by default)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cloudstack import names
from hyperv_agent.emulator import vhd
from hyperv_agent.handlers import datapaths, volumes
from hyperv_agent.hostfs import images
from tests.e2e.conftest import STARTUP_REQUEST, Running
from tests.e2e.test_template_clones import (
    SMB_PATH,
    SMB_POOL_UUID,
    _clone,
    _local_store,
    _pool,
    _smb_store,
    agent,
)
from tests.e2e.test_volume_commands import _vm_with

__all__ = ["agent"]  # the fixture: the agent with a local pool C:\pool and an SMB pool

MIB = 1 << 20
MODIFY = "com.cloud.agent.api.ModifyStoragePoolCommand"


def _asked(pool_uuid: str, pool_type: str, locators: list[str]) -> dict[str, Any]:
    return {"volumeUuids": locators, "poolType": pool_type, "poolUuid": pool_uuid,
            "contextMap": {}, "wait": 60, "bypassHostMaintenance": False}


async def _stats(running: Running, body: dict[str, Any]) -> dict[str, Any]:
    key, answer = await running.answer(names.GET_VOLUME_STATS_COMMAND, body)
    assert key == names.GET_VOLUME_STATS_ANSWER, answer
    return answer


async def _register_smb(running: Running) -> None:
    _, answer = await running.answer(MODIFY, {"add": True, "pool": {
        "type": "SMB", "host": "10.1.1.1", "port": 445, "path": SMB_PATH,
        "uuid": SMB_POOL_UUID}, "localPath": f"/mnt//{SMB_POOL_UUID}"})
    assert answer["result"] is True, answer


async def _local_pool_uuid(running: Running) -> str:
    """The local pool's uuid, as the startup reply reports it to the management server."""
    status, data = await running.post(names.STARTUP_COMMAND, STARTUP_REQUEST)
    assert status == 200, data
    return str(data[1]["com.cloud.agent.api.StartupStorageCommand"]["poolInfo"]["uuid"])


def _entry(folder: Path, locator: str, name: str, virtual: int) -> dict[str, Any]:
    return {"volumeUuid": locator, "physicalsize": (folder / name).stat().st_size,
            "virtualSize": virtual}


async def test_an_smb_pools_volumes_are_measured_from_their_files_without_hyper_v(
    agent: Running, tmp_path: Path,
) -> None:
    """Each locator gets its file's length and its header's size: a dynamic VHDX with data
    in it, a linked clone (its own file, not its template's), a fixed VHD the C# agent
    made (a bare uuid found by its extension), a name given with its extension in other
    case. A locator of no file is left out, the details naming it."""
    await _register_smb(agent)
    share = tmp_path / "primary"
    vhd.create(share / "tmpl-1.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 64 * MIB)
    vhd.write_data(share / "tmpl-1.vhdx", 0, b"t" * (4 * MIB))
    await _clone(agent, _smb_store(), "tmpl-1", "root-a")
    vhd.create(share / "data-b.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 100 * MIB)
    vhd.write_data(share / "data-b.vhdx", 8 * MIB, b"d" * (3 * MIB))
    vhd.create(share / "legacy-c.vhd", vhd.DiskFormat.VHD, vhd.DiskType.FIXED, 16 * MIB)
    before = agent.emulator.round_trips()
    answer = await _stats(agent, _asked(SMB_POOL_UUID, "SMB",
                                        ["root-a", "data-b", "legacy-c", "LEGACY-C.VHD",
                                         "gone-1"]))
    spent = agent.emulator.round_trips() - before
    assert answer["result"] is True, answer
    assert (answer["poolUuid"], answer["poolType"]) == (SMB_POOL_UUID, "SMB")
    assert answer["volumeStats"] == {
        "root-a": _entry(share, "root-a", "root-a.vhdx", 64 * MIB),
        "data-b": _entry(share, "data-b", "data-b.vhdx", 100 * MIB),
        "legacy-c": _entry(share, "legacy-c", "legacy-c.vhd", 16 * MIB),
        "LEGACY-C.VHD": _entry(share, "LEGACY-C.VHD", "legacy-c.vhd", 16 * MIB),
    }
    stats = answer["volumeStats"]
    assert stats["root-a"]["physicalsize"] < (share / "tmpl-1.vhdx").stat().st_size
    assert stats["data-b"]["physicalsize"] > 3 * MIB  # the blocks written are in the file
    assert stats["legacy-c"]["physicalsize"] > 16 * MIB  # a fixed disk holds it all
    assert "4 volume(s)" in answer["details"] and "1 left out" in answer["details"]
    assert "'gone-1': no such disk file in the pool" in answer["details"]
    assert spent.calls == 0, spent  # files and headers alone


async def test_a_running_vms_volume_is_measured_through_hyper_v_in_one_call(
    agent: Running,
) -> None:
    """A running VM's worker shares no access to its disk, so its header cannot be read:
    Hyper-V is asked for that disk alone; the other volume is read from its file. The
    local pool is found by the uuid the startup reply gave it."""
    pool_uuid = await _local_pool_uuid(agent)
    pool = _pool(agent)
    vhd.create(pool / "tmpl-1.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 64 * MIB)
    await _clone(agent, _local_store(), "tmpl-1", "root-a")
    vhd.create(pool / "data-b.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 32 * MIB)
    await _vm_with(agent.emulator, "i-2-5-VM", "C:\\pool\\root-a.vhdx", scsi=False,
                   running=True)
    before = agent.emulator.round_trips()
    answer = await _stats(agent, _asked(pool_uuid, "Filesystem", ["root-a", "data-b"]))
    spent = agent.emulator.round_trips() - before
    assert answer["result"] is True, answer
    assert answer["volumeStats"] == {
        "root-a": _entry(pool, "root-a", "root-a.vhdx", 64 * MIB),
        "data-b": _entry(pool, "data-b", "data-b.vhdx", 32 * MIB),
    }
    assert spent["invoke:GetVirtualHardDiskSettingData"] == 1 and spent.calls == 1, spent


async def test_hundreds_of_volumes_cost_no_hyper_v_round_trip(agent: Running) -> None:
    """The command names every Ready volume of the host's VMs on the pool, every
    interval: one listing of the pool and the files' headers, no Hyper-V call."""
    pool_uuid = await _local_pool_uuid(agent)
    pool = _pool(agent)
    locators = [f"vol-{number:03}" for number in range(200)]
    for number, locator in enumerate(locators):
        fmt = vhd.DiskFormat.VHD if number % 2 else vhd.DiskFormat.VHDX
        suffix = ".vhd" if number % 2 else ".vhdx"
        vhd.create(pool / (locator + suffix), fmt, vhd.DiskType.DYNAMIC, (number + 1) * MIB)
    before = agent.emulator.round_trips()
    answer = await _stats(agent, _asked(pool_uuid, "Filesystem", locators))
    spent = agent.emulator.round_trips() - before
    assert answer["result"] is True, answer
    assert sorted(answer["volumeStats"]) == locators
    assert [answer["volumeStats"][locator]["virtualSize"] for locator in locators] == [
        (number + 1) * MIB for number in range(200)]
    assert spent.calls == 0, spent


async def test_volumes_are_measured_a_few_at_a_time(
    agent: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The MS names every volume of the pool each minute: they are measured at most
    ``MEASURED_AT_ONCE`` at a time (a host of a thousand running VMs would otherwise get a
    thousand Hyper-V calls at once), and still all of them."""
    pool_uuid = await _local_pool_uuid(agent)
    pool = _pool(agent)
    locators = [f"vol-{number:02}" for number in range(40)]
    for locator in locators:
        vhd.create(pool / f"{locator}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, MIB)
    reading, most = 0, 0
    read_header = images.content_shape

    async def slow_header(*args: Any, **kwargs: Any) -> Any:
        nonlocal reading, most
        reading += 1
        most = max(most, reading)
        try:
            await asyncio.sleep(0.01)
            return await read_header(*args, **kwargs)
        finally:
            reading -= 1

    monkeypatch.setattr(images, "content_shape", slow_header)
    answer = await _stats(agent, _asked(pool_uuid, "Filesystem", locators))
    assert answer["result"] is True, answer
    assert sorted(answer["volumeStats"]) == locators
    assert most == volumes.MEASURED_AT_ONCE, most


async def test_the_folders_locators_name_are_listed_a_few_at_a_time(
    agent: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Locators in many folders of the pool: each folder is listed once, at most
    ``LISTED_AT_ONCE`` at a time, and every volume is still found."""
    pool_uuid = await _local_pool_uuid(agent)
    pool = _pool(agent)
    locators = [f"d{number:02}\\vol" for number in range(30)]
    for number in range(30):
        (pool / f"d{number:02}").mkdir()
        vhd.create(pool / f"d{number:02}" / "vol.vhdx", vhd.DiskFormat.VHDX,
                   vhd.DiskType.DYNAMIC, MIB)
    files = agent.agent.opened.files
    listing, most, listed = 0, 0, 0
    list_dir = files.list_dir

    async def slow_listing(folder: str) -> list[str]:
        nonlocal listing, most, listed
        listing += 1
        listed += 1
        most = max(most, listing)
        try:
            await asyncio.sleep(0.01)
            return await list_dir(folder)
        finally:
            listing -= 1

    monkeypatch.setattr(files, "list_dir", slow_listing)
    answer = await _stats(agent, _asked(pool_uuid, "Filesystem", locators))
    assert answer["result"] is True, answer
    assert sorted(answer["volumeStats"]) == sorted(locators)
    assert listed == 30 and most == datapaths.LISTED_AT_ONCE, (listed, most)


async def test_a_pool_not_registered_here_fails_in_the_answers_own_class(
    agent: Running,
) -> None:
    answer = await _stats(agent, _asked("0badc0de-0000-4000-8000-000000000000", "SMB",
                                        ["root-a"]))
    assert answer["result"] is False, answer
    assert (answer["poolUuid"], answer["poolType"]) == (
        "0badc0de-0000-4000-8000-000000000000", "SMB")
    assert answer.get("volumeStats") is None  # the MS skips a null map
    assert "no storage pool 0badc0de-0000-4000-8000-000000000000 is registered" in \
        answer["details"]
    assert "reconnectHost" in answer["details"]


async def test_a_locator_leading_out_of_the_pool_is_refused_and_a_link_out_is_not_followed(
    agent: Running, tmp_path: Path,
) -> None:
    await _register_smb(agent)
    share = tmp_path / "primary"
    outside = tmp_path / "secondary" / "other.vhdx"
    vhd.create(outside, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 8 * MIB)
    vhd.create(share / "inside.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 8 * MIB)
    answer = await _stats(agent, _asked(SMB_POOL_UUID, "SMB",
                                        ["inside", "..\\secondary\\other"]))
    assert answer["result"] is False and answer.get("volumeStats") is None, answer
    assert "volumeUuids" in answer["details"], answer
    os.symlink(outside, share / "linked.vhdx")
    answer = await _stats(agent, _asked(SMB_POOL_UUID, "SMB", ["inside", "linked"]))
    assert answer["result"] is True, answer
    assert sorted(answer["volumeStats"]) == ["inside"]
    assert "'linked': a link leading out of the pool" in answer["details"]


async def test_volumes_of_a_pool_whose_share_cannot_be_reached_are_not_said_to_have_no_file(
    agent: Running, tmp_path: Path,
) -> None:
    """A share that went away (its server down, or taken off) lists as an empty folder, as
    Windows reports it as a path not found: the answer fails naming the pool's root as
    what cannot be reached, with no map, rather than succeeding with every volume left
    out as having no disk file; once the share is back the volumes are measured."""
    await _register_smb(agent)
    share = tmp_path / "primary"
    vhd.create(share / "data-d.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 8 * MIB)
    body = _asked(SMB_POOL_UUID, "SMB", ["data-d"])
    share.rename(tmp_path / "away")  # the share cannot be reached
    answer = await _stats(agent, body)
    assert answer["result"] is False and answer.get("volumeStats") is None, answer
    assert "root \\\\10.1.1.1\\primary," in answer["details"], answer["details"]
    assert "cannot be reached" in answer["details"], answer["details"]
    assert "no such disk file" not in answer["details"], answer["details"]
    (tmp_path / "away").rename(share)
    answer = await _stats(agent, body)
    assert answer["result"] is True and sorted(answer["volumeStats"]) == ["data-d"], answer


async def test_a_volume_without_a_file_costs_no_second_look_at_a_pool_that_listed(
    agent: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A locator naming no file in a pool whose folder lists: the listing has seen the
    pool's root, which is not looked for again (on an SMB pool a round trip to the file
    server, each minute), and the volume is left out as without a file. One in a folder
    of the pool that is not there has the root looked for once, and seen."""
    await _register_smb(agent)
    vhd.create(tmp_path / "primary" / "data-e.vhdx", vhd.DiskFormat.VHDX,
               vhd.DiskType.DYNAMIC, MIB)
    files = agent.agent.opened.files
    looked: list[str] = []
    exists = files.exists

    async def there(path: str) -> bool:
        looked.append(path)
        return await exists(path)

    monkeypatch.setattr(files, "exists", there)
    root = "\\\\10.1.1.1\\primary"
    answer = await _stats(agent, _asked(SMB_POOL_UUID, "SMB", ["data-e", "gone-e"]))
    assert answer["result"] is True and sorted(answer["volumeStats"]) == ["data-e"], answer
    assert "'gone-e': no such disk file in the pool" in answer["details"], answer
    assert [path.rstrip("\\") for path in looked].count(root) == 1, looked  # its listing
    looked.clear()
    answer = await _stats(agent, _asked(SMB_POOL_UUID, "SMB", ["nowhere\\gone-f"]))
    assert answer["result"] is True and answer["volumeStats"] == {}, answer
    assert "no such disk file in the pool" in answer["details"], answer
    assert [path.rstrip("\\") for path in looked].count(root) == 1, looked  # not listed
