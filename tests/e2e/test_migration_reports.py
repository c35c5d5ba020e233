"""While a VM moves, the management server polls each host's state report on its own: no
pair of those answers may show the VM on both hosts, or on neither, at one moment.

Each host is polled in a tight loop while MigrateCommands run there and back. Reports only
change one way during a move (the source loses the VM, the destination gains it), so an
answer whose request was sent after another host's answer came back observed a later
moment: the destination showing the VM and then the source still showing it means both held
it in between; the source no longer showing it and then the destination not yet showing
it means neither did."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hyperv_agent.cloudstack import names
from tests.e2e.migration_kit import (
    ROOT_UUID,
    Cluster,
    Member,
    cluster,
    disk_file,
    migrate_body,
    pair,
    prepare_body,
    start_body,
    vm_to,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="needs 127.0.0.2 and 127.0.0.3 (Linux loopback)")

VM = "i-2-40-VM"


@dataclass(frozen=True)
class Seen:
    """One state report of one host: when it was asked, when it came back, what it said."""

    host: str
    sent_s: float
    back_s: float
    shows_vm: bool


async def _watch(run: Cluster, host: Member, moving: asyncio.Event, seen: list[Seen]) -> None:
    while moving.is_set():
        sent = time.monotonic()
        shows = VM in await run.on(host)
        seen.append(Seen(host.name, sent, time.monotonic(), shows))


async def _move_watched(run: Cluster, source: Member, destination: Member) -> list[Seen]:
    vm = vm_to(VM)
    _, ready = await run.ask(destination, names.PREPARE_FOR_MIGRATION_COMMAND, prepare_body(vm))
    assert ready["result"] is True, ready["details"]
    moving, seen = asyncio.Event(), list[Seen]()
    moving.set()
    watchers = [asyncio.create_task(_watch(run, host, moving, seen))
                for host in (source, destination)]
    await asyncio.sleep(0.2)  # both watchers under way before the move
    _, moved = await run.ask(source, names.MIGRATE_COMMAND, migrate_body(vm, destination.address))
    assert moved["result"] is True, moved["details"]
    await asyncio.sleep(0.2)
    moving.clear()
    await asyncio.gather(*watchers)
    return seen


def _contradictions(seen: list[Seen], source: str, destination: str) -> list[str]:
    on_both = [(d, s) for d in seen if d.host == destination and d.shows_vm
               for s in seen if s.host == source and s.shows_vm and s.sent_s > d.back_s]
    on_neither = [(s, d) for s in seen if s.host == source and not s.shows_vm
                  for d in seen if d.host == destination and not d.shows_vm
                  and d.sent_s > s.back_s]
    return [f"both: {pair}" for pair in on_both] + [f"neither: {pair}" for pair in on_neither]


async def test_no_two_state_reports_show_the_vm_on_both_hosts_or_on_neither(
        tmp_path: Path) -> None:
    a, b = hosts = pair(tmp_path)
    disk_file(tmp_path / "pool", ROOT_UUID)
    async with cluster(hosts) as run:
        _, started = await run.ask(a, names.START_COMMAND, start_body(vm_to(VM)))
        assert started["result"] is True, started["details"]
        for source, destination in ((a, b), (b, a)):
            seen = await _move_watched(run, source, destination)
            by_host = {host.name: [s.shows_vm for s in seen if s.host == host.name]
                       for host in (source, destination)}
            # observed before and after the hand-over on both sides
            assert by_host[source.name][0] and not by_host[source.name][-1], by_host
            assert not by_host[destination.name][0] and by_host[destination.name][-1], by_host
            assert _contradictions(seen, source.name, destination.name) == []
