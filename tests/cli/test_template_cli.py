"""``hyperv-agent template make``: the small template disk used to try deployments."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from hyperv_agent.emulator import vhd
from hyperv_agent.emulator.template import LABEL, first_sector


def test_template_make_writes_a_labelled_dynamic_disk(tmp_path: Path) -> None:
    target = tmp_path / "t.vhdx"
    run = subprocess.run([sys.executable, "-m", "hyperv_agent.cli", "template", "make",
                          str(target), "--size-mb", "16"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["virtual_size_bytes"] == 16 * 1024 * 1024
    info = vhd.read_info(target)
    assert (info.format, info.type) == (vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC)
    assert vhd.read_data(target, 0, 512) == first_sector()
    assert first_sector().startswith(LABEL)
    if shutil.which("qemu-img"):
        qemu = subprocess.run(["qemu-img", "info", "--output=json", str(target)],
                              capture_output=True, text=True, check=True)
        assert json.loads(qemu.stdout)["virtual-size"] == 16 * 1024 * 1024


def test_template_make_refuses_an_existing_file_and_a_wrong_suffix(tmp_path: Path) -> None:
    existing = tmp_path / "t.vhdx"
    existing.write_bytes(b"keep me")
    for target in (existing, tmp_path / "t.img"):
        run = subprocess.run([sys.executable, "-m", "hyperv_agent.cli", "template", "make",
                              str(target)], capture_output=True, text=True)
        assert run.returncode != 0
        assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr
    assert existing.read_bytes() == b"keep me"
    assert not (tmp_path / "t.img").exists()
