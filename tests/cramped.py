"""A host whose volumes are nearly full: for tests of the room a copy leaves free."""

from __future__ import annotations

from typing import BinaryIO

from hyperv_agent.hostfs.api import OpenMode, Usage
from hyperv_agent.hostfs.local import LocalFiles
from hyperv_agent.hostfs.transfer import KEEP_FREE_BYTES


class Cramped(LocalFiles):
    """Local files whose volumes report ``room`` bytes free above what a copy must leave;
    ``writes`` counts the files a copy began to write."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.writes = 0

    async def usage(self, path: str) -> Usage:
        return Usage(1 << 40, KEEP_FREE_BYTES + self.room)

    def open_binary(self, path: str, mode: OpenMode) -> BinaryIO:
        self.writes += mode == "xb"
        return super().open_binary(path, mode)

    async def copy_file(self, source: str, target: str) -> int:
        self.writes += 1
        return await super().copy_file(source, target)
