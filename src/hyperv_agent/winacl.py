"""Files and folders only the agent's own account can open, on Windows (pywin32).

Windows ignores the POSIX mode ``os.open`` is given, and a file made under
``%ProgramData%`` inherits that folder's access list, which lets every local user read
it. :func:`restrict` replaces an object's access list with a protected one (nothing
inherited from the folders above): full control for SYSTEM, the Administrators group and
the account this process runs as (the service account; SYSTEM again under LocalSystem).
With ``inherit`` the entries also apply to what a folder holds and will hold.

Windows only: pywin32 is imported when it is called. The calls are tested on any OS
against ``tests/pywin32_fake.py``, which checks their argument shapes as pywin32's
``win32security.i`` and ``PyACL.cpp`` parse them; they have not run on a Windows host.
"""

from __future__ import annotations

from pathlib import Path

from hyperv_agent.errors import ConfigError


def restrict(path: Path, *, inherit: bool = False) -> None:
    """Replace ``path``'s access list as above; ConfigError (one line) when Windows refuses."""
    import ntsecuritycon
    import pywintypes
    import win32api
    import win32security

    try:
        token = win32security.OpenProcessToken(win32api.GetCurrentProcess(),
                                               win32security.TOKEN_QUERY)
        account = win32security.GetTokenInformation(token, win32security.TokenUser)[0]
        owners = (win32security.CreateWellKnownSid(win32security.WinLocalSystemSid, None),
                  win32security.CreateWellKnownSid(win32security.WinBuiltinAdministratorsSid,
                                                   None),
                  account)
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
        raise ConfigError(f"cannot restrict access to {path}: {error.strerror.strip()} "
                          f"({error.funcname}, {error.winerror})") from None
