"""The ``hyperv-agent doctor`` command; its work is imported only when it runs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from hyperv_agent.config import AgentConfig

Option = Callable[[Callable[..., Any]], Callable[..., Any]]
Loader = Callable[[Path | None, str | None, Path | None, dict[str, Any]], "AgentConfig"]
GIB = 1024**3


def doctor_command(shared: Sequence[Option], load: Loader) -> click.Command:
    """The command, taking the backend options every command shares (``shared``: config
    file, backend, state directory, WinRM) and ``load``, which reads the configuration
    from their values."""

    def doctor(config_file: Path | None, backend: str | None, state_dir: Path | None,
               vswitches: tuple[str, ...], min_free_gb: float, play_deploy: bool,
               **wsman: Any) -> None:
        """Check that a Hyper-V host is ready for the agent: one line per check with its
        fix; exit status 1 when a check failed."""
        import asyncio

        from hyperv_agent.doctor.checks import Options
        from hyperv_agent.doctor.run import diagnose_or_explain

        config = load(config_file, backend, state_dir, wsman)
        wanted = Options(vswitches=vswitches, min_free_bytes=int(min_free_gb * GIB))
        report = asyncio.run(diagnose_or_explain(config, wanted, play_deploy))
        click.echo(report.text())
        if not report.passed:
            click.echo(f"not ready: {', '.join(report.failed())}", err=True)
            sys.exit(1)

    decorated: Callable[..., Any] = doctor
    for option in (*_OWN, *reversed(shared)):
        decorated = option(decorated)
    return click.command("doctor")(decorated)


_OWN: tuple[Option, ...] = (
    click.option("--deploy", "play_deploy", is_flag=True,
                 help="Also play a throwaway VM through its whole life and remove it."),
    click.option("--min-free-gb", type=click.FloatRange(0), default=10, show_default=True,
                 help="Free space the local pool's volume needs."),
    click.option("--vswitch", "vswitches", multiple=True, metavar="LABEL",
                 help="A traffic label of the zone: a vSwitch of that name must exist "
                      "(repeat for several)."),
)
