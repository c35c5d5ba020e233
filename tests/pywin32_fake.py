"""pywin32's security calls as fake modules (``win32security``, ``win32api``,
``ntsecuritycon``, ``pywintypes``), for code that sets access lists on Windows.

Each call checks its arguments as pywin32 parses them (``win32/src/win32security.i``:
``SetNamedSecurityInfo`` "Oll|OOOO", ``CreateWellKnownSid`` "k|O", ``GetTokenInformation``
"Ol" answering ``TokenUser`` with ``(PySID, attributes)``; ``win32/src/PyACL.cpp``:
``AddAccessAllowedAceEx`` "lllO" with a PySID) and what Windows answers: a failure is
``pywintypes.error(winerror, funcname, strerror)``. The constants are Windows' values.
Install with :func:`install`; the access lists set are read back from :class:`Security`.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest

WIN_LOCAL_SYSTEM_SID, WIN_BUILTIN_ADMINISTRATORS_SID = 22, 26  # WELL_KNOWN_SID_TYPE
SE_FILE_OBJECT = 1
DACL_SECURITY_INFORMATION = 0x4
PROTECTED_DACL_SECURITY_INFORMATION = 0x80000000
FILE_ALL_ACCESS = 0x1F01FF
OBJECT_INHERIT_ACE, CONTAINER_INHERIT_ACE = 1, 2
ACL_REVISION = 2
TOKEN_QUERY = 0x8
TOKEN_USER = 1  # TOKEN_INFORMATION_CLASS TokenUser


class Error(Exception):
    """pywintypes.error: args (winerror, funcname, strerror), also as attributes."""

    def __init__(self, winerror: int, funcname: str, strerror: str) -> None:
        super().__init__(winerror, funcname, strerror)
        self.winerror, self.funcname, self.strerror = winerror, funcname, strerror


@dataclass(frozen=True)
class Sid:
    name: str


SYSTEM, ADMINISTRATORS = Sid("S-1-5-18"), Sid("S-1-5-32-544")


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what}: an integer is required, not {type(value).__name__}")
    return value


@dataclass
class Acl:
    """A PyACL: the entries added, as (ace flags, access mask, SID)."""

    entries: list[tuple[int, int, Sid]] = field(default_factory=list)

    def AddAccessAllowedAceEx(self, revision: object, aceflags: object, access: object,
                              sid: object) -> None:
        if _int(revision, "revision") not in (2, 4):  # ACL_REVISION or ACL_REVISION_DS
            raise Error(1336, "AddAccessAllowedAceEx", "The access control list (ACL) "
                        "structure is invalid.")
        if not isinstance(sid, Sid):
            raise TypeError("The object is not a PySID object")
        self.entries.append((_int(aceflags, "aceflags"), _int(access, "access"), sid))


@dataclass
class Security:
    """What was asked of Windows: the access lists set, by path, and a refusal to make."""

    account: Sid = field(default_factory=lambda: Sid("S-1-5-21-1-2-3-1001"))
    dacls: dict[str, tuple[int, Acl]] = field(default_factory=dict)
    refuse: tuple[str, Error] | None = None  # (a path's ending, what Windows says)
    tokens: list[int] = field(default_factory=list)

    def OpenProcessToken(self, process: object, access: object) -> int:
        if process != -1 or _int(access, "desiredAccess") & TOKEN_QUERY == 0:
            raise Error(5, "OpenProcessToken", "Access is denied.")
        self.tokens.append(1000 + len(self.tokens))
        return self.tokens[-1]

    def GetTokenInformation(self, token: object, kind: object) -> tuple[Sid, int]:
        if token not in self.tokens:
            raise Error(6, "GetTokenInformation", "The handle is invalid.")
        if _int(kind, "TokenInformationClass") != TOKEN_USER:
            raise NotImplementedError("only TokenUser is faked")
        return self.account, 0

    def CreateWellKnownSid(self, kind: object, domain: object = None) -> Sid:
        if domain is not None and not isinstance(domain, Sid):
            raise TypeError("The object is not a PySID object")
        known = {WIN_LOCAL_SYSTEM_SID: SYSTEM, WIN_BUILTIN_ADMINISTRATORS_SID: ADMINISTRATORS}
        if _int(kind, "WellKnownSidType") not in known:
            raise Error(87, "CreateWellKnownSid", "The parameter is incorrect.")
        return known[kind]  # type: ignore[index]

    def SetNamedSecurityInfo(self, name: object, kind: object, info: object,
                             owner: object = None, group: object = None, dacl: object = None,
                             sacl: object = None) -> None:
        if not isinstance(name, str):
            raise TypeError(f"Objects of type '{type(name).__name__}' can not be converted "
                            "to Unicode.")
        _int(kind, "ObjectType"), _int(info, "SecurityInfo")
        if any(not isinstance(sid, Sid | None) for sid in (owner, group)):
            raise TypeError("The object is not a PySID object")
        if any(not isinstance(acl, Acl | None) for acl in (dacl, sacl)):
            raise TypeError("The object is not a PyACL object")
        if self.refuse is not None and name.endswith(self.refuse[0]):
            raise self.refuse[1]
        assert isinstance(info, int) and isinstance(dacl, Acl)
        self.dacls[name] = (info, dacl)


def install(monkeypatch: pytest.MonkeyPatch, security: Security) -> None:
    """Put the fake modules where ``import win32security`` (and the others) finds them."""
    win32security = types.ModuleType("win32security")
    for name in ("OpenProcessToken", "GetTokenInformation", "CreateWellKnownSid",
                 "SetNamedSecurityInfo"):
        setattr(win32security, name, getattr(security, name))
    win32security.ACL = Acl  # type: ignore[attr-defined]
    win32security.error = Error  # type: ignore[attr-defined]
    constants = {"WinLocalSystemSid": WIN_LOCAL_SYSTEM_SID,
                 "WinBuiltinAdministratorsSid": WIN_BUILTIN_ADMINISTRATORS_SID,
                 "SE_FILE_OBJECT": SE_FILE_OBJECT,
                 "DACL_SECURITY_INFORMATION": DACL_SECURITY_INFORMATION,
                 "PROTECTED_DACL_SECURITY_INFORMATION": PROTECTED_DACL_SECURITY_INFORMATION,
                 "ACL_REVISION": ACL_REVISION, "TOKEN_QUERY": TOKEN_QUERY,
                 "TokenUser": TOKEN_USER}
    for name, value in constants.items():
        setattr(win32security, name, value)
    win32api = types.ModuleType("win32api")
    win32api.GetCurrentProcess = lambda: -1  # type: ignore[attr-defined]  # a pseudo-handle
    ntsecuritycon = types.ModuleType("ntsecuritycon")
    for name, value in {"FILE_ALL_ACCESS": FILE_ALL_ACCESS,
                        "OBJECT_INHERIT_ACE": OBJECT_INHERIT_ACE,
                        "CONTAINER_INHERIT_ACE": CONTAINER_INHERIT_ACE}.items():
        setattr(ntsecuritycon, name, value)
    pywintypes = types.ModuleType("pywintypes")
    pywintypes.error = Error  # type: ignore[attr-defined]
    for module in (win32security, win32api, ntsecuritycon, pywintypes):
        monkeypatch.setitem(sys.modules, module.__name__, module)
