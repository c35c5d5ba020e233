"""The agent's own state: the pool registry as the one source of roots, the journal of VMs
being built, the agent's name, and what a killed write leaves in the state directory."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from hyperv_agent import state
from hyperv_agent.hostfs.locations import Credentials, ShareLocation
from hyperv_agent.state import (
    CREDENTIALS_FILE,
    KEPT_ASIDE,
    BuildJournal,
    PoolRegistry,
    RegisteredPool,
    agent_id,
    keep_private_ip,
    kept_private_ip,
    set_aside_copies,
    sweep_temporaries,
)
from tests import pywin32_fake

LOCAL = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"


def test_roots_are_found_by_any_spelling_when_registered_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pools.json"
    registry = PoolRegistry(path, local_root=LOCAL)
    registry.put("AB-1", RegisteredPool(root="C:\\pools\\p1", pool_type="Filesystem"))
    registry.put("cd-2", RegisteredPool(root="\\\\fs1\\primary", pool_type="SMB", host="fs1",
                                        path="/primary"))
    again = PoolRegistry(path, local_root=LOCAL)
    assert again.by_root("c:/POOLS/p1/") == RegisteredPool("C:\\pools\\p1", "Filesystem")
    assert again.by_root("\\\\FS1\\Primary\\sub\\..") is not None
    assert again.by_root(LOCAL.lower()) == RegisteredPool(LOCAL, "Filesystem")
    assert again.by_root("C:\\pools") is None and again.by_root("C:\\pools\\p1\\x") is None
    assert again.all_roots() == (LOCAL, "C:\\pools\\p1", "\\\\fs1\\primary")
    assert again.roots() == ("\\\\fs1\\primary",)  # heartbeats: shared pools only
    assert LOCAL not in path.read_text()  # the configuration names the local pool


def test_stored_root_that_registration_refuses_is_left_out_with_a_warning_when_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "pools.json"
    kept = {"root": "C:\\Windows", "pool_type": "Filesystem", "host": "", "path": ""}
    path.write_text(json.dumps({
        "aa-1": {"root": "C:\\pool\\..\\Windows", "pool_type": "Filesystem"},
        "bb-2": "\\\\fs1\\share\\a\\..\\b",  # a bare root, as older versions wrote
        "cc-3": {"root": "pool", "pool_type": "Filesystem"},  # relative
        "dd-4": kept,  # a folder the MS may register, however it was reached
    }))
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        registry = PoolRegistry(path, local_root=LOCAL)
    assert registry.all_roots() == (LOCAL, "C:\\Windows")
    assert registry.get("aa-1") is None and registry.get("dd-4") == RegisteredPool(**kept)
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert all(f"storage pool {key} in {path} left out" in warned for key in ("aa-1", "bb-2",
                                                                               "cc-3"))
    assert "'..' segment" in warned and "dd-4" not in warned
    registry.put("ee-5", RegisteredPool("C:\\pools\\p5", "Filesystem"))
    assert set(json.loads(path.read_text())) == {"dd-4", "ee-5"}  # gone at the next change


def test_local_pool_uuid_takes_no_other_root_and_is_kept_across_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "pools.json"
    registry = PoolRegistry(path, local_root=LOCAL)
    registry.put("Host-Guid", RegisteredPool("D:\\data", "Filesystem"))  # before it was known
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        registry.name_local("host-guid")
    assert "D:\\data registered under its uuid is forgotten" in caplog.text
    assert registry.get("host-guid") is None and registry.by_root("D:\\data") is None
    assert json.loads(path.read_text()) == {"host-guid": {"local": True}}
    again = PoolRegistry(path, local_root=LOCAL)
    assert again.is_local("HOST-GUID") and not again.is_local("other")
    with pytest.raises(ValueError, match="local pool's uuid"):
        again.put("host-guid", RegisteredPool("D:\\data", "Filesystem"))
    again.put("host-guid", RegisteredPool(LOCAL.upper(), "Filesystem"))  # itself: nothing stored
    assert json.loads(path.read_text()) == {"host-guid": {"local": True}}
    assert again.all_roots() == (LOCAL,) and LOCAL not in path.read_text()


def test_journal_keeps_the_vms_being_built_when_reopened(tmp_path: Path) -> None:
    path = tmp_path / "building.json"
    journal = BuildJournal(path)
    journal.begin("i-2-5-VM")
    journal.begin("r-7-VM")
    journal.end("I-2-5-vm")  # Hyper-V matches names without case
    journal.end("never-begun")
    assert BuildJournal(path).pending() == ("r-7-VM",)
    assert json.loads(path.read_text()) == ["r-7-VM"]


def test_journal_keeps_the_guid_of_a_defined_vm_and_reads_names_alone(tmp_path: Path) -> None:
    """A half-built VM is removed by the GUID its definition got (another VM may have its
    name); a name recorded before that, or by an earlier version, has none."""
    path = tmp_path / "building.json"
    path.write_text(json.dumps(["i-2-4-VM"]))  # as earlier versions wrote it
    journal = BuildJournal(path)
    assert (journal.pending(), journal.guid("i-2-4-VM")) == (("i-2-4-VM",), None)
    journal.begin("i-2-5-VM")
    journal.defined("i-2-5-VM", "6B1F2B4C-0D1E-4F3A-9B8C-7D6E5F4A3B2C")
    reopened = BuildJournal(path)
    assert reopened.pending() == ("i-2-4-VM", "i-2-5-VM")
    assert reopened.guid("I-2-5-vm") == "6B1F2B4C-0D1E-4F3A-9B8C-7D6E5F4A3B2C"
    assert json.loads(path.read_text()) == [
        "i-2-4-VM", {"name": "i-2-5-VM", "guid": "6B1F2B4C-0D1E-4F3A-9B8C-7D6E5F4A3B2C"}]
    reopened.begin("i-2-5-VM")  # built again: the new definition is not made yet
    assert BuildJournal(path).guid("i-2-5-VM") is None


def test_journal_writes_a_defined_vm_s_guid_into_its_file_not_renamed_over_it(
    tmp_path: Path,
) -> None:
    """Every StartCommand records the GUID of the definition it made: renamed over the file
    ``begin`` made, that has ext4 write the new data back first, behind other data's
    write-back, on every start. The GUID goes into the same file (its inode kept), which
    reads back whole; a journal that would shrink is renamed over as before."""
    path = tmp_path / "building.json"
    journal = BuildJournal(path)
    journal.begin("i-2-5-VM")
    made = path.stat().st_ino
    journal.defined("i-2-5-VM", "6B1F2B4C-0D1E-4F3A-9B8C-7D6E5F4A3B2C")
    assert path.stat().st_ino == made
    assert json.loads(path.read_text()) == [
        {"name": "i-2-5-VM", "guid": "6B1F2B4C-0D1E-4F3A-9B8C-7D6E5F4A3B2C"}]
    journal.begin("r-7-VM")
    journal.defined("r-7-VM", "0A1B2C3D-4E5F-4061-8273-94A5B6C7D8E9")
    assert BuildJournal(path).guid("r-7-VM") == "0A1B2C3D-4E5F-4061-8273-94A5B6C7D8E9"
    journal.end("i-2-5-VM")
    assert BuildJournal(path).pending() == ("r-7-VM",)
    assert json.loads(path.read_text()) == [
        {"name": "r-7-VM", "guid": "0A1B2C3D-4E5F-4061-8273-94A5B6C7D8E9"}]


def test_journal_with_nothing_pending_is_no_file(tmp_path: Path) -> None:
    path = tmp_path / "building.json"
    journal = BuildJournal(path)
    journal.begin("i-2-5-VM")
    journal.end("i-2-5-VM")
    assert not path.exists()
    assert BuildJournal(path).pending() == ()
    journal.begin("i-2-6-VM")
    assert BuildJournal(path).pending() == ("i-2-6-VM",)


def test_agent_id_is_made_once_and_kept_when_asked_again(tmp_path: Path) -> None:
    made = agent_id(tmp_path)
    assert len(made) == 8 and int(made, 16) >= 0
    assert agent_id(tmp_path) == made
    (tmp_path / "agent-id").write_text("not hex!")
    assert agent_id(tmp_path) not in (made, "not hex!")


def test_the_registered_address_is_kept_and_anything_else_in_its_file_is_none(
    tmp_path: Path,
) -> None:
    assert kept_private_ip(tmp_path) is None
    keep_private_ip(tmp_path, "10.1.1.7")
    assert kept_private_ip(tmp_path) == "10.1.1.7"
    keep_private_ip(tmp_path, "fd00::7")
    assert kept_private_ip(tmp_path) == "fd00::7"
    (tmp_path / "private-ip").write_text("..\\..\\x")
    assert kept_private_ip(tmp_path) is None


def test_files_a_killed_write_left_aside_are_swept_and_the_state_is_kept(
    tmp_path: Path,
) -> None:
    (tmp_path / "pools.json").write_text("{}")
    for name in (".pools-k2j4", ".building-x9", ".agent-id-q1", ".private-ip-z7",
                 ".pool-credentials-w3"):  # a password a killed write left aside
        (tmp_path / name).write_text("half")
    (tmp_path / ".other").write_text("not ours")
    assert sweep_temporaries(tmp_path) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other", "pools.json"]
    assert sweep_temporaries(tmp_path / "absent") == 0


def test_a_state_file_reaches_the_disk_before_it_takes_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a power loss the pools file holds its old content or its new one, never an
    empty file: its bytes are flushed to the disk (fsync) before the rename. The journal of
    VMs being built, written twice by every StartCommand, is not flushed."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, Path.replace

    def replace(self: Path, target: str | os.PathLike[str]) -> Path:
        events.append(f"rename to {Path(target).name}")
        return real_replace(self, target)

    def fsync_of(fd: int) -> str:
        status = os.fstat(fd)
        return "fsync folder" if stat.S_ISDIR(status.st_mode) else f"fsync {status.st_size}"

    def fsync(fd: int) -> None:
        events.append(fsync_of(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    registry = PoolRegistry(tmp_path / "pools.json", local_root=LOCAL)
    registry.put("ab-1", RegisteredPool(root="C:\\pools\\p1", pool_type="Filesystem"))
    size = (tmp_path / "pools.json").stat().st_size
    # the rename is itself flushed (the folder's entries): else a power loss can undo it
    assert events == [f"fsync {size}", "rename to pools.json", "fsync folder"]
    events.clear()
    BuildJournal(tmp_path / "building.json").begin("i-2-5-VM")  # rebuilt by a StartCommand
    assert events == ["rename to building.json"]


@pytest.mark.parametrize("content", [
    b'{"ab-1": {"root": "C:\\\\pools\\\\p1", "pool_t',  # cut short
    b"\x00\x00\x00\x00",  # a power loss: blocks never written
    b'["C:\\\\pools\\\\p1"]',  # not the shape this version writes
    b"",
])
def test_a_pools_file_that_cannot_be_read_is_named_kept_aside_and_not_written_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes,
) -> None:
    """The agent starts with no pools, says so naming the file, and keeps a copy of what
    it held for the operator: the next registration writes pools.json anew."""
    path = tmp_path / "pools.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        registry = PoolRegistry(path, local_root=LOCAL)
    assert registry.all_roots() == (LOCAL,)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"{path} cannot be read: ")
    assert "no storage pool is registered until the management server registers" in warning
    registry.put("cd-2", RegisteredPool("C:\\pools\\p2", "Filesystem"))
    assert set(json.loads(path.read_text())) == {"cd-2"}
    kept = [entry for entry in tmp_path.iterdir() if ".unreadable-" in entry.name]
    if content:
        assert [entry.read_bytes() for entry in kept] == [content]
        assert f"kept as {kept[0].name}" in warning
    else:
        assert kept == [] and "it is empty" in warning


def test_an_unreadable_file_is_set_aside_and_warned_about_once_not_at_every_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """An agent restarting again and again before the management server registers its
    pools (a service restarted by Windows while the MS is down) finds the damaged
    pools.json once: one warning, one copy; it copied the same bytes at every start."""
    path = tmp_path / "pools.json"
    path.write_bytes(b'{"ab-1": {"ro')
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        for _ in range(3):
            assert PoolRegistry(path, local_root=LOCAL).all_roots() == (LOCAL,)
    assert len([r for r in caplog.records if "cannot be read" in r.getMessage()]) == 1
    (kept,) = tmp_path.glob("pools.json.unreadable-*")
    assert kept.read_bytes() == b'{"ab-1": {"ro' and not path.exists()


def test_a_blank_file_is_removed_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "building.json"
    path.write_bytes(b" \n")
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        for _ in range(2):
            assert BuildJournal(path).pending() == ()
    assert len([r for r in caplog.records if "it is empty" in r.getMessage()]) == 1
    assert list(tmp_path.iterdir()) == []


def test_only_the_newest_copies_of_a_file_damaged_again_and_again_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A disk that damages pools.json at every start: the copies stop at KEPT_ASIDE, the
    oldest removed (and named), and doctor's listing holds exactly those kept."""
    path = tmp_path / "pools.json"
    older = [tmp_path / f"pools.json.unreadable-20240101-00000{n}" for n in range(KEPT_ASIDE)]
    for n, copy in enumerate(older):
        copy.write_bytes(f"old {n}".encode())
    (tmp_path / "pools.json.unreadable-notes.txt").write_text("an operator's")  # not a copy
    path.write_bytes(b"\0\0\0")
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        PoolRegistry(path)
    kept = sorted(tmp_path.glob("pools.json.unreadable-2*"))
    assert len(kept) == KEPT_ASIDE
    assert older[0] not in kept and kept[-1].read_bytes() == b"\0\0\0"
    assert f"1 older copies removed: {older[0].name}; the newest {KEPT_ASIDE} are kept" \
        in caplog.text
    assert (tmp_path / "pools.json.unreadable-notes.txt").exists()
    assert set_aside_copies(tmp_path) == kept


