"""The HA heartbeat (protocol §5.3): this host stamps ``hb-<its private IP>`` in the root of
every registered shared pool, once when the pool is registered and then every
``interval_s``; a neighbour asked CheckOnHost reads the suspect's stamp there, and calls it
alive while the stamp is at most ``stale_s`` old.

The stamp is one line ``YYYY-M-D@H:M:S`` in UTC, not zero-padded, as the C# agent's
heartbeat task writes it, so this agent and the C# agent read each other's stamps.

How old a stamp is, is judged by the file server's clock, not by the two hosts'. The C#
agent (and KVM's ``kvmheartbeat.sh``) compares the time written in the stamp, the writer's
clock, with the reader's clock: hosts whose clocks differ by more than ``stale_s`` (a time
service that failed, hosts outside a domain) have a live host called Down, or, the writer
ahead, a dead host called alive for as long as the skew lasts. Here the file server's
clock is read twice in each pool: the stamp's modification time, set by the server when
the suspect wrote it, and the modification time of this host's own stamp, read back just
after it was written, carried forward to now by this host's monotonic clock. Their
difference is the stamp's age; neither host's wall clock takes part, so a host whose
stamps stop is called dead ``stale_s`` after its last one, whatever its clock said. The
estimate of the server's present errs by at most the time a write takes, towards alive.
This takes the server to set a file's modification time from its own clock when the file
is written, as file systems do unless the writer sets the time itself (this agent never
does; a copy that keeps times would be judged by the time it kept): Microsoft's SMB
documents do not say it in so many words, and it is the choice made here. A stamp that
says no time (empty, or part of the line: a C# agent's host writes its stamp in place,
truncated and then written, and a read can fall in between) is judged by its file's time
alone, and is stale without one.

Only where no file time can be had (a backend or server that gives none, or no stamp of
this host's own in that pool yet: its private address not known, its host unreachable)
is the stamp's content read against this host's clock, as the C# agent does; a stamp more
than ``interval_s`` ahead of it then tells that the clocks disagree, and the pool says
"cannot tell" rather than "alive" for as long as the skew lasts. Chosen over watching
whether a stamp changes (one CheckOnHost would have to wait out a whole stamp interval,
or rely on reads from before the host died, which an agent restarted since has lost)
and over answering "cannot tell" on every skew (which keeps a dead host called Up for as
long as the skew lasts). The server's clock stepped (by its time service) between
this host's stamp and a CheckOnHost shifts the age by the step, until the next stamp.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hyperv_agent.errors import AgentError
from hyperv_agent.handlers.hostcheck import HostCheck, Reach
from hyperv_agent.hostfs import locations
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.state import PoolRegistry, keep_private_ip, kept_private_ip

log = logging.getLogger("hyperv_agent.handlers.heartbeat")

#: Production timing. The management server investigates a host after missing its pings
#: for about 150 s (ping.interval 60 s x ping.timeout 2.5); a host is called down only
#: once three stamps in a row are missing.
DEFAULT_INTERVAL_S = 60.0
DEFAULT_STALE_S = 180.0
#: How far this machine's clock may be off a shared pool's file server's, measured at each
#: stamp (the time written in it against the time the server gave the file, as
#: ``stamp_skew`` reads it back), before the agent logs it. Its own judging of stamps takes no
#: wall clock, but a neighbour running the C# agent (or this one where it gets no file
#: times) reads this host's stamps with its own clock: ahead, this host looks alive after it
#: died (to this agent, beyond interval_s, "cannot tell"); at stale_s - interval_s (120 s
#: by default) behind, a live host looks down. 30 s, the bound ``doctor``'s clock check
#: warns at, comes well before either, and a time service that works (within a second or
#: so) never reaches it.
SKEW_WARN_S = 30.0


@dataclass(frozen=True)
class HeartbeatTiming:
    """How often this host stamps, and how old a neighbour's stamp may be while alive."""

    interval_s: float = DEFAULT_INTERVAL_S
    stale_s: float = DEFAULT_STALE_S


