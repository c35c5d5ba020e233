"""Tests for the pure-Python VHD/VHDX writer and reader, checked against qemu-img."""

from __future__ import annotations

import enum
import json
import os
import pathlib
import shutil
import subprocess
from typing import Any

import pytest

from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.vhd import DiskFormat, DiskType, VhdError
from hyperv_agent.emulator.vhdfmt_vhdx import crc32c

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-img") is None and os.environ.get("CI") != "true",
    reason="qemu-img is not installed (in CI it must be)",
)

QEMU_FORMAT = {DiskFormat.VHD: "vpc", DiskFormat.VHDX: "vhdx"}
SUFFIX = {DiskFormat.VHD: ".vhd", DiskFormat.VHDX: ".vhdx"}
FORMATS = [DiskFormat.VHD, DiskFormat.VHDX]
FORMATS_AND_TYPES = [(f, t) for f in FORMATS for t in (DiskType.FIXED, DiskType.DYNAMIC)]
BLOCK = {DiskFormat.VHD: 2 * MIB, DiskFormat.VHDX: 32 * MIB}  # the default block sizes


# --- helpers ------------------------------------------------------------------------------


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True)


def qemu_info(path: pathlib.Path, fmt: DiskFormat) -> dict[str, Any]:
    out = qemu_img("info", "--output=json", "-f", QEMU_FORMAT[fmt], str(path)).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def qemu_raw(path: pathlib.Path, fmt: DiskFormat) -> bytes:
    """The whole guest-visible disk, as qemu-img converts it to raw."""
    raw = path.with_name(path.name + ".raw")
    qemu_img("convert", "-f", QEMU_FORMAT[fmt], "-O", "raw", str(path), str(raw))
    try:
        return raw.read_bytes()
    finally:
        raw.unlink()


def qemu_read(path: pathlib.Path, fmt: DiskFormat, offset: int, length: int) -> bytes:
    """Guest bytes at ``offset``, read by qemu-img through a raw window (cheap on huge disks)."""
    first, last = offset // 512 * 512, round_up(offset + length, 512)
    out = path.with_name(path.name + ".window")
    name = str(path).replace(",", ",,")
    options = (f"driver=raw,offset={first},size={last - first},file.driver={QEMU_FORMAT[fmt]},"
               f"file.file.driver=file,file.file.filename={name}")
    qemu_img("convert", "--image-opts", options, "-O", "raw", str(out))
    try:
        data = out.read_bytes()
    finally:
        out.unlink()
    return data[offset - first : offset - first + length]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def new_disk(tmp_path: pathlib.Path, fmt: DiskFormat, disk_type: DiskType, size: int,
             name: str = "disk", **options: Any) -> pathlib.Path:
    path = tmp_path / (name + SUFFIX[fmt])
    vhd.create(path, fmt, disk_type, size, **options)
    return path


def flip_byte(path: pathlib.Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x5A]))


def enum_id(value: object) -> str | None:
    """Test ids that read VHD-DYNAMIC rather than 2-3."""
    return value.name if isinstance(value, enum.Enum) else None


def pattern(length: int, seed: int) -> bytes:
    return bytes((seed + i * 7) % 251 + 1 for i in range(length))


# --- creation, recognised by qemu-img -----------------------------------------------------


@needs_qemu
@pytest.mark.parametrize(("fmt", "disk_type"), FORMATS_AND_TYPES, ids=enum_id)
def test_qemu_reports_format_and_exact_size_when_disk_created(
    tmp_path: pathlib.Path, fmt: DiskFormat, disk_type: DiskType
) -> None:
    size = 64 * MIB + 3 * 512  # not a block multiple, and not a CHS-representable size
    path = new_disk(tmp_path, fmt, disk_type, size)

    qemu = qemu_info(path, fmt)
    info = vhd.read_info(path)

    assert qemu["format"] == QEMU_FORMAT[fmt]
    assert qemu["virtual-size"] == size
    assert (info.format, info.type, info.virtual_size_bytes) == (fmt, disk_type, size)
    assert info.file_size_bytes == path.stat().st_size
    assert info.parent_path is None
    if fmt is DiskFormat.VHDX:
        assert "No errors" in qemu_img("check", "-f", "vhdx", str(path)).stdout


@pytest.mark.parametrize(
    ("fmt", "disk_type", "block", "logical", "physical"),
    [
        (DiskFormat.VHD, DiskType.FIXED, 0, 512, 512),
        (DiskFormat.VHD, DiskType.DYNAMIC, 2 * MIB, 512, 512),
        (DiskFormat.VHDX, DiskType.FIXED, 32 * MIB, 512, 4096),
        (DiskFormat.VHDX, DiskType.DYNAMIC, 32 * MIB, 512, 4096),
    ],
    ids=enum_id,
)
def test_create_applies_hyper_v_defaults_when_options_omitted(
    tmp_path: pathlib.Path, fmt: DiskFormat, disk_type: DiskType, block: int, logical: int,
    physical: int,
) -> None:
    info = vhd.read_info(new_disk(tmp_path, fmt, disk_type, 10 * MIB))

    assert info.block_size_bytes == block
    assert (info.logical_sector_size, info.physical_sector_size) == (logical, physical)


def test_create_honours_sector_and_block_sizes_when_given_for_vhdx(
    tmp_path: pathlib.Path,
) -> None:
    path = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DYNAMIC, 10 * MIB + 1,
                    block_size_bytes=8 * MIB, logical_sector_size=4096, physical_sector_size=512)

    info = vhd.read_info(path)

    assert info.virtual_size_bytes == 10 * MIB + 4096  # rounded up to the logical sector
    assert (info.block_size_bytes, info.logical_sector_size) == (8 * MIB, 4096)
    assert info.physical_sector_size == 512
    vhd.write_data(path, 10 * MIB, b"4k sectors")
    assert vhd.read_data(path, 10 * MIB, 10) == b"4k sectors"


