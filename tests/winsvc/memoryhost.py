"""A Windows host's service manager, firewall, task scheduler, disk, access lists, account
rights and local groups, in memory.

It keeps the rules the steps rely on: a start or stop takes a few looks at the state to
complete, a disabled service refuses to start, a service whose start or stop is pending
refuses a stop and ignores a start (as Windows answers ControlService and StartService),
creating an existing service fails, a service's virtual account (``NT SERVICE\\name``) is
known only while that service is installed, and a service can be made to hang while
stopping or to die right after starting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from hyperv_agent.errors import ServiceSetupError
from hyperv_agent.winsvc.host import (
    FirewallRule,
    RunState,
    ServiceSpec,
    ServiceState,
    StartType,
    takes_no_password,
    virtual_account_service,
)

TRANSITION_LOOKS = 2  # state reads a start or stop stays pending


def service_sid(name: str) -> str:
    """The SID of a service's virtual account, as ``sc.exe showsid`` prints it: S-1-5-80
    and the SHA-1 of the upper-cased name (UTF-16LE) as five little-endian numbers."""
    digest = hashlib.sha1(name.upper().encode("utf-16-le")).digest()
    numbers = (int.from_bytes(digest[i:i + 4], "little") for i in range(0, 20, 4))
    return "S-1-5-80-" + "-".join(str(n) for n in numbers)


@dataclass
class Service:
    state: ServiceState
    spec: ServiceSpec | None = None
    password: str | None = None
    pending_looks: int = 0
    target: RunState = RunState.STOPPED
    hangs_on_stop: bool = False
    dies_on_start: bool = False


@dataclass
class MemoryHost:
    services: dict[str, Service] = field(default_factory=dict)
    firewall: dict[str, FirewallRule] = field(default_factory=dict)
    tasks: set[str] = field(default_factory=set)
    files: dict[str, str] = field(default_factory=dict)
    folders: set[str] = field(default_factory=set)
    event_sources: set[str] = field(default_factory=set)
    restart_delays_s: dict[str, int] = field(default_factory=dict)
    #: Accounts by name (lower case) to SID; the others are unknown (1332).
    accounts: dict[str, str] = field(default_factory=lambda: {
        "lab\\svc": "S-1-5-21-7-8-9-1105", "lab\\svc-cloudstack": "S-1-5-21-7-8-9-1106",
        "lab\\gmsa-cloudstack$": "S-1-5-21-7-8-9-1107"})
    restricted: dict[str, str] = field(default_factory=dict)  # folder: the account's SID
    rights: dict[str, set[str]] = field(default_factory=dict)  # SID: rights of its own
    groups: dict[str, set[str]] = field(default_factory=lambda: {"S-1-5-32-578": set()})

    def add_service(self, name: str, run: RunState, start: StartType,
                    account: str | None = None) -> Service:
        service = Service(ServiceState(run, start, account))
        self.services[name] = service
        return service

    def snapshot(self) -> str:
        return repr((sorted((n, s.state) for n, s in self.services.items()),
                     sorted(self.firewall), sorted(self.tasks), sorted(self.files),
                     sorted(self.folders), sorted(self.event_sources),
                     sorted(self.restart_delays_s.items()), sorted(self.restricted.items()),
                     sorted((k, sorted(v)) for k, v in self.rights.items()),
                     sorted((k, sorted(v)) for k, v in self.groups.items())))

    def _get(self, name: str) -> Service:
        if name not in self.services:
            raise ServiceSetupError(f"service '{name}' does not exist (1060)")
        return self.services[name]

    # --- ServiceHost ---------------------------------------------------------------------

    def service_state(self, name: str) -> ServiceState | None:
        service = self.services.get(name)
        if service is None:
            return None
        if service.pending_looks > 0:
            service.pending_looks -= 1
            if service.pending_looks == 0:
                service.state = replace(service.state, run=service.target)
        return service.state

    def request_stop(self, name: str) -> None:
        service = self._get(name)
        if service.state.run is RunState.STOPPED:
            return  # ERROR_SERVICE_NOT_ACTIVE, which WindowsServiceHost takes as done
        if service.state.run in (RunState.START_PENDING, RunState.STOP_PENDING):
            # ControlService: ERROR_SERVICE_CANNOT_ACCEPT_CTRL while a start or stop is pending
            raise ServiceSetupError(f"service '{name}': The service cannot accept control "
                                    "messages at this time. (1061)")
        service.state = replace(service.state, run=RunState.STOP_PENDING)
        if not service.hangs_on_stop:
            service.target, service.pending_looks = RunState.STOPPED, TRANSITION_LOOKS

    def request_start(self, name: str) -> None:
        service = self._get(name)
        if service.state.start is StartType.DISABLED:
            raise ServiceSetupError(f"service '{name}' is disabled (1058)")
        if service.state.run is not RunState.STOPPED:
            # StartService: ERROR_SERVICE_ALREADY_RUNNING for any service that has not
            # stopped (a stopping one too), which WindowsServiceHost takes as done
            return
        service.state = replace(service.state, run=RunState.START_PENDING)
        service.target = RunState.STOPPED if service.dies_on_start else RunState.RUNNING
        service.pending_looks = TRANSITION_LOOKS

    def set_start_type(self, name: str, start: StartType) -> None:
        service = self._get(name)
        service.state = replace(service.state, start=start)

    def _check_password(self, spec: ServiceSpec, password: str | None) -> None:
        # CreateService and ChangeServiceConfig: the password of a managed service account
        # or a virtual account "must be NULL". Microsoft names no error for one given: the
        # refusal is modelled as ERROR_INVALID_PARAMETER.
        if spec.account and takes_no_password(spec.account) and password is not None:
            raise ServiceSetupError(f"installing service '{spec.name}': The parameter is "
                                    "incorrect. (87)")

    def create_service(self, spec: ServiceSpec, password: str | None) -> None:
        self._check_password(spec, password)
        if spec.name in self.services:
            raise ServiceSetupError(f"service '{spec.name}' exists (1073)")
        service = self.add_service(spec.name, RunState.STOPPED, spec.start, spec.account)
        service.spec, service.password = spec, password

    def update_service(self, spec: ServiceSpec, password: str | None) -> None:
        self._check_password(spec, password)
        service = self._get(spec.name)
        service.spec, service.password = spec, password
        service.state = replace(service.state, start=spec.start, account=spec.account)

    def delete_service(self, name: str) -> None:
        self._get(name)
        del self.services[name]
        self.event_sources.discard(name)

    def restart_on_failure(self, name: str, delay_s: int) -> None:
        self._get(name)
        self.restart_delays_s[name] = delay_s

    def register_event_source(self, name: str) -> None:
        self.event_sources.add(name)

    def firewall_rule_exists(self, name: str) -> bool:
        return name in self.firewall

    def add_firewall_rule(self, rule: FirewallRule) -> None:
        if rule.name in self.firewall:  # netsh adds a second rule of the same name
            raise AssertionError("a rule of that name exists; the step replaces it")
        self.firewall[rule.name] = rule

    def delete_firewall_rule(self, name: str) -> None:
        del self.firewall[name]

    def scheduled_tasks(self, prefix: str) -> tuple[str, ...]:
        return tuple(sorted(t for t in self.tasks if t.lower().startswith(prefix.lower())))

    def delete_scheduled_task(self, name: str) -> None:
        self.tasks.remove(name)

    def file_exists(self, path: str) -> bool:
        return path.lower() in self.files or path.lower() in self.folders

    def make_directory(self, path: str) -> None:
        self.folders.add(path.lower())

    def write_file(self, path: str, text: str) -> None:
        self.files[path.lower()] = text

    def read_file(self, path: str) -> str | None:
        return self.files.get(path.lower())

    def delete_file(self, path: str) -> None:
        self.files.pop(path.lower(), None)

    def account_sid(self, account: str) -> str:
        service = virtual_account_service(account)
        if service is not None and service.lower() in {n.lower() for n in self.services}:
            return service_sid(service)
        if account.lower() not in self.accounts:
            raise ServiceSetupError(f"no account {account!r}: No mapping between account "
                                    "names and security IDs was done. (LookupAccountName, "
                                    "1332)")
        return self.accounts[account.lower()]

    def restrict_folder(self, path: str, account_sid: str) -> None:
        if path.lower() not in self.folders:
            raise ServiceSetupError(f"cannot restrict access to {path}: The system cannot "
                                    "find the file specified. (SetNamedSecurityInfo, 2)")
        self.restricted[path.lower()] = account_sid

    def account_rights(self, sid: str) -> tuple[str, ...]:
        return tuple(sorted(self.rights.get(sid, ())))

    def add_account_right(self, sid: str, right: str) -> None:
        self.rights.setdefault(sid, set()).add(right)

    def remove_account_right(self, sid: str, right: str) -> None:
        self.rights[sid].remove(right)  # LSA refuses a right the account lacks

    def add_group_member(self, group_sid: str, sid: str) -> bool:
        members = self.groups[group_sid]
        added = sid not in members
        members.add(sid)
        return added

    def remove_group_member(self, group_sid: str, sid: str) -> bool:
        members = self.groups[group_sid]
        removed = sid in members
        members.discard(sid)
        return removed


@dataclass
class StepClock:
    """A clock that moves only when the code under test sleeps."""

    now_s: float = 0.0

    def monotonic(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds
