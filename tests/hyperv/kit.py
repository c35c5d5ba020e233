"""What the tests of the operation layer build on the emulated host's drives."""

from __future__ import annotations

from pathlib import Path

from hyperv_agent.emulator import vhd


def image_file(tmp_path: Path, name: str, size_bytes: int = 1 << 26) -> str:
    """A real image file in C:\\images of the emulated host whose drive C is
    ``tmp_path / "C"``: an empty 2 KiB ISO for a ``.iso`` name, else a dynamic VHDX of
    ``size_bytes``. Returns its host path."""
    folder = tmp_path / "C" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    if name.endswith(".iso"):
        (folder / name).write_bytes(b"\0" * 2048)
    else:
        vhd.create(folder / name, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, size_bytes)
    return f"C:\\images\\{name}"
