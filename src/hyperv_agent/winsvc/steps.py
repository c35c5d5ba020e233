"""The steps of installing, starting, stopping and removing the service: data, each with
the line a dry run prints, the equivalent command an administrator could type, and what
it does against a :class:`~hyperv_agent.winsvc.host.ServiceHost`.

Every step is safe to repeat: it looks first and does only what is missing, and says
what it found (``already stopped``, ``kept the existing file``). Waits are bounded and
end in :class:`~hyperv_agent.errors.ServiceSetupError`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Protocol

from hyperv_agent import winacl
from hyperv_agent.errors import ServiceSetupError
from hyperv_agent.winsvc import tools
from hyperv_agent.winsvc.host import (
    FirewallRule,
    RunState,
    ServiceHost,
    ServiceSpec,
    ServiceState,
    StartType,
)

SERVICE_WAIT_S = 60.0
POLL_S = 0.5
_AUTOMATIC = (StartType.AUTO, StartType.DELAYED_AUTO)


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Step(Protocol):
    @property
    def text(self) -> str:
        """What the step does, in one line."""

    @property
    def command(self) -> str:
        """The equivalent command an administrator could type."""

    def run(self, host: ServiceHost, clock: Clock) -> str:
        """Carry the step out; what was found or done, in a few words."""


def _quoted(names: tuple[str, ...]) -> str:
    return " or ".join(f"'{name}'" for name in names)


def _wait_for(host: ServiceHost, clock: Clock, name: str, wanted: RunState,
              timeout_s: float) -> ServiceState | None:
    """The service's state once it is ``wanted``, stopped, or gone; None when it is
    still something else after ``timeout_s``."""
    deadline = clock.monotonic() + timeout_s
    while True:
        state = host.service_state(name)
        if state is None or state.run in (wanted, RunState.STOPPED):
            return state
        if clock.monotonic() >= deadline:
            return None
        clock.sleep(POLL_S)


@dataclass(frozen=True)
class RefuseCSharpAgent:
    """Stop a fresh install while the C# agent would hold port 8250."""

    names: tuple[str, ...]
    port: int

    @property
    def text(self) -> str:
        return (f"Check that the C# agent's service ({_quoted(self.names)}) is neither "
                f"running nor set to start automatically: it would hold port {self.port}")

    @property
    def command(self) -> str:
        listed = ",".join(f"'{name}'" for name in self.names)
        return (f"Get-Service {listed} -ErrorAction SilentlyContinue | "
                "Select-Object Name, Status, StartType")

    def run(self, host: ServiceHost, clock: Clock) -> str:
        for name in self.names:
            state = host.service_state(name)
            if state is None:
                continue
            if state.run is not RunState.STOPPED or state.start in _AUTOMATIC:
                how = "running" if state.run is not RunState.STOPPED else "set to start"
                raise ServiceSetupError(
                    f"the C# agent's service '{name}' is {how}: it holds port {self.port}; "
                    "add --replace-csharp-agent to stop and disable it")
        return "not in the way"


@dataclass(frozen=True)
class StopService:
    """Stop a service if it is installed and running, and wait until it has stopped."""

    name: str
    why: str = ""
    timeout_s: float = SERVICE_WAIT_S

    @property
    def text(self) -> str:
        why = f" ({self.why})" if self.why else ""
        return (f"Stop service '{self.name}' if it is installed{why}, waiting up to "
                f"{self.timeout_s:g} s")

    @property
    def command(self) -> str:
        return f'sc.exe stop "{self.name}"'

    def run(self, host: ServiceHost, clock: Clock) -> str:
        state = host.service_state(self.name)
        if state is None:
            return "not installed"
        if state.run is RunState.STOPPED:
            return "already stopped"
        deadline = clock.monotonic() + self.timeout_s
        if state.run is RunState.START_PENDING:
            # Windows refuses a stop while a start (or a stop) is pending (ControlService:
            # ERROR_SERVICE_CANNOT_ACCEPT_CTRL, 1061): the start is let finish first
            state = _wait_for(host, clock, self.name, RunState.RUNNING, self.timeout_s)
            if state is None:
                raise ServiceSetupError(f"service '{self.name}' is still starting after "
                                        f"{self.timeout_s:g} s: it cannot be stopped before "
                                        "it has started")
            if state.run is RunState.STOPPED:
                return "stopped"
        if state.run is not RunState.STOP_PENDING:  # a stop under way is waited for
            host.request_stop(self.name)
        state = _wait_for(host, clock, self.name, RunState.STOPPED,
                          max(deadline - clock.monotonic(), 0.0))
        if state is not None and state.run is not RunState.STOPPED:
            raise ServiceSetupError(f"service '{self.name}' is {state.run.name.lower()} "
                                    "instead of stopping")
        if state is None:
            raise ServiceSetupError(f"service '{self.name}' did not stop within "
                                    f"{self.timeout_s:g} s")
        return "stopped"


