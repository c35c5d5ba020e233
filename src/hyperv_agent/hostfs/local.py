"""Host files on the machine the agent runs on (the Hyper-V host itself)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs.api import HostFiles, Usage


class LocalFiles(HostFiles):
    """Paths are the host's own; ``local`` is where a subclass maps them elsewhere."""

    def local(self, path: str) -> Path:
        return Path(path)

    async def usage(self, path: str) -> Usage:
        local = self.local(path)
        try:
            total, _, free = await asyncio.to_thread(shutil.disk_usage, local)
        except OSError as error:
            raise HostFileError(f"cannot measure {path}: {error.strerror}") from None
        return Usage(total, free)

    async def make_dirs(self, path: str) -> None:
        try:
            await asyncio.to_thread(self.local(path).mkdir, parents=True, exist_ok=True)
        except OSError as error:
            raise HostFileError(f"cannot create folder {path}: {error.strerror}") from None

    async def exists(self, path: str) -> bool:
        return await asyncio.to_thread(self.local(path).exists)
