"""A remote host's drives through its administrative shares (``\\\\host\\C$``), and how the
wsman backend chooses between those and an emulated host's mapped folders."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hyperv_agent.backends import emulator_config, host_files, open_host, remote_files
from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.emulator.files import EmulatedFiles
from hyperv_agent.emulator.lab import open_emulator
from hyperv_agent.errors import ConfigError, HostFileError, PathNotAllowed
from hyperv_agent.hostfs.adminshares import AdminShareFiles
from hyperv_agent.hostfs.locations import Credentials, ShareLocation
from hyperv_agent.hostfs.routed import RoutedFiles
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


def _lab(tmp_path: Path, tables: str, agent: str = "", wsman: str = "") -> AgentConfig:
    """An agent driving an emulated host over WinRM, with the lab configuration's
    ``tables`` (``[emulator.drives]``, ``[emulator.shares]``)."""
    config_file = tmp_path / "lab.toml"
    config_file.write_text(f"""[agent]
backend = "wsman"
{agent}
[wsman]
url = "http://127.0.0.1:5985/wsman"
{wsman}
{tables}
""")
    return load_config(config_file, state_dir=tmp_path / "agent")


def test_wsman_backend_uses_the_mapped_folders_of_a_shared_configuration(tmp_path: Path) -> None:
    files = remote_files(_lab(tmp_path, f"""[emulator.drives]
C = "{tmp_path / 'C'}"
[emulator.shares]
'\\\\fs1\\secondary' = "{tmp_path / 'secondary'}"
"""))
    assert isinstance(files, EmulatedFiles)
    assert files.local("C:\\pool\\a.vhdx") == tmp_path / "C" / "pool" / "a.vhdx"
    assert files.local("\\\\fs1\\secondary\\t.vhdx") == tmp_path / "secondary" / "t.vhdx"


def test_a_lab_configuration_mapping_only_drive_c_is_refused_naming_the_image_store(
        tmp_path: Path) -> None:
    # The emulated host's default image store is a folder of ITS state directory; this
    # agent's default would be one of its own, never seen by the host.
    with pytest.raises(ConfigError) as refused:
        open_host(_lab(tmp_path, f'[emulator.drives]\nC = "{tmp_path / "C"}"\n'))
    text = str(refused.value)
    assert "the image store's share ([emulator.shares]" in text
    assert "[agent] smb_servers" in text and str(tmp_path / "agent") in text
    assert "drive C" not in text


def test_a_lab_configuration_mapping_only_the_image_store_is_refused_naming_drive_c(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        remote_files(_lab(tmp_path, f"[emulator.shares]\n'\\\\fs1\\secondary' = "
                                    f"\"{tmp_path / 'secondary'}\"\n"))
    text = str(refused.value)
    assert "map none for drive C ([emulator.drives] C = " in text
    assert "image store" not in text


def test_the_drive_of_the_local_pool_must_be_mapped_too(tmp_path: Path) -> None:
    config = _lab(tmp_path, f"""[emulator.drives]
C = "{tmp_path / 'C'}"
[emulator.shares]
'\\\\fs1\\secondary' = "{tmp_path / 'secondary'}"
""", agent="local_storage_path = 'D:\\pool'")
    with pytest.raises(ConfigError, match=r"map none for drive D \(\[emulator.drives\] D = "):
        remote_files(config)


def test_an_image_store_reached_over_smb_needs_no_share_and_gets_no_default_one(
        tmp_path: Path) -> None:
    config = _lab(tmp_path, f'[emulator.drives]\nC = "{tmp_path / "C"}"\n',
                  agent='smb_servers = ["10.1.1.2"]')
    files = host_files(config)
    assert isinstance(files, RoutedFiles) and isinstance(files.base, EmulatedFiles)
    # not a "secondary" folder of this agent's own state directory
    with pytest.raises(HostFileError, match="no such share"):
        files.base.local("\\\\HYPERV-EMU\\secondary\\t.vhdx")


def test_the_configurations_own_served_host_is_reached_through_its_defaults(
        tmp_path: Path) -> None:
    # The README's cluster lab: `cim query --backend wsman --config hv-a.toml` beside the
    # `serve` of hv-a.toml ([emulator] winrm), one state directory: the defaults are the
    # served host's own folders.
    config = _lab(tmp_path, f"""[emulator]
winrm = true
[emulator.shares]
'\\\\127.0.0.1\\pool' = "{tmp_path / 'pool'}"
""", wsman='username = "lab"\npassword = "Lab-Pa55word!"')
    with pytest.raises(ConfigError, match="drive C"):  # no host served from there yet
        remote_files(config)
    asyncio.run(open_emulator(emulator_config(config)).close())
    files = remote_files(config)
    assert isinstance(files, EmulatedFiles)
    assert files.local("C:\\pool\\a.vhdx") == \
        tmp_path / "agent" / "emulator" / "drives" / "C" / "pool" / "a.vhdx"


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
