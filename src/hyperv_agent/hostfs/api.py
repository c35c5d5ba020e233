"""File access on the Hyper-V host, in the host's own (Windows) paths.

Implemented natively on the host (``hostfs/local.py``), by the emulator, which maps the
emulated host's drives and shares onto local folders, and over SMB for shares on a real
SMB server.

The async methods are for handlers. ``open_binary`` is synchronous: streaming copies run
in one worker thread and read and write through it in bounded chunks.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Literal

from hyperv_agent.hostfs.locations import Credentials, ShareLocation

if TYPE_CHECKING:
    from hyperv_agent.hostfs.smb import SmbFiles

COPY_CHUNK_BYTES = 1024 * 1024

OpenMode = Literal["rb", "wb", "xb", "r+b"]


@dataclass(frozen=True)
class Usage:
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class FileStat:
    size: int
    is_dir: bool
    modified_ns: int | None = None  # last written, in ns since the epoch; None: not known


class HostFiles(abc.ABC):
    @abc.abstractmethod
    async def usage(self, path: str) -> Usage:
        """Size and free space of the volume holding ``path``; HostFileError if unreachable."""

    @abc.abstractmethod
    async def make_dirs(self, path: str) -> None:
        """Create the folder ``path`` and its parents; an existing folder is fine, a file
        with its name or the name of a folder on the way is a HostFileError."""

    @abc.abstractmethod
    async def exists(self, path: str) -> bool:
        """Whether a file or folder exists at ``path``."""

    @abc.abstractmethod
    async def read_text(self, path: str, max_bytes: int = 4096) -> str | None:
        """The start of a small text file; None when it does not exist."""

    @abc.abstractmethod
    async def write_text(self, path: str, text: str) -> None:
        """Replace a small text file atomically (written aside, then renamed)."""

    @abc.abstractmethod
    async def stat(self, path: str) -> FileStat | None:
        """Size and kind of ``path``; None when nothing is there."""

    @abc.abstractmethod
    async def list_dir(self, path: str) -> list[str]:
        """Names in the folder ``path``, sorted; HostFileError when it is not a folder."""

    @abc.abstractmethod
    async def remove(self, path: str) -> bool:
        """Delete the file ``path``; False when it was already absent. Never a folder."""

    @abc.abstractmethod
    async def rename(self, source: str, target: str) -> None:
        """Move a file within one volume or share, replacing ``target`` if it exists."""

    @abc.abstractmethod
    def open_binary(self, path: str, mode: OpenMode) -> BinaryIO:
        """A binary file object for ``path``. Blocking: call it, and use the file, from a
        worker thread. ``xb`` fails when the file exists."""

    @abc.abstractmethod
    async def link_out(self, root: str, path: str) -> str | None:
        """The first place on the way from the folder ``root`` down to ``path`` (below it)
        where a symbolic link, junction or other name-redirecting reparse point leads out of
        ``root`` (or, where the target cannot be known, any such link); None when the way
        stays inside. Parts that do not exist yet are not links. Read-only."""

    def use_credentials(self, share: ShareLocation) -> None:
        """Reach ``share`` with the credentials its URL carried, from now on. Hosts that
        reach shares with their own identity ignore this."""
        return None

    def forget_credentials(self, share: ShareLocation) -> None:
        """Stop reaching ``share``'s folder with the account given for it (its pool was
        removed): paths below it are reached as paths below no such folder from now on,
        and the account no longer counts for those (``SmbFiles.drop_credentials``).
        Hosts that reach shares with their own identity have nothing to forget."""
        smb = self.smb_for(share.server)
        if smb is not None:
            smb.drop_credentials(share)

    def use_kept_credentials(self, share: ShareLocation) -> None:
        """``use_credentials`` for the credentials kept from an earlier registration of
        ``share``'s pool, handed over at start; left out where the configuration names an
        account for the server (``[agent.smb_credentials]``): the operator set it since,
        as the fix for a password the pool's details cannot give, and it wins as it wins
        over the details of a registration."""
        if self.takes_pool_accounts(share.server):
            self.use_credentials(share)

    def takes_pool_accounts(self, server: str) -> bool:
        """Whether ``server``'s shares are reached with the accounts pools give them (from
        a registration's details, or kept from one): only where this backend logs on with
        accounts (smbprotocol) and the configuration names none for the server
        (``[agent.smb_credentials]``: the operator's choice wins)."""
        smb = self.smb_for(server)
        return smb is not None and smb.configured_account(server) is None

    def on_password_accepted(self, listener: Callable[[str, Credentials], None]) -> None:
        """Call ``listener`` with the server and the account each time a logon takes a
        password offered for a share (a pool's, newly given or kept from before): the
        password of that account on that server from then on. Hosts that reach shares
        with their own identity log on with none, and never call it."""
        return None

    def smb_for(self, server: str) -> SmbFiles | None:
        """The SMB backend that reaches ``server``'s shares (its accounts, its logons);
        None when this backend reaches them natively (the host's own file access, or the
        emulator's mapped folders)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional for backends that hold no sessions
        """End the sessions this backend holds open (SMB logons); later calls open them
        again. Blocking and bounded (a server that does not answer is cut off after a
        few seconds): call it from a worker thread. Backends without sessions do nothing."""

    async def copy_file(self, source: str, target: str) -> int:
        """Copy ``source`` to ``target`` (created or replaced) and return the bytes copied.
        Streams in bounded chunks; backends override it with a faster native copy."""
        return await asyncio.to_thread(self._stream_copy, source, target)

    def _stream_copy(self, source: str, target: str) -> int:
        copied = 0
        with self.open_binary(source, "rb") as reader, self.open_binary(target, "wb") as writer:
            while chunk := reader.read(COPY_CHUNK_BYTES):
                writer.write(chunk)
                copied += len(chunk)
        return copied
