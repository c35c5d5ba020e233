"""Adding the first 1000 VMs to one host and 5000 to another in the same minutes: each host
in a process of its own (the agent in-process on its emulator, as ``scale_host`` fills
it), the two adding pairs in turn, one process at a time.

Filling one host, its first 1000 VMs and the 4000 after them are added a minute apart,
and over a minute this machine's speed drifts by more than the budget can tell apart (a
fixed piece of Python work, timed every 100 VMs of a fill, ran 15% slower after the first
1000 VMs than during them in one run, 20% faster in another). Taken in turns, 1 pair to
the small host and then 5 to the large one (the order swapped every round), both see the
same machine, so their ratio is the cost of a VM on a host filling up against its cost on
a host with up to 1000 VMs. Each process holds one host, as a filled host would: neither
one's heap slows the other down.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from bench.scale_host import FilledHost


@dataclass(frozen=True)
class InterleavedFill:
    small_vms: int  # VMs the small host ended with
    large_vms: int
    small_s: float  # time spent adding the small host's VMs
    large_s: float
    rounds: int

    @property
    def ratio(self) -> float:
        return self.large_s / self.small_s


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


def interleaved_fill(small_vms: int, large_vms: int) -> InterleavedFill:
    """Fill a host to ``small_vms`` and another to ``large_vms`` (a multiple of it), in
    turns: ``small_vms // 2`` rounds, each 1 pair to the small host and
    ``large_vms // small_vms`` pairs to the large one."""
    assert large_vms % small_vms == 0 and small_vms % 2 == 0
    per_round = large_vms // small_vms
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as scratch:
        links, processes = [], []
        for name in ("small", "large"):
            ours, theirs = context.Pipe()
            process = context.Process(target=_host, args=(str(Path(scratch) / name), theirs))
            process.start()
            links.append(ours)
            processes.append(process)
        spent = [0.0, 0.0]  # by host: small, large
        rounds = small_vms // 2
        try:
            for index in range(rounds):
                turns = [(0, 1), (1, per_round)]
                for host, pairs in turns if index % 2 == 0 else reversed(turns):
                    links[host].send(pairs)
                    spent[host] += links[host].recv()
            counts = []
            for link in links:
                link.send(None)
                counts.append(link.recv())
        except BaseException:  # a host failed: the other would wait for orders for ever
            for process in processes:
                process.kill()
            raise
        for process in processes:
            process.join(timeout=60)
    return InterleavedFill(counts[0], counts[1], spent[0], spent[1], rounds)
