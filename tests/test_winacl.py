"""winacl's calls into pywin32, against fakes that parse their arguments as pywin32 does:
the service account's right to log on as a service, its Hyper-V Administrators membership,
the folder's access list and the check that it keeps other local users out."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from hyperv_agent import winacl
from hyperv_agent.errors import ConfigError
from tests import pywin32_fake
from tests.pywin32_fake import HYPERV_ADMINISTRATORS, SERVICE_ACCOUNT

SVC = SERVICE_ACCOUNT.name


@pytest.fixture
def security(monkeypatch: pytest.MonkeyPatch) -> pywin32_fake.Security:
    faked = pywin32_fake.Security()
    pywin32_fake.install(monkeypatch, faked)
    return faked


def test_an_account_is_found_by_name_and_an_unknown_one_is_one_line(
        security: pywin32_fake.Security) -> None:
    assert winacl.account_sid("LAB\\svc-cloudstack") == SVC
    with pytest.raises(ConfigError, match=r"^no account 'LAB\\\\nobody': No mapping between "
                       r"account names and security IDs was done\. \(LookupAccountName, 1332\)$"):
        winacl.account_sid("LAB\\nobody")


def test_the_logon_right_is_granted_listed_and_taken_back_alone(
        security: pywin32_fake.Security) -> None:
    assert winacl.account_rights(SVC) == ()  # no right of its own: LSA has nothing to list
    winacl.add_account_right(SVC, winacl.SERVICE_LOGON_RIGHT)  # creates its LSA account
    security.rights[SVC].append("SeBatchLogonRight")
    assert winacl.account_rights(SVC) == ("SeServiceLogonRight", "SeBatchLogonRight")
    winacl.remove_account_right(SVC, winacl.SERVICE_LOGON_RIGHT)
    assert security.rights[SVC] == ["SeBatchLogonRight"]
    assert security.policies and all(policy.closed for policy in security.policies)


def test_a_refused_grant_is_one_line_and_closes_the_policy(
        security: pywin32_fake.Security, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(handle: object, sid: object, rights: object) -> None:
        raise pywin32_fake.Error(5, "LsaAddAccountRights", "Access is denied.")

    import win32security
    monkeypatch.setattr(win32security, "LsaAddAccountRights", refuse)
    with pytest.raises(ConfigError, match=rf"^cannot grant SeServiceLogonRight to {SVC}: "
                       r"Access is denied\. \(LsaAddAccountRights, 5\)$"):
        winacl.add_account_right(SVC, winacl.SERVICE_LOGON_RIGHT)
    assert all(policy.closed for policy in security.policies)


def test_the_account_joins_and_leaves_hyper_v_administrators_by_the_groups_sid(
        security: pywin32_fake.Security) -> None:
    group = HYPERV_ADMINISTRATORS.name
    assert winacl.add_group_member(group, SVC) is True
    assert winacl.add_group_member(group, SVC) is False  # 1378: a member already
    assert security.groups[group] == {SVC}
    assert winacl.remove_group_member(group, SVC) is True
    assert winacl.remove_group_member(group, SVC) is False  # 1377: not a member
    assert security.groups[group] == set()


@pytest.mark.parametrize(("sid", "needed"), [
    ("S-1-5-18", False), ("S-1-5-19", False), ("S-1-5-20", False),
    ("S-1-5-80-1-2-3-4-5", False), (SVC, True)])
def test_builtin_and_virtual_service_accounts_need_no_logon_right(sid: str,
                                                                  needed: bool) -> None:
    assert winacl.needs_logon_right(sid) is needed


def test_a_folder_restricted_for_a_named_account_is_no_longer_readable_by_all(
        security: pywin32_fake.Security, tmp_path: Path) -> None:
    assert winacl.readable_by_all(tmp_path) == ("Users",)  # ProgramData's default list
    winacl.restrict(tmp_path, inherit=True, account=SVC)
    info, dacl = security.dacls[str(tmp_path)]
    assert info == (pywin32_fake.DACL_SECURITY_INFORMATION
                    | pywin32_fake.PROTECTED_DACL_SECURITY_INFORMATION)
    inherited = pywin32_fake.OBJECT_INHERIT_ACE | pywin32_fake.CONTAINER_INHERIT_ACE
    assert dacl.entries == [(inherited, pywin32_fake.FILE_ALL_ACCESS, sid) for sid in (
        pywin32_fake.SYSTEM, pywin32_fake.ADMINISTRATORS, SERVICE_ACCOUNT)]
    assert security.tokens == []  # the named account, not the installer's own
    assert winacl.readable_by_all(tmp_path) == ()


def test_security_information_is_passed_as_the_signed_long_pywin32_parses(
        security: pywin32_fake.Security, tmp_path: Path) -> None:
    import win32security

    # winnt.h's unsigned PROTECTED_DACL_SECURITY_INFORMATION overflows pywin32's "l"
    with pytest.raises(OverflowError):
        win32security.SetNamedSecurityInfo(str(tmp_path), win32security.SE_FILE_OBJECT,
                                           0x80000004, None, None, win32security.ACL(), None)
    winacl.restrict(tmp_path)  # pywin32's own constant, a negative C long, is what it takes
    assert security.dacls[str(tmp_path)][0] == 0x80000004 - 2**32


def test_start_on_windows_warns_once_naming_a_folder_every_local_user_can_read(
        security: pywin32_fake.Security, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from hyperv_agent import service
    from hyperv_agent.config import AgentSection

    settings = AgentSection(state_dir=tmp_path, allow_from=("10.0.0.0/8",))
    agent = SimpleNamespace(config=SimpleNamespace(agent=settings),
                            limits=lambda _: SimpleNamespace(max_connections=10**6))
    monkeypatch.setattr(service, "_WINDOWS", True)
    service.announce_limits(agent, None)  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path} can be read by every local user (Users): agent.toml may hold SMB "
        "passwords. Run `hyperv-agent service install` again (it restricts the folder), or: "
        f'icacls "{tmp_path}" /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" '
        '"*S-1-5-32-544:(OI)(CI)F" "<the service\'s account>:(OI)(CI)F"']
    caplog.clear()
    winacl.restrict(tmp_path, inherit=True, account=SVC)
    service.announce_limits(agent, None)  # type: ignore[arg-type]
    assert caplog.records == []


def test_a_folder_whose_list_cannot_be_read_is_said_so(
        security: pywin32_fake.Security, tmp_path: Path) -> None:
    security.refuse = (tmp_path.name, pywin32_fake.Error(5, "SetNamedSecurityInfo",
                                                         "Access is denied."))
    assert winacl.exposure(tmp_path) == (
        f"cannot check who may read {tmp_path}: cannot read the access list of {tmp_path}: "
        "Access is denied. (GetNamedSecurityInfo, 5)")
