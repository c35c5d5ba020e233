"""A small template disk for trying a deployment end to end (``hyperv-agent template make``,
``probe --deploy``).

The disk is a dynamic VHD or VHDX whose first sector carries a recognisable boot-sector
signature and label, so a copy, a clone or a conversion can be checked byte for byte.
"""

from __future__ import annotations

import pathlib

from hyperv_agent.emulator import vhd

DEFAULT_SIZE_BYTES = 64 * 1024 * 1024
LABEL = b"hyperv-agent probe template\n"
_SECTOR = 512
_BLOCK_BYTES = 2 * 1024 * 1024  # small blocks keep the file small


def first_sector() -> bytes:
    """The template's sector 0: the label, zero padding, and the 0x55AA boot signature."""
    return LABEL + bytes(_SECTOR - len(LABEL) - 2) + b"\x55\xaa"


def make_template(path: pathlib.Path, size_bytes: int = DEFAULT_SIZE_BYTES) -> vhd.DiskInfo:
    """Write a new dynamic disk at ``path`` (format from the suffix: .vhd or .vhdx)."""
    fmt = vhd.format_for_path(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    vhd.create(path, fmt, vhd.DiskType.DYNAMIC, size_bytes, block_size_bytes=_BLOCK_BYTES)
    vhd.write_data(path, 0, first_sector())
    return vhd.read_info(path)
