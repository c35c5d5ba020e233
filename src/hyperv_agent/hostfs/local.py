"""Host files on the machine the agent runs on (the Hyper-V host itself)."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs import locations
from hyperv_agent.hostfs.api import FileStat, HostFiles, OpenMode, Usage


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
        """Whether something is at ``path``: a path not found, one below a file, or a
        link loop is nothing; anything else met on the way (ERROR_ACCESS_DENIED from a
        share whose account's password changed, a drive not ready) is HostFileError
        naming the path, as ``stat`` reports it (``Path.exists`` raises it bare)."""
        local = self.local(path)
        try:
            await asyncio.to_thread(local.stat)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as error:
            if error.errno == errno.ELOOP:
                return False
            raise HostFileError(f"cannot read {path}: {error.strerror}") from None
        return True

    async def read_text(self, path: str, max_bytes: int = 4096) -> str | None:
        local = self.local(path)
        try:
            data = await asyncio.to_thread(_read_start, local, max_bytes)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise HostFileError(f"cannot read {path}: {error.strerror}") from None
        return data.decode("utf-8", errors="replace")

    async def write_text(self, path: str, text: str) -> None:
        local = self.local(path)
        try:
            await asyncio.to_thread(_replace, local, text.encode("utf-8"))
        except OSError as error:
            raise HostFileError(f"cannot write {path}: {error.strerror}") from None

    async def stat(self, path: str) -> FileStat | None:
        local = self.local(path)
        try:
            result = await asyncio.to_thread(local.stat)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise HostFileError(f"cannot read {path}: {error.strerror}") from None
        return FileStat(size=result.st_size, is_dir=local.is_dir(),
                        modified_ns=result.st_mtime_ns)

    async def list_dir(self, path: str) -> list[str]:
        local = self.local(path)
        try:
            return sorted(await asyncio.to_thread(os.listdir, local))
        except OSError as error:
            raise HostFileError(f"cannot list {path}: {error.strerror}") from None

    async def remove(self, path: str) -> bool:
        local = self.local(path)
        try:
            await asyncio.to_thread(local.unlink)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise HostFileError(f"cannot delete {path}: {error.strerror}") from None
        return True

    async def rename(self, source: str, target: str) -> None:
        src, dst = self.local(source), self.local(target)
        try:
            await asyncio.to_thread(src.replace, dst)
        except OSError as error:
            raise HostFileError(f"cannot rename {source}: {error.strerror}") from None

    async def link_out(self, root: str, path: str) -> str | None:
        """Each step below ``root`` is resolved with every link followed (symbolic links,
        and on Windows junctions and mount points) and must stay inside ``root``, itself
        resolved the same way."""
        steps = locations.steps_below(root, path)
        return await asyncio.to_thread(self._first_out, root, steps)

    def _first_out(self, root: str, steps: tuple[str, ...]) -> str | None:
        real_root = Path(_resolved(self.local(root)))
        for step in steps:
            if not Path(_resolved(self.local(step))).is_relative_to(real_root):
                return step
        return None

    def open_binary(self, path: str, mode: OpenMode) -> BinaryIO:
        local = self.local(path)
        try:
            return local.open(mode)
        except OSError as error:
            raise HostFileError(f"cannot open {path}: {error.strerror}") from None

    async def copy_file(self, source: str, target: str) -> int:
        src, dst = self.local(source), self.local(target)
        try:
            return await asyncio.to_thread(_kernel_copy, src, dst)
        except OSError as error:
            raise HostFileError(
                f"cannot copy {source} to {target}: {error.strerror}") from None


_NO_RANGE_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                            errno.EPERM, errno.EBADF})
_RANGE_BYTES = 1 << 30


def _kernel_copy(source: Path, target: Path) -> int:
    """Copy in the kernel as ``cp`` does: copy_file_range (which clones blocks on file
    systems that can), else sendfile through shutil. Returns the bytes copied."""
    if hasattr(os, "copy_file_range"):
        try:
            return _range_copy(source, target)
        except _NoRangeCopy:
            pass
    shutil.copyfile(source, target)
    return target.stat().st_size


class _NoRangeCopy(Exception):
    """copy_file_range cannot copy between these two files."""


def _range_copy(source: Path, target: Path) -> int:
    with source.open("rb") as reader, target.open("wb") as writer:
        copied = 0
        try:
            while step := os.copy_file_range(reader.fileno(), writer.fileno(), _RANGE_BYTES):
                copied += step
        except OSError as error:
            if copied or error.errno not in _NO_RANGE_COPY:
                raise
            raise _NoRangeCopy from None
    return copied


def _read_start(path: Path, max_bytes: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(max_bytes)


def _replace(path: Path, data: bytes) -> None:
    aside = path.with_name(f".{path.name}.tmp")
    aside.write_bytes(data)
    aside.replace(path)


def _resolved(path: Path) -> str:
    r"""``path`` with every link followed, in its plain form. On Windows ``realpath`` gives
    a path it cannot shorten below MAX_PATH (260 characters, on a host without long path
    support) in its extended form, ``\\?\C:\...`` or ``\\?\UNC\server\share\...``,
    and a shorter one plainly: a long step of a pool whose root is short would not read
    as below the root, and a volume deep in its pool would be refused as leaving it."""
    real = os.path.realpath(path)
    if real.startswith("\\\\?\\UNC\\"):
        return "\\\\" + real[len("\\\\?\\UNC\\"):]
    return real.removeprefix("\\\\?\\")