def test_disk_ids_are_distinct_guids_when_two_disks_created(tmp_path: pathlib.Path) -> None:
    first = vhd.read_info(new_disk(tmp_path, DiskFormat.VHDX, DiskType.DYNAMIC, MIB, "a"))
    second = vhd.read_info(new_disk(tmp_path, DiskFormat.VHD, DiskType.DYNAMIC, MIB, "b"))

    assert first.disk_id != second.disk_id
    for disk_id in (first.disk_id, second.disk_id):
        assert disk_id == disk_id.lower() and len(disk_id) == 36 and "{" not in disk_id


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_fixed_disk_is_sparse_when_created_at_4_gib(
    tmp_path: pathlib.Path, fmt: DiskFormat
) -> None:
    path = new_disk(tmp_path, fmt, DiskType.FIXED, 4 * GIB)

    assert path.stat().st_size >= 4 * GIB
    assert path.stat().st_blocks * 512 < 10 * MIB
    assert vhd.read_info(path).virtual_size_bytes == 4 * GIB


# --- guest data ---------------------------------------------------------------------------


@needs_qemu
@pytest.mark.parametrize(("fmt", "disk_type"), FORMATS_AND_TYPES, ids=enum_id)
def test_qemu_reads_back_data_when_written_with_write_data(
    tmp_path: pathlib.Path, fmt: DiskFormat, disk_type: DiskType
) -> None:
    size = 72 * MIB
    path = new_disk(tmp_path, fmt, disk_type, size)
    writes = {
        0: pattern(700, 1),
        BLOCK[fmt] - 300: pattern(5000, 2),  # straddles a block boundary
        40 * MIB + 12345: pattern(3 * MIB, 3),  # spans several blocks
        size - 100: pattern(100, 4),  # the very end of the disk
    }
    for offset, data in writes.items():
        vhd.write_data(path, offset, data)

    raw = qemu_raw(path, fmt)

    assert len(raw) == size
    for offset, data in writes.items():
        assert raw[offset : offset + len(data)] == data
        assert vhd.read_data(path, offset, len(data)) == data
    assert raw[1 * MIB : 2 * MIB - 300] == bytes(MIB - 300)
    if fmt is DiskFormat.VHDX:
        assert "No errors" in qemu_img("check", "-f", "vhdx", str(path)).stdout


def test_dynamic_disk_allocates_only_written_blocks_when_written(
    tmp_path: pathlib.Path,
) -> None:
    path = new_disk(tmp_path, DiskFormat.VHD, DiskType.DYNAMIC, 1 * GIB)
    before = path.stat().st_size

    vhd.write_data(path, 100 * MIB, b"x")

    assert path.stat().st_size - before < 3 * MIB  # one 2 MiB block and its bitmap
    assert vhd.read_data(path, 100 * MIB - 1, 3) == b"\0x\0"


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_data_access_fails_when_range_outside_disk(tmp_path: pathlib.Path, fmt: DiskFormat) -> None:
    path = new_disk(tmp_path, fmt, DiskType.DYNAMIC, 4 * MIB)

    with pytest.raises(VhdError, match="outside"):
        vhd.write_data(path, 4 * MIB - 1, b"ab")
    with pytest.raises(VhdError, match="outside"):
        vhd.read_data(path, -1, 1)


# --- files made by qemu-img ---------------------------------------------------------------


@needs_qemu
@pytest.mark.parametrize(
    ("fmt", "options"),
    [(DiskFormat.VHD, "subformat=dynamic,force_size=on"), (DiskFormat.VHDX, "subformat=dynamic")],
    ids=enum_id,
)
def test_read_info_reports_type_and_size_when_file_made_by_qemu_img(
    tmp_path: pathlib.Path, fmt: DiskFormat, options: str
) -> None:
    path = tmp_path / ("qemu" + SUFFIX[fmt])
    qemu_img("create", "-q", "-f", QEMU_FORMAT[fmt], "-o", options, str(path), str(100 * MIB))

    info = vhd.read_info(path)

    assert (info.format, info.type, info.virtual_size_bytes) == (fmt, DiskType.DYNAMIC, 100 * MIB)
    assert info.file_size_bytes == path.stat().st_size


@needs_qemu
@pytest.mark.parametrize(
    ("fmt", "options"),
    [(DiskFormat.VHD, "subformat=dynamic,force_size=on"), (DiskFormat.VHDX, "subformat=dynamic")],
    ids=enum_id,
)
def test_qemu_reads_data_when_written_into_qemu_made_file(
    tmp_path: pathlib.Path, fmt: DiskFormat, options: str
) -> None:
    path = tmp_path / ("qemu" + SUFFIX[fmt])
    qemu_img("create", "-q", "-f", QEMU_FORMAT[fmt], "-o", options, str(path), str(40 * MIB))
    data = pattern(10_000, 9)

    vhd.write_data(path, 17 * MIB + 5, data)

    assert qemu_read(path, fmt, 17 * MIB + 5, len(data)) == data
    assert vhd.read_data(path, 17 * MIB + 5, len(data)) == data


# --- differencing disks -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_parent_path_round_trips_when_differencing_disk_created(
    tmp_path: pathlib.Path, fmt: DiskFormat
) -> None:
    parent = new_disk(tmp_path, fmt, DiskType.DYNAMIC, 96 * MIB, "base")
    locator = "C:\\ClusterStorage\\Volume1\\Templates\\base" + SUFFIX[fmt]

    child = new_disk(tmp_path, fmt, DiskType.DIFFERENCING, 0, "child", parent=parent,
                     parent_locator=locator)
    info = vhd.read_info(child)

    assert (info.format, info.type) == (fmt, DiskType.DIFFERENCING)
    assert info.parent_path == locator
    assert info.virtual_size_bytes == 96 * MIB
    assert info.disk_id != vhd.read_info(parent).disk_id


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_parent_path_defaults_to_parent_file_when_no_locator_given(
    tmp_path: pathlib.Path, fmt: DiskFormat
) -> None:
    parent = new_disk(tmp_path, fmt, DiskType.FIXED, 8 * MIB, "base")

    child = new_disk(tmp_path, fmt, DiskType.DIFFERENCING, 0, "child", parent=parent)

    assert vhd.read_info(child).parent_path == str(parent)


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_child_size_equals_parent_size_when_another_size_requested(
    tmp_path: pathlib.Path, fmt: DiskFormat
) -> None:
    parent = new_disk(tmp_path, fmt, DiskType.DYNAMIC, 24 * MIB + 512, "base")

    child = vhd.create(tmp_path / ("child" + SUFFIX[fmt]), fmt, DiskType.DIFFERENCING, 5 * GIB,
                       parent=parent)

    assert child.virtual_size_bytes == 24 * MIB + 512


