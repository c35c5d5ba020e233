"""One process at a time in a state directory: an exclusive lock on a file in it.

The agent's state directory (registered pools, the VMs being built, the agent's name for
its aside files) and an emulated host's state directory are each written by the process
that holds them, from what it keeps in memory: a second process working on the same
directory would undo the first one's work (and clear "leftovers" the first is still
writing). So each is held, from opening to closing, through an operating-system lock on
a file in it; the lock goes with the process, however it ends. The file also says which
process holds it (its PID), for the message a second process gets; on a full disk the PID
cannot be written, and the directory is held without it (an agent restarted on a host
whose disk filled up serves, as it does when a later state write fails).

On POSIX the lock is ``flock`` (whole file); on Windows ``msvcrt.locking`` on one byte
far past the PID, so the PID stays readable.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from hyperv_agent.errors import DirectoryInUse

_WINDOWS_LOCK_OFFSET = 1 << 20  # the byte locked on Windows: past anything written


class DirectoryLock:
    """An exclusive lock on ``directory / name``, held until ``release``."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def take(cls, directory: Path, name: str, what: str, hint: str = "") -> DirectoryLock:
        """Hold ``directory`` for this process; DirectoryInUse naming ``what``, the
        holder's PID and ``hint`` (what to do) when another process holds it."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock(fd)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            by = f"another process (PID {holder})" if holder else "another process"
            raise DirectoryInUse(f"{what} {directory} is in use by {by}",
                                 f"{what} {directory} is in use by {by}: {hint}" if hint
                                 else "") from None
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # a full disk: held all the same; another process is told no PID
            pass
        return cls(fd)

    def release(self) -> None:
        """Let the directory go (the file stays: removing it could let two processes
        hold two different files of one name)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        _unlock(fd)
        os.close(fd)


def _holder(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
