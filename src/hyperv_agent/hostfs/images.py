"""Disk and ISO image files: which kinds the agent takes, and what a file's name and its
content say it is.

The one home of

- the suffixes of each kind: disks (``.vhdx``, ``.vhd``) and ISOs (``.iso``), and the
  compression suffixes a downloaded template may carry (``.bz2``, ``.gz``, ``.xz``,
  ``.zip``: the ones CloudStack accepts in a template URL);
- a kind from a name (after its compression suffix) and the suffix of a DataTO
  ``format`` (the request's text never becomes a suffix);
- a disk's format from its content: a VHDX begins with ``vhdxfile``; a VHD ends with a
  512-byte footer beginning with ``conectix``, which dynamic and differencing VHDs also
  copy to offset 0 (the VHD and VHDX specifications);
- a disk's virtual size and whether it is fixed, from its own header (``shape``): a VHD's
  footer gives its current size (offset 48) and disk type (offset 60: 2 fixed); a VHDX's
  metadata its virtual size and, in its file parameters, ``LeaveBlockAllocated`` (set in
  a fixed VHDX, whose blocks are all in the file);
- whether a disk stands alone and whole, as a template must: a VHD ends with its footer
  (whose disk type is not 4, differencing); a VHDX's region table is there and every
  region and block it lists lies inside the file, its block and logical sector sizes are
  ones the format allows, and its file parameters do not say ``HasParent``. A
  differencing disk names a parent file somewhere on the host (the specifications'
  parent locators), which a template must never do; a disk cut short (a body without
  Content-Length whose connection dropped) cannot be opened.
"""

from __future__ import annotations

import asyncio
import io
import logging
import ntpath
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from hyperv_agent.errors import AgentError, InvalidRequest
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.hostfs.locations import quoted, same_path

log = logging.getLogger(__name__)

VHD, VHDX, ISO = ".vhd", ".vhdx", ".iso"
DISK_SUFFIXES = (VHDX, VHD)
ISO_SUFFIXES = (ISO,)
IMAGE_SUFFIXES = (VHD, VHDX, ISO)
#: A checkpoint's differencing disk, which Hyper-V makes beside the disk it was taken of
#: (``<name>_<GUID>.avhdx``, ``.avhd`` for a VHD) and records that disk as its parent.
CHECKPOINT_SUFFIXES = (".avhdx", ".avhd")
COMPRESSION_SUFFIXES = (".bz2", ".gz", ".xz", ".zip")
#: What a template read from an image store may be called: an image, perhaps compressed.
PACKED_IMAGE_SUFFIXES = IMAGE_SUFFIXES + tuple(
    image + packed for image in IMAGE_SUFFIXES for packed in COMPRESSION_SUFFIXES)
#: The suffix of each DataTO ``format`` the agent takes.
FORMAT_SUFFIXES: Mapping[str, str] = {"VHD": VHD, "VHDX": VHDX, "ISO": ISO}
DEFAULT_VOLUME_FORMAT = "VHDX"

_VHDX_SIGNATURE = b"vhdxfile"  # at offset 0 of every VHDX
_VHD_COOKIE = b"conectix"  # the VHD footer's cookie
_VHD_FOOTER_BYTES = 512
_VHD_DISK_TYPE = struct.Struct(">I")  # at offset 60 of the footer
_VHD_DIFFERENCING = 4
_VHD_FIXED = 2
_VHD_CURRENT_SIZE = struct.Struct(">Q")  # at offset 48 of the footer
_VHDX_REGION_TABLES = (192 * 1024, 256 * 1024)  # the region table and its copy
_VHDX_REGION_HEADER = struct.Struct("<4sIII")  # "regi", checksum, entry count, reserved
_VHDX_REGION_ENTRY = struct.Struct("<16sQII")  # GUID, file offset, length, required
_VHDX_MAX_REGIONS = 2047
_VHDX_METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
_VHDX_METADATA_HEADER = struct.Struct("<8sHH20x")  # "metadata", reserved, entry count
_VHDX_METADATA_ENTRY = struct.Struct("<16sIIII")  # item GUID, offset, length, flags, -
_VHDX_MAX_ITEMS = 2047
_VHDX_BAT_REGION = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08").bytes_le
_VHDX_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B").bytes_le
_VHDX_VIRTUAL_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8").bytes_le
_VHDX_LOGICAL_SECTOR = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F").bytes_le
_VHDX_NEEDED_ITEMS = {_VHDX_FILE_PARAMETERS: 8, _VHDX_VIRTUAL_SIZE: 8,
                      _VHDX_LOGICAL_SECTOR: 4}  # the items read, and their lengths