def test_vhd_child_records_both_windows_locators_when_differencing_disk_created(
    tmp_path: pathlib.Path,
) -> None:
    parent = new_disk(tmp_path, DiskFormat.VHD, DiskType.DYNAMIC, 8 * MIB, "base")

    child = new_disk(tmp_path, DiskFormat.VHD, DiskType.DIFFERENCING, 0, "child", parent=parent,
                     parent_locator="D:\\vms\\base.vhd")
    raw = child.read_bytes()

    assert b"W2ku" in raw and b"W2ru" in raw
    assert "D:\\vms\\base.vhd".encode("utf-16-le") in raw
    assert ".\\base.vhd".encode("utf-16-le") in raw
    assert vhd.read_info(child).block_size_bytes == 2 * MIB


def test_vhdx_child_records_parent_locator_keys_when_differencing_disk_created(
    tmp_path: pathlib.Path,
) -> None:
    parent = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DYNAMIC, 8 * MIB, "base")

    child = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DIFFERENCING, 0, "child", parent=parent,
                     parent_locator="D:\\vms\\base.vhdx")
    raw = child.read_bytes()
    info = vhd.read_info(child)

    for key in ("parent_linkage", "relative_path", "absolute_win32_path"):
        assert key.encode("utf-16-le") in raw
    assert ".\\base.vhdx".encode("utf-16-le") in raw
    assert info.block_size_bytes == 1 * MIB
    assert (info.logical_sector_size, info.physical_sector_size) == (512, 4096)


def test_vhdx_child_records_volume_path_when_locator_is_volume_path(
    tmp_path: pathlib.Path,
) -> None:
    parent = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DYNAMIC, 8 * MIB, "base")
    locator = "\\\\?\\Volume{0b1c2d3e-0000-0000-0000-000000000000}\\vms\\base.vhdx"

    child = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DIFFERENCING, 0, "child",
                     parent=parent, parent_locator=locator)

    assert "volume_path".encode("utf-16-le") in child.read_bytes()
    assert vhd.read_info(child).parent_path == locator


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_create_fails_when_parent_missing(tmp_path: pathlib.Path, fmt: DiskFormat) -> None:
    child = tmp_path / ("child" + SUFFIX[fmt])

    with pytest.raises(VhdError, match="nothere"):
        vhd.create(child, fmt, DiskType.DIFFERENCING, 0, parent=tmp_path / "nothere.vhdx")
    with pytest.raises(VhdError, match="needs a parent"):
        vhd.create(child, fmt, DiskType.DIFFERENCING, 0)
    assert not child.exists()


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_create_fails_when_parent_is_of_the_other_format(
    tmp_path: pathlib.Path, fmt: DiskFormat
) -> None:
    other = DiskFormat.VHDX if fmt is DiskFormat.VHD else DiskFormat.VHD
    parent = new_disk(tmp_path, other, DiskType.DYNAMIC, 8 * MIB, "base")
    child = tmp_path / ("child" + SUFFIX[fmt])

    with pytest.raises(VhdError, match="parent"):
        vhd.create(child, fmt, DiskType.DIFFERENCING, 0, parent=parent)
    assert not child.exists()


def test_create_fails_when_parent_given_for_dynamic_disk(tmp_path: pathlib.Path) -> None:
    parent = new_disk(tmp_path, DiskFormat.VHD, DiskType.DYNAMIC, 8 * MIB, "base")

    with pytest.raises(VhdError, match="parent"):
        vhd.create(tmp_path / "d.vhd", DiskFormat.VHD, DiskType.DYNAMIC, MIB, parent=parent)


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_data_access_and_resize_fail_when_disk_is_differencing(
    tmp_path: pathlib.Path, fmt: DiskFormat
) -> None:
    parent = new_disk(tmp_path, fmt, DiskType.DYNAMIC, 8 * MIB, "base")
    child = new_disk(tmp_path, fmt, DiskType.DIFFERENCING, 0, "child", parent=parent)

    with pytest.raises(VhdError, match="differencing"):
        vhd.read_data(child, 0, 512)
    with pytest.raises(VhdError, match="differencing"):
        vhd.write_data(child, 0, b"x")


def test_differencing_vhd_does_not_grow(tmp_path: pathlib.Path) -> None:
    parent = new_disk(tmp_path, DiskFormat.VHD, DiskType.DYNAMIC, 8 * MIB, "base")
    child = new_disk(tmp_path, DiskFormat.VHD, DiskType.DIFFERENCING, 0, "child", parent=parent)

    with pytest.raises(VhdError, match="differencing"):
        vhd.resize(child, 16 * MIB)
    assert vhd.read_info(child).virtual_size_bytes == 8 * MIB


def _local_file(path: str) -> pathlib.Path | None:
    return pathlib.Path(path) if pathlib.Path(path).is_file() else None


