"""File access on the Hyper-V host, in the host's own (Windows) paths.

Implemented natively on the host (``hostfs/local.py``) and by the emulator, which maps
the emulated host's drives and shares onto local folders.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    total_bytes: int
    free_bytes: int


class HostFiles(abc.ABC):
    @abc.abstractmethod
    async def usage(self, path: str) -> Usage:
        """Size and free space of the volume holding ``path``; HostFileError if unreachable."""

    @abc.abstractmethod
    async def make_dirs(self, path: str) -> None:
        """Create the folder ``path`` and its parents; an existing folder is fine."""

    @abc.abstractmethod
    async def exists(self, path: str) -> bool:
        """Whether a file or folder exists at ``path``."""

    @abc.abstractmethod
    async def read_text(self, path: str, max_bytes: int = 4096) -> str | None:
        """The start of a small text file; None when it does not exist."""

    @abc.abstractmethod
    async def write_text(self, path: str, text: str) -> None:
        """Replace a small text file atomically (written aside, then renamed)."""
