"""Opening the host as ``serve`` would, and running the checks (and the deploy) on it."""

from __future__ import annotations

import time
from collections.abc import Callable

from hyperv_agent.backends import open_host
from hyperv_agent.config import AgentConfig
from hyperv_agent.doctor import deploy
from hyperv_agent.doctor.checks import Options, Target, run_checks
from hyperv_agent.doctor.report import Check, Report, Status
from hyperv_agent.errors import AgentError


async def diagnose(config: AgentConfig, options: Options, play_deploy: bool = False,
                   clock: Callable[[], float] = time.time) -> Report:
    """The report of every check on the host ``config`` names; with ``play_deploy`` the
    throwaway VM's lines follow, when every check passed."""
    # A diagnostic installs nothing: an emulated host that does not exist yet is checked
    # as a fresh one in a temporary folder (the connection line says so).
    opened = open_host(config, leave_no_trace=True)
    try:
        target = Target(config, opened.hyperv, opened.files, clock, opened.wsman,
                        throwaway=opened.scratch is not None)
        report = await run_checks(target, options)
        if play_deploy and report.passed:
            await deploy.play(target, report)
        elif play_deploy:
            report.add(Check("deploy", Status.SKIP, "not played: fix the failures above "
                             "first"))
        return report
    finally:
        await opened.close()


async def diagnose_or_explain(config: AgentConfig, options: Options,
                              play_deploy: bool = False) -> Report:
    """``diagnose``, or a report of one failed line when the backend cannot be opened."""
    try:
        return await diagnose(config, options, play_deploy)
    except AgentError as error:
        report = Report()
        report.add(Check("connection", Status.FAIL, str(error), "see the error"))
        return report