_VHDX_HAS_PARENT = 2  # in the file parameters' flags
_VHDX_LEAVE_BLOCKS_ALLOCATED = 1  # in the file parameters' flags: a fixed VHDX
_VHDX_PRESENT = frozenset({6, 7})  # block states whose offset is in the file
_VHDX_BLOCK_SIZES = range(20, 29)  # log2 of the block sizes allowed: 1 MiB to 256 MiB
_VHDX_SECTOR_SIZES = (512, 4096)  # the logical sector sizes allowed
_BAT_SLICE_ENTRIES = 1 << 17  # block table entries read at a time (1 MiB)


# --- names ----------------------------------------------------------------------------------


def compression(name: str) -> str | None:
    """``bz2``, ``gz``, ``xz`` or ``zip`` when ``name`` ends in that compression suffix,
    else None."""
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


#: An ISO image's volume recognition sequence starts at byte 32768 (sector 16 of 2048
#: bytes): each descriptor a type byte, then its standard identifier, CD001 for ISO 9660
#: (ECMA-119), BEA01 opening UDF's (ECMA-167). A file with neither there is no optical
#: disc image: Hyper-V would still put it in a DVD drive, and the guest read garbage.
ISO_DESCRIPTOR_AT = 16 * 2048 + 1
ISO_STANDARD_IDS = (b"CD001", b"BEA01")


def iso_signed(head: bytes) -> bool:
    """Whether ``head`` (the start of a file, at least ``ISO_DESCRIPTOR_AT`` + 5 bytes of
    it when it is that long) opens an ISO 9660 or UDF image."""
    return head[ISO_DESCRIPTOR_AT:ISO_DESCRIPTOR_AT + 5] in ISO_STANDARD_IDS


def is_iso_image(files: HostFiles, path: str) -> bool:
    """``iso_signed`` of the host file ``path``: one read of 5 bytes. Blocking: call it
    from a worker thread. Read-only."""
    with files.open_binary(path, "rb") as handle:
        handle.seek(ISO_DESCRIPTOR_AT)
        return handle.read(5) in ISO_STANDARD_IDS


def disk_names(name: str) -> tuple[str, ...]:
    """The disk files a volume's ``name`` may be: ``name`` itself when it names a disk
    file, else ``name.vhdx`` and ``name.vhd``, in that order; never a file of another
    kind."""
    if name.lower().endswith(DISK_SUFFIXES):
        return (name,)
    return tuple(name + suffix for suffix in DISK_SUFFIXES)


def may_name_a_parent(name: str) -> bool:
    """Whether a file of that name may be a differencing disk naming another disk as its
    parent: a disk (a linked clone) or a checkpoint's disk (``CHECKPOINT_SUFFIXES``)."""
    return name.lower().endswith(DISK_SUFFIXES + CHECKPOINT_SUFFIXES)


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


def not_standalone(handle: BinaryIO, suffix: str) -> str | None:
    """Why the disk in the open, seekable ``handle`` (of the format ``suffix`` shows) is
    not a whole disk of its own, in a few words ("is a differencing disk ..."); None when
    it is one."""
    size = handle.seek(0, io.SEEK_END)
    if suffix == VHD:
        if size < _VHD_FOOTER_BYTES:
            return "is cut short: it ends before its VHD footer"
        handle.seek(size - _VHD_FOOTER_BYTES)
        footer = handle.read(_VHD_FOOTER_BYTES)
        if footer[:len(_VHD_COOKIE)] != _VHD_COOKIE:
            return "is cut short: it does not end with the VHD footer"
        if _VHD_DISK_TYPE.unpack_from(footer, 60)[0] == _VHD_DIFFERENCING:
            return _DIFFERENCING
        return None
    return _vhdx_not_standalone(handle, size)


