"""Raw CIM steps for switch-port features: a VM with a connected adapter, ACLs on its port.

Written against the seam (as a Hyper-V client would call it), not against hyperv/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimInstance, CimValue, MethodResult, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from tests.emulator.kit import add, define_vm, ok, request_state, service, template

ACL = "Msvm_EthernetSwitchPortExtendedAclSettingData"
SECURITY = "Msvm_EthernetSwitchPortSecuritySettingData"


@dataclass(frozen=True)
class Nic:
    vm_name: str
    vm: ObjectPath
    mac: str
    port: ObjectPath


async def vm_with_nic(cim: EmulatorCim, name: str = "web", mac: str = "02:00:4c:5f:00:08",
                      *, running: bool = True) -> Nic:
    """A VM whose adapter ``mac`` is connected to the host's first switch."""
    vm = await define_vm(cim, name)
    nic = (await template(cim, "Msvm_SyntheticEthernetPortSettingData")).updated(
        ElementName="eth0", Address=mac, StaticMacAddress=True)
    nic_path = (await ok(cim, await add(cim, vm, [nic]))).paths("ResultingResourceSettings")[0]
    switch = (await cim.query(wql.select("Msvm_VirtualEthernetSwitch")))[0]
    port = (await template(cim, "Msvm_EthernetPortAllocationSettingData")).updated(
        Parent=str(nic_path), HostResource=[str(switch.path)])
    port_path = (await ok(cim, await add(cim, vm, [port]))).paths("ResultingResourceSettings")[0]
    if running:
        await ok(cim, await request_state(cim, vm, 2))
    return Nic(name, vm, mac, port_path)


async def acl(cim: EmulatorCim, **values: CimValue) -> CimInstance:
    """A spawned extended ACL (the class defaults) with ``values`` set."""
    return (await cim.spawn(ACL)).updated(values)


async def add_features(cim: EmulatorCim, port: ObjectPath,
                       features: Sequence[CimInstance]) -> MethodResult:
    return await cim.invoke(await service(cim), "AddFeatureSettings",
                            {"AffectedConfiguration": port, "FeatureSettings": list(features)})


async def modify_features(cim: EmulatorCim, features: Sequence[CimInstance]) -> MethodResult:
    return await cim.invoke(await service(cim), "ModifyFeatureSettings",
                            {"FeatureSettings": list(features)})


async def remove_features(cim: EmulatorCim, paths: Sequence[ObjectPath]) -> MethodResult:
    return await cim.invoke(await service(cim), "RemoveFeatureSettings",
                            {"FeatureSettings": list(paths)})


async def port_features(cim: EmulatorCim, port: ObjectPath,
                        class_name: str = ACL) -> list[CimInstance]:
    """The features of ``class_name`` under ``port``, found as os-win finds them."""
    port_id = str((await cim.get(port))["InstanceID"])
    return await cim.query(wql.select(class_name, wql.starts_with("InstanceID", port_id + "\\")))


def acl_values(rule: CimInstance) -> dict[str, CimValue]:
    """The documented properties of one ACL, for comparing what is stored."""
    names = ("Name", "Direction", "Action", "LocalIPAddress", "RemoteIPAddress", "LocalPort",
             "RemotePort", "Protocol", "Weight", "Stateful", "IdleSessionTimeout",
             "IsolationID")
    return {name: rule[name] for name in names}
