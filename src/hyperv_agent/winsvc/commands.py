"""``hyperv-agent service ...``: the Windows service's command line.

``install``, ``remove``, ``start`` and ``stop`` compute a plan of steps on any OS; with
``--dry-run`` they print it, otherwise they carry it out on the Windows host (off Windows
without ``--dry-run`` they stop with one line). ``status`` reports what it can see, and
``import-config`` works anywhere. What a command does is imported when it runs, so the
agent's other commands (and ``--help``) do not load the configuration models for it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hyperv_agent.errors import AgentError
from hyperv_agent.winsvc.host import (
    ServiceHost,
    StartType,
    takes_no_password,
    virtual_account_service,
)
from hyperv_agent.winsvc.paths import SERVICE_NAME, ServicePaths, on_windows

if TYPE_CHECKING:
    from hyperv_agent.winsvc import importing, plan


def _fail(error: AgentError | str) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(2)


@click.group("service")
def service_group() -> None:
    """Run the agent as a Windows service on the Hyper-V host (replacing the C# agent)."""


def windows_host() -> ServiceHost:
    """The service manager of this Windows host (pywin32: imported on Windows only)."""
    from hyperv_agent.winsvc.windows import WindowsServiceHost

    return WindowsServiceHost()


def _carry_out(chosen: plan.Plan, dry_run: bool) -> None:
    from hyperv_agent.winsvc import plan
    from hyperv_agent.winsvc.steps import SystemClock

    if dry_run:
        click.echo("\n".join(chosen.lines()))
        return
    if not on_windows():
        _fail(f"{chosen.title} changes a Windows host; here, add --dry-run to print its "
              "steps")
        return
    try:
        plan.execute(chosen, windows_host(), SystemClock(), click.echo)
    except AgentError as error:
        _fail(error)
        return
    for note in chosen.notes:
        click.echo(f"note: {note}")


_dry_run = click.option("--dry-run", is_flag=True,
                        help="Print every step and its equivalent command; change nothing.")


@service_group.command("install")
@click.option("--replace-csharp-agent", is_flag=True,
              help="Stop and disable the C# agent's service and its heartbeat tasks, "
                   "then start this agent in its place.")
@click.option("--user", "account", metavar="DOMAIN\\USER",
              help="Run the service under this account (default: LocalSystem), e.g. the "
                   "account the C# agent ran as, for the same access to SMB shares, or the "
                   "service's own virtual account, NT SERVICE\\hyperv-agent.")
@click.option("--password", help="The account's password (asked for when --user is given "
                                 "without it; none for a managed service account, "
                                 "DOMAIN\\name$, or NT SERVICE\\name).")
@click.option("--delayed-start", is_flag=True, help="Start automatically, delayed.")
@_dry_run
def install(replace_csharp_agent: bool, account: str | None, password: str | None,
            delayed_start: bool, dry_run: bool) -> None:
    """Install the agent as a Windows service, open port 8250 and start it."""
    from hyperv_agent.winsvc import plan

    if password is not None and not account:
        _fail("--password is the password of the --user account: without --user the "
              "service runs as LocalSystem, which takes none")
        return
    if account and "\\" not in account and "@" not in account:
        _fail(f"--user {account!r}: name the account as DOMAIN\\USER, or .\\{account} for "
              "a local account of this host (Windows refuses a bare user name for a service)")
        return
    virtual = virtual_account_service(account) if account else None
    if virtual is not None and virtual.lower() != SERVICE_NAME.lower():
        _fail(f"--user {account}: a virtual account runs only the service it is named after; "
              f"for this one give NT SERVICE\\{SERVICE_NAME}")
        return
    if account and takes_no_password(account):
        if password is not None:
            _fail(f"--password: {account} is a managed service account, a virtual account "
                  "or a built-in service account, which Windows runs a service as without "
                  "a password; leave --password out")
            return
    elif account and password is None and not dry_run:
        password = click.prompt(f"password of {account}", hide_input=True)
    options = plan.InstallOptions(
        replace_csharp_agent=replace_csharp_agent, account=account, password=password,
        start=StartType.DELAYED_AUTO if delayed_start else StartType.AUTO)
    _carry_out(plan.install_plan(ServicePaths.on_this_host(), options), dry_run)


@service_group.command("remove")
@click.option("--restore-csharp-agent", is_flag=True,
              help="Set the C# agent's service to start automatically and start it.")
@_dry_run
def remove(restore_csharp_agent: bool, dry_run: bool) -> None:
    """Stop and delete the service and its firewall rule (configuration and logs stay)."""
    from hyperv_agent.winsvc import plan

    _carry_out(plan.remove_plan(ServicePaths.on_this_host(), restore_csharp_agent), dry_run)


@service_group.command("start")
@_dry_run
def start(dry_run: bool) -> None:
    """Start the service and wait until it runs."""
    from hyperv_agent.winsvc import plan

    _carry_out(plan.start_plan(ServicePaths.on_this_host()), dry_run)


@service_group.command("stop")
@_dry_run
def stop(dry_run: bool) -> None:
    """Stop the service and wait until it has stopped."""
    from hyperv_agent.winsvc import plan

    _carry_out(plan.stop_plan(), dry_run)


@service_group.command("status")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Configuration to check (default: the service's agent.toml).")
def status_command(config_file: Path | None) -> None:
    """Show the service, the C# agent, the firewall rule, the configuration and backend.
    Exit status: 0 when the service runs, 3 when it does not (or is not installed)."""
    from hyperv_agent.winsvc import status

    target = config_file or Path(str(ServicePaths.on_this_host().config_file))
    try:
        found = status.status(windows_host() if on_windows() else None, target)
    except AgentError as error:
        _fail(error)
        return
    click.echo("\n".join(found.lines))
    if not found.running:
        sys.exit(3)


@service_group.command("import-config")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="agent.toml to write ('-': print it; default: the service's "
                   "%ProgramData%\\hyperv-agent\\agent.toml).")
@click.option("--state-dir", help="state_dir to write into the file (default: the "
                                  "agent's default); the SMB pools go to its pools.json.")
@click.option("--force", is_flag=True, help="Replace an existing file (kept as .bak).")
def import_config(source: Path, output: Path | None, state_dir: str | None,
                  force: bool) -> None:
    """Write agent.toml from the C# agent's AgentShell.exe.config (SOURCE)."""
    from hyperv_agent.winsvc import importing

    if output is None and not on_windows():
        _fail("name the file to write with --output (on the Hyper-V host the default is "
              f"the service's {ServicePaths.on_this_host().config_file})")
        return
    target = Path(str(ServicePaths.on_this_host().config_file)) if output is None else output
    printing = str(target) == "-"
    try:
        result = importing.import_config(source, None if printing else target,
                                         state_dir, force)
    except AgentError as error:
        _fail(error)
        return
    if printing:
        click.echo(result.text, nl=False)
        return
    _report_import(result)


def _report_import(result: importing.Imported) -> None:
    from hyperv_agent.winsvc import tomltext

    click.echo(f"wrote {result.config_file}")
    for carried in result.translation.agent:
        click.echo(f"  {tomltext.line(carried.key, carried.value)}  (from {carried.source})")
    if result.pools_file is not None:
        click.echo(f"registered {len(result.translation.pools)} SMB pool(s) in "
                   f"{result.pools_file}")
        for pool_uuid, root in result.translation.pools:
            click.echo(f"  {pool_uuid} = {root}")
    if result.translation.dropped:
        click.echo(f"not carried over ({len(result.translation.dropped)}):")
        for dropped in result.translation.dropped:
            click.echo(f"  {dropped.setting}: {dropped.reason}")
