"""The plans of ``service install|remove|start|stop``: ordered steps, computed on any OS.

``--dry-run`` prints a plan (:meth:`Plan.lines`); on the Windows host :func:`execute`
carries it out step by step. An install replacing the C# agent prepares everything
first and stops the C# agent only then, so a failure while preparing leaves the C# agent
serving; the C# agent is stopped just before this agent starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hyperv_agent.errors import ServiceSetupError
from hyperv_agent.winsvc import paths, steps
from hyperv_agent.winsvc.host import (
    FirewallRule,
    ServiceHost,
    ServiceSpec,
    StartType,
    virtual_account_service,
)
from hyperv_agent.winsvc.paths import ServicePaths
from hyperv_agent.winsvc.steps import Clock, Step

RESTART_DELAY_S = 60
#: The preshutdown timeout: the agent's stop (``service.STOP_GRACE_S``, 30 s, for the
#: commands in flight, then closing its backend) with room to spare.
SHUTDOWN_TIMEOUT_S = 60

DEFAULT_CONFIG = """\
# hyperv-agent on this Hyper-V host; the Windows service reads this file at start.
# `hyperv-agent service import-config` writes it from the C# agent's AgentShell.exe.config.
[agent]
backend = "auto"          # wmi (PyMI) when installed, else wsman to WinRM on localhost
listen = "0.0.0.0:8250"   # the management server always connects to port 8250
"""


@dataclass(frozen=True)
class InstallOptions:
    replace_csharp_agent: bool = False
    account: str | None = None  # DOMAIN\\user; None: LocalSystem
    password: str | None = field(default=None, repr=False)
    start: StartType = StartType.AUTO


@dataclass(frozen=True)
class Plan:
    """What a service command does, in order, and what it leaves alone."""

    title: str
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """The dry run: every step with its equivalent command, then the notes."""
        out = [f"{self.title}: {len(self.steps)} steps (dry run: nothing is changed)"]
        for number, step in enumerate(self.steps, 1):
            out += [f"{number:2}. {step.text}", f"      {step.command}"]
        return out + [f"note: {note}" for note in self.notes]


def service_spec(options: InstallOptions) -> ServiceSpec:
    return ServiceSpec(name=paths.SERVICE_NAME, display_name=paths.DISPLAY_NAME,
                       description=paths.DESCRIPTION, python_class=paths.PYTHON_CLASS,
                       start=options.start, account=options.account,
                       shutdown_timeout_s=SHUTDOWN_TIMEOUT_S)


def install_plan(where: ServicePaths, options: InstallOptions) -> Plan:
    """Fresh install: refuse while the C# agent would hold port 8250, prepare, start.
    Replacement: prepare, then stop and disable the C# agent and its heartbeat tasks,
    then start."""
    prepare = _prepare(where, options)
    start = _start_agent(where)
    if not options.replace_csharp_agent:
        refuse = steps.RefuseCSharpAgent(paths.CSHARP_SERVICES, paths.AGENT_PORT)
        return Plan("service install", (refuse, *prepare, start), _install_notes(where))
    notes = (*_install_notes(where), "to go back to the C# agent: hyperv-agent service "
             "remove --restore-csharp-agent")
    return Plan("service install --replace-csharp-agent",
                (*prepare, *_retire_csharp_agent(), start), notes)


def _prepare(where: ServicePaths, options: InstallOptions) -> tuple[Step, ...]:
    """The folder, restricted before agent.toml is written into it (and inherited by what
    is there already); a ``--user`` account's logon right and group before the service
    is created, so a mistyped account stops the install before anything of the service.
    A virtual account (``NT SERVICE\\hyperv-agent``) is the other way round: Windows
    knows it only once the service is installed, so the service is created first and the
    account given the folder, its right and its group after."""
    rule = FirewallRule(paths.FIREWALL_RULE, paths.AGENT_PORT)
    account: tuple[Step, ...] = ()
    restrict = steps.RestrictFolder(str(where.root), options.account)
    virtual = bool(options.account and virtual_account_service(options.account))
    if options.account:
        record = str(where.grants_file)
        account = (steps.GrantServiceLogon(options.account, record),
                   steps.JoinHyperVAdministrators(options.account, record))
    if virtual:
        account = (restrict, *account)
        restrict = steps.RestrictFolder(str(where.root), options.account, paths.SERVICE_NAME)
    before, after = ((), account) if virtual else (account, ())
    return (
        steps.MakeDirectory(str(where.root)),
        steps.MakeDirectory(str(where.logs_dir)),
        restrict,
        steps.WriteDefaultConfig(str(where.config_file), DEFAULT_CONFIG,
                                 "backend auto, listening on 0.0.0.0:8250"),
        steps.RegisterEventSource(paths.SERVICE_NAME),
        *before,
        steps.InstallService(service_spec(options), options.password),
        *after,
        steps.RestartOnFailure(paths.SERVICE_NAME, RESTART_DELAY_S),
        steps.AddFirewallRule(rule),
    )


def _retire_csharp_agent() -> tuple[Step, ...]:
    retire: list[Step] = []
    for name in paths.CSHARP_SERVICES:
        retire += [steps.StopService(name, "the C# agent holds port 8250"),
                   steps.SetStartType(name, StartType.DISABLED)]
    retire.append(steps.DeleteScheduledTasks(
        paths.CSHARP_HEARTBEAT_TASKS,
        "the C# agent's heartbeat writers; this agent writes the heartbeats itself"))
    return tuple(retire)


def _install_notes(where: ServicePaths) -> tuple[str, ...]:
    return (f"an existing {where.config_file} is kept; `hyperv-agent service import-config` "
            "writes it from the C# agent's settings",)


def remove_plan(where: ServicePaths, restore_csharp_agent: bool = False) -> Plan:
    """Stop and delete the service and its firewall rule, take back what the install
    granted its account; with ``restore_csharp_agent``, set the C# agent to start
    automatically and start it."""
    removal: list[Step] = [steps.StopService(paths.SERVICE_NAME),
                           steps.DeleteService(paths.SERVICE_NAME),
                           steps.DeleteFirewallRule(paths.FIREWALL_RULE),
                           steps.RevokeGrants(str(where.grants_file))]
    notes = [f"kept: {where.root} (configuration, state and logs); delete it by hand to "
             "remove everything"]
    title = "service remove"
    if restore_csharp_agent:
        title += " --restore-csharp-agent"
        for name in paths.CSHARP_SERVICES:
            removal += [steps.SetStartType(name, StartType.AUTO),
                        steps.StartService(name, missing_ok=True)]
        notes.append("the C# agent's heartbeat tasks come back when the management server "
                     "registers its pools again (ModifyStoragePoolCommand on reconnect)")
    return Plan(title, tuple(removal), tuple(notes))


def _start_agent(where: ServicePaths) -> steps.StartService:
    return steps.StartService(paths.SERVICE_NAME, stopped_hint=(
        f"see the Application event log (source {paths.SERVICE_NAME}) and {where.log_file}"))


def start_plan(where: ServicePaths) -> Plan:
    return Plan("service start", (_start_agent(where),))


def stop_plan() -> Plan:
    return Plan("service stop", (steps.StopService(paths.SERVICE_NAME),))


def execute(plan: Plan, host: ServiceHost, clock: Clock, echo: Callable[[str], None]) -> None:
    """Carry the steps out in order, one line each. ServiceSetupError names the step that
    failed; the steps before it stay done (each is safe to repeat, so the command can be
    run again once the cause is fixed)."""
    total = len(plan.steps)
    for number, step in enumerate(plan.steps, 1):
        try:
            outcome = step.run(host, clock)
        except ServiceSetupError as error:
            raise ServiceSetupError(f"step {number}/{total} ({step.text}) failed: "
                                    f"{error}") from None
        echo(f"[{number}/{total}] {step.text}: {outcome}")