def test_two_files_set_aside_in_one_second_are_both_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "strftime", lambda _: "20250101-120000")
    path = tmp_path / "building.json"
    for content in (b"[1", b"[2"):
        path.write_bytes(content)
        BuildJournal(path)
    kept = set_aside_copies(tmp_path)
    assert [copy.name for copy in kept] == ["building.json.unreadable-20250101-120000",
                                            "building.json.unreadable-20250101-120000-2"]
    assert [copy.read_bytes() for copy in kept] == [b"[1", b"[2"]


def test_a_stored_pool_of_no_known_shape_is_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "pools.json"
    path.write_text(json.dumps({"aa-1": {"root": 7}, "bb-2": ["x"],
                                "cc-3": {"root": "C:\\pools\\p3"}}))
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        registry = PoolRegistry(path)
    assert registry.all_roots() == ("C:\\pools\\p3",)
    assert f"storage pool aa-1 in {path} left out: {{'root': 7}} is not a pool" in caplog.text
    assert f"storage pool bb-2 in {path} left out: ['x'] is not a pool" in caplog.text


def test_a_journal_that_cannot_be_read_is_named_and_kept_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "building.json"
    path.write_bytes(b'["i-2-5-VM", "r-7')
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        journal = BuildJournal(path)
    assert journal.pending() == ()
    assert f"{path} cannot be read: it is not JSON" in caplog.text
    assert "is not removed at this start" in caplog.text
    (kept,) = tmp_path.glob("building.json.unreadable-*")
    assert kept.read_bytes() == b'["i-2-5-VM", "r-7'


