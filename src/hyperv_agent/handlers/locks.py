"""Lock tables: commands about one VM, or one file, queue; others run concurrently.

The agent holds two, built where it is wired: the VM table (``vm.VmLocks``), shared by every
command that changes a VM, and the file table (``FileLocks``), shared by every command
that writes or deletes a file on the host (copies, downloads, volume creation, resizing
and deletion), so a copy and a delete of the same file never interleave.

A command that needs several locks of one table takes them together with ``hold_all``:
each name once, in one order for every command, so no command waits for a lock it holds
itself and no two commands wait for each other. A name the running command already holds
is held again at once (the locks are reentrant per asyncio task).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class NamedLocks:
    """One asyncio.Lock per name (case-insensitive: VM names as Hyper-V matches them,
    Windows paths as the host does).

    A lock exists only while someone holds or waits for it, so the table does not grow
    with every name ever used.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        self._owners: dict[str, asyncio.Task[object] | None] = {}

    def __len__(self) -> int:
        """How many names have a lock now (held or waited for)."""
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        """Run the block with ``name``'s lock held; callers for one name queue in order.

        The lock is released (and forgotten when no one else waits) however the block
        ends, so a failed command never blocks the next one for its name. Within a block
        that holds it already (the same asyncio task), ``name`` is held at once: a command
        never waits for itself.
        """
        key = name.casefold()
        task = asyncio.current_task()
        if task is not None and self._owners.get(key) is task:
            yield
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                self._owners[key] = task
                try:
                    yield
                finally:
                    del self._owners[key]
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    @contextlib.asynccontextmanager
    async def hold_all(self, *names: str) -> AsyncIterator[None]:
        """Run the block with the locks of all ``names`` held: each name once (compared as
        ``hold`` compares them, ignoring case), taken in sorted order, so two commands that
        need overlapping names never each hold one the other waits for."""
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted({name.casefold() for name in names}):
                await stack.enter_async_context(self.hold(key))
            yield

    def busy(self, name: str) -> bool:
        """Whether a command holds or waits for ``name``'s lock now."""
        return name.casefold() in self._locks

    @contextlib.asynccontextmanager
    async def hold_if_free(self, name: str) -> AsyncIterator[bool]:
        """Hold ``name``'s lock for the block only when no command holds or waits for
        it; yields whether it is held (False: the block must leave the VM or file alone). Taking a
        free lock does not yield to the event loop, so no command can slip in between."""
        if self.busy(name):
            yield False
            return
        async with self.hold(name):
            yield True


#: The file lock table: one lock per host path (a path as ``handlers.datapaths`` resolves it).
FileLocks = NamedLocks
