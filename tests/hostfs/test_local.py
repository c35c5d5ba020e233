"""The host's own files (``LocalFiles``): the kernel copy and its error reporting."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs import local as local_files
from hyperv_agent.hostfs.local import LocalFiles

DATA = os.urandom(3 * 1024 * 1024 + 17)


@pytest.mark.parametrize("other_fs", [False, True])
async def test_copy_file_copies_every_byte_when_source_and_target_share_a_file_system_or_not(
        tmp_path: Path, other_fs: bool) -> None:
    source = tmp_path / "t.vhdx"
    source.write_bytes(DATA)
    shm = Path("/dev/shm")
    where = shm if other_fs and shm.is_dir() else tmp_path
    with tempfile.TemporaryDirectory(dir=where) as folder:
        target = Path(folder) / "copy.vhdx"
        target.write_bytes(b"older, longer content " * 1_000_000)
        copied = await LocalFiles().copy_file(str(source), str(target))
        assert copied == len(DATA)
        assert target.read_bytes() == DATA


async def test_copy_file_fails_in_one_line_and_creates_nothing_when_the_source_is_missing(
        tmp_path: Path) -> None:
    with pytest.raises(HostFileError, match=r"cannot copy .*absent\.vhdx .*No such file"):
        await LocalFiles().copy_file(str(tmp_path / "absent.vhdx"), str(tmp_path / "t.vhdx"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("resolved", "plain"), [
    ("\\\\?\\C:\\pool\\" + "d" * 250 + "\\disk.vhdx", "C:\\pool\\" + "d" * 250 + "\\disk.vhdx"),
    ("\\\\?\\UNC\\fs1\\share\\" + "d" * 250, "\\\\fs1\\share\\" + "d" * 250),
    ("C:\\pool", "C:\\pool"),
    ("/srv/pool/disk.vhdx", "/srv/pool/disk.vhdx"),
])
def test_a_long_path_windows_resolves_in_its_extended_form_compares_plainly(
    monkeypatch: pytest.MonkeyPatch, resolved: str, plain: str,
) -> None:
    """Windows' realpath gives a path it cannot shorten below MAX_PATH (a host without long
    path support) as \\\\?\\C:\\... or \\\\?\\UNC\\..., a short one plainly: the link check
    compares both plainly, or a volume deep in a pool whose root is short would read as
    leaving the pool."""
    monkeypatch.setattr(os.path, "realpath", lambda _: resolved)
    assert local_files._resolved(Path("any")) == plain
