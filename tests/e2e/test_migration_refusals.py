"""Migration commands that must be refused on one host, over real HTTPS on 127.0.0.1 with
the management server's own bodies (``samples/ms-4.22`` 40 and 43): MigrateVolume of a disk
a running VM uses, of a running VM's linked clone away from its template's pool,
MigrateVolume into the pool the volume is already in, MigrateVolume from or into a pool
whose share cannot be reached, a DeleteCommand of a volume moving with its running VM (and
the reads the management server sends meanwhile, which do not wait for it), and
PrepareForMigration of a VM with a disk of a type CloudStack does not have or with an ISO
this host would not give it. Each refusal is
a failed answer of the command's own class; the files, the VM and the agent are as before."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cloudstack import names
from hyperv_agent.config import load_config
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.files import EmulatedFiles
from hyperv_agent.errors import HostFileError
from hyperv_agent.handlers.vm import VmSettings
from hyperv_agent.hyperv import jobs
from tests.cloudstack.fixtures import ms422_json
from tests.diskfiles import hyperv_writes
from tests.e2e.conftest import API, STARTUP_REQUEST, Running, record_file_looks, serving
from tests.e2e.migration_kit import (
    LOCAL_POOL,
    SHARE,
    SWITCH,
    check_body,
    disk_file,
    local_pool_of,
    pool_body,
    prepare_body,
    smb_pool,
    start_body,
    vm_to,
    volume_body,
)

VM = "i-2-100-VM"
ROOT = "3f0c9a52-6d1e-4b7a-9c2d-1e5f8a7b6c40"
DATA = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
SPARE = "c4d5e6f7-0819-4a2b-9c3d-4e5f60718293"
HOST_GUID = "ab416c39-d509-372c-9a0a-7451a45bc65e"
OTHER_POOL = "D:\\pool2"
OTHER_POOL_UUID = "6e2f1d0c-3b4a-4c5d-8e9f-0a1b2c3d4e5f"
PROMPT_S = 10.0  # far above what any of these answers takes; a hang fails the test


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Running]:
    """An agent whose local pool is ``LOCAL_POOL``, with a second local pool ``D:\\pool2``
    registered and the SMB pool of sample 31 registered."""
    async with _host(tmp_path) as running:
        yield running


@contextlib.asynccontextmanager
async def _host(tmp_path: Path, vm_settings: VmSettings | None = None
                ) -> AsyncIterator[Running]:
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
state_dir = "{tmp_path / 'state'}"
backend = "emulator"
private_ip = "192.168.100.10"
local_storage_path = '{LOCAL_POOL}'
[emulator]
switches = ["{SWITCH}"]
[emulator.shares]
'{SHARE}' = '{tmp_path / "share"}'
""")
    (tmp_path / "share").mkdir()
    async with serving(load_config(config), vm_settings, backend="emulator") as running:
        _drive(running, "D", "pool2").mkdir(parents=True)
        _local_pool(running).mkdir(parents=True)
        for body in (pool_body(), {"add": True, "localPath": OTHER_POOL,
                                   "pool": _other_pool()}):
            _, added = await running.answer(names.MODIFY_STORAGE_POOL_COMMAND, body)
            assert added["result"] is True, added
        yield running


def _drive(running: Running, letter: str, *folders: str) -> Path:
    return running.agent.config.agent.state_dir.joinpath("emulator", "drives", letter,
                                                         *folders)


def _local_pool(running: Running) -> Path:
    return _drive(running, "C", *LOCAL_POOL.split("\\")[1:])


def _other_pool() -> dict[str, Any]:
    return {"id": 2, "uuid": OTHER_POOL_UUID, "host": "127.0.0.1", "path": OTHER_POOL,
            "port": 0, "type": "Filesystem"}


def _local_store() -> dict[str, Any]:
    return local_pool_of(HOST_GUID, "127.0.0.1")


def _vm_with_data_disk() -> dict[str, Any]:
    """VM ``VM``: its root volume ``ROOT`` and the data volume ``DATA`` on the local pool."""
    vm = vm_to(VM, ROOT, local_root=True)
    data = copy.deepcopy(vm["disks"][0])
    data["data"][names.VOLUME_OBJECT_TO] |= {"uuid": DATA, "path": DATA, "volumeType":
                                              "DATADISK", "name": "DATA-100", "id": 32}
    vm["disks"].insert(1, data | {"type": "DATADISK", "diskSeq": 1, "path": DATA})
    return vm


async def _started(running: Running) -> dict[str, Any]:
    for volume in (ROOT, DATA):
        disk_file(_local_pool(running), volume)
    vm = _vm_with_data_disk()
    _, started = await running.answer(names.START_COMMAND, start_body(vm))
    assert started["result"] is True, started
    return vm


async def _power(running: Running) -> str:
    _, checked = await running.answer(names.CHECK_VIRTUAL_MACHINE_COMMAND, check_body(VM))
    return str(checked["state"])


async def _asked(running: Running, fqcn: str, body: dict[str, Any]
                 ) -> tuple[str, dict[str, Any]]:
    """The answer of ``fqcn``, which must come within ``PROMPT_S``."""
    return await asyncio.wait_for(running.answer(fqcn, body), PROMPT_S)


