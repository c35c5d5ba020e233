"""The AgentError tree: the only exceptions the agent raises on purpose.

Every failure that can reach a CloudStack answer is one of these, so the dispatcher
can turn it into a failed Answer with a message a human can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar


class AgentError(Exception):
    """Base of every error the agent raises deliberately.

    A failed answer's ``details`` read ``<Command> failed<joined_by><message>``."""

    joined_by: ClassVar[str] = ": "

    #: Fields of the failed answer this error says besides ``details`` (Java field names,
    #: for the answer classes that have them: a SecurityGroupRuleAnswer's ``reason``).
    answer_fields: ClassVar[Mapping[str, str]] = MappingProxyType({})


class ConfigError(AgentError):
    """The configuration file, a flag or an environment variable is invalid."""


class DirectoryInUse(AgentError):
    """A state directory is held by another process (``dirlock``). ``fact`` says only
    that; the message adds what to do."""

    def __init__(self, fact: str, message: str = "") -> None:
        super().__init__(message or fact)
        self.fact = fact


# --- the CIM seam -------------------------------------------------------------------------


class CimError(AgentError):
    """A CIM/WMI operation failed at the transport or provider level."""


class CimNotFound(CimError):
    """The object path names no instance (WBEM_E_NOT_FOUND)."""


class CimInvalidQuery(CimError):
    """The WQL text could not be parsed (WBEM_E_INVALID_QUERY)."""


class CimInvalidClass(CimError):
    """The class does not exist in the namespace (WBEM_E_INVALID_CLASS)."""


class CimInvalidProperty(CimError):
    """The class has no such property (WBEM_E_NOT_FOUND on a property / WBEM_E_INVALID_PROPERTY)."""


class CimInvalidMethod(CimError):
    """The class has no such method (WBEM_E_INVALID_METHOD)."""


class CimInvalidParameter(CimError):
    """A method parameter is unknown, missing or of the wrong type (WBEM_E_INVALID_PARAMETER)."""


class CimAccessDenied(CimError):
    """The caller may not perform the operation (WBEM_E_ACCESS_DENIED)."""


class CimAuthNotOffered(CimAccessDenied):
    """The host does not offer the authentication method the agent is set to use (its 401
    lists those it does): a setting to change on one side or the other, not credentials
    refused, so no logon was refused to count towards the account's lockout."""


class CimUnavailable(CimError):
    """The namespace or host cannot be reached (RPC server unavailable, WinRM down)."""


class CimUnreachable(CimUnavailable):
    """Nothing answered: the host never took the connection (no answer to it, no route
    to the host), the connection broke, or no answer came in time (a host powered off,
    cut off or hung). Any answer, even an HTTP error or a fault, proves the host's
    Windows is running; this does not."""


class CimRefused(CimUnavailable):
    """The connection was refused (a TCP reset, ``ECONNREFUSED``): the host's network stack
    answered, so the machine runs, but nothing listens on the WinRM port (the WinRM
    service stopped, or not started yet) or a firewall rejects the connection. Not
    ``CimUnreachable``: a host that is powered off or cut off answers nothing (the connect
    times out, or no route to it is found), and a running host's VMs may be running."""


class CimTimedOut(CimUnavailable):
    """The host did not finish the operation within its timeout (WS-Man ``TimedOut``): a
    Pull may be sent again, its enumeration context still valid."""


class CimEnumerationExpired(CimError):
    """The host no longer knows an enumeration context (WS-Enumeration
    ``InvalidEnumerationContext``): it expired, was released, or the service restarted."""


class CimResponseTooLarge(CimError):
    """The answer would not fit the transport's envelope limit (WS-Man EncodingLimit)."""


# --- Hyper-V operations -------------------------------------------------------------------


class HyperVError(AgentError):
    """A Hyper-V operation did not complete as asked."""


class MethodFailed(HyperVError):
    """A WMI method returned a failure code without starting a job."""

    def __init__(self, method: str, return_value: int, meaning: str) -> None:
        self.method = method
        self.return_value = return_value
        super().__init__(f"{method} failed with return code {return_value} ({meaning})")


