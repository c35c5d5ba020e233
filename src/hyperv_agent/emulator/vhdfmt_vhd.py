"""VHD internals, after Microsoft's "Virtual Hard Disk Image Format Specification".

Layout written here (all integers big-endian)::

    fixed:         [guest data][footer]
    dynamic/diff:  [footer copy][dynamic header][BAT][parent locators][blocks...][footer]

A block is a sector bitmap (one bit per 512-byte sector, padded to a sector) followed by
the block's data. The footer's creator application is "win ", as Hyper-V writes it, so
readers take the virtual size from the footer's current size rather than from the CHS
geometry.
"""

from __future__ import annotations

import struct
import time
import uuid
from dataclasses import astuple, dataclass, replace
from pathlib import PureWindowsPath

from hyperv_agent.emulator.vhd import (
    ABSOLUTE_PATH,
    GIB,
    KIB,
    LOCATOR_ORDER,
    MIB,
    RELATIVE_PATH,
    CreateRequest,
    DiskFile,
    DiskFormat,
    DiskImage,
    DiskInfo,
    DiskType,
    VhdError,
    is_power_of_two,
    open_disk_file,
    round_up,
    split_by_block,
)

SECTOR = 512
MAX_SIZE = 2040 * GIB
DEFAULT_BLOCK_SIZE = 2 * MIB
MIN_BLOCK_SIZE = 512 * KIB
MAX_BLOCK_SIZE = 256 * MIB

# cookie, features, version, data offset, timestamp, creator app/version/host OS,
# original size, current size, cylinders, heads, sectors per track, disk type, checksum,
# unique id, saved state, reserved
FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427x")
FOOTER_CHECKSUM_AT = 64
# platform code, platform data space, platform data length, reserved, platform data offset
LOCATOR = struct.Struct(">4sIIIQ")
LOCATOR_SLOTS = 8
# cookie, data offset, table offset, version, max table entries, block size, checksum,
# parent unique id, parent timestamp, reserved, parent unicode name, locators, reserved
DYNAMIC_HEADER = struct.Struct(f">8sQQIIII16sII512s{LOCATOR_SLOTS * LOCATOR.size}s256x")
DYNAMIC_HEADER_CHECKSUM_AT = 36
CHECKSUM = struct.Struct(">I")

FOOTER_COOKIE = b"conectix"
DYNAMIC_COOKIE = b"cxsparse"
FEATURES_RESERVED = 0x00000002
FORMAT_VERSION = 0x00010000
CREATOR_APP = b"win "
CREATOR_VERSION = 0x000A0000
CREATOR_HOST = b"Wi2k"
NO_DATA_OFFSET = 0xFFFF_FFFF_FFFF_FFFF
UNALLOCATED = 0xFFFF_FFFF
BAT_ENTRY = struct.Struct(">I")  # a block's sector offset, or UNALLOCATED
UNIX_TIME_OF_VHD_EPOCH = 946_684_800  # 2000-01-01T00:00:00Z
PLATFORM_ABSOLUTE = b"W2ku"
PLATFORM_RELATIVE = b"W2ru"
PLATFORM_NONE = bytes(4)
_LOCATOR_KINDS = {PLATFORM_RELATIVE: RELATIVE_PATH, PLATFORM_ABSOLUTE: ABSOLUTE_PATH}
PARENT_NAME_BYTES = 512
HEADER_AT = SECTOR  # the dynamic header follows the footer copy
TABLE_AT = 3 * SECTOR  # the BAT follows the 1024-byte dynamic header

MAX_CHS_SECTORS = 65535 * 16 * 255
LARGE_CHS_SECTORS = 65535 * 16 * 63
CHS_CYLINDERS_PER_HEAD = 1024


# --- structures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Footer:
    cookie: bytes
    features: int
    version: int
    data_offset: int
    timestamp: int
    creator_app: bytes
    creator_version: int
    creator_host: bytes
    original_size: int
    current_size: int
    cylinders: int
    heads: int
    sectors_per_track: int
    disk_type: int
    checksum: int
    unique_id: bytes
    saved_state: int

    @classmethod
    def new(cls, disk_type: DiskType, size: int, data_offset: int) -> Footer:
        return cls(
            FOOTER_COOKIE, FEATURES_RESERVED, FORMAT_VERSION, data_offset, _vhd_now(),
            CREATOR_APP, CREATOR_VERSION, CREATOR_HOST, size, size, *geometry(size),
            disk_type, 0, uuid.uuid4().bytes, 0,
        )

    def resized(self, size: int) -> Footer:
        cylinders, heads, sectors = geometry(size)
        return replace(
            self, current_size=size, cylinders=cylinders, heads=heads, sectors_per_track=sectors
        )

    def pack(self) -> bytes:
        return _with_checksum(FOOTER.pack(*astuple(self)), FOOTER_CHECKSUM_AT)