def test_an_agent_id_file_without_an_id_is_named_when_a_new_id_is_made(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "agent-id"
    for content in (b"", b"\xff\xfe12"):
        path.write_bytes(content)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
            made = agent_id(tmp_path)
        assert path.read_text() == made
        assert f"{path} holds no agent id" in caplog.text
        assert f"this agent is now {made}" in caplog.text
    caplog.clear()
    assert agent_id(tmp_path) == made and caplog.text == ""  # kept: nothing to say


def test_a_private_ip_file_without_an_address_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "private-ip").write_bytes(b"10.1.")
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        assert kept_private_ip(tmp_path) is None
    assert f"{tmp_path / 'private-ip'} holds no IP address ('10.1.')" in caplog.text


def test_a_full_disk_keeps_the_old_pools_file_leaves_nothing_aside_and_serves_the_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A registration while the state folder's disk is full: the command is served (the
    pool is in memory), the warning says the change is not kept, the old file is intact,
    no temporary is left taking space, and the next write records every pool."""
    path = tmp_path / "pools.json"
    registry = PoolRegistry(path)
    registry.put("ab-1", RegisteredPool("C:\\pools\\p1", "Filesystem"))
    before = path.read_bytes()
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        registry.put("cd-2", RegisteredPool("C:\\pools\\p2", "Filesystem"))
        BuildJournal(tmp_path / "building.json").begin("i-2-5-VM")  # not flushed: written
    assert registry.get("cd-2") is not None
    assert path.read_bytes() == before
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["building.json",
                                                                  "pools.json"]
    assert f"cannot record the storage pools in {path} (No space left on device)" \
        in caplog.text
    monkeypatch.setattr(os, "fsync", real_fsync)
    registry.remove("ab-1")
    assert set(json.loads(path.read_text())) == {"cd-2"}


def test_an_agent_id_that_cannot_be_kept_on_a_full_disk_does_not_stop_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """An agent started on a full disk without its id (an upgrade from a version that
    kept none): it runs under a new id, says it is not kept, and leaves nothing aside;
    the agent stopped with 'No space left on device'."""
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        made = agent_id(tmp_path)
    assert len(made) == 8
    assert f"cannot keep this agent's id in {tmp_path / 'agent-id'} (No space left on " \
           f"device): it is {made} until it stops" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_a_journal_that_cannot_be_written_does_not_stop_the_build(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "state"
    journal = BuildJournal(folder / "building.json")
    folder.write_text("not a folder")  # any OSError the write meets
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        journal.begin("i-2-5-VM")
    assert journal.pending() == ("i-2-5-VM",)
    assert f"cannot record the VMs being built in {folder / 'building.json'}" in caplog.text


# --- the credentials of SMB pools --------------------------------------------------------

SECRET = "s3cret@pw"
ACCOUNT = Credentials(user="cloud", domain="LAB", password=SECRET)
SHARE_POOL = RegisteredPool(root="\\\\fs1\\primary\\dir", pool_type="SMB", host="fs1",
                            path="/primary/dir")


def _registry(folder: Path) -> PoolRegistry:
    return PoolRegistry(folder / "pools.json", local_root=LOCAL,
                        credentials_path=folder / CREDENTIALS_FILE)


def test_a_pools_credentials_are_kept_for_the_agent_alone_and_handed_back_after_a_restart(
    tmp_path: Path,
) -> None:
    """An agent restarted between two of the management server's pings gets no
    ModifyStoragePoolCommand: the credentials its SMB pools came with must outlive it,
    readable by its account only, and never in pools.json."""
    registry = _registry(tmp_path)
    registry.put("AB-1", SHARE_POOL, ACCOUNT)
    registry.put("cd-2", RegisteredPool("C:\\pools\\p2", "Filesystem"))
    kept = tmp_path / CREDENTIALS_FILE
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert SECRET not in (tmp_path / "pools.json").read_text()
    assert json.loads(kept.read_text()) == {
        "ab-1": {"user": "cloud", "domain": "LAB", "password": SECRET}}
    assert _registry(tmp_path).kept_shares() == (
        ShareLocation("fs1", "primary", "dir", ACCOUNT),)
    assert PoolRegistry(tmp_path / "pools.json").kept_shares() == ()  # not asked to keep


def test_kept_credentials_are_replaced_by_new_ones_and_leave_with_their_pool(
    tmp_path: Path,
) -> None:
    registry = _registry(tmp_path)
    kept = tmp_path / CREDENTIALS_FILE
    registry.put("ab-1", SHARE_POOL, ACCOUNT)
    rotated = Credentials("cloud", "LAB", "n3w-pw")
    registry.put("ab-1", SHARE_POOL, rotated)  # the MS sent the pool's new password
    assert SECRET not in kept.read_text()
    registry.put("ab-1", SHARE_POOL)  # registered again without credentials: still its own
    assert _registry(tmp_path).kept_shares()[0].credentials == rotated
    moved = RegisteredPool("\\\\fs2\\other", "SMB", "fs2", "/other")
    registry.put("ab-1", moved)  # the uuid now names another share: not reached with them
    assert not kept.exists() and _registry(tmp_path).kept_shares() == ()
    registry.put("ab-1", SHARE_POOL, ACCOUNT)
    registry.put("cd-2", moved, rotated)
    assert registry.remove("AB-1")
    assert set(json.loads(kept.read_text())) == {"cd-2"}
    assert registry.remove("cd-2")
    assert not kept.exists()  # no pool, no file of secrets
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["pools.json"]


def test_a_password_a_logon_took_is_kept_for_its_users_pools_on_that_server_only(
    tmp_path: Path,
) -> None:
    """A logon to a pool's server took a new password of its user: it is that user's
    there, kept for each such pool across a restart; another user's pool on that
    server, and the same user's on another server, keep theirs."""
    registry = _registry(tmp_path)
    other_user = Credentials("backup", "LAB", "b4ckup-pw")
    elsewhere = RegisteredPool("\\\\fs2\\primary", "SMB", "fs2", "/primary")
    registry.put("ab-1", SHARE_POOL, ACCOUNT)
    registry.put("cd-2", RegisteredPool("\\\\FS1\\other", "SMB", "FS1", "/other"), other_user)
    registry.put("ef-3", elsewhere, ACCOUNT)
    rotated = Credentials("CLOUD", "lab", "n3w-pw")  # as a logon spelled the same account
    changed = registry.follow_logon("Fs1", rotated)
    assert [(share.root, share.credentials) for share in changed] == [
        (SHARE_POOL.root, rotated)]  # handed to the file access again
    kept = {share.root: share.credentials for share in _registry(tmp_path).kept_shares()}
    assert kept == {SHARE_POOL.root: rotated, "\\\\FS1\\other": other_user,
                    elsewhere.root: ACCOUNT}


