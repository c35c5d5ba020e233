"""Real VHD and VHDX disk files, written and read in pure Python.

The emulator's ``Msvm_ImageManagementService`` calls this module so that the disk files it
makes are ones third-party tools (qemu-img, Hyper-V itself) recognise. The formats follow
the public Microsoft specifications: the "Virtual Hard Disk Image Format Specification"
(VHD) and "[MS-VHDX]". This module holds the public API, the types both formats share and
the dispatch; ``vhdfmt_vhd`` and ``vhdfmt_vhdx`` hold the format internals.

Every file is opened for positional I/O (``pread``/``pwrite``), so no call depends on a
file position left behind by another.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import ntpath
import os
import pathlib
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol, TypeAlias, TypeVar

__all__ = [
    "MAX_CHAIN",
    "BrokenChain",
    "ChainBreak",
    "DiskFormat",
    "DiskInfo",
    "DiskType",
    "Note",
    "Parent",
    "VhdError",
    "check_chain",
    "convert",
    "create",
    "format_for_path",
    "parents",
    "read_data",
    "read_info",
    "reported_parent",
    "resize",
    "write_data",
]

#: The kinds of path a differencing disk records to find its parent ([MS-VHDX]'s parent
#: locator keys; a VHD's W2ru and W2ku locators are its relative and absolute ones).
RELATIVE_PATH = "relative_path"
VOLUME_PATH = "volume_path"
ABSOLUTE_PATH = "absolute_win32_path"
#: The order a parser tries them in. [MS-VHDX] 2.6.2.6.3: "relative_path, volume_path and
#: then absolute_path", so a parent moved together with its child is found beside it. The
#: VHD specification names no order; the emulator follows the VHDX one (W2ru, then W2ku).
LOCATOR_ORDER = (RELATIVE_PATH, VOLUME_PATH, ABSOLUTE_PATH)
_WIN32_PREFIX = "\\\\?\\"
_WIN32_UNC_PREFIX = "\\\\?\\UNC\\"

#: Holds a temporary file's name while the file exists (``emulator.staging``).
Note: TypeAlias = Callable[[pathlib.Path], contextlib.AbstractContextManager[None]]

#: Parents followed from one disk: deeper chains are not Hyper-V's (its checkpoints and
#: linked clones stay far below), and the bound keeps a walk short whatever the files say.
MAX_CHAIN = 16

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB

VHDX_FILE_SIGNATURE = b"vhdxfile"
_COPY_CHUNK = 1 * MIB
_NEW_FILE_MODE = 0o644

_E = TypeVar("_E", bound=enum.IntEnum)


class VhdError(Exception):
    """A disk file is invalid or unsupported, or a request on one cannot be honoured."""


class DiskFormat(enum.IntEnum):
    """Msvm_VirtualHardDiskSettingData.Format values."""

    VHD = 2
    VHDX = 3


class DiskType(enum.IntEnum):
    """Msvm_VirtualHardDiskSettingData.Type values."""

    FIXED = 2
    DYNAMIC = 3
    DIFFERENCING = 4


@dataclass(frozen=True)
class DiskInfo:
    """What the headers of a disk file say about the virtual disk."""

    format: DiskFormat
    type: DiskType
    virtual_size_bytes: int
    file_size_bytes: int
    block_size_bytes: int
    logical_sector_size: int
    physical_sector_size: int
    disk_id: str
    parent_path: str | None
    #: What a differencing disk records of the parent it was made from, as the
    #: identifiers it accepts (VHD: the parent's unique id; VHDX: its parent_linkage and
    #: parent_linkage2, the parent's DataWriteGuid); empty for other disks.
    parent_links: tuple[str, ...] = ()
    #: What a differencing disk made from this one records of it (VHD: its unique id,
    #: VHDX: its DataWriteGuid, which changes whenever its data does).
    link_id: str = ""
    #: When the parent a differencing VHD was made from was last written, as the child
    #: records it ("Parent Time Stamp"), in seconds since 1970 (UTC); None for other disks
    #: and for a VHDX, whose parent locator records no time.
    parent_timestamp: int | None = None
    #: A differencing disk's paths to its parent as (kind, path) in ``LOCATOR_ORDER``, a
    #: ``RELATIVE_PATH`` relative to the disk's own folder; empty for other disks.
    parent_locators: tuple[tuple[str, str], ...] = ()


class ChainBreak(enum.Enum):
    """How a differencing disk's chain of parents is broken."""

    MISSING = "missing"
    CHANGED = "changed"
    LOOP = "loop"