@dataclass(frozen=True)
class SetStartType:
    """Set how an installed service starts; a missing service is not an error."""

    name: str
    start: StartType

    @property
    def text(self) -> str:
        return f"Set service '{self.name}' to start type {self.start.value}, if installed"

    @property
    def command(self) -> str:
        return f'sc.exe config "{self.name}" start= {self.start.value}'

    def run(self, host: ServiceHost, clock: Clock) -> str:
        state = host.service_state(self.name)
        if state is None:
            return "not installed"
        if state.start is self.start:
            return f"already {self.start.value}"
        host.set_start_type(self.name, self.start)
        return self.start.value


@dataclass(frozen=True)
class DeleteScheduledTasks:
    """Delete every scheduled task whose name starts with ``prefix``."""

    prefix: str
    why: str

    @property
    def text(self) -> str:
        return f"Delete the scheduled tasks named {self.prefix}* ({self.why})"

    @property
    def command(self) -> str:
        return (f"{tools.shown(tools.task_list())}, then for each {self.prefix}* task: "
                f"{tools.shown(tools.task_delete('NAME'))}")

    def run(self, host: ServiceHost, clock: Clock) -> str:
        names = host.scheduled_tasks(self.prefix)
        for name in names:
            host.delete_scheduled_task(name)
        return f"deleted {len(names)}" + (f": {', '.join(names)}" if names else "")


@dataclass(frozen=True)
class MakeDirectory:
    path: str

    @property
    def text(self) -> str:
        return f"Create folder {self.path}"

    @property
    def command(self) -> str:
        return f'New-Item -ItemType Directory -Force -Path "{self.path}"'

    def run(self, host: ServiceHost, clock: Clock) -> str:
        existed = host.file_exists(self.path)
        host.make_directory(self.path)
        return "already there" if existed else "created"


@dataclass(frozen=True)
class WriteDefaultConfig:
    """Write the service's configuration file unless one is there already."""

    path: str
    content: str = field(repr=False)
    summary: str = ""

    @property
    def text(self) -> str:
        return f"Write {self.path} ({self.summary}) unless it exists"

    @property
    def command(self) -> str:
        settings = [line.split("  #")[0].rstrip() for line in self.content.splitlines()
                    if line.strip() and not line.startswith("#")]
        value = "`n".join(settings).replace('"', '`"')
        return (f'if (-not (Test-Path "{self.path}")) {{ Set-Content -Path "{self.path}" '
                f'-Value "{value}" }}')

    def run(self, host: ServiceHost, clock: Clock) -> str:
        if host.file_exists(self.path):
            return "kept the existing file"
        host.write_file(self.path, self.content)
        return "written"


@dataclass(frozen=True)
class RegisterEventSource:
    name: str

    @property
    def text(self) -> str:
        return f"Register '{self.name}' as a source of the Application event log"

    @property
    def command(self) -> str:
        return f"New-EventLog -LogName Application -Source '{self.name}'"

    def run(self, host: ServiceHost, clock: Clock) -> str:
        host.register_event_source(self.name)
        return "registered"