@pytest.mark.parametrize("content", [b'{"ab-1": {"user": "cloud", "pass', b"[]", b""])
def test_a_credentials_file_that_cannot_be_read_is_named_and_kept_aside_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes,
) -> None:
    """The pools stay registered; the shares wait for the management server's next
    ModifyStoragePoolCommand (or [agent.smb_credentials]), and the warning says so
    without a byte of what the file held."""
    _registry(tmp_path).put("ab-1", SHARE_POOL)
    kept = tmp_path / CREDENTIALS_FILE
    kept.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        registry = _registry(tmp_path)
    assert registry.get("ab-1") == SHARE_POOL and registry.kept_shares() == ()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"{kept} cannot be read: ")
    assert "until the management server registers them again" in warning
    assert "cloud" not in warning and "pass" not in warning
    copies = list(tmp_path.glob(f"{CREDENTIALS_FILE}.unreadable-*"))
    assert [copy.read_bytes() for copy in copies] == ([content] if content else [])
    registry.put("ab-1", SHARE_POOL, ACCOUNT)
    assert _registry(tmp_path).kept_shares()[0].credentials == ACCOUNT


def test_copies_of_the_credentials_file_set_aside_leave_with_a_removed_pool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A credentials file a power loss cut short is set aside, passwords and all; once
    the management server removes the pool, its password must not stay on the disk in
    that copy (nothing reads it), nor in the older copies of earlier damage."""
    registry = _registry(tmp_path)
    registry.put("ab-1", SHARE_POOL, ACCOUNT)
    registry.put("cd-2", RegisteredPool("\\\\fs2\\other", "SMB", "fs2", "/other"),
                 ACCOUNT)
    kept = tmp_path / CREDENTIALS_FILE
    older = tmp_path / f"{CREDENTIALS_FILE}.unreadable-20240101-000000"
    older.write_text(json.dumps({"ab-1": {"password": SECRET}}))
    kept.write_bytes(kept.read_bytes()[:-5])  # cut short
    registry = _registry(tmp_path)
    copies = sorted(tmp_path.glob(f"{CREDENTIALS_FILE}.unreadable-*"))
    assert len(copies) == 2 and all(SECRET in copy.read_text() for copy in copies)
    registry.put("cd-2", RegisteredPool("\\\\fs2\\other", "SMB", "fs2", "/other"),
                 ACCOUNT)  # the management server connects again
    notes = tmp_path / f"{CREDENTIALS_FILE}.unreadable-notes.txt"
    notes.write_text("an operator's")  # not a copy the agent made
    with caplog.at_level(logging.INFO, logger="hyperv_agent.state"):
        assert registry.remove("ab-1")
    assert list(tmp_path.glob(f"{CREDENTIALS_FILE}.unreadable-2*")) == []
    assert notes.exists() and set(json.loads(kept.read_text())) == {"cd-2"}
    assert all(f"removed {copy}" in caplog.text for copy in copies)
    assert SECRET not in caplog.text


def test_the_last_credentials_leaving_take_their_set_aside_copies_along(
    tmp_path: Path,
) -> None:
    """A pool whose uuid now names another share loses its credentials without being
    removed: with none left to keep, no copy of them is left either."""
    registry = _registry(tmp_path)
    registry.put("ab-1", SHARE_POOL, ACCOUNT)
    (tmp_path / CREDENTIALS_FILE).write_bytes(b'{"ab-1": {"user": "cloud", "pass')
    registry = _registry(tmp_path)
    (copy,) = tmp_path.glob(f"{CREDENTIALS_FILE}.unreadable-*")
    registry.put("ab-1", SHARE_POOL, ACCOUNT)
    assert copy.exists()  # still the operator's to read while its pool is there
    registry.put("ab-1", RegisteredPool("\\\\fs2\\other", "SMB", "fs2", "/other"))
    assert not copy.exists() and not (tmp_path / CREDENTIALS_FILE).exists()


def test_kept_credentials_of_no_registered_share_are_left_out_without_showing_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    registry = _registry(tmp_path)
    registry.put("ab-1", SHARE_POOL, ACCOUNT)
    registry.put("cd-2", RegisteredPool("C:\\pools\\p2", "Filesystem"))
    kept = tmp_path / CREDENTIALS_FILE
    entry = {"user": "cloud", "domain": "LAB", "password": SECRET}
    kept.write_text(json.dumps({"ab-1": entry, "cd-2": entry, "ef-3": entry,
                                "gh-4": {"user": "cloud", "password": 7}}))
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        again = _registry(tmp_path)
    assert [share.root for share in again.kept_shares()] == ["\\\\fs1\\primary\\dir"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and not any(SECRET in w or "cloud" in w for w in warnings)
    assert "no SMB pool is registered under that uuid" in warnings[0]
    assert "not credentials as this agent keeps them" in warnings[2]
    again.remove("ab-1")
    assert not kept.exists()  # what was left out is gone with the next change


def test_credentials_are_kept_on_windows_behind_the_keys_access_list_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Windows ignores the file's mode, and %ProgramData% lets every local user read what
    is made in it: the file gets the TLS key's protected access list before the password
    is written, and where Windows refuses it the password is not written at all."""
    security = pywin32_fake.Security()
    pywin32_fake.install(monkeypatch, security)
    monkeypatch.setattr(state, "_WINDOWS", True)
    written: list[tuple[str, str]] = []
    real_fdopen = os.fdopen

    def noting(handle: int, *args: object, **kwargs: object) -> object:
        # the access lists set by the time the content is written
        written.extend((name, "restricted") for name in security.dacls)
        return real_fdopen(handle, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "fdopen", noting)
    registry = _registry(tmp_path)
    registry.put("ab-1", SHARE_POOL, ACCOUNT)
    owners = [pywin32_fake.SYSTEM, pywin32_fake.ADMINISTRATORS, security.account]
    protected = (pywin32_fake.DACL_SECURITY_INFORMATION
                 | pywin32_fake.PROTECTED_DACL_SECURITY_INFORMATION)
    (aside,) = [name for name, _ in written if ".pool-credentials-" in name]
    assert security.dacls[aside] == (protected, pywin32_fake.Acl(
        [(0, pywin32_fake.FILE_ALL_ACCESS, sid) for sid in owners]))
    assert not any(".pools-" in name for name in security.dacls)  # only the secret's
    # the name aside is random: every access list asked for is refused
    security.refuse = ("", pywin32_fake.Error(5, "SetNamedSecurityInfo", "Access is denied.  "))
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.state"):
        registry.put("ab-1", SHARE_POOL, Credentials("cloud", "LAB", "n3w-pw"))
    assert "cannot keep the SMB pools' credentials" in caplog.text
    assert "n3w-pw" not in caplog.text
    assert SECRET in (tmp_path / CREDENTIALS_FILE).read_text()  # the old file, intact
    assert sorted(entry.name for entry in tmp_path.iterdir()) == [CREDENTIALS_FILE,
                                                                  "pools.json"]
