"""The emulated host's test and lab knobs (``[emulator.lab]``): a class left out of its
schema, and the free space a drive reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperv_agent.backends import emulator_config, open_backend
from hyperv_agent.cim import wql
from hyperv_agent.config import load_config
from hyperv_agent.emulator.files import EmulatedFiles
from hyperv_agent.emulator.paths import HostPaths
from hyperv_agent.errors import CimInvalidClass, ConfigError

METRIC_SERVICE = "Msvm_MetricService"


def _config(tmp_path: Path, lab: str) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(f"[emulator.drives]\nC = '{tmp_path / 'C'}'\n[emulator.lab]\n{lab}\n")
    return path


async def test_a_missing_class_is_unknown_to_every_operation_when_the_knob_names_it(
        tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, f'missing_classes = ["{METRIC_SERVICE}"]'),
                         state_dir=tmp_path / "state", backend="emulator")
    cim = open_backend(config)
    try:
        with pytest.raises(CimInvalidClass, match=METRIC_SERVICE):
            await cim.query(wql.select(METRIC_SERVICE))
        with pytest.raises(CimInvalidClass):
            await cim.get_class(METRIC_SERVICE)
        with pytest.raises(CimInvalidClass):
            await cim.spawn(METRIC_SERVICE)
        services = await cim.query(wql.select("CIM_Service", properties=("Name",)))
        names = {s.class_name for s in services}
        assert METRIC_SERVICE not in names
        assert "Msvm_VirtualSystemManagementService" in names
        assert (await cim.get_class("Msvm_ImageManagementService")).name
    finally:
        await cim.close()


async def test_every_class_is_there_when_no_knob_is_set(tmp_path: Path) -> None:
    cim = open_backend(load_config(None, state_dir=tmp_path, backend="emulator"))
    try:
        found = await cim.query(wql.select(METRIC_SERVICE, properties=("Name",)))
    finally:
        await cim.close()
    assert len(found) == 1


async def test_a_drive_reports_the_free_space_the_knob_sets(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "free_bytes = {C = 0}"),
                         state_dir=tmp_path / "state", backend="emulator")
    host = emulator_config(config)
    for folder in (tmp_path / "C", host.drive_root("D")):
        folder.mkdir(parents=True)
    files = EmulatedFiles(HostPaths(host))
    full = await files.usage("C:\\")
    assert full.free_bytes == 0 and full.total_bytes > 0
    assert (await files.usage("D:\\")).free_bytes > 0


def test_a_knob_with_a_bad_drive_stops_the_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="free_bytes"):
        load_config(_config(tmp_path, "free_bytes = {CC = 5}"), state_dir=tmp_path)