_DIFFERENCING = ("is a differencing disk: it names a parent disk file instead of holding "
                 "the whole disk")


def _vhdx_not_standalone(handle: BinaryIO, size: int) -> str | None:
    regions = next((found for at in _VHDX_REGION_TABLES
                    if (found := _vhdx_regions(handle, at)) is not None), None)
    if regions is None:
        return "is cut short or damaged: it has no VHDX region table"
    if any(offset + length > size for offset, length in regions.values()):
        return "is cut short: a VHDX region it lists ends past the end of the file"
    metadata, bat = regions.get(_VHDX_METADATA_REGION), regions.get(_VHDX_BAT_REGION)
    items = _vhdx_items(handle, *metadata) if metadata is not None else None
    if bat is None or items is None or items.keys() != _VHDX_NEEDED_ITEMS.keys():
        return "is damaged: its VHDX metadata or block table is missing"
    block, flags = struct.unpack("<II", items[_VHDX_FILE_PARAMETERS][:8])
    (virtual,) = struct.unpack("<Q", items[_VHDX_VIRTUAL_SIZE][:8])
    (sector,) = struct.unpack("<I", items[_VHDX_LOGICAL_SECTOR][:4])
    if flags & _VHDX_HAS_PARENT:
        return _DIFFERENCING
    if block & (block - 1) or block.bit_length() - 1 not in _VHDX_BLOCK_SIZES \
            or sector not in _VHDX_SECTOR_SIZES:
        return (f"is damaged: its VHDX block size ({block}) or logical sector size "
                f"({sector}) is not one the format allows")
    if _vhdx_block_past_end(handle, *bat, block, virtual, sector, size):
        return "is cut short: a VHDX data block it lists ends past the end of the file"
    return None


def _vhdx_regions(handle: BinaryIO, at: int) -> dict[bytes, tuple[int, int]] | None:
    """The regions (GUID -> offset, length) of the VHDX region table at ``at``; None when
    no region table is there. Reads the header, then only the entries it counts."""
    handle.seek(at)
    head = handle.read(_VHDX_REGION_HEADER.size)
    if len(head) < _VHDX_REGION_HEADER.size:
        return None
    signature, _, count, _ = _VHDX_REGION_HEADER.unpack_from(head)
    if signature != b"regi" or count > _VHDX_MAX_REGIONS:
        return None
    raw = handle.read(count * _VHDX_REGION_ENTRY.size)
    if len(raw) < count * _VHDX_REGION_ENTRY.size:
        return None
    entries = _VHDX_REGION_ENTRY.iter_unpack(raw)
    return {guid: (offset, length) for guid, offset, length, _ in entries}


def _vhdx_item_table(handle: BinaryIO, offset: int, length: int
                     ) -> dict[bytes, tuple[int, int]] | None:
    """The items (GUID -> offset in the region, length) of the table of the VHDX metadata
    region at ``offset``; None when its table is not there. Reads the header, then only
    the entries it counts."""
    handle.seek(offset)
    head = handle.read(min(length, _VHDX_METADATA_HEADER.size))
    if len(head) < _VHDX_METADATA_HEADER.size:
        return None
    signature, _, count = _VHDX_METADATA_HEADER.unpack_from(head)
    if signature != b"metadata" or count > _VHDX_MAX_ITEMS \
            or _VHDX_METADATA_HEADER.size + count * _VHDX_METADATA_ENTRY.size > length:
        return None
    raw = handle.read(count * _VHDX_METADATA_ENTRY.size)
    if len(raw) < count * _VHDX_METADATA_ENTRY.size:
        return None
    return {guid: (item_offset, item_length)
            for guid, item_offset, item_length, _, _ in _VHDX_METADATA_ENTRY.iter_unpack(raw)}


def _vhdx_items(handle: BinaryIO, offset: int, length: int) -> dict[bytes, bytes] | None:
    """The items of ``_VHDX_NEEDED_ITEMS`` (GUID -> bytes) in the VHDX metadata region at
    ``offset``; None when its table is not there."""
    table = _vhdx_item_table(handle, offset, length)
    if table is None:
        return None
    items: dict[bytes, bytes] = {}
    for guid, (item_offset, item_length) in table.items():
        wanted = _VHDX_NEEDED_ITEMS.get(guid)
        if wanted is not None and item_length >= wanted \
                and item_offset + wanted <= length:
            handle.seek(offset + item_offset)
            items[guid] = handle.read(wanted)
    return items if all(len(value) == _VHDX_NEEDED_ITEMS[guid]
                        for guid, value in items.items()) else None


