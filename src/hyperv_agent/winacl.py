"""Who may open the agent's files and what its service account may do, on Windows (pywin32).

Windows ignores the POSIX mode ``os.open`` is given, and a file made under
``%ProgramData%`` inherits that folder's access list, which lets every local user read
it. :func:`restrict` replaces an object's access list with a protected one (nothing
inherited from the folders above): full control for SYSTEM, the Administrators group and
the agent's account (the account this process runs as unless another is named: the
installer names the service's account). With ``inherit`` the entries also apply to what a
folder holds and will hold. :func:`readable_by_all` says whether a folder still lets every
local user read it.

The service's account is given what the service control manager does not give it when a
service is installed through its API (the Services console does): the right to log on as
a service (:func:`add_account_right`, LSA), and membership of *Hyper-V Administrators*
(:func:`add_group_member`), without which Hyper-V's WMI v2 namespace refuses it. Both can
be taken back (:func:`remove_account_right`, :func:`remove_group_member`). Accounts are
passed as SID strings (``S-1-5-21-...``); :func:`account_sid` finds one by name.

Windows only: pywin32 is imported when a function is called. The calls are tested on any
OS against ``tests/pywin32_fake.py``, which checks their argument shapes as pywin32's
``win32security.i``, ``PyACL.cpp`` and ``win32netgroup.cpp`` parse them; they have not run
on a Windows host.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hyperv_agent.errors import ConfigError

if TYPE_CHECKING:  # pywin32's handle and SID types exist in its type stubs only
    from _win32typing import PyLSA_HANDLE, PySID

LOCAL_SYSTEM = "S-1-5-18"
ADMINISTRATORS = "S-1-5-32-544"
HYPERV_ADMINISTRATORS = "S-1-5-32-578"  # BUILTIN\Hyper-V Administrators, any language
SERVICE_LOGON_RIGHT = "SeServiceLogonRight"  # "Log on as a service"
#: The groups whose read access means every local user can read (Everyone, Authenticated
#: Users, Interactive, Users): ProgramData's default list lets Users read and execute.
EVERY_LOCAL_USER = {"S-1-1-0": "Everyone", "S-1-5-11": "Authenticated Users",
                    "S-1-5-4": "INTERACTIVE", "S-1-5-32-545": "Users"}
_READ = 0x1 | 0x80000000 | 0x10000000  # FILE_READ_DATA, GENERIC_READ, GENERIC_ALL
_ACCESS_ALLOWED_ACE_TYPE = 0
#: NtStatus STATUS_OBJECT_NAME_NOT_FOUND as a Windows error: an account holding no right
#: of its own (only through its groups) has no LSA account object to list.
_ERROR_FILE_NOT_FOUND = 2
_ERROR_MEMBER_NOT_IN_ALIAS, _ERROR_MEMBER_IN_ALIAS = 1377, 1378


def needs_logon_right(sid: str) -> bool:
    """False for the accounts the service control manager logs on without the right:
    LocalSystem, LocalService, NetworkService, and virtual accounts (``NT SERVICE\\name``,
    S-1-5-80-...)."""
    return sid not in (LOCAL_SYSTEM, "S-1-5-19", "S-1-5-20") and not sid.startswith("S-1-5-80-")


def _failed(what: str, error: object) -> ConfigError:
    strerror = str(getattr(error, "strerror", error)).strip()
    return ConfigError(f"{what}: {strerror} ({getattr(error, 'funcname', '?')}, "
                       f"{getattr(error, 'winerror', '?')})")


def _sid(sid: str) -> PySID:
    import win32security

    return win32security.ConvertStringSidToSid(sid)


def account_sid(account: str) -> str:
    """The SID of ``DOMAIN\\user`` (or ``user@domain``), as a string."""
    import pywintypes
    import win32security

    try:
        found = win32security.LookupAccountName(None, account)[0]
        return win32security.ConvertSidToStringSid(found)
    except pywintypes.error as error:
        raise _failed(f"no account {account!r}", error) from None


def restrict(path: Path, *, inherit: bool = False, account: str | None = None) -> None:
    """Replace ``path``'s access list as above (``account``: a SID string; None: this
    process's account); ConfigError (one line) when Windows refuses."""
    import ntsecuritycon
    import pywintypes
    import win32api
    import win32security

    try:
        if account is None:
            token = win32security.OpenProcessToken(win32api.GetCurrentProcess(),
                                                   win32security.TOKEN_QUERY)
            agent = win32security.GetTokenInformation(token, win32security.TokenUser)[0]
        else:
            agent = _sid(account)
        owners = (win32security.CreateWellKnownSid(win32security.WinLocalSystemSid, None),
                  win32security.CreateWellKnownSid(win32security.WinBuiltinAdministratorsSid,
                                                   None),
                  agent)
        flags = (ntsecuritycon.OBJECT_INHERIT_ACE | ntsecuritycon.CONTAINER_INHERIT_ACE
                 if inherit else 0)
        dacl = win32security.ACL()
        for sid in owners:
            dacl.AddAccessAllowedAceEx(win32security.ACL_REVISION, flags,
                                       ntsecuritycon.FILE_ALL_ACCESS, sid)
        win32security.SetNamedSecurityInfo(
            str(path), win32security.SE_FILE_OBJECT,
            win32security.DACL_SECURITY_INFORMATION
            | win32security.PROTECTED_DACL_SECURITY_INFORMATION,
            None, None, dacl, None)
    except pywintypes.error as error:
        raise _failed(f"cannot restrict access to {path}", error) from None


