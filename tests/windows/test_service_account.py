"""What `service install` asks of Windows for its folders and its account, against this
host's real APIs (run by the Windows workflow, as an administrator): protected access
lists set and read back on throwaway folders (``winacl.restrict``, ``readable_by_all``),
and, for a throwaway local account made here and deleted after, the right to log on as a
service through LSA and membership of Hyper-V Administrators (S-1-5-32-578), each granted,
read back with the system's own calls and taken back, directly and through the install's
steps and their record (``granted.json``, ``RevokeGrants``)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ntsecuritycon
import pytest
import pywintypes
import win32api
import win32net
import win32netcon
import win32security

from hyperv_agent import winacl
from hyperv_agent.winsvc import steps
from hyperv_agent.winsvc.windows import WindowsServiceHost

SE_DACL_PROTECTED = 0x1000  # SECURITY_DESCRIPTOR_CONTROL
INHERITED_ACE = 0x10


@dataclass(frozen=True)
class LocalUser:
    name: str  # .\name, as `service install --user` takes it
    sid: str


@pytest.fixture
def local_user() -> Iterator[LocalUser]:
    """A local user that exists for one test: created with NetUserAdd, then deleted with
    whatever the test left granted to it (its LSA account object too)."""
    name = f"hvat{os.getpid() % 100000}{secrets.token_hex(3)}"  # at most 20 characters
    password = f"Hv-{secrets.token_urlsafe(18)}-9a"
    win32net.NetUserAdd(None, 1, {  # type: ignore[arg-type]  # None: this host
        "name": name, "password": password, "priv": win32netcon.USER_PRIV_USER,
        "flags": win32netcon.UF_SCRIPT | win32netcon.UF_DONT_EXPIRE_PASSWD,
        "comment": "hyperv-agent test account, deleted by the test"})
    try:
        sid = win32security.ConvertSidToStringSid(
            win32security.LookupAccountName(None, name)[0])
        yield LocalUser(f".\\{name}", sid)
    finally:
        with contextlib.suppress(pywintypes.error):
            group = _group_name(winacl.HYPERV_ADMINISTRATORS)
            win32net.NetLocalGroupDelMembers(None, group, [name])  # type: ignore[arg-type]
        with contextlib.suppress(pywintypes.error):  # AllRights: the LSA account goes too
            policy = win32security.LsaOpenPolicy(
                None, win32security.POLICY_ALL_ACCESS)  # type: ignore[arg-type]
            try:
                win32security.LsaRemoveAccountRights(
                    policy, win32security.LookupAccountName(None, name)[0],
                    True, ())
            finally:
                win32security.LsaClose(policy)  # type: ignore[arg-type]
        win32net.NetUserDel(None, name)  # type: ignore[arg-type]


def _group_name(sid: str) -> str:
    return win32security.LookupAccountSid(None, win32security.ConvertStringSidToSid(sid))[0]


def _members(group_sid: str) -> set[str]:
    found, _total, _resume = win32net.NetLocalGroupGetMembers(
        None, _group_name(group_sid), 0)
    return {win32security.ConvertSidToStringSid(entry["sid"]) for entry in found}


def _rights(sid: str) -> tuple[str, ...]:
    """LsaEnumerateAccountRights itself: () for an account holding none of its own."""
    policy = win32security.LsaOpenPolicy(None, win32security.POLICY_LOOKUP_NAMES)  # type: ignore[arg-type]
    try:
        return tuple(win32security.LsaEnumerateAccountRights(
            policy, win32security.ConvertStringSidToSid(sid)))
    except pywintypes.error as error:
        if error.winerror == 2:  # no LSA account: no rights of its own
            return ()
        raise
    finally:
        win32security.LsaClose(policy)  # type: ignore[arg-type]


def _dacl(path: Path) -> tuple[int, list[tuple[int, int, int, str]]]:
    """``path``'s descriptor control bits and its ACEs as (type, flags, mask, SID)."""
    descriptor = win32security.GetNamedSecurityInfo(
        str(path), win32security.SE_FILE_OBJECT, win32security.DACL_SECURITY_INFORMATION)
    control, _revision = descriptor.GetSecurityDescriptorControl()
    dacl = descriptor.GetSecurityDescriptorDacl()
    assert dacl is not None
    aces = []
    for index in range(dacl.GetAceCount()):
        ace = dacl.GetAce(index)
        (kind, flags), mask, sid = ace[0], ace[1], ace[-1]
        aces.append((kind, flags, mask, win32security.ConvertSidToStringSid(sid)))
    return control, aces


def _this_account() -> str:
    token = win32security.OpenProcessToken(win32api.GetCurrentProcess(),
                                           win32security.TOKEN_QUERY)
    return win32security.ConvertSidToStringSid(
        win32security.GetTokenInformation(token, win32security.TokenUser)[0])


@pytest.fixture
def programdata_folder() -> Iterator[Path]:
    """A throwaway folder in %ProgramData%, whose inherited list lets Users read."""
    folder = Path(os.environ["PROGRAMDATA"]) / f"hyperv-agent-test-{os.getpid()}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_local_account_is_found_by_name_and_needs_the_logon_right(
        local_user: LocalUser) -> None:
    assert winacl.account_sid(local_user.name) == local_user.sid
    assert local_user.sid.startswith("S-1-5-21-")
    assert winacl.needs_logon_right(local_user.sid)
    assert not winacl.needs_logon_right(winacl.account_sid("NT AUTHORITY\\SYSTEM"))


