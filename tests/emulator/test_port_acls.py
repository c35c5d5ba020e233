"""Extended port ACLs through Add/Modify/RemoveFeatureSettings, refused as Hyper-V refuses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import CimValue, ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig, LatencyModel
from tests.emulator.kit import failure, iteration_reads, ok, request_state, service
from tests.emulator.portkit import (
    ACL,
    acl,
    acl_values,
    add_features,
    modify_features,
    port_features,
    remove_features,
    vm_with_nic,
)

SSH_IN: dict[str, CimValue] = {
    "Name": "ssh from the office", "Direction": 1, "Action": 1,
    "LocalIPAddress": "10.1.1.80", "RemoteIPAddress": "192.168.1.0/24", "LocalPort": "22",
    "RemotePort": "1024-65535", "Protocol": "TCP", "Weight": 100, "Stateful": True,
    "IdleSessionTimeout": 3600, "IsolationID": 0,
}


async def test_spawned_acl_carries_the_documented_defaults_when_nothing_is_set(
    emulator: EmulatorCim,
) -> None:
    spawned = await emulator.spawn(ACL)
    assert acl_values(spawned) == {
        "Name": "", "Direction": 0, "Action": 0, "LocalIPAddress": "ANY",
        "RemoteIPAddress": "ANY", "LocalPort": "ANY", "RemotePort": "ANY", "Protocol": "ANY",
        "Weight": 0, "Stateful": False, "IdleSessionTimeout": 255, "IsolationID": 0}


async def test_acl_is_stored_under_the_port_with_every_property_when_added(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    added = await ok(emulator, await add_features(emulator, nic.port, [
        await acl(emulator, **SSH_IN)]))
    path = added.paths("ResultingFeatureSettings")[0]
    stored = await emulator.get(path)
    assert acl_values(stored) == SSH_IN
    port_id = str((await emulator.get(nic.port))["InstanceID"])
    assert str(stored["InstanceID"]).startswith(port_id + "\\")
    assert [a.path for a in await port_features(emulator, nic.port)] == [path]
    related = await emulator.query(
        f"ASSOCIATORS OF {{{nic.port}}} WHERE ResultClass = {ACL}")
    assert [a.path for a in related] == [path]


async def test_many_acls_are_added_in_one_call_when_weights_differ(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    rules = [await acl(emulator, Direction=1, Action=1, Protocol="TCP", LocalPort=str(port),
                       Weight=1000 + port) for port in range(1, 201)]
    spent = emulator.round_trips()
    added = await ok(emulator, await add_features(emulator, nic.port, rules))
    assert len(added.paths("ResultingFeatureSettings")) == 200
    assert len(await port_features(emulator, nic.port)) == 200
    assert (emulator.round_trips() - spent)["invoke:AddFeatureSettings"] == 1


@pytest.mark.parametrize(("field", "value"), [
    ("RemoteIPAddress", "10.0.0.300"),
    ("RemoteIPAddress", "10.0.0.0/33"),
    ("LocalIPAddress", "any-address"),
    ("RemoteIPAddress", "2001:db8:1234:5678:9abc:def0:1234:5678/128"),  # 43 > MaxLen 40
    ("LocalPort", "70000"),
    ("LocalPort", "22-21"),
    ("RemotePort", "ssh"),
    ("RemotePort", "-5"),
    ("Protocol", "icmp"),
    ("Protocol", "256"),
    ("Protocol", "0x06"),
    ("Direction", 0),
    ("Direction", 3),
    ("Action", 3),  # Meter exists for the basic ACL class only
    ("Name", "x" * 65),
    ("Weight", 70000),  # uint16
    ("IdleSessionTimeout", -1),
])
async def test_acl_is_refused_and_nothing_stored_when_a_field_is_malformed(
    emulator: EmulatorCim, field: str, value: CimValue,
) -> None:
    nic = await vm_with_nic(emulator)
    good = await acl(emulator, Direction=1, Action=1, Weight=10)
    bad = await acl(emulator, **{"Direction": 1, "Action": 2, "Weight": 11, field: value})
    assert await failure(emulator, await add_features(emulator, nic.port, [good, bad])) == 32773
    assert await port_features(emulator, nic.port) == []


@pytest.mark.parametrize("values", [
    {"Action": 2, "Protocol": "TCP"},  # a stateful rule always allows
    {"Action": 1, "Protocol": "1"},  # sessions are TCP or UDP
    {"Action": 1, "Protocol": "ANY"},
])
async def test_stateful_acl_is_refused_when_it_denies_or_is_not_tcp_or_udp(
    emulator: EmulatorCim, values: dict[str, CimValue],
) -> None:
    nic = await vm_with_nic(emulator)
    rule = await acl(emulator, Direction=2, Weight=5, Stateful=True, **values)
    assert await failure(emulator, await add_features(emulator, nic.port, [rule])) == 32773


@pytest.mark.parametrize(("field", "value"), [
    ("LocalIPAddress", "fd00::1/64"), ("RemoteIPAddress", "0.0.0.0/0"),
    ("RemoteIPAddress", "::/0"), ("RemoteIPAddress", "any"), ("RemoteIPAddress", "10.1.1.5/24"),
    ("LocalPort", ""), ("LocalPort", "0-65535"), ("Protocol", "udp"), ("Protocol", "58"),
])
async def test_acl_is_taken_when_its_text_is_a_documented_form(
    emulator: EmulatorCim, field: str, value: CimValue,
) -> None:
    nic = await vm_with_nic(emulator)
    rule = await acl(emulator, **{"Direction": 1, "Action": 2, "Weight": 7, field: value})
    path = (await ok(emulator, await add_features(emulator, nic.port, [rule]))).paths(
        "ResultingFeatureSettings")[0]
    assert (await emulator.get(path))[field] == value


async def test_weight_is_refused_when_the_port_has_it_in_the_same_direction(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    inbound = await acl(emulator, Direction=1, Action=2, Weight=1)
    await ok(emulator, await add_features(emulator, nic.port, [inbound]))
    assert await failure(emulator, await add_features(emulator, nic.port, [inbound])) == 32774
    outbound = inbound.updated(Direction=2)
    await ok(emulator, await add_features(emulator, nic.port, [outbound]))  # other direction
    other = await vm_with_nic(emulator, "db", "02:00:4c:5f:00:09")
    await ok(emulator, await add_features(emulator, other.port, [inbound]))  # other port
    twice = [inbound.updated(Weight=2), inbound.updated(Weight=2, Action=1)]
    assert await failure(emulator, await add_features(emulator, nic.port, twice)) == 32774
    assert len(await port_features(emulator, nic.port)) == 2


async def test_add_is_refused_at_once_when_the_port_is_missing_or_not_a_port(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    rule = await acl(emulator, Direction=1, Action=2, Weight=1)
    port_id = str((await emulator.get(nic.port))["InstanceID"])
    gone = ObjectPath.for_keys("Msvm_EthernetPortAllocationSettingData",
                               InstanceID=port_id.replace("\\C", "\\X"))
    for target in (gone, nic.vm):
        result = await add_features(emulator, target, [rule])
        assert result.return_value == 32773 and result.path("Job") is None


async def test_modify_changes_an_acl_and_refuses_a_weight_or_text_hyperv_refuses(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    added = await ok(emulator, await add_features(emulator, nic.port, [
        await acl(emulator, Direction=1, Action=2, Weight=1),
        await acl(emulator, Direction=1, Action=1, Weight=2, Protocol="TCP", LocalPort="22")]))
    first, second = [await emulator.get(p) for p in added.paths("ResultingFeatureSettings")]
    await ok(emulator, await modify_features(emulator, [second.updated(LocalPort="2222")]))
    assert (await emulator.get(second.path))["LocalPort"] == "2222"  # type: ignore[arg-type]
    for change in ({"Weight": 1}, {"LocalPort": "2222-22"}, {"Action": 2, "Stateful": True}):
        assert await failure(emulator, await modify_features(
            emulator, [second.updated(**change)])) == (32774 if "Weight" in change else 32773)
    assert acl_values(await emulator.get(second.path)) == {  # type: ignore[arg-type]
        **acl_values(second), "LocalPort": "2222"}
    assert (await emulator.get(first.path))["Weight"] == 1  # type: ignore[arg-type]


async def test_remove_takes_acls_off_the_port_and_refuses_a_missing_one(
    emulator: EmulatorCim,
) -> None:
    nic = await vm_with_nic(emulator)
    added = await ok(emulator, await add_features(emulator, nic.port, [
        await acl(emulator, Direction=1, Action=2, Weight=w) for w in (1, 2, 3)]))
    paths = added.paths("ResultingFeatureSettings")
    await ok(emulator, await remove_features(emulator, paths[:2]))
    assert [a.path for a in await port_features(emulator, nic.port)] == [paths[2]]
    result = await remove_features(emulator, paths[:1])
    assert result.return_value == 32773
    assert [a.path for a in await port_features(emulator, nic.port)] == [paths[2]]


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("requested", [2, 3], ids=["starting", "stopping"])
async def test_port_of_a_vm_changing_state_takes_no_feature_change_until_it_is_done(
    make_config: Callable[..., EmulatorConfig], requested: int,
) -> None:
    # As its devices: while Hyper-V starts or stops the VM (its RequestStateChange job
    # runs), no feature of its ports is added, changed or removed (32775); once the change
    # is done they are.
    clock = _Clock()
    cim = EmulatorCim.open(make_config(), clock)
    try:
        nic = await vm_with_nic(cim, running=requested == 3)
        added = await ok(cim, await add_features(cim, nic.port, [
            await acl(cim, Direction=1, Action=2, Weight=1)]))
        (path,) = added.paths("ResultingFeatureSettings")
        present = await cim.get(path)
        cim.host.config = dataclasses.replace(cim.host.config, latency=LatencyModel(job_s=2.0))
        assert (await request_state(cim, nic.vm, requested)).return_value == 4096
        refused = [
            await add_features(cim, nic.port, [await acl(cim, Direction=1, Action=1, Weight=2)]),
            await modify_features(cim, [present.updated(Weight=3)]),
            await remove_features(cim, [path]),
        ]
        clock.now += 2.0  # the change, and the refused calls' jobs, are done
        assert [await failure(cim, result) for result in refused] == [32775] * 3
        assert [(a.path, a["Weight"]) for a in await port_features(cim, nic.port)] == [
            (path, 1)]
        result = await modify_features(cim, [present.updated(Weight=3)])
        clock.now += 2.0
        await ok(cim, result)
        assert (await cim.get(path))["Weight"] == 3
    finally:
        await cim.close()


async def test_destroying_a_vm_removes_its_acls_reading_each_once(
    emulator: EmulatorCim,
) -> None:
    """DestroySystem removes the port features with the VM, reading the VM's features
    once, not once per device of the VM (a StopCommand destroys the VM: a VM with a
    security group's rules would be read a dozen times over)."""
    nic = await vm_with_nic(emulator, running=False)
    rules = [await acl(emulator, Direction=1, Action=1, Protocol="TCP", LocalPort=str(port),
                       Weight=1000 + port) for port in range(1, 21)]
    await ok(emulator, await add_features(emulator, nic.port, rules))
    port_id = str((await emulator.get(nic.port))["InstanceID"])
    with iteration_reads() as reads:
        await ok(emulator, await emulator.invoke(await service(emulator), "DestroySystem",
                                                 {"AffectedSystem": nic.vm}))
    assert reads.found[ACL.lower()] + reads.walked[ACL.lower()] == 20, reads
    assert await emulator.query(wql.select(ACL, wql.starts_with("InstanceID", port_id))) == []
