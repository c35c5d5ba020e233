"""HostFiles that send each path to the backend able to reach it.

UNC paths on the servers configured as reached over SMB (``smb_servers``) go to the SMB
backend; every other path (drive paths, other shares) to the base backend, which is the
host's native file access or the emulator's mapped folders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import BinaryIO

from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs.api import FileStat, HostFiles, OpenMode, Usage
from hyperv_agent.hostfs.locations import Credentials, ShareLocation
from hyperv_agent.hostfs.smb import SmbFiles, unc_server


class RoutedFiles(HostFiles):
    """``smb`` for UNC paths whose server is in ``smb_servers`` (case-insensitive),
    ``base`` for everything else."""

    def __init__(self, base: HostFiles, smb: HostFiles, smb_servers: Iterable[str]) -> None:
        self.base = base
        self.smb = smb
        self.smb_servers = frozenset(server.lower() for server in smb_servers)

    def backend(self, path: str) -> HostFiles:
        """The backend that handles ``path``."""
        return self._for_server(unc_server(path))

    def _for_server(self, server: str | None) -> HostFiles:
        if server is not None and server.lower() in self.smb_servers:
            return self.smb
        return self.base

    def use_credentials(self, share: ShareLocation) -> None:
        """Forwarded to the backend that reaches ``share``'s server."""
        self._for_server(share.server).use_credentials(share)

    def on_password_accepted(self, listener: Callable[[str, Credentials], None]) -> None:
        """Both backends': either may log on to a share."""
        self.smb.on_password_accepted(listener)
        self.base.on_password_accepted(listener)

    def smb_for(self, server: str) -> SmbFiles | None:
        return self._for_server(server).smb_for(server)

    def close(self) -> None:
        """Both backends' sessions, the SMB backend's even when the base one fails."""
        try:
            self.smb.close()
        finally:
            self.base.close()

    async def usage(self, path: str) -> Usage:
        return await self.backend(path).usage(path)

    async def make_dirs(self, path: str) -> None:
        await self.backend(path).make_dirs(path)

    async def exists(self, path: str) -> bool:
        return await self.backend(path).exists(path)

    async def read_text(self, path: str, max_bytes: int = 4096) -> str | None:
        return await self.backend(path).read_text(path, max_bytes)

    async def write_text(self, path: str, text: str) -> None:
        await self.backend(path).write_text(path, text)

    async def stat(self, path: str) -> FileStat | None:
        return await self.backend(path).stat(path)

    async def list_dir(self, path: str) -> list[str]:
        return await self.backend(path).list_dir(path)

    async def remove(self, path: str) -> bool:
        return await self.backend(path).remove(path)

    async def rename(self, source: str, target: str) -> None:
        """Within one backend only: a move between an SMB server and another place is a
        copy, which the caller decides on; HostFileError here."""
        backend = self.backend(source)
        if self.backend(target) is not backend:
            raise HostFileError(f"cannot rename {source} to {target}: not on the same share")
        await backend.rename(source, target)

    async def link_out(self, root: str, path: str) -> str | None:
        """The backend of ``path`` judges; a root on another backend is left at ``path``."""
        backend = self.backend(path)
        if self.backend(root) is not backend:
            return path
        return await backend.link_out(root, path)

    def open_binary(self, path: str, mode: OpenMode) -> BinaryIO:
        return self.backend(path).open_binary(path, mode)

    async def copy_file(self, source: str, target: str) -> int:
        """The backend's own copy when both ends are on it, else streamed between them."""
        backend = self.backend(source)
        if self.backend(target) is backend:
            return await backend.copy_file(source, target)
        return await super().copy_file(source, target)