async def _moving_with_its_vm(host: Running, slow_s: float
                              ) -> asyncio.Task[tuple[str, dict[str, Any]]]:
    """The data volume of a started VM moving to the other pool, its storage migration
    slowed to ``slow_s`` and running (so the move's locks are held) when this returns."""
    await _started(host)
    cim = host.emulator
    cim.faults.slow_next_job("MigrateVirtualSystemToHost", slow_s)
    begun = cim.round_trips()["invoke:MigrateVirtualSystemToHost"]
    moving = asyncio.create_task(_asked(host, names.MIGRATE_VOLUME_COMMAND,
                                        volume_body(DATA, VM, _other_pool())))
    for _ in range(500):
        if cim.round_trips()["invoke:MigrateVirtualSystemToHost"] > begun:
            break
        await asyncio.sleep(0.01)
    assert not moving.done()
    return moving


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _linked_clone(running: Running) -> tuple[Path, bytes]:
    """``SPARE`` made in the local pool as a linked clone of ``tmpl-1`` there; the
    template's file and its bytes."""
    pool = _local_pool(running)
    template = disk_file(pool, "tmpl-1")
    vhd.write_data(template, 0, b"template os")
    vhd.create(pool / f"{SPARE}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0,
               parent=template, parent_locator=f"{LOCAL_POOL}\\tmpl-1.vhdx")
    return template, template.read_bytes()



# --- MigrateVolumeCommand: a disk a running VM uses -------------------------------------------


@pytest.mark.parametrize("attached", [None, "", "i-2-999-VM"],
                         ids=["no attachedVmName", "empty attachedVmName", "another VM"])
async def test_a_disk_of_a_running_vm_is_not_moved_without_its_vm(
    host: Running, attached: str | None
) -> None:
    await _started(host)
    before = (_files(_local_pool(host)), (_local_pool(host) / f"{ROOT}.vhdx").read_bytes())
    for volume in (ROOT, DATA):
        body = volume_body(volume, attached, _other_pool(), source_pool=_local_store())
        kind, answer = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
        assert (kind, answer["result"]) == (names.MIGRATE_VOLUME_ANSWER, False), answer
        details = str(answer["details"])
        assert f"{volume}.vhdx is attached to the running VM {VM}" in details, details
        assert "the file was kept" in details, details
    assert (_files(_local_pool(host)), (_local_pool(host) / f"{ROOT}.vhdx").read_bytes()) \
        == before
    assert _files(_drive(host, "D", "pool2")) == []
    assert await _power(host) == "PowerOn"


async def test_a_disk_of_a_stopped_vm_moves_as_its_file_may_be_deleted(host: Running) -> None:
    """The rule DeleteCommand and CopyCommand follow: a running VM's disk is left alone; a
    stopped VM's is not in use, and the VM is rebuilt from its volumes' new paths."""
    await _started(host)
    body = volume_body(DATA, None, _other_pool(), source_pool=_local_store())
    _, refused = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert refused["result"] is False and "running VM" in refused["details"], refused
    _, stopped = await host.answer(names.STOP_COMMAND, {
        "vmName": VM, "checkBeforeCleanup": False, "forceStop": False, "contextMap": {},
        "wait": 0})
    assert stopped["result"] is True, stopped
    kind, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert (kind, moved["result"]) == (names.MIGRATE_VOLUME_ANSWER, True), moved
    assert moved["volumePath"] == DATA
    assert _files(_drive(host, "D", "pool2")) == [f"{DATA}.vhdx"]
    assert _files(_local_pool(host)) == [f"{ROOT}.vhdx"]


