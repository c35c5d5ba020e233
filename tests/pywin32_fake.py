"""pywin32's security calls as fake modules (``win32security``, ``win32api``, ``win32net``,
``ntsecuritycon``, ``pywintypes``), for code that sets access lists, account rights and
group memberships on Windows.

Each call checks its arguments as pywin32 parses them (``win32/src/win32security.i``:
``SetNamedSecurityInfo`` "Oll|OOOO", ``GetNamedSecurityInfo`` "Oll", ``CreateWellKnownSid``
"k|O", ``GetTokenInformation`` "Ol" answering ``TokenUser`` with ``(PySID, attributes)``,
``LookupAccountName``/``LookupAccountSid`` "OO" answering ``(PySID, domain, type)`` and
``(name, domain, type)``, ``ConvertSidToStringSid``/``ConvertStringSidToSid`` "O",
``LsaOpenPolicy`` "Oi" (a system name or None), ``LsaClose`` "O",
``LsaEnumerateAccountRights`` "OO", ``LsaAddAccountRights`` "OOO" and
``LsaRemoveAccountRights`` "OOiO" with a sequence of right names; ``win32/src/PyACL.cpp``:
``AddAccessAllowedAceEx`` "lllO" with a PySID, ``GetAce`` "l" answering
``((type, flags), mask, PySID)``; ``win32/src/win32net/win32netgroup.cpp``:
``NetLocalGroupAddMembers(server, group, level, [PyLOCALGROUP_MEMBERS_INFO_0 {"sid"}])`` and
``NetLocalGroupDelMembers(server, group, ["DOMAIN\\name"])``) and what Windows answers: a
failure is ``pywintypes.error(winerror, funcname, strerror)``; an account holding no right
of its own has nothing to list (2), a member added twice is refused (1378), one not in the
group cannot be taken out (1377). The constants are Windows' values. Install with
:func:`install`; what was set is read back from :class:`Security`.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest

WIN_LOCAL_SYSTEM_SID, WIN_BUILTIN_ADMINISTRATORS_SID = 22, 26  # WELL_KNOWN_SID_TYPE
SE_FILE_OBJECT = 1
DACL_SECURITY_INFORMATION = 0x4
#: winnt.h's 0x80000000L, as pywin32's SWIG module exports it: a C long, so negative. The
#: calls parse SECURITY_INFORMATION with "l" (a 32-bit signed long on Windows), which
#: refuses the positive 0x80000000 (OverflowError); pywin32's own demo
#: (win32/Demos/security/set_file_audit.py) passes the exported constant to
#: SetNamedSecurityInfo.
PROTECTED_DACL_SECURITY_INFORMATION = -0x80000000
FILE_ALL_ACCESS = 0x1F01FF
OBJECT_INHERIT_ACE, CONTAINER_INHERIT_ACE = 1, 2
ACL_REVISION = 2
TOKEN_QUERY = 0x8
TOKEN_USER = 1  # TOKEN_INFORMATION_CLASS TokenUser
POLICY_CREATE_ACCOUNT, POLICY_LOOKUP_NAMES = 0x10, 0x800
SE_SERVICE_LOGON_NAME = "SeServiceLogonRight"
ACCESS_ALLOWED_ACE_TYPE = 0
FILE_GENERIC_READ_AND_EXECUTE = 0x1200A9


class Error(Exception):
    """pywintypes.error: args (winerror, funcname, strerror), also as attributes."""

    def __init__(self, winerror: int, funcname: str, strerror: str) -> None:
        super().__init__(winerror, funcname, strerror)
        self.winerror, self.funcname, self.strerror = winerror, funcname, strerror


@dataclass(frozen=True)
class Sid:
    name: str


SYSTEM, ADMINISTRATORS = Sid("S-1-5-18"), Sid("S-1-5-32-544")
USERS, HYPERV_ADMINISTRATORS = Sid("S-1-5-32-545"), Sid("S-1-5-32-578")
SERVICE_ACCOUNT = Sid("S-1-5-21-7-8-9-1105")  # LAB\svc-cloudstack
#: The accounts the fake host knows: "DOMAIN\\name" (as LookupAccountSid answers) and SID.
ACCOUNTS = {"NT AUTHORITY\\SYSTEM": SYSTEM, "BUILTIN\\Administrators": ADMINISTRATORS,
            "BUILTIN\\Users": USERS, "BUILTIN\\Hyper-V Administrators": HYPERV_ADMINISTRATORS,
            "LAB\\svc-cloudstack": SERVICE_ACCOUNT,
            "NT SERVICE\\hyperv-agent": Sid("S-1-5-80-1-2-3-4-5"),
            "NT AUTHORITY\\NETWORK SERVICE": Sid("S-1-5-20")}
#: ProgramData's default list, which what is made in it inherits: Users may read.
PROGRAM_DATA_DACL = [(OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE, FILE_ALL_ACCESS, SYSTEM),
                     (OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE, FILE_ALL_ACCESS,
                      ADMINISTRATORS),
                     (OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE,
                      FILE_GENERIC_READ_AND_EXECUTE, USERS)]


def _int(value: object, what: str) -> int:
    """An argument pywin32 parses with "l" or "i": a C long or int, 32 bits on Windows."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what}: an integer is required, not {type(value).__name__}")
    if not -2**31 <= value < 2**31:
        raise OverflowError(f"{what}: Python int too large to convert to C long")
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

    def GetAceCount(self) -> int:
        return len(self.entries)

    def GetAce(self, index: object) -> tuple[tuple[int, int], int, Sid]:
        number = _int(index, "index")
        if number >= len(self.entries):
            raise Error(87, "GetAce", "The parameter is incorrect.")
        flags, mask, sid = self.entries[number]
        return (ACCESS_ALLOWED_ACE_TYPE, flags), mask, sid