@dataclass(frozen=True)
class Locator:
    code: bytes
    space: int
    length: int
    reserved: int
    offset: int

    def pack(self) -> bytes:
        return LOCATOR.pack(*astuple(self))


@dataclass(frozen=True)
class DynamicHeader:
    cookie: bytes
    data_offset: int
    table_offset: int
    version: int
    max_entries: int
    block_size: int
    checksum: int
    parent_id: bytes
    parent_timestamp: int
    reserved: int
    parent_name: bytes
    locators: bytes

    @classmethod
    def new(cls, entries: int, block_size: int, parent: ParentLink | None) -> DynamicHeader:
        link = parent or ParentLink(bytes(16), 0, b"", [])
        return cls(
            DYNAMIC_COOKIE, NO_DATA_OFFSET, TABLE_AT, FORMAT_VERSION, entries, block_size, 0,
            link.unique_id, link.timestamp, 0, link.name, b"".join(x.pack() for x in link.locators),
        )

    def parsed_locators(self) -> list[Locator]:
        return [Locator(*fields) for fields in LOCATOR.iter_unpack(self.locators)]

    def pack(self) -> bytes:
        return _with_checksum(DYNAMIC_HEADER.pack(*astuple(self)), DYNAMIC_HEADER_CHECKSUM_AT)


@dataclass(frozen=True)
class ParentLink:
    unique_id: bytes
    timestamp: int
    name: bytes
    locators: list[Locator]