#: Windows' words for each break: the virtual disk driver's errors
#: (ERROR_VHD_PARENT_VHD_NOT_FOUND, ERROR_VHD_CHILD_PARENT_ID_MISMATCH), as Hyper-V
#: reports them when a VM's disk does not open. A loop has no such error; the words are
#: the emulator's, after ValidateVirtualHardDisk's "Vhd differencing chain cycle detected".
_BREAK_TEXT = {
    ChainBreak.MISSING: "The chain of virtual hard disks is broken. The system cannot locate "
                        "the parent virtual hard disk for the differencing disk. (0xC03A000D)",
    ChainBreak.CHANGED: "The chain of virtual hard disks is corrupted. There is a mismatch in "
                        "the identifiers of the parent virtual hard disk and differencing "
                        "disk. (0xC03A000E)",
    ChainBreak.LOOP: "The chain of virtual hard disks loops: a differencing chain cycle was "
                     "detected",
}
_BREAK_DETAIL = {
    ChainBreak.MISSING: "its parent {parent} cannot be found",
    ChainBreak.CHANGED: "its parent {parent} is not the disk it was made from (it changed or "
                        "was replaced since)",
    ChainBreak.LOOP: "its parent {parent} is already in the chain",
}


class BrokenChain(VhdError):
    """The differencing disk ``child`` names a parent that ``why`` it cannot stand on:
    missing, not the disk it was made from, or already in the chain (both paths as the
    caller names files)."""

    def __init__(self, child: str, parent: str, why: ChainBreak) -> None:
        super().__init__(f"{child}: {_BREAK_TEXT[why]}: "
                         f"{_BREAK_DETAIL[why].format(parent=parent or '(none named)')}")
        self.child = child
        self.parent = parent
        self.why = why

    @property
    def windows_text(self) -> str:
        """Windows' own words for the break, naming no file."""
        return _BREAK_TEXT[self.why]


@dataclass(frozen=True)
class CreateRequest:
    """A validated-by-the-caller creation request handed to a format backend.

    Zero in ``block_size_bytes`` and the sector sizes means "the format's default". For a
    differencing disk ``parent`` is the local parent file, ``parent_locator`` the Windows
    path to record and ``relative_locator`` the parent's path relative to the child.
    """

    disk_type: DiskType
    size_bytes: int
    block_size_bytes: int = 0
    logical_sector_size: int = 0
    physical_sector_size: int = 0
    parent: pathlib.Path | None = None
    parent_locator: str | None = None
    relative_locator: str | None = None


