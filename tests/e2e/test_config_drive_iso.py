"""HandleConfigDriveIsoCommand and the StartCommand that follows it, over real HTTPS with
bodies shaped as CloudStack 4.22's classes write them.

With ``vm.configdrive.primarypool.enabled`` the management server builds a VM's config
drive ISO and sends it to the VM's host, to be written at ``configdrive/<VM name>.iso``
on the root volume's pool (``destStore``, a PrimaryDataStoreTO); with
``vm.configdrive.force.host.cache.use`` (``preferHostCache``) into the host's own cache.
The StartCommand then names the ISO as a TemplateObjectTO of that path (with the pool's
TO, or none in the host's cache), and the VM's ``configDriveLocation`` says which.
Gson leaves null fields out: a delete carries no ``isoData``, a host-cache command of a
migration no ``destStore``.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import V2_NAMESPACE, CimInstance
from hyperv_agent.cloudstack import names
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.hostfs.aside import MARK
from tests.cloudstack.fixtures import ms422_json
from tests.e2e.conftest import Running, config_with_shares, serving
from tests.e2e.transitions_kit import STARTING, changing, slow
from tests.emulator.kit import ok, request_state, service

LOCAL_POOL = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"
CACHE = f"{LOCAL_POOL}\\configdrive-cache"  # the default config drive cache
ROOT = "03164c49-b0a9-4db9-baf2-20e389d54e6a"  # the root volume of sample 15
VM = "i-2-5-VM"
ISO_FILE = f"configdrive/{VM}.iso"
ON_POOL = f"{LOCAL_POOL}\\configdrive\\{VM}.iso"
IN_CACHE = f"{CACHE}\\configdrive\\{VM}.iso"
HANDLE = names.HANDLE_CONFIG_DRIVE_ISO_COMMAND
ANSWER = names.HANDLE_CONFIG_DRIVE_ISO_ANSWER
ISO_SUBTYPE = "Microsoft:Hyper-V:Virtual CD/DVD Disk"
#: The local pool as the MS names it (sample 25's PrimaryDataStoreTO).
LOCAL_STORE = {names.PRIMARY_DATA_STORE_TO: {
    "uuid": "f528764d-624d-3129-b32c-21fbca0cb8d6-HypervResource",
    "name": "127.0.0.1 Local Storage", "id": 1, "poolType": "Filesystem",
    "host": "127.0.0.1", "path": LOCAL_POOL,
    "url": f"Filesystem://127.0.0.1/{LOCAL_POOL}/?ROLE=Primary&STOREUUID="
           "f528764d-624d-3129-b32c-21fbca0cb8d6-HypervResource",
    "port": 0, "details": {}, "isManaged": False}}
_SWITCH = '[emulator]\nswitches = ["vSwitch0"]'  # the sample NIC's traffic label


def iso_image(payload: bytes = b"#cloud-config\n") -> bytes:
    """A small ISO 9660 image: its system area, a primary volume descriptor at sector 16
    and the set terminator, then ``payload``."""
    primary = b"\x01CD001\x01".ljust(2048, b"\x00")
    terminator = b"\xffCD001\x01".ljust(2048, b"\x00")
    return b"\x00" * 16 * 2048 + primary + terminator + payload.ljust(2048, b"\x00")


def handle_body(*, create: bool = True, data: bytes | str | None = None,
                store: dict[str, Any] | None = LOCAL_STORE, host_cache: bool = False,
                iso_file: str = ISO_FILE) -> dict[str, Any]:
    """HandleConfigDriveIsoCommand as Gson writes it (null fields left out)."""
    body: dict[str, Any] = {"isoFile": iso_file, "create": create,
                            "useHostCacheOnUnsupportedPool": False,
                            "preferHostCache": host_cache, "contextMap": {}, "wait": 0,
                            "bypassHostMaintenance": False}
    if create:
        body["isoData"] = data if isinstance(data, str) else \
            base64.b64encode(iso_image() if data is None else data).decode()
    if store is not None:
        body["destStore"] = store
    return body


def config_drive_disk(store: dict[str, Any] | None) -> dict[str, Any]:
    """The DiskTO addConfigDriveDisk gives the VM: a TemplateObjectTO of the ISO's path,
    with the pool's TO (none for an ISO in the host's cache), ``diskSeq`` 4."""
    data: dict[str, Any] = {"uuid": "4f1e7d8c-1b0e-4b67-9d43-0a4b1b3c2d11",
                            "path": ISO_FILE, "format": "ISO", "id": 0, "accountId": 0,
                            "hvm": False, "bootable": False, "directDownload": False,
                            "deployAsIs": False, "followRedirects": False}
    if store is not None:
        data["imageDataStore"] = store
    return {"data": {names.TEMPLATE_OBJECT_TO: data}, "diskSeq": 4, "path": ISO_FILE,
            "type": "ISO"}


def start_body(location: str, store: dict[str, Any] | None) -> dict[str, Any]:
    """Sample 15 with the config drive first in ``vm.disks``, as the MS orders them."""
    body: dict[str, Any] = copy.deepcopy(ms422_json("15_StartCommand.json"))
    body["vm"]["disks"] = [config_drive_disk(store), *body["vm"]["disks"]]
    body["vm"]["configDriveLocation"] = location
    return body


def _host_file(agent: Running, path: str) -> Path:
    return agent.emulator.host.paths.local(path)


def _config(tmp_path: Path, lab: str = "") -> Any:
    return config_with_shares(tmp_path, {}, _SWITCH + lab, local_storage_path=LOCAL_POOL)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Running]:
    """The agent with the sample's root volume in its local pool."""
    async with serving(_config(tmp_path)) as running:
        pool = running.emulator.host.paths.local(LOCAL_POOL)
        pool.mkdir(parents=True, exist_ok=True)
        vhd.create(pool / f"{ROOT}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 1 << 26)
        yield running


async def _isos(cim: EmulatorCim) -> set[str]:
    (vm,) = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", VM)))
    media = await cim.query(wql.select("Msvm_StorageAllocationSettingData", wql.starts_with(
        "InstanceID", f"Microsoft:{vm['Name']}\\")))
    return {m.strings("HostResource")[0] for m in media if m["ResourceSubType"] == ISO_SUBTYPE}


async def _handled(agent: Running, body: dict[str, Any]) -> dict[str, Any]:
    key, answer = await agent.answer(HANDLE, body)
    assert key == ANSWER, (key, answer)
    return answer


# --- on the root volume's pool ----------------------------------------------------------


async def test_the_iso_is_written_on_the_pool_and_the_vm_starts_with_it(agent: Running) -> None:
    image = iso_image(b"#cloud-config\nhostname: web-1\n")
    answer = await _handled(agent, handle_body(data=image))
    assert (answer["result"], answer["location"]) == (True, "PRIMARY"), answer
    assert _host_file(agent, ON_POOL).read_bytes() == image
    assert "isoData" not in str(answer) and base64.b64encode(image).decode() not in str(answer)

    key, started = await agent.answer(names.START_COMMAND, start_body("PRIMARY", LOCAL_STORE))
    assert (key, started["result"]) == (names.START_ANSWER, True), started
    assert ON_POOL in await _isos(agent.emulator)


async def test_a_second_iso_replaces_the_first(agent: Running) -> None:
    assert (await _handled(agent, handle_body(data=iso_image(b"first"))))["result"] is True
    assert (await _handled(agent, handle_body(data=iso_image(b"second"))))["result"] is True
    assert _host_file(agent, ON_POOL).read_bytes() == iso_image(b"second")


async def _started(agent: Running, location: str = "PRIMARY",
                   store: dict[str, Any] | None = LOCAL_STORE) -> None:
    _, started = await agent.answer(names.START_COMMAND, start_body(location, store))
    assert started["result"] is True, started


def _aside_files(agent: Running, folder: str) -> list[str]:
    return sorted(p.name for p in _host_file(agent, folder).iterdir() if MARK in p.name)


@pytest.mark.parametrize(("store", "host_cache", "path"), [
    (LOCAL_STORE, False, ON_POOL), (None, True, IN_CACHE)], ids=["pool", "host-cache"])
async def test_the_iso_a_running_vm_holds_is_replaced_and_its_drive_changes_media(
        agent: Running, store: dict[str, Any] | None, host_cache: bool, path: str) -> None:
    """A NIC added to a running VM (addVmToNetwork) rebuilds its config drive through
    its own host: refused, the API call failed. The drive is moved to a copy, the ISO
    replaced, the drive moved back."""
    body = handle_body(data=iso_image(b"one nic"), store=store, host_cache=host_cache)
    assert (await _handled(agent, body))["result"] is True
    await _started(agent, "HOST" if host_cache else "PRIMARY", store)
    spent_before = agent.emulator.round_trips()

    body = handle_body(data=iso_image(b"two nics"), store=store, host_cache=host_cache)
    answer = await _handled(agent, body)
    assert answer["result"] is True, answer
    assert f"the DVD drive of the running VM {VM} changed media" in answer["details"], answer
    assert _host_file(agent, path).read_bytes() == iso_image(b"two nics")
    assert path in await _isos(agent.emulator)
    assert _aside_files(agent, path.rsplit("\\", 1)[0]) == []
    spent = agent.emulator.round_trips() - spent_before
    assert spent["invoke:ModifyResourceSettings"] == 2  # to the copy and back
    # deleting it under the running VM is still refused (the MS deletes at expunge)
    deleted = await _handled(agent, handle_body(create=False, store=store,
                                                host_cache=host_cache))
    assert deleted["result"] is False and VM in deleted["details"], deleted
    assert _host_file(agent, path).exists()


async def _drive_to(agent: Running, image: str) -> None:
    """Make the VM's config drive medium name ``image``, as an interrupted replace left it."""
    cim = agent.emulator
    (vm,) = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", VM)))
    media = await cim.query(wql.select("Msvm_StorageAllocationSettingData", wql.starts_with(
        "InstanceID", f"Microsoft:{vm['Name']}\\")))
    (medium,) = [m for m in media if m.strings("HostResource")[0] == ON_POOL]
    await ok(cim, await cim.invoke(await service(cim), "ModifyResourceSettings", {
        "ResourceSettings": [medium.updated(HostResource=[image])]}))


async def test_a_drive_an_interrupted_replace_left_on_the_copy_is_put_back(
        agent: Running) -> None:
    """Killed between moving the drive to the copy and back, the VM runs on a whole ISO
    (the copy); no sweep may remove it while held, and the next write of the config drive
    moves the drive back and removes it."""
    assert (await _handled(agent, handle_body(data=iso_image(b"old"))))["result"] is True
    await _started(agent)
    folder = f"{LOCAL_POOL}\\configdrive"
    left = f"{folder}\\.{VM}.iso{MARK}0a1b2c3d-0123456789ab.iso"
    _host_file(agent, left).write_bytes(iso_image(b"new"))
    await _drive_to(agent, left)
    assert await _isos(agent.emulator) == {left}

    answer = await _handled(agent, handle_body(data=iso_image(b"newer")))
    assert answer["result"] is True, answer
    assert await _isos(agent.emulator) == {ON_POOL}
    assert _host_file(agent, ON_POOL).read_bytes() == iso_image(b"newer")
    assert _aside_files(agent, folder) == []


async def test_a_failed_media_change_leaves_the_vm_on_the_old_iso(agent: Running) -> None:
    assert (await _handled(agent, handle_body(data=iso_image(b"old"))))["result"] is True
    await _started(agent)
    agent.emulator.faults.fail_next_job("ModifyResourceSettings", 32768, "drive busy")
    answer = await _handled(agent, handle_body(data=iso_image(b"new")))
    assert answer["result"] is False and "drive busy" in answer["details"], answer
    assert await _isos(agent.emulator) == {ON_POOL}
    assert _host_file(agent, ON_POOL).read_bytes() == iso_image(b"old")
    assert _aside_files(agent, f"{LOCAL_POOL}\\configdrive") == []


async def test_a_stop_of_the_vm_waits_for_its_config_drives_media_change(
    agent: Running,
) -> None:
    """A StopCommand of the VM that arrives while its config drive is being replaced
    (its DVD drive moved to the copy, the ISO not yet written) waits until the drive is
    back on the new ISO, then stops and removes the VM: the replace holds the VM's lock.
    Without it the VM was removed under the replace, which then failed, its drive gone."""
    assert (await _handled(agent, handle_body(data=iso_image(b"old"))))["result"] is True
    await _started(agent)
    cim = agent.emulator
    cim.faults.slow_next_job("ModifyResourceSettings", 1.5)  # the move to the copy
    moved = cim.round_trips()["invoke:ModifyResourceSettings"]
    replacing = asyncio.create_task(_handled(agent, handle_body(data=iso_image(b"new"))))
    for _ in range(500):  # until the drive is being moved: the VM's lock is held
        if cim.round_trips()["invoke:ModifyResourceSettings"] > moved:
            break
        await asyncio.sleep(0.01)
    assert not replacing.done()
    _, stopped = await agent.answer(names.STOP_COMMAND, {"vmName": VM, "forceStop": True})
    assert replacing.done()  # the stop waited for it
    answer = await replacing
    assert answer["result"] is True, answer
    assert f"the DVD drive of the running VM {VM} changed media" in answer["details"]
    assert stopped["result"] is True, stopped
    assert await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", VM))) == []
    assert _host_file(agent, ON_POOL).read_bytes() == iso_image(b"new")
    assert _aside_files(agent, f"{LOCAL_POOL}\\configdrive") == []


async def test_a_start_waits_for_a_write_of_its_config_drive_under_way(
    agent: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A StartCommand of the VM that arrives while its config drive is being written (the
    write has found no VM holding the ISO and is about to rename the new image into place)
    waits for the write, then starts the VM with the new ISO: the start holds the file
    locks of the ISOs it mounts. Without them the VM took the ISO into its drive and ran
    before the rename, which Windows then refused, and the write failed blaming a VM on
    another host."""
    assert (await _handled(agent, handle_body(data=iso_image(b"old"))))["result"] is True
    cim = agent.emulator
    looked, release = asyncio.Event(), asyncio.Event()
    query = cim.query

    async def held(text: str, namespace: str = V2_NAMESPACE) -> list[CimInstance]:
        answer = await query(text, namespace)
        if ISO_SUBTYPE in text and not looked.is_set():
            looked.set()  # the write has looked for the ISO's holders: it waits here
            await release.wait()
        return answer

    monkeypatch.setattr(cim, "query", held)
    writing = asyncio.create_task(_handled(agent, handle_body(data=iso_image(b"new"))))
    await asyncio.wait_for(looked.wait(), 10)
    starting = asyncio.create_task(agent.answer(names.START_COMMAND,
                                                start_body("PRIMARY", LOCAL_STORE)))
    await asyncio.wait({starting}, timeout=1.0)  # the VM is built and started meanwhile
    started_first = starting.done()
    release.set()
    written, (_, started) = await writing, await starting
    assert written["result"] is True, written
    assert not started_first  # it waited for the write
    assert started["result"] is True, started
    assert _host_file(agent, ON_POOL).read_bytes() == iso_image(b"new")
    assert ON_POOL in await _isos(cim)


async def test_the_iso_a_paused_vm_holds_is_kept(agent: Running) -> None:
    assert (await _handled(agent, handle_body(data=iso_image(b"old"))))["result"] is True
    await _started(agent)
    cim = agent.emulator
    (vm,) = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", VM)))
    assert vm.path is not None
    await ok(cim, await request_state(cim, vm.path, 9))
    refused = await _handled(agent, handle_body(data=iso_image(b"new")))
    assert refused["result"] is False
    assert f"attached to the paused VM {VM}" in refused["details"], refused
    assert _host_file(agent, ON_POOL).read_bytes() == iso_image(b"old")


async def test_delete_removes_the_iso_and_an_absent_one_is_a_success(agent: Running) -> None:
    assert (await _handled(agent, handle_body()))["result"] is True
    for _ in range(2):  # a repeat (a lost answer, an expunge after a release) succeeds
        answer = await _handled(agent, handle_body(create=False))
        assert answer["result"] is True, answer
        assert not _host_file(agent, ON_POOL).exists()
    assert "already absent" in answer["details"]


# --- in the host's cache -----------------------------------------------------------------


@pytest.mark.parametrize("store", [LOCAL_STORE, None], ids=["start", "migration"])
async def test_the_iso_in_the_host_cache_is_the_one_the_vm_starts_with(
        agent: Running, store: dict[str, Any] | None) -> None:
    """A start names the pool it first meant, a migration's create none: with
    ``configDriveLocation`` HOST the VM takes the cache's ISO either way."""
    answer = await _handled(agent, handle_body(store=store, host_cache=True))
    assert (answer["result"], answer["location"]) == (True, "HOST"), answer
    assert _host_file(agent, IN_CACHE).read_bytes() == iso_image()
    assert not _host_file(agent, ON_POOL).exists()

    _, started = await agent.answer(names.START_COMMAND, start_body("HOST", store))
    assert started["result"] is True, started
    assert IN_CACHE in await _isos(agent.emulator)


async def test_a_vm_whose_config_drive_is_in_the_cache_does_not_start_without_it(
        agent: Running) -> None:
    _, refused = await agent.answer(names.START_COMMAND, start_body("HOST", None))
    assert refused["result"] is False
    assert IN_CACHE in refused["details"], refused


async def test_delete_in_the_host_cache(agent: Running) -> None:
    assert (await _handled(agent, handle_body(store=None, host_cache=True)))["result"] is True
    answer = await _handled(agent, handle_body(create=False, store=None, host_cache=True))
    assert answer["result"] is True, answer
    assert not _host_file(agent, IN_CACHE).exists()


# --- refused, nothing written -----------------------------------------------------------

_UNKNOWN_POOL = {names.PRIMARY_DATA_STORE_TO: {
    "uuid": "5d719485-f8b3-3fc2-b05a-8f63a912e709", "name": "smb-primary", "id": 2,
    "poolType": "SMB", "host": "10.1.1.1", "path": "/primary?user=admin&password=s3cret",
    "port": 445, "isManaged": False}}


@pytest.mark.parametrize(("body", "expected"), [
    (handle_body(data="not base64 at all!"), "isoData is not base64"),
    (handle_body(data=b"#cloud-config\n" * 4000), "is not an ISO 9660 image"),
    (handle_body(iso_file="configdrive/../../Windows/i-2-5-VM.iso"), "climbs out"),
    (handle_body(iso_file="C:\\Windows\\i-2-5-VM.iso"), "is absolute"),
    (handle_body(iso_file="\\\\10.1.1.9\\share\\i-2-5-VM.iso"), "is absolute"),
    (handle_body(iso_file="configdrive/i-2-5-VM.vhdx"), "is not a .iso file"),
    (handle_body(store=_UNKNOWN_POOL), "is not registered on this host"),
    (handle_body(store=None), "names neither a primary pool nor the host's cache"),
    ({k: v for k, v in handle_body().items() if k != "isoData"}, "isoData is missing"),
], ids=["not-base64", "not-an-iso", "dot-dot", "absolute", "unc", "not-iso-suffix",
        "unknown-pool", "no-store", "no-data"])
async def test_bad_input_is_a_failed_answer_and_nothing_is_written(
        agent: Running, body: dict[str, Any], expected: str) -> None:
    answer = await _handled(agent, body)
    assert answer["result"] is False
    assert expected in answer["details"], answer
    assert "s3cret" not in answer["details"]
    pool = _host_file(agent, LOCAL_POOL)
    assert sorted(p.name for p in pool.iterdir()) == [f"{ROOT}.vhdx"]
    assert not (_host_file(agent, "C:\\Windows") / f"{VM}.iso").exists()


async def test_a_delete_on_a_pool_not_registered_here_fails_saying_nothing_was_deleted(
        agent: Running) -> None:
    """This host cannot reach a pool it has not registered, so it cannot tell whether the
    ISO is there: a failed answer (as KVM's agent answers for a pool libvirt does not
    know), which the management server logs, and the ISO of the same name on this host's
    pools kept."""
    assert (await _handled(agent, handle_body()))["result"] is True
    answer = await _handled(agent, handle_body(create=False, store=_UNKNOWN_POOL))
    assert answer["result"] is False, answer
    assert "\\\\10.1.1.1\\primary is not registered on this host" in answer["details"], answer
    assert f"the config drive {ISO_FILE} was not deleted from that pool" in answer["details"]
    assert "s3cret" not in answer["details"]
    assert _host_file(agent, ON_POOL).read_bytes() == iso_image()


async def test_an_iso_the_volume_has_no_room_for_is_refused(tmp_path: Path) -> None:
    free = 256 * 1024 * 1024 + 40 * 1024  # the 256 MiB kept free, and 40 KiB
    lab = f"\n[emulator.lab]\nfree_bytes = {{C = {free}}}"
    async with serving(_config(tmp_path, lab)) as running:
        small = await _handled(running, handle_body(data=iso_image()))
        assert small["result"] is True, small
        large = await _handled(running, handle_body(data=iso_image(b"u" * 200 * 1024)))
        assert large["result"] is False
        assert "not enough free space" in large["details"], large
        assert _host_file(running, ON_POOL).read_bytes() == iso_image()


@pytest.mark.parametrize("host_cache", [False, True], ids=["pool", "cache"])
async def test_the_first_iso_of_a_pool_or_cache_is_bounded_too(
        tmp_path: Path, host_cache: bool) -> None:
    """No ``configdrive`` folder yet (the first config drive a pool or the host's cache
    takes): the volume is measured all the same, not left unbounded."""
    free = 256 * 1024 * 1024 + 40 * 1024  # the 256 MiB kept free, and 40 KiB
    lab = f"\n[emulator.lab]\nfree_bytes = {{C = {free}}}"
    async with serving(_config(tmp_path, lab)) as running:
        large = await _handled(running, handle_body(data=iso_image(b"u" * 200 * 1024),
                                                    host_cache=host_cache))
        assert large["result"] is False, large
        assert "not enough free space" in large["details"], large
        assert not _host_file(running, IN_CACHE if host_cache else ON_POOL).exists()


async def test_a_config_drive_of_megabytes_is_taken(agent: Running) -> None:
    """User data of up to 1 MB is written twice into the ISO (cloudstack/ and openstack/):
    its base64 is far beyond the bound on any other string of a command."""
    image = iso_image(b"u" * 3 * 1024 * 1024)
    answer = await _handled(agent, handle_body(data=image))
    assert answer["result"] is True, answer
    assert _host_file(agent, ON_POOL).stat().st_size == len(image)


async def test_a_delete_waits_for_the_vm_holding_the_iso_at_most_half_its_wait(
    agent: Running,
) -> None:
    """A VM Hyper-V is starting holds its ISO: the delete waits the start out within the
    job wait and half the command's ``wait``, so one the MS waits 2 s for answers in
    time, naming the change, and keeps the ISO."""
    assert (await _handled(agent, handle_body()))["result"] is True
    await _started(agent)
    cim = agent.emulator
    (vm,) = await cim.query(wql.select("Msvm_ComputerSystem", wql.eq("ElementName", VM)))
    assert vm.path is not None
    await ok(cim, await request_state(cim, vm.path, 3))
    slow(agent, job_s=30.0)
    await changing(cim, vm.path, 2, STARTING)
    slow(agent, job_s=0.01)  # the start still lasts 30 s; the command's own jobs do not
    refused = await _handled(agent, handle_body(create=False) | {"wait": 2})
    assert refused["result"] is False, refused
    assert f"VM {VM} is still starting on this host after 1 s" in refused["details"], refused
    assert _host_file(agent, ON_POOL).read_bytes() == iso_image()
