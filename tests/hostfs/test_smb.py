"""SmbFiles and RoutedFiles against a real Samba server on 127.0.0.1, and the agent's
ModifyStoragePoolCommand over HTTPS on such a share."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import smbclient  # type: ignore[import-untyped]
from smbclient._io import SMBFileTransaction, SMBRawIO, set_info  # type: ignore[import-untyped]
from smbprotocol.file_info import (  # type: ignore[import-untyped]
    FileAttributes,
    FileBasicInformation,
)
from smbprotocol.open import FilePipePrinterAccessMask  # type: ignore[import-untyped]

from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.files import EmulatedFiles
from hyperv_agent.errors import ConfigError, HostFileError, PathNotAllowed
from hyperv_agent.hostfs import smb as smb_module
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hostfs.locations import Credentials, ShareLocation, parse_cifs_url
from hyperv_agent.hostfs.routed import RoutedFiles
from hyperv_agent.hostfs.smb import SmbFiles
from hyperv_agent.hostfs.smb import redirects as smb_redirects
from tests.cloudstack.fixtures import ms422_json
from tests.e2e.conftest import PRIVATE_IP, Running, serving
from tests.ports import free_port
from tests.samba import Samba, samba_with_accounts

MIB = 1024 * 1024


@dataclass
class Share:
    """A fresh folder on the Samba share: its UNC path and the local folder behind it."""

    unc: str
    local: Path
    samba: Samba

    def path(self, *names: str) -> str:
        return "\\".join((self.unc, *names))


def _location(samba: Samba, password: str | None = None, share: str | None = None
              ) -> ShareLocation:
    credentials = Credentials(user=samba.user, domain=samba.server,
                              password=samba.password if password is None else password)
    return ShareLocation(samba.server, share or samba.share, credentials=credentials)


@pytest.fixture
def smb(samba: Samba) -> Iterator[SmbFiles]:
    files = SmbFiles(port=samba.port, connect_timeout_s=3)
    files.use_credentials(_location(samba))
    yield files
    files.close()


@pytest.fixture
def share(samba: Samba) -> Share:
    name = f"t-{uuid.uuid4().hex[:10]}"
    (samba.share_dir / name).mkdir()
    return Share(f"{samba.unc}\\{name}", samba.share_dir / name, samba)


# --- usage, folders, existence ------------------------------------------------------------


async def test_usage_reports_the_shared_volume_when_measured(smb: SmbFiles, share: Share) -> None:
    usage = await smb.usage(share.unc)
    local = shutil.disk_usage(share.local)
    assert abs(usage.total_bytes - local.total) <= local.total // 100
    assert 0 < usage.free_bytes <= usage.total_bytes
    assert abs(usage.free_bytes - local.free) <= max(local.total // 100, 64 * MIB)


async def test_make_dirs_creates_parents_and_is_repeatable_when_called_twice(
    smb: SmbFiles, share: Share
) -> None:
    await smb.make_dirs(share.path("a", "b", "c"))
    await smb.make_dirs(share.path("a", "b", "c"))
    assert (share.local / "a" / "b" / "c").is_dir()
    assert await smb.exists(share.path("a", "b"))
    assert not await smb.exists(share.path("a", "nope"))
    assert not await smb.exists(share.path("nope", "deeper"))


async def test_make_dirs_fails_naming_the_file_when_a_file_has_the_folder_name(
    smb: SmbFiles, share: Share
) -> None:
    (share.local / "pool").write_text("not a folder")
    with pytest.raises(HostFileError, match=r"cannot create folder .*\\pool: .*\\pool is a "
                       "file, not a folder"):
        await smb.make_dirs(share.path("pool"))
    with pytest.raises(HostFileError, match=r"cannot create folder .*\\pool\\below\\more: "
                       r".*\\pool is a file, not a folder"):
        await smb.make_dirs(share.path("pool", "below", "more"))
    assert (share.local / "pool").read_text() == "not a folder"


async def test_make_dirs_on_a_share_the_server_does_not_have_fails_naming_the_share(
    smb: SmbFiles, samba: Samba
) -> None:
    """The server answers "not found" for a folder right below a share it does not have,
    as for the share's root itself: smbclient's makedirs went on asking for that root for
    ever, and the call (a copy to a pool whose share was removed, a local pool on a drive
    without its administrative share) never answered."""
    smb.use_credentials(_location(samba, share="nosuchshare"))
    with pytest.raises(HostFileError, match=r"cannot create folder .*\\nosuchshare\\a\\b: "
                       r".* has no share named 'nosuchshare'"):
        await asyncio.wait_for(smb.make_dirs(f"\\\\{samba.server}\\nosuchshare\\a\\b"), 20)
    with pytest.raises(HostFileError, match="has no share named 'nosuchshare'"):
        await asyncio.wait_for(smb.make_dirs(f"\\\\{samba.server}\\nosuchshare"), 20)


async def test_make_dirs_of_the_share_itself_is_fine_and_makes_nothing(
    smb: SmbFiles, samba: Samba
) -> None:
    before = sorted(path.name for path in samba.share_dir.iterdir())
    await smb.make_dirs(samba.unc)
    await smb.make_dirs(samba.unc + "\\")
    assert sorted(path.name for path in samba.share_dir.iterdir()) == before


async def test_stat_tells_files_from_folders_when_both_exist(smb: SmbFiles, share: Share) -> None:
    (share.local / "f.bin").write_bytes(b"x" * 1234)
    (share.local / "d").mkdir()
    file_stat, dir_stat = await smb.stat(share.path("f.bin")), await smb.stat(share.path("d"))
    assert file_stat is not None and (file_stat.size, file_stat.is_dir) == (1234, False)
    assert dir_stat is not None and dir_stat.is_dir
    assert await smb.stat(share.path("missing")) is None
    assert await smb.stat(share.path("missing", "child")) is None


# --- small text files ---------------------------------------------------------------------


async def test_write_text_replaces_the_file_without_leaving_a_temporary_when_it_exists(
    smb: SmbFiles, share: Share
) -> None:
    (share.local / "hb").write_text("old contents that are longer")
    await smb.write_text(share.path("hb"), "2024-5-7@3:4:9 é")
    assert (share.local / "hb").read_text(encoding="utf-8") == "2024-5-7@3:4:9 é"
    assert sorted(os.listdir(share.local)) == ["hb"]
    assert await smb.read_text(share.path("hb")) == "2024-5-7@3:4:9 é"


OWN_FOLDER_PASSWORD = "Own-f0lder!pw"  # of the account daemon, in ``_own_folder``


@contextlib.contextmanager
def _own_folder() -> Iterator[tuple[Samba, Path, SmbFiles, str]]:
    """A share whose folder ``pool`` belongs to the account ``daemon`` alone (a pool's
    service account; files created ``0644``), and the file access reaching it as that
    account: the server, the folder on its disk, the file access and the folder's UNC
    path. The file access is closed at the end."""
    with samba_with_accounts({"daemon": OWN_FOLDER_PASSWORD}) as samba:
        folder = samba.share_dir / "pool"
        folder.mkdir()
        shutil.chown(folder, "daemon", "daemon")
        folder.chmod(0o700)
        files = SmbFiles(port=samba.port, connect_timeout_s=3)
        files.use_credentials(ShareLocation(samba.server, samba.share, "pool",
                                            Credentials("daemon", samba.server,
                                                        OWN_FOLDER_PASSWORD)))
        try:
            yield samba, folder, files, f"{samba.unc}\\pool"
        finally:
            files.close()


async def test_write_text_and_rename_replace_files_in_a_folder_owned_by_its_account() -> None:
    """A folder that belongs to the account that reaches it (a pool's service account),
    files created with no execute right (``create mask = 0644``): the account replaces,
    round after round, the file it wrote itself (a heartbeat stamp), and a file another
    account left there; each time the new contents replace the old whole, and nothing is
    left aside."""
    with _own_folder() as (_, folder, files, unc):
        left = folder / "left.vhdx"
        left.write_text("another account's, longer")
        shutil.chown(left, "bin", "bin")
        try:
            for stamp in ("2026-12-7@23:0:0", "2026-12-7@23:1:0", "2026-12-7@23:2:0"):
                await files.write_text(f"{unc}\\hb-10.1.1.7", stamp)
                assert (folder / "hb-10.1.1.7").read_text() == stamp
                assert (folder / "hb-10.1.1.7").owner() == "daemon"
            await files.write_text(f"{unc}\\left.vhdx", "replaced")
            assert left.read_text() == "replaced" and left.owner() == "daemon"
            await files.write_text(f"{unc}\\new.tmp", "renamed over")
            await files.rename(f"{unc}\\new.tmp", f"{unc}\\hb-10.1.1.7")
        finally:
            files.close()
        assert (folder / "hb-10.1.1.7").read_text() == "renamed over"
        assert sorted(os.listdir(folder)) == ["hb-10.1.1.7", "left.vhdx"]


async def test_write_text_writes_over_a_file_aside_another_account_left_in_its_folder(
) -> None:
    """A write of the file cut short by another account (the pool's account before this
    one) left its file aside, which this account may delete but not write: the file is
    written, as this account, and nothing is left aside. In a folder the account may not
    write, the write is still refused and nothing is changed."""
    with _own_folder() as (_, folder, files, unc):
        stale = folder / ".hb-10.1.1.7.tmp"
        stale.write_text("2026-12-7@22:0:0, cut")
        shutil.chown(stale, "bin", "bin")
        theirs = folder / "theirs"
        theirs.mkdir(mode=0o755)
        shutil.chown(theirs, "bin", "bin")
        (theirs / ".hb.tmp").write_text("kept")
        shutil.chown(theirs / ".hb.tmp", "bin", "bin")
        try:
            for stamp in ("2026-12-7@23:0:0", "2026-12-7@23:1:0"):
                await files.write_text(f"{unc}\\hb-10.1.1.7", stamp)
                assert (folder / "hb-10.1.1.7").read_text() == stamp
                assert (folder / "hb-10.1.1.7").owner() == "daemon"
            with pytest.raises(HostFileError, match=r"cannot write .*\.hb\.tmp: access denied"):
                await files.write_text(f"{unc}\\theirs\\hb", "refused")
        finally:
            files.close()
        assert sorted(os.listdir(folder)) == ["hb-10.1.1.7", "theirs"]
        assert os.listdir(theirs) == [".hb.tmp"] and (theirs / ".hb.tmp").read_text() == "kept"


async def test_read_text_returns_the_start_or_none_when_small_or_missing(
    smb: SmbFiles, share: Share
) -> None:
    (share.local / "long.txt").write_text("abcdefghij")
    assert await smb.read_text(share.path("long.txt"), max_bytes=4) == "abcd"
    assert await smb.read_text(share.path("absent.txt")) is None
    with pytest.raises(HostFileError, match="cannot read"):
        await smb.read_text(share.unc)  # a folder


async def test_list_dir_is_sorted_and_refuses_files_and_missing_folders(
    smb: SmbFiles, share: Share
) -> None:
    for name in ("b.vhdx", "A.vhd", "c"):
        (share.local / name).write_bytes(b"")
    assert await smb.list_dir(share.unc) == sorted(["b.vhdx", "A.vhd", "c"])
    with pytest.raises(HostFileError, match="not a directory"):
        await smb.list_dir(share.path("c"))
    with pytest.raises(HostFileError, match="no such file or folder"):
        await smb.list_dir(share.path("nowhere"))


# --- remove and rename --------------------------------------------------------------------


async def test_remove_deletes_once_and_reports_false_when_already_absent(
    smb: SmbFiles, share: Share
) -> None:
    (share.local / "gone.vhdx").write_bytes(b"data")
    assert await smb.remove(share.path("gone.vhdx")) is True
    assert not (share.local / "gone.vhdx").exists()
    assert await smb.remove(share.path("gone.vhdx")) is False


async def test_remove_deletes_files_another_account_left_in_a_folder_owned_by_its_account(
) -> None:
    """A folder that belongs to the account that reaches it (a pool's service account):
    the account deletes there files another account left, which it may read (``0644``)
    or not even that (``0600``), but not write (on Windows: FILE_DELETE_CHILD on the
    folder, no right on the file), and a read-only file it wrote itself; a folder is
    still refused and kept."""
    with _own_folder() as (samba, folder, files, unc):
        for name, mode in (("left.vhdx", 0o644), ("private.iso", 0o600)):
            (folder / name).write_text("another account's")
            shutil.chown(folder / name, "bin", "bin")
            (folder / name).chmod(mode)
        (folder / "kept").mkdir()
        shutil.chown(folder / "kept", "bin", "bin")
        try:
            await files.write_text(f"{unc}\\read-only.vhdx", "own")
            await asyncio.to_thread(_mark_read_only, f"{unc}\\read-only.vhdx", samba,
                                    "daemon", OWN_FOLDER_PASSWORD)
            for name in ("left.vhdx", "private.iso", "read-only.vhdx"):
                assert await files.remove(f"{unc}\\{name}") is True, name
                assert await files.remove(f"{unc}\\{name}") is False, name
            with pytest.raises(HostFileError, match="cannot delete"):
                await files.remove(f"{unc}\\kept")
        finally:
            files.close()
        assert os.listdir(folder) == ["kept"]


def _mark_read_only(path: str, samba: Samba, user: str, password: str) -> None:
    """Give the file at ``path`` FILE_ATTRIBUTE_READONLY (as ``attrib +r`` does), checked."""
    connections: dict[str, Any] = {}
    session = {"username": user, "password": password, "port": samba.port,
               "connection_cache": connections}
    try:
        raw = SMBRawIO(path, mode="r", share_access="rwd",
                       desired_access=FilePipePrinterAccessMask.FILE_WRITE_ATTRIBUTES,
                       **session)
        with SMBFileTransaction(raw) as transaction:
            basic = FileBasicInformation()
            for time_field in ("creation_time", "last_access_time", "last_write_time",
                               "change_time"):
                basic[time_field] = 0  # unchanged
            basic["file_attributes"] = FileAttributes.FILE_ATTRIBUTE_READONLY
            set_info(transaction, basic)
        assert smbclient.stat(path, **session).st_file_attributes \
            & FileAttributes.FILE_ATTRIBUTE_READONLY
    finally:
        smbclient.reset_connection_cache(connection_cache=connections)


async def test_remove_refuses_a_folder_and_keeps_it_when_asked_to_delete_one(
    smb: SmbFiles, share: Share
) -> None:
    (share.local / "keep").mkdir()
    with pytest.raises(HostFileError, match="cannot delete"):
        await smb.remove(share.path("keep"))
    assert (share.local / "keep").is_dir()


async def test_remove_of_a_file_open_elsewhere_names_the_sharing_violation_and_keeps_it(
    smb: SmbFiles, share: Share, samba: Samba
) -> None:
    (share.local / "busy.vhdx").write_bytes(b"in use")
    other = SmbFiles(port=samba.port, connect_timeout_s=3)  # another host's connection
    other.use_credentials(_location(samba))
    try:
        handle = await asyncio.to_thread(other.open_binary, share.path("busy.vhdx"), "rb")
        try:
            with pytest.raises(HostFileError, match=r"open elsewhere .*\(sharing violation\)$"):
                await smb.remove(share.path("busy.vhdx"))
        finally:
            await asyncio.to_thread(handle.close)
    finally:
        other.close()
    assert (share.local / "busy.vhdx").read_bytes() == b"in use"


async def test_a_file_deleted_while_open_elsewhere_counts_as_gone_and_its_name_as_taken(
    smb: SmbFiles, share: Share, samba: Samba
) -> None:
    """Another client holds the file open with delete sharing: the delete is pending until
    it closes the file. Nothing can open the file meanwhile; a repeated delete succeeds and
    writing that name again fails saying why."""
    (share.local / "doomed.vhdx").write_bytes(b"old")
    connections: dict[str, Any] = {}
    holder = smbclient.open_file(share.path("doomed.vhdx"), "rb", share_access="rwd",
                                 username=samba.user, password=samba.password,
                                 port=samba.port, connection_cache=connections)
    try:
        assert await smb.remove(share.path("doomed.vhdx")) is True
        assert await smb.stat(share.path("doomed.vhdx")) is None
        assert not await smb.exists(share.path("doomed.vhdx"))
        assert await smb.read_text(share.path("doomed.vhdx")) is None
        assert await smb.remove(share.path("doomed.vhdx")) is False
        with pytest.raises(HostFileError) as caught:
            await smb.write_text(share.path("doomed.vhdx"), "new")
        assert str(caught.value).startswith(
            f"cannot rename {share.path('.doomed.vhdx.tmp')} to {share.path('doomed.vhdx')}: "
            f"{share.path('doomed.vhdx')} is being deleted but is still open elsewhere"
        ), str(caught.value)
    finally:
        holder.close()
        smbclient.reset_connection_cache(connection_cache=connections)
    assert not (share.local / "doomed.vhdx").exists()
    await smb.write_text(share.path("doomed.vhdx"), "new")
    assert (share.local / "doomed.vhdx").read_text() == "new"


@pytest.mark.parametrize("sharing", ["r", "rwd"])
async def test_writing_a_file_another_client_holds_open_fails_saying_so_then_recovers(
    smb: SmbFiles, share: Share, samba: Samba, sharing: str
) -> None:
    """A neighbour reading a heartbeat stamp the moment it is replaced: the server refuses
    to rename over a file open elsewhere (STATUS_ACCESS_DENIED, as for a file the account
    may not delete, MS-FSCC FileRenameInformation). The failure says the target is open
    elsewhere, not only "access denied"; the stamp is left as it was and the next write,
    once it is closed, replaces it."""
    (share.local / "hb").write_text("old")
    connections: dict[str, Any] = {}  # a neighbour's connection
    holder = smbclient.open_file(share.path("hb"), "rb", share_access=sharing,
                                 username=samba.user, password=samba.password,
                                 port=samba.port, connection_cache=connections)
    try:
        with pytest.raises(HostFileError) as caught:
            await smb.write_text(share.path("hb"), "new")
    finally:
        holder.close()
        smbclient.reset_connection_cache(connection_cache=connections)
    message = str(caught.value)
    assert message.startswith(f"cannot rename {share.path('.hb.tmp')} to {share.path('hb')}: ")
    assert f"{share.path('hb')} is open elsewhere" in message, message
    assert (share.local / "hb").read_text() == "old"
    await smb.write_text(share.path("hb"), "new")
    assert (share.local / "hb").read_text() == "new"
    assert sorted(path.name for path in share.local.iterdir()) == ["hb"]


async def test_writing_a_file_whose_reader_closed_it_after_the_refusal_replaces_it(
    smb: SmbFiles, share: Share, samba: Samba, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A neighbour's read of a heartbeat stamp lasts a round trip: it held the file when
    the rename came, and has closed it by the time the file is looked at. The refusal
    said nothing lasting: the write replaces the file, leaving nothing aside, rather
    than failing with "access denied" (the account may replace the file), which cost
    the host a stamp and sent the operator looking for a missing permission."""
    (share.local / "hb").write_text("old")
    connections: dict[str, Any] = {}  # a neighbour's connection
    holder = smbclient.open_file(share.path("hb"), "rb", share_access="r",
                                 username=samba.user, password=samba.password,
                                 port=samba.port, connection_cache=connections)
    looked_at = smb_module._fail_if_held

    def read_ended(*args: Any, **session: Any) -> bool:
        holder.close()  # the read ends just after the server refused the rename
        return looked_at(*args, **session)

    monkeypatch.setattr(smb_module, "_fail_if_held", read_ended)
    try:
        await smb.write_text(share.path("hb"), "new")
    finally:
        holder.close()
        smbclient.reset_connection_cache(connection_cache=connections)
    assert (share.local / "hb").read_text() == "new"
    assert sorted(path.name for path in share.local.iterdir()) == ["hb"]


async def test_rename_replaces_the_target_when_it_exists(smb: SmbFiles, share: Share) -> None:
    (share.local / "new.tmp").write_bytes(b"new")
    (share.local / "volume.vhdx").write_bytes(b"old, longer")
    await smb.rename(share.path("new.tmp"), share.path("volume.vhdx"))
    assert (share.local / "volume.vhdx").read_bytes() == b"new"
    assert not (share.local / "new.tmp").exists()
    with pytest.raises(HostFileError, match="no such file"):
        await smb.rename(share.path("new.tmp"), share.path("x"))


async def test_rename_is_refused_when_the_target_is_on_another_share(
    smb: SmbFiles, share: Share, samba: Samba
) -> None:
    (share.local / "a").write_bytes(b"a")
    other = f"\\\\{samba.server}\\{samba.other_share}\\a"
    with pytest.raises(HostFileError, match="not on the same share"):
        await smb.rename(share.path("a"), other)
    assert (share.local / "a").exists()


# --- streaming ----------------------------------------------------------------------------


def _pattern(size: int) -> bytes:
    block = hashlib.sha256(b"seed").digest() * (MIB // 32)
    return (block * (size // len(block) + 1))[:size]


async def test_open_binary_streams_several_mib_both_ways_when_used_from_a_thread(
    smb: SmbFiles, share: Share
) -> None:
    data = _pattern(6 * MIB + 123)
    target = share.path("big.vhd")

    def write_then_read() -> bytes:
        with smb.open_binary(target, "wb") as out:
            for start in range(0, len(data), MIB):
                out.write(data[start:start + MIB])
        chunks = []
        with smb.open_binary(target, "rb") as source:
            while chunk := source.read(MIB):
                chunks.append(chunk)
        return b"".join(chunks)

    assert await asyncio.to_thread(write_then_read) == data
    assert (share.local / "big.vhd").read_bytes() == data


async def test_open_binary_updates_in_place_and_refuses_xb_when_the_file_exists(
    smb: SmbFiles, share: Share
) -> None:
    (share.local / "disk.vhd").write_bytes(b"0123456789")

    def patch() -> None:
        with smb.open_binary(share.path("disk.vhd"), "r+b") as handle:
            handle.seek(4)
            handle.write(b"XY")
        smb.open_binary(share.path("disk.vhd"), "xb")

    with pytest.raises(HostFileError, match=r"cannot open .*disk\.vhd: file exists"):
        await asyncio.to_thread(patch)
    assert (share.local / "disk.vhd").read_bytes() == b"0123XY6789"
    with pytest.raises(HostFileError, match="no such file or folder"):
        await asyncio.to_thread(smb.open_binary, share.path("nope.vhd"), "rb")


async def test_open_file_fails_as_host_file_error_when_the_connection_is_gone(
    smb: SmbFiles, share: Share
) -> None:
    (share.local / "f").write_bytes(b"x" * 100)

    def read_after_disconnect() -> None:
        with smb.open_binary(share.path("f"), "rb") as handle:
            smb.close()
            handle.read()

    with pytest.raises(HostFileError, match="cannot access"):
        await asyncio.to_thread(read_after_disconnect)


# --- copies -------------------------------------------------------------------------------


async def test_copy_file_within_a_share_copies_every_byte_when_the_target_exists(
    smb: SmbFiles, share: Share
) -> None:
    data = _pattern(17 * MIB + 5)  # more than one batch of server-side chunks
    (share.local / "template.vhdx").write_bytes(data)
    (share.local / "copy.vhdx").write_bytes(b"stale")
    copied = await smb.copy_file(share.path("template.vhdx"), share.path("copy.vhdx"))
    assert copied == len(data)
    assert (share.local / "copy.vhdx").read_bytes() == data


async def test_copy_file_streams_between_shares_when_they_differ(
    smb: SmbFiles, share: Share, samba: Samba
) -> None:
    data = _pattern(3 * MIB)
    (share.local / "iso.iso").write_bytes(data)
    name = f"{share.local.name}.iso"
    target = f"\\\\{samba.server}\\{samba.other_share}\\{name}"
    assert await smb.copy_file(share.path("iso.iso"), target) == len(data)
    assert (samba.other_share_dir / name).read_bytes() == data


async def test_copy_file_of_a_missing_source_fails_and_creates_nothing(
    smb: SmbFiles, share: Share
) -> None:
    with pytest.raises(HostFileError, match="no such file"):
        await smb.copy_file(share.path("absent.vhdx"), share.path("copy.vhdx"))
    assert not (share.local / "copy.vhdx").exists()


async def test_copy_file_within_a_share_that_fails_at_its_target_names_the_target(
    smb: SmbFiles, share: Share
) -> None:
    """The server copies within a share: a target whose folder is missing failed naming
    only the source, as if the template copied were the file missing."""
    (share.local / "template.vhdx").write_bytes(_pattern(4096))
    source, target = share.path("template.vhdx"), share.path("gone", "volume.vhdx")
    with pytest.raises(HostFileError) as raised:
        await smb.copy_file(source, target)
    assert str(raised.value) == (f"cannot copy {source} to {target}: {target}: no such file "
                                 "or folder")
    with pytest.raises(HostFileError) as raised:  # a source missing is named alone
        await smb.copy_file(share.path("absent.vhdx"), share.path("copy.vhdx"))
    assert str(raised.value) == f"cannot copy {share.path('absent.vhdx')}: no such file or folder"
    assert sorted(path.name for path in share.local.iterdir()) == ["template.vhdx"]


# --- failures: credentials, server, share, paths -------------------------------------------


async def test_wrong_password_names_the_server_and_never_the_password(samba: Samba) -> None:
    wrong = "Wr0ng-pa55word"
    files = SmbFiles(port=samba.port, connect_timeout_s=3)
    files.use_credentials(_location(samba, password=wrong))
    try:
        with pytest.raises(HostFileError) as caught:
            await files.usage(samba.unc)
    finally:
        files.close()
    message = str(caught.value)
    assert f"SMB server {samba.server}" in message and "refused the logon" in message
    assert f"{samba.server}\\{samba.user}" in message
    assert wrong not in message and samba.password not in message
    assert "\n" not in message


async def test_right_password_works_when_it_follows_a_wrong_one(samba: Samba, share: Share) -> None:
    files = SmbFiles(port=samba.port, connect_timeout_s=3)
    files.use_credentials(_location(samba, password="not-it"))
    try:
        with pytest.raises(HostFileError, match="refused the logon"):
            await files.exists(share.unc)
        files.use_credentials(_location(samba))
        assert await files.exists(share.unc)
    finally:
        files.close()


async def test_a_wrong_password_for_a_user_with_a_session_open_is_refused_not_kept(
        samba: Samba, share: Share) -> None:
    """A pool re-sent with its user right and its password wrong, while a session of that
    user is open: smbclient would reuse the session, so the wrong password would be taken
    and kept, to fail only after the next reconnect. It is logged on with first: refused,
    the folder keeps the account it had, which still reaches it after a reconnect."""
    files = SmbFiles(port=samba.port, connect_timeout_s=3)
    try:
        files.use_credentials(_location(samba))
        assert await files.exists(share.unc)
        files.use_credentials(_location(samba, password="Mistyped-0ne"))
        with pytest.raises(HostFileError, match=rf"refused the logon.*{samba.user}"):
            await files.exists(share.unc)
        files.close()  # the next call reconnects and logs on again
        assert await files.exists(share.unc)
    finally:
        files.close()


async def test_each_folder_is_reached_with_its_own_account_the_deepest_winning() -> None:
    """Two accounts given for two folders of one share (one below the other), each alone
    allowed in its own: each path is reached with the account of the deepest folder
    above it, whatever order they came in, and an account refused for one folder leaves
    that folder to the account it had."""
    accounts = {"daemon": "Outer-acc0unt!", "bin": "Inner-acc0unt!"}
    with samba_with_accounts(accounts) as samba:
        # the inner account may pass through the outer folder, no more
        for user, folder, mode in (("daemon", "outer", 0o711), ("bin", "outer/inner", 0o700)):
            where = samba.share_dir / folder
            where.mkdir()
            shutil.chown(where, user, user)
            where.chmod(mode)

        def account(folder: str, user: str, password: str | None = None) -> ShareLocation:
            secret = accounts.get(user, "") if password is None else password
            return ShareLocation(samba.server, samba.share, folder,
                                 Credentials(user, samba.server, secret))

        files = SmbFiles(port=samba.port, connect_timeout_s=3)
        try:
            files.use_credentials(account("outer\\Inner", "bin"))  # case as Windows takes it
            files.use_credentials(account("OUTER", "daemon"))
            await files.make_dirs(f"{samba.unc}\\outer\\inner\\deeper")
            await files.write_text(f"{samba.unc}\\outer\\inner\\deeper\\in.txt", "in")
            await files.write_text(f"{samba.unc}\\outer\\out.txt", "out")
            # another account, mistyped (one with a session open is not logged on again)
            files.use_credentials(account("outer", samba.user, password="Mistyped-0ne"))
            with pytest.raises(HostFileError, match=rf"refused the logon.*{samba.user}"):
                await files.write_text(f"{samba.unc}\\outer\\again.txt", "refused")
            await files.write_text(f"{samba.unc}\\outer\\again.txt", "again")
        finally:
            files.close()
        assert (samba.share_dir / "outer/inner/deeper").owner() == "bin"
        assert (samba.share_dir / "outer/inner/deeper/in.txt").owner() == "bin"
        assert (samba.share_dir / "outer/out.txt").owner() == "daemon"
        assert (samba.share_dir / "outer/again.txt").read_text() == "again"


async def test_a_copy_between_two_folders_of_one_share_uses_each_folders_account() -> None:
    """A volume copied from one pool to another on the same share, each pool's folder
    open to its own account only: the source is read as its account and the target
    written as its own (the server-side copy would write it with the source's session)."""
    accounts = {"daemon": "Source-acc0unt!", "bin": "Target-acc0unt!"}
    with samba_with_accounts(accounts) as samba:
        _owned_folders(samba, {"pool-a": "daemon", "pool-b": "bin"}, mode=0o700)
        data = _pattern(2 * MIB + 3)
        files = SmbFiles(port=samba.port, connect_timeout_s=3)
        try:
            for user, folder in (("daemon", "pool-a"), ("bin", "pool-b")):
                files.use_credentials(ShareLocation(samba.server, samba.share, folder,
                                                    Credentials(user, samba.server,
                                                                accounts[user])))
            with files.open_binary(f"{samba.unc}\\pool-a\\vol.vhdx", "wb") as writer:
                writer.write(data)
            copied = await files.copy_file(f"{samba.unc}\\pool-a\\vol.vhdx",
                                           f"{samba.unc}\\pool-b\\vol.vhdx")
        finally:
            files.close()
        assert copied == len(data)
        assert (samba.share_dir / "pool-b/vol.vhdx").read_bytes() == data
        assert (samba.share_dir / "pool-b/vol.vhdx").owner() == "bin"


async def test_a_path_below_no_pools_folder_is_reached_with_an_account_chosen_by_rule(
) -> None:
    """An image store beside two pools of one share, each pool's folder its own account's,
    the store's URL carrying none: it is reached with the account configured for the
    server, whichever pool logged on last; without one, with the share's one pool account
    (another share's one account serving a share without pools), and where the share's
    folders have several accounts none is guessed: the call fails naming them and the
    setting to use, and writes nothing."""
    accounts = {"daemon": "Pool-a-acc0unt!", "bin": "Pool-b-acc0unt!"}
    with samba_with_accounts(accounts) as samba:
        _owned_folders(samba, {"pool-a": "daemon", "pool-b": "bin"})
        (samba.share_dir / "store").mkdir(mode=0o777)
        (samba.share_dir / "store").chmod(0o777)
        (samba.other_share_dir / "store").mkdir(mode=0o777)
        (samba.other_share_dir / "store").chmod(0o777)

        def pool(user: str, folder: str) -> ShareLocation:
            return ShareLocation(samba.server, samba.share, folder,
                                 Credentials(user, samba.server, accounts[user]))

        configured = {samba.server: Credentials(samba.user, samba.server, samba.password)}
        files = SmbFiles(port=samba.port, connect_timeout_s=3, configured=configured)
        try:
            files.use_credentials(pool("daemon", "pool-a"))
            await files.write_text(f"{samba.unc}\\pool-a\\a.txt", "a")
            await files.write_text(f"{samba.unc}\\store\\configured.txt", "c")
        finally:
            files.close()
        assert (samba.share_dir / "pool-a/a.txt").owner() == "daemon"
        assert (samba.share_dir / "store/configured.txt").owner() == samba.user

        files = SmbFiles(port=samba.port, connect_timeout_s=3)
        try:
            files.use_credentials(pool("daemon", "pool-a"))
            await files.write_text(f"{samba.unc}\\pool-a\\a2.txt", "a")
            await files.write_text(f"{samba.unc}\\store\\one.txt", "1")
            other = f"\\\\{samba.server}\\{samba.other_share}\\store\\other.txt"
            await files.write_text(other, "o")
            files.use_credentials(pool("bin", "pool-b"))
            await files.write_text(f"{samba.unc}\\pool-b\\b.txt", "b")
            with pytest.raises(HostFileError) as caught:
                await files.write_text(f"{samba.unc}\\store\\two.txt", "2")
        finally:
            files.close()
        message = str(caught.value)
        assert "several accounts" in message and "[agent.smb_credentials]" in message
        assert f"{samba.server}\\bin" in message and f"{samba.server}\\daemon" in message
        assert all(secret not in message for secret in accounts.values())
        assert (samba.share_dir / "store/one.txt").owner() == "daemon"
        assert (samba.other_share_dir / "store/other.txt").owner() == "daemon"
        assert not (samba.share_dir / "store/two.txt").exists()
        assert not list((samba.share_dir / "store").glob(".two.txt*"))


async def test_one_account_spelt_twice_is_one_account_for_a_path_below_no_folder(
    samba: Samba, share: Share
) -> None:
    """The account a path below no folder of its own is reached with is chosen among
    accounts, not among their spellings: the same user under another domain case, or
    with an older password kept for a share beside the newer one a logon took, is one
    account, reached with the password the server last accepted."""
    def account(domain: str, password: str) -> Credentials:
        return Credentials(samba.user, domain, password)

    files = SmbFiles(port=samba.port, connect_timeout_s=3)
    try:
        files.keep_credentials(ShareLocation(samba.server, samba.share, "",
                                             account("HV01", samba.password)))
        files.keep_credentials(ShareLocation(samba.server, samba.other_share, "",
                                             account("hv01", samba.password)))
        await files.log_on(samba.server)
    finally:
        files.close()

    files = SmbFiles(port=samba.port, connect_timeout_s=3)
    try:
        files.keep_credentials(ShareLocation(samba.server, samba.other_share, "",
                                             account("HV01", "an-older-passw0rd")))
        folder = share.unc[len(samba.unc) + 1:]
        files.use_credentials(ShareLocation(samba.server, samba.share, folder,
                                            account("hv01", samba.password)))
        await files.write_text(share.path("pool.txt"), "p")
        assert files.credentials_for(samba.server) == account("hv01", samba.password)
        await files.log_on(samba.server)
    finally:
        files.close()


async def test_missing_credentials_are_named_when_none_were_given(samba: Samba) -> None:
    files = SmbFiles(port=samba.port, connect_timeout_s=3)
    try:
        with pytest.raises(HostFileError, match=r"no credentials are known for 127\.0\.0\.1"):
            await files.exists(samba.unc)
    finally:
        files.close()


async def test_unreachable_port_fails_quickly_and_clearly(samba: Samba) -> None:
    port = free_port()
    files = SmbFiles(port=port, connect_timeout_s=2)
    files.use_credentials(_location(samba))
    started = time.monotonic()
    with pytest.raises(HostFileError) as caught:
        await files.usage(samba.unc)
    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        f"cannot measure {samba.unc}: SMB server {samba.server} port {port} cannot be "
        "reached: connection refused")


async def test_missing_share_is_named_when_the_server_does_not_have_it(
    smb: SmbFiles, samba: Samba
) -> None:
    smb.use_credentials(_location(samba, share="nosuchshare"))
    with pytest.raises(HostFileError, match="has no share named 'nosuchshare'"):
        await smb.exists(f"\\\\{samba.server}\\nosuchshare\\x")


@pytest.mark.parametrize("path", [
    "\\\\127.0.0.1\\cstest\\..\\cstest2\\secret",
    "\\\\127.0.0.1\\cstest\\a\\..\\..\\x",
    "C:\\Windows\\system.ini",
    "relative\\path",
    "\\\\127.0.0.1",
    "\\\\127.0.0.1\\cstest\\bad:stream",
])
async def test_paths_outside_a_share_are_refused_before_anything_is_sent(
    smb: SmbFiles, samba: Samba, path: str
) -> None:
    with pytest.raises(PathNotAllowed):
        await smb.stat(path)
    with pytest.raises(PathNotAllowed):
        await smb.write_text(path, "x")
    assert not (samba.other_share_dir / "secret").exists()


async def test_dot_dot_inside_a_share_resolves_within_it(smb: SmbFiles, share: Share) -> None:
    await smb.write_text(share.path("sub", "..", "flat.txt"), "ok")
    assert (share.local / "flat.txt").read_text() == "ok"


# --- links: not followed out of a pool ------------------------------------------------------


async def test_link_out_walks_plain_folders_and_stops_where_nothing_exists_yet(
    smb: SmbFiles, share: Share
) -> None:
    (share.local / "a" / "b").mkdir(parents=True)
    (share.local / "a" / "b" / "f.vhdx").write_bytes(b"disk")
    assert await smb.link_out(share.unc, share.path("a", "b", "f.vhdx")) is None
    assert await smb.link_out(share.unc, share.path("a", "new", "g.vhdx")) is None
    with pytest.raises(PathNotAllowed):
        await smb.link_out(share.unc, share.path("..", "..", "elsewhere"))


async def test_link_out_of_the_share_leads_nowhere_when_samba_serves_it(
    smb: SmbFiles, share: Share, samba: Samba
) -> None:
    """Samba follows its links itself and keeps them inside the share ("wide links = no",
    its default): one out of it is not there for a client, so nothing beyond is read."""
    beyond = samba.root / f"beyond-{uuid.uuid4().hex[:6]}"
    beyond.mkdir()
    (beyond / "secret.vhdx").write_bytes(b"secret")
    (share.local / "out").symlink_to(beyond, target_is_directory=True)
    assert await smb.stat(share.path("out", "secret.vhdx")) is None
    assert await smb.link_out(share.unc, share.path("out", "secret.vhdx")) is None


@pytest.mark.parametrize(("attributes", "tag", "redirects"), [
    (0x400, 0xA000000C, True),  # IO_REPARSE_TAG_SYMLINK
    (0x400 | 0x10, 0xA0000003, True),  # IO_REPARSE_TAG_MOUNT_POINT: a junction
    (0x400, 0x00000000, True),  # a reparse point whose tag the server did not give
    (0x400, 0x80000013, False),  # IO_REPARSE_TAG_DEDUP: a deduplicated VHDX holds its data
    (0x400, 0x9000001A, False),  # IO_REPARSE_TAG_CLOUD: placeholders hold their own data too
    (0x20, 0x00000000, False),  # an ordinary file
])
def test_only_name_redirecting_reparse_points_count_as_links(
    attributes: int, tag: int, redirects: bool
) -> None:
    assert smb_redirects(attributes, tag) is redirects


async def test_concurrent_calls_share_one_connection_when_they_start_together(
    samba: Samba, share: Share
) -> None:
    files = SmbFiles(port=samba.port, connect_timeout_s=3)
    files.use_credentials(_location(samba))
    for index in range(8):
        (share.local / f"f{index}").write_bytes(b"x" * index)
    try:
        sizes = await asyncio.gather(*(files.stat(share.path(f"f{i}")) for i in range(8)))
        assert [s.size if s else None for s in sizes] == list(range(8))
        assert files.open_connections == 1
        files.close()
        assert files.open_connections == 0
        assert await files.exists(share.path("f3"))  # reconnects after close
        assert files.open_connections == 1
    finally:
        files.close()


# --- routing ------------------------------------------------------------------------------


@pytest.fixture
def routed(smb: SmbFiles, emulator: EmulatorCim, samba: Samba) -> RoutedFiles:
    return RoutedFiles(EmulatedFiles(emulator.host), smb, [samba.server.upper()])


async def test_routing_sends_configured_servers_to_smb_and_the_rest_to_the_base(
    routed: RoutedFiles, share: Share, tmp_path: Path
) -> None:
    await routed.make_dirs("C:\\pools")
    await routed.write_text("C:\\pools\\hb.txt", "local")
    await routed.write_text(share.path("hb.txt"), "remote")
    assert (tmp_path / "C" / "pools" / "hb.txt").read_text() == "local"
    assert (share.local / "hb.txt").read_text() == "remote"
    assert routed.backend("\\\\127.0.0.1\\x\\y") is routed.smb
    assert routed.backend("//127.0.0.1/x/y") is routed.smb
    assert routed.backend("\\\\10.1.1.2\\x\\y") is routed.base
    assert routed.backend("C:\\x") is routed.base
    with pytest.raises(HostFileError, match="no such share"):
        await routed.exists("\\\\10.1.1.2\\x\\y")  # not on Samba: the emulator has no such share


async def test_routing_counts_a_path_on_another_backend_than_its_root_as_out(
    routed: RoutedFiles, share: Share
) -> None:
    assert await routed.link_out("C:\\pool", share.path("x.vhdx")) == share.path("x.vhdx")
    assert await routed.link_out(share.unc, share.path("x.vhdx")) is None


async def test_routing_streams_copies_between_the_host_and_a_share(
    routed: RoutedFiles, share: Share, tmp_path: Path
) -> None:
    data = _pattern(2 * MIB + 7)
    (tmp_path / "C" / "templates").mkdir(parents=True)
    (tmp_path / "C" / "templates" / "t.vhd").write_bytes(data)
    assert await routed.copy_file("C:\\templates\\t.vhd", share.path("t.vhd")) == len(data)
    assert await routed.copy_file(share.path("t.vhd"), "C:\\templates\\back.vhd") == len(data)
    assert (tmp_path / "C" / "templates" / "back.vhd").read_bytes() == data
    assert await routed.copy_file(share.path("t.vhd"), share.path("t2.vhd")) == len(data)
    assert (share.local / "t2.vhd").read_bytes() == data
    with pytest.raises(HostFileError, match="not on the same share"):
        await routed.rename(share.path("t.vhd"), "C:\\templates\\moved.vhd")
    assert (share.local / "t.vhd").exists()


async def test_routing_forwards_credentials_to_the_backend_of_the_server(
    samba: Samba, emulator: EmulatorCim, share: Share
) -> None:
    smb = SmbFiles(port=samba.port, connect_timeout_s=3)
    routed: HostFiles = RoutedFiles(EmulatedFiles(emulator.host), smb, [samba.server])
    url = (f"cifs://{samba.server}/{samba.share}?user={samba.user}"
           f"&password={samba.password.replace('@', '%40')}")
    try:
        routed.use_credentials(parse_cifs_url(url))
        routed.use_credentials(parse_cifs_url("cifs://10.1.1.2/other?user=a&password=b"))
        assert await routed.exists(share.unc)
    finally:
        smb.close()


# --- configuration ------------------------------------------------------------------------


def test_smb_settings_come_from_the_file_and_the_environment_when_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "agent.toml"
    file.write_text('[agent]\nsmb_servers = ["fs1.lab", "10.1.1.2"]\nsmb_port = 4450\n')
    agent = load_config(file).agent
    assert (agent.smb_servers, agent.smb_port) == (("fs1.lab", "10.1.1.2"), 4450)
    assert (load_config().agent.smb_servers, load_config().agent.smb_port) == ((), 445)
    monkeypatch.setenv("HYPERV_AGENT_SMB_SERVERS", " 127.0.0.1 , fs2 ")
    monkeypatch.setenv("HYPERV_AGENT_SMB_PORT", "1445")
    agent = load_config(file).agent
    assert (agent.smb_servers, agent.smb_port) == (("127.0.0.1", "fs2"), 1445)


@pytest.mark.parametrize(("overrides", "problem"), [
    ({"smb_servers": ["fs1:445"]}, "agent.smb_servers: Value error, 'fs1:445' is not a host"),
    ({"smb_servers": ["\\\\fs1"]}, "is not a host name"),
    ({"smb_port": 0}, "agent.smb_port: Input should be greater than or equal to 1"),
    ({"smb_port": 70000}, "agent.smb_port: Input should be less than or equal to 65535"),
])
def test_bad_smb_settings_are_refused_in_one_line(
    overrides: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, **overrides)
    assert problem in str(caught.value) and "\n" not in str(caught.value)


# --- end to end: ModifyStoragePoolCommand on a Samba share over HTTPS ----------------------

MODIFY = "com.cloud.agent.api.ModifyStoragePoolCommand"
STATS = "com.cloud.agent.api.GetStorageStatsCommand"
POOL_UUID = "8d0a5a3e-2b0c-4c55-9b1f-6a4f0e2f7c31"


def _owned_folders(samba: Samba, owners: dict[str, str], mode: int | None = None) -> None:
    """Folders of the share made, each owned by its account ({folder: user}), as a file
    server whose pools' folders each belong to a service account of their own."""
    for folder, user in owners.items():
        where = samba.share_dir / folder
        where.mkdir()
        shutil.chown(where, user, user)
        if mode is not None:
            where.chmod(mode)


def _own_accounts_config(tmp_path: Path, samba: Samba) -> AgentConfig:
    """Agent settings reaching ``samba`` through smbprotocol, with no account configured:
    each pool brings its own."""
    return load_config(None, state_dir=tmp_path / "state", backend="emulator",
                       private_ip=PRIVATE_IP, smb_servers=[samba.server],
                       smb_port=samba.port)


@pytest.fixture
def smb_agent_config(tmp_path: Path, samba: Samba) -> Callable[..., AgentConfig]:
    """Agent settings with shares on the Samba server reached through smbprotocol."""
    def make(**overrides: Any) -> AgentConfig:
        return load_config(None, state_dir=tmp_path / "state", backend="emulator",
                           private_ip=PRIVATE_IP, smb_servers=[samba.server],
                           smb_port=samba.port, **overrides)

    return make


@pytest.fixture
async def smb_running(smb_agent_config: Callable[..., AgentConfig]) -> AsyncIterator[Running]:
    async with serving(smb_agent_config()) as running:
        yield running


def _pool(samba: Samba, folder: str, password: str) -> dict[str, object]:
    path = (f"/{samba.share}/{folder}?user={samba.user}"
            f"&password={password.replace('@', '%40')}&domain={samba.server}")
    return {"add": True, "pool": {"type": "SMB", "host": samba.server, "port": 445,
                                  "path": path, "uuid": POOL_UUID}}


async def test_smb_pool_is_measured_on_the_real_share_without_leaking_the_password(
    smb_running: Running, samba: Samba, share: Share, caplog: pytest.LogCaptureFixture
) -> None:
    for name in (None, "smbprotocol", "smbclient"):  # every line, the library's included
        caplog.set_level(logging.DEBUG, logger=name)
    key, value = await smb_running.answer(MODIFY, _pool(samba, share.local.name, samba.password))
    assert key == "com.cloud.agent.api.ModifyStoragePoolAnswer" and value["result"] is True, value
    info = value["poolInfo"]
    assert info["localPath"] == share.unc
    local = shutil.disk_usage(share.local)
    assert abs(info["capacityBytes"] - local.total) <= local.total // 100
    assert 0 < info["availableBytes"] <= info["capacityBytes"]
    _, stats = await smb_running.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
    assert stats["result"] is True and stats["capacityBytes"] == info["capacityBytes"]
    await smb_running.agent.host.write_heartbeats()
    assert (share.local / f"hb-{PRIVATE_IP}").read_text().count("@") == 1
    texts = (json.dumps(value), json.dumps(stats), caplog.text)
    assert any(r.name.startswith("smbprotocol") for r in caplog.records)
    assert all(samba.password not in text for text in texts)
    assert all(samba.password.replace("@", "%40") not in text for text in texts)


async def test_smb_pool_with_a_wrong_password_fails_clearly_and_registers_nothing(
    smb_running: Running, samba: Samba, share: Share, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng@pass"
    _, value = await smb_running.answer(MODIFY, _pool(samba, share.local.name, wrong))
    assert value["result"] is False
    details = value["details"]
    assert details.startswith(f"ModifyStoragePoolCommand failed: Failed to add storage pool "
                              f"{POOL_UUID}")
    assert f"SMB server {samba.server}" in details and "refused the logon" in details
    assert wrong not in details and "Wr0ng%40pass" not in details
    assert wrong not in caplog.text and "Wr0ng%40pass" not in caplog.text
    assert not (smb_running.agent.config.agent.state_dir / "pools.json").exists()


@pytest.mark.parametrize("where", ["other share", "same share"])
async def test_a_second_pool_that_cannot_log_on_leaves_the_first_pools_account_alone(
    smb_running: Running, samba: Samba, share: Share, where: str
) -> None:
    """Two pools on one server: the MS adds a second one whose account is mistyped. Its
    registration fails, and the first pool is still reached with its own account (it was
    reached with the mistyped one, so its statistics and heartbeats failed)."""
    _, first = await smb_running.answer(MODIFY, _pool(samba, share.local.name, samba.password))
    assert first["result"] is True, first
    second = f"t-{uuid.uuid4().hex[:10]}"
    (samba.other_share_dir if where == "other share" else samba.share_dir).joinpath(
        second).mkdir()
    other = samba.other_share if where == "other share" else samba.share
    typo = {"add": True, "pool": {
        "type": "SMB", "host": samba.server, "port": 445, "uuid": str(uuid.uuid4()),
        "path": f"/{other}/{second}?user=nobody-here&password=Wr0ng%40pass&domain=CSTEST"}}
    _, refused = await smb_running.answer(MODIFY, typo)
    assert refused["result"] is False and "refused the logon" in refused["details"], refused
    _, stats = await smb_running.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB"})
    assert stats["result"] is True, stats
    await smb_running.agent.host.write_heartbeats()
    assert (share.local / f"hb-{PRIVATE_IP}").read_text().count("@") == 1


# --- the management server's own bodies against the real share ---------------------------

COPY = "org.apache.cloudstack.storage.command.CopyCommand"
TEMPLATE_TO = "org.apache.cloudstack.storage.to.TemplateObjectTO"


def _ms_pool(samba: Samba, folder: str) -> dict[str, Any]:
    """The 4.22 MS's ModifyStoragePoolCommand (samples/ms-4.22), pointed at the share."""
    body: dict[str, Any] = ms422_json("10_ModifyStoragePoolCommand.json")
    body["pool"] |= {"host": samba.server, "uuid": POOL_UUID, "path": (
        f"/{samba.share}/{folder}?user={samba.user}"
        f"&password={quote(samba.password, safe='')}&domain={samba.server}")}
    return body


async def test_smb_pool_from_the_ms_body_is_the_share_and_is_measured(
    smb_running: Running, samba: Samba, share: Share
) -> None:
    body = _ms_pool(samba, share.local.name)
    assert body["localPath"].startswith("/mnt//")  # what the MS always sends
    key, value = await smb_running.answer(MODIFY, body)
    assert (key, value["result"]) == ("com.cloud.agent.api.ModifyStoragePoolAnswer", True), value
    assert value["poolInfo"]["localPath"] == share.unc
    _, stats = await smb_running.answer(STATS, {"id": POOL_UUID, "pooltype": "SMB",
                                                "localPath": body["pool"]["path"]})
    assert stats["result"] is True and stats["capacityBytes"] > 0
    assert samba.password not in json.dumps([value, stats])


def _template_copy(samba: Samba, relative: str) -> dict[str, Any]:
    """The 4.22 MS's CopyCommand (samples/ms-4.22): its cifs image-store URL carries no
    credentials, as the MS strips them."""
    body: dict[str, Any] = ms422_json("12_CopyCommand.json")
    src = body["srcTO"][TEMPLATE_TO]
    src["path"] = relative
    src["imageDataStore"]["com.cloud.agent.api.to.NfsTO"]["_url"] = (
        f"cifs://{samba.server}/{samba.share}")
    return body


async def _copy_template(running: Running, samba: Samba, name: str) -> dict[str, Any]:
    source = samba.share_dir / "tmpl" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.unlink(missing_ok=True)
    vhd.create(source, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 16 << 20)
    running.emulator.host.paths.local(
        "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks").mkdir(parents=True,
                                                                          exist_ok=True)
    key, answer = await running.answer(COPY, _template_copy(samba, f"tmpl/{name}"))
    assert key == "org.apache.cloudstack.storage.command.CopyCmdAnswer"
    return answer


async def test_copy_reaches_the_image_store_with_a_registered_pools_account(
    smb_running: Running, samba: Samba, share: Share
) -> None:
    await smb_running.answer(MODIFY, _ms_pool(samba, share.local.name))
    answer = await _copy_template(smb_running, samba, "by-pool.vhdx")
    assert answer["result"] is True, answer


async def test_copy_reaches_the_image_store_with_the_configured_account(
    smb_agent_config: Callable[..., AgentConfig], samba: Samba, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HV_TEST_SMB_PASSWORD", samba.password)
    accounts = {samba.server: {"username": samba.user, "password_env": "HV_TEST_SMB_PASSWORD"}}
    async with serving(smb_agent_config(smb_credentials=accounts)) as running:
        answer = await _copy_template(running, samba, "by-config.vhdx")
    assert answer["result"] is True, answer


async def test_copy_fails_naming_the_server_when_no_account_is_known(
    smb_running: Running, samba: Samba, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await _copy_template(smb_running, samba, "no-account.vhdx")
    assert answer["result"] is False
    details = answer["details"]
    assert f"no credentials are known for {samba.server}" in details, details
    assert "[agent.smb_credentials]" in details
    assert samba.password not in details and samba.password not in caplog.text


def _own_pool(samba: Samba, pool_uuid: str, folder: str, user: str, password: str
              ) -> dict[str, Any]:
    """The 4.22 MS's ModifyStoragePoolCommand for a pool in ``folder`` of the share, its
    account in the path (``_ms_pool`` with another account and uuid)."""
    body = _ms_pool(samba, folder)
    body["pool"] |= {"uuid": pool_uuid, "path": (
        f"/{samba.share}/{folder}?user={user}&password={quote(password, safe='')}"
        f"&domain={samba.server}")}
    return body


@pytest.mark.parametrize("remove", ["modify", "delete"])
async def test_a_removed_pools_account_is_forgotten_and_leaves_the_share_to_the_others(
    tmp_path: Path, remove: str
) -> None:
    """A pool removed (DeleteStoragePoolCommand, or ModifyStoragePoolCommand without
    ``add``) takes its account with it: the image store beside the pool that took its
    place on the share is reached with that pool's account, the share's only one, not
    refused as a choice between the new account and the removed pool's."""
    accounts = {"daemon": "Removed-acc0unt!", "bin": "Staying-acc0unt!"}
    removed, staying = str(uuid.uuid4()), str(uuid.uuid4())
    with samba_with_accounts(accounts) as samba:
        _owned_folders(samba, {"pool-a": "daemon", "pool-b": "bin"})
        config = _own_accounts_config(tmp_path, samba)
        async with serving(config) as running:
            first = _own_pool(samba, removed, "pool-a", "daemon", accounts["daemon"])
            _, added = await running.answer(MODIFY, first)
            assert added["result"] is True, added
            if remove == "modify":
                _, gone = await running.answer(MODIFY, {**first, "add": False})
            else:
                _, gone = await running.answer(
                    "com.cloud.agent.api.DeleteStoragePoolCommand",
                    {"_pool": {"uuid": removed, "type": "SMB"}})
            assert gone["result"] is True and "forgotten" in gone["details"], gone
            _, added = await running.answer(
                MODIFY, _own_pool(samba, staying, "pool-b", "bin", accounts["bin"]))
            assert added["result"] is True, added
            answer = await _copy_template(running, samba, "after-removal.vhdx")
        assert answer["result"] is True, answer
        assert "daemon" not in json.dumps(answer)


async def test_a_moved_pools_old_account_is_forgotten_unless_its_folder_stays_a_pool(
    tmp_path: Path
) -> None:
    """A pool registered again under its uuid at another folder of the share (its path
    changed in the management server's database, sent at the host's next connect) leaves
    its old folder: once no registered pool has that folder, its account is forgotten, so
    the image store beside the pools is reached with the share's only account left, not
    refused as a choice between it and the old folder's. While another pool has the old
    folder, the folder keeps its account (that pool's heartbeat is still written)."""
    accounts = {"daemon": "Old-folder-acc0unt!", "bin": "New-folder-acc0unt!"}
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    with samba_with_accounts(accounts) as samba:
        _owned_folders(samba, {"pool-a": "daemon", "pool-b": "bin"})
        config = _own_accounts_config(tmp_path, samba)
        beat = samba.share_dir / "pool-a" / f"hb-{PRIVATE_IP}"
        async with serving(config) as running:
            for pool_uuid in (first, second):
                _, added = await running.answer(MODIFY, _own_pool(
                    samba, pool_uuid, "pool-a", "daemon", accounts["daemon"]))
                assert added["result"] is True, added
            _, moved = await running.answer(
                MODIFY, _own_pool(samba, first, "pool-b", "bin", accounts["bin"]))
            assert moved["result"] is True, moved
            beat.unlink()
            await running.agent.host.write_heartbeats()
            assert beat.owner() == "daemon"  # the second pool's folder, its account
            _, moved = await running.answer(
                MODIFY, _own_pool(samba, second, "pool-b", "bin", accounts["bin"]))
            assert moved["result"] is True, moved
            answer = await _copy_template(running, samba, "after-move.vhdx")
        assert answer["result"] is True, answer
        assert "daemon" not in json.dumps(answer)


class _BrokenInner:
    """A file whose server went away: every write and the close fail."""

    def __init__(self) -> None:
        self.closed_tried = False

    def write(self, data: bytes) -> int:
        raise OSError("write: connection reset")

    def flush(self) -> None:
        raise OSError("flush: connection reset")

    def close(self) -> None:
        self.closed_tried = True
        raise OSError("close: bad file descriptor")

    def writable(self) -> bool:
        return True


def test_a_failed_close_after_a_failed_write_leaves_the_writes_failure_reported() -> None:
    """A server gone mid-copy fails the write, then the close: the answer tells the first
    failure (what was being done), the close is still tried, and a close failing on its
    own is still reported."""
    from hyperv_agent.hostfs.smb import _TranslatingFile

    @contextlib.contextmanager
    def translated() -> Iterator[None]:
        try:
            yield
        except OSError as error:
            raise HostFileError(f"SMB server went away: {error}") from None

    inner = _BrokenInner()
    with (pytest.raises(HostFileError, match="write: connection reset"),
          _TranslatingFile(inner, translated).as_binary() as handle):
        handle.write(b"data")
    assert inner.closed_tried
    alone = _BrokenInner()
    with (pytest.raises(HostFileError, match="close: bad file descriptor"),
          _TranslatingFile(alone, translated).as_binary()):
        pass