class DiskFile:
    """An open disk file on which every read and write names its own offset.

    ``path`` is the name used in messages: for a file still being created under a
    temporary name, it is the name the file will have; for a file of a chain of parents,
    the Windows path the chain names it by.
    """

    def __init__(self, fd: int, path: pathlib.PurePath) -> None:
        self.fd = fd
        self.path = path

    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes; bytes past the end of the file read as zeros."""
        data = os.pread(self.fd, length, offset) if length else b""
        return data + bytes(length - len(data))

    def read_exact(self, offset: int, length: int, what: str) -> bytes:
        """Read a structure that must lie wholly inside the file."""
        if offset < 0 or offset + length > self.size():
            raise VhdError(f"{self.path}: the {what} at offset {offset} is cut short")
        return os.pread(self.fd, length, offset)

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def sync(self) -> None:
        os.fsync(self.fd)

    def data_ranges(self, start: int, end: int) -> list[tuple[int, int]]:
        """The (offset, length) ranges of [start, end) that are not holes of a sparse file."""
        try:
            return _data_ranges(self.fd, start, end)
        except (OSError, AttributeError):  # no SEEK_DATA here: treat everything as data
            return [(start, end - start)] if end > start else []


class DiskImage(Protocol):
    """An open VHD or VHDX file, as both format backends present it."""

    def info(self) -> DiskInfo: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> None: ...

    def data_extents(self) -> list[tuple[int, int]]:
        """Guest (offset, length) ranges that may hold non-zero data."""
        ...

    def grow(self, new_size_bytes: int) -> None: ...


@dataclass(frozen=True)
class _Backend:
    create: Callable[[DiskFile, CreateRequest], None]
    open_image: Callable[[DiskFile], DiskImage]


# --- public API ---------------------------------------------------------------------------


#: The disk format each file name ending implies, in any case: a checkpoint's differencing
#: disk is an .avhdx (.avhd of a VHD), which Hyper-V makes, opens and attaches as a disk
#: of its format.
_FORMATS_BY_SUFFIX = {".vhd": DiskFormat.VHD, ".avhd": DiskFormat.VHD,
                      ".vhdx": DiskFormat.VHDX, ".avhdx": DiskFormat.VHDX}


def format_for_path(path: str) -> DiskFormat:
    """The disk format a file name implies (``_FORMATS_BY_SUFFIX``)."""
    fmt = _FORMATS_BY_SUFFIX.get(pathlib.PureWindowsPath(path).suffix.lower())
    if fmt is None:
        raise VhdError(f"{path}: not a virtual disk file name "
                       "(expected .vhd, .vhdx, .avhd or .avhdx)")
    return fmt


def create(
    path: pathlib.Path,
    fmt: DiskFormat,
    disk_type: DiskType,
    size_bytes: int,
    *,
    parent: pathlib.Path | None = None,
    parent_locator: str | None = None,
    block_size_bytes: int = 0,
    logical_sector_size: int = 0,
    physical_sector_size: int = 0,
    note: Note | None = None,
    locator: str | None = None,
) -> DiskInfo:
    """Create a new disk file; it appears under ``path`` only once it is complete (its
    temporary name held by ``note`` meanwhile). A differencing disk records where its
    parent is found: ``parent_locator`` (the Windows path of ``parent``; ``parent``
    itself when not given) and that path relative to the disk's own ``locator`` (its
    Windows path; ``path`` when not given), as Hyper-V records both."""
    fmt, disk_type = _enum(DiskFormat, fmt, path), _enum(DiskType, disk_type, path)
    _require_new_file(path, fmt)
    request = CreateRequest(
        disk_type, size_bytes, block_size_bytes, logical_sector_size, physical_sector_size,
        parent, parent_locator,
    )
    if disk_type is DiskType.DIFFERENCING:
        request = _with_parent(path, fmt, request, locator)
    elif parent is not None or parent_locator is not None:
        raise VhdError(f"{path}: only a differencing disk can have a parent")
    with _staged(path, note) as file:
        _backend(fmt).create(file, request)
    return read_info(path)


def read_info(path: pathlib.Path, *, name: str | None = None) -> DiskInfo:
    """Parse and check the headers of a VHD or VHDX file; VhdError naming it as ``name``
    (a Windows path) when given, else as ``path``."""
    with _opened(path, writable=False, name=name) as image:
        return image.info()


def resize(path: pathlib.Path, new_size_bytes: int, *, locator: str | None = None,
           local_of: Callable[[str], pathlib.Path | None] | None = None) -> DiskInfo:
    """Grow a fixed or dynamic disk, or a differencing VHDX; the guest data already there
    is kept. A differencing VHD does not grow: Microsoft's ResizeVirtualHardDisk page
    lists fixed and dynamic VHD and VHDX and differencing VHDX as the disks that grow.
    With ``local_of``, a differencing disk's chain is opened first, as ``convert`` opens
    it (``check_chain`` from ``locator``, the Windows path of ``path``): Hyper-V opens a
    disk with its parents to change it, so one whose chain is broken does not grow
    (BrokenChain) and is left as it was. Messages name the disk ``locator`` when given."""
    with _opened(path, writable=True, name=locator) as image:
        before = image.info()
        if before.type is DiskType.DIFFERENCING and local_of is not None:
            check_chain(locator or str(path), local_of)
        if before.format is DiskFormat.VHD:
            _require_not_differencing(before, locator or path, "resize")
        if new_size_bytes < before.virtual_size_bytes:
            raise VhdError(
                f"{locator or path}: cannot shrink a disk ({before.virtual_size_bytes} "
                f"bytes) to {new_size_bytes} bytes"
            )
        image.grow(new_size_bytes)
        if before.type is not DiskType.DIFFERENCING:  # a differencing disk's tail is its
            _zero_tail(image, before)  # parent's: past the parent's end, zeros
        return image.info()


def convert(
    source: pathlib.Path, destination: pathlib.Path, fmt: DiskFormat, disk_type: DiskType,
    note: Note | None = None, *, locator: str | None = None,
    local_of: Callable[[str], pathlib.Path | None] | None = None,
) -> DiskInfo:
    """Copy a disk's guest data into a new fixed or dynamic file of another format/type.

    A differencing source is merged with its parents into the new file, as Hyper-V does:
    its chain is opened as ``check_chain`` opens it (BrokenChain when a parent is
    missing, not the disk it was made from, or already in the chain), from ``locator``
    (the Windows path of ``source``; ``source`` itself when not given), ``local_of``
    finding the file a path names. Only chains whose differencing disks hold no data of
    their own (all the emulator makes) are merged: their guest data is their base
    disk's. The source and its parents are not changed.
    """
    fmt, disk_type = _enum(DiskFormat, fmt, destination), _enum(DiskType, disk_type, destination)
    if disk_type not in (DiskType.FIXED, DiskType.DYNAMIC):
        raise VhdError(f"{destination}: can only convert to a fixed or dynamic disk")
    _require_new_file(destination, fmt)
    with _opened(source, writable=False) as src:
        info = src.info()
    base = _base_of_chain(source, info, locator or str(source), local_of)
    with _opened(base, writable=False) as data:
        logical, physical = _sector_sizes_to_keep(info, fmt)
        request = CreateRequest(disk_type, info.virtual_size_bytes, 0, logical, physical)
        with _staged(destination, note) as file:
            backend = _backend(fmt)
            backend.create(file, request)
            _copy_data(data, backend.open_image(file))
    return read_info(destination)


def _base_of_chain(source: pathlib.Path, info: DiskInfo, locator: str,
                   local_of: Callable[[str], pathlib.Path | None] | None) -> pathlib.Path:
    """The fixed or dynamic disk whose guest data the disk ``source`` (its Windows path
    ``locator``) shows: itself, or the end of its chain of parents (``check_chain``);
    VhdError when a differencing disk on the way holds data of its own, or the chain
    is broken or deeper than ``MAX_CHAIN``."""
    if info.type is not DiskType.DIFFERENCING:
        return source
    if local_of is None:
        raise VhdError(f"{source}: cannot convert a differencing disk without its parents")
    _require_no_data_of_its_own(source)
    chain = check_chain(locator, local_of)
    for local, parent_info in chain:
        if parent_info.type is DiskType.DIFFERENCING:
            _require_no_data_of_its_own(local)
    base, base_info = chain[-1]
    if base_info.type is DiskType.DIFFERENCING:
        raise VhdError(f"{locator}: the chain of parents is deeper than {MAX_CHAIN} disks")
    return base


def _require_no_data_of_its_own(path: pathlib.Path) -> None:
    with _opened(path, writable=False) as image:
        if image.data_extents():
            raise VhdError(f"{path}: guest data of a differencing disk is not readable here "
                           "(the emulator merges differencing disks without data of their "
                           "own only)")


@dataclass(frozen=True)
class Parent:
    """One parent of a disk's chain as ``parents`` reaches it: the differencing disk
    ``child`` (its headers ``child_info``) names the parent ``path``; ``local`` is its
    file, None when it cannot be found. ``looped``: that file is already in the chain.
    ``info`` is its headers when it was read, else None (missing, looped, or ``error``:
    why its file is no valid disk). Paths are named as the walk's caller names files."""

    child: str
    child_info: DiskInfo
    path: str
    local: pathlib.Path | None = None
    looped: bool = False
    info: DiskInfo | None = None
    error: VhdError | OSError | None = None

    @property
    def made_from(self) -> bool:
        """Whether the parent is the disk its child was made from: its identity
        (``link_id``) is one the child records (``parent_links``).

        A VHD child records its parent's unique id and, in "Parent Time Stamp", the
        parent's modification time when the child was made (``vhdfmt_vhd``: the file's
        last write). The VHD specification says both "should be checked" ("Modification
        of Parent Hard Disk Image"), a recommendation where its requirements say "must",
        and does not say what the stored time is compared with (a VHD holds no time of
        its last change; its footer's Time Stamp is when it was made). Microsoft
        documents the field (GET_VIRTUAL_DISK_INFO_PARENT_TIMESTAMP) and an error for a
        mismatch (0xC03A000F), not when Windows raises it. The emulator compares the id
        alone, the emulator's choice: a parent copied by a tool that does not keep file
        times keeps its id, and the id mismatch is the break Windows names for a
        replaced parent. A VHDX records no time: its DataWriteGuid, which every write
        changes, is what [MS-VHDX] has a parser verify."""
        links = {link.lower() for link in self.child_info.parent_links}
        return self.info is not None and self.info.link_id.lower() in links