def _chain(tmp_path: pathlib.Path, fmt: DiskFormat) -> tuple[pathlib.Path, ...]:
    """base <- mid <- top: a template, a linked clone of it, and a checkpoint of that."""
    base = new_disk(tmp_path, fmt, DiskType.DYNAMIC, 8 * MIB, "base")
    mid = new_disk(tmp_path, fmt, DiskType.DIFFERENCING, 0, "mid", parent=base)
    top = new_disk(tmp_path, fmt, DiskType.DIFFERENCING, 0, "top", parent=mid)
    return base, mid, top


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_a_chain_of_parents_opens_when_every_parent_is_the_one_its_child_was_made_from(
    tmp_path: pathlib.Path, fmt: DiskFormat,
) -> None:
    base, mid, top = _chain(tmp_path, fmt)
    vhd.check_chain(str(top), _local_file)
    vhd.check_chain(str(base), _local_file)  # a disk without parents
    assert vhd.read_info(top).parent_links == (vhd.read_info(mid).link_id,)


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
@pytest.mark.parametrize("gone", ["base", "mid"])
def test_a_chain_is_broken_naming_the_child_and_its_parent_when_a_parent_is_missing(
    tmp_path: pathlib.Path, fmt: DiskFormat, gone: str,
) -> None:
    base, mid, top = _chain(tmp_path, fmt)
    missing = {"base": base, "mid": mid}[gone]
    child = {"base": mid, "mid": top}[gone]
    missing.unlink()
    with pytest.raises(vhd.BrokenChain) as caught:
        vhd.check_chain(str(top), _local_file)
    assert (caught.value.child, caught.value.parent) == (str(child), str(missing))
    assert caught.value.why is vhd.ChainBreak.MISSING
    assert "The chain of virtual hard disks is broken" in str(caught.value)
    assert f"its parent {missing} cannot be found" in str(caught.value)


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_a_chain_is_broken_when_a_parent_was_replaced_by_another_disk_of_its_name(
    tmp_path: pathlib.Path, fmt: DiskFormat,
) -> None:
    base, mid, top = _chain(tmp_path, fmt)
    base.unlink()
    new_disk(tmp_path, fmt, DiskType.DYNAMIC, 8 * MIB, "base")  # a template sent again
    with pytest.raises(vhd.BrokenChain) as caught:
        vhd.check_chain(str(top), _local_file)
    assert (caught.value.child, caught.value.why) == (str(mid), vhd.ChainBreak.CHANGED)
    assert "mismatch in the identifiers" in str(caught.value)


def test_a_vhdx_chain_is_broken_when_its_parents_data_changed_after_the_child_was_made(
    tmp_path: pathlib.Path,
) -> None:
    """A VHDX child records its parent's DataWriteGuid, which a write to the parent
    changes: Hyper-V then refuses the chain. A VHD child records its parent's unique id,
    which stays, and its modification time, which is not compared
    (``vhd.Parent.made_from``: the emulator's choice)."""
    base, _, top = _chain(tmp_path, DiskFormat.VHDX)
    vhd.write_data(base, 0, b"changed under its clones")
    with pytest.raises(vhd.BrokenChain, match="mismatch in the identifiers"):
        vhd.check_chain(str(top), _local_file)

    base, mid, top = _chain(tmp_path, DiskFormat.VHD)
    vhd.write_data(base, 0, b"changed under its clones")
    for parent in (base, mid):  # a later time than the one the child recorded
        os.utime(parent, (parent.stat().st_atime, parent.stat().st_mtime + 3600))
    vhd.check_chain(str(top), _local_file)


def _on_drives(root: pathlib.Path) -> Any:
    """A ``local_of`` for Windows paths: ``C:\\x\\y`` is the file ``root/C/x/y``."""
    def local_of(path: str) -> pathlib.Path | None:
        pure = pathlib.PureWindowsPath(path)
        local = root.joinpath(pure.drive.rstrip(":"), *pure.parts[1:])
        return local if len(pure.drive) == 2 and local.is_file() else None
    return local_of


def _clone_on_drive_c(root: pathlib.Path, fmt: DiskFormat,
                      data: tuple[tuple[int, bytes], ...] = ()
                      ) -> tuple[pathlib.Path, pathlib.Path]:
    """C:\\templates\\base (holding ``data``, (offset, bytes) pairs) and its linked clone
    C:\\templates\\clone, made with their Windows paths as the image service makes them."""
    folder = root / "C" / "templates"
    folder.mkdir(parents=True)
    base = new_disk(folder, fmt, DiskType.DYNAMIC, 8 * MIB, "base")
    for offset, written in data:
        vhd.write_data(base, offset, written)
    clone = new_disk(folder, fmt, DiskType.DIFFERENCING, 0, "clone", parent=base,
                     parent_locator=f"C:\\templates\\base{SUFFIX[fmt]}",
                     locator=f"C:\\templates\\clone{SUFFIX[fmt]}")
    return base, clone


def _clone_moved_alone(root: pathlib.Path, fmt: DiskFormat) -> pathlib.Path:
    """``_clone_on_drive_c``'s clone moved alone to C:\\moved, its base to C:\\ (neither
    beside the clone nor where it was recorded): the chain is broken. The clone's file."""
    base, clone = _clone_on_drive_c(root, fmt)
    (root / "C" / "moved").mkdir()
    moved = clone.rename(root / "C" / "moved" / clone.name)
    base.rename(root / "C" / base.name)
    return moved


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_a_chain_moved_together_to_another_folder_opens_by_its_relative_locator(
    tmp_path: pathlib.Path, fmt: DiskFormat,
) -> None:
    """[MS-VHDX] has a parser try relative_path first: a template and its clone moved
    together still open, though the absolute path the clone records names nothing."""
    base, _ = _clone_on_drive_c(tmp_path, fmt)
    moved = tmp_path / "C" / "moved"
    base.parent.rename(moved)
    suffix = SUFFIX[fmt]

    vhd.check_chain(f"C:\\moved\\clone{suffix}", _on_drives(tmp_path))
    found = list(vhd.parents(f"C:\\moved\\clone{suffix}", _on_drives(tmp_path)))
    assert [(p.child, p.path) for p in found] == [
        (f"C:\\moved\\clone{suffix}", f"C:\\moved\\base{suffix}")]
    assert vhd.read_info(moved / f"clone{suffix}").parent_path == f"C:\\templates\\base{suffix}"
    assert vhd.reported_parent(f"C:\\moved\\clone{suffix}",
                               vhd.read_info(moved / f"clone{suffix}"),
                               _on_drives(tmp_path)) == f"C:\\moved\\base{suffix}"


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_a_clone_moved_alone_is_broken_naming_the_absolute_path_of_its_parent(
    tmp_path: pathlib.Path, fmt: DiskFormat,
) -> None:
    clone = _clone_moved_alone(tmp_path, fmt)
    suffix = SUFFIX[fmt]
    assert vhd.reported_parent(f"C:\\moved\\clone{suffix}", vhd.read_info(clone),
                               _on_drives(tmp_path)) == f"C:\\templates\\base{suffix}"

    with pytest.raises(vhd.BrokenChain) as caught:
        vhd.check_chain(f"C:\\moved\\clone{suffix}", _on_drives(tmp_path))
    assert caught.value.why is vhd.ChainBreak.MISSING
    assert caught.value.parent == f"C:\\templates\\base{suffix}"
    assert f"its parent C:\\templates\\base{suffix} cannot be found" in str(caught.value)


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_the_absolute_locator_still_finds_a_parent_when_only_the_clone_moved(
    tmp_path: pathlib.Path, fmt: DiskFormat,
) -> None:
    _, clone = _clone_on_drive_c(tmp_path, fmt)
    (tmp_path / "C" / "moved").mkdir()
    clone.rename(tmp_path / "C" / "moved" / clone.name)

    found = list(vhd.parents(f"C:\\moved\\{clone.name}", _on_drives(tmp_path)))
    assert [p.path for p in found] == [f"C:\\templates\\base{SUFFIX[fmt]}"]
    assert found[0].made_from


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_a_clone_records_its_parent_relative_to_its_own_windows_path(
    tmp_path: pathlib.Path, fmt: DiskFormat,
) -> None:
    """The relative locator follows the Windows paths (the local folders behind two
    drives or shares are no guide), and is left out where none leads to the parent."""
    base = new_disk(tmp_path, fmt, DiskType.DYNAMIC, 8 * MIB, "base")
    suffix = SUFFIX[fmt]
    sibling = new_disk(tmp_path, fmt, DiskType.DIFFERENCING, 0, "sibling", parent=base,
                       parent_locator=f"C:\\Templates\\base{suffix}",
                       locator=f"C:\\vms\\a\\sibling{suffix}")
    other = new_disk(tmp_path, fmt, DiskType.DIFFERENCING, 0, "other", parent=base,
                     parent_locator=f"\\\\fs\\pool\\base{suffix}",
                     locator=f"C:\\vms\\other{suffix}")

    assert vhd.read_info(sibling).parent_locators == (
        (vhd.RELATIVE_PATH, f"..\\..\\Templates\\base{suffix}"),
        (vhd.ABSOLUTE_PATH, f"C:\\Templates\\base{suffix}"))
    assert vhd.read_info(other).parent_locators == (
        (vhd.ABSOLUTE_PATH, f"\\\\fs\\pool\\base{suffix}"),)