@dataclass(frozen=True)
class Descriptor:
    """A PySECURITY_DESCRIPTOR read with DACL_SECURITY_INFORMATION."""

    dacl: Acl | None

    def GetSecurityDescriptorDacl(self) -> Acl | None:
        return self.dacl


@dataclass
class LsaHandle:
    """A PyLSA_HANDLE: its access mask, and whether it was closed."""

    access: int
    closed: bool = False


def _sid_arg(sid: object) -> Sid:
    if not isinstance(sid, Sid):
        raise TypeError("The object is not a PySID object")
    return sid


def _rights_arg(rights: object) -> list[str]:
    if isinstance(rights, str) or not isinstance(rights, tuple | list):
        raise TypeError("UserRights must be a sequence of unicode or string objects")
    if not all(isinstance(right, str) for right in rights):
        raise TypeError("Objects of type 'int' can not be converted to Unicode.")
    return list(rights)


def _system(name: object) -> None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"Objects of type '{type(name).__name__}' can not be converted "
                        "to Unicode.")


@dataclass
class Security:
    """What was asked of Windows: the access lists set, by path, and a refusal to make."""

    account: Sid = field(default_factory=lambda: Sid("S-1-5-21-1-2-3-1001"))
    dacls: dict[str, tuple[int, Acl]] = field(default_factory=dict)
    refuse: tuple[str, Error] | None = None  # (a path's ending, what Windows says)
    tokens: list[int] = field(default_factory=list)
    #: The rights assigned to accounts themselves, by SID string (LSA's account objects).
    rights: dict[str, list[str]] = field(default_factory=dict)
    #: The members of local groups, by the group's SID string.
    groups: dict[str, set[str]] = field(default_factory=lambda: {
        ADMINISTRATORS.name: {"S-1-5-21-1-2-3-500"}, HYPERV_ADMINISTRATORS.name: set()})
    policies: list[LsaHandle] = field(default_factory=list)

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

    def GetNamedSecurityInfo(self, name: object, kind: object, info: object) -> Descriptor:
        if not isinstance(name, str):
            raise TypeError(f"Objects of type '{type(name).__name__}' can not be converted "
                            "to Unicode.")
        _int(kind, "ObjectType")
        if _int(info, "SecurityInfo") & DACL_SECURITY_INFORMATION == 0:
            return Descriptor(None)
        if self.refuse is not None and name.endswith(self.refuse[0]):
            raise Error(self.refuse[1].winerror, "GetNamedSecurityInfo", self.refuse[1].strerror)
        found = self.dacls.get(name)
        return Descriptor(found[1] if found else Acl(list(PROGRAM_DATA_DACL)))

    # --- accounts -----------------------------------------------------------------------

    def LookupAccountName(self, system: object, name: object) -> tuple[Sid, str, int]:
        _system(system)
        if not isinstance(name, str):
            raise TypeError("accountName must be a string")
        for full, sid in ACCOUNTS.items():
            if name.lower() in (full.lower(), full.rpartition("\\")[2].lower()):
                return sid, full.partition("\\")[0], 1  # SidTypeUser
        raise Error(1332, "LookupAccountName", "No mapping between account names and "
                    "security IDs was done.")

    def LookupAccountSid(self, system: object, sid: object) -> tuple[str, str, int]:
        _system(system)
        for full, known in ACCOUNTS.items():
            if known == _sid_arg(sid):
                domain, _, name = full.partition("\\")
                return name, domain, 1
        raise Error(1332, "LookupAccountSid", "No mapping between account names and "
                    "security IDs was done.")

    def ConvertSidToStringSid(self, sid: object) -> str:
        return _sid_arg(sid).name

    def ConvertStringSidToSid(self, text: object) -> Sid:
        if not isinstance(text, str):
            raise TypeError("StringSid must be a string")
        if not text.startswith("S-1-"):
            raise Error(1337, "ConvertStringSidToSid", "The security ID structure is invalid.")
        return Sid(text)

    # --- LSA ----------------------------------------------------------------------------

    def _open(self, handle: object, access: int, call: str) -> None:
        if not isinstance(handle, LsaHandle) or handle not in self.policies or handle.closed:
            raise Error(6, call, "The handle is invalid.")
        if handle.access & access != access:
            raise Error(5, call, "Access is denied.")

    def LsaOpenPolicy(self, system: object, access: object) -> LsaHandle:
        _system(system)
        self.policies.append(LsaHandle(_int(access, "access_mask")))
        return self.policies[-1]

    def LsaClose(self, handle: object) -> None:
        self._open(handle, 0, "LsaClose")
        assert isinstance(handle, LsaHandle)
        handle.closed = True

    def LsaEnumerateAccountRights(self, handle: object, sid: object) -> tuple[str, ...]:
        self._open(handle, POLICY_LOOKUP_NAMES, "LsaEnumerateAccountRights")
        held = self.rights.get(_sid_arg(sid).name)
        if not held:  # STATUS_OBJECT_NAME_NOT_FOUND: no LSA account object
            raise Error(2, "LsaEnumerateAccountRights", "The system cannot find the file "
                        "specified.")
        return tuple(held)

    def LsaAddAccountRights(self, handle: object, sid: object, rights: object) -> None:
        creating = not self.rights.get(_sid_arg(sid).name)
        self._open(handle, POLICY_LOOKUP_NAMES | (POLICY_CREATE_ACCOUNT if creating else 0),
                   "LsaAddAccountRights")
        held = self.rights.setdefault(_sid_arg(sid).name, [])
        held += [right for right in _rights_arg(rights) if right not in held]

    def LsaRemoveAccountRights(self, handle: object, sid: object, all_rights: object,
                               rights: object) -> None:
        self._open(handle, POLICY_LOOKUP_NAMES, "LsaRemoveAccountRights")
        _int(all_rights if not isinstance(all_rights, bool) else int(all_rights), "AllRights")
        account = _sid_arg(sid).name
        held = self.rights.get(account)
        if not held:
            raise Error(2, "LsaRemoveAccountRights", "The system cannot find the file "
                        "specified.")
        removed = held if all_rights else _rights_arg(rights)
        self.rights[account] = [right for right in held if right not in removed]

    # --- win32net -----------------------------------------------------------------------

    def _group(self, server: object, group: object, call: str) -> set[str]:
        _system(server)
        for full, sid in ACCOUNTS.items():
            if full.rpartition("\\")[2] == group and sid.name in self.groups:
                return self.groups[sid.name]
        raise Error(2220, call, "The group name could not be found.")

    def NetLocalGroupAddMembers(self, server: object, group: object, level: object,
                                members: object) -> None:
        found = self._group(server, group, "NetLocalGroupAddMembers")
        if _int(level, "level") != 0 or not isinstance(members, list | tuple):
            raise NotImplementedError("only level 0 (a list of {'sid': PySID}) is faked")
        sids = [_sid_arg(member["sid"]).name for member in members]
        if any(sid in found for sid in sids):
            raise Error(1378, "NetLocalGroupAddMembers", "The specified account name is "
                        "already a member of the group.")
        found.update(sids)

    def NetLocalGroupDelMembers(self, server: object, group: object, members: object) -> None:
        found = self._group(server, group, "NetLocalGroupDelMembers")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise TypeError("members must be a list of strings")
        sids = [self.LookupAccountName(None, member)[0].name for member in members]
        if any(sid not in found for sid in sids):
            raise Error(1377, "NetLocalGroupDelMembers", "The specified account name is "
                        "not a member of the group.")
        found.difference_update(sids)


