"""The emulated host's files seen through ``hostfs``: Windows paths on mapped folders."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from hyperv_agent.emulator.host import EmulatedHost
from hyperv_agent.emulator.paths import HostPathError
from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs.api import HostFiles, Usage


class EmulatedFiles(HostFiles):
    def __init__(self, host: EmulatedHost) -> None:
        self._paths = host.paths

    def _local(self, path: str) -> str:
        try:
            return str(self._paths.local(path))
        except HostPathError as error:
            raise HostFileError(str(error)) from None

    async def usage(self, path: str) -> Usage:
        local = self._local(path)
        try:
            total, _, free = await asyncio.to_thread(shutil.disk_usage, local)
        except OSError as error:
            raise HostFileError(f"cannot measure {path}: {error.strerror}") from None
        return Usage(total, free)

    async def make_dirs(self, path: str) -> None:
        local = Path(self._local(path))
        try:
            await asyncio.to_thread(local.mkdir, parents=True, exist_ok=True)
        except OSError as error:
            raise HostFileError(f"cannot create folder {path}: {error.strerror}") from None

    async def exists(self, path: str) -> bool:
        return await asyncio.to_thread(Path(self._local(path)).exists)
