"""pywin32's service callbacks (Windows only): the service manager's view of the agent.

pythonservice.exe imports this class (``PythonClass`` in the service's registry key) and
calls ``SvcDoRun`` on the service thread and ``SvcStop``/``SvcShutdown``/``SvcOtherEx``
(preshutdown) from the control handler. While the agent stops, ``StopProgress`` reports
SERVICE_STOP_PENDING with a moving checkpoint until ``SvcDoRun`` returns. Everything they
do is in :mod:`runner`, which runs on any OS; these lines are verified only by the Windows
workflow (.github/workflows/windows.yml).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import servicemanager
import win32service
import win32serviceutil

from hyperv_agent.errors import AgentError
from hyperv_agent.winsvc import paths
from hyperv_agent.winsvc.readiness import service_running
from hyperv_agent.winsvc.runner import (
    STOP_WAIT_HINT_MS,
    ServiceRun,
    StopProgress,
    StopSignal,
    run_service,
)
from hyperv_agent.winsvc.windows import WindowsServiceHost


class EventLog:
    """Start, stop and fatal errors in the Application event log (source hyperv-agent)."""

    def info(self, text: str) -> None:
        servicemanager.LogInfoMsg(text)

    def error(self, text: str) -> None:
        servicemanager.LogErrorMsg(text)


class AgentService(win32serviceutil.ServiceFramework):
    _svc_name_ = paths.SERVICE_NAME
    _svc_display_name_ = paths.DISPLAY_NAME
    _svc_description_ = paths.DESCRIPTION

    def __init__(self, args: Iterable[str]) -> None:
        super().__init__(args)
        self._stop = StopSignal()

    def GetAcceptedControls(self) -> int:
        # pywin32's own answer (from SvcStop and SvcShutdown) plus preshutdown, which comes
        # first and waits for the service (up to the preshutdown timeout set at install),
        # where shutdown gives it a few seconds, less than the agent's stop grace.
        return (win32service.SERVICE_ACCEPT_STOP | win32service.SERVICE_ACCEPT_SHUTDOWN
                | win32service.SERVICE_ACCEPT_PRESHUTDOWN)

    def SvcStop(self) -> None:
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=STOP_WAIT_HINT_MS)
        self._stop.request()

    def SvcShutdown(self) -> None:  # the host is shutting down (no preshutdown came)
        self.SvcStop()

    def SvcOtherEx(self, control: int, event_type: int, data: object) -> None:
        if control == win32service.SERVICE_CONTROL_PRESHUTDOWN:
            self.SvcStop()

    def _stopping(self, wait_hint_ms: int) -> None:
        # pywin32 moves the checkpoint on with every pending status it reports
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=wait_hint_ms)

    def SvcDoRun(self) -> None:
        where = paths.ServicePaths.on_this_host()
        run = ServiceRun(Path(str(where.config_file)), Path(str(where.log_file)),
                         service_running(WindowsServiceHost(), paths.VMMS))
        with StopProgress(self._stop, self._stopping):
            code = run_service(run, EventLog(), self._stop)
        if code != 0:
            # pythonservice.exe reports a failed SvcRun as a stop with an error, which the
            # recovery actions (sc.exe failureflag 1) answer with a restart
            raise AgentError(f"{paths.SERVICE_NAME} stopped on an error; see the Application "
                             f"event log and {where.log_file}")
