"""The emulated host's vSwitch kinds (``[emulator] switch_types``), as Hyper-V shows them:
each switch's own ports are Msvm_EthernetPortAllocationSettingData associated with its
Msvm_VirtualEthernetSwitchSettingData (Msvm_VirtualSystemSettingDataComponent), whose
HostResource is what the port connects the switch to. An External switch has a port to
an Msvm_ExternalEthernetPort and one to the management OS (the host's
Msvm_ComputerSystem), an Internal switch only the latter, a Private switch none."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperv_agent.backends import open_backend
from hyperv_agent.cim import wql
from hyperv_agent.cim.api import Cim, ObjectPath
from hyperv_agent.config import load_config
from hyperv_agent.errors import ConfigError

SWITCHES = 'switches = ["Host only", "Isolated", "Uplink"]\n'
TYPES = '[emulator.switch_types]\n"Host only" = "Internal"\nIsolated = "Private"\n'


def _open(tmp_path: Path) -> Cim:
    path = tmp_path / "host.toml"
    path.write_text("[emulator]\n" + SWITCHES + TYPES)
    return open_backend(load_config(path, state_dir=tmp_path / "state", backend="emulator"))


async def _connects(cim: Cim) -> dict[str, list[str]]:
    """Each switch's ports, as the classes of what they connect it to."""
    found: dict[str, list[str]] = {}
    for switch in await cim.query(wql.select("Msvm_VirtualEthernetSwitch")):
        settings = ObjectPath.for_keys("Msvm_VirtualEthernetSwitchSettingData",
                                       InstanceID=f"Microsoft:{switch['Name']}")
        ports = await cim.associators(
            settings, assoc_class="Msvm_VirtualSystemSettingDataComponent",
            result_class="Msvm_EthernetPortAllocationSettingData")
        found[str(switch["ElementName"])] = sorted(
            ObjectPath.parse(resource).class_name
            for port in ports for resource in port.strings("HostResource"))
    return found


async def test_switches_have_the_ports_of_their_kind(tmp_path: Path) -> None:
    cim = _open(tmp_path)
    try:
        connects = await _connects(cim)
        adapters = await cim.query(wql.select("Msvm_ExternalEthernetPort"))
    finally:
        await cim.close()
    assert connects == {"Host only": ["Msvm_ComputerSystem"], "Isolated": [],
                        "Uplink": ["Msvm_ComputerSystem", "Msvm_ExternalEthernetPort"]}
    assert [a["ElementName"] for a in adapters] == ["Emulated Ethernet Adapter #1"]


@pytest.mark.parametrize(("entry", "named"), [
    ('Nowhere = "Internal"', "Nowhere"),  # a switch the host does not have
    ('Uplink = "Bridged"', "Uplink"),  # a kind Hyper-V does not have
])
def test_switch_types_entry_that_cannot_be_is_one_clear_error(tmp_path: Path, entry: str,
                                                              named: str) -> None:
    path = tmp_path / "host.toml"
    path.write_text(f'[emulator]\nswitches = ["Uplink"]\n[emulator.switch_types]\n{entry}\n')
    with pytest.raises(ConfigError, match=named):
        load_config(path)