def test_parent_candidates_follow_the_vhdx_order_without_win32_prefixes() -> None:
    """relative_path, volume_path, then absolute_win32_path ([MS-VHDX] 2.6.2.6.3), whose
    example carries the \\\\?\\ prefix."""
    info = vhd.DiskInfo(
        DiskFormat.VHDX, DiskType.DIFFERENCING, MIB, MIB, MIB, 512, 4096, "id",
        "\\\\?\\D:\\path2\\sub3\\parent.vhdx",
        parent_locators=(
            (vhd.RELATIVE_PATH, "..\\..\\path2\\sub3\\parent.vhdx"),
            (vhd.VOLUME_PATH, "\\\\?\\Volume{26A21BDA-A627-11D7-9931-806E6F6E6963}\\path2\\sub3"
                              "\\parent.vhdx"),
            (vhd.ABSOLUTE_PATH, "\\\\?\\D:\\path2\\sub3\\parent.vhdx")))

    assert vhd.parent_candidates("E:\\path1\\sub2\\child.vhdx", info) == (
        "E:\\path2\\sub3\\parent.vhdx",
        "\\\\?\\Volume{26A21BDA-A627-11D7-9931-806E6F6E6963}\\path2\\sub3\\parent.vhdx",
        "D:\\path2\\sub3\\parent.vhdx")


def test_differencing_vhdx_grows_and_keeps_its_parent(tmp_path: pathlib.Path) -> None:
    """Hyper-V grows a differencing VHDX (Microsoft's ResizeVirtualHardDisk page)."""
    parent = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DYNAMIC, 8 * MIB, "base")
    vhd.write_data(parent, 0, b"guest data")
    child = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DIFFERENCING, 0, "child",
                     parent=parent)

    info = vhd.resize(child, 300 * MIB)

    assert (info.type, info.virtual_size_bytes) == (DiskType.DIFFERENCING, 300 * MIB)
    again = vhd.read_info(child)
    assert (again.virtual_size_bytes, again.parent_path) == (300 * MIB, info.parent_path)
    merged = tmp_path / "merged.vhdx"
    vhd.convert(child, merged, DiskFormat.VHDX, DiskType.DYNAMIC, local_of=_local_file)
    assert vhd.read_info(merged).virtual_size_bytes == 300 * MIB
    assert vhd.read_data(merged, 0, 10) == b"guest data"
    assert vhd.read_data(merged, 299 * MIB, 512) == bytes(512)


# --- resize -------------------------------------------------------------------------------


@needs_qemu
@pytest.mark.parametrize(("fmt", "disk_type"), FORMATS_AND_TYPES, ids=enum_id)
def test_qemu_sees_new_size_and_old_data_when_disk_grown(
    tmp_path: pathlib.Path, fmt: DiskFormat, disk_type: DiskType
) -> None:
    old_size = 20 * MIB + 512
    path = new_disk(tmp_path, fmt, disk_type, old_size)
    head, tail = pattern(4096, 5), pattern(512, 6)
    vhd.write_data(path, 0, head)
    vhd.write_data(path, old_size - 512, tail)

    info = vhd.resize(path, 50 * MIB)
    vhd.write_data(path, 50 * MIB - 3, b"end")
    raw = qemu_raw(path, fmt)

    assert info.virtual_size_bytes == 50 * MIB
    assert qemu_info(path, fmt)["virtual-size"] == 50 * MIB
    assert raw[:4096] == head
    assert raw[old_size - 512 : old_size] == tail
    assert raw[old_size : 50 * MIB - 3] == bytes(50 * MIB - 3 - old_size)  # no stale footer
    assert raw[-3:] == b"end"
    assert vhd.read_info(path).type is disk_type
    if fmt is DiskFormat.VHDX:
        assert "No errors" in qemu_img("check", "-f", "vhdx", str(path)).stdout