@dataclass(frozen=True)
class InstallService:
    """Create the service, or bring an installed one to ``spec`` (upgrades, re-runs)."""

    spec: ServiceSpec
    password: str | None = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str:
        account = self.spec.account or "LocalSystem"
        return (f"Install service '{self.spec.name}' (\"{self.spec.display_name}\"): "
                f"pywin32's pythonservice.exe hosting {self.spec.python_class}, running as "
                f"{account}, starting {self.spec.start.value}, given "
                f"{self.spec.shutdown_timeout_s} s to stop when the host shuts down; update "
                "it if installed")

    @property
    def command(self) -> str:
        return (f"python -c \"import win32serviceutil; win32serviceutil.InstallService("
                f"'{self.spec.python_class}', '{self.spec.name}', "
                f"'{self.spec.display_name}')\"")

    def run(self, host: ServiceHost, clock: Clock) -> str:
        if host.service_state(self.spec.name) is None:
            host.create_service(self.spec, self.password)
            return "installed"
        host.update_service(self.spec, self.password)
        return "already installed: configuration updated"


@dataclass(frozen=True)
class RestartOnFailure:
    name: str
    delay_s: int

    @property
    def text(self) -> str:
        return (f"Make Windows restart '{self.name}' {self.delay_s} s after it fails "
                "(also when it stops with an error)")

    @property
    def command(self) -> str:
        return "; ".join(tools.shown(argv)
                         for argv in tools.restart_on_failure(self.name, self.delay_s))

    def run(self, host: ServiceHost, clock: Clock) -> str:
        host.restart_on_failure(self.name, self.delay_s)
        return "set"


@dataclass(frozen=True)
class AddFirewallRule:
    """Allow inbound TCP on the rule's port; a rule of that name is replaced."""

    rule: FirewallRule

    @property
    def text(self) -> str:
        return (f"Allow inbound TCP {self.rule.port} in Windows Firewall (rule "
                f"\"{self.rule.name}\", replaced if present)")

    @property
    def command(self) -> str:
        return tools.shown(tools.firewall_add(self.rule))

    def run(self, host: ServiceHost, clock: Clock) -> str:
        replaced = host.firewall_rule_exists(self.rule.name)
        if replaced:
            host.delete_firewall_rule(self.rule.name)
        host.add_firewall_rule(self.rule)
        return "replaced" if replaced else "added"


@dataclass(frozen=True)
class DeleteFirewallRule:
    name: str

    @property
    def text(self) -> str:
        return f"Delete the Windows Firewall rule \"{self.name}\" if present"

    @property
    def command(self) -> str:
        return tools.shown(tools.firewall_delete(self.name))

    def run(self, host: ServiceHost, clock: Clock) -> str:
        if not host.firewall_rule_exists(self.name):
            return "not present"
        host.delete_firewall_rule(self.name)
        return "deleted"


@dataclass(frozen=True)
class StartService:
    """Start a service and wait until it runs; ``missing_ok``: a missing one is skipped."""

    name: str
    missing_ok: bool = False
    timeout_s: float = SERVICE_WAIT_S
    stopped_hint: str = ""

    @property
    def text(self) -> str:
        where = " if it is installed" if self.missing_ok else ""
        return f"Start service '{self.name}'{where}, waiting up to {self.timeout_s:g} s"

    @property
    def command(self) -> str:
        return f'sc.exe start "{self.name}"'

    def run(self, host: ServiceHost, clock: Clock) -> str:
        state = host.service_state(self.name)
        if state is None:
            if self.missing_ok:
                return "not installed"
            raise ServiceSetupError(f"service '{self.name}' is not installed; run "
                                    "`hyperv-agent service install`")
        if state.run is RunState.RUNNING:
            return "already running"
        if state.start is StartType.DISABLED:
            raise ServiceSetupError(f"service '{self.name}' is disabled")
        return self._start(host, clock, state.run)

    def _start(self, host: ServiceHost, clock: Clock, run: RunState) -> str:
        deadline = clock.monotonic() + self.timeout_s
        if run is RunState.STOP_PENDING:
            # StartService answers a service that has not stopped yet with
            # ERROR_SERVICE_ALREADY_RUNNING (1056), which request_start takes for "running":
            # the stop under way is let finish first, or the start would be lost
            stopped = _wait_for(host, clock, self.name, RunState.STOPPED, self.timeout_s)
            if stopped is None or stopped.run is not RunState.STOPPED:
                raise ServiceSetupError(f"service '{self.name}' is still stopping after "
                                        f"{self.timeout_s:g} s: it cannot be started before "
                                        "it has stopped")
            run = RunState.STOPPED
        if run is not RunState.START_PENDING:  # a start under way is waited for
            host.request_start(self.name)
            clock.sleep(POLL_S)  # let a start request leave STOPPED before watching it
        state = _wait_for(host, clock, self.name, RunState.RUNNING,
                          max(deadline - clock.monotonic(), 0.0))
        if state is None:
            raise ServiceSetupError(f"service '{self.name}' did not start within "
                                    f"{self.timeout_s:g} s")
        if state.run is not RunState.RUNNING:
            hint = f"; {self.stopped_hint}" if self.stopped_hint else ""
            raise ServiceSetupError(f"service '{self.name}' stopped right after starting"
                                    + hint)
        return "running"