def parents(path: str, local_of: Callable[[str], pathlib.Path | None]) -> Iterator[Parent]:
    """Walk the chain of parents of the disk ``path``, nearest first, as far as
    ``MAX_CHAIN`` parents: one ``Parent`` for each, the walk ending after a parent that
    is missing, looped or unreadable, or is no differencing disk itself. ``local_of``
    gives the local file a path names (``path`` and the parent locators, Windows paths),
    None when there is no such file; a parent is looked for as ``parent_candidates``
    says. VhdError (or OSError) when ``path`` itself cannot be found or read. Nothing is
    written, not even a stale locator (which [MS-VHDX] has an implementation update once
    a chain opened: the emulator's choice, so that checking a chain changes no file);
    whether a parent is the disk its child was made from is the caller's to judge
    (``Parent.made_from``)."""
    local = local_of(path)
    if local is None:
        raise VhdError(f"{path}: the file cannot be found")
    info = read_info(local, name=path)
    seen = {local.resolve()}
    for _ in range(MAX_CHAIN):
        if info.type is not DiskType.DIFFERENCING:
            return
        parent, parent_local = _find_parent(path, info, local_of)
        if parent_local is None:
            yield Parent(path, info, parent)
            return
        if parent_local.resolve() in seen:
            yield Parent(path, info, parent, parent_local, looped=True)
            return
        try:
            parent_info = read_info(parent_local, name=parent)
        except (VhdError, OSError) as error:
            yield Parent(path, info, parent, parent_local, error=error)
            return
        yield Parent(path, info, parent, parent_local, info=parent_info)
        seen.add(parent_local.resolve())
        path, info = parent, parent_info


