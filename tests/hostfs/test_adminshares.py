"""A remote host's drives through its administrative shares (``\\\\host\\C$``), and how the
wsman backend chooses between those and an emulated host's mapped folders."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hyperv_agent.backends import remote_files
from hyperv_agent.config import load_config
from hyperv_agent.emulator.files import EmulatedFiles
from hyperv_agent.errors import HostFileError, PathNotAllowed
from hyperv_agent.hostfs.adminshares import AdminShareFiles
from hyperv_agent.hostfs.locations import Credentials, ShareLocation
from hyperv_agent.hostfs.smb import SmbFiles
from tests.samba import Samba


def _files(host: str = "hv01") -> AdminShareFiles:
    return AdminShareFiles(SmbFiles(), host, None)  # nothing is sent: paths only


def test_drive_paths_become_the_hosts_administrative_shares() -> None:
    files = _files()
    assert files.remote("C:\\pool\\disk.vhdx") == "\\\\hv01\\C$\\pool\\disk.vhdx"
    assert files.remote("d:\\") == "\\\\hv01\\D$"
    assert files.remote("\\\\fs1\\secondary\\t.vhd") == "\\\\fs1\\secondary\\t.vhd"


@pytest.mark.parametrize("path", ["pool\\disk.vhdx", "\\pool", "", "C:pool\\disk.vhdx", "C:"])
def test_relative_paths_are_refused(path: str) -> None:
    with pytest.raises(PathNotAllowed):
        _files().remote(path)


@pytest.mark.parametrize("path", ["\\\\?\\C:\\pool\\disk.vhdx", "\\\\.\\C:\\pool", "//?/C:/pool",
                                  "\\\\?\\UNC\\fs1\\share\\t.vhd", "\\\\?\\Volume{0b1c}\\pool",
                                  "\\\\.\\PhysicalDrive0"])
def test_device_namespace_paths_are_refused_not_sent_to_a_server_named_after_them(
        path: str) -> None:
    """``\\\\?\\C:\\pool`` (a host's long form, as a local_storage_path copied from
    PowerShell may be) would reach SMB as a share of a server ``?``; it is refused by name
    instead, before anything is sent, as everywhere else the agent takes a path."""
    smb = SmbFiles()
    files = AdminShareFiles(smb, "hv01", None)
    with pytest.raises(PathNotAllowed, match=r"namespace, which the host's administrative "
                                             r"shares do not reach: give its drive path"):
        files.remote(path)
    with pytest.raises(PathNotAllowed, match="namespace"):
        asyncio.run(files.make_dirs(path))
    assert smb.open_connections == 0


def test_wsman_backend_uses_the_mapped_folders_of_a_shared_configuration(tmp_path: Path) -> None:
    config_file = tmp_path / "lab.toml"
    config_file.write_text(f"""[agent]
