"""``hyperv-agent service ...``: the Windows service's command line.

``install``, ``remove``, ``start`` and ``stop`` compute a plan of steps on any OS; with
``--dry-run`` they print it, otherwise they carry it out on the Windows host (off Windows
without ``--dry-run`` they stop with one line). ``status`` reports what it can see, and
``import-config`` works anywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hyperv_agent.errors import AgentError
from hyperv_agent.winsvc import importing, tomltext
from hyperv_agent.winsvc.paths import ServicePaths, on_windows


def _fail(error: AgentError | str) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(2)


@click.group("service")
def service_group() -> None:
    """Run the agent as a Windows service on the Hyper-V host (replacing the C# agent)."""


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
