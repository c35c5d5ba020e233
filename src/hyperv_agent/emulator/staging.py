"""Disk files the emulated host is making under temporary names, noted so none outlives a
killed process.

A new disk is written under a temporary name beside its final one and appears under that
name only once complete (``vhd``). If the process is killed meanwhile, the temporary file
would stay in the pool for good: nothing else knows its name. So before it is made, its
path is noted in a file of the host's state directory (``staging/``), and the note is
removed once the temporary file is gone (published or discarded). When the host next
opens, the files its notes name are removed: they are what a killed process left. A host
kept in memory only notes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("hyperv_agent.emulator")


class Staging:
    """The notes of one emulated host, in ``directory`` (None: a host in memory)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    @contextlib.contextmanager
    def noted(self, path: Path) -> Iterator[None]:
        """``path`` noted while the block runs (it makes, then removes or publishes it)."""
        if self.directory is None:
            yield
            return
        self.directory.mkdir(exist_ok=True)
        note = self.directory / secrets.token_hex(8)
        note.write_text(str(path.absolute()), encoding="utf-8")
        try:
            yield
        finally:
            note.unlink(missing_ok=True)

    def sweep(self) -> int:
        """Remove the files the notes name (a killed process's temporary files) and the
        notes; how many files there were."""
        if self.directory is None or not self.directory.is_dir():
            return 0
        removed = 0
        for note in sorted(self.directory.iterdir()):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                left = Path(note.read_text(encoding="utf-8"))
                if left.is_file():
                    left.unlink()
                    removed += 1
                    log.warning("removed %s, a disk a killed process was making", left)
            note.unlink(missing_ok=True)
        return removed
