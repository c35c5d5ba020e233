"""Escapes from the pools, tried over real HTTPS as an attacker on the management network
would: every command that takes a path, with unregistered roots, absolute paths, other
drives, ``..``, UNC paths to unregistered shares, links inside a pool or image store that
lead out of it, and format tricks. Each is a failed answer saying what is wrong, and
nothing anywhere on the emulated host changes (every file and link listed, with digests,
before and after), no VM is made.

The emulated host (all under ``tmp_path``):

=============  ====================================  =========================================
folder         the host sees                         holds
=============  ====================================  =========================================
``C``          drive C                               ``Windows\\System32\\kernel32.dll``,
                                                     ``Windows\\System32\\config\\SAM``,
                                                     ``outside\\victim.vhdx``, the local pool
                                                     ``pool`` (``vol.vhdx``, ``real\\``)
``D``          drive D                               ``data\\victim.vhdx``
``secondary``  ``\\\\10.1.1.1\\secondary`` (image store)  ``t\\ok.vhdx``, ``iso\\ok.iso``
``evil``       ``\\\\10.9.9.9\\evil``, never registered   ``victim.vhdx``
``beyond``     nothing: outside every drive and share  ``secret.vhdx``, ``secret.iso``
=============  ====================================  =========================================

Links (symbolic links: what a junction or a directory symlink is on Windows):
``C:\\pool\\escape`` -> ``C\\outside``, ``C:\\pool\\far`` -> ``beyond``,
``C:\\pool\\linked.vhdx`` -> ``C\\outside\\victim.vhdx``, ``C:\\pool\\dangling.vhdx`` ->
``C\\outside\\new.vhdx`` (absent), ``C:\\pool\\alias`` -> ``C\\pool\\real`` (inside: allowed);
``secondary\\leak.vhdx`` -> ``beyond\\secret.vhdx``, ``secondary\\leak.iso`` ->
``beyond\\secret.iso``, ``secondary\\isos`` -> ``beyond``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cloudstack import names
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator import vhd
from tests.cloudstack.fixtures import ms422_json
from tests.e2e.conftest import PRIVATE_IP, Running, serving

POOL = "C:\\pool"
POOL_UUID = "1f0e2d3c-4b5a-4697-8877-665544332211"
SMB_UUID = "5d719485-f8b3-3fc2-b05a-8f63a912e709"  # sample 30/31's pool
VOLUME_UUID = "8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d"
VOLUME_TO, TEMPLATE_TO = names.VOLUME_OBJECT_TO, names.TEMPLATE_OBJECT_TO
PRIMARY_TO, NFS_TO = names.PRIMARY_DATA_STORE_TO, names.NFS_TO
SECONDARY = "cifs://10.1.1.1/secondary"
MIB = 1 << 20
NOT_REGISTERED = "is not registered on this host"
LINK = "is a link leading out of"


# --- the emulated host ----------------------------------------------------------------------


def _disk(path: Path, size: int = 16 * MIB) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    vhd.create(path, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, size)
    return path


def _lay_out(root: Path) -> None:
    system = root / "C" / "Windows" / "System32"
    (system / "config").mkdir(parents=True)
    (system / "kernel32.dll").write_bytes(b"MZ kernel32")
    (system / "config" / "SAM").write_bytes(b"regf SAM")
    for victim in (root / "C" / "outside", root / "D" / "data", root / "evil"):
        _disk(victim / "victim.vhdx")
    _disk(root / "beyond" / "secret.vhdx")
    (root / "beyond" / "secret.iso").write_bytes(b"CD001 secret")
    pool = root / "C" / "pool"
    _disk(pool / "vol.vhdx")
    (pool / "real").mkdir()
    _disk(root / "secondary" / "t" / "ok.vhdx")
    (root / "secondary" / "iso").mkdir()
    (root / "secondary" / "iso" / "ok.iso").write_bytes(b"CD001 ok")
    (root / "primary").mkdir()
    _link(pool / "escape", root / "C" / "outside")
    _link(pool / "far", root / "beyond")
    _link(pool / "linked.vhdx", root / "C" / "outside" / "victim.vhdx")
    _link(pool / "dangling.vhdx", root / "C" / "outside" / "new.vhdx")
    _link(pool / "alias", pool / "real")
    _link(root / "secondary" / "leak.vhdx", root / "beyond" / "secret.vhdx")
    _link(root / "secondary" / "leak.iso", root / "beyond" / "secret.iso")
    _link(root / "secondary" / "isos", root / "beyond")


def _link(link: Path, target: Path) -> None:
    link.symlink_to(target, target_is_directory=target.is_dir())


def _config(root: Path) -> AgentConfig:
    config = root / "agent.toml"
    config.write_text(f"""[agent]