@dataclass(frozen=True)
class DeleteService:
    name: str

    @property
    def text(self) -> str:
        return f"Delete service '{self.name}' and its event log source, if installed"

    @property
    def command(self) -> str:
        return f'sc.exe delete "{self.name}"'

    def run(self, host: ServiceHost, clock: Clock) -> str:
        if host.service_state(self.name) is None:
            return "not installed"
        host.delete_service(self.name)
        return "deleted"



@dataclass(frozen=True)
class RestrictFolder:
    """Keep the service's folder (agent.toml, which may hold SMB passwords, the pool
    registry, state, logs) from the local users ``%ProgramData%`` lets read what it holds.

    ``service``: ``account`` is that service's virtual account (``NT SERVICE\\name``),
    which Windows knows only once the service is installed; until then the folder is
    restricted to SYSTEM and Administrators, and a later step, after the install, lets
    the account in. An installed service's account is let in at once, so a repeated
    install never takes the folder from the running service."""

    path: str
    account: str | None  # DOMAIN\\user; None: LocalSystem
    service: str | None = None

    @property
    def text(self) -> str:
        if self.service is not None:
            return (f"Let only SYSTEM, Administrators and, once service '{self.service}' is "
                    f"installed, {self.account} open {self.path} and what it holds (a "
                    "protected access list, inherited; %ProgramData% lets every local user "
                    "read)")
        return (f"Let only SYSTEM, Administrators and {self.account or 'LocalSystem'} open "
                f"{self.path} and what it holds (a protected access list, inherited; "
                "%ProgramData% lets every local user read)")

    @property
    def command(self) -> str:
        grants = [f'"*{winacl.LOCAL_SYSTEM}:(OI)(CI)F"', f'"*{winacl.ADMINISTRATORS}:(OI)(CI)F"']
        if self.account and self.service is None:
            grants.append(f'"{self.account}:(OI)(CI)F"')
        return f'icacls "{self.path}" /inheritance:r /grant:r {" ".join(grants)}'

    def run(self, host: ServiceHost, clock: Clock) -> str:
        if self.service is not None and host.service_state(self.service) is None:
            host.restrict_folder(self.path, winacl.LOCAL_SYSTEM)
            return f"restricted; {self.account} is let in once the service is installed"
        sid = winacl.LOCAL_SYSTEM if self.account is None else host.account_sid(self.account)
        host.restrict_folder(self.path, sid)
        return "restricted"


def _grants(host: ServiceHost, record: str) -> list[dict[str, str]]:
    text = host.read_file(record)
    if text is None:
        return []
    try:
        grants = json.loads(text)["granted"]
        if isinstance(grants, list) and all(isinstance(g, dict) for g in grants):
            return grants
    except (ValueError, KeyError, TypeError):
        pass
    raise ServiceSetupError(f"{record} is not what `service install` writes; delete it once "
                            "you have checked the account's rights by hand")


def _record(host: ServiceHost, record: str, grant: dict[str, str]) -> None:
    grants = _grants(host, record)
    if grant not in grants:
        host.write_file(record, json.dumps({"granted": [*grants, grant]}, indent=1) + "\n")