def test_a_folder_in_programdata_is_readable_by_all_until_restricted(
        programdata_folder: Path, local_user: LocalUser) -> None:
    assert "Users" in winacl.readable_by_all(programdata_folder)
    assert winacl.exposure(programdata_folder) is not None

    winacl.restrict(programdata_folder, inherit=True, account=local_user.sid)
    control, aces = _dacl(programdata_folder)
    assert control & SE_DACL_PROTECTED
    inherit = ntsecuritycon.OBJECT_INHERIT_ACE | ntsecuritycon.CONTAINER_INHERIT_ACE
    assert sorted(aces) == sorted(
        (0, inherit, ntsecuritycon.FILE_ALL_ACCESS, sid)
        for sid in (winacl.LOCAL_SYSTEM, winacl.ADMINISTRATORS, local_user.sid))
    assert winacl.readable_by_all(programdata_folder) == ()
    assert winacl.exposure(programdata_folder) is None

    made_after = programdata_folder / "agent.toml"  # what the folder holds inherits it
    made_after.write_text("x", encoding="utf-8")
    _control, inherited = _dacl(made_after)
    assert {sid for _kind, flags, _mask, sid in inherited if flags & INHERITED_ACE} == {
        winacl.LOCAL_SYSTEM, winacl.ADMINISTRATORS, local_user.sid}
    assert winacl.readable_by_all(made_after) == ()


def test_a_file_restricted_for_this_process_lets_only_it_system_and_administrators_in(
        programdata_folder: Path) -> None:
    key = programdata_folder / "agent.key"
    key.write_text("secret", encoding="utf-8")
    assert winacl.readable_by_all(key)  # inherited from %ProgramData%

    winacl.restrict(key)
    control, aces = _dacl(key)
    assert control & SE_DACL_PROTECTED
    assert sorted(aces) == sorted(
        (0, 0, ntsecuritycon.FILE_ALL_ACCESS, sid)
        for sid in (winacl.LOCAL_SYSTEM, winacl.ADMINISTRATORS, _this_account()))
    assert key.read_text(encoding="utf-8") == "secret"  # still readable by this process


def test_the_logon_right_is_granted_read_back_and_taken_back(local_user: LocalUser) -> None:
    assert winacl.account_rights(local_user.sid) == ()  # a new account holds none
    winacl.add_account_right(local_user.sid, winacl.SERVICE_LOGON_RIGHT)
    assert winacl.SERVICE_LOGON_RIGHT in _rights(local_user.sid)
    assert winacl.SERVICE_LOGON_RIGHT in winacl.account_rights(local_user.sid)

    winacl.remove_account_right(local_user.sid, winacl.SERVICE_LOGON_RIGHT)
    assert winacl.SERVICE_LOGON_RIGHT not in _rights(local_user.sid)
    assert winacl.account_rights(local_user.sid) == ()


def test_membership_of_hyperv_administrators_is_added_and_removed_once(
        local_user: LocalUser) -> None:
    group = winacl.HYPERV_ADMINISTRATORS
    assert local_user.sid not in _members(group)
    assert winacl.add_group_member(group, local_user.sid)
    assert local_user.sid in _members(group)
    assert not winacl.add_group_member(group, local_user.sid)  # a member already

    assert winacl.remove_group_member(group, local_user.sid)
    assert local_user.sid not in _members(group)
    assert not winacl.remove_group_member(group, local_user.sid)  # not in it any more


def test_install_steps_record_what_they_grant_and_remove_takes_back_only_that(
        local_user: LocalUser, tmp_path: Path) -> None:
    host, clock = WindowsServiceHost(), steps.SystemClock()
    record = str(tmp_path / "granted.json")
    logon = steps.GrantServiceLogon(local_user.name, record)
    join = steps.JoinHyperVAdministrators(local_user.name, record)

    assert logon.run(host, clock) == "granted"
    assert logon.run(host, clock) == "already held"
    assert join.run(host, clock) == "added"
    assert join.run(host, clock) == "already a member"
    assert winacl.SERVICE_LOGON_RIGHT in _rights(local_user.sid)
    assert local_user.sid in _members(winacl.HYPERV_ADMINISTRATORS)
    granted = json.loads(Path(record).read_text(encoding="utf-8"))["granted"]
    assert granted == [
        {"account": local_user.name, "sid": local_user.sid,
         "right": winacl.SERVICE_LOGON_RIGHT},
        {"account": local_user.name, "sid": local_user.sid,
         "group": winacl.HYPERV_ADMINISTRATORS}]

    taken = steps.RevokeGrants(record).run(host, clock)
    assert taken.startswith("took back "), taken
    assert winacl.SERVICE_LOGON_RIGHT not in _rights(local_user.sid)
    assert local_user.sid not in _members(winacl.HYPERV_ADMINISTRATORS)
    assert not Path(record).exists()
    assert steps.RevokeGrants(record).run(host, clock) == "nothing recorded"


def test_remove_leaves_a_right_held_before_the_install(
        local_user: LocalUser, tmp_path: Path) -> None:
    host, clock = WindowsServiceHost(), steps.SystemClock()
    record = str(tmp_path / "granted.json")
    winacl.add_account_right(local_user.sid, winacl.SERVICE_LOGON_RIGHT)
    assert steps.GrantServiceLogon(local_user.name, record).run(host, clock) == "already held"
    assert not Path(record).exists()
    assert steps.RevokeGrants(record).run(host, clock) == "nothing recorded"
    assert winacl.SERVICE_LOGON_RIGHT in _rights(local_user.sid)