local_storage_path = '{POOL}'
[emulator]
switches = ["vSwitch0"]
[emulator.drives]
C = '{root / "C"}'
D = '{root / "D"}'
[emulator.shares]
'\\\\10.1.1.1\\secondary' = '{root / "secondary"}'
'\\\\10.1.1.1\\primary' = '{root / "primary"}'
'\\\\10.9.9.9\\evil' = '{root / "evil"}'
""")
    return load_config(config, state_dir=root / "state", backend="emulator",
                       private_ip=PRIVATE_IP)


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Running]:
    _lay_out(tmp_path)
    async with serving(_config(tmp_path)) as running:
        yield running


def snapshot(root: Path) -> dict[str, str]:
    """Every file (by digest) and link (by target) on the emulated host, links not
    followed: the drives, the shares and the folder beyond them."""
    found: dict[str, str] = {}
    for top in ("C", "D", "secondary", "primary", "evil", "beyond"):
        for folder, dirs, files in os.walk(root / top):
            for name in dirs + files:
                path = Path(folder) / name
                key = str(path.relative_to(root))
                if path.is_symlink():
                    found[key] = "-> " + os.readlink(path)
                elif path.is_file():
                    found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


async def _vm_names(running: Running) -> list[str]:
    found = await running.emulator.query(wql.select(
        "Msvm_ComputerSystem", wql.eq("Caption", "Virtual Machine")))
    return [str(vm["ElementName"]) for vm in found]


# --- request bodies ---------------------------------------------------------------------------


def _store(path: str = POOL, uuid: str = POOL_UUID, pool_type: str = "Filesystem",
           host: str = "127.0.0.1") -> dict[str, Any]:
    return {PRIMARY_TO: {"uuid": uuid, "id": 1, "poolType": pool_type, "host": host,
                         "path": path, "port": 0}}


def _nfs(url: str = SECONDARY) -> dict[str, Any]:
    return {NFS_TO: {"_url": url, "_role": "Image"}}


def _volume(store: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    values = {"uuid": VOLUME_UUID, "volumeType": "DATADISK", "dataStore": store or _store(),
              "name": "DATA-9", "size": 64 * MIB, "format": "VHDX", "id": 9, "accountId": 2}
    return {VOLUME_TO: values | fields}


def _template(store: dict[str, Any], **fields: Any) -> dict[str, Any]:
    values = {"uuid": "0c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e", "id": 206, "format": "VHDX",
              "accountId": 2, "name": "206-2-tmpl", "imageDataStore": store}
    return {TEMPLATE_TO: values | fields}


def _iso(store: dict[str, Any], path: str) -> dict[str, Any]:
    return {TEMPLATE_TO: {"id": 7, "format": "ISO", "path": path, "imageDataStore": store}}


def _copy(src: dict[str, Any], dest: dict[str, Any]) -> dict[str, Any]:
    return {"srcTO": src, "destTO": dest, "executeInSequence": False, "wait": 0}


def _filer(path: str, pool_type: str = "Filesystem", uuid: str = POOL_UUID,
           host: str = "127.0.0.1") -> dict[str, Any]:
    return {"uuid": uuid, "host": host, "path": path, "type": pool_type, "port": 0}


def _start(*disks: dict[str, Any]) -> dict[str, Any]:
    return {"vm": {"name": "i-2-9-VM", "id": 9, "type": "User", "cpus": 1, "minRam": 256 * MIB,
                   "maxRam": 256 * MIB, "disks": list(disks), "nics": []}}


def _disk_to(kind: str, data: dict[str, Any], seq: int = 0) -> dict[str, Any]:
    return {"type": kind, "diskSeq": seq, "data": data}


def _attach(disk: dict[str, Any]) -> dict[str, Any]:
    return {"vmName": "i-2-9-VM", "disk": disk}


def _destroy(mount_point: str, path: str, pool_type: str = "Filesystem",
             pool_uuid: str | None = None) -> dict[str, Any]:
    volume = {"id": 9, "mountPoint": mount_point, "path": path, "storagePoolType": pool_type,
              "size": MIB}
    if pool_uuid:
        volume["storagePoolUuid"] = pool_uuid
    return {"volume": volume}


def _create(pool: dict[str, Any], template_url: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"volId": 9, "pool": pool, "diskCharacteristics": {
        "size": 64 * MIB, "type": "DATADISK", "name": "x"}}
    if template_url is not None:
        body["templateUrl"] = template_url
    return body


def _download(local_path: str, url: str) -> dict[str, Any]:
    return {"localPath": local_path, "url": url, "format": "VHDX"}


def _resize(pool: dict[str, Any], path: str) -> dict[str, Any]:
    return {"pool": pool, "path": path, "newSize": 128 * MIB, "currentSize": 16 * MIB}


SMB_ROOT_START = ms422_json("30_StartCommand_root_on_SMB_pool.json")

# (command, body, what the details say)
ESCAPES: dict[str, tuple[str, dict[str, Any], str]] = {
    # CreateObjectCommand
    "create in an unregistered folder": (names.CREATE_OBJECT_COMMAND, {"data": _volume(
        _store("C:\\Windows\\System32"), uuid="kernel32")},
        f"pool root C:\\Windows\\System32 {NOT_REGISTERED}"),
    "create on another drive": (names.CREATE_OBJECT_COMMAND, {"data": _volume(
        _store("D:\\data"))}, f"D:\\data {NOT_REGISTERED}"),
    "create on an unregistered share": (names.CREATE_OBJECT_COMMAND, {"data": _volume(
        _store("/evil", SMB_UUID, "SMB", "10.9.9.9"))}, f"\\\\10.9.9.9\\evil {NOT_REGISTERED}"),
    "create climbing out": (names.CREATE_OBJECT_COMMAND, {"data": _volume(
        uuid="..\\outside\\new")}, "climbs out"),
    "create with a DLL format": (names.CREATE_OBJECT_COMMAND, {"data": _volume(
        uuid="kernel32", format="DLL")}, "not VHD or VHDX"),
    "create through a folder link": (names.CREATE_OBJECT_COMMAND, {"data": _volume(
        uuid="escape\\new")}, f"C:\\pool\\escape {LINK}"),
    "create through a dangling link": (names.CREATE_OBJECT_COMMAND, {"data": _volume(
        uuid="dangling")}, f"C:\\pool\\dangling.vhdx {LINK}"),
    "create beyond the host": (names.CREATE_OBJECT_COMMAND, {"data": _volume(
        uuid="far\\new")}, f"C:\\pool\\far {LINK}"),
    # DeleteCommand
    "delete kernel32.dll as a DLL volume": (names.DELETE_COMMAND, {"data": _volume(
        _store("C:\\Windows\\System32"), path="kernel32", format="DLL")}, NOT_REGISTERED),
    "delete with a DLL format in the pool": (names.DELETE_COMMAND, {"data": _volume(
        path="..\\Windows\\System32\\kernel32", format="DLL")}, "is not VHD, VHDX or ISO"),
    "delete by an absolute path": (names.DELETE_COMMAND, {"data": _volume(
        path="C:\\outside\\victim.vhdx")}, "is outside the pool"),
    "delete on another drive": (names.DELETE_COMMAND, {"data": _volume(
        path="D:\\data\\victim.vhdx")}, "is outside the pool"),
    "delete on an unregistered share by UNC": (names.DELETE_COMMAND, {"data": _volume(
        path="\\\\10.9.9.9\\evil\\victim.vhdx")}, "is outside the pool"),
    "delete on an image store": (names.DELETE_COMMAND, {"data": _volume(
        _nfs("cifs://10.9.9.9/evil"), path="victim.vhdx")}, "not on a primary data store"),
    "delete through a file link": (names.DELETE_COMMAND, {"data": _volume(
        path="linked")}, f"C:\\pool\\linked.vhdx {LINK}"),
    "delete through a folder link": (names.DELETE_COMMAND, {"data": _volume(
        path="escape\\victim")}, f"C:\\pool\\escape {LINK}"),
    # ResizeVolumeCommand
    "resize in an unregistered folder": (names.RESIZE_VOLUME_COMMAND, _resize(
        _filer("C:\\outside"), "victim"), f"C:\\outside {NOT_REGISTERED}"),
    "resize through a folder link": (names.RESIZE_VOLUME_COMMAND, _resize(
        _filer(POOL), "escape\\victim"), LINK),
    "resize through a file link": (names.RESIZE_VOLUME_COMMAND, _resize(
        _filer(POOL), "linked"), LINK),
    "resize climbing out": (names.RESIZE_VOLUME_COMMAND, _resize(
        _filer(POOL), "..\\outside\\victim"), "climbs out"),
    # legacy CreateCommand, DestroyCommand, PrimaryStorageDownloadCommand
    "legacy create in an unregistered folder": (names.CREATE_COMMAND, _create(
        _filer("C:\\outside")), NOT_REGISTERED),
    "legacy create from a linked template": (names.CREATE_COMMAND, _create(
        _filer(POOL), "linked.vhdx"), LINK),
    "destroy SAM by its mount point": (names.DESTROY_COMMAND, _destroy(
        "C:\\Windows\\System32\\config", "SAM"),
        "C:\\Windows\\System32\\config is not the root of a pool registered"),
    "destroy climbing out to SAM": (names.DESTROY_COMMAND, _destroy(
        POOL, "..\\Windows\\System32\\config\\SAM"), "climbs out"),
    "destroy through a file link": (names.DESTROY_COMMAND, _destroy(POOL, "linked"), LINK),
    "destroy on an unregistered SMB pool": (names.DESTROY_COMMAND, _destroy(
        "/evil", "victim", "SMB", SMB_UUID), f"pool {SMB_UUID} {NOT_REGISTERED}"),
    "download into an unregistered folder": (names.PRIMARY_STORAGE_DOWNLOAD_COMMAND, _download(
        "C:\\Windows\\System32", f"{SECONDARY}/t/ok.vhdx"),
        "C:\\Windows\\System32 is not the root of a pool registered"),
    "download through an image store link": (names.PRIMARY_STORAGE_DOWNLOAD_COMMAND, _download(
        POOL, f"{SECONDARY}/leak.vhdx"), f"\\\\10.1.1.1\\secondary\\leak.vhdx {LINK}"),
    "download from an administrative share": (names.PRIMARY_STORAGE_DOWNLOAD_COMMAND,
        _download(POOL, "cifs://10.1.1.1/C$/outside/victim.vhdx"), "administrative share"),
    "download from the system folder's share": (names.PRIMARY_STORAGE_DOWNLOAD_COMMAND,
        _download(POOL, "cifs://10.1.1.1/ADMIN$/System32/victim.vhdx"),
        "administrative share"),
    # CopyCommand
    "copy a template to an unregistered folder": (names.COPY_COMMAND, _copy(
        _template(_nfs(), path="t/ok.vhdx"), _template(_store("C:\\Windows"))),
        f"C:\\Windows {NOT_REGISTERED}"),
    "copy a template climbing out": (names.COPY_COMMAND, _copy(
        _template(_nfs(), path="t/ok.vhdx"), _template(_store(), path="..\\outside\\t")),
        "climbs out"),
    "copy a template through a folder link": (names.COPY_COMMAND, _copy(
        _template(_nfs(), path="t/ok.vhdx"), _template(_store(), path="escape\\t")), LINK),
    "copy a template as a DLL": (names.COPY_COMMAND, _copy(
        _template(_nfs(), path="t/ok.vhdx"), _template(_store(), format="DLL")),
        "is not VHD, VHDX or ISO"),
    "copy a linked template from the image store": (names.COPY_COMMAND, _copy(
        _template(_nfs(), path="leak.vhdx"), _template(_store())), LINK),
    "copy a template from an administrative share": (names.COPY_COMMAND, _copy(
        _template(_nfs("cifs://10.1.1.1/C$"), path="outside/victim.vhdx"),
        _template(_store())), "administrative share"),
    "copy a template from a drive's share spelt in lower case": (names.COPY_COMMAND, _copy(
        _template(_nfs("cifs://10.1.1.1/d$"), path="outside/victim.vhdx"),
        _template(_store())), "administrative share"),
    "clone a template of an unregistered folder": (names.COPY_COMMAND, _copy(
        _template(_store("C:\\outside"), path="victim"), _volume()),
        f"C:\\outside {NOT_REGISTERED}"),
    "clone into an unregistered folder": (names.COPY_COMMAND, _copy(
        _template(_store(), path="vol"), _volume(_store("D:\\data", "another-pool"))),
        f"D:\\data {NOT_REGISTERED}"),
    "copy a volume of another drive to the image store": (names.COPY_COMMAND, _copy(
        _volume(_store("D:\\data"), path="victim"), _volume(_nfs(), path="volumes/9")),
        f"D:\\data {NOT_REGISTERED}"),
    "copy a volume through an image store link": (names.COPY_COMMAND, _copy(
        _volume(path="vol"), _volume(_nfs(), path="isos")), f"secondary\\isos {LINK}"),
    "copy a template from a volume climbing out": (names.COPY_COMMAND, _copy(
        _volume(path="vol"), _template(_nfs(), path="../../outside")), "climbs out"),
    # StartCommand, AttachCommand, AttachIsoCommand
    "start from another drive": (names.START_COMMAND, _start(_disk_to("ROOT", _volume(
        _store("D:\\data"), path="victim"))), f"D:\\data {NOT_REGISTERED}"),
    "start from a linked volume": (names.START_COMMAND, _start(_disk_to("ROOT", _volume(
        path="linked"))), LINK),
    "start with a linked ISO": (names.START_COMMAND, _start(
        _disk_to("ROOT", _volume(path="vol")), _disk_to("ISO", _iso(_nfs(), "leak.iso"), 3)),
        LINK),
    "start with an ISO climbing out": (names.START_COMMAND, _start(_disk_to("ISO", _iso(
        _nfs(), "../../beyond/secret.iso"))), "'..'"),
    "start on an SMB pool never registered": (names.START_COMMAND, SMB_ROOT_START,
        f"pool root \\\\10.1.1.1\\primary {NOT_REGISTERED}"),
    "attach a volume of another drive": (names.ATTACH_COMMAND, _attach(_disk_to(
        "DATADISK", _volume(_store("D:\\data"), path="victim"), 1)), NOT_REGISTERED),
    "attach a linked ISO": (names.ATTACH_COMMAND, _attach(_disk_to(
        "ISO", _iso(_nfs(), "leak.iso"))), LINK),
    "attach a kernel32 ISO": (names.ATTACH_COMMAND, _attach(_disk_to(
        "ISO", _iso(_store(), "C:\\Windows\\System32\\kernel32.dll"))), "is outside the pool"),
    "attach an ISO of an administrative share": (names.ATTACH_ISO_COMMAND, {
        "vmName": "i-2-9-VM", "attach": True, "isoPath": "outside/x.iso",
        "storeUrl": "cifs://10.1.1.1/C$"}, "administrative share"),
    "attach a linked ISO by its path": (names.ATTACH_ISO_COMMAND, {
        "vmName": "i-2-9-VM", "attach": True, "isoPath": "leak.iso", "storeUrl": SECONDARY},
        LINK),
    "attach a DLL as an ISO": (names.ATTACH_ISO_COMMAND, {
        "vmName": "i-2-9-VM", "attach": True, "isoPath": "t/ok.vhdx", "storeUrl": SECONDARY},
        "is not a .iso file"),
    # GetStorageStatsCommand
    "measure an unregistered folder": (names.GET_STORAGE_STATS_COMMAND, {
        "id": POOL_UUID, "pooltype": "Filesystem", "localPath": "C:\\Windows"},
        "not registered"),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
async def test_escape_is_refused_and_nothing_changes_when_a_command_names_it(
    host: Running, tmp_path: Path, case: str,
) -> None:
    fqcn, body, expected = ESCAPES[case]
    before = snapshot(tmp_path)
    key, answer = await host.answer(fqcn, body)
    assert key == names.ANSWER_FOR[fqcn]  # the answer class the MS casts to
    assert answer["result"] is False, answer
    assert expected in answer["details"], answer["details"]
    assert snapshot(tmp_path) == before
    assert await _vm_names(host) == []
    _, ping = await host.answer(names.PING_COMMAND, {})
    assert ping["result"] is True  # still serving


# --- what stays allowed ---------------------------------------------------------------------


async def test_link_inside_the_pool_is_followed_when_it_stays_inside(
    host: Running, tmp_path: Path,
) -> None:
    _, answer = await host.answer(names.CREATE_OBJECT_COMMAND, {"data": _volume(
        uuid="alias\\made")})
    assert answer["result"] is True, answer
    assert (tmp_path / "C" / "pool" / "real" / "made.vhdx").is_file()


async def test_pool_named_by_a_registered_uuid_is_served_at_its_registered_root(
    host: Running, tmp_path: Path,
) -> None:
    _, registered = await host.answer(names.MODIFY_STORAGE_POOL_COMMAND,
                                      ms422_json("31_ModifyStoragePoolCommand_SMB.json"))
    assert registered["result"] is True, registered
    before = snapshot(tmp_path / "C")
    body = {"data": _volume(_store("C:\\Windows\\System32", SMB_UUID), uuid="made")}
    _, answer = await host.answer(names.CREATE_OBJECT_COMMAND, body)
    assert answer["result"] is True, answer
    assert (tmp_path / "primary" / "made.vhdx").is_file()
    assert snapshot(tmp_path / "C") == before


async def test_smb_pool_serves_its_volumes_only_once_registered_and_after_a_restart(
    tmp_path: Path,
) -> None:
    _lay_out(tmp_path)
    _disk(tmp_path / "primary" / "8c93b28e-9a5e-4e24-988b-fdee9591ab94.vhdx")
    async with serving(_config(tmp_path)) as running:
        _, refused = await running.answer(names.START_COMMAND, SMB_ROOT_START)
        assert refused["result"] is False and NOT_REGISTERED in refused["details"]
        _, registered = await running.answer(names.MODIFY_STORAGE_POOL_COMMAND,
                                             ms422_json("31_ModifyStoragePoolCommand_SMB.json"))
        assert registered["result"] is True, registered
    async with serving(_config(tmp_path)) as running:  # restarted: the registry remembers
        _, started = await running.answer(names.START_COMMAND, SMB_ROOT_START)
        assert started["result"] is True, started
        assert await _vm_names(running) == ["i-2-7-VM"]