@needs_qemu
@pytest.mark.parametrize(
    ("fmt", "options", "new_size"),
    [
        (DiskFormat.VHD, {}, 2 * GIB),  # 1 GiB of entries fill the BAT's sector: it must move
        (DiskFormat.VHDX, {"block_size_bytes": MIB}, 200 * GIB),  # over a 1 MiB BAT region
    ],
    ids=enum_id,
)
def test_block_table_moves_and_data_stays_when_dynamic_disk_outgrows_it(
    tmp_path: pathlib.Path, fmt: DiskFormat, options: dict[str, Any], new_size: int
) -> None:
    path = new_disk(tmp_path, fmt, DiskType.DYNAMIC, 64 * MIB, **options)
    early = pattern(3000, 7)
    vhd.write_data(path, 10 * MIB, early)

    vhd.resize(path, new_size)
    vhd.write_data(path, new_size - 4096, b"far away")

    assert qemu_info(path, fmt)["virtual-size"] == new_size
    assert qemu_read(path, fmt, 10 * MIB, len(early)) == early
    assert qemu_read(path, fmt, new_size - 4096, 8) == b"far away"
    assert vhd.read_data(path, 10 * MIB, len(early)) == early
    if fmt is DiskFormat.VHDX:
        assert "No errors" in qemu_img("check", "-f", "vhdx", str(path)).stdout


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_resize_fails_when_shrinking(tmp_path: pathlib.Path, fmt: DiskFormat) -> None:
    path = new_disk(tmp_path, fmt, DiskType.DYNAMIC, 16 * MIB)

    with pytest.raises(VhdError, match="shrink"):
        vhd.resize(path, 8 * MIB)
    assert vhd.read_info(path).virtual_size_bytes == 16 * MIB


@pytest.mark.parametrize(
    ("fmt", "limit"), [(DiskFormat.VHD, 2040 * GIB), (DiskFormat.VHDX, 64 * TIB)], ids=enum_id
)
def test_resize_fails_when_above_format_limit(
    tmp_path: pathlib.Path, fmt: DiskFormat, limit: int
) -> None:
    path = new_disk(tmp_path, fmt, DiskType.DYNAMIC, 16 * MIB)

    with pytest.raises(VhdError):
        vhd.resize(path, limit + 4096)
    assert vhd.read_info(path).virtual_size_bytes == 16 * MIB


def test_resize_keeps_size_when_new_size_equal(tmp_path: pathlib.Path) -> None:
    path = new_disk(tmp_path, DiskFormat.VHD, DiskType.FIXED, 16 * MIB)
    before = path.read_bytes()

    info = vhd.resize(path, 16 * MIB)

    assert info.virtual_size_bytes == 16 * MIB
    assert path.read_bytes() == before


# --- convert ------------------------------------------------------------------------------


@needs_qemu
@pytest.mark.parametrize(
    ("source_fmt", "source_type", "fmt", "disk_type"),
    [
        (DiskFormat.VHD, DiskType.DYNAMIC, DiskFormat.VHDX, DiskType.FIXED),
        (DiskFormat.VHD, DiskType.FIXED, DiskFormat.VHDX, DiskType.DYNAMIC),
        (DiskFormat.VHDX, DiskType.DYNAMIC, DiskFormat.VHD, DiskType.DYNAMIC),
        (DiskFormat.VHDX, DiskType.FIXED, DiskFormat.VHD, DiskType.FIXED),
        (DiskFormat.VHDX, DiskType.DYNAMIC, DiskFormat.VHDX, DiskType.FIXED),
    ],
    ids=enum_id,
)
def test_guest_data_is_kept_when_disk_converted(
    tmp_path: pathlib.Path, source_fmt: DiskFormat, source_type: DiskType, fmt: DiskFormat,
    disk_type: DiskType,
) -> None:
    size = 40 * MIB + 512
    source = new_disk(tmp_path, source_fmt, source_type, size, "source")
    for offset, seed in ((0, 1), (3 * MIB - 7, 2), (33 * MIB, 3), (size - 1000, 4)):
        vhd.write_data(source, offset, pattern(1000, seed))
    source_bytes = source.read_bytes()
    destination = tmp_path / ("destination" + SUFFIX[fmt])

    info = vhd.convert(source, destination, fmt, disk_type)

    assert (info.format, info.type, info.virtual_size_bytes) == (fmt, disk_type, size)
    assert qemu_raw(destination, fmt) == qemu_raw(source, source_fmt)
    assert source.read_bytes() == source_bytes
    if disk_type is DiskType.DYNAMIC:  # the empty blocks stayed unallocated
        assert destination.stat().st_blocks * 512 < 12 * MIB
    if (fmt, disk_type) == (DiskFormat.VHD, DiskType.DYNAMIC):
        assert destination.stat().st_size < 12 * MIB  # 5 of 21 blocks


def test_convert_fails_when_destination_type_is_differencing(tmp_path: pathlib.Path) -> None:
    source = new_disk(tmp_path, DiskFormat.VHD, DiskType.DYNAMIC, 8 * MIB, "source")

    with pytest.raises(VhdError, match="fixed or dynamic"):
        vhd.convert(source, tmp_path / "d.vhdx", DiskFormat.VHDX, DiskType.DIFFERENCING)
    assert not (tmp_path / "d.vhdx").exists()


