"""Whether the Hyper-V host answers now: asked by PingRoutingCommand, CheckHealthCommand,
``/healthz`` and before each heartbeat stamp, and bounding the read-only queries of the
VM state report and the host statistics (``HostCheck.bounded``).

Driving a host over WinRM, the agent outlives the host: when the host is powered off,
cut off or hung, the agent still answers the management server. A ping answered without
asking the host would keep a dead host Up for ever (the MS investigates only once pings
fail), and a heartbeat stamped by the agent alone would have every neighbour's
CheckOnHost call the dead host alive, so it would never be called Down.
The periodic stamp waits for a late answer to its end (``HostCheck.settled``): a host
that answers after the deadline runs, and is stamped.

One read-only query (the host's virtual switches, in Hyper-V's namespace) answers it,
within ``deadline_s``; one query is in flight at a time and its answer serves every
caller for ``fresh_s``, so a monitor polling ``/healthz`` and the MS's pings cost at most
one round trip per ``fresh_s``. A query still waiting at the deadline is not cut short:
later checks wait for it (never a second one on a hung host, never a thread more), and
it ends by the backend's own bound (for WinRM, its operation timeout and answer grace).

A host that is the machine the agent runs on (local WMI, the WinRM listener on localhost,
an emulated host in this process: ``OpenedHost.on_this_machine``) is never called
unreachable: the agent runs on it, so it runs, and so may its VMs. Its WMI hung past the
deadline or its WinRM service stopped fails the pings all the same (``Reach.SILENT``), but
its heartbeat goes on being stamped: a stamp withheld would have the neighbours call a
running host down, and an operator acting on that start its VMs a second time elsewhere,
on the same disks.

A connection refused (a TCP reset: ``CimRefused``) is not "nothing answered": the host's
network stack answered it, so the machine runs, with its WinRM service stopped (or not yet
started, as while it boots) or a firewall rejecting the agent, and its VMs may be running.
It is ``Reach.REFUSED``: the pings fail, saying so, and the heartbeat goes on being
stamped, or the neighbours would call a running host down. A host powered off or cut
off answers nothing: the connect times out, or no route to it is found (``EHOSTUNREACH``),
and that is ``Reach.UNREACHABLE``, no stamp. The choice leans towards alive where the two
meet: a firewall on the way that rejects, rather than drops, connections to a host that
has died keeps it stamped and called Up (its VMs are down, not run twice) until an
operator sees its failed pings.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from hyperv_agent.errors import AgentError, CimRefused, CimUnreachable
from hyperv_agent.hyperv import host
from hyperv_agent.hyperv.session import HyperV

log = logging.getLogger("hyperv_agent.handlers.hostcheck")

_T = TypeVar("_T")

#: How long a check waits for the host's answer. The MS posts its ping without a timeout
#: of its own (HypervDirectConnectResource.postHttpRequest) once per ping.interval (60 s),
#: after the state report, and calls the host unreachable after ping.timeout x
#: ping.interval (150 s) without a good ping: an answer within 20 s leaves it room for
#: both and for its retries. Longer than the WinRM connect timeout (10 s), so a host that
#: is powered off is told by the connection's own failure.
DEADLINE_S = 20.0
#: How long one answer serves every check.
FRESH_S = 5.0


class Reach(enum.Enum):
    ANSWERS = "answers"
    FAULTY = "faulty"  # it answered, with an error: its Windows runs, Hyper-V is not usable
    UNREACHABLE = "unreachable"  # nothing answered: powered off, cut off or hung
    #: nothing answered, from the machine the agent runs on: its management service (WMI,
    #: WinRM) is hung or stopped, the host itself runs
    SILENT = "silent"
    #: its network refused the connection: the machine runs, its WinRM service does not
    #: listen (stopped, starting) or a firewall rejects the agent
    REFUSED = "refused"


@dataclass(frozen=True)
class HostState:
    reach: Reach
    problem: str | None = None  # why it is not usable, on one line

    @property
    def usable(self) -> bool:
        return self.reach is Reach.ANSWERS

    @property
    def says(self) -> str:
        """One line for an answer, a log or /healthz."""
        if self.reach is Reach.ANSWERS:
            return "the Hyper-V host answers"
        if self.reach is Reach.UNREACHABLE:
            return f"the Hyper-V host cannot be reached: {self.problem}"
        if self.reach is Reach.SILENT:
            return (f"Hyper-V's management service on this host does not answer: "
                    f"{self.problem}")
        if self.reach is Reach.REFUSED:
            return f"the Hyper-V host refuses the connection: {self.problem}"
        return f"the Hyper-V host answers with an error: {self.problem}"


class HostCheck:
    """Asks the host whether it answers (see the module's docstring). ``deadline_s`` and
    ``fresh_s`` default to the module's DEADLINE_S and FRESH_S; ``on_this_machine``: the
    host is the machine the agent runs on, and no answer makes it ``SILENT``, not
    ``UNREACHABLE``."""

    def __init__(self, hv: HyperV, deadline_s: float | None = None,
                 fresh_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, *,
                 on_this_machine: bool = False) -> None:
        self.hv = hv
        self.on_this_machine = on_this_machine
        self.deadline_s = DEADLINE_S if deadline_s is None else deadline_s
        self.fresh_s = FRESH_S if fresh_s is None else fresh_s
        self.clock = clock
        self._known: tuple[float, HostState] | None = None  # when, and what was found
        self._asking: asyncio.Task[HostState] | None = None

    async def state(self) -> HostState:
        """What the host says now: a fresh answer, the query in flight (waited for up to
        ``deadline_s``), or a new query."""
        known = self._known
        if known is not None and self.clock() - known[0] < self.fresh_s:
            return known[1]
        if self._asking is None or self._asking.done():
            self._asking = asyncio.create_task(self._ask(), name="host-check")
        try:
            return await asyncio.wait_for(asyncio.shield(self._asking), self.deadline_s)
        except TimeoutError:
            found = self._no_answer(f"the host did not answer a query of its virtual "
                                    f"switches within {self.deadline_s:g} s")
            self._note(found)
            return found

    async def settled(self) -> HostState:
        """What the host says, as ``state``, except that a query still in flight at the
        deadline is waited for to its end (the backend's own bound ends one nothing
        answers: for WinRM, its operation timeout and answer grace): a host that answers
        late runs. For what no one waits on (the heartbeat's stamps), never for an
        answer to the management server."""
        found = await self.state()
        asking = self._asking
        if found.reach is Reach.UNREACHABLE and asking is not None and not asking.done():
            found = await asyncio.shield(asking)
        return found

    async def bounded(self, work: Callable[[], Awaitable[_T]]) -> _T:
        """What ``work``, a read-only query of the host, returns; CimUnreachable, saying why,
        as soon as nothing answers rather than when the backend gives up (over WinRM, its
        operation timeout and answer grace: 70 s by default; local WMI has no bound of
        its own). Nothing answers a host that cannot be reached, nor a WMI service hung
        on the machine the agent runs on (``Reach.SILENT``).

        When the last check found nothing answering, a check comes first (within
        ``deadline_s``) and ``work`` is not sent while it still is: no query more left
        hanging on a hung host. Otherwise ``work`` runs, and once it has taken
        ``deadline_s`` a check is made beside it: nothing answering, ``work`` is cut
        short; a host that answers (slowly: thousands of VMs) lets it run to its end.
        Only for reads: what it changes on the host must never be cut half-way."""
        known = self._known
        if known is not None and known[1].reach in _SILENCE:
            _refuse_unreachable(await self.state())
        running = asyncio.ensure_future(work())
        checking: asyncio.Future[HostState] | None = None
        try:
            done, _ = await asyncio.wait({running}, timeout=self.deadline_s)
            if not done:
                checking = asyncio.ensure_future(self.state())
                await asyncio.wait({running, checking}, return_when=asyncio.FIRST_COMPLETED)
                if not running.done():
                    _refuse_unreachable(checking.result())
            return await running
        finally:
            for left in (running, checking):
                if left is not None and not left.done():
                    left.cancel()

    async def _ask(self) -> HostState:
        try:
            await host.switch_names(self.hv)
        except CimUnreachable as error:
            found = self._no_answer(str(error))
        except CimRefused as error:
            found = HostState(Reach.SILENT if self.on_this_machine else Reach.REFUSED,
                              str(error))
        except AgentError as error:
            found = HostState(Reach.FAULTY, str(error))
        else:
            found = HostState(Reach.ANSWERS)
        self._note(found)
        return found

    def _no_answer(self, problem: str) -> HostState:
        return HostState(Reach.SILENT if self.on_this_machine else Reach.UNREACHABLE, problem)

    def _note(self, found: HostState) -> None:
        """Keep what was found; a change is logged once (not every check)."""
        before = self._known[1].reach if self._known is not None else Reach.ANSWERS
        self._known = (self.clock(), found)
        if before is not found.reach:
            log.warning("%s", "the Hyper-V host answers again" if found.usable else found.says)


#: What no answer from the host makes it.
_SILENCE = frozenset({Reach.UNREACHABLE, Reach.SILENT})


def _refuse_unreachable(found: HostState) -> None:
    if found.reach in _SILENCE:
        raise CimUnreachable(found.says)
