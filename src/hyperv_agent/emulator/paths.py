"""The emulated host's view of files: Windows paths mapped onto local folders.

``C:\\x\\y.vhdx`` lives under the folder configured for drive C; ``\\\\server\\share\\x``
under the folder configured for that share. A path that does not map, or that climbs out
of its drive or share with ``..``, names no file the emulated host can reach.

Windows folds case in server and share names, and NTFS in the path below them:
``\\\\FS\\Pool\\A.vhdx`` is the file ``\\\\fs\\pool\\a.vhdx``. Each step below a drive or share
is the local entry of that name when there is one, else the entry whose name folds (as
``identity`` folds it) to the same, else the name as given: a file still to be made keeps
the case it is given, as on NTFS.
"""

from __future__ import annotations

import ntpath
import os
from pathlib import Path, PureWindowsPath

from hyperv_agent.emulator.config import EmulatorConfig


class HostPathError(ValueError):
    """The Windows path names nothing this emulated host can reach."""


class HostPaths:
    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._shares = {self._share_key(unc): folder for unc, folder in config.shares.items()}

    @staticmethod
    def _share_key(unc: str) -> str:
        parts = PureWindowsPath(unc).drive
        return parts.rstrip("\\").lower()

    @property
    def host_name(self) -> str:
        """The name of the emulated host these paths are of."""
        return self._config.host_name

    def local(self, windows_path: str) -> Path:
        """The local file behind ``windows_path``; HostPathError if it cannot map."""
        pure = PureWindowsPath(windows_path)
        if not pure.is_absolute():
            raise HostPathError(f"not an absolute Windows path: {windows_path!r}")
        parts = pure.parts[1:]
        if any(part in ("..", ".") for part in parts) or any(":" in p for p in parts):
            raise HostPathError(f"path leaves its drive or share: {windows_path!r}")
        root = self._root(pure)
        exact = root.joinpath(*parts)
        if os.path.lexists(exact):  # named as it is held: one look, not one a step
            return exact
        local = root
        for part in parts:
            local = _entry(local, part)
        return local

    def file(self, windows_path: str) -> Path | None:
        """The local file behind ``windows_path`` when there is one; None when the path
        cannot map (``local``) or names no file (absent, or a folder): the one test of
        "is there such a file" behind every method that refuses a missing one."""
        try:
            local = self.local(windows_path)
        except HostPathError:
            return None
        return local if local.is_file() else None

    def _root(self, pure: PureWindowsPath) -> Path:
        drive = pure.drive
        if drive.startswith("\\\\"):
            folder = self._shares.get(drive.rstrip("\\").lower())
            if folder is None:
                raise HostPathError(f"no such share on this host: {drive}")
            return folder
        if len(drive) == 2 and drive[1] == ":":
            return self._config.drive_root(drive[0])
        raise HostPathError(f"unsupported path form: {pure}")

    def reported_free_bytes(self, windows_path: str) -> int | None:
        """The free space the volume of ``windows_path`` reports by the lab knob
        ``lab_free_bytes``; None when its drive has no such setting (the real figure)."""
        drive = PureWindowsPath(windows_path).drive
        if len(drive) != 2 or drive[1] != ":":
            return None
        return next((free for letter, free in self._config.lab_free_bytes.items()
                     if letter.rstrip(":").upper() == drive[0].upper()), None)

    @staticmethod
    def same(a: str, b: str) -> bool:
        """Whether two Windows paths name the same file (case-insensitive, normalised)."""
        return HostPaths.identity(a) == HostPaths.identity(b)

    @staticmethod
    def identity(path: str) -> str:
        """What two Windows paths naming the same file have in common (see ``same``)."""
        return ntpath.normcase(ntpath.normpath(path))


def _entry(folder: Path, name: str) -> Path:
    """The entry ``name`` of ``folder`` as NTFS finds it, case-insensitively. Of several
    local entries folding to one name (which NTFS cannot hold), the first in sorted order:
    the emulator's choice, that one path always names the same file."""
    exact = folder / name
    if os.path.lexists(exact):
        return exact
    folded = ntpath.normcase(name)
    try:
        found = sorted(entry for entry in folder.iterdir()
                       if ntpath.normcase(entry.name) == folded)
    except OSError:  # no such folder (yet), or not a folder: nothing to fold against
        return exact
    return found[0] if found else exact
