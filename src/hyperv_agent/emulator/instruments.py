"""Instruments of the emulated host: round-trip counters and fault injection.

Counters are kept per primitive (``query``, ``associators``, ``get``, ``invoke``, ``spawn``)
and per method (``invoke:DefineSystem``); ``job_poll`` counts gets of job objects, which
are not round trips of the operation but of its wait, and ``jobs_started`` counts the
asynchronous jobs (each one wait for the caller). ``summarized`` counts the VMs whose
summaries GetSummaryInformation returned (what a call asked Hyper-V to look at), and
``examined`` the instances a SELECT evaluated its WHERE clause on (what its indexes
could not rule out).
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections import Counter
from dataclasses import dataclass, field

CALL_PRIMITIVES = ("query", "associators", "get", "invoke", "spawn")


@dataclass(frozen=True)
class RoundTrips:
    """A snapshot of the counters."""

    counts: dict[str, int]

    @property
    def calls(self) -> int:
        """Round trips of the operation itself (job polls excluded)."""
        return sum(self.counts.get(name, 0) for name in CALL_PRIMITIVES)

    @property
    def waits(self) -> int:
        return self.counts.get("jobs_started", 0)

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)

    def __sub__(self, other: RoundTrips) -> RoundTrips:
        names = set(self.counts) | set(other.counts)
        return RoundTrips({n: self[n] - other[n] for n in names if self[n] - other[n]})


@dataclass
class Counters:
    """Counts kept by the event loop's thread and the emulator's, so behind a lock."""

    _counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> RoundTrips:
        with self._lock:
            return RoundTrips(dict(self._counts))

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


@dataclass(frozen=True)
class JobFault:
    """How the next job of a method ends: in Exception with a code, or never."""

    error_code: int = 32768
    description: str = "The operation failed (injected fault)."
    never_finishes: bool = False


@dataclass(frozen=True)
class GuestAddresses:
    """What a guest has configured on one of its network adapters: its addresses with
    their prefix lengths, and whether DHCP gave them."""

    interfaces: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]
    dhcp: bool


def _mac_key(mac: str) -> str:
    return mac.replace(":", "").replace("-", "").upper()


@dataclass
class Faults:
    """One-shot faults, consumed by the next matching call (method names, any case)."""

    _return_codes: dict[str, list[int]] = field(default_factory=dict)
    _jobs: dict[str, list[JobFault | None]] = field(default_factory=dict)
    _durations: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    _lost: dict[str, list[bool]] = field(default_factory=dict)
    _ignoring_shutdown: set[str] = field(default_factory=set)
    _without_services: set[str] = field(default_factory=set)
    _guest_addresses: dict[tuple[str, str], GuestAddresses] = field(default_factory=dict)
    _die_at_commit: bool = False

    def die_during_next_commit(self) -> None:
        """The process exits (status 70) in the middle of the next write to the state
        database, as a killed agent would: after the rows are written, before COMMIT."""
        self._die_at_commit = True

    def before_commit(self) -> None:
        if self._die_at_commit:
            os._exit(70)

    def ignore_shutdown(self, vm: str) -> None:
        """The guest of ``vm`` (name or GUID) ignores shutdown requests from now on."""
        self._ignoring_shutdown.add(vm.lower())

    def ignores_shutdown(self, guid: str, name: str) -> bool:
        return bool({guid.lower(), name.lower()} & self._ignoring_shutdown)

    def lack_integration_services(self, vm: str) -> None:
        """The guest of ``vm`` (name or GUID) runs without Hyper-V's integration services
        (no hv_utils, no Integration Services installed): from its next start its shutdown
        and KVP components show No Contact, InitiateShutdown and InitiateReboot answer
        32780 (not ready) and its summary's Heartbeat is No Contact."""
        self._without_services.add(vm.lower())

    def lacks_integration_services(self, guid: str, name: str) -> bool:
        return bool({guid.lower(), name.lower()} & self._without_services)

    def guest_addresses(self, vm: str, mac: str, *addresses: str, dhcp: bool = True) -> None:
        """The guest of ``vm`` (name or GUID) has, from now on, ``addresses`` (each
        ``address/prefix length``: ``10.1.1.23/24``, ``fe80::5/64``) on its network adapter
        with MAC ``mac`` (``02:00:4c:5f:00:08``, ``02004C5F0008``), from DHCP unless
        ``dhcp`` is false; none: it has no address (no lease yet). Hyper-V shows them in
        the adapter's Msvm_GuestNetworkAdapterConfiguration while the VM runs, when its
        guest has integration services (their data exchange service reports them)."""
        interfaces = tuple(ipaddress.ip_interface(a) for a in addresses)
        self._guest_addresses[(vm.lower(), _mac_key(mac))] = GuestAddresses(interfaces, dhcp)

    def guest_addresses_of(self, guid: str, name: str, mac: str) -> GuestAddresses | None:
        """What ``guest_addresses`` gave the adapter ``mac`` of the VM ``guid`` or ``name``."""
        mac = _mac_key(mac)
        return (self._guest_addresses.get((guid.lower(), mac))
                or self._guest_addresses.get((name.lower(), mac)))

    def fail_next_call(self, method: str, return_code: int) -> None:
        """The next call of ``method`` returns ``return_code`` and changes nothing."""
        self._return_codes.setdefault(method.lower(), []).append(return_code)

    def fail_next_job(
        self, method: str, error_code: int = 32768, description: str | None = None,
        *, after: int = 0,
    ) -> None:
        """The next job of ``method`` (or, with ``after``, the one after that many more
        succeed) ends in Exception; its changes are not applied: its records, and the files
        it writes (``Call.files``), stay as they were."""
        fault = JobFault(error_code, description or JobFault.description)
        self._jobs.setdefault(method.lower(), []).extend([None] * after + [fault])

    def hang_next_job(self, method: str) -> None:
        """The next job of ``method`` stays Running for ever; its changes are not applied."""
        self._jobs.setdefault(method.lower(), []).append(JobFault(never_finishes=True))

    def slow_next_job(self, method: str, duration_s: float, *,
                      cancellable: bool = False) -> None:
        """The next job of ``method`` that succeeds takes ``duration_s`` instead of the
        latency model's job time (a long migration, say); its work is done when it starts,
        so it cannot be stopped. With ``cancellable``, it can be (a long merge, which
        Hyper-V stops midway): Terminate ends it at once, and what it wrote stays, as a
        disk written partly would."""
        self._durations.setdefault(method.lower(), []).append((duration_s, cancellable))

    def lose_next_job(self, method: str, *, done: bool) -> None:
        """The host loses the next job of ``method``: its path answers not found (WMI's
        WBEM_E_NOT_FOUND) from a moment after the call, before anyone can read how it
        ended. With ``done`` its work is done and it goes the moment it ends, as a job
        Hyper-V removes ``TimeBeforeRemoval`` after its end goes when its caller's poll
        comes later than that; without, it goes at once and none of its work is done (the
        call's changes are discarded, a move is never made), as when the Virtual Machine
        Management Service restarts and loses the jobs it runs. What a restart leaves of
        a job's work Microsoft does not say: the emulator's choice is nothing."""
        self._lost.setdefault(method.lower(), []).append(done)

    def take_lost_job(self, method: str) -> bool | None:
        """Whether the next job of ``method`` is lost (``lose_next_job``), its work done
        (True) or not (False); None: it is not lost."""
        queue = self._lost.get(method.lower())
        return queue.pop(0) if queue else None

    def take_slow_job(self, method: str) -> tuple[float, bool] | None:
        """The duration of the next job of ``method``, and whether it can be stopped."""
        queue = self._durations.get(method.lower())
        return queue.pop(0) if queue else None

    def take_return_code(self, method: str) -> int | None:
        queue = self._return_codes.get(method.lower())
        return queue.pop(0) if queue else None

    def take_job_fault(self, method: str) -> JobFault | None:
        queue = self._jobs.get(method.lower())
        return queue.pop(0) if queue else None

    def next_job_spoiled(self, method: str) -> bool:
        """Whether the next job of ``method`` is made to fail, hang (``fail_next_job``,
        ``hang_next_job``) or be lost undone (``lose_next_job`` without ``done``), read
        without taking it: a job that fails on its own first is not that job."""
        jobs, lost = self._jobs.get(method.lower()), self._lost.get(method.lower())
        return bool(jobs and jobs[0] is not None) or bool(lost and lost[0] is False)

    def clear(self) -> None:
        self._return_codes.clear()
        self._jobs.clear()
        self._lost.clear()
        self._ignoring_shutdown.clear()
        self._without_services.clear()
        self._guest_addresses.clear()