def parent_candidates(path: str, info: DiskInfo) -> tuple[str, ...]:
    """The paths where the differencing disk ``path`` (its headers ``info``) looks for
    its parent, in the order they are tried (``LOCATOR_ORDER``): the relative locator
    taken from ``path``'s folder, then the volume and absolute ones, a Win32 ``\\\\?\\``
    prefix dropped. A disk whose headers record no locator (an old VHD keeping only the
    parent's name) is looked for by ``parent_path``. When none holds the parent, the
    last one tried is the path named: the absolute one, the recorded locator the disk's
    settings report then too (``reported_parent``; Microsoft does not say which path its
    error names: the emulator's choice)."""
    found: list[str] = []
    for kind, text in info.parent_locators:
        candidate = _beside(path, text) if kind == RELATIVE_PATH else _win32_path(text)
        if candidate and candidate not in found:
            found.append(candidate)
    if not found and info.parent_path:
        found.append(info.parent_path)
    return tuple(found)


def _find_parent(path: str, info: DiskInfo, local_of: Callable[[str], pathlib.Path | None]
                 ) -> tuple[str, pathlib.Path | None]:
    """The first of ``parent_candidates`` that names a file, and that file; else the
    last candidate and None."""
    named = ""
    for named in parent_candidates(path, info):
        local = local_of(named)
        if local is not None:
            return named, local
    return named, None