def test_convert_fails_when_source_is_differencing(tmp_path: pathlib.Path) -> None:
    parent = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DYNAMIC, 8 * MIB, "base")
    child = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DIFFERENCING, 0, "child", parent=parent)

    with pytest.raises(VhdError, match="differencing"):
        vhd.convert(child, tmp_path / "d.vhd", DiskFormat.VHD, DiskType.DYNAMIC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.vhdx", "child.vhdx"]


@pytest.mark.parametrize("fmt", [DiskFormat.VHD, DiskFormat.VHDX], ids=enum_id)
def test_differencing_chain_is_merged_into_a_standalone_disk_when_converted(
    tmp_path: pathlib.Path, fmt: DiskFormat,
) -> None:
    parent = new_disk(tmp_path, fmt, DiskType.DYNAMIC, 8 * MIB, "base")
    vhd.write_data(parent, 4096, pattern(1000, 5))
    child = new_disk(tmp_path, fmt, DiskType.DIFFERENCING, 0, "child", parent=parent)
    grandchild = new_disk(tmp_path, fmt, DiskType.DIFFERENCING, 0, "leaf", parent=child)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    located: list[str] = []

    def local_of(path: str) -> pathlib.Path | None:
        located.append(path)
        return _local_file(path)

    merged = tmp_path / ("merged" + SUFFIX[fmt])
    info = vhd.convert(grandchild, merged, fmt, DiskType.DYNAMIC, local_of=local_of)

    assert (info.type, info.parent_path, info.virtual_size_bytes) == (
        DiskType.DYNAMIC, None, 8 * MIB)
    assert vhd.read_data(merged, 4096, 1000) == pattern(1000, 5)
    assert [path for path in located if _local_file(path)] == [
        str(grandchild), str(child), str(parent)]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p != merged} == before


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
@pytest.mark.parametrize("disk_type", [DiskType.FIXED, DiskType.DYNAMIC], ids=enum_id)
def test_a_clone_moved_together_with_its_parent_converts_to_the_flattened_chain(
    tmp_path: pathlib.Path, fmt: DiskFormat, disk_type: DiskType,
) -> None:
    """The chain is opened as a start opens it: a template and its clone moved together
    convert, the parent found beside the clone by its relative locator, though the
    absolute path the clone records names nothing any more."""
    base, _ = _clone_on_drive_c(tmp_path, fmt, ((4096, pattern(1000, 7)),
                                                (5 * MIB, pattern(3000, 8))))
    moved = tmp_path / "C" / "moved"
    base.parent.rename(moved)
    suffix = SUFFIX[fmt]
    before = {p.name: p.read_bytes() for p in moved.iterdir()}
    merged = tmp_path / "C" / ("merged" + suffix)

    info = vhd.convert(moved / f"clone{suffix}", merged, fmt, disk_type,
                       locator=f"C:\\moved\\clone{suffix}", local_of=_on_drives(tmp_path))

    assert (info.type, info.parent_path, info.virtual_size_bytes) == (disk_type, None, 8 * MIB)
    assert vhd.read_data(merged, 0, 8 * MIB) == vhd.read_data(moved / f"base{suffix}", 0,
                                                              8 * MIB)
    assert {p.name: p.read_bytes() for p in moved.iterdir()} == before


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_a_clone_moved_alone_does_not_convert_and_names_its_missing_parent(
    tmp_path: pathlib.Path, fmt: DiskFormat,
) -> None:
    clone = _clone_moved_alone(tmp_path, fmt)
    suffix = SUFFIX[fmt]
    merged = tmp_path / "C" / ("merged" + suffix)

    with pytest.raises(vhd.BrokenChain) as caught:
        vhd.convert(clone, merged, fmt, DiskType.DYNAMIC,
                    locator=f"C:\\moved\\clone{suffix}", local_of=_on_drives(tmp_path))
    assert (caught.value.why, caught.value.child, caught.value.parent) == (
        vhd.ChainBreak.MISSING, f"C:\\moved\\clone{suffix}", f"C:\\templates\\base{suffix}")
    assert not merged.exists()


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_a_clone_whose_parent_was_replaced_does_not_convert(
    tmp_path: pathlib.Path, fmt: DiskFormat,
) -> None:
    """Hyper-V opens the chain to convert it, and refuses a parent that is not the disk
    its child was made from, as a start does: the copy would hold another disk's data."""
    base, _, top = _chain(tmp_path, fmt)
    base.unlink()
    vhd.write_data(new_disk(tmp_path, fmt, DiskType.DYNAMIC, 8 * MIB, "base"), 0, b"other")
    merged = tmp_path / ("merged" + SUFFIX[fmt])

    with pytest.raises(vhd.BrokenChain, match="mismatch in the identifiers"):
        vhd.convert(top, merged, fmt, DiskType.DYNAMIC, local_of=_local_file)
    assert not merged.exists()


def test_convert_fails_when_destination_exists(tmp_path: pathlib.Path) -> None:
    source = new_disk(tmp_path, DiskFormat.VHD, DiskType.DYNAMIC, 8 * MIB, "source")
    existing = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DYNAMIC, 8 * MIB, "existing")
    before = existing.read_bytes()

    with pytest.raises(VhdError, match="exists"):
        vhd.convert(source, existing, DiskFormat.VHDX, DiskType.FIXED)
    assert existing.read_bytes() == before


# --- invalid requests ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_create_fails_when_file_exists(tmp_path: pathlib.Path, fmt: DiskFormat) -> None:
    path = tmp_path / ("disk" + SUFFIX[fmt])
    path.write_bytes(b"precious")

    with pytest.raises(VhdError, match="exists"):
        vhd.create(path, fmt, DiskType.DYNAMIC, MIB)
    assert path.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("fmt", "size"),
    [
        (DiskFormat.VHD, 0),
        (DiskFormat.VHDX, 0),
        (DiskFormat.VHD, -512),
        (DiskFormat.VHD, 2040 * GIB + 1),
        (DiskFormat.VHDX, 64 * TIB + 1),
    ],
    ids=enum_id,
)
def test_create_fails_when_size_is_zero_or_above_format_limit(
    tmp_path: pathlib.Path, fmt: DiskFormat, size: int
) -> None:
    with pytest.raises(VhdError):
        vhd.create(tmp_path / ("disk" + SUFFIX[fmt]), fmt, DiskType.DYNAMIC, size)
    assert list(tmp_path.iterdir()) == []  # no half-written file, no temporary left behind