def readable_by_all(path: Path) -> tuple[str, ...]:
    """The groups of every local user (:data:`EVERY_LOCAL_USER`) that ``path``'s access
    list lets read it or what it holds; ``("Everyone",)`` for no list at all."""
    import pywintypes
    import win32security

    try:
        descriptor = win32security.GetNamedSecurityInfo(
            str(path), win32security.SE_FILE_OBJECT, win32security.DACL_SECURITY_INFORMATION)
        dacl = descriptor.GetSecurityDescriptorDacl()
        if dacl is None:  # a NULL DACL: no restriction at all
            return ("Everyone",)
        found: list[str] = []
        for index in range(dacl.GetAceCount()):
            ace = dacl.GetAce(index)
            (kind, _flags), mask, sid = ace[0], ace[1], ace[-1]
            name = EVERY_LOCAL_USER.get(win32security.ConvertSidToStringSid(sid))
            if kind == _ACCESS_ALLOWED_ACE_TYPE and mask & _READ and name and name not in found:
                found.append(name)
        return tuple(found)
    except pywintypes.error as error:
        raise _failed(f"cannot read the access list of {path}", error) from None


def exposure(folder: Path) -> str | None:
    """A warning when ``folder`` (the agent's state folder: agent.toml may hold SMB
    passwords) lets every local user read it, naming the fix; None when it does not."""
    try:
        groups = readable_by_all(folder)
    except ConfigError as error:
        return f"cannot check who may read {folder}: {error}"
    if not groups:
        return None
    return (f"{folder} can be read by every local user ({', '.join(groups)}): agent.toml may "
            "hold SMB passwords. Run `hyperv-agent service install` again (it restricts the "
            f'folder), or: icacls "{folder}" /inheritance:r /grant:r '
            f'"*{LOCAL_SYSTEM}:(OI)(CI)F" "*{ADMINISTRATORS}:(OI)(CI)F" '
            '"<the service\'s account>:(OI)(CI)F"')


@contextmanager
def _policy(access: int) -> Iterator[PyLSA_HANDLE]:
    import win32security

    handle = win32security.LsaOpenPolicy(None, access)  # type: ignore[arg-type]  # None: this host
    try:
        yield handle
    finally:
        win32security.LsaClose(handle)  # type: ignore[arg-type]  # the stub says int


def account_rights(sid: str) -> tuple[str, ...]:
    """The rights assigned to the account itself (not those it has through its groups)."""
    import pywintypes
    import win32security

    try:
        with _policy(win32security.POLICY_LOOKUP_NAMES) as policy:
            return tuple(win32security.LsaEnumerateAccountRights(policy, _sid(sid)))
    except pywintypes.error as error:
        if error.winerror == _ERROR_FILE_NOT_FOUND:
            return ()
        raise _failed(f"cannot list the rights of {sid}", error) from None


def add_account_right(sid: str, right: str) -> None:
    import pywintypes
    import win32security

    try:  # POLICY_CREATE_ACCOUNT: an account holding no right yet gets an LSA account
        with _policy(win32security.POLICY_LOOKUP_NAMES
                     | win32security.POLICY_CREATE_ACCOUNT) as policy:
            win32security.LsaAddAccountRights(policy, _sid(sid), (right,))
    except pywintypes.error as error:
        raise _failed(f"cannot grant {right} to {sid}", error) from None


def remove_account_right(sid: str, right: str) -> None:
    import pywintypes
    import win32security

    try:  # AllRights False: only this right; the account's others stay
        with _policy(win32security.POLICY_LOOKUP_NAMES) as policy:
            win32security.LsaRemoveAccountRights(policy, _sid(sid), False, (right,))
    except pywintypes.error as error:
        raise _failed(f"cannot take {right} back from {sid}", error) from None


def _name(sid: str) -> str:
    """``DOMAIN\\name`` of a SID (a built-in group's name is in the host's language)."""
    import win32security

    name, domain, _kind = win32security.LookupAccountSid(None, _sid(sid))
    return f"{domain}\\{name}" if domain else name


def add_group_member(group: str, member: str) -> bool:
    """Add ``member`` to the local group ``group`` (SID strings); False when it was a
    member already."""
    import pywintypes
    import win32net

    try:
        name = _name(group).rpartition("\\")[2]  # NetLocalGroup* take the group's bare name
        win32net.NetLocalGroupAddMembers(None, name, 0,  # type: ignore[arg-type]  # None: this host
                                         [{"sid": _sid(member)}])  # type: ignore[arg-type]
    except pywintypes.error as error:
        if error.winerror == _ERROR_MEMBER_IN_ALIAS:
            return False
        raise _failed(f"cannot add {member} to the group {group}", error) from None
    return True


def remove_group_member(group: str, member: str) -> bool:
    """Take ``member`` out of the local group ``group``; False when it was not in it."""
    import pywintypes
    import win32net

    try:
        name = _name(group).rpartition("\\")[2]
        win32net.NetLocalGroupDelMembers(None, name, [_name(member)])  # type: ignore[arg-type]
    except pywintypes.error as error:
        if error.winerror == _ERROR_MEMBER_NOT_IN_ALIAS:
            return False
        raise _failed(f"cannot take {member} out of the group {group}", error) from None
    return True
