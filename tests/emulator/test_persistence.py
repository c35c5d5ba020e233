"""The emulated host's state survives a restart and is never left half-written."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from hyperv_agent.cim import wql
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.emulator.schema import lookup
from tests.emulator.kit import define_vm, devices, ok, request_state, service, state

VMS = wql.select("Msvm_ComputerSystem", wql.eq("Caption", "Virtual Machine"))


async def test_vm_survives_restart_when_state_dir_is_reused(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    cim = EmulatorCim.open(make_config())
    vm = await define_vm(cim, "durable")
    await ok(cim, await request_state(cim, vm, 2))
    before = sorted(str(d.path) for d in await devices(cim, vm))
    await cim.close()

    again = EmulatorCim.open(make_config())
    try:
        found = await again.query(VMS)
        assert [v["ElementName"] for v in found] == ["durable"]
        assert await state(again, vm) == 2
        assert sorted(str(d.path) for d in await devices(again, vm)) == before
    finally:
        await again.close()


def _rows(config: EmulatorConfig) -> dict[str, int]:
    """Each stored record's row number, by its path."""
    with sqlite3.connect(config.state_dir / "emulator.sqlite3") as db:
        return dict(db.execute("SELECT path, id FROM records"))


async def test_a_changed_vm_is_rewritten_in_its_own_rows(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """Rows are numbered in the order records were first stored: starting the first of
    three VMs rewrites its rows where they are (no row moves to the end of the file), and a
    restart lists the VMs in the order they were defined."""
    config = make_config()
    cim = EmulatorCim.open(config)
    first, second, _ = [await define_vm(cim, name) for name in ("first", "second", "third")]
    before = _rows(config)

    def of(vm: ObjectPath) -> dict[str, int]:
        guid = str(vm.key("Name")).lower()
        return {path: row for path, row in before.items() if guid in path.lower()}

    first_rows = of(first)
    assert first_rows and max(first_rows.values()) < min(of(second).values())
    await ok(cim, await request_state(cim, first, 2))
    await cim.close()

    after = _rows(config)
    assert {path: after[path] for path in first_rows} == first_rows
    new_rows = set(after) - set(before)  # the start's job
    assert new_rows and min(after[path] for path in new_rows) > max(before.values())
    again = EmulatorCim.open(config)
    try:
        assert [v["ElementName"] for v in await again.query(VMS)] == ["first", "second", "third"]
        assert await state(again, first) == 2
    finally:
        await again.close()


async def test_a_state_dir_of_the_path_keyed_layout_is_read_and_moved(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """A state directory whose records are in the earlier table keyed by path (rows in the
    order they were last written) is read as it was and moved to the numbered table."""
    config = make_config()
    cim = EmulatorCim.open(config)
    vm = await define_vm(cim, "older")
    await ok(cim, await request_state(cim, vm, 2))
    expected = sorted(str(d.path) for d in await devices(cim, vm))
    await cim.close()
    with sqlite3.connect(config.state_dir / "emulator.sqlite3") as db:
        db.execute("CREATE TABLE instances (path TEXT PRIMARY KEY, class TEXT NOT NULL, "
                   "namespace TEXT NOT NULL, doc TEXT NOT NULL)")
        db.execute("INSERT INTO instances SELECT path, class, namespace, doc FROM records "
                   "ORDER BY id DESC")
        db.execute("DROP TABLE records")
    stored = len(_old_rows(config))

    again = EmulatorCim.open(config)
    try:
        assert [v["ElementName"] for v in await again.query(VMS)] == ["older"]
        assert await state(again, vm) == 2
        assert sorted(str(d.path) for d in await devices(again, vm)) == expected
        await define_vm(again, "newer")
    finally:
        await again.close()
    with sqlite3.connect(config.state_dir / "emulator.sqlite3") as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master "
                                                 "WHERE type = 'table'")]
    assert tables == ["records"]
    assert len(_rows(config)) > stored


def _old_rows(config: EmulatorConfig) -> list[str]:
    with sqlite3.connect(config.state_dir / "emulator.sqlite3") as db:
        return [path for (path,) in db.execute("SELECT path FROM instances")]


async def test_failed_call_leaves_nothing_when_a_later_setting_is_refused(
    emulator: EmulatorCim,
) -> None:
    vssd = (await emulator.spawn("Msvm_VirtualSystemSettingData")).updated(ElementName="half")
    bad_drive = (await emulator.spawn("Msvm_ResourceAllocationSettingData")).updated(
        ResourceType=17, ResourceSubType="Microsoft:Hyper-V:Synthetic Disk Drive",
        Parent="Msvm_ResourceAllocationSettingData.InstanceID=\"Microsoft:nope\"")
    result = await emulator.invoke(await service(emulator), "DefineSystem",
                                   {"SystemSettings": vssd, "ResourceSettings": [bad_drive]})
    job = result.path("Job")
    assert job is not None and (await emulator.get(job))["JobState"] == 10
    assert await emulator.query(VMS) == []
    assert await emulator.query(wql.select("Msvm_VirtualSystemSettingData",
                                           wql.eq("ElementName", "half"))) == []


