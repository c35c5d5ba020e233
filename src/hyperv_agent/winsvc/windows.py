"""The Windows host's service manager, firewall, task scheduler and disk (Windows only).

:class:`WindowsServiceHost` implements :class:`~hyperv_agent.winsvc.host.ServiceHost`:
services through pywin32 (win32service, win32serviceutil), the event log source through
win32evtlogutil, the firewall, recovery actions and scheduled tasks through the command
lines of :mod:`tools`; access lists, account rights and local groups through
:mod:`hyperv_agent.winacl` (whose calls are tested against fakes of pywin32). Every
Windows refusal becomes one ServiceSetupError line. Verified only by the Windows workflow
(.github/workflows/windows.yml).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pywintypes
import servicemanager
import win32evtlogutil
import win32service
import win32serviceutil
import winerror

from hyperv_agent import winacl
from hyperv_agent.errors import ConfigError, ServiceSetupError
from hyperv_agent.winsvc import tools
from hyperv_agent.winsvc.host import FirewallRule, RunState, ServiceSpec, ServiceState, StartType

if TYPE_CHECKING:  # pywin32's handle type exists in its type stubs only
    from _win32typing import PySC_HANDLE

_START_CODES = {StartType.AUTO: win32service.SERVICE_AUTO_START,
                StartType.DELAYED_AUTO: win32service.SERVICE_AUTO_START,
                StartType.DEMAND: win32service.SERVICE_DEMAND_START,
                StartType.DISABLED: win32service.SERVICE_DISABLED}
_QUERY = win32service.SERVICE_QUERY_STATUS | win32service.SERVICE_QUERY_CONFIG
_TOOL_TIMEOUT_S = 60.0
_T = TypeVar("_T")
LOCAL_SYSTEM = "LocalSystem"


@contextlib.contextmanager
def _service(name: str, access: int) -> Iterator[PySC_HANDLE]:
    manager = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_CONNECT)
    try:
        handle = win32service.OpenService(manager, name, access)
        try:
            yield handle
        finally:
            win32service.CloseServiceHandle(handle)
    finally:
        win32service.CloseServiceHandle(manager)


def _refused(what: str, error: pywintypes.error) -> ServiceSetupError:
    return ServiceSetupError(f"{what}: {error.strerror.strip()} ({error.winerror})")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return tools.run(argv, _TOOL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ServiceSetupError(f"{tools.shown(argv)}: {error}") from None


def _acl(call: Callable[[], _T]) -> _T:
    """A :mod:`winacl` call, its refusal as the one line a step reports."""
    try:
        return call()
    except ConfigError as error:
        raise ServiceSetupError(str(error)) from None


def _checked(argv: list[str]) -> str:
    done = _run(argv)
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines()
        raise ServiceSetupError(f"{tools.shown(argv)} failed ({done.returncode}): "
                                f"{said[-1] if said else 'no output'}")
    return done.stdout


class WindowsServiceHost:
    """This Windows host."""

    def service_state(self, name: str) -> ServiceState | None:
        try:
            with _service(name, _QUERY) as handle:
                run = win32service.QueryServiceStatus(handle)[1]
                config = win32service.QueryServiceConfig(handle)
                delayed = bool(win32service.QueryServiceConfig2(
                    handle, win32service.SERVICE_CONFIG_DELAYED_AUTO_START_INFO))
        except pywintypes.error as error:
            if error.winerror == winerror.ERROR_SERVICE_DOES_NOT_EXIST:
                return None
            raise _refused(f"service '{name}'", error) from None
        return ServiceState(RunState(run), _start_type(int(config[1]), delayed),
                            _account(str(config[7] or "")))

    def request_stop(self, name: str) -> None:
        self._control(name, win32service.SERVICE_STOP, winerror.ERROR_SERVICE_NOT_ACTIVE,
                      lambda h: win32service.ControlService(h, win32service.SERVICE_CONTROL_STOP))

    def request_start(self, name: str) -> None:
        self._control(name, win32service.SERVICE_START, winerror.ERROR_SERVICE_ALREADY_RUNNING,
                      lambda h: win32service.StartService(h, None))

    def _control(self, name: str, access: int, harmless: int,
                 call: Callable[[PySC_HANDLE], object]) -> None:
        try:
            with _service(name, access) as handle:
                call(handle)
        except pywintypes.error as error:
            if error.winerror != harmless:
                raise _refused(f"service '{name}'", error) from None

    def set_start_type(self, name: str, start: StartType) -> None:
        try:
            with _service(name, win32service.SERVICE_CHANGE_CONFIG) as handle:
                win32service.ChangeServiceConfig(
                    handle, win32service.SERVICE_NO_CHANGE, _START_CODES[start],
                    win32service.SERVICE_NO_CHANGE, None, None, False, None, None, None, None)
                if start in (StartType.AUTO, StartType.DELAYED_AUTO):
                    win32service.ChangeServiceConfig2(
                        handle, win32service.SERVICE_CONFIG_DELAYED_AUTO_START_INFO,
                        start is StartType.DELAYED_AUTO)
        except pywintypes.error as error:
            raise _refused(f"service '{name}'", error) from None

    def create_service(self, spec: ServiceSpec, password: str | None) -> None:
        try:
            win32serviceutil.InstallService(
                spec.python_class, spec.name, spec.display_name,
                startType=_START_CODES[spec.start], userName=spec.account, password=password,
                description=spec.description,
                delayedstart=spec.start is StartType.DELAYED_AUTO)
        except pywintypes.error as error:
            raise _refused(f"installing service '{spec.name}'", error) from None
        self._set_shutdown_timeout(spec)

    def update_service(self, spec: ServiceSpec, password: str | None) -> None:
        try:
            win32serviceutil.ChangeServiceConfig(
                spec.python_class, spec.name, startType=_START_CODES[spec.start],
                userName=spec.account or LOCAL_SYSTEM,
                password=password if spec.account else "", displayName=spec.display_name,
                description=spec.description,
                delayedstart=spec.start is StartType.DELAYED_AUTO)
        except pywintypes.error as error:
            raise _refused(f"updating service '{spec.name}'", error) from None
        self._set_shutdown_timeout(spec)

    def _set_shutdown_timeout(self, spec: ServiceSpec) -> None:
        try:  # SERVICE_PRESHUTDOWN_INFO.dwPreshutdownTimeout, in milliseconds
            with _service(spec.name, win32service.SERVICE_CHANGE_CONFIG) as handle:
                win32service.ChangeServiceConfig2(
                    handle, win32service.SERVICE_CONFIG_PRESHUTDOWN_INFO,
                    spec.shutdown_timeout_s * 1000)
        except pywintypes.error as error:
            raise _refused(f"service '{spec.name}' preshutdown timeout", error) from None

    def delete_service(self, name: str) -> None:
        try:
            win32serviceutil.RemoveService(name)
        except pywintypes.error as error:
            raise _refused(f"deleting service '{name}'", error) from None

    def restart_on_failure(self, name: str, delay_s: int) -> None:
        for argv in tools.restart_on_failure(name, delay_s):
            _checked(argv)

    def register_event_source(self, name: str) -> None:
        try:  # servicemanager's messages: the ones LogInfoMsg and LogErrorMsg write
            win32evtlogutil.AddSourceToRegistry(name, servicemanager.__file__)
        except pywintypes.error as error:
            raise _refused(f"event log source '{name}'", error) from None

    def firewall_rule_exists(self, name: str) -> bool:
        return _run(tools.firewall_show(name)).returncode == 0

    def add_firewall_rule(self, rule: FirewallRule) -> None:
        _checked(tools.firewall_add(rule))

    def delete_firewall_rule(self, name: str) -> None:
        _checked(tools.firewall_delete(name))

    def scheduled_tasks(self, prefix: str) -> tuple[str, ...]:
        return tools.task_names(_checked(tools.task_list()), prefix)

    def delete_scheduled_task(self, name: str) -> None:
        _checked(tools.task_delete(name))

    def file_exists(self, path: str) -> bool:
        return Path(path).exists()

    def make_directory(self, path: str) -> None:
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ServiceSetupError(f"cannot create {path}: {error.strerror}") from None

    def write_file(self, path: str, text: str) -> None:
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError as error:
            raise ServiceSetupError(f"cannot write {path}: {error.strerror}") from None

    def read_file(self, path: str) -> str | None:
        try:
            return Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ServiceSetupError(f"cannot read {path}: {error.strerror}") from None

    def delete_file(self, path: str) -> None:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as error:
            raise ServiceSetupError(f"cannot delete {path}: {error.strerror}") from None

    def account_sid(self, account: str) -> str:
        return _acl(lambda: winacl.account_sid(account))

    def restrict_folder(self, path: str, account_sid: str) -> None:
        _acl(lambda: winacl.restrict(Path(path), inherit=True, account=account_sid))

    def account_rights(self, sid: str) -> tuple[str, ...]:
        return _acl(lambda: winacl.account_rights(sid))

    def add_account_right(self, sid: str, right: str) -> None:
        _acl(lambda: winacl.add_account_right(sid, right))

    def remove_account_right(self, sid: str, right: str) -> None:
        _acl(lambda: winacl.remove_account_right(sid, right))

    def add_group_member(self, group_sid: str, sid: str) -> bool:
        return _acl(lambda: winacl.add_group_member(group_sid, sid))

    def remove_group_member(self, group_sid: str, sid: str) -> bool:
        return _acl(lambda: winacl.remove_group_member(group_sid, sid))


def _start_type(code: int, delayed: bool) -> StartType:
    if code == win32service.SERVICE_AUTO_START:
        return StartType.DELAYED_AUTO if delayed else StartType.AUTO
    if code == win32service.SERVICE_DISABLED:
        return StartType.DISABLED
    return StartType.DEMAND


def _account(start_name: str) -> str | None:
    local = start_name.lower() in ("", LOCAL_SYSTEM.lower(), ".\\localsystem")
    return None if local else start_name
