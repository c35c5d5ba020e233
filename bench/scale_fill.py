"""Adding 5000 VMs to one host against adding the first 1000 to a host, in the same
minutes: the large host and a small one each in a process of its own (the agent
in-process on its emulator, as ``scale_host`` fills it), one pair at a time, in turns.

Filling one host, its first 1000 VMs and the 4000 after them are added a minute apart,
and over a minute this machine's speed drifts by more than the budget can tell apart (a
fixed piece of Python work, timed every 100 VMs of a fill, ran 15% slower after the first
1000 VMs than during them in one run, 20% faster in another). Taken in turns, both hosts
see the same machine.

Both processes must also run alike between turns. A process that runs five pairs for
another's one (the large host's share) gets its threads woken later by the kernel's
scheduler: handing a call to the emulator's thread and back took 77 µs (median) in such a
process against 49 µs in the one that ran less, which put its ratio 5-9% higher though
its emulator did no more work per VM (the emulator's time, measured inside its thread,
grew 1%). So each turn is one pair, the two processes alternate, and the small host is
five hosts one after another: a new one (a process of its own) whenever the current one
holds 1000 VMs. The large host's time is then set against the mean time the small hosts
took to add their 1000 VMs, each from empty.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from bench.scale_host import FilledHost


@dataclass(frozen=True)
class InterleavedFill:
    small_vms: tuple[int, ...]  # VMs each small host ended with
    large_vms: int
    small_s: tuple[float, ...]  # time each small host spent adding its VMs
    large_s: float

    @property
    def small_mean_s(self) -> float:
        return sum(self.small_s) / len(self.small_s)

    @property
    def ratio(self) -> float:
        return self.large_s / self.small_mean_s


def _host(root: str, orders: Connection) -> None:
    """A host of its own, adding the pairs it is asked for: each order is a number of
    pairs, answered with the time spent adding them; None closes it, answered with how
    many VMs it holds."""
    Path(root).mkdir()
    loop = asyncio.new_event_loop()
    host = FilledHost(Path(root))
    try:
        while (pairs := orders.recv()) is not None:
            before = host.pairs
            loop.run_until_complete(host.fill_to(host.vm_count + 2 * pairs))
            orders.send(sum(host.pair_s[before:]))
        orders.send(host.vm_count)
    finally:
        loop.run_until_complete(host.agent.close())
        loop.close()


class _Hosts:
    """The host processes started so far, each with the link its orders go down."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = []

    def start(self, name: str) -> Connection:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(target=_host, args=(str(self.scratch / name), theirs))
        process.start()
        self.processes.append(process)
        return ours

    @staticmethod
    def add(link: Connection, pairs: int) -> float:
        link.send(pairs)
        spent: float = link.recv()
        return spent

    @staticmethod
    def close(link: Connection) -> int:
        link.send(None)
        count: int = link.recv()
        return count

    def kill(self) -> None:
        for process in self.processes:
            process.kill()

    def join(self) -> None:
        for process in self.processes:
            process.join(timeout=60)


def interleaved_fill(small_vms: int, large_vms: int) -> InterleavedFill:
    """Fill a host to ``large_vms`` one pair at a time, in turns with hosts filled to
    ``small_vms`` one after another (``large_vms // small_vms`` of them, each from
    empty), who goes first swapped every round."""
    assert large_vms % small_vms == 0 and small_vms % 2 == 0
    with tempfile.TemporaryDirectory() as scratch:
        hosts = _Hosts(Path(scratch))
        try:
            large = hosts.start("large")
            large_s, small_s, small_counts = 0.0, [], []
            for number in range(large_vms // small_vms):
                small = hosts.start(f"small-{number}")
                spent = 0.0
                for index in range(small_vms // 2):
                    if index % 2 == 0:
                        spent += hosts.add(small, 1)
                        large_s += hosts.add(large, 1)
                    else:
                        large_s += hosts.add(large, 1)
                        spent += hosts.add(small, 1)
                small_s.append(spent)
                small_counts.append(hosts.close(small))
            large_count = hosts.close(large)
        except BaseException:  # a host failed: the others would wait for orders for ever
            hosts.kill()
            raise
        hosts.join()
    return InterleavedFill(tuple(small_counts), large_count, tuple(small_s), large_s)
