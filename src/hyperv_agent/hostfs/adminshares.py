"""A remote Windows host's files over SMB: drive paths through its administrative shares.

The agent off Windows drives a Hyper-V host over WinRM and reaches the host's own files
as Windows itself would from another machine: ``C:\\dir\\disk.vhdx`` is
``\\\\host\\C$\\dir\\disk.vhdx``, opened with the WinRM account (a local administrator of
the host). UNC paths go to their own servers unchanged, with the credentials their
storage URLs carry.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import PureWindowsPath
from typing import BinaryIO

from hyperv_agent.errors import PathNotAllowed
from hyperv_agent.hostfs import locations
from hyperv_agent.hostfs.api import FileStat, HostFiles, OpenMode, Usage
from hyperv_agent.hostfs.locations import Credentials, ShareLocation
from hyperv_agent.hostfs.smb import SmbFiles


class AdminShareFiles(HostFiles):
    """``inner`` (SMB) reached with drive paths rewritten to ``\\\\host\\X$`` shares.

    ``credentials`` (the WinRM account) stay each drive share's own account: a logon they
    fail is tried again at the next call, never given up for the rest of the process."""

    def __init__(self, inner: SmbFiles, host: str, credentials: Credentials | None) -> None:
        self.inner = inner
        self.host = host
        if credentials is not None:
            for letter in string.ascii_uppercase:
                inner.keep_credentials(ShareLocation(host, f"{letter}$", "", credentials))

    def remote(self, path: str) -> str:
        """``path`` as the host's SMB clients see it; PathNotAllowed for a relative one,
        drive-relative ones (``C:pool``, which Windows reads from the current folder of
        drive C:) included, and for one in the ``\\\\?\\`` or ``\\\\.\\`` namespace, which
        looks like a UNC path to a server named ``?`` or ``.``: the agent takes no such
        path anywhere (``locations``), and its drive path reaches the same file."""
        if locations.in_device_namespace(path):
            raise PathNotAllowed(
                f"path {locations.quoted(path)} is in Windows' \\\\?\\ or \\\\.\\ namespace, "
                "which the host's administrative shares do not reach: give its drive path "
                "(C:\\...) or its UNC path (\\\\server\\share\\...)")
        pure = PureWindowsPath(path)
        drive = pure.drive
        if drive.startswith("\\\\"):
            return str(pure)
        if len(drive) != 2 or drive[1] != ":" or not pure.root:
            raise PathNotAllowed(f"not an absolute Windows path: {path!r}")
        rest = "\\".join(pure.parts[1:])
        share = f"\\\\{self.host}\\{drive[0].upper()}$"
        return f"{share}\\{rest}" if rest else share

    def use_credentials(self, share: ShareLocation) -> None:
        self.inner.use_credentials(share)

    def on_password_accepted(self, listener: Callable[[str, Credentials], None]) -> None:
        self.inner.on_password_accepted(listener)

    def smb_for(self, server: str) -> SmbFiles | None:
        return self.inner

    def close(self) -> None:
        """Logs off the host's administrative shares and every other share reached."""
        self.inner.close()

    async def usage(self, path: str) -> Usage:
        return await self.inner.usage(self.remote(path))

    async def make_dirs(self, path: str) -> None:
        await self.inner.make_dirs(self.remote(path))

    async def exists(self, path: str) -> bool:
        return await self.inner.exists(self.remote(path))

    async def read_text(self, path: str, max_bytes: int = 4096) -> str | None:
        return await self.inner.read_text(self.remote(path), max_bytes)

    async def write_text(self, path: str, text: str) -> None:
        await self.inner.write_text(self.remote(path), text)

    async def stat(self, path: str) -> FileStat | None:
        return await self.inner.stat(self.remote(path))

    async def list_dir(self, path: str) -> list[str]:
        return await self.inner.list_dir(self.remote(path))

    async def remove(self, path: str) -> bool:
        return await self.inner.remove(self.remote(path))

    async def rename(self, source: str, target: str) -> None:
        await self.inner.rename(self.remote(source), self.remote(target))

    def open_binary(self, path: str, mode: OpenMode) -> BinaryIO:
        return self.inner.open_binary(self.remote(path), mode)

    async def link_out(self, root: str, path: str) -> str | None:
        """Judged on the administrative share, where the host's links are seen as links."""
        return await self.inner.link_out(self.remote(root), self.remote(path))

    async def copy_file(self, source: str, target: str) -> int:
        return await self.inner.copy_file(self.remote(source), self.remote(target))