@pytest.mark.parametrize("fmt", FORMATS, ids=enum_id)
def test_create_accepts_size_when_exactly_at_format_limit(
    tmp_path: pathlib.Path, fmt: DiskFormat
) -> None:
    limit = 2040 * GIB if fmt is DiskFormat.VHD else 64 * TIB

    info = vhd.create(tmp_path / ("disk" + SUFFIX[fmt]), fmt, DiskType.DYNAMIC, limit)

    assert info.virtual_size_bytes == limit


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("disk.vhdx", DiskFormat.VHD), ("disk.vhd", DiskFormat.VHDX), ("disk.img", DiskFormat.VHD)],
    ids=enum_id,
)
def test_create_fails_when_extension_does_not_match_format(
    tmp_path: pathlib.Path, name: str, fmt: DiskFormat
) -> None:
    with pytest.raises(VhdError, match="disk"):
        vhd.create(tmp_path / name, fmt, DiskType.DYNAMIC, MIB)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        (DiskFormat.VHD, {"block_size_bytes": 3 * MIB}),
        (DiskFormat.VHD, {"logical_sector_size": 4096}),
        (DiskFormat.VHDX, {"block_size_bytes": 512 * KIB}),
        (DiskFormat.VHDX, {"logical_sector_size": 1024}),
        (DiskFormat.VHDX, {"physical_sector_size": 2048}),
    ],
    ids=enum_id,
)
def test_create_fails_and_leaves_no_file_when_option_unsupported(
    tmp_path: pathlib.Path, fmt: DiskFormat, options: dict[str, Any]
) -> None:
    with pytest.raises(VhdError):
        new_disk(tmp_path, fmt, DiskType.DYNAMIC, 8 * MIB, **options)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("disk.vhd", DiskFormat.VHD),
        ("DISK.VHDX", DiskFormat.VHDX),
        ("C:\\VMs\\Disk.VhD", DiskFormat.VHD),
        ("/var/lib/disks/a.b.vhdx", DiskFormat.VHDX),
    ],
    ids=enum_id,
)
def test_format_for_path_follows_extension_when_case_differs(path: str, fmt: DiskFormat) -> None:
    assert vhd.format_for_path(path) is fmt


@pytest.mark.parametrize("path", ["disk.img", "disk", "disk.vhd.bak", "C:\\x.vhd\\disk"])
def test_format_for_path_fails_when_extension_unknown(path: str) -> None:
    with pytest.raises(VhdError, match="not a virtual disk"):
        vhd.format_for_path(path)


# --- invalid files ------------------------------------------------------------------------


def test_read_info_fails_naming_file_when_file_missing(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "gone.vhdx"

    with pytest.raises(VhdError, match=r"gone\.vhdx"):
        vhd.read_info(missing)


def test_read_info_fails_when_file_is_not_a_disk(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "junk.vhd"
    path.write_bytes(pattern(4096, 3))

    with pytest.raises(VhdError, match="not a VHD or VHDX"):
        vhd.read_info(path)
    with pytest.raises(VhdError):
        vhd.read_info(tmp_path)  # a directory


@pytest.mark.parametrize("disk_type", [DiskType.FIXED, DiskType.DYNAMIC], ids=enum_id)
@pytest.mark.parametrize("from_end", [512 - 48, 512 - 64, 512 - 70])  # size, checksum, id
def test_read_info_fails_when_vhd_footer_byte_flipped(
    tmp_path: pathlib.Path, disk_type: DiskType, from_end: int
) -> None:
    path = new_disk(tmp_path, DiskFormat.VHD, disk_type, 8 * MIB)
    flip_byte(path, path.stat().st_size - from_end)

    with pytest.raises(VhdError, match="checksum"):
        vhd.read_info(path)


def test_read_info_fails_when_vhd_dynamic_header_byte_flipped(tmp_path: pathlib.Path) -> None:
    path = new_disk(tmp_path, DiskFormat.VHD, DiskType.DYNAMIC, 8 * MIB)
    flip_byte(path, 512 + 33)  # the block size field

    with pytest.raises(VhdError, match="dynamic header"):
        vhd.read_info(path)


def test_read_info_fails_when_both_vhdx_headers_corrupt(tmp_path: pathlib.Path) -> None:
    path = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DYNAMIC, 8 * MIB)
    flip_byte(path, 64 * KIB + 20)
    flip_byte(path, 128 * KIB + 20)

    with pytest.raises(VhdError, match="header"):
        vhd.read_info(path)


@needs_qemu
def test_read_info_uses_other_header_when_one_vhdx_header_corrupt(
    tmp_path: pathlib.Path,
) -> None:
    path = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DYNAMIC, 8 * MIB)
    flip_byte(path, 128 * KIB + 20)

    assert vhd.read_info(path).virtual_size_bytes == 8 * MIB
    vhd.write_data(path, 0, b"still writable")
    assert qemu_read(path, DiskFormat.VHDX, 0, 14) == b"still writable"


def test_read_info_fails_when_both_vhdx_region_tables_corrupt(tmp_path: pathlib.Path) -> None:
    path = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DYNAMIC, 8 * MIB)
    flip_byte(path, 192 * KIB + 20)
    flip_byte(path, 256 * KIB + 20)

    with pytest.raises(VhdError, match="region table"):
        vhd.read_info(path)


def test_read_info_fails_when_vhdx_metadata_table_corrupt(tmp_path: pathlib.Path) -> None:
    path = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DYNAMIC, 8 * MIB)
    flip_byte(path, 2 * MIB)  # the "metadata" signature

    with pytest.raises(VhdError, match="metadata"):
        vhd.read_info(path)


def test_read_info_fails_when_vhdx_file_identifier_corrupt(tmp_path: pathlib.Path) -> None:
    path = new_disk(tmp_path, DiskFormat.VHDX, DiskType.DYNAMIC, 8 * MIB)
    flip_byte(path, 0)

    with pytest.raises(VhdError):
        vhd.read_info(path)


def test_crc32c_matches_reference_value_when_given_check_string() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


def test_create_accepts_wmi_integers_when_enums_not_used(tmp_path: pathlib.Path) -> None:
    info = vhd.create(tmp_path / "disk.vhdx", 3, 3, 8 * MIB)  # type: ignore[arg-type]

    assert (info.format, info.type) == (DiskFormat.VHDX, DiskType.DYNAMIC)
    with pytest.raises(VhdError, match="DiskType"):
        vhd.create(tmp_path / "other.vhdx", DiskFormat.VHDX, 7, MIB)  # type: ignore[arg-type]


def test_final_name_never_appears_when_creation_crashes_midway(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hyperv_agent.emulator import vhdfmt_vhdx

    def crash(file: vhd.DiskFile, request: vhd.CreateRequest) -> None:
        file.write(0, b"vhdxfile half written")
        raise OSError("disk full")

    monkeypatch.setattr(vhdfmt_vhdx, "create", crash)

    with pytest.raises(OSError, match="disk full"):
        vhd.create(tmp_path / "disk.vhdx", DiskFormat.VHDX, DiskType.FIXED, 8 * MIB)
    assert list(tmp_path.iterdir()) == []