def geometry(size: int) -> tuple[int, int, int]:
    """CHS geometry (cylinders, heads, sectors per track), as the specification computes it."""
    sectors = min(size // SECTOR, MAX_CHS_SECTORS)
    if sectors >= LARGE_CHS_SECTORS:
        per_track, heads = 255, 16
    else:
        per_track, heads = _small_disk_geometry(sectors)
    return sectors // per_track // heads, heads, per_track


def _small_disk_geometry(sectors: int) -> tuple[int, int]:
    per_track = 17
    cylinder_heads = sectors // per_track
    heads = max((cylinder_heads + CHS_CYLINDERS_PER_HEAD - 1) // CHS_CYLINDERS_PER_HEAD, 4)
    if cylinder_heads >= heads * CHS_CYLINDERS_PER_HEAD or heads > 16:
        per_track, heads = 31, 16
        cylinder_heads = sectors // per_track
    if cylinder_heads >= heads * CHS_CYLINDERS_PER_HEAD:
        per_track, heads = 63, 16
    return per_track, heads


def _checksum(raw: bytes, at: int) -> int:
    """One's complement of the byte sum, the checksum field counted as zero."""
    return ~(sum(raw) - sum(raw[at : at + CHECKSUM.size])) & 0xFFFF_FFFF


def _with_checksum(raw: bytes, at: int) -> bytes:
    blank = raw[:at] + bytes(CHECKSUM.size) + raw[at + CHECKSUM.size :]
    return blank[:at] + CHECKSUM.pack(_checksum(blank, at)) + blank[at + CHECKSUM.size :]


def _vhd_now() -> int:
    return max(0, int(time.time()) - UNIX_TIME_OF_VHD_EPOCH)


def _bat_bytes(entries: int) -> int:
    return round_up(entries * BAT_ENTRY.size, SECTOR)


def _pack_bat(bat: list[int]) -> bytes:
    raw = struct.pack(f">{len(bat)}I", *bat)
    return raw + b"\xff" * (_bat_bytes(len(bat)) - len(raw))


def _bitmap_bytes(block_size: int) -> int:
    return round_up(block_size // SECTOR // 8, SECTOR)


def _validated_size(size: int, file: DiskFile) -> int:
    rounded = round_up(size, SECTOR)
    if size <= 0 or rounded > MAX_SIZE:
        raise VhdError(f"{file.path}: a VHD must hold 1 byte to {MAX_SIZE} bytes, not {size}")
    return rounded


# --- reading ------------------------------------------------------------------------------


def open_image(file: DiskFile) -> DiskImage:
    footer = _read_footer(file)
    if footer.disk_type == DiskType.FIXED:
        return FixedVhd(file, footer)
    return SparseVhd(file, footer)


def _read_footer(file: DiskFile) -> Footer:
    size = file.size()
    if size < FOOTER.size:
        raise VhdError(f"{file.path}: not a VHD or VHDX file (too short for a VHD footer)")
    raw = file.read_exact(size - FOOTER.size, FOOTER.size, "VHD footer")
    footer = Footer(*FOOTER.unpack(raw))
    if footer.cookie != FOOTER_COOKIE:
        raise VhdError(f"{file.path}: not a VHD or VHDX file (no VHD footer cookie)")
    if footer.checksum != _checksum(raw, FOOTER_CHECKSUM_AT):
        raise VhdError(f"{file.path}: the VHD footer checksum is wrong (corrupt file)")
    if footer.disk_type not in (DiskType.FIXED, DiskType.DYNAMIC, DiskType.DIFFERENCING):
        raise VhdError(f"{file.path}: unsupported VHD disk type {footer.disk_type}")
    return footer


def _read_dynamic_header(file: DiskFile, footer: Footer) -> DynamicHeader:
    raw = file.read_exact(footer.data_offset, DYNAMIC_HEADER.size, "VHD dynamic header")
    header = DynamicHeader(*DYNAMIC_HEADER.unpack(raw))
    if header.cookie != DYNAMIC_COOKIE:
        raise VhdError(f"{file.path}: the VHD dynamic header has no 'cxsparse' cookie")
    if header.checksum != _checksum(raw, DYNAMIC_HEADER_CHECKSUM_AT):
        raise VhdError(f"{file.path}: the VHD dynamic header checksum is wrong (corrupt file)")
    if not is_power_of_two(header.block_size) or not SECTOR <= header.block_size <= GIB:
        raise VhdError(f"{file.path}: unsupported VHD block size {header.block_size}")
    if header.max_entries * header.block_size < footer.current_size:
        raise VhdError(f"{file.path}: the VHD block allocation table is too small")
    return header


def _read_bat(file: DiskFile, header: DynamicHeader) -> list[int]:
    count = header.max_entries
    raw = file.read_exact(header.table_offset, count * BAT_ENTRY.size, "VHD block table")
    bat = list(struct.unpack(f">{count}I", raw))
    block_span = _bitmap_bytes(header.block_size) + header.block_size
    file_size = file.size()
    if any(e != UNALLOCATED and e * SECTOR + block_span > file_size for e in bat):
        raise VhdError(f"{file.path}: a VHD block lies past the end of the file (truncated)")
    return bat


def _read_locators(file: DiskFile, header: DynamicHeader) -> dict[str, str]:
    """The Windows locators' paths by kind: W2ru is ``vhd.RELATIVE_PATH``, W2ku
    ``vhd.ABSOLUTE_PATH`` (the first of each code)."""
    found: dict[str, str] = {}
    for locator in header.parsed_locators():
        kind = _LOCATOR_KINDS.get(locator.code)
        if kind is not None and kind not in found and locator.length:
            raw = file.read_exact(locator.offset, locator.length, "VHD parent locator")
            found[kind] = raw.decode("utf-16-le", errors="replace").rstrip("\0")
    return found


def _parent_path(header: DynamicHeader, locators: dict[str, str]) -> str | None:
    """The path named as the parent's: the absolute locator, else the relative one, else
    the parent's name the header keeps."""
    named = locators.get(ABSOLUTE_PATH) or locators.get(RELATIVE_PATH)
    name = header.parent_name.decode("utf-16-be", errors="replace").rstrip("\0")
    return named or name or None


# --- images -------------------------------------------------------------------------------


class FixedVhd:
    """A fixed VHD: guest data byte for byte, then the footer."""

    def __init__(self, file: DiskFile, footer: Footer) -> None:
        if file.size() - FOOTER.size < footer.current_size:
            raise VhdError(f"{file.path}: the fixed VHD is shorter than its disk (truncated)")
        self._file = file
        self._footer = footer

    def info(self) -> DiskInfo:
        unique_id = str(uuid.UUID(bytes=self._footer.unique_id))  # a child records it
        return DiskInfo(
            DiskFormat.VHD, DiskType.FIXED, self._footer.current_size, self._file.size(), 0,
            SECTOR, SECTOR, unique_id, None, link_id=unique_id,
        )

    def read(self, offset: int, length: int) -> bytes:
        return self._file.read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self._file.write(offset, data)

    def data_extents(self) -> list[tuple[int, int]]:
        return self._file.data_ranges(0, self._footer.current_size)

    def grow(self, new_size_bytes: int) -> None:
        size = _validated_size(new_size_bytes, self._file)
        if size <= self._footer.current_size:
            return
        old_footer_at = self._file.size() - FOOTER.size
        self._footer = self._footer.resized(size)
        self._file.write(size, self._footer.pack())  # the new footer first: always one valid
        if old_footer_at < size:
            self._file.write(old_footer_at, bytes(FOOTER.size))  # now guest data: zero it
        self._file.truncate(size + FOOTER.size)


class SparseVhd:
    """A dynamic or differencing VHD: a block allocation table over sparse blocks."""

    def __init__(self, file: DiskFile, footer: Footer) -> None:
        self._file = file
        self._footer = footer
        self._header = _read_dynamic_header(file, footer)
        self._bat = _read_bat(file, self._header)
        self._block = self._header.block_size
        self._bitmap = _bitmap_bytes(self._block)

    def info(self) -> DiskInfo:
        disk_type = DiskType(self._footer.disk_type)
        differencing = disk_type is DiskType.DIFFERENCING
        unique_id = str(uuid.UUID(bytes=self._footer.unique_id))  # a child records it
        locators = _read_locators(self._file, self._header) if differencing else {}
        return DiskInfo(
            DiskFormat.VHD, disk_type, self._footer.current_size, self._file.size(),
            self._block, SECTOR, SECTOR, unique_id,
            _parent_path(self._header, locators) if differencing else None,
            # A child records its parent's unique id and time stamp; only the id is
            # compared (``vhd.Parent.made_from`` says why: the emulator's choice).
            parent_links=(str(uuid.UUID(bytes=self._header.parent_id)),) if differencing
            else (),
            link_id=unique_id,
            parent_timestamp=self._header.parent_timestamp + UNIX_TIME_OF_VHD_EPOCH
            if differencing else None,
            parent_locators=tuple((kind, locators[kind]) for kind in LOCATOR_ORDER
                                  if kind in locators),
        )

    def read(self, offset: int, length: int) -> bytes:
        pieces = split_by_block(offset, length, self._block)
        return b"".join(self._read_piece(at, size) for at, size in pieces)

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        for at, size in split_by_block(offset, len(data), self._block):
            self._file.write(self._block_data_at(at, allocate=True), view[:size].tobytes())
            view = view[size:]

    def data_extents(self) -> list[tuple[int, int]]:
        size = self._footer.current_size
        used = range(-(-size // self._block))
        return [
            (i * self._block, min(self._block, size - i * self._block))
            for i in used
            if self._bat[i] != UNALLOCATED
        ]

    def grow(self, new_size_bytes: int) -> None:
        size = _validated_size(new_size_bytes, self._file)
        if size <= self._footer.current_size:
            return
        entries = -(-size // self._block)
        if entries > self._header.max_entries:
            self._grow_bat(entries)
        self._footer = self._footer.resized(size)
        self._write_footers()

    # - internals -

    def _read_piece(self, offset: int, length: int) -> bytes:
        entry = self._bat[offset // self._block]
        if entry == UNALLOCATED:
            return bytes(length)
        return self._file.read(self._block_data_at(offset, allocate=False), length)

    def _block_data_at(self, offset: int, *, allocate: bool) -> int:
        index = offset // self._block
        if self._bat[index] == UNALLOCATED and allocate:
            self._allocate(index)
        return self._bat[index] * SECTOR + self._bitmap + offset % self._block

    def _allocate(self, index: int) -> None:
        """Add a zero block where the footer was; the footer moves past it first."""
        start = self._append_area(self._bitmap + self._block)
        self._file.write(start, b"\xff" * self._bitmap)  # every sector present (and zero)
        self._bat[index] = start // SECTOR
        entry_at = self._header.table_offset + index * BAT_ENTRY.size
        self._file.write(entry_at, BAT_ENTRY.pack(self._bat[index]))

    def _append_area(self, length: int) -> int:
        """Reserve ``length`` bytes at the end of the file, before the footer; their offset."""
        start = round_up(self._file.size() - FOOTER.size, SECTOR)
        self._file.write(start + length, self._footer.pack())
        return start

    def _grow_bat(self, entries: int) -> None:
        bat = self._bat + [UNALLOCATED] * (entries - len(self._bat))
        table_offset = self._header.table_offset
        if table_offset + _bat_bytes(entries) > self._first_structure_after_bat():
            table_offset = self._append_area(_bat_bytes(entries))
        self._file.write(table_offset, _pack_bat(bat))
        self._header = replace(self._header, table_offset=table_offset, max_entries=entries)
        self._file.write(self._footer.data_offset, self._header.pack())
        self._bat = bat

    def _first_structure_after_bat(self) -> int:
        table = self._header.table_offset
        starts = [e * SECTOR for e in self._bat if e != UNALLOCATED]
        starts += [x.offset for x in self._header.parsed_locators() if x.code != PLATFORM_NONE]
        starts += [self._footer.data_offset, self._file.size() - FOOTER.size]
        return min(s for s in starts if s > table)

    def _write_footers(self) -> None:
        raw = self._footer.pack()
        self._file.write(self._file.size() - FOOTER.size, raw)
        self._file.write(0, raw)


# --- creation -----------------------------------------------------------------------------


def create(file: DiskFile, request: CreateRequest) -> None:
    _check_sector_sizes(file, request)
    size = _validated_size(request.size_bytes, file)
    if request.disk_type is DiskType.FIXED:
        file.truncate(size)
        file.write(size, Footer.new(DiskType.FIXED, size, NO_DATA_OFFSET).pack())
    else:
        _create_sparse(file, request, size, _block_size(file, request))


def _check_sector_sizes(file: DiskFile, request: CreateRequest) -> None:
    for sector_size in (request.logical_sector_size, request.physical_sector_size):
        if sector_size not in (0, SECTOR):
            raise VhdError(f"{file.path}: a VHD has 512-byte sectors, not {sector_size}")


def _block_size(file: DiskFile, request: CreateRequest) -> int:
    block = request.block_size_bytes or DEFAULT_BLOCK_SIZE
    if not is_power_of_two(block) or not MIN_BLOCK_SIZE <= block <= MAX_BLOCK_SIZE:
        raise VhdError(
            f"{file.path}: the VHD block size must be a power of two from "
            f"{MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE} bytes, not {block}"
        )
    return block


def _create_sparse(file: DiskFile, request: CreateRequest, size: int, block: int) -> None:
    entries = -(-size // block)
    end = TABLE_AT + _bat_bytes(entries)
    link: ParentLink | None = None
    if request.disk_type is DiskType.DIFFERENCING:
        link, texts = _parent_link(request, end)
        for offset, blob in texts:
            file.write(offset, blob)
        end = max(x.offset + x.space for x in link.locators)
    footer = Footer.new(request.disk_type, size, HEADER_AT).pack()
    file.write(0, footer)
    file.write(HEADER_AT, DynamicHeader.new(entries, block, link).pack())
    file.write(TABLE_AT, _pack_bat([UNALLOCATED] * entries))
    file.write(end, footer)


def _parent_link(request: CreateRequest, at: int) -> tuple[ParentLink, list[tuple[int, bytes]]]:
    """The dynamic header's parent fields, and the locator texts to store from ``at`` on."""
    assert request.parent is not None and request.parent_locator is not None
    with open_disk_file(request.parent, writable=False) as parent_file:
        parent_id = _read_footer(parent_file).unique_id
    modified = int(request.parent.stat().st_mtime) - UNIX_TIME_OF_VHD_EPOCH
    texts = [
        (PLATFORM_ABSOLUTE, request.parent_locator),
        (PLATFORM_RELATIVE, request.relative_locator),
    ]
    locators, blobs = _locators([(code, text) for code, text in texts if text], at)
    name = PureWindowsPath(request.parent_locator).name.encode("utf-16-be")[:PARENT_NAME_BYTES]
    return ParentLink(parent_id, max(0, modified), name, locators), blobs


def _locators(
    texts: list[tuple[bytes, str]], at: int
) -> tuple[list[Locator], list[tuple[int, bytes]]]:
    """Locator entries for UTF-16 path texts stored one after another from ``at`` on."""
    locators: list[Locator] = []
    blobs: list[tuple[int, bytes]] = []
    for code, text in texts:
        blob = text.encode("utf-16-le")
        locators.append(Locator(code, round_up(len(blob), SECTOR), len(blob), 0, at))
        blobs.append((at, blob))
        at += locators[-1].space
    return locators, blobs