class Liveness(enum.Enum):
    ALIVE = "alive"  # a stamp at most stale_s old in one of the shared pools
    DEAD = "dead"  # a pool was read and no stamp in any of them is fresh
    UNKNOWN = "unknown"  # no shared pool registered, or none could be read
    SKEWED = "skewed"  # none fresh; one stamp from the future, with no file time to judge by


class Heartbeats:
    """Writes this host's stamps and reads its neighbours'. ``private_ip`` is the address
    stamps are written under: the one learnt from the StartupCommand (``learn``), the
    address the management server asks neighbours about; until one is learnt, the
    configured one. With a ``state_dir`` a learnt address is kept there and read back at
    the next start, before the configured one: an agent restarted between two of the
    management server's pings gets no StartupCommand (the MS noticed nothing), and must go
    on stamping under that address all the same, or a neighbour asked CheckOnHost later
    finds its stamp stale and calls a live host down.

    A stamp says the Hyper-V host is running, as the C# agent's, written on the host by
    a scheduled task, did: with a ``host_check`` nothing is stamped while nothing answers
    from the host (powered off, cut off, hung), so a neighbour calls it down once its
    stamps are stale, though this agent, on another machine, runs on. A host that answers
    with an error (WinRM refusing the account, answering 503, a WMI fault), or whose
    network refuses the connection (its WinRM service stopped: ``Reach.REFUSED``), is
    running, its VMs may be too, and is stamped: called Down, its VMs could be started
    elsewhere and run twice. So is a host that answers later than the host check's
    deadline, once it answers (the periodic stamp waits for it: ``_host_gone``). So is,
    without asking, a host that is the machine the agent runs on (``HostCheck``'s
    ``on_this_machine``): it runs while the agent does, whatever its WMI or WinRM answers."""

    def __init__(self, files: HostFiles, pools: PoolRegistry | None,
                 timing: HeartbeatTiming = HeartbeatTiming(),
                 clock: Callable[[], float] = time.time, private_ip: str | None = None,
                 state_dir: Path | None = None, host_check: HostCheck | None = None) -> None:
        self.files = files
        self.host_check = host_check
        self.pools = pools
        self.timing = timing
        self.clock = clock
        self.state_dir = state_dir
        # pool root -> (the server's time of this host's last stamp there, in s since the
        # epoch; this host's monotonic clock just after that stamp was written)
        self._server_times: dict[str, tuple[float, float]] = {}
        # pool root -> this machine's clock's skew off the file server's, as last logged
        self._skews: dict[str, float] = {}
        # pool root -> its stamp's write under way, and when it started (monotonic)
        self._writing: dict[str, tuple[asyncio.Task[None], float]] = {}
        self._held: set[str] = set()  # roots whose write outlasted a round, as logged
        # unexpected errors of writes, with their pool's root, not yet raised
        self._failed: list[tuple[str, Exception]] = []
        kept = kept_private_ip(state_dir) if state_dir is not None else None
        self.private_ip = kept or private_ip

    def learn(self, ip: str) -> None:
        """Stamp under ``ip`` from now on, the address the management server registered
        this host under (what it asks neighbours about), and keep it in the state
        directory. Anything but an IP address is logged and ignored."""
        try:
            ip = str(ipaddress.ip_address(ip.strip()))
        except ValueError:
            log.warning("heartbeat: privateIpAddress %r is not an IP address; stamps stay "
                        "under %s", ip, self.private_ip or "no address")
            return
        if ip == self.private_ip:
            return
        self.private_ip = ip
        if self.state_dir is not None:
            try:
                keep_private_ip(self.state_dir, ip)
            except OSError as error:
                log.warning("heartbeat: cannot keep the private address %s in %s (%s): "
                            "after a restart, stamps wait for the next StartupCommand",
                            ip, self.state_dir, error.strerror or error)

    async def stamp_all(self, within_s: float | None = None) -> float | None:
        """Stamp every registered shared pool, each on its own: a pool whose file server is
        slow or hung (it accepts and stops answering, until the file access gives up)
        delays no other pool's stamp. A pool that cannot be written is logged and skipped.
        The host is asked once for the round (``_host_gone``), then the writes are waited
        for, no longer than ``within_s`` (counted from the call) when given: a write not
        done by then goes on, and is not started again alongside itself when its pool's
        next turn comes (said once in the log: no pile-up of writes to a hung server). A
        pool no longer registered has its write under way cancelled. An error no layer
        below turned into an agent error is raised once its write has ended, by the round
        that waited for it or, ended later, by the next; those of several pools together,
        as one ExceptionGroup naming each pool, none dropped. Returns when the writes were
        started (``time.monotonic``), None when none was."""
        started = time.monotonic()
        roots = self.pools.roots() if self.pools is not None else ()
        for root in [root for root in self._writing if root not in roots]:
            self._writing[root][0].cancel()  # its pool was removed
        writing: list[asyncio.Task[None]] = []
        if roots and self.private_ip and not await self._host_gone(settled=True):
            writing = [self._writing_of(root, held_up=True) for root in roots]
        began = time.monotonic() if writing else None
        if writing:
            left_s = None if within_s is None else max(0.0, within_s - (time.monotonic()
                                                                          - started))
            await asyncio.wait(writing, timeout=left_s)
        # by pool, whichever ended first: a failure that lasts reads the same each round
        failed, self._failed = sorted(self._failed, key=lambda kept: kept[0]), []
        if len(failed) == 1:
            raise failed[0][1]
        if failed:
            raise ExceptionGroup(
                f"the heartbeat stamps of {len(failed)} pools failed: " + "; ".join(
                    f"in {root}, {type(error).__name__}: {error}" for root, error in failed),
                [error for _, error in failed])
        return began

    async def stamp(self, root: str) -> None:
        """Stamp the pool at ``root`` (nothing before the private address is known, nor
        while the host cannot be reached), or wait for its write under way. Asked while the
        management server waits (a pool's registration), it waits for the host no longer
        than the host check's deadline: a host that answers later is stamped by
        ``stamp_all``. Its caller given up, the write goes on, as one of a round's."""
        if self.private_ip and not await self._host_gone():
            task = self._writing_of(root, held_up=False)
            try:
                await asyncio.shield(task)
            except Exception as error:
                # raised here: not again by a round
                self._failed = [kept for kept in self._failed if kept[1] is not error]
                raise

    async def close(self) -> None:
        """Cancel the stamps' writes under way and wait for them to end."""
        writing = [task for task, _ in self._writing.values()]
        for task in writing:
            task.cancel()
        await asyncio.gather(*writing, return_exceptions=True)

    def _writing_of(self, root: str, *, held_up: bool) -> asyncio.Task[None]:
        """The write of the pool at ``root``'s stamp: the one under way, else a new one.
        ``held_up``: one under way outlasted its round (logged once, and when it ends)."""
        under_way = self._writing.get(root)
        if under_way is not None:
            task, since = under_way
            if held_up and root not in self._held:
                self._held.add(root)
                log.warning("heartbeat in %s: the stamp begun %.0f s ago is not written "
                            "yet (its file server slow or hung); the other pools are "
                            "stamped on time, and this one again once that write ends",
                            root, time.monotonic() - since)
            return task
        task = asyncio.create_task(self._write(root), name=f"heartbeat stamp in {root}")
        self._writing[root] = (task, time.monotonic())
        task.add_done_callback(lambda done: self._ended(root, done))
        return task

    def _ended(self, root: str, task: asyncio.Task[None]) -> None:
        """The write of the pool at ``root``'s stamp has ended: its pool may be written
        again, and an error nobody expected is kept for the next round to raise."""
        under_way = self._writing.pop(root)
        if root in self._held:
            self._held.discard(root)
            log.info("heartbeat in %s: the stamp held up for %.0f s has %s", root,
                     time.monotonic() - under_way[1],
                     "been cancelled" if task.cancelled() else "ended")
        error = None if task.cancelled() else task.exception()
        if isinstance(error, Exception):
            self._failed.append((root, error))

    async def _host_gone(self, *, settled: bool = False) -> bool:
        """Whether nothing answers from the host (logged: no stamp is written).
        ``settled``: a query that outlasts the host check's deadline is waited for to its
        end (``HostCheck.settled``): a host that answers late (under load, or busy with
        thousands of VMs) runs, and its VMs may. Its pings fail past the deadline, so
        the MS investigates it; a stamp withheld then would have the neighbours call it
        down while its VMs may run. A host that never answers is still found gone, when
        the backend gives the query up."""
        if self.host_check is None or self.host_check.on_this_machine:
            return False
        check = self.host_check
        found = await (check.settled() if settled else check.state())
        if found.reach is not Reach.UNREACHABLE:
            return False
        log.warning("heartbeat not stamped: %s", found.says)
        return True

    async def _write(self, root: str) -> None:
        if not self.private_ip:
            return
        path = heartbeat_path(root, self.private_ip)
        now = self.clock()
        try:
            await self.files.write_text(path, format_heartbeat(now))
        except AgentError as error:
            log.warning("cannot write the heartbeat in %s: %s", root, error)
            return
        written = time.monotonic()
        try:
            found = await self.files.stat(path)
        except AgentError as error:
            log.warning("cannot read the time of the heartbeat just written in %s: %s",
                        root, error)
            found = None
        if found is None or found.modified_ns is None:
            self._server_times.pop(root, None)
        else:
            self._server_times[root] = (found.modified_ns / 1e9, written)
            self._note_skew(root, now - found.modified_ns / 1e9)

    def _note_skew(self, root: str, skew: float) -> None:
        """Log once when this machine's clock is more than ``SKEW_WARN_S`` off the file
        server's of the pool at ``root`` (``skew`` > 0: ahead), again only when the skew
        has since moved by more than that, and once when it is back under half of it (so
        a skew hovering at the bound logs no line a stamp)."""
        logged = self._skews.get(root)
        if abs(skew) <= SKEW_WARN_S:
            if logged is not None and abs(skew) <= SKEW_WARN_S / 2:
                del self._skews[root]
                log.info("heartbeat in %s: this machine's clock is back within %.0f s of "
                         "the file server's", root, abs(skew))
            return
        if logged is not None and abs(skew - logged) <= SKEW_WARN_S:
            return
        self._skews[root] = skew
        log.warning("heartbeat in %s: this machine's clock is %.0f s %s the file server's "
                    "(more than %.0f s). This agent judges stamps by the server's clock, but "
                    "a neighbour running the C# agent reads them by its own: ahead, it calls this "
                    "host alive for a while after it has died; behind by more than %.0f s, "
                    "it calls this live host down, and the management server marks it Down. "
                    "Synchronise the clocks (NTP)",
                    root, abs(skew), "ahead of" if skew > 0 else "behind", SKEW_WARN_S,
                    self.timing.stale_s - self.timing.interval_s)

    def _server_now(self, root: str) -> float | None:
        """The file server's present time in the pool at ``root``: the time it gave this
        host's last stamp there, plus the time since by this host's monotonic clock (taken
        after that write returned, so this errs early: a stamp's age, short); None before
        this host has a stamp there whose time could be read."""
        known = self._server_times.get(root)
        if known is None:
            return None
        stamped, written = known
        return stamped + (time.monotonic() - written)

    async def liveness(self, ip: str, within_s: float | None = None) -> Liveness:
        """What the shared pools say of the host at ``ip``: alive as soon as one holds a
        fresh stamp; a stamp that tells only that the clocks disagree keeps the others'
        stale stamps from condemning the host. The pools are read side by side, for no
        longer than ``within_s`` when given: a pool not read by then (its file server
        hung or gone, which the file access finds only after a while) counts as one that
        cannot be read, and the others decide. Read-only."""
        roots = self.pools.roots() if self.pools is not None else ()
        reading = {asyncio.ensure_future(self._pool_says(root, ip)): root for root in roots}
        said: set[Liveness] = set()
        try:
            for next_read in asyncio.as_completed(reading, timeout=within_s):
                said.add(await next_read)
                if Liveness.ALIVE in said:
                    return Liveness.ALIVE
        except TimeoutError:
            for task, root in reading.items():
                if not task.done():
                    log.warning("heartbeat of %s in %s not read within %g s: the other "
                                "pools decide", ip, root, within_s)
        finally:
            for task in reading:
                task.cancel()
        for verdict in (Liveness.SKEWED, Liveness.DEAD):
            if verdict in said:
                return verdict
        return Liveness.UNKNOWN

    async def _pool_says(self, root: str, ip: str) -> Liveness:
        """What the pool at ``root`` says of the host at ``ip``: ALIVE for a fresh stamp,
        SKEWED for one that tells only that the clocks disagree, DEAD for a stale stamp or
        none, UNKNOWN when the pool cannot be read."""
        path = heartbeat_path(root, ip)
        try:
            text = await self.files.read_text(path)
        except AgentError as error:
            log.warning("heartbeat of %s in %s unreadable: %s", ip, root, error)
            return Liveness.UNKNOWN
        if text is None:
            return Liveness.DEAD if await self._reachable(root) else Liveness.UNKNOWN
        fresh = await self._fresh(root, path, ip, parse_heartbeat(text))
        if fresh is None:
            return Liveness.SKEWED
        return Liveness.ALIVE if fresh else Liveness.DEAD

    async def _fresh(self, root: str, path: str, ip: str, beat: float | None) -> bool | None:
        """Whether the stamp at ``path``, which says ``beat``, is at most ``stale_s`` old:
        by the file server's clock where its time and the server's present are known,
        else by this host's clock; None when only the latter is known and the stamp is
        from its future. A stamp that says no time (``beat`` None: empty, or not a stamp)
        is judged by its file's time alone, and is not fresh without one: a C# agent's
        host writes its stamp in place (its heartbeat task truncates the file, then writes
        the line), so a read at that moment finds it empty, just written, while its host
        runs."""
        server_now = self._server_now(root)
        found = None
        if server_now is not None:
            try:
                found = await self.files.stat(path)
            except AgentError as error:
                log.warning("heartbeat of %s in %s: its time unreadable: %s", ip, root, error)
        if server_now is not None and found is not None and found.modified_ns is not None:
            stamped = found.modified_ns / 1e9
            off = beat - stamped if beat is not None else 0.0
            if abs(off) > self.timing.interval_s:
                log.warning("heartbeat of %s in %s: its host's clock is %.0f s %s the file "
                            "server's; judged by the file's time", ip, root, abs(off),
                            "ahead of" if off > 0 else "behind")
            return server_now - stamped <= self.timing.stale_s
        if beat is None:
            return False
        age = self.clock() - beat
        if age < -self.timing.interval_s:
            log.warning("heartbeat of %s in %s is %.0f s ahead of this host's clock and no "
                        "file time tells its age: cannot tell whether the host is alive "
                        "until the clocks agree", ip, root, -age)
            return None
        return age <= self.timing.stale_s

    async def _reachable(self, root: str) -> bool:
        """Whether the pool itself is there: a missing stamp in a pool that cannot be
        reached says nothing of the neighbour."""
        try:
            return await self.files.exists(root)
        except AgentError as error:
            log.warning("shared pool %s unreachable: %s", root, error)
            return False