def _vhdx_block_past_end(handle: BinaryIO, offset: int, length: int, block: int,
                         virtual: int, sector: int, size: int) -> bool:
    """Whether a block the VHDX block table (at ``offset``) says is in the file ends past
    its end ``size``. The table holds a sector bitmap entry (1 MiB) after each chunk of
    payload entries (a payload block is ``block`` bytes, the last one as much of it as
    the disk's ``virtual`` size holds). Only the entries the disk's size needs are read,
    a slice at a time, whatever length the region claims."""
    chunk = (1 << 23) * sector // block  # payload blocks per sector bitmap block
    blocks = -(-virtual // block)
    needed = blocks + -(-blocks // chunk)  # payload entries and their bitmap entries
    handle.seek(offset)
    index = 0
    while index < min(needed, length // 8):
        table = handle.read(min(_BAT_SLICE_ENTRIES, needed - index) * 8)
        if len(table) < 8:
            return True  # the table itself is cut short
        for (entry,) in struct.iter_unpack("<Q", table[:len(table) // 8 * 8]):
            if entry & 7 in _VHDX_PRESENT:
                start = (entry >> 20) << 20
                if (index + 1) % (chunk + 1) == 0:
                    end = start + (1 << 20)  # a sector bitmap block
                else:
                    number = index - index // (chunk + 1)
                    end = start + min(block, virtual - number * block) \
                        if number < blocks else start
                if end > size:
                    return True
            index += 1
    return False


@dataclass(frozen=True)
class DiskShape:
    """What a disk's header says of it: its virtual size, and whether it is fixed (its
    file holds the whole disk)."""

    virtual_bytes: int
    fixed: bool


def shape(handle: BinaryIO, suffix: str) -> DiskShape | None:
    """The ``DiskShape`` of the disk in the open, seekable ``handle`` (of the format
    ``suffix`` shows); None when its header cannot be read (cut short, damaged)."""
    size = handle.seek(0, io.SEEK_END)
    if suffix == VHD:
        if size < _VHD_FOOTER_BYTES:
            return None
        handle.seek(size - _VHD_FOOTER_BYTES)
        footer = handle.read(_VHD_FOOTER_BYTES)
        if footer[:len(_VHD_COOKIE)] != _VHD_COOKIE:
            return None
        (virtual,) = _VHD_CURRENT_SIZE.unpack_from(footer, 48)
        return DiskShape(virtual, _VHD_DISK_TYPE.unpack_from(footer, 60)[0] == _VHD_FIXED)
    regions = next((found for at in _VHDX_REGION_TABLES
                    if (found := _vhdx_regions(handle, at)) is not None), None)
    metadata = regions.get(_VHDX_METADATA_REGION) if regions is not None else None
    items = _vhdx_items(handle, *metadata) if metadata is not None else None
    if items is None or items.keys() != _VHDX_NEEDED_ITEMS.keys():
        return None
    _, flags = struct.unpack("<II", items[_VHDX_FILE_PARAMETERS][:8])
    (virtual,) = struct.unpack("<Q", items[_VHDX_VIRTUAL_SIZE][:8])
    return DiskShape(virtual, bool(flags & _VHDX_LEAVE_BLOCKS_ALLOCATED)
                     and not flags & _VHDX_HAS_PARENT)


# --- parents --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParentLocator:
    """The paths a differencing disk names its parent by (the specifications' parent
    locators): ``absolute`` (``C:\\pool\\t.vhdx``, ``\\\\srv\\share\\t.vhdx``),
    ``relative`` to the disk's own folder (``.\\t.vhdx``) and ``volume``
    (``\\\\?\\Volume{guid}\\pool\\t.vhdx``); each None when the disk does not give it."""

    absolute: str | None = None
    relative: str | None = None
    volume: str | None = None

    def names(self, child: str, parent: str) -> bool:
        """Whether any of these paths, read for the disk file ``child``, is the file
        ``parent`` (``locations.same_path``: case-insensitive, as Windows compares). A
        relative path is read from ``child``'s folder; a volume path's path below its
        volume is compared with ``parent``'s below its drive, as the volume's drive
        letter is not known here (the same folders on another volume would match too:
        a disk kept that could have been deleted, never the reverse)."""
        if self.absolute and same_path(self.absolute, parent):
            return True
        if self.relative and same_path(ntpath.join(ntpath.dirname(child), self.relative),
                                       parent):
            return True
        drive = ntpath.splitdrive(parent)[0]
        if not self.volume or len(drive) != 2:
            return False
        volume_parts = self.volume.replace("/", "\\").split("\\")
        return len(volume_parts) > 4 and volume_parts[3].lower().startswith("volume{") \
            and same_path(drive + "\\" + "\\".join(volume_parts[4:]), parent)


class DiskHeaderError(ValueError):
    """A disk's headers cannot be read as a VHD's or VHDX's."""


_VHD_DATA_OFFSET = struct.Struct(">Q")  # at offset 16 of the footer: the dynamic header
_VHD_DYNAMIC_HEADER_BYTES = 1024
_VHD_LOCATOR_ENTRY = struct.Struct(">4sIII Q")  # code, space, length, reserved, offset
_VHD_LOCATORS_AT = 576  # in the dynamic header: eight entries
_VHD_LOCATOR_CODES = {b"W2ku": "absolute", b"W2ru": "relative"}  # UTF-16 LE paths
_VHD_OLD_LOCATOR_CODES = {b"Wi2k": "absolute", b"Wi2r": "relative"}  # deprecated, bytes
_VHDX_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C").bytes_le
_VHDX_LOCATOR_HEADER = struct.Struct("<16sHH")  # locator type, reserved, key-value count
_VHDX_LOCATOR_ENTRY = struct.Struct("<IIHH")  # key offset, value offset, key/value lengths
_VHDX_LOCATOR_KEYS = {"absolute_win32_path": "absolute", "relative_path": "relative",
                      "volume_path": "volume"}
_LOCATOR_MAX_BYTES = 64 * 1024  # a parent locator item is at most this long (VHDX spec)


def parent_locator(handle: BinaryIO) -> ParentLocator | None:
    """The parent locator of the disk in the open, seekable ``handle`` when it is a
    differencing disk; None for any other disk or file. Reads only headers: a VHDX's
    region table, metadata table, file parameters and parent locator item; a VHD's
    footer copy at offset 0 (a fixed VHD has none and is never differencing), then its
    dynamic header and locator entries. DiskHeaderError when a disk's headers that say
    it is differencing cannot be read."""
    head = handle.read(_VHD_FOOTER_BYTES)
    if head[:len(_VHDX_SIGNATURE)] == _VHDX_SIGNATURE:
        return _vhdx_parent(handle)
    if head[:len(_VHD_COOKIE)] != _VHD_COOKIE or len(head) < _VHD_FOOTER_BYTES \
            or _VHD_DISK_TYPE.unpack_from(head, 60)[0] != _VHD_DIFFERENCING:
        return None
    (at,) = _VHD_DATA_OFFSET.unpack_from(head, 16)
    handle.seek(at)
    dynamic = handle.read(_VHD_DYNAMIC_HEADER_BYTES)
    if len(dynamic) < _VHD_DYNAMIC_HEADER_BYTES or dynamic[:8] != b"cxsparse":
        raise DiskHeaderError("a differencing VHD without its dynamic header")
    found: dict[str, str] = {}
    for index in range(8):
        code, _, length, _, offset = _VHD_LOCATOR_ENTRY.unpack_from(
            dynamic, _VHD_LOCATORS_AT + index * _VHD_LOCATOR_ENTRY.size)
        kind = _VHD_LOCATOR_CODES.get(code) or _VHD_OLD_LOCATOR_CODES.get(code)
        if kind is None or not length or kind in found:
            continue
        handle.seek(offset)
        raw = handle.read(min(length, _LOCATOR_MAX_BYTES))
        text = raw.decode("utf-16-le" if code in _VHD_LOCATOR_CODES else "latin-1",
                          errors="replace")
        found[kind] = text.rstrip("\x00")
    return ParentLocator(**found)


def _vhdx_parent(handle: BinaryIO) -> ParentLocator | None:
    regions = next((found for at in _VHDX_REGION_TABLES
                    if (found := _vhdx_regions(handle, at)) is not None), None)
    metadata = regions.get(_VHDX_METADATA_REGION) if regions is not None else None
    table = _vhdx_item_table(handle, *metadata) if metadata is not None else None
    parameters = table.get(_VHDX_FILE_PARAMETERS) if table is not None else None
    if metadata is None or table is None or parameters is None:
        raise DiskHeaderError("a VHDX without its metadata table or file parameters")
    handle.seek(metadata[0] + parameters[0])
    raw = handle.read(8)
    if len(raw) < 8:
        raise DiskHeaderError("a VHDX whose file parameters are cut short")
    if not struct.unpack_from("<I", raw, 4)[0] & _VHDX_HAS_PARENT:
        return None
    item = table.get(_VHDX_PARENT_LOCATOR)
    if item is None:
        raise DiskHeaderError("a differencing VHDX without its parent locator")
    handle.seek(metadata[0] + item[0])
    return _vhdx_locator_keys(handle.read(min(item[1], _LOCATOR_MAX_BYTES)))


def _vhdx_locator_keys(raw: bytes) -> ParentLocator:
    """The paths of a VHDX parent locator item: UTF-16 LE keys and values at offsets from
    the item's start."""
    if len(raw) < _VHDX_LOCATOR_HEADER.size:
        raise DiskHeaderError("a VHDX parent locator cut short")
    _, _, count = _VHDX_LOCATOR_HEADER.unpack_from(raw)
    found: dict[str, str] = {}
    for index in range(count):
        at = _VHDX_LOCATOR_HEADER.size + index * _VHDX_LOCATOR_ENTRY.size
        if at + _VHDX_LOCATOR_ENTRY.size > len(raw):
            raise DiskHeaderError("a VHDX parent locator cut short")
        key_at, value_at, key_length, value_length = _VHDX_LOCATOR_ENTRY.unpack_from(raw, at)
        key = raw[key_at:key_at + key_length].decode("utf-16-le", errors="replace")
        kind = _VHDX_LOCATOR_KEYS.get(key)
        if kind is not None:
            found[kind] = raw[value_at:value_at + value_length].decode("utf-16-le",
                                                                       errors="replace")
    return ParentLocator(**found)


def disk_parent(files: HostFiles, path: str) -> ParentLocator | None:
    """``parent_locator`` of the host file ``path``. Blocking: call it from a worker
    thread. Read-only."""
    with files.open_binary(path, "rb") as handle:
        return parent_locator(handle)


def disk_problem(files: HostFiles, path: str, suffix: str) -> str | None:
    """``not_standalone`` of the host file ``path``. Blocking: call it from a worker
    thread. Read-only."""
    with files.open_binary(path, "rb") as handle:
        return not_standalone(handle, suffix)


def disk_suffix(files: HostFiles, path: str) -> str | None:
    """``sniff`` of the host file ``path``. Blocking: call it from a worker thread.
    Read-only; a missing file raises HostFileError."""
    with files.open_binary(path, "rb") as handle:
        return sniff(handle)


def disk_shape(files: HostFiles, path: str) -> DiskShape | None:
    """``shape`` of the host file ``path`` by the format its signature shows; None when it
    is no disk or its header cannot be read. Blocking: call it from a worker thread.
    Read-only; a missing file raises HostFileError."""
    with files.open_binary(path, "rb") as handle:
        suffix = sniff(handle)
        return shape(handle, suffix) if suffix is not None else None


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


async def content_problem(files: HostFiles, path: str, suffix: str) -> str | None:
    """``disk_problem`` on a worker thread."""
    return await asyncio.to_thread(disk_problem, files, path, suffix)


async def content_shape(files: HostFiles, path: str) -> DiskShape | None:
    """``disk_shape`` on a worker thread."""
    return await asyncio.to_thread(disk_shape, files, path)