def install(monkeypatch: pytest.MonkeyPatch, security: Security) -> None:
    """Put the fake modules where ``import win32security`` (and the others) finds them."""
    win32security = types.ModuleType("win32security")
    for name in ("OpenProcessToken", "GetTokenInformation", "CreateWellKnownSid",
                 "SetNamedSecurityInfo", "GetNamedSecurityInfo", "LookupAccountName",
                 "LookupAccountSid", "ConvertSidToStringSid", "ConvertStringSidToSid",
                 "LsaOpenPolicy", "LsaClose", "LsaEnumerateAccountRights",
                 "LsaAddAccountRights", "LsaRemoveAccountRights"):
        setattr(win32security, name, getattr(security, name))
    win32security.ACL = Acl  # type: ignore[attr-defined]
    win32security.error = Error  # type: ignore[attr-defined]
    constants = {"WinLocalSystemSid": WIN_LOCAL_SYSTEM_SID,
                 "WinBuiltinAdministratorsSid": WIN_BUILTIN_ADMINISTRATORS_SID,
                 "SE_FILE_OBJECT": SE_FILE_OBJECT,
                 "DACL_SECURITY_INFORMATION": DACL_SECURITY_INFORMATION,
                 "PROTECTED_DACL_SECURITY_INFORMATION": PROTECTED_DACL_SECURITY_INFORMATION,
                 "ACL_REVISION": ACL_REVISION, "TOKEN_QUERY": TOKEN_QUERY,
                 "TokenUser": TOKEN_USER, "POLICY_CREATE_ACCOUNT": POLICY_CREATE_ACCOUNT,
                 "POLICY_LOOKUP_NAMES": POLICY_LOOKUP_NAMES,
                 "SE_SERVICE_LOGON_NAME": SE_SERVICE_LOGON_NAME}
    for name, value in constants.items():
        setattr(win32security, name, value)
    win32api = types.ModuleType("win32api")
    win32api.GetCurrentProcess = lambda: -1  # type: ignore[attr-defined]  # a pseudo-handle
    ntsecuritycon = types.ModuleType("ntsecuritycon")
    for name, value in {"FILE_ALL_ACCESS": FILE_ALL_ACCESS,
                        "OBJECT_INHERIT_ACE": OBJECT_INHERIT_ACE,
                        "CONTAINER_INHERIT_ACE": CONTAINER_INHERIT_ACE}.items():
        setattr(ntsecuritycon, name, value)
    win32net = types.ModuleType("win32net")
    win32net.NetLocalGroupAddMembers = security.NetLocalGroupAddMembers  # type: ignore[attr-defined]
    win32net.NetLocalGroupDelMembers = security.NetLocalGroupDelMembers  # type: ignore[attr-defined]
    win32net.error = Error  # type: ignore[attr-defined]
    pywintypes = types.ModuleType("pywintypes")
    pywintypes.error = Error  # type: ignore[attr-defined]
    for module in (win32security, win32api, win32net, ntsecuritycon, pywintypes):
        monkeypatch.setitem(sys.modules, module.__name__, module)