async def test_a_vhdx_volume_is_looked_for_and_link_checked_as_a_vhdx_only(
    host: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A volume's path names no extension: its file is ``.vhdx`` or ``.vhd``. Found as a
    ``.vhdx`` (what CloudStack makes on Hyper-V), the ``.vhd`` it might have been is
    neither looked for nor checked for links out of the pool: on a share each is a round
    trip to the file server."""
    disk_file(_local_pool(host), DATA)
    files = host.agent.host.heartbeats.files
    asked = record_file_looks(monkeypatch, files)
    kind, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, volume_body(
        DATA, None, _other_pool(), source_pool=_local_store()))
    monkeypatch.undo()
    assert (kind, moved["result"]) == (names.MIGRATE_VOLUME_ANSWER, True), moved
    source = f"{LOCAL_POOL}\\{DATA}"
    assert [call for call in asked if source in call] == [
        f"link_out {source}.vhdx", f"exists {source}.vhdx"], asked
    assert _files(_drive(host, "D", "pool2")) == [f"{DATA}.vhdx"]


async def test_a_linked_clone_moved_to_another_pool_no_longer_needs_its_template(
    host: Running,
) -> None:
    """A root volume made as a linked clone names the template in its pool as its parent.
    Moved to another pool as it is, it would still stand on that template, which the
    management server may evict from the old pool once no volume there uses it: the moved
    volume is merged with its template, and the template is left as it was."""
    pool = _local_pool(host)
    template, kept = _linked_clone(host)
    kind, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, volume_body(
        SPARE, None, _other_pool(), source_pool=_local_store()))
    assert (kind, moved["result"]) == (names.MIGRATE_VOLUME_ANSWER, True), moved
    arrived = _drive(host, "D", "pool2") / f"{SPARE}.vhdx"
    info = vhd.read_info(arrived)
    assert (info.type, info.parent_path, info.virtual_size_bytes) == (
        vhd.DiskType.DYNAMIC, None, 64 << 20)
    assert vhd.read_data(arrived, 0, 11) == b"template os"
    assert _files(pool) == ["tmpl-1.vhdx"] and template.read_bytes() == kept
    assert _files(_drive(host, "D", "pool2")) == [f"{SPARE}.vhdx"]


@pytest.mark.parametrize(("change", "why"), [
    ("removed", "which cannot be found"),
    ("replaced", "which is not the disk it was made from (replaced or written since)"),
])
async def test_a_linked_clone_whose_template_is_gone_or_changed_is_not_moved_and_names_it(
    host: Running, change: str, why: str,
) -> None:
    """A stopped VM's linked clone is merged with its template when it moves to another
    pool: with that template deleted, or replaced by another disk of its name, behind
    CloudStack's back, Hyper-V refuses the merge in words that name no template. The move
    fails naming the volume's disk, the template file it stands on and why; the volume
    stays where it was and nothing is left in the target pool."""
    pool = _local_pool(host)
    template, _ = _linked_clone(host)
    template.unlink()
    if change == "replaced":  # a template of the same name made anew
        disk_file(pool, "tmpl-1")
    before = (_files(pool), (pool / f"{SPARE}.vhdx").read_bytes())
    kind, answer = await _asked(host, names.MIGRATE_VOLUME_COMMAND, volume_body(
        SPARE, None, _other_pool(), source_pool=_local_store()))
    assert (kind, answer["result"]) == (names.MIGRATE_VOLUME_ANSWER, False), answer
    details = str(answer["details"])
    assert details.endswith(f"; the disk {LOCAL_POOL}\\{SPARE}.vhdx stands on the parent "
                            f"{LOCAL_POOL}\\tmpl-1.vhdx, {why}"), details
    assert (_files(pool), (pool / f"{SPARE}.vhdx").read_bytes()) == before
    assert _files(_drive(host, "D", "pool2")) == []


async def test_a_running_vms_linked_clone_is_not_moved_live_away_from_its_template(
    host: Running, tmp_path: Path,
) -> None:
    """Hyper-V's storage migration moves a running VM's disk file as it is: a linked clone
    moved to the SMB pool would still name the template on this host's local pool as its
    parent, which no other host opens (a live migration or a start of the VM there fails) and
    which the management server evicts once no volume of that pool uses it. So the move is
    refused before anything is touched, saying how to move the volume: with the VM
    stopped, the copy is merged with its template and stands alone in the new pool."""
    pool = _local_pool(host)
    template = disk_file(pool, "tmpl-1")
    vhd.create(pool / f"{ROOT}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0,
               parent=template, parent_locator=f"{LOCAL_POOL}\\tmpl-1.vhdx")
    disk_file(pool, DATA)
    vm = _vm_with_data_disk()
    _, started = await host.answer(names.START_COMMAND, start_body(vm))
    assert started["result"] is True, started
    before = (_files(pool), (pool / f"{ROOT}.vhdx").read_bytes(), template.read_bytes())
    for target in (pool_body()["pool"], _other_pool()):
        kind, answer = await _asked(host, names.MIGRATE_VOLUME_COMMAND, volume_body(
            ROOT, VM, target, source_pool=_local_store()))
        assert (kind, answer["result"]) == (names.MIGRATE_VOLUME_ANSWER, False), answer
        details = str(answer["details"])
        assert f"{ROOT}.vhdx is a linked clone of {LOCAL_POOL}\\tmpl-1.vhdx" in details, details
        assert "stop the VM" in details, details
    assert (_files(pool), (pool / f"{ROOT}.vhdx").read_bytes(), template.read_bytes()) == before
    assert not list((tmp_path / "share").glob("*.vhd*"))  # the host's heartbeat stamp only
    assert _files(_drive(host, "D", "pool2")) == []
    assert await _power(host) == "PowerOn"

    _, data = await _asked(host, names.MIGRATE_VOLUME_COMMAND, volume_body(
        DATA, VM, pool_body()["pool"], source_pool=_local_store()))
    assert data["result"] is True, data  # a disk standing alone still moves live
    _, stopped = await host.answer(names.STOP_COMMAND, {
        "vmName": VM, "checkBeforeCleanup": False, "forceStop": False, "contextMap": {},
        "wait": 0})
    assert stopped["result"] is True, stopped
    _, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, volume_body(
        ROOT, None, pool_body()["pool"], source_pool=_local_store()))
    assert moved["result"] is True, moved
    info = vhd.read_info(tmp_path / "share" / f"{ROOT}.vhdx")
    assert (info.type, info.parent_path) == (vhd.DiskType.DYNAMIC, None)
    assert _files(pool) == ["tmpl-1.vhdx"]


async def test_the_merge_of_a_linked_clone_runs_as_long_as_the_ms_waits_for_the_move(
    tmp_path: Path,
) -> None:
    """Merging a large linked clone takes Hyper-V longer than the agent's bound for jobs
    that touch only metadata; the command's own ``wait`` bounds it, so the move succeeds
    instead of failing while Hyper-V still writes."""
    settings = VmSettings(job_wait=jobs.WaitPolicy(timeout_s=0.3, max_poll_s=0.05))
    async with _host(tmp_path, settings) as running:
        _linked_clone(running)
        body = volume_body(SPARE, None, _other_pool(), source_pool=_local_store())
        assert body["wait"] == 3600
        running.emulator.faults.slow_next_job("ConvertVirtualHardDisk", 1.0)
        kind, moved = await _asked(running, names.MIGRATE_VOLUME_COMMAND, body)
        assert (kind, moved["result"]) == (names.MIGRATE_VOLUME_ANSWER, True), moved
        arrived = _drive(running, "D", "pool2") / f"{SPARE}.vhdx"
        assert vhd.read_info(arrived).parent_path is None
        assert _files(_local_pool(running)) == ["tmpl-1.vhdx"]


async def test_a_linked_clone_moves_out_of_a_pool_too_full_for_a_merged_copy(
    host: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A nearly full pool is often why its volumes are moved: Hyper-V merges the linked
    clone straight into the target pool, at an aside name renamed when complete, and
    writes nothing in the source pool."""
    template, kept = _linked_clone(host)
    written = hyperv_writes(monkeypatch, _local_pool(host))
    kind, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, volume_body(
        SPARE, None, _other_pool(), source_pool=_local_store()))
    assert (kind, moved["result"]) == (names.MIGRATE_VOLUME_ANSWER, True), moved
    target = _drive(host, "D", "pool2")
    assert [(path.parent, path.name.startswith(f".{SPARE}.vhdx.partial-"), path.suffix)
            for path in written] == [(target, True, ".vhdx")], written
    info = vhd.read_info(target / f"{SPARE}.vhdx")
    assert (info.type, info.parent_path, info.virtual_size_bytes) == (
        vhd.DiskType.DYNAMIC, None, 64 << 20)
    assert vhd.read_data(target / f"{SPARE}.vhdx", 0, 11) == b"template os"
    assert _files(target) == [f"{SPARE}.vhdx"]
    assert _files(_local_pool(host)) == ["tmpl-1.vhdx"] and template.read_bytes() == kept


