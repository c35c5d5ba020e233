"""The room a write may take on a host volume: its free space less ``KEEP_FREE_BYTES``.

A pool that fills up pauses every VM whose dynamic disks grow on it, so nothing the agent
writes or has Hyper-V write may take the last ``KEEP_FREE_BYTES`` of a volume: a copy
(``hostfs.transfer``) stops where it would, and a disk that takes its whole size when it
is made or grown (a fixed VHDX) is refused before Hyper-V is asked
(``require_room``). The free space is measured once, at the start: a volume that cannot
be measured bounds nothing (a write to an unreachable folder fails anyway).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hyperv_agent.errors import AgentError, TransferError
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hostfs.aside import split

__all__ = ["KEEP_FREE_BYTES", "Room", "require_room"]

_LOG = logging.getLogger(__name__)

#: What a write leaves free on the volume it writes to, for the disks already there.
KEEP_FREE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Room:
    """How much a write to ``target`` may take: the free space of its volume at the start
    less ``KEEP_FREE_BYTES``."""

    target: str
    free_bytes: int

    @classmethod
    async def measure(cls, files: HostFiles, target: str) -> Room | None:
        """The room at ``target``; None when its volume cannot be measured (the write then
        goes on unbounded, as a write to an unreachable folder fails anyway)."""
        try:
            usage = await files.usage(split(target)[0] or target)
        except AgentError as error:
            _LOG.debug("free space at %s unknown (%s); the write is not bounded", target,
                       error)
            return None
        return cls(target, usage.free_bytes)

    @property
    def bytes(self) -> int:
        return max(0, self.free_bytes - KEEP_FREE_BYTES)

    async def check_source(self, files: HostFiles, source: str, label: str) -> None:
        """Refuse a host file that alone (still compressed, if it is) would not fit."""
        stat = await files.stat(source)
        if stat is not None and not stat.is_dir and stat.size > self.bytes:
            raise self.refusal(label, f"it holds {stat.size} bytes")

    def refusal(self, label: str, needs: str, outcome: str = "nothing was copied"
                ) -> TransferError:
        """The error naming what ``label`` needs, the room there is, and ``outcome``."""
        return TransferError(
            f"not enough free space for {label} at {self.target}: {needs}, and only "
            f"{self.bytes} may be written there ({self.free_bytes} bytes free, "
            f"{KEEP_FREE_BYTES} kept free for the disks already on that volume); {outcome}")


async def require_room(files: HostFiles, target: str, needs_bytes: int, label: str,
                       outcome: str, why: str = "") -> None:
    """TransferError naming ``label`` and ``outcome`` when ``needs_bytes`` more would take
    the volume of ``target`` below ``KEEP_FREE_BYTES`` free; nothing when its volume
    cannot be measured. ``why`` (" (...)") follows the figure, saying what makes it up.
    1 usage call."""
    room = await Room.measure(files, target)
    if room is not None and needs_bytes > room.bytes:
        raise room.refusal(label, f"it takes {needs_bytes} bytes{why}", outcome)
