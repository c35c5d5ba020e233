"""The emulated host's live-migration settings (``[emulator.migration]``), as Hyper-V keeps
them: Msvm_VirtualSystemMigrationServiceSettingData with the networks it listens on
(Msvm_VirtualSystemMigrationNetworkSettingData, associated through
Msvm_VirtualSystemMigrationServiceSettingDataComponent), applied again when the host is
opened with other settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperv_agent.backends import open_backend
from hyperv_agent.cim import wql
from hyperv_agent.cim.api import Cim
from hyperv_agent.config import load_config
from hyperv_agent.errors import ConfigError

SETTINGS = "Msvm_VirtualSystemMigrationServiceSettingData"
NETWORKS = "Msvm_VirtualSystemMigrationNetworkSettingData"


def _open(tmp_path: Path, migration: str) -> Cim:
    path = tmp_path / "host.toml"
    path.write_text(f"[agent]\nprivate_ip = '10.1.1.12'\n[emulator.migration]\n{migration}\n")
    return open_backend(load_config(path, state_dir=tmp_path / "state", backend="emulator"))


async def _settings(cim: Cim) -> tuple[tuple[object, ...], list[tuple[object, ...]]]:
    (found,) = await cim.query(wql.select(SETTINGS))
    assert found.path is not None
    networks = await cim.associators(
        found.path, assoc_class="Msvm_VirtualSystemMigrationServiceSettingDataComponent",
        result_class=NETWORKS)
    return ((found["EnableVirtualSystemMigration"], found["AuthenticationType"],
             found["MaximumActiveVirtualSystemMigration"]),
            sorted((n["SubnetNumber"], n["PrefixLength"], n["Metric"]) for n in networks))


async def test_a_prepared_host_by_default_and_the_configured_settings_when_reopened(
        tmp_path: Path) -> None:
    cim = _open(tmp_path, "")
    try:
        assert await _settings(cim) == ((True, 1, 2), [("10.1.1.0", 24, 0)])
    finally:
        await cim.close()
    cim = _open(tmp_path, 'enabled = false\nauthentication = "CredSSP"\nsimultaneous = 4\n'
                          'networks = ["10.1.2.0/24", "fd00::/64"]')
    try:
        assert await _settings(cim) == ((False, 0, 4), [("10.1.2.0", 24, 0), ("fd00::", 64, 1)])
        assert len(await cim.query(wql.select(NETWORKS))) == 2
    finally:
        await cim.close()


@pytest.mark.parametrize(("text", "message"), [
    ('networks = ["10.1.2.0/33"]', "'10.1.2.0/33' is not a subnet"),
    ('authentication = "NTLM"', "Kerberos"),
    ("simultaneous = 0", "greater than or equal to 1"),
])
def test_bad_migration_settings_are_one_clear_error(tmp_path: Path, text: str,
                                                    message: str) -> None:
    path = tmp_path / "host.toml"
    path.write_text(f"[emulator.migration]\n{text}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)