backend = "wsman"
[wsman]
url = "http://127.0.0.1:5985/wsman"
[emulator.drives]
C = "{tmp_path / 'C'}"
""")
    files = remote_files(load_config(config_file, state_dir=tmp_path / "agent"))
    assert isinstance(files, EmulatedFiles)
    assert files.local("C:\\pool\\a.vhdx") == tmp_path / "C" / "pool" / "a.vhdx"


def test_wsman_backend_without_mappings_uses_admin_shares_with_its_account(
        tmp_path: Path) -> None:
    config = load_config(None, state_dir=tmp_path, backend="wsman", wsman={
        "url": "https://hv01.lab:5986/wsman", "username": "LAB\\cloud", "password": "pw"})
    files = remote_files(config)
    assert isinstance(files, AdminShareFiles)
    assert files.remote("C:\\x") == "\\\\hv01.lab\\C$\\x"


async def test_files_on_drive_c_are_reached_over_smb(admin_share: Samba) -> None:
    credentials = Credentials(admin_share.user, "", admin_share.password)
    files = AdminShareFiles(SmbFiles(port=admin_share.port, connect_timeout_s=5),
                            admin_share.server, credentials)
    await files.make_dirs("C:\\pool")
    await files.write_text("C:\\pool\\note.txt", "on the host")
    assert (admin_share.share_dir / "pool" / "note.txt").read_text() == "on the host"
    assert await files.read_text("C:\\pool\\note.txt") == "on the host"
    assert await files.list_dir("C:\\pool") == ["note.txt"]
    stat = await files.stat("C:\\pool\\note.txt")
    assert stat is not None and stat.size == len("on the host")
    assert await files.remove("C:\\pool\\note.txt")
    assert not (admin_share.share_dir / "pool" / "note.txt").exists()


async def test_closing_logs_the_administrative_shares_off(admin_share: Samba) -> None:
    """What a stopping agentless agent does (``OpenedHost.close``); the next call logs on
    again."""
    credentials = Credentials(admin_share.user, "", admin_share.password)
    smb = SmbFiles(port=admin_share.port, connect_timeout_s=5)
    files = AdminShareFiles(smb, admin_share.server, credentials)
    await files.make_dirs("C:\\closing")
    assert smb.open_connections == 1
    await asyncio.to_thread(files.close)
    assert smb.open_connections == 0
    assert await files.list_dir("C:\\closing") == []
    files.close()


async def test_links_are_judged_on_the_administrative_share(admin_share: Samba) -> None:
    credentials = Credentials(admin_share.user, "", admin_share.password)
    files = AdminShareFiles(SmbFiles(port=admin_share.port, connect_timeout_s=5),
                            admin_share.server, credentials)
    await files.make_dirs("C:\\walk\\inner")
    assert await files.link_out("C:\\walk", "C:\\walk\\inner\\disk.vhdx") is None
    with pytest.raises(PathNotAllowed):
        await files.link_out("C:\\walk", "walk\\inner")


async def test_an_account_given_for_another_share_of_the_host_leaves_its_drives_alone(
        admin_share: Samba) -> None:
    """A pool on a share of the Hyper-V host itself comes with its own account: the drives
    are still reached with the WinRM account (the pool's took them over)."""
    credentials = Credentials(admin_share.user, "", admin_share.password)
    files = AdminShareFiles(SmbFiles(port=admin_share.port, connect_timeout_s=5),
                            admin_share.server, credentials)
    files.use_credentials(ShareLocation(admin_share.server, admin_share.other_share,
                                        credentials=Credentials("pool-only", "CSTEST", "x")))
    await files.make_dirs("C:\\after-pool")
    assert (admin_share.share_dir / "after-pool").is_dir()


async def test_the_winrm_account_is_tried_again_after_the_host_refused_a_logon_with_it(
        admin_share: Samba) -> None:
    """An account disabled or locked out for a while: each call meanwhile names it, and the
    drives are reached again once the host takes it, without restarting the agent."""
    credentials = Credentials(admin_share.user, "", admin_share.password)
    files = AdminShareFiles(SmbFiles(port=admin_share.port, connect_timeout_s=5),
                            admin_share.server, credentials)
    admin_share.set_user_enabled(False)
    try:
        for _ in range(2):
            with pytest.raises(HostFileError,
                               match=f"wrong user name or password for {admin_share.user}$"):
                await files.make_dirs("C:\\refused")
    finally:
        admin_share.set_user_enabled(True)
    await files.make_dirs("C:\\refused")
    assert (admin_share.share_dir / "refused").is_dir()


async def test_a_pool_account_the_host_refuses_for_a_drive_leaves_it_to_the_winrm_account(
        admin_share: Samba) -> None:
    credentials = Credentials(admin_share.user, "", admin_share.password)
    files = AdminShareFiles(SmbFiles(port=admin_share.port, connect_timeout_s=5),
                            admin_share.server, credentials)
    files.use_credentials(ShareLocation(admin_share.server, "C$",
                                        credentials=Credentials("nobody", "CSTEST", "x")))
    with pytest.raises(HostFileError, match="wrong user name or password for CSTEST\\\\nobody"):
        await files.make_dirs("C:\\first")
    await files.make_dirs("C:\\first")
    assert (admin_share.share_dir / "first").is_dir()