@dataclass(frozen=True)
class GrantServiceLogon:
    """Give the service's account the right to log on as a service: Windows grants it when
    an account is set in the Services console, not when it is set through the service
    control manager's API, and a service whose account lacks it does not start (1069)."""

    account: str
    record: str

    @property
    def text(self) -> str:
        return (f"Grant {self.account} the right to log on as a service "
                f"({winacl.SERVICE_LOGON_RIGHT}) unless it holds it or is a built-in or "
                f"virtual service account; recorded in {self.record} for `service remove`")

    @property
    def command(self) -> str:
        return ("python -c \"import win32security as s; s.LsaAddAccountRights(s.LsaOpenPolicy("
                "None, s.POLICY_LOOKUP_NAMES | s.POLICY_CREATE_ACCOUNT), s.LookupAccountName("
                f"None, r'{self.account}')[0], ['{winacl.SERVICE_LOGON_RIGHT}'])\"")

    def run(self, host: ServiceHost, clock: Clock) -> str:
        sid = host.account_sid(self.account)
        if not winacl.needs_logon_right(sid):
            return "not needed: a built-in or virtual service account"
        if winacl.SERVICE_LOGON_RIGHT in host.account_rights(sid):
            return "already held"
        host.add_account_right(sid, winacl.SERVICE_LOGON_RIGHT)
        _record(host, self.record, {"account": self.account, "sid": sid,
                                    "right": winacl.SERVICE_LOGON_RIGHT})
        return "granted"


@dataclass(frozen=True)
class JoinHyperVAdministrators:
    """Put the service's account in *Hyper-V Administrators*: Hyper-V's WMI v2 namespace
    refuses an account in neither it nor Administrators."""

    account: str
    record: str

    @property
    def text(self) -> str:
        return (f"Add {self.account} to the local group Hyper-V Administrators "
                f"({winacl.HYPERV_ADMINISTRATORS}), which Hyper-V's WMI v2 namespace requires, "
                f"unless it is a member; recorded in {self.record} for `service remove`")

    @property
    def command(self) -> str:
        return (f"Add-LocalGroupMember -SID {winacl.HYPERV_ADMINISTRATORS} "
                f"-Member \"{self.account}\"")

    def run(self, host: ServiceHost, clock: Clock) -> str:
        sid = host.account_sid(self.account)
        if sid == winacl.LOCAL_SYSTEM:
            return "not needed: LocalSystem"
        if not host.add_group_member(winacl.HYPERV_ADMINISTRATORS, sid):
            return "already a member"
        _record(host, self.record, {"account": self.account, "sid": sid,
                                    "group": winacl.HYPERV_ADMINISTRATORS})
        return "added"


@dataclass(frozen=True)
class RevokeGrants:
    """Take back what ``service install`` granted (:class:`GrantServiceLogon`,
    :class:`JoinHyperVAdministrators`) and nothing else: a right or membership the account
    had before the install is not in the record."""

    record: str

    @property
    def text(self) -> str:
        return (f"Take back from the service's account what `service install` granted and "
                f"recorded in {self.record} (the right to log on as a service, membership "
                "of Hyper-V Administrators), if anything")

    @property
    def command(self) -> str:
        return (f'Get-Content "{self.record}"; for each account there: Remove-LocalGroupMember '
                f"-SID {winacl.HYPERV_ADMINISTRATORS} -Member ACCOUNT, and secpol.msc, User "
                "Rights Assignment, Log on as a service: remove ACCOUNT")

    def run(self, host: ServiceHost, clock: Clock) -> str:
        grants = _grants(host, self.record)
        if not grants:
            return "nothing recorded"
        done = []
        for grant in grants:
            sid, account = grant.get("sid", ""), grant.get("account", "?")
            if "right" in grant and grant["right"] in host.account_rights(sid):
                host.remove_account_right(sid, grant["right"])
                done.append(f"{grant['right']} of {account}")
            elif "group" in grant and host.remove_group_member(grant["group"], sid):
                done.append(f"{account} from group {grant['group']}")
        host.delete_file(self.record)
        return "took back " + ", ".join(done) if done else "nothing left to take back"
