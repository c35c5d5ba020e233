"""Which disk files in a folder name a given disk file as their parent: the linked clones
that a template in a primary pool must outlive, and the checkpoints' disks (``.avhdx``,
which Hyper-V makes beside the disk a checkpoint was taken of) that a volume must.

Hyper-V opens a differencing disk's parent by the paths the differencing disk records
(``images.ParentLocator``): deleting or replacing the parent breaks every child, and
Windows refuses that only while a running VM holds the chain open. A stopped VM's root
disk, or a detached volume, would silently lose its data.

Only headers are read (``images.parent_locator``: a few small reads a file, and for a
fixed or dynamic VHD or a VHDX without a parent no more than its file parameters),
all in one worker thread, bounded by a time budget: a pool of thousands of volumes on a
share costs seconds, not a read of the data. A file that cannot be read (on a real host,
typically a disk a running VM holds open) is counted as such, not as a child: when it is
one, the running VM holds the parent open too and Windows refuses to delete it.
"""

from __future__ import annotations

import asyncio
import logging
import ntpath
import struct
import time
from dataclasses import dataclass

from hyperv_agent.errors import AgentError
from hyperv_agent.hostfs import images
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hostfs.locations import same_path

log = logging.getLogger(__name__)

#: How long one search may read headers; past it the search stops, incomplete.
DEFAULT_BUDGET_S = 120.0


@dataclass(frozen=True)
class Children:
    """What a search for the children of ``parent`` found."""

    parent: str
    children: tuple[str, ...]  # disk files naming ``parent`` as their parent
    disks: int  # disk files in the folders, other than the parent
    checked: int  # of those, read
    differencing: int  # of those read, differencing disks
    unreadable: tuple[str, ...]  # disk files whose headers could not be read
    folders: tuple[str, ...]  # the folders searched

    @property
    def complete(self) -> bool:
        """Whether every disk file was read (the budget did not run out)."""
        return self.checked + len(self.unreadable) == self.disks

    def summary(self) -> str:
        """What was checked, in a few words, for answers and the log."""
        text = (f"read the headers of {self.checked} of {self.disks} other disk files in "
                f"{', '.join(self.folders)} ({self.differencing} differencing)")
        if self.unreadable:
            text += (f"; {len(self.unreadable)} could not be read (a running VM's disk is "
                     f"held open by Hyper-V), e.g. {self.unreadable[0]}")
        return text


async def children_of(files: HostFiles, parent: str, folders: tuple[str, ...],
                      budget_s: float = DEFAULT_BUDGET_S) -> Children:
    """The disk files (.vhd, .vhdx, and a checkpoint's .avhd, .avhdx; not below
    subfolders) in ``folders`` whose parent locator names ``parent``. Reads for at most
    ``budget_s`` seconds; ``complete`` tells whether all were read. A folder that cannot
    be listed raises AgentError."""
    unique = tuple({folder.casefold(): folder for folder in folders}.values())
    candidates: list[str] = []
    for folder in unique:
        for name in await files.list_dir(folder):
            path = ntpath.join(folder, name)
            if images.may_name_a_parent(name) and not same_path(path, parent):
                candidates.append(path)
    return await asyncio.to_thread(_read_all, files, parent, unique, candidates, budget_s)


def _read_all(files: HostFiles, parent: str, folders: tuple[str, ...],
              candidates: list[str], budget_s: float) -> Children:
    deadline = time.monotonic() + budget_s
    children: list[str] = []
    unreadable: list[str] = []
    checked = differencing = 0
    for path in candidates:
        if time.monotonic() > deadline:
            break
        try:
            locator = images.disk_parent(files, path)
        except (AgentError, OSError, ValueError, struct.error) as error:
            log.info("the headers of %s could not be read: %s", path, error)
            unreadable.append(path)
            continue
        checked += 1
        if locator is None:
            continue
        differencing += 1
        if locator.names(path, parent):
            children.append(path)
    return Children(parent, tuple(children), len(candidates), checked, differencing,
                    tuple(unreadable), folders)