def test_killed_process_leaves_no_half_defined_vm(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, pathlib
        from hyperv_agent.emulator.backend import EmulatorCim
        from hyperv_agent.emulator.config import EmulatorConfig
        from tests.emulator.kit import define_vm

        async def main():
            cim = EmulatorCim.open(EmulatorConfig(state_dir=pathlib.Path({str(tmp_path)!r})))
            await define_vm(cim, "kept")
            cim.faults.die_during_next_commit()
            await define_vm(cim, "lost")

        asyncio.run(main())
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 70, run.stderr

    async def check() -> None:
        cim = EmulatorCim.open(EmulatorConfig(state_dir=tmp_path))
        try:
            assert [v["ElementName"] for v in await cim.query(VMS)] == ["kept"]
            names = [v["ElementName"] for v in await cim.query(
                wql.select("Msvm_VirtualSystemSettingData"))]
            assert "lost" not in names
            assert await cim.query(wql.select("CIM_ResourceAllocationSettingData",
                                              wql.starts_with("InstanceID", "Microsoft:"))) != []
        finally:
            await cim.close()

    import asyncio

    asyncio.run(check())


def test_a_disk_being_made_when_the_process_is_killed_is_removed_when_the_host_opens(
        tmp_path: Path) -> None:
    """The temporary file of a disk being made when the process dies (here: at the flush
    before it is published) is removed when the host next opens; the disk can be made
    again under its name."""
    script = textwrap.dedent(f"""
        import asyncio, os, pathlib
        from hyperv_agent.emulator.backend import EmulatorCim
        from hyperv_agent.emulator.config import EmulatorConfig
        from tests.emulator.test_image_service import _create, _settings

        async def main():
            cim = EmulatorCim.open(EmulatorConfig(state_dir=pathlib.Path({str(tmp_path)!r})))
            (pathlib.Path({str(tmp_path)!r}) / "drives" / "C" / "pool").mkdir()
            os.fsync = lambda fd: os._exit(70)  # killed once the disk's bytes are written
            await _create(cim, await _settings(cim, "C:\\\\pool\\\\d.vhdx", 3, 2))

        asyncio.run(main())
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 70, run.stderr
    pool = tmp_path / "drives" / "C" / "pool"
    (left,) = pool.iterdir()
    assert left.name.startswith(".d.vhdx.") and left.name.endswith(".partial")

    async def reopened() -> None:
        from tests.emulator.test_image_service import _create, _settings

        cim = EmulatorCim.open(EmulatorConfig(state_dir=tmp_path))
        try:
            assert list(pool.iterdir()) == []
            assert list((tmp_path / "staging").iterdir()) == []
            assert await _create(cim, await _settings(cim, "C:\\pool\\d.vhdx", 3, 2)) == 0
            assert [p.name for p in pool.iterdir()] == ["d.vhdx"]
            assert list((tmp_path / "staging").iterdir()) == []  # the note went with it
        finally:
            await cim.close()

    import asyncio

    asyncio.run(reopened())


def _stored_values(config: EmulatorConfig) -> list[dict[str, object]]:
    with sqlite3.connect(config.state_dir / "emulator.sqlite3") as db:
        return [json.loads(doc)["values"] for (doc,) in db.execute("SELECT doc FROM records")]


async def test_a_record_holds_only_its_set_values_and_still_shows_every_property(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """Most of a class's properties are null: a record holds none of them (in memory and
    on disk), and an instance still shows every property of its class, nulls included,
    before and after the host reopens."""
    config = make_config()
    cim = EmulatorCim.open(config)
    vm = await define_vm(cim, "sparse")
    await ok(cim, await request_state(cim, vm, 2))
    stored = _stored_values(config)
    assert stored and all(None not in values.values() for values in stored)
    vm_class = lookup("Msvm_ComputerSystem")
    assert vm_class is not None
    shown = (await cim.get(vm)).properties
    assert len(shown) == len(vm_class.properties)
    nulls = {prop.name for prop in shown.values() if prop.value is None}
    assert "OtherEnabledState" in nulls and "ElementName" not in nulls
    await cim.close()

    again = EmulatorCim.open(config)
    try:
        reopened = (await again.get(vm)).properties
        assert reopened.keys() == shown.keys()
        assert {prop.name for prop in reopened.values() if prop.value is None} == nulls
    finally:
        await again.close()


async def test_records_read_back_share_their_names_and_repeated_values(
    make_config: Callable[..., EmulatorConfig],
) -> None:
    """Each row is decoded on its own: read back, two VMs' records hold one copy of each
    property name and of a value both hold (their Caption), as records made in the
    process do, not a copy each."""
    config = make_config()
    cim = EmulatorCim.open(config)
    first, second = [await define_vm(cim, name) for name in ("first", "second")]
    await cim.close()

    again = EmulatorCim.open(config)
    try:
        a, b = (again.host.store.get(vm) for vm in (first, second))
        assert a is not None and b is not None
        names_a = {name: name for name in a.values}
        shared = [name for name in b.values if name in names_a]
        assert "Caption" in shared
        assert all(names_a[name] is name for name in shared)
        assert a["Caption"] == b["Caption"] == "Virtual Machine"
        assert a["Caption"] is b["Caption"]
    finally:
        await again.close()