def reported_parent(path: str, info: DiskInfo,
                    local_of: Callable[[str], pathlib.Path | None]) -> str | None:
    """The parent the disk ``path`` (its headers ``info``) reports, as
    Msvm_VirtualHardDiskSettingData.ParentPath: the file its parent resolves to (the first
    of ``parent_candidates`` that names one, as ``parents`` opens the chain), else the
    last of them, the one a broken chain is named by (``check_chain``, so a failed
    ValidateVirtualHardDisk's Parent: the absolute locator, its Win32 ``\\\\?\\`` prefix
    dropped); None for a disk that is no differencing disk.

    Microsoft's GET_VIRTUAL_DISK_INFO (virtdisk.h) documents the parent's location with
    ParentResolved: when the parent backing store was resolved, the location is "the path
    of the parent backing store"; when not, "all of the parent paths present in the search
    list". The Msvm_VirtualHardDiskSettingData page says only "The parent of the virtual
    hard disk". So a chain moved together to another folder, whose parent is found by its
    relative locator, reports the parent beside it, not the folder it was made in. An
    unresolved parent is reported by the last path it was looked for at, the absolute
    locator (the emulator's choice: ParentPath is one path, not Windows' list). A file found
    that is not the disk its child was made from is still the one reported, as the chain
    walk stands on it and breaks there."""
    if info.type is not DiskType.DIFFERENCING:
        return info.parent_path
    named, _ = _find_parent(path, info, local_of)
    return named or info.parent_path


def _beside(path: str, relative: str) -> str:
    """The Windows path ``relative`` names from the folder of the file ``path``."""
    return ntpath.normpath(ntpath.join(ntpath.dirname(path), relative))


def _win32_path(text: str) -> str:
    """A Win32 path without its ``\\\\?\\`` prefix ([MS-VHDX]'s example absolute_win32_path
    carries one): ``\\\\?\\D:\\x`` is ``D:\\x``, ``\\\\?\\UNC\\srv\\share\\x`` is
    ``\\\\srv\\share\\x``. A volume path (``\\\\?\\Volume{...}``) is kept: the emulated
    host has no volume GUIDs, so it names no file there."""
    if text[:len(_WIN32_UNC_PREFIX)].upper() == _WIN32_UNC_PREFIX:
        return "\\\\" + text[len(_WIN32_UNC_PREFIX):]
    rest = text[len(_WIN32_PREFIX):]
    if text.startswith(_WIN32_PREFIX) and len(rest) > 1 and rest[1] == ":":
        return rest
    return text


def check_chain(path: str, local_of: Callable[[str], pathlib.Path | None]
                ) -> tuple[tuple[pathlib.Path, DiskInfo], ...]:
    """Open the disk ``path`` and its chain of parents (``parents``) as Hyper-V opens a
    VM's disk: BrokenChain when a differencing disk's parent cannot be found, is not the
    disk it was made from, or is already in the chain; VhdError when a file of the chain
    is no valid disk. Messages name the paths as given. Nothing is written. The parents'
    files and headers, nearest first (none for a disk that is no differencing disk)."""
    opened: list[tuple[pathlib.Path, DiskInfo]] = []
    for parent in parents(path, local_of):
        if parent.local is None:
            raise BrokenChain(parent.child, parent.path, ChainBreak.MISSING)
        if parent.looped:
            raise BrokenChain(parent.child, parent.path, ChainBreak.LOOP)
        if parent.error is not None:
            raise parent.error
        if parent.info is None or not parent.made_from:
            raise BrokenChain(parent.child, parent.path, ChainBreak.CHANGED)
        opened.append((parent.local, parent.info))
    return tuple(opened)


