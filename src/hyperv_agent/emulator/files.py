"""The emulated host's files seen through ``hostfs``: Windows paths on mapped folders."""

from __future__ import annotations

from pathlib import Path

from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.paths import HostPathError
from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs.local import LocalFiles


class EmulatedFiles(LocalFiles):
    """Local file access, with the emulated host's drives and shares mapped to folders."""

    def __init__(self, host: EmulatedHost) -> None:
        self._paths = host.paths

    def local(self, path: str) -> Path:
        try:
            return self._paths.local(path)
        except HostPathError as error:
            raise HostFileError(str(error)) from None