async def test_a_linked_clone_whose_merge_fails_midway_leaves_nothing_in_the_target(
    host: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hyper-V wrote the merged disk in the target pool and then failed: the aside file is
    removed, the volume stays where it was, and a later move of it succeeds."""
    template, kept = _linked_clone(host)
    clone = (_local_pool(host) / f"{SPARE}.vhdx").read_bytes()
    written = hyperv_writes(monkeypatch, _local_pool(host), fails_when_done=True)
    body = volume_body(SPARE, None, _other_pool(), source_pool=_local_store())
    kind, failed = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert (kind, failed["result"]) == (names.MIGRATE_VOLUME_ANSWER, False), failed
    assert len(written) == 1 and written[0].parent == _drive(host, "D", "pool2"), written
    assert _files(_drive(host, "D", "pool2")) == []
    assert _files(_local_pool(host)) == sorted([f"{SPARE}.vhdx", "tmpl-1.vhdx"])
    assert (_local_pool(host) / f"{SPARE}.vhdx").read_bytes() == clone
    assert template.read_bytes() == kept

    monkeypatch.undo()
    _, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert moved["result"] is True, moved
    assert _files(_drive(host, "D", "pool2")) == [f"{SPARE}.vhdx"]
    assert _files(_local_pool(host)) == ["tmpl-1.vhdx"]


# --- MigrateVolumeCommand: into the pool the volume is in -------------------------------------


@pytest.mark.parametrize("same", [
    _local_store(),
    _local_store() | {"uuid": "", "path": LOCAL_POOL.upper() + "\\"},
], ids=["same pool", "same folder spelled otherwise"])
async def test_a_volume_moved_into_its_own_pool_is_refused_at_once_and_stays_usable(
    host: Running, same: dict[str, Any]
) -> None:
    disk_file(_local_pool(host), SPARE)
    before = (_local_pool(host) / f"{SPARE}.vhdx").read_bytes()
    kind, answer = await _asked(host, names.MIGRATE_VOLUME_COMMAND,
                                volume_body(SPARE, None, same, source_pool=_local_store()))
    assert (kind, answer["result"]) == (names.MIGRATE_VOLUME_ANSWER, False), answer
    assert f"volume {SPARE} is already in the pool {LOCAL_POOL}" in answer["details"], answer
    assert _files(_local_pool(host)) == [f"{SPARE}.vhdx"]
    assert (_local_pool(host) / f"{SPARE}.vhdx").read_bytes() == before

    # The volume's file is free: later commands on it answer at once.
    async with host.session.get(host.url + API.rstrip("/")) as ping:
        assert ping.status == 200
    _, resized = await _asked(host, names.RESIZE_VOLUME_COMMAND, {
        "path": SPARE, "pool": _local_store(), "newSize": 128 << 20, "currentSize": 64 << 20,
        "shrinkOk": False, "contextMap": {}, "wait": 0})
    assert resized["result"] is True, resized
    _, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, volume_body(
        SPARE, None, _other_pool(), source_pool=_local_store()))
    assert moved["result"] is True, moved
    assert _files(_drive(host, "D", "pool2")) == [f"{SPARE}.vhdx"]
    assert _files(_local_pool(host)) == []


async def test_a_running_vms_disk_moved_into_its_own_pool_is_refused_at_once(
    host: Running,
) -> None:
    await _started(host)
    before = _files(_local_pool(host))
    kind, answer = await _asked(host, names.MIGRATE_VOLUME_COMMAND,
                                volume_body(DATA, VM, _local_store()))
    assert (kind, answer["result"]) == (names.MIGRATE_VOLUME_ANSWER, False), answer
    assert f"volume {DATA} is already in the pool {LOCAL_POOL}" in answer["details"], answer
    assert _files(_local_pool(host)) == before
    assert await _power(host) == "PowerOn"


# --- PrepareForMigrationCommand: a disk of an unknown type ------------------------------------


@pytest.mark.parametrize("kind", ["../../../etc/passwd", "SWAP", "UNKNOWN", ""])
async def test_prepare_refuses_a_disk_of_a_type_cloudstack_does_not_send(
    host: Running, tmp_path: Path, kind: str
) -> None:
    root = disk_file(tmp_path / "share", ROOT)
    vm = vm_to(VM, ROOT)
    _, ready = await _asked(host, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(vm))
    assert ready["result"] is True, ready  # the body as the management server sends it
    before = (_files(tmp_path / "share"), root.read_bytes())

    for odd in (vm, vm_to(VM, ROOT, local_root=True)):
        odd["disks"][0]["type"] = kind
        key, refused = await _asked(host, names.PREPARE_FOR_MIGRATION_COMMAND,
                                    prepare_body(odd))
        assert (key, refused["result"]) == (names.PREPARE_FOR_MIGRATION_ANSWER, False), refused
        assert f"unknown disk type {kind!r}" in refused["details"], refused
    assert (_files(tmp_path / "share"), root.read_bytes()) == before


# --- PrepareForMigrationCommand: an ISO that cannot be the VM's ------------------------------

STORE_URL = "cifs://10.1.1.1/primary?user=admin&password=s3cret"  # the mapped share


def _iso_disk(path: str, store: dict[str, Any] | None) -> dict[str, Any]:
    data: dict[str, Any] = {"path": path, "format": "ISO", "id": 205}
    if store is not None:
        data["imageDataStore"] = store
    return {"data": {names.TEMPLATE_OBJECT_TO: data}, "diskSeq": 3, "path": path,
            "type": "ISO"}


_ON_STORE = {names.NFS_TO: {"_url": STORE_URL, "_role": "Image"}}


@pytest.mark.parametrize(("iso", "expected"), [
    (_iso_disk("../../Windows/tools.iso", _ON_STORE), "climbs out of its root"),
    (_iso_disk("iso/2/205/tools.vhdx", _ON_STORE), "is not a .iso"),
    (_iso_disk("configdrive/i-2-100-VM.iso", None), "not on a primary pool or a cifs image"),
    (_iso_disk("iso/2/205/gone.iso", _ON_STORE), "gone.iso cannot be reached from this host"),
    ({"data": {names.VOLUME_OBJECT_TO: {"path": ROOT}}, "diskSeq": 3, "type": "ISO"},
     "data is not a TemplateObjectTO"),
], ids=["outside-the-store", "not-an-iso", "no-store", "missing", "not-a-template"])
async def test_prepare_refuses_an_iso_the_vm_could_not_hold_here(
    host: Running, tmp_path: Path, iso: dict[str, Any], expected: str
) -> None:
    """A live move keeps the path of the ISO in the VM's DVD drive: one this host would not
    give the VM at its start, or cannot reach, is a shortfall named in a failed answer."""
    disk_file(tmp_path / "share", ROOT)
    vm = vm_to(VM, ROOT)
    vm["disks"][1] = iso
    key, refused = await _asked(host, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(vm))
    assert (key, refused["result"]) == (names.PREPARE_FOR_MIGRATION_ANSWER, False), refused
    details = str(refused["details"])
    assert "disk ISO (the VM's CD)" in details and expected in details, details
    assert "s3cret" not in details


# --- PrepareForMigrationCommand: more disks or NICs than a VM takes ---------------------------


def _disks_beyond_the_slots(vm: dict[str, Any]) -> None:
    data = {**vm["disks"][0], "type": "DATADISK"}
    vm["disks"] += [{**data, "diskSeq": i} for i in range(1, 100)]


def _nics_beyond_a_vm(vm: dict[str, Any]) -> None:
    vm["nics"] = [{**vm["nics"][0], "deviceId": i} for i in range(100)]


@pytest.mark.parametrize(("change", "expected"), [
    (_disks_beyond_the_slots, "vm.disks has 101 entries; a VM takes at most 70"),
    (_nics_beyond_a_vm, "vm.nics has 100 entries; a VM takes at most 64"),
], ids=["disks", "nics"])
async def test_prepare_refuses_more_devices_than_a_vm_takes_before_looking_at_any(
    host: Running, tmp_path: Path, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    """No VM that could move here has them: not "ready", and no file is looked up per
    disk (StartCommand refuses the same VM)."""
    disk_file(tmp_path / "share", ROOT)
    vm = vm_to(VM, ROOT)
    change(vm)
    key, refused = await _asked(host, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(vm))
    assert (key, refused["result"]) == (names.PREPARE_FOR_MIGRATION_ANSWER, False), refused
    assert refused["details"].endswith(expected), refused["details"]


async def test_a_volume_copy_that_outlasts_the_ms_wait_is_stopped_and_its_source_kept(
    host: Running,
) -> None:
    """The MS waits ``wait`` seconds for the move, then fails it and keeps the volume in its
    old pool. A copy still running then must not finish and remove the source: the volume
    the MS knows would be gone. The source is kept and the failure answered before the MS
    gives up; Hyper-V cannot stop this copy, which holds its file open meanwhile, and
    what it wrote is removed once it ends."""
    pool = _local_pool(host)
    _linked_clone(host)
    body = volume_body(SPARE, None, _other_pool(), source_pool=_local_store())
    body["wait"] = 2
    host.emulator.faults.slow_next_job("ConvertVirtualHardDisk", 2.5)
    started = asyncio.get_running_loop().time()
    kind, answer = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert asyncio.get_running_loop().time() - started < body["wait"]
    assert (kind, answer["result"]) == (names.MIGRATE_VOLUME_ANSWER, False), answer
    assert f"{SPARE}.vhdx was kept" in answer["details"], answer
    assert _files(pool) == [f"{SPARE}.vhdx", "tmpl-1.vhdx"]
    target = _drive(host, "D", "pool2")
    for _ in range(100):  # the copy ends 2.5 s after it began; its file goes then
        if not _files(target):
            break
        await asyncio.sleep(0.05)
    assert _files(target) == []
    assert _files(pool) == [f"{SPARE}.vhdx", "tmpl-1.vhdx"]


async def test_a_merge_that_outlasts_the_ms_wait_is_stopped_before_its_file_is_removed(
    host: Running,
) -> None:
    """The merge of a linked clone into the target pool is Hyper-V's job, which writes the
    aside file until it ends: past the bound it is stopped (as an overdue migration is),
    and then its file removed, so once the failure is answered no job is still writing in
    the target pool and nothing is left there for a later sweep."""
    _linked_clone(host)
    body = volume_body(SPARE, None, _other_pool(), source_pool=_local_store())
    body["wait"] = 2
    host.emulator.faults.slow_next_job("ConvertVirtualHardDisk", 3 * body["wait"],
                                       cancellable=True)
    kind, answer = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert (kind, answer["result"]) == (names.MIGRATE_VOLUME_ANSWER, False), answer
    merges = await host.emulator.query(wql.select("Msvm_StorageJob"))
    assert [(job["JobType"], job["JobState"]) for job in merges] == [(6, 8)]  # Terminated
    assert _files(_drive(host, "D", "pool2")) == []
    assert _files(_local_pool(host)) == [f"{SPARE}.vhdx", "tmpl-1.vhdx"]


async def _interrupted_before_the_source_went(host: Running, monkeypatch: pytest.MonkeyPatch,
                                             body: dict[str, Any], folder: str) -> None:
    """The MigrateVolumeCommand ``body`` run as an agent stopped after its copy was renamed
    into the target pool and before the source in ``folder`` was removed (the source's
    removal fails, once): a failed answer, the copy and its marker left."""
    remove = EmulatedFiles.remove
    interrupted: list[str] = []

    async def interrupting(files: EmulatedFiles, path: str) -> bool:
        if path.casefold() == f"{folder}\\{SPARE}.vhdx".casefold() and not interrupted:
            interrupted.append(path)
            raise HostFileError(f"cannot delete {path}: the agent stopped")
        return await remove(files, path)

    monkeypatch.setattr(EmulatedFiles, "remove", interrupting)
    _, failed = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert failed["result"] is False and interrupted, failed


async def test_a_move_interrupted_after_its_copy_is_finished_by_the_retry(
    host: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent is stopped (here: the source's removal fails) after the merged copy was
    renamed into the target pool and before the source was removed: both files are there
    and the MS keeps the volume in its old pool. Its retry finishes the move, removing the
    source, instead of refusing the copy as a file that is not replaced."""
    pool, target = _local_pool(host), _drive(host, "D", "pool2")
    _linked_clone(host)
    body = volume_body(SPARE, None, _other_pool(), source_pool=_local_store())
    await _interrupted_before_the_source_went(host, monkeypatch, body, LOCAL_POOL)
    assert _files(target) == [f".{SPARE}.vhdx.moving", f"{SPARE}.vhdx"]
    assert _files(pool) == [f"{SPARE}.vhdx", "tmpl-1.vhdx"]

    _, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert moved["result"] is True, moved
    assert _files(target) == [f"{SPARE}.vhdx"]
    assert _files(pool) == ["tmpl-1.vhdx"]
    assert vhd.read_data(target / f"{SPARE}.vhdx", 0, 11) == b"template os"


async def test_a_copy_left_by_an_interrupted_move_is_not_kept_for_a_changed_source(
    host: Running,
) -> None:
    """After the failed move the MS keeps the volume in its old pool, where a VM may write
    to it before the retry: the copy the interrupted move left is then stale, and is made
    again. A file in the target pool with no marker of a move of this source is refused,
    as before."""
    pool, target = _local_pool(host), _drive(host, "D", "pool2")
    body = volume_body(SPARE, None, _other_pool(), source_pool=_local_store())
    disk_file(pool, SPARE)
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{SPARE}.vhdx").write_bytes(b"not this volume")
    _, refused = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert refused["result"] is False
    assert "already exists; it is not replaced" in refused["details"], refused

    source = f"{LOCAL_POOL}\\{SPARE}.vhdx"
    (target / f".{SPARE}.vhdx.moving").write_text(json.dumps(
        {"source": source, "size": 1, "modified_ns": 1}))
    _, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert moved["result"] is True, moved
    assert _files(target) == [f"{SPARE}.vhdx"] and _files(pool) == []
    assert vhd.read_info(target / f"{SPARE}.vhdx").virtual_size_bytes > 0


async def test_a_volume_on_a_source_pool_that_cannot_be_reached_is_not_moved(
    host: Running, tmp_path: Path
) -> None:
    """Windows reports a share whose server is down, or that was taken away, as a path not
    found: the volume on it reads as absent. The MigrateVolumeAnswer names the pool's root
    as what cannot be reached (not the volume as missing from it) and the target pool is
    left untouched; once the share is back the same command moves the volume."""
    share, target = tmp_path / "share", _drive(host, "D", "pool2")
    disk_file(share, SPARE)
    body = volume_body(SPARE, None, _other_pool(), source_pool=smb_pool())
    share.rename(tmp_path / "away")  # the share cannot be reached
    kind, failed = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert (kind, failed["result"]) == (names.MIGRATE_VOLUME_ANSWER, False), failed
    assert "pool's root \\\\10.1.1.1\\primary," in failed["details"], failed["details"]
    assert "cannot be reached" in failed["details"], failed["details"]
    assert _files(target) == []

    (tmp_path / "away").rename(share)
    kind, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert (kind, moved["result"]) == (names.MIGRATE_VOLUME_ANSWER, True), moved
    assert _files(target) == [f"{SPARE}.vhdx"]
    assert not (share / f"{SPARE}.vhdx").exists()


async def test_an_interrupted_move_is_not_taken_for_finished_while_its_source_is_unseen(
    host: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move interrupted after its copy was renamed into place leaves the copy, its marker
    and the source. Retried while the source's share cannot be reached, the source reads
    as removed: finishing the move then would tell the MS the volume moved and leave the
    source on the share once it is back. The answer fails naming the pool's root, the
    copy and its marker kept; once the share is back the retry finishes the move."""
    share, target = tmp_path / "share", _drive(host, "D", "pool2")
    disk_file(share, SPARE)
    body = volume_body(SPARE, None, _other_pool(), source_pool=smb_pool())
    await _interrupted_before_the_source_went(host, monkeypatch, body, SHARE)
    moved_files = [f".{SPARE}.vhdx.moving", f"{SPARE}.vhdx"]
    assert _files(target) == moved_files and (share / f"{SPARE}.vhdx").exists()

    share.rename(tmp_path / "away")  # the share cannot be reached
    kind, unseen = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert (kind, unseen["result"]) == (names.MIGRATE_VOLUME_ANSWER, False), unseen
    assert "pool's root \\\\10.1.1.1\\primary," in unseen["details"], unseen["details"]
    assert "cannot be reached" in unseen["details"], unseen["details"]
    assert _files(target) == moved_files

    (tmp_path / "away").rename(share)
    _, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert moved["result"] is True, moved
    assert _files(target) == [f"{SPARE}.vhdx"]
    assert not (share / f"{SPARE}.vhdx").exists()


async def test_a_volume_is_not_moved_into_a_pool_that_cannot_be_reached(
    host: Running, tmp_path: Path
) -> None:
    """A target share that went away reads as an empty folder, no copy of an earlier move
    in it: the answer names the pool's root as what cannot be reached, before any copy is
    begun, and the source is kept; once the share is back the same command moves it."""
    share, pool = tmp_path / "share", _local_pool(host)
    disk_file(pool, SPARE)
    body = volume_body(SPARE, None, smb_pool(), source_pool=_local_store())
    share.rename(tmp_path / "away")  # the share cannot be reached
    kind, failed = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert (kind, failed["result"]) == (names.MIGRATE_VOLUME_ANSWER, False), failed
    assert "pool's root \\\\10.1.1.1\\primary," in failed["details"], failed["details"]
    assert "cannot be reached" in failed["details"], failed["details"]
    assert _files(pool) == [f"{SPARE}.vhdx"]

    (tmp_path / "away").rename(share)
    kind, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert (kind, moved["result"]) == (names.MIGRATE_VOLUME_ANSWER, True), moved
    assert (share / f"{SPARE}.vhdx").exists() and _files(pool) == []


async def test_a_move_whose_source_is_gone_is_not_said_missing_while_its_target_is_unseen(
    host: Running, tmp_path: Path
) -> None:
    """A move interrupted after it removed its source leaves the copy and its marker in the
    target pool. Retried while that pool's share cannot be reached, the marker reads as
    absent: the answer names the target pool's root as what cannot be reached, not the
    volume as missing from its old pool (it is in the new one); once the share is back
    the retry finishes the move."""
    share = tmp_path / "share"
    disk_file(share, SPARE)
    (share / f".{SPARE}.vhdx.moving").write_text(json.dumps(
        {"source": f"{LOCAL_POOL}\\{SPARE}.vhdx", "size": 1, "modified_ns": 1}))
    body = volume_body(SPARE, None, smb_pool(), source_pool=_local_store())
    share.rename(tmp_path / "away")  # the share cannot be reached
    kind, failed = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert (kind, failed["result"]) == (names.MIGRATE_VOLUME_ANSWER, False), failed
    assert "pool's root \\\\10.1.1.1\\primary," in failed["details"], failed["details"]
    assert "cannot be reached" in failed["details"], failed["details"]

    (tmp_path / "away").rename(share)
    assert (share / f".{SPARE}.vhdx.moving").exists()
    kind, moved = await _asked(host, names.MIGRATE_VOLUME_COMMAND, body)
    assert (kind, moved["result"]) == (names.MIGRATE_VOLUME_ANSWER, True), moved
    assert not (share / f".{SPARE}.vhdx.moving").exists()
    assert (share / f"{SPARE}.vhdx").exists()


async def test_a_delete_of_a_volume_moving_with_its_running_vm_waits_for_the_move(
    host: Running,
) -> None:
    """A DeleteCommand of the volume in its new pool that arrives while the running VM's
    disk is being moved there waits for the move (which holds the files' locks inside the
    VM's), then finds the VM running on the file and keeps it. Without the file locks it
    answered that there was nothing to delete, and the move then put the file there."""
    moving = await _moving_with_its_vm(host, 1.5)
    store = {names.PRIMARY_DATA_STORE_TO: {"uuid": OTHER_POOL_UUID, "id": 2,
                                           "host": "127.0.0.1", "poolType": "Filesystem",
                                           "path": OTHER_POOL, "port": 0}}
    _, deleted = await host.answer(names.DELETE_COMMAND, {"data": {names.VOLUME_OBJECT_TO: {
        "uuid": DATA, "path": DATA, "volumeType": "DATADISK", "dataStore": store,
        "format": "VHDX", "name": "DATA-100", "id": 32}}})
    assert moving.done()  # the delete waited for it
    _, moved = await moving
    assert moved["result"] is True, moved
    assert deleted["result"] is False, deleted
    assert f"is attached to the running VM {VM}" in deleted["details"], deleted
    assert _files(_drive(host, "D", "pool2")) == [f"{DATA}.vhdx"]
    assert await _power(host) == "PowerOn"


READ_BOUND_S = 2.0  # far above what a read takes, far below what the slowed move takes


async def test_the_reads_the_ms_sends_during_a_move_do_not_wait_for_its_file_locks(
    host: Running,
) -> None:
    """The management server keeps sending its periodic reads while a running VM's disk
    moves (a storage migration takes as long as the disk is large): a GetVolumeStats of
    the moving disk, the HostVmStateReport and a GetVmStats of the VM. None takes the
    move's file locks or its VM's lock, so each answers at once, and truly (the disk
    measured, the VM on), while the move still runs; one that waited would answer only
    after the move, and the management server, its stats timeout past, would count the
    host's disk and VM unreported meanwhile."""
    _, startup = await host.post(names.STARTUP_COMMAND, STARTUP_REQUEST)
    pool_uuid = startup[1][names.STARTUP_STORAGE_COMMAND]["poolInfo"]["uuid"]
    moving = await _moving_with_its_vm(host, 4 * READ_BOUND_S)

    async def read(fqcn: str, body: dict[str, Any]) -> Any:
        status, reply = await asyncio.wait_for(host.post(fqcn, body), READ_BOUND_S)
        assert status == 200, reply
        assert not moving.done(), "the move ended before the read answered"
        return reply

    (stats,) = (await read(names.GET_VOLUME_STATS_COMMAND, {
        "volumeUuids": [DATA], "poolType": "Filesystem", "poolUuid": pool_uuid,
        "contextMap": {}, "wait": 60, "bypassHostMaintenance": False}))[0].values()
    assert stats["result"] is True and DATA in stats["volumeStats"], stats
    report = await read(names.HOST_VM_STATE_REPORT_COMMAND, {})
    assert {VM: "PowerOn"} in report, report
    (vm_stats,) = (await read(names.GET_VM_STATS_COMMAND, ms422_json(
        "19_GetVmStatsCommand.json") | {"vmNames": [VM]}))[0].values()
    assert vm_stats["result"] is True and VM in vm_stats["vmStatsMap"], vm_stats
    _, moved = await moving
    assert moved["result"] is True, moved