def read_data(path: pathlib.Path, offset: int, length: int) -> bytes:
    """Read guest-visible bytes of a fixed or dynamic disk."""
    with _opened(path, writable=False) as image:
        _check_access(image.info(), path, offset, length)
        return image.read(offset, length)


def write_data(path: pathlib.Path, offset: int, data: bytes) -> None:
    """Write guest-visible bytes of a fixed or dynamic disk, allocating blocks as needed."""
    with _opened(path, writable=True) as image:
        _check_access(image.info(), path, offset, len(data))
        image.write(offset, data)


# --- helpers the format backends share ----------------------------------------------------


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def split_by_block(offset: int, length: int, block_size: int) -> Iterator[tuple[int, int]]:
    """Split a byte range into (offset, length) pieces that never cross a block boundary."""
    end = offset + length
    while offset < end:
        piece = min(end, (offset // block_size + 1) * block_size) - offset
        yield offset, piece
        offset += piece


@contextlib.contextmanager
def open_disk_file(path: pathlib.Path, *, writable: bool,
                   name: str | None = None) -> Iterator[DiskFile]:
    """Open an existing regular file for positional I/O; VhdError if that is impossible.
    Messages name it as ``name`` (a Windows path) when given, else as ``path``."""
    shown: pathlib.PurePath = path if name is None else pathlib.PureWindowsPath(name)
    try:
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    except OSError as exc:
        raise VhdError(f"{shown}: cannot open the disk file: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VhdError(f"{shown}: not a regular file")
        yield DiskFile(fd, shown)
    finally:
        os.close(fd)


# --- internals ----------------------------------------------------------------------------


def _backend(fmt: DiskFormat) -> _Backend:
    # Imported here: the backends import this module's shared types.
    if fmt is DiskFormat.VHD:
        from hyperv_agent.emulator import vhdfmt_vhd

        return _Backend(vhdfmt_vhd.create, vhdfmt_vhd.open_image)
    from hyperv_agent.emulator import vhdfmt_vhdx

    return _Backend(vhdfmt_vhdx.create, vhdfmt_vhdx.open_image)


@contextlib.contextmanager
def _opened(path: pathlib.Path, *, writable: bool,
            name: str | None = None) -> Iterator[DiskImage]:
    with open_disk_file(path, writable=writable, name=name) as file:
        fmt = DiskFormat.VHDX if file.read(0, 8) == VHDX_FILE_SIGNATURE else DiskFormat.VHD
        yield _backend(fmt).open_image(file)


def _enum(kind: type[_E], value: int, path: pathlib.Path) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise VhdError(f"{path}: {value} is not a valid {kind.__name__}") from None


def _require_new_file(path: pathlib.Path, fmt: DiskFormat) -> None:
    if format_for_path(str(path)) is not fmt:
        raise VhdError(f"{path}: the file name does not match the {fmt.name} format")
    if path.exists() or path.is_symlink():
        raise VhdError(f"{path}: the file already exists")


def _with_parent(path: pathlib.Path, fmt: DiskFormat, request: CreateRequest,
                 locator: str | None) -> CreateRequest:
    parent = request.parent
    if parent is None:
        raise VhdError(f"{locator or path}: a differencing disk needs a parent")
    # named as the caller names it (its Windows path), as the chain walk names its files
    parent_info = read_info(parent, name=request.parent_locator)
    if parent_info.format is not fmt:
        raise VhdError(f"{locator or path}: the parent {request.parent_locator or parent} is "
                       f"a {parent_info.format.name} file, not {fmt.name}")
    parent_locator = request.parent_locator or str(parent)
    relative = (_relative_locator(locator, parent_locator)
                if locator is not None and request.parent_locator
                else _local_relative_locator(path, parent))
    return replace(request, size_bytes=parent_info.virtual_size_bytes,
                   parent_locator=parent_locator, relative_locator=relative)


def _relative_locator(child: str, parent: str) -> str | None:
    """The Windows path ``parent`` relative to the folder of the Windows path ``child``,
    as [MS-VHDX]'s relative_path and the VHD's W2ru hold it: ``.\\base.vhdx`` beside the
    child, ``..\\t\\base.vhdx`` in a sibling folder. None when no such path leads there:
    the two lie on different drives or shares (or the parent is named by its volume),
    where a relative path would name a file on the child's drive; the specifications do
    not say what is recorded then, the emulator records the absolute path alone."""
    try:
        text = ntpath.relpath(_win32_path(parent), ntpath.dirname(_win32_path(child)))
    except ValueError:  # on different drives or shares
        return None
    return text if text.startswith("..") else ".\\" + text


def _local_relative_locator(child: pathlib.Path, parent: pathlib.Path) -> str:
    """The local file ``parent`` relative to the folder of ``child``, written the Windows
    way (for a disk made with no Windows paths)."""
    relative = os.path.relpath(parent.resolve(), child.resolve().parent)
    text = relative.replace(os.sep, "\\")
    return text if text.startswith("..") else ".\\" + text


@contextlib.contextmanager
def _staged(path: pathlib.Path, note: Note | None) -> Iterator[DiskFile]:
    """A new file under a temporary name, published under ``path`` only if all went well;
    ``note`` holds the temporary name from before it exists until it is gone."""
    staging = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    with note(staging) if note is not None else contextlib.nullcontext():
        fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
        try:
            try:
                yield DiskFile(fd, path)  # messages name the file being made
                os.fsync(fd)
            finally:
                os.close(fd)
            _publish(staging, path)
        finally:
            staging.unlink(missing_ok=True)


def _publish(staging: pathlib.Path, path: pathlib.Path) -> None:
    try:
        os.link(staging, path)  # fails, unlike rename, if someone made `path` meanwhile
    except FileExistsError as exc:
        raise VhdError(f"{path}: the file already exists") from exc
    except OSError:  # a file system without hard links
        if path.exists():
            raise VhdError(f"{path}: the file already exists") from None
        staging.replace(path)
    _sync_directory(path.parent)


def _sync_directory(directory: pathlib.Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _data_ranges(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    position = start
    while position < end:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: nothing but a hole up to the end
                raise
            break
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        ranges.append((data, hole - data))
        position = hole
    return ranges


def _require_not_differencing(info: DiskInfo, path: pathlib.Path | str, action: str) -> None:
    if info.type is DiskType.DIFFERENCING:
        raise VhdError(f"{path}: cannot {action} a differencing disk")


def _check_access(info: DiskInfo, path: pathlib.Path, offset: int, length: int) -> None:
    if info.type is DiskType.DIFFERENCING:
        raise VhdError(f"{path}: guest data of a differencing disk is not readable here")
    if offset < 0 or length < 0 or offset + length > info.virtual_size_bytes:
        raise VhdError(
            f"{path}: range {offset}+{length} lies outside the disk "
            f"({info.virtual_size_bytes} bytes)"
        )


def _sector_sizes_to_keep(info: DiskInfo, fmt: DiskFormat) -> tuple[int, int]:
    if info.format is fmt:
        return info.logical_sector_size, info.physical_sector_size
    return 0, 0


def _copy_data(source: DiskImage, destination: DiskImage) -> None:
    """Copy every non-zero chunk of guest data; zero chunks stay unallocated."""
    for start, length in source.data_extents():
        for offset, piece in split_by_block(start, length, _COPY_CHUNK):
            data = source.read(offset, piece)
            if data.count(0) != len(data):
                destination.write(offset, data)


def _zero_tail(image: DiskImage, before: DiskInfo) -> None:
    """After growing, the rest of the old last block must read as zeros."""
    old_size = before.virtual_size_bytes
    granule = max(before.block_size_bytes, before.logical_sector_size)
    end = min(image.info().virtual_size_bytes, round_up(old_size, granule))
    if end > old_size:
        tail = image.read(old_size, end - old_size)
        if tail.count(0) != len(tail):
            image.write(old_size, bytes(len(tail)))
