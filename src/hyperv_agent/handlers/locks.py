"""Lock tables: commands about one VM, or one file, queue; others run concurrently.

The agent holds two, built where it is wired: the VM table (``vm.VmLocks``), shared by every
command that changes a VM, and the file table (``FileLocks``), shared by every command
that writes or deletes a file on the host (copies, downloads, volume creation, resizing,
moves and deletion, config drives) and by those that put a volume in a VM (start, attach) or an
ISO at its start (held shared), so a copy and a delete of the same file never interleave,
nor a delete and an attach, nor a config drive's write and the start of its VM.

A command that needs locks of both tables takes its VM's first, then its files': never a
VM's lock while it holds a file's, so two commands never each hold a lock the other waits
for.

A command that needs several locks of one table takes them together with ``hold_all``:
each name once, in one order for every command, so no command waits for a lock it holds
itself and no two commands wait for each other. A name the running command already holds
is held again at once (the locks are reentrant per asyncio task).

A name can also be held shared (``hold_shared``, or ``hold_all``'s ``shared``): any number
of commands hold it shared together, and a command that holds it (exclusively, as
``hold``) waits until none does, while those that come after it wait for it. Linked
clones of one template are made side by side, each holding the template shared, and the
template's eviction or replacement, holding it, waits for every clone under way.

Work a command fans out over many items (volumes to measure, VMs to remove) runs a few at
a time (``at_most``), so one command does not flood the host with calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar


@dataclass(eq=False)
class _Entry:
    """One name's lock: ``gate`` is held by its exclusive holder for its whole block and
    by a shared holder only while it joins ``sharers``; ``users`` counts everyone who
    holds or waits for it."""

    gate: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    owner: asyncio.Task[object] | None = None  # the exclusive holder
    sharers: dict[asyncio.Task[object] | None, int] = field(default_factory=dict)
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # set: no sharers


class NamedLocks:
    """One lock per name (case-insensitive: VM names as Hyper-V matches them, Windows
    paths as the host does), held exclusively (``hold``) or shared (``hold_shared``).

    A lock exists only while someone holds or waits for it, so the table does not grow
    with every name ever used.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """How many names have a lock now (held or waited for)."""
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def _using(self, key: str) -> AsyncIterator[_Entry]:
        """``key``'s entry for the block, forgotten after it when no one else uses it."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            entry.drained.set()
        entry.users += 1
        try:
            yield entry
        finally:
            entry.users -= 1
            if not entry.users:
                del self._entries[key]

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        """Run the block with ``name``'s lock held alone; callers for one name queue in
        order, and a caller waits for those who hold it shared.

        The lock is released (and forgotten when no one else waits) however the block
        ends, so a failed command never blocks the next one for its name. Within a block
        that holds it already (the same asyncio task), ``name`` is held at once: a command
        never waits for itself. (A task that holds a name shared must not ask for it
        alone: it would wait for itself.)
        """
        key = name.casefold()
        task = asyncio.current_task()
        held = self._entries.get(key)
        if task is not None and held is not None and held.owner is task:
            yield
            return
        async with self._using(key) as entry, entry.gate:
            await entry.drained.wait()  # those sharing it finish; later ones wait on gate
            entry.owner = task
            try:
                yield
            finally:
                entry.owner = None

    @contextlib.asynccontextmanager
    async def hold_shared(self, name: str) -> AsyncIterator[None]:
        """Run the block with ``name``'s lock held shared: alongside other shared
        holders, after an exclusive holder that came first, and before one that comes
        later (which waits for the block to end). Held already by the same task (either
        way), it is held at once."""
        key = name.casefold()
        task = asyncio.current_task()
        held = self._entries.get(key)
        if task is not None and held is not None \
                and (held.owner is task or task in held.sharers):
            yield
            return
        async with self._using(key) as entry:
            async with entry.gate:  # after the exclusive holders queued before this
                entry.sharers[task] = entry.sharers.get(task, 0) + 1
                entry.drained.clear()
            try:
                yield
            finally:
                entry.sharers[task] -= 1
                if not entry.sharers[task]:
                    del entry.sharers[task]
                if not entry.sharers:
                    entry.drained.set()

    @contextlib.asynccontextmanager
    async def hold_all(self, *names: str, shared: tuple[str, ...] = ()) -> AsyncIterator[None]:
        """Run the block with the locks of all ``names`` held, and those of ``shared``
        held shared (a name in both is held alone): each name once (compared as ``hold``
        compares them, ignoring case), taken in sorted order, so two commands that need
        overlapping names never each hold one the other waits for."""
        alone = {name.casefold() for name in names}
        together = {name.casefold() for name in shared} - alone
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted(alone | together):
                held = self.hold_shared(key) if key in together else self.hold(key)
                await stack.enter_async_context(held)
            yield

    def busy(self, name: str) -> bool:
        """Whether a command holds or waits for ``name``'s lock now."""
        return name.casefold() in self._entries

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


_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


async def at_most(limit: int, work: Callable[[_Item], Awaitable[_Result]],
                  items: Iterable[_Item]) -> list[_Result]:
    """``work`` done on each of ``items`` concurrently, no more than ``limit`` at a time;
    the results in the items' order."""
    slots = asyncio.Semaphore(limit)

    async def one(item: _Item) -> _Result:
        async with slots:
            return await work(item)
    return await asyncio.gather(*map(one, items))
