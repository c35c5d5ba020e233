"""CopyCommand over real HTTPS, every protocol §5.2 case, checked on disk and in the emulator."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import hashlib
import io
import json
import os
import shutil
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import pytest

from hyperv_agent.cloudstack import names
from hyperv_agent.config import AgentConfig
from hyperv_agent.emulator import vhd
from hyperv_agent.handlers.vm import VmSettings
from hyperv_agent.hostfs.api import HostFiles, OpenMode
from hyperv_agent.hostfs.aside import MARK
from hyperv_agent.hostfs.properties import parse_template_properties
from hyperv_agent.hostfs.transfer import KEEP_FREE_BYTES
from hyperv_agent.hyperv import disks, jobs
from hyperv_agent.hyperv.schema import DiskFormat, DiskType
from tests.conftest import requires_tool
from tests.diskfiles import hyperv_writes, listing, qemu_info
from tests.e2e.conftest import (
    Running,
    config_with_shares,
    every_backend,
    record_file_looks,
    serving,
)
from tests.emulator.kit import ok, request_state
from tests.ports import free_port
from tests.s3server import S3Server
from tests.samba import Samba
from tests.sessions import hv

COPY = "org.apache.cloudstack.storage.command.CopyCommand"
COPY_ANSWER = "org.apache.cloudstack.storage.command.CopyCmdAnswer"
VOLUME_TO = "org.apache.cloudstack.storage.to.VolumeObjectTO"
TEMPLATE_TO = "org.apache.cloudstack.storage.to.TemplateObjectTO"
PRIMARY_TO = "org.apache.cloudstack.storage.to.PrimaryDataStoreTO"
NFS_TO = "com.cloud.agent.api.to.NfsTO"
S3_TO = "com.cloud.agent.api.to.S3TO"
MODIFY_POOL = "com.cloud.agent.api.ModifyStoragePoolCommand"
POOL_UUID = "5fe2bad3-d785-394e-9949-89786b8a63d2"
TEMPLATE_UUID = "7e4ca941-cb1b-4113-ab9e-043960d0fb10"
VOLUME_UUID = "19ae8e67-cb2c-4ab4-901e-e0b864272b59"
SECONDARY = "cifs://10.1.1.1/secondary?user=administrator&password=1pass%40word1"
MIB = 1 << 20
GIB = 1 << 30

backend_kind = every_backend  # every test here runs on the emulator and over WinRM


# --- fixture and helpers ------------------------------------------------------------------


def _config(tmp_path: Path, agent_toml: str = "") -> AgentConfig:
    (tmp_path / "secondary").mkdir(exist_ok=True)
    return config_with_shares(tmp_path, {"\\\\10.1.1.1\\secondary": tmp_path / "secondary"},
                              agent_toml)


@pytest.fixture
def s3(s3_server: S3Server) -> S3Server:
    """The session's loopback S3 server (tests/conftest.py)."""
    return s3_server


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Running]:
    """The agent on an emulated host whose \\\\10.1.1.1\\secondary share is a local folder."""
    async with serving(_config(tmp_path)) as running:
        yield running


def _drive_c(running: Running) -> Path:
    return running.agent.config.agent.state_dir / "emulator" / "drives" / "C"


def _pool(running: Running, name: str = "pool") -> Path:
    folder = _drive_c(running) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _primary(path: str = "C:\\pool", **fields: Any) -> dict[str, Any]:
    return {PRIMARY_TO: {"uuid": POOL_UUID, "id": 201, "host": "10.1.1.1",
                         "type": "Filesystem", "poolType": "Filesystem", "path": path,
                         "port": 0, **fields}}


def _nfs(url: str = SECONDARY) -> dict[str, Any]:
    return {NFS_TO: {"_url": url, "_role": "Image"}}


def _template(store: dict[str, Any], **fields: Any) -> dict[str, Any]:
    values = {"uuid": TEMPLATE_UUID, "id": 206, "format": "VHDX", "accountId": 2,
              "hvm": True, "displayText": "OS031", "imageDataStore": store,
              "hypervisorType": "Hyperv", "name": "206-2-73592258"}
    values.update(fields)
    return {TEMPLATE_TO: values}


def _volume(store: dict[str, Any], **fields: Any) -> dict[str, Any]:
    values = {"uuid": VOLUME_UUID, "volumeType": "ROOT", "dataStore": store, "name": "ROOT-5",
              "size": 52428800, "volumeId": 10, "vmName": "i-3-5-VM", "accountId": 3, "id": 10}
    values.update(fields)
    return {VOLUME_TO: values}


def _copy(src: dict[str, Any], dest: dict[str, Any]) -> dict[str, Any]:
    return {"srcTO": src, "destTO": dest, "executeInSequence": False, "wait": 10800}