def heartbeat_path(root: str, ip: str) -> str:
    """``<pool root>\\hb-<ip>``; the address is checked, so it cannot leave the pool."""
    return locations.confine(root, f"hb-{ipaddress.ip_address(ip)}")


def stamp_skew(text: str | None, modified_ns: int | None) -> float | None:
    """How far the clock that wrote the stamp ``text`` was ahead of the file server's
    (negative: behind), by the stamp's modification time ``modified_ns``, which the server
    set when the stamp was written; None without either or for a malformed stamp. A stamp
    holds whole seconds: the skew is short by up to one, plus the time the write took."""
    beat = parse_heartbeat(text) if text is not None else None
    if beat is None or modified_ns is None:
        return None
    return beat - modified_ns / 1e9


def format_heartbeat(epoch: float) -> str:
    """``YYYY-M-D@H:M:S`` in UTC, not zero-padded, as the C# agent's heartbeat task writes."""
    t = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return f"{t.year}-{t.month}-{t.day}@{t.hour}:{t.minute}:{t.second}"


def parse_heartbeat(text: str) -> float | None:
    """The moment a heartbeat file records; None when it is not in the expected format."""
    try:
        moment = datetime.datetime.strptime(text.strip(), "%Y-%m-%d@%H:%M:%S")
    except ValueError:
        return None
    return moment.replace(tzinfo=datetime.UTC).timestamp()
