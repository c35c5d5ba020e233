"""The files a copy writes aside before it renames them into place, and sweeping up those
that a killed process left behind.

A copy to ``<folder>\\<name>`` writes ``<folder>\\.<name>.partial-<agent>-<hex>`` and
renames it to ``<name>`` once every byte is in (``hostfs.transfer``). ``<agent>`` is the
agent's own name (``state.agent_id``), so on a pool that several hosts share each agent
knows its own aside files, and it knows which of them a copy of its process is writing
now: any other one of its own was left by an earlier run (a copy's aside file never
outlives it) and is removed at start, for every registered pool and every folder config
drive ISOs are written in (``DataPaths.config_drive_folders``), and before each copy, in
the copy's folder. Aside files of other agents are never touched there; those of an
earlier copy to the same target (of any agent, and in the older ``.partial-<hex>`` form)
are removed before a copy to that target, which callers serialise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterator

from hyperv_agent.errors import AgentError, HostFileError
from hyperv_agent.hostfs.api import HostFiles

_LOG = logging.getLogger("hyperv_agent.hostfs.transfer")
MARK = ".partial-"


def split(target: str) -> tuple[str, str]:
    """The folder of ``target`` (with its trailing separator) and its file name."""
    cut = max(target.rfind("\\"), target.rfind("/")) + 1
    return target[:cut], target[cut:]


def target_prefix(target: str) -> str:
    """The name prefix of every aside file of a copy to ``target`` (of any agent)."""
    return f".{split(target)[1]}{MARK}"


class AsideFiles:
    """Names the aside files of the agent ``agent_id`` and sweeps up the stale ones."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self._writing: set[str] = set()  # casefolded paths of aside files being written

    def name_for(self, target: str) -> str:
        """A fresh aside path for a copy to ``target``, in the same folder."""
        folder, _ = split(target)
        return f"{folder}{target_prefix(target)}{self.agent_id}-{secrets.token_hex(6)}"

    def is_own(self, name: str) -> bool:
        """Whether the file name ``name`` is an aside file of this agent."""
        return name.startswith(".") and f"{MARK}{self.agent_id}-" in name

    @contextlib.contextmanager
    def writing(self, path: str) -> Iterator[None]:
        """Mark ``path`` as being written for the block, so no sweep removes it."""
        key = path.casefold()
        self._writing.add(key)
        try:
            yield
        finally:
            self._writing.discard(key)

    @contextlib.asynccontextmanager
    async def replacing(self, files: HostFiles, target: str, suffix: str = ""
                        ) -> AsyncIterator[str]:
        """A fresh aside path for ``target`` (ending in ``suffix``) to make the new file
        at, marked as being written: renamed over ``target`` when the block succeeds,
        removed when it (or the rename) fails or is cancelled, so ``target`` is either the
        new file or as it was."""
        temp = self.name_for(target) + suffix
        with self.writing(temp):
            try:
                yield temp
                await files.rename(temp, target)
            except BaseException:
                await discard(files, temp)
                raise

    async def sweep(self, files: HostFiles, folder: str, target: str | None = None) -> int:
        """Remove from ``folder`` this agent's aside files that no copy is writing now,
        and, with ``target``, every aside file of an earlier copy to it; how many. A folder
        that cannot be listed is left alone (the copy itself will say why), and so is a
        file Windows refuses to delete (a process holds it open: an ISO written aside that
        a running VM's DVD drive still names, ``handlers.configdrive``); it is logged, and
        swept again by a later sweep."""
        try:
            names = await files.list_dir(folder.rstrip("\\/"))
        except HostFileError:
            return 0
        prefix = target_prefix(target) if target is not None else None
        stale = [path for name in names if MARK in name
                 and (self.is_own(name) or (prefix is not None and name.startswith(prefix)))
                 and (path := _join(folder, name)).casefold() not in self._writing]
        removed = 0
        for path in stale:
            _LOG.info("removing %s, left by an interrupted copy", path)
            try:
                await files.remove(path)
            except HostFileError as error:  # e.g. a running VM's DVD drive holds it
                _LOG.warning("%s is kept: %s", path, error)
                continue
            removed += 1
        return removed


def _join(folder: str, name: str) -> str:
    """``folder`` and ``name`` with the separator ``folder`` uses (Windows paths above the
    emulator; local ones in tools and tests)."""
    separator = "/" if "/" in folder and "\\" not in folder else "\\"
    return f"{folder.rstrip(separator)}{separator}{name}"


async def discard(files: HostFiles, temp: str) -> None:
    """Remove a copy's aside file, also while the copy is being cancelled."""
    try:
        await asyncio.shield(asyncio.ensure_future(files.remove(temp)))
    except (AgentError, asyncio.CancelledError):
        _LOG.warning("could not remove the partial copy %s", temp)
