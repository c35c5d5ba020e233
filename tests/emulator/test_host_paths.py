"""The emulated host's Windows paths onto local folders: which name a file it can reach."""

from __future__ import annotations

from pathlib import Path

from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.paths import HostPaths


def _paths(tmp_path: Path) -> HostPaths:
    drive, share = tmp_path / "C", tmp_path / "share"
    (drive / "vms").mkdir(parents=True)
    share.mkdir()
    (drive / "vms" / "a.vhdx").write_bytes(b"disk")
    (share / "b.iso").write_bytes(b"iso")
    return HostPaths(EmulatorConfig(state_dir=tmp_path / "state", drives={"C": drive},
                                    shares={"\\\\10.1.1.2\\store": share}))


def test_a_file_on_a_drive_or_a_share_is_found_as_its_local_file(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    assert paths.file("C:\\vms\\a.vhdx") == tmp_path / "C" / "vms" / "a.vhdx"
    assert paths.file("\\\\10.1.1.2\\STORE\\b.iso") == tmp_path / "share" / "b.iso"


def test_what_names_no_reachable_file_is_none(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    for path in ("C:\\vms\\absent.vhdx",  # no such file
                 "C:\\vms",  # a folder
                 "",  # no path at all
                 "vms\\a.vhdx",  # not absolute
                 "C:\\vms\\..\\..\\a.vhdx",  # climbs out of its drive
                 "\\\\10.1.1.2\\other\\b.iso"):  # a share the host does not have
        assert paths.file(path) is None, path


def test_a_path_in_another_case_names_the_file_as_ntfs_finds_it(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    assert paths.file("c:\\VMS\\A.VHDX") == tmp_path / "C" / "vms" / "a.vhdx"
    assert paths.file("\\\\10.1.1.2\\Store\\B.Iso") == tmp_path / "share" / "b.iso"
    # a file still to be made keeps the case it is given, in the folder that is there
    assert paths.local("C:\\Vms\\New.vhdx") == tmp_path / "C" / "vms" / "New.vhdx"
    assert paths.local("C:\\other\\X.vhdx") == tmp_path / "C" / "other" / "X.vhdx"
