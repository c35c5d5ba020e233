"""Host files on the machine the agent runs on (the Hyper-V host itself)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs.api import HostFiles, Usage


class LocalFiles(HostFiles):
    async def usage(self, path: str) -> Usage:
        try:
            total, _, free = await asyncio.to_thread(shutil.disk_usage, path)
        except OSError as error:
            raise HostFileError(f"cannot measure {path}: {error.strerror}") from None
        return Usage(total, free)

    async def make_dirs(self, path: str) -> None:
        try:
            await asyncio.to_thread(Path(path).mkdir, parents=True, exist_ok=True)
        except OSError as error:
            raise HostFileError(f"cannot create folder {path}: {error.strerror}") from None

    async def exists(self, path: str) -> bool:
        return await asyncio.to_thread(Path(path).exists)
