"""The agent's own state: the pool registry as the one source of roots, the journal of VMs
being built, the agent's name, and what a killed write leaves in the state directory."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from hyperv_agent.state import (
    BuildJournal,
    PoolRegistry,
    RegisteredPool,
    agent_id,
    keep_private_ip,
    kept_private_ip,
    sweep_temporaries,
)

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
    for name in (".pools-k2j4", ".building-x9", ".agent-id-q1", ".private-ip-z7"):
        (tmp_path / name).write_text("half")
    (tmp_path / ".other").write_text("not ours")
    assert sweep_temporaries(tmp_path) == 4
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

    def fsync(fd: int) -> None:
        events.append(f"fsync {os.fstat(fd).st_size}")
        real_fsync(fd)

    def replace(self: Path, target: str | os.PathLike[str]) -> Path:
        events.append(f"rename to {Path(target).name}")
        return real_replace(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    registry = PoolRegistry(tmp_path / "pools.json", local_root=LOCAL)
    registry.put("ab-1", RegisteredPool(root="C:\\pools\\p1", pool_type="Filesystem"))
    size = (tmp_path / "pools.json").stat().st_size
    assert events == [f"fsync {size}", "rename to pools.json"]
    events.clear()
    BuildJournal(tmp_path / "building.json").begin("i-2-5-VM")  # rebuilt by a StartCommand
    assert events == ["rename to building.json"]
