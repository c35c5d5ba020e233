"""The emulated host's files seen through ``hostfs``: Windows paths on mapped folders."""

from __future__ import annotations

from pathlib import Path

from hyperv_agent.emulator import openfiles
from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.paths import HostPathError, HostPaths
from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs.api import Usage
from hyperv_agent.hostfs.local import LocalFiles

#: What Windows says when a file another process holds open is deleted or replaced.
IN_USE = "The process cannot access the file because it is being used by another process"


class EmulatedFiles(LocalFiles):
    """Local file access, with the emulated host's drives and shares mapped to folders;
    on a running emulated host, a file its VMs hold open is neither deleted nor replaced
    (``openfiles``), as on Windows."""

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

    async def _held(self, path: str) -> bool:
        """Whether a VM of the emulated host holds ``path`` open; known when the host runs
        in this process (reached through its WinRM face, it may run in another)."""
        host = self._host or EmulatedHost.registry.get(self._paths.host_name.lower())
        if host is None:
            return False
        return await host.worker.run(lambda: openfiles.held_by(host, path)) is not None

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
