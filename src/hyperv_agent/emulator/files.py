"""The emulated host's files seen through ``hostfs``: Windows paths on mapped folders."""

from __future__ import annotations

from pathlib import Path

from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.paths import HostPathError, HostPaths
from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs.api import Usage
from hyperv_agent.hostfs.local import LocalFiles


class EmulatedFiles(LocalFiles):
    """Local file access, with the emulated host's drives and shares mapped to folders."""

    def __init__(self, host: EmulatedHost | HostPaths) -> None:
        """The files of a running emulated host, or of the drive and share mappings alone
        (an agent reaching an emulated host's files from its own process)."""
        self._paths = host if isinstance(host, HostPaths) else host.paths

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