def _disk(path: Path, size: int = GIB, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = vhd.DiskFormat.VHD if path.suffix == ".vhd" else vhd.DiskFormat.VHDX
    vhd.create(path, fmt, vhd.DiskType.DYNAMIC, size)
    if data:
        vhd.write_data(path, 0, data)
    return path


def _secondary(tmp_path: Path, relative: str) -> Path:
    path = tmp_path / "secondary" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


async def _copied(running: Running, body: dict[str, Any]) -> dict[str, Any]:
    key, answer = await running.answer(COPY, body)
    assert (key, answer["result"]) == (COPY_ANSWER, True), answer
    ((_, data),) = answer["newData"].items()
    assert isinstance(data, dict)
    return data


async def _refused(running: Running, body: dict[str, Any], expected: str) -> str:
    key, answer = await running.answer(COPY, body)
    assert (key, answer["result"]) == (COPY_ANSWER, False), answer
    assert answer.get("newData") is None
    assert expected in answer["details"], answer["details"]
    return str(answer["details"])


# --- A: template download to primary ------------------------------------------------------


async def test_download_names_file_by_content_when_sample_declares_vhd_as_vhdx(
    agent: Running, tmp_path: Path
) -> None:
    pool = _pool(agent)
    relative = "template/tmpl/2/201/6dda6631-4daa-3150-a49a-d5a4b0a4c4b6.vhd"
    source = _disk(_secondary(tmp_path, relative), 64 * MIB, b"boot sector")
    data = await _copied(agent, _copy(_template(_nfs(), path=relative),
                                      _template(_primary())))
    assert data["format"] == "VHD"  # the file is a VHD whatever the TO said
    installed = pool / f"{data['path']}.vhd"
    assert installed.read_bytes() == source.read_bytes()
    assert data["size"] == source.stat().st_size
    assert sorted(p.name for p in pool.iterdir()) == [installed.name]


async def test_copy_answer_hides_the_password_of_a_template_url_on_an_authenticated_server(
    agent: Running, tmp_path: Path
) -> None:
    """A template registered from a web server that asks for a login keeps its URL, with
    ``user:password@``, as origUrl; the MS sends it in both TOs and the answer's newData
    echoes it: without the password (urlsplit, and so a download, takes one holding '@')."""
    _pool(agent)
    relative = "template/tmpl/2/206/t.vhdx"
    _disk(_secondary(tmp_path, relative), 32 * MIB)
    url = "http://mirror:Zq9@Kw7pw@files.lab/t.vhdx"
    key, answer = await agent.answer(COPY, _copy(
        _template(_nfs(), path=relative, origUrl=url),
        _template(_primary(), origUrl=url)))
    assert (key, answer["result"]) == (COPY_ANSWER, True), answer
    assert answer["newData"][TEMPLATE_TO]["origUrl"] == "http://mirror:*****@files.lab/t.vhdx"
    assert "Zq9" not in json.dumps(answer) and "Kw7pw" not in json.dumps(answer)


@requires_tool("qemu-img")
@pytest.mark.parametrize("packing", ["bz2", "gz", "zip"])
async def test_download_decompresses_and_checks_checksum_when_template_is_packed(
    agent: Running, tmp_path: Path, packing: str
) -> None:
    pool = _pool(agent)
    raw = _disk(tmp_path / "raw" / "sys.vhdx", 256 * MIB, b"system vm")
    packed = _pack(raw, packing)
    _secondary(tmp_path, f"t/sys.vhdx.{packing}").write_bytes(packed)
    src = _template(_nfs(), path=f"t/sys.vhdx.{packing}",
                    origUrl=f"http://download.example.org/sys.vhdx.{packing}",
                    checksum=hashlib.md5(packed).hexdigest())
    data = await _copied(agent, _copy(src, _template(_primary(), path="fixed-name")))
    assert (data["path"], data["format"]) == ("fixed-name", "VHDX")
    info = qemu_info(pool / "fixed-name.vhdx")
    assert (info["format"], info["virtual-size"]) == ("vhdx", 256 * MIB)
    assert (pool / "fixed-name.vhdx").read_bytes() == raw.read_bytes()


def _pack(path: Path, packing: str) -> bytes:
    data = path.read_bytes()
    if packing == "bz2":
        return bz2.compress(data)
    if packing == "gz":
        return gzip.compress(data)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(path.name, data)
    return out.getvalue()


async def test_download_takes_first_vhd_when_template_path_is_a_folder(
    agent: Running, tmp_path: Path
) -> None:
    pool = _pool(agent)
    _secondary(tmp_path, "template/tmpl/2/7/readme.txt").write_text("x")
    source = _disk(_secondary(tmp_path, "template/tmpl/2/7/abc.vhdx"), 32 * MIB)
    data = await _copied(agent, _copy(_template(_nfs(), path="template/tmpl/2/7"),
                                      _template(_primary())))
    assert (pool / f"{data['path']}.vhdx").read_bytes() == source.read_bytes()


def _iso_image(standard_id: bytes = b"CD001") -> bytes:
    """The start of an optical disc image: 16 empty sectors of 2048 bytes, then a volume
    descriptor (a type byte, the standard identifier: CD001 for ISO 9660, BEA01 opening
    UDF's recognition sequence)."""
    return b"\0" * 32768 + b"\1" + standard_id + b"\1" + b"\0" * 2041


@pytest.mark.parametrize("standard_id", [b"CD001", b"BEA01"])
async def test_download_copies_iso(agent: Running, tmp_path: Path, standard_id: bytes) -> None:
    pool = _pool(agent)
    _secondary(tmp_path, "iso/tools.iso").write_bytes(_iso_image(standard_id))
    data = await _copied(agent, _copy(_template(_nfs(), path="iso/tools.iso", format="ISO"),
                                      _template(_primary(), format="ISO")))
    assert (pool / f"{data['path']}.iso").read_bytes() == _iso_image(standard_id)


@pytest.mark.parametrize(("relative", "expected"), [
    ("iso/tools.vhdx", "tools.vhdx is a .vhdx file, but the template's format is ISO"),
    ("iso/tools.iso", "is not an ISO image (no ISO 9660 or UDF volume descriptor"),
    ("iso/2", "holds no .iso file"),  # a folder of disks only
])
async def test_iso_copy_of_a_disk_fails_and_copies_nothing(
    agent: Running, tmp_path: Path, relative: str, expected: str,
) -> None:
    """An ISO template copied to a pool goes in a VM's DVD drive: a disk, named as one
    or hidden under an ISO's name, fails the CopyAnswer, nothing left in the pool."""
    pool = _pool(agent)
    _disk(_secondary(tmp_path, "iso/tools.vhdx"), 16 * MIB)
    shutil.copy(tmp_path / "secondary" / "iso" / "tools.vhdx", _secondary(tmp_path,
                                                                         "iso/tools.iso"))
    _disk(_secondary(tmp_path, "iso/2/a.vhdx"), 16 * MIB)
    before = listing(pool)
    await _refused(agent, _copy(_template(_nfs(), path=relative, format="ISO"),
                                _template(_primary(), format="ISO")), expected)
    assert listing(pool) == before


async def test_a_template_folder_gives_the_image_its_format_asks_for_by_its_extension(
    agent: Running, tmp_path: Path,
) -> None:
    """``a.vhd-backup.iso`` is an ISO whatever its name holds: a VHDX template copy from
    a folder holding it and a disk takes the disk, and an ISO copy the ISO."""
    pool = _pool(agent)
    _secondary(tmp_path, "template/tmpl/2/8/a.vhd-backup.iso").write_bytes(_iso_image())
    source = _disk(_secondary(tmp_path, "template/tmpl/2/8/b.vhdx"), 16 * MIB)
    data = await _copied(agent, _copy(_template(_nfs(), path="template/tmpl/2/8"),
                                      _template(_primary())))
    assert (pool / f"{data['path']}.vhdx").read_bytes() == source.read_bytes()
    data = await _copied(agent, _copy(
        _template(_nfs(), path="template/tmpl/2/8", format="ISO", uuid=str(uuid.uuid4())),
        _template(_primary(), format="ISO", uuid=str(uuid.uuid4()))))
    assert (pool / f"{data['path']}.iso").read_bytes() == _iso_image()


async def test_download_replaces_existing_template_file_when_repeated(
    agent: Running, tmp_path: Path
) -> None:
    pool = _pool(agent)
    (pool / "same.vhdx").write_bytes(b"old")
    source = _disk(_secondary(tmp_path, "t/new.vhdx"), 16 * MIB)
    for _ in range(2):
        await _copied(agent, _copy(_template(_nfs(), path="t/new.vhdx"),
                                   _template(_primary(), path="same")))
    assert listing(pool) == {"same.vhdx": hashlib.sha256(source.read_bytes()).hexdigest()}


async def test_download_fails_and_leaves_pool_as_it_was_when_checksum_mismatches(
    agent: Running, tmp_path: Path
) -> None:
    pool = _pool(agent)
    (pool / "keep.vhdx").write_bytes(b"earlier")
    _disk(_secondary(tmp_path, "t/sys.vhdx"), 16 * MIB)
    before = listing(pool)
    src = _template(_nfs(), path="t/sys.vhdx", checksum="0" * 32,
                    origUrl="http://download.example.org/sys.vhdx")
    await _refused(agent, _copy(src, _template(_primary(), path="keep")), "checksum")
    assert listing(pool) == before


@pytest.mark.parametrize("suffix", [".vhd", ".vhdx"])
async def test_download_refuses_a_differencing_template_and_keeps_the_earlier_one(
    agent: Running, tmp_path: Path, suffix: str
) -> None:
    """A template registered from a differencing disk names its parent by path (here the
    pool's other template); made the pool's template, every volume cloned from it would
    read that file. The download fails and the pool's earlier template stays."""
    pool = _pool(agent)
    other = _disk(pool / f"other{suffix}", 16 * MIB, b"someone else's data")
    _disk(pool / f"mine{suffix}", 16 * MIB, b"earlier template")
    before = listing(pool)
    fmt = vhd.DiskFormat.VHD if suffix == ".vhd" else vhd.DiskFormat.VHDX
    child = _secondary(tmp_path, f"template/tmpl/2/9/child{suffix}")
    vhd.create(child, fmt, vhd.DiskType.DIFFERENCING, 0, parent=other,
               parent_locator=f"C:\\pool\\other{suffix}")
    await _refused(agent, _copy(_template(_nfs(), path=f"template/tmpl/2/9/child{suffix}",
                                          format=fmt.name),
                                _template(_primary(), path="mine", format=fmt.name)),
                   "is a differencing disk")
    assert listing(pool) == before


async def test_download_fails_and_leaves_pool_empty_when_bz2_is_corrupt(
    agent: Running, tmp_path: Path
) -> None:
    pool = _pool(agent)
    good = bz2.compress(_disk(tmp_path / "raw" / "x.vhdx", 16 * MIB).read_bytes())
    _secondary(tmp_path, "t/x.vhdx.bz2").write_bytes(good[: len(good) // 2] + b"\xff" * 64)
    details = await _refused(agent, _copy(_template(_nfs(), path="t/x.vhdx.bz2"),
                                          _template(_primary())), "")
    assert details
    assert listing(pool) == {}


async def test_download_too_large_for_the_pools_free_space_fails_and_leaves_the_pool(
    tmp_path: Path,
) -> None:
    free = KEEP_FREE_BYTES + 8 * MIB  # the pool's drive reports room for 8 MiB
    lab = f"\n[emulator.lab]\nfree_bytes = {{C = {free}}}"
    raw = _disk(tmp_path / "raw" / "big.vhdx", 256 * MIB, os.urandom(12 * MIB))
    _secondary(tmp_path, "t/big.vhdx").write_bytes(raw.read_bytes())
    _secondary(tmp_path, "t/bomb.vhdx.gz").write_bytes(gzip.compress(raw.read_bytes(), 1))
    async with serving(_config(tmp_path, lab)) as agent:
        pool = _pool(agent)
        _disk(pool / "kept.vhdx", 16 * MIB)
        before = listing(pool)
        for path in ("t/big.vhdx", "t/bomb.vhdx.gz"):
            details = await _refused(agent, _copy(_template(_nfs(), path=path),
                                                  _template(_primary(), path="mine")),
                                     "not enough free space")
            assert f"only {8 * MIB} may be written" in details, details
            assert listing(pool) == before


@pytest.mark.parametrize(("path", "expected"), [
    ("../escape.vhdx", "climbs out"),
    ("C:\\pool\\other.vhdx", "outside the pool"),
    ("\\\\10.9.9.9\\share\\x.vhdx", "outside the pool"),
    ("t/x.vhdx:stream", "stream"),
    ("t/AUX.vhdx", "device name"),
    ("t/absent.vhdx", "does not exist"),
])
async def test_download_fails_and_copies_nothing_when_source_path_is_bad(
    agent: Running, tmp_path: Path, path: str, expected: str
) -> None:
    pool = _pool(agent)
    _disk(pool / "other.vhdx", 16 * MIB)
    _disk(tmp_path / "escape.vhdx", 16 * MIB)
    before = listing(pool)
    await _refused(agent, _copy(_template(_nfs(), path=path), _template(_primary())), expected)
    assert listing(pool) == before


async def test_download_from_an_image_store_that_cannot_be_reached_says_so(
    agent: Running, tmp_path: Path
) -> None:
    """Windows reports a share whose server is down, or that was taken away, as a path not
    found: every template on it reads as absent. The answer says the image store cannot
    be reached, naming it, rather than that the template does not exist (which sends the
    operator looking for a file that is there); the pool is left as it was."""
    pool = _pool(agent)
    _disk(_secondary(tmp_path, "t/x.vhdx"), 16 * MIB)
    before = listing(pool)
    (tmp_path / "secondary").rename(tmp_path / "away")  # the share cannot be reached
    details = await _refused(agent, _copy(_template(_nfs(), path="t/x.vhdx"),
                                          _template(_primary())), "cannot be reached")
    assert "\\\\10.1.1.1\\secondary" in details, details
    assert "does not exist on the image store" not in details, details
    assert listing(pool) == before
    (tmp_path / "away").rename(tmp_path / "secondary")  # back: the same copy succeeds
    await _copied(agent, _copy(_template(_nfs(), path="t/x.vhdx"), _template(_primary())))


@pytest.mark.parametrize(("src_store", "dest_store", "expected"), [
    (_nfs("cifs://10.9.9.9/nowhere"), _primary(), "10.9.9.9"),  # unreachable share
    (_nfs("nfs://10.1.1.1/secondary"), _primary(), "nfs://"),
    (_nfs(), _primary("C:\\absent"), "pool root C:\\absent is not registered"),
    (_nfs(), _primary("..\\pool"), "not an absolute"),
])
async def test_download_fails_with_clear_details_when_a_store_is_unusable(
    agent: Running, tmp_path: Path, src_store: dict[str, Any], dest_store: dict[str, Any],
    expected: str,
) -> None:
    pool = _pool(agent)
    _disk(_secondary(tmp_path, "t/x.vhdx"), 16 * MIB)
    await _refused(agent, _copy(_template(src_store, path="t/x.vhdx"),
                                _template(dest_store)), expected)
    assert listing(pool) == {}


async def test_download_reads_template_from_s3(
    agent: Running, tmp_path: Path, s3: S3Server
) -> None:
    pool = _pool(agent)
    raw = _disk(tmp_path / "raw" / "s3.vhdx", 32 * MIB, b"from s3")
    packed = bz2.compress(raw.read_bytes())
    s3.put("templates/s3.vhdx.bz2", packed)
    store = {S3_TO: {"id": 1, "accessKey": s3.access_key,
                     "secretKey": s3.secret_key, "endPoint": s3.endpoint,
                     "bucketName": s3.bucket, "httpsFlag": False}}
    src = _template(store, path="templates/s3.vhdx.bz2",
                    checksum=hashlib.sha256(packed).hexdigest())
    data = await _copied(agent, _copy(src, _template(_primary())))
    assert (pool / f"{data['path']}.vhdx").read_bytes() == raw.read_bytes()
    store[S3_TO]["secretKey"] = "wrong"
    details = await _refused(agent, _copy(src, _template(_primary(), path="denied")), "")
    assert s3.secret_key not in details and "wrong" not in details
    assert not (pool / "denied.vhdx").exists()


async def test_s3_store_client_settings_bound_the_download_as_cloudstack_sets_them(
    agent: Running,
) -> None:
    _pool(agent)
    nothing_listens = f"127.0.0.1:{free_port()}"
    store = {S3_TO: {"id": 1, "accessKey": "AKIA", "secretKey": "s", "endPoint": nothing_listens,
                     "bucketName": "b", "httpsFlag": False, "maxErrorRetry": 1,
                     "connectionTimeout": 2000, "socketTimeout": 2000,
                     "useTCPKeepAlive": True}}
    details = await _refused(agent, _copy(_template(store, path="t/x.vhdx"),
                                          _template(_primary())), "connection refused")
    assert "gave up after 1 retry" in details
    store[S3_TO]["maxErrorRetry"] = 0
    details = await _refused(agent, _copy(_template(store, path="t/x.vhdx"),
                                          _template(_primary())), "connection refused")
    assert "gave up" not in details


# --- B: volume from a template on primary -------------------------------------------------


def _template_on_pool(running: Running, name: str = "tmpl-1", suffix: str = ".vhdx",
                      size: int = GIB, folder: str = "pool") -> Path:
    return _disk(_pool(running, folder) / f"{name}{suffix}", size, b"template os" * 1000)


async def test_volume_from_template_is_a_linked_clone_when_flag_is_absent(
    agent: Running,
) -> None:
    pool = _pool(agent)
    template = _template_on_pool(agent)
    before = template.read_bytes()
    data = await _copied(agent, _copy(_template(_primary(), path="tmpl-1"),
                                      _volume(_primary())))
    assert (data["path"], data["format"]) == (VOLUME_UUID, "VHDX")
    clone = pool / f"{VOLUME_UUID}.vhdx"
    settings = await disks.read_settings(hv(agent.emulator), f"C:\\pool\\{VOLUME_UUID}.vhdx")
    assert (settings.format, settings.type, settings.size_bytes, settings.parent_path) == (
        DiskFormat.VHDX, DiskType.DIFFERENCING, GIB, "C:\\pool\\tmpl-1.vhdx")
    assert clone.stat().st_size < 8 * MIB
    assert template.read_bytes() == before


@requires_tool("qemu-img")
async def test_linked_clone_of_vhd_template_is_read_by_qemu(agent: Running) -> None:
    pool = _pool(agent)
    _template_on_pool(agent, suffix=".vhd", size=512 * MIB)
    data = await _copied(agent, _copy(_template(_primary(), path="tmpl-1", format="VHD"),
                                      _volume(_primary())))
    assert data["format"] == "VHD"
    info = qemu_info(pool / f"{VOLUME_UUID}.vhd")
    assert (info["format"], info["virtual-size"]) == ("vpc", 512 * MIB)
    assert vhd.read_info(pool / f"{VOLUME_UUID}.vhd").parent_path == "C:\\pool\\tmpl-1.vhd"


@requires_tool("qemu-img")
async def test_volume_from_template_is_a_full_copy_when_full_clone_flag_is_set(
    agent: Running,
) -> None:
    pool = _pool(agent)
    template = _template_on_pool(agent)
    data = await _copied(agent, _copy(_template(_primary(), path="tmpl-1"),
                                      _volume(_primary(fullCloneFlag=True))))
    copy = pool / f"{data['path']}.vhdx"
    info = qemu_info(copy)
    assert (info["format"], info["virtual-size"]) == ("vhdx", GIB)
    assert "backing-filename" not in info
    assert vhd.read_info(copy).type is vhd.DiskType.DYNAMIC
    assert copy.read_bytes() == template.read_bytes()


async def test_volume_from_template_is_a_full_copy_when_pools_differ(agent: Running) -> None:
    template = _template_on_pool(agent, folder="gold")
    other = _pool(agent)
    gold = "0b2ac2a4-7b0c-4a57-9a8e-3f3d1e0c0a11"
    _, registered = await agent.answer(names.MODIFY_STORAGE_POOL_COMMAND, {"add": True, "pool": {
        "uuid": gold, "host": "10.1.1.1", "path": "C:\\gold", "type": "Filesystem"},
        "localPath": "C:\\gold"})
    assert registered["result"] is True, registered
    data = await _copied(agent, _copy(_template(_primary("C:\\gold", uuid=gold), path="tmpl-1"),
                                      _volume(_primary())))
    assert (other / f"{data['path']}.vhdx").read_bytes() == template.read_bytes()


async def test_linked_clone_costs_one_call_and_one_wait_and_reads_no_template_data(
    agent: Running,
) -> None:
    _template_on_pool(agent)
    await _copied(agent, _copy(_template(_primary(), path="tmpl-1"),
                               _volume(_primary(), uuid="warm-up")))  # IMS and class cached
    reads = _count_opens(agent)
    before = agent.emulator.round_trips()
    await _copied(agent, _copy(_template(_primary(), path="tmpl-1"), _volume(_primary())))
    spent = agent.emulator.round_trips() - before
    # the template's virtual size (1 call: is the requested size larger?) + the clone
    assert (spent.calls, spent.waits, spent["invoke:CreateVirtualHardDisk"]) == (2, 1, 1)
    assert reads == []


async def test_a_template_found_under_its_formats_name_is_link_checked_under_it_alone(
    agent: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A template in a pool is ``<path>`` with its format's extension, else its ``.vhdx``
    or ``.vhd``. Found under the first (what CloudStack puts in a pool), the others are
    neither looked for nor checked for links out of the pool: on an SMB pool each is a
    round trip to the file server, on every volume made from a template. One missing
    under the first is found under the next, each checked as it is tried."""
    handler = getattr(agent.agent.dispatch.handlers[COPY], "__self__", None)
    files: HostFiles | None = getattr(handler, "files", None)
    assert files is not None
    asked = record_file_looks(monkeypatch, files)
    _template_on_pool(agent)
    await _copied(agent, _copy(_template(_primary(), path="tmpl-1"), _volume(_primary())))
    template = "C:\\pool\\tmpl-1"
    assert [call for call in asked if template in call] == [
        f"link_out {template}.vhdx", f"exists {template}.vhdx"], asked
    asked.clear()
    await _copied(agent, _copy(_template(_primary(), path="tmpl-1", format="VHD"),
                               _volume(_primary(), uuid="from-vhd-name")))
    assert [call for call in asked if template in call] == [
        f"link_out {template}.vhd", f"exists {template}.vhd",
        f"link_out {template}.vhdx", f"exists {template}.vhdx"], asked


async def test_volume_larger_than_its_template_is_a_grown_full_copy(agent: Running) -> None:
    pool = _pool(agent)
    template = _template_on_pool(agent, size=64 * MIB)
    data = await _copied(agent, _copy(_template(_primary(), path="tmpl-1"),
                                      _volume(_primary(), size=GIB)))
    assert data["size"] == GIB
    info = vhd.read_info(pool / f"{data['path']}.vhdx")
    assert (info.type, info.virtual_size_bytes, info.parent_path) == (
        vhd.DiskType.DYNAMIC, GIB, None)
    assert vhd.read_data(pool / f"{data['path']}.vhdx", 0, 11) == b"template os"
    assert vhd.read_info(template).virtual_size_bytes == 64 * MIB
    assert sorted(p.name for p in pool.iterdir()) == sorted([template.name,
                                                             f"{data['path']}.vhdx"])


@pytest.mark.parametrize(("provisioning", "size"), [("THIN", GIB), ("SPARSE", 32 * MIB)])
async def test_a_full_copy_of_a_template_reads_the_template_s_settings_once(
    agent: Running, provisioning: str, size: int,
) -> None:
    """A volume that is a full copy of its template (one larger than the template, grown
    after the copy; a SPARSE one, standing alone) asks Hyper-V for the template's
    settings once: the read that tells its virtual size also tells its kind, which the
    copy needs."""
    _template_on_pool(agent, size=64 * MIB)
    await _copied(agent, _copy(_template(_primary(), path="tmpl-1"),
                               _volume(_primary(), uuid="warm-up")))  # IMS and class cached
    before = agent.emulator.round_trips()
    data = await _copied(agent, _copy(_template(_primary(), path="tmpl-1"),
                                      _volume(_primary(), size=size,
                                              provisioningType=provisioning)))
    spent = agent.emulator.round_trips() - before
    info = vhd.read_info(_pool(agent) / f"{data['path']}.vhdx")
    assert (info.type, info.virtual_size_bytes) == (vhd.DiskType.DYNAMIC, max(size, 64 * MIB))
    assert spent["invoke:GetVirtualHardDiskSettingData"] == 1, spent


@pytest.mark.parametrize(("provisioning", "size"), [("FAT", 0), ("SPARSE", GIB)])
async def test_a_full_copy_of_a_template_that_is_no_disk_fails_naming_the_template(
    agent: Running, provisioning: str, size: int,
) -> None:
    """A template in the pool cut short behind the agent's back (a copy by hand that did
    not finish): Hyper-V cannot read its settings, which a full copy reads first, and
    its return code names no file; the answer names the template, and nothing is
    written in the pool."""
    template = _template_on_pool(agent, size=64 * MIB)
    template.write_bytes(template.read_bytes()[:4096])
    before = listing(_pool(agent))
    await _refused(agent, _copy(_template(_primary(), path="tmpl-1"),
                                _volume(_primary(), size=size,
                                        provisioningType=provisioning)),
                   "GetVirtualHardDiskSettingData of C:\\pool\\tmpl-1.vhdx failed with "
                   "return code 32773")
    assert listing(_pool(agent)) == before


async def test_volume_no_larger_than_its_template_stays_a_linked_clone(
        agent: Running) -> None:
    pool = _pool(agent)
    _template_on_pool(agent, size=GIB)
    data = await _copied(agent, _copy(_template(_primary(), path="tmpl-1"),
                                      _volume(_primary(), size=64 * MIB)))
    assert data["size"] == GIB
    info = vhd.read_info(pool / f"{data['path']}.vhdx")
    assert (info.type, info.virtual_size_bytes) == (vhd.DiskType.DIFFERENCING, GIB)


@pytest.mark.parametrize(("provisioning", "kind"), [
    ("THIN", DiskType.DIFFERENCING), ("SPARSE", DiskType.DYNAMIC),
    ("FAT", DiskType.FIXED),
])
async def test_volume_of_a_fat_offering_is_a_fixed_full_copy_of_its_template(
    agent: Running, provisioning: str, kind: DiskType,
) -> None:
    """A FAT offering's root volume takes its whole size when it is made: a fixed disk
    holding the template's data, standing alone (KVM too makes a full preallocated copy
    for FAT, never a clone on a backing file). A SPARSE one is a dynamic full copy
    standing alone (KVM: a full copy, metadata preallocated); THIN stays a linked
    clone."""
    pool = _pool(agent)
    template = _template_on_pool(agent, size=64 * MIB)
    before = template.read_bytes()
    data = await _copied(agent, _copy(_template(_primary(), path="tmpl-1"),
                                      _volume(_primary(), size=None,
                                              provisioningType=provisioning)))
    assert (data["path"], data["format"], data["provisioningType"]) == (
        VOLUME_UUID, "VHDX", provisioning)
    path = f"C:\\pool\\{VOLUME_UUID}.vhdx"
    settings = await disks.read_settings(hv(agent.emulator), path)
    assert (settings.type, settings.size_bytes) == (kind, 64 * MIB)
    if kind is not DiskType.DIFFERENCING:
        assert settings.parent_path is None
        assert vhd.read_data(pool / f"{VOLUME_UUID}.vhdx", 0, 11) == b"template os"
    if kind is DiskType.FIXED:
        assert data["size"] == 64 * MIB
        assert (pool / f"{VOLUME_UUID}.vhdx").stat().st_size > 64 * MIB
    assert template.read_bytes() == before
    assert sorted(p.name for p in pool.iterdir()) == sorted([template.name,
                                                             f"{VOLUME_UUID}.vhdx"])


async def test_a_fat_copy_is_sized_from_the_template_it_copies(agent: Running) -> None:
    """A FAT volume made while the template is being replaced (a download holding the
    template's lock alone) waits for it and is sized from the template it then copies:
    the answer's size is the new template's, not the one the file held when the command
    came."""
    template = _template_on_pool(agent, size=64 * MIB)
    locks = agent.agent.leftovers.start.file_locks
    async with locks.hold_all("C:\\pool\\tmpl-1.vhdx"):
        copy = asyncio.ensure_future(_copied(agent, _copy(
            _template(_primary(), path="tmpl-1"),
            _volume(_primary(), size=None, provisioningType="FAT"))))
        key = "c:\\pool\\tmpl-1.vhdx"
        while locks._entries[key].users < 2 and not copy.done():  # the copy waits for it
            await asyncio.sleep(0.005)
        template.unlink()
        _disk(template, 128 * MIB, b"template os")
    data = await copy
    assert data["size"] == 128 * MIB
    settings = await disks.read_settings(hv(agent.emulator), f"C:\\pool\\{VOLUME_UUID}.vhdx")
    assert (settings.type, settings.size_bytes) == (DiskType.FIXED, 128 * MIB)


@pytest.mark.parametrize(("provisioning", "made"), [
    ("THIN", vhd.DiskType.DYNAMIC), ("SPARSE", vhd.DiskType.DYNAMIC),
    (None, vhd.DiskType.FIXED),
])
async def test_full_copy_of_a_fixed_template_is_dynamic_unless_the_offering_is_fat(
    agent: Running, provisioning: str | None, made: vhd.DiskType,
) -> None:
    """A template uploaded as a fixed VHD(X) copied in full (the pool asks for full
    clones) for a THIN or SPARSE offering is a dynamic disk: a byte copy would reserve
    the whole size in the pool for a volume whose offering reserves none. With no type
    given the copy is as the template is stored."""
    pool = _pool(agent)
    template = pool / "tmpl-1.vhdx"
    vhd.create(template, vhd.DiskFormat.VHDX, vhd.DiskType.FIXED, 64 * MIB)
    vhd.write_data(template, 0, b"template os")
    dest = {} if provisioning is None else {"provisioningType": provisioning}
    await _copied(agent, _copy(_template(_primary(), path="tmpl-1"),
                               _volume(_primary(fullCloneFlag=True), size=None, **dest)))
    info = vhd.read_info(pool / f"{VOLUME_UUID}.vhdx")
    assert (info.type, info.parent_path, info.virtual_size_bytes) == (made, None, 64 * MIB)
    assert vhd.read_data(pool / f"{VOLUME_UUID}.vhdx", 0, 11) == b"template os"
    assert sorted(listing(pool)) == sorted(["tmpl-1.vhdx", f"{VOLUME_UUID}.vhdx"])


async def test_volume_of_a_fat_offering_larger_than_its_template_is_a_grown_fixed_copy(
    agent: Running,
) -> None:
    pool = _pool(agent)
    _template_on_pool(agent, size=64 * MIB)
    data = await _copied(agent, _copy(_template(_primary(), path="tmpl-1"),
                                      _volume(_primary(), size=96 * MIB,
                                              provisioningType="FAT")))
    assert data["size"] == 96 * MIB
    info = vhd.read_info(pool / f"{VOLUME_UUID}.vhdx")
    assert (info.type, info.virtual_size_bytes, info.parent_path) == (
        vhd.DiskType.FIXED, 96 * MIB, None)
    assert vhd.read_data(pool / f"{VOLUME_UUID}.vhdx", 0, 11) == b"template os"


async def test_volume_of_a_fat_offering_is_refused_when_its_pool_cannot_hold_it(
    tmp_path: Path,
) -> None:
    """The whole size of a fixed volume is counted against the pool's free space before
    Hyper-V writes a byte (a linked clone takes next to nothing, and is still made)."""
    free = KEEP_FREE_BYTES + 48 * MIB  # room for 48 MiB: not for a 64 MiB fixed copy
    lab = f"\n[emulator.lab]\nfree_bytes = {{C = {free}}}"
    async with serving(_config(tmp_path, lab)) as agent:
        pool = _pool(agent)
        _template_on_pool(agent, size=64 * MIB)
        earlier = _earlier_volume(agent)
        before = listing(pool)
        spent = agent.emulator.round_trips()
        details = await _refused(agent, _copy(_template(_primary(), path="tmpl-1"),
                                              _volume(_primary(), provisioningType="FAT")),
                                 "not enough free space for a fixed copy (FAT) of "
                                 "C:\\pool\\tmpl-1.vhdx")
        assert f"it takes {64 * MIB} bytes, and only {48 * MIB} may be written" in details
        assert "nothing was written" in details, details
        assert (agent.emulator.round_trips() - spent)["invoke:ConvertVirtualHardDisk"] == 0
        assert listing(pool) == before
        assert vhd.read_data(earlier, 0, 19) == b"earlier volume data"
        await _copied(agent, _copy(_template(_primary(), path="tmpl-1"),
                                   _volume(_primary(), provisioningType="THIN")))


@pytest.mark.parametrize("failing", ["ConvertVirtualHardDisk", "ResizeVirtualHardDisk"])
async def test_volume_of_a_fat_offering_whose_job_fails_keeps_the_earlier_volume(
    agent: Running, failing: str,
) -> None:
    pool = _pool(agent)
    _template_on_pool(agent, size=64 * MIB)
    earlier = _earlier_volume(agent)
    before = listing(pool)
    agent.emulator.faults.fail_next_job(failing)
    await _refused(agent, _copy(_template(_primary(), path="tmpl-1"),
                                _volume(_primary(), size=96 * MIB, provisioningType="FAT")),
                   "injected fault")
    assert listing(pool) == before
    assert vhd.read_info(earlier).type is vhd.DiskType.DYNAMIC


async def test_volume_of_an_unknown_provisioning_type_is_refused_and_nothing_made(
    agent: Running,
) -> None:
    pool = _pool(agent)
    _template_on_pool(agent, size=64 * MIB)
    before = listing(pool)
    await _refused(agent, _copy(_template(_primary(), path="tmpl-1"),
                                _volume(_primary(), provisioningType="THICK")),
                   "destTO.provisioningType 'THICK' is not a provisioning type this host "
                   "knows: THIN, SPARSE or FAT")
    assert listing(pool) == before


def _count_opens(running: Running) -> list[str]:
    """Record every file the copy handler opens or copies through its file layer."""
    handler = getattr(running.agent.dispatch.handlers[COPY], "__self__", None)
    files: HostFiles | None = getattr(handler, "files", None)
    assert files is not None
    opened: list[str] = []
    original: Callable[[str, OpenMode], BinaryIO] = files.open_binary

    def counting(path: str, mode: OpenMode) -> BinaryIO:
        opened.append(path)
        return original(path, mode)

    async def copying(source: str, target: str) -> int:
        opened.append(source)
        return await original_copy(source, target)

    original_copy = files.copy_file
    files.open_binary = counting  # type: ignore[method-assign]
    files.copy_file = copying  # type: ignore[method-assign]
    return opened


async def test_volume_from_template_fails_and_leaves_pool_when_clone_job_fails(
    agent: Running,
) -> None:
    pool = _pool(agent)
    _template_on_pool(agent)
    before = listing(pool)
    agent.emulator.faults.fail_next_job("CreateVirtualHardDisk")
    await _refused(agent, _copy(_template(_primary(), path="tmpl-1"), _volume(_primary())),
                   "injected fault")
    assert listing(pool) == before


async def test_volume_from_template_fails_when_template_file_is_missing(
    agent: Running,
) -> None:
    pool = _pool(agent)
    await _refused(agent, _copy(_template(_primary(), path="gone"), _volume(_primary())),
                   "Local template file missing from C:\\pool\\gone.vhdx")
    assert listing(pool) == {}


async def test_volume_from_template_refuses_to_replace_disk_of_running_vm(
    agent: Running,
) -> None:
    from tests.e2e.test_volume_commands import _vm_with

    pool = _pool(agent)
    _template_on_pool(agent)
    _disk(pool / f"{VOLUME_UUID}.vhdx", 16 * MIB)
    await _vm_with(agent.emulator, "i-3-5-VM", f"C:\\pool\\{VOLUME_UUID}.vhdx", scsi=True,
                   running=True)
    before = listing(pool)
    await _refused(agent, _copy(_template(_primary(), path="tmpl-1"), _volume(_primary())),
                   "running VM i-3-5-VM")
    assert listing(pool) == before


def _earlier_volume(running: Running, suffix: str = ".vhdx") -> Path:
    """A volume file of the destination's name, with data, from an earlier copy."""
    return _disk(_pool(running) / f"{VOLUME_UUID}{suffix}", 16 * MIB, b"earlier volume data")


@pytest.mark.parametrize(("size", "expected"), [
    (1 << 62, f"at most {64 << 40} (64 TiB)"),
    ((64 << 40) + 1, f"at most {64 << 40} (64 TiB), not {(64 << 40) + 1}"),
    (-5, "destTO.size must be a positive number of bytes"),
])
async def test_volume_from_template_fails_and_keeps_earlier_volume_when_size_is_not_a_vhdx_size(
    agent: Running, size: int, expected: str,
) -> None:
    pool = _pool(agent)
    _template_on_pool(agent, size=64 * MIB)
    _earlier_volume(agent)
    before = listing(pool)
    spent = agent.emulator.round_trips()
    details = await _refused(agent, _copy(_template(_primary(), path="tmpl-1"),
                                          _volume(_primary(), size=size)), expected)
    assert "destTO.size" in details
    assert listing(pool) == before
    assert vhd.read_data(pool / f"{VOLUME_UUID}.vhdx", 0, 19) == b"earlier volume data"
    spent = agent.emulator.round_trips() - spent
    assert spent["invoke:CreateVirtualHardDisk"] == spent["invoke:ResizeVirtualHardDisk"] == 0


async def test_volume_from_vhd_template_fails_and_keeps_earlier_volume_when_size_is_over_2040_gib(
    agent: Running,
) -> None:
    pool = _pool(agent)
    _template_on_pool(agent, suffix=".vhd", size=64 * MIB)
    _earlier_volume(agent, ".vhd")
    before = listing(pool)
    await _refused(agent, _copy(_template(_primary(), path="tmpl-1", format="VHD"),
                                _volume(_primary(), size=(2040 << 30) + 512)),
                   f"a VHD holds, at most {2040 << 30} (2040 GiB)")
    assert listing(pool) == before


@pytest.mark.parametrize(("size", "failing"), [
    (GIB, "ResizeVirtualHardDisk"),  # a full copy, then grown: the growing fails
    (None, "CreateVirtualHardDisk"),  # a linked clone: creating it fails
])
async def test_volume_from_template_fails_and_keeps_earlier_volume_when_a_hyperv_job_fails(
    agent: Running, size: int | None, failing: str,
) -> None:
    pool = _pool(agent)
    _template_on_pool(agent, size=64 * MIB)
    earlier = _earlier_volume(agent)
    before = listing(pool)
    agent.emulator.faults.fail_next_job(failing)
    await _refused(agent, _copy(_template(_primary(), path="tmpl-1"),
                                _volume(_primary(), size=size)), "injected fault")
    assert listing(pool) == before  # the earlier volume as it was, no aside file left
    assert vhd.read_info(earlier).virtual_size_bytes == 16 * MIB


# --- C: volume to volume ------------------------------------------------------------------


async def test_volume_copied_to_secondary_gets_path_with_uuid_file(
    agent: Running, tmp_path: Path
) -> None:
    source = _disk(_pool(agent) / f"{VOLUME_UUID}.vhdx", 64 * MIB, b"volume data")
    data = await _copied(agent, _copy(_volume(_primary(), path=VOLUME_UUID, format="VHDX"),
                                      _volume(_nfs(), path="volumes/3/10", uuid="new-uuid")))
    assert (data["path"], data["format"]) == ("volumes/3/10/new-uuid.vhdx", "VHDX")
    copied = tmp_path / "secondary" / "volumes" / "3" / "10" / "new-uuid.vhdx"
    assert copied.read_bytes() == source.read_bytes()


async def test_volume_copied_from_secondary_keeps_its_path(
    agent: Running, tmp_path: Path
) -> None:
    pool = _pool(agent)
    source = _disk(_secondary(tmp_path, "volumes/3/10/abc.vhd"), 64 * MIB)
    data = await _copied(agent, _copy(
        _volume(_nfs(), path="volumes/3/10", uuid="abc"),  # no format: probed
        _volume(_primary(), path="restored", uuid="restored")))
    assert (data["path"], data["format"]) == ("restored", "VHD")
    assert (pool / "restored.vhd").read_bytes() == source.read_bytes()


async def test_volume_copy_fails_and_writes_nothing_when_source_is_missing(
    agent: Running, tmp_path: Path
) -> None:
    _pool(agent)
    await _refused(agent, _copy(_volume(_primary(), path="absent", format="VHDX"),
                                _volume(_nfs(), path="volumes/3/10")), "does not exist")
    assert listing(tmp_path / "secondary") == {}


@pytest.mark.parametrize(("source", "looked_for"), [
    ({"path": "volumes/3/10/abc.vhdx", "format": "VHDX"},
     "\\\\10.1.1.1\\secondary\\volumes\\3\\10\\abc.vhdx is not there, nor is "
     f"\\\\10.1.1.1\\secondary\\volumes\\3\\10\\abc.vhdx\\{VOLUME_UUID}.vhdx"),
    ({"path": "volumes/3/10", "format": "VHDX"},
     "\\\\10.1.1.1\\secondary\\volumes\\3\\10 is a folder, and "
     f"\\\\10.1.1.1\\secondary\\volumes\\3\\10\\{VOLUME_UUID}.vhdx is not there"),
])
async def test_volume_missing_from_an_image_store_is_named_with_every_file_looked_for(
    agent: Running, tmp_path: Path, source: dict[str, Any], looked_for: str
) -> None:
    """A volume on an image store is ``<path>``, else ``<path>\\<uuid>`` with its format's
    extension: when it is neither, the answer names the volume, the image store it was
    looked for on and both files, so the operator looks for the right one (not only
    the second, which for a path naming a file is no file anyone made); the image store
    is there, so nothing says it cannot be reached."""
    pool = _pool(agent)
    (tmp_path / "secondary" / "volumes" / "3" / "10").mkdir(parents=True)
    details = await _refused(agent, _copy(_volume(_nfs(), **source),
                                          _volume(_primary(), path="restored")),
                             f"srcTO: the volume ROOT-5 ({VOLUME_UUID}) is not on the image "
                             "store \\\\10.1.1.1\\secondary: ")
    assert looked_for in details, details
    assert "cannot be reached" not in details, details
    assert listing(pool) == {}


async def test_volume_from_secondary_that_names_a_parent_disk_is_refused_and_not_copied(
    agent: Running, tmp_path: Path
) -> None:
    """A volume on the image store may be one a user uploaded. A differencing disk copied
    into the pool as it is would make Hyper-V open the parent it names (here another
    volume in the pool; it could as well be a share of any server) once a VM uses it: the
    copy is refused, as a downloaded template of that kind is, and nothing reaches the
    pool."""
    pool = _pool(agent)
    victim = _disk(pool / "other-tenant.vhdx", 64 * MIB, b"someone else's data")
    uploaded = _secondary(tmp_path, "volumes/3/10/abc.vhdx")
    vhd.create(uploaded, vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0, parent=victim,
               parent_locator="C:\\pool\\other-tenant.vhdx")
    before = listing(pool)
    details = await _refused(agent, _copy(
        _volume(_nfs(), path="volumes/3/10/abc.vhdx", format="VHDX"),
        _volume(_primary(), path="restored", uuid="restored")), "is a differencing disk")
    assert "a volume must be a whole disk of its own" in details, details
    assert listing(pool) == before


async def test_volume_from_secondary_holding_the_other_format_is_named_by_its_content(
    agent: Running, tmp_path: Path
) -> None:
    """Hyper-V takes a disk's format from its extension: a VHDX uploaded as a .vhd volume
    arrives in the pool as .vhdx, and the answer's format says so."""
    pool = _pool(agent)
    _disk(_pool(agent, "scratch") / "made.vhdx", 64 * MIB, b"vhdx inside")
    uploaded = _secondary(tmp_path, "volumes/3/10/abc.vhd")
    uploaded.write_bytes((_pool(agent, "scratch") / "made.vhdx").read_bytes())
    data = await _copied(agent, _copy(
        _volume(_nfs(), path="volumes/3/10/abc.vhd", format="VHD"),
        _volume(_primary(), path="restored", uuid="restored", format="VHD")))
    assert (data["path"], data["format"]) == ("restored", "VHDX")
    assert sorted(listing(pool)) == ["restored.vhdx"]
    assert (pool / "restored.vhdx").read_bytes() == uploaded.read_bytes()


@pytest.mark.parametrize("source", [
    {"path": "volumes/3/10/abc.vhdx", "format": "VHDX"},
    {"path": "volumes/3/10", "uuid": "abc"},  # no format: the folder is probed
])
async def test_volume_copy_from_an_image_store_that_cannot_be_reached_says_so(
    agent: Running, tmp_path: Path, source: dict[str, Any]
) -> None:
    """Windows reports a share whose server is down, or that was taken away, as a path not
    found: a volume on it reads as absent and its folder as empty. The answer names the
    image store as what cannot be reached, not the volume as missing (which sends the
    operator looking for a file that is there); nothing reaches the pool, and once the
    share is back the same copy succeeds."""
    pool = _pool(agent)
    _disk(_secondary(tmp_path, "volumes/3/10/abc.vhdx"), 64 * MIB, b"volume data")
    body = _copy(_volume(_nfs(), **source), _volume(_primary(), path="restored",
                                                    uuid="restored"))
    (tmp_path / "secondary").rename(tmp_path / "away")  # the share cannot be reached
    details = await _refused(agent, body, "cannot be reached")
    assert "image store's root \\\\10.1.1.1\\secondary," in details, details
    assert "password" not in details and "1pass" not in details, details
    assert listing(pool) == {}
    (tmp_path / "away").rename(tmp_path / "secondary")  # back
    await _copied(agent, body)
    assert sorted(listing(pool)) == ["restored.vhdx"]


SMB_POOL = "/primary?user=administrator&password=1pass%40word1"


def _smb_primary() -> dict[str, Any]:
    return _primary(SMB_POOL, type="SMB", poolType="SMB", port=445)


@pytest.mark.parametrize("case", ["volume from template", "template from volume"])
async def test_copy_from_a_pool_that_cannot_be_reached_says_so(
    tmp_path: Path, case: str
) -> None:
    """A pool on a share that went away reads as a path not found, every file in it as
    absent: a volume made from a template there (case B) or a template made from a volume
    there (case D) fails naming the pool's root as what cannot be reached, not the file
    as missing; nothing is made, and once the share is back the same copy succeeds."""
    share = tmp_path / "primary"
    share.mkdir()
    (tmp_path / "secondary").mkdir()
    config = config_with_shares(tmp_path, {"\\\\10.1.1.1\\primary": share,
                                           "\\\\10.1.1.1\\secondary": tmp_path / "secondary"})
    if case == "volume from template":
        _disk(share / "tmpl-1.vhdx", 64 * MIB, b"template os")
        body = _copy(_template(_smb_primary(), path="tmpl-1"), _volume(_smb_primary()))
    else:
        _disk(share / f"{VOLUME_UUID}.vhdx", 64 * MIB, b"golden image")
        body = _copy(_volume(_smb_primary(), path=VOLUME_UUID, format="VHDX"),
                     _template(_nfs(), path="template/tmpl/2/301", uuid="d3c4", id=301))
    async with serving(config) as running:
        _, added = await running.answer(MODIFY_POOL, {"add": True, "pool": {
            "uuid": POOL_UUID, "host": "10.1.1.1", "type": "SMB", "path": SMB_POOL,
            "port": 445}})
        assert added["result"] is True, added
        before = listing(share), listing(tmp_path / "secondary")
        share.rename(tmp_path / "away")  # the share cannot be reached
        details = await _refused(running, body, "cannot be reached")
        assert "pool's root \\\\10.1.1.1\\primary," in details, details
        assert "missing" not in details and "1pass" not in details, details
        (tmp_path / "away").rename(share)  # back
        assert (listing(share), listing(tmp_path / "secondary")) == before
        await _copied(running, body)


# --- D: template from a volume ------------------------------------------------------------


async def test_template_from_volume_writes_file_and_template_properties(
    agent: Running, tmp_path: Path
) -> None:
    source = _disk(_pool(agent) / f"{VOLUME_UUID}.vhdx", 2 * GIB, b"golden image")
    dest = _template(_nfs(), path="template/tmpl/2/301", uuid="d3c4", id=301,
                     name="301-2-abc", format=None)
    data = await _copied(agent, _copy(_volume(_primary(), path=VOLUME_UUID, format="VHDX"),
                                      dest))
    folder = tmp_path / "secondary" / "template" / "tmpl" / "2" / "301"
    assert (folder / "d3c4.vhdx").read_bytes() == source.read_bytes()
    size = source.stat().st_size
    assert (folder / "template.properties").read_text() == (
        "id=301\nfilename=d3c4.vhdx\nvhdx.filename=d3c4.vhdx\n"
        "uniquename=301-2-abc\nvhdx=true\n"
        f"virtualsize={2 * GIB}\nvhdx.virtualsize={2 * GIB}\n"
        f"size={size}\nvhdx.size={size}\npublic=false\n")
    assert (data["path"], data["format"], data["size"]) == (
        "template/tmpl/2/301/d3c4.vhdx", "VHDX", 2 * GIB)
    assert data["checksum"] == hashlib.md5(source.read_bytes()).hexdigest()
    # The store comes back as sent, the password of its URL masked: answers carry no secrets.
    (store,) = data["imageDataStore"].values()
    assert store["_url"] == "cifs://10.1.1.1/secondary?user=administrator&password=*****"


async def test_template_from_volume_properties_name_the_file_the_answer_names(
    agent: Running, tmp_path: Path
) -> None:
    """The secondary storage VM's template sync (TemplateLocation, TemplateServiceImpl)
    finds a template by ``uniquename`` and sets its install path to its folder plus
    ``filename``: a ``filename`` other than the file's name would point the template at a
    file that does not exist after the next sync, and every later copy of it fail."""
    _disk(_pool(agent) / f"{VOLUME_UUID}.vhdx", 16 * MIB, b"golden image")
    dest = _template(_nfs(), path="template/tmpl/2/301", uuid="d3c4", id=301,
                     name="301-2-abc", format=None)
    data = await _copied(agent, _copy(_volume(_primary(), path=VOLUME_UUID, format="VHDX"),
                                      dest))
    folder = tmp_path / "secondary" / "template" / "tmpl" / "2" / "301"
    props = parse_template_properties((folder / "template.properties").read_text("latin-1"))
    assert props["uniquename"] == "301-2-abc"  # the template's unique name, as synced
    install_path = f"template/tmpl/2/301/{props['vhdx.filename']}"
    assert install_path == f"template/tmpl/2/301/{props['filename']}" == data["path"]
    assert (tmp_path / "secondary" / install_path).is_file()


async def test_template_from_volume_fails_and_writes_nothing_when_dest_path_escapes(
    agent: Running, tmp_path: Path
) -> None:
    _disk(_pool(agent) / f"{VOLUME_UUID}.vhdx", 16 * MIB)
    await _refused(agent, _copy(_volume(_primary(), path=VOLUME_UUID, format="VHDX"),
                                _template(_nfs(), path="../../outside")), "climbs out")
    assert listing(tmp_path / "secondary") == {}


# --- C and D from a linked clone ---------------------------------------------------------


@pytest.mark.parametrize("dest", ["volume", "template"])
async def test_linked_clone_copied_off_its_pool_stands_alone_and_the_pool_is_kept(
    agent: Running, tmp_path: Path, dest: str,
) -> None:
    """A root volume made as a linked clone (case B's default) is a differencing disk whose
    parent is the template in its pool. Copied to secondary storage (a volume backup or
    move, case C) or made into a template (case D), the copy must hold the whole disk on
    its own: a differencing file there would point back at the pool's template, and break
    once that template is evicted or on any other pool."""
    pool = _pool(agent)
    _template_on_pool(agent)
    await _copied(agent, _copy(_template(_primary(), path="tmpl-1"), _volume(_primary())))
    before = listing(pool)
    target = (_volume(_nfs(), path="volumes/3/10", uuid="new-uuid") if dest == "volume" else
              _template(_nfs(), path="template/tmpl/2/301", uuid="new-uuid", id=301,
                        name="301-2-abc", format=None))
    data = await _copied(agent, _copy(_volume(_primary(), path=VOLUME_UUID, format="VHDX"),
                                      target))
    copied = tmp_path / "secondary" / data["path"]
    info = vhd.read_info(copied)
    assert (info.type, info.parent_path, info.virtual_size_bytes) == (
        vhd.DiskType.DYNAMIC, None, GIB)
    assert vhd.read_data(copied, 0, 11) == b"template os"
    assert listing(pool) == before  # the clone and its template as they were, nothing aside
    if dest == "template":
        assert data["checksum"] == hashlib.md5(copied.read_bytes()).hexdigest()
        properties = (copied.parent / "template.properties").read_text()
        assert f"size={copied.stat().st_size}\n" in properties


@pytest.mark.parametrize("moved", ["with its template", "alone"])
async def test_linked_clone_of_a_pool_moved_to_another_folder_is_copied_off_it_merged(
    agent: Running, tmp_path: Path, moved: str,
) -> None:
    """A pool's files moved to another folder (restored from a backup, or the volume
    remounted elsewhere) hold linked clones whose absolute parent path names the old
    folder. Hyper-V finds the template beside its clone by the relative path the clone
    records too, so the clone is copied off the pool merged; a clone whose template is
    no longer beside it nor where it was is refused as Hyper-V refuses it (file not
    found), and nothing is written."""
    pool = _pool(agent)
    _template_on_pool(agent)
    await _copied(agent, _copy(_template(_primary(), path="tmpl-1"), _volume(_primary())))
    pool.rename(pool.with_name("pool2"))
    restored = await _other_pool(agent)  # the pool registered at its new folder
    if moved == "alone":
        (restored / "tmpl-1.vhdx").rename(_pool(agent, "elsewhere") / "tmpl-1.vhdx")
    before = listing(restored)
    body = _copy(_volume(_primary("C:\\pool2", uuid=OTHER_POOL_UUID), path=VOLUME_UUID,
                         format="VHDX"),
                 _volume(_nfs(), path="volumes/3/10", uuid="new-uuid"))
    if moved == "alone":
        details = await _refused(agent, body,
                                 "ConvertVirtualHardDisk failed with return code 32779")
        assert details.endswith(f"; the disk C:\\pool2\\{VOLUME_UUID}.vhdx stands on the "
                                "parent C:\\pool\\tmpl-1.vhdx, which cannot be found"), details
        assert listing(tmp_path / "secondary") == {}
    else:
        data = await _copied(agent, body)
        copied = tmp_path / "secondary" / data["path"]
        info = vhd.read_info(copied)
        assert (info.type, info.parent_path, info.virtual_size_bytes) == (
            vhd.DiskType.DYNAMIC, None, GIB)
        assert vhd.read_data(copied, 0, 11) == b"template os"
    assert listing(restored) == before


@pytest.mark.parametrize(("change", "code", "why"), [
    ("removed", "failed with return code 32779 (file not found)", "which cannot be found"),
    ("replaced", "job ended in state 10 with error code 32773: ",
     "which is not the disk it was made from (replaced or written since)"),
])
@pytest.mark.parametrize("dest", ["image store", "template", "another pool"])
async def test_linked_clone_whose_template_is_gone_or_changed_is_not_copied_and_names_it(
    agent: Running, tmp_path: Path, dest: str, change: str, code: str, why: str,
) -> None:
    """A linked clone whose template was deleted, or replaced by another disk of the same
    name, behind CloudStack's back cannot be merged: Hyper-V refuses the conversion with
    words that do not say which template (a bare "file not found", or Windows' broken chain
    error). The copy fails naming the clone, the template file it stands on and why, from
    Hyper-V's validation of the clone asked only on the refusal (one call and one wait,
    no settings read beyond the one a copy makes anyway); nothing is written."""
    pool, other = await _linked_clone_and_other_pool(agent)
    template = pool / "tmpl-1.vhdx"
    template.unlink()
    if change == "replaced":  # a template of the same name made anew
        _template_on_pool(agent)
    before = (listing(pool), listing(other))
    source = _volume(_primary(), path=VOLUME_UUID, format="VHDX")
    body = {"image store": _copy(source, _volume(_nfs(), path="volumes/3", uuid="out-uuid")),
            "template": _copy(source, _template(_nfs(), path="template/tmpl/2/302",
                                                uuid="new-uuid", id=302, name="302-2-abc",
                                                format=None)),
            "another pool": _pool_to_pool()}[dest]
    counted = agent.emulator.round_trips()
    details = await _refused(agent, body, f"ConvertVirtualHardDisk {code}")
    spent = agent.emulator.round_trips() - counted
    assert details.endswith(f"; the disk C:\\pool\\{VOLUME_UUID}.vhdx stands on the parent "
                            f"C:\\pool\\tmpl-1.vhdx, {why}"), details
    assert (spent["invoke:GetVirtualHardDiskSettingData"], spent["invoke:ValidateVirtualHardDisk"],
            spent["invoke:ConvertVirtualHardDisk"]) == (1, 1, 1), spent
    assert (listing(pool), listing(other)) == before
    assert not any((tmp_path / "secondary").rglob("*.vhdx"))


@pytest.mark.parametrize(("change", "refusal", "why"), [
    ("removed", "ConvertVirtualHardDisk failed with return code 32779", "which cannot be found"),
    ("replaced", "ConvertVirtualHardDisk job ended in state 10 with error code 32773: ",
     "which is not the disk it was made from (replaced or written since)"),
])
@pytest.mark.parametrize("dest", ["image store", "another pool"])
async def test_clone_of_a_clone_whose_grandparent_is_gone_names_the_disk_that_is_missing(
    agent: Running, tmp_path: Path, dest: str, change: str, refusal: str, why: str,
) -> None:
    """A template that is itself a differencing disk (a clone made into a template in the
    pool) gives its volumes a chain two deep. With the template's own parent deleted, or
    replaced by another disk of its name, Hyper-V's refusal ("file not found", Windows'
    corrupted chain error) is for that grandparent: the copy names it and the template
    standing on it, not the template (which is there, and is the disk the clone was made
    from) as the clone's broken parent. The clone's settings cannot tell a replaced
    grandparent (a VHDX records its parent's DataWriteGuid, which WMI does not report):
    Hyper-V's validation of the clone does, one call and one wait however deep."""
    pool = _pool(agent)
    _disk(pool / "base.vhdx", GIB, b"template os" * 1000)
    await disks.create_differencing(hv(agent.emulator), "C:\\pool\\tmpl-1.vhdx",
                                    "C:\\pool\\base.vhdx")
    await _copied(agent, _copy(_template(_primary(), path="tmpl-1"), _volume(_primary())))
    other = await _other_pool(agent)
    (pool / "base.vhdx").unlink()
    if change == "replaced":  # another disk of the same name made anew
        _disk(pool / "base.vhdx", GIB, b"template os" * 1000)
    before = (listing(pool), listing(other))
    body = {"image store": _copy(_volume(_primary(), path=VOLUME_UUID, format="VHDX"),
                                 _volume(_nfs(), path="volumes/3", uuid="out-uuid")),
            "another pool": _pool_to_pool()}[dest]
    counted = agent.emulator.round_trips()
    details = await _refused(agent, body, refusal)
    spent = agent.emulator.round_trips() - counted
    assert details.endswith("; the disk C:\\pool\\tmpl-1.vhdx stands on the parent "
                            f"C:\\pool\\base.vhdx, {why}"), details
    assert (spent["invoke:ValidateVirtualHardDisk"],
            spent["invoke:ConvertVirtualHardDisk"]) == (1, 1), spent
    assert (listing(pool), listing(other)) == before
    assert not any((tmp_path / "secondary").rglob("*.vhdx"))


async def test_linked_clone_removed_while_it_is_copied_is_named_as_the_file_missing(
    agent: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A volume deleted on the host after the copy read its settings (by hand, or by
    another command) makes Hyper-V's merge fail with "file not found" too: the copy names
    the volume's own file as the one missing, not its template, which is there."""
    pool, _ = await _linked_clone_and_other_pool(agent)
    clone = pool / f"{VOLUME_UUID}.vhdx"
    real_call = disks._call

    async def removing_first(hv_: Any, method: str, *args: Any) -> Any:
        if method == "ConvertVirtualHardDisk":
            clone.unlink()
        return await real_call(hv_, method, *args)

    monkeypatch.setattr(disks, "_call", removing_first)
    body = _copy(_volume(_primary(), path=VOLUME_UUID, format="VHDX"),
                 _volume(_nfs(), path="volumes/3", uuid="out-uuid"))
    details = await _refused(agent, body, "ConvertVirtualHardDisk failed with return code 32779")
    assert details.endswith(f"; the disk C:\\pool\\{VOLUME_UUID}.vhdx cannot be found"), details
    assert (pool / "tmpl-1.vhdx").is_file()
    assert not any((tmp_path / "secondary").rglob("*.vhdx"))


OTHER_POOL_UUID = "0b2ac2a4-7b0c-4a57-9a8e-3f3d1e0c0a12"


async def _linked_clone_and_other_pool(running: Running) -> tuple[Path, Path]:
    """A root volume made as a linked clone of ``tmpl-1`` in C:\\pool (case B's default), and
    the folder of a second local pool C:\\pool2, registered as the management server does."""
    pool = _pool(running)
    _template_on_pool(running)
    await _copied(running, _copy(_template(_primary(), path="tmpl-1"), _volume(_primary())))
    return pool, await _other_pool(running)


async def _other_pool(running: Running) -> Path:
    """The folder of a second local pool C:\\pool2, registered as the management server
    does."""
    other = _pool(running, "pool2")
    _, registered = await running.answer(names.MODIFY_STORAGE_POOL_COMMAND, {
        "add": True, "localPath": "C:\\pool2", "pool": {
            "uuid": OTHER_POOL_UUID, "host": "10.1.1.1", "path": "C:\\pool2",
            "type": "Filesystem"}})
    assert registered["result"] is True, registered
    return other


@pytest.mark.parametrize("power", ["running", "paused"])
@pytest.mark.parametrize("dest", ["another pool", "image store", "template"])
async def test_a_volume_a_running_or_paused_vm_uses_is_not_copied_and_its_vm_is_named(
    agent: Running, dest: str, power: str,
) -> None:
    """A running VM's worker process holds its disks open, and a paused VM keeps it:
    Windows refuses to read one and Hyper-V to merge it. The copy fails naming the VM
    (not with Windows' bare sharing violation on the file), and nothing is written."""
    from tests.e2e.test_volume_commands import _vm_with

    pool, other = await _linked_clone_and_other_pool(agent)
    vm = await _vm_with(agent.emulator, "i-3-6-VM", f"C:\\pool\\{VOLUME_UUID}.vhdx",
                        scsi=True, running=True)
    if power == "paused":
        await ok(agent.emulator, await request_state(agent.emulator, vm.path, 9))
    before = (listing(pool), listing(other))
    source = _volume(_primary(), path=VOLUME_UUID, format="VHDX")
    body = {"another pool": _pool_to_pool(),
            "image store": _copy(source, _volume(_nfs(), path="volumes/3", uuid="out-uuid")),
            "template": _copy(source, _template(_nfs(), path="template/tmpl/2/302",
                                                uuid="new-uuid", id=302, name="302-2-abc",
                                                format=None))}[dest]
    details = await _refused(agent, body, f"is attached to the {power} VM i-3-6-VM")
    assert "it was not copied" in details
    assert (listing(pool), listing(other)) == before


def _pool_to_pool(**dest: Any) -> dict[str, Any]:
    """The management server's direct copy between two Filesystem pools (a volume copied
    across pools without a staging image store): a new volume in C:\\pool2."""
    return _copy(_volume(_primary(), path=VOLUME_UUID, format="VHDX", **dest),
                 _volume(_primary("C:\\pool2", uuid=OTHER_POOL_UUID), uuid="copied-uuid",
                         id=11, volumeId=11, **dest))



async def test_linked_clone_copied_to_another_pool_is_merged_there_and_stands_alone(
    agent: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A linked clone copied between pools is merged with its template by Hyper-V straight
    into the target pool, at an aside name renamed when whole: nothing is written in the
    source pool (often one being emptied, too full for a merged copy), the data is written
    once, and the copy no longer stands on the source pool's template."""
    pool, other = await _linked_clone_and_other_pool(agent)
    before = listing(pool)
    written = hyperv_writes(monkeypatch)
    data = await _copied(agent, _pool_to_pool())
    assert (data["path"], data["format"]) == ("copied-uuid", "VHDX")
    assert [(path.parent, path.name.startswith(".copied-uuid.vhdx.partial-"), path.suffix)
            for path in written] == [(other, True, ".vhdx")], written
    copied = other / "copied-uuid.vhdx"
    info = vhd.read_info(copied)
    assert (info.type, info.parent_path, info.virtual_size_bytes) == (
        vhd.DiskType.DYNAMIC, None, GIB)
    assert vhd.read_data(copied, 0, 11) == b"template os"
    assert sorted(listing(other)) == ["copied-uuid.vhdx"]
    assert listing(pool) == before  # the clone and its template as they were, nothing aside


async def test_linked_clone_whose_merge_into_another_pool_fails_leaves_nothing_there(
    agent: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hyper-V wrote the merged disk in the target pool and then failed: the copy fails with
    the reason, naming the file as the host names it, its aside file is removed, the
    source pool is as it was, and a repeat succeeds."""
    pool, other = await _linked_clone_and_other_pool(agent)
    before = listing(pool)
    written = hyperv_writes(monkeypatch, fails_when_done=True)
    details = await _refused(agent, _pool_to_pool(), "not enough space")
    assert "parent" not in details, details  # no broken chain: Hyper-V's words alone
    # the file Hyper-V could not write, by the path the host knows it by
    assert "error code 32768: C:\\pool2\\.copied-uuid.vhdx." in details, details
    assert str(agent.agent.config.agent.state_dir) not in details, details
    assert [path.parent for path in written] == [other], written
    assert listing(other) == {}
    assert listing(pool) == before

    monkeypatch.undo()
    await _copied(agent, _pool_to_pool())
    assert sorted(listing(other)) == ["copied-uuid.vhdx"]
    assert listing(pool) == before


@pytest.mark.parametrize("dest", ["another pool", "template"])
async def test_merge_of_a_linked_clone_runs_as_long_as_the_management_server_waits(
    tmp_path: Path, dest: str,
) -> None:
    """Merging a large linked clone takes Hyper-V longer than the agent's bound for disk
    jobs that touch only metadata; the copy's own ``wait`` (``copy.volume.wait``, 3 hours)
    bounds it, so the copy succeeds instead of failing while Hyper-V still writes."""
    settings = VmSettings(job_wait=jobs.WaitPolicy(timeout_s=0.3, max_poll_s=0.05))
    async with serving(_config(tmp_path), vm_settings=settings) as running:
        pool, other = await _linked_clone_and_other_pool(running)
        before = listing(pool)
        body = (_pool_to_pool() if dest == "another pool" else _copy(
            _volume(_primary(), path=VOLUME_UUID, format="VHDX"),
            _template(_nfs(), path="template/tmpl/2/301", uuid="new-uuid", id=301,
                      name="301-2-abc", format=None)))
        assert body["wait"] == 10800
        running.emulator.faults.slow_next_job("ConvertVirtualHardDisk", 1.0)
        data = await _copied(running, body)
        copied = (other / f"{data['path']}.vhdx" if dest == "another pool"
                  else tmp_path / "secondary" / data["path"])
        info = vhd.read_info(copied)
        assert (info.type, info.parent_path) == (vhd.DiskType.DYNAMIC, None)
        assert vhd.read_data(copied, 0, 11) == b"template os"
        assert listing(pool) == before


def _volume_of_kind(running: Running, kind: str, size: int = 64 * MIB) -> Path:
    """The volume C:\\pool\\<VOLUME_UUID>.vhdx as a disk of ``kind`` holding data; for
    "linked clone" a differencing disk of the template tmpl-1 beside it."""
    path = _pool(running) / f"{VOLUME_UUID}.vhdx"
    if kind == "linked clone":
        template = _template_on_pool(running, size=size)
        vhd.create(path, vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0, parent=template,
                   parent_locator="C:\\pool\\tmpl-1.vhdx")
        return path
    vhd.create(path, vhd.DiskFormat.VHDX, vhd.DiskType[kind.upper()], size)
    vhd.write_data(path, 0, b"volume data")
    return path


@pytest.mark.parametrize(("source", "provisioning", "made"), [
    ("dynamic", "FAT", vhd.DiskType.FIXED),
    ("linked clone", "FAT", vhd.DiskType.FIXED),
    ("fixed", "THIN", vhd.DiskType.DYNAMIC),
    ("fixed", "SPARSE", vhd.DiskType.DYNAMIC),
    ("fixed", "FAT", vhd.DiskType.FIXED),
    ("dynamic", "THIN", vhd.DiskType.DYNAMIC),
    ("fixed", None, vhd.DiskType.FIXED),
])
async def test_volume_copied_to_another_pool_is_of_the_kind_its_provisioning_type_asks(
    agent: Running, source: str, provisioning: str | None, made: vhd.DiskType,
) -> None:
    """A volume copied between pools (a cold move without a staging store) arrives as its
    offering's provisioning type makes a volume: fixed for FAT (a volume made dynamic, or
    as a linked clone, before the agent made FAT volumes fixed reserves its space once
    moved), dynamic for THIN and SPARSE (a fixed disk stops holding a pool's space the
    offering never reserved). With no type given the copy keeps the source's kind."""
    volume = _volume_of_kind(agent, source)
    other = await _other_pool(agent)
    before = listing(_pool(agent))
    dest = {} if provisioning is None else {"provisioningType": provisioning}
    data = await _copied(agent, _pool_to_pool(**dest))
    assert (data["path"], data["format"]) == ("copied-uuid", "VHDX")
    copied = other / "copied-uuid.vhdx"
    info = vhd.read_info(copied)
    assert (info.type, info.parent_path, info.virtual_size_bytes) == (made, None, 64 * MIB)
    expected = b"template os" if source == "linked clone" else b"volume data"
    assert vhd.read_data(copied, 0, 11) == expected
    assert sorted(listing(other)) == ["copied-uuid.vhdx"]
    assert listing(_pool(agent)) == before
    assert vhd.read_info(volume).type is vhd.DiskType[
        "DIFFERENCING" if source == "linked clone" else source.upper()]


async def test_fat_volume_copied_to_a_pool_that_cannot_hold_it_is_refused_before_hyperv_writes(
    tmp_path: Path,
) -> None:
    """The whole size of a fixed copy is counted against the target pool's free space
    before Hyper-V is asked: the copy fails saying so, and both pools are as they were."""
    free = KEEP_FREE_BYTES + 48 * MIB  # room for 48 MiB: not for a 64 MiB fixed copy
    lab = f"\n[emulator.lab]\nfree_bytes = {{C = {free}}}"
    async with serving(_config(tmp_path, lab)) as agent:
        _volume_of_kind(agent, "dynamic")
        other = await _other_pool(agent)
        before = listing(_pool(agent))
        spent = agent.emulator.round_trips()
        details = await _refused(agent, _pool_to_pool(provisioningType="FAT"),
                                 "not enough free space for a fixed copy (FAT) of "
                                 f"C:\\pool\\{VOLUME_UUID}.vhdx")
        assert f"it takes {64 * MIB} bytes, and only {48 * MIB} may be written" in details
        assert (agent.emulator.round_trips() - spent)["invoke:ConvertVirtualHardDisk"] == 0
        assert listing(other) == {}
        assert listing(_pool(agent)) == before


async def test_fat_volume_whose_conversion_into_another_pool_fails_leaves_nothing_there(
    agent: Running,
) -> None:
    _volume_of_kind(agent, "dynamic")
    other = await _other_pool(agent)
    before = listing(_pool(agent))
    agent.emulator.faults.fail_next_job("ConvertVirtualHardDisk")
    await _refused(agent, _pool_to_pool(provisioningType="FAT"), "injected fault")
    assert listing(other) == {}
    assert listing(_pool(agent)) == before


async def test_volume_copy_of_an_unknown_provisioning_type_is_refused_and_nothing_copied(
    agent: Running, tmp_path: Path,
) -> None:
    _volume_of_kind(agent, "dynamic")
    other = await _other_pool(agent)
    _disk(_secondary(tmp_path, "volumes/3/10/abc.vhdx"), 64 * MIB)
    for body in (_pool_to_pool(provisioningType="THICK"),
                 _copy(_volume(_nfs(), path="volumes/3/10/abc.vhdx", format="VHDX"),
                       _volume(_primary(), path="restored", uuid="restored",
                               provisioningType="THICK"))):
        await _refused(agent, body, "destTO.provisioningType 'THICK' is not a provisioning "
                       "type this host knows")
    assert listing(other) == {}
    assert "restored.vhdx" not in listing(_pool(agent))


@pytest.mark.parametrize(("stored", "provisioning", "made"), [
    (vhd.DiskType.DYNAMIC, "FAT", vhd.DiskType.FIXED),
    (vhd.DiskType.FIXED, "THIN", vhd.DiskType.DYNAMIC),
    (vhd.DiskType.FIXED, "FAT", vhd.DiskType.FIXED),
    (vhd.DiskType.DYNAMIC, "SPARSE", vhd.DiskType.DYNAMIC),
])
async def test_volume_copied_from_an_image_store_is_of_the_kind_its_provisioning_type_asks(
    agent: Running, tmp_path: Path, stored: vhd.DiskType, provisioning: str,
    made: vhd.DiskType,
) -> None:
    """The second half of a cold move through the staging image store (the management
    server's copyVolumeBetweenPools): the copy into the new pool is checked as a download
    is, then made of the kind the volume's provisioning type asks, and only that reaches
    the volume's name: no other file is left in the pool."""
    pool = _pool(agent)
    staged = _secondary(tmp_path, "volumes/3/10/abc.vhdx")
    vhd.create(staged, vhd.DiskFormat.VHDX, stored, 64 * MIB)
    vhd.write_data(staged, 0, b"volume data")
    before = staged.read_bytes()
    data = await _copied(agent, _copy(
        _volume(_nfs(), path="volumes/3/10/abc.vhdx", format="VHDX",
                provisioningType=provisioning),
        _volume(_primary(), path="restored", uuid="restored", provisioningType=provisioning)))
    assert (data["path"], data["format"]) == ("restored", "VHDX")
    info = vhd.read_info(pool / "restored.vhdx")
    assert (info.type, info.parent_path, info.virtual_size_bytes) == (made, None, 64 * MIB)
    assert vhd.read_data(pool / "restored.vhdx", 0, 11) == b"volume data"
    assert sorted(listing(pool)) == ["restored.vhdx"]
    assert staged.read_bytes() == before


async def test_fat_volume_from_an_image_store_whose_conversion_fails_keeps_the_earlier_file(
    agent: Running, tmp_path: Path,
) -> None:
    """Hyper-V fails to write the fixed disk: the checked copy is removed with it, and a
    file of the volume's name from before is as it was."""
    pool = _pool(agent)
    earlier = _disk(pool / "restored.vhdx", 16 * MIB, b"earlier volume data")
    _disk(_secondary(tmp_path, "volumes/3/10/abc.vhdx"), 64 * MIB, b"volume data")
    before = listing(pool)
    agent.emulator.faults.fail_next_job("ConvertVirtualHardDisk")
    await _refused(agent, _copy(
        _volume(_nfs(), path="volumes/3/10/abc.vhdx", format="VHDX"),
        _volume(_primary(), path="restored", uuid="restored", provisioningType="FAT")),
                   "injected fault")
    assert listing(pool) == before
    assert vhd.read_data(earlier, 0, 19) == b"earlier volume data"


@pytest.mark.parametrize("fmt", [vhd.DiskFormat.VHDX, vhd.DiskFormat.VHD])
async def test_fat_volume_from_an_image_store_is_refused_before_the_copy_without_room_for_both(
    tmp_path: Path, fmt: vhd.DiskFormat,
) -> None:
    """A dynamic volume made fixed on its way into a pool is first copied and checked
    there, then converted: the copy and the fixed disk lie in the pool together. A pool
    with room for each but not for both is refused before the copy is made, naming what
    the two take and the room there is, not after the copy has filled it (a pool that
    fills up pauses every VM whose dynamic disks grow on it)."""
    suffix = f".{fmt.name.lower()}"
    source = _secondary(tmp_path, f"volumes/3/10/abc{suffix}")
    vhd.create(source, fmt, vhd.DiskType.DYNAMIC, 64 * MIB)
    vhd.write_data(source, 0, b"volume data")
    stored = source.stat().st_size
    free = KEEP_FREE_BYTES + 64 * MIB + stored - 1  # each fits, both do not
    lab = f"\n[emulator.lab]\nfree_bytes = {{C = {free}}}"
    async with serving(_config(tmp_path, lab)) as agent:
        pool = _pool(agent)
        before = listing(pool)
        spent = agent.emulator.round_trips()
        details = await _refused(agent, _copy(
            _volume(_nfs(), path=f"volumes/3/10/abc{suffix}", format=fmt.name),
            _volume(_primary(), path="restored", uuid="restored", provisioningType="FAT")),
                                 "not enough free space for a fixed copy (FAT) of "
                                 "\\\\10.1.1.1\\secondary\\volumes\\3\\10\\abc")
        assert (f"it takes {stored + 64 * MIB} bytes ({stored} for its checked copy and "
                f"{64 * MIB} for the fixed disk Hyper-V writes from it, both in the pool "
                f"until the copy is removed), and only {64 * MIB + stored - 1} may be "
                f"written there ({free} bytes free") in details, details
        assert details.endswith("nothing was copied"), details
        assert (agent.emulator.round_trips() - spent)["invoke:ConvertVirtualHardDisk"] == 0
        assert listing(pool) == before


# --- other combinations -------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dest"), [
    (_template(_primary(), path="a"), _template(_primary(), path="b")),
    (_template(_nfs(), path="a"), _volume(_primary())),
    (_volume(_primary(), path="a"), _template(_primary(), path="b")),
])
async def test_copy_answers_not_supported_when_stores_do_not_combine(
    agent: Running, src: dict[str, Any], dest: dict[str, Any]
) -> None:
    pool = _pool(agent)
    key, answer = await agent.answer(COPY, _copy(src, dest))
    assert (key, answer["result"], answer["details"]) == (
        COPY_ANSWER, False, "CopyCommand failed: Data store combination not supported")
    assert listing(pool) == {}


# --- A from a real SMB server -------------------------------------------------------------


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
async def test_download_reads_template_from_real_samba_share(
    tmp_path: Path, samba: Samba
) -> None:
    extra = f'smb_servers = ["{samba.server}"]\nsmb_port = {samba.port}'
    source = _disk(samba.share_dir / "tmpl" / "smb-case-a.vhdx", 32 * MIB, b"over smb")
    url = (f"cifs://{samba.server}/{samba.share}?user={samba.user}"
           f"&password={quote(samba.password, safe='')}")
    async with serving(_config(tmp_path, extra)) as running:
        pool = _pool(running)
        data = await _copied(running, _copy(_template(_nfs(url), path="tmpl/smb-case-a.vhdx"),
                                            _template(_primary())))
        assert (pool / f"{data['path']}.vhdx").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per run
async def test_download_from_samba_fails_clearly_and_leaves_nothing_when_password_is_wrong(
    tmp_path: Path, samba: Samba
) -> None:
    extra = f'smb_servers = ["{samba.server}"]\nsmb_port = {samba.port}'
    _disk(samba.share_dir / "tmpl" / "smb-denied.vhdx", 32 * MIB, b"not for you")
    wrong = "Wr0ng-pass%40word"
    url = f"cifs://{samba.server}/{samba.share}?user={samba.user}&password={wrong}"
    async with serving(_config(tmp_path, extra)) as running:
        pool = _pool(running)
        before = listing(pool)
        key, answer = await running.answer(COPY, _copy(
            _template(_nfs(url), path="tmpl/smb-denied.vhdx"), _template(_primary())))
        assert (key, answer["result"]) == (COPY_ANSWER, False), answer
        details = answer["details"]
        assert samba.server in details and "Wr0ng" not in details, details
        assert "logon" in details.lower() or "credential" in details.lower(), details
        assert listing(pool) == before


async def test_download_over_a_template_a_running_linked_clone_stands_on_fails_and_keeps_it(
    agent: Running, tmp_path: Path
) -> None:
    """A template that a running VM's linked clone has open as its parent is not replaced
    by a repeated download: the clone names it as its parent, so the copy fails before
    anything is written (as it does for a stopped VM's clone, which Windows would let go),
    naming the VM, the running VM's disk chain intact and no aside file left. Windows
    would refuse only the final rename, after the whole download, naming the aside file."""
    from tests.e2e.test_volume_commands import _vm_with

    pool = _pool(agent)
    _template_on_pool(agent)
    await _copied(agent, _copy(_template(_primary(), path="tmpl-1"), _volume(_primary())))
    await _vm_with(agent.emulator, "i-3-6-VM", f"C:\\pool\\{VOLUME_UUID}.vhdx", scsi=True,
                   running=True)
    before = listing(pool)
    _disk(_secondary(tmp_path, "t/new.vhdx"), 16 * MIB)
    details = await _refused(agent, _copy(_template(_nfs(), path="t/new.vhdx"),
                                          _template(_primary(), path="tmpl-1")),
                             "is the parent of 1 differencing disk(s)")
    # the clone's headers cannot be read while its VM runs (its worker shares no access):
    # Hyper-V tells its parent, and the answer names the VM
    assert f"{VOLUME_UUID}.vhdx, held open by the running VM i-3-6-VM" in details, details
    assert listing(pool) == before  # the template's bytes and the clone's, as they were


async def test_a_vm_whose_root_volume_is_being_copied_starts_once_the_copy_is_done(
    agent: Running, tmp_path: Path,
) -> None:
    """A template made from a stopped VM's root volume (case D) reads the volume for as
    long as the copy takes; the MS may start the VM meanwhile. Started then, its guest
    would write the disk while it is read and the template would be torn: the start
    waits for the copy, and both succeed."""
    from bench.bench_vm import start_body

    vm = "i-3-7-VM"
    pool = _pool(agent)
    template = _disk(pool / "tmpl-1.vhdx", GIB, b"template os")
    vhd.create(pool / f"{vm}-root.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DIFFERENCING, 0,
               parent=template, parent_locator="C:\\pool\\tmpl-1.vhdx")
    agent.emulator.faults.slow_next_job("ConvertVirtualHardDisk", 2.0)  # the merge
    copying = asyncio.create_task(agent.answer(COPY, _copy(
        _volume(_primary(), path=f"{vm}-root", format="VHDX"),
        _template(_nfs(), path="template/tmpl/2/303", uuid="t-uuid", id=303,
                  name="303-2-abc", format=None))))
    while len(list(pool.iterdir())) < 3:  # the merged copy is being written beside it
        assert not copying.done(), copying.result()
        await asyncio.sleep(0.01)
    starting = asyncio.create_task(agent.answer(
        names.START_COMMAND, json.loads(start_body(vm, _drive_c(agent)))))
    done, _ = await asyncio.wait({copying, starting}, return_when=asyncio.FIRST_COMPLETED)
    assert done == {copying}, starting.result()  # the VM did not start during the copy
    assert (await copying)[1]["result"] is True
    assert (await starting)[1]["result"] is True
    copied = tmp_path / "secondary" / "template" / "tmpl" / "2" / "303" / "t-uuid.vhdx"
    assert vhd.read_data(copied, 0, 11) == b"template os"


async def _crash_once_writing(samba: Samba, folder: Path, at_bytes: int) -> None:
    """Crash ``samba`` once a copy's aside file in ``folder`` holds ``at_bytes``."""
    while not any(MARK in path.name and path.stat().st_size >= at_bytes
                  for path in folder.iterdir()):
        await asyncio.sleep(0.02)
    samba.crash()


@pytest.mark.parametrize("backend_kind", ["emulator"])  # one real smbd share per test
@pytest.mark.parametrize("store", ["local", "same server"])
async def test_download_into_an_smb_pool_whose_server_crashes_fails_clearly_and_works_once_back(
    tmp_path: Path, own_samba: Samba, store: str
) -> None:
    """A file server that crashes while a template is written into its pool (and, with
    the image store on the same server, read from it): the answer says the server cannot
    be reached, not what closing the copy's files met afterwards; what was written stays
    under its aside name, never the template's; the same copy, sent again once the server
    is back, works without an agent restart and sweeps that aside file up."""
    samba = own_samba
    folder = samba.other_share_dir / "primary"
    folder.mkdir()
    extra = f'smb_servers = ["{samba.server}"]\nsmb_port = {samba.port}'
    secret = quote(samba.password, safe="")
    if store == "local":
        source, image_store = _secondary(tmp_path, "t/big.vhd"), _nfs()
    else:
        source = samba.share_dir / "t" / "big.vhd"
        source.parent.mkdir()
        image_store = _nfs(f"cifs://{samba.server}/{samba.share}?user={samba.user}"
                           f"&password={secret}")
    vhd.create(source, vhd.DiskFormat.VHD, vhd.DiskType.FIXED, 192 * MIB)
    path = f"/{samba.other_share}/primary?user={samba.user}&password={secret}"
    pool = {"uuid": POOL_UUID, "host": samba.server, "type": "SMB", "port": samba.port,
            "path": path}
    body = _copy(_template(image_store, path="t/big.vhd", format="VHD"), _template(
        _primary(path, host=samba.server, type="SMB", poolType="SMB")))
    async with serving(_config(tmp_path, extra)) as running:
        _, added = await running.answer(names.MODIFY_STORAGE_POOL_COMMAND,
                                        {"add": True, "pool": pool})
        assert added["result"] is True, added
        crash = asyncio.ensure_future(_crash_once_writing(samba, folder, 8 * MIB))
        key, answer = await asyncio.wait_for(running.answer(COPY, body), timeout=30)
        await asyncio.wait_for(crash, timeout=1)
        assert (key, answer["result"]) == (COPY_ANSWER, False), answer
        assert f"SMB server {samba.server} port {samba.port} cannot be reached" \
            in answer["details"], answer["details"]
        assert not any(path.suffix == ".vhd" for path in folder.iterdir())
        samba.start_again()
        data = await _copied(running, body)
    assert sorted(path.name for path in folder.iterdir() if not path.name.startswith("hb-")) \
        == [f"{data['path']}.vhd"]
    assert (folder / f"{data['path']}.vhd").stat().st_size == source.stat().st_size
