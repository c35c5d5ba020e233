"""Downloading a template image onto the host: the one flow that CopyCommand (a template to
a primary pool) and the legacy PrimaryStorageDownloadCommand share.

The image streams from a host path, an S3 object or an http(s) URL (``transfer``), is
expanded when its name says it is compressed, and is checked on the way in: a disk must
carry a VHD or VHDX signature and be whole and of its own (not cut short, not a
differencing disk naming a parent file), and one whose name says the other format is
renamed to match its content (``images``). An ISO must carry an ISO 9660 or UDF
signature (one read of its copy, as a disk's header is read), and is copied as it is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hyperv_agent.errors import TransferError
from hyperv_agent.hostfs import images
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hostfs.aside import AsideFiles
from hyperv_agent.hostfs.transfer import Source, transfer


@dataclass(frozen=True)
class Downloaded:
    path: str  # where the image is now: the target, or its name matched to the content
    size: int  # bytes written (after decompression)
    suffix: str  # .vhd, .vhdx or .iso: what the file is


async def download_image(files: HostFiles, source: Source, target: str, *,
                         checksum: str | None = None, aside: AsideFiles | None = None,
                         kind: str = "template") -> Downloaded:
    """Copy the image ``source`` to the host path ``target`` (a disk or ISO name).

    ``checksum`` is checked against the source as stored (before decompression). A disk
    without a VHD or VHDX signature, cut short, or differencing (its parent a file
    elsewhere) fails the copy (TransferError; its details say what a ``kind`` must be), and
    so does an ISO without an ISO 9660 or UDF signature (``images.iso_signed``). On
    any failure nothing is left under ``target`` or the renamed name, and an earlier file
    at ``target`` is left as it was; a repeat replaces the file with a fresh copy. Callers
    serialise downloads to one target.
    """
    check = _DiskCheck(files, source, kind) if images.is_disk(target) else None
    verify = check if check is not None else _IsoCheck(files, source, kind)
    done = await transfer(files, source, target, checksum=checksum, verify=verify,
                          aside=aside)
    if check is None or check.suffix is None:
        return Downloaded(target, done.size, images.ISO)
    path = await images.matched_to_content(files, target, check.suffix)
    return Downloaded(path, done.size, check.suffix)


class _DiskCheck:
    """``transfer``'s verify step: the copy must be a VHD or VHDX disk; ``suffix`` is
    the format its signature shows."""

    def __init__(self, files: HostFiles, source: Source, kind: str) -> None:
        self.files = files
        self.kind = kind
        self.label = source if isinstance(source, str) else source.label
        self.suffix: str | None = None

    async def __call__(self, copy: str) -> None:
        self.suffix = await images.content_suffix(self.files, copy)
        if self.suffix is None:
            raise TransferError(f"{self.label} is not a VHD or VHDX disk (no disk signature "
                                "in what it holds); nothing was copied")
        problem = await images.content_problem(self.files, copy, self.suffix)
        if problem is not None:
            raise TransferError(f"{self.label} {problem}; a {self.kind} must be a whole disk "
                                "of its own, and nothing was copied")


class _IsoCheck:
    """``transfer``'s verify step for an ISO: the copy must open an ISO 9660 or UDF image
    (a disk copied under an ISO's name would be put in a VM's DVD drive)."""

    def __init__(self, files: HostFiles, source: Source, kind: str) -> None:
        self.files = files
        self.kind = kind
        self.label = source if isinstance(source, str) else source.label

    async def __call__(self, copy: str) -> None:
        if not await asyncio.to_thread(images.is_iso_image, self.files, copy):
            raise TransferError(f"{self.label} is not an ISO image (no ISO 9660 or UDF "
                                "volume descriptor at sector 16), though the "
                                f"{self.kind}'s format is ISO; nothing was copied")
