"""What Hyper-V is told a live move's destination is called (README "Migration"): the name
reverse DNS gives MigrateCommand's ``destinationIp`` (Kerberos constrained delegation
needs a name), else the address itself. Over real HTTPS on one emulated host, which knows
no other host, so Hyper-V's check refuses the move naming the destination it was given."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cloudstack import names
from hyperv_agent.emulator import vhd
from tests.cloudstack.fixtures import ms422_json
from tests.e2e.conftest import Running, samples_host_config, serving

VM = "i-2-7-VM"  # samples 30 and 41
ROOT = "8c93b28e-9a5e-4e24-988b-fdee9591ab94.vhdx"
DESTINATION = "192.0.2.12"
#: What ``socket.getnameinfo`` is made to do: a name for the address, or an exception.
Lookup = Callable[[tuple[str, int], int], tuple[str, str]]


@pytest.fixture
async def ms(tmp_path: Path) -> AsyncIterator[Running]:
    """A VM running from the SMB pool of samples 30 and 31, which a live move keeps."""
    async with serving(samples_host_config(tmp_path)) as running:
        _, pool = await running.answer(names.MODIFY_STORAGE_POOL_COMMAND,
                                       ms422_json("31_ModifyStoragePoolCommand_SMB.json"))
        assert pool["result"] is True, pool
        vhd.create(tmp_path / "primary" / ROOT, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC,
                   64 << 20)
        start = ms422_json("30_StartCommand_root_on_SMB_pool.json")
        _, started = await running.answer(names.START_COMMAND, start)
        assert started["result"] is True, started
        yield running


async def _refusal(running: Running, monkeypatch: pytest.MonkeyPatch, lookup: Lookup) -> str:
    """The details of MigrateCommand to ``DESTINATION`` while reverse DNS does ``lookup``."""
    asked: list[tuple[tuple[str, int], int]] = []

    def getnameinfo(address: tuple[str, int], flags: int) -> tuple[str, str]:
        asked.append((address, flags))
        return lookup(address, flags)

    monkeypatch.setattr(socket, "getnameinfo", getnameinfo)
    vm: dict[str, Any] = ms422_json("30_StartCommand_root_on_SMB_pool.json")["vm"]
    body = ms422_json("41_MigrateCommand.json") | {
        "vmName": VM, "virtualMachine": vm, "destinationIp": DESTINATION}
    key, answer = await running.answer(names.MIGRATE_COMMAND, body)
    assert (key, answer["result"]) == (names.MIGRATE_ANSWER, False), answer
    assert [address for address, _ in asked] == [(DESTINATION, 0)]
    assert asked[0][1] & socket.NI_NAMEREQD  # a name or nothing, never the address again
    details: str = answer["details"]
    assert details.startswith("MigrateCommand failed due to "), details
    return details


async def test_the_destination_is_named_by_its_reverse_dns_name(
    ms: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    details = await _refusal(ms, monkeypatch, lambda address, flags: ("hv-b.lab.example", "0"))
    assert "'hv-b.lab.example'" in details and DESTINATION not in details, details


def _no_record(address: tuple[str, int], flags: int) -> tuple[str, str]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def _slow(address: tuple[str, int], flags: int) -> tuple[str, str]:
    time.sleep(3)  # past the agent's 2 s for the lookup
    return ("hv-b.lab.example", "0")


@pytest.mark.parametrize("lookup", [_no_record, _slow, lambda a, f: ("localhost", "0"),
                                    lambda a, f: ("LOCALHOST.localdomain", "0")],
                         ids=["no PTR record", "slow lookup", "localhost", "localhost FQDN"])
async def test_the_destination_is_named_by_its_address_when_dns_gives_no_usable_name(
    ms: Running, monkeypatch: pytest.MonkeyPatch, lookup: Lookup,
) -> None:
    """No name, one too slow to wait for, or a loopback name (which would name the source
    itself): Hyper-V is given the address."""
    began = time.monotonic()
    details = await _refusal(ms, monkeypatch, lookup)
    assert f"'{DESTINATION}'" in details and "hv-b" not in details, details
    assert time.monotonic() - began < 2.9  # the slow lookup is not waited out
