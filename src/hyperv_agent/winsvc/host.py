"""What the service's steps need from a Windows host, as a protocol.

The steps (:mod:`steps`) are written against :class:`ServiceHost` on any OS; the Windows
implementation (:mod:`windows`) maps each primitive onto the service control manager,
``netsh advfirewall``, the task scheduler, and (through :mod:`hyperv_agent.winacl`) access
lists, account rights and local groups. Every primitive does one thing and raises
:class:`~hyperv_agent.errors.ServiceSetupError` (one line) when Windows refuses it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class RunState(enum.Enum):
    """SERVICE_STATUS.dwCurrentState, by name."""

    STOPPED = 1
    START_PENDING = 2
    STOP_PENDING = 3
    RUNNING = 4
    CONTINUE_PENDING = 5
    PAUSE_PENDING = 6
    PAUSED = 7


class StartType(enum.Enum):
    """How a service starts (``sc.exe config start=``)."""

    AUTO = "auto"
    DELAYED_AUTO = "delayed-auto"
    DEMAND = "demand"
    DISABLED = "disabled"


@dataclass(frozen=True)
class ServiceState:
    """What the service control manager says of an installed service."""

    run: RunState
    start: StartType
    account: str | None = None  # None: LocalSystem


@dataclass(frozen=True)
class ServiceSpec:
    """A Python service hosted by pywin32's pythonservice.exe."""

    name: str
    display_name: str
    description: str
    python_class: str  # module.Class, imported by pythonservice.exe
    start: StartType
    account: str | None = None  # DOMAIN\\user; None: LocalSystem
    #: How long Windows waits for the service to stop when the host shuts down (its
    #: preshutdown timeout; Windows' default since build 15063 is 10 s).
    shutdown_timeout_s: int = 10


def takes_no_password(account: str) -> bool:
    """True for the accounts a service is set to run as without a password: managed service
    accounts, standalone or group (``DOMAIN\\name$``, ``name$@domain``), whose password the
    service manager must be given as NULL, as it must for virtual accounts
    (``NT SERVICE\\name``); and LocalService and NetworkService (``NT AUTHORITY\\...``),
    which have none (CreateService, ChangeServiceConfig: ``lpPassword``)."""
    domain, _, name = account.rpartition("\\")
    return (name.partition("@")[0].endswith("$")
            or domain.lower() in ("nt service", "nt authority"))


def virtual_account_service(account: str) -> str | None:
    """The service whose virtual account ``account`` is (``NT SERVICE\\name``: the name is
    the service's, and the account is that service's alone), else None. Windows resolves
    such a name (LookupAccountName) only once that service is installed."""
    domain, _, name = account.rpartition("\\")
    return name if domain.lower() == "nt service" and name else None


@dataclass(frozen=True)
class FirewallRule:
    """An inbound allow rule for one TCP port (a name without spaces: one argument)."""

    name: str
    port: int


class ServiceHost(Protocol):
    """The host primitives the service's steps use."""

    def service_state(self, name: str) -> ServiceState | None:
        """None when no service of that name is installed."""

    def request_stop(self, name: str) -> None:
        """Ask a running service to stop (not an error when it is not running)."""

    def request_start(self, name: str) -> None:
        """Ask a stopped service to start (not an error when it is running)."""

    def set_start_type(self, name: str, start: StartType) -> None: ...

    def create_service(self, spec: ServiceSpec, password: str | None) -> None: ...

    def update_service(self, spec: ServiceSpec, password: str | None) -> None:
        """Bring an installed service's configuration to ``spec``."""

    def delete_service(self, name: str) -> None:
        """Remove the service and its event log source."""

    def restart_on_failure(self, name: str, delay_s: int) -> None: ...

    def register_event_source(self, name: str) -> None: ...

    def firewall_rule_exists(self, name: str) -> bool: ...

    def add_firewall_rule(self, rule: FirewallRule) -> None: ...

    def delete_firewall_rule(self, name: str) -> None: ...

    def scheduled_tasks(self, prefix: str) -> tuple[str, ...]:
        """Names of the scheduled tasks whose names start with ``prefix``."""

    def delete_scheduled_task(self, name: str) -> None: ...

    def file_exists(self, path: str) -> bool: ...

    def make_directory(self, path: str) -> None:
        """Create the folder and its parents (not an error when it exists)."""

    def write_file(self, path: str, text: str) -> None: ...

    def read_file(self, path: str) -> str | None:
        """The file's text; None when there is no such file."""

    def delete_file(self, path: str) -> None:
        """Not an error when the file is gone already."""

    def account_sid(self, account: str) -> str:
        """The SID (``S-1-5-...``) of ``DOMAIN\\user``; an error when there is none."""

    def restrict_folder(self, path: str, account_sid: str) -> None:
        """Give the folder a protected access list, inherited by what it holds: full control
        for SYSTEM, Administrators and the account, nothing for anyone else."""

    def account_rights(self, sid: str) -> tuple[str, ...]:
        """The rights (``SeServiceLogonRight``...) assigned to the account itself."""

    def add_account_right(self, sid: str, right: str) -> None: ...

    def remove_account_right(self, sid: str, right: str) -> None: ...

    def add_group_member(self, group_sid: str, sid: str) -> bool:
        """Add the account to the local group; False when it was a member already."""

    def remove_group_member(self, group_sid: str, sid: str) -> bool:
        """Take the account out of the local group; False when it was not in it."""