class JobFailed(HyperVError):
    """An asynchronous WMI job ended in a state other than Completed."""

    def __init__(
        self, method: str, job_state: int, error_code: int, description: str,
        job: object = None,
    ) -> None:
        self.method = method
        self.job_state = job_state
        self.error_code = error_code
        self.description = description
        #: The ended job as the host reported it (a ``cim.api.CimInstance``, None when not
        #: read), for a caller that reads more of it than its error (a Msvm_StorageJob's
        #: Child and Parent).
        self.job = job
        super().__init__(
            f"{method} job ended in state {job_state} with error code {error_code}: "
            f"{description or 'no description'}"
        )


class JobTimeout(HyperVError):
    """An asynchronous WMI job did not finish within its bounded wait."""

    def __init__(self, method: str, timeout_s: float, percent_complete: int,
                 job_state: int | None = None, bound: str | None = None) -> None:
        self.method = method
        self.timeout_s = timeout_s
        self.job_state = job_state  # the JobState the job showed when the wait ended
        self.bound = bound  # the command's bound in words, when that ended the wait
        within = f"the command's bound ({bound})" if bound else f"{timeout_s:g} s"
        super().__init__(
            f"{method} job did not finish within {within} "
            f"({percent_complete}% complete when the wait ended)"
        )

    def later(self) -> str:
        """How long after its start the wait ended with the job still running, in words
        ("N s later"), for a wait that follows a request to stop the job: the seconds
        actually waited (to a tenth), which the command's bound may have cut short of
        the wait's own timeout."""
        return f"{round(self.timeout_s, 1):g} s later"


class JobLost(HyperVError):
    """The host no longer knows a job that was being waited for (its path answers not
    found): its Virtual Machine Management Service restarted and lost it, or it ended and
    was removed (``TimeBeforeRemoval``) before it was read. How it ended is not known."""

    def __init__(self, method: str) -> None:
        self.method = method
        super().__init__(
            f"Hyper-V lost track of its {method} job before it was seen to end (the host "
            "no longer knows the job: its Virtual Machine Management Service restarted, "
            "or the job was removed once it had ended), so whether it took effect is not "
            "known")


class MigrationFailed(HyperVError):
    """A VM, or its storage, did not move; the message is why, in Hyper-V's words where
    Hyper-V said it. Answered as the C# agent words it: ``<Command> failed due to <why>``."""

    joined_by: ClassVar[str] = " due to "


class HostFileError(AgentError):
    """A file or folder on the Hyper-V host could not be reached, read or written."""


class LogonRefused(HostFileError):
    """A file server refused the logon with the account a share is reached with."""


class TransferError(AgentError):
    """A file copy or download did not complete; the target was left as it was."""


# --- storage locations and host paths -----------------------------------------------------


class BadStorageUrl(AgentError):
    """A storage URL or pool location is malformed or unsafe (never quotes a password)."""


class PathNotAllowed(AgentError):
    """A path from a request would leave the pool or share it must stay inside."""


class BadTemplateProperties(AgentError):
    """template.properties cannot be written or read as asked."""


class InvalidRequest(HyperVError):
    """A Hyper-V operation was asked for something invalid; nothing was changed."""


class VmMigrating(HyperVError):
    """A VM being migrated live from this host took no change (Hyper-V keeps it as it is
    until the move is done), or left the host by its move while a change of it was being
    made; nothing was changed here. The message names the VM and what was left undone."""


class VmAmbiguous(HyperVError):
    """Several VMs that are on share the name a command gives (Hyper-V tells VMs apart by
    GUID only); nothing was done to any of them. The message names their GUIDs."""


class VmNotStopped(HyperVError):
    """Processors and memory of a VM that is not off cannot change on this host."""

    def __init__(self, vm_name: str, state: str = "running") -> None:
        super().__init__(f"VM {vm_name}: a {state} VM cannot change processors or memory on "
                         "this host; stop it first")


# --- the Windows service ------------------------------------------------------------------


class ServiceSetupError(AgentError):
    """A step of installing, starting, stopping or removing the Windows service failed."""


class HostNotReady(AgentError):
    """Hyper-V (vmms or its v2 namespace) did not become ready within the bounded wait."""


def system_said(error: OSError) -> str:
    """What the system said of ``error``, and of which file when it named one: how
    ``serve``, ``emulator wsman`` and the Windows service say an OSError that is no
    listener's."""
    said = error.strerror or str(error)
    return f"{said}: {error.filename}" if error.filename is not None else said
