"""Disk and ISO image files: which kinds the agent takes, and what a file's name and its
content say it is.

The one home of

- the suffixes of each kind: disks (``.vhdx``, ``.vhd``) and ISOs (``.iso``), and the
  compression suffixes a downloaded template may carry (``.bz2``, ``.gz``, ``.zip``);
- a kind from a name (after its compression suffix) and the suffix of a DataTO
  ``format`` (the request's text never becomes a suffix);
- a disk's format from its content: a VHDX begins with ``vhdxfile``; a VHD ends with a
  512-byte footer beginning with ``conectix``, which dynamic and differencing VHDs also
  copy to offset 0 (the VHD and VHDX specifications);
- renaming a disk whose name says the other format to match its content.
"""

from __future__ import annotations

import asyncio
import io
import logging
import ntpath
from collections.abc import Mapping
from typing import BinaryIO

from hyperv_agent.errors import AgentError, InvalidRequest
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hostfs.locations import quoted

log = logging.getLogger(__name__)

VHD, VHDX, ISO = ".vhd", ".vhdx", ".iso"
DISK_SUFFIXES = (VHDX, VHD)
ISO_SUFFIXES = (ISO,)
IMAGE_SUFFIXES = (VHD, VHDX, ISO)
COMPRESSION_SUFFIXES = (".bz2", ".gz", ".zip")
#: What a template read from an image store may be called: an image, perhaps compressed.
PACKED_IMAGE_SUFFIXES = IMAGE_SUFFIXES + tuple(
    image + packed for image in IMAGE_SUFFIXES for packed in COMPRESSION_SUFFIXES)
#: The suffix of each DataTO ``format`` the agent takes.
FORMAT_SUFFIXES: Mapping[str, str] = {"VHD": VHD, "VHDX": VHDX, "ISO": ISO}
DEFAULT_VOLUME_FORMAT = "VHDX"

_VHDX_SIGNATURE = b"vhdxfile"  # at offset 0 of every VHDX
_VHD_COOKIE = b"conectix"  # the VHD footer's cookie
_VHD_FOOTER_BYTES = 512


# --- names ----------------------------------------------------------------------------------


def compression(name: str) -> str | None:
    """``bz2``, ``gz`` or ``zip`` when ``name`` ends in that compression suffix, else None."""
    lowered = name.lower()
    return next((suffix[1:] for suffix in COMPRESSION_SUFFIXES if lowered.endswith(suffix)),
                None)


def unpacked(name: str) -> str:
    """``name`` without its compression suffix (``t.vhd.bz2`` -> ``t.vhd``)."""
    packed = compression(name)
    return name[:-len(packed) - 1] if packed else name


def image_suffix(name: str) -> str | None:
    """``.vhd``, ``.vhdx`` or ``.iso`` of an image name (after any compression suffix),
    or None for any other name."""
    suffix = ntpath.splitext(unpacked(name))[1].lower()
    return suffix if suffix in IMAGE_SUFFIXES else None


def disk_suffix_of(name: str, kind: str = "disk") -> str:
    """``.vhd`` or ``.vhdx`` of a disk name (after any compression suffix); InvalidRequest
    saying the name is not a .vhd or .vhdx ``kind`` for any other."""
    suffix = image_suffix(name)
    if suffix not in DISK_SUFFIXES:
        raise InvalidRequest(f"{quoted(ntpath.basename(name))} is not a .vhd or .vhdx {kind}")
    return suffix


def is_disk(name: str) -> bool:
    """Whether ``name`` (without compression) ends in a disk suffix."""
    return name.lower().endswith(DISK_SUFFIXES)


def suffix_of_format(fmt: object, default: str = DEFAULT_VOLUME_FORMAT) -> str:
    """``.vhd`` / ``.vhdx`` / ``.iso`` for a DataTO ``format``; InvalidRequest for any
    other format (the request's text never becomes a suffix)."""
    name = str(fmt or default).strip().upper()
    if name not in FORMAT_SUFFIXES:
        raise InvalidRequest(f"format {quoted(name, 20)} is not VHD, VHDX or ISO")
    return FORMAT_SUFFIXES[name]


def disk_suffix_of_format(fmt: object, default: str = DEFAULT_VOLUME_FORMAT) -> str:
    """``.vhd`` / ``.vhdx`` for a volume's DataTO ``format``; InvalidRequest for any other."""
    name = str(fmt or default).strip().upper()
    suffix = FORMAT_SUFFIXES.get(name)
    if suffix not in DISK_SUFFIXES:
        raise InvalidRequest(f"volume format {quoted(name, 20)} is not VHD or VHDX")
    return suffix


def format_of(suffix: str) -> str:
    """The DataTO ``format`` of a suffix: ``.vhdx`` -> ``VHDX``."""
    return suffix.lstrip(".").upper()


# --- content --------------------------------------------------------------------------------


def sniff(handle: BinaryIO) -> str | None:
    """``.vhdx`` or ``.vhd`` by the signature of the open, seekable file ``handle`` (a
    VHDX header, a VHD footer or its copy at the start); None for anything else."""
    head = handle.read(len(_VHDX_SIGNATURE))
    if head == _VHDX_SIGNATURE:
        return VHDX
    if head == _VHD_COOKIE:
        return VHD
    size = handle.seek(0, io.SEEK_END)
    if size < _VHD_FOOTER_BYTES:
        return None
    handle.seek(size - _VHD_FOOTER_BYTES)
    return VHD if handle.read(len(_VHD_COOKIE)) == _VHD_COOKIE else None


def disk_suffix(files: HostFiles, path: str) -> str | None:
    """``sniff`` of the host file ``path``. Blocking: call it from a worker thread.
    Read-only; a missing file raises HostFileError."""
    with files.open_binary(path, "rb") as handle:
        return sniff(handle)


async def matched_to_content(files: HostFiles, path: str, content: str) -> str:
    """``path``, renamed to end in ``content`` (the suffix its signature shows) when it ends
    in another; the path the file has now. When the rename fails the file is removed, so
    no disk stays under a name that misstates it."""
    if path.lower().endswith(content):
        return path
    renamed = ntpath.splitext(path)[0] + content
    log.warning("%s holds a %s disk; renamed to %s", path, format_of(content), renamed)
    try:
        await files.rename(path, renamed)
    except AgentError:
        await files.remove(path)
        raise
    return renamed


async def content_suffix(files: HostFiles, path: str) -> str | None:
    """``disk_suffix`` on a worker thread."""
    return await asyncio.to_thread(disk_suffix, files, path)
