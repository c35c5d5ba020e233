"""Checking files the agent wrote: ``qemu-img info`` as an independent reader, folder
listings with content digests to show that nothing changed, and the files the emulated
Hyper-V writes when it converts (merges) a disk."""

from __future__ import annotations

import errno
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.emulator import vhd


def qemu_info(path: Path) -> dict[str, Any]:
    """What ``qemu-img info --output=json`` reads in ``path``."""
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def listing(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def hyperv_writes(monkeypatch: pytest.MonkeyPatch, full: Path | None = None, *,
                  fails_when_done: bool = False) -> list[Path]:
    """The files Hyper-V's ConvertVirtualHardDisk writes, in order. In ``full`` it can
    write none, as on a full volume; with ``fails_when_done`` it writes each file whole
    and then fails, as a volume that fills at the last block leaves it."""
    written: list[Path] = []
    convert = vhd.convert

    def no_space(destination: Path) -> OSError:
        return OSError(errno.ENOSPC, "There is not enough space on the disk", str(destination))

    def converting(source: Path, destination: Path, *args: Any, **kwargs: Any) -> Any:
        written.append(destination)
        if full is not None and destination.parent == full:
            raise no_space(destination)
        done = convert(source, destination, *args, **kwargs)
        if fails_when_done:
            raise no_space(destination)
        return done

    monkeypatch.setattr(vhd, "convert", converting)
    return written


def loop_vhd_chain(pool: Path) -> None:
    """Of the VHD chain ``top`` -> ``mid`` -> ``base`` in ``pool``, make one that loops:
    ``base`` replaced by ``top`` (which stands on ``mid``) given the old base's identity
    (the footer unique id ``mid`` records), so ``mid`` stands on ``base``, which stands on
    ``mid``. Both copies of the footer are written, each with its checksum made anew (the
    VHD specification's footer: the unique id at byte 68, at byte 64 the one's
    complement of the sum of the other bytes)."""
    unique_id = (pool / "base.vhd").read_bytes()[-512:][68:84]
    (pool / "base.vhd").unlink()
    (pool / "top.vhd").rename(pool / "base.vhd")
    data = bytearray((pool / "base.vhd").read_bytes())
    for at in (0, len(data) - 512):
        footer = bytearray(data[at:at + 512])
        footer[68:84] = unique_id
        footer[64:68] = bytes(4)
        footer[64:68] = ((~sum(footer)) & 0xFFFFFFFF).to_bytes(4, "big")
        data[at:at + 512] = footer
    (pool / "base.vhd").write_bytes(bytes(data))
