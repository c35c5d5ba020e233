"""The emulated host's files seen through ``hostfs``: Windows paths on mapped folders."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import BinaryIO

from hyperv_agent.emulator import openfiles
from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.paths import HostPathError, HostPaths
from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs.api import OpenMode, Usage
from hyperv_agent.hostfs.local import LocalFiles

#: What Windows says when a file another process holds open is deleted or replaced, or
#: opened for an access that process does not share (ERROR_SHARING_VIOLATION, 32).
IN_USE = "The process cannot access the file because it is being used by another process"

_HOLD_LOOKUP_S = 60.0  # how long a file's opener waits for the emulator's worker to answer


class EmulatedFiles(LocalFiles):
    """Local file access, with the emulated host's drives and shares mapped to folders;
    on a running emulated host, a file its VMs hold open is neither deleted nor replaced,
    nor opened for an access its VM does not share (``openfiles``), as on Windows; nor is
    a file on a share that a VM of another host of its cluster holds open
    (``Member.held_elsewhere``), as the file server refuses it."""

    def __init__(self, host: EmulatedHost | HostPaths) -> None:
        """The files of a running emulated host, or of the drive and share mappings alone
        (an agent reaching an emulated host's files from its own process)."""
        self._paths = host if isinstance(host, HostPaths) else host.paths
        self._host = None if isinstance(host, HostPaths) else host

    async def remove(self, path: str) -> bool:
        if await self._held(path):
            raise HostFileError(f"cannot delete {path}: {IN_USE}")
        return await super().remove(path)

    async def rename(self, source: str, target: str) -> None:
        # a file no VM holds (a target not there yet among them) is not looked at further
        if await self._held(source) or await self._held(target):
            raise HostFileError(f"cannot rename {source}: {IN_USE}")
        await super().rename(source, target)

    async def read_text(self, path: str, max_bytes: int = 4096) -> str | None:
        if await self._held(path, reading=True):
            raise HostFileError(f"cannot read {path}: {IN_USE}")
        return await super().read_text(path, max_bytes)

    async def write_text(self, path: str, text: str) -> None:
        if await self._held(path):
            raise HostFileError(f"cannot write {path}: {IN_USE}")
        await super().write_text(path, text)

    async def copy_file(self, source: str, target: str) -> int:
        if await self._held(source, reading=True) or await self._held(target):
            raise HostFileError(f"cannot copy {source} to {target}: {IN_USE}")
        return await super().copy_file(source, target)

    def open_binary(self, path: str, mode: OpenMode) -> BinaryIO:
        # "xb" creates a new file: one a VM holds exists, and is refused as existing
        if mode != "xb" and self._held_now(path, reading=mode == "rb"):
            raise HostFileError(f"cannot open {path}: {IN_USE}")
        return super().open_binary(path, mode)

    def _holders(self, path: str) -> list[EmulatedHost]:
        """The emulated host, when it runs in this process (reached through its WinRM
        face, it may run in another, whose holds are not known here). Of several live
        hosts of its name (each made in its own state directory), those whose folders
        hold the same local file as ``path`` here."""
        if self._host is not None:
            return [self._host]
        hosts = EmulatedHost.named(self._paths.host_name)
        if len(hosts) < 2:
            return hosts
        mine = _local(self._paths, path)
        return [host for host in hosts if mine is not None and _local(host.paths, path) == mine]

    async def _held(self, path: str, reading: bool = False) -> bool:
        """Whether a VM of the emulated host holds ``path`` open against this access:
        against any write, delete or rename; against reading only as its writable disk."""
        for host in self._holders(path):
            hold = await host.worker.run(functools.partial(openfiles.held_by, host, path))
            if hold is None and host.cluster is not None and _on_share(path):
                hold = await asyncio.to_thread(host.cluster.held_elsewhere, path)
            if _refuses(hold, reading):
                return True
        return False

    def _held_now(self, path: str, reading: bool) -> bool:
        """``_held`` from a thread that may block (``open_binary``'s)."""
        return any(self._held_on(host, path, reading) for host in self._holders(path))

    @staticmethod
    def _held_on(host: EmulatedHost, path: str, reading: bool) -> bool:
        if host.worker.on_thread():
            hold = openfiles.held_by(host, path)
        else:
            hold = host.worker.call(lambda: openfiles.held_by(host, path), _HOLD_LOOKUP_S)
        if hold is None and host.cluster is not None and _on_share(path):
            hold = host.cluster.held_elsewhere(path)
        return _refuses(hold, reading)

    def local(self, path: str) -> Path:
        try:
            return self._paths.local(path)
        except HostPathError as error:
            raise HostFileError(str(error)) from None

    async def usage(self, path: str) -> Usage:
        """The mapped folder's volume, with the free space the lab knob
        ``lab_free_bytes`` sets for the path's drive, if any."""
        usage = await super().usage(path)
        free = self._paths.reported_free_bytes(path)
        if free is None:
            return usage
        return Usage(usage.total_bytes, max(0, min(free, usage.total_bytes)))


def _local(paths: HostPaths, path: str) -> Path | None:
    """The local file ``paths`` map ``path`` to (resolved), None when they map it to none."""
    try:
        return paths.local(path).resolve()
    except (HostPathError, OSError):
        return None


def _on_share(path: str) -> bool:
    """Whether ``path`` is on a share (UNC), which the cluster's other hosts may reach
    too; a drive letter names this host's own disks."""
    return path.startswith(("\\\\", "//"))


def _refuses(hold: openfiles.Hold | None, reading: bool) -> bool:
    return hold is not None and (hold.writable or not reading)
