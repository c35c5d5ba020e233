"""VHDX internals, after Microsoft's "[MS-VHDX]" specification.

Layout written here (all integers little-endian, GUIDs in Microsoft byte order)::

    0       file type identifier ("vhdxfile" + creator)
    64 KiB  header 1          128 KiB  header 2           (CRC-32C, newest sequence wins)
    192 KiB region table 1    256 KiB  region table 2     (BAT and metadata regions)
    1 MiB   log (1 MiB, empty: the log GUID is zero)
    2 MiB   metadata region: table, then the items
    3 MiB   BAT region, then 1 MiB-aligned payload blocks

Every payload block is either FULLY_PRESENT at a file offset or reads as zeros; a sector
bitmap entry follows every ``chunk ratio`` payload entries in the BAT. Updates are written
in place (the log is not used), ordered so that a crash leaves the old or the new state.
"""

from __future__ import annotations

import functools
import struct
import uuid
from dataclasses import astuple, dataclass, replace
from typing import Any

from hyperv_agent.emulator.vhd import (
    ABSOLUTE_PATH,
    KIB,
    LOCATOR_ORDER,
    MIB,
    RELATIVE_PATH,
    TIB,
    VHDX_FILE_SIGNATURE,
    VOLUME_PATH,
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

MAX_SIZE = 64 * TIB
ALIGNMENT = 1 * MIB
MIN_BLOCK_SIZE = 1 * MIB
MAX_BLOCK_SIZE = 256 * MIB
DEFAULT_BLOCK_SIZE = 32 * MIB
DEFAULT_DIFFERENCING_BLOCK_SIZE = 1 * MIB
SECTOR_SIZES = (512, 4096)
DEFAULT_LOGICAL_SECTOR_SIZE = 512
DEFAULT_PHYSICAL_SECTOR_SIZE = 4096
SECTORS_PER_CHUNK = 1 << 23

FILE_IDENTIFIER = struct.Struct("<8s512s")  # signature, creator (UTF-16)
# signature, checksum, sequence number, file write GUID, data write GUID, log GUID,
# log version, version, log length, log offset, reserved
HEADER = struct.Struct("<4sIQ16s16s16sHHIQ4016x")
REGION_TABLE_HEADER = struct.Struct("<4sIII")  # signature, checksum, entry count, reserved
REGION_ENTRY = struct.Struct("<16sQII")  # GUID, file offset, length, required
METADATA_TABLE_HEADER = struct.Struct("<8sHH20x")  # signature, reserved, entry count
METADATA_ENTRY = struct.Struct("<16sIII4x")  # item id, offset, length, flags
FILE_PARAMETERS = struct.Struct("<II")  # block size, flags
VIRTUAL_DISK_SIZE = struct.Struct("<Q")
SECTOR_SIZE = struct.Struct("<I")
LOCATOR_HEADER = struct.Struct("<16sHH")  # locator type, reserved, key-value count
LOCATOR_ENTRY = struct.Struct("<IIHH")  # key offset, value offset, key length, value length
BAT_ENTRY = struct.Struct("<Q")
CHECKSUM = struct.Struct("<I")
CHECKSUM_AT = 4  # in both the header and the region table

HEADER_SIZE = 4 * KIB
HEADER_OFFSETS = (64 * KIB, 128 * KIB)
REGION_TABLE_OFFSETS = (192 * KIB, 256 * KIB)
REGION_TABLE_SIZE = 64 * KIB
METADATA_TABLE_SIZE = 64 * KIB
MAX_TABLE_ENTRIES = 2047
LOG_OFFSET = 1 * MIB
LOG_LENGTH = 1 * MIB
METADATA_OFFSET = 2 * MIB
METADATA_LENGTH = 1 * MIB
BAT_OFFSET = 3 * MIB

HEADER_SIGNATURE = b"head"
REGION_SIGNATURE = b"regi"
METADATA_SIGNATURE = b"metadata"
HEADER_VERSION = 1
LOG_VERSION = 0
CREATOR = "hyperv-agent emulator"
NO_GUID = bytes(16)

BAT_REGION = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08")
METADATA_REGION = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
FILE_PARAMETERS_ITEM = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
VIRTUAL_DISK_SIZE_ITEM = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
PAGE83_ITEM = uuid.UUID("beca12ab-b2e6-4523-93ef-c309e000c746")
LOGICAL_SECTOR_ITEM = uuid.UUID("8141bf1d-a96f-4709-ba47-f233a8faab5f")
PHYSICAL_SECTOR_ITEM = uuid.UUID("cda348c7-445d-4471-9cc9-e9885251c556")
PARENT_LOCATOR_ITEM = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")
VHDX_PARENT_LOCATOR = uuid.UUID("b04aefb7-d19e-4a81-b789-25b8e9445913")
KNOWN_ITEMS = frozenset(
    {FILE_PARAMETERS_ITEM, VIRTUAL_DISK_SIZE_ITEM, PAGE83_ITEM, LOGICAL_SECTOR_ITEM,
     PHYSICAL_SECTOR_ITEM, PARENT_LOCATOR_ITEM}
)

REGION_REQUIRED = 1
ITEM_IS_VIRTUAL_DISK = 2
ITEM_IS_REQUIRED = 4
LEAVE_BLOCKS_ALLOCATED = 1
HAS_PARENT = 2

STATE_MASK = 0x7
PAYLOAD_FULLY_PRESENT = 6
PAYLOAD_PARTIALLY_PRESENT = 7
OFFSET_MASK = ~(ALIGNMENT - 1)

#: The locator ``DiskInfo.parent_path`` names (the ParentPath a disk reports when its parent
#: is found nowhere, ``vhd.reported_parent``): the absolute one first, the reverse of the
#: order a parent is looked for in (``vhd.parent_candidates``), so that a parent found
#: nowhere is named by the last path tried.
LOCATOR_KEYS_BY_PREFERENCE = tuple(reversed(LOCATOR_ORDER))
VOLUME_PATH_PREFIX = "\\\\?\\Volume{"


# --- CRC-32C (Castagnoli), as the headers and region tables use it ------------------------

CRC32C_POLYNOMIAL = 0x82F63B78  # reflected


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (CRC32C_POLYNOMIAL if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def _zero_byte(crc: int) -> int:
    return _CRC32C_TABLE[crc & 0xFF] ^ (crc >> 8)


def _apply(operator: tuple[int, ...], crc: int) -> int:
    """A linear map of the CRC register (the images of its 32 bits) applied to ``crc``."""
    result, bit = 0, 0
    while crc:
        if crc & 1:
            result ^= operator[bit]
        crc >>= 1
        bit += 1
    return result


@functools.cache
def _zero_run(power: int) -> tuple[int, ...]:
    """What 2**power zero bytes do to the register."""
    if power == 0:
        return tuple(_zero_byte(1 << bit) for bit in range(32))
    half = _zero_run(power - 1)
    return tuple(_apply(half, image) for image in half)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``. Trailing zero bytes, most of a VHDX header or
    region table, are applied as one linear map per power of two instead of byte by byte."""
    body = data.rstrip(b"\0")
    crc = 0xFFFF_FFFF
    table = _CRC32C_TABLE
    for byte in body:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    zeros, power = len(data) - len(body), 0
    while zeros:
        if zeros & 1:
            crc = _apply(_zero_run(power), crc)
        zeros >>= 1
        power += 1
    return crc ^ 0xFFFF_FFFF


def _blank_checksum(raw: bytes) -> bytes:
    return raw[:CHECKSUM_AT] + bytes(CHECKSUM.size) + raw[CHECKSUM_AT + CHECKSUM.size :]


def _with_crc(raw: bytes) -> bytes:
    blank = _blank_checksum(raw)
    return blank[:CHECKSUM_AT] + CHECKSUM.pack(crc32c(blank)) + blank[CHECKSUM_AT + CHECKSUM.size :]


def _crc_matches(raw: bytes) -> bool:
    (stored,) = CHECKSUM.unpack_from(raw, CHECKSUM_AT)
    return bool(crc32c(_blank_checksum(raw)) == stored)


# --- structures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    signature: bytes
    checksum: int
    sequence: int
    file_write_guid: bytes
    data_write_guid: bytes
    log_guid: bytes
    log_version: int
    version: int
    log_length: int
    log_offset: int

    @classmethod
    def new(cls, sequence: int) -> Header:
        return cls(
            HEADER_SIGNATURE, 0, sequence, uuid.uuid4().bytes_le, uuid.uuid4().bytes_le,
            NO_GUID, LOG_VERSION, HEADER_VERSION, LOG_LENGTH, LOG_OFFSET,
        )

    def pack(self) -> bytes:
        return _with_crc(HEADER.pack(*astuple(self)))


@dataclass(frozen=True)
class Region:
    guid: uuid.UUID
    offset: int
    length: int
    required: int

    def pack(self) -> bytes:
        return REGION_ENTRY.pack(self.guid.bytes_le, self.offset, self.length, self.required)


@dataclass(frozen=True)
class Metadata:
    block_size: int
    flags: int
    virtual_size: int
    logical_sector_size: int
    physical_sector_size: int
    page83: bytes
    parent: dict[str, str] | None
    size_item_at: int  # file offset of the virtual disk size item, rewritten by a resize


@dataclass(frozen=True)
class Layout:
    """How payload blocks map onto BAT entries for a given disk."""

    virtual_size: int
    block_size: int
    logical_sector_size: int
    differencing: bool

    @property
    def chunk_ratio(self) -> int:
        return SECTORS_PER_CHUNK * self.logical_sector_size // self.block_size

    @property
    def data_blocks(self) -> int:
        return -(-self.virtual_size // self.block_size)

    @property
    def bat_entries(self) -> int:
        if self.differencing:
            return -(-self.data_blocks // self.chunk_ratio) * (self.chunk_ratio + 1)
        return self.data_blocks + (self.data_blocks - 1) // self.chunk_ratio

    def bat_index(self, block_number: int) -> int:
        return block_number + block_number // self.chunk_ratio


def _pack_bat(bat: list[int]) -> bytes:
    return struct.pack(f"<{len(bat)}Q", *bat)


def _pack_region_table(regions: list[Region]) -> bytes:
    raw = REGION_TABLE_HEADER.pack(REGION_SIGNATURE, 0, len(regions), 0)
    raw += b"".join(region.pack() for region in regions)
    return _with_crc(raw.ljust(REGION_TABLE_SIZE, b"\0"))


def _write_region_tables(file: DiskFile, regions: list[Region]) -> None:
    """Table 2 first: until table 1 is rewritten, readers keep using the old one."""
    raw = _pack_region_table(regions)
    for offset in reversed(REGION_TABLE_OFFSETS):
        file.write(offset, raw)


# --- reading ------------------------------------------------------------------------------


def open_image(file: DiskFile) -> DiskImage:
    return VhdxImage(file)


def _current_header(file: DiskFile) -> tuple[Header, int]:
    valid = []
    for slot, offset in enumerate(HEADER_OFFSETS):
        raw = file.read_exact(offset, HEADER_SIZE, "VHDX header")
        header = Header(*HEADER.unpack(raw))
        ok = header.signature == HEADER_SIGNATURE and header.version == HEADER_VERSION
        if ok and _crc_matches(raw):
            valid.append((header, slot))
    if not valid:
        raise VhdError(f"{file.path}: neither VHDX header is valid (corrupt file)")
    header, slot = max(valid, key=lambda pair: pair[0].sequence)
    if header.log_guid != NO_GUID:
        raise VhdError(f"{file.path}: the VHDX log must be replayed first (not supported)")
    return header, slot


def _read_regions(file: DiskFile) -> list[Region]:
    for offset in REGION_TABLE_OFFSETS:
        raw = file.read_exact(offset, REGION_TABLE_SIZE, "VHDX region table")
        if raw[: len(REGION_SIGNATURE)] == REGION_SIGNATURE and _crc_matches(raw):
            return _parse_regions(file, raw)
    raise VhdError(f"{file.path}: neither VHDX region table is valid (corrupt file)")


def _parse_regions(file: DiskFile, raw: bytes) -> list[Region]:
    _, _, count, _ = REGION_TABLE_HEADER.unpack_from(raw)
    if count > MAX_TABLE_ENTRIES:
        raise VhdError(f"{file.path}: the VHDX region table has {count} entries")
    regions = []
    for i in range(count):
        guid, offset, length, required = REGION_ENTRY.unpack_from(
            raw, REGION_TABLE_HEADER.size + i * REGION_ENTRY.size
        )
        regions.append(Region(uuid.UUID(bytes_le=guid), offset, length, required))
    known = {BAT_REGION, METADATA_REGION}
    if any(r.guid not in known and r.required & REGION_REQUIRED for r in regions):
        raise VhdError(f"{file.path}: the VHDX file needs a region this reader does not know")
    if not known <= {r.guid for r in regions}:
        raise VhdError(f"{file.path}: the VHDX file lacks its BAT or metadata region")
    return regions


def _find_region(regions: list[Region], guid: uuid.UUID) -> Region:
    return next(region for region in regions if region.guid == guid)


def _read_metadata(file: DiskFile, region: Region) -> Metadata:
    table = file.read_exact(region.offset, METADATA_TABLE_SIZE, "VHDX metadata table")
    signature, _, count = METADATA_TABLE_HEADER.unpack_from(table)
    if signature != METADATA_SIGNATURE or count > MAX_TABLE_ENTRIES:
        raise VhdError(f"{file.path}: the VHDX metadata table is not valid (corrupt file)")
    entries = [
        METADATA_ENTRY.unpack_from(table, METADATA_TABLE_HEADER.size + i * METADATA_ENTRY.size)
        for i in range(count)
    ]
    items = dict(_read_metadata_item(file, region, *entry) for entry in entries)
    return _metadata_from_items(file, items)


def _read_metadata_item(
    file: DiskFile, region: Region, guid: bytes, offset: int, length: int, flags: int
) -> tuple[uuid.UUID, tuple[int, bytes]]:
    """An item's id, its file offset and its data."""
    item = uuid.UUID(bytes_le=guid)
    if item not in KNOWN_ITEMS and flags & ITEM_IS_REQUIRED:
        raise VhdError(f"{file.path}: the VHDX file needs metadata item {item} (unknown)")
    if offset + length > region.length:
        raise VhdError(f"{file.path}: VHDX metadata item {item} lies outside its region")
    at = region.offset + offset
    return item, (at, file.read_exact(at, length, "VHDX metadata item"))


def _item(file: DiskFile, items: dict[uuid.UUID, tuple[int, bytes]], item: uuid.UUID,
          layout: struct.Struct) -> tuple[Any, ...]:
    if item not in items or len(items[item][1]) < layout.size:
        raise VhdError(f"{file.path}: the VHDX metadata item {item} is missing or short")
    return layout.unpack_from(items[item][1])


def _metadata_from_items(file: DiskFile, items: dict[uuid.UUID, tuple[int, bytes]]) -> Metadata:
    block_size, flags = _item(file, items, FILE_PARAMETERS_ITEM, FILE_PARAMETERS)
    (size,) = _item(file, items, VIRTUAL_DISK_SIZE_ITEM, VIRTUAL_DISK_SIZE)
    (logical,) = _item(file, items, LOGICAL_SECTOR_ITEM, SECTOR_SIZE)
    (physical,) = _item(file, items, PHYSICAL_SECTOR_ITEM, SECTOR_SIZE)
    (page83,) = _item(file, items, PAGE83_ITEM, struct.Struct("<16s"))
    parent = None
    if flags & HAS_PARENT:
        if PARENT_LOCATOR_ITEM not in items:
            raise VhdError(f"{file.path}: the differencing VHDX file has no parent locator")
        parent = _parse_parent_locator(file, items[PARENT_LOCATOR_ITEM][1])
    metadata = Metadata(block_size, flags, size, logical, physical, page83, parent,
                        items[VIRTUAL_DISK_SIZE_ITEM][0])
    _check_metadata(file, metadata)
    return metadata


def _check_metadata(file: DiskFile, metadata: Metadata) -> None:
    block = metadata.block_size
    if not is_power_of_two(block) or not MIN_BLOCK_SIZE <= block <= MAX_BLOCK_SIZE:
        raise VhdError(f"{file.path}: unsupported VHDX block size {block}")
    sectors = (metadata.logical_sector_size, metadata.physical_sector_size)
    if any(sector not in SECTOR_SIZES for sector in sectors):
        raise VhdError(f"{file.path}: unsupported VHDX sector sizes {sectors}")
    size = metadata.virtual_size
    if not 0 < size <= MAX_SIZE or size % metadata.logical_sector_size:
        raise VhdError(f"{file.path}: invalid VHDX virtual disk size {size}")


def _parse_parent_locator(file: DiskFile, raw: bytes) -> dict[str, str]:
    try:
        locator_type, _, count = LOCATOR_HEADER.unpack_from(raw)
        entries = [
            LOCATOR_ENTRY.unpack_from(raw, LOCATOR_HEADER.size + i * LOCATOR_ENTRY.size)
            for i in range(count)
        ]
    except struct.error as exc:
        raise VhdError(f"{file.path}: the VHDX parent locator is cut short") from exc
    if locator_type != VHDX_PARENT_LOCATOR.bytes_le:
        raise VhdError(f"{file.path}: unknown VHDX parent locator type")
    return {
        _utf16(file, raw, key_at, key_length): _utf16(file, raw, value_at, value_length)
        for key_at, value_at, key_length, value_length in entries
    }


def _utf16(file: DiskFile, raw: bytes, offset: int, length: int) -> str:
    if offset + length > len(raw):
        raise VhdError(f"{file.path}: a VHDX parent locator entry lies outside the locator")
    return raw[offset : offset + length].decode("utf-16-le", errors="replace")


def _read_bat(file: DiskFile, region: Region, layout: Layout) -> list[int]:
    count = layout.bat_entries
    if count * BAT_ENTRY.size > region.length:
        raise VhdError(f"{file.path}: the VHDX BAT region is too small for the disk")
    raw = file.read_exact(region.offset, count * BAT_ENTRY.size, "VHDX BAT")
    bat = list(struct.unpack(f"<{count}Q", raw))
    file_size = file.size()
    for entry in bat:
        if entry & STATE_MASK >= PAYLOAD_FULLY_PRESENT and (entry & OFFSET_MASK) >= file_size:
            raise VhdError(f"{file.path}: a VHDX block lies past the end of the file")
    return bat


# --- the image ----------------------------------------------------------------------------


class VhdxImage:
    """An open VHDX file."""

    def __init__(self, file: DiskFile) -> None:
        if file.read(0, len(VHDX_FILE_SIGNATURE)) != VHDX_FILE_SIGNATURE:
            raise VhdError(f"{file.path}: not a VHDX file (no 'vhdxfile' identifier)")
        self._file = file
        self._header, self._slot = _current_header(file)
        self._regions = _read_regions(file)
        self._meta = _read_metadata(file, _find_region(self._regions, METADATA_REGION))
        self._layout = Layout(
            self._meta.virtual_size, self._meta.block_size, self._meta.logical_sector_size,
            self._meta.flags & HAS_PARENT != 0,
        )
        self._bat = _read_bat(file, _find_region(self._regions, BAT_REGION), self._layout)
        self._touched = False

    @property
    def data_write_guid(self) -> bytes:
        return self._header.data_write_guid

    def info(self) -> DiskInfo:
        meta = self._meta
        return DiskInfo(
            DiskFormat.VHDX, self._disk_type(), meta.virtual_size, self._file.size(),
            meta.block_size, meta.logical_sector_size, meta.physical_sector_size,
            str(uuid.UUID(bytes_le=meta.page83)), self._parent_path(),
            parent_links=self._parent_links(),
            link_id=str(uuid.UUID(bytes_le=self._header.data_write_guid)),
            parent_locators=self._parent_locators(),
        )

    def read(self, offset: int, length: int) -> bytes:
        pieces = split_by_block(offset, length, self._meta.block_size)
        return b"".join(self._read_piece(at, size) for at, size in pieces)

    def write(self, offset: int, data: bytes) -> None:
        self._touch()
        view = memoryview(data)
        for at, size in split_by_block(offset, len(data), self._meta.block_size):
            self._file.write(self._block_data_allocated(at), view[:size].tobytes())
            view = view[size:]

    def data_extents(self) -> list[tuple[int, int]]:
        extents: list[tuple[int, int]] = []
        block = self._meta.block_size
        for number in range(self._layout.data_blocks):
            entry = self._bat[self._layout.bat_index(number)]
            if entry & STATE_MASK == PAYLOAD_PARTIALLY_PRESENT:  # a differencing disk's
                extents.append((number * block,
                                min(block, self._meta.virtual_size - number * block)))
            elif entry & STATE_MASK == PAYLOAD_FULLY_PRESENT:
                start, length = number * block, min(block, self._meta.virtual_size - number * block)
                base = (entry & OFFSET_MASK) - start
                ranges = self._file.data_ranges(base + start, base + start + length)
                extents += [(at - base, size) for at, size in ranges]
        return extents

    def grow(self, new_size_bytes: int) -> None:
        size = _validated_size(self._file, new_size_bytes, self._meta.logical_sector_size)
        if size <= self._meta.virtual_size:
            return
        self._touch()
        layout = replace(self._layout, virtual_size=size)
        bat = self._bat + [0] * (layout.bat_entries - len(self._bat))
        if self._disk_type() is DiskType.FIXED:
            self._allocate_new_blocks(bat, layout)
        self._store_bat(bat)
        self._file.write(self._meta.size_item_at, VIRTUAL_DISK_SIZE.pack(size))
        self._meta = replace(self._meta, virtual_size=size)
        self._layout, self._bat = layout, bat

    # - internals -

    def _disk_type(self) -> DiskType:
        if self._meta.flags & HAS_PARENT:
            return DiskType.DIFFERENCING
        if self._meta.flags & LEAVE_BLOCKS_ALLOCATED:
            return DiskType.FIXED
        return DiskType.DYNAMIC

    def _parent_path(self) -> str | None:
        keys = self._meta.parent or {}
        return next((keys[key] for key in LOCATOR_KEYS_BY_PREFERENCE if keys.get(key)), None)

    def _parent_locators(self) -> tuple[tuple[str, str], ...]:
        keys = self._meta.parent or {}
        return tuple((key, keys[key]) for key in LOCATOR_ORDER if keys.get(key))

    def _parent_links(self) -> tuple[str, ...]:
        """The parent DataWriteGuids the parent locator accepts ([MS-VHDX]: its
        parent_linkage, and parent_linkage2 when present), braces removed."""
        keys = self._meta.parent or {}
        return tuple(keys[key].strip("{}") for key in ("parent_linkage", "parent_linkage2")
                     if keys.get(key))

    def _read_piece(self, offset: int, length: int) -> bytes:
        at = self._block_data_at(offset)
        return bytes(length) if at is None else self._file.read(at, length)

    def _block_data_at(self, offset: int) -> int | None:
        """Where guest byte ``offset`` lives in the file; None if its block is absent."""
        entry = self._bat[self._layout.bat_index(offset // self._meta.block_size)]
        state = entry & STATE_MASK
        if state == PAYLOAD_PARTIALLY_PRESENT:
            raise VhdError(f"{self._file.path}: a partially present block outside a "
                           "differencing disk (corrupt file)")
        if state != PAYLOAD_FULLY_PRESENT:
            return None
        return (entry & OFFSET_MASK) + offset % self._meta.block_size

    def _block_data_allocated(self, offset: int) -> int:
        at = self._block_data_at(offset)
        if at is None:
            self._allocate(self._layout.bat_index(offset // self._meta.block_size))
            at = self._block_data_at(offset)
            assert at is not None
        return at

    def _allocate(self, index: int) -> None:
        """A new zero block at the end of the file; the BAT points at it once it exists."""
        start = round_up(self._file.size(), ALIGNMENT)
        self._file.truncate(start + self._meta.block_size)
        self._bat[index] = start | PAYLOAD_FULLY_PRESENT
        region = _find_region(self._regions, BAT_REGION)
        self._file.write(region.offset + index * BAT_ENTRY.size, BAT_ENTRY.pack(self._bat[index]))

    def _allocate_new_blocks(self, bat: list[int], layout: Layout) -> None:
        start = round_up(self._file.size(), ALIGNMENT)
        numbers = range(self._layout.data_blocks, layout.data_blocks)
        for k, number in enumerate(numbers):
            bat[layout.bat_index(number)] = (start + k * layout.block_size) | PAYLOAD_FULLY_PRESENT
        self._file.truncate(start + len(numbers) * layout.block_size)

    def _store_bat(self, bat: list[int]) -> None:
        """Write the BAT, moving it to the end of the file if its region is too small."""
        region = _find_region(self._regions, BAT_REGION)
        needed = len(bat) * BAT_ENTRY.size
        if needed > region.length:
            start = round_up(self._file.size(), ALIGNMENT)
            region = replace(region, offset=start, length=round_up(needed, ALIGNMENT))
            self._file.truncate(region.offset + region.length)
        self._file.write(region.offset, _pack_bat(bat))
        if region not in self._regions:
            self._regions = [region if r.guid == BAT_REGION else r for r in self._regions]
            _write_region_tables(self._file, self._regions)

    def _touch(self) -> None:
        """Before the first change: new file and data write GUIDs in both headers."""
        if self._touched:
            return
        self._touched = True
        fresh = replace(self._header, file_write_guid=uuid.uuid4().bytes_le,
                        data_write_guid=uuid.uuid4().bytes_le)
        for step, slot in enumerate((1 - self._slot, self._slot), start=1):
            self._header = replace(fresh, sequence=fresh.sequence + step)
            self._file.write(HEADER_OFFSETS[slot], self._header.pack())


def _validated_size(file: DiskFile, size: int, logical_sector_size: int) -> int:
    rounded = round_up(size, logical_sector_size)
    if size <= 0 or rounded > MAX_SIZE:
        raise VhdError(f"{file.path}: a VHDX must hold 1 byte to {MAX_SIZE} bytes, not {size}")
    return rounded


# --- creation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NewDisk:
    disk_type: DiskType
    size: int
    block_size: int
    logical_sector_size: int
    physical_sector_size: int
    parent_locator: dict[str, str] | None


def create(file: DiskFile, request: CreateRequest) -> None:
    disk = _new_disk(file, request)
    layout = Layout(disk.size, disk.block_size, disk.logical_sector_size,
                    disk.disk_type is DiskType.DIFFERENCING)
    bat_length = round_up(layout.bat_entries * BAT_ENTRY.size, ALIGNMENT)
    data_start = BAT_OFFSET + bat_length
    _write_header_section(file, bat_length)
    file.write(METADATA_OFFSET, _pack_metadata(_metadata_items(disk)))
    fixed = disk.disk_type is DiskType.FIXED
    file.write(BAT_OFFSET, _pack_bat(_initial_bat(layout, data_start if fixed else None)))
    file.truncate(data_start + (layout.data_blocks * layout.block_size if fixed else 0))


def _write_header_section(file: DiskFile, bat_length: int) -> None:
    """The file identifier, both headers and both region tables (the first 1 MiB)."""
    file.write(0, FILE_IDENTIFIER.pack(VHDX_FILE_SIGNATURE, CREATOR.encode("utf-16-le")))
    for sequence, offset in enumerate(HEADER_OFFSETS):
        file.write(offset, Header.new(sequence).pack())
    _write_region_tables(file, [
        Region(BAT_REGION, BAT_OFFSET, bat_length, REGION_REQUIRED),
        Region(METADATA_REGION, METADATA_OFFSET, METADATA_LENGTH, REGION_REQUIRED),
    ])


def _new_disk(file: DiskFile, request: CreateRequest) -> NewDisk:
    if request.disk_type is DiskType.DIFFERENCING:
        return _new_differencing_disk(file, request)
    logical = _sector_size(file, request.logical_sector_size or DEFAULT_LOGICAL_SECTOR_SIZE)
    physical = _sector_size(file, request.physical_sector_size or DEFAULT_PHYSICAL_SECTOR_SIZE)
    size = _validated_size(file, request.size_bytes, logical)
    block = _block_size(file, request.block_size_bytes or DEFAULT_BLOCK_SIZE)
    return NewDisk(request.disk_type, size, block, logical, physical, None)


def _new_differencing_disk(file: DiskFile, request: CreateRequest) -> NewDisk:
    assert request.parent is not None
    with open_disk_file(request.parent, writable=False) as parent_file:
        parent = VhdxImage(parent_file)
        info, linkage = parent.info(), uuid.UUID(bytes_le=parent.data_write_guid)
    sectors = (info.logical_sector_size, info.physical_sector_size)
    requested = (request.logical_sector_size, request.physical_sector_size)
    if any(asked not in (0, have) for asked, have in zip(requested, sectors, strict=True)):
        raise VhdError(f"{file.path}: a differencing disk keeps its parent's sector sizes")
    block = _block_size(file, request.block_size_bytes or DEFAULT_DIFFERENCING_BLOCK_SIZE)
    keys = _parent_locator_keys(request, linkage)
    return NewDisk(DiskType.DIFFERENCING, info.virtual_size_bytes, block, *sectors, keys)


def _parent_locator_keys(request: CreateRequest, linkage: uuid.UUID) -> dict[str, str]:
    """parent_linkage is the parent's data write GUID: it changes when the parent does."""
    assert request.parent_locator is not None
    keys = {"parent_linkage": "{" + str(linkage) + "}"}
    volume = request.parent_locator.startswith(VOLUME_PATH_PREFIX)
    keys[VOLUME_PATH if volume else ABSOLUTE_PATH] = request.parent_locator
    if request.relative_locator:
        keys[RELATIVE_PATH] = request.relative_locator
    return keys


def _sector_size(file: DiskFile, value: int) -> int:
    if value not in SECTOR_SIZES:
        raise VhdError(f"{file.path}: a VHDX sector size is 512 or 4096 bytes, not {value}")
    return value


def _block_size(file: DiskFile, value: int) -> int:
    if not is_power_of_two(value) or not MIN_BLOCK_SIZE <= value <= MAX_BLOCK_SIZE:
        raise VhdError(
            f"{file.path}: the VHDX block size must be a power of two from "
            f"{MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE} bytes, not {value}"
        )
    return value


def _metadata_items(disk: NewDisk) -> list[tuple[uuid.UUID, int, bytes]]:
    flags = LEAVE_BLOCKS_ALLOCATED if disk.disk_type is DiskType.FIXED else 0
    flags |= HAS_PARENT if disk.parent_locator is not None else 0
    virtual = ITEM_IS_REQUIRED | ITEM_IS_VIRTUAL_DISK
    items = [
        (FILE_PARAMETERS_ITEM, ITEM_IS_REQUIRED, FILE_PARAMETERS.pack(disk.block_size, flags)),
        (VIRTUAL_DISK_SIZE_ITEM, virtual, VIRTUAL_DISK_SIZE.pack(disk.size)),
        (PAGE83_ITEM, virtual, uuid.uuid4().bytes_le),
        (LOGICAL_SECTOR_ITEM, virtual, SECTOR_SIZE.pack(disk.logical_sector_size)),
        (PHYSICAL_SECTOR_ITEM, virtual, SECTOR_SIZE.pack(disk.physical_sector_size)),
    ]
    if disk.parent_locator is not None:
        locator = _pack_parent_locator(disk.parent_locator)
        items.append((PARENT_LOCATOR_ITEM, ITEM_IS_REQUIRED, locator))
    return items


def _pack_metadata(items: list[tuple[uuid.UUID, int, bytes]]) -> bytes:
    """The metadata table, then the items' data from 64 KiB into the region on."""
    table = METADATA_TABLE_HEADER.pack(METADATA_SIGNATURE, 0, len(items))
    data = b""
    for item, flags, payload in items:
        offset = METADATA_TABLE_SIZE + len(data)
        table += METADATA_ENTRY.pack(item.bytes_le, offset, len(payload), flags)
        data += payload
    return table.ljust(METADATA_TABLE_SIZE, b"\0") + data


def _pack_parent_locator(keys: dict[str, str]) -> bytes:
    strings_at = LOCATOR_HEADER.size + LOCATOR_ENTRY.size * len(keys)
    table = LOCATOR_HEADER.pack(VHDX_PARENT_LOCATOR.bytes_le, 0, len(keys))
    strings = b""
    for key, value in keys.items():
        key_raw, value_raw = key.encode("utf-16-le"), value.encode("utf-16-le")
        key_at = strings_at + len(strings)
        strings += key_raw + value_raw
        table += LOCATOR_ENTRY.pack(key_at, key_at + len(key_raw), len(key_raw), len(value_raw))
    return table + strings


def _initial_bat(layout: Layout, data_start: int | None) -> list[int]:
    """All blocks absent, or, for a fixed disk, all present one after another."""
    bat = [0] * layout.bat_entries
    if data_start is not None:
        for number in range(layout.data_blocks):
            offset = data_start + number * layout.block_size
            bat[layout.bat_index(number)] = offset | PAYLOAD_FULLY_PRESENT
    return bat
